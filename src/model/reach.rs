//! Reachability from the model alone: can A reach B on a port, by which hops, and if not,
//! the one thing that stops it. Its own evaluator over the `Network` — not the planner's
//! routes and rules, nor the kernel — so that `verify` comparing it with packets catches a
//! bug in either.

use std::net::IpAddr;

use ipnetwork::IpNetwork;

use super::{Firewall, FirewallRule, Host, Network, Protected, RuleProto, Subnet, Transport, Vpc};

/// Where a flow starts or ends.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Place {
    Host {
        vpc: String,
        host: String,
    },
    /// The internet, at this address (the simulated one's, or any outside address).
    Internet(IpAddr),
}

impl Place {
    /// An address as a place: the host that has it, else the internet.
    pub(crate) fn at(network: &Network, ip: IpAddr) -> Place {
        network
            .host_at(ip)
            .map_or(Place::Internet(ip), |(v, h)| Place::Host { vpc: v.name.clone(), host: h.name.clone() })
    }
}

/// What is asked: from, to, a protocol and a port (0 with ICMP: an echo), over one family.
#[derive(Clone, Debug)]
pub(crate) struct Flow {
    pub from: Place,
    pub to: Place,
    pub proto: RuleProto,
    pub port: u16,
    pub ipv6: bool,
}

/// The answer: the hops in order and, when blocked, what blocks it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Verdict {
    pub reachable: bool,
    pub path: Vec<String>,
    pub blocked_by: Option<String>,
    /// The policy whose rule (or default) blocks it: its VPC and target, so a caller that
    /// knows the script can say where it was declared.
    pub policy: Option<(String, Protected)>,
}

/// What the model does not hold but reachability depends on.
#[derive(Clone, Debug, Default)]
pub(crate) struct Context {
    /// The simulated internet routes VPCs' IPv6 (sandboxes only).
    pub ipv6_internet: bool,
    /// Other tools' chains on the machine that drop VPC traffic vpcsh could not let through.
    pub blocking_chains: Vec<String>,
}

struct At<'a> {
    vpc: &'a Vpc,
    subnet: &'a Subnet,
    host: &'a Host,
}

impl At<'_> {
    fn address(&self, ipv6: bool) -> Option<IpAddr> {
        if ipv6 { self.host.ip6.map(IpAddr::V6) } else { Some(IpAddr::V4(self.host.ip)) }
    }
    fn name(&self) -> String {
        format!("{}/{}", self.vpc.name, self.host.name)
    }
}

fn find<'a>(network: &'a Network, vpc: &str, host: &str) -> Option<At<'a>> {
    network.hosts().find(|(v, _, h)| v.name == vpc && h.name == host).map(|(vpc, subnet, host)| At {
        vpc,
        subnet,
        host,
    })
}

/// Follows the flow hop by hop; the first hop that refuses it is the answer.
pub(crate) fn explain(network: &Network, flow: &Flow, context: &Context) -> Verdict {
    let mut trace = Trace::default();
    let result = match (&flow.from, &flow.to) {
        (Place::Host { vpc, host }, to) => match find(network, vpc, host) {
            None => Err(format!("there is no host {vpc}/{host}")),
            Some(from) => from_host(network, flow, context, &from, to, &mut trace),
        },
        (Place::Internet(src), Place::Host { vpc, host }) => match find(network, vpc, host) {
            None => Err(format!("there is no host {vpc}/{host}")),
            Some(to) => from_internet(network, flow, *src, &to, &mut trace),
        },
        (Place::Internet(_), Place::Internet(_)) => Err("both ends are outside every VPC".to_string()),
    };
    Verdict { reachable: result.is_ok(), path: trace.hops, blocked_by: result.err(), policy: trace.policy }
}

#[derive(Default)]
struct Trace {
    hops: Vec<String>,
    /// The policy that decided against the flow.
    policy: Option<(String, Protected)>,
}

impl Trace {
    fn hop(&mut self, hop: impl Into<String>) {
        self.hops.push(hop.into());
    }
}

type Step = Result<(), String>;

