//! The kernel's network state over netlink: sockets opened inside each namespace,
//! namespaces mounted in-process, nftables through its own netlink socket.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::os::fd::{AsRawFd, FromRawFd, IntoRawFd, OwnedFd};

use futures::TryStreamExt;
use ipnetwork::IpNetwork;
use netlink_packet_route::RouteNetlinkMessage;
use netlink_packet_route::address::{AddressAttribute, AddressFlags, AddressMessage};
use netlink_packet_route::link::{InfoData, InfoKind, InfoVeth, LinkAttribute, LinkMessage};
use netlink_packet_route::route::{RouteAttribute, RouteHeader, RouteMessage};
use netlink_packet_route::tc::{TcAttribute, TcHandle, TcMessage};
use netlink_sys::{Socket, TokioSocket, protocols::NETLINK_ROUTE};
use rtnetlink::packet_core::{
    DefaultNla, NLM_F_ACK, NLM_F_CREATE, NLM_F_REPLACE, NLM_F_REQUEST, NetlinkMessage, NetlinkPayload,
};
use rtnetlink::{Handle, LinkBridge, LinkMessageBuilder, LinkUnspec, RouteMessageBuilder};

use super::nft::Nft;
use super::reaper::Doomed;
use super::{OpError, netns, qdisc};
use crate::model::impair::Impairment;

/// The family name of iptables-legacy chains (see `ForeignChain`).
const LEGACY: &str = super::iptables_legacy::FAMILY;
const ENODEV: i32 = nix::errno::Errno::ENODEV as i32;
const EEXIST: i32 = nix::errno::Errno::EEXIST as i32;
const ENOENT: i32 = nix::errno::Errno::ENOENT as i32;
const EINVAL: i32 = nix::errno::Errno::EINVAL as i32;
use crate::plan::Op;
use crate::plan::kernel::LINK_GROUP;
use crate::plan::kernel::{Addr, ForeignChain, KernelState, Mac, Route};
use crate::plan::naming::HOST_NS;

mod links;
mod observe;
mod overlay;

/// A namespace vpcsh is talking to: its fd (to put veth peers into it) and a socket in it.
struct Space {
    fd: OwnedFd,
    handle: Handle,
    /// `None` when this kernel has no nftables; only rules need it.
    nft: Option<Nft>,
    index: HashMap<String, u32>,
    /// Made by this run: every link in it is known, so new links get their index chosen
    /// here (saving a lookup per link); otherwise indexes are looked up by name.
    fresh: bool,
}

impl Space {
    /// The index to request for a new link, when this namespace is fresh.
    fn claim_index(&mut self, name: &str) -> Option<u32> {
        if !self.fresh {
            return None;
        }
        let next = self.index.values().max().map_or(1, |m| m + 1);
        self.index.insert(name.into(), next);
        Some(next)
    }
}

pub(crate) struct Netlink {
    // Fields drop in order: the sockets' handles before the runtime that drives them.
    spaces: HashMap<String, Space>,
    rt: tokio::runtime::Runtime,
    netns_dir_ready: bool,
    /// Namespaces deleted and not yet handed to a reaper.
    deleted: Doomed,
    /// Link indexes by name of namespaces observed but not opened yet.
    known_index: HashMap<String, HashMap<String, u32>>,
    /// A reading started ahead of the next observation (see `prefetch`).
    prefetched: Option<Prefetch>,
}

/// Namespaces being read in the background, and the thread reading them.
struct Prefetch {
    namespaces: BTreeSet<String>,
    reading: std::thread::JoinHandle<Result<BTreeMap<String, observe::Observed>, OpError>>,
}

fn io_err(e: rtnetlink::Error) -> io::Error {
    match e {
        rtnetlink::Error::NetlinkError(m) => m.to_io(),
        other => io::Error::other(other.to_string()),
    }
}

impl Netlink {
    pub(crate) fn new() -> io::Result<Self> {
        let rt = tokio::runtime::Builder::new_current_thread().enable_io().enable_time().build()?;
        Ok(Self {
            rt,
            spaces: HashMap::new(),
            netns_dir_ready: false,
            deleted: Doomed::default(),
            known_index: HashMap::new(),
            prefetched: None,
        })
    }

