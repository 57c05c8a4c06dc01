//! The pool's membership: which servers there are and which owns a key,
//! replaced as a whole when the membership changes.
//!
//! A [`View`] is one ring over one set of shards. The [`Pool`] in use is
//! swapped atomically ([`arc_swap`]); a request takes the pool once and
//! uses it to the end, so it never mixes two rings. A change keeps the
//! [`Shard`]s (and their open connections) of servers that stay, adds
//! servers only once they have answered a probe, and retires servers that
//! left once nothing needs them any more. For `window` after a change the
//! previous view is kept beside the new one, so reads that miss on a key's
//! new owner can still find it on its old one (see `rebalance`).

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use futures::future::join_all;
use tokio::time::Instant;

use super::OnShardDown;
use super::ring::{Placement, Ring, ShardSpec};
use super::shard::{PoolSettings, Shard};
use crate::metrics::Metrics;

/// Keys sampled to report the share of keys a change moved.
const MOVED_SAMPLE: usize = 10_000;

/// One ring over one set of shards.
#[derive(Debug)]
pub struct View {
    /// `None` while the pool has no servers.
    ring: Option<Ring>,
    /// The servers and weights it was built from, sorted.
    specs: Vec<(String, usize)>,
    /// Each shard's weight, by index (for Stats).
    pub weights: Vec<u32>,
    /// Each shard's share of the keys, by index (for Stats).
    pub shares: Vec<f64>,
    /// Index `i` of the ring is `shards[i]`.
    pub shards: Vec<Arc<Shard>>,
}

impl View {
    fn new(specs: &[ShardSpec], shards: Vec<Arc<Shard>>, placement: Placement) -> View {
        let ring = (!specs.is_empty()).then(|| Ring::with_placement(specs, placement));
        View {
            shares: ring.as_ref().map(Ring::shares).unwrap_or_default(),
            weights: specs
                .iter()
                .map(|s| u32::try_from(s.weight).unwrap_or(u32::MAX))
                .collect(),
            ring,
            specs: sorted(specs),
            shards,
        }
    }

    /// The shard that owns `key` under this ring.
    pub fn owner(&self, key: &str) -> Option<&Arc<Shard>> {
        let ring = self.ring.as_ref()?;
        Some(&self.shards[ring.shard_for(key)])
    }

    /// The index of the shard that serves `key` now: its owner, or with
    /// [`OnShardDown::Reroute`] the next live shard while the owner is down.
    pub fn route(&self, key: &str, on_down: OnShardDown) -> Option<usize> {
        let ring = self.ring.as_ref()?;
        let owner = ring.shard_for(key);
        if on_down == OnShardDown::Fail || !self.shards[owner].is_down() {
            return Some(owner);
        }
        Some(
            ring.candidates(key)
                .find(|&i| !self.shards[i].is_down())
                .unwrap_or(owner),
        )
    }

    /// The shard named `addr`.
    pub fn find(&self, addr: &str) -> Option<&Arc<Shard>> {
        self.shards.iter().find(|s| s.addr() == addr)
    }
}

/// The view in use, and the previous one while its window is open.
#[derive(Debug)]
pub struct Pool {
    /// Where keys live now.
    pub now: Arc<View>,
    previous: Option<(Arc<View>, Instant)>,
}

impl Pool {
    /// The view before the last change, while reads may still fall back
    /// to it.
    pub fn previous(&self) -> Option<&Arc<View>> {
        match &self.previous {
            Some((view, until)) if Instant::now() < *until => Some(view),
            _ => None,
        }
    }
}

/// What an update did.
#[derive(Debug, Default, PartialEq)]
pub struct Change {
    /// Servers added.
    pub added: Vec<String>,
    /// Servers removed.
    pub removed: Vec<String>,
    /// Servers wanted that did not answer a probe, left out for now.
    pub pending: Vec<String>,
    /// Share of keys whose owner changed.
    pub moved: f64,
}

/// The pool and how it changes.
#[derive(Debug)]
pub struct Membership {
    pool: ArcSwap<Pool>,
    /// One update at a time.
    updating: tokio::sync::Mutex<()>,
    settings: PoolSettings,
    placement: Placement,
    metrics: Arc<Metrics>,
    window: Duration,
}

