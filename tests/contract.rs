//! The API contract, run against every store: the embedded store, one
//! memcached shard and three. Each behaviour is one test per setup, so a
//! failure names both the rule and the store that broke it.

mod common;

use std::time::Duration;

use common::{Memcached, Memgate, eventually, unique};
use futures::StreamExt;
use memgate_api::v1 as pb;
use tonic::Code;

/// A running memgate and whatever backs it (kept alive with it).
pub struct Setup {
    mg: Memgate,
    _pool: Vec<Memcached>,
}

async fn embedded() -> Setup {
    Setup {
        mg: Memgate::embedded().await,
        _pool: Vec::new(),
    }
}

async fn shards(n: usize) -> Setup {
    let pool = common::pool(n);
    Setup {
        mg: Memgate::over(&pool).await,
        _pool: pool,
    }
}

macro_rules! contract {
    ($($store:ident => $setup:expr),+ $(,)?) => {$(
        mod $store {
            use super::*;
            #[tokio::test] async fn set_get_delete() { check_set_get_delete(&$setup.mg).await }
            #[tokio::test] async fn miss_is_not_an_error() { check_miss(&$setup.mg).await }
            #[tokio::test] async fn binary_values_round_trip() { check_binary(&$setup.mg).await }
            #[tokio::test] async fn ttl_expires() { check_ttl(&$setup.mg).await }
            #[tokio::test] async fn long_ttl_survives() { check_long_ttl(&$setup.mg).await }
            #[tokio::test] async fn invalid_keys_are_refused() { check_invalid_keys(&$setup.mg).await }
            #[tokio::test] async fn oversized_values_are_refused() { check_oversize(&$setup.mg).await }
            #[tokio::test] async fn batch_calls() { check_batches(&$setup.mg).await }
            #[tokio::test] async fn batch_limits() { check_batch_limits(&$setup.mg).await }
            #[tokio::test] async fn list_by_prefix() { check_list(&$setup.mg).await }
            #[tokio::test] async fn streams() { check_streams(&$setup.mg).await }
            #[tokio::test] async fn concurrent_clients_read_their_writes() { check_concurrency(&$setup.mg).await }
            #[tokio::test(flavor = "multi_thread")] async fn increment() { check_increment(&$setup.mg).await }
            #[tokio::test(flavor = "multi_thread")] async fn increment_creates_with_initial_value_and_ttl() { check_increment_create(&$setup.mg).await }
            #[tokio::test(flavor = "multi_thread")] async fn increment_of_text_fails_and_the_next_call_works() { check_increment_non_numeric(&$setup.mg).await }
            #[tokio::test(flavor = "multi_thread")] async fn touch() { check_touch(&$setup.mg).await }
            #[tokio::test(flavor = "multi_thread")] async fn set_conditions() { check_conditions(&$setup.mg).await }
            #[tokio::test(flavor = "multi_thread")] async fn cas_race_has_one_winner() { check_cas_race(&$setup.mg).await }
            #[tokio::test(flavor = "multi_thread")] async fn get_reports_cas_and_ttl() { check_get_metadata(&$setup.mg).await }
            #[tokio::test(flavor = "multi_thread")] async fn get_and_touch() { check_get_and_touch(&$setup.mg).await }
            #[tokio::test(flavor = "multi_thread")] async fn leases() { check_leases(&$setup.mg).await }
            #[tokio::test(flavor = "multi_thread")] async fn one_lease_among_concurrent_misses() { check_lease_race(&$setup.mg).await }
            #[tokio::test(flavor = "multi_thread")] async fn invalidation_serves_stale() { check_invalidation(&$setup.mg).await }
            #[tokio::test(flavor = "multi_thread")] async fn batch_conditions_per_key() { check_batch_conditions(&$setup.mg).await }
            #[tokio::test(flavor = "multi_thread")] async fn option_rules() { check_option_rules(&$setup.mg).await }
        }
    )+};
}

contract! {
    embedded_store => embedded().await,
    one_shard => shards(1).await,
    three_shards => shards(3).await,
}

async fn check_set_get_delete(mg: &Memgate) {
    let c = &mg.client;
    let key = unique("sgd");
    c.set(&key, "v1", None).await.unwrap();
    assert_eq!(c.get(&key).await.unwrap().as_deref(), Some(&b"v1"[..]));
    c.set(&key, "v2", None).await.unwrap();
    assert_eq!(c.get(&key).await.unwrap().as_deref(), Some(&b"v2"[..]));
    assert!(
        c.delete(&key).await.unwrap(),
        "existing key reports deleted"
    );
    assert!(
        !c.delete(&key).await.unwrap(),
        "second delete reports not deleted"
    );
    assert_eq!(c.get(&key).await.unwrap(), None);
    // Empty values are values.
    c.set(&key, "", None).await.unwrap();
    assert_eq!(c.get(&key).await.unwrap().as_deref(), Some(&b""[..]));
}

