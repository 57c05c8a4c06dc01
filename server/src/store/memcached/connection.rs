//! One pipelined connection to a memcached server.
//!
//! Many requests share a connection. A caller appends its encoded command
//! to the connection's write buffer and registers what it waits for; if no
//! write is under way it writes the buffer itself, at once and without
//! blocking, so a lone request is never delayed to wait for company. What
//! other callers append meanwhile goes out together: on a multi-threaded
//! runtime in the same write (the writing caller loops). On a
//! single-threaded runtime (memgate's default) a request for a connection
//! that is busy (requests in flight) is left to the connection's writer
//! task, which runs after the tasks queued in the same tick, so the Gets
//! decoded from one read of a client connection go out in one write. The
//! writer task also takes over whenever the socket is full. One reader
//! task decodes replies and hands each to its caller.
//!
//! Replies are matched to requests by more than position. On a meta
//! connection every request carries an opaque token and asks for its key
//! back; a reply with the wrong token or key, or any byte that arrives when
//! nothing is awaited, closes the connection and fails what was in flight
//! on it. A text-protocol connection (servers without meta commands)
//! carries one request at a time, and any byte left over after a complete
//! reply closes it too. Any other error — I/O, a malformed reply, a request
//! that outlives its timeout — also closes the connection, and a closed
//! connection is never reused: a stale reply can never reach the next
//! request.

use std::collections::VecDeque;
use std::io;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use bytes::{Buf, Bytes, BytesMut};
use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::sync::{Notify, Semaphore, oneshot};
use tokio_util::sync::CancellationToken;

use super::meta::{self, Code, Flags, Line};
use super::protocol::{self, Decoder, ProtocolError, Terminator};
use crate::key::Key;
use crate::metrics::{Counter, Gauge, ShardMetrics};
use crate::store::budget::{Overflow, Reservation};

/// Room kept free in the read buffer before each read.
const READ_CHUNK: usize = 16 * 1024;

/// Which protocol a connection speaks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// memcached >= 1.6: meta commands, tagged replies, pipelined.
    Meta,
    /// The classic text protocol, one request at a time.
    Text,
}

/// Why a request on a connection failed.
#[derive(Debug, thiserror::Error)]
pub enum ConnError {
    /// Reading or writing the socket failed.
    #[error("connection failed: {0}")]
    Io(#[from] io::Error),
    /// The server's reply broke the protocol.
    #[error("bad reply: {0}")]
    Protocol(#[from] ProtocolError),
    /// No reply within the timeout.
    #[error("no reply within {0:?}")]
    Timeout(Duration),
    /// The connection had already been closed by an earlier failure.
    #[error("connection closed")]
    Closed,
    /// The values read for the call outgrew its byte budget; the
    /// connection itself is fine.
    #[error("byte budget exceeded")]
    Budget(Overflow),
}

/// What the reply to a request must look like.
#[derive(Debug)]
pub enum Expect {
    /// One meta reply echoing the request's token and this key.
    One(Key),
    /// The reply to an `ma` (counter) for this key: like [`Expect::One`],
    /// or memcached's non-numeric `CLIENT_ERROR`, which names no key.
    Counter(Key),
    /// A quiet meta batch for these keys (token `base + i` for key `i`),
    /// closed by `MN`: replies come only for what quiet mode does not
    /// suppress, in key order.
    Quiet(Arc<[Key]>),
    /// A text-protocol reply.
    Text(Decoder),
}

/// One meta reply.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MetaReply {
    /// Its status.
    pub code: Code,
    /// Its flags.
    pub flags: Flags,
    /// The value, after `VA`.
    pub value: Option<Bytes>,
}

/// A complete reply.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Reply {
    /// The reply to an [`Expect::One`].
    Meta(MetaReply),
    /// `SERVER_ERROR` in answer to an [`Expect::One`].
    ServerError(String),
    /// An [`Expect::Counter`]'s value is not a number.
    NonNumeric,
    /// The replies to an [`Expect::Quiet`] batch, by key index.
    Quiet {
        /// Replies quiet mode did not suppress.
        replies: Vec<(usize, MetaReply)>,
        /// A `SERVER_ERROR` seen in the batch: it names no key, so every
        /// key without a reply has an unknown outcome.
        server_error: Option<String>,
    },
    /// The reply to an [`Expect::Text`].
    Text(protocol::Reply),
}

