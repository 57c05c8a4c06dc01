//! The command line, and how it is layered over the configuration file.
//!
//! Every setting is a flag (`--max-value-bytes`), an environment variable
//! (`MEMGATE_MAX_VALUE_BYTES`) and a key of the configuration file
//! (`max_value_bytes`): one name, three spellings. [`load`] merges them,
//! each layer over the one before: built-in default < file < environment
//! variable < flag.
//!
//! The flags are all `Option`s with no clap default, so "not given" is
//! told apart from "given the default value"; `--help` still shows each
//! default, taken from [`Settings::default`]. The caller hands [`load`] the
//! arguments and an environment lookup, so nothing here reads the process
//! environment (tests pass a map) or exits (the binary decides).

use std::ffi::OsString;
use std::path::PathBuf;
use std::time::Duration;

use clap::builder::BoolishValueParser;
use clap::{Args, Command, CommandFactory, FromArgMatches, Parser, ValueEnum};
use serde::{Serialize, Serializer};

use crate::config::{Settings, duration};
use crate::store::memcached::OnShardDown;
use crate::store::memcached::ketama::KeyHash;
use crate::store::memcached::ring::Distribution;
use crate::trace::LogFormat;

/// memgate: a gRPC cache service in front of a sharded memcached pool.
///
/// With no --memcached servers it serves from an embedded in-process store.
#[derive(Debug, Clone, Parser)]
#[command(name = "memgate", version, about, long_about = None)]
pub struct Cli {
    /// Read settings from this TOML file first (every key is documented in
    /// deploy/memgate.example.toml); flags and MEMGATE_* variables
    /// override it.
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,

    /// Check the configuration (addresses, files, TLS material), print the
    /// effective configuration as TOML and exit, without serving.
    #[arg(long)]
    pub check_config: bool,

    /// Every setting the command line gave.
    #[command(flatten)]
    pub settings: Flags,
}

/// The settings as flags: each `None` unless given. Field names are the
/// configuration file's keys, so a `Flags` serializes to a layer of the
/// same shape as [`Settings`].
#[derive(Debug, Clone, Default, Args, Serialize)]
pub struct Flags {
    /// Address to serve gRPC on.
    #[arg(long, value_name = "ADDR")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub listen: Option<String>,

    /// memcached servers, comma-separated `host:port[:weight]`. Keys are
    /// spread over them by consistent hashing. Empty: the embedded store.
    #[arg(long, value_delimiter = ',', num_args = 0..)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub memcached: Option<Vec<String>>,

    /// memcached servers from a file, one `host:port[:weight]` per line
    /// (`#` comments). Re-read when it changes, on SIGHUP and every
    /// --discovery-interval; a bad update keeps the current servers.
    #[arg(long, value_name = "FILE")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub memcached_file: Option<PathBuf>,

    /// memcached servers from the DNS SRV records of this name (e.g. a
    /// Kubernetes headless Service), resolved every --discovery-interval.
    /// Members are named by the records' target hostnames.
    #[arg(long, value_name = "NAME")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub memcached_srv: Option<String>,

