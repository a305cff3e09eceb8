//! One run of vpcsh against one scope (the real host, or a sandbox): scripts through the
//! interpreter, effects through plan and exec, ownership through state.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use crate::diag::{self, Diag};
use crate::exec::netlink::Netlink;
use crate::exec::probe;
use crate::exec::{self, Backend, OpError, faults, netns};
use crate::model::{self, Declarations, Network, WorkloadKind, names};
use crate::plan::kernel::KernelState;
use crate::plan::naming::{HOST_NS, Naming, UPLINK_IFNAME};
use crate::plan::{self, Plan, Summary, desired};
use crate::script::{EffectError, Effects, Endpoint, ExecOutput, Interpreter, ScriptError, Source};
use crate::state::{self, Store};
use std::net::Ipv4Addr;
use std::time::Duration;

/// Where a run works: the state directory, and the sandbox if any.
#[derive(Clone, Debug)]
pub struct Target {
    pub state_dir: PathBuf,
    pub sandbox: Option<String>,
    /// Prefix of namespace names on the real host (`vpcsh`).
    pub prefix: String,
    /// The real host's interface towards the internet; default: the default route's.
    pub uplink: Option<String>,
}

impl Target {
    pub fn naming(&self) -> Naming {
        match &self.sandbox {
            Some(name) => Naming::sandbox(name),
            None => Naming::real_host(&self.prefix),
        }
    }
    pub fn dir(&self) -> PathBuf {
        state::scope_dir(&self.state_dir, self.sandbox.as_deref())
    }
    /// Checks the sandbox name against the naming rule.
    pub fn check(&self) -> Result<(), Diag> {
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
pub enum Mode {
    Apply,
    DryRun,
    Plan,
    Check,
}

/// The result of a script run, for the CLI to print.
#[derive(Debug)]
pub enum Outcome {
    Applied(Summary),
    /// The plan, and the effects held back while planning (`would run: ...`).
    Planned(Plan, Vec<String>),
    Checked {
        vpcs: usize,
        subnets: usize,
        hosts: usize,
    },
}

/// Effects held back: `check`, `plan` and dry runs validate and plan, changing nothing.
/// Probes answer true, commands succeed with no output, and each is noted for `plan`.
struct HeldBack {
    sandboxed: bool,
    log: Vec<String>,
}

fn endpoint_text(e: &Endpoint) -> String {
    match e {
        Endpoint::Host { vpc, host } => format!("{vpc}/{host}"),
        Endpoint::Internet => "internet".into(),
    }
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
    fn exec(
        &mut self,
        on: &Endpoint,
        argv: &[String],
        _timeout: Duration,
    ) -> Result<ExecOutput, EffectError> {
        self.log.push(format!("exec in {}: {}", endpoint_text(on), argv.join(" ")));
        Ok(ExecOutput::default())
    }
    fn ping(&mut self, from: &Endpoint, to: Ipv4Addr) -> Result<bool, EffectError> {
        self.log.push(format!("ping from {} to {to}", endpoint_text(from)));
        Ok(true)
    }
    fn connect(&mut self, from: &Endpoint, to: Ipv4Addr, port: u16) -> Result<bool, EffectError> {
        self.log.push(format!("connect from {} to {to}:{port}", endpoint_text(from)));
        Ok(true)
    }
    fn http_get(
        &mut self,
        from: &Endpoint,
        to: Ipv4Addr,
        port: u16,
        path: &str,
    ) -> Result<(u16, String), EffectError> {
        self.log.push(format!("http get from {} of http://{to}:{port}{path}", endpoint_text(from)));
        Ok((200, String::new()))
    }
    fn would_run(&self) -> Vec<String> {
        self.log.clone()
    }
}

/// The engine room: the locked state, a kernel backend and the naming of this scope.
pub struct Runner {
    naming: Naming,
    store: Store,
    backend: Box<dyn Backend>,
    /// `--uplink`, for the real host.
    uplink: Option<String>,
}

impl Runner {
    pub fn open(target: &Target) -> Result<Self, Diag> {
        target.check()?;
        let store = Store::open(&target.dir()).map_err(state_diag)?;
        let log_dir = store.dir().join("logs");
        let netlink = Netlink::new(log_dir, store.state.processes.clone())
            .map_err(|e| Diag::plain(format!("cannot start the netlink runtime: {e}"), None))?;
        let backend = faults::from_env(Box::new(netlink));
        Ok(Self { naming: target.naming(), store, backend, uplink: target.uplink.clone() })
    }

    pub fn network(&self) -> &Network {
        &self.store.state.network
    }

    pub fn state(&self) -> &state::State {
        &self.store.state
    }

    pub fn naming(&self) -> &Naming {
        &self.naming
    }

    /// The machine's interface towards the internet.
    fn uplink(&mut self, network: &Network) -> Result<String, EffectError> {
        if self.naming.sandbox {
            return Ok(UPLINK_IFNAME.to_string());
        }
        if let Some(uplink) = &self.uplink {
            return Ok(uplink.clone());
        }
        if network.vpcs.is_empty() {
            return Ok(String::new());
        }
        match self.backend.default_route_dev(HOST_NS) {
            Ok(Some(dev)) => Ok(dev),
            Ok(None) => Err(EffectError::Failed {
                message: "this machine has no default route, so vpcsh cannot tell its uplink".into(),
                help: Some("pass --uplink IFACE (the interface towards the internet)".into()),
                notes: Vec::new(),
            }),
            Err(e) => Err(op_failure(e)),
        }
    }

    /// The desired kernel state for `network`. `bare` (destroying everything) leaves out
    /// the sandbox too.
    fn desired(&mut self, network: &Network, bare: bool) -> Result<KernelState, EffectError> {
        if bare && self.naming.sandbox {
            return Ok(KernelState::default());
        }
        let uplink = self.uplink(network)?;
        Ok(desired::desired(network, &desired::Machine { naming: &self.naming, uplink: &uplink }))
    }

    /// Observes every namespace vpcsh owns here or wants.
    fn observe(&mut self, desired: &KernelState) -> Result<KernelState, EffectError> {
        let names: BTreeSet<String> =
            self.store.state.namespaces.iter().chain(desired.namespaces.keys()).cloned().collect();
        self.backend.observe(&names).map_err(op_failure)
    }

    /// The plan that makes the kernel match `network`.
    pub fn plan(&mut self, network: &Network, bare: bool) -> Result<Plan, EffectError> {
        let mut desired = self.desired(network, bare)?;
        let observed = self.observe(&desired)?;
        let owned = &self.store.state.namespaces;
        if let Some(foreign) = desired
            .namespaces
            .keys()
            .find(|n| *n != HOST_NS && observed.namespaces.contains_key(*n) && !owned.contains(*n))
        {
            return Err(EffectError::Failed {
                message: format!("namespace {foreign} already exists and vpcsh did not make it"),
                help: Some(format!(
                    "vpcsh never takes over what it did not create: remove it (`ip netns delete {foreign}`) \
                     or use another sandbox name or --prefix"
                )),
                notes: Vec::new(),
            });
        }
        // The real host's forwarding is the machine's: turn it off only if vpcsh turned it on.
        if let (Some(want), Some(have)) =
            (desired.namespaces.get_mut(HOST_NS), observed.namespaces.get(HOST_NS))
            && network.vpcs.is_empty()
        {
            want.forwarding = have.forwarding && !self.store.state.host_forwarding_set;
        }
        let previous_network = self.store.state.network.clone();
        let previous = self.desired(&previous_network, false).unwrap_or_default();
        Ok(plan::plan_from(&desired, &observed, &previous))
    }

    /// Makes the kernel match `network` and records the result.
    pub fn converge(&mut self, network: &Network, bare: bool) -> Result<Summary, EffectError> {
        let plan = self.plan(network, bare)?;
        if plan.is_empty() {
            return Ok(Summary::default());
        }
        require_privilege()?;
        // Record namespaces before making them, so a crash cannot leave one unowned.
        let creating = plan.steps.iter().filter_map(|s| match &s.op {
            plan::Op::CreateNetns { ns, .. } => Some(ns.clone()),
            _ => None,
        });
        let before = self.store.state.namespaces.clone();
        self.store.state.namespaces.extend(creating);
        self.save()?;
        let result = exec::apply(self.backend.as_mut(), &plan);
        let wanted: BTreeSet<String> =
            self.desired(network, bare).map(|d| d.namespaces.into_keys().collect()).unwrap_or_default();
        self.store.state.namespaces =
            before.union(&wanted).filter(|n| *n != HOST_NS && netns::exists(n)).cloned().collect();
        self.store.state.processes = self.backend.processes();
        if result.is_ok() {
            let turned_on = plan
                .steps
                .iter()
                .any(|s| matches!(&s.op, plan::Op::SetForwarding { ns, on: true } if ns == HOST_NS));
            if turned_on {
                self.store.state.host_forwarding_set = true;
            } else if network.vpcs.is_empty() {
                self.store.state.host_forwarding_set = false;
            }
            self.store.state.network = network.clone();
        }
        self.save()?;
        result.map_err(|e| {
            let mut notes =
                vec![format!("rolled back {} completed step(s); nothing half-built was left", e.undone)];
            if !e.rollback_failures.is_empty() {
                notes[0] = format!("rolled back {} step(s), but some undo steps failed:", e.undone);
                notes.extend(e.rollback_failures.iter().map(|f| format!("  {f}")));
                notes.push("`vpcsh status` shows what is left; `vpcsh destroy` removes it".into());
            }
            EffectError::Failed {
                message: e.failed.to_string(),
                help: e.failed.cause.hint().map(Into::into),
                notes,
            }
        })
    }

    fn save(&self) -> Result<(), EffectError> {
        self.store.save().map_err(|e| EffectError::Failed {
            message: e.to_string(),
            help: None,
            notes: Vec::new(),
        })
    }
}

/// Changing namespaces needs CAP_SYS_ADMIN (mounts, setns) and CAP_NET_ADMIN (links).
fn require_privilege() -> Result<(), EffectError> {
    const CAP_NET_ADMIN: u32 = 12;
    const CAP_SYS_ADMIN: u32 = 21;
    let effective = std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| s.lines().find_map(|l| l.strip_prefix("CapEff:").map(|v| v.trim().to_string())))
        .and_then(|hex| u64::from_str_radix(&hex, 16).ok())
        .unwrap_or(0);
    let has = |cap: u32| effective & (1 << cap) != 0;
    if has(CAP_NET_ADMIN) && has(CAP_SYS_ADMIN) {
        return Ok(());
    }
    Err(EffectError::Failed {
        message: "vpcsh needs root or CAP_NET_ADMIN and CAP_SYS_ADMIN to change network namespaces".into(),
        help: Some("run it with sudo; `vpcsh check SCRIPT` validates a script without privileges".into()),
        notes: Vec::new(),
    })
}

fn op_failure(e: OpError) -> EffectError {
    EffectError::Failed { message: e.to_string(), help: e.cause.hint().map(Into::into), notes: Vec::new() }
}

fn state_diag(e: state::StateError) -> Diag {
    let help = match &e {
        state::StateError::Dir { .. } => {
            Some("pass --state-dir DIR, or run as root for /var/lib/vpcsh".to_string())
        }
        _ => None,
    };
    Diag::plain(e.to_string(), help)
}

/// Effects that really happen.
struct Live {
    runner: Runner,
    total: Summary,
    /// What exists and the whole script still wants: an `apply()` in the middle of the
    /// script keeps it, so re-running a script never tears down what it declares later.
    keep: Network,
}

impl Live {
    fn converge(&mut self, network: &Network) -> Result<Summary, EffectError> {
        let summary = self.runner.converge(network, false)?;
        self.total += summary;
        Ok(summary)
    }
}

impl Effects for Live {
    fn apply(&mut self, decls: &Declarations) -> Result<Summary, EffectError> {
        let network = model::validate(decls).map_err(EffectError::Invalid)?;
        let with_kept = network.overlay(&self.keep);
        self.converge(&with_kept)
    }
    fn finish(&mut self, decls: &Declarations) -> Result<Summary, EffectError> {
        let network = model::validate(decls).map_err(EffectError::Invalid)?;
        self.converge(&network)
    }
    fn held_back(&self) -> bool {
        false
    }
    fn total(&self) -> Summary {
        self.total
    }
    fn sandboxed(&self) -> bool {
        self.runner.naming.sandbox
    }
    fn workload_pid(&mut self, vpc: &str, host: &str, kind: &WorkloadKind) -> i64 {
        let ns = self.runner.naming.host_ns(vpc, host);
        let wanted = desired::process_for(vpc, host, kind);
        let records = self.runner.backend.processes();
        records
            .iter()
            .find(|p| p.ns == ns && p.process == wanted && p.alive())
            .map_or(0, |p| i64::from(p.pid))
    }
    fn exec(&mut self, on: &Endpoint, argv: &[String], timeout: Duration) -> Result<ExecOutput, EffectError> {
        let ns = self.ns(on)?;
        let out = probe::exec(&ns, argv, timeout)
            .map_err(|e| failed(format!("running `{}` in {ns}: {e}", argv[0])))?;
        Ok(ExecOutput { code: out.code, stdout: out.stdout, stderr: out.stderr })
    }
    fn ping(&mut self, from: &Endpoint, to: Ipv4Addr) -> Result<bool, EffectError> {
        let ns = self.ns(from)?;
        probe::ping(&ns, to, probe::TIMEOUT).map_err(|e| failed(format!("pinging {to} from {ns}: {e}")))
    }
    fn connect(&mut self, from: &Endpoint, to: Ipv4Addr, port: u16) -> Result<bool, EffectError> {
        let ns = self.ns(from)?;
        probe::connect(&ns, to, port, probe::TIMEOUT)
            .map_err(|e| failed(format!("connecting to {to}:{port} from {ns}: {e}")))
    }
    fn http_get(
        &mut self,
        from: &Endpoint,
        to: Ipv4Addr,
        port: u16,
        path: &str,
    ) -> Result<(u16, String), EffectError> {
        let ns = self.ns(from)?;
        probe::http_get(&ns, to, port, path, probe::TIMEOUT)
            .map_err(|e| failed(format!("fetching http://{to}:{port}{path} from {ns}: {e}")))
    }
}

impl Live {
    /// The namespace an endpoint stands for.
    fn ns(&self, e: &Endpoint) -> Result<String, EffectError> {
        match e {
            Endpoint::Host { vpc, host } => Ok(self.runner.naming.host_ns(vpc, host)),
            Endpoint::Internet => self
                .runner
                .naming
                .internet_ns()
                .ok_or_else(|| failed("the simulated internet exists only in a sandbox".to_string())),
        }
    }
}

fn failed(message: String) -> EffectError {
    EffectError::Failed { message, help: None, notes: Vec::new() }
}

/// An effect error with no script place to point at, as a diagnostic.
pub fn effect_diag(e: EffectError) -> Vec<Diag> {
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

fn script_diags(e: &ScriptError, sources: &[Source]) -> Vec<Diag> {
    diag::from_script_error(e, sources)
}

/// Runs a script file: validates it whole with effects held back, then (for `apply`) runs
/// it for real. Any error in the first pass leaves the kernel untouched.
pub fn run_script(target: &Target, path: &Path, mode: Mode) -> Result<Outcome, Vec<Diag>> {
    target.check().map_err(|d| vec![d])?;
    let name = path.display().to_string();
    let text = std::fs::read_to_string(path)
        .map_err(|e| vec![Diag::plain(format!("cannot read {name}: {e}"), None)])?;
    let previous = match mode {
        Mode::Check => state::peek(&target.dir()).map(|s| s.network).unwrap_or_default(),
        _ => Network::default(),
    };
    let mut runner = match mode {
        Mode::Check => None,
        _ => Some(Runner::open(target).map_err(|d| vec![d])?),
    };
    let previous = runner.as_ref().map_or(previous, |r| r.network().clone());

    let held_back = HeldBack { sandboxed: target.sandbox.is_some(), log: Vec::new() };
    let mut check = Interpreter::new(Box::new(held_back), previous.clone());
    check.quiet();
    let checked = check
        .run(&name, &text)
        .and_then(|()| model::validate(&check.declarations()).map_err(ScriptError::Invalid));
    let network = checked.map_err(|e| script_diags(&e, &check.sources()))?;
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
    let mut live = Interpreter::new(Box::new(Live { runner, total: Summary::default(), keep }), previous);
    live.run(&name, &text).map_err(|e| script_diags(&e, &live.sources()))?;
    live.apply().map(Outcome::Applied).map_err(|e| script_diags(&e, &live.sources()))
}

/// Removes the named VPCs, or everything this scope owns (the sandbox included).
pub fn destroy(target: &Target, vpcs: &[String]) -> Result<Summary, Vec<Diag>> {
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
        let _ = std::fs::remove_dir_all(runner.store.dir().join("logs"));
    }
    Ok(summary)
}

/// `vpcsh policy apply FILE.json [--vpc VPC]`: a seed-format policy onto the applied subnet
/// whose CIDR it names.
pub fn apply_policy(target: &Target, path: &Path, vpc: Option<&str>) -> Result<Summary, Vec<Diag>> {
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
pub fn status_plan(target: &Target) -> Result<(Runner, Plan), Vec<Diag>> {
    let mut runner = Runner::open(target).map_err(|d| vec![d])?;
    let network = runner.network().clone();
    if network.vpcs.is_empty() && runner.state().namespaces.is_empty() {
        return Ok((runner, Plan::default()));
    }
    let plan = runner.plan(&network, false).map_err(effect_diag)?;
    Ok((runner, plan))
}
