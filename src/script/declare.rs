//! Declarations: `vpc`, `subnet`, `host`, `nat`, `publish`, `peer`, and the effects that
//! act on them as a whole (`apply`, `destroy`, `assert`). Each records into the shared
//! declarations with the span of its call; nothing here touches the kernel.

use std::net::{Ipv4Addr, Ipv6Addr};

use rhai::plugin::*;
use rhai::{Map, NativeCallContext};

use super::context::{
    Res, Shared, any_cidr, check_options, cidr, cidr6, fail, live_vpc, option_type_error, run_apply, shared,
    span,
};
use super::errors::{Fault, ScriptError};
use super::handles::{HostHandle, PeeringHandle, SubnetHandle, VpcHandle, first_host};
use crate::model::{
    AnyCidr, Cidr6, HostDecl, HostRef, ImpairDecl, ImpairTarget, NatDecl, PeerDecl, Problem, PublishDecl,
    Span, SubnetDecl, SubnetId, Transport, VpcDecl, VpcId, ipam, ipam6,
};

fn declare_vpc(ctx: &NativeCallContext, name: &str, text: &str, opts: Map) -> Res<VpcHandle> {
    let sh = shared(ctx);
    let mut shared = sh.borrow_mut();
    check_options(ctx, &shared, "vpc", &opts, &["ipv6", "host_access"])?;
    let span = span(&shared, ctx);
    let cidr = cidr(&mut shared.decls, text, span);
    let ipv6 = match opts.get("ipv6") {
        None => None,
        Some(v) if v.is_bool() => v.as_bool().unwrap_or_default().then(|| {
            let net = ipam6::ula_for(name);
            Cidr6 { net: Some(net) }
        }),
        Some(v) if v.is_string() => {
            Some(cidr6(&mut shared.decls, &v.clone().into_string().unwrap_or_default(), span))
        }
        Some(v) => return option_type_error(ctx, &shared, "ipv6", "a /56 like \"fd10:10::/56\", or true", v),
    };
    let host_access = match opts.get("host_access") {
        None => false,
        Some(v) => match v.as_bool() {
            Ok(b) => b,
            Err(_) => return option_type_error(ctx, &shared, "host_access", "true or false", v),
        },
    };
    shared.decls.vpcs.push(VpcDecl { name: name.into(), cidr, ipv6, host_access, span, removed: false });
    Ok(VpcHandle(VpcId(shared.decls.vpcs.len() - 1)))
}

fn declare_subnet(
    ctx: &NativeCallContext,
    vpc: &VpcHandle,
    name: &str,
    text: &str,
    opts: Map,
) -> Res<SubnetHandle> {
    let sh = shared(ctx);
    let mut shared = sh.borrow_mut();
    check_options(ctx, &shared, "subnet", &opts, &["public", "ipv6", "nodes"])?;
    let nodes = super::fabric::nodes_option(ctx, &shared, &opts)?;
    live_vpc(ctx, &shared, vpc.0)?;
    let public = match opts.get("public") {
        None => false,
        Some(v) => match v.as_bool() {
            Ok(b) => b,
            Err(_) => return option_type_error(ctx, &shared, "public", "true or false", v),
        },
    };
    let span = span(&shared, ctx);
    let cidr = cidr(&mut shared.decls, text, span);
    let ipv6 = match opts.get("ipv6") {
        None => None,
        Some(v) if v.is_bool() => {
            if v.as_bool().unwrap_or_default() {
                Some(next_free_64(&mut shared, vpc.0, name, span))
            } else {
                None
            }
        }
        Some(v) if v.is_string() => {
            Some(cidr6(&mut shared.decls, &v.clone().into_string().unwrap_or_default(), span))
        }
        Some(v) => {
            return option_type_error(ctx, &shared, "ipv6", "a /64 like \"fd10:10:0:1::/64\", or true", v);
        }
    };
    shared.decls.subnets.push(SubnetDecl { vpc: vpc.0, name: name.into(), cidr, ipv6, public, nodes, span });
    Ok(SubnetHandle(SubnetId(shared.decls.subnets.len() - 1)))
}

