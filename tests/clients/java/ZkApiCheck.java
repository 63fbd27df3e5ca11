// Real-client compatibility check: drives every operation of the Apache ZooKeeper 3.8 Java client API
// against one server and asserts the results. Written and validated against Apache ZooKeeper 3.8.
//
//   java -cp out:/usr/share/java/zookeeper.jar:/usr/share/java/slf4j-nop.jar ZkApiCheck 127.0.0.1:PORT [--keep-going]
//
// Prints one line per check ("PASS <check>"); on the first mismatch it prints "FAIL <check>: <why>" and
// exits 1. With a second argument --keep-going it instead skips the rest of the failing section, carries on
// with the next section (they mostly use their own nodes) and exits 1 at the end. Assumes the server runs with tickTime=2000 (session timeouts clamp to 4000..40000 ms) and
// zookeeper.extendedTypesEnabled=true (TTL nodes), as tests/lib/servers.py configures both servers.
//
// Everything is created under a fresh /javaapi-<random> node, which is removed at the end.

import java.io.IOException;
import java.io.InputStream;
import java.io.OutputStream;
import java.net.InetAddress;
import java.net.InetSocketAddress;
import java.net.ServerSocket;
import java.net.Socket;
import java.nio.charset.StandardCharsets;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.Collections;
import java.util.HashSet;
import java.util.List;
import java.util.Random;
import java.util.Set;
import java.util.TreeSet;
import java.util.concurrent.CopyOnWriteArrayList;
import java.util.concurrent.CountDownLatch;
import java.util.concurrent.LinkedBlockingQueue;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.atomic.AtomicInteger;
import java.util.concurrent.atomic.AtomicReference;

import org.apache.zookeeper.AddWatchMode;
import org.apache.zookeeper.AsyncCallback;
import org.apache.zookeeper.CreateMode;
import org.apache.zookeeper.KeeperException;
import org.apache.zookeeper.KeeperException.Code;
import org.apache.zookeeper.Op;
import org.apache.zookeeper.OpResult;
import org.apache.zookeeper.WatchedEvent;
import org.apache.zookeeper.Watcher;
import org.apache.zookeeper.Watcher.Event.EventType;
import org.apache.zookeeper.Watcher.Event.KeeperState;
import org.apache.zookeeper.Watcher.WatcherType;
import org.apache.zookeeper.ZooDefs;
import org.apache.zookeeper.ZooDefs.Ids;
import org.apache.zookeeper.ZooDefs.Perms;
import org.apache.zookeeper.ZooKeeper;
import org.apache.zookeeper.data.ACL;
import org.apache.zookeeper.data.ClientInfo;
import org.apache.zookeeper.data.Id;
import org.apache.zookeeper.data.Stat;

public class ZkApiCheck {
    static String hp;
    static String root;
    static int checks = 0;
    static boolean keepGoing = false;   // --keep-going: after a failure, carry on with the next section
    interface Section { void run() throws Exception; }
    static final long EV_MS = 10000;      // how long to wait for an expected event
    static final long QUIET_MS = 700;     // how long to wait to be sure an event does NOT come
    static final List<ZooKeeper> handles = new CopyOnWriteArrayList<>();
    static final byte[] NODATA = new byte[0];

    // ------------------------------------------------------------------ assertion helpers

    static class CheckFailed extends RuntimeException {
        CheckFailed(String m) { super(m); }
    }

    static void pass(String name) {
        checks++;
        System.out.println("PASS " + name);
        System.out.flush();
    }

    static void fail(String name, String why) {
        throw new CheckFailed(name + ": " + why);
    }

    static void check(String name, boolean cond, String why) {
        if (!cond) fail(name, why);
        pass(name);
    }

    static void eq(String name, Object expected, Object actual) {
        boolean same = expected == null ? actual == null : expected.equals(actual);
        if (!same) fail(name, "expected <" + expected + "> but got <" + actual + ">");
        pass(name);
    }

    interface ZkCall { Object call() throws Exception; }

    /** The call must fail with exactly this KeeperException code. */
    static KeeperException expectKE(String name, Code code, ZkCall c) throws InterruptedException {
        try {
            Object r = c.call();
            fail(name, "expected KeeperException " + code + " but the call succeeded (" + r + ")");
        } catch (KeeperException e) {
            if (e.code() != code) fail(name, "expected " + code + " but got " + e.code() + " (" + e + ")");
            pass(name);
            return e;
        } catch (InterruptedException | CheckFailed e) {
            throw e;
        } catch (Exception e) {
            fail(name, "expected KeeperException " + code + " but got " + e);
        }
        return null;
    }

    static byte[] b(String s) { return s == null ? null : s.getBytes(StandardCharsets.UTF_8); }
    static String s(byte[] d) { return d == null ? null : new String(d, StandardCharsets.UTF_8); }
    static String p(String rel) { return root + rel; }
    static List<String> sorted(List<String> l) { List<String> c = new ArrayList<>(l); Collections.sort(c); return c; }

    // ------------------------------------------------------------------ watchers that record events

    /** Records every event; session events (type None) are kept apart so node-event checks can skip them. */
    static class Rec implements Watcher {
        final String name;
        final LinkedBlockingQueue<WatchedEvent> nodeEvents = new LinkedBlockingQueue<>();
        final LinkedBlockingQueue<KeeperState> states = new LinkedBlockingQueue<>();
        Rec(String name) { this.name = name; }
        @Override public void process(WatchedEvent e) {
            if (e.getType() == EventType.None) states.add(e.getState());
            else nodeEvents.add(e);
        }
    }

    static String ev(WatchedEvent e) { return e == null ? "no event" : e.getType() + " " + e.getPath() + " (" + e.getState() + ")"; }

    static void expectEvent(String name, Rec r, EventType type, String path) throws InterruptedException {
        WatchedEvent e = r.nodeEvents.poll(EV_MS, TimeUnit.MILLISECONDS);
        if (e == null) fail(name, "watcher " + r.name + ": no event within " + EV_MS + " ms, expected " + type + " " + path);
        if (e.getType() != type || !path.equals(e.getPath()) || e.getState() != KeeperState.SyncConnected)
            fail(name, "watcher " + r.name + ": expected " + type + " " + path + " (SyncConnected) but got " + ev(e));
        pass(name);
    }

    /** Expect exactly this set of events, in any order. */
    static void expectEvents(String name, Rec r, String... typeAndPath) throws InterruptedException {
        Set<String> want = new TreeSet<>(Arrays.asList(typeAndPath));
        Set<String> got = new TreeSet<>();
        long end = System.currentTimeMillis() + EV_MS;
        while (got.size() < want.size() && System.currentTimeMillis() < end) {
            WatchedEvent e = r.nodeEvents.poll(Math.max(1, end - System.currentTimeMillis()), TimeUnit.MILLISECONDS);
            if (e == null) break;
            String k = e.getType() + " " + e.getPath();
            if (!want.contains(k) || !got.add(k)) fail(name, "watcher " + r.name + ": unexpected event " + ev(e) + "; expected " + want);
        }
        if (!got.equals(want)) fail(name, "watcher " + r.name + ": expected events " + want + " but got " + got);
        pass(name);
    }

    static void expectNoEvent(String name, Rec r) throws InterruptedException {
        WatchedEvent e = r.nodeEvents.poll(QUIET_MS, TimeUnit.MILLISECONDS);
        if (e != null) fail(name, "watcher " + r.name + ": expected no event but got " + ev(e));
        pass(name);
    }

    static void expectState(String name, Rec r, KeeperState st, long ms) throws InterruptedException {
        long end = System.currentTimeMillis() + ms;
        List<KeeperState> seen = new ArrayList<>();
        while (System.currentTimeMillis() < end) {
            KeeperState k = r.states.poll(Math.max(1, end - System.currentTimeMillis()), TimeUnit.MILLISECONDS);
            if (k == null) break;
            seen.add(k);
            if (k == st) { pass(name); return; }
        }
        fail(name, "watcher " + r.name + ": expected session state " + st + " within " + ms + " ms; saw " + seen);
    }

    // ------------------------------------------------------------------ connections

    static ZooKeeper connect(String connectString, int timeoutMs, Rec w) throws Exception {
        ZooKeeper zk = new ZooKeeper(connectString, timeoutMs, w);
        handles.add(zk);
        expectStateQuiet(w, KeeperState.SyncConnected, 15000, "connect to " + connectString);
        return zk;
    }

    static void expectStateQuiet(Rec r, KeeperState st, long ms, String what) throws InterruptedException {
        long end = System.currentTimeMillis() + ms;
        List<KeeperState> seen = new ArrayList<>();
        while (System.currentTimeMillis() < end) {
            KeeperState k = r.states.poll(Math.max(1, end - System.currentTimeMillis()), TimeUnit.MILLISECONDS);
            if (k == null) break;
            seen.add(k);
            if (k == st) return;
        }
        fail(what, "expected session state " + st + " within " + ms + " ms; saw " + seen);
    }

    static void close(ZooKeeper zk) throws InterruptedException {
        handles.remove(zk);
        zk.close();
    }

    // ------------------------------------------------------------------ a TCP proxy we can cut

    /**
     * Forwards 127.0.0.1:<port> to the server. cut() kills the live connections. refuse(true) closes the
     * listening socket, so reconnect attempts get "connection refused" as from a stopped server;
     * refuse(false) listens on the same port again.
     */
    static class Proxy {
        volatile ServerSocket ss;
        final int port;
        final String upHost;
        final int upPort;
        volatile boolean closed = false;
        final List<Socket> live = new CopyOnWriteArrayList<>();
        final AtomicInteger accepted = new AtomicInteger();

        Proxy(String hostport) throws IOException {
            int i = hostport.lastIndexOf(':');
            upHost = hostport.substring(0, i);
            upPort = Integer.parseInt(hostport.substring(i + 1));
            ss = listen(0);
            port = ss.getLocalPort();
            startAccepting(ss);
        }

        static ServerSocket listen(int port) throws IOException {
            ServerSocket s = new ServerSocket();
            s.setReuseAddress(true);
            s.bind(new InetSocketAddress(InetAddress.getByName("127.0.0.1"), port), 50);
            return s;
        }

        String hostport() { return "127.0.0.1:" + port; }

        synchronized void refuse(boolean on) throws IOException, InterruptedException {
            if (on) {
                if (ss != null) { ss.close(); ss = null; }
                return;
            }
            if (ss != null || closed) return;
            IOException last = null;
            for (int attempt = 0; attempt < 50; attempt++) {
                try {
                    ss = listen(port);
                    startAccepting(ss);
                    return;
                } catch (IOException e) {
                    last = e;
                    Thread.sleep(100);
                }
            }
            throw new IOException("proxy: cannot listen on port " + port + " again", last);
        }

        void startAccepting(ServerSocket server) {
            Thread t = new Thread(() -> acceptLoop(server), "proxy-accept");
            t.setDaemon(true);
            t.start();
        }

        void acceptLoop(ServerSocket server) {
            while (!server.isClosed()) {
                try {
                    Socket c = server.accept();
                    Socket u = new Socket();
                    u.connect(new InetSocketAddress(upHost, upPort), 5000);
                    c.setTcpNoDelay(true);
                    u.setTcpNoDelay(true);
                    live.add(c);
                    live.add(u);
                    accepted.incrementAndGet();
                    pump(c, u);
                    pump(u, c);
                } catch (IOException e) {
                    // listener closed (refuse/close) or upstream refused: loop condition decides
                }
            }
        }