fn from_host(
    network: &Network,
    flow: &Flow,
    context: &Context,
    from: &At,
    to: &Place,
    trace: &mut Trace,
) -> Step {
    trace.hop(format!("host {}", from.name()));
    let family = if flow.ipv6 { "IPv6" } else { "IPv4" };
    let src =
        from.address(flow.ipv6).ok_or_else(|| format!("host {} has no {family} address", from.name()))?;
    match to {
        Place::Internet(dst) => {
            egress_firewall(network, from, flow, *dst, trace)?;
            to_internet(from, flow, context, *dst, trace)
        }
        Place::Host { vpc, host } => {
            let to = find(network, vpc, host).ok_or_else(|| format!("there is no host {vpc}/{host}"))?;
            let dst =
                to.address(flow.ipv6).ok_or_else(|| format!("host {} has no {family} address", to.name()))?;
            egress_firewall(network, from, flow, dst, trace)?;
            if from.vpc.name == to.vpc.name {
                within_vpc(from, &to, trace);
            } else {
                across_peering(network, from, &to, (src, dst), trace)?;
            }
            ingress_firewall(network, &to, flow, src, trace)?;
            trace.hop(format!("host {}", to.name()));
            Ok(())
        }
    }
}

fn within_vpc(from: &At, to: &At, trace: &mut Trace) {
    if from.subnet.name == to.subnet.name {
        trace.hop(format!("subnet {}/{} (one L2 segment)", from.vpc.name, from.subnet.name));
    } else {
        trace.hop(format!("gateway of subnet {}/{}", from.vpc.name, from.subnet.name));
        trace.hop(format!("router of VPC {}", from.vpc.name));
        trace.hop(format!("subnet {}/{}", to.vpc.name, to.subnet.name));
    }
}

fn covers(nets: &[IpNetwork], ip: IpAddr) -> bool {
    nets.iter().any(|n| n.contains(ip))
}

fn across_peering(
    network: &Network,
    from: &At,
    to: &At,
    (src, dst): (IpAddr, IpAddr),
    trace: &mut Trace,
) -> Step {
    let (a, b) = (&from.vpc.name, &to.vpc.name);
    trace.hop(format!("gateway of subnet {a}/{}", from.subnet.name));
    trace.hop(format!("router of VPC {a}"));
    let Some((_, mine, theirs)) =
        network.peerings.iter().filter_map(|p| p.seen_from(a)).find(|(other, ..)| *other == b.as_str())
    else {
        let via: Vec<&str> = network
            .peerings
            .iter()
            .filter_map(|p| p.seen_from(a))
            .map(|(third, ..)| third)
            .filter(|third| network.peerings.iter().any(|q| q.seen_from(third).is_some_and(|(o, ..)| o == b)))
            .collect();
        return Err(match via.first() {
            Some(third) => format!(
                "peering is not transitive: {a} peers with {third} and {third} with {b}, but {a} and {b} are not peered"
            ),
            None => format!("VPCs {a} and {b} are not peered"),
        });
    };
    if !covers(theirs, dst) {
        return Err(format!("the peering {a}<->{b} does not let {dst} in (its allow-list leaves it out)"));
    }
    if !covers(mine, src) {
        return Err(format!("the peering {a}<->{b} does not let {src} cross (its allow-list leaves it out)"));
    }
    trace.hop(format!("peering {a}<->{b}"));
    trace.hop(format!("router of VPC {b}"));
    trace.hop(format!("subnet {b}/{}", to.subnet.name));
    Ok(())
}

fn to_internet(from: &At, flow: &Flow, context: &Context, dst: IpAddr, trace: &mut Trace) -> Step {
    let (vpc, subnet) = (&from.vpc.name, &from.subnet);
    trace.hop(format!("gateway of subnet {vpc}/{}", subnet.name));
    trace.hop(format!("router of VPC {vpc}"));
    if !subnet.egress() {
        return Err(format!("subnet {vpc}/{} is private and has no nat(): no internet", subnet.name));
    }
    if flow.ipv6 && !context.ipv6_internet {
        return Err(
            "VPCs reach the internet over IPv4 only on a real host (IPv6 internet is a sandbox's)".into()
        );
    }
    trace.hop(match (subnet.public, flow.ipv6) {
        (true, false) => format!("internet gateway of VPC {vpc} (source translated)"),
        (true, true) => format!("internet gateway of VPC {vpc} (routed, untranslated)"),
        (false, false) => format!("NAT gateway of VPC {vpc} (egress only)"),
        (false, true) => format!("NAT gateway of VPC {vpc} (egress only, untranslated)"),
    });
    if let Some(chain) = context.blocking_chains.first() {
        return Err(format!("the host firewall: {chain} drops VPC traffic and vpcsh cannot open it"));
    }
    trace.hop("machine");
    trace.hop(format!("internet {dst}"));
    Ok(())
}

