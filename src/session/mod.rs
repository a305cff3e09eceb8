//! One run of vpcsh against one scope (the real host, or a sandbox): scripts through the
//! interpreter, effects through plan and exec, ownership through state. Results and
//! failures are data (`Outcome`, `Failure`); the interfaces above decide how to show them.

mod effects;
mod runner;

use std::path::{Path, PathBuf};

use crate::model::{self, Network, Problem, Protected, names};
use crate::plan::naming::Naming;
use crate::plan::{Plan, Summary};
use crate::script::{EffectError, Interpreter, ScriptError, Source};
use crate::state;

pub(crate) use effects::Interactive;
use effects::{HeldBack, Live};
pub(crate) use runner::Runner;

/// Why a run stopped or was refused.
#[derive(Debug)]
pub(crate) enum Failure {
    /// The script is wrong: its problems or fault, with the sources their spans point into.
    Script { error: ScriptError, sources: Vec<Source> },
    /// Declarations that do not validate, with no script text at hand to point into.
    Problems(Vec<Problem>),
    /// The system or the request was refused: what happened, what to do, further detail.
    Refused { message: String, help: Option<String>, notes: Vec<String> },
}

impl Failure {
    pub(crate) fn refused(message: impl Into<String>, help: Option<&str>) -> Self {
        Failure::Refused { message: message.into(), help: help.map(Into::into), notes: Vec::new() }
    }

    fn script(error: ScriptError, interpreter: &Interpreter) -> Self {
        Failure::Script { error, sources: interpreter.sources() }
    }
}