        void pump(Socket from, Socket to) {
            Thread t = new Thread(() -> {
                byte[] buf = new byte[65536];
                try (InputStream in = from.getInputStream(); OutputStream out = to.getOutputStream()) {
                    int n;
                    while ((n = in.read(buf)) > 0) { out.write(buf, 0, n); out.flush(); }
                } catch (IOException ignored) {
                } finally {
                    try { from.close(); } catch (IOException ignored) { }
                    try { to.close(); } catch (IOException ignored) { }
                    live.remove(from);
                    live.remove(to);
                }
            }, "proxy-pump");
            t.setDaemon(true);
            t.start();
        }

        void cut() {
            for (Socket s : live) { try { s.close(); } catch (IOException ignored) { } }
            live.clear();
        }

        synchronized void close() throws IOException {
            closed = true;
            if (ss != null) { ss.close(); ss = null; }
            cut();
        }
    }

    // ------------------------------------------------------------------ the checks

    static ZooKeeper zk1;   // main session
    static Rec w1;          // zk1's default watcher
    static ZooKeeper zk2;   // a second session (other client)
    static Rec w2;

    public static void main(String[] args) throws Exception {
        if (args.length < 1) {
            System.err.println("usage: ZkApiCheck host:port [--keep-going]");
            System.exit(2);
        }
        hp = args[0];
        keepGoing = args.length > 1 && args[1].equals("--keep-going");
        root = "/javaapi-" + Long.toHexString(new Random().nextLong() & Long.MAX_VALUE);
        Thread watchdog = new Thread(() -> {
            try { Thread.sleep(300_000); } catch (InterruptedException e) { return; }
            System.out.println("FAIL watchdog: the whole check took more than 300 s");
            System.out.flush();
            Runtime.getRuntime().halt(3);
        });
        watchdog.setDaemon(true);
        watchdog.start();
        long t0 = System.currentTimeMillis();
        int rc = 0;
        Section[] sections = {
            ZkApiCheck::sessionBasics, ZkApiCheck::createModes, ZkApiCheck::createErrorsAndPaths, ZkApiCheck::readWriteDelete,
            ZkApiCheck::childrenAndCounts, ZkApiCheck::aclsAndAuth, ZkApiCheck::syncOp, ZkApiCheck::multiOps,
            ZkApiCheck::standardWatches, ZkApiCheck::persistentWatches, ZkApiCheck::removeAndCheckWatches, ZkApiCheck::asyncOps,
            ZkApiCheck::chroot, ZkApiCheck::reconnectResetsWatchesAndAuth, ZkApiCheck::sessionLifecycle, ZkApiCheck::cleanup,
        };
        int failedSections = 0;
        for (int i = 0; i < sections.length; i++) {
            try {
                sections[i].run();
            } catch (CheckFailed e) {
                System.out.println("FAIL " + e.getMessage());
                rc = 1;
            } catch (Throwable e) {
                System.out.println("FAIL unexpected exception after " + checks + " checks: " + e);
                e.printStackTrace(System.out);
                rc = 1;
            }
            if (rc != 0) {
                failedSections++;
                // The first section sets up the sessions and the test root everything else needs.
                if (!keepGoing || i == 0) break;
                System.out.println("(--keep-going: skipping the rest of that section)");
                rc = 0;
            }
        }
        if (failedSections > 0) rc = 1;
        for (ZooKeeper zk : handles) { try { zk.close(1000); } catch (Throwable ignored) { } }
        long dt = System.currentTimeMillis() - t0;
        if (rc == 0) System.out.println("java: all " + checks + " checks passed in " + dt + " ms");
        else System.out.println("java: FAILED (" + checks + " checks passed, " + failedSections + " section(s) failed, " + dt + " ms)");
        System.out.flush();
        Runtime.getRuntime().halt(rc);
    }

    // ---- session basics: handshake values, timeout negotiation, initial tree
    static void sessionBasics() throws Exception {
        w1 = new Rec("w1");
        zk1 = connect(hp, 10000, w1);
        check("session: connected state", zk1.getState() == ZooKeeper.States.CONNECTED, "state " + zk1.getState());
        check("session: session id non-zero", zk1.getSessionId() != 0, "id 0");
        eq("session: password is 16 bytes", 16, zk1.getSessionPasswd().length);
        eq("session: negotiated timeout 10000 kept", 10000, zk1.getSessionTimeout());
        w2 = new Rec("w2");
        zk2 = connect(hp, 10000, w2);
        check("session: second session has another id", zk2.getSessionId() != zk1.getSessionId(), "same id");

        Rec wl = new Rec("low");
        ZooKeeper low = connect(hp, 1000, wl);
        eq("session: timeout 1000 clamped up to minSessionTimeout 2*tick", 4000, low.getSessionTimeout());
        close(low);
        Rec wh = new Rec("high");
        ZooKeeper high = connect(hp, 100000, wh);
        eq("session: timeout 100000 clamped down to maxSessionTimeout 20*tick", 40000, high.getSessionTimeout());
        close(high);

        check("tree: / has child zookeeper", zk1.getChildren("/", false).contains("zookeeper"), "children of /: " + zk1.getChildren("/", false));
        check("tree: /zookeeper has child quota", zk1.getChildren("/zookeeper", false).contains("quota"), "children: " + zk1.getChildren("/zookeeper", false));
        expectKE("tree: delete /zookeeper is BADARGUMENTS", Code.BADARGUMENTS, () -> { zk1.delete("/zookeeper", -1); return null; });
        expectKE("tree: delete / is BADARGUMENTS", Code.BADARGUMENTS, () -> { zk1.delete("/", -1); return null; });
        Stat rs = zk1.exists("/", false);
        check("tree: exists / gives a stat", rs != null, "null");

        String r = zk1.create(root, b("root"), Ids.OPEN_ACL_UNSAFE, CreateMode.PERSISTENT);
        eq("setup: create test root " + root, root, r);
    }

    // ---- create in every CreateMode, create2 (with Stat), TTL
    static void createModes() throws Exception {
        long before = System.currentTimeMillis();
        Stat st = new Stat();
        String r = zk1.create(p("/persistent"), b("v0"), Ids.OPEN_ACL_UNSAFE, CreateMode.PERSISTENT, st);
        eq("create2 PERSISTENT: returned path", p("/persistent"), r);
        eq("create2 PERSISTENT: stat version 0", 0, st.getVersion());
        eq("create2 PERSISTENT: stat cversion 0", 0, st.getCversion());
        eq("create2 PERSISTENT: stat aversion 0", 0, st.getAversion());
        eq("create2 PERSISTENT: stat dataLength", 2, st.getDataLength());
        eq("create2 PERSISTENT: stat numChildren 0", 0, st.getNumChildren());
        eq("create2 PERSISTENT: stat ephemeralOwner 0", 0L, st.getEphemeralOwner());
        check("create2 PERSISTENT: czxid == mzxid == pzxid > 0", st.getCzxid() > 0 && st.getCzxid() == st.getMzxid() && st.getPzxid() == st.getCzxid(),
              "czxid " + st.getCzxid() + " mzxid " + st.getMzxid() + " pzxid " + st.getPzxid());
        check("create2 PERSISTENT: ctime == mtime, close to the wall clock", st.getCtime() == st.getMtime() && Math.abs(st.getCtime() - before) < 60000,
              "ctime " + st.getCtime() + " mtime " + st.getMtime() + " now " + before);
        eq("create2 PERSISTENT: stat equals exists() stat", st, zk1.exists(p("/persistent"), false));

        eq("create PERSISTENT: returns path", p("/plain"), zk1.create(p("/plain"), null, Ids.OPEN_ACL_UNSAFE, CreateMode.PERSISTENT));
        Stat ns = new Stat();
        byte[] nd = zk1.getData(p("/plain"), false, ns);
        eq("create with null data: getData returns null", null, nd);
        eq("create with null data: dataLength 0", 0, ns.getDataLength());
        zk1.create(p("/empty"), NODATA, Ids.OPEN_ACL_UNSAFE, CreateMode.PERSISTENT);
        byte[] ed = zk1.getData(p("/empty"), false, null);
        check("create with empty data: getData returns empty (non-null) array", ed != null && ed.length == 0, "got " + (ed == null ? "null" : ed.length + " bytes"));

        st = new Stat();
        zk1.create(p("/eph"), b("e"), Ids.OPEN_ACL_UNSAFE, CreateMode.EPHEMERAL, st);
        eq("create2 EPHEMERAL: ephemeralOwner is the session id", zk1.getSessionId(), st.getEphemeralOwner());
        eq("exists EPHEMERAL: ephemeralOwner is the session id", zk1.getSessionId(), zk1.exists(p("/eph"), false).getEphemeralOwner());

        zk1.create(p("/seq"), null, Ids.OPEN_ACL_UNSAFE, CreateMode.PERSISTENT);
        eq("create PERSISTENT_SEQUENTIAL: first suffix 0000000000", p("/seq/n-0000000000"),
           zk1.create(p("/seq/n-"), null, Ids.OPEN_ACL_UNSAFE, CreateMode.PERSISTENT_SEQUENTIAL));
        zk1.create(p("/seq/plain"), null, Ids.OPEN_ACL_UNSAFE, CreateMode.PERSISTENT);
        eq("create PERSISTENT_SEQUENTIAL: counter counts every child creation", p("/seq/n-0000000002"),
           zk1.create(p("/seq/n-"), null, Ids.OPEN_ACL_UNSAFE, CreateMode.PERSISTENT_SEQUENTIAL));
        zk1.delete(p("/seq/plain"), -1);
        zk1.delete(p("/seq/n-0000000002"), -1);
        st = new Stat();
        String es = zk1.create(p("/seq/e-"), null, Ids.OPEN_ACL_UNSAFE, CreateMode.EPHEMERAL_SEQUENTIAL, st);
        eq("create EPHEMERAL_SEQUENTIAL: deletes do not reuse sequence numbers", p("/seq/e-0000000003"), es);
        eq("create EPHEMERAL_SEQUENTIAL: ephemeralOwner is the session id", zk1.getSessionId(), st.getEphemeralOwner());
        Stat ps = zk1.exists(p("/seq"), false);
        eq("parent stat: numChildren after 4 creates and 2 deletes", 2, ps.getNumChildren());
        eq("parent stat: cversion counts creates + deletes", 6, ps.getCversion());
        eq("parent stat: pzxid is the zxid of the last child change", st.getCzxid(), ps.getPzxid());
        eq("create sequential: name with no prefix", p("/seq/0000000004"),
           zk1.create(p("/seq/"), null, Ids.OPEN_ACL_UNSAFE, CreateMode.PERSISTENT_SEQUENTIAL));

        st = new Stat();
        eq("create2 CONTAINER: returned path", p("/container"),
           zk1.create(p("/container"), b("c"), Ids.OPEN_ACL_UNSAFE, CreateMode.CONTAINER, st));
        eq("create2 CONTAINER: client-visible ephemeralOwner is 0", 0L, st.getEphemeralOwner());
        eq("create CONTAINER (no stat): returned path", p("/container2"),
           zk1.create(p("/container2"), b("c"), Ids.OPEN_ACL_UNSAFE, CreateMode.CONTAINER));
        zk1.create(p("/container/child"), null, Ids.OPEN_ACL_UNSAFE, CreateMode.PERSISTENT);
        eq("CONTAINER: can hold children", Arrays.asList("child"), zk1.getChildren(p("/container"), false));

        st = new Stat();
        eq("create2 PERSISTENT_WITH_TTL: returned path", p("/ttl"),
           zk1.create(p("/ttl"), b("t"), Ids.OPEN_ACL_UNSAFE, CreateMode.PERSISTENT_WITH_TTL, st, 3_600_000L));
        eq("create2 PERSISTENT_WITH_TTL: client-visible ephemeralOwner is 0", 0L, st.getEphemeralOwner());
        eq("create2 PERSISTENT_WITH_TTL: stat matches exists()", st, zk1.exists(p("/ttl"), false));
        st = new Stat();
        eq("create2 PERSISTENT_SEQUENTIAL_WITH_TTL: sequential name", p("/ttl/s-0000000000"),
           zk1.create(p("/ttl/s-"), null, Ids.OPEN_ACL_UNSAFE, CreateMode.PERSISTENT_SEQUENTIAL_WITH_TTL, st, 3_600_000L));
        eq("create2 PERSISTENT_SEQUENTIAL_WITH_TTL: ephemeralOwner 0", 0L, st.getEphemeralOwner());
    }

