//! memgate: a gRPC cache service in front of a sharded memcached pool.
//!
//! The server is a library: [`run`] serves on a listener until a shutdown
//! future completes, so tests start it in-process exactly as the binary
//! does. `main.rs` only parses flags, sets up logging and calls it.

pub mod auth;
pub mod check;
pub mod cli;
pub mod config;
pub mod drain;
pub mod error;
pub mod fuzzing;
pub mod health;
pub mod key;
pub mod layers;
pub mod membership;
pub mod metrics;
pub mod service;
pub mod store;
pub mod trace;

use std::future::Future;
use std::sync::Arc;

use memgate_api::v1::cache_server::CacheServer;
use tokio::net::TcpListener;
use tokio_stream::StreamExt;
use tokio_stream::wrappers::TcpListenerStream;
use tokio_util::sync::CancellationToken;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Certificate, Identity, Server, ServerTlsConfig};
use tonic_health::ServingStatus;
use tonic_health::server::HealthReporter;

use crate::auth::Auth;
use crate::layers::{DeadlineLayer, InFlightLayer, ShedLayer, oversized_request_status};

use crate::config::{Backend, Config};
use crate::metrics::{GrpcMetricsLayer, Metrics};
use crate::service::CacheService;
use crate::store::Store;
use crate::store::embedded::EmbeddedStore;
use crate::store::memcached::ShardedStore;

/// Aborts a task when dropped.
struct AbortOnDrop(tokio::task::AbortHandle);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Why memgate could not serve.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// The metrics address could not be bound.
    #[error("cannot listen for metrics on {addr}: {source}")]
    MetricsListen {
        /// The address asked for.
        addr: std::net::SocketAddr,
        /// Why.
        source: std::io::Error,
    },
    /// The memcached pool's membership source could not be followed.
    #[error("{0}")]
    Membership(String),
    /// The gRPC server failed.
    #[error(transparent)]
    Transport(#[from] tonic::transport::Error),
}

/// HTTP/2 flow-control window of each stream (see `serve`).
const STREAM_WINDOW: u32 = 64 * 1024;
/// HTTP/2 flow-control window of each connection.
const CONNECTION_WINDOW: u32 = 16 * 1024 * 1024;