    /// How often --memcached-srv is resolved and --memcached-file re-read
    /// (the file is also re-read as soon as it changes).
    #[arg(long, value_parser = humantime::parse_duration)]
    #[serde(
        skip_serializing_if = "Option::is_none",
        serialize_with = "some_duration"
    )]
    pub discovery_interval: Option<Duration>,

    /// The DNS server --memcached-srv asks (`ip[:port]`, port 53 by
    /// default) instead of the system's: for tests and special setups.
    #[arg(long, value_name = "ADDR")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dns_server: Option<String>,

    /// TTL in seconds for Sets that give none (0: never expires).
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub default_ttl: Option<u32>,

    /// Seconds an item marked stale by an invalidating Delete stays
    /// readable (as stale) while one caller refreshes it.
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stale_ttl: Option<u32>,

    /// Largest value accepted, in bytes. A shard whose item_size_max is
    /// smaller lowers it further for its keys.
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_value_bytes: Option<usize>,

    /// Most keys (or items) in one batch request.
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_batch_keys: Option<usize>,

    /// Largest gRPC message accepted or sent, in bytes. Must exceed
    /// --max-value-bytes; clients should raise their receive limit to match.
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_message_bytes: Option<usize>,

    /// Bytes of values memgate holds for all calls at once (read from
    /// memcached, not yet sent). A call that would go past it is refused
    /// with RESOURCE_EXHAUSTED rather than let memory grow; keep it well
    /// under the process's memory limit.
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_inflight_bytes: Option<usize>,

    /// Most keys one List returns (its `limit` 0 means this).
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub list_max_keys: Option<usize>,

    /// Longest wait for a memcached reply, e.g. `500ms`.
    #[arg(long, value_parser = humantime::parse_duration)]
    #[serde(
        skip_serializing_if = "Option::is_none",
        serialize_with = "some_duration"
    )]
    pub timeout: Option<Duration>,

    /// Longest wait for a TCP connection to memcached.
    #[arg(long, value_parser = humantime::parse_duration)]
    #[serde(
        skip_serializing_if = "Option::is_none",
        serialize_with = "some_duration"
    )]
    pub connect_timeout: Option<Duration>,

    /// Pipelined connections to each memcached server for single-key calls
    /// (batches get as many again, health probes one). One, the default,
    /// lets the most requests share each write (measured: less CPU per call
    /// for memgate and memcached alike); more spreads one memgate's load
    /// over more of a server's worker threads.
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_idle_conns: Option<usize>,

    /// TCP keepalive idle time on memcached connections (`0s`: off).
    #[arg(long, value_parser = humantime::parse_duration)]
    #[serde(
        skip_serializing_if = "Option::is_none",
        serialize_with = "some_duration"
    )]
    pub keepalive: Option<Duration>,

    /// Consecutive failures (errors or timeouts) after which a memcached
    /// server is marked down and its keys fail fast.
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub shard_failure_limit: Option<u32>,

    /// While a server is down, one trial call is let through this often;
    /// the health probe also brings it back as soon as it answers.
    #[arg(long, value_parser = humantime::parse_duration)]
    #[serde(
        skip_serializing_if = "Option::is_none",
        serialize_with = "some_duration"
    )]
    pub shard_retry_timeout: Option<Duration>,

    /// What happens to the keys of a server marked down: `fail` (fast
    /// UNAVAILABLE) or `reroute` (to the next live server on the ring).
    #[arg(long, value_enum)]
    #[serde(
        skip_serializing_if = "Option::is_none",
        serialize_with = "some_value_enum"
    )]
    pub on_shard_down: Option<OnShardDown>,

    /// How often every shard is probed for the health service.
    #[arg(long, value_parser = humantime::parse_duration)]
    #[serde(
        skip_serializing_if = "Option::is_none",
        serialize_with = "some_duration"
    )]
    pub health_interval: Option<Duration>,

    /// Memory bound of the embedded store, in bytes.
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub embedded_max_bytes: Option<u64>,

    /// Turn off gRPC server reflection (on by default so grpcurl works
    /// without the .proto). `--no-reflection=false` turns it back on over
    /// the file.
    // A value is optional so the variable and a flag can say `false` too.
    #[arg(
        long,
        value_name = "BOOL",
        num_args = 0..=1,
        require_equals = true,
        default_missing_value = "true",
        value_parser = BoolishValueParser::new()
    )]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub no_reflection: Option<bool>,

    /// Most Cache calls in flight across the whole server; more are refused
    /// at once with RESOURCE_EXHAUSTED (health and reflection are exempt).
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_concurrent_calls: Option<usize>,

    /// HTTP/2 MAX_CONCURRENT_STREAMS advertised to each client connection.
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_concurrent_streams: Option<u32>,

    /// Threads serving calls. 1 (the default) runs everything on one
    /// event loop, as twemproxy does: the least CPU per call, measured
    /// (see the README's benchmarks); scale out with replicas. More than 1
    /// uses tokio's work-stealing scheduler over that many threads.
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub worker_threads: Option<usize>,

    /// HTTP/2 PING interval on idle client connections (`0s`: off).
    #[arg(long, value_parser = humantime::parse_duration)]
    #[serde(
        skip_serializing_if = "Option::is_none",
        serialize_with = "some_duration"
    )]
    pub http2_keepalive: Option<Duration>,

    /// On SIGTERM: how long unary calls in flight may take to finish before
    /// memgate closes their connections and exits (open streams end at once
    /// with UNAVAILABLE).
    #[arg(long, value_parser = humantime::parse_duration)]
    #[serde(
        skip_serializing_if = "Option::is_none",
        serialize_with = "some_duration"
    )]
    pub shutdown_grace: Option<Duration>,

    /// Serve TLS with this certificate chain (PEM); needs --tls-key.
    #[arg(long, value_name = "FILE")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tls_cert: Option<PathBuf>,

    /// The private key (PEM) for --tls-cert.
    #[arg(long, value_name = "FILE")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tls_key: Option<PathBuf>,

    /// Require client certificates signed by this CA (PEM): mutual TLS.
    #[arg(long, value_name = "FILE")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tls_client_ca: Option<PathBuf>,

    /// Require `authorization: Bearer <token>` on Cache calls, with the
    /// tokens in this file (one per line). Health and reflection stay open.
    #[arg(long, value_name = "FILE")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub auth_token_file: Option<PathBuf>,

    /// How keys are spread over the servers: `ring` (memgate's own) or
    /// `ketama`, placing every key exactly where twemproxy (nutcracker)
    /// with `distribution: ketama` and the same `hash` puts it (with
    /// `--hash md5`, where libmemcached's ketama puts it).
    #[arg(long, value_enum)]
    #[serde(
        skip_serializing_if = "Option::is_none",
        serialize_with = "some_value_enum"
    )]
    pub distribution: Option<Distribution>,

    /// The key hash of `--distribution ketama` (twemproxy's `hash:`
    /// setting; its default is fnv1a_64).
    #[arg(long, value_enum)]
    #[serde(
        skip_serializing_if = "Option::is_none",
        serialize_with = "some_value_enum"
    )]
    pub hash: Option<KeyHash>,

    /// After the pool changes, for this long a read that misses on a key's
    /// new server falls back to its previous server and copies what it
    /// finds (no cold cache for moved keys); writes and deletes also
    /// delete the old copy. 0s: off.
    #[arg(long, value_parser = humantime::parse_duration)]
    #[serde(
        skip_serializing_if = "Option::is_none",
        serialize_with = "some_duration"
    )]
    pub rebalance_window: Option<Duration>,

    /// Most fallback reads per second during the rebalance window (more
    /// misses stay misses), bounding the extra load on the old servers.
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rebalance_fallback_rate: Option<u32>,

    /// Serve Prometheus metrics on http://ADDR/metrics (e.g.
    /// 127.0.0.1:9090). Off when not given: nothing is recorded.
    #[arg(long, value_name = "ADDR")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub metrics_listen: Option<String>,

    /// How log lines are written to stderr: `text` (colours only when
    /// stderr is a terminal) or `json` (one object per line). The level is
    /// set by MEMGATE_LOG (e.g. `debug`; default `info`).
    #[arg(long, value_enum)]
    #[serde(
        skip_serializing_if = "Option::is_none",
        serialize_with = "some_value_enum"
    )]
    pub log_format: Option<LogFormat>,

    /// Export each call's span over OTLP/gRPC to this collector (e.g.
    /// http://127.0.0.1:4317), with W3C trace context taken from the
    /// request's `traceparent`. Needs a memgate built with
    /// `--features otlp`.
    #[arg(long, value_name = "URL")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub otlp_endpoint: Option<String>,
}

