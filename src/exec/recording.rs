//! A backend that changes nothing: it applies operations to an in-memory kernel state and
//! records them, so planning and apply logic can be tested without root.

use std::collections::BTreeSet;

use super::{Backend, KernelError, OpError};
use crate::plan::Op;
use crate::plan::kernel::{KernelState, Link, LinkKind, Netns, Nft, Owner};

#[derive(Default)]
pub(crate) struct Recording {
    pub state: KernelState,
    pub applied: Vec<Op>,
    /// Fail the operation with this index (counting every `apply` call), to test rollback.
    pub fail_at: Option<usize>,
    /// Apply every operation of a batch even after one fails, as parallel workers do.
    pub parallel: bool,
}

impl Backend for Recording {
    fn observe(&mut self, namespaces: &BTreeSet<String>) -> Result<KernelState, OpError> {
        let mut out = KernelState::default();
        for ns in namespaces {
            if let Some(n) = self.state.namespaces.get(ns) {
                out.namespaces.insert(ns.clone(), n.clone());
            }
        }
        Ok(out)
    }

    fn apply_batch(&mut self, ops: &[&Op]) -> Vec<super::Outcome> {
        if !self.parallel {
            return super::one_by_one(self, ops);
        }
        ops.iter()
            .map(|op| self.apply(op).map_or_else(super::Outcome::Failed, |()| super::Outcome::Done))
            .collect()
    }

    fn apply(&mut self, op: &Op) -> Result<(), OpError> {
        if self.fail_at == Some(self.applied.len()) {
            self.applied.push(op.clone());
            let cause =
                KernelError { errno: Some(super::libc_errno::EEXIST), message: "injected failure".into() };
            return Err(OpError { doing: op.to_string(), cause });
        }
        self.applied.push(op.clone());
        let missing = || OpError {
            doing: op.to_string(),
            cause: KernelError {
                errno: Some(nix::errno::Errno::ENOENT as i32),
                message: "no such namespace".into(),
            },
        };
        let link = recorded_link;
        match op {
            Op::CreateNetns { ns, forwarding, ipv6 } => {
                let mut n = Netns { forwarding: *forwarding, ipv6: Some(*ipv6), ..Netns::default() };
                n.links.insert("lo".into(), Link { ours: false, ..link(LinkKind::Loopback) });
                self.state.namespaces.insert(ns.clone(), n);
            }
            Op::DeleteNetns { ns } => {
                self.state.namespaces.remove(ns);
            }
            Op::CreateVeth { name, master, peer_ns, peer, mtu, peer_mac, peer_master, .. } => {
                let n = self.state.namespaces.get_mut(op.ns()).ok_or_else(missing)?;
                let near = Link { master: master.clone(), mtu: *mtu, ..link(LinkKind::VethPeer) };
                n.links.insert(name.clone(), near);
                let far = self.state.namespaces.get_mut(peer_ns).ok_or_else(missing)?;
                let far_end = Link {
                    master: peer_master.clone(),
                    mtu: *mtu,
                    mac: *peer_mac,
                    ..link(LinkKind::VethPeer)
                };
                far.links.insert(peer.clone(), far_end);
            }
            _ => apply_in(self.state.namespaces.get_mut(op.ns()).ok_or_else(missing)?, op),
        }
        Ok(())
    }

    fn processes(&self) -> Vec<super::process::ProcessRecord> {
        Vec::new()
    }

    fn default_route_dev(&mut self, ns: &str) -> Result<Option<String>, OpError> {
        Ok(self
            .state
            .namespaces
            .get(ns)
            .and_then(|n| n.routes.iter().find(|r| r.dst.prefix() == 0))
            .map(|r| r.dev.clone()))
    }
}

