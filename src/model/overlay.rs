//! Combining networks by identity (VPC, subnet and host names; workloads as values). A batch
//! run uses it so that an `apply()` in the middle of a script never tears down the VPCs,
//! subnets, hosts and workloads the script declares later and that already exist. What
//! decides who reaches whom — peerings, firewalls, NAT, published ports — is not kept: at
//! every `apply()` it is exactly what the script has declared so far, so a script checks
//! the same behaviour on its second run as on its first.

use std::collections::BTreeSet;

use super::Network;

impl Network {
    /// The VPCs, subnets, hosts and workloads `self` and `other` both have, in `self`'s
    /// version but without NAT; no peerings, firewalls or published ports.
    pub(crate) fn common(&self, other: &Network) -> Network {
        let mut out = Network { nodes: other.nodes.clone(), control: other.control, ..Network::default() };
        for vpc in &self.vpcs {
            let Some(theirs) = other.vpc(&vpc.name) else { continue };
            let mut vpc = vpc.clone();
            vpc.subnets.retain(|s| theirs.subnets.iter().any(|t| t.name == s.name));
            for subnet in &mut vpc.subnets {
                let t = theirs.subnets.iter().find(|t| t.name == subnet.name).expect("kept above");
                subnet.hosts.retain(|h| t.hosts.iter().any(|x| x.name == h.name));
                subnet.nat = false;
            }
            out.vpcs.push(vpc);
        }
        out.workloads = self.workloads.iter().filter(|w| other.workloads.contains(w)).cloned().collect();
        out
    }

    /// `self` and `other` side by side: two networks without a VPC in common (stacks).
    pub(crate) fn beside(&self, other: &Network) -> Network {
        let mut out = self.clone();
        out.vpcs.extend(other.vpcs.iter().cloned());
        out.publishes.extend(other.publishes.iter().cloned());
        out.peerings.extend(other.peerings.iter().cloned());
        out.workloads.extend(other.workloads.iter().cloned());
        out.firewalls.extend(other.firewalls.iter().cloned());
        out
    }

    /// Only the named VPCs and what refers to them alone.
    pub(crate) fn only(&self, vpcs: &BTreeSet<String>) -> Network {
        let others: Vec<String> =
            self.vpcs.iter().map(|v| v.name.clone()).filter(|n| !vpcs.contains(n)).collect();
        self.without(&others)
    }

    /// `self`, plus whatever of `extra` it does not name (its own declarations win).
    pub(crate) fn overlay(&self, extra: &Network) -> Network {
        let mut out = self.clone();
        for vpc in &extra.vpcs {
            let Some(mine) = out.vpcs.iter_mut().find(|v| v.name == vpc.name) else {
                out.vpcs.push(vpc.clone());
                continue;
            };
            for subnet in &vpc.subnets {
                match mine.subnets.iter_mut().find(|s| s.name == subnet.name) {
                    None => mine.subnets.push(subnet.clone()),
                    Some(s) => {
                        for host in &subnet.hosts {
                            let taken = s.hosts.iter().any(|h| h.name == host.name || h.ip == host.ip);
                            if !taken {
                                s.hosts.push(host.clone());
                            }
                        }
                    }
                }
            }
        }
        let has = |n: &Network, name: &str| n.vpc(name).is_some();
        for p in &extra.peerings {
            let named = out.peerings.iter().any(|q| (q.a == p.a && q.b == p.b) || (q.a == p.b && q.b == p.a));
            if !named && has(&out, &p.a) && has(&out, &p.b) {
                out.peerings.push(p.clone());
            }
        }
        for p in &extra.publishes {
            if !out.publishes.iter().any(|q| q.host_port == p.host_port && q.proto == p.proto) {
                out.publishes.push(p.clone());
            }
        }
        for f in &extra.firewalls {
            let named = out.firewalls.iter().any(|g| g.same_target(f));
            if !named {
                out.firewalls.push(f.clone());
            }
        }
        for w in &extra.workloads {
            if !out.workloads.contains(w) {
                out.workloads.push(w.clone());
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::super::{Host, Subnet, Vpc};
    use super::*;

    fn vpc(name: &str, subnets: &[(&str, &[&str])]) -> Vpc {
        Vpc {
            name: name.into(),
            cidr: "10.0.0.0/16".parse().unwrap(),
            cidr6: None,
            host_access: false,
            subnets: subnets
                .iter()
                .enumerate()
                .map(|(i, (s, hosts))| Subnet {
                    name: s.to_string(),
                    cidr: format!("10.0.{i}.0/24").parse().unwrap(),
                    public: false,
                    nat: false,
                    gateway: format!("10.0.{i}.1").parse().unwrap(),
                    cidr6: None,
                    hosts: hosts
                        .iter()
                        .enumerate()
                        .map(|(j, h)| Host {
                            name: h.to_string(),
                            ip: format!("10.0.{i}.{}", j + 2).parse().unwrap(),
                            ip6: None,
                            impairment: None,
                            node: None,
                        })
                        .collect(),
                    nodes: Vec::new(),
                    vni: None,
                })
                .collect(),
        }
    }

    #[test]
    fn common_keeps_what_both_name() {
        let a = Network {
            vpcs: vec![vpc("p", &[("web", &["w1", "w2"]), ("db", &["d"])]), vpc("q", &[])],
            ..Default::default()
        };
        let b = Network { vpcs: vec![vpc("p", &[("web", &["w1"])])], ..Default::default() };
        let c = a.common(&b);
        assert_eq!(c.vpcs.len(), 1);
        assert_eq!(c.vpcs[0].subnets.len(), 1);
        assert_eq!(c.vpcs[0].subnets[0].hosts.len(), 1);
    }

    #[test]
    fn common_keeps_no_policy() {
        let mut a =
            Network { vpcs: vec![vpc("p", &[("web", &["w1"])]), vpc("q", &[])], ..Default::default() };
        a.vpcs[0].subnets[0].nat = true;
        a.peerings.push(super::super::Peering {
            a: "p".into(),
            b: "q".into(),
            a_allowed: vec![a.vpcs[0].cidr.into()],
            b_allowed: vec![a.vpcs[1].cidr.into()],
            impairment: None,
        });
        let c = a.common(&a);
        assert_eq!(c.vpcs.len(), 2, "structure is kept");
        assert!(c.peerings.is_empty() && !c.vpcs[0].subnets[0].nat, "policy follows the script: {c:?}");
    }

    #[test]
    fn overlay_adds_only_what_is_not_named() {
        let now = Network { vpcs: vec![vpc("p", &[("web", &["w1"])])], ..Default::default() };
        let later = Network {
            vpcs: vec![vpc("p", &[("web", &["w1", "w2"]), ("db", &["d"])]), vpc("q", &[])],
            ..Default::default()
        };
        let o = now.overlay(&later);
        assert_eq!(o.vpcs.len(), 2);
        assert_eq!(o.vpcs[0].subnets.len(), 2);
        assert_eq!(o.vpcs[0].subnets[0].hosts.len(), 2);
        assert_eq!(now.overlay(&Network::default()), now);
    }
}
