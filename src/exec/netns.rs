//! Named network namespaces, made and entered in-process.
//!
//! `setns` changes only the calling thread, so every "inside a namespace" action runs on a
//! short-lived thread of its own, never on a runtime worker that another task would reuse.

use std::fs::{self, File};
use std::io;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use nix::errno::Errno;
use nix::fcntl::{AT_FDCWD, AtFlags};
use nix::mount::{MntFlags, MsFlags, mount, umount2};
use nix::sched::{CloneFlags, setns, unshare};
use nix::unistd::linkat;

use super::sysctl;
use crate::plan::naming::HOST_NS;

pub(crate) const NETNS_DIR: &str = "/run/netns";

/// The namespace vpcsh runs in stands for the machine on the real host.
const SELF_NS: &str = "/proc/self/ns/net";

pub(crate) fn path(name: &str) -> PathBuf {
    if name == HOST_NS { PathBuf::from(SELF_NS) } else { Path::new(NETNS_DIR).join(name) }
}

/// Whether the namespace exists: its file is a mounted namespace. A bare file under
/// /run/netns (a run killed between creating the file and mounting onto it) is none.
pub(crate) fn exists(name: &str) -> bool {
    on_nsfs(name) == Some(true)
}

/// A file under /run/netns with no namespace mounted on it.
pub(crate) fn is_stale(name: &str) -> bool {
    name != HOST_NS && on_nsfs(name) == Some(false)
}

/// Whether what is at the namespace's name lives on the namespace filesystem (a mounted
/// namespace does, a bare file does not); `None` when nothing is there.
fn on_nsfs(name: &str) -> Option<bool> {
    use nix::sys::statfs::{NSFS_MAGIC, statfs};
    statfs(&path(name)).ok().map(|s| s.filesystem_type() == NSFS_MAGIC)
}

/// The kernel's identity of the namespace (its inode), if it exists.
pub(crate) fn inode(name: &str) -> Option<u64> {
    use std::os::unix::fs::MetadataExt;
    exists(name).then(|| fs::metadata(path(name)).ok().map(|m| m.ino())).flatten()
}

pub(crate) fn open(name: &str) -> io::Result<OwnedFd> {
    File::open(path(name)).map(OwnedFd::from)
}

/// Makes `/run/netns` a shared mount point, as `ip netns add` does, so namespace mounts
/// made here are seen by every mount namespace.
pub(crate) fn prepare_dir() -> io::Result<()> {
    fs::create_dir_all(NETNS_DIR)?;
    if receives_mounts_only() {
        return Err(io::Error::other(
            "vpcsh runs in a mount namespace whose /run/netns does not share mounts back (as under \
             `ip netns exec`): namespaces it made would vanish with it; enter only the network \
             namespace instead (`nsenter --net=/run/netns/NAME vpcsh ...`)",
        ));
    }
    let shared =
        || mount(None::<&str>, NETNS_DIR, Some("none"), MsFlags::MS_SHARED | MsFlags::MS_REC, None::<&str>);
    match shared() {
        Ok(()) => Ok(()),
        Err(nix::errno::Errno::EINVAL) => {
            mount(
                Some(NETNS_DIR),
                NETNS_DIR,
                Some("none"),
                MsFlags::MS_BIND | MsFlags::MS_REC,
                None::<&str>,
            )?;
            Ok(shared()?)
        }
        Err(e) => Err(e.into()),
    }
}

/// Whether /run/netns is a slave mount here: mounts made under it would not propagate back
/// to the mount namespace everyone else sees.
fn receives_mounts_only() -> bool {
    let Ok(info) = fs::read_to_string("/proc/self/mountinfo") else { return false };
    info.lines().any(|line| {
        let fields: Vec<&str> = line.split(' ').collect();
        let optional = fields.iter().skip(6).take_while(|f| **f != "-");
        fields.get(4) == Some(&NETNS_DIR) && optional.clone().any(|f| f.starts_with("master:"))
    })
}

/// Runs `f` on a fresh thread that has entered the namespace behind `ns`.
pub(crate) fn run_in<T: Send + 'static>(
    ns: &OwnedFd,
    f: impl FnOnce() -> io::Result<T> + Send + 'static,
) -> io::Result<T> {
    let ns = ns.try_clone()?;
    std::thread::spawn(move || {
        setns(ns.as_fd(), CloneFlags::CLONE_NEWNET)?;
        f()
    })
    .join()
    .map_err(|_| io::Error::other("namespace thread panicked"))?
}

