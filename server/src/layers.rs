//! The tower middleware in front of every gRPC service, each doing one job.
//!
//! tonic builds `Server::layer` stacks once per connection, so any limit
//! meant to be global keeps its state in an `Arc` shared by every copy.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use std::sync::atomic::{AtomicUsize, Ordering};

use tokio::sync::{Notify, Semaphore};
use tonic::Status;
use tonic::body::Body;
use tonic::codegen::http;
use tower::{Layer, Service};

use crate::error::Error;
use crate::metrics::Counter;

type BoxFuture<T, E> = Pin<Box<dyn Future<Output = Result<T, E>> + Send>>;

/// Paths never shed or limited: probes must answer under load, or an
/// overloaded pod looks dead and gets restarted.
fn is_exempt(path: &str) -> bool {
    path.starts_with("/grpc.health.v1.Health/") || path.starts_with("/grpc.reflection.")
}

/// Enforces the caller's `grpc-timeout` as a real deadline.
///
/// tonic only reports its own timeout as CANCELLED; callers must see
/// DEADLINE_EXCEEDED, and no call may outlive its deadline waiting on a
/// slow shard.
#[derive(Clone, Debug, Default)]
pub struct DeadlineLayer;

impl<S> Layer<S> for DeadlineLayer {
    type Service = Deadline<S>;
    fn layer(&self, inner: S) -> Deadline<S> {
        Deadline { inner }
    }
}

/// See [`DeadlineLayer`].
#[derive(Clone, Debug)]
pub struct Deadline<S> {
    inner: S,
}

impl<S, B> Service<http::Request<B>> for Deadline<S>
where
    S: Service<http::Request<B>, Response = http::Response<Body>>,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
{
    type Response = http::Response<Body>;
    type Error = S::Error;
    type Future = BoxFuture<Self::Response, Self::Error>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: http::Request<B>) -> Self::Future {
        let deadline = req
            .headers()
            .get("grpc-timeout")
            .and_then(|v| v.to_str().ok())
            .and_then(parse_grpc_timeout);
        let fut = self.inner.call(req);
        Box::pin(async move {
            let Some(deadline) = deadline else {
                return fut.await;
            };
            match tokio::time::timeout(answer_by(deadline), fut).await {
                Ok(r) => r,
                Err(_) => Ok(Status::from(Error::DeadlineExceeded { deadline }).into_http()),
            }
        })
    }
}

/// When to give up on a call with `deadline`: a little early, so that
/// memgate's DEADLINE_EXCEEDED reaches the caller before tonic's own
/// enforcement of the same header (which sits outside this layer and
/// answers CANCELLED) or the caller's timer fires. The margin (a tenth,
/// 5 to 50 ms) covers the answer's trip back on a busy machine: with a
/// twentieth, capped at 20 ms, a 250 ms deadline under CPU contention
/// sometimes reached the caller as its own CANCELLED instead.
pub fn answer_by(deadline: Duration) -> Duration {
    let margin = (deadline / 10).clamp(Duration::from_millis(5), Duration::from_millis(50));
    deadline.saturating_sub(margin)
}

/// Parses a `grpc-timeout` header: up to 8 digits and a unit
/// (`H`, `M`, `S`, `m`, `u`, `n`).
pub fn parse_grpc_timeout(v: &str) -> Option<Duration> {
    if v.len() < 2 || v.len() > 9 {
        return None;
    }
    let (digits, unit) = v.split_at(v.len() - 1);
    if !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let n: u64 = digits.parse().ok()?;
    Some(match unit {
        "H" => Duration::from_secs(n * 3600),
        "M" => Duration::from_secs(n * 60),
        "S" => Duration::from_secs(n),
        "m" => Duration::from_millis(n),
        "u" => Duration::from_micros(n),
        "n" => Duration::from_nanos(n),
        _ => return None,
    })
}

/// Limits the calls in flight across the whole server and sheds the rest
/// at once with RESOURCE_EXHAUSTED, instead of queueing them without bound.
#[derive(Clone, Debug)]
pub struct ShedLayer {
    permits: Arc<Semaphore>,
    max: usize,
    shed: Counter,
}

