//! The ceiling of this machine for `oxkeeper bench`: a server that speaks the wire protocol and keeps
//! nothing. It answers every request at once with a plausible success reply (getData: `--value-size`
//! bytes and a Stat; create: the path asked; setData/exists: a Stat; ...), with no tree, no log, no fsync,
//! no session tracking. Whatever throughput the generator reaches against it is what the generator, the
//! kernel's loopback TCP and the cores allow on this machine; no real server can beat it, so a ratio
//! between two real servers above `null / slower server` cannot show here.
//!
//! `cargo run --release -p oxkeeper-bench --example null_server -- [--listen 127.0.0.1:0] [--value-size 100]
//! [--log FILE]` prints `listening on ADDR` and serves until killed. Each connection is one task that reads
//! whatever has arrived, answers every complete frame in it and writes all the replies with one call: the
//! least a server can do per request.
//!
//! With `--log FILE` it is the least a *durable* server can do: every write request (and every new session,
//! and every closeSession) is appended to FILE (preallocated and zeroed, 64 MiB, written round and round) and
//! acknowledged only after an fdatasync that covers it. One logger thread does group commit: it takes every
//! request queued while the last fdatasync ran, writes them with one call, syncs once, and writes the
//! replies to the sockets itself (no hop back to the connection's task). A connection with a request in the
//! log sends its later replies through the logger too, so every connection's replies stay in order. Still
//! no tree, no sessions, no replication protocol: what the generator reaches against it is the ceiling of
//! a server that syncs its writes on this disk and these cores.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicI64, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};

use clap::Parser;
use oxkeeper_proto::frame::{encode_connect_response, encode_reply};
use oxkeeper_proto::records::{
    ConnectRequest, ConnectResponse, MultiResult, Record, Request, RequestHeader, Response, Stat,
};
use oxkeeper_proto::{xid, OpCode, Reader};
use tokio::net::{TcpListener, TcpStream};

#[derive(Parser)]
#[command(
    name = "null_server",
    about = "A ZooKeeper wire-protocol server that keeps nothing"
)]
struct Cli {
    /// Address to listen on (port 0: any free port; the chosen address is printed).
    #[arg(long, default_value = "127.0.0.1:0")]
    listen: SocketAddr,
    /// Bytes of data in every getData reply.
    #[arg(long, default_value_t = 100)]
    value_size: usize,
    /// Log writes to this file (created or overwritten) with an fdatasync before each reply (see above).
    #[arg(long)]
    log: Option<std::path::PathBuf>,
}

struct Server {
    value: Vec<u8>,
    next_session: AtomicI64,
    zxid: AtomicI64,
    log: Option<Arc<Log>>,
}

/// Bytes the log file is preallocated with (zeroed up front: no fdatasync has to extend the file).
const LOG_BYTES: u64 = 64 << 20;

/// The group-commit queue between the connections and the logger thread.
#[derive(Default)]
struct Log {
    queue: Mutex<LogQueue>,
    ready: Condvar,
}

#[derive(Default)]
struct LogQueue {
    /// The requests to append, as they came (frames).
    bytes: Vec<u8>,
    /// Replies to write once the bytes above are synced, in queue order, and whether the connection
    /// closes after them (a closeSession).
    replies: Vec<(Arc<Conn>, Vec<u8>, bool)>,
}

/// A connection as the logger sees it: its socket, and how many of its reply batches wait in the log.
struct Conn {
    stream: TcpStream,
    in_log: AtomicUsize,
}

impl Log {
    fn push(&self, conn: &Arc<Conn>, frames: &[u8], replies: Vec<u8>, close: bool) {
        conn.in_log.fetch_add(1, Ordering::AcqRel);
        let mut q = self.queue.lock().unwrap_or_else(|p| p.into_inner());
        q.bytes.extend_from_slice(frames);
        q.replies.push((Arc::clone(conn), replies, close));
        drop(q);
        self.ready.notify_one();
    }

