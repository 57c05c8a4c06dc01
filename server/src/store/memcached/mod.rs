//! The sharded memcached store: each key lives on the one server the ring
//! picks for it.
//!
//! Single-key calls are one meta command on one shard; concurrent Gets of
//! the same key share one read ([`singleflight`]). Batch calls drop
//! duplicate keys, group the rest by shard and send each group as
//! pipelined quiet commands closed by one `mn` (in chunks), so a batch
//! costs a round trip per shard rather than per key, and a shard that
//! fails only fails its own keys. Servers without the meta protocol get
//! the text protocol's equivalents. List fans `lru_crawler metadump hash` out
//! to every shard, one dump per shard at a time.

pub mod connection;
pub mod ketama;
pub mod meta;
pub mod pool;
pub mod protocol;
pub mod rebalance;
pub mod ring;
pub mod shard;
pub mod singleflight;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::{Bytes, BytesMut};
use futures::StreamExt;
use futures::future::join_all;

use self::connection::{Connection, Expect, MetaReply, Mode, Reply, Request};
use self::meta::Code;
use self::pool::{Change, Membership, Pool};
use self::protocol::{Decoder, DumpWalk};
use self::rebalance::Fallbacks;
use self::ring::{Placement, ShardSpec};
use self::shard::{Lane, PoolSettings, Shard};
use self::singleflight::Flights;
use super::budget::Reservation;
use super::{
    BackendStats, Condition, Found, Increment, Item, Lease, Reachability, ReadOptions, ShardReport,
    Store,
};
use crate::config::Rebalance;
use crate::error::Error;
use crate::key::{Key, Ttl};
use crate::metrics::{CacheMetrics, Metrics};

/// Keys per pipelined batch on one connection; bigger groups are split
/// and sent concurrently.
const BATCH_CHUNK: usize = 100;
/// Writes in flight at once for one batch on a text-protocol server.
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

type GetOutcome = Result<Option<Bytes>, Error>;

