//! One VPC over several machines: sandbox machines joined by a simulated fabric, each
//! building its part of the same script, checked with packets and from outside.

use std::process::Command;

use crate::common::*;

/// Two VPCs with the same CIDR over three nodes; `prod/app` spans two of them.
const TWO_VPCS: &str = r#"
let n1 = node("n1", #{ underlay: "192.0.2.11" });
let n2 = node("n2", #{ underlay: "192.0.2.12" });
let n3 = node("n3", #{ underlay: "192.0.2.13" });
let prod = vpc("prod", "10.10.0.0/16");
let web = prod.subnet("web", "10.10.1.0/24", #{ public: true });
let app = prod.subnet("app", "10.10.2.0/24", #{ nodes: [n2, n3] });
let w1 = web.host("w1", #{ node: n1 });
let w2 = web.host("w2", #{ node: n2 });
let a3 = app.host("a3", #{ node: n3 });
nat(app);
publish(w2, 80, 8080);
serve(w2, 80);
serve(a3, 80);
let dev = vpc("dev", "10.10.0.0/16");
let dweb = dev.subnet("web", "10.10.1.0/24");
let d1 = dweb.host("d1", #{ node: n1 });
let d2 = dweb.host("d2", #{ node: n2 });
serve(d2, 80);
"#;

#[test]
fn static_fabric_carries_subnets_across_nodes_and_keeps_same_cidr_vpcs_apart() {
    let f = Fabric::new("fx", &["n1", "n2", "n3"]);
    f.apply_everywhere(TWO_VPCS);
    stretched_subnets_work(&f, TWO_VPCS);
    // vpcsh gave every node's segment its flood list.
    let fdb = fdb(&f.node("n1").ns("prod"), "x-web");
    for peer in ["192.0.2.12", "192.0.2.13"] {
        assert!(fdb.contains(&format!("00:00:00:00:00:00 dst {peer}")), "no flood entry to {peer}: {fdb}");
    }
    assert!(!fdb.contains("dst 192.0.2.11"), "floods to itself: {fdb}");
}

#[test]
fn evpn_fabric_learns_macs_and_endpoints_over_bgp() {
    let f = Fabric::new("fe", &["n1", "n2", "n3"]);
    let script = format!("fabric(#{{ control: \"evpn\" }});\n{TWO_VPCS}");
    let path = f.nodes[0].1.script(&script);
    let plan = f.run("n1", &["plan", path.to_str().unwrap()]);
    if !frr_can_run() {
        // A user namespace of one's own has no `frr` user to run FRR as: vpcsh says so.
        assert_eq!(plan.code, 1, "{plan:?}");
        assert!(plan.stderr.contains("BGP EVPN") && plan.stderr.contains("apt-get install frr"), "{plan:?}");
        return;
    }
    assert!(plan.stdout.contains("start FRR bgpd in"), "{plan:?}");
    assert!(!plan.stdout.contains("flood"), "vpcsh configures what BGP should learn: {plan:?}");
    f.apply_everywhere(&script);
    f.wait_for_evpn();
    stretched_subnets_work(&f, &script);
    let status = f.run("n1", &["status"]);
    for peer in ["n2 192.0.2.12", "n3 192.0.2.13"] {
        assert!(status.stdout.contains(&format!("ok       node {peer}: BGP Established")), "{status:?}");
    }

    // From outside: FRR on n1 learned w2's MAC from n2 (type 2), and each node as a
    // flood endpoint (type 3), which it installed itself.
    let list = f.run("n1", &["list", "--json"]);
    let json: serde_json::Value = serde_json::from_str(&list.stdout).unwrap();
    let vni = json["vpcs"][0]["subnets"][0]["vni"].as_u64().unwrap();
    let vty = format!("/run/vpcsh/frr/{}", f.node("n1").name);
    let macs = Command::new("vtysh")
        .args(["--vty_socket", &vty, "-c", &format!("show evpn mac vni {vni}")])
        .output()
        .unwrap();
    let macs = String::from_utf8_lossy(&macs.stdout);
    let w2_mac =
        in_ns(&f.host("n2", "prod.w2"), &["cat", "/sys/class/net/eth0/address"]).stdout.trim().to_string();
    assert!(
        macs.lines().any(|l| l.starts_with(&w2_mac) && l.contains("remote") && l.contains("192.0.2.12")),
        "w2's MAC not learned from n2: {macs}"
    );
    let fdb = fdb(&f.node("n1").name, &format!("v-{vni:06x}"));
    for peer in ["192.0.2.12", "192.0.2.13"] {
        assert!(fdb.contains(&format!("00:00:00:00:00:00 dst {peer}")), "no flood entry to {peer}: {fdb}");
    }
    assert!(fdb.contains(&format!("{w2_mac} dst 192.0.2.12")) && fdb.contains("extern_learn"), "{fdb}");

    for (node, sb) in &f.nodes {
        let destroy = f.run(node, &["destroy"]);
        assert_eq!(destroy.code, 0, "{destroy:?}");
        assert!(frr_of(&sb.name).is_empty(), "FRR outlived {node}: {:?}", frr_of(&sb.name));
    }
}

/// Whether FRR is installed and its user exists here (not in a user namespace of our own,
/// where only root is mapped).
fn frr_can_run() -> bool {
    let whole_map = std::fs::read_to_string("/proc/self/uid_map")
        .is_ok_and(|m| m.split_whitespace().nth(2) == Some("4294967295"));
    std::path::Path::new("/usr/lib/frr/bgpd").exists() && whole_map
}

/// `bridge fdb show dev DEV` in a namespace.
fn fdb(ns: &str, dev: &str) -> String {
    let out = Command::new("bridge").args(["-n", ns, "fdb", "show", "dev", dev]).output().unwrap();
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The FRR daemons running for one sandbox machine, by pid.
fn frr_of(sandbox: &str) -> Vec<String> {
    let dir = format!("/run/vpcsh/frr/{sandbox}/");
    let procs = std::fs::read_dir("/proc").unwrap().filter_map(|e| e.ok());
    procs
        .filter_map(|e| {
            let cmd = std::fs::read(e.path().join("cmdline")).ok()?;
            let cmd = String::from_utf8_lossy(&cmd).replace('\0', " ");
            (cmd.starts_with("/usr/lib/frr/") && cmd.contains(&dir))
                .then(|| e.file_name().to_string_lossy().into_owned())
        })
        .collect()
}

/// What both control planes must do with `TWO_VPCS` (as `script`) applied everywhere.
fn stretched_subnets_work(f: &Fabric, script: &str) {
    let w1 = f.host("n1", "prod.w1");
    let d1 = f.host("n1", "dev.d1");
    // One subnet over two nodes, then routed to another subnet on a third.
    assert_eq!(get(&w1, "10.10.1.3", 80, "/").as_deref(), Some("prod/w2\n"));
    assert_eq!(get(&w1, "10.10.2.2", 80, "/").as_deref(), Some("prod/a3\n"));
    assert!(ping(&f.host("n3", "prod.a3"), "10.10.1.2"), "back from n3 to n1");
    // The same addresses in dev lead to dev's hosts only.
    assert_eq!(get(&d1, "10.10.1.3", 80, "/").as_deref(), Some("dev/d2\n"));
    assert!(!ping(&d1, "10.10.2.2"), "dev reached prod's app subnet");
    // The largest packet that fits the underlay passes unfragmented; one byte more cannot.
    let df = |size: &str| in_ns(&w1, &["ping", "-c1", "-W1", "-M", "do", "-s", size, "10.10.1.3"]).code == 0;
    assert!(df("1422"), "a 1450-byte packet did not cross");
    assert!(!df("1423"), "a packet larger than the inner MTU was sent");
    // Internet, NAT and published ports are each node's own: a public host and a NAT'd
    // one leave through their node's uplink; a port is published where its host runs.
    assert!(ping(&f.host("n2", "prod.w2"), "198.51.100.1"));
    assert!(ping(&f.host("n3", "prod.a3"), "198.51.100.1"), "nat() on n3");
    let outside = |node: &str| f.node(node).ns("internet");
    assert_eq!(get(&outside("n2"), "198.51.100.2", 8080, "/").as_deref(), Some("prod/w2\n"));
    assert_eq!(get(&outside("n1"), "198.51.100.2", 8080, "/"), None, "n1 publishes a host it does not run");

    // From outside: the kernel's own view of the segment.
    let list = f.run("n1", &["list", "--json"]);
    let json: serde_json::Value = serde_json::from_str(&list.stdout).unwrap();
    let vni = json["vpcs"][0]["subnets"][0]["vni"].as_u64().expect("a VNI in list --json");
    let links = ip(&f.node("n1").ns(""), &["-d", "link"]) + &ip(&f.node("n1").ns("prod"), &["-d", "link"]);
    assert!(links.contains(&format!("vxlan id {vni} local 192.0.2.11")), "{links}");
    // Every node runs its hosts only.
    assert!(!list_netns().contains(&f.host("n1", "prod.w2")), "n1 runs a host of n2");

    for (node, _) in &f.nodes {
        let again = f.run(node, &["apply", f.nodes[0].1.script(script).to_str().unwrap()]);
        assert!(again.stdout.contains("0 created, 0 changed, 0 deleted"), "{node}: {again:?}");
        let status = f.run(node, &["status"]);
        assert_eq!(status.code, 0, "{node}: {status:?}");
    }
}

#[test]
fn each_node_destroys_its_part_and_the_last_removes_the_fabric() {
    let f = Fabric::new("fd", &["n1", "n2", "n3"]);
    f.apply_everywhere(TWO_VPCS);
    let destroy = f.run("n1", &["destroy"]);
    assert_eq!(destroy.code, 0, "{destroy:?}");
    assert!(f.node("n1").namespaces().is_empty(), "n1 left {:?}", f.node("n1").namespaces());
    assert!(list_netns().contains(&f.name), "the fabric went with its first machine");
    assert!(!ip(&f.name, &["-o", "link"]).contains("n-n1"), "n1's port stayed on the fabric");
    assert!(ping(&f.host("n3", "prod.a3"), "10.10.1.3"), "n2 and n3 lost each other");
    for node in ["n2", "n3"] {
        let destroy = f.run(node, &["destroy"]);
        assert_eq!(destroy.code, 0, "{destroy:?}");
        assert!(f.node(node).namespaces().is_empty(), "{node} left {:?}", f.node(node).namespaces());
    }
    assert!(!list_netns().contains(&f.name), "the fabric outlived its last machine");
}

#[test]
fn nodes_applied_at_the_same_time_share_the_fabric() {
    let f = Fabric::new("fs", &["n1", "n2", "n3"]);
    let path = f.nodes[0].1.script(TWO_VPCS);
    let path = path.to_str().unwrap();
    let fabric = &f;
    let runs: Vec<Run> = std::thread::scope(|s| {
        let handles: Vec<_> = fabric
            .nodes
            .iter()
            .map(|(node, _)| s.spawn(move || fabric.run(node, &["apply", path])))
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    for run in &runs {
        assert_eq!(run.code, 0, "{run:?}");
    }
    assert_eq!(get(&f.host("n1", "prod.w1"), "10.10.2.2", 80, "/").as_deref(), Some("prod/a3\n"));
    let ports = ip(&f.name, &["-o", "link"]);
    assert!(["n-n1", "n-n2", "n-n3"].iter().all(|p| ports.contains(p)), "{ports}");
}

#[test]
fn peerings_cross_nodes() {
    let f = Fabric::new("fp", &["n1", "n2"]);
    f.apply_everywhere(
        r#"
let n1 = node("n1", #{ underlay: "192.0.2.21/24" });
let n2 = node("n2", #{ underlay: "192.0.2.22/24" });
let a = vpc("a", "10.1.0.0/16"); let a1 = a.subnet("s1", "10.1.1.0/24", #{ nodes: [n1] });
let b = vpc("b", "10.2.0.0/16"); let b1 = b.subnet("s1", "10.2.1.0/24", #{ nodes: [n2] });
let c = vpc("c", "10.3.0.0/16"); c.subnet("s1", "10.3.1.0/24", #{ nodes: [n2] });
peer(a, b);
"#,
    );
    assert!(ping(&f.host("n1", "a.s1"), "10.2.1.2"), "a on n1 to b on n2");
    assert!(ping(&f.host("n2", "b.s1"), "10.1.1.2"), "b on n2 to a on n1");
    assert!(!ping(&f.host("n1", "a.s1"), "10.3.1.2"), "a reached c, which it does not peer with");
    // c is on n2 only, and nothing peers it with n1's VPCs: n1 has no router for it.
    assert!(!list_netns().contains(&f.node("n1").ns("c")));
}

#[test]
fn a_node_killed_mid_apply_converges_on_the_next() {
    let f = Fabric::new("fk", &["n1", "n2"]);
    let script = f.nodes[0].1.script(
        r#"
let n1 = node("n1", #{ underlay: "192.0.2.31" });
let n2 = node("n2", #{ underlay: "192.0.2.32" });
let v = vpc("v", "10.5.0.0/16");
let s = v.subnet("s", "10.5.1.0/24");
s.host("h1", #{ node: n1 }); s.host("h2", #{ node: n2 });
"#,
    );
    let script = script.to_str().unwrap();
    let run = f.run("n1", &["apply", script]);
    assert_eq!(run.code, 0, "{run:?}");
    // Killed after the namespaces, after the links, and after most of the rest.
    for after in [3, 9, 14] {
        kill_and_recover(&f, script, after, "static");
        assert!(ping(&f.host("n1", "v.h1"), "10.5.1.3"), "h1 to h2 after a kill at {after}");
        let destroy = f.run("n2", &["destroy"]);
        assert_eq!(destroy.code, 0, "{destroy:?}");
    }
}

/// Kills node n2's apply after `after` kernel operations, then applies again: that apply
/// must succeed, and (its sessions up, with EVPN) a third one find nothing to do.
fn kill_and_recover(f: &Fabric, script: &str, after: usize, control: &str) {
    let killed: Run =
        f.cmd("n2", &["apply", script]).env("VPCSH_CRASH_AFTER", after.to_string()).output().unwrap().into();
    assert_ne!(killed.code, 0, "{control}: not killed after {after} steps: {killed:?}");
    let run = f.run("n2", &["apply", script]);
    assert_eq!(run.code, 0, "{control}, killed after {after}: {run:?}");
    if control == "evpn" {
        f.wait_for_evpn();
    }
    let again = f.run("n2", &["apply", script]);
    assert!(again.stdout.contains("0 created, 0 changed, 0 deleted"), "{control}, {after}: {again:?}");
}

#[test]
fn a_machine_killed_while_joining_leaves_the_fabric_to_the_others() {
    let f = Fabric::new("fj", &["n1", "n2"]);
    let script = f.nodes[0].1.script(
        r#"
let n1 = node("n1", #{ underlay: "192.0.2.51" });
let n2 = node("n2", #{ underlay: "192.0.2.52" });
let s = vpc("v", "10.8.0.0/16").subnet("s", "10.8.1.0/24");
s.host("h1", #{ node: n1 }); s.host("h2", #{ node: n2 });
"#,
    );
    let script = script.to_str().unwrap();
    // n1 dies right after making the fabric's namespace; n2 joins what it made.
    let killed: Run = f.cmd("n1", &["apply", script]).env("VPCSH_CRASH_AFTER", "3").output().unwrap().into();
    assert_ne!(killed.code, 0, "{killed:?}");
    assert!(list_netns().contains(&f.name), "the kill came before the fabric was made");
    let joined = f.run("n2", &["apply", script]);
    assert_eq!(joined.code, 0, "{joined:?}");
    // n1 cleaning up after its crash leaves the fabric, which n2 still uses.
    assert_eq!(f.run("n1", &["destroy"]).code, 0);
    assert!(ip(&f.name, &["-o", "link"]).contains("n-n2"), "n2 lost its port");
    assert_eq!(f.run("n1", &["apply", script]).code, 0);
    assert!(ping(&f.host("n1", "v.h1"), "10.8.1.3"), "h1 to h2 once n1 is back");
}

#[test]
fn a_failed_step_rolls_back_only_this_nodes_part() {
    let f = Fabric::new("fr", &["n1", "n2"]);
    let path = f.nodes[0].1.script(
        &TWO_VPCS
            .replace("let n3 = node(\"n3\", #{ underlay: \"192.0.2.13\" });", "")
            .replace("[n2, n3]", "[n2]")
            .replace("#{ node: n3 }", "#{ node: n2 }"),
    );
    let path = path.to_str().unwrap();
    assert_eq!(f.run("n1", &["apply", path]).code, 0);
    let failed: Run =
        f.cmd("n2", &["apply", path]).env("VPCSH_INJECT_FAULT", "add-flood").output().unwrap().into();
    assert_eq!(failed.code, 1, "{failed:?}");
    assert!(failed.stderr.contains("rolled back"), "{failed:?}");
    assert!(f.node("n2").namespaces().is_empty(), "n2 left {:?}", f.node("n2").namespaces());
    assert!(!ip(&f.name, &["-o", "link"]).contains("n-n2"), "n2's port stayed on the fabric");
    assert!(ip(&f.name, &["-o", "link"]).contains("n-n1"), "n1's port went too");
    assert_eq!(f.run("n2", &["apply", path]).code, 0);
    assert_eq!(get(&f.host("n1", "prod.w1"), "10.10.1.3", 80, "/").as_deref(), Some("prod/w2\n"));
}

#[test]
fn a_fabric_script_says_which_node_is_missing_or_unknown() {
    let sb = Sandbox::new("fnode");
    let script = sb.script(TWO_VPCS);
    let script = script.to_str().unwrap();
    let run = sb.run(&["apply", script]);
    assert_eq!(run.code, 1, "{run:?}");
    assert!(
        run.stderr.contains("spread over nodes (n1, n2, n3)") && run.stderr.contains("--node"),
        "{run:?}"
    );
    let run = sb.run(&["--node", "n9", "apply", script]);
    assert_eq!(run.code, 1, "{run:?}");
    assert!(run.stderr.contains("no node is called `n9`"), "{run:?}");
    let run = sb.run(&["--node", "n1", "apply", script]);
    assert_eq!(run.code, 1, "{run:?}");
    assert!(run.stderr.contains("--fabric NAME"), "{run:?}");
    assert!(sb.namespaces().is_empty(), "a refused apply made {:?}", sb.namespaces());
    // `check` validates the whole script on any machine, without a node; the gallery's
    // fabric example too.
    let example = concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/fabric/three-nodes.rhai");
    for script in [script, example] {
        let check: Run = vpcsh().args(["check", script]).output().unwrap().into();
        assert_eq!(check.code, 0, "{check:?}");
        assert!(check.stdout.contains(": ok ("), "{check:?}");
    }
    // Its picture says where each host runs and which segment each subnet is.
    let graph: Run = vpcsh().args(["graph", example, "--format", "mermaid"]).output().unwrap().into();
    assert!(graph.stdout.contains("w1 10.10.1.2 @n1") && graph.stdout.contains(", vni "), "{graph:?}");
}

/// `VPCSH_CAMPAIGN=1`: a node killed after every kernel operation of its apply, in both
/// control planes; after each kill the next apply converges, packets cross, and a third
/// apply has nothing to do.
#[test]
fn a_node_killed_after_every_step_converges() {
    if std::env::var_os("VPCSH_CAMPAIGN").is_none() {
        return;
    }
    for control in ["static", "evpn"] {
        let f = Fabric::new("fc", &["n1", "n2"]);
        let script = f.nodes[0].1.script(&format!(
            r#"fabric(#{{ control: "{control}" }});
let n1 = node("n1", #{{ underlay: "192.0.2.41" }});
let n2 = node("n2", #{{ underlay: "192.0.2.42" }});
let v = vpc("v", "10.6.0.0/16");
let s = v.subnet("s", "10.6.1.0/24", #{{ public: true }});
let t = v.subnet("t", "10.6.2.0/24");
s.host("h1", #{{ node: n1 }}); s.host("h2", #{{ node: n2 }}); t.host("h3", #{{ node: n2 }});
serve(s, 80);
"#
        ));
        let script = script.to_str().unwrap();
        assert_eq!(f.run("n1", &["apply", script]).code, 0);
        let full = f.run("n2", &["apply", script]);
        let steps: usize = full
            .stdout
            .lines()
            .last()
            .unwrap_or_default()
            .split(", ")
            .filter_map(|p| p.split_whitespace().next()?.parse::<usize>().ok())
            .sum();
        assert_eq!(f.run("n2", &["destroy"]).code, 0);
        for after in 1..steps {
            kill_and_recover(&f, script, after, control);
            assert!(ping(&f.host("n2", "v.h2"), "10.6.1.2"), "{control}, killed after {after}: h2 to h1");
            assert!(ping(&f.host("n2", "v.h3"), "10.6.1.2"), "{control}, killed after {after}: h3 to h1");
            assert_eq!(f.run("n2", &["destroy"]).code, 0);
        }
        println!("{control}: {} crash points of {steps} converged", steps - 1);
    }
}
