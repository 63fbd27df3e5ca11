//! Load generator for `bench/storage_compare.sh`: speaks the ZooKeeper client protocol (through the proto
//! crate's encoders) to any server, oxkeeper or Apache ZooKeeper, and prints one `RESULT key=value ...` line
//! per run. A measurement, not a test. Everything runs on one tokio thread, so the generator takes at most
//! one core; its own CPU time (getrusage) is in every result, to show it was not the bottleneck.
//!
//! `cargo run --release -p oxkeeper-server --example storage_bench -- <mode> <host:port> [options]`
//!
//! - `write`: closed-loop writers, each its own session with one request outstanding; `--op set` (setData
//!   of its own node), `create` (new nodes under its own parent) or `set-random` (setData of random nodes of
//!   the tree `load` made). Throughput and latency over `--secs` after `--warmup`.
//! - `load`: creates `--dirs` x `--per-dir` nodes, pipelined over `--sessions` sessions, then `/last`.
//! - `ready`: polls (connect, then getData of `--path`) until the server answers; prints the time since
//!   `--since-ns` (the caller's clock at the server's process start, `date +%s%N`).
//! - `free-port`: prints a free TCP port on 127.0.0.1.

use std::io;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::{Buf, BytesMut};
use oxkeeper_proto::frame::{
    encode_connect_request, encode_request, split_reply, Decoded, FrameDecoder,
};
use oxkeeper_proto::records::{
    Acl, ConnectRequest, ConnectResponse, CreateRequest, Id, PathWatch, Record, Request,
    SetDataRequest,
};
use oxkeeper_proto::{perms, xid, CreateMode, ErrorCode, OpCode};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::task::JoinSet;

/// Session timeout asked for: inside both servers' default bounds (2 to 20 ticks: 4 to 40 s at tickTime 2000).
const SESSION_TIMEOUT_MS: i32 = 30_000;
/// Largest reply frame accepted (replies here are small; ZooKeeper's own client default is 0xfffff).
const REPLY_BYTES_MAX: usize = 0xfffff;
/// How long one request may take before the run is abandoned as broken rather than slow.
const REPLY_TIMEOUT: Duration = Duration::from_secs(60);
/// Slowest operations listed individually, with their wall-clock time, to line them up with server logs.
const SLOWEST_LISTED: usize = 5;

type BoxError = Box<dyn std::error::Error + Send + Sync>;
type Result<T> = std::result::Result<T, BoxError>;

// ---------------------------------------------------------------------------------------------------------
// Arguments

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum WriteOp {
    Set,
    Create,
    SetRandom,
}

#[derive(Clone, Debug)]
struct Args {
    mode: String,
    addr: String,
    writers: usize,
    op: WriteOp,
    secs: f64,
    warmup_secs: f64,
    size_bytes: usize,
    root: String,
    dirs: usize,
    per_dir: usize,
    sessions: usize,
    window: usize,
    path: String,
    since_ns: Option<u128>,
    deadline_secs: f64,
}

const USAGE: &str = "usage: storage_bench write <host:port> [--writers N] [--op set|create|set-random] \
[--secs S] [--warmup S] [--size B] [--root /path] [--dirs D --per-dir P]
       storage_bench load <host:port> [--dirs D] [--per-dir P] [--size B] [--sessions K] [--window W]
       storage_bench ready <host:port> [--path P] [--since-ns T] [--deadline S]
       storage_bench free-port";