/// Runs `f` inside each of the namespaces behind `spaces`, in turn, on one fresh thread
/// (entering a namespace is cheaper than starting a thread for it).
pub(crate) fn run_in_each<T: Send>(
    spaces: &[OwnedFd],
    f: impl Fn() -> io::Result<T> + Sync,
) -> io::Result<Vec<T>> {
    std::thread::scope(|s| {
        s.spawn(|| {
            spaces
                .iter()
                .map(|ns| {
                    setns(ns.as_fd(), CloneFlags::CLONE_NEWNET)?;
                    f()
                })
                .collect()
        })
        .join()
        .map_err(|_| io::Error::other("namespace thread panicked"))?
    })
}

/// Creates the namespaces `names`, running `f` inside each, spread over up to `threads`
/// threads (each makes its share one after another: a thread may enter a new namespace
/// again and again). Stops early where `stop` says so; the result of each, in order,
/// `None` for those not tried.
pub(crate) fn create_all<T: Send>(
    names: &[&str],
    threads: usize,
    f: impl Fn(&str) -> io::Result<T> + Sync,
    stop: impl Fn() -> bool + Sync,
) -> Vec<Option<io::Result<T>>> {
    let share = names.len().div_ceil(threads.max(1)).max(1);
    std::thread::scope(|s| {
        let workers: Vec<_> = names
            .chunks(share)
            .map(|chunk| {
                let (f, stop) = (&f, &stop);
                let worker = s.spawn(move || {
                    chunk
                        .iter()
                        .map(|name| (!stop()).then(|| create_here(name, || f(name))))
                        .collect::<Vec<_>>()
                });
                (chunk.len(), worker)
            })
            .collect();
        workers
            .into_iter()
            .flat_map(|(len, worker)| {
                worker.join().unwrap_or_else(|_| {
                    (0..len).map(|_| Some(Err(io::Error::other("namespace thread panicked")))).collect()
                })
            })
            .collect()
    })
}

/// Moves the calling thread into a new network namespace, runs `f` there, then names it
/// `name`. Named last, a namespace found by its name is always one set up as made: a run
/// killed before leaves no namespace (at worst a bare file, see `is_stale`), never one
/// with the kernel's defaults, some of which (duplicate address detection) observation
/// cannot see.
fn create_here<T>(name: &str, f: impl FnOnce() -> io::Result<T>) -> io::Result<T> {
    unshare(CloneFlags::CLONE_NEWNET)?;
    let made = f()?;
    let target = path(name);
    make_name_file(&target)?;
    if let Err(e) = mount(Some(OWN), &target, None::<&str>, MsFlags::MS_BIND, None::<&str>) {
        let _ = fs::remove_file(&target);
        return Err(e.into());
    }
    super::kill_point::named(name);
    Ok(made)
}

/// The calling thread's network namespace.
const OWN: &str = "/proc/thread-self/ns/net";

/// Makes the file a namespace's name is mounted on, failing if the name is taken. Each is a
/// link to one unnamed file made per run, not a file of its own: where finding a free inode
/// is slow (ext4 without a journal, as `/run` is on some machines, skips every inode freed
/// in the last minutes: 0.6 ms a file once 5,000 were just deleted, against 7 µs a link), a
/// namespace is named at the speed of a link. Gone with the last name, the file leaves
/// nothing behind.
fn make_name_file(target: &Path) -> io::Result<()> {
    if let Some(anchor) = name_anchor() {
        // Linking an open file by its descriptor, as open(2) documents for O_TMPFILE.
        let from = format!("/proc/self/fd/{}", anchor.as_raw_fd());
        match linkat(AT_FDCWD, from.as_str(), AT_FDCWD, target, AtFlags::AT_SYMLINK_FOLLOW) {
            Ok(()) => return Ok(()),
            Err(Errno::EEXIST) => return Err(Errno::EEXIST.into()),
            // Too many links, or links refused here: a file of its own, as without an anchor.
            Err(_) => {}
        }
    }
    File::create_new(target).map(drop)
}

/// The unnamed file in /run/netns every name of this run links to, where its filesystem
/// can make one.
fn name_anchor() -> Option<&'static File> {
    static ANCHOR: OnceLock<Option<File>> = OnceLock::new();
    ANCHOR
        .get_or_init(|| {
            let mut options = fs::OpenOptions::new();
            options.write(true).mode(0o644).custom_flags(nix::libc::O_TMPFILE);
            options.open(NETNS_DIR).ok()
        })
        .as_ref()
}

