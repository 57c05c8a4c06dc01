//! Pool membership: which memcached servers the pool should have, and
//! every later change to that list.
//!
//! A [`Source`] is the static `--memcached` list, a file
//! (`--memcached-file`) or the DNS SRV records of a name
//! (`--memcached-srv`). [`watch`] reads it once and then follows it in a
//! background task, publishing each new valid list on a
//! `tokio::sync::watch` channel. Only valid lists are ever published: an
//! update that cannot be read or parsed, names no server or names one twice
//! keeps the last good list and is logged once (again only when the error
//! changes or after a good read), so a bad edit or a DNS outage never takes
//! servers away. Lists are sorted by address, so two spellings of the same
//! set in another order compare equal and publish nothing.

use std::collections::{BTreeMap, HashMap};
use std::ffi::OsString;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use hickory_resolver::TokioResolver;
use hickory_resolver::config::{NameServerConfig, ResolverConfig};
use hickory_resolver::net::runtime::TokioRuntimeProvider;
use hickory_resolver::proto::rr::RData;
use notify::event::{AccessKind, AccessMode};
use notify::{Event, EventKind, RecommendedWatcher, RecursiveMode, Watcher};
use tokio::signal::unix::{Signal, SignalKind, signal};
use tokio::sync::{Notify, mpsc, watch as channel};

use crate::store::memcached::ring::ShardSpec;

/// How long the file must stay quiet after a change before it is read: an
/// editor's save or a ConfigMap swap is a burst of events, read once.
const DEBOUNCE: Duration = Duration::from_millis(100);

/// Longest wait for one DNS answer (shorter when `--discovery-interval` is).
const DNS_TIMEOUT: Duration = Duration::from_secs(5);

/// Where the member list comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// A fixed list (`--memcached`): published once, never changes.
    Static(Vec<ShardSpec>),
    /// A file of `host:port[:weight]` lines (`--memcached-file`), re-read
    /// when it changes, on SIGHUP and every `poll`.
    File {
        /// The file, as given (a symlink is followed on every read).
        path: PathBuf,
        /// Periodic re-read, for changes the file watcher cannot see.
        poll: Duration,
    },
    /// The SRV records of `name` (`--memcached-srv`), resolved every
    /// `interval`.
    Srv {
        /// The name to resolve, e.g. `_memcache._tcp.memcached.default.svc.cluster.local`.
        name: String,
        /// How often it is resolved again.
        interval: Duration,
        /// The DNS server to ask (`--dns-server`); `None`: the system's
        /// (`/etc/resolv.conf`).
        resolver: Option<SocketAddr>,
    },
}

/// Starts following `source`: returns a receiver holding the current member
/// list, which then sees every later valid list that differs from the one
/// before. The background task ends when every receiver is dropped.
///
/// At startup a file that cannot be read, does not parse or names no server
/// is an error: memgate should refuse to start rather than guess. An SRV
/// name that does not resolve (DNS down, no records yet) is not: the
/// receiver starts with an empty list, the failure is logged and the name
/// is tried again every interval until members appear.
pub async fn watch(source: Source) -> Result<channel::Receiver<Vec<ShardSpec>>, String> {
    watch_reporting(source, None).await
}

/// [`watch`], telling `reports` the outcome of every read after the first
/// (`Ok(true)`: published, `Ok(false)`: unchanged, `Err`: rejected), so tests
/// can wait for a read instead of sleeping.
async fn watch_reporting(
    source: Source,
    reports: Option<mpsc::UnboundedSender<Result<bool, String>>>,
) -> Result<channel::Receiver<Vec<ShardSpec>>, String> {
    match source {
        Source::Static(list) => {
            let list = normalize(list, "--memcached")?;
            if list.is_empty() {
                return Err("--memcached names no server".to_owned());
            }
            let (_tx, rx) = channel::channel(list);
            Ok(rx)
        }
        Source::File { path, poll } => {
            if poll.is_zero() {
                return Err(
                    "the re-read interval of --memcached-file must be longer than zero".to_owned(),
                );
            }
            let list = read_list(&path).map_err(|e| format!("--memcached-file {e}"))?;
            tracing::info!(file = %path.display(), members = %addrs(&list), "memcached pool members");
            let hup = signal(SignalKind::hangup())
                .map_err(|e| format!("--memcached-file: cannot handle SIGHUP: {e}"))?;
            let (tx, rx) = channel::channel(list);
            let changed = Arc::new(Notify::new());
            let watcher = watch_dir(&path, changed.clone());
            let publisher = Publisher::new(tx, path.display().to_string(), reports);
            tokio::spawn(follow_file(path, poll, publisher, changed, watcher, hup));
            Ok(rx)
        }
        Source::Srv {
            name,
            interval,
            resolver,
        } => {
            if interval.is_zero() {
                return Err("--discovery-interval must be longer than zero".to_owned());
            }
            let resolver = build_resolver(resolver, interval)?;
            let origin = format!("SRV {name}");
            let (tx, rx) = channel::channel(Vec::new());
            let mut publisher = Publisher::new(tx, origin, None);
            publisher.offer(resolve(&resolver, &name).await);
            if publisher.tx.borrow().is_empty() {
                tracing::warn!(
                    name,
                    "no memcached servers yet: serving NOT_SERVING, resolving again every {}",
                    humantime::format_duration(interval)
                );
            }
            publisher.reports = reports;
            tokio::spawn(follow_srv(resolver, name, interval, publisher));
            Ok(rx)
        }
    }
}

