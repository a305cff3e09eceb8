//! Rootless sandboxes: a user namespace in which vpcsh is root, with a private mount
//! namespace whose `/run/netns` holds the sandbox's namespaces, kept alive between commands
//! by a keeper process (as rootless Podman keeps its user namespace with a pause process).
//!
//! The kernel lets only a process with one thread make or join a user namespace, so all of
//! this runs first thing in `main`, before any runtime or thread starts.

use std::fs::{self, File};
use std::io::{self, BufRead, BufReader, Write};
use std::os::fd::AsFd;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::fcntl::{Flock, FlockArg};
use nix::mount::{MsFlags, mount};
use nix::sched::{CloneFlags, setns, unshare};

use super::netns::NETNS_DIR;

/// Where making or joining a user namespace failed, and the kernel's answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct UsernsError {
    pub step: String,
    pub errno: Errno,
}

impl UsernsError {
    fn at(step: &str) -> impl Fn(Errno) -> Self + '_ {
        move |errno| Self { step: step.to_string(), errno }
    }

    fn io(step: &str) -> impl Fn(io::Error) -> Self + '_ {
        move |e| Self { step: step.to_string(), errno: Errno::from_raw(e.raw_os_error().unwrap_or(0)) }
    }

    /// The machine setting that forbids user namespaces, when one can be named.
    pub(crate) fn setting(&self) -> Option<String> {
        let read = |path: &str| fs::read_to_string(path).ok().map(|v| v.trim().to_string());
        match self.errno {
            Errno::ENOSPC => Some(match read("/proc/sys/user/max_user_namespaces").as_deref() {
                Some("0") => {
                    "user.max_user_namespaces = 0 forbids them: sysctl -w user.max_user_namespaces=15000"
                        .to_string()
                }
                value => format!(
                    "user.max_user_namespaces (here {}), or the limit of an enclosing user namespace, is used up: \
                     sysctl -w user.max_user_namespaces=15000",
                    value.unwrap_or("unknown")
                ),
            }),
            Errno::EPERM | Errno::EACCES => {
                if read("/proc/sys/kernel/unprivileged_userns_clone").as_deref() == Some("0") {
                    Some(
                        "kernel.unprivileged_userns_clone = 0: sysctl -w kernel.unprivileged_userns_clone=1"
                            .into(),
                    )
                } else if read("/proc/sys/kernel/apparmor_restrict_unprivileged_userns").as_deref()
                    == Some("1")
                {
                    Some(
                        "AppArmor restricts unprivileged user namespaces \
                         (kernel.apparmor_restrict_unprivileged_userns = 1): \
                         sysctl -w kernel.apparmor_restrict_unprivileged_userns=0, or an AppArmor profile \
                         for vpcsh that allows `userns`"
                            .into(),
                    )
                } else {
                    None
                }
            }
            Errno::EINVAL | Errno::ENOSYS => {
                Some("this kernel has no user namespaces (CONFIG_USER_NS): run vpcsh as root".into())
            }
            _ => None,
        }
    }
}

impl std::fmt::Display for UsernsError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.step, self.errno.desc())
    }
}

/// Makes the calling process root of a new user namespace with a private mount namespace
/// whose `/run` is its own, with an empty `/run/netns` (the rest of `/run` bound back).
pub(crate) fn isolate() -> Result<(), UsernsError> {
    let (uid, gid) = (nix::unistd::getuid(), nix::unistd::getgid());
    unshare(CloneFlags::CLONE_NEWUSER | CloneFlags::CLONE_NEWNS).map_err(UsernsError::at("unshare"))?;
    // One mapping of one's own ids needs no privilege once setgroups is denied.
    fs::write("/proc/self/setgroups", "deny").map_err(UsernsError::io("setgroups"))?;
    fs::write("/proc/self/uid_map", format!("0 {uid} 1")).map_err(UsernsError::io("uid_map"))?;
    fs::write("/proc/self/gid_map", format!("0 {gid} 1")).map_err(UsernsError::io("gid_map"))?;
    mount(None::<&str>, "/", None::<&str>, MsFlags::MS_REC | MsFlags::MS_PRIVATE, None::<&str>)
        .map_err(UsernsError::at("mount"))?;
    private_run().map_err(UsernsError::io("a private /run"))
}

