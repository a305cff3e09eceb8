//! Dual-stack VPCs checked with packets of both families: routing inside a VPC, the
//! simulated internet reached without translation, egress-only `nat()`, peering with IPv6
//! allow-lists, and firewalls that no family walks around.

use crate::common::*;

/// A dual-stack VPC: a public subnet, a private one behind `nat()` and a private one
/// without, each with a host at a known IPv6 address.
const DUAL: &str = r#"
let prod = vpc("prod", "10.10.0.0/16", #{ ipv6: "fd10:10::/56" });
let web = prod.subnet("web", "10.10.1.0/24", #{ public: true, ipv6: true });
let app = prod.subnet("app", "10.10.2.0/24", #{ ipv6: "fd10:10:0:2::/64" });
let db = prod.subnet("db", "10.10.3.0/24", #{ ipv6: true });
let w1 = web.host("w1");
let a1 = app.host("a1");
let d1 = db.host("d1");
nat(app);
"#;

fn ping6(ns: &str, addr: &str) -> bool {
    in_ns(ns, &["ping", "-6", "-c1", "-W1", "-q", addr]).code == 0
}

#[test]
fn dual_stack_subnets_route_inside_the_vpc_and_reach_the_internet_untranslated() {
    let sb = Sandbox::new("v6dual");
    // Addresses are known while the script runs, and the probes take IPv6.
    sb.apply(&format!(
        r#"{DUAL}
        assert(w1.ip6 == "fd10:10::2" && a1.ip6 == "fd10:10:0:2::2" && d1.ip6 == "fd10:10:0:1::2", "addresses");
        assert(web.cidr6 == "fd10:10::/64" && web.gateway6 == "fd10:10::1" && prod.cidr6 == "fd10:10::/56", "prefixes");
        assert(ping(w1, d1, #{{ family: 6 }}), "across subnets");
        assert(http_get(w1, "http://[2001:db8::1]/ip").body == "fd10:10::2\n", "untranslated");
        "#
    ));
    let (w1, a1, d1) = (sb.ns("prod.w1"), sb.ns("prod.a1"), sb.ns("prod.d1"));
    // From outside: addresses, routes, and IPv6 on exactly where declared.
    assert!(ip(&w1, &["-6", "-o", "addr", "show", "eth0"]).contains("fd10:10::2/64"));
    assert!(ip(&w1, &["-6", "route"]).contains("default via fd10:10::1 dev eth0"));
    assert!(ip(&sb.ns("prod"), &["-6", "-o", "addr", "show", "b-app"]).contains("fd10:10:0:2::1/64"));
    assert!(ping6(&w1, "fd10:10:0:2::2") && ping6(&a1, "fd10:10:0:1::2") && ping6(&d1, "fd10:10::2"));
    // Public and nat() subnets reach the internet with their own addresses; db does not.
    assert_eq!(get(&w1, "2001:db8::1", 80, "/ip").as_deref(), Some("fd10:10::2\n"));
    assert_eq!(get(&a1, "2001:db8::1", 80, "/ip").as_deref(), Some("fd10:10:0:2::2\n"));
    assert_eq!(get(&d1, "2001:db8::1", 80, "/"), None, "a private subnet has no IPv6 internet");
    assert!(!ping6(&d1, "2001:db8::1"));
    // Nothing comes in unasked, over either family, even though the prefix is routed.
    let internet = sb.ns("internet");
    let _w1 = Server::start(&w1, 8080, "w1\n");
    let _a1 = Server::start(&a1, 8080, "a1\n");
    assert_eq!(get(&w1, "fd10:10::2", 8080, "/").as_deref(), Some("w1\n"), "the server answers locally");
    for (addr, what) in [("fd10:10::2", "public"), ("fd10:10:0:2::2", "nat()")] {
        assert!(!ping6(&internet, addr), "the internet pinged a {what} host");
        assert_eq!(get(&internet, addr, 8080, "/"), None, "the internet connected to a {what} host");
    }
    assert!(ip(&internet, &["-6", "route"]).contains("fd10:10::/56 via 2001:db8::2"));
    // Seen by `list`, and a second apply changes nothing.
    let list = sb.run(&["list"]).stdout;
    assert!(
        list.contains("host w1 10.10.1.2 fd10:10::2") && list.contains("vpc prod 10.10.0.0/16 fd10:10::/56")
    );
    let again = sb.apply(DUAL);
    assert!(again.stdout.contains("0 created, 0 changed, 0 deleted"), "{again:?}");
    assert_eq!(sb.run(&["status"]).code, 0);
}

#[test]
fn ipv6_true_derives_a_stable_unique_local_prefix() {
    let sb = Sandbox::new("v6ula");
    let script = r#"let v = vpc("lab", "10.0.0.0/16", #{ ipv6: true });
        let s = v.subnet("s", "10.0.1.0/24", #{ ipv6: true });
        let t = v.subnet("t", "10.0.2.0/24", #{ ipv6: true });
        print(v.cidr6); print(s.cidr6); print(t.cidr6); print(s.host("h", #{ ip6: "" + s.gateway6 + "0" }).ip6);"#;
    let run = sb.apply(script);
    let lines: Vec<&str> = run.stdout.lines().collect();
    assert!(lines[0].starts_with("fd") && lines[0].ends_with("::/56"), "{lines:?}");
    let base = lines[0].trim_end_matches("::/56");
    assert_eq!(lines[1], format!("{base}::/64"), "the first /64");
    assert_eq!(lines[2], format!("{base}:1::/64"), "then the next free one");
    assert_eq!(lines[3], format!("{base}::10"));
    assert!(ip(&sb.ns("lab.h"), &["-6", "-o", "addr"]).contains(&format!("{base}::10/64")));
    let again = sb.apply(script);
    assert_eq!(again.stdout.lines().take(4).collect::<Vec<_>>(), lines[..4], "the same every time");
}

#[test]
fn peering_carries_ipv6_within_allow_lists_and_never_transitively() {
    let sb = Sandbox::new("v6peer");
    sb.apply(
        r#"
        let a = vpc("a", "10.1.0.0/16", #{ ipv6: "fd01::/56" });
        let b = vpc("b", "10.2.0.0/16", #{ ipv6: "fd02::/56" });
        let c = vpc("c", "10.3.0.0/16", #{ ipv6: "fd03::/56" });
        a.subnet("s", "10.1.1.0/24", #{ ipv6: true }).host("a1");
        let b1 = b.subnet("s1", "10.2.1.0/24", #{ ipv6: true });
        b1.host("b1");
        b.subnet("s2", "10.2.2.0/24", #{ ipv6: true }).host("b2");
        c.subnet("s", "10.3.1.0/24", #{ ipv6: true }).host("c1");
        peer(a, b);
        peer(b, c, #{ allow: [b1, "fd03::/64", "10.3.1.0/24"] });
        "#,
    );
    let ns = |h: &str| sb.ns(h);
    assert!(ping6(&ns("a.a1"), "fd02::2") && ping6(&ns("b.b2"), "fd01::2"), "a and b peer fully");
    assert!(ping6(&ns("b.b1"), "fd03::2") && ping6(&ns("c.c1"), "fd02::2"), "the allowed subnets");
    assert!(!ping6(&ns("b.b2"), "fd03::2") && !ping6(&ns("c.c1"), "fd02:0:0:1::2"), "b's other subnet");
    assert!(ping(&ns("b.b1"), "10.3.1.2") && !ping(&ns("b.b2"), "10.3.1.2"), "IPv4 alike");
    assert!(!ping6(&ns("a.a1"), "fd03::2"), "never transitive: a does not reach c through b");
    assert!(!ip(&ns("a"), &["-6", "route"]).contains("fd03::"), "a has no route to c");
}

#[test]
fn firewall_rules_cover_both_families_and_neighbour_discovery_survives() {
    let sb = Sandbox::new("v6fw");
    sb.apply(&format!(
        r#"{DUAL}
        let w2 = web.host("w2");
        let w3 = web.host("w3");
        firewall(w1, #{{ ingress: [
            #{{ proto: "tcp", port: 8080, from: app, action: "allow" }},
            #{{ proto: "tcp", port: 2222, from: "fd10:10:0:1::/64", action: "allow" }},
            #{{ proto: "icmp", from: a1, action: "allow" }},
        ]}});
        firewall(w3, #{{ ingress: [] }});
        "#
    ));
    let (w1, w2, w3, a1, d1) =
        (sb.ns("prod.w1"), sb.ns("prod.w2"), sb.ns("prod.w3"), sb.ns("prod.a1"), sb.ns("prod.d1"));
    let _s1 = Server::start(&w1, 8080, "w1\n");
    let _s2 = Server::start(&w1, 2222, "w1 2222\n");
    let _s3 = Server::start(&w3, 8080, "w3\n");
    // A subnet or a host in a rule stands for both of its families.
    assert!(get(&a1, "10.10.1.2", 8080, "/").is_some() && get(&a1, "fd10:10::2", 8080, "/").is_some());
    assert!(get(&d1, "10.10.1.2", 8080, "/").is_none() && get(&d1, "fd10:10::2", 8080, "/").is_none());
    assert!(ping(&a1, "10.10.1.2") && ping6(&a1, "fd10:10::2"), "icmp means ICMP and ICMPv6");
    assert!(!ping(&d1, "10.10.1.2") && !ping6(&d1, "fd10:10::2"));
    // An IPv6 CIDR admits IPv6 only.
    assert!(get(&d1, "fd10:10::2", 2222, "/").is_some() && get(&d1, "10.10.1.2", 2222, "/").is_none());
    // Deny-all: nothing in over any family, link-local included; yet the link works (its
    // neighbour discovery passes) and its own connections get their replies.
    let w3_ll = ip(&w3, &["-6", "-o", "addr", "show", "eth0", "scope", "link"]);
    let w3_ll = w3_ll.split_whitespace().nth(3).unwrap().split('/').next().unwrap().to_string();
    assert!(w3_ll.starts_with("fe80:"), "{w3_ll}");
    assert_eq!(get(&w2, &format!("{w3_ll}%eth0"), 8080, "/"), None, "link-local walked around the policy");
    assert_eq!(get(&w2, "fd10:10::4", 8080, "/"), None);
    assert_eq!(get(&w2, "10.10.1.4", 8080, "/"), None);
    assert!(ping6(&w3, "fd10:10::1"), "neighbour discovery passes a deny-all policy");
    assert_eq!(get(&w3, "2001:db8::1", 80, "/ip").as_deref(), Some("fd10:10::4\n"));
    let ruleset = in_ns(&w1, &["nft", "list", "ruleset"]).stdout;
    assert!(
        ruleset.contains("table inet vpcsh") && ruleset.contains("ip6 saddr fd10:10:0:2::/64"),
        "{ruleset}"
    );
}

#[test]
fn ipv4_only_vpcs_stay_ipv4_only_beside_dual_stack_ones() {
    let sb = Sandbox::new("v6mix");
    sb.apply(&format!(
        r#"{DUAL}
        let old = vpc("old", "10.20.0.0/16");
        old.subnet("s", "10.20.1.0/24", #{{ public: true }}).host("o1");
        peer(prod, old);
        "#
    ));
    let o1 = sb.ns("old.o1");
    for ns in [sb.ns("old"), o1.clone()] {
        let off = in_ns(&ns, &["cat", "/proc/sys/net/ipv6/conf/all/disable_ipv6"]).stdout;
        assert_eq!(off.trim(), "1", "{ns} has IPv6 on");
    }
    assert!(ping(&o1, "10.10.1.2"), "IPv4 crosses the peering");
    let routes6 = ip(&sb.ns("prod"), &["-6", "route"]);
    assert!(!routes6.lines().any(|r| r.contains("p-old") && r.contains(" via ")), "IPv6 does not: {routes6}");
    assert_eq!(get(&o1, "198.51.100.1", 80, "/ip").as_deref(), Some("198.51.100.2\n"), "IPv4 NAT as before");
}

#[test]
fn the_ipv4_only_tables_of_an_earlier_vpcsh_are_taken_over() {
    // vpcsh before IPv6 kept an `ip vpcsh` table; one left in a router (beside the new
    // table) or in a host that no longer has a firewall would still drop packets.
    let sb = Sandbox::new("v6legacy");
    let script = "let v = vpc(\"v\", \"10.5.0.0/16\");\nv.subnet(\"s\", \"10.5.1.0/24\").host(\"h1\");";
    sb.apply(script);
    let (router, h1) = (sb.ns("v"), sb.ns("v.h1"));
    assert_eq!(in_ns(&h1, &["nft", "add", "table", "ip", "vpcsh"]).code, 0);
    let drop_all = "add chain ip vpcsh input { type filter hook input priority 0; policy drop; }";
    assert_eq!(in_ns(&h1, &["nft", drop_all]).code, 0);
    assert_eq!(in_ns(&router, &["nft", "add", "table", "ip", "vpcsh"]).code, 0);
    assert!(!ping(&router, "10.5.1.2"), "the old table drops");
    let status = sb.run(&["status"]);
    assert!(status.code == 1 && status.stdout.contains("drifted  host v/h1"), "{status:?}");
    sb.apply(script);
    assert_eq!(in_ns(&h1, &["nft", "list", "tables"]).stdout.trim(), "");
    assert_eq!(in_ns(&router, &["nft", "list", "tables"]).stdout.trim(), "table inet vpcsh");
    assert!(ping(&router, "10.5.1.2"));
}

#[test]
fn ipv6_turned_back_on_by_hand_in_an_ipv4_only_host_is_still_read() {
    // An IPv4-only namespace is read with IPv4's dumps alone while IPv6 is off on all its
    // devices: one device turned back on must have its IPv6 address and route seen.
    let sb = Sandbox::new("v6byhand");
    let script = "let v = vpc(\"v\", \"10.6.0.0/16\");\nv.subnet(\"s\", \"10.6.1.0/24\").host(\"h1\");";
    sb.apply(script);
    let h1 = sb.ns("v.h1");
    assert_eq!(in_ns(&h1, &["sysctl", "-qw", "net.ipv6.conf.eth0.disable_ipv6=0"]).code, 0);
    assert_eq!(in_ns(&h1, &["ip", "-6", "addr", "add", "fd66::5/64", "dev", "eth0", "nodad"]).code, 0);
    let route = ["ip", "-6", "route", "add", "fd67::/64", "via", "fd66::1", "dev", "eth0", "proto", "static"];
    assert_eq!(in_ns(&h1, &route).code, 0);
    let off = in_ns(&h1, &["cat", "/proc/sys/net/ipv6/conf/lo/disable_ipv6"]).stdout;
    assert_eq!(off.trim(), "1", "the namespace's switch stays off");

    let plan = sb.run(&["plan", sb.script(script).to_str().unwrap()]);
    assert!(plan.stdout.contains("fd66::5/64") && plan.stdout.contains("fd67::/64"), "{plan:?}");
    let status = sb.run(&["status"]);
    assert!(status.code == 1 && status.stdout.contains("drifted  host v/h1"), "{status:?}");
    sb.apply(script);
    assert!(!ip(&h1, &["-6", "addr", "show", "dev", "eth0"]).contains("fd66::5"));
    assert!(!ip(&h1, &["-6", "route"]).contains("fd67::"));
    assert_eq!(sb.run(&["status"]).code, 0, "nothing left to repair");
}