impl Membership {
    /// A pool of `specs`, none connected yet; after a change the previous
    /// view stays readable for `window`.
    pub fn new(
        specs: &[ShardSpec],
        settings: PoolSettings,
        placement: Placement,
        metrics: Arc<Metrics>,
        window: Duration,
    ) -> Membership {
        let shards = specs
            .iter()
            .map(|s| Arc::new(new_shard(&s.addr, &settings, &metrics)))
            .collect();
        let now = Arc::new(View::new(specs, shards, placement));
        metrics.pool_servers.set(specs.len() as i64);
        Membership {
            pool: ArcSwap::from_pointee(Pool {
                now,
                previous: None,
            }),
            updating: tokio::sync::Mutex::new(()),
            settings,
            placement,
            metrics,
            window,
        }
    }

    /// The pool in use; a request takes it once and keeps it.
    pub fn load(&self) -> Arc<Pool> {
        self.pool.load_full()
    }

    /// Moves the pool to `specs`: servers that stay keep their shard and
    /// connections; new servers join once they answer a probe (those that
    /// do not are reported pending and left out); servers that left are
    /// retired when nothing can use them any more.
    pub async fn update(self: &Arc<Self>, specs: &[ShardSpec]) -> Change {
        let _one_at_a_time = self.updating.lock().await;
        let current = self.load();
        let mut candidates = Vec::with_capacity(specs.len());
        for spec in specs {
            let shard = match current.now.find(&spec.addr) {
                Some(s) => s.clone(),
                None => match current.previous().and_then(|p| p.find(&spec.addr)) {
                    // Back within the window: its shard was never retired.
                    Some(s) => s.clone(),
                    None => Arc::new(new_shard(&spec.addr, &self.settings, &self.metrics)),
                },
            };
            candidates.push((spec.clone(), shard));
        }
        let joining: Vec<usize> = (0..candidates.len())
            .filter(|&i| current.now.find(&candidates[i].0.addr).is_none())
            .collect();
        let probes = join_all(joining.iter().map(|&i| candidates[i].1.probe())).await;
        let failed: HashSet<usize> = joining
            .iter()
            .zip(&probes)
            .filter(|(_, r)| r.is_err())
            .map(|(&i, _)| i)
            .collect();
        let mut change = Change::default();
        let mut kept_specs = Vec::new();
        let mut shards = Vec::new();
        for (i, (spec, shard)) in candidates.into_iter().enumerate() {
            if failed.contains(&i) {
                change.pending.push(spec.addr.clone());
                continue;
            }
            if current.now.find(&spec.addr).is_none() {
                change.added.push(spec.addr.clone());
            }
            kept_specs.push(spec);
            shards.push(shard);
        }
        change.removed = current
            .now
            .shards
            .iter()
            .filter(|s| !shards.iter().any(|k| k.addr() == s.addr()))
            .map(|s| s.addr().to_owned())
            .collect();
        if sorted(&kept_specs) == current.now.specs {
            return change;
        }
        let now = Arc::new(View::new(&kept_specs, shards, self.placement));
        change.moved = moved_share(&current.now, &now);
        let previous = (!self.window.is_zero() && !current.now.shards.is_empty())
            .then(|| (current.now.clone(), Instant::now() + self.window));
        let until = previous.as_ref().map(|(_, until)| *until);
        self.pool.store(Arc::new(Pool {
            now: now.clone(),
            previous,
        }));
        self.metrics.pool_servers.set(now.shards.len() as i64);
        self.metrics.pool_changes.inc();
        tracing::info!(
            added = %change.added.join(", "),
            removed = %change.removed.join(", "),
            pending = %change.pending.join(", "),
            servers = now.shards.len(),
            moved = %format!("{:.1}%", change.moved * 100.0),
            window = %humantime::format_duration(self.window),
            "memcached pool changed"
        );
        // Servers that left serve fallback reads until the window closes;
        // requests that took the old pool get the time a call may take.
        let grace = self.settings.connect_timeout + self.settings.timeout;
        let this = self.clone();
        let left: Vec<Arc<Shard>> = current
            .now
            .shards
            .iter()
            .filter(|s| change.removed.iter().any(|r| r == s.addr()))
            .cloned()
            .collect();
        tokio::spawn(async move {
            match until {
                Some(until) => {
                    tokio::time::sleep_until(until).await;
                    this.close_window(until);
                }
                None => tokio::time::sleep(grace).await,
            }
            tokio::time::sleep(grace).await;
            this.retire(&left);
        });
        change
    }

