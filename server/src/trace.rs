//! Logs and traces: the subscriber `main` installs (`--log-format`), and
//! the span every gRPC call runs in.
//!
//! The RPC span is made by [`crate::metrics::GrpcMetricsLayer`], the
//! outermost layer, which already knows each call's method and final
//! status. It is named and attributed by the OpenTelemetry RPC semantic
//! conventions (`rpc.system`, `rpc.service`, `rpc.method`,
//! `rpc.grpc.status_code`), plus memgate's `keys` (set by the Cache
//! handlers) and `shard` (set by the memcached store for single-key
//! calls). It is a DEBUG span: under the default `info` filter it is
//! disabled, which costs one cached level check per call and no
//! allocation; `MEMGATE_LOG=memgate_server=debug` prints one
//! `rpc finished` line per call with every field.
//!
//! Logs never carry values or tokens: no field is a value, a request body
//! or a header, and errors that quote memcached's replies describe them
//! without their bytes.

use tonic::Code;
use tonic::codegen::http;
use tracing::field::Empty;
use tracing::{Span, Subscriber};
use tracing_subscriber::EnvFilter;
use tracing_subscriber::Layer;
use tracing_subscriber::Registry;
use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::layer::SubscriberExt;

/// The target of the RPC span and its `rpc finished` event, for filters
/// (`MEMGATE_LOG=memgate_server::rpc=debug`).
pub const RPC_TARGET: &str = "memgate_server::rpc";

/// How log lines are written (`--log-format`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// One human-readable line per event; colours only on a terminal.
    #[default]
    Text,
    /// One JSON object per line: timestamp, level, target, the event's
    /// fields and the current span's.
    Json,
}

/// The subscriber `main` installs: `format` lines filtered by `filter`,
/// written to `writer`, with ANSI colours only if `ansi` (stderr is a
/// terminal). Tests build the same one over a buffer.
pub fn subscriber<W>(
    format: LogFormat,
    filter: EnvFilter,
    ansi: bool,
    writer: W,
    export: Option<Box<dyn Layer<Registry> + Send + Sync>>,
) -> Box<dyn Subscriber + Send + Sync>
where
    W: for<'w> MakeWriter<'w> + Send + Sync + 'static,
{
    let fmt = tracing_subscriber::fmt::layer().with_writer(writer);
    // A per-layer filter, so another layer (OTLP export) can see spans the
    // log lines leave out.
    let logs = match format {
        LogFormat::Text => fmt.with_ansi(ansi).with_filter(filter).boxed(),
        LogFormat::Json => fmt
            .json()
            .with_current_span(true)
            .with_span_list(false)
            .with_filter(filter)
            .boxed(),
    };
    let layers: Vec<Box<dyn Layer<Registry> + Send + Sync>> =
        std::iter::once(logs).chain(export).collect();
    Box::new(tracing_subscriber::registry().with(layers))
}

/// OTLP export of the RPC spans (cargo feature `otlp`).
#[cfg(feature = "otlp")]
pub mod otlp {
    use opentelemetry::trace::TracerProvider as _;
    use opentelemetry_otlp::WithExportConfig;
    use opentelemetry_sdk::trace::SdkTracerProvider;
    use tracing::Level;
    use tracing_subscriber::filter::Targets;
    use tracing_subscriber::{Layer, Registry};

    use super::RPC_TARGET;

    /// Sends spans to an OTLP/gRPC collector in batches.
    #[derive(Debug)]
    pub struct Exporter {
        provider: SdkTracerProvider,
    }

    impl Exporter {
        /// An exporter to `endpoint`. Call it inside the tokio runtime
        /// that will run memgate: the gRPC channel's worker runs there.
        pub fn new(endpoint: &str) -> Result<Exporter, String> {
            let spans = opentelemetry_otlp::SpanExporter::builder()
                .with_tonic()
                .with_endpoint(endpoint)
                .build()
                .map_err(|e| format!("--otlp-endpoint {endpoint}: {e}"))?;
            let resource = opentelemetry_sdk::Resource::builder()
                .with_service_name("memgate")
                .build();
            let provider = SdkTracerProvider::builder()
                .with_batch_exporter(spans)
                .with_resource(resource)
                .build();
            Ok(Exporter { provider })
        }