    // ---- error codes of create, path rules
    static void createErrorsAndPaths() throws Exception {
        expectKE("create: existing node is NODEEXISTS", Code.NODEEXISTS,
                 () -> zk1.create(p("/persistent"), null, Ids.OPEN_ACL_UNSAFE, CreateMode.PERSISTENT));
        expectKE("create: missing parent is NONODE", Code.NONODE,
                 () -> zk1.create(p("/nope/child"), null, Ids.OPEN_ACL_UNSAFE, CreateMode.PERSISTENT));
        expectKE("create: child of an ephemeral is NOCHILDRENFOREPHEMERALS", Code.NOCHILDRENFOREPHEMERALS,
                 () -> zk1.create(p("/eph/child"), null, Ids.OPEN_ACL_UNSAFE, CreateMode.PERSISTENT));
        expectKE("create: sequential child of an ephemeral is NOCHILDRENFOREPHEMERALS", Code.NOCHILDRENFOREPHEMERALS,
                 () -> zk1.create(p("/eph/child-"), null, Ids.OPEN_ACL_UNSAFE, CreateMode.PERSISTENT_SEQUENTIAL));
        expectKE("create: ACL auth:: with no authenticated id is INVALIDACL", Code.INVALIDACL,
                 () -> zk1.create(p("/authacl"), null, Ids.CREATOR_ALL_ACL, CreateMode.PERSISTENT));
        expectKE("create: digest ACL id without ':' is INVALIDACL", Code.INVALIDACL,
                 () -> zk1.create(p("/badacl"), null, Collections.singletonList(new ACL(Perms.ALL, new Id("digest", "nocolon"))), CreateMode.PERSISTENT));
        expectKE("create: ACL with unknown scheme is INVALIDACL", Code.INVALIDACL,
                 () -> zk1.create(p("/badacl"), null, Collections.singletonList(new ACL(Perms.ALL, new Id("bogus", "x"))), CreateMode.PERSISTENT));
        String uni = p("/unicodé-ü-日本");
        eq("create: non-ASCII path round-trips", uni,
           zk1.create(uni, b("u"), Ids.OPEN_ACL_UNSAFE, CreateMode.PERSISTENT));
        check("getChildren: non-ASCII name listed", zk1.getChildren(root, false).contains(uni.substring(root.length() + 1)), "children " + zk1.getChildren(root, false));
        zk1.delete(uni, -1);
        // Children may be created under /zookeeper (only the special nodes themselves are protected).
        String zkChild = "/zookeeper/javaapi-" + Long.toHexString(new Random().nextLong() & Long.MAX_VALUE);
        eq("create: child under /zookeeper allowed", zkChild, zk1.create(zkChild, null, Ids.OPEN_ACL_UNSAFE, CreateMode.EPHEMERAL));
        zk1.delete(zkChild, -1);
        expectKE("setData /zookeeper/config (read-only ACL) is NOAUTH", Code.NOAUTH, () -> zk1.setData("/zookeeper/config", b("x"), -1));
    }

    // ---- exists / getData / setData / delete with versions
    static void readWriteDelete() throws Exception {
        eq("exists: missing node gives null", null, zk1.exists(p("/missing"), false));
        expectKE("getData: missing node is NONODE", Code.NONODE, () -> zk1.getData(p("/missing"), false, null));
        Stat st = new Stat();
        eq("getData: data", "v0", s(zk1.getData(p("/persistent"), false, st)));
        Stat before = st;
        Stat s1 = zk1.setData(p("/persistent"), b("v1"), 0);
        eq("setData: version 0 -> 1", 1, s1.getVersion());
        check("setData: mzxid grows, czxid unchanged", s1.getMzxid() > before.getMzxid() && s1.getCzxid() == before.getCzxid(), "before " + before + " after " + s1);
        check("setData: mtime >= ctime", s1.getMtime() >= s1.getCtime(), s1.toString());
        eq("setData: dataLength", 2, s1.getDataLength());
        expectKE("setData: wrong version is BADVERSION", Code.BADVERSION, () -> zk1.setData(p("/persistent"), b("x"), 0));
        Stat s2 = zk1.setData(p("/persistent"), b("version-any"), -1);
        eq("setData: version -1 matches any", 2, s2.getVersion());
        eq("getData: new data", "version-any", s(zk1.getData(p("/persistent"), false, null)));
        expectKE("setData: missing node is NONODE", Code.NONODE, () -> zk1.setData(p("/missing"), b("x"), -1));
        Stat s3 = zk1.setData(p("/persistent"), null, -1);
        eq("setData null: getData returns null", null, zk1.getData(p("/persistent"), false, null));
        eq("setData null: dataLength 0", 0, s3.getDataLength());

        byte[] big = new byte[512 * 1024];
        new Random(7).nextBytes(big);
        zk1.setData(p("/persistent"), big, -1);
        check("setData/getData: 512 KiB value round-trips", Arrays.equals(big, zk1.getData(p("/persistent"), false, null)), "data differs");
        zk1.setData(p("/persistent"), b("v"), -1);

        zk1.create(p("/del"), null, Ids.OPEN_ACL_UNSAFE, CreateMode.PERSISTENT);
        zk1.create(p("/del/c"), null, Ids.OPEN_ACL_UNSAFE, CreateMode.PERSISTENT);
        expectKE("delete: node with children is NOTEMPTY", Code.NOTEMPTY, () -> { zk1.delete(p("/del"), -1); return null; });
        expectKE("delete: wrong version is BADVERSION", Code.BADVERSION, () -> { zk1.delete(p("/del/c"), 5); return null; });
        zk1.delete(p("/del/c"), 0);
        pass("delete: matching version");
        zk1.delete(p("/del"), -1);
        eq("delete: node gone", null, zk1.exists(p("/del"), false));
        expectKE("delete: missing node is NONODE", Code.NONODE, () -> { zk1.delete(p("/del"), -1); return null; });
        Stat rs = zk1.exists(root, false);
        check("parent pzxid moves on child delete", rs.getPzxid() >= rs.getCzxid(), rs.toString());
    }

    // ---- getChildren with/without Stat, getAllChildrenNumber, getEphemerals
    static void childrenAndCounts() throws Exception {
        zk1.create(p("/kids"), null, Ids.OPEN_ACL_UNSAFE, CreateMode.PERSISTENT);
        for (String c : new String[] {"b", "a", "c"}) zk1.create(p("/kids/" + c), null, Ids.OPEN_ACL_UNSAFE, CreateMode.PERSISTENT);
        zk1.create(p("/kids/a/x"), null, Ids.OPEN_ACL_UNSAFE, CreateMode.PERSISTENT);
        zk1.create(p("/kids/a/x/y"), null, Ids.OPEN_ACL_UNSAFE, CreateMode.PERSISTENT);
        eq("getChildren: names", Arrays.asList("a", "b", "c"), sorted(zk1.getChildren(p("/kids"), false)));
        Stat st = new Stat();
        List<String> kids = zk1.getChildren(p("/kids"), false, st);
        eq("getChildren2: names", Arrays.asList("a", "b", "c"), sorted(kids));
        eq("getChildren2: stat numChildren", 3, st.getNumChildren());
        eq("getChildren2: stat cversion", 3, st.getCversion());
        eq("getChildren2: stat equals exists()", zk1.exists(p("/kids"), false), st);
        eq("getChildren: leaf has none", Collections.emptyList(), zk1.getChildren(p("/kids/b"), false));
        expectKE("getChildren: missing node is NONODE", Code.NONODE, () -> zk1.getChildren(p("/missing"), false));
        eq("getAllChildrenNumber: all descendants", 5, zk1.getAllChildrenNumber(p("/kids")));
        eq("getAllChildrenNumber: leaf is 0", 0, zk1.getAllChildrenNumber(p("/kids/c")));
        expectKE("getAllChildrenNumber: missing node is NONODE", Code.NONODE, () -> zk1.getAllChildrenNumber(p("/missing")));

        zk2.create(p("/kids/eph2"), null, Ids.OPEN_ACL_UNSAFE, CreateMode.EPHEMERAL);
        zk1.create(p("/kids/eph1"), null, Ids.OPEN_ACL_UNSAFE, CreateMode.EPHEMERAL);
        List<String> mine = zk1.getEphemerals();
        Set<String> expect = new HashSet<>(Arrays.asList(p("/eph"), p("/seq/e-0000000003"), p("/kids/eph1")));
        eq("getEphemerals(): this session's ephemerals only", expect, new HashSet<>(mine));
        eq("getEphemerals(prefix)", Arrays.asList(p("/kids/eph1")), zk1.getEphemerals(p("/kids")));
        eq("getEphemerals(prefix) of the other session", Arrays.asList(p("/kids/eph2")), zk2.getEphemerals(p("/kids/eph")));
        eq("getEphemerals(prefix) matching nothing", Collections.emptyList(), zk1.getEphemerals(p("/nothing-here")));
        zk2.delete(p("/kids/eph2"), -1);
        zk1.delete(p("/kids/eph1"), -1);
    }

