//! What a script asks of the world outside it: applying declarations, commands and probes.
//! The session layer implements these traits over state, plan and exec; under `check` and
//! `plan` effects are held back. Nothing in the script layer touches the kernel itself.

use std::net::IpAddr;
use std::time::Duration;

use crate::model::{Declarations, Problem, WorkloadKind};
use crate::plan::Summary;

/// Why an effect could not happen.
#[derive(Clone, Debug)]
pub(crate) enum EffectError {
    /// The declarations so far do not validate.
    Invalid(Vec<Problem>),
    /// The system refused: what was being done, what to do about it, and further detail.
    Failed { message: String, help: Option<String>, notes: Vec<String> },
}

impl EffectError {
    /// A refusal with nothing more to say than its message.
    pub(crate) fn failed(message: impl Into<String>) -> Self {
        EffectError::Failed { message: message.into(), help: None, notes: Vec::new() }
    }
}

/// Where a command or probe runs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Endpoint {
    Host { vpc: String, host: String },
    Internet,
}

impl std::fmt::Display for Endpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Endpoint::Host { vpc, host } => write!(f, "{vpc}/{host}"),
            Endpoint::Internet => f.write_str("internet"),
        }
    }
}

/// How long a probe waits, and how many times ping tries; unset, the session's default
/// (shorter in a sandbox, where everything answers within a millisecond).
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) struct ProbeOptions {
    pub timeout: Option<Duration>,
    pub count: u32,
}

impl Default for ProbeOptions {
    fn default() -> Self {
        Self { timeout: None, count: 1 }
    }
}

/// What `exec()` returns.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct ExecOutput {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

/// What effect functions do.
pub(crate) trait Effects {
    /// Makes reality match the declarations (validating them first).
    fn apply(&mut self, decls: &Declarations) -> Result<Summary, EffectError>;
    /// Whether effects are held back (check, plan, dry run).
    fn held_back(&self) -> bool;
    /// Makes reality match the declarations at the end of a script, exactly.
    fn finish(&mut self, decls: &Declarations) -> Result<Summary, EffectError> {
        self.apply(decls)
    }
    /// Everything applied so far in this run.
    fn total(&self) -> Summary {
        Summary::default()
    }
    /// Whether there is a simulated internet.
    fn sandboxed(&self) -> bool;
    /// The pid of a running workload (0 when held back or not running).
    fn workload_pid(&mut self, vpc: &str, host: &str, kind: &WorkloadKind) -> i64;
    /// Where commands and probes run.
    fn prober(&mut self) -> &mut dyn Prober;
    /// Effects held back, as `would run: ...` lines for `plan`.
    fn would_run(&self) -> Vec<String> {
        Vec::new()
    }
}

/// Commands and probes: `exec()`, `ping()`, `connect()`, `http_get()`.
pub(crate) trait Prober {
    fn exec(&mut self, on: &Endpoint, argv: &[String], timeout: Duration) -> Result<ExecOutput, EffectError>;
    /// A name's address as the VPC's resolver answers it from inside `from`.
    fn resolve(
        &mut self,
        from: &Endpoint,
        name: &str,
        opts: ProbeOptions,
    ) -> Result<Option<IpAddr>, EffectError>;
    /// The round trip of the first echo answered, if one is.
    fn ping(
        &mut self,
        from: &Endpoint,
        to: IpAddr,
        opts: ProbeOptions,
    ) -> Result<Option<Duration>, EffectError>;
    fn connect(
        &mut self,
        from: &Endpoint,
        to: IpAddr,
        port: u16,
        opts: ProbeOptions,
    ) -> Result<bool, EffectError>;
    fn http_get(
        &mut self,
        from: &Endpoint,
        to: IpAddr,
        port: u16,
        path: &str,
        opts: ProbeOptions,
    ) -> Result<(u16, String), EffectError>;
}
