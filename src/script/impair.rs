//! Impaired links: `impair(target, #{ delay, jitter, loss, rate, duplicate, reorder })` on
//! a host, a subnet or a peering, checked here so that a bad value points at its call.

use rhai::plugin::*;
use rhai::{Dynamic, Map, NativeCallContext};

use super::context::{Res, Shared, check_options, fail_here, live_vpc, shared, span};
use super::handles::{HostHandle, PeeringHandle, SubnetHandle};
use crate::model::impair::{self, Impairment};
use crate::model::{ImpairDecl, ImpairTarget};

/// Reads an impairment map, failing at the call on the first bad key or value.
pub(super) fn impairment(ctx: &NativeCallContext, shared: &Shared, opts: &Map) -> Res<Impairment> {
    check_options(ctx, shared, "impair", opts, impair::KEYS)?;
    let bad = |key: &str, why: String| fail_here(ctx, shared, format!("`{key}`: {why}"), "bad impairment");
    let text = |v: &Dynamic| {
        if v.is_string() {
            Some(v.clone().into_string().unwrap_or_default())
        } else if v.is_int() || v.is_float() {
            Some(v.to_string())
        } else {
            None
        }
    };
    let number = |v: &Dynamic| v.as_float().ok().or_else(|| v.as_int().ok().map(|i| i as f64));
    let duration = |v: &Dynamic| match text(v) {
        Some(t) => impair::parse_duration(&t),
        None => Err(format!("a duration such as \"20ms\", not {}", v.type_name())),
    };
    let rate = |v: &Dynamic| match v.clone().into_string() {
        Ok(t) => impair::parse_rate(&t),
        Err(_) => Err(format!("a rate such as \"10mbit\", not {}", v.type_name())),
    };
    let percent = |v: &Dynamic| match number(v) {
        Some(n) => impair::parse_percent(n),
        None => Err(format!("a percentage such as 1.5, not {}", v.type_name())),
    };
    let mut out = Impairment::default();
    for (key, value) in opts {
        let key = key.as_str();
        let parsed = match key {
            "delay" => duration(value).map(|us| out.delay_us = us),
            "jitter" => duration(value).map(|us| out.jitter_us = us),
            "rate" => rate(value).map(|bps| out.rate_bps = bps),
            "loss" => percent(value).map(|m| out.loss_milli = m),
            "duplicate" => percent(value).map(|m| out.duplicate_milli = m),
            _ => percent(value).map(|m| out.reorder_milli = m),
        };
        if let Err(why) = parsed {
            return bad(key, why);
        }
    }
    if out.delay_us == 0 && (out.jitter_us > 0 || out.reorder_milli > 0) {
        let what = if out.jitter_us > 0 { "jitter" } else { "reorder" };
        return bad(what, format!("{what} varies a delay: give a `delay` too"));
    }
    Ok(out)
}

// Rhai exports a plugin module's `pub` functions only.
#[allow(unreachable_pub)]
#[export_module]
mod api {
    use super::*;

    /// Impairs a link in each direction, as netem does: a Host's link, every host link of
    /// a Subnet, or a peering (`impair(peer(a, b), ...)`). `#{ delay: "20ms", jitter: "5ms",
    /// loss: 1.5, rate: "10mbit", duplicate: 0.1, reorder: 2 }` (percentages for loss,
    /// duplicate and reorder; jitter and reorder need a delay). A round trip over one
    /// impaired link takes twice its delay. The latest call for a target wins; a host's own
    /// over its subnet's.
    #[rhai_fn(return_raw)]
    pub fn impair(ctx: NativeCallContext, target: Dynamic, opts: Map) -> Res<()> {
        let sh = shared(&ctx);
        let mut shared = sh.borrow_mut();
        let target = if let Some(h) = target.clone().try_cast::<HostHandle>() {
            ImpairTarget::Host(h.0)
        } else if let Some(s) = target.clone().try_cast::<SubnetHandle>() {
            ImpairTarget::Subnet(s.0)
        } else if let Some(p) = target.clone().try_cast::<PeeringHandle>() {
            ImpairTarget::Peering(p.a, p.b)
        } else {
            let got = ctx.engine().map_type_name(target.type_name()).to_string();
            let message = format!("impair() takes a Host, a Subnet or a peering, not {got}");
            return fail_here(&ctx, &shared, message, "not a link");
        };
        let vpcs = match target {
            ImpairTarget::Host(h) => [shared.decls.subnet(shared.decls.host_subnet(h)).vpc; 2],
            ImpairTarget::Subnet(s) => [shared.decls.subnet(s).vpc; 2],
            ImpairTarget::Peering(a, b) => [a, b],
        };
        for vpc in vpcs {
            live_vpc(&ctx, &shared, vpc)?;
        }
        let impairment = impairment(&ctx, &shared, &opts)?;
        let span = span(&shared, &ctx);
        shared.decls.impairs.push(ImpairDecl { target, impairment, span });
        Ok(())
    }
}

pub(super) fn register(engine: &mut rhai::Engine) {
    engine.register_global_module(exported_module!(api).into());
}
