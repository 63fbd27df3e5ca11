//! The recipes (lock, leader election, tree cache) against a real server, with faults injected by the proxy:
//! cuts, stalls, expired sessions and lost replies.
//!
//! `OXK_CLIENT_TEST_SERVER=host:port` runs these against another server (e.g. Apache ZooKeeper 3.8).

mod common;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::*;
use oxkeeper_client::recipes::{
    CacheEvent, CacheEvents, CachedNode, LeaderElection, Lock, Ownership, Role, TreeCache,
};
use oxkeeper_client::{acl, Client, CreateMode, Error, State, ANY_VERSION};
use oxkeeper_proto::OpCode;
use rand::{Rng, SeedableRng};
use tokio::sync::watch;

/// Polls `cond` until it holds, failing the test after `d`. For conditions spread over several handles;
/// a single change is awaited on its own channel instead.
async fn eventually(d: Duration, what: &str, mut cond: impl FnMut() -> bool) {
    within(d, what, async {
        while !cond() {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await
}

/// The lock nodes left in `dir`. The directory is a container: the server may remove it once it is empty
/// (ZooKeeper's reaper runs every `znode.container.checkIntervalMs`, 60 s by default, so a suite run against a
/// long-lived ZooKeeper meets it), which leaves nothing behind either.
async fn left_in(client: &Client, dir: &str) -> Vec<String> {
    match client.get_children(dir).await {
        Ok(children) => children,
        Err(Error::NoNode) => Vec::new(),
        Err(e) => panic!("getChildren {dir}: {e}"),
    }
}

/// Waits until `rx` holds a value for which `pred` is true.
async fn role_becomes(
    rx: &mut watch::Receiver<Role>,
    d: Duration,
    pred: impl Fn(&Role) -> bool,
) -> Role {
    within(d, "a role change", rx.wait_for(|r| pred(r)))
        .await
        .expect("the candidacy's channel is open")
        .clone()
}

async fn read_counter(c: &Client, path: &str) -> u64 {
    let (data, _) = c.get_data(path).await.unwrap();
    String::from_utf8(data).unwrap().parse().unwrap()
}

/// Every node under `root` (root included), read directly from the server.
async fn walk(c: &Client, root: &str) -> BTreeMap<String, CachedNode> {
    let mut out = BTreeMap::new();
    let mut todo = vec![root.to_string()];
    while let Some(path) = todo.pop() {
        let (data, stat) = match c.get_data(&path).await {
            Ok(r) => r,
            Err(Error::NoNode) => continue,
            Err(e) => panic!("get_data {path}: {e}"),
        };
        for child in c.get_children(&path).await.unwrap() {
            todo.push(format!("{path}/{child}"));
        }
        out.insert(path, CachedNode { data, stat });
    }
    out
}

fn diff(cache: &BTreeMap<String, CachedNode>, server: &BTreeMap<String, CachedNode>) -> String {
    let mut out = Vec::new();
    for (p, n) in server {
        match cache.get(p) {
            None => out.push(format!("missing {p}")),
            Some(c) if c != n => out.push(format!("differs {p}: cache {c:?} server {n:?}")),
            Some(_) => {}
        }
    }
    for p in cache.keys().filter(|p| !server.contains_key(*p)) {
        out.push(format!("extra {p}"));
    }
    out.join("\n")
}

/// Waits until the cache holds exactly `expected` (the server's tree, which must not change meanwhile).
async fn converges(
    cache: &TreeCache,
    events: &mut CacheEvents,
    expected: &BTreeMap<String, CachedNode>,
    d: Duration,
) {
    let done = tokio::time::timeout(d, async {
        loop {
            if cache.snapshot() == *expected {
                return;
            }
            match events.next().await {
                Some(CacheEvent::Ended(e)) => panic!("cache ended: {e}"),
                Some(_) => {}
                None => panic!("cache events ended"),
            }
        }
    })
    .await;
    if done.is_err() {
        panic!(
            "cache did not converge within {d:?}:\n{}",
            diff(&cache.snapshot(), expected)
        );
    }
}

// ---------------------------------------------------------------------------------------------------------
// Lock

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lock_excludes_20_contenders_over_1000_acquisitions() {
    const CONTENDERS: usize = 20;
    const ROUNDS: usize = 50;
    let server = TestServer::start().await;
    let (admin, _) = connect(&server.addr, Duration::from_secs(10)).await;
    let root = unique_root("lock-excl");
    ensure(&admin, &root).await;
    let counter = format!("{root}/counter");
    admin
        .create(&counter, b"0", &acl::open_unsafe(), CreateMode::Persistent)
        .await
        .unwrap();
    let dir = format!("{root}/lock");
    let inside = Arc::new(AtomicBool::new(false));
    let overlaps = Arc::new(AtomicUsize::new(0));
    let started = std::time::Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..CONTENDERS {
        let (addr, dir, counter) = (server.addr.clone(), dir.clone(), counter.clone());
        let (inside, overlaps) = (inside.clone(), overlaps.clone());
        tasks.spawn(async move {
            let (c, _) = connect(&addr, Duration::from_secs(10)).await;
            let lock = Lock::new(&c, &dir).with_data(format!("contender {i}").as_bytes());
            for _ in 0..ROUNDS {
                let guard = lock.acquire().await.unwrap();
                if inside.swap(true, Ordering::SeqCst) {
                    overlaps.fetch_add(1, Ordering::SeqCst);
                }
                // A non-atomic read-modify-write: concurrent holders would lose increments.
                let n = read_counter(&c, &counter).await;
                tokio::task::yield_now().await;
                c.set_data(&counter, (n + 1).to_string().as_bytes(), ANY_VERSION)
                    .await
                    .unwrap();
                inside.store(false, Ordering::SeqCst);
                guard.release().await.unwrap();
            }
            c.close().await.unwrap();
        });
    }
    within(Duration::from_secs(120), "every acquisition", async {
        while let Some(r) = tasks.join_next().await {
            r.unwrap();
        }
    })
    .await;
    eprintln!(
        "{} acquisitions in {:?}",
        CONTENDERS * ROUNDS,
        started.elapsed()
    );
    assert_eq!(overlaps.load(Ordering::SeqCst), 0, "two holders at once");
    assert_eq!(
        read_counter(&admin, &counter).await,
        (CONTENDERS * ROUNDS) as u64
    );
    assert!(
        left_in(&admin, &dir).await.is_empty(),
        "every lock node deleted"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn try_acquire_and_timeouts_leave_no_node_behind() {
    let server = TestServer::start().await;
    let (a, _) = connect(&server.addr, Duration::from_secs(10)).await;
    let (b, _) = connect(&server.addr, Duration::from_secs(10)).await;
    let dir = format!("{}/lock", unique_root("lock-try"));
    let held = Lock::new(&a, &dir).acquire().await.unwrap();
    let lock_b = Lock::new(&b, &dir);
    assert!(lock_b.try_acquire().await.unwrap().is_none());
    assert!(lock_b
        .acquire_timeout(Duration::from_millis(100))
        .await
        .unwrap()
        .is_none());
    // A cancelled acquire cleans up too (in the background).
    let cancelled = tokio::time::timeout(Duration::from_millis(100), lock_b.acquire()).await;
    assert!(cancelled.is_err());
    let children = || left_in(&a, &dir);
    within(SOON, "the cancelled acquire's node to go", async {
        while children().await.len() != 1 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await;
    assert_eq!(
        children().await,
        vec![held.path().rsplit('/').next().unwrap()]
    );
    // A waiter gets the lock when the holder releases it.
    let waiter = tokio::spawn(async move { lock_b.acquire().await });
    held.release().await.unwrap();
    let guard = within(SOON, "the waiter", waiter).await.unwrap().unwrap();
    assert_eq!(guard.ownership(), Ownership::Held);
    assert_eq!(children().await.len(), 1);
    guard.release().await.unwrap();
    assert!(children().await.is_empty());
}

/// How a holder is killed while it holds the lock.
#[derive(Debug, Clone, Copy)]
enum Kill {
    /// The connection is cut and stays cut: the session expires.
    Cut,
    /// The connection stays open but carries nothing: the session expires.
    Stall,
    /// The client closes its session.
    Close,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_holders_lose_the_lock_before_anyone_else_gets_it() {
    const SURVIVORS: usize = 3;
    const ROUNDS: usize = 20;
    let server = TestServer::start().await;
    let (admin, _) = connect(&server.addr, Duration::from_secs(10)).await;
    let root = unique_root("lock-kill");
    ensure(&admin, &root).await;
    let dir = format!("{root}/lock");
    let inside = Arc::new(AtomicBool::new(false));
    let overlaps = Arc::new(AtomicUsize::new(0));
    let acquisitions = Arc::new(AtomicUsize::new(0));
    let mut tasks = tokio::task::JoinSet::new();
    for (i, kill) in [Kill::Cut, Kill::Stall, Kill::Close]
        .into_iter()
        .enumerate()
    {
        let (addr, dir) = (server.addr.clone(), dir.clone());
        let (inside, overlaps, acquisitions) =
            (inside.clone(), overlaps.clone(), acquisitions.clone());
        tasks.spawn(async move {
            let proxy = Proxy::start(&addr).await;
            let (c, mut states) = connect(&proxy.addr(), Duration::from_millis(2000)).await;
            let t = c.session_timeout();
            let lock = Lock::new(&c, &dir).with_data(format!("victim {i}").as_bytes());
            // Let the survivors get going first, so that they wait behind us.
            while acquisitions.load(Ordering::SeqCst) < 2 * (i + 1) {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            let guard = lock.acquire().await.unwrap();
            if inside.swap(true, Ordering::SeqCst) {
                overlaps.fetch_add(1, Ordering::SeqCst);
            }
            acquisitions.fetch_add(1, Ordering::SeqCst);
            match kill {
                Kill::Cut => proxy.cut(),
                Kill::Stall => proxy.stall(),
                Kill::Close => {
                    inside.store(false, Ordering::SeqCst);
                    c.close().await.unwrap();
                }
            }
            // The holder must hear that it may have lost the lock before the server expires it.
            let o = within(t + SOON, "the holder to learn", guard.lost()).await;
            assert_ne!(o, Ownership::Held, "{kill:?}");
            inside.store(false, Ordering::SeqCst);
            wait_state(
                &mut states,
                match kill {
                    Kill::Close => State::Closed,
                    _ => State::Expired,
                },
                2 * t + SOON,
            )
            .await;
            assert_eq!(guard.lost().await, Ownership::Lost);
            assert_eq!(guard.ownership(), Ownership::Lost);
            // The session is over: so is contending with it.
            let err = lock.acquire().await.unwrap_err();
            assert!(
                matches!(err, Error::SessionExpired | Error::Closed),
                "{kill:?}: {err}"
            );
        });
    }
    for i in 0..SURVIVORS {
        let (addr, dir) = (server.addr.clone(), dir.clone());
        let (inside, overlaps, acquisitions) =
            (inside.clone(), overlaps.clone(), acquisitions.clone());
        tasks.spawn(async move {
            let (c, _) = connect(&addr, Duration::from_secs(10)).await;
            let lock = Lock::new(&c, &dir).with_data(format!("survivor {i}").as_bytes());
            for _ in 0..ROUNDS {
                let guard = lock.acquire().await.unwrap();
                if inside.swap(true, Ordering::SeqCst) {
                    overlaps.fetch_add(1, Ordering::SeqCst);
                }
                acquisitions.fetch_add(1, Ordering::SeqCst);
                tokio::task::yield_now().await;
                inside.store(false, Ordering::SeqCst);
                guard.release().await.unwrap();
            }
            c.close().await.unwrap();
        });
    }
    within(Duration::from_secs(60), "every contender", async {
        while let Some(r) = tasks.join_next().await {
            r.unwrap();
        }
    })
    .await;
    assert_eq!(overlaps.load(Ordering::SeqCst), 0, "two holders at once");
    assert_eq!(acquisitions.load(Ordering::SeqCst), SURVIVORS * ROUNDS + 3);
    assert!(left_in(&admin, &dir).await.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lock_finds_its_node_when_the_create_reply_is_lost() {
    let server = TestServer::start().await;
    let proxy = Proxy::start(&server.addr).await;
    let (admin, _) = connect(&server.addr, Duration::from_secs(10)).await;
    let (c, _) = connect(&proxy.addr(), Duration::from_secs(10)).await;
    let dir = format!("{}/lock", unique_root("lock-lost"));
    // Another holder first, so that after the recovery we still have to wait for our turn.
    let first = Lock::new(&admin, &dir).acquire().await.unwrap();

    proxy.lose_next_reply(OpCode::Create2.as_i32());
    let lock = Lock::new(&c, &dir);
    let waiter = tokio::spawn(async move { lock.acquire().await });
    eventually(SOON, "the create's reply to be lost", || {
        proxy.replies_lost() == 1
    })
    .await;
    // Exactly one node of ours, though the create failed with ConnectionLoss: no duplicate was created.
    within(SOON, "the waiter to settle", async {
        loop {
            let children = admin.get_children(&dir).await.unwrap();
            if children.len() == 2 && c.get_ephemerals(&dir).await.unwrap().len() == 1 {
                return;
            }
            assert!(children.len() <= 2, "a duplicate node: {children:?}");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await;
    first.release().await.unwrap();
    let guard = within(SOON, "the lock", waiter).await.unwrap().unwrap();
    assert_eq!(c.get_ephemerals(&dir).await.unwrap(), vec![guard.path()]);
    assert_eq!(admin.get_children(&dir).await.unwrap().len(), 1);

    // A lost reply to the release's delete: it is retried, and NoNode then means done.
    proxy.lose_next_reply(OpCode::Delete.as_i32());
    within(SOON, "release", guard.release()).await.unwrap();
    assert_eq!(proxy.replies_lost(), 2);
    assert!(left_in(&admin, &dir).await.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lock_acquired_alone_survives_a_lost_create_reply() {
    let server = TestServer::start().await;
    let proxy = Proxy::start(&server.addr).await;
    let (admin, _) = connect(&server.addr, Duration::from_secs(10)).await;
    let (c, _) = connect(&proxy.addr(), Duration::from_secs(10)).await;
    let dir = format!("{}/lock", unique_root("lock-lost-alone"));
    // The directory exists: the create that loses its reply is the one that succeeds.
    ensure(&admin, dir.rsplit_once('/').unwrap().0).await;
    ensure(&admin, &dir).await;
    proxy.lose_next_reply(OpCode::Create2.as_i32());
    let guard = within(SOON, "the lock", Lock::new(&c, &dir).acquire())
        .await
        .unwrap();
    assert_eq!(proxy.replies_lost(), 1);
    let children = admin.get_children(&dir).await.unwrap();
    assert_eq!(children.len(), 1, "{children:?}");
    assert_eq!(format!("{dir}/{}", children[0]), guard.path());
    guard.release().await.unwrap();
}

// ---------------------------------------------------------------------------------------------------------
// Leader election

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_leader_and_a_successor_when_it_leaves() {
    let server = TestServer::start().await;
    let dir = format!("{}/election", unique_root("elect"));
    let mut clients = Vec::new();
    let mut cands = Vec::new();
    for i in 0..5 {
        let (c, _) = connect(&server.addr, Duration::from_secs(10)).await;
        let cand = LeaderElection::new(&c, &dir)
            .join(format!("c{i}").as_bytes())
            .await
            .unwrap();
        clients.push(c);
        cands.push(cand);
    }
    let leaders = |cands: &[_]| -> Vec<usize> {
        cands
            .iter()
            .enumerate()
            .filter(|(_, c): &(usize, &oxkeeper_client::recipes::Candidacy)| c.is_leader())
            .map(|(i, _)| i)
            .collect()
    };
    // join returns once the role is known: the first to join leads, the others follow.
    assert_eq!(leaders(&cands), vec![0]);
    assert!(cands[1..].iter().all(|c| c.role() == Role::Follower));
    let leader = cands[3].leader().await.unwrap().unwrap();
    assert_eq!(
        (leader.id.as_slice(), leader.path),
        (&b"c0"[..], cands[0].path())
    );
    let all = LeaderElection::new(&clients[0], &dir)
        .participants()
        .await
        .unwrap();
    assert_eq!(all.len(), 5);
    assert_eq!(all.iter().filter(|p| p.is_leader).count(), 1);

    // The leader's session closes: the next in line takes over, and only it.
    let mut roles0 = cands[0].roles();
    clients[0].close().await.unwrap();
    role_becomes(&mut roles0, SOON, |r| *r == Role::Lost(Error::Closed)).await;
    within(SOON, "c1 to lead", cands[1].wait_leader())
        .await
        .unwrap();
    assert_eq!(leaders(&cands), vec![1]);

    // A follower in the middle resigns: nobody's role changes but its own.
    let c3 = cands.remove(3);
    c3.resign().await.unwrap();
    assert_eq!(leaders(&cands), vec![1]);
    assert_eq!(cands[3].role(), Role::Follower);

    // The leader resigns: the next one leads; its node is gone.
    let c1 = cands.remove(1);
    let c1_path = c1.path();
    c1.resign().await.unwrap();
    assert!(clients[2].exists(&c1_path).await.unwrap().is_none());
    within(SOON, "c2 to lead", cands[1].wait_leader())
        .await
        .unwrap();
    assert_eq!(cands[2].leader().await.unwrap().unwrap().id, b"c2".to_vec());
    assert_eq!(leaders(&cands), vec![1]);
    // And a dropped candidacy resigns too.
    drop(cands.remove(1));
    within(SOON, "c4 to lead", cands[1].wait_leader())
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn candidates_keep_their_nodes_across_a_cut() {
    let server = TestServer::start().await;
    let leader_proxy = Proxy::start(&server.addr).await;
    let follower_proxy = Proxy::start(&server.addr).await;
    let dir = format!("{}/election", unique_root("elect-cut"));
    let (lc, mut lstates) = connect(&leader_proxy.addr(), Duration::from_secs(10)).await;
    let (fc, mut fstates) = connect(&follower_proxy.addr(), Duration::from_secs(10)).await;
    let (other, _) = connect(&server.addr, Duration::from_secs(10)).await;
    let leader = LeaderElection::new(&lc, &dir).join(b"l").await.unwrap();
    let follower = LeaderElection::new(&fc, &dir).join(b"f").await.unwrap();
    let last = LeaderElection::new(&other, &dir).join(b"o").await.unwrap();
    assert!(leader.is_leader());
    let (lpath, fpath) = (leader.path(), follower.path());

    // A follower cut off: suspended, then a follower again with the same node.
    let mut froles = follower.roles();
    follower_proxy.cut();
    wait_state(&mut fstates, State::Disconnected, SOON).await;
    role_becomes(&mut froles, SOON, |r| *r == Role::Suspended).await;
    follower_proxy.restore();
    wait_state(&mut fstates, State::Connected, SOON).await;
    role_becomes(&mut froles, SOON, |r| *r == Role::Follower).await;
    assert_eq!(follower.path(), fpath);
    assert_eq!(
        other.get_children(&dir).await.unwrap().len(),
        3,
        "no node added or lost"
    );

    // The leader cut off: not leader at once (nobody else leads meanwhile), then leader again.
    let mut lroles = leader.roles();
    leader_proxy.cut();
    wait_state(&mut lstates, State::Disconnected, SOON).await;
    role_becomes(&mut lroles, SOON, |r| *r == Role::Suspended).await;
    assert!(!leader.is_leader());
    assert_eq!(
        other.get_children(&dir).await.unwrap().len(),
        3,
        "its node stays while the session lives"
    );
    assert!(!follower.is_leader() && !last.is_leader());
    leader_proxy.restore();
    wait_state(&mut lstates, State::Connected, SOON).await;
    role_becomes(&mut lroles, SOON, |r| *r == Role::Leader).await;
    assert_eq!(leader.path(), lpath);
    assert_eq!(follower.role(), Role::Follower);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_whose_session_expires_learns_it_before_a_successor_leads() {
    let server = TestServer::start().await;
    let proxy = Proxy::start(&server.addr).await;
    let dir = format!("{}/election", unique_root("elect-exp"));
    let (lc, mut lstates) = connect(&proxy.addr(), Duration::from_millis(2000)).await;
    let t = lc.session_timeout();
    let (fc, _) = connect(&server.addr, Duration::from_secs(10)).await;
    let leader = LeaderElection::new(&lc, &dir).join(b"l").await.unwrap();
    let follower = LeaderElection::new(&fc, &dir).join(b"f").await.unwrap();
    assert!(leader.is_leader());
    let mut lroles = leader.roles();

    proxy.stall();
    let learned = role_becomes(&mut lroles, t + SOON, |r| *r != Role::Leader).await;
    assert_eq!(learned, Role::Suspended);
    within(2 * t + SOON, "the follower to lead", follower.wait_leader())
        .await
        .unwrap();
    assert!(!leader.is_leader(), "two leaders");
    wait_state(&mut lstates, State::Expired, 2 * t + SOON).await;
    role_becomes(&mut lroles, SOON, |r| {
        *r == Role::Lost(Error::SessionExpired)
    })
    .await;
    assert_eq!(leader.wait_leader().await, Err(Error::SessionExpired));
    assert_eq!(follower.leader_id().await.unwrap(), Some(b"f".to_vec()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn election_survives_a_lost_create_reply() {
    let server = TestServer::start().await;
    let proxy = Proxy::start(&server.addr).await;
    let (c, _) = connect(&proxy.addr(), Duration::from_secs(10)).await;
    let (other, _) = connect(&server.addr, Duration::from_secs(10)).await;
    let dir = format!("{}/election", unique_root("elect-lost"));
    ensure(&other, dir.rsplit_once('/').unwrap().0).await;
    ensure(&other, &dir).await;
    proxy.lose_next_reply(OpCode::Create2.as_i32());
    let cand = within(SOON, "join", LeaderElection::new(&c, &dir).join(b"x"))
        .await
        .unwrap();
    assert_eq!(proxy.replies_lost(), 1);
    assert!(cand.is_leader());
    let children = other.get_children(&dir).await.unwrap();
    assert_eq!(children.len(), 1, "{children:?}");
    assert_eq!(format!("{dir}/{}", children[0]), cand.path());
}

// ---------------------------------------------------------------------------------------------------------
// Tree cache

async fn create(c: &Client, path: &str, data: &[u8]) {
    c.create(path, data, &acl::open_unsafe(), CreateMode::Persistent)
        .await
        .unwrap_or_else(|e| panic!("create {path}: {e}"));
}

/// Waits for the next event that is not `Lagged`.
async fn next_event(events: &mut CacheEvents) -> CacheEvent {
    within(SOON, "a cache event", async {
        loop {
            match events.next().await.expect("events end") {
                CacheEvent::Lagged { .. } => {}
                e => return e,
            }
        }
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cache_loads_the_tree_and_follows_changes() {
    let server = TestServer::start().await;
    let (c, _) = connect(&server.addr, Duration::from_secs(10)).await;
    let root = unique_root("cache");
    create(&c, &root, b"root").await;
    for a in ["a", "b", "c"] {
        create(&c, &format!("{root}/{a}"), a.as_bytes()).await;
        for b in ["x", "y"] {
            create(&c, &format!("{root}/{a}/{b}"), b"").await;
            for n in 0..3 {
                create(&c, &format!("{root}/{a}/{b}/{n}"), &[n]).await;
            }
        }
    }
    let cache = TreeCache::start(&c, &root).await.unwrap();
    within(SOON, "initialized", cache.initialized())
        .await
        .unwrap();
    let tree = walk(&c, &root).await;
    assert_eq!(tree.len(), 1 + 3 + 6 + 18);
    assert_eq!(cache.snapshot(), tree, "{}", diff(&cache.snapshot(), &tree));
    assert_eq!(
        cache.children(&format!("{root}/a")).unwrap(),
        vec!["x".to_string(), "y".to_string()]
    );
    assert_eq!(cache.get(&format!("{root}/b")).unwrap().data, b"b");
    assert!(cache.get(&format!("{root}/nope")).is_none());

    let (_, mut events) = cache.snapshot_and_events();
    let d = format!("{root}/d");
    create(&c, &d, b"new").await;
    loop {
        // The parent's Stat (numChildren) may be reported first.
        match next_event(&mut events).await {
            CacheEvent::Added { path, node } if path == d => {
                assert_eq!(node.data, b"new");
                break;
            }
            CacheEvent::Updated { path, .. } if path == root => {}
            e => panic!("unexpected {e:?}"),
        }
    }
    c.set_data(&d, b"newer", ANY_VERSION).await.unwrap();
    loop {
        match next_event(&mut events).await {
            CacheEvent::Updated { path, node, .. } if path == d => {
                assert_eq!(node.data, b"newer");
                break;
            }
            CacheEvent::Updated { path, .. } if path == root => {}
            e => panic!("unexpected {e:?}"),
        }
    }
    // A deep subtree, made at once.
    let mut deep = d.clone();
    let mut multi = oxkeeper_client::Multi::new();
    for i in 0..6 {
        deep = format!("{deep}/l{i}");
        multi = multi.create(&deep, b"", &acl::open_unsafe(), CreateMode::Persistent);
    }
    c.multi(multi).await.unwrap();
    converges(&cache, &mut events, &walk(&c, &root).await, SOON).await;
    assert!(cache.get(&deep).is_some());
    // Deleting subtrees, deepest first as the server requires.
    for a in ["a", "d"] {
        let sub = format!("{root}/{a}");
        let mut paths: Vec<String> = walk(&c, &sub).await.into_keys().collect();
        paths.sort_by_key(|p| std::cmp::Reverse(p.len()));
        for p in paths {
            c.delete(&p, ANY_VERSION).await.unwrap();
        }
    }
    c.set_data(&format!("{root}/b/x/1"), b"changed", ANY_VERSION)
        .await
        .unwrap();
    converges(&cache, &mut events, &walk(&c, &root).await, SOON).await;
    assert!(cache.get(&d).is_none() && cache.get(&deep).is_none());
    assert_eq!(
        cache.children(&root).unwrap(),
        vec!["b".to_string(), "c".to_string()]
    );

    // The root itself goes and comes back.
    for p in walk(&c, &root).await.into_keys().rev() {
        c.delete(&p, ANY_VERSION).await.unwrap();
    }
    converges(&cache, &mut events, &BTreeMap::new(), SOON).await;
    create(&c, &root, b"again").await;
    create(&c, &format!("{root}/z"), b"").await;
    converges(&cache, &mut events, &walk(&c, &root).await, SOON).await;
    assert_eq!(cache.get(&root).unwrap().data, b"again");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cache_converges_after_cuts_during_writes_by_another_client() {
    const CUTS: usize = 4;
    let server = TestServer::start().await;
    let proxy = Proxy::start(&server.addr).await;
    let (writer, _) = connect(&server.addr, Duration::from_secs(10)).await;
    let (c, mut states) = connect(&proxy.addr(), Duration::from_secs(10)).await;
    let root = unique_root("cache-cut");
    create(&writer, &root, b"").await;
    let cache = TreeCache::start(&c, &root).await.unwrap();
    within(SOON, "initialized", cache.initialized())
        .await
        .unwrap();
    let (_, mut events) = cache.snapshot_and_events();

    // The writer changes a tree of at most 3 levels under the root at random until told to stop.
    let (progress_tx, mut progress) = watch::channel(0usize);
    let stop = Arc::new(AtomicBool::new(false));
    let writing = tokio::spawn({
        let (writer, root, stop) = (writer.clone(), root.clone(), stop.clone());
        async move {
            let mut rng = rand::rngs::StdRng::seed_from_u64(7);
            let open = acl::open_unsafe();
            let mut ops = 0usize;
            while !stop.load(Ordering::SeqCst) {
                let mut path = root.clone();
                for _ in 0..rng.gen_range(1..=3) {
                    path = format!("{path}/{}", ["a", "b", "c"][rng.gen_range(0..3)]);
                }
                let value = rng.gen::<u32>().to_string();
                let r = match writer.exists(&path).await.unwrap() {
                    None => writer
                        .create(&path, value.as_bytes(), &open, CreateMode::Persistent)
                        .await
                        .map(|_| ()),
                    Some(_) if rng.gen_bool(0.5) => writer.delete(&path, ANY_VERSION).await,
                    Some(_) => writer
                        .set_data(&path, value.as_bytes(), ANY_VERSION)
                        .await
                        .map(|_| ()),
                };
                match r {
                    Ok(()) | Err(Error::NoNode) | Err(Error::NotEmpty) => {}
                    Err(e) => panic!("writer: {e}"),
                }
                ops += 1;
                progress_tx.send_replace(ops);
            }
        }
    });
    let mut resyncs = 0;
    for _ in 0..CUTS {
        let now = *progress.borrow();
        within(
            SOON,
            "some writes while connected",
            progress.wait_for(|n| *n >= now + 20),
        )
        .await
        .unwrap();
        proxy.cut();
        wait_state(&mut states, State::Disconnected, SOON).await;
        let now = *progress.borrow();
        within(
            SOON,
            "writes while cut",
            progress.wait_for(|n| *n >= now + 50),
        )
        .await
        .unwrap();
        proxy.restore();
        wait_state(&mut states, State::Connected, SOON).await;
        within(SOON, "the resync", async {
            loop {
                match events.next().await.expect("events") {
                    CacheEvent::Resynced => return,
                    CacheEvent::Ended(e) => panic!("cache ended: {e}"),
                    _ => {}
                }
            }
        })
        .await;
        resyncs += 1;
    }
    stop.store(true, Ordering::SeqCst);
    within(SOON, "the writer", writing).await.unwrap();
    let tree = walk(&writer, &root).await;
    assert!(tree.len() > 1, "the writer left something to cache");
    converges(&cache, &mut events, &tree, SOON).await;
    assert_eq!(resyncs, CUTS);
    assert_eq!(c.state(), State::Connected);
    assert!(cache.ended().is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cache_ends_when_its_session_expires() {
    let server = TestServer::start().await;
    let proxy = Proxy::start(&server.addr).await;
    let (c, mut states) = connect(&proxy.addr(), Duration::from_millis(1000)).await;
    let t = c.session_timeout();
    let root = unique_root("cache-exp");
    create(&c, &root, b"").await;
    let cache = TreeCache::start(&c, &root).await.unwrap();
    cache.initialized().await.unwrap();
    let mut events = cache.events();
    proxy.cut();
    wait_state(&mut states, State::Expired, 2 * t + SOON).await;
    let e = next_event(&mut events).await;
    assert_eq!(e, CacheEvent::Ended(Error::SessionExpired));
    assert_eq!(cache.ended(), Some(Error::SessionExpired));
    assert!(
        cache.get(&root).is_some(),
        "the last known tree stays readable"
    );
}