/// A tmpfs on `/run` holding what `/run` held (bound back entry by entry, so sockets and
/// `$XDG_RUNTIME_DIR` stay), except `netns`, which starts empty. `/run/netns` itself may not
/// exist on the machine, and only root could make it there.
fn private_run() -> io::Result<()> {
    // The old /run stays reachable through a descriptor once the tmpfs covers it.
    let old = File::open("/run")?;
    let below = PathBuf::from(format!("/proc/self/fd/{}", std::os::fd::AsRawFd::as_raw_fd(&old)));
    mount(Some("tmpfs"), "/run", Some("tmpfs"), MsFlags::MS_NOSUID | MsFlags::MS_NODEV, Some("mode=755"))?;
    for entry in fs::read_dir(&below)? {
        let entry = entry?;
        let name = entry.file_name();
        if name == "netns" {
            continue;
        }
        let (from, to) = (entry.path(), Path::new("/run").join(&name));
        let kind = entry.file_type()?;
        if kind.is_symlink() {
            std::os::unix::fs::symlink(fs::read_link(&from)?, &to)?;
            continue;
        }
        if kind.is_dir() {
            fs::create_dir(&to)?;
        } else if kind.is_file() || kind.is_socket() || kind.is_fifo() {
            File::create(&to)?;
        } else {
            continue;
        }
        mount(Some(&from), &to, None::<&str>, MsFlags::MS_BIND | MsFlags::MS_REC, None::<&str>)?;
    }
    fs::create_dir(NETNS_DIR)
}

/// Why no keeper could be had: its file, or the namespaces themselves.
#[derive(Debug)]
pub(crate) enum KeeperError {
    File { path: PathBuf, error: io::Error },
    Userns(UsernsError),
}

/// A running keeper: its pid and the identity (inode) of its user namespace.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Keeper {
    pub pid: i32,
    pub userns: u64,
}

impl Keeper {
    /// Reads a keeper file and trusts it only if that pid still is a keeper in that user
    /// namespace (pids are reused; a keeper that died leaves its file behind).
    pub(crate) fn read(file: &Path) -> Option<Keeper> {
        let text = fs::read_to_string(file).ok()?;
        let mut words = text.split_whitespace();
        let keeper = Keeper { pid: words.next()?.parse().ok()?, userns: words.next()?.parse().ok()? };
        keeper.is_alive().then_some(keeper)
    }

    fn is_alive(&self) -> bool {
        let proc = PathBuf::from(format!("/proc/{}", self.pid));
        let userns = fs::metadata(proc.join("ns/user")).map(|m| m.ino()).ok();
        let cmdline = fs::read(proc.join("cmdline")).unwrap_or_default();
        userns == Some(self.userns) && cmdline.split(|b| *b == 0).any(|arg| arg == KEEP_COMMAND.as_bytes())
    }

    /// Moves the calling (single-threaded) process into the keeper's user and mount
    /// namespaces, staying in its working directory.
    pub(crate) fn join(&self) -> Result<(), UsernsError> {
        let open = |ns: &str| {
            File::open(format!("/proc/{}/ns/{ns}", self.pid))
                .map_err(UsernsError::io("opening the keeper's namespaces"))
        };
        let (user, mnt) = (open("user")?, open("mnt")?);
        // The descriptors pin the namespaces: check they are the keeper's, not a reused pid's.
        if user.metadata().map(|m| m.ino()).ok() != Some(self.userns) {
            return Err(UsernsError { step: "joining the keeper".into(), errno: Errno::ESRCH });
        }
        let cwd = File::open(".").ok();
        setns(user.as_fd(), CloneFlags::CLONE_NEWUSER)
            .map_err(UsernsError::at("joining the user namespace"))?;
        setns(mnt.as_fd(), CloneFlags::CLONE_NEWNS)
            .map_err(UsernsError::at("joining the mount namespace"))?;
        if let Some(cwd) = cwd {
            let _ = nix::unistd::fchdir(cwd.as_fd());
        }
        Ok(())
    }

    /// Ends the keeper: its namespaces go once the processes still in them have ended.
    pub(crate) fn end(&self, file: &Path) {
        if self.is_alive() {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(self.pid),
                nix::sys::signal::Signal::SIGTERM,
            );
        }
        let _ = fs::remove_file(file);
    }
}

/// The hidden subcommand a keeper runs as (how `Keeper::read` recognises one).
pub(crate) const KEEP_COMMAND: &str = "__keep";

/// The keeper recorded in `file`, or a new one started (and recorded) if there is none
/// alive. Holds a lock beside the file so that two commands start one keeper between them.
pub(crate) fn keeper(file: &Path, sandbox: &str) -> Result<Keeper, KeeperError> {
    let at = |path: &Path| {
        let path = path.to_path_buf();
        move |error| KeeperError::File { path, error }
    };
    let lock_path = file.with_extension("lock");
    fs::create_dir_all(file.parent().unwrap_or(Path::new("."))).map_err(at(file))?;
    let lock = File::create(&lock_path).map_err(at(&lock_path))?;
    let _held = Flock::lock(lock, FlockArg::LockExclusive).map_err(|(_, e)| at(&lock_path)(e.into()))?;
    if let Some(keeper) = Keeper::read(file) {
        return Ok(keeper);
    }
    let keeper = start_keeper(sandbox).map_err(KeeperError::Userns)?;
    fs::write(file, format!("{} {}\n", keeper.pid, keeper.userns)).map_err(at(file))?;
    Ok(keeper)
}

