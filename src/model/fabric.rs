//! One VPC spread over several machines: the nodes a script declares, where each host runs,
//! and the VXLAN segment (VNI) each subnet is carried in between nodes.
//!
//! Placement is a pure function of the script, so every node computes the same answer on
//! its own: a subnet spans the nodes its `nodes` option names (all nodes by default); a
//! host runs where `node` pins it, else on the node that rendezvous hashing picks among its
//! subnet's nodes (adding a node moves only the hosts that land on it). A VPC's router runs
//! on every node one of its subnets spans, or a subnet of a VPC it peers with spans, and
//! carries all of the VPC's subnets there, so traffic is routed on the node it starts from.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::Ipv4Addr;

use ipnetwork::Ipv4Network;
use serde::{Deserialize, Serialize};

use super::fnv::fnv1a;
use super::{Declarations, Network, Problem, Span, SubnetId};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) struct NodeId(pub usize);

/// `node(name, #{ underlay })`: a machine taking part; `underlay` `None` when it did not
/// parse (already reported).
#[derive(Clone, Debug)]
pub(crate) struct NodeDecl {
    pub name: String,
    pub underlay: Option<Ipv4Network>,
    pub span: Span,
}

/// How nodes learn where each MAC and each other node is.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum Control {
    /// vpcsh configures every node's flood list (head-end replication) from the script;
    /// MACs are learned from traffic. No other software.
    #[default]
    Static,
    /// BGP EVPN: an FRR per node advertises its MACs (type-2) and its VTEP (type-3) to
    /// the others, which install what they learn.
    Evpn,
}

impl std::fmt::Display for Control {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Control::Static => "static",
            Control::Evpn => "evpn",
        })
    }
}

/// `fabric(#{ control })`: the control plane of every node.
#[derive(Clone, Debug)]
pub(crate) struct FabricDecl {
    pub control: Control,
    pub span: Span,
}

/// A machine of the fabric and its address on the network between machines.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Node {
    pub name: String,
    /// Its underlay address, with the prefix of the underlay network.
    pub underlay: Ipv4Network,
}

/// The UDP port VXLAN uses (IANA's).
pub(crate) const VXLAN_PORT: u16 = 4789;
/// What VXLAN over IPv4 adds to each frame: outer IPv4 (20), UDP (8), VXLAN (8) and the
/// inner Ethernet header (14).
pub(crate) const VXLAN_OVERHEAD: u32 = 50;
/// The underlay MTU vpcsh assumes (Ethernet's); inner links get this less the overhead.
pub(crate) const UNDERLAY_MTU: u32 = 1500;

/// The MTU of every link inside a stretched subnet: a full-size inner frame still fits an
/// underlay packet, so nothing is fragmented or silently dropped between nodes.
pub(crate) fn inner_mtu() -> u32 {
    UNDERLAY_MTU - VXLAN_OVERHEAD
}

/// A subnet's VNI: 24 bits of FNV-1a of `VPC/SUBNET`, never 0. The same on every node and
/// every run; two subnets that collide are a problem the script is told about.
pub(crate) fn vni(vpc: &str, subnet: &str) -> u32 {
    let h = fnv1a(format!("{vpc}/{subnet}").as_bytes());
    let folded = ((h >> 24) ^ h) as u32 & 0x00ff_ffff;
    if folded == 0 { 1 } else { folded }
}

/// A locally administered unicast MAC from a hash.
fn mac_of(key: &str) -> [u8; 6] {
    let b = fnv1a(key.as_bytes()).to_be_bytes();
    [(b[2] & 0xfc) | 0x02, b[3], b[4], b[5], b[6], b[7]]
}

/// The gateway MAC of a stretched subnet: the same on every node (a distributed anycast
/// gateway), so a host keeps its ARP entry wherever the gateway answers from.
pub(crate) fn gateway_mac(vpc: &str, subnet: &str) -> [u8; 6] {
    mac_of(&format!("gateway/{vpc}/{subnet}"))
}

/// A host's MAC in a fabric: known to every node, which routes to remote hosts through
/// static neighbour entries instead of asking (an ARP reply to the shared gateway MAC
/// would stop at the node the host is on).
pub(crate) fn host_mac(vpc: &str, host: &str) -> [u8; 6] {
    mac_of(&format!("host/{vpc}/{host}"))
}

/// A sandbox node's MAC on the simulated underlay: a machine made again keeps it, so the
/// other nodes' ARP entries for its address stay right.
pub(crate) fn underlay_mac(node: &str) -> [u8; 6] {
    mac_of(&format!("underlay/{node}"))
}