/// Parses a member list: one `host:port[:weight]` per line, `#` starting
/// a comment, blank lines ignored. Errors name `origin` and the line
/// (`memgate.members:3: bad weight ...`). An empty list is not an error
/// here; the caller decides what no servers means.
pub fn parse_list(origin: &str, text: &str) -> Result<Vec<ShardSpec>, String> {
    let mut list = Vec::new();
    let mut lines = HashMap::new();
    for (n, line) in text.lines().enumerate() {
        let n = n + 1;
        let line = line.split_once('#').map_or(line, |(data, _)| data).trim();
        if line.is_empty() {
            continue;
        }
        let spec = line
            .parse::<ShardSpec>()
            .map_err(|e| format!("{origin}:{n}: {e}"))?;
        if let Some(first) = lines.insert(spec.addr.clone(), n) {
            return Err(format!(
                "{origin}:{n}: {} is listed twice (first on line {first})",
                spec.addr
            ));
        }
        list.push(spec);
    }
    list.sort_by(|a, b| a.addr.cmp(&b.addr));
    Ok(list)
}

/// Sorts by address and refuses an address given twice.
fn normalize(mut list: Vec<ShardSpec>, origin: &str) -> Result<Vec<ShardSpec>, String> {
    list.sort_by(|a, b| a.addr.cmp(&b.addr));
    if let Some(pair) = list.windows(2).find(|p| p[0].addr == p[1].addr) {
        return Err(format!("{origin}: {} is listed twice", pair[0].addr));
    }
    Ok(list)
}

/// Reads and parses the file; no servers is an error.
fn read_list(path: &Path) -> Result<Vec<ShardSpec>, String> {
    let origin = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|e| format!("{origin}: {e}"))?;
    let list = parse_list(&origin, &text)?;
    if list.is_empty() {
        return Err(format!("{origin}: names no server"));
    }
    Ok(list)
}

/// `a:1, b:2 (weight 3)` for logs.
fn addrs(list: &[ShardSpec]) -> String {
    let names: Vec<String> = list
        .iter()
        .map(|s| match s.weight {
            1 => s.addr.clone(),
            w => format!("{} (weight {w})", s.addr),
        })
        .collect();
    names.join(", ")
}

/// Publishes valid, changed lists and logs each change and each distinct
/// error once.
struct Publisher {
    tx: channel::Sender<Vec<ShardSpec>>,
    /// The file or SRV name, for messages.
    origin: String,
    /// The error logged last, until a good read clears it.
    last_error: Option<String>,
    /// Where tests hear about every read.
    reports: Option<mpsc::UnboundedSender<Result<bool, String>>>,
}

impl Publisher {
    fn new(
        tx: channel::Sender<Vec<ShardSpec>>,
        origin: String,
        reports: Option<mpsc::UnboundedSender<Result<bool, String>>>,
    ) -> Publisher {
        Publisher {
            tx,
            origin,
            last_error: None,
            reports,
        }
    }

