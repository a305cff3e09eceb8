//! Reading namespaces as they are: links, addresses, routes, queues, forwarding entries and
//! vpcsh's nftables table, over plain blocking sockets on threads that enter each namespace
//! in turn, decoding only the parts of each message the planner compares.

use std::collections::{BTreeMap, HashMap};
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::os::fd::AsFd;
use std::sync::atomic::{AtomicUsize, Ordering};

use ipnetwork::IpNetwork;
use netlink_packet_route::address::{
    AddressAttribute, AddressFlags, AddressHeaderFlags, AddressMessage, AddressScope,
};
use netlink_packet_route::link::{LinkAttribute, LinkExtentMask, LinkMessage};
use netlink_packet_route::neighbour::NeighbourMessage;
use netlink_packet_route::route::{RouteAddress, RouteAttribute, RouteHeader, RouteMessage, RouteProtocol};
use netlink_packet_route::tc::{TcAttribute, TcHandle, TcMessage, TcOption};
use netlink_packet_route::{AddressFamily, RouteNetlinkMessage};
use netlink_sys::{Socket, protocols::NETLINK_ROUTE};
use nix::errno::Errno;
use nix::sched::{CloneFlags, setns};
use rtnetlink::RouteMessageBuilder;
use rtnetlink::packet_core::{NLM_F_DUMP, Nla};

use super::super::nft::Nft;
use super::super::plain_netlink::{dump_raw, request};
use super::super::{OpError, netns, qdisc};
use super::links::{self, SeenLink};
use super::{address_of, overlay, with_ipv6};
use crate::plan::kernel::{Addr, LINK_GROUP, Link, LinkKind, Netns, Owner, Route};

/// Below this many namespaces per reader, one reader is faster than starting another.
const PARALLEL_FROM: usize = 64;

const RTM_NEWLINK: u16 = 16;

/// What one namespace holds, and the index of each of its links by name.
pub(super) struct Observed {
    pub netns: Netns,
    pub index: HashMap<String, u32>,
}

/// Reads those of `namespaces` that exist on every core (up to four readers); none of them is
/// changed. Readers take the next namespace as they finish one, so they end together
/// however the heavy ones (routers, with a link per subnet) fall in the list.
pub(super) fn observe_all(namespaces: &[&String]) -> Result<BTreeMap<String, Observed>, OpError> {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get()).min(4);
    let readers = namespaces.len().div_ceil(PARALLEL_FROM).min(cores);
    let next = AtomicUsize::new(0);
    let read_share = || read_each(namespaces, &next);
    std::thread::scope(|s| {
        // The caller may be the main thread, which must stay in its own namespace.
        let shares: Vec<_> = (0..readers).map(|_| s.spawn(read_share)).collect();
        let mut all = BTreeMap::new();
        for share in shares {
            let part = share
                .join()
                .map_err(|_| OpError::new("reading namespaces", &io::Error::other("a reader panicked")))??;
            all.extend(part);
        }
        Ok(all)
    })
}

/// Reads, on this thread, each namespace of `namespaces` that exists, taking the next one
/// not yet taken from `next` until none is left. The thread enters them one after another,
/// so it must be a thread of its own. A failure stops the other readers too.
fn read_each(namespaces: &[&String], next: &AtomicUsize) -> Result<Vec<(String, Observed)>, OpError> {
    let mut out = Vec::new();
    while let Some(ns) = namespaces.get(next.fetch_add(1, Ordering::Relaxed)) {
        match read_one(ns) {
            Ok(Some(seen)) => out.push(((*ns).clone(), seen)),
            Ok(None) => {}
            Err(e) => {
                next.store(namespaces.len(), Ordering::Relaxed);
                return Err(e);
            }
        }
    }
    Ok(out)
}

/// Enters `ns` and reads it; `None` if it does not exist.
fn read_one(ns: &str) -> Result<Option<Observed>, OpError> {
    let failed = |e: io::Error| OpError::new(format!("observing netns {ns}"), &e);
    let fd = match netns::open(ns) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        opened => opened.map_err(failed)?,
    };
    match setns(fd.as_fd(), CloneFlags::CLONE_NEWNET) {
        // A bare file with no namespace mounted on it (see `netns::is_stale`): none.
        Err(Errno::EINVAL) => return Ok(None),
        entered => entered.map_err(|e| failed(e.into()))?,
    }
    read_here(ns).map(Some).map_err(failed)
}