fn parse_args() -> std::result::Result<Args, String> {
    let mut it = std::env::args().skip(1);
    let mode = it.next().ok_or(USAGE)?;
    let addr = if mode == "free-port" {
        String::new()
    } else {
        it.next().ok_or(USAGE)?
    };
    let mut a = Args {
        mode,
        addr,
        writers: 1,
        op: WriteOp::Set,
        secs: 5.0,
        warmup_secs: 1.0,
        size_bytes: 100,
        root: "/wb".into(),
        dirs: 1000,
        per_dir: 1000,
        sessions: 4,
        window: 200,
        path: "/".into(),
        since_ns: None,
        deadline_secs: 600.0,
    };
    while let Some(flag) = it.next() {
        let value = it.next().ok_or(format!("{flag} needs a value"))?;
        let num = |v: &str| v.parse::<f64>().map_err(|e| format!("{flag}: {e}"));
        let int = |v: &str| v.parse::<usize>().map_err(|e| format!("{flag}: {e}"));
        match flag.as_str() {
            "--writers" => a.writers = int(&value)?.max(1),
            "--op" => {
                a.op = match value.as_str() {
                    "set" => WriteOp::Set,
                    "create" => WriteOp::Create,
                    "set-random" => WriteOp::SetRandom,
                    other => return Err(format!("--op: unknown {other}")),
                }
            }
            "--secs" => a.secs = num(&value)?,
            "--warmup" => a.warmup_secs = num(&value)?,
            "--size" => a.size_bytes = int(&value)?,
            "--root" => a.root = value,
            "--dirs" => a.dirs = int(&value)?.max(1),
            "--per-dir" => a.per_dir = int(&value)?.max(1),
            "--sessions" => a.sessions = int(&value)?.max(1),
            "--window" => a.window = int(&value)?.max(1),
            "--path" => a.path = value,
            "--since-ns" => {
                a.since_ns = Some(value.parse().map_err(|e| format!("--since-ns: {e}"))?)
            }
            "--deadline" => a.deadline_secs = num(&value)?,
            other => return Err(format!("unknown argument {other}\n{USAGE}")),
        }
    }
    Ok(a)
}

// ---------------------------------------------------------------------------------------------------------
// A raw client connection

/// One session over one connection. Requests may be pipelined: `send` any number, then `recv` the replies
/// in order.
struct Conn {
    stream: TcpStream,
    buf: BytesMut,
    next_xid: i32,
}

/// A reply's header; bodies are not needed by any mode and are dropped.
#[derive(Debug, Clone, Copy)]
struct Reply {
    xid: i32,
    err: i32,
}

fn other<E: std::fmt::Display>(e: E) -> io::Error {
    io::Error::other(e.to_string())
}

impl Conn {
    async fn connect(addr: &str) -> io::Result<Conn> {
        let stream = TcpStream::connect(addr).await?;
        stream.set_nodelay(true)?;
        let mut conn = Conn {
            stream,
            buf: BytesMut::with_capacity(64 * 1024),
            next_xid: 1,
        };
        let req = ConnectRequest {
            protocol_version: 0,
            last_zxid_seen: 0,
            timeout_ms: SESSION_TIMEOUT_MS,
            session_id: 0,
            passwd: Some(vec![0; 16]),
            read_only: Some(false),
        };
        conn.stream.write_all(&encode_connect_request(&req)).await?;
        let payload = conn.frame().await?;
        let resp = ConnectResponse::from_bytes(&payload).map_err(other)?;
        if resp.timeout_ms <= 0 {
            return Err(other("the server refused the session (timeout 0)"));
        }
        Ok(conn)
    }

    /// Encodes `req` with the next xid into `out` (to be written later with others: pipelining).
    fn encode(&mut self, req: &Request, out: &mut Vec<u8>) -> i32 {
        let xid = self.next_xid;
        self.next_xid = self.next_xid.wrapping_add(1).max(1);
        out.extend_from_slice(&encode_request(xid, req));
        xid
    }

    async fn write(&mut self, frames: &[u8]) -> io::Result<()> {
        self.stream.write_all(frames).await
    }

    /// Sends `req` and waits for its reply.
    async fn call(&mut self, req: &Request) -> io::Result<Reply> {
        let mut out = Vec::with_capacity(256);
        let xid = self.encode(req, &mut out);
        self.write(&out).await?;
        let reply = tokio::time::timeout(REPLY_TIMEOUT, self.recv())
            .await
            .map_err(|_| other(format!("no reply within {REPLY_TIMEOUT:?}")))??;
        if reply.xid != xid {
            return Err(other(format!(
                "reply to xid {} while waiting for {xid}",
                reply.xid
            )));
        }
        Ok(reply)
    }

    /// The next reply, skipping pings and notifications.
    async fn recv(&mut self) -> io::Result<Reply> {
        loop {
            if let Some(r) = self.buffered()? {
                return Ok(r);
            }
            if self.stream.read_buf(&mut self.buf).await? == 0 {
                return Err(io::ErrorKind::UnexpectedEof.into());
            }
        }
    }

