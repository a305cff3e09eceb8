//! Validation: every problem in the declarations, or the resolved `Network`.

use std::collections::HashMap;

use ipnetwork::Ipv4Network;

use super::{
    Cidr, Declarations, Firewall, FirewallRule, FirewallTarget, Host, Network, PeerDecl, PeerRef, Peering,
    Protected, Publish, RuleDecl, Span, Subnet, SubnetDecl, SubnetId, Transport, Vpc, VpcDecl, VpcId,
    Workload, WorkloadKind, ipam, names,
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
    network.publishes = publishes(decls, &network, &mut problems);
    network.peerings = peerings(decls, &mut problems);
    network.workloads = workloads(decls, &mut problems);
    network.firewalls = firewalls(decls, &network);

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

/// A VPC with the subnets and hosts that validate.
fn resolve_vpc(
    decls: &Declarations,
    vpc_id: VpcId,
    vpc_net: Ipv4Network,
    problems: &mut Vec<Problem>,
) -> Vpc {
    let vpc = decls.vpc(vpc_id);
    let mut out = Vpc { name: vpc.name.clone(), cidr: vpc_net, subnets: Vec::new() };
    let mut subnets = Seen::default();
    let mut hosts = Seen::default();
    let mut placed: Vec<(Ipv4Network, Span, &str)> = Vec::new();
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
        let resolved = resolve_hosts(decls, subnet_id, net, problems);
        check_host_names(&vpc.name, &resolved, &mut hosts, problems);
        out.subnets.push(Subnet {
            name: subnet.name.clone(),
            cidr: net,
            public: subnet.public,
            nat: decls.nats.iter().any(|n| n.subnet == subnet_id),
            gateway: ipam::gateway(net),
            hosts: resolved.into_iter().map(|(h, _)| h).collect(),
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
    Some(
        Problem::new(
            format!("subnet `{}` ({net}) overlaps subnet `{other_name}` ({other})", subnet.name),
            subnet.span,
            "overlaps",
        )
        .related(*other_span, format!("`{other_name}` is {other}"))
        .help("subnets of one VPC must not overlap; pick a free range"),
    )
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
/// VPC that overlap each other, allow-lists inside the pair.
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
        let (Some(a_net), Some(b_net)) = (a.cidr.net, b.cidr.net) else { continue };
        if let Some(problem) = peering_conflict(decls, p, &out) {
            problems.push(problem);
            continue;
        }
        let (a_allowed, b_allowed) = match &p.allow {
            None => (vec![a_net], vec![b_net]),
            Some(list) => allowed_sides(list, (a, a_net), (b, b_net), p.span, problems),
        };
        out.push((Peering { a: a.name.clone(), b: b.name.clone(), a_allowed, b_allowed }, p.span));
    }
    out.into_iter().map(|(p, _)| p).collect()
}

/// Why a peering of two distinct VPCs cannot be: their CIDRs overlap, they are peered
/// already, or one of them would route to two VPCs whose CIDRs overlap.
fn peering_conflict(decls: &Declarations, p: &PeerDecl, earlier: &[(Peering, Span)]) -> Option<Problem> {
    let (a, b) = (decls.vpc(p.a), decls.vpc(p.b));
    let (a_net, b_net) = (a.cidr.net?, b.cidr.net?);
    if a_net.overlaps(b_net) {
        return Some(
            Problem::new(
                format!("VPCs `{}` ({a_net}) and `{}` ({b_net}) overlap and cannot peer", a.name, b.name),
                p.span,
                "overlapping peering",
            )
            .related(a.span, format!("`{}` is {a_net}", a.name))
            .related(b.span, format!("`{}` is {b_net}", b.name))
            .help("peered VPCs route to each other, so their CIDRs must be distinct"),
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
    for (side, other) in [(a, b_net), (b, a_net)] {
        for (q, q_span) in earlier {
            let Some((third, _, _)) = q.seen_from(&side.name) else { continue };
            let third_net = decls.vpc_by_name(third).and_then(|id| decls.vpc(id).cidr.net);
            if third_net.is_some_and(|n| n.overlaps(other)) {
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

/// An allow-list split by side: the CIDRs inside `a`, and those inside `b`.
fn allowed_sides(
    list: &[Cidr],
    (a, a_net): (&VpcDecl, Ipv4Network),
    (b, b_net): (&VpcDecl, Ipv4Network),
    span: Span,
    problems: &mut Vec<Problem>,
) -> (Vec<Ipv4Network>, Vec<Ipv4Network>) {
    let (mut a_allowed, mut b_allowed) = (Vec::new(), Vec::new());
    let inside = |outer: Ipv4Network, net: Ipv4Network| {
        outer.contains(net.network()) && outer.contains(net.broadcast())
    };
    for net in list.iter().filter_map(|c| c.net) {
        if inside(a_net, net) {
            a_allowed.push(net);
        } else if inside(b_net, net) {
            b_allowed.push(net);
        } else {
            problems.push(
                Problem::new(
                    format!(
                        "allowed CIDR {net} is in neither `{}` ({a_net}) nor `{}` ({b_net})",
                        a.name, b.name
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
                    nets: r.peers.iter().filter_map(|p| peer_net(decls, network, p)).collect(),
                    allow: r.allow,
                })
                .collect()
        };
        let firewall = Firewall {
            vpc: vpc.name.clone(),
            protects,
            ingress: resolve(&f.policy.ingress),
            egress: resolve(&f.policy.egress),
        };
        out.retain(|g| !g.same_target(&firewall));
        out.push(firewall);
    }
    out
}

/// The addresses a rule's peer stands for, as resolved now (so they follow address changes).
fn peer_net(decls: &Declarations, network: &Network, peer: &PeerRef) -> Option<ipnetwork::Ipv4Network> {
    match peer {
        PeerRef::Cidr(c) => c.net,
        PeerRef::Vpc(v) => decls.vpc(*v).cidr.net,
        PeerRef::Subnet(s) => decls.subnet(*s).cidr.net,
        PeerRef::Host(h) => {
            let subnet = decls.subnet(decls.host_subnet(*h));
            let vpc = network.vpc(&decls.vpc(subnet.vpc).name)?;
            let s = vpc.subnets.iter().find(|s| s.name == subnet.name)?;
            let ip = s.hosts.iter().find(|x| x.name == decls.host_name(*h))?.ip;
            ipnetwork::Ipv4Network::new(ip, 32).ok()
        }
    }
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
    net: ipnetwork::Ipv4Network,
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
            Some((Host { name: h.name.clone(), ip: *ips.get(&id.0)? }, h.span))
        })
        .collect();
    if decls.hosts_of(subnet_id).next().is_none() {
        hosts.push((Host { name: subnet.name.clone(), ip: ipam::first_host(net) }, subnet.span));
    }
    hosts
}

fn check_name(problems: &mut Vec<Problem>, name: &str, span: Span, what: &str) {
    if let Some(why) = names::name_problem(name) {
        problems.push(
            Problem::new(format!("invalid {what} name: {why}"), span, "bad name").help(names::NAME_RULE_HELP),
        );
    }
}
