//! `vpcsh flows [VPC/HOST] [--follow]`: the flows firewalled hosts accepted or rejected,
//! oldest first, each with the rule that decided — read from the hosts' flow logs (the
//! `flow log` process a firewall brings along), following new ones until Ctrl-C.

use std::collections::HashMap;
use std::io::{Read, Seek, SeekFrom};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use serde_json::json;

use crate::exec::nft::flows::Flow;
use crate::exec::process::ProcessRecord;
use crate::exec::{interrupted, stop_on_signals};
use crate::plan::kernel::Process;
use crate::session::{self, Failure, RuleCounter, Target};
use crate::state;

/// A flow log file and how far it has been read.
struct Log {
    ns: String,
    host: String,
    path: PathBuf,
    read: u64,
}

pub(crate) fn flows(
    target: &Target,
    who: Option<&str>,
    follow: bool,
    json: bool,
) -> Result<ExitCode, Failure> {
    target.check()?;
    let state =
        state::peek(&target.dir()).map_err(|e| Failure::refused(e.to_string(), None))?.unwrap_or_default();
    let naming = target.naming();
    let hosts: HashMap<String, String> = state
        .network
        .vpcs
        .iter()
        .flat_map(|v| v.subnets.iter().flat_map(|s| &s.hosts).map(move |h| (v, h)))
        .map(|(v, h)| (naming.host_ns(&v.name, &h.name), format!("{}/{}", v.name, h.name)))
        .collect();
    let mut logs: Vec<Log> = state
        .processes
        .iter()
        .filter(|p: &&ProcessRecord| p.process == Process::FlowLog)
        .filter(|p| who.is_none_or(|w| hosts.get(&p.ns).is_some_and(|h| h == w)))
        .map(|p| Log {
            ns: p.ns.clone(),
            host: hosts.get(&p.ns).cloned().unwrap_or_else(|| p.ns.clone()),
            path: p.log.clone(),
            read: 0,
        })
        .collect();
    if logs.is_empty() {
        let what = who.map_or("no host here".to_string(), |w| w.to_string());
        return Err(Failure::refused(
            format!("{what} keeps a flow log"),
            Some("a host keeps one once a firewall() protects it (or its subnet)"),
        ));
    }
    let rules: HashMap<(String, String), RuleCounter> = session::rules(target)?
        .into_iter()
        .filter_map(|r| Some(((r.ns.clone(), r.log.clone()?), r)))
        .collect();
    let print = |log: &Log, flow: &Flow| {
        print_flow(log, flow, rules.get(&(log.ns.clone(), flow.prefix.clone())), json)
    };
    let mut all: Vec<(String, usize, Flow)> = Vec::new();
    for (i, log) in logs.iter_mut().enumerate() {
        all.extend(read_new(log).into_iter().map(|f| (f.time.clone(), i, f)));
    }
    all.sort_by(|a, b| a.0.partial_cmp(&b.0).unwrap_or(std::cmp::Ordering::Equal));
    for (_, i, flow) in &all {
        print(&logs[*i], flow);
    }
    if follow {
        stop_on_signals();
        while !interrupted() {
            std::thread::sleep(Duration::from_millis(200));
            for log in &mut logs {
                for flow in read_new(log) {
                    print(log, &flow);
                }
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// The flows written to a log since it was last read (all again when it was rewritten
/// shorter: the collector keeps the newer half past its limit).
fn read_new(log: &mut Log) -> Vec<Flow> {
    let Ok(mut file) = std::fs::File::open(&log.path) else { return Vec::new() };
    let len = file.metadata().map(|m| m.len()).unwrap_or(0);
    if len < log.read {
        log.read = 0;
    }
    let mut text = String::new();
    if file.seek(SeekFrom::Start(log.read)).is_err() || file.read_to_string(&mut text).is_err() {
        return Vec::new();
    }
    // Only whole lines: the collector may be writing the last one.
    let whole = text.rfind('\n').map_or(0, |i| i + 1);
    log.read += whole as u64;
    text[..whole].lines().filter_map(Flow::parse).collect()
}

fn print_flow(log: &Log, flow: &Flow, rule: Option<&RuleCounter>, json: bool) {
    let action = if rule.is_some_and(RuleCounter::accepts) { "ACCEPT" } else { "REJECT" };
    let decided = rule.and_then(|r| r.origin.clone()).unwrap_or_else(|| format!("rule {}", flow.prefix));
    if json {
        let line = json!({
            "time": flow.time, "host": log.host, "action": action, "proto": flow.proto,
            "src": flow.src.to_string(), "sport": flow.sport, "dst": flow.dst.to_string(), "dport": flow.dport,
            "rule": decided,
        });
        println!("{line}");
        return;
    }
    let secs: f64 = flow.time.parse().unwrap_or(0.0);
    let day = secs as u64 % 86_400;
    let clock = format!(
        "{:02}:{:02}:{:02}.{:03}",
        day / 3600,
        day / 60 % 60,
        day % 60,
        (secs.fract() * 1000.0) as u32
    );
    let ports = |ip, port: u16| if flow.proto == "icmp" { format!("{ip}") } else { format!("{ip}:{port}") };
    println!(
        "{clock} {} {action} {} {} -> {}  ({decided})",
        log.host,
        flow.proto,
        ports(flow.src, flow.sport),
        ports(flow.dst, flow.dport)
    );
}
