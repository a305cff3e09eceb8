//! `apply`, `plan` and `check`, and how every command prints its results and failures: as
//! text for people (`-q`: only errors and the script's own `print`), or as JSON.

use std::io::IsTerminal;
use std::path::Path;
use std::process::ExitCode;

use serde_json::json;

use crate::commands::document;
use crate::diag;
use crate::plan::Summary;
use crate::session::{self, Deletions, Failure, Mode, Outcome, Target, Ui, Warnings};

/// How results are printed, from the global options.
pub(super) struct Output {
    pub json: bool,
    pub quiet: bool,
    /// `--yes`: deletes agreed to in advance.
    pub yes: bool,
}

impl Output {
    /// A failure: diagnostics on stderr, or a JSON error document on stdout.
    pub(super) fn failure(&self, failure: &Failure) {
        if self.json {
            println!("{}", document("error", json!({ "diagnostics": diag::failure_json(failure) })));
        } else {
            diag::eprint(&diag::from_failure(failure));
        }
    }

    /// `N created, N changed, N deleted` (none with `-q`).
    pub(super) fn summary(&self, kind: &str, s: Summary) {
        if self.json {
            let body = json!({ "created": s.created, "changed": s.changed, "deleted": s.deleted });
            println!("{}", document(kind, body));
        } else if !self.quiet {
            println!("{s}");
        }
    }
}

/// Runs a script in one of the modes and prints what came of it.
pub(super) fn run(target: &Target, script: &Path, mode: Mode, out: &Output) -> Result<ExitCode, Failure> {
    let mut asker = Asker { yes: out.yes, json: out.json, warnings: Vec::new() };
    let outcome = session::run_script(target, script, mode, &mut asker)?;
    let warnings = asker.warnings;
    match outcome {
        Outcome::Applied(summary) if out.json => {
            let body = json!({
                "created": summary.created, "changed": summary.changed, "deleted": summary.deleted,
                "warnings": warnings,
            });
            println!("{}", document("apply", body));
        }
        Outcome::Applied(summary) => out.summary("apply", summary),
        Outcome::Planned { plan, would_run, deleting } if out.json => {
            let operations: Vec<_> = plan
                .steps
                .iter()
                .map(|s| {
                    json!({
                        "op": s.op.kind(), "text": s.op.to_string(),
                        "owner": { "kind": s.owner.kind(), "name": s.owner.name() },
                    })
                })
                .collect();
            let kind = if mode == Mode::DryRun { "dry-run" } else { "plan" };
            let body = json!({ "operations": operations, "would_run": would_run, "deleting": deleting, "warnings": warnings });
            println!("{}", document(kind, body));
        }
        Outcome::Planned { plan, would_run, deleting } => {
            deleting
                .iter()
                .for_each(|vpc| println!("will delete: vpc {vpc} (the script no longer declares it)"));
            print!("{plan}");
            would_run.iter().for_each(|w| println!("would run: {w}"));
            if mode == Mode::DryRun {
                println!("dry run: {}", plan.summary());
            }
        }
        Outcome::Checked { vpcs, subnets, hosts } if out.json => {
            let body = json!({
                "script": script.display().to_string(), "vpcs": vpcs, "subnets": subnets, "hosts": hosts,
                "warnings": warnings,
            });
            println!("{}", document("check", body));
        }
        Outcome::Checked { vpcs, subnets, hosts } => {
            if !out.quiet {
                println!("{}: ok ({vpcs} VPCs, {subnets} subnets, {hosts} hosts)", script.display());
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Warnings to stderr (kept for the JSON document under `--json`); deletes shown first and,
/// on a terminal, asked about. Without a terminal an apply may delete some of its stack's
/// VPCs, never all of them unless `--yes`.
struct Asker {
    yes: bool,
    json: bool,
    warnings: Vec<serde_json::Value>,
}

impl Ui for Asker {
    fn warn(&mut self, warnings: Warnings) {
        if self.json {
            self.warnings.extend(diag::warnings_json(&warnings));
        } else {
            diag::eprint(&diag::from_warnings(&warnings));
        }
    }

    fn confirm_deletes(&mut self, d: &Deletions) -> bool {
        eprintln!(
            "this apply deletes VPC(s) {} of stack `{}`: the script no longer declares them",
            d.vpcs.join(", "),
            d.stack
        );
        if self.yes {
            return true;
        }
        if !std::io::stdin().is_terminal() {
            return !d.all;
        }
        eprint!("delete them? [y/N] ");
        let mut answer = String::new();
        std::io::stdin().read_line(&mut answer).is_ok() && matches!(answer.trim(), "y" | "Y" | "yes")
    }
}