    /// Takes one read: a valid non-empty list replaces the current one if
    /// it differs; anything else keeps it.
    fn offer(&mut self, read: Result<Vec<ShardSpec>, String>) {
        let outcome = match read {
            Ok(list) if list.is_empty() => Err(format!("{}: names no server", self.origin)),
            Ok(list) => Ok(list),
            Err(e) => Err(e),
        };
        let report = match outcome {
            Err(error) => {
                if self.last_error.as_ref() != Some(&error) {
                    tracing::warn!(
                        %error,
                        "memcached pool membership update refused; keeping the current servers"
                    );
                    self.last_error = Some(error.clone());
                }
                Err(error)
            }
            Ok(list) => {
                if self.last_error.take().is_some() {
                    tracing::info!(origin = %self.origin, "memcached pool membership source readable again");
                }
                let origin = &self.origin;
                Ok(self.tx.send_if_modified(|current| {
                    if *current == list {
                        return false;
                    }
                    log_change(origin, current, &list);
                    *current = list;
                    true
                }))
            }
        };
        if let Some(reports) = &self.reports {
            let _ = reports.send(report);
        }
    }
}

/// Logs what joined, left or changed weight.
fn log_change(origin: &str, old: &[ShardSpec], new: &[ShardSpec]) {
    let old: BTreeMap<&str, usize> = old.iter().map(|s| (s.addr.as_str(), s.weight)).collect();
    let new: BTreeMap<&str, usize> = new.iter().map(|s| (s.addr.as_str(), s.weight)).collect();
    let added: Vec<&str> = new
        .keys()
        .filter(|a| !old.contains_key(*a))
        .copied()
        .collect();
    let removed: Vec<&str> = old
        .keys()
        .filter(|a| !new.contains_key(*a))
        .copied()
        .collect();
    let reweighted: Vec<String> = new
        .iter()
        .filter_map(|(a, w)| match old.get(a) {
            Some(was) if was != w => Some(format!("{a} {was}->{w}")),
            _ => None,
        })
        .collect();
    tracing::info!(
        origin,
        added = %added.join(", "),
        removed = %removed.join(", "),
        reweighted = %reweighted.join(", "),
        members = new.len(),
        "memcached pool membership changed"
    );
}

/// Watches the file's directory, not the file: an editor that saves by
/// writing a new file and renaming it over the old one, and Kubernetes,
/// which updates a mounted ConfigMap by pointing its `..data` symlink at a
/// new directory, both leave a watch on the old file's inode seeing
/// nothing. Events for other names in the directory are ignored. Returns
/// `None` (logged) when the platform will not watch, e.g. out of inotify
/// watches: the periodic re-read and SIGHUP still work.
fn watch_dir(path: &Path, changed: Arc<Notify>) -> Option<RecommendedWatcher> {
    let dir = match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let name: OsString = path.file_name().map(Into::into).unwrap_or_default();
    let handler = move |event: notify::Result<Event>| match event {
        Ok(event) if relevant(&event, &name) => changed.notify_one(),
        Ok(_) => {}
        // The watcher lost track (e.g. its queue overflowed): read anyway.
        Err(_) => changed.notify_one(),
    };
    let watcher = notify::recommended_watcher(handler).and_then(|mut w| {
        w.watch(&dir, RecursiveMode::NonRecursive)?;
        Ok(w)
    });
    match watcher {
        Ok(w) => Some(w),
        Err(error) => {
            tracing::warn!(
                dir = %dir.display(),
                %error,
                "cannot watch the directory of --memcached-file; relying on the periodic re-read and SIGHUP"
            );
            None
        }
    }
}

/// Whether an event in the watched directory may have changed the file:
/// anything naming the file itself or the `..data` symlink a ConfigMap
/// swaps, except reads.
fn relevant(event: &Event, name: &OsString) -> bool {
    let read = matches!(event.kind, EventKind::Access(kind)
        if kind != AccessKind::Close(AccessMode::Write));
    if read {
        return false;
    }
    event.need_rescan()
        || event
            .paths
            .iter()
            .filter_map(|p| p.file_name())
            .any(|n| n == name.as_os_str() || n == "..data")
}

/// The file source's task: re-reads on a watcher event (after the burst
/// settles), on SIGHUP and every `poll`, until no receiver is left.
async fn follow_file(
    path: PathBuf,
    poll: Duration,
    mut publisher: Publisher,
    changed: Arc<Notify>,
    // Held so the directory stays watched while the task runs.
    _watcher: Option<RecommendedWatcher>,
    mut hup: Signal,
) {
    let start = tokio::time::Instant::now()
        .checked_add(poll)
        .unwrap_or_else(|| tokio::time::Instant::now() + Duration::from_secs(86400 * 365));
    let mut ticks = tokio::time::interval_at(start, poll);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let why = tokio::select! {
            _ = publisher.tx.closed() => return,
            _ = changed.notified() => {
                // Let the burst settle: read once it has been quiet for DEBOUNCE.
                loop {
                    tokio::select! {
                        _ = publisher.tx.closed() => return,
                        _ = changed.notified() => continue,
                        _ = tokio::time::sleep(DEBOUNCE) => break,
                    }
                }
                "changed"
            }
            _ = hup.recv() => "SIGHUP",
            _ = ticks.tick() => "periodic re-read",
        };
        tracing::debug!(file = %path.display(), why, "reading --memcached-file");
        publisher.offer(read_list(&path));
    }
}

