//! The Rust client's extended calls end to end, against the embedded store
//! and a memgate over 3 real memcached shards: conditional writes (add,
//! replace, compare-and-swap, conditional batch items), Get with its
//! metadata, get-and-touch, leases, invalidation and `get_or_fill`.
//! (Set `MEMGATE_BIN` to run them against a built memgate instead of one
//! served in-process.) The herd behaviour of `get_or_fill` over two
//! replicas is in `stampede.rs`.

mod common;

use std::convert::Infallible;
use std::ops::RangeInclusive;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use common::gate::Gate;
use common::{Memcached, unique};
use memgate_client::{
    Client, Condition, FillError, FillOptions, GetOptions, Item, KeyFailure, Lease, SetOutcome,
};
use tonic::Code;

/// A memgate and whatever backs it (kept alive with it).
struct Setup {
    gate: Gate,
    _pool: Vec<Memcached>,
}

async fn embedded() -> Setup {
    Setup {
        gate: Gate::embedded().await,
        _pool: Vec::new(),
    }
}

async fn shards(n: usize) -> Setup {
    let pool = common::pool(n);
    Setup {
        gate: Gate::over(&pool).await,
        _pool: pool,
    }
}

macro_rules! both_stores {
    ($($test:ident => $check:ident),+ $(,)?) => {
        mod embedded_store {
            use super::*;
            $(#[tokio::test(flavor = "multi_thread")]
            async fn $test() { let s = embedded().await; $check(&s.gate.client()).await })+
        }
        mod three_shards {
            use super::*;
            $(#[tokio::test(flavor = "multi_thread")]
            async fn $test() { let s = shards(3).await; $check(&s.gate.client()).await })+
        }
    };
}

both_stores! {
    add_stores_only_when_absent => check_add,
    replace_stores_only_when_present => check_replace,
    cas_stores_only_with_the_current_token => check_cas,
    of_two_writers_with_one_token_one_stores => check_cas_race,
    get_reports_cas_and_remaining_ttl => check_get_metadata,
    get_and_touch_sets_the_ttl => check_get_and_touch,
    lease_is_won_once_then_held_until_a_set => check_lease,
    invalidated_keys_read_stale_and_one_reader_wins => check_invalidate,
    batch_items_with_a_failed_condition_are_key_failures => check_conditional_batch,
    streamed_items_with_a_failed_condition_are_key_failures => check_conditional_stream,
    get_or_fill_fills_a_miss_once_and_then_reads => check_get_or_fill,
    get_or_fill_releases_the_lease_when_fill_fails => check_fill_failure,
    get_or_fill_fills_itself_after_waiting_for_a_dead_filler => check_fill_wait,
    get_or_fill_by_many_callers_fills_once => check_fill_herd,
    a_set_is_not_undone_by_concurrent_lease_readers => check_set_races_lease_readers,
}

fn text(v: &Option<Bytes>) -> Option<&str> {
    v.as_deref().map(|b| std::str::from_utf8(b).unwrap())
}

async fn value(c: &Client, key: &str) -> Option<String> {
    c.get(key)
        .await
        .unwrap()
        .map(|b| String::from_utf8(b.to_vec()).unwrap())
}

fn refused() -> SetOutcome {
    SetOutcome {
        stored: false,
        cas: 0,
    }
}

fn assert_ttl(ttl: Option<Duration>, secs: RangeInclusive<u64>, what: &str) {
    let ttl = ttl.unwrap_or_else(|| panic!("{what}: no ttl_remaining"));
    assert!(
        secs.contains(&ttl.as_secs()),
        "{what}: ttl_remaining {ttl:?}, want {secs:?} s"
    );
}

async fn check_add(c: &Client) {
    let key = unique("add");
    let first = c.add(&key, "first", None).await.unwrap();
    assert!(first.stored, "add of a missing key stores");
    assert_ne!(first.cas, 0, "a stored add reports the new cas");
    assert_eq!(c.get_entry(&key).await.unwrap().cas, first.cas);

    assert_eq!(c.add(&key, "second", None).await.unwrap(), refused());
    assert_eq!(value(c, &key).await.as_deref(), Some("first"));

    // Plain set answers stored with a new token too.
    let set = c
        .set_with(&key, "third", None, Condition::Always)
        .await
        .unwrap();
    assert!(set.stored);
    assert_ne!(set.cas, 0);
    assert_ne!(set.cas, first.cas, "every write gets a new cas");
}

