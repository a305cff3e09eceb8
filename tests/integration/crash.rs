//! Crash safety, tested the way file systems are: vpcsh is killed (SIGKILL, no cleanup) right
//! after kernel operation N, for every N of an apply of a topology that uses every feature,
//! and of a destroy. After each crash the next run must finish the job: re-apply converges
//! (`status` all ok, packets right), destroy leaves no namespace, mount, process or state.
//!
//! `VPCSH_CAMPAIGN=1` adds a campaign of kills at random moments (`VPCSH_CAMPAIGN_KILLS`,
//! default 40), for a machine with time to spare.

use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use crate::common::*;

const EVERYTHING: &str = r#"
let prod = vpc("prod", "10.10.0.0/16", #{ ipv6: "fd10:10::/56" });
let web  = prod.subnet("web", "10.10.1.0/24", #{ public: true, ipv6: true });
let app  = prod.subnet("app", "10.10.2.0/24");
nat(app);
let w1 = web.host("w1");
let dev = vpc("dev", "10.20.0.0/16", #{ host_access: true });
let d1  = dev.subnet("s1", "10.20.1.0/24");
peer(prod, dev);
firewall(app, #{ ingress: [#{ proto: "tcp", port: 80, action: "allow" }] });
publish(w1, 80, 8080);
serve(w1, 80);
serve(app, 80);
run(d1, "sleep 1000");
"#;

/// The kernel operations a run did, from its `N created, N changed, N deleted` line.
fn operations(run: &Run) -> usize {
    let line = run.stdout.lines().last().unwrap_or_default();
    line.split(", ").filter_map(|part| part.split_whitespace().next()?.parse::<usize>().ok()).sum()
}

/// Whether some process's command line mentions `needle` (the sandbox's name or state dir).
fn processes_mentioning(needle: &str) -> Vec<String> {
    std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_str().is_some_and(|p| p.parse::<i64>().is_ok_and(running)))
        .filter_map(|e| std::fs::read(e.path().join("cmdline")).ok())
        .map(|c| String::from_utf8_lossy(&c).replace('\0', " "))
        .filter(|c| c.contains(needle))
        .collect()
}

/// After a crash: the next apply converges and the network works, checked from outside.
fn converges(sb: &Sandbox, script: &Path, crash_point: &str) {
    let again = sb.run(&["apply", script.to_str().unwrap()]);
    assert_eq!(again.code, 0, "{crash_point}: the next apply failed: {again:?}");
    let status = sb.run(&["status"]);
    assert_eq!(status.code, 0, "{crash_point}: status after the repair: {status:?}");
    assert!(
        status.stdout.lines().filter(|l| l.contains("process")).all(|l| l.starts_with("alive")),
        "{crash_point}: a process is not running: {status:?}"
    );
    let body = get(&sb.ns("internet"), "198.51.100.2", 8080, "/");
    assert_eq!(body.as_deref(), Some("prod/w1\n"), "{crash_point}: published port");
    let body = get(&sb.ns(""), "127.0.0.1", 8080, "/");
    assert_eq!(body.as_deref(), Some("prod/w1\n"), "{crash_point}: published port on the machine's loopback");
    let seen = get(&sb.ns("prod.w1"), "2001:db8::1", 80, "/ip");
    assert_eq!(seen.as_deref(), Some("fd10:10::2\n"), "{crash_point}: IPv6 to the internet");
    let seen = get(&sb.ns("prod.app"), "198.51.100.1", 80, "/ip");
    assert_eq!(seen.as_deref(), Some("198.51.100.2\n"), "{crash_point}: NAT egress");
    assert!(ping(&sb.ns("dev.s1"), "10.10.1.2"), "{crash_point}: peering");
}

/// After a destroy: nothing of the sandbox is left.
fn nothing_left(sb: &Sandbox, crash_point: &str) {
    assert_eq!(sb.namespaces(), Vec::<String>::new(), "{crash_point}: namespaces left");
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    assert!(!mounts.contains(&format!("/run/netns/{}", sb.name)), "{crash_point}: a namespace mount is left");
    let state_dir = sb.dir.0.join("sandbox").join(&sb.name);
    assert!(!state_dir.exists(), "{crash_point}: state left in {}", state_dir.display());
    for needle in [sb.name.as_str(), sb.dir.0.to_str().unwrap()] {
        assert_eq!(processes_mentioning(needle), Vec::<String>::new(), "{crash_point}: processes left");
    }
}

fn crash(sb: &Sandbox, args: &[&str], after: usize) -> Run {
    sb.cmd(args).env("VPCSH_CRASH_AFTER", after.to_string()).output().unwrap().into()
}

#[test]
fn every_crash_point_of_an_apply_is_finished_by_the_next_run() {
    let probe = Sandbox::new("crashcount");
    let script = probe.script(EVERYTHING);
    let total = operations(&probe.apply(EVERYTHING));
    assert!(total > 20, "the fixture makes {total} operations");
    for n in 1..=total {
        let sb = Sandbox::new("crash");
        let run = crash(&sb, &["apply", script.to_str().unwrap()], n);
        let point = format!("killed after operation {n} of {total}");
        assert_eq!(run.code, -1, "{point}: vpcsh was not killed: {run:?}");
        converges(&sb, &script, &point);
        let destroy = sb.run(&["destroy"]);
        assert_eq!(destroy.code, 0, "{point}: destroy: {destroy:?}");
        nothing_left(&sb, &point);
    }
}

#[test]
fn every_crash_point_of_a_destroy_is_finished_by_the_next_destroy() {
    let probe = Sandbox::new("crashdcount");
    probe.apply(EVERYTHING);
    let total = operations(&probe.run(&["destroy"]));
    assert!(total > 5, "destroy makes {total} operations");
    for n in 1..=total {
        let sb = Sandbox::new("crashd");
        sb.apply(EVERYTHING);
        let point = format!("destroy killed after operation {n} of {total}");
        let run = crash(&sb, &["destroy"], n);
        if n < total {
            assert_eq!(run.code, -1, "{point}: vpcsh was not killed: {run:?}");
        }
        let again = sb.run(&["destroy"]);
        assert_eq!(again.code, 0, "{point}: the next destroy failed: {again:?}");
        nothing_left(&sb, &point);
    }
}

/// Kills at random moments of an apply (a seeded generator, so a failure can be replayed
/// with `VPCSH_CAMPAIGN_SEED`), each followed by the checks above.
#[test]
fn random_kills_campaign() {
    if std::env::var_os("VPCSH_CAMPAIGN").is_none() {
        return;
    }
    let kills: usize = std::env::var("VPCSH_CAMPAIGN_KILLS").ok().and_then(|v| v.parse().ok()).unwrap_or(40);
    let mut seed: u64 = std::env::var("VPCSH_CAMPAIGN_SEED").ok().and_then(|v| v.parse().ok()).unwrap_or(7);
    let mut next = move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    // Kill moments spread over how long a whole apply takes here.
    let probe = Sandbox::new("campaigntime");
    let started = Instant::now();
    probe.apply(EVERYTHING);
    let whole = started.elapsed().as_micros() as u64;
    let mut killed = 0;
    for round in 0..kills {
        let sb = Sandbox::new("campaign");
        let script = sb.script(EVERYTHING);
        let delay = Duration::from_micros(next() % whole);
        let mut child = sb.cmd(&["apply", script.to_str().unwrap()]).stdout(Stdio::null()).spawn().unwrap();
        let started = Instant::now();
        while started.elapsed() < delay && child.try_wait().unwrap().is_none() {
            std::thread::sleep(Duration::from_micros(500));
        }
        if child.try_wait().unwrap().is_none() {
            killed += 1;
        }
        let _ = child.kill();
        let _ = child.wait();
        let point = format!("campaign kill {round} after {delay:?}");
        converges(&sb, &script, &point);
        assert_eq!(sb.run(&["destroy"]).code, 0, "{point}");
        nothing_left(&sb, &point);
    }
    eprintln!("campaign: {killed} of {kills} applies killed mid-way, every one finished by the next run");
    assert!(killed * 2 > kills, "most kills should land inside an apply: {killed} of {kills}");
}

/// A namespace has its name only once it is set up as made: killed the moment the host's
/// namespace is named, the next apply finds it without duplicate address detection (which
/// it cannot see, and which would hold the host's IPv6 back a second or two after every
/// device the repair makes).
#[test]
fn a_namespace_killed_as_it_is_named_is_already_set_up() {
    let sb = Sandbox::new("crashnamed");
    let script = sb.script(EVERYTHING);
    let w1 = sb.ns("prod.w1");
    let run: Run = sb
        .cmd(&["apply", script.to_str().unwrap()])
        .env("VPCSH_CRASH_WHEN_NAMED", &w1)
        .output()
        .unwrap()
        .into();
    assert_eq!(run.code, -1, "vpcsh was not killed: {run:?}");
    assert!(sb.namespaces().contains(&w1), "the namespace was not named: {:?}", sb.namespaces());
    let sysctl = |key: &str| in_ns(&w1, &["sysctl", "-n", key]).stdout.trim().to_string();
    assert_eq!(sysctl("net.ipv6.conf.default.accept_dad"), "0", "named before it was set up");
    assert_eq!(sysctl("net.ipv6.conf.all.disable_ipv6"), "0");
    converges(&sb, &script, "killed as a namespace was named");
    assert_eq!(sysctl("net.ipv6.conf.eth0.accept_dad"), "0", "the repair's device does address detection");
    assert_eq!(sb.run(&["destroy"]).code, 0);
    nothing_left(&sb, "killed as a namespace was named");
}

#[test]
fn a_namespace_file_with_nothing_mounted_is_no_namespace() {
    // What a run killed between creating a namespace's file and mounting onto it leaves.
    let sb = Sandbox::new("stale");
    let script = sb.script(EVERYTHING);
    sb.apply(EVERYTHING);
    let w1 = format!("/run/netns/{}", sb.ns("prod.w1"));
    let out = std::process::Command::new("umount").arg("--lazy").arg(&w1).output().unwrap();
    assert!(out.status.success(), "{out:?}");
    assert!(Path::new(&w1).exists(), "the bare file stays");
    let status = sb.run(&["status"]);
    assert_eq!(status.code, 1, "{status:?}");
    assert!(status.stdout.contains("missing  host prod/w1"), "{status:?}");
    converges(&sb, &script, "after a bare namespace file");
    assert_eq!(sb.run(&["destroy"]).code, 0);
    nothing_left(&sb, "after a bare namespace file");
}

#[test]
fn a_server_whose_namespace_was_deleted_by_hand_is_replaced_not_doubled() {
    let sb = Sandbox::new("nsdel");
    let script = sb.script(EVERYTHING);
    sb.apply(EVERYTHING);
    let w1 = sb.ns("prod.w1");
    // The servers themselves, not the shells that started them.
    let servers = || -> Vec<String> {
        processes_mentioning(&format!("__serve --netns {w1} "))
            .into_iter()
            .filter(|c| !c.starts_with("/bin/sh"))
            .collect()
    };
    assert_eq!(servers().len(), 1, "{:?}", servers());
    let out = std::process::Command::new("ip").args(["netns", "delete", &w1]).output().unwrap();
    assert!(out.status.success(), "{out:?}");
    let status = sb.run(&["status"]);
    assert!(
        status.stdout.contains(&format!("orphaned process http server on port 80 in {w1}")),
        "{status:?}"
    );
    converges(&sb, &script, "after ip netns delete");
    assert_eq!(servers().len(), 1, "one server for prod/w1, in its new namespace: {:?}", servers());
}
