//! Deleted namespaces taken apart in the background.
//!
//! When the last reference to a network namespace goes, the kernel tears down every device
//! in it in one batch that holds the routing lock for seconds (about 9 s for the 1,000
//! devices of 500 subnets on a 2-core VM): any bring-up that follows stalls behind it. So a
//! namespace vpcsh deletes is first handed, still open, to a reaper (`vpcsh __reap`), which
//! deletes vpcsh's devices in it one per request (four in a large network) — each request
//! holds the lock briefly, and none starts while a vpcsh apply is at work — and then lets
//! go of the emptied namespaces one by one, which the kernel reaps at once. The name is
//! free from the start. A reaper that is killed, or that cannot start, only leaves the
//! kernel to do what it would have done anyway.

use std::fs::{self, File};
use std::io;
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use netlink_sys::{Socket, protocols::NETLINK_ROUTE};
use nix::fcntl::{Flock, FlockArg};
use nix::sched::{CloneFlags, setns};

use super::plain_netlink::{delete_links_now, own_links};
use crate::plan::kernel::LINK_GROUP;

/// The command vpcsh runs itself as to reap namespaces.
pub(crate) const REAP_COMMAND: &str = "__reap";

/// Devices deleted in one request, by the number of namespaces to reap. Each request waits
/// once for the kernel's deferred frees (tens of milliseconds) and holds the routing lock
/// for about 16 ms per device; a bring-up that starts meanwhile waits for the request under
/// way. Measured at 10 × 50: one at a time takes 43 s and stalls others up to 26 ms, 4 at a
/// time 16 s and 75 ms, 16 at a time 13 s and 270 ms. At 1 × 10 a bring-up right after a
/// destroy took up to 126 ms with 4 at a time against 62 ms one at a time (40 ms on a quiet
/// kernel): small networks, small requests; large ones, a reaper that does not linger.
fn at_once(namespaces: usize) -> usize {
    if namespaces < 64 { 1 } else { 4 }
}

/// The link group devices join just before they are deleted together (vpcsh's own, plus one).
const REAPING: u32 = LINK_GROUP + 1;

/// Applies hold it shared while they work; before each request the reaper checks that it
/// could take it alone.
const KERNEL_LOCK: &str = "/run/vpcsh/kernel.lock";

/// Below this many namespaces the kernel's own teardown stalls less (about 10 ms a device)
/// than a reaper costs: a small sandbox is simply let go.
const WORTH_A_REAPER: usize = 8;

/// Namespaces deleted by this run, held open until a reaper takes them.
#[derive(Default)]
pub(crate) struct Doomed {
    spaces: Vec<OwnedFd>,
    /// Reapers started by this run, waited for once they end (a long REPL session starts
    /// many).
    reapers: Vec<Child>,
}

impl Doomed {
    pub(crate) fn push(&mut self, ns: OwnedFd) {
        self.spaces.push(ns);
    }

    /// How many are held.
    pub(crate) fn len(&self) -> usize {
        self.spaces.len()
    }

    /// Starts a reaper for the namespaces deleted so far, when there are enough of them to
    /// stall the kernel. Otherwise, or if none starts, they are let go: the kernel reaps
    /// them itself.
    pub(crate) fn hand_off(&mut self) {
        self.reapers.retain_mut(|r| r.try_wait().is_ok_and(|ended| ended.is_none()));
        let spaces = std::mem::take(&mut self.spaces);
        if spaces.len() < WORTH_A_REAPER {
            return;
        }
        match start(&spaces) {
            Ok(child) => self.reapers.push(child),
            Err(e) => tracing::debug!("no reaper ({e}): the kernel reaps {} namespaces itself", spaces.len()),
        }
    }
}

impl Drop for Doomed {
    fn drop(&mut self) {
        self.hand_off();
    }
}

