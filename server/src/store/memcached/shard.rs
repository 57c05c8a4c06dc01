//! One memcached server: its connections and what it can store.
//!
//! A shard keeps pipelined [`Connection`]s in three lanes: single-key calls
//! spread round-robin over `conns_per_shard` connections, batches over as
//! many of their own (so a batch of large values never holds up the small
//! reads queued behind it), and the health probe has one to itself (so a
//! shard that answers is never reported down because its connections are
//! busy). Connections open lazily; a connect is single-flight (every caller
//! waiting for a slot shares one attempt and its outcome) and bounded by
//! `connect_timeout`, so no call waits longer than `connect_timeout` +
//! `timeout` whatever the server does.
//!
//! Each connect first asks `mn`: memcached >= 1.6 answers `MN` and gets the
//! meta protocol; a server that answers `ERROR` (or hangs up, as twemproxy
//! does) gets the text protocol, logged once.

use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use futures::FutureExt;
use futures::future::{BoxFuture, Shared};
use hickory_resolver::TokioResolver;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::connection::{ConnError, Connection, Expect, Mode, Reply, Request};
use super::protocol::{self, Decoder};
use crate::error::Error;
use crate::metrics::{ShardCounts, ShardMetrics};

/// memcached's default `-I` (item_size_max), assumed until a shard tells us.
pub const DEFAULT_ITEM_SIZE_MAX: usize = 1024 * 1024;

/// Bytes of an item that are not value: memcached's item header with CAS
/// (48 + 8), the key's terminating NUL and the value's CRLF. Measured on
/// memcached 1.6 as 59 plus the key; rounded up for safety.
pub const ITEM_OVERHEAD: usize = 64;

/// How connections to the shards are made and used.
#[derive(Clone, Debug)]
pub struct PoolSettings {
    /// Longest wait for any one reply.
    pub timeout: Duration,
    /// Longest wait for a TCP connection (and the protocol handshake).
    pub connect_timeout: Duration,
    /// Pipelined connections kept open per shard for single-key calls (and
    /// as many again for batches).
    pub conns_per_shard: usize,
    /// TCP keepalive idle time on backend connections (`None`: off).
    pub keepalive: Option<Duration>,
    /// Consecutive failures after which a shard is marked down.
    pub failure_limit: u32,
    /// While down, calls fail fast; after this long one call is let through
    /// as a trial (the health probe also brings a shard back).
    pub retry_timeout: Duration,
    /// The DNS server that resolves server host names (`--dns-server`),
    /// instead of the system's resolver: the one that also answers the
    /// pool's SRV records, so a member whose address changes there is
    /// reached at its new address on the next connect.
    pub dns_server: Option<std::net::SocketAddr>,
}

/// Which connections a call uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Lane {
    /// Single-key calls: short replies.
    Single,
    /// Batches: replies as long as the batch.
    Bulk,
}

/// Failure tracking for one shard (cf. twemproxy's `auto_eject_hosts`,
/// mcrouter's TKO): after `failure_limit` consecutive failures the shard is
/// down, and its keys fail fast instead of each waiting out a timeout.
#[derive(Debug, Default)]
struct Ejection {
    consecutive_failures: u32,
    /// When the shard was marked down, if it is.
    down_since: Option<Instant>,
    /// When the last trial call was let through while down.
    last_trial: Option<Instant>,
}

type Connect = Shared<BoxFuture<'static, Result<Connection, Error>>>;

/// One connection of a lane: open, being opened, or neither.
#[derive(Default)]
struct Slot {
    state: Mutex<SlotState>,
    /// A connection was opened here before: the next one is a reconnect.
    connected_before: AtomicBool,
}

#[derive(Default)]
enum SlotState {
    #[default]
    Empty,
    /// An attempt every caller for this slot shares; `u64` tells attempts
    /// apart, so a late finisher cannot overwrite a newer one.
    Connecting(u64, Connect),
    Ready(Connection),
}

impl std::fmt::Debug for Slot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Slot")
    }
}

