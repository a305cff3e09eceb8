//! Planning: the ordered kernel operations that turn the observed state into the desired one.
//!
//! `plan` is pure and deterministic: creates in dependency order, then changes, then deletes
//! in reverse dependency order; an unchanged topology plans to nothing. `Display` on `Op` is
//! what `vpcsh plan` prints.

pub(crate) mod desired;
pub(crate) mod kernel;
pub(crate) mod naming;
pub(crate) mod nft;
mod ops;

use std::collections::BTreeMap;

pub(crate) use ops::{Op, OpClass};

pub(crate) use kernel::Owner;
use kernel::{KernelState, LinkKind, Netns, Nft, Process};

/// One operation and the model object it is for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Step {
    pub op: Op,
    pub owner: Owner,
    /// What puts things back if a later step fails; `None` where nothing can.
    pub undo: Option<Op>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct Plan {
    pub steps: Vec<Step>,
    /// Other tools' dropping forward chains found on the machine, and how vpcsh's traffic
    /// gets through each.
    pub host_firewall: Vec<(kernel::ForeignChain, Passage)>,
}

/// How vpcsh's forwarded traffic gets through another tool's dropping chain.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Passage {
    /// vpcsh's accept rules are there.
    Open,
    /// A step of this plan puts them there.
    Opening,
    /// vpcsh cannot write there: its traffic is dropped.
    Blocked,
    /// No VPC needs a way through.
    Unneeded,
}

impl std::fmt::Display for Passage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Passage::Open => "vpcsh's accept rules are in place",
            Passage::Opening => "vpcsh's accept rules are to be added",
            Passage::Blocked => "vpcsh cannot add rules there, so it drops vpcsh's traffic",
            Passage::Unneeded => "no VPC needs a way through",
        })
    }
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Summary {
    pub created: usize,
    pub changed: usize,
    pub deleted: usize,
}

impl std::ops::AddAssign for Summary {
    fn add_assign(&mut self, other: Self) {
        self.created += other.created;
        self.changed += other.changed;
        self.deleted += other.deleted;
    }
}

impl std::fmt::Display for Summary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} created, {} changed, {} deleted", self.created, self.changed, self.deleted)
    }
}

impl Plan {
    pub(crate) fn is_empty(&self) -> bool {
        self.steps.is_empty()
    }

    pub(crate) fn summary(&self) -> Summary {
        let mut s = Summary::default();
        for step in &self.steps {
            match step.op.class() {
                OpClass::Create => s.created += 1,
                OpClass::Change => s.changed += 1,
                OpClass::Delete => s.deleted += 1,
            }
        }
        s
    }
}

impl std::fmt::Display for Plan {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.steps.is_empty() {
            return writeln!(f, "no changes");
        }
        for step in &self.steps {
            writeln!(f, "{}", step.op)?;
        }
        Ok(())
    }
}

/// Operations grouped by when they may run.
#[derive(Default)]
struct Phases {
    /// Deletes that must clear a name before it is created again.
    clear: Vec<Step>,
    netns: Vec<Step>,
    /// Rules go in before links come up, so no packet passes before its policy is there.
    rulesets: Vec<Step>,
    /// By namespace and name, for the links that join them (see `bridges_beside_their_ports`).
    bridges: BTreeMap<(String, String), Step>,
    veths: Vec<Step>,
    changes: Vec<Step>,
    addrs: Vec<Step>,
    routes: Vec<Step>,
    processes: Vec<Step>,
    /// Deletes, run last so a failed create can be rolled back to the old state intact.
    del_processes: Vec<Step>,
    del_routes: Vec<Step>,
    del_addrs: Vec<Step>,
    del_links: Vec<Step>,
    del_rulesets: Vec<Step>,
    del_netns: Vec<Step>,
}

