//! The embedded in-process store: memgate's zero-setup default when no
//! memcached servers are given.
//!
//! It keeps memcached's semantics (per-item TTL, bounded memory with
//! eviction, the same value-size limit) on a moka cache, so code written
//! against it behaves the same when pointed at a memcached pool. Unlike
//! memcached it lists keys exactly.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use moka::Expiry;
use moka::notification::RemovalCause;
use moka::ops::compute::Op;
use moka::sync::Cache;

use super::budget::Reservation;
use super::{
    BackendStats, Condition, Found, Increment, Item, Lease, Reachability, ReadOptions, ShardReport,
    Store, add_delta,
};
use crate::error::Error;
use crate::key::{Key, Ttl};
use crate::metrics::ShardCounts;

/// A stored value, when it stops being visible, and what a lease has made
/// of it.
#[derive(Clone, Debug)]
struct Entry {
    value: Bytes,
    expires_at: Option<Instant>,
    /// Its CAS token: a new one on every write.
    cas: u64,
    state: State,
}

/// memcached's item states that leases add.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    /// An ordinary item.
    Fresh,
    /// The zero-byte item a missed Get with a lease created; its creator
    /// holds the lease. An item to every other command, a miss to Get.
    Placeholder,
    /// Invalidated: still readable; `won` once a Get with a lease has
    /// been elected to refresh it.
    Stale { won: bool },
}

impl Entry {
    fn live(&self, now: Instant) -> bool {
        self.expires_at.is_none_or(|at| at > now)
    }

    /// Whole seconds left, rounded up as memcached reports them.
    fn ttl_left(&self, now: Instant) -> Option<u32> {
        self.expires_at.map(|at| {
            let left = at.saturating_duration_since(now);
            let secs = left.as_secs() + u64::from(left.subsec_nanos() > 0);
            u32::try_from(secs).unwrap_or(u32::MAX)
        })
    }

