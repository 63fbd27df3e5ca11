//! Framing: the `int32` length prefix, four-letter-word detection, and whole-frame builders.
//!
//! The decoder is pure and incremental: hand it whatever bytes have arrived and it says whether a
//! whole frame is there. It never reads a socket and never allocates. A length below 0 or above the
//! limit (`jute.maxbuffer`, default 0xfffff) is an error after which ZooKeeper closes the connection.

use crate::codec::{DecodeError, Reader, Writer, MAX_BUFFER_BYTES_DEFAULT};
use crate::consts::xid;
use crate::records::*;
use thiserror::Error;

/// Size of the length prefix in front of every frame.
pub const LENGTH_PREFIX_BYTES: usize = 4;

#[derive(Debug, Error, Clone, Copy, PartialEq, Eq)]
pub enum FrameError {
    /// Negative or above the limit (`NIOServerCnxn.readLength`).
    #[error("invalid frame length {len}")]
    BadLength { len: i32 },
}

/// What [`FrameDecoder::decode`] found at the start of the buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decoded<'a> {
    /// A whole frame: its payload, without the prefix. The frame took
    /// `LENGTH_PREFIX_BYTES + payload.len()` bytes of the buffer.
    Frame(&'a [u8]),
    /// The prefix or the payload is not complete yet.
    NeedMore,
    Error(FrameError),
}

/// Splits a byte stream into frames, rejecting lengths over `max_payload_bytes`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrameDecoder {
    max_payload_bytes: usize,
}

impl Default for FrameDecoder {
    fn default() -> Self {
        FrameDecoder::new(MAX_BUFFER_BYTES_DEFAULT)
    }
}

impl FrameDecoder {
    pub const fn new(max_payload_bytes: usize) -> Self {
        FrameDecoder { max_payload_bytes }
    }

    pub fn max_payload_bytes(&self) -> usize {
        self.max_payload_bytes
    }

    /// Looks for one frame at the start of `buf`. The length is checked as soon as its 4 bytes are
    /// there, so a bad length is reported without waiting for a payload that would never fit.
    pub fn decode<'a>(&self, buf: &'a [u8]) -> Decoded<'a> {
        let Some((prefix, rest)) = buf.split_first_chunk::<LENGTH_PREFIX_BYTES>() else {
            return Decoded::NeedMore;
        };
        let len = i32::from_be_bytes(*prefix);
        let Ok(payload_bytes) = usize::try_from(len) else {
            return Decoded::Error(FrameError::BadLength { len });
        };
        if payload_bytes > self.max_payload_bytes {
            return Decoded::Error(FrameError::BadLength { len });
        }
        match rest.get(..payload_bytes) {
            Some(payload) => Decoded::Frame(payload),
            None => Decoded::NeedMore,
        }
    }
}

/// The four-letter words ZooKeeper answers (`FourLetterCommands`), in no particular order.
pub const FOUR_LETTER_WORDS: [&str; 18] = [
    "ruok", "stat", "srvr", "cons", "crst", "dump", "envi", "wchs", "wchc", "wchp", "mntr", "conf",
    "isro", "dirs", "srst", "gtmk", "stmk", "hash",
];

/// If the first 4 bytes of a fresh connection are a four-letter word, returns it.
///
/// Check this before [`FrameDecoder::decode`] on a connection's first bytes: read as a length, every
/// command is far above `jute.maxbuffer` and would be rejected as a bad frame. (ZooKeeper also knows
/// the telnet "interrupt" bytes 0xfff4fffd as a close command; that is not a word and is not matched.)
pub fn four_letter_word(first4: [u8; 4]) -> Option<&'static str> {
    FOUR_LETTER_WORDS
        .iter()
        .copied()
        .find(|w| w.as_bytes() == first4)
}

/// Splits a client frame's payload into its `RequestHeader` and the body that follows it.
pub fn split_request(payload: &[u8]) -> Result<(RequestHeader, &[u8]), DecodeError> {
    let mut r = Reader::new(payload);
    let header = RequestHeader::decode(&mut r)?;
    Ok((header, r.rest()))
}

/// Splits a server frame's payload into its `ReplyHeader` and the body that follows it.
pub fn split_reply(payload: &[u8]) -> Result<(ReplyHeader, &[u8]), DecodeError> {
    let mut r = Reader::new(payload);
    let header = ReplyHeader::decode(&mut r)?;
    Ok((header, r.rest()))
}

/// A whole reply frame: length, `ReplyHeader{xid, zxid, err}`, then the body ([`Response::Empty`] is no
/// bytes).
///
/// When `err` is not 0 ZooKeeper almost always sends the header alone, so callers pass `Response::Empty`.
/// The exception is a multiRead holding write ops: -5 with a body of just the multi terminator. A failed
/// multi is not an error reply at all (err 0, the failures inside the body). The caller picks the xid and
/// zxid: -2 and the last zxid for a ping, the request's xid and zxid 0 for an auth reply.
pub fn encode_reply(xid: i32, zxid: i64, err: i32, resp: &Response) -> Vec<u8> {
    let mut w = Writer::frame();
    ReplyHeader { xid, zxid, err }.encode(&mut w);
    resp.encode(&mut w);
    w.finish_frame()
}

/// A whole notification frame: `ReplyHeader{-1, zxid, 0}` + `WatcherEvent`. ZooKeeper 3.8 and older
/// send zxid -1; 3.9 sends the zxid of the transaction that fired the watch.
pub fn encode_notification(zxid: i64, event: &WatcherEvent) -> Vec<u8> {
    encode_notification_of(zxid, event.event_type, event.state, &event.path)
}

