//! Microbenchmarks of the jute codec on the hot frames: decode and encode of the common requests and
//! replies, and splitting a buffer of many frames.
//!
//! cargo bench -p oxkeeper-proto --bench codec

use std::hint::black_box;

use divan::counter::{BytesCount, ItemsCount};
use divan::Bencher;
use oxkeeper_proto::frame::{encode_notification, encode_reply, encode_request, split_request};
use oxkeeper_proto::frame::{Decoded, FrameDecoder, LENGTH_PREFIX_BYTES};
use oxkeeper_proto::{
    perms, Acl, CreateRequest, EventType, Id, KeeperState, MultiOp, OpCode, PathVersion, PathWatch,
    Record, Request, Response, SetDataRequest, Stat, WatcherEvent,
};

fn main() {
    divan::main();
}

const PATH: &str = "/bench/app/config/node-0000012345";

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
        mzxid: 0x1_0000_2000,
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
    bencher.bench(|| encode_reply(42, 0x1_0000_2000, 0, black_box(&resp)));
}

/// Client side: the getData reply body back to a `Response`.
#[divan::bench]
fn decode_get_data_reply(bencher: Bencher) {
    let body = get_data_reply().to_bytes();
    bencher.bench(|| Response::decode(OpCode::GetData, black_box(&body)).unwrap());
}

/// Server side: a watcher notification frame.
#[divan::bench]
fn encode_watcher_event(bencher: Bencher) {
    let event = watcher_event();
    bencher.bench(|| encode_notification(-1, black_box(&event)));
}

/// Client side: a notification body back to a `WatcherEvent`.
#[divan::bench]
fn decode_watcher_event(bencher: Bencher) {
    let body = watcher_event().to_bytes();
    bencher.bench(|| WatcherEvent::from_bytes(black_box(&body)).unwrap());
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
    bencher.counter(ItemsCount::new(FRAMES)).bench(|| {
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
