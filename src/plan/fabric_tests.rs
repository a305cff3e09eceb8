//! Planner tests of a network spread over nodes, against the recording backend: what each
//! node builds, in either control plane, and that an applied fabric plans to nothing.

use std::collections::BTreeSet;

use super::desired::{self, Fabric};
use super::kernel::{KernelState, LinkKind, Neighbour, PortMac, Process, RoutingDaemon};
use super::naming::Naming;
use super::{Plan, plan};
use crate::exec::{self, Backend, recording::Recording};
use crate::model::fabric::{Control, Node, gateway_mac, host_mac, vni};
use crate::model::{Host, Network, Subnet, Vpc};

const N1: &str = "192.0.2.11";
const N2: &str = "192.0.2.12";

/// `prod` over n1 and n2: `web` with w1 on n1 and w2 on n2, `app` with its host on n2.
fn spread(control: Control) -> Network {
    let host = |name: &str, ip: &str, node: &str| Host {
        name: name.into(),
        ip: ip.parse().unwrap(),
        ip6: None,
        impairment: None,
        node: Some(node.into()),
    };
    let subnet = |name: &str, cidr: &str, hosts: Vec<Host>| {
        let cidr: ipnetwork::Ipv4Network = cidr.parse().unwrap();
        Subnet {
            name: name.into(),
            cidr,
            public: false,
            nat: false,
            gateway: crate::model::ipam::gateway(cidr),
            cidr6: None,
            hosts,
            nodes: vec!["n1".into(), "n2".into()],
            vni: Some(vni("prod", name)),
        }
    };
    let prod = Vpc {
        name: "prod".into(),
        cidr: "10.0.0.0/16".parse().unwrap(),
        cidr6: None,
        host_access: false,
        subnets: vec![
            subnet("web", "10.0.1.0/24", vec![host("w1", "10.0.1.2", "n1"), host("w2", "10.0.1.3", "n2")]),
            subnet("app", "10.0.2.0/24", vec![host("app", "10.0.2.2", "n2")]),
        ],
    };
    let node =
        |name: &str, ip: &str| Node { name: name.into(), underlay: format!("{ip}/24").parse().unwrap() };
    Network { nodes: vec![node("n1", N1), node("n2", N2)], control, vpcs: vec![prod], ..Network::default() }
}

fn want(network: &Network, node: &str) -> KernelState {
    let node = network.node(node).unwrap();
    let fabric = Some(Fabric { node, underlay: Some("fab") });
    desired::desired(network, &desired::Machine { naming: &Naming::sandbox("t"), uplink: "up0", fabric })
}

fn converge(backend: &mut Recording, want: &KernelState) -> Plan {
    let mut owned: BTreeSet<String> = backend.state.namespaces.keys().cloned().collect();
    owned.extend(want.namespaces.keys().cloned());
    let p = plan(want, &backend.observe(&owned).unwrap());
    exec::apply(backend, &p).unwrap();
    p
}

