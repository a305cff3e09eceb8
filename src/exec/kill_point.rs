//! Kills inside an operation, for crash tests against the real kernel (kills between
//! operations are `faults`'): `VPCSH_CRASH_WHEN_NAMED=NS` kills vpcsh (SIGKILL, no cleanup)
//! the moment namespace NS gets its name. Unset, nothing happens.

use std::sync::OnceLock;

const NAMED_ENV: &str = "VPCSH_CRASH_WHEN_NAMED";

/// Kills vpcsh if `VPCSH_CRASH_WHEN_NAMED` names `ns`, which has just got its name.
pub(crate) fn named(ns: &str) {
    static WHEN: OnceLock<Option<String>> = OnceLock::new();
    if WHEN.get_or_init(|| std::env::var(NAMED_ENV).ok()).as_deref() == Some(ns) {
        let _ = nix::sys::signal::raise(nix::sys::signal::Signal::SIGKILL);
    }
}
