//! `:save FILE`: a script that rebuilds a network, declaration by declaration.

use std::fmt::Write;

use crate::model::{FirewallRule, Network, Protected, RuleProto, Transport, WorkloadKind};

fn var(kind: &str, parts: &[&str]) -> String {
    format!("{kind}_{}", parts.join("_").replace('-', "_"))
}

fn quote(s: &str) -> String {
    format!("{s:?}")
}

fn rules(rules: &[FirewallRule], peer_key: &str) -> String {
    let items: Vec<String> = rules
        .iter()
        .map(|r| {
            let proto = match r.proto {
                RuleProto::Tcp => "tcp",
                RuleProto::Udp => "udp",
                RuleProto::Icmp => "icmp",
                RuleProto::Any => "any",
            };
            let mut fields = vec![format!("proto: \"{proto}\"")];
            match r.ports {
                Some((lo, hi)) if lo == hi => fields.push(format!("port: {lo}")),
                Some((lo, hi)) => fields.push(format!("port: \"{lo}-{hi}\"")),
                None => {}
            }
            if !r.nets.is_empty() {
                let nets: Vec<String> = r.nets.iter().map(|n| quote(&n.to_string())).collect();
                fields.push(format!("{peer_key}: [{}]", nets.join(", ")));
            }
            fields.push(format!("action: \"{}\"", if r.allow { "allow" } else { "deny" }));
            format!("#{{ {} }}", fields.join(", "))
        })
        .collect();
    format!("[{}]", items.join(", "))
}

/// An options map as a script writes it (`, #{ a: 1, b: 2 }`), or nothing without options.
fn options(opts: &[String]) -> String {
    if opts.is_empty() { String::new() } else { format!(", #{{ {} }}", opts.join(", ")) }
}

/// The lines that declare one VPC, its subnets and their hosts.
fn vpc_lines(out: &mut String, vpc: &crate::model::Vpc) {
    let v = var("v", &[&vpc.name]);
    let mut opts: Vec<String> =
        vpc.cidr6.map(|n| format!("ipv6: {}", quote(&n.to_string()))).into_iter().collect();
    if vpc.host_access {
        opts.push("host_access: true".into());
    }
    let _ = writeln!(
        out,
        "let {v} = vpc({}, {}{});",
        quote(&vpc.name),
        quote(&vpc.cidr.to_string()),
        options(&opts)
    );
    for subnet in &vpc.subnets {
        let s = var("s", &[&vpc.name, &subnet.name]);
        let mut opts = Vec::new();
        if subnet.public {
            opts.push("public: true".to_string());
        }
        if let Some(net) = subnet.cidr6 {
            opts.push(format!("ipv6: {}", quote(&net.to_string())));
        }
        let (name, cidr) = (quote(&subnet.name), quote(&subnet.cidr.to_string()));
        let _ = writeln!(out, "let {s} = {v}.subnet({name}, {cidr}{});", options(&opts));
        if subnet.nat {
            let _ = writeln!(out, "nat({s});");
        }
        for host in &subnet.hosts {
            let h = var("h", &[&vpc.name, &host.name]);
            let ip6 = host.ip6.map(|ip| format!(", ip6: {}", quote(&ip.to_string()))).unwrap_or_default();
            let (name, ip) = (quote(&host.name), quote(&host.ip.to_string()));
            let _ = writeln!(out, "let {h} = {s}.host({name}, #{{ ip: {ip}{ip6} }});");
        }
    }
}

pub(super) fn script(network: &Network) -> String {
    let mut out = String::from("// Written by vpcsh repl's :save: rebuilds the session's topology.\n");
    for vpc in &network.vpcs {
        vpc_lines(&mut out, vpc);
    }
    for p in &network.peerings {
        let all: Vec<String> =
            p.a_allowed.iter().chain(&p.b_allowed).map(|n| quote(&n.to_string())).collect();
        let _ = writeln!(
            out,
            "peer({}, {}, #{{ allow: [{}] }});",
            var("v", &[&p.a]),
            var("v", &[&p.b]),
            all.join(", ")
        );
    }
    for p in &network.publishes {
        let proto = if p.proto == Transport::Udp { ", \"udp\"" } else { "" };
        let _ =
            writeln!(out, "publish({}, {}, {}{proto});", var("h", &[&p.vpc, &p.host]), p.port, p.host_port);
    }
    for f in &network.firewalls {
        let target = match &f.protects {
            Protected::Host(h) => var("h", &[&f.vpc, h]),
            Protected::Subnet(s) => var("s", &[&f.vpc, s]),
        };
        let _ = writeln!(
            out,
            "firewall({target}, #{{ ingress: {}, egress: {} }});",
            rules(&f.ingress, "from"),
            rules(&f.egress, "to")
        );
    }
    for w in &network.workloads {
        let h = var("h", &[&w.vpc, &w.host]);
        match &w.kind {
            WorkloadKind::Serve { port } => {
                let _ = writeln!(out, "serve({h}, {port});");
            }
            WorkloadKind::Run { argv, restart } => {
                let words: Vec<String> = argv.iter().map(|a| quote(a)).collect();
                let opts = if *restart { ", #{ restart: true }" } else { "" };
                let _ = writeln!(out, "run({h}, [{}]{opts});", words.join(", "));
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use crate::model::validate;

    fn network_of(text: &str) -> crate::model::Network {
        let mut interpreter = crate::script::tests::interpreter();
        interpreter.run("<test>", text).expect("the script runs");
        validate(&interpreter.declarations()).expect("the script is valid")
    }

    #[test]
    fn a_saved_dual_stack_session_rebuilds_the_same_network() {
        let original = network_of(
            r#"let v = vpc("v", "10.1.0.0/16", #{ ipv6: true });
               let s = v.subnet("s", "10.1.1.0/24", #{ public: true, ipv6: true });
               s.host("a"); s.host("b", #{ ip6: "" + s.gateway6 + "00" });
               let w = vpc("w", "10.2.0.0/16", #{ ipv6: "fd02::/56", host_access: true });
               w.subnet("t", "10.2.1.0/24", #{ ipv6: "fd02:0:0:9::/64" });
               v.subnet("u", "10.1.2.0/24");
               peer(v, w);"#,
        );
        let saved = super::script(&original);
        assert!(saved.contains("ipv6: \"fd02::/56\"") && saved.contains("ip6: "), "{saved}");
        assert_eq!(network_of(&saved), original, "{saved}");
    }
}