/// What a shard has learned about its server's protocol.
const MODE_UNKNOWN: u8 = 0;
const MODE_META: u8 = 1;
const MODE_TEXT: u8 = 2;

/// One memcached server of the pool.
#[derive(Debug)]
pub struct Shard {
    addr: String,
    settings: PoolSettings,
    /// Resolves the host name when `--dns-server` is given.
    resolver: Option<Arc<TokioResolver>>,
    single: Vec<Slot>,
    bulk: Vec<Slot>,
    probe: Slot,
    next: AtomicUsize,
    attempts: AtomicU64,
    /// `MODE_*`: what the last handshake found.
    mode: Arc<AtomicU8>,
    /// `item_size_max` learned from `stats settings`; 0 until known.
    item_size_max: AtomicUsize,
    /// Mirrors `ejection.down_since.is_some()`, so the common case (up)
    /// costs one atomic load instead of a lock.
    down: AtomicBool,
    ejection: Mutex<Ejection>,
    metrics: ShardMetrics,
    /// Removed from the pool: no new connections.
    retired: AtomicBool,
    /// The last health probe was answered.
    answered: AtomicBool,
    /// Held for a key dump, so this server sends the shard at most one
    /// dump at a time (memcached would answer the others BUSY).
    pub(super) dump_turn: tokio::sync::Mutex<()>,
}

impl Shard {
    /// A shard at `addr` (nothing is connected yet), recording into
    /// `metrics`.
    pub fn new(addr: String, settings: PoolSettings, metrics: ShardMetrics) -> Shard {
        let lane = |n: usize| (0..n.max(1)).map(|_| Slot::default()).collect();
        let resolver = settings.dns_server.and_then(|server| {
            crate::membership::resolver_asking(server, settings.connect_timeout)
                .inspect_err(
                    |e| tracing::error!(shard = %addr, error = %e, "using the system's resolver"),
                )
                .ok()
                .map(Arc::new)
        });
        Shard {
            resolver,
            addr,
            single: lane(settings.conns_per_shard),
            bulk: lane(settings.conns_per_shard),
            settings,
            probe: Slot::default(),
            next: AtomicUsize::new(0),
            attempts: AtomicU64::new(0),
            mode: Arc::new(AtomicU8::new(MODE_UNKNOWN)),
            item_size_max: AtomicUsize::new(0),
            down: AtomicBool::new(false),
            ejection: Mutex::new(Ejection::default()),
            metrics,
            retired: AtomicBool::new(false),
            answered: AtomicBool::new(false),
            dump_turn: tokio::sync::Mutex::new(()),
        }
    }

    /// Takes the shard out of service after it left the pool: its
    /// connections close (failing whatever is still in flight on them) and
    /// no new ones are opened.
    pub fn retire(&self) {
        self.retired.store(true, Ordering::Relaxed);
        for slot in self.single.iter().chain(&self.bulk).chain([&self.probe]) {
            let mut st = slot.state.lock().unwrap_or_else(|e| e.into_inner());
            if let SlotState::Ready(conn) = std::mem::take(&mut *st) {
                conn.close();
            }
        }
    }

    /// True while the shard is marked down.
    pub fn is_down(&self) -> bool {
        self.down.load(Ordering::Relaxed)
    }

    fn ejection(&self) -> std::sync::MutexGuard<'_, Ejection> {
        // The state is a few counters: a panic elsewhere cannot leave it
        // inconsistent, so a poisoned lock is still usable.
        self.ejection.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Fails fast while the shard is down, except for one trial call per
    /// `retry_timeout`.
    fn admit(&self) -> Result<(), Error> {
        if !self.is_down() {
            return Ok(());
        }
        let mut e = self.ejection();
        let Some(since) = e.down_since else {
            return Ok(());
        };
        let now = Instant::now();
        let last = e.last_trial.unwrap_or(since);
        if now.duration_since(last) >= self.settings.retry_timeout {
            e.last_trial = Some(now);
            return Ok(());
        }
        Err(Error::ShardDown {
            addr: self.addr.clone(),
            failures: e.consecutive_failures,
            down_for: now.duration_since(since),
            retry_in: self
                .settings
                .retry_timeout
                .saturating_sub(now.duration_since(last)),
        })
    }

