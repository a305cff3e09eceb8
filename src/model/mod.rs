//! The topology as plain data: what scripts declare, and the validated network it resolves to.
//!
//! `Declarations` is the arena the script layer fills, one entry per call, each with the span
//! of the call that made it. `validate` turns it into a `Network` (or every problem found).
//! Nothing here knows about Rhai or netlink.

pub(crate) mod fabric;
pub(crate) mod fnv;
pub(crate) mod impair;
pub(crate) mod ipam;
pub(crate) mod ipam6;
pub(crate) mod names;
mod overlay;
pub(crate) mod policy;
pub(crate) mod reach;
mod validate;

use std::collections::HashMap;
use std::net::{Ipv4Addr, Ipv6Addr};

use ipnetwork::{IpNetwork, Ipv4Network, Ipv6Network};
use serde::{Deserialize, Serialize};

pub(crate) use validate::{Problem, validate, warnings};

/// Where a declaration came from: a byte range in one loaded source.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Span {
    pub source: u32,
    pub start: usize,
    pub len: usize,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) struct VpcId(pub usize);
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) struct SubnetId(pub usize);
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) struct HostId(pub usize);

/// A CIDR as the user wrote it; `net` is `None` when it did not parse (already reported).
#[derive(Clone, Debug)]
pub(crate) struct Cidr {
    pub text: String,
    pub net: Option<Ipv4Network>,
}

/// A CIDR of either family, where both are accepted (allow-lists, firewall rules); `net`
/// as in `Cidr`.
#[derive(Clone, Debug)]
pub(crate) struct AnyCidr {
    pub net: Option<IpNetwork>,
    /// Named through a subnet rather than written: its IPv6 /64 goes where IPv6 can go,
    /// and is left out quietly where it cannot.
    pub implied: bool,
}

impl From<&Cidr> for AnyCidr {
    fn from(c: &Cidr) -> Self {
        AnyCidr { net: c.net.map(IpNetwork::V4), implied: false }
    }
}

impl From<&Cidr6> for AnyCidr {
    fn from(c: &Cidr6) -> Self {
        AnyCidr { net: c.net.map(IpNetwork::V6), implied: true }
    }
}

/// An IPv6 prefix the user wrote (or vpcsh chose); `net` as in `Cidr`.
#[derive(Clone, Debug)]
pub(crate) struct Cidr6 {
    pub net: Option<Ipv6Network>,
}

#[derive(Clone, Debug)]
pub(crate) struct VpcDecl {
    pub name: String,
    pub cidr: Cidr,
    /// The VPC's IPv6 /56 (`#{ ipv6: ... }`); `None` for an IPv4-only VPC.
    pub ipv6: Option<Cidr6>,
    /// `#{ host_access: true }`: the machine routes to the VPC.
    pub host_access: bool,
    pub span: Span,
    /// Set by `destroy(vpc)`: the VPC and everything in it is no longer wanted.
    pub removed: bool,
}

#[derive(Clone, Debug)]
pub(crate) struct SubnetDecl {
    pub vpc: VpcId,
    pub name: String,
    pub cidr: Cidr,
    /// The subnet's IPv6 /64, fixed or the next free one of its VPC's /56.
    pub ipv6: Option<Cidr6>,
    pub public: bool,
    /// `#{ nodes: [...] }`: the nodes it spans; `None`: all of them.
    pub nodes: Option<Vec<fabric::NodeId>>,
    pub span: Span,
}

#[derive(Clone, Debug)]
pub(crate) struct HostDecl {
    pub subnet: SubnetId,
    pub name: String,
    /// The address: fixed by the script, or allocated when declared. `None` when the
    /// subnet was full or invalid (reported as a problem).
    pub ip: Option<Ipv4Addr>,
    pub fixed: bool,
    /// A fixed IPv6 address (`#{ ip6: ... }`); otherwise derived from the IPv4 address.
    pub ip6: Option<Ipv6Addr>,
    /// `#{ node: n }`: the node it runs on; `None`: where placement puts it.
    pub node: Option<fabric::NodeId>,
    pub span: Span,
}

/// A host as scripts refer to it: declared, or the one a subnet gets when it declares none.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum HostRef {
    Declared(HostId),
    Implicit(SubnetId),
}

