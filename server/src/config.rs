//! Command-line flags (each also an environment variable) and the typed,
//! validated [`Config`] they become before anything binds or connects.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::Parser;

use crate::auth::Tokens;
use crate::membership::Source;
use crate::store::memcached::OnShardDown;
use crate::store::memcached::ketama::KeyHash;
use crate::store::memcached::ring::{Distribution, Placement, ShardSpec};
use crate::store::memcached::shard::PoolSettings;

/// Default listen address.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:50051";
/// Default largest value: 1 MiB (a memcached shard's own limit may be lower).
pub const DEFAULT_MAX_VALUE_BYTES: usize = 1024 * 1024;
/// Default largest batch.
pub const DEFAULT_MAX_BATCH_KEYS: usize = 1000;
/// Default largest gRPC message, in either direction.
pub const DEFAULT_MAX_MESSAGE_BYTES: usize = 16 * 1024 * 1024;
/// Default bound on bytes of values held for all calls at once.
pub const DEFAULT_MAX_INFLIGHT_BYTES: usize = 64 * 1024 * 1024;
/// Default and largest number of keys one List returns.
pub const DEFAULT_LIST_MAX_KEYS: usize = 10_000;
/// Default size of the embedded store.
pub const DEFAULT_EMBEDDED_MAX_BYTES: u64 = 256 * 1024 * 1024;
/// Room in a gRPC message for everything but the value.
pub const MESSAGE_OVERHEAD: usize = 64 * 1024;

/// memgate: a gRPC cache service in front of a sharded memcached pool.
///
/// With no --memcached servers it serves from an embedded in-process store.
#[derive(Debug, Clone, Parser)]
#[command(name = "memgate", version, about, long_about = None)]
pub struct Cli {
    /// Address to serve gRPC on.
    #[arg(long, env = "MEMGATE_LISTEN", default_value = DEFAULT_LISTEN)]
    pub listen: String,

    /// memcached servers, comma-separated `host:port[:weight]`. Keys are
    /// spread over them by consistent hashing. Empty: the embedded store.
    #[arg(long, env = "MEMGATE_MEMCACHED", value_delimiter = ',', num_args = 0..)]
    pub memcached: Vec<String>,

    /// memcached servers from a file, one `host:port[:weight]` per line
    /// (`#` comments). Re-read when it changes, on SIGHUP and every
    /// --discovery-interval; a bad update keeps the current servers.
    #[arg(long, env = "MEMGATE_MEMCACHED_FILE", conflicts_with_all = ["memcached", "memcached_srv"])]
    pub memcached_file: Option<PathBuf>,

    /// memcached servers from the DNS SRV records of this name (e.g. a
    /// Kubernetes headless Service), resolved every --discovery-interval.
    /// Members are named by the records' target hostnames.
    #[arg(long, env = "MEMGATE_MEMCACHED_SRV", conflicts_with = "memcached")]
    pub memcached_srv: Option<String>,

    /// How often --memcached-srv is resolved and --memcached-file re-read
    /// (the file is also re-read as soon as it changes).
    #[arg(long, env = "MEMGATE_DISCOVERY_INTERVAL", default_value = "5s", value_parser = humantime::parse_duration)]
    pub discovery_interval: Duration,

    /// The DNS server --memcached-srv asks (`ip[:port]`, port 53 by
    /// default) instead of the system's: for tests and special setups.
    #[arg(long, env = "MEMGATE_DNS_SERVER", requires = "memcached_srv")]
    pub dns_server: Option<String>,

    /// TTL in seconds for Sets that give none (0: never expires).
    #[arg(long, env = "MEMGATE_DEFAULT_TTL", default_value_t = 0)]
    pub default_ttl: u32,

    /// Largest value accepted, in bytes. A shard whose item_size_max is
    /// smaller lowers it further for its keys.
    #[arg(long, env = "MEMGATE_MAX_VALUE_BYTES", default_value_t = DEFAULT_MAX_VALUE_BYTES)]
    pub max_value_bytes: usize,

    /// Most keys (or items) in one batch request.
    #[arg(long, env = "MEMGATE_MAX_BATCH_KEYS", default_value_t = DEFAULT_MAX_BATCH_KEYS)]
    pub max_batch_keys: usize,

