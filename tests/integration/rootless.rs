//! vpcsh run by an ordinary user: rootless sandboxes kept between commands by a keeper,
//! `vpcsh test`, the machine left untouched, and what is said when user namespaces are off.
//! Under root the user is `nobody`; when the suite itself runs unprivileged (inside a user
//! namespace of its own, see tests/run.sh) it is user 65534 of a nested user namespace that
//! all the user's commands share, as an ordinary user's share the machine's.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use crate::common::*;

const NOBODY: u32 = 65534;

/// Whether the tests run as root of the machine itself (not of a user namespace).
fn machine_root() -> bool {
    let map = fs::read_to_string("/proc/self/uid_map").unwrap_or_default();
    nix::unistd::geteuid().is_root() && map.split_whitespace().collect::<Vec<_>>() == ["0", "0", "4294967295"]
}

/// An ordinary user with a home of their own and a copy of vpcsh they can run (the build
/// directory may be closed to them); ends what they left running on drop.
struct User {
    dir: TempDir,
    exe: PathBuf,
    home: PathBuf,
    /// Outside the machine's root: a process holding the user's own user namespace.
    session: Option<std::process::Child>,
    /// The user's `XDG_RUNTIME_DIR`, if they have one.
    runtime: Option<PathBuf>,
}

impl User {
    fn new(tag: &str) -> Self {
        let dir = TempDir::new(tag);
        fs::set_permissions(&dir.0, fs::Permissions::from_mode(0o755)).unwrap();
        let exe = dir.0.join("vpcsh");
        fs::copy(VPCSH, &exe).unwrap();
        let session = (!machine_root()).then(|| {
            let child = Command::new("unshare")
                .args(["--user", "--map-user=65534", "--map-group=65534", "--", "sleep", "3600"])
                .spawn()
                .unwrap();
            // Until unshare has made it, the session's user namespace is still ours.
            let ns = |pid: &str| fs::read_link(format!("/proc/{pid}/ns/user")).ok();
            let deadline = Instant::now() + Duration::from_secs(10);
            while ns(&child.id().to_string()) == ns("self") {
                assert!(Instant::now() < deadline, "unshare made no user namespace");
                std::thread::sleep(Duration::from_millis(10));
            }
            child
        });
        let mut user = User { dir, exe, home: PathBuf::new(), session, runtime: None };
        user.home = user.own_dir("home");
        user
    }

    /// vpcsh as this user, in their home, with nothing of the caller's environment that
    /// would point it elsewhere.
    fn vpcsh(&self, args: &[&str]) -> Command {
        self.command(&self.exe, args)
    }

    fn command(&self, program: &Path, args: &[&str]) -> Command {
        let mut cmd = match &self.session {
            None => {
                let mut cmd = Command::new(program);
                cmd.uid(NOBODY).gid(NOBODY);
                cmd
            }
            Some(session) => {
                let target = session.id().to_string();
                let mut cmd = Command::new("nsenter");
                cmd.args(["--target", &target, "--user", "--preserve-credentials", "--"]).arg(program);
                cmd
            }
        };
        cmd.args(args)
            .current_dir(&self.dir.0)
            .env("HOME", &self.home)
            .env("NO_COLOR", "1")
            .env("VPCSH_CONFIG", "");
        for var in ["XDG_RUNTIME_DIR", "XDG_STATE_HOME", "VPCSH_STATE_DIR"] {
            cmd.env_remove(var);
        }
        if let Some(runtime) = &self.runtime {
            cmd.env("XDG_RUNTIME_DIR", runtime);
        }
        cmd
    }

    fn run(&self, args: &[&str]) -> Run {
        self.vpcsh(args).output().unwrap().into()
    }

    /// A directory of the user's own.
    fn own_dir(&self, name: &str) -> PathBuf {
        let dir = self.dir.0.join(name);
        fs::create_dir(&dir).unwrap();
        if machine_root() {
            nix::unistd::chown(&dir, Some(NOBODY.into()), Some(NOBODY.into())).unwrap();
        }
        dir
    }

