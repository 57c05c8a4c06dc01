//! No cold cache for moved keys: for the rebalance window after a pool
//! change, a read that misses on a key's new server asks the key's
//! previous server, and what it finds is copied to the new server with an
//! `add` (which never overwrites a value written there meanwhile), keeping
//! the remaining TTL. Writes and deletes during the window also delete the
//! previous server's copy, so a later fallback cannot bring back a value
//! that was replaced or deleted.
//!
//! The extra load is bounded: at most one fallback read per key at a
//! time, and at most `fallback_rate` per second across the server (a miss
//! over the limit simply stays a miss).

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use bytes::{Bytes, BytesMut};
use tokio::time::Instant;

use super::connection::{Expect, MetaReply, Mode, Reply, Request};
use super::meta::{self, Code, Command};
use super::pool::Pool;
use super::shard::{Lane, Shard};
use crate::key::{Key, Ttl};
use crate::metrics::CacheMetrics;
use crate::store::budget::Reservation;

/// Admits fallback reads: one per key at a time, `rate` per second.
#[derive(Debug)]
pub struct Fallbacks {
    rate: f64,
    bucket: Mutex<(f64, Instant)>,
    in_flight: Mutex<HashSet<Key>>,
}

/// A fallback read admitted for one key; the key is free again on drop.
pub struct Admitted<'a> {
    fallbacks: &'a Fallbacks,
    key: Key,
}

impl Drop for Admitted<'_> {
    fn drop(&mut self) {
        lock(&self.fallbacks.in_flight).remove(&self.key);
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Fallbacks {
    /// At most `rate` fallback reads per second (bursts of up to `rate`).
    pub fn new(rate: u32) -> Fallbacks {
        let rate = f64::from(rate.max(1));
        Fallbacks {
            rate,
            bucket: Mutex::new((rate, Instant::now())),
            in_flight: Mutex::new(HashSet::new()),
        }
    }

    /// Admits a fallback read of `key`, unless one is in flight for it or
    /// the rate is spent.
    pub fn admit(&self, key: &Key) -> Option<Admitted<'_>> {
        {
            let mut bucket = lock(&self.bucket);
            let now = Instant::now();
            let refill = now.duration_since(bucket.1).as_secs_f64() * self.rate;
            bucket.0 = (bucket.0 + refill).min(self.rate);
            bucket.1 = now;
            if bucket.0 < 1.0 {
                return None;
            }
            if !lock(&self.in_flight).insert(key.clone()) {
                return None;
            }
            bucket.0 -= 1.0;
        }
        Some(Admitted {
            fallbacks: self,
            key: key.clone(),
        })
    }
}

/// The previous owner of `key` when it differs from the current one and
/// the window is open.
pub fn previous_owner(pool: &Pool, key: &str) -> Option<Arc<Shard>> {
    let previous = pool.previous()?.owner(key)?;
    let now = pool.now.owner(key)?;
    (previous.addr() != now.addr()).then(|| previous.clone())
}

/// After a miss on `key`'s current owner: reads it from its previous
/// owner and copies it to `owner`. `None` when there is nothing to find
/// there (or the fallback was not admitted); errors count as misses, the
/// key having been a miss already.
pub async fn fall_back(
    pool: &Pool,
    owner: &Shard,
    key: &Key,
    budget: &Arc<Reservation>,
    fallbacks: &Fallbacks,
    metrics: &CacheMetrics,
) -> Option<Bytes> {
    let previous = previous_owner(pool, key.as_str())?;
    if previous.addr() == owner.addr() || previous.is_down() {
        return None;
    }
    let _admitted = fallbacks.admit(key)?;
    metrics.rebalance_fallback_reads.inc();
    let (value, ttl) = read_with_ttl(&previous, key, budget).await?;
    metrics.rebalance_fallback_hits.inc();
    if let Some(ttl) = ttl
        && copy(owner, key, &value, ttl).await
    {
        metrics.rebalance_copies.inc();
    }
    Some(value)
}

