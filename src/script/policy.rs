//! Firewall policies: `firewall(target, policy)` with a policy map, and `policy_file(path)`
//! reading the seed tool's JSON format into such a map. Mistakes point at the call, and for
//! a policy file also at the line and column in the JSON.

use std::path::Path;

use rhai::{Array, Dynamic, Engine, Map, NativeCallContext};
use serde::Deserialize;

use super::bindings::{HostHandle, Res, SharedRef, SubnetHandle, VpcHandle, cidr, fail, live_vpc, span};
use super::errors::{Fault, suggest};
use super::{Shared, Source};
use crate::model::{
    FirewallDecl, FirewallRule, FirewallTarget, PeerRef, PolicyDecl, RuleDecl, RuleProto, Span,
};

/// A policy map or rule with a problem: what is wrong, and how to fix it.
fn bad<T>(ctx: &NativeCallContext, shared: &Shared, message: String, help: Option<String>) -> Res<T> {
    let mut fault = Fault::new(message, span(shared, ctx), "in this policy");
    fault.help = help;
    fail(ctx, fault)
}

fn unknown_key<T>(
    ctx: &NativeCallContext,
    shared: &Shared,
    key: &str,
    what: &str,
    allowed: &[&str],
) -> Res<T> {
    let help = match suggest(key, allowed.iter().copied()) {
        Some(best) => format!("did you mean `{best}`?"),
        None => format!("{what} takes: {}", allowed.join(", ")),
    };
    bad(ctx, shared, format!("unknown {what} field `{key}`"), Some(help))
}

/// `"80"`, `80`, `"8000-8100"` or `"*"` (any) as an inclusive range.
pub(crate) fn parse_ports(text: &str) -> Result<Option<(u16, u16)>, String> {
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
        _ => Err(format!("`{text}` is not a port, a range like \"8000-8100\", or \"*\"")),
    }
}

fn peers(ctx: &NativeCallContext, shared: &mut Shared, v: &Dynamic, span: Span) -> Res<Vec<PeerRef>> {
    let items = v.clone().try_cast::<Array>().unwrap_or_else(|| vec![v.clone()]);
    let mut out = Vec::new();
    for item in items {
        if let Some(h) = item.clone().try_cast::<HostHandle>() {
            out.push(PeerRef::Host(h.0));
        } else if let Some(s) = item.clone().try_cast::<SubnetHandle>() {
            out.push(PeerRef::Subnet(s.0));
        } else if let Some(vpc) = item.clone().try_cast::<VpcHandle>() {
            out.push(PeerRef::Vpc(vpc.0));
        } else if let Ok(text) = item.clone().into_string() {
            // A bare address is that one host.
            let text = if text.parse::<std::net::Ipv4Addr>().is_ok() { format!("{text}/32") } else { text };
            out.push(PeerRef::Cidr(cidr(&mut shared.decls, &text, span)));
        } else {
            let message =
                format!("a rule's peer is a CIDR, a Vpc, a Subnet or a Host, not {}", item.type_name());
            return bad(ctx, shared, message, None);
        }
    }
    Ok(out)
}