fn declare_host(ctx: &NativeCallContext, subnet: &SubnetHandle, name: &str, opts: Map) -> Res<HostHandle> {
    let sh = shared(ctx);
    let mut shared = sh.borrow_mut();
    check_options(ctx, &shared, "host", &opts, &["ip", "ip6", "node"])?;
    let node = super::fabric::node_option(ctx, &shared, &opts)?;
    let vpc = shared.decls.subnet(subnet.0).vpc;
    live_vpc(ctx, &shared, vpc)?;
    let span = span(&shared, ctx);
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
        Some(v) => return option_type_error(ctx, &shared, "ip", "a string like \"10.0.1.20\"", v),
        None => (automatic_address(&mut shared, subnet.0, name, span), false),
    };
    let ip6 = match opts.get("ip6") {
        None => None,
        Some(v) if v.is_string() => {
            let text = v.clone().into_string().unwrap_or_default();
            match text.parse::<Ipv6Addr>() {
                Ok(ip) => Some(ip),
                Err(_) => {
                    let p = Problem::new(format!("`{text}` is not an IPv6 address"), span, "invalid address")
                        .help("write it like fd10:10:0:1::20");
                    shared.decls.problems.push(p);
                    None
                }
            }
        }
        Some(v) => return option_type_error(ctx, &shared, "ip6", "a string like \"fd10:10:0:1::20\"", v),
    };
    let id =
        shared.decls.add_host(HostDecl { subnet: subnet.0, name: name.into(), ip, fixed, ip6, node, span });
    Ok(HostHandle(HostRef::Declared(id)))
}

/// `ipv6: true` on a subnet: the next free /64 of its VPC's /56, preferring the one it had
/// when last applied. Without a VPC prefix there is nothing to choose (validation says why).
fn next_free_64(shared: &mut Shared, vpc: VpcId, name: &str, span: Span) -> Cidr6 {
    let decl = shared.decls.vpc(vpc).clone();
    let Some(vpc6) = decl.prefix6() else {
        return Cidr6 { net: None };
    };
    let taken: Vec<_> =
        shared.decls.subnets_of(vpc).filter_map(|(_, s)| s.ipv6.as_ref().and_then(|c| c.net)).collect();
    let preferred = shared.previous_cidr6(&decl.name, name);
    match ipam6::free_subnet(vpc6, &taken, preferred) {
        Some(net) => Cidr6 { net: Some(net) },
        None => {
            let p = Problem::new(
                format!("VPC `{}` ({vpc6}) has no free /64 left", decl.name),
                span,
                "no free /64",
            )
            .related(decl.span, "this VPC")
            .help("a /56 holds 256 subnets with IPv6");
            shared.decls.problems.push(p);
            Cidr6 { net: None }
        }
    }
}

/// The next free address of a subnet, preferring the one the host had when last applied.
fn automatic_address(shared: &mut Shared, subnet: SubnetId, name: &str, span: Span) -> Option<Ipv4Addr> {
    let sub = shared.decls.subnet(subnet).clone();
    let net = sub.cidr.net.filter(|n| n.prefix() <= ipam::MAX_SUBNET_PREFIX)?;
    let vpc_name = shared.decls.vpc(sub.vpc).name.clone();
    let preferred = shared.previous_ip(&vpc_name, &sub.name, name);
    let found = shared.decls.allocator(subnet).and_then(|a| a.allocate(preferred));
    if found.is_none() {
        let p = Problem::new(format!("subnet `{}` ({net}) is full", sub.name), span, "no free address")
            .related(sub.span, "this subnet")
            .help("use a larger subnet, or fewer hosts");
        shared.decls.problems.push(p);
    }
    found
}