/// The namespace the calling thread is in, which vpcsh knows as `ns`.
fn read_here(ns: &str) -> io::Result<Observed> {
    let socket = Socket::new(NETLINK_ROUTE)?;
    // Dumps then honour their requests' filters: route dumps send only the main table's
    // static routes (what the planner compares), not the local table the kernel keeps.
    socket.set_netlink_get_strict_chk(true)?;
    let links = links(&socket)?;
    // Queues are read only where a link names one that impairs: most namespaces have none.
    let qdiscs: Vec<TcMessage> = if links.iter().any(impaired_queue) {
        dump(&socket, RouteNetlinkMessage::GetQueueDiscipline(TcMessage::default()), |m| match m {
            RouteNetlinkMessage::NewQueueDiscipline(q) => Some(q),
            _ => None,
        })?
    } else {
        Vec::new()
    };
    // The kernel keeps no IPv6 address or gateway route on a device where IPv6 is off: where
    // it is off on every one, IPv4's dumps show all there is, and a dump of one family's
    // addresses does not take the routing lock that all families' does.
    let ipv6_anywhere = links.iter().any(|l| l.ipv6_on);
    let mut addresses = AddressMessage::default();
    if !ipv6_anywhere {
        addresses.header.family = AddressFamily::Inet;
    }
    let addrs = dump(&socket, RouteNetlinkMessage::GetAddress(addresses), |m| match m {
        RouteNetlinkMessage::NewAddress(a) => Some(a),
        _ => None,
    })?;
    let sysctls = sysctls_of(&links);
    let mut routes = route_dump(&socket, RouteMessageBuilder::<Ipv4Addr>::new().build())?;
    if ipv6_anywhere {
        routes.extend(route_dump(&socket, RouteMessageBuilder::<Ipv6Addr>::new().build())?);
    }

    let forwarding = sysctls.ipv4_forwarding && (!with_ipv6(ns) || !sysctls.ipv6 || sysctls.ipv6_forwarding);
    let names: HashMap<u32, String> = links.iter().filter_map(|l| Some((l.index, l.name.clone()?))).collect();
    let mut out = Netns { forwarding, ipv6: Some(sysctls.ipv6), ..Netns::default() };
    out.links =
        links.iter().filter_map(|l| Some((names.get(&l.index)?.clone(), link_of(l, &names)))).collect();
    for (index, impairment) in qdiscs.iter().filter_map(impairment_of) {
        if let Some(link) = names.get(&index).and_then(|name| out.links.get_mut(name)) {
            link.impairment = Some(impairment);
        }
    }
    out.addrs = addrs.iter().filter_map(|a| addr_of(a, &names)).collect();
    // Only a namespace with a bridge (a router, or a machine with EVPN segments) has entries
    // vpcsh makes: hosts skip the dumps.
    if out.links.values().any(|l| matches!(l.kind, LinkKind::Vxlan { .. } | LinkKind::Bridge)) {
        let entries = overlay::entries_of(&neighbours(&socket)?, &names);
        (out.neighbours, out.floods, out.port_macs) = (entries.neighbours, entries.floods, entries.port_macs);
    }
    out.routes = routes.iter().filter_map(|r| route_of(r, &names)).collect();
    // A kernel without nftables has no table to see.
    if let Ok(mut nft) = Nft::open() {
        out.nft = nft.observe()?.map(crate::plan::kernel::Nft::Seen);
    }
    let index = names.into_iter().map(|(i, n)| (n, i)).collect();
    Ok(Observed { netns: out, index })
}

/// A dump's messages of the kind `pick` keeps, decoded whole.
fn dump<T>(
    socket: &Socket,
    message: RouteNetlinkMessage,
    pick: impl Fn(RouteNetlinkMessage) -> Option<T>,
) -> io::Result<Vec<T>> {
    Ok(request(socket, message, NLM_F_DUMP)?.into_iter().filter_map(pick).collect())
}

fn route_dump(socket: &Socket, request: RouteMessage) -> io::Result<Vec<RouteMessage>> {
    dump(socket, RouteNetlinkMessage::GetRoute(request), |m| match m {
        RouteNetlinkMessage::NewRoute(r) => Some(r),
        _ => None,
    })
}

/// IPv4 and IPv6 neighbours in one dump; bridge forwarding entries need their own.
fn neighbours(socket: &Socket) -> io::Result<Vec<NeighbourMessage>> {
    let pick = |m| match m {
        RouteNetlinkMessage::NewNeighbour(n) => Some(n),
        _ => None,
    };
    let mut all = dump(socket, RouteNetlinkMessage::GetNeighbour(NeighbourMessage::default()), pick)?;
    let mut bridge = NeighbourMessage::default();
    bridge.header.family = AddressFamily::Bridge;
    all.extend(dump(socket, RouteNetlinkMessage::GetNeighbour(bridge), pick)?);
    Ok(all)
}

/// Every link, without counters (a third of what the kernel would fill in for each).
fn links(socket: &Socket) -> io::Result<Vec<SeenLink>> {
    let mut request = LinkMessage::default();
    request.attributes.push(LinkAttribute::ExtMask(vec![LinkExtentMask::SkipStats]));
    let mut out = Vec::new();
    dump_raw(socket, RouteNetlinkMessage::GetLink(request), |kind, payload| {
        if kind == RTM_NEWLINK {
            out.push(links::decode(payload)?);
        }
        Ok(())
    })?;
    Ok(out)
}

/// A namespace's forwarding and IPv6 switches, as its loopback device carries them: writing
/// `all` sets every device, `lo` included, and a dump of `lo` costs nothing extra.
#[derive(Clone, Copy, Default)]
struct Sysctls {
    ipv4_forwarding: bool,
    ipv6: bool,
    ipv6_forwarding: bool,
}

