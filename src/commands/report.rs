//! `status` and `list`: what vpcsh owns, as text or JSON.

use std::process::ExitCode;

use serde_json::{Value, json};

use crate::exec::process::Condition;
use crate::model::Network;
use crate::plan::naming::Naming;
use crate::plan::{Op, Owner, Passage, Plan};
use crate::session::{self, Failure, Target};
use crate::state;

/// Status of one model object: `ok`, `missing` (its namespace or bridge is gone),
/// `drifted` (there, but different) or, for a VPC, `blocked` (another tool's firewall drops
/// its traffic and vpcsh cannot open it), with the operations that would repair it.
fn object_status(plan: &Plan, owner: &Owner) -> ObjectStatus {
    let steps: Vec<_> = plan.steps.iter().filter(|s| s.owner == *owner).collect();
    let missing = steps.iter().any(|s| matches!(s.op, Op::CreateNetns { .. } | Op::CreateBridge { .. }));
    let mut repairs: Vec<String> = steps.iter().map(|s| s.op.to_string()).collect();
    let mut blocked = Vec::new();
    if let Owner::Vpc(_) = owner {
        for (chain, passage) in &plan.host_firewall {
            match passage {
                Passage::Blocked => blocked.push(format!("chain {chain}")),
                Passage::Opening => {
                    repairs.push(format!("let its traffic through the host firewall ({chain})"))
                }
                Passage::Open | Passage::Unneeded => {}
            }
        }
    }
    let why = (!blocked.is_empty()).then(|| format!("by the host firewall ({})", blocked.join(", ")));
    let status = match (missing, &why, repairs.is_empty()) {
        (true, ..) => "missing",
        (false, Some(_), _) => "blocked",
        (false, None, true) => "ok",
        (false, None, false) => "drifted",
    };
    ObjectStatus { status, why, repairs }
}

struct ObjectStatus {
    status: &'static str,
    /// Why a blocked object is blocked.
    why: Option<String>,
    repairs: Vec<String>,
}

/// What vpcsh found of other tools' firewalls on the machine, a line per chain.
fn host_firewall_lines(plan: &Plan) -> Vec<String> {
    plan.host_firewall
        .iter()
        .map(|(chain, passage)| {
            format!("host firewall: {chain} drops what it does not accept; {passage} ({})", chain.rules_in)
        })
        .collect()
}

/// `vpcsh status`: each object ok, missing or drifted (with its repairs), and processes.
pub(crate) fn status(target: &Target, json: bool) -> Result<ExitCode, Failure> {
    let (runner, plan) = session::status_plan(target)?;
    let network = runner.network();
    let mut owners: Vec<Owner> = Vec::new();
    if runner.naming().sandbox && !runner.state().namespaces.is_empty() {
        owners.extend([Owner::Sandbox, Owner::Internet]);
    }
    owners.extend(network.peerings.iter().map(|p| Owner::Peering { a: p.a.clone(), b: p.b.clone() }));
    for vpc in &network.vpcs {
        owners.push(Owner::Vpc(vpc.name.clone()));
        for subnet in &vpc.subnets {
            owners.push(Owner::Subnet { vpc: vpc.name.clone(), subnet: subnet.name.clone() });
            owners.extend(
                subnet.hosts.iter().map(|h| Owner::Host { vpc: vpc.name.clone(), host: h.name.clone() }),
            );
        }
    }
    let objects: Vec<(Owner, ObjectStatus)> = owners
        .into_iter()
        .map(|o| {
            let s = object_status(&plan, &o);
            (o, s)
        })
        .collect();
    let processes = runner.state().processes.clone();
    let nodes = session::node_statuses(&runner);
    let healthy = objects.iter().all(|(_, s)| s.status == "ok") && nodes.iter().all(|n| n.ok);
    if json {
        let value = json!({
            "objects": objects.iter().map(|(o, s)| json!({
                "object": o.to_string(), "kind": o.kind(), "name": o.name(), "status": s.status,
                "why": s.why, "repairs": s.repairs,
                "stack": match o { Owner::Vpc(v) => runner.state().stack_of(v), _ => None },
            })).collect::<Vec<_>>(),
            "nodes": nodes.iter().map(|n| json!({
                "name": n.name, "underlay": n.underlay, "state": n.state, "routes": n.routes, "ok": n.ok,
            })).collect::<Vec<_>>(),
            "host_firewall": plan.host_firewall.iter().map(|(c, p)| json!({
                "family": c.family, "table": c.table, "chain": c.chain, "rules_in": c.rules_in,
                "writable": c.writable, "passage": format!("{p:?}").to_lowercase(),
            })).collect::<Vec<_>>(),
            "processes": processes.iter().map(|p| {
                let condition = p.condition();
                let exit_code = match condition { Condition::Exited(code) => Some(code), _ => None };
                json!({
                    "netns": p.ns, "pid": p.pid, "alive": condition == Condition::Alive,
                    "condition": condition.to_string(), "exit_code": exit_code, "argv": p.argv, "log": p.log,
                })
            }).collect::<Vec<_>>(),
        });
        println!("{}", super::document("status", value));
    } else if objects.is_empty() {
        println!("nothing is applied here");
    } else {
        for (object, s) in &objects {
            let status = s.status;
            match object {
                Owner::Vpc(vpc) => {
                    println!("{status:<8} {object} (stack {})", runner.state().stack_of(vpc).unwrap_or("-"))
                }
                _ => println!("{status:<8} {object}"),
            }
            s.why.iter().for_each(|why| println!("           {why}"));
            s.repairs.iter().for_each(|r| println!("           needs: {r}"));
        }
        for n in &nodes {
            let routes = n.routes.map(|r| format!(", {r} routes received")).unwrap_or_default();
            println!(
                "{:<8} node {} {}: {}{routes}",
                if n.ok { "ok" } else { "down" },
                n.name,
                n.underlay,
                n.state
            );
        }
        host_firewall_lines(&plan).iter().for_each(|l| println!("{l}"));
        for p in &processes {
            println!("{:<8} process {} in {} (pid {})", p.condition().to_string(), p.process, p.ns, p.pid);
        }
    }
    Ok(if healthy { ExitCode::SUCCESS } else { ExitCode::from(1) })
}