fn some_duration<S: Serializer>(d: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
    match d {
        Some(d) => duration::serialize(d, s),
        None => s.serialize_none(),
    }
}

fn some_value_enum<S: Serializer, E: ValueEnum>(v: &Option<E>, s: S) -> Result<S::Ok, S::Error> {
    match v.as_ref().and_then(ValueEnum::to_possible_value) {
        Some(v) => s.serialize_str(v.get_name()),
        None => s.serialize_none(),
    }
}

/// What the command line asked for, every layer merged.
#[derive(Debug, Clone)]
pub struct Invocation {
    /// The effective settings: default < file < environment < flag.
    pub settings: Settings,
    /// The configuration file they were read from, if any.
    pub config_file: Option<PathBuf>,
    /// `--check-config`: validate and print, do not serve.
    pub check_config: bool,
}

/// Why [`load`] gave no [`Invocation`].
#[derive(Debug)]
pub enum LoadError {
    /// clap's own answer: a malformed flag, or `--help` / `--version`
    /// (not failures). `clap::Error::exit` prints each as clap does.
    Usage(clap::Error),
    /// A bad environment variable or configuration file, in one line.
    Config(String),
}

impl From<String> for LoadError {
    fn from(message: String) -> Self {
        LoadError::Config(message)
    }
}

/// The setting names (the file's keys), from the flags themselves.
pub fn setting_names() -> Vec<String> {
    Flags::augment_args(Command::new("memgate"))
        .get_arguments()
        .map(|arg| arg.get_id().to_string())
        .collect()
}