    /// Wraps a netlink socket opened inside a namespace into an rtnetlink handle.
    fn connect(&self, socket: Socket) -> Handle {
        let _guard = self.rt.enter();
        // SAFETY: the fd comes straight from a socket we own and give up here.
        let socket = unsafe { TokioSocket::from_raw_fd(socket.into_raw_fd()) };
        let (conn, handle, _) = rtnetlink::from_socket(socket);
        self.rt.spawn(conn);
        handle
    }

    fn space(&mut self, ns: &str) -> io::Result<&mut Space> {
        if !self.spaces.contains_key(ns) {
            self.open_spaces(&[ns])?;
        }
        Ok(self.spaces.get_mut(ns).expect("opened above"))
    }

    /// Opens sockets inside those of `namespaces` not open yet, all from one thread.
    fn open_spaces(&mut self, namespaces: &[&str]) -> io::Result<()> {
        let missing: Vec<&str> =
            namespaces.iter().copied().filter(|ns| !self.spaces.contains_key(*ns)).collect();
        if missing.is_empty() {
            return Ok(());
        }
        let fds = missing.iter().map(|ns| netns::open(ns)).collect::<io::Result<Vec<_>>>()?;
        let sockets = netns::run_in_each(&fds, || Ok((Socket::new(NETLINK_ROUTE)?, Nft::open().ok())))?;
        for ((ns, fd), (socket, nft)) in missing.into_iter().zip(fds).zip(sockets) {
            let handle = self.connect(socket);
            let index = self.known_index.remove(ns).unwrap_or_default();
            self.spaces.insert(ns.into(), Space { fd, handle, nft, index, fresh: false });
        }
        Ok(())
    }

    fn index(&mut self, ns: &str, name: &str) -> io::Result<u32> {
        let space = self.space(ns)?;
        if let Some(i) = space.index.get(name) {
            return Ok(*i);
        }
        let handle = space.handle.clone();
        let found = self.rt.block_on(async {
            let mut links = handle.link().get().match_name(name.to_string()).execute();
            links.try_next().await
        });
        let msg = found.map_err(io_err)?.ok_or_else(|| io::Error::from_raw_os_error(ENODEV))?;
        let space = self.space(ns)?;
        space.index.insert(name.into(), msg.header.index);
        Ok(msg.header.index)
    }

    /// Creates namespaces, `(name, forwarding, ipv6)` each, on every core; the result of
    /// each, in order, `None` for those not tried (interrupted).
    pub(crate) fn create_netns_all(&mut self, wanted: &[(&str, bool, bool)]) -> Vec<Option<io::Result<()>>> {
        if !self.netns_dir_ready {
            if let Err(e) = netns::prepare_dir() {
                return wanted.iter().map(|_| Some(Err(io::Error::new(e.kind(), e.to_string())))).collect();
            }
            self.netns_dir_ready = true;
        }
        let switches: HashMap<&str, (bool, bool)> =
            wanted.iter().map(|(ns, f, v6)| (*ns, (*f, *v6))).collect();
        let names: Vec<&str> = wanted.iter().map(|(ns, ..)| *ns).collect();
        self.known_index.retain(|ns, _| !names.contains(&ns.as_str()));
        let threads = std::thread::available_parallelism().map_or(1, |n| n.get()).min(4);
        let made = netns::create_all(
            &names,
            threads,
            |ns| {
                let (forwarding, ipv6) = switches[ns];
                if forwarding {
                    netns::set_forwarding(true, ipv6)?;
                }
                // Before any device but `lo` exists: every later one is made the same way.
                netns::set_ipv6(ipv6)?;
                let socket = Socket::new(NETLINK_ROUTE)?;
                super::plain_netlink::set_lo_up(&socket)?;
                Ok((socket, Nft::open().ok(), netns::open_own()?))
            },
            super::interrupted,
        );
        names
            .iter()
            .zip(made)
            .map(|(ns, made)| {
                let (socket, nft, fd) = match made? {
                    Ok(sockets) => sockets,
                    Err(e) => return Some(Err(e)),
                };
                let handle = self.connect(socket);
                // A fresh namespace has only `lo`, always index 1.
                let index = HashMap::from([("lo".to_string(), 1)]);
                self.spaces.insert((*ns).into(), Space { fd, handle, nft, index, fresh: true });
                Some(Ok(()))
            })
            .collect()
    }

