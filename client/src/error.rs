//! The client's one error type: it keeps the gRPC status of a failed call.

use tonic::Code;

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
}
