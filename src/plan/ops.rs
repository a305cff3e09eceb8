//! Kernel operations: one per line of `vpcsh plan`, one netlink exchange (or namespace
//! mount) each when applied.

use std::fmt;

use std::net::Ipv4Addr;

use super::kernel::{Addr, Flood, ForeignChain, Mac, Neighbour, PortMac, Process, Route};
use super::nft::{Ruleset, TABLE};
use crate::model::impair::Impairment;

#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Op {
    /// A new namespace with `lo` up, IPv4 forwarding on when it routes, and IPv6 off unless
    /// its VPC has IPv6 (a firewall that only IPv4 knows must not be walked around).
    CreateNetns {
        ns: String,
        forwarding: bool,
        ipv6: bool,
    },
    SetIpv6 {
        ns: String,
        on: bool,
    },
    DeleteNetns {
        ns: String,
    },
    SetForwarding {
        ns: String,
        on: bool,
    },
    /// A bridge, up, with its own MAC (`mac`, or one derived from its names).
    CreateBridge {
        ns: String,
        name: String,
        mac: Option<Mac>,
    },
    /// A veth pair whose far end is created directly inside `peer_ns`, up; both ends get
    /// `mtu`, the far end `peer_mac` and `peer_master` (where set).
    CreateVeth {
        ns: String,
        name: String,
        master: Option<String>,
        peer_ns: String,
        peer: String,
        mtu: Option<u32>,
        peer_mac: Option<Mac>,
        peer_master: Option<String>,
    },
    /// A VXLAN device in `ns`, up, created from `underlay_ns` so that its socket sends
    /// and receives there; learning from traffic unless `evpn`.
    CreateVxlan {
        ns: String,
        name: String,
        vni: u32,
        local: Ipv4Addr,
        underlay_ns: String,
        master: Option<String>,
        mtu: Option<u32>,
        evpn: bool,
    },
    AddPortMac {
        ns: String,
        entry: PortMac,
    },
    /// Turns source-MAC learning on or off on a bridge port.
    SetLearning {
        ns: String,
        name: String,
        on: bool,
    },
    DelPortMac {
        ns: String,
        entry: PortMac,
    },
    AddNeighbour {
        ns: String,
        neighbour: Neighbour,
    },
    DelNeighbour {
        ns: String,
        neighbour: Neighbour,
    },
    AddFlood {
        ns: String,
        flood: Flood,
    },
    DelFlood {
        ns: String,
        flood: Flood,
    },
    SetLink {
        ns: String,
        name: String,
        up: bool,
        master: Option<String>,
    },
    DeleteLink {
        ns: String,
        name: String,
    },
    /// Turns `route_localnet` on or off for one of vpcsh's links: part of making the link
    /// (a create, undone by turning it off).
    SetRouteLocalnet {
        ns: String,
        name: String,
        on: bool,
    },
    /// Puts a netem queue on one of vpcsh's links (`None`: back to the default queue).
    SetImpairment {
        ns: String,
        name: String,
        impairment: Option<Impairment>,
    },
    AddAddr {
        ns: String,
        addr: Addr,
    },
    DelAddr {
        ns: String,
        addr: Addr,
    },
    AddRoute {
        ns: String,
        route: Route,
    },
    ReplaceRoute {
        ns: String,
        route: Route,
    },
    DelRoute {
        ns: String,
        route: Route,
    },
    StartProcess {
        ns: String,
        process: Process,
    },
    StopProcess {
        ns: String,
        process: Process,
    },
    /// Stops one process and starts another in its place (a resolver whose names changed:
    /// the new one needs the old one's port).
    ReplaceProcess {
        ns: String,
        old: Process,
        new: Process,
    },
    /// Creates or atomically replaces vpcsh's nftables table.
    SetRuleset {
        ns: String,
        ruleset: Ruleset,
        replace: bool,
    },
    DeleteRuleset {
        ns: String,
    },
    /// Puts vpcsh's accept rules (its uplinks' traffic, both ways) at the top of another
    /// tool's dropping forward chain.
    OpenHostFirewall {
        ns: String,
        chain: ForeignChain,
    },
    /// Takes them out again, leaving the other tool's rules as they were.
    CloseHostFirewall {
        ns: String,
        chain: ForeignChain,
    },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum OpClass {
    Create,
    Change,
    Delete,
}