impl Phases {
    /// Adds `later`'s steps after this one's, phase by phase.
    fn append(&mut self, later: Phases) {
        let Phases {
            clear,
            netns,
            rulesets,
            bridges,
            veths,
            changes,
            addrs,
            routes,
            processes,
            del_processes,
            del_routes,
            del_addrs,
            del_links,
            del_rulesets,
            del_netns,
        } = later;
        self.clear.extend(clear);
        self.netns.extend(netns);
        self.rulesets.extend(rulesets);
        self.bridges.extend(bridges);
        self.veths.extend(veths);
        self.changes.extend(changes);
        self.addrs.extend(addrs);
        self.routes.extend(routes);
        self.processes.extend(processes);
        self.del_processes.extend(del_processes);
        self.del_routes.extend(del_routes);
        self.del_addrs.extend(del_addrs);
        self.del_links.extend(del_links);
        self.del_rulesets.extend(del_rulesets);
        self.del_netns.extend(del_netns);
    }
}

/// Plans the operations that make `observed` into `desired`. Only namespaces present in
/// `observed` are ever deleted: the caller observes exactly what it owns.
#[cfg(test)]
pub(crate) fn plan(desired: &KernelState, observed: &KernelState) -> Plan {
    plan_from(desired, observed, &KernelState::default())
}

/// `plan`, knowing what was wanted before (`previous`): a replaced ruleset that is still
/// what was wanted then can be put back if a later step fails.
pub(crate) fn plan_from(desired: &KernelState, observed: &KernelState, previous: &KernelState) -> Plan {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get()).min(4);
    let share = desired.namespaces.len().div_ceil(cores).max(PARALLEL_PLAN_FROM);
    plan_in_shares(desired, observed, previous, share)
}

/// `plan_from`, the wanted namespaces diffed in shares of `share` (on a thread each, when
/// there is more than one): the plan is the same whatever the share.
fn plan_in_shares(
    desired: &KernelState,
    observed: &KernelState,
    previous: &KernelState,
    share: usize,
) -> Plan {
    let wanted: Vec<(&String, &Netns)> = desired.namespaces.iter().collect();
    let diff_share = |share: &[(&String, &Netns)]| diff_namespaces(share, desired, observed, previous);
    let shares: Vec<(Phases, Vec<(kernel::ForeignChain, Passage)>)> = if wanted.len() > share {
        std::thread::scope(|s| {
            let running: Vec<_> = wanted.chunks(share).map(|c| s.spawn(move || diff_share(c))).collect();
            let joined =
                running.into_iter().map(|r| r.join().unwrap_or_else(|e| std::panic::resume_unwind(e)));
            joined.collect()
        })
    } else {
        vec![diff_share(&wanted)]
    };
    // Each share's phases, appended in order, are the phases of the whole diffed in order.
    let mut p = Phases::default();
    let mut host_firewall = Vec::new();
    for (phases, firewall) in shares {
        p.append(phases);
        host_firewall.extend(firewall);
    }
    for (name, have) in &observed.namespaces {
        if !desired.namespaces.contains_key(name) {
            p.del_netns.push(step(&have.owner, Op::DeleteNetns { ns: name.clone() }));
        }
    }
    let links = bridges_beside_their_ports(p.bridges, p.veths);
    let steps = [
        p.clear,
        p.netns,
        p.rulesets,
        links,
        p.changes,
        p.addrs,
        p.routes,
        p.processes,
        p.del_processes,
        p.del_routes,
        p.del_addrs,
        p.del_links,
        p.del_rulesets,
        p.del_netns,
    ]
    .into_iter()
    .flatten()
    .collect();
    Plan { steps, host_firewall }
}

/// Below this many namespaces per thread, planning on one thread is faster than starting
/// another.
const PARALLEL_PLAN_FROM: usize = 128;

/// The phases that make `wanted` (some of `desired`'s namespaces) as desired, and the host
/// firewall passages they need.
fn diff_namespaces(
    wanted: &[(&String, &Netns)],
    desired: &KernelState,
    observed: &KernelState,
    previous: &KernelState,
) -> (Phases, Vec<(kernel::ForeignChain, Passage)>) {
    let mut p = Phases::default();
    let mut host_firewall = Vec::new();
    let empty = Netns::default();
    for &(name, want) in wanted {
        let have = observed.namespaces.get(name);
        if have.is_none() {
            p.netns.push(step(
                &want.owner,
                Op::CreateNetns {
                    ns: name.clone(),
                    forwarding: want.forwarding,
                    ipv6: want.ipv6.unwrap_or(true),
                },
            ));
        }
        diff_netns(&mut p, name, want, have.unwrap_or(&empty), have.is_none(), desired, observed);
        diff_ruleset(&mut p, name, want, have.unwrap_or(&empty), previous.namespaces.get(name));
        host_firewall.extend(diff_host_firewall(&mut p, name, want, have.unwrap_or(&empty)));
    }
    (p, host_firewall)
}

