//! memgate's one error type, and the one place it becomes a gRPC status.
//!
//! Handlers, stores and the middleware in front of them return [`Error`];
//! the conversion into [`tonic::Status`] below decides every status code
//! memgate sends and the `google.rpc` details that go with it (in the
//! `grpc-status-details-bin` trailer):
//!
//! - `ErrorInfo` on every status: a stable `reason` per variant (the list
//!   is documented in `proto/memgate/v1/cache.proto`), domain
//!   [`ERROR_DOMAIN`], and metadata such as the `shard` and the `key`;
//! - `BadRequest` when the request broke a rule: which field
//!   (`key`, `keys[3]`, `items[2].value`) and which rule;
//! - `RetryInfo` on UNAVAILABLE and on RESOURCE_EXHAUSTED when waiting
//!   helps: how long to wait before retrying.
//!
//! Batch calls put the same `Display` text into their per-key error fields,
//! so a user reads the same message whichever way the failure reaches them.

use std::collections::HashMap;
use std::fmt;
use std::time::Duration;

use tonic::{Code, Status};
use tonic_types::{ErrorDetails, StatusExt};

use crate::key::KeyError;

/// The `domain` of every `google.rpc.ErrorInfo` memgate sends.
pub const ERROR_DOMAIN: &str = "memgate.v1";

/// How long a client should wait before retrying a call that was shed or
/// refused for bytes in flight: long enough for calls in flight to finish.
pub const OVERLOADED_RETRY_DELAY: Duration = Duration::from_millis(200);

/// How long to wait before retrying after a shard refused or dropped a
/// connection (it may be restarting; a few failures more mark it down).
pub const SHARD_UNAVAILABLE_RETRY_DELAY: Duration = Duration::from_millis(100);

/// How long to wait before retrying a List that found a shard's crawler busy.
pub const LIST_BUSY_RETRY_DELAY: Duration = Duration::from_secs(2);

/// How long to wait before retrying a stream ended by shutdown: enough for
/// the client to reconnect to another replica.
pub const SHUTTING_DOWN_RETRY_DELAY: Duration = Duration::from_millis(100);

/// Where in a request a refused key or value sits, for the field path of a
/// `BadRequest` violation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Field {
    /// The `key` (and `value`) of a single-key request or a stream message.
    Single,
    /// `keys[i]` of a BatchGet or BatchDelete.
    Keys(usize),
    /// `items[i].key` (and `items[i].value`) of a BatchSet.
    Items(usize),
}

impl Field {
    /// The path of the key: `key`, `keys[3]` or `items[2].key`.
    pub fn key_path(self) -> String {
        match self {
            Field::Single => "key".to_owned(),
            Field::Keys(i) => format!("keys[{i}]"),
            Field::Items(i) => format!("items[{i}].key"),
        }
    }

    /// The path of another field of the key's message: `condition`,
    /// `items[2].condition`.
    pub fn path(self, name: &str) -> String {
        match self {
            Field::Single | Field::Keys(_) => name.to_owned(),
            Field::Items(i) => format!("items[{i}].{name}"),
        }
    }

    /// The path of the value: `value` or `items[2].value`.
    pub fn value_path(self) -> String {
        match self {
            Field::Single | Field::Keys(_) => "value".to_owned(),
            Field::Items(i) => format!("items[{i}].value"),
        }
    }
}

/// Why a call's credentials were refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AuthError {
    /// No `authorization` header.
    Missing,
    /// An `authorization` header that is not `Bearer <token>`.
    Unsupported,
    /// A bearer token that is not one of the configured ones.
    Rejected,
}

impl fmt::Display for AuthError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            AuthError::Missing => {
                "missing credentials: send the header `authorization: Bearer <token>`"
            }
            AuthError::Unsupported => {
                "unsupported credentials: send `authorization: Bearer <token>`"
            }
            AuthError::Rejected => "the bearer token is not accepted",
        })
    }
}

