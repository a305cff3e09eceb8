//! `vpcsh test SCRIPT...`: each script applied as a test fixture in a fresh sandbox of its
//! own, then destroyed (also on failure and on Ctrl-C); a result line per script and
//! `N passed, N failed`.

use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use nix::errno::Errno;

use crate::exec::netns::{self, NETNS_DIR};
use crate::exec::reaper::Doomed;
use crate::exec::{interrupted, stop_on_signals};
use crate::plan::naming::Naming;

/// Destroyed fixtures' namespaces held open at most, before a reaper takes them mid-run.
/// The kernel tears down a namespace let go at once, holding the routing lock for about
/// 10 ms a device: a fixture running meanwhile stalls (a fixture of two hosts ran in 90 ms
/// 1.5 s after the last one's destroy, and in 110-135 ms right after it).
const HELD_AT_MOST: usize = 500;

/// A file in a kept fixture's state directory: its sandbox is there to be looked at, not
/// left over.
const KEPT: &str = "kept";

/// A fixture's state directory in `state_dir`, for its sandbox.
fn state_of(state_dir: &Path, sandbox: &str) -> PathBuf {
    state_dir.join(format!("vpcsh-test-{sandbox}"))
}

pub(super) struct Options {
    pub scripts: Vec<PathBuf>,
    pub keep: bool,
    pub jobs: usize,
    pub state_dir: PathBuf,
    /// `--sandbox NAME`: fixtures run in sandboxes `NAME-0`, `NAME-1`, ... (default
    /// `test-PID-N`).
    pub prefix: Option<String>,
    /// Print one JSON document with every result instead of lines.
    pub json: bool,
}

enum Verdict {
    Passed,
    Failed(String),
    Interrupted,
}

struct Fixture<'a> {
    script: &'a Path,
    sandbox: String,
    state: PathBuf,
}

/// vpcsh run on the sandbox `sandbox` whose state is in `state`.
fn vpcsh_on(sandbox: &str, state: &Path) -> Command {
    let mut cmd = Command::new(std::env::current_exe().unwrap_or_else(|_| "vpcsh".into()));
    cmd.arg("--sandbox").arg(sandbox).arg("--state-dir").arg(state);
    cmd
}

/// Starts destroying a sandbox.
fn destroy(sandbox: &str, state: &Path) -> Teardown {
    let child =
        vpcsh_on(sandbox, state).arg("destroy").stdout(Stdio::null()).stderr(Stdio::null()).spawn().ok();
    Teardown { child, state: state.to_path_buf() }
}

impl Fixture<'_> {
    fn vpcsh(&self) -> Command {
        vpcsh_on(&self.sandbox, &self.state)
    }

    /// Applies the script; a Ctrl-C stops it (by its pid) and reports an interruption.
    fn run(&self) -> Verdict {
        let child = self
            .vpcsh()
            .arg("apply")
            .arg(self.script)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn();
        let mut child = match child {
            Ok(c) => c,
            Err(e) => return Verdict::Failed(format!("cannot start vpcsh: {e}")),
        };
        loop {
            if interrupted() {
                stop(&mut child);
                return Verdict::Interrupted;
            }
            match child.try_wait() {
                Ok(Some(_)) => break,
                Ok(None) => std::thread::sleep(Duration::from_millis(2)),
                Err(e) => return Verdict::Failed(format!("waiting for vpcsh: {e}")),
            }
        }
        match child.wait_with_output() {
            Ok(out) if out.status.success() => Verdict::Passed,
            Ok(out) => Verdict::Failed(String::from_utf8_lossy(&out.stderr).into_owned()),
            Err(e) => Verdict::Failed(format!("waiting for vpcsh: {e}")),
        }
    }

    /// The sandbox's namespaces, opened so that destroying it removes their names but
    /// leaves taking them apart for later (a namespace not found is simply not held).
    fn hold(&self) -> Vec<OwnedFd> {
        let naming = Naming::sandbox(&self.sandbox);
        let Ok(names) = std::fs::read_dir(NETNS_DIR) else { return Vec::new() };
        names
            .filter_map(|entry| entry.ok()?.file_name().into_string().ok())
            .filter(|name| naming.owns(name))
            .filter_map(|name| netns::open(&name).ok())
            .collect()
    }

    /// Starts destroying the sandbox; the job goes on to its next fixture meanwhile.
    fn destroy(&self) -> Teardown {
        destroy(&self.sandbox, &self.state)
    }
}

/// A sandbox being destroyed: waited for before the job's next teardown starts, and before
/// `vpcsh test` reports.
struct Teardown {
    child: Option<std::process::Child>,
    state: PathBuf,
}

impl Teardown {
    fn wait(mut self) {
        if let Some(child) = &mut self.child {
            let _ = child.wait();
        }
        let _ = std::fs::remove_dir_all(&self.state);
    }
}

/// Asks a fixture's vpcsh to stop (it rolls back and records what it started), and kills
/// it if it has not within a few seconds.
fn stop(child: &mut std::process::Child) {
    let pid = nix::unistd::Pid::from_raw(child.id() as i32);
    let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGINT);
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        if let Ok(Some(_)) = child.try_wait() {
            return;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    let _ = child.kill();
    let _ = child.wait();
}

/// One fixture's result.
struct Outcome {
    script: PathBuf,
    sandbox: String,
    verdict: Verdict,
    secs: f64,
    /// The sandbox was kept for inspection (`--keep`), with its state here.
    kept: Option<PathBuf>,
}

