//! `compare`: server CPU per operation, and throughput and latency, of four
//! targets over the same memcached processes, printed as a markdown table.
//!
//! Targets: memcached direct, twemproxy (ketama over the same memcached),
//! memgate (the release binary) and the null tonic server (no memcached;
//! the floor any tonic server pays). The figure that matters is server CPU
//! per call and per key: the load generator shares the machine's cores
//! with the servers, so calls/s mostly says how fast the whole machine
//! went, while CPU read from `/proc` for the server's own process says what
//! each call cost it. "Server" means the proxy's own process (memgate,
//! nutcracker, the null server), and for memcached direct the memcached
//! processes summed; memcached's CPU is also shown for every target, as the
//! backend cost of its traffic.
//!
//! Cells (one workload on one target) run one after another, all targets
//! for a workload in turn, so drift over the run touches every target
//! alike; each cell is warmed up first. With `--rounds N` every cell is
//! measured N times and each figure is the median.

use std::fmt::Write;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use memgate_api::v1 as pb;
use pb::cache_client::CacheClient;
use tonic::transport::{Channel, Endpoint};

use crate::cpu::cpu_time;
use crate::memcached_text::{TextClient, TextPool};
use crate::stack::{self, Proc};

/// Keys preloaded and read: `bench:0` .. `bench:9999`.
const KEYS: u64 = 10_000;
/// Unmeasured run before every cell: connections open, caches warm.
const WARM_UP: Duration = Duration::from_millis(500);
/// A call slower than this counts as an error (its reply, if it comes, is
/// still read and dropped, so a text connection stays in step).
const CALL_TIMEOUT: Duration = Duration::from_secs(5);
/// Connections per target address, for both protocols: HTTP/2 connections
/// per gRPC target, TCP connections per memcached text address (twemproxy,
/// or each memcached shard for direct). In-flight callers are spread over
/// them round-robin, as a client with a small connection pool would, so
/// every target sees the same load shape: N in flight over 4 connections,
/// requests multiplexed (HTTP/2) or pipelined (text) on each.
const CONNECTIONS: usize = 4;

/// What `compare` measures, from the command line.
pub(crate) struct Options {
    pub(crate) memgate_bin: std::path::PathBuf,
    pub(crate) memgate_args: Vec<String>,
    pub(crate) shards: usize,
    pub(crate) seconds: f64,
    pub(crate) value_bytes: usize,
    pub(crate) rounds: usize,
    pub(crate) targets: Vec<TargetKind>,
    pub(crate) workloads: Vec<Workload>,
    /// The old text load shape: one TCP connection per in-flight caller
    /// per server address, one request at a time, instead of `CONNECTIONS`
    /// pipelined ones.
    pub(crate) text_conns_per_caller: bool,
    /// The null server on one thread instead of tonic's defaults.
    pub(crate) null_single_thread: bool,
}

/// A server the workloads run against.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum TargetKind {
    /// The memcached processes themselves, keys hashed by the load generator.
    Direct,
    /// twemproxy (nutcracker), ketama with fnv1a_64 over the memcached.
    Twemproxy,
    /// The memgate release binary over the memcached.
    Memgate,
    /// The do-nothing tonic server answering from a map.
    Null,
}

impl TargetKind {
    /// Every target, in table order.
    pub(crate) const ALL: [TargetKind; 4] = [
        TargetKind::Direct,
        TargetKind::Twemproxy,
        TargetKind::Memgate,
        TargetKind::Null,
    ];

    fn label(self) -> &'static str {
        match self {
            TargetKind::Direct => "memcached direct",
            TargetKind::Twemproxy => "twemproxy",
            TargetKind::Memgate => "memgate",
            TargetKind::Null => "null tonic server",
        }
    }
}

/// The workloads, each with its fixed shape.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum Workload {
    /// Unary Get at 64 in flight.
    Get,
    /// BatchGet of 100 keys at 16 in flight (memcached: one multi-key get;
    /// direct: one per shard, all sent before any reply is read).
    BatchGet,
    /// BatchSet of 100 acknowledged items at 16 in flight (memcached: 100
    /// pipelined sets).
    BatchSet,
    /// Unary Get with 1 in flight: latency.
    GetLatency,
}

