//! One run of vpcsh against one scope (the real host, or a sandbox): scripts through the
//! interpreter, effects through plan and exec, ownership through state.

mod effects;
mod runner;

use std::path::{Path, PathBuf};

use crate::diag::{self, Diag};
use crate::model::{self, Network, names};
use crate::plan::naming::Naming;
use crate::plan::{Plan, Summary};
use crate::script::{EffectError, Interpreter, ScriptError};
use crate::state;

pub(crate) use effects::Interactive;
use effects::{HeldBack, Live};
pub(crate) use runner::Runner;

/// Where a run works: the state directory, and the sandbox if any.
#[derive(Clone, Debug)]
pub(crate) struct Target {
    pub state_dir: PathBuf,
    pub sandbox: Option<String>,
    /// Prefix of namespace names on the real host (`vpcsh`).
    pub prefix: String,
    /// The real host's interface towards the internet; default: the default route's.
    pub uplink: Option<String>,
}

impl Target {
    pub(crate) fn naming(&self) -> Naming {
        match &self.sandbox {
            Some(name) => Naming::sandbox(name),
            None => Naming::real_host(&self.prefix),
        }
    }
    pub(crate) fn dir(&self) -> PathBuf {
        state::scope_dir(&self.state_dir, self.sandbox.as_deref())
    }
    /// Checks the sandbox name against the naming rule.
    pub(crate) fn check(&self) -> Result<(), Diag> {
        if let Some(why) = names::name_problem(&self.prefix) {
            return Err(Diag::plain(format!("invalid prefix: {why}"), Some(names::NAME_RULE_HELP.into())));
        }
        let Some(name) = &self.sandbox else { return Ok(()) };
        if let Some(why) = names::name_problem(name) {
            return Err(Diag::plain(
                format!("invalid sandbox name: {why}"),
                Some(names::NAME_RULE_HELP.into()),
            ));
        }
        if name == crate::plan::naming::REAL_HOST_PREFIX {
            return Err(Diag::plain(
                "`vpcsh` cannot name a sandbox: it prefixes vpcsh's namespaces on the real host",
                Some("choose another sandbox name".into()),
            ));
        }
        Ok(())
    }
}

/// What a script run should do with the script.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Mode {
    Apply,
    DryRun,
    Plan,
    Check,
}

/// The result of a script run, for the CLI to print.
#[derive(Debug)]
pub(crate) enum Outcome {
    Applied(Summary),
    /// The plan, and the effects held back while planning (`would run: ...`).
    Planned(Plan, Vec<String>),
    Checked {
        vpcs: usize,
        subnets: usize,
        hosts: usize,
    },
}

/// An effect error with no script place to point at, as a diagnostic.
pub(crate) fn effect_diag(e: EffectError) -> Vec<Diag> {
    match e {
        EffectError::Invalid(problems) => {
            problems.iter().map(|p| Diag::plain(p.message.clone(), p.help.clone())).collect()
        }
        EffectError::Failed { message, help, notes } => {
            let help = [help.unwrap_or_default(), notes.join("\n")]
                .into_iter()
                .filter(|s| !s.is_empty())
                .collect::<Vec<_>>()
                .join("\n");
            vec![Diag::plain(message, (!help.is_empty()).then_some(help))]
        }
    }
}

/// Runs a script file: validates it whole with effects held back, then (for `apply`) runs
/// it for real. Any error in the first pass leaves the kernel untouched.
pub(crate) fn run_script(target: &Target, path: &Path, mode: Mode) -> Result<Outcome, Vec<Diag>> {
    target.check().map_err(|d| vec![d])?;
    let name = path.display().to_string();
    let text = std::fs::read_to_string(path)
        .map_err(|e| vec![Diag::plain(format!("cannot read {name}: {e}"), None)])?;
    // `check` needs no privileges: it only peeks at the state, without locking it.
    let mut runner = match mode {
        Mode::Check => None,
        _ => Some(Runner::open(target).map_err(|d| vec![d])?),
    };
    let previous = match &runner {
        Some(r) => r.network().clone(),
        None => state::peek(&target.dir()).map(|s| s.network).unwrap_or_default(),
    };

    let held_back = HeldBack { sandboxed: target.sandbox.is_some(), log: Vec::new() };
    let mut check = Interpreter::new(Box::new(held_back), previous.clone());
    check.quiet();
    let checked = check
        .run(&name, &text)
        .and_then(|()| model::validate(&check.declarations()).map_err(ScriptError::Invalid));
    let network = checked.map_err(|e| diag::from_script_error(&e, &check.sources()))?;
    let warnings = model::warnings(&check.declarations());
    diag::eprint(
        &warnings.iter().map(|w| diag::from_problem(w, &check.sources()).warning()).collect::<Vec<_>>(),
    );

    let Some(mut runner) = runner.take() else {
        let hosts = network.hosts().count();
        let subnets = network.vpcs.iter().map(|v| v.subnets.len()).sum();
        return Ok(Outcome::Checked { vpcs: network.vpcs.len(), subnets, hosts });
    };
    if mode != Mode::Apply {
        let would_run = check.would_run();
        return runner.plan(&network, false).map(|p| Outcome::Planned(p, would_run)).map_err(effect_diag);
    }

    let keep = previous.common(&network);
    let mut live = Interpreter::new(
        Box::new(Live {
            probes: effects::Probes(runner.naming().clone()),
            runner,
            total: Summary::default(),
            keep,
        }),
        previous,
    );
    live.run(&name, &text).map_err(|e| diag::from_script_error(&e, &live.sources()))?;
    live.apply().map(Outcome::Applied).map_err(|e| diag::from_script_error(&e, &live.sources()))
}

