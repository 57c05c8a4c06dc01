//! The Prometheus endpoint, scraped after known traffic against real
//! memcached: the go-grpc-prometheus series and memgate's own move by
//! exactly what the traffic did.

mod common;

use std::collections::BTreeMap;
use std::net::SocketAddr;

use common::{Memgate, config_for, pool};
use memgate_api::v1 as pb;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// One scrape, parsed: `name{sorted labels}` → value.
struct Scrape(BTreeMap<String, f64>);

impl Scrape {
    async fn take(addr: SocketAddr) -> Scrape {
        let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
        stream
            .write_all(b"GET /metrics HTTP/1.1\r\nHost: memgate\r\nConnection: close\r\n\r\n")
            .await
            .unwrap();
        let mut raw = String::new();
        stream.read_to_string(&mut raw).await.unwrap();
        let (head, body) = raw.split_once("\r\n\r\n").expect("an HTTP response");
        assert!(head.starts_with("HTTP/1.1 200"), "{head}");
        assert!(
            head.to_ascii_lowercase()
                .contains("content-type: text/plain; version=0.0.4"),
            "{head}"
        );
        let mut series = BTreeMap::new();
        for line in body
            .lines()
            .filter(|l| !l.starts_with('#') && !l.is_empty())
        {
            let (key, value) = line.rsplit_once(' ').expect("name and value");
            series.insert(normalise(key), value.parse().expect("a number"));
        }
        Scrape(series)
    }

    /// The value of `name` with exactly `labels`, or 0 when not exported.
    fn get(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        let mut labels = labels.to_vec();
        labels.sort();
        let key = if labels.is_empty() {
            name.to_owned()
        } else {
            let inner: Vec<String> = labels.iter().map(|(k, v)| format!("{k}=\"{v}\"")).collect();
            format!("{name}{{{}}}", inner.join(","))
        };
        self.0.get(&key).copied().unwrap_or(0.0)
    }

    /// Sum over every series of `name` whose labels include `labels`.
    fn sum(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        self.0
            .iter()
            .filter(|(k, _)| {
                let (n, rest) = k.split_once('{').unwrap_or((k, ""));
                n == name
                    && labels
                        .iter()
                        .all(|(lk, lv)| rest.contains(&format!("{lk}=\"{lv}\"")))
            })
            .map(|(_, v)| v)
            .sum()
    }
}

/// `name{b="2",a="1"}` → `name{a="1",b="2"}`.
fn normalise(key: &str) -> String {
    let Some((name, rest)) = key.split_once('{') else {
        return key.to_owned();
    };
    let mut labels: Vec<&str> = rest.trim_end_matches('}').split("\",").collect();
    labels.sort();
    let labels: Vec<String> = labels
        .iter()
        .map(|l| l.trim_end_matches('"').to_owned() + "\"")
        .collect();
    format!("{name}{{{}}}", labels.join(","))
}

fn grpc<'a>(kind: &'a str, method: &'a str) -> Vec<(&'a str, &'a str)> {
    vec![
        ("grpc_type", kind),
        ("grpc_service", "memgate.v1.Cache"),
        ("grpc_method", method),
    ]
}

