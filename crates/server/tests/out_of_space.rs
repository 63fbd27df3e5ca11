//! A full device (ENOSPC on the log's writes): the write being made durable is held, not failed, and is
//! acknowledged once space returns; meanwhile new writes are refused at once with NOTREADONLY, reads are
//! served, and mntr/srvr say what is wrong.

mod common;

use std::time::Duration;

use common::{exists_req, four_letter, Client, GateDisk, TestServer};
use oxkeeper_proto::{CreateMode, ErrorCode, OpCode};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_wait_out_a_full_disk_and_new_ones_are_refused_meanwhile() {
    let disk = GateDisk::default();
    let server = TestServer::start_on(disk.clone(), |_| {}).await;
    let mut a = Client::connect(server.addr, 30_000).await;
    let mut b = Client::connect(server.addr, 30_000).await;
    assert_eq!(
        a.call(1, &common::create_req("/before", CreateMode::Persistent))
            .await
            .err(),
        0
    );

    disk.set_full(true);
    // This create's batch hits ENOSPC: it is held (no reply), not failed.
    a.tx.send(2, &common::create_req("/held", CreateMode::Persistent))
        .await
        .expect("send");
    let out_of_space = common::eventually(
        Duration::from_secs(5),
        "the log reports out of space",
        || async {
            let m = four_letter(server.addr, "mntr").await;
            m.contains("zk_oxkeeper_log_state\tout_of_space")
                .then_some(m)
        },
    )
    .await;
    assert!(
        out_of_space.contains("zk_oxkeeper_log_no_space_retries"),
        "{out_of_space}"
    );
    let srvr = four_letter(server.addr, "srvr").await;
    assert!(
        srvr.contains("\nStorage: ") && srvr.contains("out of disk space"),
        "{srvr}"
    );

    // New writes are refused at once; reads are served.
    let r = b
        .call(1, &common::create_req("/refused", CreateMode::Persistent))
        .await;
    assert_eq!(r.err(), ErrorCode::NotReadOnly as i32);
    let r = b.call(2, &exists_req("/before")).await;
    assert_eq!(r.err(), 0, "reads are served while the disk is full");
    assert!(
        a.rx.recv_within(Duration::from_millis(300)).await.is_err(),
        "the held create is not answered while the disk is full"
    );

    disk.set_full(false);
    let reply =
        a.rx.recv_within(Duration::from_secs(10))
            .await
            .expect("the held create is acknowledged");
    assert_eq!((reply.xid(), reply.err()), (2, 0), "{reply:?}");
    let _ = reply.response(OpCode::Create);
    common::eventually(
        Duration::from_secs(5),
        "the log is healthy again",
        || async {
            four_letter(server.addr, "mntr")
                .await
                .contains("zk_oxkeeper_log_state\tok")
                .then_some(())
        },
    )
    .await;
    assert_eq!(
        b.call(3, &common::create_req("/after", CreateMode::Persistent))
            .await
            .err(),
        0
    );
    for p in ["/before", "/held", "/after"] {
        assert_eq!(b.call(4, &exists_req(p)).await.err(), 0, "{p}");
    }
    assert_eq!(
        b.call(5, &exists_req("/refused")).await.err(),
        ErrorCode::NoNode as i32
    );
}
