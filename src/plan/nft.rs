//! nftables rulesets as data: the table vpcsh keeps in a namespace, its chains and rules.
//!
//! A rule renders as nft-like text (what `vpcsh plan` and tests show); a fingerprint of
//! that text is stored in the kernel as the rule's comment, so observation compares
//! rulesets without decoding expressions, and `nft list ruleset` marks vpcsh's rules.

use std::fmt;
use std::net::Ipv4Addr;

use ipnetwork::IpNetwork;
use serde::Serialize;

/// The one table vpcsh owns in each namespace (family `inet`: both IPv4 and IPv6).
pub(crate) const TABLE: &str = "vpcsh";

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub(crate) struct Ruleset {
    pub chains: Vec<Chain>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub(crate) enum ChainType {
    Filter,
    Nat,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub(crate) enum Hook {
    Prerouting,
    Input,
    Forward,
    Output,
    Postrouting,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub(crate) struct Chain {
    pub name: &'static str,
    pub kind: ChainType,
    pub hook: Hook,
    pub priority: i32,
    /// Drop what no rule accepted (filter chains only).
    pub drop_by_default: bool,
    pub rules: Vec<Rule>,
}

/// Every rule counts the packets and bytes it matches (`status --counters` reads them).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub(crate) struct Rule {
    pub matches: Vec<Match>,
    pub action: Action,
    /// What in the network made the rule, for people: not part of its fingerprint.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub origin: Option<String>,
    /// Sends the packets it matches to the flow log (nflog group `FLOW_LOG_GROUP`) with
    /// this prefix: where the rule is (`input#5`), so the reader finds what it decided.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub log: Option<String>,
}

/// The nflog group of the flow log: the first packet of each flow a host's firewall decides.
pub(crate) const FLOW_LOG_GROUP: u16 = 7;

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub(crate) enum IfName {
    Exact(String),
    /// Every interface whose name starts with this (nft's `"v-*"`).
    Prefix(String),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub(crate) enum Proto {
    Tcp,
    Udp,
    Icmp,
    Icmpv6,
}

impl Proto {
    pub(crate) fn number(self) -> u8 {
        match self {
            Proto::Tcp => 6,
            Proto::Udp => 17,
            Proto::Icmp => 1,
            Proto::Icmpv6 => 58,
        }
    }

    fn name(self) -> &'static str {
        match self {
            Proto::Tcp => "tcp",
            Proto::Udp => "udp",
            Proto::Icmp => "icmp",
            Proto::Icmpv6 => "ipv6-icmp",
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub(crate) enum Match {
    Iif(IfName),
    Oif(IfName),
    /// Source network; an `ip` or `ip6` match by its family.
    Saddr(IpNetwork),
    Daddr(IpNetwork),
    Proto(Proto),
    /// ICMPv6 router and neighbour solicitations and advertisements (types 133–136): the
    /// link itself, which no policy may cut.
    NeighbourDiscovery,
    /// Destination port range (inclusive); needs a `Proto` match before it.
    Dport(u16, u16),
    /// `ct state established,related`
    Established,
    /// `ct status dnat`: the connection was destination-NATed (a published port).
    Dnatted,
    /// `fib daddr type local`: addressed to this namespace (any of its addresses).
    LocalDestination,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub(crate) enum Action {
    Accept,
    Drop,
    Masquerade,
    Dnat {
        addr: Ipv4Addr,
        port: u16,
    },
    /// No verdict: on to the next rule, or the chain's policy.
    Continue,
}

impl Chain {
    pub(crate) fn filter(name: &'static str, hook: Hook, drop_by_default: bool) -> Self {
        Self { name, kind: ChainType::Filter, hook, priority: 0, drop_by_default, rules: Vec::new() }
    }
    pub(crate) fn nat(name: &'static str, hook: Hook) -> Self {
        // Destination NAT before routing decides, source NAT after.
        let priority = if matches!(hook, Hook::Prerouting | Hook::Output) { -100 } else { 100 };
        Self { name, kind: ChainType::Nat, hook, priority, drop_by_default: false, rules: Vec::new() }
    }
    pub(crate) fn rule(mut self, matches: Vec<Match>, action: Action) -> Self {
        self.rules.push(Rule { matches, action, origin: None, log: None });
        self
    }
    /// Logs what the last rule matches to the flow log, marked with its place in the chain.
    pub(crate) fn logged(mut self) -> Self {
        let place = format!("{}#{}", self.name, self.rules.len().saturating_sub(1));
        if let Some(rule) = self.rules.last_mut() {
            rule.log = Some(place);
        }
        self
    }
    /// A rule that something the user declared made (a firewall rule, a published port).
    pub(crate) fn rule_from(mut self, matches: Vec<Match>, action: Action, origin: String) -> Self {
        self.rules.push(Rule { matches, action, origin: Some(origin), log: None });
        self
    }
    pub(crate) fn header(&self) -> String {
        let kind = match self.kind {
            ChainType::Filter => "filter",
            ChainType::Nat => "nat",
        };
        let policy = if self.drop_by_default { "drop" } else { "accept" };
        format!(
            "chain {} {{ type {kind} hook {} priority {}; policy {policy}; }}",
            self.name, self.hook, self.priority
        )
    }
}

impl Ruleset {
    /// The ruleset as comparable lines: each chain's header, then its rules' fingerprints.
    pub(crate) fn signature(&self) -> Vec<String> {
        self.chains
            .iter()
            .flat_map(|c| {
                std::iter::once(c.header())
                    .chain(c.rules.iter().map(|r| format!("{}: {}", c.name, r.fingerprint())))
            })
            .collect()
    }
    pub(crate) fn rule_count(&self) -> usize {
        self.chains.iter().map(|c| c.rules.len()).sum()
    }
}

impl Rule {
    /// The comment vpcsh stores with the rule in the kernel: `vpcsh` and a hash of its text.
    pub(crate) fn fingerprint(&self) -> String {
        let hash = crate::model::fnv::fnv1a(self.to_string().as_bytes());
        format!("vpcsh {hash:016x}")
    }
}

impl fmt::Display for Hook {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Hook::Prerouting => "prerouting",
            Hook::Input => "input",
            Hook::Forward => "forward",
            Hook::Output => "output",
            Hook::Postrouting => "postrouting",
        })
    }
}

impl fmt::Display for IfName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            IfName::Exact(n) => write!(f, "\"{n}\""),
            IfName::Prefix(p) => write!(f, "\"{p}*\""),
        }
    }
}