async fn check_miss(mg: &Memgate) {
    let resp = mg
        .raw
        .clone()
        .get(pb::GetRequest {
            key: unique("never-written"),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert!(!resp.found);
    assert!(resp.value.is_empty());
}

async fn check_binary(mg: &Memgate) {
    let key = unique("bin");
    let value: Vec<u8> = b"\0\r\nEND\r\nVALUE x 0 1\r\n"
        .iter()
        .copied()
        .chain(0..=255u8)
        .collect();
    mg.client.set(&key, value.clone(), None).await.unwrap();
    assert_eq!(
        mg.client.get(&key).await.unwrap().as_deref(),
        Some(&value[..])
    );
}

async fn check_ttl(mg: &Memgate) {
    let key = unique("ttl");
    mg.client
        .set(&key, "short", Some(Duration::from_secs(1)))
        .await
        .unwrap();
    let forever = unique("ttl0");
    mg.client
        .set(&forever, "stays", Some(Duration::from_secs(0)))
        .await
        .unwrap();
    let gone = eventually(Duration::from_secs(5), || async {
        mg.client.get(&key).await.unwrap().is_none()
    })
    .await;
    assert!(gone, "a 1-second TTL item was still there after 5 s");
    assert!(
        mg.client.get(&forever).await.unwrap().is_some(),
        "TTL 0 never expires"
    );
}

async fn check_long_ttl(mg: &Memgate) {
    // Over memcached's 30-day relative limit: must not be read as 1970.
    let key = unique("ttl40d");
    mg.client
        .set(&key, "long", Some(Duration::from_secs(40 * 24 * 3600)))
        .await
        .unwrap();
    assert_eq!(
        mg.client.get(&key).await.unwrap().as_deref(),
        Some(&b"long"[..])
    );
}

async fn check_invalid_keys(mg: &Memgate) {
    let mut raw = mg.raw.clone();
    let victim = unique("victim");
    mg.client.set(&victim, "safe", None).await.unwrap();
    for (key, rule) in [
        (String::new(), "empty"),
        ("k".repeat(251), "at most 250 bytes"),
        (format!("{victim}\r\nflush_all"), "control characters"),
        (format!("a\r\ndelete {victim}"), "control characters"),
        ("with space".to_owned(), "spaces"),
    ] {
        let err = raw
            .set(pb::SetRequest {
                key: key.clone(),
                value: b"x".to_vec().into(),
                ttl_seconds: None,
                ..Default::default()
            })
            .await
            .unwrap_err();
        assert_eq!(err.code(), Code::InvalidArgument, "{key:?}");
        assert!(err.message().contains(rule), "{key:?}: {}", err.message());
        let err = raw
            .get(pb::GetRequest {
                key: key.clone(),
                ..Default::default()
            })
            .await
            .unwrap_err();
        assert_eq!(err.code(), Code::InvalidArgument);
        let err = raw
            .delete(pb::DeleteRequest {
                key,
                ..Default::default()
            })
            .await
            .unwrap_err();
        assert_eq!(err.code(), Code::InvalidArgument);
    }
    // Nothing was injected: the victim is intact.
    assert_eq!(
        mg.client.get(&victim).await.unwrap().as_deref(),
        Some(&b"safe"[..])
    );
}

async fn check_oversize(mg: &Memgate) {
    let key = unique("big");
    // 1 MiB is the flag's default, and more than memcached's default
    // item_size_max can hold once the item header is counted.
    let err = mg
        .client
        .set(&key, vec![7u8; 1024 * 1024 + 1], None)
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument, "{err}");
    assert!(err.to_string().contains("at most"), "{err}");
    assert_eq!(mg.client.get(&key).await.unwrap(), None, "nothing written");
    // A large value that fits is stored intact.
    let fits = vec![9u8; 1000 * 1024];
    mg.client.set(&key, fits.clone(), None).await.unwrap();
    assert_eq!(
        mg.client.get(&key).await.unwrap().as_deref(),
        Some(&fits[..])
    );
}

async fn check_batches(mg: &Memgate) {
    let mut raw = mg.raw.clone();
    let keys: Vec<String> = (0..50).map(|i| unique(&format!("batch{i}"))).collect();
    let items = keys
        .iter()
        .map(|k| pb::SetRequest {
            key: k.clone(),
            value: format!("value of {k}").into_bytes().into(),
            ttl_seconds: None,
            ..Default::default()
        })
        .collect();
    let set = raw
        .batch_set(pb::BatchSetRequest { items })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(set.stored, 50);
    assert!(set.errors.is_empty(), "{:?}", set.errors);

    // Request order is kept, misses and duplicates included.
    let missing = unique("batch-miss");
    let mut ask: Vec<String> = keys.iter().rev().cloned().collect();
    ask.insert(10, missing.clone());
    ask.push(keys[0].clone());
    let got = raw
        .batch_get(pb::BatchGetRequest { keys: ask.clone() })
        .await
        .unwrap()
        .into_inner()
        .results;
    assert_eq!(got.len(), ask.len());
    for (want, r) in ask.iter().zip(&got) {
        assert_eq!(&r.key, want);
        assert!(r.error.is_empty(), "{r:?}");
        assert_eq!(r.error_code, 0, "{r:?}");
        if *want == missing {
            assert!(!r.found);
        } else {
            assert!(r.found, "{want}");
            assert_eq!(r.value, format!("value of {want}").into_bytes());
        }
    }

    let mut del = keys[..20].to_vec();
    del.push(missing);
    let resp = raw
        .batch_delete(pb::BatchDeleteRequest { keys: del })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(resp.deleted, 20, "only existing keys count");
    assert!(resp.errors.is_empty());
    assert_eq!(mg.client.get(&keys[0]).await.unwrap(), None);
    assert!(mg.client.get(&keys[20]).await.unwrap().is_some());

    // An invalid item fails the whole batch and writes nothing.
    let fresh = unique("batch-atomic");
    let err = raw
        .batch_set(pb::BatchSetRequest {
            items: vec![
                pb::SetRequest {
                    key: fresh.clone(),
                    value: b"x".to_vec().into(),
                    ttl_seconds: None,
                    ..Default::default()
                },
                pb::SetRequest {
                    key: "bad key".into(),
                    value: b"x".to_vec().into(),
                    ttl_seconds: None,
                    ..Default::default()
                },
            ],
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert_eq!(mg.client.get(&fresh).await.unwrap(), None);
}

async fn check_batch_limits(mg: &Memgate) {
    let keys: Vec<String> = (0..1001).map(|i| format!("k{i}")).collect();
    let err = mg
        .raw
        .clone()
        .batch_get(pb::BatchGetRequest { keys })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(
        err.message().contains("--max-batch-keys"),
        "{}",
        err.message()
    );
    let empty = mg
        .raw
        .clone()
        .batch_get(pb::BatchGetRequest { keys: vec![] })
        .await
        .unwrap()
        .into_inner();
    assert!(empty.results.is_empty());
}

async fn check_list(mg: &Memgate) {
    let mut raw = mg.raw.clone();
    let prefix = unique("list");
    let mut want: Vec<String> = (0..30).map(|i| format!("{prefix}:{i:02}")).collect();
    for k in &want {
        mg.client.set(k, "x", None).await.unwrap();
    }
    let expiring = format!("{prefix}:zz-expiring");
    mg.client
        .set(&expiring, "x", Some(Duration::from_secs(1)))
        .await
        .unwrap();
    mg.client.set(&unique("other"), "x", None).await.unwrap();
    want.sort();

    // Expired items are skipped (wait until the item itself is gone).
    assert!(
        eventually(Duration::from_secs(5), || async {
            mg.client.get(&expiring).await.unwrap().is_none()
        })
        .await
    );
    let list = |prefix: String, limit: u32| {
        let mut raw = raw.clone();
        async move {
            raw.list(pb::ListRequest { prefix, limit })
                .await
                .unwrap()
                .into_inner()
                .keys
        }
    };
    assert_eq!(list(prefix.clone(), 0).await, want);
    assert_eq!(list(prefix.clone(), 5).await, want[..5].to_vec());
    assert!(list(unique("nothing-here"), 0).await.is_empty());
    // Deleted keys disappear from the listing.
    mg.client.delete(&want[0]).await.unwrap();
    let after = raw
        .list(pb::ListRequest {
            prefix: prefix.clone(),
            limit: 0,
        })
        .await
        .unwrap()
        .into_inner()
        .keys;
    assert_eq!(after, want[1..].to_vec());
}

async fn check_streams(mg: &Memgate) {
    let mut raw = mg.raw.clone();
    let prefix = unique("stream");
    let n = 2000usize; // several chunks
    let items: Vec<pb::SetRequest> = (0..n)
        .map(|i| pb::SetRequest {
            key: format!("{prefix}:{i}"),
            value: i.to_string().into_bytes().into(),
            ttl_seconds: None,
            ..Default::default()
        })
        .chain(std::iter::once(pb::SetRequest {
            key: "bad key".into(),
            value: vec![].into(),
            ttl_seconds: None,
            ..Default::default()
        }))
        .collect();
    let set = raw
        .batch_set_stream(tokio_stream::iter(items))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(set.stored as usize, n);
    assert_eq!(set.errors.len(), 1);
    assert_eq!(set.errors[0].key, "bad key");
    assert_eq!(set.errors[0].code, Code::InvalidArgument as i32);

    let mut asks: Vec<pb::GetRequest> = (0..n)
        .map(|i| pb::GetRequest {
            key: format!("{prefix}:{i}"),
            ..Default::default()
        })
        .collect();
    asks.insert(
        500,
        pb::GetRequest {
            key: "bad key".into(),
            ..Default::default()
        },
    );
    let results: Vec<pb::GetResult> = raw
        .batch_get_stream(tokio_stream::iter(asks.clone()))
        .await
        .unwrap()
        .into_inner()
        .map(|r| r.unwrap())
        .collect()
        .await;
    assert_eq!(results.len(), asks.len());
    for (ask, r) in asks.iter().zip(&results) {
        assert_eq!(ask.key, r.key, "results keep request order");
        if r.key == "bad key" {
            assert!(!r.error.is_empty());
            assert_eq!(r.error_code, Code::InvalidArgument as i32);
        } else {
            let i: usize = r.key.rsplit(':').next().unwrap().parse().unwrap();
            assert!(r.found && r.value == i.to_string().into_bytes(), "{r:?}");
        }
    }

    let dels: Vec<_> = (0..n)
        .map(|i| pb::DeleteRequest {
            key: format!("{prefix}:{i}"),
            ..Default::default()
        })
        .collect();
    let del = raw
        .batch_delete_stream(tokio_stream::iter(dels))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(del.deleted as usize, n);
    assert!(
        mg.client
            .get(&format!("{prefix}:7"))
            .await
            .unwrap()
            .is_none()
    );
}

async fn check_concurrency(mg: &Memgate) {
    let prefix = unique("conc");
    let tasks: Vec<_> = (0..32)
        .map(|t| {
            let c = mg.client.clone();
            let prefix = prefix.clone();
            tokio::spawn(async move {
                for round in 0..25 {
                    let key = format!("{prefix}:{t}:{}", round % 5);
                    let value = format!("{t}-{round}");
                    c.set(&key, value.clone(), None).await.unwrap();
                    let got = c.get(&key).await.unwrap();
                    assert_eq!(
                        got.as_deref(),
                        Some(value.as_bytes()),
                        "task {t} round {round}"
                    );
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.unwrap();
    }
}

/// The status of a raw Increment call, or its value.
async fn incr(
    mg: &Memgate,
    key: &str,
    delta: i64,
    initial_value: Option<u64>,
    ttl_seconds: Option<u32>,
) -> Result<u64, tonic::Status> {
    mg.raw
        .clone()
        .increment(pb::IncrementRequest {
            key: key.to_owned(),
            delta,
            initial_value,
            ttl_seconds,
        })
        .await
        .map(|r| r.into_inner().value)
}

async fn text(mg: &Memgate, key: &str) -> Option<String> {
    let v = mg.client.get(key).await.unwrap()?;
    Some(String::from_utf8(v.to_vec()).unwrap())
}

async fn check_increment(mg: &Memgate) {
    let key = unique("ctr");
    mg.client.set(&key, "41", None).await.unwrap();
    assert_eq!(incr(mg, &key, 1, None, None).await.unwrap(), 42);
    assert_eq!(mg.client.increment(&key, 8, None, None).await.unwrap(), 50);
    assert_eq!(text(mg, &key).await.as_deref(), Some("50"), "decimal text");

    // Decrements stop at 0; memcached rewrites the number in place,
    // padding it with spaces to the old length.
    mg.client.set(&key, "15", None).await.unwrap();
    assert_eq!(incr(mg, &key, -100, None, None).await.unwrap(), 0);
    assert_eq!(text(mg, &key).await.as_deref(), Some("0 "));
    assert_eq!(incr(mg, &key, 5, None, None).await.unwrap(), 5);
    assert_eq!(text(mg, &key).await.as_deref(), Some("5 "));
    assert_eq!(incr(mg, &key, i64::MIN, None, None).await.unwrap(), 0);

    // Increments wrap around at 2^64, as memcached's do.
    mg.client
        .set(&key, u64::MAX.to_string(), None)
        .await
        .unwrap();
    assert_eq!(incr(mg, &key, 2, None, None).await.unwrap(), 1);
    assert_eq!(text(mg, &key).await, Some(format!("1{:19}", "")));
    assert_eq!(incr(mg, &key, i64::MAX, None, None).await.unwrap(), 1 << 63);

    // A missing key without initial_value is NOT_FOUND, and nothing is
    // created.
    let missing = unique("ctr-missing");
    let err = incr(mg, &missing, 1, None, Some(60)).await.unwrap_err();
    assert_eq!(err.code(), Code::NotFound, "{err:?}");
    assert!(err.message().contains("initial_value"), "{err:?}");
    assert_eq!(mg.client.get(&missing).await.unwrap(), None);

    // Invalid keys are refused like everywhere else.
    let err = incr(mg, "a b", 1, Some(0), None).await.unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
}

async fn check_increment_create(mg: &Memgate) {
    let key = unique("ctr-new");
    // Created holding initial_value, returned as is (delta not applied).
    assert_eq!(incr(mg, &key, 5, Some(10), Some(0)).await.unwrap(), 10);
    assert_eq!(text(mg, &key).await.as_deref(), Some("10"));
    assert_eq!(incr(mg, &key, 5, Some(10), Some(0)).await.unwrap(), 15);
    assert_eq!(incr(mg, &key, -20, Some(10), Some(0)).await.unwrap(), 0);

    // The TTL applies to the counter it creates.
    let short = unique("ctr-ttl");
    assert_eq!(incr(mg, &short, 1, Some(7), Some(1)).await.unwrap(), 7);
    assert_eq!(text(mg, &short).await.as_deref(), Some("7"));
    let gone = eventually(Duration::from_secs(5), || async {
        mg.client.get(&short).await.unwrap().is_none()
    })
    .await;
    assert!(
        gone,
        "a counter created with a 1-second TTL was still there after 5 s"
    );
}

async fn check_increment_non_numeric(mg: &Memgate) {
    let (word, number) = (unique("ctr-word"), unique("ctr-num"));
    mg.client.set(&word, "abc", None).await.unwrap();
    mg.client.set(&number, "1", None).await.unwrap();
    let empty = unique("ctr-empty");
    mg.client.set(&empty, "", None).await.unwrap();
    for _ in 0..3 {
        for key in [&word, &empty] {
            let err = incr(mg, key, 1, Some(0), None).await.unwrap_err();
            assert_eq!(err.code(), Code::FailedPrecondition, "{err:?}");
            assert!(err.message().contains("not a decimal number"), "{err:?}");
        }
        // The next calls (on the same connection to the shard) still get
        // their own replies.
        let before: u64 = text(mg, &number).await.unwrap().trim().parse().unwrap();
        assert_eq!(incr(mg, &number, 1, None, None).await.unwrap(), before + 1);
    }
    assert_eq!(text(mg, &word).await.as_deref(), Some("abc"), "unchanged");
    assert_eq!(text(mg, &number).await.as_deref(), Some("4"));
    // ... and no connection was closed over it.
    let stats = mg.raw.clone().stats(pb::StatsRequest {}).await.unwrap();
    for shard in stats.into_inner().shards {
        let counters = shard.counters.unwrap_or_default();
        assert_eq!(
            (counters.protocol_errors, counters.reconnects),
            (0, 0),
            "{}",
            shard.address
        );
    }
}

async fn check_touch(mg: &Memgate) {
    let c = &mg.client;
    let missing = unique("touch-missing");
    assert!(!c.touch(&missing, Duration::from_secs(60)).await.unwrap());
    assert_eq!(
        c.get(&missing).await.unwrap(),
        None,
        "touch creates nothing"
    );

    // Shortening: a key that never expired expires after its touch.
    let key = unique("touch");
    c.set(&key, "kept", Some(Duration::ZERO)).await.unwrap();
    assert!(c.touch(&key, Duration::from_secs(1)).await.unwrap());
    assert_eq!(c.get(&key).await.unwrap().as_deref(), Some(&b"kept"[..]));
    let gone = eventually(Duration::from_secs(5), || async {
        c.get(&key).await.unwrap().is_none()
    })
    .await;
    assert!(gone, "touched to a 1-second TTL, still there after 5 s");
    assert!(
        !c.touch(&key, Duration::from_secs(60)).await.unwrap(),
        "expired"
    );

    // Lengthening: a 1-second item touched to never expire outlives its
    // first TTL (the wait is that expiry time itself, and memcached's
    // clock ticks in whole seconds).
    let key = unique("touch-long");
    c.set(&key, "stays", Some(Duration::from_secs(1)))
        .await
        .unwrap();
    assert!(c.touch(&key, Duration::ZERO).await.unwrap());
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert_eq!(c.get(&key).await.unwrap().as_deref(), Some(&b"stays"[..]));
}

// The extended API. These tests drive memgate through the raw generated
// stub (an independent gRPC client), not the Rust client's wrappers.

fn set_req(key: &str, value: &str, condition: pb::SetCondition, cas: u64) -> pb::SetRequest {
    pb::SetRequest {
        key: key.into(),
        value: value.to_owned().into(),
        ttl_seconds: Some(0),
        condition: condition as i32,
        cas,
    }
}

async fn set_if(
    mg: &Memgate,
    key: &str,
    value: &str,
    cond: pb::SetCondition,
    cas: u64,
) -> pb::SetResponse {
    let mut raw = mg.raw.clone();
    raw.set(set_req(key, value, cond, cas))
        .await
        .unwrap()
        .into_inner()
}

async fn get_with(
    mg: &Memgate,
    key: &str,
    touch: Option<u32>,
    lease: Option<u32>,
) -> pb::GetResponse {
    let mut raw = mg.raw.clone();
    raw.get(pb::GetRequest {
        key: key.into(),
        touch_ttl_seconds: touch,
        lease_ttl_seconds: lease,
    })
    .await
    .unwrap()
    .into_inner()
}

async fn invalidate(mg: &Memgate, key: &str) -> bool {
    let mut raw = mg.raw.clone();
    raw.delete(pb::DeleteRequest {
        key: key.into(),
        invalidate: true,
    })
    .await
    .unwrap()
    .into_inner()
    .deleted
}

async fn check_conditions(mg: &Memgate) {
    use pb::SetCondition::{Absent, CasMatch, Present};
    let key = unique("cond");
    // PRESENT on a missing key: nothing written.
    assert!(!set_if(mg, &key, "r", Present, 0).await.stored);
    assert!(!get_with(mg, &key, None, None).await.found);
    // ABSENT on a missing key: stored, with a token; again: refused.
    let added = set_if(mg, &key, "a", Absent, 0).await;
    assert!(added.stored && added.cas != 0, "{added:?}");
    let refused = set_if(mg, &key, "b", Absent, 0).await;
    assert_eq!(
        refused,
        pb::SetResponse {
            stored: false,
            cas: 0
        }
    );
    let got = get_with(mg, &key, None, None).await;
    assert_eq!((got.value.as_ref(), got.cas), (&b"a"[..], added.cas));
    // PRESENT on an existing key: stored.
    let replaced = set_if(mg, &key, "r", Present, 0).await;
    assert!(replaced.stored && replaced.cas != added.cas, "{replaced:?}");
    // CAS_MATCH: an old token is refused, the current one stores.
    assert!(!set_if(mg, &key, "old", CasMatch, added.cas).await.stored);
    assert!(!set_if(mg, &key, "zero", CasMatch, 0).await.stored);
    let swapped = set_if(mg, &key, "swapped", CasMatch, replaced.cas).await;
    assert!(swapped.stored && swapped.cas != replaced.cas, "{swapped:?}");
    let got = get_with(mg, &key, None, None).await;
    assert_eq!(
        (got.value.as_ref(), got.cas),
        (&b"swapped"[..], swapped.cas)
    );
    // An unconditional Set stores and reports its token.
    let set = set_if(mg, &key, "plain", pb::SetCondition::Unspecified, 0).await;
    assert!(
        set.stored && set.cas != 0 && set.cas != swapped.cas,
        "{set:?}"
    );
    // CAS_MATCH on a missing key never matches.
    let missing = unique("cond-missing");
    assert!(!set_if(mg, &missing, "x", CasMatch, set.cas).await.stored);
    assert!(!get_with(mg, &missing, None, None).await.found);
}

async fn check_cas_race(mg: &Memgate) {
    let key = unique("race");
    let first = set_if(mg, &key, "start", pb::SetCondition::Unspecified, 0).await;
    let token = get_with(mg, &key, None, None).await.cas;
    assert_eq!(token, first.cas);
    let key = &key;
    let writers = (0..10).map(|i| async move {
        let value = format!("writer-{i}");
        (
            value.clone(),
            set_if(mg, key, &value, pb::SetCondition::CasMatch, token).await,
        )
    });
    let outcomes = futures::future::join_all(writers).await;
    let winners: Vec<_> = outcomes.iter().filter(|(_, r)| r.stored).collect();
    assert_eq!(winners.len(), 1, "{outcomes:?}");
    let got = get_with(mg, key, None, None).await;
    assert_eq!(got.value.as_ref(), winners[0].0.as_bytes());
    assert_eq!(got.cas, winners[0].1.cas);
}

async fn check_get_metadata(mg: &Memgate) {
    let c = &mg.client;
    let key = unique("meta");
    let miss = get_with(mg, &key, None, None).await;
    assert_eq!(miss, pb::GetResponse::default(), "a miss carries nothing");
    c.set(&key, "v", Some(Duration::from_secs(100)))
        .await
        .unwrap();
    let got = get_with(mg, &key, None, None).await;
    assert!(got.found && got.cas != 0 && !got.stale, "{got:?}");
    assert_eq!(got.lease, pb::LeaseState::Unspecified as i32);
    let ttl = got.ttl_remaining_seconds.expect("a TTL");
    assert!((98..=100).contains(&ttl), "ttl {ttl} of a 100 s item");
    c.set(&key, "v", Some(Duration::ZERO)).await.unwrap();
    let got = get_with(mg, &key, None, None).await;
    assert_eq!(got.ttl_remaining_seconds, None, "never expires");
}

async fn check_get_and_touch(mg: &Memgate) {
    let c = &mg.client;
    let key = unique("gat");
    // A miss touches nothing and creates nothing.
    assert!(!get_with(mg, &key, Some(60), None).await.found);
    assert!(!get_with(mg, &key, None, None).await.found);
    c.set(&key, "v", Some(Duration::ZERO)).await.unwrap();
    let got = get_with(mg, &key, Some(300), None).await;
    assert_eq!(got.value.as_ref(), b"v");
    let ttl = got.ttl_remaining_seconds.expect("the new TTL");
    assert!(
        (298..=300).contains(&ttl),
        "ttl {ttl} after touching to 300 s"
    );
    let ttl = get_with(mg, &key, None, None).await.ttl_remaining_seconds;
    assert!(
        ttl.is_some_and(|t| (298..=300).contains(&t)),
        "read back: {ttl:?}"
    );
    // Touched to 1 second: it expires.
    assert!(get_with(mg, &key, Some(1), None).await.found);
    let gone = eventually(Duration::from_secs(5), || async {
        !get_with(mg, &key, None, None).await.found
    })
    .await;
    assert!(gone, "get-and-touched to 1 s, still there after 5 s");
}

async fn check_leases(mg: &Memgate) {
    use pb::LeaseState::{Held, Unspecified, Won};
    let key = unique("lease");
    let won = get_with(mg, &key, None, Some(30)).await;
    assert!(!won.found && won.value.is_empty() && !won.stale, "{won:?}");
    assert_eq!(won.lease, Won as i32);
    assert_ne!(won.cas, 0, "the placeholder's token");
    let held = get_with(mg, &key, None, Some(30)).await;
    assert!(!held.found, "{held:?}");
    assert_eq!(held.lease, Held as i32);
    // The placeholder is no value to a plain Get, but it exists for add.
    assert_eq!(
        get_with(mg, &key, None, None).await,
        pb::GetResponse::default()
    );
    assert!(
        !set_if(mg, &key, "late", pb::SetCondition::Absent, 0)
            .await
            .stored
    );
    // The winner fills it (here with CAS_MATCH on the placeholder's token).
    let filled = set_if(mg, &key, "filled", pb::SetCondition::CasMatch, won.cas).await;
    assert!(filled.stored, "{filled:?}");
    let got = get_with(mg, &key, None, Some(30)).await;
    assert_eq!(got.value.as_ref(), b"filled");
    assert_eq!(
        (got.found, got.lease, got.stale),
        (true, Unspecified as i32, false)
    );

    // A placeholder nobody fills expires with its lease, and the next
    // reader wins again.
    let key = unique("lease-expiry");
    assert_eq!(get_with(mg, &key, None, Some(1)).await.lease, Won as i32);
    let again = eventually(Duration::from_secs(5), || async {
        get_with(mg, &key, None, Some(1)).await.lease == Won as i32
    })
    .await;
    assert!(again, "a 1 s lease still held after 5 s");
}

async fn check_lease_race(mg: &Memgate) {
    let key = unique("lease-race");
    let readers = (0..20).map(|_| get_with(mg, &key, None, Some(30)));
    let replies = futures::future::join_all(readers).await;
    let won = replies
        .iter()
        .filter(|r| r.lease == pb::LeaseState::Won as i32)
        .count();
    let held = replies
        .iter()
        .filter(|r| r.lease == pb::LeaseState::Held as i32)
        .count();
    assert_eq!((won, held), (1, 19), "{replies:?}");
    assert!(replies.iter().all(|r| !r.found));
}

async fn check_invalidation(mg: &Memgate) {
    use pb::LeaseState::{Held, Unspecified, Won};
    let c = &mg.client;
    assert!(
        !invalidate(mg, &unique("inv-missing")).await,
        "nothing to invalidate"
    );
    let key = unique("inv");
    c.set(&key, "old", Some(Duration::ZERO)).await.unwrap();
    assert!(invalidate(mg, &key).await);
    // Plain reads see the old value, marked stale, and take no lease
    // (memcached hands one to any reader; memgate gives it back).
    for _ in 0..3 {
        let got = get_with(mg, &key, None, None).await;
        assert_eq!(
            (got.found, got.stale, got.lease),
            (true, true, Unspecified as i32),
            "{got:?}"
        );
        assert_eq!(got.value.as_ref(), b"old");
        let ttl = got.ttl_remaining_seconds.expect("stale items expire");
        assert!(
            (1..=30).contains(&ttl),
            "stale for --stale-ttl (30 s): {ttl}"
        );
    }
    // The first reader with a lease refreshes; the others keep the value.
    let first = get_with(mg, &key, None, Some(10)).await;
    assert_eq!(
        (first.found, first.stale, first.lease),
        (true, true, Won as i32),
        "{first:?}"
    );
    assert_eq!(first.value.as_ref(), b"old");
    let second = get_with(mg, &key, None, Some(10)).await;
    assert_eq!(
        (second.found, second.stale, second.lease),
        (true, true, Held as i32),
        "{second:?}"
    );
    assert_eq!(second.value.as_ref(), b"old");
    // The refresh clears the stale state.
    c.set(&key, "new", Some(Duration::ZERO)).await.unwrap();
    let got = get_with(mg, &key, None, Some(10)).await;
    assert_eq!(
        (got.found, got.stale, got.lease),
        (true, false, Unspecified as i32),
        "{got:?}"
    );
    assert_eq!(got.value.as_ref(), b"new");
    assert_eq!(got.ttl_remaining_seconds, None);
    // BatchGet reads a stale item as found.
    assert!(invalidate(mg, &key).await);
    let batch = c.get_many(vec![key.clone()]).await.unwrap();
    assert_eq!(batch[0].value.as_deref(), Some(&b"new"[..]), "{batch:?}");
    assert_eq!(
        get_with(mg, &key, None, Some(10)).await.lease,
        Won as i32,
        "the batch read took no lease"
    );
}

async fn check_batch_conditions(mg: &Memgate) {
    use pb::SetCondition::{Absent, CasMatch, Present};
    let taken = unique("bc-taken");
    let fresh = unique("bc-fresh");
    let missing = unique("bc-missing");
    let swap = unique("bc-swap");
    mg.client.set(&taken, "t", None).await.unwrap();
    let token = set_if(mg, &swap, "s", pb::SetCondition::Unspecified, 0)
        .await
        .cas;
    let items = vec![
        set_req(&taken, "x", Absent, 0),
        set_req(&fresh, "x", Absent, 0),
        set_req(&missing, "x", Present, 0),
        set_req(&swap, "x", CasMatch, token + 1000),
    ];
    let mut raw = mg.raw.clone();
    let resp = raw
        .batch_set(pb::BatchSetRequest {
            items: items.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(resp.stored, 1, "{resp:?}");
    let mut failed: Vec<(&str, i32)> = resp
        .errors
        .iter()
        .map(|e| (e.key.as_str(), e.code))
        .collect();
    failed.sort();
    let mut want = vec![
        (taken.as_str(), 9),
        (missing.as_str(), 9),
        (swap.as_str(), 9),
    ];
    want.sort();
    assert_eq!(failed, want, "{resp:?}");
    assert!(
        resp.errors.iter().all(|e| e.message.contains("not stored")),
        "{resp:?}"
    );
    assert_eq!(get_with(mg, &taken, None, None).await.value.as_ref(), b"t");
    assert_eq!(get_with(mg, &fresh, None, None).await.value.as_ref(), b"x");
    assert!(!get_with(mg, &missing, None, None).await.found);
    assert_eq!(get_with(mg, &swap, None, None).await.value.as_ref(), b"s");

    // The stream reports the same per item.
    let streamed = raw
        .batch_set_stream(futures::stream::iter(items))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(streamed.stored, 0, "fresh exists now: {streamed:?}");
    assert_eq!(streamed.errors.len(), 4, "{streamed:?}");
    assert!(streamed.errors.iter().all(|e| e.code == 9), "{streamed:?}");
}

async fn check_option_rules(mg: &Memgate) {
    let mut raw = mg.raw.clone();
    let key = unique("rules");
    let err = raw
        .get(pb::GetRequest {
            key: key.clone(),
            lease_ttl_seconds: Some(0),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument, "{err:?}");
    assert!(err.message().contains("lease_ttl_seconds"), "{err:?}");
    let err = raw
        .set(pb::SetRequest {
            key: key.clone(),
            condition: 7,
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument, "{err:?}");
    assert!(err.message().contains("condition"), "{err:?}");

    // Streams read and delete plainly: options are refused per key.
    let requests = vec![
        pb::GetRequest {
            key: key.clone(),
            lease_ttl_seconds: Some(5),
            ..Default::default()
        },
        pb::GetRequest {
            key: key.clone(),
            ..Default::default()
        },
    ];
    let results: Vec<pb::GetResult> = raw
        .batch_get_stream(futures::stream::iter(requests))
        .await
        .unwrap()
        .into_inner()
        .map(|r| r.unwrap())
        .collect()
        .await;
    assert_eq!(results.len(), 2);
    assert_eq!(
        results[0].error_code,
        Code::InvalidArgument as i32,
        "{results:?}"
    );
    assert!(
        results[0].error.contains("lease_ttl_seconds"),
        "{results:?}"
    );
    assert_eq!(results[1].error_code, 0, "{results:?}");
    assert!(
        !get_with(mg, &key, None, None).await.found,
        "the refused lease created no placeholder"
    );
    let deleted = raw
        .batch_delete_stream(futures::stream::iter(vec![pb::DeleteRequest {
            key,
            invalidate: true,
        }]))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(deleted.errors.len(), 1, "{deleted:?}");
    assert_eq!(deleted.errors[0].code, Code::InvalidArgument as i32);
}
