//! nftables over netlink (NETLINK_NETFILTER), without the `nft` binary: vpcsh's table in a
//! namespace is replaced in one atomic batch (add table, delete it, add it again with its
//! chains and rules), deleted, or read back as a signature to compare. `foreign` finds
//! other tools' dropping forward chains and lets vpcsh's traffic through them.

pub(crate) mod flows;
mod foreign;

use std::io;
use std::os::fd::AsRawFd;

use ipnetwork::IpNetwork;
use netlink_sys::{Socket, protocols::NETLINK_NETFILTER};

use super::nla::{self, text};
use super::plain_netlink::ReplyBuffer;

use crate::plan::nft::{
    Action, Chain, ChainType, FLOW_LOG_GROUP, Hook, IfName, Match, Proto, Rule, Ruleset, TABLE,
};

// linux/netfilter/nfnetlink.h and nf_tables.h
const NFNL_SUBSYS_NFTABLES: u16 = 10;
const NFNL_MSG_BATCH_BEGIN: u16 = 0x10;
const NFNL_MSG_BATCH_END: u16 = 0x11;
const NFT_MSG_NEWTABLE: u16 = 0;
const NFT_MSG_GETTABLE: u16 = 1;
const NFT_MSG_DELTABLE: u16 = 2;
const NFT_MSG_NEWCHAIN: u16 = 3;
const NFT_MSG_GETCHAIN: u16 = 4;
const NFT_MSG_NEWRULE: u16 = 6;
const NFT_MSG_GETRULE: u16 = 7;
const NFT_MSG_GETGEN: u16 = 16;
const NFPROTO_UNSPEC: u8 = 0;
const NFPROTO_INET: u8 = 1;
const NFPROTO_IPV4: u8 = 2;
const NFPROTO_IPV6: u8 = 10;

const NLM_F_REQUEST: u16 = 0x1;
const NLM_F_ACK: u16 = 0x4;
const NLM_F_DUMP: u16 = 0x300;
const NLM_F_CREATE: u16 = 0x400;
const NLM_F_APPEND: u16 = 0x800;
const NLMSG_ERROR: u16 = 2;
const NLMSG_DONE: u16 = 3;
const NLA_F_NESTED: u16 = 0x8000;

const NFTA_TABLE_NAME: u16 = 1;
const NFTA_CHAIN_TABLE: u16 = 1;
const NFTA_CHAIN_NAME: u16 = 3;
const NFTA_CHAIN_HOOK: u16 = 4;
const NFTA_CHAIN_POLICY: u16 = 5;
const NFTA_CHAIN_TYPE: u16 = 7;
const NFTA_HOOK_HOOKNUM: u16 = 1;
const NFTA_HOOK_PRIORITY: u16 = 2;
const NFTA_RULE_TABLE: u16 = 1;
const NFTA_RULE_CHAIN: u16 = 2;
const NFTA_RULE_EXPRESSIONS: u16 = 4;
const NFTA_RULE_USERDATA: u16 = 7;
const NFTA_LIST_ELEM: u16 = 1;
const NFTA_EXPR_NAME: u16 = 1;
const NFTA_EXPR_DATA: u16 = 2;
const NFTA_DATA_VALUE: u16 = 1;
const NFTA_DATA_VERDICT: u16 = 2;
const NFTA_VERDICT_CODE: u16 = 1;
/// nftnl's rule comment in user data: nft shows it as `comment "..."`.
const UDATA_RULE_COMMENT: u8 = 0;

const NFT_REG_VERDICT: u32 = 0;
const NFT_REG_1: u32 = 1;
const NFT_REG_2: u32 = 2;
const NF_DROP: u32 = 0;
const NF_ACCEPT: u32 = 1;
/// `NFT_CONTINUE` (-1): no verdict, on to the next rule.
const NFT_CONTINUE: u32 = u32::MAX;
const NFTA_LOG_GROUP: u16 = 1;
const NFTA_LOG_PREFIX: u16 = 2;

/// A reply's address family and its body after the nfgenmsg.
type FamilyReply = (u8, Vec<u8>);