    /// Removes a namespace's name, keeping it open for a reaper (its sockets close here).
    fn delete_netns(&mut self, ns: &str) -> io::Result<()> {
        // Opened before its name goes (after, nothing could reach it); kept only once it has.
        self.known_index.remove(ns);
        let held = self.spaces.remove(ns).map(|space| space.fd);
        let held = held.or_else(|| netns::exists(ns).then(|| netns::open(ns).ok()).flatten());
        netns::remove(ns)?;
        if let Some(fd) = held {
            self.deleted.push(fd);
        }
        Ok(())
    }

    /// Hands the namespaces deleted so far to a reaper.
    pub(crate) fn hand_off_deleted(&mut self) {
        self.deleted.hand_off();
    }

    fn create_veth(
        &mut self,
        ns: &str,
        name: &str,
        master: Option<&str>,
        (peer_ns, peer, peer_master): (&str, &str, Option<&str>),
        (mtu, peer_mac): (Option<u32>, Option<Mac>),
    ) -> io::Result<()> {
        let master = master.map(|m| self.index(ns, m)).transpose()?;
        let peer_master = peer_master.map(|m| self.index(peer_ns, m)).transpose()?;
        let peer_space = self.space(peer_ns)?;
        let peer_fd = peer_space.fd.as_raw_fd();
        let peer_index = peer_space.claim_index(peer);
        let peer_handle = peer_space.handle.clone();
        let mut peer_builder = LinkMessageBuilder::<LinkUnspec>::new()
            .name(peer.to_string())
            .setns_by_fd(peer_fd)
            .link_group(crate::plan::kernel::LINK_GROUP);
        if let Some(i) = peer_index {
            peer_builder = peer_builder.index(i);
        }
        if let Some(mac) = peer_mac {
            peer_builder = peer_builder.address(mac.to_vec());
        }
        if let Some(mtu) = mtu {
            peer_builder = peer_builder.mtu(mtu);
        }
        let mut builder = LinkMessageBuilder::<LinkUnspec>::new_with_info_kind(InfoKind::Veth)
            .name(name.to_string())
            .link_group(crate::plan::kernel::LINK_GROUP)
            .up()
            .set_info_data(InfoData::Veth(InfoVeth::Peer(peer_builder.build())));
        if let Some(mtu) = mtu {
            builder = builder.mtu(mtu);
        }
        if let Some(m) = master {
            builder = builder.controller(m);
        }
        if let Some(i) = self.space(ns)?.claim_index(name) {
            builder = builder.index(i);
        }
        let handle = self.space(ns)?.handle.clone();
        self.rt.block_on(handle.link().add(builder.build()).execute()).map_err(io_err)?;
        // The kernel cannot bring the peer up (it is not paired yet) nor enslave it while
        // creating it: one more request, addressed by name so no lookup is needed.
        let mut up = LinkUnspec::new_with_name(peer).up();
        if let Some(m) = peer_master {
            up = up.controller(m);
        }
        self.rt.block_on(peer_handle.link().set(up.build()).execute()).map_err(io_err)
    }

