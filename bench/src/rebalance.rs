//! `memgate-bench rebalance`: what a change of the pool does to the hit
//! ratio, with and without memgate's rebalance window.
//!
//! For each window setting: `shards` memcached in a members file, `keys`
//! keys written through memgate, then one server added to the file (and
//! later the first one removed); after each change every key is read
//! twice, in batches, and the share of hits printed. Without the window a
//! key whose owner changed is a miss until it is written again; with it,
//! the first read finds it on its previous server and copies it over.

use std::path::Path;
use std::time::{Duration, Instant};

use bytes::Bytes;
use memgate_client::{Client, Item};

use crate::stack;

/// Runs the measurement and prints a markdown table.
pub(crate) async fn run(bin: &Path, shards: usize, keys: usize) {
    let (_dir, _mcs, addrs) = crate::start_pool(shards + 1);
    let members_dir = tempfile::tempdir().unwrap();
    let members = members_dir.path().join("members");
    println!(
        "memgate-bench rebalance: {shards} memcached + 1 joining, {keys} keys of 100 bytes, every key read twice in batches of 100 after each change"
    );
    println!();
    println!("| change | --rebalance-window | hits, 1st read | hits, 2nd read | keys copied |");
    println!("|---|---|---:|---:|---:|");
    for window in ["10m", "0s"] {
        flush_all(&addrs);
        write_members(&members, &addrs[..shards]);
        let metrics = format!("127.0.0.1:{}", stack::free_port());
        let mg = stack::memgate_with(
            bin,
            &[
                "--metrics-listen",
                &metrics,
                "--memcached-file",
                members.to_str().unwrap(),
                "--discovery-interval",
                "1s",
                "--rebalance-window",
                window,
            ],
        );
        let client = Client::connect(format!("http://{}", mg.addr))
            .await
            .unwrap();
        wait_for_servers(&client, shards).await;
        let names: Vec<String> = (0..keys).map(|i| format!("rebalance:{i}")).collect();
        for chunk in names.chunks(500) {
            let items = chunk
                .iter()
                .map(|k| Item::new(k.clone(), Bytes::from(vec![b'v'; 100])));
            client.set_many(items).await.unwrap();
        }
        let grown = format!("{shards} → {} servers", shards + 1);
        let shrunk = format!("{} → {shards} servers", shards + 1);
        for (change, servers) in [(grown, &addrs[..]), (shrunk, &addrs[1..])] {
            let copies_before = copies(&metrics);
            write_members(&members, servers);
            wait_for_servers(&client, servers.len()).await;
            let (first, second) = (hits(&client, &names).await, hits(&client, &names).await);
            let copied = copies(&metrics) - copies_before;
            row(&change, window, keys, first, second, copied);
        }
    }
}

fn row(change: &str, window: &str, keys: usize, first: usize, second: usize, copied: u64) {
    let pct = |n: usize| format!("{:.1}%", 100.0 * n as f64 / keys as f64);
    println!(
        "| {change} | {window} | {} | {} | {copied} |",
        pct(first),
        pct(second)
    );
}

fn write_members(path: &Path, addrs: &[String]) {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, addrs.join("\n") + "\n").unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

/// Empties every memcached, so each window setting starts cold.
fn flush_all(addrs: &[String]) {
    use std::io::{Read, Write};
    for addr in addrs {
        let mut s = std::net::TcpStream::connect(addr).unwrap();
        s.write_all(b"flush_all\r\n").unwrap();
        let mut reply = [0u8; 4];
        s.read_exact(&mut reply).unwrap();
        assert_eq!(&reply, b"OK\r\n");
    }
}

async fn wait_for_servers(client: &Client, n: usize) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !matches!(client.stats().await, Ok(s) if s.shards.len() == n) {
        assert!(
            Instant::now() < deadline,
            "the pool never reached {n} servers"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn hits(client: &Client, keys: &[String]) -> usize {
    let mut hits = 0;
    for chunk in keys.chunks(100) {
        let got = client.get_many(chunk.to_vec()).await.unwrap();
        hits += got.iter().filter(|l| l.value.is_some()).count();
    }
    hits
}

/// Keys copied to their new server so far: memgate's own counter,
/// scraped from its metrics endpoint.
fn copies(metrics: &str) -> u64 {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(metrics).unwrap();
    s.write_all(b"GET /metrics HTTP/1.0\r\nHost: memgate\r\n\r\n")
        .unwrap();
    let mut text = String::new();
    s.read_to_string(&mut text).unwrap();
    text.lines()
        .find_map(|l| l.strip_prefix("memgate_rebalance_copies_total "))
        .and_then(|v| v.trim().parse().ok())
        .expect("memgate_rebalance_copies_total in /metrics")
}
