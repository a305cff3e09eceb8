//! The engine room of a run: the locked state, a kernel backend, and the naming of one
//! scope; plans against the observed kernel and converges it.

use std::collections::BTreeSet;

use crate::exec::process::{Journal, ProcessRecord};
use crate::exec::{self, Backend, OpError, System, faults, netns};
use crate::model::Network;
use crate::plan::desired::FABRIC_BRIDGE;
use crate::plan::kernel::{KernelState, LinkKind, Nft, Owner};
use crate::plan::naming::{HOST_NS, Naming, UPLINK_IFNAME};
use crate::plan::{self, Plan, Summary, desired};
use crate::script::EffectError;
use crate::state::{self, Store};

use super::{Failure, StackName, Target};

/// The engine room: the locked state, a kernel backend and the naming of this scope.
pub(crate) struct Runner {
    naming: Naming,
    store: Store,
    backend: Box<dyn Backend>,
    /// The real host's uplink: `--uplink`, or the default route's, once looked up.
    uplink: Option<String>,
    /// `--node`: which node of a fabric this machine is.
    node: Option<String>,
    /// `--fabric`: the simulated underlay this sandbox machine joins.
    fabric: Option<String>,
}

impl Runner {
    pub(crate) fn open(target: &Target) -> Result<Self, Failure> {
        target.check()?;
        let store = Store::open(&target.dir()).map_err(state_failure)?;
        let journal = Box::new(StateJournal(store.dir().to_path_buf()));
        let system = System::new(store.log_dir(), store.state.processes.clone(), journal)
            .map_err(|e| Failure::refused(format!("cannot start the netlink runtime: {e}"), None))?;
        let backend = faults::from_env(Box::new(system));
        Ok(Self {
            naming: target.naming(),
            store,
            backend,
            uplink: target.uplink.clone(),
            node: target.node.clone(),
            fabric: target.fabric.clone(),
        })
    }

    pub(crate) fn network(&self) -> &Network {
        &self.store.state.network
    }

    pub(crate) fn state(&self) -> &state::State {
        &self.store.state
    }

    pub(crate) fn naming(&self) -> &Naming {
        &self.naming
    }

    /// Where the logs of started processes go.
    pub(crate) fn log_dir(&self) -> std::path::PathBuf {
        self.store.log_dir()
    }

    /// The processes started in namespaces, as the backend knows them now.
    pub(crate) fn processes(&self) -> Vec<crate::exec::process::ProcessRecord> {
        self.backend.processes()
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
            Ok(Some(dev)) => {
                // Asked once per run: plans for the old and the new network use the same one.
                self.uplink = Some(dev.clone());
                Ok(dev)
            }
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
        let fabric = self.place(network)?;
        Ok(desired::desired(network, &desired::Machine { naming: &self.naming, uplink: &uplink, fabric }))
    }

    /// Where this machine stands in a network spread over nodes: `--node`, and in a
    /// sandbox `--fabric` (or the fabric it joined before).
    fn place<'a>(&'a self, network: &'a Network) -> Result<Option<desired::Fabric<'a>>, EffectError> {
        if !network.is_fabric() {
            return Ok(None);
        }
        let declared = || network.nodes.iter().map(|n| n.name.as_str()).collect::<Vec<_>>().join(", ");
        let Some(name) = self.node.as_ref().or(self.store.state.node.as_ref()) else {
            return Err(failed(
                format!("this network is spread over nodes ({}): which one is this machine?", declared()),
                "say it with --node NAME; each node runs the same script and builds its part",
            ));
        };
        let Some(node) = network.node(name) else {
            return Err(failed(
                format!("no node is called `{name}`"),
                &format!("the script declares {}", declared()),
            ));
        };
        if network.control == crate::model::fabric::Control::Evpn
            && let Some(why) = exec::frr::missing()
        {
            return Err(failed(
                format!("this fabric learns MACs over BGP EVPN, and {why}"),
                "install FRR (`apt-get install frr`), or use fabric(#{ control: \"static\" })",
            ));
        }
        let underlay = self.fabric.as_deref().or(self.store.state.fabric.as_deref());
        if self.naming.sandbox && underlay.is_none() {
            return Err(failed(
                format!("sandbox machine `{}` has no network to the other nodes", self.naming.prefix),
                "join a simulated data centre with --fabric NAME (the same for every node)",
            ));
        }
        Ok(Some(desired::Fabric { node, underlay: underlay.filter(|_| self.naming.sandbox) }))
    }

