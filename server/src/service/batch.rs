//! Unary batch RPCs. The whole request is validated first (an invalid key
//! fails the call and writes nothing); the store then groups keys by shard,
//! and shard failures come back as per-key errors.

use memgate_api::v1 as pb;

use super::CacheService;
use crate::error::{Error, Field};
use crate::metrics::HitMiss;
use crate::store::Store;

impl<S: Store> CacheService<S> {
    pub(super) async fn batch_get_keys(
        &self,
        req: pb::BatchGetRequest,
    ) -> Result<pb::BatchGetResponse, Error> {
        crate::trace::record_keys(req.keys.len());
        let keys = self.keys(req.keys)?;
        self.metrics.cache.batch_get_keys.observe(keys.len() as f64);
        // Values are charged as they arrive: a response that cannot fit
        // one message fails as soon as that is known.
        let budget = self.reservation();
        let results = self
            .get_results(keys, &budget, &self.metrics.cache.batch_get)
            .await?;
        let size: usize = results
            .iter()
            .map(|r| r.key.len() + r.value.len() + 16)
            .sum();
        if size > self.limits.max_message_bytes {
            return Err(Error::ResponseTooLarge {
                size,
                max: self.limits.max_message_bytes,
            });
        }
        Ok(pb::BatchGetResponse { results })
    }

    /// Reads `keys`, one result per key in order (shared with the stream),
    /// charging the values to `budget` and counting hits and misses in
    /// `counts`.
    pub(super) async fn get_results(
        &self,
        keys: Vec<crate::key::Key>,
        budget: &std::sync::Arc<crate::store::budget::Reservation>,
        counts: &HitMiss,
    ) -> Result<Vec<pb::GetResult>, Error> {
        let outcomes = self.store.get_many(&keys, budget).await?;
        Ok(keys
            .into_iter()
            .zip(outcomes)
            .map(|(key, outcome)| match outcome {
                Ok(found) => {
                    counts.record(found.is_some());
                    match found {
                        Some(value) => pb::GetResult {
                            key: key.into_string(),
                            found: true,
                            value,
                            ..Default::default()
                        },
                        None => pb::GetResult {
                            key: key.into_string(),
                            ..Default::default()
                        },
                    }
                }
                Err(e) => pb::GetResult {
                    key: key.into_string(),
                    error: e.to_string(),
                    error_code: e.code() as i32,
                    ..Default::default()
                },
            })
            .collect())
    }

    pub(super) async fn batch_set_items(
        &self,
        req: pb::BatchSetRequest,
    ) -> Result<pb::BatchSetResponse, Error> {
        crate::trace::record_keys(req.items.len());
        self.check_batch(req.items.len(), "items")?;
        self.metrics
            .cache
            .batch_set_keys
            .observe(req.items.len() as f64);
        let items = req
            .items
            .into_iter()
            .enumerate()
            .map(|(i, item)| self.item(item, Field::Items(i)))
            .collect::<Result<Vec<_>, _>>()?;
        let keys: Vec<String> = items.iter().map(|i| i.key.to_string()).collect();
        let outcomes = self.store.set_many(items).await;
        let mut resp = pb::BatchSetResponse::default();
        for (key, outcome) in keys.into_iter().zip(outcomes) {
            match outcome {
                Ok(()) => resp.stored += 1,
                Err(e) => resp.errors.push(key_error(key, &e)),
            }
        }
        Ok(resp)
    }

    pub(super) async fn batch_delete_keys(
        &self,
        req: pb::BatchDeleteRequest,
    ) -> Result<pb::BatchDeleteResponse, Error> {
        crate::trace::record_keys(req.keys.len());
        let keys = self.keys(req.keys)?;
        self.metrics
            .cache
            .batch_delete_keys
            .observe(keys.len() as f64);
        let outcomes = self.store.delete_many(&keys).await;
        let mut resp = pb::BatchDeleteResponse::default();
        for (key, outcome) in keys.into_iter().zip(outcomes) {
            match outcome {
                Ok(true) => resp.deleted += 1,
                Ok(false) => {}
                Err(e) => resp.errors.push(key_error(key.to_string(), &e)),
            }
        }
        Ok(resp)
    }
}

/// A per-key error with the code and text the unary status would carry.
pub(super) fn key_error(key: String, e: &Error) -> pb::KeyError {
    pb::KeyError {
        key,
        message: e.to_string(),
        code: e.code() as i32,
    }
}
