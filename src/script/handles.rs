//! The handles scripts hold — `Vpc`, `Subnet`, `Host`, `Internet` — and their read-only
//! properties, documented where they are defined (the REPL and the reference read these
//! comments from the engine).

use std::net::{Ipv4Addr, Ipv6Addr};

use rhai::plugin::*;
use rhai::{Array, Dynamic, Engine, NativeCallContext};

use super::context::{Res, fail, shared, span};
use super::errors::{Fault, suggest};
use super::reference::Reference;
use crate::model::{Declarations, HostRef, SubnetId, VpcId, ipam, ipam6};
use crate::plan::desired::{INTERNET_IP, INTERNET_IP6};

#[derive(Clone, Debug)]
pub(crate) struct VpcHandle(pub VpcId);

#[derive(Clone, Debug)]
pub(crate) struct SubnetHandle(pub SubnetId);

#[derive(Clone, Debug)]
pub(crate) struct HostHandle(pub HostRef);

/// A peering as `peer()` returns it: what `impair()` takes to impair the link between
/// the two VPCs' routers.
#[derive(Clone, Debug)]
pub(crate) struct PeeringHandle {
    pub a: VpcId,
    pub b: VpcId,
}

/// The simulated internet as a script sees it.
#[derive(Clone, Debug)]
pub(crate) struct InternetHandle;

/// A host's address: declared, or the first of its subnet for the implicit host.
pub(super) fn host_ip(decls: &Declarations, host: HostRef) -> Option<Ipv4Addr> {
    match host {
        HostRef::Declared(id) => decls.host(id).ip,
        HostRef::Implicit(s) => decls.subnet(s).cidr.net.map(ipam::first_host),
    }
}

/// A host's IPv6 address, as validation will resolve it: fixed, or derived from its IPv4
/// address (moved up when a fixed one holds that); `None` without IPv6 in its subnet.
pub(super) fn host_ip6(decls: &Declarations, host: HostRef) -> Option<Ipv6Addr> {
    let subnet_id = decls.host_subnet(host);
    let subnet = decls.subnet(subnet_id);
    let (net6, net4) = (subnet.ipv6.as_ref()?.net?, subnet.cidr.net?);
    if let HostRef::Declared(id) = host
        && let Some(ip6) = decls.host(id).ip6
    {
        return Some(ip6);
    }
    let derived = ipam6::derived(net6, net4, host_ip(decls, host)?);
    let held = decls.hosts_of(subnet_id).any(|(_, h)| h.ip6 == Some(derived));
    Some(if held { ipam6::moved(derived) } else { derived })
}

/// A subnet stands for its first host (declared, or the implicit one).
pub(super) fn first_host(decls: &Declarations, subnet: SubnetId) -> HostRef {
    decls.hosts_of(subnet).next().map_or(HostRef::Implicit(subnet), |(id, _)| HostRef::Declared(id))
}

fn text_or_unit(v: Option<String>) -> Dynamic {
    v.map_or(Dynamic::UNIT, Dynamic::from)
}

/// `handle.nmae`: no getter, so Rhai asks the indexer; say which properties there are.
fn no_property(ctx: &NativeCallContext, on: &str, name: &str) -> Res<Dynamic> {
    let sh = shared(ctx);
    let shared = sh.borrow();
    let reference = Reference::of(ctx.engine());
    let known = reference.property_names(Some(on));
    let mut fault =
        Fault::new(format!("no property `{name}` on a {on}"), span(&shared, ctx), "unknown property");
    fault = match suggest(name, known.iter().copied()) {
        Some(best) => fault.help(format!("did you mean `{best}`?")),
        None if known.contains(&name) => fault.help(format!("write `.{name}`")),
        None => fault.help(format!("properties: {}", known.join(", "))),
    };
    fail(ctx, fault)
}

// Rhai exports a plugin module\'s `pub` functions only.
#[allow(unreachable_pub)]
#[export_module]
mod vpc_properties {
    use super::*;

    /// The VPC's name.
    #[rhai_fn(get = "name", pure)]
    pub fn name(ctx: NativeCallContext, vpc: &mut VpcHandle) -> String {
        shared(&ctx).borrow().decls.vpc(vpc.0).name.clone()
    }
    /// The VPC's IPv4 CIDR, as written.
    #[rhai_fn(get = "cidr", pure)]
    pub fn cidr(ctx: NativeCallContext, vpc: &mut VpcHandle) -> String {
        shared(&ctx).borrow().decls.vpc(vpc.0).cidr.text.clone()
    }
    /// The VPC's IPv6 /56, or `()` for an IPv4-only VPC.
    #[rhai_fn(get = "cidr6", pure)]
    pub fn cidr6(ctx: NativeCallContext, vpc: &mut VpcHandle) -> Dynamic {
        let sh = shared(&ctx);
        let shared = sh.borrow();
        text_or_unit(shared.decls.vpc(vpc.0).ipv6.as_ref().and_then(|c| c.net).map(|n| n.to_string()))
    }
    /// The VPC's subnets, in declaration order.
    #[rhai_fn(get = "subnets", pure)]
    pub fn subnets(ctx: NativeCallContext, vpc: &mut VpcHandle) -> Array {
        let sh = shared(&ctx);
        let shared = sh.borrow();
        shared.decls.subnets_of(vpc.0).map(|(id, _)| Dynamic::from(SubnetHandle(id))).collect()
    }
    #[rhai_fn(name = "to_string", name = "to_debug", pure)]
    pub fn show(ctx: NativeCallContext, vpc: &mut VpcHandle) -> String {
        let sh = shared(&ctx);
        let shared = sh.borrow();
        let d = shared.decls.vpc(vpc.0);
        format!("vpc {} {}", d.name, d.cidr.text)
    }
    #[rhai_fn(index_get, return_raw, pure)]
    pub fn unknown(ctx: NativeCallContext, _vpc: &mut VpcHandle, name: &str) -> Res<Dynamic> {
        no_property(&ctx, "Vpc", name)
    }
}

