//! Address management inside a subnet: the gateway, the usable range, the next free address.

use std::collections::HashSet;
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

/// The first host address of a subnet (after its gateway).
pub(crate) fn first_host(net: Ipv4Network) -> Ipv4Addr {
    Ipv4Addr::from(u32::from(gateway(net)) + 1)
}

/// The host addresses of one subnet, handed out lowest first. Addresses are only ever taken,
/// never given back, so a cursor below which everything is taken makes each allocation
/// constant time on average: a subnet of 20,000 hosts allocates in milliseconds.
#[derive(Clone, Debug)]
pub(crate) struct Allocator {
    net: Ipv4Network,
    taken: HashSet<Ipv4Addr>,
    /// Every usable address below this one is taken.
    next: u32,
}

impl Allocator {
    pub(crate) fn new(net: Ipv4Network) -> Self {
        Self { net, taken: HashSet::new(), next: u32::from(first_host(net)) }
    }

    /// Marks an address as taken (a fixed one, or one placed elsewhere).
    pub(crate) fn take(&mut self, ip: Ipv4Addr) {
        self.taken.insert(ip);
    }

    /// `preferred` when it is usable and free, else the lowest free address; taken.
    pub(crate) fn allocate(&mut self, preferred: Option<Ipv4Addr>) -> Option<Ipv4Addr> {
        if let Some(ip) = preferred
            && unusable_reason(self.net, ip).is_none()
            && self.taken.insert(ip)
        {
            return Some(ip);
        }
        let end = u32::from(self.net.broadcast());
        while self.next < end {
            let ip = Ipv4Addr::from(self.next);
            self.next += 1;
            if self.taken.insert(ip) {
                return Some(ip);
            }
        }
        None
    }
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
    fn allocation_skips_the_gateway_and_what_is_taken() {
        let mut a = Allocator::new(net("10.0.1.0/24"));
        assert_eq!(a.allocate(None), Some(Ipv4Addr::new(10, 0, 1, 2)));
        a.take(Ipv4Addr::new(10, 0, 1, 3));
        assert_eq!(a.allocate(None), Some(Ipv4Addr::new(10, 0, 1, 4)));
    }

    #[test]
    fn allocation_prefers_the_previous_address() {
        let mut a = Allocator::new(net("10.0.1.0/24"));
        let prev = Ipv4Addr::new(10, 0, 1, 9);
        assert_eq!(a.allocate(Some(prev)), Some(prev));
        assert_eq!(a.allocate(Some(prev)), Some(Ipv4Addr::new(10, 0, 1, 2)), "taken now");
        let outside = Ipv4Addr::new(10, 0, 2, 9);
        assert_eq!(a.allocate(Some(outside)), Some(Ipv4Addr::new(10, 0, 1, 3)));
    }

    #[test]
    fn a_full_subnet_has_no_free_address() {
        let mut a = Allocator::new(net("10.0.1.0/30"));
        assert_eq!(a.allocate(None), Some(Ipv4Addr::new(10, 0, 1, 2)));
        assert_eq!(a.allocate(None), None);
    }

    #[test]
    fn a_big_subnet_allocates_in_linear_time() {
        let mut a = Allocator::new(net("10.0.0.0/16"));
        let ips: Vec<_> = (0..60_000).map(|_| a.allocate(None).unwrap()).collect();
        assert_eq!(ips[59_999], Ipv4Addr::new(10, 0, 234, 97));
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
