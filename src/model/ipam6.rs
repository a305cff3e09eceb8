//! IPv6 address management: a VPC's /56 (given, or a ULA derived from its name), its
//! subnets' /64s, and host addresses that follow their IPv4 ones.
//!
//! A host's automatic IPv6 address is its subnet's /64 plus the host's IPv4 offset in its
//! subnet (10.10.1.2 in 10.10.1.0/24 → `…::2`): sticky exactly when the IPv4 address is,
//! and readable side by side. One that a fixed address already holds moves above the
//! IPv4 range (`…:1:0:2`), where no derived address can land.

use std::net::{Ipv4Addr, Ipv6Addr};

use ipnetwork::{Ipv4Network, Ipv6Network};

/// A VPC's IPv6 prefix length, as in AWS.
pub(crate) const VPC_PREFIX: u8 = 56;
/// A subnet's IPv6 prefix length: what SLAAC and every cloud use.
pub(crate) const SUBNET_PREFIX: u8 = 64;
/// How many /64s a VPC's /56 holds.
pub(crate) const SUBNETS_PER_VPC: u32 = 1 << (SUBNET_PREFIX - VPC_PREFIX);

/// A unique local /56 (RFC 4193: `fd` and a 40-bit global ID) derived from a VPC's name,
/// so `ipv6: true` gives the same prefix on every run and every machine.
pub(crate) fn ula_for(name: &str) -> Ipv6Network {
    let hash = super::fnv::fnv1a(name.as_bytes());
    let global_id = u128::from(hash & 0xff_ffff_ffff);
    let prefix = (0xfdu128 << 120) | (global_id << 80);
    Ipv6Network::new(Ipv6Addr::from(prefix), VPC_PREFIX).expect("a /56 is a valid prefix")
}

/// The `index`th /64 of a VPC's /56.
pub(crate) fn subnet_at(vpc: Ipv6Network, index: u32) -> Ipv6Network {
    let base = u128::from(vpc.network()) | (u128::from(index) << 64);
    Ipv6Network::new(Ipv6Addr::from(base), SUBNET_PREFIX).expect("a /64 is a valid prefix")
}

/// The first /64 of `vpc` that `taken` does not hold, `preferred` first when it is free.
pub(crate) fn free_subnet(
    vpc: Ipv6Network,
    taken: &[Ipv6Network],
    preferred: Option<Ipv6Network>,
) -> Option<Ipv6Network> {
    let free = |n: &Ipv6Network| !taken.iter().any(|t| t.overlaps(*n));
    if let Some(p) = preferred.filter(|p| p.prefix() == SUBNET_PREFIX && vpc.contains(p.network()) && free(p))
    {
        return Some(p);
    }
    (0..SUBNETS_PER_VPC).map(|i| subnet_at(vpc, i)).find(free)
}

/// The gateway of a /64: its `::1`.
pub(crate) fn gateway(net: Ipv6Network) -> Ipv6Addr {
    Ipv6Addr::from(u128::from(net.network()) + 1)
}

/// A host's automatic IPv6 address: its IPv4 offset in its subnet, inside the /64.
pub(crate) fn derived(net6: Ipv6Network, net4: Ipv4Network, ip: Ipv4Addr) -> Ipv6Addr {
    let offset = u32::from(ip) - u32::from(net4.network());
    Ipv6Addr::from(u128::from(net6.network()) + u128::from(offset))
}

/// Where a derived address goes when a fixed one holds it: above every derived address.
pub(crate) fn moved(derived: Ipv6Addr) -> Ipv6Addr {
    Ipv6Addr::from(u128::from(derived) + (1u128 << 32))
}

/// Why an address cannot be a host's in a /64, if it cannot.
pub(crate) fn unusable_reason(net: Ipv6Network, ip: Ipv6Addr) -> Option<&'static str> {
    if !net.contains(ip) {
        Some("is outside")
    } else if ip == net.network() {
        Some("is the subnet-router anycast address of")
    } else if ip == gateway(net) {
        Some("is the gateway of")
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_ula_is_stable_unique_local_and_a_56() {
        let a = ula_for("prod");
        assert_eq!(a, ula_for("prod"));
        assert_ne!(a, ula_for("dev"));
        assert_eq!(a.prefix(), 56);
        assert_eq!(a.network().octets()[0], 0xfd);
        assert_eq!(a.network().octets()[6..], [0; 10]);
    }

    #[test]
    fn subnets_are_the_next_free_64() {
        let vpc: Ipv6Network = "fd10:10::/56".parse().unwrap();
        assert_eq!(free_subnet(vpc, &[], None), Some("fd10:10::/64".parse().unwrap()));
        let taken = ["fd10:10::/64".parse().unwrap(), "fd10:10:0:2::/64".parse().unwrap()];
        assert_eq!(free_subnet(vpc, &taken, None), Some("fd10:10:0:1::/64".parse().unwrap()));
        let kept = "fd10:10:0:7::/64".parse().unwrap();
        assert_eq!(free_subnet(vpc, &taken, Some(kept)), Some(kept));
        let all: Vec<_> = (0..256).map(|i| subnet_at(vpc, i)).collect();
        assert_eq!(free_subnet(vpc, &all, None), None);
    }

    #[test]
    fn host_addresses_follow_ipv4() {
        let net6: Ipv6Network = "fd10:10:0:1::/64".parse().unwrap();
        let net4: Ipv4Network = "10.10.1.0/24".parse().unwrap();
        let ip = derived(net6, net4, Ipv4Addr::new(10, 10, 1, 2));
        assert_eq!(ip, "fd10:10:0:1::2".parse::<Ipv6Addr>().unwrap());
        assert_eq!(moved(ip), "fd10:10:0:1::1:0:2".parse::<Ipv6Addr>().unwrap());
        assert_eq!(gateway(net6), "fd10:10:0:1::1".parse::<Ipv6Addr>().unwrap());
        assert!(unusable_reason(net6, gateway(net6)).unwrap().contains("gateway"));
        assert!(unusable_reason(net6, "fd10:10:0:2::5".parse().unwrap()).unwrap().contains("outside"));
        assert_eq!(unusable_reason(net6, ip), None);
    }
}
