//! What a node of a fabric adds to its part of the network: each subnet's VXLAN device on
//! its bridge (with the gateway's shared MAC), flood entries towards the other nodes of the
//! VPC, static neighbours for the hosts that run elsewhere, and in a sandbox the machine's
//! port on the simulated underlay.
//!
//! With EVPN, a subnet's segment lives on the machine, where FRR can see it: a bridge with
//! the VXLAN device (its flood list and remote MACs installed by FRR) and a port to the
//! router's bridge, on which the gateway's shared MAC is pinned so that no node learns it
//! from another (each has it at home). FRR's zebra and bgpd run in the machine namespace,
//! every node peering with every other (iBGP, AS 65000) for the EVPN address family.
//!
//! Routing happens on the node a packet starts from: every router carries all subnets of
//! its VPC, so it reaches a remote host by bridging into the subnet's segment. A remote
//! host's reply to the gateway MAC stops at its own node's router, which is why routers
//! know remote hosts' MACs instead of asking for them.

use std::net::IpAddr;

use super::{addr, link, netns_with_lo};
use crate::model::fabric::{self, Control, Node};
use crate::model::{Network, Subnet, Vpc, names};
use crate::plan::kernel::{
    Flood, KernelState, Link, LinkKind, Neighbour, Netns, Owner, PortMac, Process, RoutingDaemon,
};
use crate::plan::naming::Naming;

/// The bridge of the simulated underlay, in the fabric's namespace.
pub(crate) const FABRIC_BRIDGE: &str = "fabric";
/// A sandbox machine's port on the simulated underlay.
pub(crate) const UNDERLAY_IFNAME: &str = "ul0";

/// This machine's place in a network spread over nodes.
pub(crate) struct Fabric<'a> {
    pub node: &'a Node,
    /// The namespace holding the simulated underlay (`--fabric`, sandboxes only).
    pub underlay: Option<&'a str>,
}

impl Fabric<'_> {
    /// Whether `host` (of `subnet`) runs on this node.
    pub(crate) fn runs_here(&self, host: &crate::model::Host) -> bool {
        host.node.as_deref() == Some(self.node.name.as_str())
    }
}

/// Stretches a router's subnets over the VPC's nodes.
/// The namespaces a subnet's segment touches on this node.
struct Sides<'a> {
    router: &'a mut Netns,
    machine: &'a mut Netns,
    machine_ns: &'a str,
}

/// Stretches a router's subnets over the VPC's nodes.
pub(super) fn stretch(
    (router, machine): (&mut Netns, &mut Netns),
    vpc: &Vpc,
    network: &Network,
    fabric: &Fabric,
    machine_ns: &str,
) {
    let others: Vec<&Node> = network
        .presence(&vpc.name)
        .iter()
        .filter(|n| **n != fabric.node.name)
        .filter_map(|n| network.node(n))
        .collect();
    let mut sides = Sides { router, machine, machine_ns };
    for subnet in &vpc.subnets {
        let Some(vni) = subnet.vni else { continue };
        let owner = Owner::Subnet { vpc: vpc.name.clone(), subnet: subnet.name.clone() };
        let bridge = Naming::bridge(&subnet.name);
        if let Some(b) = sides.router.links.get_mut(&bridge) {
            b.mac = Some(fabric::gateway_mac(&vpc.name, &subnet.name));
        }
        match network.control {
            Control::Static => static_segment(&mut sides, (subnet, vni, &owner), fabric, &others),
            Control::Evpn => evpn_segment(&mut sides, (subnet, vni, &owner), fabric, &vpc.name),
        }
        remote_hosts(sides.router, vpc, subnet, fabric);
    }
}

/// The VXLAN device on the router's bridge, flooding to every other node of the VPC.
fn static_segment(
    sides: &mut Sides,
    (subnet, vni, owner): (&Subnet, u32, &Owner),
    fabric: &Fabric,
    others: &[&Node],
) {
    let vxlan = names::vxlan_ifname(&subnet.name);
    let local = fabric.node.underlay.ip();
    let kind = LinkKind::Vxlan { vni, local, underlay_ns: sides.machine_ns.to_string(), evpn: false };
    let mut device = link(kind, Some(Naming::bridge(&subnet.name)), owner);
    device.mtu = Some(fabric::inner_mtu());
    sides.router.links.insert(vxlan.clone(), device);
    for node in others {
        sides.router.floods.insert(Flood { dev: vxlan.clone(), dst: node.underlay.ip() });
    }
}

