//! `vpcsh graph`: golden diagrams of gallery scripts in the text formats, SVG that parses and
//! names every box, and the applied network drawn the same as the script that made it.

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
fn svg_of_every_gallery_script_is_xml_naming_each_box() {
    for entry in std::fs::read_dir(format!("{ROOT}/scripts")).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_none_or(|e| e != "rhai") {
            continue;
        }
        let script = path.to_str().unwrap();
        let svg: Run = vpcsh().args(["graph", script, "--format", "svg"]).output().unwrap().into();
        assert_eq!(svg.code, 0, "{svg:?}");
        let document = roxmltree::Document::parse(&svg.stdout)
            .unwrap_or_else(|e| panic!("{script}: SVG does not parse: {e}"));
        assert_eq!(document.root_element().tag_name().name(), "svg", "{script}");
        let texts: Vec<String> = document
            .descendants()
            .filter(|n| n.has_tag_name("text"))
            .map(|n| n.descendants().filter(|d| d.is_text()).filter_map(|d| d.text()).collect())
            .collect();
        // Every label of the dot diagram is drawn, the VPC's own on its router.
        let dot: Run = vpcsh().args(["graph", script]).output().unwrap().into();
        for label in dot.stdout.lines().filter_map(|l| l.split("[label=\"").nth(1)) {
            let label = label.split('"').next().unwrap();
            let wanted = if label == "router" { "vpc " } else { label };
            assert!(texts.iter().any(|t| t.contains(wanted)), "{script}: no `{wanted}` in {texts:?}");
        }
    }
}

#[test]
fn svg_of_a_network_too_large_to_lay_out_points_at_graphviz() {
    let dir = TempDir::new("graph-large");
    let script = dir.write("large.rhai", "import \"vpcsh/patterns\" as p;\np::lab(10, 50, 1);\n");
    let run: Run =
        vpcsh().args(["graph", script.to_str().unwrap(), "--format", "svg"]).output().unwrap().into();
    assert_eq!(run.code, 1, "{run:?}");
    assert!(run.stderr.contains("1011 boxes") && run.stderr.contains("dot -Tsvg"), "{run:?}");
    assert!(run.stdout.is_empty(), "{run:?}");
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