impl Reply {
    /// What kind of reply this is, without what it carries (values), for
    /// errors: they reach logs and callers.
    pub fn kind(&self) -> &'static str {
        match self {
            Reply::Meta(_) => "a meta reply",
            Reply::ServerError(_) => "SERVER_ERROR",
            Reply::NonNumeric => "CLIENT_ERROR (not a number)",
            Reply::Quiet { .. } => "quiet-mode replies",
            Reply::Text(r) => r.kind(),
        }
    }
}

/// A request waiting for its reply.
struct Pending {
    token: u32,
    expect: Expect,
    max_value: usize,
    budget: Option<Arc<Reservation>>,
    overflow: Option<Overflow>,
    /// Quiet batch progress: the next key index a reply may name, and
    /// the replies so far.
    next: usize,
    replies: Vec<(usize, MetaReply)>,
    server_error: Option<String>,
    reply: oneshot::Sender<Result<Reply, ConnError>>,
}

/// One request to send.
pub struct Request<E> {
    /// Appends the command(s), given the first token.
    pub encode: E,
    /// How many tokens the command uses (one per key of a quiet batch).
    pub tokens: u32,
    /// What the reply must look like.
    pub expect: Expect,
    /// Longest value the reply may carry.
    pub max_value: usize,
    /// Where the values read are charged, if anywhere.
    pub budget: Option<Arc<Reservation>>,
}

impl<E> Request<E> {
    /// One meta command for `key` whose reply carries no value (a write,
    /// delete, touch or invalidation).
    pub fn meta_one(key: &Key, encode: E) -> Request<E> {
        Request {
            encode,
            tokens: 1,
            expect: Expect::One(key.clone()),
            max_value: 0,
            budget: None,
        }
    }
}

#[derive(Default)]
struct State {
    /// Encoded commands not yet written.
    wbuf: BytesMut,
    /// Requests in `wbuf`.
    queued: usize,
    /// Someone (a caller, or the writer task) is writing `wbuf`.
    flushing: bool,
    /// Requests written or about to be, in order.
    pending: VecDeque<Pending>,
    next_token: u32,
    /// Set by the reader when it fails everything: nothing may be added.
    closed: bool,
    /// Why a writer closed the connection, for the first waiter.
    write_error: Option<io::Error>,
}

struct Shared {
    /// Callers and the writer task write here (`try_write` takes `&self`);
    /// the read half belongs to the reader task.
    stream: OwnedWriteHalf,
    state: Mutex<State>,
    /// Wakes the writer task when the socket was full.
    write_wanted: Notify,
    closed: CancellationToken,
    mode: Mode,
    /// Text mode: one request at a time.
    turn: Semaphore,
    /// Leave writes on a busy connection to the writer task
    /// (single-threaded runtime).
    defer_writes: bool,
    /// Requests submitted and not yet answered.
    in_flight: AtomicUsize,
    /// Open while this connection is.
    open: Gauge,
    /// Requests that went out in one write with others.
    coalesced: Counter,
}

impl Shared {
    fn state(&self) -> MutexGuard<'_, State> {
        // Nothing panics while holding the lock with the state half
        // updated; a poisoned lock is still consistent.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// A handle to a pipelined memcached connection; cheap to clone, shared by
/// all callers.
#[derive(Clone)]
pub struct Connection {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for Connection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Connection")
            .field("mode", &self.shared.mode)
            .field("closed", &self.is_closed())
            .finish()
    }
}

impl Connection {
    /// Wraps a connected stream speaking `mode`, spawning its reader and
    /// writer tasks; counted in its shard's `metrics`.
    pub fn new(stream: TcpStream, mode: Mode, metrics: &ShardMetrics) -> Connection {
        let _ = stream.set_nodelay(true);
        let (read, stream) = stream.into_split();
        let shared = Arc::new(Shared {
            stream,
            state: Mutex::new(State::default()),
            write_wanted: Notify::new(),
            closed: CancellationToken::new(),
            mode,
            turn: Semaphore::new(1),
            defer_writes: tokio::runtime::Handle::current().runtime_flavor()
                == tokio::runtime::RuntimeFlavor::CurrentThread,
            in_flight: AtomicUsize::new(0),
            open: metrics.connections.clone(),
            coalesced: metrics.coalesced.clone(),
        });
        shared.open.inc();
        tokio::spawn(write_loop(shared.clone()));
        tokio::spawn(read_loop(shared.clone(), read));
        Connection { shared }
    }

    /// The protocol it speaks.
    pub fn mode(&self) -> Mode {
        self.shared.mode
    }

