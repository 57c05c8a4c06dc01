//! Prometheus metrics: the go-grpc-prometheus series that existing gRPC
//! dashboards and alerts query, and memgate's own, prefixed `memgate_`.
//!
//! Every handle is registered once, up front (per method from the services'
//! descriptors, per shard when the pool is built), so recording on the hot
//! path is an atomic add on a handle already in hand, never a lookup by
//! name and labels. memgate always records (the Stats RPC reads the same
//! counts); `--metrics-listen` only exports them. [`Metrics::disabled`]
//! records nothing, for tests and for measuring what recording costs.
//!
//! The series, by where they are recorded:
//! - [`GrpcMetricsLayer`], around every service: `grpc_server_started_total`,
//!   `grpc_server_handled_total`, `grpc_server_msg_received_total`,
//!   `grpc_server_msg_sent_total`, `grpc_server_handling_seconds`, and
//!   `memgate_inflight_calls`.
//! - the Cache service: hits and misses per method (batches per key), keys
//!   per batch, byte-budget refusals, bytes in flight.
//! - each shard ([`ShardMetrics`]): request latency, errors by kind, up,
//!   ejections, open connections, reconnects, coalesced requests.
//! - the store: deduplicated reads, List keys skipped.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, OnceLock};
use std::task::{Context, Poll};
use std::time::Instant;

use bytes::Bytes;
use http_body::{Body as HttpBody, Frame, SizeHint};
use prometheus::{HistogramOpts, HistogramVec, IntCounterVec, IntGaugeVec, Opts, Registry};
use prost::Message;
use tonic::Code;
use tonic::body::Body;
use tonic::codegen::http;
use tower::{Layer, Service};
use tracing::{Instrument, Span};

use crate::trace::{self, RpcNames};

/// Latency buckets, in seconds: a cache answers in microseconds to
/// milliseconds, so the default Prometheus buckets (from 5 ms) would put
/// every call in the first one.
const LATENCY_BUCKETS: &[f64] = &[
    0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5,
    1.0, 2.5, 5.0, 10.0,
];

/// The `kind` label values of `memgate_shard_errors_total`.
const SHARD_ERROR_KINDS: [&str; 5] = ["timeout", "refused", "io", "protocol", "server_error"];

/// Keys-per-batch buckets.
const BATCH_BUCKETS: &[f64] = &[1.0, 2.0, 5.0, 10.0, 20.0, 50.0, 100.0, 200.0, 500.0, 1000.0];

/// gRPC status codes by number, as go-grpc-prometheus names them in
/// `grpc_code` (Go's `codes.Code.String()`).
const CODE_NAMES: [&str; 17] = [
    "OK",
    "Canceled",
    "Unknown",
    "InvalidArgument",
    "DeadlineExceeded",
    "NotFound",
    "AlreadyExists",
    "PermissionDenied",
    "ResourceExhausted",
    "FailedPrecondition",
    "Aborted",
    "OutOfRange",
    "Unimplemented",
    "Internal",
    "Unavailable",
    "DataLoss",
    "Unauthenticated",
];

/// A counter; does nothing when metrics are off.
#[derive(Clone, Debug, Default)]
pub struct Counter(Option<prometheus::IntCounter>);

impl Counter {
    /// Adds one.
    #[inline]
    pub fn inc(&self) {
        if let Some(c) = &self.0 {
            c.inc();
        }
    }

    /// Adds `n`.
    #[inline]
    pub fn inc_by(&self, n: u64) {
        if let Some(c) = &self.0 {
            c.inc_by(n);
        }
    }

    /// The count so far (0 when metrics are off).
    pub fn get(&self) -> u64 {
        self.0.as_ref().map_or(0, |c| c.get())
    }
}

/// A gauge; does nothing when metrics are off.
#[derive(Clone, Debug, Default)]
pub struct Gauge(Option<prometheus::IntGauge>);

impl Gauge {
    /// Adds one.
    #[inline]
    pub fn inc(&self) {
        if let Some(g) = &self.0 {
            g.inc();
        }
    }

    /// Subtracts one.
    #[inline]
    pub fn dec(&self) {
        if let Some(g) = &self.0 {
            g.dec();
        }
    }

    /// Sets the value.
    #[inline]
    pub fn set(&self, v: i64) {
        if let Some(g) = &self.0 {
            g.set(v);
        }
    }

    /// The value now (0 when metrics are off).
    pub fn get(&self) -> i64 {
        self.0.as_ref().map_or(0, |g| g.get())
    }
}

/// A histogram; does nothing when metrics are off.
#[derive(Clone, Debug, Default)]
pub struct Histogram(Option<prometheus::Histogram>);

impl Histogram {
    /// Records one observation.
    #[inline]
    pub fn observe(&self, v: f64) {
        if let Some(h) = &self.0 {
            h.observe(v);
        }
    }

    /// A start time for [`Histogram::observe_since`], taken only when
    /// recording (reading the clock is not free).
    #[inline]
    pub fn start(&self) -> Option<Instant> {
        self.0.as_ref().map(|_| Instant::now())
    }

    /// Records the seconds since `start`.
    #[inline]
    pub fn observe_since(&self, start: Option<Instant>) {
        if let (Some(h), Some(start)) = (&self.0, start) {
            h.observe(start.elapsed().as_secs_f64());
        }
    }
}

