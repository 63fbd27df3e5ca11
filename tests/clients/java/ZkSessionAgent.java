// A scriptable Java ZooKeeper client for the session-lifecycle end-to-end tests (tests/e2e/test_session_lifecycle.py).
// It reads one command per line on stdin and answers on stdout; watch and state events are printed as they
// arrive, so the driving test can timestamp them:
//
//   R <answer>                                  the answer to the last command (exactly one per command)
//   E <KeeperState> <EventType> <path|->        every event the default watcher receives
//
// Commands (paths must not contain spaces; data is UTF-8 without spaces, "-" for empty):
//   connect <host:port> <timeoutMs> [<sessionIdHex> <passwdHex>]   R ok          (does not wait for SyncConnected)
//   session                                      R <sessionIdHex> <passwdHex> <negotiatedTimeoutMs> <State>
//   create <path> <data> <persistent|ephemeral>  R ok <path> | R err <CODE>
//   get <path> <watch 0|1>                       R data <data> <version> <ephemeralOwnerHex> | R err <CODE>
//   exists <path> <watch 0|1>                    R stat <version> <ephemeralOwnerHex> | R none | R err <CODE>
//   children <path> <watch 0|1>                  R children <a,b,...|-> | R err <CODE>
//   set <path> <data>                            R ok | R err <CODE>
//   close                                        R ok                        (closes the session)
//   quit                                         exits without closing the session
//
// Written against the Debian Apache ZooKeeper 3.8.0 client (/usr/share/java/zookeeper.jar):
//   javac -d out -cp /usr/share/java/zookeeper.jar ZkSessionAgent.java
//   java -cp out:/usr/share/java/zookeeper.jar:/usr/share/java/slf4j-nop.jar ZkSessionAgent

import java.io.BufferedReader;
import java.io.InputStreamReader;
import java.nio.charset.StandardCharsets;
import java.util.List;

import org.apache.zookeeper.CreateMode;
import org.apache.zookeeper.KeeperException;
import org.apache.zookeeper.WatchedEvent;
import org.apache.zookeeper.Watcher;
import org.apache.zookeeper.ZooDefs.Ids;
import org.apache.zookeeper.ZooKeeper;
import org.apache.zookeeper.data.Stat;

public class ZkSessionAgent {
    static ZooKeeper zk;

    static synchronized void out(String line) {
        System.out.println(line);
        System.out.flush();
    }

    static String hex(byte[] b) {
        StringBuilder sb = new StringBuilder();
        for (byte x : b) {
            sb.append(String.format("%02x", x & 0xff));
        }
        return sb.toString();
    }

    static byte[] unhex(String s) {
        byte[] b = new byte[s.length() / 2];
        for (int i = 0; i < b.length; i++) {
            b[i] = (byte) Integer.parseInt(s.substring(2 * i, 2 * i + 2), 16);
        }
        return b;
    }

    static String data(byte[] d) {
        return d == null || d.length == 0 ? "-" : new String(d, StandardCharsets.UTF_8);
    }

    static byte[] bytes(String s) {
        return "-".equals(s) ? new byte[0] : s.getBytes(StandardCharsets.UTF_8);
    }

    public static void main(String[] args) throws Exception {
        Watcher watcher = (WatchedEvent e) ->
                out("E " + e.getState() + " " + e.getType() + " " + (e.getPath() == null ? "-" : e.getPath()));
        BufferedReader in = new BufferedReader(new InputStreamReader(System.in, StandardCharsets.UTF_8));
        out("R ready");
        String line;
        while ((line = in.readLine()) != null) {
            String[] a = line.trim().split(" ");
            try {
                switch (a[0]) {
                    case "connect":
                        if (a.length > 3) {
                            zk = new ZooKeeper(a[1], Integer.parseInt(a[2]), watcher, Long.parseUnsignedLong(a[3], 16),
                                    unhex(a[4]));
                        } else {
                            zk = new ZooKeeper(a[1], Integer.parseInt(a[2]), watcher);
                        }
                        out("R ok");
                        break;
                    case "session":
                        out("R " + Long.toHexString(zk.getSessionId()) + " " + hex(zk.getSessionPasswd()) + " "
                                + zk.getSessionTimeout() + " " + zk.getState());
                        break;
                    case "create": {
                        CreateMode mode = "ephemeral".equals(a[3]) ? CreateMode.EPHEMERAL : CreateMode.PERSISTENT;
                        out("R ok " + zk.create(a[1], bytes(a[2]), Ids.OPEN_ACL_UNSAFE, mode));
                        break;
                    }
                    case "get": {
                        Stat st = new Stat();
                        byte[] d = zk.getData(a[1], "1".equals(a[2]), st);
                        out("R data " + data(d) + " " + st.getVersion() + " " + Long.toHexString(st.getEphemeralOwner()));
                        break;
                    }
                    case "exists": {
                        Stat st = zk.exists(a[1], "1".equals(a[2]));
                        out(st == null ? "R none"
                                : "R stat " + st.getVersion() + " " + Long.toHexString(st.getEphemeralOwner()));
                        break;
                    }
                    case "children": {
                        List<String> kids = zk.getChildren(a[1], "1".equals(a[2]));
                        java.util.Collections.sort(kids);
                        out("R children " + (kids.isEmpty() ? "-" : String.join(",", kids)));
                        break;
                    }
                    case "set":
                        zk.setData(a[1], bytes(a[2]), -1);
                        out("R ok");
                        break;
                    case "close":
                        zk.close();
                        out("R ok");
                        break;
                    case "quit":
                        System.exit(0);
                        break;
                    default:
                        out("R err UNKNOWN_COMMAND");
                }
            } catch (KeeperException e) {
                out("R err " + e.code());
            } catch (Exception e) {
                out("R err " + e.getClass().getSimpleName() + ":" + String.valueOf(e.getMessage()).replace(' ', '_'));
            }
        }
    }
}
