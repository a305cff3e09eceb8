//! Validation: every problem in the declarations, or the resolved `Network`.

use std::collections::HashMap;
use std::net::Ipv6Addr;

use ipnetwork::{IpNetwork, Ipv4Network, Ipv6Network};

use super::{
    AnyCidr, Declarations, Firewall, FirewallRule, FirewallTarget, Host, HostRef, ImpairTarget, Network,
    PeerDecl, PeerRef, Peering, Protected, Publish, RuleDecl, Span, Subnet, SubnetDecl, SubnetId, Transport,
    Vpc, VpcDecl, VpcId, Workload, WorkloadKind, fabric, ipam, ipam6, names,
};

/// Smallest and largest VPC prefix, as in AWS.
pub(super) const VPC_PREFIX_RANGE: (u8, u8) = (16, 28);

/// One thing wrong with the declarations, pointing at the declaring call.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Problem {
    pub message: String,
    pub span: Span,
    pub label: String,
    /// Other declarations involved (the first of a duplicate, the other of an overlap).
    pub related: Vec<(Span, String)>,
    pub help: Option<String>,
}

impl Problem {
    pub(crate) fn new(message: impl Into<String>, span: Span, label: impl Into<String>) -> Self {
        Self { message: message.into(), span, label: label.into(), related: Vec::new(), help: None }
    }
    pub(crate) fn related(mut self, span: Span, label: impl Into<String>) -> Self {
        self.related.push((span, label.into()));
        self
    }
    pub(crate) fn help(mut self, help: impl Into<String>) -> Self {
        self.help = Some(help.into());
        self
    }
}

/// Checks everything and resolves the topology, or returns every problem found.
pub(crate) fn validate(decls: &Declarations) -> Result<Network, Vec<Problem>> {
    let mut problems = decls.problems.clone();
    let mut network = Network::default();
    let mut seen = Seen::default();
    for (vpc_id, vpc) in decls.live_vpcs() {
        check_vpc(vpc, &mut seen, &mut problems);
        if let Some(vpc_net) = vpc.cidr.net {
            network.vpcs.push(resolve_vpc(decls, vpc_id, vpc_net, &mut problems));
        }
    }
    check_unique_prefixes6(decls, &mut problems);
    check_host_access(decls, &mut problems);
    network.publishes = publishes(decls, &network, &mut problems);
    network.peerings = peerings(decls, &mut problems);
    network.workloads = workloads(decls, &mut problems);
    network.firewalls = firewalls(decls, &network);
    impairments(decls, &mut network, &mut problems);
    fabric::resolve(decls, &mut network, &mut problems);

    if problems.is_empty() { Ok(network) } else { Err(problems) }
}

/// Names already taken, with the declaration that took them.
#[derive(Default)]
struct Seen {
    names: HashMap<String, Span>,
    interfaces: HashMap<String, Span>,
}

impl Seen {
    /// Records a name and the interface name it shortens to: the earlier declaration of the
    /// same name, or of another name with the same interface name.
    fn take(&mut self, name: &str, ifname: String, span: Span) -> (Option<Span>, Option<Span>) {
        let same_name = self.names.insert(name.to_string(), span);
        let same_ifname = self.interfaces.insert(ifname, span).filter(|_| same_name.is_none());
        (same_name, same_ifname)
    }
}

/// A VPC's name and prefix length.
fn check_vpc(vpc: &VpcDecl, seen: &mut Seen, problems: &mut Vec<Problem>) {
    check_name(problems, &vpc.name, vpc.span, "VPC");
    if names::RESERVED_VPC_NAMES.contains(&vpc.name.as_str()) {
        problems.push(
            Problem::new(
                format!("`{}` is reserved and cannot name a VPC", vpc.name),
                vpc.span,
                "reserved name",
            )
            .help("`internet` names the simulated internet; choose another name"),
        );
    }
    let (same_name, same_ifname) = seen.take(&vpc.name, names::machine_uplink_ifname(&vpc.name), vpc.span);
    if let Some(other) = same_ifname {
        problems.push(
            Problem::new("two VPC names shorten to the same interface name", vpc.span, "this VPC")
                .related(other, "and this one")
                .help("make the first 3 characters of long VPC names differ"),
        );
    }
    if let Some(first) = same_name {
        problems.push(
            Problem::new(
                format!("a VPC named `{}` is already declared", vpc.name),
                vpc.span,
                "declared again here",
            )
            .related(first, "first declared here")
            .help("VPC names are unique; rename one of them"),
        );
    }
    if let Some(net6) = vpc.ipv6.as_ref().and_then(|c| c.net)
        && net6.prefix() != ipam6::VPC_PREFIX
    {
        problems.push(
            Problem::new(
                format!("VPC IPv6 prefix {net6} is a /{}; VPCs take a /56", net6.prefix()),
                vpc.span,
                "not a /56",
            )
            .help("write a /56 such as fd10:10::/56, or `ipv6: true` for one derived from the name"),
        );
    }
    let Some(vpc_net) = vpc.cidr.net else { return };
    let (lo, hi) = VPC_PREFIX_RANGE;
    if vpc_net.prefix() < lo || vpc_net.prefix() > hi {
        problems.push(
            Problem::new(
                format!(
                    "VPC CIDR {} has a /{} prefix; VPCs are /{lo} to /{hi}",
                    vpc.cidr.text,
                    vpc_net.prefix()
                ),
                vpc.span,
                "prefix out of range",
            )
            .help(format!("use a prefix between /{lo} (65,536 addresses) and /{hi} (16 addresses)")),
        );
    }
}

