//! Fault injection: each test breaks something on purpose — a backend that
//! never answers, one that speaks garbage, more load than the limit, a
//! deadline shorter than the backend — and checks the promise memgate makes
//! about it, with the bound it measured. Everything runs on loopback.

mod common;

use std::time::{Duration, Instant};

use common::{FakeMemcached, Memcached, Memgate, config_for_addrs, unique, with_timeout};
use memgate_api::v1 as pb;
use memgate_server::store::memcached::ring::{Ring, ShardSpec};
use tonic::Code;

/// A key the ring places on shard `index` of `addrs`.
fn key_on(addrs: &[String], index: usize, tag: &str) -> String {
    let specs: Vec<ShardSpec> = addrs.iter().map(|a| a.parse().unwrap()).collect();
    let ring = Ring::new(&specs);
    (0..)
        .map(|i| format!("{tag}:{i}"))
        .find(|k| ring.shard_for(k) == index)
        .unwrap()
}

/// Promise: a backend that accepts connections but never answers costs
/// only its own keys, and only up to --timeout; the other shard keeps
/// answering at full speed while calls to the black hole pile up.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_black_hole_backend_costs_only_its_own_keys() {
    let real = Memcached::spawn();
    let hole = FakeMemcached::black_hole().await;
    let addrs = vec![real.addr.clone(), hole.addr.clone()];
    let timeout = Duration::from_millis(400);
    let mg = Memgate::start(with_timeout(config_for_addrs(&addrs), timeout)).await;
    let live_key = key_on(&addrs, 0, "live");
    mg.client.set(&live_key, "v", None).await.unwrap();

    // 64 calls stuck on the black hole at once.
    let stuck: Vec<_> = (0..64)
        .map(|i| {
            // The raw stub: no client retries stretching the wait.
            let mut raw = mg.raw.clone();
            let key = key_on(&addrs, 1, &format!("hole{i}"));
            tokio::spawn(async move {
                let started = Instant::now();
                let err = raw
                    .get(pb::GetRequest {
                        key,
                        ..Default::default()
                    })
                    .await
                    .unwrap_err();
                (err.code(), started.elapsed())
            })
        })
        .collect();
    let mut slowest_live = Duration::ZERO;
    for _ in 0..50 {
        let started = Instant::now();
        assert!(mg.client.get(&live_key).await.unwrap().is_some());
        slowest_live = slowest_live.max(started.elapsed());
    }
    for t in stuck {
        let (code, waited) = t.await.unwrap();
        assert!(
            matches!(code, Code::DeadlineExceeded | Code::Unavailable),
            "black-hole call ended with {code:?}"
        );
        assert!(
            waited < timeout * 3,
            "a black-hole call took {waited:?} (timeout {timeout:?})"
        );
    }
    println!(
        "live shard: slowest of 50 reads {slowest_live:?} while 64 calls hung on the black hole"
    );
    assert!(
        slowest_live < timeout,
        "the live shard stalled for {slowest_live:?}"
    );
}

/// Promise: whatever a backend sends, memgate never panics, never hands a
/// value to the wrong key, and closes the connection; it keeps serving.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_from_a_backend_is_an_error_never_data() {
    let replies: [&'static [u8]; 7] = [
        b"HELLO THERE\r\n",
        b"VALUE someone-else 0 5\r\nHAHA!\r\nEND\r\n",
        b"VALUE k 0 99999999999\r\n",
        b"VALUE k 0 3\r\nabcdefgh",
        b"\xff\xfe\xfd\r\n",
        b"ERROR\r\n",
        b"STORED\r\nSTORED\r\nSTORED\r\n",
    ];
    for reply in replies {
        let fake = FakeMemcached::answering(reply).await;
        let addrs = vec![fake.addr.clone()];
        let mg = Memgate::start_unready(with_timeout(
            config_for_addrs(&addrs),
            Duration::from_millis(500),
        ))
        .await;
        for _ in 0..3 {
            let got = mg.client.get("k").await;
            match got {
                Ok(Some(v)) => panic!("{reply:?} produced a value: {v:?}"),
                Ok(None) => panic!("{reply:?} was read as a miss"),
                Err(e) => assert!(
                    matches!(
                        e.code(),
                        Code::Internal | Code::Unavailable | Code::DeadlineExceeded
                    ),
                    "{reply:?}: {e}"
                ),
            }
            let set = mg.client.set("k", "v", None).await;
            if reply.starts_with(b"STORED") {
                // A stray extra STORED must not confirm the next write.
                continue;
            }
            assert!(set.is_err(), "{reply:?} confirmed a write");
        }
        // The server is still alive and answers health.
        assert!(
            mg.status("").await.is_some(),
            "memgate stopped answering after {reply:?}"
        );
    }
}

