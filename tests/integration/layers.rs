//! The architecture, checked: layers import only layers below them, and within a module no
//! two files import each other, however indirectly. Reads `src/` as text: a `crate::X` or
//! `super::X` path in non-test code is an import of X.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Path, PathBuf};

const SRC: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/src");

/// The layers, top first: each may import only those after it. `commands` and `diag` share
/// a level and may not import each other.
const LAYERS: &[&[&str]] = &[
    &["cli"],
    &["repl"],
    &["commands", "diag"],
    &["session"],
    &["script"],
    &["state"],
    &["httpd", "dnsd"],
    &["exec"],
    &["plan"],
    &["model"],
];

fn level(module: &str) -> Option<usize> {
    LAYERS.iter().position(|l| l.contains(&module))
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in fs::read_dir(dir).unwrap().filter_map(Result::ok) {
        let path = entry.path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// A file's code without its tests: they may reach anywhere.
fn code(path: &Path) -> String {
    let text = fs::read_to_string(path).unwrap();
    text.split("#[cfg(test)]").next().unwrap_or_default().to_string()
}

/// The names a file's paths reach through `prefix` (`crate::`, `super::`), braces included.
fn reached(code: &str, prefix: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    for (i, _) in code.match_indices(prefix) {
        let rest = &code[i + prefix.len()..];
        if let Some(group) = rest.strip_prefix('{') {
            // Top-level items of the group only: `{a::{x, y}, b}` reaches a and b.
            let (mut depth, mut item) = (0, String::new());
            for c in group.chars() {
                match c {
                    '{' => depth += 1,
                    '}' if depth == 0 => break,
                    '}' => depth -= 1,
                    ',' if depth == 0 => {
                        names.insert(item.trim().split("::").next().unwrap_or_default().to_string());
                        item.clear();
                        continue;
                    }
                    _ => {}
                }
                if depth == 0 {
                    item.push(c);
                }
            }
            names.insert(item.trim().split("::").next().unwrap_or_default().to_string());
        } else {
            names.insert(rest.chars().take_while(|c| c.is_alphanumeric() || *c == '_').collect());
        }
    }
    names.retain(|n| !n.is_empty() && n != "self");
    names
}

fn files() -> Vec<PathBuf> {
    let mut files = Vec::new();
    rust_files(Path::new(SRC), &mut files);
    // Unit tests (`tests.rs`, `*_tests.rs`) drive a layer with the recording backend below it.
    files.retain(|f| {
        f.file_name().and_then(|n| n.to_str()).is_some_and(|n| n != "tests.rs" && !n.ends_with("_tests.rs"))
    });
    files.sort();
    files
}

#[test]
fn layers_import_only_layers_below() {
    let mut wrong = Vec::new();
    for file in files() {
        let rel = file.strip_prefix(SRC).unwrap();
        let module = rel.iter().next().unwrap().to_string_lossy().trim_end_matches(".rs").to_string();
        let Some(mine) = level(&module) else {
            assert!(["lib", "main"].contains(&module.as_str()), "{module} is in no layer: add it to LAYERS");
            continue;
        };
        for other in reached(&code(&file), "crate::") {
            if other != module && level(&other).is_none_or(|theirs| theirs <= mine) {
                wrong.push(format!("{} imports {other}", rel.display()));
            }
        }
    }
    assert!(wrong.is_empty(), "imports that point up or sideways:\n{}", wrong.join("\n"));
}

#[test]
fn files_of_one_module_never_import_each_other_in_a_circle() {
    let mut graph: BTreeMap<PathBuf, BTreeSet<PathBuf>> = BTreeMap::new();
    for file in files() {
        let dir = file.parent().unwrap().to_path_buf();
        let siblings = reached(&code(&file), "super::").into_iter().map(|n| dir.join(format!("{n}.rs")));
        let edges = graph.entry(file.clone()).or_default();
        edges.extend(siblings.filter(|s| s.exists() && *s != file));
    }
    // Depth-first search for a back edge.
    fn visit(
        node: &PathBuf,
        graph: &BTreeMap<PathBuf, BTreeSet<PathBuf>>,
        path: &mut Vec<PathBuf>,
        done: &mut BTreeSet<PathBuf>,
    ) -> Option<Vec<PathBuf>> {
        if let Some(at) = path.iter().position(|p| p == node) {
            return Some(path[at..].to_vec());
        }
        if !done.insert(node.clone()) {
            return None;
        }
        path.push(node.clone());
        for next in graph.get(node).into_iter().flatten() {
            if let Some(cycle) = visit(next, graph, path, done) {
                return Some(cycle);
            }
        }
        path.pop();
        None
    }
    let mut done = BTreeSet::new();
    for node in graph.keys() {
        if let Some(cycle) = visit(node, &graph, &mut Vec::new(), &mut done) {
            let names: Vec<_> =
                cycle.iter().map(|p| p.strip_prefix(SRC).unwrap().display().to_string()).collect();
            panic!("files import each other in a circle: {}", names.join(" -> "));
        }
    }
}

#[test]
fn the_checker_sees_imports() {
    let code =
        "use crate::plan::{Op, Plan};\nuse crate::{diag, model::Span};\nuse super::{context::{x, y}, span};";
    assert_eq!(reached(code, "crate::"), ["diag", "model", "plan"].map(String::from).into());
    assert_eq!(reached(code, "super::"), ["context", "span"].map(String::from).into());
}