/// The link creates in order, each bridge just before the first link that joins it, and
/// bridges without ports last. A bridge up without a port has its carrier off, and its event
/// waits in the kernel's linkwatch queue, which every veth pair coming up walks under the
/// routing lock; made all first, 5,000 bridges waited there through the whole bring-up.
/// Beside their ports, a veth pair of a 10 × 500 bring-up costs 0.73–0.76 ms, not 1.0.
fn bridges_beside_their_ports(mut bridges: BTreeMap<(String, String), Step>, links: Vec<Step>) -> Vec<Step> {
    let mut steps = Vec::with_capacity(bridges.len() + links.len());
    for link in links {
        let masters: [Option<(&String, &String)>; 2] = match &link.op {
            Op::CreateVeth { ns, master, peer_ns, peer_master, .. } => {
                [master.as_ref().map(|m| (ns, m)), peer_master.as_ref().map(|m| (peer_ns, m))]
            }
            Op::CreateVxlan { ns, master, .. } => [master.as_ref().map(|m| (ns, m)), None],
            _ => [None, None],
        };
        for (ns, master) in masters.into_iter().flatten() {
            steps.extend(bridges.remove(&(ns.clone(), master.clone())));
        }
        steps.push(link);
    }
    steps.extend(bridges.into_values());
    steps
}

fn step(owner: &Owner, op: Op) -> Step {
    Step { undo: op.inverse(), op, owner: owner.clone() }
}

fn change(owner: &Owner, op: Op, undo: Op) -> Step {
    Step { op, owner: owner.clone(), undo: Some(undo) }
}

fn diff_netns(
    p: &mut Phases,
    ns: &str,
    want: &Netns,
    have: &Netns,
    fresh: bool,
    desired: &KernelState,
    observed: &KernelState,
) {
    if !fresh && want.forwarding != have.forwarding {
        let undo = Op::SetForwarding { ns: ns.into(), on: have.forwarding };
        p.changes.push(change(&want.owner, Op::SetForwarding { ns: ns.into(), on: want.forwarding }, undo));
    }
    if let (false, Some(on), Some(was)) = (fresh, want.ipv6, have.ipv6)
        && on != was
    {
        let undo = Op::SetIpv6 { ns: ns.into(), on: was };
        p.changes.push(change(&want.owner, Op::SetIpv6 { ns: ns.into(), on }, undo));
    }
    let scope = Scope { ns, fresh, desired, observed };
    for (name, wl) in &want.links {
        diff_link(p, &scope, name, wl, have.links.get(name));
    }
    for (name, hl) in &have.links {
        if !want.links.contains_key(name) && hl.ours && !want.shared {
            p.del_links.push(step(&want.owner, Op::DeleteLink { ns: ns.into(), name: name.clone() }));
        }
    }
    diff_addrs_and_routes(p, ns, want, have);
    diff_forwarding_entries(p, ns, want, have);
    // A resolver whose names changed is replaced in one step: the new one needs the old
    // one's port.
    let resolver = |p: &&Process| matches!(p, Process::Dns { .. });
    let old_resolver = have.processes.difference(&want.processes).find(resolver);
    let new_resolver = want.processes.difference(&have.processes).find(resolver);
    let replaced = old_resolver.zip(new_resolver);
    if let Some((old, new)) = replaced {
        let op = Op::ReplaceProcess { ns: ns.into(), old: old.clone(), new: new.clone() };
        let undo = Op::ReplaceProcess { ns: ns.into(), old: new.clone(), new: old.clone() };
        p.processes.push(change(&want.owner, op, undo));
    }
    let replacing = |p: &Process| replaced.is_some_and(|(old, new)| p == old || p == new);
    for process in want.processes.difference(&have.processes).filter(|p| !replacing(p)) {
        p.processes.push(step(&want.owner, Op::StartProcess { ns: ns.into(), process: process.clone() }));
    }
    for process in have.processes.difference(&want.processes).filter(|p| !replacing(p)) {
        p.del_processes.push(step(&want.owner, Op::StopProcess { ns: ns.into(), process: process.clone() }));
    }
}

