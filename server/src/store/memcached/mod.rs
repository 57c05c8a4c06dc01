//! The sharded memcached store: each key lives on the one server the ring
//! picks for it.
//!
//! Single-key calls are one command on one shard. Batch calls group keys by
//! shard and send one multi-key `get` per shard (in chunks, pipelined), so a
//! batch costs a round trip per shard rather than per key; a shard that
//! fails only fails its own keys. List fans `lru_crawler metadump hash` out
//! to every shard, one dump per shard at a time.

pub mod connection;
pub mod protocol;
pub mod ring;
pub mod shard;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::{Bytes, BytesMut};
use futures::StreamExt;
use futures::future::join_all;

use self::protocol::{Decoder, DumpWalk, Reply};
use self::ring::{Ring, ShardSpec};
use self::shard::{PoolSettings, Shard};
use super::{Item, Reachability, Store};
use crate::error::Error;
use crate::key::Key;

/// Keys per `get` command; bigger batches are split and pipelined.
const GET_CHUNK: usize = 100;
/// Writes in flight at once for one batch.
const WRITE_CONCURRENCY: usize = 256;
/// How long List waits for a shard's crawler — its turn among this
/// server's Lists, then retries while memcached answers BUSY (it runs one
/// crawl at a time, and crawls on its own to reclaim expired items) — and
/// the first wait between tries (doubling up to the cap).
const LIST_BUSY_PATIENCE: Duration = Duration::from_secs(3);
const LIST_BUSY_BACKOFF: Duration = Duration::from_millis(10);
const LIST_BUSY_BACKOFF_MAX: Duration = Duration::from_millis(200);
/// A key dump can be long; it gets this many times the normal timeout.
const LIST_TIMEOUT_FACTOR: u32 = 10;

/// A pool of memcached servers behind a consistent-hash ring.
#[derive(Debug)]
pub struct ShardedStore {
    ring: Ring,
    shards: Vec<Arc<Shard>>,
    /// One per shard: held for a key dump, so this server sends a shard at
    /// most one dump at a time (memcached would answer the others BUSY).
    dump_turns: Vec<tokio::sync::Mutex<()>>,
    max_value_bytes: usize,
    list_timeout: Duration,
    on_down: OnShardDown,
}

/// What happens to the keys of a shard that is marked down.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum OnShardDown {
    /// Calls for its keys fail fast with UNAVAILABLE (the default: no key
    /// ever has two homes).
    #[default]
    Fail,
    /// Its keys go to the next live shard on the ring. Reads there miss
    /// until rewritten, and when the shard returns, writes made meanwhile
    /// are left behind on the stand-in (as with twemproxy's
    /// auto_eject_hosts).
    Reroute,
}

impl ShardedStore {
    /// A store over `shards` (at least one). Nothing connects until used.
    pub fn new(
        shards: &[ShardSpec],
        settings: PoolSettings,
        max_value_bytes: usize,
        on_down: OnShardDown,
    ) -> Self {
        assert!(
            !shards.is_empty(),
            "a sharded store needs at least one shard"
        );
        let list_timeout = settings.timeout * LIST_TIMEOUT_FACTOR;
        ShardedStore {
            ring: Ring::new(shards),
            shards: shards
                .iter()
                .map(|s| Arc::new(Shard::new(s.addr.clone(), settings.clone())))
                .collect(),
            dump_turns: shards.iter().map(|_| tokio::sync::Mutex::new(())).collect(),
            max_value_bytes,
            list_timeout,
            on_down,
        }
    }

    /// The index of the shard that serves `key` now: its owner, or with
    /// [`OnShardDown::Reroute`] the next live shard while the owner is down.
    fn route(&self, key: &str) -> usize {
        let owner = self.ring.shard_for(key);
        if self.on_down == OnShardDown::Fail || !self.shards[owner].is_down() {
            return owner;
        }
        self.ring
            .candidates(key)
            .find(|&i| !self.shards[i].is_down())
            .unwrap_or(owner)
    }

    /// The shard that serves `key` now.
    pub fn shard_for(&self, key: &str) -> &Shard {
        &self.shards[self.route(key)]
    }

