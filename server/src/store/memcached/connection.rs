//! One pipelined connection to a memcached server.
//!
//! Many requests can be in flight on one connection: a writer task sends
//! them in the order they were submitted (coalescing whatever is queued into
//! one write), and a reader task matches replies to requests first in, first
//! out — the text protocol answers strictly in order. Each request carries
//! the [`Decoder`] for its own reply, so a reply is only ever handed to the
//! request it answers.
//!
//! Any error — I/O, a reply that breaks the protocol, or a request that
//! outlives its timeout — closes the whole connection and fails everything
//! still queued on it. A broken connection is never reused, so a late or
//! half-read reply cannot reach the next request.

use std::collections::VecDeque;
use std::io;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

use super::protocol::{Decoder, ProtocolError, Reply};

/// Requests queued for writing before callers wait (backpressure).
const QUEUE_DEPTH: usize = 1024;
/// Largest single write when coalescing queued requests.
const MAX_COALESCED_WRITE: usize = 256 * 1024;

/// Why a request on a connection failed.
#[derive(Debug, thiserror::Error)]
pub enum ConnError {
    /// Reading or writing the socket failed.
    #[error("connection failed: {0}")]
    Io(#[from] io::Error),
    /// The server's reply broke the protocol.
    #[error("bad reply: {0}")]
    Protocol(#[from] ProtocolError),
    /// No reply within the timeout.
    #[error("no reply within {0:?}")]
    Timeout(Duration),
    /// The connection had already been closed by an earlier failure.
    #[error("connection closed")]
    Closed,
}

/// A request waiting for its reply.
struct InFlight {
    decoder: Decoder,
    reply: oneshot::Sender<Result<Reply, ConnError>>,
}

struct Submit {
    bytes: Bytes,
    in_flight: InFlight,
}

/// A handle to a pipelined memcached connection; cheap to clone, shared by
/// all callers.
#[derive(Clone, Debug)]
pub struct Connection {
    submit: mpsc::Sender<Submit>,
    closed: CancellationToken,
}

impl Connection {
    /// Wraps a connected stream, spawning its reader and writer tasks.
    pub fn new(stream: TcpStream) -> Connection {
        let _ = stream.set_nodelay(true);
        let (read, write) = stream.into_split();
        let (submit, submit_rx) = mpsc::channel(QUEUE_DEPTH);
        let (in_flight_tx, in_flight_rx) = mpsc::unbounded_channel();
        let closed = CancellationToken::new();
        tokio::spawn(write_loop(write, submit_rx, in_flight_tx, closed.clone()));
        tokio::spawn(read_loop(read, in_flight_rx, closed.clone()));
        Connection { submit, closed }
    }

    /// True once the connection has failed; it must then be replaced.
    pub fn is_closed(&self) -> bool {
        self.closed.is_cancelled()
    }

    /// Closes the connection, failing whatever is still in flight on it.
    pub fn close(&self) {
        self.closed.cancel();
    }

    /// Sends one encoded command and waits for the reply `decoder` reads.
    /// If no reply arrives within `timeout`, the connection is closed: a
    /// server that stalls must not hold later requests hostage.
    pub async fn request(
        &self,
        bytes: Bytes,
        decoder: Decoder,
        timeout: Duration,
    ) -> Result<Reply, ConnError> {
        let (tx, rx) = oneshot::channel();
        let submit = Submit {
            bytes,
            in_flight: InFlight { decoder, reply: tx },
        };
        let outcome = tokio::time::timeout(timeout, async {
            self.submit
                .send(submit)
                .await
                .map_err(|_| ConnError::Closed)?;
            rx.await.unwrap_or(Err(ConnError::Closed))
        })
        .await;
        match outcome {
            Ok(result) => result,
            Err(_) => {
                self.close();
                Err(ConnError::Timeout(timeout))
            }
        }
    }
}

async fn write_loop(
    mut write: OwnedWriteHalf,
    mut submit_rx: mpsc::Receiver<Submit>,
    in_flight_tx: mpsc::UnboundedSender<InFlight>,
    closed: CancellationToken,
) {
    let mut buf = BytesMut::new();
    loop {
        let first = tokio::select! {
            _ = closed.cancelled() => break,
            next = submit_rx.recv() => match next {
                Some(s) => s,
                None => break, // every handle dropped
            },
        };
        buf.clear();
        let mut next = Some(first);
        while let Some(s) = next.take() {
            buf.extend_from_slice(&s.bytes);
            // Register before writing, so the reader knows what it is
            // reading by the time the reply can arrive.
            if in_flight_tx.send(s.in_flight).is_err() {
                closed.cancel();
                return;
            }
            if buf.len() < MAX_COALESCED_WRITE {
                next = submit_rx.try_recv().ok();
            }
        }
        let written = tokio::select! {
            _ = closed.cancelled() => break,
            r = write.write_all(&buf) => r,
        };
        if written.is_err() {
            break;
        }
    }
    closed.cancel();
    // Fail requests queued but never written.
    submit_rx.close();
    while let Ok(s) = submit_rx.try_recv() {
        let _ = s.in_flight.reply.send(Err(ConnError::Closed));
    }
}

async fn read_loop(
    mut read: OwnedReadHalf,
    mut in_flight_rx: mpsc::UnboundedReceiver<InFlight>,
    closed: CancellationToken,
) {
    let mut buf = BytesMut::with_capacity(16 * 1024);
    let mut waiting: VecDeque<InFlight> = VecDeque::new();
    let failure = loop {
        // Take the requests written so far; wait for one if there are none.
        while let Ok(r) = in_flight_rx.try_recv() {
            waiting.push_back(r);
        }
        if let Some(current) = waiting.front_mut() {
            match current.decoder.decode(&mut buf) {
                Ok(Some(reply)) => {
                    let done = waiting.pop_front().expect("front exists");
                    // The caller may have timed out; the reply is still
                    // consumed, so the stream stays in sync.
                    let _ = done.reply.send(Ok(reply));
                    continue;
                }
                Ok(None) => {}
                Err(e) => break ConnError::Protocol(e),
            }
        }
        let idle = waiting.is_empty();
        tokio::select! {
            _ = closed.cancelled() => break ConnError::Closed,
            r = in_flight_rx.recv(), if idle => match r {
                Some(r) => waiting.push_back(r),
                None => break ConnError::Closed,
            },
            n = read.read_buf(&mut buf) => match n {
                Ok(0) => break ConnError::Io(io::ErrorKind::UnexpectedEof.into()),
                // A request is registered before it is written, so a reply
                // to it finds it here; bytes nobody asked for mean the peer
                // is not in step with us.
                Ok(_) if idle => match in_flight_rx.try_recv() {
                    Ok(r) => waiting.push_back(r),
                    Err(_) => break ConnError::Protocol(ProtocolError::Unexpected(
                        String::from_utf8_lossy(&buf[..buf.len().min(80)]).into_owned(),
                    )),
                },
                Ok(_) => {}
                Err(e) => break ConnError::Io(e),
            },
        }
    };
    closed.cancel();
    let mut first = Some(failure);
    in_flight_rx.close();
    while let Ok(r) = in_flight_rx.try_recv() {
        waiting.push_back(r);
    }
    for w in waiting {
        // The first waiter gets the real cause; the rest were collateral.
        let err = first.take().unwrap_or(ConnError::Closed);
        let _ = w.reply.send(Err(err));
    }
}
