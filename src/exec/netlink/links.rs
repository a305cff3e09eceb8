//! A link dump's messages decoded straight into what the planner reads of each link: a
//! dozen values out of the kilobyte or more of attributes the kernel fills in for every
//! link (statistics, every IPv6 setting, every bridge option), with nothing else built.

use std::io;
use std::net::Ipv4Addr;

use netlink_packet_route::link::{Inet6DevConf, InetDevConf};

use super::super::nla::{attributes, text};
use crate::plan::kernel::Mac;

/// `struct ifinfomsg`: family, type, index, flags, change.
const HEADER_LEN: usize = 16;
const IFF_UP: u32 = 1;
const IFF_LOOPBACK: u32 = 1 << 3;

const IFLA_ADDRESS: u16 = 1;
const IFLA_IFNAME: u16 = 3;
const IFLA_MTU: u16 = 4;
const IFLA_QDISC: u16 = 6;
const IFLA_MASTER: u16 = 10;
const IFLA_LINKINFO: u16 = 18;
const IFLA_AF_SPEC: u16 = 26;
const IFLA_GROUP: u16 = 27;

const IFLA_INFO_KIND: u16 = 1;
const IFLA_INFO_DATA: u16 = 2;
const IFLA_INFO_SLAVE_KIND: u16 = 4;
const IFLA_INFO_SLAVE_DATA: u16 = 5;
const IFLA_VXLAN_ID: u16 = 1;
const IFLA_VXLAN_LOCAL: u16 = 4;
const IFLA_BRPORT_LEARNING: u16 = 8;

const AF_INET: u16 = 2;
const AF_INET6: u16 = 10;
const IFLA_INET_CONF: u16 = 1;
const IFLA_INET6_CONF: u16 = 2;
/// The place of `disable_ipv6` among a device's IPv6 settings (`DEVCONF_DISABLE_IPV6`).
const DEVCONF_DISABLE_IPV6: usize = 26;

/// What the planner reads of one link.
#[derive(Debug, Default, PartialEq)]
pub(super) struct SeenLink {
    pub index: u32,
    pub up: bool,
    pub loopback: bool,
    pub name: Option<String>,
    pub mtu: Option<u32>,
    pub mac: Option<Mac>,
    /// The index of the bridge it is a port of.
    pub master: Option<u32>,
    pub group: u32,
    /// The kind of its root queue.
    pub qdisc: Option<String>,
    /// Its kind (`bridge`, `veth`, `vxlan`, ...); none for `lo` and physical devices.
    pub kind: Option<String>,
    /// A VXLAN device's segment and source address.
    pub vxlan: Option<(u32, Ipv4Addr)>,
    /// Whether it learns source MACs, for a bridge port.
    pub learning: Option<bool>,
    pub ipv4: Option<InetDevConf>,
    /// Read for `lo` only, which carries the namespace's IPv6 switches: the IPv6 settings
    /// are the largest part of every link's message.
    pub ipv6: Option<Inet6DevConf>,
    /// Whether IPv6 is on for it. The kernel keeps no IPv6 address or gateway route on a
    /// device where it is off, or that has no IPv6 settings at all.
    pub ipv6_on: bool,
}

/// Decodes one `RTM_NEWLINK` message (its payload, after the netlink header).
pub(super) fn decode(payload: &[u8]) -> io::Result<SeenLink> {
    let header = payload.get(..HEADER_LEN).ok_or_else(|| malformed("a link header"))?;
    let flags = u32_at(header, 8);
    let mut link = SeenLink {
        index: u32_at(header, 4),
        up: flags & IFF_UP != 0,
        loopback: flags & IFF_LOOPBACK != 0,
        ..SeenLink::default()
    };
    for attr in attributes(&payload[HEADER_LEN..]) {
        let (kind, value) = attr?;
        match kind {
            IFLA_ADDRESS => link.mac = Mac::try_from(value).ok(),
            IFLA_IFNAME => link.name = Some(text(value)),
            IFLA_MTU => link.mtu = Some(u32_of(value)?),
            IFLA_QDISC => link.qdisc = Some(text(value)),
            IFLA_MASTER => link.master = Some(u32_of(value)?),
            IFLA_GROUP => link.group = u32_of(value)?,
            IFLA_LINKINFO => link_info(value, &mut link)?,
            IFLA_AF_SPEC => af_spec(value, &mut link)?,
            _ => {}
        }
    }
    Ok(link)
}

