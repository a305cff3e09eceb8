//! Netlink requests over a plain socket, waiting for each answer: for the threads that make
//! namespaces or read them and for the reaper, which have no async runtime.

use std::cell::Cell;
use std::io;
use std::ops::{Deref, DerefMut};

use netlink_packet_route::RouteNetlinkMessage;
use netlink_packet_route::link::{LinkAttribute, LinkMessage};
use netlink_sys::Socket;
use rtnetlink::LinkUnspec;
use rtnetlink::packet_core::{
    NLM_F_ACK, NLM_F_DUMP, NLM_F_REQUEST, NLMSG_DONE, NLMSG_ERROR, NetlinkBuffer, NetlinkMessage,
    NetlinkPayload, ParseableParametrized,
};

use crate::plan::kernel::LINK_GROUP;

const ENODEV: i32 = nix::errno::Errno::ENODEV as i32;
/// Message types below this are netlink's own, not the routing family's.
const NLMSG_MIN_TYPE: u16 = 0x10;

/// What one receive may bring: the kernel fills a dump's datagrams up to this size.
const REPLY_CAPACITY: usize = 64 * 1024;

thread_local! {
    static REPLY: Cell<Vec<u8>> = const { Cell::new(Vec::new()) };
}

/// A thread's buffer for netlink answers, handed back when dropped: observing hundreds of
/// namespaces with a new 64 KiB buffer per dump made the allocator grow and shrink its heap
/// hundreds of times.
pub(crate) struct ReplyBuffer(Vec<u8>);

impl ReplyBuffer {
    pub(crate) fn take() -> Self {
        let mut buffer = REPLY.take();
        buffer.clear();
        buffer.reserve(REPLY_CAPACITY);
        Self(buffer)
    }
}

impl Deref for ReplyBuffer {
    type Target = Vec<u8>;
    fn deref(&self) -> &Vec<u8> {
        &self.0
    }
}

impl DerefMut for ReplyBuffer {
    fn deref_mut(&mut self) -> &mut Vec<u8> {
        &mut self.0
    }
}

impl Drop for ReplyBuffer {
    fn drop(&mut self) {
        REPLY.set(std::mem::take(&mut self.0));
    }
}

/// Brings `lo` (index 1 in a new namespace) up over a netlink socket not yet handed to the
/// runtime: it runs on the thread that made the namespace, beside the others being made.
pub(crate) fn set_lo_up(socket: &Socket) -> io::Result<()> {
    request(socket, RouteNetlinkMessage::SetLink(LinkUnspec::new_with_index(1).up().build()), 0).map(drop)
}

/// One request over a plain netlink socket, waiting for its answer: the messages of a dump
/// (with `NLM_F_DUMP` in `flags`), or none once acknowledged. For threads without a runtime.
pub(crate) fn request(
    socket: &Socket,
    message: RouteNetlinkMessage,
    flags: u16,
) -> io::Result<Vec<RouteNetlinkMessage>> {
    let mut answers = Vec::new();
    exchange(socket, message, flags, |kind, payload| {
        answers.push(RouteNetlinkMessage::parse_with_param(payload, kind).map_err(io::Error::other)?);
        Ok(())
    })?;
    Ok(answers)
}

/// A dump, each message handed to `each` as its type and the bytes after its header,
/// unparsed: a reader that needs a few attributes of each skips decoding the rest (most of
/// a link's message is its IPv6 settings and statistics).
pub(crate) fn dump_raw(
    socket: &Socket,
    message: RouteNetlinkMessage,
    each: impl FnMut(u16, &[u8]) -> io::Result<()>,
) -> io::Result<()> {
    exchange(socket, message, NLM_F_DUMP, each)
}

/// Sends one request and hands each message of its answer to `each`, until the dump is
/// done or the request acknowledged (an error ends it too).
fn exchange(
    socket: &Socket,
    message: RouteNetlinkMessage,
    flags: u16,
    mut each: impl FnMut(u16, &[u8]) -> io::Result<()>,
) -> io::Result<()> {
    let mut req = NetlinkMessage::from(message);
    // A dump ends with its DONE message; an acknowledgement after it would be read as the
    // answer to the next request.
    let ack = if flags & NLM_F_DUMP == 0 { NLM_F_ACK } else { 0 };
    req.header.flags = NLM_F_REQUEST | ack | flags;
    req.finalize();
    let mut buf = vec![0; req.buffer_len()];
    req.serialize(&mut buf);
    socket.send(&buf, 0)?;
    let mut reply = ReplyBuffer::take();
    loop {
        reply.clear();
        socket.recv(&mut *reply, 0)?;
        let mut at = 0;
        while at < reply.len() {
            // Checked: the length it claims fits, and is at least a header's.
            let msg = NetlinkBuffer::new_checked(&reply[at..]).map_err(io::Error::other)?;
            let len = msg.length() as usize;
            match msg.message_type() {
                NLMSG_DONE => return Ok(()),
                NLMSG_ERROR => {
                    let error = NetlinkMessage::<RouteNetlinkMessage>::deserialize(&reply[at..at + len])
                        .map_err(io::Error::other)?;
                    return match error.payload {
                        NetlinkPayload::Error(e) if e.code.is_some() => Err(e.to_io()),
                        _ => Ok(()),
                    };
                }
                // Netlink's own control messages (no-op, overrun) carry nothing to read.
                kind if kind < NLMSG_MIN_TYPE => {}
                kind => each(kind, msg.payload())?,
            }
            // Messages start on 4-byte boundaries.
            at += len.div_ceil(4) * 4;
        }
    }
}

/// The indexes of vpcsh's links in the namespace `socket` was opened in.
pub(crate) fn own_links(socket: &Socket) -> io::Result<Vec<u32>> {
    let dump = request(socket, RouteNetlinkMessage::GetLink(LinkMessage::default()), NLM_F_DUMP)?;
    Ok(dump
        .iter()
        .filter_map(|m| match m {
            RouteNetlinkMessage::NewLink(l)
                if l.attributes.iter().any(|a| matches!(a, LinkAttribute::Group(g) if *g == LINK_GROUP)) =>
            {
                Some(l.header.index)
            }
            _ => None,
        })
        .collect())
}

/// Deletes links together: they join the group `group` (which nothing else uses), then the
/// group goes in one request — one wait for the kernel's deferred frees instead of one per
/// link. Links already gone (a veth's other end) are fine.
pub(crate) fn delete_links_now(socket: &Socket, indexes: &[u32], group: u32) -> io::Result<()> {
    let gone = |e: &io::Error| e.raw_os_error() == Some(ENODEV);
    for index in indexes {
        let mut regroup = LinkUnspec::new_with_index(*index).build();
        regroup.attributes.push(LinkAttribute::Group(group));
        match request(socket, RouteNetlinkMessage::SetLink(regroup), 0) {
            Err(e) if !gone(&e) => return Err(e),
            _ => {}
        }
    }
    let mut delete = LinkMessage::default();
    delete.attributes.push(LinkAttribute::Group(group));
    match request(socket, RouteNetlinkMessage::DelLink(delete), 0) {
        Err(e) if gone(&e) => Ok(()),
        other => other.map(drop),
    }
}
