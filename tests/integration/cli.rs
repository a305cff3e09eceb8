//! The command line guides: a mistyped command gets a suggestion, `-q` is quiet, `exec`
//! works as shells do, `vpcsh test` honours `--sandbox`, every data or diagnostic output has
//! a versioned JSON form, and settings layer file < environment < flag.

use crate::common::*;

const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/test");

fn json(run: &Run) -> serde_json::Value {
    serde_json::from_str(&run.stdout).unwrap_or_else(|e| panic!("not JSON ({e}): {run:?}"))
}

#[test]
fn a_mistyped_command_is_a_usage_error_with_a_suggestion() {
    let run: Run = vpcsh().arg("statsu").output().unwrap().into();
    assert_eq!(run.code, 2, "{run:?}");
    assert!(run.stderr.contains("did you mean `status`?"), "{run:?}");
    // A path that does not exist is still a script that cannot be read.
    let run: Run = vpcsh().arg("no/such.rhai").output().unwrap().into();
    assert_eq!(run.code, 1, "{run:?}");
    assert!(run.stderr.contains("cannot read no/such.rhai"), "{run:?}");
}

#[test]
fn quiet_prints_only_errors_and_the_scripts_own_output() {
    let sb = Sandbox::new("quiet");
    let script = sb
        .script("let p = vpc(\"p\", \"10.41.0.0/16\"); p.subnet(\"s\", \"10.41.1.0/24\"); print(\"hello\");");
    let run = sb.run(&["-q", "apply", script.to_str().unwrap()]);
    assert_eq!(run.code, 0, "{run:?}");
    assert_eq!(run.stdout, "hello\n", "{run:?}");
    assert_eq!(run.stderr, "", "{run:?}");
    let destroyed = sb.run(&["destroy", "-q"]);
    assert_eq!(destroyed.stdout, "", "{destroyed:?}");
}

#[test]
fn exec_works_as_shells_do() {
    let sb = Sandbox::new("exec");
    sb.apply("let p = vpc(\"p\", \"10.42.0.0/16\"); p.subnet(\"s\", \"10.42.1.0/24\").host(\"h\");");
    let without_dashes = sb.run(&["exec", "p/h", "ip", "-4", "-o", "addr", "show", "eth0"]);
    assert_eq!(without_dashes.code, 0, "{without_dashes:?}");
    assert!(without_dashes.stdout.contains("10.42.1.2/24"), "{without_dashes:?}");
    assert_eq!(sb.run(&["exec", "p/h", "--", "sh", "-c", "exit 5"]).code, 5);
    let missing = sb.run(&["exec", "p/h", "no-such-command"]);
    assert_eq!(missing.code, 127, "{missing:?}");
    assert!(missing.stderr.contains("command not found"), "{missing:?}");
    assert_eq!(sb.run(&["exec", "p/h", "/tmp"]).code, 126, "a directory cannot run");
    let no_command = sb.cmd(&["exec", "p/h"]).stdin(std::process::Stdio::null()).output().unwrap();
    assert_eq!(Run::from(no_command).code, 2, "no command and no terminal is a usage error");
}

#[test]
fn vpcsh_test_names_its_sandboxes_after_the_sandbox_option() {
    let prefix = unique("tp");
    let run: Run = vpcsh()
        .args(["--sandbox", &prefix, "--json", "test", "passes.rhai", "fails_an_assertion.rhai"])
        .current_dir(FIXTURES)
        .output()
        .unwrap()
        .into();
    assert_eq!(run.code, 1, "{run:?}");
    let doc = json(&run);
    assert_eq!((doc["version"].as_u64(), doc["kind"].as_str()), (Some(1), Some("test")), "{doc}");
    assert_eq!((doc["passed"].as_u64(), doc["failed"].as_u64()), (Some(1), Some(1)), "{doc}");
    let results = doc["results"].as_array().unwrap();
    let mut sandboxes: Vec<&str> = results.iter().filter_map(|r| r["sandbox"].as_str()).collect();
    sandboxes.sort();
    assert_eq!(sandboxes, [format!("{prefix}-0"), format!("{prefix}-1")], "{doc}");
    let failed = results.iter().find(|r| r["result"] == "failed").unwrap();
    assert!(failed["message"].as_str().unwrap().contains("assertion failed"), "{doc}");
    assert!(list_netns().iter().all(|n| !n.starts_with(&prefix)), "cleaned up");
}

