//! Fault injection for tests: `VPCSH_INJECT_FAULT=KIND[@NS]` makes the first operation of
//! that kind (as `Op::kind` names it: `add-route`, `create-veth`, ...), in namespace NS when
//! given, fail as the kernel would (EEXIST), so rollback can be tested against the real
//! kernel. Unset, the backend is used as it is.

use std::collections::BTreeSet;

use super::process::ProcessRecord;
use super::{Backend, KernelError, OpError, libc_errno};
use crate::plan::Op;
use crate::plan::kernel::KernelState;

const ENV: &str = "VPCSH_INJECT_FAULT";

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
    match std::env::var(ENV) {
        Ok(spec) if !spec.is_empty() => {
            Box::new(Injecting { inner: backend, target: Target::parse(&spec), fired: false })
        }
        _ => backend,
    }
}

struct Injecting {
    inner: Box<dyn Backend>,
    target: Target,
    fired: bool,
}

impl Backend for Injecting {
    fn observe(&mut self, namespaces: &BTreeSet<String>) -> Result<KernelState, OpError> {
        self.inner.observe(namespaces)
    }

    fn apply(&mut self, op: &Op) -> Result<(), OpError> {
        if !self.fired && self.target.matches(op) {
            self.fired = true;
            let cause =
                KernelError { errno: Some(libc_errno::EEXIST), message: format!("injected fault ({ENV})") };
            return Err(OpError { doing: op.to_string(), cause });
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