/// Hits and misses of one method.
#[derive(Clone, Debug, Default)]
pub struct HitMiss {
    /// Keys found.
    pub hits: Counter,
    /// Keys not found.
    pub misses: Counter,
}

impl HitMiss {
    /// Counts one key.
    #[inline]
    pub fn record(&self, found: bool) {
        if found {
            self.hits.inc()
        } else {
            self.misses.inc()
        }
    }
}

/// The Cache service's own counters.
#[derive(Clone, Debug, Default)]
pub struct CacheMetrics {
    /// Get.
    pub get: HitMiss,
    /// BatchGet, per key.
    pub batch_get: HitMiss,
    /// BatchGetStream, per key.
    pub batch_get_stream: HitMiss,
    /// Keys per BatchGet.
    pub batch_get_keys: Histogram,
    /// Items per BatchSet.
    pub batch_set_keys: Histogram,
    /// Keys per BatchDelete.
    pub batch_delete_keys: Histogram,
    /// Calls refused because the server-wide byte budget was spent.
    pub shed_bytes: Counter,
    /// Reads answered by another caller's read of the same key, and
    /// duplicate keys within a batch.
    pub deduplicated_reads: Counter,
    /// Keys List skipped (not UTF-8).
    pub list_keys_skipped: Counter,
    /// Gets with a lease that were told to refill the key.
    pub leases_won: Counter,
    /// Gets with a lease that were told another caller refills it.
    pub leases_held: Counter,
    /// Gets answered with an invalidated (stale) value.
    pub stale_reads: Counter,
    /// Reads sent to a key's previous server after a pool change.
    pub rebalance_fallback_reads: Counter,
    /// Fallback reads that found the key.
    pub rebalance_fallback_hits: Counter,
    /// Keys copied to their new server.
    pub rebalance_copies: Counter,
    /// Previous copies of moved keys that could not be deleted.
    pub rebalance_stale_deletes_failed: Counter,
}

/// One shard's series, labelled with its address.
#[derive(Clone, Debug, Default)]
pub struct ShardMetrics {
    /// Latency of each request to the shard.
    pub latency: Histogram,
    /// Requests that timed out.
    pub timeouts: Counter,
    /// Connects that failed (refused, unreachable, timed out).
    pub refused: Counter,
    /// Connections lost mid-request (reset, closed by the server).
    pub io_errors: Counter,
    /// Replies that broke the protocol.
    pub protocol_errors: Counter,
    /// SERVER_ERROR or CLIENT_ERROR replies.
    pub server_errors: Counter,
    /// 1 while the shard answers and is not marked down.
    pub up: Gauge,
    /// Times the shard was marked down.
    pub ejections: Counter,
    /// Open connections.
    pub connections: Gauge,
    /// Connections opened to replace one that was lost.
    pub reconnects: Counter,
    /// Requests written in one write together with others.
    pub coalesced: Counter,
}

impl ShardMetrics {
    /// The counts so far, for the Stats RPC.
    pub fn read(&self) -> ShardCounts {
        ShardCounts {
            timeouts: self.timeouts.get(),
            refused: self.refused.get(),
            io_errors: self.io_errors.get(),
            protocol_errors: self.protocol_errors.get(),
            server_errors: self.server_errors.get(),
            ejections: self.ejections.get(),
            connections: self.connections.get().max(0) as u64,
            reconnects: self.reconnects.get(),
        }
    }
}

/// One shard's counts read back from its series (see [`ShardMetrics`]).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ShardCounts {
    /// Requests that timed out.
    pub timeouts: u64,
    /// Connects that failed.
    pub refused: u64,
    /// Connections lost mid-request.
    pub io_errors: u64,
    /// Replies that broke the protocol.
    pub protocol_errors: u64,
    /// SERVER_ERROR replies.
    pub server_errors: u64,
    /// Times the shard was marked down.
    pub ejections: u64,
    /// Connections open now.
    pub connections: u64,
    /// Connections opened to replace a lost one.
    pub reconnects: u64,
}

/// One gRPC method's calls, read back from its series.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct MethodCounts {
    /// The full service name, e.g. `memgate.v1.Cache`.
    pub service: String,
    /// The method name, e.g. `Get`.
    pub method: String,
    /// Calls started.
    pub started: u64,
    /// Calls finished, per status code (codes with none are left out).
    pub handled: Vec<(Code, u64)>,
    /// Keys found (read methods of the Cache service only).
    pub hits: u64,
    /// Keys not found (read methods of the Cache service only).
    pub misses: u64,
}

/// The server-wide counts the Stats RPC reports, read back from the
/// series (all 0 when metrics are off).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Counts {
    /// Every method started at least once, sorted by service and method.
    pub methods: Vec<MethodCounts>,
    /// Keys found, over every read method.
    pub hits: u64,
    /// Keys not found, over every read method.
    pub misses: u64,
    /// Calls being handled now.
    pub inflight_calls: u64,
    /// Calls shed at `--max-concurrent-calls`.
    pub shed_calls: u64,
    /// Calls refused at `--max-inflight-bytes`.
    pub shed_bytes_calls: u64,
    /// Reads deduplicated.
    pub deduplicated_reads: u64,
    /// Keys List skipped (not UTF-8).
    pub list_keys_skipped: u64,
}

