//! The processes a benchmark runs against: memcached servers, a memgate
//! (the release binary, as production runs it), optionally twemproxy, and
//! the null gRPC server — each on a free loopback port, each its own
//! process (so its CPU can be read from `/proc`), each killed when dropped.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A child process killed on drop.
pub(crate) struct Proc {
    child: Child,
    /// `127.0.0.1:port`.
    pub(crate) addr: String,
}

impl Proc {
    /// The process id.
    pub(crate) fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false)
}

pub(crate) fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn wait_listening(addr: &str, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::net::TcpStream::connect(addr).is_err() {
        assert!(Instant::now() < deadline, "{what} did not start on {addr}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Starts a memcached with `memory_mb` of cache and `threads` workers.
pub(crate) fn memcached(dir: &Path, index: usize, memory_mb: u32, threads: u32) -> Proc {
    let port_file = dir.join(format!("mc{index}.port"));
    let mut cmd = Command::new("memcached");
    cmd.env("MEMCACHED_PORT_FILENAME", &port_file)
        .args(["-l", "127.0.0.1", "-p", "-1", "-U", "0"])
        .args(["-m", &memory_mb.to_string(), "-t", &threads.to_string()])
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    if is_root() {
        cmd.args(["-u", "nobody"]);
    }
    let child = cmd.spawn().expect("memcached must be installed");
    let deadline = Instant::now() + Duration::from_secs(10);
    let addr = loop {
        let text = std::fs::read_to_string(&port_file).unwrap_or_default();
        if let Some(p) = text.lines().find_map(|l| l.strip_prefix("TCP INET: ")) {
            break format!("127.0.0.1:{}", p.trim());
        }
        assert!(Instant::now() < deadline, "memcached did not start");
        std::thread::sleep(Duration::from_millis(10));
    };
    Proc { child, addr }
}

/// Starts the memgate binary in front of `shards`.
/// `extra` flags go after the defaults, so they can override them.
pub(crate) fn memgate(bin: &Path, shards: &[String], extra: &[String]) -> Proc {
    let memcached = shards.join(",");
    let mut args = vec!["--memcached", memcached.as_str()];
    args.extend(extra.iter().map(String::as_str));
    memgate_with(bin, &args)
}

/// Starts the memgate binary with `args` (after `--listen`).
pub(crate) fn memgate_with(bin: &Path, args: &[&str]) -> Proc {
    let addr = format!("127.0.0.1:{}", free_port());
    let child = Command::new(bin)
        .args(["--listen", &addr])
        .args(args)
        .env(
            "MEMGATE_LOG",
            std::env::var("MEMGATE_LOG").unwrap_or_else(|_| "warn".into()),
        )
        .stdout(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {}: {e}", bin.display()));
    wait_listening(&addr, "memgate");
    Proc { child, addr }
}

/// Starts twemproxy (nutcracker) with ketama hashing over `shards`, if it
/// is installed.
pub(crate) fn twemproxy(dir: &Path, shards: &[String]) -> Option<Proc> {
    let bin = which("nutcracker")?;
    let addr = format!("127.0.0.1:{}", free_port());
    let servers: String = shards.iter().map(|s| format!("    - {s}:1\n")).collect();
    let conf = dir.join("nutcracker.yml");
    std::fs::write(
        &conf,
        format!(
            "pool:\n  listen: {addr}\n  hash: fnv1a_64\n  distribution: ketama\n  timeout: 1000\n  server_connections: 2\n  servers:\n{servers}"
        ),
    )
    .unwrap();
    let child = Command::new(bin)
        .args(["-c", conf.to_str().unwrap(), "-s", &free_port().to_string()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .ok()?;
    wait_listening(&addr, "twemproxy");
    Some(Proc { child, addr })
}

/// Starts the do-nothing tonic server: this same binary's hidden
/// `null-server` subcommand.
pub(crate) fn null_server(single_thread: bool) -> Proc {
    let addr = format!("127.0.0.1:{}", free_port());
    let exe = std::env::current_exe().expect("the path of memgate-bench itself");
    let child = Command::new(exe)
        .args(["null-server", "--listen", &addr])
        .args(single_thread.then_some("--single-thread"))
        .stdout(Stdio::null())
        .spawn()
        .expect("cannot start the null server");
    wait_listening(&addr, "the null server");
    Proc { child, addr }
}

fn which(name: &str) -> Option<PathBuf> {
    std::env::var_os("PATH")?
        .to_str()?
        .split(':')
        .chain(["/usr/sbin", "/usr/local/sbin"])
        .map(|d| Path::new(d).join(name))
        .find(|p| p.is_file())
}

/// Resident memory of a process in KiB (Linux).
pub(crate) fn rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}