    /// The logger thread: group commit until the process ends.
    fn run(&self, file: std::fs::File) {
        use std::os::unix::fs::FileExt;
        let mut offset = 0u64;
        loop {
            let batch = {
                let mut q = self.queue.lock().unwrap_or_else(|p| p.into_inner());
                while q.replies.is_empty() {
                    q = self.ready.wait(q).unwrap_or_else(|p| p.into_inner());
                }
                std::mem::take(&mut *q)
            };
            let len = batch.bytes.len() as u64;
            if offset + len > LOG_BYTES {
                offset = 0;
            }
            if let Err(e) = file
                .write_all_at(&batch.bytes, offset)
                .and_then(|()| file.sync_data())
            {
                eprintln!("null_server: log: {e}");
                std::process::exit(1);
            }
            offset += len;
            for (conn, replies, close) in batch.replies {
                write_blocking(&conn.stream, &replies);
                if close {
                    // The socket closes when the last reference to it goes (the connection's task has
                    // returned or will); the client sees the end of the stream after the reply.
                    let _ = socket2::SockRef::from(&conn.stream).shutdown(std::net::Shutdown::Both);
                }
                conn.in_log.fetch_sub(1, Ordering::AcqRel);
            }
        }
    }
}

/// Writes all of `bytes` to a non-blocking socket from a plain thread (the send buffer is rarely full: the
/// replies are small and the generator reads them at once).
fn write_blocking(stream: &TcpStream, mut bytes: &[u8]) {
    while !bytes.is_empty() {
        match stream.try_write(bytes) {
            Ok(n) => bytes = &bytes[n..],
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => std::thread::yield_now(),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(_) => return,
        }
    }
}