/// Removes the named VPCs, or everything this scope owns (the sandbox included).
pub(crate) fn destroy(target: &Target, vpcs: &[String]) -> Result<Summary, Vec<Diag>> {
    let mut runner = Runner::open(target).map_err(|d| vec![d])?;
    let current = runner.network().clone();
    let network = if vpcs.is_empty() {
        Network::default()
    } else {
        for name in vpcs {
            if current.vpc(name).is_none() {
                let known: Vec<_> = current.vpcs.iter().map(|v| v.name.as_str()).collect();
                let help = if known.is_empty() {
                    "no VPCs are applied here".to_string()
                } else {
                    format!("applied VPCs: {}", known.join(", "))
                };
                return Err(vec![Diag::plain(format!("no VPC named `{name}` is applied here"), Some(help))]);
            }
        }
        current.without(vpcs)
    };
    let summary = runner.converge(&network, vpcs.is_empty()).map_err(effect_diag)?;
    if vpcs.is_empty() {
        // Logs belong to the processes just stopped; nothing of this scope is left.
        let _ = std::fs::remove_dir_all(runner.log_dir());
    }
    Ok(summary)
}

/// `vpcsh policy apply FILE.json [--vpc VPC]`: a seed-format policy onto the applied subnet
/// whose CIDR it names.
pub(crate) fn apply_policy(target: &Target, path: &Path, vpc: Option<&str>) -> Result<Summary, Vec<Diag>> {
    let name = path.display().to_string();
    let text = std::fs::read_to_string(path)
        .map_err(|e| vec![Diag::plain(format!("cannot read {name}: {e}"), None)])?;
    let seed = crate::script::policy::seed_firewall(&text).map_err(|e| {
        vec![Diag::plain(format!("{name}: {e}"), Some("see `vpcsh policy --help` for the format".into()))]
    })?;
    let Some(cidr) = seed.subnet else {
        return Err(vec![Diag::plain(
            format!("{name} names no subnet"),
            Some("add \"subnet\": \"10.0.1.0/24\" (the CIDR of the subnet to protect)".into()),
        )]);
    };
    let mut runner = Runner::open(target).map_err(|d| vec![d])?;
    let mut network = runner.network().clone();
    let matches: Vec<(String, String)> = network
        .vpcs
        .iter()
        .filter(|v| vpc.is_none_or(|name| v.name == name))
        .flat_map(|v| {
            v.subnets
                .iter()
                .filter(|s| s.cidr.to_string() == cidr)
                .map(move |s| (v.name.clone(), s.name.clone()))
        })
        .collect();
    let (vpc_name, subnet) = match &matches[..] {
        [one] => one.clone(),
        [] => {
            let scope = vpc.map_or(String::new(), |v| format!(" in VPC `{v}`"));
            return Err(vec![Diag::plain(format!("no applied subnet has CIDR {cidr}{scope}"), None)]);
        }
        many => {
            let list: Vec<String> = many.iter().map(|(v, s)| format!("{v}/{s}")).collect();
            return Err(vec![Diag::plain(
                format!("CIDR {cidr} is a subnet of several VPCs: {}", list.join(", ")),
                Some("pass --vpc VPC to choose one".into()),
            )]);
        }
    };
    network.firewalls.retain(|f| !(f.vpc == vpc_name && f.subnet.as_deref() == Some(subnet.as_str())));
    network.firewalls.push(model::Firewall {
        vpc: vpc_name,
        subnet: Some(subnet),
        host: None,
        ingress: seed.ingress,
        egress: seed.egress,
    });
    runner.converge(&network, false).map_err(effect_diag)
}

/// The plan that would repair drift: what `status` reports on.
pub(crate) fn status_plan(target: &Target) -> Result<(Runner, Plan), Vec<Diag>> {
    let mut runner = Runner::open(target).map_err(|d| vec![d])?;
    let network = runner.network().clone();
    if network.vpcs.is_empty() && runner.state().namespaces.is_empty() {
        return Ok((runner, Plan::default()));
    }
    let plan = runner.plan(&network, false).map_err(effect_diag)?;
    Ok((runner, plan))
}
