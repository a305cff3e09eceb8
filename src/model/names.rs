//! The naming rule for VPCs, subnets, hosts and sandboxes.
//!
//! A name is 1 to 32 characters of lowercase letters, digits and `-`, starting with a
//! letter or digit and not ending with `-`. The rule keeps every kernel name derived from
//! it (namespaces `PREFIX.vpc.host`, interfaces) unambiguous: `.` never appears in a name.

use super::fnv::fnv1a;

pub(crate) const MAX_NAME_LEN: usize = 32;

/// VPC names that would collide with vpcsh's own namespaces or CLI targets.
pub(crate) const RESERVED_VPC_NAMES: &[&str] = &["internet"];

/// Why `name` breaks the naming rule, if it does.
pub(crate) fn name_problem(name: &str) -> Option<String> {
    if name.is_empty() {
        return Some("a name cannot be empty".into());
    }
    if name.len() > MAX_NAME_LEN {
        return Some(format!(
            "`{name}` is {} characters long; names have at most {MAX_NAME_LEN}",
            name.len()
        ));
    }
    if let Some(c) = name.chars().find(|c| !(c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '-')) {
        return Some(format!("`{name}` contains {c:?}; names use lowercase letters, digits and `-`"));
    }
    if name.starts_with('-') || name.ends_with('-') {
        return Some(format!("`{name}` starts or ends with `-`"));
    }
    None
}

pub(crate) const NAME_RULE_HELP: &str =
    "names are 1-32 characters: lowercase letters, digits and `-`, not starting or ending with `-`";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_good_names() {
        for n in ["prod", "web-1", "a", "0db", &"x".repeat(32)] {
            assert_eq!(name_problem(n), None, "{n}");
        }
    }

    #[test]
    fn rejects_bad_names() {
        for n in ["", "Prod", "web_1", "a.b", "-a", "a-", "héllo", &"x".repeat(33)] {
            assert!(name_problem(n).is_some(), "{n}");
        }
    }
}

/// Interface name prefixes: each kind of link vpcsh makes has its own, so names never clash
/// across kinds and observation can tell them apart.
pub(crate) const BRIDGE_PREFIX: &str = "b-";
pub(crate) const HOST_VETH_PREFIX: &str = "h-";
pub(crate) const PEER_PREFIX: &str = "p-";
pub(crate) const MACHINE_UPLINK_PREFIX: &str = "vpc-";
pub(crate) const VXLAN_PREFIX: &str = "x-";
pub(crate) const FABRIC_PORT_PREFIX: &str = "n-";
/// An EVPN segment on the machine: its bridge, VXLAN device and port to the router, and
/// the router's end of that port.
pub(crate) const SEGMENT_BRIDGE_PREFIX: &str = "s-";
pub(crate) const SEGMENT_VXLAN_PREFIX: &str = "v-";
pub(crate) const SEGMENT_PORT_PREFIX: &str = "t-";
pub(crate) const SEGMENT_LINK_PREFIX: &str = "e-";

/// A subnet's bridge in its VPC's router.
pub(crate) fn bridge_ifname(subnet: &str) -> String {
    ifname(BRIDGE_PREFIX, subnet)
}

/// The router's end of a host's veth.
pub(crate) fn host_veth_ifname(host: &str) -> String {
    ifname(HOST_VETH_PREFIX, host)
}

/// A router's end of its peering with `other_vpc`.
pub(crate) fn peer_ifname(other_vpc: &str) -> String {
    ifname(PEER_PREFIX, other_vpc)
}

/// A stretched subnet's VXLAN device in its VPC's router.
pub(crate) fn vxlan_ifname(subnet: &str) -> String {
    ifname(VXLAN_PREFIX, subnet)
}

/// A node's port on the simulated fabric's switch.
pub(crate) fn fabric_port_ifname(node: &str) -> String {
    ifname(FABRIC_PORT_PREFIX, node)
}

/// An EVPN segment's links on the machine, named by VNI (unique across VPCs there).
pub(crate) fn segment_ifnames(vni: u32) -> [String; 3] {
    [SEGMENT_BRIDGE_PREFIX, SEGMENT_VXLAN_PREFIX, SEGMENT_PORT_PREFIX].map(|p| format!("{p}{vni:06x}"))
}

/// A router's end of the port to its subnet's EVPN segment.
pub(crate) fn segment_link_ifname(subnet: &str) -> String {
    ifname(SEGMENT_LINK_PREFIX, subnet)
}

/// The machine's end of a VPC's uplink.
pub(crate) fn machine_uplink_ifname(vpc: &str) -> String {
    ifname(MACHINE_UPLINK_PREFIX, vpc)
}

/// A deterministic interface name of at most 15 bytes: `prefix` + `name` when it fits,
/// else `prefix` + the name's start + `.` + a hash of the whole name. Names never contain
/// `.`, so a shortened name cannot equal a short one.
pub(crate) fn ifname(prefix: &str, name: &str) -> String {
    const IFNAMSIZ: usize = 15;
    let full = format!("{prefix}{name}");
    if full.len() <= IFNAMSIZ {
        return full;
    }
    let hash = fnv1a(name.as_bytes());
    let keep = IFNAMSIZ - prefix.len() - 8;
    format!("{prefix}{}.{:07x}", &name[..keep], hash & 0x0fff_ffff)
}

#[cfg(test)]
mod ifname_tests {
    use super::*;

    #[test]
    fn short_names_are_kept() {
        assert_eq!(ifname("b-", "web"), "b-web");
        assert_eq!(ifname("b-", "abcdefghijklm"), "b-abcdefghijklm");
    }

    #[test]
    fn long_names_are_shortened_deterministically() {
        let a = ifname("b-", "a-very-long-subnet-name");
        assert_eq!(a.len(), 15);
        assert!(a.starts_with("b-a-ver."));
        assert_eq!(a, ifname("b-", "a-very-long-subnet-name"));
        assert_ne!(a, ifname("b-", "a-very-long-subnet-name2"));
    }
}
