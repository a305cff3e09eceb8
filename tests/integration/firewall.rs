//! Stateful firewalls with real packets: the seed example, rules from subnets, replies,
//! egress, ranges, udp and icmp, changes on re-apply, peered traffic, and `policy apply`.

use crate::common::*;

macro_rules! servers {
    () => {
        r#"
for p in [22, 80, 443, 8050, 9000] { serve(w1, p); }
serve(app, 80);
serve(db, 80);
"#
    };
}
const SERVERS: &str = servers!();
const TOPOLOGY: &str = prod_and!(servers!());

const SEED_POLICY: &str = r#"{"subnet": "10.10.1.0/24",
 "ingress": [{"port": 80, "protocol": "tcp", "action": "allow"},
             {"port": 22, "protocol": "tcp", "action": "deny"}]}"#;

fn connects(sb: &Sandbox, from: &str, to: &str, port: u16) -> bool {
    get(&sb.ns(from), to, port, "/").is_some()
}

#[test]
fn the_seed_example_allows_80_and_denies_22_and_the_rest() {
    let sb = Sandbox::new("fwseed");
    sb.dir.write("web.json", SEED_POLICY);
    let script = sb.dir.write("fw.rhai", &format!("{TOPOLOGY}\nfirewall(web, policy_file(\"web.json\"));"));
    let run = sb.run(&["apply", script.to_str().unwrap()]);
    assert_eq!(run.code, 0, "{run:?}");
    assert!(connects(&sb, "prod.app", "10.10.1.2", 80), "80 is allowed");
    assert!(!connects(&sb, "prod.app", "10.10.1.2", 22), "22 is denied");
    assert!(!connects(&sb, "prod.app", "10.10.1.2", 443), "an unlisted port is denied");
    assert!(!ping(&sb.ns("prod.app"), "10.10.1.2"), "so is icmp");
    // Replies to the firewalled host's own connections pass.
    assert!(connects(&sb, "prod.w1", "10.10.2.2", 80) && ping(&sb.ns("prod.w1"), "10.10.2.2"));
    assert!(connects(&sb, "prod.w1", "198.51.100.1", 80), "and to the internet");
    let tables = in_ns(&sb.ns("prod.w1"), &["nft", "list", "chain", "inet", "vpcsh", "input"]).stdout;
    let denied = tables.lines().find(|l| l.contains("tcp dport 22 ")).unwrap_or_default();
    assert!(tables.contains("policy drop") && denied.contains(" drop comment"), "{tables}");
}

#[test]
fn rules_from_subnets_ranges_udp_and_icmp() {
    let sb = Sandbox::new("fwrules");
    sb.apply(&format!(
        r#"{TOPOLOGY}
        firewall(w1, #{{ ingress: [
            #{{ proto: "tcp", port: 80, from: app, action: "allow" }},
            #{{ proto: "tcp", port: "8000-8100", from: "10.10.3.0/24", action: "allow" }},
            #{{ proto: "udp", port: 5000, from: db, action: "allow" }},
            #{{ proto: "icmp", from: app, action: "allow" }},
        ]}});"#
    ));
    assert!(
        connects(&sb, "prod.app", "10.10.1.2", 80) && !connects(&sb, "prod.db", "10.10.1.2", 80),
        "from a subnet"
    );
    assert!(
        connects(&sb, "prod.db", "10.10.1.2", 8050) && !connects(&sb, "prod.app", "10.10.1.2", 8050),
        "a range"
    );
    assert!(!connects(&sb, "prod.db", "10.10.1.2", 9000), "outside the range");
    assert!(
        udp_reaches(&sb.ns("prod.db"), "10.10.1.2", 5000)
            && !udp_reaches(&sb.ns("prod.app"), "10.10.1.2", 5000)
    );
    assert!(!udp_reaches(&sb.ns("prod.db"), "10.10.1.2", 5001), "another udp port");
    assert!(ping(&sb.ns("prod.app"), "10.10.1.2") && !ping(&sb.ns("prod.db"), "10.10.1.2"), "icmp");
}