/// A pool of memcached servers behind a consistent-hash ring, whose
/// membership can change while it serves ([`pool`]).
#[derive(Debug)]
pub struct ShardedStore {
    members: Arc<Membership>,
    max_value_bytes: usize,
    list_timeout: Duration,
    on_down: OnShardDown,
    flights: Flights<Result<Found, Error>>,
    fallbacks: Fallbacks,
    metrics: CacheMetrics,
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
    /// A store over `shards` (possibly none yet). Nothing connects until
    /// used. After a membership change ([`ShardedStore::update`]) the
    /// previous placement stays readable for `rebalance.window`.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        shards: &[ShardSpec],
        settings: PoolSettings,
        placement: Placement,
        max_value_bytes: usize,
        on_down: OnShardDown,
        metrics: &Arc<Metrics>,
        rebalance: Rebalance,
    ) -> Self {
        let list_timeout = settings.timeout * LIST_TIMEOUT_FACTOR;
        ShardedStore {
            members: Arc::new(Membership::new(
                shards,
                settings,
                placement,
                metrics.clone(),
                rebalance.window,
            )),
            max_value_bytes,
            list_timeout,
            on_down,
            flights: Flights::default(),
            fallbacks: Fallbacks::new(rebalance.fallback_rate),
            metrics: metrics.cache.clone(),
        }
    }

    /// Moves the pool to `shards` while it serves (see [`Membership::update`]).
    pub async fn update(&self, shards: &[ShardSpec]) -> Change {
        self.members.update(shards).await
    }

    /// Follows the server lists `lists` sends (a membership source) until
    /// it closes; servers that do not answer yet are retried every `retry`.
    pub fn follow(
        &self,
        lists: tokio::sync::watch::Receiver<Vec<ShardSpec>>,
        retry: Duration,
    ) -> impl std::future::Future<Output = ()> + Send + 'static {
        pool::follow(self.members.clone(), lists, retry)
    }

    /// The shard that serves `key` now in `pool`.
    fn shard_in(&self, pool: &Pool, key: &str) -> Result<Arc<Shard>, Error> {
        pool.now
            .route(key, self.on_down)
            .map(|i| pool.now.shards[i].clone())
            .ok_or_else(pool::no_servers)
    }

    /// The shard that serves `key` now.
    pub fn shard_for(&self, key: &str) -> Result<Arc<Shard>, Error> {
        self.shard_in(&self.members.load(), key)
    }

    /// Reads one key from its shard (or, after a pool change, its
    /// previous shard: [`rebalance`]).
    async fn read_one(&self, key: &Key, budget: &Arc<Reservation>) -> Result<Found, Error> {
        let pool = self.members.load();
        let shard = self.shard_in(&pool, key.as_str())?;
        crate::trace::record_shard(shard.addr());
        let found = Self::read_from(&shard, key, ReadOptions::default(), budget).await?;
        if found.value.is_none() && found.lease == Lease::None && pool.previous().is_some() {
            let value =
                rebalance::fall_back(&pool, &shard, key, budget, &self.fallbacks, &self.metrics)
                    .await;
            return Ok(Found { value, ..found });
        }
        Ok(found)
    }

    /// Reads one key from `shard` with its metadata, touching it or taking
    /// a lease as `opts` asks. A read that changes something is sent once:
    /// repeating it could hand its lease to nobody.
    async fn read_from(
        shard: &Shard,
        key: &Key,
        opts: ReadOptions,
        budget: &Arc<Reservation>,
    ) -> Result<Found, Error> {
        let conn = shard.connection(Lane::Single).await?;
        let max_value = shard.max_reply_value();
        let budget = Some(budget.clone());
        if conn.mode() == Mode::Text {
            if !opts.is_plain() {
                return Err(Error::Unsupported {
                    addr: shard.addr().to_owned(),
                    what: "a Get with touch_ttl_seconds or lease_ttl_seconds",
                });
            }
            let req = Request {
                encode: |buf: &mut BytesMut, _| protocol::encode_get(buf, &[key.as_str()]),
                tokens: 1,
                expect: Expect::Text(Decoder::get(vec![key.to_string()], max_value)),
                max_value,
                budget,
            };
            return match shard.call(&conn, req).await? {
                Reply::Text(protocol::Reply::Values(values)) => Ok(Found {
                    value: values.into_iter().next().map(|(_, v)| v),
                    ..Found::miss()
                }),
                other => Err(unexpected(shard, other)),
            };
        }
        let now = SystemTime::now();
        let lease = opts.lease.map(|ttl| ttl.memcached_exptime(now));
        let touch = opts.touch.map(|ttl| ttl.memcached_exptime(now));
        let req = || Request {
            encode: |buf: &mut BytesMut, token| {
                meta::encode_read(buf, key.as_str(), token, lease, touch)
            },
            tokens: 1,
            expect: Expect::One(key.clone()),
            max_value,
            budget: budget.clone(),
        };
        let reply = match opts.is_plain() {
            true => shard.read(Lane::Single, &conn, req).await?,
            false => shard.call(&conn, req()).await?,
        };
        match reply {
            Reply::Meta(
                reply @ MetaReply {
                    code: Code::Value, ..
                },
            ) => {
                let (found, hand_back) = found_in(reply, opts.lease.is_some());
                if let Some(cas) = hand_back {
                    Self::hand_back(shard, key, cas).await;
                }
                Ok(found)
            }
            Reply::Meta(MetaReply {
                code: Code::Miss, ..
            }) => Ok(Found::miss()),
            other => Err(unexpected(shard, other)),
        }
    }

    /// Gives back the refresh lease of a stale item that a read without a
    /// lease was handed (memcached elects whoever reads it first), so a
    /// reader that asks for it gets it. Best effort: if this fails, the
    /// item is refreshed by its next writer or expires after --stale-ttl.
    async fn hand_back(shard: &Shard, key: &Key, cas: u64) {
        let outcome = async {
            let conn = shard.connection(Lane::Single).await?;
            let req = Request::meta_one(key, |buf: &mut BytesMut, token| {
                meta::encode_hand_back(buf, key.as_str(), cas, token)
            });
            shard.call(&conn, req).await
        };
        match outcome.await {
            // Done, or the item changed since (a refresh already happened).
            Ok(Reply::Meta(MetaReply {
                code: Code::Done | Code::Exists | Code::NotFound,
                ..
            })) => {}
            Ok(other) => {
                tracing::debug!(shard = %shard.addr(), key = %key, reply = other.kind(), "stale lease not handed back")
            }
            Err(e) => {
                tracing::debug!(shard = %shard.addr(), key = %key, error = %e, "stale lease not handed back")
            }
        }
    }

    /// Reads distinct `keys` of one shard as one pipelined batch; one
    /// outcome per key, in order.
    async fn read_group(
        shard: &Shard,
        keys: Vec<Key>,
        budget: &Arc<Reservation>,
    ) -> Result<Vec<GetOutcome>, Error> {
        let conn = shard.connection(Lane::Bulk).await?;
        let max_value = shard.max_reply_value();
        let budget = Some(budget.clone());
        let keys: Arc<[Key]> = keys.into();
        match conn.mode() {
            Mode::Meta => {
                let encode = |buf: &mut BytesMut, token: u32| {
                    for (i, k) in keys.iter().enumerate() {
                        meta::encode_get(buf, k.as_str(), token.wrapping_add(i as u32), true);
                    }
                    meta::encode_noop(buf);
                };
                let mut out = vec![Ok(None); keys.len()];
                let req = || Request {
                    encode,
                    tokens: keys.len() as u32,
                    expect: Expect::Quiet(keys.clone()),
                    max_value,
                    budget: budget.clone(),
                };
                let Reply::Quiet {
                    replies,
                    server_error,
                } = shard.read(Lane::Bulk, &conn, req).await?
                else {
                    unreachable!("a quiet batch gets a quiet reply")
                };
                if let Some(message) = server_error {
                    // It names no key: every key without a value failed.
                    let err = Error::ShardError {
                        addr: shard.addr().to_owned(),
                        message,
                    };
                    out.fill(Err(err));
                }
                let mut hand_backs = Vec::new();
                for (i, r) in replies {
                    out[i] = match r {
                        r @ MetaReply {
                            code: Code::Value, ..
                        } => {
                            let (found, hand_back) = found_in(r, false);
                            if let Some(cas) = hand_back {
                                hand_backs.push(Self::hand_back(shard, &keys[i], cas));
                            }
                            Ok(found.value)
                        }
                        other => Err(unexpected(shard, Reply::Meta(other))),
                    };
                }
                join_all(hand_backs).await;
                Ok(out)
            }
            Mode::Text => {
                let names: Vec<String> = keys.iter().map(|k| k.to_string()).collect();
                let req = Request {
                    encode: |buf: &mut BytesMut, _| protocol::encode_get(buf, &names),
                    tokens: 1,
                    expect: Expect::Text(Decoder::get(names.clone(), max_value)),
                    max_value,
                    budget,
                };
                match shard.call(&conn, req).await? {
                    Reply::Text(protocol::Reply::Values(values)) => {
                        let mut found: HashMap<String, Bytes> = values.into_iter().collect();
                        Ok(names.iter().map(|k| Ok(found.remove(k))).collect())
                    }
                    other => Err(unexpected(shard, other)),
                }
            }
        }
    }

    /// Writes or deletes items of one shard as one pipelined quiet batch
    /// (meta servers only); one outcome per item, in order: `Ok(true)`
    /// done, `Ok(false)` not found (deletes).
    async fn write_group(
        shard: &Shard,
        conn: &Connection,
        op: WriteGroup,
    ) -> Result<Vec<Result<bool, Error>>, Error> {
        let keys = op.keys();
        let n = keys.len();
        let now = SystemTime::now();
        let encode = |buf: &mut BytesMut, token: u32| {
            match &op {
                WriteGroup::Set(items) => {
                    for (i, item) in items.iter().enumerate() {
                        let exptime = item.ttl.memcached_exptime(now);
                        let token = token.wrapping_add(i as u32);
                        let (key, value) = (item.key.as_str(), &item.value);
                        meta::encode_set(buf, key, exptime, value, item.condition, token, true);
                    }
                }
                WriteGroup::Delete(keys) => {
                    for (i, k) in keys.iter().enumerate() {
                        meta::encode_delete(buf, k.as_str(), token.wrapping_add(i as u32), true);
                    }
                }
            }
            meta::encode_noop(buf);
        };
        let req = Request {
            encode,
            tokens: n as u32,
            expect: Expect::Quiet(keys),
            max_value: 0,
            budget: None,
        };
        let Reply::Quiet {
            replies,
            server_error,
        } = shard.call(conn, req).await?
        else {
            unreachable!("a quiet batch gets a quiet reply")
        };
        // Quiet mode answers only what did not succeed.
        let mut out: Vec<Result<bool, Error>> = match server_error {
            Some(message) => vec![
                Err(Error::ShardError {
                    addr: shard.addr().to_owned(),
                    message: format!("{message} (the outcome for this key is unknown; retry it)"),
                });
                n
            ],
            None => vec![Ok(true); n],
        };
        for (i, r) in replies {
            out[i] = match (&op, r.code) {
                (WriteGroup::Delete(_), Code::NotFound) => Ok(false),
                (_, Code::Done) => Ok(true),
                (WriteGroup::Set(items), Code::NotStored | Code::Exists | Code::NotFound)
                    if items[i].condition != Condition::Always =>
                {
                    let item = &items[i];
                    Err(item.condition.failed(&item.key, r.code == Code::NotFound))
                }
                _ => Err(unexpected(shard, Reply::Meta(r))),
            };
        }
        Ok(out)
    }

    /// Runs writes or deletes through [`Self::write_group`] per shard and
    /// chunk, or one by one on text-protocol servers.
    async fn write_many(&self, pool: &Pool, op: WriteGroup) -> Vec<Result<bool, Error>> {
        let n = op.len();
        if pool.now.shards.is_empty() {
            return vec![Err(pool::no_servers()); n];
        }
        let mut groups: HashMap<usize, Vec<usize>> = HashMap::new();
        for i in 0..n {
            let shard = pool.now.route(op.key(i).as_str(), self.on_down);
            groups
                .entry(shard.expect("the pool has servers"))
                .or_default()
                .push(i);
        }
        let mut out: Vec<Option<Result<bool, Error>>> = vec![None; n];
        let mut requests = Vec::new();
        for (shard_index, indexes) in groups {
            let shard = &pool.now.shards[shard_index];
            for chunk in indexes.chunks(BATCH_CHUNK) {
                let part = op.select(chunk);
                let chunk = chunk.to_vec();
                requests.push(async move {
                    let outcome = match shard.connection(Lane::Bulk).await {
                        Ok(conn) if conn.mode() == Mode::Meta => {
                            Self::write_group(shard, &conn, part).await
                        }
                        Ok(_) => Ok(Self::write_each(shard, part).await),
                        Err(e) => Err(e),
                    };
                    (chunk, outcome)
                });
            }
        }
        for (chunk, outcome) in join_all(requests).await {
            match outcome {
                Ok(results) => {
                    for (i, r) in chunk.into_iter().zip(results) {
                        out[i] = Some(r);
                    }
                }
                Err(e) => {
                    for i in chunk {
                        out[i] = Some(Err(e.clone()));
                    }
                }
            }
        }
        out.into_iter()
            .map(|r| r.expect("every item has an outcome"))
            .collect()
    }

    /// Text-protocol servers take one request at a time per connection.
    async fn write_each(shard: &Shard, op: WriteGroup) -> Vec<Result<bool, Error>> {
        match op {
            WriteGroup::Set(items) => {
                futures::stream::iter(items)
                    .map(|item| async move { Self::set_on(shard, &item).await.map(|_| true) })
                    .buffered(WRITE_CONCURRENCY)
                    .collect()
                    .await
            }
            WriteGroup::Delete(keys) => {
                futures::stream::iter(keys)
                    .map(|key| async move { Self::delete_on(shard, &key).await })
                    .buffered(WRITE_CONCURRENCY)
                    .collect()
                    .await
            }
        }
    }

    /// One write, in whichever protocol the shard speaks: the item's new
    /// CAS token (0 from a text-protocol server), or
    /// [`Error::ConditionFailed`]. Text-protocol servers take only
    /// unconditional writes here.
    async fn set_on(shard: &Shard, item: &Item) -> Result<u64, Error> {
        let conn = shard.connection(Lane::Single).await?;
        let key = &item.key;
        let exptime = item.ttl.memcached_exptime(SystemTime::now());
        let reply = match conn.mode() {
            Mode::Meta => {
                let req = Request::meta_one(key, |buf: &mut BytesMut, token| {
                    let (k, v) = (key.as_str(), &item.value);
                    meta::encode_set(buf, k, exptime, v, item.condition, token, false)
                });
                shard.call(&conn, req).await?
            }
            Mode::Text if item.condition != Condition::Always => {
                return Err(Error::Unsupported {
                    addr: shard.addr().to_owned(),
                    what: "a conditional Set",
                });
            }
            Mode::Text => {
                let req = Request {
                    encode: |buf: &mut BytesMut, _| {
                        protocol::encode_set(buf, key.as_str(), exptime, &item.value)
                    },
                    tokens: 1,
                    expect: Expect::Text(Decoder::store()),
                    max_value: 0,
                    budget: None,
                };
                shard.call(&conn, req).await?
            }
        };
        match reply {
            Reply::Meta(MetaReply {
                code: Code::Done,
                flags,
                ..
            }) => Ok(flags.cas.unwrap_or(0)),
            Reply::Text(protocol::Reply::Stored) => Ok(0),
            Reply::Meta(MetaReply {
                code: code @ (Code::NotStored | Code::Exists | Code::NotFound),
                ..
            }) if item.condition != Condition::Always => {
                Err(item.condition.failed(key, code == Code::NotFound))
            }
            other => Err(unexpected(shard, other)),
        }
    }

    /// One delete, or (with `stale_for`) invalidation, in whichever
    /// protocol the shard speaks; `Ok(true)` if the key existed.
    async fn remove_on(shard: &Shard, key: &Key, stale_for: Option<Ttl>) -> Result<bool, Error> {
        let conn = shard.connection(Lane::Single).await?;
        let reply = match (conn.mode(), stale_for) {
            (Mode::Meta, None) => {
                let req = Request::meta_one(key, |buf: &mut BytesMut, token| {
                    meta::encode_delete(buf, key.as_str(), token, false)
                });
                shard.call(&conn, req).await?
            }
            (Mode::Meta, Some(ttl)) => {
                let exptime = ttl.memcached_exptime(SystemTime::now());
                let req = Request::meta_one(key, |buf: &mut BytesMut, token| {
                    meta::encode_invalidate(buf, key.as_str(), exptime, token)
                });
                shard.call(&conn, req).await?
            }
            (Mode::Text, Some(_)) => {
                return Err(Error::Unsupported {
                    addr: shard.addr().to_owned(),
                    what: "an invalidating Delete",
                });
            }
            (Mode::Text, None) => {
                let req = Request {
                    encode: |buf: &mut BytesMut, _| protocol::encode_delete(buf, key.as_str()),
                    tokens: 1,
                    expect: Expect::Text(Decoder::delete()),
                    max_value: 0,
                    budget: None,
                };
                shard.call(&conn, req).await?
            }
        };
        match reply {
            Reply::Meta(MetaReply {
                code: Code::Done, ..
            })
            | Reply::Text(protocol::Reply::Deleted) => Ok(true),
            Reply::Meta(MetaReply {
                code: Code::NotFound,
                ..
            })
            | Reply::Text(protocol::Reply::NotFound) => Ok(false),
            other => Err(unexpected(shard, other)),
        }
    }

    async fn delete_on(shard: &Shard, key: &Key) -> Result<bool, Error> {
        Self::remove_on(shard, key, None).await
    }

    /// One `ma` on `shard`. Text-protocol servers have no `ma` (and their
    /// `incr` cannot create a counter atomically): UNIMPLEMENTED.
    async fn add_delta(shard: &Shard, inc: &Increment) -> Result<u64, Error> {
        let conn = shard.connection(Lane::Single).await?;
        if conn.mode() == Mode::Text {
            return Err(Error::Unsupported {
                addr: shard.addr().to_owned(),
                what: "Increment",
            });
        }
        let key = inc.key.as_str();
        let create = inc
            .initial
            .map(|n| (n, inc.ttl.memcached_exptime(SystemTime::now())));
        let req = Request {
            encode: |buf: &mut BytesMut, token| {
                let (delta, decrement) = (inc.delta.unsigned_abs(), inc.delta < 0);
                meta::encode_arithmetic(buf, key, delta, decrement, create, token)
            },
            tokens: 1,
            expect: Expect::Counter(inc.key.clone()),
            // A 64-bit number in decimal.
            max_value: 20,
            budget: None,
        };
        match shard.call(&conn, req).await? {
            Reply::Meta(MetaReply {
                code: Code::Value,
                value: Some(v),
                ..
            }) => std::str::from_utf8(&v)
                .ok()
                .and_then(|n| n.trim_ascii().parse().ok())
                .ok_or_else(|| Error::ShardError {
                    addr: shard.addr().to_owned(),
                    message: format!("counter value {v:?} is not a number"),
                }),
            Reply::Meta(MetaReply {
                code: Code::NotFound,
                ..
            }) => Err(Error::KeyNotFound {
                key: crate::error::shorten(key),
            }),
            Reply::NonNumeric => Err(Error::NotANumber {
                key: crate::error::shorten(key),
            }),
            other => Err(unexpected(shard, other)),
        }
    }

    /// One touch (`mg` with `T`, no value) on `shard`; text-protocol
    /// servers: UNIMPLEMENTED.
    async fn touch_on(shard: &Shard, key: &Key, ttl: Ttl) -> Result<bool, Error> {
        let conn = shard.connection(Lane::Single).await?;
        if conn.mode() == Mode::Text {
            return Err(Error::Unsupported {
                addr: shard.addr().to_owned(),
                what: "Touch",
            });
        }
        let exptime = ttl.memcached_exptime(SystemTime::now());
        let req = Request::meta_one(key, |buf: &mut BytesMut, token| {
            meta::encode_touch(buf, key.as_str(), exptime, token)
        });
        match shard.call(&conn, req).await? {
            Reply::Meta(MetaReply {
                code: Code::Done, ..
            }) => Ok(true),
            Reply::Meta(MetaReply {
                code: Code::Miss, ..
            }) => Ok(false),
            other => Err(unexpected(shard, other)),
        }
    }

    /// Lists one shard with a hash-table walk, falling back to an LRU walk
    /// on a memcached too old to know it.
    async fn list_shard(
        &self,
        shard: &Shard,
        prefix: &str,
        limit: usize,
    ) -> Result<Vec<String>, Error> {
        match self.dump_shard(shard, DumpWalk::Hash, prefix, limit).await {
            Err(Error::ShardError { message, .. }) if message.contains("rejected") => {
                tracing::debug!(shard = %shard.addr(), %message, "no hash walk; using the LRU walk");
                self.dump_shard(shard, DumpWalk::Lru, prefix, limit).await
            }
            other => other,
        }
    }

    /// Dumps one shard's keys once it is this List's turn, retrying while
    /// the shard's crawler is busy; both waits share the list patience.
    async fn dump_shard(
        &self,
        shard: &Shard,
        walk: DumpWalk,
        prefix: &str,
        limit: usize,
    ) -> Result<Vec<String>, Error> {
        let busy = || Error::ListBusy {
            addr: shard.addr().to_owned(),
            waited: LIST_BUSY_PATIENCE,
        };
        let mut backoff = LIST_BUSY_BACKOFF;
        let give_up = tokio::time::Instant::now() + LIST_BUSY_PATIENCE;
        // Held across BUSY retries too: the Lists waiting here would only
        // meet the same busy crawler.
        let Ok(_turn) = tokio::time::timeout_at(give_up, shard.dump_turn.lock()).await else {
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
                protocol::Reply::Keys { keys, skipped } => {
                    if skipped > 0 {
                        self.metrics.list_keys_skipped.inc_by(skipped as u64);
                        tracing::debug!(
                            shard = %shard.addr(),
                            skipped,
                            "List skipped keys that are not UTF-8 (written by another client); they cannot be returned as strings"
                        );
                    }
                    return Ok(keys);
                }
                protocol::Reply::Busy(_) => {
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(LIST_BUSY_BACKOFF_MAX);
                }
                other => return Err(unexpected(shard, Reply::Text(other))),
            }
        }
        Err(busy())
    }
}

