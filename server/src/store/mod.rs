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

    /// The largest value that can be stored under `key`, and which limit
    /// sets it.
    fn max_value_len(&self, key: &Key) -> (usize, String);

    /// A short description for logs: backend kind and shard count.
    fn describe(&self) -> String;
}