/// `nat(subnet)`: egress-only internet for a private subnet.
#[derive(Clone, Debug)]
pub(crate) struct NatDecl {
    pub subnet: SubnetId,
    pub span: Span,
}

/// `publish(host, port, host_port[, proto])`: the machine's `host_port` forwards to the host.
#[derive(Clone, Debug)]
pub(crate) struct PublishDecl {
    pub host: HostRef,
    pub port: u16,
    pub host_port: u16,
    pub proto: Transport,
    pub span: Span,
    /// Where in the script: `FILE:LINE:COLUMN`.
    pub at: Option<String>,
}

/// `peer(a, b[, #{ allow: [...] }])`: two VPCs route to each other.
#[derive(Clone, Debug)]
pub(crate) struct PeerDecl {
    pub a: VpcId,
    pub b: VpcId,
    /// Only these CIDRs cross (each inside one of the two VPCs); `None`: all of both.
    pub allow: Option<Vec<AnyCidr>>,
    pub span: Span,
}

/// What `impair()` impairs: a host's link, every host link of a subnet, or a peering.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum ImpairTarget {
    Host(HostRef),
    Subnet(SubnetId),
    Peering(VpcId, VpcId),
}

/// `impair(target, #{ delay, jitter, loss, rate, duplicate, reorder })`: the latest call
/// for a target wins; a host's own over its subnet's.
#[derive(Clone, Debug)]
pub(crate) struct ImpairDecl {
    pub target: ImpairTarget,
    pub impairment: impair::Impairment,
    pub span: Span,
}

/// What `run()` and `serve()` keep running in a host.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum WorkloadKind {
    /// A command, as an argv (a string command is `/bin/sh -c` with it); started again after
    /// it ends only when `restart`.
    Run {
        argv: Vec<String>,
        #[serde(default)]
        restart: bool,
    },
    /// vpcsh's HTTP server: `GET /` answers `<vpc>/<host>`, `GET /ip` the caller's address.
    Serve { port: u16 },
}

#[derive(Clone, Debug)]
pub(crate) struct WorkloadDecl {
    pub host: HostRef,
    pub kind: WorkloadKind,
    pub span: Span,
}

/// Protocols a firewall rule can name.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum RuleProto {
    Tcp,
    Udp,
    Icmp,
    Any,
}

/// Where a rule's traffic comes from (ingress) or goes to (egress).
#[derive(Clone, Debug)]
pub(crate) enum PeerRef {
    Cidr(AnyCidr),
    Vpc(VpcId),
    Subnet(SubnetId),
    Host(HostRef),
}

#[derive(Clone, Debug)]
pub(crate) struct RuleDecl {
    pub proto: RuleProto,
    /// Inclusive port range; `None` is any port.
    pub ports: Option<(u16, u16)>,
    /// Empty: anywhere.
    pub peers: Vec<PeerRef>,
    pub allow: bool,
}

