//! A pool that changes size while it serves, end to end: memgate follows
//! a members file (`--memcached-file`) under steady load, with real
//! memcached processes, and no call fails, no value is wrong, and the old
//! keys stay hits through the rebalance window.

mod common;

use std::collections::HashSet;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use common::{Memcached, Memgate, eventually, pool, unique};
use memgate_api::v1 as pb;
use memgate_server::config::{Config, Settings};
use memgate_server::store::memcached::ring::{Placement, Ring, ShardSpec};

/// Replaces the members file the way an editor or a deploy tool does:
/// write beside it, then rename over it.
fn write_members(path: &Path, pool: &[&Memcached]) {
    let text: String = pool.iter().map(|m| format!("{}\n", m.addr)).collect();
    write_text(path, &format!("# memcached pool\n\n{text}"));
}

fn write_text(path: &Path, text: &str) {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, text).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

fn config(path: &Path) -> Config {
    Config::try_from(Settings {
        listen: "127.0.0.1:0".to_owned(),
        memcached_file: Some(path.to_owned()),
        discovery_interval: Duration::from_secs(1),
        ..Settings::default()
    })
    .unwrap()
}

/// The servers memgate's pool has now, from Stats.
async fn servers(mg: &Memgate) -> HashSet<String> {
    let stats = mg
        .raw
        .clone()
        .stats(pb::StatsRequest {})
        .await
        .unwrap()
        .into_inner();
    stats.shards.into_iter().map(|s| s.address).collect()
}

async fn wait_for_servers(mg: &Memgate, want: &[&Memcached]) {
    let want: HashSet<String> = want.iter().map(|m| m.addr.clone()).collect();
    assert!(
        eventually(Duration::from_secs(10), || async {
            servers(mg).await == want
        })
        .await,
        "the pool never became {want:?}"
    );
}

fn owner(pool: &[&Memcached], key: &str) -> usize {
    let specs: Vec<ShardSpec> = pool.iter().map(|m| m.addr.parse().unwrap()).collect();
    Ring::with_placement(&specs, Placement::default()).shard_for(key)
}

fn value_of(key: &str) -> Vec<u8> {
    format!("value of {key}").into_bytes()
}

