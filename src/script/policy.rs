//! Firewall policies: `firewall(target, policy)` with a policy map, and `policy_file(path)`
//! reading the original tool's JSON format into such a map. Mistakes point at the call, and
//! for a policy file also at the line and column in the JSON.

use std::path::Path;

use rhai::plugin::*;
use rhai::{Array, Dynamic, Map, NativeCallContext};

use super::context::{Res, Shared, any_cidr, fail, live_vpc, shared, span};
use super::errors::{Fault, suggest};
use super::handles::{HostHandle, SubnetHandle, VpcHandle};
use super::span::{Source, offset};
use crate::model::policy::{SeedPolicy, SeedRule, parse_ports, read_seeds};
use crate::model::{FirewallDecl, FirewallTarget, PeerRef, PolicyDecl, RuleDecl, RuleProto, Span, SubnetId};

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
            let text = match text.parse::<std::net::IpAddr>() {
                Ok(ip) if ip.is_ipv4() => format!("{text}/32"),
                Ok(_) => format!("{text}/128"),
                Err(_) => text,
            };
            out.push(PeerRef::Cidr(any_cidr(&mut shared.decls, &text, span)));
        } else {
            let message =
                format!("a rule's peer is a CIDR, a Vpc, a Subnet or a Host, not {}", item.type_name());
            return bad(ctx, shared, message, None);
        }
    }
    Ok(out)
}

/// The keys of one rule map are known, and `from`/`to` fit its direction.
fn check_rule_keys(ctx: &NativeCallContext, shared: &Shared, map: &Map, ingress: bool) -> Res<()> {
    let allowed = ["proto", "port", if ingress { "from" } else { "to" }, "action"];
    let Some(key) = map.keys().find(|k| !allowed.contains(&k.as_str())) else { return Ok(()) };
    if key.as_str() == "from" || key.as_str() == "to" {
        let other = if ingress { "ingress rules use `from`" } else { "egress rules use `to`" };
        return bad(ctx, shared, format!("`{key}` does not fit this rule: {other}"), None);
    }
    unknown_key(ctx, shared, key, "rule", &allowed)
}

fn text_field<'a>(map: &'a Map, key: &str) -> Option<Result<String, &'a str>> {
    map.get(key).map(|v| v.clone().into_string().map_err(|_| v.type_name()))
}

fn rule_proto(ctx: &NativeCallContext, shared: &Shared, map: &Map) -> Res<RuleProto> {
    match text_field(map, "proto") {
        None => Ok(RuleProto::Any),
        Some(Ok(p)) => match p.as_str() {
            "tcp" => Ok(RuleProto::Tcp),
            "udp" => Ok(RuleProto::Udp),
            "icmp" => Ok(RuleProto::Icmp),
            "any" => Ok(RuleProto::Any),
            other => bad(
                ctx,
                shared,
                format!("`{other}` is not a protocol"),
                Some("use tcp, udp, icmp or any".into()),
            ),
        },
        Some(Err(t)) => bad(ctx, shared, format!("proto must be a string, not {t}"), None),
    }
}

fn rule_ports(ctx: &NativeCallContext, shared: &Shared, map: &Map) -> Res<Option<(u16, u16)>> {
    let Some(p) = map.get("port") else { return Ok(None) };
    if let Ok(n) = p.as_int() {
        return match u16::try_from(n).ok().filter(|n| *n > 0) {
            Some(n) => Ok(Some((n, n))),
            None => bad(ctx, shared, format!("{n} is not a port"), Some("ports are 1 to 65535".into())),
        };
    }
    match p.clone().into_string().ok().map(|s| parse_ports(&s)) {
        Some(Ok(range)) => Ok(range),
        _ => {
            bad(ctx, shared, format!("port `{p}` is not a port, a range like \"8000-8100\", or \"*\""), None)
        }
    }
}

fn rule_action(ctx: &NativeCallContext, shared: &Shared, map: &Map) -> Res<bool> {
    match text_field(map, "action") {
        Some(Ok(a)) if a == "allow" => Ok(true),
        Some(Ok(a)) if a == "deny" => Ok(false),
        Some(Ok(a)) => {
            let hint = suggest(&a, ["allow", "deny"].into_iter()).map(|b| format!("did you mean `{b}`?"));
            bad(ctx, shared, format!("`{a}` is not an action"), hint.or(Some("use allow or deny".into())))
        }
        Some(Err(t)) => bad(ctx, shared, format!("action must be a string, not {t}"), None),
        None => bad(
            ctx,
            shared,
            "a rule needs an action".into(),
            Some("add action: \"allow\" or \"deny\"".into()),
        ),
    }
}