#[derive(Clone, Debug, Default)]
pub(crate) struct PolicyDecl {
    pub ingress: Vec<RuleDecl>,
    pub egress: Vec<RuleDecl>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum FirewallTarget {
    Host(HostRef),
    Subnet(SubnetId),
}

/// `firewall(target, policy)`: the latest policy for a target wins.
#[derive(Clone, Debug)]
pub(crate) struct FirewallDecl {
    pub target: FirewallTarget,
    pub policy: PolicyDecl,
    pub span: Span,
    /// Where in the script: `FILE:LINE:COLUMN`, kept with the network for `status --counters`.
    pub at: Option<String>,
}

/// Everything a script declared, in declaration order, with problems found while declaring.
#[derive(Clone, Debug, Default)]
pub(crate) struct Declarations {
    pub nodes: Vec<fabric::NodeDecl>,
    /// `fabric(...)`: the latest call wins.
    pub fabric: Option<fabric::FabricDecl>,
    pub vpcs: Vec<VpcDecl>,
    pub subnets: Vec<SubnetDecl>,
    pub hosts: Vec<HostDecl>,
    pub nats: Vec<NatDecl>,
    pub publishes: Vec<PublishDecl>,
    pub peers: Vec<PeerDecl>,
    pub workloads: Vec<WorkloadDecl>,
    pub firewalls: Vec<FirewallDecl>,
    pub impairs: Vec<ImpairDecl>,
    /// `destroy()` was called: nothing that exists is kept for later declarations.
    pub destroyed_all: bool,
    /// Problems that could only be seen at the call (an unparsable CIDR, a full subnet).
    pub problems: Vec<Problem>,
    /// The hosts of each subnet, in declaration order (`add_host` keeps it).
    host_index: HashMap<SubnetId, Vec<HostId>>,
    /// The addresses handed out in each subnet.
    allocators: HashMap<SubnetId, ipam::Allocator>,
}

impl VpcDecl {
    /// Its IPv6 /56, when declared and valid.
    pub(crate) fn prefix6(&self) -> Option<Ipv6Network> {
        self.ipv6.as_ref().and_then(|c| c.net).filter(|n| n.prefix() == ipam6::VPC_PREFIX)
    }
}

impl Declarations {
    pub(crate) fn vpc(&self, id: VpcId) -> &VpcDecl {
        &self.vpcs[id.0]
    }
    pub(crate) fn subnet(&self, id: SubnetId) -> &SubnetDecl {
        &self.subnets[id.0]
    }
    pub(crate) fn host(&self, id: HostId) -> &HostDecl {
        &self.hosts[id.0]
    }

    pub(crate) fn live_vpcs(&self) -> impl Iterator<Item = (VpcId, &VpcDecl)> {
        self.vpcs.iter().enumerate().filter(|(_, v)| !v.removed).map(|(i, v)| (VpcId(i), v))
    }

    pub(crate) fn subnets_of(&self, vpc: VpcId) -> impl Iterator<Item = (SubnetId, &SubnetDecl)> {
        self.subnets.iter().enumerate().filter(move |(_, s)| s.vpc == vpc).map(|(i, s)| (SubnetId(i), s))
    }

    pub(crate) fn hosts_of(&self, subnet: SubnetId) -> impl Iterator<Item = (HostId, &HostDecl)> {
        self.host_index.get(&subnet).into_iter().flatten().map(|id| (*id, self.host(*id)))
    }

    pub(crate) fn vpc_by_name(&self, name: &str) -> Option<VpcId> {
        self.live_vpcs().find(|(_, v)| v.name == name).map(|(id, _)| id)
    }

    pub(crate) fn host_subnet(&self, host: HostRef) -> SubnetId {
        match host {
            HostRef::Declared(id) => self.host(id).subnet,
            HostRef::Implicit(subnet) => subnet,
        }
    }

    pub(crate) fn host_name(&self, host: HostRef) -> &str {
        match host {
            HostRef::Declared(id) => &self.host(id).name,
            HostRef::Implicit(subnet) => &self.subnet(subnet).name,
        }
    }

    /// How much has been declared, kind by kind: declarations are only ever added (or VPCs
    /// marked removed), so an unchanged extent means nothing was declared.
    pub(crate) fn extent(&self) -> [usize; 12] {
        [
            self.nodes.len() + usize::from(self.fabric.is_some()),
            self.vpcs.len(),
            self.vpcs.iter().filter(|v| v.removed).count(),
            self.subnets.len(),
            self.hosts.len(),
            self.nats.len(),
            self.publishes.len(),
            self.peers.len(),
            self.workloads.len(),
            self.firewalls.len(),
            self.impairs.len(),
            usize::from(self.destroyed_all),
        ]
    }

    /// Adds a host: indexed by its subnet, its fixed address taken in the subnet's allocator.
    pub(crate) fn add_host(&mut self, host: HostDecl) -> HostId {
        let id = HostId(self.hosts.len());
        self.host_index.entry(host.subnet).or_default().push(id);
        if let (Some(ip), Some(alloc)) = (host.ip.filter(|_| host.fixed), self.allocator(host.subnet)) {
            alloc.take(ip);
        }
        self.hosts.push(host);
        id
    }

