//! `memgate-cli`: the operator's command line for memgate, for when grpcurl
//! is not at hand. Values come from arguments, files or stdin; `get` prints
//! the raw value and exits 1 on a miss, so it composes in shell scripts.

use std::io::{Read, Write};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use base64::Engine;
use clap::{Args, Parser, Subcommand};
use memgate_client::v1 as pb;
use memgate_client::{
    Client, Condition, Entry, Error, GetOptions, Item, Lookup, ServingStatus, SetOutcome,
};
use serde_json::{Value, json};

/// Talk to a memgate server.
#[derive(Parser, Debug)]
#[command(name = "memgate-cli", version, about)]
struct Cli {
    /// Server address: http://host:port, https://host:port or host:port.
    #[arg(long, env = "MEMGATE_TARGET", default_value = "http://127.0.0.1:50051")]
    target: String,
    /// Deadline of each call, e.g. 500ms or 5s.
    #[arg(long, default_value = "5s", value_parser = parse_duration)]
    timeout: Duration,
    /// Bearer token sent with every call.
    #[arg(long, env = "MEMGATE_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// CA certificate (PEM) to trust for an https target.
    #[arg(long)]
    ca: Option<PathBuf>,
    /// Print results as JSON (values as UTF-8 text when they are, else
    /// base64 under `value_base64`).
    #[arg(long)]
    json: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Print a key's value (exit 1 on a miss). An invalidated key prints
    /// its old value.
    Get {
        key: String,
        /// First print a line `cas=N ttl=SECONDS|never stale=true|false`
        /// (with --json: adds cas, ttl_remaining_seconds and stale).
        #[arg(long)]
        meta: bool,
        /// Get-and-touch: also set the key's TTL to this many seconds (0:
        /// never expires).
        #[arg(long, value_name = "TTL")]
        touch: Option<u32>,
    },
    /// Store a value: from VALUE, --file, or stdin when neither is given.
    Set {
        #[command(flatten)]
        write: WriteArgs,
        /// Compare-and-swap: store only if the key's CAS token is still N
        /// (from `get --meta`); exit 1 when not stored.
        #[arg(long, value_name = "N")]
        cas: Option<u64>,
    },
    /// Store a value only if the key does not exist (exit 1 if it does).
    Add {
        #[command(flatten)]
        write: WriteArgs,
    },
    /// Store a value only if the key exists (exit 1 if it does not).
    Replace {
        #[command(flatten)]
        write: WriteArgs,
    },
    /// Delete a key (exit 1 if it did not exist).
    Delete {
        key: String,
        /// Mark the key stale instead: reads keep getting the old value
        /// (flagged stale) while one reader refreshes it.
        #[arg(long)]
        invalidate: bool,
    },
    /// Add DELTA to a counter (negative subtracts, stopping at 0) and print
    /// its new value.
    Incr {
        key: String,
        #[arg(allow_negative_numbers = true)]
        delta: i64,
        /// Create a missing key holding this value (otherwise a missing
        /// key is an error).
        #[arg(long)]
        initial: Option<u64>,
        /// TTL in seconds of a counter created by --initial (0: never
        /// expires; default: the server's).
        #[arg(long)]
        ttl: Option<u32>,
    },
    /// Subtract DELTA from a counter (stopping at 0) and print its new
    /// value.
    Decr {
        key: String,
        #[arg(value_parser = clap::value_parser!(i64).range(0..))]
        delta: i64,
        /// Create a missing key holding this value (otherwise a missing
        /// key is an error).
        #[arg(long)]
        initial: Option<u64>,
        /// TTL in seconds of a counter created by --initial (0: never
        /// expires; default: the server's).
        #[arg(long)]
        ttl: Option<u32>,
    },
    /// Set a key's TTL in seconds (0: never expires) without changing its
    /// value (exit 1 if it did not exist).
    Touch { key: String, ttl: u32 },
    /// List keys by prefix.
    List {
        #[arg(default_value = "")]
        prefix: String,
        /// Most keys to return (0: the server's maximum).
        #[arg(long, default_value_t = 0)]
        limit: u32,
    },
    /// Read several keys in one call.
    BatchGet {
        #[arg(required = true)]
        keys: Vec<String>,
    },
    /// Store several KEY=VALUE pairs in one call.
    BatchSet {
        #[arg(required = true)]
        pairs: Vec<String>,
        /// TTL in seconds for every item.
        #[arg(long)]
        ttl: Option<u32>,
    },
    /// Delete several keys in one call.
    BatchDelete {
        #[arg(required = true)]
        keys: Vec<String>,
    },
    /// Print the server's health ("" or --service memgate.v1.Cache); exit 1
    /// unless SERVING.
    Health {
        #[arg(long, default_value = "")]
        service: String,
    },
    /// Print which memcached server holds each key now, and whether it is
    /// up; exit 1 if any is down.
    Locate {
        #[arg(required = true)]
        keys: Vec<String>,
    },
    /// Print the server's statistics: memgate's version, uptime and
    /// counters, and a table of shards (address, up, ring share, items,
    /// bytes/limit, evictions, hit ratio, version, uptime); exit 1 if any
    /// shard is down.
    Stats,
}

