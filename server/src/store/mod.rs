//! Where items live: one [`Store`] trait, two stores.
//!
//! [`embedded::EmbeddedStore`] is the zero-setup in-process default;
//! [`memcached::ShardedStore`] routes each key to one server of a memcached
//! pool. The gRPC service only sees this trait, and the same contract tests
//! run against both stores.

use std::future::Future;
use std::sync::Arc;

use bytes::Bytes;

use crate::error::Error;
use crate::key::{Key, Ttl};
use crate::metrics::ShardCounts;

pub mod budget;
pub mod embedded;
pub mod memcached;

use budget::Reservation;

/// One item to write.
#[derive(Clone, Debug)]
pub struct Item {
    /// Where to write it.
    pub key: Key,
    /// What to write.
    pub value: Bytes,
    /// How long it lives.
    pub ttl: Ttl,
    /// Written only if this holds.
    pub condition: Condition,
}

/// When a write happens (memcached's set, add, replace and cas).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Condition {
    /// Always.
    #[default]
    Always,
    /// Only if the key does not exist (a lease placeholder and a stale
    /// item exist).
    Absent,
    /// Only if the key exists.
    Present,
    /// Only if the item's CAS token is still this one.
    CasMatch(u64),
}

impl Condition {
    /// The [`Error::ConditionFailed`] for `key` when this condition did
    /// not hold and the store says why: `missing` when the key was not
    /// there (CAS), otherwise it was (or had changed).
    pub fn failed(self, key: &Key, missing: bool) -> Error {
        let why = match (self, missing) {
            (Condition::Absent, _) => "it already exists (condition ABSENT)",
            (Condition::Present, _) => "it does not exist (condition PRESENT)",
            (Condition::CasMatch(_), true) => "it does not exist (condition CAS_MATCH)",
            (Condition::CasMatch(_), false) => {
                "its CAS token no longer matches: it was written since it was read (condition CAS_MATCH)"
            }
            (Condition::Always, _) => "the server refused it",
        };
        Error::ConditionFailed {
            key: crate::error::shorten(key.as_str()),
            why,
        }
    }
}

/// What a Get asks for beyond the value (the GetRequest options).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ReadOptions {
    /// Get-and-touch: a hit also gets this TTL.
    pub touch: Option<Ttl>,
    /// Stampede protection: a miss creates a placeholder living this long
    /// and elects one caller to refill it.
    pub lease: Option<Ttl>,
}

impl ReadOptions {
    /// A read that changes nothing: it can share another read's answer.
    pub fn is_plain(&self) -> bool {
        self.touch.is_none() && self.lease.is_none()
    }
}

/// Who refills a missing or stale key (Gets with a lease only).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Lease {
    /// No lease taken or reported.
    #[default]
    None,
    /// This caller refills it.
    Won,
    /// Another caller is refilling it.
    Held,
}

/// What a Get found: the value with its metadata, or a miss.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Found {
    /// The value; `None` on a miss (a lease placeholder is a miss).
    pub value: Option<Bytes>,
    /// The item's CAS token (the placeholder's with a lease); 0 when
    /// unknown.
    pub cas: u64,
    /// Seconds left; `None` when it never expires or is unknown.
    pub ttl_left: Option<u32>,
    /// Who refills it.
    pub lease: Lease,
    /// The value was invalidated and is (about to be) refreshed.
    pub stale: bool,
}

impl Found {
    /// A miss with no lease.
    pub fn miss() -> Found {
        Found::default()
    }
}

/// One counter change (the Increment RPC).
#[derive(Clone, Debug)]
pub struct Increment {
    /// The counter.
    pub key: Key,
    /// Added to it; negative subtracts, stopping at 0.
    pub delta: i64,
    /// When the key is missing: create it holding this (and return it,
    /// without applying `delta`), living `ttl`. `None`: a missing key is
    /// [`Error::KeyNotFound`].
    pub initial: Option<u64>,
    /// The TTL of a counter created from `initial`.
    pub ttl: Ttl,
}

