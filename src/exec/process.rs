//! Processes vpcsh starts inside namespaces: started held and recorded before they run,
//! identified by pid and start time (so a reused pid is never signalled), stopped
//! TERM-then-KILL with everything they started.

use std::collections::BTreeSet;
use std::fs::{self, OpenOptions};
use std::io;
use std::io::{PipeWriter, Write};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::sys::wait::{WaitPidFlag, waitpid};
use nix::unistd::Pid;
use serde::{Deserialize, Serialize};

use std::os::fd::OwnedFd;
use std::os::unix::process::CommandExt;

use super::{guest, netns};
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

    /// The exit status of a command that ran to its end.
    pub(crate) fn exit_code(&self) -> Option<i32> {
        if self.alive() {
            return None;
        }
        fs::read_to_string(self.exit_file()).ok()?.trim().parse().ok()
    }

    fn exit_file(&self) -> PathBuf {
        self.log.with_extension("exit")
    }

    /// What has become of it, for `status`.
    pub(crate) fn condition(&self) -> Condition {
        match (self.alive(), self.exit_code()) {
            (true, _) if self.in_place() => Condition::Alive,
            (true, _) => Condition::Orphaned,
            (false, Some(code)) => Condition::Exited(code),
            (false, None) => Condition::Dead,
        }
    }

    /// Whether it runs inside the namespace its record names, not in one that was deleted
    /// (or replaced) behind vpcsh's back.
    pub(crate) fn in_place(&self) -> bool {
        let Some(inode) = netns::inode(&self.ns) else { return false };
        fs::read_link(format!("/proc/{}/ns/net", self.pid))
            .is_ok_and(|l| l.to_string_lossy() == format!("net:[{inode}]"))
    }

    /// Whether it counts as there: running in its namespace, or a command that ended and is
    /// not restarted.
    fn present(&self) -> bool {
        (self.alive() && self.in_place()) || (self.exit_code().is_some() && !self.process.restarts())
    }
}

/// What has become of a recorded process.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Condition {
    Alive,
    /// Running, but in a namespace that was deleted or replaced behind vpcsh's back; the next
    /// apply stops it.
    Orphaned,
    /// Ran to its end with this status.
    Exited(i32),
    /// Gone without a status (killed with its wrapper).
    Dead,
}

impl std::fmt::Display for Condition {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Condition::Alive => f.write_str("alive"),
            Condition::Orphaned => f.write_str("orphaned"),
            Condition::Exited(code) => write!(f, "exited {code}"),
            Condition::Dead => f.write_str("dead"),
        }
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

/// Where the supervisor makes its records durable before a new process may run.
pub(crate) trait Journal {
    fn record(&mut self, records: &[ProcessRecord]) -> io::Result<()>;
}

/// The processes vpcsh started, alive or not, as state records them between runs; each
/// is identified by pid and start time, so a reused pid is never mistaken for it.
///
/// A process is recorded before it can outlive vpcsh: it starts held (a shell waiting on a
/// pipe from vpcsh before it runs the command), is journalled, and only then let go. If
/// vpcsh dies before that, the kernel closes the pipe and the held shell exits without
/// running anything: nothing unrecorded ever runs, and nothing unrecorded stays.
pub(crate) struct Supervisor {
    log_dir: PathBuf,
    records: Vec<ProcessRecord>,
    journal: Box<dyn Journal>,
    /// Pids started by this run: a command restarted "on every apply" runs once per run,
    /// however many `apply()`s the script makes.
    started: BTreeSet<i32>,
}

impl Supervisor {
    pub(crate) fn new(log_dir: PathBuf, records: Vec<ProcessRecord>, journal: Box<dyn Journal>) -> Self {
        Self { log_dir, records, journal, started: BTreeSet::new() }
    }

    pub(crate) fn records(&self) -> &[ProcessRecord] {
        &self.records
    }

