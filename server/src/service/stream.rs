//! Streaming batch RPCs.
//!
//! Input is taken in chunks of whatever has arrived (at most
//! [`STREAM_CHUNK`] messages), each chunk is one store batch, and results
//! flow out through a small bounded channel. Memory therefore stays bounded
//! however long the stream is, and a client that reads slowly slows the
//! server's reading of its requests down (backpressure) instead of making it
//! buffer. An invalid item is reported for that item; the stream goes on.

use futures::StreamExt;
use memgate_api::v1 as pb;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Status, Streaming};

use super::batch::key_error;
use super::{BoxStream, CacheService};
use crate::store::Store;

/// Most messages handled as one store batch.
pub(super) const STREAM_CHUNK: usize = 256;
/// Most per-item errors returned by a client-streaming call; further
/// failures are still counted out of `stored`/`deleted`, not listed.
pub(super) const MAX_STREAM_ERRORS: usize = 1000;

impl<S: Store> CacheService<S> {
    pub(super) fn get_stream(&self, input: Streaming<pb::GetRequest>) -> BoxStream<pb::GetResult> {
        let service = CacheService {
            store: self.store.clone(),
            limits: self.limits.clone(),
        };
        // Two chunks of results in flight at most.
        let (tx, rx) = tokio::sync::mpsc::channel(2 * STREAM_CHUNK);
        tokio::spawn(async move {
            let mut chunks = input.ready_chunks(STREAM_CHUNK);
            while let Some(chunk) = chunks.next().await {
                let mut keys = Vec::with_capacity(chunk.len());
                // Keep request order: invalid keys get their error in place.
                let mut slots = Vec::with_capacity(chunk.len());
                for msg in chunk {
                    match msg {
                        Err(status) => {
                            let _ = tx.send(Err(status)).await;
                            return;
                        }
                        Ok(req) => match service.key(req.key.clone()) {
                            Ok(k) => {
                                slots.push(Ok(keys.len()));
                                keys.push(k);
                            }
                            Err(e) => slots.push(Err(pb::GetResult {
                                key: req.key,
                                error: e.to_string(),
                                error_code: e.code() as i32,
                                ..Default::default()
                            })),
                        },
                    }
                }
                let mut results = service.get_results(keys).await.into_iter();
                for slot in slots {
                    let result = match slot {
                        Ok(_) => results.next().expect("one result per valid key"),
                        Err(invalid) => invalid,
                    };
                    if tx.send(Ok(result)).await.is_err() {
                        return; // the client went away
                    }
                }
            }
        });
        Box::pin(ReceiverStream::new(rx))
    }

    pub(super) async fn set_stream(
        &self,
        input: Streaming<pb::SetRequest>,
    ) -> Result<pb::BatchSetResponse, Status> {
        let mut resp = pb::BatchSetResponse::default();
        let mut chunks = input.ready_chunks(STREAM_CHUNK);
        while let Some(chunk) = chunks.next().await {
            let mut items = Vec::with_capacity(chunk.len());
            for msg in chunk {
                let req = msg?;
                let key = req.key.clone();
                match self.item(req) {
                    Ok(item) => items.push(item),
                    Err(e) => push_error(&mut resp.errors, key_error(key, &e)),
                }
            }
            let keys: Vec<String> = items.iter().map(|i| i.key.to_string()).collect();
            for (key, outcome) in keys.into_iter().zip(self.store.set_many(items).await) {
                match outcome {
                    Ok(()) => resp.stored += 1,
                    Err(e) => push_error(&mut resp.errors, key_error(key, &e)),
                }
            }
        }
        Ok(resp)
    }

    pub(super) async fn delete_stream(
        &self,
        input: Streaming<pb::DeleteRequest>,
    ) -> Result<pb::BatchDeleteResponse, Status> {
        let mut resp = pb::BatchDeleteResponse::default();
        let mut chunks = input.ready_chunks(STREAM_CHUNK);
        while let Some(chunk) = chunks.next().await {
            let mut keys = Vec::with_capacity(chunk.len());
            for msg in chunk {
                let req = msg?;
                match self.key(req.key.clone()) {
                    Ok(k) => keys.push(k),
                    Err(e) => push_error(&mut resp.errors, key_error(req.key, &e)),
                }
            }
            for (key, outcome) in keys.iter().zip(self.store.delete_many(&keys).await) {
                match outcome {
                    Ok(true) => resp.deleted += 1,
                    Ok(false) => {}
                    Err(e) => push_error(&mut resp.errors, key_error(key.to_string(), &e)),
                }
            }
        }
        Ok(resp)
    }
}

fn push_error(errors: &mut Vec<pb::KeyError>, e: pb::KeyError) {
    if errors.len() < MAX_STREAM_ERRORS {
        errors.push(e);
    }
}
