//! Golden `vpcsh plan` output: every kernel operation for a fresh sandbox, in order.
//! `VPCSH_BLESS=1` rewrites the goldens.

use std::fs;
use std::process::Command;

use crate::common::*;

const DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/plan");

#[test]
fn plan_output_matches_the_golden_file() {
    for name in ["seed", "minimal"] {
        let state = TempDir::new("plan-state");
        // `plan` only reads: a fixed sandbox name keeps the golden stable, and nothing
        // is created under it.
        let run: Run = Command::new(VPCSH)
            .args(["--sandbox", "golden", "--state-dir"])
            .arg(&state.0)
            .args(["plan", &format!("{DIR}/{name}.rhai")])
            .output()
            .unwrap()
            .into();
        assert_eq!(run.code, 0, "{run:?}");
        assert!(!list_netns().iter().any(|n| n.starts_with("golden")), "plan created something");
        let golden = format!("{DIR}/{name}.plan");
        if std::env::var_os("VPCSH_BLESS").is_some() {
            fs::write(&golden, &run.stdout).unwrap();
        }
        assert_eq!(run.stdout, fs::read_to_string(&golden).unwrap(), "VPCSH_BLESS=1 to accept");
    }
}