    // ---- ACLs, digest auth, whoAmI
    static void aclsAndAuth() throws Exception {
        List<ACL> acl = zk1.getACL(p("/persistent"), new Stat());
        eq("getACL: default world:anyone ALL", Ids.OPEN_ACL_UNSAFE, acl);
        Stat st = new Stat();
        zk1.getACL(p("/persistent"), st);
        eq("getACL: stat aversion 0", 0, st.getAversion());
        expectKE("setACL: wrong aversion is BADVERSION", Code.BADVERSION, () -> zk1.setACL(p("/persistent"), Ids.READ_ACL_UNSAFE, 3));
        Stat s1 = zk1.setACL(p("/persistent"), Ids.READ_ACL_UNSAFE, 0);
        eq("setACL: aversion 0 -> 1", 1, s1.getAversion());
        eq("setACL: data version unchanged", 5, s1.getVersion());
        eq("getACL: after setACL", Ids.READ_ACL_UNSAFE, zk1.getACL(p("/persistent"), null));
        expectKE("READ-only ACL: setData is NOAUTH", Code.NOAUTH, () -> zk1.setData(p("/persistent"), b("x"), -1));
        expectKE("READ-only ACL: create child is NOAUTH", Code.NOAUTH, () -> zk1.create(p("/persistent/c"), null, Ids.OPEN_ACL_UNSAFE, CreateMode.PERSISTENT));
        expectKE("READ-only ACL: setACL is NOAUTH", Code.NOAUTH, () -> zk1.setACL(p("/persistent"), Ids.OPEN_ACL_UNSAFE, -1));
        eq("READ-only ACL: getData allowed", "v", s(zk1.getData(p("/persistent"), false, null)));
        expectKE("getACL: missing node is NONODE", Code.NONODE, () -> zk1.getACL(p("/missing"), null));
        expectKE("setACL: empty ACL is INVALIDACL", Code.INVALIDACL, () -> zk1.setACL(p("/persistent"), Collections.emptyList(), -1));

        List<ClientInfo> who = zk1.whoAmI();
        eq("whoAmI: unauthenticated connection is ip:127.0.0.1", "[ip:127.0.0.1]", infos(who));

        // a session authenticated with digest user:password creates an auth-only node
        Rec wa = new Rec("wa");
        ZooKeeper za = connect(hp, 10000, wa);
        za.addAuthInfo("digest", b("user:password"));
        String whoA = infos(za.whoAmI());   // checked at the end of this section
        za.create(p("/secret"), b("s3cret"), Ids.CREATOR_ALL_ACL, CreateMode.PERSISTENT);
        List<ACL> sacl = za.getACL(p("/secret"), null);
        eq("auth: CREATOR_ALL_ACL expands to the digest id (base64 SHA1)",
           Collections.singletonList(new ACL(Perms.ALL, new Id("digest", "user:tpUq/4Pn5A64fVZyQ0gOJ8ZWqkY="))), sacl);
        eq("auth: owner reads its node", "s3cret", s(za.getData(p("/secret"), false, null)));
        expectKE("auth: other session getData is NOAUTH", Code.NOAUTH, () -> zk1.getData(p("/secret"), false, null));
        expectKE("auth: other session setData is NOAUTH", Code.NOAUTH, () -> zk1.setData(p("/secret"), b("x"), -1));
        expectKE("auth: other session getChildren is NOAUTH", Code.NOAUTH, () -> zk1.getChildren(p("/secret"), false));
        expectKE("auth: other session create child is NOAUTH", Code.NOAUTH, () -> zk1.create(p("/secret/x"), null, Ids.OPEN_ACL_UNSAFE, CreateMode.PERSISTENT));
        expectKE("auth: other session getACL (no READ/ADMIN) is NOAUTH", Code.NOAUTH, () -> zk1.getACL(p("/secret"), null));
        // exists on an existing node without READ: ZooKeeper <= 3.8.3 (Debian's 3.8.0) returns the stat;
        // ZOOKEEPER-2590 (3.9.2+, 3.8.4+) answers NOAUTH. Both are accepted here.
        try {
            Stat es = zk1.exists(p("/secret"), false);
            check("auth: exists on an unreadable node gives its stat (pre ZOOKEEPER-2590)", es != null, "null stat for an existing node");
        } catch (KeeperException.NoAuthException e) {
            pass("auth: exists on an unreadable node is NOAUTH (ZOOKEEPER-2590)");
        }
        expectKE("auth: other session getAllChildrenNumber is NOAUTH", Code.NOAUTH, () -> zk1.getAllChildrenNumber(p("/secret")));
        za.create(p("/secret/c"), null, Ids.OPEN_ACL_UNSAFE, CreateMode.PERSISTENT);
        expectKE("auth: delete needs DELETE on the parent: NOAUTH", Code.NOAUTH, () -> { zk1.delete(p("/secret/c"), -1); return null; });
        expectKE("auth: multi with an unauthorized op is NOAUTH", Code.NOAUTH,
                 () -> zk1.multi(Arrays.asList(Op.create(p("/multi-noauth"), null, Ids.OPEN_ACL_UNSAFE, CreateMode.PERSISTENT), Op.setData(p("/secret"), b("x"), -1))));
        eq("auth: failed multi created nothing", null, zk1.exists(p("/multi-noauth"), false));

        Rec wb = new Rec("wb");
        ZooKeeper zb = connect(hp, 10000, wb);
        zb.addAuthInfo("digest", b("user:wrong"));
        expectKE("auth: wrong password getData is NOAUTH", Code.NOAUTH, () -> zb.getData(p("/secret"), false, null));
        zb.addAuthInfo("digest", b("user:password"));
        eq("auth: a second addAuthInfo with the right password grants access", "s3cret", s(zb.getData(p("/secret"), false, null)));
        String whoB = infos(zb.whoAmI());
        close(zb);

        // explicit digest ACL given by id, READ for everyone + ALL for the user
        String digest = "user:tpUq/4Pn5A64fVZyQ0gOJ8ZWqkY=";
        List<ACL> mixed = Arrays.asList(new ACL(Perms.READ, Ids.ANYONE_ID_UNSAFE), new ACL(Perms.ALL, new Id("digest", digest)));
        zk1.create(p("/mixed"), b("m"), mixed, CreateMode.PERSISTENT);
        eq("digest ACL by id: getACL round-trip (caller with ADMIN)", mixed, za.getACL(p("/mixed"), null));
        eq("digest ACL by id: getACL with READ but no ADMIN masks the digest to user:x",
           Arrays.asList(new ACL(Perms.READ, Ids.ANYONE_ID_UNSAFE), new ACL(Perms.ALL, new Id("digest", "user:x"))), zk1.getACL(p("/mixed"), null));
        expectKE("digest ACL by id: unauthenticated setData is NOAUTH", Code.NOAUTH, () -> zk1.setData(p("/mixed"), b("x"), -1));
        za.setData(p("/mixed"), b("m2"), -1);
        eq("digest ACL by id: authenticated setData allowed, others read", "m2", s(zk1.getData(p("/mixed"), false, null)));
        zk1.create(p("/ipacl"), null, Collections.singletonList(new ACL(Perms.ALL, new Id("ip", "127.0.0.1"))), CreateMode.PERSISTENT);
        zk1.setData(p("/ipacl"), b("i"), -1);
        pass("ip ACL 127.0.0.1: allows this client");
        zk1.create(p("/ipacl-other"), null, Collections.singletonList(new ACL(Perms.ALL, new Id("ip", "10.9.8.7"))), CreateMode.PERSISTENT);
        expectKE("ip ACL 10.9.8.7: denies this client", Code.NOAUTH, () -> zk1.getData(p("/ipacl-other"), false, null));
        zk1.create(p("/ipacl-net"), null, Collections.singletonList(new ACL(Perms.ALL, new Id("ip", "127.0.0.0/8"))), CreateMode.PERSISTENT);
        zk1.setData(p("/ipacl-net"), b("n"), -1);
        pass("ip ACL 127.0.0.0/8: allows this client");
        za.delete(p("/secret/c"), -1);
        // auth:: ACL with an authenticated session: setACL via auth scheme
        za.create(p("/secret2"), null, Ids.OPEN_ACL_UNSAFE, CreateMode.PERSISTENT);
        za.setACL(p("/secret2"), Ids.CREATOR_ALL_ACL, -1);
        eq("setACL auth:: expands to the session's digest id",
           Collections.singletonList(new ACL(Perms.ALL, new Id("digest", digest))), za.getACL(p("/secret2"), null));
        close(za);

        // an unknown auth scheme fails the connection: AuthFailed state
        Rec wf = new Rec("wf");
        ZooKeeper zf = connect(hp, 10000, wf);
        zf.addAuthInfo("nosuchscheme", b("whatever"));
        expectState("auth: unknown scheme -> AuthFailed event", wf, KeeperState.AuthFailed, EV_MS);
        check("auth: unknown scheme -> handle state AUTH_FAILED", zf.getState() == ZooKeeper.States.AUTH_FAILED, "state " + zf.getState());
        close(zf);

        eq("whoAmI: after addAuthInfo digest (user name without the password hash)", "[digest:user, ip:127.0.0.1]", whoA);
        eq("whoAmI: two digest ids for the same user", "[digest:user, digest:user, ip:127.0.0.1]", whoB);
    }

    static String desc(OpResult r) {
        if (r instanceof OpResult.ErrorResult) return "ErrorResult(" + Code.get(((OpResult.ErrorResult) r).getErr()) + ")";
        if (r instanceof OpResult.GetDataResult) return "GetDataResult(" + s(((OpResult.GetDataResult) r).getData()) + ")";
        if (r instanceof OpResult.GetChildrenResult) return "GetChildrenResult(" + ((OpResult.GetChildrenResult) r).getChildren() + ")";
        if (r instanceof OpResult.CreateResult) return "CreateResult(" + ((OpResult.CreateResult) r).getPath() + ")";
        return String.valueOf(r) + " type " + (r == null ? "" : r.getType());
    }

    static String infos(List<ClientInfo> l) {
        List<String> r = new ArrayList<>();
        for (ClientInfo c : l) r.add(c.getAuthScheme() + ":" + c.getUser());
        Collections.sort(r);
        return r.toString();
    }

    // ---- sync
    static void syncOp() throws Exception {
        CountDownLatch l = new CountDownLatch(1);
        AtomicReference<String> got = new AtomicReference<>();
        AtomicInteger rc = new AtomicInteger(99);
        zk1.sync(p("/persistent"), (r, path, ctx) -> { rc.set(r); got.set(path + "|" + ctx); l.countDown(); }, "ctx");
        check("sync: callback within 10 s", l.await(10, TimeUnit.SECONDS), "no callback");
        eq("sync: rc OK", 0, rc.get());
        eq("sync: path and ctx", p("/persistent") + "|ctx", got.get());
        CountDownLatch l2 = new CountDownLatch(1);
        zk1.sync("/", (r, path, ctx) -> { rc.set(r); l2.countDown(); }, null);
        check("sync /: callback", l2.await(10, TimeUnit.SECONDS) && rc.get() == 0, "rc " + rc.get());
    }

