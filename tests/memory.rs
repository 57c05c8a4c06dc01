//! Memory bounded by bytes: oversized reads and slow readers, all at once,
//! against a real memcached holding 150 values of nearly 1 MB.
//!
//! One test in its own binary, so the process's peak resident memory
//! (VmHWM) is memgate's (plus the test's small client side) and nothing
//! else's. The deploy manifest limits memgate to 256 MiB.

mod common;

use std::time::{Duration, Instant};

use common::{Memcached, Memgate, unique};
use futures::StreamExt;
use memgate_api::v1 as pb;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tonic::Code;
use tonic_health::pb::HealthCheckRequest;

const VALUES: usize = 150;
const VALUE_LEN: usize = 1_000_000;

/// This process's resident memory now and at its peak, in KiB.
fn rss_kib() -> (u64, u64) {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.split_whitespace().next()?.parse().ok())
            .unwrap()
    };
    (field("VmRSS:"), field("VmHWM:"))
}

/// Writes `keys` straight to memcached (one reused buffer, so the test's
/// own memory stays small).
async fn fill(mc: &Memcached, keys: &[String]) {
    let stream = tokio::net::TcpStream::connect(&mc.addr).await.unwrap();
    let (read, mut write) = stream.into_split();
    let mut replies = BufReader::new(read).lines();
    let value = vec![b'm'; VALUE_LEN];
    for k in keys {
        write
            .write_all(format!("set {k} 0 0 {VALUE_LEN}\r\n").as_bytes())
            .await
            .unwrap();
        write.write_all(&value).await.unwrap();
        write.write_all(b"\r\n").await.unwrap();
        assert_eq!(replies.next_line().await.unwrap().unwrap(), "STORED");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_reads_and_slow_readers_stay_inside_the_byte_budgets() {
    let mc = Memcached::spawn_with(&["-m", "512"]);
    let prefix = unique("big");
    let keys: Vec<String> = (0..VALUES).map(|i| format!("{prefix}:{i}")).collect();
    fill(&mc, &keys).await;
    // The refused BatchGets' replies (600 MB in all) still pass through
    // the batch connection, read and dropped, ahead of the streams' pieces;
    // on a machine busy with other work that can take more than the
    // default 1 s. This test is about memory, so the backend timeout is
    // generous; small Gets on their own connection are timed below.
    let mut config = common::with_timeout(
        common::config_for(std::slice::from_ref(&mc)),
        Duration::from_secs(5),
    );
    config.health_interval = Duration::from_millis(50);
    let mg = Memgate::start(config).await;
    let small = unique("small");
    mg.client.set(&small, "tiny", None).await.unwrap();
    let (rss_before, _) = rss_kib();

    // Small reads and health keep answering while the big reads run (on
    // a connection of their own: over one HTTP/2 connection, a client that
    // does not read its streams stalls its own other calls).
    let watcher = {
        let client = memgate_client::Client::connect(format!("http://{}", mg.addr))
            .await
            .unwrap();
        let channel = tonic::transport::Channel::from_shared(format!("http://{}", mg.addr))
            .unwrap()
            .connect_lazy();
        let mut health = tonic_health::pb::health_client::HealthClient::new(channel);
        let small = small.clone();
        tokio::spawn(async move {
            let (mut slowest, mut unhealthy) = (Duration::ZERO, 0);
            let stop = Instant::now() + Duration::from_secs(6);
            while Instant::now() < stop {
                let started = Instant::now();
                assert_eq!(
                    client.get(&small).await.unwrap().as_deref(),
                    Some(&b"tiny"[..])
                );
                slowest = slowest.max(started.elapsed());
                let status = health
                    .check(HealthCheckRequest {
                        service: String::new(),
                    })
                    .await
                    .unwrap()
                    .into_inner()
                    .status;
                unhealthy += usize::from(status != 1);
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            (slowest, unhealthy)
        })
    };

    // Four BatchGets of 150 MB each (over the 16 MiB message limit) and four
    // BatchGetStreams over the same values read by slow clients, at once.
    let mut calls = Vec::new();
    for _ in 0..4 {
        let mut raw = mg.raw.clone();
        let keys = keys.clone();
        calls.push(tokio::spawn(async move {
            let err = raw
                .batch_get(pb::BatchGetRequest { keys })
                .await
                .expect_err("150 MB cannot be one message");
            assert_eq!(err.code(), Code::ResourceExhausted, "{err:?}");
            0
        }));
    }
    for _ in 0..4 {
        let mut raw = mg.raw.clone();
        let keys = keys.clone();
        calls.push(tokio::spawn(async move {
            let requests = tokio_stream::iter(
                keys.iter()
                    .map(|k| pb::GetRequest {
                        key: k.clone(),
                        ..Default::default()
                    })
                    .collect::<Vec<_>>(),
            );
            let mut results = raw.batch_get_stream(requests).await.unwrap().into_inner();
            let mut seen = 0;
            while let Some(r) = results.next().await {
                let r = r.unwrap();
                assert_eq!(r.key, keys[seen], "results in request order");
                assert!(
                    r.found && r.value.len() == VALUE_LEN,
                    "{}: {}",
                    r.key,
                    r.error
                );
                seen += 1;
                tokio::time::sleep(Duration::from_millis(10)).await; // a slow reader
            }
            seen
        }));
    }
    for call in calls {
        let seen = call.await.unwrap();
        assert!(
            seen == 0 || seen == VALUES,
            "a stream ended after {seen} results"
        );
    }
    let (slowest, unhealthy) = watcher.await.unwrap();
    let (_, peak) = rss_kib();
    let grew_mib = peak.saturating_sub(rss_before) / 1024;
    println!(
        "peak RSS {} MiB ({} MiB over the {} MiB before); slowest small Get {slowest:?}; {unhealthy} unhealthy health checks",
        peak / 1024,
        grew_mib,
        rss_before / 1024
    );
    assert!(
        slowest < Duration::from_secs(1),
        "a small Get took {slowest:?}"
    );
    assert_eq!(unhealthy, 0, "health reported NOT_SERVING during big reads");
    assert!(
        peak < 256 * 1024,
        "peak RSS {} MiB is over the deploy manifest's 256 MiB",
        peak / 1024
    );
}
