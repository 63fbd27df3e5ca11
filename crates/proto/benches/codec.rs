//! Microbenchmarks of the jute codec on the hot frames: decode and encode of the common requests, the
//! getData reply, a watcher notification and the handshake, and splitting a buffer of many frames.
//! Throughput is in bytes of whole frames (length prefix included).
//!
//! cargo bench -p oxkeeper-proto --bench codec

use std::hint::black_box;

use divan::counter::{BytesCount, ItemsCount};
use divan::Bencher;
use oxkeeper_proto::frame::{
    encode_connect_request, encode_connect_response, encode_notification, encode_reply,
    encode_request, split_reply, split_request, Decoded, FrameDecoder, LENGTH_PREFIX_BYTES,
};
use oxkeeper_proto::{
    perms, Acl, ConnectRequest, ConnectResponse, CreateRequest, EventType, Id, KeeperState,
    MultiOp, OpCode, PathVersion, PathWatch, Record, Request, Response, SetDataRequest, Stat,
    WatcherEvent,
};

fn main() {
    divan::main();
}

const PATH: &str = "/bench/app/config/node-0000012345";
const ZXID: i64 = 0x1_0000_2000;

fn open_acl() -> Vec<Acl> {
    vec![Acl {
        perms: perms::ALL,
        id: Id {
            scheme: "world".into(),
            id: "anyone".into(),
        },
    }]
}

fn stat() -> Stat {
    Stat {
        czxid: 0x1_0000_0010,
        mzxid: ZXID,
        ctime: 1_763_000_000_000,
        mtime: 1_763_000_100_000,
        version: 7,
        cversion: 0,
        aversion: 0,
        ephemeral_owner: 0,
        data_length: 100,
        num_children: 0,
        pzxid: 0x1_0000_0010,
    }
}

fn create(i: usize) -> CreateRequest {
    CreateRequest {
        path: format!("/bench/app/items/item-{i:010}"),
        data: Some(vec![0x5a; 100]),
        acl: open_acl(),
        flags: 0,
        ttl: -1,
    }
}

/// The requests, by name: what a client sends most.
fn request(name: &str) -> Request {
    match name {
        "getData" => Request::GetData(PathWatch {
            path: PATH.into(),
            watch: true,
        }),
        "setData_100B" | "setData_4KiB" => Request::SetData(SetDataRequest {
            path: PATH.into(),
            data: Some(vec![0xa5; if name == "setData_100B" { 100 } else { 4096 }]),
            version: -1,
        }),
        "create_100B" => Request::Create {
            op: OpCode::Create,
            req: create(0),
        },
        "multi_10" => Request::Multi(
            (0..10)
                .map(|i| match i % 3 {
                    0 => MultiOp::Create {
                        op: OpCode::Create,
                        req: create(i),
                    },
                    1 => MultiOp::SetData(SetDataRequest {
                        path: format!("/bench/app/items/item-{i:010}"),
                        data: Some(vec![0x5a; 100]),
                        version: 3,
                    }),
                    _ => MultiOp::Delete(PathVersion {
                        path: format!("/bench/app/items/item-{i:010}"),
                        version: -1,
                    }),
                })
                .collect(),
        ),
        _ => unreachable!("unknown request {name}"),
    }
}

const REQUESTS: &[&str] = &[
    "getData",
    "setData_100B",
    "setData_4KiB",
    "create_100B",
    "multi_10",
];

/// Server side: a whole request frame's payload to a `Request` (header split + body decode).
#[divan::bench(args = REQUESTS)]
fn decode_request(bencher: Bencher, name: &str) {
    let frame = encode_request(42, &request(name));
    let payload = &frame[LENGTH_PREFIX_BYTES..];
    bencher.counter(BytesCount::new(frame.len())).bench(|| {
        let (header, body) = split_request(black_box(payload)).unwrap();
        Request::decode(header.op, body).unwrap()
    });
}

/// Client side: a `Request` to a whole frame.
#[divan::bench(args = REQUESTS)]
fn encode_request_frame(bencher: Bencher, name: &str) {
    let req = request(name);
    let len = encode_request(42, &req).len();
    bencher
        .counter(BytesCount::new(len))
        .bench(|| encode_request(42, black_box(&req)));
}

fn get_data_reply() -> Response {
    Response::GetData {
        data: Some(vec![0x5a; 100]),
        stat: stat(),
    }
}

fn watcher_event() -> WatcherEvent {
    WatcherEvent {
        event_type: EventType::NodeDataChanged.as_i32(),
        state: KeeperState::SyncConnected.as_i32(),
        path: PATH.into(),
    }
}