    /// One `get` of distinct `keys` on `shard`.
    async fn get_chunk(shard: &Shard, keys: Vec<String>) -> Result<Vec<(String, Bytes)>, Error> {
        let mut cmd = BytesMut::new();
        protocol::encode_get(&mut cmd, &keys);
        let decoder = Decoder::get(keys, shard.max_reply_value());
        match shard.request(cmd.freeze(), decoder).await? {
            Reply::Values(values) => Ok(values),
            other => Err(unexpected(shard, other)),
        }
    }

    /// Lists one shard with a hash-table walk, falling back to an LRU walk
    /// on a memcached too old to know it.
    async fn list_shard(
        &self,
        index: usize,
        prefix: &str,
        limit: usize,
    ) -> Result<Vec<String>, Error> {
        match self.dump_shard(index, DumpWalk::Hash, prefix, limit).await {
            Err(Error::ShardError { message, .. }) if message.contains("rejected") => {
                let shard = self.shards[index].addr();
                tracing::debug!(%shard, %message, "no hash walk; using the LRU walk");
                self.dump_shard(index, DumpWalk::Lru, prefix, limit).await
            }
            other => other,
        }
    }

    /// Dumps one shard's keys once it is this List's turn, retrying while
    /// the shard's crawler is busy; both waits share the list patience.
    async fn dump_shard(
        &self,
        index: usize,
        walk: DumpWalk,
        prefix: &str,
        limit: usize,
    ) -> Result<Vec<String>, Error> {
        let shard = &self.shards[index];
        let busy = || Error::ListBusy {
            addr: shard.addr().to_owned(),
            waited: LIST_BUSY_PATIENCE,
        };
        let mut backoff = LIST_BUSY_BACKOFF;
        let give_up = tokio::time::Instant::now() + LIST_BUSY_PATIENCE;
        // Held across BUSY retries too: the Lists waiting here would only
        // meet the same busy crawler.
        let Ok(_turn) = tokio::time::timeout_at(give_up, self.dump_turns[index].lock()).await
        else {
            return Err(busy());
        };
        while tokio::time::Instant::now() < give_up {
            let mut cmd = BytesMut::new();
            protocol::encode_metadump(&mut cmd, walk);
            let now = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_secs() as i64);
            let decoder = Decoder::metadump(prefix.to_owned(), limit, now);
            match shard
                .request_alone(cmd.freeze(), decoder, self.list_timeout)
                .await?
            {
                Reply::Keys { keys, skipped } => {
                    if skipped > 0 {
                        tracing::debug!(
                            shard = %shard.addr(),
                            skipped,
                            "List skipped keys that are not UTF-8 (written by another client); they cannot be returned as strings"
                        );
                    }
                    return Ok(keys);
                }
                Reply::Busy(_) => {
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(LIST_BUSY_BACKOFF_MAX);
                }
                other => return Err(unexpected(shard, other)),
            }
        }
        Err(busy())
    }
}

fn unexpected(shard: &Shard, reply: Reply) -> Error {
    let message = match reply {
        Reply::ServerError(m) => m,
        Reply::NotStored => "NOT_STORED".to_owned(),
        other => format!("unexpected reply {other:?}"),
    };
    Error::ShardError {
        addr: shard.addr().to_owned(),
        message,
    }
}

impl Store for ShardedStore {
    async fn get(&self, key: &Key) -> Result<Option<Bytes>, Error> {
        let shard = self.shard_for(key.as_str());
        let values = Self::get_chunk(shard, vec![key.to_string()]).await?;
        Ok(values.into_iter().next().map(|(_, v)| v))
    }

    async fn set(&self, item: Item) -> Result<(), Error> {
        let shard = self.shard_for(item.key.as_str());
        let mut cmd = BytesMut::new();
        let exptime = item.ttl.memcached_exptime(SystemTime::now());
        protocol::encode_set(&mut cmd, item.key.as_str(), exptime, &item.value);
        match shard.request(cmd.freeze(), Decoder::store()).await? {
            Reply::Stored => Ok(()),
            other => Err(unexpected(shard, other)),
        }
    }

