//! Impaired links: a rate limit that packets feel, changed in place, seen when removed by
//! hand, and gone with its call; a delay in the round trip where the kernel has netem, and
//! a plain answer where it has not. Queues are checked from outside with `tc`.

use std::time::{Duration, Instant};

use crate::common::*;

fn lab(impairments: &str) -> String {
    format!(
        "let s = vpc(\"v\", \"10.82.0.0/16\").subnet(\"s\", \"10.82.1.0/24\");\n\
         let a = s.host(\"a\");\nlet b = s.host(\"b\");\n{impairments}\n"
    )
}

/// The root queue of a link, as `tc` shows it.
fn queue(ns: &str, dev: &str) -> String {
    in_ns(ns, &["tc", "qdisc", "show", "dev", dev, "root"]).stdout
}

/// How long fetching a 100 kB body from a's server takes, from b.
fn fetch(sb: &Sandbox) -> Duration {
    let started = Instant::now();
    let body = get(&sb.ns("v.b"), "10.82.1.2", 8080, "/");
    assert_eq!(body.map(|b| b.len()), Some(100_000), "the whole body arrives");
    started.elapsed()
}

#[test]
fn a_rate_limit_slows_a_transfer_and_is_changed_in_place_seen_and_removed() {
    let sb = Sandbox::new("rate");
    let probes =
        "assert(ping_rtt(b, a) > 0.0, \"a answers\"); assert(ping_rtt(b, \"10.82.1.99\") == (), \"nobody\");";
    sb.apply(&lab(&format!("impair(a, #{{ rate: \"1mbit\" }});\n{probes}")));
    for (ns, dev) in [(sb.ns("v.a"), "eth0"), (sb.ns("v"), "h-a")] {
        assert!(
            queue(&ns, dev).contains("tbf") && queue(&ns, dev).contains("rate 1Mbit"),
            "{}",
            queue(&ns, dev)
        );
    }
    let _server = Server::start(&sb.ns("v.a"), 8080, &"x".repeat(100_000));
    // 100 kB at 1 Mbit/s (125 kB/s) take 0.8 s, less the bucket's 3.2 kB burst.
    let limited = fetch(&sb);
    assert!(limited >= Duration::from_millis(600), "{limited:?}");

    let run = sb.apply(&lab("impair(a, #{ rate: \"4mbit\" });"));
    assert!(run.stdout.contains("0 created, 2 changed, 0 deleted"), "changed in place: {run:?}");
    assert!(queue(&sb.ns("v.a"), "eth0").contains("rate 4Mbit"));

    // A queue taken away by hand is drift.
    in_ns(&sb.ns("v.a"), &["tc", "qdisc", "del", "dev", "eth0", "root"]);
    let status = sb.run(&["status"]);
    assert_eq!(status.code, 1, "{status:?}");
    assert!(status.stdout.contains("impair link eth0"), "{status:?}");

    sb.apply(&lab(""));
    assert!(!queue(&sb.ns("v"), "h-a").contains("tbf"), "{}", queue(&sb.ns("v"), "h-a"));
    let free = fetch(&sb);
    assert!(free < limited / 2, "without the limit: {free:?}, with it: {limited:?}");
}

#[test]
fn a_delay_shows_in_the_round_trip_or_the_kernel_is_said_to_lack_netem() {
    let sb = Sandbox::new("delay");
    let script = sb.script(&lab("impair(a, #{ delay: \"25ms\" });"));
    let run = sb.run(&["apply", script.to_str().unwrap()]);
    if run.code != 0 {
        // This kernel has no netem: said so, and nothing half-built is left.
        assert!(run.stderr.contains("CONFIG_NET_SCH_NETEM"), "{run:?}");
        assert!(run.stderr.contains("nothing half-built was left"), "{run:?}");
        assert!(sb.namespaces().is_empty(), "{:?}", sb.namespaces());
        return;
    }
    // b -> a crosses a's link once each way: 25 ms twice.
    let out = in_ns(&sb.ns("v.b"), &["ping", "-c", "5", "-i", "0.2", "-q", "10.82.1.2"]).stdout;
    let avg: f64 = out
        .rsplit_once(" = ")
        .and_then(|(_, v)| v.split('/').nth(1)?.parse().ok())
        .unwrap_or_else(|| panic!("no round trip in {out}"));
    assert!((40.0..=60.0).contains(&avg), "average round trip {avg} ms");
    sb.apply(&lab("impair(a, #{ delay: \"25ms\" });\nlet rtt = ping_rtt(b, a);\nassert(rtt > 40.0 && rtt < 60.0, `rtt ${rtt}`);"));
    sb.apply(&lab("impair(a, #{ loss: 100 });"));
    assert!(!ping(&sb.ns("v.b"), "10.82.1.2"), "100 % loss drops everything");
}
