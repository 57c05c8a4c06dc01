//! `memgate-bench`: speed measured, not asserted.
//!
//! `compare` runs the same workloads, in one run, against memcached
//! directly (memgate's own consistent-hashing client library, in-process —
//! the fastest a service could talk to the pool), through twemproxy when it
//! is installed, and through memgate over gRPC, and prints a table.
//! `soak` runs mixed load through memgate for a while and checks that no
//! acknowledged write was lost and that memory stays flat.

mod stack;

use std::collections::HashMap;
use std::future::Future;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use clap::{Parser, Subcommand};
use hdrhistogram::Histogram;
use memgate_client::Client;
use memgate_server::key::{Key, Ttl};
use memgate_server::store::memcached::shard::PoolSettings;
use memgate_server::store::memcached::{OnShardDown, ShardedStore, ring::ShardSpec};
use memgate_server::store::{Item, Store};

#[derive(Parser, Debug)]
#[command(name = "memgate-bench", about)]
struct Cli {
    /// The memgate binary to run (build it with --release).
    #[arg(long, default_value = "target/release/memgate", global = true)]
    memgate_bin: PathBuf,
    /// memcached processes to start.
    #[arg(long, default_value_t = 3, global = true)]
    shards: usize,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Side-by-side throughput and latency: direct, twemproxy, memgate.
    Compare {
        /// Concurrent callers per workload.
        #[arg(long, default_value_t = 32)]
        concurrency: usize,
        /// Measured time per workload and target, in seconds.
        #[arg(long, default_value_t = 5)]
        seconds: u64,
        /// Value size in bytes.
        #[arg(long, default_value_t = 100)]
        value_bytes: usize,
    },
    /// Mixed load through memgate; fails on a lost write or memory growth.
    Soak {
        /// How long, in seconds.
        #[arg(long, default_value_t = 60)]
        seconds: u64,
        /// Concurrent callers.
        #[arg(long, default_value_t = 32)]
        concurrency: usize,
    },
}

/// What a workload runs against.
#[derive(Clone)]
enum Target {
    /// memgate's client library straight to memcached (or to twemproxy).
    Direct(Arc<ShardedStore>),
    /// memgate over gRPC.
    Memgate(Client),
}

impl Target {
    async fn get(&self, key: &str) -> Result<Option<Bytes>, String> {
        match self {
            Target::Direct(s) => s
                .get(&Key::parse(key).unwrap())
                .await
                .map_err(|e| e.to_string()),
            Target::Memgate(c) => c.get(key).await.map_err(|e| e.to_string()),
        }
    }

    async fn set(&self, key: &str, value: Bytes) -> Result<(), String> {
        match self {
            Target::Direct(s) => s
                .set(Item {
                    key: Key::parse(key).unwrap(),
                    value,
                    ttl: Ttl::Forever,
                })
                .await
                .map_err(|e| e.to_string()),
            Target::Memgate(c) => c
                .set(key, value, Some(Duration::ZERO))
                .await
                .map_err(|e| e.to_string()),
        }
    }

    /// Reads `keys` in one batch; returns how many were found.
    async fn get_many(&self, keys: &[String]) -> Result<usize, String> {
        match self {
            Target::Direct(s) => {
                let keys: Vec<Key> = keys
                    .iter()
                    .map(|k| Key::parse(k.as_str()).unwrap())
                    .collect();
                let results = s.get_many(&keys).await;
                let mut found = 0;
                for r in results {
                    found += usize::from(r.map_err(|e| e.to_string())?.is_some());
                }
                Ok(found)
            }
            Target::Memgate(c) => {
                let results = c.get_many(keys.to_vec()).await.map_err(|e| e.to_string())?;
                Ok(results.iter().filter(|l| l.value.is_some()).count())
            }
        }
    }
}

fn direct(addrs: &[String]) -> Arc<ShardedStore> {
    let specs: Vec<ShardSpec> = addrs.iter().map(|a| a.parse().unwrap()).collect();
    let settings = PoolSettings {
        timeout: Duration::from_secs(2),
        connect_timeout: Duration::from_secs(1),
        conns_per_shard: 2,
        keepalive: None,
        failure_limit: 1000,
        retry_timeout: Duration::from_secs(1),
    };
    Arc::new(ShardedStore::new(
        &specs,
        settings,
        1 << 20,
        OnShardDown::Fail,
    ))
}

/// Throughput and latency of one workload run.
struct Stats {
    ops: u64,
    items: u64,
    errors: u64,
    elapsed: Duration,
    latency: Histogram<u64>,
}