/// The kind, a VXLAN device's data, and a bridge port's learning switch. Other kinds' data
/// (a bridge's fifty options, a port's thirty) is skipped unread.
fn link_info(value: &[u8], link: &mut SeenLink) -> io::Result<()> {
    let (mut data, mut port) = (None, None);
    let mut port_kind = None;
    for info in attributes(value) {
        match info? {
            (IFLA_INFO_KIND, kind) => link.kind = Some(text(kind)),
            (IFLA_INFO_DATA, value) => data = Some(value),
            (IFLA_INFO_SLAVE_KIND, kind) => port_kind = Some(text(kind)),
            (IFLA_INFO_SLAVE_DATA, value) => port = Some(value),
            _ => {}
        }
    }
    if let (Some("vxlan"), Some(data)) = (link.kind.as_deref(), data) {
        let (mut vni, mut local) = (0, Ipv4Addr::UNSPECIFIED);
        for attr in attributes(data) {
            match attr? {
                (IFLA_VXLAN_ID, id) => vni = u32_of(id)?,
                (IFLA_VXLAN_LOCAL, ip) => local = <[u8; 4]>::try_from(ip).map_or(local, Ipv4Addr::from),
                _ => {}
            }
        }
        link.vxlan = Some((vni, local));
    }
    if let (Some("bridge"), Some(port)) = (port_kind.as_deref(), port) {
        for attr in attributes(port) {
            if let (IFLA_BRPORT_LEARNING, on) = attr? {
                link.learning = on.first().map(|on| *on != 0);
            }
        }
    }
    Ok(())
}

fn af_spec(value: &[u8], link: &mut SeenLink) -> io::Result<()> {
    for family in attributes(value) {
        match family? {
            (AF_INET, settings) => {
                if let Some(conf) = attr_of(settings, IFLA_INET_CONF)? {
                    link.ipv4 = Some(InetDevConf::parse(conf).map_err(io::Error::other)?);
                }
            }
            (AF_INET6, settings) => {
                let conf = attr_of(settings, IFLA_INET6_CONF)?;
                // Settings the kernel did not send, or sent too short, count as on: the
                // namespace is then read whole.
                let disabled = conf.and_then(|c| c.get(DEVCONF_DISABLE_IPV6 * 4..)?.get(..4));
                link.ipv6_on = disabled.is_none_or(|d| u32_at(d, 0) == 0);
                if let (true, Some(conf)) = (link.loopback, conf) {
                    link.ipv6 = Some(Inet6DevConf::parse(conf).map_err(io::Error::other)?);
                }
            }
            _ => {}
        }
    }
    Ok(())
}

/// The value of the attribute of kind `kind` among `bytes`, if there is one.
fn attr_of(bytes: &[u8], kind: u16) -> io::Result<Option<&[u8]>> {
    for attr in attributes(bytes) {
        let (found, value) = attr?;
        if found == kind {
            return Ok(Some(value));
        }
    }
    Ok(None)
}

fn u32_of(value: &[u8]) -> io::Result<u32> {
    value.get(..4).map(|b| u32_at(b, 0)).ok_or_else(|| malformed("a 32-bit attribute"))
}

fn u32_at(bytes: &[u8], at: usize) -> u32 {
    u32::from_ne_bytes(bytes[at..at + 4].try_into().expect("four bytes"))
}

fn malformed(what: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, format!("the kernel sent {what} too short to read"))
}

#[cfg(test)]
mod tests {
    use netlink_packet_route::link::{
        AfSpecInet, AfSpecInet6, AfSpecUnspec, InfoBridge, InfoBridgePort, InfoData, InfoKind, InfoPortData,
        InfoPortKind, InfoVxlan, LinkAttribute, LinkFlags, LinkInfo, LinkMessage,
    };
    use rtnetlink::packet_core::Emitable;

    use super::*;

    /// The bytes the kernel would send for `link`, as the library that writes vpcsh's
    /// requests encodes them.
    fn bytes_of(link: &LinkMessage) -> Vec<u8> {
        let mut bytes = vec![0; link.buffer_len()];
        link.emit(&mut bytes);
        bytes
    }

    fn link(flags: LinkFlags, attributes: Vec<LinkAttribute>) -> LinkMessage {
        let mut link = LinkMessage::default();
        (link.header.index, link.header.flags, link.attributes) = (7, flags, attributes);
        link
    }

    #[test]
    fn a_bridge_keeps_what_the_planner_reads_and_skips_its_options() {
        let bridge = link(
            LinkFlags::Up,
            vec![
                LinkAttribute::IfName("br-x".into()),
                LinkAttribute::Mtu(1400),
                LinkAttribute::Address(vec![2, 0, 0, 0, 0, 1]),
                LinkAttribute::TxQueueLen(1000),
                LinkAttribute::Qdisc("noqueue".into()),
                LinkAttribute::Controller(3),
                LinkAttribute::Group(crate::plan::kernel::LINK_GROUP),
                LinkAttribute::LinkInfo(vec![
                    LinkInfo::Kind(InfoKind::Bridge),
                    LinkInfo::Data(InfoData::Bridge(vec![
                        InfoBridge::ForwardDelay(1500),
                        InfoBridge::Priority(9),
                    ])),
                ]),
            ],
        );
        let seen = decode(&bytes_of(&bridge)).unwrap();
        assert_eq!(
            seen,
            SeenLink {
                index: 7,
                up: true,
                name: Some("br-x".into()),
                mtu: Some(1400),
                mac: Some([2, 0, 0, 0, 0, 1]),
                master: Some(3),
                group: crate::plan::kernel::LINK_GROUP,
                qdisc: Some("noqueue".into()),
                kind: Some("bridge".into()),
                ..SeenLink::default()
            }
        );
    }