/// A netfilter netlink socket in one namespace.
pub(crate) struct Nft {
    socket: Socket,
    seq: u32,
}

/// Builds one netlink message: header, nfgenmsg, attributes.
struct Msg {
    buf: Vec<u8>,
    nests: Vec<usize>,
}

impl Msg {
    fn new(ty: u16, flags: u16, seq: u32, family: u8, res_id: u16) -> Self {
        let mut buf = Vec::with_capacity(256);
        buf.extend_from_slice(&0u32.to_ne_bytes());
        buf.extend_from_slice(&ty.to_ne_bytes());
        buf.extend_from_slice(&flags.to_ne_bytes());
        buf.extend_from_slice(&seq.to_ne_bytes());
        buf.extend_from_slice(&0u32.to_ne_bytes());
        buf.extend_from_slice(&[family, 0]);
        buf.extend_from_slice(&res_id.to_be_bytes());
        Self { buf, nests: Vec::new() }
    }

    /// A message about vpcsh's table (family `inet`).
    fn nft(msg: u16, flags: u16, seq: u32) -> Self {
        Self::nft_in(NFPROTO_INET, msg, flags, seq)
    }

    fn nft_in(family: u8, msg: u16, flags: u16, seq: u32) -> Self {
        Self::new((NFNL_SUBSYS_NFTABLES << 8) | msg, NLM_F_REQUEST | flags, seq, family, 0)
    }

    fn attr(&mut self, ty: u16, data: &[u8]) -> &mut Self {
        self.buf.extend_from_slice(&((4 + data.len()) as u16).to_ne_bytes());
        self.buf.extend_from_slice(&ty.to_ne_bytes());
        self.buf.extend_from_slice(data);
        self.pad();
        self
    }

    fn str(&mut self, ty: u16, s: &str) -> &mut Self {
        let mut data = s.as_bytes().to_vec();
        data.push(0);
        self.attr(ty, &data)
    }

    fn be32(&mut self, ty: u16, v: u32) -> &mut Self {
        self.attr(ty, &v.to_be_bytes())
    }

    fn begin(&mut self, ty: u16) -> &mut Self {
        self.nests.push(self.buf.len());
        self.attr(ty | NLA_F_NESTED, &[])
    }

    fn end(&mut self) -> &mut Self {
        let start = self.nests.pop().expect("balanced nests");
        let len = (self.buf.len() - start) as u16;
        self.buf[start..start + 2].copy_from_slice(&len.to_ne_bytes());
        self
    }

    fn pad(&mut self) {
        while !self.buf.len().is_multiple_of(4) {
            self.buf.push(0);
        }
    }

    fn finish(mut self) -> Vec<u8> {
        let len = self.buf.len() as u32;
        self.buf[0..4].copy_from_slice(&len.to_ne_bytes());
        self.buf
    }
}

/// One expression: `name` with its data attributes written by `data`.
fn expr(m: &mut Msg, name: &str, data: impl FnOnce(&mut Msg)) {
    m.begin(NFTA_LIST_ELEM).str(NFTA_EXPR_NAME, name).begin(NFTA_EXPR_DATA);
    data(m);
    m.end().end();
}

fn value(m: &mut Msg, ty: u16, bytes: &[u8]) {
    m.begin(ty).attr(NFTA_DATA_VALUE, bytes).end();
}

fn meta(m: &mut Msg, key: u32) {
    expr(m, "meta", |m| {
        m.be32(1, NFT_REG_1).be32(2, key); // NFTA_META_DREG, NFTA_META_KEY
    });
}

fn payload(m: &mut Msg, base: u32, offset: u32, len: u32) {
    expr(m, "payload", |m| {
        m.be32(1, NFT_REG_1).be32(2, base).be32(3, offset).be32(4, len);
    });
}

/// Compares register 1 with `bytes`: 0 eq, 1 neq, 3 lte, 5 gte.
fn cmp(m: &mut Msg, op: u32, bytes: &[u8]) {
    expr(m, "cmp", |m| {
        m.be32(1, NFT_REG_1).be32(2, op);
        value(m, 3, bytes);
    });
}

