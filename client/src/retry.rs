//! Bounded retries with jittered exponential backoff.
//!
//! Only idempotent calls are retried (Get, BatchGet, Delete, List — and Set
//! only when asked), and only on `UNAVAILABLE`: every other status is an
//! answer, not a transient failure.

use std::future::Future;
use std::time::Duration;

use tonic::{Code, Status};

/// How failed idempotent calls are retried.
#[derive(Clone, Copy, Debug)]
pub struct RetryPolicy {
    /// Attempts in all, the first included (1 = no retries).
    pub max_attempts: u32,
    /// Backoff before the first retry; doubles each time.
    pub base_backoff: Duration,
    /// Upper bound of one backoff.
    pub max_backoff: Duration,
    /// Retry Set and BatchSet too (a retried write can land twice, which is
    /// harmless for a plain overwrite but not for every use).
    pub retry_writes: bool,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            max_attempts: 3,
            base_backoff: Duration::from_millis(25),
            max_backoff: Duration::from_millis(500),
            retry_writes: false,
        }
    }
}

impl RetryPolicy {
    /// No retries at all.
    pub fn none() -> Self {
        RetryPolicy {
            max_attempts: 1,
            ..RetryPolicy::default()
        }
    }

    /// The wait before retry number `retry` (0-based): full jitter over an
    /// exponentially growing window, so many clients do not retry in step.
    pub fn backoff(&self, retry: u32) -> Duration {
        let window = self
            .base_backoff
            .saturating_mul(1u32 << retry.min(16))
            .min(self.max_backoff);
        window.mul_f64(fastrand::f64())
    }

    /// Runs `call` until it succeeds, fails with a status other than
    /// UNAVAILABLE, or the attempts run out.
    pub(crate) async fn run<T, F, Fut>(&self, idempotent: bool, mut call: F) -> Result<T, Status>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, Status>>,
    {
        let attempts = if idempotent {
            self.max_attempts.max(1)
        } else {
            1
        };
        let mut retry = 0;
        loop {
            match call().await {
                Err(s) if s.code() == Code::Unavailable && retry + 1 < attempts => {
                    tokio::time::sleep(self.backoff(retry)).await;
                    retry += 1;
                }
                other => return other,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU32, Ordering};

    #[test]
    fn backoff_stays_within_its_window() {
        let p = RetryPolicy::default();
        for retry in 0..20 {
            let window = (p.base_backoff * 2u32.pow(retry.min(16))).min(p.max_backoff);
            for _ in 0..50 {
                assert!(p.backoff(retry) <= window);
            }
        }
    }

    #[tokio::test(start_paused = true)]
    async fn retries_unavailable_a_bounded_number_of_times() {
        let p = RetryPolicy::default();
        let calls = AtomicU32::new(0);
        let r: Result<(), _> = p
            .run(true, || async {
                calls.fetch_add(1, Ordering::Relaxed);
                Err(Status::unavailable("down"))
            })
            .await;
        assert_eq!(r.unwrap_err().code(), Code::Unavailable);
        assert_eq!(calls.load(Ordering::Relaxed), 3);
    }

    #[tokio::test(start_paused = true)]
    async fn does_not_retry_other_codes_or_non_idempotent_calls() {
        let p = RetryPolicy::default();
        let calls = AtomicU32::new(0);
        let _ = p
            .run(true, || async {
                calls.fetch_add(1, Ordering::Relaxed);
                Err::<(), _>(Status::invalid_argument("bad"))
            })
            .await;
        let _ = p
            .run(false, || async {
                calls.fetch_add(1, Ordering::Relaxed);
                Err::<(), _>(Status::unavailable("down"))
            })
            .await;
        assert_eq!(calls.load(Ordering::Relaxed), 2);
    }

    #[tokio::test(start_paused = true)]
    async fn stops_retrying_on_success() {
        let p = RetryPolicy::default();
        let calls = AtomicU32::new(0);
        let r = p
            .run(true, || async {
                let n = calls.fetch_add(1, Ordering::Relaxed);
                if n == 0 {
                    Err(Status::unavailable("blip"))
                } else {
                    Ok(n)
                }
            })
            .await;
        assert_eq!(r.unwrap(), 1);
    }
}
