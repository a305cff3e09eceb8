//! What the kernel should hold for a validated network: the model mapped onto namespaces,
//! links, addresses, routes and nftables rules.
//!
//! Every VPC router has an uplink (`igw`) to the machine over a /30 from 198.18.0.0/15.
//! Routers translate their egress subnets to that address and forward nothing else out;
//! the machine translates again to its own uplink and never forwards between VPC uplinks.
//! So VPCs stay isolated, may share CIDRs, and the outside reaches a host only through a
//! published port (DNAT on the machine, then on the router).
//!
//! IPv6 is on only where a VPC declares it. Dual-stack subnets route IPv6 like IPv4, with
//! `::1` of each /64 on the bridge. In a sandbox, uplinks also carry IPv6 (a /64 per link
//! from 2001:2::/48, derived from the link's IPv4 /30) and the VPC's /56 is routed, not
//! translated: the machine and the simulated internet route it to the router, whose
//! stateful rules let only public and `nat()` subnets out and nothing unasked-for in.

mod fabric;

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use ipnetwork::{IpNetwork, Ipv4Network, Ipv6Network};

use super::kernel::{Addr, KernelState, Link, LinkKind, Netns, Nft, Owner, Process, Route};
use super::naming::{HOST_IFNAME, MACHINE_UPLINK_PREFIX, Naming, PEER_PREFIX, ROUTER_UPLINK, UPLINK_IFNAME};
use super::nft::{Action, Chain, Hook, IfName, Match, Proto, Ruleset};
use crate::model::{
    Firewall, FirewallRule, Host, Network, Protected, RuleProto, Subnet, Transport, Vpc, WorkloadKind,
    fnv::fnv1a, ipam6,
};

pub(crate) use fabric::{FABRIC_BRIDGE, Fabric};

/// The simulated internet's address, and the sandbox machine's uplink address.
pub(crate) const INTERNET_IP: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 1);
pub(crate) const SANDBOX_UPLINK_IP: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 2);
pub(crate) const INTERNET_PREFIX: u8 = 24;
/// The simulated internet's and the sandbox machine's IPv6 addresses (documentation space).
pub(crate) const INTERNET_IP6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 1);
pub(crate) const SANDBOX_UPLINK_IP6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 2);
/// Where IPv6 transfer links get their /64s (RFC 5180 benchmarking space, like 198.18/15).
const TRANSFER_SPACE6: Ipv6Addr = Ipv6Addr::new(0x2001, 2, 0, 0, 0, 0, 0, 0);
pub(crate) const INTERNET_HTTP_BODY: &str = "internet\n";
/// Where VPC uplinks get their /30s (RFC 2544 benchmarking space: not routed anywhere).
pub(crate) const TRANSFER_SPACE: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 0);
pub(crate) const TRANSFER_PREFIX: u8 = 15;

/// The machine side of the world: where VPC uplinks end, and its own uplink.
pub(crate) struct Machine<'a> {
    pub naming: &'a Naming,
    /// The interface towards the internet (`up0` in a sandbox, the default route's on a host).
    pub uplink: &'a str,
    /// Its place in a network spread over nodes; `None`: the network is all here.
    pub fabric: Option<Fabric<'a>>,
}