/// Everything that can fail a memgate request.
#[derive(Debug, Clone, thiserror::Error)]
pub enum Error {
    /// A key breaks memcached's key rules.
    #[error("invalid key {key:?}: {source}")]
    InvalidKey {
        /// Where the key is in the request.
        field: Field,
        /// The key as received (shortened if long).
        key: String,
        /// The rule it breaks.
        source: KeyError,
    },
    /// A value is larger than memgate or the owning shard accepts.
    #[error("value for key {key:?} is {len} bytes; at most {max} bytes can be stored ({limit})")]
    ValueTooLarge {
        /// Where the item is in the request.
        field: Field,
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
        /// The repeated field: `keys` or `items`.
        field: &'static str,
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
    /// A request was larger than the gRPC message limit (tonic refused to
    /// decode it).
    #[error(
        "request too large: {detail}; the limit is --max-message-bytes: send smaller batches or use a streaming RPC"
    )]
    RequestTooLarge {
        /// tonic's account of the sizes.
        detail: String,
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
        /// How long until the next trial call may reach it.
        retry_in: Duration,
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
        /// Which limit, in words.
        what: String,
        /// The flag that sets it.
        limit: &'static str,
    },
    /// More calls are in flight than `--max-concurrent-calls`: this one is
    /// shed at once.
    #[error(
        "memgate is at its limit of {max} concurrent calls (--max-concurrent-calls); retry with backoff"
    )]
    TooManyCalls {
        /// The limit.
        max: usize,
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
    /// The caller's deadline (`grpc-timeout`) passed before memgate could
    /// answer.
    #[error("the call's deadline (grpc-timeout) expired before memgate could answer")]
    DeadlineExceeded {
        /// The deadline the caller gave.
        deadline: Duration,
    },
    /// Tokens are required and the call's credentials are not one of them.
    #[error("{0}")]
    Unauthenticated(AuthError),
    /// Increment of a missing key without an initial value.
    #[error("key {key:?} does not exist; give initial_value to create it")]
    KeyNotFound {
        /// The key (shortened if long).
        key: String,
    },
    /// Increment of a value that is not a decimal number.
    #[error(
        "the value of key {key:?} is not a decimal number of at most 20 digits, so it cannot be incremented or decremented"
    )]
    NotANumber {
        /// The key (shortened if long).
        key: String,
    },
    /// The call needs a command the shard's protocol lacks (a
    /// text-protocol server such as twemproxy has no meta commands).
    #[error(
        "memcached shard {addr} speaks only the text protocol; {what} needs memcached >= 1.6 (meta commands)"
    )]
    Unsupported {
        /// The shard's address.
        addr: String,
        /// The call, e.g. "Increment".
        what: &'static str,
    },
    /// A request field other than a key or value breaks a rule (e.g. a
    /// lease of 0 seconds, an option a stream does not take).
    #[error("invalid {field}: {rule}")]
    InvalidField {
        /// Its path in the request, e.g. `lease_ttl_seconds`.
        field: String,
        /// The rule it breaks.
        rule: &'static str,
    },
    /// A conditional write whose condition did not hold: nothing was
    /// written. A unary Set answers it as `stored = false`; in a batch it
    /// is the item's KeyError.
    #[error("key {key:?} was not stored: {why}")]
    ConditionFailed {
        /// The key (shortened if long).
        key: String,
        /// Which condition failed, and how.
        why: &'static str,
    },
}

impl Error {
    /// An [`Error::InvalidKey`] for `raw` at `field`.
    pub fn invalid_key(field: Field, raw: &str, source: KeyError) -> Error {
        Error::InvalidKey {
            field,
            key: shorten(raw),
            source,
        }
    }

    /// The gRPC code this error maps to.
    pub fn code(&self) -> Code {
        match self {
            Error::InvalidKey { .. }
            | Error::ValueTooLarge { .. }
            | Error::TooManyKeys { .. }
            | Error::InvalidField { .. } => Code::InvalidArgument,
            Error::ShardUnavailable { .. }
            | Error::ShardDown { .. }
            | Error::ListBusy { .. }
            | Error::ShuttingDown { .. } => Code::Unavailable,
            Error::ShardTimeout { .. } | Error::DeadlineExceeded { .. } => Code::DeadlineExceeded,
            Error::ResponseTooLarge { .. }
            | Error::RequestTooLarge { .. }
            | Error::Overloaded { .. }
            | Error::TooManyCalls { .. } => Code::ResourceExhausted,
            Error::ShardError { .. } => Code::Internal,
            Error::Unauthenticated(_) => Code::Unauthenticated,
            Error::KeyNotFound { .. } => Code::NotFound,
            Error::NotANumber { .. } | Error::ConditionFailed { .. } => Code::FailedPrecondition,
            Error::Unsupported { .. } => Code::Unimplemented,
        }
    }