    // ---- multi (writes), transaction(), multi failure results, multiRead
    static void multiOps() throws Exception {
        zk1.create(p("/m"), b("m0"), Ids.OPEN_ACL_UNSAFE, CreateMode.PERSISTENT);
        List<OpResult> res = zk1.multi(Arrays.asList(
            Op.create(p("/m/a"), b("a"), Ids.OPEN_ACL_UNSAFE, CreateMode.PERSISTENT),
            Op.create(p("/m/s-"), null, Ids.OPEN_ACL_UNSAFE, CreateMode.PERSISTENT_SEQUENTIAL),
            Op.create(p("/m/e"), null, Ids.OPEN_ACL_UNSAFE, CreateMode.EPHEMERAL),
            Op.create(p("/m/cont"), null, Ids.OPEN_ACL_UNSAFE, CreateMode.CONTAINER),
            Op.create(p("/m/ttl"), null, Ids.OPEN_ACL_UNSAFE, CreateMode.PERSISTENT_WITH_TTL, 3_600_000L),
            Op.setData(p("/m"), b("m1"), 0),
            Op.check(p("/m"), 1),
            Op.delete(p("/m/a"), 0)));
        eq("multi: 8 results", 8, res.size());
        check("multi: result types create,create,create,create,create,setData,check,delete",
              res.get(0) instanceof OpResult.CreateResult && res.get(1) instanceof OpResult.CreateResult && res.get(2) instanceof OpResult.CreateResult
              && res.get(3) instanceof OpResult.CreateResult && res.get(4) instanceof OpResult.CreateResult
              && res.get(5) instanceof OpResult.SetDataResult && res.get(6) instanceof OpResult.CheckResult && res.get(7) instanceof OpResult.DeleteResult,
              "got " + res.stream().map(ZkApiCheck::desc).collect(java.util.stream.Collectors.toList()));
        eq("multi: create path", p("/m/a"), ((OpResult.CreateResult) res.get(0)).getPath());
        eq("multi: sequential create path", p("/m/s-0000000001"), ((OpResult.CreateResult) res.get(1)).getPath());
        eq("multi: plain create result carries no stat (opcode create)", null, ((OpResult.CreateResult) res.get(0)).getStat());
        Stat cs = ((OpResult.CreateResult) res.get(3)).getStat();
        check("multi: container create result carries a stat (create2 response)", cs != null && cs.getCzxid() > 0, "stat " + cs);
        Stat ts = ((OpResult.CreateResult) res.get(4)).getStat();
        check("multi: TTL create result carries a stat", ts != null && ts.getEphemeralOwner() == 0, "stat " + ts);
        eq("multi: ephemeral owned by the session", zk1.getSessionId(), zk1.exists(p("/m/e"), false).getEphemeralOwner());
        Stat sd = ((OpResult.SetDataResult) res.get(5)).getStat();
        eq("multi: setData result stat version", 1, sd.getVersion());
        check("multi: all ops share one zxid", sd.getMzxid() == cs.getCzxid(), "setData mzxid " + sd.getMzxid() + " container czxid " + cs.getCzxid());
        eq("multi: delete applied", null, zk1.exists(p("/m/a"), false));
        eq("multi: setData applied", "m1", s(zk1.getData(p("/m"), false, null)));

        // a failing multi: nothing applied, results: OK before, real error, RUNTIMEINCONSISTENCY after
        long zxBefore = zk1.exists(p("/m"), false).getMzxid();
        KeeperException ke = expectKE("multi failure: throws the failing op's code (BADVERSION)", Code.BADVERSION, () -> zk1.multi(Arrays.asList(
            Op.create(p("/m/x"), null, Ids.OPEN_ACL_UNSAFE, CreateMode.PERSISTENT),
            Op.setData(p("/m"), b("zz"), -1),
            Op.check(p("/m"), 42),
            Op.delete(p("/m/e"), -1))));
        List<OpResult> er = ke.getResults();
        check("multi failure: 4 ErrorResults", er != null && er.size() == 4 && er.stream().allMatch(r -> r instanceof OpResult.ErrorResult), "results " + (er == null ? null : er.stream().map(ZkApiCheck::desc).collect(java.util.stream.Collectors.toList())));
        int[] codes = new int[4];
        for (int i = 0; i < 4; i++) codes[i] = ((OpResult.ErrorResult) er.get(i)).getErr();
        eq("multi failure: error codes OK, OK, BADVERSION, RUNTIMEINCONSISTENCY",
           Arrays.toString(new int[] {0, 0, Code.BADVERSION.intValue(), Code.RUNTIMEINCONSISTENCY.intValue()}), Arrays.toString(codes));
        eq("multi failure: create rolled back", null, zk1.exists(p("/m/x"), false));
        eq("multi failure: setData rolled back", "m1", s(zk1.getData(p("/m"), false, null)));
        check("multi failure: ephemeral not deleted", zk1.exists(p("/m/e"), false) != null, "deleted");
        eq("multi failure: mzxid unchanged", zxBefore, zk1.exists(p("/m"), false).getMzxid());
        KeeperException ke2 = expectKE("multi failure: NONODE on first op", Code.NONODE, () -> zk1.multi(Arrays.asList(
            Op.delete(p("/m/none"), -1), Op.create(p("/m/y"), null, Ids.OPEN_ACL_UNSAFE, CreateMode.PERSISTENT))));
        eq("multi failure: first op failing gives NONODE, RUNTIMEINCONSISTENCY", "[" + Code.NONODE.intValue() + ", " + Code.RUNTIMEINCONSISTENCY.intValue() + "]",
           Arrays.toString(ke2.getResults().stream().mapToInt(r -> ((OpResult.ErrorResult) r).getErr()).toArray()));
        expectKE("multi failure: NODEEXISTS inside multi", Code.NODEEXISTS, () -> zk1.multi(Arrays.asList(
            Op.create(p("/m/z"), null, Ids.OPEN_ACL_UNSAFE, CreateMode.PERSISTENT),
            Op.create(p("/m/z"), null, Ids.OPEN_ACL_UNSAFE, CreateMode.PERSISTENT))));
        eq("multi failure: duplicate create rolled back", null, zk1.exists(p("/m/z"), false));
        // ops inside one multi see the effects of earlier ops
        List<OpResult> chain = zk1.multi(Arrays.asList(
            Op.create(p("/m/n"), b("1"), Ids.OPEN_ACL_UNSAFE, CreateMode.PERSISTENT),
            Op.create(p("/m/n/c"), null, Ids.OPEN_ACL_UNSAFE, CreateMode.PERSISTENT),
            Op.setData(p("/m/n"), b("2"), 0),
            Op.check(p("/m/n"), 1),
            Op.delete(p("/m/n/c"), 0),
            Op.delete(p("/m/n"), 1)));
        eq("multi: chained ops on a node created in the same multi", 6, chain.size());
        eq("multi: chained node gone", null, zk1.exists(p("/m/n"), false));
        eq("multi: empty op list gives empty result", Collections.emptyList(), zk1.multi(Collections.emptyList()));

        List<OpResult> tr = zk1.transaction().create(p("/m/t"), b("t"), Ids.OPEN_ACL_UNSAFE, CreateMode.PERSISTENT)
                               .check(p("/m/t"), 0).setData(p("/m/t"), b("t2"), 0).commit();
        eq("transaction(): 3 results", 3, tr.size());
        eq("transaction(): applied", "t2", s(zk1.getData(p("/m/t"), false, null)));

        CountDownLatch l = new CountDownLatch(1);
        AtomicReference<List<OpResult>> ares = new AtomicReference<>();
        AtomicInteger arc = new AtomicInteger(99);
        zk1.multi(Arrays.asList(Op.check(p("/m/t"), 1), Op.delete(p("/m/t"), 1)), (rc, path, ctx, opResults) -> {
            arc.set(rc); ares.set(opResults); l.countDown(); }, null);
        check("async multi: callback", l.await(10, TimeUnit.SECONDS), "no callback");
        eq("async multi: rc OK", 0, arc.get());
        eq("async multi: 2 results", 2, ares.get().size());
        CountDownLatch l2 = new CountDownLatch(1);
        zk1.multi(Arrays.asList(Op.check(p("/m/none"), 0)), (rc, path, ctx, opResults) -> { arc.set(rc); ares.set(opResults); l2.countDown(); }, null);
        check("async multi failure: callback", l2.await(10, TimeUnit.SECONDS), "no callback");
        eq("async multi failure: rc NONODE", Code.NONODE.intValue(), arc.get());

        // multiRead: only getData / getChildren ops; each failing read gets its own ErrorResult
        zk1.create(p("/m/r"), b("rd"), Ids.OPEN_ACL_UNSAFE, CreateMode.PERSISTENT);
        zk1.create(p("/m/r/k1"), null, Ids.OPEN_ACL_UNSAFE, CreateMode.PERSISTENT);
        zk1.create(p("/m/r/k2"), null, Ids.OPEN_ACL_UNSAFE, CreateMode.PERSISTENT);
        List<OpResult> rr = zk1.multi(Arrays.asList(Op.getData(p("/m/r")), Op.getChildren(p("/m/r")), Op.getData(p("/m/missing")),
                                                    Op.getChildren(p("/m/missing")), Op.getData(p("/secret")), Op.getData(p("/m"))));
        eq("multiRead: 6 results", 6, rr.size());
        check("multiRead: getData result", rr.get(0) instanceof OpResult.GetDataResult && "rd".equals(s(((OpResult.GetDataResult) rr.get(0)).getData())), "got " + desc(rr.get(0)));
        eq("multiRead: getData stat", zk1.exists(p("/m/r"), false), ((OpResult.GetDataResult) rr.get(0)).getStat());
        check("multiRead: getChildren result", rr.get(1) instanceof OpResult.GetChildrenResult, "got " + desc(rr.get(1)));
        eq("multiRead: children", Arrays.asList("k1", "k2"), sorted(((OpResult.GetChildrenResult) rr.get(1)).getChildren()));
        check("multiRead: missing getData is ErrorResult NONODE", rr.get(2) instanceof OpResult.ErrorResult && ((OpResult.ErrorResult) rr.get(2)).getErr() == Code.NONODE.intValue(), "got " + desc(rr.get(2)));
        check("multiRead: missing getChildren is ErrorResult NONODE", rr.get(3) instanceof OpResult.ErrorResult && ((OpResult.ErrorResult) rr.get(3)).getErr() == Code.NONODE.intValue(), "got " + desc(rr.get(3)));
        check("multiRead: unreadable node is ErrorResult NOAUTH", rr.get(4) instanceof OpResult.ErrorResult && ((OpResult.ErrorResult) rr.get(4)).getErr() == Code.NOAUTH.intValue(), "got " + desc(rr.get(4)));
        check("multiRead: reads after a failed one still succeed", rr.get(5) instanceof OpResult.GetDataResult && "m1".equals(s(((OpResult.GetDataResult) rr.get(5)).getData())), "got " + desc(rr.get(5)));
        try {
            zk1.multi(Arrays.asList(Op.getData(p("/m/r")), Op.check(p("/m/r"), 0)));
            fail("multi: mixing read and write ops is rejected (client side)", "accepted");
        } catch (IllegalArgumentException e) {
            pass("multi: mixing read and write ops is rejected (client side)");
        }
    }

    // ---- one-shot watches: exists, getData, getChildren; default watcher; two sessions; ordering
    static void standardWatches() throws Exception {
        zk1.create(p("/w"), null, Ids.OPEN_ACL_UNSAFE, CreateMode.PERSISTENT);
        Rec ex = new Rec("exists");
        eq("exists watch on missing node: null", null, zk1.exists(p("/w/a"), ex));
        zk2.create(p("/w/a"), b("1"), Ids.OPEN_ACL_UNSAFE, CreateMode.PERSISTENT);
        expectEvent("exists watch: NodeCreated", ex, EventType.NodeCreated, p("/w/a"));
        zk2.setData(p("/w/a"), b("2"), -1);
        expectNoEvent("exists watch: one-shot (no second event)", ex);

        Rec gd = new Rec("getData");
        zk1.getData(p("/w/a"), gd, null);
        zk2.setData(p("/w/a"), b("3"), -1);
        expectEvent("getData watch: NodeDataChanged", gd, EventType.NodeDataChanged, p("/w/a"));
        zk1.getData(p("/w/a"), gd, null);
        zk2.delete(p("/w/a"), -1);
        expectEvent("getData watch: NodeDeleted", gd, EventType.NodeDeleted, p("/w/a"));

        Rec ex2 = new Rec("exists-existing");
        zk2.create(p("/w/b"), null, Ids.OPEN_ACL_UNSAFE, CreateMode.PERSISTENT);
        zk1.exists(p("/w/b"), ex2);
        zk2.setData(p("/w/b"), b("x"), -1);
        expectEvent("exists watch on existing node: NodeDataChanged", ex2, EventType.NodeDataChanged, p("/w/b"));
        zk1.exists(p("/w/b"), ex2);
        zk2.delete(p("/w/b"), -1);
        expectEvent("exists watch on existing node: NodeDeleted", ex2, EventType.NodeDeleted, p("/w/b"));

        Rec ch = new Rec("children");
        zk1.getChildren(p("/w"), ch);
        zk2.create(p("/w/c"), null, Ids.OPEN_ACL_UNSAFE, CreateMode.PERSISTENT);
        expectEvent("getChildren watch: NodeChildrenChanged on child create", ch, EventType.NodeChildrenChanged, p("/w"));
        zk1.getChildren(p("/w"), ch, new Stat());
        zk2.setData(p("/w/c"), b("x"), -1);
        expectNoEvent("getChildren watch: child data change does not fire", ch);
        zk2.delete(p("/w/c"), -1);
        expectEvent("getChildren2 watch: NodeChildrenChanged on child delete", ch, EventType.NodeChildrenChanged, p("/w"));
        zk2.create(p("/w/d"), null, Ids.OPEN_ACL_UNSAFE, CreateMode.PERSISTENT);
        zk1.getChildren(p("/w/d"), ch);
        zk2.delete(p("/w/d"), -1);
        expectEvent("getChildren watch: NodeDeleted when the watched node is deleted", ch, EventType.NodeDeleted, p("/w/d"));
        expectNoEvent("getChildren watch on /w was one-shot (already fired)", ch);

        // data + child watch on the same node by the same watcher: delete fires NodeDeleted once per watch kind
        Rec both = new Rec("both");
        zk2.create(p("/w/e"), null, Ids.OPEN_ACL_UNSAFE, CreateMode.PERSISTENT);
        zk1.getData(p("/w/e"), both, null);
        zk1.getChildren(p("/w/e"), both);
        zk2.delete(p("/w/e"), -1);
        expectEvent("data+child watch, same watcher: NodeDeleted delivered", both, EventType.NodeDeleted, p("/w/e"));
        expectNoEvent("data+child watch, same watcher: delivered only once", both);

        // default watcher (watch=true)
        zk2.create(p("/w/f"), null, Ids.OPEN_ACL_UNSAFE, CreateMode.PERSISTENT);
        zk1.getData(p("/w/f"), true, null);
        zk2.setData(p("/w/f"), b("x"), -1);
        expectEvent("default watcher (watch=true): NodeDataChanged", w1, EventType.NodeDataChanged, p("/w/f"));
        zk1.exists(p("/w/g"), true);
        zk2.create(p("/w/g"), null, Ids.OPEN_ACL_UNSAFE, CreateMode.EPHEMERAL);
        expectEvent("default watcher (watch=true): NodeCreated", w1, EventType.NodeCreated, p("/w/g"));

        // the same watcher on the same path for two registrations fires once; two watchers fire both
        Rec wa = new Rec("wa"), wb = new Rec("wb");
        zk1.getData(p("/w/f"), wa, null);
        zk1.getData(p("/w/f"), wa, null);
        zk1.exists(p("/w/f"), wb);
        zk2.setData(p("/w/f"), b("y"), -1);
        expectEvent("same watcher registered twice: one event", wa, EventType.NodeDataChanged, p("/w/f"));
        expectNoEvent("same watcher registered twice: no duplicate", wa);
        expectEvent("second watcher on the same path also fires", wb, EventType.NodeDataChanged, p("/w/f"));

        // the writer's own watch fires before the reply to its write (watch event before new data)
        List<String> order = Collections.synchronizedList(new ArrayList<>());
        zk1.getData(p("/w/f"), e -> order.add("event " + e.getType()), null);
        CountDownLatch l = new CountDownLatch(1);
        zk1.setData(p("/w/f"), b("z"), -1, (rc, path, ctx, stat) -> { order.add("reply " + rc); l.countDown(); }, null);
        check("own write: reply arrives", l.await(10, TimeUnit.SECONDS), "no reply");
        eq("own write: watch event is delivered before the write's reply", Arrays.asList("event NodeDataChanged", "reply 0"), new ArrayList<>(order));

        // ephemeral deleted by session close fires watches of other sessions
        Rec gone = new Rec("gone");
        zk1.exists(p("/w/g"), gone);
        zk1.getChildren(p("/w"), gone);
        Rec w3 = new Rec("w3");
        ZooKeeper z3 = connect(hp, 10000, w3);
        z3.create(p("/w/h"), null, Ids.OPEN_ACL_UNSAFE, CreateMode.EPHEMERAL);
        expectEvent("child watch: NodeChildrenChanged for an ephemeral create", gone, EventType.NodeChildrenChanged, p("/w"));
        zk1.exists(p("/w/h"), gone);
        zk1.getChildren(p("/w"), gone);
        close(z3);
        expectEvents("session close: NodeDeleted + parent NodeChildrenChanged", gone, "NodeDeleted " + p("/w/h"), "NodeChildrenChanged " + p("/w"));
        eq("session close: ephemeral gone right after close() returns", null, zk1.exists(p("/w/h"), false));
    }