    /// Largest gRPC message accepted or sent, in bytes. Must exceed
    /// --max-value-bytes; clients should raise their receive limit to match.
    #[arg(long, env = "MEMGATE_MAX_MESSAGE_BYTES", default_value_t = DEFAULT_MAX_MESSAGE_BYTES)]
    pub max_message_bytes: usize,

    /// Bytes of values memgate holds for all calls at once (read from
    /// memcached, not yet sent). A call that would go past it is refused
    /// with RESOURCE_EXHAUSTED rather than let memory grow; keep it well
    /// under the process's memory limit.
    #[arg(long, env = "MEMGATE_MAX_INFLIGHT_BYTES", default_value_t = DEFAULT_MAX_INFLIGHT_BYTES)]
    pub max_inflight_bytes: usize,

    /// Most keys one List returns (its `limit` 0 means this).
    #[arg(long, env = "MEMGATE_LIST_MAX_KEYS", default_value_t = DEFAULT_LIST_MAX_KEYS)]
    pub list_max_keys: usize,

    /// Longest wait for a memcached reply, e.g. `500ms`.
    #[arg(long, env = "MEMGATE_TIMEOUT", default_value = "1s", value_parser = humantime::parse_duration)]
    pub timeout: Duration,

    /// Longest wait for a TCP connection to memcached.
    #[arg(long, env = "MEMGATE_CONNECT_TIMEOUT", default_value = "1s", value_parser = humantime::parse_duration)]
    pub connect_timeout: Duration,

    /// Pipelined connections to each memcached server for single-key calls
    /// (batches get as many again, health probes one). One, the default,
    /// lets the most requests share each write (measured: less CPU per call
    /// for memgate and memcached alike); more spreads one memgate's load
    /// over more of a server's worker threads.
    #[arg(long, env = "MEMGATE_MAX_IDLE_CONNS", default_value_t = 1)]
    pub max_idle_conns: usize,

    /// TCP keepalive idle time on memcached connections (`0s`: off).
    #[arg(long, env = "MEMGATE_KEEPALIVE", default_value = "30s", value_parser = humantime::parse_duration)]
    pub keepalive: Duration,

    /// Consecutive failures (errors or timeouts) after which a memcached
    /// server is marked down and its keys fail fast.
    #[arg(long, env = "MEMGATE_SHARD_FAILURE_LIMIT", default_value_t = 3)]
    pub shard_failure_limit: u32,

    /// While a server is down, one trial call is let through this often;
    /// the health probe also brings it back as soon as it answers.
    #[arg(long, env = "MEMGATE_SHARD_RETRY_TIMEOUT", default_value = "2s", value_parser = humantime::parse_duration)]
    pub shard_retry_timeout: Duration,

    /// What happens to the keys of a server marked down: `fail` (fast
    /// UNAVAILABLE) or `reroute` (to the next live server on the ring).
    #[arg(long, env = "MEMGATE_ON_SHARD_DOWN", value_enum, default_value_t = OnShardDown::Fail)]
    pub on_shard_down: OnShardDown,

    /// How often every shard is probed for the health service.
    #[arg(long, env = "MEMGATE_HEALTH_INTERVAL", default_value = "1s", value_parser = humantime::parse_duration)]
    pub health_interval: Duration,

    /// Memory bound of the embedded store, in bytes.
    #[arg(long, env = "MEMGATE_EMBEDDED_MAX_BYTES", default_value_t = DEFAULT_EMBEDDED_MAX_BYTES)]
    pub embedded_max_bytes: u64,

    /// Turn off gRPC server reflection (on by default so grpcurl works
    /// without the .proto).
    #[arg(long, env = "MEMGATE_NO_REFLECTION")]
    pub no_reflection: bool,

    /// Most Cache calls in flight across the whole server; more are refused
    /// at once with RESOURCE_EXHAUSTED (health and reflection are exempt).
    #[arg(long, env = "MEMGATE_MAX_CONCURRENT_CALLS", default_value_t = 4096)]
    pub max_concurrent_calls: usize,

    /// HTTP/2 MAX_CONCURRENT_STREAMS advertised to each client connection.
    #[arg(long, env = "MEMGATE_MAX_CONCURRENT_STREAMS", default_value_t = 1024)]
    pub max_concurrent_streams: u32,