    /// The `ErrorInfo.reason` of this error: stable, one per cause, listed
    /// in the proto's service comment.
    pub fn reason(&self) -> &'static str {
        match self {
            Error::InvalidKey { .. } => "KEY_INVALID",
            Error::ValueTooLarge { .. } => "VALUE_TOO_LARGE",
            Error::TooManyKeys { .. } => "TOO_MANY_KEYS",
            Error::ResponseTooLarge { .. } => "RESPONSE_TOO_LARGE",
            Error::RequestTooLarge { .. } => "REQUEST_TOO_LARGE",
            Error::ShardUnavailable { .. } => "SHARD_UNAVAILABLE",
            Error::ShardDown { .. } => "SHARD_DOWN",
            Error::ShardTimeout { .. } => "SHARD_TIMEOUT",
            Error::ShardError { .. } => "SHARD_ERROR",
            Error::Overloaded { .. } | Error::TooManyCalls { .. } => "OVERLOADED",
            Error::ListBusy { .. } => "LIST_BUSY",
            Error::ShuttingDown { .. } => "SHUTTING_DOWN",
            Error::DeadlineExceeded { .. } => "DEADLINE_EXCEEDED",
            Error::Unauthenticated(AuthError::Missing) => "CREDENTIALS_MISSING",
            Error::Unauthenticated(AuthError::Unsupported) => "CREDENTIALS_UNSUPPORTED",
            Error::Unauthenticated(AuthError::Rejected) => "CREDENTIALS_REJECTED",
            Error::KeyNotFound { .. } => "KEY_NOT_FOUND",
            Error::NotANumber { .. } => "NOT_A_NUMBER",
            Error::Unsupported { .. } => "SHARD_UNSUPPORTED",
            Error::InvalidField { .. } => "FIELD_INVALID",
            Error::ConditionFailed { .. } => "CONDITION_FAILED",
        }
    }

    /// How long a client should wait before retrying, where waiting helps:
    /// every UNAVAILABLE, and RESOURCE_EXHAUSTED for load. A request or
    /// response too large fails the same way however long one waits.
    pub fn retry_delay(&self) -> Option<Duration> {
        match self {
            Error::ShardUnavailable { .. } => Some(SHARD_UNAVAILABLE_RETRY_DELAY),
            Error::ShardDown { retry_in, .. } => Some(*retry_in),
            Error::ListBusy { .. } => Some(LIST_BUSY_RETRY_DELAY),
            Error::ShuttingDown { .. } => Some(SHUTTING_DOWN_RETRY_DELAY),
            Error::Overloaded { .. } | Error::TooManyCalls { .. } => Some(OVERLOADED_RETRY_DELAY),
            _ => None,
        }
    }

    /// The `google.rpc` details that go with the status.
    pub fn details(&self) -> ErrorDetails {
        let mut meta: Vec<(&str, String)> = Vec::new();
        let mut violation: Option<(String, String)> = None;
        match self {
            Error::InvalidKey { field, key, source } => {
                let path = field.key_path();
                meta.extend([("key", key.clone()), ("field", path.clone())]);
                violation = Some((path, source.to_string()));
            }
            Error::ValueTooLarge {
                field,
                key,
                len,
                max,
                limit,
            } => {
                let path = field.value_path();
                meta.extend([
                    ("key", key.clone()),
                    ("field", path.clone()),
                    ("size", len.to_string()),
                    ("max_bytes", max.to_string()),
                    ("limit", limit.clone()),
                ]);
                violation = Some((
                    path,
                    format!("value is {len} bytes; at most {max} bytes can be stored ({limit})"),
                ));
            }
            Error::TooManyKeys { field, count, max } => {
                meta.extend([
                    ("field", (*field).to_owned()),
                    ("count", count.to_string()),
                    ("max", max.to_string()),
                    ("limit", "--max-batch-keys".to_owned()),
                ]);
                violation = Some((
                    (*field).to_owned(),
                    format!("at most {max} entries per request (--max-batch-keys); got {count}"),
                ));
            }
            Error::ResponseTooLarge { size, max } => meta.extend([
                ("size", size.to_string()),
                ("max_bytes", max.to_string()),
                ("limit", "--max-message-bytes".to_owned()),
            ]),
            Error::RequestTooLarge { .. } => {
                meta.push(("limit", "--max-message-bytes".to_owned()));
            }
            Error::KeyNotFound { key }
            | Error::NotANumber { key }
            | Error::ConditionFailed { key, .. } => {
                meta.push(("key", key.clone()));
            }
            Error::InvalidField { field, rule } => {
                meta.push(("field", field.clone()));
                violation = Some((field.clone(), (*rule).to_owned()));
            }
            Error::ShardUnavailable { addr, .. }
            | Error::ShardError { addr, .. }
            | Error::Unsupported { addr, .. } => {
                meta.push(("shard", addr.clone()));
            }
            Error::ShardDown { addr, failures, .. } => {
                meta.extend([("shard", addr.clone()), ("failures", failures.to_string())])
            }
            Error::ShardTimeout { addr, after } => meta.extend([
                ("shard", addr.clone()),
                ("timeout_ms", after.as_millis().to_string()),
            ]),
            Error::ListBusy { addr, waited } => meta.extend([
                ("shard", addr.clone()),
                ("waited_ms", waited.as_millis().to_string()),
            ]),
            Error::Overloaded { limit, .. } => meta.push(("limit", (*limit).to_owned())),
            Error::TooManyCalls { max } => meta.extend([
                ("limit", "--max-concurrent-calls".to_owned()),
                ("max", max.to_string()),
            ]),
            Error::DeadlineExceeded { deadline } => {
                meta.push(("deadline_ms", deadline.as_millis().to_string()));
            }
            Error::ShuttingDown { .. } | Error::Unauthenticated(_) => {}
        }
        let meta: HashMap<String, String> =
            meta.into_iter().map(|(k, v)| (k.to_owned(), v)).collect();
        let mut details = ErrorDetails::with_error_info(self.reason(), ERROR_DOMAIN, meta);
        if let Some((field, description)) = violation {
            details.add_bad_request_violation(field, description);
        }
        if let Some(delay) = self.retry_delay() {
            details.set_retry_info(Some(delay));
        }
        details
    }
}

