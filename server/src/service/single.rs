//! Single-key RPCs: Get, Set, Delete, Increment, Touch, and List.

use memgate_api::v1 as pb;

use super::CacheService;
use crate::error::{Error, Field};
use crate::key::Ttl;
use crate::store::{Increment, Lease, Store};

impl<S: Store> CacheService<S> {
    pub(super) async fn get_one(&self, req: pb::GetRequest) -> Result<pb::GetResponse, Error> {
        crate::trace::record_keys(1);
        let opts = self.read_options(&req, Field::Single)?;
        let key = self.key(req.key, Field::Single)?;
        // Held until the response is built; the value is charged to it.
        let budget = self.reservation();
        let found = self.store.get(&key, opts, &budget).await?;
        self.metrics.cache.get.record(found.value.is_some());
        Ok(pb::GetResponse {
            found: found.value.is_some(),
            value: found.value.unwrap_or_default(),
            cas: found.cas,
            ttl_remaining_seconds: found.ttl_left,
            lease: match found.lease {
                Lease::None => pb::LeaseState::Unspecified,
                Lease::Won => pb::LeaseState::Won,
                Lease::Held => pb::LeaseState::Held,
            } as i32,
            stale: found.stale,
        })
    }

    pub(super) async fn set_one(&self, req: pb::SetRequest) -> Result<pb::SetResponse, Error> {
        crate::trace::record_keys(1);
        let item = self.item(req, Field::Single)?;
        match self.store.set(item).await {
            Ok(cas) => Ok(pb::SetResponse { stored: true, cas }),
            // Not an error for a single Set: the caller asked a question.
            Err(Error::ConditionFailed { .. }) => Ok(pb::SetResponse::default()),
            Err(e) => Err(e),
        }
    }

    pub(super) async fn delete_one(
        &self,
        req: pb::DeleteRequest,
    ) -> Result<pb::DeleteResponse, Error> {
        crate::trace::record_keys(1);
        let key = self.key(req.key, Field::Single)?;
        let deleted = match req.invalidate {
            true => {
                let stale_for = Ttl::from_secs(self.limits.stale_ttl);
                self.store.invalidate(&key, stale_for).await?
            }
            false => self.store.delete(&key).await?,
        };
        Ok(pb::DeleteResponse { deleted })
    }

    pub(super) async fn increment_one(
        &self,
        req: pb::IncrementRequest,
    ) -> Result<pb::IncrementResponse, Error> {
        let key = self.key(req.key, Field::Single)?;
        let ttl = Ttl::from_secs(req.ttl_seconds.unwrap_or(self.limits.default_ttl));
        let value = self
            .store
            .increment(Increment {
                key,
                delta: req.delta,
                initial: req.initial_value,
                ttl,
            })
            .await?;
        Ok(pb::IncrementResponse { value })
    }

    pub(super) async fn touch_one(
        &self,
        req: pb::TouchRequest,
    ) -> Result<pb::TouchResponse, Error> {
        let key = self.key(req.key, Field::Single)?;
        let found = self
            .store
            .touch(&key, Ttl::from_secs(req.ttl_seconds))
            .await?;
        Ok(pb::TouchResponse { found })
    }

    pub(super) async fn list_keys(&self, req: pb::ListRequest) -> Result<pb::ListResponse, Error> {
        let max = self.limits.list_max_keys;
        let limit = match req.limit as usize {
            0 => max,
            n => n.min(max),
        };
        let keys = self.store.list(&req.prefix, limit).await?;
        Ok(pb::ListResponse { keys })
    }

    /// Where each key lives now: nothing is read or written.
    pub(super) fn locate_keys(&self, req: pb::LocateRequest) -> Result<pb::LocateResponse, Error> {
        crate::trace::record_keys(req.keys.len());
        let keys = self.keys(req.keys)?;
        Ok(pb::LocateResponse {
            locations: keys
                .into_iter()
                .map(|key| {
                    let (shard, up) = self.store.locate(&key);
                    pb::KeyLocation {
                        key: key.into_string(),
                        shard,
                        up,
                    }
                })
                .collect(),
        })
    }
}
