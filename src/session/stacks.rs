//! Stacks: what one script (or REPL session) owns, and what it may not take from another.

use std::path::Path;

use super::{Failure, Target};
use crate::model::{self, Problem};
use crate::state;

/// A stack: what one script (or REPL session) owns.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct StackName {
    pub name: String,
    /// The script it is applied from, for messages.
    pub script: Option<String>,
}

impl StackName {
    /// `--stack NAME`, or the script's file stem.
    pub(super) fn for_script(target: &Target, path: &Path) -> Result<Self, Failure> {
        let name = match &target.stack {
            Some(name) => name.clone(),
            None => path.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default(),
        };
        check_stack_name(&name)?;
        Ok(Self { name, script: Some(path.display().to_string()) })
    }

    /// The REPL's stack: `--stack NAME`, or `repl`.
    pub(crate) fn for_repl(target: &Target) -> Self {
        Self { name: target.stack.clone().unwrap_or_else(|| "repl".into()), script: None }
    }
}

/// Stack names are 1 to 64 letters, digits, `_`, `-` and `.` (a script's file stem, usually).
fn check_stack_name(name: &str) -> Result<(), Failure> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'));
    if ok {
        return Ok(());
    }
    Err(Failure::refused(
        format!("`{name}` cannot name a stack"),
        Some("stack names are 1-64 letters, digits, `_`, `-` and `.`: pass --stack NAME"),
    ))
}

/// VPC names another stack owns, and host ports another stack publishes.
pub(super) fn clashes(applied: &state::State, stack: &str, decls: &model::Declarations) -> Vec<Problem> {
    let mut problems = Vec::new();
    for (_, vpc) in decls.live_vpcs() {
        let Some(other) = applied.stack_of(&vpc.name).filter(|s| *s != stack) else { continue };
        let from =
            applied.stacks[other].script.as_deref().map_or(String::new(), |s| format!(" (applied from {s})"));
        problems.push(
            Problem::new(format!("VPC `{}` belongs to stack `{other}`{from}", vpc.name), vpc.span, "taken")
                .help(format!(
                    "VPC names are unique across stacks: rename it, or `vpcsh destroy --stack {other}` first"
                )),
        );
    }
    let theirs = applied.network.only(
        &applied.stacks.iter().filter(|(n, _)| *n != stack).flat_map(|(_, s)| s.vpcs.clone()).collect(),
    );
    for p in &decls.publishes {
        if let Some(q) = theirs.publishes.iter().find(|q| q.host_port == p.host_port && q.proto == p.proto) {
            let owner = applied.stack_of(&q.vpc).unwrap_or_default();
            problems.push(
                Problem::new(
                    format!(
                        "host port {}/{} is published by stack `{owner}` ({}/{})",
                        p.host_port, p.proto, q.vpc, q.host
                    ),
                    p.span,
                    "taken",
                )
                .help("each host port forwards to one host; pick another host port"),
            );
        }
    }
    problems
}
