//! The grpc.health.v1 service, wired to whether the store can answer.
//!
//! Both "" (the whole server) and "memgate.v1.Cache" start NOT_SERVING —
//! tonic-health marks "" SERVING on creation, which would let a mesh route
//! traffic before any shard has answered — and a background task probes
//! every shard (memcached `version`, never a write) each interval: SERVING
//! while at least one shard answers, NOT_SERVING when none does. Watchers
//! see each change as it happens.
//!
//! Each memcached server also has a status of its own, under the service
//! name `memcached:<addr>` (e.g. `grpc-health-probe -service
//! memcached:10.0.0.1:11211`), so an operator can see which shard is down.
//!
//! At shutdown every status turns NOT_SERVING, and then each Watch ends
//! with UNAVAILABLE: a Watch never ends by itself, and an open one would
//! hold the server until the shutdown grace expires.

use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use futures::Stream;
use memgate_api::v1::cache_server::SERVICE_NAME;
use tokio_util::sync::CancellationToken;
use tonic::{Request, Response, Status};
use tonic_health::ServingStatus;
use tonic_health::pb::health_server::{Health, HealthServer};
use tonic_health::pb::{HealthCheckRequest, HealthCheckResponse};
use tonic_health::server::{HealthReporter, HealthService};

use crate::drain::{Prefer, end_on_drain};
use crate::error::Error;
use crate::store::{Reachability, Store};

/// The service names health is reported for.
pub const SERVICES: [&str; 2] = ["", SERVICE_NAME];

/// The health service name of one memcached server.
pub fn shard_service(addr: &str) -> String {
    format!("memcached:{addr}")
}

/// The health service over `reporter`'s statuses; its Watch streams end
/// once `draining` is cancelled.
pub fn service(reporter: &HealthReporter, draining: CancellationToken) -> HealthServer<Draining> {
    HealthServer::new(Draining {
        inner: HealthService::from_health_reporter(reporter.clone()),
        draining,
    })
}

/// tonic-health's service, with Watch streams that end at shutdown.
#[derive(Debug)]
pub struct Draining {
    inner: HealthService,
    draining: CancellationToken,
}

type WatchStream = Pin<Box<dyn Stream<Item = Result<HealthCheckResponse, Status>> + Send>>;

#[tonic::async_trait]
impl Health for Draining {
    async fn check(
        &self,
        req: Request<HealthCheckRequest>,
    ) -> Result<Response<HealthCheckResponse>, Status> {
        self.inner.check(req).await
    }

    type WatchStream = WatchStream;

    async fn watch(
        &self,
        req: Request<HealthCheckRequest>,
    ) -> Result<Response<WatchStream>, Status> {
        let statuses = self.inner.watch(req).await?.into_inner();
        let last = Error::ShuttingDown {
            resume: "watch health there".into(),
        };
        // Updates first: NOT_SERVING is set before draining begins, and
        // watchers must see it before their stream ends.
        let stream = end_on_drain(statuses, &self.draining, Prefer::Items, last.into());
        Ok(Response::new(Box::pin(stream)))
    }
}

/// Sets every reported service to `status`.
pub async fn set_all(reporter: &HealthReporter, status: ServingStatus) {
    for name in SERVICES {
        reporter.set_service_status(name, status).await;
    }
}

/// Probes `store` every `interval` until `stop`, keeping `reporter` current.
pub async fn run_checker<S: Store>(
    store: Arc<S>,
    mut reporter: HealthReporter,
    interval: Duration,
    stop: CancellationToken,
) {
    let mut last: Option<Reachability> = None;
    loop {
        let now = tokio::select! {
            _ = stop.cancelled() => return,
            r = store.probe() => r,
        };
        if last.as_ref() != Some(&now) {
            let status = if now.serving() {
                ServingStatus::Serving
            } else {
                ServingStatus::NotServing
            };
            if now.up < now.total {
                tracing::warn!(
                    up = now.up,
                    total = now.total,
                    ?status,
                    "shard reachability changed"
                );
            } else {
                tracing::info!(
                    up = now.up,
                    total = now.total,
                    ?status,
                    "shard reachability changed"
                );
            }
            // Shutdown may have begun while probing; it owns the status then.
            if stop.is_cancelled() {
                return;
            }
            set_all(&reporter, status).await;
            // Servers that left the pool no longer have a status.
            for (addr, _) in last.iter().flat_map(|l| &l.shards) {
                if !now.shards.iter().any(|(a, _)| a == addr) {
                    reporter.clear_service_status(&shard_service(addr)).await;
                }
            }
            for (addr, ok) in &now.shards {
                let shard_status = if *ok {
                    ServingStatus::Serving
                } else {
                    ServingStatus::NotServing
                };
                reporter
                    .set_service_status(shard_service(addr), shard_status)
                    .await;
            }
            last = Some(now);
        }
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(interval) => {}
        }
    }
}