    /// What each of vpcsh's rules in the applied network has matched: the rule, where it
    /// came from, and its counts, namespace by namespace.
    pub(crate) fn counters(&mut self) -> Result<Vec<RuleCounter>, EffectError> {
        let mut rules = self.rules()?;
        let mut read: Option<(String, Vec<exec::nft::RuleCount>)> = None;
        for rule in &mut rules {
            // Rules come namespace by namespace: one dump each.
            if read.as_ref().is_none_or(|(ns, _)| *ns != rule.ns) {
                read = Some((rule.ns.clone(), self.backend.counters(&rule.ns).map_err(op_failure)?));
            }
            let counts = read.as_ref().map(|(_, c)| c.as_slice()).unwrap_or_default();
            let seen = counts.iter().find(|c| c.chain == rule.chain && c.comment == rule.comment);
            rule.counts = seen.map(|c| (c.packets, c.bytes));
        }
        Ok(rules)
    }

    /// The rules of vpcsh's tables in the applied network's existing namespaces, with what
    /// made them, and no counts (nothing is read from the kernel).
    pub(crate) fn rules(&mut self) -> Result<Vec<RuleCounter>, EffectError> {
        let network = self.network().clone();
        let desired = self.desired(&network, false)?;
        let mut out = Vec::new();
        for (ns, wanted) in &desired.namespaces {
            let Some(Nft::Wanted(ruleset)) = &wanted.nft else { continue };
            if !netns::exists(ns) && ns != HOST_NS {
                continue;
            }
            for chain in &ruleset.chains {
                out.extend(chain.rules.iter().map(|rule| RuleCounter {
                    ns: ns.clone(),
                    chain: chain.name.to_string(),
                    rule: rule.to_string(),
                    comment: rule.fingerprint(),
                    origin: rule.origin.clone(),
                    log: rule.log.clone(),
                    counts: None,
                }));
            }
        }
        Ok(out)
    }

    /// The machine's foreign chains that drop what they do not accept and that vpcsh cannot
    /// write to (the plan's `Passage::Blocked`, without planning).
    pub(crate) fn blocking_chains(&mut self) -> Result<Vec<String>, EffectError> {
        let machine = self.naming.machine_ns();
        if machine != HOST_NS && !netns::exists(&machine) {
            return Ok(Vec::new());
        }
        let chains = self.backend.host_firewall(&machine).map_err(op_failure)?;
        Ok(chains.into_iter().filter(|(c, open)| !c.writable && !open).map(|(c, _)| c.to_string()).collect())
    }

    /// Starts reading the namespaces vpcsh owns here, while the caller works out what it
    /// wants (a script's run): the next plan uses what was read. A machine of a fabric reads
    /// only once it has its turn at the shared namespace, which others change meanwhile.
    pub(crate) fn prefetch(&mut self) {
        if self.fabric.is_none() && self.store.state.fabric.is_none() {
            self.backend.prefetch(&self.store.state.namespaces);
        }
    }

    /// Observes every namespace vpcsh owns here or wants.
    fn observe(&mut self, desired: &KernelState) -> Result<KernelState, EffectError> {
        let names: BTreeSet<String> =
            self.store.state.namespaces.iter().chain(desired.namespaces.keys()).cloned().collect();
        let mut observed = self.backend.observe(&names).map_err(op_failure)?;
        // A run killed between creating a namespace's file and mounting onto it left the
        // bare file: no namespace (so not observed), only a name in the way of creating it.
        let unseen = self.store.state.namespaces.iter().filter(|n| !observed.namespaces.contains_key(*n));
        for name in unseen.filter(|n| netns::is_stale(n)) {
            tracing::warn!(
                "removing {}: a namespace file nothing is mounted on",
                netns::path(name).display()
            );
            netns::remove(name)
                .map_err(|e| op_failure(OpError::new(format!("removing stale {name}"), &e)))?;
        }
        let machine = self.naming.machine_ns();
        if let Some(ns) = observed.namespaces.get_mut(&machine) {
            ns.host_firewall = self.backend.host_firewall(&machine).map_err(op_failure)?;
        }
        Ok(observed)
    }

    /// The plan that makes the kernel match `network`.
    pub(crate) fn plan(&mut self, network: &Network, bare: bool) -> Result<Plan, EffectError> {
        self.plan_for(network, bare).map(|planned| planned.plan)
    }