/// What a `VA` reply means: a value or a lease placeholder (a miss), with
/// its metadata; and, when a read that asked for no lease was handed a
/// stale item's anyway, the CAS token to hand it back with.
fn found_in(reply: MetaReply, asked_lease: bool) -> (Found, Option<u64>) {
    let flags = &reply.flags;
    let cas = flags.cas.unwrap_or(0);
    // memcached reports -1 for an item that never expires.
    let ttl_left = flags.ttl.and_then(|t| u32::try_from(t).ok());
    let lease = match (asked_lease, flags.won, flags.held) {
        (true, true, _) => Lease::Won,
        (true, false, true) => Lease::Held,
        _ => Lease::None,
    };
    if !flags.stale && (flags.won || flags.held) {
        // A placeholder: no value yet, only a lease.
        let found = match asked_lease {
            true => Found {
                cas,
                ttl_left,
                lease,
                ..Found::miss()
            },
            false => Found::miss(),
        };
        return (found, None);
    }
    let hand_back = (flags.stale && flags.won && !asked_lease).then_some(cas);
    let found = Found {
        value: reply.value,
        cas,
        ttl_left,
        lease,
        stale: flags.stale,
    };
    (found, hand_back)
}

fn unexpected(shard: &Shard, reply: Reply) -> Error {
    let message = match reply {
        Reply::ServerError(m) | Reply::Text(protocol::Reply::ServerError(m)) => m,
        Reply::Text(protocol::Reply::NotStored)
        | Reply::Meta(MetaReply {
            code: Code::NotStored,
            ..
        }) => "NOT_STORED".to_owned(),
        other => format!("unexpected reply {}", other.kind()),
    };
    Error::ShardError {
        addr: shard.addr().to_owned(),
        message,
    }
}

