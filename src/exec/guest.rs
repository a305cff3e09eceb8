//! Commands started inside vpcsh's namespaces, and what they see there: the namespace's
//! network, the host's name, and the machine's files with the VPC's resolver as
//! `/etc/resolv.conf` and no namespace names.
//!
//! Each command gets a mount namespace of its own (what it mounts stays its own), made by
//! copying a view prepared once per run rather than the machine's. A copy of the machine's
//! would hold every name mounted in `/run/netns` (with 25,000 names, 55 ms more for each
//! `vpcsh exec`) and, a slave of the machine's mounts, would receive every name mounted
//! later: 200 workloads running while 500 hosts were added held 148,000 mounts in the
//! kernel, against 5,700 with the view. Inside, `/run/netns` is empty, as on a machine of
//! its own.

use std::ffi::CString;
use std::fs::{self, File};
use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::sync::OnceLock;

use nix::mount::{MntFlags, MsFlags, mount, umount2};
use nix::sched::{CloneFlags, setns, unshare};

use super::netns::{NETNS_DIR, RESOLVER, RUNTIME_DIR};
use crate::plan::naming::HOST_NS;

/// Makes `cmd`'s child enter the namespace `fd` (named `ns`) between fork and exec, so the
/// command (and only it) runs inside, whatever thread spawns it. In vpcsh's namespaces it
/// also gets the host's name as its hostname (a UTS namespace of its own) and the VPC's
/// resolver in `/etc/resolv.conf` (a mount namespace of its own), as on a real machine.
pub(crate) fn enter_on_exec(cmd: &mut std::process::Command, fd: OwnedFd, ns: &str) {
    use std::os::unix::process::CommandExt;
    if ns == HOST_NS {
        return enter_net_on_exec(cmd, fd);
    }
    // Prepared before the fork: between fork and exec nothing may allocate.
    let (hostname, mounts) = (hostname_of(ns).to_string(), Entry::prepare());
    // SAFETY: between fork and exec the child only makes system calls (setns, unshare,
    // sethostname, mount, chdir) on data prepared before the fork.
    unsafe {
        cmd.pre_exec(move || {
            setns(fd.as_fd(), CloneFlags::CLONE_NEWNET)?;
            unshare(CloneFlags::CLONE_NEWUTS)?;
            let _ = nix::unistd::sethostname(&hostname);
            mounts.enter()
        });
    }
}

/// Makes `cmd`'s child enter the network namespace `fd` between fork and exec, and nothing
/// else: for vpcsh's own servers, which need neither the host's name nor its resolver.
pub(crate) fn enter_net_on_exec(cmd: &mut std::process::Command, fd: OwnedFd) {
    use std::os::unix::process::CommandExt;
    // SAFETY: between fork and exec the child only calls setns.
    unsafe {
        cmd.pre_exec(move || Ok(setns(fd.as_fd(), CloneFlags::CLONE_NEWNET)?));
    }
}

/// The hostname of whatever lives in a namespace: a host's name, a VPC's (its router),
/// `internet`, or the sandbox's name for the sandbox machine.
fn hostname_of(ns: &str) -> &str {
    ns.rsplit('.').next().unwrap_or(ns)
}

/// The `resolv.conf` commands vpcsh runs in its namespaces see (the same for all: the
/// resolver is at one address in every VPC).
const RESOLV_CONF: &str = "/run/vpcsh/resolv.conf";

/// What a command's child needs, prepared before the fork: between fork and exec nothing
/// may allocate.
struct Entry {
    /// The prepared view, or `None` where it could not be made (the child then copies the
    /// machine's view and trims it itself).
    view: Option<&'static OwnedFd>,
    resolv: Option<CString>,
    /// vpcsh's working directory, which entering a mount namespace resets to its root.
    cwd: Option<CString>,
}

impl Entry {
    fn prepare() -> Entry {
        let cwd = std::env::current_dir()
            .ok()
            .and_then(|d| CString::new(d.into_os_string().into_encoded_bytes()).ok());
        Entry { view: view(), resolv: resolv_conf(), cwd }
    }

    /// Runs in the child, after the fork: gives it a mount namespace of its own.
    fn enter(&self) -> io::Result<()> {
        let Some(view) = self.view else {
            unshare(CloneFlags::CLONE_NEWNS)?;
            return trim(self.resolv.as_ref());
        };
        setns(view, CloneFlags::CLONE_NEWNS)?;
        unshare(CloneFlags::CLONE_NEWNS)?;
        if let Some(cwd) = &self.cwd {
            let _ = nix::unistd::chdir(cwd.as_c_str());
        }
        Ok(())
    }
}

/// Makes the current mount namespace (a fresh copy) the one commands see: mounts of the
/// machine still reach in, the resolver's file is bound over `/etc/resolv.conf`, and the
/// namespace names are gone.
fn trim(resolv: Option<&CString>) -> io::Result<()> {
    mount(None::<&str>, "/", None::<&str>, MsFlags::MS_REC | MsFlags::MS_SLAVE, None::<&str>)?;
    if let Some(resolv) = resolv {
        let _ =
            mount(Some(resolv.as_c_str()), "/etc/resolv.conf", None::<&str>, MsFlags::MS_BIND, None::<&str>);
    }
    // vpcsh makes `/run/netns` a mount point of its own (see `netns`); where it is not,
    // the names stay, as they did before. Under the mounts are the names' files: an empty
    // directory hides them.
    if umount2(NETNS_DIR, MntFlags::MNT_DETACH).is_ok() {
        let flags = MsFlags::MS_RDONLY | MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC;
        let _ = mount(Some("none"), NETNS_DIR, Some("tmpfs"), flags, Some("size=4k,mode=755"));
    }
    Ok(())
}

/// The view, made once per run on a thread of its own (unsharing changes only the thread)
/// and held by a descriptor.
fn view() -> Option<&'static OwnedFd> {
    static VIEW: OnceLock<Option<OwnedFd>> = OnceLock::new();
    VIEW.get_or_init(|| {
        let resolv = resolv_conf();
        std::thread::spawn(move || -> io::Result<OwnedFd> {
            unshare(CloneFlags::CLONE_NEWNS)?;
            trim(resolv.as_ref())?;
            Ok(File::open("/proc/thread-self/ns/mnt")?.into())
        })
        .join()
        .ok()?
        .inspect_err(|e| tracing::debug!("commands copy the machine's mounts: {e}"))
        .ok()
    })
    .as_ref()
}

/// The file, written once per run (every command vpcsh starts binds it).
fn resolv_conf() -> Option<CString> {
    static WRITTEN: OnceLock<Option<CString>> = OnceLock::new();
    WRITTEN
        .get_or_init(|| {
            let text =
                format!("# vpcsh: the VPC's resolver\nnameserver {RESOLVER}\noptions timeout:1 attempts:2\n");
            if fs::read_to_string(RESOLV_CONF).ok().as_deref() != Some(text.as_str()) {
                fs::create_dir_all(RUNTIME_DIR).ok()?;
                fs::write(RESOLV_CONF, text).ok()?;
            }
            CString::new(RESOLV_CONF).ok()
        })
        .clone()
}