async fn check_replace(c: &Client) {
    let key = unique("replace");
    assert_eq!(c.replace(&key, "nope", None).await.unwrap(), refused());
    assert_eq!(
        value(c, &key).await,
        None,
        "a refused replace writes nothing"
    );
    c.set(&key, "old", None).await.unwrap();
    let out = c
        .replace(&key, "new", Some(Duration::from_secs(100)))
        .await
        .unwrap();
    assert!(out.stored);
    assert_ne!(out.cas, 0);
    let e = c.get_entry(&key).await.unwrap();
    assert_eq!(text(&e.value), Some("new"));
    assert_eq!(e.cas, out.cas);
    assert_ttl(e.ttl_remaining, 98..=100, "replace with a TTL");
}

async fn check_cas(c: &Client) {
    let key = unique("cas");
    assert_eq!(
        c.cas(&key, "x", 12345, None).await.unwrap(),
        refused(),
        "CAS on a missing key never matches"
    );
    assert_eq!(value(c, &key).await, None);

    c.set(&key, "v1", None).await.unwrap();
    let token = c.get_entry(&key).await.unwrap().cas;
    assert_ne!(token, 0);
    let swapped = c.cas(&key, "v2", token, None).await.unwrap();
    assert!(swapped.stored, "the current token matches");
    assert_ne!(swapped.cas, token, "a swap changes the token");
    assert_eq!(value(c, &key).await.as_deref(), Some("v2"));

    assert_eq!(
        c.cas(&key, "v3", token, None).await.unwrap(),
        refused(),
        "the old token no longer matches"
    );
    assert_eq!(value(c, &key).await.as_deref(), Some("v2"));
    // The token a write returned is usable for the next swap.
    assert!(c.cas(&key, "v4", swapped.cas, None).await.unwrap().stored);
    assert_eq!(value(c, &key).await.as_deref(), Some("v4"));
}

async fn check_cas_race(c: &Client) {
    for round in 0..5 {
        let key = unique("cas-race");
        c.set(&key, "start", None).await.unwrap();
        let token = c.get_entry(&key).await.unwrap().cas;
        let barrier = Arc::new(tokio::sync::Barrier::new(2));
        let writers: Vec<_> = ["a", "b"]
            .into_iter()
            .map(|who| {
                let (c, key, barrier) = (c.clone(), key.clone(), barrier.clone());
                tokio::spawn(async move {
                    barrier.wait().await;
                    (who, c.cas(&key, who, token, None).await.unwrap())
                })
            })
            .collect();
        let mut stored = Vec::new();
        for w in writers {
            let (who, out) = w.await.unwrap();
            if out.stored {
                stored.push(who);
            }
        }
        assert_eq!(stored.len(), 1, "round {round}: stored by {stored:?}");
        assert_eq!(value(c, &key).await.as_deref(), Some(stored[0]));
    }
}

async fn check_get_metadata(c: &Client) {
    let key = unique("meta");
    let miss = c.get_entry(&key).await.unwrap();
    assert_eq!(
        (
            miss.value,
            miss.cas,
            miss.ttl_remaining,
            miss.lease,
            miss.stale
        ),
        (None, 0, None, Lease::None, false),
        "a miss carries no metadata"
    );

    let out = c
        .set_with(&key, "v", Some(Duration::from_secs(100)), Condition::Always)
        .await
        .unwrap();
    let e = c.get_entry(&key).await.unwrap();
    assert_eq!(text(&e.value), Some("v"));
    assert_eq!(e.cas, out.cas, "get reports the cas the write returned");
    assert_ttl(e.ttl_remaining, 98..=100, "set with ttl 100");
    assert_eq!((e.lease, e.stale), (Lease::None, false));

    let forever = unique("meta-forever");
    c.set(&forever, "v", Some(Duration::ZERO)).await.unwrap();
    let e = c.get_entry(&forever).await.unwrap();
    assert!(e.found());
    assert_eq!(e.ttl_remaining, None, "a never-expiring item has no TTL");
}

