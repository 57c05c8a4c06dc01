//! A typed Rust client for memgate.
//!
//! Wraps the generated `memgate.v1.Cache` stub with byte-oriented calls that
//! return `Option` for a miss and keep the gRPC status on failure.

use bytes::Bytes;
use memgate_api::v1 as pb;
use pb::cache_client::CacheClient;
use tonic::transport::Channel;

pub use memgate_api::v1;

/// A failed call, with the gRPC status it came back with.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The server could not be reached.
    #[error("cannot connect: {0}")]
    Connect(#[from] tonic::transport::Error),
    /// The server answered with a non-OK status.
    #[error("{}: {}", .0.code(), .0.message())]
    Status(#[from] tonic::Status),
}

impl Error {
    /// The gRPC code, `Unavailable` for connection failures.
    pub fn code(&self) -> tonic::Code {
        match self {
            Error::Connect(_) => tonic::Code::Unavailable,
            Error::Status(s) => s.code(),
        }
    }
}

/// A memgate client; cheap to clone (clones share one HTTP/2 connection).
#[derive(Clone, Debug)]
pub struct Client {
    inner: CacheClient<Channel>,
}

impl Client {
    /// Connects to `target`, e.g. `http://127.0.0.1:50051`.
    pub async fn connect(target: impl Into<String>) -> Result<Client, Error> {
        let channel = Channel::from_shared(target.into())
            .map_err(|e| tonic::Status::invalid_argument(e.to_string()))?
            .connect()
            .await?;
        Ok(Client::from_channel(channel))
    }

    /// Wraps an existing channel.
    pub fn from_channel(channel: Channel) -> Client {
        Client {
            inner: CacheClient::new(channel)
                .max_decoding_message_size(64 * 1024 * 1024)
                .max_encoding_message_size(64 * 1024 * 1024),
        }
    }

    /// The generated stub, for calls this wrapper does not cover.
    pub fn raw(&self) -> CacheClient<Channel> {
        self.inner.clone()
    }

    /// Reads a key; `None` on a miss.
    pub async fn get(&self, key: &str) -> Result<Option<Bytes>, Error> {
        let resp = self
            .inner
            .clone()
            .get(pb::GetRequest { key: key.into() })
            .await?
            .into_inner();
        Ok(resp.found.then(|| resp.value.into()))
    }

    /// Stores a value, with the server's default TTL when `ttl_seconds` is `None`.
    pub async fn set(
        &self,
        key: &str,
        value: impl Into<Vec<u8>>,
        ttl_seconds: Option<u32>,
    ) -> Result<(), Error> {
        self.inner
            .clone()
            .set(pb::SetRequest {
                key: key.into(),
                value: value.into(),
                ttl_seconds,
            })
            .await?;
        Ok(())
    }

    /// Deletes a key; `true` if it existed.
    pub async fn delete(&self, key: &str) -> Result<bool, Error> {
        let resp = self
            .inner
            .clone()
            .delete(pb::DeleteRequest { key: key.into() })
            .await?;
        Ok(resp.into_inner().deleted)
    }
}