    #[test]
    fn a_vxlan_device_keeps_its_segment_and_source() {
        let vxlan = link(
            LinkFlags::empty(),
            vec![LinkAttribute::LinkInfo(vec![
                LinkInfo::Kind(InfoKind::Vxlan),
                LinkInfo::Data(InfoData::Vxlan(vec![
                    InfoVxlan::Port(4789),
                    InfoVxlan::Id(4242),
                    InfoVxlan::Local(Ipv4Addr::new(10, 9, 0, 1)),
                ])),
            ])],
        );
        let seen = decode(&bytes_of(&vxlan)).unwrap();
        assert_eq!(
            (seen.kind.as_deref(), seen.vxlan, seen.up),
            (Some("vxlan"), Some((4242, Ipv4Addr::new(10, 9, 0, 1))), false)
        );
    }

    #[test]
    fn a_bridge_port_keeps_its_learning_switch() {
        let port = |learning| {
            link(
                LinkFlags::Up,
                vec![LinkAttribute::LinkInfo(vec![
                    LinkInfo::Kind(InfoKind::Veth),
                    LinkInfo::PortKind(InfoPortKind::Bridge),
                    LinkInfo::PortData(InfoPortData::BridgePort(vec![
                        InfoBridgePort::Cost(5),
                        InfoBridgePort::Learning(learning),
                    ])),
                ])],
            )
        };
        for learning in [true, false] {
            let seen = decode(&bytes_of(&port(learning))).unwrap();
            assert_eq!((seen.kind.as_deref(), seen.learning), (Some("veth"), Some(learning)));
        }
        let unbridged =
            link(LinkFlags::Up, vec![LinkAttribute::LinkInfo(vec![LinkInfo::Kind(InfoKind::Veth)])]);
        assert_eq!(decode(&bytes_of(&unbridged)).unwrap().learning, None);
    }

    /// IPv4 settings are kept for every link, IPv6 ones for `lo` only; whether IPv6 is on,
    /// for every link.
    #[test]
    fn ipv6_settings_are_decoded_for_loopback_only() {
        let (mut v4, mut v6) = (InetDevConf::default(), Inet6DevConf::default());
        (v4.route_localnet, v4.forwarding, v6.forwarding, v6.disable_ipv6) = (1, 1, 1, 1);
        let spec = |v6| {
            LinkAttribute::AfSpecUnspec(vec![
                AfSpecUnspec::Inet(vec![AfSpecInet::DevConf(v4)]),
                AfSpecUnspec::Inet6(vec![AfSpecInet6::DevConf(v6)]),
            ])
        };
        let veth = decode(&bytes_of(&link(LinkFlags::Up, vec![spec(v6)]))).unwrap();
        assert_eq!((veth.ipv4, veth.ipv6, veth.loopback, veth.ipv6_on), (Some(v4), None, false, false));
        let lo = decode(&bytes_of(&link(LinkFlags::Up | LinkFlags::Loopback, vec![spec(v6)]))).unwrap();
        assert_eq!((lo.ipv4, lo.ipv6, lo.loopback, lo.ipv6_on), (Some(v4), Some(v6), true, false));
        let mut on = v6;
        on.disable_ipv6 = 0;
        assert!(decode(&bytes_of(&link(LinkFlags::Up, vec![spec(on)]))).unwrap().ipv6_on);
    }

    /// A link without IPv6 settings has no IPv6; one whose settings are cut short is
    /// taken to have it, so that its namespace is read whole.
    #[test]
    fn ipv6_is_on_unless_its_settings_say_off() {
        let v4_only = LinkAttribute::AfSpecUnspec(vec![AfSpecUnspec::Inet(vec![AfSpecInet::DevConf(
            InetDevConf::default(),
        )])]);
        assert!(!decode(&bytes_of(&link(LinkFlags::Up, vec![v4_only]))).unwrap().ipv6_on);
        let cut = LinkAttribute::AfSpecUnspec(vec![AfSpecUnspec::Inet6(vec![AfSpecInet6::Token(
            std::net::Ipv6Addr::LOCALHOST,
        )])]);
        assert!(decode(&bytes_of(&link(LinkFlags::Up, vec![cut]))).unwrap().ipv6_on);
    }

    #[test]
    fn a_cut_message_is_an_error_not_a_panic() {
        let bytes = bytes_of(&link(
            LinkFlags::Up,
            vec![LinkAttribute::IfName("eth0".into()), LinkAttribute::Mtu(1500)],
        ));
        for end in 0..bytes.len() {
            let _ = decode(&bytes[..end]);
        }
        assert!(decode(&bytes[..HEADER_LEN - 1]).is_err());
        assert!(decode(&bytes[..bytes.len() - 2]).is_err());
        let mut short_mtu = bytes_of(&link(LinkFlags::Up, vec![LinkAttribute::Mtu(1500)]));
        // The MTU attribute claims two bytes of value.
        short_mtu[HEADER_LEN] = 6;
        short_mtu.truncate(HEADER_LEN + 8);
        assert!(decode(&short_mtu).is_err());
    }
}
