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
    /// Reads one key; `Ok(None)` is a miss. The value is charged to
    /// `budget`.
    fn get(
        &self,
        key: &Key,
        budget: &Arc<Reservation>,
    ) -> impl Future<Output = Result<Option<Bytes>, Error>> + Send;

    /// Writes one item, returning once the store acknowledged it.
    fn set(&self, item: Item) -> impl Future<Output = Result<(), Error>> + Send;

    /// Removes one key; `Ok(true)` if it existed.
    fn delete(&self, key: &Key) -> impl Future<Output = Result<bool, Error>> + Send;

    /// Reads many keys, one result per key in the same order. Values are
    /// charged to `budget` as they arrive; once it is exceeded the call
    /// fails as a whole (and what still arrives is dropped, not kept).
    fn get_many(
        &self,
        keys: &[Key],
        budget: &Arc<Reservation>,
    ) -> impl Future<Output = Result<Vec<Result<Option<Bytes>, Error>>, Error>> + Send;

    /// Writes many items, one result per item in the same order.
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