    /// The plan, with the desired state it leads to and the namespaces it found.
    fn plan_for(&mut self, network: &Network, bare: bool) -> Result<Planned, EffectError> {
        let started = std::time::Instant::now();
        let mut desired = self.desired(network, bare)?;
        let computed = started.elapsed();
        let mut observed = self.observe(&desired)?;
        // Other machines may still use the fabric: the last to leave removes it (see
        // `leave_fabric_now`), never a plan.
        if let Some(fabric) = &self.store.state.fabric
            && !desired.namespaces.contains_key(fabric)
        {
            observed.namespaces.remove(fabric);
        }
        tracing::info!(
            "desired state of {} namespaces in {:.1} ms, observed in {:.1} ms",
            desired.namespaces.len(),
            computed.as_secs_f64() * 1e3,
            (started.elapsed() - computed).as_secs_f64() * 1e3
        );
        let owned = &self.store.state.namespaces;
        if let Some(foreign) = desired.namespaces.keys().find(|n| {
            *n != HOST_NS
                && !owned.contains(*n)
                && observed.namespaces.contains_key(*n)
                && !(desired.namespaces[*n].owner == Owner::Fabric && netns::fabric_recorded(n))
        }) {
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
        let present = observed.namespaces.keys().cloned().collect();
        // A re-apply of what was applied wanted the same before: computed once.
        let previous_network = &self.store.state.network;
        if !bare && !network.vpcs.is_empty() && previous_network == network {
            return Ok(Planned { plan: plan::plan_from(&desired, &observed, &desired), desired, present });
        }
        let previous_network = previous_network.clone();
        let previous = self.desired(&previous_network, false).unwrap_or_default();
        Ok(Planned { plan: plan::plan_from(&desired, &observed, &previous), desired, present })
    }

    /// Makes the kernel match `network` and records the result.
    pub(crate) fn converge(&mut self, network: &Network, bare: bool) -> Result<Summary, EffectError> {
        // Sandbox machines of one fabric change its shared namespace one at a time, from
        // observing it to leaving it.
        let fabric =
            self.fabric.clone().or_else(|| self.store.state.fabric.clone()).filter(|_| self.naming.sandbox);
        let _turn = match &fabric {
            Some(name) => Some(
                netns::fabric_turn(name)
                    .map_err(|e| op_failure(OpError::new(format!("waiting for the fabric {name}"), &e)))?,
            ),
            None => None,
        };
        let Planned { plan, desired, present } = self.plan_for(network, bare)?;
        report_host_firewall(&plan);
        if plan.is_empty() {
            self.release_orphans(&present)?;
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
        // Likewise the fabric this machine joins and the node it is, so a crash cannot leave
        // it on the fabric unrecorded (a later destroy must leave, not delete, the fabric).
        let joins = desired.namespaces.values().any(|ns| ns.owner == Owner::Fabric);
        let was_node = self.store.state.node.clone();
        if network.is_fabric() {
            self.store.state.node = self.node.clone().or_else(|| was_node.clone());
        }
        let fabric =
            desired.namespaces.iter().find(|(_, ns)| ns.owner == Owner::Fabric).map(|(n, _)| n.clone());
        if let Some(fabric) = &fabric {
            self.store.state.fabric = Some(fabric.clone());
            if !netns::fabric_recorded(fabric) {
                netns::record_fabric(fabric)
                    .map_err(|e| op_failure(OpError::new(format!("recording the fabric {fabric}"), &e)))?;
            }
        }
        self.save()?;
        let result = exec::apply(self.backend.as_mut(), &plan);
        // A rolled-back first join took the fabric's namespace away again.
        fabric.iter().for_each(|f| netns::forget_fabric(f));
        let wanted: BTreeSet<String> = desired.namespaces.into_keys().collect();
        self.store.state.namespaces =
            before.union(&wanted).filter(|n| *n != HOST_NS && netns::exists(n)).cloned().collect();
        let released = self.backend.release(&self.store.state.namespaces);
        self.store.state.processes = self.backend.processes();
        if result.is_ok() {
            self.record_applied(&plan, network);
            if !joins {
                self.leave_fabric(was_node.as_deref());
            }
        }
        self.save()?;
        released.map_err(op_failure)?;
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

    /// A machine no longer part of a fabric leaves the one it joined, if any: see
    /// `leave_fabric_now`.
    fn leave_fabric(&mut self, node: Option<&str>) {
        if !self.store.state.network.is_fabric() {
            self.store.state.node = None;
        }
        let Some(fabric) = self.store.state.fabric.take() else { return };
        self.store.state.namespaces.remove(&fabric);
        if let Err(e) = self.leave_fabric_now(&fabric, node) {
            tracing::warn!("could not leave the fabric {fabric}: {e}");
        }
    }

    /// Takes this machine's port off the fabric's switch (its far end may outlive the
    /// machine's namespace for a while), and removes the fabric once no port is left.
    fn leave_fabric_now(&mut self, fabric: &str, node: Option<&str>) -> Result<(), OpError> {
        let names = BTreeSet::from([fabric.to_string()]);
        let Some(ns) = self.backend.observe(&names)?.namespaces.remove(fabric) else { return Ok(()) };
        let mine = node.map(crate::model::names::fabric_port_ifname);
        let mut steps = Vec::new();
        let mut others = 0;
        for (name, link) in &ns.links {
            if link.kind == LinkKind::Loopback || name == FABRIC_BRIDGE {
                continue;
            }
            if Some(name) == mine.as_ref() {
                steps.push(plan::Op::DeleteLink { ns: fabric.into(), name: name.clone() });
            } else {
                others += 1;
            }
        }
        if others == 0 {
            steps = vec![plan::Op::DeleteNetns { ns: fabric.into() }];
        }
        let steps = steps.into_iter().map(|op| plan::Step { op, owner: Owner::Fabric, undo: None }).collect();
        let left = exec::apply(self.backend.as_mut(), &Plan { steps, ..Plan::default() });
        netns::forget_fabric(fabric);
        left.map(|_| ()).map_err(|e| e.failed)
    }

    /// Stops processes vpcsh started whose namespaces were deleted behind its back: with
    /// nothing else to change, no step of a plan would. `present`: the namespaces the plan
    /// found.
    fn release_orphans(&mut self, present: &BTreeSet<String>) -> Result<(), EffectError> {
        let before = self.backend.processes();
        if before.is_empty() {
            return Ok(());
        }
        self.store.state.namespaces.retain(|n| *n != HOST_NS && present.contains(n));
        let released = self.backend.release(&self.store.state.namespaces);
        if self.backend.processes() != before {
            self.store.state.processes = self.backend.processes();
            self.save()?;
        }
        released.map_err(op_failure)
    }

    /// Records a network as applied: its VPCs, which stacks still own something, and
    /// whether vpcsh turned on the real host's forwarding.
    fn record_applied(&mut self, plan: &Plan, network: &Network) {
        let turned_on = plan
            .steps
            .iter()
            .any(|s| matches!(&s.op, plan::Op::SetForwarding { ns, on: true } if ns == HOST_NS));
        if turned_on {
            self.store.state.host_forwarding_set = true;
        } else if network.vpcs.is_empty() {
            self.store.state.host_forwarding_set = false;
        }
        for stack in self.store.state.stacks.values_mut() {
            stack.vpcs.retain(|v| network.vpc(v).is_some());
        }
        self.store.state.stacks.retain(|_, s| !s.vpcs.is_empty());
        self.store.state.network = network.clone();
    }

    /// The applied network of one stack.
    pub(crate) fn stack_network(&self, stack: &str) -> Network {
        self.network().only(&self.store.state.stack_vpcs(stack))
    }

    /// The whole network once one stack's part is `network`: every other stack as it is.
    fn with_other_stacks(&self, stack: &StackName, network: &Network) -> Network {
        let mine: Vec<String> = self
            .store
            .state
            .stack_vpcs(&stack.name)
            .into_iter()
            .chain(network.vpcs.iter().map(|v| v.name.clone()))
            .collect();
        network.beside(&self.network().without(&mine))
    }

    /// The plan that makes one stack's part of the network `network`.
    pub(crate) fn plan_stack(&mut self, stack: &StackName, network: &Network) -> Result<Plan, EffectError> {
        let full = self.with_other_stacks(stack, network);
        self.plan(&full, false)
    }

    /// Makes the kernel match `network` for one stack, leaving every other stack as it is;
    /// the stack then owns exactly `network`'s VPCs (adopting any no stack owned).
    pub(crate) fn converge_stack(
        &mut self,
        stack: &StackName,
        network: &Network,
    ) -> Result<Summary, EffectError> {
        let full = self.with_other_stacks(stack, network);
        let summary = self.converge(&full, false)?;
        let owned = network.vpcs.iter().map(|v| v.name.clone()).collect::<BTreeSet<_>>();
        for other in self.store.state.stacks.values_mut() {
            other.vpcs.retain(|v| !owned.contains(v));
        }
        if !owned.is_empty() {
            let entry = self.store.state.stacks.entry(stack.name.clone()).or_default();
            entry.vpcs = owned;
            entry.script = stack.script.clone();
        }
        self.store.state.stacks.retain(|_, s| !s.vpcs.is_empty());
        self.save()?;
        Ok(summary)
    }

    fn save(&mut self) -> Result<(), EffectError> {
        self.store.save().map_err(|e| EffectError::Failed {
            message: e.to_string(),
            help: None,
            notes: Vec::new(),
        })
    }
}

/// A plan, with what it was made from.
struct Planned {
    plan: Plan,
    /// The kernel state the plan leads to.
    desired: KernelState,
    /// The namespaces that existed when it was made.
    present: BTreeSet<String>,
}

/// The supervisor's journal: process records go into the state file before a process runs.
struct StateJournal(std::path::PathBuf);

impl Journal for StateJournal {
    fn record(&mut self, records: &[ProcessRecord]) -> std::io::Result<()> {
        state::record_processes(&self.0, records).map_err(std::io::Error::other)
    }
}

/// One rule's counts (`None`: the rule is not in the kernel, so it has counted nothing).
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct RuleCounter {
    pub ns: String,
    pub chain: String,
    pub rule: String,
    /// Its comment in the kernel: `vpcsh` and its fingerprint.
    pub comment: String,
    pub origin: Option<String>,
    /// Its flow log prefix, when it logs.
    pub log: Option<String>,
    pub counts: Option<(u64, u64)>,
}

impl RuleCounter {
    /// What the rule decides for a flow it logs: a rule that passes it on (the last of a
    /// firewall's chain) leaves it to the chain's policy, which drops.
    pub(crate) fn accepts(&self) -> bool {
        self.rule.ends_with(" accept")
    }
}

/// Changing namespaces needs CAP_SYS_ADMIN (mounts, setns) and CAP_NET_ADMIN (links).
pub(super) fn require_privilege() -> Result<(), EffectError> {
    if crate::exec::userns::privileged() {
        return Ok(());
    }
    Err(EffectError::Failed {
        message:
            "vpcsh needs root or CAP_NET_ADMIN and CAP_SYS_ADMIN to change the machine's network namespaces"
                .into(),
        help: Some(
            "run it with sudo, or rootless inside a sandbox: `vpcsh --sandbox NAME ...`; \
             `vpcsh check SCRIPT` validates a script without privileges"
                .into(),
        ),
        notes: Vec::new(),
    })
}

fn failed(message: String, help: &str) -> EffectError {
    EffectError::Failed { message, help: Some(help.into()), notes: Vec::new() }
}

pub(super) fn op_failure(e: OpError) -> EffectError {
    EffectError::Failed { message: e.to_string(), help: e.cause.hint().map(Into::into), notes: Vec::new() }
}

pub(super) fn state_failure(e: state::StateError) -> Failure {
    let help = match &e {
        state::StateError::Dir { .. } => Some("pass a --state-dir DIR you may write"),
        state::StateError::Version { .. } => {
            Some("use the vpcsh that wrote it, or move the state directory aside")
        }
        state::StateError::Parse { .. } => {
            Some("the file is damaged: `vpcsh status` cannot trust it; move it aside")
        }
        _ => None,
    };
    Failure::refused(e.to_string(), help)
}

/// Says what vpcsh found of other tools' firewalls: `-v` shows every chain and what vpcsh
/// does about it; a chain vpcsh cannot open is a warning, since it drops VPC traffic.
fn report_host_firewall(plan: &Plan) {
    for (chain, passage) in &plan.host_firewall {
        match passage {
            plan::Passage::Blocked => tracing::warn!(
                "the host firewall's {chain} drops what it does not accept, and vpcsh cannot add rules there: \
                 VPC traffic through the machine is dropped (see `vpcsh status`)"
            ),
            _ => tracing::info!("host firewall: {chain}: {passage} ({})", chain.rules_in),
        }
    }
}
