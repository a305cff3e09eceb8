//! `vpcsh exec TARGET -- CMD`: a command run inside a host, a router or the internet.

use std::os::fd::AsFd;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::process::{Command, ExitCode};

use nix::sched::{CloneFlags, setns};

use crate::diag::Diag;
use crate::exec::netns;
use crate::session::Target;
use crate::state;

/// The namespace a target names: `internet`, `VPC/HOST` or `VPC` (its router).
pub(super) fn resolve(target: &Target, who: &str) -> Result<String, Diag> {
    let naming = target.naming();
    let network = state::peek(&target.dir()).map(|s| s.network).unwrap_or_default();
    if who == "internet" {
        return naming.internet_ns().ok_or_else(|| {
            Diag::plain("`internet` exists only in a sandbox", Some("pass --sandbox NAME".into()))
        });
    }
    let (vpc_name, host) = match who.split_once('/') {
        Some((v, h)) => (v, Some(h)),
        None => (who, None),
    };
    let Some(vpc) = network.vpc(vpc_name) else {
        let known: Vec<_> = network.vpcs.iter().map(|v| v.name.as_str()).collect();
        let help = if known.is_empty() {
            "nothing is applied here".into()
        } else {
            format!("VPCs: {}", known.join(", "))
        };
        return Err(Diag::plain(format!("no VPC named `{vpc_name}` is applied here"), Some(help)));
    };
    match host {
        None => Ok(naming.router_ns(&vpc.name)),
        Some(h) if vpc.subnets.iter().any(|s| s.hosts.iter().any(|x| x.name == h)) => {
            Ok(naming.host_ns(&vpc.name, h))
        }
        Some(h) => {
            let hosts: Vec<_> =
                vpc.subnets.iter().flat_map(|s| s.hosts.iter().map(|x| x.name.as_str())).collect();
            Err(Diag::plain(
                format!("VPC `{}` has no host `{h}`", vpc.name),
                Some(format!("hosts: {}", hosts.join(", "))),
            ))
        }
    }
}

/// Prints the logs of the processes vpcsh started in a host.
pub(super) fn logs(target: &Target, who: &str) -> Result<(), Vec<Diag>> {
    let ns = resolve(target, who).map_err(|d| vec![d])?;
    let processes = state::peek(&target.dir()).map(|s| s.processes).unwrap_or_default();
    let mine: Vec<_> = processes.iter().filter(|p| p.ns == ns).collect();
    if mine.is_empty() {
        println!("no processes in {who}");
    }
    for p in &mine {
        if mine.len() > 1 {
            println!("==> {} (pid {}, {}) <==", p.process, p.pid, if p.alive() { "alive" } else { "dead" });
        }
        match std::fs::read_to_string(&p.log) {
            Ok(text) => print!("{text}"),
            Err(e) => println!("(cannot read {}: {e})", p.log.display()),
        }
    }
    Ok(())
}

pub(super) fn run(target: &Target, who: &str, command: &[String]) -> Result<ExitCode, Vec<Diag>> {
    let ns = resolve(target, who).map_err(|d| vec![d])?;
    let fd = netns::open(&ns).map_err(|e| {
        vec![Diag::plain(
            format!("cannot open namespace {ns}: {e}"),
            Some("is it applied? see `vpcsh status`".into()),
        )]
    })?;
    let mut cmd = Command::new(&command[0]);
    cmd.args(&command[1..]);
    // SAFETY: between fork and exec the child only makes the setns system call.
    unsafe {
        cmd.pre_exec(move || setns(fd.as_fd(), CloneFlags::CLONE_NEWNET).map_err(std::io::Error::from));
    }
    let status = cmd
        .status()
        .map_err(|e| vec![Diag::plain(format!("cannot run `{}` in {ns}: {e}", command[0]), None)])?;
    let code = status.code().unwrap_or_else(|| 128 + status.signal().unwrap_or(0));
    Ok(ExitCode::from(code.clamp(0, 255) as u8))
}
