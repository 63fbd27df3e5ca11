/*
 * Real-client check with the ZooKeeper C client library (libzookeeper_mt 3.8), for the API calls the
 * sample shell cli_mt cannot issue: multi (success and failure results), create2/set2 stats, TTL and
 * container creates, null data, ACLs with digest auth, watches incl. remove_watches, sync, session close,
 * re-attaching to a closed session, and auth failure.
 *
 *   gcc -o zkc_check zkc_check.c -I/usr/include/zookeeper -lzookeeper_mt -lpthread
 *   ./zkc_check 127.0.0.1:PORT
 *
 * Prints one line per check; on the first mismatch prints "FAIL ..." and exits 1.
 */
#include <zookeeper.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static int checks = 0;
static const char *hp;
static char root[64];

static void pass(const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    printf("PASS c: ");
    vprintf(fmt, ap);
    printf("\n");
    fflush(stdout);
    va_end(ap);
    checks++;
}

static void die(const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    printf("FAIL c: ");
    vprintf(fmt, ap);
    printf("\n");
    printf("c: FAILED after %d passing checks\n", checks);
    fflush(stdout);
    va_end(ap);
    _exit(1);
}

#define CHECK_RC(what, got, want)                                                          \
    do {                                                                                   \
        int _g = (got), _w = (want);                                                       \
        if (_g != _w) die("%s: expected rc %d (%s) but got %d (%s)", what, _w, zerror(_w), _g, zerror(_g)); \
        pass("%s (rc %d)", what, _w);                                                      \
    } while (0)

#define CHECK(what, cond, ...)                  \
    do {                                        \
        if (!(cond)) die(what ": " __VA_ARGS__); \
        pass("%s", what);                       \
    } while (0)

/* ------------------------------------------------------------------ event recorder */

#define MAXEV 256
struct rec {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int n, read;
    int type[MAXEV], state[MAXEV];
    char path[MAXEV][256];
};

static struct rec *rec_new(void) {
    struct rec *r = calloc(1, sizeof(*r));
    pthread_mutex_init(&r->mu, NULL);
    pthread_cond_init(&r->cv, NULL);
    return r;
}

static void watcher(zhandle_t *zh, int type, int state, const char *path, void *ctx) {
    struct rec *r = ctx;
    (void)zh;
    if (!r) return;
    pthread_mutex_lock(&r->mu);
    if (r->n < MAXEV) {
        r->type[r->n] = type;
        r->state[r->n] = state;
        snprintf(r->path[r->n], sizeof(r->path[0]), "%s", path ? path : "");
        r->n++;
    }
    pthread_cond_broadcast(&r->cv);
    pthread_mutex_unlock(&r->mu);
}

/* Wait for the next event (in order) of the given type; session events are skipped unless asked for. */
static int rec_next(struct rec *r, int type, int state, const char *path, int ms) {
    struct timespec dl;
    clock_gettime(CLOCK_REALTIME, &dl);
    dl.tv_sec += ms / 1000;
    dl.tv_nsec += (long)(ms % 1000) * 1000000L;
    if (dl.tv_nsec >= 1000000000L) { dl.tv_sec++; dl.tv_nsec -= 1000000000L; }
    pthread_mutex_lock(&r->mu);
    for (;;) {
        while (r->read < r->n) {
            int i = r->read++;
            if (type != ZOO_SESSION_EVENT && r->type[i] == ZOO_SESSION_EVENT) continue;
            int okk = r->type[i] == type && (state == 0 || r->state[i] == state) && (!path || strcmp(r->path[i], path) == 0);
            pthread_mutex_unlock(&r->mu);
            return okk ? 1 : -1 - i;
        }
        if (pthread_cond_timedwait(&r->cv, &r->mu, &dl) != 0) {
            pthread_mutex_unlock(&r->mu);
            return 0;
        }
    }
}

static const char *tname(int t) {
    if (t == ZOO_CREATED_EVENT) return "CREATED";
    if (t == ZOO_DELETED_EVENT) return "DELETED";
    if (t == ZOO_CHANGED_EVENT) return "CHANGED";
    if (t == ZOO_CHILD_EVENT) return "CHILD";
    if (t == ZOO_SESSION_EVENT) return "SESSION";
    if (t == ZOO_NOTWATCHING_EVENT) return "NOTWATCHING";
    return "?";
}

