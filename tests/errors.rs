//! Rich error details end to end: every error status carries
//! `google.rpc.ErrorInfo` with a stable reason, `BadRequest` names the field
//! and the rule a request broke, and `RetryInfo` says when to retry an
//! UNAVAILABLE — read back from real calls, through the generated stub and
//! through the Rust client.

mod common;

use std::time::Duration;

use common::{Memcached, Memgate, config_for_addrs};
use memgate_api::v1 as pb;
use memgate_server::config::{Backend, Config};
use tonic::{Code, Status};
use tonic_types::{ErrorDetails, StatusExt};

/// The details of `status`, after checking its ErrorInfo's reason and domain.
fn details(status: &Status, code: Code, reason: &str) -> ErrorDetails {
    assert_eq!(status.code(), code, "{status:?}");
    let details = status.check_error_details().expect("details decode");
    let info = details.error_info().expect("an ErrorInfo");
    assert_eq!(info.reason, reason, "{status:?}");
    assert_eq!(info.domain, "memgate.v1");
    details
}

/// The one field violation of a BadRequest: (field, description).
fn violation(details: &ErrorDetails) -> (String, String) {
    let violations = &details
        .bad_request()
        .expect("a BadRequest")
        .field_violations;
    assert_eq!(violations.len(), 1, "{violations:?}");
    (
        violations[0].field.clone(),
        violations[0].description.clone(),
    )
}

