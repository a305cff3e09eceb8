//! Reading namespaces as they are: links, addresses, routes, queues, forwarding entries and
//! vpcsh's nftables table, over plain blocking sockets on threads that enter each namespace
//! in turn, decoding only the parts of each message the planner compares.

use std::collections::{BTreeMap, HashMap};
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::os::fd::AsFd;

use ipnetwork::IpNetwork;
use netlink_packet_route::address::{
    AddressAttribute, AddressFlags, AddressHeaderFlags, AddressMessage, AddressScope,
};
use netlink_packet_route::link::{
    AfSpecInet, AfSpecInet6, AfSpecUnspec, Inet6DevConf, InetDevConf, InfoKind, LinkAttribute,
    LinkExtentMask, LinkFlags, LinkHeader, LinkInfo, LinkMessage,
};
use netlink_packet_route::neighbour::NeighbourMessage;
use netlink_packet_route::route::{RouteAddress, RouteAttribute, RouteHeader, RouteMessage, RouteProtocol};
use netlink_packet_route::tc::{TcAttribute, TcHandle, TcMessage, TcOption};
use netlink_packet_route::{AddressFamily, RouteNetlinkMessage};
use netlink_sys::{Socket, protocols::NETLINK_ROUTE};
use nix::errno::Errno;
use nix::sched::{CloneFlags, setns};
use rtnetlink::RouteMessageBuilder;
use rtnetlink::packet_core::{NLM_F_DUMP, Nla, NlaBuffer, NlasIterator, Parseable, ParseableParametrized};

use super::super::nft::Nft;
use super::super::plain_netlink::{dump_raw, request};
use super::super::{OpError, netns, qdisc};
use super::{address_of, link_name, overlay, with_ipv6};
use crate::plan::kernel::{Addr, LINK_GROUP, Link, LinkKind, Mac, Netns, Owner, Route};

/// Below this many namespaces per reader, one reader is faster than starting another.
const PARALLEL_FROM: usize = 64;

/// `struct ifinfomsg`, before a link message's attributes.
const LINK_HEADER_LEN: usize = 16;
const RTM_NEWLINK: u16 = 16;
const AF_INET: u16 = 2;
const AF_INET6: u16 = 10;

/// The link attributes the planner reads (`IFLA_*`): address, name, MTU, queue, master,
/// link info, group. `IFLA_AF_SPEC` is read in part (see `af_spec`).
const KEPT: [u16; 7] = [1, 3, 4, 6, 10, 18, 27];
const IFLA_AF_SPEC: u16 = 26;

/// What one namespace holds, and the index of each of its links by name.
pub(super) struct Observed {
    pub netns: Netns,
    pub index: HashMap<String, u32>,
}

/// Reads those of `namespaces` that exist on every core (up to four readers, each taking a
/// share in turn); none of them is changed.
pub(super) fn observe_all(namespaces: &[&String]) -> Result<BTreeMap<String, Observed>, OpError> {
    let readers = std::thread::available_parallelism().map_or(1, |n| n.get()).min(4);
    let share = namespaces.len().div_ceil(readers).max(PARALLEL_FROM);
    std::thread::scope(|s| {
        let parts: Vec<_> = namespaces.chunks(share).map(|part| s.spawn(move || read_each(part))).collect();
        let mut all = BTreeMap::new();
        for part in parts {
            let part = part
                .join()
                .map_err(|_| OpError::new("reading namespaces", &io::Error::other("a reader panicked")))??;
            all.extend(part);
        }
        Ok(all)
    })
}