impl From<EffectError> for Failure {
    fn from(e: EffectError) -> Self {
        match e {
            EffectError::Invalid(problems) => Failure::Problems(problems),
            EffectError::Failed { message, help, notes } => Failure::Refused { message, help, notes },
        }
    }
}

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
    /// Checks the sandbox name and prefix against the naming rule.
    pub(crate) fn check(&self) -> Result<(), Failure> {
        if let Some(why) = names::name_problem(&self.prefix) {
            return Err(Failure::refused(format!("invalid prefix: {why}"), Some(names::NAME_RULE_HELP)));
        }
        let Some(name) = &self.sandbox else { return Ok(()) };
        if let Some(why) = names::name_problem(name) {
            return Err(Failure::refused(
                format!("invalid sandbox name: {why}"),
                Some(names::NAME_RULE_HELP),
            ));
        }
        if name == crate::plan::naming::REAL_HOST_PREFIX {
            return Err(Failure::refused(
                "`vpcsh` cannot name a sandbox: it prefixes vpcsh's namespaces on the real host",
                Some("choose another sandbox name"),
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

/// Warnings found while validating (a run goes on after them).
pub(crate) struct Warnings {
    pub problems: Vec<Problem>,
    pub sources: Vec<Source>,
}

fn read(path: &Path) -> Result<String, Failure> {
    std::fs::read_to_string(path)
        .map_err(|e| Failure::refused(format!("cannot read {}: {e}", path.display()), None))
}

/// Runs a script file: validates it whole with effects held back, then (for `apply`) runs
/// it for real. Any error in the first pass leaves the kernel untouched. Warnings go to
/// `warn` as soon as they are known.
pub(crate) fn run_script(
    target: &Target,
    path: &Path,
    mode: Mode,
    warn: &mut dyn FnMut(Warnings),
) -> Result<Outcome, Failure> {
    target.check()?;
    let name = path.display().to_string();
    let text = read(path)?;
    // `check` needs no privileges: it only peeks at the state, without locking it.
    let runner = match mode {
        Mode::Check => None,
        _ => Some(Runner::open(target)?),
    };
    let previous = match &runner {
        Some(r) => r.network().clone(),
        None => {
            state::peek(&target.dir()).map_err(runner::state_failure)?.map(|s| s.network).unwrap_or_default()
        }
    };

    let held_back = HeldBack { sandboxed: target.sandbox.is_some(), log: Vec::new() };
    let mut check = Interpreter::new(Box::new(held_back), previous.clone());
    check.quiet();
    let checked = check
        .run(&name, &text)
        .and_then(|()| model::validate(&check.declarations()).map_err(ScriptError::Invalid));
    let network = checked.map_err(|e| Failure::script(e, &check))?;
    let problems = model::warnings(&check.declarations());
    if !problems.is_empty() {
        warn(Warnings { problems, sources: check.sources() });
    }

    let Some(mut runner) = runner else {
        let hosts = network.hosts().count();
        let subnets = network.vpcs.iter().map(|v| v.subnets.len()).sum();
        return Ok(Outcome::Checked { vpcs: network.vpcs.len(), subnets, hosts });
    };
    if mode != Mode::Apply {
        let would_run = check.would_run();
        return Ok(Outcome::Planned(runner.plan(&network, false)?, would_run));
    }

    let keep = previous.common(&network);
    let probes = effects::Probes(runner.naming().clone());
    let mut live =
        Interpreter::new(Box::new(Live { probes, runner, total: Summary::default(), keep }), previous);
    live.run(&name, &text).map_err(|e| Failure::script(e, &live))?;
    live.apply().map(Outcome::Applied).map_err(|e| Failure::script(e, &live))
}

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

/// `vpcsh policy apply FILE.json [--vpc VPC]`: a seed-format policy onto the applied subnet
/// whose CIDR it names.
pub(crate) fn apply_policy(target: &Target, path: &Path, vpc: Option<&str>) -> Result<Summary, Failure> {
    let name = path.display().to_string();
    let seed = model::policy::read_seed(&read(path)?).map_err(|e| {
        Failure::refused(format!("{name}: {e}"), Some("see `vpcsh policy --help` for the format"))
    })?;
    let Some(cidr) = seed.subnet else {
        return Err(Failure::refused(
            format!("{name} names no subnet"),
            Some("add \"subnet\": \"10.0.1.0/24\" (the CIDR of the subnet to protect)"),
        ));
    };
    let mut runner = Runner::open(target)?;
    let mut network = runner.network().clone();
    let matches: Vec<(String, String)> = network
        .vpcs
        .iter()
        .filter(|v| vpc.is_none_or(|name| v.name == name))
        .flat_map(|v| {
            v.subnets.iter().filter(|s| s.cidr == cidr).map(move |s| (v.name.clone(), s.name.clone()))
        })
        .collect();
    let (vpc_name, subnet) = match &matches[..] {
        [one] => one.clone(),
        [] => {
            let scope = vpc.map_or(String::new(), |v| format!(" in VPC `{v}`"));
            return Err(Failure::refused(format!("no applied subnet has CIDR {cidr}{scope}"), None));
        }
        many => {
            let list: Vec<String> = many.iter().map(|(v, s)| format!("{v}/{s}")).collect();
            return Err(Failure::refused(
                format!("CIDR {cidr} is a subnet of several VPCs: {}", list.join(", ")),
                Some("pass --vpc VPC to choose one"),
            ));
        }
    };
    let firewall = model::Firewall {
        vpc: vpc_name,
        protects: Protected::Subnet(subnet),
        ingress: seed.ingress.iter().map(|r| r.to_firewall_rule()).collect(),
        egress: seed.egress.iter().map(|r| r.to_firewall_rule()).collect(),
    };
    network.firewalls.retain(|f| !f.same_target(&firewall));
    network.firewalls.push(firewall);
    Ok(runner.converge(&network, false)?)
}

/// The script API reference (every function and property, from the engine's own doc
/// comments) as Markdown.
pub(crate) fn reference() -> String {
    let held_back = HeldBack { sandboxed: true, log: Vec::new() };
    Interpreter::new(Box::new(held_back), Network::default()).reference().markdown()
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
