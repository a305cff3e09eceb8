//! The part of the kernel's network state vpcsh manages, as comparable data.
//!
//! The same shape describes what is wanted (derived from the model) and what is there
//! (observed over netlink), so planning is a diff of two values.

use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;

use ipnetwork::Ipv4Network;
use serde::{Deserialize, Serialize};

use super::nft::Ruleset;

/// The link group that marks links vpcsh made (ASCII "vpcs"); honoured at creation, unlike
/// an alias, so marking costs no extra request.
pub(crate) const LINK_GROUP: u32 = 0x7670_6373;

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub(crate) struct KernelState {
    pub namespaces: BTreeMap<String, Netns>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub(crate) struct Netns {
    /// The model object this namespace realises (`prod`, `prod/w1`, `sandbox`), for status.
    pub owner: String,
    pub forwarding: bool,
    pub links: BTreeMap<String, Link>,
    pub addrs: BTreeSet<Addr>,
    pub routes: BTreeSet<Route>,
    pub processes: BTreeSet<Process>,
    /// vpcsh's nftables table, if the namespace has one.
    pub nft: Option<Nft>,
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
    /// The model object it realises (wanted links), empty when observed.
    pub owner: String,
    /// Made by vpcsh (in its link group): only such links are ever deleted as unwanted.
    pub ours: bool,
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
    /// A kind vpcsh does not make (observed only).
    Other(String),
}

impl LinkKind {
    /// Whether an observed link can stand for this wanted one. Observation cannot see where
    /// a veth's peer lives, so any veth matches a wanted veth or veth peer.
    pub(crate) fn matches(&self, observed: &LinkKind) -> bool {
        match (self, observed) {
            (LinkKind::Veth { .. } | LinkKind::VethPeer, LinkKind::Veth { .. } | LinkKind::VethPeer) => true,
            (a, b) => a == b,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub(crate) struct Addr {
    pub dev: String,
    pub net: Ipv4Network,
}

#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub(crate) struct Route {
    pub dst: Ipv4Network,
    pub via: Ipv4Addr,
    pub dev: String,
}

/// A process vpcsh keeps running in a namespace.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum Process {
    /// vpcsh's built-in HTTP server (`serve()`, the simulated internet).
    Http { port: u16, body: String },
    /// A command from `run()`.
    Command { argv: Vec<String> },
}

impl std::fmt::Display for Process {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Process::Http { port, .. } => write!(f, "http server on port {port}"),
            Process::Command { argv } => write!(f, "`{}`", argv.join(" ")),
        }
    }
}