    /// A reply already in the buffer, without reading the socket.
    fn buffered(&mut self) -> io::Result<Option<Reply>> {
        loop {
            let (reply, used) = match FrameDecoder::new(REPLY_BYTES_MAX).decode(&self.buf) {
                Decoded::NeedMore => return Ok(None),
                Decoded::Error(e) => return Err(other(e)),
                Decoded::Frame(p) => {
                    let (h, _) = split_reply(p).map_err(other)?;
                    (
                        Reply {
                            xid: h.xid,
                            err: h.err,
                        },
                        4 + p.len(),
                    )
                }
            };
            self.buf.advance(used);
            if reply.xid != xid::PING && reply.xid != xid::NOTIFICATION {
                return Ok(Some(reply));
            }
        }
    }

    /// The next frame's payload (the handshake reply has no reply header).
    async fn frame(&mut self) -> io::Result<Vec<u8>> {
        loop {
            match FrameDecoder::new(REPLY_BYTES_MAX).decode(&self.buf) {
                Decoded::Frame(p) => {
                    let payload = p.to_vec();
                    self.buf.advance(4 + payload.len());
                    return Ok(payload);
                }
                Decoded::Error(e) => return Err(other(e)),
                Decoded::NeedMore => {}
            }
            if self.stream.read_buf(&mut self.buf).await? == 0 {
                return Err(io::ErrorKind::UnexpectedEof.into());
            }
        }
    }

    /// Ends the session (closeSession), so no benchmark session outlives its run.
    async fn close(mut self) -> io::Result<()> {
        self.call(&Request::CloseSession).await.map(|_| ())
    }
}

fn open_acl() -> Vec<Acl> {
    vec![Acl {
        perms: perms::ALL,
        id: Id {
            scheme: "world".into(),
            id: "anyone".into(),
        },
    }]
}

fn create(path: String, data: Vec<u8>) -> Request {
    Request::Create {
        op: OpCode::Create,
        req: CreateRequest {
            path,
            data: Some(data),
            acl: open_acl(),
            flags: CreateMode::Persistent.as_i32(),
            ttl: -1,
        },
    }
}

fn set_data(path: String, data: Vec<u8>) -> Request {
    Request::SetData(SetDataRequest {
        path,
        data: Some(data),
        version: -1,
    })
}

fn expect_ok(reply: Reply, what: &str) -> io::Result<()> {
    if reply.err == 0 {
        Ok(())
    } else {
        Err(other(format!(
            "{what}: error {} ({:?})",
            reply.err,
            ErrorCode::from_i32(reply.err)
        )))
    }
}

/// Creates `path`; one that already exists is fine (set-up steps may be repeated on the same server).
async fn ensure(conn: &mut Conn, path: &str) -> io::Result<()> {
    let reply = conn.call(&create(path.into(), Vec::new())).await?;
    if reply.err == ErrorCode::NodeExists.as_i32() {
        return Ok(());
    }
    expect_ok(reply, path)
}

// ---------------------------------------------------------------------------------------------------------
// Measurements

/// Process CPU time (user + system) so far.
fn cpu_time() -> Duration {
    // SAFETY: getrusage only writes into the struct we pass.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: RUSAGE_SELF with a valid pointer cannot fail.
    unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut ru) };
    let tv = |t: libc::timeval| Duration::new(t.tv_sec as u64, t.tv_usec as u32 * 1000);
    tv(ru.ru_utime) + tv(ru.ru_stime)
}

fn epoch_ns() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0)
}

/// One operation: its latency and when it was sent (ms since the epoch, to match with server logs).
#[derive(Clone, Copy)]
struct Sample {
    latency_us: u32,
    sent_epoch_ms: u64,
}

/// The value at quantile `q` of sorted `v` (nearest rank).
fn quantile(v: &[u32], q: f64) -> u32 {
    if v.is_empty() {
        return 0;
    }
    let rank = ((q * v.len() as f64).ceil() as usize).clamp(1, v.len());
    v[rank - 1]
}

fn ms(us: u32) -> String {
    format!("{:.3}", us as f64 / 1000.0)
}

// ---------------------------------------------------------------------------------------------------------
// Modes

/// Small fast PRNG (xorshift64*) for `set-random`: no need for anything stronger.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

