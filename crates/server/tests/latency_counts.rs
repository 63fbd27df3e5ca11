//! `stat`'s and `mntr`'s latency figures count what ZooKeeper's FinalRequestProcessor counts: every request
//! it answers (pings, reads, watch operations, writes), wherever oxkeeper answers it (a connection's reader
//! answers pings and reads itself, the executor the rest); not auth, SASL or whoAmI, which ZooKeeper
//! answers before that processor.

mod common;

use common::{create_req, exists_req, get_children_req, ping_frame, Client, TestServer};
use oxkeeper_proto::records::{AuthPacket, PathWatch, Request};
use oxkeeper_proto::{xid, CreateMode};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_request_zookeeper_times_is_counted_in_the_latency_figures_and_only_those() {
    let server = TestServer::start(|_| {}).await;
    let mut c = Client::connect(server.addr, 30_000).await;
    let samples = || server.shared.stats.latency_samples();
    let get = |watch| {
        Request::GetData(PathWatch {
            path: "/timed".into(),
            watch,
        })
    };

    let before = samples();
    c.call(1, &create_req("/timed", CreateMode::Persistent))
        .await;
    // Plain reads: answered by the connection's reader (the executor holds nothing of this connection).
    c.call(2, &get(false)).await;
    c.call(3, &exists_req("/timed")).await;
    c.call(4, &get_children_req("/timed")).await;
    // A read that sets a watch: the reader too.
    c.call(5, &get(true)).await;
    // A read the executor answers.
    c.call(8, &Request::GetAcl("/timed".into())).await;
    c.tx.send_raw(&ping_frame()).await.expect("send a ping");
    let pong = c.rx.recv().await.expect("the ping's reply");
    assert!(pong.is_ping(), "expected the ping's reply, got {pong:?}");
    assert_eq!(
        samples() - before,
        7,
        "create, three plain reads, a watching read, getACL, a ping"
    );

    let before = samples();
    c.call(
        xid::AUTH,
        &Request::Auth(AuthPacket {
            auth_type: 0,
            scheme: "digest".into(),
            auth: Some(b"timed:pw".to_vec()),
        }),
    )
    .await;
    c.call(6, &Request::WhoAmI).await;
    assert_eq!(
        samples() - before,
        0,
        "auth and whoAmI are answered before ZooKeeper times requests"
    );
    c.call(7, &get(false)).await;
    assert_eq!(samples() - before, 1);
}