fn bitwise(m: &mut Msg, mask: &[u8]) {
    expr(m, "bitwise", |m| {
        m.be32(1, NFT_REG_1).be32(2, NFT_REG_1).be32(3, mask.len() as u32);
        value(m, 4, mask);
        value(m, 5, &vec![0; mask.len()]);
    });
}

fn ct_flag(m: &mut Msg, key: u32, mask: u32) {
    expr(m, "ct", |m| {
        m.be32(1, NFT_REG_1).be32(2, key);
    });
    // Conntrack state and status are host-endian 32-bit words.
    bitwise(m, &mask.to_ne_bytes());
    cmp(m, 1, &[0; 4]);
}

fn ifname(m: &mut Msg, key: u32, name: &IfName) {
    meta(m, key);
    match name {
        IfName::Exact(n) => {
            let mut bytes = n.as_bytes().to_vec();
            bytes.push(0);
            cmp(m, 0, &bytes);
        }
        IfName::Prefix(p) => cmp(m, 0, p.as_bytes()),
    }
}

/// Matches a source or destination network, after the family check that an `inet` table
/// needs before reading an address from the network header.
fn address(m: &mut Msg, net: &IpNetwork, source: bool) {
    const META_NFPROTO: u32 = 15;
    let (family, offset, network, mask) = match net {
        IpNetwork::V4(n) => (
            NFPROTO_IPV4,
            if source { 12 } else { 16 },
            n.network().octets().to_vec(),
            n.mask().octets().to_vec(),
        ),
        IpNetwork::V6(n) => (
            NFPROTO_IPV6,
            if source { 8 } else { 24 },
            n.network().octets().to_vec(),
            n.mask().octets().to_vec(),
        ),
    };
    meta(m, META_NFPROTO);
    cmp(m, 0, &[family]);
    if net.prefix() == 0 {
        return;
    }
    payload(m, 1, offset, network.len() as u32);
    if usize::from(net.prefix()) < network.len() * 8 {
        bitwise(m, &mask);
    }
    cmp(m, 0, &network);
}

fn rule_match(m: &mut Msg, matched: &Match) {
    const META_IIFNAME: u32 = 6;
    const META_OIFNAME: u32 = 7;
    const META_L4PROTO: u32 = 16;
    const CT_STATE: u32 = 0;
    const CT_STATUS: u32 = 2;
    const CT_ESTABLISHED_RELATED: u32 = (1 << 1) | (1 << 2);
    const IPS_DST_NAT: u32 = 1 << 5;
    match matched {
        Match::Iif(n) => ifname(m, META_IIFNAME, n),
        Match::Oif(n) => ifname(m, META_OIFNAME, n),
        Match::Saddr(net) => address(m, net, true),
        Match::Daddr(net) => address(m, net, false),
        Match::Proto(p) => {
            meta(m, META_L4PROTO);
            cmp(m, 0, &[p.number()]);
        }
        Match::NeighbourDiscovery => {
            meta(m, META_L4PROTO);
            cmp(m, 0, &[Proto::Icmpv6.number()]);
            payload(m, 2, 0, 1);
            cmp(m, 5, &[133]);
            cmp(m, 3, &[136]);
        }
        Match::Dport(lo, hi) => {
            payload(m, 2, 2, 2);
            if lo == hi {
                cmp(m, 0, &lo.to_be_bytes());
            } else {
                cmp(m, 5, &lo.to_be_bytes());
                cmp(m, 3, &hi.to_be_bytes());
            }
        }
        Match::LocalDestination => {
            const NFT_FIB_RESULT_ADDRTYPE: u32 = 3;
            const NFTA_FIB_F_DADDR: u32 = 1 << 1;
            const RTN_LOCAL: u32 = 2;
            expr(m, "fib", |m| {
                m.be32(1, NFT_REG_1).be32(2, NFT_FIB_RESULT_ADDRTYPE).be32(3, NFTA_FIB_F_DADDR);
            });
            // The address type is a host-endian word.
            cmp(m, 0, &RTN_LOCAL.to_ne_bytes());
        }
        Match::Established => ct_flag(m, CT_STATE, CT_ESTABLISHED_RELATED),
        Match::Dnatted => ct_flag(m, CT_STATUS, IPS_DST_NAT),
    }
}