    /// What a plain read sees.
    fn found(&self, now: Instant) -> Found {
        match self.state {
            State::Placeholder => Found::miss(),
            State::Fresh | State::Stale { .. } => Found {
                value: Some(self.value.clone()),
                cas: self.cas,
                ttl_left: self.ttl_left(now),
                lease: Lease::None,
                stale: matches!(self.state, State::Stale { .. }),
            },
        }
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

/// What the embedded store counts for Stats, as memcached does.
#[derive(Debug, Default)]
struct Counts {
    get_hits: AtomicU64,
    get_misses: AtomicU64,
    /// Live entries removed to make room.
    evictions: AtomicU64,
}

/// An in-process cache bounded in bytes.
#[derive(Clone)]
pub struct EmbeddedStore {
    cache: Cache<Key, Entry>,
    max_value_len: usize,
    max_bytes: u64,
    counts: Arc<Counts>,
    /// The last CAS token handed out.
    last_cas: Arc<AtomicU64>,
    started: Instant,
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
        let counts = Arc::new(Counts::default());
        let evicted = counts.clone();
        let cache = Cache::builder()
            .max_capacity(max_bytes)
            .weigher(|k: &Key, e: &Entry| {
                u32::try_from(k.len() + e.value.len() + 48).unwrap_or(u32::MAX)
            })
            .expire_after(PerItemTtl)
            .eviction_listener(move |_, _, cause| {
                if cause == RemovalCause::Size {
                    evicted.evictions.fetch_add(1, Ordering::Relaxed);
                }
            })
            .build();
        EmbeddedStore {
            cache,
            max_value_len,
            max_bytes,
            counts,
            last_cas: Arc::new(AtomicU64::new(0)),
            started: Instant::now(),
        }
    }

    fn next_cas(&self) -> u64 {
        self.last_cas.fetch_add(1, Ordering::Relaxed) + 1
    }

    fn count_read(&self, hit: bool) {
        let count = match hit {
            true => &self.counts.get_hits,
            false => &self.counts.get_misses,
        };
        count.fetch_add(1, Ordering::Relaxed);
    }

    /// A plain read: nothing changes.
    fn read(&self, key: &Key) -> Found {
        let now = Instant::now();
        let found = self
            .cache
            .get(key)
            .filter(|e| e.live(now))
            .map_or_else(Found::miss, |e| e.found(now));
        self.count_read(found.value.is_some());
        found
    }

    /// A read that touches the item or takes a lease, atomic per key.
    fn read_changing(&self, key: &Key, opts: ReadOptions) -> Found {
        let mut found = Found::miss();
        self.cache.entry(key.clone()).and_compute_with(|e| {
            let now = Instant::now();
            let mut entry = match e.map(|e| e.into_value()) {
                Some(e) if e.live(now) => e,
                _ => {
                    let Some(lease) = opts.lease else {
                        return Op::Nop;
                    };
                    // A miss with a lease: this caller refills it.
                    let placeholder = Entry {
                        value: Bytes::new(),
                        // memcached applies the touch after creating it.
                        expires_at: Self::expiry_from(opts.touch.unwrap_or(lease), now),
                        cas: self.next_cas(),
                        state: State::Placeholder,
                    };
                    found = Found {
                        cas: placeholder.cas,
                        ttl_left: placeholder.ttl_left(now),
                        lease: Lease::Won,
                        ..Found::miss()
                    };
                    return Op::Put(placeholder);
                }
            };
            if let Some(ttl) = opts.touch {
                entry.expires_at = Self::expiry_from(ttl, now);
            }
            found = entry.found(now);
            let mut changed = opts.touch.is_some();
            if opts.lease.is_some() {
                match entry.state {
                    State::Fresh => {}
                    State::Placeholder => {
                        found = Found {
                            cas: entry.cas,
                            ttl_left: entry.ttl_left(now),
                            lease: Lease::Held,
                            ..Found::miss()
                        }
                    }
                    State::Stale { won: false } => {
                        entry.state = State::Stale { won: true };
                        found.lease = Lease::Won;
                        changed = true;
                    }
                    State::Stale { won: true } => found.lease = Lease::Held,
                }
            }
            match changed {
                true => Op::Put(entry),
                false => Op::Nop,
            }
        });
        self.count_read(found.value.is_some());
        found
    }

    /// Writes `item` if its condition holds; its new CAS token.
    fn write(&self, item: Item) -> Result<u64, Error> {
        let cas = self.next_cas();
        let entry = Entry {
            value: item.value,
            expires_at: Self::expiry(item.ttl),
            cas,
            state: State::Fresh,
        };
        // Every write goes through the key's compute, never `insert`: moka
        // runs one compute per key at a time but does not order `insert`
        // with them, so a lease read computing from the old entry could
        // put it back over this write.
        let mut outcome = Ok(cas);
        self.cache.entry(item.key.clone()).and_compute_with(|e| {
            let current = e.map(|e| e.into_value()).filter(|e| e.live(Instant::now()));
            let holds = match (item.condition, &current) {
                (Condition::Always, _) => true,
                (Condition::Absent, current) => current.is_none(),
                (Condition::Present, current) => current.is_some(),
                (Condition::CasMatch(want), Some(e)) => e.cas == want,
                (Condition::CasMatch(_), None) => false,
            };
            if holds {
                Op::Put(entry)
            } else {
                outcome = Err(item.condition.failed(&item.key, current.is_none()));
                Op::Nop
            }
        });
        outcome
    }

    /// Marks a live item stale for `stale_for`; false if there is none.
    fn mark_stale(&self, key: &Key, stale_for: Ttl) -> bool {
        self.change_live(key, |e| Entry {
            expires_at: Self::expiry(stale_for),
            cas: self.next_cas(),
            state: State::Stale { won: false },
            ..e
        })
    }

    /// Replaces a live item with `change(item)`, atomically; false (and
    /// nothing changed) if there is none.
    fn change_live(&self, key: &Key, change: impl FnOnce(Entry) -> Entry) -> bool {
        let mut found = false;
        self.cache
            .entry(key.clone())
            .and_compute_with(|e| match e.map(|e| e.into_value()) {
                Some(e) if e.live(Instant::now()) => {
                    found = true;
                    Op::Put(change(e))
                }
                _ => Op::Nop,
            });
        found
    }

    /// When an item written now with `ttl` expires.
    fn expiry(ttl: Ttl) -> Option<Instant> {
        Self::expiry_from(ttl, Instant::now())
    }

    /// When an item written at `now` with `ttl` expires (one clock reading
    /// for the write and the TTL it reports).
    fn expiry_from(ttl: Ttl, now: Instant) -> Option<Instant> {
        ttl.as_duration().map(|d| now + d)
    }

    /// One counter change, atomic per key (moka runs one compute per key
    /// at a time).
    fn add(&self, inc: Increment) -> Result<u64, Error> {
        let mut outcome = Err(Error::KeyNotFound {
            key: crate::error::shorten(inc.key.as_str()),
        });
        self.cache.entry(inc.key.clone()).and_compute_with(|found| {
            match found.map(|e| e.into_value()) {
                Some(e) if e.live(Instant::now()) => match add_delta(&e.value, inc.delta) {
                    Some((n, value)) => {
                        outcome = Ok(n);
                        // The counter keeps its TTL.
                        Op::Put(Entry {
                            value,
                            cas: self.next_cas(),
                            state: State::Fresh,
                            ..e
                        })
                    }
                    None => {
                        outcome = Err(Error::NotANumber {
                            key: crate::error::shorten(inc.key.as_str()),
                        });
                        Op::Nop
                    }
                },
                _ => match inc.initial {
                    Some(n) => {
                        outcome = Ok(n);
                        Op::Put(Entry {
                            value: Bytes::from(n.to_string()),
                            expires_at: Self::expiry(inc.ttl),
                            cas: self.next_cas(),
                            state: State::Fresh,
                        })
                    }
                    None => Op::Nop,
                },
            }
        });
        outcome
    }

    /// A new TTL for a live item; false if there is none.
    fn retime(&self, key: &Key, ttl: Ttl) -> bool {
        self.change_live(key, |e| Entry {
            expires_at: Self::expiry(ttl),
            ..e
        })
    }

    /// Removes `key` (through its compute, as [`Self::write`] explains);
    /// true if it was live.
    fn remove(&self, key: &Key) -> bool {
        let mut found = false;
        self.cache.entry(key.clone()).and_compute_with(|e| match e {
            Some(e) => {
                found = e.into_value().live(Instant::now());
                Op::Remove
            }
            None => Op::Nop,
        });
        found
    }
}

impl Store for EmbeddedStore {
    async fn get(
        &self,
        key: &Key,
        opts: ReadOptions,
        budget: &Arc<Reservation>,
    ) -> Result<Found, Error> {
        let found = match opts.is_plain() {
            true => self.read(key),
            false => self.read_changing(key, opts),
        };
        if let Some(v) = &found.value {
            budget.charge(v.len())?;
        }
        Ok(found)
    }

