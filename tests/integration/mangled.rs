//! Bad input never panics: the example scripts and test fixtures (valid ones and the
//! golden wrong ones, in turn), mangled by a seeded generator (tokens dropped, doubled,
//! swapped or replaced by edge values; files cut short), go through `vpcsh check`, which
//! must either accept each or answer with a diagnostic and exit code 1, within seconds;
//! one it accepts is planned too (in a sandbox that does not exist: nothing is changed).
//! `VPCSH_MANGLE_SEED` and `VPCSH_MANGLE_COUNT` (default 7 and 150) replay or widen it.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use crate::common::*;

/// Values at the edges of what the script API takes, put in place of a token.
const EDGES: &[&str] = &[
    "-1",
    "0",
    "99999999999",
    "-9223372036854775808",
    "1.5e308",
    "\"\"",
    "\"é\"",
    "\"a/b\"",
    "\"10.0.0.0/33\"",
    "\"0.0.0.0/0\"",
    "\"255.255.255.255/32\"",
    "\"::1/200\"",
    "\"fe80::/10\"",
    "\"s p a c e\"",
    "()",
    "#{}",
    "[]",
    "true",
    "#{ public: 3 }",
];

/// A small xorshift generator: the same seed mangles the same way on every machine.
struct Seeded(u64);

impl Seeded {
    fn below(&mut self, n: usize) -> usize {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 % n.max(1) as u64) as usize
    }
}

/// Strings, words, single marks and runs of space, in order: joined, the script again.
fn tokens(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        let mut token = c.to_string();
        let same_kind = |a: char, b: char| {
            (a.is_alphanumeric() || a == '_') && (b.is_alphanumeric() || b == '_')
                || a.is_whitespace() && b.is_whitespace()
        };
        if c == '"' {
            for d in chars.by_ref() {
                token.push(d);
                if d == '"' || d == '\n' {
                    break;
                }
            }
        } else {
            while let Some(&d) = chars.peek().filter(|&&d| same_kind(c, d)) {
                token.push(d);
                chars.next();
            }
        }
        out.push(token);
    }
    out
}

fn mangle(text: &str, rng: &mut Seeded) -> String {
    let mut toks = tokens(text);
    for _ in 0..=rng.below(4) {
        if toks.is_empty() {
            break;
        }
        let i = rng.below(toks.len());
        match rng.below(10) {
            0..=2 => toks[i] = EDGES[rng.below(EDGES.len())].to_string(),
            3 | 4 => _ = toks.remove(i),
            5 | 6 => {
                let copy = toks[rng.below(toks.len())].clone();
                toks.insert(i, copy);
            }
            7 | 8 => {
                let j = rng.below(toks.len());
                toks.swap(i, j);
            }
            _ => toks.truncate(i),
        }
    }
    toks.concat()
}

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// Every script under `scripts/` and `tests/fixtures/`, read.
fn scripts() -> Vec<(PathBuf, String)> {
    let root = root();
    let mut found = Vec::new();
    let mut dirs = vec![root.join("scripts"), root.join("tests/fixtures")];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir).unwrap().filter_map(Result::ok) {
            let path = entry.path();
            if path.is_dir() {
                dirs.push(path);
            } else if path.extension().is_some_and(|e| e == "rhai") {
                found.push(path);
            }
        }
    }
    found.sort();
    found.into_iter().map(|p| (p.clone(), std::fs::read_to_string(p).unwrap())).collect()
}

/// `vpcsh COMMAND script` (`check` or `plan`), or `None` if it ran past `limit`.
fn run_within(dir: &TempDir, command: &str, script: &Path, limit: Duration) -> Option<Run> {
    let state = dir.0.join("state");
    let mut child = vpcsh()
        .args(["--sandbox", &unique("mangled"), "--state-dir", state.to_str().unwrap(), command])
        .arg(script)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let started = Instant::now();
    while child.try_wait().unwrap().is_none() {
        if started.elapsed() > limit {
            let _ = child.kill();
            let _ = child.wait();
            return None;
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    Some(child.wait_with_output().unwrap().into())
}

#[test]
fn mangled_scripts_get_diagnostics_never_a_panic() {
    let env =
        |key: &str, default: u64| std::env::var(key).ok().and_then(|v| v.parse().ok()).unwrap_or(default);
    let mut rng = Seeded(env("VPCSH_MANGLE_SEED", 7).max(1));
    let count = env("VPCSH_MANGLE_COUNT", 150);
    let (wrong, valid): (Vec<_>, Vec<_>) =
        scripts().into_iter().partition(|(path, _)| path.components().any(|c| c.as_os_str() == "diag"));
    assert!(
        valid.len() >= 10 && wrong.len() >= 40,
        "{} valid and {} wrong scripts",
        valid.len(),
        wrong.len()
    );
    let dir = TempDir::new("mangled");
    // The examples' policy files, where their relative paths look for them.
    std::os::unix::fs::symlink(root().join("scripts/policies"), dir.0.join("policies")).unwrap();
    let (mut accepted, mut refused) = (0, 0);
    for n in 0..count {
        let pool = if n % 2 == 0 { &valid } else { &wrong };
        let (from, text) = &pool[rng.below(pool.len())];
        let mangled = mangle(text, &mut rng);
        let script = dir.write(&format!("m{n}.rhai"), &mangled);
        let outcome = |command: &str| {
            let run = run_within(&dir, command, &script, Duration::from_secs(10))
                .unwrap_or_else(|| panic!("{command} of {from:?} mangled ran past 10 s:\n{mangled}"));
            let case = || format!("{command} of {from:?} mangled as\n{mangled}\n{run:?}");
            assert!(!run.stderr.contains("panicked"), "a panic: {}", case());
            match run.code {
                0 => true,
                1 => {
                    assert!(run.stderr.contains('×'), "exit 1 without a diagnostic: {}", case());
                    false
                }
                _ => panic!("exit code {}: {}", run.code, case()),
            }
        };
        if outcome("check") {
            accepted += 1;
            outcome("plan");
        } else {
            refused += 1;
        }
    }
    eprintln!("mangled: {count} scripts, {accepted} accepted, {refused} refused with a diagnostic");
    assert!(refused > count / 4, "the mangling should break most scripts: {refused} of {count}");
}