fn declare_peer(ctx: &NativeCallContext, a: VpcHandle, b: VpcHandle, opts: Map) -> Res<PeeringHandle> {
    let sh = shared(ctx);
    let mut shared = sh.borrow_mut();
    check_options(ctx, &shared, "peer", &opts, &["allow", "impair"])?;
    live_vpc(ctx, &shared, a.0)?;
    live_vpc(ctx, &shared, b.0)?;
    let span = span(&shared, ctx);
    let allow = match opts.get("allow") {
        None => None,
        Some(list) if list.is_array() => {
            let mut cidrs = Vec::new();
            for item in list.clone().into_array().unwrap_or_default() {
                if let Some(subnet) = item.clone().try_cast::<SubnetHandle>() {
                    let decl = shared.decls.subnet(subnet.0);
                    cidrs.push(AnyCidr::from(&decl.cidr));
                    cidrs.extend(decl.ipv6.as_ref().map(AnyCidr::from));
                } else if let Ok(text) = item.clone().into_string() {
                    cidrs.push(any_cidr(&mut shared.decls, &text, span));
                } else {
                    return option_type_error(ctx, &shared, "allow", "a list of CIDRs or subnets", &item);
                }
            }
            Some(cidrs)
        }
        Some(other) => return option_type_error(ctx, &shared, "allow", "a list of CIDRs or subnets", other),
    };
    let impairment = match opts.get("impair").map(|v| v.clone().try_cast::<Map>()) {
        None => None,
        Some(Some(map)) => Some(super::impair::impairment(ctx, &shared, &map)?),
        Some(None) => {
            return option_type_error(
                ctx,
                &shared,
                "impair",
                "a map such as #{ delay: \"20ms\" }",
                &opts["impair"],
            );
        }
    };
    shared.decls.peers.push(PeerDecl { a: a.0, b: b.0, allow, span });
    if let Some(impairment) = impairment {
        let target = ImpairTarget::Peering(a.0, b.0);
        shared.decls.impairs.push(ImpairDecl { target, impairment, span });
    }
    Ok(PeeringHandle { a: a.0, b: b.0 })
}

fn declare_publish(
    ctx: &NativeCallContext,
    host: HostRef,
    port: i64,
    host_port: i64,
    proto: &str,
) -> Res<()> {
    let sh = shared(ctx);
    let mut shared = sh.borrow_mut();
    let vpc = shared.decls.subnet(shared.decls.host_subnet(host)).vpc;
    live_vpc(ctx, &shared, vpc)?;
    let span = span(&shared, ctx);
    let port_problem = |what: &str, value: i64| {
        Problem::new(format!("{what} {value} is not a port"), span, "out of range")
            .help("ports are 1 to 65535")
    };
    let (port, host_port) =
        match (u16::try_from(port).ok().filter(|p| *p > 0), u16::try_from(host_port).ok().filter(|p| *p > 0))
        {
            (Some(p), Some(h)) => (p, h),
            (p, h) => {
                if p.is_none() {
                    shared.decls.problems.push(port_problem("port", port));
                }
                if h.is_none() {
                    shared.decls.problems.push(port_problem("host port", host_port));
                }
                return Ok(());
            }
        };
    let proto = match proto {
        "tcp" => Transport::Tcp,
        "udp" => Transport::Udp,
        other => {
            let p = Problem::new(
                format!("`{other}` is not a protocol publish() knows"),
                span,
                "unknown protocol",
            )
            .help("use \"tcp\" (the default) or \"udp\"");
            shared.decls.problems.push(p);
            return Ok(());
        }
    };
    let at = super::span::location(&shared.sources, span);
    shared.decls.publishes.push(PublishDecl { host, port, host_port, proto, span, at });
    Ok(())
}

/// The declaration functions of the script API. Their `///` comments are the reference.
// Rhai exports a plugin module\'s `pub` functions only.
#[allow(unreachable_pub)]
#[export_module]
mod api {
    use super::*;