fn rule(ctx: &NativeCallContext, shared: &mut Shared, v: &Dynamic, ingress: bool) -> Res<RuleDecl> {
    let Some(map) = v.clone().try_cast::<Map>() else {
        return bad(
            ctx,
            shared,
            format!(
                "a rule is a map like #{{ proto: \"tcp\", port: 80, action: \"allow\" }}, not {}",
                v.type_name()
            ),
            None,
        );
    };
    let peer_key = if ingress { "from" } else { "to" };
    let allowed = ["proto", "port", peer_key, "action"];
    for key in map.keys() {
        if !allowed.contains(&key.as_str()) {
            if key.as_str() == "from" || key.as_str() == "to" {
                let other = if ingress { "ingress rules use `from`" } else { "egress rules use `to`" };
                return bad(ctx, shared, format!("`{key}` does not fit this rule: {other}"), None);
            }
            return unknown_key(ctx, shared, key, "rule", &allowed);
        }
    }
    let text = |k: &str| map.get(k).map(|v| v.clone().into_string().map_err(|_| v.type_name().to_string()));
    let proto = match text("proto") {
        None => RuleProto::Any,
        Some(Ok(p)) => match p.as_str() {
            "tcp" => RuleProto::Tcp,
            "udp" => RuleProto::Udp,
            "icmp" => RuleProto::Icmp,
            "any" => RuleProto::Any,
            other => {
                return bad(
                    ctx,
                    shared,
                    format!("`{other}` is not a protocol"),
                    Some("use tcp, udp, icmp or any".into()),
                );
            }
        },
        Some(Err(t)) => return bad(ctx, shared, format!("proto must be a string, not {t}"), None),
    };
    let ports = match map.get("port") {
        None => None,
        Some(p) if p.is_int() => {
            let n = p.as_int().unwrap_or(0);
            match u16::try_from(n).ok().filter(|n| *n > 0) {
                Some(n) => Some((n, n)),
                None => {
                    return bad(
                        ctx,
                        shared,
                        format!("{n} is not a port"),
                        Some("ports are 1 to 65535".into()),
                    );
                }
            }
        }
        Some(p) => {
            match p.clone().into_string().map_err(|_| ()).and_then(|s| parse_ports(&s).map_err(|_| ())) {
                Ok(r) => r,
                Err(()) => {
                    return bad(
                        ctx,
                        shared,
                        format!("port `{p}` is not a port, a range like \"8000-8100\", or \"*\""),
                        None,
                    );
                }
            }
        }
    };
    if proto == RuleProto::Icmp && ports.is_some() {
        return bad(ctx, shared, "icmp has no ports".into(), Some("leave `port` out, or use \"*\"".into()));
    }
    let allow = match text("action") {
        Some(Ok(a)) if a == "allow" => true,
        Some(Ok(a)) if a == "deny" => false,
        Some(Ok(a)) => {
            let hint = suggest(&a, ["allow", "deny"].into_iter()).map(|b| format!("did you mean `{b}`?"));
            return bad(
                ctx,
                shared,
                format!("`{a}` is not an action"),
                hint.or(Some("use allow or deny".into())),
            );
        }
        Some(Err(t)) => return bad(ctx, shared, format!("action must be a string, not {t}"), None),
        None => {
            return bad(
                ctx,
                shared,
                "a rule needs an action".into(),
                Some("add action: \"allow\" or \"deny\"".into()),
            );
        }
    };
    let call = span(shared, ctx);
    let peers = match map.get(peer_key) {
        None => Vec::new(),
        Some(v) => peers(ctx, shared, v, call)?,
    };
    Ok(RuleDecl { proto, ports, peers, allow })
}

fn policy(ctx: &NativeCallContext, shared: &mut Shared, map: &Map) -> Res<PolicyDecl> {
    let mut out = PolicyDecl::default();
    for (key, value) in map {
        let ingress = match key.as_str() {
            "ingress" => true,
            "egress" => false,
            other => return unknown_key(ctx, shared, other, "policy", &["ingress", "egress"]),
        };
        let Some(list) = value.clone().try_cast::<Array>() else {
            return bad(ctx, shared, format!("`{key}` is a list of rules, not {}", value.type_name()), None);
        };
        for item in &list {
            let r = rule(ctx, shared, item, ingress)?;
            if ingress { out.ingress.push(r) } else { out.egress.push(r) }
        }
    }
    Ok(out)
}

fn declare(ctx: &NativeCallContext, sh: &SharedRef, target: &Dynamic, map: &Map) -> Res<()> {
    let mut shared = sh.borrow_mut();
    let target = if let Some(h) = target.clone().try_cast::<HostHandle>() {
        FirewallTarget::Host(h.0)
    } else if let Some(s) = target.clone().try_cast::<SubnetHandle>() {
        FirewallTarget::Subnet(s.0)
    } else {
        let message = format!("a firewall protects a Host or a Subnet, not {}", target.type_name());
        return bad(ctx, &shared, message, None);
    };
    let subnet = match target {
        FirewallTarget::Host(h) => shared.decls.host_subnet(h),
        FirewallTarget::Subnet(s) => s,
    };
    live_vpc(ctx, &shared, shared.decls.subnet(subnet).vpc)?;
    let policy = policy(ctx, &mut shared, map)?;
    shared.decls.firewalls.push(FirewallDecl { target, policy });
    Ok(())
}

/// The seed tool's JSON policy: unknown fields are errors with their line and column.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SeedPolicy {
    #[serde(default)]
    subnet: Option<String>,
    #[serde(default)]
    ingress: Vec<SeedRule>,
    #[serde(default)]
    egress: Vec<SeedRule>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SeedRule {
    #[serde(default, deserialize_with = "seed_port")]
    port: Option<String>,
    #[serde(default)]
    protocol: Option<SeedProto>,
    action: SeedAction,
    #[serde(default)]
    source: Option<String>,
    #[serde(default)]
    destination: Option<String>,
}