    fn script(&self, name: &str, text: &str) -> String {
        let path = self.dir.write(name, text);
        fs::set_permissions(&path, fs::Permissions::from_mode(0o644)).unwrap();
        path.to_string_lossy().into_owned()
    }

    fn state(&self) -> PathBuf {
        self.home.join(".local/state/vpcsh")
    }
}

impl Drop for User {
    fn drop(&mut self) {
        if let Some(session) = &mut self.session {
            let _ = session.kill();
            let _ = session.wait();
        }
    }
}

/// Ends a sandbox as its user would, and its keeper if that was not enough, on drop.
struct Rootless<'a> {
    user: &'a User,
    name: String,
}

impl Rootless<'_> {
    fn keeper_file(&self) -> PathBuf {
        match &self.user.runtime {
            Some(runtime) => runtime.join("vpcsh/sandbox").join(format!("{}.keeper", self.name)),
            None => self.user.state().join("sandbox").join(&self.name).join("keeper"),
        }
    }

    fn keeper(&self) -> Option<i32> {
        fs::read_to_string(self.keeper_file()).ok()?.split_whitespace().next()?.parse().ok()
    }

    fn run(&self, args: &[&str]) -> Run {
        let mut all = vec!["--sandbox", &self.name];
        all.extend_from_slice(args);
        self.user.run(&all)
    }

    /// A command run inside the sandbox's mount namespace, as `ip netns exec` needs.
    fn outside(&self, args: &[&str]) -> Run {
        let keeper = self.keeper().expect("a keeper").to_string();
        Command::new("nsenter")
            .args(["--target", &keeper, "--mount", "--"])
            .args(args)
            .output()
            .unwrap()
            .into()
    }
}

impl Drop for Rootless<'_> {
    fn drop(&mut self) {
        let keeper = self.keeper();
        let _ = self.run(&["destroy"]);
        if let Some(pid) = keeper.filter(|pid| is_keeper(*pid)) {
            let _ =
                nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), nix::sys::signal::Signal::SIGKILL);
        }
    }
}

fn is_keeper(pid: i32) -> bool {
    let cmdline = fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
    running(pid.into()) && cmdline.split(|b| *b == 0).any(|a| a == b"__keep")
}

/// Processes whose command line holds all of `words`.
fn processes_with(words: &[&str]) -> Vec<String> {
    fs::read_dir("/proc")
        .unwrap()
        .filter_map(|e| fs::read(e.ok()?.path().join("cmdline")).ok())
        .map(|c| String::from_utf8_lossy(&c).replace('\0', " "))
        .filter(|c| words.iter().all(|w| c.contains(w)))
        .collect()
}

/// What the machine's own network looks like: links, routes, ruleset, forwarding.
fn machine() -> String {
    let mut seen = String::new();
    for args in [&["-o", "link"][..], &["route"], &["-6", "route"]] {
        let out = Command::new("ip").args(args).output().unwrap();
        seen += &String::from_utf8_lossy(&out.stdout);
    }
    if machine_root() {
        let out = Command::new("nft").args(["list", "ruleset"]).output().unwrap();
        seen += &String::from_utf8_lossy(&out.stdout);
    }
    for sysctl in ["net/ipv4/ip_forward", "net/ipv6/conf/all/forwarding", "net/ipv6/conf/all/disable_ipv6"] {
        seen += &fs::read_to_string(Path::new("/proc/sys").join(sysctl)).unwrap_or_default();
    }
    seen
}