fn start(spaces: &[OwnedFd]) -> io::Result<Child> {
    use std::os::unix::process::CommandExt;
    let fds: Vec<RawFd> = spaces.iter().map(AsRawFd::as_raw_fd).collect();
    let mut command = Command::new(std::env::current_exe()?);
    command.arg(REAP_COMMAND).args(fds.iter().map(ToString::to_string));
    command.stdin(Stdio::null()).stdout(Stdio::null()).stderr(Stdio::null());
    // SAFETY: between fork and exec the child only makes system calls (setsid, nice, fcntl)
    // on numbers prepared before the fork.
    unsafe {
        command.pre_exec(move || {
            // Out of the terminal's process group: a Ctrl-C meant for vpcsh does not stop it.
            nix::unistd::setsid()?;
            // Background work: the bring-up that may follow comes first.
            nix::libc::nice(19);
            for fd in &fds {
                nix::fcntl::fcntl(
                    std::os::fd::BorrowedFd::borrow_raw(*fd),
                    nix::fcntl::FcntlArg::F_SETFD(nix::fcntl::FdFlag::empty()),
                )?;
            }
            Ok(())
        });
    }
    command.spawn()
}

/// The reaper itself: `fds` are the namespaces its parent handed it.
pub(crate) fn reap(fds: &[RawFd]) -> io::Result<()> {
    // SAFETY: the parent passed these descriptors open, for this process alone.
    let spaces: Vec<OwnedFd> = fds.iter().map(|fd| unsafe { OwnedFd::from_raw_fd(*fd) }).collect();
    let lock = kernel_lock();
    let at_once = at_once(spaces.len());
    let mut failures = Vec::new();
    for ns in spaces {
        // A namespace that cannot be emptied is left to the kernel; the others still are.
        if let Err(e) = empty(&ns, at_once, lock.as_ref()) {
            failures.push(e);
        }
        // Let go as soon as emptied, and not while an apply works: the kernel's teardown of
        // what is left (`lo`, tables) holds the routing lock too.
        if let Some(lock) = &lock {
            wait_turn(lock);
        }
        drop(ns);
    }
    failures.into_iter().next().map_or(Ok(()), Err)
}

/// Deletes vpcsh's devices in one namespace, a few per request, each request in its turn.
fn empty(ns: &OwnedFd, at_once: usize, lock: Option<&File>) -> io::Result<()> {
    // The reaper is a process of its own, on one thread: it may move between namespaces.
    setns(ns.as_fd(), CloneFlags::CLONE_NEWNET)?;
    let socket = Socket::new(NETLINK_ROUTE)?;
    for some in own_links(&socket)?.chunks(at_once) {
        if let Some(lock) = lock {
            wait_turn(lock);
        }
        delete_links_now(&socket, some, REAPING)?;
    }
    Ok(())
}

/// Waits until no apply is at work. The lock is only looked at, not kept for the request:
/// an apply that starts meanwhile waits for the routing lock the request holds, not for
/// the deferred frees after it; and a reaper that kept the lock, taking it again at once
/// after each request, would keep a waiting apply out for several.
fn wait_turn(file: &File) {
    loop {
        let Ok(mine) = file.try_clone() else { return };
        match Flock::lock(mine, FlockArg::LockExclusiveNonblock) {
            Ok(_free) => return,
            Err((_, nix::errno::Errno::EWOULDBLOCK)) => std::thread::sleep(Duration::from_millis(20)),
            Err(_) => return,
        }
    }
}

/// The lock file, where /run is writable (best effort: without it reapers just do not wait).
fn kernel_lock() -> Option<File> {
    fs::create_dir_all(super::netns::RUNTIME_DIR).ok()?;
    File::options().create(true).truncate(false).write(true).open(KERNEL_LOCK).ok()
}

/// Held by an apply while it works, so reapers wait for it.
pub(crate) struct Working {
    _held: Option<Flock<File>>,
}

impl Working {
    pub(crate) fn start() -> Self {
        Self { _held: kernel_lock().and_then(|f| Flock::lock(f, FlockArg::LockShared).ok()) }
    }
}
