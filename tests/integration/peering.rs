//! Peering with real packets, and the isolation matrix: every ordered host pair of a
//! generated topology probed and compared with what the model's own rules predict.
//!
//! Grow the matrix: `VPCSH_MATRIX_SEED=7 VPCSH_MATRIX_VPCS=8 cargo test --test integration matrix`;
//! spread it over more machines with `VPCSH_MATRIX_NODES=4` (and `VPCSH_MATRIX_CONTROL=evpn`).

use std::sync::Mutex;
use std::thread;

use crate::common::*;

const THREE: &str = r#"
let a = vpc("a", "10.1.0.0/16"); let a1 = a.subnet("s1", "10.1.1.0/24"); a.subnet("s2", "10.1.2.0/24");
let b = vpc("b", "10.2.0.0/16"); b.subnet("s1", "10.2.1.0/24"); b.subnet("s2", "10.2.2.0/24");
let c = vpc("c", "10.3.0.0/16"); c.subnet("s1", "10.3.1.0/24");
peer(a, b, #{ allow: [a1, "10.2.1.0/24"] });
peer(b, c);
"#;

#[test]
fn allow_lists_decide_what_crosses_and_peering_is_never_transitive() {
    let sb = Sandbox::new("peer");
    sb.apply(THREE);
    let (a1, a2, b1, b2, c1) = (sb.ns("a.s1"), sb.ns("a.s2"), sb.ns("b.s1"), sb.ns("b.s2"), sb.ns("c.s1"));
    assert!(ping(&a1, "10.2.1.2") && ping(&b1, "10.1.1.2"), "allowed pair, both ways");
    assert!(!ping(&a2, "10.2.1.2") && !ping(&b1, "10.1.2.2"), "a subnet not on the list, both ways");
    assert!(!ping(&a1, "10.2.2.2") && !ping(&b2, "10.1.1.2"), "the other side's unlisted subnet");
    assert!(ping(&b2, "10.3.1.2") && ping(&c1, "10.2.2.2"), "an unrestricted peering");
    assert!(!ping(&a1, "10.3.1.2") && !ping(&c1, "10.1.1.2"), "a-b and b-c do not make a-c");
    // Peered traffic is not translated: a sees b's own address.
    let _server = Server::start(&a1, 80, "a1\n");
    assert_eq!(get(&b1, "10.1.1.2", 80, "/ip").as_deref(), Some("10.2.1.2\n"));
    let run = sb.run(&["list", "--json"]);
    let json: serde_json::Value = serde_json::from_str(&run.stdout).unwrap();
    assert_eq!(json["peerings"].as_array().unwrap().len(), 2, "{run:?}");
}

#[test]
fn removing_a_peering_or_a_vpc_takes_the_link_and_routes_away() {
    let sb = Sandbox::new("unpeer");
    sb.apply(THREE);
    assert!(ip(&sb.ns("b"), &["-o", "link"]).contains("p-c"));
    let run = sb.apply(&THREE.replace("peer(b, c);", ""));
    assert!(run.stdout.contains("deleted"), "{run:?}");
    assert!(!ip(&sb.ns("b"), &["-o", "link"]).contains("p-c"), "the peering link stayed");
    assert!(!ip(&sb.ns("b"), &["-4", "route"]).contains("10.3.0.0/16"), "the route stayed");
    assert!(!ping(&sb.ns("b.s2"), "10.3.1.2"));
    assert!(ping(&sb.ns("a.s1"), "10.2.1.2"), "the other peering is untouched");

    let run = sb.run(&["destroy", "b"]);
    assert_eq!(run.code, 0, "{run:?}");
    assert!(!ip(&sb.ns("a"), &["-o", "link"]).contains("p-b"), "a keeps a link to a destroyed VPC");
    let list = sb.run(&["list", "--json"]);
    let json: serde_json::Value = serde_json::from_str(&list.stdout).unwrap();
    assert_eq!(json["peerings"].as_array().unwrap().len(), 0, "{list:?}");
}

#[test]
fn same_cidr_vpcs_refuse_to_peer_and_nothing_changes() {
    let sb = Sandbox::new("peerbad");
    let script = sb.script(
        r#"let a = vpc("a", "10.1.0.0/16"); a.subnet("s", "10.1.1.0/24");
           let b = vpc("b", "10.1.0.0/16"); b.subnet("s", "10.1.1.0/24");
           peer(a, b);"#,
    );
    let run = sb.run(&["apply", script.to_str().unwrap()]);
    assert_eq!(run.code, 1, "{run:?}");
    assert!(run.stderr.contains("overlap and cannot peer"), "{run:?}");
    assert_eq!(sb.namespaces(), Vec::<String>::new());
}

/// A small deterministic generator (64-bit LCG), so a failing seed can be replayed.
struct Rng(u64);

impl Rng {
    fn next(&mut self, n: u64) -> u64 {
        self.0 = self.0.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        (self.0 >> 33) % n
    }
}

struct MatrixHost {
    vpc: usize,
    subnet: usize,
    /// The node it is pinned to (always 0 on one machine).
    node: usize,
    ns_suffix: String,
    ip: String,
    /// Set in the dual-stack mode.
    ip6: Option<String>,
}

struct MatrixPeering {
    a: usize,
    b: usize,
    /// Allowed (vpc, subnet) pairs; `None`: everything of both.
    allow: Option<Vec<(usize, usize)>>,
}

/// `vpcs` VPCs drawn from few CIDRs (so some share one), two subnets each with one host at
/// an address unique across VPCs, and peerings with and without allow-lists wherever the
/// rules permit them. Dual-stack: the same for IPv6 (the prefixes shared where the IPv4
/// CIDRs are), allow-lists naming both families.
fn generate(
    seed: u64,
    vpcs: usize,
    dual: bool,
    nodes: usize,
) -> (String, Vec<MatrixHost>, Vec<MatrixPeering>) {
    let mut rng = Rng(seed);
    let cidr_of: Vec<u64> = (0..vpcs).map(|_| 1 + rng.next((vpcs as u64).div_ceil(2) + 1)).collect();
    let mut script = String::new();
    if nodes > 1 {
        for n in 0..nodes {
            script += &format!("let n{n} = node(\"n{n}\", #{{ underlay: \"192.0.2.{}\" }});\n", 10 + n);
        }
    }
    let mut hosts = Vec::new();
    for (v, k) in cidr_of.iter().enumerate() {
        // IPv6 prefixes are routed, so each VPC has its own even where IPv4 CIDRs repeat.
        let vpc6 = if dual { format!(", #{{ ipv6: \"fd00:{v}::/56\" }}") } else { String::new() };
        script += &format!("let v{v} = vpc(\"v{v}\", \"10.{k}.0.0/16\"{vpc6});\n");
        for s in 1..=2 {
            let ip = format!("10.{k}.{s}.{}", 10 + v);
            let ip6 = dual.then(|| format!("fd00:{v}:0:{s}::{}", 10 + v));
            let (subnet6, host6) = match &ip6 {
                Some(ip6) => (format!(", #{{ ipv6: \"fd00:{v}:0:{s}::/64\" }}"), format!(", ip6: \"{ip6}\"")),
                None => (String::new(), String::new()),
            };
            // Hosts of one VPC, and of peered VPCs, land on different nodes.
            let node = (v + s) % nodes;
            let pin = if nodes > 1 { format!(", node: n{node}") } else { String::new() };
            script += &format!(
                "v{v}.subnet(\"s{s}\", \"10.{k}.{s}.0/24\"{subnet6}).host(\"h{s}\", #{{ ip: \"{ip}\"{host6}{pin} }});\n"
            );
            hosts.push(MatrixHost { vpc: v, subnet: s, node, ns_suffix: format!("v{v}.h{s}"), ip, ip6 });
        }
    }
    let mut peerings: Vec<MatrixPeering> = Vec::new();
    for a in 0..vpcs {
        for b in a + 1..vpcs {
            if cidr_of[a] == cidr_of[b] || rng.next(3) != 0 {
                continue;
            }
            // A VPC never peers with two VPCs that share a CIDR.
            let clash = |x: usize, other: usize| {
                peerings.iter().any(|p| {
                    let third = if p.a == x {
                        p.b
                    } else if p.b == x {
                        p.a
                    } else {
                        return false;
                    };
                    cidr_of[third] == cidr_of[other]
                })
            };
            if clash(a, b) || clash(b, a) {
                continue;
            }
            let allow = (rng.next(2) == 0)
                .then(|| vec![(a, 1 + rng.next(2) as usize), (b, 1 + rng.next(2) as usize)]);
            let list = allow.as_ref().map(|l| {
                let cidrs: Vec<String> = l
                    .iter()
                    .flat_map(|(v, s)| {
                        let k = cidr_of[*v];
                        let v6 = dual.then(|| format!("\"fd00:{v}:0:{s}::/64\""));
                        std::iter::once(format!("\"10.{k}.{s}.0/24\"")).chain(v6)
                    })
                    .collect();
                format!(", #{{ allow: [{}] }}", cidrs.join(", "))
            });
            script += &format!("peer(v{a}, v{b}{});\n", list.unwrap_or_default());
            peerings.push(MatrixPeering { a, b, allow });
        }
    }
    (script, hosts, peerings)
}

/// What the model's rules say about `from` reaching `to`.
fn predicted(from: &MatrixHost, to: &MatrixHost, peerings: &[MatrixPeering]) -> bool {
    if from.vpc == to.vpc {
        return true;
    }
    peerings.iter().any(|p| {
        let pair = (p.a == from.vpc && p.b == to.vpc) || (p.b == from.vpc && p.a == to.vpc);
        pair && p
            .allow
            .as_ref()
            .is_none_or(|l| l.contains(&(from.vpc, from.subnet)) && l.contains(&(to.vpc, to.subnet)))
    })
}

/// Pings every host from every other over both families (IPv4 alone with
/// `VPCSH_MATRIX_IPV4_ONLY=1`) and compares each answer with what the model says.
#[test]
fn isolation_matrix_matches_the_model() {
    matrix(1);
}

/// The same over sandbox machines of one fabric, each host pinned so that hosts of one VPC
/// and of peered VPCs sit on different nodes: isolation and peering hold across machines.
#[test]
fn isolation_matrix_holds_across_nodes() {
    matrix(2);
}

fn matrix(default_nodes: u64) {
    let env =
        |name: &str, default: u64| std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default);
    let (seed, vpcs) = (env("VPCSH_MATRIX_SEED", 42), env("VPCSH_MATRIX_VPCS", 5) as usize);
    let dual = env("VPCSH_MATRIX_IPV4_ONLY", 0) == 0;
    let nodes = if default_nodes > 1 { env("VPCSH_MATRIX_NODES", default_nodes).max(2) } else { 1 } as usize;
    let (mut script, hosts, peerings) = generate(seed, vpcs, dual, nodes);
    assert!(!peerings.is_empty(), "seed {seed} made no peering; pick another default");
    // One machine, or a fabric of sandbox machines.
    let mut fabric = None;
    let mut single = None;
    if nodes > 1 {
        let control = std::env::var("VPCSH_MATRIX_CONTROL").unwrap_or_else(|_| "static".into());
        script = format!("fabric(#{{ control: \"{control}\" }});\n{script}");
        let names: Vec<String> = (0..nodes).map(|n| format!("n{n}")).collect();
        let f = Fabric::new("mx", &names.iter().map(String::as_str).collect::<Vec<_>>());
        f.apply_everywhere(&script);
        if control == "evpn" {
            f.wait_for_evpn();
        }
        fabric = Some(f);
    } else {
        let sb = Sandbox::new("matrix");
        sb.apply(&script);
        single = Some(sb);
    }
    let ns_of = |h: &MatrixHost| match (&fabric, &single) {
        (Some(f), _) => f.host(&format!("n{}", h.node), &h.ns_suffix),
        (None, Some(sb)) => sb.ns(&h.ns_suffix),
        (None, None) => unreachable!("one of the two is set above"),
    };
    let flows: Vec<(usize, usize, &str)> = (0..hosts.len())
        .flat_map(|i| (0..hosts.len()).filter(move |j| *j != i).map(move |j| (i, j)))
        .flat_map(|(i, j)| {
            let v6 = hosts[j].ip6.as_deref();
            std::iter::once((i, j, hosts[j].ip.as_str())).chain(v6.map(|ip6| (i, j, ip6)))
        })
        .collect();
    let checked = flows.len();
    let next = Mutex::new(flows.into_iter());
    let mismatches = Mutex::new(Vec::new());
    thread::scope(|s| {
        for _ in 0..8 {
            s.spawn(|| {
                // The lock is let go before pinging: a `while let` would hold it throughout.
                loop {
                    let Some((i, j, addr)) = next.lock().unwrap().next() else { break };
                    let (from, to) = (&hosts[i], &hosts[j]);
                    let got = in_ns(&ns_of(from), &["ping", "-c1", "-W0.5", "-q", addr]).code == 0;
                    let want = predicted(from, to, &peerings);
                    if got != want {
                        mismatches.lock().unwrap().push(format!(
                            "{} -> {} ({addr}): model says {}, packets say {}",
                            from.ns_suffix,
                            to.ns_suffix,
                            if want { "reachable" } else { "blocked" },
                            if got { "reachable" } else { "blocked" },
                        ));
                    }
                }
            });
        }
    });
    let mismatches = mismatches.into_inner().unwrap();
    // vpcsh's own model agrees with the same packets, on every machine.
    let verifies: Vec<Run> = match (&fabric, &single) {
        (Some(f), _) => f.nodes.iter().map(|(node, _)| f.run(node, &["verify"])).collect(),
        (None, Some(sb)) => vec![sb.run(&["verify"])],
        (None, None) => unreachable!("one of the two is set above"),
    };
    for verify in verifies {
        assert_eq!(verify.code, 0, "seed {seed}: verify disagrees\n{}\nscript:\n{script}", verify.stdout);
    }
    assert!(
        mismatches.is_empty(),
        "seed {seed}, {vpcs} VPCs on {nodes} node(s): {} of {checked} flows differ from the model\n{}\nscript:\n{script}",
        mismatches.len(),
        mismatches.join("\n")
    );
}