    async fn set(&self, item: Item) -> Result<u64, Error> {
        self.write(item)
    }

    async fn delete(&self, key: &Key) -> Result<bool, Error> {
        Ok(self.remove(key))
    }

    async fn invalidate(&self, key: &Key, stale_for: Ttl) -> Result<bool, Error> {
        Ok(self.mark_stale(key, stale_for))
    }

    async fn increment(&self, inc: Increment) -> Result<u64, Error> {
        self.add(inc)
    }

    async fn touch(&self, key: &Key, ttl: Ttl) -> Result<bool, Error> {
        Ok(self.retime(key, ttl))
    }

    async fn get_many(
        &self,
        keys: &[Key],
        budget: &Arc<Reservation>,
    ) -> Result<Vec<Result<Option<Bytes>, Error>>, Error> {
        keys.iter()
            .map(|k| {
                let value = self.read(k).value;
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
            .map(|i| self.write(i).map(|_| ()))
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

    async fn shard_stats(&self) -> Vec<ShardReport> {
        // Counts settle once moka's pending maintenance has run.
        self.cache.run_pending_tasks();
        let stats = BackendStats {
            curr_items: self.cache.entry_count(),
            bytes: self.cache.weighted_size(),
            limit_maxbytes: self.max_bytes,
            evictions: self.counts.evictions.load(Ordering::Relaxed),
            get_hits: self.counts.get_hits.load(Ordering::Relaxed),
            get_misses: self.counts.get_misses.load(Ordering::Relaxed),
            uptime_seconds: self.started.elapsed().as_secs(),
            version: env!("CARGO_PKG_VERSION").to_owned(),
            curr_connections: 0,
        };
        vec![ShardReport {
            addr: "embedded".to_owned(),
            weight: 1,
            ring_share: 1.0,
            marked_down: false,
            stats: Ok(stats),
            counters: ShardCounts::default(),
        }]
    }

    fn max_value_len(&self, _key: &Key) -> (usize, String) {
        (self.max_value_len, "--max-value-bytes".to_owned())
    }

    fn locate(&self, _key: &Key) -> (String, bool) {
        ("embedded".to_owned(), true)
    }

    fn describe(&self) -> String {
        format!("embedded store ({} bytes)", self.max_bytes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn item(key: &str, len: usize) -> Item {
        Item {
            key: Key::parse(key).unwrap(),
            value: Bytes::from(vec![b'x'; len]),
            ttl: Ttl::Forever,
            condition: Condition::Always,
        }
    }

    #[tokio::test]
    async fn reports_items_bytes_hits_and_evictions() {
        let store = EmbeddedStore::new(64 * 1024, 1 << 20);
        let budget = Arc::new(
            crate::store::budget::ByteBudget::new(1 << 20, Default::default()).reserve(1 << 20),
        );
        store.set(item("a", 100)).await.unwrap();
        store.set(item("b", 100)).await.unwrap();
        assert!(
            store
                .get(&Key::parse("a").unwrap(), ReadOptions::default(), &budget)
                .await
                .unwrap()
                .value
                .is_some()
        );
        assert!(
            store
                .get(&Key::parse("zz").unwrap(), ReadOptions::default(), &budget)
                .await
                .unwrap()
                .value
                .is_none()
        );
        let [shard] = &store.shard_stats().await[..] else {
            panic!("one pseudo-shard")
        };
        assert_eq!(shard.addr, "embedded");
        assert_eq!(shard.ring_share, 1.0);
        let stats = shard.stats.as_ref().unwrap();
        assert_eq!(stats.curr_items, 2);
        assert_eq!(stats.bytes, 2 * (1 + 100 + 48));
        assert_eq!(stats.limit_maxbytes, 64 * 1024);
        assert_eq!((stats.get_hits, stats.get_misses), (1, 1));
        assert_eq!(stats.evictions, 0);

        // Past the bound, entries are evicted to make room, and counted.
        for i in 0..100 {
            store.set(item(&format!("k{i}"), 4096)).await.unwrap();
        }
        let stats = store.shard_stats().await.remove(0).stats.unwrap();
        assert!(stats.bytes <= 64 * 1024, "{stats:?}");
        assert!(stats.evictions > 0, "{stats:?}");
    }
}
