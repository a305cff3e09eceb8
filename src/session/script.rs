//! Running a script file: a held-back pass that validates everything (against the other
//! stacks too), then, for `apply`, the run for real, with deletes agreed to first.

use std::path::Path;

use super::effects::{self, HeldBack, Live};
use super::runner::{self, Runner};
use super::stacks::{self, StackName};
use super::{Deletions, Failure, Mode, Outcome, Target, Ui, Warnings, read};
use crate::model::{self, Network, Problem, Span};
use crate::plan::Summary;
use crate::script::{Interpreter, ScriptError};
use crate::state;

/// Runs a script file: validates it whole with effects held back, then (for `apply`) runs
/// it for real. Any error in the first pass leaves the kernel untouched, and so does a
/// delete the `ui` does not agree to.
pub(crate) fn run_script(
    target: &Target,
    path: &Path,
    mode: Mode,
    ui: &mut dyn Ui,
) -> Result<Outcome, Failure> {
    target.check()?;
    let stack = StackName::for_script(target, path)?;
    let (name, text) = (path.display().to_string(), read(path)?);
    // `check` needs no privileges: it only peeks at the state, without locking it.
    let mut runner = match mode {
        Mode::Check => None,
        _ => Some(Runner::open(target)?),
    };
    // The kernel is read on the other cores while the script runs.
    runner.iter_mut().for_each(Runner::prefetch);
    let applied = match &runner {
        Some(r) => r.state().clone(),
        None => state::peek(&target.dir()).map_err(runner::state_failure)?.unwrap_or_default(),
    };
    let Checked { network, would_run, deletions, declarer } =
        check_script(target, &stack, &applied, (&name, &text), ui)?;
    let Some(mut runner) = runner else {
        let hosts = network.hosts().count();
        let subnets = network.vpcs.iter().map(|v| v.subnets.len()).sum();
        return Ok(Outcome::Checked { vpcs: network.vpcs.len(), subnets, hosts });
    };
    if mode != Mode::Apply {
        let plan = runner.plan_stack(&stack, &network)?;
        return Ok(Outcome::Planned { plan, would_run, deleting: deletions.vpcs });
    }
    if !deletions.vpcs.is_empty() && !ui.confirm_deletes(&deletions) {
        return Err(refused_deletes(&deletions));
    }
    // Only an `apply()` in the middle of the script needs `keep`, so only a run that runs
    // the script again does.
    let keep = if declarer.is_some() { Network::default() } else { applied.network.common(&network) };
    let probes = effects::Probes::on_node(target, target.node.clone().or_else(|| applied.node.clone()));
    let live = Live { probes, runner, stack, total: Summary::default(), keep };
    // A script that only declares would declare the same again: the first pass applies
    // what it found, instead of running the script twice.
    let mut live = match declarer {
        Some(mut declarer) => {
            declarer.set_effects(Box::new(live));
            declarer
        }
        None => {
            let mut live = Interpreter::new(Box::new(live), applied.network);
            match live.run(&name, &text) {
                Ok(()) | Err(ScriptError::Exit(0)) => {}
                Err(e) => return Err(Failure::script(e, &live)),
            }
            live
        }
    };
    live.apply().map(Outcome::Applied).map_err(|e| Failure::script(e, &live))
}

/// The network a script declares, validated with effects held back (for `graph`).
pub(crate) fn network_of(target: &Target, path: &Path) -> Result<Network, Failure> {
    target.check()?;
    let stack = StackName::for_script(target, path)?;
    let text = read(path)?;
    let applied = state::peek(&target.dir()).map_err(runner::state_failure)?.unwrap_or_default();
    struct Quiet;
    impl Ui for Quiet {
        fn warn(&mut self, _: Warnings) {}
        fn confirm_deletes(&mut self, _: &Deletions) -> bool {
            false
        }
    }
    // A diagram runs nothing: a script written for a sandbox (`internet()`) draws anywhere.
    let sandboxed =
        Target { sandbox: Some(target.sandbox.clone().unwrap_or_else(|| "graph".into())), ..target.clone() };
    Ok(check_script(&sandboxed, &stack, &applied, (&path.display().to_string(), &text), &mut Quiet)?.network)
}