// Rhai exports a plugin module\'s `pub` functions only.
#[allow(unreachable_pub)]
#[export_module]
mod subnet_properties {
    use super::*;

    /// The subnet's name.
    #[rhai_fn(get = "name", pure)]
    pub fn name(ctx: NativeCallContext, subnet: &mut SubnetHandle) -> String {
        shared(&ctx).borrow().decls.subnet(subnet.0).name.clone()
    }
    /// The subnet's IPv4 CIDR, as written.
    #[rhai_fn(get = "cidr", pure)]
    pub fn cidr(ctx: NativeCallContext, subnet: &mut SubnetHandle) -> String {
        shared(&ctx).borrow().decls.subnet(subnet.0).cidr.text.clone()
    }
    /// Whether its hosts reach the internet directly (`#{ public: true }`).
    #[rhai_fn(get = "public", pure)]
    pub fn public(ctx: NativeCallContext, subnet: &mut SubnetHandle) -> bool {
        shared(&ctx).borrow().decls.subnet(subnet.0).public
    }
    /// The VPC the subnet is in.
    #[rhai_fn(get = "vpc", pure)]
    pub fn vpc(ctx: NativeCallContext, subnet: &mut SubnetHandle) -> VpcHandle {
        VpcHandle(shared(&ctx).borrow().decls.subnet(subnet.0).vpc)
    }
    /// The gateway: the first usable address of the subnet.
    #[rhai_fn(get = "gateway", pure)]
    pub fn gateway(ctx: NativeCallContext, subnet: &mut SubnetHandle) -> Dynamic {
        text_or_unit(
            shared(&ctx).borrow().decls.subnet(subnet.0).cidr.net.map(|n| ipam::gateway(n).to_string()),
        )
    }
    /// The subnet's IPv6 /64, or `()` without IPv6.
    #[rhai_fn(get = "cidr6", pure)]
    pub fn cidr6(ctx: NativeCallContext, subnet: &mut SubnetHandle) -> Dynamic {
        let sh = shared(&ctx);
        let shared = sh.borrow();
        text_or_unit(shared.decls.subnet(subnet.0).ipv6.as_ref().and_then(|c| c.net).map(|n| n.to_string()))
    }
    /// The IPv6 gateway: `::1` of the subnet's /64, or `()` without IPv6.
    #[rhai_fn(get = "gateway6", pure)]
    pub fn gateway6(ctx: NativeCallContext, subnet: &mut SubnetHandle) -> Dynamic {
        let sh = shared(&ctx);
        let shared = sh.borrow();
        let net = shared.decls.subnet(subnet.0).ipv6.as_ref().and_then(|c| c.net);
        text_or_unit(net.map(|n| ipam6::gateway(n).to_string()))
    }
    /// The subnet's hosts; a subnet that declares none has one named after it.
    #[rhai_fn(get = "hosts", pure)]
    pub fn hosts(ctx: NativeCallContext, subnet: &mut SubnetHandle) -> Array {
        let sh = shared(&ctx);
        let shared = sh.borrow();
        let declared: Array = shared
            .decls
            .hosts_of(subnet.0)
            .map(|(id, _)| Dynamic::from(HostHandle(HostRef::Declared(id))))
            .collect();
        if declared.is_empty() {
            vec![Dynamic::from(HostHandle(HostRef::Implicit(subnet.0)))]
        } else {
            declared
        }
    }
    #[rhai_fn(name = "to_string", name = "to_debug", pure)]
    pub fn show(ctx: NativeCallContext, subnet: &mut SubnetHandle) -> String {
        let sh = shared(&ctx);
        let shared = sh.borrow();
        let d = shared.decls.subnet(subnet.0);
        format!("subnet {}/{} {}", shared.decls.vpc(d.vpc).name, d.name, d.cidr.text)
    }
    #[rhai_fn(index_get, return_raw, pure)]
    pub fn unknown(ctx: NativeCallContext, _subnet: &mut SubnetHandle, name: &str) -> Res<Dynamic> {
        no_property(&ctx, "Subnet", name)
    }
}