#[derive(Deserialize, Clone, Copy)]
#[serde(rename_all = "lowercase")]
enum SeedProto {
    Tcp,
    Udp,
    Icmp,
    Any,
}

#[derive(Deserialize, Clone, Copy)]
#[serde(rename_all = "lowercase")]
enum SeedAction {
    Allow,
    Deny,
}

/// A port as a number or a string ("*", "8000-8100"), checked where it stands in the file.
fn seed_port<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
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
    parse_ports(&text).map_err(serde::de::Error::custom)?;
    Ok(Some(text))
}

/// Parses a seed-format policy into the script's policy map.
pub(crate) fn seed_to_map(json: &str) -> Result<Map, serde_json::Error> {
    let seed: SeedPolicy = serde_json::from_str(json)?;
    let convert = |rules: &[SeedRule], peer_key: &str, ingress: bool| -> Array {
        rules
            .iter()
            .map(|r| {
                let mut m = Map::new();
                let proto = match r.protocol {
                    Some(SeedProto::Tcp) => "tcp",
                    Some(SeedProto::Udp) => "udp",
                    Some(SeedProto::Icmp) => "icmp",
                    Some(SeedProto::Any) => "any",
                    // The seed tool's rules without a protocol were tcp.
                    None if r.port.is_some() => "tcp",
                    None => "any",
                };
                m.insert("proto".into(), Dynamic::from(proto.to_string()));
                if let Some(port) = &r.port {
                    m.insert("port".into(), Dynamic::from(port.clone()));
                }
                let action = match r.action {
                    SeedAction::Allow => "allow",
                    SeedAction::Deny => "deny",
                };
                m.insert("action".into(), Dynamic::from(action.to_string()));
                let peer = if ingress { &r.source } else { &r.destination };
                if let Some(p) = peer {
                    m.insert(peer_key.into(), Dynamic::from(p.clone()));
                }
                Dynamic::from_map(m)
            })
            .collect()
    };
    let mut map = Map::new();
    map.insert("ingress".into(), Dynamic::from_array(convert(&seed.ingress, "from", true)));
    if !seed.egress.is_empty() {
        map.insert("egress".into(), Dynamic::from_array(convert(&seed.egress, "to", false)));
    }
    Ok(map)
}

/// A seed policy read for `vpcsh policy apply`: the subnet CIDR it names, and its rules.
pub(crate) struct SeedFirewall {
    pub subnet: Option<String>,
    pub ingress: Vec<FirewallRule>,
    pub egress: Vec<FirewallRule>,
}

pub(crate) fn seed_firewall(json: &str) -> Result<SeedFirewall, String> {
    let seed: SeedPolicy = serde_json::from_str(json).map_err(|e| e.to_string())?;
    let convert = |rules: &[SeedRule], ingress: bool| -> Result<Vec<FirewallRule>, String> {
        rules
            .iter()
            .map(|r| {
                let proto = match r.protocol {
                    Some(SeedProto::Tcp) => RuleProto::Tcp,
                    Some(SeedProto::Udp) => RuleProto::Udp,
                    Some(SeedProto::Icmp) => RuleProto::Icmp,
                    Some(SeedProto::Any) => RuleProto::Any,
                    None if r.port.is_some() => RuleProto::Tcp,
                    None => RuleProto::Any,
                };
                let ports = r.port.as_deref().map(parse_ports).transpose()?.flatten();
                let peer = if ingress { &r.source } else { &r.destination };
                let nets = peer
                    .iter()
                    .map(|p| p.parse::<ipnetwork::Ipv4Network>().map_err(|_| format!("`{p}` is not a CIDR")))
                    .collect::<Result<Vec<_>, _>>()?;
                Ok(FirewallRule { proto, ports, nets, allow: matches!(r.action, SeedAction::Allow) })
            })
            .collect()
    };
    Ok(SeedFirewall {
        subnet: seed.subnet,
        ingress: convert(&seed.ingress, true)?,
        egress: convert(&seed.egress, false)?,
    })
}