    /// Drops the previous view once its window has passed (unless a newer
    /// change replaced it meanwhile).
    fn close_window(&self, until: Instant) {
        self.pool.rcu(|pool| match &pool.previous {
            Some((_, u)) if *u == until => Arc::new(Pool {
                now: pool.now.clone(),
                previous: None,
            }),
            _ => pool.clone(),
        });
    }

    /// Retires the shards of `left` that are in no view in use.
    fn retire(&self, left: &[Arc<Shard>]) {
        let pool = self.load();
        for shard in left {
            let in_use = pool.now.find(shard.addr()).is_some()
                || pool
                    .previous
                    .as_ref()
                    .is_some_and(|(v, _)| v.find(shard.addr()).is_some());
            if !in_use {
                tracing::debug!(shard = %shard.addr(), "closing the connections of a server that left the pool");
                shard.retire();
                self.metrics.forget_shard(shard.addr());
            }
        }
    }
}

fn new_shard(addr: &str, settings: &PoolSettings, metrics: &Metrics) -> Shard {
    Shard::new(addr.to_owned(), settings.clone(), metrics.shard(addr))
}

fn sorted(specs: &[ShardSpec]) -> Vec<(String, usize)> {
    let mut v: Vec<(String, usize)> = specs.iter().map(|s| (s.addr.clone(), s.weight)).collect();
    v.sort();
    v
}

/// The share of sampled keys whose owner differs between two views.
fn moved_share(before: &View, after: &View) -> f64 {
    if before.shards.is_empty() || after.shards.is_empty() {
        return 1.0;
    }
    let moved = (0..MOVED_SAMPLE)
        .filter(|i| {
            let key = format!("memgate-moved-sample-{i}");
            before.owner(&key).map(|s| s.addr()) != after.owner(&key).map(|s| s.addr())
        })
        .count();
    moved as f64 / MOVED_SAMPLE as f64
}

/// Applies every list `members` sends to `store`'s pool. Servers that did
/// not answer their probe are tried again every `retry` until they join
/// or the list changes.
pub async fn follow(
    members: Arc<Membership>,
    mut lists: tokio::sync::watch::Receiver<Vec<ShardSpec>>,
    retry: Duration,
) {
    loop {
        let wanted = lists.borrow_and_update().clone();
        let change = members.update(&wanted).await;
        if change.pending.is_empty() {
            if lists.changed().await.is_err() {
                return;
            }
        } else {
            tokio::select! {
                changed = lists.changed() => if changed.is_err() { return },
                _ = tokio::time::sleep(retry) => {}
            }
        }
    }
}

/// Why the pool has no server for a key.
pub fn no_servers() -> crate::error::Error {
    crate::error::Error::ShardUnavailable {
        addr: "(none)".to_owned(),
        reason: "the memcached pool has no servers yet (waiting for its membership source)"
            .to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn specs(addrs: &[&str]) -> Vec<ShardSpec> {
        addrs.iter().map(|a| a.parse().unwrap()).collect()
    }

    fn settings() -> PoolSettings {
        PoolSettings {
            timeout: Duration::from_millis(100),
            connect_timeout: Duration::from_millis(100),
            conns_per_shard: 1,
            keepalive: None,
            failure_limit: 3,
            retry_timeout: Duration::from_secs(1),
            dns_server: None,
        }
    }

    #[test]
    fn an_empty_pool_owns_nothing() {
        let m = Membership::new(
            &[],
            settings(),
            Placement::default(),
            Metrics::disabled(),
            Duration::ZERO,
        );
        assert!(m.load().now.owner("k").is_none());
        assert!(m.load().now.route("k", OnShardDown::Fail).is_none());
    }

    #[test]
    fn moved_share_of_one_more_server_is_about_one_in_n() {
        let before = View::new(
            &specs(&["a:1", "b:1", "c:1"]),
            ["a:1", "b:1", "c:1"]
                .iter()
                .map(|a| Arc::new(new_shard(a, &settings(), &Metrics::disabled())))
                .collect(),
            Placement::default(),
        );
        let after = View::new(
            &specs(&["a:1", "b:1", "c:1", "d:1"]),
            ["a:1", "b:1", "c:1", "d:1"]
                .iter()
                .map(|a| Arc::new(new_shard(a, &settings(), &Metrics::disabled())))
                .collect(),
            Placement::default(),
        );
        let moved = moved_share(&before, &after);
        assert!((0.18..0.32).contains(&moved), "{moved}");
    }
}
