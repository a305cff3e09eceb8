//! The real backend: the kernel's network state through `Netlink`, and the processes vpcsh
//! keeps running through a `Supervisor`, behind the one `Backend` seam.

use std::collections::{BTreeMap, BTreeSet};
use std::io;
use std::path::PathBuf;

use super::netlink::Netlink;
use super::process::{Journal, ProcessRecord, Supervisor};
use super::reaper::Working;
use super::{Backend, OpError, Outcome, one_by_one};
use crate::plan::Op;
use crate::plan::kernel::{ForeignChain, KernelState, Process};

pub(crate) struct System {
    netlink: Netlink,
    supervisor: Supervisor,
    /// Held while a plan is applied: reapers wait for it (see `reaper`).
    working: Option<Working>,
}

impl System {
    /// A backend that starts processes with their logs in `log_dir`, knows `records`, and
    /// writes every change to them to `journal` before it lets a new process run.
    pub(crate) fn new(
        log_dir: PathBuf,
        records: Vec<ProcessRecord>,
        journal: Box<dyn Journal>,
    ) -> io::Result<Self> {
        Ok(Self {
            netlink: Netlink::new()?,
            supervisor: Supervisor::new(log_dir, records, journal),
            working: None,
        })
    }

    /// Namespaces made at once, after the processes recorded for any of them are stopped:
    /// one left in an old namespace of that name, deleted behind vpcsh's back, would
    /// otherwise live on.
    fn create_netns_all(&mut self, ops: &[&Op], creates: &[(&str, bool, bool)]) -> Vec<Outcome> {
        for (i, (ns, ..)) in creates.iter().enumerate() {
            if let Err(e) = self.supervisor.stop(ns, None) {
                let mut out: Vec<Outcome> = (0..ops.len()).map(|_| Outcome::Skipped).collect();
                out[i] = Outcome::Failed(OpError::new(ops[i].to_string(), &e));
                return out;
            }
        }
        let made = self.netlink.create_netns_all(creates);
        ops.iter()
            .zip(made)
            .map(|(op, made)| match made {
                Some(Ok(())) => Outcome::Done,
                Some(Err(e)) => Outcome::Failed(self.netlink.op_error(op, &e)),
                None => Outcome::Skipped,
            })
            .collect()
    }
}

impl Backend for System {
    fn prefetch(&mut self, namespaces: &BTreeSet<String>) {
        // The reading holds off reapers as `observe` does, for as long as it lasts.
        self.netlink.prefetch(namespaces, Working::start());
    }

    fn observe(&mut self, namespaces: &BTreeSet<String>) -> Result<KernelState, OpError> {
        // Reapers wait while the kernel is read too: each of their requests holds the routing
        // lock for tens of milliseconds, and a no-op re-apply, which changes nothing, would
        // otherwise read 500 namespaces between them.
        let _reading = self.working.is_none().then(Working::start);
        let mut state = self.netlink.observe(namespaces)?;
        for (name, ns) in &mut state.namespaces {
            ns.processes = self.supervisor.present_in(name).cloned().collect();
        }
        Ok(state)
    }

    fn apply(&mut self, op: &Op) -> Result<(), OpError> {
        self.working.get_or_insert_with(Working::start);
        tracing::debug!("{op}");
        let failed = |e: io::Error| OpError::new(op.to_string(), &e);
        match op {
            Op::StartProcess { ns, process } => self.supervisor.start(ns, process).map_err(failed),
            Op::StopProcess { ns, process } => self.supervisor.stop(ns, Some(process)).map_err(failed),
            Op::ReplaceProcess { ns, old, new } => self
                .supervisor
                .stop(ns, Some(old))
                .and_then(|()| self.supervisor.start(ns, new))
                .map_err(failed),
            // A process inside keeps a namespace alive; one recorded for a namespace about to
            // be created lives on in the old one, deleted behind vpcsh's back. Stop them first.
            Op::DeleteNetns { ns } | Op::CreateNetns { ns, .. } => {
                self.supervisor.stop(ns, None).map_err(failed)?;
                self.netlink.apply(op)
            }
            _ => self.netlink.apply(op),
        }
    }

    fn apply_batch(&mut self, ops: &[&Op]) -> Vec<Outcome> {
        self.working.get_or_insert_with(Working::start);
        let creates: Option<Vec<(&str, bool, bool)>> = ops
            .iter()
            .map(|op| match op {
                Op::CreateNetns { ns, forwarding, ipv6 } => Some((ns.as_str(), *forwarding, *ipv6)),
                _ => None,
            })
            .collect();
        if let Some(creates) = creates {
            return self.create_netns_all(ops, &creates);
        }
        let starts: Option<Vec<(&str, &Process)>> = ops
            .iter()
            .map(|op| match op {
                Op::StartProcess { ns, process } => Some((ns.as_str(), process)),
                _ => None,
            })
            .collect();
        match starts {
            Some(starts) => ops
                .iter()
                .zip(self.supervisor.start_all(&starts))
                .map(|(op, started)| match started {
                    Ok(()) => Outcome::Done,
                    Err(e) => Outcome::Failed(OpError::new(op.to_string(), &e)),
                })
                .collect(),
            None => one_by_one(self, ops),
        }
    }

    fn finish(&mut self) {
        self.netlink.hand_off_deleted();
        self.working = None;
    }

    fn processes(&self) -> Vec<ProcessRecord> {
        self.supervisor.records().to_vec()
    }

    fn release(&mut self, keep: &BTreeSet<String>) -> Result<(), OpError> {
        let failed = |e: io::Error| OpError::new("stopping processes of namespaces gone or unwanted", &e);
        self.supervisor.release(keep).map_err(failed)
    }

    fn default_route_dev(&mut self, ns: &str) -> Result<Option<String>, OpError> {
        self.netlink.default_route_dev(ns)
    }

    fn counters(&mut self, ns: &str) -> Result<Vec<super::nft::RuleCount>, OpError> {
        self.netlink.counters(ns)
    }

    fn host_firewall(&mut self, ns: &str) -> Result<BTreeMap<ForeignChain, bool>, OpError> {
        self.netlink.host_firewall(ns)
    }
}