pub(crate) fn desired(network: &Network, machine: &Machine) -> KernelState {
    let naming = machine.naming;
    let here = machine.fabric.as_ref().map(|f| network.on_node(&f.node.name));
    let network = here.as_ref().unwrap_or(network);
    let mut state = KernelState::default();
    let machine_ns = naming.machine_ns();
    let mut internet = None;
    let mut m = if naming.sandbox {
        internet = Some((naming.internet_ns().expect("sandboxes have an internet"), internet_ns()));
        sandbox_machine(&internet.as_ref().expect("set above").0)
    } else {
        // The real host: only what vpcsh adds, never its own lo or other links.
        Netns { owner: Owner::Machine, ..Netns::default() }
    };
    let transfer = transfer_nets(network);

    for vpc in &network.vpcs {
        let router_name = naming.router_ns(&vpc.name);
        let owner = Owner::Vpc(vpc.name.clone());
        let mut router = netns_with_lo(&owner);
        router.forwarding = true;
        // IPv6 only where declared, so nothing walks around rules written for IPv4.
        router.ipv6 = Some(vpc.cidr6.is_some());
        let link_net = transfer[&vpc.name];
        let (machine_ip, router_ip) = transfer_ips(link_net);
        let machine_end = Naming::machine_uplink(&vpc.name);
        let igw = LinkKind::Veth { peer_ns: machine_ns.clone(), peer: machine_end.clone() };
        router.links.insert(ROUTER_UPLINK.into(), link(igw, None, &owner));
        router.addrs.insert(addr(ROUTER_UPLINK, router_ip.into(), 30));
        router.routes.insert(Route {
            dst: default_route(),
            via: machine_ip.into(),
            dev: ROUTER_UPLINK.into(),
        });
        let uplink_end = Link { route_localnet: true, ..link(LinkKind::VethPeer, None, &owner) };
        m.links.insert(machine_end.clone(), uplink_end);
        m.addrs.insert(addr(&machine_end, machine_ip.into(), 30));
        if vpc.host_access {
            m.routes.insert(Route { dst: vpc.cidr.into(), via: router_ip.into(), dev: machine_end.clone() });
        }
        // IPv6 to the internet is routed, which the simulated internet can do for a sandbox;
        // on a real host it would need the machine's IPv6 forwarding (see docs/ipv6.md).
        if let (Some(vpc6), Some((_, internet))) = (vpc.cidr6, internet.as_mut()) {
            let (machine_ip6, router_ip6) = transfer_ips6(link_net);
            router.addrs.insert(addr(ROUTER_UPLINK, router_ip6.into(), 64));
            router.routes.insert(Route {
                dst: default_route6(),
                via: machine_ip6.into(),
                dev: ROUTER_UPLINK.into(),
            });
            m.addrs.insert(addr(&machine_end, machine_ip6.into(), 64));
            m.routes.insert(Route { dst: vpc6.into(), via: router_ip6.into(), dev: machine_end.clone() });
            internet.routes.insert(Route {
                dst: vpc6.into(),
                via: SANDBOX_UPLINK_IP6.into(),
                dev: HOST_IFNAME.into(),
            });
        }

        for subnet in &vpc.subnets {
            subnet_links(&mut state, &mut router, (network, vpc, subnet), machine);
        }
        if let Some(f) = &machine.fabric {
            fabric::stretch((&mut router, &mut m), vpc, network, f, &machine_ns);
        }
        peering_links(&mut router, vpc, network, naming, &transfer);
        router.addrs.insert(addr("lo", RESOLVER.into(), 32));
        router.processes.insert(Process::Dns { records: resolver_records(network, vpc) });
        router.nft = Some(Nft::Wanted(router_ruleset(vpc, network, link_net)));
        state.namespaces.insert(router_name, router);
    }
    if !network.vpcs.is_empty() {
        m.forwarding = true;
        m.pass_host_firewall = true;
        m.nft = Some(Nft::Wanted(machine_ruleset(network, &transfer, machine.uplink)));
    }
    if let Some((name, ns)) = internet {
        state.namespaces.insert(name, ns);
    }
    if let Some(f) = &machine.fabric {
        fabric::underlay(&mut state, &mut m, f, &machine_ns);
        fabric::control_plane(&mut m, network, f);
    }
    state.namespaces.insert(machine_ns, m);
    state
}

/// The address of every VPC's resolver, on its router's `lo` (AWS's Route 53 Resolver
/// answers at the same link-local address); hosts reach it through their gateway.
pub(crate) const RESOLVER: Ipv4Addr = Ipv4Addr::new(169, 254, 169, 253);

/// The names a VPC's resolver answers, as `NAME=ADDRESS`: its own hosts as `HOST`,
/// `HOST.VPC` and `HOST.SUBNET.VPC`; its peers' hosts that the peering lets across as
/// `HOST.VPC` and `HOST.SUBNET.VPC`. No other VPC's names, so none leak.
fn resolver_records(network: &Network, vpc: &Vpc) -> Vec<String> {
    let mut out = BTreeSet::new();
    let mut add = |names: &[String], host: &Host, crosses: &dyn Fn(IpAddr) -> bool| {
        let addrs = std::iter::once(IpAddr::from(host.ip)).chain(host.ip6.map(IpAddr::from));
        for addr in addrs.filter(|a| crosses(*a)) {
            out.extend(names.iter().map(|n| format!("{n}={addr}")));
        }
    };
    for s in &vpc.subnets {
        for h in &s.hosts {
            let names = [
                h.name.clone(),
                format!("{}.{}", h.name, vpc.name),
                format!("{}.{}.{}", h.name, s.name, vpc.name),
            ];
            add(&names, h, &|_| true);
        }
    }
    for p in &network.peerings {
        let Some((other, _, theirs)) = p.seen_from(&vpc.name) else { continue };
        let Some(peer) = network.vpc(other) else { continue };
        for s in &peer.subnets {
            for h in &s.hosts {
                let names =
                    [format!("{}.{}", h.name, peer.name), format!("{}.{}.{}", h.name, s.name, peer.name)];
                add(&names, h, &|a| theirs.iter().any(|n| n.contains(a)));
            }
        }
    }
    out.into_iter().collect()
}

