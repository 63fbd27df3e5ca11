//! The client against a real server: operations, chroot, watches, reconnection through a proxy that is cut
//! or stalled, expiry, and in-order replies under pipelining.
//!
//! `OXK_CLIENT_TEST_SERVER=host:port` runs these against another server (e.g. Apache ZooKeeper 3.8).

mod common;

use std::time::Duration;

use common::*;
use oxkeeper_client::{
    acl, AddWatchMode, Client, CreateMode, Error, EventType, KeeperState, Multi, MultiRead,
    OpResult, PersistentEvent, PersistentWatch, ReadResult, State, WatchedEvent, WatcherType,
    ANY_VERSION,
};

#[tokio::test]
async fn create_get_set_delete_children() {
    let server = TestServer::start().await;
    let (c, states) = connect(&server.addr, Duration::from_secs(4)).await;
    assert!(states.current().is_connected());
    assert_ne!(c.session_id(), 0);
    let root = unique_root("crud");
    let open = acl::open_unsafe();

    let (path, stat) = c
        .create(&root, b"hello", &open, CreateMode::Persistent)
        .await
        .unwrap();
    assert_eq!(path, root);
    assert_eq!(stat.version, 0);
    assert_eq!(
        c.create(&root, b"", &open, CreateMode::Persistent).await,
        Err(Error::NodeExists)
    );
    let (data, stat) = c.get_data(&root).await.unwrap();
    assert_eq!(data, b"hello");
    assert_eq!(stat.data_length, 5);

    let stat = c.set_data(&root, b"world", 0).await.unwrap();
    assert_eq!(stat.version, 1);
    assert_eq!(
        c.set_data(&root, b"x", 0).await,
        Err(Error::BadVersion),
        "stale version"
    );
    assert_eq!(c.get_data(&root).await.unwrap().0, b"world");

    let (seq, _) = c
        .create(
            &format!("{root}/s-"),
            b"",
            &open,
            CreateMode::PersistentSequential,
        )
        .await
        .unwrap();
    assert_eq!(seq, format!("{root}/s-0000000000"));
    let (eph, stat) = c
        .create(&format!("{root}/e"), b"", &open, CreateMode::Ephemeral)
        .await
        .unwrap();
    assert_eq!(stat.ephemeral_owner, c.session_id());
    c.create(&format!("{root}/k"), b"", &open, CreateMode::Container)
        .await
        .unwrap();
    if server.in_process() {
        let (_, stat) = c
            .create_ttl(
                &format!("{root}/ttl"),
                b"",
                &open,
                CreateMode::PersistentWithTtl,
                Duration::from_secs(60),
            )
            .await
            .unwrap();
        // ZooKeeper hides the TTL marker from clients: ephemeralOwner reads 0.
        assert_eq!(stat.ephemeral_owner, 0);
    }

    let mut children = c.get_children(&root).await.unwrap();
    children.sort();
    let mut want = vec!["e", "k", "s-0000000000"];
    if server.in_process() {
        want.push("ttl");
    }
    assert_eq!(children, want);
    let (_, parent) = c.get_children2(&root).await.unwrap();
    assert_eq!(parent.num_children as usize, want.len());
    assert_eq!(
        c.get_all_children_number(&root).await.unwrap() as usize,
        want.len()
    );
    assert_eq!(c.get_ephemerals(&root).await.unwrap(), vec![eph.clone()]);

    assert!(c.exists(&eph).await.unwrap().is_some());
    assert_eq!(c.delete(&root, ANY_VERSION).await, Err(Error::NotEmpty));
    c.delete(&eph, 0).await.unwrap();
    assert!(c.exists(&eph).await.unwrap().is_none());
    assert_eq!(c.delete(&eph, ANY_VERSION).await, Err(Error::NoNode));
    assert_eq!(c.get_data(&eph).await, Err(Error::NoNode));

    let (acls, _) = c.get_acl(&root).await.unwrap();
    assert_eq!(acls, open);
    let stat = c.set_acl(&root, &acl::read_unsafe(), 0).await.unwrap();
    assert_eq!(stat.aversion, 1);
    assert_eq!(
        c.set_data(&root, b"no", ANY_VERSION).await,
        Err(Error::NoAuth)
    );
    assert_eq!(c.sync(&root).await.unwrap(), root);

    // Client-side validation never reaches the server.
    assert!(matches!(
        c.get_data("no-slash").await,
        Err(Error::BadArguments(_))
    ));

    c.close().await.unwrap();
    assert_eq!(c.state(), State::Closed);
    assert_eq!(c.get_data(&root).await, Err(Error::Closed));
}

