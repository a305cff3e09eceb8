//! The `Effects` a script run uses: held back (check, plan), live (a batch run, holding
//! the state for the whole script), and interactive (the REPL, taking it per input).

use std::net::IpAddr;
use std::time::Duration;

use super::runner::Runner;
use super::{Failure, StackName, Target};
use crate::exec::probe;
use crate::exec::process::ProcessRecord;
use crate::model::{self, Declarations, Network, WorkloadKind};
use crate::plan::naming::Naming;
use crate::plan::{Summary, desired};
use crate::script::{EffectError, Effects, Endpoint, ExecOutput, ProbeOptions, Prober};

/// Effects held back: `check`, `plan` and dry runs validate and plan, changing nothing.
/// Probes answer true, commands succeed with no output, and each is noted for `plan`.
pub(super) struct HeldBack {
    pub sandboxed: bool,
    pub log: Vec<String>,
}

impl Effects for HeldBack {
    fn apply(&mut self, _decls: &Declarations) -> Result<Summary, EffectError> {
        Ok(Summary::default())
    }
    fn held_back(&self) -> bool {
        true
    }
    fn sandboxed(&self) -> bool {
        self.sandboxed
    }
    fn workload_pid(&mut self, _vpc: &str, _host: &str, _kind: &WorkloadKind) -> i64 {
        0
    }
    fn prober(&mut self) -> &mut dyn Prober {
        self
    }
    fn would_run(&self) -> Vec<String> {
        self.log.clone()
    }
}

impl Prober for HeldBack {
    fn exec(
        &mut self,
        on: &Endpoint,
        argv: &[String],
        _timeout: Duration,
    ) -> Result<ExecOutput, EffectError> {
        self.log.push(format!("exec in {}: {}", on, argv.join(" ")));
        Ok(ExecOutput::default())
    }
    fn resolve(
        &mut self,
        from: &Endpoint,
        name: &str,
        _: ProbeOptions,
    ) -> Result<Option<IpAddr>, EffectError> {
        self.log.push(format!("resolve {name} from {from}"));
        Ok(Some(IpAddr::from([0, 0, 0, 0])))
    }
    fn ping(
        &mut self,
        from: &Endpoint,
        to: IpAddr,
        _: ProbeOptions,
    ) -> Result<Option<Duration>, EffectError> {
        self.log.push(format!("ping from {from} to {to}"));
        Ok(Some(Duration::ZERO))
    }
    fn connect(
        &mut self,
        from: &Endpoint,
        to: IpAddr,
        port: u16,
        _: ProbeOptions,
    ) -> Result<bool, EffectError> {
        self.log.push(format!("connect from {from} to {to}:{port}"));
        Ok(true)
    }
    fn http_get(
        &mut self,
        from: &Endpoint,
        to: IpAddr,
        port: u16,
        path: &str,
        _: ProbeOptions,
    ) -> Result<(u16, String), EffectError> {
        self.log.push(format!("http get from {} of http://{to}:{port}{path}", from));
        Ok((200, String::new()))
    }
}

/// What exists and a run keeps while declarations catch up, minus what it destroyed.
fn kept(keep: &Network, decls: &Declarations) -> Network {
    if decls.destroyed_all {
        return Network::default();
    }
    let removed: Vec<String> = decls.vpcs.iter().filter(|v| v.removed).map(|v| v.name.clone()).collect();
    keep.without(&removed)
}

/// Commands and probes inside the namespaces a target's naming gives.
pub(super) struct Probes {
    naming: Naming,
    /// The configured wait of a probe without its own `timeout`.
    configured: Option<Duration>,
    /// What impaired links may add to a round trip: the default wait allows for it.
    slack: Duration,
}

impl Probes {
    pub(super) fn of(target: &Target) -> Self {
        Self { naming: target.naming(), configured: target.probe_timeout, slack: Duration::ZERO }
    }

    /// Makes the default wait allow for the network's impaired links: a round trip may cross
    /// three (two host links and a peering), each way.
    pub(super) fn allow_for(&mut self, network: &Network) {
        self.slack = Duration::from_micros(network.worst_delay_us() * 6);
    }