fn with<'a>(
    mut labels: Vec<(&'a str, &'a str)>,
    more: (&'a str, &'a str),
) -> Vec<(&'a str, &'a str)> {
    labels.push(more);
    labels
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_scrape_after_known_traffic_shows_every_series_moving() {
    let pool = pool(3);
    let mut config = config_for(&pool);
    config.metrics_listen = Some("127.0.0.1:0".parse().unwrap());
    let mg = Memgate::start(config).await;
    let metrics = mg.metrics_addr.unwrap();
    let mut raw = mg.raw.clone();
    let key = common::unique("metrics");

    raw.set(pb::SetRequest {
        key: key.clone(),
        value: b"v".to_vec().into(),
        ttl_seconds: None,
        ..Default::default()
    })
    .await
    .unwrap();
    assert!(
        raw.get(pb::GetRequest {
            key: key.clone(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .found
    );
    let missing = format!("{key}-missing");
    raw.get(pb::GetRequest {
        key: missing.clone(),
        ..Default::default()
    })
    .await
    .unwrap();
    let bad = raw
        .get(pb::GetRequest {
            key: "has space".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(bad.code(), tonic::Code::InvalidArgument);
    // Three keys, one repeated: two hits, one miss, one read saved.
    let results = raw
        .batch_get(pb::BatchGetRequest {
            keys: vec![key.clone(), missing.clone(), key.clone()],
        })
        .await
        .unwrap()
        .into_inner()
        .results;
    assert_eq!(results.iter().filter(|r| r.found).count(), 2);
    let streamed: Vec<pb::GetResult> = {
        let input =
            futures::stream::iter([&key, &missing, &key, &missing].map(|k| pb::GetRequest {
                key: k.clone(),
                ..Default::default()
            }));
        let mut out = raw.batch_get_stream(input).await.unwrap().into_inner();
        let mut got = Vec::new();
        while let Some(r) = out.message().await.unwrap() {
            got.push(r);
        }
        got
    };
    assert_eq!(streamed.len(), 4);

    let s = Scrape::take(metrics).await;
    let get = grpc("unary", "Get");
    assert_eq!(s.get("grpc_server_started_total", &get), 3.0);
    assert_eq!(
        s.get(
            "grpc_server_handled_total",
            &with(get.clone(), ("grpc_code", "OK"))
        ),
        2.0
    );
    assert_eq!(
        s.get(
            "grpc_server_handled_total",
            &with(get.clone(), ("grpc_code", "InvalidArgument"))
        ),
        1.0
    );
    assert_eq!(s.get("grpc_server_msg_received_total", &get), 3.0);
    // The refused call sent no message, only its status.
    assert_eq!(s.get("grpc_server_msg_sent_total", &get), 2.0);
    assert_eq!(s.get("grpc_server_handling_seconds_count", &get), 3.0);
    let le_10s = with(get.clone(), ("le", "10"));
    assert_eq!(s.get("grpc_server_handling_seconds_bucket", &le_10s), 3.0);

    let stream = grpc("bidi_stream", "BatchGetStream");
    assert_eq!(s.get("grpc_server_started_total", &stream), 1.0);
    assert_eq!(s.get("grpc_server_msg_received_total", &stream), 4.0);
    assert_eq!(s.get("grpc_server_msg_sent_total", &stream), 4.0);
    assert_eq!(
        s.get(
            "grpc_server_handled_total",
            &with(stream, ("grpc_code", "OK"))
        ),
        1.0
    );
    let set = grpc("unary", "Set");
    assert_eq!(
        s.get("grpc_server_handled_total", &with(set, ("grpc_code", "OK"))),
        1.0
    );

    for (method, hits, misses) in [
        ("Get", 1.0, 1.0),
        ("BatchGet", 2.0, 1.0),
        ("BatchGetStream", 2.0, 2.0),
    ] {
        assert_eq!(
            s.get("memgate_cache_hits_total", &[("method", method)]),
            hits,
            "{method}"
        );
        assert_eq!(
            s.get("memgate_cache_misses_total", &[("method", method)]),
            misses,
            "{method}"
        );
    }
    assert_eq!(
        s.get("memgate_batch_keys_count", &[("method", "BatchGet")]),
        1.0
    );
    assert_eq!(
        s.get("memgate_batch_keys_sum", &[("method", "BatchGet")]),
        3.0
    );
    // The repeated key of the batch, and of the stream's chunk (or chunks).
    assert!(s.get("memgate_deduplicated_reads_total", &[]) >= 1.0);

    for mc in &pool {
        let shard = [("shard", mc.addr.as_str())];
        assert_eq!(s.get("memgate_shard_up", &shard), 1.0, "{}", mc.addr);
        assert!(s.get("memgate_shard_connections", &shard) >= 1.0);
        // Health probes alone make requests to every shard.
        assert!(s.get("memgate_shard_request_seconds_count", &shard) >= 1.0);
        assert_eq!(s.sum("memgate_shard_errors_total", &shard), 0.0);
    }
    assert_eq!(s.get("memgate_inflight_calls", &[]), 0.0);
    assert_eq!(s.get("memgate_inflight_bytes", &[]), 0.0);
    mg.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_shard_shows_as_errors_an_ejection_and_down() {
    let mut pool = pool(3);
    let mut config = config_for(&pool);
    config.metrics_listen = Some("127.0.0.1:0".parse().unwrap());
    let mg = Memgate::start(config).await;
    let metrics = mg.metrics_addr.unwrap();
    let dead = pool[0].addr.clone();
    pool[0].kill();
    let mut raw = mg.raw.clone();
    let mut unavailable = 0.0;
    for i in 0..30 {
        let r = raw
            .get(pb::GetRequest {
                key: format!("dead-shard-{i}"),
                ..Default::default()
            })
            .await;
        if let Err(status) = r {
            assert_eq!(status.code(), tonic::Code::Unavailable, "{status}");
            unavailable += 1.0;
        }
    }
    assert!(unavailable >= 3.0, "some of 30 keys live on the dead shard");

    let s = Scrape::take(metrics).await;
    let shard = [("shard", dead.as_str())];
    assert_eq!(s.get("memgate_shard_up", &shard), 0.0);
    assert_eq!(s.get("memgate_shard_ejections_total", &shard), 1.0);
    assert!(
        s.get(
            "memgate_shard_errors_total",
            &[("shard", dead.as_str()), ("kind", "refused")]
        ) >= 3.0
    );
    assert_eq!(
        s.get(
            "grpc_server_handled_total",
            &with(grpc("unary", "Get"), ("grpc_code", "Unavailable"))
        ),
        unavailable
    );
    for mc in &pool[1..] {
        assert_eq!(
            s.get("memgate_shard_up", &[("shard", mc.addr.as_str())]),
            1.0
        );
    }
    mg.stop().await;
}

/// Every metric name in the Grafana dashboard's queries, and the dashboard
/// covers rates, latency quantiles, hit ratio and per-shard errors and state.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_dashboard_query_names_an_exported_series() {
    let pool = pool(1);
    let mut config = config_for(&pool);
    config.metrics_listen = Some("127.0.0.1:0".parse().unwrap());
    let mg = Memgate::start(config).await;
    // One call, so that series made on first use exist too.
    mg.raw
        .clone()
        .get(pb::GetRequest {
            key: "k".into(),
            ..Default::default()
        })
        .await
        .unwrap();
    let exported: std::collections::BTreeSet<String> = Scrape::take(mg.metrics_addr.unwrap())
        .await
        .0
        .keys()
        .map(|k| k.split('{').next().unwrap().to_owned())
        .collect();

    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/deploy/grafana/memgate.json");
    let dashboard: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    let mut exprs = Vec::new();
    collect_exprs(&dashboard, &mut exprs);
    assert!(exprs.len() >= 10, "{} queries", exprs.len());
    let mut named = std::collections::BTreeSet::new();
    for expr in &exprs {
        let names = metric_names(expr);
        assert!(
            !names.is_empty(),
            "a query naming no memgate series: {expr}"
        );
        for name in names {
            assert!(
                exported.contains(&name),
                "the dashboard queries {name}, which memgate does not export: {expr}"
            );
            named.insert(name);
        }
    }
    for needed in [
        "grpc_server_handled_total",
        "grpc_server_handling_seconds_bucket",
        "memgate_cache_hits_total",
        "memgate_cache_misses_total",
        "memgate_shard_errors_total",
        "memgate_shard_up",
        "memgate_shard_request_seconds_bucket",
    ] {
        assert!(named.contains(needed), "the dashboard shows no {needed}");
    }
    mg.stop().await;
}

fn collect_exprs(v: &serde_json::Value, out: &mut Vec<String>) {
    match v {
        serde_json::Value::Object(map) => {
            for (k, v) in map {
                match (k.as_str(), v) {
                    ("expr", serde_json::Value::String(e)) => out.push(e.clone()),
                    _ => collect_exprs(v, out),
                }
            }
        }
        serde_json::Value::Array(items) => items.iter().for_each(|v| collect_exprs(v, out)),
        _ => {}
    }
}

/// Metric names in a PromQL expression: identifiers with memgate's or the
/// gRPC series' prefix (label names such as `grpc_method` have neither).
fn metric_names(expr: &str) -> Vec<String> {
    expr.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == ':'))
        .filter(|t| t.starts_with("memgate_") || t.starts_with("grpc_server_"))
        .map(str::to_owned)
        .collect()
}