async fn write_mode(a: &Args) -> Result<()> {
    // Set-up before the clock starts: every writer's session and its node.
    let mut conns = Vec::with_capacity(a.writers);
    for _ in 0..a.writers {
        conns.push(Conn::connect(&a.addr).await?);
    }
    if a.op != WriteOp::SetRandom {
        ensure(&mut conns[0], &a.root).await?;
        for (i, conn) in conns.iter_mut().enumerate() {
            ensure(conn, &format!("{}/w{i}", a.root)).await?;
        }
    }
    let cpu_before = cpu_time();
    let started = Instant::now();
    let measure_from = started + Duration::from_secs_f64(a.warmup_secs);
    let until = measure_from + Duration::from_secs_f64(a.secs);
    let mut tasks = JoinSet::new();
    for (i, mut conn) in conns.into_iter().enumerate() {
        let a = a.clone();
        tasks.spawn(async move {
            let mut samples = Vec::with_capacity(1 << 16);
            let data = vec![b'v'; a.size_bytes];
            let mut rng = Rng(0x9e37_79b9_7f4a_7c15 ^ (i as u64 + 1).wrapping_mul(0xff51_afd7));
            let mut seq = 0u64;
            loop {
                let path = match a.op {
                    WriteOp::Set => format!("{}/w{i}", a.root),
                    WriteOp::Create => {
                        seq += 1;
                        format!("{}/w{i}/n{seq}", a.root)
                    }
                    WriteOp::SetRandom => {
                        format!("/d{}/n{}", rng.below(a.dirs), rng.below(a.per_dir))
                    }
                };
                let req = match a.op {
                    WriteOp::Create => create(path, data.clone()),
                    _ => set_data(path, data.clone()),
                };
                let sent = Instant::now();
                if sent >= until {
                    break;
                }
                let sent_epoch_ms = (epoch_ns() / 1_000_000) as u64;
                let reply = conn.call(&req).await?;
                expect_ok(reply, "write")?;
                if sent >= measure_from {
                    samples.push(Sample {
                        latency_us: u32::try_from(sent.elapsed().as_micros()).unwrap_or(u32::MAX),
                        sent_epoch_ms,
                    });
                }
            }
            conn.close().await?;
            Ok::<_, io::Error>(samples)
        });
    }
    let mut samples = Vec::new();
    while let Some(r) = tasks.join_next().await {
        samples.extend(r??);
    }
    let cpu = cpu_time() - cpu_before;
    let wall = started.elapsed();
    let mut lat: Vec<u32> = samples.iter().map(|s| s.latency_us).collect();
    lat.sort_unstable();
    let op = match a.op {
        WriteOp::Set => "set",
        WriteOp::Create => "create",
        WriteOp::SetRandom => "set-random",
    };
    println!(
        "RESULT mode=write op={op} writers={} ops={} ops_per_s={:.0} p50_ms={} p99_ms={} p999_ms={} max_ms={} \
         bench_cpu_s={:.2} wall_s={:.2}",
        a.writers,
        lat.len(),
        lat.len() as f64 / a.secs,
        ms(quantile(&lat, 0.50)),
        ms(quantile(&lat, 0.99)),
        ms(quantile(&lat, 0.999)),
        ms(lat.last().copied().unwrap_or(0)),
        cpu.as_secs_f64(),
        wall.as_secs_f64(),
    );
    samples.sort_unstable_by_key(|s| std::cmp::Reverse(s.latency_us));
    for s in samples.iter().take(SLOWEST_LISTED) {
        println!(
            "SLOW sent_epoch_ms={} latency_ms={}",
            s.sent_epoch_ms,
            ms(s.latency_us)
        );
    }
    Ok(())
}

/// Creates `/d{0..dirs}` and `per_dir` children in each, `size` bytes of data each, with `window` creates
/// outstanding per session; then `/last` once every other create is acknowledged.
async fn load_mode(a: &Args) -> Result<()> {
    let cpu_before = cpu_time();
    let started = Instant::now();
    let mut first = Conn::connect(&a.addr).await?;
    let dirs: Vec<String> = (0..a.dirs).map(|d| format!("/d{d}")).collect();
    pipeline(
        &mut first,
        a.window,
        dirs.into_iter().map(|p| create(p, Vec::new())),
    )
    .await?;
    // Closed now: left idle while the children load, its session would expire on a slow server.
    first.close().await?;
    let mut tasks = JoinSet::new();
    for k in 0..a.sessions {
        let a = a.clone();
        tasks.spawn(async move {
            let mut conn = Conn::connect(&a.addr).await?;
            let data = vec![b'x'; a.size_bytes];
            let reqs = (k..a.dirs).step_by(a.sessions).flat_map(move |d| {
                let data = data.clone();
                (0..a.per_dir).map(move |i| create(format!("/d{d}/n{i}"), data.clone()))
            });
            pipeline(&mut conn, a.window, reqs).await?;
            conn.close().await
        });
    }
    while let Some(r) = tasks.join_next().await {
        r??;
    }
    let mut last = Conn::connect(&a.addr).await?;
    let sentinel = create("/last".into(), vec![b'L'; a.size_bytes]);
    expect_ok(last.call(&sentinel).await?, "/last")?;
    last.close().await?;
    let wall = started.elapsed();
    let nodes = a.dirs * (a.per_dir + 1) + 1;
    println!(
        "RESULT mode=load nodes={nodes} secs={:.2} creates_per_s={:.0} bench_cpu_s={:.2}",
        wall.as_secs_f64(),
        nodes as f64 / wall.as_secs_f64(),
        (cpu_time() - cpu_before).as_secs_f64(),
    );
    Ok(())
}