/// The name go-grpc-prometheus gives a status code in `grpc_code`.
pub fn code_name(code: Code) -> &'static str {
    CODE_NAMES[(code as usize).min(CODE_NAMES.len() - 1)]
}

/// The families every handle comes from; `None` when metrics are off.
struct Families {
    registry: Registry,
    started: IntCounterVec,
    handled: IntCounterVec,
    msg_received: IntCounterVec,
    msg_sent: IntCounterVec,
    handling: HistogramVec,
    shard_latency: HistogramVec,
    shard_errors: IntCounterVec,
    shard_up: IntGaugeVec,
    shard_ejections: IntCounterVec,
    shard_connections: IntGaugeVec,
    shard_reconnects: IntCounterVec,
    shard_coalesced: IntCounterVec,
}

type Sampler = Box<dyn Fn() + Send + Sync>;

/// Every series memgate exports.
pub struct Metrics {
    families: Option<Families>,
    /// Per gRPC method, by request path (`/package.Service/Method`).
    methods: HashMap<String, Arc<MethodMetrics>>,
    /// Paths of no known method (one series, however many such paths).
    unknown: Arc<MethodMetrics>,
    /// The Cache service's counters.
    pub cache: CacheMetrics,
    /// Calls being handled.
    pub inflight_calls: Gauge,
    /// Bytes of values held for calls (sampled at scrape time).
    pub inflight_bytes: Gauge,
    /// Calls refused at the concurrency limit.
    pub shed_calls: Counter,
    /// Servers in the pool.
    pub pool_servers: Gauge,
    /// Membership changes applied.
    pub pool_changes: Counter,
    /// Read at each scrape, for values kept elsewhere.
    samplers: Mutex<Vec<Sampler>>,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics")
            .field("enabled", &self.is_enabled())
            .finish_non_exhaustive()
    }
}

/// The Cache service's full name, as in its request paths.
const CACHE_SERVICE: &str = "memgate.v1.Cache";

/// The descriptor sets of the services memgate serves, for method names
/// and streaming types.
const DESCRIPTOR_SETS: &[&[u8]] = &[
    memgate_api::v1::FILE_DESCRIPTOR_SET,
    tonic_health::pb::FILE_DESCRIPTOR_SET,
    tonic_reflection::pb::v1::FILE_DESCRIPTOR_SET,
    tonic_reflection::pb::v1alpha::FILE_DESCRIPTOR_SET,
];

impl Metrics {
    /// Metrics that record nothing: the default without `--metrics-listen`.
    pub fn disabled() -> Arc<Metrics> {
        Arc::new(Metrics {
            families: None,
            methods: HashMap::new(),
            unknown: Arc::new(MethodMetrics::default()),
            cache: CacheMetrics::default(),
            inflight_calls: Gauge::default(),
            inflight_bytes: Gauge::default(),
            shed_calls: Counter::default(),
            pool_servers: Gauge::default(),
            pool_changes: Counter::default(),
            samplers: Mutex::new(Vec::new()),
        })
    }