/// The environment variable for the argument `id` (`MEMGATE_` and the
/// key in capitals), or `None` for one that has none (`--check-config`).
pub fn env_var(id: &str) -> Option<String> {
    (id != "check_config" && id != "help" && id != "version")
        .then(|| format!("MEMGATE_{}", id.to_ascii_uppercase()))
}

/// The clap command: [`Cli`] with each setting's default (from
/// [`Settings::default`]) and environment variable in its help.
pub fn command() -> Command {
    let defaults = toml::Table::try_from(Settings::default()).expect("the defaults serialize");
    Cli::command().mut_args(|arg| {
        let id = arg.get_id().to_string();
        let Some(var) = env_var(&id) else {
            return arg;
        };
        let default = match defaults.get(&id) {
            Some(toml::Value::String(v)) => format!(" [default: {v}]"),
            Some(toml::Value::Integer(v)) => format!(" [default: {v}]"),
            _ => String::new(),
        };
        let help = arg.get_help().map(ToString::to_string).unwrap_or_default();
        arg.help(format!("{help}{default} [env: {var}]"))
    })
}

/// Parses `args` (the program name first) and the `MEMGATE_*` variables
/// `env` returns, reads the configuration file they name (`--config`, else
/// `MEMGATE_CONFIG`), and merges: default < file < environment < flag.
pub fn load<I, T>(args: I, env: impl Fn(&str) -> Option<OsString>) -> Result<Invocation, LoadError>
where
    I: IntoIterator<Item = T>,
    T: Into<OsString> + Clone,
{
    let command = command();
    let cli = command
        .clone()
        .try_get_matches_from(args)
        .and_then(|m| Cli::from_arg_matches(&m))
        .map_err(LoadError::Usage)?;

    // Each variable is parsed alone, as its flag, by the flag's own parser,
    // so a bad one is reported by name.
    let mut from_env = toml::Table::new();
    let mut env_config = None;
    for arg in command.get_arguments() {
        let id = arg.get_id().as_str();
        let (Some(var), Some(long)) = (env_var(id), arg.get_long()) else {
            continue;
        };
        let Some(value) = env(&var) else {
            continue;
        };
        let mut flag = OsString::from(format!("--{long}="));
        flag.push(&value);
        let parsed = command
            .clone()
            .try_get_matches_from([OsString::from("memgate"), flag])
            .and_then(|m| Cli::from_arg_matches(&m))
            .map_err(|e| {
                let message = e.to_string();
                let first = message.lines().next().unwrap_or_default();
                format!("{var}: {}", first.trim_start_matches("error: "))
            })?;
        env_config = env_config.or(parsed.config);
        from_env.extend(layer(&parsed.settings)?);
    }

    let config_file = cli.config.or(env_config);
    let base = match &config_file {
        Some(path) => Settings::from_file(path)?,
        None => Settings::default(),
    };
    let settings = base.overlay(from_env)?.overlay(layer(&cli.settings)?)?;
    Ok(Invocation {
        settings,
        config_file,
        check_config: cli.check_config,
    })
}