    /// The probe's own timeout, else the configured one, else the default for where it runs.
    fn timeout(&self, opts: ProbeOptions) -> Duration {
        let default = if self.naming.sandbox { probe::SANDBOX_TIMEOUT } else { probe::TIMEOUT };
        opts.timeout.or(self.configured).unwrap_or(default + self.slack)
    }

    fn ns(&self, e: &Endpoint) -> Result<String, EffectError> {
        match e {
            Endpoint::Host { vpc, host } => Ok(self.naming.host_ns(vpc, host)),
            Endpoint::Internet => self
                .naming
                .internet_ns()
                .ok_or_else(|| failed("the simulated internet exists only in a sandbox".into())),
        }
    }
}

impl Prober for Probes {
    fn exec(&mut self, on: &Endpoint, argv: &[String], timeout: Duration) -> Result<ExecOutput, EffectError> {
        let ns = self.ns(on)?;
        let out = probe::exec(&ns, argv, timeout)
            .map_err(|e| failed(format!("running `{}` in {ns}: {e}", argv[0])))?;
        Ok(ExecOutput { code: out.code, stdout: out.stdout, stderr: out.stderr })
    }
    fn resolve(
        &mut self,
        from: &Endpoint,
        name: &str,
        opts: ProbeOptions,
    ) -> Result<Option<IpAddr>, EffectError> {
        let ns = self.ns(from)?;
        probe::resolve(&ns, name, self.timeout(opts))
            .map_err(|e| failed(format!("looking up {name} from {ns}: {e}")))
    }
    fn ping(
        &mut self,
        from: &Endpoint,
        to: IpAddr,
        opts: ProbeOptions,
    ) -> Result<Option<Duration>, EffectError> {
        let ns = self.ns(from)?;
        probe::ping(&ns, to, self.timeout(opts), opts.count)
            .map_err(|e| failed(format!("pinging {to} from {ns}: {e}")))
    }
    fn connect(
        &mut self,
        from: &Endpoint,
        to: IpAddr,
        port: u16,
        opts: ProbeOptions,
    ) -> Result<bool, EffectError> {
        let ns = self.ns(from)?;
        probe::connect(&ns, to, port, self.timeout(opts))
            .map_err(|e| failed(format!("connecting to {to}:{port} from {ns}: {e}")))
    }
    fn http_get(
        &mut self,
        from: &Endpoint,
        to: IpAddr,
        port: u16,
        path: &str,
        opts: ProbeOptions,
    ) -> Result<(u16, String), EffectError> {
        let ns = self.ns(from)?;
        probe::http_get(&ns, to, port, path, self.timeout(opts))
            .map_err(|e| failed(format!("fetching http://{to}:{port}{path} from {ns}: {e}")))
    }
}

/// The pid of a live workload among recorded processes (0 when not running).
fn workload_pid(
    naming: &Naming,
    records: &[ProcessRecord],
    vpc: &str,
    host: &str,
    kind: &WorkloadKind,
) -> i64 {
    let ns = naming.host_ns(vpc, host);
    let wanted = desired::process_for(vpc, host, kind);
    records.iter().find(|p| p.ns == ns && p.process == wanted && p.alive()).map_or(0, |p| i64::from(p.pid))
}

/// Effects that really happen, in a batch run holding the state from start to end.
pub(super) struct Live {
    pub runner: Runner,
    pub probes: Probes,
    /// The stack the script applies to; every other stack stays as it is.
    pub stack: StackName,
    pub total: Summary,
    /// What exists and the whole script still wants: an `apply()` in the middle of the
    /// script keeps it, so re-running a script never tears down what it declares later.
    pub keep: Network,
}