#[tokio::test]
async fn digest_auth_and_creator_acl() {
    let server = TestServer::start().await;
    let (c, _) = connect(&server.addr, Duration::from_secs(4)).await;
    let root = unique_root("auth");
    c.add_auth("digest", b"alice:secret").await.unwrap();
    c.create(&root, b"x", &acl::creator_all(), CreateMode::Persistent)
        .await
        .unwrap();
    assert_eq!(c.get_data(&root).await.unwrap().0, b"x");
    let (other, _) = connect(&server.addr, Duration::from_secs(4)).await;
    assert_eq!(other.get_data(&root).await, Err(Error::NoAuth));
    other.add_auth("digest", b"alice:secret").await.unwrap();
    assert_eq!(other.get_data(&root).await.unwrap().0, b"x");
    c.delete(&root, ANY_VERSION).await.unwrap();
}

#[tokio::test]
async fn multi_commits_or_reports_the_failing_op() {
    let server = TestServer::start().await;
    let (c, _) = connect(&server.addr, Duration::from_secs(4)).await;
    let root = unique_root("multi");
    let open = acl::open_unsafe();
    let results = c
        .multi(
            Multi::new()
                .create(&root, b"", &open, CreateMode::Persistent)
                .create(&format!("{root}/a"), b"1", &open, CreateMode::Persistent)
                .set_data(&format!("{root}/a"), b"2", 0)
                .check(&root, 0),
        )
        .await
        .unwrap();
    assert_eq!(results.len(), 4);
    assert!(matches!(&results[0], OpResult::Create { path, .. } if path == &root));
    assert!(matches!(results[2], OpResult::SetData { stat } if stat.version == 1));
    assert_eq!(results[3], OpResult::Check);

    let err = c
        .multi(
            Multi::new()
                .create(&format!("{root}/b"), b"", &open, CreateMode::Persistent)
                .delete(&format!("{root}/missing"), ANY_VERSION),
        )
        .await
        .unwrap_err();
    assert_eq!(
        err,
        Error::Multi {
            index: 1,
            error: Box::new(Error::NoNode)
        }
    );
    assert!(
        c.exists(&format!("{root}/b")).await.unwrap().is_none(),
        "atomic"
    );
    c.multi(
        Multi::new()
            .delete(&format!("{root}/a"), 1)
            .delete(&root, ANY_VERSION),
    )
    .await
    .unwrap();
}

#[tokio::test]
async fn chroot_is_applied_and_stripped() {
    let server = TestServer::start().await;
    let (plain, _) = connect(&server.addr, Duration::from_secs(4)).await;
    let root = unique_root("chroot");
    ensure(&plain, &root).await;
    let (c, _) = connect(&format!("{}{root}", server.addr), Duration::from_secs(4)).await;
    let open = acl::open_unsafe();

    let (p, _) = c
        .create("/x", b"in", &open, CreateMode::Persistent)
        .await
        .unwrap();
    assert_eq!(p, "/x");
    assert_eq!(plain.get_data(&format!("{root}/x")).await.unwrap().0, b"in");
    assert_eq!(c.get_children("/").await.unwrap(), vec!["x"]);
    let (e, _) = c
        .create("/e-", b"", &open, CreateMode::EphemeralSequential)
        .await
        .unwrap();
    assert!(e.starts_with("/e-"), "{e}");
    assert_eq!(c.get_ephemerals("/").await.unwrap(), vec![e.clone()]);
    assert_eq!(c.sync("/x").await.unwrap(), "/x");
    let results = c
        .multi(Multi::new().create("/y", b"", &open, CreateMode::Persistent))
        .await
        .unwrap();
    assert!(matches!(&results[0], OpResult::Create { path, .. } if path == "/y"));

    let (_, _, watch) = c.get_data_w("/x").await.unwrap();
    plain
        .set_data(&format!("{root}/x"), b"changed", ANY_VERSION)
        .await
        .unwrap();
    let ev = within(SOON, "chrooted watch", watch).await;
    assert_eq!(ev.event_type, EventType::NodeDataChanged);
    assert_eq!(ev.path, "/x");
}