#[test]
fn a_node_runs_its_own_hosts_and_reaches_the_others_over_every_subnet() {
    let state = want(&spread(Control::Static), "n1");
    let namespaces: Vec<&str> = state.namespaces.keys().map(String::as_str).collect();
    assert!(namespaces.contains(&"t.prod.w1"), "{namespaces:?}");
    assert!(!namespaces.contains(&"t.prod.w2") && !namespaces.contains(&"t.prod.app"), "{namespaces:?}");
    let router = &state.namespaces["t.prod"];
    // Both subnets are here, though only web has a host here.
    for (subnet, vxlan) in [("web", "x-web"), ("app", "x-app")] {
        let link = &router.links[vxlan];
        let LinkKind::Vxlan { vni: v, local, evpn, .. } = &link.kind else { panic!("{link:?}") };
        assert_eq!((*v, local.to_string().as_str(), *evpn), (vni("prod", subnet), N1, false));
        assert_eq!((link.master.as_deref(), link.mtu), (Some(format!("b-{subnet}").as_str()), Some(1450)));
        assert_eq!(router.links[&format!("b-{subnet}")].mac, Some(gateway_mac("prod", subnet)));
    }
    let floods: Vec<String> = router.floods.iter().map(|f| format!("{} {}", f.dev, f.dst)).collect();
    assert_eq!(floods, [format!("x-app {N2}"), format!("x-web {N2}")]);
    // The hosts elsewhere are known by MAC; this one's MAC is the one they know it by.
    let w2 = Neighbour { dev: "b-web".into(), ip: "10.0.1.3".parse().unwrap(), mac: host_mac("prod", "w2") };
    assert!(router.neighbours.contains(&w2), "{:?}", router.neighbours);
    assert_eq!(router.neighbours.len(), 2, "w2 and app, not w1");
    let eth0 = &state.namespaces["t.prod.w1"].links["eth0"];
    assert_eq!((eth0.mac, eth0.mtu), (Some(host_mac("prod", "w1")), Some(1450)));
    // The machine's port on the simulated underlay, in a namespace other nodes share.
    let fab = &state.namespaces["fab"];
    assert!(fab.shared && fab.links.contains_key("fabric") && fab.links.contains_key("n-n1"));
    assert!(
        state.namespaces["t"].addrs.iter().any(|a| a.dev == "ul0" && a.net.to_string() == format!("{N1}/24"))
    );
}

#[test]
fn with_evpn_segments_live_on_the_machine_and_frr_peers_with_every_other_node() {
    let state = want(&spread(Control::Evpn), "n1");
    let machine = &state.namespaces["t"];
    let web = vni("prod", "web");
    let (bridge, vxlan, port) = (format!("s-{web:06x}"), format!("v-{web:06x}"), format!("t-{web:06x}"));
    assert!(matches!(machine.links[&bridge].kind, LinkKind::Bridge));
    let vx = &machine.links[&vxlan];
    assert!(matches!(vx.kind, LinkKind::Vxlan { evpn: true, .. }) && vx.master.as_ref() == Some(&bridge));
    assert_eq!(machine.links[&port].learning, Some(false), "the gateway MAC must not be learned");
    assert_eq!(
        machine.port_macs.iter().collect::<Vec<_>>(),
        [&PortMac { dev: port, mac: host_mac("prod", "w1") }]
    );
    let router = &state.namespaces["t.prod"];
    assert!(matches!(&router.links["e-web"].kind, LinkKind::Veth { peer_ns, .. } if peer_ns == "t"));
    assert!(state.namespaces.values().all(|n| n.floods.is_empty()), "EVPN's floods are FRR's to install");
    let bgpd = machine.processes.iter().find_map(|p| match p {
        Process::Routing { daemon: RoutingDaemon::Bgpd, config } => Some(config),
        _ => None,
    });
    let bgpd = bgpd.expect("bgpd runs on the machine");
    assert!(bgpd.contains(&format!("neighbor {N2} peer-group fabric")) && bgpd.contains("advertise-all-vni"));
    assert!(!bgpd.contains(&format!("neighbor {N1} ")), "peers with itself: {bgpd}");
}

#[test]
fn an_applied_node_plans_to_nothing_in_either_control_plane() {
    for control in [Control::Static, Control::Evpn] {
        let mut backend = Recording::default();
        let state = want(&spread(control), "n2");
        assert!(!converge(&mut backend, &state).is_empty());
        let again = converge(&mut backend, &state);
        assert!(again.is_empty(), "{control}: {again}");
    }
}

#[test]
fn the_shared_fabric_keeps_other_nodes_ports() {
    let mut backend = Recording::default();
    let network = spread(Control::Static);
    converge(&mut backend, &want(&network, "n2"));
    let p = converge(&mut backend, &want(&network, "n1"));
    assert!(!p.to_string().contains("delete link n-n2"), "{p}");
    assert!(backend.state.namespaces["fab"].links.contains_key("n-n2"));
}
