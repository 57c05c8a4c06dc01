//! Live pool changes at the store, against real memcached: servers join
//! and leave while keys keep their values, moved keys are found on their
//! previous server during the window and copied to their new one, and
//! writes during the window cannot be undone by a later fallback.

mod common;

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use common::{Memcached, pool};
use memgate_server::config::Rebalance;
use memgate_server::key::{Key, Ttl};
use memgate_server::metrics::Metrics;
use memgate_server::store::budget::ByteBudget;
use memgate_server::store::memcached::ring::{Placement, Ring, ShardSpec};
use memgate_server::store::memcached::shard::PoolSettings;
use memgate_server::store::memcached::{OnShardDown, ShardedStore};
use memgate_server::store::{Condition, Increment, Item, ReadOptions, Store};

fn settings() -> PoolSettings {
    PoolSettings {
        timeout: Duration::from_secs(1),
        connect_timeout: Duration::from_secs(1),
        conns_per_shard: 1,
        keepalive: None,
        failure_limit: 3,
        retry_timeout: Duration::from_secs(1),
        dns_server: None,
    }
}

fn specs(pool: &[&Memcached]) -> Vec<ShardSpec> {
    pool.iter().map(|m| m.addr.parse().unwrap()).collect()
}

fn store(pool: &[&Memcached], window: Duration, metrics: &Arc<Metrics>) -> ShardedStore {
    ShardedStore::new(
        &specs(pool),
        settings(),
        Placement::default(),
        1 << 20,
        OnShardDown::Fail,
        metrics,
        Rebalance {
            window,
            fallback_rate: 100_000,
        },
    )
}

fn keys(n: usize, prefix: &str) -> Vec<Key> {
    (0..n)
        .map(|i| Key::parse(common::unique(&format!("{prefix}{i}-"))).unwrap())
        .collect()
}

fn value(k: &Key) -> Bytes {
    Bytes::from(format!("value of {k}"))
}

async fn write_all(store: &ShardedStore, keys: &[Key]) {
    let items = keys
        .iter()
        .map(|k| Item {
            key: k.clone(),
            value: value(k),
            ttl: Ttl::from_secs(3600),
            condition: Condition::Always,
        })
        .collect();
    for r in store.set_many(items).await {
        r.unwrap();
    }
}

fn budget() -> Arc<memgate_server::store::budget::Reservation> {
    Arc::new(ByteBudget::new(1 << 30, Default::default()).reserve(1 << 30))
}

/// Deletes `key` on `mc` itself and waits for the answer
/// (memcache-async's delete does not wait: it sends `noreply`).
async fn delete_directly(mc: &Memcached, key: &Key) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut conn = tokio::net::TcpStream::connect(&mc.addr).await.unwrap();
    conn.write_all(format!("delete {key}\r\n").as_bytes())
        .await
        .unwrap();
    let mut reply = [0u8; 9];
    conn.read_exact(&mut reply).await.unwrap();
    assert_eq!(&reply, b"DELETED\r\n");
}