#[tokio::test]
async fn one_shot_watches_fire_once() {
    let server = TestServer::start().await;
    let (c, _) = connect(&server.addr, Duration::from_secs(4)).await;
    let (writer, _) = connect(&server.addr, Duration::from_secs(4)).await;
    let root = unique_root("watch");
    let open = acl::open_unsafe();

    // exists on an absent node fires on creation.
    let (stat, created) = c.exists_w(&root).await.unwrap();
    assert!(stat.is_none());
    writer
        .create(&root, b"", &open, CreateMode::Persistent)
        .await
        .unwrap();
    let ev = within(SOON, "NodeCreated", created).await;
    assert_eq!(
        (ev.event_type, ev.state, ev.path.as_str()),
        (
            EventType::NodeCreated,
            KeeperState::SyncConnected,
            root.as_str()
        )
    );

    // A data watch fires on the first change only; a second registration sees the second change.
    let (_, _, first) = c.get_data_w(&root).await.unwrap();
    let (_, _, children) = c.get_children_w(&root).await.unwrap();
    writer.set_data(&root, b"1", ANY_VERSION).await.unwrap();
    let ev = within(SOON, "NodeDataChanged", first).await;
    assert_eq!(ev.event_type, EventType::NodeDataChanged);
    writer.set_data(&root, b"2", ANY_VERSION).await.unwrap();
    let (data, _, second) = c.get_data_w(&root).await.unwrap();
    assert_eq!(data, b"2");
    writer
        .create(&format!("{root}/c"), b"", &open, CreateMode::Persistent)
        .await
        .unwrap();
    let ev = within(SOON, "NodeChildrenChanged", children).await;
    assert_eq!(ev.event_type, EventType::NodeChildrenChanged);
    assert_eq!(ev.path, root);
    writer
        .delete(&format!("{root}/c"), ANY_VERSION)
        .await
        .unwrap();
    writer.delete(&root, ANY_VERSION).await.unwrap();
    let ev = within(SOON, "NodeDeleted", second).await;
    assert_eq!(ev.event_type, EventType::NodeDeleted);

    // A watch whose session ends resolves with the end, not an event.
    let (_, pending) = c.exists_w(&root).await.unwrap();
    c.close().await.unwrap();
    let ev = within(SOON, "watch ended by close", pending).await;
    assert_eq!(
        (ev.event_type, ev.state),
        (EventType::None, KeeperState::Closed)
    );
}

#[tokio::test]
async fn cut_reconnects_same_session_and_rearms_watches() {
    let server = TestServer::start().await;
    let proxy = Proxy::start(&server.addr).await;
    let (c, mut states) = connect(&proxy.addr(), Duration::from_secs(6)).await;
    let (writer, _) = connect(&server.addr, Duration::from_secs(4)).await;
    let root = unique_root("cut");
    let open = acl::open_unsafe();
    c.create(&root, b"v0", &open, CreateMode::Persistent)
        .await
        .unwrap();
    let (eph, _) = c
        .create(&format!("{root}/eph"), b"", &open, CreateMode::Ephemeral)
        .await
        .unwrap();
    let (_, _, watch) = c.get_data_w(&root).await.unwrap();
    let session = c.session_id();

    proxy.cut();
    wait_state(&mut states, State::Disconnected, SOON).await;
    // The change happens while the client is away: SetWatches must bring it back as an event.
    writer.set_data(&root, b"v1", ANY_VERSION).await.unwrap();
    // A call made while disconnected waits for the new connection.
    let queued = tokio::spawn({
        let c = c.clone();
        let root = root.clone();
        async move { c.get_data(&root).await }
    });
    proxy.restore();
    wait_state(&mut states, State::Connected, SOON).await;
    let (data, _) = within(SOON, "queued call", queued).await.unwrap().unwrap();
    assert_eq!(data, b"v1");
    assert_eq!(c.session_id(), session, "same session");
    let ev = within(SOON, "catch-up event", watch).await;
    assert_eq!(ev.event_type, EventType::NodeDataChanged);
    assert_eq!(ev.path, root);
    assert_eq!(c.get_data(&root).await.unwrap().0, b"v1");
    assert!(
        writer.exists(&eph).await.unwrap().is_some(),
        "ephemeral survived"
    );
    c.close().await.unwrap();
    assert!(
        writer.exists(&eph).await.unwrap().is_none(),
        "closed session's ephemeral gone"
    );
}

