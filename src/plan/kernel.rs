//! The part of the kernel's network state vpcsh manages, as comparable data.
//!
//! The same shape describes what is wanted (derived from the model) and what is there
//! (observed over netlink), so planning is a diff of two values.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, Ipv4Addr};

use ipnetwork::IpNetwork;
use serde::{Deserialize, Serialize};

use super::nft::Ruleset;
use crate::model::impair::Impairment;

/// The link group that marks links vpcsh made (ASCII "vpcs"); honoured at creation, unlike
/// an alias, so marking costs no extra request.
pub(crate) const LINK_GROUP: u32 = 0x7670_6373;

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub(crate) struct KernelState {
    pub namespaces: BTreeMap<String, Netns>,
}

/// The model object a kernel object realises: what `status` reports per object, and what
/// each planned step is for.
#[derive(Clone, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub(crate) enum Owner {
    /// Observed, not wanted: nothing in the model claims it.
    #[default]
    Unclaimed,
    /// What vpcsh adds to the real machine.
    Machine,
    /// The sandbox namespace that plays the machine.
    Sandbox,
    /// The sandbox's simulated internet.
    Internet,
    /// The simulated network between sandbox machines (`--fabric`).
    Fabric,
    Vpc(String),
    Subnet {
        vpc: String,
        subnet: String,
    },
    Host {
        vpc: String,
        host: String,
    },
    Peering {
        a: String,
        b: String,
    },
}

impl Owner {
    /// The kind of object (`vpc`, `subnet`, `host`, `peering`, ...).
    pub(crate) fn kind(&self) -> &'static str {
        match self {
            Owner::Unclaimed => "unclaimed",
            Owner::Machine => "machine",
            Owner::Sandbox => "sandbox",
            Owner::Internet => "internet",
            Owner::Fabric => "fabric",
            Owner::Vpc(_) => "vpc",
            Owner::Subnet { .. } => "subnet",
            Owner::Host { .. } => "host",
            Owner::Peering { .. } => "peering",
        }
    }

    /// Its name as users write it (`prod`, `prod/web`, `a<->b`); empty for the singletons.
    pub(crate) fn name(&self) -> String {
        match self {
            Owner::Unclaimed | Owner::Machine | Owner::Sandbox | Owner::Internet | Owner::Fabric => {
                String::new()
            }
            Owner::Vpc(vpc) => vpc.clone(),
            Owner::Subnet { vpc, subnet } => format!("{vpc}/{subnet}"),
            Owner::Host { vpc, host } => format!("{vpc}/{host}"),
            Owner::Peering { a, b } => format!("{a}<->{b}"),
        }
    }
}

impl std::fmt::Display for Owner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Owner::Unclaimed => f.write_str("unclaimed"),
            Owner::Machine => f.write_str("machine"),
            Owner::Sandbox => f.write_str("sandbox"),
            Owner::Internet => f.write_str("internet"),
            Owner::Fabric => f.write_str("fabric"),
            Owner::Vpc(vpc) => write!(f, "vpc {vpc}"),
            Owner::Subnet { vpc, subnet } => write!(f, "subnet {vpc}/{subnet}"),
            Owner::Host { vpc, host } => write!(f, "host {vpc}/{host}"),
            Owner::Peering { a, b } => write!(f, "peering {a}<->{b}"),
        }
    }
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub(crate) struct Netns {
    /// The model object this namespace realises.
    pub owner: Owner,
    pub forwarding: bool,
    /// Whether IPv6 is on (`net.ipv6.conf.{all,default}.disable_ipv6`); `None` in a wanted
    /// namespace whose IPv6 vpcsh leaves as it is (the machine's, the simulated internet).
    pub ipv6: Option<bool>,
    pub links: BTreeMap<String, Link>,
    pub addrs: BTreeSet<Addr>,
    pub routes: BTreeSet<Route>,
    pub processes: BTreeSet<Process>,
    /// vpcsh's nftables table, if the namespace has one.
    pub nft: Option<Nft>,
    /// Wanted: vpcsh's forwarded traffic passes other tools' firewalls here (the machine,
    /// while it has VPCs).
    pub pass_host_firewall: bool,
    /// Observed: other tools' forward chains that drop what they do not accept, each with
    /// whether vpcsh's accept rules are in it.
    pub host_firewall: BTreeMap<ForeignChain, bool>,
    /// Static neighbour entries (remote hosts of a fabric, on their subnet's bridge).
    pub neighbours: BTreeSet<Neighbour>,
    /// Where a VXLAN device floods what it has no entry for: the other nodes.
    pub floods: BTreeSet<Flood>,
    /// Static entries of a bridge's forwarding table: `mac` is behind port `dev`.
    pub port_macs: BTreeSet<PortMac>,
    /// Wanted: other machines keep links here too (the fabric's underlay), so only the
    /// links wanted here are vpcsh's to change.
    pub shared: bool,
}

