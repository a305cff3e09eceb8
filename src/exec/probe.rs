//! Probes and commands inside a namespace: ICMP echo, TCP connect and a minimal HTTP client
//! on a thread that entered the namespace; commands in a child that entered it. No `ping`,
//! `curl` or `ip netns exec` needed.

use std::io::{self, Read, Write};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6, TcpStream, UdpSocket};
use std::os::fd::AsRawFd;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU16, Ordering};
use std::time::{Duration, Instant};

use nix::sys::socket::{
    AddressFamily, MsgFlags, SockFlag, SockProtocol, SockType, SockaddrIn, SockaddrIn6, SockaddrStorage,
    recvfrom, sendto, setsockopt, socket, sockopt,
};
use nix::sys::time::TimeVal;
use simple_dns::rdata::RData;
use simple_dns::{CLASS, Packet, PacketFlag, QTYPE, TYPE};

use super::{guest, netns};

/// What `exec()` returns.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Output {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

/// How long a probe waits for an answer on a real host (1 s, as the reference documents).
pub(crate) const TIMEOUT: Duration = Duration::from_secs(1);
/// The same in a sandbox, where every answer comes from this machine within a millisecond
/// (a round trip through four namespaces takes about 0.1 ms; 200 ms leaves room for a
/// machine busy with other work, which `tests/integration/workloads.rs` checks under load).
pub(crate) const SANDBOX_TIMEOUT: Duration = Duration::from_millis(200);
/// The same where the model says the flow is blocked: the answer is certain, and an answer
/// that comes anyway (the model wrong) still arrives well within it.
pub(crate) const SANDBOX_BLOCKED_TIMEOUT: Duration = Duration::from_millis(50);

static NEXT_ID: AtomicU16 = AtomicU16::new(0);

/// Up to `count` ICMP echoes from inside `ns` to `to`, each given `timeout`: the round
/// trip of the first that is answered.
pub(crate) fn ping(ns: &str, to: IpAddr, timeout: Duration, count: u32) -> io::Result<Option<Duration>> {
    let fd = netns::open(ns)?;
    netns::run_in(&fd, move || {
        for _ in 0..count.max(1) {
            let sent = Instant::now();
            if echo(to, timeout)? {
                return Ok(Some(sent.elapsed()));
            }
        }
        Ok(None)
    })
}

fn checksum(data: &[u8]) -> u16 {
    let mut sum: u32 =
        data.chunks(2).map(|c| u32::from(u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)]))).sum();
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// One ICMP (or ICMPv6) echo over a raw socket; true when the reply came in time.
fn echo(to: IpAddr, timeout: Duration) -> io::Result<bool> {
    // ICMP echo request and reply types; the kernel fills in an ICMPv6 checksum itself.
    let (family, protocol, request, reply) = match to {
        IpAddr::V4(_) => (AddressFamily::Inet, SockProtocol::Icmp, 8, 0),
        IpAddr::V6(_) => (AddressFamily::Inet6, SockProtocol::IcmpV6, 128, 129),
    };
    let sock = socket(family, SockType::Raw, SockFlag::SOCK_CLOEXEC, protocol)?;
    // Raw sockets see every echo reply in the namespace: a distinct id per probe.
    let id =
        (std::process::id() as u16).wrapping_add(NEXT_ID.fetch_add(1, Ordering::Relaxed).wrapping_mul(7919));
    let mut packet = [request, 0, 0, 0, 0, 0, 0, 1, b'v', b'p', b'c', b's', b'h', 0, 0, 0];
    packet[4..6].copy_from_slice(&id.to_be_bytes());
    if to.is_ipv4() {
        let sum = checksum(&packet);
        packet[2..4].copy_from_slice(&sum.to_be_bytes());
    }
    let deadline = Instant::now() + timeout;
    let sent = match to {
        IpAddr::V4(ip) => {
            sendto(sock.as_raw_fd(), &packet, &SockaddrIn::from(SocketAddrV4::new(ip, 0)), MsgFlags::empty())
        }
        IpAddr::V6(ip) => sendto(
            sock.as_raw_fd(),
            &packet,
            &SockaddrIn6::from(SocketAddrV6::new(ip, 0, 0, 0)),
            MsgFlags::empty(),
        ),
    };
    match sent {
        Ok(_) => {}
        // No route, or a firewall said no at once: not reachable.
        Err(
            nix::errno::Errno::ENETUNREACH
            | nix::errno::Errno::EHOSTUNREACH
            | nix::errno::Errno::EPERM
            | nix::errno::Errno::EADDRNOTAVAIL,
        ) => {
            return Ok(false);
        }
        Err(e) => return Err(e.into()),
    }
    let mut buf = [0u8; 1500];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Ok(false);
        }
        let micros = left.as_micros().max(1000) as i64;
        setsockopt(&sock, sockopt::ReceiveTimeout, &TimeVal::new(micros / 1_000_000, micros % 1_000_000))?;
        let (n, from) = match recvfrom::<SockaddrStorage>(sock.as_raw_fd(), &mut buf) {
            Ok(got) => got,
            Err(nix::errno::Errno::EAGAIN | nix::errno::Errno::EINTR) => continue,
            Err(e) => return Err(e.into()),
        };
        // An IPv4 raw socket hands over the IP header too; an IPv6 one does not.
        let header = if to.is_ipv4() { usize::from(buf[0] & 0x0f) * 4 } else { 0 };
        let icmp = &buf[header.min(n)..n];
        let from_ip = from.and_then(|a| {
            a.as_sockaddr_in()
                .map(|v4| IpAddr::V4(v4.ip()))
                .or_else(|| a.as_sockaddr_in6().map(|v6| IpAddr::V6(v6.ip())))
        });
        if from_ip == Some(to) && icmp.len() >= 8 && icmp[0] == reply && icmp[4..6] == id.to_be_bytes() {
            return Ok(true);
        }
    }
}