    /// Metrics that record, in a registry of their own (so several servers
    /// in one process, as in tests, keep separate counts).
    pub fn new() -> Arc<Metrics> {
        let registry = Registry::new();
        let grpc = ["grpc_type", "grpc_service", "grpc_method"];
        let grpc_code = ["grpc_type", "grpc_service", "grpc_method", "grpc_code"];
        let families = Families {
            started: counter_vec(
                &registry,
                "grpc_server_started_total",
                "Total number of RPCs started on the server.",
                &grpc,
            ),
            handled: counter_vec(
                &registry,
                "grpc_server_handled_total",
                "Total number of RPCs completed on the server, regardless of success or failure.",
                &grpc_code,
            ),
            msg_received: counter_vec(
                &registry,
                "grpc_server_msg_received_total",
                "Total number of RPC stream messages received on the server.",
                &grpc,
            ),
            msg_sent: counter_vec(
                &registry,
                "grpc_server_msg_sent_total",
                "Total number of gRPC stream messages sent by the server.",
                &grpc,
            ),
            handling: histogram_vec(
                &registry,
                "grpc_server_handling_seconds",
                "Histogram of response latency (seconds) of gRPC that had been application-level handled by the server.",
                &grpc,
                LATENCY_BUCKETS,
            ),
            shard_latency: histogram_vec(
                &registry,
                "memgate_shard_request_seconds",
                "Latency of requests to each memcached shard, from sending to the last byte of the reply.",
                &["shard"],
                LATENCY_BUCKETS,
            ),
            shard_errors: counter_vec(
                &registry,
                "memgate_shard_errors_total",
                "Failed requests and connects to each memcached shard, by kind: timeout, refused (connect failed), io (connection lost), protocol (malformed reply), server_error.",
                &["shard", "kind"],
            ),
            shard_up: gauge_vec(
                &registry,
                "memgate_shard_up",
                "1 while the shard answers its probes and is not marked down, else 0.",
                &["shard"],
            ),
            shard_ejections: counter_vec(
                &registry,
                "memgate_shard_ejections_total",
                "Times the shard was marked down after consecutive failures (--shard-failure-limit).",
                &["shard"],
            ),
            shard_connections: gauge_vec(
                &registry,
                "memgate_shard_connections",
                "Open connections to the shard.",
                &["shard"],
            ),
            shard_reconnects: counter_vec(
                &registry,
                "memgate_shard_reconnects_total",
                "Connections opened to replace one that was lost.",
                &["shard"],
            ),
            shard_coalesced: counter_vec(
                &registry,
                "memgate_shard_coalesced_requests_total",
                "Requests to the shard that went out in one write together with others.",
                &["shard"],
            ),
            registry,
        };
        let hit_miss = counter_vec(
            &families.registry,
            "memgate_cache_hits_total",
            "Keys found, per method (batches count each key).",
            &["method"],
        );
        let miss = counter_vec(
            &families.registry,
            "memgate_cache_misses_total",
            "Keys not found, per method (batches count each key).",
            &["method"],
        );
        let batch_keys = histogram_vec(
            &families.registry,
            "memgate_batch_keys",
            "Keys (or items) per batch request.",
            &["method"],
            BATCH_BUCKETS,
        );
        let shed = counter_vec(
            &families.registry,
            "memgate_shed_calls_total",
            "Calls refused with RESOURCE_EXHAUSTED at a server-wide limit, by limit.",
            &["limit"],
        );
        let cache_counter = |name: &str, help: &str| {
            let c = prometheus::IntCounter::new(name, help).expect("valid metric");
            families
                .registry
                .register(Box::new(c.clone()))
                .expect("registered once");
            Counter(Some(c))
        };
        let gauge = |name: &str, help: &str| {
            let g = prometheus::IntGauge::new(name, help).expect("valid metric");
            families
                .registry
                .register(Box::new(g.clone()))
                .expect("registered once");
            Gauge(Some(g))
        };
        let hm = |method: &str| HitMiss {
            hits: Counter(Some(hit_miss.with_label_values(&[method]))),
            misses: Counter(Some(miss.with_label_values(&[method]))),
        };
        let keys = |method: &str| Histogram(Some(batch_keys.with_label_values(&[method])));
        let leases = counter_vec(
            &families.registry,
            "memgate_leases_total",
            "Gets with lease_ttl_seconds that missed or found a stale value, by outcome: won (this caller refills it) or held (another caller does).",
            &["outcome"],
        );
        let cache = CacheMetrics {
            get: hm("Get"),
            batch_get: hm("BatchGet"),
            batch_get_stream: hm("BatchGetStream"),
            batch_get_keys: keys("BatchGet"),
            batch_set_keys: keys("BatchSet"),
            batch_delete_keys: keys("BatchDelete"),
            shed_bytes: Counter(Some(shed.with_label_values(&["max_inflight_bytes"]))),
            deduplicated_reads: cache_counter(
                "memgate_deduplicated_reads_total",
                "Reads of a key answered by a read already in flight for it, and duplicate keys within a batch.",
            ),
            list_keys_skipped: cache_counter(
                "memgate_list_keys_skipped_total",
                "Keys List skipped because they are not UTF-8 (written by another client).",
            ),
            leases_won: Counter(Some(leases.with_label_values(&["won"]))),
            leases_held: Counter(Some(leases.with_label_values(&["held"]))),
            stale_reads: cache_counter(
                "memgate_stale_reads_total",
                "Gets answered with an invalidated (stale) value while it is refreshed.",
            ),
            rebalance_fallback_reads: cache_counter(
                "memgate_rebalance_fallback_reads_total",
                "Reads sent to a key's previous server after it missed on its new one, during the rebalance window.",
            ),
            rebalance_fallback_hits: cache_counter(
                "memgate_rebalance_fallback_hits_total",
                "Fallback reads that found the key on its previous server.",
            ),
            rebalance_copies: cache_counter(
                "memgate_rebalance_copies_total",
                "Keys copied from their previous server to their new one (add: never over a newer value).",
            ),
            rebalance_stale_deletes_failed: cache_counter(
                "memgate_rebalance_stale_deletes_failed_total",
                "Previous-server copies of written or deleted keys that could not be deleted during the window.",
            ),
        };
        let pool_servers = gauge("memgate_pool_servers", "memcached servers in the pool now.");
        let pool_changes = cache_counter(
            "memgate_pool_changes_total",
            "Changes of the pool's membership applied while serving.",
        );
        let inflight_calls = gauge(
            "memgate_inflight_calls",
            "Calls being handled, probes and streams included.",
        );
        let inflight_bytes = gauge(
            "memgate_inflight_bytes",
            "Bytes of values held for calls in flight (bounded by --max-inflight-bytes).",
        );
        let shed_calls = Counter(Some(shed.with_label_values(&["max_concurrent_calls"])));

        let mut methods = HashMap::new();
        for (path, kind, service, method) in known_methods() {
            let m = MethodMetrics::new(&families, kind, &service, &method);
            methods.insert(path, Arc::new(m));
        }
        let unknown = Arc::new(MethodMetrics::new(&families, "unary", "unknown", "unknown"));
        Arc::new(Metrics {
            families: Some(families),
            methods,
            unknown,
            cache,
            inflight_calls,
            inflight_bytes,
            shed_calls,
            pool_servers,
            pool_changes,
            samplers: Mutex::new(Vec::new()),
        })
    }

    /// True when recording.
    pub fn is_enabled(&self) -> bool {
        self.families.is_some()
    }