    /// Threads serving calls. 1 (the default) runs everything on one
    /// event loop, as twemproxy does: the least CPU per call, measured
    /// (see the README's benchmarks); scale out with replicas. More than 1
    /// uses tokio's work-stealing scheduler over that many threads.
    #[arg(long, env = "MEMGATE_WORKER_THREADS", default_value_t = 1)]
    pub worker_threads: usize,

    /// HTTP/2 PING interval on idle client connections (`0s`: off).
    #[arg(long, env = "MEMGATE_HTTP2_KEEPALIVE", default_value = "30s", value_parser = humantime::parse_duration)]
    pub http2_keepalive: Duration,

    /// On SIGTERM: how long unary calls in flight may take to finish before
    /// memgate closes their connections and exits (open streams end at once
    /// with UNAVAILABLE).
    #[arg(long, env = "MEMGATE_SHUTDOWN_GRACE", default_value = "10s", value_parser = humantime::parse_duration)]
    pub shutdown_grace: Duration,

    /// Serve TLS with this certificate chain (PEM); needs --tls-key.
    #[arg(long, env = "MEMGATE_TLS_CERT", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,

    /// The private key (PEM) for --tls-cert.
    #[arg(long, env = "MEMGATE_TLS_KEY", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,

    /// Require client certificates signed by this CA (PEM): mutual TLS.
    #[arg(long, env = "MEMGATE_TLS_CLIENT_CA", requires = "tls_cert")]
    pub tls_client_ca: Option<PathBuf>,

    /// Require `authorization: Bearer <token>` on Cache calls, with the
    /// tokens in this file (one per line). Health and reflection stay open.
    #[arg(long, env = "MEMGATE_AUTH_TOKEN_FILE")]
    pub auth_token_file: Option<PathBuf>,

    /// How keys are spread over the servers: `ring` (memgate's own) or
    /// `ketama`, placing every key exactly where twemproxy (nutcracker)
    /// with `distribution: ketama` and the same `hash` puts it (with
    /// `--hash md5`, where libmemcached's ketama puts it).
    #[arg(long, env = "MEMGATE_DISTRIBUTION", value_enum, default_value_t = Distribution::Ring)]
    pub distribution: Distribution,

    /// The key hash of `--distribution ketama` (twemproxy's `hash:`
    /// setting; its default is fnv1a_64).
    #[arg(long, env = "MEMGATE_HASH", value_enum)]
    pub hash: Option<KeyHash>,

    /// After the pool changes, for this long a read that misses on a key's
    /// new server falls back to its previous server and copies what it
    /// finds (no cold cache for moved keys); writes and deletes also
    /// delete the old copy. 0s: off.
    #[arg(long, env = "MEMGATE_REBALANCE_WINDOW", default_value = "10m", value_parser = humantime::parse_duration)]
    pub rebalance_window: Duration,

    /// Most fallback reads per second during the rebalance window (more
    /// misses stay misses), bounding the extra load on the old servers.
    #[arg(
        long,
        env = "MEMGATE_REBALANCE_FALLBACK_RATE",
        default_value_t = 10_000
    )]
    pub rebalance_fallback_rate: u32,

    /// Serve Prometheus metrics on http://ADDR/metrics (e.g.
    /// 127.0.0.1:9090). Off when not given: nothing is recorded.
    #[arg(long, env = "MEMGATE_METRICS_LISTEN")]
    pub metrics_listen: Option<String>,
}

/// What happens while keys move after a membership change.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Rebalance {
    /// How long reads fall back to a key's previous server (zero: off).
    pub window: Duration,
    /// Most fallback reads per second.
    pub fallback_rate: u32,
}

/// PEM material for serving TLS. `Debug` hides the key.
#[derive(Clone)]
pub struct TlsFiles {
    /// Certificate chain.
    pub cert: Vec<u8>,
    /// Private key.
    pub key: Vec<u8>,
    /// CA for client certificates (mutual TLS), if required.
    pub client_ca: Option<Vec<u8>>,
}

impl std::fmt::Debug for TlsFiles {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsFiles")
            .field("mutual", &self.client_ca.is_some())
            .finish_non_exhaustive()
    }
}

