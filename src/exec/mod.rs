//! Execution: applying planned operations to the kernel, and observing what is there.
//!
//! `Backend` is the seam: `System` speaks to the kernel (`Netlink`) and supervises processes
//! (`process::Supervisor`); `Recording` only remembers (for planner and apply tests without
//! root). `apply` runs a plan and, when a step fails,
//! undoes every step this run made, in reverse, collecting every error on the way.

pub(crate) mod capture;
pub(crate) mod faults;
pub(crate) mod frr;
pub(crate) mod guest;
mod iptables_legacy;
mod kill_point;
mod netlink;
pub(crate) mod netns;
pub(crate) mod nft;
mod nla;
mod plain_netlink;
pub(crate) mod probe;
pub(crate) mod process;
pub(crate) mod progress;
mod qdisc;
pub(crate) mod reaper;
#[cfg(test)]
pub(crate) mod recording;
mod sysctl;
mod system;
pub(crate) mod userns;

use std::collections::{BTreeMap, BTreeSet};
use std::io;
use std::sync::atomic::{AtomicBool, Ordering};

use crate::plan::kernel::{ForeignChain, KernelState};
use crate::plan::{Op, Plan, Step, Summary};

pub(crate) use system::System;

/// What a backend must do: observe the named namespaces and apply single operations.
pub(crate) trait Backend {
    /// The kernel state of those of `namespaces` that exist.
    fn observe(&mut self, namespaces: &BTreeSet<String>) -> Result<KernelState, OpError>;
    /// Starts reading `namespaces` in the background, for the next `observe` to use; a
    /// change made in between is seen as one made just after. Nothing unless overridden.
    fn prefetch(&mut self, _namespaces: &BTreeSet<String>) {}
    fn apply(&mut self, op: &Op) -> Result<(), OpError>;
    /// Applies operations that do not depend on one another (see `Op::batches`), at once
    /// where the backend can; what became of each, in order. One by one unless overridden,
    /// skipping the rest after a failure.
    fn apply_batch(&mut self, ops: &[&Op]) -> Vec<Outcome> {
        one_by_one(self, ops)
    }
    /// Called once a plan has been applied or rolled back.
    fn finish(&mut self) {}
    /// The processes started in namespaces, alive or not, for state to record.
    fn processes(&self) -> Vec<process::ProcessRecord>;
    /// Stops and forgets the processes of namespaces outside `keep` (their namespace went
    /// away behind vpcsh's back, or is no longer wanted), and the records of those that ended.
    fn release(&mut self, _keep: &BTreeSet<String>) -> Result<(), OpError> {
        Ok(())
    }
    /// The interface of the default route in a namespace, if it has one.
    fn default_route_dev(&mut self, ns: &str) -> Result<Option<String>, OpError>;
    /// Other tools' forward chains in `ns` that drop what they do not accept, each with
    /// whether vpcsh's accept rules are in it.
    fn host_firewall(&mut self, _ns: &str) -> Result<BTreeMap<ForeignChain, bool>, OpError> {
        Ok(BTreeMap::new())
    }
    /// What each rule of vpcsh's table in `ns` has matched so far.
    fn counters(&mut self, _ns: &str) -> Result<Vec<nft::RuleCount>, OpError> {
        Ok(Vec::new())
    }
}

/// A kernel error with the errno it carried, when there was one.
#[derive(Debug)]
pub(crate) struct KernelError {
    pub errno: Option<i32>,
    pub message: String,
}

impl KernelError {
    pub(crate) fn from_io(e: &io::Error) -> Self {
        Self { errno: e.raw_os_error(), message: e.to_string() }
    }

    /// What the user can do about it.
    pub(crate) fn hint(&self) -> Option<&'static str> {
        match self.errno? {
            libc_errno::EPERM | libc_errno::EACCES => Some(
                "vpcsh needs root or CAP_NET_ADMIN (and CAP_SYS_ADMIN for namespaces): run it with sudo, or in a sandbox (`--sandbox NAME`), which needs no root",
            ),
            libc_errno::EEXIST => Some(
                "an object of that name already exists; if vpcsh did not make it, remove or rename it; \
                 `vpcsh status` shows what vpcsh owns",
            ),
            libc_errno::EOPNOTSUPP | libc_errno::EAFNOSUPPORT => {
                Some("this kernel lacks a needed feature (network namespaces, veth or bridge support)")
            }
            libc_errno::EROFS => Some("/run/netns is read-only here: vpcsh needs a writable /run"),
            _ => None,
        }
    }
}

impl std::fmt::Display for KernelError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

/// Errno values vpcsh gives advice for.
pub(crate) mod libc_errno {
    use nix::errno::Errno;
    pub(crate) const EPERM: i32 = Errno::EPERM as i32;
    pub(crate) const EACCES: i32 = Errno::EACCES as i32;
    pub(crate) const EEXIST: i32 = Errno::EEXIST as i32;
    pub(crate) const EOPNOTSUPP: i32 = Errno::EOPNOTSUPP as i32;
    pub(crate) const EAFNOSUPPORT: i32 = Errno::EAFNOSUPPORT as i32;
    pub(crate) const EROFS: i32 = Errno::EROFS as i32;
}

/// An operation that failed: what vpcsh was doing, and what the kernel said.
#[derive(Debug, thiserror::Error)]
#[error("{doing}: {cause}")]
pub(crate) struct OpError {
    pub doing: String,
    pub cause: KernelError,
}

impl OpError {
    pub(crate) fn new(doing: impl Into<String>, cause: &io::Error) -> Self {
        Self { doing: doing.into(), cause: KernelError::from_io(cause) }
    }
}