/// The key and value of a write: the value from VALUE, --file, or stdin
/// when neither is given.
#[derive(Args, Debug)]
struct WriteArgs {
    key: String,
    value: Option<String>,
    /// Read the value from this file.
    #[arg(long, conflicts_with = "value")]
    file: Option<PathBuf>,
    /// TTL in seconds (0: never expires; default: the server's).
    #[arg(long)]
    ttl: Option<u32>,
}

impl WriteArgs {
    fn bytes(&self) -> Result<Vec<u8>, Error> {
        match (&self.value, &self.file) {
            (Some(v), _) => Ok(v.clone().into_bytes()),
            (None, Some(path)) => std::fs::read(path)
                .map_err(|e| local(format!("cannot read {}: {e}", path.display()))),
            (None, None) => {
                let mut buf = Vec::new();
                std::io::stdin()
                    .read_to_end(&mut buf)
                    .map_err(|e| local(format!("cannot read stdin: {e}")))?;
                Ok(buf)
            }
        }
    }

    fn ttl(&self) -> Option<Duration> {
        self.ttl.map(|s| Duration::from_secs(s.into()))
    }
}

fn parse_duration(s: &str) -> Result<Duration, String> {
    let (num, unit) = s
        .find(|c: char| !c.is_ascii_digit())
        .map_or((s, "s"), |i| s.split_at(i));
    let n: u64 = num.parse().map_err(|_| format!("bad duration {s:?}"))?;
    match unit {
        "ms" => Ok(Duration::from_millis(n)),
        "s" => Ok(Duration::from_secs(n)),
        "m" => Ok(Duration::from_secs(n * 60)),
        _ => Err(format!("bad duration {s:?}: use ms, s or m")),
    }
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli).await {
        Ok(code) => code,
        Err(e) => {
            eprintln!("memgate-cli: {e}");
            ExitCode::from(2)
        }
    }
}