/// Promise: one backend reply per request — an unsolicited extra reply
/// closes the connection instead of answering the next request.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_extra_reply_is_never_read_by_the_next_request() {
    let fake = FakeMemcached::answering(b"STORED\r\nSTORED\r\n").await;
    let addrs = vec![fake.addr.clone()];
    let mg = Memgate::start_unready(config_for_addrs(&addrs)).await;
    // Sequential writes: each may be confirmed by its own STORED, but a get
    // must never see "STORED" as its answer.
    for i in 0..5 {
        let _ = mg.client.set(&format!("w{i}"), "v", None).await;
        let err = mg.client.get(&format!("w{i}")).await.unwrap_err();
        assert!(
            matches!(err.code(), Code::Internal | Code::Unavailable),
            "{err}"
        );
    }
}

/// Promise: beyond --max-concurrent-calls, calls are refused at once with
/// RESOURCE_EXHAUSTED (not queued), while health keeps answering.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn load_beyond_the_limit_is_shed_at_once() {
    let hole = FakeMemcached::black_hole().await;
    let addrs = vec![hole.addr.clone()];
    let mut config = with_timeout(config_for_addrs(&addrs), Duration::from_secs(3));
    config.server.max_concurrent_calls = 8;
    let mg = Memgate::start_unready(config).await;
    // Twice the limit: 8 are admitted and hang on the black hole, the
    // other 8 must come back shed at once.
    let (done_tx, mut done_rx) = tokio::sync::mpsc::unbounded_channel();
    for i in 0..16 {
        let mut raw = mg.raw.clone();
        let done = done_tx.clone();
        tokio::spawn(async move {
            let started = Instant::now();
            let r = raw
                .get(pb::GetRequest {
                    key: format!("busy{i}"),
                    ..Default::default()
                })
                .await;
            let _ = done.send((r.err().map(|e| e.code()), started.elapsed()));
        });
    }
    let mut shed_busy = 0;
    while shed_busy < 8 {
        let (code, took) = tokio::time::timeout(Duration::from_secs(2), done_rx.recv())
            .await
            .expect("the calls over the limit were not shed within 2 s")
            .unwrap();
        assert_eq!(
            code,
            Some(Code::ResourceExhausted),
            "a call over the limit ended after {took:?}"
        );
        shed_busy += 1;
    }
    // Now all 8 permits are held: one more call is shed at once.
    let started = Instant::now();
    let shed = match mg
        .raw
        .clone()
        .get(pb::GetRequest {
            key: "extra".into(),
            ..Default::default()
        })
        .await
    {
        Err(e) if e.code() == Code::ResourceExhausted => Some((e, started.elapsed())),
        other => panic!("a call at the limit was not shed: {other:?}"),
    };
    let (err, took) = shed.unwrap();
    assert!(err.message().contains("--max-concurrent-calls"), "{err}");
    let details = tonic_types::StatusExt::get_error_details(&err);
    let info = details.error_info().expect("ErrorInfo");
    assert_eq!(info.reason, "OVERLOADED");
    assert_eq!(info.metadata["limit"], "--max-concurrent-calls");
    assert!(
        details
            .retry_info()
            .is_some_and(|r| r.retry_delay.is_some())
    );
    println!("shed in {took:?}");
    assert!(took < Duration::from_millis(500), "shedding took {took:?}");
    assert!(
        mg.status("").await.is_some(),
        "health must answer under load"
    );
}