impl Effects for Live {
    fn apply(&mut self, decls: &Declarations) -> Result<Summary, EffectError> {
        let network = model::validate(decls).map_err(EffectError::Invalid)?.overlay(&kept(&self.keep, decls));
        self.probes.allow_for(&network);
        let summary = self.runner.converge_stack(&self.stack, &network)?;
        self.total += summary;
        Ok(summary)
    }
    fn finish(&mut self, decls: &Declarations) -> Result<Summary, EffectError> {
        let network = model::validate(decls).map_err(EffectError::Invalid)?;
        self.probes.allow_for(&network);
        let summary = self.runner.converge_stack(&self.stack, &network)?;
        self.total += summary;
        Ok(summary)
    }
    fn held_back(&self) -> bool {
        false
    }
    fn total(&self) -> Summary {
        self.total
    }
    fn sandboxed(&self) -> bool {
        self.runner.naming().sandbox
    }
    fn workload_pid(&mut self, vpc: &str, host: &str, kind: &WorkloadKind) -> i64 {
        workload_pid(self.runner.naming(), &self.runner.processes(), vpc, host, kind)
    }
    fn prober(&mut self) -> &mut dyn Prober {
        &mut self.probes
    }
}

/// Effects for the REPL: each input takes the state only while it applies, so other vpcsh
/// commands can run between inputs. What exists and the session has not declared is kept:
/// typing cannot undeclare, only `destroy()` removes.
pub(crate) struct Interactive {
    target: Target,
    stack: StackName,
    probes: Probes,
}

impl Interactive {
    pub(crate) fn new(target: &Target) -> Self {
        Self { target: target.clone(), stack: StackName::for_repl(target), probes: Probes::of(target) }
    }

    /// The network the session's declarations make, with what exists kept.
    pub(crate) fn network(&self, decls: &Declarations) -> Result<(Runner, Network), EffectError> {
        let runner = Runner::open(&self.target).map_err(effect_error)?;
        // Another stack's VPC is not the session's to take over, nor its published ports.
        let clashes = super::stacks::clashes(runner.state(), &self.stack.name, decls);
        if !clashes.is_empty() {
            return Err(EffectError::Invalid(clashes));
        }
        let base = runner.stack_network(&self.stack.name);
        let merged = Self::on(decls, &base)?;
        Ok((runner, merged))
    }

    /// The declarations over `base`: what the session declares, and of `base` what it does
    /// not name.
    fn on(decls: &Declarations, base: &Network) -> Result<Network, EffectError> {
        let network = model::validate(decls).map_err(EffectError::Invalid)?;
        Ok(network.overlay(&kept(base, decls)))
    }

    /// What the session's stack has applied now.
    pub(crate) fn applied(&self) -> Result<Network, Failure> {
        Ok(Runner::open(&self.target)?.stack_network(&self.stack.name))
    }

    /// Makes the session's stack exactly the declarations over `base` (an earlier
    /// `applied()`): taking back an input takes back what it made.
    pub(crate) fn apply_on(&self, decls: &Declarations, base: &Network) -> Result<Summary, Failure> {
        let network = Self::on(decls, base)?;
        Ok(Runner::open(&self.target)?.converge_stack(&self.stack, &network)?)
    }
}

impl Effects for Interactive {
    fn apply(&mut self, decls: &Declarations) -> Result<Summary, EffectError> {
        let (mut runner, network) = self.network(decls)?;
        self.probes.allow_for(&network);
        runner.converge_stack(&self.stack, &network)
    }
    fn held_back(&self) -> bool {
        false
    }
    fn sandboxed(&self) -> bool {
        self.probes.naming.sandbox
    }
    fn workload_pid(&mut self, vpc: &str, host: &str, kind: &WorkloadKind) -> i64 {
        let records =
            crate::state::peek(&self.target.dir()).ok().flatten().map(|s| s.processes).unwrap_or_default();
        workload_pid(&self.probes.naming, &records, vpc, host, kind)
    }
    fn prober(&mut self) -> &mut dyn Prober {
        &mut self.probes
    }
}

pub(super) fn failed(message: String) -> EffectError {
    EffectError::failed(message)
}

/// A session failure as the script layer's effect error.
fn effect_error(f: Failure) -> EffectError {
    match f {
        Failure::Problems(problems) => EffectError::Invalid(problems),
        Failure::Refused { message, help, notes } => EffectError::Failed { message, help, notes },
        Failure::Script { error, .. } => EffectError::failed(error.to_string()),
    }
}
