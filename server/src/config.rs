//! memgate's settings and the typed, validated [`Config`] they become before
//! anything binds or connects.
//!
//! [`Settings`] is every setting as one flat record, spelled as the
//! configuration file spells it (`max_value_bytes`); its `Default` holds
//! every built-in default, and nothing else does. A TOML file sets some of
//! them ([`Settings::from_toml`]); the command line and `MEMGATE_*`
//! variables are layered over that by [`crate::cli`]. Nothing here reads
//! the process environment or exits.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::auth::Tokens;
use crate::membership::Source;
use crate::store::memcached::OnShardDown;
use crate::store::memcached::ketama::KeyHash;
use crate::store::memcached::ring::{Distribution, Placement, ShardSpec};
use crate::store::memcached::shard::PoolSettings;
use crate::trace::LogFormat;

/// Default listen address.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:50051";
/// Default period of re-reading --memcached-file and resolving
/// --memcached-srv.
pub const DEFAULT_DISCOVERY_INTERVAL: Duration = Duration::from_secs(5);
/// Default TTL for Sets that give none: never expires.
pub const DEFAULT_TTL: u32 = 0;
/// Seconds an invalidated item stays readable as stale (--stale-ttl).
pub const DEFAULT_STALE_TTL: u32 = 30;
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
/// Default longest wait for a memcached reply.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(1);
/// Default longest wait for a connection to memcached and its handshake.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(1);
/// Default pipelined connections per memcached server (measured: one lets
/// the most requests share each write).
pub const DEFAULT_MAX_IDLE_CONNS: usize = 1;
/// Default TCP keepalive on memcached connections.
pub const DEFAULT_KEEPALIVE: Duration = Duration::from_secs(30);
/// Default consecutive failures that mark a memcached server down.
pub const DEFAULT_SHARD_FAILURE_LIMIT: u32 = 3;
/// Default interval between trial calls to a server marked down.
pub const DEFAULT_SHARD_RETRY_TIMEOUT: Duration = Duration::from_secs(2);
/// Default time reads fall back to a key's previous server after the pool
/// changes.
pub const DEFAULT_REBALANCE_WINDOW: Duration = Duration::from_secs(600);
/// Default most fallback reads per second during the rebalance window.
pub const DEFAULT_REBALANCE_FALLBACK_RATE: u32 = 10_000;
/// Default shard probe period.
pub const DEFAULT_HEALTH_INTERVAL: Duration = Duration::from_secs(1);
/// Default size of the embedded store.
pub const DEFAULT_EMBEDDED_MAX_BYTES: u64 = 256 * 1024 * 1024;
/// Default bound on Cache calls in flight, server-wide.
pub const DEFAULT_MAX_CONCURRENT_CALLS: usize = 4096;
/// Default HTTP/2 MAX_CONCURRENT_STREAMS per client connection.
pub const DEFAULT_MAX_CONCURRENT_STREAMS: u32 = 1024;
/// Default threads serving calls: one event loop (the least CPU per call,
/// measured).
pub const DEFAULT_WORKER_THREADS: usize = 1;
/// Default HTTP/2 PING interval on idle client connections.
pub const DEFAULT_HTTP2_KEEPALIVE: Duration = Duration::from_secs(30);
/// Default bound on draining unary calls at shutdown.
pub const DEFAULT_SHUTDOWN_GRACE: Duration = Duration::from_secs(10);
/// Room in a gRPC message for everything but the value.
pub const MESSAGE_OVERHEAD: usize = 64 * 1024;

