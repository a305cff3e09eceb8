//! The real backend: the kernel's network state through `Netlink`, and the processes vpcsh
//! keeps running through a `Supervisor`, behind the one `Backend` seam.

use std::collections::BTreeSet;
use std::io;
use std::path::PathBuf;

use super::netlink::Netlink;
use super::process::{ProcessRecord, Supervisor};
use super::{Backend, OpError};
use crate::plan::Op;
use crate::plan::kernel::KernelState;

pub(crate) struct System {
    netlink: Netlink,
    supervisor: Supervisor,
}

impl System {
    /// A backend that starts processes with their logs in `log_dir` and knows `records`.
    pub(crate) fn new(log_dir: PathBuf, records: Vec<ProcessRecord>) -> io::Result<Self> {
        Ok(Self { netlink: Netlink::new()?, supervisor: Supervisor::new(log_dir, records) })
    }
}

impl Backend for System {
    fn observe(&mut self, namespaces: &BTreeSet<String>) -> Result<KernelState, OpError> {
        let mut state = self.netlink.observe(namespaces)?;
        for (name, ns) in &mut state.namespaces {
            ns.processes = self.supervisor.running_in(name).cloned().collect();
        }
        Ok(state)
    }

    fn apply(&mut self, op: &Op) -> Result<(), OpError> {
        tracing::debug!("{op}");
        match op {
            Op::StartProcess { ns, process } => {
                self.supervisor.start(ns, process).map_err(|e| OpError::new(op.to_string(), &e))
            }
            Op::StopProcess { ns, process } => {
                self.supervisor.stop(ns, Some(process));
                Ok(())
            }
            Op::DeleteNetns { ns } => {
                // A process inside keeps the namespace alive: stop ours first.
                self.supervisor.stop(ns, None);
                self.netlink.apply(op)
            }
            _ => self.netlink.apply(op),
        }
    }

    fn processes(&self) -> Vec<ProcessRecord> {
        self.supervisor.records().to_vec()
    }

    fn default_route_dev(&mut self, ns: &str) -> Result<Option<String>, OpError> {
        self.netlink.default_route_dev(ns)
    }
}