/// Starts `vpcsh __keep SANDBOX` in a session of its own (a Ctrl-C at the terminal does not
/// reach it) and waits for it to say that its namespaces are ready, or why they are not.
fn start_keeper(sandbox: &str) -> Result<Keeper, UsernsError> {
    let exe = std::env::current_exe().map_err(UsernsError::io("finding vpcsh's executable"))?;
    let mut command = Command::new(exe);
    command.args([KEEP_COMMAND, sandbox]).stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::null());
    // SAFETY: between fork and exec the child only calls setsid.
    unsafe {
        command.pre_exec(|| nix::unistd::setsid().map(drop).map_err(io::Error::from));
    }
    let mut child = command.spawn().map_err(UsernsError::io("starting the keeper"))?;
    let mut line = String::new();
    if let Some(out) = child.stdout.take() {
        let _ = BufReader::new(out).read_line(&mut line);
    }
    let words: Vec<&str> = line.split_whitespace().collect();
    match words.as_slice() {
        ["ready", userns] => {
            let userns = userns.parse().map_err(|_| UsernsError::at("starting the keeper")(Errno::EPROTO))?;
            Ok(Keeper { pid: child.id() as i32, userns })
        }
        ["error", errno, step @ ..] => {
            let _ = child.wait();
            Err(UsernsError { step: step.join(" "), errno: Errno::from_raw(errno.parse().unwrap_or(0)) })
        }
        _ => {
            let _ = child.kill();
            let _ = child.wait();
            Err(UsernsError::at("starting the keeper")(Errno::ECHILD))
        }
    }
}

/// The keeper itself: makes the namespaces, says so on stdout, then holds them until the
/// sandbox is gone or it is told to end.
pub(crate) fn keep() -> io::Result<()> {
    let mut out = io::stdout();
    if let Err(e) = isolate() {
        writeln!(out, "error {} {}", e.errno as i32, e.step)?;
        return Err(io::Error::other(e.to_string()));
    }
    let own = fs::metadata("/proc/self/ns/user")?.ino();
    writeln!(out, "ready {own}")?;
    out.flush()?;
    // Nobody reads from here on: stdout would become a closed pipe.
    let null = File::options().write(true).open("/dev/null")?;
    nix::unistd::dup2_stdout(null.as_fd())?;
    // Whoever started it joins within moments; until then it is alone by design.
    let started = Instant::now();
    loop {
        std::thread::sleep(Duration::from_secs(1));
        if started.elapsed() > Duration::from_secs(5) && sandbox_gone(own) {
            return Ok(());
        }
    }
}

/// No namespace left, and no vpcsh command at work in the user namespace (one that is about
/// to make the first namespace, or an `exec` in one). Processes vpcsh started and someone
/// orphaned by deleting their namespaces by hand do not count: they are recorded, and the
/// next vpcsh command ends them, as on a root sandbox.
fn sandbox_gone(own: u64) -> bool {
    let empty = fs::read_dir(NETNS_DIR).map(|mut d| d.next().is_none()).unwrap_or(true);
    empty && !vpcsh_at_work(own)
}

fn vpcsh_at_work(userns: u64) -> bool {
    let exe = |proc: &Path| {
        let path = fs::read_link(proc.join("exe")).ok()?;
        Some(path.to_string_lossy().trim_end_matches(" (deleted)").to_string())
    };
    let me = exe(Path::new("/proc/self"));
    let Ok(entries) = fs::read_dir("/proc") else { return true };
    entries.filter_map(Result::ok).any(|e| {
        let proc = e.path();
        let is_pid = e.file_name().to_string_lossy().bytes().all(|b| b.is_ascii_digit());
        let cmdline = fs::read(proc.join("cmdline")).unwrap_or_default();
        let helper = cmdline.split(|b| *b == 0).nth(1).is_some_and(|arg| arg.starts_with(b"__"));
        is_pid
            && !helper
            && fs::metadata(proc.join("ns/user")).is_ok_and(|m| m.ino() == userns)
            && exe(&proc) == me
    })
}

/// Whether this process has one thread (the kernel's condition for the above).
pub(crate) fn single_threaded() -> bool {
    fs::read_dir("/proc/self/task").map(|d| d.count() == 1).unwrap_or(false)
}

/// Whether vpcsh may change network namespaces as they are: CAP_NET_ADMIN (links) and
/// CAP_SYS_ADMIN (mounts, setns) in effect, as for root.
pub(crate) fn privileged() -> bool {
    const CAP_NET_ADMIN: u32 = 12;
    const CAP_SYS_ADMIN: u32 = 21;
    let effective = fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| s.lines().find_map(|l| l.strip_prefix("CapEff:").map(|v| v.trim().to_string())))
        .and_then(|hex| u64::from_str_radix(&hex, 16).ok())
        .unwrap_or(0);
    let has = |cap: u32| effective & (1 << cap) != 0;
    has(CAP_NET_ADMIN) && has(CAP_SYS_ADMIN)
}