/// `vpcsh list`: VPCs, subnets, hosts, addresses and peerings, from the state.
pub(crate) fn list(target: &Target, json: bool) -> Result<(), Failure> {
    target.check()?;
    let state = state::peek(&target.dir()).map_err(|e| Failure::refused(e.to_string(), None))?;
    let state = state.unwrap_or_default();
    let stack_of = |vpc: &str| state.stack_of(vpc).unwrap_or("-").to_string();
    // Grouped by stack, each in its declaration order.
    let mut network = state.network.clone();
    network.vpcs.sort_by_key(|v| stack_of(&v.name));
    let naming = target.naming();
    let here = state.node.as_deref();
    if json {
        println!("{}", super::document("list", list_json(&network, &naming, &stack_of, here)));
        return Ok(());
    }
    if network.vpcs.is_empty() {
        println!("no VPCs");
    }
    for n in &network.nodes {
        let this = if Some(n.name.as_str()) == here { " (this machine)" } else { "" };
        println!("node {} underlay {}{this}", n.name, n.underlay);
    }
    for p in &network.peerings {
        let list =
            |nets: &[ipnetwork::IpNetwork]| nets.iter().map(|n| n.to_string()).collect::<Vec<_>>().join(", ");
        println!(
            "peering {} <-> {}: {} <-> {}{}",
            p.a,
            p.b,
            list(&p.a_allowed),
            list(&p.b_allowed),
            impaired(p.impairment)
        );
    }
    for v in &network.vpcs {
        println!(
            "vpc {} {}{}{} (stack {}, netns {})",
            v.name,
            v.cidr,
            v6(v.cidr6),
            if v.host_access { ", host access" } else { "" },
            stack_of(&v.name),
            naming.router_ns(&v.name)
        );
        for s in &v.subnets {
            let kind = if s.public { "public" } else { "private" };
            let spread = match s.vni {
                Some(vni) => format!(", vni {vni} on {}", s.nodes.join(", ")),
                None => String::new(),
            };
            println!(
                "  subnet {} {}{} {kind}, gateway {}{}{spread}",
                s.name,
                s.cidr,
                v6(s.cidr6),
                s.gateway,
                v6(s.gateway6())
            );
            for h in &s.hosts {
                let at = match &h.node {
                    Some(node) if Some(node.as_str()) != here => format!("on node {node}"),
                    Some(node) => format!("netns {}, node {node}", naming.host_ns(&v.name, &h.name)),
                    None => format!("netns {}", naming.host_ns(&v.name, &h.name)),
                };
                println!("    host {} {}{} ({at}){}", h.name, h.ip, v6(h.ip6), impaired(h.impairment));
            }
        }
    }
    Ok(())
}

