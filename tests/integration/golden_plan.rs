//! Golden `vpcsh plan` output: every kernel operation for a fresh sandbox, in order.
//! `VPCSH_BLESS=1` rewrites the goldens.

use std::path::Path;

use crate::common::*;

const DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/plan");

#[test]
fn plan_output_matches_the_golden_file() {
    for name in ["seed", "minimal"] {
        let state = TempDir::new("plan-state");
        // `plan` only reads: a fixed sandbox name keeps the golden stable, and nothing
        // is created under it.
        let run: Run = vpcsh()
            .args(["--sandbox", "golden", "--state-dir"])
            .arg(&state.0)
            .args(["plan", &format!("{DIR}/{name}.rhai")])
            .output()
            .unwrap()
            .into();
        assert_eq!(run.code, 0, "{run:?}");
        assert!(!list_netns().iter().any(|n| n.starts_with("golden")), "plan created something");
        if let Some(mismatch) = golden(Path::new(&format!("{DIR}/{name}.plan")), &run.stdout) {
            panic!("{mismatch}");
        }
    }
}