/// A resolver asking only `server`, for the pool's host names when
/// `--dns-server` is given; each query waits at most `timeout`.
pub fn resolver_asking(server: SocketAddr, timeout: Duration) -> Result<TokioResolver, String> {
    build_resolver(Some(server), timeout)
}

/// A resolver asking `server`, or the system's configured servers. Each
/// query waits at most the discovery interval (and at most
/// [`DNS_TIMEOUT`]), so a DNS server that does not answer delays the next
/// resolution by little more than one interval.
fn build_resolver(server: Option<SocketAddr>, interval: Duration) -> Result<TokioResolver, String> {
    let mut builder = match server {
        Some(addr) => {
            let mut ns = NameServerConfig::udp_and_tcp(addr.ip());
            for conn in &mut ns.connections {
                conn.port = addr.port();
            }
            TokioResolver::builder_with_config(
                ResolverConfig::from_name_servers(vec![ns]),
                TokioRuntimeProvider::default(),
            )
        }
        None => TokioResolver::builder_tokio().map_err(|e| {
            format!("--memcached-srv: cannot read the system's DNS configuration: {e}")
        })?,
    };
    let opts = builder.options_mut();
    opts.timeout = interval.min(DNS_TIMEOUT);
    builder
        .build()
        .map_err(|e| format!("--memcached-srv: cannot build a DNS resolver: {e}"))
}

/// Resolves `name`'s SRV records into members: `target:port`, the target
/// lower-cased without its trailing dot, so a pod that comes back with a new
/// IP keeps its name and so its keys. Every member has weight 1: SRV
/// weights are load-balancing hints between servers of equal priority
/// (RFC 2782), not shares of a keyspace, and honouring them would move keys
/// whenever a DNS operator tunes traffic. A record whose target is `.`
/// ("no service here") is skipped.
async fn resolve(resolver: &TokioResolver, name: &str) -> Result<Vec<ShardSpec>, String> {
    // The interval, not the records' TTL, decides when to look again.
    resolver.clear_cache();
    let lookup = resolver.srv_lookup(name).await.map_err(|e| {
        if e.is_no_records_found() || e.is_nx_domain() {
            format!("SRV {name}: no records")
        } else {
            format!("SRV {name}: {e}")
        }
    })?;
    let list = lookup
        .answers()
        .iter()
        .filter_map(|record| match &record.data {
            RData::SRV(srv) if !srv.target.is_root() => Some(ShardSpec {
                addr: format!(
                    "{}:{}",
                    srv.target
                        .to_ascii()
                        .trim_end_matches('.')
                        .to_ascii_lowercase(),
                    srv.port
                ),
                weight: 1,
            }),
            _ => None,
        })
        .collect();
    normalize(list, &format!("SRV {name}"))
}