fn from_internet(network: &Network, flow: &Flow, src: IpAddr, to: &At, trace: &mut Trace) -> Step {
    trace.hop(format!("internet {src}"));
    if flow.ipv6 {
        return Err(format!(
            "nothing comes in over IPv6: {} is reached only through publish(), over IPv4",
            to.name()
        ));
    }
    let transport = match flow.proto {
        RuleProto::Tcp | RuleProto::Any => Some(Transport::Tcp),
        RuleProto::Udp => Some(Transport::Udp),
        RuleProto::Icmp => None,
    };
    let published = network.publishes.iter().find(|p| {
        p.vpc == to.vpc.name && p.host == to.host.name && Some(p.proto) == transport && p.port == flow.port
    });
    let Some(p) = published else {
        let what = match transport {
            Some(t) => format!("port {}/{t}", flow.port),
            None => "ICMP".into(),
        };
        return Err(format!(
            "{what} of host {} is not published: the outside reaches hosts only through publish()",
            to.name()
        ));
    };
    trace.hop(format!("machine port {}/{} (published)", p.host_port, p.proto));
    trace.hop(format!("router of VPC {}", to.vpc.name));
    ingress_firewall(network, to, flow, src, trace)?;
    trace.hop(format!("host {}", to.name()));
    Ok(())
}

/// The policies on a host: its own first, then its subnet's.
fn policies<'a>(network: &'a Network, at: &At) -> Vec<&'a Firewall> {
    let targets = [Protected::Host(at.host.name.clone()), Protected::Subnet(at.subnet.name.clone())];
    targets
        .iter()
        .flat_map(|t| network.firewalls.iter().filter(move |f| f.vpc == at.vpc.name && f.protects == *t))
        .collect()
}

fn egress_firewall(network: &Network, from: &At, flow: &Flow, dst: IpAddr, trace: &mut Trace) -> Step {
    let policies = policies(network, from);
    if policies.iter().all(|p| p.egress.is_empty()) {
        return Ok(());
    }
    decide(&policies, |p| &p.egress, (flow, dst), ("egress", &from.name()), trace)
}

fn ingress_firewall(network: &Network, to: &At, flow: &Flow, src: IpAddr, trace: &mut Trace) -> Step {
    let policies = policies(network, to);
    if policies.is_empty() {
        return Ok(());
    }
    decide(&policies, |p| &p.ingress, (flow, src), ("ingress", &to.name()), trace)
}

/// First match wins, over the host's policy then its subnet's; nothing matching drops
/// (the default of the host's own policy, or else its subnet's).
fn decide(
    policies: &[&Firewall],
    rules: fn(&Firewall) -> &Vec<FirewallRule>,
    (flow, peer): (&Flow, IpAddr),
    (direction, host): (&str, &str),
    trace: &mut Trace,
) -> Step {
    for policy in policies {
        for (i, rule) in rules(policy).iter().enumerate() {
            if matches(rule, flow, peer) {
                if rule.allow {
                    return Ok(());
                }
                trace.policy = Some((policy.vpc.clone(), policy.protects.clone()));
                return Err(format!(
                    "the firewall on {} denies it: {direction} rule {} ({})",
                    target(policy),
                    i + 1,
                    describe(rule)
                ));
            }
        }
    }
    let deciding = policies.iter().find(|p| !rules(p).is_empty()).or(policies.first());
    trace.policy = deciding.map(|p| (p.vpc.clone(), p.protects.clone()));
    Err(format!("the firewall on {host} drops it: no {direction} rule allows it (default deny)"))
}

fn target(policy: &Firewall) -> String {
    match &policy.protects {
        Protected::Host(h) => format!("host {}/{h}", policy.vpc),
        Protected::Subnet(s) => format!("subnet {}/{s}", policy.vpc),
    }
}

fn describe(rule: &FirewallRule) -> String {
    let proto = format!("{:?}", rule.proto).to_lowercase();
    let port = match rule.ports {
        Some((lo, hi)) if lo == hi => format!(" port {lo}"),
        Some((lo, hi)) => format!(" ports {lo}-{hi}"),
        None => String::new(),
    };
    let nets: Vec<String> = rule.nets.iter().map(ToString::to_string).collect();
    let peers = if nets.is_empty() { String::new() } else { format!(" {}", nets.join(", ")) };
    format!("{} {proto}{port}{peers}", if rule.allow { "allow" } else { "deny" })
}

fn matches(rule: &FirewallRule, flow: &Flow, peer: IpAddr) -> bool {
    let proto = match (rule.proto, flow.proto) {
        (RuleProto::Any, RuleProto::Icmp) => rule.ports.is_none(),
        (RuleProto::Any, _) => true,
        (r, f) => r == f,
    };
    let port =
        flow.proto == RuleProto::Icmp || rule.ports.is_none_or(|(lo, hi)| (lo..=hi).contains(&flow.port));
    let peer = rule.nets.is_empty() || covers(&rule.nets, peer);
    proto && port && peer
}
