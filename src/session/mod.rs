//! One run of vpcsh against one scope (the real host, or a sandbox): scripts through the
//! interpreter, effects through plan and exec, ownership through state. Results and
//! failures are data (`Outcome`, `Failure`); the interfaces above decide how to show them.

mod effects;
mod runner;

use std::path::{Path, PathBuf};

use crate::model::{self, Network, Problem, Protected, Span, names};
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
    /// The exit status a script asked for with `exit(code)`, if that is what this is.
    pub(crate) fn exit_code(&self) -> Option<i32> {
        match self {
            Failure::Script { error: ScriptError::Exit(code), .. } => Some(*code),
            _ => None,
        }
    }
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
    /// `--stack NAME`: the stack a script or the REPL applies to (default: the script's file
    /// stem, `repl`), or the stack `destroy` removes.
    pub stack: Option<String>,
    /// The most network namespaces one script may make (`--max-namespaces`).
    pub max_namespaces: usize,
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

/// A stack: what one script (or REPL session) owns.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct StackName {
    pub name: String,
    /// The script it is applied from, for messages.
    pub script: Option<String>,
}

impl StackName {
    /// `--stack NAME`, or the script's file stem.
    fn for_script(target: &Target, path: &Path) -> Result<Self, Failure> {
        let name = match &target.stack {
            Some(name) => name.clone(),
            None => path.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default(),
        };
        check_stack_name(&name)?;
        Ok(Self { name, script: Some(path.display().to_string()) })
    }

    /// The REPL's stack: `--stack NAME`, or `repl`.
    pub(crate) fn for_repl(target: &Target) -> Self {
        Self { name: target.stack.clone().unwrap_or_else(|| "repl".into()), script: None }
    }
}

/// Stack names are 1 to 64 letters, digits, `_`, `-` and `.` (a script's file stem, usually).
fn check_stack_name(name: &str) -> Result<(), Failure> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'));
    if ok {
        return Ok(());
    }
    Err(Failure::refused(
        format!("`{name}` cannot name a stack"),
        Some("stack names are 1-64 letters, digits, `_`, `-` and `.`: pass --stack NAME"),
    ))
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

fn read(path: &Path) -> Result<String, Failure> {
    std::fs::read_to_string(path)
        .map_err(|e| Failure::refused(format!("cannot read {}: {e}", path.display()), None))
}

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
    let runner = match mode {
        Mode::Check => None,
        _ => Some(Runner::open(target)?),
    };
    let applied = match &runner {
        Some(r) => r.state().clone(),
        None => state::peek(&target.dir()).map_err(runner::state_failure)?.unwrap_or_default(),
    };
    let check = check_script(target, &stack, &applied, (&name, &text), ui)?;
    let network = check.network;
    let Some(mut runner) = runner else {
        let hosts = network.hosts().count();
        let subnets = network.vpcs.iter().map(|v| v.subnets.len()).sum();
        return Ok(Outcome::Checked { vpcs: network.vpcs.len(), subnets, hosts });
    };
    let deletions = check.deletions;
    if mode != Mode::Apply {
        let plan = runner.plan_stack(&stack, &network)?;
        return Ok(Outcome::Planned { plan, would_run: check.would_run, deleting: deletions.vpcs });
    }
    if !deletions.vpcs.is_empty() && !ui.confirm_deletes(&deletions) {
        return Err(refused_deletes(&deletions));
    }
    let keep = applied.network.common(&network);
    let probes = effects::Probes(runner.naming().clone());
    let live = Live { probes, runner, stack, total: Summary::default(), keep };
    let mut live = Interpreter::new(Box::new(live), applied.network);
    match live.run(&name, &text) {
        Ok(()) | Err(ScriptError::Exit(0)) => {}
        Err(e) => return Err(Failure::script(e, &live)),
    }
    live.apply().map(Outcome::Applied).map_err(|e| Failure::script(e, &live))
}

/// What the held-back first pass of a script found.
struct Checked {
    network: Network,
    would_run: Vec<String>,
    deletions: Deletions,
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
        let mut clashes = stack_clashes(applied, &stack.name, &decls);
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
    Ok(Checked { network, would_run: check.would_run(), deletions })
}

fn declares_nothing(stack: &str) -> Problem {
    Problem::new("this script declares nothing", Span::default(), "empty").help(format!(
        "a script declares the VPCs it owns; an empty one is not taken as \"delete stack `{stack}`\": \
             that is `vpcsh destroy --stack {stack}`"
    ))
}

/// VPC names another stack owns, and host ports another stack publishes.
pub(super) fn stack_clashes(
    applied: &state::State,
    stack: &str,
    decls: &model::Declarations,
) -> Vec<Problem> {
    let mut problems = Vec::new();
    for (_, vpc) in decls.live_vpcs() {
        let Some(other) = applied.stack_of(&vpc.name).filter(|s| *s != stack) else { continue };
        let from =
            applied.stacks[other].script.as_deref().map_or(String::new(), |s| format!(" (applied from {s})"));
        problems.push(
            Problem::new(format!("VPC `{}` belongs to stack `{other}`{from}", vpc.name), vpc.span, "taken")
                .help(format!(
                    "VPC names are unique across stacks: rename it, or `vpcsh destroy --stack {other}` first"
                )),
        );
    }
    let theirs = applied.network.only(
        &applied.stacks.iter().filter(|(n, _)| *n != stack).flat_map(|(_, s)| s.vpcs.clone()).collect(),
    );
    for p in &decls.publishes {
        if let Some(q) = theirs.publishes.iter().find(|q| q.host_port == p.host_port && q.proto == p.proto) {
            let owner = applied.stack_of(&q.vpc).unwrap_or_default();
            problems.push(
                Problem::new(
                    format!(
                        "host port {}/{} is published by stack `{owner}` ({}/{})",
                        p.host_port, p.proto, q.vpc, q.host
                    ),
                    p.span,
                    "taken",
                )
                .help("each host port forwards to one host; pick another host port"),
            );
        }
    }
    problems
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
