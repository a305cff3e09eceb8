//! Packet capture inside a namespace: an AF_PACKET socket (no tcpdump), frames written as
//! pcap that Wireshark and tcpdump read, or summed up one line each; a small filter
//! (`tcp`, `udp`, `icmp`, `arp`, `port N`, `host ADDR`, joined by `and`).

use std::io::{self, Write};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use nix::libc;

use super::netns;

/// One condition of a filter; a frame passes when it meets all of them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Match {
    Proto(u8),
    Arp,
    Port(u16),
    Host(IpAddr),
}

const TCP: u8 = 6;
const UDP: u8 = 17;
const ICMP: u8 = 1;
const ICMPV6: u8 = 58;

/// Reads `tcp and port 80 and host 10.0.1.2`.
pub(crate) fn parse_filter(text: &str) -> Result<Vec<Match>, String> {
    let mut out = Vec::new();
    let mut words = text.split_whitespace().filter(|w| *w != "and");
    while let Some(word) = words.next() {
        let matched = match word {
            "tcp" => Match::Proto(TCP),
            "udp" => Match::Proto(UDP),
            "icmp" => Match::Proto(ICMP),
            "icmp6" => Match::Proto(ICMPV6),
            "arp" => Match::Arp,
            "port" => {
                let port = words.next().ok_or("`port` needs a number")?;
                Match::Port(port.parse().map_err(|_| format!("`{port}` is not a port"))?)
            }
            "host" => {
                let addr = words.next().ok_or("`host` needs an address")?;
                Match::Host(addr.parse().map_err(|_| format!("`{addr}` is not an address"))?)
            }
            other => {
                return Err(format!(
                    "`{other}` is not understood: a filter is tcp, udp, icmp, icmp6, arp, port N or host ADDR, joined by `and`"
                ));
            }
        };
        out.push(matched);
    }
    Ok(out)
}

/// What a frame carries, as far as filters and summaries need.
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct Frame {
    pub arp: bool,
    pub src: Option<IpAddr>,
    pub dst: Option<IpAddr>,
    pub proto: Option<u8>,
    pub ports: Option<(u16, u16)>,
    /// ICMP type, for echo requests and replies.
    pub icmp_type: Option<u8>,
}

/// Decodes Ethernet, then IPv4 or IPv6, then the TCP/UDP ports or ICMP type.
pub(crate) fn decode(frame: &[u8]) -> Frame {
    let mut out = Frame::default();
    let Some(ethertype) = frame.get(12..14).map(|b| u16::from_be_bytes([b[0], b[1]])) else { return out };
    let ip = &frame[14..];
    let payload = match ethertype {
        0x0806 => {
            out.arp = true;
            return out;
        }
        0x0800 if ip.len() >= 20 => {
            let header = usize::from(ip[0] & 0x0f) * 4;
            out.src = Some(IpAddr::V4(Ipv4Addr::new(ip[12], ip[13], ip[14], ip[15])));
            out.dst = Some(IpAddr::V4(Ipv4Addr::new(ip[16], ip[17], ip[18], ip[19])));
            out.proto = Some(ip[9]);
            ip.get(header..).unwrap_or_default()
        }
        0x86dd if ip.len() >= 40 => {
            let addr = |at: usize| {
                let bytes: [u8; 16] = ip[at..at + 16].try_into().unwrap_or_default();
                IpAddr::V6(Ipv6Addr::from(bytes))
            };
            out.src = Some(addr(8));
            out.dst = Some(addr(24));
            out.proto = Some(ip[6]);
            &ip[40..]
        }
        _ => return out,
    };
    match out.proto {
        Some(TCP | UDP) if payload.len() >= 4 => {
            let port = |at: usize| u16::from_be_bytes([payload[at], payload[at + 1]]);
            out.ports = Some((port(0), port(2)));
        }
        Some(ICMP | ICMPV6) => out.icmp_type = payload.first().copied(),
        _ => {}
    }
    out
}