    /// Records the outcome of a call that reached (or tried to reach) the
    /// server, marking the shard down or up on a transition; `None` leaves
    /// the count as it is.
    fn record(&self, outcome: Option<bool>) {
        let Some(ok) = outcome else { return };
        if ok && !self.is_down() && self.ejection().consecutive_failures == 0 {
            return;
        }
        let mut e = self.ejection();
        if ok {
            e.consecutive_failures = 0;
            if let Some(since) = e.down_since.take() {
                e.last_trial = None;
                self.down.store(false, Ordering::Relaxed);
                self.metrics.up.set(1);
                tracing::info!(shard = %self.addr, down_for = ?since.elapsed(), "shard is back up");
            }
            return;
        }
        e.consecutive_failures = e.consecutive_failures.saturating_add(1);
        if e.down_since.is_none() && e.consecutive_failures >= self.settings.failure_limit {
            e.down_since = Some(Instant::now());
            self.down.store(true, Ordering::Relaxed);
            self.metrics.up.set(0);
            self.metrics.ejections.inc();
            tracing::warn!(
                shard = %self.addr,
                failures = e.consecutive_failures,
                retry_in = ?self.settings.retry_timeout,
                "shard marked down; its keys fail fast until it answers again"
            );
        }
    }

    /// The address as configured.
    pub fn addr(&self) -> &str {
        &self.addr
    }

    /// The shard's item size limit, once learned.
    pub fn item_size_max(&self) -> Option<usize> {
        match self.item_size_max.load(Ordering::Relaxed) {
            0 => None,
            n => Some(n),
        }
    }

    /// Largest value this shard can store under a key of `key_len` bytes.
    pub fn max_value_len(&self, key_len: usize) -> usize {
        let item_max = self.item_size_max().unwrap_or(DEFAULT_ITEM_SIZE_MAX);
        item_max.saturating_sub(ITEM_OVERHEAD + key_len)
    }

    /// Largest value a reply from this shard may announce.
    pub fn max_reply_value(&self) -> usize {
        self.item_size_max().unwrap_or(DEFAULT_ITEM_SIZE_MAX)
    }

    /// A live connection of `lane`, for a call about to be made; fails fast
    /// while the shard is marked down.
    pub async fn connection(&self, lane: Lane) -> Result<Connection, Error> {
        self.admit()?;
        if self.retired.load(Ordering::Relaxed) {
            return Err(Error::ShardUnavailable {
                addr: self.addr.clone(),
                reason: "removed from the pool".to_owned(),
            });
        }
        let slots = match lane {
            Lane::Single => &self.single,
            Lane::Bulk => &self.bulk,
        };
        let slot = &slots[self.next.fetch_add(1, Ordering::Relaxed) % slots.len()];
        self.slot_connection(slot).await
    }

    /// Sends `req` on `conn` (from [`Shard::connection`]) and waits for the
    /// reply, counting the outcome toward ejection.
    pub async fn call<E>(&self, conn: &Connection, req: Request<E>) -> Result<Reply, Error>
    where
        E: FnOnce(&mut BytesMut, u32),
    {
        let start = self.metrics.latency.start();
        let outcome = conn.request(req, self.settings.timeout).await;
        self.metrics.latency.observe_since(start);
        self.settle(outcome)
    }