    // ---- addWatch PERSISTENT and PERSISTENT_RECURSIVE
    static void persistentWatches() throws Exception {
        zk1.create(p("/pw"), null, Ids.OPEN_ACL_UNSAFE, CreateMode.PERSISTENT);
        Rec pw = new Rec("persistent");
        zk1.addWatch(p("/pw/node"), pw, AddWatchMode.PERSISTENT);
        pass("addWatch PERSISTENT on a missing node: OK");
        zk2.create(p("/pw/node"), b("0"), Ids.OPEN_ACL_UNSAFE, CreateMode.PERSISTENT);
        expectEvent("PERSISTENT: NodeCreated", pw, EventType.NodeCreated, p("/pw/node"));
        zk2.setData(p("/pw/node"), b("1"), -1);
        expectEvent("PERSISTENT: NodeDataChanged", pw, EventType.NodeDataChanged, p("/pw/node"));
        zk2.setData(p("/pw/node"), b("2"), -1);
        expectEvent("PERSISTENT: fires again (not one-shot)", pw, EventType.NodeDataChanged, p("/pw/node"));
        zk2.create(p("/pw/node/kid"), null, Ids.OPEN_ACL_UNSAFE, CreateMode.PERSISTENT);
        expectEvent("PERSISTENT: NodeChildrenChanged for a child", pw, EventType.NodeChildrenChanged, p("/pw/node"));
        zk2.create(p("/pw/node/kid/grand"), null, Ids.OPEN_ACL_UNSAFE, CreateMode.PERSISTENT);
        zk2.setData(p("/pw/node/kid"), b("x"), -1);
        expectNoEvent("PERSISTENT: grandchildren and child data are not watched", pw);
        zk2.delete(p("/pw/node/kid/grand"), -1);
        zk2.delete(p("/pw/node/kid"), -1);
        expectEvent("PERSISTENT: NodeChildrenChanged on child delete", pw, EventType.NodeChildrenChanged, p("/pw/node"));
        zk2.delete(p("/pw/node"), -1);
        expectEvent("PERSISTENT: NodeDeleted", pw, EventType.NodeDeleted, p("/pw/node"));
        zk2.create(p("/pw/node"), null, Ids.OPEN_ACL_UNSAFE, CreateMode.PERSISTENT);
        expectEvent("PERSISTENT: survives delete, fires NodeCreated again", pw, EventType.NodeCreated, p("/pw/node"));

        Rec rw = new Rec("recursive");
        zk1.addWatch(p("/pw/tree"), rw, AddWatchMode.PERSISTENT_RECURSIVE);
        zk2.create(p("/pw/tree"), null, Ids.OPEN_ACL_UNSAFE, CreateMode.PERSISTENT);
        expectEvent("PERSISTENT_RECURSIVE: NodeCreated on the node", rw, EventType.NodeCreated, p("/pw/tree"));
        zk2.create(p("/pw/tree/a"), null, Ids.OPEN_ACL_UNSAFE, CreateMode.PERSISTENT);
        expectEvent("PERSISTENT_RECURSIVE: NodeCreated on a child (no NodeChildrenChanged)", rw, EventType.NodeCreated, p("/pw/tree/a"));
        zk2.create(p("/pw/tree/a/b"), null, Ids.OPEN_ACL_UNSAFE, CreateMode.PERSISTENT);
        expectEvent("PERSISTENT_RECURSIVE: NodeCreated on a grandchild", rw, EventType.NodeCreated, p("/pw/tree/a/b"));
        zk2.setData(p("/pw/tree/a/b"), b("x"), -1);
        expectEvent("PERSISTENT_RECURSIVE: NodeDataChanged on a grandchild", rw, EventType.NodeDataChanged, p("/pw/tree/a/b"));
        zk2.delete(p("/pw/tree/a/b"), -1);
        expectEvent("PERSISTENT_RECURSIVE: NodeDeleted on a grandchild", rw, EventType.NodeDeleted, p("/pw/tree/a/b"));
        zk2.create(p("/pw/treeish"), null, Ids.OPEN_ACL_UNSAFE, CreateMode.PERSISTENT);
        zk2.setData(p("/pw"), b("x"), -1);
        expectNoEvent("PERSISTENT_RECURSIVE: sibling with the same prefix and the parent do not fire", rw);
        zk2.multi(Arrays.asList(Op.create(p("/pw/tree/m1"), null, Ids.OPEN_ACL_UNSAFE, CreateMode.PERSISTENT),
                                Op.setData(p("/pw/tree/a"), b("y"), -1)));
        expectEvents("PERSISTENT_RECURSIVE: multi fires every op's event", rw, "NodeCreated " + p("/pw/tree/m1"), "NodeDataChanged " + p("/pw/tree/a"));

        // persistent watch plus a one-shot watch on the same node, both fire
        Rec one = new Rec("one-shot");
        zk1.getData(p("/pw/node"), one, null);
        zk2.setData(p("/pw/node"), b("z"), -1);
        expectEvent("PERSISTENT + one-shot on the same node: persistent fires", pw, EventType.NodeDataChanged, p("/pw/node"));
        expectEvent("PERSISTENT + one-shot on the same node: one-shot fires", one, EventType.NodeDataChanged, p("/pw/node"));

        // addWatch with the default watcher
        zk1.addWatch(p("/pw/dflt"), AddWatchMode.PERSISTENT);
        zk2.create(p("/pw/dflt"), null, Ids.OPEN_ACL_UNSAFE, CreateMode.PERSISTENT);
        expectEvent("addWatch with the default watcher: NodeCreated", w1, EventType.NodeCreated, p("/pw/dflt"));

        // removing persistent watches (3.8's WatcherType has only Children/Data/Any)
        zk1.removeWatches(p("/pw/tree"), rw, WatcherType.Any, false);
        expectEvent("removeWatches(Any) on a recursive watch: PersistentWatchRemoved", rw, EventType.PersistentWatchRemoved, p("/pw/tree"));
        zk2.create(p("/pw/tree/after"), null, Ids.OPEN_ACL_UNSAFE, CreateMode.PERSISTENT);
        expectNoEvent("recursive watch removed: no more events", rw);
        zk1.removeAllWatches(p("/pw/node"), WatcherType.Any, false);
        expectEvent("removeAllWatches(Any) on a persistent watch: PersistentWatchRemoved", pw, EventType.PersistentWatchRemoved, p("/pw/node"));
        zk2.setData(p("/pw/node"), b("after"), -1);
        expectNoEvent("persistent watch removed: no more events", pw);
        zk1.removeAllWatches(p("/pw/dflt"), WatcherType.Any, false);
        expectEvent("removeAllWatches of the default watcher's persistent watch: PersistentWatchRemoved", w1, EventType.PersistentWatchRemoved, p("/pw/dflt"));
    }