pub(crate) fn matches(frame: &Frame, filter: &[Match]) -> bool {
    filter.iter().all(|m| match m {
        Match::Proto(p) => frame.proto == Some(*p),
        Match::Arp => frame.arp,
        Match::Port(p) => frame.ports.is_some_and(|(s, d)| s == *p || d == *p),
        Match::Host(a) => frame.src == Some(*a) || frame.dst == Some(*a),
    })
}

/// One line about a frame, as tcpdump's terse output.
pub(crate) fn summary(frame: &Frame, len: usize) -> String {
    if frame.arp {
        return format!("ARP, length {len}");
    }
    let (Some(src), Some(dst)) = (frame.src, frame.dst) else { return format!("non-IP frame, length {len}") };
    let proto = match (frame.proto, frame.icmp_type) {
        (Some(TCP), _) => "TCP".to_string(),
        (Some(UDP), _) => "UDP".to_string(),
        (Some(ICMP), Some(8)) | (Some(ICMPV6), Some(128)) => "ICMP echo request".to_string(),
        (Some(ICMP), Some(0)) | (Some(ICMPV6), Some(129)) => "ICMP echo reply".to_string(),
        (Some(ICMP | ICMPV6), Some(t)) => format!("ICMP type {t}"),
        (Some(p), _) => format!("protocol {p}"),
        (None, _) => "IP".to_string(),
    };
    match frame.ports {
        Some((sp, dp)) => format!("{} > {}: {proto}, length {len}", join(src, sp), join(dst, dp)),
        None => format!("{src} > {dst}: {proto}, length {len}"),
    }
}

fn join(addr: IpAddr, port: u16) -> String {
    match addr {
        IpAddr::V4(a) => format!("{a}.{port}"),
        IpAddr::V6(a) => format!("[{a}]:{port}"),
    }
}

/// The pcap file header: microsecond timestamps, Ethernet frames.
pub(crate) fn pcap_header(out: &mut impl Write, snaplen: u32) -> io::Result<()> {
    out.write_all(&0xa1b2_c3d4u32.to_le_bytes())?;
    out.write_all(&2u16.to_le_bytes())?;
    out.write_all(&4u16.to_le_bytes())?;
    out.write_all(&[0u8; 8])?;
    out.write_all(&snaplen.to_le_bytes())?;
    out.write_all(&1u32.to_le_bytes())
}

pub(crate) fn pcap_record(out: &mut impl Write, at: SystemTime, data: &[u8], len: usize) -> io::Result<()> {
    let since = at.duration_since(UNIX_EPOCH).unwrap_or_default();
    out.write_all(&(since.as_secs() as u32).to_le_bytes())?;
    out.write_all(&since.subsec_micros().to_le_bytes())?;
    out.write_all(&(data.len() as u32).to_le_bytes())?;
    out.write_all(&(len as u32).to_le_bytes())?;
    out.write_all(data)
}

/// The most of a frame kept (as tcpdump's default).
pub(crate) const SNAPLEN: u32 = 262_144;

/// A packet socket opened inside `ns`, bound to `interface` (or every interface).
pub(crate) fn open(ns: &str, interface: Option<&str>) -> io::Result<OwnedFd> {
    let fd = netns::open(ns)?;
    let interface = interface.map(str::to_string);
    netns::run_in(&fd, move || {
        let protocol = (libc::ETH_P_ALL as u16).to_be();
        // SAFETY: a plain socket call; the fd is owned at once.
        let raw = unsafe {
            libc::socket(libc::AF_PACKET, libc::SOCK_RAW | libc::SOCK_CLOEXEC, i32::from(protocol))
        };
        if raw < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `raw` is a new descriptor nothing else owns.
        let sock = unsafe { OwnedFd::from_raw_fd(raw) };
        if let Some(name) = interface {
            let index = nix::net::if_::if_nametoindex(name.as_str())
                .map_err(|_| io::Error::new(io::ErrorKind::NotFound, format!("no interface {name} there")))?;
            // SAFETY: sockaddr_ll is plain data; zeroed is a valid value.
            let mut addr: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
            addr.sll_family = libc::AF_PACKET as u16;
            addr.sll_protocol = protocol;
            addr.sll_ifindex = index as i32;
            // SAFETY: addr is a live sockaddr_ll of the size passed.
            let bound = unsafe {
                libc::bind(
                    sock.as_raw_fd(),
                    (&addr as *const libc::sockaddr_ll).cast(),
                    std::mem::size_of::<libc::sockaddr_ll>() as libc::socklen_t,
                )
            };
            if bound < 0 {
                return Err(io::Error::last_os_error());
            }
        }
        Ok(sock)
    })
}