/// How the gRPC server itself behaves.
#[derive(Debug, Clone)]
pub struct ServerSettings {
    /// Most Cache calls in flight, server-wide.
    pub max_concurrent_calls: usize,
    /// HTTP/2 streams per connection.
    pub max_concurrent_streams: u32,
    /// HTTP/2 keepalive PING interval.
    pub http2_keepalive: Option<Duration>,
    /// Bound on draining unary calls at shutdown.
    pub shutdown_grace: Duration,
    /// Threads serving calls (1: a single event loop).
    pub worker_threads: usize,
    /// TLS, if served.
    pub tls: Option<TlsFiles>,
    /// Accepted bearer tokens, if required.
    pub tokens: Option<Tokens>,
}

impl Default for ServerSettings {
    fn default() -> Self {
        ServerSettings {
            max_concurrent_calls: 4096,
            max_concurrent_streams: 1024,
            http2_keepalive: Some(Duration::from_secs(30)),
            shutdown_grace: Duration::from_secs(10),
            worker_threads: 1,
            tls: None,
            tokens: None,
        }
    }
}

fn read_file(flag: &str, path: &Path) -> Result<Vec<u8>, String> {
    std::fs::read(path).map_err(|e| format!("{flag} {}: {e}", path.display()))
}

/// Which store serves the keys.
// Built once at startup and matched once: its size does not matter.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone)]
pub enum Backend {
    /// The in-process store, bounded to this many bytes.
    Embedded {
        /// Memory bound.
        max_bytes: u64,
    },
    /// A memcached pool.
    Memcached {
        /// Where the servers come from: the fixed `--memcached` list, a
        /// file or DNS SRV records (see [`crate::membership::watch`]).
        members: Source,
        /// How connections are made.
        pool: PoolSettings,
        /// What happens to a down shard's keys.
        on_down: OnShardDown,
        /// How keys are spread over the servers.
        placement: Placement,
        /// After a membership change: how long reads fall back to a key's
        /// previous owner, and how many such reads per second at most.
        rebalance: Rebalance,
    },
}

/// Request limits enforced at the gRPC edge.
#[derive(Debug, Clone)]
pub struct Limits {
    /// TTL for Sets that give none.
    pub default_ttl: u32,
    /// Largest value.
    pub max_value_bytes: usize,
    /// Most keys per batch.
    pub max_batch_keys: usize,
    /// Largest gRPC message.
    pub max_message_bytes: usize,
    /// Bytes of values held for all calls at once.
    pub max_inflight_bytes: usize,
    /// Most keys per List.
    pub list_max_keys: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            default_ttl: 0,
            max_value_bytes: DEFAULT_MAX_VALUE_BYTES,
            max_batch_keys: DEFAULT_MAX_BATCH_KEYS,
            max_message_bytes: DEFAULT_MAX_MESSAGE_BYTES,
            max_inflight_bytes: DEFAULT_MAX_INFLIGHT_BYTES,
            list_max_keys: DEFAULT_LIST_MAX_KEYS,
        }
    }
}

/// Everything memgate needs to run, validated.
#[derive(Debug, Clone)]
pub struct Config {
    /// Where to listen.
    pub listen: SocketAddr,
    /// Where keys live.
    pub backend: Backend,
    /// Request limits.
    pub limits: Limits,
    /// Shard probe period.
    pub health_interval: Duration,
    /// Serve reflection.
    pub reflection: bool,
    /// The gRPC server's own limits, TLS and authentication.
    pub server: ServerSettings,
    /// Where to serve Prometheus metrics, if anywhere.
    pub metrics_listen: Option<SocketAddr>,
}

impl Config {
    /// A config for the embedded store with default limits.
    pub fn embedded(listen: SocketAddr) -> Config {
        Config {
            listen,
            backend: Backend::Embedded {
                max_bytes: DEFAULT_EMBEDDED_MAX_BYTES,
            },
            limits: Limits::default(),
            health_interval: Duration::from_secs(1),
            reflection: true,
            server: ServerSettings::default(),
            metrics_listen: None,
        }
    }

    /// A config for a memcached pool at `addrs` with default settings.
    pub fn memcached(listen: SocketAddr, addrs: &[String]) -> Result<Config, String> {
        let mut cli = Cli::parse_from(["memgate"]);
        cli.listen = listen.to_string();
        cli.memcached = addrs.to_vec();
        cli.try_into()
    }
}

impl TryFrom<Cli> for Config {
    type Error = String;