/// Writes or deletes for one shard.
#[derive(Debug)]
enum WriteGroup {
    Set(Vec<Item>),
    Delete(Vec<Key>),
}

impl WriteGroup {
    fn len(&self) -> usize {
        match self {
            WriteGroup::Set(items) => items.len(),
            WriteGroup::Delete(keys) => keys.len(),
        }
    }

    fn key(&self, i: usize) -> &Key {
        match self {
            WriteGroup::Set(items) => &items[i].key,
            WriteGroup::Delete(keys) => &keys[i],
        }
    }

    fn keys(&self) -> Arc<[Key]> {
        (0..self.len()).map(|i| self.key(i).clone()).collect()
    }

    /// The items at `indexes` (values are shared, not copied).
    fn select(&self, indexes: &[usize]) -> WriteGroup {
        match self {
            WriteGroup::Set(items) => {
                WriteGroup::Set(indexes.iter().map(|&i| items[i].clone()).collect())
            }
            WriteGroup::Delete(keys) => {
                WriteGroup::Delete(indexes.iter().map(|&i| keys[i].clone()).collect())
            }
        }
    }
}

impl Store for ShardedStore {
    async fn get(
        &self,
        key: &Key,
        opts: ReadOptions,
        budget: &Arc<Reservation>,
    ) -> Result<Found, Error> {
        if !opts.is_plain() {
            // It changes the item (a TTL, a lease): never shared, and no
            // fallback to a previous owner, whose copy has no lease.
            self.flights.forget(key);
            let shard = self.shard_for(key.as_str())?;
            crate::trace::record_shard(shard.addr());
            return Self::read_from(&shard, key, opts, budget).await;
        }
        let (found, joined) = self.flights.run(key, || self.read_one(key, budget)).await;
        if joined {
            self.metrics.deduplicated_reads.inc();
        }
        found
    }

