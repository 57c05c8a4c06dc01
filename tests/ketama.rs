//! `--distribution ketama` places keys exactly where the real twemproxy
//! (nutcracker) does, for every key hash it offers: keys are written
//! through nutcracker, found on the memcached that holds them, and
//! compared with memgate's placement; then read through memgate.

mod common;

use std::collections::HashMap;

use common::{Memcached, Memgate, config_for_addrs};
use memgate_api::v1 as pb;
use memgate_server::store::memcached::ketama::KeyHash;
use memgate_server::store::memcached::ring::{Distribution, Placement, Ring, ShardSpec};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

const KEYS: usize = 10_000;

/// Writes `keys` through a text-protocol server in one pipelined burst.
async fn set_all(addr: &str, keys: &[String]) {
    let mut conn = TcpStream::connect(addr).await.unwrap();
    let mut out = Vec::new();
    for k in keys {
        out.extend_from_slice(format!("set {k} 7 0 1\r\nx\r\n").as_bytes());
    }
    let (read, mut write) = conn.split();
    let writer = async move { write.write_all(&out).await.unwrap() };
    let reader = async move {
        let mut lines = BufReader::new(read).lines();
        for k in keys {
            let line = lines.next_line().await.unwrap().unwrap();
            assert_eq!(line, "STORED", "set {k} through twemproxy");
        }
    };
    tokio::join!(writer, reader);
}

/// The keys among `keys` that the memcached at `addr` holds.
async fn held_by(addr: &str, keys: &[String]) -> Vec<String> {
    let mut conn = BufReader::new(TcpStream::connect(addr).await.unwrap());
    let mut found = Vec::new();
    for chunk in keys.chunks(100) {
        let cmd = format!("get {}\r\n", chunk.join(" "));
        conn.get_mut().write_all(cmd.as_bytes()).await.unwrap();
        loop {
            let mut line = String::new();
            conn.read_line(&mut line).await.unwrap();
            let line = line.trim_end();
            if line == "END" {
                break;
            }
            let mut parts = line.split(' ');
            assert_eq!(parts.next(), Some("VALUE"), "{line}");
            found.push(parts.next().unwrap().to_owned());
            let len: usize = parts.nth(1).unwrap().parse().unwrap();
            let mut value = vec![0; len + 2];
            conn.read_exact(&mut value).await.unwrap();
        }
    }
    found
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ketama_places_every_key_where_twemproxy_does() {
    // One server on memcached's default port: twemproxy then names it by
    // host alone on the continuum, as libmemcached does.
    let pool = [
        Memcached::spawn(),
        Memcached::spawn(),
        Memcached::spawn_on_default_port(),
    ];
    let weights = [1, 2, 1];
    let servers: Vec<(&str, usize)> = pool
        .iter()
        .zip(weights)
        .map(|(m, w)| (m.addr.as_str(), w))
        .collect();
    let specs: Vec<ShardSpec> = servers
        .iter()
        .map(|(a, w)| format!("{a}:{w}").parse().unwrap())
        .collect();
    let dir = tempfile::tempdir().unwrap();
    for (name, hash) in [
        ("fnv1a_64", KeyHash::Fnv1a64),
        ("fnv1_64", KeyHash::Fnv164),
        ("fnv1a_32", KeyHash::Fnv1a32),
        ("fnv1_32", KeyHash::Fnv132),
        ("md5", KeyHash::Md5),
        ("crc32", KeyHash::Crc32),
        ("crc32a", KeyHash::Crc32a),
        ("one_at_a_time", KeyHash::OneAtATime),
    ] {
        let proxy = common::twemproxy(&servers, name, dir.path());
        let addr = proxy.addr.clone();
        // Structured and short keys, and bytes over 0x7f (sign extension).
        let keys: Vec<String> = (0..KEYS)
            .map(|i| match i % 3 {
                0 => format!("{name}:user:{i}:profile"),
                1 => format!("{name}{i}"),
                _ => format!("{name}-é-{i}"),
            })
            .collect();
        set_all(&addr, &keys).await;
        let mut actual: HashMap<String, usize> = HashMap::new();
        for (index, mc) in pool.iter().enumerate() {
            for k in held_by(&mc.addr, &keys).await {
                assert!(actual.insert(k, index).is_none(), "a key on two servers");
            }
        }
        assert_eq!(actual.len(), KEYS, "{name}: every key written is somewhere");
        let ring = Ring::with_placement(
            &specs,
            Placement {
                distribution: Distribution::Ketama,
                hash,
            },
        );
        let wrong: Vec<&String> = keys
            .iter()
            .filter(|k| ring.shard_for(k) != actual[*k])
            .collect();
        assert!(
            wrong.is_empty(),
            "{name}: {} of {KEYS} keys placed elsewhere than twemproxy, e.g. {:?}",
            wrong.len(),
            &wrong[..wrong.len().min(5)]
        );
        // Every server got keys, so the test exercises all of them
        // (except with crc32: its 15-bit hashes all fall in the first
        // 1/131072 of the continuum, on one server, in twemproxy too).
        for index in (0..pool.len()).filter(|_| hash != KeyHash::Crc32) {
            assert!(
                actual.values().any(|&i| i == index),
                "{name}: server {index} empty"
            );
        }

        if hash == KeyHash::Fnv1a64 {
            // Through memgate with the matching flags, every key written
            // through twemproxy is found.
            let mut config = config_for_addrs(
                &servers
                    .iter()
                    .map(|(a, w)| format!("{a}:{w}"))
                    .collect::<Vec<_>>(),
            );
            if let memgate_server::config::Backend::Memcached { placement, .. } =
                &mut config.backend
            {
                *placement = Placement {
                    distribution: Distribution::Ketama,
                    hash,
                };
            }
            let mg = Memgate::start(config).await;
            let results = mg
                .raw
                .clone()
                .batch_get(pb::BatchGetRequest {
                    keys: keys[..1000].to_vec(),
                })
                .await
                .unwrap()
                .into_inner()
                .results;
            let found = results.iter().filter(|r| r.found).count();
            assert_eq!(found, 1000, "{:?}", results.iter().find(|r| !r.found));
            mg.stop().await;
        }
        drop(proxy);
    }
}