/// The segment on the machine, and its port to the router's bridge.
fn evpn_segment(sides: &mut Sides, (subnet, vni, owner): (&Subnet, u32, &Owner), fabric: &Fabric, vpc: &str) {
    let [bridge, vxlan, port] = names::segment_ifnames(vni);
    let mtu = Some(fabric::inner_mtu());
    sides.machine.links.insert(bridge.clone(), link(LinkKind::Bridge, None, owner));
    let local = fabric.node.underlay.ip();
    let kind = LinkKind::Vxlan { vni, local, underlay_ns: sides.machine_ns.to_string(), evpn: true };
    sides.machine.links.insert(vxlan, Link { mtu, ..link(kind, Some(bridge.clone()), owner) });
    let towards = LinkKind::Veth { peer_ns: sides.machine_ns.to_string(), peer: port.clone() };
    let router_end = Link { mtu, ..link(towards, Some(Naming::bridge(&subnet.name)), owner) };
    sides.router.links.insert(names::segment_link_ifname(&subnet.name), router_end);
    // Only this node's hosts are behind the port, pinned there: the gateway's MAC, which
    // every node has, is never learned, so never advertised as if it lived on one node.
    let machine_end = Link { mtu, learning: Some(false), ..link(LinkKind::VethPeer, Some(bridge), owner) };
    sides.machine.links.insert(port.clone(), machine_end);
    for host in subnet.hosts.iter().filter(|h| fabric.runs_here(h)) {
        sides.machine.port_macs.insert(PortMac { dev: port.clone(), mac: fabric::host_mac(vpc, &host.name) });
    }
}

/// Static neighbours for the subnet's hosts on other nodes: their MACs are derived, so
/// the router need not ask (see the module's comment).
fn remote_hosts(router: &mut Netns, vpc: &Vpc, subnet: &Subnet, fabric: &Fabric) {
    let bridge = Naming::bridge(&subnet.name);
    for host in subnet.hosts.iter().filter(|h| !fabric.runs_here(h)) {
        let mac = fabric::host_mac(&vpc.name, &host.name);
        let ips = std::iter::once(IpAddr::from(host.ip)).chain(host.ip6.map(IpAddr::from));
        for ip in ips {
            router.neighbours.insert(Neighbour { dev: bridge.clone(), ip, mac });
        }
    }
}

/// The private AS every node of an EVPN fabric is in.
pub(crate) const FABRIC_ASN: u32 = 65000;

/// FRR on an EVPN node that carries a segment: zebra, and bgpd peering with every other
/// node for the EVPN address family, advertising every VNI it has.
pub(super) fn control_plane(machine: &mut Netns, network: &Network, fabric: &Fabric) {
    if network.control != Control::Evpn
        || !machine.links.values().any(|l| matches!(l.kind, LinkKind::Vxlan { .. }))
    {
        return;
    }
    let me = &fabric.node;
    let zebra = format!("hostname {}\nlog stdout\n", me.name);
    let mut bgp = format!(
        "frr defaults datacenter\nhostname {name}\nlog stdout\n!\nrouter bgp {FABRIC_ASN}\n bgp router-id {id}\n \
         no bgp default ipv4-unicast\n neighbor fabric peer-group\n neighbor fabric remote-as internal\n \
         neighbor fabric update-source {id}\n neighbor fabric timers 3 9\n neighbor fabric timers connect 1\n",
        name = me.name,
        id = me.underlay.ip()
    );
    for other in network.nodes.iter().filter(|n| n.name != me.name) {
        bgp.push_str(&format!(" neighbor {} peer-group fabric\n", other.underlay.ip()));
    }
    bgp.push_str(" !\n address-family l2vpn evpn\n  neighbor fabric activate\n  advertise-all-vni\n exit-address-family\n!\n");
    machine.processes.insert(Process::Routing { daemon: RoutingDaemon::Zebra, config: zebra });
    machine.processes.insert(Process::Routing { daemon: RoutingDaemon::Bgpd, config: bgp });
}

/// A sandbox machine's port on the simulated underlay: the fabric's namespace with its
/// switch (shared by every node), and this node's veth into it.
pub(super) fn underlay(state: &mut KernelState, machine: &mut Netns, fabric: &Fabric, machine_ns: &str) {
    let Some(fabric_ns) = fabric.underlay else { return };
    let mut ns = netns_with_lo(&Owner::Fabric);
    ns.shared = true;
    ns.links.insert(FABRIC_BRIDGE.into(), link(LinkKind::Bridge, None, &Owner::Fabric));
    let port = LinkKind::Veth { peer_ns: machine_ns.into(), peer: UNDERLAY_IFNAME.into() };
    ns.links.insert(
        names::fabric_port_ifname(&fabric.node.name),
        link(port, Some(FABRIC_BRIDGE.into()), &Owner::Fabric),
    );
    state.namespaces.insert(fabric_ns.into(), ns);
    let mut port = link(LinkKind::VethPeer, None, &Owner::Fabric);
    port.mac = Some(fabric::underlay_mac(&fabric.node.name));
    machine.links.insert(UNDERLAY_IFNAME.into(), port);
    let underlay = fabric.node.underlay;
    machine.addrs.insert(addr(UNDERLAY_IFNAME, underlay.ip().into(), underlay.prefix()));
}