    async fn set(&self, item: Item) -> Result<u64, Error> {
        self.flights.forget(&item.key);
        let pool = self.members.load();
        let shard = &self.shard_in(&pool, item.key.as_str())?;
        crate::trace::record_shard(shard.addr());
        let cas = Self::set_on(shard, &item).await?;
        // After the write: a fallback racing it can only `add`, which the
        // new value wins.
        rebalance::forget_old_copies(&pool, &[&item.key], &self.metrics).await;
        Ok(cas)
    }

    async fn delete(&self, key: &Key) -> Result<bool, Error> {
        self.flights.forget(key);
        let pool = self.members.load();
        let shard = &self.shard_in(&pool, key.as_str())?;
        crate::trace::record_shard(shard.addr());
        // Before the delete, so no fallback finds the old copy after it.
        rebalance::forget_old_copies(&pool, &[key], &self.metrics).await;
        Self::delete_on(shard, key).await
    }

    async fn invalidate(&self, key: &Key, stale_for: Ttl) -> Result<bool, Error> {
        self.flights.forget(key);
        let pool = self.members.load();
        let shard = &self.shard_in(&pool, key.as_str())?;
        crate::trace::record_shard(shard.addr());
        // As for Delete: the previous owner's copy must not come back.
        rebalance::forget_old_copies(&pool, &[key], &self.metrics).await;
        Self::remove_on(shard, key, Some(stale_for)).await
    }

