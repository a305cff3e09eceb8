//! Firewall policy input that scripts and files share: port ranges, and the reader of the
//! JSON policy format of the original tool (vpcctl, the student tool vpcsh grew from; its
//! format is called "seed" in the code), used by `policy_file()` and `vpcsh policy apply`
//! alike so both accept and refuse the same files.

use ipnetwork::Ipv4Network;
use serde::Deserialize;

use super::{FirewallRule, RuleProto};

/// A port list that is none of `80`, `"8000-8100"` or `"*"`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{0}` is not a port, a range like \"8000-8100\", or \"*\"")]
pub(crate) struct BadPorts(pub String);

/// `"80"`, `"8000-8100"` or `"*"` (any port) as an inclusive range; `None` is any port.
pub(crate) fn parse_ports(text: &str) -> Result<Option<(u16, u16)>, BadPorts> {
    if text == "*" {
        return Ok(None);
    }
    let port = |s: &str| s.trim().parse::<u16>().ok().filter(|p| *p > 0);
    let range = match text.split_once('-') {
        Some((lo, hi)) => port(lo).zip(port(hi)),
        None => port(text).map(|p| (p, p)),
    };
    match range {
        Some((lo, hi)) if lo <= hi => Ok(Some((lo, hi))),
        _ => Err(BadPorts(text.to_string())),
    }
}

/// A policy in the seed format, checked: `{"subnet": cidr, "ingress": [rule], "egress": [rule]}`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct SeedPolicy {
    #[serde(default, deserialize_with = "optional_cidr")]
    pub subnet: Option<Ipv4Network>,
    #[serde(default)]
    pub ingress: Vec<SeedRule>,
    #[serde(default)]
    pub egress: Vec<SeedRule>,
}

/// One rule, checked where it stands in the file (so mistakes have a line and column).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(try_from = "RawRule")]
pub(crate) struct SeedRule {
    pub proto: RuleProto,
    pub ports: Option<(u16, u16)>,
    /// `source` of an ingress rule, `destination` of an egress one.
    pub peer: Option<Ipv4Network>,
    pub allow: bool,
}

