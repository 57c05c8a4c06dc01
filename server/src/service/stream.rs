//! Streaming batch RPCs.
//!
//! Input is taken in chunks of whatever has arrived (at most
//! [`STREAM_CHUNK`] messages), each chunk is one store batch, and results
//! flow out through a small bounded channel. Memory therefore stays bounded
//! however long the stream is, and a client that reads slowly slows the
//! server's reading of its requests down (backpressure) instead of making it
//! buffer. An invalid item is reported for that item; the stream goes on.
//!
//! At shutdown a stream stops reading after the chunk in hand and ends with
//! UNAVAILABLE ([`Error::ShuttingDown`]), telling the client what to resend
//! to another replica; without that, an open stream would hold the server
//! until the shutdown grace expires. Client streams answer UNAVAILABLE, not
//! OK with partial totals: OK would tell a client that every item it sent
//! was handled, and resending a whole stream of sets or deletes is safe.

use futures::stream::ReadyChunks;
use futures::{FutureExt, StreamExt};
use memgate_api::v1 as pb;
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;
use tonic::{Status, Streaming};

use super::batch::key_error;
use super::{BoxStream, CacheService};
use crate::drain::{Prefer, end_on_drain};
use crate::error::Error;
use crate::store::Store;

/// Most messages handled as one store batch.
pub(super) const STREAM_CHUNK: usize = 256;
/// Most per-item errors returned by a client-streaming call; further
/// failures are still counted out of `stored`/`deleted`, not listed.
pub(super) const MAX_STREAM_ERRORS: usize = 1000;

/// What a streaming handler does next.
enum Next<T> {
    /// Handle this chunk of input.
    Chunk(Vec<Result<T, Status>>),
    /// The client closed its side: answer as usual.
    End,
    /// Shutdown began: stop reading.
    Draining,
}

/// Waits for the next chunk of input, unless shutdown begins first. Input
/// that has already ended still counts as ended, so a stream the client
/// finished is answered as usual.
async fn next_chunk<T>(
    chunks: &mut ReadyChunks<Streaming<T>>,
    draining: &CancellationToken,
) -> Next<T> {
    tokio::select! {
        biased;
        _ = draining.cancelled() => match chunks.next().now_or_never() {
            Some(None) => Next::End,
            _ => Next::Draining,
        },
        chunk = chunks.next() => chunk.map_or(Next::End, Next::Chunk),
    }
}

impl<S: Store> CacheService<S> {
    pub(super) fn get_stream(&self, input: Streaming<pb::GetRequest>) -> BoxStream<pb::GetResult> {
        let service = CacheService {
            store: self.store.clone(),
            limits: self.limits.clone(),
            draining: self.draining.clone(),
        };
        // Two chunks of results in flight at most.
        let (tx, rx) = tokio::sync::mpsc::channel(2 * STREAM_CHUNK);
        tokio::spawn(async move {
            let draining = &service.draining;
            let mut chunks = input.ready_chunks(STREAM_CHUNK);
            // Ends on drain too, dropping the input: the request side must
            // close for the connection to close.
            while let Next::Chunk(chunk) = next_chunk(&mut chunks, draining).await {
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
                // The chunk in hand is finished even if shutdown begins.
                let mut results = service.get_results(keys).await.into_iter();
                for slot in slots {
                    let result = match slot {
                        Ok(_) => results.next().expect("one result per valid key"),
                        Err(invalid) => invalid,
                    };
                    if tx.send(Ok(result)).await.is_err() {
                        return; // the client went away, or shutdown ended the stream
                    }
                }
            }
        });
        // At shutdown the results end at once, even those still queued
        // here: a client reading slowly must not hold the server. Results
        // come in request order, so the client knows which keys to resend.
        let last = Error::ShuttingDown {
            resume: "results come in request order; resend the keys after the last result received"
                .into(),
        };
        Box::pin(end_on_drain(
            ReceiverStream::new(rx),
            &self.draining,
            Prefer::Drain,
            last.into(),
        ))
    }

    pub(super) async fn set_stream(
        &self,
        input: Streaming<pb::SetRequest>,
    ) -> Result<pb::BatchSetResponse, Status> {
        let mut resp = pb::BatchSetResponse::default();
        let mut chunks = input.ready_chunks(STREAM_CHUNK);
        loop {
            let chunk = match next_chunk(&mut chunks, &self.draining).await {
                Next::Chunk(chunk) => chunk,
                Next::End => break,
                Next::Draining => {
                    let resume = format!(
                        "this stream stored {} items{} before memgate stopped reading it; resend the whole stream (sets are idempotent)",
                        resp.stored,
                        failed(&resp.errors)
                    );
                    return Err(Error::ShuttingDown { resume }.into());
                }
            };
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
        loop {
            let chunk = match next_chunk(&mut chunks, &self.draining).await {
                Next::Chunk(chunk) => chunk,
                Next::End => break,
                Next::Draining => {
                    let resume = format!(
                        "this stream deleted {} keys{} before memgate stopped reading it; resend the whole stream (deletes are idempotent)",
                        resp.deleted,
                        failed(&resp.errors)
                    );
                    return Err(Error::ShuttingDown { resume }.into());
                }
            };
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

/// ", and N failed" when items failed (a count of those listed).
fn failed(errors: &[pb::KeyError]) -> String {
    match errors.len() {
        0 => String::new(),
        n if n >= MAX_STREAM_ERRORS => format!(", and {n} or more failed"),
        n => format!(", and {n} failed"),
    }
}

fn push_error(errors: &mut Vec<pb::KeyError>, e: pb::KeyError) {
    if errors.len() < MAX_STREAM_ERRORS {
        errors.push(e);
    }
}