async fn check_get_and_touch(c: &Client) {
    let key = unique("gat");
    c.set(&key, "v", Some(Duration::from_secs(100)))
        .await
        .unwrap();
    let touched = c
        .get_with(&key, GetOptions::new().touch(Duration::from_secs(500)))
        .await
        .unwrap();
    assert_eq!(text(&touched.value), Some("v"));
    assert_ttl(touched.ttl_remaining, 498..=500, "get-and-touch's answer");
    // Read back without touching: the new TTL stuck.
    let e = c.get_entry(&key).await.unwrap();
    assert_ttl(e.ttl_remaining, 498..=500, "a plain get after the touch");
    assert_eq!(text(&e.value), Some("v"));

    // Touch to "never".
    let e = c
        .get_with(&key, GetOptions::new().touch(Duration::ZERO))
        .await
        .unwrap();
    assert_eq!(e.ttl_remaining, None);
    assert_eq!(c.get_entry(&key).await.unwrap().ttl_remaining, None);

    // A miss is not created by a touch.
    let missing = unique("gat-miss");
    let e = c
        .get_with(&missing, GetOptions::new().touch(Duration::from_secs(60)))
        .await
        .unwrap();
    assert!(!e.found());
    assert_eq!(value(c, &missing).await, None);
}

async fn check_lease(c: &Client) {
    let key = unique("lease");
    let lease = GetOptions::new().lease(Duration::from_secs(30));
    let first = c.get_with(&key, lease).await.unwrap();
    assert_eq!((first.found(), first.lease), (false, Lease::Won));
    assert_ne!(first.cas, 0, "a won lease carries the placeholder's token");
    assert_ttl(
        first.ttl_remaining,
        28..=30,
        "a won lease: the placeholder's TTL",
    );
    let second = c.get_with(&key, lease).await.unwrap();
    assert_eq!((second.found(), second.lease), (false, Lease::Held));
    // A placeholder is never a value...
    assert_eq!(c.get(&key).await.unwrap(), None);
    let plain = c.get_entry(&key).await.unwrap();
    assert_eq!(
        (plain.found(), plain.lease),
        (false, Lease::None),
        "no lease is reported without asking for one"
    );
    // ...but it exists for add.
    assert_eq!(c.add(&key, "sneaky", None).await.unwrap(), refused());

    c.set(&key, "filled", None).await.unwrap();
    let after = c.get_with(&key, lease).await.unwrap();
    assert_eq!(text(&after.value), Some("filled"));
    assert_eq!((after.lease, after.stale), (Lease::None, false));
}

async fn check_invalidate(c: &Client) {
    let missing = unique("inval-miss");
    assert!(!c.invalidate(&missing).await.unwrap());
    assert_eq!(c.get(&missing).await.unwrap(), None);

    let key = unique("inval");
    c.set(&key, "old", None).await.unwrap();
    assert!(c.invalidate(&key).await.unwrap(), "it existed");
    let e = c.get_entry(&key).await.unwrap();
    assert_eq!(text(&e.value), Some("old"));
    assert!(e.stale, "an invalidated item reads stale");
    assert_eq!(e.lease, Lease::None, "no lease without asking");
    assert_eq!(c.get(&key).await.unwrap().as_deref(), Some(&b"old"[..]));

    let lease = GetOptions::new().lease(Duration::from_secs(30));
    let winner = c.get_with(&key, lease).await.unwrap();
    assert_eq!(
        (text(&winner.value), winner.stale, winner.lease),
        (Some("old"), true, Lease::Won)
    );
    for _ in 0..3 {
        let other = c.get_with(&key, lease).await.unwrap();
        assert_eq!(
            (text(&other.value), other.stale, other.lease),
            (Some("old"), true, Lease::Held)
        );
    }
    // A stale item exists for conditions.
    assert_eq!(c.add(&key, "x", None).await.unwrap(), refused());

    c.set(&key, "new", None).await.unwrap();
    let e = c.get_with(&key, lease).await.unwrap();
    assert_eq!(
        (text(&e.value), e.stale, e.lease),
        (Some("new"), false, Lease::None),
        "a set clears the stale state"
    );
}

fn failure_keys(errors: &[KeyFailure]) -> Vec<(String, Code)> {
    let mut v: Vec<_> = errors.iter().map(|e| (e.key.clone(), e.code)).collect();
    v.sort_by(|a, b| a.0.cmp(&b.0));
    v
}