#[test]
fn a_rootless_sandbox_lives_from_apply_to_destroy_and_leaves_the_machine_alone() {
    let user = User::new("rootless");
    let sb = Rootless { user: &user, name: unique("rl") };
    let before = machine();
    let script = user.script(
        "lab.rhai",
        r#"
let v = vpc("v", "10.71.0.0/16");
let web = v.subnet("web", "10.71.1.0/24", #{ public: true });
let w = web.host("w");
serve(w, 80);
assert(ping(w, internet()), "the internet answers");
"#,
    );
    let apply = sb.run(&["apply", &script]);
    assert_eq!(apply.code, 0, "{apply:?}");

    // A keeper holds the sandbox, running as the user.
    let keeper = sb.keeper().expect("apply recorded a keeper");
    assert!(is_keeper(keeper), "pid {keeper} is no keeper");
    if machine_root() {
        let status = fs::read_to_string(format!("/proc/{keeper}/status")).unwrap();
        assert!(status.lines().any(|l| l.starts_with("Uid:") && l.contains("65534")), "{status}");
    }
    // Nothing of it is on the machine's /run/netns; inside the keeper's mount namespace it
    // is, and packets flow there.
    assert!(list_netns().iter().all(|n| !n.starts_with(&sb.name)), "{:?}", list_netns());
    let listed = sb.outside(&["ip", "netns", "list"]);
    assert!(listed.stdout.contains(&format!("{}.v.w", sb.name)), "{listed:?}");
    let w = format!("{}.v.w", sb.name);
    let ping = sb.outside(&["ip", "netns", "exec", &w, "ping", "-c1", "-W2", "-q", "198.51.100.1"]);
    assert_eq!(ping.code, 0, "{ping:?}");

    // Later commands join the same namespaces.
    let exec = sb.run(&["exec", "v/w", "--", "ip", "-4", "-o", "addr", "show", "eth0"]);
    assert!(exec.stdout.contains("10.71.1.2/24"), "{exec:?}");
    let status = sb.run(&["status"]);
    assert_eq!(status.code, 0, "{status:?}");
    assert!(status.stdout.contains("alive"), "the server is seen alive: {status:?}");

    let destroy = sb.run(&["destroy"]);
    assert_eq!(destroy.code, 0, "{destroy:?}");
    let deadline = Instant::now() + Duration::from_secs(5);
    while is_keeper(keeper) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(!is_keeper(keeper), "the keeper outlived destroy");
    assert!(!sb.keeper_file().exists());
    assert!(
        processes_with(&["__serve", &sb.name]).is_empty(),
        "{:?}",
        processes_with(&["__serve", &sb.name])
    );
    assert_eq!(machine(), before, "the machine's network changed");
}

#[test]
fn vpcsh_test_runs_without_root() {
    let user = User::new("rootless-test");
    let fixtures = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/test");
    let mut args = vec!["test".to_string(), "-j".into(), "2".into()];
    for name in ["passes.rhai", "fails_an_assertion.rhai"] {
        args.push(user.script(name, &fs::read_to_string(fixtures.join(name)).unwrap()));
    }
    let mut cmd = user.vpcsh(&args.iter().map(String::as_str).collect::<Vec<_>>());
    // `vpcsh test` keeps each fixture's state in the temp directory.
    cmd.env("TMPDIR", user.own_dir("tmp"));
    let run: Run = cmd.output().unwrap().into();
    assert_eq!(run.code, 1, "{run:?}");
    assert!(run.stdout.lines().any(|l| l.starts_with("PASS") && l.contains("passes.rhai")), "{run:?}");
    assert!(
        run.stdout.lines().any(|l| l.starts_with("FAIL") && l.contains("fails_an_assertion.rhai")),
        "{run:?}"
    );
    assert!(run.stdout.contains("assertion failed: private reaches the internet"), "{run:?}");
    assert!(run.stdout.contains("1 passed, 1 failed"), "{run:?}");
    let left = processes_with(&["__keep", &user.dir.0.to_string_lossy()]);
    assert!(left.is_empty(), "keepers left: {left:?}");
}

#[test]
fn a_keeper_file_that_lies_is_not_trusted() {
    let user = User::new("rootless-stale");
    let sb = Rootless { user: &user, name: unique("rls") };
    // A live process that is no keeper, recorded as the sandbox's keeper.
    let mut bystander = Command::new("sleep").arg("60").spawn().unwrap();
    let file = sb.keeper_file();
    let userns = fs::metadata("/proc/self/ns/user").map(|m| std::os::unix::fs::MetadataExt::ino(&m)).unwrap();
    let write = format!(
        "mkdir -p {} && echo '{} {userns}' > {}",
        file.parent().unwrap().display(),
        bystander.id(),
        file.display()
    );
    assert!(user.command(Path::new("/bin/sh"), &["-c", &write]).status().unwrap().success());
    let script = user.script("s.rhai", "vpc(\"v\", \"10.72.0.0/16\").subnet(\"s\", \"10.72.1.0/24\");\n");
    let apply = sb.run(&["apply", &script]);
    assert_eq!(apply.code, 0, "{apply:?}");
    let keeper = sb.keeper().unwrap();
    assert_ne!(keeper, bystander.id() as i32, "joined a process that is no keeper");
    assert!(is_keeper(keeper));
    assert_eq!(sb.run(&["destroy"]).code, 0);
    assert!(matches!(bystander.try_wait(), Ok(None)), "destroy ended a process that was no keeper");
    let _ = bystander.kill();
    let _ = bystander.wait();
}

#[test]
fn without_user_namespaces_the_diagnostic_names_the_setting() {
    let user = User::new("rootless-off");
    let script = user.script("s.rhai", "vpc(\"v\", \"10.73.0.0/16\").subnet(\"s\", \"10.73.1.0/24\");\n");
    let name = unique("rlo");
    // The user inside is the caller mapped twice over: a home of the caller's.
    let home = user.dir.0.join("caller-home");
    fs::create_dir(&home).unwrap();
    // The limit lowered inside a user namespace of the test's own, never on the machine:
    // the one namespace below it (the user's) uses it up, so vpcsh's own is refused.
    let inner = format!(
        "echo 1 > /proc/sys/user/max_user_namespaces && exec unshare --user --map-user=65534 --map-group=65534 -- {} --sandbox {name} apply {script}",
        user.exe.display()
    );
    let run: Run = Command::new("unshare")
        .args(["--user", "--map-root-user", "--", "sh", "-c", &inner])
        .current_dir(&user.dir.0)
        .env("HOME", &home)
        .env("NO_COLOR", "1")
        .env("VPCSH_CONFIG", "")
        .env_remove("XDG_RUNTIME_DIR")
        .output()
        .unwrap()
        .into();
    assert_eq!(run.code, 1, "{run:?}");
    assert!(run.stderr.contains("needs a user namespace"), "{run:?}");
    assert!(run.stderr.contains("user.max_user_namespaces"), "names the setting: {run:?}");
    assert!(processes_with(&["__keep", &name]).is_empty());
}

#[test]
fn an_ordinary_user_without_a_sandbox_is_pointed_to_one() {
    let user = User::new("rootless-host");
    let script = user.script("s.rhai", "vpc(\"v\", \"10.74.0.0/16\").subnet(\"s\", \"10.74.1.0/24\");\n");
    let run = user.run(&["apply", &script]);
    assert_eq!(run.code, 1, "{run:?}");
    assert!(run.stderr.contains("needs root or CAP_NET_ADMIN"), "{run:?}");
    assert!(run.stderr.contains("--sandbox NAME"), "{run:?}");
    assert!(list_netns().iter().all(|n| !n.starts_with("vpcsh.v")), "{:?}", list_netns());
    // Validating needs no privilege.
    assert_eq!(user.run(&["check", &script]).code, 0);
}

#[test]
fn a_keeper_whose_sandbox_is_gone_ends_by_itself() {
    let mut user = User::new("rootless-gone");
    user.runtime = Some(user.own_dir("runtime"));
    let sb = Rootless { user: &user, name: unique("rlg") };
    let script = user.script("s.rhai", "vpc(\"v\", \"10.75.0.0/16\").subnet(\"s\", \"10.75.1.0/24\");\n");
    let apply = sb.run(&["apply", &script]);
    assert_eq!(apply.code, 0, "{apply:?}");
    // With XDG_RUNTIME_DIR, the keeper is recorded there.
    assert!(sb.keeper_file().starts_with(user.runtime.as_ref().unwrap()));
    let keeper = sb.keeper().unwrap();
    assert!(is_keeper(keeper));
    // Every namespace removed behind vpcsh's back: nothing is left to keep.
    let remove = "for n in $(ls /run/netns); do ip netns del \"$n\"; done; ls /run/netns | wc -l";
    let removed: Run = Command::new("nsenter")
        .args(["--target", &keeper.to_string(), "--mount", "--", "sh", "-c", remove])
        .output()
        .unwrap()
        .into();
    assert_eq!(removed.stdout.trim(), "0", "{removed:?}");
    let deadline = Instant::now() + Duration::from_secs(15);
    while is_keeper(keeper) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(!is_keeper(keeper), "the keeper of an empty sandbox stayed");
    // Its record is stale now: `status` is not fooled into joining anything, and the
    // simulated internet's server, orphaned by the removal, is stopped by `destroy`.
    let status = sb.run(&["status"]);
    assert!(status.stdout.contains("missing"), "{status:?}");
    assert!(!processes_with(&["__serve", &sb.name]).is_empty());
    assert_eq!(sb.run(&["destroy"]).code, 0);
    assert!(
        processes_with(&["__serve", &sb.name]).is_empty(),
        "{:?}",
        processes_with(&["__serve", &sb.name])
    );
}

#[test]
fn a_killed_keeper_leaves_nothing_running_after_destroy() {
    let user = User::new("rootless-killed");
    let sb = Rootless { user: &user, name: unique("rlk") };
    let script = user.script(
        "s.rhai",
        "let w = vpc(\"v\", \"10.76.0.0/16\").subnet(\"s\", \"10.76.1.0/24\").host(\"w\");\nserve(w, 80);\n",
    );
    assert_eq!(sb.run(&["apply", &script]).code, 0);
    let keeper = sb.keeper().unwrap();
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(keeper), nix::sys::signal::Signal::SIGKILL).unwrap();
    while is_keeper(keeper) {
        std::thread::sleep(Duration::from_millis(20));
    }
    // The servers hold what is left of the sandbox; the keeper's record is stale.
    assert!(!processes_with(&["__serve", &sb.name]).is_empty());
    let destroy = sb.run(&["destroy"]);
    assert_eq!(destroy.code, 0, "{destroy:?}");
    assert!(
        processes_with(&["__serve", &sb.name]).is_empty(),
        "{:?}",
        processes_with(&["__serve", &sb.name])
    );
    assert!(!sb.keeper_file().exists());
}

#[test]
fn without_a_home_state_goes_to_a_directory_of_the_users_own() {
    use std::os::unix::fs::MetadataExt;
    let user = User::new("rootless-nohome");
    let tmp = user.own_dir("tmp");
    let name = unique("rln");
    let script = user.script("s.rhai", "vpc(\"v\", \"10.77.0.0/16\").subnet(\"s\", \"10.77.1.0/24\");\n");
    let run = |args: &[&str]| -> Run {
        let mut all = vec!["--sandbox", &name];
        all.extend_from_slice(args);
        user.vpcsh(&all).env_remove("HOME").env("TMPDIR", &tmp).output().unwrap().into()
    };
    let apply = run(&["apply", &script]);
    assert_eq!(apply.code, 0, "{apply:?}");
    let state = tmp.join("vpcsh-65534");
    let meta = fs::metadata(&state).unwrap();
    assert_eq!(meta.mode() & 0o777, 0o700, "private to the user");
    assert!(state.join("sandbox").join(&name).join("state.json").exists());
    assert_eq!(run(&["destroy"]).code, 0);
    assert!(!state.join("sandbox").join(&name).exists());
}