fn verdict(m: &mut Msg, code: u32) {
    expr(m, "immediate", |m| {
        m.be32(1, NFT_REG_VERDICT)
            .begin(2)
            .begin(NFTA_DATA_VERDICT)
            .be32(NFTA_VERDICT_CODE, code)
            .end()
            .end();
    });
}

fn immediate(m: &mut Msg, reg: u32, bytes: &[u8]) {
    expr(m, "immediate", |m| {
        m.be32(1, reg);
        value(m, 2, bytes);
    });
}

fn rule_message(chain: &Chain, rule: &Rule, seq: u32) -> Vec<u8> {
    let mut m = Msg::nft(NFT_MSG_NEWRULE, NLM_F_CREATE | NLM_F_APPEND, seq);
    m.str(NFTA_RULE_TABLE, TABLE).str(NFTA_RULE_CHAIN, chain.name);
    rule_body(&mut m, rule);
    m.finish()
}

/// A rule's expressions and its fingerprint comment.
fn rule_body(m: &mut Msg, rule: &Rule) {
    m.begin(NFTA_RULE_EXPRESSIONS);
    for matched in &rule.matches {
        rule_match(m, matched);
    }
    if let Some(prefix) = &rule.log {
        expr(m, "log", |m| {
            m.attr(NFTA_LOG_GROUP, &FLOW_LOG_GROUP.to_be_bytes()).str(NFTA_LOG_PREFIX, prefix);
        });
    }
    m.begin(NFTA_LIST_ELEM).str(NFTA_EXPR_NAME, "counter").end();
    match &rule.action {
        Action::Accept => verdict(m, NF_ACCEPT),
        Action::Continue => verdict(m, NFT_CONTINUE),
        Action::Drop => verdict(m, NF_DROP),
        Action::Masquerade => {
            m.begin(NFTA_LIST_ELEM).str(NFTA_EXPR_NAME, "masq").end();
        }
        Action::Dnat { addr, port } => {
            const NFT_NAT_DNAT: u32 = 1;
            immediate(m, NFT_REG_1, &addr.octets());
            immediate(m, NFT_REG_2, &port.to_be_bytes());
            expr(m, "nat", |m| {
                m.be32(1, NFT_NAT_DNAT)
                    .be32(2, u32::from(NFPROTO_IPV4))
                    .be32(3, NFT_REG_1)
                    .be32(5, NFT_REG_2);
            });
        }
    }
    m.end();
    let comment = rule.fingerprint();
    let mut udata = vec![UDATA_RULE_COMMENT, (comment.len() + 1) as u8];
    udata.extend_from_slice(comment.as_bytes());
    udata.push(0);
    m.attr(NFTA_RULE_USERDATA, &udata);
}

/// The comment of a rule from a dump, if it has one.
fn rule_comment(rule: &[(u16, &[u8])]) -> Option<String> {
    rule.iter()
        .find(|(ty, _)| *ty == NFTA_RULE_USERDATA)
        .map(|(_, u)| *u)
        .filter(|u| u.len() > 2 && u[0] == UDATA_RULE_COMMENT)
        .map(|u| text(&u[2..]))
}

fn hook_number(hook: Hook) -> u32 {
    match hook {
        Hook::Prerouting => 0,
        Hook::Input => 1,
        Hook::Forward => 2,
        Hook::Output => 3,
        Hook::Postrouting => 4,
    }
}

fn chain_message(chain: &Chain, seq: u32) -> Vec<u8> {
    let mut m = Msg::nft(NFT_MSG_NEWCHAIN, NLM_F_CREATE, seq);
    m.str(NFTA_CHAIN_TABLE, TABLE).str(NFTA_CHAIN_NAME, chain.name);
    m.begin(NFTA_CHAIN_HOOK).be32(NFTA_HOOK_HOOKNUM, hook_number(chain.hook));
    m.be32(NFTA_HOOK_PRIORITY, chain.priority as u32).end();
    m.be32(NFTA_CHAIN_POLICY, if chain.drop_by_default { NF_DROP } else { NF_ACCEPT });
    m.str(NFTA_CHAIN_TYPE, if chain.kind == ChainType::Nat { "nat" } else { "filter" });
    m.finish()
}