    /// What counts as there in `ns`: processes that run, and commands that ran to their
    /// end and are not to be restarted.
    pub(crate) fn present_in<'a>(&'a self, ns: &'a str) -> impl Iterator<Item = &'a Process> + 'a {
        self.records
            .iter()
            .filter(move |r| r.ns == ns && (r.present() || self.started.contains(&r.pid)))
            .map(|r| &r.process)
    }

    pub(crate) fn start(&mut self, ns: &str, process: &Process) -> io::Result<()> {
        self.start_all(&[(ns, process)]).pop().unwrap_or(Ok(()))
    }

    /// Starts processes together: all held, journalled in one write, then let go, servers
    /// first; each server is waited for until it listens before any command runs, so a
    /// command may count on every server of the batch. The result of each, in order.
    pub(crate) fn start_all(&mut self, starts: &[(&str, &Process)]) -> Vec<io::Result<()>> {
        let mut results: Vec<io::Result<()>> = Vec::with_capacity(starts.len());
        let mut held = Vec::new();
        for (i, (ns, process)) in starts.iter().enumerate() {
            // Earlier records of it that ended are done with: at most one record per process.
            self.records.retain(|r| !(r.ns == *ns && r.process == **process && !r.alive()));
            match start_held(ns, process, &self.log_dir) {
                Ok((record, gate)) => {
                    self.records.push(record.clone());
                    held.push((i, record, gate));
                    results.push(Ok(()));
                }
                Err(e) => results.push(Err(e)),
            }
        }
        if let Err(e) = self.journal.record(&self.records) {
            // Let go of nothing: with its gate closed, a held shell ends without running.
            let (indexes, records): (Vec<usize>, Vec<ProcessRecord>) =
                held.into_iter().map(|(i, record, _gate)| (i, record)).unzip();
            let pids: BTreeSet<i32> = records.iter().map(|r| r.pid).collect();
            self.records.retain(|r| !pids.contains(&r.pid));
            stop_all(&records);
            for i in indexes {
                results[i] = Err(io::Error::new(e.kind(), e.to_string()));
            }
            return results;
        }
        let (servers, commands): (Vec<_>, Vec<_>) =
            held.into_iter().partition(|(_, r, _)| r.process.listens());
        let mut waiting = Vec::new();
        for (i, record, gate) in servers {
            self.started.insert(record.pid);
            let_go(gate);
            waiting.push((i, record));
        }
        for (i, record) in wait_all_ready(waiting) {
            let why = record_failed(&record);
            results[i] = Err(self.stop(&record.ns, Some(&record.process)).err().unwrap_or(why));
        }
        for (_, record, gate) in commands {
            self.started.insert(record.pid);
            let_go(gate);
        }
        results
    }

    /// Stops the processes in `ns` that match (all of them when `process` is `None`) and
    /// forgets them.
    pub(crate) fn stop(&mut self, ns: &str, process: Option<&Process>) -> io::Result<()> {
        self.stop_where(|r| r.ns == ns && process.is_none_or(|want| r.process == *want))
    }

    /// Stops and forgets the processes of namespaces outside `keep`, and forgets those that
    /// ended and do not count as there (a server that died: the plan starts a new one).
    pub(crate) fn release(&mut self, keep: &BTreeSet<String>) -> io::Result<()> {
        let started = std::mem::take(&mut self.started);
        let result = self.stop_where(|r| !keep.contains(&r.ns) || !(r.present() || started.contains(&r.pid)));
        self.started = started;
        result
    }

    fn stop_where(&mut self, which: impl Fn(&ProcessRecord) -> bool) -> io::Result<()> {
        let (stopping, keep): (Vec<_>, Vec<_>) =
            std::mem::take(&mut self.records).into_iter().partition(which);
        self.records = keep;
        if stopping.is_empty() {
            return Ok(());
        }
        stop_all(&stopping);
        for r in &stopping {
            let _ = fs::remove_file(r.exit_file());
            // FRR's sockets and files go with the last of its daemons in a namespace.
            let frr_left = |ns: &str| {
                self.records.iter().any(|k| k.ns == ns && matches!(k.process, Process::Routing { .. }))
            };
            if matches!(r.process, Process::Routing { .. }) && !frr_left(&r.ns) {
                let _ = fs::remove_dir_all(super::frr::run_dir(&r.ns));
            }
        }
        self.journal.record(&self.records)
    }
}

/// Waits for `go` on its stdin (a pipe from vpcsh; end of file, when vpcsh died first, ends
/// it), runs the command, then leaves its exit status beside its log: `$0` is that file,
/// the rest the command.
const HELD: &str = r#"read go && [ "$go" = go ] || exit 125; "$@" </dev/null; echo "$?" > "$0""#;

/// Lets a held process run.
fn let_go(mut gate: PipeWriter) {
    let _ = gate.write_all(b"go\n");
}

/// Starts `process` inside `ns`, held until `let_go` is called with the gate returned (or
/// the gate is dropped: then it ends); its output goes to a log file in `log_dir`.
fn start_held(ns: &str, process: &Process, log_dir: &Path) -> io::Result<(ProcessRecord, PipeWriter)> {
    fs::create_dir_all(log_dir)?;
    let (argv, log) = match process {
        Process::Http { port, body } => {
            let exe = std::env::current_exe()?.display().to_string();
            let argv = [exe.as_str(), "__serve", "--netns", ns, "--port", &port.to_string(), "--body", body]
                .map(String::from)
                .to_vec();
            (argv, log_dir.join(format!("{ns}.http-{port}.log")))
        }
        Process::Dns { records } => {
            let exe = std::env::current_exe()?.display().to_string();
            let mut argv = [exe.as_str(), "__dns", "--netns", ns].map(String::from).to_vec();
            argv.extend(records.iter().cloned());
            (argv, log_dir.join(format!("{ns}.dns.log")))
        }
        Process::FlowLog => {
            let exe = std::env::current_exe()?.display().to_string();
            let argv = [exe.as_str(), "__flows", "--netns", ns].map(String::from).to_vec();
            (argv, log_dir.join(format!("{ns}.flows.log")))
        }
        Process::Routing { daemon, config } => {
            let argv = super::frr::command(ns, *daemon, config)?;
            (argv, log_dir.join(format!("{ns}.{}.log", daemon.name())))
        }
        Process::Command { argv, .. } => {
            let hash = crate::model::fnv::fnv1a(argv.join("\0").as_bytes());
            (argv.clone(), log_dir.join(format!("{ns}.run-{:08x}.log", hash as u32)))
        }
    };
    let _ = fs::remove_file(log.with_extension("exit"));
    spawn(ns, process, argv, &log, netns::open(ns)?)
}

