//! The fabric's kernel objects over netlink: VXLAN devices whose socket stays in the
//! underlay's namespace, static neighbours for remote hosts, flood entries, pinned port
//! MACs and port learning.

use std::collections::{BTreeSet, HashMap};
use std::io;
use std::net::{IpAddr, Ipv4Addr};
use std::os::fd::AsRawFd;

use netlink_packet_route::link::{InfoBridgePort, InfoPortData, InfoPortKind};
use netlink_packet_route::neighbour::{
    NeighbourAddress, NeighbourAttribute, NeighbourFlags, NeighbourMessage, NeighbourState,
};
use netlink_packet_route::route::RouteType;
use netlink_packet_route::{AddressFamily, RouteNetlinkMessage};
use rtnetlink::packet_core::{NLM_F_APPEND, NLM_F_CREATE, NLM_F_REPLACE};
use rtnetlink::{LinkUnspec, LinkVxlan};

use super::{LINK_GROUP, Mac, Netlink, io_err};
use crate::model::fabric::VXLAN_PORT;
use crate::plan::kernel::{Flood, Neighbour, PortMac};

impl Netlink {
    /// Turns source-MAC learning on or off on one bridge port.
    pub(super) fn set_learning(&mut self, ns: &str, name: &str, on: bool) -> io::Result<()> {
        let index = self.index(ns, name)?;
        let msg = LinkUnspec::new_with_index(index)
            .set_port_kind(InfoPortKind::Bridge)
            .set_port_data(InfoPortData::BridgePort(vec![InfoBridgePort::Learning(on)]))
            .build();
        // Port settings are a change of an existing link (RTM_NEWLINK without CREATE):
        // RTM_SETLINK leaves them alone.
        self.request_acked(ns, RouteNetlinkMessage::NewLink(msg), 0)
    }

    /// Creates a VXLAN device in `ns` from `underlay_ns`: the kernel binds its UDP socket
    /// in the namespace the request comes from, and puts the device where it is sent.
    pub(super) fn create_vxlan(
        &mut self,
        ns: &str,
        name: &str,
        (vni, local, underlay_ns): (u32, Ipv4Addr, &str),
        (master, mtu, evpn): (Option<&str>, Option<u32>, bool),
    ) -> io::Result<()> {
        let master = master.map(|m| self.index(ns, m)).transpose()?;
        let space = self.space(ns)?;
        let fd = space.fd.as_raw_fd();
        let index = space.claim_index(name);
        let mut builder = LinkVxlan::new(name, vni)
            .port(VXLAN_PORT)
            .local(local)
            // With EVPN, FRR installs what other nodes have; nothing is learned from traffic.
            .learning(!evpn)
            .link_group(LINK_GROUP)
            .setns_by_fd(fd)
            .up();
        if let Some(m) = master {
            builder = builder.controller(m);
        }
        if let Some(mtu) = mtu {
            builder = builder.mtu(mtu);
        }
        if let Some(i) = index {
            builder = builder.index(i);
        }
        let handle = self.space(underlay_ns)?.handle.clone();
        self.rt.block_on(handle.link().add(builder.build()).execute()).map_err(io_err)
    }

    /// Adds (or replaces) or deletes a permanent neighbour entry.
    pub(super) fn set_neighbour(&mut self, ns: &str, n: &Neighbour, add: bool) -> io::Result<()> {
        let family = if n.ip.is_ipv4() { AddressFamily::Inet } else { AddressFamily::Inet6 };
        let entry = Entry { family, state: NeighbourState::Permanent, flags: NeighbourFlags::empty() };
        let attributes = vec![
            NeighbourAttribute::Destination(address(n.ip)),
            NeighbourAttribute::LinkLayerAddress(n.mac.to_vec()),
        ];
        self.set_entry(ns, &n.dev, (entry, attributes), add, NLM_F_REPLACE)
    }

    /// Adds or deletes an all-zeros entry of a VXLAN device towards one remote endpoint;
    /// entries for the same (zero) MAC are appended, one per endpoint.
    pub(super) fn set_flood(&mut self, ns: &str, f: &Flood, add: bool) -> io::Result<()> {
        let entry = Entry {
            family: AddressFamily::Bridge,
            state: NeighbourState::Permanent,
            flags: NeighbourFlags::Own,
        };
        let attributes = vec![
            NeighbourAttribute::LinkLayerAddress(vec![0; 6]),
            NeighbourAttribute::Destination(NeighbourAddress::Inet(f.dst)),
        ];
        self.set_entry(ns, &f.dev, (entry, attributes), add, NLM_F_APPEND)
    }