fn table_message(msg: u16, flags: u16, seq: u32) -> Vec<u8> {
    table_message_in(NFPROTO_INET, msg, flags, seq)
}

fn table_message_in(family: u8, msg: u16, flags: u16, seq: u32) -> Vec<u8> {
    let mut m = Msg::nft_in(family, msg, flags, seq);
    m.str(NFTA_TABLE_NAME, TABLE);
    m.finish()
}

/// The attributes of one message body (after the nfgenmsg), as (type, payload), as far as
/// they are whole.
fn attrs(body: &[u8]) -> Vec<(u16, &[u8])> {
    nla::attributes(body).map_while(Result::ok).collect()
}

fn be32(bytes: &[u8]) -> u32 {
    bytes.get(..4).map_or(0, |b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
}

impl Nft {
    /// Opens the socket in the calling thread's namespace.
    pub(crate) fn open() -> io::Result<Self> {
        Ok(Self { socket: Socket::new(NETLINK_NETFILTER)?, seq: 1 })
    }

    fn next_seq(&mut self) -> u32 {
        self.seq = self.seq.wrapping_add(1);
        self.seq
    }

    /// Sends a transaction and waits for the kernel's verdict on it.
    fn transact(&mut self, build: impl FnOnce(&mut Self) -> Vec<Vec<u8>>) -> io::Result<()> {
        let res_id = NFNL_SUBSYS_NFTABLES;
        let begin = Msg::new(NFNL_MSG_BATCH_BEGIN, NLM_F_REQUEST, self.next_seq(), 0, res_id).finish();
        let body = build(self);
        let end = Msg::new(NFNL_MSG_BATCH_END, NLM_F_REQUEST, self.next_seq(), 0, res_id).finish();
        let mut batch: Vec<u8> = begin;
        for m in &body {
            batch.extend_from_slice(m);
        }
        batch.extend_from_slice(&end);
        self.fit_send_buffer(batch.len())?;
        self.socket.send(&batch, 0)?;
        // The kernel finishes the batch before it reads the next datagram, so an acked
        // GETGEN sent after it marks the end of every error the batch can produce.
        let fence = self.next_seq();
        self.socket.send(&Msg::nft(NFT_MSG_GETGEN, NLM_F_ACK, fence).finish(), 0)?;
        let mut failure = None;
        self.receive(|seq, ty, payload| {
            if ty == NLMSG_ERROR {
                let code = payload.get(..4).map_or(0, |b| i32::from_ne_bytes([b[0], b[1], b[2], b[3]]));
                if code != 0 && failure.is_none() {
                    failure = Some(io::Error::from_raw_os_error(-code));
                }
                return seq == fence;
            }
            false
        })?;
        failure.map_or(Ok(()), Err)
    }

    /// Grows the socket's send buffer to hold a batch in one message, as nft does: a router
    /// of 500 subnets has a ruleset of some 150 KB, over the default buffer.
    fn fit_send_buffer(&self, len: usize) -> io::Result<()> {
        use nix::libc;
        const DEFAULT_FITS: usize = 64 * 1024;
        if len <= DEFAULT_FITS {
            return Ok(());
        }
        let size = libc::c_int::try_from(len + DEFAULT_FITS).map_err(io::Error::other)?;
        let set = |option| {
            // SAFETY: the option value is a live c_int of the size passed.
            unsafe {
                libc::setsockopt(
                    self.socket.as_raw_fd(),
                    libc::SOL_SOCKET,
                    option,
                    (&size as *const libc::c_int).cast(),
                    std::mem::size_of::<libc::c_int>() as libc::socklen_t,
                )
            }
        };
        // FORCE passes the system's ceiling (vpcsh has CAP_NET_ADMIN); plain is capped by it.
        if set(libc::SO_SNDBUFFORCE) == 0 || set(libc::SO_SNDBUF) == 0 {
            Ok(())
        } else {
            Err(io::Error::last_os_error())
        }
    }

    /// Reads messages, handing (seq, type, payload) to `each` until it returns true.
    fn receive(&mut self, mut each: impl FnMut(u32, u16, &[u8]) -> bool) -> io::Result<()> {
        let mut buf = ReplyBuffer::take();
        loop {
            buf.clear();
            let n = self.socket.recv(&mut *buf, 0)?;
            let mut data = &buf[..n];
            while data.len() >= 16 {
                let len = u32::from_ne_bytes([data[0], data[1], data[2], data[3]]) as usize;
                let ty = u16::from_ne_bytes([data[4], data[5]]);
                let seq = u32::from_ne_bytes([data[8], data[9], data[10], data[11]]);
                if len < 16 || len > data.len() {
                    return Err(io::Error::other("truncated netlink message"));
                }
                if each(seq, ty, &data[16..len]) {
                    return Ok(());
                }
                data = data.get((len + 3) & !3..).unwrap_or_default();
            }
        }
    }

    /// Replaces vpcsh's table with `ruleset`, atomically.
    pub(crate) fn replace(&mut self, ruleset: &Ruleset) -> io::Result<()> {
        self.transact(|nft| {
            let mut msgs = nft.clear_messages();
            msgs.push(table_message(NFT_MSG_NEWTABLE, NLM_F_CREATE, nft.next_seq()));
            for chain in &ruleset.chains {
                msgs.push(chain_message(chain, nft.next_seq()));
            }
            for chain in &ruleset.chains {
                for rule in &chain.rules {
                    msgs.push(rule_message(chain, rule, nft.next_seq()));
                }
            }
            msgs
        })
    }

    /// Deletes vpcsh's table, if there is one.
    pub(crate) fn delete(&mut self) -> io::Result<()> {
        self.transact(Self::clear_messages)
    }

    /// Deletes vpcsh's table whether or not it exists (creating it first makes the delete
    /// always valid), and the IPv4-only (`ip`) table that vpcsh versions before IPv6 kept.
    fn clear_messages(&mut self) -> Vec<Vec<u8>> {
        let mut msgs = Vec::new();
        for family in [NFPROTO_IPV4, NFPROTO_INET] {
            msgs.push(table_message_in(family, NFT_MSG_NEWTABLE, NLM_F_CREATE, self.next_seq()));
            msgs.push(table_message_in(family, NFT_MSG_DELTABLE, 0, self.next_seq()));
        }
        msgs
    }

    /// Sends a request and collects the payloads of its replies (all parts of a dump),
    /// each after its nfgenmsg.
    fn request(&mut self, msg: Msg, seq: u32) -> io::Result<Result<Vec<Vec<u8>>, i32>> {
        Ok(self
            .request_by_family(msg, seq)?
            .map(|replies| replies.into_iter().map(|(_, body)| body).collect()))
    }

    /// `request`, each reply with the address family its nfgenmsg names.
    fn request_by_family(&mut self, msg: Msg, seq: u32) -> io::Result<Result<Vec<FamilyReply>, i32>> {
        self.socket.send(&msg.finish(), 0)?;
        let mut replies = Vec::new();
        let mut errno = 0;
        self.receive(|s, ty, payload| {
            if s != seq {
                return false;
            }
            match ty {
                NLMSG_DONE => true,
                NLMSG_ERROR => {
                    errno = payload.get(..4).map_or(0, |b| -i32::from_ne_bytes([b[0], b[1], b[2], b[3]]));
                    true
                }
                _ => {
                    let family = payload.first().copied().unwrap_or_default();
                    replies.push((family, payload.get(4..).unwrap_or_default().to_vec()));
                    false
                }
            }
        })?;
        Ok(if errno == 0 { Ok(replies) } else { Err(errno) })
    }

    /// Every table here, of every family: (family, name, flags), in one dump.
    fn tables(&mut self) -> io::Result<Vec<(u8, String, u32)>> {
        const NFTA_TABLE_FLAGS: u16 = 2;
        let seq = self.next_seq();
        let tables = self
            .request_by_family(Msg::nft_in(NFPROTO_UNSPEC, NFT_MSG_GETTABLE, NLM_F_DUMP, seq), seq)?
            .map_err(io::Error::from_raw_os_error)?;
        Ok(tables
            .iter()
            .map(|(family, body)| {
                let a = attrs(body);
                let get = |t: u16| a.iter().find(|(ty, _)| *ty == t).map(|(_, v)| *v);
                let flags = get(NFTA_TABLE_FLAGS).map(be32).unwrap_or_default();
                (*family, get(NFTA_TABLE_NAME).map(text).unwrap_or_default(), flags)
            })
            .collect())
    }

    /// The signature (see `Ruleset::signature`) of vpcsh's table, or `None` without one.
    pub(crate) fn observe(&mut self) -> io::Result<Option<Vec<String>>> {
        let families: Vec<u8> = self
            .tables()?
            .into_iter()
            .filter(|(_, name, _)| name == TABLE)
            .map(|(family, ..)| family)
            .collect();
        // The IPv4-only table of a vpcsh from before IPv6 is vpcsh's too: seen, it is
        // replaced (or deleted) like any other drift.
        let legacy = families.contains(&NFPROTO_IPV4).then(|| format!("table ip {TABLE} (IPv4 only)"));
        if !families.contains(&NFPROTO_INET) {
            return Ok(legacy.map(|l| vec![l]));
        }
        let seq = self.next_seq();
        let chains = self
            .request(Msg::nft(NFT_MSG_GETCHAIN, NLM_F_DUMP, seq), seq)?
            .map_err(io::Error::from_raw_os_error)?;
        let rules = self.rules()?.map_err(io::Error::from_raw_os_error)?;

        let mut signature = Vec::new();
        for body in &chains {
            let a = attrs(body);
            let get = |t: u16| a.iter().find(|(ty, _)| *ty == t).map(|(_, v)| *v);
            if get(NFTA_CHAIN_TABLE).map(text).as_deref() != Some(TABLE) {
                continue;
            }
            let name = get(NFTA_CHAIN_NAME).map(text).unwrap_or_default();
            let hook = get(NFTA_CHAIN_HOOK).map(attrs).unwrap_or_default();
            let hook_get = |t: u16| hook.iter().find(|(ty, _)| *ty == t).map(|(_, v)| be32(v));
            let chain = observed_chain(
                &name,
                get(NFTA_CHAIN_TYPE).map(text).unwrap_or_default(),
                hook_get(NFTA_HOOK_HOOKNUM),
                hook_get(NFTA_HOOK_PRIORITY).unwrap_or(0) as i32,
                get(NFTA_CHAIN_POLICY).map(be32) == Some(NF_DROP),
            );
            signature.push(chain);
            for body in &rules {
                let r = attrs(body);
                let rget = |t: u16| r.iter().find(|(ty, _)| *ty == t).map(|(_, v)| *v);
                if rget(NFTA_RULE_TABLE).map(text).as_deref() != Some(TABLE)
                    || rget(NFTA_RULE_CHAIN).map(text) != Some(name.clone())
                {
                    continue;
                }
                let comment = rule_comment(&r).unwrap_or_else(|| "(a rule vpcsh did not write)".into());
                signature.push(format!("{name}: {comment}"));
            }
        }
        signature.extend(legacy);
        Ok(Some(signature))
    }
}

/// What one of vpcsh's rules has matched so far.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct RuleCount {
    pub chain: String,
    /// The rule's comment: `vpcsh` and its fingerprint.
    pub comment: String,
    pub packets: u64,
    pub bytes: u64,
}