    fn try_from(cli: Cli) -> Result<Config, String> {
        let listen = cli.listen.parse::<SocketAddr>().map_err(|e| {
            format!(
                "--listen {:?} is not an address like 127.0.0.1:50051: {e}",
                cli.listen
            )
        })?;
        let metrics_listen = match &cli.metrics_listen {
            Some(addr) => Some(addr.parse::<SocketAddr>().map_err(|e| {
                format!("--metrics-listen {addr:?} is not an address like 127.0.0.1:9090: {e}")
            })?),
            None => None,
        };
        let shards = cli
            .memcached
            .iter()
            .map(|s| s.trim())
            .filter(|s| !s.is_empty())
            .map(str::parse::<ShardSpec>)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| format!("--memcached: {e}"))?;
        if cli.hash.is_some() && cli.distribution != Distribution::Ketama {
            return Err(
                "--hash chooses the key hash of --distribution ketama; the default ring has its own"
                    .to_owned(),
            );
        }
        let placement = Placement {
            distribution: cli.distribution,
            hash: cli.hash.unwrap_or_default(),
        };
        let mut seen = std::collections::HashSet::new();
        if let Some(dup) = shards.iter().find(|s| !seen.insert(&s.addr)) {
            return Err(format!("--memcached lists {} twice", dup.addr));
        }
        if !cli.memcached.is_empty() && shards.is_empty() {
            return Err("--memcached was given but names no server".to_owned());
        }
        let members = membership_source(&cli, shards)?;
        if cli.max_value_bytes == 0 {
            return Err("--max-value-bytes must be at least 1".to_owned());
        }
        if cli.max_batch_keys == 0 || cli.list_max_keys == 0 || cli.max_idle_conns == 0 {
            return Err(
                "--max-batch-keys, --list-max-keys and --max-idle-conns must be at least 1"
                    .to_owned(),
            );
        }
        if cli.max_message_bytes < cli.max_value_bytes + MESSAGE_OVERHEAD {
            return Err(format!(
                "--max-message-bytes ({}) must be at least --max-value-bytes + {MESSAGE_OVERHEAD} ({})",
                cli.max_message_bytes,
                cli.max_value_bytes + MESSAGE_OVERHEAD
            ));
        }
        if cli.max_inflight_bytes < cli.max_value_bytes + MESSAGE_OVERHEAD {
            return Err(format!(
                "--max-inflight-bytes ({}) must be at least --max-value-bytes + {MESSAGE_OVERHEAD} ({}), or no value could ever be read",
                cli.max_inflight_bytes,
                cli.max_value_bytes + MESSAGE_OVERHEAD
            ));
        }
        for (flag, d) in [
            ("--timeout", cli.timeout),
            ("--connect-timeout", cli.connect_timeout),
            ("--health-interval", cli.health_interval),
        ] {
            if d.is_zero() {
                return Err(format!("{flag} must be longer than zero"));
            }
        }
        if cli.worker_threads == 0 {
            return Err("--worker-threads must be at least 1".to_owned());
        }
        if cli.max_concurrent_calls == 0 || cli.max_concurrent_streams == 0 {
            return Err(
                "--max-concurrent-calls and --max-concurrent-streams must be at least 1".to_owned(),
            );
        }
        let tls = match (&cli.tls_cert, &cli.tls_key) {
            (Some(cert), Some(key)) => Some(TlsFiles {
                cert: read_file("--tls-cert", cert)?,
                key: read_file("--tls-key", key)?,
                client_ca: match &cli.tls_client_ca {
                    Some(ca) => Some(read_file("--tls-client-ca", ca)?),
                    None => None,
                },
            }),
            _ => None,
        };
        let tokens = match &cli.auth_token_file {
            Some(path) => {
                let text = String::from_utf8(read_file("--auth-token-file", path)?)
                    .map_err(|_| format!("--auth-token-file {}: not UTF-8 text", path.display()))?;
                Some(
                    Tokens::parse(&text)
                        .map_err(|e| format!("--auth-token-file {}: {e}", path.display()))?,
                )
            }
            None => None,
        };
        let server = ServerSettings {
            max_concurrent_calls: cli.max_concurrent_calls,
            max_concurrent_streams: cli.max_concurrent_streams,
            http2_keepalive: (!cli.http2_keepalive.is_zero()).then_some(cli.http2_keepalive),
            shutdown_grace: cli.shutdown_grace,
            worker_threads: cli.worker_threads,
            tls,
            tokens,
        };
        let dns_server = match &members {
            Some(Source::Srv { resolver, .. }) => *resolver,
            _ => None,
        };
        let backend = match members {
            None => Backend::Embedded {
                max_bytes: cli.embedded_max_bytes,
            },
            Some(members) => Backend::Memcached {
                members,
                pool: PoolSettings {
                    timeout: cli.timeout,
                    connect_timeout: cli.connect_timeout,
                    conns_per_shard: cli.max_idle_conns,
                    keepalive: (!cli.keepalive.is_zero()).then_some(cli.keepalive),
                    failure_limit: cli.shard_failure_limit.max(1),
                    retry_timeout: cli.shard_retry_timeout,
                    // The DNS server the SRV records come from also
                    // resolves the members' names.
                    dns_server,
                },
                on_down: cli.on_shard_down,
                placement,
                rebalance: Rebalance {
                    window: cli.rebalance_window,
                    fallback_rate: cli.rebalance_fallback_rate,
                },
            },
        };
        Ok(Config {
            listen,
            backend,
            limits: Limits {
                default_ttl: cli.default_ttl,
                max_value_bytes: cli.max_value_bytes,
                max_batch_keys: cli.max_batch_keys,
                max_message_bytes: cli.max_message_bytes,
                max_inflight_bytes: cli.max_inflight_bytes,
                list_max_keys: cli.list_max_keys,
            },
            health_interval: cli.health_interval,
            reflection: !cli.no_reflection,
            server,
            metrics_listen,
        })
    }
}