/// Every setting, unvalidated, as the configuration file names it. Each
/// field is also a flag (`--max-value-bytes`) and an environment variable
/// (`MEMGATE_MAX_VALUE_BYTES`); see [`crate::cli`] for what each means.
/// Durations are humantime strings (`"1s"`, `"250ms"`), as on the command
/// line.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
#[allow(missing_docs)] // documented once, on the flags and in the example file
pub struct Settings {
    pub listen: String,
    pub memcached: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub memcached_file: Option<PathBuf>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub memcached_srv: Option<String>,
    #[serde(with = "duration")]
    pub discovery_interval: Duration,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dns_server: Option<String>,
    pub default_ttl: u32,
    pub stale_ttl: u32,
    pub max_value_bytes: usize,
    pub max_batch_keys: usize,
    pub max_message_bytes: usize,
    pub max_inflight_bytes: usize,
    pub list_max_keys: usize,
    #[serde(with = "duration")]
    pub timeout: Duration,
    #[serde(with = "duration")]
    pub connect_timeout: Duration,
    pub max_idle_conns: usize,
    #[serde(with = "duration")]
    pub keepalive: Duration,
    pub shard_failure_limit: u32,
    #[serde(with = "duration")]
    pub shard_retry_timeout: Duration,
    #[serde(with = "value_enum")]
    pub on_shard_down: OnShardDown,
    #[serde(with = "duration")]
    pub health_interval: Duration,
    pub embedded_max_bytes: u64,
    pub no_reflection: bool,
    pub max_concurrent_calls: usize,
    pub max_concurrent_streams: u32,
    pub worker_threads: usize,
    #[serde(with = "duration")]
    pub http2_keepalive: Duration,
    #[serde(with = "duration")]
    pub shutdown_grace: Duration,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tls_cert: Option<PathBuf>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tls_key: Option<PathBuf>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tls_client_ca: Option<PathBuf>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub auth_token_file: Option<PathBuf>,
    #[serde(with = "value_enum")]
    pub distribution: Distribution,
    #[serde(skip_serializing_if = "Option::is_none", with = "value_enum::option")]
    pub hash: Option<KeyHash>,
    #[serde(with = "duration")]
    pub rebalance_window: Duration,
    pub rebalance_fallback_rate: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub metrics_listen: Option<String>,
    #[serde(with = "value_enum")]
    pub log_format: LogFormat,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub otlp_endpoint: Option<String>,
}

impl Default for Settings {
    /// The built-in defaults: the only place they are spelled out.
    fn default() -> Self {
        Settings {
            listen: DEFAULT_LISTEN.to_owned(),
            memcached: Vec::new(),
            memcached_file: None,
            memcached_srv: None,
            discovery_interval: DEFAULT_DISCOVERY_INTERVAL,
            dns_server: None,
            default_ttl: DEFAULT_TTL,
            stale_ttl: DEFAULT_STALE_TTL,
            max_value_bytes: DEFAULT_MAX_VALUE_BYTES,
            max_batch_keys: DEFAULT_MAX_BATCH_KEYS,
            max_message_bytes: DEFAULT_MAX_MESSAGE_BYTES,
            max_inflight_bytes: DEFAULT_MAX_INFLIGHT_BYTES,
            list_max_keys: DEFAULT_LIST_MAX_KEYS,
            timeout: DEFAULT_TIMEOUT,
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
            max_idle_conns: DEFAULT_MAX_IDLE_CONNS,
            keepalive: DEFAULT_KEEPALIVE,
            shard_failure_limit: DEFAULT_SHARD_FAILURE_LIMIT,
            shard_retry_timeout: DEFAULT_SHARD_RETRY_TIMEOUT,
            on_shard_down: OnShardDown::Fail,
            health_interval: DEFAULT_HEALTH_INTERVAL,
            embedded_max_bytes: DEFAULT_EMBEDDED_MAX_BYTES,
            no_reflection: false,
            max_concurrent_calls: DEFAULT_MAX_CONCURRENT_CALLS,
            max_concurrent_streams: DEFAULT_MAX_CONCURRENT_STREAMS,
            worker_threads: DEFAULT_WORKER_THREADS,
            http2_keepalive: DEFAULT_HTTP2_KEEPALIVE,
            shutdown_grace: DEFAULT_SHUTDOWN_GRACE,
            tls_cert: None,
            tls_key: None,
            tls_client_ca: None,
            auth_token_file: None,
            distribution: Distribution::Ring,
            hash: None,
            rebalance_window: DEFAULT_REBALANCE_WINDOW,
            rebalance_fallback_rate: DEFAULT_REBALANCE_FALLBACK_RATE,
            metrics_listen: None,
            log_format: LogFormat::Text,
            otlp_endpoint: None,
        }
    }
}