impl Op {
    pub(crate) fn class(&self) -> OpClass {
        match self {
            Op::CreateNetns { .. }
            | Op::CreateBridge { .. }
            | Op::CreateVeth { .. }
            | Op::CreateVxlan { .. }
            | Op::AddNeighbour { .. }
            | Op::AddFlood { .. }
            | Op::AddPortMac { .. }
            | Op::AddAddr { .. }
            | Op::AddRoute { .. }
            | Op::StartProcess { .. }
            | Op::OpenHostFirewall { .. }
            | Op::SetRouteLocalnet { on: true, .. }
            | Op::SetRuleset { replace: false, .. } => OpClass::Create,
            Op::SetForwarding { .. }
            | Op::SetIpv6 { .. }
            | Op::SetLink { .. }
            | Op::SetImpairment { .. }
            | Op::SetLearning { .. }
            | Op::ReplaceProcess { .. }
            | Op::ReplaceRoute { .. }
            | Op::SetRuleset { .. } => OpClass::Change,
            Op::DeleteNetns { .. }
            | Op::DeleteLink { .. }
            | Op::DelAddr { .. }
            | Op::DelRoute { .. }
            | Op::DelNeighbour { .. }
            | Op::DelFlood { .. }
            | Op::DelPortMac { .. }
            | Op::StopProcess { .. }
            | Op::CloseHostFirewall { .. }
            | Op::SetRouteLocalnet { on: false, .. }
            | Op::DeleteRuleset { .. } => OpClass::Delete,
        }
    }

    /// The operation that takes a create back. Changes get theirs from the planner, which
    /// knows the old value; deletes cannot be taken back.
    pub(crate) fn inverse(&self) -> Option<Op> {
        Some(match self.clone() {
            Op::CreateNetns { ns, .. } => Op::DeleteNetns { ns },
            Op::CreateBridge { ns, name, .. }
            | Op::CreateVeth { ns, name, .. }
            | Op::CreateVxlan { ns, name, .. } => Op::DeleteLink { ns, name },
            Op::AddNeighbour { ns, neighbour } => Op::DelNeighbour { ns, neighbour },
            Op::AddFlood { ns, flood } => Op::DelFlood { ns, flood },
            Op::AddPortMac { ns, entry } => Op::DelPortMac { ns, entry },
            Op::AddAddr { ns, addr } => Op::DelAddr { ns, addr },
            Op::AddRoute { ns, route } => Op::DelRoute { ns, route },
            Op::StartProcess { ns, process } => Op::StopProcess { ns, process },
            Op::SetRuleset { ns, replace: false, .. } => Op::DeleteRuleset { ns },
            Op::OpenHostFirewall { ns, chain } => Op::CloseHostFirewall { ns, chain },
            Op::SetRouteLocalnet { ns, name, on: true } => Op::SetRouteLocalnet { ns, name, on: false },
            _ => return None,
        })
    }

    /// A stable name for the kind of operation (`add-route`, `create-veth`, ...), for
    /// selecting operations without parsing their printed form.
    /// Whether operations of this kind, next to each other in a plan, may run at once: they
    /// never depend on one another (each namespace is made on its own; each process starts
    /// in a namespace that exists).
    pub(crate) fn batches(&self) -> bool {
        matches!(self, Op::CreateNetns { .. } | Op::StartProcess { .. })
    }

