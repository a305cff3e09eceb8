//! `vpcsh graph`: golden diagrams of gallery scripts in both formats, and the applied
//! network drawn the same as the script that made it.

use std::path::Path;

use crate::common::*;

const ROOT: &str = env!("CARGO_MANIFEST_DIR");

#[test]
fn gallery_diagrams_match_their_goldens() {
    let mut mismatches = Vec::new();
    for script in ["three-tier", "hub-and-spoke"] {
        for (format, ext) in [("dot", "dot"), ("mermaid", "mmd")] {
            let run: Run = vpcsh()
                .args(["graph", &format!("{ROOT}/scripts/{script}.rhai"), "--format", format])
                .output()
                .unwrap()
                .into();
            assert_eq!(run.code, 0, "{run:?}");
            let path = format!("{ROOT}/tests/fixtures/graph/{script}.{ext}");
            mismatches.extend(golden(Path::new(&path), &run.stdout));
        }
    }
    assert!(mismatches.is_empty(), "{}", mismatches.join("\n"));
}

#[test]
fn the_applied_network_draws_as_its_script() {
    let sb = Sandbox::new("graph");
    let script =
        sb.script(&format!("{}\nfirewall(w1, #{{ ingress: [] }});", prod_and!("publish(w1, 80, 8080);")));
    assert_eq!(sb.run(&["apply", script.to_str().unwrap()]).code, 0);
    let applied = sb.run(&["graph", "--format", "mermaid"]);
    let declared = sb.run(&["graph", script.to_str().unwrap(), "--format", "mermaid"]);
    assert_eq!(applied.stdout, declared.stdout);
    assert!(applied.stdout.contains("w1 10.10.1.2 (firewall)"), "{applied:?}");
    assert!(applied.stdout.contains("internet -->|\"8080 -> 80/tcp\"| prod__web__w1"), "{applied:?}");
}

#[test]
fn the_readme_shows_the_demo_as_it_is() {
    let run: Run = vpcsh()
        .args(["graph", &format!("{ROOT}/scripts/demo.rhai"), "--format", "mermaid"])
        .output()
        .unwrap()
        .into();
    let readme = std::fs::read_to_string(format!("{ROOT}/README.md")).unwrap();
    assert!(
        readme.contains(&format!("```mermaid\n{}```", run.stdout)),
        "README's picture of the demo is stale:\n{}",
        run.stdout
    );
}
