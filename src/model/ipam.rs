//! Address management inside a subnet: the gateway, the usable range, the next free address.

use std::net::Ipv4Addr;

use ipnetwork::Ipv4Network;

/// Subnets need room for a network, a gateway, one host and a broadcast address.
pub(crate) const MAX_SUBNET_PREFIX: u8 = 30;

/// The gateway of a subnet: its first usable address.
pub(crate) fn gateway(net: Ipv4Network) -> Ipv4Addr {
    Ipv4Addr::from(u32::from(net.network()) + 1)
}

/// Why an address cannot be a host's address in a subnet, if it cannot.
pub(crate) fn unusable_reason(net: Ipv4Network, ip: Ipv4Addr) -> Option<&'static str> {
    if !net.contains(ip) {
        Some("is outside")
    } else if ip == net.network() {
        Some("is the network address of")
    } else if ip == net.broadcast() {
        Some("is the broadcast address of")
    } else if ip == gateway(net) {
        Some("is the gateway of")
    } else {
        None
    }
}

/// The next free host address: `preferred` when it is usable and free, else the lowest free.
pub(crate) fn next_free(
    net: Ipv4Network,
    taken: &[Ipv4Addr],
    preferred: Option<Ipv4Addr>,
) -> Option<Ipv4Addr> {
    if let Some(ip) = preferred
        && unusable_reason(net, ip).is_none()
        && !taken.contains(&ip)
    {
        return Some(ip);
    }
    let first = u32::from(gateway(net)) + 1;
    let last = u32::from(net.broadcast());
    (first..last).map(Ipv4Addr::from).find(|ip| !taken.contains(ip))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn net(s: &str) -> Ipv4Network {
        s.parse().unwrap()
    }

    #[test]
    fn gateway_is_first_usable() {
        assert_eq!(gateway(net("10.0.1.0/24")), Ipv4Addr::new(10, 0, 1, 1));
    }

    #[test]
    fn next_free_skips_gateway_and_taken() {
        let n = net("10.0.1.0/24");
        assert_eq!(next_free(n, &[], None), Some(Ipv4Addr::new(10, 0, 1, 2)));
        let taken = [Ipv4Addr::new(10, 0, 1, 2), Ipv4Addr::new(10, 0, 1, 3)];
        assert_eq!(next_free(n, &taken, None), Some(Ipv4Addr::new(10, 0, 1, 4)));
    }

    #[test]
    fn next_free_prefers_the_previous_address() {
        let n = net("10.0.1.0/24");
        let prev = Ipv4Addr::new(10, 0, 1, 9);
        assert_eq!(next_free(n, &[], Some(prev)), Some(prev));
        assert_eq!(next_free(n, &[prev], Some(prev)), Some(Ipv4Addr::new(10, 0, 1, 2)));
        let outside = Ipv4Addr::new(10, 0, 2, 9);
        assert_eq!(next_free(n, &[], Some(outside)), Some(Ipv4Addr::new(10, 0, 1, 2)));
    }

    #[test]
    fn a_full_subnet_has_no_free_address() {
        let n = net("10.0.1.0/30");
        assert_eq!(next_free(n, &[], None), Some(Ipv4Addr::new(10, 0, 1, 2)));
        assert_eq!(next_free(n, &[Ipv4Addr::new(10, 0, 1, 2)], None), None);
    }

    #[test]
    fn unusable_addresses_say_why() {
        let n = net("10.0.1.0/24");
        assert!(unusable_reason(n, Ipv4Addr::new(10, 0, 1, 0)).unwrap().contains("network"));
        assert!(unusable_reason(n, Ipv4Addr::new(10, 0, 1, 255)).unwrap().contains("broadcast"));
        assert!(unusable_reason(n, Ipv4Addr::new(10, 0, 1, 1)).unwrap().contains("gateway"));
        assert!(unusable_reason(n, Ipv4Addr::new(10, 0, 2, 1)).unwrap().contains("outside"));
        assert_eq!(unusable_reason(n, Ipv4Addr::new(10, 0, 1, 7)), None);
    }
}