/// A subnet in its router — a bridge holding the gateway — and its hosts that run here, each
/// a namespace linked to the bridge.
fn subnet_links(
    state: &mut KernelState,
    router: &mut Netns,
    at: (&Network, &Vpc, &Subnet),
    machine: &Machine,
) {
    let (network, vpc, subnet) = at;
    let naming = machine.naming;
    let owner = Owner::Subnet { vpc: vpc.name.clone(), subnet: subnet.name.clone() };
    let bridge = Naming::bridge(&subnet.name);
    router.links.insert(bridge.clone(), link(LinkKind::Bridge, None, &owner));
    router.addrs.insert(addr(&bridge, subnet.gateway.into(), subnet.cidr.prefix()));
    if let (Some(net6), Some(gw6)) = (subnet.cidr6, subnet.gateway6()) {
        router.addrs.insert(addr(&bridge, gw6.into(), net6.prefix()));
    }
    for host in &subnet.hosts {
        // In a fabric, a host elsewhere is reached over the subnet's segment (see `fabric`).
        let fabric = machine.fabric.as_ref();
        if fabric.is_some_and(|f| !f.runs_here(host)) {
            continue;
        }
        let owner = Owner::Host { vpc: vpc.name.clone(), host: host.name.clone() };
        let host_ns = naming.host_ns(&vpc.name, &host.name);
        let veth = LinkKind::Veth { peer_ns: host_ns.clone(), peer: HOST_IFNAME.into() };
        let mtu = fabric.map(|_| crate::model::fabric::inner_mtu());
        let towards_host =
            Link { impairment: host.impairment, mtu, ..link(veth, Some(bridge.clone()), &owner) };
        router.links.insert(Naming::host_veth(&host.name), towards_host);
        let mut ns = host_netns(network, vpc, subnet, host, &owner);
        if let (Some(_), Some(eth0)) = (fabric, ns.links.get_mut(HOST_IFNAME)) {
            eth0.mtu = mtu;
            eth0.mac = Some(crate::model::fabric::host_mac(&vpc.name, &host.name));
        }
        state.namespaces.insert(host_ns, ns);
    }
}

/// A host's namespace: `eth0` with its address and default route, its firewall, its workloads.
fn host_netns(network: &Network, vpc: &Vpc, subnet: &Subnet, host: &Host, owner: &Owner) -> Netns {
    let mut ns = netns_with_lo(owner);
    ns.ipv6 = Some(subnet.cidr6.is_some());
    let eth0 = Link { impairment: host.impairment, ..link(LinkKind::VethPeer, None, owner) };
    ns.links.insert(HOST_IFNAME.into(), eth0);
    ns.addrs.insert(addr(HOST_IFNAME, host.ip.into(), subnet.cidr.prefix()));
    ns.routes.insert(Route { dst: default_route(), via: subnet.gateway.into(), dev: HOST_IFNAME.into() });
    if let (Some(ip6), Some(gw6)) = (host.ip6, subnet.gateway6()) {
        ns.addrs.insert(addr(HOST_IFNAME, ip6.into(), ipam6::SUBNET_PREFIX));
        ns.routes.insert(Route { dst: default_route6(), via: gw6.into(), dev: HOST_IFNAME.into() });
    }
    // The host's own policy first, then its subnet's.
    let targets = [Protected::Host(host.name.clone()), Protected::Subnet(subnet.name.clone())];
    let policies: Vec<&Firewall> = targets
        .iter()
        .flat_map(|t| network.firewalls.iter().filter(move |f| f.vpc == vpc.name && f.protects == *t))
        .collect();
    if !policies.is_empty() {
        ns.nft = Some(Nft::Wanted(host_ruleset(&policies, subnet.cidr6.is_some())));
        ns.processes.insert(Process::FlowLog);
    }
    for w in network.workloads.iter().filter(|w| w.vpc == vpc.name && w.host == host.name) {
        ns.processes.insert(process_for(&vpc.name, &host.name, &w.kind));
    }
    ns
}

