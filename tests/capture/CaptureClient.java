// Drives the Apache ZooKeeper Java client through every client operation, for capture.py.
//
// Usage: java -cp /usr/share/java/zookeeper.jar:<dir> CaptureClient 127.0.0.1:<proxy port>
// Prints "DROP" when it wants the proxy to cut the connection (to make the client reconnect and
// re-register its watches with SetWatches / SetWatches2), then waits for the reconnect.

import java.nio.charset.StandardCharsets;
import java.util.Arrays;
import java.util.List;
import java.util.concurrent.BlockingQueue;
import java.util.concurrent.CountDownLatch;
import java.util.concurrent.LinkedBlockingQueue;
import java.util.concurrent.TimeUnit;
import org.apache.zookeeper.AddWatchMode;
import org.apache.zookeeper.CreateMode;
import org.apache.zookeeper.KeeperException;
import org.apache.zookeeper.Op;
import org.apache.zookeeper.OpResult;
import org.apache.zookeeper.WatchedEvent;
import org.apache.zookeeper.Watcher;
import org.apache.zookeeper.ZooDefs;
import org.apache.zookeeper.ZooKeeper;
import org.apache.zookeeper.admin.ZooKeeperAdmin;
import org.apache.zookeeper.data.ACL;
import org.apache.zookeeper.data.Stat;

public class CaptureClient {
    static final BlockingQueue<WatchedEvent> events = new LinkedBlockingQueue<>();
    static final BlockingQueue<Watcher.Event.KeeperState> states = new LinkedBlockingQueue<>();

    static byte[] b(String s) {
        return s.getBytes(StandardCharsets.UTF_8);
    }

    static void step(String s) {
        System.out.println("STEP " + s);
        System.out.flush();
    }

    static void expectError(String what, ThrowingRunnable r) throws Exception {
        try {
            r.run();
            throw new IllegalStateException(what + " should have failed");
        } catch (KeeperException e) {
            step(what + " failed as expected: " + e.code());
        }
    }

    interface ThrowingRunnable {
        void run() throws Exception;
    }

    static WatchedEvent nextEvent() throws InterruptedException {
        WatchedEvent e = events.poll(10, TimeUnit.SECONDS);
        if (e == null) {
            throw new IllegalStateException("no watch event");
        }
        step("event " + e);
        return e;
    }

    static void awaitState(Watcher.Event.KeeperState want) throws InterruptedException {
        while (true) {
            Watcher.Event.KeeperState s = states.poll(20, TimeUnit.SECONDS);
            if (s == null) {
                throw new IllegalStateException("no state " + want);
            }
            if (s == want) {
                return;
            }
        }
    }

    /** Asks the proxy to cut the connection and waits until the client is back. */
    static void dropAndReconnect() throws InterruptedException {
        states.clear();
        System.out.println("DROP");
        System.out.flush();
        awaitState(Watcher.Event.KeeperState.Disconnected);
        awaitState(Watcher.Event.KeeperState.SyncConnected);
        step("reconnected");
    }