/// The keys `flags` gives, as a table to lay over [`Settings`].
fn layer(flags: &Flags) -> Result<toml::Table, String> {
    toml::Table::try_from(flags).map_err(|e| format!("cannot merge flags: {e}"))
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;
    use std::io::Write;

    use super::*;
    use crate::config::{Backend, Config, DEFAULT_LISTEN};
    use crate::membership::Source;

    fn no_env(_: &str) -> Option<OsString> {
        None
    }

    fn parse(args: &[&str]) -> Result<Config, String> {
        let all = std::iter::once("memgate").chain(args.iter().copied());
        match load(all, no_env) {
            Ok(invocation) => invocation.settings.try_into(),
            Err(LoadError::Usage(e)) => Err(e.to_string()),
            Err(LoadError::Config(e)) => Err(e),
        }
    }

    fn file(text: &str) -> tempfile::NamedTempFile {
        let mut f = tempfile::Builder::new().suffix(".toml").tempfile().unwrap();
        f.write_all(text.as_bytes()).unwrap();
        f
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
        assert!(c.reflection);
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
            (&["--timeout", "soon"], "--timeout"),
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
            (&["--tls-cert", "/nonexistent/cert"], "needs --tls-key"),
            (&["--max-concurrent-calls", "0"], "at least 1"),
            (&["--metrics-listen", "nope"], "--metrics-listen"),
            (&["--config", "/nonexistent/memgate.toml"], "memgate.toml"),
        ] {
            let err = parse(args).unwrap_err();
            assert!(err.contains(needle), "{args:?}: {err}");
        }
    }

    /// default < file < environment < flag, one setting decided at each
    /// layer; the environment comes from a map, not the process.
    #[test]
    fn flags_override_environment_overrides_file_overrides_defaults() {
        let f = file(
            r#"
            timeout = "2s"
            max_batch_keys = 5
            list_max_keys = 9
            no_reflection = true
            "#,
        );
        let env: HashMap<&str, &str> = [
            ("MEMGATE_TIMEOUT", "3s"),
            ("MEMGATE_MAX_BATCH_KEYS", "7"),
            ("MEMGATE_NO_REFLECTION", "false"),
            ("MEMGATE_DEFAULT_TTL", "60"),
        ]
        .into();
        let path = f.path().to_str().unwrap();
        let invocation = load(["memgate", "--config", path, "--timeout", "4s"], |name| {
            env.get(name).map(OsString::from)
        })
        .unwrap();
        let s = &invocation.settings;
        assert_eq!(s.timeout, Duration::from_secs(4), "flag over env and file");
        assert_eq!(s.max_batch_keys, 7, "env over file");
        assert!(!s.no_reflection, "env `false` over file `true`");
        assert_eq!(s.default_ttl, 60, "env over default");
        assert_eq!(s.list_max_keys, 9, "file over default");
        assert_eq!(s.max_value_bytes, Settings::default().max_value_bytes);
        assert_eq!(invocation.config_file.as_deref(), Some(f.path()));
        assert!(!invocation.check_config);
    }

    #[test]
    fn the_file_can_come_from_the_environment() {
        let f = file("worker_threads = 3\n");
        let path = f.path().as_os_str().to_owned();
        let invocation = load(["memgate", "--check-config"], |name| {
            (name == "MEMGATE_CONFIG").then(|| path.clone())
        })
        .unwrap();
        assert_eq!(invocation.settings.worker_threads, 3);
        assert!(invocation.check_config);
    }

    #[test]
    fn a_bad_variable_is_named() {
        let Err(LoadError::Config(e)) = load(["memgate"], |name| {
            (name == "MEMGATE_HEALTH_INTERVAL").then(|| "often".into())
        }) else {
            panic!("a bad MEMGATE_HEALTH_INTERVAL was accepted")
        };
        assert!(e.starts_with("MEMGATE_HEALTH_INTERVAL: "), "{e}");
        assert!(e.contains("often"), "{e}");
        assert!(!e.contains('\n'), "{e}");
    }

    #[test]
    fn memcached_from_the_environment_is_comma_separated() {
        let invocation = load(["memgate"], |name| {
            (name == "MEMGATE_MEMCACHED").then(|| "10.0.0.1:11211,10.0.0.2:11211:2".into())
        })
        .unwrap();
        assert_eq!(
            invocation.settings.memcached,
            ["10.0.0.1:11211", "10.0.0.2:11211:2"]
        );
    }

    #[test]
    fn no_reflection_takes_an_optional_value() {
        for (args, expect) in [
            (&["--no-reflection"][..], true),
            (&["--no-reflection=true"], true),
            (&["--no-reflection=false"], false),
            (&[], false),
        ] {
            let all = std::iter::once("memgate").chain(args.iter().copied());
            let s = load(all, no_env).unwrap().settings;
            assert_eq!(s.no_reflection, expect, "{args:?}");
        }
    }

    #[test]
    fn the_setting_names_are_the_flags_and_the_file_keys() {
        let names = setting_names();
        assert!(names.contains(&"max_value_bytes".to_owned()));
        assert!(!names.contains(&"config".to_owned()));
        assert!(!names.contains(&"check_config".to_owned()));
        // Every key the defaults write is a flag: nothing is file-only.
        let defaults = toml::Table::try_from(Settings::default()).unwrap();
        for key in defaults.keys() {
            assert!(names.contains(key), "{key} is not a flag");
        }
    }

    #[test]
    fn help_shows_defaults_and_variables() {
        let help = command().render_help().to_string();
        for needle in [
            "[default: 1s] [env: MEMGATE_TIMEOUT]",
            "[default: 127.0.0.1:50051] [env: MEMGATE_LISTEN]",
            "[default: 1048576] [env: MEMGATE_MAX_VALUE_BYTES]",
            "[env: MEMGATE_CONFIG]",
            "--check-config",
        ] {
            assert!(help.contains(needle), "--help lacks {needle:?}:\n{help}");
        }
    }
}
