//! iptables-legacy (x_tables, not nftables): read, never written. Its filter table's
//! `FORWARD` policy is read with the getsockopt calls `iptables-legacy -L` makes; vpcsh
//! cannot add rules there without replacing the whole table (which would race the tool
//! that owns it), so a dropping legacy `FORWARD` is reported as blocking, with the two
//! rules a user can add, unless rules like them are already there.

use std::collections::BTreeMap;
use std::io;
use std::os::fd::AsRawFd;

use nix::libc;
use nix::sys::socket::{AddressFamily, SockFlag, SockProtocol, SockType, socket};

use crate::plan::kernel::ForeignChain;
use crate::plan::naming::MACHINE_UPLINK_PREFIX;

// linux/netfilter_ipv4/ip_tables.h
const IPT_SO_GET_INFO: libc::c_int = 64;
const IPT_SO_GET_ENTRIES: libc::c_int = 65;
const TABLE_NAME_LEN: usize = 32;
const FORWARD: usize = 2;
/// `struct ipt_getinfo`: name, valid_hooks, hook_entry[5], underflow[5], num_entries, size.
const INFO_LEN: usize = TABLE_NAME_LEN + 4 + 20 + 20 + 4 + 4;
/// Where `struct ipt_get_entries` starts its entries (after name and size, 8-aligned).
const ENTRIES_AT: usize = 40;
// Offsets in `struct ipt_entry` and its standard target.
const INIFACE: usize = 16;
const OUTIFACE: usize = 32;
const INIFACE_MASK: usize = 48;
const OUTIFACE_MASK: usize = 64;
const TARGET_OFFSET: usize = 88;
const NEXT_OFFSET: usize = 90;
const VERDICT_IN_TARGET: usize = 32;
/// A standard target's verdicts: `-NF_DROP - 1` and `-NF_ACCEPT - 1`.
const DROP: i32 = -1;
const ACCEPT: i32 = -2;

/// The legacy filter table's `FORWARD`, when its policy drops, with whether accept rules
/// for vpcsh's uplinks (both ways) are in the table. Run in the namespace to read.
pub(crate) fn forward_chain() -> io::Result<BTreeMap<ForeignChain, bool>> {
    // Asking for a table that is not there would make the kernel create it: look first.
    let names = std::fs::read_to_string("/proc/thread-self/net/ip_tables_names").unwrap_or_default();
    if !names.lines().any(|l| l == "filter") {
        return Ok(BTreeMap::new());
    }
    let sock = socket(AddressFamily::Inet, SockType::Raw, SockFlag::SOCK_CLOEXEC, SockProtocol::Raw)?;
    let mut info = [0u8; INFO_LEN];
    info[..6].copy_from_slice(b"filter");
    get(sock.as_raw_fd(), IPT_SO_GET_INFO, &mut info)?;
    let word = |b: &[u8], at: usize| u32::from_ne_bytes(b[at..at + 4].try_into().expect("4 bytes")) as usize;
    let hook_entry = word(&info, TABLE_NAME_LEN + 4 + 4 * FORWARD);
    let underflow = word(&info, TABLE_NAME_LEN + 4 + 20 + 4 * FORWARD);
    let size = word(&info, INFO_LEN - 4);
    let mut entries = vec![0u8; ENTRIES_AT + size];
    entries[..6].copy_from_slice(b"filter");
    entries[TABLE_NAME_LEN..TABLE_NAME_LEN + 4].copy_from_slice(&(size as u32).to_ne_bytes());
    get(sock.as_raw_fd(), IPT_SO_GET_ENTRIES, &mut entries)?;
    let table = &entries[ENTRIES_AT..];
    if verdict(table, underflow) != Some(DROP) {
        return Ok(BTreeMap::new());
    }
    let (mut from_uplinks, mut to_uplinks) = (false, false);
    let mut at = hook_entry;
    while at < underflow {
        if verdict(table, at) == Some(ACCEPT) {
            from_uplinks |= uplink_match(table, at, INIFACE, INIFACE_MASK);
            to_uplinks |= uplink_match(table, at, OUTIFACE, OUTIFACE_MASK);
        }
        let next = u16::from_ne_bytes([table[at + NEXT_OFFSET], table[at + NEXT_OFFSET + 1]]) as usize;
        if next == 0 {
            break;
        }
        at += next;
    }
    let chain = ForeignChain {
        family: "iptables-legacy".into(),
        table: "filter".into(),
        chain: "FORWARD".into(),
        rules_in: "FORWARD".into(),
        writable: false,
    };
    Ok(BTreeMap::from([(chain, from_uplinks && to_uplinks)]))
}

/// The standard verdict of the entry at `at`, if its target is the standard one.
fn verdict(table: &[u8], at: usize) -> Option<i32> {
    let target = at
        + usize::from(u16::from_ne_bytes([*table.get(at + TARGET_OFFSET)?, table[at + TARGET_OFFSET + 1]]));
    let name = table.get(target + 2..target + 31)?;
    if name.iter().any(|b| *b != 0) {
        return None;
    }
    let v = table.get(target + VERDICT_IN_TARGET..target + VERDICT_IN_TARGET + 4)?;
    Some(i32::from_ne_bytes(v.try_into().ok()?))
}

/// Whether an entry matches exactly the interfaces `vpc-+` in the given direction.
fn uplink_match(table: &[u8], at: usize, iface: usize, mask: usize) -> bool {
    let prefix = MACHINE_UPLINK_PREFIX.as_bytes();
    let name = &table[at + iface..at + iface + 16];
    let bits = &table[at + mask..at + mask + 16];
    name.starts_with(prefix) && bits[..prefix.len()].iter().all(|b| *b == 0xff) && bits[prefix.len()] == 0
}

fn get(fd: i32, option: libc::c_int, buf: &mut [u8]) -> io::Result<()> {
    let mut len = buf.len() as libc::socklen_t;
    // SAFETY: `buf` is valid for `len` bytes, and the kernel writes at most that many.
    let rc = unsafe { libc::getsockopt(fd, libc::IPPROTO_IP, option, buf.as_mut_ptr().cast(), &mut len) };
    if rc == 0 { Ok(()) } else { Err(io::Error::last_os_error()) }
}