impl Settings {
    /// Reads a configuration file: the keys it sets over the defaults.
    pub fn from_file(path: &Path) -> Result<Settings, String> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("config file {}: {e}", path.display()))?;
        Settings::from_toml(&text, path)
    }

    /// Parses a configuration file's text (`path` only names it in
    /// errors). Keys it leaves out keep their defaults; a key memgate does
    /// not know, or a value of the wrong type, is an error naming the file,
    /// the line and the key.
    pub fn from_toml(text: &str, path: &Path) -> Result<Settings, String> {
        toml::from_str(text).map_err(|e: toml::de::Error| {
            let line = e
                .span()
                .map(|span| text[..span.start].matches('\n').count() + 1);
            let at = line.map_or_else(String::new, |n| format!(":{n}"));
            let message = match e.message().split_once(", expected") {
                // serde lists every key it expected; the example file does
                // that better than one long line.
                Some((unknown, _)) if unknown.starts_with("unknown field") => {
                    unknown.replace("unknown field", "unknown key")
                }
                // A wrong value: quote its line, which names the key.
                _ => match line.and_then(|n| text.lines().nth(n - 1)) {
                    Some(source) if !source.trim().is_empty() => {
                        format!("{} (`{}`)", e.message(), source.trim())
                    }
                    _ => e.message().to_owned(),
                },
            };
            format!("config file {}{at}: {message}", path.display())
        })
    }

    /// Sets the keys of `layer` (a table of the same shape, e.g. what the
    /// command line gave) over these settings: each key in `layer` wins.
    pub fn overlay(self, layer: toml::Table) -> Result<Settings, String> {
        let mut table = toml::Table::try_from(self).map_err(|e| e.to_string())?;
        table.extend(layer);
        table.try_into().map_err(|e: toml::de::Error| e.to_string())
    }

    /// The settings as a TOML document, in the configuration file's format.
    pub fn to_toml(&self) -> String {
        toml::to_string(self).expect("every setting has a TOML form")
    }
}

/// Durations as humantime strings (`"1s"`, `"1m 30s"`), the flags' format.
pub mod duration {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    /// Writes `d` as humantime (`"1s"`).
    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(&humantime::format_duration(*d))
    }

    /// Reads a humantime string.
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        let text = String::deserialize(d)?;
        humantime::parse_duration(&text).map_err(|e| {
            serde::de::Error::custom(format!("{text:?} is not a duration like \"1s\": {e}"))
        })
    }
}

/// Choices (`on_shard_down = "fail"`) by the names their flags take.
pub mod value_enum {
    use clap::ValueEnum;
    use serde::{Deserialize, Deserializer, Serializer};

    /// Writes the flag's name for `v`.
    pub fn serialize<S: Serializer, E: ValueEnum>(v: &E, s: S) -> Result<S::Ok, S::Error> {
        let name = v.to_possible_value().expect("no variant is skipped");
        s.serialize_str(name.get_name())
    }

    /// Reads one of the flag's names.
    pub fn deserialize<'de, D: Deserializer<'de>, E: ValueEnum>(d: D) -> Result<E, D::Error> {
        let text = String::deserialize(d)?;
        E::from_str(&text, false).map_err(|_| {
            let names: Vec<String> = E::value_variants()
                .iter()
                .filter_map(|v| v.to_possible_value())
                .map(|v| format!("{:?}", v.get_name()))
                .collect();
            serde::de::Error::custom(format!("{text:?} is not one of {}", names.join(", ")))
        })
    }

    /// The same for an optional choice.
    pub mod option {
        use clap::ValueEnum;
        use serde::{Deserializer, Serializer};

        /// Writes the flag's name, if any.
        pub fn serialize<S: Serializer, E: ValueEnum>(
            v: &Option<E>,
            s: S,
        ) -> Result<S::Ok, S::Error> {
            match v {
                Some(v) => super::serialize(v, s),
                None => s.serialize_none(),
            }
        }

        /// Reads one of the flag's names.
        pub fn deserialize<'de, D: Deserializer<'de>, E: ValueEnum>(
            d: D,
        ) -> Result<Option<E>, D::Error> {
            super::deserialize(d).map(Some)
        }
    }
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
    /// How long an invalidated item stays readable as stale.
    pub stale_ttl: u32,
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
    /// How log lines are written.
    pub log_format: LogFormat,
    /// Where RPC spans are exported over OTLP, if anywhere.
    pub otlp_endpoint: Option<String>,
}

impl Config {
    /// A config for the embedded store with default settings.
    pub fn embedded(listen: SocketAddr) -> Config {
        Settings {
            listen: listen.to_string(),
            ..Settings::default()
        }
        .try_into()
        .expect("the defaults are valid")
    }

