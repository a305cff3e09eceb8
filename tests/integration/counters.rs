//! `vpcsh status --counters`: every rule counts what it matches. The counts grow by exactly
//! the packets a test sends, allowed and denied, and name the firewall rule and its script
//! line; `nft list ruleset` shows the same counts from outside.

use serde_json::Value;

use crate::common::*;

const LAB: &str = r#"let s = vpc("v", "10.92.0.0/16").subnet("s", "10.92.1.0/24");
let a = s.host("a");
let b = s.host("b");
firewall(b, #{ ingress: [
    #{ proto: "icmp", action: "allow" },
    #{ proto: "udp", port: 9999, action: "deny" },
] });
"#;

/// (packets, origin) of b's input rules that name a firewall rule, in order.
fn firewall_counts(sb: &Sandbox) -> Vec<(u64, String)> {
    let run = sb.run(&["--json", "status", "--counters"]);
    assert_eq!(run.code, 0, "{run:?}");
    let doc: Value = serde_json::from_str(&run.stdout).unwrap();
    assert_eq!(doc["kind"], "counters");
    doc["rules"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["netns"] == sb.ns("v.b") && r["chain"] == "input" && !r["origin"].is_null())
        .map(|r| (r["packets"].as_u64().unwrap(), r["origin"].as_str().unwrap().to_string()))
        .collect()
}

#[test]
fn rule_counters_grow_by_exactly_the_packets_sent() {
    let sb = Sandbox::new("counters");
    sb.apply(LAB);
    let before = firewall_counts(&sb);
    // icmp allowed (ICMP and ICMPv6 rules), udp 9999 denied, and what no rule allowed.
    assert_eq!(before.len(), 4, "{before:?}");
    assert_eq!(before[3].1, "no rule allowed it");
    assert!(before[0].1.contains("firewall on host v/b at "), "{before:?}");
    assert!(before[0].1.contains(".rhai:4:1, ingress rule 1"), "the firewall() line: {before:?}");
    assert!(before[2].1.ends_with("ingress rule 2"), "{before:?}");

    // Three pings, each a flow of its own (a flow's later packets are replies' business:
    // the rule that passes established traffic counts them).
    for _ in 0..3 {
        assert!(ping(&sb.ns("v.a"), "10.92.1.3"));
    }
    let udp =
        in_ns(&sb.ns("v.a"), &["bash", "-c", "for i in 1 2 3 4; do echo x > /dev/udp/10.92.1.3/9999; done"]);
    assert_eq!(udp.code, 0, "{udp:?}");

    let after = firewall_counts(&sb);
    assert_eq!(after[0].0 - before[0].0, 3, "three pings allowed: {after:?}");
    assert_eq!(after[2].0 - before[2].0, 4, "four datagrams denied: {after:?}");
    // The kernel says the same, read by nft.
    let ruleset = in_ns(&sb.ns("v.b"), &["nft", "list", "table", "inet", "vpcsh"]).stdout;
    let denied = ruleset.lines().find(|l| l.contains("dport 9999")).unwrap_or_default();
    assert!(denied.contains(&format!("counter packets {} ", after[2].0)), "{denied}");

    let text = sb.run(&["status", "--counters"]);
    assert!(text.stdout.contains(&format!("{} input", sb.ns("v.b"))), "{text:?}");
    assert!(text.stdout.contains("(firewall on host v/b at "), "{text:?}");
}

#[test]
fn the_flow_log_names_the_rule_that_rejected_a_connection() {
    let sb = Sandbox::new("flows");
    sb.apply(
        r#"let s = vpc("v", "10.93.0.0/16").subnet("s", "10.93.1.0/24");
let a = s.host("a");
let b = s.host("b");
serve(b, 80);
firewall(b, #{ ingress: [
    #{ proto: "tcp", port: 80, action: "allow" },
    #{ proto: "tcp", port: 22, action: "deny" },
] });
"#,
    );
    assert_eq!(get(&sb.ns("v.a"), "10.93.1.3", 80, "/").as_deref(), Some("v/b\n"));
    let denied = in_ns(&sb.ns("v.a"), &["timeout", "1", "bash", "-c", "exec 3<>/dev/tcp/10.93.1.3/22"]);
    assert_ne!(denied.code, 0, "22 is denied");
    let flows = |sb: &Sandbox| -> Vec<Value> {
        let run = sb.run(&["--json", "flows", "v/b"]);
        assert_eq!(run.code, 0, "{run:?}");
        run.stdout.lines().map(|l| serde_json::from_str(l).unwrap()).collect()
    };
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    let mut seen = flows(&sb);
    while seen.iter().all(|f| f["dport"] != 22) && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(100));
        seen = flows(&sb);
    }
    let accepted = seen.iter().find(|f| f["dport"] == 80).expect("the allowed connection is logged");
    assert_eq!(accepted["action"], "ACCEPT");
    assert_eq!(accepted["src"], "10.93.1.2");
    assert!(accepted["rule"].as_str().unwrap().ends_with("ingress rule 1"), "{accepted}");
    let rejected = seen.iter().find(|f| f["dport"] == 22).expect("the denied connection is logged");
    assert_eq!(rejected["action"], "REJECT");
    assert!(rejected["rule"].as_str().unwrap().contains(".rhai:5:1, ingress rule 2"), "{rejected}");
    // The kernel agrees: the rule that logged the rejection is the one that dropped it.
    let ruleset = in_ns(&sb.ns("v.b"), &["nft", "list", "chain", "inet", "vpcsh", "input"]).stdout;
    let deny = ruleset.lines().find(|l| l.contains("dport 22")).unwrap_or_default();
    assert!(
        deny.contains("log prefix") && deny.contains(" drop ") && !deny.contains("packets 0 "),
        "{ruleset}"
    );
    // A host without a firewall keeps no flow log.
    assert_eq!(sb.run(&["flows", "v/a"]).code, 1);
}