impl Nft {
    /// The rules of vpcsh's table as the kernel dumps them (or its error code).
    fn rules(&mut self) -> io::Result<Result<Vec<Vec<u8>>, i32>> {
        let seq = self.next_seq();
        let mut dump = Msg::nft(NFT_MSG_GETRULE, NLM_F_DUMP, seq);
        dump.str(NFTA_RULE_TABLE, TABLE);
        self.request(dump, seq)
    }

    /// The counters of the rules of vpcsh's table, in chain order.
    pub(crate) fn counters(&mut self) -> io::Result<Vec<RuleCount>> {
        let rules = match self.rules()? {
            Ok(rules) => rules,
            // No table (yet): nothing counted.
            Err(code) if code == nix::errno::Errno::ENOENT as i32 => return Ok(Vec::new()),
            Err(code) => return Err(io::Error::from_raw_os_error(code)),
        };
        let mut out = Vec::new();
        for body in &rules {
            let r = attrs(body);
            let get = |t: u16| r.iter().find(|(ty, _)| *ty == t).map(|(_, v)| *v);
            if get(NFTA_RULE_TABLE).map(text).as_deref() != Some(TABLE) {
                continue;
            }
            let (Some(chain), Some(comment)) = (get(NFTA_RULE_CHAIN).map(text), rule_comment(&r)) else {
                continue;
            };
            let (packets, bytes) = get(NFTA_RULE_EXPRESSIONS).map(rule_counter).unwrap_or_default();
            out.push(RuleCount { chain, comment, packets, bytes });
        }
        Ok(out)
    }
}