impl Workload {
    /// Every workload, in table order.
    pub(crate) const ALL: [Workload; 4] = [
        Workload::Get,
        Workload::BatchGet,
        Workload::BatchSet,
        Workload::GetLatency,
    ];

    fn in_flight(self) -> usize {
        match self {
            Workload::Get => 64,
            Workload::BatchGet | Workload::BatchSet => 16,
            Workload::GetLatency => 1,
        }
    }

    fn keys_per_call(self) -> usize {
        match self {
            Workload::Get | Workload::GetLatency => 1,
            Workload::BatchGet | Workload::BatchSet => 100,
        }
    }

    fn label(self) -> String {
        let n = self.in_flight();
        match self {
            Workload::Get | Workload::GetLatency => format!("Get, {n} in flight"),
            Workload::BatchGet => format!("BatchGet 100 keys, {n} in flight"),
            Workload::BatchSet => format!("BatchSet 100 items, {n} in flight"),
        }
    }
}

/// One in-flight caller's connection(s) to a target.
enum Caller {
    /// memcached text protocol (direct or through twemproxy), on one
    /// pipelined connection per server shared with other callers.
    Text(TextClient),
    /// The generated gRPC stub on one of the target's HTTP/2 connections.
    Grpc(CacheClient<Channel>),
}

impl Caller {
    /// One call of `workload` on `keys` (writing `value`); returns how many
    /// keys were missing (every key is preloaded, so misses mean a bug).
    async fn call(
        &mut self,
        workload: Workload,
        keys: &[String],
        value: &[u8],
    ) -> Result<u64, String> {
        match tokio::time::timeout(CALL_TIMEOUT, self.call_untimed(workload, keys, value)).await {
            Ok(r) => r,
            Err(_) => Err("timed out".into()),
        }
    }

    async fn call_untimed(
        &mut self,
        workload: Workload,
        keys: &[String],
        value: &[u8],
    ) -> Result<u64, String> {
        let missing = |found: usize| (keys.len() - found.min(keys.len())) as u64;
        match (self, workload) {
            (Caller::Text(c), Workload::Get | Workload::GetLatency) => {
                let found = c.get(&keys[0]).await.map_err(|e| e.to_string())?;
                Ok(missing(usize::from(found)))
            }
            (Caller::Text(c), Workload::BatchGet) => {
                let found = c.get_many(keys).await.map_err(|e| e.to_string())?;
                Ok(missing(found))
            }
            (Caller::Text(c), Workload::BatchSet) => {
                c.set_many(keys, value).await.map_err(|e| e.to_string())?;
                Ok(0)
            }
            (Caller::Grpc(c), Workload::Get | Workload::GetLatency) => {
                let req = pb::GetRequest {
                    key: keys[0].clone(),
                    ..Default::default()
                };
                let resp = c.get(req).await.map_err(|s| s.to_string())?.into_inner();
                Ok(missing(usize::from(resp.found)))
            }
            (Caller::Grpc(c), Workload::BatchGet) => {
                let req = pb::BatchGetRequest {
                    keys: keys.to_vec(),
                };
                let results = c
                    .batch_get(req)
                    .await
                    .map_err(|s| s.to_string())?
                    .into_inner()
                    .results;
                if let Some(r) = results.iter().find(|r| !r.error.is_empty()) {
                    return Err(format!("{}: {}", r.key, r.error));
                }
                Ok(missing(results.iter().filter(|r| r.found).count()))
            }
            (Caller::Grpc(c), Workload::BatchSet) => {
                let items = keys
                    .iter()
                    .map(|k| pb::SetRequest {
                        key: k.clone(),
                        value: bytes::Bytes::copy_from_slice(value),
                        ttl_seconds: Some(0),
                        ..Default::default()
                    })
                    .collect();
                let resp = c
                    .batch_set(pb::BatchSetRequest { items })
                    .await
                    .map_err(|s| s.to_string())?
                    .into_inner();
                match resp.errors.first() {
                    Some(e) => Err(format!("{}: {}", e.key, e.message)),
                    None if resp.stored as usize != keys.len() => {
                        Err(format!("stored {} of {}", resp.stored, keys.len()))
                    }
                    None => Ok(0),
                }
            }
        }
    }
}

/// A started target: the processes whose CPU is its "server" CPU, and one
/// caller per in-flight slot of the widest workload.
struct Target {
    kind: TargetKind,
    server_pids: Vec<u32>,
    callers: Vec<Caller>,
}