    /// True once the connection has failed; it must then be replaced.
    pub fn is_closed(&self) -> bool {
        self.shared.closed.is_cancelled()
    }

    /// Closes the connection, failing whatever is still in flight on it.
    pub fn close(&self) {
        self.shared.closed.cancel();
    }

    /// Sends one request and waits for its reply. If none arrives within
    /// `timeout`, the connection is closed: a server that stalls must not
    /// hold later requests hostage.
    pub async fn request<E>(&self, req: Request<E>, timeout: Duration) -> Result<Reply, ConnError>
    where
        E: FnOnce(&mut BytesMut, u32),
    {
        let deadline = tokio::time::Instant::now() + timeout;
        let _turn = match self.shared.mode {
            Mode::Meta => None,
            Mode::Text => Some(
                tokio::time::timeout_at(deadline, self.shared.turn.acquire())
                    .await
                    .map_err(|_| ConnError::Timeout(timeout))?
                    .map_err(|_| ConnError::Closed)?,
            ),
        };
        let rx = self.submit(req)?;
        match tokio::time::timeout_at(deadline, rx).await {
            Ok(Ok(result)) => result,
            Ok(Err(_)) => Err(ConnError::Closed),
            Err(_) => {
                self.close();
                Err(ConnError::Timeout(timeout))
            }
        }
    }

    /// Queues a request and writes what is queued unless a write is under
    /// way. The write is a non-blocking `try_write`, so no await point can
    /// cut a command in half.
    fn submit<E>(
        &self,
        req: Request<E>,
    ) -> Result<oneshot::Receiver<Result<Reply, ConnError>>, ConnError>
    where
        E: FnOnce(&mut BytesMut, u32),
    {
        let shared = &*self.shared;
        let (tx, rx) = oneshot::channel();
        let mut st = shared.state();
        if st.closed || shared.closed.is_cancelled() {
            return Err(ConnError::Closed);
        }
        let token = st.next_token;
        st.next_token = token.wrapping_add(req.tokens.max(1));
        (req.encode)(&mut st.wbuf, token);
        st.queued += 1;
        // Registered before it is written, so its reply finds it.
        st.pending.push_back(Pending {
            token,
            expect: req.expect,
            max_value: req.max_value,
            budget: req.budget,
            overflow: None,
            next: 0,
            replies: Vec::new(),
            server_error: None,
            reply: tx,
        });
        let busy = shared.in_flight.fetch_add(1, Ordering::Relaxed) > 0;
        if st.flushing {
            return Ok(rx);
        }
        st.flushing = true;
        if busy && shared.defer_writes {
            // Requests are in flight already: let the writer task, which
            // runs after the tasks queued in this tick, send whatever they
            // append in one write.
            drop(st);
            shared.write_wanted.notify_one();
            return Ok(rx);
        }
        loop {
            let mut out = take_queued(shared, &mut st);
            drop(st);
            let written = write_now(&shared.stream, &mut out);
            st = shared.state();
            match written {
                Err(e) => {
                    st.flushing = false;
                    drop(st);
                    // This caller learns why; the others were collateral.
                    shared.closed.cancel();
                    return Err(ConnError::Io(e));
                }
                Ok(()) if !out.is_empty() => {
                    // The socket is full: the writer task sends the rest,
                    // ahead of anything appended meanwhile.
                    out.unsplit(st.wbuf.split());
                    st.wbuf = out;
                    drop(st);
                    shared.write_wanted.notify_one();
                    return Ok(rx);
                }
                Ok(()) if st.wbuf.is_empty() => {
                    st.flushing = false;
                    return Ok(rx);
                }
                Ok(()) => {} // more was appended while writing: write it too
            }
        }
    }
}

/// Takes what is queued for one write, counting the requests that share it.
fn take_queued(shared: &Shared, st: &mut State) -> BytesMut {
    let n = std::mem::take(&mut st.queued);
    if n > 1 {
        shared.coalesced.inc_by(n as u64);
    }
    st.wbuf.split()
}

