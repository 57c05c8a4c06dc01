//! memgate's one error type, and the one place it becomes a gRPC status.
//!
//! Handlers and stores return [`Error`]; the conversion into
//! [`tonic::Status`] below decides every status code memgate sends. Batch
//! calls put the same `Display` text into their per-key error fields, so a
//! user reads the same message whichever way the failure reaches them.

use std::time::Duration;

use tonic::{Code, Status};

use crate::key::KeyError;

/// Everything that can fail a memgate request.
#[derive(Debug, Clone, thiserror::Error)]
pub enum Error {
    /// A key breaks memcached's key rules.
    #[error("invalid key {key:?}: {source}")]
    InvalidKey {
        /// The key as received (shortened if long).
        key: String,
        /// The rule it breaks.
        source: KeyError,
    },
    /// A value is larger than memgate or the owning shard accepts.
    #[error("value for key {key:?} is {len} bytes; at most {max} bytes can be stored ({limit})")]
    ValueTooLarge {
        /// The key the value was for.
        key: String,
        /// Size of the refused value.
        len: usize,
        /// Largest value accepted for this key.
        max: usize,
        /// Which limit applies.
        limit: String,
    },
    /// A batch holds more keys than allowed.
    #[error("batch has {count} keys; at most {max} are allowed per request (--max-batch-keys)")]
    TooManyKeys {
        /// Keys in the request.
        count: usize,
        /// The limit.
        max: usize,
    },
    /// A response would be larger than the gRPC message limit.
    #[error(
        "response would be {size} bytes, over the {max}-byte message limit (--max-message-bytes); request fewer keys per call or use BatchGetStream"
    )]
    ResponseTooLarge {
        /// Estimated response size.
        size: usize,
        /// The limit.
        max: usize,
    },
    /// The shard owning a key could not be reached or its connection broke.
    #[error("memcached shard {addr} is unavailable: {reason}")]
    ShardUnavailable {
        /// The shard's address.
        addr: String,
        /// What went wrong.
        reason: String,
    },
    /// The shard is marked down after repeated failures; its keys fail
    /// fast until it answers again.
    #[error(
        "memcached shard {addr} is unavailable: marked down after {failures} consecutive failures ({down_for:?} ago); retry later"
    )]
    ShardDown {
        /// The shard's address.
        addr: String,
        /// Consecutive failures seen.
        failures: u32,
        /// How long it has been down.
        down_for: Duration,
    },
    /// The shard did not answer in time.
    #[error("memcached shard {addr} did not answer within {after:?}")]
    ShardTimeout {
        /// The shard's address.
        addr: String,
        /// The timeout that expired.
        after: Duration,
    },
    /// The shard answered with an error of its own (e.g. out of memory).
    #[error("memcached shard {addr} failed the request: {message}")]
    ShardError {
        /// The shard's address.
        addr: String,
        /// memcached's message.
        message: String,
    },
    /// The server is at a limit of its own (bytes in flight); the call is
    /// refused rather than let memory grow.
    #[error(
        "memgate is overloaded: {what}; retry shortly or read fewer or smaller values per call"
    )]
    Overloaded {
        /// Which limit.
        what: String,
    },
    /// The LRU crawler of a shard stayed busy with other dumps.
    #[error(
        "memcached shard {addr} stayed busy with other key dumps for {waited:?} (a shard runs one dump at a time, and List dumps every shard); retry List in a few seconds"
    )]
    ListBusy {
        /// The shard's address.
        addr: String,
        /// How long List waited for the shard's crawler.
        waited: Duration,
    },
    /// memgate is shutting down and ends a stream before its input does.
    #[error("memgate is shutting down; retry on another replica: {resume}")]
    ShuttingDown {
        /// What the stream got done and what the client should resend.
        resume: String,
    },
}

impl Error {
    /// An [`Error::InvalidKey`] for `raw`.
    pub fn invalid_key(raw: &str, source: KeyError) -> Error {
        Error::InvalidKey {
            key: shorten(raw),
            source,
        }
    }

    /// The gRPC code this error maps to.
    pub fn code(&self) -> Code {
        match self {
            Error::InvalidKey { .. } | Error::ValueTooLarge { .. } | Error::TooManyKeys { .. } => {
                Code::InvalidArgument
            }
            Error::ShardUnavailable { .. }
            | Error::ShardDown { .. }
            | Error::ListBusy { .. }
            | Error::ShuttingDown { .. } => Code::Unavailable,
            Error::ShardTimeout { .. } => Code::DeadlineExceeded,
            Error::ResponseTooLarge { .. } | Error::Overloaded { .. } => Code::ResourceExhausted,
            Error::ShardError { .. } => Code::Internal,
        }
    }
}

impl From<Error> for Status {
    fn from(e: Error) -> Status {
        Status::new(e.code(), e.to_string())
    }
}

/// Keys in messages are cut to a readable length.
pub(crate) fn shorten(raw: &str) -> String {
    const MAX: usize = 64;
    if raw.len() <= MAX {
        return raw.to_owned();
    }
    let mut end = MAX;
    while !raw.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}...", &raw[..end])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn maps_each_error_to_its_code() {
        let cases = [
            (
                Error::invalid_key("", KeyError::Empty),
                Code::InvalidArgument,
            ),
            (
                Error::TooManyKeys { count: 2, max: 1 },
                Code::InvalidArgument,
            ),
            (
                Error::ShardUnavailable {
                    addr: "a".into(),
                    reason: "refused".into(),
                },
                Code::Unavailable,
            ),
            (
                Error::ShardTimeout {
                    addr: "a".into(),
                    after: Duration::from_millis(5),
                },
                Code::DeadlineExceeded,
            ),
            (
                Error::ListBusy {
                    addr: "a".into(),
                    waited: Duration::from_secs(3),
                },
                Code::Unavailable,
            ),
            (
                Error::ShuttingDown {
                    resume: "resend the stream".into(),
                },
                Code::Unavailable,
            ),
        ];
        for (err, code) in cases {
            let msg = err.to_string();
            let status = Status::from(err);
            assert_eq!(status.code(), code);
            assert_eq!(status.message(), msg);
        }
    }

    #[test]
    fn long_keys_are_shortened_on_a_char_boundary() {
        let s = shorten(&"é".repeat(100));
        assert!(s.ends_with("..."));
        assert!(s.len() <= 67);
    }
}
