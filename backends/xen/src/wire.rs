//! The xenstore wire protocol (Xen's `docs/misc/xenstore.txt` and `xs_wire.h`): a 16-byte header
//! of four native-endian `u32` (type, request id, transaction id, payload length) followed by the
//! payload, at most [`PAYLOAD_MAX`] bytes. Strings in payloads are NUL-terminated except a
//! WRITE's value, which runs to the end of the payload.

use std::io::{Read, Write};

use crate::error::{Error, Result};

/// Largest payload of one message, in either direction (`XENSTORE_PAYLOAD_MAX`).
pub const PAYLOAD_MAX: usize = 4096;

/// Size of the message header.
pub const HEADER_SIZE: usize = 16;

/// A message type (`enum xsd_sockmsg_type`). Open: unknown types are kept as their number.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(transparent)]
pub struct MsgType(pub u32);

impl MsgType {
    /// `XS_CONTROL` (formerly `XS_DEBUG`).
    pub const CONTROL: MsgType = MsgType(0);
    /// `XS_DIRECTORY`: the names of a node's children.
    pub const DIRECTORY: MsgType = MsgType(1);
    /// `XS_READ`: a node's value.
    pub const READ: MsgType = MsgType(2);
    /// `XS_GET_PERMS`: a node's permission list.
    pub const GET_PERMS: MsgType = MsgType(3);
    /// `XS_WATCH`: register a watch.
    pub const WATCH: MsgType = MsgType(4);
    /// `XS_UNWATCH`: remove a watch.
    pub const UNWATCH: MsgType = MsgType(5);
    /// `XS_TRANSACTION_START`.
    pub const TRANSACTION_START: MsgType = MsgType(6);
    /// `XS_TRANSACTION_END` (commit with `T`, abort with `F`).
    pub const TRANSACTION_END: MsgType = MsgType(7);
    /// `XS_INTRODUCE`: tell xenstored about a domain.
    pub const INTRODUCE: MsgType = MsgType(8);
    /// `XS_RELEASE`: tell xenstored a domain is gone.
    pub const RELEASE: MsgType = MsgType(9);
    /// `XS_GET_DOMAIN_PATH`: `/local/domain/<domid>`.
    pub const GET_DOMAIN_PATH: MsgType = MsgType(10);
    /// `XS_WRITE`: set a node's value, creating it and missing parents.
    pub const WRITE: MsgType = MsgType(11);
    /// `XS_MKDIR`: create a node with an empty value.
    pub const MKDIR: MsgType = MsgType(12);
    /// `XS_RM`: remove a node and its subtree.
    pub const RM: MsgType = MsgType(13);
    /// `XS_SET_PERMS`: replace a node's permission list.
    pub const SET_PERMS: MsgType = MsgType(14);
    /// `XS_WATCH_EVENT`: an unsolicited watch event (path, token).
    pub const WATCH_EVENT: MsgType = MsgType(15);
    /// `XS_ERROR`: the reply to a failed request; the payload names the error.
    pub const ERROR: MsgType = MsgType(16);
    /// `XS_IS_DOMAIN_INTRODUCED`.
    pub const IS_DOMAIN_INTRODUCED: MsgType = MsgType(17);
    /// `XS_RESUME`.
    pub const RESUME: MsgType = MsgType(18);
    /// `XS_SET_TARGET`.
    pub const SET_TARGET: MsgType = MsgType(19);
    /// `XS_RESET_WATCHES`.
    pub const RESET_WATCHES: MsgType = MsgType(21);
    /// `XS_DIRECTORY_PART`.
    pub const DIRECTORY_PART: MsgType = MsgType(22);
}

/// A message header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Header {
    /// The message type.
    pub msg_type: MsgType,
    /// The request id, echoed in the reply (zero in watch events).
    pub req_id: u32,
    /// The transaction id, zero for none.
    pub tx_id: u32,
    /// The payload length.
    pub len: u32,
}