    async fn increment(&self, inc: Increment) -> Result<u64, Error> {
        // A write: no Get that starts after it may join an older read.
        self.flights.forget(&inc.key);
        let pool = self.members.load();
        let shard = &self.shard_in(&pool, inc.key.as_str())?;
        let value = Self::add_delta(shard, &inc).await?;
        // As for Set: the previous owner's copy (after a pool change) must
        // not come back through a fallback read.
        rebalance::forget_old_copies(&pool, &[&inc.key], &self.metrics).await;
        Ok(value)
    }

    async fn touch(&self, key: &Key, ttl: Ttl) -> Result<bool, Error> {
        self.flights.forget(key);
        let shard = self.shard_for(key.as_str())?;
        Self::touch_on(&shard, key, ttl).await
    }

    async fn get_many(
        &self,
        keys: &[Key],
        budget: &Arc<Reservation>,
    ) -> Result<Vec<GetOutcome>, Error> {
        let pool = self.members.load();
        if pool.now.shards.is_empty() {
            return Ok(vec![Err(pool::no_servers()); keys.len()]);
        }
        // Each distinct key is read once, however often it is asked for.
        let mut slot_of: HashMap<&Key, usize> = HashMap::with_capacity(keys.len());
        let mut groups: HashMap<usize, Vec<usize>> = HashMap::new();
        let mut distinct: Vec<&Key> = Vec::with_capacity(keys.len());
        let slots: Vec<usize> = keys
            .iter()
            .map(|k| {
                *slot_of.entry(k).or_insert_with(|| {
                    distinct.push(k);
                    let slot = distinct.len() - 1;
                    let shard = pool.now.route(k.as_str(), self.on_down);
                    groups
                        .entry(shard.expect("the pool has servers"))
                        .or_default()
                        .push(slot);
                    slot
                })
            })
            .collect();
        self.metrics
            .deduplicated_reads
            .inc_by((keys.len() - distinct.len()) as u64);
        let mut requests = Vec::new();
        for (shard_index, group) in groups {
            let shard = &pool.now.shards[shard_index];
            for chunk in group.chunks(BATCH_CHUNK) {
                let chunk_keys: Vec<Key> = chunk.iter().map(|&s| distinct[s].clone()).collect();
                let chunk = chunk.to_vec();
                requests.push(
                    async move { (chunk, Self::read_group(shard, chunk_keys, budget).await) },
                );
            }
        }
        let mut found: Vec<GetOutcome> = vec![Ok(None); distinct.len()];
        for (chunk, outcome) in join_all(requests).await {
            match outcome {
                Ok(values) => {
                    for (slot, v) in chunk.into_iter().zip(values) {
                        found[slot] = v;
                    }
                }
                // The call outgrew its byte budget: it fails as a whole.
                Err(e @ (Error::ResponseTooLarge { .. } | Error::Overloaded { .. })) => {
                    return Err(e);
                }
                Err(e) => {
                    for slot in chunk {
                        found[slot] = Err(e.clone());
                    }
                }
            }
        }
        if pool.previous().is_some() {
            let missed: Vec<usize> = (0..distinct.len())
                .filter(|&slot| matches!(found[slot], Ok(None)))
                .collect();
            let fallbacks = missed.iter().map(|&slot| {
                let key = distinct[slot];
                let owner = pool.now.route(key.as_str(), self.on_down);
                let owner = &pool.now.shards[owner.expect("the pool has servers")];
                rebalance::fall_back(&pool, owner, key, budget, &self.fallbacks, &self.metrics)
            });
            for (slot, value) in missed.iter().zip(join_all(fallbacks).await) {
                if value.is_some() {
                    found[*slot] = Ok(value);
                }
            }
        }
        Ok(slots.into_iter().map(|s| found[s].clone()).collect())
    }