#[test]
fn plan_check_apply_and_errors_have_json_forms() {
    let sb = Sandbox::new("json");
    let good = sb.script("let p = vpc(\"p\", \"10.43.0.0/16\"); p.subnet(\"s\", \"10.43.1.0/24\");");
    let good = good.to_str().unwrap();
    let check = json(&sb.run(&["--json", "check", good]));
    assert_eq!(
        (check["kind"].as_str(), check["vpcs"].as_u64(), check["version"].as_u64()),
        (Some("check"), Some(1), Some(1))
    );
    let plan = json(&sb.run(&["plan", good, "--json"]));
    let ops = plan["operations"].as_array().unwrap();
    assert!(
        ops.iter().any(|o| o["op"] == "create-netns"
            && o["owner"]["kind"] == "host"
            && o["owner"]["name"] == "p/s"),
        "{plan}"
    );
    let apply = json(&sb.run(&["--json", "apply", good]));
    assert_eq!(apply["kind"], "apply");
    assert!(apply["created"].as_u64().unwrap() > 0, "{apply}");
    let status = json(&sb.run(&["--json", "status"]));
    let vpc = status["objects"].as_array().unwrap().iter().find(|o| o["kind"] == "vpc").unwrap().clone();
    assert_eq!((vpc["name"].as_str(), vpc["stack"].as_str()), (Some("p"), Some("main")), "{status}");

    let bad = sb.script("let p = vpc(\"p\", \"10.43.0.0/16\");\np.subnet(\"s\", \"10.99.1.0/24\");");
    let run = sb.run(&["--json", "check", bad.to_str().unwrap()]);
    assert_eq!(run.code, 1);
    let error = json(&run);
    assert_eq!(error["kind"], "error");
    let d = &error["diagnostics"][0];
    assert_eq!((d["line"].as_u64(), d["column"].as_u64()), (Some(2), Some(1)), "{error}");
    assert!(d["message"].as_str().unwrap().contains("not inside VPC"), "{error}");
    assert_eq!(d["related"][0]["line"], 1, "{error}");
}

#[test]
fn exit_sets_the_status_and_a_namespace_ceiling_guards_loops() {
    let dir = TempDir::new("exit");
    let three = dir.write(
        "three.rhai",
        "let p = vpc(\"p\", \"10.44.0.0/16\");\nexit(3);\nlet q = vpc(\"q\", \"10.45.0.0/16\");",
    );
    let run: Run = vpcsh().arg("check").arg(&three).output().unwrap().into();
    assert_eq!(run.code, 3, "{run:?}");
    assert_eq!(run.stderr, "", "exit is no error: {run:?}");
    let zero = dir.write(
        "zero.rhai",
        "let p = vpc(\"p\", \"10.44.0.0/16\");\nexit(0);\nlet q = vpc(\"q\", \"10.45.0.0/16\");",
    );
    let run: Run = vpcsh().arg("check").arg(&zero).output().unwrap().into();
    assert_eq!(run.code, 0, "{run:?}");
    assert!(run.stdout.contains("ok (1 VPCs"), "the script ends at exit(0): {run:?}");

    let many = dir.write("many.rhai", "for i in 0..4 { let v = vpc(`v${i}`, `10.${50 + i}.0.0/16`); v.subnet(\"s\", `10.${50 + i}.1.0/24`); }");
    let run: Run = vpcsh().args(["--max-namespaces", "5", "check"]).arg(&many).output().unwrap().into();
    assert_eq!(run.code, 1, "{run:?}");
    assert!(
        run.stderr.contains("this script makes 8 network namespaces; one script makes at most 5"),
        "{run:?}"
    );
    assert!(run.stderr.contains("--max-namespaces"), "{run:?}");
    let run: Run = vpcsh().args(["--max-namespaces", "8", "check"]).arg(&many).output().unwrap().into();
    assert_eq!(run.code, 0, "{run:?}");
}

