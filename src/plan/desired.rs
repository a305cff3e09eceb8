//! What the kernel should hold for a validated network: the model mapped onto namespaces,
//! links, addresses and routes.

use std::net::Ipv4Addr;

use ipnetwork::Ipv4Network;

use super::kernel::{Addr, KernelState, Link, LinkKind, Netns, Route, Server};
use super::naming::{HOST_IFNAME, Naming, UPLINK_IFNAME};
use crate::model::Network;

/// The simulated internet's address, and the sandbox machine's uplink address.
pub const INTERNET_IP: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 1);
pub const SANDBOX_UPLINK_IP: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 2);
pub const INTERNET_PREFIX: u8 = 24;
pub const INTERNET_HTTP_BODY: &str = "internet\n";

pub fn desired(network: &Network, naming: &Naming) -> KernelState {
    let mut state = KernelState::default();
    if let (Some(machine), Some(internet)) = (naming.machine_ns(), naming.internet_ns()) {
        add_sandbox(&mut state, &machine, &internet);
    }
    for vpc in &network.vpcs {
        let router_name = naming.router_ns(&vpc.name);
        let mut router = netns_with_lo(&format!("vpc {}", vpc.name));
        router.forwarding = true;
        for subnet in &vpc.subnets {
            let owner = format!("subnet {}/{}", vpc.name, subnet.name);
            let bridge = Naming::bridge(&subnet.name);
            router
                .links
                .insert(bridge.clone(), link(LinkKind::Bridge, None, &owner));
            router.addrs.insert(Addr {
                dev: bridge.clone(),
                net: net(subnet.gateway, subnet.cidr.prefix()),
            });
            for host in &subnet.hosts {
                let owner = format!("host {}/{}", vpc.name, host.name);
                let host_ns = naming.host_ns(&vpc.name, &host.name);
                let veth = LinkKind::Veth {
                    peer_ns: host_ns.clone(),
                    peer: HOST_IFNAME.into(),
                };
                router.links.insert(
                    Naming::host_veth(&host.name),
                    link(veth, Some(bridge.clone()), &owner),
                );
                let mut ns = netns_with_lo(&owner);
                ns.links
                    .insert(HOST_IFNAME.into(), link(LinkKind::VethPeer, None, &owner));
                ns.addrs.insert(Addr {
                    dev: HOST_IFNAME.into(),
                    net: net(host.ip, subnet.cidr.prefix()),
                });
                ns.routes.insert(Route {
                    dst: default_route(),
                    via: subnet.gateway,
                });
                state.namespaces.insert(host_ns, ns);
            }
        }
        state.namespaces.insert(router_name, router);
    }
    state
}

/// The machine namespace and the simulated internet, joined by the uplink.
fn add_sandbox(state: &mut KernelState, machine: &str, internet: &str) {
    let owner = "sandbox";
    let mut m = netns_with_lo(owner);
    let uplink = LinkKind::Veth {
        peer_ns: internet.into(),
        peer: HOST_IFNAME.into(),
    };
    m.links.insert(UPLINK_IFNAME.into(), link(uplink, None, owner));
    m.addrs.insert(Addr {
        dev: UPLINK_IFNAME.into(),
        net: net(SANDBOX_UPLINK_IP, INTERNET_PREFIX),
    });
    let mut i = netns_with_lo("internet");
    i.links
        .insert(HOST_IFNAME.into(), link(LinkKind::VethPeer, None, "internet"));
    i.addrs.insert(Addr {
        dev: HOST_IFNAME.into(),
        net: net(INTERNET_IP, INTERNET_PREFIX),
    });
    i.servers.insert(Server {
        port: 80,
        body: INTERNET_HTTP_BODY.into(),
    });
    state.namespaces.insert(machine.into(), m);
    state.namespaces.insert(internet.into(), i);
}

fn netns_with_lo(owner: &str) -> Netns {
    let mut ns = Netns {
        owner: owner.into(),
        ..Netns::default()
    };
    ns.links
        .insert("lo".into(), link(LinkKind::Loopback, None, owner));
    ns
}

fn link(kind: LinkKind, master: Option<String>, owner: &str) -> Link {
    Link {
        kind,
        master,
        up: true,
        owner: owner.into(),
        ours: true,
    }
}

fn net(ip: Ipv4Addr, prefix: u8) -> Ipv4Network {
    Ipv4Network::new(ip, prefix).expect("prefix comes from a parsed network")
}

pub fn default_route() -> Ipv4Network {
    Ipv4Network::new(Ipv4Addr::UNSPECIFIED, 0).expect("0.0.0.0/0 is valid")
}
