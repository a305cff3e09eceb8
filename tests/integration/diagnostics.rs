//! Golden diagnostics: every script in `tests/fixtures/diag` is wrong. `vpcsh check` must
//! exit 1 and print exactly the `.stderr` beside it (file:line:column, the underlined
//! text, labels, help); `apply` in a sandbox must change nothing. `VPCSH_BLESS=1`
//! rewrites the goldens after a deliberate change.

use std::fs;
use std::path::Path;

use crate::common::*;

const DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/diag");

fn fixtures() -> Vec<String> {
    let mut names: Vec<String> = fs::read_dir(DIR)
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().into_string().ok()?.strip_suffix(".rhai").map(str::to_string))
        .collect();
    names.sort();
    names
}

fn check(name: &str) -> Run {
    vpcsh().args(["check", &format!("{name}.rhai")]).current_dir(DIR).output().unwrap().into()
}

#[test]
fn there_are_at_least_forty_wrong_scripts() {
    assert!(fixtures().len() >= 40, "{}", fixtures().len());
}

#[test]
fn each_wrong_script_gets_its_golden_diagnostic() {
    let mut mismatches = Vec::new();
    for name in fixtures() {
        let run = check(&name);
        assert_eq!(run.code, 1, "{name}: {run:?}");
        let located =
            run.stderr.contains(&format!("[{name}.rhai:")) || run.stderr.contains(&format!("[{name}.json:"));
        assert!(located, "{name}: no file:line:col\n{}", run.stderr);
        mismatches.extend(golden(&Path::new(DIR).join(format!("{name}.stderr")), &run.stderr));
    }
    assert!(mismatches.is_empty(), "{} mismatches:\n{}", mismatches.len(), mismatches.join("\n"));
}

#[test]
fn wrong_scripts_change_nothing() {
    for name in fixtures() {
        let sb = Sandbox::new("diag");
        let run = sb.run(&["apply", &format!("{DIR}/{name}.rhai")]);
        assert_eq!(run.code, 1, "{name}: {run:?}");
        assert_eq!(sb.namespaces(), Vec::<String>::new(), "{name} changed the kernel");
    }
}

#[test]
fn conflicts_point_at_both_declarations() {
    let run = check("overlapping_subnets");
    assert!(run.stderr.contains("overlaps") && run.stderr.contains("`web` is 10.10.1.0/24"), "{run:?}");
    let run = check("duplicate_vpc");
    assert!(
        run.stderr.contains("first declared here") && run.stderr.contains("declared again here"),
        "{run:?}"
    );
}

#[test]
fn every_problem_is_reported_not_only_the_first() {
    let run = check("every_problem_at_once");
    for needle in ["overlaps", "/12 prefix", "not inside VPC", "invalid subnet name"] {
        assert!(run.stderr.contains(needle), "missing {needle}: {run:?}");
    }
}
