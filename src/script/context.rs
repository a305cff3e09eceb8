//! What every binding needs: the interpreter's shared declarations (the engine's tag, so
//! plugin functions reach them without capturing), the span of the call being made, and
//! failing that call with a diagnostic.

use std::cell::RefCell;
use std::collections::HashMap;
use std::net::Ipv4Addr;
use std::rc::Rc;

use ipnetwork::{IpNetwork, Ipv4Network, Ipv6Network};
use rhai::{Dynamic, EvalAltResult, Map, NativeCallContext};

use super::effects::{EffectError, Effects};
use super::errors::{Fault, ScriptError, from_effect, suggest};
use super::span::{Source, span_at};
use crate::model::{AnyCidr, Cidr, Cidr6, Declarations, Network, Problem, Span, VpcId};
use crate::plan::Summary;

/// The state every binding of one interpreter shares.
pub(crate) struct Shared {
    pub decls: Declarations,
    pub sources: Vec<Source>,
    pub effects: Box<dyn Effects>,
    /// The host addresses of the network last applied, by VPC, subnet and host name, so
    /// automatic addresses stay where they were.
    previous_ips: HashMap<(String, String, String), Ipv4Addr>,
    /// The IPv6 /64 of each subnet last applied, by VPC and subnet name, for the same reason.
    previous_cidr6s: HashMap<(String, String), Ipv6Network>,
    /// Whether the run did more than declare: applied, probed, ran a command or asserted.
    /// A batch run whose held-back pass did none of that need not run the script again.
    pub acted: bool,
}

impl Shared {
    pub(super) fn new(effects: Box<dyn Effects>, previous: Network) -> Self {
        let previous_ips = previous
            .hosts()
            .map(|(v, s, h)| ((v.name.clone(), s.name.clone(), h.name.clone()), h.ip))
            .collect();
        let previous_cidr6s = previous
            .vpcs
            .iter()
            .flat_map(|v| v.subnets.iter().filter_map(|s| Some(((v.name.clone(), s.name.clone()), s.cidr6?))))
            .collect();
        Self {
            decls: Declarations::default(),
            sources: Vec::new(),
            effects,
            previous_ips,
            previous_cidr6s,
            acted: false,
        }
    }

    /// The IPv6 /64 a subnet had when last applied.
    pub(super) fn previous_cidr6(&self, vpc: &str, subnet: &str) -> Option<Ipv6Network> {
        self.previous_cidr6s.get(&(vpc.to_string(), subnet.to_string())).copied()
    }

    /// The address a host had when last applied.
    pub(super) fn previous_ip(&self, vpc: &str, subnet: &str, host: &str) -> Option<Ipv4Addr> {
        self.previous_ips.get(&(vpc.to_string(), subnet.to_string(), host.to_string())).copied()
    }
}

pub(super) type SharedRef = Rc<RefCell<Shared>>;
pub(super) type Res<T> = Result<T, Box<EvalAltResult>>;

/// The shared state of the interpreter making this call.
pub(super) fn shared(ctx: &NativeCallContext) -> SharedRef {
    ctx.tag()
        .and_then(|tag| tag.clone().try_cast::<SharedRef>())
        .expect("the interpreter puts its shared state in the engine's tag")
}

/// The span of the call being made.
pub(super) fn span(shared: &Shared, ctx: &NativeCallContext) -> Span {
    span_at(&shared.sources, ctx.call_source(), ctx.call_position())
}

pub(super) fn fail<T>(ctx: &NativeCallContext, err: impl Into<ScriptError>) -> Res<T> {
    Err(Box::new(EvalAltResult::ErrorRuntime(Dynamic::from(err.into()), ctx.call_position())))
}

/// Fails the call with `message`, underlining it.
pub(super) fn fail_here<T>(ctx: &NativeCallContext, shared: &Shared, message: String, label: &str) -> Res<T> {
    fail(ctx, Fault::new(message, span(shared, ctx), label))
}

/// Parses `a.b.c.d/n`, rejecting host bits.
fn parse_cidr(text: &str) -> Result<Ipv4Network, (String, Option<String>)> {
    let Some((addr, prefix)) = text.split_once('/') else {
        return Err((
            format!("`{text}` is not a CIDR"),
            Some("write it as address/prefix, e.g. 10.0.0.0/16".into()),
        ));
    };
    let net = addr
        .parse::<Ipv4Addr>()
        .ok()
        .zip(prefix.parse::<u8>().ok())
        .and_then(|(a, p)| Ipv4Network::new(a, p).ok())
        .ok_or_else(|| (format!("`{text}` is not a valid IPv4 CIDR"), Some("e.g. 10.0.0.0/16".into())))?;
    exact(text, net)
}

/// A network written with host bits set is refused, so a typo cannot silently move it.
fn exact<N: Copy + Into<IpNetwork>>(text: &str, net: N) -> Result<N, (String, Option<String>)> {
    let any: IpNetwork = net.into();
    if any.ip() == any.network() {
        return Ok(net);
    }
    Err((
        format!("`{text}` has host bits set"),
        Some(format!("did you mean {}/{}?", any.network(), any.prefix())),
    ))
}

