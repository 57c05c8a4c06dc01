//! A memgate for tests that must also run against a built binary: served
//! in-process (as [`super::Memgate`] does) unless `MEMGATE_BIN` names a
//! memgate executable, which is then spawned with the same store. That
//! checks a release build, or a server built elsewhere, with the same
//! tests.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use memgate_client::{Client, ServingStatus};

use super::{Memcached, Memgate};

/// A running memgate: in-process or a child process (killed on drop).
pub enum Gate {
    /// Served by this test process.
    InProcess(Box<Memgate>),
    /// `$MEMGATE_BIN`, spawned.
    Spawned {
        /// Where it listens.
        addr: String,
        /// The process.
        child: Child,
        /// A client of it.
        client: Client,
    },
}

impl Gate {
    /// The embedded store.
    pub async fn embedded() -> Gate {
        Gate::start(&[]).await
    }

    /// In front of `pool`.
    pub async fn over(pool: &[Memcached]) -> Gate {
        let addrs: Vec<String> = pool.iter().map(|m| m.addr.clone()).collect();
        Gate::start(&addrs).await
    }

    async fn start(addrs: &[String]) -> Gate {
        let Some(bin) = std::env::var_os("MEMGATE_BIN") else {
            return Gate::InProcess(Box::new(if addrs.is_empty() {
                Memgate::embedded().await
            } else {
                Memgate::start(super::config_for_addrs(addrs)).await
            }));
        };
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let addr = format!("127.0.0.1:{port}");
        let mut cmd = Command::new(&bin);
        cmd.args(["--listen", &addr, "--health-interval", "100ms"])
            .env("MEMGATE_LOG", "warn")
            .env_remove("MEMGATE_MEMCACHED")
            .env_remove("MEMGATE_CONFIG")
            .stdout(Stdio::null());
        if !addrs.is_empty() {
            cmd.args(["--memcached", &addrs.join(",")]);
        }
        let child = cmd.spawn().unwrap_or_else(|e| panic!("spawn {bin:?}: {e}"));
        let client = Client::builder(format!("http://{addr}"))
            .connect_lazy()
            .unwrap();
        let gate = Gate::Spawned {
            addr,
            child,
            client,
        };
        // Ready when health says SERVING, not after a sleep.
        let deadline = Instant::now() + Duration::from_secs(10);
        while gate.client().health("").await.ok() != Some(ServingStatus::Serving) {
            assert!(Instant::now() < deadline, "{bin:?} never became SERVING");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        gate
    }

    /// A client of this memgate (clones share one connection).
    pub fn client(&self) -> Client {
        match self {
            Gate::InProcess(mg) => mg.client.clone(),
            Gate::Spawned { client, .. } => client.clone(),
        }
    }

    /// `host:port` it serves on.
    pub fn addr(&self) -> String {
        match self {
            Gate::InProcess(mg) => mg.addr.to_string(),
            Gate::Spawned { addr, .. } => addr.clone(),
        }
    }
}

impl Drop for Gate {
    fn drop(&mut self) {
        if let Gate::Spawned { child, .. } = self {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}
