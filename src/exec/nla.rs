//! Netlink attributes read straight from a message's bytes, for the readers that take a
//! few values out of each message and skip the rest unread.

use std::io;

use rtnetlink::packet_core::{NlaBuffer, NlasIterator};

const NLA_HEADER_LEN: usize = 4;

/// The attributes among `bytes`, each as its kind and value, in order. One whose length
/// does not fit ends them, with an error.
pub(crate) fn attributes(bytes: &[u8]) -> impl Iterator<Item = io::Result<(u16, &[u8])>> {
    NlasIterator::new(bytes).map(|nla| {
        let nla: NlaBuffer<&[u8]> = nla.map_err(io::Error::other)?;
        let (kind, end) = (nla.kind(), usize::from(nla.length()));
        // The buffer runs on to the end of `bytes`; checked, the attribute's length is
        // within it and covers its header.
        Ok((kind, &nla.into_inner()[NLA_HEADER_LEN..end]))
    })
}

/// A string attribute's value, without its terminating NUL.
pub(crate) fn text(value: &[u8]) -> String {
    String::from_utf8_lossy(value.split(|b| *b == 0).next().unwrap_or_default()).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Two attributes, the first padded to four bytes and the second flagged nested, then
    /// one cut short.
    #[test]
    fn attributes_are_read_in_order_until_one_does_not_fit() {
        let mut bytes = vec![7, 0, 1, 0, b'e', b'0', 0, 0, 8, 0, 2, 0x80, 1, 2, 3, 4];
        let read: Vec<_> = attributes(&bytes).collect::<io::Result<_>>().unwrap();
        assert_eq!(read, vec![(1, &b"e0\0"[..]), (2, &[1, 2, 3, 4][..])]);
        assert_eq!(text(read[0].1), "e0");
        bytes.extend([9, 0, 3, 0, 1]);
        let last = attributes(&bytes).last().unwrap();
        assert!(last.is_err());
    }
}
