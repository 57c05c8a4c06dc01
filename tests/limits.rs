//! Size limits end to end: a request or response over --max-message-bytes
//! is RESOURCE_EXHAUSTED with a message naming the flag, and the server
//! keeps serving afterwards.

mod common;

use common::{Memgate, unique};
use memgate_api::v1 as pb;
use memgate_server::config::Config;
use tonic::Code;

async fn small_limits() -> Memgate {
    let mut config = Config::embedded("127.0.0.1:0".parse().unwrap());
    config.limits.max_value_bytes = 100 * 1024;
    config.limits.max_message_bytes = 200 * 1024;
    Memgate::start(config).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_oversized_request_is_resource_exhausted() {
    let mg = small_limits().await;
    let items = (0..4)
        .map(|i| pb::SetRequest {
            key: format!("big{i}"),
            value: vec![0u8; 90 * 1024].into(),
            ttl_seconds: None,
            ..Default::default()
        })
        .collect();
    let err = mg
        .raw
        .clone()
        .batch_set(pb::BatchSetRequest { items })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::ResourceExhausted, "{err:?}");
    assert!(
        err.message().contains("--max-message-bytes"),
        "{}",
        err.message()
    );
    let details = tonic_types::StatusExt::get_error_details(&err);
    assert_eq!(details.error_info().unwrap().reason, "REQUEST_TOO_LARGE");
    // Waiting does not make it fit.
    assert!(details.retry_info().is_none());
    // Still serving.
    mg.client.set("after", "ok", None).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_oversized_response_is_resource_exhausted() {
    let mg = small_limits().await;
    let keys: Vec<String> = (0..4).map(|i| unique(&format!("resp{i}"))).collect();
    for k in &keys {
        mg.client.set(k, vec![1u8; 90 * 1024], None).await.unwrap();
    }
    let err = mg
        .raw
        .clone()
        .batch_get(pb::BatchGetRequest { keys: keys.clone() })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::ResourceExhausted, "{err:?}");
    assert!(
        err.message().contains("BatchGetStream"),
        "{}",
        err.message()
    );
    // Fewer keys per call fit.
    let n = mg
        .client
        .get_many(keys[..2].to_vec())
        .await
        .unwrap()
        .iter()
        .filter(|l| l.value.is_some())
        .count();
    assert_eq!(n, 2);
}