        /// The layer that exports the RPC spans (and only those): enabled
        /// for them whatever the log filter says.
        pub fn layer(&self) -> Box<dyn Layer<Registry> + Send + Sync> {
            tracing_opentelemetry::layer()
                .with_tracer(self.provider.tracer("memgate"))
                .with_filter(Targets::new().with_target(RPC_TARGET, Level::DEBUG))
                .boxed()
        }

        /// Sends what is still buffered; at exit.
        pub fn shutdown(&self) {
            if let Err(e) = self.provider.shutdown() {
                tracing::warn!(error = %e, "OTLP export did not shut down cleanly");
            }
        }
    }

    /// Reads W3C trace context from request headers.
    pub(super) struct Headers<'a>(pub(super) &'a tonic::codegen::http::HeaderMap);

    impl opentelemetry::propagation::Extractor for Headers<'_> {
        fn get(&self, key: &str) -> Option<&str> {
            self.0.get(key).and_then(|v| v.to_str().ok())
        }

        fn keys(&self) -> Vec<&str> {
            self.0.keys().map(|k| k.as_str()).collect()
        }
    }
}

/// Records the number of keys (1, or a batch's size) on the current RPC
/// span. Free when no span can be enabled (the default `info` filter).
#[inline]
pub fn record_keys(n: usize) {
    if tracing::level_enabled!(tracing::Level::DEBUG) {
        tracing::Span::current().record("keys", n as i64);
    }
}

/// Records the shard (its address) a single-key call went to on the
/// current RPC span. Free when no span can be enabled.
#[inline]
pub fn record_shard(addr: &str) {
    if tracing::level_enabled!(tracing::Level::DEBUG) {
        tracing::Span::current().record("shard", tracing::field::display(addr));
    }
}

/// A method's names, made once: its span name (`memgate.v1.Cache/Get`),
/// service and method.
#[derive(Debug, Default)]
pub struct RpcNames {
    /// `service/method`: the span name the conventions give.
    pub full: String,
    /// The full service name, e.g. `memgate.v1.Cache`.
    pub service: String,
    /// The method name, e.g. `Get`.
    pub method: String,
}

impl RpcNames {
    /// The names of `service`'s `method`.
    pub fn new(service: &str, method: &str) -> RpcNames {
        RpcNames {
            full: format!("{service}/{method}"),
            service: service.to_owned(),
            method: method.to_owned(),
        }
    }
}

/// The span of one call of `names`, whose request carries `headers` (with
/// the `otlp` feature, a W3C `traceparent` there is its parent).
/// Disabled, and made without formatting or allocating anything, unless
/// DEBUG is on for [`RPC_TARGET`] in some layer.
#[inline]
pub fn rpc_span(names: &RpcNames, headers: &http::HeaderMap) -> Span {
    let span = tracing::debug_span!(
        target: RPC_TARGET,
        "rpc",
        // OpenTelemetry's span name and kind (tracing-opentelemetry reads
        // these two fields); recorded only when the span is on.
        otel.name = Empty,
        otel.kind = Empty,
        rpc.system = %"grpc",
        rpc.service = %names.service,
        rpc.method = %names.method,
        rpc.grpc.status_code = Empty,
        keys = Empty,
        shard = Empty,
    );
    #[cfg(feature = "otlp")]
    if !span.is_disabled() {
        use opentelemetry::propagation::TextMapPropagator;
        use tracing_opentelemetry::OpenTelemetrySpanExt;
        span.record("otel.name", names.full.as_str());
        span.record("otel.kind", "server");
        // The caller's trace continues here (W3C `traceparent`).
        if headers.contains_key("traceparent") {
            let parent = opentelemetry_sdk::propagation::TraceContextPropagator::new()
                .extract(&otlp::Headers(headers));
            let _ = span.set_parent(parent);
        }
    }
    #[cfg(not(feature = "otlp"))]
    let _ = headers;
    span
}

/// Records a finished call's status on its span and logs `rpc finished`
/// (DEBUG) inside it. Does nothing when the span is disabled.
#[inline]
pub fn finish_rpc_span(span: &Span, code: Code, elapsed: std::time::Duration) {
    if span.is_disabled() {
        return;
    }
    span.record("rpc.grpc.status_code", code as i64);
    let _entered = span.enter();
    tracing::debug!(
        target: RPC_TARGET,
        code = %crate::metrics::code_name(code),
        duration_us = elapsed.as_micros() as u64,
        "rpc finished"
    );
}