/// The node among `candidates` that a host lands on: the highest FNV-1a of host and node.
pub(crate) fn place(vpc: &str, host: &str, candidates: &[String]) -> Option<String> {
    candidates.iter().max_by_key(|n| fnv1a(format!("{vpc}/{host}@{n}").as_bytes())).cloned()
}

impl Network {
    pub(crate) fn node(&self, name: &str) -> Option<&Node> {
        self.nodes.iter().find(|n| n.name == name)
    }

    /// Whether the network is spread over nodes.
    pub(crate) fn is_fabric(&self) -> bool {
        !self.nodes.is_empty()
    }

    /// The nodes a VPC's router runs on: those its subnets span, and those the subnets of
    /// every VPC it peers with span (the peering link is local to each node).
    pub(crate) fn presence(&self, vpc: &str) -> BTreeSet<String> {
        let spans = |name: &str| -> BTreeSet<String> {
            let Some(v) = self.vpc(name) else { return BTreeSet::new() };
            if v.subnets.is_empty() {
                return self.nodes.iter().map(|n| n.name.clone()).collect();
            }
            v.subnets.iter().flat_map(|s| s.nodes.iter().cloned()).collect()
        };
        let mut out = spans(vpc);
        for p in &self.peerings {
            if let Some((other, _, _)) = p.seen_from(vpc) {
                out.extend(spans(other));
            }
        }
        out
    }

    /// The part of the network that `node` realises: the VPCs present there, and only the
    /// published ports, workloads and peerings that belong there. Hosts stay listed (every
    /// node routes to all of its VPCs' hosts); each says where it runs.
    pub(crate) fn on_node(&self, node: &str) -> Network {
        let here: BTreeSet<String> = self
            .vpcs
            .iter()
            .filter(|v| self.presence(&v.name).contains(node))
            .map(|v| v.name.clone())
            .collect();
        let local = |vpc: &str, host: &str| {
            self.vpc(vpc)
                .and_then(|v| v.subnets.iter().flat_map(|s| &s.hosts).find(|h| h.name == host))
                .is_some_and(|h| h.node.as_deref() == Some(node))
        };
        Network {
            nodes: self.nodes.clone(),
            control: self.control,
            vpcs: self.vpcs.iter().filter(|v| here.contains(&v.name)).cloned().collect(),
            publishes: self.publishes.iter().filter(|p| local(&p.vpc, &p.host)).cloned().collect(),
            peerings: self
                .peerings
                .iter()
                .filter(|p| here.contains(&p.a) && here.contains(&p.b))
                .cloned()
                .collect(),
            workloads: self.workloads.iter().filter(|w| local(&w.vpc, &w.host)).cloned().collect(),
            firewalls: self.firewalls.clone(),
        }
    }
}

/// Resolves nodes and placement into `network` (already holding the VPCs), reporting what
/// cannot be: unknown or repeated nodes, hosts pinned outside their subnet, VNI collisions.
pub(super) fn resolve(decls: &Declarations, network: &mut Network, problems: &mut Vec<Problem>) {
    network.nodes = nodes(decls, problems);
    if network.nodes.is_empty() {
        if let Some(f) = &decls.fabric {
            problems.push(
                Problem::new("fabric() without nodes", f.span, "nothing to connect")
                    .help("declare the machines with node(name, #{ underlay: \"…\" })"),
            );
        }
        return;
    }
    network.control = decls.fabric.as_ref().map_or(Control::Static, |f| f.control);
    let all: Vec<String> = network.nodes.iter().map(|n| n.name.clone()).collect();
    let mut vnis: HashMap<u32, (Span, String)> = HashMap::new();
    for (vpc_id, vpc_decl) in decls.live_vpcs() {
        let Some(vpc) = network.vpcs.iter_mut().find(|v| v.name == vpc_decl.name) else { continue };
        for (subnet_id, subnet_decl) in decls.subnets_of(vpc_id) {
            let Some(subnet) = vpc.subnets.iter_mut().find(|s| s.name == subnet_decl.name) else { continue };
            subnet.nodes = match &subnet_decl.nodes {
                Some(ids) => ids.iter().map(|id| decls.nodes[id.0].name.clone()).collect(),
                None => all.clone(),
            };
            if subnet.nodes.is_empty() {
                problems.push(
                    Problem::new(
                        format!("subnet `{}` spans no node", subnet.name),
                        subnet_decl.span,
                        "empty `nodes`",
                    )
                    .help("name at least one node, or leave `nodes` out to span them all"),
                );
            }
            let vni = vni(&vpc.name, &subnet.name);
            let key = format!("{}/{}", vpc.name, subnet.name);
            if let Some((first, other)) = vnis.insert(vni, (subnet_decl.span, key.clone())) {
                problems.push(
                    Problem::new(
                        format!("subnets `{other}` and `{key}` derive the same VNI {vni}"),
                        subnet_decl.span,
                        "same VNI",
                    )
                    .related(first, "as this subnet")
                    .help("rename one of them: VNIs come from the VPC and subnet names"),
                );
            }
            subnet.vni = Some(vni);
            place_hosts(decls, subnet_id, &vpc_decl.name, subnet, problems);
        }
    }
}

