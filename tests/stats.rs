//! The Stats RPC against real memcached processes: per-shard figures that
//! add up to what was written, ring shares, a dead or hung shard reported
//! (not failing the call), and memgate's own counters moving with traffic.

mod common;

use std::time::{Duration, Instant};

use common::{FakeMemcached, Memgate, config_for, config_for_addrs, pool, unique, with_timeout};
use memgate_api::v1 as pb;

fn shard<'a>(stats: &'a pb::StatsResponse, addr: &str) -> &'a pb::ShardStats {
    stats
        .shards
        .iter()
        .find(|s| s.address == addr)
        .unwrap_or_else(|| panic!("no shard {addr} in {stats:#?}"))
}

fn method<'a>(stats: &'a pb::StatsResponse, name: &str) -> &'a pb::MethodCounters {
    let counters = stats.counters.as_ref().expect("counters");
    counters
        .methods
        .iter()
        .find(|m| m.service == "memgate.v1.Cache" && m.method == name)
        .unwrap_or_else(|| panic!("no counters for {name} in {counters:#?}"))
}

fn handled(m: &pb::MethodCounters, code: tonic::Code) -> u64 {
    m.handled
        .iter()
        .find(|h| h.code == code as i32)
        .map_or(0, |h| h.count)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shards_report_what_was_written_and_a_dead_one_is_reported_down() {
    let mut pool = pool(3);
    let mg = Memgate::start(config_for(&pool)).await;
    let prefix = unique("stats");
    let keys: Vec<String> = (0..60).map(|i| format!("{prefix}:{i}")).collect();
    for k in &keys {
        mg.client.set(k, "v", None).await.unwrap();
    }
    for k in &keys[..3] {
        assert!(mg.client.get(k).await.unwrap().is_some());
    }
    for i in 0..2 {
        assert!(
            mg.client
                .get(&format!("{prefix}:missing:{i}"))
                .await
                .unwrap()
                .is_none()
        );
    }

    let stats = mg.client.stats().await.unwrap();
    assert_eq!(stats.version, env!("CARGO_PKG_VERSION"));
    assert!(stats.store.contains(&pool[0].addr), "{}", stats.store);
    assert_eq!(stats.shards.len(), 3);

    // Each shard holds exactly the keys the ring put there (read directly
    // from each memcached, bypassing memgate).
    let mut expected = [0u64; 3];
    for k in &keys {
        let holders: Vec<usize> = {
            let mut h = Vec::new();
            for (i, m) in pool.iter().enumerate() {
                if m.direct_get(k).await.is_some() {
                    h.push(i);
                }
            }
            h
        };
        assert_eq!(holders.len(), 1, "{k} is on {holders:?}");
        expected[holders[0]] += 1;
    }
    let mut share_sum = 0.0;
    for (i, m) in pool.iter().enumerate() {
        let s = shard(&stats, &m.addr);
        assert!(s.up, "{s:#?}");
        assert!(s.error.is_empty(), "{s:#?}");
        assert!(!s.marked_down);
        assert_eq!(s.weight, 1);
        let backend = s.backend.as_ref().expect("memcached's stats");
        assert_eq!(backend.curr_items, expected[i], "{}: {backend:#?}", m.addr);
        assert_eq!(backend.limit_maxbytes, 64 << 20, "memcached -m 64");
        assert!(backend.bytes > 0 || expected[i] == 0);
        assert!(!backend.version.is_empty());
        // Fair share is 1/3; 160 virtual nodes keep it within a few percent.
        assert!((0.25..0.42).contains(&s.ring_share), "{s:#?}");
        share_sum += s.ring_share;
    }
    assert!((share_sum - 1.0).abs() < 1e-9, "shares sum to {share_sum}");
    let total: u64 = stats
        .shards
        .iter()
        .map(|s| s.backend.as_ref().unwrap().curr_items)
        .sum();
    assert_eq!(total, keys.len() as u64);
    let backend_hits: u64 = stats
        .shards
        .iter()
        .map(|s| s.backend.as_ref().unwrap().get_hits)
        .sum();
    assert!(
        backend_hits >= 3,
        "memcached counted memgate's hits: {stats:#?}"
    );

    // memgate's own counters moved with the traffic.
    let counters = stats.counters.as_ref().unwrap();
    let set = method(&stats, "Set");
    assert_eq!(set.started, keys.len() as u64);
    assert_eq!(handled(set, tonic::Code::Ok), keys.len() as u64);
    let get = method(&stats, "Get");
    assert_eq!((get.started, get.hits, get.misses), (5, 3, 2));
    assert_eq!(handled(get, tonic::Code::Ok), 5);
    assert_eq!((counters.hits, counters.misses), (3, 2));
    // This very call is in flight, and started but not yet handled.
    assert!(counters.inflight_calls >= 1, "{counters:#?}");
    let this = method(&stats, "Stats");
    assert_eq!((this.started, handled(this, tonic::Code::Ok)), (1, 0));
    assert!(stats.uptime_seconds < 600);

    // A dead shard is reported down, with why; the others still report.
    let dead = pool[1].addr.clone();
    pool[1].kill();
    let stats = mg.client.stats().await.unwrap();
    let s = shard(&stats, &dead);
    assert!(!s.up, "{s:#?}");
    assert!(s.backend.is_none(), "{s:#?}");
    assert!(s.error.contains(&dead), "the error names the shard: {s:#?}");
    // The first call may still find the pooled connection open (its EOF
    // not yet seen) and fail on it; the next connect is refused.
    let counted = common::eventually(Duration::from_secs(5), || async {
        let stats = mg.client.stats().await.unwrap();
        shard(&stats, &dead).counters.as_ref().unwrap().refused >= 1
    })
    .await;
    assert!(counted, "memgate never counted the refused connect");
    for m in [&pool[0], &pool[2]] {
        let live = shard(&stats, &m.addr);
        assert!(live.up, "{live:#?}");
        assert!(live.backend.is_some());
    }
    assert_eq!(
        handled(method(&stats, "Stats"), tonic::Code::Ok),
        1,
        "the first Stats call was counted as OK"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hung_shards_are_asked_concurrently_within_the_timeout() {
    let live = pool(1);
    let (a, b) = (
        FakeMemcached::black_hole().await,
        FakeMemcached::black_hole().await,
    );
    let addrs = vec![live[0].addr.clone(), a.addr.clone(), b.addr.clone()];
    let timeout = Duration::from_millis(400);
    let mut config = with_timeout(config_for_addrs(&addrs), timeout);
    // One probe at start only, so no probe's connect attempt is in flight
    // for Stats to share: each hung shard costs Stats a full timeout.
    config.health_interval = Duration::from_secs(3600);
    let mg = Memgate::start(config).await;

    let started = Instant::now();
    let stats = mg.client.stats().await.unwrap();
    let took = started.elapsed();
    // Each hung shard costs one timeout; asked one after the other they
    // would take two.
    assert!(
        took < timeout * 2 - Duration::from_millis(100),
        "Stats took {took:?}"
    );
    for hung in [&a.addr, &b.addr] {
        let s = shard(&stats, hung);
        assert!(!s.up && s.backend.is_none(), "{s:#?}");
        assert!(!s.error.is_empty());
    }
    assert!(shard(&stats, &live[0].addr).up, "{stats:#?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_stats_do_not_mark_a_shard_down() {
    // Connects and speaks meta (`MN` to `mn`), but answers `stats` with
    // nonsense, as a proxy that does not know it might.
    let live = pool(1);
    let odd = FakeMemcached::answering(b"MN\r\n").await;
    let mut config = config_for_addrs(&[live[0].addr.clone(), odd.addr.clone()]);
    config.health_interval = Duration::from_secs(3600);
    let mg = Memgate::start(config).await;
    // Far more failed Stats than --shard-failure-limit (3).
    for _ in 0..6 {
        let stats = mg.client.stats().await.unwrap();
        let s = shard(&stats, &odd.addr);
        assert!(!s.up && !s.error.is_empty(), "{s:#?}");
        assert!(!s.marked_down, "Stats changed routing: {s:#?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_embedded_store_is_one_pseudo_shard() {
    let mg = Memgate::embedded().await;
    for i in 0..7 {
        mg.client
            .set(&format!("embedded:{i}"), vec![b'x'; 100], None)
            .await
            .unwrap();
    }
    assert!(mg.client.get("embedded:0").await.unwrap().is_some());
    let stats = mg.client.stats().await.unwrap();
    assert!(stats.store.starts_with("embedded"), "{}", stats.store);
    let [s] = &stats.shards[..] else {
        panic!("one pseudo-shard: {stats:#?}")
    };
    assert_eq!(
        (s.address.as_str(), s.up, s.ring_share),
        ("embedded", true, 1.0)
    );
    let backend = s.backend.as_ref().unwrap();
    assert_eq!(backend.curr_items, 7);
    assert_eq!(backend.limit_maxbytes, 256 << 20, "--embedded-max-bytes");
    assert_eq!((backend.get_hits, backend.get_misses), (1, 0));
    assert_eq!(backend.version, env!("CARGO_PKG_VERSION"));
}
