//! The standard library (`import "vpcsh/..."`), each function applied in a sandbox and
//! checked with packets.

use crate::common::*;

#[test]
fn patterns_build_what_they_promise() {
    let sb = Sandbox::new("patterns");
    let run = sb.apply(
        r#"
import "vpcsh/patterns" as p;
import "vpcsh/probes" as probes;
let shop = p::three_tier("shop", "10.40.0.0/16", 5432);
let w = shop.web.host("w");
let a = shop.app.hosts[0];
let d = shop.db.hosts[0];
serve(d, 5432);
let hs = p::hub_and_spoke("hub", "10.50.0.0/16", [["spa", "10.51.0.0/16"], ["spb", "10.52.0.0/16"]]);
let svc = p::shared_services("svc", "10.60.0.0/16", hs.spokes);
serve(svc, 80);
serve(hs.hub.subnets[0], 80);
let hub = hs.hub.subnets[0].hosts[0];
let spa = hs.spokes[0].subnets[0].hosts[0];
let spb = hs.spokes[1].subnets[0].hosts[0];
let cells = probes::expect_matrix([
    [a, d, 5432, true], [w, d, 5432, false],
    [spa, hub, 80, true], [spb, hub, 80, true], [spa, spb, 0, false],
    [spa, svc.hosts[0], 80, true], [spb, svc.hosts[0], 80, true],
]);
assert(http_get(a, "http://198.51.100.1/").body == "internet\n", "the app tier has egress");
print(`cells ${cells}`);
"#,
    );
    assert!(run.stdout.contains("cells 7"), "{run:?}");
    // Checked from outside too: the db's firewall and the app's NAT are in the kernel.
    let rules = in_ns(&sb.ns("shop.db"), &["nft", "list", "ruleset"]);
    assert!(rules.stdout.contains("dport 5432"), "{rules:?}");
    assert!(!ping(&sb.ns("spa.s"), "10.52.1.2"), "spokes never reach each other");
}

#[test]
fn the_lab_generator_and_a_wrong_matrix() {
    let sb = Sandbox::new("lab");
    let script = sb.script(
        r#"
import "vpcsh/patterns" as p;
import "vpcsh/probes" as probes;
let vpcs = p::lab(2, 2, 2);
let h = vpcs[0].subnets[0].hosts;
probes::expect_matrix([[h[0], h[1], 0, true], [h[0], vpcs[1].subnets[0].hosts[0], 0, true]]);
"#,
    );
    let run = sb.run(&["apply", script.to_str().unwrap()]);
    assert_eq!(run.code, 1, "the second cell is wrong: {run:?}");
    assert!(run.stdout.contains("wrong: h1-1 -> h1-1 ping: expected true, got false"), "{run:?}");
    assert!(run.stderr.contains("1 of 2 cells of the reachability matrix are wrong"), "{run:?}");
    // 2 VPCs × 2 subnets × 2 hosts: 2 routers and 8 hosts, from the lab generator.
    let made: Vec<String> = sb.namespaces().into_iter().filter(|n| n.contains(".v")).collect();
    assert_eq!(made.len(), 10, "{made:?}");
}