// Rhai exports a plugin module\'s `pub` functions only.
#[allow(unreachable_pub)]
#[export_module]
mod host_properties {
    use super::*;

    /// The host's name (its namespace is `PREFIX.VPC.HOST`).
    #[rhai_fn(get = "name", pure)]
    pub fn name(ctx: NativeCallContext, host: &mut HostHandle) -> String {
        shared(&ctx).borrow().decls.host_name(host.0).to_string()
    }
    /// The host's IPv4 address.
    #[rhai_fn(get = "ip", pure)]
    pub fn ip(ctx: NativeCallContext, host: &mut HostHandle) -> Dynamic {
        text_or_unit(host_ip(&shared(&ctx).borrow().decls, host.0).map(|i| i.to_string()))
    }
    /// The host's IPv6 address (its IPv4 offset in the subnet's /64 unless `ip6` fixes
    /// it), or `()` when its subnet has no IPv6.
    #[rhai_fn(get = "ip6", pure)]
    pub fn ip6(ctx: NativeCallContext, host: &mut HostHandle) -> Dynamic {
        text_or_unit(host_ip6(&shared(&ctx).borrow().decls, host.0).map(|i| i.to_string()))
    }
    /// The name of the node the host runs on (pinned, or where placement puts it), or `()`
    /// when the script declares no nodes.
    #[rhai_fn(get = "node", pure)]
    pub fn node(ctx: NativeCallContext, host: &mut HostHandle) -> Dynamic {
        super::super::fabric::host_node(&shared(&ctx).borrow(), host.0)
    }
    /// The subnet the host is in.
    #[rhai_fn(get = "subnet", pure)]
    pub fn subnet(ctx: NativeCallContext, host: &mut HostHandle) -> SubnetHandle {
        SubnetHandle(shared(&ctx).borrow().decls.host_subnet(host.0))
    }
    /// The VPC the host is in.
    #[rhai_fn(get = "vpc", pure)]
    pub fn vpc(ctx: NativeCallContext, host: &mut HostHandle) -> VpcHandle {
        let sh = shared(&ctx);
        let shared = sh.borrow();
        VpcHandle(shared.decls.subnet(shared.decls.host_subnet(host.0)).vpc)
    }
    #[rhai_fn(name = "to_string", name = "to_debug", pure)]
    pub fn show(ctx: NativeCallContext, host: &mut HostHandle) -> String {
        let sh = shared(&ctx);
        let shared = sh.borrow();
        let ip = host_ip(&shared.decls, host.0).map_or("-".to_string(), |i| i.to_string());
        format!("host {} {ip}", shared.decls.host_name(host.0))
    }
    #[rhai_fn(index_get, return_raw, pure)]
    pub fn unknown(ctx: NativeCallContext, _host: &mut HostHandle, name: &str) -> Res<Dynamic> {
        no_property(&ctx, "Host", name)
    }
}

// Rhai exports a plugin module\'s `pub` functions only.
#[allow(unreachable_pub)]
#[export_module]
mod internet_properties {
    use super::*;

    /// `internet`.
    #[rhai_fn(get = "name", pure)]
    pub fn name(_internet: &mut InternetHandle) -> String {
        "internet".into()
    }
    /// The simulated internet's address, 198.51.100.1.
    #[rhai_fn(get = "ip", pure)]
    pub fn ip(_internet: &mut InternetHandle) -> String {
        INTERNET_IP.to_string()
    }
    /// The simulated internet's IPv6 address, 2001:db8::1.
    #[rhai_fn(get = "ip6", pure)]
    pub fn ip6(_internet: &mut InternetHandle) -> String {
        INTERNET_IP6.to_string()
    }
    #[rhai_fn(name = "to_string", name = "to_debug", pure)]
    pub fn show(_internet: &mut InternetHandle) -> String {
        format!("internet {INTERNET_IP}")
    }
}

// Rhai exports a plugin module\'s `pub` functions only.
#[allow(unreachable_pub)]
#[export_module]
mod peering_properties {
    use super::*;

    #[rhai_fn(name = "to_string", name = "to_debug", pure)]
    pub fn show(ctx: NativeCallContext, peering: &mut PeeringHandle) -> String {
        let sh = shared(&ctx);
        let shared = sh.borrow();
        format!("peering {} <-> {}", shared.decls.vpc(peering.a).name, shared.decls.vpc(peering.b).name)
    }
}

/// Registers the handle types under the names scripts see, with their properties.
pub(super) fn register(engine: &mut Engine) {
    engine.register_type_with_name::<VpcHandle>("Vpc");
    engine.register_type_with_name::<SubnetHandle>("Subnet");
    engine.register_type_with_name::<HostHandle>("Host");
    engine.register_type_with_name::<InternetHandle>("Internet");
    engine.register_type_with_name::<PeeringHandle>("Peering");
    engine.register_global_module(exported_module!(vpc_properties).into());
    engine.register_global_module(exported_module!(subnet_properties).into());
    engine.register_global_module(exported_module!(host_properties).into());
    engine.register_global_module(exported_module!(internet_properties).into());
    engine.register_global_module(exported_module!(peering_properties).into());
}
