//! Internet access with real packets: public subnets, NAT gateways, published ports, the
//! rules vpcsh leaves in nftables, and the real-host path run inside a namespace the test
//! made (never on the machine itself).

use std::fs;
use std::process::Command;

use crate::common::*;

const INTERNET: &str = prod_and!(
    r#"
nat(app);
web.host("w2");
publish(w1, 80, 8080);
"#
);

#[test]
fn public_and_nat_subnets_reach_the_internet_translated_private_ones_do_not() {
    let sb = Sandbox::new("egress");
    sb.apply(INTERNET);
    assert_eq!(get(&sb.ns("prod.w1"), "198.51.100.1", 80, "/").as_deref(), Some("internet\n"));
    assert_eq!(get(&sb.ns("prod.w1"), "198.51.100.1", 80, "/ip").as_deref(), Some("198.51.100.2\n"));
    assert_eq!(
        get(&sb.ns("prod.app"), "198.51.100.1", 80, "/ip").as_deref(),
        Some("198.51.100.2\n"),
        "nat()"
    );
    assert_eq!(get(&sb.ns("prod.db"), "198.51.100.1", 80, "/"), None, "a private subnet has no way out");
    assert!(!ping(&sb.ns("prod.db"), "198.51.100.1"));
    assert!(!ping(&sb.ns("prod.db"), "198.51.100.2"), "not even to the machine's own address");
    assert!(ping(&sb.ns("prod.w1"), "198.51.100.1"));
    // Inside the VPC, private and public hosts reach each other.
    assert!(ping(&sb.ns("prod.db"), "10.10.1.2") && ping(&sb.ns("prod.w1"), "10.10.3.2"));
}

#[test]
fn the_outside_reaches_a_host_only_through_a_published_port() {
    let sb = Sandbox::new("inbound");
    sb.apply(INTERNET);
    let _w1 = Server::start(&sb.ns("prod.w1"), 80, "w1\n");
    let _w2 = Server::start(&sb.ns("prod.w2"), 80, "w2\n");
    let _db = Server::start(&sb.ns("prod.db"), 80, "db\n");
    let inet = sb.ns("internet");
    assert_eq!(get(&inet, "198.51.100.2", 8080, "/").as_deref(), Some("w1\n"), "the published port");
    assert_eq!(get(&inet, "198.51.100.2", 8080, "/ip").as_deref(), Some("198.51.100.1\n"));
    assert_eq!(get(&inet, "198.51.100.2", 80, "/"), None, "an unpublished port");

    // Even an outside that routes the VPC's and the uplinks' addresses to the machine gets
    // nowhere: the machine does not route to VPCs, and routers drop what they did not ask for.
    in_ns(&inet, &["ip", "route", "add", "10.0.0.0/8", "via", "198.51.100.2"]);
    in_ns(&inet, &["ip", "route", "add", "198.18.0.0/15", "via", "198.51.100.2"]);
    for addr in ["10.10.1.2", "10.10.1.3", "10.10.3.2", "10.10.1.1"] {
        assert_eq!(get(&inet, addr, 80, "/"), None, "{addr} answered the internet");
        assert!(!ping(&inet, addr), "{addr} answered a ping from the internet");
    }
    let router_uplink = ip(&sb.ns("prod"), &["-4", "-o", "addr", "show", "igw"]);
    let router_ip = router_uplink.split_whitespace().nth(3).unwrap().split('/').next().unwrap().to_string();
    assert!(!ping(&inet, &router_ip), "the router's uplink answered the internet");
    assert_eq!(get(&inet, &router_ip, 8080, "/"), None, "the router's DNAT skipped the machine");
}

#[test]
fn nftables_holds_only_vpcsh_tables_and_destroy_removes_them() {
    let sb = Sandbox::new("nft");
    sb.apply(INTERNET);
    let tables = in_ns(&sb.ns(""), &["nft", "list", "tables"]);
    assert_eq!(tables.stdout.trim(), "table inet vpcsh", "{tables:?}");
    let ruleset = in_ns(&sb.ns("prod"), &["nft", "list", "ruleset"]).stdout;
    assert!(ruleset.contains("dnat ip to 10.10.1.2:80") && ruleset.contains("masquerade"), "{ruleset}");
    assert!(
        in_ns(&sb.ns("prod.w1"), &["nft", "list", "tables"]).stdout.trim().is_empty(),
        "hosts have no rules"
    );

    // Re-applying never duplicates rules.
    sb.apply(INTERNET);
    assert_eq!(in_ns(&sb.ns("prod"), &["nft", "list", "ruleset"]).stdout, ruleset);

    // A changed rule is drift: status says so, apply puts it back.
    in_ns(&sb.ns("prod"), &["nft", "flush", "chain", "inet", "vpcsh", "prerouting"]);
    let status = sb.run(&["status"]);
    assert_eq!(status.code, 1, "{status:?}");
    assert!(status.stdout.contains("drifted  vpc prod") && status.stdout.contains("nftables"), "{status:?}");
    sb.apply(INTERNET);
    assert_eq!(in_ns(&sb.ns("prod"), &["nft", "list", "ruleset"]).stdout, ruleset);

    let run = sb.run(&["destroy", "prod"]);
    assert_eq!(run.code, 0, "{run:?}");
    assert_eq!(
        in_ns(&sb.ns(""), &["nft", "list", "tables"]).stdout.trim(),
        "",
        "the machine's table outlived its VPCs"
    );
}

