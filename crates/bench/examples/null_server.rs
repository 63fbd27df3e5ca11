//! The ceiling of this machine for `oxkeeper bench`: a server that speaks the wire protocol and keeps
//! nothing. It answers every request at once with a plausible success reply (getData: `--value-size`
//! bytes and a Stat; create: the path asked; setData/exists: a Stat; ...), with no tree, no log, no fsync,
//! no session tracking. Whatever throughput the generator reaches against it is what the generator, the
//! kernel's loopback TCP and the cores allow on this machine; no real server can beat it, so a ratio
//! between two real servers above `null / slower server` cannot show here.
//!
//! `cargo run --release -p oxkeeper-bench --example null_server -- [--listen 127.0.0.1:0] [--value-size 100]`
//! prints `listening on ADDR` and serves until killed. Each connection is one task that reads whatever
//! has arrived, answers every complete frame in it and writes all the replies with one call: the least a
//! server can do per request.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;

use clap::Parser;
use oxkeeper_proto::frame::{encode_connect_response, encode_reply};
use oxkeeper_proto::records::{
    ConnectRequest, ConnectResponse, MultiResult, Record, Request, RequestHeader, Response, Stat,
};
use oxkeeper_proto::{xid, OpCode, Reader};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
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
}

struct Server {
    value: Vec<u8>,
    next_session: AtomicI64,
    zxid: AtomicI64,
}

fn main() -> std::io::Result<()> {
    let cli = Cli::parse();
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

async fn serve(mut stream: TcpStream, server: &Server) -> std::io::Result<()> {
    stream.set_nodelay(true)?;
    let mut buf: Vec<u8> = Vec::with_capacity(16 * 1024);
    let mut out: Vec<u8> = Vec::with_capacity(16 * 1024);
    let mut handshaken = false;
    loop {
        let mut chunk = [0u8; 16 * 1024];
        let n = stream.read(&mut chunk).await?;
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
            pos = end;
            if !handshaken {
                let Ok(req) = ConnectRequest::from_prefix(frame) else {
                    return Ok(());
                };
                handshaken = true;
                let session_id = if req.session_id != 0 {
                    req.session_id
                } else {
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
            let (zxid, resp) = answer(server, req);
            let x = if header.op == OpCode::Ping as i32 {
                xid::PING
            } else {
                header.xid
            };
            out.extend(encode_reply(x, zxid, 0, &resp));
        }
        buf.drain(..pos);
        if !out.is_empty() {
            stream.write_all(&out).await?;
            out.clear();
        }
        if close {
            return Ok(());
        }
    }
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
