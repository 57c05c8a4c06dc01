//! The data path under faults a real memcached never shows: a backend that
//! sends bytes after a complete reply, answers with another request's
//! token, trickles its reply a byte at a time, or whose address stops
//! completing TCP handshakes. Each test injects one fault and checks the
//! promise: never a wrong value, and no call waits longer than
//! --connect-timeout + --timeout.

mod common;

use std::time::{Duration, Instant};

use common::{Memgate, config_for_addrs, with_timeout};
use memgate_api::v1 as pb;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tonic::Code;

/// What a [`Fake`] does wrong.
#[derive(Clone, Copy, Debug)]
enum Fault {
    /// After each complete read reply, a second one for the same key (and
    /// token) carrying `EVIL`.
    TrailingValue,
    /// Answers each read with the right key and value `EVIL`, but a token
    /// no request carried (a reply meant for someone else).
    WrongToken,
    /// Sends each reply one byte at a time, this far apart.
    Trickle(Duration),
    /// Never answers a read of `slow`, nor anything after it on that
    /// connection (as a memcached stuck on one request would not).
    StallOnSlow,
}

/// A memcached look-alike speaking both the meta and the text protocol
/// for reads (every key holds `good`), with one fault.
struct Fake {
    addr: String,
    task: JoinHandle<()>,
    /// Notified when a read of `slow` arrives.
    stalled: std::sync::Arc<tokio::sync::Notify>,
}

impl Fake {
    async fn start(fault: Fault) -> Fake {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let stalled = std::sync::Arc::new(tokio::sync::Notify::new());
        let notify = stalled.clone();
        let task = tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                tokio::spawn(serve(stream, fault, notify.clone()));
            }
        });
        Fake {
            addr,
            task,
            stalled,
        }
    }
}

impl Drop for Fake {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn serve(
    stream: tokio::net::TcpStream,
    fault: Fault,
    stalled: std::sync::Arc<tokio::sync::Notify>,
) {
    let (read, mut write) = stream.into_split();
    let mut lines = BufReader::new(read).lines();
    let mut stuck = false;
    while let Ok(Some(line)) = lines.next_line().await {
        if matches!(fault, Fault::StallOnSlow) && line.starts_with("mg slow ") {
            stuck = true;
            stalled.notify_one();
        }
        if stuck {
            continue;
        }
        let words: Vec<&str> = line.split(' ').collect();
        let reply = match words[..] {
            ["mn"] => "MN\r\n".to_owned(),
            ["version"] => "VERSION 1.6.18-fake\r\n".to_owned(),
            ["stats", "settings"] => "STAT item_size_max 1048576\r\nEND\r\n".to_owned(),
            ["mg", key, ref flags @ ..] => {
                let token: u32 = flags
                    .iter()
                    .find_map(|f| f.strip_prefix('O'))
                    .and_then(|t| t.parse().ok())
                    .unwrap_or(0);
                let va = |token: u32, v: &str| format!("VA {} k{key} O{token}\r\n{v}\r\n", v.len());
                match fault {
                    Fault::TrailingValue => va(token, "good") + &va(token, "EVIL"),
                    Fault::WrongToken => va(token.wrapping_add(1000), "EVIL"),
                    Fault::Trickle(_) | Fault::StallOnSlow => va(token, "good"),
                }
            }
            ["get", key] => {
                let value = |v: &str| format!("VALUE {key} 0 {}\r\n{v}\r\nEND\r\n", v.len());
                match fault {
                    Fault::TrailingValue => value("good") + &value("EVIL"),
                    // The text protocol has no token to get wrong.
                    Fault::WrongToken => value("EVIL"),
                    Fault::Trickle(_) | Fault::StallOnSlow => value("good"),
                }
            }
            _ => "ERROR\r\n".to_owned(),
        };
        let sent = match fault {
            Fault::Trickle(gap) if !line.starts_with("mn") => {
                let mut ok = true;
                for b in reply.as_bytes() {
                    ok &= write.write_all(&[*b]).await.is_ok();
                    tokio::time::sleep(gap).await;
                }
                ok
            }
            _ => write.write_all(reply.as_bytes()).await.is_ok(),
        };
        if !sent {
            return;
        }
    }
}

/// Promise: bytes after a complete reply (here a second `VA` block for the
/// same key and token) close the connection; they are never read as the
/// next request's value.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bytes_after_a_complete_reply_never_become_a_value() {
    let fake = Fake::start(Fault::TrailingValue).await;
    let mg = Memgate::start(config_for_addrs(std::slice::from_ref(&fake.addr))).await;
    let mut good = 0;
    for _ in 0..20 {
        let mut raw = mg.raw.clone();
        match raw
            .get(pb::GetRequest {
                key: "k".into(),
                ..Default::default()
            })
            .await
        {
            Ok(resp) => {
                let resp = resp.into_inner();
                assert_eq!(&resp.value[..], b"good", "a value that was never written");
                good += 1;
            }
            Err(status) => assert!(
                matches!(status.code(), Code::Internal | Code::Unavailable),
                "{status:?}"
            ),
        }
        // Concurrent reads of the same key, through a batch too.
        let batch = raw
            .batch_get(pb::BatchGetRequest {
                keys: vec!["k".into(), "k2".into()],
            })
            .await;
        if let Ok(resp) = batch {
            for r in resp.into_inner().results {
                assert!(r.value.is_empty() || &r.value[..] == b"good", "{r:?}");
            }
        }
    }
    assert!(good > 0, "no read ever succeeded");
}