/// memcached's counter arithmetic on a stored value, for the embedded
/// store: the new value, and the bytes to store. `None` when `stored` is
/// not a number as memcached reads one (optional leading whitespace, 1 to
/// 20 digits fitting in 64 bits, then the end or whitespace). Increments
/// wrap around at 2^64, decrements stop at 0, and a number shorter than
/// the stored text is padded with spaces to its length, as memcached
/// rewrites counters in place.
pub fn add_delta(stored: &[u8], delta: i64) -> Option<(u64, Bytes)> {
    let text = stored.trim_ascii_start();
    let digits = text
        .iter()
        .position(|b| !b.is_ascii_digit())
        .unwrap_or(text.len());
    if digits == 0 || (digits < text.len() && !text[digits].is_ascii_whitespace()) {
        return None;
    }
    let current = std::str::from_utf8(&text[..digits])
        .ok()?
        .parse::<u64>()
        .ok()?;
    let value = if delta >= 0 {
        current.wrapping_add(delta.unsigned_abs())
    } else {
        current.saturating_sub(delta.unsigned_abs())
    };
    let mut out = value.to_string().into_bytes();
    if out.len() < stored.len() {
        out.resize(stored.len(), b' ');
    }
    Some((value, Bytes::from(out)))
}

/// Reachability of the store, as the health service reports it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Reachability {
    /// Shards that answered the last probe.
    pub up: usize,
    /// All shards.
    pub total: usize,
    /// Each memcached server's address and whether it answered (empty for
    /// the embedded store).
    pub shards: Vec<(String, bool)>,
}

impl Reachability {
    /// The store can serve at least some keys.
    pub fn serving(&self) -> bool {
        self.up > 0
    }
}

/// One shard as the Stats RPC reports it.
#[derive(Clone, Debug)]
pub struct ShardReport {
    /// `host:port` as configured, or `embedded`.
    pub addr: String,
    /// Its weight on the ring.
    pub weight: u32,
    /// The fraction of the hash ring it owns (0 to 1).
    pub ring_share: f64,
    /// Marked down after consecutive failures.
    pub marked_down: bool,
    /// The backend's own figures, or why they could not be read.
    pub stats: Result<BackendStats, Error>,
    /// memgate's counters for this shard.
    pub counters: ShardCounts,
}

/// A shard's own figures: memcached's `stats`, or the embedded store's
/// equivalents. Figures a server does not report are 0 (or empty).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct BackendStats {
    /// Items stored now.
    pub curr_items: u64,
    /// Bytes used by items.
    pub bytes: u64,
    /// The memory limit for items.
    pub limit_maxbytes: u64,
    /// Live items evicted to make room.
    pub evictions: u64,
    /// Reads that found their key.
    pub get_hits: u64,
    /// Reads that did not.
    pub get_misses: u64,
    /// Seconds since the server started.
    pub uptime_seconds: u64,
    /// The server's version.
    pub version: String,
    /// Open client connections.
    pub curr_connections: u64,
}

impl BackendStats {
    /// From the `STAT <name> <value>` pairs of memcached's `stats`; a
    /// figure that is missing or not a number is 0.
    pub fn from_memcached(stats: &[(String, String)]) -> BackendStats {
        let find = |name: &str| {
            stats
                .iter()
                .find(|(n, _)| n == name)
                .map(|(_, v)| v.as_str())
        };
        let number = |name: &str| find(name).and_then(|v| v.parse().ok()).unwrap_or(0);
        BackendStats {
            curr_items: number("curr_items"),
            bytes: number("bytes"),
            limit_maxbytes: number("limit_maxbytes"),
            evictions: number("evictions"),
            get_hits: number("get_hits"),
            get_misses: number("get_misses"),
            uptime_seconds: number("uptime"),
            version: find("version").unwrap_or_default().to_owned(),
            curr_connections: number("curr_connections"),
        }
    }
}

