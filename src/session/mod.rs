//! One run of vpcsh against one scope (the real host, or a sandbox): scripts through the
//! interpreter, effects through plan and exec, ownership through state. Results and
//! failures are data (`Outcome`, `Failure`); the interfaces above decide how to show them.

mod admin;
mod effects;
mod fabric;
mod runner;
mod script;
mod stacks;

use std::path::{Path, PathBuf};

use crate::model::{Problem, names};
use crate::plan::naming::Naming;
use crate::plan::{Plan, Summary};
use crate::script::{EffectError, Interpreter, ScriptError, Source};
use crate::state;

pub(crate) use admin::{
    applied, apply_policy, blocking_chains, counters, definitions, destroy, reference, rules, status_plan,
    unknown_vpc,
};
pub(crate) use effects::Interactive;
pub(crate) use fabric::{node_statuses, this_node};
pub(crate) use runner::RuleCounter;
pub(crate) use script::{network_of, run_script};
pub(crate) use stacks::StackName;

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
    /// The exit status a script asked for with `exit(code)`, if that is what this is.
    pub(crate) fn exit_code(&self) -> Option<i32> {
        match self {
            Failure::Script { error: ScriptError::Exit(code), .. } => Some(*code),
            _ => None,
        }
    }

    pub(crate) fn refused(message: impl Into<String>, help: Option<&str>) -> Self {
        Failure::Refused { message: message.into(), help: help.map(Into::into), notes: Vec::new() }
    }

    pub(super) fn script(error: ScriptError, interpreter: &Interpreter) -> Self {
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
    /// `--stack NAME`: the stack a script or the REPL applies to (default: the script's file
    /// stem, `repl`), or the stack `destroy` removes.
    pub stack: Option<String>,
    /// The most network namespaces one script may make (`--max-namespaces`).
    pub max_namespaces: usize,
    /// Prefix of namespace names on the real host (`vpcsh`).
    pub prefix: String,
    /// The real host's interface towards the internet; default: the default route's.
    pub uplink: Option<String>,
    /// `--node`: which node of a fabric this machine is.
    pub node: Option<String>,
    /// `--fabric`: the simulated underlay a sandbox machine joins.
    pub fabric: Option<String>,
    /// How long a probe without its own `timeout` waits (configured); default: 0.2 s in a
    /// sandbox, 1 s on a real host.
    pub probe_timeout: Option<std::time::Duration>,
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
        if let Some(fabric) = &self.fabric {
            if let Some(why) = names::name_problem(fabric) {
                return Err(Failure::refused(
                    format!("invalid fabric name: {why}"),
                    Some(names::NAME_RULE_HELP),
                ));
            }
            if self.sandbox.as_ref() == Some(fabric) {
                return Err(Failure::refused(
                    "a fabric cannot have its sandbox machine's name",
                    Some("name the fabric after the data centre, the sandboxes after its machines"),
                ));
            }
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
    /// The plan, the effects held back while planning (`would run: ...`), and the VPCs it
    /// deletes because the script no longer declares them.
    Planned {
        plan: Plan,
        would_run: Vec<String>,
        deleting: Vec<String>,
    },
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

/// VPCs an apply deletes because its script no longer declares them.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct Deletions {
    pub stack: String,
    pub vpcs: Vec<String>,
    /// Every VPC the stack had.
    pub all: bool,
}

/// What a run asks of the person (or program) that started it.
pub(crate) trait Ui {
    fn warn(&mut self, warnings: Warnings);
    /// Whether an apply may go on and delete these VPCs.
    fn confirm_deletes(&mut self, deletions: &Deletions) -> bool;
}

pub(super) fn read(path: &Path) -> Result<String, Failure> {
    std::fs::read_to_string(path)
        .map_err(|e| Failure::refused(format!("cannot read {}: {e}", path.display()), None))
}
