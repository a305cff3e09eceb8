//! Network sysctls of the calling thread's namespace, reached through a procfs instance of
//! vpcsh's own.
//!
//! Each lookup of `/proc/sys/net/ipv4` or `/proc/sys/net/ipv6` walks one dentry hash chain
//! that holds an entry for every namespace that ever looked there (they all hang off the one
//! shared `net` directory): with the 5,000 namespaces of a destroyed network still being
//! reaped, making a new namespace spent 6 ms in that walk, three quarters of its time. A
//! procfs instance mounted nowhere (`fsopen`/`fsmount`: nothing on the machine sees it) has
//! dentries of its own; all threads share one (a lookup sees the calling thread's
//! namespace), replaced by a fresh one every few lookups, so its chains stay short. Where
//! the kernel refuses (no new mount API, or a user namespace that may not mount procfs),
//! `/proc/sys` is used as before.

use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};

use nix::fcntl::{OFlag, openat};
use nix::libc;
use nix::sys::stat::Mode;

/// Lookups a procfs instance serves before a fresh one replaces it.
const FRESH_EVERY: usize = 32;

const FSOPEN_CLOEXEC: libc::c_uint = 1;
const FSCONFIG_CMD_CREATE: libc::c_uint = 6;
const FSMOUNT_CLOEXEC: libc::c_uint = 1;

/// The procfs instance in use and the lookups it has served.
enum Instance {
    None,
    Mounted(Arc<OwnedFd>, usize),
    /// The kernel would not make one: every lookup goes through /proc.
    Refused,
}

static INSTANCE: Mutex<Instance> = Mutex::new(Instance::None);

/// Writes `value` to the sysctl at `path` (relative to /proc/sys, as `net/ipv4/ip_forward`).
pub(crate) fn write(path: &str, value: &str) -> io::Result<()> {
    open(path, OFlag::O_WRONLY)?.write_all(value.as_bytes())
}

pub(crate) fn read(path: &str) -> io::Result<String> {
    let mut text = String::new();
    open(path, OFlag::O_RDONLY)?.read_to_string(&mut text)?;
    Ok(text)
}

/// The names in the sysctl directory at `path`.
pub(crate) fn list(path: &str) -> io::Result<Vec<String>> {
    // Rare (IPv6 turned on): listing through /proc costs one walk, not one per entry.
    fs::read_dir(Path::new("/proc/sys").join(path))?
        .map(|entry| Ok(entry?.file_name().to_string_lossy().into_owned()))
        .collect()
}

fn open(path: &str, flags: OFlag) -> io::Result<File> {
    let relative = PathBuf::from("sys").join(path);
    let opened = instance().map(|proc| {
        openat(&*proc, &relative, flags | OFlag::O_CLOEXEC, Mode::empty()).map_err(io::Error::from)
    });
    match opened {
        // Not allowed through an instance of vpcsh's own (a procfs mounted with other
        // options, as in some user namespaces) is still allowed through /proc.
        Some(Err(e)) if e.kind() == io::ErrorKind::PermissionDenied => through_proc(&relative, flags),
        Some(file) => file.map(File::from),
        None => through_proc(&relative, flags),
    }
}

fn through_proc(relative: &Path, flags: OFlag) -> io::Result<File> {
    File::options()
        .read(flags == OFlag::O_RDONLY)
        .write(flags != OFlag::O_RDONLY)
        .open(Path::new("/proc").join(relative))
}

/// The procfs instance to look up through, a new one when there is none or it has served
/// enough; `None` where the kernel refuses one.
fn instance() -> Option<Arc<OwnedFd>> {
    let mut current = INSTANCE.lock().unwrap_or_else(PoisonError::into_inner);
    match &mut *current {
        Instance::Refused => return None,
        Instance::Mounted(proc, uses) if *uses < FRESH_EVERY => {
            *uses += 1;
            return Some(Arc::clone(proc));
        }
        _ => {}
    }
    match mount_proc() {
        Ok(proc) => {
            let proc = Arc::new(proc);
            *current = Instance::Mounted(Arc::clone(&proc), 1);
            Some(proc)
        }
        Err(e) => {
            tracing::debug!("no procfs instance of vpcsh's own ({e}): sysctls through /proc");
            *current = Instance::Refused;
            None
        }
    }
}

/// A new procfs instance, mounted nowhere: the returned descriptor is its root.
fn mount_proc() -> io::Result<OwnedFd> {
    let check = |r: libc::c_long| {
        if r < 0 { Err(io::Error::last_os_error()) } else { RawFd::try_from(r).map_err(io::Error::other) }
    };
    // SAFETY: fsopen takes a NUL-terminated name and flags, and returns a new descriptor,
    // owned from here on.
    let context = unsafe {
        OwnedFd::from_raw_fd(check(libc::syscall(libc::SYS_fsopen, c"proc".as_ptr(), FSOPEN_CLOEXEC))?)
    };
    // SAFETY: fsconfig's create command takes no key, value or auxiliary argument.
    check(unsafe {
        libc::syscall(
            libc::SYS_fsconfig,
            context.as_raw_fd(),
            FSCONFIG_CMD_CREATE,
            std::ptr::null::<libc::c_char>(),
            std::ptr::null::<libc::c_void>(),
            0,
        )
    })?;
    // SAFETY: fsmount turns the configured context into a detached mount and returns a new
    // descriptor, owned from here on.
    Ok(unsafe {
        OwnedFd::from_raw_fd(check(libc::syscall(
            libc::SYS_fsmount,
            context.as_raw_fd(),
            FSMOUNT_CLOEXEC,
            0,
        ))?)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Read through vpcsh's own procfs instances (a fresh one after `FRESH_EVERY`), a
    /// sysctl says what /proc says.
    #[test]
    fn reads_what_proc_reads() {
        let path = "net/core/somaxconn";
        let expected = fs::read_to_string(Path::new("/proc/sys").join(path)).unwrap();
        for _ in 0..FRESH_EVERY + 2 {
            assert_eq!(read(path).unwrap(), expected);
        }
        // Root of the machine may always mount procfs: there the instance must be in use.
        let machine_root = nix::unistd::geteuid().is_root()
            && fs::read_to_string("/proc/self/uid_map")
                .is_ok_and(|m| m.split_whitespace().eq(["0", "0", "4294967295"]));
        if machine_root {
            let used = matches!(*INSTANCE.lock().unwrap(), Instance::Mounted(..));
            assert!(used, "sysctls went through /proc");
        }
    }
}
