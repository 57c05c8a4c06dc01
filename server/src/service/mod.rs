//! The `memgate.v1.Cache` gRPC service.
//!
//! The trait impl only delegates: single-key RPCs live in [`single`], unary
//! batches in [`batch`], streams in [`stream`], the Stats RPC in [`stats`]. Requests are parsed into
//! validated types here at the edge, so nothing is written before every rule
//! has passed; errors become statuses in one place (`crate::error`).
//!
//! Streams have no natural end, so at shutdown the service ends them itself
//! (see [`stream`]): `draining` is cancelled once shutdown begins.

mod batch;
mod single;
mod stats;
mod stream;

use std::pin::Pin;
use std::sync::Arc;
use std::time::Instant;

use futures::Stream;
use memgate_api::v1 as pb;
use tokio_util::sync::CancellationToken;
use tonic::{Request, Response, Status, Streaming};

use crate::config::Limits;
use crate::error::{Error, Field};
use crate::key::{Key, Ttl};
use crate::metrics::Metrics;
use crate::store::budget::{ByteBudget, Reservation};
use crate::store::{Condition, Item, ReadOptions, Store};

/// The Cache service over a store.
#[derive(Debug)]
pub struct CacheService<S> {
    store: Arc<S>,
    limits: Limits,
    /// Bytes of values held for all calls at once.
    budget: Arc<ByteBudget>,
    /// Cancelled when shutdown begins: open streams end.
    draining: CancellationToken,
    metrics: Arc<Metrics>,
    /// When the service was created: Stats reports the uptime from here.
    started: Instant,
}

impl<S: Store> CacheService<S> {
    /// A service answering from `store` within `limits`; its open streams
    /// end (UNAVAILABLE) once `draining` is cancelled.
    /// Hits, misses and batch sizes are recorded in `metrics`.
    pub fn new(
        store: Arc<S>,
        limits: Limits,
        draining: CancellationToken,
        metrics: Arc<Metrics>,
    ) -> Self {
        let budget = ByteBudget::new(limits.max_inflight_bytes, metrics.cache.shed_bytes.clone());
        let (held, gauge) = (budget.clone(), metrics.inflight_bytes.clone());
        metrics.sample_on_scrape(move || gauge.set(held.used() as i64));
        CacheService {
            store,
            limits,
            budget,
            draining,
            metrics,
            started: Instant::now(),
        }
    }

    /// A reservation for one unary call: its response must fit one message.
    fn reservation(&self) -> Arc<Reservation> {
        Arc::new(self.budget.reserve(self.limits.max_message_bytes))
    }

    /// Validates the key at `field` of the request.
    fn key(&self, raw: String, field: Field) -> Result<Key, Error> {
        Key::parse(raw.as_str()).map_err(|e| Error::invalid_key(field, &raw, e))
    }

    fn keys(&self, raw: Vec<String>) -> Result<Vec<Key>, Error> {
        self.check_batch(raw.len(), "keys")?;
        raw.into_iter()
            .enumerate()
            .map(|(i, k)| self.key(k, Field::Keys(i)))
            .collect()
    }

    /// Checks the length of the repeated `field` of a batch.
    fn check_batch(&self, count: usize, field: &'static str) -> Result<(), Error> {
        if count > self.limits.max_batch_keys {
            return Err(Error::TooManyKeys {
                field,
                count,
                max: self.limits.max_batch_keys,
            });
        }
        Ok(())
    }

    /// Validates a write at `field` of the request: key rules, value size
    /// for the owning shard, TTL.
    fn item(&self, req: pb::SetRequest, field: Field) -> Result<Item, Error> {
        let key = self.key(req.key, field)?;
        let (max, limit) = self.store.max_value_len(&key);
        if req.value.len() > max {
            return Err(Error::ValueTooLarge {
                field,
                key: crate::error::shorten(key.as_str()),
                len: req.value.len(),
                max,
                limit,
            });
        }
        let ttl = Ttl::from_secs(req.ttl_seconds.unwrap_or(self.limits.default_ttl));
        let condition = match pb::SetCondition::try_from(req.condition) {
            Ok(pb::SetCondition::Unspecified) => Condition::Always,
            Ok(pb::SetCondition::Absent) => Condition::Absent,
            Ok(pb::SetCondition::Present) => Condition::Present,
            Ok(pb::SetCondition::CasMatch) => Condition::CasMatch(req.cas),
            Err(_) => {
                return Err(Error::InvalidField {
                    field: field.path("condition"),
                    rule: "not a SetCondition this server knows (0 to 3)",
                });
            }
        };
        Ok(Item {
            key,
            value: req.value,
            ttl,
            condition,
        })
    }