    async fn set_many(&self, items: Vec<Item>) -> Vec<Result<(), Error>> {
        for item in &items {
            self.flights.forget(&item.key);
        }
        let pool = self.members.load();
        let keys: Vec<Key> = match pool.previous() {
            Some(_) => items.iter().map(|i| i.key.clone()).collect(),
            None => Vec::new(),
        };
        let out = self.write_many(&pool, WriteGroup::Set(items)).await;
        let keys: Vec<&Key> = keys.iter().collect();
        rebalance::forget_old_copies(&pool, &keys, &self.metrics).await;
        out.into_iter().map(|r| r.map(|_| ())).collect()
    }

    async fn delete_many(&self, keys: &[Key]) -> Vec<Result<bool, Error>> {
        for key in keys {
            self.flights.forget(key);
        }
        let pool = self.members.load();
        if pool.previous().is_some() {
            let all: Vec<&Key> = keys.iter().collect();
            rebalance::forget_old_copies(&pool, &all, &self.metrics).await;
        }
        self.write_many(&pool, WriteGroup::Delete(keys.to_vec()))
            .await
    }

    async fn list(&self, prefix: &str, limit: usize) -> Result<Vec<String>, Error> {
        let pool = self.members.load();
        let per_shard = join_all(
            pool.now
                .shards
                .iter()
                .map(|shard| self.list_shard(shard, prefix, limit)),
        )
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
        let pool = self.members.load();
        let results = join_all(pool.now.shards.iter().map(|s| s.probe())).await;
        let shards: Vec<(String, bool)> = pool
            .now
            .shards
            .iter()
            .zip(&results)
            .map(|(s, r)| (s.addr().to_owned(), r.is_ok()))
            .collect();
        Reachability {
            up: shards.iter().filter(|(_, ok)| *ok).count(),
            total: pool.now.shards.len(),
            shards,
        }
    }

