//! Test fixtures: real memcached processes on free loopback ports and a
//! real memgate served in-process, exactly as the binary serves it.
//!
//! Readiness is always checked (the port file memcached writes, memgate's
//! health service), never assumed after a sleep.

#![allow(dead_code, unreachable_pub)]

pub mod dns;
pub mod gate;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use memgate_api::v1::cache_client::CacheClient;
use memgate_client::Client;
use memgate_server::config::Config;
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tonic::transport::Channel;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;

/// One memcached process, killed on drop.
pub struct Memcached {
    child: Option<Child>,
    /// `host:port`.
    pub addr: String,
    host: String,
    port: u16,
    extra_args: Vec<String>,
    dir: tempfile::TempDir,
}

impl Memcached {
    /// Starts memcached on a free port.
    pub fn spawn() -> Memcached {
        Memcached::spawn_with(&[])
    }

    /// Starts memcached on a free port with extra flags (e.g. `-I 2m`).
    pub fn spawn_with(args: &[&str]) -> Memcached {
        let dir = tempfile::tempdir().expect("temp dir");
        // memcached drops to `nobody` before writing its port file.
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o777)).unwrap();
        let mut mc = Memcached {
            child: None,
            addr: String::new(),
            host: "127.0.0.1".to_owned(),
            port: 0,
            extra_args: args.iter().map(|s| s.to_string()).collect(),
            dir,
        };
        mc.start_on("-1");
        mc
    }

    /// Starts memcached on `host:port`.
    pub fn spawn_at(host: &str, port: u16) -> Memcached {
        let mut mc = Memcached::spawn_with(&[]);
        mc.kill();
        mc.host = host.to_owned();
        mc.start_on(&port.to_string());
        mc
    }

    /// Starts memcached on memcached's default port, 11211, of a free
    /// loopback address (127.0.0.2 and up), as most pools run it.
    pub fn spawn_on_default_port() -> Memcached {
        let host = (2..=254)
            .map(|i| format!("127.0.0.{i}"))
            .find(|h| std::net::TcpListener::bind((h.as_str(), 11211)).is_ok())
            .expect("a loopback address with port 11211 free");
        let mut mc = Memcached::spawn_with(&[]);
        mc.kill();
        mc.host = host;
        mc.start_on("11211");
        mc
    }

    fn port_file(&self) -> PathBuf {
        self.dir.path().join("port")
    }

    fn start_on(&mut self, port: &str) {
        let port_file = self.port_file();
        let _ = std::fs::remove_file(&port_file);
        let mut cmd = Command::new("memcached");
        cmd.env("MEMCACHED_PORT_FILENAME", &port_file)
            .args(["-l", &self.host, "-p", port, "-U", "0", "-m", "64"])
            .args(&self.extra_args)
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        // memcached refuses to run as root without -u.
        if is_root() {
            cmd.args(["-u", "nobody"]);
        }
        let child = cmd
            .spawn()
            .expect("memcached must be installed (apt-get install memcached)");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let text = std::fs::read_to_string(&port_file).unwrap_or_default();
            if let Some(p) = text.lines().find_map(|l| l.strip_prefix("TCP INET: ")) {
                self.port = p.trim().parse().unwrap();
                self.addr = format!("{}:{}", self.host, self.port);
                return;
            }
            assert!(Instant::now() < deadline, "memcached did not start");
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// The process id (for SIGSTOP/SIGCONT).
    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("running").id()
    }

    /// Sends `signal` (e.g. "STOP", "CONT") to the process.
    pub fn signal(&self, signal: &str) {
        let ok = Command::new("kill")
            .args([format!("-{signal}"), self.pid().to_string()])
            .status()
            .unwrap()
            .success();
        assert!(ok, "kill -{signal} failed");
        if signal == "STOP" {
            self.wait_until_stopped();
        }
    }

    /// SIGSTOP takes effect asynchronously, thread by thread: wait until
    /// every thread of the process is stopped, or a request sent right
    /// after could still be answered.
    fn wait_until_stopped(&self) {
        let tasks = format!("/proc/{}/task", self.pid());
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let all_stopped = std::fs::read_dir(&tasks)
                .map(|dir| {
                    dir.filter_map(Result::ok).all(|t| {
                        let stat =
                            std::fs::read_to_string(t.path().join("stat")).unwrap_or_default();
                        // The state follows the ")" that closes the command name.
                        stat.rsplit_once(") ")
                            .is_some_and(|(_, rest)| rest.starts_with('T') || rest.starts_with('t'))
                    })
                })
                .unwrap_or(false);
            if all_stopped {
                return;
            }
            assert!(Instant::now() < deadline, "memcached never stopped");
            std::thread::sleep(Duration::from_millis(2));
        }
    }

    /// Kills the process (SIGKILL) and waits for it.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Starts a fresh (empty) memcached on the same port after [`kill`].
    pub fn restart(&mut self) {
        assert!(self.child.is_none(), "kill it first");
        let port = self.port.to_string();
        self.start_on(&port);
    }

    /// A direct connection, bypassing memgate (memcache-async, as an
    /// independent memcached client).
    pub async fn direct(&self) -> memcache_async::ascii::Protocol<tokio::net::TcpStream> {
        let stream = tokio::net::TcpStream::connect(&self.addr).await.unwrap();
        memcache_async::ascii::Protocol::new(stream)
    }

    /// Reads a key directly from this memcached; `None` on a miss.
    pub async fn direct_get(&self, key: &str) -> Option<Vec<u8>> {
        match self.direct().await.get(key).await {
            Ok(v) => Some(v),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
            Err(e) => panic!("direct get of {key:?} from {}: {e}", self.addr),
        }
    }
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false)
}

