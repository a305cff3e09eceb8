//! The REPL driven through a pseudo-terminal, as a person would: declare, apply live, probe,
//! make a mistake and carry on, type over several lines, complete a name, leave with Ctrl-D.

use std::io::{Read, Write};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::common::*;

/// vpcsh's REPL on a pseudo-terminal that `script` (util-linux) provides.
struct Session {
    child: Child,
    input: ChildStdin,
    seen: Arc<Mutex<String>>,
    read: usize,
}

impl Session {
    fn start(sb: &Sandbox) -> Self {
        // `exec`: `script` runs the command through $SHELL, and a shell such as dash that
        // waits for vpcsh would take the Ctrl-C meant for vpcsh and die of it on exit.
        let command = format!("exec {VPCSH} --sandbox {} --state-dir {} repl", sb.name, sb.dir.0.display());
        let mut child = Command::new("script")
            .args(["-qfec", &command, "/dev/null"])
            .env("TERM", "xterm")
            .env("NO_COLOR", "1")
            .env("HOME", &sb.dir.0)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let seen = Arc::new(Mutex::new(String::new()));
        let mut out = child.stdout.take().unwrap();
        let sink = seen.clone();
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok(n) = out.read(&mut buf) {
                if n == 0 {
                    break;
                }
                sink.lock().unwrap().push_str(&String::from_utf8_lossy(&buf[..n]));
            }
        });
        let input = child.stdin.take().unwrap();
        Session { child, input, seen, read: 0 }
    }

    /// Waits until `text` appears in what the terminal showed since the last call.
    fn expect(&mut self, text: &str) {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let seen = self.seen.lock().unwrap().clone();
            if let Some(i) = seen[self.read..].find(text) {
                self.read += i + text.len();
                return;
            }
            if Instant::now() >= deadline || matches!(self.child.try_wait(), Ok(Some(_))) {
                let _ = self.child.kill();
                panic!("never saw {text:?}; the terminal showed:\n{}", &seen[self.read..]);
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    fn send(&mut self, keys: &str) {
        self.input.write_all(keys.as_bytes()).unwrap();
        self.input.flush().unwrap();
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Waits until something runs inside `ns`, so that a Ctrl-C sent next reaches it.
fn wait_for_a_process_in(ns: &str) {
    let deadline = Instant::now() + Duration::from_secs(20);
    let pids = || Command::new("ip").args(["netns", "pids", ns]).output().unwrap().stdout;
    while pids().is_empty() {
        assert!(Instant::now() < deadline, "nothing started in {ns}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn a_repl_session_through_a_terminal() {
    let sb = Sandbox::new("repl");
    let mut s = Session::start(&sb);
    s.expect("vpcsh> ");
    s.send("let prod = vpc(\"prod\", \"10.31.0.0/16\");\r");
    s.expect("created");
    // Multi-line: the open `#{` keeps the input going.
    s.send("let web = prod.subnet(\"web\", \"10.31.1.0/24\", #{\r");
    s.send(" public: true });\r");
    s.expect("created");
    assert!(sb.namespaces().contains(&sb.ns("prod.web")), "applied live: {:?}", sb.namespaces());
    s.expect("vpcsh> ");
    s.send("ping(web, web.gateway)\r");
    s.expect("true");
    // A mistake is a diagnostic; the session and its state carry on.
    s.send("prod.subnte(\"db\", \"10.31.2.0/24\")\r");
    s.expect("did you mean `subnet`");
    s.send("web.host(\"w2\").ip\r");
    s.expect("10.31.1.");
    // Completion: `pin` + Tab becomes `ping`.
    s.send("pin\t");
    s.expect("ping");
    s.send("(web, internet())\r");
    s.expect("true");
    // Mininet's habit: a host name first runs the rest inside that host.
    s.send("w2 ip -4 -o addr show eth0\r");
    s.expect("10.31.1.");
    s.send(":help peer\r");
    s.expect("never transitively");
    // :save writes a script that rebuilds the session, and it checks clean.
    let saved = sb.dir.0.join("saved.rhai");
    s.send(&format!(":save {}\r", saved.display()));
    s.expect("wrote");
    let check = vpcsh().arg("check").arg(&saved).output().unwrap();
    assert!(check.status.success(), "{}", String::from_utf8_lossy(&check.stderr));
    assert!(std::fs::read_to_string(&saved).unwrap().contains("host(\"w2\""));
    s.send("\x04");
    let status = s.child.wait().unwrap();
    assert!(status.success(), "{status:?}");
    // What the session built is there after it ends, checked from outside.
    assert!(ping(&sb.ns("prod.w2"), "10.31.1.1"));
}

#[test]
fn a_failed_input_leaves_no_trace_and_ctrl_c_returns_to_the_prompt() {
    let sb = Sandbox::new("forgive");
    let mut s = Session::start(&sb);
    s.expect("vpcsh> ");
    s.send("let v = vpc(\"v\", \"10.32.0.0/16\"); let u = v.subnet(\"u\", \"10.32.1.0/24\"); let u1 = u.host(\"u1\");\r");
    s.expect("created");
    s.expect("vpcsh> ");
    // A subnet outside its VPC: a diagnostic, and then the session is as before the input.
    s.send("v.subnet(\"bad\", \"10.99.2.0/24\")\r");
    s.expect("not inside VPC");
    s.expect("vpcsh> ");
    s.send("let v2 = vpc(\"v2\", \"10.33.0.0/16\"); v2.subnet(\"s\", \"10.33.1.0/24\");\r");
    s.expect("created");
    s.expect("vpcsh> ");
    s.send("u1 ip -4 -o addr show eth0\r");
    s.expect("10.32.1.");
    s.expect("vpcsh> ");
    // An input that made something and then failed takes back what it made.
    s.send(
        "let tmp = vpc(\"tmp\", \"10.34.0.0/16\"); tmp.subnet(\"t\", \"10.34.1.0/24\"); apply(); nosuch();\r",
    );
    s.expect("no function `nosuch`");
    s.expect("the input was taken back");
    s.expect("vpcsh> ");
    assert!(!sb.namespaces().contains(&sb.ns("tmp")), "{:?}", sb.namespaces());
    // Ctrl-C stops a command in a host and the session goes on.
    s.send("u1 sleep 30\r");
    wait_for_a_process_in(&sb.ns("v.u1"));
    let started = Instant::now();
    s.send("\x03");
    s.expect("vpcsh> ");
    assert!(started.elapsed() < Duration::from_secs(10), "Ctrl-C stopped the command");
    s.send("40 + 2\r");
    s.expect("42");
    s.expect("vpcsh> ");
    // :undo takes back the last input (v2), :reset the rest once agreed to.
    s.send(":undo\r");
    s.expect("took back");
    s.expect("vpcsh> ");
    assert!(!sb.namespaces().contains(&sb.ns("v2")), "{:?}", sb.namespaces());
    assert!(sb.namespaces().contains(&sb.ns("v.u1")));
    s.send(":reset\r");
    s.expect("[y/N]");
    s.send("y\r");
    s.expect("reset:");
    s.expect("vpcsh> ");
    assert!(!sb.namespaces().contains(&sb.ns("v")), "{:?}", sb.namespaces());
    s.send(":help ping\r");
    s.expect("ICMP echo");
    s.expect("vpcsh> ");
    s.send("\x04");
    let status = s.child.wait().unwrap();
    assert!(status.success(), "{status:?}; the terminal showed:\n{}", s.seen.lock().unwrap());
}

#[test]
fn the_repl_cannot_take_over_another_stacks_vpc() {
    let sb = Sandbox::new("replstack");
    sb.apply("let a = vpc(\"a\", \"10.35.0.0/16\"); a.subnet(\"s\", \"10.35.1.0/24\");");
    let mut s = Session::start(&sb);
    s.expect("vpcsh> ");
    s.send("let a = vpc(\"a\", \"10.36.0.0/16\"); a.subnet(\"t\", \"10.36.1.0/24\");\r");
    s.expect("belongs to stack `main`");
    s.expect("vpcsh> ");
    s.send("\x04");
    assert!(s.child.wait().unwrap().success());
    let list = sb.run(&["list"]);
    assert!(list.stdout.contains("vpc a 10.35.0.0/16 (stack main"), "{list:?}");
    assert!(sb.namespaces().contains(&sb.ns("a.s")) && !sb.namespaces().contains(&sb.ns("a.t")));
}

#[test]
fn mininet_style_commands_take_ipv6_with_dash_6() {
    let sb = Sandbox::new("repl6");
    let mut s = Session::start(&sb);
    s.expect("vpcsh> ");
    s.send("let v = vpc(\"v\", \"10.37.0.0/16\", #{ ipv6: \"fd37::/56\" }); let n = v.subnet(\"n\", \"10.37.1.0/24\", #{ ipv6: true }); let x1 = n.host(\"x1\"); let x2 = n.host(\"x2\");\r");
    s.expect("created");
    s.expect("vpcsh> ");
    s.send("x2.ip6\r");
    s.expect("fd37::3");
    s.send("x1 ping -6 -c1 -W1 x2\r");
    s.expect("from fd37::3");
    s.expect("vpcsh> ");
    s.send(":explain x1 internet 80\r");
    s.expect("private and has no nat()");
    s.expect("vpcsh> ");
    s.send(":verify\r");
    s.expect("0 mismatches");
    s.expect("vpcsh> ");
    s.send("\x04");
    assert!(s.child.wait().unwrap().success());
}
