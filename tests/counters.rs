//! Increment and Touch where only memcached can tell: the TTL memcached
//! itself reports after a Touch or a counter's creation (`mg <key> t`), the
//! Rust client's error classification, and text-protocol shards (twemproxy),
//! which answer UNIMPLEMENTED. The behaviour shared by every store is in
//! `contract.rs`.

mod common;

use std::time::Duration;

use common::{Memcached, Memgate, unique};
use memgate_api::v1 as pb;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tonic::Code;

/// The remaining TTL memcached reports for `key` (`mg <key> t`): -1 for
/// never, `None` on a miss.
async fn ttl_in_memcached(mc: &Memcached, key: &str) -> Option<i64> {
    let mut stream = BufReader::new(TcpStream::connect(&mc.addr).await.unwrap());
    stream
        .get_mut()
        .write_all(format!("mg {key} t\r\n").as_bytes())
        .await
        .unwrap();
    let mut line = String::new();
    stream.read_line(&mut line).await.unwrap();
    let line = line.trim_end();
    if line == "EN" {
        return None;
    }
    let ttl = line
        .strip_prefix("HD t")
        .unwrap_or_else(|| panic!("unexpected reply {line:?}"));
    Some(ttl.parse().unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn touch_and_created_counters_set_the_ttl_memcached_keeps() {
    let mc = Memcached::spawn();
    let mg = Memgate::over(std::slice::from_ref(&mc)).await;
    let c = &mg.client;

    let key = unique("touch");
    c.set(&key, "v", Some(Duration::ZERO)).await.unwrap();
    assert_eq!(ttl_in_memcached(&mc, &key).await, Some(-1));
    assert!(c.touch(&key, Duration::from_secs(300)).await.unwrap());
    let ttl = ttl_in_memcached(&mc, &key).await.unwrap();
    assert!(
        (298..=300).contains(&ttl),
        "ttl {ttl} after a touch to 300 s"
    );
    assert!(c.touch(&key, Duration::ZERO).await.unwrap());
    assert_eq!(ttl_in_memcached(&mc, &key).await, Some(-1), "0: never");
    // Over 30 days: sent as an absolute time, not read as 1970.
    assert!(
        c.touch(&key, Duration::from_secs(40 * 86400))
            .await
            .unwrap()
    );
    let ttl = ttl_in_memcached(&mc, &key).await.unwrap();
    assert!(ttl > 39 * 86400, "ttl {ttl} after a touch to 40 days");
    assert_eq!(mc.direct_get(&key).await.as_deref(), Some(&b"v"[..]));

    // A counter created from initial_value gets the TTL; one that exists
    // keeps its own.
    let counter = unique("ctr");
    assert_eq!(
        c.increment(&counter, 1, Some(5), Some(Duration::from_secs(120)))
            .await
            .unwrap(),
        5
    );
    let ttl = ttl_in_memcached(&mc, &counter).await.unwrap();
    assert!((118..=120).contains(&ttl), "ttl {ttl} of a new counter");
    assert_eq!(
        c.increment(&counter, 1, Some(5), Some(Duration::ZERO))
            .await
            .unwrap(),
        6
    );
    let ttl = ttl_in_memcached(&mc, &counter).await.unwrap();
    assert!((118..=120).contains(&ttl), "ttl {ttl} after an increment");
    assert_eq!(mc.direct_get(&counter).await.as_deref(), Some(&b"6"[..]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_rust_client_reports_counter_errors_by_code_and_reason() {
    let mc = Memcached::spawn();
    let mg = Memgate::over(std::slice::from_ref(&mc)).await;
    let c = &mg.client;
    let err = c
        .increment(&unique("missing"), 1, None, None)
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::NotFound, "{err}");
    assert_eq!(err.reason().as_deref(), Some("KEY_NOT_FOUND"));
    let word = unique("word");
    c.set(&word, "twelve", None).await.unwrap();
    let err = c.increment(&word, 1, None, None).await.unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition, "{err}");
    assert_eq!(err.reason().as_deref(), Some("NOT_A_NUMBER"));
    assert_eq!(
        c.increment(&unique("new"), -3, Some(9), None)
            .await
            .unwrap(),
        9
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn text_protocol_shards_answer_unimplemented() {
    let mc = Memcached::spawn();
    let dir = tempfile::tempdir().unwrap();
    let proxy = common::twemproxy(&[(mc.addr.as_str(), 1)], "fnv1a_64", dir.path());
    let addr = proxy.addr.clone();
    let mg = Memgate::start(common::config_for_addrs(std::slice::from_ref(&addr))).await;
    let key = unique("text-ctr");
    mg.client.set(&key, "1", None).await.unwrap();
    let err = mg
        .raw
        .clone()
        .increment(pb::IncrementRequest {
            key: key.clone(),
            delta: 1,
            initial_value: None,
            ttl_seconds: None,
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::Unimplemented, "{err:?}");
    assert!(err.message().contains("text protocol"), "{err:?}");
    let err = mg
        .raw
        .clone()
        .touch(pb::TouchRequest {
            key: key.clone(),
            ttl_seconds: 60,
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::Unimplemented, "{err:?}");
    let details = tonic_types::StatusExt::get_error_details(&err);
    assert_eq!(details.error_info().unwrap().reason, "SHARD_UNSUPPORTED");
    // The extended API's meta-only calls: a conditional Set, an
    // invalidating Delete, a Get with a lease or a touch.
    let mut raw = mg.raw.clone();
    let conditional = raw.set(pb::SetRequest {
        key: key.clone(),
        value: "2".into(),
        condition: pb::SetCondition::Absent as i32,
        ..Default::default()
    });
    let err = conditional.await.unwrap_err();
    assert_eq!(err.code(), Code::Unimplemented, "{err:?}");
    let mut raw = mg.raw.clone();
    let invalidate = raw.delete(pb::DeleteRequest {
        key: key.clone(),
        invalidate: true,
    });
    let err = invalidate.await.unwrap_err();
    assert_eq!(err.code(), Code::Unimplemented, "{err:?}");
    for (touch, lease) in [(Some(60), None), (None, Some(10))] {
        let mut raw = mg.raw.clone();
        let get = raw.get(pb::GetRequest {
            key: key.clone(),
            touch_ttl_seconds: touch,
            lease_ttl_seconds: lease,
        });
        let err = get.await.unwrap_err();
        assert_eq!(err.code(), Code::Unimplemented, "{err:?}");
    }
    // A plain Get works, without a CAS token or TTL (text `get` has none).
    let mut raw = mg.raw.clone();
    let got = raw
        .get(pb::GetRequest {
            key: key.clone(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        (got.found, got.cas, got.ttl_remaining_seconds),
        (true, 0, None)
    );
    // Nothing was changed, and the shard still serves.
    assert_eq!(
        mg.client.get(&key).await.unwrap().as_deref(),
        Some(&b"1"[..])
    );
    drop(proxy);
}
