//! `explain` and `verify`: every kind of block named, reachable paths traced, and the
//! model's answers compared with packets — agreeing on a topology that mixes every
//! feature, and disagreeing once a rule or route is broken behind vpcsh's back.

use crate::common::*;

/// Three tiers with a firewall and a published port, a peering with an allow-list, a
/// peering one hop further (not transitive), and a VPC peered with no one.
const MIXED: &str = r#"
let prod = vpc("prod", "10.10.0.0/16", #{ ipv6: "fd10:10::/56" });
let web = prod.subnet("web", "10.10.1.0/24", #{ public: true, ipv6: true });
let app = prod.subnet("app", "10.10.2.0/24", #{ ipv6: true });
let db = prod.subnet("db", "10.10.3.0/24", #{ ipv6: true });
nat(app);
let w1 = web.host("w1"); let a1 = app.host("a1"); let d1 = db.host("d1");
firewall(d1, #{ ingress: [
    #{ proto: "tcp", port: 5432, from: app, action: "allow" },
    #{ proto: "tcp", port: 22, action: "deny" },
]});
serve(w1, 80);
publish(w1, 80, 8080);
let dev = vpc("dev", "10.20.0.0/16");
let s1 = dev.subnet("s1", "10.20.1.0/24"); let x1 = s1.host("x1");
peer(prod, dev, #{ allow: [web, s1] });
let ops = vpc("ops", "10.30.0.0/16");
let o1 = ops.subnet("s", "10.30.1.0/24").host("o1");
peer(dev, ops);
let lone = vpc("lone", "10.40.0.0/16");
let l1 = lone.subnet("s", "10.40.1.0/24").host("l1");
"#;

#[test]
fn explain_names_each_kind_of_block_and_traces_each_path() {
    let sb = Sandbox::new("explain");
    let run = sb.apply(&format!(
        r#"{MIXED}
        for c in [
            [a1, d1, 5432, "tcp", true, "host prod/d1"],
            [w1, d1, 5432, "tcp", false, "no ingress rule allows it (default deny)"],
            [a1, d1, 22, "tcp", false, "ingress rule 2 (deny tcp port 22)"],
            [a1, d1, 0, "icmp", false, "default deny"],
            [d1, internet(), 80, "tcp", false, "private and has no nat()"],
            [a1, internet(), 80, "tcp", true, "NAT gateway of VPC prod"],
            [w1, internet(), 0, "icmp", true, "internet gateway of VPC prod"],
            [internet(), w1, 80, "tcp", true, "machine port 8080/tcp (published)"],
            [internet(), w1, 22, "tcp", false, "is not published"],
            [w1, x1, 80, "tcp", true, "peering prod<->dev"],
            [a1, x1, 80, "tcp", false, "allow-list leaves it out"],
            [w1, o1, 80, "tcp", false, "not transitive"],
            [w1, l1, 80, "tcp", false, "are not peered"],
            [w1, "2001:db8::1", 80, "tcp", true, "routed, untranslated"],
            [d1, "2001:db8::1", 80, "tcp", false, "private and has no nat()"],
            [w1, "fd10:10:0:1::2", 5432, "tcp", true, "host prod/a1"],
            [internet(), "fd10:10::2", 80, "tcp", false, "nothing comes in over IPv6"],
        ] {{
            let e = explain(c[0], c[1], c[2], c[3]);
            let text = e.blocked_by + " " + e.path;
            assert(e.reachable == c[4] && text.contains(c[5]), `${{c[0]}} -> ${{c[1]}}: ${{e}}`);
            assert(e.reachable == (e.blocked_by == ""), "blocked_by is empty exactly when reachable");
        }}
        let e = explain(a1, d1, 22);
        assert(e.blocked_by.contains("firewall() at ") && e.blocked_by.contains(".rhai:8:1"), e.blocked_by);
        print("explained");
        "#
    ));
    assert!(run.stdout.contains("explained"), "{run:?}");
    // The same from the command line, for people and for tools.
    let cli = sb.run(&["explain", "prod/a1", "dev/x1", "--port", "80"]);
    assert_eq!(cli.code, 1, "blocked: {cli:?}");
    assert!(
        cli.stdout.starts_with("blocked\n") && cli.stdout.contains("allow-list leaves it out"),
        "{cli:?}"
    );
    let json = sb.run(&["--json", "explain", "internet", "w1", "--port", "80"]);
    assert_eq!(json.code, 0, "{json:?}");
    let v: serde_json::Value = serde_json::from_str(&json.stdout).unwrap();
    assert_eq!(v["kind"], "explain");
    assert_eq!(v["reachable"], true);
    assert_eq!(v["path"][1], "machine port 8080/tcp (published)");
}

#[test]
fn verify_agrees_with_packets_until_something_breaks_behind_its_back() {
    let sb = Sandbox::new("verify");
    sb.apply(MIXED);
    let run = sb.run(&["verify"]);
    assert_eq!(run.code, 0, "{run:?}");
    let last = run.stdout.lines().last().unwrap_or_default();
    let flows: usize = last.split_whitespace().next().unwrap().parse().unwrap();
    assert!(flows > 80 && last.ends_with(" 0 mismatches"), "{run:?}");
    let sampled = sb.run(&["verify", "--sample", "10"]);
    assert!(sampled.code == 0 && sampled.stdout.contains("10 flows checked"), "{sampled:?}");
    // A firewall flushed and a peering route deleted by hand: both show up.
    in_ns(&sb.ns("prod.d1"), &["nft", "delete", "table", "inet", "vpcsh"]);
    assert_eq!(in_ns(&sb.ns("prod"), &["ip", "route", "del", "10.20.1.0/24"]).code, 0);
    let broken = sb.run(&["verify"]);
    assert_eq!(broken.code, 1, "{broken:?}");
    assert!(
        broken.stdout.contains("MISMATCH prod/w1 -> prod/d1 (5432/tcp to 10.10.3.2): the model says blocked"),
        "{broken:?}"
    );
    assert!(
        broken.stdout.contains(
            "MISMATCH prod/w1 -> dev/x1 (ping to 10.20.1.2): the model says reachable, packets say blocked"
        ),
        "{broken:?}"
    );
    let status = sb.run(&["status", "--probe"]);
    assert_eq!(status.code, 1, "{status:?}");
    // Repaired by the next apply, the model and the packets agree again.
    sb.apply(MIXED);
    assert_eq!(sb.run(&["verify"]).code, 0);
}

/// A topology drawn from `seed`: VPCs (some dual-stack) with a public and a private subnet
/// (behind `nat()` or not), servers, published ports, firewalls with allow, deny and
/// default-deny cases, and peerings with and without allow-lists.
fn generated(seed: u64, vpcs: usize) -> String {
    let mut state = seed;
    let mut next = |n: u64| {
        state = state.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        (state >> 33) % n
    };
    let mut script = String::new();
    for v in 0..vpcs {
        let k = v + 1;
        let dual = next(2) == 0;
        let (vpc6, sub6) = if dual {
            (format!(", #{{ ipv6: \"fd00:{k}::/56\" }}"), ", ipv6: true")
        } else {
            (String::new(), "")
        };
        script += &format!("let v{v} = vpc(\"v{v}\", \"10.{k}.0.0/16\"{vpc6});\n");
        script +=
            &format!("let v{v}s1 = v{v}.subnet(\"s1\", \"10.{k}.1.0/24\", #{{ public: true{sub6} }});\n");
        script +=
            &format!("let v{v}s2 = v{v}.subnet(\"s2\", \"10.{k}.2.0/24\", #{{ public: false{sub6} }});\n");
        if next(2) == 0 {
            script += &format!("nat(v{v}s2);\n");
        }
        script += &format!("let v{v}w = v{v}s1.host(\"w\"); let v{v}d = v{v}s2.host(\"d\");\n");
        script += &format!("serve(v{v}w, 80); serve(v{v}d, 5432);\n");
        if next(2) == 0 {
            script += &format!("publish(v{v}w, 80, {});\n", 8000 + v);
        }
        script += &match next(4) {
            0 => format!(
                "firewall(v{v}d, #{{ ingress: [#{{ proto: \"tcp\", port: 5432, from: v{v}s1, action: \"allow\" }}] }});\n"
            ),
            1 => format!(
                "firewall(v{v}d, #{{ ingress: [#{{ proto: \"tcp\", port: 22, action: \"deny\" }}, #{{ proto: \"any\", from: v{v}, action: \"allow\" }}] }});\n"
            ),
            2 => format!(
                "firewall(v{v}s1, #{{ ingress: [#{{ proto: \"icmp\", action: \"allow\" }}, #{{ proto: \"tcp\", port: 80, action: \"allow\" }}] }});\n"
            ),
            _ => String::new(),
        };
    }
    for a in 0..vpcs {
        for b in a + 1..vpcs {
            match next(3) {
                0 => script += &format!("peer(v{a}, v{b});\n"),
                1 => script += &format!("peer(v{a}, v{b}, #{{ allow: [v{a}s1, v{b}s2] }});\n"),
                _ => {}
            }
        }
    }
    script
}

#[test]
fn verify_agrees_with_packets_on_generated_topologies() {
    // VPCSH_VERIFY_SEEDS="1 2 3 ..." and VPCSH_VERIFY_VPCS for a longer campaign.
    let seeds = std::env::var("VPCSH_VERIFY_SEEDS").unwrap_or_else(|_| "5".into());
    let vpcs = std::env::var("VPCSH_VERIFY_VPCS").ok().and_then(|v| v.parse().ok()).unwrap_or(4);
    for seed in seeds.split_whitespace().map(|s| s.parse::<u64>().unwrap()) {
        let script = generated(seed, vpcs);
        let sb = Sandbox::new("verifygen");
        sb.apply(&script);
        let run = sb.run(&["verify"]);
        assert_eq!(run.code, 0, "seed {seed}: {}\nscript:\n{script}", run.stdout);
        eprintln!("seed {seed}: {}", run.stdout.lines().last().unwrap_or_default());
    }
}