#[test]
fn egress_rules_drop_what_they_do_not_allow() {
    let sb = Sandbox::new("fwegress");
    sb.apply(&format!(
        r#"{TOPOLOGY}
        firewall(w1, #{{ egress: [
            #{{ proto: "tcp", port: 80, to: app, action: "allow" }},
            #{{ proto: "tcp", port: 80, to: "198.51.100.1", action: "deny" }},
        ]}});"#
    ));
    assert!(connects(&sb, "prod.w1", "10.10.2.2", 80), "allowed egress");
    assert!(!connects(&sb, "prod.w1", "10.10.3.2", 80), "unmatched egress is dropped");
    assert!(!connects(&sb, "prod.w1", "198.51.100.1", 80), "denied egress");
    assert!(!ping(&sb.ns("prod.w1"), "10.10.2.2"), "icmp egress is unmatched too");
    // With only egress rules, ingress is still what no rule allows: dropped.
    assert!(!connects(&sb, "prod.app", "10.10.1.2", 80));
}

#[test]
fn a_changed_policy_takes_effect_on_reapply_and_an_unchanged_one_does_nothing() {
    let sb = Sandbox::new("fwchange");
    // Declared before the first effect (serve applies what is pending), the policy is in
    // place at every apply() of the script: re-running it changes nothing.
    let policy = |action: &str| {
        let base = prod_and!("");
        format!(
            "{base}\nfirewall(web, #{{ ingress: [#{{ proto: \"tcp\", port: 22, action: \"{action}\" }}] }});\n{SERVERS}"
        )
    };
    sb.apply(&policy("deny"));
    assert!(!connects(&sb, "prod.app", "10.10.1.2", 22));
    let again = sb.apply(&policy("deny"));
    assert_eq!(again.stdout.trim(), "0 created, 0 changed, 0 deleted", "{again:?}");
    let changed = sb.apply(&policy("allow"));
    assert_eq!(changed.stdout.trim(), "0 created, 1 changed, 0 deleted", "one atomic swap: {changed:?}");
    assert!(connects(&sb, "prod.app", "10.10.1.2", 22));
    let removed = sb.apply(TOPOLOGY);
    // The table, and the flow log it fed.
    assert!(removed.stdout.contains("2 deleted"), "{removed:?}");
    assert!(connects(&sb, "prod.app", "10.10.1.2", 443), "no policy: open again");
}