/// [`encode_notification`] from the event's fields (no `WatcherEvent` to build).
pub fn encode_notification_of(zxid: i64, event_type: i32, state: i32, path: &str) -> Vec<u8> {
    // Length, ReplyHeader (16), type, state and the path's length (12), the path.
    let mut w = Writer::frame_with_capacity(4 + 16 + 12 + path.len());
    ReplyHeader {
        xid: xid::NOTIFICATION,
        zxid,
        err: 0,
    }
    .encode(&mut w);
    w.i32(event_type);
    w.i32(state);
    w.ustring(path);
    w.finish_frame()
}

/// The handshake reply frame (no `ReplyHeader`): 41 bytes with a 16-byte passwd and the readOnly byte.
pub fn encode_connect_response(resp: &ConnectResponse) -> Vec<u8> {
    let mut w = Writer::frame();
    resp.encode(&mut w);
    w.finish_frame()
}

/// The handshake request frame (no `RequestHeader`), as a client sends it.
pub fn encode_connect_request(req: &ConnectRequest) -> Vec<u8> {
    let mut w = Writer::frame();
    req.encode(&mut w);
    w.finish_frame()
}

/// A whole request frame: length, `RequestHeader{xid, opcode}`, body.
pub fn encode_request(xid: i32, req: &Request) -> Vec<u8> {
    let mut w = Writer::frame();
    RequestHeader {
        xid,
        op: req.opcode().as_i32(),
    }
    .encode(&mut w);
    req.encode(&mut w);
    w.finish_frame()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_a_frame_and_leaves_the_rest() {
        let buf = [0, 0, 0, 2, 0xaa, 0xbb, 0xcc];
        assert_eq!(
            FrameDecoder::default().decode(&buf),
            Decoded::Frame(&[0xaa, 0xbb])
        );
    }

    #[test]
    fn waits_for_the_prefix_and_the_payload() {
        let d = FrameDecoder::default();
        assert_eq!(d.decode(&[]), Decoded::NeedMore);
        assert_eq!(d.decode(&[0, 0, 0]), Decoded::NeedMore);
        assert_eq!(d.decode(&[0, 0, 0, 3, 1, 2]), Decoded::NeedMore);
    }

    #[test]
    fn empty_payload_is_a_frame() {
        assert_eq!(
            FrameDecoder::default().decode(&[0, 0, 0, 0]),
            Decoded::Frame(&[])
        );
    }

    #[test]
    fn rejects_negative_and_oversized_lengths_before_the_payload_arrives() {
        let d = FrameDecoder::new(10);
        assert_eq!(
            d.decode(&(-1i32).to_be_bytes()),
            Decoded::Error(FrameError::BadLength { len: -1 })
        );
        assert_eq!(
            d.decode(&11i32.to_be_bytes()),
            Decoded::Error(FrameError::BadLength { len: 11 })
        );
        assert_eq!(d.decode(&10i32.to_be_bytes()), Decoded::NeedMore);
        let default = FrameDecoder::default();
        assert_eq!(
            default.decode(&0x100000i32.to_be_bytes()),
            Decoded::Error(FrameError::BadLength { len: 0x100000 })
        );
        assert_eq!(default.decode(&0xfffffi32.to_be_bytes()), Decoded::NeedMore);
    }

    #[test]
    fn every_four_letter_word_is_too_long_to_be_a_frame() {
        for w in FOUR_LETTER_WORDS {
            let b: [u8; 4] = w.as_bytes().try_into().expect("4 bytes");
            assert_eq!(four_letter_word(b), Some(w));
            assert!(matches!(
                FrameDecoder::default().decode(&b),
                Decoded::Error(FrameError::BadLength { .. })
            ));
        }
        assert_eq!(
            u32::from_be_bytes(*b"ruok"),
            0x7275_6f6b,
            "reference value of ruok"
        );
        assert_eq!(four_letter_word(*b"RUOK"), None);
        assert_eq!(four_letter_word([0, 0, 0, 45]), None);
    }

    #[test]
    fn error_reply_is_the_header_alone() {
        let f = encode_reply(7, 0x10, -101, &Response::Empty);
        assert_eq!(hex::encode(f), "00000010000000070000000000000010ffffff9b");
    }

    #[test]
    fn notification_uses_xid_minus_one() {
        let f = encode_notification(
            -1,
            &WatcherEvent {
                event_type: 3,
                state: 3,
                path: "/a".into(),
            },
        );
        let expected = concat!(
            "0000001e",         // length 30
            "ffffffff",         // xid -1
            "ffffffffffffffff", // zxid -1 (3.8)
            "00000000",         // err
            "00000003",         // NodeDataChanged
            "00000003",         // SyncConnected
            "00000002",
            "2f61", // "/a"
        );
        assert_eq!(hex::encode(f), expected);
    }

    #[test]
    fn request_frame_round_trips_through_split_request() {
        let req = Request::GetData(PathWatch {
            path: "/x".into(),
            watch: true,
        });
        let f = encode_request(5, &req);
        let Decoded::Frame(payload) = FrameDecoder::default().decode(&f) else {
            panic!("whole frame expected");
        };
        let (h, body) = split_request(payload).expect("header");
        assert_eq!(h, RequestHeader { xid: 5, op: 4 });
        assert_eq!(Request::decode(h.op, body), Ok(req));
    }
}
