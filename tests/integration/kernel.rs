//! The core against the real kernel: namespaces, links, addresses and routes made by
//! vpcsh, checked with packets and with `ip` from outside.

use std::fs;
use std::process::Stdio;

use crate::common::*;

const TWO_SUBNETS: &str = r#"
let prod = vpc("prod", "10.9.0.0/16");
let web = subnet(prod, "web", "10.9.1.0/24", #{ public: true });
let app = prod.subnet("app", "10.9.2.0/24");
host(web, "w1");
web.host("w2", #{ ip: "10.9.1.20" });
host(web, "w3");
"#;

#[test]
fn hosts_get_fixed_and_automatic_addresses_and_a_default_route() {
    let sb = Sandbox::new("addr");
    sb.apply(TWO_SUBNETS);
    let eth0 = |host: &str| ip(&sb.ns(&format!("prod.{host}")), &["-4", "-o", "addr", "show", "dev", "eth0"]);
    assert!(eth0("w1").contains("10.9.1.2/24"), "{}", eth0("w1"));
    assert!(eth0("w2").contains("10.9.1.20/24"), "{}", eth0("w2"));
    assert!(eth0("w3").contains("10.9.1.3/24"), "{}", eth0("w3"));
    // The subnet with no declared host got one named after it.
    assert!(eth0("app").contains("10.9.2.2/24"), "{}", eth0("app"));
    let routes = ip(&sb.ns("prod.w1"), &["-4", "route", "show", "default"]);
    assert!(routes.contains("default via 10.9.1.1 dev eth0"), "{routes}");
    let router = ip(&sb.ns("prod"), &["-4", "-o", "addr"]);
    assert!(router.contains("10.9.1.1/24") && router.contains("10.9.2.1/24"), "{router}");
}

#[test]
fn subnets_of_one_vpc_route_to_each_other() {
    let sb = Sandbox::new("route");
    sb.apply(TWO_SUBNETS);
    let w1 = sb.ns("prod.w1");
    assert!(ping(&w1, "10.9.1.20"), "same subnet");
    assert!(ping(&w1, "10.9.2.2"), "other subnet through the router");
    assert!(ping(&w1, "10.9.2.1"), "the other subnet's gateway");
    assert!(ping(&sb.ns("prod.app"), "10.9.1.3"), "and back");
}

#[test]
fn vpcs_are_isolated_even_with_the_same_cidr() {
    let sb = Sandbox::new("iso");
    sb.apply(
        r#"
        let a = vpc("a", "10.1.0.0/16");
        subnet(a, "s1", "10.1.1.0/24").host("a1", #{ ip: "10.1.1.10" });
        let b = vpc("b", "10.1.0.0/16");
        subnet(b, "s1", "10.1.1.0/24").host("b1", #{ ip: "10.1.1.11" });
        subnet(b, "s2", "10.1.2.0/24");
        let c = vpc("c", "10.2.0.0/16");
        subnet(c, "s1", "10.2.1.0/24");
        "#,
    );
    let a1 = sb.ns("a.a1");
    assert!(ping(&a1, "10.1.1.1"), "a host reaches its own gateway");
    assert!(!ping(&a1, "10.1.1.11"), "a same-CIDR VPC's host");
    assert!(!ping(&a1, "10.1.2.1"), "a same-CIDR VPC's other gateway");
    assert!(!ping(&a1, "10.1.2.2"), "a same-CIDR VPC's other subnet");
    assert!(!ping(&a1, "10.2.1.2"), "another VPC's host");
    assert!(!ping(&a1, "10.2.1.1"), "another VPC's gateway");
    assert!(!ping(&sb.ns("b.b1"), "10.1.1.10"), "and the other way");
    assert!(!ping(&sb.ns("c.s1"), "10.1.1.10"), "from the third VPC");
    assert!(!ping(&sb.ns("c"), "10.1.1.10"), "from another VPC's router");
    // The routers have no link but their own subnets' and their uplink.
    let links = ip(&sb.ns("a"), &["-o", "link"]);
    assert_eq!(links.lines().count(), 4, "lo, one bridge, one host veth, igw: {links}");
}

#[test]
fn reapplying_an_unchanged_script_changes_nothing() {
    let sb = Sandbox::new("idem");
    let script = sb.script(TWO_SUBNETS);
    let path = script.to_str().unwrap();
    let first = sb.run(&["apply", path]);
    assert_eq!(first.code, 0, "{first:?}");
    assert!(!first.stdout.contains(" 0 created"), "{first:?}");
    // Asked of the kernel too: the same links (index, name, MAC) and addresses, before and
    // after. Not the operstate: a fresh bridge's goes from UNKNOWN to UP on its own.
    let identity = |out: String| -> Vec<String> {
        out.lines()
            .map(|l| {
                let words: Vec<&str> = l.split_whitespace().collect();
                let mac = words.iter().skip_while(|w| !w.starts_with("link/")).nth(1).unwrap_or(&"");
                format!("{} {} {mac}", words[0], words[1])
            })
            .collect()
    };
    let links =
        || (identity(ip(&sb.ns("prod"), &["-o", "link"])), ip(&sb.ns("prod.w1"), &["-o", "-4", "addr"]));
    let before = links();
    let again = sb.run(&["apply", path]);
    assert_eq!(links(), before, "a re-apply recreated something");
    assert_eq!(again.stdout.trim(), "0 created, 0 changed, 0 deleted", "{again:?}");
    let plan = sb.run(&["plan", path]);
    assert_eq!(plan.stdout.trim(), "no changes", "{plan:?}");
}

#[test]
fn editing_the_script_adds_and_removes_exactly_the_difference() {
    let sb = Sandbox::new("edit");
    sb.apply(TWO_SUBNETS);
    let with_db = format!("{TWO_SUBNETS}\nlet db = prod.subnet(\"db\", \"10.9.3.0/24\");\n");
    let added = sb.apply(&with_db);
    assert!(sb.namespaces().contains(&sb.ns("prod.db")), "{:?}", sb.namespaces());
    assert!(ping(&sb.ns("prod.w1"), "10.9.3.2"), "the new subnet is routed");
    // bridge, its address, the host's netns, veth, address and route; the VPC's resolver
    // learns the new host's names; nothing else
    assert_eq!(added.stdout.trim(), "6 created, 1 changed, 0 deleted", "{added:?}");

    let without_app = TWO_SUBNETS.replace("let app = prod.subnet(\"app\", \"10.9.2.0/24\");", "");
    let removed = sb.apply(&format!("{without_app}\nlet db = prod.subnet(\"db\", \"10.9.3.0/24\");\n"));
    assert_eq!(removed.stdout.trim(), "0 created, 1 changed, 3 deleted", "{removed:?}");
    assert!(!sb.namespaces().contains(&sb.ns("prod.app")), "{:?}", sb.namespaces());
    let links = ip(&sb.ns("prod"), &["-o", "link"]);
    assert!(!links.contains("b-app") && !links.contains("h-app"), "{links}");
    assert!(ping(&sb.ns("prod.w1"), "10.9.3.2"), "the rest keeps working");
}

#[test]
fn destroy_leaves_nothing_behind() {
    let sb = Sandbox::new("destroy");
    sb.apply(TWO_SUBNETS);
    assert!(sb.namespaces().len() >= 7, "{:?}", sb.namespaces());
    assert!(sb.state_file().exists());
    let run = sb.run(&["destroy"]);
    assert_eq!(run.code, 0, "{run:?}");
    assert_eq!(sb.namespaces(), Vec::<String>::new());
    let mounts = fs::read_to_string("/proc/self/mountinfo").unwrap();
    assert!(!mounts.contains(&format!("/run/netns/{}", sb.name)), "a namespace mount is left");
    assert!(!sb.state_file().exists(), "the state entry is left");
    let again = sb.run(&["destroy"]);
    assert_eq!(again.stdout.trim(), "0 created, 0 changed, 0 deleted", "{again:?}");
}

#[test]
fn destroying_one_vpc_keeps_the_others() {
    let sb = Sandbox::new("destroy1");
    sb.apply(&format!(
        "{TWO_SUBNETS}\nlet dev = vpc(\"dev\", \"10.8.0.0/16\"); dev.subnet(\"s\", \"10.8.1.0/24\");"
    ));
    let run = sb.run(&["destroy", "prod"]);
    assert_eq!(run.code, 0, "{run:?}");
    let left = sb.namespaces();
    assert!(left.iter().all(|n| !n.starts_with(&sb.ns("prod"))), "{left:?}");
    assert!(left.contains(&sb.ns("dev.s")) && left.contains(&sb.ns("internet")), "{left:?}");
    let unknown = sb.run(&["destroy", "nope"]);
    assert_eq!(unknown.code, 1, "{unknown:?}");
    assert!(unknown.stderr.contains("no VPC named `nope`"), "{unknown:?}");
}

#[test]
fn a_failure_mid_apply_is_rolled_back() {
    let sb = Sandbox::new("rollback");
    let script = sb.script(TWO_SUBNETS);
    let run: Run = sb
        .cmd(&["apply", script.to_str().unwrap()])
        .env("VPCSH_INJECT_FAULT", format!("add-route@{}", sb.ns("prod.app")))
        .output()
        .unwrap()
        .into();
    assert_eq!(run.code, 1, "{run:?}");
    assert!(run.stderr.contains("injected fault") && run.stderr.contains("rolled back"), "{run:?}");
    assert_eq!(sb.namespaces(), Vec::<String>::new(), "nothing half-built stays");
    assert!(!sb.state_file().exists(), "no ownership is recorded for what was undone");

    // On a running topology, a failed change leaves the old one working.
    sb.apply(TWO_SUBNETS);
    let bigger = sb.script(&format!("{TWO_SUBNETS}\nprod.subnet(\"db\", \"10.9.3.0/24\");"));
    let run: Run = sb
        .cmd(&["apply", bigger.to_str().unwrap()])
        .env("VPCSH_INJECT_FAULT", format!("add-route@{}", sb.ns("prod.db")))
        .output()
        .unwrap()
        .into();
    assert_eq!(run.code, 1, "{run:?}");
    assert!(!sb.namespaces().contains(&sb.ns("prod.db")));
    assert!(!ip(&sb.ns("prod"), &["-o", "link"]).contains("b-db"));
    assert!(ping(&sb.ns("prod.w1"), "10.9.2.2"), "the old topology still works");
    let plan = sb.run(&["plan", sb.script(TWO_SUBNETS).to_str().unwrap()]);
    assert_eq!(plan.stdout.trim(), "no changes", "{plan:?}");
}

#[test]
fn concurrent_applies_on_one_state_serialise() {
    let sb = Sandbox::new("lock");
    let script = sb.script(TWO_SUBNETS);
    let path = script.to_str().unwrap();
    let spawn = || sb.cmd(&["apply", path]).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
    let (a, b) = (spawn(), spawn());
    let runs: Vec<Run> = [a, b].into_iter().map(|c| c.wait_with_output().unwrap().into()).collect();
    for run in &runs {
        assert_eq!(run.code, 0, "{run:?}");
    }
    let idle = runs.iter().filter(|r| r.stdout.trim() == "0 created, 0 changed, 0 deleted").count();
    assert_eq!(idle, 1, "one apply did the work, the other found it done: {runs:?}");
    assert!(ping(&sb.ns("prod.w1"), "10.9.2.2"));
}

#[test]
fn the_sandbox_has_a_simulated_internet() {
    let sb = Sandbox::new("inet");
    sb.apply(TWO_SUBNETS);
    let machine = sb.ns("");
    assert!(ip(&machine, &["-4", "-o", "addr"]).contains("198.51.100.2/24"));
    assert_eq!(get(&machine, "198.51.100.1", 80, "/").as_deref(), Some("internet\n"));
    assert_eq!(get(&machine, "198.51.100.1", 80, "/ip").as_deref(), Some("198.51.100.2\n"));
    let exec = sb.run(&["exec", "internet", "--", "ip", "-4", "-o", "addr", "show", "eth0"]);
    assert!(exec.stdout.contains("198.51.100.1/24"), "{exec:?}");
    // The server is a recorded process; destroy stops it.
    let status = sb.run(&["status", "--json"]);
    let json: serde_json::Value = serde_json::from_str(&status.stdout).unwrap();
    let pid = json["processes"][0]["pid"].as_i64().unwrap();
    assert!(running(pid));
    sb.run(&["destroy"]);
    assert!(!running(pid), "the server outlived destroy");
}

#[test]
fn exec_runs_inside_a_host_and_passes_the_exit_status() {
    let sb = Sandbox::new("exec");
    sb.apply(TWO_SUBNETS);
    let run = sb.run(&["exec", "prod/w2", "--", "ip", "-4", "-o", "addr", "show", "eth0"]);
    assert_eq!(run.code, 0, "{run:?}");
    assert!(run.stdout.contains("10.9.1.20/24"), "{run:?}");
    let run = sb.run(&["exec", "prod/w1", "--", "sh", "-c", "exit 7"]);
    assert_eq!(run.code, 7, "{run:?}");
    let router = sb.run(&["exec", "prod", "--", "ip", "-4", "-o", "addr"]);
    assert!(router.stdout.contains("10.9.1.1/24"), "{router:?}");
    let unknown = sb.run(&["exec", "prod/nope", "--", "true"]);
    assert_eq!(unknown.code, 1, "{unknown:?}");
    assert!(unknown.stderr.contains("no host `nope`"), "{unknown:?}");
}

#[test]
fn status_finds_drift_and_apply_repairs_it() {
    let sb = Sandbox::new("drift");
    let script = sb.script(TWO_SUBNETS);
    sb.run(&["apply", script.to_str().unwrap()]);
    let ok = sb.run(&["status"]);
    assert_eq!(ok.code, 0, "{ok:?}");
    assert!(ok.stdout.lines().all(|l| l.starts_with("ok") || l.starts_with("alive")), "{ok:?}");

    // Break things from outside vpcsh.
    in_ns(&sb.ns("prod.w2"), &["ip", "link", "set", "eth0", "down"]);
    in_ns(&sb.ns("prod"), &["ip", "link", "del", "b-app"]);
    let status = sb.run(&["status", "--json"]);
    assert_eq!(status.code, 1, "{status:?}");
    let json: serde_json::Value = serde_json::from_str(&status.stdout).unwrap();
    let of = |object: &str| {
        json["objects"].as_array().unwrap().iter().find(|o| o["object"] == object).unwrap()["status"].clone()
    };
    assert_eq!(of("subnet prod/app"), "missing");
    assert_eq!(of("host prod/w1"), "ok");
    assert_ne!(of("host prod/w2"), "ok");

    let repair = sb.run(&["apply", script.to_str().unwrap()]);
    assert_eq!(repair.code, 0, "{repair:?}");
    assert!(ping(&sb.ns("prod.w1"), "10.9.2.2"), "the deleted bridge is back");
    assert!(ping(&sb.ns("prod.w1"), "10.9.1.20"), "w2 is up again");
    assert_eq!(sb.run(&["status"]).code, 0);
}

#[test]
fn list_shows_the_topology() {
    let sb = Sandbox::new("list");
    sb.apply(TWO_SUBNETS);
    let run = sb.run(&["list", "--json"]);
    let json: serde_json::Value = serde_json::from_str(&run.stdout).unwrap();
    let web = &json["vpcs"][0]["subnets"][0];
    assert_eq!(web["name"], "web");
    assert_eq!(web["public"], true);
    assert_eq!(web["hosts"][1]["ip"], "10.9.1.20");
    assert_eq!(web["hosts"][1]["netns"], sb.ns("prod.w2"));
    let text = sb.run(&["list"]);
    assert!(text.stdout.contains("host w2 10.9.1.20"), "{text:?}");
}

#[test]
fn a_script_with_errors_changes_nothing() {
    let sb = Sandbox::new("noop");
    let script = sb.script(&format!("{TWO_SUBNETS}\napply();\nvpc(\"bad\", \"10.0.0.0/8\");"));
    let run = sb.run(&["apply", script.to_str().unwrap()]);
    assert_eq!(run.code, 1, "{run:?}");
    assert!(run.stderr.contains("/8"), "{run:?}");
    assert_eq!(sb.namespaces(), Vec::<String>::new(), "not even the sandbox was made");
}

#[test]
fn applies_and_addresses_stay_stable_when_a_host_is_removed() {
    let sb = Sandbox::new("sticky");
    sb.apply(TWO_SUBNETS);
    // Drop w1: w3 keeps 10.9.1.3 instead of sliding down to .2.
    let run = sb.apply(&TWO_SUBNETS.replace("host(web, \"w1\");", ""));
    // The VPC's resolver forgets w1: a change.
    assert_eq!(run.stdout.trim(), "0 created, 1 changed, 2 deleted", "{run:?}");
    let eth0 = ip(&sb.ns("prod.w3"), &["-4", "-o", "addr", "show", "dev", "eth0"]);
    assert!(eth0.contains("10.9.1.3/24"), "{eth0}");
}

#[test]
fn a_name_taken_by_someone_else_is_left_alone_and_reported() {
    let sb = Sandbox::new("clash");
    sb.apply(TWO_SUBNETS);
    // Someone else's link where the next subnet's bridge would go.
    in_ns(&sb.ns("prod"), &["ip", "link", "add", "b-db", "type", "bridge"]);
    let script = sb.script(&format!("{TWO_SUBNETS}\nprod.subnet(\"db\", \"10.9.3.0/24\");"));
    let run = sb.run(&["apply", script.to_str().unwrap()]);
    assert_eq!(run.code, 1, "{run:?}");
    // Diagnostics wrap long lines; compare the words.
    let words = run.stderr.replace('│', " ").split_whitespace().collect::<Vec<_>>().join(" ");
    assert!(
        words.contains("link b-db already exists in") && words.contains("vpcsh did not make it"),
        "{run:?}"
    );
    assert!(run.stderr.contains("rolled back"), "{run:?}");
    let links = ip(&sb.ns("prod"), &["-o", "link", "show", "b-db"]);
    assert!(links.contains("b-db") && !links.contains("UP"), "the stranger's link was touched: {links}");
    assert!(
        ip(&sb.ns("prod"), &["-4", "addr", "show", "b-db"]).trim().is_empty(),
        "an address was put on it"
    );
    assert!(!sb.namespaces().contains(&sb.ns("prod.db")), "the half-made subnet stayed");
    assert!(ping(&sb.ns("prod.w1"), "10.9.2.2"), "the rest still works");
}

#[test]
fn a_large_network_is_read_in_parallel_and_drift_anywhere_is_seen() {
    // Over 64 namespaces are read by more than one reader; drift in any part must show.
    let sb = Sandbox::new("wide");
    let mut script = String::from("let v = vpc(\"v\", \"10.50.0.0/16\");\n");
    for i in 0..90 {
        script += &format!("v.subnet(\"s{i}\", \"10.50.{i}.0/24\");\n");
    }
    sb.apply(&script);
    assert_eq!(sb.run(&["status"]).code, 0);
    for host in ["s0", "s45", "s89"] {
        let ns = sb.ns(&format!("v.{host}"));
        assert_eq!(in_ns(&ns, &["ip", "route", "del", "default"]).code, 0);
    }
    let status = sb.run(&["status"]);
    assert_eq!(status.code, 1, "{status:?}");
    for host in ["s0", "s45", "s89"] {
        assert!(status.stdout.contains(&format!("drifted  host v/{host}")), "{host}: {status:?}");
    }
    let again = sb.apply(&script);
    assert!(again.stdout.contains("3 created, 0 changed, 0 deleted"), "{again:?}");
    assert_eq!(sb.run(&["status"]).code, 0);
}

#[test]
fn a_ruleset_larger_than_a_socket_buffer_is_one_batch() {
    // 1,200 rules in one host's table: some 300 KB in one atomic batch, past the default
    // netlink send buffer (a router of ~250 egress subnets gets there too).
    let sb = Sandbox::new("bigrules");
    sb.apply(
        r#"let v = vpc("v", "10.60.0.0/16");
           let s = v.subnet("s", "10.60.1.0/24");
           let a = s.host("a"); let b = s.host("b");
           let rules = [];
           for port in 1000..2200 { rules.push(#{ proto: "tcp", port: port, action: "allow" }); }
           firewall(b, #{ ingress: rules });"#,
    );
    let rules = in_ns(&sb.ns("v.b"), &["nft", "list", "table", "inet", "vpcsh"]).stdout;
    assert!(rules.matches("comment \"vpcsh").count() > 1200, "{} bytes", rules.len());
    let _server = Server::start(&sb.ns("v.b"), 2199, "last\n");
    assert_eq!(get(&sb.ns("v.a"), "10.60.1.3", 2199, "/").as_deref(), Some("last\n"), "the last rule works");
}

#[test]
fn a_host_added_later_leaves_the_gateways_mac_alone() {
    let sb = Sandbox::new("gwmac");
    let lab =
        "let s = vpc(\"v\", \"10.91.0.0/16\").subnet(\"s\", \"10.91.1.0/24\");\nlet a = s.host(\"a\");\n";
    sb.apply(lab);
    let mac = || {
        ip(&sb.ns("v"), &["-br", "link", "show", "b-s"])
            .split_whitespace()
            .nth(2)
            .unwrap_or_default()
            .to_string()
    };
    let before = mac();
    assert!(ping(&sb.ns("v.a"), "10.91.1.1"), "a knows its gateway");
    // More ports on the bridge: a bridge that takes its lowest port's MAC would move.
    let more: String = (0..6).map(|i| format!("s.host(\"n{i}\");\n")).collect();
    sb.apply(&format!("{lab}{more}"));
    assert_eq!(mac(), before, "the gateway's MAC stayed");
    assert!(ping(&sb.ns("v.a"), "10.91.1.1"), "a's ARP cache still holds");
}

#[test]
fn a_runs_namespace_names_are_links_of_one_file_that_goes_with_them() {
    // Names are links, not files of their own (see `netns::make_name_file`): under each
    // mounted namespace, the bare file has as many links as the run made names.
    let sb = Sandbox::new("links");
    sb.apply(TWO_SUBNETS);
    let names = sb.namespaces();
    assert!(names.len() >= 6, "{names:?}");
    let beneath = |name: &str| {
        let path = format!("/run/netns/{name}");
        // In a mount namespace of its own, the name's mount taken off shows the file.
        let script = format!("umount -l {path} && stat -c '%h %i' {path}");
        let out = std::process::Command::new("unshare").args(["-m", "sh", "-c", &script]).output().unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    };
    let first = beneath(&names[0]);
    let links = first.split(' ').next().unwrap();
    assert_eq!(links, names.len().to_string(), "one link a name: {names:?}");
    assert!(names.iter().all(|n| beneath(n) == first), "every name is a link of one file (same inode)");
    assert!(in_ns(&names[0], &["true"]).code == 0, "and each is a namespace");
    assert_eq!(sb.run(&["destroy"]).code, 0);
    let left: Vec<String> = list_netns().into_iter().filter(|n| names.contains(n)).collect();
    assert!(left.is_empty(), "{left:?}");
}