/// IPv6 is routed, never translated: unlike IPv4 CIDRs, two VPCs' /56s must not overlap
/// (as in AWS, where each VPC's /56 is its own).
fn check_unique_prefixes6(decls: &Declarations, problems: &mut Vec<Problem>) {
    let mut seen: Vec<(Ipv6Network, &VpcDecl)> = Vec::new();
    for (_, vpc) in decls.live_vpcs() {
        let Some(net) = vpc.ipv6.as_ref().and_then(|c| c.net) else { continue };
        if let Some((other, first)) = seen.iter().find(|(n, _)| n.overlaps(net)) {
            problems.push(
                Problem::new(
                    format!("VPC `{}` ({net}) overlaps the IPv6 prefix of VPC `{}` ({other})", vpc.name, first.name),
                    vpc.span,
                    "overlapping IPv6 prefix",
                )
                .related(first.span, format!("`{}` has {other}", first.name))
                .help("IPv6 is routed, not translated, so every VPC needs its own /56 (`ipv6: true` derives one from the name)"),
            );
        }
        seen.push((net, vpc));
    }
}

/// The machine routes to every host-access VPC, so their CIDRs must not overlap.
fn check_host_access(decls: &Declarations, problems: &mut Vec<Problem>) {
    let mut seen: Vec<(Ipv4Network, &VpcDecl)> = Vec::new();
    for (_, vpc) in decls.live_vpcs().filter(|(_, v)| v.host_access) {
        let Some(net) = vpc.cidr.net else { continue };
        if let Some((other, first)) = seen.iter().find(|(n, _)| n.overlaps(net)) {
            problems.push(
                Problem::new(
                    format!(
                        "host-access VPCs `{}` ({net}) and `{}` ({other}) overlap: the machine cannot route to both",
                        vpc.name, first.name
                    ),
                    vpc.span,
                    "overlapping host access",
                )
                .related(first.span, format!("`{}` has host access to {other}", first.name))
                .help("give one of them another CIDR, or host access to only one"),
            );
        }
        seen.push((net, vpc));
    }
}

/// A VPC with the subnets and hosts that validate.
fn resolve_vpc(
    decls: &Declarations,
    vpc_id: VpcId,
    vpc_net: Ipv4Network,
    problems: &mut Vec<Problem>,
) -> Vpc {
    let vpc = decls.vpc(vpc_id);
    let cidr6 = vpc.prefix6();
    let mut out = Vpc {
        name: vpc.name.clone(),
        cidr: vpc_net,
        cidr6,
        host_access: vpc.host_access,
        subnets: Vec::new(),
    };
    let mut subnets = Seen::default();
    let mut hosts = Seen::default();
    let mut placed: Vec<(Ipv4Network, Span, &str)> = Vec::new();
    let mut placed6: Vec<(Ipv6Network, Span, &str)> = Vec::new();
    for (subnet_id, subnet) in decls.subnets_of(vpc_id) {
        check_name(problems, &subnet.name, subnet.span, "subnet");
        match subnets.take(&subnet.name, names::bridge_ifname(&subnet.name), subnet.span) {
            (Some(first), _) => {
                problems.push(
                    Problem::new(
                        format!("VPC `{}` already has a subnet named `{}`", vpc.name, subnet.name),
                        subnet.span,
                        "declared again here",
                    )
                    .related(first, "first declared here")
                    .help("subnet names are unique within a VPC"),
                );
                continue;
            }
            (None, Some(other)) => problems.push(
                Problem::new(
                    "two subnet names shorten to the same interface name",
                    subnet.span,
                    "this subnet",
                )
                .related(other, "and this one")
                .help("make the first 5 characters of long subnet names differ"),
            ),
            (None, None) => {}
        }
        let Some(net) = subnet.cidr.net else { continue };
        if let Some(problem) = placement_problem(vpc, vpc_net, subnet, net, &placed) {
            problems.push(problem);
            continue;
        }
        placed.push((net, subnet.span, &subnet.name));
        let net6 = subnet.ipv6.as_ref().and_then(|c6| match placement6_problem(vpc, subnet, c6, &placed6) {
            Some(problem) => {
                problems.push(problem);
                None
            }
            None => c6.net,
        });
        if let Some(n) = net6 {
            placed6.push((n, subnet.span, &subnet.name));
        }
        let resolved = resolve_hosts(decls, subnet_id, (net, net6), problems);
        check_host_names(&vpc.name, &resolved, &mut hosts, problems);
        out.subnets.push(Subnet {
            name: subnet.name.clone(),
            cidr: net,
            public: subnet.public,
            nat: decls.nats.iter().any(|n| n.subnet == subnet_id),
            gateway: ipam::gateway(net),
            cidr6: net6,
            hosts: resolved.into_iter().map(|(h, _)| h).collect(),
            nodes: Vec::new(),
            vni: None,
        });
    }
    out
}

