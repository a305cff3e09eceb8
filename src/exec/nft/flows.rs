//! The flow log of a firewalled host (`vpcsh __flows`): the first packet of each flow its
//! firewall decides reaches nflog (the rules' `log` expressions); this process reads them
//! over nfnetlink_log and writes one line each to its output, keeping the last lines only.

use std::collections::VecDeque;
use std::io::{self, Write};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use netlink_sys::{Socket, protocols::NETLINK_NETFILTER};

use super::{Msg, NLM_F_ACK, NLM_F_REQUEST, NLMSG_ERROR, attrs, text};
use crate::plan::nft::FLOW_LOG_GROUP;

const NFNL_SUBSYS_ULOG: u16 = 4;
const NFULNL_MSG_PACKET: u16 = 0;
const NFULNL_MSG_CONFIG: u16 = 1;
const NFULA_CFG_CMD: u16 = 1;
const NFULA_CFG_MODE: u16 = 2;
const NFULNL_CFG_CMD_BIND: u8 = 1;
const NFULNL_COPY_PACKET: u8 = 2;
const NFULA_TIMESTAMP: u16 = 3;
const NFULA_PAYLOAD: u16 = 9;
const NFULA_PREFIX: u16 = 10;

/// At most this many lines are kept; past it, the oldest half goes.
const KEEP: usize = 10_000;

/// One logged flow, as a line of the log: `SECONDS.MICROS PREFIX PROTO SRC SPORT DST DPORT`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Flow {
    pub time: String,
    pub prefix: String,
    pub proto: String,
    pub src: IpAddr,
    pub sport: u16,
    pub dst: IpAddr,
    pub dport: u16,
}

impl Flow {
    pub(crate) fn line(&self) -> String {
        format!(
            "{} {} {} {} {} {} {}",
            self.time, self.prefix, self.proto, self.src, self.sport, self.dst, self.dport
        )
    }

    pub(crate) fn parse(line: &str) -> Option<Flow> {
        let w: Vec<&str> = line.split_whitespace().collect();
        let [time, prefix, proto, src, sport, dst, dport] = w.as_slice() else { return None };
        Some(Flow {
            time: time.to_string(),
            prefix: prefix.to_string(),
            proto: proto.to_string(),
            src: src.parse().ok()?,
            sport: sport.parse().ok()?,
            dst: dst.parse().ok()?,
            dport: dport.parse().ok()?,
        })
    }
}

/// The flow a logged packet starts, from the IP packet nflog hands over.
fn flow(prefix: String, time: String, packet: &[u8]) -> Option<Flow> {
    let (src, dst, proto, rest): (IpAddr, IpAddr, u8, &[u8]) = match packet.first()? >> 4 {
        4 if packet.len() >= 20 => {
            let header = usize::from(packet[0] & 0x0f) * 4;
            let addr = |at: usize| {
                IpAddr::V4(Ipv4Addr::new(packet[at], packet[at + 1], packet[at + 2], packet[at + 3]))
            };
            (addr(12), addr(16), packet[9], packet.get(header..).unwrap_or_default())
        }
        6 if packet.len() >= 40 => {
            let addr = |at: usize| {
                IpAddr::V6(Ipv6Addr::from(<[u8; 16]>::try_from(&packet[at..at + 16]).unwrap_or_default()))
            };
            (addr(8), addr(24), packet[6], &packet[40..])
        }
        _ => return None,
    };
    let port = |at: usize| rest.get(at..at + 2).map_or(0, |b| u16::from_be_bytes([b[0], b[1]]));
    let (proto, sport, dport) = match proto {
        6 => ("tcp", port(0), port(2)),
        17 => ("udp", port(0), port(2)),
        1 | 58 => ("icmp", 0, 0),
        _ => ("other", 0, 0),
    };
    Some(Flow { time, prefix, proto: proto.into(), src, sport, dst, dport })
}

