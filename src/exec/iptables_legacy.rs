//! iptables-legacy (x_tables, not nftables), done the way `iptables-legacy` itself does
//! it, with no child process: under the xtables lock, read the filter table with the
//! getsockopt calls `iptables -L` makes, insert or remove vpcsh's two entries at the top of
//! `FORWARD` (commented `vpcsh: …`), move every offset after them, and replace the table
//! in one setsockopt, which the kernel refuses if the table changed meanwhile. The other
//! entries' packet counters are put back afterwards, as `iptables` does.

use std::collections::BTreeMap;
use std::fs::OpenOptions;
use std::io;
use std::os::fd::AsRawFd;

use nix::fcntl::{Flock, FlockArg};
use nix::libc;
use nix::sys::socket::{AddressFamily, SockFlag, SockProtocol, SockType, socket};

use crate::plan::kernel::ForeignChain;
use crate::plan::naming::MACHINE_UPLINK_PREFIX;

// linux/netfilter_ipv4/ip_tables.h and linux/netfilter/x_tables.h
const IPT_SO_SET_REPLACE: libc::c_int = 64;
const IPT_SO_SET_ADD_COUNTERS: libc::c_int = 65;
const IPT_SO_GET_INFO: libc::c_int = 64;
const IPT_SO_GET_ENTRIES: libc::c_int = 65;
const NAME_LEN: usize = 32;
const HOOKS: usize = 5;
const FORWARD: usize = 2;
/// `struct ipt_getinfo`: name, valid_hooks, hook_entry[5], underflow[5], num_entries, size.
const INFO_LEN: usize = NAME_LEN + 4 + 4 * HOOKS * 2 + 4 + 4;
/// Where `struct ipt_get_entries` and `struct xt_counters_info` start their arrays.
const ARRAY_AT: usize = 40;
/// Where `struct ipt_replace` starts its entries (after the counters pointer).
const REPLACE_ENTRIES_AT: usize = 96;
// `struct ipt_entry`
const INIFACE: usize = 16;
const OUTIFACE: usize = 32;
const INIFACE_MASK: usize = 48;
const OUTIFACE_MASK: usize = 64;
const TARGET_OFFSET: usize = 88;
const NEXT_OFFSET: usize = 90;
const ENTRY_LEN: usize = 112;
/// `struct xt_entry_match` or `xt_entry_target`: size, name[29], revision; then data.
const EXTENSION_HEADER: usize = 32;
const COMMENT_LEN: usize = 256;
const STANDARD_TARGET_LEN: usize = 40;
const COUNTERS_LEN: usize = 16;
/// A standard target's verdicts: `-NF_DROP - 1` and `-NF_ACCEPT - 1`; a jump is an offset.
const DROP: i32 = -1;
const ACCEPT: i32 = -2;
const COMMENT_PREFIX: &str = "vpcsh: ";
const XTABLES_LOCK: &str = "/run/xtables.lock";
/// How `ForeignChain` names this backend.
pub(crate) const FAMILY: &str = "iptables-legacy";

/// The filter table as the kernel hands it out.
struct Table {
    valid_hooks: u32,
    hook_entry: [usize; HOOKS],
    underflow: [usize; HOOKS],
    /// Each entry's offset and bytes, in order.
    entries: Vec<(usize, Vec<u8>)>,
}

/// The legacy filter table's `FORWARD` when its policy drops, with whether vpcsh's entries
/// are in it. Run in the namespace to read.
pub(crate) fn forward_chain() -> io::Result<BTreeMap<ForeignChain, bool>> {
    // Asking for a table that is not there would make the kernel create it: look first.
    let names = std::fs::read_to_string("/proc/thread-self/net/ip_tables_names").unwrap_or_default();
    if !names.lines().any(|l| l == "filter") {
        return Ok(BTreeMap::new());
    }
    let sock = raw_socket()?;
    let table = read(sock.as_raw_fd())?;
    let policy = table.entries.iter().find(|(at, _)| *at == table.underflow[FORWARD]);
    if policy.and_then(|(_, e)| verdict(e)) != Some(DROP) {
        return Ok(BTreeMap::new());
    }
    let ours = table.entries.iter().filter(|(_, e)| is_ours(e)).count();
    let chain = ForeignChain {
        family: FAMILY.into(),
        table: "filter".into(),
        chain: "FORWARD".into(),
        rules_in: "FORWARD".into(),
        writable: true,
    };
    Ok(BTreeMap::from([(chain, ours == 2)]))
}