    /// Declares a VPC: an isolated network with an IPv4 CIDR from /16 to /28, realised as
    /// its own router namespace (so unpeered VPCs may share a CIDR). `#{ ipv6: "fd10:10::/56" }`
    /// makes it dual-stack (`ipv6: true`: a unique local /56 derived from the name);
    /// without it, IPv6 is off in all its namespaces. `#{ host_access: true }` lets the
    /// machine itself reach the VPC's hosts (off by default, as in AWS).
    #[rhai_fn(return_raw)]
    pub fn vpc(ctx: NativeCallContext, name: &str, cidr: &str) -> Res<VpcHandle> {
        declare_vpc(&ctx, name, cidr, Map::new())
    }
    #[rhai_fn(name = "vpc", return_raw)]
    pub fn vpc_with(ctx: NativeCallContext, name: &str, cidr: &str, opts: Map) -> Res<VpcHandle> {
        declare_vpc(&ctx, name, cidr, opts)
    }

    /// Declares a subnet inside a VPC; private unless `#{ public: true }`. Also `vpc.subnet(...)`.
    /// With nodes declared, it spans all of them unless `#{ nodes: [n1, n2] }`.
    /// Its gateway is the first usable address. In a dual-stack VPC, `#{ ipv6: true }` gives
    /// it the next free /64 of the VPC's /56 (`ipv6: "…::/64"` a fixed one), gateway `::1`.
    #[rhai_fn(return_raw)]
    pub fn subnet(ctx: NativeCallContext, vpc: &mut VpcHandle, name: &str, cidr: &str) -> Res<SubnetHandle> {
        declare_subnet(&ctx, vpc, name, cidr, Map::new())
    }
    #[rhai_fn(name = "subnet", return_raw)]
    pub fn subnet_with(
        ctx: NativeCallContext,
        vpc: &mut VpcHandle,
        name: &str,
        cidr: &str,
        opts: Map,
    ) -> Res<SubnetHandle> {
        declare_subnet(&ctx, vpc, name, cidr, opts)
    }

    /// Declares a host in a subnet, at the next free address unless `#{ ip: "a.b.c.d" }`.
    /// Also `subnet.host(...)`. An automatic address stays the same across re-applies. In a
    /// subnet with IPv6 its IPv6 address has the same offset in the /64 (10.10.1.2 → `…::2`)
    /// unless `#{ ip6: "…" }`. With nodes declared, `#{ node: n1 }` pins it to a node.
    #[rhai_fn(return_raw)]
    pub fn host(ctx: NativeCallContext, subnet: &mut SubnetHandle, name: &str) -> Res<HostHandle> {
        declare_host(&ctx, subnet, name, Map::new())
    }
    #[rhai_fn(name = "host", return_raw)]
    pub fn host_with(
        ctx: NativeCallContext,
        subnet: &mut SubnetHandle,
        name: &str,
        opts: Map,
    ) -> Res<HostHandle> {
        declare_host(&ctx, subnet, name, opts)
    }

    /// Egress-only internet for a private subnet (a NAT gateway): outbound connections and
    /// their replies, nothing inbound.
    #[rhai_fn(return_raw)]
    pub fn nat(ctx: NativeCallContext, subnet: SubnetHandle) -> Res<()> {
        let sh = shared(&ctx);
        let mut shared = sh.borrow_mut();
        live_vpc(&ctx, &shared, shared.decls.subnet(subnet.0).vpc)?;
        let span = span(&shared, &ctx);
        shared.decls.nats.push(NatDecl { subnet: subnet.0, span });
        Ok(())
    }