    /// A config for a memcached pool at `addrs` with default settings.
    pub fn memcached(listen: SocketAddr, addrs: &[String]) -> Result<Config, String> {
        Settings {
            listen: listen.to_string(),
            memcached: addrs.to_vec(),
            ..Settings::default()
        }
        .try_into()
    }
}

impl TryFrom<Settings> for Config {
    type Error = String;

    fn try_from(s: Settings) -> Result<Config, String> {
        let listen = s.listen.parse::<SocketAddr>().map_err(|e| {
            format!(
                "--listen {:?} is not an address like 127.0.0.1:50051: {e}",
                s.listen
            )
        })?;
        let otlp_endpoint = match &s.otlp_endpoint {
            Some(url) if !cfg!(feature = "otlp") => {
                return Err(format!(
                    "--otlp-endpoint {url}: this memgate was built without OTLP export; build it with `cargo build --release -p memgate-server --features otlp`"
                ));
            }
            Some(url) if !(url.starts_with("http://") || url.starts_with("https://")) => {
                return Err(format!(
                    "--otlp-endpoint {url:?} is not a URL like http://127.0.0.1:4317"
                ));
            }
            other => other.clone(),
        };
        let metrics_listen = match &s.metrics_listen {
            Some(addr) => Some(addr.parse::<SocketAddr>().map_err(|e| {
                format!("--metrics-listen {addr:?} is not an address like 127.0.0.1:9090: {e}")
            })?),
            None => None,
        };
        let shards = s
            .memcached
            .iter()
            .map(|s| s.trim())
            .filter(|s| !s.is_empty())
            .map(str::parse::<ShardSpec>)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| format!("--memcached: {e}"))?;
        if s.hash.is_some() && s.distribution != Distribution::Ketama {
            return Err(
                "--hash chooses the key hash of --distribution ketama; the default ring has its own"
                    .to_owned(),
            );
        }
        let placement = Placement {
            distribution: s.distribution,
            hash: s.hash.unwrap_or_default(),
        };
        let mut seen = std::collections::HashSet::new();
        if let Some(dup) = shards.iter().find(|s| !seen.insert(&s.addr)) {
            return Err(format!("--memcached lists {} twice", dup.addr));
        }
        if !s.memcached.is_empty() && shards.is_empty() {
            return Err("--memcached was given but names no server".to_owned());
        }
        let members = membership_source(&s, shards)?;
        if s.max_value_bytes == 0 {
            return Err("--max-value-bytes must be at least 1".to_owned());
        }
        if s.stale_ttl == 0 {
            return Err("--stale-ttl must be at least 1 second".to_owned());
        }
        if s.max_batch_keys == 0 || s.list_max_keys == 0 || s.max_idle_conns == 0 {
            return Err(
                "--max-batch-keys, --list-max-keys and --max-idle-conns must be at least 1"
                    .to_owned(),
            );
        }
        if s.max_message_bytes < s.max_value_bytes + MESSAGE_OVERHEAD {
            return Err(format!(
                "--max-message-bytes ({}) must be at least --max-value-bytes + {MESSAGE_OVERHEAD} ({})",
                s.max_message_bytes,
                s.max_value_bytes + MESSAGE_OVERHEAD
            ));
        }
        if s.max_inflight_bytes < s.max_value_bytes + MESSAGE_OVERHEAD {
            return Err(format!(
                "--max-inflight-bytes ({}) must be at least --max-value-bytes + {MESSAGE_OVERHEAD} ({}), or no value could ever be read",
                s.max_inflight_bytes,
                s.max_value_bytes + MESSAGE_OVERHEAD
            ));
        }
        for (flag, d) in [
            ("--timeout", s.timeout),
            ("--connect-timeout", s.connect_timeout),
            ("--health-interval", s.health_interval),
        ] {
            if d.is_zero() {
                return Err(format!("{flag} must be longer than zero"));
            }
        }
        if s.worker_threads == 0 {
            return Err("--worker-threads must be at least 1".to_owned());
        }
        if s.max_concurrent_calls == 0 || s.max_concurrent_streams == 0 {
            return Err(
                "--max-concurrent-calls and --max-concurrent-streams must be at least 1".to_owned(),
            );
        }
        let tls = match (&s.tls_cert, &s.tls_key) {
            (Some(cert), Some(key)) => Some(TlsFiles {
                cert: read_file("--tls-cert", cert)?,
                key: read_file("--tls-key", key)?,
                client_ca: match &s.tls_client_ca {
                    Some(ca) => Some(read_file("--tls-client-ca", ca)?),
                    None => None,
                },
            }),
            (None, None) if s.tls_client_ca.is_some() => {
                return Err("--tls-client-ca needs --tls-cert and --tls-key".to_owned());
            }
            (None, None) => None,
            (Some(_), None) => return Err("--tls-cert needs --tls-key".to_owned()),
            (None, Some(_)) => return Err("--tls-key needs --tls-cert".to_owned()),
        };
        let tokens = match &s.auth_token_file {
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
            max_concurrent_calls: s.max_concurrent_calls,
            max_concurrent_streams: s.max_concurrent_streams,
            http2_keepalive: (!s.http2_keepalive.is_zero()).then_some(s.http2_keepalive),
            shutdown_grace: s.shutdown_grace,
            worker_threads: s.worker_threads,
            tls,
            tokens,
        };
        let dns_server = match &members {
            Some(Source::Srv { resolver, .. }) => *resolver,
            _ => None,
        };
        let backend = match members {
            None => Backend::Embedded {
                max_bytes: s.embedded_max_bytes,
            },
            Some(members) => Backend::Memcached {
                members,
                pool: PoolSettings {
                    timeout: s.timeout,
                    connect_timeout: s.connect_timeout,
                    conns_per_shard: s.max_idle_conns,
                    keepalive: (!s.keepalive.is_zero()).then_some(s.keepalive),
                    failure_limit: s.shard_failure_limit.max(1),
                    retry_timeout: s.shard_retry_timeout,
                    // The DNS server the SRV records come from also
                    // resolves the members' names.
                    dns_server,
                },
                on_down: s.on_shard_down,
                placement,
                rebalance: Rebalance {
                    window: s.rebalance_window,
                    fallback_rate: s.rebalance_fallback_rate,
                },
            },
        };
        Ok(Config {
            listen,
            backend,
            limits: Limits {
                default_ttl: s.default_ttl,
                stale_ttl: s.stale_ttl,
                max_value_bytes: s.max_value_bytes,
                max_batch_keys: s.max_batch_keys,
                max_message_bytes: s.max_message_bytes,
                max_inflight_bytes: s.max_inflight_bytes,
                list_max_keys: s.list_max_keys,
            },
            health_interval: s.health_interval,
            reflection: !s.no_reflection,
            server,
            metrics_listen,
            log_format: s.log_format,
            otlp_endpoint,
        })
    }
}