/// The membership source the flags name, if any (`None`: the embedded
/// store). clap already refuses two sources at once.
fn membership_source(cli: &Cli, shards: Vec<ShardSpec>) -> Result<Option<Source>, String> {
    if cli.discovery_interval.is_zero() {
        return Err("--discovery-interval must be longer than zero".to_owned());
    }
    if let Some(path) = &cli.memcached_file {
        return Ok(Some(Source::File {
            path: path.clone(),
            poll: cli.discovery_interval,
        }));
    }
    if let Some(name) = &cli.memcached_srv {
        if name.trim().is_empty() {
            return Err("--memcached-srv names no DNS name".to_owned());
        }
        let resolver = match &cli.dns_server {
            Some(addr) => Some(
                addr.parse::<SocketAddr>()
                    .or_else(|_| {
                        addr.parse::<std::net::IpAddr>()
                            .map(|ip| SocketAddr::new(ip, 53))
                    })
                    .map_err(|_| {
                        format!(
                            "--dns-server {addr:?} is not an address like 127.0.0.1 or 127.0.0.1:53"
                        )
                    })?,
            ),
            None => None,
        };
        return Ok(Some(Source::Srv {
            name: name.trim().to_owned(),
            interval: cli.discovery_interval,
            resolver,
        }));
    }
    Ok((!shards.is_empty()).then_some(Source::Static(shards)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<Config, String> {
        let mut all = vec!["memgate"];
        all.extend_from_slice(args);
        Cli::try_parse_from(all)
            .map_err(|e| e.to_string())?
            .try_into()
    }

    #[test]
    fn ketama_takes_a_hash_and_the_ring_refuses_one() {
        let c = parse(&[
            "--memcached",
            "a:1",
            "--distribution",
            "ketama",
            "--hash",
            "md5",
        ])
        .unwrap();
        let Backend::Memcached { placement, .. } = c.backend else {
            panic!("memcached backend")
        };
        assert_eq!(placement.distribution, Distribution::Ketama);
        assert_eq!(placement.hash, KeyHash::Md5);
        let c = parse(&["--memcached", "a:1", "--distribution", "ketama"]).unwrap();
        let Backend::Memcached { placement, .. } = c.backend else {
            panic!("memcached backend")
        };
        assert_eq!(placement.hash, KeyHash::Fnv1a64, "twemproxy's default");
        let err = parse(&["--memcached", "a:1", "--hash", "md5"]).unwrap_err();
        assert!(err.contains("--distribution ketama"), "{err}");
    }

    #[test]
    fn membership_flags_choose_the_source() {
        let c = parse(&["--memcached-file", "/etc/memgate/members"]).unwrap();
        let Backend::Memcached { members, .. } = c.backend else {
            panic!("memcached backend")
        };
        assert_eq!(
            members,
            Source::File {
                path: "/etc/memgate/members".into(),
                poll: Duration::from_secs(5)
            }
        );
        let c = parse(&[
            "--memcached-srv",
            "_memcache._tcp.memcached.default.svc.cluster.local",
            "--discovery-interval",
            "2s",
            "--dns-server",
            "127.0.0.1:5353",
        ])
        .unwrap();
        let Backend::Memcached { members, .. } = c.backend else {
            panic!("memcached backend")
        };
        assert_eq!(
            members,
            Source::Srv {
                name: "_memcache._tcp.memcached.default.svc.cluster.local".into(),
                interval: Duration::from_secs(2),
                resolver: Some("127.0.0.1:5353".parse().unwrap()),
            }
        );
        let c = parse(&["--memcached-srv", "pool.test", "--dns-server", "::1"]).unwrap();
        let Backend::Memcached {
            members: Source::Srv { resolver, .. },
            ..
        } = c.backend
        else {
            panic!("SRV source")
        };
        assert_eq!(
            resolver,
            Some("[::1]:53".parse().unwrap()),
            "port 53 by default"
        );
    }

    #[test]
    fn one_membership_source_at_most() {
        for (args, both) in [
            (
                &["--memcached", "a:1", "--memcached-file", "f"][..],
                ["--memcached", "--memcached-file"],
            ),
            (
                &["--memcached", "a:1", "--memcached-srv", "n"],
                ["--memcached", "--memcached-srv"],
            ),
            (
                &["--memcached-file", "f", "--memcached-srv", "n"],
                ["--memcached-file", "--memcached-srv"],
            ),
        ] {
            let err = parse(args).unwrap_err();
            assert!(
                both.iter().all(|flag| err.contains(flag)),
                "{args:?}: {err}"
            );
        }
        let err = parse(&["--dns-server", "127.0.0.1"]).unwrap_err();
        assert!(err.contains("--memcached-srv"), "{err}");
        let err = parse(&["--memcached-srv", "n", "--dns-server", "nope"]).unwrap_err();
        assert!(err.contains("--dns-server"), "{err}");
        let err = parse(&["--memcached-srv", "n", "--discovery-interval", "0s"]).unwrap_err();
        assert!(err.contains("--discovery-interval"), "{err}");
    }

    #[test]
    fn defaults_to_embedded() {
        let c = parse(&[]).unwrap();
        assert!(matches!(c.backend, Backend::Embedded { .. }));
        assert_eq!(c.listen.to_string(), DEFAULT_LISTEN);
    }

    #[test]
    fn parses_a_pool() {
        let c = parse(&[
            "--memcached",
            "127.0.0.1:1,127.0.0.1:2:3",
            "--timeout",
            "250ms",
        ])
        .unwrap();
        let Backend::Memcached {
            members: Source::Static(shards),
            pool,
            ..
        } = c.backend
        else {
            panic!("expected memcached")
        };
        assert_eq!(shards.len(), 2);
        assert_eq!(shards[1].weight, 3);
        assert_eq!(pool.timeout, Duration::from_millis(250));
    }

    #[test]
    fn refuses_bad_flags_with_a_message() {
        for (args, needle) in [
            (&["--listen", "nope"][..], "--listen"),
            (&["--memcached", ","], "names no server"),
            (&["--memcached", "host"], "host:port"),
            (&["--memcached", "a:1,a:1"], "twice"),
            (&["--max-value-bytes", "0"], "at least 1"),
            (&["--max-message-bytes", "1000"], "--max-message-bytes"),
            (&["--timeout", "0s"], "--timeout"),
            (
                &["--auth-token-file", "/nonexistent/tokens"],
                "--auth-token-file",
            ),
            (
                &[
                    "--tls-cert",
                    "/nonexistent/cert",
                    "--tls-key",
                    "/nonexistent/key",
                ],
                "--tls-cert",
            ),
            (&["--max-concurrent-calls", "0"], "at least 1"),
        ] {
            let err = parse(args).unwrap_err();
            assert!(err.contains(needle), "{args:?}: {err}");
        }
    }
}