/// A router's peering links, addresses and routes to what each peer lets cross. The side
/// named first in `peer()` creates the veth. IPv6 crosses between dual-stack VPCs only.
fn peering_links(
    router: &mut Netns,
    vpc: &Vpc,
    network: &Network,
    naming: &Naming,
    transfer: &BTreeMap<String, Ipv4Network>,
) {
    for p in &network.peerings {
        let Some((other, _, theirs)) = p.seen_from(&vpc.name) else { continue };
        let link_net = transfer[&peering_key(&p.a, &p.b)];
        let first = p.a == vpc.name;
        let mine_and_theirs = |(a, b): (IpAddr, IpAddr)| if first { (a, b) } else { (b, a) };
        let (mine_ip, their_ip) = mine_and_theirs(ips(transfer_ips(link_net)));
        let (mine_ip6, their_ip6) = mine_and_theirs(ips(transfer_ips6(link_net)));
        let dev = Naming::peer_link(other);
        let owner = Owner::Peering { a: p.a.clone(), b: p.b.clone() };
        let kind = if first {
            LinkKind::Veth { peer_ns: naming.router_ns(other), peer: Naming::peer_link(&vpc.name) }
        } else {
            LinkKind::VethPeer
        };
        router.links.insert(dev.clone(), Link { impairment: p.impairment, ..link(kind, None, &owner) });
        router.addrs.insert(addr(&dev, mine_ip, 30));
        let dual = vpc.cidr6.is_some() && network.vpc(other).is_some_and(|o| o.cidr6.is_some());
        if dual {
            router.addrs.insert(addr(&dev, mine_ip6, 64));
        }
        for dst in theirs {
            let via = if dst.is_ipv4() { their_ip } else { their_ip6 };
            if dst.is_ipv4() || dual {
                router.routes.insert(Route { dst: *dst, via, dev: dev.clone() });
            }
        }
    }
}

fn ips<T: Into<IpAddr>>((a, b): (T, T)) -> (IpAddr, IpAddr) {
    (a.into(), b.into())
}

/// The process that realises a workload of a host.
pub(crate) fn process_for(vpc: &str, host: &str, kind: &WorkloadKind) -> Process {
    match kind {
        WorkloadKind::Run { argv, restart } => Process::Command { argv: argv.clone(), restart: *restart },
        WorkloadKind::Serve { port } => Process::Http { port: *port, body: format!("{vpc}/{host}\n") },
    }
}

/// A host's firewall: its own policy's rules first, then its subnet's; stateful; ingress
/// nothing allows is dropped, and egress too once a policy has egress rules. Rules cover
/// both families; with IPv6 on, neighbour discovery always passes, as ARP does for IPv4.
fn host_ruleset(policies: &[&Firewall], ipv6: bool) -> Ruleset {
    let lo = || IfName::Exact("lo".into());
    // Each rule with where it came from, as `explain` names it.
    let labelled = |direction: &'static str, rules: fn(&Firewall) -> &Vec<FirewallRule>| {
        policies.iter().flat_map(move |p| {
            let target = match &p.protects {
                Protected::Host(h) => format!("host {}/{h}", p.vpc),
                Protected::Subnet(s) => format!("subnet {}/{s}", p.vpc),
            };
            let at = p.origin.as_ref().map_or(String::new(), |o| format!(" at {o}"));
            rules(p)
                .iter()
                .enumerate()
                .map(move |(i, r)| (r, format!("firewall on {target}{at}, {direction} rule {}", i + 1)))
        })
    };
    let ingress = labelled("ingress", |p| &p.ingress);
    let mut chains = vec![policy_chain(
        Chain::filter("input", Hook::Input, true),
        Match::Iif(lo()),
        Match::Saddr,
        (ingress, ipv6),
    )];
    if policies.iter().any(|p| !p.egress.is_empty()) {
        let egress = labelled("egress", |p| &p.egress);
        chains.push(policy_chain(
            Chain::filter("output", Hook::Output, true),
            Match::Oif(lo()),
            Match::Daddr,
            (egress, ipv6),
        ));
    }
    Ruleset { chains }
}