/// Each host of a subnet on its pinned node, or the one placement picks.
fn place_hosts(
    decls: &Declarations,
    subnet_id: SubnetId,
    vpc: &str,
    subnet: &mut super::Subnet,
    problems: &mut Vec<Problem>,
) {
    let pins: BTreeMap<&str, (NodeId, Span)> =
        decls.hosts_of(subnet_id).filter_map(|(_, h)| Some((h.name.as_str(), (h.node?, h.span)))).collect();
    let decl = decls.subnet(subnet_id);
    for host in &mut subnet.hosts {
        host.node = match pins.get(host.name.as_str()) {
            Some((id, span)) => {
                let name = &decls.nodes[id.0].name;
                if !subnet.nodes.contains(name) {
                    problems.push(
                        Problem::new(
                            format!(
                                "host `{}` is pinned to node `{name}`, which its subnet does not span",
                                host.name
                            ),
                            *span,
                            "outside the subnet's nodes",
                        )
                        .related(
                            decl.span,
                            format!("subnet `{}` spans {}", subnet.name, subnet.nodes.join(", ")),
                        )
                        .help("add the node to the subnet's `nodes`, or pin the host to one of them"),
                    );
                }
                Some(name.clone())
            }
            None => place(vpc, &host.name, &subnet.nodes),
        };
    }
}

/// The declared nodes, each name and underlay address once.
fn nodes(decls: &Declarations, problems: &mut Vec<Problem>) -> Vec<Node> {
    let mut out: Vec<Node> = Vec::new();
    let mut seen: HashMap<&str, Span> = HashMap::new();
    let mut addresses: HashMap<Ipv4Addr, (Span, &str)> = HashMap::new();
    for node in &decls.nodes {
        if let Some(why) = super::names::name_problem(&node.name) {
            problems.push(
                Problem::new(format!("invalid node name: {why}"), node.span, "bad name")
                    .help(super::names::NAME_RULE_HELP),
            );
        }
        if let Some(first) = seen.insert(&node.name, node.span) {
            problems.push(
                Problem::new(
                    format!("node `{}` is declared twice", node.name),
                    node.span,
                    "declared again here",
                )
                .related(first, "first declared here"),
            );
            continue;
        }
        let Some(underlay) = node.underlay else { continue };
        if let Some((first, other)) = addresses.insert(underlay.ip(), (node.span, &node.name)) {
            problems.push(
                Problem::new(
                    format!(
                        "nodes `{other}` and `{}` have the same underlay address {}",
                        node.name,
                        underlay.ip()
                    ),
                    node.span,
                    "same address",
                )
                .related(first, "as this node"),
            );
            continue;
        }
        out.push(Node { name: node.name.clone(), underlay });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vnis_are_24_bit_nonzero_and_stable() {
        let v = vni("prod", "web");
        assert!(v > 0 && v < 1 << 24);
        assert_eq!(v, vni("prod", "web"));
        assert_ne!(v, vni("prod", "app"));
        assert_ne!(v, vni("dev", "web"));
    }

    #[test]
    fn placement_spreads_and_moves_little_when_a_node_is_added() {
        let two: Vec<String> = vec!["n1".into(), "n2".into()];
        let three: Vec<String> = vec!["n1".into(), "n2".into(), "n3".into()];
        let hosts: Vec<String> = (0..300).map(|i| format!("h{i}")).collect();
        let on_two: Vec<_> = hosts.iter().map(|h| place("v", h, &two).unwrap()).collect();
        let on_three: Vec<_> = hosts.iter().map(|h| place("v", h, &three).unwrap()).collect();
        let n1 = on_two.iter().filter(|n| *n == "n1").count();
        assert!((100..200).contains(&n1), "spread: {n1} of 300 on n1");
        // Hosts only ever move to the new node.
        for (a, b) in on_two.iter().zip(&on_three) {
            assert!(a == b || b == "n3", "{a} -> {b}");
        }
        let moved = on_two.iter().zip(&on_three).filter(|(a, b)| a != b).count();
        assert!((50..150).contains(&moved), "moved {moved} of 300");
    }

    #[test]
    fn macs_are_locally_administered_unicast() {
        for mac in [gateway_mac("prod", "web"), host_mac("prod", "w1")] {
            assert_eq!(mac[0] & 0x03, 0x02, "{mac:02x?}");
        }
        assert_ne!(host_mac("prod", "w1"), host_mac("prod", "w2"));
    }
}