/// An operation on one namespace's recorded state.
fn apply_in(n: &mut Netns, op: &Op) {
    let link = recorded_link;
    match op {
        Op::SetForwarding { on, .. } => n.forwarding = *on,
        Op::SetIpv6 { on, .. } => n.ipv6 = Some(*on),
        Op::CreateBridge { name, mac, .. } => {
            n.links.insert(name.clone(), Link { mac: *mac, ..link(LinkKind::Bridge) });
        }
        Op::CreateVxlan { .. }
        | Op::AddNeighbour { .. }
        | Op::DelNeighbour { .. }
        | Op::AddFlood { .. }
        | Op::DelFlood { .. }
        | Op::SetLearning { .. }
        | Op::AddPortMac { .. }
        | Op::DelPortMac { .. } => apply_fabric(n, op),
        Op::SetLink { name, up, master, .. } => {
            if let Some(l) = n.links.get_mut(name) {
                l.up = *up;
                l.master = master.clone();
            }
        }
        Op::DeleteLink { name, .. } => {
            n.links.remove(name);
        }
        Op::SetRouteLocalnet { name, on, .. } => {
            if let Some(l) = n.links.get_mut(name) {
                l.route_localnet = *on;
            }
        }
        Op::SetImpairment { name, impairment, .. } => {
            if let Some(l) = n.links.get_mut(name) {
                l.impairment = *impairment;
            }
        }
        Op::AddAddr { addr, .. } => {
            n.addrs.insert(addr.clone());
        }
        Op::DelAddr { addr, .. } => {
            n.addrs.remove(addr);
        }
        Op::AddRoute { route, .. } | Op::ReplaceRoute { route, .. } => {
            n.routes.retain(|r| r.dst != route.dst);
            n.routes.insert(route.clone());
        }
        Op::DelRoute { route, .. } => {
            n.routes.remove(route);
        }
        Op::StartProcess { process, .. } => {
            n.processes.insert(process.clone());
        }
        Op::StopProcess { process, .. } => {
            n.processes.remove(process);
        }
        Op::ReplaceProcess { old, new, .. } => {
            n.processes.remove(old);
            n.processes.insert(new.clone());
        }
        Op::SetRuleset { ruleset, .. } => n.nft = Some(Nft::Wanted(ruleset.clone())),
        Op::DeleteRuleset { .. } => n.nft = None,
        Op::OpenHostFirewall { chain, .. } => {
            n.host_firewall.insert(chain.clone(), true);
        }
        Op::CloseHostFirewall { chain, .. } => {
            n.host_firewall.insert(chain.clone(), false);
        }
        Op::CreateNetns { .. } | Op::DeleteNetns { .. } | Op::CreateVeth { .. } => {
            unreachable!("the caller handles what spans namespaces")
        }
    }
}

/// A link as vpcsh makes it, up and in its group.
fn recorded_link(kind: LinkKind) -> Link {
    Link::made(kind, None, Owner::Unclaimed)
}

/// A fabric operation on one namespace's recorded state.
fn apply_fabric(n: &mut Netns, op: &Op) {
    let link = recorded_link;
    match op {
        Op::CreateVxlan { name, vni, local, underlay_ns, master, mtu, evpn, .. } => {
            let kind =
                LinkKind::Vxlan { vni: *vni, local: *local, underlay_ns: underlay_ns.clone(), evpn: *evpn };
            n.links.insert(name.clone(), Link { master: master.clone(), mtu: *mtu, ..link(kind) });
        }
        Op::AddNeighbour { neighbour, .. } => {
            n.neighbours.insert(neighbour.clone());
        }
        Op::DelNeighbour { neighbour, .. } => {
            n.neighbours.remove(neighbour);
        }
        Op::AddFlood { flood, .. } => {
            n.floods.insert(flood.clone());
        }
        Op::DelFlood { flood, .. } => {
            n.floods.remove(flood);
        }
        Op::SetLearning { name, on, .. } => {
            if let Some(l) = n.links.get_mut(name) {
                l.learning = Some(*on);
            }
        }
        Op::AddPortMac { entry, .. } => {
            n.port_macs.insert(entry.clone());
        }
        Op::DelPortMac { entry, .. } => {
            n.port_macs.remove(entry);
        }
        _ => {}
    }
}