    fn apply_op(&mut self, op: &Op) -> io::Result<()> {
        match op {
            Op::CreateNetns { ns, forwarding, ipv6 } => self
                .create_netns_all(&[(ns, *forwarding, *ipv6)])
                .pop()
                .flatten()
                .unwrap_or_else(|| Err(io::Error::from_raw_os_error(nix::errno::Errno::EINTR as i32))),
            Op::SetIpv6 { ns, on } => {
                let on = *on;
                // IPv6 turned on routes as IPv4 does in this namespace.
                netns::run_in(&self.space(ns)?.fd, move || {
                    netns::set_ipv6(on)?;
                    if on { netns::set_forwarding(netns::forwards_ipv4()?, true) } else { Ok(()) }
                })
            }
            Op::DeleteNetns { ns } => self.delete_netns(ns),
            Op::SetForwarding { ns, on } => {
                let (on, v6) = (*on, with_ipv6(ns));
                netns::run_in(&self.space(ns)?.fd, move || netns::set_forwarding(on, v6))
            }
            Op::CreateBridge { ns, name, mac } => self.create_bridge(ns, name, *mac),
            Op::CreateVxlan { ns, name, vni, local, underlay_ns, master, mtu, evpn } => {
                self.create_vxlan(ns, name, (*vni, *local, underlay_ns), (master.as_deref(), *mtu, *evpn))
            }
            Op::AddPortMac { ns, entry } => self.set_port_mac(ns, entry, true),
            Op::SetLearning { ns, name, on } => self.set_learning(ns, name, *on),
            Op::DelPortMac { ns, entry } => self.set_port_mac(ns, entry, false),
            Op::AddNeighbour { ns, neighbour } => self.set_neighbour(ns, neighbour, true),
            Op::DelNeighbour { ns, neighbour } => self.set_neighbour(ns, neighbour, false),
            Op::AddFlood { ns, flood } => self.set_flood(ns, flood, true),
            Op::DelFlood { ns, flood } => self.set_flood(ns, flood, false),
            Op::CreateVeth { ns, name, master, peer_ns, peer, mtu, peer_mac, peer_master } => {
                let peer_side = (peer_ns.as_str(), peer.as_str(), peer_master.as_deref());
                self.create_veth(ns, name, master.as_deref(), peer_side, (*mtu, *peer_mac))
            }
            Op::SetLink { ns, name, up, master } => self.set_link(ns, name, *up, master.as_deref()),
            Op::DeleteLink { ns, name } => self.delete_link(ns, name),
            Op::SetRouteLocalnet { ns, name, on } => {
                let path = format!("net/ipv4/conf/{name}/route_localnet");
                let value = if *on { "1" } else { "0" };
                netns::run_in(&self.space(ns)?.fd, move || super::sysctl::write(&path, value))
            }
            Op::SetImpairment { ns, name, impairment } => self.set_impairment(ns, name, impairment.as_ref()),
            Op::AddAddr { ns, addr } => {
                let index = self.index(ns, &addr.dev)?;
                let handle = self.space(ns)?.handle.clone();
                let mut req = handle.address().add(index, addr.net.ip(), addr.net.prefix());
                if addr.net.is_ipv6() {
                    // Static addresses on links vpcsh alone numbers: usable at once, not after
                    // a second of duplicate address detection.
                    req.message_mut().attributes.push(AddressAttribute::Flags(AddressFlags::Nodad));
                }
                self.rt.block_on(req.execute()).map_err(io_err)
            }
            Op::DelAddr { ns, addr } => self.delete_addr(ns, addr),
            Op::AddRoute { ns, route } | Op::ReplaceRoute { ns, route } => {
                let handle = self.space(ns)?.handle.clone();
                let mut req = handle.route().add(route_message(route));
                if matches!(op, Op::ReplaceRoute { .. }) {
                    req = req.replace();
                }
                self.rt.block_on(req.execute()).map_err(io_err)
            }
            Op::DelRoute { ns, route } => {
                let handle = self.space(ns)?.handle.clone();
                self.rt.block_on(handle.route().del(route_message(route)).execute()).map_err(io_err)
            }
            // Processes are the supervisor's (see `System`).
            Op::StartProcess { .. } | Op::StopProcess { .. } | Op::ReplaceProcess { .. } => {
                Err(io::Error::from(io::ErrorKind::Unsupported))
            }
            Op::SetRuleset { ns, ruleset, .. } => nft(self.space(ns)?)?.replace(ruleset),
            Op::DeleteRuleset { ns } => nft(self.space(ns)?)?.delete(),
            Op::OpenHostFirewall { ns, chain } if chain.family == LEGACY => {
                netns::run_in(&self.space(ns)?.fd, super::iptables_legacy::open)
            }
            Op::CloseHostFirewall { ns, chain } if chain.family == LEGACY => {
                netns::run_in(&self.space(ns)?.fd, super::iptables_legacy::close)
            }
            Op::OpenHostFirewall { ns, chain } => nft(self.space(ns)?)?.open_foreign(chain),
            Op::CloseHostFirewall { ns, chain } => nft(self.space(ns)?)?.close_foreign(chain),
        }
    }