/// Why a subnet cannot go where it is declared: outside its VPC, too small, or overlapping
/// a sibling.
fn placement_problem(
    vpc: &VpcDecl,
    vpc_net: Ipv4Network,
    subnet: &SubnetDecl,
    net: Ipv4Network,
    placed: &[(Ipv4Network, Span, &str)],
) -> Option<Problem> {
    if !vpc_net.contains(net.network()) || !vpc_net.contains(net.broadcast()) {
        return Some(
            Problem::new(
                format!("subnet {} is not inside VPC `{}` ({})", subnet.cidr.text, vpc.name, vpc.cidr.text),
                subnet.span,
                "outside its VPC",
            )
            .related(vpc.span, format!("VPC `{}` is {}", vpc.name, vpc.cidr.text))
            .help(format!("choose a CIDR inside {}", vpc.cidr.text)),
        );
    }
    if net.prefix() > ipam::MAX_SUBNET_PREFIX {
        return Some(
            Problem::new(
                format!("subnet {} is too small: it has no room for a gateway and a host", subnet.cidr.text),
                subnet.span,
                "too small",
            )
            .help(format!("subnets are /{} or larger", ipam::MAX_SUBNET_PREFIX)),
        );
    }
    let (other, other_span, other_name) = placed.iter().find(|(n, ..)| n.overlaps(net))?;
    Some(overlap_problem(subnet, (net, (*other, *other_span, other_name)), "pick a free range"))
}

/// Two subnets of one VPC that share addresses (of either family).
fn overlap_problem<N: std::fmt::Display>(
    subnet: &SubnetDecl,
    (net, (other, other_span, other_name)): (N, (N, Span, &str)),
    advice: &str,
) -> Problem {
    Problem::new(
        format!("subnet `{}` ({net}) overlaps subnet `{other_name}` ({other})", subnet.name),
        subnet.span,
        "overlaps",
    )
    .related(other_span, format!("`{other_name}` is {other}"))
    .help(format!("subnets of one VPC must not overlap; {advice}"))
}

/// Why a subnet's IPv6 /64 cannot be: its VPC is IPv4-only, it is not a /64, it is
/// outside the VPC's /56, or it overlaps a sibling's.
fn placement6_problem(
    vpc: &VpcDecl,
    subnet: &SubnetDecl,
    c6: &super::Cidr6,
    placed: &[(Ipv6Network, Span, &str)],
) -> Option<Problem> {
    let Some(vpc6) = vpc.ipv6.as_ref() else {
        return Some(
            Problem::new(
                format!("subnet `{}` asks for IPv6, but VPC `{}` is IPv4-only", subnet.name, vpc.name),
                subnet.span,
                "IPv6 in an IPv4-only VPC",
            )
            .related(vpc.span, "declared without `ipv6`")
            .help(format!("give the VPC a /56: vpc(\"{}\", ..., #{{ ipv6: true }})", vpc.name)),
        );
    };
    let (net, vpc_net) = (c6.net?, vpc6.net?);
    if net.prefix() != ipam6::SUBNET_PREFIX {
        return Some(
            Problem::new(
                format!("subnet IPv6 prefix {net} is a /{}; subnets take a /64", net.prefix()),
                subnet.span,
                "not a /64",
            )
            .help("write a /64 inside the VPC's /56, or `ipv6: true` for the next free one"),
        );
    }
    if !vpc_net.contains(net.network()) || vpc_net.prefix() > net.prefix() {
        return Some(
            Problem::new(
                format!("subnet IPv6 prefix {net} is not inside VPC `{}` ({vpc_net})", vpc.name),
                subnet.span,
                "outside its VPC",
            )
            .related(vpc.span, format!("VPC `{}` has {vpc_net}", vpc.name))
            .help(format!("choose a /64 inside {vpc_net}")),
        );
    }
    let (other, other_span, other_name) = placed.iter().find(|(n, ..)| n.overlaps(net))?;
    Some(overlap_problem(
        subnet,
        (net, (*other, *other_span, other_name)),
        "leave `ipv6: true` to get a free /64",
    ))
}