/// A CIDR as written; a bad one is recorded as a problem (validation reports them all).
pub(super) fn cidr(decls: &mut Declarations, text: &str, span: Span) -> Cidr {
    let net = recorded(decls, parse_cidr(text), span);
    Cidr { text: text.into(), net }
}

/// An IPv6 prefix as written, recorded like `cidr`.
pub(super) fn cidr6(decls: &mut Declarations, text: &str, span: Span) -> Cidr6 {
    let net = recorded(decls, parse_cidr6(text), span);
    Cidr6 { net }
}

/// A CIDR of either family (an IPv6 one has a `:`), recorded like `cidr`.
pub(super) fn any_cidr(decls: &mut Declarations, text: &str, span: Span) -> AnyCidr {
    let parsed = if text.contains(':') {
        parse_cidr6(text).map(IpNetwork::V6)
    } else {
        parse_cidr(text).map(IpNetwork::V4)
    };
    let net = recorded(decls, parsed, span);
    AnyCidr { net, implied: false }
}

fn recorded<T>(
    decls: &mut Declarations,
    parsed: Result<T, (String, Option<String>)>,
    span: Span,
) -> Option<T> {
    match parsed {
        Ok(net) => Some(net),
        Err((message, help)) => {
            let mut p = Problem::new(message, span, "invalid CIDR");
            p.help = help;
            decls.problems.push(p);
            None
        }
    }
}

fn parse_cidr6(text: &str) -> Result<Ipv6Network, (String, Option<String>)> {
    let net = text
        .split_once('/')
        .and_then(|(addr, prefix)| Ipv6Network::new(addr.parse().ok()?, prefix.parse().ok()?).ok())
        .ok_or_else(|| (format!("`{text}` is not a valid IPv6 prefix"), Some("e.g. fd10:10::/56".into())))?;
    exact(text, net)
}

/// Checks an options map against the keys a function takes.
pub(super) fn check_options(
    ctx: &NativeCallContext,
    shared: &Shared,
    func: &str,
    opts: &Map,
    allowed: &[&str],
) -> Res<()> {
    let Some(key) = opts.keys().find(|k| !allowed.contains(&k.as_str())) else { return Ok(()) };
    let mut fault =
        Fault::new(format!("unknown option `{key}` for {func}()"), span(shared, ctx), "unknown option");
    fault.help = Some(match suggest(key, allowed.iter().copied()) {
        Some(best) => format!("did you mean `{best}`?"),
        None if allowed.is_empty() => format!("{func}() takes no options yet"),
        None => format!("{func}() takes: {}", allowed.join(", ")),
    });
    fail(ctx, fault)
}

pub(super) fn option_type_error<T>(
    ctx: &NativeCallContext,
    shared: &Shared,
    key: &str,
    want: &str,
    got: &Dynamic,
) -> Res<T> {
    fail_here(ctx, shared, format!("option `{key}` must be {want}, not {}", got.type_name()), "wrong type")
}

/// An option of the right type whose value is out of range: the value is named.
pub(super) fn option_value_error<T>(
    ctx: &NativeCallContext,
    shared: &Shared,
    key: &str,
    want: &str,
    got: &Dynamic,
) -> Res<T> {
    fail_here(ctx, shared, format!("option `{key}` must be {want}, not {got}"), "out of range")
}

/// Fails when `vpc` was destroyed earlier in the script.
pub(super) fn live_vpc(ctx: &NativeCallContext, shared: &Shared, vpc: VpcId) -> Res<()> {
    let v = shared.decls.vpc(vpc);
    if v.removed {
        let fault =
            Fault::new(format!("VPC `{}` was destroyed", v.name), span(shared, ctx), "used after destroy")
                .help("declare it again with vpc() to use it");
        return fail(ctx, fault);
    }
    Ok(())
}

fn summary_map(s: Summary) -> Map {
    let mut m = Map::new();
    m.insert("created".into(), Dynamic::from(s.created as i64));
    m.insert("changed".into(), Dynamic::from(s.changed as i64));
    m.insert("deleted".into(), Dynamic::from(s.deleted as i64));
    m
}

/// Applies what is declared so far; errors point at the call that asked.
pub(super) fn run_apply(ctx: &NativeCallContext, sh: &SharedRef) -> Res<Map> {
    let mut shared = sh.borrow_mut();
    shared.acted = true;
    let span = span(&shared, ctx);
    let decls = shared.decls.clone();
    match shared.effects.apply(&decls) {
        Ok(summary) => Ok(summary_map(summary)),
        Err(EffectError::Invalid(problems)) => fail(ctx, ScriptError::Invalid(problems)),
        Err(e) => fail(ctx, from_effect(e, span)),
    }
}

/// Fails the call with an effect's error, placed at the call.
pub(super) fn effect_failed<T>(ctx: &NativeCallContext, sh: &SharedRef, e: EffectError) -> Res<T> {
    let span = span(&sh.borrow(), ctx);
    fail(ctx, from_effect(e, span))
}
