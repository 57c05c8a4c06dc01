//! One memcached server: its connections and what it can store.
//!
//! A shard keeps a fixed number of pipelined [`Connection`]s, opened lazily
//! and replaced as soon as one fails. Requests spread over them round-robin;
//! each carries many requests at once, so the pool size is about spreading
//! load over the server's worker threads, not about concurrency.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use tokio::net::TcpStream;
use tokio::sync::Mutex;

use super::connection::{ConnError, Connection};
use super::protocol::{self, Decoder, Reply};
use crate::error::Error;

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
    /// Longest wait for a TCP connection.
    pub connect_timeout: Duration,
    /// Pipelined connections kept open per shard.
    pub conns_per_shard: usize,
    /// TCP keepalive idle time on backend connections (`None`: off).
    pub keepalive: Option<Duration>,
    /// Consecutive failures after which a shard is marked down.
    pub failure_limit: u32,
    /// While down, calls fail fast; after this long one call is let through
    /// as a trial (the health probe also brings a shard back).
    pub retry_timeout: Duration,
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

/// One memcached server of the pool.
#[derive(Debug)]
pub struct Shard {
    addr: String,
    settings: PoolSettings,
    conns: Vec<Mutex<Option<Connection>>>,
    next: AtomicUsize,
    /// `item_size_max` learned from `stats settings`; 0 until known.
    item_size_max: AtomicUsize,
    ejection: std::sync::Mutex<Ejection>,
}

impl Shard {
    /// A shard at `addr` (nothing is connected yet).
    pub fn new(addr: String, settings: PoolSettings) -> Shard {
        let conns = (0..settings.conns_per_shard.max(1))
            .map(|_| Mutex::new(None))
            .collect();
        Shard {
            addr,
            settings,
            conns,
            next: AtomicUsize::new(0),
            item_size_max: AtomicUsize::new(0),
            ejection: std::sync::Mutex::new(Ejection::default()),
        }
    }

    /// True while the shard is marked down.
    pub fn is_down(&self) -> bool {
        self.ejection().down_since.is_some()
    }

    fn ejection(&self) -> std::sync::MutexGuard<'_, Ejection> {
        // The state is a few counters: a panic elsewhere cannot leave it
        // inconsistent, so a poisoned lock is still usable.
        self.ejection.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Fails fast while the shard is down, except for one trial call per
    /// `retry_timeout`.
    fn admit(&self) -> Result<(), Error> {
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
        })
    }

    /// Records the outcome of a call that reached (or tried to reach) the
    /// server, marking the shard down or up on a transition; `None` leaves
    /// the count as it is.
    fn record(&self, outcome: Option<bool>) {
        let Some(ok) = outcome else { return };
        let mut e = self.ejection();
        if ok {
            e.consecutive_failures = 0;
            if let Some(since) = e.down_since.take() {
                e.last_trial = None;
                tracing::info!(shard = %self.addr, down_for = ?since.elapsed(), "shard is back up");
            }
            return;
        }
        e.consecutive_failures = e.consecutive_failures.saturating_add(1);
        if e.down_since.is_none() && e.consecutive_failures >= self.settings.failure_limit {
            e.down_since = Some(Instant::now());
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

    /// Sends one command on a pooled connection and waits for its reply;
    /// fails fast while the shard is marked down.
    pub async fn request(&self, bytes: Bytes, decoder: Decoder) -> Result<Reply, Error> {
        self.admit()?;
        self.send(bytes, decoder).await
    }

    /// Like [`Shard::request`], but also while the shard is down: the
    /// health probe uses it to find out when the shard is back.
    async fn send(&self, bytes: Bytes, decoder: Decoder) -> Result<Reply, Error> {
        let conn = match self.connection().await {
            Ok(conn) => conn,
            Err(e) => {
                self.record(Some(false));
                return Err(e);
            }
        };
        match conn.request(bytes, decoder, self.settings.timeout).await {
            Ok(reply) => {
                self.record(Some(true));
                Ok(reply)
            }
            Err(e) => {
                tracing::debug!(shard = %self.addr, error = %e, "memcached call failed");
                // Requests that only shared a connection with the one that
                // failed are collateral: one failure must not count as many
                // and eject a shard that hiccuped once.
                self.record((!matches!(e, ConnError::Closed)).then_some(false));
                Err(self.conn_error(e))
            }
        }
    }

    /// Sends one command on a connection of its own, closed afterwards: for
    /// long replies (key dumps) that must not hold up pooled traffic.
    pub async fn request_alone(
        &self,
        bytes: Bytes,
        decoder: Decoder,
        timeout: Duration,
    ) -> Result<Reply, Error> {
        self.admit()?;
        let conn = Connection::new(self.connect().await?);
        let reply = conn.request(bytes, decoder, timeout).await;
        conn.close();
        reply.map_err(|e| self.conn_error(e))
    }

    /// Checks the shard answers (`version`, read-only) and learns its item
    /// size limit the first time.
    pub async fn probe(&self) -> Result<(), Error> {
        let mut cmd = BytesMut::new();
        protocol::encode_version(&mut cmd);
        self.send(cmd.freeze(), Decoder::version()).await?;
        if self.item_size_max().is_none() {
            let mut cmd = BytesMut::new();
            protocol::encode_stats_settings(&mut cmd);
            if let Reply::Stats(stats) = self.send(cmd.freeze(), Decoder::stats()).await? {
                let learned = stats
                    .iter()
                    .find(|(name, _)| name == "item_size_max")
                    .and_then(|(_, v)| v.parse::<usize>().ok());
                if let Some(n) = learned {
                    self.item_size_max.store(n, Ordering::Relaxed);
                }
            }
        }
        Ok(())
    }

    /// A live pooled connection, opening one if its slot is empty or broken.
    async fn connection(&self) -> Result<Connection, Error> {
        let slot = self.next.fetch_add(1, Ordering::Relaxed) % self.conns.len();
        // Callers for the same slot wait for one connect, not one each.
        let mut guard = self.conns[slot].lock().await;
        if let Some(conn) = guard.as_ref().filter(|c| !c.is_closed()) {
            return Ok(conn.clone());
        }
        *guard = None;
        let conn = Connection::new(self.connect().await?);
        *guard = Some(conn.clone());
        Ok(conn)
    }

    async fn connect(&self) -> Result<TcpStream, Error> {
        let timeout = self.settings.connect_timeout;
        let stream = tokio::time::timeout(timeout, TcpStream::connect(&self.addr))
            .await
            .map_err(|_| Error::ShardUnavailable {
                addr: self.addr.clone(),
                reason: format!("connect timed out after {timeout:?}"),
            })?
            .map_err(|e| Error::ShardUnavailable {
                addr: self.addr.clone(),
                reason: format!("connect failed: {e}"),
            })?;
        if let Some(idle) = self.settings.keepalive {
            let keepalive = socket2::TcpKeepalive::new().with_time(idle);
            // Best effort: a platform without keepalive still works.
            let _ = socket2::SockRef::from(&stream).set_tcp_keepalive(&keepalive);
        }
        Ok(stream)
    }

    fn conn_error(&self, e: ConnError) -> Error {
        let addr = self.addr.clone();
        match e {
            ConnError::Timeout(after) => Error::ShardTimeout { addr, after },
            ConnError::Protocol(p) => Error::ShardError {
                addr,
                message: p.to_string(),
            },
            ConnError::Io(_) | ConnError::Closed => Error::ShardUnavailable {
                addr,
                reason: e.to_string(),
            },
        }
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
            },
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
