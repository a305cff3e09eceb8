//! `node()`: the machines a script spreads its VPCs over, and the `nodes`/`node` options
//! that place subnets and hosts on them.

use rhai::plugin::*;
use rhai::{Array, Dynamic, Map, NativeCallContext};

use super::context::{Res, Shared, check_options, option_type_error, option_value_error, shared, span};
use crate::model::fabric::{Control, FabricDecl, NodeDecl, NodeId};
use crate::model::{HostRef, Problem};

/// A node as `node()` returns it.
#[derive(Clone, Debug)]
pub(crate) struct NodeHandle(pub NodeId);

fn declare_node(ctx: &NativeCallContext, name: &str, opts: Map) -> Res<NodeHandle> {
    let sh = shared(ctx);
    let mut shared = sh.borrow_mut();
    check_options(ctx, &shared, "node", &opts, &["underlay"])?;
    let span = span(&shared, ctx);
    let underlay = match opts.get("underlay") {
        Some(v) if v.is_string() => {
            let text = v.clone().into_string().unwrap_or_default();
            // A bare address is on a /24, the usual size of a lab's machine network.
            let with_prefix = if text.contains('/') { text.clone() } else { format!("{text}/24") };
            match with_prefix.parse() {
                Ok(net) => Some(net),
                Err(_) => {
                    let p = Problem::new(format!("`{text}` is not an IPv4 address"), span, "invalid address")
                        .help("write the node's underlay address as a.b.c.d or a.b.c.d/prefix");
                    shared.decls.problems.push(p);
                    None
                }
            }
        }
        Some(v) => return option_type_error(ctx, &shared, "underlay", "a string like \"192.0.2.11\"", v),
        None => {
            let p = Problem::new(format!("node `{name}` has no underlay address"), span, "no `underlay`")
                .help("add #{ underlay: \"192.0.2.11\" }: the address other nodes reach it at");
            shared.decls.problems.push(p);
            None
        }
    };
    shared.decls.nodes.push(NodeDecl { name: name.into(), underlay, span });
    Ok(NodeHandle(NodeId(shared.decls.nodes.len() - 1)))
}

fn declare_fabric(ctx: &NativeCallContext, opts: Map) -> Res<()> {
    let sh = shared(ctx);
    let mut shared = sh.borrow_mut();
    check_options(ctx, &shared, "fabric", &opts, &["control"])?;
    let control = match opts.get("control") {
        None => Control::Static,
        Some(v) => match v.clone().into_string().as_deref() {
            Ok("static") => Control::Static,
            Ok("evpn") => Control::Evpn,
            Ok(_) => return option_value_error(ctx, &shared, "control", "\"static\" or \"evpn\"", v),
            Err(_) => return option_type_error(ctx, &shared, "control", "\"static\" or \"evpn\"", v),
        },
    };
    let span = span(&shared, ctx);
    shared.decls.fabric = Some(FabricDecl { control, span });
    Ok(())
}

/// The `nodes` option of `subnet()`: a list of nodes.
pub(super) fn nodes_option(ctx: &NativeCallContext, shared: &Shared, opts: &Map) -> Res<Option<Vec<NodeId>>> {
    let Some(v) = opts.get("nodes") else { return Ok(None) };
    let Some(list) = v.clone().try_cast::<Array>() else {
        return option_type_error(ctx, shared, "nodes", "a list of nodes", v);
    };
    let mut out = Vec::new();
    for item in list {
        match item.clone().try_cast::<NodeHandle>() {
            Some(n) if !out.contains(&n.0) => out.push(n.0),
            Some(_) => {}
            None => return option_type_error(ctx, shared, "nodes", "a list of nodes (from node())", &item),
        }
    }
    Ok(Some(out))
}