/// Reads `key` and its remaining TTL (`None` when the server cannot tell:
/// the text protocol).
async fn read_with_ttl(
    shard: &Shard,
    key: &Key,
    budget: &Arc<Reservation>,
) -> Option<(Bytes, Option<Ttl>)> {
    let conn = shard.connection(Lane::Single).await.ok()?;
    if conn.mode() != Mode::Meta {
        return None;
    }
    let max_value = shard.max_reply_value();
    let req = || Request {
        encode: |buf: &mut BytesMut, token| {
            Command::new(buf, b"mg", key.as_str())
                .flag(b'v')
                .flag(b't')
                .flag(b'k')
                .token(token)
                .finish()
        },
        tokens: 1,
        expect: Expect::One(key.clone()),
        max_value,
        budget: Some(budget.clone()),
    };
    match shard.read(Lane::Single, &conn, req).await {
        Ok(Reply::Meta(MetaReply {
            code: Code::Value,
            value: Some(value),
            flags,
        })) => {
            // `t-1`: the item never expires.
            let ttl = match flags.ttl {
                Some(t) if t > 0 => Some(Ttl::from_secs(t as u32)),
                Some(_) => Some(Ttl::from_secs(0)),
                None => None,
            };
            Some((value, ttl))
        }
        Ok(_) => None,
        Err(e) => {
            tracing::debug!(shard = %shard.addr(), error = %e, "rebalance fallback read failed");
            None
        }
    }
}

/// Adds `value` under `key` on `shard` unless the key exists there (a
/// newer write wins); true if it was stored.
async fn copy(shard: &Shard, key: &Key, value: &Bytes, ttl: Ttl) -> bool {
    let Ok(conn) = shard.connection(Lane::Single).await else {
        return false;
    };
    if conn.mode() != Mode::Meta {
        return false;
    }
    let exptime = ttl.memcached_exptime(SystemTime::now());
    let req = Request {
        encode: |buf: &mut BytesMut, token| {
            // `ME`: mode add.
            Command::new(buf, b"ms", key.as_str())
                .arg(value.len() as u64)
                .flag_num(b'T', exptime)
                .flag_mode(b'M', b'E')
                .flag(b'k')
                .token(token)
                .finish_with_data(value)
        },
        tokens: 1,
        expect: Expect::One(key.clone()),
        max_value: 0,
        budget: None,
    };
    matches!(
        shard.call(&conn, req).await,
        Ok(Reply::Meta(MetaReply {
            code: Code::Done,
            ..
        }))
    )
}

/// Deletes the previous owners' copies of `keys` (those that moved), so a
/// later fallback cannot return a value written or deleted since.
pub async fn forget_old_copies(pool: &Pool, keys: &[&Key], metrics: &CacheMetrics) {
    if pool.previous().is_none() {
        return;
    }
    let mut by_shard: Vec<(Arc<Shard>, Vec<Key>)> = Vec::new();
    for key in keys {
        let Some(previous) = previous_owner(pool, key.as_str()) else {
            continue;
        };
        match by_shard
            .iter_mut()
            .find(|(s, _)| s.addr() == previous.addr())
        {
            Some((_, keys)) => keys.push((*key).clone()),
            None => by_shard.push((previous, vec![(*key).clone()])),
        }
    }
    let deletes = by_shard.into_iter().map(|(shard, keys)| async move {
        let n = keys.len() as u64;
        if let Err(e) = delete_quietly(&shard, keys).await {
            metrics.rebalance_stale_deletes_failed.inc_by(n);
            tracing::warn!(shard = %shard.addr(), error = %e, "could not delete the previous server's copies of moved keys");
        }
    });
    futures::future::join_all(deletes).await;
}

async fn delete_quietly(shard: &Shard, keys: Vec<Key>) -> Result<(), crate::error::Error> {
    let conn = shard.connection(Lane::Bulk).await?;
    if conn.mode() != Mode::Meta {
        return Ok(());
    }
    let keys: Arc<[Key]> = keys.into();
    let req = Request {
        encode: |buf: &mut BytesMut, token: u32| {
            for (i, k) in keys.iter().enumerate() {
                meta::encode_delete(buf, k.as_str(), token.wrapping_add(i as u32), true);
            }
            meta::encode_noop(buf);
        },
        tokens: keys.len() as u32,
        expect: Expect::Quiet(keys.clone()),
        max_value: 0,
        budget: None,
    };
    shard.call(&conn, req).await.map(|_| ())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(k: &str) -> Key {
        Key::parse(k).unwrap()
    }

    #[tokio::test(start_paused = true)]
    async fn one_fallback_per_key_at_a_time_and_rate_limited() {
        let f = Fallbacks::new(3);
        let a = f.admit(&key("a")).expect("first read of a");
        assert!(
            f.admit(&key("a")).is_none(),
            "a second read of a waits its turn"
        );
        let b = f.admit(&key("b")).expect("b");
        let c = f.admit(&key("c")).expect("c");
        assert!(f.admit(&key("d")).is_none(), "three per second");
        drop((a, b, c));
        assert!(f.admit(&key("a")).is_none(), "the rate is still spent");
        tokio::time::advance(std::time::Duration::from_millis(400)).await;
        assert!(f.admit(&key("a")).is_some(), "refilled");
    }
}