/// Reads each namespace that exists on this thread, which enters them one after another (so
/// it must be a thread of its own).
fn read_each(namespaces: &[&String]) -> Result<Vec<(String, Observed)>, OpError> {
    let mut out = Vec::with_capacity(namespaces.len());
    for ns in namespaces {
        let failed = |e: io::Error| OpError::new(format!("observing netns {ns}"), &e);
        let fd = match netns::open(ns) {
            Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
            opened => opened.map_err(failed)?,
        };
        match setns(fd.as_fd(), CloneFlags::CLONE_NEWNET) {
            // A bare file with no namespace mounted on it (see `netns::is_stale`): none.
            Err(Errno::EINVAL) => continue,
            entered => entered.map_err(|e| failed(e.into()))?,
        }
        out.push(((*ns).clone(), read_here(ns).map_err(failed)?));
    }
    Ok(out)
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
    let addrs = dump(&socket, RouteNetlinkMessage::GetAddress(Default::default()), |m| match m {
        RouteNetlinkMessage::NewAddress(a) => Some(a),
        _ => None,
    })?;
    let sysctls = sysctls_of(&links);
    let mut routes = route_dump(&socket, RouteMessageBuilder::<Ipv4Addr>::new().build())?;
    if sysctls.ipv6 {
        routes.extend(route_dump(&socket, RouteMessageBuilder::<Ipv6Addr>::new().build())?);
    }

    let forwarding = sysctls.ipv4_forwarding && (!with_ipv6(ns) || !sysctls.ipv6 || sysctls.ipv6_forwarding);
    let names: HashMap<u32, String> =
        links.iter().filter_map(|l| Some((l.header.index, link_name(l)?))).collect();
    let mut out = Netns { forwarding, ipv6: Some(sysctls.ipv6), ..Netns::default() };
    out.links = links
        .iter()
        .filter_map(|l| Some((names.get(&l.header.index)?.clone(), link_of(l, &names))))
        .collect();
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

/// Every link, without counters (a third of what the kernel would fill in for each), and
/// with only the attributes the planner reads decoded.
fn links(socket: &Socket) -> io::Result<Vec<LinkMessage>> {
    let mut request = LinkMessage::default();
    request.attributes.push(LinkAttribute::ExtMask(vec![LinkExtentMask::SkipStats]));
    let mut out = Vec::new();
    dump_raw(socket, RouteNetlinkMessage::GetLink(request), |kind, payload| {
        if kind == RTM_NEWLINK {
            out.push(link_message(payload)?);
        }
        Ok(())
    })?;
    Ok(out)
}

fn link_message(payload: &[u8]) -> io::Result<LinkMessage> {
    let header = LinkHeader::parse(payload).map_err(io::Error::other)?;
    let attrs = payload.get(LINK_HEADER_LEN..).unwrap_or_default();
    let loopback = header.flags.contains(LinkFlags::Loopback);
    let mut attributes = Vec::new();
    for nla in NlasIterator::new(attrs) {
        let nla = nla.map_err(io::Error::other)?;
        if KEPT.contains(&nla.kind()) {
            attributes.push(
                LinkAttribute::parse_with_param(&nla, header.interface_family).map_err(io::Error::other)?,
            );
        } else if nla.kind() == IFLA_AF_SPEC {
            attributes.push(LinkAttribute::AfSpecUnspec(af_spec(&nla, loopback)?));
        }
    }
    let mut link = LinkMessage::default();
    (link.header, link.attributes) = (header, attributes);
    Ok(link)
}

/// A link's IPv4 settings, and its IPv6 ones only for `lo` (which carries the namespace's
/// switches): the IPv6 part is most of a link's message.
fn af_spec(nla: &NlaBuffer<&[u8]>, loopback: bool) -> io::Result<Vec<AfSpecUnspec>> {
    let mut out = Vec::new();
    for family in NlasIterator::new(nla.value()) {
        let family = family.map_err(io::Error::other)?;
        let inner = NlasIterator::new(family.value());
        match family.kind() {
            AF_INET => out.push(AfSpecUnspec::Inet(
                inner.map(|i| AfSpecInet::parse(&i?)).collect::<Result<_, _>>().map_err(io::Error::other)?,
            )),
            AF_INET6 if loopback => out.push(AfSpecUnspec::Inet6(
                inner.map(|i| AfSpecInet6::parse(&i?)).collect::<Result<_, _>>().map_err(io::Error::other)?,
            )),
            _ => {}
        }
    }
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

fn sysctls_of(links: &[LinkMessage]) -> Sysctls {
    let Some(lo) = links.iter().find(|l| l.header.flags.contains(LinkFlags::Loopback)) else {
        return Sysctls::default();
    };
    let (v4, v6) = devconf(lo);
    Sysctls {
        ipv4_forwarding: v4.is_some_and(|c| c.forwarding != 0),
        ipv6: v6.is_some_and(|c| c.disable_ipv6 == 0),
        ipv6_forwarding: v6.is_some_and(|c| c.forwarding != 0),
    }
}

/// A link's IPv4 and IPv6 settings, as its dump carries them (none for a family the kernel
/// keeps none of for it).
fn devconf(l: &LinkMessage) -> (Option<&InetDevConf>, Option<&Inet6DevConf>) {
    let (mut v4, mut v6) = (None, None);
    for attr in &l.attributes {
        let LinkAttribute::AfSpecUnspec(specs) = attr else { continue };
        for spec in specs {
            match spec {
                AfSpecUnspec::Inet(inet) => {
                    v4 =
                        inet.iter().find_map(|i| if let AfSpecInet::DevConf(c) = i { Some(c) } else { None });
                }
                AfSpecUnspec::Inet6(inet6) => {
                    v6 = inet6
                        .iter()
                        .find_map(|i| if let AfSpecInet6::DevConf(c) = i { Some(c) } else { None });
                }
                _ => {}
            }
        }
    }
    (v4, v6)
}

/// A link as the planner compares it: kind, master, up, and whether it is vpcsh's.
fn link_of(l: &LinkMessage, names: &HashMap<u32, String>) -> Link {
    let mut group = 0;
    let mut master = None;
    let (mut mtu, mut mac, mut learning) = (None, None, None);
    let mut kind = if l.header.flags.contains(LinkFlags::Loopback) {
        LinkKind::Loopback
    } else {
        LinkKind::Other(String::new())
    };
    for attr in &l.attributes {
        match attr {
            LinkAttribute::Group(g) => group = *g,
            LinkAttribute::Controller(i) => master = names.get(i).cloned(),
            LinkAttribute::Mtu(m) => mtu = Some(*m),
            LinkAttribute::Address(a) => mac = <Mac>::try_from(a.as_slice()).ok(),
            LinkAttribute::LinkInfo(infos) => {
                for info in infos {
                    match info {
                        LinkInfo::Kind(k) => {
                            kind = match k {
                                InfoKind::Bridge => LinkKind::Bridge,
                                InfoKind::Veth => LinkKind::VethPeer,
                                InfoKind::Vxlan => overlay::vxlan_kind(infos),
                                other => LinkKind::Other(other.to_string()),
                            };
                        }
                        LinkInfo::PortData(port) => learning = overlay::port_learning(port),
                        _ => {}
                    }
                }
            }
            _ => {}
        }
    }
    let up = l.header.flags.contains(LinkFlags::Up);
    let route_localnet = devconf(l).0.is_some_and(|c| c.route_localnet != 0);
    Link {
        kind,
        master,
        up,
        owner: Owner::Unclaimed,
        ours: group == LINK_GROUP,
        route_localnet,
        impairment: None,
        mtu,
        mac,
        learning,
    }
}

/// Whether a link's root queue (as its dump names it) is one an impairment makes.
fn impaired_queue(l: &LinkMessage) -> bool {
    l.attributes.iter().any(|a| matches!(a, LinkAttribute::Qdisc(kind) if qdisc::is_impairment(kind)))
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

#[cfg(test)]
mod tests {
    use super::*;
    use rtnetlink::packet_core::Emitable;

    /// A link message decoded in part keeps every attribute the planner reads.
    #[test]
    fn partial_decoding_keeps_what_the_planner_reads() {
        let mut whole = rtnetlink::LinkBridge::new("br-x").mtu(1400).address(vec![2, 0, 0, 0, 0, 1]).build();
        whole.attributes.push(LinkAttribute::Group(crate::plan::kernel::LINK_GROUP));
        whole.attributes.push(LinkAttribute::Controller(7));
        whole.attributes.push(LinkAttribute::TxQueueLen(1000));
        let mut bytes = vec![0; whole.buffer_len()];
        whole.emit(&mut bytes);
        let part = link_message(&bytes).unwrap();
        let kept: Vec<_> =
            whole.attributes.iter().filter(|a| !matches!(a, LinkAttribute::TxQueueLen(_))).collect();
        assert_eq!(part.attributes.iter().collect::<Vec<_>>(), kept);
        assert_eq!(part.header, whole.header);
    }

    /// Of a link's settings, the IPv4 ones are kept for every link and the IPv6 ones for
    /// `lo` only: what `link_of` and `sysctls_of` read comes through either way.
    #[test]
    fn ipv6_settings_are_decoded_for_loopback_only() {
        let (mut v4, mut v6) = (InetDevConf::default(), Inet6DevConf::default());
        (v4.route_localnet, v4.forwarding, v6.forwarding) = (1, 1, 1);
        let spec = vec![
            AfSpecUnspec::Inet(vec![AfSpecInet::DevConf(v4)]),
            AfSpecUnspec::Inet6(vec![AfSpecInet6::DevConf(v6)]),
        ];
        let decoded = |flags: LinkFlags| {
            let mut link = LinkMessage::default();
            link.header.flags = flags;
            link.attributes.push(LinkAttribute::AfSpecUnspec(spec.clone()));
            let mut bytes = vec![0; link.buffer_len()];
            link.emit(&mut bytes);
            link_message(&bytes).unwrap()
        };
        let veth = decoded(LinkFlags::Up);
        assert_eq!(devconf(&veth), (Some(&v4), None));
        assert!(link_of(&veth, &HashMap::new()).route_localnet);
        let lo = decoded(LinkFlags::Up | LinkFlags::Loopback);
        assert_eq!(devconf(&lo), (Some(&v4), Some(&v6)));
        let switches = sysctls_of(&[lo]);
        assert!(switches.ipv4_forwarding && switches.ipv6 && switches.ipv6_forwarding);
    }
}
