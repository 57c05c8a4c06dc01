//! Memory bounded by bytes, not by key counts.
//!
//! Every value read for a call is charged, as it arrives, to the call's
//! [`Reservation`]: against the call's own cap (the response must fit one
//! gRPC message) and against the server-wide [`ByteBudget`] of bytes in
//! flight. A charge that does not fit is refused at once, so a call that
//! would outgrow either bound fails as soon as that is known, and the
//! values still arriving for it are dropped instead of kept. The charge is
//! returned when the reservation is dropped, after the response is built.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use crate::error::Error;
use crate::metrics::Counter;

/// Bytes of values held by all calls of the server at once.
#[derive(Debug)]
pub struct ByteBudget {
    used: AtomicUsize,
    max: usize,
    /// Calls refused because the budget was spent.
    refused: Counter,
}

impl ByteBudget {
    /// A budget of `max` bytes; calls it refuses are counted in `refused`.
    pub fn new(max: usize, refused: Counter) -> Arc<ByteBudget> {
        Arc::new(ByteBudget {
            used: AtomicUsize::new(0),
            max,
            refused,
        })
    }

    /// Bytes held right now.
    pub fn used(&self) -> usize {
        self.used.load(Ordering::Relaxed)
    }

    /// A reservation for one call, capped at `call_max` bytes.
    pub fn reserve(self: &Arc<Self>, call_max: usize) -> Reservation {
        Reservation {
            server: self.clone(),
            call_max,
            held: AtomicUsize::new(0),
            refused: AtomicBool::new(false),
        }
    }

    fn take(&self, n: usize) -> bool {
        self.used
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |used| {
                used.checked_add(n).filter(|&total| total <= self.max)
            })
            .is_ok()
    }
}

/// What one call holds of the server's byte budget.
#[derive(Debug)]
pub struct Reservation {
    server: Arc<ByteBudget>,
    call_max: usize,
    held: AtomicUsize,
    /// The server budget refused a charge (counted once per call).
    refused: AtomicBool,
}

/// A charge that does not fit.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Overflow {
    /// The call's own cap (one gRPC message).
    Call {
        /// What the call would hold.
        size: usize,
        /// Its cap.
        max: usize,
    },
    /// The server-wide budget of bytes in flight.
    Server {
        /// The budget.
        max: usize,
    },
}

impl From<Overflow> for Error {
    fn from(o: Overflow) -> Error {
        match o {
            Overflow::Call { size, max } => Error::ResponseTooLarge { size, max },
            Overflow::Server { max } => Error::Overloaded {
                what: format!(
                    "the server's {max} bytes for values in flight (--max-inflight-bytes) are in use by other calls"
                ),
                limit: "--max-inflight-bytes",
            },
        }
    }
}

impl Reservation {
    /// Charges `n` bytes (a value and its framing) to the call.
    pub fn charge(&self, n: usize) -> Result<(), Overflow> {
        let held = self.held.fetch_add(n, Ordering::AcqRel) + n;
        if held > self.call_max {
            self.held.fetch_sub(n, Ordering::AcqRel);
            return Err(Overflow::Call {
                size: held,
                max: self.call_max,
            });
        }
        if !self.server.take(n) {
            self.held.fetch_sub(n, Ordering::AcqRel);
            if !self.refused.swap(true, Ordering::Relaxed) {
                self.server.refused.inc();
            }
            return Err(Overflow::Server {
                max: self.server.max,
            });
        }
        Ok(())
    }

    /// Bytes charged so far.
    pub fn held(&self) -> usize {
        self.held.load(Ordering::Relaxed)
    }
}

impl Drop for Reservation {
    fn drop(&mut self) {
        let held = *self.held.get_mut();
        self.server.used.fetch_sub(held, Ordering::AcqRel);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_call_is_capped_and_returns_its_bytes_when_dropped() {
        let server = ByteBudget::new(100, Counter::default());
        let a = server.reserve(60);
        assert_eq!(a.charge(50), Ok(()));
        assert_eq!(a.charge(20), Err(Overflow::Call { size: 70, max: 60 }));
        assert_eq!(a.held(), 50);
        let b = server.reserve(60);
        assert_eq!(b.charge(40), Ok(()));
        assert_eq!(b.charge(20), Err(Overflow::Server { max: 100 }));
        assert_eq!(server.used(), 90);
        drop(a);
        assert_eq!(server.used(), 40);
        drop(b);
        assert_eq!(server.used(), 0);
    }

    #[test]
    fn overflows_map_to_resource_exhausted() {
        let call: Error = Overflow::Call { size: 9, max: 8 }.into();
        let server: Error = Overflow::Server { max: 8 }.into();
        assert_eq!(call.code(), tonic::Code::ResourceExhausted);
        assert_eq!(server.code(), tonic::Code::ResourceExhausted);
        assert!(server.to_string().contains("--max-inflight-bytes"));
    }
}