#[test]
fn policies_govern_peered_traffic() {
    let sb = Sandbox::new("fwpeer");
    sb.apply(
        r#"let a = vpc("a", "10.1.0.0/16"); let a1 = a.subnet("s1", "10.1.1.0/24"); let a2 = a.subnet("s2", "10.1.2.0/24");
           let b = vpc("b", "10.2.0.0/16"); let b1 = b.subnet("s1", "10.2.1.0/24");
           peer(a, b);
           serve(b1, 80);
           firewall(b1, #{ ingress: [#{ proto: "tcp", port: 80, from: a1, action: "allow" }] });"#,
    );
    assert!(get(&sb.ns("a.s1"), "10.2.1.2", 80, "/").is_some(), "allowed across the peering");
    assert!(get(&sb.ns("a.s2"), "10.2.1.2", 80, "/").is_none(), "the policy stops the other subnet");
}

#[test]
fn policy_apply_attaches_a_seed_policy_by_cidr() {
    let sb = Sandbox::new("fwcli");
    sb.apply(&format!(
        "{TOPOLOGY}\nlet dev = vpc(\"dev\", \"10.10.0.0/16\"); dev.subnet(\"web\", \"10.10.1.0/24\");"
    ));
    let file = sb.dir.write("seed.json", SEED_POLICY);
    let ambiguous = sb.run(&["policy", "apply", file.to_str().unwrap()]);
    assert_eq!(ambiguous.code, 1, "{ambiguous:?}");
    assert!(ambiguous.stderr.contains("prod/web") && ambiguous.stderr.contains("dev/web"), "{ambiguous:?}");
    let run = sb.run(&["policy", "apply", file.to_str().unwrap(), "--vpc", "prod"]);
    assert_eq!(run.code, 0, "{run:?}");
    assert!(connects(&sb, "prod.app", "10.10.1.2", 80) && !connects(&sb, "prod.app", "10.10.1.2", 22));
    assert!(in_ns(&sb.ns("dev.web"), &["nft", "list", "tables"]).stdout.trim().is_empty(), "dev untouched");
}

#[test]
fn a_file_of_several_policies_serves_both_paths_alike() {
    let sb = Sandbox::new("fwlist");
    // Two policies in one file, as users of the original tool kept them: web allows 80,
    // app allows 8080 only from web.
    let list = r#"[{"subnet": "10.10.1.0/24", "ingress": [{"port": 80, "protocol": "tcp", "action": "allow"}]},
                   {"subnet": "10.10.2.0/24", "ingress": [{"port": 80, "protocol": "tcp", "action": "allow", "source": "10.10.1.0/24"}]}]"#;
    sb.dir.write("list.json", list);
    // Through the script: each target takes its own policy from the list.
    let script = sb.dir.write(
        "main.rhai",
        &format!("{TOPOLOGY}\nfirewall(web, policy_file(\"list.json\"));\nfirewall(app, policy_file(\"list.json\"));"),
    );
    let run = sb.run(&["apply", script.to_str().unwrap()]);
    assert_eq!(run.code, 0, "{run:?}");
    assert!(
        connects(&sb, "prod.db", "10.10.1.2", 80) && !connects(&sb, "prod.db", "10.10.1.2", 22),
        "web's policy"
    );
    assert!(
        connects(&sb, "prod.w1", "10.10.2.2", 80) && !connects(&sb, "prod.db", "10.10.2.2", 80),
        "app's policy"
    );

    // Through `vpcsh policy apply`: every policy onto the subnet it names, in one apply.
    let fresh = Sandbox::new("fwlistcli");
    fresh.apply(TOPOLOGY);
    let file = fresh.dir.write("list.json", list);
    let run = fresh.run(&["policy", "apply", file.to_str().unwrap()]);
    assert_eq!(run.code, 0, "{run:?}");
    assert!(connects(&fresh, "prod.db", "10.10.1.2", 80) && !connects(&fresh, "prod.db", "10.10.1.2", 22));
    assert!(connects(&fresh, "prod.w1", "10.10.2.2", 80) && !connects(&fresh, "prod.db", "10.10.2.2", 80));
    // An empty list and a bad subnet are refused by both paths.
    for bad in ["[]", r#"{"subnet": "10.10.1.0/33", "ingress": []}"#] {
        let file = fresh.dir.write("bad.json", bad);
        let run = fresh.run(&["policy", "apply", file.to_str().unwrap()]);
        assert_eq!(run.code, 1, "{bad}: {run:?}");
    }
}

#[test]
fn no_address_family_walks_around_a_firewall() {
    // A deny-all host in an IPv4-only VPC: IPv6 is off in every namespace of the VPC, so no
    // link-local IPv6 path reaches it (the rules cover IPv4).
    let sb = Sandbox::new("fwv6");
    let script = sb.script(&format!("{TOPOLOGY}\nfirewall(w1, #{{ ingress: [] }});\nweb.host(\"w2\");"));
    assert_eq!(sb.run(&["apply", script.to_str().unwrap()]).code, 0);
    for ns in ["prod", "prod.w1", "prod.w2", "prod.app"] {
        let ns = sb.ns(ns);
        for conf in ["all", "default", "lo"] {
            let value = in_ns(&ns, &["cat", &format!("/proc/sys/net/ipv6/conf/{conf}/disable_ipv6")]);
            assert_eq!(value.stdout.trim(), "1", "{ns} {conf}: {value:?}");
        }
        assert_eq!(ip(&ns, &["-6", "-o", "addr"]).trim(), "", "{ns} has no IPv6 address");
    }
    assert!(!connects(&sb, "prod.w2", "10.10.1.2", 80), "deny-all over IPv4");
    let v6 = in_ns(&sb.ns("prod.w2"), &["ping", "-6", "-c1", "-W1", "ff02::1%eth0"]);
    assert_ne!(v6.code, 0, "no IPv6 from the neighbour: {v6:?}");
    // Turned back on by hand: status sees it, the next apply turns it off again.
    let w1 = sb.ns("prod.w1");
    assert_eq!(in_ns(&w1, &["sysctl", "-qw", "net.ipv6.conf.all.disable_ipv6=0"]).code, 0);
    let status = sb.run(&["status"]);
    assert!(status.stdout.contains("needs: set ipv6 off in") && status.code == 1, "{status:?}");
    assert_eq!(sb.run(&["apply", script.to_str().unwrap()]).code, 0);
    assert_eq!(ip(&w1, &["-6", "-o", "addr"]).trim(), "", "off again");
}
