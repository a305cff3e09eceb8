//! Stacks: a script owns what it declares. Applying one script never touches another's
//! VPCs; names are unique across stacks; deletes are shown first and agreed to.

use std::io::Write;
use std::process::{Command, Stdio};

use crate::common::*;

const ONE: &str = r#"
let a = vpc("a", "10.1.0.0/16"); a.subnet("s", "10.1.1.0/24");
let b = vpc("b", "10.2.0.0/16"); b.subnet("s", "10.2.1.0/24");
"#;
const TWO: &str = r#"let c = vpc("c", "10.3.0.0/16"); c.subnet("s", "10.3.1.0/24");"#;

/// Writes `text` as `NAME.rhai` (the stack is the file stem).
fn script(sb: &Sandbox, name: &str, text: &str) -> String {
    sb.dir.write(&format!("{name}.rhai"), text).display().to_string()
}

#[test]
fn a_script_changes_only_its_own_stack() {
    let sb = Sandbox::new("stacks");
    assert_eq!(sb.run(&["apply", &script(&sb, "one", ONE)]).code, 0);
    let two = sb.run(&["apply", &script(&sb, "two", TWO)]);
    assert_eq!(two.stdout.trim_end().lines().last(), Some("15 created, 0 changed, 0 deleted"), "{two:?}");
    for ns in ["a.s", "b.s", "c.s"] {
        assert!(
            ping(&sb.ns(ns), &format!("10.{}.1.1", 1 + (ns.as_bytes()[0] - b'a'))),
            "{ns} reaches its gateway"
        );
    }
    let list = sb.run(&["list"]);
    assert!(
        list.stdout.contains("vpc a 10.1.0.0/16 (stack one")
            && list.stdout.contains("vpc c 10.3.0.0/16 (stack two"),
        "{list:?}"
    );
    let json: serde_json::Value = serde_json::from_str(&sb.run(&["list", "--json"]).stdout).unwrap();
    assert_eq!(json["vpcs"].as_array().unwrap().iter().filter(|v| v["stack"] == "one").count(), 2);

    // Re-applying one leaves two alone, and destroy --stack removes exactly one stack.
    let again = sb.run(&["apply", &script(&sb, "one", ONE)]);
    assert_eq!(again.stdout.trim(), "0 created, 0 changed, 0 deleted", "{again:?}");
    let gone = sb.run(&["--stack", "one", "destroy"]);
    assert_eq!(gone.code, 0, "{gone:?}");
    assert!(
        !sb.namespaces().contains(&sb.ns("a")) && sb.namespaces().contains(&sb.ns("c.s")),
        "{:?}",
        sb.namespaces()
    );
    let unknown = sb.run(&["--stack", "nope", "destroy"]);
    assert_eq!(unknown.code, 1, "{unknown:?}");
    assert!(
        unknown.stderr.contains("no stack named `nope`") && unknown.stderr.contains("stacks: two"),
        "{unknown:?}"
    );
}

#[test]
fn names_are_unique_across_stacks_and_empty_scripts_delete_nothing() {
    let sb = Sandbox::new("clash");
    sb.run(&["apply", &script(&sb, "one", ONE)]);
    let before = sb.namespaces();
    let clash = sb.run(&["apply", &script(&sb, "other", r#"let a = vpc("a", "10.9.0.0/16");"#)]);
    assert_eq!(clash.code, 1, "{clash:?}");
    assert!(clash.stderr.contains("VPC `a` belongs to stack `one` (applied from"), "{clash:?}");
    assert!(clash.stderr.contains("other.rhai:1:9"), "points at the vpc() call: {clash:?}");
    let empty = sb.run(&["apply", &script(&sb, "one", "// truncated\n")]);
    assert_eq!(empty.code, 1, "{empty:?}");
    assert!(empty.stderr.contains("this script declares nothing"), "{empty:?}");
    assert_eq!(sb.namespaces(), before, "nothing changed");
}

#[test]
fn deletes_are_shown_and_agreed_to() {
    let sb = Sandbox::new("deletes");
    let one = script(&sb, "one", ONE);
    sb.run(&["apply", &one]);
    // Dropping one of two VPCs: shown first, then done (no terminal needed).
    let fewer = script(&sb, "one", r#"let a = vpc("a", "10.1.0.0/16"); a.subnet("s", "10.1.1.0/24");"#);
    let plan = sb.run(&["plan", &fewer]);
    assert!(plan.stdout.starts_with("will delete: vpc b"), "{plan:?}");
    let run = sb.cmd(&["apply", &fewer]).stdin(Stdio::null()).output().unwrap();
    let run = Run::from(run);
    assert_eq!(run.code, 0, "{run:?}");
    assert!(run.stderr.contains("this apply deletes VPC(s) b of stack `one`"), "{run:?}");
    assert!(!sb.namespaces().contains(&sb.ns("b")));

    // Dropping every VPC of the stack, without a terminal: refused unless --yes.
    let other = script(&sb, "one", r#"let z = vpc("z", "10.7.0.0/16");"#);
    let refused = Run::from(sb.cmd(&["apply", &other]).stdin(Stdio::null()).output().unwrap());
    assert_eq!(refused.code, 1, "{refused:?}");
    assert!(refused.stderr.contains("would delete every VPC of stack `one`"), "{refused:?}");
    assert!(
        sb.namespaces().contains(&sb.ns("a.s")) && !sb.namespaces().contains(&sb.ns("z")),
        "nothing changed"
    );

    // On a terminal it asks: "n" keeps everything, "y" goes ahead.
    for (answer, applied) in [("n", false), ("y", true)] {
        let command =
            format!("{VPCSH} --sandbox {} --state-dir {} apply {other}", sb.name, sb.dir.0.display());
        let mut child = Command::new("script")
            .args(["-qfec", &command, "/dev/null"])
            .env("NO_COLOR", "1")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        child.stdin.take().unwrap().write_all(format!("{answer}\n").as_bytes()).unwrap();
        let out = Run::from(child.wait_with_output().unwrap());
        assert!(out.stdout.contains("delete them? [y/N]"), "{out:?}");
        assert_eq!(sb.namespaces().contains(&sb.ns("z")), applied, "answer {answer}: {out:?}");
    }
}
