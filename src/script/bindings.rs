//! The script API of SPEC.md: declaration functions, handle properties and effects,
//! registered on a Rhai engine over the shared declarations.

use std::cell::RefCell;
use std::net::Ipv4Addr;
use std::rc::Rc;

use ipnetwork::Ipv4Network;
use rhai::{Array, Dynamic, Engine, EvalAltResult, Map, NativeCallContext};

use super::errors::{Fault, ScriptError, from_effect, suggest};
use super::{EffectError, Shared};
use crate::model::{
    Cidr, Declarations, HostDecl, HostId, HostRef, NatDecl, PeerDecl, Problem, PublishDecl, Span, SubnetDecl,
    SubnetId, VpcDecl, VpcId, ipam,
};

/// Every handle property, for "did you mean" on a misspelt one.
pub(super) const PROPERTIES: &[&str] =
    &["name", "cidr", "ip", "vpc", "subnet", "gateway", "hosts", "subnets", "public"];

#[derive(Clone, Debug)]
pub(super) struct VpcHandle(pub VpcId);

#[derive(Clone, Debug)]
pub(super) struct SubnetHandle(pub SubnetId);

#[derive(Clone, Debug)]
pub(super) struct HostHandle(pub HostRef);

pub(super) type Res<T> = Result<T, Box<EvalAltResult>>;
pub(super) type SharedRef = Rc<RefCell<Shared>>;

pub(super) fn fail<T>(ctx: &NativeCallContext, err: impl Into<ScriptError>) -> Res<T> {
    Err(Box::new(EvalAltResult::ErrorRuntime(Dynamic::from(err.into()), ctx.call_position())))
}

pub(super) fn span(shared: &Shared, ctx: &NativeCallContext) -> Span {
    shared.span_at(ctx.call_source(), ctx.call_position())
}

/// Parses `a.b.c.d/n`, rejecting host bits so a typo cannot silently move a network.
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
    if net.ip() != net.network() {
        return Err((
            format!("`{text}` has host bits set"),
            Some(format!("did you mean {}/{}?", net.network(), net.prefix())),
        ));
    }
    Ok(net)
}

pub(super) fn cidr(decls: &mut Declarations, text: &str, span: Span) -> Cidr {
    let net = match parse_cidr(text) {
        Ok(net) => Some(net),
        Err((message, help)) => {
            let mut p = Problem::new(message, span, "invalid CIDR");
            p.help = help;
            decls.problems.push(p);
            None
        }
    };
    Cidr { text: text.into(), net }
}

/// Checks an options map against the keys a function takes.
pub(super) fn check_options(
    ctx: &NativeCallContext,
    shared: &Shared,
    func: &str,
    opts: &Map,
    allowed: &[&str],
) -> Res<()> {
    for key in opts.keys() {
        if !allowed.contains(&key.as_str()) {
            let mut fault = Fault::new(
                format!("unknown option `{key}` for {func}()"),
                span(shared, ctx),
                "unknown option",
            );
            fault.help = Some(match suggest(key, allowed.iter().copied()) {
                Some(best) => format!("did you mean `{best}`?"),
                None if allowed.is_empty() => format!("{func}() takes no options yet"),
                None => format!("{func}() takes: {}", allowed.join(", ")),
            });
            return fail(ctx, fault);
        }
    }
    Ok(())
}

pub(super) fn option_type_error<T>(
    ctx: &NativeCallContext,
    shared: &Shared,
    key: &str,
    want: &str,
    got: &Dynamic,
) -> Res<T> {
    let fault = Fault::new(
        format!("option `{key}` must be {want}, not {}", got.type_name()),
        span(shared, ctx),
        "wrong type",
    );
    fail(ctx, fault)
}

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

fn declare_vpc(ctx: NativeCallContext, sh: &SharedRef, name: &str, text: &str, opts: Map) -> Res<VpcHandle> {
    let mut shared = sh.borrow_mut();
    check_options(&ctx, &shared, "vpc", &opts, &[])?;
    let span = span(&shared, &ctx);
    let cidr = cidr(&mut shared.decls, text, span);
    shared.decls.vpcs.push(VpcDecl { name: name.into(), cidr, span, removed: false });
    Ok(VpcHandle(VpcId(shared.decls.vpcs.len() - 1)))
}