#[tokio::test]
async fn stall_loses_in_flight_requests_then_expires() {
    let server = TestServer::start().await;
    let proxy = Proxy::start(&server.addr).await;
    let (c, mut states) = connect(&proxy.addr(), Duration::from_millis(1500)).await;
    let t = c.session_timeout();
    let root = unique_root("stall");
    ensure(&c, &root).await;
    let (_, _, watch) = c.get_data_w(&root).await.unwrap();

    proxy.stall();
    // No reply ever comes: the read timeout (2T/3) turns this into ConnectionLoss.
    let r = within(t + SOON, "in-flight request to fail", c.get_data(&root)).await;
    assert_eq!(r, Err(Error::ConnectionLoss));
    wait_state(&mut states, State::Disconnected, SOON).await;
    // No contact for 4T/3 while reconnecting: Expired, final.
    wait_state(&mut states, State::Expired, 2 * t + SOON).await;
    assert_eq!(c.get_data(&root).await, Err(Error::SessionExpired));
    let ev = within(SOON, "watch ended by expiry", watch).await;
    assert_eq!(
        (ev.event_type, ev.state),
        (EventType::None, KeeperState::Expired)
    );
    assert_eq!(
        within(SOON, "the stream to end", states.next()).await,
        None,
        "nothing after Expired"
    );
}