/// The index in `pool` of the server that owns `key` under `specs`.
fn owner(specs: &[ShardSpec], key: &Key) -> usize {
    Ring::with_placement(specs, Placement::default()).shard_for(key.as_str())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_joins_and_moved_keys_stay_hits_and_move_over() {
    let mut mcs = pool(4);
    let fourth = mcs.pop().unwrap();
    let three: Vec<&Memcached> = mcs.iter().collect();
    let metrics = Metrics::new();
    let store = store(&three, Duration::from_secs(600), &metrics);
    let keys = keys(2000, "join");
    write_all(&store, &keys).await;

    let mut four = three.clone();
    four.push(&fourth);
    let change = store.update(&specs(&four)).await;
    assert_eq!(change.added, vec![fourth.addr.clone()]);
    assert!(change.removed.is_empty());
    assert!((0.15..0.35).contains(&change.moved), "{change:?}");
    let new_specs = specs(&four);
    let moved: Vec<&Key> = keys.iter().filter(|k| owner(&new_specs, k) == 3).collect();
    assert!(moved.len() > 300, "{} of 2000 keys moved", moved.len());

    // Half read one by one, half in one batch: every key is still a hit
    // with its own value.
    let budget = budget();
    let (single, batch) = keys.split_at(1000);
    for k in single {
        assert_eq!(
            store
                .get(k, ReadOptions::default(), &budget)
                .await
                .unwrap()
                .value,
            Some(value(k)),
            "{k}"
        );
    }
    let got = store.get_many(batch, &budget).await.unwrap();
    for (k, v) in batch.iter().zip(got) {
        assert_eq!(v.unwrap(), Some(value(k)), "{k}");
    }
    let cache = &metrics.cache;
    assert_eq!(cache.rebalance_fallback_hits.get(), moved.len() as u64);
    assert_eq!(cache.rebalance_copies.get(), moved.len() as u64);

    // The moved keys now live on the new server, with their TTL.
    for k in &moved {
        assert_eq!(
            fourth.direct_get(k.as_str()).await.as_deref(),
            Some(value(k).as_ref()),
            "{k} was copied to its new server"
        );
    }
    // Read again: no fallback needed any more.
    let reads = cache.rebalance_fallback_reads.get();
    for k in &moved[..50] {
        assert_eq!(
            store
                .get(k, ReadOptions::default(), &budget)
                .await
                .unwrap()
                .value,
            Some(value(k))
        );
    }
    assert_eq!(cache.rebalance_fallback_reads.get(), reads);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_and_deletes_in_the_window_are_not_undone_by_a_fallback() {
    let mut mcs = pool(4);
    let fourth = mcs.pop().unwrap();
    let three: Vec<&Memcached> = mcs.iter().collect();
    let store = store(&three, Duration::from_secs(600), &Metrics::new());
    let keys = keys(400, "write");
    write_all(&store, &keys).await;
    let mut four = three.clone();
    four.push(&fourth);
    store.update(&specs(&four)).await;
    let new_specs = specs(&four);
    let moved: Vec<&Key> = keys.iter().filter(|k| owner(&new_specs, k) == 3).collect();
    let (rewritten, deleted) = moved.split_at(moved.len() / 2);
    let budget = budget();
    for k in rewritten {
        store
            .set(Item {
                key: (*k).clone(),
                value: Bytes::from_static(b"new"),
                ttl: Ttl::from_secs(0),
                condition: Condition::Always,
            })
            .await
            .unwrap();
    }
    for k in deleted {
        // Deleted before it was ever read on its new server: the delete
        // must reach the old copy too.
        store.delete(k).await.unwrap();
    }
    for k in rewritten {
        assert_eq!(
            store
                .get(k, ReadOptions::default(), &budget)
                .await
                .unwrap()
                .value
                .as_deref(),
            Some(&b"new"[..])
        );
        // Evicted from the new server (or flushed): the old value must not
        // come back through the fallback.
        delete_directly(&fourth, k).await;
        assert_eq!(
            store
                .get(k, ReadOptions::default(), &budget)
                .await
                .unwrap()
                .value,
            None,
            "{k} came back"
        );
    }
    for k in deleted {
        assert_eq!(
            store
                .get(k, ReadOptions::default(), &budget)
                .await
                .unwrap()
                .value,
            None,
            "{k} came back"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_increment_in_the_window_is_not_undone_by_a_fallback() {
    let mut mcs = pool(4);
    let fourth = mcs.pop().unwrap();
    let three: Vec<&Memcached> = mcs.iter().collect();
    let store = store(&three, Duration::from_secs(600), &Metrics::new());
    let keys = keys(200, "incr");
    write_all(&store, &keys).await;
    let mut four = three.clone();
    four.push(&fourth);
    store.update(&specs(&four)).await;
    let new_specs = specs(&four);
    let moved: Vec<&Key> = keys.iter().filter(|k| owner(&new_specs, k) == 3).collect();
    assert!(!moved.is_empty());
    let budget = budget();
    for k in moved {
        // Missing on its new server: created there from initial_value.
        let inc = Increment {
            key: k.clone(),
            delta: 1,
            initial: Some(7),
            ttl: Ttl::from_secs(0),
        };
        assert_eq!(store.increment(inc).await.unwrap(), 7);
        assert_eq!(
            store
                .get(k, ReadOptions::default(), &budget)
                .await
                .unwrap()
                .value
                .as_deref(),
            Some(&b"7"[..])
        );
        // Gone from the new server: the value from before the increment
        // must not come back through the fallback.
        delete_directly(&fourth, k).await;
        assert_eq!(
            store
                .get(k, ReadOptions::default(), &budget)
                .await
                .unwrap()
                .value,
            None,
            "{k} came back"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_leaves_and_its_keys_are_found_until_the_window_closes() {
    let mcs = pool(3);
    let all: Vec<&Memcached> = mcs.iter().collect();
    let metrics = Metrics::new();
    let store = store(&all, Duration::from_secs(600), &metrics);
    let keys = keys(600, "leave");
    write_all(&store, &keys).await;
    let before = specs(&all);
    let on_leaving: Vec<&Key> = keys.iter().filter(|k| owner(&before, k) == 2).collect();
    let change = store.update(&specs(&all[..2])).await;
    assert_eq!(change.removed, vec![mcs[2].addr.clone()]);
    let budget = budget();
    for k in &on_leaving {
        assert_eq!(
            store
                .get(k, ReadOptions::default(), &budget)
                .await
                .unwrap()
                .value,
            Some(value(k)),
            "{k}"
        );
    }
    assert_eq!(
        metrics.cache.rebalance_copies.get(),
        on_leaving.len() as u64
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_window_moved_keys_miss() {
    let mut mcs = pool(4);
    let fourth = mcs.pop().unwrap();
    let three: Vec<&Memcached> = mcs.iter().collect();
    let store = store(&three, Duration::ZERO, &Metrics::new());
    let keys = keys(300, "nowindow");
    write_all(&store, &keys).await;
    let mut four = three.clone();
    four.push(&fourth);
    store.update(&specs(&four)).await;
    let new_specs = specs(&four);
    let budget = budget();
    for k in &keys {
        let got = store
            .get(k, ReadOptions::default(), &budget)
            .await
            .unwrap()
            .value;
        if owner(&new_specs, k) == 3 {
            assert_eq!(got, None, "{k}: nothing to fall back to");
        } else {
            assert_eq!(got, Some(value(k)));
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_that_does_not_answer_is_not_added() {
    let mcs = pool(2);
    let two: Vec<&Memcached> = mcs.iter().collect();
    let store = store(&two, Duration::from_secs(600), &Metrics::new());
    let dead = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let mut wanted = specs(&two);
    wanted.push(dead.to_string().parse().unwrap());
    let change = store.update(&wanted).await;
    assert_eq!(change.pending, vec![dead.to_string()]);
    assert!(change.added.is_empty());
    // Every key still has a live owner.
    let keys = keys(100, "pending");
    write_all(&store, &keys).await;
}
