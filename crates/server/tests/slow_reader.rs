//! A client that pipelines reads of a large node and reads the replies only later (54 MB of replies, far past
//! the mark at which the server stops reading a connection, `connection::OUTBOUND_PAUSE_BYTES`): when it
//! reads, every reply arrives, whole and in order, and other clients are served meanwhile. That the reader
//! pauses is shown by the unit test in `connection.rs`; this one shows nothing is lost or reordered.

mod common;

use common::{exists_req, Client, TestServer, SOON};
use oxkeeper_proto::records::{CreateRequest, PathWatch, Request, Response};
use oxkeeper_proto::{CreateMode, ErrorCode, OpCode};

const TIMEOUT_MS: i32 = 30_000;
const DATA_BYTES: usize = 900_000;
const READS: i32 = 60;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pipelined_large_replies_all_arrive_in_order_when_the_client_reads_late() {
    let server = TestServer::start(|_| {}).await;
    let mut writer = Client::connect(server.addr, TIMEOUT_MS).await;
    let data: Vec<u8> = (0..DATA_BYTES).map(|i| (i % 251) as u8).collect();
    let create = Request::Create {
        op: OpCode::Create,
        req: CreateRequest {
            path: "/big".into(),
            data: Some(data.clone()),
            acl: common::open_acl(),
            flags: CreateMode::Persistent.as_i32(),
            ttl: -1,
        },
    };
    assert_eq!(writer.call(1, &create).await.err(), ErrorCode::Ok as i32);

    let mut slow = Client::connect_with_receive_buffer(server.addr, TIMEOUT_MS, 16 << 10).await;
    let get = Request::GetData(PathWatch {
        path: "/big".into(),
        watch: false,
    });
    // 54 MB of replies asked for, none read yet.
    for xid in 1..=READS {
        slow.tx.send(xid, &get).await.expect("send");
    }
    // Meanwhile another client is served.
    let reply = writer.call(2, &exists_req("/big")).await;
    assert_eq!(reply.err(), ErrorCode::Ok as i32);
    // Now the slow client reads: every reply, in order, whole.
    for xid in 1..=READS {
        let reply = slow.rx.recv_within(SOON).await.expect("a reply");
        assert_eq!((reply.xid(), reply.err()), (xid, ErrorCode::Ok as i32));
        match reply.response(OpCode::GetData) {
            Response::GetData { data: Some(d), .. } => assert!(d == data, "reply {xid} damaged"),
            other => panic!("reply {xid}: {other:?}"),
        }
    }
    let reply = slow.call(READS + 1, &exists_req("/big")).await;
    assert_eq!(reply.err(), ErrorCode::Ok as i32);
}
