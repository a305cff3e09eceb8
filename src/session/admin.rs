//! The commands that change an applied network without a script — `destroy`, `policy
//! apply` — and what `status` and `reference` need.

use std::path::Path;

use super::effects::HeldBack;
use super::runner::{RuleCounter, Runner};
use super::{Failure, Target, read};
use crate::model::{self, Network, Protected};
use crate::plan::{Plan, Summary};
use crate::script::Interpreter;

/// A VPC name that nothing applied has, with the names that are.
pub(crate) fn unknown_vpc(applied: &Network, name: &str) -> Failure {
    let known: Vec<_> = applied.vpcs.iter().map(|v| v.name.as_str()).collect();
    let help = if known.is_empty() {
        "no VPCs are applied here".to_string()
    } else {
        format!("applied VPCs: {}", known.join(", "))
    };
    Failure::refused(format!("no VPC named `{name}` is applied here"), Some(&help))
}

/// Removes the named VPCs, or everything this scope owns (the sandbox included).
pub(crate) fn destroy(target: &Target, vpcs: &[String]) -> Result<Summary, Failure> {
    let mut runner = Runner::open(target)?;
    let current = runner.network().clone();
    let stack_vpcs: Vec<String>;
    let vpcs = match (&target.stack, vpcs) {
        (Some(stack), []) => {
            stack_vpcs = runner.state().stack_vpcs(stack).into_iter().collect();
            if stack_vpcs.is_empty() {
                let stacks: Vec<&str> = runner.state().stacks.keys().map(String::as_str).collect();
                let help = if stacks.is_empty() {
                    "no stacks are applied here".into()
                } else {
                    format!("stacks: {}", stacks.join(", "))
                };
                return Err(Failure::refused(
                    format!("no stack named `{stack}` is applied here"),
                    Some(&help),
                ));
            }
            &stack_vpcs[..]
        }
        _ => vpcs,
    };
    let network = if vpcs.is_empty() {
        Network::default()
    } else {
        if let Some(name) = vpcs.iter().find(|name| current.vpc(name).is_none()) {
            return Err(unknown_vpc(&current, name));
        }
        current.without(vpcs)
    };
    let summary = runner.converge(&network, vpcs.is_empty())?;
    if vpcs.is_empty() {
        // Logs belong to the processes just stopped; nothing of this scope is left, and a
        // sandbox's own directory (its lock) goes too.
        let _ = std::fs::remove_dir_all(runner.log_dir());
        if target.sandbox.is_some() {
            let _ = std::fs::remove_dir_all(target.dir());
        }
    }
    Ok(summary)
}

/// What each of vpcsh's rules has matched (`status --counters`).
pub(crate) fn counters(target: &Target) -> Result<Vec<RuleCounter>, Failure> {
    Ok(Runner::open(target)?.counters()?)
}

/// vpcsh's rules with what made them, without their counts (what `vpcsh flows` names).
pub(crate) fn rules(target: &Target) -> Result<Vec<RuleCounter>, Failure> {
    Ok(Runner::open(target)?.rules()?)
}

/// `vpcsh policy apply FILE.json [--vpc VPC]`: a seed-format policy, or a list of them,
/// each onto the applied subnet whose CIDR it names; all of them in one apply.
pub(crate) fn apply_policy(target: &Target, path: &Path, vpc: Option<&str>) -> Result<Summary, Failure> {
    let name = path.display().to_string();
    let seeds = model::policy::read_seeds(&read(path)?).map_err(|e| {
        Failure::refused(format!("{name}: {e}"), Some("see `vpcsh policy --help` for the format"))
    })?;
    let mut runner = Runner::open(target)?;
    let mut network = runner.network().clone();
    for seed in &seeds {
        let Some(cidr) = seed.subnet else {
            return Err(Failure::refused(
                format!("{name}: a policy names no subnet"),
                Some("add \"subnet\": \"10.0.1.0/24\" (the CIDR of the subnet to protect)"),
            ));
        };
        let (vpc_name, subnet) = subnet_with(&network, cidr, vpc)?;
        let firewall = model::Firewall {
            vpc: vpc_name,
            protects: Protected::Subnet(subnet),
            ingress: seed.ingress.iter().map(|r| r.to_firewall_rule()).collect(),
            egress: seed.egress.iter().map(|r| r.to_firewall_rule()).collect(),
            origin: Some(name.clone()),
        };
        network.firewalls.retain(|f| !f.same_target(&firewall));
        network.firewalls.push(firewall);
    }
    Ok(runner.converge(&network, false)?)
}

/// The one applied subnet with this CIDR (in `vpc`, when given): its VPC and name.
fn subnet_with(
    network: &Network,
    cidr: ipnetwork::Ipv4Network,
    vpc: Option<&str>,
) -> Result<(String, String), Failure> {
    let matches: Vec<(String, String)> = network
        .vpcs
        .iter()
        .filter(|v| vpc.is_none_or(|name| v.name == name))
        .flat_map(|v| {
            v.subnets.iter().filter(|s| s.cidr == cidr).map(move |s| (v.name.clone(), s.name.clone()))
        })
        .collect();
    match &matches[..] {
        [one] => Ok(one.clone()),
        [] => {
            let scope = vpc.map_or(String::new(), |v| format!(" in VPC `{v}`"));
            Err(Failure::refused(format!("no applied subnet has CIDR {cidr}{scope}"), None))
        }
        many => {
            let list: Vec<String> = many.iter().map(|(v, s)| format!("{v}/{s}")).collect();
            Err(Failure::refused(
                format!("CIDR {cidr} is a subnet of several VPCs: {}", list.join(", ")),
                Some("pass --vpc VPC to choose one"),
            ))
        }
    }
}

/// Rhai definitions of the script API, for editors' completion.
pub(crate) fn definitions() -> String {
    let held_back = HeldBack { sandboxed: true, log: Vec::new() };
    Interpreter::new(Box::new(held_back), Network::default()).definitions()
}

/// What is applied here (nothing, when nothing is).
pub(crate) fn applied(target: &Target) -> Result<Network, Failure> {
    target.check()?;
    let state = crate::state::peek(&target.dir()).map_err(super::runner::state_failure)?;
    Ok(state.map(|s| s.network).unwrap_or_default())
}

/// The script API reference (every function and property, from the engine's own doc
/// comments) as Markdown.
pub(crate) fn reference() -> String {
    let held_back = HeldBack { sandboxed: true, log: Vec::new() };
    Interpreter::new(Box::new(held_back), Network::default()).reference().markdown()
}

/// Other tools' chains on the machine that drop VPC traffic and that vpcsh cannot open,
/// read from the machine alone (not the whole network, as `status_plan` does).
pub(crate) fn blocking_chains(target: &Target) -> Result<Vec<String>, Failure> {
    let mut runner = Runner::open(target)?;
    Ok(runner.blocking_chains()?)
}

/// The plan that would repair drift: what `status` reports on.
pub(crate) fn status_plan(target: &Target) -> Result<(Runner, Plan), Failure> {
    let mut runner = Runner::open(target)?;
    let network = runner.network().clone();
    if network.vpcs.is_empty() && runner.state().namespaces.is_empty() {
        return Ok((runner, Plan::default()));
    }
    let plan = runner.plan(&network, false)?;
    Ok((runner, plan))
}