/// Server side: the getData reply (Stat + 100 B) as a whole frame.
#[divan::bench]
fn encode_get_data_reply(bencher: Bencher) {
    let resp = get_data_reply();
    let len = encode_reply(42, ZXID, 0, &resp).len();
    bencher
        .counter(BytesCount::new(len))
        .bench(|| encode_reply(42, ZXID, 0, black_box(&resp)));
}

/// Client side: a getData reply frame's payload back to its header and `Response`.
#[divan::bench]
fn decode_get_data_reply(bencher: Bencher) {
    let frame = encode_reply(42, ZXID, 0, &get_data_reply());
    let payload = &frame[LENGTH_PREFIX_BYTES..];
    bencher.counter(BytesCount::new(frame.len())).bench(|| {
        let (header, body) = split_reply(black_box(payload)).unwrap();
        (header, Response::decode(OpCode::GetData, body).unwrap())
    });
}

/// Server side: a watcher notification frame.
#[divan::bench]
fn encode_watcher_event(bencher: Bencher) {
    let event = watcher_event();
    let len = encode_notification(-1, &event).len();
    bencher
        .counter(BytesCount::new(len))
        .bench(|| encode_notification(-1, black_box(&event)));
}

/// Client side: a notification frame's payload back to its header and `WatcherEvent`.
#[divan::bench]
fn decode_watcher_event(bencher: Bencher) {
    let frame = encode_notification(-1, &watcher_event());
    let payload = &frame[LENGTH_PREFIX_BYTES..];
    bencher.counter(BytesCount::new(frame.len())).bench(|| {
        let (header, body) = split_reply(black_box(payload)).unwrap();
        (header, WatcherEvent::from_bytes(body).unwrap())
    });
}

fn connect_request() -> ConnectRequest {
    ConnectRequest {
        protocol_version: 0,
        last_zxid_seen: ZXID,
        timeout_ms: 30_000,
        session_id: 0,
        passwd: Some(vec![0; 16]),
        read_only: Some(false),
    }
}

fn connect_response() -> ConnectResponse {
    ConnectResponse {
        protocol_version: 0,
        timeout_ms: 30_000,
        session_id: 0x0100_0000_0000_002a,
        passwd: vec![0x3c; 16],
        read_only: Some(false),
    }
}

/// Client side: the handshake request frame.
#[divan::bench]
fn encode_connect_request_frame(bencher: Bencher) {
    let req = connect_request();
    let len = encode_connect_request(&req).len();
    bencher
        .counter(BytesCount::new(len))
        .bench(|| encode_connect_request(black_box(&req)));
}

/// Server side: the handshake request payload back to a `ConnectRequest` (as the server reads it).
#[divan::bench]
fn decode_connect_request(bencher: Bencher) {
    let frame = encode_connect_request(&connect_request());
    let payload = &frame[LENGTH_PREFIX_BYTES..];
    bencher
        .counter(BytesCount::new(frame.len()))
        .bench(|| ConnectRequest::from_prefix(black_box(payload)).unwrap());
}

/// Server side: the handshake reply frame.
#[divan::bench]
fn encode_connect_response_frame(bencher: Bencher) {
    let resp = connect_response();
    let len = encode_connect_response(&resp).len();
    bencher
        .counter(BytesCount::new(len))
        .bench(|| encode_connect_response(black_box(&resp)));
}

/// Client side: the handshake reply payload back to a `ConnectResponse`.
#[divan::bench]
fn decode_connect_response(bencher: Bencher) {
    let frame = encode_connect_response(&connect_response());
    let payload = &frame[LENGTH_PREFIX_BYTES..];
    bencher
        .counter(BytesCount::new(frame.len()))
        .bench(|| ConnectResponse::from_prefix(black_box(payload)).unwrap());
}

/// Framing: splits a buffer holding 1,000 pipelined getData frames, as a server reading a full socket
/// buffer does (per frame; no body decode).
#[divan::bench]
fn frame_split_1000_get_data(bencher: Bencher) {
    const FRAMES: usize = 1000;
    let mut buf = Vec::new();
    for xid in 0..FRAMES as i32 {
        buf.extend(encode_request(xid, &request("getData")));
    }
    let decoder = FrameDecoder::default();
    bencher
        .counter(ItemsCount::new(FRAMES))
        .counter(BytesCount::new(buf.len()))
        .bench(|| {
            let mut rest = black_box(&buf[..]);
            let mut frames = 0usize;
            while let Decoded::Frame(payload) = decoder.decode(rest) {
                frames += 1;
                rest = &rest[LENGTH_PREFIX_BYTES + payload.len()..];
            }
            assert_eq!(frames, FRAMES);
            frames
        });
}
