//! Workloads and probes against real namespaces, `vpcsh logs`, and `vpcsh test`.

use std::process::Stdio;
use std::time::{Duration, Instant};

use crate::common::*;

const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/test");

const TOPOLOGY: &str = prod_and!(
    r#"
let dev = vpc("dev", "10.20.0.0/16");
let d1 = dev.subnet("s1", "10.20.1.0/24");
"#
);

#[test]
fn every_effect_works_against_real_namespaces() {
    let sb = Sandbox::new("effects");
    let run = sb.apply(&format!(
        r#"{TOPOLOGY}
        let s = serve(w1, 80);
        assert(s.pid > 0, "serve has a pid");
        let r = run(db, "echo started; sleep 301");
        assert(r.pid > 0, "run has a pid");
        assert(ping(db, w1) && ping(db, web) && ping(w1, "10.10.3.2"), "inside the VPC");
        assert(!ping(d1, w1), "another VPC");
        assert(ping(w1, internet()) && !ping(db, internet()), "public and private");
        let h = http_get(db, `http://${{w1.ip}}/`);
        assert(h.status == 200 && h.body == "prod/w1\n", `serve answers ${{h}}`);
        assert(http_get(db, `http://${{w1.ip}}/ip`).body == "10.10.3.2\n", "the caller's address");
        assert(http_get(w1, "http://198.51.100.1/ip").body == "198.51.100.2\n", "translated");
        assert(http_get(d1, `http://${{w1.ip}}/`).status == 0, "status 0 when nothing answers");
        assert(connect(db, w1, 80) && !connect(db, w1, 81), "tcp");
        let e = exec(w1, "echo out; echo err >&2; exit 3");
        assert(e.code == 3 && e.stdout == "out\n" && e.stderr == "err\n", `exec ${{e}}`);
        let argv = exec(w1, ["printf", "%s|", "a b", "$HOME"]);
        assert(argv.stdout == "a b|$HOME|", `an argv is not a shell line: ${{argv}}`);
        let t = exec(w1, "sleep 123; echo never", #{{ timeout: 0.3 }});
        assert(t.code == 124 && t.stderr.contains("timed out"), `timeout ${{t}}`);
        assert(exec(internet(), "ip -4 -o addr").stdout.contains("198.51.100.1"), "exec in the internet");
        print("all effects ok");
        "#
    ));
    assert!(run.stdout.contains("all effects ok"), "{run:?}");
    // The timed-out command is gone, with the shell's child.
    assert!(!command_runs("sleep 123"), "a timed-out command kept running");
    // From outside vpcsh: the server answers, the process runs in the right namespace.
    assert_eq!(get(&sb.ns("prod.db"), "10.10.1.2", 80, "/").as_deref(), Some("prod/w1\n"));
    let status = sb.run(&["status", "--json"]);
    let json: serde_json::Value = serde_json::from_str(&status.stdout).unwrap();
    let processes = json["processes"].as_array().unwrap();
    let sleeper = processes.iter().find(|p| p["argv"].to_string().contains("sleep 301")).unwrap();
    let pid = sleeper["pid"].as_i64().unwrap();
    assert!(running(pid));
    let netns = std::fs::read_link(format!("/proc/{pid}/ns/net")).unwrap();
    let expected = std::fs::metadata(format!("/run/netns/{}", sb.ns("prod.db"))).unwrap();
    use std::os::unix::fs::MetadataExt;
    assert!(
        netns.to_string_lossy().contains(&expected.ino().to_string()),
        "{netns:?} is not prod.db's namespace"
    );
    let logs = sb.run(&["logs", "prod/db"]);
    assert!(logs.stdout.contains("started"), "{logs:?}");

    // Re-applying keeps the same processes; destroy ends them, no zombie left.
    sb.apply(&format!("{TOPOLOGY}\nserve(w1, 80); run(db, \"echo started; sleep 301\");"));
    assert!(running(pid), "a re-apply restarted the workload");
    let all: Vec<i64> = processes.iter().map(|p| p["pid"].as_i64().unwrap()).collect();
    sb.run(&["destroy"]);
    for pid in all {
        assert!(!running(pid), "process {pid} outlived destroy");
    }
    assert!(!command_runs("sleep 301"), "the shell's child outlived destroy");
}

#[test]
fn removing_run_from_the_script_stops_the_process() {
    let sb = Sandbox::new("unrun");
    sb.apply(&format!("{TOPOLOGY}\nrun(db, \"sleep 302; true\");"));
    let pid = sb.status_processes("sleep")[0]["pid"].as_i64().unwrap();
    let run = sb.apply(TOPOLOGY);
    assert!(run.stdout.contains("1 deleted"), "{run:?}");
    assert!(!running(pid));
    assert!(!command_runs("sleep 302"), "the shell's child kept running");
}

#[test]
fn probes_take_a_timeout_and_a_count() {
    let sb = Sandbox::new("probeopts");
    let run = sb.apply(&format!(
        r#"{TOPOLOGY}
        serve(w1, 80);
        assert(ping(db, w1, #{{ count: 3 }}), "reachable, counted");
        assert(!ping(w1, d1, #{{ timeout: 0.2, count: 2 }}), "another VPC, quickly");
        assert(connect(db, w1, 80, #{{ timeout: 2 }}), "a connect with its own timeout");
        assert(!connect(db, d1, 80, #{{ timeout: 0.1 }}), "refused across VPCs");
        assert(http_get(db, `http://${{w1.ip}}/`, #{{ timeout: 2 }}).body == "prod/w1\n", "an http_get with one");
        print("probes ok");"#
    ));
    assert!(run.stdout.contains("probes ok"), "{run:?}");
}

#[test]
fn default_probe_timeouts_give_no_false_unreachable_under_load() {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};
    let sb = Sandbox::new("probeload");
    // Every core busy twice over while the probes run with their default (sandbox) wait.
    let stop = Arc::new(AtomicBool::new(false));
    let hogs: Vec<_> = (0..4)
        .map(|_| {
            let stop = stop.clone();
            std::thread::spawn(move || {
                let mut x = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    x = std::hint::black_box(x.wrapping_mul(31).wrapping_add(7));
                }
            })
        })
        .collect();
    let run = sb.apply(&format!(
        r#"{TOPOLOGY}
        serve(w1, 80);
        let missed = 0;
        for i in 0..100 {{
            if !ping(db, w1) {{ missed += 1; }}
            if !connect(db, w1, 80) {{ missed += 1; }}
            if i % 10 == 0 && ping(w1, d1) {{ missed += 1000; }}
        }}
        print(`missed ${{missed}}`);"#
    ));
    stop.store(true, Ordering::Relaxed);
    hogs.into_iter().for_each(|h| h.join().unwrap());
    assert!(run.stdout.contains("missed 0"), "{run:?}");
}

#[test]
fn a_command_that_ends_stays_ended_until_asked_to_restart() {
    let sb = Sandbox::new("ends");
    let script = format!("{TOPOLOGY}\nrun(db, \"echo done; exit 3\");");
    sb.apply(&script);
    std::thread::sleep(Duration::from_millis(200));
    let again = sb.apply(&script);
    assert_eq!(again.stdout.trim(), "0 created, 0 changed, 0 deleted", "not restarted: {again:?}");
    let ended = sb.status_processes("exit 3");
    assert_eq!(ended.len(), 1, "one record: {ended:?}");
    assert_eq!(ended[0]["condition"], "exited 3", "{ended:?}");
    assert_eq!(ended[0]["exit_code"], 3, "{ended:?}");
    let logs = sb.run(&["logs", "prod/db"]);
    assert!(logs.stdout.contains("done"), "{logs:?}");
    // Removing the call removes the record.
    let removed = sb.apply(TOPOLOGY);
    assert!(removed.stdout.contains("1 deleted"), "{removed:?}");
    assert!(sb.status_processes("exit 3").is_empty());

    // With restart: true, every apply starts it again; its old record does not linger.
    let restarting = format!("{TOPOLOGY}\nrun(db, \"exit 0\", #{{ restart: true }});");
    sb.apply(&restarting);
    let first = sb.status_processes("exit 0");
    std::thread::sleep(Duration::from_millis(200));
    let again = sb.apply(&restarting);
    assert_eq!(again.stdout.trim(), "1 created, 0 changed, 0 deleted", "restarted: {again:?}");
    let second = sb.status_processes("exit 0");
    assert_eq!(second.len(), 1, "{second:?}");
    assert_ne!(first[0]["pid"], second[0]["pid"], "a new process");
}

#[test]
fn plan_lists_held_back_effects() {
    let sb = Sandbox::new("wouldrun");
    let script = sb.script(&format!("{TOPOLOGY}\nassert(ping(db, w1), \"x\");\nexec(w1, \"uname\");"));
    let run = sb.run(&["plan", script.to_str().unwrap()]);
    assert_eq!(run.code, 0, "{run:?}");
    assert!(run.stdout.contains("would run: ping from prod/db to 10.10.1.2"), "{run:?}");
    assert!(run.stdout.contains("would run: exec in prod/w1: /bin/sh -c uname"), "{run:?}");
    assert_eq!(sb.namespaces(), Vec::<String>::new(), "plan ran something");
}

/// Runs `vpcsh test ARGS`; its result and pid (which names its sandboxes).
fn vpcsh_test(args: &[&str]) -> (Run, u32) {
    let child = vpcsh()
        .arg("test")
        .args(args)
        .current_dir(FIXTURES)
        .env("NO_COLOR", "1")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let pid = child.id();
    (child.wait_with_output().unwrap().into(), pid)
}

fn test_sandboxes(pid: u32) -> Vec<String> {
    list_netns().into_iter().filter(|n| n.starts_with(&format!("test-{pid}-"))).collect()
}

#[test]
fn vpcsh_test_counts_failures_and_cleans_up() {
    let (run, pid) =
        vpcsh_test(&["passes.rhai", "fails_an_assertion.rhai", "has_a_syntax_error.rhai", "-j", "2"]);
    assert_eq!(run.code, 1, "{run:?}");
    assert!(run.stdout.trim_end().ends_with("1 passed, 2 failed"), "{run:?}");
    assert!(run.stdout.contains("PASS passes.rhai"), "{run:?}");
    assert!(
        run.stdout.contains("FAIL fails_an_assertion.rhai") && run.stdout.contains("assertion failed"),
        "{run:?}"
    );
    assert!(
        run.stdout.contains("FAIL has_a_syntax_error.rhai") && run.stdout.contains("syntax error"),
        "{run:?}"
    );
    assert!(test_sandboxes(pid).is_empty(), "a fixture sandbox was left");

    let (ok, _) = vpcsh_test(&["passes.rhai"]);
    assert_eq!(ok.code, 0, "{ok:?}");
    assert!(ok.stdout.trim_end().ends_with("1 passed, 0 failed"), "{ok:?}");
}

#[test]
fn vpcsh_test_keeps_a_failed_sandbox_when_asked() {
    let state = TempDir::new("vkeep");
    let child = vpcsh()
        .args(["test", "--keep", "fails_an_assertion.rhai"])
        .current_dir(FIXTURES)
        .env("TMPDIR", &state.0)
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let pid = child.id();
    let out = child.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("kept sandbox"), "{stdout}");
    let kept = test_sandboxes(pid);
    assert!(!kept.is_empty(), "nothing was kept");
    // Clean up what --keep left, the way the hint says.
    let sandbox = format!("test-{pid}-0");
    let state_dir = state.0.join(format!("vpcsh-test-{sandbox}"));
    vpcsh().args(["--sandbox", &sandbox, "--state-dir"]).arg(&state_dir).arg("destroy").output().unwrap();
    assert!(test_sandboxes(pid).is_empty());
}

#[test]
fn vpcsh_test_cleans_up_on_interrupt() {
    let mut child =
        vpcsh().args(["test", "slow.rhai"]).current_dir(FIXTURES).stdout(Stdio::piped()).spawn().unwrap();
    let pid = child.id();
    let deadline = Instant::now() + Duration::from_secs(20);
    while test_sandboxes(pid).len() < 3 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(!test_sandboxes(pid).is_empty(), "the fixture never started");
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid as i32), nix::sys::signal::Signal::SIGINT).unwrap();
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(130));
    assert!(test_sandboxes(pid).is_empty(), "interrupted fixture left {:?}", test_sandboxes(pid));
    // Nor a process keeping an unmounted namespace alive (the simulated internet's server).
    let sandbox = format!("test-{pid}-");
    let left: Vec<String> = std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(|e| std::fs::read(e.ok()?.path().join("cmdline")).ok())
        .map(|c| String::from_utf8_lossy(&c).replace('\0', " "))
        .filter(|c| c.contains("__serve") && c.contains(&sandbox))
        .collect();
    assert!(left.is_empty(), "left running: {left:?}");
}

#[test]
fn the_demo_passes_twice_in_one_sandbox() {
    // The second run starts from the first one's network: a mid-script apply() must still
    // give the early checks the reachability the script has declared so far (no peering,
    // no firewall yet), and the run ends with the same network as the first.
    let sb = Sandbox::new("demo2");
    let demo = concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/demo.rhai");
    for round in 1..=2 {
        let run = sb.cmd(&["apply", demo]).current_dir(env!("CARGO_MANIFEST_DIR")).output().unwrap();
        let run = Run::from(run);
        assert_eq!(run.code, 0, "round {round}: {run:?}");
        assert!(run.stdout.contains("all checks passed") && !run.stdout.contains("FAIL"), "{run:?}");
    }
    // Checked from outside too: the peering and the firewall are back at the end.
    assert!(ip(&sb.ns("prod"), &["-o", "link"]).contains("p-dev"), "the peering link is there");
    let rules = in_ns(&sb.ns("prod.a1"), &["nft", "list", "ruleset"]);
    assert!(rules.stdout.contains("dport 80") && rules.stdout.contains("dport 22"), "{rules:?}");
}

/// Whether a process with exactly this command line runs (zombies aside).
fn command_runs(cmdline: &str) -> bool {
    std::fs::read_dir("/proc").unwrap().filter_map(|e| e.ok()).any(|e| {
        let line = std::fs::read(e.path().join("cmdline")).unwrap_or_default();
        String::from_utf8_lossy(&line).replace('\0', " ").trim() == cmdline
            && e.file_name().to_str().and_then(|p| p.parse().ok()).is_some_and(running)
    })
}

#[test]
fn the_gallery_passes_as_test_fixtures() {
    let scripts = concat!(env!("CARGO_MANIFEST_DIR"), "/scripts");
    let mut fixtures: Vec<String> = std::fs::read_dir(scripts)
        .unwrap()
        .filter_map(|e| e.ok()?.path().to_str().filter(|p| p.ends_with(".rhai")).map(String::from))
        .collect();
    fixtures.sort();
    assert!(fixtures.len() >= 7, "{fixtures:?}");
    let prefix = unique("gallery");
    let mut args = vec!["--sandbox", &prefix, "test", "-j", "2"];
    args.extend(fixtures.iter().map(String::as_str));
    let run: Run = vpcsh().args(&args).output().unwrap().into();
    assert_eq!(run.code, 0, "{run:?}");
    assert!(run.stdout.trim_end().ends_with(&format!("{} passed, 0 failed", fixtures.len())), "{run:?}");
    assert!(list_netns().iter().all(|n| !n.starts_with(&prefix)), "cleaned up");
}

#[test]
fn a_killed_vpcsh_tests_sandboxes_are_destroyed_by_the_next_run() {
    let state = TempDir::new("vkilled");
    let script = state.0.join("sleeps.rhai");
    std::fs::write(
        &script,
        "let w = vpc(\"p\", \"10.1.0.0/16\").subnet(\"s\", \"10.1.1.0/24\");\nexec(w, \"sleep 2\");\n",
    )
    .unwrap();
    let run = |args: &[&str]| {
        let mut cmd = vpcsh();
        cmd.arg("test").args(args).current_dir(FIXTURES).env("TMPDIR", &state.0);
        cmd
    };
    let mut killed =
        run(&[script.to_str().unwrap()]).stdout(Stdio::null()).stderr(Stdio::null()).spawn().unwrap();
    let pid = killed.id();
    // Should the next run not destroy it, the test does (before the state goes with `state`).
    struct Leftover(String, std::path::PathBuf);
    impl Drop for Leftover {
        fn drop(&mut self) {
            let _ = vpcsh().args(["--sandbox", &self.0, "--state-dir"]).arg(&self.1).arg("destroy").output();
        }
    }
    let _leftover = Leftover(format!("test-{pid}-0"), state.0.join(format!("vpcsh-test-test-{pid}-0")));
    let deadline = Instant::now() + Duration::from_secs(20);
    while test_sandboxes(pid).len() < 3 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    killed.kill().unwrap();
    killed.wait().unwrap();
    assert!(!test_sandboxes(pid).is_empty(), "the killed run's fixture never started");
    // One kept with --keep by the same (dead) run stays.
    let kept_dir = state.0.join(format!("vpcsh-test-test-{pid}-1"));
    std::fs::create_dir_all(&kept_dir).unwrap();
    std::fs::write(kept_dir.join("kept"), "").unwrap();

    let next: Run = run(&["passes.rhai"]).output().unwrap().into();
    assert_eq!(next.code, 0, "{next:?}");
    assert!(next.stderr.contains(&format!("`test-{pid}-0`, left by a run that was killed")), "{next:?}");
    assert!(test_sandboxes(pid).is_empty(), "the killed run's sandbox is left: {:?}", test_sandboxes(pid));
    assert!(!state.0.join(format!("vpcsh-test-test-{pid}-0")).exists(), "its state is left");
    assert!(kept_dir.exists(), "a kept sandbox was taken for a leftover");
}