fn declare_subnet(
    ctx: NativeCallContext,
    sh: &SharedRef,
    vpc: &VpcHandle,
    name: &str,
    text: &str,
    opts: Map,
) -> Res<SubnetHandle> {
    let mut shared = sh.borrow_mut();
    check_options(&ctx, &shared, "subnet", &opts, &["public"])?;
    live_vpc(&ctx, &shared, vpc.0)?;
    let public = match opts.get("public") {
        None => false,
        Some(v) => match v.as_bool() {
            Ok(b) => b,
            Err(_) => return option_type_error(&ctx, &shared, "public", "true or false", v),
        },
    };
    let span = span(&shared, &ctx);
    let cidr = cidr(&mut shared.decls, text, span);
    shared.decls.subnets.push(SubnetDecl { vpc: vpc.0, name: name.into(), cidr, public, span });
    Ok(SubnetHandle(SubnetId(shared.decls.subnets.len() - 1)))
}

fn declare_host(
    ctx: NativeCallContext,
    sh: &SharedRef,
    subnet: &SubnetHandle,
    name: &str,
    opts: Map,
) -> Res<HostHandle> {
    let mut shared = sh.borrow_mut();
    check_options(&ctx, &shared, "host", &opts, &["ip"])?;
    let sub = shared.decls.subnet(subnet.0).clone();
    live_vpc(&ctx, &shared, sub.vpc)?;
    let span = span(&shared, &ctx);
    let (ip, fixed) = match opts.get("ip") {
        Some(v) if v.is_string() => {
            let text = v.clone().into_string().unwrap_or_default();
            match text.parse::<Ipv4Addr>() {
                Ok(ip) => (Some(ip), true),
                Err(_) => {
                    let p = Problem::new(format!("`{text}` is not an IPv4 address"), span, "invalid address")
                        .help("write it as a.b.c.d");
                    shared.decls.problems.push(p);
                    (None, true)
                }
            }
        }
        Some(v) => return option_type_error(&ctx, &shared, "ip", "a string like \"10.0.1.20\"", v),
        None => {
            let vpc_name = shared.decls.vpc(sub.vpc).name.clone();
            let preferred = shared.previous.host_ip(&vpc_name, &sub.name, name);
            let taken = shared.decls.taken_in(subnet.0);
            match sub.cidr.net.filter(|n| n.prefix() <= ipam::MAX_SUBNET_PREFIX) {
                None => (None, false),
                Some(net) => match ipam::next_free(net, &taken, preferred) {
                    Some(ip) => (Some(ip), false),
                    None => {
                        let p = Problem::new(
                            format!("subnet `{}` ({net}) is full", sub.name),
                            span,
                            "no free address",
                        )
                        .related(sub.span, "this subnet")
                        .help("use a larger subnet, or fewer hosts");
                        shared.decls.problems.push(p);
                        (None, false)
                    }
                },
            }
        }
    };
    shared.decls.hosts.push(HostDecl { subnet: subnet.0, name: name.into(), ip, fixed, span });
    Ok(HostHandle(HostRef::Declared(HostId(shared.decls.hosts.len() - 1))))
}

fn declare_peer(ctx: &NativeCallContext, sh: &SharedRef, a: VpcHandle, b: VpcHandle, opts: Map) -> Res<()> {
    let mut shared = sh.borrow_mut();
    check_options(ctx, &shared, "peer", &opts, &["allow"])?;
    live_vpc(ctx, &shared, a.0)?;
    live_vpc(ctx, &shared, b.0)?;
    let span = span(&shared, ctx);
    let allow = match opts.get("allow") {
        None => None,
        Some(list) if list.is_array() => {
            let mut cidrs = Vec::new();
            for item in list.clone().into_array().unwrap_or_default() {
                if let Some(subnet) = item.clone().try_cast::<SubnetHandle>() {
                    cidrs.push(shared.decls.subnet(subnet.0).cidr.clone());
                } else if let Ok(text) = item.clone().into_string() {
                    let c = cidr(&mut shared.decls, &text, span);
                    cidrs.push(c);
                } else {
                    return option_type_error(ctx, &shared, "allow", "a list of CIDRs or subnets", &item);
                }
            }
            Some(cidrs)
        }
        Some(other) => return option_type_error(ctx, &shared, "allow", "a list of CIDRs or subnets", other),
    };
    shared.decls.peers.push(PeerDecl { a: a.0, b: b.0, allow, span });
    Ok(())
}