impl ShedLayer {
    /// At most `max` calls in flight, server-wide; calls shed are counted
    /// in `shed`.
    pub fn new(max: usize, shed: Counter) -> ShedLayer {
        ShedLayer {
            permits: Arc::new(Semaphore::new(max)),
            max,
            shed,
        }
    }
}

impl<S> Layer<S> for ShedLayer {
    type Service = Shed<S>;
    fn layer(&self, inner: S) -> Shed<S> {
        Shed {
            inner,
            permits: self.permits.clone(),
            max: self.max,
            shed: self.shed.clone(),
        }
    }
}

/// See [`ShedLayer`].
#[derive(Clone, Debug)]
pub struct Shed<S> {
    inner: S,
    permits: Arc<Semaphore>,
    max: usize,
    shed: Counter,
}

impl<S, B> Service<http::Request<B>> for Shed<S>
where
    S: Service<http::Request<B>, Response = http::Response<Body>>,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
{
    type Response = http::Response<Body>;
    type Error = S::Error;
    type Future = BoxFuture<Self::Response, Self::Error>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: http::Request<B>) -> Self::Future {
        if is_exempt(req.uri().path()) {
            return Box::pin(self.inner.call(req));
        }
        match self.permits.clone().try_acquire_owned() {
            Ok(permit) => {
                let fut = self.inner.call(req);
                Box::pin(async move {
                    let r = fut.await;
                    drop(permit);
                    r
                })
            }
            Err(_) => {
                self.shed.inc();
                let status = Status::from(Error::TooManyCalls { max: self.max });
                Box::pin(async move { Ok(status.into_http()) })
            }
        }
    }
}

/// Counts the calls still working towards their response: unary calls in
/// flight and client streams still reading. A server or bidirectional
/// stream (a BatchGetStream, a health Watch) stops counting once its
/// response has begun. At shutdown this tells unary calls, which keep the
/// grace, from streams, which are told to end.
#[derive(Clone, Debug, Default)]
pub struct InFlightLayer {
    count: Arc<InFlightCount>,
}

impl InFlightLayer {
    /// A layer counting from zero.
    pub fn new() -> InFlightLayer {
        InFlightLayer::default()
    }

    /// The count it keeps.
    pub fn count(&self) -> Arc<InFlightCount> {
        self.count.clone()
    }
}

/// The count an [`InFlightLayer`] keeps.
#[derive(Debug, Default)]
pub struct InFlightCount {
    calls: AtomicUsize,
    idle: Notify,
}

impl InFlightCount {
    /// Calls counted now.
    pub fn get(&self) -> usize {
        self.calls.load(Ordering::SeqCst)
    }

    /// Completes once no call is counted.
    pub async fn idle(&self) {
        loop {
            let idle = self.idle.notified();
            tokio::pin!(idle);
            // Registered before the check, so a call ending in between
            // still wakes it.
            idle.as_mut().enable();
            if self.get() == 0 {
                return;
            }
            idle.await;
        }
    }

    fn enter(self: &Arc<Self>) -> Counted {
        self.calls.fetch_add(1, Ordering::SeqCst);
        Counted(self.clone())
    }
}

impl<S> Layer<S> for InFlightLayer {
    type Service = InFlight<S>;
    fn layer(&self, inner: S) -> InFlight<S> {
        InFlight {
            inner,
            count: self.count.clone(),
        }
    }
}

/// See [`InFlightLayer`].
#[derive(Clone, Debug)]
pub struct InFlight<S> {
    inner: S,
    count: Arc<InFlightCount>,
}

/// Counts one call until dropped (also when its future is cancelled).
struct Counted(Arc<InFlightCount>);

impl Drop for Counted {
    fn drop(&mut self) {
        if self.0.calls.fetch_sub(1, Ordering::SeqCst) == 1 {
            self.0.idle.notify_waiters();
        }
    }
}

