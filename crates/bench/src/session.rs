//! One raw ZooKeeper session over TCP: the handshake, request frames encoded once and patched per send
//! ([`Template`]), and reply framing that reads only the `ReplyHeader` on the hot path.
//!
//! No client library sits in between, so what is measured is the server plus one loopback round trip.
//! Notifications that arrive while a control call waits are kept (with their arrival time), never dropped.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use bytes::{Buf, BytesMut};
use oxkeeper_proto::frame::{
    encode_connect_request, encode_request, split_reply, Decoded, FrameDecoder,
};
use oxkeeper_proto::{
    xid, ConnectRequest, ConnectResponse, Record, ReplyHeader, Request, WatcherEvent,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::error::BenchError;

/// Bytes asked of the socket per read: enough for hundreds of small replies at once.
const READ_CHUNK_BYTES: usize = 64 * 1024;
/// Bound on any single wait of a control call (prepare, cleanup, handshake).
pub const CONTROL_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a closed session waits for the server to close the connection.
const EOF_WAIT: Duration = Duration::from_secs(2);

/// A notification and when it was read.
#[derive(Debug, Clone)]
pub struct Notification {
    pub at: Instant,
    pub event: WatcherEvent,
}

pub struct Session {
    stream: TcpStream,
    rbuf: BytesMut,
    decoder: FrameDecoder,
    pub id: i64,
    /// The timeout the server granted, which may differ from the one asked for.
    pub timeout_ms: u32,
    next_xid: i32,
    /// Notifications read by control calls, oldest first.
    pub notifications: VecDeque<Notification>,
}

impl Session {
    /// TCP connect and handshake, asking for `timeout_ms`.
    pub async fn connect(addr: &str, timeout_ms: u32) -> Result<Session, BenchError> {
        let stream = TcpStream::connect(addr)
            .await
            .map_err(|source| BenchError::Connect {
                addr: addr.to_string(),
                source,
            })?;
        stream.set_nodelay(true)?;
        let mut s = Session {
            stream,
            rbuf: BytesMut::with_capacity(READ_CHUNK_BYTES),
            decoder: FrameDecoder::default(),
            id: 0,
            timeout_ms: 0,
            next_xid: 1,
            notifications: VecDeque::new(),
        };
        let hello = encode_connect_request(&ConnectRequest {
            protocol_version: 0,
            last_zxid_seen: 0,
            timeout_ms: timeout_ms.min(i32::MAX as u32) as i32,
            session_id: 0,
            passwd: Some(vec![0; 16]),
            read_only: Some(false),
        });
        s.write_all(&hello).await?;
        let frame = with_timeout("the handshake reply", s.next_frame()).await?;
        let resp = ConnectResponse::from_bytes(&frame)?;
        if resp.timeout_ms <= 0 {
            return Err(BenchError::SessionRefused);
        }
        s.id = resp.session_id;
        s.timeout_ms = resp.timeout_ms as u32;
        Ok(s)
    }

    /// The next xid, advanced by one (wrapping before the special negative ones).
    pub fn take_xid(&mut self) -> i32 {
        let x = self.next_xid;
        self.next_xid = if x == i32::MAX { 1 } else { x + 1 };
        x
    }

    pub async fn write_all(&mut self, bytes: &[u8]) -> Result<(), BenchError> {
        self.stream.write_all(bytes).await?;
        Ok(())
    }

    /// Reads whatever the socket has (at least one byte). Cancel-safe: usable in `select!`.
    pub async fn fill(&mut self) -> Result<(), BenchError> {
        self.rbuf.reserve(READ_CHUNK_BYTES);
        let n = self.stream.read_buf(&mut self.rbuf).await?;
        if n == 0 {
            return Err(BenchError::ConnectionLost);
        }
        Ok(())
    }

    /// Hands every whole reply frame already read to `f` (header and body), then drops them.
    pub fn drain_replies(
        &mut self,
        mut f: impl FnMut(ReplyHeader, &[u8]) -> Result<(), BenchError>,
    ) -> Result<(), BenchError> {
        let mut consumed = 0;
        let result = loop {
            match self.decoder.decode(&self.rbuf[consumed..]) {
                Decoded::Frame(payload) => {
                    let len = payload.len();
                    let step = split_reply(payload)
                        .map_err(BenchError::from)
                        .and_then(|(h, body)| f(h, body));
                    consumed += 4 + len;
                    if let Err(e) = step {
                        break Err(e);
                    }
                }
                Decoded::NeedMore => break Ok(()),
                Decoded::Error(e) => break Err(e.into()),
            }
        };
        self.rbuf.advance(consumed);
        result
    }

    /// The next whole frame's payload, reading as needed (control paths only: it copies).
    async fn next_frame(&mut self) -> Result<Vec<u8>, BenchError> {
        loop {
            match self.decoder.decode(&self.rbuf) {
                Decoded::Frame(payload) => {
                    let out = payload.to_vec();
                    self.rbuf.advance(4 + out.len());
                    return Ok(out);
                }
                Decoded::NeedMore => self.fill().await?,
                Decoded::Error(e) => return Err(e.into()),
            }
        }
    }

    /// The next reply that is not a notification or a ping reply; notifications are kept.
    pub async fn next_reply(&mut self) -> Result<(ReplyHeader, Vec<u8>), BenchError> {
        loop {
            let frame = self.next_frame().await?;
            let (h, body) = split_reply(&frame)?;
            match h.xid {
                xid::NOTIFICATION => self.keep_notification(body)?,
                xid::PING => {}
                _ => return Ok((h, body.to_vec())),
            }
        }
    }

    /// Waits for the next notification (already read, or from the socket).
    pub async fn next_notification(&mut self) -> Result<Notification, BenchError> {
        loop {
            if let Some(n) = self.notifications.pop_front() {
                return Ok(n);
            }
            let frame = self.next_frame().await?;
            let (h, body) = split_reply(&frame)?;
            match h.xid {
                xid::NOTIFICATION => self.keep_notification(body)?,
                xid::PING => {}
                got => return Err(BenchError::OutOfOrder { expected: -1, got }),
            }
        }
    }

    fn keep_notification(&mut self, body: &[u8]) -> Result<(), BenchError> {
        self.notifications.push_back(Notification {
            at: Instant::now(),
            event: WatcherEvent::from_bytes(body)?,
        });
        Ok(())
    }

    /// Sends one request and waits for its reply. An error reply is returned as `Ok` with `err != 0`.
    pub async fn call(&mut self, req: &Request) -> Result<(ReplyHeader, Vec<u8>), BenchError> {
        let x = self.take_xid();
        self.write_all(&encode_request(x, req)).await?;
        let (h, body) = with_timeout("a reply", self.next_reply()).await?;
        if h.xid != x {
            return Err(BenchError::OutOfOrder {
                expected: x,
                got: h.xid,
            });
        }
        Ok((h, body))
    }

    /// [`Session::call`], with an error reply turned into an error.
    pub async fn call_ok(&mut self, what: &str, req: &Request) -> Result<Vec<u8>, BenchError> {
        let (h, body) = self.call(req).await?;
        if h.err != 0 {
            return Err(BenchError::Server {
                what: what.to_string(),
                code: h.err,
            });
        }
        Ok(body)
    }

    /// Sends `reqs` with up to `depth` in flight, writing them in batches; returns each reply's error code,
    /// in order.
    pub async fn pipeline(
        &mut self,
        reqs: impl IntoIterator<Item = Request>,
        depth: usize,
    ) -> Result<Vec<i32>, BenchError> {
        let depth = depth.max(1);
        let mut reqs = reqs.into_iter().peekable();
        let mut inflight: VecDeque<i32> = VecDeque::new();
        let mut errs = Vec::new();
        let mut wbuf = Vec::new();
        while reqs.peek().is_some() || !inflight.is_empty() {
            while inflight.len() < depth {
                let Some(req) = reqs.next() else { break };
                let x = self.take_xid();
                wbuf.extend_from_slice(&encode_request(x, &req));
                inflight.push_back(x);
            }
            if !wbuf.is_empty() {
                self.write_all(&wbuf).await?;
                wbuf.clear();
            }
            let (h, _) = with_timeout("a pipelined reply", self.next_reply()).await?;
            let expected = inflight.pop_front().unwrap_or(0);
            if h.xid != expected {
                return Err(BenchError::OutOfOrder {
                    expected,
                    got: h.xid,
                });
            }
            errs.push(h.err);
        }
        Ok(errs)
    }

    /// Sends a ping (answered out of order by the server; its reply is skipped by the readers here).
    pub async fn ping(&mut self) -> Result<(), BenchError> {
        self.write_all(&encode_request(xid::PING, &Request::Ping))
            .await
    }

    /// Closes the session (closeSession, waiting for its reply), then waits briefly for the server to close
    /// the connection, so that the server's side, not ours, keeps the TIME_WAIT (thousands of short sessions
    /// would otherwise use up the local ports).
    pub async fn close(self) -> Result<(), BenchError> {
        self.close_timed().await.map(|_| ())
    }

    /// [`Session::close`], returning when the closeSession reply arrived.
    pub async fn close_timed(mut self) -> Result<Instant, BenchError> {
        self.call_ok("closeSession", &Request::CloseSession).await?;
        let replied = Instant::now();
        let _ = tokio::time::timeout(EOF_WAIT, async {
            while self.fill().await.is_ok() {
                self.rbuf.clear();
            }
        })
        .await;
        Ok(replied)
    }

    /// Drops the connection without closing the session, as a crashed client would.
    pub fn vanish(self) {
        // SO_LINGER 0 would reset instead of FIN; either way the server keeps the session until it expires.
        drop(self.stream);
    }
}

/// Awaits `f`, failing with [`BenchError::Timeout`] after [`CONTROL_TIMEOUT`].
pub async fn with_timeout<T>(
    what: &str,
    f: impl std::future::Future<Output = Result<T, BenchError>>,
) -> Result<T, BenchError> {
    match tokio::time::timeout(CONTROL_TIMEOUT, f).await {
        Ok(r) => r,
        Err(_) => Err(BenchError::Timeout {
            what: what.to_string(),
            seconds: CONTROL_TIMEOUT.as_secs_f64(),
        }),
    }
}

/// A request frame encoded once. Each send copies it, patches the xid and, optionally, a fixed-width decimal
/// number inside it (a node name), so a run never encodes a record on the hot path.
#[derive(Debug, Clone)]
pub struct Template {
    frame: Vec<u8>,
    /// Byte range of the zero-padded number in `frame`.
    number_at: Option<(usize, usize)>,
}

/// Where the xid sits in a request frame: after the length prefix.
const XID_AT: usize = 4;

impl Template {
    /// A frame sent as is (only its xid changes).
    pub fn fixed(req: &Request) -> Template {
        Template {
            frame: encode_request(0, req),
            number_at: None,
        }
    }

    /// A frame whose `path` ends with `width` digits that each send replaces. `make` builds the request for
    /// a path; the path must occur once in the encoded frame.
    pub fn numbered(prefix: &str, width: usize, make: impl Fn(String) -> Request) -> Template {
        let path = format!("{prefix}{}", "0".repeat(width));
        let frame = encode_request(0, &make(path.clone()));
        let at = frame
            .windows(path.len())
            .position(|w| w == path.as_bytes())
            .expect("the path is in the frame that was built from it");
        let end = at + path.len();
        Template {
            frame,
            number_at: Some((end - width, end)),
        }
    }

    /// The same template with the first occurrence of a placeholder (as many `#` as `with` has bytes)
    /// replaced by `with`.
    pub fn with_placeholder(&self, with: &[u8]) -> Template {
        let mut t = self.clone();
        let placeholder = vec![b'#'; with.len()];
        if let Some(at) = t
            .frame
            .windows(with.len())
            .position(|w| w == placeholder.as_slice())
        {
            t.frame[at..at + with.len()].copy_from_slice(with);
        }
        t
    }

    pub fn len(&self) -> usize {
        self.frame.len()
    }

    pub fn is_empty(&self) -> bool {
        self.frame.is_empty()
    }

    /// Appends the frame with `xid` and `number` (ignored by fixed templates) to `out`.
    pub fn write(&self, xid: i32, number: u64, out: &mut Vec<u8>) {
        let start = out.len();
        out.extend_from_slice(&self.frame);
        out[start + XID_AT..start + XID_AT + 4].copy_from_slice(&xid.to_be_bytes());
        if let Some((from, to)) = self.number_at {
            let digits = &mut out[start + from..start + to];
            let mut n = number;
            for d in digits.iter_mut().rev() {
                *d = b'0' + (n % 10) as u8;
                n /= 10;
            }
            debug_assert_eq!(n, 0, "{number} does not fit in {} digits", to - from);
        }
    }
}

/// The path of number `n` in a [`Template::numbered`] family.
pub fn numbered_path(prefix: &str, width: usize, n: u64) -> String {
    format!("{prefix}{n:0width$}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use oxkeeper_proto::frame::split_request;
    use oxkeeper_proto::PathWatch;

    fn get(path: String) -> Request {
        Request::GetData(PathWatch { path, watch: false })
    }

    #[test]
    fn numbered_template_patches_xid_and_number_like_a_fresh_encoding() {
        let t = Template::numbered("/r/k", 6, get);
        let mut out = Vec::new();
        t.write(42, 1234, &mut out);
        assert_eq!(
            out,
            encode_request(42, &get(numbered_path("/r/k", 6, 1234)))
        );
        let Decoded::Frame(payload) = FrameDecoder::default().decode(&out) else {
            panic!("a whole frame");
        };
        let (h, _) = split_request(payload).expect("header");
        assert_eq!(h.xid, 42);
    }

    #[test]
    fn fixed_template_changes_only_the_xid() {
        let req = get("/a".into());
        let t = Template::fixed(&req);
        let mut out = Vec::new();
        t.write(7, 99, &mut out);
        t.write(8, 99, &mut out);
        let mut expected = encode_request(7, &req);
        expected.extend(encode_request(8, &req));
        assert_eq!(out, expected);
        assert_eq!(t.len() * 2, out.len());
    }
}