fn summary_map(s: crate::plan::Summary) -> Map {
    let mut m = Map::new();
    m.insert("created".into(), Dynamic::from(s.created as i64));
    m.insert("changed".into(), Dynamic::from(s.changed as i64));
    m.insert("deleted".into(), Dynamic::from(s.deleted as i64));
    m
}

pub(super) fn run_apply(ctx: &NativeCallContext, sh: &SharedRef) -> Res<Map> {
    let mut shared = sh.borrow_mut();
    let span = span(&shared, ctx);
    let decls = shared.decls.clone();
    match shared.effects.apply(&decls) {
        Ok(summary) => Ok(summary_map(summary)),
        Err(EffectError::Invalid(problems)) => fail(ctx, ScriptError::Invalid(problems)),
        Err(e) => fail(ctx, from_effect(e, span)),
    }
}

fn host_subnet(decls: &Declarations, h: &HostHandle) -> SubnetId {
    decls.host_subnet(h.0)
}

fn host_name(decls: &Declarations, h: &HostHandle) -> String {
    decls.host_name(h.0).to_string()
}

pub(super) fn host_ip(decls: &Declarations, h: &HostHandle) -> Option<Ipv4Addr> {
    match h.0 {
        HostRef::Declared(id) => decls.host(id).ip,
        HostRef::Implicit(s) => decls.subnet(s).cidr.net.and_then(|n| ipam::next_free(n, &[], None)),
    }
}

/// A subnet stands for its first host (declared, or the implicit one).
pub(super) fn first_host(decls: &Declarations, subnet: SubnetId) -> HostRef {
    decls.hosts_of(subnet).next().map_or(HostRef::Implicit(subnet), |(id, _)| HostRef::Declared(id))
}

fn declare_publish(
    ctx: &NativeCallContext,
    sh: &SharedRef,
    host: HostRef,
    port: i64,
    host_port: i64,
    proto: &str,
) -> Res<()> {
    let mut shared = sh.borrow_mut();
    let vpc = shared.decls.subnet(shared.decls.host_subnet(host)).vpc;
    live_vpc(ctx, &shared, vpc)?;
    let span = span(&shared, ctx);
    shared.decls.publishes.push(PublishDecl { host, port, host_port, proto: proto.to_string(), span });
    Ok(())
}

fn text_or_unit(v: Option<String>) -> Dynamic {
    v.map_or(Dynamic::UNIT, Dynamic::from)
}