    /// The key of a BatchGetStream request, which reads plainly: a request
    /// with Get's options is refused rather than read without them.
    fn stream_key(&self, req: &pb::GetRequest) -> Result<Key, Error> {
        let field = match (req.touch_ttl_seconds, req.lease_ttl_seconds) {
            (None, None) => return self.key(req.key.clone(), Field::Single),
            (Some(_), _) => "touch_ttl_seconds",
            (None, Some(_)) => "lease_ttl_seconds",
        };
        Err(Error::InvalidField {
            field: field.to_owned(),
            rule: "BatchGetStream reads plainly; touch or take a lease with Get",
        })
    }

    /// The options of a Get at `field` (touch and lease TTLs).
    fn read_options(&self, req: &pb::GetRequest, field: Field) -> Result<ReadOptions, Error> {
        if req.lease_ttl_seconds == Some(0) {
            return Err(Error::InvalidField {
                field: field.path("lease_ttl_seconds"),
                rule: "a lease lasts at least 1 second (a placeholder that never expires would block its key if its winner never fills it)",
            });
        }
        Ok(ReadOptions {
            touch: req.touch_ttl_seconds.map(Ttl::from_secs),
            lease: req.lease_ttl_seconds.map(Ttl::from_secs),
        })
    }
}

type BoxStream<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send + 'static>>;

#[tonic::async_trait]
impl<S: Store> pb::cache_server::Cache for CacheService<S> {
    async fn get(&self, req: Request<pb::GetRequest>) -> Result<Response<pb::GetResponse>, Status> {
        Ok(Response::new(self.get_one(req.into_inner()).await?))
    }

    async fn set(&self, req: Request<pb::SetRequest>) -> Result<Response<pb::SetResponse>, Status> {
        Ok(Response::new(self.set_one(req.into_inner()).await?))
    }

    async fn delete(
        &self,
        req: Request<pb::DeleteRequest>,
    ) -> Result<Response<pb::DeleteResponse>, Status> {
        Ok(Response::new(self.delete_one(req.into_inner()).await?))
    }

    async fn increment(
        &self,
        req: Request<pb::IncrementRequest>,
    ) -> Result<Response<pb::IncrementResponse>, Status> {
        Ok(Response::new(self.increment_one(req.into_inner()).await?))
    }

    async fn touch(
        &self,
        req: Request<pb::TouchRequest>,
    ) -> Result<Response<pb::TouchResponse>, Status> {
        Ok(Response::new(self.touch_one(req.into_inner()).await?))
    }

    async fn list(
        &self,
        req: Request<pb::ListRequest>,
    ) -> Result<Response<pb::ListResponse>, Status> {
        Ok(Response::new(self.list_keys(req.into_inner()).await?))
    }

    async fn batch_get(
        &self,
        req: Request<pb::BatchGetRequest>,
    ) -> Result<Response<pb::BatchGetResponse>, Status> {
        Ok(Response::new(self.batch_get_keys(req.into_inner()).await?))
    }

    async fn batch_set(
        &self,
        req: Request<pb::BatchSetRequest>,
    ) -> Result<Response<pb::BatchSetResponse>, Status> {
        Ok(Response::new(self.batch_set_items(req.into_inner()).await?))
    }

    async fn batch_delete(
        &self,
        req: Request<pb::BatchDeleteRequest>,
    ) -> Result<Response<pb::BatchDeleteResponse>, Status> {
        Ok(Response::new(
            self.batch_delete_keys(req.into_inner()).await?,
        ))
    }

    type BatchGetStreamStream = BoxStream<pb::GetResult>;

    async fn batch_get_stream(
        &self,
        req: Request<Streaming<pb::GetRequest>>,
    ) -> Result<Response<Self::BatchGetStreamStream>, Status> {
        Ok(Response::new(self.get_stream(req.into_inner())))
    }

    async fn batch_set_stream(
        &self,
        req: Request<Streaming<pb::SetRequest>>,
    ) -> Result<Response<pb::BatchSetResponse>, Status> {
        Ok(Response::new(self.set_stream(req.into_inner()).await?))
    }

    async fn batch_delete_stream(
        &self,
        req: Request<Streaming<pb::DeleteRequest>>,
    ) -> Result<Response<pb::BatchDeleteResponse>, Status> {
        Ok(Response::new(self.delete_stream(req.into_inner()).await?))
    }

    async fn stats(
        &self,
        req: Request<pb::StatsRequest>,
    ) -> Result<Response<pb::StatsResponse>, Status> {
        Ok(Response::new(self.report(req.into_inner()).await))
    }

    async fn locate(
        &self,
        req: Request<pb::LocateRequest>,
    ) -> Result<Response<pb::LocateResponse>, Status> {
        Ok(Response::new(self.locate_keys(req.into_inner())?))
    }
}