impl Drop for Memcached {
    fn drop(&mut self) {
        if self.child.is_some() {
            // A stopped process must be resumed to die promptly.
            let _ = Command::new("kill")
                .args(["-CONT", &self.pid().to_string()])
                .status();
        }
        self.kill();
    }
}

/// Several memcached processes.
pub fn pool(n: usize) -> Vec<Memcached> {
    (0..n).map(|_| Memcached::spawn()).collect()
}

/// The addresses of a pool.
pub fn addrs(pool: &[Memcached]) -> Vec<String> {
    pool.iter().map(|m| m.addr.clone()).collect()
}

/// A config serving `pool` with defaults, except a quick health probe.
pub fn config_for(pool: &[Memcached]) -> Config {
    let mut config = Config::memcached("127.0.0.1:0".parse().unwrap(), &addrs(pool)).unwrap();
    config.health_interval = Duration::from_millis(100);
    config
}

/// A config serving memcached (or fake) servers at `addrs`, quick probes.
pub fn config_for_addrs(addrs: &[String]) -> Config {
    let mut config = Config::memcached("127.0.0.1:0".parse().unwrap(), addrs).unwrap();
    config.health_interval = Duration::from_millis(100);
    config
}

/// Sets the backend reply and connect timeouts of a memcached config.
pub fn with_timeout(mut config: Config, timeout: Duration) -> Config {
    if let memgate_server::config::Backend::Memcached { pool, .. } = &mut config.backend {
        pool.timeout = timeout;
        pool.connect_timeout = timeout;
    }
    config
}

/// A memgate served in-process on a free port.
pub struct Memgate {
    /// Where it listens.
    pub addr: SocketAddr,
    /// The ergonomic client.
    pub client: Client,
    /// The generated stub.
    pub raw: CacheClient<Channel>,
    /// The health stub.
    pub health: HealthClient<Channel>,
    /// Where metrics are served, if `config.metrics_listen` was given (a
    /// port of 0 picks a free one).
    pub metrics_addr: Option<SocketAddr>,
    shutdown: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<()>>,
}

impl Memgate {
    /// Serves the embedded store.
    pub async fn embedded() -> Memgate {
        Memgate::start(Config::embedded("127.0.0.1:0".parse().unwrap())).await
    }

    /// Serves a memcached pool with default settings.
    pub async fn over(pool: &[Memcached]) -> Memgate {
        Memgate::start(config_for(pool)).await
    }

