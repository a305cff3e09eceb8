//! Deleted namespaces are taken apart in the background: the names go at once, a reaper
//! holds the namespaces while it deletes their devices a few at a time, then nothing is left
//! — also when the reaper is killed.

use std::collections::BTreeSet;
use std::fs;
use std::os::unix::fs::MetadataExt;
use std::time::{Duration, Instant};

use crate::common::{Sandbox, ping};

/// One VPC of `n` subnets, a host in each: enough namespaces for a reaper.
fn subnets(n: usize) -> String {
    let mut script = "let v = vpc(\"v\", \"10.40.0.0/16\");\n".to_string();
    for i in 1..=n {
        script += &format!("v.subnet(\"s{i}\", \"10.40.{i}.0/24\", #{{ public: true }}).host(\"h{i}\");\n");
    }
    script
}

/// The kernel's identities of the sandbox's namespaces: device (the namespace filesystem)
/// and inode.
fn inodes(sb: &Sandbox) -> BTreeSet<(u64, u64)> {
    let stat = |ns: &String| fs::metadata(format!("/run/netns/{ns}")).ok();
    sb.namespaces().iter().filter_map(stat).map(|m| (m.dev(), m.ino())).collect()
}

/// The processes holding one of `namespaces` open, each with the descriptor of one of them.
fn holders(namespaces: &BTreeSet<(u64, u64)>) -> Vec<(i32, String)> {
    let mut out = Vec::new();
    let Ok(procs) = fs::read_dir("/proc") else { return out };
    for p in procs.flatten() {
        let Some(pid) = p.file_name().to_str().and_then(|s| s.parse::<i32>().ok()) else { continue };
        let Ok(fds) = fs::read_dir(p.path().join("fd")) else { continue };
        // A descriptor of a namespace file stats as the namespace itself.
        let held = fds
            .flatten()
            .find(|fd| fs::metadata(fd.path()).is_ok_and(|m| namespaces.contains(&(m.dev(), m.ino()))));
        if let Some(fd) = held {
            out.push((pid, fd.path().display().to_string()));
        }
    }
    out
}

fn cmdline(pid: i32) -> String {
    fs::read(format!("/proc/{pid}/cmdline"))
        .map(|b| String::from_utf8_lossy(&b).replace('\0', " "))
        .unwrap_or_default()
}

/// Waits until no process holds any of `namespaces`.
fn wait_released(namespaces: &BTreeSet<(u64, u64)>) -> Vec<(i32, String)> {
    let deadline = Instant::now() + Duration::from_secs(180);
    loop {
        let left = holders(namespaces);
        if left.is_empty() || Instant::now() > deadline {
            return left;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn a_large_destroy_frees_the_names_at_once_and_its_reaper_leaves_nothing() {
    let sb = Sandbox::new("reap");
    let script = subnets(40);
    sb.apply(&script);
    let doomed = inodes(&sb);
    assert!(doomed.len() > 30, "{doomed:?}");
    let run = sb.run(&["destroy"]);
    assert_eq!(run.code, 0, "{run:?}");
    assert_eq!(sb.namespaces(), Vec::<String>::new(), "the names go at once");

    let held = holders(&doomed);
    let reaper = held.iter().find(|(pid, _)| cmdline(*pid).contains("__reap"));
    assert!(reaper.is_some(), "a reaper holds the deleted namespaces: {held:?}");
    assert!(held.iter().all(|(pid, _)| cmdline(*pid).contains("__reap")), "only the reaper: {held:?}");

    // A bring-up right after a destroy goes ahead while the reaper works.
    sb.apply(&script);
    assert!(ping(&sb.ns("v.h1"), "10.40.40.2"), "the new network routes");

    let left = wait_released(&doomed);
    assert!(left.is_empty(), "the reaper let go of everything: {left:?}");
}

#[test]
fn a_killed_reaper_leaves_nothing_either() {
    let sb = Sandbox::new("reapkill");
    sb.apply(&subnets(40));
    let doomed = inodes(&sb);
    assert_eq!(sb.run(&["destroy"]).code, 0);
    let held = holders(&doomed);
    let reapers: BTreeSet<i32> =
        held.iter().map(|(pid, _)| *pid).filter(|pid| cmdline(*pid).contains("__reap")).collect();
    assert_eq!(reapers.len(), 1, "{held:?}");
    // The reaper this test's destroy started, by its pid.
    for pid in &reapers {
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(*pid), nix::sys::signal::Signal::SIGKILL).unwrap();
    }
    let left = wait_released(&doomed);
    assert!(left.is_empty(), "killed, it holds nothing: {left:?}");
    let mounts = fs::read_to_string("/proc/self/mountinfo").unwrap();
    assert!(!mounts.contains(&format!("/run/netns/{}", sb.name)), "no namespace mount is left");
}