/// The `node` option of `host()`.
pub(super) fn node_option(ctx: &NativeCallContext, shared: &Shared, opts: &Map) -> Res<Option<NodeId>> {
    match opts.get("node") {
        None => Ok(None),
        Some(v) => match v.clone().try_cast::<NodeHandle>() {
            Some(n) => Ok(Some(n.0)),
            None => option_type_error(ctx, shared, "node", "a node (from node())", v),
        },
    }
}

/// The node a host runs on, as validation will place it; `()` without nodes.
pub(super) fn host_node(shared: &Shared, host: HostRef) -> Dynamic {
    let decls = &shared.decls;
    if decls.nodes.is_empty() {
        return Dynamic::UNIT;
    }
    if let HostRef::Declared(id) = host
        && let Some(node) = decls.host(id).node
    {
        return Dynamic::from(decls.nodes[node.0].name.clone());
    }
    let subnet = decls.subnet(decls.host_subnet(host));
    let candidates: Vec<String> = match &subnet.nodes {
        Some(ids) => ids.iter().map(|id| decls.nodes[id.0].name.clone()).collect(),
        None => decls.nodes.iter().map(|n| n.name.clone()).collect(),
    };
    let vpc = &decls.vpc(subnet.vpc).name;
    crate::model::fabric::place(vpc, decls.host_name(host), &candidates).map_or(Dynamic::UNIT, Dynamic::from)
}

/// The fabric functions of the script API. Their `///` comments are the reference.
// Rhai exports a plugin module\'s `pub` functions only.
#[allow(unreachable_pub)]
#[export_module]
mod api {
    use super::*;

    /// Declares a machine that VPCs spread over: `#{ underlay: "192.0.2.11" }` is the
    /// address other nodes reach it at (a /24 unless written `a.b.c.d/prefix`). Subnets span
    /// every node unless `#{ nodes: [n1, n2] }`; a host runs where `#{ node: n1 }` pins it,
    /// else on the node placement picks. Each machine runs the same script with
    /// `vpcsh --node NAME` and builds its part; subnets cross nodes over VXLAN.
    #[rhai_fn(return_raw)]
    pub fn node(ctx: NativeCallContext, name: &str, opts: Map) -> Res<NodeHandle> {
        declare_node(&ctx, name, opts)
    }

    /// Sets how nodes learn where MACs and other nodes are: `#{ control: "static" }` (the
    /// default: vpcsh gives each node the others' addresses, MACs are learned from traffic)
    /// or `#{ control: "evpn" }` (BGP EVPN: FRR on each node advertises its MACs and itself;
    /// needs FRR installed).
    #[rhai_fn(return_raw)]
    pub fn fabric(ctx: NativeCallContext, opts: Map) -> Res<()> {
        declare_fabric(&ctx, opts)
    }

    /// The node's name.
    #[rhai_fn(get = "name", pure)]
    pub fn name(ctx: NativeCallContext, node: &mut NodeHandle) -> String {
        shared(&ctx).borrow().decls.nodes[node.0.0].name.clone()
    }
    /// The node's underlay address, or `()` when it did not parse.
    #[rhai_fn(get = "underlay", pure)]
    pub fn underlay(ctx: NativeCallContext, node: &mut NodeHandle) -> Dynamic {
        let sh = shared(&ctx);
        let shared = sh.borrow();
        shared.decls.nodes[node.0.0].underlay.map_or(Dynamic::UNIT, |n| Dynamic::from(n.ip().to_string()))
    }
    #[rhai_fn(name = "to_string", name = "to_debug", pure)]
    pub fn show(ctx: NativeCallContext, node: &mut NodeHandle) -> String {
        let sh = shared(&ctx);
        let shared = sh.borrow();
        let d = &shared.decls.nodes[node.0.0];
        match d.underlay {
            Some(u) => format!("node {} {}", d.name, u.ip()),
            None => format!("node {}", d.name),
        }
    }
}

pub(super) fn register(engine: &mut rhai::Engine) {
    engine.register_type_with_name::<NodeHandle>("Node");
    engine.register_global_module(exported_module!(api).into());
}
