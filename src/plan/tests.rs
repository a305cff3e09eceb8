//! Planner tests on the recording backend: dependency order, idempotence, exact diffs,
//! drift repair and rollback, without root.

use std::collections::BTreeSet;

use super::kernel::KernelState;
use super::naming::Naming;
use super::{Op, Plan, desired, plan, plan_in_shares};
use crate::exec::{self, Backend, recording::Recording};
use crate::model::{Host, Network, Subnet, Vpc};

/// (name, cidr, [(subnet, cidr, [(host, ip)])])
type Spec<'a> = [(&'a str, &'a str, &'a [(&'a str, &'a str, &'a [(&'a str, &'a str)])])];

fn net(vpcs: &Spec) -> Network {
    Network {
        vpcs: vpcs
            .iter()
            .map(|(name, cidr, subnets)| Vpc {
                name: name.to_string(),
                cidr: cidr.parse().unwrap(),
                cidr6: None,
                host_access: false,
                subnets: subnets
                    .iter()
                    .map(|(sname, scidr, hosts)| {
                        let cidr: ipnetwork::Ipv4Network = scidr.parse().unwrap();
                        Subnet {
                            name: sname.to_string(),
                            cidr,
                            public: false,
                            nat: false,
                            gateway: crate::model::ipam::gateway(cidr),
                            cidr6: None,
                            hosts: hosts
                                .iter()
                                .map(|(h, ip)| Host {
                                    name: h.to_string(),
                                    ip: ip.parse().unwrap(),
                                    ip6: None,
                                    impairment: None,
                                    node: None,
                                })
                                .collect(),
                            nodes: Vec::new(),
                            vni: None,
                        }
                    })
                    .collect(),
            })
            .collect(),
        ..Network::default()
    }
}

fn base() -> Network {
    net(&[(
        "prod",
        "10.0.0.0/16",
        &[
            ("web", "10.0.1.0/24", &[("w1", "10.0.1.2"), ("w2", "10.0.1.3")]),
            ("app", "10.0.2.0/24", &[("app", "10.0.2.2")]),
        ],
    )])
}

fn naming() -> Naming {
    Naming::sandbox("t")
}

fn want(network: &Network) -> KernelState {
    desired::desired(network, &desired::Machine { naming: &naming(), uplink: "up0", fabric: None })
}

fn names(state: &KernelState) -> BTreeSet<String> {
    state.namespaces.keys().cloned().collect()
}

/// Plans against the recording backend's state, applies, and returns the plan.
fn converge(backend: &mut Recording, network: &Network) -> Plan {
    let want = want(network);
    let mut owned = names(&backend.state);
    owned.extend(names(&want));
    let observed = backend.observe(&owned).unwrap();
    let p = plan(&want, &observed);
    exec::apply(backend, &p).unwrap();
    p
}

fn lines(p: &Plan) -> Vec<String> {
    p.steps.iter().map(|s| s.op.to_string()).collect()
}

fn position(p: &Plan, line: &str) -> usize {
    lines(p).iter().position(|l| l == line).unwrap_or_else(|| panic!("no `{line}` in {:#?}", lines(p)))
}

#[test]
fn a_fresh_network_is_created_in_dependency_order() {
    let p = plan(&want(&base()), &KernelState::default());
    let netns = position(&p, "create netns t.prod.w1 (lo up, ipv6 off)");
    let bridge = position(&p, "create bridge b-web in t.prod");
    let veth = position(&p, "create veth h-w1 in t.prod (master b-web) <-> eth0 in t.prod.w1");
    let addr = position(&p, "add address 10.0.1.2/24 on eth0 in t.prod.w1");
    let route = position(&p, "add route default via 10.0.1.1 dev eth0 in t.prod.w1");
    assert!(netns < veth && bridge < veth && veth < addr && addr < route);
    assert_eq!(p.summary().deleted, 0);
    assert!(p.steps.iter().all(|s| s.undo.is_some()), "every create can be undone");
}

#[test]
fn each_bridge_is_made_just_before_its_first_port_and_portless_ones_last() {
    let mut network = base();
    let mut empty = network.vpcs[0].subnets[1].clone();
    (empty.name, empty.cidr, empty.hosts) = ("empty".into(), "10.0.3.0/24".parse().unwrap(), Vec::new());
    empty.gateway = crate::model::ipam::gateway(empty.cidr);
    network.vpcs[0].subnets.push(empty);
    let p = plan(&want(&network), &KernelState::default());
    let web = position(&p, "create bridge b-web in t.prod");
    assert_eq!(lines(&p)[web + 1], "create veth h-w1 in t.prod (master b-web) <-> eth0 in t.prod.w1");
    let app = position(&p, "create bridge b-app in t.prod");
    assert_eq!(lines(&p)[app + 1], "create veth h-app in t.prod (master b-app) <-> eth0 in t.prod.app");
    let empty = position(&p, "create bridge b-empty in t.prod");
    let last_veth = lines(&p).iter().rposition(|l| l.starts_with("create veth")).unwrap();
    assert!(empty > last_veth, "{:#?}", lines(&p));
}

/// Planning in shares on threads (as large networks are) gives the plan of planning on one.
#[test]
fn a_plan_made_in_shares_is_the_plan_made_whole() {
    let mut network = base();
    let template = network.vpcs[0].subnets[1].clone();
    for i in 3..=40 {
        let mut subnet = template.clone();
        subnet.name = format!("s{i}");
        subnet.cidr = format!("10.0.{i}.0/24").parse().unwrap();
        subnet.gateway = crate::model::ipam::gateway(subnet.cidr);
        subnet.hosts[0].name = format!("h{i}");
        subnet.hosts[0].ip = format!("10.0.{i}.2").parse().unwrap();
        network.vpcs[0].subnets.push(subnet);
    }
    let mut dev = network.vpcs[0].clone();
    dev.name = "dev".into();
    network.vpcs.push(dev);
    let wanted = want(&network);
    // Half of it there already, with drift, and a namespace no longer wanted.
    let mut observed = KernelState::default();
    for (name, ns) in wanted.namespaces.iter().step_by(2) {
        observed.namespaces.insert(name.clone(), ns.clone());
    }
    let mut router = wanted.namespaces["t.dev"].clone();
    router.links.get_mut("h-h3").unwrap().up = false;
    observed.namespaces.insert("t.dev".into(), router);
    observed.namespaces.insert("t.gone".into(), wanted.namespaces["t.prod.h3"].clone());
    let whole = plan_in_shares(&wanted, &observed, &KernelState::default(), usize::MAX);
    assert!(whole.steps.len() > 100 && whole.summary().deleted > 0, "{:#?}", lines(&whole));
    for share in [1, 7, 16] {
        assert_eq!(lines(&plan_in_shares(&wanted, &observed, &KernelState::default(), share)), lines(&whole));
    }
}

#[test]
fn an_applied_network_plans_to_nothing() {
    let mut backend = Recording::default();
    let first = converge(&mut backend, &base());
    assert!(!first.is_empty());
    let again = converge(&mut backend, &base());
    assert!(again.is_empty(), "{:#?}", lines(&again));
    assert_eq!(again.to_string(), "no changes\n");
}

#[test]
fn removing_a_subnet_deletes_exactly_its_objects() {
    let mut backend = Recording::default();
    converge(&mut backend, &base());
    let mut smaller = base();
    smaller.vpcs[0].subnets.remove(1);
    let p = converge(&mut backend, &smaller);
    // The VPC's resolver forgets the subnet's host: started anew with the names left.
    assert_eq!(
        lines(&p),
        [
            "replace resolver (9 names) with resolver (6 names) in t.prod",
            "delete link b-app in t.prod",
            "delete link h-app in t.prod",
            "delete netns t.prod.app"
        ],
    );
}

#[test]
fn a_changed_address_is_added_then_the_old_one_deleted() {
    let mut backend = Recording::default();
    converge(&mut backend, &base());
    let mut moved = base();
    moved.vpcs[0].subnets[0].hosts[1].ip = "10.0.1.30".parse().unwrap();
    let p = converge(&mut backend, &moved);
    assert_eq!(
        lines(&p),
        [
            "add address 10.0.1.30/24 on eth0 in t.prod.w2",
            "replace resolver (9 names) with resolver (9 names) in t.prod",
            "delete address 10.0.1.3/24 on eth0 in t.prod.w2"
        ],
    );
}

#[test]
fn a_renumbered_subnet_replaces_the_default_route() {
    let mut backend = Recording::default();
    converge(&mut backend, &base());
    let renumbered = net(&[(
        "prod",
        "10.0.0.0/16",
        &[
            ("web", "10.0.1.0/24", &[("w1", "10.0.1.2"), ("w2", "10.0.1.3")]),
            ("app", "10.0.9.0/24", &[("app", "10.0.9.2")]),
        ],
    )]);
    let p = converge(&mut backend, &renumbered);
    assert!(
        lines(&p).contains(&"replace route default via 10.0.9.1 dev eth0 in t.prod.app".to_string()),
        "{:#?}",
        lines(&p)
    );
    // The route, and the resolver that learns app's new address.
    assert_eq!(p.summary().changed, 2);
}

#[test]
fn drift_is_repaired_and_foreign_links_are_left_alone() {
    let mut backend = Recording::default();
    converge(&mut backend, &base());
    let router = backend.state.namespaces.get_mut("t.prod").unwrap();
    router.links.get_mut("h-w1").unwrap().up = false;
    let mut foreign = router.links["b-web"].clone();
    foreign.ours = false;
    router.links.insert("user0".into(), foreign);
    let p = converge(&mut backend, &base());
    assert_eq!(lines(&p), ["set link h-w1 up master b-web in t.prod"]);
}

#[test]
fn a_veth_with_a_missing_end_is_recreated() {
    let mut backend = Recording::default();
    converge(&mut backend, &base());
    backend.state.namespaces.get_mut("t.prod.w1").unwrap().links.remove("eth0");
    let p = converge(&mut backend, &base());
    let l = lines(&p);
    assert_eq!(l[0], "delete link h-w1 in t.prod");
    assert!(l.contains(&"create veth h-w1 in t.prod (master b-web) <-> eth0 in t.prod.w1".to_string()));
}

#[test]
fn only_observed_namespaces_are_deleted() {
    let real = desired::desired(
        &Network::default(),
        &desired::Machine { naming: &Naming::real_host("v"), uplink: "eth0", fabric: None },
    );
    let observed = KernelState::default();
    assert!(plan(&real, &observed).steps.iter().all(|s| !matches!(s.op, Op::DeleteNetns { .. })));
}

#[test]
fn a_failed_apply_is_rolled_back_to_where_it_started() {
    let mut backend = Recording::default();
    converge(&mut backend, &base());
    let before = backend.state.clone();
    let mut bigger = base();
    bigger.vpcs[0].subnets.push(Subnet {
        name: "db".into(),
        cidr: "10.0.3.0/24".parse().unwrap(),
        public: false,
        nat: false,
        gateway: "10.0.3.1".parse().unwrap(),
        cidr6: None,
        hosts: vec![Host {
            name: "db".into(),
            ip: "10.0.3.2".parse().unwrap(),
            ip6: None,
            impairment: None,
            node: None,
        }],
        nodes: Vec::new(),
        vni: None,
    });
    let want = want(&bigger);
    let observed = backend.observe(&names(&want)).unwrap();
    let p = plan(&want, &observed);
    backend.fail_at = Some(backend.applied.len() + p.steps.len() - 1);
    let err = exec::apply(&mut backend, &p).unwrap_err();
    assert_eq!(err.undone, p.steps.len() - 1);
    assert!(err.rollback_failures.is_empty());
    assert_eq!(backend.state, before);
}

#[test]
fn a_failure_inside_a_batch_undoes_what_the_rest_of_the_batch_made() {
    let mut backend = Recording { parallel: true, ..Recording::default() };
    let want = want(&base());
    let p = plan(&want, &KernelState::default());
    let creates = p.steps.iter().filter(|s| matches!(s.op, Op::CreateNetns { .. })).count();
    assert!(creates > 2, "{p}");
    // The second namespace of the batch fails; the ones after it were made all the same.
    backend.fail_at = Some(1);
    let err = exec::apply(&mut backend, &p).unwrap_err();
    assert_eq!(err.undone, creates - 1, "every namespace the batch made is deleted again");
    assert!(err.rollback_failures.is_empty());
    assert_eq!(backend.state, KernelState::default());
    let deleted = backend.applied.iter().filter(|op| matches!(op, Op::DeleteNetns { .. })).count();
    assert_eq!(deleted, creates - 1);
}

#[test]
fn the_sandbox_scaffold_is_planned_with_the_network() {
    let p = plan(&want(&Network::default()), &KernelState::default());
    assert_eq!(
        lines(&p),
        [
            "create netns t (lo up)",
            "create netns t.internet (lo up)",
            "create veth up0 in t <-> eth0 in t.internet",
            "add address 198.51.100.2/24 on up0 in t",
            "add address 2001:db8::2/64 on up0 in t",
            "add address 198.51.100.1/24 on eth0 in t.internet",
            "add address 2001:db8::1/64 on eth0 in t.internet",
            "start http server on port 80 in t.internet",
        ]
    );
    let ops: Vec<_> = p.steps.iter().map(|s| &s.op).collect();
    assert!(matches!(ops[0], Op::CreateNetns { forwarding: false, .. }));
}

#[test]
fn a_stranger_link_with_a_wanted_name_is_neither_adopted_nor_deleted() {
    let mut backend = Recording::default();
    converge(&mut backend, &base());
    let router = backend.state.namespaces.get_mut("t.prod").unwrap();
    router.links.get_mut("b-app").unwrap().ours = false;
    let p = plan(&want(&base()), &backend.observe(&names(&backend.state)).unwrap());
    let l = lines(&p);
    assert!(l.contains(&"create bridge b-app in t.prod".to_string()), "{l:#?}");
    assert!(!l.iter().any(|x| x.starts_with("delete link b-app")), "{l:#?}");
}

#[test]
fn impairments_are_set_on_both_ends_changed_in_place_and_removed() {
    use crate::model::impair::Impairment;
    let mut backend = Recording::default();
    let mut network = base();
    let delay = Impairment { delay_us: 20_000, ..Impairment::default() };
    network.vpcs[0].subnets[0].hosts[0].impairment = Some(delay);
    let p = converge(&mut backend, &network);
    let veth = position(&p, "create veth h-w1 in t.prod (master b-web) <-> eth0 in t.prod.w1");
    assert!(position(&p, "impair link h-w1 in t.prod: delay 20ms") > veth);
    assert!(position(&p, "impair link eth0 in t.prod.w1: delay 20ms") > veth);
    assert!(converge(&mut backend, &network).steps.is_empty(), "applied: nothing to do");

    let slower = Impairment { delay_us: 50_000, ..delay };
    network.vpcs[0].subnets[0].hosts[0].impairment = Some(slower);
    let p = converge(&mut backend, &network);
    assert_eq!(p.summary().changed, 2, "{:#?}", lines(&p));
    let undo = p.steps.iter().find_map(|s| s.undo.clone()).expect("a change can be undone");
    assert_eq!(undo.to_string(), "impair link h-w1 in t.prod: delay 20ms");

    let p = converge(&mut backend, &base());
    assert_eq!(
        lines(&p),
        ["remove the impairment of link h-w1 in t.prod", "remove the impairment of link eth0 in t.prod.w1"]
    );
}
