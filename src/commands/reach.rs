//! `vpcsh explain FROM TO` and `vpcsh verify`: what the model says about flows, and the
//! same flows probed for real and compared, each the other's check.

use std::net::IpAddr;
use std::process::ExitCode;
use std::sync::Mutex;
use std::time::Duration;

use serde_json::json;

use crate::exec::probe;
use crate::model::reach::{self, Context, Flow, Place, Verdict};
use crate::model::{Network, Protected, RuleProto, Transport};
use crate::plan::desired::{INTERNET_IP, INTERNET_IP6, SANDBOX_UPLINK_IP};
use crate::plan::naming::Naming;
use crate::session::{self, Failure, Target};

/// The network applied here, and what the model cannot know: other tools' firewalls that
/// block VPC traffic (when the kernel can be read), and whether IPv6 reaches the internet.
fn applied(target: &Target) -> Result<(Network, Context), Failure> {
    let network = session::applied(target)?;
    // Reading the machine needs privileges; without them, explain from the model alone.
    let blocking_chains = session::blocking_chains(target).unwrap_or_default();
    Ok((network, Context { ipv6_internet: target.sandbox.is_some(), blocking_chains }))
}

/// A place as a user types it: `internet`, `VPC/HOST`, a host name found in one VPC only,
/// or an address (a host's, or the internet's).
fn place(network: &Network, text: &str) -> Result<(Place, Option<bool>), Failure> {
    if text == "internet" {
        return Ok((Place::Internet(INTERNET_IP.into()), None));
    }
    if let Ok(ip) = text.trim_start_matches('[').trim_end_matches(']').parse::<IpAddr>() {
        return Ok((Place::at(network, ip), Some(ip.is_ipv6())));
    }
    let found: Vec<_> = network
        .hosts()
        .filter(|(v, _, h)| text == h.name || text == format!("{}/{}", v.name, h.name))
        .map(|(v, _, h)| Place::Host { vpc: v.name.clone(), host: h.name.clone() })
        .collect();
    match found.as_slice() {
        [one] => Ok((one.clone(), None)),
        [] => Err(Failure::refused(
            format!("no host `{text}` is applied here"),
            Some("name a host as VPC/HOST (see `vpcsh list`), an address, or `internet`"),
        )),
        _ => Err(Failure::refused(
            format!("`{text}` names hosts in several VPCs"),
            Some("write it as VPC/HOST"),
        )),
    }
}

fn parse_proto(proto: &str) -> Result<RuleProto, Failure> {
    match proto {
        "tcp" => Ok(RuleProto::Tcp),
        "udp" => Ok(RuleProto::Udp),
        "icmp" => Ok(RuleProto::Icmp),
        other => Err(Failure::refused(format!("`{other}` is not a protocol"), Some("use tcp, udp or icmp"))),
    }
}

/// `vpcsh explain FROM TO [--port N] [--proto P]`.
pub(crate) fn explain(
    target: &Target,
    (from, to): (&str, &str),
    port: u16,
    proto: &str,
    json: bool,
) -> Result<ExitCode, Failure> {
    let proto = parse_proto(proto)?;
    let (network, context) = applied(target)?;
    let ((from, v6_from), (to, v6_to)) = (place(&network, from)?, place(&network, to)?);
    let ipv6 = v6_from.or(v6_to).unwrap_or(false);
    let flow = Flow { from, to, proto, port, ipv6 };
    let verdict = reach::explain(&network, &flow, &context);
    if json {
        let body =
            json!({ "reachable": verdict.reachable, "path": verdict.path, "blocked_by": verdict.blocked_by });
        println!("{}", super::document("explain", body));
    } else {
        print_verdict(&verdict);
    }
    Ok(if verdict.reachable { ExitCode::SUCCESS } else { ExitCode::from(1) })
}

fn print_verdict(verdict: &Verdict) {
    println!("{}", if verdict.reachable { "reachable" } else { "blocked" });
    for hop in &verdict.path {
        println!("  {hop}");
    }
    if let Some(why) = &verdict.blocked_by {
        println!("blocked by: {why}");
    }
}

/// One flow to probe: the model's answer and where to send the packet from.
struct Probe {
    flow: Flow,
    /// The namespace the probe starts in, and the address it goes to.
    from_ns: String,
    to_addr: IpAddr,
    predicted: Verdict,
}