/// Host names are unique within a VPC, and so are the interface names they shorten to.
fn check_host_names(vpc: &str, hosts: &[(Host, Span)], seen: &mut Seen, problems: &mut Vec<Problem>) {
    for (host, span) in hosts {
        match seen.take(&host.name, names::host_veth_ifname(&host.name), *span) {
            (Some(first), _) => problems.push(
                Problem::new(
                    format!("VPC `{vpc}` already has a host named `{}`", host.name),
                    *span,
                    "declared again here",
                )
                .related(first, "first declared here")
                .help("host names are unique within a VPC (a subnet with no hosts gets one named after it)"),
            ),
            (None, Some(other)) => problems.push(
                Problem::new("two host names shorten to the same interface name", *span, "this host")
                    .related(other, "and this one")
                    .help("make the first 5 characters of long host names differ"),
            ),
            (None, None) => {}
        }
    }
}

/// Checks `peer()` calls: no self-peering, no overlap, no duplicates, no two peers of one
/// VPC that overlap each other, allow-lists inside the pair. Each family is checked on its own.
fn peerings(decls: &Declarations, problems: &mut Vec<Problem>) -> Vec<Peering> {
    let mut out: Vec<(Peering, Span)> = Vec::new();
    for p in &decls.peers {
        let (a, b) = (decls.vpc(p.a), decls.vpc(p.b));
        if a.removed || b.removed {
            continue;
        }
        if p.a == p.b {
            problems.push(
                Problem::new(format!("VPC `{}` cannot peer with itself", a.name), p.span, "self-peering")
                    .related(a.span, "this VPC"),
            );
            continue;
        }
        if a.cidr.net.is_none() || b.cidr.net.is_none() {
            continue;
        }
        if let Some(problem) = peering_conflict(decls, p, &out) {
            problems.push(problem);
            continue;
        }
        // IPv6 crosses only between two dual-stack VPCs.
        let dual = [a, b].iter().all(|v| vpc_nets(v).iter().any(IpNetwork::is_ipv6));
        let crossing = |v: &VpcDecl| vpc_nets(v).into_iter().filter(|n| dual || n.is_ipv4()).collect();
        let (a_allowed, b_allowed) = match &p.allow {
            None => (crossing(a), crossing(b)),
            Some(list) => allowed_sides(list, (a, b, dual), p.span, problems),
        };
        out.push((
            Peering { a: a.name.clone(), b: b.name.clone(), a_allowed, b_allowed, impairment: None },
            p.span,
        ));
    }
    out.into_iter().map(|(p, _)| p).collect()
}

/// Puts each `impair()` on what it impairs: the latest call for a target wins, and a
/// host's own over its subnet's.
fn impairments(decls: &Declarations, network: &mut Network, problems: &mut Vec<Problem>) {
    let mut of_subnet = HashMap::new();
    let mut of_host = HashMap::new();
    for d in &decls.impairs {
        match d.target {
            ImpairTarget::Subnet(id) => {
                of_subnet.insert(id, d.impairment);
            }
            ImpairTarget::Host(host) => {
                of_host.insert(host_key(decls, host), d.impairment);
            }
            // Gone with a VPC destroyed later in the script, as the peering itself.
            ImpairTarget::Peering(a, b) if decls.vpc(a).removed || decls.vpc(b).removed => {}
            ImpairTarget::Peering(a, b) => {
                let (a, b) = (&decls.vpc(a).name, &decls.vpc(b).name);
                let found =
                    network.peerings.iter_mut().find(|p| (&p.a, &p.b) == (a, b) || (&p.a, &p.b) == (b, a));
                match found {
                    Some(p) => p.impairment = Some(d.impairment),
                    None => problems.push(
                        Problem::new(
                            format!("VPCs `{a}` and `{b}` are not peered"),
                            d.span,
                            "no such peering",
                        )
                        .help(format!("peer them first: peer({a}, {b}) — or impair(peer({a}, {b}), ...)")),
                    ),
                }
            }
        }
    }
    for (id, subnet) in decls.subnets.iter().enumerate() {
        let Some(impairment) = of_subnet.get(&SubnetId(id)) else { continue };
        let vpc = &decls.vpc(subnet.vpc).name;
        let hosts = network.vpcs.iter_mut().filter(|v| v.name == *vpc).flat_map(|v| &mut v.subnets);
        for s in hosts.filter(|s| s.name == subnet.name) {
            s.hosts.iter_mut().for_each(|h| h.impairment = Some(*impairment));
        }
    }
    for vpc in &mut network.vpcs {
        for subnet in &mut vpc.subnets {
            for host in &mut subnet.hosts {
                if let Some(own) = of_host.get(&(vpc.name.as_str(), host.name.as_str())) {
                    host.impairment = Some(*own);
                }
            }
        }
    }
}