    /// The address allocator of a subnet with a valid CIDR.
    pub(crate) fn allocator(&mut self, subnet: SubnetId) -> Option<&mut ipam::Allocator> {
        let net = self.subnet(subnet).cidr.net.filter(|n| n.prefix() <= ipam::MAX_SUBNET_PREFIX)?;
        Some(self.allocators.entry(subnet).or_insert_with(|| ipam::Allocator::new(net)))
    }
}

/// A validated topology: what the kernel should look like, and what state records.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Network {
    /// The machines it is spread over (`node()`); empty: one machine.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub nodes: Vec<fabric::Node>,
    /// How the nodes learn MACs and each other.
    #[serde(default, skip_serializing_if = "is_default")]
    pub control: fabric::Control,
    pub vpcs: Vec<Vpc>,
    #[serde(default)]
    pub publishes: Vec<Publish>,
    #[serde(default)]
    pub peerings: Vec<Peering>,
    #[serde(default)]
    pub workloads: Vec<Workload>,
    #[serde(default)]
    pub firewalls: Vec<Firewall>,
}

/// A stateful policy on a host, or on every host of a subnet.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Firewall {
    pub vpc: String,
    #[serde(flatten)]
    pub protects: Protected,
    pub ingress: Vec<FirewallRule>,
    pub egress: Vec<FirewallRule>,
    /// The `firewall()` call (`FILE:LINE:COLUMN`), or the policy file, it came from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub origin: Option<String>,
}

impl Firewall {
    /// Whether this policy is on the same thing as `other`.
    pub(crate) fn same_target(&self, other: &Firewall) -> bool {
        self.vpc == other.vpc && self.protects == other.protects
    }
}

/// What a firewall protects, by name within its VPC. Stored as the `subnet`/`host` fields
/// state files have always had.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "ProtectedFields", into = "ProtectedFields")]
pub(crate) enum Protected {
    Subnet(String),
    Host(String),
}

#[derive(Serialize, Deserialize)]
struct ProtectedFields {
    subnet: Option<String>,
    host: Option<String>,
}

impl TryFrom<ProtectedFields> for Protected {
    type Error = &'static str;
    fn try_from(f: ProtectedFields) -> Result<Self, Self::Error> {
        match (f.subnet, f.host) {
            (Some(subnet), None) => Ok(Protected::Subnet(subnet)),
            (None, Some(host)) => Ok(Protected::Host(host)),
            _ => Err("a firewall protects either a subnet or a host"),
        }
    }
}

impl From<Protected> for ProtectedFields {
    fn from(p: Protected) -> Self {
        match p {
            Protected::Subnet(subnet) => ProtectedFields { subnet: Some(subnet), host: None },
            Protected::Host(host) => ProtectedFields { subnet: None, host: Some(host) },
        }
    }
}

/// One rule with its peers resolved to addresses (empty: anywhere).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct FirewallRule {
    pub proto: RuleProto,
    pub ports: Option<(u16, u16)>,
    pub nets: Vec<IpNetwork>,
    pub allow: bool,
}

/// A process kept running in a host.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Workload {
    pub vpc: String,
    pub host: String,
    pub kind: WorkloadKind,
}

/// Two VPCs that route to each other, and what may cross.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Peering {
    pub a: String,
    pub b: String,
    /// CIDRs of `a` and of `b` that may cross (all of each VPC without an allow-list).
    pub a_allowed: Vec<IpNetwork>,
    pub b_allowed: Vec<IpNetwork>,
    /// What the link between the two routers does to packets (`impair()`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub impairment: Option<impair::Impairment>,
}

impl Peering {
    /// The other side and what each side may send, seen from `vpc`.
    pub(crate) fn seen_from(&self, vpc: &str) -> Option<(&str, &[IpNetwork], &[IpNetwork])> {
        if self.a == vpc {
            Some((&self.b, &self.a_allowed, &self.b_allowed))
        } else if self.b == vpc {
            Some((&self.a, &self.b_allowed, &self.a_allowed))
        } else {
            None
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum Transport {
    Tcp,
    Udp,
}

impl std::fmt::Display for Transport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Transport::Tcp => "tcp",
            Transport::Udp => "udp",
        })
    }
}