/// Every flow worth checking: host to host, host to and from the internet (in a sandbox),
/// by ping and on the ports that matter (published and firewall-listed), over each family
/// both ends have.
fn flows(network: &Network, naming: &Naming, context: &Context, node: Option<&str>) -> Vec<Probe> {
    let hosts: Vec<_> = network.hosts().collect();
    // In a fabric, packets start only from this node's hosts and its own internet.
    let here = |h: &crate::model::Host| !network.is_fabric() || h.node.as_deref() == node;
    let mut out = Vec::new();
    let mut add = |flow: Flow, from_ns: String, to_addr: IpAddr| {
        let predicted = reach::explain(network, &flow, context);
        out.push(Probe { flow, from_ns, to_addr, predicted });
    };
    for (fv, _, fh) in hosts.iter().filter(|(_, _, h)| here(h)) {
        let from = Place::Host { vpc: fv.name.clone(), host: fh.name.clone() };
        let from_ns = naming.host_ns(&fv.name, &fh.name);
        for (tv, ts, th) in hosts.iter().filter(|(v, _, h)| v.name != fv.name || h.name != fh.name) {
            let to = Place::Host { vpc: tv.name.clone(), host: th.name.clone() };
            let addrs = [Some(IpAddr::V4(th.ip)), th.ip6.filter(|_| fh.ip6.is_some()).map(IpAddr::V6)];
            for addr in addrs.into_iter().flatten() {
                for (proto, port) in ports_of(network, &tv.name, &ts.name, &th.name) {
                    let flow = Flow { from: from.clone(), to: to.clone(), proto, port, ipv6: addr.is_ipv6() };
                    add(flow, from_ns.clone(), addr);
                }
            }
        }
        if naming.sandbox {
            let internet = [Some(IpAddr::V4(INTERNET_IP)), fh.ip6.map(|_| IpAddr::V6(INTERNET_IP6))];
            for addr in internet.into_iter().flatten() {
                for (proto, port) in [(RuleProto::Icmp, 0), (RuleProto::Tcp, 80)] {
                    let flow = Flow {
                        from: from.clone(),
                        to: Place::Internet(addr),
                        proto,
                        port,
                        ipv6: addr.is_ipv6(),
                    };
                    add(flow, from_ns.clone(), addr);
                }
            }
        }
    }
    if let Some(internet_ns) = naming.internet_ns() {
        for (v, _, h) in hosts.iter().filter(|(_, _, h)| here(h)) {
            let to = Place::Host { vpc: v.name.clone(), host: h.name.clone() };
            let from = Place::Internet(INTERNET_IP.into());
            // Unasked, the outside sees nothing: a ping to the host's own address.
            let flow =
                Flow { from: from.clone(), to: to.clone(), proto: RuleProto::Icmp, port: 0, ipv6: false };
            add(flow, internet_ns.clone(), IpAddr::V4(h.ip));
            for p in network
                .publishes
                .iter()
                .filter(|p| p.vpc == v.name && p.host == h.name && p.proto == Transport::Tcp)
            {
                let flow = Flow {
                    from: from.clone(),
                    to: to.clone(),
                    proto: RuleProto::Tcp,
                    port: p.port,
                    ipv6: false,
                };
                add(flow, internet_ns.clone(), IpAddr::V4(SANDBOX_UPLINK_IP));
            }
        }
    }
    out
}

/// The probes that tell a host apart: a ping, and TCP to its published ports and to the
/// ports its own and its subnet's firewall rules name.
fn ports_of(network: &Network, vpc: &str, subnet: &str, host: &str) -> Vec<(RuleProto, u16)> {
    let mut ports: Vec<u16> =
        network.publishes.iter().filter(|p| p.vpc == vpc && p.host == host).map(|p| p.port).collect();
    let guards = |f: &&crate::model::Firewall| {
        f.vpc == vpc
            && match &f.protects {
                Protected::Host(h) => h == host,
                Protected::Subnet(s) => s == subnet,
            }
    };
    for f in network.firewalls.iter().filter(guards) {
        let tcp = f.ingress.iter().filter(|r| matches!(r.proto, RuleProto::Tcp | RuleProto::Any));
        ports.extend(tcp.filter_map(|r| r.ports.map(|(lo, _)| lo)));
    }
    ports.sort_unstable();
    ports.dedup();
    std::iter::once((RuleProto::Icmp, 0)).chain(ports.into_iter().map(|p| (RuleProto::Tcp, p))).collect()
}