/// The namespace being diffed, and the two states it is diffed between.
struct Scope<'a> {
    ns: &'a str,
    /// The namespace is created by this plan: nothing in it needs fixing.
    fresh: bool,
    desired: &'a KernelState,
    observed: &'a KernelState,
}

/// One wanted link against what is there: fix it in place, or (re)create it.
fn diff_link(p: &mut Phases, scope: &Scope, name: &str, wl: &kernel::Link, hl: Option<&kernel::Link>) {
    let Scope { ns, fresh, .. } = *scope;
    match &wl.kind {
        LinkKind::Loopback => {
            if !fresh && hl.is_some_and(|l| !l.up) {
                let op = Op::SetLink { ns: ns.into(), name: name.to_string(), up: true, master: None };
                let undo = Op::SetLink { ns: ns.into(), name: name.to_string(), up: false, master: None };
                p.changes.push(change(&wl.owner, op, undo));
            }
        }
        // Made by the other end's `CreateVeth`; its absence shows up there.
        LinkKind::VethPeer => {
            let hl = hl.filter(|hl| wl.kind.matches(&hl.kind));
            if let Some(hl) = hl {
                fix_link(p, ns, name, wl, hl);
            }
            if wl.route_localnet && !hl.is_some_and(|l| l.route_localnet) {
                p.changes.push(step(
                    &wl.owner,
                    Op::SetRouteLocalnet { ns: ns.into(), name: name.to_string(), on: true },
                ));
            }
        }
        LinkKind::Bridge | LinkKind::Other(_) | LinkKind::Vxlan { .. } => match hl {
            Some(hl) if hl.ours && wl.kind.matches(&hl.kind) && wl.same_lower_layer(hl) => {
                fix_link(p, ns, name, wl, hl);
            }
            _ => {
                // Only vpcsh's own links make way; a stranger's name clash fails the create.
                if hl.is_some_and(|l| l.ours) {
                    p.clear.push(step(&wl.owner, Op::DeleteLink { ns: ns.into(), name: name.to_string() }));
                }
                let (ns, name) = (ns.to_string(), name.to_string());
                match &wl.kind {
                    LinkKind::Vxlan { vni, local, underlay_ns, evpn } => {
                        let op = Op::CreateVxlan {
                            ns,
                            name,
                            vni: *vni,
                            local: *local,
                            underlay_ns: underlay_ns.clone(),
                            master: wl.master.clone(),
                            mtu: wl.mtu,
                            evpn: *evpn,
                        };
                        p.veths.push(step(&wl.owner, op));
                    }
                    _ => {
                        let op = Op::CreateBridge { ns: ns.clone(), name: name.clone(), mac: wl.mac };
                        p.bridges.insert((ns, name), step(&wl.owner, op));
                    }
                }
            }
        },
        LinkKind::Veth { peer_ns, peer } => diff_veth(p, scope, (name, wl, hl), (peer_ns, peer)),
    }
}

/// A wanted veth pair against what is there: fixed in place when both ends are vpcsh's and
/// as wanted, else made again.
fn diff_veth(
    p: &mut Phases,
    scope: &Scope,
    (name, wl, hl): (&str, &kernel::Link, Option<&kernel::Link>),
    (peer_ns, peer): (&String, &String),
) {
    let Scope { ns, desired, observed, .. } = *scope;
    let peer_have = observed.namespaces.get(peer_ns).and_then(|n| n.links.get(peer));
    let peer_want = desired.namespaces.get(peer_ns).and_then(|n| n.links.get(peer));
    let near_ok = hl.is_some_and(|l| l.ours && wl.kind.matches(&l.kind) && wl.same_lower_layer(l));
    let far_ok = peer_have.is_some_and(|l| {
        l.ours && wl.kind.matches(&l.kind) && peer_want.is_none_or(|w| w.same_lower_layer(l))
    });
    if let (true, true, Some(hl)) = (near_ok, far_ok, hl) {
        fix_link(p, ns, name, wl, hl);
        return;
    }
    if hl.is_some_and(|l| l.ours) {
        p.clear.push(step(&wl.owner, Op::DeleteLink { ns: ns.into(), name: name.to_string() }));
    }
    if peer_have.is_some_and(|l| l.ours) && desired.namespaces.contains_key(peer_ns) {
        p.clear.push(step(&wl.owner, Op::DeleteLink { ns: peer_ns.clone(), name: peer.clone() }));
    }
    let op = Op::CreateVeth {
        ns: ns.into(),
        name: name.to_string(),
        master: wl.master.clone(),
        peer_ns: peer_ns.clone(),
        peer: peer.clone(),
        mtu: wl.mtu,
        peer_mac: peer_want.and_then(|w| w.mac),
        peer_master: peer_want.and_then(|w| w.master.clone()),
    };
    p.veths.push(step(&wl.owner, op));
    impair_new(p, ns, name, wl);
    if let Some(far) = peer_want {
        impair_new(p, peer_ns, peer, far);
        if let Some(on) = far.learning {
            let op = Op::SetLearning { ns: peer_ns.clone(), name: peer.clone(), on };
            p.changes.push(step(&far.owner, op));
        }
    }
}

