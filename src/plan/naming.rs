//! Kernel names for model objects: documented, deterministic and collision-free.
//!
//! With prefix `P` (the sandbox name, or `vpcsh` on the real host):
//! - `P` — the sandbox namespace playing the machine (sandbox only)
//! - `P.internet` — the simulated internet (sandbox only)
//! - `P.VPC` — a VPC's router namespace; one bridge `b-SUBNET` per subnet
//! - `P.VPC.HOST` — a host's namespace, `eth0` paired with `h-HOST` on the router
//! - a peering of VPCs A and B: `p-B` in A's router, paired with `p-A` in B's
//! - the uplink of a VPC: `igw` in its router, paired with `vpc-VPC` on the machine (the
//!   sandbox namespace, or on the real host the namespace vpcsh runs in)
//!
//! Model names cannot contain `.` and no VPC may be called `internet`, so these never
//! collide.

use crate::model::names;
pub(crate) use crate::model::names::{MACHINE_UPLINK_PREFIX, PEER_PREFIX};

pub(crate) const REAL_HOST_PREFIX: &str = "vpcsh";
pub(crate) const HOST_IFNAME: &str = "eth0";
/// The sandbox machine's uplink to the simulated internet.
pub(crate) const UPLINK_IFNAME: &str = "up0";
/// A router's end of its VPC's uplink (the internet gateway).
pub(crate) const ROUTER_UPLINK: &str = "igw";
/// Stands for the namespace vpcsh itself runs in: the machine, on the real host.
pub(crate) const HOST_NS: &str = "@host";

#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Naming {
    pub prefix: String,
    pub sandbox: bool,
}

impl Naming {
    pub(crate) fn sandbox(name: &str) -> Self {
        Self { prefix: name.to_string(), sandbox: true }
    }
    pub(crate) fn real_host(prefix: &str) -> Self {
        Self { prefix: prefix.to_string(), sandbox: false }
    }
    /// The namespace that plays the machine: the sandbox, or the one vpcsh runs in.
    pub(crate) fn machine_ns(&self) -> String {
        if self.sandbox { self.prefix.clone() } else { HOST_NS.to_string() }
    }
    /// Whether `ns` is one of the namespaces these names give (the machine's own excepted).
    pub(crate) fn owns(&self, ns: &str) -> bool {
        (self.sandbox && ns == self.prefix)
            || ns.strip_prefix(&self.prefix).is_some_and(|rest| rest.starts_with('.'))
    }
    pub(crate) fn internet_ns(&self) -> Option<String> {
        self.sandbox.then(|| format!("{}.internet", self.prefix))
    }
    pub(crate) fn router_ns(&self, vpc: &str) -> String {
        format!("{}.{vpc}", self.prefix)
    }
    pub(crate) fn host_ns(&self, vpc: &str, host: &str) -> String {
        format!("{}.{vpc}.{host}", self.prefix)
    }
    pub(crate) fn bridge(subnet: &str) -> String {
        names::bridge_ifname(subnet)
    }
    pub(crate) fn host_veth(host: &str) -> String {
        names::host_veth_ifname(host)
    }
    pub(crate) fn peer_link(other_vpc: &str) -> String {
        names::peer_ifname(other_vpc)
    }
    pub(crate) fn machine_uplink(vpc: &str) -> String {
        names::machine_uplink_ifname(vpc)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_naming_owns_its_prefix_and_what_is_under_it_only() {
        let sandbox = Naming::sandbox("t-1");
        for ns in ["t-1", "t-1.internet", "t-1.v", "t-1.v.h"] {
            assert!(sandbox.owns(ns), "{ns}");
        }
        for ns in ["t-10", "t-10.v", "t-1x.v", "t", "x.t-1.v"] {
            assert!(!sandbox.owns(ns), "{ns}");
        }
        let host = Naming::real_host("vpcsh");
        assert!(host.owns("vpcsh.v") && !host.owns("vpcsh") && !host.owns(HOST_NS));
    }
}