/// What one workload run produced.
struct Sample {
    calls: u64,
    keys: u64,
    errors: u64,
    missing: u64,
    elapsed: Duration,
    latency: Histogram<u64>,
}

/// Runs `workload` closed-loop from every caller for `duration`; hands the
/// callers back so their connections outlive the run.
async fn drive(
    callers: Vec<Caller>,
    workload: Workload,
    duration: Duration,
    value: &[u8],
) -> (Sample, Vec<Caller>) {
    let start = Instant::now();
    let deadline = start + duration;
    let tasks: Vec<_> = callers
        .into_iter()
        .enumerate()
        .map(|(t, mut caller)| {
            let value = value.to_vec();
            tokio::spawn(async move {
                let mut rng = fastrand::Rng::with_seed(t as u64);
                let mut keys = vec![String::new(); workload.keys_per_call()];
                let mut s = Sample {
                    calls: 0,
                    keys: 0,
                    errors: 0,
                    missing: 0,
                    elapsed: Duration::ZERO,
                    latency: histogram(),
                };
                while Instant::now() < deadline {
                    // A batch is a run of consecutive keys from a random start.
                    let first = rng.u64(0..KEYS);
                    for (j, k) in keys.iter_mut().enumerate() {
                        k.clear();
                        let _ = write!(k, "bench:{}", (first + j as u64) % KEYS);
                    }
                    let t0 = Instant::now();
                    match caller.call(workload, &keys, &value).await {
                        Ok(missing) => {
                            s.calls += 1;
                            s.keys += keys.len() as u64;
                            s.missing += missing;
                        }
                        Err(e) => {
                            if s.errors == 0 {
                                eprintln!("  error: {e}");
                            }
                            s.errors += 1;
                        }
                    }
                    let _ = s.latency.record(t0.elapsed().as_micros().max(1) as u64);
                }
                (s, caller)
            })
        })
        .collect();
    let mut total = Sample {
        calls: 0,
        keys: 0,
        errors: 0,
        missing: 0,
        elapsed: Duration::ZERO,
        latency: histogram(),
    };
    let mut callers = Vec::with_capacity(tasks.len());
    for t in tasks {
        let (s, caller) = t.await.expect("a load task panicked");
        total.latency.add(s.latency).unwrap();
        total.calls += s.calls;
        total.keys += s.keys;
        total.errors += s.errors;
        total.missing += s.missing;
        callers.push(caller);
    }
    total.elapsed = start.elapsed();
    (total, callers)
}

fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 60_000_000, 3).unwrap()
}

fn key(i: u64) -> String {
    format!("bench:{}", i % KEYS)
}

/// One cell's figures.
#[derive(Clone, Copy)]
struct Cell {
    calls_per_s: f64,
    keys_per_s: f64,
    p50_us: f64,
    p99_us: f64,
    /// Server CPU per call, µs; `None` if `/proc` could not be read.
    server_us: Option<f64>,
    /// memcached CPU (all shards) per call, µs.
    memcached_us: Option<f64>,
    errors: u64,
    missing: u64,
}

/// Warms `target` up, then measures one cell of `workload`.
async fn measure(
    target: &mut Target,
    memcached_pids: &[u32],
    workload: Workload,
    duration: Duration,
    value: &[u8],
) -> Cell {
    let callers: Vec<Caller> = target.callers.drain(..workload.in_flight()).collect();
    let (_, callers) = drive(callers, workload, WARM_UP, value).await;
    let server_before = cpu_time(&target.server_pids);
    let memcached_before = cpu_time(memcached_pids);
    let (s, callers) = drive(callers, workload, duration, value).await;
    let server_after = cpu_time(&target.server_pids);
    let memcached_after = cpu_time(memcached_pids);
    target.callers.splice(0..0, callers);

    let per_call = |before: Option<Duration>, after: Option<Duration>| {
        let spent = after?.checked_sub(before?)?;
        (s.calls > 0).then(|| spent.as_secs_f64() * 1e6 / s.calls as f64)
    };
    let secs = s.elapsed.as_secs_f64();
    Cell {
        calls_per_s: s.calls as f64 / secs,
        keys_per_s: s.keys as f64 / secs,
        p50_us: s.latency.value_at_quantile(0.5) as f64,
        p99_us: s.latency.value_at_quantile(0.99) as f64,
        server_us: per_call(server_before, server_after),
        memcached_us: per_call(memcached_before, memcached_after),
        errors: s.errors,
        missing: s.missing,
    }
}