fn rule(ctx: &NativeCallContext, shared: &mut Shared, v: &Dynamic, ingress: bool) -> Res<RuleDecl> {
    let Some(map) = v.clone().try_cast::<Map>() else {
        let message = format!(
            "a rule is a map like #{{ proto: \"tcp\", port: 80, action: \"allow\" }}, not {}",
            v.type_name()
        );
        return bad(ctx, shared, message, None);
    };
    check_rule_keys(ctx, shared, &map, ingress)?;
    let proto = rule_proto(ctx, shared, &map)?;
    let ports = rule_ports(ctx, shared, &map)?;
    if proto == RuleProto::Icmp && ports.is_some() {
        return bad(ctx, shared, "icmp has no ports".into(), Some("leave `port` out, or use \"*\"".into()));
    }
    let allow = rule_action(ctx, shared, &map)?;
    let call = span(shared, ctx);
    let peers = match map.get(if ingress { "from" } else { "to" }) {
        None => Vec::new(),
        Some(v) => peers(ctx, shared, v, call)?,
    };
    Ok(RuleDecl { proto, ports, peers, allow })
}

/// The policy a map holds for a subnet: its own rules, checked against the subnet it names,
/// or from a list of policies (`policy_file` of a list) the one for this subnet.
fn policy(ctx: &NativeCallContext, shared: &mut Shared, map: &Map, subnet: SubnetId) -> Res<PolicyDecl> {
    if let Some(list) = map.get("policies") {
        let chosen = choose(ctx, shared, list, subnet)?;
        return policy(ctx, shared, &chosen, subnet);
    }
    let mut out = PolicyDecl::default();
    for (key, value) in map {
        let ingress = match key.as_str() {
            "ingress" => true,
            "egress" => false,
            "subnet" => {
                check_subnet(ctx, shared, value, subnet)?;
                continue;
            }
            other => return unknown_key(ctx, shared, other, "policy", &["ingress", "egress", "subnet"]),
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

/// The CIDR a policy names as its subnet, as a network.
fn named_subnet(value: &Dynamic) -> Option<ipnetwork::Ipv4Network> {
    value.clone().into_string().ok()?.parse().ok()
}

/// A policy that names a subnet is for that subnet only.
fn check_subnet(ctx: &NativeCallContext, shared: &Shared, value: &Dynamic, subnet: SubnetId) -> Res<()> {
    let target = shared.decls.subnet(subnet);
    if target.cidr.net.is_some() && named_subnet(value) != target.cidr.net {
        let message =
            format!("this policy is for subnet {value}, but `{}` is {}", target.name, target.cidr.text);
        return bad(
            ctx,
            shared,
            message,
            Some("attach it to the subnet it names, or fix its \"subnet\"".into()),
        );
    }
    Ok(())
}

/// From a list of policies, the one whose subnet is `subnet`'s CIDR.
fn choose(ctx: &NativeCallContext, shared: &Shared, list: &Dynamic, subnet: SubnetId) -> Res<Map> {
    let target = shared.decls.subnet(subnet);
    let maps: Vec<Map> =
        list.clone().into_array().unwrap_or_default().into_iter().filter_map(|m| m.try_cast()).collect();
    let named: Vec<String> = maps.iter().filter_map(|m| Some(m.get("subnet")?.to_string())).collect();
    let mut fitting = maps.into_iter().filter(|m| m.get("subnet").and_then(named_subnet) == target.cidr.net);
    match (fitting.next(), fitting.next()) {
        (Some(one), None) => Ok(one),
        (None, _) => bad(
            ctx,
            shared,
            format!("none of these policies is for `{}` ({})", target.name, target.cidr.text),
            Some(format!("the file has policies for: {}", named.join(", "))),
        ),
        (Some(_), Some(_)) => {
            bad(ctx, shared, format!("several of these policies are for {}", target.cidr.text), None)
        }
    }
}

fn declare(ctx: &NativeCallContext, target: &Dynamic, map: &Map) -> Res<()> {
    let sh = shared(ctx);
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
    let policy = policy(ctx, &mut shared, map, subnet)?;
    let span = span(&shared, ctx);
    let at = super::span::location(&shared.sources, span);
    shared.decls.firewalls.push(FirewallDecl { target, policy, span, at });
    Ok(())
}

/// A seed policy as the policy map `firewall()` takes.
fn seed_to_map(seed: &SeedPolicy) -> Map {
    let convert = |rules: &[SeedRule], peer_key: &str| -> Array {
        rules
            .iter()
            .map(|r| {
                let mut m = Map::new();
                let proto = match r.proto {
                    RuleProto::Tcp => "tcp",
                    RuleProto::Udp => "udp",
                    RuleProto::Icmp => "icmp",
                    RuleProto::Any => "any",
                };
                m.insert("proto".into(), Dynamic::from(proto.to_string()));
                if let Some((lo, hi)) = r.ports {
                    m.insert("port".into(), Dynamic::from(format!("{lo}-{hi}")));
                }
                m.insert("action".into(), Dynamic::from(if r.allow { "allow" } else { "deny" }.to_string()));
                if let Some(p) = r.peer {
                    m.insert(peer_key.into(), Dynamic::from(p.to_string()));
                }
                Dynamic::from_map(m)
            })
            .collect()
    };
    let mut map = Map::new();
    if let Some(subnet) = seed.subnet {
        map.insert("subnet".into(), Dynamic::from(subnet.to_string()));
    }
    map.insert("ingress".into(), Dynamic::from_array(convert(&seed.ingress, "from")));
    if !seed.egress.is_empty() {
        map.insert("egress".into(), Dynamic::from_array(convert(&seed.egress, "to")));
    }
    map
}

fn policy_file(ctx: &NativeCallContext, path: &str) -> Res<Map> {
    let sh = shared(ctx);
    let mut shared = sh.borrow_mut();
    let script = ctx.call_source().map(Path::new).and_then(Path::parent).unwrap_or(Path::new("."));
    let full = if Path::new(path).is_absolute() { Path::new(path).to_path_buf() } else { script.join(path) };
    let text = match std::fs::read_to_string(&full) {
        Ok(t) => t,
        Err(e) => {
            let message = format!("cannot read policy file {}: {e}", full.display());
            let fault = Fault::new(message, span(&shared, ctx), "here");
            return fail(ctx, fault.help("the path is relative to the script"));
        }
    };
    let e = match read_seeds(&text) {
        Ok(seeds) if seeds.len() == 1 => return Ok(seed_to_map(&seeds[0])),
        Ok(seeds) => {
            let all: Array = seeds.iter().map(|s| Dynamic::from_map(seed_to_map(s))).collect();
            return Ok(Map::from([("policies".into(), Dynamic::from_array(all))]));
        }
        Err(e) => e,
    };
    let call = span(&shared, ctx);
    shared.sources.push(Source::new(full.display().to_string(), text.clone()));
    let id = shared.sources.len() as u32 - 1;
    let (at, len) = json_token_before(&text, offset(&text, e.line(), e.column().max(1)));
    let message = e.to_string().split(" at line").next().unwrap_or_default().to_string();
    let mut fault =
        Fault::new(format!("policy file: {message}"), Span { source: id, start: at, len }, "here");
    fault.chain.push(("policy_file".into(), call));
    fault.help = Some(
        "policy files have `subnet`, and `ingress`/`egress` rules with `port`, `protocol`, `action` \
         (allow/deny), `source` or `destination`"
            .into(),
    );
    fail(ctx, fault)
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

/// The firewall functions of the script API. Their `///` comments are the reference.
// Rhai exports a plugin module\'s `pub` functions only.
#[allow(unreachable_pub)]
#[export_module]
mod api {
    use super::*;

    /// A stateful policy on a Host or a Subnet (all its hosts):
    /// `#{ ingress: [rule, ...], egress: [rule, ...] }`, a rule being
    /// `#{ proto, port, from (ingress) or to (egress), action: "allow"|"deny" }`.
    /// The first matching rule wins; ingress no rule allows is dropped.
    #[rhai_fn(return_raw)]
    pub fn firewall(ctx: NativeCallContext, target: Dynamic, policy: Map) -> Res<()> {
        declare(&ctx, &target, &policy)
    }

    /// Reads a policy in the original tool's JSON format (path relative to the script) into
    /// the policy map `firewall()` takes. A file may hold a list of policies: `firewall()`
    /// then takes the one whose `"subnet"` is its target's; a policy that names another
    /// subnet than its target's is a diagnostic.
    #[rhai_fn(return_raw)]
    pub fn policy_file(ctx: NativeCallContext, path: &str) -> Res<Map> {
        super::policy_file(&ctx, path)
    }
}

pub(super) fn register(engine: &mut rhai::Engine) {
    engine.register_global_module(exported_module!(api).into());
}