    public static void main(String[] args) throws Exception {
        String hosts = args[0];
        Watcher watcher = e -> {
            if (e.getType() == Watcher.Event.EventType.None) {
                states.add(e.getState());
            } else {
                events.add(e);
            }
        };
        ZooKeeper zk = new ZooKeeper(hosts, 10000, watcher);
        awaitState(Watcher.Event.KeeperState.SyncConnected);
        List<ACL> open = ZooDefs.Ids.OPEN_ACL_UNSAFE;
        Stat stat = new Stat();

        step("creates");
        zk.create("/j", b("root"), open, CreateMode.PERSISTENT);
        zk.create("/j/eph", null, open, CreateMode.EPHEMERAL);
        zk.create("/j/seq-", b("s"), open, CreateMode.PERSISTENT_SEQUENTIAL);
        zk.create("/j/eseq-", b("es"), open, CreateMode.EPHEMERAL_SEQUENTIAL);
        zk.create("/j/c2", b("c2"), open, CreateMode.PERSISTENT, stat);
        zk.create("/j/container", b("c"), open, CreateMode.CONTAINER);
        zk.create("/j/container/child", b(""), open, CreateMode.PERSISTENT);
        zk.create("/j/ttl", b("t"), open, CreateMode.PERSISTENT_WITH_TTL, stat, 60000);
        zk.create("/j/ttlseq-", b("ts"), open, CreateMode.PERSISTENT_SEQUENTIAL_WITH_TTL, stat, 60000);
        expectError("create existing", () -> zk.create("/j", b("x"), open, CreateMode.PERSISTENT));
        expectError("create without parent", () -> zk.create("/nope/x", b("x"), open, CreateMode.PERSISTENT));

        step("reads and a data watch");
        zk.getData("/j", true, stat);
        zk.getData("/j/eph", false, stat);
        zk.setData("/j", b("root2"), -1);
        nextEvent();
        expectError("setData bad version", () -> zk.setData("/j", b("x"), 99));
        zk.exists("/j", false);
        if (zk.exists("/j/later", true) != null) {
            throw new IllegalStateException("/j/later exists");
        }
        zk.create("/j/later", b("l"), open, CreateMode.PERSISTENT);
        nextEvent();
        zk.getChildren("/j", true);
        zk.getChildren("/j", false, stat);
        zk.create("/j/kid", b("k"), open, CreateMode.PERSISTENT);
        nextEvent();

        step("acls and auth");
        zk.getACL("/j", stat);
        zk.setACL("/j", open, -1);
        zk.addAuthInfo("digest", b("user:password"));
        zk.create("/j/secret", b("s"), ZooDefs.Ids.CREATOR_ALL_ACL, CreateMode.PERSISTENT);
        zk.getACL("/j/secret", stat);
        step("whoami " + zk.whoAmI());

        step("session queries");
        step("ephemerals " + zk.getEphemerals("/j"));
        step("all ephemerals " + zk.getEphemerals());
        step("children number " + zk.getAllChildrenNumber("/j"));
        CountDownLatch synced = new CountDownLatch(1);
        zk.sync("/j", (rc, path, ctx) -> synced.countDown(), null);
        synced.await(10, TimeUnit.SECONDS);

        step("multi");
        List<OpResult> ok = zk.multi(Arrays.asList(
                Op.create("/j/m1", b("m1"), open, CreateMode.PERSISTENT),
                Op.create("/j/mc", b("mc"), open, CreateMode.CONTAINER),
                Op.create("/j/mttl", b("mt"), open, CreateMode.PERSISTENT_WITH_TTL, 60000),
                Op.setData("/j/m1", b("m1b"), -1),
                Op.check("/j/m1", 1),
                Op.delete("/j/m1", -1)));
        step("multi ok " + ok.size());
        expectError("failed multi", () -> zk.multi(Arrays.asList(
                Op.create("/j/m2", b("m2"), open, CreateMode.PERSISTENT),
                Op.create("/j", b("dup"), open, CreateMode.PERSISTENT),
                Op.delete("/j/none", -1))));
        List<OpResult> reads = zk.multi(Arrays.asList(
                Op.getData("/j"),
                Op.getChildren("/j/container"),
                Op.getData("/j/none")));
        step("multiRead " + reads.size());

        step("reconnect with standard watches (SetWatches)");
        zk.getData("/j/kid", true, stat);
        zk.exists("/j/absent", true);
        zk.getChildren("/j/container", true);
        dropAndReconnect();

        step("persistent watches");
        zk.addWatch("/j/kid", AddWatchMode.PERSISTENT);
        zk.addWatch("/j/container", AddWatchMode.PERSISTENT_RECURSIVE);
        zk.setData("/j/kid", b("k2"), -1);
        nextEvent();
        zk.create("/j/container/deep", b("d"), open, CreateMode.PERSISTENT);
        nextEvent();
        Thread.sleep(300);
        events.clear();
        step("reconnect with persistent watches (SetWatches2)");
        dropAndReconnect();

        step("remove watches");
        zk.getData("/j/later", watcher, stat);
        zk.removeWatches("/j/later", watcher, Watcher.WatcherType.Data, false);
        expectError("removeWatches with no watch",
                () -> zk.removeWatches("/j/later", watcher, Watcher.WatcherType.Data, false));
        zk.removeAllWatches("/j/kid", Watcher.WatcherType.Any, false);
        events.clear();

        step("reconfig on a standalone server");
        ZooKeeperAdmin admin = new ZooKeeperAdmin(hosts, 10000, e -> { });
        expectError("reconfig", () -> admin.reconfigure("server.9=127.0.0.1:2888:3888;2181", null, null, -1, new Stat()));
        admin.close();

        step("deletes");
        zk.delete("/j/later", -1);
        expectError("delete missing", () -> zk.delete("/j/none", -1));
        expectError("delete not empty", () -> zk.delete("/j", -1));

        step("idle for pings");
        Thread.sleep(4500);
        zk.close();
        step("done");
    }
}