fn main() -> std::io::Result<()> {
    let cli = Cli::parse();
    let log = match &cli.log {
        Some(path) => {
            let file = std::fs::OpenOptions::new()
                .create(true)
                .truncate(true)
                .read(true)
                .write(true)
                .open(path)?;
            let zeros = vec![0u8; 1 << 20];
            for i in 0..LOG_BYTES >> 20 {
                std::os::unix::fs::FileExt::write_all_at(&file, &zeros, i << 20)?;
            }
            file.sync_all()?;
            let log = Arc::new(Log::default());
            let logger = Arc::clone(&log);
            std::thread::Builder::new()
                .name("logger".into())
                .spawn(move || logger.run(file))?;
            Some(log)
        }
        None => None,
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    rt.block_on(async move {
        let listener = TcpListener::bind(cli.listen).await?;
        println!("listening on {}", listener.local_addr()?);
        let server = Arc::new(Server {
            value: vec![b'x'; cli.value_size],
            next_session: AtomicI64::new(1 << 56),
            zxid: AtomicI64::new(1),
            log,
        });
        loop {
            let (stream, _) = listener.accept().await?;
            let server = server.clone();
            tokio::spawn(async move {
                let _ = serve(stream, &server).await;
            });
        }
    })
}

async fn serve(stream: TcpStream, server: &Server) -> std::io::Result<()> {
    stream.set_nodelay(true)?;
    let conn = Arc::new(Conn {
        stream,
        in_log: AtomicUsize::new(0),
    });
    let mut buf: Vec<u8> = Vec::with_capacity(16 * 1024);
    let mut out: Vec<u8> = Vec::with_capacity(16 * 1024);
    // The frames of this chunk that go to the log.
    let mut logged: Vec<u8> = Vec::new();
    let mut handshaken = false;
    loop {
        let mut chunk = [0u8; 16 * 1024];
        conn.stream.readable().await?;
        let n = match conn.stream.try_read(&mut chunk) {
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => continue,
            Err(e) => return Err(e),
        };
        if n == 0 {
            return Ok(());
        }
        buf.extend_from_slice(&chunk[..n]);
        let mut pos = 0;
        let mut close = false;
        while buf.len() - pos >= 4 {
            let len = i32::from_be_bytes([buf[pos], buf[pos + 1], buf[pos + 2], buf[pos + 3]]);
            if !(0..=0xfffff).contains(&len) {
                return Ok(());
            }
            let end = pos + 4 + len as usize;
            if buf.len() < end {
                break;
            }
            let frame = &buf[pos + 4..end];
            let whole = &buf[pos..end];
            pos = end;
            if !handshaken {
                let Ok(req) = ConnectRequest::from_prefix(frame) else {
                    return Ok(());
                };
                handshaken = true;
                let session_id = if req.session_id != 0 {
                    req.session_id
                } else {
                    // A new session is a write (ZooKeeper logs createSession before it answers).
                    logged.extend_from_slice(whole);
                    server.next_session.fetch_add(1, Ordering::Relaxed)
                };
                out.extend(encode_connect_response(&ConnectResponse {
                    protocol_version: 0,
                    timeout_ms: req.timeout_ms,
                    session_id,
                    passwd: vec![0; 16],
                    read_only: req.read_only.map(|_| false),
                }));
                continue;
            }
            let mut r = Reader::new(frame);
            let Ok(header) = RequestHeader::decode(&mut r) else {
                return Ok(());
            };
            let body = &frame[r.position()..];
            let Ok(req) = Request::decode(header.op, body) else {
                return Ok(());
            };
            if header.op == OpCode::CloseSession as i32 {
                close = true;
            }
            if req.is_write() {
                logged.extend_from_slice(whole);
            }
            let (zxid, resp) = answer(server, req);
            let x = if header.op == OpCode::Ping as i32 {
                xid::PING
            } else {
                header.xid
            };
            out.extend(encode_reply(x, zxid, 0, &resp));
        }
        buf.drain(..pos);
        match &server.log {
            // Durable: replies wait for the log if this chunk wrote, or if earlier replies still wait.
            Some(log)
                if !out.is_empty()
                    && (!logged.is_empty() || conn.in_log.load(Ordering::Acquire) > 0) =>
            {
                log.push(&conn, &logged, std::mem::take(&mut out), close);
                logged.clear();
                if close {
                    // The logger writes the closeSession reply, then closes the socket.
                    return Ok(());
                }
            }
            _ => {
                if !out.is_empty() {
                    write_all(&conn.stream, &out).await?;
                    out.clear();
                }
            }
        }
        if close {
            return Ok(());
        }
    }
}

async fn write_all(stream: &TcpStream, mut bytes: &[u8]) -> std::io::Result<()> {
    while !bytes.is_empty() {
        stream.writable().await?;
        match stream.try_write(bytes) {
            Ok(n) => bytes = &bytes[n..],
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

fn stat(server: &Server, data_length: usize) -> Stat {
    Stat {
        czxid: 1,
        mzxid: 1,
        ctime: 0,
        mtime: 0,
        version: 0,
        cversion: 0,
        aversion: 0,
        ephemeral_owner: 0,
        data_length: data_length as i32,
        num_children: 0,
        pzxid: server.zxid.load(Ordering::Relaxed),
    }
}

/// A success reply for any request (writes count a zxid, as a real server would report).
fn answer(server: &Server, req: Request) -> (i64, Response) {
    let write = |server: &Server| server.zxid.fetch_add(1, Ordering::Relaxed) + 1;
    let read = |server: &Server| server.zxid.load(Ordering::Relaxed);
    match req {
        Request::Create { op, req } => {
            let zxid = write(server);
            if op == OpCode::Create {
                (zxid, Response::Create { path: req.path })
            } else {
                (
                    zxid,
                    Response::Create2 {
                        path: req.path,
                        stat: stat(server, req.data.map_or(0, |d| d.len())),
                    },
                )
            }
        }
        Request::Delete(_) => (write(server), Response::Empty),
        Request::SetData(r) => (
            write(server),
            Response::Stat(stat(server, r.data.map_or(0, |d| d.len()))),
        ),
        Request::Exists(_) => (
            read(server),
            Response::Stat(stat(server, server.value.len())),
        ),
        Request::GetData(_) => (
            read(server),
            Response::GetData {
                data: Some(server.value.clone()),
                stat: stat(server, server.value.len()),
            },
        ),
        Request::GetChildren(_) => (
            read(server),
            Response::GetChildren {
                children: Vec::new(),
            },
        ),
        Request::GetChildren2(_) => (
            read(server),
            Response::GetChildren2 {
                children: Vec::new(),
                stat: stat(server, 0),
            },
        ),
        Request::Multi(ops) => (
            write(server),
            Response::Multi(ops.iter().map(|_| MultiResult::Delete).collect()),
        ),
        _ => (read(server), Response::Empty),
    }
}
