//! The `Effects` a script run uses: held back (check, plan), live (a batch run, holding
//! the state for the whole script), and interactive (the REPL, taking it per input).

use std::net::IpAddr;
use std::time::Duration;

use super::runner::Runner;
use super::{Failure, StackName, Target};
use crate::exec::probe;
use crate::exec::process::ProcessRecord;
use crate::model::{self, Declarations, Network, RuleProto, WorkloadKind, reach};
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
    /// The network last applied: where it says a flow is blocked, a sandbox's answer is
    /// certain, and the default wait is shorter.
    model: Option<Network>,
    /// The node this machine is: in a network spread over nodes, only its hosts run probes
    /// here.
    node: Option<String>,
}

impl Probes {
    pub(super) fn of(target: &Target) -> Self {
        Self::on_node(target, super::fabric::this_node(target))
    }

    /// Probes for a run that has read the state already, and so knows this machine's node.
    pub(super) fn on_node(target: &Target, node: Option<String>) -> Self {
        Self {
            naming: target.naming(),
            configured: target.probe_timeout,
            slack: Duration::ZERO,
            model: None,
            node,
        }
    }

    /// Makes the default wait fit the network: allowing for its impaired links (a round trip
    /// may cross three — two host links and a peering — each way), short for the flows it
    /// blocks.
    pub(super) fn allow_for(&mut self, network: &Network) {
        self.slack = Duration::from_micros(network.worst_delay_us() * 6);
        self.model = Some(network.clone());
    }

    /// The probe's own timeout, else the configured one, else the default for where it runs:
    /// in a sandbox, shorter where the model says the flow is blocked (a packet that got
    /// through anyway, against the model, would still answer within a millisecond or so).
    fn timeout(
        &self,
        opts: ProbeOptions,
        from: &Endpoint,
        to: IpAddr,
        proto: RuleProto,
        port: u16,
    ) -> Duration {
        if let Some(chosen) = opts.timeout.or(self.configured) {
            return chosen;
        }
        if !self.naming.sandbox {
            return self.default_wait();
        }
        let blocked = self.model.as_ref().is_some_and(|network| {
            flow(network, from, to, proto, port).is_some_and(|flow| {
                let context = reach::Context { ipv6_internet: true, ..reach::Context::default() };
                !reach::explain(network, &flow, &context).reachable
            })
        });
        let default = if blocked { probe::SANDBOX_BLOCKED_TIMEOUT } else { probe::SANDBOX_TIMEOUT };
        default + self.slack
    }

    /// The wait where the model has nothing to say (a name lookup).
    fn default_wait(&self) -> Duration {
        (if self.naming.sandbox { probe::SANDBOX_TIMEOUT } else { probe::TIMEOUT }) + self.slack
    }

