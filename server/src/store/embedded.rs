//! The embedded in-process store: memgate's zero-setup default when no
//! memcached servers are given.
//!
//! It keeps memcached's semantics (per-item TTL, bounded memory with
//! eviction, the same value-size limit) on a moka cache, so code written
//! against it behaves the same when pointed at a memcached pool. Unlike
//! memcached it lists keys exactly.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use moka::Expiry;
use moka::sync::Cache;

use super::budget::Reservation;
use super::{Item, Reachability, Store};
use crate::error::Error;
use crate::key::{Key, Ttl};

/// A stored value and when it stops being visible.
#[derive(Clone, Debug)]
struct Entry {
    value: Bytes,
    expires_at: Option<Instant>,
}

impl Entry {
    fn live(&self, now: Instant) -> bool {
        self.expires_at.is_none_or(|at| at > now)
    }
}

/// Tells moka each entry's own lifetime.
struct PerItemTtl;

impl Expiry<Key, Entry> for PerItemTtl {
    fn expire_after_create(&self, _: &Key, e: &Entry, now: Instant) -> Option<Duration> {
        e.expires_at.map(|at| at.saturating_duration_since(now))
    }

    fn expire_after_update(
        &self,
        _: &Key,
        e: &Entry,
        now: Instant,
        _: Option<Duration>,
    ) -> Option<Duration> {
        e.expires_at.map(|at| at.saturating_duration_since(now))
    }
}

/// An in-process cache bounded in bytes.
#[derive(Clone)]
pub struct EmbeddedStore {
    cache: Cache<Key, Entry>,
    max_value_len: usize,
    max_bytes: u64,
}

impl std::fmt::Debug for EmbeddedStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EmbeddedStore")
            .field("entries", &self.cache.entry_count())
            .field("max_bytes", &self.max_bytes)
            .finish()
    }
}

impl EmbeddedStore {
    /// A store holding at most `max_bytes` of keys and values, with values
    /// of at most `max_value_len` bytes.
    pub fn new(max_bytes: u64, max_value_len: usize) -> EmbeddedStore {
        let cache = Cache::builder()
            .max_capacity(max_bytes)
            .weigher(|k: &Key, e: &Entry| {
                u32::try_from(k.len() + e.value.len() + 48).unwrap_or(u32::MAX)
            })
            .expire_after(PerItemTtl)
            .build();
        EmbeddedStore {
            cache,
            max_value_len,
            max_bytes,
        }
    }

    fn read(&self, key: &Key) -> Option<Bytes> {
        let entry = self.cache.get(key)?;
        entry.live(Instant::now()).then_some(entry.value)
    }

    fn write(&self, item: Item) {
        let expires_at = match item.ttl {
            Ttl::Forever => None,
            Ttl::Seconds(_) => item.ttl.as_duration().map(|d| Instant::now() + d),
        };
        self.cache.insert(
            item.key,
            Entry {
                value: item.value,
                expires_at,
            },
        );
    }

    fn remove(&self, key: &Key) -> bool {
        self.cache
            .remove(key)
            .is_some_and(|e| e.live(Instant::now()))
    }
}

impl Store for EmbeddedStore {
    async fn get(&self, key: &Key, budget: &Arc<Reservation>) -> Result<Option<Bytes>, Error> {
        let value = self.read(key);
        if let Some(v) = &value {
            budget.charge(v.len())?;
        }
        Ok(value)
    }

    async fn set(&self, item: Item) -> Result<(), Error> {
        self.write(item);
        Ok(())
    }

    async fn delete(&self, key: &Key) -> Result<bool, Error> {
        Ok(self.remove(key))
    }

    async fn get_many(
        &self,
        keys: &[Key],
        budget: &Arc<Reservation>,
    ) -> Result<Vec<Result<Option<Bytes>, Error>>, Error> {
        keys.iter()
            .map(|k| {
                let value = self.read(k);
                if let Some(v) = &value {
                    budget.charge(v.len())?;
                }
                Ok(Ok(value))
            })
            .collect()
    }

    async fn set_many(&self, items: Vec<Item>) -> Vec<Result<(), Error>> {
        items
            .into_iter()
            .map(|i| {
                self.write(i);
                Ok(())
            })
            .collect()
    }

    async fn delete_many(&self, keys: &[Key]) -> Vec<Result<bool, Error>> {
        keys.iter().map(|k| Ok(self.remove(k))).collect()
    }

    async fn list(&self, prefix: &str, limit: usize) -> Result<Vec<String>, Error> {
        let now = Instant::now();
        let mut keys: Vec<String> = self
            .cache
            .iter()
            .filter(|(k, e)| k.as_str().starts_with(prefix) && e.live(now))
            .map(|(k, _): (Arc<Key>, _)| k.as_str().to_owned())
            .collect();
        keys.sort_unstable();
        keys.truncate(limit);
        Ok(keys)
    }

    async fn probe(&self) -> Reachability {
        Reachability {
            up: 1,
            total: 1,
            shards: Vec::new(),
        }
    }

    fn max_value_len(&self, _key: &Key) -> (usize, String) {
        (self.max_value_len, "--max-value-bytes".to_owned())
    }

    fn describe(&self) -> String {
        format!("embedded store ({} bytes)", self.max_bytes)
    }
}