    /// The series of one shard.
    pub fn shard(&self, addr: &str) -> ShardMetrics {
        let Some(f) = &self.families else {
            return ShardMetrics::default();
        };
        let errors = |kind: &str| Counter(Some(f.shard_errors.with_label_values(&[addr, kind])));
        ShardMetrics {
            latency: Histogram(Some(f.shard_latency.with_label_values(&[addr]))),
            timeouts: errors("timeout"),
            refused: errors("refused"),
            io_errors: errors("io"),
            protocol_errors: errors("protocol"),
            server_errors: errors("server_error"),
            up: Gauge(Some(f.shard_up.with_label_values(&[addr]))),
            ejections: Counter(Some(f.shard_ejections.with_label_values(&[addr]))),
            connections: Gauge(Some(f.shard_connections.with_label_values(&[addr]))),
            reconnects: Counter(Some(f.shard_reconnects.with_label_values(&[addr]))),
            coalesced: Counter(Some(f.shard_coalesced.with_label_values(&[addr]))),
        }
    }

    /// Drops the series of a shard that left the pool.
    pub fn forget_shard(&self, addr: &str) {
        let Some(f) = &self.families else { return };
        for kind in SHARD_ERROR_KINDS {
            let _ = f.shard_errors.remove_label_values(&[addr, kind]);
        }
        let _ = f.shard_latency.remove_label_values(&[addr]);
        let _ = f.shard_up.remove_label_values(&[addr]);
        let _ = f.shard_ejections.remove_label_values(&[addr]);
        let _ = f.shard_connections.remove_label_values(&[addr]);
        let _ = f.shard_reconnects.remove_label_values(&[addr]);
        let _ = f.shard_coalesced.remove_label_values(&[addr]);
    }

    /// Runs `sample` before each scrape: for values kept elsewhere, such as
    /// the bytes of the byte budget.
    pub fn sample_on_scrape(&self, sample: impl Fn() + Send + Sync + 'static) {
        if self.is_enabled() {
            self.samplers
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .push(Box::new(sample));
        }
    }

    /// The Prometheus text exposition of every series.
    pub fn render(&self) -> String {
        let Some(f) = &self.families else {
            return String::new();
        };
        for sample in self
            .samplers
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
        {
            sample();
        }
        let mut out = String::new();
        prometheus::TextEncoder::new()
            .encode_utf8(&f.registry.gather(), &mut out)
            .expect("text encoding of valid metrics");
        out
    }

    /// The server-wide counts so far, for the Stats RPC: read from the same
    /// handles the metrics endpoint exports, so both always agree.
    pub fn read(&self) -> Counts {
        let reads = [
            ("Get", &self.cache.get),
            ("BatchGet", &self.cache.batch_get),
            ("BatchGetStream", &self.cache.batch_get_stream),
        ];
        let mut methods: Vec<MethodCounts> = self
            .methods
            .iter()
            .filter_map(|(path, m)| {
                let started = m.started.get();
                if started == 0 {
                    return None;
                }
                let (service, method) = path.trim_start_matches('/').split_once('/')?;
                let handled = (0..CODE_NAMES.len())
                    .filter_map(|i| {
                        let n = m.handled[i].get().map_or(0, Counter::get);
                        (n > 0).then(|| (Code::from_i32(i as i32), n))
                    })
                    .collect();
                let hit_miss = reads
                    .iter()
                    .find(|(name, _)| service == CACHE_SERVICE && *name == method)
                    .map(|(_, hm)| (hm.hits.get(), hm.misses.get()));
                let (hits, misses) = hit_miss.unwrap_or_default();
                Some(MethodCounts {
                    service: service.to_owned(),
                    method: method.to_owned(),
                    started,
                    handled,
                    hits,
                    misses,
                })
            })
            .collect();
        methods.sort_by(|a, b| (&a.service, &a.method).cmp(&(&b.service, &b.method)));
        Counts {
            methods,
            hits: reads.iter().map(|(_, hm)| hm.hits.get()).sum(),
            misses: reads.iter().map(|(_, hm)| hm.misses.get()).sum(),
            inflight_calls: self.inflight_calls.get().max(0) as u64,
            shed_calls: self.shed_calls.get(),
            shed_bytes_calls: self.cache.shed_bytes.get(),
            deduplicated_reads: self.cache.deduplicated_reads.get(),
            list_keys_skipped: self.cache.list_keys_skipped.get(),
        }
    }

    fn method(&self, path: &str) -> Option<Arc<MethodMetrics>> {
        if !self.is_enabled() {
            return None;
        }
        Some(self.methods.get(path).unwrap_or(&self.unknown).clone())
    }
}

/// Serves `GET /metrics` on `listener`.
pub async fn serve(listener: tokio::net::TcpListener, metrics: Arc<Metrics>) {
    let addr = listener
        .local_addr()
        .map_or_else(|e| e.to_string(), |a| a.to_string());
    tracing::info!(listen = %addr, "serving Prometheus metrics on /metrics");
    let app = axum::Router::new().route(
        "/metrics",
        axum::routing::get(move || {
            let metrics = metrics.clone();
            async move {
                (
                    [(http::header::CONTENT_TYPE, prometheus::TEXT_FORMAT)],
                    metrics.render(),
                )
            }
        }),
    );
    if let Err(e) = axum::serve(listener, app).await {
        tracing::error!(error = %e, "the metrics endpoint failed");
    }
}