/// A host as (VPC, host name): how the resolved network names it.
fn host_key(decls: &Declarations, host: HostRef) -> (&str, &str) {
    let subnet = decls.subnet(decls.host_subnet(host));
    (&decls.vpc(subnet.vpc).name, decls.host_name(host))
}

/// A VPC's prefixes: its IPv4 CIDR, and its IPv6 /56 when it has a valid one.
fn vpc_nets(vpc: &VpcDecl) -> Vec<IpNetwork> {
    let v6 = vpc.prefix6();
    vpc.cidr.net.map(IpNetwork::V4).into_iter().chain(v6.map(IpNetwork::V6)).collect()
}

/// Whether two prefixes of the same family share an address.
fn overlap(a: IpNetwork, b: IpNetwork) -> bool {
    match (a, b) {
        (IpNetwork::V4(a), IpNetwork::V4(b)) => a.overlaps(b),
        (IpNetwork::V6(a), IpNetwork::V6(b)) => a.overlaps(b),
        _ => false,
    }
}

/// The first pair, one from each list, that overlaps.
fn overlapping(xs: &[IpNetwork], ys: &[IpNetwork]) -> Option<(IpNetwork, IpNetwork)> {
    xs.iter().find_map(|x| ys.iter().find(|y| overlap(*x, **y)).map(|y| (*x, *y)))
}

/// Why a peering of two distinct VPCs cannot be: their CIDRs overlap, they are peered
/// already, or one of them would route to two VPCs whose CIDRs overlap.
fn peering_conflict(decls: &Declarations, p: &PeerDecl, earlier: &[(Peering, Span)]) -> Option<Problem> {
    let (a, b) = (decls.vpc(p.a), decls.vpc(p.b));
    let (a_nets, b_nets) = (vpc_nets(a), vpc_nets(b));
    if let Some((a_net, b_net)) = overlapping(&a_nets, &b_nets) {
        return Some(
            Problem::new(
                format!("VPCs `{}` ({a_net}) and `{}` ({b_net}) overlap and cannot peer", a.name, b.name),
                p.span,
                "overlapping peering",
            )
            .related(a.span, format!("`{}` is {a_net}", a.name))
            .related(b.span, format!("`{}` is {b_net}", b.name))
            .help("peered VPCs route to each other, so their prefixes must be distinct"),
        );
    }
    let same_pair = |q: &Peering| (q.a == a.name && q.b == b.name) || (q.a == b.name && q.b == a.name);
    if let Some((_, first)) = earlier.iter().find(|(q, _)| same_pair(q)) {
        return Some(
            Problem::new(format!("`{}` and `{}` are already peered", a.name, b.name), p.span, "peered again")
                .related(*first, "first peered here")
                .related(a.span, format!("`{}`", a.name))
                .related(b.span, format!("`{}`", b.name))
                .help("one peer() per pair; put every allowed CIDR in its allow list"),
        );
    }
    // A VPC routes to all its peers: two peers with overlapping CIDRs would be ambiguous.
    let mut clash = None;
    for (side, other) in [(a, &b_nets), (b, &a_nets)] {
        for (q, q_span) in earlier {
            let Some((third, _, _)) = q.seen_from(&side.name) else { continue };
            let third_nets = decls.vpc_by_name(third).map(|id| vpc_nets(decls.vpc(id))).unwrap_or_default();
            if overlapping(&third_nets, other).is_some() {
                clash = Some((side.name.clone(), third.to_string(), *q_span));
            }
        }
    }
    let (side, third, q_span) = clash?;
    let other = if side == a.name { &b.name } else { &a.name };
    Some(
        Problem::new(
            format!("`{side}` would peer with `{third}` and `{other}`, whose CIDRs overlap"),
            p.span,
            "ambiguous peering",
        )
        .related(q_span, format!("`{side}` already peers with `{third}` here"))
        .help("a VPC never peers with two VPCs whose CIDRs overlap each other"),
    )
}

