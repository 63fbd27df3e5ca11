//! Arbitrary bytes through everything a server decodes from a client: the frame decoder over a
//! whole connection stream (ConnectRequest first, then RequestHeader + body), and the raw input as
//! the body of every opcode. Nothing may panic, and whatever decodes must survive a re-encode:
//! decode(encode(decode(x))) == decode(x).

#![no_main]

use libfuzzer_sys::fuzz_target;
use oxkeeper_proto::frame::{
    four_letter_word, split_request, Decoded, FrameDecoder, LENGTH_PREFIX_BYTES,
};
use oxkeeper_proto::{ConnectRequest, Record, Request};

/// Every opcode the protocol defines, plus unknown ones.
const OPCODES: [i32; 36] = [
    -11, -10, -1, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20, 21, 22,
    100, 101, 102, 103, 104, 105, 106, 107, 10, 23, 99,
];

fn check_request(op: i32, body: &[u8]) {
    if let Ok(req) = Request::decode(op, body) {
        assert_eq!(req.opcode().as_i32(), op);
        let again = Request::decode(op, &req.to_bytes());
        assert_eq!(again.as_ref(), Ok(&req));
    }
}

fn check_connect(payload: &[u8]) {
    if let Ok(req) = ConnectRequest::from_prefix(payload) {
        assert_eq!(
            ConnectRequest::from_bytes(&req.to_bytes()).as_ref(),
            Ok(&req)
        );
    }
}

fuzz_target!(|data: &[u8]| {
    // The input as a connection's byte stream.
    if let Some(first4) = data.first_chunk::<4>() {
        let _ = four_letter_word(*first4);
    }
    let decoder = FrameDecoder::default();
    let mut stream = data;
    let mut first = true;
    while let Decoded::Frame(payload) = decoder.decode(stream) {
        if first {
            check_connect(payload);
            first = false;
        } else if let Ok((header, body)) = split_request(payload) {
            check_request(header.op, body);
        }
        stream = &stream[LENGTH_PREFIX_BYTES + payload.len()..];
    }

    // The input as a request body of every opcode, and as a handshake.
    for op in OPCODES {
        check_request(op, data);
    }
    check_connect(data);
});