fn counter_vec(registry: &Registry, name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
    let v = IntCounterVec::new(Opts::new(name, help), labels).expect("valid metric");
    registry
        .register(Box::new(v.clone()))
        .expect("registered once");
    v
}

fn gauge_vec(registry: &Registry, name: &str, help: &str, labels: &[&str]) -> IntGaugeVec {
    let v = IntGaugeVec::new(Opts::new(name, help), labels).expect("valid metric");
    registry
        .register(Box::new(v.clone()))
        .expect("registered once");
    v
}

fn histogram_vec(
    registry: &Registry,
    name: &str,
    help: &str,
    labels: &[&str],
    buckets: &[f64],
) -> HistogramVec {
    let opts = HistogramOpts::new(name, help).buckets(buckets.to_vec());
    let v = HistogramVec::new(opts, labels).expect("valid metric");
    registry
        .register(Box::new(v.clone()))
        .expect("registered once");
    v
}

/// Every method served: (path, grpc_type, service, method), from the
/// services' own descriptors, so a new RPC is counted without a list to
/// keep up to date.
fn known_methods() -> Vec<(String, &'static str, String, String)> {
    let mut out = Vec::new();
    for set in DESCRIPTOR_SETS {
        let set = prost_types::FileDescriptorSet::decode(*set).expect("embedded descriptor set");
        for file in set.file {
            let package = file.package();
            for service in &file.service {
                let service_name = if package.is_empty() {
                    service.name().to_owned()
                } else {
                    format!("{package}.{}", service.name())
                };
                for method in &service.method {
                    let kind = match (method.client_streaming(), method.server_streaming()) {
                        (false, false) => "unary",
                        (true, false) => "client_stream",
                        (false, true) => "server_stream",
                        (true, true) => "bidi_stream",
                    };
                    out.push((
                        format!("/{service_name}/{}", method.name()),
                        kind,
                        service_name.clone(),
                        method.name().to_owned(),
                    ));
                }
            }
        }
    }
    out
}

/// The gRPC series of one method.
#[derive(Default)]
struct MethodMetrics {
    started: Counter,
    msg_received: Counter,
    msg_sent: Counter,
    handling: Histogram,
    /// `grpc_server_handled_total` per code, made on first use so that
    /// codes never seen export no series.
    handled: [OnceLock<Counter>; 17],
    handled_family: Option<(IntCounterVec, [String; 3])>,
    /// Its names, for the RPC span.
    names: RpcNames,
}

impl MethodMetrics {
    fn new(f: &Families, kind: &str, service: &str, method: &str) -> MethodMetrics {
        let labels = [kind, service, method];
        MethodMetrics {
            started: Counter(Some(f.started.with_label_values(&labels))),
            msg_received: Counter(Some(f.msg_received.with_label_values(&labels))),
            msg_sent: Counter(Some(f.msg_sent.with_label_values(&labels))),
            handling: Histogram(Some(f.handling.with_label_values(&labels))),
            handled: Default::default(),
            handled_family: Some((
                f.handled.clone(),
                [kind.to_owned(), service.to_owned(), method.to_owned()],
            )),
            names: RpcNames::new(service, method),
        }
    }

    fn handled(&self, code: Code) -> &Counter {
        let i = (code as usize).min(CODE_NAMES.len() - 1);
        self.handled[i].get_or_init(|| match &self.handled_family {
            Some((family, [kind, service, method])) => Counter(Some(family.with_label_values(&[
                kind,
                service,
                method,
                CODE_NAMES[i],
            ]))),
            None => Counter::default(),
        })
    }
}

/// One call being measured: finished exactly once, with its status code,
/// when its response ends (or `Canceled` if it is dropped before).
struct CallRecord {
    method: Arc<MethodMetrics>,
    inflight: Gauge,
    start: Instant,
    done: bool,
    /// The call's span (disabled unless DEBUG is on for RPCs).
    span: Span,
}

impl CallRecord {
    fn finish(&mut self, code: Code) {
        if std::mem::replace(&mut self.done, true) {
            return;
        }
        let elapsed = self.start.elapsed();
        self.method.handled(code).inc();
        self.method.handling.observe(elapsed.as_secs_f64());
        self.inflight.dec();
        trace::finish_rpc_span(&self.span, code, elapsed);
    }
}

impl Drop for CallRecord {
    fn drop(&mut self) {
        self.finish(Code::Cancelled);
    }
}

/// Counts gRPC messages in a body: each is a 5-byte header (a flag and a
/// big-endian length) and the message, and either may be split across
/// DATA frames.
#[derive(Debug, Default)]
struct MessageCounter {
    /// Header bytes seen of the current message (0 to 4).
    header: u8,
    /// Its length, as far as read.
    len: u32,
    /// Message bytes still to skip.
    remaining: u64,
}

impl MessageCounter {
    /// Feeds a chunk; returns how many message headers completed in it.
    fn feed(&mut self, mut data: &[u8]) -> u64 {
        let mut messages = 0;
        while !data.is_empty() {
            if self.remaining > 0 {
                let n = self.remaining.min(data.len() as u64);
                self.remaining -= n;
                data = &data[n as usize..];
                continue;
            }
            if self.header > 0 {
                self.len = (self.len << 8) | u32::from(data[0]);
            }
            data = &data[1..];
            self.header += 1;
            if self.header == 5 {
                messages += 1;
                self.remaining = u64::from(self.len);
                self.header = 0;
                self.len = 0;
            }
        }
        messages
    }
}