/// Addresses and routes on the links vpcsh manages; one default route per namespace, so a
/// changed gateway is a replace, not an add and a delete.
fn diff_addrs_and_routes(p: &mut Phases, ns: &str, want: &Netns, have: &Netns) {
    let managed = |dev: &str| want.links.get(dev).is_some_and(|l| l.kind != LinkKind::Loopback);
    for addr in want.addrs.difference(&have.addrs) {
        p.addrs.push(step(owner_of(want, &addr.dev), Op::AddAddr { ns: ns.into(), addr: addr.clone() }));
    }
    for addr in have.addrs.difference(&want.addrs) {
        if managed(&addr.dev) {
            p.del_addrs
                .push(step(owner_of(want, &addr.dev), Op::DelAddr { ns: ns.into(), addr: addr.clone() }));
        }
    }
    let mut have_routes: BTreeMap<_, _> = have.routes.iter().map(|r| (r.dst, r)).collect();
    for route in &want.routes {
        match have_routes.remove(&route.dst) {
            Some(old) if old == route => {}
            Some(old) => {
                // With the routes, after any new address makes the new gateway reachable.
                let undo = Op::ReplaceRoute { ns: ns.into(), route: old.clone() };
                p.routes.push(change(
                    &want.owner,
                    Op::ReplaceRoute { ns: ns.into(), route: route.clone() },
                    undo,
                ));
            }
            None => p.routes.push(step(&want.owner, Op::AddRoute { ns: ns.into(), route: route.clone() })),
        }
    }
    for route in have_routes.into_values().filter(|r| managed(&r.dev)) {
        p.del_routes.push(step(&want.owner, Op::DelRoute { ns: ns.into(), route: route.clone() }));
    }
}

/// Static neighbours, VXLAN flood entries and pinned port MACs: added with the routes, and
/// only vpcsh's own (on links it manages; not an EVPN device's floods, which FRR makes)
/// ever deleted.
fn diff_forwarding_entries(p: &mut Phases, ns: &str, want: &Netns, have: &Netns) {
    let managed = |dev: &str| want.links.get(dev).is_some_and(|l| l.kind != LinkKind::Loopback);
    for n in want.neighbours.difference(&have.neighbours) {
        p.routes.push(step(owner_of(want, &n.dev), Op::AddNeighbour { ns: ns.into(), neighbour: n.clone() }));
    }
    for n in have.neighbours.difference(&want.neighbours).filter(|n| managed(&n.dev)) {
        p.del_routes
            .push(step(owner_of(want, &n.dev), Op::DelNeighbour { ns: ns.into(), neighbour: n.clone() }));
    }
    for f in want.floods.difference(&have.floods) {
        p.routes.push(step(owner_of(want, &f.dev), Op::AddFlood { ns: ns.into(), flood: f.clone() }));
    }
    let evpn =
        |dev: &str| want.links.get(dev).is_some_and(|l| matches!(l.kind, LinkKind::Vxlan { evpn: true, .. }));
    for f in have.floods.difference(&want.floods).filter(|f| managed(&f.dev) && !evpn(&f.dev)) {
        p.del_routes.push(step(owner_of(want, &f.dev), Op::DelFlood { ns: ns.into(), flood: f.clone() }));
    }
    for e in want.port_macs.difference(&have.port_macs) {
        p.routes.push(step(owner_of(want, &e.dev), Op::AddPortMac { ns: ns.into(), entry: e.clone() }));
    }
    for e in have.port_macs.difference(&want.port_macs).filter(|e| managed(&e.dev)) {
        p.del_routes.push(step(owner_of(want, &e.dev), Op::DelPortMac { ns: ns.into(), entry: e.clone() }));
    }
}