/// The membership source the settings name, if any (`None`: the embedded
/// store). At most one of --memcached, --memcached-file and
/// --memcached-srv.
fn membership_source(s: &Settings, shards: Vec<ShardSpec>) -> Result<Option<Source>, String> {
    let given: Vec<&str> = [
        (!s.memcached.is_empty(), "--memcached"),
        (s.memcached_file.is_some(), "--memcached-file"),
        (s.memcached_srv.is_some(), "--memcached-srv"),
    ]
    .into_iter()
    .filter_map(|(given, flag)| given.then_some(flag))
    .collect();
    if given.len() > 1 {
        return Err(format!(
            "{} each name the servers: give one",
            given.join(" and ")
        ));
    }
    if s.dns_server.is_some() && s.memcached_srv.is_none() {
        return Err("--dns-server is only for --memcached-srv".to_owned());
    }
    if s.discovery_interval.is_zero() {
        return Err("--discovery-interval must be longer than zero".to_owned());
    }
    if let Some(path) = &s.memcached_file {
        return Ok(Some(Source::File {
            path: path.clone(),
            poll: s.discovery_interval,
        }));
    }
    if let Some(name) = &s.memcached_srv {
        if name.trim().is_empty() {
            return Err("--memcached-srv names no DNS name".to_owned());
        }
        let resolver = match &s.dns_server {
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
            interval: s.discovery_interval,
            resolver,
        }));
    }
    Ok((!shards.is_empty()).then_some(Source::Static(shards)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn from_toml(text: &str) -> Result<Settings, String> {
        Settings::from_toml(text, Path::new("/etc/memgate/memgate.toml"))
    }

    #[test]
    fn the_defaults_are_a_valid_embedded_config() {
        let c = Config::try_from(Settings::default()).unwrap();
        assert!(
            matches!(c.backend, Backend::Embedded { max_bytes } if max_bytes == DEFAULT_EMBEDDED_MAX_BYTES)
        );
        assert_eq!(c.listen.to_string(), DEFAULT_LISTEN);
        assert_eq!(c.server.http2_keepalive, Some(DEFAULT_HTTP2_KEEPALIVE));
        assert!(c.reflection);
    }

    #[test]
    fn a_file_sets_what_it_names_and_leaves_the_rest() {
        let s = from_toml(
            r#"
            listen = "0.0.0.0:50051"
            memcached = ["10.0.0.1:11211", "10.0.0.2:11211:2"]
            timeout = "250ms"
            on_shard_down = "reroute"
            tls_cert = "/etc/memgate/cert.pem"
            "#,
        )
        .unwrap();
        assert_eq!(s.listen, "0.0.0.0:50051");
        assert_eq!(s.memcached.len(), 2);
        assert_eq!(s.timeout, Duration::from_millis(250));
        assert_eq!(s.on_shard_down, OnShardDown::Reroute);
        assert_eq!(s.tls_cert, Some(PathBuf::from("/etc/memgate/cert.pem")));
        assert_eq!(s.max_batch_keys, DEFAULT_MAX_BATCH_KEYS);
        assert_eq!(from_toml("").unwrap(), Settings::default());
    }

    #[test]
    fn an_unknown_key_is_named_with_the_file_and_line() {
        let err = from_toml("listen = \"127.0.0.1:1\"\n\nmax_vaule_bytes = 10\n").unwrap_err();
        assert!(err.contains("max_vaule_bytes"), "{err}");
        assert!(err.contains("/etc/memgate/memgate.toml:3"), "{err}");
        assert!(!err.contains('\n'), "{err}");
        // A table is a key too.
        let err = from_toml("[tls]\ncert = \"x\"\n").unwrap_err();
        assert!(err.contains("unknown key `tls`"), "{err}");
    }

    #[test]
    fn a_bad_value_is_named_with_the_file() {
        for (text, needle) in [
            ("timeout = \"soon\"", "\"soon\" is not a duration"),
            ("timeout = 1", "expected a string (`timeout = 1`)"),
            ("max_batch_keys = \"many\"", "(`max_batch_keys = \"many\"`)"),
            ("on_shard_down = \"retry\"", "\"retry\" is not one of"),
            ("listen = ", "memgate.toml:1"),
        ] {
            let err = from_toml(text).unwrap_err();
            assert!(err.contains(needle), "{text}: {err}");
            assert!(
                err.starts_with("config file /etc/memgate/memgate.toml"),
                "{err}"
            );
        }
    }

    #[test]
    fn settings_round_trip_through_toml() {
        let s = Settings {
            memcached: vec!["a:1".into()],
            timeout: Duration::from_millis(1500),
            on_shard_down: OnShardDown::Reroute,
            auth_token_file: Some("/run/tokens".into()),
            ..Settings::default()
        };
        let path = Path::new("x.toml");
        assert_eq!(Settings::from_toml(&s.to_toml(), path).unwrap(), s);
    }

    #[test]
    fn overlay_replaces_only_the_keys_it_has() {
        let base = from_toml("timeout = \"2s\"\ndefault_ttl = 5").unwrap();
        let mut layer = toml::Table::new();
        layer.insert("timeout".into(), "3s".into());
        let s = base.overlay(layer).unwrap();
        assert_eq!(s.timeout, Duration::from_secs(3));
        assert_eq!(s.default_ttl, 5);
    }

    #[test]
    fn tls_files_come_in_pairs() {
        for (s, needle) in [
            (
                Settings {
                    tls_key: Some("k".into()),
                    ..Settings::default()
                },
                "--tls-key needs --tls-cert",
            ),
            (
                Settings {
                    tls_client_ca: Some("ca".into()),
                    ..Settings::default()
                },
                "--tls-client-ca needs",
            ),
        ] {
            let err = Config::try_from(s).unwrap_err();
            assert!(err.contains(needle), "{err}");
        }
    }
}