/// The SRV source's task: resolves every `interval` until no receiver is
/// left.
async fn follow_srv(
    resolver: TokioResolver,
    name: String,
    interval: Duration,
    mut publisher: Publisher,
) {
    loop {
        tokio::select! {
            _ = publisher.tx.closed() => return,
            _ = tokio::time::sleep(interval) => {}
        }
        let read = tokio::select! {
            _ = publisher.tx.closed() => return,
            read = resolve(&resolver, &name) => read,
        };
        publisher.offer(read);
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use hickory_resolver::proto::op::{Message, MessageType, ResponseCode};
    use hickory_resolver::proto::rr::rdata::SRV;
    use hickory_resolver::proto::rr::{Name, Record};
    use tokio::net::UdpSocket;

    use super::*;

    /// Longest wait for anything a test expects to happen.
    const WAIT: Duration = Duration::from_secs(10);
    /// A re-read period no test lasts: only the watcher (or SIGHUP) reads.
    const NEVER: Duration = Duration::from_secs(3600);

    fn spec(addr: &str, weight: usize) -> ShardSpec {
        ShardSpec {
            addr: addr.to_owned(),
            weight,
        }
    }

    fn specs(addrs: &[&str]) -> Vec<ShardSpec> {
        addrs.iter().map(|a| spec(a, 1)).collect()
    }

    /// Waits for the next published list.
    async fn next(rx: &mut channel::Receiver<Vec<ShardSpec>>) -> Vec<ShardSpec> {
        tokio::time::timeout(WAIT, rx.changed())
            .await
            .expect("no update in time")
            .expect("the source stopped");
        rx.borrow_and_update().clone()
    }

    /// Waits for the outcome of the next read.
    async fn report(
        reports: &mut mpsc::UnboundedReceiver<Result<bool, String>>,
    ) -> Result<bool, String> {
        tokio::time::timeout(WAIT, reports.recv())
            .await
            .expect("no read in time")
            .expect("the source stopped")
    }

    #[test]
    fn parses_comments_blank_lines_and_weights() {
        let text =
            "# the pool\n\n10.0.0.2:11211:3   # big one\n  10.0.0.1:11211\n\t\n[::1]:11211:2\n";
        let list = parse_list("m", text).unwrap();
        assert_eq!(
            list,
            vec![
                spec("10.0.0.1:11211", 1),
                spec("10.0.0.2:11211", 3),
                spec("[::1]:11211", 2)
            ],
            "sorted by address"
        );
        assert_eq!(parse_list("m", "# nothing\n\n").unwrap(), vec![]);
    }

    #[test]
    fn parse_errors_name_the_file_and_line() {
        let err = parse_list("memgate.members", "a:1\n\nb:2:0\n").unwrap_err();
        assert!(err.starts_with("memgate.members:3: bad weight"), "{err}");
        let err = parse_list("memgate.members", "a:1\nnoport\n").unwrap_err();
        assert!(
            err.starts_with("memgate.members:2: bad memcached address"),
            "{err}"
        );
        let err = parse_list("memgate.members", "a:1\nb:2\na:1:4\n").unwrap_err();
        assert_eq!(
            err,
            "memgate.members:3: a:1 is listed twice (first on line 1)"
        );
    }

    #[tokio::test]
    async fn a_static_list_is_published_as_is() {
        let rx = watch(Source::Static(specs(&["b:1", "a:1"]))).await.unwrap();
        assert_eq!(*rx.borrow(), specs(&["a:1", "b:1"]));
        let err = watch(Source::Static(specs(&["a:1", "a:1"])))
            .await
            .unwrap_err();
        assert!(err.contains("twice"), "{err}");
    }

    #[test]
    fn the_publisher_keeps_the_last_good_list_and_logs_each_error_once() {
        let (tx, mut rx) = channel::channel(specs(&["a:1"]));
        let mut publisher = Publisher::new(tx, "test".to_owned(), None);
        publisher.offer(Err("boom".to_owned()));
        assert_eq!(publisher.last_error.as_deref(), Some("boom"));
        publisher.offer(Ok(vec![]));
        assert_eq!(
            publisher.last_error.as_deref(),
            Some("test: names no server")
        );
        assert!(!rx.has_changed().unwrap(), "nothing invalid is published");
        assert_eq!(*rx.borrow(), specs(&["a:1"]));
        publisher.offer(Ok(specs(&["a:1"])));
        assert!(
            publisher.last_error.is_none(),
            "a good read clears the error"
        );
        assert!(
            !rx.has_changed().unwrap(),
            "an unchanged list is not published"
        );
        publisher.offer(Ok(specs(&["a:1", "b:1"])));
        assert!(rx.has_changed().unwrap());
        assert_eq!(*rx.borrow_and_update(), specs(&["a:1", "b:1"]));
    }

    /// A directory with a members file in it.
    struct Dir {
        dir: tempfile::TempDir,
    }

    impl Dir {
        fn new() -> Dir {
            Dir {
                dir: tempfile::tempdir().unwrap(),
            }
        }

        fn path(&self, name: &str) -> PathBuf {
            self.dir.path().join(name)
        }

        fn write(&self, name: &str, text: &str) -> PathBuf {
            let path = self.path(name);
            std::fs::write(&path, text).unwrap();
            path
        }
    }

    async fn watch_file(
        path: &Path,
        poll: Duration,
    ) -> (
        channel::Receiver<Vec<ShardSpec>>,
        mpsc::UnboundedReceiver<Result<bool, String>>,
    ) {
        let (reports_tx, reports) = mpsc::unbounded_channel();
        let rx = watch_reporting(
            Source::File {
                path: path.to_owned(),
                poll,
            },
            Some(reports_tx),
        )
        .await
        .unwrap();
        (rx, reports)
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_file_is_read_at_startup() {
        let dir = Dir::new();
        let path = dir.write("members", "# pool\nb:11211:2\n\na:11211\n");
        let (rx, _) = watch_file(&path, NEVER).await;
        assert_eq!(*rx.borrow(), vec![spec("a:11211", 1), spec("b:11211", 2)]);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_bad_file_at_startup_is_an_error() {
        let dir = Dir::new();
        let source = |path: PathBuf| Source::File { path, poll: NEVER };
        let err = watch(source(dir.path("missing"))).await.unwrap_err();
        assert!(
            err.starts_with("--memcached-file ") && err.contains("missing"),
            "{err}"
        );
        let err = watch(source(dir.write("empty", "# none\n")))
            .await
            .unwrap_err();
        assert!(err.ends_with("names no server"), "{err}");
        let err = watch(source(dir.write("bad", "a:1\nb:x\n")))
            .await
            .unwrap_err();
        assert!(err.contains("bad:2: bad"), "{err}");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn an_in_place_write_is_seen() {
        let dir = Dir::new();
        let path = dir.write("members", "a:1\n");
        let (mut rx, _) = watch_file(&path, NEVER).await;
        // std::fs::write truncates and rewrites the same inode.
        std::fs::write(&path, "a:1\nb:1\n").unwrap();
        assert_eq!(next(&mut rx).await, specs(&["a:1", "b:1"]));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_replace_by_rename_is_seen() {
        let dir = Dir::new();
        let path = dir.write("members", "a:1\nb:1\n");
        let (mut rx, _) = watch_file(&path, NEVER).await;
        let tmp = dir.write(".members.swp", "b:1\nc:1\n");
        std::fs::rename(&tmp, &path).unwrap();
        assert_eq!(next(&mut rx).await, specs(&["b:1", "c:1"]));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_configmap_symlink_swap_is_seen() {
        // The layout kubelet mounts: members -> ..data/members,
        // ..data -> ..<timestamp>; an update writes a new timestamped
        // directory and renames a new ..data symlink over the old one.
        let dir = Dir::new();
        std::fs::create_dir(dir.path("..2024_01")).unwrap();
        dir.write("..2024_01/members", "a:1\n");
        std::os::unix::fs::symlink("..2024_01", dir.path("..data")).unwrap();
        std::os::unix::fs::symlink("..data/members", dir.path("members")).unwrap();
        let (mut rx, _) = watch_file(&dir.path("members"), NEVER).await;
        assert_eq!(*rx.borrow(), specs(&["a:1"]));

        std::fs::create_dir(dir.path("..2024_02")).unwrap();
        dir.write("..2024_02/members", "a:1\nz:1\n");
        std::os::unix::fs::symlink("..2024_02", dir.path("..data_tmp")).unwrap();
        std::fs::rename(dir.path("..data_tmp"), dir.path("..data")).unwrap();
        std::fs::remove_dir_all(dir.path("..2024_01")).unwrap();
        assert_eq!(next(&mut rx).await, specs(&["a:1", "z:1"]));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_periodic_re_read_sees_what_the_watcher_cannot() {
        // The file is a symlink into another directory: writes to its
        // target make no event in the watched directory.
        let elsewhere = Dir::new();
        let target = elsewhere.write("real", "a:1\n");
        let dir = Dir::new();
        std::os::unix::fs::symlink(&target, dir.path("members")).unwrap();
        let (mut rx, _) = watch_file(&dir.path("members"), Duration::from_millis(200)).await;
        std::fs::write(&target, "a:1\nb:1\n").unwrap();
        assert_eq!(next(&mut rx).await, specs(&["a:1", "b:1"]));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_broken_update_keeps_the_list_until_a_good_one() {
        let dir = Dir::new();
        let path = dir.write("members", "a:1\nb:1\n");
        let (mut rx, mut reports) = watch_file(&path, NEVER).await;
        for broken in ["a:1\nb:1:500\n", "", "# all gone\n", "a:1\na:1\n"] {
            std::fs::write(&path, broken).unwrap();
            // The watcher may read an in-place write twice; wait for the
            // refusal, then see that nothing was published.
            let outcome = report(&mut reports).await;
            assert!(outcome.is_err(), "{broken:?}: {outcome:?}");
            assert!(!rx.has_changed().unwrap(), "{broken:?} was published");
            assert_eq!(*rx.borrow(), specs(&["a:1", "b:1"]));
        }
        std::fs::write(&path, "c:1\n").unwrap();
        assert_eq!(next(&mut rx).await, specs(&["c:1"]));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn unchanged_content_publishes_nothing() {
        let dir = Dir::new();
        let path = dir.write("members", "a:1\nb:1\n");
        let (mut rx, mut reports) = watch_file(&path, NEVER).await;
        // Same members, reordered and commented: the same list.
        std::fs::write(&path, "# reordered\nb:1\na:1\n").unwrap();
        assert_eq!(report(&mut reports).await, Ok(false));
        assert!(!rx.has_changed().unwrap());
        std::fs::write(&path, "b:1\n").unwrap();
        assert_eq!(next(&mut rx).await, specs(&["b:1"]));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_file_task_ends_with_its_receivers() {
        let dir = Dir::new();
        let path = dir.write("members", "a:1\n");
        let (rx, mut reports) = watch_file(&path, Duration::from_millis(20)).await;
        // The task is alive: it reports periodic reads.
        report(&mut reports).await.unwrap();
        drop(rx);
        // ... and once the receiver is gone it ends, dropping its sender.
        tokio::time::timeout(WAIT, async { while reports.recv().await.is_some() {} })
            .await
            .expect("the file task outlived its receivers");
    }

    /// What the test DNS server answers.
    #[derive(Clone, Debug)]
    enum Answer {
        /// These `(target, port)` SRV records.
        Records(Vec<(&'static str, u16)>),
        /// NOERROR with no records.
        Empty,
        /// SERVFAIL.
        ServFail,
        /// Nothing at all (the resolver times out).
        Silence,
    }

    /// A DNS server on loopback UDP that answers every query with the
    /// current [`Answer`], built with hickory-proto.
    struct DnsServer {
        addr: SocketAddr,
        answer: Arc<Mutex<Answer>>,
        /// How many queries have been received.
        queries: channel::Receiver<usize>,
        task: tokio::task::JoinHandle<()>,
    }

    impl DnsServer {
        async fn start(answer: Answer) -> DnsServer {
            let socket = UdpSocket::bind("127.0.0.1:0").await.unwrap();
            let addr = socket.local_addr().unwrap();
            let answer = Arc::new(Mutex::new(answer));
            let (count_tx, queries) = channel::channel(0);
            let current = answer.clone();
            let task = tokio::spawn(async move {
                let mut buf = vec![0; 4096];
                loop {
                    let (len, peer) = socket.recv_from(&mut buf).await.unwrap();
                    let query = Message::from_vec(&buf[..len]).unwrap();
                    let answer = current.lock().unwrap().clone();
                    count_tx.send_modify(|n| *n += 1);
                    let mut reply = Message::response(query.metadata.id, query.metadata.op_code);
                    reply.metadata.message_type = MessageType::Response;
                    reply.metadata.recursion_desired = query.metadata.recursion_desired;
                    reply.metadata.recursion_available = true;
                    reply.metadata.authoritative = true;
                    reply.queries = query.queries.clone();
                    match answer {
                        Answer::Records(records) => {
                            let name = query.queries[0].name().clone();
                            for (target, port) in records {
                                let target = Name::from_ascii(target).unwrap();
                                let srv = SRV::new(0, 50, port, target);
                                reply.add_answer(Record::from_rdata(
                                    name.clone(),
                                    0,
                                    RData::SRV(srv),
                                ));
                            }
                        }
                        Answer::Empty => {}
                        Answer::ServFail => reply.metadata.response_code = ResponseCode::ServFail,
                        Answer::Silence => continue,
                    }
                    socket
                        .send_to(&reply.to_vec().unwrap(), peer)
                        .await
                        .unwrap();
                }
            });
            DnsServer {
                addr,
                answer,
                queries,
                task,
            }
        }

        fn set(&self, answer: Answer) {
            *self.answer.lock().unwrap() = answer;
        }

        /// Waits until a resolution that began after the last [`set`] has
        /// been handled. Each answered resolution is one query and the
        /// next is sent only after the last was handled, so: the second
        /// query counted from now read the new answer, and the third
        /// proves the second's resolution handled.
        ///
        /// [`set`]: DnsServer::set
        async fn wait_for_query_after_change(&self) {
            let now = *self.queries.borrow();
            let mut queries = self.queries.clone();
            tokio::time::timeout(WAIT, queries.wait_for(|n| *n >= now + 3))
                .await
                .expect("no queries in time")
                .unwrap();
        }
    }

    impl Drop for DnsServer {
        fn drop(&mut self) {
            self.task.abort();
        }
    }

    const POOL: &str = "_memcache._tcp.pool.test.";

    async fn watch_srv(
        dns: &DnsServer,
        interval: Duration,
    ) -> (
        channel::Receiver<Vec<ShardSpec>>,
        mpsc::UnboundedReceiver<Result<bool, String>>,
    ) {
        let (reports_tx, reports) = mpsc::unbounded_channel();
        let rx = watch_reporting(
            Source::Srv {
                name: POOL.to_owned(),
                interval,
                resolver: Some(dns.addr),
            },
            Some(reports_tx),
        )
        .await
        .unwrap();
        (rx, reports)
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn srv_records_become_members() {
        let dns = DnsServer::start(Answer::Records(vec![
            ("mc-1.memcached.test.", 11211),
            ("MC-0.memcached.test.", 11211),
        ]))
        .await;
        let interval = Duration::from_millis(100);
        let (mut rx, mut reports) = watch_srv(&dns, interval).await;
        assert_eq!(
            *rx.borrow_and_update(),
            specs(&["mc-0.memcached.test:11211", "mc-1.memcached.test:11211"]),
            "target hostnames without the dot, lower-cased, sorted, weight 1"
        );

        // The same records in another order: nothing to publish.
        dns.set(Answer::Records(vec![
            ("mc-0.memcached.test.", 11211),
            ("mc-1.memcached.test.", 11211),
        ]));
        dns.wait_for_query_after_change().await;
        assert!(!rx.has_changed().unwrap());

        // One removed.
        dns.set(Answer::Records(vec![("mc-0.memcached.test.", 11211)]));
        assert_eq!(next(&mut rx).await, specs(&["mc-0.memcached.test:11211"]));

        // One added.
        dns.set(Answer::Records(vec![
            ("mc-0.memcached.test.", 11211),
            ("mc-2.memcached.test.", 11212),
        ]));
        assert_eq!(
            next(&mut rx).await,
            specs(&["mc-0.memcached.test:11211", "mc-2.memcached.test:11212"])
        );

        // A failing DNS server and no records at all both keep the list.
        for (failure, error) in [
            (Answer::ServFail, "Server Failure"),
            (Answer::Empty, "no records"),
            (Answer::Silence, "timed out"),
        ] {
            dns.set(failure.clone());
            let mut seen = Vec::new();
            let refused = tokio::time::timeout(WAIT, async {
                loop {
                    match report(&mut reports).await {
                        Err(e) if e.contains(error) => break,
                        // Reads from before the change (a failure that
                        // was published instead never reports its error).
                        other => seen.push(other),
                    }
                }
            })
            .await;
            assert!(refused.is_ok(), "{failure:?} was not refused: {seen:?}");
            assert!(!rx.has_changed().unwrap(), "{failure:?} was published");
            assert_eq!(
                *rx.borrow(),
                specs(&["mc-0.memcached.test:11211", "mc-2.memcached.test:11212"])
            );
        }

        // Recovery brings the next change.
        dns.set(Answer::Records(vec![("mc-3.memcached.test.", 11211)]));
        assert_eq!(next(&mut rx).await, specs(&["mc-3.memcached.test:11211"]));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn srv_with_no_records_at_startup_starts_empty_and_waits() {
        let dns = DnsServer::start(Answer::Empty).await;
        let (mut rx, _) = watch_srv(&dns, Duration::from_millis(100)).await;
        assert_eq!(*rx.borrow_and_update(), vec![]);
        dns.set(Answer::Records(vec![("mc-0.memcached.test.", 11211)]));
        assert_eq!(next(&mut rx).await, specs(&["mc-0.memcached.test:11211"]));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn srv_with_dns_down_at_startup_starts_empty_and_waits() {
        let dns = DnsServer::start(Answer::ServFail).await;
        let (mut rx, _) = watch_srv(&dns, Duration::from_millis(100)).await;
        assert_eq!(*rx.borrow_and_update(), vec![]);
        dns.set(Answer::Records(vec![("mc-0.memcached.test.", 11211)]));
        assert_eq!(next(&mut rx).await, specs(&["mc-0.memcached.test:11211"]));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_srv_task_ends_with_its_receivers() {
        let dns = DnsServer::start(Answer::Records(vec![("mc-0.test.", 1)])).await;
        let (rx, mut reports) = watch_srv(&dns, Duration::from_millis(20)).await;
        report(&mut reports).await.unwrap();
        drop(rx);
        tokio::time::timeout(WAIT, async { while reports.recv().await.is_some() {} })
            .await
            .expect("the SRV task outlived its receivers");
    }
}
