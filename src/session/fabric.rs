//! How this machine stands with the other nodes of a fabric: what `status` reports per node.

use crate::exec::frr;
use crate::model::fabric::Control;

use super::Target;
use super::runner::Runner;

/// The node of a fabric this machine is: `--node`, else the one it applied as.
pub(crate) fn this_node(target: &Target) -> Option<String> {
    let recorded = || crate::state::peek(&target.dir()).ok().flatten().and_then(|s| s.node);
    target.node.clone().or_else(recorded)
}

/// Another node of the fabric, as seen from this one.
#[derive(Clone, Debug)]
pub(crate) struct NodeStatus {
    pub name: String,
    pub underlay: String,
    /// `static`, or the BGP session's state (`Established`, `Connect`, ...).
    pub state: String,
    /// EVPN routes received from it.
    pub routes: Option<u64>,
    pub ok: bool,
}

/// The other nodes of the applied network, each with its session when the fabric runs
/// BGP EVPN (read from this node's FRR); empty outside a fabric.
pub(crate) fn node_statuses(runner: &Runner) -> Vec<NodeStatus> {
    let network = runner.network();
    let Some(me) = runner.state().node.clone() else { return Vec::new() };
    let sessions = match network.control {
        Control::Evpn => Some(frr::bgp_peers(&runner.naming().machine_ns())),
        Control::Static => None,
    };
    network
        .nodes
        .iter()
        .filter(|n| n.name != me)
        .map(|n| {
            let underlay = n.underlay.ip().to_string();
            let (state, routes, ok) = match &sessions {
                None => ("static".to_string(), None, true),
                Some(Err(e)) => (format!("no answer from FRR ({e})"), None, false),
                Some(Ok(peers)) => match peers.get(&underlay) {
                    Some(p) if p.state == "Established" && !p.synced => {
                        ("BGP Established, still sending its routes".to_string(), Some(p.routes), false)
                    }
                    Some(p) => (format!("BGP {}", p.state), Some(p.routes), p.state == "Established"),
                    None => ("not a BGP neighbour".to_string(), None, false),
                },
            };
            NodeStatus { name: n.name.clone(), underlay, state, routes, ok }
        })
        .collect()
}