    pub(crate) fn kind(&self) -> &'static str {
        match self {
            Op::CreateNetns { .. } => "create-netns",
            Op::DeleteNetns { .. } => "delete-netns",
            Op::SetForwarding { .. } => "set-forwarding",
            Op::SetIpv6 { .. } => "set-ipv6",
            Op::CreateBridge { .. } => "create-bridge",
            Op::CreateVeth { .. } => "create-veth",
            Op::CreateVxlan { .. } => "create-vxlan",
            Op::AddNeighbour { .. } => "add-neighbour",
            Op::DelNeighbour { .. } => "delete-neighbour",
            Op::AddFlood { .. } => "add-flood",
            Op::DelFlood { .. } => "delete-flood",
            Op::AddPortMac { .. } => "add-port-mac",
            Op::SetLearning { .. } => "set-learning",
            Op::DelPortMac { .. } => "delete-port-mac",
            Op::SetLink { .. } => "set-link",
            Op::DeleteLink { .. } => "delete-link",
            Op::SetRouteLocalnet { .. } => "set-route-localnet",
            Op::SetImpairment { .. } => "set-impairment",
            Op::AddAddr { .. } => "add-address",
            Op::DelAddr { .. } => "delete-address",
            Op::AddRoute { .. } => "add-route",
            Op::ReplaceRoute { .. } => "replace-route",
            Op::DelRoute { .. } => "delete-route",
            Op::StartProcess { .. } => "start-process",
            Op::StopProcess { .. } => "stop-process",
            Op::ReplaceProcess { .. } => "replace-process",
            Op::SetRuleset { .. } => "set-ruleset",
            Op::DeleteRuleset { .. } => "delete-ruleset",
            Op::OpenHostFirewall { .. } => "open-host-firewall",
            Op::CloseHostFirewall { .. } => "close-host-firewall",
        }
    }

    /// The namespace the operation works in.
    pub(crate) fn ns(&self) -> &str {
        match self {
            Op::CreateNetns { ns, .. }
            | Op::DeleteNetns { ns }
            | Op::SetForwarding { ns, .. }
            | Op::SetIpv6 { ns, .. }
            | Op::CreateBridge { ns, .. }
            | Op::CreateVeth { ns, .. }
            | Op::CreateVxlan { ns, .. }
            | Op::AddNeighbour { ns, .. }
            | Op::DelNeighbour { ns, .. }
            | Op::AddFlood { ns, .. }
            | Op::DelFlood { ns, .. }
            | Op::AddPortMac { ns, .. }
            | Op::SetLearning { ns, .. }
            | Op::DelPortMac { ns, .. }
            | Op::SetLink { ns, .. }
            | Op::DeleteLink { ns, .. }
            | Op::SetRouteLocalnet { ns, .. }
            | Op::SetImpairment { ns, .. }
            | Op::AddAddr { ns, .. }
            | Op::DelAddr { ns, .. }
            | Op::AddRoute { ns, .. }
            | Op::ReplaceRoute { ns, .. }
            | Op::DelRoute { ns, .. }
            | Op::StartProcess { ns, .. }
            | Op::StopProcess { ns, .. }
            | Op::ReplaceProcess { ns, .. }
            | Op::SetRuleset { ns, .. }
            | Op::DeleteRuleset { ns }
            | Op::OpenHostFirewall { ns, .. }
            | Op::CloseHostFirewall { ns, .. } => ns,
        }
    }
}

fn on_off(on: bool) -> &'static str {
    if on { "on" } else { "off" }
}

pub(crate) fn mac_text(mac: &Mac) -> String {
    mac.iter().map(|b| format!("{b:02x}")).collect::<Vec<_>>().join(":")
}

fn route_text(route: &Route) -> String {
    let dst = if route.dst.prefix() == 0 { "default".into() } else { route.dst.to_string() };
    format!("{dst} via {} dev {}", route.via, route.dev)
}

impl fmt::Display for Op {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Op::CreateNetns { ns, forwarding, ipv6 } => {
                let forwarding = if *forwarding { ", forwarding on" } else { "" };
                let ipv6 = if *ipv6 { "" } else { ", ipv6 off" };
                write!(f, "create netns {ns} (lo up{forwarding}{ipv6})")
            }
            Op::DeleteNetns { ns } => write!(f, "delete netns {ns}"),
            Op::SetForwarding { ns, on } => write!(f, "set forwarding {} in {ns}", on_off(*on)),
            Op::SetIpv6 { ns, on } => write!(f, "set ipv6 {} in {ns}", on_off(*on)),
            Op::CreateBridge { .. } | Op::CreateVeth { .. } => self.fmt_create_link(f),
            Op::CreateVxlan { .. }
            | Op::AddNeighbour { .. }
            | Op::DelNeighbour { .. }
            | Op::AddFlood { .. }
            | Op::DelFlood { .. }
            | Op::AddPortMac { .. }
            | Op::SetLearning { .. }
            | Op::DelPortMac { .. } => self.fmt_fabric(f),
            Op::SetLink { ns, name, up, master } => {
                write!(f, "set link {name} {}", if *up { "up" } else { "down" })?;
                if let Some(m) = master {
                    write!(f, " master {m}")?;
                }
                write!(f, " in {ns}")
            }
            Op::DeleteLink { ns, name } => write!(f, "delete link {name} in {ns}"),
            Op::SetRouteLocalnet { ns, name, on } => {
                write!(f, "turn route_localnet {} for {name} in {ns}", on_off(*on))
            }
            Op::SetImpairment { ns, name, impairment: Some(i) } => {
                write!(f, "impair link {name} in {ns}: {i}")
            }
            Op::SetImpairment { ns, name, impairment: None } => {
                write!(f, "remove the impairment of link {name} in {ns}")
            }
            Op::AddAddr { ns, addr } => write!(f, "add address {} on {} in {ns}", addr.net, addr.dev),
            Op::DelAddr { ns, addr } => write!(f, "delete address {} on {} in {ns}", addr.net, addr.dev),
            Op::AddRoute { ns, route } => write!(f, "add route {} in {ns}", route_text(route)),
            Op::ReplaceRoute { ns, route } => write!(f, "replace route {} in {ns}", route_text(route)),
            Op::DelRoute { ns, route } => write!(f, "delete route {} in {ns}", route_text(route)),
            Op::StartProcess { ns, process } => write!(f, "start {process} in {ns}"),
            Op::StopProcess { ns, process } => write!(f, "stop {process} in {ns}"),
            Op::ReplaceProcess { ns, old, new } => write!(f, "replace {old} with {new} in {ns}"),
            Op::SetRuleset { ns, ruleset, replace } => write!(
                f,
                "{} nftables table inet {TABLE} in {ns} ({} rules)",
                if *replace { "replace" } else { "create" },
                ruleset.rule_count()
            ),
            Op::DeleteRuleset { ns } => write!(f, "delete nftables table inet {TABLE} in {ns}"),
            Op::OpenHostFirewall { ns, chain } => {
                write!(f, "let vpcsh's traffic through {chain} (accept rules in {}) in {ns}", chain.rules_in)
            }
            Op::CloseHostFirewall { ns, chain } => {
                write!(
                    f,
                    "take vpcsh's accept rules out of {} {} {} in {ns}",
                    chain.family, chain.table, chain.rules_in
                )
            }
        }
    }
}