fn spawn(
    ns: &str,
    process: &Process,
    argv: Vec<String>,
    log: &Path,
    enter: OwnedFd,
) -> io::Result<(ProcessRecord, PipeWriter)> {
    let out = OpenOptions::new().create(true).truncate(true).write(true).open(log)?;
    let exit_file = log.with_extension("exit");
    // Both ends close on exec: only the held shell gets the read end, as its stdin.
    let (wait, gate) = std::io::pipe()?;
    let mut cmd = Command::new("/bin/sh");
    cmd.arg("-c").arg(HELD).arg(&exit_file).args(&argv);
    cmd.stdin(wait).stdout(out.try_clone()?).stderr(out).process_group(0);
    match process {
        // vpcsh's own servers see the machine's files, as vpcsh does.
        Process::Http { .. } | Process::Dns { .. } | Process::FlowLog => {
            guest::enter_net_on_exec(&mut cmd, enter)
        }
        Process::Routing { .. } | Process::Command { .. } => guest::enter_on_exec(&mut cmd, enter, ns),
    }
    let child = cmd.spawn()?;
    let pid = child.id() as i32;
    let (_, start_time) = proc_stat(pid)
        .ok_or_else(|| io::Error::other(format!("process {pid} ended at once; see {}", log.display())))?;
    let record =
        ProcessRecord { ns: ns.into(), pid, start_time, process: process.clone(), argv, log: log.into() };
    Ok((record, gate))
}

/// Waits until each server says it listens, together; the ones that die first or stay
/// silent past the deadline are returned.
fn wait_all_ready(mut waiting: Vec<(usize, ProcessRecord)>) -> Vec<(usize, ProcessRecord)> {
    let deadline = Instant::now() + READY_TIMEOUT;
    let ready = |r: &ProcessRecord| fs::read_to_string(&r.log).is_ok_and(|l| l.contains(READY_LINE));
    let mut failed = Vec::new();
    while !waiting.is_empty() {
        let late = Instant::now() > deadline;
        let (gone, still): (Vec<_>, Vec<_>) = std::mem::take(&mut waiting)
            .into_iter()
            .filter(|(_, r)| !ready(r))
            .partition(|(_, r)| late || !r.alive());
        failed.extend(gone);
        waiting = still;
        if !waiting.is_empty() {
            std::thread::sleep(Duration::from_millis(2));
        }
    }
    failed
}

/// Why a server is not running: what it logged.
fn record_failed(record: &ProcessRecord) -> io::Error {
    let log = fs::read_to_string(&record.log).unwrap_or_default();
    io::Error::other(format!("server did not start: {}", log.trim()))
}

/// Stops recorded processes and everything they started, all at once: TERM to each one's
/// process group, then KILL to those still running after a grace period. Reaps those that
/// are our children, so no zombie stays behind.
///
/// Each process vpcsh starts leads a group of its own, so a shell's children go with it.
/// A group is signalled only while it is provably ours: its leader is the recorded process
/// (same start time), or it still has members, which keeps the kernel from giving the
/// number to anyone else.
fn stop_all(records: &[ProcessRecord]) {
    let leader = |r: &ProcessRecord| Pid::from_raw(r.pid);
    let mut running: Vec<&ProcessRecord> =
        records.iter().filter(|r| r.alive() || group_alive(r.pid)).collect();
    for signal in [Signal::SIGTERM, Signal::SIGKILL] {
        for r in &running {
            let _ = kill(Pid::from_raw(-r.pid), signal);
        }
        let deadline = Instant::now() + GRACE;
        while !running.is_empty() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(1));
            running.retain(|r| {
                reap(leader(r));
                group_alive(r.pid)
            });
        }
        if running.is_empty() {
            break;
        }
    }
    records.iter().for_each(|r| reap(leader(r)));
}

/// Whether any process of the group `pgid` still runs (zombies waiting to be reaped do not).
fn group_alive(pgid: i32) -> bool {
    // No member at all, not even a zombie: no need to read every process's stat.
    if kill(Pid::from_raw(-pgid), None) == Err(nix::errno::Errno::ESRCH) {
        return false;
    }
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
