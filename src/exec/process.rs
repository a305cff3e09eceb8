//! Processes vpcsh starts inside namespaces: started detached, recorded with pid and start
//! time (so a reused pid is never signalled), stopped TERM-then-KILL.

use std::fs::{self, OpenOptions};
use std::io;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::sys::wait::{WaitPidFlag, waitpid};
use nix::unistd::Pid;
use serde::{Deserialize, Serialize};

use std::os::fd::OwnedFd;
use std::os::unix::process::CommandExt;

use super::netns;
use crate::plan::kernel::Process;

/// How long a stopped process gets between TERM and KILL.
const GRACE: Duration = Duration::from_secs(2);
/// How long a new server gets to start listening.
const READY_TIMEOUT: Duration = Duration::from_secs(5);
/// The line the built-in server logs once it listens.
pub(crate) const READY_LINE: &str = "listening on";

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct ProcessRecord {
    pub ns: String,
    pub pid: i32,
    /// Start time in clock ticks since boot (`/proc/PID/stat` field 22).
    pub start_time: u64,
    /// What was asked for, as the plan knows it.
    pub process: Process,
    /// What was started.
    pub argv: Vec<String>,
    pub log: PathBuf,
}

impl ProcessRecord {
    /// Whether this very process (not a later one with the same pid) still runs.
    pub(crate) fn alive(&self) -> bool {
        proc_stat(self.pid)
            .is_some_and(|(state, start)| start == self.start_time && state != 'Z' && state != 'X')
    }
}

/// State letter and start time of a process, if it exists.
fn proc_stat(pid: i32) -> Option<(char, u64)> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name may hold spaces or parentheses: fields start after the last ')'.
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    Some((fields.first()?.chars().next()?, fields.get(19)?.parse().ok()?))
}

/// The processes vpcsh started, alive or not, as state records them between runs; each
/// is identified by pid and start time, so a reused pid is never mistaken for it.
pub(crate) struct Supervisor {
    log_dir: PathBuf,
    records: Vec<ProcessRecord>,
}

impl Supervisor {
    pub(crate) fn new(log_dir: PathBuf, records: Vec<ProcessRecord>) -> Self {
        Self { log_dir, records }
    }

    pub(crate) fn records(&self) -> &[ProcessRecord] {
        &self.records
    }

    /// What runs in `ns` now.
    pub(crate) fn running_in<'a>(&'a self, ns: &'a str) -> impl Iterator<Item = &'a Process> + 'a {
        self.records.iter().filter(move |p| p.ns == ns && p.alive()).map(|p| &p.process)
    }

    pub(crate) fn start(&mut self, ns: &str, process: &Process) -> io::Result<()> {
        let record = start(ns, process, &self.log_dir)?;
        self.records.push(record);
        Ok(())
    }

    /// Stops the processes in `ns` that match (all of them when `process` is `None`).
    pub(crate) fn stop(&mut self, ns: &str, process: Option<&Process>) {
        let (stopping, keep) = std::mem::take(&mut self.records)
            .into_iter()
            .partition(|p| p.ns == ns && process.is_none_or(|want| p.process == *want));
        self.records = keep;
        stopping.iter().for_each(stop);
    }
}

/// Starts `process` inside `ns`, its output in a log file in `log_dir`; an HTTP server is
/// waited for until it listens.
fn start(ns: &str, process: &Process, log_dir: &Path) -> io::Result<ProcessRecord> {
    fs::create_dir_all(log_dir)?;
    let (argv, log) = match process {
        Process::Http { port, body } => {
            let exe = std::env::current_exe()?.display().to_string();
            let argv = [exe.as_str(), "__serve", "--netns", ns, "--port", &port.to_string(), "--body", body]
                .map(String::from)
                .to_vec();
            (argv, log_dir.join(format!("{ns}.http-{port}.log")))
        }
        Process::Command { argv } => {
            let hash = argv
                .join("\0")
                .bytes()
                .fold(0xcbf2_9ce4_8422_2325u64, |h, b| (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3));
            (argv.clone(), log_dir.join(format!("{ns}.run-{:08x}.log", hash as u32)))
        }
    };
    let enter = matches!(process, Process::Command { .. }).then(|| netns::open(ns)).transpose()?;
    let record = spawn(ns, process, argv, &log, enter)?;
    if matches!(process, Process::Http { .. }) {
        wait_ready(&record)?;
    }
    Ok(record)
}

