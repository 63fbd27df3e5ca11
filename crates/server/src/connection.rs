//! One client connection: framing in, one outbound FIFO out.
//!
//! The reader decodes frames and hands requests to the executor in arrival order; it answers pings itself,
//! at once, so a slow write can never make a client miss its read timeout. The writer drains the outbound
//! queue; a queue that fills up (a client that does not read) closes the connection instead of stalling the
//! executor. A connection's first frame is a ConnectRequest or a four-letter word.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use oxkeeper_proto::frame::{encode_reply, four_letter_word};
use oxkeeper_proto::records::{ConnectRequest, Record, Request, RequestHeader, Response};
use oxkeeper_proto::{xid, OpCode, Reader};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::OwnedReadHalf;
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::executor::{ExecMsg, Shared};
use crate::stats::Counter;

pub type ConnId = u64;

/// What a connection's writer sends, in order.
#[derive(Debug)]
pub enum Out {
    /// Bytes to write as they are (framed replies, or a four-letter word's text).
    Bytes(Vec<u8>),
    /// Flush what came before, then close the socket.
    Close,
}

/// The executor's handle on a connection's outbound queue.
#[derive(Clone, Debug)]
pub struct Outbound {
    tx: mpsc::Sender<Out>,
    cancel: CancellationToken,
    /// The server closes the connection (it decided to, or a closeSession was read): an end of stream from
    /// the client after this is not a drop.
    closing: Arc<AtomicBool>,
}

impl Outbound {
    /// Enqueues bytes; false (and the connection is closing) if the queue is full or gone.
    pub fn send(&self, bytes: Vec<u8>) -> bool {
        match self.tx.try_send(Out::Bytes(bytes)) {
            Ok(()) => true,
            Err(mpsc::error::TrySendError::Full(_)) => {
                tracing::warn!(
                    "outbound queue full: closing a connection whose client does not read"
                );
                self.cancel.cancel();
                false
            }
            Err(mpsc::error::TrySendError::Closed(_)) => false,
        }
    }
    /// Closes after everything queued so far is written.
    pub fn close(&self) {
        self.closing.store(true, Ordering::Release);
        if self.tx.try_send(Out::Close).is_err() {
            self.cancel.cancel();
        }
    }
    pub fn queued(&self) -> usize {
        self.tx.max_capacity() - self.tx.capacity()
    }
}

pub fn ping_reply(zxid: i64) -> Vec<u8> {
    encode_reply(xid::PING, zxid, 0, &Response::Empty)
}

/// Runs a connection to its end.
/// Serves one client connection until it closes. `slot` (its place in the `maxClientCnxns` count) is given
/// back as soon as the connection is closed, before the close linger.
pub async fn serve(
    stream: TcpStream,
    conn: ConnId,
    remote: SocketAddr,
    shared: Arc<Shared>,
    slot: crate::server::IpSlot,
) {
    let _ = stream.set_nodelay(true);
    let (rd, wr) = stream.into_split();
    let (tx, rx) = mpsc::channel(shared.config.outbound_queue_max.max(16));
    let cancel = CancellationToken::new();
    let out = Outbound {
        tx,
        cancel: cancel.clone(),
        closing: Arc::default(),
    };
    let writer = tokio::spawn(write_loop(wr, rx, cancel.clone()));
    let session = Arc::new(AtomicI64::new(0));
    shared.stats.cnxn_opened(
        conn,
        remote,
        session.clone(),
        shared.config.sessionless_cnxn_timeout_ms,
        shared.now_ms(),
    );
    let mut handoff = Handoff::default();
    let mut rd = rd;
    let closed_by_us = tokio::select! {
        r = read_loop(&mut rd, conn, remote, &shared, &out, &session, &mut handoff) => {
            if let Err(e) = r {
                tracing::debug!(conn, %remote, "connection closed: {e}");
                match e {
                    ConnError::SessionlessTimeout => shared.stats.count(Counter::SessionlessConnectionExpired),
                    e if e.is_end_of_stream()
                        && !cancel.is_cancelled()
                        && !out.closing.load(Ordering::Acquire) =>
                    {
                        shared.stats.count(Counter::ConnectionDrop)
                    }
                    _ => {}
                }
            }
            false
        }
        _ = cancel.cancelled() => true,
    };
    shared.stats.cnxn_closed(conn);
    // Behind the requests the client sent before it went (some may still be held).
    let _ = handoff.send(&shared, ExecMsg::Closed { conn }).await;
    drop(handoff);
    drop(slot);
    // Let the writer flush what the executor queued (e.g. a closeSession reply), then end it.
    out.close();
    let _ = tokio::time::timeout(CLOSE_LINGER, writer).await;
    if closed_by_us {
        // Closing a socket whose receive buffer holds unread bytes makes the kernel send RST, which can
        // destroy our last replies (an AUTHFAILED, a closeSession reply) before the client reads them.
        // Our side is shut down; read and discard until the client closes too, for a bounded time.
        let _ = tokio::time::timeout(CLOSE_LINGER, async {
            let mut sink = [0u8; 4096];
            while let Ok(n) = rd.read(&mut sink).await {
                if n == 0 {
                    break;
                }
            }
        })
        .await;
    }
}