    /// Adds or deletes a static entry of a bridge's forwarding table on one of its ports.
    pub(super) fn set_port_mac(&mut self, ns: &str, e: &PortMac, add: bool) -> io::Result<()> {
        let entry = Entry {
            family: AddressFamily::Bridge,
            state: NeighbourState::Noarp,
            flags: NeighbourFlags::Controller,
        };
        let attributes = vec![NeighbourAttribute::LinkLayerAddress(e.mac.to_vec())];
        self.set_entry(ns, &e.dev, (entry, attributes), add, NLM_F_REPLACE)
    }

    /// Adds (with `mode`: replace or append) or deletes one entry of `dev`'s neighbour or
    /// forwarding table.
    fn set_entry(
        &mut self,
        ns: &str,
        dev: &str,
        (entry, attributes): (Entry, Vec<NeighbourAttribute>),
        add: bool,
        mode: u16,
    ) -> io::Result<()> {
        let mut msg = NeighbourMessage::default();
        msg.header.family = entry.family;
        msg.header.ifindex = self.index(ns, dev)?;
        msg.header.state = entry.state;
        msg.header.flags = entry.flags;
        msg.header.kind = RouteType::Unspec;
        msg.attributes = attributes;
        if add {
            self.request_acked(ns, RouteNetlinkMessage::NewNeighbour(msg), NLM_F_CREATE | mode)
        } else {
            self.request_acked(ns, RouteNetlinkMessage::DelNeighbour(msg), 0)
        }
    }
}

/// The permanent neighbours on vpcsh's links, the flood entries of VXLAN devices and the
/// bridges' pinned MACs, among a namespace's neighbour and bridge forwarding entries.
pub(super) fn entries_of(all: &[NeighbourMessage], names: &HashMap<u32, String>) -> ForwardingEntries {
    let mut out = ForwardingEntries::default();
    for m in all {
        let Some(dev) = names.get(&m.header.ifindex) else { continue };
        let (dst, lladdr) = parts(m);
        match (m.header.family, dst, lladdr) {
            (AddressFamily::Inet | AddressFamily::Inet6, Some(ip), Some(mac))
                if m.header.state == NeighbourState::Permanent =>
            {
                out.neighbours.insert(Neighbour { dev: dev.clone(), ip, mac });
            }
            (AddressFamily::Bridge, Some(IpAddr::V4(dst)), Some(mac)) if mac == [0; 6] => {
                out.floods.insert(Flood { dev: dev.clone(), dst });
            }
            // The bridge's own static entries: not the port device's (`self`), nor what FRR
            // installs (`extern_learn`).
            (AddressFamily::Bridge, None, Some(mac))
                if m.header.state == NeighbourState::Noarp
                    && !m.header.flags.intersects(NeighbourFlags::Own | NeighbourFlags::ExtLearned) =>
            {
                out.port_macs.insert(PortMac { dev: dev.clone(), mac });
            }
            _ => {}
        }
    }
    out
}

/// What a neighbour or forwarding entry is, besides its addresses.
struct Entry {
    family: AddressFamily,
    state: NeighbourState,
    flags: NeighbourFlags,
}

/// What a namespace's neighbour and bridge tables hold of vpcsh's.
#[derive(Default)]
pub(super) struct ForwardingEntries {
    pub neighbours: BTreeSet<Neighbour>,
    pub floods: BTreeSet<Flood>,
    pub port_macs: BTreeSet<PortMac>,
}

fn address(ip: IpAddr) -> NeighbourAddress {
    match ip {
        IpAddr::V4(v4) => NeighbourAddress::Inet(v4),
        IpAddr::V6(v6) => NeighbourAddress::Inet6(v6),
    }
}

/// An entry's destination and link-layer address.
fn parts(m: &NeighbourMessage) -> (Option<IpAddr>, Option<Mac>) {
    let (mut dst, mut mac) = (None, None);
    for a in &m.attributes {
        match a {
            NeighbourAttribute::Destination(NeighbourAddress::Inet(v4)) => dst = Some(IpAddr::V4(*v4)),
            NeighbourAttribute::Destination(NeighbourAddress::Inet6(v6)) => dst = Some(IpAddr::V6(*v6)),
            // A bridge entry's remote endpoint, which the parser does not know the family of.
            NeighbourAttribute::Destination(NeighbourAddress::Other(b)) => {
                dst = <[u8; 4]>::try_from(b.as_slice()).ok().map(IpAddr::from);
            }
            NeighbourAttribute::LinkLayerAddress(l) => mac = <Mac>::try_from(l.as_slice()).ok(),
            _ => {}
        }
    }
    (dst, mac)
}