static void expect_event(const char *what, struct rec *r, int type, const char *path) {
    int x = rec_next(r, type, ZOO_CONNECTED_STATE, path, 10000);
    if (x == 0) die("%s: no %s event for %s within 10 s", what, tname(type), path);
    if (x < 0) {
        int i = -1 - x;
        die("%s: expected %s %s but got %s %s (state %d)", what, tname(type), path, tname(r->type[i]), r->path[i], r->state[i]);
    }
    pass("%s", what);
}

static void expect_no_event(const char *what, struct rec *r) {
    int x = rec_next(r, -99, 0, NULL, 700);
    if (x != 0) {
        int i = -1 - x;
        die("%s: unexpected %s event for %s", what, tname(r->type[i]), r->path[i]);
    }
    pass("%s", what);
}

static void expect_state(const char *what, struct rec *r, int state, int ms) {
    for (;;) {
        int x = rec_next(r, ZOO_SESSION_EVENT, state, NULL, ms);
        if (x == 1) { pass("%s", what); return; }
        if (x == 0) die("%s: no session event with state %d within %d ms", what, state, ms);
    }
}

static zhandle_t *connect_to(const char *where, struct rec *r, const clientid_t *cid) {
    zhandle_t *zh = zookeeper_init(where, watcher, 10000, cid, r, 0);
    if (!zh) die("zookeeper_init(%s) failed", where);
    return zh;
}

static char pbuf[1024];
static const char *P(const char *rel) {
    snprintf(pbuf, sizeof pbuf, "%s%s", root, rel);
    return pbuf;
}

/* ------------------------------------------------------------------ completions */

struct done {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int fired, rc;
    char value[256];
};

static void void_done(int rc, const void *data) {
    struct done *d = (struct done *)data;
    pthread_mutex_lock(&d->mu);
    d->fired = 1;
    d->rc = rc;
    pthread_cond_broadcast(&d->cv);
    pthread_mutex_unlock(&d->mu);
}

static void string_done(int rc, const char *value, const void *data) {
    struct done *d = (struct done *)data;
    pthread_mutex_lock(&d->mu);
    snprintf(d->value, sizeof d->value, "%s", value ? value : "");
    pthread_mutex_unlock(&d->mu);
    void_done(rc, data);
}

static int wait_done(struct done *d, int ms) {
    struct timespec dl;
    clock_gettime(CLOCK_REALTIME, &dl);
    dl.tv_sec += ms / 1000 + 1;
    pthread_mutex_lock(&d->mu);
    while (!d->fired)
        if (pthread_cond_timedwait(&d->cv, &d->mu, &dl) != 0) break;
    int f = d->fired;
    pthread_mutex_unlock(&d->mu);
    return f;
}

static void done_init(struct done *d) {
    memset(d, 0, sizeof *d);
    pthread_mutex_init(&d->mu, NULL);
    pthread_cond_init(&d->cv, NULL);
}

/* ------------------------------------------------------------------ main */