    fn ns(&self, e: &Endpoint) -> Result<String, EffectError> {
        match e {
            Endpoint::Host { vpc, host } => {
                let runs_on = self.model.as_ref().and_then(|m| m.vpc(vpc)).and_then(|v| {
                    v.subnets.iter().flat_map(|s| &s.hosts).find(|h| h.name == *host)?.node.clone()
                });
                match runs_on {
                    Some(node) if Some(&node) != self.node.as_ref() => Err(failed(format!(
                        "{vpc}/{host} runs on node {node}: commands and probes start from hosts of this \
                         machine{}",
                        self.node.as_ref().map(|n| format!(" (node {n})")).unwrap_or_default()
                    ))),
                    _ => Ok(self.naming.host_ns(vpc, host)),
                }
            }
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
        let timeout = opts.timeout.or(self.configured).unwrap_or_else(|| self.default_wait());
        probe::resolve(&ns, name, timeout).map_err(|e| failed(format!("looking up {name} from {ns}: {e}")))
    }
    fn ping(
        &mut self,
        from: &Endpoint,
        to: IpAddr,
        opts: ProbeOptions,
    ) -> Result<Option<Duration>, EffectError> {
        let ns = self.ns(from)?;
        probe::ping(&ns, to, self.timeout(opts, from, to, RuleProto::Icmp, 0), opts.count)
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
        probe::connect(&ns, to, port, self.timeout(opts, from, to, RuleProto::Tcp, port))
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
        probe::http_get(&ns, to, port, path, self.timeout(opts, from, to, RuleProto::Tcp, port))
            .map_err(|e| failed(format!("fetching http://{to}:{port}{path} from {ns}: {e}")))
    }
}

/// A probe as a flow of the model, when the model knows both ends: a host of its own, or
/// the simulated internet's address (another stack's host it cannot judge).
fn flow(network: &Network, from: &Endpoint, to: IpAddr, proto: RuleProto, port: u16) -> Option<reach::Flow> {
    let from = match from {
        Endpoint::Host { vpc, host } => {
            network.hosts().find(|(v, _, h)| v.name == *vpc && h.name == *host)?;
            reach::Place::Host { vpc: vpc.clone(), host: host.clone() }
        }
        Endpoint::Internet => reach::Place::Internet(desired::INTERNET_IP.into()),
    };
    let internet = [IpAddr::from(desired::INTERNET_IP), IpAddr::from(desired::INTERNET_IP6)];
    let to_place = reach::Place::at(network, to);
    if matches!(to_place, reach::Place::Internet(_)) && !internet.contains(&to) {
        return None;
    }
    Some(reach::Flow { from, to: to_place, proto, port, ipv6: to.is_ipv6() })
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

#[cfg(test)]
mod tests {
    use super::*;

    fn probes(network: &str, configured: Option<Duration>) -> Probes {
        let mut interpreter = crate::script::tests::interpreter();
        interpreter.run("<test>", network).expect("the script runs");
        let network = model::validate(&interpreter.declarations()).expect("the script is valid");
        let mut probes = Probes {
            naming: Naming::sandbox("t"),
            configured,
            slack: Duration::ZERO,
            model: None,
            node: None,
        };
        probes.allow_for(&network);
        probes
    }

    const TWO_VPCS: &str = r#"
        let a = vpc("a", "10.1.0.0/16"); let pub_ = a.subnet("pub", "10.1.1.0/24", #{ public: true });
        let priv = a.subnet("priv", "10.1.2.0/24"); pub_.host("w"); priv.host("d");
        let b = vpc("b", "10.2.0.0/16"); b.subnet("s", "10.2.1.0/24").host("x");
    "#;

    fn host(vpc: &str, host: &str) -> Endpoint {
        Endpoint::Host { vpc: vpc.into(), host: host.into() }
    }

    #[test]
    fn a_flow_the_model_blocks_waits_less_in_a_sandbox() {
        let p = probes(TWO_VPCS, None);
        let default = ProbeOptions::default();
        let x: IpAddr = "10.2.1.2".parse().unwrap();
        let d: IpAddr = "10.1.2.2".parse().unwrap();
        let internet = IpAddr::from(desired::INTERNET_IP);
        // Unpeered VPCs, and a private subnet without nat() to the internet: blocked.
        assert_eq!(
            p.timeout(default, &host("a", "w"), x, RuleProto::Icmp, 0),
            probe::SANDBOX_BLOCKED_TIMEOUT
        );
        assert_eq!(
            p.timeout(default, &host("a", "d"), internet, RuleProto::Tcp, 80),
            probe::SANDBOX_BLOCKED_TIMEOUT
        );
        // Inside a VPC, and a public subnet to the internet: the full wait.
        assert_eq!(p.timeout(default, &host("a", "w"), d, RuleProto::Icmp, 0), probe::SANDBOX_TIMEOUT);
        assert_eq!(p.timeout(default, &host("a", "w"), internet, RuleProto::Tcp, 80), probe::SANDBOX_TIMEOUT);
    }

    #[test]
    fn what_the_model_cannot_judge_and_what_the_user_chose_keep_their_wait() {
        let p = probes(TWO_VPCS, None);
        let default = ProbeOptions::default();
        // An address the model does not know (another stack's host, say).
        let stranger: IpAddr = "10.9.0.5".parse().unwrap();
        assert_eq!(p.timeout(default, &host("a", "w"), stranger, RuleProto::Icmp, 0), probe::SANDBOX_TIMEOUT);
        let x: IpAddr = "10.2.1.2".parse().unwrap();
        let own = ProbeOptions { timeout: Some(Duration::from_secs(3)), count: 1 };
        assert_eq!(p.timeout(own, &host("a", "w"), x, RuleProto::Icmp, 0), Duration::from_secs(3));
        let configured = probes(TWO_VPCS, Some(Duration::from_millis(700)));
        assert_eq!(
            configured.timeout(default, &host("a", "w"), x, RuleProto::Icmp, 0),
            Duration::from_millis(700)
        );
    }
}