impl From<Error> for Status {
    fn from(e: Error) -> Status {
        Status::with_error_details(e.code(), e.to_string(), e.details())
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

    fn shard_down() -> Error {
        Error::ShardDown {
            addr: "10.0.0.1:11211".into(),
            failures: 3,
            down_for: Duration::from_millis(500),
            retry_in: Duration::from_millis(1500),
        }
    }

    /// One of every variant (and of every reason).
    fn every_error() -> Vec<Error> {
        vec![
            Error::invalid_key(Field::Keys(3), "a b", KeyError::Empty),
            Error::ValueTooLarge {
                field: Field::Items(2),
                key: "k".into(),
                len: 11,
                max: 10,
                limit: "--max-value-bytes".into(),
            },
            Error::TooManyKeys {
                field: "keys",
                count: 2,
                max: 1,
            },
            Error::ResponseTooLarge { size: 2, max: 1 },
            Error::RequestTooLarge {
                detail: "2 > 1".into(),
            },
            Error::ShardUnavailable {
                addr: "a".into(),
                reason: "refused".into(),
            },
            shard_down(),
            Error::ShardTimeout {
                addr: "a".into(),
                after: Duration::from_millis(5),
            },
            Error::ShardError {
                addr: "a".into(),
                message: "SERVER_ERROR out of memory".into(),
            },
            Error::Overloaded {
                what: "bytes".into(),
                limit: "--max-inflight-bytes",
            },
            Error::TooManyCalls { max: 8 },
            Error::ListBusy {
                addr: "a".into(),
                waited: Duration::from_secs(3),
            },
            Error::ShuttingDown {
                resume: "resend the stream".into(),
            },
            Error::DeadlineExceeded {
                deadline: Duration::from_millis(100),
            },
            Error::Unauthenticated(AuthError::Missing),
            Error::Unauthenticated(AuthError::Unsupported),
            Error::Unauthenticated(AuthError::Rejected),
            Error::KeyNotFound { key: "k".into() },
            Error::NotANumber { key: "k".into() },
            Error::Unsupported {
                addr: "a".into(),
                what: "Increment",
            },
            Error::InvalidField {
                field: "lease_ttl_seconds".into(),
                rule: "a lease lasts at least 1 second",
            },
            Error::ConditionFailed {
                key: "k".into(),
                why: "it already exists (condition ABSENT)",
            },
        ]
    }

    #[test]
    fn maps_each_error_to_its_code() {
        let cases = [
            (
                Error::invalid_key(Field::Single, "", KeyError::Empty),
                Code::InvalidArgument,
            ),
            (
                Error::TooManyKeys {
                    field: "keys",
                    count: 2,
                    max: 1,
                },
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
            (Error::TooManyCalls { max: 1 }, Code::ResourceExhausted),
            (
                Error::Unauthenticated(AuthError::Rejected),
                Code::Unauthenticated,
            ),
            (Error::KeyNotFound { key: "k".into() }, Code::NotFound),
            (
                Error::NotANumber { key: "k".into() },
                Code::FailedPrecondition,
            ),
            (
                Error::Unsupported {
                    addr: "a".into(),
                    what: "Touch",
                },
                Code::Unimplemented,
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
    fn every_status_carries_error_info_with_its_reason() {
        for err in every_error() {
            let reason = err.reason();
            let code = err.code();
            let details = Status::from(err).check_error_details().unwrap();
            let info = details.error_info().expect("ErrorInfo");
            assert_eq!(info.reason, reason);
            assert_eq!(info.domain, ERROR_DOMAIN);
            assert!(
                !reason.is_empty() && reason.bytes().all(|b| b.is_ascii_uppercase() || b == b'_'),
                "{reason}"
            );
            // Retrying helps on every UNAVAILABLE.
            if code == Code::Unavailable {
                assert!(details.retry_info().is_some(), "{reason}");
            }
            // Only requests that broke a rule name a field.
            assert_eq!(
                details.bad_request().is_some(),
                code == Code::InvalidArgument,
                "{reason}"
            );
        }
    }

    #[test]
    fn bad_requests_name_the_field_and_the_rule() {
        let cases = [
            (
                Error::invalid_key(Field::Single, "a b", KeyError::Empty),
                "key",
            ),
            (
                Error::invalid_key(Field::Keys(3), "a b", KeyError::Empty),
                "keys[3]",
            ),
            (
                Error::invalid_key(Field::Items(2), "a b", KeyError::Empty),
                "items[2].key",
            ),
        ];
        for (err, path) in cases {
            let details = Status::from(err).get_error_details();
            let v = &details.bad_request().unwrap().field_violations;
            assert_eq!(v.len(), 1);
            assert_eq!(v[0].field, path);
            assert_eq!(v[0].description, "key must not be empty");
            let info = details.error_info().unwrap();
            assert_eq!(info.metadata["field"], path);
            assert_eq!(info.metadata["key"], "a b");
        }
        let too_big = Error::ValueTooLarge {
            field: Field::Items(2),
            key: "k".into(),
            len: 11,
            max: 10,
            limit: "--max-value-bytes".into(),
        };
        let details = Status::from(too_big).get_error_details();
        let v = &details.bad_request().unwrap().field_violations[0];
        assert_eq!(v.field, "items[2].value");
        assert!(v.description.contains("at most 10 bytes"), "{v:?}");
        let meta = &details.error_info().unwrap().metadata;
        assert_eq!(
            (meta["size"].as_str(), meta["max_bytes"].as_str()),
            ("11", "10")
        );
    }

    #[test]
    fn a_down_shard_says_which_and_when_to_retry() {
        let details = Status::from(shard_down()).get_error_details();
        let info = details.error_info().unwrap();
        assert_eq!(info.reason, "SHARD_DOWN");
        assert_eq!(info.metadata["shard"], "10.0.0.1:11211");
        assert_eq!(
            details.retry_info().unwrap().retry_delay,
            Some(Duration::from_millis(1500))
        );
        let shed = Status::from(Error::TooManyCalls { max: 8 }).get_error_details();
        assert_eq!(
            shed.retry_info().unwrap().retry_delay,
            Some(OVERLOADED_RETRY_DELAY)
        );
        assert_eq!(shed.error_info().unwrap().reason, "OVERLOADED");
    }

    #[test]
    fn the_proto_documents_every_reason() {
        let proto = include_str!("../../proto/memgate/v1/cache.proto");
        for err in every_error() {
            let reason = err.reason();
            assert!(
                proto
                    .lines()
                    .any(|l| l.trim_start_matches("//").split_whitespace().next() == Some(reason)),
                "reason {reason} is not listed in cache.proto"
            );
        }
    }

    #[test]
    fn long_keys_are_shortened_on_a_char_boundary() {
        let s = shorten(&"é".repeat(100));
        assert!(s.ends_with("..."));
        assert!(s.len() <= 67);
    }
}