#[test]
fn exec_with_no_command_opens_a_shell_on_a_terminal() {
    use std::io::Write;
    let sb = Sandbox::new("shell");
    sb.apply("let p = vpc(\"p\", \"10.46.0.0/16\"); p.subnet(\"s\", \"10.46.1.0/24\").host(\"h\");");
    let command = format!("{VPCSH} --sandbox {} --state-dir {} exec p/h", sb.name, sb.dir.0.display());
    let mut child = std::process::Command::new("script")
        .args(["-qfec", &command, "/dev/null"])
        .env("SHELL", "/bin/sh")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // The shell runs inside the host: it sees the host's address.
    let keys = "ip -4 -o addr show eth0 | grep -c 10.46.1.2/24; exit 7\n";
    child.stdin.take().unwrap().write_all(keys.as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    let counted = text.lines().any(|l| !l.contains("grep") && l.trim_end().ends_with('1'));
    assert!(counted, "the shell's grep found the host's address: {text}");
    assert_eq!(out.status.code(), Some(7), "the shell's status: {text}");
}

#[test]
fn completions_generate_for_each_shell() {
    for (shell, marker) in [("bash", "complete -F"), ("zsh", "#compdef vpcsh"), ("fish", "complete -c vpcsh")]
    {
        let run: Run = vpcsh().args(["completions", shell]).output().unwrap().into();
        assert_eq!(run.code, 0, "{run:?}");
        assert!(
            run.stdout.contains(marker) && run.stdout.contains("graph"),
            "{shell}: {}",
            &run.stdout[..200.min(run.stdout.len())]
        );
    }
    if std::process::Command::new("bash").arg("--version").output().is_ok() {
        let script: Run = vpcsh().args(["completions", "bash"]).output().unwrap().into();
        let dir = TempDir::new("complete");
        let file = dir.write("vpcsh.bash", &script.stdout);
        let check = std::process::Command::new("bash").arg("-n").arg(&file).output().unwrap();
        assert!(check.status.success(), "bash parses it: {}", String::from_utf8_lossy(&check.stderr));
    }
}

#[test]
fn completion_offers_the_names_of_the_applied_network() {
    let sb = Sandbox::new("complete");
    sb.apply(prod_and!(""));
    let script: Run = vpcsh().args(["completions", "bash"]).output().unwrap().into();
    let file = sb.dir.write("vpcsh.bash", &script.stdout);
    let bin_dir = std::path::Path::new(VPCSH).parent().unwrap();
    let complete = |words: &[&str]| -> Vec<String> {
        // As bash calls it: the words so far, then (command, current word, previous word).
        let line = words.iter().map(|w| format!("'{w}'")).collect::<Vec<_>>().join(" ");
        let program = format!(
            "source '{}'\nCOMP_WORDS=({line})\nCOMP_CWORD={}\n_vpcsh_with_targets vpcsh '{}' '{}'\nprintf '%s\\n' \"${{COMPREPLY[@]}}\"",
            file.display(),
            words.len() - 1,
            words[words.len() - 1],
            words[words.len() - 2],
        );
        let path = format!("{}:{}", bin_dir.display(), std::env::var("PATH").unwrap_or_default());
        let out = std::process::Command::new("bash")
            .args(["-c", &program])
            .env("PATH", path)
            .env("VPCSH_CONFIG", "")
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout).lines().filter(|l| !l.is_empty()).map(String::from).collect()
    };
    let state_dir = sb.dir.0.to_str().unwrap();
    let scope = ["vpcsh", "--sandbox", &sb.name, "--state-dir", state_dir];
    // A subnet declared without hosts has one named after it.
    assert_eq!(complete(&[&scope[..], &["exec", "p"]].concat()), ["prod", "prod/w1", "prod/app", "prod/db"]);
    assert_eq!(complete(&[&scope[..], &["logs", "prod/w"]].concat()), ["prod/w1"]);
    assert_eq!(complete(&[&scope[..], &["exec", "i"]].concat()), ["internet"]);
    // Elsewhere, clap's own completion: subcommands.
    assert!(complete(&["vpcsh", "sta"]).contains(&"status".to_string()));
    // Another sandbox has no such names.
    assert!(complete(&["vpcsh", "--sandbox", "vt-none", "--state-dir", state_dir, "exec", "p"]).is_empty());
    let zsh: Run = vpcsh().args(["completions", "zsh"]).output().unwrap().into();
    assert_eq!(
        zsh.stdout.matches("':target:_vpcsh_targets'").count(),
        3,
        "exec, logs and capture complete names"
    );
    assert!(zsh.stdout.trim_end().ends_with("fi"), "zsh registration kept last");
}

#[test]
fn version_defs_and_manual_come_from_the_binary() {
    let version: Run = vpcsh().arg("--version").output().unwrap().into();
    assert!(version.stdout.starts_with(&format!("vpcsh {} (", env!("CARGO_PKG_VERSION"))), "{version:?}");
    let defs: Run = vpcsh().arg("defs").output().unwrap().into();
    assert_eq!(defs.code, 0, "{defs:?}");
    for line in [
        "fn vpc(name: string, cidr: string) -> Vpc;",
        "fn subnet(vpc: Vpc, name: string, cidr: string) -> Subnet;",
    ] {
        assert!(defs.stdout.contains(line), "missing {line}");
    }
    assert!(!defs.stdout.contains("Handle"), "Rust names leaked into the definitions");
    let man: Run = vpcsh().arg("man").output().unwrap().into();
    assert!(
        man.stdout.contains(".TH vpcsh 1") && man.stdout.contains("completions"),
        "{}",
        &man.stdout[..300.min(man.stdout.len())]
    );
}

/// `vpcsh` reading its configuration from the user's directory under `home`.
fn configured(home: &TempDir) -> std::process::Command {
    let mut cmd = vpcsh();
    cmd.env_remove("VPCSH_CONFIG").env("XDG_CONFIG_HOME", &home.0);
    cmd
}