/// Writes as much of `out` as the socket takes without blocking.
fn write_now(stream: &OwnedWriteHalf, out: &mut BytesMut) -> io::Result<()> {
    while !out.is_empty() {
        match stream.try_write(out) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => out.advance(n),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Sends what callers could not write because the socket was full.
async fn write_loop(shared: Arc<Shared>) {
    loop {
        tokio::select! {
            _ = shared.closed.cancelled() => return,
            _ = shared.write_wanted.notified() => {}
        }
        loop {
            let mut out = {
                let mut st = shared.state();
                if st.wbuf.is_empty() {
                    st.flushing = false;
                    break;
                }
                take_queued(&shared, &mut st)
            };
            loop {
                // The socket is usually writable: try first, wait if not.
                let written = write_now(&shared.stream, &mut out);
                let ready = match written {
                    Ok(()) if out.is_empty() => break,
                    Ok(()) => tokio::select! {
                        _ = shared.closed.cancelled() => return,
                        r = shared.stream.writable() => r,
                    },
                    Err(e) => Err(e),
                };
                if let Err(e) = ready {
                    shared.state().write_error = Some(e);
                    shared.closed.cancel();
                    return;
                }
            }
        }
    }
}

async fn read_loop(shared: Arc<Shared>, mut read: OwnedReadHalf) {
    let mut buf = BytesMut::with_capacity(READ_CHUNK);
    let mut waiting: VecDeque<Pending> = VecDeque::new();
    let failure = loop {
        if let Err(e) = deliver(&shared, &mut buf, &mut waiting) {
            break e;
        }
        if buf.capacity() - buf.len() < READ_CHUNK / 4 {
            buf.reserve(READ_CHUNK);
        }
        // `read_buf` (not `readable` + `try_read`): a short read tells
        // tokio the socket is drained, saving the EAGAIN read per wake-up.
        let read = tokio::select! {
            _ = shared.closed.cancelled() => break ConnError::Closed,
            r = read.read_buf(&mut buf) => r,
        };
        match read {
            Ok(0) => break ConnError::Io(io::ErrorKind::UnexpectedEof.into()),
            Ok(_) => {}
            Err(e) => break ConnError::Io(e),
        }
    };
    shared.closed.cancel();
    shared.open.dec();
    let write_error = {
        let mut st = shared.state();
        st.closed = true;
        waiting.extend(st.pending.drain(..));
        st.write_error.take()
    };
    // The first waiter gets the real cause; the rest were collateral.
    let mut first = Some(write_error.map_or(failure, ConnError::Io));
    for w in waiting {
        let err = first.take().unwrap_or(ConnError::Closed);
        let _ = w.reply.send(Err(err));
    }
}

/// Hands every complete reply in `buf` to its request.
fn deliver(
    shared: &Shared,
    buf: &mut BytesMut,
    waiting: &mut VecDeque<Pending>,
) -> Result<(), ConnError> {
    while !buf.is_empty() {
        if waiting.is_empty() {
            waiting.extend(shared.state().pending.drain(..));
        }
        let Some(front) = waiting.front_mut() else {
            // Nothing was asked: the peer is not in step with us.
            return Err(ProtocolError::Mismatch(format!(
                "{} arrived when no reply was awaited",
                protocol::describe(buf)
            ))
            .into());
        };
        let reply = match &mut front.expect {
            Expect::Text(decoder) => decoder.decode(buf)?.map(Reply::Text),
            _ => decode_meta(front, buf)?,
        };
        let Some(reply) = reply else {
            return Ok(()); // incomplete: wait for more bytes
        };
        let done = waiting.pop_front().expect("front exists");
        shared.in_flight.fetch_sub(1, Ordering::Relaxed);
        if shared.mode == Mode::Text && !buf.is_empty() {
            // One request at a time: bytes after its reply answer nothing
            // we asked, and may mean this reply was not what it seemed.
            let what = format!("{} followed a complete reply", protocol::describe(buf));
            let _ = done
                .reply
                .send(Err(ProtocolError::Mismatch(what.clone()).into()));
            return Err(ProtocolError::Mismatch(what).into());
        }
        let outcome = match (done.overflow, reply) {
            (Some(overflow), _) => Err(ConnError::Budget(overflow)),
            (None, Reply::Text(r)) => charge_text(&done, r).map(Reply::Text),
            (None, r) => Ok(r),
        };
        // The caller may have given up; the reply is still consumed, so
        // the stream stays in step.
        let _ = done.reply.send(outcome);
    }
    Ok(())
}

/// Charges the values of a text `get` to the request's budget.
fn charge_text(p: &Pending, reply: protocol::Reply) -> Result<protocol::Reply, ConnError> {
    if let (Some(budget), protocol::Reply::Values(values)) = (&p.budget, &reply) {
        for (_, v) in values {
            budget.charge(v.len()).map_err(ConnError::Budget)?;
        }
    }
    Ok(reply)
}

fn mismatch(what: String) -> ProtocolError {
    ProtocolError::Mismatch(what)
}

/// Decodes meta reply lines for `p`; `Some` once its reply is complete.
fn decode_meta(p: &mut Pending, buf: &mut BytesMut) -> Result<Option<Reply>, ProtocolError> {
    loop {
        let Some(line_len) = protocol::find_line(buf, Terminator::CrLf)? else {
            return Ok(None);
        };
        let (line, key) =
            meta::parse_line(&buf[..line_len]).map_err(|e| ProtocolError::Unexpected(e.0))?;
        let (code, len, flags) = match line {
            Line::Rejected(m) => return Err(ProtocolError::Rejected(m)),
            // Replies come in request order and this one awaits an `ma`:
            // memcached parsed that command whole and refused only its
            // value, so the stream is in step and the connection stays.
            Line::NonNumeric if matches!(p.expect, Expect::Counter(_)) => {
                buf.advance(line_len + 2);
                return Ok(Some(Reply::NonNumeric));
            }
            // Where no counter was awaited it answers nothing we sent.
            Line::NonNumeric => {
                return Err(ProtocolError::Rejected(
                    String::from_utf8_lossy(meta::NON_NUMERIC).into_owned(),
                ));
            }
            Line::ServerError(m) => {
                buf.advance(line_len + 2);
                match p.expect {
                    Expect::Quiet(_) => {
                        p.server_error.get_or_insert(m);
                        continue;
                    }
                    _ => return Ok(Some(Reply::ServerError(m))),
                }
            }
            Line::Status { code, len, flags } => (code, len, flags),
        };
        if len > p.max_value {
            return Err(ProtocolError::ValueTooLarge {
                len,
                max: p.max_value,
            });
        }
        // Check the reply answers this request before waiting for its data.
        let index = match &p.expect {
            Expect::Quiet(_) if code == Code::NoOp => {
                buf.advance(line_len + 2);
                return Ok(Some(Reply::Quiet {
                    replies: std::mem::take(&mut p.replies),
                    server_error: p.server_error.take(),
                }));
            }
            _ if code == Code::NoOp => {
                return Err(mismatch("MN where no quiet batch was open".into()));
            }
            Expect::One(want) | Expect::Counter(want) => {
                if flags.token != Some(p.token) {
                    return Err(mismatch(format!(
                        "token {:?} where {} was awaited",
                        flags.token, p.token
                    )));
                }
                check_key(key, want)?;
                None
            }
            Expect::Quiet(keys) => {
                let Some(token) = flags.token else {
                    return Err(mismatch("a reply without a token in a quiet batch".into()));
                };
                let i = token.wrapping_sub(p.token) as usize;
                if i >= keys.len() || i < p.next {
                    return Err(mismatch(format!(
                        "token {token} is not one still awaited in this batch"
                    )));
                }
                check_key(key, &keys[i])?;
                Some(i)
            }
            Expect::Text(_) => unreachable!("text replies are decoded by their decoder"),
        };
        let head = line_len + 2;
        let block = if code == Code::Value {
            head + len + 2
        } else {
            head
        };
        if buf.len() < block {
            // Wait for the whole block; reserve so reads land in place.
            buf.reserve(block - buf.len());
            return Ok(None);
        }
        let value = if code == Code::Value {
            if &buf[block - 2..block] != b"\r\n" {
                return Err(ProtocolError::BadDataTerminator);
            }
            let mut chunk = buf.split_to(block).freeze();
            chunk.advance(head);
            chunk.truncate(len);
            Some(chunk)
        } else {
            buf.advance(block);
            None
        };
        let value = match (value, &p.budget) {
            (Some(v), Some(budget)) if p.overflow.is_none() => match budget.charge(v.len()) {
                Ok(()) => Some(v),
                Err(o) => {
                    // Read and dropped, not kept: the call will fail.
                    p.overflow = Some(o);
                    None
                }
            },
            (v, _) if p.overflow.is_none() => v,
            _ => None,
        };
        let reply = MetaReply { code, flags, value };
        match index {
            None => return Ok(Some(Reply::Meta(reply))),
            Some(i) => {
                p.next = i + 1;
                p.replies.push((i, reply));
            }
        }
    }
}

fn check_key(got: Option<&[u8]>, want: &Key) -> Result<(), ProtocolError> {
    if got == Some(want.as_str().as_bytes()) {
        Ok(())
    } else {
        Err(mismatch(format!(
            "key {:?} where {:?} was awaited",
            got.map(|k| crate::error::shorten(&String::from_utf8_lossy(k))),
            crate::error::shorten(want.as_str())
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;

    const T: Duration = Duration::from_secs(5);

    /// A connection to a scripted peer: the test reads what memgate sent
    /// and writes whatever it likes back.
    async fn pair(mode: Mode) -> (Connection, TcpStream) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let client = TcpStream::connect(addr).await.unwrap();
        let (server, _) = listener.accept().await.unwrap();
        (
            Connection::new(client, mode, &ShardMetrics::default()),
            server,
        )
    }

    fn key(k: &str) -> Key {
        Key::parse(k).unwrap()
    }

    fn get(k: &str) -> Request<impl FnOnce(&mut BytesMut, u32)> {
        let key = key(k);
        let encoded = key.clone();
        Request {
            encode: move |buf: &mut BytesMut, token| {
                meta::encode_get(buf, encoded.as_str(), token, false)
            },
            tokens: 1,
            expect: Expect::One(key),
            max_value: 1 << 20,
            budget: None,
        }
    }

    /// A quiet batch awaiting `a` and `b` (tokens 0 and 1); the scripted
    /// peer decides what comes back.
    fn quiet_ab(budget: Option<Arc<Reservation>>) -> Request<impl FnOnce(&mut BytesMut, u32)> {
        Request {
            encode: |buf: &mut BytesMut, _| meta::encode_noop(buf),
            tokens: 2,
            expect: Expect::Quiet(vec![key("a"), key("b")].into()),
            max_value: 1 << 20,
            budget,
        }
    }

    async fn read_some(peer: &mut TcpStream) -> String {
        let mut b = vec![0; 4096];
        let n = peer.read(&mut b).await.unwrap();
        String::from_utf8_lossy(&b[..n]).into_owned()
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn replies_are_matched_by_token_and_key() {
        matched_by_token_and_key().await;
    }

    /// The same on one thread, where the writer task sends every write.
    #[tokio::test(flavor = "current_thread")]
    async fn replies_are_matched_by_token_and_key_on_one_thread() {
        matched_by_token_and_key().await;
    }

    async fn matched_by_token_and_key() {
        let (conn, mut peer) = pair(Mode::Meta).await;
        let (a, b) = (conn.clone(), conn.clone());
        let first = tokio::spawn(async move { a.request(get("a"), T).await });
        assert_eq!(read_some(&mut peer).await, "mg a v k c O0\r\n");
        let second = tokio::spawn(async move { b.request(get("b"), T).await });
        assert_eq!(read_some(&mut peer).await, "mg b v k c O1\r\n");
        peer.write_all(b"VA 1 ka O0\r\nx\r\nEN kb O1\r\n")
            .await
            .unwrap();
        let Reply::Meta(r) = first.await.unwrap().unwrap() else {
            panic!()
        };
        assert_eq!(r.value.as_deref(), Some(&b"x"[..]));
        let Reply::Meta(r) = second.await.unwrap().unwrap() else {
            panic!()
        };
        assert_eq!(r.code, Code::Miss);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_swapped_token_or_key_closes_the_connection() {
        for reply in [
            &b"VA 1 ka O7\r\nx\r\n"[..],
            b"VA 1 kz O0\r\nx\r\n",
            b"VA 1 O0\r\nx\r\n",
        ] {
            let (conn, mut peer) = pair(Mode::Meta).await;
            let c = conn.clone();
            let call = tokio::spawn(async move { c.request(get("a"), T).await });
            read_some(&mut peer).await;
            peer.write_all(reply).await.unwrap();
            let err = call.await.unwrap().unwrap_err();
            assert!(
                matches!(err, ConnError::Protocol(ProtocolError::Mismatch(_))),
                "{reply:?}: {err:?}"
            );
            assert!(conn.is_closed());
            assert!(matches!(
                conn.request(get("a"), T).await,
                Err(ConnError::Closed)
            ));
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn bytes_nobody_asked_for_close_the_connection() {
        // A complete reply followed by a second one for the same key: the
        // second must never become the next request's value.
        let (conn, mut peer) = pair(Mode::Meta).await;
        let c = conn.clone();
        let call = tokio::spawn(async move { c.request(get("a"), T).await });
        read_some(&mut peer).await;
        peer.write_all(b"VA 1 ka O0\r\nx\r\nVA 5 ka O0\r\nextra\r\n")
            .await
            .unwrap();
        assert!(call.await.unwrap().is_ok(), "the real reply is delivered");
        let next = conn.request(get("a"), T).await;
        assert!(next.is_err(), "the extra reply was read as {next:?}");
        assert!(conn.is_closed());
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn text_mode_refuses_leftover_bytes() {
        let (conn, mut peer) = pair(Mode::Text).await;
        let c = conn.clone();
        let call = tokio::spawn(async move {
            let req = Request {
                encode: |buf: &mut BytesMut, _| protocol::encode_get(buf, &["a"]),
                tokens: 1,
                expect: Expect::Text(Decoder::get(vec!["a".into()], 1 << 20)),
                max_value: 1 << 20,
                budget: None,
            };
            c.request(req, T).await
        });
        assert_eq!(read_some(&mut peer).await, "get a\r\n");
        peer.write_all(b"VALUE a 0 1\r\nx\r\nEND\r\nVALUE a 0 5\r\nextra\r\nEND\r\n")
            .await
            .unwrap();
        let err = call.await.unwrap().unwrap_err();
        assert!(
            matches!(err, ConnError::Protocol(ProtocolError::Mismatch(_))),
            "{err:?}"
        );
        assert!(conn.is_closed());
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn quiet_batches_take_hits_in_order_and_end_at_mn() {
        let (conn, mut peer) = pair(Mode::Meta).await;
        let keys: Vec<Key> = ["a", "b", "c"].iter().map(|k| key(k)).collect();
        let encoded = keys.clone();
        let c = conn.clone();
        let call = tokio::spawn(async move {
            let req = Request {
                encode: move |buf: &mut BytesMut, token: u32| {
                    for (i, k) in encoded.iter().enumerate() {
                        meta::encode_get(buf, k.as_str(), token + i as u32, true);
                    }
                    meta::encode_noop(buf);
                },
                tokens: 3,
                expect: Expect::Quiet(keys.into()),
                max_value: 1 << 20,
                budget: None,
            };
            c.request(req, T).await
        });
        let sent = read_some(&mut peer).await;
        assert_eq!(
            sent,
            "mg a v k c O0 q\r\nmg b v k c O1 q\r\nmg c v k c O2 q\r\nmn\r\n"
        );
        peer.write_all(b"VA 1 ka O0\r\n1\r\nVA 1 kc O2\r\n3\r\nMN\r\n")
            .await
            .unwrap();
        let Reply::Quiet {
            replies,
            server_error,
        } = call.await.unwrap().unwrap()
        else {
            panic!()
        };
        assert_eq!(server_error, None);
        let hits: Vec<usize> = replies.iter().map(|(i, _)| *i).collect();
        assert_eq!(hits, vec![0, 2]);
        // Out of order within a batch is refused.
        let (conn, mut peer) = pair(Mode::Meta).await;
        let c = conn.clone();
        let call = tokio::spawn(async move { c.request(quiet_ab(None), T).await });
        read_some(&mut peer).await;
        peer.write_all(b"HD kb O1\r\nHD ka O0\r\nMN\r\n")
            .await
            .unwrap();
        assert!(call.await.unwrap().is_err());
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_timeout_closes_the_connection_and_fails_the_rest() {
        let (conn, mut peer) = pair(Mode::Meta).await;
        let c = conn.clone();
        let slow =
            tokio::spawn(async move { c.request(get("a"), Duration::from_millis(100)).await });
        let c = conn.clone();
        let other = tokio::spawn(async move { c.request(get("b"), T).await });
        let _ = read_some(&mut peer).await;
        assert!(matches!(slow.await.unwrap(), Err(ConnError::Timeout(_))));
        assert!(matches!(other.await.unwrap(), Err(ConnError::Closed)));
        assert!(conn.is_closed());
        // A reply that arrives late reaches nobody.
        let _ = peer.write_all(b"VA 1 ka O0\r\nx\r\n").await;
        assert!(conn.request(get("a"), T).await.is_err());
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_cancelled_caller_leaves_the_stream_in_step() {
        let (conn, mut peer) = pair(Mode::Meta).await;
        let c = conn.clone();
        let cancelled = tokio::spawn(async move { c.request(get("a"), T).await });
        read_some(&mut peer).await;
        cancelled.abort();
        let _ = cancelled.await;
        let c = conn.clone();
        let next = tokio::spawn(async move { c.request(get("b"), T).await });
        read_some(&mut peer).await;
        peer.write_all(b"VA 3 ka O0\r\nold\r\nVA 3 kb O1\r\nnew\r\n")
            .await
            .unwrap();
        let Reply::Meta(r) = next.await.unwrap().unwrap() else {
            panic!()
        };
        assert_eq!(r.value.as_deref(), Some(&b"new"[..]));
        assert!(!conn.is_closed());
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn values_over_the_budget_are_dropped_and_the_call_fails() {
        let server = crate::store::budget::ByteBudget::new(1 << 20, Default::default());
        let budget = Arc::new(server.reserve(4));
        let (conn, mut peer) = pair(Mode::Meta).await;
        let c = conn.clone();
        let b = budget.clone();
        let call = tokio::spawn(async move { c.request(quiet_ab(Some(b)), T).await });
        read_some(&mut peer).await;
        peer.write_all(b"VA 3 ka O0\r\nabc\r\nVA 3 kb O1\r\ndef\r\nMN\r\n")
            .await
            .unwrap();
        let err = call.await.unwrap().unwrap_err();
        assert!(
            matches!(err, ConnError::Budget(Overflow::Call { .. })),
            "{err:?}"
        );
        assert_eq!(budget.held(), 3, "the second value was not kept");
        assert!(!conn.is_closed(), "the connection stays in step");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_full_socket_hands_writes_to_the_writer_task() {
        // 8 MiB of commands cannot be written at once; nothing is lost.
        let (conn, mut peer) = pair(Mode::Meta).await;
        let big = vec![b'x'; 8 << 20];
        let c = conn.clone();
        let call = tokio::spawn(async move {
            let k = key("big");
            let req = Request {
                encode: move |buf: &mut BytesMut, t| {
                    meta::encode_set(
                        buf,
                        "big",
                        0,
                        &big,
                        crate::store::Condition::Always,
                        t,
                        false,
                    )
                },
                tokens: 1,
                expect: Expect::One(k),
                max_value: 1 << 20,
                budget: None,
            };
            c.request(req, T).await
        });
        let mut got = 0usize;
        let mut b = vec![0; 1 << 16];
        let want = "ms big 8388608 T0 c k O0\r\n".len() + (8 << 20) + 2;
        while got < want {
            got += peer.read(&mut b).await.unwrap();
        }
        assert_eq!(got, want);
        peer.write_all(b"HD kbig O0\r\n").await.unwrap();
        assert!(call.await.unwrap().is_ok());
    }

    fn incr(k: &str) -> Request<impl FnOnce(&mut BytesMut, u32)> {
        let key = key(k);
        let encoded = key.clone();
        Request {
            encode: move |buf: &mut BytesMut, token| {
                meta::encode_arithmetic(buf, encoded.as_str(), 1, false, None, token)
            },
            tokens: 1,
            expect: Expect::Counter(key),
            max_value: 64,
            budget: None,
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_non_numeric_counter_keeps_the_connection_in_step() {
        let (conn, mut peer) = pair(Mode::Meta).await;
        let c = conn.clone();
        let counter = tokio::spawn(async move { c.request(incr("text"), T).await });
        assert_eq!(read_some(&mut peer).await, "ma text D1 MI v k O0\r\n");
        let c = conn.clone();
        let next = tokio::spawn(async move { c.request(incr("n"), T).await });
        assert_eq!(read_some(&mut peer).await, "ma n D1 MI v k O1\r\n");
        peer.write_all(
            b"CLIENT_ERROR cannot increment or decrement non-numeric value\r\nVA 1 kn O1\r\n8\r\n",
        )
        .await
        .unwrap();
        assert_eq!(counter.await.unwrap().unwrap(), Reply::NonNumeric);
        let Reply::Meta(r) = next.await.unwrap().unwrap() else {
            panic!()
        };
        assert_eq!(r.value.as_deref(), Some(&b"8"[..]));
        assert!(!conn.is_closed());
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_non_numeric_error_for_a_read_closes_the_connection() {
        let (conn, mut peer) = pair(Mode::Meta).await;
        let c = conn.clone();
        let call = tokio::spawn(async move { c.request(get("a"), T).await });
        read_some(&mut peer).await;
        peer.write_all(b"CLIENT_ERROR cannot increment or decrement non-numeric value\r\n")
            .await
            .unwrap();
        let err = call.await.unwrap().unwrap_err();
        assert!(
            matches!(err, ConnError::Protocol(ProtocolError::Rejected(_))),
            "{err:?}"
        );
        assert!(conn.is_closed());
    }
}