    /// Like [`Shard::call`], for reads on a meta connection: a read that
    /// failed only because it shared its connection with a request that
    /// failed (collateral, e.g. queued behind one that timed out) is sent
    /// once more on a fresh connection of `lane`, within what is left of
    /// its own `timeout` — so one slow request costs the others on its
    /// connection no more than the protocol forces, and no call waits
    /// longer than `connect_timeout` + `timeout`. Reads only: repeating
    /// them is harmless.
    pub async fn read<E, F>(&self, lane: Lane, conn: &Connection, make: F) -> Result<Reply, Error>
    where
        E: FnOnce(&mut BytesMut, u32),
        F: Fn() -> Request<E>,
    {
        let timeout = self.settings.timeout;
        let deadline = tokio::time::Instant::now() + timeout;
        let start = self.metrics.latency.start();
        let outcome = conn.request(make(), timeout).await;
        self.metrics.latency.observe_since(start);
        match outcome {
            Err(ConnError::Closed) => {
                let left = deadline.saturating_duration_since(tokio::time::Instant::now());
                let fresh = tokio::time::timeout(left, self.connection(lane))
                    .await
                    .map_err(|_| Error::ShardTimeout {
                        addr: self.addr.clone(),
                        after: timeout,
                    })??;
                let left = deadline.saturating_duration_since(tokio::time::Instant::now());
                if left.is_zero() {
                    return self.settle(Err(ConnError::Timeout(timeout)));
                }
                let start = self.metrics.latency.start();
                let outcome = fresh.request(make(), left).await;
                self.metrics.latency.observe_since(start);
                self.settle(outcome)
            }
            other => self.settle(other),
        }
    }

    /// Counts a call's outcome toward ejection and maps its error.
    fn settle(&self, outcome: Result<Reply, ConnError>) -> Result<Reply, Error> {
        match outcome {
            Ok(reply) => {
                if matches!(
                    reply,
                    Reply::ServerError(_)
                        | Reply::Quiet {
                            server_error: Some(_),
                            ..
                        }
                        | Reply::Text(protocol::Reply::ServerError(_))
                ) {
                    self.metrics.server_errors.inc();
                }
                self.record(Some(true));
                Ok(reply)
            }
            Err(e) => {
                tracing::debug!(shard = %self.addr, error = %e, "memcached call failed");
                match &e {
                    ConnError::Timeout(_) => self.metrics.timeouts.inc(),
                    ConnError::Protocol(_) => self.metrics.protocol_errors.inc(),
                    ConnError::Io(_) => self.metrics.io_errors.inc(),
                    // Collateral of a failure counted already, or
                    // memgate's own limit.
                    ConnError::Closed | ConnError::Budget(_) => {}
                }
                // Requests that only shared a connection with the one that
                // failed are collateral, and a byte budget is memgate's own
                // limit: neither counts against the shard.
                let counts = !matches!(e, ConnError::Closed | ConnError::Budget(_));
                self.record(counts.then_some(false));
                Err(self.conn_error(e))
            }
        }
    }

    /// The connection of `slot`, opening it (once, for all who wait) if it
    /// is missing or broken.
    async fn slot_connection(&self, slot: &Slot) -> Result<Connection, Error> {
        let (attempt, connect) = {
            let mut st = slot.state.lock().unwrap_or_else(|e| e.into_inner());
            match &*st {
                SlotState::Ready(conn) if !conn.is_closed() => return Ok(conn.clone()),
                SlotState::Connecting(attempt, connect) => (*attempt, connect.clone()),
                _ => {
                    let attempt = self.attempts.fetch_add(1, Ordering::Relaxed);
                    let connect = self.open().boxed().shared();
                    *st = SlotState::Connecting(attempt, connect.clone());
                    (attempt, connect)
                }
            }
        };
        let result = connect.await;
        if self.retired.load(Ordering::Relaxed) {
            // Retired while connecting: the connection must not outlive it.
            if let Ok(conn) = &result {
                conn.close();
            }
            return Err(Error::ShardUnavailable {
                addr: self.addr.clone(),
                reason: "removed from the pool".to_owned(),
            });
        }
        let mut st = slot.state.lock().unwrap_or_else(|e| e.into_inner());
        if matches!(&*st, SlotState::Connecting(a, _) if *a == attempt) {
            // The first waiter back settles the attempt; a failed connect
            // counts once toward ejection, not once per waiter.
            *st = match &result {
                Ok(conn) => SlotState::Ready(conn.clone()),
                Err(_) => SlotState::Empty,
            };
            drop(st);
            match &result {
                Ok(_) if slot.connected_before.swap(true, Ordering::Relaxed) => {
                    self.metrics.reconnects.inc()
                }
                Ok(_) => {}
                Err(_) => {
                    self.metrics.refused.inc();
                    self.record(Some(false));
                }
            }
        }
        result
    }