/// Puts vpcsh's two entries at the top of `FORWARD` (replacing any of them already there).
pub(crate) fn open() -> io::Result<()> {
    edit(true)
}

/// Takes vpcsh's entries out of the filter table.
pub(crate) fn close() -> io::Result<()> {
    edit(false)
}

fn edit(insert: bool) -> io::Result<()> {
    let lock = OpenOptions::new().create(true).truncate(false).write(true).open(XTABLES_LOCK)?;
    let _lock = Flock::lock(lock, FlockArg::LockExclusive).map_err(|(_, e)| io::Error::from(e))?;
    let sock = raw_socket()?;
    let old = read(sock.as_raw_fd())?;
    let mut entries: Vec<(Option<usize>, Vec<u8>)> = Vec::new();
    for (at, bytes) in &old.entries {
        if insert && *at == old.hook_entry[FORWARD] {
            entries.push((None, passage_entry(INIFACE, INIFACE_MASK, "from its uplinks")));
            entries.push((None, passage_entry(OUTIFACE, OUTIFACE_MASK, "to its uplinks")));
        }
        if !is_ours(bytes) {
            entries.push((Some(*at), bytes.clone()));
        }
    }
    // Old offsets to new ones; a removed entry's is its successor's.
    let mut new_at = Vec::with_capacity(entries.len());
    let mut at = 0;
    for (_, bytes) in &entries {
        new_at.push(at);
        at += bytes.len();
    }
    let size = at;
    let moved = |old_at: usize| -> usize {
        entries
            .iter()
            .zip(&new_at)
            .find(|((o, _), _)| o.is_some_and(|o| o >= old_at))
            .map_or(size, |(_, n)| *n)
    };
    let mut hook_entry = old.hook_entry.map(&moved);
    let underflow = old.underflow.map(&moved);
    if insert {
        hook_entry[FORWARD] = new_at[entries.iter().position(|(o, _)| o.is_none()).unwrap_or_default()];
    }
    let mut blob = Vec::with_capacity(size);
    for (_, bytes) in &entries {
        let mut e = bytes.clone();
        if let Some(jump) = verdict(&e).filter(|v| *v > 0) {
            set_verdict(&mut e, moved(jump as usize) as i32);
        }
        blob.extend_from_slice(&e);
    }
    let mut old_counters = vec![0u8; old.entries.len() * COUNTERS_LEN];
    replace(sock.as_raw_fd(), &old, (hook_entry, underflow), (&blob, entries.len()), &mut old_counters)?;
    // The kernel zeroed every counter; give the kept entries theirs back.
    let mut counters = vec![0u8; ARRAY_AT + entries.len() * COUNTERS_LEN];
    counters[..6].copy_from_slice(b"filter");
    counters[NAME_LEN..NAME_LEN + 4].copy_from_slice(&(entries.len() as u32).to_ne_bytes());
    for (i, (old_at, _)) in entries.iter().enumerate() {
        let Some(j) = old_at.and_then(|o| old.entries.iter().position(|(at, _)| *at == o)) else { continue };
        let to = ARRAY_AT + i * COUNTERS_LEN;
        counters[to..to + COUNTERS_LEN]
            .copy_from_slice(&old_counters[j * COUNTERS_LEN..(j + 1) * COUNTERS_LEN]);
    }
    set(sock.as_raw_fd(), IPT_SO_SET_ADD_COUNTERS, &counters)
}

