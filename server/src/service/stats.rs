//! The Stats RPC: memgate's version, uptime and counters, and each shard's
//! state, ring share and the backend's own figures.
//!
//! The counters are read back from the metrics handles (the same figures
//! `/metrics` exports); the shards are asked by the store, all at once, and
//! a shard that does not answer is reported, never a failure of the call.

use memgate_api::v1 as pb;

use super::CacheService;
use crate::metrics::{Counts, MethodCounts, ShardCounts, code_name};
use crate::store::{BackendStats, ShardReport, Store};

impl<S: Store> CacheService<S> {
    pub(super) async fn report(&self, _req: pb::StatsRequest) -> pb::StatsResponse {
        let shards = self.store.shard_stats().await;
        let counters = server_counters(self.metrics.read(), self.budget.used() as u64);
        pb::StatsResponse {
            version: env!("CARGO_PKG_VERSION").to_owned(),
            uptime_seconds: self.started.elapsed().as_secs(),
            store: self.store.describe(),
            counters: Some(counters),
            shards: shards.into_iter().map(shard_stats).collect(),
        }
    }
}

fn server_counters(c: Counts, inflight_bytes: u64) -> pb::ServerCounters {
    pb::ServerCounters {
        methods: c.methods.into_iter().map(method_counters).collect(),
        hits: c.hits,
        misses: c.misses,
        inflight_calls: c.inflight_calls,
        inflight_bytes,
        shed_calls: c.shed_calls,
        shed_bytes_calls: c.shed_bytes_calls,
        deduplicated_reads: c.deduplicated_reads,
        list_keys_skipped: c.list_keys_skipped,
    }
}

fn method_counters(m: MethodCounts) -> pb::MethodCounters {
    pb::MethodCounters {
        service: m.service,
        method: m.method,
        started: m.started,
        handled: m
            .handled
            .into_iter()
            .map(|(code, count)| pb::CodeCount {
                code: code as i32,
                name: code_name(code).to_owned(),
                count,
            })
            .collect(),
        hits: m.hits,
        misses: m.misses,
    }
}

fn shard_stats(r: ShardReport) -> pb::ShardStats {
    let (backend, error) = match r.stats {
        Ok(stats) => (Some(backend_stats(stats)), None),
        Err(e) => (None, Some(e.to_string())),
    };
    let error = match (error, r.marked_down) {
        (Some(e), _) => e,
        (None, true) => format!(
            "{} answered, but memgate has marked it down after consecutive failures; \
             its keys fail fast until a probe or trial call succeeds",
            r.addr
        ),
        (None, false) => String::new(),
    };
    pb::ShardStats {
        address: r.addr,
        up: error.is_empty(),
        error,
        weight: r.weight,
        ring_share: r.ring_share,
        marked_down: r.marked_down,
        backend,
        counters: Some(shard_counters(r.counters)),
    }
}

fn backend_stats(s: BackendStats) -> pb::BackendStats {
    pb::BackendStats {
        curr_items: s.curr_items,
        bytes: s.bytes,
        limit_maxbytes: s.limit_maxbytes,
        evictions: s.evictions,
        get_hits: s.get_hits,
        get_misses: s.get_misses,
        uptime_seconds: s.uptime_seconds,
        version: s.version,
        curr_connections: s.curr_connections,
    }
}

fn shard_counters(c: ShardCounts) -> pb::ShardCounters {
    pb::ShardCounters {
        timeouts: c.timeouts,
        refused: c.refused,
        io_errors: c.io_errors,
        protocol_errors: c.protocol_errors,
        server_errors: c.server_errors,
        ejections: c.ejections,
        connections: c.connections,
        reconnects: c.reconnects,
    }
}