    /// Opens a connection and finds out which protocol it speaks.
    fn open(
        &self,
    ) -> impl std::future::Future<Output = Result<Connection, Error>> + Send + 'static {
        let addr = self.addr.clone();
        let timeout = self.settings.connect_timeout;
        let keepalive = self.settings.keepalive;
        let resolver = self.resolver.clone();
        let known = self.mode.clone();
        let metrics = self.metrics.clone();
        async move {
            let unavailable = |reason: String| Error::ShardUnavailable {
                addr: addr.clone(),
                reason,
            };
            let opened = tokio::time::timeout(timeout, async {
                let mut stream = connect(&addr, keepalive, resolver.as_deref()).await?;
                if known.load(Ordering::Relaxed) == MODE_TEXT {
                    return Ok((stream, Mode::Text));
                }
                match handshake(&mut stream).await? {
                    Some(mode) => Ok((stream, mode)),
                    // It hung up on `mn` (twemproxy does): the text protocol.
                    None => Ok((
                        connect(&addr, keepalive, resolver.as_deref()).await?,
                        Mode::Text,
                    )),
                }
            })
            .await
            .map_err(|_| {
                unavailable(format!(
                    "no connection within {timeout:?} (--connect-timeout)"
                ))
            })?
            .map_err(|e: HandshakeError| unavailable(e.to_string()))?;
            let (stream, mode) = opened;
            let learned = if mode == Mode::Meta {
                MODE_META
            } else {
                MODE_TEXT
            };
            if known.swap(learned, Ordering::Relaxed) != learned && mode == Mode::Text {
                tracing::warn!(
                    shard = %addr,
                    "server does not speak memcached's meta protocol (memcached >= 1.6); \
                     using the text protocol, one request at a time per connection"
                );
            }
            Ok(Connection::new(stream, mode, &metrics))
        }
    }

    /// Checks the shard answers (`version`, read-only, on a connection of
    /// its own) and learns its item size limit the first time. Works while
    /// the shard is down: that is how it comes back.
    pub async fn probe(&self) -> Result<(), Error> {
        let answered = self.probe_once().await;
        self.answered.store(answered.is_ok(), Ordering::Relaxed);
        self.metrics.up.set(i64::from(self.is_up()));
        answered
    }

    /// Answered its last probe and is not marked down.
    pub fn is_up(&self) -> bool {
        self.answered.load(Ordering::Relaxed) && !self.is_down()
    }

    async fn probe_once(&self) -> Result<(), Error> {
        let conn = self.slot_connection(&self.probe).await?;
        let text = |encode: fn(&mut BytesMut), decoder: Decoder| Request {
            encode: move |buf: &mut BytesMut, _| encode(buf),
            tokens: 1,
            expect: Expect::Text(decoder),
            max_value: 0,
            budget: None,
        };
        self.call(&conn, text(protocol::encode_version, Decoder::version()))
            .await?;
        if self.item_size_max().is_none() {
            // Best effort: a proxy may not know `stats` (twemproxy hangs
            // up); then memcached's default is assumed, and not asked again.
            let stats = self
                .call(
                    &conn,
                    text(protocol::encode_stats_settings, Decoder::stats()),
                )
                .await;
            let learned = match stats {
                Ok(Reply::Text(protocol::Reply::Stats(stats))) => stats
                    .iter()
                    .find(|(name, _)| name == "item_size_max")
                    .and_then(|(_, v)| v.parse::<usize>().ok()),
                other => {
                    let other = match other {
                        Ok(reply) => format!("reply {}", reply.kind()),
                        Err(e) => e.to_string(),
                    };
                    tracing::debug!(shard = %self.addr, %other, "no item_size_max from `stats settings`; assuming memcached's default");
                    None
                }
            };
            let n = learned.unwrap_or(DEFAULT_ITEM_SIZE_MAX);
            self.item_size_max.store(n, Ordering::Relaxed);
        }
        Ok(())
    }

    /// memcached's `stats` (`STAT <name> <value>` pairs), asked on the
    /// probe's connection (so it never queues behind data traffic) within
    /// the shard's timeout. Works while the shard is down. The outcome does
    /// not count toward marking the shard down: an operator's question must
    /// not change where keys go (and a proxy that hangs up on `stats`, as
    /// twemproxy does, is not a failing shard). A failed connect counts, as
    /// for any connect.
    pub async fn stats(&self) -> Result<Vec<(String, String)>, Error> {
        let conn = self.slot_connection(&self.probe).await?;
        let req = Request {
            encode: |buf: &mut BytesMut, _| protocol::encode_stats(buf),
            tokens: 1,
            expect: Expect::Text(Decoder::stats()),
            max_value: 0,
            budget: None,
        };
        let start = self.metrics.latency.start();
        let reply = conn.request(req, self.settings.timeout).await;
        self.metrics.latency.observe_since(start);
        match reply.map_err(|e| self.conn_error(e))? {
            Reply::Text(protocol::Reply::Stats(stats)) => Ok(stats),
            other => Err(Error::ShardError {
                addr: self.addr.clone(),
                message: format!("unexpected reply to `stats`: {}", other.kind()),
            }),
        }
    }

    /// memgate's counters for this shard.
    pub fn counters(&self) -> ShardCounts {
        self.metrics.read()
    }

    /// Sends one text command on a connection of its own, closed
    /// afterwards: for long replies (key dumps) that must not hold up
    /// pooled traffic.
    pub async fn request_alone(
        &self,
        bytes: Bytes,
        decoder: Decoder,
        timeout: Duration,
    ) -> Result<protocol::Reply, Error> {
        self.admit()?;
        let connect_timeout = self.settings.connect_timeout;
        let resolver = self.resolver.as_deref();
        let stream = tokio::time::timeout(connect_timeout, connect(&self.addr, None, resolver))
            .await
            .map_err(|_| Error::ShardUnavailable {
                addr: self.addr.clone(),
                reason: format!("no connection within {connect_timeout:?} (--connect-timeout)"),
            })
            .and_then(|r| {
                r.map_err(|e| Error::ShardUnavailable {
                    addr: self.addr.clone(),
                    reason: e.to_string(),
                })
            })
            .inspect_err(|_| self.metrics.refused.inc())?;
        let conn = Connection::new(stream, Mode::Text, &self.metrics);
        let req = Request {
            encode: move |buf: &mut BytesMut, _| buf.extend_from_slice(&bytes),
            tokens: 1,
            expect: Expect::Text(decoder),
            max_value: 0,
            budget: None,
        };
        let reply = conn.request(req, timeout).await;
        conn.close();
        match reply.map_err(|e| self.conn_error(e))? {
            Reply::Text(r) => Ok(r),
            other => Err(Error::ShardError {
                addr: self.addr.clone(),
                message: format!("unexpected reply {}", other.kind()),
            }),
        }
    }

    fn conn_error(&self, e: ConnError) -> Error {
        let addr = self.addr.clone();
        match e {
            ConnError::Timeout(after) => Error::ShardTimeout { addr, after },
            ConnError::Protocol(p) => Error::ShardError {
                addr,
                message: p.to_string(),
            },
            ConnError::Budget(o) => o.into(),
            ConnError::Io(_) | ConnError::Closed => Error::ShardUnavailable {
                addr,
                reason: e.to_string(),
            },
        }
    }
}