/// Promise: the caller's deadline (grpc-timeout) bounds the call even when
/// the backend timeout is longer, and the caller sees DEADLINE_EXCEEDED.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_callers_deadline_wins() {
    let hole = FakeMemcached::black_hole().await;
    let addrs = vec![hole.addr.clone()];
    let mg = Memgate::start_unready(with_timeout(
        config_for_addrs(&addrs),
        Duration::from_secs(30),
    ))
    .await;
    let mut raw = mg.raw.clone();
    let mut req = tonic::Request::new(pb::GetRequest {
        key: unique("deadline"),
        ..Default::default()
    });
    req.set_timeout(Duration::from_millis(250));
    let started = Instant::now();
    let err = raw.get(req).await.unwrap_err();
    let took = started.elapsed();
    assert_eq!(err.code(), Code::DeadlineExceeded, "{err:?}");
    let details = tonic_types::StatusExt::get_error_details(&err);
    let info = details.error_info().expect("ErrorInfo");
    assert_eq!(info.reason, "DEADLINE_EXCEEDED");
    assert_eq!(info.metadata["deadline_ms"], "250");
    println!("deadline 250ms, answered in {took:?}");
    assert!(took < Duration::from_secs(2), "took {took:?}");
}

/// Promise: on shutdown, health turns NOT_SERVING first, an in-flight
/// client stream stops reading and is answered at once, and the server
/// exits well within the grace even with an open health Watch.
///
/// This test used to expect the stream, closed by its client during
/// shutdown, to be answered OK with stored=100. A stream has no natural
/// end, though, so that promise meant an open stream held memgate for the
/// whole grace. Now the stream stops reading after the chunk in hand and
/// answers UNAVAILABLE with how many items it stored: OK would tell the
/// client that items memgate never read were handled, whereas resending the
/// whole stream to another replica is safe (sets are idempotent). What the
/// message reports must match what memcached holds.
#[tokio::test(flavor = "multi_thread")]
async fn shutdown_ends_streams_without_waiting_for_the_grace() {
    use tonic_health::pb::HealthCheckRequest;
    use tonic_health::pb::health_check_response::ServingStatus;

    let pool = common::pool(1);
    let mut config = common::config_for(&pool);
    let grace = Duration::from_secs(10);
    config.server.shutdown_grace = grace;
    let mut mg = Memgate::start(config).await;

    // An open Watch, which would otherwise hold tonic's shutdown forever.
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

    // A client stream in flight: half its items sent before shutdown.
    let (tx, rx) = tokio::sync::mpsc::channel::<pb::SetRequest>(16);
    let mut raw = mg.raw.clone();
    let stream = tokio::spawn(async move {
        raw.batch_set_stream(tokio_stream::wrappers::ReceiverStream::new(rx))
            .await
    });
    let prefix = unique("drain");
    let key = |i: usize| format!("{prefix}:{i}");
    let item = |i: usize| pb::SetRequest {
        key: key(i),
        value: b"v".to_vec().into(),
        ttl_seconds: None,
        ..Default::default()
    };
    for i in 0..50 {
        tx.send(item(i)).await.unwrap();
    }
    // memgate is serving the stream: its first item is stored.
    assert!(
        common::eventually(Duration::from_secs(5), || async {
            pool[0].direct_get(&key(0)).await.is_some()
        })
        .await
    );

    let started = Instant::now();
    mg.begin_shutdown();
    let next = tokio::time::timeout(Duration::from_secs(2), watch.message()).await;
    assert!(
        matches!(next, Ok(Ok(Some(ref m))) if m.status == ServingStatus::NotServing as i32),
        "health did not turn NOT_SERVING first: {next:?}"
    );
    // The client goes on sending; memgate may already have stopped reading.
    for i in 50..100 {
        if tx.send(item(i)).await.is_err() {
            break;
        }
    }
    let err = stream
        .await
        .unwrap()
        .expect_err("the stream was answered OK though memgate stopped reading it");
    let answered = started.elapsed();
    assert_eq!(err.code(), Code::Unavailable, "{err:?}");
    assert!(err.message().contains("shutting down"), "{}", err.message());
    let stored: usize = err
        .message()
        .split("stored ")
        .nth(1)
        .and_then(|rest| rest.split(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no count in {:?}", err.message()));
    let mut held = 0;
    for i in 0..100 {
        held += usize::from(pool[0].direct_get(&key(i)).await.is_some());
    }
    assert_eq!(stored, held, "{}", err.message());
    let watch_end = tokio::time::timeout(Duration::from_secs(2), watch.message()).await;
    assert!(
        matches!(watch_end, Ok(Err(ref s)) if s.code() == Code::Unavailable),
        "the Watch did not end with UNAVAILABLE: {watch_end:?}"
    );
    drop(tx);
    mg.join().await;
    let took = started.elapsed();
    println!(
        "shutdown with an open Watch and a client stream: answered after {answered:?} (stored {stored}), exited after {took:?} (grace {grace:?})"
    );
    assert!(took < Duration::from_secs(2), "shutdown took {took:?}");
}

/// Promise: after --shard-failure-limit consecutive timeouts a hung shard
/// is marked down and its keys fail fast with UNAVAILABLE instead of each
/// waiting out the timeout; its own health status says NOT_SERVING while
/// the server stays SERVING; it comes back by itself once it answers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hung_shard_is_ejected_then_readmitted() {
    use tonic_health::pb::health_check_response::ServingStatus;

    let pool = common::pool(3);
    let timeout = Duration::from_millis(200);
    let mg = Memgate::start(with_timeout(common::config_for(&pool), timeout)).await;
    let addrs = common::addrs(&pool);
    let key = key_on(&addrs, 2, "eject");
    mg.client.set(&key, "v", None).await.unwrap();

    pool[2].signal("STOP");
    let mut raw = mg.raw.clone();
    // Three timeouts (the default limit) mark it down...
    for _ in 0..3 {
        let err = raw
            .get(pb::GetRequest {
                key: key.clone(),
                ..Default::default()
            })
            .await
            .unwrap_err();
        assert!(
            matches!(err.code(), Code::DeadlineExceeded | Code::Unavailable),
            "{err}"
        );
    }
    // ...after which its keys fail at once.
    let started = Instant::now();
    let err = raw
        .get(pb::GetRequest {
            key: key.clone(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    let took = started.elapsed();
    assert_eq!(err.code(), Code::Unavailable, "{err}");
    assert!(err.message().contains("marked down"), "{}", err.message());
    println!("fail-fast while down: {took:?} (timeout {timeout:?})");
    assert!(took < timeout / 2, "a down shard's key took {took:?}");

    let shard = format!("memcached:{}", pool[2].addr);
    mg.wait_for_status(&shard, ServingStatus::NotServing).await;
    assert_eq!(mg.status("").await, Some(ServingStatus::Serving));

    pool[2].signal("CONT");
    mg.wait_for_status(&shard, ServingStatus::Serving).await;
    assert!(
        common::eventually(Duration::from_secs(5), || async {
            mg.client
                .get(&key)
                .await
                .is_ok_and(|v| v.as_deref() == Some(&b"v"[..]))
        })
        .await,
        "the shard never came back"
    );
}

/// Promise: with --on-shard-down=reroute, a dead shard's keys are served by
/// the next live shard on the ring.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reroute_sends_a_dead_shards_keys_to_the_next_shard() {
    use memgate_server::store::memcached::OnShardDown;

    let mut pool = common::pool(3);
    let mut config = common::config_for(&pool);
    if let memgate_server::config::Backend::Memcached { on_down, .. } = &mut config.backend {
        *on_down = OnShardDown::Reroute;
    }
    let mg = Memgate::start(config).await;
    let addrs = common::addrs(&pool);
    let key = key_on(&addrs, 0, "reroute");
    pool[0].kill();
    // Until the shard is marked down, calls fail (connection refused).
    assert!(
        common::eventually(Duration::from_secs(5), || async {
            mg.client.set(&key, "moved", None).await.is_ok()
        })
        .await,
        "writes never rerouted"
    );
    assert_eq!(
        mg.client.get(&key).await.unwrap().as_deref(),
        Some(&b"moved"[..])
    );
    let holders = [&pool[1], &pool[2]];
    let mut found = 0;
    for m in holders {
        found += usize::from(m.direct_get(&key).await.is_some());
    }
    assert_eq!(found, 1, "the rerouted key lives on exactly one live shard");
}

/// A fake memcached with memcached's one LRU crawler: a metadump while
/// another runs is answered `BUSY`, like memcached does. Each dump lists
/// one key after `dump_time`. It counts the BUSY answers it gave.
struct FakeCrawler {
    addr: String,
    busy_answers: std::sync::Arc<std::sync::atomic::AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl FakeCrawler {
    async fn spawn(dump_time: Duration) -> FakeCrawler {
        use std::sync::Arc;
        use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
        use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let crawling = Arc::new(AtomicBool::new(false));
        let busy_answers = Arc::new(AtomicUsize::new(0));
        let busy = busy_answers.clone();
        let task = tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let (crawling, busy) = (crawling.clone(), busy.clone());
                tokio::spawn(async move {
                    let (read, mut write) = stream.into_split();
                    let mut lines = BufReader::new(read).lines();
                    while let Ok(Some(line)) = lines.next_line().await {
                        let reply: &[u8] = if line == "version" {
                            b"VERSION 1.6.18\r\n"
                        } else if line == "stats settings" {
                            b"STAT item_size_max 1048576\r\nEND\r\n"
                        } else if line.starts_with("lru_crawler metadump") {
                            if crawling.swap(true, Ordering::SeqCst) {
                                busy.fetch_add(1, Ordering::SeqCst);
                                b"BUSY currently processing crawler request\r\n"
                            } else {
                                tokio::time::sleep(dump_time).await;
                                crawling.store(false, Ordering::SeqCst);
                                b"key=k exp=-1 la=1 cas=1 fetch=no cls=1 size=60\nEND\r\n"
                            }
                        } else {
                            b"ERROR\r\n"
                        };
                        if write.write_all(reply).await.is_err() {
                            return;
                        }
                    }
                });
            }
        });
        FakeCrawler {
            addr,
            busy_answers,
            task,
        }
    }

    fn busy_answers(&self) -> usize {
        self.busy_answers.load(std::sync::atomic::Ordering::SeqCst)
    }
}

impl Drop for FakeCrawler {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Promise: memgate sends one key dump per shard at a time — concurrent
/// Lists take turns in memgate instead of colliding on the shard's single
/// crawler (and retrying against its BUSY answers) — and each still
/// succeeds within the list patience.
#[tokio::test(flavor = "multi_thread")]
async fn concurrent_lists_take_turns_on_a_shards_crawler() {
    let fake = FakeCrawler::spawn(Duration::from_millis(150)).await;
    let mg = Memgate::start(config_for_addrs(std::slice::from_ref(&fake.addr))).await;
    let started = Instant::now();
    let lists: Vec<_> = (0..5)
        .map(|_| {
            let mut raw = mg.raw.clone();
            tokio::spawn(async move {
                raw.list(pb::ListRequest {
                    prefix: String::new(),
                    limit: 0,
                })
                .await
            })
        })
        .collect();
    for l in lists {
        let keys = l
            .await
            .unwrap()
            .expect("a concurrent List")
            .into_inner()
            .keys;
        assert_eq!(keys, ["k"]);
    }
    println!(
        "5 concurrent Lists of 150 ms dumps took {:?}; the crawler answered BUSY {} times",
        started.elapsed(),
        fake.busy_answers()
    );
    assert_eq!(fake.busy_answers(), 0, "memgate's own Lists collided");
}

/// Promise: a List that cannot get a shard's crawler within the list
/// patience (3 s) answers UNAVAILABLE saying why and what to do, instead
/// of waiting out the dump in progress.
#[tokio::test(flavor = "multi_thread")]
async fn a_list_waiting_on_a_busy_crawler_is_unavailable() {
    let fake = FakeCrawler::spawn(Duration::from_secs(60)).await;
    let mg = Memgate::start(config_for_addrs(std::slice::from_ref(&fake.addr))).await;
    let request = || pb::ListRequest {
        prefix: String::new(),
        limit: 0,
    };
    let mut raw = mg.raw.clone();
    let first = tokio::spawn(async move { raw.list(request()).await });
    tokio::time::sleep(Duration::from_millis(200)).await;
    let started = Instant::now();
    let err = mg.raw.clone().list(request()).await.unwrap_err();
    let took = started.elapsed();
    println!("busy crawler: {err:?} after {took:?}");
    assert_eq!(err.code(), Code::Unavailable, "{err:?}");
    assert!(
        err.message().contains(&fake.addr) && err.message().contains("retry List"),
        "{}",
        err.message()
    );
    assert!(took < Duration::from_secs(5), "waited {took:?}");
    first.abort();
}