/// Opens the calling thread's namespace (one being made has no name yet).
pub(crate) fn open_own() -> io::Result<OwnedFd> {
    File::open(OWN).map(OwnedFd::from)
}

/// Removes a namespace's name; the kernel destroys it, with its devices, once nothing
/// (process or open fd) holds it any more.
pub(crate) fn remove(name: &str) -> io::Result<()> {
    if name == HOST_NS {
        return Err(io::Error::other("the machine's own namespace is never removed"));
    }
    let target = path(name);
    match umount2(&target, MntFlags::MNT_DETACH) {
        Ok(()) | Err(nix::errno::Errno::EINVAL) | Err(nix::errno::Errno::ENOENT) => {}
        Err(e) => return Err(e.into()),
    }
    match fs::remove_file(&target) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

/// Whether the calling thread's namespace forwards IPv4. (Observation reads forwarding
/// and IPv6 from the link dump instead: every lookup under /proc/sys/net walks a chain as
/// long as the number of namespaces, which made observing 5,000 of them quadratic.)
pub(crate) fn forwards_ipv4() -> io::Result<bool> {
    Ok(sysctl::read("net/ipv4/ip_forward")?.trim() == "1")
}

pub(crate) fn set_forwarding(on: bool, with_ipv6: bool) -> io::Result<()> {
    let value = if on { "1" } else { "0" };
    sysctl::write("net/ipv4/ip_forward", value)?;
    if with_ipv6 {
        match sysctl::write("net/ipv6/conf/all/forwarding", value) {
            // A kernel without IPv6 has nothing to forward.
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            other => other?,
        }
    }
    Ok(())
}

/// Turns IPv6 on or off in the calling thread's namespace, for every device there now and
/// every device made later (the kernel copies `all` to `default`, so one write does both).
/// On, without duplicate address detection: vpcsh numbers every link itself, and a router
/// whose link-local address is still tentative sends no neighbour solicitations, so
/// forwarding would wait a second.
pub(crate) fn set_ipv6(on: bool) -> io::Result<()> {
    // A kernel without IPv6 has none of these files: off is all there is.
    let absent = |e: &io::Error| e.kind() == io::ErrorKind::NotFound;
    if on {
        // Listing a sysctl directory makes an entry for each file in it: only done for on.
        let confs = match sysctl::list("net/ipv6/conf") {
            Err(e) if absent(&e) => return Ok(()),
            confs => confs?,
        };
        for conf in confs {
            sysctl::write(&format!("net/ipv6/conf/{conf}/accept_dad"), "0")?;
        }
    }
    match sysctl::write("net/ipv6/conf/all/disable_ipv6", if on { "0" } else { "1" }) {
        Err(e) if absent(&e) => Ok(()),
        other => other,
    }
}

pub(crate) use crate::plan::desired::RESOLVER;

/// Where vpcsh keeps the few files it needs outside its state directory (a rootless
/// sandbox has a `/run` of its own).
pub(crate) const RUNTIME_DIR: &str = "/run/vpcsh";

/// Waits for, then holds until dropped, the turn of one vpcsh run among all that change
/// the simulated fabric `name` (its switch and ports are shared by several sandboxes).
pub(crate) fn fabric_turn(name: &str) -> io::Result<nix::fcntl::Flock<File>> {
    fs::create_dir_all(RUNTIME_DIR)?;
    let file = File::create(Path::new(RUNTIME_DIR).join(format!("fabric-{name}.lock")))?;
    nix::fcntl::Flock::lock(file, nix::fcntl::FlockArg::LockExclusive).map_err(|(_, e)| e.into())
}

/// Where vpcsh records the fabrics it made: outside any one sandbox's state, as several
/// sandboxes share a fabric, and only a recorded one is joined when it exists already.
fn fabric_record(name: &str) -> PathBuf {
    Path::new(RUNTIME_DIR).join("fabrics").join(name)
}

pub(crate) fn fabric_recorded(name: &str) -> bool {
    fabric_record(name).exists()
}

/// Records a fabric before it is made, so that a crash cannot leave it unowned.
pub(crate) fn record_fabric(name: &str) -> io::Result<()> {
    let path = fabric_record(name);
    fs::create_dir_all(path.parent().expect("a record has a directory"))?;
    fs::write(path, "")
}

/// Forgets a fabric once its namespace is gone.
pub(crate) fn forget_fabric(name: &str) {
    if !exists(name) {
        let _ = fs::remove_file(fabric_record(name));
    }
}