/// Waits up to `wait` for a frame: its bytes (up to the buffer) and its length on the wire.
pub(crate) fn next(sock: &OwnedFd, buf: &mut [u8], wait: Duration) -> io::Result<Option<(usize, usize)>> {
    let mut poll = [libc::pollfd { fd: sock.as_raw_fd(), events: libc::POLLIN, revents: 0 }];
    // SAFETY: one live pollfd.
    let ready = unsafe { libc::poll(poll.as_mut_ptr(), 1, wait.as_millis() as i32) };
    if ready < 0 {
        let e = io::Error::last_os_error();
        return if e.kind() == io::ErrorKind::Interrupted { Ok(None) } else { Err(e) };
    }
    if ready == 0 {
        return Ok(None);
    }
    // MSG_TRUNC: the length on the wire even when the buffer holds less.
    // SAFETY: the buffer is live and as long as passed.
    let n = unsafe { libc::recv(sock.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), libc::MSG_TRUNC) };
    if n < 0 {
        let e = io::Error::last_os_error();
        return if e.kind() == io::ErrorKind::Interrupted { Ok(None) } else { Err(e) };
    }
    let len = n as usize;
    Ok(Some((len.min(buf.len()), len)))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An Ethernet frame with an IPv4 ICMP echo request from 10.0.1.3 to 10.0.1.2.
    fn echo() -> Vec<u8> {
        let mut f = vec![0u8; 12];
        f.extend_from_slice(&[0x08, 0x00]);
        f.extend_from_slice(&[0x45, 0, 0, 28, 0, 0, 0, 0, 64, ICMP, 0, 0, 10, 0, 1, 3, 10, 0, 1, 2]);
        f.extend_from_slice(&[8, 0, 0, 0, 0, 1, 0, 1]);
        f
    }

    #[test]
    fn frames_are_decoded_filtered_and_summed_up() {
        let frame = decode(&echo());
        assert_eq!(summary(&frame, 42), "10.0.1.3 > 10.0.1.2: ICMP echo request, length 42");
        assert!(matches(&frame, &parse_filter("icmp and host 10.0.1.2").unwrap()));
        assert!(!matches(&frame, &parse_filter("tcp").unwrap()));
        assert!(!matches(&frame, &parse_filter("port 80").unwrap()));
        assert!(parse_filter("port eighty").unwrap_err().contains("not a port"));
        assert!(parse_filter("udp or tcp").unwrap_err().contains("`or` is not understood"));
    }

    #[test]
    fn pcap_files_start_with_the_classic_header() {
        let mut out = Vec::new();
        pcap_header(&mut out, SNAPLEN).unwrap();
        pcap_record(&mut out, UNIX_EPOCH + Duration::from_micros(1_500_001), &echo(), 42).unwrap();
        assert_eq!(&out[..4], &[0xd4, 0xc3, 0xb2, 0xa1]);
        assert_eq!(out.len(), 24 + 16 + echo().len());
        assert_eq!(u32::from_le_bytes(out[24..28].try_into().unwrap()), 1);
        assert_eq!(u32::from_le_bytes(out[28..32].try_into().unwrap()), 500_001);
        assert_eq!(u32::from_le_bytes(out[36..40].try_into().unwrap()), 42);
    }
}