/// A server that accepts a connection and then neither answers the handshake nor closes (ZooKeeper does this
/// to some connections while it starts): the client must give up on that connection well before the whole
/// session timeout is gone, and try again.
#[tokio::test]
async fn a_handshake_that_is_never_answered_is_retried_early() {
    let server = TestServer::start().await;
    let proxy = Proxy::start(&server.addr).await;
    proxy.stall();
    let addr = proxy.addr();
    let connecting =
        tokio::spawn(async move { Client::connect(&addr, Duration::from_secs(8)).await });
    within(SOON, "the first connection", async {
        while proxy.accepted() == 0 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await;
    // That connection's ConnectRequest is gone; the next connection goes through.
    proxy.restore();
    // One attempt may use at most a quarter of the 8 s timeout (2 s); the whole 8 s is what it used to wait.
    let (c, states) = within(Duration::from_secs(5), "the retried handshake", connecting)
        .await
        .expect("the connecting task")
        .expect("a session");
    assert!(states.current().is_connected());
    assert_eq!(
        proxy.accepted(),
        2,
        "one stalled connection, then one that worked"
    );
    c.close().await.unwrap();
}

#[tokio::test]
async fn cut_longer_than_the_timeout_expires() {
    let server = TestServer::start().await;
    let proxy = Proxy::start(&server.addr).await;
    let (c, mut states) = connect(&proxy.addr(), Duration::from_millis(1000)).await;
    let t = c.session_timeout();
    proxy.cut();
    wait_state(&mut states, State::Disconnected, SOON).await;
    wait_state(&mut states, State::Expired, 2 * t + SOON).await;
    // Restoring the path does not revive the session.
    proxy.restore();
    assert_eq!(c.exists("/").await, Err(Error::SessionExpired));
}

#[tokio::test]
async fn replies_stay_in_order_under_pipelining() {
    let server = TestServer::start().await;
    let (c, states) = connect(&server.addr, Duration::from_secs(4)).await;
    let root = unique_root("pipe");
    ensure(&c, &root).await;
    let open = acl::open_unsafe();
    let mut set = tokio::task::JoinSet::new();
    for i in 0..100u32 {
        let c = c.clone();
        let path = format!("{root}/n{i}");
        let open = open.clone();
        set.spawn(async move {
            c.create(
                &path,
                i.to_string().as_bytes(),
                &open,
                CreateMode::Persistent,
            )
            .await
            .unwrap();
        });
    }
    within(SOON, "100 creates", async {
        while let Some(r) = set.join_next().await {
            r.unwrap();
        }
    })
    .await;
    // 100 concurrent reads, a mix of ops: every reply must be the answer to its own request.
    for i in 0..100u32 {
        let c = c.clone();
        let path = format!("{root}/n{i}");
        set.spawn(async move {
            if i % 3 == 0 {
                let stat = c.exists(&path).await.unwrap().unwrap();
                assert_eq!(stat.data_length as usize, i.to_string().len());
            } else if i % 3 == 1 {
                assert!(c.get_children(&path).await.unwrap().is_empty());
                assert_eq!(c.get_data(&path).await.unwrap().0, i.to_string().as_bytes());
            } else {
                let stat = c
                    .set_data(&path, format!("v{i}").as_bytes(), 0)
                    .await
                    .unwrap();
                assert_eq!(stat.version, 1);
                assert_eq!(
                    c.get_data(&path).await.unwrap().0,
                    format!("v{i}").as_bytes()
                );
            }
        });
    }
    within(SOON, "100 mixed calls", async {
        while let Some(r) = set.join_next().await {
            r.unwrap();
        }
    })
    .await;
    assert_eq!(states.current(), State::Connected, "never disconnected");
    assert_eq!(c.get_all_children_number(&root).await.unwrap(), 100);
}

#[tokio::test]
async fn bad_connect_strings_and_unreachable_hosts() {
    assert!(matches!(
        Client::connect("", Duration::from_secs(1)).await,
        Err(Error::BadArguments(_))
    ));
    assert!(matches!(
        Client::connect("127.0.0.1:2181/bad/", Duration::from_secs(1)).await,
        Err(Error::BadArguments(_))
    ));
    // A port nobody listens on: bind one, learn it, close it.
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    drop(l);
    let r = within(
        SOON,
        "giving up",
        Client::connect(&addr.to_string(), Duration::from_millis(600)),
    )
    .await;
    assert_eq!(r.err(), Some(Error::ConnectionLoss));
}

#[tokio::test]
async fn reconnects_to_another_host_in_the_list() {
    let server = TestServer::start().await;
    let a = Proxy::start(&server.addr).await;
    let b = Proxy::start(&server.addr).await;
    let (c, mut states) = connect(
        &format!("{},{}", a.addr(), b.addr()),
        Duration::from_secs(6),
    )
    .await;
    let session = c.session_id();
    // Whichever host it picked, cut both then restore only one: it must find that one.
    a.cut();
    b.cut();
    wait_state(&mut states, State::Disconnected, SOON).await;
    b.restore();
    wait_state(&mut states, State::Connected, SOON).await;
    assert_eq!(c.session_id(), session);
    assert!(c.exists("/").await.unwrap().is_some());
}

#[tokio::test]
async fn a_dead_host_in_the_connect_string_is_skipped() {
    let server = TestServer::start().await;
    // A port nobody listens on: bind one, learn it, close it.
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let dead = l.local_addr().unwrap();
    drop(l);
    // Hosts are shuffled: over several connects the dead one comes first in some of them.
    for _ in 0..6 {
        let (c, states) = connect(&format!("{dead},{}", server.addr), Duration::from_secs(6)).await;
        assert!(states.current().is_connected());
        assert!(c.exists("/").await.unwrap().is_some());
        c.close().await.unwrap();
    }
}

#[tokio::test]
async fn a_server_behind_our_last_zxid_is_skipped() {
    let server = TestServer::start().await;
    if !server.in_process() {
        return; // needs a second, empty server
    }
    let empty = TestServer::start().await;
    let proxy = Proxy::start(&server.addr).await;
    let (c, mut states) = connect(&proxy.addr(), Duration::from_secs(6)).await;
    let root = unique_root("behind");
    for i in 0..5 {
        ensure(&c, &format!("{root}{i}")).await;
    }
    let session = c.session_id();
    // The only host now leads to a server that has seen nothing: it must not give us a session.
    proxy.set_upstream(&empty.addr);
    proxy.cut();
    wait_state(&mut states, State::Disconnected, SOON).await;
    proxy.restore();
    // Two seconds of refusals: no state change at all is the expected outcome.
    if let Ok(seen) = tokio::time::timeout(Duration::from_secs(2), states.next()).await {
        panic!("an empty server must neither connect nor expire us: {seen:?}");
    }
    proxy.set_upstream(&server.addr);
    wait_state(&mut states, State::Connected, SOON).await;
    assert_eq!(c.session_id(), session);
    assert!(c.exists(&format!("{root}4")).await.unwrap().is_some());
}

/// Collects the next persistent event, failing the test if none comes soon.
async fn next_event(w: &mut PersistentWatch, what: &str) -> PersistentEvent {
    within(SOON, what, w.next())
        .await
        .unwrap_or_else(|| panic!("watch ended before {what}"))
}

fn changed(ty: EventType, path: &str) -> PersistentEvent {
    PersistentEvent::Event(WatchedEvent {
        event_type: ty,
        state: KeeperState::SyncConnected,
        path: path.to_string(),
    })
}

// ZooKeeper 3.8 keeps one watch mode per (session, path): a one-shot or persistent watch added on a path that
// already has a persistent-recursive one from the same session replaces it. These tests keep each kind on
// its own path.
#[tokio::test]
async fn persistent_watches_stay_and_recursive_ones_cover_the_subtree() {
    let server = TestServer::start().await;
    let (c, _) = connect(&server.addr, Duration::from_secs(4)).await;
    let (writer, _) = connect(&server.addr, Duration::from_secs(4)).await;
    let root = unique_root("persistent");
    let (a, ab) = (format!("{root}/a"), format!("{root}/a/b"));
    ensure(&writer, &root).await;
    ensure(&writer, &a).await;
    let mut tree = c
        .add_watch(&root, AddWatchMode::PersistentRecursive)
        .await
        .unwrap();
    let mut node = c.add_watch(&a, AddWatchMode::Persistent).await.unwrap();

    ensure(&writer, &ab).await;
    writer.set_data(&ab, b"1", ANY_VERSION).await.unwrap();
    writer.set_data(&ab, b"2", ANY_VERSION).await.unwrap();
    writer.delete(&ab, ANY_VERSION).await.unwrap();
    writer.set_data(&a, b"r", ANY_VERSION).await.unwrap();
    // The recursive watch sees every change below, in order and without re-arming; no child events.
    for want in [
        changed(EventType::NodeCreated, &ab),
        changed(EventType::NodeDataChanged, &ab),
        changed(EventType::NodeDataChanged, &ab),
        changed(EventType::NodeDeleted, &ab),
        changed(EventType::NodeDataChanged, &a),
    ] {
        assert_eq!(next_event(&mut tree, "recursive event").await, want);
    }
    // The plain persistent one sees its own node's events, child events included, and nothing deeper.
    for want in [
        changed(EventType::NodeChildrenChanged, &a),
        changed(EventType::NodeChildrenChanged, &a),
        changed(EventType::NodeDataChanged, &a),
    ] {
        assert_eq!(next_event(&mut node, "persistent event").await, want);
    }

    // Removing one watch ends its stream only; the other goes on.
    c.check_watches(&a, WatcherType::Persistent).await.unwrap();
    c.remove_watches(&a, WatcherType::Persistent, false)
        .await
        .unwrap();
    assert_eq!(
        next_event(&mut node, "removal").await,
        changed(EventType::PersistentWatchRemoved, &a)
    );
    assert_eq!(within(SOON, "stream end", node.next()).await, None);
    assert_eq!(
        c.check_watches(&a, WatcherType::Persistent).await,
        Err(Error::NoWatcher)
    );
    assert_eq!(
        c.remove_watches(&a, WatcherType::Persistent, false).await,
        Err(Error::NoWatcher)
    );
    writer.set_data(&a, b"s", ANY_VERSION).await.unwrap();
    assert_eq!(
        next_event(&mut tree, "still recursive").await,
        changed(EventType::NodeDataChanged, &a)
    );

    // One-shot watches are removed with their own events.
    let (_, _, data_watch) = c.get_data_w(&a).await.unwrap();
    let (_, _, child_watch) = c.get_children_w(&a).await.unwrap();
    c.remove_watches(&a, WatcherType::Any, false).await.unwrap();
    assert_eq!(
        within(SOON, "data watch removed", data_watch)
            .await
            .event_type,
        EventType::DataWatchRemoved
    );
    assert_eq!(
        within(SOON, "child watch removed", child_watch)
            .await
            .event_type,
        EventType::ChildWatchRemoved
    );
    c.remove_watches(&root, WatcherType::PersistentRecursive, false)
        .await
        .unwrap();
    assert_eq!(
        next_event(&mut tree, "recursive removed").await,
        changed(EventType::PersistentWatchRemoved, &root)
    );
    assert_eq!(within(SOON, "stream end", tree.next()).await, None);
    // The server holds none of them any more: a new watch's stream sees a change exactly once.
    let mut again = c.add_watch(&a, AddWatchMode::Persistent).await.unwrap();
    writer.set_data(&a, b"t", ANY_VERSION).await.unwrap();
    writer.set_data(&root, b"t", ANY_VERSION).await.unwrap();
    assert_eq!(
        next_event(&mut again, "new watch").await,
        changed(EventType::NodeDataChanged, &a)
    );
    c.close().await.unwrap();
    assert!(matches!(
        next_event(&mut again, "session end").await,
        PersistentEvent::Event(WatchedEvent {
            event_type: EventType::None,
            state: KeeperState::Closed,
            ..
        })
    ));
    assert_eq!(within(SOON, "stream end", again.next()).await, None);
}

#[tokio::test]
async fn persistent_watches_resync_after_a_reconnect() {
    let server = TestServer::start().await;
    let proxy = Proxy::start(&server.addr).await;
    let (c, mut states) = connect(&proxy.addr(), Duration::from_secs(6)).await;
    let (writer, _) = connect(&server.addr, Duration::from_secs(4)).await;
    let root = unique_root("resync");
    let x = format!("{root}/x");
    ensure(&writer, &root).await;
    ensure(&writer, &x).await;
    let mut tree = c
        .add_watch(&root, AddWatchMode::PersistentRecursive)
        .await
        .unwrap();
    let (_, _, one_shot) = c.get_data_w(&x).await.unwrap();
    let session = c.session_id();

    proxy.cut();
    wait_state(&mut states, State::Disconnected, SOON).await;
    writer
        .set_data(&x, b"while away", ANY_VERSION)
        .await
        .unwrap();
    proxy.restore();
    wait_state(&mut states, State::Connected, SOON).await;
    assert_eq!(c.session_id(), session);
    // The one-shot watch gets its catch-up event; the persistent one is told to re-read.
    assert_eq!(
        within(SOON, "catch-up", one_shot).await.event_type,
        EventType::NodeDataChanged
    );
    assert_eq!(
        next_event(&mut tree, "resync").await,
        PersistentEvent::Resync
    );
    assert_eq!(c.get_data(&x).await.unwrap().0, b"while away");
    // ...and it is armed on the new connection. (The one-shot's catch-up event is for x, which the
    // recursive watch covers too: it may see it, as ZooKeeper's Java client would.)
    let child = format!("{root}/after");
    ensure(&writer, &child).await;
    loop {
        let ev = next_event(&mut tree, "event after the reconnect").await;
        if ev == changed(EventType::NodeDataChanged, &x) {
            continue;
        }
        assert_eq!(ev, changed(EventType::NodeCreated, &child));
        break;
    }
    c.close().await.unwrap();
}

#[tokio::test]
async fn who_am_i_multi_read_and_config() {
    let server = TestServer::start().await;
    let (c, _) = connect(&server.addr, Duration::from_secs(4)).await;
    let root = unique_root("reads");
    ensure(&c, &root).await;
    ensure(&c, &format!("{root}/k")).await;
    c.set_data(&root, b"d", ANY_VERSION).await.unwrap();
    let results = c
        .multi_read(
            MultiRead::new()
                .get_data(&root)
                .get_children(&root)
                .get_data(&format!("{root}/missing")),
        )
        .await
        .unwrap();
    assert_eq!(results.len(), 3);
    assert!(
        matches!(&results[0], ReadResult::Data { data, stat } if data == b"d" && stat.num_children == 1)
    );
    assert_eq!(
        results[1],
        ReadResult::Children {
            children: vec!["k".to_string()]
        }
    );
    assert_eq!(results[2], ReadResult::Error(Error::NoNode));

    let before = c.who_am_i().await.unwrap();
    assert!(
        before.iter().any(|i| i.auth_scheme == "ip"),
        "an ip identity: {before:?}"
    );
    c.add_auth("digest", b"bob:pw").await.unwrap();
    let after = c.who_am_i().await.unwrap();
    assert!(
        after
            .iter()
            .any(|i| i.auth_scheme == "digest" && i.user == "bob"),
        "{after:?}"
    );
    // Standalone: the config node exists (ZooKeeper's is empty unless reconfig is enabled).
    c.get_config().await.unwrap();
    c.close().await.unwrap();
}

#[tokio::test]
async fn notifications_come_once_however_many_watches_fire() {
    let server = TestServer::start().await;
    let (c, _) = connect(&server.addr, Duration::from_secs(4)).await;
    let (writer, _) = connect(&server.addr, Duration::from_secs(4)).await;
    let root = unique_root("notify");
    ensure(&writer, &root).await;
    let mut all = c.notifications();
    let (_, _, w1) = c.get_data_w(&root).await.unwrap();
    let (_, w2) = c.exists_w(&root).await.unwrap();
    let (_, _, w3) = c.get_data_w(&root).await.unwrap();
    writer.set_data(&root, b"x", ANY_VERSION).await.unwrap();
    for w in [w1, w2, w3] {
        assert_eq!(
            within(SOON, "each watch", w).await.event_type,
            EventType::NodeDataChanged
        );
    }
    let ev = within(SOON, "the notification", all.recv()).await.unwrap();
    assert_eq!(
        (ev.event_type, ev.path.as_str()),
        (EventType::NodeDataChanged, root.as_str())
    );
    // Removing a data watch and a child watch: one event of each kind.
    let (_, _, _d1) = c.get_data_w(&root).await.unwrap();
    let (_, _d2) = c.exists_w(&root).await.unwrap();
    let (_, _, _ch) = c.get_children_w(&root).await.unwrap();
    c.remove_watches(&root, WatcherType::Any, false)
        .await
        .unwrap();
    let mut kinds = vec![
        within(SOON, "removal 1", all.recv())
            .await
            .unwrap()
            .event_type,
        within(SOON, "removal 2", all.recv())
            .await
            .unwrap()
            .event_type,
    ];
    kinds.sort_by_key(|k| k.as_i32());
    assert_eq!(
        kinds,
        [EventType::DataWatchRemoved, EventType::ChildWatchRemoved]
    );
    // Nothing else was queued: the next one is a later change's.
    let (_, _, _again) = c.get_data_w(&root).await.unwrap();
    writer.set_data(&root, b"y", ANY_VERSION).await.unwrap();
    let ev = within(SOON, "the next notification", all.recv())
        .await
        .unwrap();
    assert_eq!(ev.event_type, EventType::NodeDataChanged);
    c.close().await.unwrap();
}