/// A published port: the machine's `host_port` forwards to `ip:port` of a public host.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Publish {
    pub vpc: String,
    pub host: String,
    pub ip: Ipv4Addr,
    pub port: u16,
    pub host_port: u16,
    pub proto: Transport,
    /// The `publish()` call it came from (`FILE:LINE:COLUMN`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub origin: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Vpc {
    pub name: String,
    pub cidr: Ipv4Network,
    /// The VPC's IPv6 /56 when it is dual-stack.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cidr6: Option<Ipv6Network>,
    /// The machine routes to it (`#{ host_access: true }`).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub host_access: bool,
    pub subnets: Vec<Subnet>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Subnet {
    pub name: String,
    pub cidr: Ipv4Network,
    pub public: bool,
    /// A private subnet with egress-only internet through a NAT gateway.
    #[serde(default)]
    pub nat: bool,
    pub gateway: Ipv4Addr,
    /// The subnet's IPv6 /64 (its gateway is `::1`) when it has IPv6.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cidr6: Option<Ipv6Network>,
    pub hosts: Vec<Host>,
    /// The nodes it spans, in a network spread over nodes.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub nodes: Vec<String>,
    /// Its VXLAN segment between nodes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vni: Option<u32>,
}

impl Subnet {
    /// Whether its hosts reach the internet (public, or private behind `nat()`).
    pub(crate) fn egress(&self) -> bool {
        self.public || self.nat
    }

    /// The IPv6 gateway: `::1` of the subnet's /64.
    pub(crate) fn gateway6(&self) -> Option<Ipv6Addr> {
        self.cidr6.map(ipam6::gateway)
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Host {
    pub name: String,
    pub ip: Ipv4Addr,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ip6: Option<Ipv6Addr>,
    /// What the host's link does to packets: its own `impair()`, else its subnet's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub impairment: Option<impair::Impairment>,
    /// The node it runs on, in a network spread over nodes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node: Option<String>,
}

fn is_default<T: Default + PartialEq>(value: &T) -> bool {
    *value == T::default()
}

impl Network {
    /// The longest any impaired link holds a packet back, one way.
    pub(crate) fn worst_delay_us(&self) -> u64 {
        let hosts = self.vpcs.iter().flat_map(|v| &v.subnets).flat_map(|s| &s.hosts).map(|h| h.impairment);
        let peerings = self.peerings.iter().map(|p| p.impairment);
        hosts.chain(peerings).flatten().map(|i| i.worst_delay_us()).max().unwrap_or(0)
    }

    pub(crate) fn vpc(&self, name: &str) -> Option<&Vpc> {
        self.vpcs.iter().find(|v| v.name == name)
    }

    /// The network without the named VPCs and everything that refers to them.
    pub(crate) fn without(&self, vpcs: &[String]) -> Network {
        let gone = |name: &String| vpcs.contains(name);
        Network {
            nodes: self.nodes.clone(),
            control: self.control,
            vpcs: self.vpcs.iter().filter(|v| !gone(&v.name)).cloned().collect(),
            publishes: self.publishes.iter().filter(|p| !gone(&p.vpc)).cloned().collect(),
            peerings: self.peerings.iter().filter(|p| !gone(&p.a) && !gone(&p.b)).cloned().collect(),
            workloads: self.workloads.iter().filter(|w| !gone(&w.vpc)).cloned().collect(),
            firewalls: self.firewalls.iter().filter(|f| !gone(&f.vpc)).cloned().collect(),
        }
    }

    /// The host that has `ip` (of either family), with its VPC.
    pub(crate) fn host_at(&self, ip: std::net::IpAddr) -> Option<(&Vpc, &Host)> {
        self.hosts()
            .find(|(_, _, h)| std::net::IpAddr::V4(h.ip) == ip || h.ip6.map(std::net::IpAddr::V6) == Some(ip))
            .map(|(v, _, h)| (v, h))
    }

    /// Every host with its VPC and subnet.
    pub(crate) fn hosts(&self) -> impl Iterator<Item = (&Vpc, &Subnet, &Host)> {
        self.vpcs
            .iter()
            .flat_map(|v| v.subnets.iter().flat_map(move |s| s.hosts.iter().map(move |h| (v, s, h))))
    }
}