    /// A netem queue as the link's root queue, or the default queue back (`None`).
    fn set_impairment(&mut self, ns: &str, name: &str, impairment: Option<&Impairment>) -> io::Result<()> {
        let index = i32::try_from(self.index(ns, name)?).map_err(io::Error::other)?;
        let mut message = TcMessage::with_index(index);
        message.header.parent = TcHandle::ROOT;
        let (request, flags) = match impairment {
            Some(i) => {
                let (kind, options) = qdisc::queue(i);
                message.attributes.push(TcAttribute::Kind(kind.into()));
                message.attributes.push(TcAttribute::Other(DefaultNla::new(qdisc::TCA_OPTIONS, options)));
                (RouteNetlinkMessage::NewQueueDiscipline(message), NLM_F_CREATE | NLM_F_REPLACE)
            }
            None => (RouteNetlinkMessage::DelQueueDiscipline(message), 0),
        };
        match self.request_acked(ns, request, flags) {
            // Deleting a default queue: there was nothing to take away.
            Err(e) if impairment.is_none() && matches!(e.raw_os_error(), Some(ENOENT | EINVAL)) => Ok(()),
            Err(e) if e.raw_os_error() == Some(ENOENT) => Err(io::Error::new(
                io::ErrorKind::Unsupported,
                "this kernel has no netem queue (CONFIG_NET_SCH_NETEM, module sch_netem): delay, jitter, \
                 loss, duplicate and reorder need it; a `rate` alone uses tbf",
            )),
            other => other,
        }
    }

    /// One request that rtnetlink has no builder for, and its acknowledgement.
    fn request_acked(&mut self, ns: &str, payload: RouteNetlinkMessage, flags: u16) -> io::Result<()> {
        let mut handle = self.space(ns)?.handle.clone();
        let mut req = NetlinkMessage::from(payload);
        req.header.flags = NLM_F_REQUEST | NLM_F_ACK | flags;
        self.rt.block_on(async {
            let mut replies = handle.request(req).map_err(io_err)?;
            while let Some(reply) = futures::StreamExt::next(&mut replies).await {
                if let NetlinkPayload::Error(e) = reply.payload
                    && e.code.is_some()
                {
                    return Err(e.to_io());
                }
            }
            Ok(())
        })
    }

    fn create_bridge(&mut self, ns: &str, name: &str, mac: Option<Mac>) -> io::Result<()> {
        // A MAC of its own: a bridge without one takes its lowest port's, so a host added
        // later would change the gateway's MAC under the other hosts' ARP caches.
        let mac = mac.map_or_else(|| bridge_mac(ns, name), |m| m.to_vec());
        let mut builder = LinkBridge::new(name).link_group(LINK_GROUP).address(mac).up();
        if let Some(i) = self.space(ns)?.claim_index(name) {
            builder = builder.index(i);
        }
        let msg = builder.build();
        let handle = self.space(ns)?.handle.clone();
        self.rt.block_on(handle.link().add(msg).execute()).map_err(io_err)
    }

    fn set_link(&mut self, ns: &str, name: &str, up: bool, master: Option<&str>) -> io::Result<()> {
        let index = self.index(ns, name)?;
        let mut b = LinkUnspec::new_with_index(index);
        b = if up { b.up() } else { b.down() };
        b = match master {
            Some(m) => b.controller(self.index(ns, m)?),
            None => b.nocontroller(),
        };
        let handle = self.space(ns)?.handle.clone();
        self.rt.block_on(handle.link().set(b.build()).execute()).map_err(io_err)
    }

    fn delete_link(&mut self, ns: &str, name: &str) -> io::Result<()> {
        // Deleting one end of a veth takes the other with it: gone is done.
        let gone = |e: &io::Error| e.raw_os_error() == Some(ENODEV);
        let index = match self.index(ns, name) {
            Err(e) if gone(&e) => return Ok(()),
            other => other?,
        };
        let space = self.space(ns)?;
        space.index.remove(name);
        space.fresh = false;
        let handle = space.handle.clone();
        match self.rt.block_on(handle.link().del(index).execute()).map_err(io_err) {
            Err(e) if gone(&e) => Ok(()),
            other => other,
        }
    }

    fn delete_addr(&mut self, ns: &str, addr: &Addr) -> io::Result<()> {
        let index = self.index(ns, &addr.dev)?;
        let handle = self.space(ns)?.handle.clone();
        self.rt.block_on(async {
            let mut msgs = handle.address().get().set_link_index_filter(index).execute();
            while let Some(msg) = msgs.try_next().await.map_err(io_err)? {
                if address_of(&msg) == Some(addr.net.ip()) && msg.header.prefix_len == addr.net.prefix() {
                    return handle.address().del(msg).execute().await.map_err(io_err);
                }
            }
            Ok(())
        })
    }