/// An allow-list split by side: the CIDRs inside `a`, and those inside `b` (either family).
fn allowed_sides(
    list: &[AnyCidr],
    (a, b, dual): (&VpcDecl, &VpcDecl, bool),
    span: Span,
    problems: &mut Vec<Problem>,
) -> (Vec<IpNetwork>, Vec<IpNetwork>) {
    let (mut a_allowed, mut b_allowed) = (Vec::new(), Vec::new());
    let written6 = list.iter().filter(|c| !c.implied).filter_map(|c| c.net).find(IpNetwork::is_ipv6);
    if !dual && let Some(net) = written6 {
        problems.push(
            Problem::new(
                format!(
                    "allowed CIDR {net} is IPv6, but `{}` and `{}` are not both dual-stack",
                    a.name, b.name
                ),
                span,
                "IPv6 cannot cross",
            )
            .help("IPv6 crosses a peering only when both VPCs declare `ipv6`"),
        );
    }
    let (a_nets, b_nets) = (vpc_nets(a), vpc_nets(b));
    let inside = |outers: &[IpNetwork], net: IpNetwork| {
        outers.iter().any(|o| overlap(*o, net) && o.prefix() <= net.prefix())
    };
    let shown = |nets: &[IpNetwork]| nets.iter().map(ToString::to_string).collect::<Vec<_>>().join(", ");
    for net in list.iter().filter_map(|c| c.net).filter(|n| dual || n.is_ipv4()) {
        if inside(&a_nets, net) {
            a_allowed.push(net);
        } else if inside(&b_nets, net) {
            b_allowed.push(net);
        } else {
            problems.push(
                Problem::new(
                    format!(
                        "allowed CIDR {net} is in neither `{}` ({}) nor `{}` ({})",
                        a.name,
                        shown(&a_nets),
                        b.name,
                        shown(&b_nets)
                    ),
                    span,
                    "outside the peering",
                )
                .help("an allow list names CIDRs inside the two peered VPCs"),
            );
        }
    }
    (a_allowed, b_allowed)
}

/// `run()` and `serve()` calls: one server per host and port, each workload once.
fn workloads(decls: &Declarations, problems: &mut Vec<Problem>) -> Vec<Workload> {
    let mut out: Vec<(Workload, Span)> = Vec::new();
    for w in &decls.workloads {
        let subnet = decls.subnet(decls.host_subnet(w.host));
        let vpc = decls.vpc(subnet.vpc);
        if vpc.removed {
            continue;
        }
        let workload = Workload {
            vpc: vpc.name.clone(),
            host: decls.host_name(w.host).to_string(),
            kind: w.kind.clone(),
        };
        if out.iter().any(|(o, _)| *o == workload) {
            continue; // the same workload twice is one workload
        }
        if let WorkloadKind::Serve { port } = w.kind
            && let Some((_, first)) = out.iter().find(|(o, _)| {
                o.vpc == workload.vpc
                    && o.host == workload.host
                    && matches!(o.kind, WorkloadKind::Serve { port: p } if p == port)
            })
        {
            problems.push(
                Problem::new(
                    format!("host `{}` already serves port {port}", workload.host),
                    w.span,
                    "served again",
                )
                .related(*first, "first served here"),
            );
            continue;
        }
        out.push((workload, w.span));
    }
    out.into_iter().map(|(w, _)| w).collect()
}

/// Firewall policies with their peers resolved to addresses; the latest per target wins.
fn firewalls(decls: &Declarations, network: &Network) -> Vec<Firewall> {
    let mut out: Vec<Firewall> = Vec::new();
    for f in &decls.firewalls {
        let (subnet, protects) = match f.target {
            FirewallTarget::Subnet(s) => (decls.subnet(s), Protected::Subnet(decls.subnet(s).name.clone())),
            FirewallTarget::Host(h) => {
                (decls.subnet(decls.host_subnet(h)), Protected::Host(decls.host_name(h).to_string()))
            }
        };
        let vpc = decls.vpc(subnet.vpc);
        if vpc.removed {
            continue;
        }
        let resolve = |rules: &[RuleDecl]| -> Vec<FirewallRule> {
            rules
                .iter()
                .map(|r| FirewallRule {
                    proto: r.proto,
                    ports: r.ports,
                    nets: r.peers.iter().flat_map(|p| peer_nets(decls, network, p)).collect(),
                    allow: r.allow,
                })
                .collect()
        };
        let firewall = Firewall {
            vpc: vpc.name.clone(),
            protects,
            ingress: resolve(&f.policy.ingress),
            egress: resolve(&f.policy.egress),
            origin: f.at.clone(),
        };
        out.retain(|g| !g.same_target(&firewall));
        out.push(firewall);
    }
    out
}

/// The addresses a rule's peer stands for, as resolved now (so they follow address
/// changes): a Vpc, Subnet or Host stands for its addresses of both families.
fn peer_nets(decls: &Declarations, network: &Network, peer: &PeerRef) -> Vec<IpNetwork> {
    match peer {
        PeerRef::Cidr(c) => c.net.into_iter().collect(),
        PeerRef::Vpc(v) => vpc_nets(decls.vpc(*v)),
        PeerRef::Subnet(s) => {
            let subnet = decls.subnet(*s);
            let v6 = resolved_subnet(decls, network, *s).and_then(|r| r.cidr6);
            subnet.cidr.net.map(IpNetwork::V4).into_iter().chain(v6.map(IpNetwork::V6)).collect()
        }
        PeerRef::Host(h) => {
            let Some(host) = resolved_subnet(decls, network, decls.host_subnet(*h))
                .and_then(|s| s.hosts.iter().find(|x| x.name == decls.host_name(*h)))
            else {
                return Vec::new();
            };
            let v4 = Ipv4Network::new(host.ip, 32).ok().map(IpNetwork::V4);
            let v6 = host.ip6.and_then(|ip| Ipv6Network::new(ip, 128).ok()).map(IpNetwork::V6);
            v4.into_iter().chain(v6).collect()
        }
    }
}