/// The packets and bytes of the `counter` expression among a rule's expressions.
fn rule_counter(expressions: &[u8]) -> (u64, u64) {
    const NFTA_COUNTER_BYTES: u16 = 1;
    const NFTA_COUNTER_PACKETS: u16 = 2;
    let be64 = |v: &[u8]| v.get(..8).map_or(0, |b| u64::from_be_bytes(b.try_into().unwrap_or_default()));
    for (_, element) in attrs(expressions) {
        let e = attrs(element);
        let get = |t: u16| e.iter().find(|(ty, _)| *ty == t).map(|(_, v)| *v);
        if get(NFTA_EXPR_NAME).map(text).as_deref() == Some("counter") {
            let data = get(NFTA_EXPR_DATA).map(attrs).unwrap_or_default();
            let value = |t: u16| data.iter().find(|(ty, _)| *ty == t).map_or(0, |(_, v)| be64(v));
            return (value(NFTA_COUNTER_PACKETS), value(NFTA_COUNTER_BYTES));
        }
    }
    (0, 0)
}

/// A chain header as `Chain::header` writes it, from what the kernel reports.
fn observed_chain(name: &str, kind: String, hook: Option<u32>, priority: i32, drop: bool) -> String {
    let hook = match hook {
        Some(0) => Hook::Prerouting,
        Some(1) => Hook::Input,
        Some(2) => Hook::Forward,
        Some(3) => Hook::Output,
        _ => Hook::Postrouting,
    };
    let kind = if kind == "nat" { ChainType::Nat } else { ChainType::Filter };
    let chain = Chain { name: "", kind, hook, priority, drop_by_default: drop, rules: Vec::new() };
    chain.header().replacen("chain  {", &format!("chain {name} {{"), 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn attributes_are_padded_and_nests_sized() {
        let mut m = Msg::nft(NFT_MSG_NEWTABLE, 0, 7);
        m.str(NFTA_TABLE_NAME, "vpcsh");
        m.begin(4).be32(1, 2).end();
        let buf = m.finish();
        assert_eq!(buf.len() % 4, 0);
        assert_eq!(u32::from_ne_bytes(buf[0..4].try_into().unwrap()) as usize, buf.len());
        let parsed = attrs(&buf[20..]);
        assert_eq!(parsed[0], (NFTA_TABLE_NAME, &b"vpcsh\0"[..]));
        assert_eq!(parsed[1].0, 4);
        assert_eq!(attrs(parsed[1].1), vec![(1, &2u32.to_be_bytes()[..])]);
    }

    #[test]
    fn observed_chain_headers_match_wanted_ones() {
        let chain = Chain::filter("forward", Hook::Forward, true);
        assert_eq!(observed_chain("forward", "filter".into(), Some(2), 0, true), chain.header());
        let nat = Chain::nat("prerouting", Hook::Prerouting);
        assert_eq!(observed_chain("prerouting", "nat".into(), Some(0), -100, false), nat.header());
    }
}
