//! `explain(from, to, port[, proto])`: what the model says about a flow, without packets.

use std::net::IpAddr;

use rhai::plugin::*;
use rhai::{Array, Dynamic, Map, NativeCallContext};

use super::context::{Res, Shared, fail, shared, span};
use super::effects::Endpoint;
use super::errors::Fault;
use super::probes::endpoint;
use super::span::location;
use crate::model::reach::{self, Context, Flow, Place};
use crate::model::{FirewallTarget, Network, Protected, RuleProto, validate};

/// A flow's end as the evaluator takes it: an address that a host has is that host.
fn place(network: &Network, (endpoint, ip): (Endpoint, IpAddr)) -> Place {
    match endpoint {
        Endpoint::Host { vpc, host } => Place::Host { vpc, host },
        Endpoint::Internet => Place::at(network, ip),
    }
}

fn explain(ctx: &NativeCallContext, from: &Dynamic, to: &Dynamic, port: i64, proto: &str) -> Res<Map> {
    let sh = shared(ctx);
    let shared = sh.borrow();
    let proto = match proto {
        "tcp" => RuleProto::Tcp,
        "udp" => RuleProto::Udp,
        "icmp" => RuleProto::Icmp,
        other => {
            let fault = Fault::new(
                format!("`{other}` is not a protocol explain() knows"),
                span(&shared, ctx),
                "protocol",
            )
            .help("use \"tcp\" (the default), \"udp\" or \"icmp\" (with port 0 for a ping)");
            return fail(ctx, fault);
        }
    };
    let Some(port) = u16::try_from(port).ok().filter(|p| *p > 0 || proto == RuleProto::Icmp) else {
        return fail(ctx, Fault::new(format!("{port} is not a port"), span(&shared, ctx), "out of range"));
    };
    // An address written as IPv6 asks about IPv6; handles mean IPv4.
    let v6 = |v: &Dynamic| v.clone().into_string().is_ok_and(|t| t.contains(':'));
    let ipv6 = v6(from) || v6(to);
    let family = if ipv6 { 6 } else { 4 };
    let (from, to) =
        (endpoint(ctx, &shared, from, "source", family)?, endpoint(ctx, &shared, to, "target", family)?);
    let Ok(network) = validate(&shared.decls) else {
        let fault = Fault::new(
            "explain() needs a valid topology: the declarations so far have problems",
            span(&shared, ctx),
            "here",
        )
        .help("`vpcsh check` lists them");
        return fail(ctx, fault);
    };
    let flow = Flow { from: place(&network, from), to: place(&network, to), proto, port, ipv6 };
    let context = Context { ipv6_internet: shared.effects.sandboxed(), ..Context::default() };
    let mut verdict = reach::explain(&network, &flow, &context);
    if let (Some(why), Some(at)) =
        (&mut verdict.blocked_by, verdict.policy.as_ref().and_then(|p| declared_at(&shared, p)))
    {
        why.push_str(&format!(" — firewall() at {at}"));
    }
    Ok(verdict_map(verdict))
}

/// Where the policy in force on a target was declared (the latest `firewall()` call wins).
fn declared_at(shared: &Shared, (vpc, protects): &(String, Protected)) -> Option<String> {
    let decls = &shared.decls;
    let declared = decls.firewalls.iter().rev().find(|f| {
        let (subnet, name) = match f.target {
            FirewallTarget::Host(h) => {
                (decls.host_subnet(h), Protected::Host(decls.host_name(h).to_string()))
            }
            FirewallTarget::Subnet(s) => (s, Protected::Subnet(decls.subnet(s).name.clone())),
        };
        decls.vpc(decls.subnet(subnet).vpc).name == *vpc && name == *protects
    })?;
    location(&shared.sources, declared.span)
}

fn verdict_map(v: reach::Verdict) -> Map {
    let mut m = Map::new();
    m.insert("reachable".into(), Dynamic::from(v.reachable));
    m.insert("path".into(), Dynamic::from(v.path.into_iter().map(Dynamic::from).collect::<Array>()));
    m.insert("blocked_by".into(), Dynamic::from(v.blocked_by.unwrap_or_default()));
    m
}

/// `explain` for the reference: its `///` comments are the documentation.
// Rhai exports a plugin module\'s `pub` functions only.
#[allow(unreachable_pub)]
#[export_module]
mod api {
    use super::*;

    /// What the model says about a flow, without sending a packet: `#{ reachable, path,
    /// blocked_by }` — the hops in order and, when blocked, the one thing that blocks it
    /// (a firewall rule, a missing or allow-listed peering, a private subnet without nat(),
    /// an unpublished port). `from`/`to`: hosts, subnets, addresses or internet(); an IPv6
    /// address asks about IPv6. TCP unless `proto` is "udp" or "icmp" (port 0: a ping).
    #[rhai_fn(return_raw)]
    pub fn explain(ctx: NativeCallContext, from: Dynamic, to: Dynamic, port: i64) -> Res<Map> {
        super::explain(&ctx, &from, &to, port, "tcp")
    }
    #[rhai_fn(name = "explain", return_raw)]
    pub fn explain_proto(
        ctx: NativeCallContext,
        from: Dynamic,
        to: Dynamic,
        port: i64,
        proto: &str,
    ) -> Res<Map> {
        super::explain(&ctx, &from, &to, port, proto)
    }
}

pub(super) fn register(engine: &mut rhai::Engine) {
    engine.register_global_module(exported_module!(api).into());
}