/// A dropping chain that passes replies, loopback and neighbour discovery, then the rules
/// in order.
fn policy_chain<'a>(
    chain: Chain,
    loopback: Match,
    peer: fn(IpNetwork) -> Match,
    (rules, ipv6): (impl Iterator<Item = (&'a FirewallRule, String)>, bool),
) -> Chain {
    let mut chain = chain.rule(vec![Match::Established], Action::Accept).rule(vec![loopback], Action::Accept);
    if ipv6 {
        chain = chain.rule(vec![Match::NeighbourDiscovery], Action::Accept);
    }
    for (rule, origin) in rules {
        for m in rule_matches(rule, peer) {
            let action = if rule.allow { Action::Accept } else { Action::Drop };
            chain = chain.rule_from(m, action, origin.clone()).logged();
        }
    }
    // What no rule allowed: logged before the policy drops it.
    chain.rule_from(Vec::new(), Action::Continue, "no rule allowed it".into()).logged()
}

/// The nft matches of one policy rule: one set per protocol (`any` with a port is tcp and
/// udp, `icmp` is ICMP and ICMPv6) and per peer network, never pairing ICMP of one family
/// with an address of the other.
fn rule_matches(rule: &FirewallRule, peer: fn(IpNetwork) -> Match) -> Vec<Vec<Match>> {
    let protos: Vec<Option<Proto>> = match (rule.proto, rule.ports) {
        (RuleProto::Tcp, _) => vec![Some(Proto::Tcp)],
        (RuleProto::Udp, _) => vec![Some(Proto::Udp)],
        (RuleProto::Icmp, _) => vec![Some(Proto::Icmp), Some(Proto::Icmpv6)],
        (RuleProto::Any, Some(_)) => vec![Some(Proto::Tcp), Some(Proto::Udp)],
        (RuleProto::Any, None) => vec![None],
    };
    let nets: Vec<Option<IpNetwork>> =
        if rule.nets.is_empty() { vec![None] } else { rule.nets.iter().copied().map(Some).collect() };
    let mut out = Vec::new();
    for proto in &protos {
        for net in &nets {
            let family_clash = match (proto, net) {
                (Some(Proto::Icmp), Some(n)) => !n.is_ipv4(),
                (Some(Proto::Icmpv6), Some(n)) => n.is_ipv4(),
                _ => false,
            };
            if family_clash {
                continue;
            }
            let mut m = Vec::new();
            if let Some(n) = net {
                m.push(peer(*n));
            }
            if let Some(p) = proto {
                m.push(Match::Proto(*p));
                if let Some((lo, hi)) = rule.ports {
                    m.push(Match::Dport(lo, hi));
                }
            }
            out.push(m);
        }
    }
    out
}

/// The router's rules: egress only for public and `nat()` subnets, translated; inbound
/// only for replies and published ports.
fn router_ruleset(vpc: &Vpc, network: &Network, machine_link: Ipv4Network) -> Ruleset {
    let igw = || IfName::Exact(ROUTER_UPLINK.into());
    let egress: Vec<&Subnet> = vpc.subnets.iter().filter(|s| s.egress()).collect();
    let mut forward = Chain::filter("forward", Hook::Forward, false)
        .rule(vec![Match::Established], Action::Accept)
        .rule(vec![Match::Iif(igw()), Match::Dnatted], Action::Accept);
    if vpc.host_access {
        // The machine itself, from its end of the uplink; nothing it forwards.
        let (machine_ip, _) = transfer_ips(machine_link);
        forward =
            forward.rule(vec![Match::Iif(igw()), Match::Saddr(net(machine_ip, 32).into())], Action::Accept);
    }
    forward = forward.rule(vec![Match::Iif(igw())], Action::Drop);
    let mut postrouting = Chain::nat("postrouting", Hook::Postrouting);
    for subnet in &egress {
        let cidr = IpNetwork::V4(subnet.cidr);
        let why = if subnet.public { "public" } else { "nat()" };
        let origin = format!("internet for subnet {}/{} ({why})", vpc.name, subnet.name);
        forward =
            forward.rule_from(vec![Match::Oif(igw()), Match::Saddr(cidr)], Action::Accept, origin.clone());
        postrouting =
            postrouting.rule_from(vec![Match::Oif(igw()), Match::Saddr(cidr)], Action::Masquerade, origin);
        // IPv6 leaves untranslated: the VPC's prefix is routed back to it.
        if let Some(cidr6) = subnet.cidr6 {
            forward = forward.rule(vec![Match::Oif(igw()), Match::Saddr(cidr6.into())], Action::Accept);
        }
    }
    forward = forward.rule(vec![Match::Oif(igw())], Action::Drop);
    let mut input = Chain::filter("input", Hook::Input, false);
    if vpc.cidr6.is_some() {
        // The router's own links, which no drop below may cut.
        input = input.rule(vec![Match::NeighbourDiscovery], Action::Accept);
    }
    input = input
        .rule(vec![Match::Iif(igw()), Match::Established], Action::Accept)
        .rule(vec![Match::Iif(igw()), Match::Dnatted], Action::Accept)
        .rule(vec![Match::Iif(igw())], Action::Drop);
    // Peerings: only the allowed CIDRs cross, in both directions, and never onwards.
    let peers: Vec<_> = network.peerings.iter().filter_map(|p| p.seen_from(&vpc.name)).collect();
    if !peers.is_empty() {
        let any_peer = || IfName::Prefix(PEER_PREFIX.into());
        forward = forward.rule(vec![Match::Iif(any_peer()), Match::Oif(any_peer())], Action::Drop);
    }
    for (other, mine, theirs) in peers {
        let link = || IfName::Exact(Naming::peer_link(other));
        for m in mine {
            for t in theirs.iter().filter(|t| t.is_ipv4() == m.is_ipv4()) {
                forward = forward
                    .rule(vec![Match::Oif(link()), Match::Saddr(*m), Match::Daddr(*t)], Action::Accept)
                    .rule(vec![Match::Iif(link()), Match::Saddr(*t), Match::Daddr(*m)], Action::Accept);
                input =
                    input.rule(vec![Match::Iif(link()), Match::Saddr(*t), Match::Daddr(*m)], Action::Accept);
            }
        }
        forward =
            forward.rule(vec![Match::Oif(link())], Action::Drop).rule(vec![Match::Iif(link())], Action::Drop);
        input = input.rule(vec![Match::Iif(link())], Action::Drop);
    }
    let mut prerouting = Chain::nat("prerouting", Hook::Prerouting);
    for p in network.publishes.iter().filter(|p| p.vpc == vpc.name) {
        let matches =
            vec![Match::Iif(igw()), Match::Proto(proto(p.proto)), Match::Dport(p.host_port, p.host_port)];
        prerouting = prerouting.rule_from(matches, Action::Dnat { addr: p.ip, port: p.port }, published(p));
    }
    Ruleset { chains: vec![forward, input, prerouting, postrouting] }
}

/// The machine's rules: VPC uplinks never reach each other (but for published ports, which
/// hosts of one VPC reach through the machine's address as the outside does); their traffic
/// leaves through the machine's uplink translated; published ports lead to their VPC's
/// router from the outside, from other VPCs and from the machine itself, its loopback
/// included (`route_localnet` on the uplink ends, and the source translated to the
/// uplink's so replies find the way back).
fn machine_ruleset(network: &Network, transfer: &BTreeMap<String, Ipv4Network>, uplink: &str) -> Ruleset {
    let vpcs = || IfName::Prefix(MACHINE_UPLINK_PREFIX.into());
    let up = || IfName::Exact(uplink.into());
    let forward = Chain::filter("forward", Hook::Forward, false)
        .rule(vec![Match::Oif(vpcs()), Match::Established], Action::Accept)
        .rule(vec![Match::Oif(vpcs()), Match::Dnatted], Action::Accept)
        .rule(vec![Match::Iif(vpcs()), Match::Oif(vpcs())], Action::Drop)
        .rule(vec![Match::Oif(vpcs())], Action::Drop);
    let space = net(TRANSFER_SPACE, TRANSFER_PREFIX);
    let loopback = net(Ipv4Addr::LOCALHOST, 8);
    let postrouting = Chain::nat("postrouting", Hook::Postrouting)
        .rule(vec![Match::Oif(up()), Match::Saddr(space.into())], Action::Masquerade)
        .rule(vec![Match::Oif(vpcs()), Match::Saddr(loopback.into())], Action::Masquerade);
    let mut prerouting = Chain::nat("prerouting", Hook::Prerouting);
    let mut output = Chain::nat("output", Hook::Output);
    for p in &network.publishes {
        let (_, router_ip) = transfer_ips(transfer[&p.vpc]);
        let matches = vec![
            Match::LocalDestination,
            Match::Proto(proto(p.proto)),
            Match::Dport(p.host_port, p.host_port),
        ];
        let dnat = Action::Dnat { addr: router_ip, port: p.host_port };
        prerouting = prerouting.rule_from(matches.clone(), dnat.clone(), published(p));
        output = output.rule_from(matches, dnat, published(p));
    }
    Ruleset { chains: vec![forward, prerouting, output, postrouting] }
}

/// A published port, as `publish()` declared it.
fn published(p: &crate::model::Publish) -> String {
    let at = p.origin.as_ref().map_or(String::new(), |o| format!(" at {o}"));
    format!("publish {}/{} port {} as {}/{}{at}", p.vpc, p.host, p.port, p.host_port, p.proto)
}

fn proto(t: Transport) -> Proto {
    match t {
        Transport::Tcp => Proto::Tcp,
        Transport::Udp => Proto::Udp,
    }
}

/// The key of a peering's /30 among the transfer networks (`~` never appears in names).
pub(crate) fn peering_key(a: &str, b: &str) -> String {
    format!("{a}~{b}")
}

/// A /30 per VPC uplink (keyed by the VPC's name) and per peering (by `peering_key`),
/// placed by a hash of the key (probing on collision, in key order), so adding or removing
/// one does not renumber the others.
pub(crate) fn transfer_nets(network: &Network) -> BTreeMap<String, Ipv4Network> {
    let blocks: u32 = 1 << (32 - TRANSFER_PREFIX - 2);
    let names: BTreeSet<String> = network
        .vpcs
        .iter()
        .map(|v| v.name.clone())
        .chain(network.peerings.iter().map(|p| peering_key(&p.a, &p.b)))
        .collect();
    let mut taken = BTreeSet::new();
    let mut out = BTreeMap::new();
    for name in names {
        let mut block = (fnv1a(name.as_bytes()) % u64::from(blocks)) as u32;
        while !taken.insert(block) {
            block = (block + 1) % blocks;
        }
        let base = u32::from(TRANSFER_SPACE) + block * 4;
        out.insert(name, net(Ipv4Addr::from(base), 30));
    }
    out
}

/// The machine's and the router's address on an uplink /30.
pub(crate) fn transfer_ips(link: Ipv4Network) -> (Ipv4Addr, Ipv4Addr) {
    let base = u32::from(link.network());
    (Ipv4Addr::from(base + 1), Ipv4Addr::from(base + 2))
}

/// The same link's IPv6 ends: `::1` and `::2` of the /64 numbered like its /30.
pub(crate) fn transfer_ips6(link: Ipv4Network) -> (Ipv6Addr, Ipv6Addr) {
    let block = (u32::from(link.network()) - u32::from(TRANSFER_SPACE)) / 4;
    let base = u128::from(TRANSFER_SPACE6) | (u128::from(block) << 64);
    (Ipv6Addr::from(base + 1), Ipv6Addr::from(base + 2))
}

/// The sandbox machine: `up0` towards the simulated internet.
fn sandbox_machine(internet: &str) -> Netns {
    let mut m = netns_with_lo(&Owner::Sandbox);
    m.ipv6 = Some(true);
    let uplink = LinkKind::Veth { peer_ns: internet.into(), peer: HOST_IFNAME.into() };
    m.links.insert(UPLINK_IFNAME.into(), link(uplink, None, &Owner::Sandbox));
    m.addrs.insert(addr(UPLINK_IFNAME, SANDBOX_UPLINK_IP.into(), INTERNET_PREFIX));
    m.addrs.insert(addr(UPLINK_IFNAME, SANDBOX_UPLINK_IP6.into(), ipam6::SUBNET_PREFIX));
    m
}

fn internet_ns() -> Netns {
    let mut i = netns_with_lo(&Owner::Internet);
    i.ipv6 = Some(true);
    i.links.insert(HOST_IFNAME.into(), link(LinkKind::VethPeer, None, &Owner::Internet));
    i.addrs.insert(addr(HOST_IFNAME, INTERNET_IP.into(), INTERNET_PREFIX));
    i.addrs.insert(addr(HOST_IFNAME, INTERNET_IP6.into(), ipam6::SUBNET_PREFIX));
    i.processes.insert(Process::Http { port: 80, body: INTERNET_HTTP_BODY.into() });
    i
}

fn netns_with_lo(owner: &Owner) -> Netns {
    let mut ns = Netns { owner: owner.clone(), ..Netns::default() };
    ns.links.insert("lo".into(), link(LinkKind::Loopback, None, owner));
    ns
}

fn link(kind: LinkKind, master: Option<String>, owner: &Owner) -> Link {
    Link::made(kind, master, owner.clone())
}

fn net(ip: Ipv4Addr, prefix: u8) -> Ipv4Network {
    Ipv4Network::new(ip, prefix).expect("prefix comes from a parsed network")
}

fn addr(dev: &str, ip: IpAddr, prefix: u8) -> Addr {
    Addr { dev: dev.into(), net: IpNetwork::new(ip, prefix).expect("prefix comes from a parsed network") }
}

pub(crate) fn default_route() -> IpNetwork {
    IpNetwork::V4(Ipv4Network::new(Ipv4Addr::UNSPECIFIED, 0).expect("0.0.0.0/0 is valid"))
}

pub(crate) fn default_route6() -> IpNetwork {
    IpNetwork::V6(Ipv6Network::new(Ipv6Addr::UNSPECIFIED, 0).expect("::/0 is valid"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Host, Subnet};

    fn vpc(name: &str) -> Vpc {
        let cidr = "10.0.0.0/16".parse().unwrap();
        Vpc { name: name.into(), cidr, cidr6: None, host_access: false, subnets: Vec::new() }
    }

    #[test]
    fn transfer_nets_are_distinct_and_stable() {
        let mut network =
            Network { vpcs: (0..50).map(|i| vpc(&format!("v{i}"))).collect(), ..Network::default() };
        let all = transfer_nets(&network);
        let distinct: BTreeSet<_> = all.values().collect();
        assert_eq!(distinct.len(), 50);
        let space = net(TRANSFER_SPACE, TRANSFER_PREFIX);
        assert!(all.values().all(|n| space.contains(n.network()) && n.prefix() == 30));
        network.vpcs.remove(7);
        let fewer = transfer_nets(&network);
        assert!(fewer.iter().all(|(name, n)| all[name] == *n), "removing one VPC renumbered another");
    }

    #[test]
    fn only_egress_subnets_leave_the_router() {
        let mut prod = vpc("prod");
        for (name, cidr, public, nat) in [
            ("web", "10.0.1.0/24", true, false),
            ("app", "10.0.2.0/24", false, true),
            ("db", "10.0.3.0/24", false, false),
        ] {
            let cidr: Ipv4Network = cidr.parse().unwrap();
            let ip = Ipv4Addr::from(u32::from(cidr.network()) + 2);
            let hosts = vec![Host { name: name.into(), ip, ip6: None, impairment: None, node: None }];
            prod.subnets.push(Subnet {
                name: name.into(),
                cidr,
                public,
                nat,
                gateway: cidr.nth(1).unwrap(),
                cidr6: None,
                hosts,
                nodes: Vec::new(),
                vni: None,
            });
        }
        let network = Network { vpcs: vec![prod.clone()], ..Network::default() };
        let ruleset = router_ruleset(&prod, &network, net(TRANSFER_SPACE, 30));
        let text: Vec<String> = ruleset
            .chains
            .iter()
            .flat_map(|c| c.rules.iter().map(move |r| format!("{}: {r}", c.name)))
            .collect();
        let text = text.join("\n");
        assert!(text.contains("forward: oifname \"igw\" ip saddr 10.0.1.0/24 counter accept"), "{text}");
        assert!(
            text.contains("postrouting: oifname \"igw\" ip saddr 10.0.2.0/24 counter masquerade"),
            "{text}"
        );
        assert!(!text.contains("10.0.3.0/24"), "{text}");
        assert!(text.ends_with("masquerade"), "{text}");
    }
}