impl fmt::Display for Match {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Match::Iif(n) => write!(f, "iifname {n}"),
            Match::Oif(n) => write!(f, "oifname {n}"),
            Match::Saddr(n) => write!(f, "{} saddr {n}", family(n)),
            Match::Daddr(n) => write!(f, "{} daddr {n}", family(n)),
            Match::Proto(p) => write!(f, "meta l4proto {}", p.name()),
            Match::NeighbourDiscovery => f.write_str("icmpv6 type 133-136"),
            Match::Dport(lo, hi) if lo == hi => write!(f, "th dport {lo}"),
            Match::Dport(lo, hi) => write!(f, "th dport {lo}-{hi}"),
            Match::Established => f.write_str("ct state established,related"),
            Match::Dnatted => f.write_str("ct status dnat"),
            Match::LocalDestination => f.write_str("fib daddr type local"),
        }
    }
}

/// nft's name for an address family's header: `ip` or `ip6`.
fn family(net: &IpNetwork) -> &'static str {
    if net.is_ipv4() { "ip" } else { "ip6" }
}

impl fmt::Display for Rule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for m in &self.matches {
            write!(f, "{m} ")?;
        }
        if let Some(prefix) = &self.log {
            write!(f, "log prefix \"{prefix}\" group {FLOW_LOG_GROUP} ")?;
        }
        f.write_str("counter ")?;
        match &self.action {
            Action::Accept => f.write_str("accept"),
            Action::Drop => f.write_str("drop"),
            Action::Masquerade => f.write_str("masquerade"),
            Action::Dnat { addr, port } => write!(f, "dnat ip to {addr}:{port}"),
            Action::Continue => f.write_str("continue"),
        }
    }
}
