//! Fault injection for tests: `VPCSH_INJECT_FAULT=TEXT` makes the first operation whose
//! plan line contains TEXT fail as the kernel would (EEXIST), so rollback can be tested
//! against the real kernel. Unset, the backend is used as it is.

use std::collections::BTreeSet;

use super::process::ProcessRecord;
use super::{Backend, KernelError, OpError, libc_errno};
use crate::plan::Op;
use crate::plan::kernel::KernelState;

pub const ENV: &str = "VPCSH_INJECT_FAULT";

pub fn from_env(backend: Box<dyn Backend>) -> Box<dyn Backend> {
    match std::env::var(ENV) {
        Ok(pattern) if !pattern.is_empty() => Box::new(Injecting { inner: backend, pattern, fired: false }),
        _ => backend,
    }
}

struct Injecting {
    inner: Box<dyn Backend>,
    pattern: String,
    fired: bool,
}

impl Backend for Injecting {
    fn observe(&mut self, namespaces: &BTreeSet<String>) -> Result<KernelState, OpError> {
        self.inner.observe(namespaces)
    }

    fn apply(&mut self, op: &Op) -> Result<(), OpError> {
        let line = op.to_string();
        if !self.fired && line.contains(&self.pattern) {
            self.fired = true;
            let cause =
                KernelError { errno: Some(libc_errno::EEXIST), message: format!("injected fault ({ENV})") };
            return Err(OpError { doing: line, cause });
        }
        self.inner.apply(op)
    }

    fn processes(&self) -> Vec<ProcessRecord> {
        self.inner.processes()
    }

    fn default_route_dev(&mut self, ns: &str) -> Result<Option<String>, OpError> {
        self.inner.default_route_dev(ns)
    }
}