impl<S, B> Service<http::Request<B>> for InFlight<S>
where
    S: Service<http::Request<B>, Response = http::Response<Body>>,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
{
    type Response = http::Response<Body>;
    type Error = S::Error;
    type Future = BoxFuture<Self::Response, Self::Error>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: http::Request<B>) -> Self::Future {
        let counted = self.count.enter();
        let fut = self.inner.call(req);
        Box::pin(async move {
            let r = fut.await;
            drop(counted);
            r
        })
    }
}

/// Reports a request larger than the message limit as RESOURCE_EXHAUSTED
/// (what gRPC specifies, and what other servers send) instead of tonic's
/// OUT_OF_RANGE, with a hint the caller can act on. Used with
/// `tower::util::MapResponseLayer`.
///
/// tonic's decoder answers such a unary request with a trailers-only
/// response, so the status is in the headers, where this rewrites it.
pub fn oversized_request_status(resp: http::Response<Body>) -> http::Response<Body> {
    match Status::from_header_map(resp.headers()) {
        Some(status)
            if status.code() == tonic::Code::OutOfRange
                && status
                    .message()
                    .contains("decoded message length too large") =>
        {
            Status::from(Error::RequestTooLarge {
                detail: status.message().trim_start_matches("Error, ").to_owned(),
            })
            .into_http()
        }
        _ => resp,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_grpc_timeouts() {
        assert_eq!(parse_grpc_timeout("100m"), Some(Duration::from_millis(100)));
        assert_eq!(parse_grpc_timeout("5S"), Some(Duration::from_secs(5)));
        assert_eq!(parse_grpc_timeout("2M"), Some(Duration::from_secs(120)));
        assert_eq!(parse_grpc_timeout("1H"), Some(Duration::from_secs(3600)));
        assert_eq!(
            parse_grpc_timeout("99999999u"),
            Some(Duration::from_micros(99_999_999))
        );
        assert_eq!(parse_grpc_timeout("7n"), Some(Duration::from_nanos(7)));
        for bad in ["", "m", "100", "100x", "-1S", "123456789S", "1.5S", " 1S"] {
            assert_eq!(parse_grpc_timeout(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn answers_a_little_before_the_deadline() {
        assert_eq!(
            answer_by(Duration::from_secs(10)),
            Duration::from_millis(9950)
        );
        assert_eq!(
            answer_by(Duration::from_millis(200)),
            Duration::from_millis(180)
        );
        assert_eq!(
            answer_by(Duration::from_millis(10)),
            Duration::from_millis(5)
        );
        assert_eq!(answer_by(Duration::from_millis(1)), Duration::ZERO);
    }

    #[tokio::test]
    async fn counts_calls_until_their_response_begins() {
        let layer = InFlightLayer::new();
        let count = layer.count();
        let (release, released) = tokio::sync::oneshot::channel::<()>();
        let released = Arc::new(tokio::sync::Mutex::new(Some(released)));
        let mut svc = layer.layer(tower::service_fn(move |_req: http::Request<()>| {
            let released = released.clone();
            async move {
                if let Some(rx) = released.lock().await.take() {
                    let _ = rx.await;
                }
                Ok::<_, std::convert::Infallible>(http::Response::new(Body::empty()))
            }
        }));
        let call = tokio::spawn(svc.call(http::Request::new(())));
        assert_eq!(count.get(), 1);
        let idle = tokio::spawn({
            let count = count.clone();
            async move { count.idle().await }
        });
        // A call cancelled before answering stops counting too.
        let cancelled = svc.call(http::Request::new(()));
        assert_eq!(count.get(), 2);
        drop(cancelled);
        assert_eq!(count.get(), 1);
        tokio::task::yield_now().await;
        assert!(!idle.is_finished());
        release.send(()).unwrap();
        call.await.unwrap().unwrap();
        assert_eq!(count.get(), 0);
        idle.await.unwrap();
    }

    #[test]
    fn probes_are_exempt() {
        assert!(is_exempt("/grpc.health.v1.Health/Check"));
        assert!(is_exempt(
            "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo"
        ));
        assert!(!is_exempt("/memgate.v1.Cache/Get"));
    }
}