impl Op {
    /// Bridges and veth pairs, as `vpcsh plan` prints them.
    fn fmt_create_link(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Op::CreateBridge { ns, name, mac } => {
                write!(f, "create bridge {name} in {ns}")?;
                match mac {
                    Some(mac) => write!(f, " (mac {})", mac_text(mac)),
                    None => Ok(()),
                }
            }
            Op::CreateVeth { ns, name, master, peer_ns, peer, mtu, peer_mac, peer_master } => {
                write!(f, "create veth {name} in {ns}")?;
                if let Some(m) = master {
                    write!(f, " (master {m})")?;
                }
                write!(f, " <-> {peer} in {peer_ns}")?;
                if let Some(m) = peer_master {
                    write!(f, " (master {m})")?;
                }
                if let Some(mac) = peer_mac {
                    write!(f, " (mac {})", mac_text(mac))?;
                }
                match mtu {
                    Some(mtu) => write!(f, ", mtu {mtu}"),
                    None => Ok(()),
                }
            }
            _ => Ok(()),
        }
    }

    /// The fabric's operations, as `vpcsh plan` prints them.
    fn fmt_fabric(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Op::CreateVxlan { ns, name, vni, local, underlay_ns, master, mtu, evpn } => {
                write!(f, "create vxlan {name} in {ns} (vni {vni}, local {local} in {underlay_ns}")?;
                if *evpn {
                    f.write_str(", evpn")?;
                }
                if let Some(m) = master {
                    write!(f, ", master {m}")?;
                }
                if let Some(mtu) = mtu {
                    write!(f, ", mtu {mtu}")?;
                }
                f.write_str(")")
            }
            Op::AddNeighbour { ns, neighbour: n } => {
                write!(f, "add neighbour {} at {} on {} in {ns}", n.ip, mac_text(&n.mac), n.dev)
            }
            Op::DelNeighbour { ns, neighbour: n } => {
                write!(f, "delete neighbour {} at {} on {} in {ns}", n.ip, mac_text(&n.mac), n.dev)
            }
            Op::AddFlood { ns, flood } => write!(f, "flood {} to {} in {ns}", flood.dev, flood.dst),
            Op::DelFlood { ns, flood } => write!(f, "stop flooding {} to {} in {ns}", flood.dev, flood.dst),
            Op::SetLearning { ns, name, on } => {
                write!(f, "turn learning {} on port {name} in {ns}", on_off(*on))
            }
            Op::AddPortMac { ns, entry } => {
                write!(f, "pin {} to port {} in {ns}", mac_text(&entry.mac), entry.dev)
            }
            Op::DelPortMac { ns, entry } => {
                write!(f, "unpin {} from port {} in {ns}", mac_text(&entry.mac), entry.dev)
            }
            _ => Ok(()),
        }
    }
}
