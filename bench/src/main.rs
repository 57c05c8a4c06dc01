//! `memgate-bench`: speed measured, not asserted.
//!
//! `compare` measures server CPU per operation (from `/proc`), throughput
//! and latency of memcached direct, twemproxy, memgate and a do-nothing
//! tonic server, over the same memcached processes, in one run, and prints
//! a markdown table (see the `compare` module).
//! `soak` runs mixed load through memgate for a while and checks that no
//! acknowledged write was lost and that memory stays flat.

mod compare;
mod cpu;
mod memcached_text;
mod null_server;
mod rebalance;
mod stack;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use bytes::Bytes;
use clap::{Parser, Subcommand};
use compare::{TargetKind, Workload};
use memgate_client::Client;

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
    /// Server CPU per call and per key, throughput and latency of memcached
    /// direct, twemproxy, memgate and a do-nothing tonic server: a markdown
    /// table on stdout.
    Compare {
        /// Measured time per cell (one workload on one target), in seconds.
        #[arg(long, default_value_t = 5.0)]
        seconds: f64,
        /// Value size in bytes.
        #[arg(long, default_value_t = 100)]
        value_bytes: usize,
        /// Targets to measure, comma-separated (default: all); alias --only.
        #[arg(long, alias = "only", value_enum, value_delimiter = ',')]
        targets: Vec<TargetKind>,
        /// Workloads to run, comma-separated (default: all).
        #[arg(long, value_enum, value_delimiter = ',')]
        workloads: Vec<Workload>,
        /// An extra flag for memgate, e.g. `--memgate-arg=--max-idle-conns=4`
        /// (repeatable), to compare settings.
        #[arg(long = "memgate-arg", allow_hyphen_values = true)]
        memgate_args: Vec<String>,
        /// Measure every cell this many times (interleaved) and report medians.
        #[arg(long, default_value_t = 1)]
        rounds: usize,
        /// Give memcached direct and twemproxy the old load shape: one TCP
        /// connection per in-flight caller (per server address), one
        /// request at a time, instead of 4 connections per address shared
        /// by the callers with requests pipelined (the gRPC targets' shape).
        #[arg(long)]
        text_conns_per_caller: bool,
        /// Serve the null server on one thread (tokio's current-thread
        /// runtime, as memgate's default `--worker-threads 1`) instead of
        /// tonic's defaults (the multi-threaded runtime).
        #[arg(long)]
        null_single_thread: bool,
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
    /// The hit ratio after a server joins and after one leaves, with and
    /// without memgate's rebalance window: a markdown table on stdout.
    Rebalance {
        /// Keys written before the changes.
        #[arg(long, default_value_t = 20_000)]
        keys: usize,
    },
    /// The do-nothing tonic server `compare` measures; run by `compare`
    /// itself as a separate process, so its CPU can be read from /proc.
    #[command(hide = true)]
    NullServer {
        /// Address to listen on.
        #[arg(long)]
        listen: SocketAddr,
        /// Serve on one thread (a current-thread runtime).
        #[arg(long)]
        single_thread: bool,
    },
}

/// Starts `shards` memcached processes (256 MiB, 2 threads each) in a temp
/// dir that memcached, dropping to `nobody`, can write its port file to.
pub(crate) fn start_pool(shards: usize) -> (tempfile::TempDir, Vec<stack::Proc>, Vec<String>) {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o777)).unwrap();
    let mcs: Vec<_> = (0..shards)
        .map(|i| stack::memcached(dir.path(), i, 256, 2))
        .collect();
    let addrs = mcs.iter().map(|m| m.addr.clone()).collect();
    (dir, mcs, addrs)
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

/// The options `chosen`, in table order and once each; all of them when
/// none was chosen.
fn or_all<T: Copy + PartialEq>(chosen: &[T], all: &[T]) -> Vec<T> {
    all.iter()
        .copied()
        .filter(|a| chosen.is_empty() || chosen.contains(a))
        .collect()
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    match &cli.command {
        Command::Compare {
            seconds,
            value_bytes,
            targets,
            workloads,
            memgate_args,
            rounds,
            text_conns_per_caller,
            null_single_thread,
        } => {
            compare::compare(&compare::Options {
                memgate_bin: cli.memgate_bin.clone(),
                memgate_args: memgate_args.clone(),
                shards: cli.shards,
                seconds: *seconds,
                value_bytes: *value_bytes,
                rounds: (*rounds).max(1),
                targets: or_all(targets, &TargetKind::ALL),
                workloads: or_all(workloads, &Workload::ALL),
                text_conns_per_caller: *text_conns_per_caller,
                null_single_thread: *null_single_thread,
            })
            .await;
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
        Command::Rebalance { keys } => {
            rebalance::run(&cli.memgate_bin, cli.shards, *keys).await;
            std::process::ExitCode::SUCCESS
        }
        Command::NullServer {
            listen,
            single_thread,
        } => {
            let listen = *listen;
            let served = if *single_thread {
                // Its own current-thread runtime on a thread of its own;
                // this multi-threaded one stays idle meanwhile.
                std::thread::spawn(move || {
                    tokio::runtime::Builder::new_current_thread()
                        .enable_all()
                        .build()
                        .expect("a current-thread runtime")
                        .block_on(null_server::serve(listen))
                })
                .join()
                .expect("the null server thread")
            } else {
                null_server::serve(listen).await
            };
            match served {
                Ok(()) => std::process::ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("null server: {e}");
                    std::process::ExitCode::FAILURE
                }
            }
        }
    }
}