    async fn shard_stats(&self) -> Vec<ShardReport> {
        let pool = self.members.load();
        let view = &pool.now;
        let stats = join_all(view.shards.iter().map(|s| s.stats())).await;
        view.shards
            .iter()
            .zip(stats)
            .enumerate()
            .map(|(i, (shard, stats))| ShardReport {
                addr: shard.addr().to_owned(),
                weight: view.weights[i],
                ring_share: view.shares[i],
                marked_down: shard.is_down(),
                stats: stats.map(|s| BackendStats::from_memcached(&s)),
                counters: shard.counters(),
            })
            .collect()
    }

    fn max_value_len(&self, key: &Key) -> (usize, String) {
        let Ok(shard) = self.shard_for(key.as_str()) else {
            // No servers: the write fails with UNAVAILABLE, not on size.
            return (self.max_value_bytes, "--max-value-bytes".to_owned());
        };
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

    fn locate(&self, key: &Key) -> (String, bool) {
        match self.shard_for(key.as_str()) {
            Ok(shard) => (shard.addr().to_owned(), shard.is_up()),
            Err(_) => (String::new(), false),
        }
    }

    fn describe(&self) -> String {
        let pool = self.members.load();
        let addrs: Vec<&str> = pool.now.shards.iter().map(|s| s.addr()).collect();
        format!(
            "memcached pool of {} shards [{}]",
            addrs.len(),
            addrs.join(", ")
        )
    }
}