/// `-i vpc-+` (or `-o`) `-m comment --comment "vpcsh: …" -j ACCEPT`.
fn passage_entry(iface: usize, mask: usize, what: &str) -> Vec<u8> {
    let prefix = MACHINE_UPLINK_PREFIX.as_bytes();
    let comment_match = EXTENSION_HEADER + COMMENT_LEN;
    let len = ENTRY_LEN + comment_match + STANDARD_TARGET_LEN;
    let mut e = vec![0u8; len];
    e[iface..iface + prefix.len()].copy_from_slice(prefix);
    e[mask..mask + prefix.len()].fill(0xff);
    e[TARGET_OFFSET..TARGET_OFFSET + 2].copy_from_slice(&((ENTRY_LEN + comment_match) as u16).to_ne_bytes());
    e[NEXT_OFFSET..NEXT_OFFSET + 2].copy_from_slice(&(len as u16).to_ne_bytes());
    let m = ENTRY_LEN;
    e[m..m + 2].copy_from_slice(&(comment_match as u16).to_ne_bytes());
    e[m + 2..m + 2 + 7].copy_from_slice(b"comment");
    let comment = format!("{COMMENT_PREFIX}{what}");
    e[m + EXTENSION_HEADER..m + EXTENSION_HEADER + comment.len()].copy_from_slice(comment.as_bytes());
    let t = ENTRY_LEN + comment_match;
    e[t..t + 2].copy_from_slice(&(STANDARD_TARGET_LEN as u16).to_ne_bytes());
    set_verdict(&mut e, ACCEPT);
    e
}

/// Whether an entry is one of vpcsh's: its first match is a comment starting `vpcsh: `.
fn is_ours(e: &[u8]) -> bool {
    let target = usize::from(u16::from_ne_bytes([e[TARGET_OFFSET], e[TARGET_OFFSET + 1]]));
    if target < ENTRY_LEN + EXTENSION_HEADER + COMMENT_PREFIX.len() {
        return false;
    }
    let m = ENTRY_LEN;
    e[m + 2..m + 2 + 8] == *b"comment\0" && e[m + EXTENSION_HEADER..].starts_with(COMMENT_PREFIX.as_bytes())
}

/// The standard verdict of an entry, if its target is the standard one.
fn verdict(e: &[u8]) -> Option<i32> {
    let t = usize::from(u16::from_ne_bytes([*e.get(TARGET_OFFSET)?, *e.get(TARGET_OFFSET + 1)?]));
    if e.get(t + 2..t + 31)?.iter().any(|b| *b != 0) {
        return None;
    }
    Some(i32::from_ne_bytes(e.get(t + EXTENSION_HEADER..t + EXTENSION_HEADER + 4)?.try_into().ok()?))
}

fn set_verdict(e: &mut [u8], v: i32) {
    let t = usize::from(u16::from_ne_bytes([e[TARGET_OFFSET], e[TARGET_OFFSET + 1]]));
    e[t + EXTENSION_HEADER..t + EXTENSION_HEADER + 4].copy_from_slice(&v.to_ne_bytes());
}

fn raw_socket() -> io::Result<std::os::fd::OwnedFd> {
    Ok(socket(AddressFamily::Inet, SockType::Raw, SockFlag::SOCK_CLOEXEC, SockProtocol::Raw)?)
}

fn word(b: &[u8], at: usize) -> usize {
    u32::from_ne_bytes(b[at..at + 4].try_into().expect("4 bytes")) as usize
}