pub(super) fn register(engine: &mut Engine, shared: &SharedRef) {
    engine.register_type_with_name::<VpcHandle>("Vpc");
    engine.register_type_with_name::<SubnetHandle>("Subnet");
    engine.register_type_with_name::<HostHandle>("Host");
    engine.register_type_with_name::<ScriptError>("Error");
    engine.register_fn("to_string", |e: &mut ScriptError| e.to_string());

    let sh = shared.clone();
    engine.register_fn("vpc", move |ctx: NativeCallContext, name: &str, cidr: &str| {
        declare_vpc(ctx, &sh, name, cidr, Map::new())
    });
    let sh = shared.clone();
    engine.register_fn("vpc", move |ctx: NativeCallContext, name: &str, cidr: &str, opts: Map| {
        declare_vpc(ctx, &sh, name, cidr, opts)
    });
    let sh = shared.clone();
    engine.register_fn(
        "subnet",
        move |ctx: NativeCallContext, vpc: &mut VpcHandle, name: &str, cidr: &str| {
            declare_subnet(ctx, &sh, vpc, name, cidr, Map::new())
        },
    );
    let sh = shared.clone();
    engine.register_fn(
        "subnet",
        move |ctx: NativeCallContext, vpc: &mut VpcHandle, name: &str, cidr: &str, opts: Map| {
            declare_subnet(ctx, &sh, vpc, name, cidr, opts)
        },
    );
    let sh = shared.clone();
    engine.register_fn("host", move |ctx: NativeCallContext, subnet: &mut SubnetHandle, name: &str| {
        declare_host(ctx, &sh, subnet, name, Map::new())
    });
    let sh = shared.clone();
    engine.register_fn(
        "host",
        move |ctx: NativeCallContext, subnet: &mut SubnetHandle, name: &str, opts: Map| {
            declare_host(ctx, &sh, subnet, name, opts)
        },
    );

    let sh = shared.clone();
    engine.register_fn("nat", move |ctx: NativeCallContext, subnet: SubnetHandle| -> Res<()> {
        let mut shared = sh.borrow_mut();
        live_vpc(&ctx, &shared, shared.decls.subnet(subnet.0).vpc)?;
        let span = span(&shared, &ctx);
        shared.decls.nats.push(NatDecl { subnet: subnet.0, span });
        Ok(())
    });
    let sh = shared.clone();
    engine.register_fn(
        "publish",
        move |ctx: NativeCallContext, host: HostHandle, port: i64, host_port: i64| {
            declare_publish(&ctx, &sh, host.0, port, host_port, "tcp")
        },
    );
    let sh = shared.clone();
    engine.register_fn(
        "publish",
        move |ctx: NativeCallContext, host: HostHandle, port: i64, host_port: i64, proto: &str| {
            declare_publish(&ctx, &sh, host.0, port, host_port, proto)
        },
    );
    let sh = shared.clone();
    engine.register_fn(
        "publish",
        move |ctx: NativeCallContext, subnet: SubnetHandle, port: i64, host_port: i64| {
            let host = first_host(&sh.borrow().decls, subnet.0);
            declare_publish(&ctx, &sh, host, port, host_port, "tcp")
        },
    );
    let sh = shared.clone();
    engine.register_fn(
        "publish",
        move |ctx: NativeCallContext, subnet: SubnetHandle, port: i64, host_port: i64, proto: &str| {
            let host = first_host(&sh.borrow().decls, subnet.0);
            declare_publish(&ctx, &sh, host, port, host_port, proto)
        },
    );
    let sh = shared.clone();
    engine.register_fn("peer", move |ctx: NativeCallContext, a: VpcHandle, b: VpcHandle| {
        declare_peer(&ctx, &sh, a, b, Map::new())
    });
    let sh = shared.clone();
    engine.register_fn("peer", move |ctx: NativeCallContext, a: VpcHandle, b: VpcHandle, opts: Map| {
        declare_peer(&ctx, &sh, a, b, opts)
    });
    let sh = shared.clone();
    engine.register_fn("apply", move |ctx: NativeCallContext| run_apply(&ctx, &sh));
    let sh = shared.clone();
    engine.register_fn("destroy", move |ctx: NativeCallContext, vpc: VpcHandle| {
        sh.borrow_mut().decls.vpcs[vpc.0.0].removed = true;
        run_apply(&ctx, &sh).map(|_| ())
    });
    let sh = shared.clone();
    engine.register_fn("destroy", move |ctx: NativeCallContext| {
        let decls = &mut sh.borrow_mut().decls;
        decls.vpcs.iter_mut().for_each(|v| v.removed = true);
        decls.destroyed_all = true;
        run_apply(&ctx, &sh).map(|_| ())
    });
    let sh = shared.clone();
    engine.register_fn("assert", move |ctx: NativeCallContext, cond: bool, message: &str| -> Res<()> {
        let shared = sh.borrow();
        if cond || shared.effects.held_back() {
            return Ok(());
        }
        fail(&ctx, Fault::new(format!("assertion failed: {message}"), span(&shared, &ctx), "this assertion"))
    });

    register_properties(engine, shared);
    super::effects::register(engine, shared);
    super::policy::register(engine, shared);
}

