//! A VPC's resolver (`vpcsh __dns`): answers A and AAAA queries for the names it was
//! started with — the VPC's hosts, and its peers' — over UDP port 53 inside the VPC's
//! router; everything else is "no such name". It never asks anyone else: nothing leaves
//! the lab. The DNS wire format is simple-dns's.

use std::collections::HashMap;
use std::io;
use std::net::{IpAddr, UdpSocket};

use nix::sched::{CloneFlags, setns};
use simple_dns::rdata::{A, AAAA, RData};
use simple_dns::{CLASS, Packet, PacketFlag, QTYPE, RCODE, ResourceRecord, TYPE};

use crate::exec::{netns, process::READY_LINE};
use crate::plan::desired::RESOLVER;

/// How long clients may keep an answer: short, so a re-applied lab is seen at once.
const TTL: u32 = 5;

/// Names and their addresses, from `NAME=ADDRESS` words.
pub(crate) fn zone(records: &[String]) -> io::Result<HashMap<String, Vec<IpAddr>>> {
    let mut zone: HashMap<String, Vec<IpAddr>> = HashMap::new();
    for record in records {
        let (name, addr) = record
            .split_once('=')
            .and_then(|(n, a)| Some((n, a.parse::<IpAddr>().ok()?)))
            .ok_or_else(|| io::Error::other(format!("`{record}` is not NAME=ADDRESS")))?;
        zone.entry(name.to_ascii_lowercase()).or_default().push(addr);
    }
    Ok(zone)
}

/// Enters `ns` (this process is still single-threaded) and answers forever.
pub(crate) fn serve(ns: &str, records: &[String]) -> io::Result<()> {
    let zone = zone(records)?;
    let fd = netns::open(ns)?;
    setns(&fd, CloneFlags::CLONE_NEWNET)?;
    // On the resolver's own address: an answer must come from where the question went,
    // and a wildcard socket would answer from the gateway the client came through.
    let socket = UdpSocket::bind((RESOLVER, 53))?;
    println!("{READY_LINE} {} in {ns}, {} names", socket.local_addr()?, zone.len());
    let mut buf = [0u8; 1500];
    loop {
        let Ok((n, from)) = socket.recv_from(&mut buf) else { continue };
        if let Some(reply) = answer(&zone, &buf[..n]) {
            let _ = socket.send_to(&reply, from);
        }
    }
}

/// The reply to one query; `None` for what is no query at all.
pub(crate) fn answer(zone: &HashMap<String, Vec<IpAddr>>, query: &[u8]) -> Option<Vec<u8>> {
    let query = Packet::parse(query).ok()?;
    if query.has_flags(PacketFlag::RESPONSE) {
        return None;
    }
    let mut reply = Packet::new_reply(query.id());
    reply.set_flags(PacketFlag::AUTHORITATIVE_ANSWER);
    if query.has_flags(PacketFlag::RECURSION_DESIRED) {
        reply.set_flags(PacketFlag::RECURSION_DESIRED);
    }
    let Some(question) = query.questions.first() else {
        *reply.rcode_mut() = RCODE::FormatError;
        return reply.build_bytes_vec().ok();
    };
    let name = question.qname.to_string().trim_end_matches('.').to_ascii_lowercase();
    match zone.get(&name) {
        None => *reply.rcode_mut() = RCODE::NameError,
        Some(addrs) => {
            for addr in addrs {
                let rdata = match (addr, question.qtype) {
                    (IpAddr::V4(a), QTYPE::TYPE(TYPE::A) | QTYPE::ANY) => {
                        RData::A(A { address: u32::from(*a) })
                    }
                    (IpAddr::V6(a), QTYPE::TYPE(TYPE::AAAA) | QTYPE::ANY) => {
                        RData::AAAA(AAAA { address: u128::from(*a) })
                    }
                    _ => continue,
                };
                reply.answers.push(ResourceRecord::new(question.qname.clone(), CLASS::IN, TTL, rdata));
            }
        }
    }
    reply.questions.push(question.clone());
    reply.build_bytes_vec().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_answered_case_blind_and_others_are_no_such_name() {
        use crate::exec::probe::{first_address, query};
        let zone =
            zone(&["w2=10.0.1.3".into(), "w2.prod=10.0.1.3".into(), "w2.prod=fd00::3".into()]).unwrap();
        let ask = |name: &str, v6: bool| {
            let reply = answer(&zone, &query(7, name, v6).unwrap()).unwrap();
            (first_address(7, &reply), Packet::parse(&reply).unwrap().rcode())
        };
        assert_eq!(ask("w2", false), (Some("10.0.1.3".parse().unwrap()), RCODE::NoError));
        assert_eq!(ask("W2.Prod", true), (Some("fd00::3".parse().unwrap()), RCODE::NoError));
        assert_eq!(ask("w2", true), (None, RCODE::NoError), "a name without IPv6 has no AAAA");
        assert_eq!(ask("w9.prod", false), (None, RCODE::NameError));
        assert!(super::zone(&["nonsense".into()]).is_err());
    }
}