/// A MAC address.
pub(crate) type Mac = [u8; 6];

/// A permanent neighbour entry: `ip` is at `mac` on `dev`.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub(crate) struct Neighbour {
    pub dev: String,
    pub ip: IpAddr,
    pub mac: Mac,
}

/// A static bridge forwarding entry: frames to `mac` go out of port `dev`, and the bridge
/// never learns `mac` elsewhere.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub(crate) struct PortMac {
    pub dev: String,
    pub mac: Mac,
}

/// A VXLAN device's all-zeros forwarding entry towards one remote endpoint: broadcasts,
/// unknown unicast and multicast are copied to each (head-end replication).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub(crate) struct Flood {
    pub dev: String,
    pub dst: Ipv4Addr,
}

/// Another tool's base chain on the forward hook whose policy is drop (Docker's, ufw's,
/// firewalld's): forwarded traffic passes only what it accepts.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub(crate) struct ForeignChain {
    /// `ip`, `ip6` or `inet` (nftables, also under iptables-nft), or `iptables-legacy`.
    pub family: String,
    pub table: String,
    /// The base chain that drops.
    pub chain: String,
    /// Where vpcsh's accept rules go: `DOCKER-USER` where Docker made one (as Docker asks
    /// of other tools), else the chain itself.
    pub rules_in: String,
    /// Whether vpcsh can add its rules: not to iptables-legacy, nor to a table another
    /// process owns.
    pub writable: bool,
}

impl std::fmt::Display for ForeignChain {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {} {}", self.family, self.table, self.chain)
    }
}

/// vpcsh's nftables table: the ruleset wanted, or the signature observed in the kernel.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub(crate) enum Nft {
    Wanted(Ruleset),
    Seen(Vec<String>),
}

