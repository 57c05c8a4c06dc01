//! Shutdown: streams have no natural end, so on SIGTERM memgate ends them
//! itself — after the chunk in hand, with UNAVAILABLE telling the client to
//! retry on another replica — while unary calls in flight keep the grace.
//! Every test uses a 10 s grace, so "prompt" cannot be the grace expiring.

mod common;

use std::time::{Duration, Instant};

use common::{Memgate, unique, with_timeout};
use memgate_api::v1 as pb;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Code, Streaming};
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::HealthCheckResponse;
use tonic_health::pb::health_check_response::ServingStatus;

const GRACE: Duration = Duration::from_secs(10);

/// An open Watch of the whole server, past its first (SERVING) answer.
async fn watch(mg: &Memgate) -> Streaming<HealthCheckResponse> {
    let mut watch = mg
        .health
        .clone()
        .watch(HealthCheckRequest {
            service: String::new(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        watch.message().await.unwrap().unwrap().status,
        ServingStatus::Serving as i32
    );
    watch
}

/// The Watch sees NOT_SERVING, then ends with UNAVAILABLE.
async fn watch_ends(mut watch: Streaming<HealthCheckResponse>) {
    let next = tokio::time::timeout(Duration::from_secs(2), watch.message()).await;
    assert!(
        matches!(next, Ok(Ok(Some(ref m))) if m.status == ServingStatus::NotServing as i32),
        "health did not turn NOT_SERVING first: {next:?}"
    );
    let end = tokio::time::timeout(Duration::from_secs(2), watch.message())
        .await
        .expect("the Watch did not end at shutdown");
    match end {
        Err(status) => assert_eq!(status.code(), Code::Unavailable, "{status:?}"),
        Ok(other) => panic!("the Watch went on: {other:?}"),
    }
}

/// The status that ends a stream at shutdown.
fn assert_shutting_down(status: &tonic::Status) {
    assert_eq!(status.code(), Code::Unavailable, "{status:?}");
    assert!(
        status.message().contains("shutting down") && status.message().contains("retry"),
        "{}",
        status.message()
    );
}

/// Promise: an idle BatchGetStream (and a health Watch) end with
/// UNAVAILABLE at shutdown, and memgate exits well within the grace.
#[tokio::test(flavor = "multi_thread")]
async fn an_open_get_stream_ends_unavailable_and_memgate_exits_promptly() {
    let pool = common::pool(1);
    let mut config = common::config_for(&pool);
    config.server.shutdown_grace = GRACE;
    let mut mg = Memgate::start(config).await;
    let key = unique("open");
    mg.client.set(&key, "v", None).await.unwrap();
    let watch = watch(&mg).await;

    let (tx, rx) = mpsc::channel(16);
    let mut results = mg
        .raw
        .clone()
        .batch_get_stream(ReceiverStream::new(rx))
        .await
        .unwrap()
        .into_inner();
    tx.send(pb::GetRequest {
        key: key.clone(),
        ..Default::default()
    })
    .await
    .unwrap();
    let first = results.message().await.unwrap().unwrap();
    assert!(first.found && first.key == key, "{first:?}");

    // The stream is open and idle: the client neither sends nor closes.
    let started = Instant::now();
    mg.begin_shutdown();
    watch_ends(watch).await;
    let end = tokio::time::timeout(Duration::from_secs(15), results.message())
        .await
        .expect("the stream did not end");
    let ended = started.elapsed();
    assert_shutting_down(&end.expect_err("the stream ended without an error"));
    tokio::time::timeout(Duration::from_secs(15), mg.join())
        .await
        .expect("memgate did not exit");
    let exited = started.elapsed();
    println!(
        "idle BatchGetStream + Watch: stream ended after {ended:?}, memgate exited after {exited:?} (grace {GRACE:?})"
    );
    assert!(
        ended < Duration::from_millis(1500),
        "stream ended after {ended:?}"
    );
    assert!(
        exited < Duration::from_secs(2),
        "memgate exited after {exited:?}"
    );
    drop(tx);
}

/// Promise: a BatchGetStream whose client reads slowly ends promptly too:
/// results come in request order, every result before the final status is
/// a real answer, and the keys after it are the ones to resend.
#[tokio::test(flavor = "multi_thread")]
async fn a_slow_reader_gets_the_results_so_far_then_unavailable() {
    let pool = common::pool(1);
    let mut config = common::config_for(&pool);
    config.server.shutdown_grace = GRACE;
    let mut mg = Memgate::start(config).await;
    let prefix = unique("slow");
    // 8 MB of results: more than the client's receive window (2 MiB) and
    // memgate's own buffer, so the stream is held by flow control.
    let keys: Vec<String> = (0..2000).map(|i| format!("{prefix}:{i}")).collect();
    for chunk in keys.chunks(200) {
        let items = chunk
            .iter()
            .map(|k| pb::SetRequest {
                key: k.clone(),
                value: vec![b'v'; 4096].into(),
                ttl_seconds: None,
                ..Default::default()
            })
            .collect();
        let resp = mg
            .raw
            .clone()
            .batch_set(pb::BatchSetRequest { items })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(resp.stored, 200);
    }

    let (tx, rx) = mpsc::channel(64);
    let sender = {
        let keys = keys.clone();
        tokio::spawn(async move {
            for key in keys {
                if tx
                    .send(pb::GetRequest {
                        key,
                        ..Default::default()
                    })
                    .await
                    .is_err()
                {
                    return;
                }
            }
            // Keep the request side open: the stream has no natural end.
            std::future::pending::<()>().await;
        })
    };
    let mut results = mg
        .raw
        .clone()
        .batch_get_stream(ReceiverStream::new(rx))
        .await
        .unwrap()
        .into_inner();

    let mut received = 0;
    let mut started: Option<Instant> = None;
    // When memgate's task ended, seen while the client is still reading.
    let mut exited = None;
    let end = loop {
        if let (Some(t), None) = (started, exited)
            && mg.is_finished()
        {
            exited = Some(t.elapsed());
        }
        match tokio::time::timeout(Duration::from_secs(15), results.message())
            .await
            .expect("the stream stalled")
        {
            Ok(Some(r)) => {
                assert_eq!(r.key, keys[received], "result {received} out of order");
                assert!(
                    r.error.is_empty() && r.found && r.value.len() == 4096,
                    "{r:?}"
                );
                received += 1;
                if received == 100 {
                    started = Some(Instant::now());
                    mg.begin_shutdown();
                }
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
            Ok(None) => panic!("the stream ended OK after {received} results"),
            Err(status) => break status,
        }
    };
    let started = started.expect("shutdown began");
    let ended = started.elapsed();
    assert_shutting_down(&end);
    assert!(received < keys.len(), "every key was answered");
    tokio::time::timeout(Duration::from_secs(15), mg.join())
        .await
        .expect("memgate did not exit");
    let exited = exited.unwrap_or_else(|| started.elapsed());
    println!(
        "slow reader: {received} of {} results, then UNAVAILABLE {ended:?} after shutdown began (reading slowly what it had buffered); memgate exited after {exited:?} (grace {GRACE:?})",
        keys.len()
    );
    assert!(
        exited < Duration::from_secs(2),
        "memgate exited after {exited:?}"
    );
    sender.abort();
}

/// Promise: a unary call in flight at shutdown keeps the grace — it
/// completes OK though its shard answers seconds later — while the open
/// streams beside it end at once.
#[tokio::test(flavor = "multi_thread")]
async fn a_unary_call_in_flight_keeps_the_grace() {
    let pool = common::pool(1);
    let mut config = with_timeout(common::config_for(&pool), Duration::from_secs(8));
    config.server.shutdown_grace = GRACE;
    let mut mg = Memgate::start(config).await;
    let key = unique("unary");
    mg.client.set(&key, "late", None).await.unwrap();
    let watch = watch(&mg).await;
    let (stream_tx, rx) = mpsc::channel(16);
    let mut results = mg
        .raw
        .clone()
        .batch_get_stream(ReceiverStream::new(rx))
        .await
        .unwrap()
        .into_inner();

    pool[0].signal("STOP");
    let mut raw = mg.raw.clone();
    let get = {
        let key = key.clone();
        tokio::spawn(async move {
            raw.get(pb::GetRequest {
                key,
                ..Default::default()
            })
            .await
        })
    };
    // Let the Get reach the stopped shard.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        !get.is_finished(),
        "the Get did not wait for the stopped shard"
    );

    let started = Instant::now();
    mg.begin_shutdown();
    watch_ends(watch).await;
    let end = tokio::time::timeout(Duration::from_secs(3), results.message())
        .await
        .expect("the stream did not end while a unary call was in flight");
    assert_shutting_down(&end.expect_err("the stream ended without an error"));
    let stream_ended = started.elapsed();

    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(
        !mg.is_finished(),
        "memgate exited with a unary call in flight, {:?} into a {GRACE:?} grace",
        started.elapsed()
    );
    pool[0].signal("CONT");
    let got = get.await.unwrap().expect("the in-flight Get").into_inner();
    assert!(got.found && &got.value[..] == b"late", "{got:?}");
    let answered = started.elapsed();
    tokio::time::timeout(Duration::from_secs(15), mg.join())
        .await
        .expect("memgate did not exit");
    let exited = started.elapsed();
    println!(
        "unary in flight: stream ended after {stream_ended:?}, Get answered OK after {answered:?}, memgate exited after {exited:?} (grace {GRACE:?})"
    );
    assert!(
        exited < answered + Duration::from_secs(2),
        "memgate exited {exited:?} after shutdown began, the Get was answered at {answered:?}"
    );
    drop(stream_tx);
}

/// Promise: client streams stop reading after the chunk in hand and answer
/// UNAVAILABLE saying how far they got. Resending the whole stream is safe
/// (sets and deletes are idempotent), so a client needs no more than the
/// status; OK would claim items were handled that memgate never read.
#[tokio::test(flavor = "multi_thread")]
async fn client_streams_stop_reading_and_say_how_far_they_got() {
    let pool = common::pool(1);
    let mut config = common::config_for(&pool);
    config.server.shutdown_grace = GRACE;
    let mut mg = Memgate::start(config).await;
    let prefix = unique("client-stream");
    let key = |i: usize| format!("{prefix}:{i}");

    let (set_tx, rx) = mpsc::channel::<pb::SetRequest>(64);
    let mut raw = mg.raw.clone();
    let set = tokio::spawn(async move { raw.batch_set_stream(ReceiverStream::new(rx)).await });
    for i in 0..50 {
        set_tx
            .send(pb::SetRequest {
                key: key(i),
                value: b"v".to_vec().into(),
                ttl_seconds: None,
                ..Default::default()
            })
            .await
            .unwrap();
    }
    let (delete_tx, rx) = mpsc::channel::<pb::DeleteRequest>(64);
    let mut raw = mg.raw.clone();
    let delete =
        tokio::spawn(async move { raw.batch_delete_stream(ReceiverStream::new(rx)).await });
    // Wait until the sets are stored, then delete the first 20.
    assert!(
        common::eventually(Duration::from_secs(5), || async {
            pool[0].direct_get(&key(49)).await.is_some()
        })
        .await
    );
    for i in 0..20 {
        delete_tx
            .send(pb::DeleteRequest {
                key: key(i),
                ..Default::default()
            })
            .await
            .unwrap();
    }
    assert!(
        common::eventually(Duration::from_secs(5), || async {
            pool[0].direct_get(&key(19)).await.is_none()
        })
        .await
    );

    // Neither client has closed its side.
    let started = Instant::now();
    mg.begin_shutdown();
    let set = tokio::time::timeout(Duration::from_secs(15), set)
        .await
        .expect("BatchSetStream was not answered")
        .unwrap();
    let delete = tokio::time::timeout(Duration::from_secs(15), delete)
        .await
        .expect("BatchDeleteStream was not answered")
        .unwrap();
    let answered = started.elapsed();
    let set = set.expect_err("BatchSetStream answered OK at shutdown");
    assert_shutting_down(&set);
    assert!(
        set.message().contains("stored 50 items"),
        "{}",
        set.message()
    );
    let delete = delete.expect_err("BatchDeleteStream answered OK at shutdown");
    assert_shutting_down(&delete);
    assert!(
        delete.message().contains("deleted 20 keys"),
        "{}",
        delete.message()
    );
    tokio::time::timeout(Duration::from_secs(15), mg.join())
        .await
        .expect("memgate did not exit");
    let exited = started.elapsed();
    println!(
        "client streams: answered after {answered:?}, memgate exited after {exited:?} (grace {GRACE:?})\n  {}\n  {}",
        set.message(),
        delete.message()
    );
    assert!(
        answered < Duration::from_millis(1500),
        "answered after {answered:?}"
    );
    assert!(
        exited < Duration::from_secs(2),
        "memgate exited after {exited:?}"
    );
    drop((set_tx, delete_tx));
}

/// Promise: a stream memgate cannot end itself (here a reflection stream
/// the client keeps open) holds shutdown only for about a second once no
/// call is in flight, not for the grace.
#[tokio::test(flavor = "multi_thread")]
async fn a_stream_memgate_does_not_end_is_closed_a_second_after_the_last_call() {
    use tonic_reflection::pb::v1 as r;

    let mut config = memgate_server::config::Config::embedded("127.0.0.1:0".parse().unwrap());
    config.server.shutdown_grace = GRACE;
    let mut mg = Memgate::start(config).await;
    let (tx, rx) = mpsc::channel(4);
    let mut replies = r::server_reflection_client::ServerReflectionClient::new(
        tonic::transport::Channel::from_shared(format!("http://{}", mg.addr))
            .unwrap()
            .connect_lazy(),
    )
    .server_reflection_info(ReceiverStream::new(rx))
    .await
    .unwrap()
    .into_inner();
    tx.send(r::ServerReflectionRequest {
        host: String::new(),
        message_request: Some(r::server_reflection_request::MessageRequest::ListServices(
            String::new(),
        )),
    })
    .await
    .unwrap();
    assert!(replies.message().await.unwrap().is_some());

    let started = Instant::now();
    mg.begin_shutdown();
    tokio::time::timeout(Duration::from_secs(15), mg.join())
        .await
        .expect("memgate did not exit");
    let exited = started.elapsed();
    println!("open reflection stream: memgate exited after {exited:?} (grace {GRACE:?})");
    assert!(
        exited > Duration::from_millis(900) && exited < Duration::from_secs(2),
        "memgate exited after {exited:?}"
    );
    drop(tx);
}