impl SeedRule {
    pub(crate) fn to_firewall_rule(&self) -> FirewallRule {
        FirewallRule {
            proto: self.proto,
            ports: self.ports,
            nets: self.peer.into_iter().map(ipnetwork::IpNetwork::V4).collect(),
            allow: self.allow,
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRule {
    /// `Some(None)` is `"*"`: given, any port.
    #[serde(default, deserialize_with = "seed_ports")]
    port: Option<Option<(u16, u16)>>,
    #[serde(default)]
    protocol: Option<RuleProto>,
    action: RawAction,
    #[serde(default, deserialize_with = "optional_cidr")]
    source: Option<Ipv4Network>,
    #[serde(default, deserialize_with = "optional_cidr")]
    destination: Option<Ipv4Network>,
}

/// A port as a number or a string (`"*"`, `"8000-8100"`), checked where it stands.
fn seed_ports<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<Option<(u16, u16)>>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Port {
        Number(i64),
        Text(String),
    }
    let text = match Port::deserialize(d)? {
        Port::Number(n) => n.to_string(),
        Port::Text(t) => t,
    };
    parse_ports(&text).map(Some).map_err(serde::de::Error::custom)
}

#[derive(Deserialize, Clone, Copy)]
#[serde(rename_all = "lowercase")]
enum RawAction {
    Allow,
    Deny,
}

/// A rule whose fields do not go together.
#[derive(Debug, thiserror::Error)]
pub(crate) enum RuleError {
    #[error("icmp has no ports: leave `port` out, or use \"*\"")]
    IcmpPorts,
    #[error("a rule has a `source` (ingress) or a `destination` (egress), not both")]
    SourceAndDestination,
}

impl TryFrom<RawRule> for SeedRule {
    type Error = RuleError;

    fn try_from(raw: RawRule) -> Result<Self, RuleError> {
        let ports = raw.port.flatten();
        // The original tool's rules without a protocol were tcp when they named a port.
        let proto = raw.protocol.unwrap_or(if raw.port.is_some() { RuleProto::Tcp } else { RuleProto::Any });
        if proto == RuleProto::Icmp && ports.is_some() {
            return Err(RuleError::IcmpPorts);
        }
        if raw.source.is_some() && raw.destination.is_some() {
            return Err(RuleError::SourceAndDestination);
        }
        Ok(SeedRule {
            proto,
            ports,
            peer: raw.source.or(raw.destination),
            allow: matches!(raw.action, RawAction::Allow),
        })
    }
}

fn optional_cidr<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<Ipv4Network>, D::Error> {
    let Some(text) = Option::<String>::deserialize(d)? else { return Ok(None) };
    let net: Ipv4Network =
        text.parse().map_err(|_| serde::de::Error::custom(format!("`{text}` is not an IPv4 CIDR")))?;
    if net.ip() != net.network() {
        return Err(serde::de::Error::custom(format!("`{text}` has host bits set")));
    }
    Ok(Some(net))
}

/// Reads a seed-format policy; errors carry the line and column of the mistake.
#[cfg(test)]
pub(crate) fn read_seed(json: &str) -> Result<SeedPolicy, serde_json::Error> {
    serde_json::from_str(json)
}

/// Reads a file of one policy, or of a list of them (one per subnet, as users of the
/// original tool often kept them); an empty list is an error.
pub(crate) fn read_seeds(json: &str) -> Result<Vec<SeedPolicy>, serde_json::Error> {
    if !json.trim_start().starts_with('[') {
        return serde_json::from_str(json).map(|one| vec![one]);
    }
    let many: Vec<SeedPolicy> = serde_json::from_str(json)?;
    if many.is_empty() {
        return Err(serde::de::Error::custom("the file holds an empty list of policies"));
    }
    Ok(many)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ports_are_numbers_ranges_or_any() {
        assert_eq!(parse_ports("80"), Ok(Some((80, 80))));
        assert_eq!(parse_ports("8000-8100"), Ok(Some((8000, 8100))));
        assert_eq!(parse_ports("*"), Ok(None));
        assert!(parse_ports("0").is_err() && parse_ports("90-80").is_err() && parse_ports("http").is_err());
    }

    #[test]
    fn the_seed_format_is_read_and_checked() {
        let policy = read_seed(
            r#"{"subnet": "10.0.1.0/24",
                "ingress": [{"port": 80, "protocol": "tcp", "action": "allow"},
                            {"port": "*", "action": "deny", "source": "10.0.2.0/24"}],
                "egress": [{"port": 53, "protocol": "udp", "action": "allow", "destination": "10.0.0.2/32"}]}"#,
        )
        .unwrap();
        assert_eq!(policy.subnet, Some("10.0.1.0/24".parse().unwrap()));
        assert_eq!(policy.ingress.len(), 2);
        assert_eq!(policy.ingress[1].peer, Some("10.0.2.0/24".parse().unwrap()));
        // As in the original tool, a rule that names a port and no protocol is tcp.
        assert_eq!(policy.ingress[1].proto, RuleProto::Tcp);
        assert_eq!(policy.egress[0].ports, Some((53, 53)));
    }

    #[test]
    fn seed_mistakes_say_where() {
        let err =
            read_seed("{\n  \"ingress\": [{\"port\": 80, \"protocl\": \"tcp\", \"action\": \"allow\"}]\n}")
                .unwrap_err();
        assert_eq!(err.line(), 2);
        assert!(err.to_string().contains("unknown field `protocl`"), "{err}");
        let err = read_seed("{\"ingress\": [{\"port\": 70000, \"action\": \"allow\"}]}").unwrap_err();
        assert!(err.to_string().contains("70000"), "{err}");
        let err = read_seed("{\"ingress\": [{\"port\": 80, \"action\": \"alow\"}]}").unwrap_err();
        assert!(err.to_string().contains("unknown variant `alow`"), "{err}");
    }

    #[test]
    fn a_file_holds_one_policy_or_a_non_empty_list() {
        let many =
            read_seeds(r#"[{"subnet": "10.0.1.0/24"}, {"subnet": "10.0.2.0/24", "ingress": []}]"#).unwrap();
        assert_eq!(many.len(), 2);
        assert_eq!(read_seeds(r#"{"ingress": []}"#).unwrap().len(), 1);
        let empty = read_seeds(" [ ] ").unwrap_err();
        assert!(empty.to_string().contains("empty list of policies"), "{empty}");
    }

    #[test]
    fn both_paths_refuse_icmp_ports_and_bad_subnets() {
        let err =
            read_seed(r#"{"ingress": [{"protocol": "icmp", "port": 80, "action": "allow"}]}"#).unwrap_err();
        assert!(err.to_string().contains("icmp has no ports"), "{err}");
        let err = read_seed(r#"{"subnet": "10.0.1.0/33"}"#).unwrap_err();
        assert!(err.to_string().contains("not an IPv4 CIDR"), "{err}");
    }
}
