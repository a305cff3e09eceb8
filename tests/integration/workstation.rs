//! vpcsh on a machine that already has a firewall manager, imitated in a namespace playing
//! the real host: Docker under iptables-nft, ufw, a firewalld-like nft table, and
//! iptables-legacy. VPC traffic must get through, published ports must answer on the
//! machine and its loopback too, and the other tool's rules must be as they were after
//! vpcsh's destroy. Also `host_access`, and published ports seen from inside a sandbox.

use crate::common::*;

/// A public subnet serving a published port, and a private one behind `nat()`.
const WORKSTATION: &str = r#"
let prod = vpc("prod", "10.10.0.0/16");
let web = prod.subnet("web", "10.10.1.0/24", #{ public: true });
let app = prod.subnet("app", "10.10.2.0/24");
nat(app);
let w1 = web.host("w1");
app.host("a1");
serve(w1, 80);
publish(w1, 80, 8080);
"#;

impl FakeHost {
    /// A command run in the host namespace, which must succeed.
    fn sh(&self, args: &[&str]) -> String {
        let run = in_ns(&self.host, args);
        assert_eq!(run.code, 0, "{args:?}: {run:?}");
        run.stdout
    }

    /// The other tools' rules as their own tools show them (no counters).
    fn firewall_listing(&self) -> String {
        let iptables = in_ns(&self.host, &["iptables-nft", "-S"]).stdout;
        let ip6tables = in_ns(&self.host, &["ip6tables-nft", "-S"]).stdout;
        let nft = in_ns(&self.host, &["nft", "--stateless", "list", "ruleset"]).stdout;
        let theirs: Vec<&str> = nft.split("\ntable ").filter(|t| !t.contains("inet vpcsh {")).collect();
        format!("{iptables}\n{ip6tables}\n{}", theirs.join("\ntable "))
    }
}

/// Applies the workstation topology in `h` and checks every path a user expects.
fn check_paths(h: &FakeHost) {
    let _internet = Server::start(&h.net, 80, "internet\n");
    let script = h.state.write("prod.rhai", WORKSTATION);
    let run = h.vpcsh(&["apply", script.to_str().unwrap()]);
    assert_eq!(run.code, 0, "{run:?}");
    let ns = |host: &str| format!("{}.prod.{host}", h.prefix);
    assert_eq!(get(&ns("w1"), "198.51.100.1", 80, "/ip").as_deref(), Some("198.51.100.2\n"), "public egress");
    assert_eq!(get(&ns("a1"), "198.51.100.1", 80, "/ip").as_deref(), Some("198.51.100.2\n"), "NAT egress");
    assert_eq!(
        get(&h.net, "198.51.100.2", 8080, "/").as_deref(),
        Some("prod/w1\n"),
        "published, from outside"
    );
    assert_eq!(get(&h.host, "198.51.100.2", 8080, "/").as_deref(), Some("prod/w1\n"), "from the machine");
    assert_eq!(get(&h.host, "127.0.0.1", 8080, "/").as_deref(), Some("prod/w1\n"), "from its loopback");
    let status = h.vpcsh(&["status"]);
    assert_eq!(status.code, 0, "{status:?}");
    assert!(status.stdout.contains("vpcsh's accept rules are in place"), "{status:?}");
}

#[test]
fn beside_docker_under_iptables_nft() {
    let h = FakeHost::new();
    h.sh(&["iptables-nft", "-N", "DOCKER"]);
    h.sh(&["iptables-nft", "-N", "DOCKER-USER"]);
    h.sh(&["iptables-nft", "-A", "DOCKER-USER", "-j", "RETURN"]);
    h.sh(&["iptables-nft", "-A", "FORWARD", "-j", "DOCKER-USER"]);
    h.sh(&["iptables-nft", "-A", "FORWARD", "-o", "docker0", "-j", "DOCKER"]);
    h.sh(&["iptables-nft", "-P", "FORWARD", "DROP"]);
    h.sh(&["ip6tables-nft", "-P", "FORWARD", "DROP"]);
    let before = h.firewall_listing();
    check_paths(&h);
    // Docker's advice to other tools: rules in DOCKER-USER, vpcsh's marked as such.
    let user = h.sh(&["iptables-nft", "-S", "DOCKER-USER"]);
    assert!(user.contains("-A DOCKER-USER -i vpc-+ -m comment --comment \"vpcsh"), "{user}");
    assert!(user.contains("-A DOCKER-USER -o vpc-+ -m comment --comment \"vpcsh"), "{user}");
    assert!(h.sh(&["iptables-nft", "-S", "FORWARD"]).contains("-P FORWARD DROP"), "the policy stays");
    // Docker restarting flushes its chains: status sees it, the next apply puts them back.
    h.sh(&["iptables-nft", "-F", "DOCKER-USER"]);
    h.sh(&["iptables-nft", "-A", "DOCKER-USER", "-j", "RETURN"]);
    let status = h.vpcsh(&["status"]);
    assert!(
        status.code == 1 && status.stdout.contains("let its traffic through the host firewall"),
        "{status:?}"
    );
    let script = h.state.0.join("prod.rhai");
    assert_eq!(h.vpcsh(&["apply", script.to_str().unwrap()]).code, 0);
    assert!(ping(&format!("{}.prod.w1", h.prefix), "198.51.100.1"), "through again");
    assert_eq!(h.vpcsh(&["destroy"]).code, 0);
    assert_eq!(h.firewall_listing(), before, "Docker's rules changed");
}

#[test]
fn beside_ufw() {
    let h = FakeHost::new();
    for chain in ["ufw-before-forward", "ufw-after-forward", "ufw-reject-forward"] {
        h.sh(&["iptables-nft", "-N", chain]);
        h.sh(&["iptables-nft", "-A", "FORWARD", "-j", chain]);
    }
    h.sh(&["iptables-nft", "-A", "ufw-reject-forward", "-j", "REJECT"]);
    h.sh(&[
        "iptables-nft",
        "-A",
        "INPUT",
        "-m",
        "conntrack",
        "--ctstate",
        "RELATED,ESTABLISHED",
        "-j",
        "ACCEPT",
    ]);
    h.sh(&["iptables-nft", "-A", "INPUT", "-i", "lo", "-j", "ACCEPT"]);
    for chain in ["INPUT", "FORWARD"] {
        h.sh(&["iptables-nft", "-P", chain, "DROP"]);
    }
    let before = h.firewall_listing();
    check_paths(&h);
    let forward = h.sh(&["iptables-nft", "-S", "FORWARD"]);
    let first_rule = forward.lines().find(|l| l.starts_with("-A")).unwrap_or_default();
    assert!(first_rule.contains("vpc-+") && first_rule.contains("vpcsh"), "ahead of ufw's reject: {forward}");
    assert_eq!(h.vpcsh(&["destroy"]).code, 0);
    assert_eq!(h.firewall_listing(), before, "ufw's rules changed");
}

#[test]
fn beside_a_native_nftables_firewall() {
    let h = FakeHost::new();
    h.sh(&["nft", "add table inet fw"]);
    h.sh(&["nft", "add chain inet fw forward { type filter hook forward priority 10; policy drop; }"]);
    h.sh(&["nft", "add rule inet fw forward ct state established,related accept"]);
    let before = h.firewall_listing();
    check_paths(&h);
    let chain = h.sh(&["nft", "list", "chain", "inet", "fw", "forward"]);
    let ours = chain.lines().find(|l| l.contains("iifname \"vpc-*\"")).unwrap_or_default();
    assert!(ours.contains(" accept comment \"vpcsh"), "{chain}");
    assert!(chain.contains("policy drop"), "{chain}");
    assert_eq!(h.vpcsh(&["destroy"]).code, 0);
    assert_eq!(h.firewall_listing(), before, "the firewall's rules changed");
}

#[test]
fn beside_iptables_legacy() {
    let h = FakeHost::new();
    if in_ns(&h.host, &["iptables-legacy", "-N", "DOCKER-USER"]).code != 0 {
        eprintln!("this kernel has no legacy iptables: nothing to check");
        return;
    }
    h.sh(&["iptables-legacy", "-A", "DOCKER-USER", "-j", "RETURN"]);
    h.sh(&["iptables-legacy", "-A", "FORWARD", "-j", "DOCKER-USER"]);
    h.sh(&["iptables-legacy", "-A", "FORWARD", "-o", "docker0", "-j", "ACCEPT"]);
    h.sh(&["iptables-legacy", "-A", "INPUT", "-i", "lo", "-j", "ACCEPT"]);
    h.sh(&["iptables-legacy", "-P", "FORWARD", "DROP"]);
    let listing = || in_ns(&h.host, &["iptables-legacy", "-S"]).stdout;
    let before = listing();
    check_paths(&h);
    let during = listing();
    let ours: Vec<&str> = during.lines().filter(|l| l.contains("vpcsh")).collect();
    assert_eq!(
        ours,
        [
            "-A FORWARD -i vpc-+ -m comment --comment \"vpcsh: from its uplinks\" -j ACCEPT",
            "-A FORWARD -o vpc-+ -m comment --comment \"vpcsh: to its uplinks\" -j ACCEPT"
        ],
        "{during}"
    );
    assert!(during.contains("-A FORWARD -j DOCKER-USER") && during.contains("-P FORWARD DROP"));
    assert_eq!(h.vpcsh(&["destroy"]).code, 0);
    assert_eq!(listing(), before, "the legacy table changed");
}

#[test]
fn published_ports_answer_inside_the_sandbox_machine_and_across_vpcs() {
    let sb = Sandbox::new("pubhere");
    sb.apply(&format!(
        "{WORKSTATION}\nlet dev = vpc(\"dev\", \"10.20.0.0/16\");\ndev.subnet(\"s\", \"10.20.1.0/24\", #{{ public: true }}).host(\"d1\");"
    ));
    let machine = sb.ns("");
    for addr in ["198.51.100.2", "127.0.0.1"] {
        assert_eq!(
            get(&machine, addr, 8080, "/").as_deref(),
            Some("prod/w1\n"),
            "from the machine to {addr}"
        );
    }
    // Another VPC reaches it through the public address, as from the outside, and not
    // directly.
    assert_eq!(get(&sb.ns("dev.d1"), "198.51.100.2", 8080, "/").as_deref(), Some("prod/w1\n"));
    assert_eq!(get(&sb.ns("dev.d1"), "10.10.1.2", 80, "/"), None);
    // route_localnet only on vpcsh's own uplink ends.
    let on =
        |iface: &str| in_ns(&machine, &["cat", &format!("/proc/sys/net/ipv4/conf/{iface}/route_localnet")]);
    assert_eq!(on("vpc-prod").stdout.trim(), "1");
    assert_eq!(on("all").stdout.trim(), "0");
    assert_eq!(on("up0").stdout.trim(), "0");
}

#[test]
fn the_machine_reaches_only_vpcs_with_host_access() {
    let sb = Sandbox::new("hostaccess");
    sb.apply(
        r#"let open = vpc("open", "10.30.0.0/16", #{ host_access: true });
           let o1 = open.subnet("s", "10.30.1.0/24").host("o1");
           serve(o1, 80);
           let closed = vpc("closed", "10.31.0.0/16");
           let c1 = closed.subnet("s", "10.31.1.0/24").host("c1");
           serve(c1, 80);"#,
    );
    let machine = sb.ns("");
    assert_eq!(get(&machine, "10.30.1.2", 80, "/").as_deref(), Some("open/o1\n"));
    assert!(ping(&machine, "10.30.1.2"));
    assert_eq!(get(&machine, "10.31.1.2", 80, "/"), None, "no host access, no way in");
    assert_eq!(get(&sb.ns("internet"), "10.30.1.2", 80, "/"), None, "host access is the machine's only");
    assert!(sb.run(&["list"]).stdout.contains("vpc open 10.30.0.0/16, host access"));
}

#[test]
fn a_table_another_process_owns_is_reported_as_blocking() {
    use std::io::Write;
    use std::process::{Command, Stdio};
    let h = FakeHost::new();
    // firewalld keeps its table with nftables' `owner` flag: only its process may change it.
    let mut owner = Command::new("ip")
        .args(["netns", "exec", &h.host, "nft", "-i"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let mut input = owner.stdin.take().unwrap();
    input.write_all(b"add table inet owned { flags owner; }\n").unwrap();
    input
        .write_all(
            b"add chain inet owned filter_FORWARD { type filter hook forward priority 0; policy drop; }\n",
        )
        .unwrap();
    input.flush().unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while !in_ns(&h.host, &["nft", "list", "tables"]).stdout.contains("inet owned") {
        assert!(std::time::Instant::now() < deadline, "nft -i made no table");
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let _internet = Server::start(&h.net, 80, "internet\n");
    let script = h.state.write("prod.rhai", WORKSTATION);
    let run = h.vpcsh(&["apply", script.to_str().unwrap()]);
    assert_eq!(run.code, 0, "{run:?}");
    assert!(run.stderr.contains("inet owned filter_FORWARD drops"), "apply says so: {run:?}");
    let w1 = format!("{}.prod.w1", h.prefix);
    assert_eq!(get(&w1, "198.51.100.1", 80, "/"), None, "dropped indeed");
    let status = h.vpcsh(&["status"]);
    assert_eq!(status.code, 1, "{status:?}");
    assert!(status.stdout.contains("blocked  vpc prod"), "{status:?}");
    assert!(status.stdout.contains("by the host firewall (chain inet owned filter_FORWARD)"), "{status:?}");
    let explain = h.vpcsh(&["explain", "prod/w1", "internet", "--port", "80"]);
    assert!(
        explain.code == 1 && explain.stdout.contains("the host firewall: inet owned filter_FORWARD"),
        "{explain:?}"
    );
    // Its owner gone, the table goes too, and nothing blocks any more.
    drop(input);
    let _ = owner.kill();
    let _ = owner.wait();
    assert_eq!(h.vpcsh(&["status"]).code, 0);
    assert_eq!(get(&w1, "198.51.100.1", 80, "/").as_deref(), Some("internet\n"));
}