/// Promise: a reply whose token no request carried (one meant for another
/// request) closes the connection and fails the call; its value is never
/// handed out.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reply_with_another_requests_token_is_refused() {
    let fake = Fake::start(Fault::WrongToken).await;
    let mg = Memgate::start_unready(config_for_addrs(std::slice::from_ref(&fake.addr))).await;
    for i in 0..5 {
        let got = mg
            .raw
            .clone()
            .get(pb::GetRequest {
                key: "k".into(),
                ..Default::default()
            })
            .await;
        let status = got.expect_err("a reply for another request was accepted");
        assert!(
            matches!(status.code(), Code::Internal | Code::Unavailable),
            "{status:?}"
        );
        if i == 0 {
            // Later calls may find the shard marked down by these failures.
            assert!(status.message().contains("does not match"), "{status:?}");
        }
    }
}

/// Promise: a backend that answers one byte at a time costs a call no
/// more than --connect-timeout + --timeout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_trickling_backend_is_bounded_by_the_timeout() {
    let fake = Fake::start(Fault::Trickle(Duration::from_millis(40))).await;
    let timeout = Duration::from_millis(300);
    let mg = Memgate::start_unready(with_timeout(
        config_for_addrs(std::slice::from_ref(&fake.addr)),
        timeout,
    ))
    .await;
    let started = Instant::now();
    let got = mg
        .raw
        .clone()
        .get(pb::GetRequest {
            key: "k".into(),
            ..Default::default()
        })
        .await;
    let took = started.elapsed();
    let status = got.expect_err("a 30-byte reply at 40 ms a byte cannot beat 300 ms");
    assert_eq!(status.code(), Code::DeadlineExceeded, "{status:?}");
    println!("trickling reply failed after {took:?} (timeouts {timeout:?} + {timeout:?})");
    assert!(took < timeout * 2 + Duration::from_millis(300), "{took:?}");
}