/// Opens `CONNECTIONS` HTTP/2 connections to `addr` and gives the
/// callers their stubs round-robin over them.
async fn grpc_callers(addr: &str, callers: usize) -> Vec<Caller> {
    let endpoint = Endpoint::from_shared(format!("http://{addr}"))
        .unwrap()
        .tcp_nodelay(true);
    let mut channels = Vec::new();
    for _ in 0..CONNECTIONS {
        // Each `connect` is its own connection; clones of a channel share one.
        channels.push(endpoint.connect().await.expect("gRPC connect"));
    }
    (0..callers)
        .map(|i| Caller::Grpc(CacheClient::new(channels[i % channels.len()].clone())))
        .collect()
}

/// Starts the memcached processes and the selected targets, preloads the
/// keys through each target, measures every cell and prints the table.
pub(crate) async fn compare(opts: &Options) {
    let (dir, memcached, addrs) = crate::start_pool(opts.shards);
    let memcached_pids: Vec<u32> = memcached.iter().map(Proc::pid).collect();
    let callers = opts
        .workloads
        .iter()
        .map(|w| w.in_flight())
        .max()
        .unwrap_or(1);
    // Text connections per server address: shared and pipelined, or (the
    // old shape) one per caller, each then carrying one request at a time.
    let text_conns = if opts.text_conns_per_caller {
        callers
    } else {
        CONNECTIONS
    };
    let text_callers = |servers: &[String]| -> Vec<Caller> {
        let pool = TextPool::new(servers, text_conns);
        (0..callers).map(|i| Caller::Text(pool.client(i))).collect()
    };

    // The processes are kept here so they live until the table is printed.
    let mut procs: Vec<Proc> = Vec::new();
    let mut targets: Vec<Target> = Vec::new();
    for &kind in &opts.targets {
        let (server_pids, callers) = match kind {
            TargetKind::Direct => (memcached_pids.clone(), text_callers(&addrs)),
            TargetKind::Twemproxy => {
                let Some(p) = stack::twemproxy(dir.path(), &addrs) else {
                    eprintln!("nutcracker (twemproxy) is not installed: skipping it");
                    continue;
                };
                let c = text_callers(std::slice::from_ref(&p.addr));
                let pid = p.pid();
                procs.push(p);
                (vec![pid], c)
            }
            TargetKind::Memgate => {
                let p = stack::memgate(&opts.memgate_bin, &addrs, &opts.memgate_args);
                let c = grpc_callers(&p.addr, callers).await;
                let pid = p.pid();
                procs.push(p);
                (vec![pid], c)
            }
            TargetKind::Null => {
                let p = stack::null_server(opts.null_single_thread);
                let c = grpc_callers(&p.addr, callers).await;
                let pid = p.pid();
                procs.push(p);
                (vec![pid], c)
            }
        };
        targets.push(Target {
            kind,
            server_pids,
            callers,
        });
    }

    let value = vec![b'v'; opts.value_bytes];
    // Every target places keys its own way (twemproxy by ketama, memgate by
    // its ring, the null server in its map), so each is loaded through itself.
    let all: Vec<String> = (0..KEYS).map(key).collect();
    for t in &mut targets {
        for chunk in all.chunks(100) {
            t.callers[0]
                .call(Workload::BatchSet, chunk, &value)
                .await
                .unwrap_or_else(|e| panic!("preloading {}: {e}", t.kind.label()));
        }
    }

    // cells[round][workload][target]
    let duration = Duration::from_secs_f64(opts.seconds);
    let mut cells = Vec::new();
    for round in 0..opts.rounds {
        let mut by_workload = Vec::new();
        for &w in &opts.workloads {
            let mut row = Vec::new();
            for t in &mut targets {
                eprintln!(
                    "round {}/{}: {} on {}",
                    round + 1,
                    opts.rounds,
                    w.label(),
                    t.kind.label()
                );
                let cell = measure(t, &memcached_pids, w, duration, &value).await;
                if cell.missing > 0 {
                    eprintln!("  warning: {} preloaded keys were missing", cell.missing);
                }
                row.push(cell);
            }
            by_workload.push(row);
        }
        cells.push(by_workload);
    }

    let twemproxy = targets.iter().position(|t| t.kind == TargetKind::Twemproxy);
    println!("{}", header(opts));
    println!();
    println!(
        "| workload | target | calls/s | keys/s | p50 µs | p99 µs | server CPU µs/call | server CPU µs/key | CPU ×twemproxy | memcached CPU µs/call | errors |"
    );
    println!("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    for (wi, &w) in opts.workloads.iter().enumerate() {
        for (ti, t) in targets.iter().enumerate() {
            let rounds: Vec<Cell> = cells.iter().map(|r| r[wi][ti]).collect();
            let med = |f: &dyn Fn(&Cell) -> Option<f64>| median(rounds.iter().filter_map(f));
            let server = med(&|c| c.server_us);
            // The ratio is taken within each round (same drift), then the median.
            let ratio = twemproxy.and_then(|tw| {
                median(
                    cells
                        .iter()
                        .filter_map(|r| Some(r[wi][ti].server_us? / r[wi][tw].server_us?)),
                )
            });
            let errors: u64 = rounds.iter().map(|c| c.errors).sum();
            let missing: u64 = rounds.iter().map(|c| c.missing).sum();
            let errors = match missing {
                0 => errors.to_string(),
                m => format!("{errors} ({m} keys missing)"),
            };
            println!(
                "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {errors} |",
                w.label(),
                t.kind.label(),
                whole(med(&|c| Some(c.calls_per_s))),
                whole(med(&|c| Some(c.keys_per_s))),
                whole(med(&|c| Some(c.p50_us))),
                whole(med(&|c| Some(c.p99_us))),
                micros(server),
                micros(server.map(|s| s / w.keys_per_call() as f64)),
                ratio.map_or("—".into(), |r| format!("{r:.2}×")),
                micros(med(&|c| c.memcached_us)),
            );
        }
    }
    drop(procs);
}

