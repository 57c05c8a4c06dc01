//! Streaming batch RPCs.
//!
//! Input is taken in chunks of whatever has arrived (at most
//! [`STREAM_CHUNK`] messages), each chunk is one store batch, and results
//! flow out through a channel. Memory stays bounded by bytes however long
//! the stream is and however large its values: BatchGetStream reads a
//! chunk in pieces of at most [`PIECE_BYTES`] of values (a piece that
//! would hold more is split and read again), each piece's bytes are
//! charged to the server-wide budget until the client has taken the last
//! of its results, and at most [`PIECES_IN_FLIGHT`] pieces exist per
//! stream. A client that reads slowly therefore slows the server's reading
//! of its requests down (backpressure) instead of making it buffer. An
//! invalid item is reported for that item; the stream goes on.
//!
//! At shutdown a stream stops reading after the chunk in hand and ends with
//! UNAVAILABLE ([`Error::ShuttingDown`]), telling the client what to resend
//! to another replica; without that, an open stream would hold the server
//! until the shutdown grace expires. Client streams answer UNAVAILABLE, not
//! OK with partial totals: OK would tell a client that every item it sent
//! was handled, and resending a whole stream of sets or deletes is safe.

use std::sync::Arc;

use futures::stream::ReadyChunks;
use futures::{FutureExt, StreamExt};
use memgate_api::v1 as pb;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;
use tonic::{Status, Streaming};

use super::batch::key_error;
use super::{BoxStream, CacheService};
use crate::drain::{Prefer, end_on_drain};
use crate::error::{Error, Field};
use crate::key::Key;
use crate::store::Store;
use crate::store::budget::Reservation;

/// Most messages handled as one store batch.
pub(super) const STREAM_CHUNK: usize = 256;
/// Most bytes of values in one piece of a BatchGetStream chunk.
pub(super) const PIECE_BYTES: usize = 4 * 1024 * 1024;
/// Pieces alive at once per BatchGetStream: one being read, one being sent.
pub(super) const PIECES_IN_FLIGHT: usize = 2;

/// What keeps a piece's bytes accounted for: released when the client has
/// taken every result of the piece.
#[derive(Debug)]
struct PieceHold {
    _bytes: Arc<Reservation>,
    _turn: OwnedSemaphorePermit,
}
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
            budget: self.budget.clone(),
            draining: self.draining.clone(),
            metrics: self.metrics.clone(),
            started: self.started,
        };
        // Items are bounded by the pieces in flight, not by this channel.
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel::<(
            Result<pb::GetResult, Status>,
            Option<Arc<PieceHold>>,
        )>();
        tokio::spawn(async move {
            let turns = Arc::new(Semaphore::new(PIECES_IN_FLIGHT));
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
                            let _ = tx.send((Err(status), None));
                            return;
                        }
                        Ok(req) => match service.stream_key(&req) {
                            Ok(k) => {
                                slots.push(None);
                                keys.push(k);
                            }
                            Err(e) => slots.push(Some(pb::GetResult {
                                key: req.key,
                                error: e.to_string(),
                                error_code: e.code() as i32,
                                ..Default::default()
                            })),
                        },
                    }
                }
                // The chunk in hand is finished even if shutdown begins.
                let mut slots = slots.into_iter().peekable();
                let mut pieces = vec![keys];
                while let Some(piece) = pieces.pop() {
                    let Ok(turn) = turns.clone().acquire_owned().await else {
                        return;
                    };
                    let reservation = Arc::new(service.budget.reserve(PIECE_BYTES));
                    let results = match service
                        .get_results(
                            piece.clone(),
                            &reservation,
                            &service.metrics.cache.batch_get_stream,
                        )
                        .await
                    {
                        Ok(results) => results,
                        Err(Error::ResponseTooLarge { .. } | Error::Overloaded { .. })
                            if piece.len() > 1 =>
                        {
                            // Too many bytes at once: read it in halves.
                            let (a, b) = piece.split_at(piece.len() / 2);
                            pieces.push(b.to_vec());
                            pieces.push(a.to_vec());
                            continue;
                        }
                        Err(e) => piece.iter().map(|k| failed(k, &e)).collect(),
                    };
                    let hold = Arc::new(PieceHold {
                        _bytes: reservation,
                        _turn: turn,
                    });
                    for result in results {
                        // Invalid keys that came before this one go first.
                        while let Some(Some(_)) = slots.peek() {
                            let invalid = slots.next().flatten().expect("peeked");
                            if tx.send((Ok(invalid), None)).is_err() {
                                return;
                            }
                        }
                        slots.next();
                        if tx.send((Ok(result), Some(hold.clone()))).is_err() {
                            return; // the client went away, or shutdown ended the stream
                        }
                    }
                }
                for invalid in slots.flatten() {
                    if tx.send((Ok(invalid), None)).is_err() {
                        return;
                    }
                }
            }
        });
        // The piece's bytes are released as the client takes its results.
        // At shutdown the results end at once, even those still queued
        // here: a client reading slowly must not hold the server. Results
        // come in request order, so the client knows which keys to resend.
        let results = tokio_stream::wrappers::UnboundedReceiverStream::new(rx).map(|(r, _hold)| r);
        let last = Error::ShuttingDown {
            resume: "results come in request order; resend the keys after the last result received"
                .into(),
        };
        Box::pin(end_on_drain(
            results,
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
                        failed_count(&resp.errors)
                    );
                    return Err(Error::ShuttingDown { resume }.into());
                }
            };
            let mut items = Vec::with_capacity(chunk.len());
            for msg in chunk {
                let req = msg?;
                let key = req.key.clone();
                match self.item(req, Field::Single) {
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
                        failed_count(&resp.errors)
                    );
                    return Err(Error::ShuttingDown { resume }.into());
                }
            };
            let mut keys = Vec::with_capacity(chunk.len());
            for msg in chunk {
                let req = msg?;
                let key = match req.invalidate {
                    true => Err(Error::InvalidField {
                        field: "invalidate".to_owned(),
                        rule: "BatchDeleteStream only removes keys; invalidate with Delete",
                    }),
                    false => self.key(req.key.clone(), Field::Single),
                };
                match key {
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
fn failed_count(errors: &[pb::KeyError]) -> String {
    match errors.len() {
        0 => String::new(),
        n if n >= MAX_STREAM_ERRORS => format!(", and {n} or more failed"),
        n => format!(", and {n} failed"),
    }
}

/// A per-key result for a key whose read failed.
fn failed(key: &Key, e: &Error) -> pb::GetResult {
    pb::GetResult {
        key: key.to_string(),
        error: e.to_string(),
        error_code: e.code() as i32,
        ..Default::default()
    }
}

fn push_error(errors: &mut Vec<pb::KeyError>, e: pb::KeyError) {
    if errors.len() < MAX_STREAM_ERRORS {
        errors.push(e);
    }
}