/// A TCP connection from inside `ns`; true when it was accepted in time.
pub(crate) fn connect(ns: &str, to: IpAddr, port: u16, timeout: Duration) -> io::Result<bool> {
    let fd = netns::open(ns)?;
    netns::run_in(&fd, move || Ok(TcpStream::connect_timeout(&SocketAddr::from((to, port)), timeout).is_ok()))
}

/// Whether TCP from inside `ns` to `to:port` gets an answer: accepted, or refused by a
/// host where nothing listens (the path is open either way). Silence, or an ICMP error on
/// the way, is blocked.
pub(crate) fn tcp_reaches(ns: &str, to: IpAddr, port: u16, timeout: Duration) -> io::Result<bool> {
    let fd = netns::open(ns)?;
    netns::run_in(&fd, move || match TcpStream::connect_timeout(&SocketAddr::from((to, port)), timeout) {
        Ok(_) => Ok(true),
        Err(e) => Ok(e.kind() == io::ErrorKind::ConnectionRefused),
    })
}

/// `GET path` from inside `ns`: the status and body, or status 0 when nothing answered.
pub(crate) fn http_get(
    ns: &str,
    to: IpAddr,
    port: u16,
    path: &str,
    timeout: Duration,
) -> io::Result<(u16, String)> {
    let fd = netns::open(ns)?;
    let path = path.to_string();
    netns::run_in(&fd, move || {
        let Ok(mut stream) = TcpStream::connect_timeout(&SocketAddr::from((to, port)), timeout) else {
            return Ok((0, String::new()));
        };
        stream.set_read_timeout(Some(timeout))?;
        stream.set_write_timeout(Some(timeout))?;
        let host = if to.is_ipv6() { format!("[{to}]") } else { to.to_string() };
        let request = format!("GET {path} HTTP/1.0\r\nHost: {host}\r\nConnection: close\r\n\r\n");
        if stream.write_all(request.as_bytes()).is_err() {
            return Ok((0, String::new()));
        }
        let mut response = Vec::new();
        if stream.take(1 << 20).read_to_end(&mut response).is_err() && response.is_empty() {
            return Ok((0, String::new()));
        }
        let text = String::from_utf8_lossy(&response);
        let status = text.split_whitespace().nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
        let body = text.split_once("\r\n\r\n").map_or(String::new(), |(_, b)| b.to_string());
        Ok((status, body))
    })
}