/// Items of a batch: a refused add, a refused replace, a refused and a
/// matching CAS, and two that store. Returns the items and the keys that
/// must fail.
async fn conditional_items(c: &Client, tag: &str) -> (Vec<Item>, Vec<String>, Vec<String>) {
    let exists = unique(&format!("{tag}-exists"));
    let missing = unique(&format!("{tag}-missing"));
    let fresh = unique(&format!("{tag}-fresh"));
    let swap = unique(&format!("{tag}-swap"));
    let stale_token = unique(&format!("{tag}-stale-token"));
    c.set(&exists, "kept", None).await.unwrap();
    c.set(&swap, "before", None).await.unwrap();
    let token = c.get_entry(&swap).await.unwrap().cas;
    c.set(&stale_token, "kept", None).await.unwrap();
    let old = c.get_entry(&stale_token).await.unwrap().cas;
    c.set(&stale_token, "kept", None).await.unwrap();
    let items = vec![
        Item::new(&exists, "no").when(Condition::Absent),
        Item::new(&missing, "no").when(Condition::Present),
        Item::new(&fresh, "yes").when(Condition::Absent),
        Item::new(&swap, "yes").when(Condition::CasMatch(token)),
        Item::new(&stale_token, "no").when(Condition::CasMatch(old)),
    ];
    let failing = vec![exists.clone(), missing.clone(), stale_token.clone()];
    let stored = vec![fresh, swap];
    (items, failing, stored)
}

async fn check_outcome(
    c: &Client,
    outcome: memgate_client::BatchOutcome,
    failing: Vec<String>,
    stored: Vec<String>,
) {
    assert_eq!(
        outcome.count, 2,
        "refused items are not counted: {outcome:?}"
    );
    let mut want: Vec<_> = failing
        .iter()
        .map(|k| (k.clone(), Code::FailedPrecondition))
        .collect();
    want.sort_by(|a, b| a.0.cmp(&b.0));
    assert_eq!(failure_keys(&outcome.errors), want);
    assert_eq!(value(c, &failing[0]).await.as_deref(), Some("kept"));
    assert_eq!(value(c, &failing[1]).await, None);
    assert_eq!(value(c, &failing[2]).await.as_deref(), Some("kept"));
    for k in stored {
        assert_eq!(value(c, &k).await.as_deref(), Some("yes"), "{k}");
    }
}

async fn check_conditional_batch(c: &Client) {
    let (items, failing, stored) = conditional_items(c, "batch").await;
    let outcome = c.set_many(items).await.unwrap();
    check_outcome(c, outcome, failing, stored).await;
}

async fn check_conditional_stream(c: &Client) {
    let (items, failing, stored) = conditional_items(c, "stream").await;
    let outcome = c.set_stream(tokio_stream::iter(items)).await.unwrap();
    check_outcome(c, outcome, failing, stored).await;
}

async fn check_get_or_fill(c: &Client) {
    let key = unique("gof");
    let fills = AtomicUsize::new(0);
    let fill = || async {
        fills.fetch_add(1, Ordering::SeqCst);
        Ok::<_, Infallible>("computed")
    };
    let v = c
        .get_or_fill(&key, Some(Duration::from_secs(100)), fill)
        .await
        .unwrap();
    assert_eq!(v, "computed");
    assert_eq!(fills.load(Ordering::SeqCst), 1);
    let e = c.get_entry(&key).await.unwrap();
    assert_eq!(
        text(&e.value),
        Some("computed"),
        "the filled value is stored"
    );
    assert_ttl(e.ttl_remaining, 98..=100, "with the fill's TTL");

    // A hit does not call fill.
    let v = c
        .get_or_fill(&key, None, || async {
            fills.fetch_add(1, Ordering::SeqCst);
            Ok::<_, Infallible>("again")
        })
        .await
        .unwrap();
    assert_eq!(v, "computed");
    assert_eq!(fills.load(Ordering::SeqCst), 1);

    // A stale value goes to the lease winner's fill: this lone caller wins.
    assert!(c.invalidate(&key).await.unwrap());
    let v = c
        .get_or_fill(&key, None, || async { Ok::<_, Infallible>("refreshed") })
        .await
        .unwrap();
    assert_eq!(v, "refreshed");
    let e = c.get_entry(&key).await.unwrap();
    assert_eq!((text(&e.value), e.stale), (Some("refreshed"), false));
}

#[derive(Debug, PartialEq)]
struct Boom;