    // ---- removeWatches (checkWatches opcode 17 on the wire) and removeAllWatches (opcode 18)
    static void removeAndCheckWatches() throws Exception {
        zk1.create(p("/rw"), null, Ids.OPEN_ACL_UNSAFE, CreateMode.PERSISTENT);
        Rec a = new Rec("a"), c = new Rec("c");
        zk1.getData(p("/rw"), a, null);
        zk1.getChildren(p("/rw"), c);
        zk1.removeWatches(p("/rw"), a, WatcherType.Data, false);
        expectEvent("removeWatches(Data): DataWatchRemoved to that watcher", a, EventType.DataWatchRemoved, p("/rw"));
        zk2.setData(p("/rw"), b("x"), -1);
        expectNoEvent("removeWatches(Data): removed watcher not called on change", a);
        expectKE("removeWatches: watcher not registered is NOWATCHER", Code.NOWATCHER,
                 () -> { zk1.removeWatches(p("/rw"), a, WatcherType.Data, false); return null; });
        zk1.removeWatches(p("/rw"), c, WatcherType.Children, false);
        expectEvent("removeWatches(Children): ChildWatchRemoved", c, EventType.ChildWatchRemoved, p("/rw"));
        zk2.create(p("/rw/k"), null, Ids.OPEN_ACL_UNSAFE, CreateMode.PERSISTENT);
        expectNoEvent("removeWatches(Children): removed watcher not called on child create", c);

        // removeAllWatches of one type keeps the other
        Rec d = new Rec("d");
        zk1.getData(p("/rw"), d, null);
        zk1.getChildren(p("/rw"), d);
        zk1.removeAllWatches(p("/rw"), WatcherType.Children, false);
        expectEvent("removeAllWatches(Children): ChildWatchRemoved", d, EventType.ChildWatchRemoved, p("/rw"));
        zk2.setData(p("/rw"), b("y"), -1);
        expectEvent("removeAllWatches(Children): data watch still fires", d, EventType.NodeDataChanged, p("/rw"));
        expectKE("removeAllWatches: nothing left on the server is NOWATCHER", Code.NOWATCHER,
                 () -> { zk1.removeAllWatches(p("/rw"), WatcherType.Any, false); return null; });

        Rec e = new Rec("e"), f = new Rec("f");
        zk1.exists(p("/rw/missing"), e);
        zk1.getData(p("/rw/k"), f, null);
        zk1.getChildren(p("/rw/k"), f);
        zk1.removeAllWatches(p("/rw/missing"), WatcherType.Data, false);
        expectEvent("removeAllWatches(Data) removes an exists watch on a missing node", e, EventType.DataWatchRemoved, p("/rw/missing"));
        zk1.removeAllWatches(p("/rw/k"), WatcherType.Any, false);
        expectEvents("removeAllWatches(Any): both watch kinds removed", f, "DataWatchRemoved " + p("/rw/k"), "ChildWatchRemoved " + p("/rw/k"));
        zk2.create(p("/rw/missing"), null, Ids.OPEN_ACL_UNSAFE, CreateMode.PERSISTENT);
        zk2.create(p("/rw/k/x"), null, Ids.OPEN_ACL_UNSAFE, CreateMode.PERSISTENT);
        expectNoEvent("removed exists watch does not fire", e);
        expectNoEvent("removed data/child watches do not fire", f);

        // two watchers on one path: removing one (checkWatches, opcode 17) keeps the other working
        Rec g = new Rec("g"), g2 = new Rec("g2");
        zk1.getData(p("/rw/k"), g, null);
        zk1.getData(p("/rw/k"), g2, null);
        zk1.removeWatches(p("/rw/k"), g, WatcherType.Data, false);
        expectEvent("removeWatches of one of two watchers: DataWatchRemoved", g, EventType.DataWatchRemoved, p("/rw/k"));
        zk2.setData(p("/rw/k"), b("k"), -1);
        expectEvent("removeWatches of one of two watchers: the other still fires", g2, EventType.NodeDataChanged, p("/rw/k"));
        expectNoEvent("removeWatches of one of two watchers: removed one stays quiet", g);
        expectKE("removeAllWatches after everything fired is NOWATCHER", Code.NOWATCHER,
                 () -> { zk1.removeAllWatches(p("/rw/k"), WatcherType.Data, false); return null; });
        expectKE("removeWatches on a path never watched is NOWATCHER", Code.NOWATCHER,
                 () -> { zk1.removeAllWatches(p("/rw/never"), WatcherType.Any, false); return null; });
        expectKE("checkWatches for a watcher never registered is NOWATCHER", Code.NOWATCHER,
                 () -> { zk1.removeWatches(p("/rw/never"), g, WatcherType.Any, false); return null; });

        // local removal: no server round trip; the watch stays on the server but the client drops the event
        Rec h = new Rec("h");
        zk1.getData(p("/rw"), h, null);
        zk1.removeWatches(p("/rw"), h, WatcherType.Data, true);
        expectEvent("removeWatches(local=true): DataWatchRemoved", h, EventType.DataWatchRemoved, p("/rw"));
        zk2.setData(p("/rw"), b("z"), -1);
        expectNoEvent("removeWatches(local=true): no event afterwards", h);

        // async removeWatches
        Rec i = new Rec("i");
        zk1.getChildren(p("/rw"), i);
        CountDownLatch l = new CountDownLatch(1);
        AtomicInteger rc = new AtomicInteger(99);
        zk1.removeAllWatches(p("/rw"), WatcherType.Children, false, (r, path, ctx) -> { rc.set(r); l.countDown(); }, null);
        check("async removeAllWatches: callback", l.await(10, TimeUnit.SECONDS), "no callback");
        eq("async removeAllWatches: rc OK", 0, rc.get());
        expectEvent("async removeAllWatches: ChildWatchRemoved", i, EventType.ChildWatchRemoved, p("/rw"));
    }

    // ---- async variants and pipelining order
    static void asyncOps() throws Exception {
        final List<String> log = Collections.synchronizedList(new ArrayList<>());
        CountDownLatch done = new CountDownLatch(8);
        zk1.create(p("/as"), b("a"), Ids.OPEN_ACL_UNSAFE, CreateMode.PERSISTENT,
                   (AsyncCallback.StringCallback) (rc, path, ctx, name) -> { log.add("create " + rc + " " + name + " " + ctx); done.countDown(); }, "c1");
        zk1.create(p("/as/k"), null, Ids.OPEN_ACL_UNSAFE, CreateMode.EPHEMERAL,
                   (AsyncCallback.Create2Callback) (rc, path, ctx, name, stat) -> { log.add("create2 " + rc + " " + name + " owner=" + (stat.getEphemeralOwner() == zk1.getSessionId())); done.countDown(); }, null);
        zk1.exists(p("/as"), false, (rc, path, ctx, stat) -> { log.add("exists " + rc + " v" + stat.getVersion()); done.countDown(); }, null);
        zk1.setData(p("/as"), b("b"), 0, (rc, path, ctx, stat) -> { log.add("setData " + rc + " v" + stat.getVersion()); done.countDown(); }, null);
        zk1.getData(p("/as"), false, (rc, path, ctx, data, stat) -> { log.add("getData " + rc + " " + s(data) + " v" + stat.getVersion()); done.countDown(); }, null);
        zk1.getChildren(p("/as"), false, (AsyncCallback.Children2Callback) (rc, path, ctx, ch, stat) -> { log.add("getChildren2 " + rc + " " + ch + " n" + stat.getNumChildren()); done.countDown(); }, null);
        zk1.delete(p("/as/missing"), -1, (rc, path, ctx) -> { log.add("delete " + rc); done.countDown(); }, null);
        zk1.getACL(p("/as"), new Stat(), (rc, path, ctx, acl, stat) -> { log.add("getACL " + rc + " " + acl.size()); done.countDown(); }, null);
        check("async: all 8 callbacks", done.await(10, TimeUnit.SECONDS), "got " + log);
        eq("async: callbacks in request order with the right results", Arrays.asList(
            "create 0 " + p("/as") + " c1", "create2 0 " + p("/as/k") + " owner=true", "exists 0 v0", "setData 0 v1",
            "getData 0 b v1", "getChildren2 0 [k] n1", "delete " + Code.NONODE.intValue(), "getACL 0 1"), new ArrayList<>(log));

        CountDownLatch d2 = new CountDownLatch(4);
        List<String> log2 = Collections.synchronizedList(new ArrayList<>());
        zk1.getEphemerals(p("/as"), (rc, ctx, paths) -> { log2.add("eph " + rc + " " + paths); d2.countDown(); }, null);
        zk1.getAllChildrenNumber(p("/as"), (rc, path, ctx, n) -> { log2.add("count " + rc + " " + n); d2.countDown(); }, null);
        zk1.addWatch(p("/as"), new Rec("aw"), AddWatchMode.PERSISTENT_RECURSIVE, (rc, path, ctx) -> { log2.add("addWatch " + rc); d2.countDown(); }, null);
        zk1.exists(p("/as/none"), false, (rc, path, ctx, stat) -> { log2.add("exists " + rc + " " + stat); d2.countDown(); }, null);
        check("async 2: callbacks", d2.await(10, TimeUnit.SECONDS), "got " + log2);
        eq("async 2: getEphemerals, getAllChildrenNumber, addWatch, exists(missing)",
           Arrays.asList("eph 0 [" + p("/as/k") + "]", "count 0 1", "addWatch 0", "exists " + Code.NONODE.intValue() + " null"), new ArrayList<>(log2));
        zk1.removeAllWatches(p("/as"), WatcherType.Any, true);

        // 300 pipelined writes and reads: replies strictly in order, every read sees the previous write
        final int n = 300;
        CountDownLatch d3 = new CountDownLatch(2 * n);
        final List<String> bad = Collections.synchronizedList(new ArrayList<>());
        final AtomicInteger seq = new AtomicInteger();
        for (int k = 0; k < n; k++) {
            final int kk = k;
            zk1.setData(p("/as"), b("n" + k), -1, (rc, path, ctx, stat) -> {
                if (seq.getAndIncrement() != 2 * kk || rc != 0 || stat.getVersion() != kk + 2) bad.add("set " + kk + " rc " + rc);
                d3.countDown(); }, null);
            zk1.getData(p("/as"), false, (rc, path, ctx, data, stat) -> {
                if (seq.getAndIncrement() != 2 * kk + 1 || rc != 0 || !("n" + kk).equals(s(data))) bad.add("get " + kk + " got " + s(data));
                d3.countDown(); }, null);
        }
        check("pipelining: 600 replies arrive", d3.await(30, TimeUnit.SECONDS), "missing " + d3.getCount());
        check("pipelining: in order, each read sees the preceding write", bad.isEmpty(), "first problems: " + bad.subList(0, Math.min(5, bad.size())));
    }

    // ---- chroot: the server sees prefixed paths, events come back relative
    static void chroot() throws Exception {
        zk1.create(p("/chroot"), null, Ids.OPEN_ACL_UNSAFE, CreateMode.PERSISTENT);
        Rec wc = new Rec("chroot");
        ZooKeeper zc = connect(hp + p("/chroot"), 10000, wc);
        eq("chroot: create returns the relative path", "/x", zc.create("/x", b("c"), Ids.OPEN_ACL_UNSAFE, CreateMode.PERSISTENT));
        eq("chroot: node visible at the full path", "c", s(zk1.getData(p("/chroot/x"), false, null)));
        eq("chroot: sequential create relative", "/s-0000000001", zc.create("/s-", null, Ids.OPEN_ACL_UNSAFE, CreateMode.EPHEMERAL_SEQUENTIAL));
        // The 3.8 client sends the chroot-prefixed prefix and does not strip the chroot from the answer.
        eq("chroot: getEphemerals returns full server paths (3.8 client quirk)", Arrays.asList(p("/chroot/s-0000000001")), zc.getEphemerals());
        Rec ce = new Rec("chroot-watch");
        zc.getData("/x", ce, null);
        zk1.setData(p("/chroot/x"), b("d"), -1);
        expectEvent("chroot: event path is relative", ce, EventType.NodeDataChanged, "/x");
        List<OpResult> r = zc.multi(Arrays.asList(Op.create("/y", null, Ids.OPEN_ACL_UNSAFE, CreateMode.PERSISTENT)));
        eq("chroot: multi create result path is the full server path (3.8 client quirk)", p("/chroot/y"), ((OpResult.CreateResult) r.get(0)).getPath());
        List<OpResult> rr = zc.multi(Arrays.asList(Op.getChildren("/")));
        eq("chroot: multiRead getChildren of the chroot", Arrays.asList("s-0000000001", "x", "y"), sorted(((OpResult.GetChildrenResult) rr.get(0)).getChildren()));
        close(zc);
    }