fn sysctls_of(links: &[SeenLink]) -> Sysctls {
    let Some(lo) = links.iter().find(|l| l.loopback) else {
        return Sysctls::default();
    };
    Sysctls {
        ipv4_forwarding: lo.ipv4.as_ref().is_some_and(|c| c.forwarding != 0),
        ipv6: lo.ipv6.as_ref().is_some_and(|c| c.disable_ipv6 == 0),
        ipv6_forwarding: lo.ipv6.as_ref().is_some_and(|c| c.forwarding != 0),
    }
}

/// A link as the planner compares it: kind, master, up, and whether it is vpcsh's.
fn link_of(l: &SeenLink, names: &HashMap<u32, String>) -> Link {
    let kind = match l.kind.as_deref() {
        Some("bridge") => LinkKind::Bridge,
        Some("veth") => LinkKind::VethPeer,
        Some("vxlan") => {
            let (vni, local) = l.vxlan.unwrap_or((0, Ipv4Addr::UNSPECIFIED));
            LinkKind::Vxlan { vni, local, underlay_ns: String::new(), evpn: false }
        }
        Some(other) => LinkKind::Other(other.to_string()),
        None if l.loopback => LinkKind::Loopback,
        None => LinkKind::Other(String::new()),
    };
    Link {
        kind,
        master: l.master.and_then(|i| names.get(&i).cloned()),
        up: l.up,
        owner: Owner::Unclaimed,
        ours: l.group == LINK_GROUP,
        route_localnet: l.ipv4.as_ref().is_some_and(|c| c.route_localnet != 0),
        impairment: None,
        mtu: l.mtu,
        mac: l.mac,
        learning: l.learning,
    }
}

/// Whether a link's root queue (as its dump names it) is one an impairment makes.
fn impaired_queue(l: &SeenLink) -> bool {
    l.qdisc.as_deref().is_some_and(qdisc::is_impairment)
}

/// A link's root netem queue: the link's index and what the queue does.
fn impairment_of(q: &TcMessage) -> Option<(u32, crate::model::impair::Impairment)> {
    if q.header.parent != TcHandle::ROOT {
        return None;
    }
    let kind = q.attributes.iter().find_map(|a| match a {
        TcAttribute::Kind(k) => Some(k.as_str()),
        _ => None,
    })?;
    let options = q.attributes.iter().find_map(|a| match a {
        TcAttribute::Options(options) => options.iter().find_map(|o| match o {
            TcOption::Other(nla) => {
                let mut value = vec![0; nla.value_len()];
                nla.emit_value(&mut value);
                Some(value)
            }
            _ => None,
        }),
        _ => None,
    })?;
    Some((u32::try_from(q.header.index).ok()?, qdisc::parse(kind, &options)?))
}

/// An address on a named link, of the kind vpcsh adds: every IPv4 address, and static
/// global IPv6 ones (not the kernel's link-local or loopback, nor what SLAAC configures).
fn addr_of(a: &AddressMessage, names: &HashMap<u32, String>) -> Option<Addr> {
    let dev = names.get(&a.header.index)?;
    let ip = address_of(a)?;
    let ours = match a.header.family {
        AddressFamily::Inet => true,
        AddressFamily::Inet6 => {
            let permanent = a.header.flags.contains(AddressHeaderFlags::Permanent)
                || a.attributes
                    .iter()
                    .any(|x| matches!(x, AddressAttribute::Flags(f) if f.contains(AddressFlags::Permanent)));
            a.header.scope == AddressScope::Universe && permanent
        }
        _ => false,
    };
    let net = IpNetwork::new(ip, a.header.prefix_len).ok()?;
    ours.then(|| Addr { dev: dev.clone(), net })
}

/// A static route of the main table, the kind vpcsh adds.
fn route_of(r: &RouteMessage, names: &HashMap<u32, String>) -> Option<Route> {
    if r.header.table != RouteHeader::RT_TABLE_MAIN || r.header.protocol != RouteProtocol::Static {
        return None;
    }
    let v6 = r.header.address_family == AddressFamily::Inet6;
    let mut dst: IpAddr = if v6 { Ipv6Addr::UNSPECIFIED.into() } else { Ipv4Addr::UNSPECIFIED.into() };
    let mut via = None;
    let mut dev = String::new();
    for attr in &r.attributes {
        match attr {
            RouteAttribute::Destination(RouteAddress::Inet(ip)) => dst = (*ip).into(),
            RouteAttribute::Destination(RouteAddress::Inet6(ip)) => dst = (*ip).into(),
            RouteAttribute::Gateway(RouteAddress::Inet(ip)) => via = Some((*ip).into()),
            RouteAttribute::Gateway(RouteAddress::Inet6(ip)) => via = Some((*ip).into()),
            RouteAttribute::Oif(i) => dev = names.get(i).cloned().unwrap_or_default(),
            _ => {}
        }
    }
    let dst = IpNetwork::new(dst, r.header.destination_prefix_length).ok()?;
    Some(Route { dst, via: via?, dev })
}
