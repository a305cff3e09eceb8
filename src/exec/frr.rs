//! FRR's daemons as processes vpcsh owns: each node's zebra and bgpd, with their files in a
//! directory of their own so that several nodes (sandboxes) share one machine.

use std::collections::BTreeMap;
use std::fs;
use std::io;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use super::netns::RUNTIME_DIR;
use crate::plan::kernel::RoutingDaemon;

/// Where Debian's (and most distributions') FRR package puts its daemons.
const DAEMONS: &str = "/usr/lib/frr";
/// The user FRR's package makes; its daemons drop to it, and only it may use their sockets.
const USER: &str = "frr";

/// Why FRR cannot run here, if it cannot.
pub(crate) fn missing() -> Option<String> {
    runs_as().err()
}

/// The user FRR's daemons run as, or why FRR cannot run here.
fn runs_as() -> Result<nix::unistd::User, String> {
    let daemons = [RoutingDaemon::Zebra, RoutingDaemon::Bgpd];
    if let Some(absent) = daemons.iter().map(|d| daemon_path(*d)).find(|p| !p.exists()) {
        return Err(format!("FRR is not installed ({} is missing)", absent.display()));
    }
    let Some(user) = nix::unistd::User::from_name(USER).ok().flatten() else {
        return Err(format!("FRR's user `{USER}` does not exist"));
    };
    if !mapped(user.uid.as_raw()) {
        return Err(format!("FRR's user `{USER}` does not exist in this user namespace (rootless vpcsh)"));
    }
    Ok(user)
}

/// Whether a user id exists in the user namespace vpcsh runs in.
fn mapped(uid: u32) -> bool {
    let Ok(map) = fs::read_to_string("/proc/self/uid_map") else { return true };
    map.lines().any(|line| {
        let f: Vec<u64> = line.split_whitespace().filter_map(|x| x.parse().ok()).collect();
        f.len() == 3 && (f[0]..f[0] + f[2]).contains(&u64::from(uid))
    })
}

fn daemon_path(daemon: RoutingDaemon) -> PathBuf {
    Path::new(DAEMONS).join(daemon.name())
}

/// The directory of one namespace's FRR: configuration, pid files and sockets (its vtysh
/// answers with `vtysh --vty_socket DIR`).
pub(crate) fn run_dir(ns: &str) -> PathBuf {
    Path::new(RUNTIME_DIR).join("frr").join(ns)
}

/// Writes a daemon's configuration and returns its command line: in the foreground (vpcsh
/// supervises it), no TCP vty, logging to its standard output.
pub(super) fn command(ns: &str, daemon: RoutingDaemon, config: &str) -> io::Result<Vec<String>> {
    let user = runs_as()
        .map_err(|why| io::Error::new(io::ErrorKind::NotFound, format!("{why}: `apt-get install frr`")))?;
    let dir = run_dir(ns);
    fs::create_dir_all(&dir)?;
    nix::unistd::chown(&dir, Some(user.uid), Some(user.gid))?;
    fs::set_permissions(&dir, fs::Permissions::from_mode(0o750))?;
    let conf = dir.join(format!("{}.conf", daemon.name()));
    fs::write(&conf, config)?;
    nix::unistd::chown(&conf, Some(user.uid), Some(user.gid))?;
    let path = |name: &str| dir.join(name).display().to_string();
    // bgpd that finds no zebra socket tries again only 10 s later: it waits for zebra's
    // socket first (both start together), for up to 5 s.
    let wait_for_zebra = match daemon {
        RoutingDaemon::Bgpd => vec![
            "/bin/sh".into(),
            "-c".into(),
            r#"i=0; while [ ! -S "$1" ] && [ $i -lt 100 ]; do sleep 0.05; i=$((i+1)); done; shift; exec "$@""#.into(),
            "sh".into(),
            path("zserv.api"),
        ],
        RoutingDaemon::Zebra => Vec::new(),
    };
    Ok(wait_for_zebra
        .into_iter()
        .chain([
            daemon_path(daemon).display().to_string(),
            "-f".into(),
            conf.display().to_string(),
            "-i".into(),
            path(&format!("{}.pid", daemon.name())),
            "-z".into(),
            path("zserv.api"),
            "--vty_socket".into(),
            dir.display().to_string(),
            "-u".into(),
            USER.into(),
            "-g".into(),
            USER.into(),
            "-A".into(),
            "127.0.0.1".into(),
            "-P".into(),
            "0".into(),
        ])
        .collect())
}

/// One BGP neighbour as a node's bgpd sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct BgpPeer {
    /// `Established`, or where the session is stuck (`Connect`, `Active`, ...).
    pub state: String,
    /// EVPN routes received from it.
    pub routes: u64,
    /// It has sent all it had (End-of-RIB for EVPN): what it advertises is all here.
    pub synced: bool,
}

/// The EVPN sessions of the FRR in namespace `ns`, by neighbour address, as its `vtysh`
/// reports them (`show bgp neighbors json`).
pub(crate) fn bgp_peers(ns: &str) -> io::Result<BTreeMap<String, BgpPeer>> {
    let out = Command::new("vtysh")
        .arg("--vty_socket")
        .arg(run_dir(ns))
        .args(["-c", "show bgp neighbors json"])
        .output()?;
    if !out.status.success() {
        return Err(io::Error::other(String::from_utf8_lossy(&out.stderr).trim().to_string()));
    }
    let neighbours: serde_json::Value =
        serde_json::from_slice(&out.stdout).map_err(|e| io::Error::other(format!("vtysh said: {e}")))?;
    let neighbours = neighbours.as_object().cloned().unwrap_or_default();
    Ok(neighbours
        .into_iter()
        .map(|(addr, n)| {
            let state = n["bgpState"].as_str().unwrap_or("unknown").to_string();
            let routes = n["addressFamilyInfo"]["l2VpnEvpn"]["acceptedPrefixCounter"].as_u64().unwrap_or(0);
            let synced = n["gracefulRestartInfo"]["endOfRibRecv"]["l2VpnEvpn"].as_bool().unwrap_or(false);
            (addr, BgpPeer { state, routes, synced })
        })
        .collect())
}