/// A key-value store with memgate's semantics. Keys and TTLs are already
/// validated; values are checked against [`Store::max_value_len`] by the
/// caller before any write.
pub trait Store: Send + Sync + 'static {
    /// Reads one key with its metadata, touching it or taking a lease as
    /// `opts` asks. The value is charged to `budget`.
    fn get(
        &self,
        key: &Key,
        opts: ReadOptions,
        budget: &Arc<Reservation>,
    ) -> impl Future<Output = Result<Found, Error>> + Send;

    /// Writes one item if its condition holds, returning its new CAS token
    /// (0 when the store has none) once the store acknowledged it; a
    /// condition that did not hold is [`Error::ConditionFailed`].
    fn set(&self, item: Item) -> impl Future<Output = Result<u64, Error>> + Send;

    /// Removes one key; `Ok(true)` if it existed.
    fn delete(&self, key: &Key) -> impl Future<Output = Result<bool, Error>> + Send;

    /// Marks one key stale instead of removing it: it stays readable (as
    /// stale) for `stale_for`, and the first Get with a lease after that
    /// wins it. `Ok(true)` if it existed.
    fn invalidate(
        &self,
        key: &Key,
        stale_for: Ttl,
    ) -> impl Future<Output = Result<bool, Error>> + Send;

    /// Changes a counter atomically and returns its new value (see
    /// [`Increment`]): [`Error::KeyNotFound`] when it is missing and no
    /// initial value is given, [`Error::NotANumber`] when the stored value
    /// is not a decimal number.
    fn increment(&self, inc: Increment) -> impl Future<Output = Result<u64, Error>> + Send;

    /// Sets a new TTL on `key` without changing its value; `Ok(true)` if
    /// it existed.
    fn touch(&self, key: &Key, ttl: Ttl) -> impl Future<Output = Result<bool, Error>> + Send;

    /// Reads many keys, one result per key in the same order. Values are
    /// charged to `budget` as they arrive; once it is exceeded the call
    /// fails as a whole (and what still arrives is dropped, not kept).
    fn get_many(
        &self,
        keys: &[Key],
        budget: &Arc<Reservation>,
    ) -> impl Future<Output = Result<Vec<Result<Option<Bytes>, Error>>, Error>> + Send;

    /// Writes many items, one result per item in the same order (a
    /// condition that did not hold is [`Error::ConditionFailed`]).
    fn set_many(&self, items: Vec<Item>) -> impl Future<Output = Vec<Result<(), Error>>> + Send;

    /// Removes many keys, one result per key in the same order.
    fn delete_many(&self, keys: &[Key]) -> impl Future<Output = Vec<Result<bool, Error>>> + Send;

    /// Keys starting with `prefix`, sorted, at most `limit` of them.
    fn list(
        &self,
        prefix: &str,
        limit: usize,
    ) -> impl Future<Output = Result<Vec<String>, Error>> + Send;

    /// Probes every shard (read-only) and reports how many answered.
    fn probe(&self) -> impl Future<Output = Reachability> + Send;

    /// Every shard's state and own figures, asked of all shards at once,
    /// each within the backend timeout. A shard that does not answer is
    /// reported with its error; it never fails the others. Read-only, and
    /// the outcome does not count toward marking a shard down.
    fn shard_stats(&self) -> impl Future<Output = Vec<ShardReport>> + Send;

    /// The largest value that can be stored under `key`, and which limit
    /// sets it.
    fn max_value_len(&self, key: &Key) -> (usize, String);

    /// A short description for logs: backend kind and shard count.
    fn describe(&self) -> String;

    /// The shard that holds `key` now ("embedded" for the embedded store;
    /// empty while there is none) and whether it is up.
    fn locate(&self, key: &Key) -> (String, bool);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counter_arithmetic_follows_memcached() {
        let add = |s: &str, d| add_delta(s.as_bytes(), d).map(|(v, b)| (v, b.to_vec()));
        assert_eq!(add("41", 1), Some((42, b"42".to_vec())));
        assert_eq!(add("15", -100), Some((0, b"0 ".to_vec())));
        assert_eq!(add("5 ", 5), Some((10, b"10".to_vec())));
        assert_eq!(add(" 7", 0), Some((7, b"7 ".to_vec())));
        assert_eq!(
            add("18446744073709551615", 2),
            Some((1, format!("1{:19}", "").into_bytes()))
        );
        assert_eq!(add("0", i64::MIN), Some((0, b"0".to_vec())));
        for bad in ["", " ", "x", "-1", "+1", "1x", "18446744073709551616"] {
            assert_eq!(add(bad, 1), None, "{bad:?}");
        }
    }

    #[test]
    fn backend_stats_from_memcached() {
        let lines: Vec<(String, String)> = [
            ("pid", "7"),
            ("uptime", "42"),
            ("version", "1.6.18"),
            ("curr_connections", "3"),
            ("get_hits", "10"),
            ("get_misses", "4"),
            ("bytes", "1234"),
            ("curr_items", "5"),
            ("evictions", "not-a-number"),
            ("limit_maxbytes", "67108864"),
        ]
        .iter()
        .map(|(n, v)| (n.to_string(), v.to_string()))
        .collect();
        assert_eq!(
            BackendStats::from_memcached(&lines),
            BackendStats {
                curr_items: 5,
                bytes: 1234,
                limit_maxbytes: 64 << 20,
                evictions: 0,
                get_hits: 10,
                get_misses: 4,
                uptime_seconds: 42,
                version: "1.6.18".into(),
                curr_connections: 3,
            }
        );
        assert_eq!(BackendStats::from_memcached(&[]), BackendStats::default());
    }
}