/// `name`'s address as the VPC's resolver answers it from inside `ns` (IPv4, else IPv6);
/// `None` when it knows no such name or does not answer within `timeout`.
pub(crate) fn resolve(ns: &str, name: &str, timeout: Duration) -> io::Result<Option<IpAddr>> {
    let fd = netns::open(ns)?;
    let name = name.to_string();
    netns::run_in(&fd, move || {
        let socket = UdpSocket::bind((Ipv4Addr::UNSPECIFIED, 0))?;
        socket.connect((netns::RESOLVER, 53))?;
        for ipv6 in [false, true] {
            let id = NEXT_ID.fetch_add(1, Ordering::Relaxed);
            let Some(ask) = query(id, &name, ipv6) else { return Ok(None) };
            socket.send(&ask)?;
            socket.set_read_timeout(Some(timeout.max(Duration::from_millis(1))))?;
            let mut buf = [0u8; 1500];
            let n = match socket.recv(&mut buf) {
                Ok(n) => n,
                Err(e) if matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut) => {
                    return Ok(None);
                }
                // Nothing listens (no resolver in this VPC): no such name.
                Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => return Ok(None),
                Err(e) => return Err(e),
            };
            if let Some(addr) = first_address(id, &buf[..n]) {
                return Ok(Some(addr));
            }
        }
        Ok(None)
    })
}

/// A query for `name`'s address of one family, as a resolver would send it.
pub(crate) fn query(id: u16, name: &str, ipv6: bool) -> Option<Vec<u8>> {
    let mut packet = Packet::new_query(id);
    packet.set_flags(PacketFlag::RECURSION_DESIRED);
    let qtype = QTYPE::TYPE(if ipv6 { TYPE::AAAA } else { TYPE::A });
    packet.questions.push(simple_dns::Question::new(
        simple_dns::Name::new(name).ok()?,
        qtype,
        CLASS::IN.into(),
        false,
    ));
    packet.build_bytes_vec().ok()
}

/// The first address in a reply to `query(id, ...)`; `None` when there is none.
pub(crate) fn first_address(id: u16, reply: &[u8]) -> Option<IpAddr> {
    let reply = Packet::parse(reply).ok()?;
    if reply.id() != id {
        return None;
    }
    reply.answers.iter().find_map(|rr| match &rr.rdata {
        RData::A(a) => Some(IpAddr::V4(Ipv4Addr::from(a.address))),
        RData::AAAA(a) => Some(IpAddr::V6(Ipv6Addr::from(a.address))),
        _ => None,
    })
}

/// Runs `argv` to completion inside `ns`; killed after `timeout` (code 124, as timeout(1)).
pub(crate) fn exec(ns: &str, argv: &[String], timeout: Duration) -> io::Result<Output> {
    let fd = netns::open(ns)?;
    let mut cmd = Command::new(&argv[0]);
    // A group of its own, so a timeout ends the whole command (a shell's children too).
    cmd.args(&argv[1..]).stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped()).process_group(0);
    guest::enter_on_exec(&mut cmd, fd, ns);
    let mut child = cmd.spawn()?;
    let (mut out, mut err) = (child.stdout.take().expect("piped"), child.stderr.take().expect("piped"));
    let readers = (
        std::thread::spawn(move || {
            let mut s = String::new();
            let _ = out.read_to_string(&mut s);
            s
        }),
        std::thread::spawn(move || {
            let mut s = String::new();
            let _ = err.read_to_string(&mut s);
            s
        }),
    );
    let deadline = Instant::now() + timeout;
    let status = loop {
        if let Some(status) = child.try_wait()? {
            break Some(status);
        }
        if Instant::now() >= deadline || super::interrupted() {
            let group = nix::unistd::Pid::from_raw(-(child.id() as i32));
            let _ = nix::sys::signal::kill(group, nix::sys::signal::Signal::SIGKILL);
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(2));
    };
    let stdout = readers.0.join().unwrap_or_default();
    let mut stderr = readers.1.join().unwrap_or_default();
    let code = match status {
        Some(s) => s.code().unwrap_or_else(|| 128 + s.signal().unwrap_or(0)),
        None => {
            stderr.push_str(&format!("vpcsh: timed out after {:.1} s\n", timeout.as_secs_f64()));
            124
        }
    };
    Ok(Output { code, stdout, stderr })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn icmp_checksum_matches_a_known_packet() {
        // Echo request id 0x1234 seq 1 without payload: checksum 0xe5ca.
        let packet = [8, 0, 0, 0, 0x12, 0x34, 0, 1];
        assert_eq!(checksum(&packet), 0xe5ca);
    }
}