fn policy_file(ctx: &NativeCallContext, sh: &SharedRef, path: &str) -> Res<Map> {
    let mut shared = sh.borrow_mut();
    let script = ctx.call_source().map(Path::new).and_then(Path::parent).unwrap_or(Path::new("."));
    let full = if Path::new(path).is_absolute() { Path::new(path).to_path_buf() } else { script.join(path) };
    let text = match std::fs::read_to_string(&full) {
        Ok(t) => t,
        Err(e) => {
            let fault = Fault::new(
                format!("cannot read policy file {}: {e}", full.display()),
                span(&shared, ctx),
                "here",
            );
            return fail(ctx, fault.help("the path is relative to the script"));
        }
    };
    match seed_to_map(&text) {
        Ok(map) => Ok(map),
        Err(e) => {
            let call = span(&shared, ctx);
            shared.sources.push(Source { name: full.display().to_string(), text: text.clone() });
            let id = shared.sources.len() as u32 - 1;
            let (at, len) = json_token_before(&text, super::span::offset(&text, e.line(), e.column().max(1)));
            let message = e.to_string().split(" at line").next().unwrap_or_default().to_string();
            let mut fault =
                Fault::new(format!("policy file: {message}"), Span { source: id, start: at, len }, "here");
            fault.chain.push(("policy_file".into(), call));
            fault.help = Some(
                "seed policies have `subnet`, and `ingress`/`egress` rules with `port`, `protocol`, `action` \
                 (allow/deny), `source` or `destination`"
                    .into(),
            );
            fail(ctx, fault)
        }
    }
}

/// serde_json reports the position just after the offending token: the span of that token.
fn json_token_before(text: &str, at: usize) -> (usize, usize) {
    let bytes = text.as_bytes();
    let mut end = at.min(bytes.len());
    while end > 0 && matches!(bytes[end - 1], b' ' | b'\n' | b'\r' | b'\t' | b',' | b':' | b'}' | b']') {
        end -= 1;
    }
    let mut start = end;
    if start > 0 && bytes[start - 1] == b'"' {
        start -= 1;
        while start > 0 && bytes[start - 1] != b'"' {
            start -= 1;
        }
        start = start.saturating_sub(1);
    } else {
        while start > 0 && (bytes[start - 1].is_ascii_alphanumeric() || bytes[start - 1] == b'-') {
            start -= 1;
        }
    }
    if start == end { (at.min(text.len()), usize::from(at < text.len())) } else { (start, end - start) }
}

pub(super) fn register(engine: &mut Engine, shared: &SharedRef) {
    let sh = shared.clone();
    engine.register_fn("firewall", move |ctx: NativeCallContext, target: Dynamic, policy: Map| {
        declare(&ctx, &sh, &target, &policy)
    });
    let sh = shared.clone();
    engine.register_fn("policy_file", move |ctx: NativeCallContext, path: &str| policy_file(&ctx, &sh, path));
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
    fn the_seed_format_becomes_a_policy_map() {
        let map = seed_to_map(
            r#"{"subnet": "10.0.1.0/24",
                "ingress": [{"port": 80, "protocol": "tcp", "action": "allow"},
                            {"port": "*", "action": "deny", "source": "10.0.2.0/24"}],
                "egress": [{"port": 53, "protocol": "udp", "action": "allow", "destination": "10.0.0.2/32"}]}"#,
        )
        .unwrap();
        let ingress = map["ingress"].clone().into_array().unwrap();
        assert_eq!(ingress.len(), 2);
        let second = ingress[1].clone().try_cast::<Map>().unwrap();
        assert_eq!(second["from"].clone().into_string().unwrap(), "10.0.2.0/24");
        assert!(map.contains_key("egress"));
    }

    #[test]
    fn seed_mistakes_say_where() {
        let err =
            seed_to_map("{\n  \"ingress\": [{\"port\": 80, \"protocl\": \"tcp\", \"action\": \"allow\"}]\n}")
                .unwrap_err();
        assert_eq!(err.line(), 2);
        assert!(err.to_string().contains("unknown field `protocl`"), "{err}");
        let err = seed_to_map("{\"ingress\": [{\"port\": 70000, \"action\": \"allow\"}]}").unwrap_err();
        assert!(err.to_string().contains("70000"), "{err}");
        let err = seed_to_map("{\"ingress\": [{\"port\": 80, \"action\": \"alow\"}]}").unwrap_err();
        assert!(err.to_string().contains("unknown variant `alow`"), "{err}");
    }
}
