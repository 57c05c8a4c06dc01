//! The client's one error type: it keeps the gRPC status of a failed call,
//! and with it the `google.rpc` details memgate sends: the stable reason
//! (`KEY_INVALID`, `SHARD_DOWN`, ...; the list is in `cache.proto`), the
//! field that broke a rule, and how long to wait before retrying.

use std::time::Duration;

use tonic::Code;
use tonic_types::{ErrorDetails, StatusExt};

/// The `ErrorInfo.domain` of memgate's errors.
pub const ERROR_DOMAIN: &str = "memgate.v1";

/// A failed memgate call.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The target is not a valid URI.
    #[error("invalid target {target:?}: {reason}")]
    InvalidTarget {
        /// The target as given.
        target: String,
        /// Why it was refused.
        reason: String,
    },
    /// The server could not be reached (or TLS could not be set up).
    #[error("cannot connect: {0}")]
    Connect(#[from] tonic::transport::Error),
    /// The server answered with a non-OK status.
    #[error("{}: {}", .0.code(), .0.message())]
    Status(#[from] tonic::Status),
    /// A stored value is not valid JSON for the requested type.
    #[error("value of key {key:?} does not decode as the requested type: {source}")]
    Decode {
        /// The key whose value did not decode.
        key: String,
        /// serde's reason.
        #[source]
        source: serde_json::Error,
    },
    /// A value could not be encoded as JSON.
    #[error("value does not encode as JSON: {0}")]
    Encode(#[source] serde_json::Error),
}

impl Error {
    /// The gRPC code: the server's, `Unavailable` when it could not be
    /// reached, `Internal` for local encode/decode failures.
    pub fn code(&self) -> Code {
        match self {
            Error::Status(s) => s.code(),
            Error::Connect(_) => Code::Unavailable,
            Error::InvalidTarget { .. } => Code::InvalidArgument,
            Error::Decode { .. } | Error::Encode(_) => Code::Internal,
        }
    }

    /// The request broke a rule (bad key, value too large, batch too big).
    pub fn is_invalid_argument(&self) -> bool {
        self.code() == Code::InvalidArgument
    }

    /// The server or the key's shard is unreachable; retrying may work.
    pub fn is_unavailable(&self) -> bool {
        self.code() == Code::Unavailable
    }

    /// The call or the key's shard ran out of time.
    pub fn is_timeout(&self) -> bool {
        self.code() == Code::DeadlineExceeded
    }

    /// The server refused the credentials.
    pub fn is_unauthenticated(&self) -> bool {
        self.code() == Code::Unauthenticated
    }

    /// The `google.rpc` details of the server's status (empty for errors
    /// that did not come from the server, or from a server that sent none).
    pub fn details(&self) -> ErrorDetails {
        match self {
            Error::Status(s) => s.get_error_details(),
            _ => ErrorDetails::new(),
        }
    }

    /// The server's stable reason for the error (`ErrorInfo.reason`, e.g.
    /// `KEY_INVALID`, `SHARD_DOWN`, `OVERLOADED`; `cache.proto` lists them).
    pub fn reason(&self) -> Option<String> {
        let info = self.details().error_info()?.clone();
        (info.domain == ERROR_DOMAIN).then_some(info.reason)
    }

    /// One entry of the error's `ErrorInfo.metadata`, e.g. `shard` (the
    /// shard's address), `key` or `field`.
    pub fn metadata(&self, name: &str) -> Option<String> {
        self.details().error_info()?.metadata.get(name).cloned()
    }

    /// How long the server asks the client to wait before retrying
    /// (`RetryInfo`, sent with UNAVAILABLE and overload).
    pub fn retry_delay(&self) -> Option<Duration> {
        self.details().retry_info()?.retry_delay
    }
}