/// A declared subnet as it resolved into the network.
fn resolved_subnet<'n>(decls: &Declarations, network: &'n Network, id: SubnetId) -> Option<&'n Subnet> {
    let subnet = decls.subnet(id);
    network.vpc(&decls.vpc(subnet.vpc).name)?.subnets.iter().find(|s| s.name == subnet.name)
}

/// Things that work but are probably not what was meant.
pub(crate) fn warnings(decls: &Declarations) -> Vec<Problem> {
    decls
        .nats
        .iter()
        .filter(|n| decls.subnet(n.subnet).public)
        .map(|n| {
            let subnet = decls.subnet(n.subnet);
            Problem::new(
                format!("nat() on public subnet `{}` does nothing", subnet.name),
                n.span,
                "not needed",
            )
            .related(subnet.span, "already public")
            .help("public subnets reach the internet already; nat() gives a private subnet egress only")
        })
        .collect()
}

/// Checks `publish()` calls against the resolved network.
fn publishes(decls: &Declarations, network: &Network, problems: &mut Vec<Problem>) -> Vec<Publish> {
    let mut out = Vec::new();
    let mut seen: HashMap<(u16, Transport), Span> = HashMap::new();
    for p in &decls.publishes {
        let subnet_id = decls.host_subnet(p.host);
        let subnet = decls.subnet(subnet_id);
        let vpc = decls.vpc(subnet.vpc);
        if vpc.removed {
            continue;
        }
        let host = decls.host_name(p.host);
        if !subnet.public {
            problems.push(
                Problem::new(
                    format!(
                        "host `{host}` is in private subnet `{}`: only public hosts can be published",
                        subnet.name
                    ),
                    p.span,
                    "private host",
                )
                .related(subnet.span, "a private subnet")
                .help("declare the subnet with #{ public: true }; nat() gives private subnets egress only"),
            );
            continue;
        }
        let (host_port, proto) = (p.host_port, p.proto);
        if let Some(first) = seen.insert((host_port, proto), p.span) {
            problems.push(
                Problem::new(
                    format!("host port {host_port}/{proto} is published twice"),
                    p.span,
                    "published again",
                )
                .related(first, "first published here")
                .help("each host port forwards to one host; pick another host port"),
            );
            continue;
        }
        let resolved = network
            .vpc(&vpc.name)
            .and_then(|v| v.subnets.iter().find(|s| s.name == subnet.name))
            .and_then(|s| s.hosts.iter().find(|h| h.name == host));
        if let Some(h) = resolved {
            out.push(Publish {
                vpc: vpc.name.clone(),
                host: host.to_string(),
                ip: h.ip,
                port: p.port,
                host_port,
                proto,
                origin: p.at.clone(),
            });
        }
    }
    out
}

/// The hosts of a subnet (an implicit one named after it when none is declared), checking
/// names and fixed addresses. Fixed addresses win: an automatic address that a fixed one
/// claims moves to the next free address.
fn resolve_hosts(
    decls: &Declarations,
    subnet_id: SubnetId,
    (net, net6): (Ipv4Network, Option<Ipv6Network>),
    problems: &mut Vec<Problem>,
) -> Vec<(Host, Span)> {
    let subnet = decls.subnet(subnet_id);
    let mut by_ip: HashMap<std::net::Ipv4Addr, (Span, &str)> = HashMap::new();
    let mut ips: HashMap<usize, std::net::Ipv4Addr> = HashMap::new();
    for (id, host) in decls.hosts_of(subnet_id).filter(|(_, h)| h.fixed) {
        let Some(ip) = host.ip else { continue };
        if let Some(reason) = ipam::unusable_reason(net, ip) {
            let first = std::net::Ipv4Addr::from(u32::from(ipam::gateway(net)) + 1);
            let last = std::net::Ipv4Addr::from(u32::from(net.broadcast()) - 1);
            problems.push(
                Problem::new(
                    format!("address {ip} {reason} subnet `{}` ({net})", subnet.name),
                    host.span,
                    if reason == "is outside" { "outside the subnet" } else { "a reserved address" },
                )
                .related(subnet.span, format!("subnet `{}` is {net}", subnet.name))
                .help(format!("choose an address from {first} to {last}")),
            );
        } else if let Some((first, first_name)) = by_ip.insert(ip, (host.span, &host.name)) {
            problems.push(
                Problem::new(
                    format!("address {ip} is taken twice: by `{first_name}` and by `{}`", host.name),
                    host.span,
                    "second use",
                )
                .related(first, "first use")
                .help("give one host another address, or leave `ip` out to get the next free one"),
            );
        } else {
            ips.insert(id.0, ip);
        }
    }
    // Automatic addresses that a fixed one declared later took are placed again.
    let mut placed = ipam::Allocator::new(net);
    by_ip.keys().for_each(|ip| placed.take(*ip));
    for (id, host) in decls.hosts_of(subnet_id).filter(|(_, h)| !h.fixed) {
        let Some(ip) = host.ip else { continue };
        let ip = if by_ip.contains_key(&ip) {
            match placed.allocate(None) {
                Some(ip) => ip,
                None => {
                    problems.push(
                        Problem::new(
                            format!("subnet `{}` ({net}) is full", subnet.name),
                            host.span,
                            "no free address",
                        )
                        .related(subnet.span, "this subnet")
                        .help("use a larger subnet, or fewer hosts"),
                    );
                    continue;
                }
            }
        } else {
            ip
        };
        by_ip.insert(ip, (host.span, &host.name));
        placed.take(ip);
        ips.insert(id.0, ip);
    }
    let mut hosts: Vec<(Host, Span)> = decls
        .hosts_of(subnet_id)
        .filter_map(|(id, h)| {
            check_name(problems, &h.name, h.span, "host");
            Some((
                Host { name: h.name.clone(), ip: *ips.get(&id.0)?, ip6: None, impairment: None, node: None },
                h.span,
            ))
        })
        .collect();
    if decls.hosts_of(subnet_id).next().is_none() {
        let implicit = Host {
            name: subnet.name.clone(),
            ip: ipam::first_host(net),
            ip6: None,
            impairment: None,
            node: None,
        };
        hosts.push((implicit, subnet.span));
    }
    assign_ipv6(decls, subnet_id, (net, net6), &mut hosts, problems);
    hosts
}