    /// For a create that found its name taken: what holds it, and whether vpcsh made it.
    fn existing(&mut self, op: &Op) -> Option<String> {
        let names: Vec<(&str, &str)> = match op {
            Op::CreateNetns { ns, .. } => {
                return Some(format!("/run/netns/{ns} exists, and vpcsh's state does not record it"));
            }
            Op::CreateBridge { ns, name, .. } | Op::CreateVxlan { ns, name, .. } => {
                vec![(ns.as_str(), name.as_str())]
            }
            Op::CreateVeth { ns, name, peer_ns, peer, .. } => {
                vec![(ns.as_str(), name.as_str()), (peer_ns.as_str(), peer.as_str())]
            }
            _ => return None,
        };
        for (ns, name) in names {
            let handle = self.space(ns).ok()?.handle.clone();
            let found: Vec<LinkMessage> = self
                .rt
                .block_on(handle.link().get().match_name(name.to_string()).execute().try_collect())
                .ok()?;
            if let Some(link) = found.first() {
                let ours =
                    link.attributes.iter().any(|a| matches!(a, LinkAttribute::Group(g) if *g == LINK_GROUP));
                let whose = if ours { "it is vpcsh's" } else { "vpcsh did not make it" };
                return Some(format!("link {name} already exists in {ns}, and {whose}"));
            }
        }
        None
    }

    fn route_dev(&mut self, ns: &str) -> io::Result<Option<String>> {
        let handle = self.space(ns)?.handle.clone();
        let routes: Vec<RouteMessage> = self
            .rt
            .block_on(
                handle.route().get(RouteMessageBuilder::<Ipv4Addr>::new().build()).execute().try_collect(),
            )
            .map_err(io_err)?;
        let oif = routes
            .iter()
            .filter(|r| {
                r.header.table == RouteHeader::RT_TABLE_MAIN && r.header.destination_prefix_length == 0
            })
            .find_map(|r| {
                r.attributes.iter().find_map(|a| match a {
                    RouteAttribute::Oif(i) => Some(*i),
                    _ => None,
                })
            });
        let Some(oif) = oif else { return Ok(None) };
        let links: Vec<LinkMessage> =
            self.rt.block_on(handle.link().get().match_index(oif).execute().try_collect()).map_err(io_err)?;
        Ok(links.first().and_then(link_name))
    }
}

/// A locally administered unicast MAC, the same for the same bridge in the same namespace.
fn bridge_mac(ns: &str, name: &str) -> Vec<u8> {
    let hash = crate::model::fnv::fnv1a(format!("{ns}/{name}").as_bytes());
    let mut mac = hash.to_be_bytes()[2..].to_vec();
    mac[0] = (mac[0] & 0xfc) | 0x02;
    mac
}

/// The address of an address message: IFA_LOCAL for IPv4, IFA_ADDRESS for IPv6 (which
/// has no local/peer distinction).
fn address_of(a: &AddressMessage) -> Option<IpAddr> {
    let local = a.attributes.iter().find_map(|attr| match attr {
        AddressAttribute::Local(ip) => Some(*ip),
        _ => None,
    });
    local.or_else(|| {
        a.attributes.iter().find_map(|attr| match attr {
            AddressAttribute::Address(ip) => Some(*ip),
            _ => None,
        })
    })
}

/// Whether vpcsh manages IPv6 forwarding in `ns`: everywhere but the real host.
fn with_ipv6(ns: &str) -> bool {
    ns != HOST_NS
}

fn nft(space: &mut Space) -> io::Result<&mut Nft> {
    space.nft.as_mut().ok_or_else(|| {
        io::Error::new(
            io::ErrorKind::Unsupported,
            "this kernel has no nftables (nf_tables, nfnetlink modules)",
        )
    })
}

fn link_name(l: &LinkMessage) -> Option<String> {
    l.attributes.iter().find_map(|a| match a {
        LinkAttribute::IfName(n) => Some(n.clone()),
        _ => None,
    })
}