#[test]
fn settings_layer_file_then_environment_then_flag() {
    let home = TempDir::new("config");
    std::fs::create_dir_all(home.0.join("vpcsh")).unwrap();
    home.write("vpcsh/config.toml", "max-namespaces = 2\n");
    let script = home.write(
        "three.rhai",
        "vpc(\"a\", \"10.1.0.0/16\");\nvpc(\"b\", \"10.2.0.0/16\");\nvpc(\"c\", \"10.3.0.0/16\");\n",
    );
    let check =
        |cmd: &mut std::process::Command| -> Run { cmd.arg("check").arg(&script).output().unwrap().into() };
    let from_file = check(&mut configured(&home));
    assert_eq!(from_file.code, 1, "{from_file:?}");
    assert!(from_file.stderr.contains("at most 2"), "{from_file:?}");
    let from_env = check(configured(&home).env("VPCSH_MAX_NAMESPACES", "10"));
    assert_eq!(from_env.code, 0, "{from_env:?}");
    let from_flag =
        check(configured(&home).env("VPCSH_MAX_NAMESPACES", "10").args(["--max-namespaces", "1"]));
    assert!(from_flag.code == 1 && from_flag.stderr.contains("at most 1"), "{from_flag:?}");
    // Without the file, the built-in ceiling.
    assert_eq!(check(&mut vpcsh()).code, 0);
    // `color` is a setting like the others: forced on through a pipe.
    home.write("vpcsh/config.toml", "color = \"always\"\nmax-namespaces = 2\n");
    let coloured = check(&mut configured(&home));
    assert!(coloured.stderr.contains("\u{1b}["), "{coloured:?}");
    let plain = check(configured(&home).args(["--color", "never"]));
    assert!(plain.code == 1 && !plain.stderr.contains("\u{1b}["), "{plain:?}");
}

#[test]
fn a_bad_configuration_key_or_value_is_a_diagnostic_in_the_file() {
    let home = TempDir::new("config-bad");
    std::fs::create_dir_all(home.0.join("vpcsh")).unwrap();
    let script = home.write("one.rhai", "vpc(\"a\", \"10.1.0.0/16\");\n");
    home.write("vpcsh/config.toml", "jobs = 2\nstat-dir = \"/tmp\"\n");
    let run: Run = configured(&home).arg("check").arg(&script).output().unwrap().into();
    assert_eq!(run.code, 1, "{run:?}");
    assert!(run.stderr.contains("unknown field `stat-dir`, expected one of `state-dir`"), "{run:?}");
    assert!(run.stderr.contains("config.toml:2:1"), "{run:?}");
    home.write("vpcsh/config.toml", "max-namespaces = \"many\"\n");
    let run: Run = configured(&home).args(["--json", "check"]).arg(&script).output().unwrap().into();
    assert_eq!(run.code, 1, "{run:?}");
    let d = &json(&run)["diagnostics"][0];
    assert!(d["message"].as_str().unwrap().contains("invalid type"), "{d}");
    assert_eq!((d["line"].as_u64(), d["column"].as_u64()), (Some(1), Some(18)), "{d}");
    assert!(d["file"].as_str().unwrap().ends_with("vpcsh/config.toml"), "{d}");
    // A file named by VPCSH_CONFIG must be there.
    let missing = home.0.join("missing.toml");
    let run: Run = vpcsh().env("VPCSH_CONFIG", &missing).arg("check").arg(&script).output().unwrap().into();
    assert!(run.code == 1 && run.stderr.contains("missing.toml: No such file"), "{run:?}");
}

#[test]
fn a_configured_probe_timeout_is_how_long_an_unanswered_probe_waits() {
    let sb = Sandbox::new("probe-wait");
    std::fs::create_dir_all(sb.dir.0.join("config/vpcsh")).unwrap();
    sb.dir.write("config/vpcsh/config.toml", "probe-timeout = 3.0\n");
    let script = sb.script(prod_and!(
        "firewall(w1, #{ ingress: [] });\napply();\nassert(!ping(db, w1), \"w1 drops pings\");\n"
    ));
    let started = std::time::Instant::now();
    let run: Run = sb
        .cmd(&["apply", script.to_str().unwrap()])
        .env_remove("VPCSH_CONFIG")
        .env("XDG_CONFIG_HOME", sb.dir.0.join("config"))
        .output()
        .unwrap()
        .into();
    assert_eq!(run.code, 0, "{run:?}");
    // A lower bound, not a speed claim: an unanswered probe cannot give up before its wait,
    // and the sandbox default (0.5 s) plus the apply stays well under 3 s.
    let waited = started.elapsed();
    assert!(waited >= std::time::Duration::from_secs(3), "the probe waited only {waited:?}");
}