async fn run(cli: Cli) -> Result<ExitCode, Error> {
    let mut builder = Client::builder(cli.target.clone()).timeout(cli.timeout);
    if let Some(token) = &cli.token {
        builder = builder.bearer_token(token);
    }
    if let Some(ca) = &cli.ca {
        let pem =
            std::fs::read(ca).map_err(|e| local(format!("cannot read {}: {e}", ca.display())))?;
        builder = builder.tls_ca_pem(pem);
    }
    let client = builder.connect().await?;
    let json = cli.json;
    match cli.command {
        Command::Get { key, meta, touch } => {
            let mut options = GetOptions::new();
            if let Some(ttl) = touch {
                options = options.touch(Duration::from_secs(ttl.into()));
            }
            let entry = client.get_with(&key, options).await?;
            if json {
                let mut obj = lookup_json(&Lookup {
                    key,
                    value: entry.value.clone(),
                    error: None,
                });
                if meta {
                    add_meta(&mut obj, &entry);
                }
                print_json(&obj);
            } else if let Some(v) = &entry.value {
                let mut out = std::io::stdout().lock();
                if meta {
                    writeln!(out, "{}", meta_line(&entry)).map_err(|e| local(e.to_string()))?;
                }
                out.write_all(v).map_err(|e| local(e.to_string()))?;
            }
            Ok(exit(entry.found()))
        }
        Command::Set { write, cas } => {
            let condition = cas.map_or(Condition::Always, Condition::CasMatch);
            let outcome = client
                .set_with(&write.key, write.bytes()?, write.ttl(), condition)
                .await?;
            Ok(report_write(json, &write.key, outcome))
        }
        Command::Add { write } => {
            let outcome = client.add(&write.key, write.bytes()?, write.ttl()).await?;
            Ok(report_write(json, &write.key, outcome))
        }
        Command::Replace { write } => {
            let outcome = client
                .replace(&write.key, write.bytes()?, write.ttl())
                .await?;
            Ok(report_write(json, &write.key, outcome))
        }
        Command::Delete { key, invalidate } => {
            let deleted = if invalidate {
                client.invalidate(&key).await?
            } else {
                client.delete(&key).await?
            };
            if json {
                print_json(&json!({"key": key, "deleted": deleted}));
            }
            Ok(exit(deleted))
        }
        Command::Incr {
            key,
            delta,
            initial,
            ttl,
        } => {
            let ttl = ttl.map(|s| Duration::from_secs(s.into()));
            let value = client.increment(&key, delta, initial, ttl).await?;
            if json {
                print_json(&json!({"key": key, "value": value}));
            } else {
                println!("{value}");
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Decr {
            key,
            delta,
            initial,
            ttl,
        } => {
            let ttl = ttl.map(|s| Duration::from_secs(s.into()));
            let value = client.increment(&key, -delta, initial, ttl).await?;
            if json {
                print_json(&json!({"key": key, "value": value}));
            } else {
                println!("{value}");
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Touch { key, ttl } => {
            let found = client.touch(&key, Duration::from_secs(ttl.into())).await?;
            if json {
                print_json(&json!({"key": key, "found": found}));
            }
            Ok(exit(found))
        }
        Command::List { prefix, limit } => {
            let keys = client.list(&prefix, limit).await?;
            if json {
                print_json(&json!({ "keys": keys }));
            } else {
                for k in keys {
                    println!("{k}");
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::BatchGet { keys } => {
            let results = client.get_many(keys).await?;
            let all_found = results.iter().all(|r| r.value.is_some());
            if json {
                print_json(&Value::Array(results.iter().map(lookup_json).collect()));
            } else {
                for r in &results {
                    match (&r.value, &r.error) {
                        (_, Some(e)) => println!("{}\terror: {}", r.key, e.message),
                        (Some(v), None) => println!("{}\t{}", r.key, String::from_utf8_lossy(v)),
                        (None, None) => println!("{}\t(miss)", r.key),
                    }
                }
            }
            Ok(exit(all_found))
        }
        Command::BatchSet { pairs, ttl } => {
            let ttl = ttl.map(|s| Duration::from_secs(s.into()));
            let items = pairs
                .iter()
                .map(|p| {
                    let (k, v) = p
                        .split_once('=')
                        .ok_or_else(|| local(format!("{p:?} is not KEY=VALUE")))?;
                    Ok(Item {
                        ttl,
                        ..Item::new(k, v.to_owned())
                    })
                })
                .collect::<Result<Vec<_>, Error>>()?;
            let outcome = client.set_many(items).await?;
            report_outcome(json, "stored", &outcome)
        }
        Command::BatchDelete { keys } => {
            let outcome = client.delete_many(keys).await?;
            report_outcome(json, "deleted", &outcome)
        }
        Command::Health { service } => {
            let status = client.health(&service).await?;
            let name = match status {
                ServingStatus::Serving => "SERVING",
                ServingStatus::NotServing => "NOT_SERVING",
                ServingStatus::Unknown => "UNKNOWN",
            };
            if json {
                print_json(&json!({"service": service, "status": name}));
            } else {
                println!("{name}");
            }
            Ok(exit(status == ServingStatus::Serving))
        }
        Command::Locate { keys } => {
            let locations = client.locate(keys).await?;
            if json {
                let rows: Vec<Value> = locations
                    .iter()
                    .map(|l| json!({"key": l.key, "shard": l.shard, "up": l.up}))
                    .collect();
                print_json(&Value::Array(rows));
            } else {
                let width = locations
                    .iter()
                    .map(|l| l.key.len())
                    .max()
                    .unwrap_or(3)
                    .max(3);
                let shards = locations
                    .iter()
                    .map(|l| l.shard.len())
                    .max()
                    .unwrap_or(5)
                    .max(5);
                println!("{:width$}  {:shards$}  UP", "KEY", "SHARD");
                for l in &locations {
                    let up = if l.up { "yes" } else { "no" };
                    println!("{:width$}  {:shards$}  {up}", l.key, l.shard);
                }
            }
            Ok(exit(locations.iter().all(|l| l.up)))
        }
        Command::Stats => {
            let stats = client.stats().await?;
            if json {
                print_json(&stats_json(&stats));
            } else {
                print!("{}", stats_table(&stats));
            }
            Ok(exit(stats.shards.iter().all(|s| s.up)))
        }
    }
}

/// The Stats reply as an operator reads it: one line about memgate, the
/// shards, memgate's own per-shard counters, then its call counters.
fn stats_table(s: &pb::StatsResponse) -> String {
    let mut out = String::new();
    let c = s.counters.clone().unwrap_or_default();
    out += &format!(
        "memgate {}, up {}, {}\n\n",
        s.version,
        duration(s.uptime_seconds),
        s.store
    );
    let mut shards = vec![row([
        "SHARD",
        "UP",
        "SHARE",
        "ITEMS",
        "BYTES / LIMIT",
        "EVICTIONS",
        "HIT RATIO",
        "VERSION",
        "UPTIME",
    ])];
    let mut shard_counters = vec![row([
        "SHARD",
        "CONNS",
        "TIMEOUTS",
        "REFUSED",
        "IO",
        "PROTOCOL",
        "SERVER_ERROR",
        "EJECTIONS",
        "RECONNECTS",
    ])];
    let mut errors = Vec::new();
    for shard in &s.shards {
        let up = if shard.up { "up" } else { "DOWN" };
        let share = format!("{:.1}%", shard.ring_share * 100.0);
        match &shard.backend {
            Some(b) => shards.push(vec![
                shard.address.clone(),
                up.into(),
                share,
                b.curr_items.to_string(),
                format!("{} / {}", bytes(b.bytes), bytes(b.limit_maxbytes)),
                b.evictions.to_string(),
                ratio(b.get_hits, b.get_misses),
                b.version.clone(),
                duration(b.uptime_seconds),
            ]),
            None => {
                let mut r = vec![shard.address.clone(), up.into(), share];
                r.extend(std::iter::repeat_n("-".to_owned(), 6));
                shards.push(r);
            }
        }
        if !shard.error.is_empty() {
            errors.push(format!("{}: {}", shard.address, shard.error));
        }
        let k = shard.counters.unwrap_or_default();
        shard_counters.push(vec![
            shard.address.clone(),
            k.connections.to_string(),
            k.timeouts.to_string(),
            k.refused.to_string(),
            k.io_errors.to_string(),
            k.protocol_errors.to_string(),
            k.server_errors.to_string(),
            k.ejections.to_string(),
            k.reconnects.to_string(),
        ]);
    }
    out += &table(&shards);
    for e in errors {
        out += &format!("  {e}\n");
    }
    out += "\nmemgate's shard counters\n";
    out += &table(&shard_counters);
    out += &format!(
        "\nkeys read: {} hits, {} misses (hit ratio {}); in flight: {} calls, {}; shed: {} calls at --max-concurrent-calls, {} at --max-inflight-bytes; deduplicated reads {}; List keys skipped {}\n\n",
        c.hits,
        c.misses,
        ratio(c.hits, c.misses),
        c.inflight_calls,
        bytes(c.inflight_bytes),
        c.shed_calls,
        c.shed_bytes_calls,
        c.deduplicated_reads,
        c.list_keys_skipped,
    );
    let mut methods = vec![row(["METHOD", "STARTED", "HANDLED", "HITS", "MISSES"])];
    for m in &c.methods {
        let handled: Vec<String> = m
            .handled
            .iter()
            .map(|h| format!("{} {}", h.name, h.count))
            .collect();
        methods.push(vec![
            format!("{}/{}", m.service, m.method),
            m.started.to_string(),
            handled.join(", "),
            m.hits.to_string(),
            m.misses.to_string(),
        ]);
    }
    out += &table(&methods);
    out
}

fn row<const N: usize>(cells: [&str; N]) -> Vec<String> {
    cells.iter().map(|c| c.to_string()).collect()
}

/// Left-aligned columns, two spaces apart.
fn table(rows: &[Vec<String>]) -> String {
    let columns = rows.iter().map(Vec::len).max().unwrap_or(0);
    let widths: Vec<usize> = (0..columns)
        .map(|i| {
            rows.iter()
                .filter_map(|r| r.get(i))
                .map(|c| c.chars().count())
                .max()
                .unwrap_or(0)
        })
        .collect();
    let mut out = String::new();
    for r in rows {
        let line: Vec<String> = r
            .iter()
            .zip(&widths)
            .map(|(c, &w)| format!("{c:<w$}"))
            .collect();
        out += line.join("  ").trim_end();
        out.push('\n');
    }
    out
}

/// `1.5 MiB`, `64.0 MiB`, `312 B`.
fn bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["KiB", "MiB", "GiB", "TiB", "PiB"];
    if n < 1024 {
        return format!("{n} B");
    }
    let mut v = n as f64 / 1024.0;
    let mut unit = 0;
    while v >= 1024.0 && unit < UNITS.len() - 1 {
        v /= 1024.0;
        unit += 1;
    }
    format!("{v:.1} {}", UNITS[unit])
}

/// `42s`, `5m03s`, `2h05m`, `3d04h`.
fn duration(secs: u64) -> String {
    let (d, h, m, s) = (secs / 86400, secs / 3600 % 24, secs / 60 % 60, secs % 60);
    match () {
        _ if d > 0 => format!("{d}d{h:02}h"),
        _ if h > 0 => format!("{h}h{m:02}m"),
        _ if m > 0 => format!("{m}m{s:02}s"),
        _ => format!("{s}s"),
    }
}

/// Hits over reads, or `-` before any read.
fn ratio(hits: u64, misses: u64) -> String {
    match hits + misses {
        0 => "-".to_owned(),
        reads => format!("{:.1}%", hits as f64 * 100.0 / reads as f64),
    }
}

fn stats_json(s: &pb::StatsResponse) -> Value {
    let c = s.counters.clone().unwrap_or_default();
    let methods: Vec<Value> = c
        .methods
        .iter()
        .map(|m| {
            let handled: serde_json::Map<String, Value> = m
                .handled
                .iter()
                .map(|h| (h.name.clone(), json!(h.count)))
                .collect();
            json!({
                "service": m.service, "method": m.method, "started": m.started,
                "handled": handled, "hits": m.hits, "misses": m.misses,
            })
        })
        .collect();
    let shards: Vec<Value> = s
        .shards
        .iter()
        .map(|sh| {
            let backend = sh.backend.as_ref().map(|b| {
                json!({
                    "curr_items": b.curr_items, "bytes": b.bytes,
                    "limit_maxbytes": b.limit_maxbytes, "evictions": b.evictions,
                    "get_hits": b.get_hits, "get_misses": b.get_misses,
                    "uptime_seconds": b.uptime_seconds, "version": b.version,
                    "curr_connections": b.curr_connections,
                })
            });
            let k = sh.counters.unwrap_or_default();
            json!({
                "address": sh.address, "up": sh.up, "error": sh.error,
                "weight": sh.weight, "ring_share": sh.ring_share,
                "marked_down": sh.marked_down, "backend": backend,
                "counters": {
                    "timeouts": k.timeouts, "refused": k.refused, "io_errors": k.io_errors,
                    "protocol_errors": k.protocol_errors, "server_errors": k.server_errors,
                    "ejections": k.ejections, "connections": k.connections,
                    "reconnects": k.reconnects,
                },
            })
        })
        .collect();
    json!({
        "version": s.version,
        "uptime_seconds": s.uptime_seconds,
        "store": s.store,
        "counters": {
            "methods": methods, "hits": c.hits, "misses": c.misses,
            "inflight_calls": c.inflight_calls, "inflight_bytes": c.inflight_bytes,
            "shed_calls": c.shed_calls, "shed_bytes_calls": c.shed_bytes_calls,
            "deduplicated_reads": c.deduplicated_reads,
            "list_keys_skipped": c.list_keys_skipped,
        },
        "shards": shards,
    })
}

fn report_outcome(
    json: bool,
    what: &str,
    outcome: &memgate_client::BatchOutcome,
) -> Result<ExitCode, Error> {
    if json {
        let errors: Vec<Value> = outcome
            .errors
            .iter()
            .map(|e| json!({"key": e.key, "code": e.code as i32, "message": e.message}))
            .collect();
        print_json(&json!({ what: outcome.count, "errors": errors }));
    } else {
        println!("{what} {}", outcome.count);
        for e in &outcome.errors {
            eprintln!("{}: {}", e.key, e.message);
        }
    }
    Ok(exit(outcome.errors.is_empty()))
}

/// A write's outcome: silent (or `{"key", "stored", "cas"}` with --json),
/// exit 1 when its condition did not hold.
fn report_write(json: bool, key: &str, outcome: SetOutcome) -> ExitCode {
    if json {
        print_json(&json!({"key": key, "stored": outcome.stored, "cas": outcome.cas}));
    }
    exit(outcome.stored)
}

/// `cas=N ttl=SECONDS|never stale=BOOL`.
fn meta_line(e: &Entry) -> String {
    let ttl = e
        .ttl_remaining
        .map_or_else(|| "never".to_owned(), |t| t.as_secs().to_string());
    format!("cas={} ttl={ttl} stale={}", e.cas, e.stale)
}

fn add_meta(obj: &mut Value, e: &Entry) {
    obj["cas"] = json!(e.cas);
    obj["ttl_remaining_seconds"] = json!(e.ttl_remaining.map(|t| t.as_secs()));
    obj["stale"] = json!(e.stale);
}

fn lookup_json(r: &Lookup) -> Value {
    let mut obj = json!({"key": r.key, "found": r.value.is_some()});
    if let Some(v) = &r.value {
        match std::str::from_utf8(v) {
            Ok(text) => obj["value"] = json!(text),
            Err(_) => {
                obj["value_base64"] = json!(base64::engine::general_purpose::STANDARD.encode(v))
            }
        }
    }
    if let Some(e) = &r.error {
        obj["error"] = json!(e.message);
        obj["error_code"] = json!(e.code as i32);
    }
    obj
}

fn print_json(v: &Value) {
    println!("{v}");
}

fn exit(ok: bool) -> ExitCode {
    if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    }
}

/// A local failure (bad input file, bad pair) in the client's error type.
fn local(message: String) -> Error {
    Error::Status(tonic::Status::invalid_argument(message))
}