/// Serves memgate on `listener` until `shutdown` completes, then drains
/// and returns: unary calls in flight may finish within the shutdown grace;
/// streams end at once with UNAVAILABLE (they have no natural end; see
/// [`drain`]). Metrics are served on `config.metrics_listen`, if given.
pub async fn run(
    listener: TcpListener,
    config: Config,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ServeError> {
    let metrics_listener = match config.metrics_listen {
        Some(addr) => Some(
            TcpListener::bind(addr)
                .await
                .map_err(|source| ServeError::MetricsListen { addr, source })?,
        ),
        None => None,
    };
    run_with_metrics(listener, metrics_listener, config, shutdown).await
}

/// Like [`run`], with metrics served on `metrics_listener` (already bound,
/// so a caller can pick a free port) instead of `config.metrics_listen`.
pub async fn run_with_metrics(
    listener: TcpListener,
    metrics_listener: Option<TcpListener>,
    config: Config,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ServeError> {
    // Always recorded (Stats reads the counts too), exported on request.
    // Measured: 1.3% of memgate's CPU samples under the Get benchmark are
    // in the recording code itself; A/B runs with recording off were
    // within the bench's noise (README, Metrics).
    let metrics = Metrics::new();
    let exporter = metrics_listener.map(|l| tokio::spawn(metrics::serve(l, metrics.clone())));
    // The exporter stops with the server.
    let _exporter = exporter.map(|task| task.abort_handle()).map(AbortOnDrop);
    match &config.backend {
        Backend::Embedded { max_bytes } => {
            let store = EmbeddedStore::new(*max_bytes, config.limits.max_value_bytes);
            Ok(serve(listener, Arc::new(store), config, metrics, shutdown).await?)
        }
        Backend::Memcached {
            members,
            pool,
            on_down,
            placement,
            rebalance,
        } => {
            // The first list (a bad file stops memgate here; DNS that does
            // not answer yet gives an empty pool that fills in later).
            let lists = crate::membership::watch(members.clone())
                .await
                .map_err(ServeError::Membership)?;
            let shards = lists.borrow().clone();
            let store = Arc::new(ShardedStore::new(
                &shards,
                pool.clone(),
                *placement,
                config.limits.max_value_bytes,
                *on_down,
                &metrics,
                *rebalance,
            ));
            // Later lists change the pool while it serves; servers that do
            // not answer yet are tried again at the probe interval.
            let follower = tokio::spawn(store.follow(lists, config.health_interval));
            let _follower = AbortOnDrop(follower.abort_handle());
            Ok(serve(listener, store, config, metrics, shutdown).await?)
        }
    }
}

async fn serve<S: Store>(
    listener: TcpListener,
    store: Arc<S>,
    config: Config,
    metrics: Arc<Metrics>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), tonic::transport::Error> {
    let addr = listener
        .local_addr()
        .map_or_else(|e| e.to_string(), |a| a.to_string());
    tracing::info!(
        listen = %addr,
        backend = %store.describe(),
        reflection = config.reflection,
        "memgate serving"
    );

    // Cancelled once shutdown begins: streams end, unary calls go on.
    let draining = CancellationToken::new();
    let reporter = HealthReporter::new();
    let health_service = health::service(&reporter, draining.clone());
    health::set_all(&reporter, ServingStatus::NotServing).await;
    let stop_checker = CancellationToken::new();
    tokio::spawn(health::run_checker(
        store.clone(),
        reporter.clone(),
        config.health_interval,
        stop_checker.clone(),
    ));

    let limit = config.limits.max_message_bytes;
    let service = CacheService::new(
        store,
        config.limits.clone(),
        draining.clone(),
        metrics.clone(),
    );
    let cache = CacheServer::from_arc(Arc::new(service))
        .max_decoding_message_size(limit)
        .max_encoding_message_size(limit);
    // Only the Cache service needs credentials; probes stay open.
    let cache = InterceptedService::new(cache, Auth::new(config.server.tokens.clone()));

    let (reflection_v1, reflection_v1alpha) = if config.reflection {
        let v1 = tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(memgate_api::v1::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
            // google.rpc.ErrorInfo and friends: grpcurl decodes error details.
            .register_encoded_file_descriptor_set(tonic_types::pb::FILE_DESCRIPTOR_SET)
            .build_v1()
            .expect("embedded descriptor sets are valid");
        let v1alpha = tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(memgate_api::v1::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_types::pb::FILE_DESCRIPTOR_SET)
            .build_v1alpha()
            .expect("embedded descriptor sets are valid");
        (Some(v1), Some(v1alpha))
    } else {
        (None, None)
    };

    let drain = {
        let draining = draining.clone();
        async move {
            shutdown.await;
            // Tell meshes and probes first, then end streams (a Watch
            // delivers NOT_SERVING before it ends) and stop accepting.
            stop_checker.cancel();
            health::set_all(&reporter, ServingStatus::NotServing).await;
            tracing::info!("shutting down: ending streams, draining in-flight calls");
            draining.cancel();
        }
    };
    let in_flight_layer = InFlightLayer::new();
    let in_flight = in_flight_layer.count();

    // tonic ignores `tcp_nodelay` for a caller-supplied listener: set it on
    // each accepted socket, or Nagle's algorithm adds ~40 ms to every call.
    let incoming = TcpListenerStream::new(listener).map(|conn| {
        conn.inspect(|stream| {
            let _ = stream.set_nodelay(true);
        })
    });

    let settings = &config.server;
    let mut builder = Server::builder();
    if let Some(tls) = &settings.tls {
        let mut tls_config =
            ServerTlsConfig::new().identity(Identity::from_pem(&tls.cert, &tls.key));
        if let Some(ca) = &tls.client_ca {
            tls_config = tls_config.client_ca_root(Certificate::from_pem(ca));
        }
        builder = builder.tls_config(tls_config)?;
    }
    let server = builder
        // Small per-stream flow-control windows with a large connection
        // window: h2 closes a connection (ENHANCE_YOUR_CALM) when too many
        // small DATA frames sit unread, and its budget for them is half the
        // connection window. A stream applying backpressure buffers at most
        // its window (64 KiB), which stays well within that budget even
        // when every frame is a tiny message.
        .initial_stream_window_size(STREAM_WINDOW)
        .initial_connection_window_size(CONNECTION_WINDOW)
        // HTTP/2 limits set on purpose: bounded streams per connection, a
        // guard against reset floods, bounded headers, and keepalive PINGs
        // that find dead clients.
        .max_concurrent_streams(settings.max_concurrent_streams)
        .http2_max_pending_accept_reset_streams(Some(256))
        .http2_max_local_error_reset_streams(Some(1024))
        .http2_max_header_list_size(16 * 1024)
        .http2_keepalive_interval(settings.http2_keepalive)
        .http2_keepalive_timeout(Some(std::time::Duration::from_secs(10)))
        // The gRPC series of every call, shed and timed-out ones included.
        .layer(GrpcMetricsLayer::new(metrics.clone()))
        // Which calls are still working towards a response (shutdown).
        .layer(in_flight_layer)
        // The caller's deadline, enforced before the rest so it bounds them.
        .layer(DeadlineLayer)
        // One server-wide budget of in-flight calls; the rest are shed.
        .layer(ShedLayer::new(
            settings.max_concurrent_calls,
            metrics.shed_calls.clone(),
        ))
        // Oversized requests are RESOURCE_EXHAUSTED, as gRPC specifies.
        .layer(tower::util::MapResponseLayer::new(oversized_request_status))
        .add_service(health_service)
        .add_service(cache)
        .add_optional_service(reflection_v1)
        .add_optional_service(reflection_v1alpha)
        .serve_with_incoming_shutdown(incoming, drain);

    // tonic waits for every connection to close, with no bound. Streams end
    // themselves at shutdown, but one may be unable to deliver its last
    // status: once only streams are left, they get drain::STREAM_DRAIN.
    // Unary calls get the grace, which bounds everything.
    let grace = settings.shutdown_grace;
    tokio::select! {
        r = server => r,
        _ = async { draining.cancelled().await; tokio::time::sleep(grace).await } => {
            tracing::warn!(grace = %humantime::format_duration(grace), "shutdown grace expired; closing remaining connections");
            Ok(())
        }
        _ = async { draining.cancelled().await; drain::only_streams_left(in_flight).await } => {
            tracing::info!("shutdown: no call in flight; closing connections still held by streams");
            Ok(())
        }
    }
}