fn read(fd: i32) -> io::Result<Table> {
    let mut info = [0u8; INFO_LEN];
    info[..6].copy_from_slice(b"filter");
    get(fd, IPT_SO_GET_INFO, &mut info)?;
    let hooks = |from: usize| -> [usize; HOOKS] { std::array::from_fn(|h| word(&info, from + 4 * h)) };
    let (hook_entry, underflow) = (hooks(NAME_LEN + 4), hooks(NAME_LEN + 4 + 4 * HOOKS));
    let size = word(&info, INFO_LEN - 4);
    let mut buf = vec![0u8; ARRAY_AT + size];
    buf[..6].copy_from_slice(b"filter");
    buf[NAME_LEN..NAME_LEN + 4].copy_from_slice(&(size as u32).to_ne_bytes());
    get(fd, IPT_SO_GET_ENTRIES, &mut buf)?;
    let blob = &buf[ARRAY_AT..];
    let mut entries = Vec::new();
    let mut at = 0;
    while at < blob.len() {
        let next = usize::from(u16::from_ne_bytes([blob[at + NEXT_OFFSET], blob[at + NEXT_OFFSET + 1]]));
        if next < ENTRY_LEN || at + next > blob.len() {
            return Err(io::Error::other("the legacy filter table does not parse"));
        }
        entries.push((at, blob[at..at + next].to_vec()));
        at += next;
    }
    Ok(Table { valid_hooks: word(&info, NAME_LEN) as u32, hook_entry, underflow, entries })
}

/// `IPT_SO_SET_REPLACE` with the new entries; `old_counters` receives the old ones.
fn replace(
    fd: i32,
    old: &Table,
    (hook_entry, underflow): ([usize; HOOKS], [usize; HOOKS]),
    (blob, count): (&[u8], usize),
    old_counters: &mut [u8],
) -> io::Result<()> {
    let mut r = vec![0u8; REPLACE_ENTRIES_AT + blob.len()];
    r[..6].copy_from_slice(b"filter");
    let mut put = |at: usize, v: usize| r[at..at + 4].copy_from_slice(&(v as u32).to_ne_bytes());
    put(NAME_LEN, old.valid_hooks as usize);
    put(NAME_LEN + 4, count);
    put(NAME_LEN + 8, blob.len());
    for h in 0..HOOKS {
        put(NAME_LEN + 12 + 4 * h, hook_entry[h]);
        put(NAME_LEN + 12 + 4 * HOOKS + 4 * h, underflow[h]);
    }
    put(NAME_LEN + 12 + 8 * HOOKS, old.entries.len());
    let pointer = old_counters.as_mut_ptr() as usize as u64;
    r[REPLACE_ENTRIES_AT - 8..REPLACE_ENTRIES_AT].copy_from_slice(&pointer.to_ne_bytes());
    r[REPLACE_ENTRIES_AT..].copy_from_slice(blob);
    set(fd, IPT_SO_SET_REPLACE, &r)
}

fn get(fd: i32, option: libc::c_int, buf: &mut [u8]) -> io::Result<()> {
    let mut len = buf.len() as libc::socklen_t;
    // SAFETY: `buf` is valid for `len` bytes, and the kernel writes at most that many.
    let rc = unsafe { libc::getsockopt(fd, libc::IPPROTO_IP, option, buf.as_mut_ptr().cast(), &mut len) };
    if rc == 0 { Ok(()) } else { Err(io::Error::last_os_error()) }
}

fn set(fd: i32, option: libc::c_int, buf: &[u8]) -> io::Result<()> {
    // SAFETY: `buf` is valid for its length; a replace also makes the kernel write the old
    // counters through the pointer inside it, to a buffer the caller keeps alive and sized.
    let rc = unsafe {
        libc::setsockopt(fd, libc::IPPROTO_IP, option, buf.as_ptr().cast(), buf.len() as libc::socklen_t)
    };
    if rc == 0 { Ok(()) } else { Err(io::Error::last_os_error()) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vpcsh_entries_are_recognised_and_accept() {
        let e = passage_entry(INIFACE, INIFACE_MASK, "from its uplinks");
        assert_eq!(e.len(), 440);
        assert!(is_ours(&e));
        assert_eq!(verdict(&e), Some(ACCEPT));
        assert_eq!(&e[INIFACE..INIFACE + 5], b"vpc-\0");
        assert_eq!(&e[INIFACE_MASK..INIFACE_MASK + 5], &[0xff, 0xff, 0xff, 0xff, 0]);
    }
}