/// A loopback address whose TCP handshakes never complete: a listener with
/// a full accept queue that never accepts, so the kernel drops new SYNs.
fn syn_black_hole() -> (socket2::Socket, Vec<std::net::TcpStream>, String) {
    use socket2::{Domain, Socket, Type};
    let socket = Socket::new(Domain::IPV4, Type::STREAM, None).unwrap();
    socket
        .bind(
            &"127.0.0.1:0"
                .parse::<std::net::SocketAddr>()
                .unwrap()
                .into(),
        )
        .unwrap();
    socket.listen(0).unwrap();
    let addr = socket.local_addr().unwrap().as_socket().unwrap();
    // Fill the queue until a connect no longer completes.
    let mut held = Vec::new();
    loop {
        match std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(200)) {
            Ok(s) => held.push(s),
            Err(_) => break,
        }
        assert!(held.len() < 64, "the accept queue never filled");
    }
    (socket, held, addr.to_string())
}

/// Promise: when a shard's address drops SYNs, 64 concurrent calls for its
/// keys each end within --connect-timeout + --timeout: they share one
/// connect attempt per connection instead of queueing one behind another.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropped_syns_cost_each_call_at_most_the_connect_timeout() {
    let (_socket, _held, addr) = syn_black_hole();
    let timeout = Duration::from_millis(300);
    let mut config = with_timeout(config_for_addrs(std::slice::from_ref(&addr)), timeout);
    // Keep the shard up, so every call goes through a connect attempt.
    if let memgate_server::config::Backend::Memcached { pool, .. } = &mut config.backend {
        pool.failure_limit = 1000;
    }
    let mg = Memgate::start_unready(config).await;
    let calls: Vec<_> = (0..64)
        .map(|i| {
            let mut raw = mg.raw.clone();
            tokio::spawn(async move {
                let started = Instant::now();
                let got = raw
                    .get(pb::GetRequest {
                        key: format!("k{i}"),
                        ..Default::default()
                    })
                    .await;
                (got.map(|_| ()), started.elapsed())
            })
        })
        .collect();
    let mut slowest = Duration::ZERO;
    for call in calls {
        let (got, took) = call.await.unwrap();
        let status = got.expect_err("nothing answers there");
        assert_eq!(status.code(), Code::Unavailable, "{status:?}");
        assert!(status.message().contains("--connect-timeout"), "{status:?}");
        slowest = slowest.max(took);
    }
    println!("64 calls to a SYN-dropping shard: slowest ended after {slowest:?}");
    assert!(
        slowest < timeout * 2 + Duration::from_millis(400),
        "a call waited {slowest:?}"
    );
}

/// Promise: one slow request costs the others on its connection no more
/// than the protocol forces. A read queued behind one that times out (its
/// connection is closed, as nothing behind a stuck reply can be trusted)
/// is sent again on a fresh connection within what is left of its own
/// timeout, instead of failing with it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_read_queued_behind_a_stuck_one_is_retried_on_a_fresh_connection() {
    let fake = Fake::start(Fault::StallOnSlow).await;
    let timeout = Duration::from_millis(500);
    let mut config = with_timeout(config_for_addrs(std::slice::from_ref(&fake.addr)), timeout);
    if let memgate_server::config::Backend::Memcached { pool, .. } = &mut config.backend {
        pool.connect_timeout = Duration::from_millis(300);
    }
    let mg = Memgate::start(config).await;
    let mut raw = mg.raw.clone();
    let slow = tokio::spawn(async move {
        raw.get(pb::GetRequest {
            key: "slow".into(),
            ..Default::default()
        })
        .await
    });
    fake.stalled.notified().await;
    // A read arriving 200 ms later lands behind it on the same connection.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let started = Instant::now();
    let fast = mg
        .raw
        .clone()
        .get(pb::GetRequest {
            key: "fast".into(),
            ..Default::default()
        })
        .await;
    let took = started.elapsed();
    let status = slow.await.unwrap().expect_err("nothing answers `slow`");
    assert_eq!(status.code(), Code::DeadlineExceeded, "{status:?}");
    let fast = fast
        .expect("the read behind the stuck one is retried")
        .into_inner();
    assert_eq!(&fast.value[..], b"good");
    println!("the read queued behind a stuck one answered after {took:?}");
    assert!(took < timeout + Duration::from_millis(300), "{took:?}");
}