#[test]
fn publishing_is_checked() {
    let sb = Sandbox::new("pubchk");
    let cases = [
        ("publish(db, 80, 8080);", "only public hosts can be published"),
        ("publish(w1, 80, 70000);", "host port 70000 is not a port"),
        ("publish(w1, 0, 8080);", "port 0 is not a port"),
        ("publish(w1, 80, 9090); publish(web.hosts[1], 81, 9090);", "published twice"),
        ("publish(w1, 53, 5353, \"sctp\");", "not a protocol"),
    ];
    for (extra, message) in cases {
        let script = sb.script(&format!("{}\n{extra}", INTERNET.replace("publish(w1, 80, 8080);", "")));
        let run = sb.run(&["check", script.to_str().unwrap()]);
        assert_eq!(run.code, 1, "{extra}: {run:?}");
        assert!(run.stderr.contains(message), "{extra}: {run:?}");
    }
    let script = sb.script(&format!("{INTERNET}\nnat(web);"));
    let run = sb.run(&["check", script.to_str().unwrap()]);
    assert_eq!(run.code, 0, "nat() on a public subnet is only a warning: {run:?}");
    assert!(run.stderr.contains("does nothing"), "{run:?}");
}

/// What a run must never change on the machine itself.
fn host_snapshot() -> Vec<String> {
    let cmd = |args: &[&str]| {
        Command::new(args[0])
            .args(&args[1..])
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
    };
    vec![
        cmd(&["ip", "-4", "route", "show", "table", "all"]).unwrap_or_default(),
        cmd(&["ip", "-4", "addr"]).unwrap_or_default(),
        cmd(&["ip", "-o", "link"])
            .unwrap_or_default()
            .lines()
            .map(|l| l.split(':').nth(1).unwrap_or(""))
            .collect(),
        cmd(&["nft", "list", "ruleset"]).unwrap_or_default(),
        fs::read_to_string("/proc/sys/net/ipv4/ip_forward").unwrap(),
        fs::read_to_string("/proc/sys/net/ipv4/conf/all/forwarding").unwrap(),
    ]
}

#[test]
fn sandbox_runs_leave_the_machine_untouched() {
    let before = host_snapshot();
    let sb = Sandbox::new("untouched");
    sb.apply(INTERNET);
    assert!(get(&sb.ns("prod.w1"), "198.51.100.1", 80, "/").is_some());
    let during = host_snapshot();
    sb.run(&["destroy"]);
    let after = host_snapshot();
    assert_eq!(before, during, "a sandbox apply changed the machine");
    assert_eq!(before, after, "a sandbox destroy changed the machine");
}

#[test]
fn on_a_real_host_vpcsh_adds_only_its_own_and_takes_it_away_again() {
    let h = FakeHost::new();
    let forwarding = || in_ns(&h.host, &["cat", "/proc/sys/net/ipv4/ip_forward"]).stdout.trim().to_string();
    assert_eq!(forwarding(), "0");
    let links_before = ip(&h.host, &["-o", "link"]).lines().count();
    let _internet = Server::start(&h.net, 80, "internet\n");
    let script = h.state.write("prod.rhai", INTERNET);
    let run = h.vpcsh(&["apply", script.to_str().unwrap()]);
    assert_eq!(run.code, 0, "{run:?}");

    let w1 = format!("{}.prod.w1", h.prefix);
    assert_eq!(
        get(&w1, "198.51.100.1", 80, "/ip").as_deref(),
        Some("198.51.100.2\n"),
        "out via the default route's interface"
    );
    assert_eq!(get(&format!("{}.prod.db", h.prefix), "198.51.100.1", 80, "/"), None);
    let _w1 = Server::start(&w1, 80, "w1\n");
    assert_eq!(get(&h.net, "198.51.100.2", 8080, "/").as_deref(), Some("w1\n"), "published on the uplink");
    assert_eq!(forwarding(), "1", "forwarding is on while VPCs need it");
    let forwarding6 = in_ns(&h.host, &["cat", "/proc/sys/net/ipv6/conf/all/forwarding"]).stdout;
    assert_eq!(forwarding6.trim(), "0", "the real host's IPv6 forwarding (and so its RAs) is left alone");
    let tables = in_ns(&h.host, &["nft", "list", "tables"]).stdout;
    assert!(tables.contains("table inet vpcsh") && tables.contains("table ip theirs"), "{tables}");

    let run = h.vpcsh(&["destroy"]);
    assert_eq!(run.code, 0, "{run:?}");
    assert_eq!(forwarding(), "0", "vpcsh turned forwarding on, so it turned it off again");
    assert_eq!(in_ns(&h.host, &["nft", "list", "tables"]).stdout.trim(), "table ip theirs");
    assert_eq!(ip(&h.host, &["-o", "link"]).lines().count(), links_before, "a link was left behind");
    assert!(
        ip(&h.host, &["-4", "route"]).contains("default via 198.51.100.1 dev wan0"),
        "the host's own route"
    );
    assert!(list_netns().iter().all(|n| !n.starts_with(&format!("{}.", h.prefix))));
}
