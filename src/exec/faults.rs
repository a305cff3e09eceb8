//! Fault injection for tests, against the real kernel:
//! - `VPCSH_INJECT_FAULT=KIND[@NS]` makes the first operation of that kind (as `Op::kind`
//!   names it: `add-route`, `create-veth`, ...), in namespace NS when given, fail as the
//!   kernel would (EEXIST), to test rollback;
//! - `VPCSH_CRASH_AFTER=N` kills vpcsh (SIGKILL, no cleanup of any kind) right after its
//!   N-th kernel operation, to test that every crash point leaves what the next run finishes
//!   (kills inside an operation are `kill_point`'s).
//!
//! Unset, the backend is used as it is.

use std::collections::{BTreeMap, BTreeSet};

use super::process::ProcessRecord;
use super::{Backend, KernelError, OpError, libc_errno};
use crate::plan::Op;
use crate::plan::kernel::{ForeignChain, KernelState};

const ENV: &str = "VPCSH_INJECT_FAULT";
const CRASH_ENV: &str = "VPCSH_CRASH_AFTER";

/// Which operation fails: its kind, and optionally its namespace.
#[derive(Debug, PartialEq, Eq)]
struct Target {
    kind: String,
    ns: Option<String>,
}

impl Target {
    fn parse(spec: &str) -> Self {
        match spec.split_once('@') {
            Some((kind, ns)) => Self { kind: kind.into(), ns: Some(ns.into()) },
            None => Self { kind: spec.into(), ns: None },
        }
    }

    fn matches(&self, op: &Op) -> bool {
        op.kind() == self.kind && self.ns.as_deref().is_none_or(|ns| ns == op.ns())
    }
}

pub(crate) fn from_env(backend: Box<dyn Backend>) -> Box<dyn Backend> {
    let target = std::env::var(ENV).ok().filter(|s| !s.is_empty()).map(|s| Target::parse(&s));
    let crash_after = std::env::var(CRASH_ENV).ok().and_then(|n| n.parse().ok());
    if target.is_none() && crash_after.is_none() {
        return backend;
    }
    Box::new(Injecting { inner: backend, target, crash_after })
}

struct Injecting {
    inner: Box<dyn Backend>,
    /// The operation to fail, until it has failed once.
    target: Option<Target>,
    /// Operations left before the crash.
    crash_after: Option<usize>,
}

impl Backend for Injecting {
    fn observe(&mut self, namespaces: &BTreeSet<String>) -> Result<KernelState, OpError> {
        self.inner.observe(namespaces)
    }

    fn prefetch(&mut self, namespaces: &BTreeSet<String>) {
        self.inner.prefetch(namespaces);
    }

    fn apply(&mut self, op: &Op) -> Result<(), OpError> {
        if self.target.as_ref().is_some_and(|t| t.matches(op)) {
            self.target = None;
            let cause =
                KernelError { errno: Some(libc_errno::EEXIST), message: format!("injected fault ({ENV})") };
            return Err(OpError { doing: op.to_string(), cause });
        }
        let result = self.inner.apply(op);
        if let Some(left) = &mut self.crash_after {
            *left = left.saturating_sub(1);
            if *left == 0 {
                let _ = nix::sys::signal::raise(nix::sys::signal::Signal::SIGKILL);
            }
        }
        result
    }

    fn finish(&mut self) {
        self.inner.finish();
    }

    fn processes(&self) -> Vec<ProcessRecord> {
        self.inner.processes()
    }

    fn release(&mut self, keep: &BTreeSet<String>) -> Result<(), OpError> {
        self.inner.release(keep)
    }

    fn default_route_dev(&mut self, ns: &str) -> Result<Option<String>, OpError> {
        self.inner.default_route_dev(ns)
    }

    fn host_firewall(&mut self, ns: &str) -> Result<BTreeMap<ForeignChain, bool>, OpError> {
        self.inner.host_firewall(ns)
    }

    fn counters(&mut self, ns: &str) -> Result<Vec<super::nft::RuleCount>, OpError> {
        self.inner.counters(ns)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_target_is_a_kind_and_maybe_a_namespace() {
        let op = Op::DeleteNetns { ns: "sb.prod".into() };
        assert!(Target::parse("delete-netns").matches(&op));
        assert!(Target::parse("delete-netns@sb.prod").matches(&op));
        assert!(!Target::parse("delete-netns@sb.dev").matches(&op));
        assert!(!Target::parse("create-netns").matches(&op));
    }
}