int main(int argc, char **argv) {
    if (argc < 2) {
        fprintf(stderr, "usage: %s host:port\n", argv[0]);
        return 2;
    }
    hp = argv[1];
    zoo_set_debug_level(ZOO_LOG_LEVEL_ERROR);
    srand((unsigned)time(NULL) ^ (unsigned)getpid());
    snprintf(root, sizeof root, "/c-api-%08x%04x", (unsigned)rand(), (unsigned)(rand() & 0xffff));

    struct rec *w1 = rec_new(), *w2 = rec_new();
    zhandle_t *zh = connect_to(hp, w1, NULL);
    expect_state("connect: CONNECTED state event", w1, ZOO_CONNECTED_STATE, 15000);
    zhandle_t *z2 = connect_to(hp, w2, NULL);
    expect_state("connect: second session", w2, ZOO_CONNECTED_STATE, 15000);
    int64_t sid = zoo_client_id(zh)->client_id;
    CHECK("session id non-zero and distinct", sid != 0 && sid != zoo_client_id(z2)->client_id, "ids %llx %llx",
          (long long)sid, (long long)zoo_client_id(z2)->client_id);
    CHECK("negotiated timeout 10000", zoo_recv_timeout(zh) == 10000, "got %d", zoo_recv_timeout(zh));

    char buf[2048];
    struct Stat st;
    CHECK_RC("create root", zoo_create(zh, root, "r", 1, &ZOO_OPEN_ACL_UNSAFE, 0, buf, sizeof buf), ZOK);

    /* create2 and stats */
    CHECK_RC("create2 persistent", zoo_create2(zh, P("/p"), "v0", 2, &ZOO_OPEN_ACL_UNSAFE, ZOO_PERSISTENT, buf, sizeof buf, &st), ZOK);
    CHECK("create2: stat version 0, dataLength 2, czxid == mzxid, owner 0",
          st.version == 0 && st.dataLength == 2 && st.czxid == st.mzxid && st.ephemeralOwner == 0 && st.numChildren == 0,
          "version %d len %d czxid %lld mzxid %lld owner %llx", st.version, st.dataLength, (long long)st.czxid, (long long)st.mzxid, (long long)st.ephemeralOwner);
    CHECK_RC("create2 ephemeral", zoo_create2(zh, P("/e"), NULL, -1, &ZOO_OPEN_ACL_UNSAFE, ZOO_EPHEMERAL, buf, sizeof buf, &st), ZOK);
    CHECK("create2 ephemeral: ephemeralOwner is the session id", st.ephemeralOwner == sid, "%llx != %llx", (long long)st.ephemeralOwner, (long long)sid);
    CHECK_RC("create sequential", zoo_create(zh, P("/s-"), "", 0, &ZOO_OPEN_ACL_UNSAFE, ZOO_PERSISTENT_SEQUENTIAL, buf, sizeof buf), ZOK);
    CHECK("create sequential: name", strcmp(buf, P("/s-0000000002")) == 0, "got %s", buf);
    CHECK_RC("create container", zoo_create2(zh, P("/c"), "c", 1, &ZOO_OPEN_ACL_UNSAFE, ZOO_CONTAINER, buf, sizeof buf, &st), ZOK);
    CHECK("container: client-visible owner 0", st.ephemeralOwner == 0, "%llx", (long long)st.ephemeralOwner);
    CHECK_RC("create2_ttl", zoo_create2_ttl(zh, P("/t"), "t", 1, &ZOO_OPEN_ACL_UNSAFE, ZOO_PERSISTENT_WITH_TTL, 3600000, buf, sizeof buf, &st), ZOK);
    CHECK("TTL: client-visible owner 0", st.ephemeralOwner == 0, "%llx", (long long)st.ephemeralOwner);
    CHECK_RC("create_ttl with ttl 0 -> ZBADARGUMENTS", zoo_create_ttl(zh, P("/t0"), "t", 1, &ZOO_OPEN_ACL_UNSAFE, ZOO_PERSISTENT_WITH_TTL, 0, buf, sizeof buf), ZBADARGUMENTS);
    CHECK_RC("create existing -> ZNODEEXISTS", zoo_create(zh, P("/p"), NULL, -1, &ZOO_OPEN_ACL_UNSAFE, 0, buf, sizeof buf), ZNODEEXISTS);
    CHECK_RC("create under ephemeral -> ZNOCHILDRENFOREPHEMERALS", zoo_create(zh, P("/e/x"), NULL, -1, &ZOO_OPEN_ACL_UNSAFE, 0, buf, sizeof buf), ZNOCHILDRENFOREPHEMERALS);

    /* null vs empty data */
    int len = sizeof buf;
    CHECK_RC("get null data", zoo_get(zh, P("/e"), 0, buf, &len, &st), ZOK);
    CHECK("null data: length -1, dataLength 0", len == -1 && st.dataLength == 0, "len %d dataLength %d", len, st.dataLength);
    len = sizeof buf;
    CHECK_RC("get empty data", zoo_get(zh, P("/s-0000000002"), 0, buf, &len, &st), ZOK);
    CHECK("empty data: length 0", len == 0, "len %d", len);

    /* set2, versions */
    CHECK_RC("set2 version 0", zoo_set2(zh, P("/p"), "v1", 2, 0, &st), ZOK);
    CHECK("set2: version 1", st.version == 1, "version %d", st.version);
    CHECK_RC("set with stale version -> ZBADVERSION", zoo_set(zh, P("/p"), "x", 1, 0), ZBADVERSION);
    CHECK_RC("delete with stale version -> ZBADVERSION", zoo_delete(zh, P("/p"), 0), ZBADVERSION);
    CHECK_RC("delete non-empty root -> ZNOTEMPTY", zoo_delete(zh, root, -1), ZNOTEMPTY);

    /* multi: success */
    {
        char p1[256], p2[256];
        struct Stat s3;
        zoo_op_t ops[5];
        zoo_op_result_t res[5];
        char a[256], b2[256];
        snprintf(a, sizeof a, "%s", P("/m"));
        snprintf(b2, sizeof b2, "%s", P("/m/seq-"));
        zoo_create_op_init(&ops[0], a, "m", 1, &ZOO_OPEN_ACL_UNSAFE, 0, p1, sizeof p1);
        zoo_create_op_init(&ops[1], b2, NULL, -1, &ZOO_OPEN_ACL_UNSAFE, ZOO_SEQUENCE, p2, sizeof p2);
        zoo_set_op_init(&ops[2], a, "m2", 2, 0, &s3);
        zoo_check_op_init(&ops[3], a, 1);
        char pp[256];
        snprintf(pp, sizeof pp, "%s", P("/p"));
        zoo_delete_op_init(&ops[4], pp, 1);
        CHECK_RC("multi: create, create seq, set, check, delete", zoo_multi(zh, 5, ops, res), ZOK);
        CHECK("multi: every result ZOK", res[0].err == 0 && res[1].err == 0 && res[2].err == 0 && res[3].err == 0 && res[4].err == 0,
              "errs %d %d %d %d %d", res[0].err, res[1].err, res[2].err, res[3].err, res[4].err);
        char want2[300];
        snprintf(want2, sizeof want2, "%s0000000000", b2);
        CHECK("multi: created paths", strcmp(p1, a) == 0 && strcmp(p2, want2) == 0, "got %s and %s", p1, p2);
        CHECK("multi: set result stat version 1", s3.version == 1, "version %d", s3.version);
        CHECK_RC("multi: delete applied", zoo_exists(zh, pp, 0, &st), ZNONODE);
    }
    /* multi: failure */
    {
        zoo_op_t ops[4];
        zoo_op_result_t res[4];
        char a[256], m[256], buf1[256];
        snprintf(a, sizeof a, "%s", P("/m/x"));
        snprintf(m, sizeof m, "%s", P("/m"));
        zoo_create_op_init(&ops[0], a, NULL, -1, &ZOO_OPEN_ACL_UNSAFE, 0, buf1, sizeof buf1);
        zoo_set_op_init(&ops[1], m, "zz", 2, -1, NULL);
        zoo_check_op_init(&ops[2], m, 42);
        zoo_delete_op_init(&ops[3], m, -1);
        CHECK_RC("multi failure: returns the failing op's code", zoo_multi(zh, 4, ops, res), ZBADVERSION);
        CHECK("multi failure: results ZOK, ZOK, ZBADVERSION, ZRUNTIMEINCONSISTENCY",
              res[0].err == ZOK && res[1].err == ZOK && res[2].err == ZBADVERSION && res[3].err == ZRUNTIMEINCONSISTENCY,
              "errs %d %d %d %d", res[0].err, res[1].err, res[2].err, res[3].err);
        CHECK_RC("multi failure: create rolled back", zoo_exists(zh, a, 0, &st), ZNONODE);
        len = sizeof buf;
        CHECK_RC("multi failure: data unchanged", zoo_get(zh, m, 0, buf, &len, &st), ZOK);
        CHECK("multi failure: data is still m2", len == 2 && memcmp(buf, "m2", 2) == 0, "len %d", len);
    }

    /* children with stat */
    {
        struct String_vector sv;
        CHECK_RC("get_children2", zoo_get_children2(zh, root, 0, &sv, &st), ZOK);
        CHECK("get_children2: 5 children, stat numChildren 5", sv.count == 5 && st.numChildren == 5, "count %d numChildren %d", sv.count, st.numChildren);
        deallocate_String_vector(&sv);
    }

    /* ACLs and digest auth */
    {
        struct done d;
        done_init(&d);
        CHECK_RC("add_auth digest (call)", zoo_add_auth(zh, "digest", "cu:cpw", 6, void_done, &d), ZOK);
        CHECK("add_auth digest: completion", wait_done(&d, 10000) && d.rc == ZOK, "fired %d rc %d", d.fired, d.rc);
        CHECK_RC("create with CREATOR_ALL_ACL", zoo_create(zh, P("/sec"), "s", 1, &ZOO_CREATOR_ALL_ACL, 0, buf, sizeof buf), ZOK);
        struct ACL_vector acl;
        CHECK_RC("get_acl", zoo_get_acl(zh, P("/sec"), &acl, &st), ZOK);
        CHECK("get_acl: one digest entry for cu", acl.count == 1 && strcmp(acl.data[0].id.scheme, "digest") == 0 &&
              strncmp(acl.data[0].id.id, "cu:", 3) == 0 && acl.data[0].perms == ZOO_PERM_ALL,
              "count %d scheme %s id %s", acl.count, acl.count ? acl.data[0].id.scheme : "", acl.count ? acl.data[0].id.id : "");
        deallocate_ACL_vector(&acl);
        len = sizeof buf;
        CHECK_RC("other session get -> ZNOAUTH", zoo_get(z2, P("/sec"), 0, buf, &len, &st), ZNOAUTH);
        CHECK_RC("other session set -> ZNOAUTH", zoo_set(z2, P("/sec"), "x", 1, -1), ZNOAUTH);
        CHECK_RC("create /ro", zoo_create(zh, P("/ro"), "r", 1, &ZOO_OPEN_ACL_UNSAFE, 0, buf, sizeof buf), ZOK);
        CHECK_RC("set_acl to READ-only", zoo_set_acl(zh, P("/ro"), 0, &ZOO_READ_ACL_UNSAFE), ZOK);
        CHECK_RC("set on a READ-only node -> ZNOAUTH", zoo_set(zh, P("/ro"), "x", 1, -1), ZNOAUTH);
        CHECK_RC("set_acl on a READ-only node -> ZNOAUTH", zoo_set_acl(zh, P("/ro"), -1, &ZOO_OPEN_ACL_UNSAFE), ZNOAUTH);
        CHECK_RC("set_acl with stale aversion -> ZBADVERSION", zoo_set_acl(zh, P("/c"), 5, &ZOO_READ_ACL_UNSAFE), ZBADVERSION);
        done_init(&d);
        CHECK_RC("add_auth on the second session (call)", zoo_add_auth(z2, "digest", "cu:cpw", 6, void_done, &d), ZOK);
        CHECK("add_auth on the second session: completion", wait_done(&d, 10000) && d.rc == ZOK, "rc %d", d.rc);
        len = sizeof buf;
        CHECK_RC("other session get after add_auth", zoo_get(z2, P("/sec"), 0, buf, &len, &st), ZOK);
    }

    /* watches */
    {
        struct rec *wr = rec_new();
        CHECK_RC("wexists on a missing node", zoo_wexists(zh, P("/w"), watcher, wr, &st), ZNONODE);
        CHECK_RC("other session creates it", zoo_create(z2, P("/w"), "w", 1, &ZOO_OPEN_ACL_UNSAFE, 0, buf, sizeof buf), ZOK);
        expect_event("wexists: CREATED event", wr, ZOO_CREATED_EVENT, P("/w"));
        len = sizeof buf;
        CHECK_RC("wget", zoo_wget(zh, P("/w"), watcher, wr, buf, &len, &st), ZOK);
        CHECK_RC("other session sets it", zoo_set(z2, P("/w"), "x", 1, -1), ZOK);
        expect_event("wget: CHANGED event", wr, ZOO_CHANGED_EVENT, P("/w"));
        struct String_vector sv;
        CHECK_RC("wget_children", zoo_wget_children(zh, P("/w"), watcher, wr, &sv), ZOK);
        deallocate_String_vector(&sv);
        CHECK_RC("other session adds a child", zoo_create(z2, P("/w/k"), NULL, -1, &ZOO_OPEN_ACL_UNSAFE, 0, buf, sizeof buf), ZOK);
        expect_event("wget_children: CHILD event", wr, ZOO_CHILD_EVENT, P("/w"));
        len = sizeof buf;
        CHECK_RC("wget on the child", zoo_wget(zh, P("/w/k"), watcher, wr, buf, &len, &st), ZOK);
        CHECK_RC("other session deletes the child", zoo_delete(z2, P("/w/k"), -1), ZOK);
        expect_event("wget: DELETED event", wr, ZOO_DELETED_EVENT, P("/w/k"));

        /* default watcher via watch=1 */
        len = sizeof buf;
        CHECK_RC("get with watch=1 (default watcher)", zoo_get(zh, P("/w"), 1, buf, &len, &st), ZOK);
        CHECK_RC("other session sets it again", zoo_set(z2, P("/w"), "y", 1, -1), ZOK);
        expect_event("default watcher: CHANGED event", w1, ZOO_CHANGED_EVENT, P("/w"));

        /* remove watches */
        len = sizeof buf;
        CHECK_RC("wget before remove", zoo_wget(zh, P("/w"), watcher, wr, buf, &len, &st), ZOK);
        CHECK_RC("remove_watches(data, this watcher)", zoo_remove_watches(zh, P("/w"), ZWATCHTYPE_DATA, watcher, wr, 0), ZOK);
        CHECK_RC("other session sets it after the remove", zoo_set(z2, P("/w"), "z", 1, -1), ZOK);
        expect_no_event("removed watch does not fire", wr);
        CHECK_RC("remove_all_watches with none left -> ZNOWATCHER", zoo_remove_all_watches(zh, P("/w"), ZWATCHTYPE_ANY, 0), ZNOWATCHER);
        CHECK_RC("wget_children before remove_all", zoo_wget_children(zh, P("/w"), watcher, wr, &sv), ZOK);
        deallocate_String_vector(&sv);
        CHECK_RC("remove_all_watches(child)", zoo_remove_all_watches(zh, P("/w"), ZWATCHTYPE_CHILD, 0), ZOK);
        CHECK_RC("other session adds a child after the remove", zoo_create(z2, P("/w/k2"), NULL, -1, &ZOO_OPEN_ACL_UNSAFE, 0, buf, sizeof buf), ZOK);
        expect_no_event("removed child watch does not fire", wr);
    }

    /* sync */
    {
        struct done d;
        done_init(&d);
        CHECK_RC("async sync (call)", zoo_async(zh, root, string_done, &d), ZOK);
        CHECK("sync completion: rc 0, path echoed", wait_done(&d, 10000) && d.rc == ZOK && strcmp(d.value, root) == 0,
              "fired %d rc %d value %s", d.fired, d.rc, d.value);
    }

    /* close a session: its ephemerals go; re-attaching to it gives EXPIRED */
    {
        struct rec *w3 = rec_new(), *wx = rec_new();
        zhandle_t *z3 = connect_to(hp, w3, NULL);
        expect_state("third session connects", w3, ZOO_CONNECTED_STATE, 15000);
        clientid_t cid = *zoo_client_id(z3);
        CHECK_RC("third session creates an ephemeral", zoo_create(z3, P("/e3"), NULL, -1, &ZOO_OPEN_ACL_UNSAFE, ZOO_EPHEMERAL, buf, sizeof buf), ZOK);
        CHECK_RC("wexists on it", zoo_wexists(zh, P("/e3"), watcher, wx, &st), ZOK);
        CHECK_RC("zookeeper_close of the third session", zookeeper_close(z3), ZOK);
        expect_event("session close: DELETED event for its ephemeral", wx, ZOO_DELETED_EVENT, P("/e3"));
        struct rec *w4 = rec_new();
        zhandle_t *z4 = connect_to(hp, w4, &cid);
        expect_state("re-attach to the closed session: EXPIRED_SESSION state", w4, ZOO_EXPIRED_SESSION_STATE, 15000);
        zookeeper_close(z4);
    }

    /* unknown auth scheme: AUTH_FAILED */
    {
        struct rec *w5 = rec_new();
        zhandle_t *z5 = connect_to(hp, w5, NULL);
        expect_state("fifth session connects", w5, ZOO_CONNECTED_STATE, 15000);
        struct done d;
        done_init(&d);
        zoo_add_auth(z5, "nosuchscheme", "x", 1, void_done, &d);
        CHECK("unknown auth scheme: completion rc ZAUTHFAILED", wait_done(&d, 10000) && d.rc == ZAUTHFAILED, "fired %d rc %d", d.fired, d.rc);
        expect_state("unknown auth scheme: AUTH_FAILED state", w5, ZOO_AUTH_FAILED_STATE, 10000);
        zookeeper_close(z5);
    }

    /* cleanup */
    {
        const char *kids[] = {"/w/k2", "/w", "/sec", "/m/seq-0000000000", "/m", "/ro", "/t", "/c", "/s-0000000002", "/e", NULL};
        for (int i = 0; kids[i]; i++) {
            int rc = zoo_delete(zh, P(kids[i]), -1);
            if (rc != ZOK) die("cleanup: delete %s: %s", P(kids[i]), zerror(rc));
        }
        CHECK_RC("cleanup: delete root", zoo_delete(zh, root, -1), ZOK);
    }
    zookeeper_close(z2);
    zookeeper_close(zh);
    printf("c: all %d checks passed\n", checks);
    return 0;
}
