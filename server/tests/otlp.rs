//! With the `otlp` feature: every call's span reaches an OTLP collector,
//! named and attributed by the OpenTelemetry RPC conventions, continuing
//! the caller's trace from its W3C `traceparent`.
//!
//! `cargo test -p memgate-server --features otlp --test otlp` (CI runs it).

#![cfg(feature = "otlp")]

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use memgate_api::v1::GetRequest;
use memgate_api::v1::cache_client::CacheClient;
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::any_value::Value;
use opentelemetry_proto::tonic::trace::v1::Span;
use tokio::sync::mpsc;
use tonic::transport::Channel;

/// A collector that hands every span it receives to the test.
struct Collector(mpsc::UnboundedSender<Span>);

#[tonic::async_trait]
impl TraceService for Collector {
    async fn export(
        &self,
        req: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        for resource in req.into_inner().resource_spans {
            for scope in resource.scope_spans {
                for span in scope.spans {
                    let _ = self.0.send(span);
                }
            }
        }
        Ok(tonic::Response::new(ExportTraceServiceResponse {
            partial_success: None,
        }))
    }
}

fn attribute(span: &Span, key: &str) -> Option<Value> {
    span.attributes
        .iter()
        .find(|a| a.key == key)
        .and_then(|a| a.value.clone()?.value)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rpc_spans_reach_the_collector_in_the_callers_trace() {
    let (tx, mut spans) = mpsc::unbounded_channel();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let collector = listener.local_addr().unwrap();
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(TraceServiceServer::new(Collector(tx)))
            .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
    );

    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut memgate = Command::new(env!("CARGO_BIN_EXE_memgate"))
        .args(["--listen", &format!("127.0.0.1:{port}")])
        .args(["--otlp-endpoint", &format!("http://{collector}")])
        // Export batches every 100 ms instead of every 5 s.
        .env("OTEL_BSP_SCHEDULE_DELAY", "100")
        .env("MEMGATE_LOG", "warn")
        .stdin(Stdio::null())
        .spawn()
        .unwrap();

    let deadline = Instant::now() + Duration::from_secs(10);
    let channel = loop {
        if let Ok(ch) = Channel::from_shared(format!("http://127.0.0.1:{port}"))
            .unwrap()
            .connect()
            .await
        {
            break ch;
        }
        assert!(Instant::now() < deadline, "memgate never listened");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let trace_id = "4bf92f3577b34da6a3ce929d0e0e4736";
    let parent_id = "00f067aa0ba902b7";
    let mut req = tonic::Request::new(GetRequest {
        key: "traced".into(),
        ..Default::default()
    });
    req.metadata_mut().insert(
        "traceparent",
        format!("00-{trace_id}-{parent_id}-01").parse().unwrap(),
    );
    CacheClient::new(channel).get(req).await.unwrap();

    let span = tokio::time::timeout(Duration::from_secs(20), async {
        loop {
            let span = spans.recv().await.expect("the collector runs");
            if span.name == "memgate.v1.Cache/Get" {
                return span;
            }
        }
    })
    .await
    .expect("the Get's span never reached the collector");
    let _ = memgate.kill();
    let _ = memgate.wait();

    let hex = |b: &[u8]| b.iter().map(|x| format!("{x:02x}")).collect::<String>();
    assert_eq!(hex(&span.trace_id), trace_id, "the caller's trace");
    assert_eq!(hex(&span.parent_span_id), parent_id, "the caller's span");
    // SPAN_KIND_SERVER
    assert_eq!(span.kind, 2);
    assert_eq!(
        attribute(&span, "rpc.system"),
        Some(Value::StringValue("grpc".into()))
    );
    assert_eq!(
        attribute(&span, "rpc.service"),
        Some(Value::StringValue("memgate.v1.Cache".into()))
    );
    assert_eq!(
        attribute(&span, "rpc.method"),
        Some(Value::StringValue("Get".into()))
    );
    assert_eq!(
        attribute(&span, "rpc.grpc.status_code"),
        Some(Value::IntValue(0))
    );
    assert_eq!(attribute(&span, "keys"), Some(Value::IntValue(1)));
}
