//! The real backend: the kernel's network state through `Netlink`, and the processes vpcsh
//! keeps running through a `Supervisor`, behind the one `Backend` seam.

use std::collections::{BTreeMap, BTreeSet};
use std::io;
use std::path::PathBuf;

use super::netlink::Netlink;
use super::process::{Journal, ProcessRecord, Supervisor};
use super::{Backend, OpError};
use crate::plan::Op;
use crate::plan::kernel::{ForeignChain, KernelState};

pub(crate) struct System {
    netlink: Netlink,
    supervisor: Supervisor,
}

impl System {
    /// A backend that starts processes with their logs in `log_dir`, knows `records`, and
    /// writes every change to them to `journal` before it lets a new process run.
    pub(crate) fn new(
        log_dir: PathBuf,
        records: Vec<ProcessRecord>,
        journal: Box<dyn Journal>,
    ) -> io::Result<Self> {
        Ok(Self { netlink: Netlink::new()?, supervisor: Supervisor::new(log_dir, records, journal) })
    }
}

impl Backend for System {
    fn observe(&mut self, namespaces: &BTreeSet<String>) -> Result<KernelState, OpError> {
        let mut state = self.netlink.observe(namespaces)?;
        for (name, ns) in &mut state.namespaces {
            ns.processes = self.supervisor.present_in(name).cloned().collect();
        }
        Ok(state)
    }

    fn apply(&mut self, op: &Op) -> Result<(), OpError> {
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
