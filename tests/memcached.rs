//! Behaviour that only a real memcached pool shows: placement on the right
//! shard, interoperability with other memcached clients, shard failures,
//! item size limits, and connection integrity after errors.

mod common;

use std::time::{Duration, Instant};

use common::{Memcached, Memgate, config_for, eventually, unique, with_timeout};
use memgate_api::v1 as pb;
use memgate_server::store::memcached::ring::{Ring, ShardSpec};
use tonic::Code;

fn ring_for(pool: &[Memcached]) -> Ring {
    let specs: Vec<ShardSpec> = pool.iter().map(|m| m.addr.parse().unwrap()).collect();
    Ring::new(&specs)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_spread_over_every_shard_under_their_own_names() {
    let pool = common::pool(3);
    let mg = Memgate::over(&pool).await;
    let ring = ring_for(&pool);
    let keys: Vec<String> = (0..300).map(|i| unique(&format!("spread{i}"))).collect();
    for k in &keys {
        mg.client.set(k, format!("v-{k}"), None).await.unwrap();
    }
    let mut per_shard = [0usize; 3];
    for k in &keys {
        let owner = ring.shard_for(k);
        for (i, mc) in pool.iter().enumerate() {
            let direct = mc.direct_get(k).await;
            if i == owner {
                // Stored under exactly its own name, readable by any client.
                assert_eq!(
                    direct,
                    Some(format!("v-{k}").into_bytes()),
                    "{k} on its shard"
                );
                per_shard[i] += 1;
            } else {
                assert_eq!(direct, None, "{k} also on shard {i}");
            }
        }
    }
    for (i, n) in per_shard.iter().enumerate() {
        assert!(
            *n > 60,
            "shard {i} holds only {n} of 300 keys: {per_shard:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn items_written_by_other_memcached_clients_are_visible() {
    let pool = common::pool(3);
    let mg = Memgate::over(&pool).await;
    let ring = ring_for(&pool);
    let key = unique("foreign");
    let owner = &pool[ring.shard_for(&key)];
    let mut direct = owner.direct().await;
    // memcache-async writes with noreply; its get on the same connection
    // is answered after the set, so the write has landed when it returns.
    direct.set(&key, b"from another client", 0).await.unwrap();
    assert_eq!(direct.get(&key).await.unwrap(), b"from another client");
    assert_eq!(
        mg.client.get(&key).await.unwrap().as_deref(),
        Some(&b"from another client"[..])
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_shard_fails_only_its_own_keys() {
    let mut pool = common::pool(3);
    let mg = Memgate::over(&pool).await;
    let ring = ring_for(&pool);
    let keys: Vec<String> = (0..60).map(|i| unique(&format!("fail{i}"))).collect();
    for k in &keys {
        mg.client.set(k, k.clone(), None).await.unwrap();
    }
    let dead = 1;
    pool[dead].kill();

    let results = mg
        .raw
        .clone()
        .batch_get(pb::BatchGetRequest { keys: keys.clone() })
        .await
        .unwrap()
        .into_inner()
        .results;
    for (k, r) in keys.iter().zip(&results) {
        if ring.shard_for(k) == dead {
            assert!(!r.found && r.error.contains(&pool[dead].addr), "{r:?}");
            assert_eq!(r.error_code, Code::Unavailable as i32, "{r:?}");
        } else {
            assert!(
                r.found && r.error.is_empty() && r.value == k.as_bytes(),
                "{r:?}"
            );
        }
    }

    let on_dead = keys.iter().find(|k| ring.shard_for(k) == dead).unwrap();
    let on_live = keys.iter().find(|k| ring.shard_for(k) != dead).unwrap();
    let err = mg.client.get(on_dead).await.unwrap_err();
    assert_eq!(err.code(), Code::Unavailable, "{err}");
    assert!(err.to_string().contains("unavailable"), "{err}");
    assert_eq!(
        mg.client.get(on_live).await.unwrap().as_deref(),
        Some(on_live.as_bytes())
    );

    let items = keys
        .iter()
        .map(|k| pb::SetRequest {
            key: k.clone(),
            value: b"again".to_vec().into(),
            ttl_seconds: None,
            ..Default::default()
        })
        .collect();
    let set = mg
        .raw
        .clone()
        .batch_set(pb::BatchSetRequest { items })
        .await
        .unwrap()
        .into_inner();
    let dead_keys = keys.iter().filter(|k| ring.shard_for(k) == dead).count();
    assert_eq!(set.stored as usize, keys.len() - dead_keys);
    assert_eq!(set.errors.len(), dead_keys);
    assert!(
        set.errors
            .iter()
            .all(|e| e.code == Code::Unavailable as i32),
        "{:?}",
        set.errors
    );

    // Health still serves: two of three shards answer.
    assert_eq!(
        mg.status("").await,
        Some(tonic_health::pb::health_check_response::ServingStatus::Serving)
    );

    // Same port, fresh process: memgate reconnects by itself.
    pool[dead].restart();
    assert!(
        eventually(Duration::from_secs(5), || async {
            mg.client.get(on_dead).await.is_ok()
        })
        .await,
        "memgate never reconnected to the restarted shard"
    );
    mg.client.set(on_dead, "back", None).await.unwrap();
    assert_eq!(pool[dead].direct_get(on_dead).await, Some(b"back".to_vec()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hung_shard_times_out_without_stalling_the_others() {
    let pool = common::pool(3);
    let timeout = Duration::from_millis(300);
    let mg = Memgate::start(with_timeout(config_for(&pool), timeout)).await;
    let ring = ring_for(&pool);
    let keys: Vec<String> = (0..30).map(|i| unique(&format!("hang{i}"))).collect();
    for k in &keys {
        mg.client.set(k, "x", None).await.unwrap();
    }
    let hung = 0;
    pool[hung].signal("STOP");
    let on_hung = keys.iter().find(|k| ring.shard_for(k) == hung).unwrap();
    let started = Instant::now();
    let err = mg.client.get(on_hung).await.unwrap_err();
    let waited = started.elapsed();
    assert_eq!(err.code(), Code::DeadlineExceeded, "{err}");
    assert!(
        waited < timeout * 4,
        "waited {waited:?} for a {timeout:?} timeout"
    );

    // Other shards answer at once while shard 0 is stopped.
    for k in keys.iter().filter(|k| ring.shard_for(k) != hung) {
        let started = Instant::now();
        assert!(mg.client.get(k).await.unwrap().is_some());
        assert!(
            started.elapsed() < timeout,
            "{k} took {:?}",
            started.elapsed()
        );
    }
    pool[hung].signal("CONT");
    assert!(
        eventually(Duration::from_secs(5), || async {
            mg.client.get(on_hung).await.is_ok()
        })
        .await,
        "the resumed shard never answered again"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_follows_the_pool() {
    use tonic_health::pb::HealthCheckRequest;
    use tonic_health::pb::health_check_response::ServingStatus;

    let mut pool = common::pool(2);
    let mg = Memgate::over(&pool).await;
    for service in ["", "memgate.v1.Cache"] {
        assert_eq!(mg.status(service).await, Some(ServingStatus::Serving));
    }
    let mut watch = mg
        .health
        .clone()
        .watch(HealthCheckRequest {
            service: "memgate.v1.Cache".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        watch.message().await.unwrap().unwrap().status,
        ServingStatus::Serving as i32
    );

    pool[0].kill();
    pool[1].kill();
    let next = tokio::time::timeout(Duration::from_secs(5), watch.message())
        .await
        .expect("Watch saw no change after every shard died")
        .unwrap()
        .unwrap();
    assert_eq!(next.status, ServingStatus::NotServing as i32);
    mg.wait_for_status("", ServingStatus::NotServing).await;

    pool[1].restart();
    mg.wait_for_status("", ServingStatus::Serving).await;
    mg.wait_for_status("memgate.v1.Cache", ServingStatus::Serving)
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn not_serving_until_a_shard_answers() {
    use tonic_health::pb::health_check_response::ServingStatus;

    let mut pool = common::pool(1);
    pool[0].kill();
    let mg = Memgate::start_unready(config_for(&pool)).await;
    // Give the checker several probe rounds against a dead pool.
    assert!(
        !eventually(Duration::from_millis(500), || async {
            mg.status("").await == Some(ServingStatus::Serving)
        })
        .await,
        "SERVING before any shard answered"
    );
    assert_eq!(mg.status("").await, Some(ServingStatus::NotServing));
    assert_eq!(
        mg.status("memgate.v1.Cache").await,
        Some(ServingStatus::NotServing)
    );
    pool[0].restart();
    mg.wait_for_status("", ServingStatus::Serving).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn values_are_limited_by_each_shards_item_size() {
    // One shard with a 2 MiB item limit, memgate allowing 3 MiB values.
    let pool = vec![Memcached::spawn_with(&["-I", "2m"])];
    let mut config = config_for(&pool);
    config.limits.max_value_bytes = 3 << 20;
    config.limits.max_message_bytes = 4 << 20;
    let mg = Memgate::start(config).await;
    let key = unique("itemsize");
    let big = vec![1u8; (1 << 20) + 512 * 1024];
    mg.client.set(&key, big.clone(), None).await.unwrap();
    assert_eq!(
        mg.client.get(&key).await.unwrap().as_deref(),
        Some(&big[..])
    );

    // Exactly the shard's capacity for this key fits; one byte more is refused
    // before anything is sent.
    let capacity = (2 << 20) - 64 - key.len();
    mg.client
        .set(&key, vec![2u8; capacity], None)
        .await
        .unwrap();
    let err = mg
        .client
        .set(&key, vec![3u8; capacity + 1], None)
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(err.to_string().contains("item_size_max"), "{err}");
    assert_eq!(
        mg.client.get(&key).await.unwrap().map(|v| v.len()),
        Some(capacity)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memcached_errors_never_desynchronise_connections() {
    // A full memcached with evictions off answers sets with SERVER_ERROR;
    // every later reply must still reach the request it belongs to.
    let pool = vec![Memcached::spawn_with(&["-M", "-m", "2"])];
    let mg = Memgate::over(&pool).await;
    let filler = vec![0u8; 100 * 1024];
    let mut refused = 0;
    for i in 0..100 {
        if let Err(e) = mg
            .client
            .set(&format!("fill{i}"), filler.clone(), None)
            .await
        {
            assert_eq!(e.code(), Code::Internal, "{e}");
            assert!(e.to_string().contains("out of memory"), "{e}");
            refused += 1;
        }
    }
    assert!(refused > 0, "memcached never ran out of memory");

    // Interleave refused writes with reads of small keys, from many tasks.
    // Free some room, then store small keys whose values name themselves.
    for i in 0..100 {
        mg.client.delete(&format!("fill{i}")).await.unwrap();
    }
    let small: Vec<String> = (0..20).map(|i| format!("small{i}")).collect();
    for k in &small {
        mg.client.set(k, k.clone(), None).await.unwrap();
    }
    let tasks: Vec<_> = (0..16)
        .map(|t| {
            let c = mg.client.clone();
            let small = small.clone();
            let filler = filler.clone();
            tokio::spawn(async move {
                for round in 0..30 {
                    let _ = c
                        .set(&format!("big{t}-{round}"), filler.clone(), None)
                        .await;
                    for k in &small {
                        if let Some(v) = c.get(k).await.unwrap() {
                            assert_eq!(v, k.as_bytes(), "task {t} read another key's value");
                        }
                    }
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_values_never_desynchronise_connections() {
    let pool = common::pool(3);
    let mg = Memgate::over(&pool).await;
    let keys: Vec<String> = (0..20).map(|i| unique(&format!("own{i}"))).collect();
    for k in &keys {
        mg.client.set(k, k.clone(), None).await.unwrap();
    }
    let tasks: Vec<_> = (0..8)
        .map(|t| {
            let c = mg.client.clone();
            let keys = keys.clone();
            tokio::spawn(async move {
                for round in 0..20 {
                    let k = &keys[(t + round) % keys.len()];
                    let err = c.set(k, vec![b'!'; 1 << 20], None).await.unwrap_err();
                    assert_eq!(err.code(), Code::InvalidArgument);
                    for k in &keys {
                        assert_eq!(c.get(k).await.unwrap().as_deref(), Some(k.as_bytes()));
                    }
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.unwrap();
    }
}

/// List must see every live key even while items move between memcached's
/// LRU queues (reads bump them; the LRU maintainer shuffles new items) —
/// an LRU walk misses items that move behind it, the hash-table walk
/// memgate uses does not.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn list_sees_every_key_under_lru_churn() {
    let pool = common::pool(3);
    let mg = Memgate::over(&pool).await;
    let prefix = unique("churn");
    let keys: Vec<String> = (0..1500).map(|i| format!("{prefix}:{i:04}")).collect();
    let items: Vec<pb::SetRequest> = keys
        .iter()
        .map(|k| pb::SetRequest {
            key: k.clone(),
            value: vec![b'x'; 200].into(),
            ttl_seconds: None,
            ..Default::default()
        })
        .collect();
    for chunk in items.chunks(500) {
        let resp = mg
            .raw
            .clone()
            .batch_set(pb::BatchSetRequest {
                items: chunk.to_vec(),
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(resp.stored, 500);
    }
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let churners: Vec<_> = (0..8)
        .map(|t| {
            let (c, keys, stop) = (mg.client.clone(), keys.clone(), stop.clone());
            let other = format!("{prefix}-other");
            tokio::spawn(async move {
                let mut i = t;
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    let _ = c.get(&keys[i % keys.len()]).await;
                    // Same size class as the listed items, to push them
                    // through the HOT/WARM/COLD queues.
                    let _ = c.set(&format!("{other}:{i}"), vec![b'y'; 200], None).await;
                    i += 7;
                }
            })
        })
        .collect();
    for round in 0..20 {
        let listed = mg.client.list(&format!("{prefix}:"), 0).await.unwrap();
        let missed = keys.len().saturating_sub(listed.len());
        assert_eq!(listed, keys, "round {round}: List missed {missed} keys");
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    for c in churners {
        c.await.unwrap();
    }
}

/// Writes `key` (any bytes but space and control characters) straight to
/// `mc` over the text protocol, as a client with no UTF-8 rule would.
async fn raw_set(mc: &Memcached, key: &[u8]) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut conn = tokio::net::TcpStream::connect(&mc.addr).await.unwrap();
    let mut cmd = b"set ".to_vec();
    cmd.extend_from_slice(key);
    cmd.extend_from_slice(b" 0 0 1\r\nx\r\n");
    conn.write_all(&cmd).await.unwrap();
    let mut reply = [0u8; 8];
    conn.read_exact(&mut reply).await.unwrap();
    assert_eq!(&reply, b"STORED\r\n", "memcached refused key {key:?}");
}

/// memcached keys may hold any byte but spaces and control characters, so
/// another client can store a key that is not UTF-8. List cannot return
/// such a key (keys are proto strings): it skips it and lists the rest,
/// instead of failing the shard's whole dump.
#[tokio::test(flavor = "multi_thread")]
async fn list_skips_keys_that_are_not_utf8() {
    let pool = common::pool(2);
    let mg = Memgate::over(&pool).await;
    let prefix = unique("bytes");
    let keys: Vec<String> = (0..20).map(|i| format!("{prefix}:{i:02}")).collect();
    for k in &keys {
        mg.client.set(k, "v", None).await.unwrap();
    }
    for mc in &pool {
        raw_set(mc, b"\xff\xfekey").await;
        // Inside the listed prefix too: skipped, not half-decoded.
        let mut inside = format!("{prefix}:").into_bytes();
        inside.extend_from_slice(b"\xc3\x28");
        raw_set(mc, &inside).await;
    }
    let mut raw = mg.raw.clone();
    let listed = raw
        .list(pb::ListRequest {
            prefix: format!("{prefix}:"),
            limit: 0,
        })
        .await
        .expect("List with non-UTF-8 keys on every shard")
        .into_inner()
        .keys;
    assert_eq!(listed, keys);
    let everything = raw
        .list(pb::ListRequest {
            prefix: String::new(),
            limit: 0,
        })
        .await
        .expect("List of every key")
        .into_inner()
        .keys;
    assert!(
        keys.iter().all(|k| everything.contains(k)),
        "{everything:?}"
    );
}

/// A server without the meta protocol (twemproxy) gets the text protocol:
/// every operation works through it, one request at a time per connection.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn servers_without_meta_commands_get_the_text_protocol() {
    let mc = Memcached::spawn();
    let dir = tempfile::tempdir().unwrap();
    let proxy = common::twemproxy(&[(mc.addr.as_str(), 1)], "fnv1a_64", dir.path());
    let addr = proxy.addr.clone();
    let mg = Memgate::start(common::config_for_addrs(std::slice::from_ref(&addr))).await;
    let keys: Vec<String> = (0..50).map(|i| unique(&format!("text{i}"))).collect();
    let items: Vec<(String, String)> = keys.iter().map(|k| (k.clone(), format!("v-{k}"))).collect();
    let stored = mg
        .raw
        .clone()
        .batch_set(pb::BatchSetRequest {
            items: items
                .iter()
                .map(|(k, v)| pb::SetRequest {
                    key: k.clone(),
                    value: v.clone().into_bytes().into(),
                    ttl_seconds: None,
                    ..Default::default()
                })
                .collect(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(stored.stored, 50, "{:?}", stored.errors);
    // Written through twemproxy, readable by any client of the memcached.
    assert_eq!(
        mc.direct_get(&keys[0]).await,
        Some(format!("v-{}", keys[0]).into_bytes())
    );
    let mut lookups = keys.clone();
    lookups.push(keys[3].clone()); // a duplicate
    lookups.push(unique("text-missing"));
    let got = mg.client.get_many(lookups.clone()).await.unwrap();
    for (i, l) in got.iter().enumerate() {
        let want = (i < 51).then(|| format!("v-{}", lookups[i]).into_bytes());
        assert_eq!(l.value.as_deref(), want.as_deref(), "{}", l.key);
    }
    // Concurrent single-key calls share the connections one at a time.
    let calls: Vec<_> = keys
        .iter()
        .map(|k| {
            let (c, k) = (mg.client.clone(), k.clone());
            tokio::spawn(async move { c.get(&k).await.unwrap() })
        })
        .collect();
    for (call, k) in calls.into_iter().zip(&keys) {
        assert_eq!(
            call.await.unwrap().as_deref(),
            Some(format!("v-{k}").as_bytes())
        );
    }
    assert!(mg.client.delete(&keys[0]).await.unwrap());
    assert!(!mg.client.delete(&keys[0]).await.unwrap());
    assert_eq!(mg.client.get(&keys[0]).await.unwrap(), None);
    drop(proxy);
}