fn register_properties(engine: &mut Engine, shared: &SharedRef) {
    let sh = shared.clone();
    engine.register_get("name", move |v: &mut VpcHandle| sh.borrow().decls.vpc(v.0).name.clone());
    let sh = shared.clone();
    engine.register_get("cidr", move |v: &mut VpcHandle| sh.borrow().decls.vpc(v.0).cidr.text.clone());
    let sh = shared.clone();
    engine.register_get("subnets", move |v: &mut VpcHandle| -> Array {
        let shared = sh.borrow();
        shared.decls.subnets_of(v.0).map(|(id, _)| Dynamic::from(SubnetHandle(id))).collect()
    });
    let show = {
        let sh = shared.clone();
        move |v: &mut VpcHandle| {
            let s = sh.borrow();
            let d = s.decls.vpc(v.0);
            format!("vpc {} {}", d.name, d.cidr.text)
        }
    };
    engine.register_fn("to_string", show.clone());
    engine.register_fn("to_debug", show);

    let sh = shared.clone();
    engine.register_get("name", move |s: &mut SubnetHandle| sh.borrow().decls.subnet(s.0).name.clone());
    let sh = shared.clone();
    engine.register_get("cidr", move |s: &mut SubnetHandle| sh.borrow().decls.subnet(s.0).cidr.text.clone());
    let sh = shared.clone();
    engine.register_get("public", move |s: &mut SubnetHandle| sh.borrow().decls.subnet(s.0).public);
    let sh = shared.clone();
    engine.register_get("vpc", move |s: &mut SubnetHandle| VpcHandle(sh.borrow().decls.subnet(s.0).vpc));
    let sh = shared.clone();
    engine.register_get("gateway", move |s: &mut SubnetHandle| {
        text_or_unit(sh.borrow().decls.subnet(s.0).cidr.net.map(|n| ipam::gateway(n).to_string()))
    });
    let sh = shared.clone();
    engine.register_get("hosts", move |s: &mut SubnetHandle| -> Array {
        let shared = sh.borrow();
        let declared: Array = shared
            .decls
            .hosts_of(s.0)
            .map(|(id, _)| Dynamic::from(HostHandle(HostRef::Declared(id))))
            .collect();
        if declared.is_empty() { vec![Dynamic::from(HostHandle(HostRef::Implicit(s.0)))] } else { declared }
    });
    let show = {
        let sh = shared.clone();
        move |s: &mut SubnetHandle| {
            let sh = sh.borrow();
            let d = sh.decls.subnet(s.0);
            format!("subnet {}/{} {}", sh.decls.vpc(d.vpc).name, d.name, d.cidr.text)
        }
    };
    engine.register_fn("to_string", show.clone());
    engine.register_fn("to_debug", show);

    let sh = shared.clone();
    engine.register_get("name", move |h: &mut HostHandle| host_name(&sh.borrow().decls, h));
    let sh = shared.clone();
    engine.register_get("ip", move |h: &mut HostHandle| {
        text_or_unit(host_ip(&sh.borrow().decls, h).map(|i| i.to_string()))
    });
    let sh = shared.clone();
    engine.register_get("subnet", move |h: &mut HostHandle| SubnetHandle(host_subnet(&sh.borrow().decls, h)));
    let sh = shared.clone();
    engine.register_get("vpc", move |h: &mut HostHandle| {
        let shared = sh.borrow();
        VpcHandle(shared.decls.subnet(host_subnet(&shared.decls, h)).vpc)
    });
    let show = {
        let sh = shared.clone();
        move |h: &mut HostHandle| {
            let s = sh.borrow();
            let ip = host_ip(&s.decls, h).map_or("-".to_string(), |i| i.to_string());
            format!("host {} {ip}", host_name(&s.decls, h))
        }
    };
    engine.register_fn("to_string", show.clone());
    engine.register_fn("to_debug", show);
}