impl Outcome {
    fn print(&self) {
        let (script, secs) = (self.script.display(), self.secs);
        match &self.verdict {
            Verdict::Passed => println!("PASS {script} ({secs:.2} s)"),
            Verdict::Failed(why) => {
                println!("FAIL {script} ({secs:.2} s)");
                why.lines().for_each(|line| println!("    {line}"));
                if let Some(state) = &self.kept {
                    println!(
                        "    kept sandbox `{0}`: vpcsh --sandbox {0} --state-dir {1} status (then destroy)",
                        self.sandbox,
                        state.display()
                    );
                }
            }
            Verdict::Interrupted => println!("STOP {script} ({secs:.2} s): interrupted, sandbox destroyed"),
        }
    }

    fn json(&self) -> serde_json::Value {
        let (result, message) = match &self.verdict {
            Verdict::Passed => ("passed", None),
            Verdict::Failed(why) => ("failed", Some(why.clone())),
            Verdict::Interrupted => ("interrupted", None),
        };
        serde_json::json!({
            "script": self.script.display().to_string(), "sandbox": self.sandbox, "result": result,
            "message": message, "seconds": self.secs, "kept": self.kept.is_some(),
        })
    }
}

/// Runs one fixture in its sandbox and starts destroying the sandbox, unless it failed and
/// `--keep` asks to keep it; its namespaces go to `doomed`, to be taken apart once the
/// run is over.
fn run_one(opts: &Options, i: usize, script: &Path, doomed: &Mutex<Doomed>) -> (Outcome, Option<Teardown>) {
    let sandbox = match &opts.prefix {
        Some(prefix) => format!("{prefix}-{i}"),
        None => format!("test-{}-{i}", std::process::id()),
    };
    let state = state_of(&opts.state_dir, &sandbox);
    let fixture = Fixture { script, sandbox: sandbox.clone(), state: state.clone() };
    let start = Instant::now();
    let verdict = fixture.run();
    let secs = start.elapsed().as_secs_f64();
    let keep = opts.keep && matches!(verdict, Verdict::Failed(_));
    if keep {
        let _ = std::fs::write(state.join(KEPT), "");
    }
    let teardown = (!keep).then(|| {
        let mut doomed = doomed.lock().expect("doomed");
        fixture.hold().into_iter().for_each(|ns| doomed.push(ns));
        if doomed.len() >= HELD_AT_MOST {
            doomed.hand_off();
        }
        fixture.destroy()
    });
    (Outcome { script: script.to_path_buf(), sandbox, verdict, secs, kept: keep.then_some(state) }, teardown)
}

/// Destroys the sandboxes of runs that ended without tearing them down (killed): those
/// named `test-PID-N` whose PID is gone, unless kept with `--keep`. A fixture's apply may
/// outlive its run; its destroy waits for it.
fn destroy_leftovers(state_dir: &Path) {
    let Ok(entries) = std::fs::read_dir(state_dir) else { return };
    let left_by_the_dead = |sandbox: &str| {
        let pid = sandbox.strip_prefix("test-").and_then(|rest| rest.split_once('-'));
        let pid = pid.and_then(|(pid, _)| pid.parse::<i32>().ok());
        let gone =
            |pid: i32| nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), None) == Err(Errno::ESRCH);
        pid.is_some_and(|pid| pid > 0 && gone(pid))
    };
    let leftovers: Vec<String> = entries
        .filter_map(|entry| entry.ok()?.file_name().into_string().ok())
        .filter_map(|name| Some(name.strip_prefix("vpcsh-test-")?.to_string()))
        .filter(|sandbox| left_by_the_dead(sandbox))
        .filter(|sandbox| !state_of(state_dir, sandbox).join(KEPT).exists())
        .collect();
    for sandbox in leftovers {
        eprintln!("vpcsh test: destroying sandbox `{sandbox}`, left by a run that was killed");
        destroy(&sandbox, &state_of(state_dir, &sandbox)).wait();
    }
}

pub(super) fn run(opts: Options) -> ExitCode {
    stop_on_signals();
    destroy_leftovers(&opts.state_dir);
    let queue = Mutex::new(opts.scripts.iter().enumerate());
    let outcomes = Mutex::new(Vec::new());
    // Handed to a reaper when dropped, once every fixture is done.
    let doomed = Mutex::new(Doomed::default());
    std::thread::scope(|s| {
        for _ in 0..opts.jobs.max(1) {
            s.spawn(|| {
                // Taken in its own statement: a `while let` would hold the queue's lock for
                // the whole run, one fixture at a time whatever `--jobs` says.
                // The last fixture's sandbox is destroyed while the next one runs.
                let mut destroying: Option<Teardown> = None;
                loop {
                    let Some((i, script)) = queue.lock().expect("queue").next() else { break };
                    if interrupted() {
                        break;
                    }
                    let (outcome, teardown) = run_one(&opts, i, script, &doomed);
                    if let Some(previous) = std::mem::replace(&mut destroying, teardown) {
                        previous.wait();
                    }
                    let mut all = outcomes.lock().expect("outcomes");
                    if !opts.json {
                        outcome.print();
                    }
                    all.push(outcome);
                }
                if let Some(last) = destroying {
                    last.wait();
                }
            });
        }
    });
    let outcomes = outcomes.into_inner().expect("outcomes");
    let passed = outcomes.iter().filter(|o| matches!(o.verdict, Verdict::Passed)).count();
    let failed = outcomes.len() - passed;
    if opts.json {
        let results: Vec<_> = outcomes.iter().map(Outcome::json).collect();
        let body = serde_json::json!({ "results": results, "passed": passed, "failed": failed });
        println!("{}", crate::commands::document("test", body));
    } else {
        println!("{passed} passed, {failed} failed");
    }
    if interrupted() {
        ExitCode::from(130)
    } else if failed == 0 && passed == opts.scripts.len() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    }
}