/// Records the gRPC series of every call through it. Outermost of
/// memgate's layers, so shed and timed-out calls are counted too.
#[derive(Clone, Debug)]
pub struct GrpcMetricsLayer {
    metrics: Arc<Metrics>,
}

impl GrpcMetricsLayer {
    /// Records into `metrics`.
    pub fn new(metrics: Arc<Metrics>) -> GrpcMetricsLayer {
        GrpcMetricsLayer { metrics }
    }
}

impl<S> Layer<S> for GrpcMetricsLayer {
    type Service = GrpcMetrics<S>;
    fn layer(&self, inner: S) -> GrpcMetrics<S> {
        GrpcMetrics {
            inner,
            metrics: self.metrics.clone(),
        }
    }
}

/// See [`GrpcMetricsLayer`].
#[derive(Clone, Debug)]
pub struct GrpcMetrics<S> {
    inner: S,
    metrics: Arc<Metrics>,
}

type BoxFuture<T, E> = Pin<Box<dyn Future<Output = Result<T, E>> + Send>>;

impl<S, B> Service<http::Request<B>> for GrpcMetrics<S>
where
    S: Service<http::Request<CountedBody<B>>, Response = http::Response<Body>>,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
{
    type Response = http::Response<Body>;
    type Error = S::Error;
    type Future = BoxFuture<Self::Response, Self::Error>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: http::Request<B>) -> Self::Future {
        let Some(method) = self.metrics.method(req.uri().path()) else {
            let fut = self.inner.call(req.map(|body| CountedBody {
                inner: body,
                count: None,
            }));
            return Box::pin(fut);
        };
        method.started.inc();
        self.metrics.inflight_calls.inc();
        // The handler runs inside the call's span (and so does a stream's
        // work, polled through the response body).
        let span = trace::rpc_span(&method.names, req.headers());
        let mut record = CallRecord {
            method: method.clone(),
            inflight: self.metrics.inflight_calls.clone(),
            start: Instant::now(),
            done: false,
            span: span.clone(),
        };
        let fut = span.in_scope(|| {
            self.inner.call(req.map(|body| CountedBody {
                inner: body,
                count: Some((MessageCounter::default(), method.msg_received.clone())),
            }))
        });
        let fut = async move {
            let resp = fut.await.inspect_err(|_| record.finish(Code::Unknown))?;
            // A trailers-only response (every error of a unary call)
            // carries its status in the headers.
            if let Some(code) = status_code(resp.headers()) {
                record.finish(code);
                return Ok(resp);
            }
            let sent = method.msg_sent.clone();
            Ok(resp.map(|body| {
                Body::new(RecordedBody {
                    inner: body,
                    messages: MessageCounter::default(),
                    sent,
                    record,
                })
            }))
        };
        Box::pin(fut.instrument(span))
    }
}

fn status_code(headers: &http::HeaderMap) -> Option<Code> {
    let v = headers.get("grpc-status")?;
    let n: i32 = v.to_str().ok()?.parse().ok()?;
    Some(Code::from_i32(n))
}

/// A request body that counts the messages read from it.
#[derive(Debug)]
pub struct CountedBody<B> {
    inner: B,
    count: Option<(MessageCounter, Counter)>,
}