async fn check_fill_failure(c: &Client) {
    let key = unique("gof-fail");
    let err = c
        .get_or_fill(&key, None, || async { Err::<Bytes, _>(Boom) })
        .await
        .unwrap_err();
    assert!(matches!(err, FillError::Fill(Boom)), "{err:?}");
    assert_eq!(c.get(&key).await.unwrap(), None, "nothing was stored");
    // The lease was released: the next caller wins at once.
    let next = c
        .get_with(&key, GetOptions::new().lease(Duration::from_secs(30)))
        .await
        .unwrap();
    assert_eq!((next.found(), next.lease), (false, Lease::Won));
    // Released again (this test took it), get_or_fill fills and stores.
    c.delete(&key).await.unwrap();
    let v = c
        .get_or_fill(&key, None, || async { Ok::<_, Infallible>("ok") })
        .await
        .unwrap();
    assert_eq!(v, "ok");
    assert_eq!(value(c, &key).await.as_deref(), Some("ok"));
}

async fn check_fill_wait(c: &Client) {
    let key = unique("gof-wait");
    // A filler took the lease and died.
    let taken = c
        .get_with(&key, GetOptions::new().lease(Duration::from_secs(30)))
        .await
        .unwrap();
    assert_eq!(taken.lease, Lease::Won);
    let fills = AtomicUsize::new(0);
    let options = FillOptions {
        wait: Duration::from_millis(300),
        ..FillOptions::default()
    };
    let started = std::time::Instant::now();
    let v = c
        .get_or_fill_with(&key, None, options, || async {
            fills.fetch_add(1, Ordering::SeqCst);
            Ok::<_, Infallible>("mine")
        })
        .await
        .unwrap();
    assert_eq!(v, "mine");
    assert_eq!(fills.load(Ordering::SeqCst), 1);
    assert!(
        started.elapsed() >= Duration::from_millis(300),
        "it waited for the holder first ({:?})",
        started.elapsed()
    );
    assert_eq!(value(c, &key).await.as_deref(), Some("mine"));
}

async fn check_fill_herd(c: &Client) {
    let key = unique("gof-herd");
    let fills = Arc::new(AtomicUsize::new(0));
    let barrier = Arc::new(tokio::sync::Barrier::new(50));
    let callers: Vec<_> = (0..50)
        .map(|_| {
            let (c, key, fills, barrier) = (c.clone(), key.clone(), fills.clone(), barrier.clone());
            tokio::spawn(async move {
                barrier.wait().await;
                c.get_or_fill(&key, None, || async move {
                    fills.fetch_add(1, Ordering::SeqCst);
                    tokio::time::sleep(Duration::from_millis(150)).await;
                    Ok::<_, Infallible>("herd")
                })
                .await
                .unwrap()
            })
        })
        .collect();
    for caller in callers {
        assert_eq!(caller.await.unwrap(), "herd");
    }
    assert_eq!(fills.load(Ordering::SeqCst), 1, "one fill for 50 callers");
}

/// The winner's Set while other callers poll a held lease: once the Set
/// has returned, every later Get finds the value (a reader's Get must not
/// write the placeholder back over it).
async fn check_set_races_lease_readers(c: &Client) {
    let lease = GetOptions::new().lease(Duration::from_secs(30));
    for round in 0..50 {
        let key = unique("set-vs-lease");
        assert_eq!(c.get_with(&key, lease).await.unwrap().lease, Lease::Won);
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let readers: Vec<_> = (0..8)
            .map(|_| {
                let (c, key, stop) = (c.clone(), key.clone(), stop.clone());
                tokio::spawn(async move {
                    while !stop.load(Ordering::SeqCst) {
                        c.get_with(&key, lease).await.unwrap();
                    }
                })
            })
            .collect();
        // Let the readers get going (a few of their Gets answered).
        for _ in 0..3 {
            c.get_with(&key, lease).await.unwrap();
        }
        c.set(&key, "filled", None).await.unwrap();
        let mut seen = Vec::new();
        for _ in 0..20 {
            seen.push(c.get_entry(&key).await.unwrap().found());
        }
        stop.store(true, Ordering::SeqCst);
        for r in readers {
            r.await.unwrap();
        }
        assert!(
            seen.iter().all(|f| *f),
            "round {round}: after the Set returned, Gets found it {seen:?}"
        );
        assert_eq!(
            value(c, &key).await.as_deref(),
            Some("filled"),
            "round {round}"
        );
    }
}