async fn set_all(mg: &Memgate, keys: &[String]) {
    for chunk in keys.chunks(500) {
        let resp = mg
            .raw
            .clone()
            .batch_set(pb::BatchSetRequest {
                items: chunk
                    .iter()
                    .map(|k| pb::SetRequest {
                        key: k.clone(),
                        value: value_of(k).into(),
                        ttl_seconds: Some(3600),
                        ..Default::default()
                    })
                    .collect(),
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(resp.stored as usize, chunk.len(), "{:?}", resp.errors);
    }
}

/// Readers and writers that run until stopped, counting failed calls
/// and wrong values.
struct Load {
    stop: Arc<AtomicBool>,
    failures: Arc<AtomicUsize>,
    wrong: Arc<AtomicUsize>,
    calls: Arc<AtomicUsize>,
    tasks: Vec<tokio::task::JoinHandle<Vec<String>>>,
}

impl Load {
    fn start(mg: &Memgate, old: &[String]) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let failures = Arc::new(AtomicUsize::new(0));
        let wrong = Arc::new(AtomicUsize::new(0));
        let calls = Arc::new(AtomicUsize::new(0));
        let mut tasks = Vec::new();
        for worker in 0..4 {
            let mut raw = mg.raw.clone();
            let old = old.to_vec();
            let (stop, failures, wrong, calls) =
                (stop.clone(), failures.clone(), wrong.clone(), calls.clone());
            tasks.push(tokio::spawn(async move {
                let mut written = Vec::new();
                let mut i = worker;
                while !stop.load(Ordering::Relaxed) {
                    // Reads of old keys, and a write of a new key now and then.
                    let key = old[i % old.len()].clone();
                    match raw
                        .get(pb::GetRequest {
                            key: key.clone(),
                            ..Default::default()
                        })
                        .await
                    {
                        Ok(r) => {
                            let r = r.into_inner();
                            if !r.found || r.value != value_of(&key) {
                                wrong.fetch_add(1, Ordering::Relaxed);
                            }
                        }
                        Err(_) => {
                            failures.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                    if i % 5 == 0 {
                        let new = unique(&format!("load{worker}-"));
                        let set = raw.set(pb::SetRequest {
                            key: new.clone(),
                            value: value_of(&new).into(),
                            ttl_seconds: Some(3600),
                            ..Default::default()
                        });
                        match set.await {
                            Ok(_) => written.push(new),
                            Err(_) => {
                                failures.fetch_add(1, Ordering::Relaxed);
                            }
                        }
                    }
                    calls.fetch_add(1, Ordering::Relaxed);
                    i += 4;
                }
                written
            }));
        }
        Load {
            stop,
            failures,
            wrong,
            calls,
            tasks,
        }
    }

    async fn calls_beyond(&self, n: usize) {
        let target = self.calls.load(Ordering::Relaxed) + n;
        assert!(
            eventually(Duration::from_secs(20), || async {
                self.calls.load(Ordering::Relaxed) >= target
            })
            .await,
            "the load stalled"
        );
    }

    /// Stops the load: the keys written, and (failed calls, wrong values).
    async fn stop(self) -> (Vec<String>, usize, usize) {
        self.stop.store(true, Ordering::Relaxed);
        let mut written = Vec::new();
        for t in self.tasks {
            written.extend(t.await.unwrap());
        }
        (
            written,
            self.failures.load(Ordering::Relaxed),
            self.wrong.load(Ordering::Relaxed),
        )
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_pool_grows_and_shrinks_under_load_without_a_failed_call() {
    let mcs = pool(4);
    let all: Vec<&Memcached> = mcs.iter().collect();
    let dir = tempfile::tempdir().unwrap();
    let members = dir.path().join("members");
    write_members(&members, &all[..3]);
    let mg = Memgate::start(config(&members)).await;
    wait_for_servers(&mg, &all[..3]).await;
    let old: Vec<String> = (0..3000).map(|i| unique(&format!("old{i}-"))).collect();
    set_all(&mg, &old).await;

    // Grow to four under load.
    let load = Load::start(&mg, &old);
    load.calls_beyond(200).await;
    write_members(&members, &all);
    wait_for_servers(&mg, &all).await;
    load.calls_beyond(2000).await;
    let (written, failures, wrong) = load.stop().await;
    assert_eq!(failures, 0, "calls failed while the pool grew");
    assert_eq!(wrong, 0, "wrong or missing values while the pool grew");

    // Every old key is still a hit, with its own value.
    let mut raw = mg.raw.clone();
    let mut hits = 0;
    for chunk in old.chunks(500) {
        let results = raw
            .batch_get(pb::BatchGetRequest {
                keys: chunk.to_vec(),
            })
            .await
            .unwrap()
            .into_inner()
            .results;
        for r in results {
            if r.found {
                assert_eq!(r.value, value_of(&r.key), "{}", r.key);
                hits += 1;
            }
        }
    }
    assert!(
        hits * 100 >= old.len() * 99,
        "{hits} of {} old keys hit",
        old.len()
    );
    // Moved keys now live on their new owner, the fourth server.
    let moved: Vec<&String> = old.iter().filter(|k| owner(&all, k) == 3).collect();
    assert!(moved.len() > 400, "{} keys moved", moved.len());
    for k in &moved {
        assert_eq!(all[3].direct_get(k).await, Some(value_of(k)), "{k}");
    }
    // Locate agrees with where the keys really are.
    let locations = raw
        .locate(pb::LocateRequest {
            keys: old[..500].to_vec(),
        })
        .await
        .unwrap()
        .into_inner()
        .locations;
    for (k, l) in old[..500].iter().zip(&locations) {
        let holder = all
            .iter()
            .find(|m| m.addr == l.shard)
            .expect("a pool member");
        assert!(l.up, "{l:?}");
        assert_eq!(&l.key, k);
        assert_eq!(holder.direct_get(k).await, Some(value_of(k)), "{l:?}");
    }
    // Keys written during and after the change landed on all four servers.
    let mut on = [0usize; 4];
    for k in &written {
        on[owner(&all, k)] += 1;
        let r = raw
            .get(pb::GetRequest {
                key: k.clone(),
                ..Default::default()
            })
            .await
            .unwrap();
        assert_eq!(r.into_inner().value, value_of(k));
    }
    assert!(on.iter().all(|&n| n > 0), "new keys per server: {on:?}");

    // Shrink to three (the first server leaves) under load: its keys are
    // found through the window on the server that left.
    let load = Load::start(&mg, &old);
    load.calls_beyond(200).await;
    let three: Vec<&Memcached> = all[1..].to_vec();
    write_members(&members, &three);
    wait_for_servers(&mg, &three).await;
    load.calls_beyond(2000).await;
    let (_, failures, wrong) = load.stop().await;
    assert_eq!(failures, 0, "calls failed while the pool shrank");
    assert_eq!(wrong, 0, "wrong or missing values while the pool shrank");
    mg.stop().await;
}

/// A free port on loopback address `host`.
fn free_port_on(host: &str) -> u16 {
    std::net::TcpListener::bind((host, 0))
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

async fn wait_for_names(mg: &Memgate, want: &[String]) {
    let want: HashSet<String> = want.iter().cloned().collect();
    assert!(
        eventually(Duration::from_secs(15), || async {
            servers(mg).await == want
        })
        .await,
        "the pool never became {want:?} (it is {:?})",
        servers(mg).await
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn srv_members_join_leave_and_are_followed_to_a_new_address() {
    const POOL: &str = "_memcache._tcp.pool.test.";
    let dns = common::dns::Dns::start().await;
    let (a_port, b_port) = (free_port_on("127.0.0.2"), free_port_on("127.0.0.3"));
    let mut mc_a = Memcached::spawn_at("127.0.0.2", a_port);
    let _mc_b = Memcached::spawn_at("127.0.0.3", b_port);
    dns.set_a("mc-a.pool.test.", [127, 0, 0, 2].into());
    dns.set_a("mc-b.pool.test.", [127, 0, 0, 3].into());
    dns.set_srv(POOL, &[("mc-a.pool.test.", a_port)]);
    let (a, b) = (
        format!("mc-a.pool.test:{a_port}"),
        format!("mc-b.pool.test:{b_port}"),
    );

    let config = Config::try_from(Settings {
        listen: "127.0.0.1:0".to_owned(),
        memcached_srv: Some(POOL.to_owned()),
        dns_server: Some(dns.addr.to_string()),
        discovery_interval: Duration::from_secs(1),
        ..Settings::default()
    })
    .unwrap();
    let mg = Memgate::start(config).await;
    wait_for_names(&mg, std::slice::from_ref(&a)).await;
    let keys: Vec<String> = (0..300).map(|i| unique(&format!("srv{i}-"))).collect();
    set_all(&mg, &keys).await;

    // A second pod appears behind the name: it joins, and the keys that
    // move to it are still found.
    dns.set_srv(
        POOL,
        &[("mc-a.pool.test.", a_port), ("mc-b.pool.test.", b_port)],
    );
    wait_for_names(&mg, &[a.clone(), b.clone()]).await;
    let mut raw = mg.raw.clone();
    let results = raw
        .batch_get(pb::BatchGetRequest { keys: keys.clone() })
        .await
        .unwrap()
        .into_inner()
        .results;
    assert!(
        results
            .iter()
            .all(|r| r.found && r.value == value_of(&r.key))
    );

    // mc-a comes back at another address (a restarted pod: same name, new
    // IP, empty). memgate keeps it as the same member, so its keys keep
    // their place, and reaches it at the new address.
    let mc_a2 = Memcached::spawn_at("127.0.0.4", a_port);
    dns.set_a("mc-a.pool.test.", [127, 0, 0, 4].into());
    mc_a.kill();
    let locations = raw
        .locate(pb::LocateRequest { keys: keys.clone() })
        .await
        .unwrap()
        .into_inner()
        .locations;
    let on_a = &locations
        .iter()
        .find(|l| l.shard == a)
        .expect("a key on mc-a")
        .key;
    let written = eventually(Duration::from_secs(15), || {
        let mut raw = raw.clone();
        async move {
            let set = raw.set(pb::SetRequest {
                key: on_a.clone(),
                value: b"after the move".to_vec().into(),
                ttl_seconds: None,
                ..Default::default()
            });
            set.await.is_ok()
        }
    })
    .await;
    assert!(written, "mc-a was never reached at its new address");
    assert_eq!(
        mc_a2.direct_get(on_a).await.as_deref(),
        Some(&b"after the move"[..]),
        "the write went to mc-a's new address"
    );
    assert_eq!(servers(&mg).await, HashSet::from([a.clone(), b.clone()]));

    // The first pod goes away: the pool shrinks to the other.
    dns.set_srv(POOL, &[("mc-b.pool.test.", b_port)]);
    wait_for_names(&mg, std::slice::from_ref(&b)).await;
    mg.stop().await;
}