/// Sends `reqs` keeping `window` outstanding; every reply must be a success.
async fn pipeline(
    conn: &mut Conn,
    window: usize,
    mut reqs: impl Iterator<Item = Request>,
) -> io::Result<()> {
    let mut outstanding = 0usize;
    let mut out = Vec::with_capacity(window * 128);
    let mut exhausted = false;
    loop {
        out.clear();
        while !exhausted && outstanding < window {
            match reqs.next() {
                Some(req) => {
                    conn.encode(&req, &mut out);
                    outstanding += 1;
                }
                None => exhausted = true,
            }
        }
        if !out.is_empty() {
            conn.write(&out).await?;
        }
        if outstanding == 0 {
            return Ok(());
        }
        let reply = tokio::time::timeout(REPLY_TIMEOUT, conn.recv())
            .await
            .map_err(|_| other(format!("no reply within {REPLY_TIMEOUT:?}")))??;
        expect_ok(reply, "create")?;
        outstanding -= 1;
        while let Some(reply) = conn.buffered()? {
            expect_ok(reply, "create")?;
            outstanding -= 1;
        }
    }
}

/// Polls until the server answers a getData of `path`; a connection that is refused, closed or slow to
/// answer is retried every `POLL` until the deadline.
async fn ready_mode(a: &Args) -> Result<()> {
    const POLL: Duration = Duration::from_millis(10);
    const ATTEMPT: Duration = Duration::from_secs(1);
    let since = a.since_ns.unwrap_or_else(epoch_ns);
    let deadline = Instant::now() + Duration::from_secs_f64(a.deadline_secs);
    let mut attempts = 0u32;
    let mut last_error = String::new();
    while Instant::now() < deadline {
        attempts += 1;
        let attempt = async {
            let mut conn = Conn::connect(&a.addr).await?;
            let reply = conn
                .call(&Request::GetData(PathWatch {
                    path: a.path.clone(),
                    watch: false,
                }))
                .await?;
            Ok::<_, io::Error>((conn, reply))
        };
        match tokio::time::timeout(ATTEMPT, attempt).await {
            Ok(Ok((conn, reply))) => {
                let ready_ms = (epoch_ns().saturating_sub(since)) as f64 / 1e6;
                if reply.err == ErrorCode::NoNode.as_i32() {
                    return Err(format!("{} does not exist after the restart", a.path).into());
                }
                expect_ok(reply, "getData")?;
                conn.close().await?;
                println!(
                    "RESULT mode=ready path={} ready_ms={ready_ms:.0} attempts={attempts}",
                    a.path
                );
                return Ok(());
            }
            Ok(Err(e)) => last_error = e.to_string(),
            Err(_) => last_error = "attempt timed out".into(),
        }
        tokio::time::sleep(POLL).await;
    }
    Err(format!("not ready after {}s: {last_error}", a.deadline_secs).into())
}

fn free_port() -> Result<()> {
    let l = std::net::TcpListener::bind("127.0.0.1:0")?;
    println!("{}", l.local_addr()?.port());
    Ok(())
}

fn main() -> std::process::ExitCode {
    let args = match parse_args() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("{e}");
            return std::process::ExitCode::from(2);
        }
    };
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("storage_bench: cannot start the runtime: {e}");
            return std::process::ExitCode::from(1);
        }
    };
    let result = rt.block_on(async {
        match args.mode.as_str() {
            "write" => write_mode(&args).await,
            "load" => load_mode(&args).await,
            "ready" => ready_mode(&args).await,
            "free-port" => free_port(),
            other => Err(format!("unknown mode {other}\n{USAGE}").into()),
        }
    });
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("storage_bench {}: {e}", args.mode);
            std::process::ExitCode::from(1)
        }
    }
}