fn route_message(route: &Route) -> RouteMessage {
    match (route.dst, route.via) {
        (IpNetwork::V6(dst), IpAddr::V6(via)) => RouteMessageBuilder::<Ipv6Addr>::new()
            .destination_prefix(dst.ip(), dst.prefix())
            .gateway(via)
            .build(),
        (dst, via) => {
            let dst = match dst {
                IpNetwork::V4(n) => (n.ip(), n.prefix()),
                IpNetwork::V6(_) => (Ipv4Addr::UNSPECIFIED, 0),
            };
            let mut b = RouteMessageBuilder::<Ipv4Addr>::new().destination_prefix(dst.0, dst.1);
            if let IpAddr::V4(via) = via {
                b = b.gateway(via);
            }
            b.build()
        }
    }
}

impl Netlink {
    /// The network state of those of `namespaces` that exist (no processes: see `System`).
    /// What is learnt of each link's index is kept for the applies that may follow.
    pub(crate) fn observe(&mut self, namespaces: &BTreeSet<String>) -> Result<KernelState, OpError> {
        let seen = match self.prefetched.take() {
            Some(ahead) => {
                let mut seen = ahead.reading.join().map_err(|_| {
                    OpError::new("reading namespaces", &io::Error::other("a reader panicked"))
                })??;
                seen.retain(|ns, _| namespaces.contains(ns));
                let rest: Vec<&String> = namespaces.difference(&ahead.namespaces).collect();
                seen.extend(observe::observe_all(&rest)?);
                seen
            }
            None => observe::observe_all(&namespaces.iter().collect::<Vec<_>>())?,
        };
        self.spaces.retain(|ns, _| !namespaces.contains(ns) || seen.contains_key(ns));
        // Only what this observation saw: a namespace made again since has other indexes.
        self.known_index.clear();
        let mut state = KernelState::default();
        for (ns, seen) in seen {
            match self.spaces.get_mut(&ns) {
                Some(space) => space.index = seen.index,
                None => _ = self.known_index.insert(ns.clone(), seen.index),
            }
            state.namespaces.insert(ns, seen.netns);
        }
        Ok(state)
    }

    /// Starts reading `namespaces` on a thread of its own, holding `hold` meanwhile, for the
    /// next `observe` to use: the reading overlaps whatever the caller does until then.
    pub(crate) fn prefetch(&mut self, namespaces: &BTreeSet<String>, hold: impl Send + 'static) {
        let names = namespaces.clone();
        let reading = std::thread::spawn(move || {
            let _held = hold;
            observe::observe_all(&names.iter().collect::<Vec<_>>())
        });
        self.prefetched = Some(Prefetch { namespaces: namespaces.clone(), reading });
    }

    pub(crate) fn apply(&mut self, op: &Op) -> Result<(), OpError> {
        self.apply_op(op).map_err(|e| self.op_error(op, &e))
    }

    /// What failed, and for a name already taken, what holds it.
    pub(crate) fn op_error(&mut self, op: &Op, e: &io::Error) -> OpError {
        let mut err = OpError::new(op.to_string(), e);
        if e.raw_os_error() == Some(EEXIST)
            && let Some(whose) = self.existing(op)
        {
            err.cause.message = format!("{}: {whose}", err.cause.message);
        }
        err
    }

    /// Other tools' dropping forward chains in `ns`, each with whether vpcsh's rules are in.
    pub(crate) fn host_firewall(&mut self, ns: &str) -> Result<BTreeMap<ForeignChain, bool>, OpError> {
        let failed = |e: io::Error| OpError::new(format!("reading the host firewall in {ns}"), &e);
        let space = self.space(ns).map_err(failed)?;
        let mut found = match &mut space.nft {
            Some(nft) => nft.foreign_chains().map_err(failed)?,
            None => BTreeMap::new(),
        };
        let legacy = netns::run_in(&space.fd, super::iptables_legacy::forward_chain).map_err(failed)?;
        found.extend(legacy);
        Ok(found)
    }

    pub(crate) fn counters(&mut self, ns: &str) -> Result<Vec<super::nft::RuleCount>, OpError> {
        let failed = |e: io::Error| OpError::new(format!("reading the rule counters in {ns}"), &e);
        nft(self.space(ns).map_err(failed)?).and_then(Nft::counters).map_err(failed)
    }

    pub(crate) fn default_route_dev(&mut self, ns: &str) -> Result<Option<String>, OpError> {
        self.route_dev(ns).map_err(|e| OpError::new(format!("reading the default route in {ns}"), &e))
    }
}