/// How long a closing connection waits for its writer to flush, and then for the client to close its side.
const CLOSE_LINGER: Duration = Duration::from_secs(2);

/// Bytes gathered for one write when several replies are queued at once; a gathering buffer that grew beyond
/// this is freed after the write, so an idle connection holds no buffer at all.
const WRITE_GATHER_MAX: usize = 64 * 1024;

async fn write_loop(
    mut wr: tokio::net::tcp::OwnedWriteHalf,
    mut rx: mpsc::Receiver<Out>,
    cancel: CancellationToken,
) {
    let mut gathered: Vec<u8> = Vec::new();
    loop {
        let msg = tokio::select! {
            m = rx.recv() => m,
            _ = cancel.cancelled() => None,
        };
        let Some(mut msg) = msg else { break };
        // Everything queued goes out in as few writes as possible: a lone reply as it is, several gathered.
        let mut close = false;
        loop {
            match msg {
                Out::Bytes(b) => {
                    if gathered.is_empty() && rx.is_empty() {
                        if wr.write_all(&b).await.is_err() {
                            cancel.cancel();
                            return;
                        }
                    } else {
                        gathered.extend_from_slice(&b);
                        if gathered.len() >= WRITE_GATHER_MAX {
                            if wr.write_all(&gathered).await.is_err() {
                                cancel.cancel();
                                return;
                            }
                            gathered.clear();
                        }
                    }
                }
                Out::Close => {
                    close = true;
                    break;
                }
            }
            match rx.try_recv() {
                Ok(m) => msg = m,
                Err(_) => break,
            }
        }
        if !gathered.is_empty() {
            if wr.write_all(&gathered).await.is_err() {
                cancel.cancel();
                return;
            }
            gathered.clear();
        }
        if gathered.capacity() > WRITE_GATHER_MAX {
            gathered = Vec::new();
        }
        if close {
            let _ = wr.shutdown().await;
            cancel.cancel();
            return;
        }
    }
    let _ = wr.shutdown().await;
}