/// Whether the packet got through: an echo reply, or a TCP answer — accepted, or refused
/// by a host where nothing listens (which still means the path is open).
fn probe_one(p: &Probe, timeout: Duration) -> std::io::Result<bool> {
    match p.flow.proto {
        RuleProto::Icmp => probe::ping(&p.from_ns, p.to_addr, timeout, 1).map(|rtt| rtt.is_some()),
        _ => probe::tcp_reaches(&p.from_ns, p.to_addr, p.flow.port, timeout),
    }
}

fn describe(p: &Probe) -> String {
    let show = |place: &Place| match place {
        Place::Host { vpc, host } => format!("{vpc}/{host}"),
        Place::Internet(_) => "internet".to_string(),
    };
    let what = match p.flow.proto {
        RuleProto::Icmp => "ping".to_string(),
        proto => format!("{}/{}", p.flow.port, format!("{proto:?}").to_lowercase()),
    };
    format!("{} -> {} ({what} to {})", show(&p.flow.from), show(&p.flow.to), p.to_addr)
}

/// `vpcsh verify [SCRIPT] [--sample N]`: probes every flow (or a sample), compares each
/// with `explain`, prints the mismatches; exit 0 only without any.
pub(crate) fn verify(
    target: &Target,
    script: Option<&std::path::Path>,
    sample: Option<usize>,
    json: bool,
) -> Result<ExitCode, Failure> {
    let (applied, context) = applied(target)?;
    let network = match script {
        Some(path) => session::network_of(target, path)?,
        None => applied,
    };
    let naming = target.naming();
    let node = session::this_node(target);
    let mut probes = flows(&network, &naming, &context, node.as_deref());
    if let Some(n) = sample.filter(|n| *n < probes.len()) {
        // Every k-th flow: spread over all hosts, the same each run.
        let step = probes.len().div_ceil(n);
        probes = probes.into_iter().step_by(step).collect();
    }
    // Impaired links add to a round trip: up to three of them, each way.
    let slack = Duration::from_micros(network.worst_delay_us() * 6);
    let timeout = target
        .probe_timeout
        .unwrap_or(if naming.sandbox { probe::SANDBOX_TIMEOUT } else { probe::TIMEOUT } + slack);
    let results = Mutex::new(Vec::new());
    let next = Mutex::new(probes.iter());
    std::thread::scope(|s| {
        for _ in 0..8 {
            s.spawn(|| {
                loop {
                    let Some(p) = next.lock().expect("queue").next() else { break };
                    let got = probe_one(p, timeout);
                    results.lock().expect("results").push((p, got));
                }
            });
        }
    });
    let mut mismatches = Vec::new();
    for (p, got) in results.into_inner().expect("results") {
        let mut got = got.map_err(|e| Failure::refused(format!("probing {}: {e}", describe(p)), None))?;
        // A flow the model calls reachable that did not answer in time gets one more, longer
        // chance: on a busy machine the first packet may wait for neighbour discovery on
        // three links. A flow that answered is never asked again: a drop stays a drop.
        if p.predicted.reachable && !got {
            got = probe_one(p, (timeout * 5).max(Duration::from_secs(1))).unwrap_or(false);
        }
        if got != p.predicted.reachable {
            mismatches.push((p, got));
        }
    }
    mismatches.sort_by_key(|(p, _)| describe(p));
    let say = |reachable: bool| if reachable { "reachable" } else { "blocked" };
    if json {
        let list: Vec<_> = mismatches
            .iter()
            .map(|(p, got)| json!({ "flow": describe(p), "model": say(p.predicted.reachable), "blocked_by": p.predicted.blocked_by, "packets": say(*got) }))
            .collect();
        let body = json!({ "flows": probes.len(), "mismatches": list });
        println!("{}", super::document("verify", body));
    } else {
        for (p, got) in &mismatches {
            let why = p.predicted.blocked_by.as_deref().map(|w| format!(" ({w})")).unwrap_or_default();
            println!(
                "MISMATCH {}: the model says {}{why}, packets say {}",
                describe(p),
                say(p.predicted.reachable),
                say(*got)
            );
        }
        println!("{} flows checked, {} mismatches", probes.len(), mismatches.len());
    }
    Ok(if mismatches.is_empty() { ExitCode::SUCCESS } else { ExitCode::from(1) })
}