impl Header {
    /// Encodes the header in native byte order.
    pub fn encode(&self) -> [u8; HEADER_SIZE] {
        let mut b = [0u8; HEADER_SIZE];
        for (chunk, v) in
            b.chunks_exact_mut(4)
                .zip([self.msg_type.0, self.req_id, self.tx_id, self.len])
        {
            chunk.copy_from_slice(&v.to_ne_bytes());
        }
        b
    }

    /// Decodes a header in native byte order.
    pub fn decode(b: &[u8; HEADER_SIZE]) -> Header {
        let mut w = b
            .chunks_exact(4)
            .map(|c| u32::from_ne_bytes([c[0], c[1], c[2], c[3]]));
        let mut next = || w.next().unwrap_or(0);
        Header {
            msg_type: MsgType(next()),
            req_id: next(),
            tx_id: next(),
            len: next(),
        }
    }
}

/// One whole message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Message {
    /// The header; `header.len` equals `payload.len()`.
    pub header: Header,
    /// The payload.
    pub payload: Vec<u8>,
}

/// Builds a payload from NUL-terminated strings followed by raw bytes (a WRITE's value).
///
/// # Errors
///
/// [`Error::InvalidArgument`] when a string holds a NUL byte; [`Error::PayloadTooLarge`] when
/// the payload would exceed [`PAYLOAD_MAX`].
pub fn payload(strings: &[&str], tail: &[u8]) -> Result<Vec<u8>> {
    let len = strings.iter().map(|s| s.len() + 1).sum::<usize>() + tail.len();
    if len > PAYLOAD_MAX {
        return Err(Error::PayloadTooLarge { len });
    }
    let mut p = Vec::with_capacity(len);
    for s in strings {
        if s.as_bytes().contains(&0) {
            return Err(Error::InvalidArgument("string contains a NUL byte"));
        }
        p.extend_from_slice(s.as_bytes());
        p.push(0);
    }
    p.extend_from_slice(tail);
    Ok(p)
}

/// Writes one message as a single buffer (the xenbus device wants whole messages).
///
/// # Errors
///
/// [`Error::PayloadTooLarge`] for a payload over [`PAYLOAD_MAX`]; [`Error::Io`] when the write
/// fails.
pub fn write_message(
    w: &mut impl Write,
    msg_type: MsgType,
    req_id: u32,
    tx_id: u32,
    payload: &[u8],
) -> Result<()> {
    if payload.len() > PAYLOAD_MAX {
        return Err(Error::PayloadTooLarge { len: payload.len() });
    }
    let header = Header {
        msg_type,
        req_id,
        tx_id,
        // Bounded by PAYLOAD_MAX above.
        len: payload.len() as u32,
    };
    let mut buf = Vec::with_capacity(HEADER_SIZE + payload.len());
    buf.extend_from_slice(&header.encode());
    buf.extend_from_slice(payload);
    w.write_all(&buf)?;
    w.flush()?;
    Ok(())
}

/// Reads one message.
///
/// # Errors
///
/// [`Error::Io`] when reading fails (an orderly close is `UnexpectedEof`);
/// [`Error::Protocol`] when the header announces more than [`PAYLOAD_MAX`] bytes.
pub fn read_message(r: &mut impl Read) -> Result<Message> {
    let mut hb = [0u8; HEADER_SIZE];
    r.read_exact(&mut hb)?;
    let header = Header::decode(&hb);
    let len = header.len as usize;
    if len > PAYLOAD_MAX {
        return Err(Error::Protocol(format!(
            "message of type {} announces {len} payload bytes",
            header.msg_type.0
        )));
    }
    let mut payload = vec![0u8; len];
    r.read_exact(&mut payload)?;
    Ok(Message { header, payload })
}