/// IPv6 addresses for the hosts of a subnet with a /64: fixed ones checked, the others
/// derived from their IPv4 address (moved up when a fixed one holds theirs).
fn assign_ipv6(
    decls: &Declarations,
    subnet_id: SubnetId,
    (net, net6): (Ipv4Network, Option<Ipv6Network>),
    hosts: &mut [(Host, Span)],
    problems: &mut Vec<Problem>,
) {
    let subnet = decls.subnet(subnet_id);
    let fixed: HashMap<&str, Ipv6Addr> =
        decls.hosts_of(subnet_id).filter_map(|(_, h)| Some((h.name.as_str(), h.ip6?))).collect();
    let Some(net6) = net6 else {
        for (_, h) in decls.hosts_of(subnet_id).filter(|(_, h)| h.ip6.is_some()) {
            problems.push(
                Problem::new(
                    format!(
                        "host `{}` has an IPv6 address, but subnet `{}` has no IPv6",
                        h.name, subnet.name
                    ),
                    h.span,
                    "no IPv6 here",
                )
                .related(subnet.span, "declared without `ipv6`")
                .help("give the subnet `#{ ipv6: true }` (its VPC needs a /56 too)"),
            );
        }
        return;
    };
    let mut taken: HashMap<Ipv6Addr, (Span, String)> = HashMap::new();
    for (host, span) in hosts.iter_mut() {
        let Some(ip6) = fixed.get(host.name.as_str()).copied() else { continue };
        if let Some(reason) = ipam6::unusable_reason(net6, ip6) {
            problems.push(
                Problem::new(
                    format!("address {ip6} {reason} subnet `{}` ({net6})", subnet.name),
                    *span,
                    if reason == "is outside" { "outside the subnet" } else { "a reserved address" },
                )
                .related(subnet.span, format!("subnet `{}` has {net6}", subnet.name))
                .help(format!(
                    "choose an address from {} on",
                    ipam6::derived(net6, net, ipam::first_host(net))
                )),
            );
        } else if let Some((first, first_name)) = taken.insert(ip6, (*span, host.name.clone())) {
            problems.push(
                Problem::new(
                    format!("address {ip6} is taken twice: by `{first_name}` and by `{}`", host.name),
                    *span,
                    "second use",
                )
                .related(first, "first use")
                .help("give one host another address, or leave `ip6` out"),
            );
        } else {
            host.ip6 = Some(ip6);
        }
    }
    for (host, span) in hosts.iter_mut().filter(|(h, _)| !fixed.contains_key(h.name.as_str())) {
        let mut ip6 = ipam6::derived(net6, net, host.ip);
        if taken.contains_key(&ip6) {
            ip6 = ipam6::moved(ip6);
        }
        taken.insert(ip6, (*span, host.name.clone()));
        host.ip6 = Some(ip6);
    }
}

fn check_name(problems: &mut Vec<Problem>, name: &str, span: Span, what: &str) {
    if let Some(why) = names::name_problem(name) {
        problems.push(
            Problem::new(format!("invalid {what} name: {why}"), span, "bad name").help(names::NAME_RULE_HELP),
        );
    }
}