impl Nft {
    pub(crate) fn signature(&self) -> Vec<String> {
        match self {
            Nft::Wanted(r) => r.signature(),
            Nft::Seen(s) => s.clone(),
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub(crate) struct Link {
    pub kind: LinkKind,
    pub master: Option<String>,
    pub up: bool,
    /// The model object it realises (wanted links); unclaimed when observed.
    pub owner: Owner,
    /// Made by vpcsh (in its link group): only such links are ever deleted as unwanted.
    pub ours: bool,
    /// Packets from 127.0.0.0/8 may leave through it (`route_localnet`): the machine's
    /// uplink ends, so a published port answers on the machine's loopback too.
    pub route_localnet: bool,
    /// What its root queue (netem) does to the packets it sends; `None`: the default queue.
    pub impairment: Option<Impairment>,
    /// Wanted: its MTU, where it must not be the default; observed: always.
    pub mtu: Option<u32>,
    /// Wanted: its MAC, where vpcsh chooses it; observed: always.
    pub mac: Option<Mac>,
    /// As a bridge port, whether the bridge learns source MACs on it: wanted where it must
    /// not; observed for every port.
    pub learning: Option<bool>,
}

impl Link {
    /// A link as vpcsh makes it: up, in its group, with the kernel's defaults for the rest.
    pub(crate) fn made(kind: LinkKind, master: Option<String>, owner: Owner) -> Link {
        Link {
            kind,
            master,
            up: true,
            owner,
            ours: true,
            route_localnet: false,
            impairment: None,
            mtu: None,
            mac: None,
            learning: None,
        }
    }

    /// Whether an observed link has the MTU and MAC wanted of it (where any is).
    pub(crate) fn same_lower_layer(&self, observed: &Link) -> bool {
        (self.mtu.is_none() || self.mtu == observed.mtu) && (self.mac.is_none() || self.mac == observed.mac)
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub(crate) enum LinkKind {
    Loopback,
    Bridge,
    /// A veth end created from this namespace, its peer put straight into `peer_ns`.
    Veth {
        peer_ns: String,
        peer: String,
    },
    /// The far end of a veth created from another namespace (made by that side's op).
    VethPeer,
    /// A VXLAN device for segment `vni`, sending from `local`; its UDP socket lives in
    /// `underlay_ns` (where it is created from), wherever the device itself is.
    Vxlan {
        vni: u32,
        local: Ipv4Addr,
        underlay_ns: String,
        /// Its flood list and remote MACs come from BGP EVPN, not from vpcsh or traffic.
        evpn: bool,
    },
    /// A kind vpcsh does not make (observed only).
    Other(String),
}

impl LinkKind {
    /// Whether an observed link can stand for this wanted one. Observation cannot see where
    /// a veth's peer lives, so any veth matches a wanted veth or veth peer.
    pub(crate) fn matches(&self, observed: &LinkKind) -> bool {
        match (self, observed) {
            (LinkKind::Veth { .. } | LinkKind::VethPeer, LinkKind::Veth { .. } | LinkKind::VethPeer) => true,
            // Observation sees the segment and the source, not the socket's namespace.
            (LinkKind::Vxlan { vni, local, .. }, LinkKind::Vxlan { vni: v, local: l, .. }) => {
                vni == v && local == l
            }
            (a, b) => a == b,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub(crate) struct Addr {
    pub dev: String,
    pub net: IpNetwork,
}

#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub(crate) struct Route {
    pub dst: IpNetwork,
    pub via: IpAddr,
    pub dev: String,
}

/// A process vpcsh keeps running in a namespace.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum Process {
    /// vpcsh's built-in HTTP server (`serve()`, the simulated internet).
    Http { port: u16, body: String },
    /// A VPC's resolver, in its router: `NAME=ADDRESS` for every name it answers.
    Dns { records: Vec<String> },
    /// A firewalled host's flow log collector (`vpcsh flows` reads what it writes).
    FlowLog,
    /// One of FRR's daemons for a fabric's BGP EVPN, with its configuration.
    Routing { daemon: RoutingDaemon, config: String },
    /// A command from `run()`; one that ends is started again only when `restart`.
    Command {
        argv: Vec<String>,
        #[serde(default)]
        restart: bool,
    },
}

/// The FRR daemons a node of an EVPN fabric runs: zebra talks to the kernel, bgpd to the
/// other nodes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum RoutingDaemon {
    Zebra,
    Bgpd,
}

impl RoutingDaemon {
    pub(crate) fn name(self) -> &'static str {
        match self {
            RoutingDaemon::Zebra => "zebra",
            RoutingDaemon::Bgpd => "bgpd",
        }
    }
}

impl Process {
    /// Whether it is one of vpcsh's own servers, which say when they are ready.
    pub(crate) fn listens(&self) -> bool {
        !matches!(self, Process::Command { .. } | Process::Routing { .. })
    }

    /// Whether it is started again once it has ended (servers always are).
    pub(crate) fn restarts(&self) -> bool {
        match self {
            Process::Command { restart, .. } => *restart,
            _ => true,
        }
    }
}

impl std::fmt::Display for Process {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Process::Http { port, .. } => write!(f, "http server on port {port}"),
            Process::Dns { records } => write!(f, "resolver ({} names)", records.len()),
            Process::FlowLog => f.write_str("flow log"),
            Process::Routing { daemon, .. } => write!(f, "FRR {}", daemon.name()),
            Process::Command { argv, .. } => write!(f, "`{}`", argv.join(" ")),
        }
    }
}