/// What the held-back first pass of a script found.
struct Checked {
    network: Network,
    would_run: Vec<String>,
    deletions: Deletions,
    /// The held-back interpreter, when the script only declared (see
    /// `Interpreter::only_declared`): it holds all a run for real would.
    declarer: Option<Interpreter>,
}

/// Runs a script with effects held back and validates all it declares, against the other
/// stacks too; warnings go to `ui`.
fn check_script(
    target: &Target,
    stack: &StackName,
    applied: &state::State,
    (name, text): (&str, &str),
    ui: &mut dyn Ui,
) -> Result<Checked, Failure> {
    let held_back = HeldBack { sandboxed: target.sandbox.is_some(), log: Vec::new() };
    let mut check = Interpreter::new(Box::new(held_back), applied.network.clone());
    check.quiet();
    let ran = match check.run(name, text) {
        Err(ScriptError::Exit(0)) => Ok(()),
        other => other,
    };
    let checked = ran.and_then(|()| {
        let decls = check.declarations();
        if decls.vpcs.is_empty() && !decls.destroyed_all {
            return Err(ScriptError::Invalid(vec![declares_nothing(&stack.name)]));
        }
        let network = model::validate(&decls).map_err(ScriptError::Invalid)?;
        let mut clashes = stacks::clashes(applied, &stack.name, &decls);
        clashes.extend(ceiling(&network, &decls, target.max_namespaces));
        if clashes.is_empty() { Ok((network, decls)) } else { Err(ScriptError::Invalid(clashes)) }
    });
    let (network, decls) = checked.map_err(|e| Failure::script(e, &check))?;
    let problems = model::warnings(&decls);
    if !problems.is_empty() {
        ui.warn(Warnings { problems, sources: check.sources() });
    }
    // What the stack has and the script no longer declares (destroy() calls aside: asked for).
    let destroyed: Vec<&str> = decls.vpcs.iter().filter(|v| v.removed).map(|v| v.name.as_str()).collect();
    let had = applied.stack_vpcs(&stack.name);
    let vpcs: Vec<String> = had
        .iter()
        .filter(|v| network.vpc(v).is_none() && !destroyed.contains(&v.as_str()) && !decls.destroyed_all)
        .cloned()
        .collect();
    let deletions =
        Deletions { stack: stack.name.clone(), all: !had.is_empty() && vpcs.len() == had.len(), vpcs };
    let would_run = check.would_run();
    let declarer = check.only_declared().then_some(check);
    Ok(Checked { network, would_run, deletions, declarer })
}

fn declares_nothing(stack: &str) -> Problem {
    Problem::new("this script declares nothing", Span::default(), "empty").help(format!(
        "a script declares the VPCs it owns; an empty one is not taken as \"delete stack `{stack}`\": \
             that is `vpcsh destroy --stack {stack}`"
    ))
}

/// The ceiling on namespaces, at the VPC that would pass it: a typo in a loop bound should
/// be a diagnostic, not a hundred thousand namespaces.
fn ceiling(network: &Network, decls: &model::Declarations, max: usize) -> Option<Problem> {
    let mut made = 0;
    for vpc in &network.vpcs {
        made += 1 + vpc.subnets.iter().map(|s| s.hosts.len()).sum::<usize>();
        if made > max {
            let total: usize = network.vpcs.len() + network.hosts().count();
            let span = decls.vpc_by_name(&vpc.name).map_or(Span::default(), |id| decls.vpc(id).span);
            return Some(
                Problem::new(
                    format!("this script makes {total} network namespaces; one script makes at most {max}"),
                    span,
                    "the ceiling is passed here",
                )
                .help(
                    "a VPC is one namespace and so is each host; raise the ceiling with --max-namespaces N",
                ),
            );
        }
    }
    None
}

fn refused_deletes(d: &Deletions) -> Failure {
    let what = if d.all { "every VPC".to_string() } else { format!("VPC(s) {}", d.vpcs.join(", ")) };
    Failure::refused(
        format!("not applied: it would delete {what} of stack `{}` ({})", d.stack, d.vpcs.join(", ")),
        Some(&format!(
            "the script no longer declares them; pass --yes to delete them, or remove the stack with \
             `vpcsh destroy --stack {}`",
            d.stack
        )),
    )
}