/// Runs `op` from `concurrency` tasks for `duration`; `op(task, i)` returns
/// how many items it handled.
async fn run<F, Fut>(concurrency: usize, duration: Duration, op: F) -> Stats
where
    F: Fn(usize, u64) -> Fut + Clone + Send + 'static,
    Fut: Future<Output = Result<u64, String>> + Send,
{
    let start = Instant::now();
    let deadline = start + duration;
    let tasks: Vec<_> = (0..concurrency)
        .map(|t| {
            let op = op.clone();
            tokio::spawn(async move {
                let mut h = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).unwrap();
                let (mut ops, mut items, mut errors) = (0, 0, 0);
                let mut i = 0;
                while Instant::now() < deadline {
                    let t0 = Instant::now();
                    match op(t, i).await {
                        Ok(n) => {
                            items += n;
                            ops += 1;
                        }
                        Err(_) => errors += 1,
                    }
                    let _ = h.record(t0.elapsed().as_micros().max(1) as u64);
                    i += 1;
                }
                (h, ops, items, errors)
            })
        })
        .collect();
    let mut total = Stats {
        ops: 0,
        items: 0,
        errors: 0,
        elapsed: Duration::ZERO,
        latency: Histogram::new_with_bounds(1, 60_000_000, 3).unwrap(),
    };
    for t in tasks {
        let (h, ops, items, errors) = t.await.unwrap();
        total.latency.add(h).unwrap();
        total.ops += ops;
        total.items += items;
        total.errors += errors;
    }
    total.elapsed = start.elapsed();
    total
}

const KEYS: u64 = 10_000;

fn key(i: u64) -> String {
    format!("bench:{}", i % KEYS)
}

fn print_row(workload: &str, target: &str, s: &Stats) {
    let secs = s.elapsed.as_secs_f64();
    println!(
        "| {workload} | {target} | {:.0} | {:.0} | {} | {} | {} | {} |",
        s.ops as f64 / secs,
        s.items as f64 / secs,
        s.latency.value_at_quantile(0.5),
        s.latency.value_at_quantile(0.99),
        s.latency.value_at_quantile(0.999),
        s.errors
    );
}

/// Starts `shards` memcached processes (256 MiB, 2 threads each) in a temp
/// dir that memcached, dropping to `nobody`, can write its port file to.
fn start_pool(shards: usize) -> (tempfile::TempDir, Vec<stack::Proc>, Vec<String>) {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o777)).unwrap();
    let mcs: Vec<_> = (0..shards)
        .map(|i| stack::memcached(dir.path(), i, 256, 2))
        .collect();
    let addrs = mcs.iter().map(|m| m.addr.clone()).collect();
    (dir, mcs, addrs)
}

async fn compare(cli: &Cli, concurrency: usize, seconds: u64, value_bytes: usize) {
    let (dir, _mcs, addrs) = start_pool(cli.shards);
    let mg = stack::memgate(&cli.memgate_bin, &addrs, &[]);
    let twem = stack::twemproxy(dir.path(), &addrs);

    let mut targets: Vec<(&str, Target)> =
        vec![("memcached direct", Target::Direct(direct(&addrs)))];
    if let Some(t) = &twem {
        targets.push((
            "twemproxy",
            Target::Direct(direct(std::slice::from_ref(&t.addr))),
        ));
    }
    let client = Client::connect(format!("http://{}", mg.addr))
        .await
        .unwrap();
    targets.push(("memgate (gRPC)", Target::Memgate(client)));

    let value = Bytes::from(vec![b'v'; value_bytes]);
    // Preload every key through each target: twemproxy places keys with its
    // own ketama, so each target must find its keys where it looks.
    for (_, target) in &targets {
        for i in 0..KEYS {
            target.set(&key(i), value.clone()).await.unwrap();
        }
    }

    println!(
        "{} memcached shards, {concurrency} concurrent callers, {seconds} s per cell, {value_bytes}-byte values, {KEYS} keys",
        cli.shards
    );
    println!();
    println!("| workload | target | calls/s | keys/s | p50 µs | p99 µs | p99.9 µs | errors |");
    println!("|---|---|---|---|---|---|---|---|");
    let duration = Duration::from_secs(seconds);
    for workload in ["get", "set", "batch get (100 keys)"] {
        for (name, target) in &targets {
            let target = target.clone();
            let value = value.clone();
            let stats = match workload {
                "get" => {
                    run(concurrency, duration, move |t, i| {
                        let target = target.clone();
                        async move {
                            target
                                .get(&key(i * 7919 + t as u64))
                                .await
                                .map(|v| u64::from(v.is_some()))
                        }
                    })
                    .await
                }
                "set" => {
                    run(concurrency, duration, move |t, i| {
                        let (target, value) = (target.clone(), value.clone());
                        async move {
                            target
                                .set(&key(i * 7919 + t as u64), value)
                                .await
                                .map(|_| 1)
                        }
                    })
                    .await
                }
                _ => {
                    run(concurrency, duration, move |t, i| {
                        let target = target.clone();
                        async move {
                            let keys: Vec<String> = (0..100)
                                .map(|j| key(i * 104_729 + t as u64 * 100 + j))
                                .collect();
                            target.get_many(&keys).await.map(|n| n as u64)
                        }
                    })
                    .await
                }
            };
            print_row(workload, name, &stats);
        }
    }
}