fn diff_ruleset(p: &mut Phases, ns: &str, want: &Netns, have: &Netns, previous: Option<&Netns>) {
    match (&want.nft, &have.nft) {
        (Some(Nft::Wanted(ruleset)), seen)
            if seen.as_ref().map(Nft::signature) != Some(ruleset.signature()) =>
        {
            let replace = seen.is_some();
            let op = Op::SetRuleset { ns: ns.into(), ruleset: ruleset.clone(), replace };
            let undo = match (seen, previous.and_then(|n| n.nft.as_ref())) {
                (None, _) => op.inverse(),
                (Some(seen), Some(Nft::Wanted(old))) if seen.signature() == old.signature() => {
                    Some(Op::SetRuleset { ns: ns.into(), ruleset: old.clone(), replace: true })
                }
                _ => None,
            };
            p.rulesets.push(Step { op, owner: want.owner.clone(), undo });
        }
        (None, Some(_)) => p.del_rulesets.push(step(&want.owner, Op::DeleteRuleset { ns: ns.into() })),
        _ => {}
    }
}

/// Opens every other tool's dropping forward chain that vpcsh can write to while the
/// machine has VPCs, and closes them once it has none; says how each chain stands.
fn diff_host_firewall(
    p: &mut Phases,
    ns: &str,
    want: &Netns,
    have: &Netns,
) -> Vec<(kernel::ForeignChain, Passage)> {
    let mut out = Vec::new();
    for (chain, open) in &have.host_firewall {
        let passage = match (want.pass_host_firewall, *open) {
            (true, true) => Passage::Open,
            (true, false) if chain.writable => {
                p.rulesets
                    .push(step(&want.owner, Op::OpenHostFirewall { ns: ns.into(), chain: chain.clone() }));
                Passage::Opening
            }
            (true, false) => Passage::Blocked,
            (false, open) => {
                if open && chain.writable {
                    let op = Op::CloseHostFirewall { ns: ns.into(), chain: chain.clone() };
                    p.del_rulesets.push(step(&have.owner, op));
                }
                Passage::Unneeded
            }
        };
        out.push((chain.clone(), passage));
    }
    out
}

fn fix_link(p: &mut Phases, ns: &str, name: &str, want: &kernel::Link, have: &kernel::Link) {
    if want.up != have.up || want.master != have.master {
        let op = Op::SetLink { ns: ns.into(), name: name.into(), up: want.up, master: want.master.clone() };
        let undo = Op::SetLink { ns: ns.into(), name: name.into(), up: have.up, master: have.master.clone() };
        p.changes.push(change(&want.owner, op, undo));
    }
    if let Some(on) = want.learning
        && Some(on) != have.learning
    {
        let set = |on| Op::SetLearning { ns: ns.into(), name: name.into(), on };
        p.changes.push(change(&want.owner, set(on), set(have.learning.unwrap_or(true))));
    }
    if want.impairment != have.impairment {
        let set = |impairment| Op::SetImpairment { ns: ns.into(), name: name.into(), impairment };
        p.changes.push(change(&want.owner, set(want.impairment), set(have.impairment)));
    }
}

/// A link made by this plan starts with the default queue: impair it once it exists
/// (removing the link takes its queue with it, so there is nothing to undo).
fn impair_new(p: &mut Phases, ns: &str, name: &str, want: &kernel::Link) {
    if want.impairment.is_some() {
        let op = Op::SetImpairment { ns: ns.into(), name: name.into(), impairment: want.impairment };
        p.changes.push(step(&want.owner, op));
    }
}

fn owner_of<'a>(ns: &'a Netns, dev: &str) -> &'a Owner {
    ns.links.get(dev).map_or(&ns.owner, |l| &l.owner)
}

#[cfg(test)]
mod fabric_tests;
#[cfg(test)]
mod tests;