/// A failed apply: the step that failed, and any undo steps that failed after it.
#[derive(Debug)]
pub(crate) struct ApplyError {
    pub failed: OpError,
    pub rollback_failures: Vec<OpError>,
    /// How many completed steps were undone.
    pub undone: usize,
}

static INTERRUPTED: AtomicBool = AtomicBool::new(false);

/// Asks a running apply to stop at the next step and roll back (from a signal handler:
/// it only stores to an atomic).
pub(crate) fn interrupt() {
    INTERRUPTED.store(true, Ordering::SeqCst);
}

pub(crate) fn interrupted() -> bool {
    INTERRUPTED.load(Ordering::SeqCst)
}

/// Forgets an interruption once it has been dealt with (the REPL goes on to the next input).
pub(crate) fn clear_interrupt() {
    INTERRUPTED.store(false, Ordering::SeqCst);
}

/// From now on Ctrl-C and SIGTERM ask the running work to stop (see `interrupted`) instead
/// of killing vpcsh, so it can finish the current step, roll back and save its state.
pub(crate) fn stop_on_signals() {
    use nix::sys::signal::{SaFlags, SigAction, SigHandler, SigSet, Signal, sigaction};
    extern "C" fn on_signal(_: i32) {
        interrupt();
    }
    let action = SigAction::new(SigHandler::Handler(on_signal), SaFlags::empty(), SigSet::empty());
    // SAFETY: the handler only stores to an atomic.
    unsafe {
        let _ = sigaction(Signal::SIGINT, &action);
        let _ = sigaction(Signal::SIGTERM, &action);
    }
}

/// What became of one operation of a batch.
#[derive(Debug)]
pub(crate) enum Outcome {
    Done,
    Failed(OpError),
    /// Not tried: another failed first, or the apply was interrupted.
    Skipped,
}

/// Applies `ops` in order, skipping the rest after a failure or an interruption.
pub(crate) fn one_by_one<B: Backend + ?Sized>(backend: &mut B, ops: &[&Op]) -> Vec<Outcome> {
    let mut failed = false;
    ops.iter()
        .map(|op| {
            if failed || interrupted() {
                return Outcome::Skipped;
            }
            backend.apply(op).map_or_else(
                |e| {
                    failed = true;
                    Outcome::Failed(e)
                },
                |()| Outcome::Done,
            )
        })
        .collect()
}

/// At most this many operations go to the backend at once, so progress and Ctrl-C are
/// seen between batches.
const BATCH: usize = 128;

/// Applies a plan in order, independent operations of a kind in batches. On failure, or
/// when interrupted, undoes the completed steps that can be undone, in reverse, and reports
/// every error.
pub(crate) fn apply(backend: &mut dyn Backend, plan: &Plan) -> Result<Summary, ApplyError> {
    let mut timing = Timing::default();
    let mut progress = progress::Progress::new(plan.steps.len());
    let mut done: Vec<&Step> = Vec::with_capacity(plan.steps.len());
    let mut rest = plan.steps.as_slice();
    while let Some(first) = rest.first() {
        let together = if first.op.batches() {
            rest.iter().take(BATCH).take_while(|s| s.op.kind() == first.op.kind()).count()
        } else {
            1
        };
        let (batch, later) = rest.split_at(together);
        rest = later;
        progress.step(done.len(), first.op.kind());
        let started = std::time::Instant::now();
        let outcomes = if interrupted() {
            let cause =
                KernelError { errno: Some(nix::errno::Errno::EINTR as i32), message: "interrupted".into() };
            vec![Outcome::Failed(OpError { doing: first.op.to_string(), cause })]
        } else {
            let ops: Vec<&Op> = batch.iter().map(|s| &s.op).collect();
            backend.apply_batch(&ops)
        };
        timing.add(first.op.kind(), batch.len(), started.elapsed());
        let mut failure = None;
        for (step, outcome) in batch.iter().zip(outcomes) {
            match outcome {
                Outcome::Done => done.push(step),
                Outcome::Failed(e) if failure.is_none() => failure = Some(e),
                Outcome::Failed(e) => tracing::warn!("{e}"),
                Outcome::Skipped => {}
            }
        }
        if let Some(failed) = failure {
            let error = roll_back(backend, &done, failed);
            backend.finish();
            return Err(error);
        }
    }
    backend.finish();
    timing.log();
    Ok(plan.summary())
}

/// Undoes `done`, last first, collecting what fails on the way.
fn roll_back(backend: &mut dyn Backend, done: &[&Step], failed: OpError) -> ApplyError {
    let mut rollback_failures = Vec::new();
    let mut undone = 0;
    for step in done.iter().rev() {
        let Some(undo) = &step.undo else { continue };
        match backend.apply(undo) {
            Ok(()) => undone += 1,
            Err(e) => rollback_failures.push(e),
        }
    }
    ApplyError { failed, rollback_failures, undone }
}

/// Where an apply's time went, by kind of operation (`-v` prints it).
#[derive(Default)]
struct Timing(std::collections::BTreeMap<&'static str, (std::time::Duration, usize)>);

impl Timing {
    fn add(&mut self, kind: &'static str, count: usize, took: std::time::Duration) {
        let entry = self.0.entry(kind).or_default();
        entry.0 += took;
        entry.1 += count;
    }

    fn log(&self) {
        let mut by_time: Vec<_> = self.0.iter().collect();
        by_time.sort_by_key(|(_, (took, _))| std::cmp::Reverse(*took));
        for (kind, (took, n)) in by_time {
            let each = took.as_secs_f64() * 1e3 / *n as f64;
            tracing::info!("{kind}: {n} in {:.1} ms ({each:.3} ms each)", took.as_secs_f64() * 1e3);
        }
    }
}