/// `vpcsh status --counters`: every rule of vpcsh's, namespace by namespace, with what it
/// has matched and what made it.
pub(crate) fn counters(target: &Target, json: bool) -> Result<ExitCode, Failure> {
    target.check()?;
    let counters = session::counters(target)?;
    if json {
        let rules: Vec<Value> = counters
            .iter()
            .map(|c| {
                json!({
                    "netns": c.ns, "chain": c.chain, "rule": c.rule, "origin": c.origin,
                    "packets": c.counts.map(|(p, _)| p), "bytes": c.counts.map(|(_, b)| b),
                })
            })
            .collect();
        println!("{}", super::document("counters", json!({ "rules": rules })));
        return Ok(ExitCode::SUCCESS);
    }
    if counters.is_empty() {
        println!("no rules");
    }
    let mut last = None;
    for c in &counters {
        if last != Some((&c.ns, &c.chain)) {
            println!("{} {}", c.ns, c.chain);
            last = Some((&c.ns, &c.chain));
        }
        let counts = c.counts.map_or("    missing".to_string(), |(p, b)| format!("{p:>7} pkts {b:>9} bytes"));
        let origin = c.origin.as_ref().map_or(String::new(), |o| format!("  ({o})"));
        println!("  {counts}  {}{origin}", c.rule);
    }
    Ok(ExitCode::SUCCESS)
}

/// `list --json`: VPCs with their subnets and hosts, peerings, and in a fabric its nodes
/// (`here`: the one this machine is).
fn list_json(
    network: &Network,
    naming: &Naming,
    stack_of: &dyn Fn(&str) -> String,
    here: Option<&str>,
) -> Value {
    let impaired = |i: Option<crate::model::impair::Impairment>| i.map(|i| i.to_string());
    let vpcs: Vec<Value> = network
        .vpcs
        .iter()
        .map(|v| {
            json!({
                "name": v.name, "cidr": v.cidr.to_string(), "cidr6": v.cidr6.map(|n| n.to_string()),
                "host_access": v.host_access, "netns": naming.router_ns(&v.name),
                "stack": stack_of(&v.name),
                "subnets": v.subnets.iter().map(|s| json!({
                    "name": s.name, "cidr": s.cidr.to_string(), "public": s.public,
                    "gateway": s.gateway.to_string(), "cidr6": s.cidr6.map(|n| n.to_string()),
                    "gateway6": s.gateway6().map(|g| g.to_string()),
                    "vni": s.vni, "nodes": s.nodes,
                    "hosts": s.hosts.iter().map(|h| json!({
                        "name": h.name, "ip": h.ip.to_string(), "ip6": h.ip6.map(|ip| ip.to_string()),
                        "netns": naming.host_ns(&v.name, &h.name), "impairment": impaired(h.impairment),
                        "node": h.node,
                    })).collect::<Vec<_>>(),
                })).collect::<Vec<_>>(),
            })
        })
        .collect();
    let peerings: Vec<Value> = network
        .peerings
        .iter()
        .map(|p| {
            json!({
                "a": p.a, "b": p.b, "a_allowed": p.a_allowed, "b_allowed": p.b_allowed,
                "impairment": impaired(p.impairment),
            })
        })
        .collect();
    let mut doc = json!({ "vpcs": vpcs, "peerings": peerings });
    if network.is_fabric() {
        doc["nodes"] =
            json!(network.nodes.iter().map(|n| json!({
            "name": n.name, "underlay": n.underlay.to_string(), "this": Some(n.name.as_str()) == here,
        })).collect::<Vec<_>>());
    }
    doc
}

/// What an impaired link does, after what it links.
fn impaired(impairment: Option<crate::model::impair::Impairment>) -> String {
    impairment.map_or(String::new(), |i| format!(", impaired: {i}"))
}

/// An IPv6 prefix or address after its IPv4 one, when there is one.
fn v6(value: Option<impl std::fmt::Display>) -> String {
    value.map(|v| format!(" {v}")).unwrap_or_default()
}
