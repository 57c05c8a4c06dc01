//! The Rust client (memgate-client) end to end: every operation, typed JSON
//! values and error classification, against a memgate over 3 real
//! memcached shards.

mod common;

use std::time::Duration;

use common::{Memgate, eventually, unique};
use futures::StreamExt;
use memgate_client::{Client, Error, Item, RetryPolicy, ServingStatus};
use serde::{Deserialize, Serialize};

async fn setup() -> (Memgate, Vec<common::Memcached>) {
    let pool = common::pool(3);
    (Memgate::over(&pool).await, pool)
}

async fn connect(mg: &Memgate) -> Client {
    Client::connect(format!("http://{}", mg.addr))
        .await
        .unwrap()
}

#[derive(Debug, PartialEq, Serialize, Deserialize)]
struct Profile {
    name: String,
    visits: u32,
    tags: Vec<String>,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn single_key_operations() {
    let (mg, _pool) = setup().await;
    let c = connect(&mg).await;
    let key = unique("rs");
    assert_eq!(c.get(&key).await.unwrap(), None);
    c.set(&key, &b"\0bin\r\n"[..], None).await.unwrap();
    assert_eq!(
        c.get(&key).await.unwrap().as_deref(),
        Some(&b"\0bin\r\n"[..])
    );
    assert!(c.delete(&key).await.unwrap());
    assert!(!c.delete(&key).await.unwrap());

    c.set(&key, "brief", Some(Duration::from_millis(300)))
        .await
        .unwrap();
    assert!(
        eventually(Duration::from_secs(5), || async {
            c.get(&key).await.unwrap().is_none()
        })
        .await,
        "a sub-second TTL rounds up to 1 s, not to forever"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn typed_json_values() {
    let (mg, _pool) = setup().await;
    let c = connect(&mg).await;
    let key = unique("profile");
    let p = Profile {
        name: "Ada".into(),
        visits: 3,
        tags: vec!["admin".into()],
    };
    c.set_json(&key, &p, None).await.unwrap();
    assert_eq!(c.get_json::<Profile>(&key).await.unwrap(), Some(p));
    assert_eq!(c.get_json::<Profile>(&unique("none")).await.unwrap(), None);

    c.set(&key, "not json", None).await.unwrap();
    let err = c.get_json::<Profile>(&key).await.unwrap_err();
    assert!(matches!(err, Error::Decode { .. }), "{err:?}");
    assert!(err.to_string().contains(&key), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batches_and_list() {
    let (mg, _pool) = setup().await;
    let c = connect(&mg).await;
    let prefix = unique("rsb");
    let keys: Vec<String> = (0..40).map(|i| format!("{prefix}:{i:02}")).collect();
    let outcome = c
        .set_many(keys.iter().map(|k| Item::new(k.clone(), k.clone())))
        .await
        .unwrap();
    assert_eq!(outcome.count, 40);
    assert!(outcome.errors.is_empty());

    let mut ask = keys.clone();
    ask.push(format!("{prefix}:missing"));
    let got = c.get_many(ask.clone()).await.unwrap();
    assert_eq!(got.iter().map(|l| l.key.clone()).collect::<Vec<_>>(), ask);
    assert!(
        got[..40]
            .iter()
            .all(|l| l.value.as_deref() == Some(l.key.as_bytes()))
    );
    assert_eq!(got[40].value, None);

    assert_eq!(c.list(&prefix, 0).await.unwrap(), keys);
    assert_eq!(c.list(&prefix, 3).await.unwrap(), keys[..3].to_vec());

    let del = c.delete_many(keys[..10].to_vec()).await.unwrap();
    assert_eq!(del.count, 10);
    assert_eq!(c.list(&prefix, 0).await.unwrap(), keys[10..].to_vec());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streams() {
    let (mg, _pool) = setup().await;
    let c = connect(&mg).await;
    let prefix = unique("rss");
    let n = 1500;
    let stored = c
        .set_stream(tokio_stream::iter((0..n).map({
            let prefix = prefix.clone();
            move |i| Item::new(format!("{prefix}:{i}"), format!("{i}"))
        })))
        .await
        .unwrap();
    assert_eq!(stored.count, n);

    let keys = (0..n).map({
        let prefix = prefix.clone();
        move |i| format!("{prefix}:{i}")
    });
    let results: Vec<_> = c
        .get_stream(tokio_stream::iter(keys.clone()))
        .await
        .unwrap()
        .collect()
        .await;
    assert_eq!(results.len(), n as usize);
    for (i, r) in results.into_iter().enumerate() {
        let r = r.unwrap();
        assert_eq!(r.key, format!("{prefix}:{i}"));
        assert_eq!(r.value.as_deref(), Some(i.to_string().as_bytes()));
    }

    let deleted = c.delete_stream(tokio_stream::iter(keys)).await.unwrap();
    assert_eq!(deleted.count, n);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn errors_keep_their_grpc_code() {
    let (mg, mut pool) = setup().await;
    let c = connect(&mg).await;
    let err = c.set("bad key", "x", None).await.unwrap_err();
    assert!(err.is_invalid_argument(), "{err}");
    assert!(err.to_string().contains("spaces"), "{err}");

    // A key whose shard is down: UNAVAILABLE, after bounded retries.
    for m in &mut pool {
        m.kill();
    }
    let lookups = c.get_many([unique("down")]).await.unwrap();
    let failure = lookups[0].error.as_ref().expect("a per-key error");
    assert_eq!(failure.code, tonic::Code::Unavailable, "{failure:?}");
    let started = std::time::Instant::now();
    let err = c.get(&unique("down")).await.unwrap_err();
    assert!(err.is_unavailable(), "{err}");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "retries are bounded"
    );

    // Nothing listening at all: a connect error that says UNAVAILABLE.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = closed.local_addr().unwrap();
    drop(closed);
    let err = Client::builder(format!("http://{addr}"))
        .retry(RetryPolicy::none())
        .connect()
        .await
        .unwrap_err();
    assert!(err.is_unavailable(), "{err:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deadlines_and_health() {
    let (mg, _pool) = setup().await;
    let c = Client::builder(format!("http://{}", mg.addr))
        .timeout(Duration::from_secs(2))
        .connect()
        .await
        .unwrap();
    assert_eq!(c.health("").await.unwrap(), ServingStatus::Serving);
    assert_eq!(
        c.health("memgate.v1.Cache").await.unwrap(),
        ServingStatus::Serving
    );
    let err = c.health("no.such.Service").await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::NotFound);
    // A per-clone deadline still lets quick calls through.
    let quick = c.with_timeout(Duration::from_millis(500));
    quick.set(&unique("quick"), "x", None).await.unwrap();
}