async fn small_limits() -> Memgate {
    let mut config = Config::embedded("127.0.0.1:0".parse().unwrap());
    config.limits.max_value_bytes = 1024;
    config.limits.max_batch_keys = 4;
    Memgate::start(config).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_invalid_key_names_its_field_and_rule() {
    let mg = small_limits().await;
    let mut raw = mg.raw.clone();

    let err = raw
        .get(pb::GetRequest {
            key: "a b".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    let d = details(&err, Code::InvalidArgument, "KEY_INVALID");
    let (field, rule) = violation(&d);
    assert_eq!(field, "key");
    assert!(rule.contains("must not contain spaces"), "{rule}");
    let meta = &d.error_info().unwrap().metadata;
    assert_eq!(meta["key"], "a b");
    assert_eq!(meta["field"], "key");
    assert!(d.retry_info().is_none(), "a bad key never gets better");

    // In a batch, the path says which one.
    let err = raw
        .batch_get(pb::BatchGetRequest {
            keys: vec!["fine".into(), "also-fine".into(), String::new()],
        })
        .await
        .unwrap_err();
    let d = details(&err, Code::InvalidArgument, "KEY_INVALID");
    assert_eq!(
        violation(&d),
        ("keys[2]".into(), "key must not be empty".into())
    );

    // The Rust client exposes the same.
    let err = mg.client.delete(&"k".repeat(251)).await.unwrap_err();
    assert_eq!(err.reason().as_deref(), Some("KEY_INVALID"));
    assert_eq!(err.metadata("field").as_deref(), Some("key"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_value_too_large_names_the_item_and_the_limit() {
    let mg = small_limits().await;
    let item = |key: &str, len: usize| pb::SetRequest {
        key: key.into(),
        value: vec![7u8; len].into(),
        ttl_seconds: None,
        ..Default::default()
    };
    let err = mg
        .raw
        .clone()
        .batch_set(pb::BatchSetRequest {
            items: vec![item("small", 10), item("big", 1025)],
        })
        .await
        .unwrap_err();
    let d = details(&err, Code::InvalidArgument, "VALUE_TOO_LARGE");
    let (field, rule) = violation(&d);
    assert_eq!(field, "items[1].value");
    assert!(rule.contains("at most 1024 bytes"), "{rule}");
    let meta = &d.error_info().unwrap().metadata;
    assert_eq!(meta["key"], "big");
    assert_eq!(meta["size"], "1025");
    assert_eq!(meta["max_bytes"], "1024");
    assert_eq!(meta["limit"], "--max-value-bytes");

    let err = mg
        .client
        .set("big", vec![0u8; 2000], None)
        .await
        .unwrap_err();
    assert_eq!(err.reason().as_deref(), Some("VALUE_TOO_LARGE"));
    assert_eq!(err.metadata("field").as_deref(), Some("value"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn too_many_keys_names_the_batch_field() {
    let mg = small_limits().await;
    let keys: Vec<String> = (0..5).map(|i| format!("k{i}")).collect();
    let err = mg
        .raw
        .clone()
        .batch_delete(pb::BatchDeleteRequest { keys })
        .await
        .unwrap_err();
    let d = details(&err, Code::InvalidArgument, "TOO_MANY_KEYS");
    let (field, rule) = violation(&d);
    assert_eq!(field, "keys");
    assert!(rule.contains("at most 4"), "{rule}");
    let meta = &d.error_info().unwrap().metadata;
    assert_eq!((meta["count"].as_str(), meta["max"].as_str()), ("5", "4"));
}

/// A config over one memcached that no longer listens: connections to it
/// are refused.
fn dead_shard(failure_limit: u32, retry_timeout: Duration) -> (Config, String) {
    let mut m = Memcached::spawn();
    let addr = m.addr.clone();
    m.kill();
    let mut config = config_for_addrs(std::slice::from_ref(&addr));
    if let Backend::Memcached { pool, .. } = &mut config.backend {
        pool.failure_limit = failure_limit;
        pool.retry_timeout = retry_timeout;
    }
    (config, addr)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_shard_is_named_with_a_retry_delay() {
    // Never marked down: every call tries the shard.
    let (config, addr) = dead_shard(u32::MAX, Duration::from_secs(60));
    let mg = Memgate::start_unready(config).await;
    let err = mg
        .raw
        .clone()
        .get(pb::GetRequest {
            key: "k".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    let d = details(&err, Code::Unavailable, "SHARD_UNAVAILABLE");
    assert_eq!(d.error_info().unwrap().metadata["shard"], addr);
    let delay = d.retry_info().expect("RetryInfo").retry_delay.unwrap();
    assert!(
        delay > Duration::ZERO && delay <= Duration::from_secs(1),
        "{delay:?}"
    );
    assert!(d.bad_request().is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_down_shard_says_when_it_is_tried_again() {
    // One failure marks it down; the next trial is a minute away.
    let retry = Duration::from_secs(60);
    let (config, addr) = dead_shard(1, retry);
    let mg = Memgate::start_unready(config).await;
    let mut raw = mg.raw.clone();
    // The first call (or the health probe) fails and marks it down; every
    // call after that fails fast with SHARD_DOWN.
    let _ = raw
        .get(pb::GetRequest {
            key: "k".into(),
            ..Default::default()
        })
        .await;
    let err = raw
        .set(pb::SetRequest {
            key: "k".into(),
            value: "v".into(),
            ttl_seconds: None,
            ..Default::default()
        })
        .await
        .unwrap_err();
    let d = details(&err, Code::Unavailable, "SHARD_DOWN");
    let meta = &d.error_info().unwrap().metadata;
    assert_eq!(meta["shard"], addr);
    assert!(meta["failures"].parse::<u32>().unwrap() >= 1, "{meta:?}");
    let delay = d.retry_info().expect("RetryInfo").retry_delay.unwrap();
    assert!(
        delay <= retry && delay > retry - Duration::from_secs(30),
        "retry in {delay:?}"
    );

    // The Rust client sees it too (its own retries give up: a minute is
    // longer than its backoff).
    let err = mg.client.get("k").await.unwrap_err();
    assert!(err.is_unavailable(), "{err}");
    assert_eq!(err.reason().as_deref(), Some("SHARD_DOWN"));
    assert_eq!(err.metadata("shard").as_deref(), Some(addr.as_str()));
    assert!(err.retry_delay().is_some_and(|d| d <= retry));
}