fn spawn(
    ns: &str,
    process: &Process,
    argv: Vec<String>,
    log: &Path,
    enter: Option<OwnedFd>,
) -> io::Result<ProcessRecord> {
    let out = OpenOptions::new().create(true).truncate(true).write(true).open(log)?;
    let mut cmd = Command::new(&argv[0]);
    cmd.args(&argv[1..]).stdin(Stdio::null()).stdout(out.try_clone()?).stderr(out).process_group(0);
    if let Some(fd) = enter {
        netns::enter_on_exec(&mut cmd, fd);
    }
    let child = cmd.spawn()?;
    let pid = child.id() as i32;
    let (_, start_time) = proc_stat(pid)
        .ok_or_else(|| io::Error::other(format!("process {pid} ended at once; see {}", log.display())))?;
    Ok(ProcessRecord { ns: ns.into(), pid, start_time, process: process.clone(), argv, log: log.into() })
}

fn wait_ready(record: &ProcessRecord) -> io::Result<()> {
    let deadline = Instant::now() + READY_TIMEOUT;
    loop {
        if fs::read_to_string(&record.log).is_ok_and(|l| l.contains(READY_LINE)) {
            return Ok(());
        }
        if !record.alive() || Instant::now() > deadline {
            let log = fs::read_to_string(&record.log).unwrap_or_default();
            stop(record);
            return Err(io::Error::other(format!("server did not start: {}", log.trim())));
        }
        std::thread::sleep(Duration::from_millis(2));
    }
}

/// Stops a recorded process and everything it started: TERM to its process group, then
/// KILL after a grace period. Reaps it if it is our child, so no zombie stays behind.
///
/// Each process vpcsh starts leads a group of its own, so a shell's children go with it.
/// The group is signalled only while it is provably ours: its leader is the recorded
/// process (same start time), or it still has members, which keeps the kernel from giving
/// the number to anyone else.
fn stop(record: &ProcessRecord) {
    let pid = Pid::from_raw(record.pid);
    let group = Pid::from_raw(-record.pid);
    let running = || group_alive(record.pid);
    if !record.alive() && !running() {
        reap(pid);
        return;
    }
    for signal in [Signal::SIGTERM, Signal::SIGKILL] {
        let _ = kill(group, signal);
        let deadline = Instant::now() + GRACE;
        while running() && Instant::now() < deadline {
            reap(pid);
            std::thread::sleep(Duration::from_millis(5));
        }
        if !running() {
            break;
        }
    }
    reap(pid);
}

/// Whether any process of the group `pgid` still runs (zombies waiting to be reaped do not).
fn group_alive(pgid: i32) -> bool {
    let Ok(dir) = fs::read_dir("/proc") else { return false };
    dir.filter_map(|e| e.ok()?.file_name().into_string().ok()?.parse::<i32>().ok()).any(|pid| {
        fs::read_to_string(format!("/proc/{pid}/stat")).ok().is_some_and(|stat| {
            let Some(rest) = stat.rfind(')').map(|i| &stat[i + 2..]) else { return false };
            let fields: Vec<&str> = rest.split_whitespace().collect();
            let state = fields.first().and_then(|s| s.chars().next());
            fields.get(2).and_then(|g| g.parse::<i32>().ok()) == Some(pgid)
                && !matches!(state, Some('Z' | 'X'))
        })
    })
}

fn reap(pid: Pid) {
    let _ = waitpid(pid, Some(WaitPidFlag::WNOHANG));
}
