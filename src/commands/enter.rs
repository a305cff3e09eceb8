//! `vpcsh exec TARGET -- CMD` and `vpcsh logs TARGET`: into a host, a router or the
//! internet, by the name a user types.

use std::os::unix::process::ExitStatusExt;
use std::process::{Command, ExitCode};

use crate::exec::{guest, netns};
use crate::model::Network;
use crate::session::{self, Failure, Target};
use crate::state::{self, State};

/// The applied state of a target, read without locking it.
fn peek(target: &Target) -> Result<Option<State>, Failure> {
    state::peek(&target.dir()).map_err(|e| Failure::refused(e.to_string(), None))
}

/// The namespace a target names: `internet`, `VPC/HOST` or `VPC` (its router).
pub(super) fn resolve(target: &Target, who: &str) -> Result<String, Failure> {
    let naming = target.naming();
    let network = peek(target)?.map(|s| s.network).unwrap_or_default();
    if who == "internet" {
        return naming.internet_ns().ok_or_else(|| {
            Failure::refused("`internet` exists only in a sandbox", Some("pass --sandbox NAME"))
        });
    }
    resolve_in(&network, target, who)
}

fn resolve_in(network: &Network, target: &Target, who: &str) -> Result<String, Failure> {
    let naming = target.naming();
    let (vpc_name, host) = match who.split_once('/') {
        Some((v, h)) => (v, Some(h)),
        None => (who, None),
    };
    let Some(vpc) = network.vpc(vpc_name) else {
        return Err(session::unknown_vpc(network, vpc_name));
    };
    match host {
        None => Ok(naming.router_ns(&vpc.name)),
        Some(h) if vpc.subnets.iter().any(|s| s.hosts.iter().any(|x| x.name == h)) => {
            Ok(naming.host_ns(&vpc.name, h))
        }
        Some(h) => {
            let hosts: Vec<_> =
                vpc.subnets.iter().flat_map(|s| s.hosts.iter().map(|x| x.name.as_str())).collect();
            Err(Failure::refused(
                format!("VPC `{}` has no host `{h}`", vpc.name),
                Some(&format!("hosts: {}", hosts.join(", "))),
            ))
        }
    }
}

/// Every name `exec` and `logs` accept here: `internet` in a sandbox, each VPC (its router)
/// and each `VPC/HOST`.
pub(crate) fn targets(target: &Target) -> Result<Vec<String>, Failure> {
    let network = peek(target)?.map(|s| s.network).unwrap_or_default();
    let internet = target.naming().internet_ns().map(|_| "internet".to_string());
    let names = network.vpcs.iter().flat_map(|vpc| {
        let hosts = vpc.subnets.iter().flat_map(|s| &s.hosts).map(|h| format!("{}/{}", vpc.name, h.name));
        std::iter::once(vpc.name.clone()).chain(hosts)
    });
    Ok(internet.into_iter().chain(names).collect())
}

/// Prints the logs of the processes vpcsh started in a host.
pub(crate) fn logs(target: &Target, who: &str) -> Result<(), Failure> {
    let ns = resolve(target, who)?;
    let processes = peek(target)?.map(|s| s.processes).unwrap_or_default();
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

/// Runs a command inside a host (`VPC/HOST`), a router (`VPC`) or `internet`, passing the
/// terminal through; exits with the command's status.
pub(crate) fn exec(target: &Target, who: &str, command: &[String]) -> Result<ExitCode, Failure> {
    let ns = resolve(target, who)?;
    let fd = netns::open(&ns).map_err(|e| {
        Failure::refused(
            format!("cannot open namespace {ns}: {e}"),
            Some("is it applied? see `vpcsh status`"),
        )
    })?;
    let mut cmd = Command::new(&command[0]);
    cmd.args(&command[1..]);
    guest::enter_on_exec(&mut cmd, fd, &ns);
    // As shells do: 127 when there is no such command, 126 when it cannot be run.
    let status = match cmd.status() {
        Ok(status) => status,
        // A PATH directory one may not search makes execvp say "permission denied" where
        // a shell says "not found": no PATH directory has it.
        Err(e) if e.kind() == std::io::ErrorKind::NotFound || !on_path(&command[0]) => {
            eprintln!("vpcsh: {}: command not found", command[0]);
            return Ok(ExitCode::from(127));
        }
        Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied => {
            eprintln!("vpcsh: {}: cannot run it: {e}", command[0]);
            return Ok(ExitCode::from(126));
        }
        Err(e) => return Err(Failure::refused(format!("cannot run `{}` in {ns}: {e}", command[0]), None)),
    };
    let code = status.code().unwrap_or_else(|| 128 + status.signal().unwrap_or(0));
    Ok(ExitCode::from(code.clamp(0, 255) as u8))
}

/// Whether `name` is a path, or names a file in one of `$PATH`'s directories.
fn on_path(name: &str) -> bool {
    name.contains('/')
        || std::env::var_os("PATH")
            .is_some_and(|path| std::env::split_paths(&path).any(|dir| dir.join(name).exists()))
}