/// Splits a payload of NUL-terminated strings (a DIRECTORY or GET_PERMS reply, a watch event).
/// A missing final NUL is tolerated; an empty payload gives no strings.
///
/// # Errors
///
/// [`Error::Protocol`] when a string is not UTF-8.
pub fn split_strings(payload: &[u8]) -> Result<Vec<String>> {
    let body = payload.strip_suffix(&[0]).unwrap_or(payload);
    if body.is_empty() {
        return Ok(Vec::new());
    }
    body.split(|b| *b == 0)
        .map(|s| {
            String::from_utf8(s.to_vec())
                .map_err(|_| Error::Protocol("string in reply is not UTF-8".into()))
        })
        .collect()
}

/// The one string of a payload (`"OK"`, a transaction id, an error name), without its NUL.
///
/// # Errors
///
/// [`Error::Protocol`] when it is not UTF-8.
pub fn one_string(payload: &[u8]) -> Result<String> {
    let body = payload.strip_suffix(&[0]).unwrap_or(payload);
    String::from_utf8(body.to_vec()).map_err(|_| Error::Protocol("reply is not UTF-8".into()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_round_trip() {
        let h = Header {
            msg_type: MsgType::WRITE,
            req_id: 7,
            tx_id: 9,
            len: 12,
        };
        let b = h.encode();
        assert_eq!(&b[0..4], &11u32.to_ne_bytes());
        assert_eq!(&b[12..16], &12u32.to_ne_bytes());
        assert_eq!(Header::decode(&b), h);
    }

    #[test]
    fn payload_building() {
        assert_eq!(payload(&["/a", "tok"], b"").unwrap(), b"/a\0tok\0");
        assert_eq!(payload(&["/a"], b"v\0x").unwrap(), b"/a\0v\0x");
        assert!(matches!(
            payload(&["/a\0b"], b""),
            Err(Error::InvalidArgument(_))
        ));
        let big = vec![0u8; PAYLOAD_MAX];
        assert!(matches!(
            payload(&["/a"], &big),
            Err(Error::PayloadTooLarge { len }) if len == PAYLOAD_MAX + 3
        ));
        assert_eq!(
            payload(&["/a"], &big[..PAYLOAD_MAX - 3]).unwrap().len(),
            PAYLOAD_MAX
        );
    }

    #[test]
    fn message_round_trip_and_limits() {
        let mut buf = Vec::new();
        write_message(&mut buf, MsgType::READ, 3, 0, b"/x\0").unwrap();
        let m = read_message(&mut buf.as_slice()).unwrap();
        assert_eq!(m.header.msg_type, MsgType::READ);
        assert_eq!(m.header.req_id, 3);
        assert_eq!(m.payload, b"/x\0");

        let mut evil = Header {
            msg_type: MsgType::READ,
            req_id: 1,
            tx_id: 0,
            len: (PAYLOAD_MAX + 1) as u32,
        }
        .encode()
        .to_vec();
        evil.extend(std::iter::repeat_n(0u8, 8));
        assert!(matches!(
            read_message(&mut evil.as_slice()),
            Err(Error::Protocol(_))
        ));
        // Truncated payload.
        let mut short = Header {
            msg_type: MsgType::READ,
            req_id: 1,
            tx_id: 0,
            len: 10,
        }
        .encode()
        .to_vec();
        short.extend_from_slice(b"abc");
        assert!(matches!(
            read_message(&mut short.as_slice()),
            Err(Error::Io(_))
        ));
        assert!(matches!(
            write_message(
                &mut Vec::new(),
                MsgType::WRITE,
                1,
                0,
                &vec![0; PAYLOAD_MAX + 1]
            ),
            Err(Error::PayloadTooLarge { .. })
        ));
    }

    #[test]
    fn string_splitting() {
        assert_eq!(split_strings(b"a\0bb\0").unwrap(), ["a", "bb"]);
        assert_eq!(split_strings(b"a\0bb").unwrap(), ["a", "bb"]);
        assert!(split_strings(b"").unwrap().is_empty());
        assert!(split_strings(b"\0").unwrap().is_empty());
        assert!(matches!(split_strings(b"\xff\0"), Err(Error::Protocol(_))));
        assert_eq!(one_string(b"OK\0").unwrap(), "OK");
        assert_eq!(one_string(b"12").unwrap(), "12");
    }
}
