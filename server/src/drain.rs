//! Shutdown for streams, which have no natural end.
//!
//! When shutdown begins, unary calls in flight may finish within
//! `--shutdown-grace`; streams are told to end at once instead, each with
//! an UNAVAILABLE status saying what to resend to another replica
//! ([`end_on_drain`]). A stream that cannot deliver that status (a client
//! that stopped reading, a stream memgate does not own such as reflection)
//! gets [`STREAM_DRAIN`] once no call is working towards its response
//! ([`only_streams_left`]); then memgate closes what is left.

use std::sync::Arc;
use std::time::Duration;

use futures::{Stream, StreamExt};
use tokio_util::sync::CancellationToken;
use tonic::Status;

use crate::layers::InFlightCount;

/// At shutdown, once no call is working towards its response, how long the
/// streams that were told to end get to deliver their last status.
pub const STREAM_DRAIN: Duration = Duration::from_secs(1);

/// What a stream yields when it has an item ready and shutdown has begun.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Prefer {
    /// The item: nothing ready is lost (a health Watch must deliver
    /// NOT_SERVING, set just before draining begins, before it ends).
    Items,
    /// The last status: a stream whose client reads slowly ends at once,
    /// dropping items not yet handed to the transport.
    Drain,
}

/// `items` until `draining` is cancelled, then `last`, then the end.
pub(crate) fn end_on_drain<T, S>(
    items: S,
    draining: &CancellationToken,
    prefer: Prefer,
    last: Status,
) -> impl Stream<Item = Result<T, Status>> + Send + 'static
where
    S: Stream<Item = Result<T, Status>> + Send + Unpin + 'static,
    T: Send + 'static,
{
    // One waiter for the whole stream, not one per item.
    let drained = Box::pin(draining.clone().cancelled_owned());
    futures::stream::unfold(Some((items, drained, last)), move |state| async move {
        let (mut items, mut drained, last) = state?;
        // `None`: shutdown began.
        let next = match prefer {
            Prefer::Items => tokio::select! {
                biased;
                item = items.next() => Some(item),
                _ = &mut drained => None,
            },
            Prefer::Drain => tokio::select! {
                biased;
                _ = &mut drained => None,
                item = items.next() => Some(item),
            },
        };
        match next {
            Some(Some(item)) => Some((item, Some((items, drained, last)))),
            Some(None) => None,
            None => Some((Err(last), None)),
        }
    })
}

/// Completes once no call has been working towards its response for
/// [`STREAM_DRAIN`]: what is left then are streams that were told to end.
pub async fn only_streams_left(in_flight: Arc<InFlightCount>) {
    loop {
        in_flight.idle().await;
        tokio::time::sleep(STREAM_DRAIN).await;
        if in_flight.get() == 0 {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn items(n: i32) -> impl Stream<Item = Result<i32, Status>> + Send + Unpin + 'static {
        futures::stream::iter((0..n).map(Ok))
    }

    async fn collect(s: impl Stream<Item = Result<i32, Status>>) -> Vec<Result<i32, String>> {
        s.map(|r| r.map_err(|s| s.message().to_owned()))
            .collect()
            .await
    }

    #[tokio::test]
    async fn ends_with_the_last_status_only_when_draining() {
        let draining = CancellationToken::new();
        let last = || Status::unavailable("bye");
        let s = end_on_drain(items(2), &draining, Prefer::Drain, last());
        assert_eq!(collect(s).await, [Ok(0), Ok(1)]);

        draining.cancel();
        // Ready items first, then the status, for a stream with no end.
        let endless = items(2).chain(futures::stream::pending());
        let s = end_on_drain(endless, &draining, Prefer::Items, last());
        assert_eq!(collect(s).await, [Ok(0), Ok(1), Err("bye".into())]);
        let s = end_on_drain(items(2), &draining, Prefer::Drain, last());
        assert_eq!(collect(s).await, [Err("bye".into())]);
    }
}