    async fn delete(&self, key: &Key) -> Result<bool, Error> {
        let shard = self.shard_for(key.as_str());
        let mut cmd = BytesMut::new();
        protocol::encode_delete(&mut cmd, key.as_str());
        match shard.request(cmd.freeze(), Decoder::delete()).await? {
            Reply::Deleted => Ok(true),
            Reply::NotFound => Ok(false),
            other => Err(unexpected(shard, other)),
        }
    }

    async fn get_many(&self, keys: &[Key]) -> Vec<Result<Option<Bytes>, Error>> {
        let routes: Vec<usize> = keys.iter().map(|k| self.route(k.as_str())).collect();
        let mut groups: HashMap<usize, Vec<usize>> = HashMap::new();
        for (i, &shard) in routes.iter().enumerate() {
            groups.entry(shard).or_default().push(i);
        }
        let mut requests = Vec::new();
        for (shard_index, indexes) in groups {
            let shard = &self.shards[shard_index];
            // memcached answers a repeated key twice; ask for each once.
            let mut distinct: Vec<String> = indexes.iter().map(|&i| keys[i].to_string()).collect();
            distinct.sort_unstable();
            distinct.dedup();
            for chunk in distinct.chunks(GET_CHUNK) {
                let chunk = chunk.to_vec();
                requests.push(async move { (shard_index, Self::get_chunk(shard, chunk).await) });
            }
        }
        let mut found: HashMap<String, Bytes> = HashMap::new();
        let mut failed: HashMap<usize, Error> = HashMap::new();
        for (shard_index, outcome) in join_all(requests).await {
            match outcome {
                Ok(values) => found.extend(values),
                Err(e) => {
                    failed.entry(shard_index).or_insert(e);
                }
            }
        }
        keys.iter()
            .zip(routes)
            .map(|(k, shard)| match failed.get(&shard) {
                Some(e) => Err(e.clone()),
                None => Ok(found.get(k.as_str()).cloned()),
            })
            .collect()
    }

    async fn set_many(&self, items: Vec<Item>) -> Vec<Result<(), Error>> {
        futures::stream::iter(items)
            .map(|item| self.set(item))
            .buffered(WRITE_CONCURRENCY)
            .collect()
            .await
    }

    async fn delete_many(&self, keys: &[Key]) -> Vec<Result<bool, Error>> {
        futures::stream::iter(keys.to_vec())
            .map(|key| async move { self.delete(&key).await })
            .buffered(WRITE_CONCURRENCY)
            .collect()
            .await
    }

    async fn list(&self, prefix: &str, limit: usize) -> Result<Vec<String>, Error> {
        let per_shard =
            join_all((0..self.shards.len()).map(|index| self.list_shard(index, prefix, limit)))
                .await;
        let mut keys = Vec::new();
        for shard_keys in per_shard {
            keys.extend(shard_keys?);
        }
        keys.sort_unstable();
        keys.dedup();
        keys.truncate(limit);
        Ok(keys)
    }

    async fn probe(&self) -> Reachability {
        let results = join_all(self.shards.iter().map(|s| s.probe())).await;
        let shards: Vec<(String, bool)> = self
            .shards
            .iter()
            .zip(&results)
            .map(|(s, r)| (s.addr().to_owned(), r.is_ok()))
            .collect();
        Reachability {
            up: shards.iter().filter(|(_, ok)| *ok).count(),
            total: self.shards.len(),
            shards,
        }
    }

    fn max_value_len(&self, key: &Key) -> (usize, String) {
        let shard = self.shard_for(key.as_str());
        let shard_max = shard.max_value_len(key.len());
        if shard_max < self.max_value_bytes {
            let limit = format!(
                "shard {} has item_size_max {} bytes, which includes {} bytes of item header and the key",
                shard.addr(),
                shard
                    .item_size_max()
                    .unwrap_or(shard::DEFAULT_ITEM_SIZE_MAX),
                shard::ITEM_OVERHEAD
            );
            (shard_max, limit)
        } else {
            (self.max_value_bytes, "--max-value-bytes".to_owned())
        }
    }

    fn describe(&self) -> String {
        let addrs: Vec<&str> = self.shards.iter().map(|s| s.addr()).collect();
        format!(
            "memcached pool of {} shards [{}]",
            self.shards.len(),
            addrs.join(", ")
        )
    }
}