/// Why a connection could not be opened.
#[derive(Debug, thiserror::Error)]
enum HandshakeError {
    #[error("connect failed: {0}")]
    Io(#[from] std::io::Error),
    #[error("server answered {0:?} to `mn`; is it memcached?")]
    Unexpected(String),
}

async fn connect(
    addr: &str,
    keepalive: Option<Duration>,
    resolver: Option<&TokioResolver>,
) -> Result<TcpStream, std::io::Error> {
    let stream = match (resolver, addr.rsplit_once(':')) {
        (Some(resolver), Some((host, port))) if host.parse::<std::net::IpAddr>().is_err() => {
            let port: u16 = port
                .parse()
                .map_err(|_| std::io::Error::other(format!("bad port in {addr}")))?;
            let ips = resolver
                .lookup_ip(host)
                .await
                .map_err(|e| std::io::Error::other(format!("cannot resolve {host}: {e}")))?;
            let mut last = None;
            let mut stream = None;
            for ip in ips.iter() {
                match TcpStream::connect((ip, port)).await {
                    Ok(s) => {
                        stream = Some(s);
                        break;
                    }
                    Err(e) => last = Some(e),
                }
            }
            stream.ok_or_else(|| {
                last.unwrap_or_else(|| std::io::Error::other(format!("{host} has no address")))
            })?
        }
        _ => TcpStream::connect(addr).await?,
    };
    if let Some(idle) = keepalive {
        let keepalive = socket2::TcpKeepalive::new().with_time(idle);
        // Best effort: a platform without keepalive still works.
        let _ = socket2::SockRef::from(&stream).set_tcp_keepalive(&keepalive);
    }
    Ok(stream)
}

/// Asks `mn`: `MN` means meta, `ERROR` text; `None` if the server hung up.
async fn handshake(stream: &mut TcpStream) -> Result<Option<Mode>, HandshakeError> {
    stream.write_all(b"mn\r\n").await?;
    let mut line = Vec::with_capacity(16);
    let mut byte = [0u8; 1];
    // Byte by byte, so nothing after the line is consumed; the line is
    // short and this happens once per connection.
    while !line.ends_with(b"\r\n") {
        if line.len() > 64 {
            break;
        }
        match stream.read(&mut byte).await {
            Ok(0) | Err(_) if line.is_empty() => return Ok(None),
            Ok(0) => break,
            Ok(_) => line.push(byte[0]),
            Err(e) => return Err(e.into()),
        }
    }
    match &line[..] {
        b"MN\r\n" => Ok(Some(Mode::Meta)),
        b"ERROR\r\n" => Ok(Some(Mode::Text)),
        other => Err(HandshakeError::Unexpected(
            String::from_utf8_lossy(other).into_owned(),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shard(retry_timeout: Duration) -> Shard {
        Shard::new(
            "127.0.0.1:1".into(),
            PoolSettings {
                timeout: Duration::from_millis(100),
                connect_timeout: Duration::from_millis(100),
                conns_per_shard: 1,
                keepalive: None,
                failure_limit: 3,
                retry_timeout,
                dns_server: None,
            },
            ShardMetrics::default(),
        )
    }

    #[test]
    fn marked_down_after_consecutive_failures_only() {
        let s = shard(Duration::from_secs(60));
        s.record(Some(false));
        s.record(Some(false));
        s.record(Some(true)); // a success resets the count
        s.record(Some(false));
        s.record(Some(false));
        assert!(!s.is_down());
        assert!(s.admit().is_ok());
        s.record(Some(false));
        assert!(s.is_down());
        let err = s.admit().unwrap_err();
        assert!(
            matches!(err, Error::ShardDown { failures: 3, .. }),
            "{err:?}"
        );
        s.record(Some(true));
        assert!(!s.is_down());
        assert!(s.admit().is_ok());
    }

    #[test]
    fn one_trial_call_per_retry_timeout() {
        let s = shard(Duration::from_millis(30));
        for _ in 0..3 {
            s.record(Some(false));
        }
        assert!(s.admit().is_err());
        std::thread::sleep(Duration::from_millis(40));
        assert!(s.admit().is_ok(), "trial after the retry timeout");
        assert!(s.admit().is_err(), "only one trial per period");
    }
}