    /// Forwards the machine's `host_port` to a public host's `port`, like `docker run -p`;
    /// tcp unless "udp". A Subnet stands for its first host.
    #[rhai_fn(return_raw)]
    pub fn publish(ctx: NativeCallContext, host: HostHandle, port: i64, host_port: i64) -> Res<()> {
        declare_publish(&ctx, host.0, port, host_port, "tcp")
    }
    #[rhai_fn(name = "publish", return_raw)]
    pub fn publish_proto(
        ctx: NativeCallContext,
        host: HostHandle,
        port: i64,
        host_port: i64,
        proto: &str,
    ) -> Res<()> {
        declare_publish(&ctx, host.0, port, host_port, proto)
    }
    #[rhai_fn(name = "publish", return_raw)]
    pub fn publish_subnet(
        ctx: NativeCallContext,
        subnet: SubnetHandle,
        port: i64,
        host_port: i64,
    ) -> Res<()> {
        let host = first_host(&shared(&ctx).borrow().decls, subnet.0);
        declare_publish(&ctx, host, port, host_port, "tcp")
    }
    #[rhai_fn(name = "publish", return_raw)]
    pub fn publish_subnet_proto(
        ctx: NativeCallContext,
        subnet: SubnetHandle,
        port: i64,
        host_port: i64,
        proto: &str,
    ) -> Res<()> {
        let host = first_host(&shared(&ctx).borrow().decls, subnet.0);
        declare_publish(&ctx, host, port, host_port, proto)
    }

    /// Routes two VPCs to each other (never transitively); `#{ allow: [cidr or subnet, ...] }`
    /// limits which CIDRs cross, `#{ impair: #{ delay: "20ms", ... } }` impairs the link
    /// (as `impair()`). Returns the peering, which `impair()` also takes.
    #[rhai_fn(return_raw)]
    pub fn peer(ctx: NativeCallContext, a: VpcHandle, b: VpcHandle) -> Res<PeeringHandle> {
        declare_peer(&ctx, a, b, Map::new())
    }
    #[rhai_fn(name = "peer", return_raw)]
    pub fn peer_with(ctx: NativeCallContext, a: VpcHandle, b: VpcHandle, opts: Map) -> Res<PeeringHandle> {
        declare_peer(&ctx, a, b, opts)
    }

    /// Makes reality match the declarations now; returns `#{ created, changed, deleted }`.
    #[rhai_fn(return_raw)]
    pub fn apply(ctx: NativeCallContext) -> Res<Map> {
        run_apply(&ctx, &shared(&ctx))
    }

    /// Removes one VPC now, or with no argument everything this state owns.
    #[rhai_fn(return_raw)]
    pub fn destroy(ctx: NativeCallContext) -> Res<()> {
        let sh = shared(&ctx);
        {
            let decls = &mut sh.borrow_mut().decls;
            decls.vpcs.iter_mut().for_each(|v| v.removed = true);
            decls.destroyed_all = true;
        }
        run_apply(&ctx, &sh).map(|_| ())
    }
    #[rhai_fn(name = "destroy", return_raw)]
    pub fn destroy_vpc(ctx: NativeCallContext, vpc: VpcHandle) -> Res<()> {
        let sh = shared(&ctx);
        sh.borrow_mut().decls.vpcs[vpc.0.0].removed = true;
        run_apply(&ctx, &sh).map(|_| ())
    }

    /// Ends the script here; vpcsh exits with `code` (0: as if the script ended, and what it
    /// declares is applied; otherwise nothing more is applied).
    #[rhai_fn(return_raw)]
    pub fn exit(ctx: NativeCallContext, code: i64) -> Res<()> {
        fail(&ctx, ScriptError::Exit(i32::try_from(code).unwrap_or(1).clamp(0, 255)))
    }
    #[rhai_fn(name = "exit", return_raw)]
    pub fn exit_ok(ctx: NativeCallContext) -> Res<()> {
        fail(&ctx, ScriptError::Exit(0))
    }

    /// Fails the script with a diagnostic at the call when `cond` is false.
    #[rhai_fn(return_raw)]
    pub fn assert(ctx: NativeCallContext, cond: bool, message: &str) -> Res<()> {
        let sh = shared(&ctx);
        let mut shared = sh.borrow_mut();
        shared.acted = true;
        if cond || shared.effects.held_back() {
            return Ok(());
        }
        fail(&ctx, Fault::new(format!("assertion failed: {message}"), span(&shared, &ctx), "this assertion"))
    }
}

pub(super) fn register(engine: &mut rhai::Engine) {
    engine.register_global_module(exported_module!(api).into());
}