/// Binds the flow log's nflog group in the calling thread's namespace.
fn bind() -> io::Result<Socket> {
    let mut socket = Socket::new(NETLINK_NETFILTER)?;
    socket.bind_auto()?;
    let ty = (NFNL_SUBSYS_ULOG << 8) | NFULNL_MSG_CONFIG;
    let mut bind = Msg::new(ty, NLM_F_REQUEST | NLM_F_ACK, 1, 0, FLOW_LOG_GROUP);
    bind.attr(NFULA_CFG_CMD, &[NFULNL_CFG_CMD_BIND]);
    let mut mode = Msg::new(ty, NLM_F_REQUEST | NLM_F_ACK, 2, 0, FLOW_LOG_GROUP);
    // Enough of each packet for its IP and transport headers.
    let mut copy = 128u32.to_be_bytes().to_vec();
    copy.extend_from_slice(&[NFULNL_COPY_PACKET, 0]);
    mode.attr(NFULA_CFG_MODE, &copy);
    for msg in [bind, mode] {
        socket.send(&msg.finish(), 0)?;
        let mut buf = Vec::with_capacity(4096);
        socket.recv(&mut buf, 0)?;
        let ty = buf.get(4..6).map(|b| u16::from_ne_bytes([b[0], b[1]]));
        let code = buf.get(16..20).map_or(0, |b| i32::from_ne_bytes([b[0], b[1], b[2], b[3]]));
        if ty == Some(NLMSG_ERROR) && code != 0 {
            return Err(io::Error::from_raw_os_error(-code));
        }
    }
    Ok(socket)
}

/// `vpcsh __flows`: enters `ns` (this process is still single-threaded) and collects its
/// flow log into stdout, the log file the supervisor gave it.
pub(crate) fn serve(ns: &str) -> io::Result<()> {
    use std::os::fd::AsFd;
    let fd = super::super::netns::open(ns)?;
    nix::sched::setns(&fd, nix::sched::CloneFlags::CLONE_NEWNET)?;
    let mut out = std::fs::File::from(io::stdout().as_fd().try_clone_to_owned()?);
    let ready = || println!("{} flow log of {ns}", super::super::process::READY_LINE);
    collect(ready, &mut out)
}

/// Reads the flow log forever, writing each flow to `out` (a file: rewritten with the
/// newer half of the lines when it holds `KEEP`).
pub(crate) fn collect(ready: impl FnOnce(), out: &mut std::fs::File) -> io::Result<()> {
    let socket = bind()?;
    ready();
    let mut kept: VecDeque<String> = VecDeque::new();
    let mut buf = Vec::with_capacity(1 << 16);
    loop {
        buf.clear();
        let n = socket.recv(&mut buf, 0)?;
        let mut data = &buf[..n];
        while data.len() >= 16 {
            let len = u32::from_ne_bytes([data[0], data[1], data[2], data[3]]) as usize;
            let ty = u16::from_ne_bytes([data[4], data[5]]);
            if len < 16 || len > data.len() {
                break;
            }
            if ty == (NFNL_SUBSYS_ULOG << 8) | NFULNL_MSG_PACKET
                && let Some(flow) = logged(&data[20..len])
            {
                let line = flow.line();
                writeln!(out, "{line}")?;
                kept.push_back(line);
                if kept.len() >= KEEP {
                    kept.drain(..KEEP / 2);
                    rewrite(out, &kept)?;
                }
            }
            data = data.get((len + 3) & !3..).unwrap_or_default();
        }
    }
}

fn logged(body: &[u8]) -> Option<Flow> {
    let a = attrs(body);
    let get = |t: u16| a.iter().find(|(ty, _)| *ty == t).map(|(_, v)| *v);
    let prefix = get(NFULA_PREFIX).map(text)?;
    let time = match get(NFULA_TIMESTAMP) {
        Some(t) if t.len() >= 16 => {
            let be = |b: &[u8]| u64::from_be_bytes(b.try_into().unwrap_or_default());
            format!("{}.{:06}", be(&t[..8]), be(&t[8..16]))
        }
        _ => {
            let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
            format!("{}.{:06}", now.as_secs(), now.subsec_micros())
        }
    };
    flow(prefix, time, get(NFULA_PAYLOAD)?)
}

fn rewrite(out: &mut std::fs::File, lines: &VecDeque<String>) -> io::Result<()> {
    use std::io::Seek;
    out.set_len(0)?;
    out.seek(io::SeekFrom::Start(0))?;
    for line in lines {
        writeln!(out, "{line}")?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_logged_packet_is_a_line_and_back() {
        let mut packet = vec![0x45, 0, 0, 40, 0, 0, 0, 0, 64, 6, 0, 0, 10, 0, 1, 2, 10, 0, 2, 2];
        packet.extend_from_slice(&[0x9c, 0x40, 0, 22, 0, 0, 0, 0]);
        let f = flow("input#5".into(), "1700000000.000001".into(), &packet).unwrap();
        assert_eq!(f.line(), "1700000000.000001 input#5 tcp 10.0.1.2 40000 10.0.2.2 22");
        assert_eq!(Flow::parse(&f.line()), Some(f));
    }
}