#[derive(Debug, thiserror::Error)]
enum ConnError {
    #[error("io: {0}")]
    Io(#[from] std::io::Error),
    #[error("the client closed the connection")]
    ClientClosed,
    #[error("invalid frame length {0}")]
    BadLength(i32),
    #[error("no ConnectRequest within the sessionless connection timeout")]
    SessionlessTimeout,
    #[error("malformed ConnectRequest: {0}")]
    BadConnect(String),
    #[error("executor stopped")]
    ExecutorGone,
}

impl ConnError {
    /// The client closed its side, between frames or within one (ZooKeeper's `connection_drop_count`).
    fn is_end_of_stream(&self) -> bool {
        match self {
            ConnError::ClientClosed => true,
            ConnError::Io(e) => e.kind() == std::io::ErrorKind::UnexpectedEof,
            _ => false,
        }
    }
}

async fn read_frame(
    rd: &mut OwnedReadHalf,
    max: usize,
    first4: Option<[u8; 4]>,
) -> Result<Option<Vec<u8>>, ConnError> {
    let len_bytes = match first4 {
        Some(b) => b,
        None => {
            let mut b = [0u8; 4];
            match rd.read_exact(&mut b).await {
                Ok(_) => b,
                Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => {
                    return Err(ConnError::ClientClosed)
                }
                Err(e) => return Err(e.into()),
            }
        }
    };
    let len = i32::from_be_bytes(len_bytes);
    if len < 0 || len as usize > max {
        return Err(ConnError::BadLength(len));
    }
    // Grow with what actually arrives: a client announcing 1 MiB and then stalling pins no memory.
    let len = len as usize;
    let mut payload = Vec::with_capacity(len.min(64 * 1024));
    let got = (&mut *rd)
        .take(len as u64)
        .read_to_end(&mut payload)
        .await?;
    if got < len {
        return Err(std::io::Error::from(std::io::ErrorKind::UnexpectedEof).into());
    }
    Ok(Some(payload))
}

/// ZooKeeper's counters of a parsed ConnectRequest: every one is a connection request; one that names a
/// session is a revalidation unless it is refused first for a lastZxidSeen ahead of ours (the executor
/// refuses those). From here on the connection's timeout is the session timeout it will get.
fn count_connect_request(shared: &Shared, conn: ConnId, req: &ConnectRequest) {
    let stats = &shared.stats;
    stats.count(Counter::ConnectionRequest);
    if req.last_zxid_seen > shared.last_zxid() {
        return;
    }
    if req.session_id != 0 {
        stats.count(Counter::ConnectionRevalidate);
    }
    let cfg = &shared.config;
    let timeout_ms = (req.timeout_ms.max(0) as u64)
        .max(cfg.min_session_timeout_ms())
        .min(cfg.max_session_timeout_ms());
    stats.cnxn_session_timeout(conn, timeout_ms, shared.now_ms());
}

/// Requests of one connection read while the member is at `globalOutstandingLimit` and not yet handed to
/// the executor. Up to this many, the reader goes on reading, so the connection's pings are still answered
/// while its requests wait; beyond it the reader stops, as ZooKeeper's does at the limit.
const HELD_REQUESTS: usize = 16;

/// Hands a connection's requests to the executor in order, each only once the requests outstanding over
/// all connections are below `globalOutstandingLimit` (ZooKeeper's throttle). Pings never pass here: the
/// reader answers them itself, so a member at its limit (a stalled disk, a flood of closes) still answers
/// every connection's pings as long as that connection holds fewer than `HELD_REQUESTS` requests.
/// Hands a connection's messages to the executor, in order. Directly while the member is below
/// `globalOutstandingLimit`; at the limit they are held, in order, by a forwarder task (made on first need, so
/// an idle connection costs no task and no queue) that waits for room, while the reader goes on.
#[derive(Default)]
struct Handoff {
    /// The forwarder's queue, and how many messages it holds that the executor has not been given yet.
    held: Option<(mpsc::Sender<ExecMsg>, Arc<AtomicUsize>)>,
}

impl Handoff {
    async fn send(&mut self, shared: &Arc<Shared>, msg: ExecMsg) -> Result<(), ConnError> {
        let counted = !matches!(msg, ExecMsg::Closed { .. });
        let holding = self
            .held
            .as_ref()
            .is_some_and(|(_, n)| n.load(Ordering::Acquire) > 0);
        // Only when nothing is held: a message must never overtake one of the same connection.
        if !holding && (!counted || shared.outstanding() < shared.config.global_outstanding_limit) {
            if counted {
                shared.request_started();
            }
            return shared.exec.send(msg).map_err(|_| ConnError::ExecutorGone);
        }
        let (tx, n) = self.held.get_or_insert_with(|| {
            let (tx, rx) = mpsc::channel(HELD_REQUESTS);
            let n = Arc::new(AtomicUsize::new(0));
            tokio::spawn(forward(rx, shared.clone(), n.clone()));
            (tx, n)
        });
        n.fetch_add(1, Ordering::AcqRel);
        tx.send(msg).await.map_err(|_| ConnError::ExecutorGone)
    }
}

async fn forward(mut rx: mpsc::Receiver<ExecMsg>, shared: Arc<Shared>, held: Arc<AtomicUsize>) {
    while let Some(m) = rx.recv().await {
        if !matches!(m, ExecMsg::Closed { .. }) {
            shared.wait_below_outstanding_limit().await;
            shared.request_started();
        }
        if shared.exec.send(m).is_err() {
            return;
        }
        // After the executor has it: the reader's next message may then go directly, behind this one.
        held.fetch_sub(1, Ordering::AcqRel);
    }
}

async fn read_loop(
    rd: &mut OwnedReadHalf,
    conn: ConnId,
    remote: SocketAddr,
    shared: &Arc<Shared>,
    out: &Outbound,
    session: &Arc<AtomicI64>,
    handoff: &mut Handoff,
) -> Result<(), ConnError> {
    let max = shared.config.max_buffer_bytes;
    let sessionless = Duration::from_millis(shared.config.sessionless_cnxn_timeout_ms);
    let stats = &shared.stats;
    let mut first = [0u8; 4];
    match tokio::time::timeout(sessionless, rd.read_exact(&mut first)).await {
        Err(_) => return Err(ConnError::SessionlessTimeout),
        Ok(Err(e)) if e.kind() == std::io::ErrorKind::UnexpectedEof => {
            return Err(ConnError::ClientClosed)
        }
        Ok(Err(e)) => return Err(e.into()),
        Ok(Ok(_)) => {}
    }
    stats.cnxn_touched(conn, shared.now_ms());
    if let Some(word) = four_letter_word(first) {
        // A packet of 4 bytes in and, once the text is written, one out, as ZooKeeper counts them.
        stats.cnxn_four_letter(conn);
        stats.add(Counter::BytesReceived, 4);
        stats.packet_received();
        shared
            .exec
            .send(ExecMsg::FourLetter {
                conn,
                remote,
                word,
                out: out.clone(),
            })
            .map_err(|_| ConnError::ExecutorGone)?;
        // The executor writes the text and closes the socket, whatever the client does meanwhile (`nc`
        // half-closes right after sending the word).
        out.cancel.cancelled().await;
        stats.packet_sent();
        return Ok(());
    }
    let payload = match tokio::time::timeout(sessionless, read_frame(rd, max, Some(first))).await {
        Err(_) => return Err(ConnError::SessionlessTimeout),
        Ok(r) => match r? {
            Some(p) => p,
            None => return Err(ConnError::ClientClosed),
        },
    };
    stats.cnxn_touched(conn, shared.now_ms());
    stats.add(Counter::BytesReceived, 4 + payload.len() as u64);
    // Trailing bytes are ignored, as ZooKeeper's reader ignores them.
    let req =
        ConnectRequest::from_prefix(&payload).map_err(|e| ConnError::BadConnect(e.to_string()))?;
    count_connect_request(shared, conn, &req);
    shared
        .exec
        .send(ExecMsg::Connect {
            conn,
            remote,
            req,
            out: out.clone(),
            session: session.clone(),
        })
        .map_err(|_| ConnError::ExecutorGone)?;

    loop {
        let Some(payload) = read_frame(rd, max, None).await? else {
            return Err(ConnError::ClientClosed);
        };
        stats.cnxn_touched(conn, shared.now_ms());
        stats.add(Counter::BytesReceived, 4 + payload.len() as u64);
        let mut r = Reader::new(&payload);
        let Ok(header) = RequestHeader::decode(&mut r) else {
            handoff
                .send(shared, ExecMsg::Malformed { conn, xid: 0 })
                .await?;
            continue;
        };
        let body = &payload[r.position()..];
        if header.op == OpCode::CloseSession as i32 {
            // The server closes after the reply; a client that closes as soon as it has the reply is
            // not dropping the connection (ZooKeeper queues the close before writing the reply).
            out.closing.store(true, Ordering::Release);
        }
        if header.op == OpCode::Ping as i32 {
            let sid = session.load(Ordering::Acquire);
            if sid != 0 {
                // Answered here, at once; dropped (no reply) if the session is unknown or closing.
                let started = Instant::now();
                stats.packet_received();
                if shared.touch(sid) {
                    let zxid = shared.last_zxid();
                    out.send(ping_reply(zxid));
                    stats.packet_sent();
                    stats.latency(started.elapsed());
                    stats.cnxn_pinged(conn, zxid, started.elapsed());
                }
                continue;
            }
        }
        let msg = match Request::decode(header.op, body) {
            Ok(req) => ExecMsg::Request {
                conn,
                xid: header.xid,
                req,
            },
            Err(oxkeeper_proto::RequestDecodeError::UnknownOpcode(op)) => ExecMsg::Unknown {
                conn,
                xid: header.xid,
                op,
            },
            Err(e) => {
                tracing::debug!(conn, %remote, op = header.op, "malformed request: {e}");
                ExecMsg::Malformed {
                    conn,
                    xid: header.xid,
                }
            }
        };
        handoff.send(shared, msg).await?;
    }
}