    // ---- watches and auth are re-sent on reconnect (before the ConnectResponse), catch-up events
    static void reconnectResetsWatchesAndAuth() throws Exception {
        String base = p("/re");
        zk1.create(base, null, Ids.OPEN_ACL_UNSAFE, CreateMode.PERSISTENT);
        for (String n : new String[] {"data", "del", "kids", "same", "pers", "rec", "deldata"})
            zk1.create(base + "/" + n, b("0"), Ids.OPEN_ACL_UNSAFE, CreateMode.PERSISTENT);

        Proxy proxy = new Proxy(hp);
        Rec wr = new Rec("reconnecting");
        ZooKeeper zr = connect(proxy.hostport(), 30000, wr);
        long sid = zr.getSessionId();
        zr.addAuthInfo("digest", b("re:secret"));
        zr.create(base + "/mine", b("private"), Ids.CREATOR_ALL_ACL, CreateMode.PERSISTENT);
        zr.create(base + "/eph", null, Ids.OPEN_ACL_UNSAFE, CreateMode.EPHEMERAL);
        eq("reconnect setup: auth-only node readable", "private", s(zr.getData(base + "/mine", false, null)));

        Rec dataW = new Rec("data"), delW = new Rec("del"), newW = new Rec("new"), kidsW = new Rec("kids"), sameW = new Rec("same"),
            laterW = new Rec("later"), persW = new Rec("pers"), recW = new Rec("rec"), delChildW = new Rec("delchild"), stillW = new Rec("still-missing");
        zr.getData(base + "/data", dataW, null);
        zr.getData(base + "/del", delW, null);
        zr.exists(base + "/new", newW);
        zr.getChildren(base + "/kids", kidsW);
        zr.getData(base + "/same", sameW, null);
        zr.getChildren(base + "/same", sameW);
        zr.exists(base + "/later", laterW);
        zr.exists(base + "/never", stillW);
        zr.getChildren(base + "/deldata", delChildW);
        zr.addWatch(base + "/pers", persW, AddWatchMode.PERSISTENT);
        zr.addWatch(base + "/rec", recW, AddWatchMode.PERSISTENT_RECURSIVE);
        pass("reconnect setup: 11 watches registered through the proxy");

        proxy.refuse(true);
        proxy.cut();
        expectState("reconnect: Disconnected after the proxy cuts the connection", wr, KeeperState.Disconnected, EV_MS);
        // changes made by another client while the watcher is disconnected
        zk1.setData(base + "/data", b("1"), -1);
        zk1.delete(base + "/del", -1);
        zk1.create(base + "/new", null, Ids.OPEN_ACL_UNSAFE, CreateMode.PERSISTENT);
        zk1.create(base + "/kids/k", null, Ids.OPEN_ACL_UNSAFE, CreateMode.PERSISTENT);
        zk1.delete(base + "/deldata", -1);
        zk1.setData(base + "/pers", b("1"), -1);
        zk1.create(base + "/rec/r", null, Ids.OPEN_ACL_UNSAFE, CreateMode.PERSISTENT);
        Thread.sleep(1500);   // the client keeps retrying and gets refused meanwhile
        int before = proxy.accepted.get();
        proxy.refuse(false);
        expectState("reconnect: SyncConnected again", wr, KeeperState.SyncConnected, 20000);
        eq("reconnect: same session id (session survived)", sid, zr.getSessionId());
        check("reconnect: went through a new proxied connection", proxy.accepted.get() > before, "no new connection");

        expectEvent("reconnect catch-up: data watch -> NodeDataChanged", dataW, EventType.NodeDataChanged, base + "/data");
        expectEvent("reconnect catch-up: data watch on a deleted node -> NodeDeleted", delW, EventType.NodeDeleted, base + "/del");
        expectEvent("reconnect catch-up: exists watch -> NodeCreated", newW, EventType.NodeCreated, base + "/new");
        expectEvent("reconnect catch-up: child watch -> NodeChildrenChanged", kidsW, EventType.NodeChildrenChanged, base + "/kids");
        expectEvent("reconnect catch-up: child watch on a deleted node -> NodeDeleted", delChildW, EventType.NodeDeleted, base + "/deldata");
        expectNoEvent("reconnect catch-up: unchanged node's watches do not fire", sameW);
        expectNoEvent("reconnect catch-up: exists watch on a still-missing node does not fire", laterW);
        expectNoEvent("reconnect catch-up: persistent watch gets no catch-up event", persW);
        expectNoEvent("reconnect catch-up: recursive watch gets no catch-up event", recW);
        expectNoEvent("reconnect catch-up: no duplicate data event", dataW);

        eq("reconnect: auth re-sent, auth-only node still readable", "private", s(zr.getData(base + "/mine", false, null)));
        String whoR = infos(zr.whoAmI());   // checked at the end of this section
        check("reconnect: own ephemeral still there", zk1.exists(base + "/eph", false) != null, "gone");

        // the watches that did not fire were re-registered on the new connection
        zk1.setData(base + "/same", b("1"), -1);
        expectEvent("re-registered data watch fires after reconnect", sameW, EventType.NodeDataChanged, base + "/same");
        zk1.create(base + "/same/c", null, Ids.OPEN_ACL_UNSAFE, CreateMode.PERSISTENT);
        expectEvent("re-registered child watch fires after reconnect", sameW, EventType.NodeChildrenChanged, base + "/same");
        zk1.create(base + "/later", null, Ids.OPEN_ACL_UNSAFE, CreateMode.PERSISTENT);
        expectEvent("re-registered exists watch fires after reconnect", laterW, EventType.NodeCreated, base + "/later");
        zk1.setData(base + "/pers", b("2"), -1);
        expectEvent("re-registered PERSISTENT watch fires after reconnect", persW, EventType.NodeDataChanged, base + "/pers");
        zk1.setData(base + "/pers", b("3"), -1);
        expectEvent("re-registered PERSISTENT watch is still persistent", persW, EventType.NodeDataChanged, base + "/pers");
        zk1.create(base + "/rec/r/deep", null, Ids.OPEN_ACL_UNSAFE, CreateMode.PERSISTENT);
        expectEvent("re-registered PERSISTENT_RECURSIVE watch fires after reconnect", recW, EventType.NodeCreated, base + "/rec/r/deep");
        expectNoEvent("exists watch on a node never created stays quiet", stillW);

        // a second cut, this time with no changes: nothing fires, everything still registered
        zr.getData(base + "/data", dataW, null);
        proxy.refuse(true);
        proxy.cut();
        expectState("reconnect 2: Disconnected", wr, KeeperState.Disconnected, EV_MS);
        proxy.refuse(false);
        expectState("reconnect 2: SyncConnected", wr, KeeperState.SyncConnected, 20000);
        expectNoEvent("reconnect 2: no spurious catch-up events", dataW);
        zk1.setData(base + "/data", b("2"), -1);
        expectEvent("reconnect 2: data watch still registered", dataW, EventType.NodeDataChanged, base + "/data");

        // reconnect while requests are in flight: pending ones fail with CONNECTIONLOSS, later ones succeed
        zr.create(base + "/mine2", b("p2"), Ids.CREATOR_ALL_ACL, CreateMode.PERSISTENT);
        eq("after reconnects: auth-only create and read", "p2", s(zr.getData(base + "/mine2", false, null)));
        close(zr);
        proxy.close();
        eq("after close: ephemeral of the reconnected session is gone", null, zk1.exists(base + "/eph", false));
        eq("reconnect: whoAmI after the reconnect still shows the digest id", "[digest:re, ip:127.0.0.1]", whoR);
    }

    // ---- session re-attach by id+password, wrong password, expiry
    static void sessionLifecycle() throws Exception {
        String base = p("/sess");
        zk1.create(base, null, Ids.OPEN_ACL_UNSAFE, CreateMode.PERSISTENT);
        Proxy proxy = new Proxy(hp);
        Rec wo = new Rec("orig");
        ZooKeeper orig = connect(proxy.hostport(), 10000, wo);
        long sid = orig.getSessionId();
        byte[] pw = orig.getSessionPasswd();
        orig.create(base + "/e", null, Ids.OPEN_ACL_UNSAFE, CreateMode.EPHEMERAL);
        proxy.refuse(true);
        proxy.cut();
        expectState("re-attach setup: original handle disconnected", wo, KeeperState.Disconnected, EV_MS);

        byte[] badpw = pw.clone();
        badpw[0] ^= 0x55;
        Rec wbad = new Rec("badpw");
        ZooKeeper bad = new ZooKeeper(hp, 10000, wbad, sid, badpw);
        handles.add(bad);
        expectState("re-attach with a wrong password: Expired", wbad, KeeperState.Expired, EV_MS);
        close(bad);
        check("wrong password did not kill the session: ephemeral still there", zk1.exists(base + "/e", false) != null, "gone");

        Rec wbogus = new Rec("bogus");
        ZooKeeper bogus = new ZooKeeper(hp, 10000, wbogus, 0x7777000000000001L, new byte[16]);
        handles.add(bogus);
        expectState("attach to an unknown session id: Expired", wbogus, KeeperState.Expired, EV_MS);
        close(bogus);

        Rec wn = new Rec("reattach");
        ZooKeeper again = new ZooKeeper(hp, 10000, wn, sid, pw);
        handles.add(again);
        expectState("re-attach with id+password: SyncConnected", wn, KeeperState.SyncConnected, EV_MS);
        eq("re-attach: same session id", sid, again.getSessionId());
        eq("re-attach: sees the session's ephemerals", Arrays.asList(base + "/e"), again.getEphemerals(base));
        again.create(base + "/e2", null, Ids.OPEN_ACL_UNSAFE, CreateMode.EPHEMERAL);
        eq("re-attach: new ephemeral owned by the same session", sid, zk1.exists(base + "/e2", false).getEphemeralOwner());
        Rec goneW = new Rec("gone");
        zk1.exists(base + "/e", goneW);
        close(again);
        expectEvent("close of the re-attached handle ends the session: NodeDeleted", goneW, EventType.NodeDeleted, base + "/e");
        eq("closed session: its ephemerals are gone", null, zk1.exists(base + "/e2", false));
        proxy.refuse(false);
        expectState("original handle of a closed session: Expired on reconnect", wo, KeeperState.Expired, 20000);
        check("expired handle: state CLOSED", orig.getState() == ZooKeeper.States.CLOSED, "state " + orig.getState());
        try {
            orig.exists("/", false);
            fail("expired handle: requests fail with SESSIONEXPIRED", "call succeeded");
        } catch (KeeperException.SessionExpiredException e) {
            pass("expired handle: requests fail with SESSIONEXPIRED");
        }
        close(orig);

        // real expiry: a 4 s session behind a proxy that stops forwarding
        Rec we = new Rec("expiring");
        ZooKeeper ex = connect(proxy.hostport(), 4000, we);
        eq("expiry setup: negotiated 4000", 4000, ex.getSessionTimeout());
        ex.create(base + "/ex", null, Ids.OPEN_ACL_UNSAFE, CreateMode.EPHEMERAL);
        Rec exW = new Rec("ex-deleted");
        zk1.exists(base + "/ex", exW);
        long t0 = System.currentTimeMillis();
        proxy.refuse(true);
        proxy.cut();
        WatchedEvent e = exW.nodeEvents.poll(15000, TimeUnit.MILLISECONDS);
        long dt = System.currentTimeMillis() - t0;
        check("expiry: ephemeral deleted after the session times out (NodeDeleted)",
              e != null && e.getType() == EventType.NodeDeleted && (base + "/ex").equals(e.getPath()), "got " + ev(e));
        System.out.println("INFO expiry: ephemeral deleted " + dt + " ms after the connection was cut");
        check("expiry: roughly on time, 4 s timeout (2.5 s .. 9 s after the cut)", dt >= 2500 && dt <= 9000, "took " + dt + " ms");
        proxy.refuse(false);
        expectState("expiry: the client learns Expired when it reconnects", we, KeeperState.Expired, 20000);
        close(ex);
        proxy.close();
    }

    static void cleanup() throws Exception {
        deleteAll(zk1, root);
        eq("cleanup: test root removed", null, zk1.exists(root, false));
        close(zk2);
        close(zk1);
        pass("cleanup: sessions closed");
    }

    static void deleteAll(ZooKeeper zk, String path) throws Exception {
        List<String> kids;
        try {
            kids = zk.getChildren(path, false);
        } catch (KeeperException.NoNodeException e) {
            return;
        } catch (KeeperException.NoAuthException e) {
            kids = Collections.emptyList();
        }
        for (String k : kids) deleteAll(zk, path + "/" + k);
        try {
            zk.delete(path, -1);
        } catch (KeeperException.NoNodeException ignored) {
        }
    }
}