/// The one line above the table: what was run, so a pasted table says how
/// to reproduce it.
fn header(opts: &Options) -> String {
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let mut h = format!(
        "memgate-bench compare: {} memcached (2 threads each), {}-byte values, {KEYS} keys preloaded, \
         {} s per cell after {} s warm-up, {} round(s) (median), {cores} CPUs; server CPU = utime+stime \
         from /proc of the proxy's own process (direct: the memcached processes summed)",
        opts.shards,
        opts.value_bytes,
        opts.seconds,
        WARM_UP.as_secs_f64(),
        opts.rounds,
    );
    let text_shape = if opts.text_conns_per_caller {
        "1 TCP connection per in-flight caller per address (direct: per memcached shard), one request at a time"
            .to_string()
    } else {
        format!(
            "{CONNECTIONS} TCP connections per address (direct: per memcached shard), requests pipelined, replies in order"
        )
    };
    h.push_str(&format!(
        "; load shape: each workload's N in-flight callers spread round-robin over the target's connections \
         (1 in flight: one connection): memgate and null: {CONNECTIONS} HTTP/2 connections, calls multiplexed; \
         direct and twemproxy: {text_shape}"
    ));
    if !opts.memgate_args.is_empty() {
        h.push_str(&format!("; memgate args: {}", opts.memgate_args.join(" ")));
    }
    h
}

fn median(values: impl Iterator<Item = f64>) -> Option<f64> {
    let mut v: Vec<f64> = values.collect();
    if v.is_empty() {
        return None;
    }
    v.sort_by(f64::total_cmp);
    let mid = v.len() / 2;
    Some(if v.len() % 2 == 1 {
        v[mid]
    } else {
        (v[mid - 1] + v[mid]) / 2.0
    })
}

fn whole(v: Option<f64>) -> String {
    v.map_or("—".into(), |v| format!("{v:.0}"))
}

/// Three significant figures, enough for CPU figures that drift by more.
fn micros(v: Option<f64>) -> String {
    match v {
        None => "—".into(),
        Some(v) if v >= 100.0 => format!("{v:.0}"),
        Some(v) if v >= 10.0 => format!("{v:.1}"),
        Some(v) if v >= 1.0 => format!("{v:.2}"),
        Some(0.0) => "0".into(),
        Some(v) => format!("{v:.3}"),
    }
}