async fn soak(cli: &Cli, seconds: u64, concurrency: usize) -> bool {
    // The temp dir and the memcached processes live until the soak ends.
    let (_dir, _mcs, addrs) = start_pool(cli.shards);
    let mg = stack::memgate(&cli.memgate_bin, &addrs, &[]);
    let client = Client::connect(format!("http://{}", mg.addr))
        .await
        .unwrap();
    let pid = mg.pid();

    println!(
        "soak: {seconds} s, {concurrency} callers, {} shards, memgate pid {pid}",
        cli.shards
    );
    let deadline = Instant::now() + Duration::from_secs(seconds);
    let sampler = tokio::spawn(async move {
        let mut samples = Vec::new();
        while Instant::now() < deadline {
            if let Some(kib) = stack::rss_kib(pid) {
                samples.push(kib);
                println!("  rss {kib} KiB");
            }
            tokio::time::sleep(
                Duration::from_secs(5).min(deadline.saturating_duration_since(Instant::now())),
            )
            .await;
        }
        samples
    });

    // Each caller owns its keys, so it knows what every read must return.
    let tasks: Vec<_> = (0..concurrency)
        .map(|t| {
            let c = client.clone();
            tokio::spawn(async move {
                let mut expect: HashMap<String, Option<Bytes>> = HashMap::new();
                let (mut ops, mut errors, mut wrong) = (0u64, 0u64, 0u64);
                let mut seq = 0u64;
                while Instant::now() < deadline {
                    seq += 1;
                    let k = format!("soak:{t}:{}", fastrand::u32(0..200));
                    match fastrand::u8(0..100) {
                        0..60 => {
                            let len = fastrand::usize(8..4096);
                            let mut v = format!("{k}:{seq}:").into_bytes();
                            v.resize(len.max(v.len()), b'.');
                            let v = Bytes::from(v);
                            match c.set(&k, v.clone(), Some(Duration::ZERO)).await {
                                Ok(()) => {
                                    expect.insert(k, Some(v));
                                }
                                // Unknown outcome: no expectation.
                                Err(_) => {
                                    errors += 1;
                                    expect.remove(&k);
                                }
                            }
                        }
                        60..90 => match c.get(&k).await {
                            Ok(got) => {
                                if let Some(want) = expect.get(&k) {
                                    wrong += u64::from(&got != want);
                                }
                            }
                            Err(_) => errors += 1,
                        },
                        _ => match c.delete(&k).await {
                            Ok(_) => {
                                expect.insert(k, None);
                            }
                            Err(_) => {
                                errors += 1;
                                expect.remove(&k);
                            }
                        },
                    }
                    ops += 1;
                }
                // Every acknowledged write must still be there.
                let keys: Vec<String> = expect.keys().cloned().collect();
                for chunk in keys.chunks(100) {
                    let got = c.get_many(chunk.to_vec()).await.expect("final read");
                    for l in got {
                        wrong += u64::from(&l.value != expect.get(&l.key).unwrap());
                    }
                }
                (ops, errors, wrong)
            })
        })
        .collect();
    let (mut ops, mut errors, mut wrong) = (0, 0, 0);
    for t in tasks {
        let (o, e, w) = t.await.unwrap();
        ops += o;
        errors += e;
        wrong += w;
    }
    let samples = sampler.await.unwrap();
    println!(
        "ops {ops} ({:.0}/s), errors {errors}, lost or wrong acknowledged writes {wrong}",
        ops as f64 / seconds as f64
    );
    // Memory is flat when the last sample is within 20% (+8 MiB) of the
    // first one taken after warm-up.
    let flat = match (samples.get(1), samples.last()) {
        (Some(&warm), Some(&last)) => {
            let ok = last <= warm + warm / 5 + 8 * 1024;
            println!(
                "rss after warm-up {warm} KiB, at the end {last} KiB: {}",
                if ok { "flat" } else { "GROWING" }
            );
            ok
        }
        _ => true,
    };
    wrong == 0 && flat
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    match &cli.command {
        Command::Compare {
            concurrency,
            seconds,
            value_bytes,
        } => {
            compare(&cli, *concurrency, *seconds, *value_bytes).await;
            std::process::ExitCode::SUCCESS
        }
        Command::Soak {
            seconds,
            concurrency,
        } => {
            if soak(&cli, *seconds, *concurrency).await {
                std::process::ExitCode::SUCCESS
            } else {
                std::process::ExitCode::FAILURE
            }
        }
    }
}