    /// Starts memgate with `config` without waiting for health.
    pub async fn start_unready(config: Config) -> Memgate {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let metrics_listener = match config.metrics_listen {
            Some(at) => Some(TcpListener::bind(at).await.unwrap()),
            None => None,
        };
        let metrics_addr = metrics_listener.as_ref().map(|l| l.local_addr().unwrap());
        let (tx, rx) = oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            memgate_server::run_with_metrics(listener, metrics_listener, config, async {
                let _ = rx.await;
            })
            .await
            .expect("memgate serves");
        });
        let channel = Channel::from_shared(format!("http://{addr}"))
            .unwrap()
            .connect_lazy();
        Memgate {
            addr,
            client: Client::from_channel(channel.clone()),
            raw: CacheClient::new(channel.clone())
                .max_decoding_message_size(64 << 20)
                .max_encoding_message_size(64 << 20),
            health: HealthClient::new(channel),
            metrics_addr,
            shutdown: Some(tx),
            task: Some(task),
        }
    }

    /// Starts memgate with `config` and waits until health says SERVING.
    pub async fn start(config: Config) -> Memgate {
        let mg = Memgate::start_unready(config).await;
        mg.wait_for_status("", ServingStatus::Serving).await;
        mg
    }

    /// The health status of `service`, if it is known.
    pub async fn status(&self, service: &str) -> Option<ServingStatus> {
        let resp = self
            .health
            .clone()
            .check(HealthCheckRequest {
                service: service.into(),
            })
            .await
            .ok()?;
        ServingStatus::try_from(resp.into_inner().status).ok()
    }

    /// Polls health until `service` reports `want` (10 s at most).
    pub async fn wait_for_status(&self, service: &str, want: ServingStatus) {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if self.status(service).await == Some(want) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "health of {service:?} never became {want:?}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Begins shutdown (as SIGTERM does) without waiting for it.
    pub fn begin_shutdown(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
    }

    /// True once the server task has ended (without waiting for it).
    pub fn is_finished(&self) -> bool {
        self.task.as_ref().is_none_or(|t| t.is_finished())
    }

    /// Waits for the server task to end, however shutdown began.
    pub async fn join(&mut self) {
        if let Some(task) = self.task.take() {
            task.await.unwrap();
        }
    }

    /// Stops serving and waits for the server task to end.
    pub async fn stop(mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(task) = self.task.take() {
            task.await.unwrap();
        }
    }
}

impl Drop for Memgate {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
    }
}

/// A key unique to this test run, so tests sharing a pool never collide.
pub fn unique(prefix: &str) -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    format!("{prefix}:{nanos:x}:{}", N.fetch_add(1, Ordering::Relaxed))
}

/// Polls `check` until it returns true (`within` at most).
pub async fn eventually<F, Fut>(within: Duration, mut check: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + within;
    loop {
        if check().await {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A fake memcached for fault tests: it accepts connections and then
/// either never answers (a black hole) or answers every command line with
/// fixed bytes (garbage, or a reply for the wrong key).
pub struct FakeMemcached {
    /// `127.0.0.1:port`.
    pub addr: String,
    task: JoinHandle<()>,
}

impl FakeMemcached {
    /// Accepts, reads, never answers.
    pub async fn black_hole() -> FakeMemcached {
        FakeMemcached::spawn(None).await
    }

    /// Answers each received line with `reply`.
    pub async fn answering(reply: &'static [u8]) -> FakeMemcached {
        FakeMemcached::spawn(Some(reply)).await
    }

    async fn spawn(reply: Option<&'static [u8]>) -> FakeMemcached {
        use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                tokio::spawn(async move {
                    let (read, mut write) = stream.into_split();
                    let mut lines = BufReader::new(read).lines();
                    while let Ok(Some(_line)) = lines.next_line().await {
                        let Some(reply) = reply else { continue };
                        if write.write_all(reply).await.is_err() {
                            return;
                        }
                    }
                });
            }
        });
        FakeMemcached { addr, task }
    }
}

impl Drop for FakeMemcached {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A twemproxy process, killed when dropped (also when a test fails).
pub struct Twemproxy {
    child: std::process::Child,
    /// Where it listens.
    pub addr: String,
}

impl Drop for Twemproxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts twemproxy (nutcracker, installed by scripts/setup.sh) over
/// `servers` (`addr`, weight) with `distribution: ketama` and key hash
/// `hash`, its config in `dir`. A real server that speaks only the text
/// protocol (it hangs up on meta commands).
pub fn twemproxy(servers: &[(&str, usize)], hash: &str, dir: &std::path::Path) -> Twemproxy {
    let free_port = || {
        std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port()
    };
    let addr = format!("127.0.0.1:{}", free_port());
    let conf = dir.join(format!("nutcracker-{hash}.yml"));
    let servers: String = servers
        .iter()
        .map(|(a, w)| format!("    - {a}:{w}\n"))
        .collect();
    std::fs::write(
        &conf,
        format!(
            "pool:\n  listen: {addr}\n  hash: {hash}\n  distribution: ketama\n  timeout: 1000\n  servers:\n{servers}"
        ),
    )
    .unwrap();
    let bin = ["/usr/sbin/nutcracker", "/usr/bin/nutcracker"]
        .into_iter()
        .find(|p| std::path::Path::new(p).exists())
        .expect("nutcracker must be installed (scripts/setup.sh installs it)");
    let child = std::process::Command::new(bin)
        .args(["-c", conf.to_str().unwrap(), "-s", &free_port().to_string()])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::net::TcpStream::connect(&addr).is_err() {
        assert!(Instant::now() < deadline, "twemproxy did not start");
        std::thread::sleep(Duration::from_millis(10));
    }
    Twemproxy { child, addr }
}
