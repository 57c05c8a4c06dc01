//! Stampede protection end to end: many concurrent `get_or_fill` callers,
//! spread over TWO memgate replicas in front of the same 3 real memcached
//! shards (the lease lives in memcached, so it holds across replicas), and
//! the embedded store behind one replica. One fill per herd; after an
//! invalidation the readers get the stale value at once while exactly one
//! refreshes it. (Set `MEMGATE_BIN` to run them against a built memgate.)

mod common;

use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use common::gate::Gate;
use common::{Memcached, unique};
use memgate_client::Client;
use tokio::sync::{Barrier, mpsc, watch};

/// Clients of the memgates under test, and what keeps them alive.
struct Replicas {
    clients: Vec<Client>,
    _gates: Vec<Gate>,
    _pool: Vec<Memcached>,
}

/// Two memgates over the same three memcached shards.
async fn two_replicas() -> Replicas {
    let pool = common::pool(3);
    let a = Gate::over(&pool).await;
    let b = Gate::over(&pool).await;
    assert_ne!(a.addr(), b.addr());
    Replicas {
        clients: vec![a.client(), b.client()],
        _gates: vec![a, b],
        _pool: pool,
    }
}

/// One memgate over the embedded store, with two connections to it.
async fn embedded() -> Replicas {
    let g = Gate::embedded().await;
    let other = Client::connect(format!("http://{}", g.addr()))
        .await
        .unwrap();
    Replicas {
        clients: vec![g.client(), other],
        _gates: vec![g],
        _pool: Vec::new(),
    }
}

/// `n` concurrent get_or_fill calls for one missing key, alternating over
/// the replicas, released together; fill takes 150 ms so the herd overlaps
/// it. Exactly one fill; every caller gets its value.
async fn herd_fills_once(r: &Replicas, n: usize) {
    let key = unique("stampede");
    let fills = Arc::new(AtomicUsize::new(0));
    let barrier = Arc::new(Barrier::new(n));
    let callers: Vec<_> = (0..n)
        .map(|i| {
            let c = r.clients[i % r.clients.len()].clone();
            let (key, fills, barrier) = (key.clone(), fills.clone(), barrier.clone());
            tokio::spawn(async move {
                barrier.wait().await;
                let value = format!("value of {key}");
                c.get_or_fill(&key, Some(Duration::from_secs(300)), || async move {
                    fills.fetch_add(1, Ordering::SeqCst);
                    tokio::time::sleep(Duration::from_millis(150)).await;
                    Ok::<_, Infallible>(value)
                })
                .await
                .unwrap()
            })
        })
        .collect();
    let want = format!("value of {key}");
    for (i, caller) in callers.into_iter().enumerate() {
        assert_eq!(caller.await.unwrap(), want.as_bytes(), "caller {i}");
    }
    assert_eq!(
        fills.load(Ordering::SeqCst),
        1,
        "{n} callers over {} clients, one fill",
        r.clients.len()
    );
    for c in &r.clients {
        assert_eq!(c.get(&key).await.unwrap().as_deref(), Some(want.as_bytes()));
    }
}

/// After an invalidating delete, `n` concurrent readers over the replicas:
/// the lease winner's fill blocks on a gate this test opens only after the
/// other n-1 have returned, so none of them waited for the refresh. They
/// all got the stale value; exactly one fill ran, and its value is stored.
async fn stale_readers_do_not_wait(r: &Replicas, n: usize) {
    let key = unique("stale-herd");
    r.clients[0].set(&key, "old", None).await.unwrap();
    assert!(r.clients[1].invalidate(&key).await.unwrap());

    let fills = Arc::new(AtomicUsize::new(0));
    let (open_tx, open_rx) = watch::channel(false);
    let (started_tx, mut started_rx) = mpsc::unbounded_channel::<()>();
    let (done_tx, mut done_rx) = mpsc::unbounded_channel::<(usize, Bytes)>();
    let barrier = Arc::new(Barrier::new(n));
    for i in 0..n {
        let c = r.clients[i % r.clients.len()].clone();
        let (key, fills, barrier) = (key.clone(), fills.clone(), barrier.clone());
        let (mut open_rx, started_tx, done_tx) =
            (open_rx.clone(), started_tx.clone(), done_tx.clone());
        tokio::spawn(async move {
            barrier.wait().await;
            let v = c
                .get_or_fill(&key, None, || async move {
                    fills.fetch_add(1, Ordering::SeqCst);
                    let _ = started_tx.send(());
                    open_rx.wait_for(|open| *open).await.unwrap();
                    Ok::<_, Infallible>("new")
                })
                .await
                .unwrap();
            let _ = done_tx.send((i, v));
        });
    }
    drop(done_tx);

    // n-1 readers return while the refresh is held back. (The timeout only
    // turns a hang, i.e. readers waiting for the refresh, into a failure.)
    let mut early = Vec::new();
    while early.len() < n - 1 {
        let (i, v) = tokio::time::timeout(Duration::from_secs(20), done_rx.recv())
            .await
            .unwrap_or_else(|_| {
                panic!(
                    "only {} of {} readers returned while the refresh was blocked",
                    early.len(),
                    n - 1
                )
            })
            .expect("a reader panicked");
        assert_eq!(v, "old", "reader {i} got {v:?} before the refresh ended");
        early.push(i);
    }
    tokio::time::timeout(Duration::from_secs(20), started_rx.recv())
        .await
        .expect("the winner's fill never started")
        .unwrap();
    assert_eq!(fills.load(Ordering::SeqCst), 1, "one reader refreshes");
    // Readers arriving now still get the stale value at once.
    let late = r.clients[1].get_or_fill(&key, None, || async {
        Ok::<_, Infallible>("second refresh")
    });
    assert_eq!(
        tokio::time::timeout(Duration::from_secs(20), late)
            .await
            .unwrap()
            .unwrap(),
        "old"
    );

    open_tx.send(true).unwrap();
    let (winner, v) = tokio::time::timeout(Duration::from_secs(20), done_rx.recv())
        .await
        .expect("the winner never finished")
        .expect("the winner panicked");
    assert!(!early.contains(&winner));
    assert_eq!(v, "new", "the winner returns its fill");
    assert_eq!(fills.load(Ordering::SeqCst), 1);
    for c in &r.clients {
        let e = c.get_entry(&key).await.unwrap();
        assert_eq!(
            (e.value.as_deref(), e.stale),
            (Some(&b"new"[..]), false),
            "the refresh is stored and clears the stale state"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn two_replicas_200_callers_fill_a_missing_key_once() {
    let r = two_replicas().await;
    herd_fills_once(&r, 200).await;
    // And a second herd for another key on the same replicas.
    herd_fills_once(&r, 200).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn two_replicas_stale_readers_do_not_wait_for_the_refresh() {
    let r = two_replicas().await;
    stale_readers_do_not_wait(&r, 50).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn embedded_200_callers_fill_a_missing_key_once() {
    let r = embedded().await;
    herd_fills_once(&r, 200).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn embedded_stale_readers_do_not_wait_for_the_refresh() {
    let r = embedded().await;
    stale_readers_do_not_wait(&r, 50).await;
}