impl<B> HttpBody for CountedBody<B>
where
    B: HttpBody<Data = Bytes> + Unpin,
{
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, B::Error>>> {
        let this = self.get_mut();
        let frame = Pin::new(&mut this.inner).poll_frame(cx);
        if let (Poll::Ready(Some(Ok(frame))), Some((counter, received))) = (&frame, &mut this.count)
            && let Some(data) = frame.data_ref()
        {
            received.inc_by(counter.feed(data));
        }
        frame
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// A response body that counts the messages sent and finishes the call's
/// record with the status in its trailers.
struct RecordedBody {
    inner: Body,
    messages: MessageCounter,
    sent: Counter,
    record: CallRecord,
}

impl HttpBody for RecordedBody {
    type Data = Bytes;
    type Error = tonic::Status;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, tonic::Status>>> {
        let this = self.get_mut();
        let entered = this.record.span.enter();
        let frame = Pin::new(&mut this.inner).poll_frame(cx);
        drop(entered);
        match &frame {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    this.sent.inc_by(this.messages.feed(data));
                } else if let Some(trailers) = frame.trailers_ref() {
                    this.record
                        .finish(status_code(trailers).unwrap_or(Code::Unknown));
                }
            }
            Poll::Ready(Some(Err(_))) => this.record.finish(Code::Internal),
            // Ended without trailers: not a valid gRPC response.
            Poll::Ready(None) => this.record.finish(Code::Unknown),
            Poll::Pending => {}
        }
        frame
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(len: u32) -> Vec<u8> {
        let mut v = vec![0];
        v.extend_from_slice(&len.to_be_bytes());
        v.extend(std::iter::repeat_n(7u8, len as usize));
        v
    }

    #[test]
    fn counts_messages_however_frames_split_them() {
        let mut all = Vec::new();
        for len in [0, 3, 300, 1, 70_000] {
            all.extend(frame(len));
        }
        // Whole, and cut at every size from 1 byte up.
        assert_eq!(MessageCounter::default().feed(&all), 5);
        for cut in [1, 2, 3, 4, 5, 6, 7, 100, 4096] {
            let mut c = MessageCounter::default();
            let n: u64 = all.chunks(cut).map(|chunk| c.feed(chunk)).sum();
            assert_eq!(n, 5, "chunks of {cut}");
            assert_eq!(c.remaining, 0);
            assert_eq!(c.header, 0);
        }
        // A header split before its length completes counts once, later.
        let mut c = MessageCounter::default();
        let f = frame(2);
        assert_eq!(c.feed(&f[..3]), 0);
        assert_eq!(c.feed(&f[3..]), 1);
    }

    #[test]
    fn every_served_method_is_known_with_its_type() {
        let known = known_methods();
        let find = |path: &str| {
            known
                .iter()
                .find(|(p, ..)| p == path)
                .map(|(_, kind, service, method)| (*kind, service.as_str(), method.as_str()))
        };
        assert_eq!(
            find("/memgate.v1.Cache/Get"),
            Some(("unary", "memgate.v1.Cache", "Get"))
        );
        assert_eq!(
            find("/memgate.v1.Cache/BatchGetStream"),
            Some(("bidi_stream", "memgate.v1.Cache", "BatchGetStream"))
        );
        assert_eq!(
            find("/memgate.v1.Cache/BatchSetStream").map(|m| m.0),
            Some("client_stream")
        );
        assert_eq!(
            find("/grpc.health.v1.Health/Watch").map(|m| m.0),
            Some("server_stream")
        );
        assert!(find("/grpc.reflection.v1.ServerReflection/ServerReflectionInfo").is_some());
    }

    #[test]
    fn disabled_metrics_render_nothing_and_record_nothing() {
        let m = Metrics::disabled();
        m.cache.get.record(true);
        assert!(m.method("/memgate.v1.Cache/Get").is_none());
        assert_eq!(m.render(), "");
        assert!(m.shard("x").latency.start().is_none());
    }

    #[test]
    fn unknown_paths_share_one_series() {
        let m = Metrics::new();
        for path in ["/a.B/C", "/x.Y/Z"] {
            m.method(path).unwrap().started.inc();
        }
        let text = m.render();
        assert!(
            text.contains(
                r#"grpc_server_started_total{grpc_method="unknown",grpc_service="unknown",grpc_type="unary"} 2"#
            ),
            "{text}"
        );
    }

    #[test]
    fn read_gives_back_what_was_recorded() {
        let m = Metrics::new();
        let get = m.method("/memgate.v1.Cache/Get").unwrap();
        get.started.inc_by(3);
        get.handled(Code::Ok).inc_by(2);
        get.handled(Code::Unavailable).inc();
        m.method("/grpc.health.v1.Health/Check")
            .unwrap()
            .started
            .inc();
        m.cache.get.record(true);
        m.cache.get.record(false);
        m.cache.batch_get.hits.inc_by(5);
        m.shed_calls.inc();
        m.cache.shed_bytes.inc_by(2);
        m.cache.deduplicated_reads.inc_by(4);
        m.inflight_calls.inc();
        let c = m.read();
        assert_eq!(
            c.methods,
            vec![
                MethodCounts {
                    service: "grpc.health.v1.Health".into(),
                    method: "Check".into(),
                    started: 1,
                    ..MethodCounts::default()
                },
                MethodCounts {
                    service: "memgate.v1.Cache".into(),
                    method: "Get".into(),
                    started: 3,
                    handled: vec![(Code::Ok, 2), (Code::Unavailable, 1)],
                    hits: 1,
                    misses: 1,
                },
            ],
            "methods never started are left out"
        );
        assert_eq!((c.hits, c.misses), (6, 1));
        assert_eq!((c.shed_calls, c.shed_bytes_calls), (1, 2));
        assert_eq!((c.deduplicated_reads, c.inflight_calls), (4, 1));

        let shard = m.shard("10.0.0.1:11211");
        shard.timeouts.inc();
        shard.ejections.inc();
        shard.connections.set(2);
        let counts = shard.read();
        assert_eq!(
            (counts.timeouts, counts.ejections, counts.connections),
            (1, 1, 2)
        );

        assert_eq!(Metrics::disabled().read(), Counts::default());
    }

    #[test]
    fn handled_codes_use_go_names() {
        let m = Metrics::new();
        let get = m.method("/memgate.v1.Cache/Get").unwrap();
        get.handled(Code::Cancelled).inc();
        get.handled(Code::ResourceExhausted).inc_by(2);
        let text = m.render();
        assert!(text.contains(r#"grpc_code="Canceled",grpc_method="Get",grpc_service="memgate.v1.Cache",grpc_type="unary"} 1"#), "{text}");
        assert!(text.contains(r#"grpc_code="ResourceExhausted",grpc_method="Get",grpc_service="memgate.v1.Cache",grpc_type="unary"} 2"#), "{text}");
        // Codes never seen export no series.
        assert!(!text.contains(r#"grpc_code="DataLoss""#));
    }
}
