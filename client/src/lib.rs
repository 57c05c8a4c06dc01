//! A typed Rust client for memgate, the gRPC cache in front of memcached.
//!
//! It wraps the generated `memgate.v1.Cache` stub with calls that take
//! `&str` keys and byte values, return `Option` for a miss, store serde
//! types as JSON, retry idempotent calls on `UNAVAILABLE`, and keep the gRPC
//! status of every failure in one [`Error`] type.
//!
//! ```no_run
//! # async fn demo() -> Result<(), memgate_client::Error> {
//! use std::time::Duration;
//! use memgate_client::Client;
//!
//! let client = Client::connect("http://127.0.0.1:50051").await?;
//! client.set("greeting", "hello", Some(Duration::from_secs(60))).await?;
//! assert_eq!(client.get("greeting").await?.as_deref(), Some(&b"hello"[..]));
//! assert!(client.delete("greeting").await?);
//! # Ok(()) }
//! ```

mod error;
mod retry;

use std::time::Duration;

use bytes::Bytes;
use futures::{Stream, StreamExt};
use memgate_api::v1 as pb;
use pb::cache_client::CacheClient;
use serde::Serialize;
use serde::de::DeserializeOwned;
use tonic::metadata::{Ascii, MetadataValue};
use tonic::service::Interceptor;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};
use tonic::{Request, Status};
use tonic_health::pb::health_client::HealthClient;

pub use error::{ERROR_DOMAIN, Error};
pub use memgate_api::v1;
pub use retry::RetryPolicy;
pub use tonic_health::ServingStatus;
pub use tonic_types::ErrorDetails;

/// Default deadline of one unary call.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(5);
/// Largest message the client sends or accepts: above the server's default
/// `--max-message-bytes` (16 MiB), so the server's limit is the one that
/// applies.
pub const MAX_MESSAGE_BYTES: usize = 64 * 1024 * 1024;

/// The result of reading one key in a batch or stream.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Lookup {
    /// The key.
    pub key: String,
    /// Its value; `None` on a miss or an error.
    pub value: Option<Bytes>,
    /// Why the key could not be read (e.g. its shard is down).
    pub error: Option<KeyFailure>,
}

/// One key of a batch that failed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeyFailure {
    /// The key.
    pub key: String,
    /// The status code a single-key call would have returned (e.g.
    /// `Unavailable` for a down shard, `InvalidArgument` for a bad key).
    pub code: tonic::Code,
    /// Why, as the server put it.
    pub message: String,
}

/// What a batch write or delete did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct BatchOutcome {
    /// Items stored, or keys that existed and were deleted.
    pub count: u32,
    /// Items or keys that failed.
    pub errors: Vec<KeyFailure>,
}

/// One item to write in a batch or stream.
#[derive(Clone, Debug)]
pub struct Item {
    /// Where to write.
    pub key: String,
    /// What to write.
    pub value: Bytes,
    /// How long it lives (see [`Client::set`]).
    pub ttl: Option<Duration>,
    /// Store it only if this holds (default: always). In a batch or stream
    /// an item whose condition fails is a [`KeyFailure`] with code
    /// `FailedPrecondition`, not counted as stored.
    pub condition: Condition,
}

impl Item {
    /// An item with the server's default TTL, stored unconditionally.
    pub fn new(key: impl Into<String>, value: impl Into<Bytes>) -> Item {
        Item {
            key: key.into(),
            value: value.into(),
            ttl: None,
            condition: Condition::Always,
        }
    }

    /// The same item with this TTL.
    pub fn ttl(mut self, ttl: Duration) -> Item {
        self.ttl = Some(ttl);
        self
    }

    /// The same item, stored only if `condition` holds.
    pub fn when(mut self, condition: Condition) -> Item {
        self.condition = condition;
        self
    }
}

/// When a write stores its value (memcached's set, add, replace and cas).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Condition {
    /// Always store.
    #[default]
    Always,
    /// Only if the key does not exist (add). A lease placeholder and a
    /// stale item exist.
    Absent,
    /// Only if the key exists (replace).
    Present,
    /// Only if the item's CAS token is still this one (from [`Entry::cas`]
    /// or [`SetOutcome::cas`]): compare-and-swap. A missing key never
    /// matches.
    CasMatch(u64),
}

impl Condition {
    fn wire(self) -> (pb::SetCondition, u64) {
        match self {
            Condition::Always => (pb::SetCondition::Unspecified, 0),
            Condition::Absent => (pb::SetCondition::Absent, 0),
            Condition::Present => (pb::SetCondition::Present, 0),
            Condition::CasMatch(cas) => (pb::SetCondition::CasMatch, cas),
        }
    }
}

/// What a (conditional) write did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SetOutcome {
    /// False only when the write's condition did not hold (nothing was
    /// written).
    pub stored: bool,
    /// The item's new CAS token when stored; 0 otherwise (and on shards
    /// that speak only memcached's text protocol).
    pub cas: u64,
}

/// Who refills a missing or stale key, as a Get with a lease reports it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Lease {
    /// No lease: a fresh hit, or a Get that asked for none.
    #[default]
    None,
    /// This caller should compute the value and store it.
    Won,
    /// Another caller is refilling the key: use the stale value if there
    /// is one, or ask again shortly.
    Held,
}

/// Options of [`Client::get_with`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct GetOptions {
    /// Get-and-touch: a hit also gets this TTL (rules of [`Client::touch`]),
    /// and [`Entry::ttl_remaining`] reports it.
    pub touch_ttl: Option<Duration>,
    /// Take a lease against stampedes: a miss creates a placeholder living
    /// this long (rounded up to whole seconds, at least 1) and exactly one
    /// caller, across every memgate replica, gets [`Lease::Won`]; a stale
    /// item is returned and one reader wins the lease to refresh it.
    pub lease_ttl: Option<Duration>,
}

impl GetOptions {
    /// A plain read.
    pub fn new() -> GetOptions {
        GetOptions::default()
    }

    /// Also set the key's TTL on a hit.
    pub fn touch(mut self, ttl: Duration) -> GetOptions {
        self.touch_ttl = Some(ttl);
        self
    }

    /// Also take a lease living `ttl` on a miss or a stale item.
    pub fn lease(mut self, ttl: Duration) -> GetOptions {
        self.lease_ttl = Some(ttl);
        self
    }
}

/// One key as [`Client::get_with`] reads it: the value with its metadata.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Entry {
    /// The value; `None` on a miss (a lease placeholder is a miss).
    pub value: Option<Bytes>,
    /// The item's CAS token, for [`Condition::CasMatch`]; 0 on a miss (but
    /// the placeholder's token when a lease is won or held) and on
    /// text-protocol shards.
    pub cas: u64,
    /// Time the item has left; `None` when it never expires, on a miss,
    /// and on text-protocol shards. With a lease (a miss), the
    /// placeholder's.
    pub ttl_remaining: Option<Duration>,
    /// Who refills the key (Gets with a lease only).
    pub lease: Lease,
    /// The value was invalidated ([`Client::invalidate`]) and is being, or
    /// is about to be, refreshed: usable, but old.
    pub stale: bool,
}

impl Entry {
    /// True if the key was present (fresh or stale).
    pub fn found(&self) -> bool {
        self.value.is_some()
    }
}

/// How long [`Client::get_or_fill`] lets others fill a key.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FillOptions {
    /// How long the lease placeholder lives: the longest a caller that
    /// dies while filling blocks the key. Longer than a fill takes.
    pub lease_ttl: Duration,
    /// How long to wait for another caller's fill before calling `fill`
    /// anyway.
    pub wait: Duration,
}

/// Default [`FillOptions::lease_ttl`].
pub const DEFAULT_FILL_LEASE_TTL: Duration = Duration::from_secs(10);
/// Default [`FillOptions::wait`].
pub const DEFAULT_FILL_WAIT: Duration = Duration::from_secs(5);

impl Default for FillOptions {
    fn default() -> Self {
        FillOptions {
            lease_ttl: DEFAULT_FILL_LEASE_TTL,
            wait: DEFAULT_FILL_WAIT,
        }
    }
}

/// Why [`Client::get_or_fill`] failed: a memgate call, or `fill` itself.
#[derive(Debug)]
pub enum FillError<E> {
    /// A Get or Set failed.
    Cache(Error),
    /// `fill` failed (on a miss, after the lease was released).
    Fill(E),
}

impl<E: std::fmt::Display> std::fmt::Display for FillError<E> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            FillError::Cache(e) => write!(f, "{e}"),
            FillError::Fill(e) => write!(f, "fill failed: {e}"),
        }
    }
}

impl<E: std::error::Error + 'static> std::error::Error for FillError<E> {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            FillError::Cache(e) => Some(e),
            FillError::Fill(e) => Some(e),
        }
    }
}

impl<E> From<Error> for FillError<E> {
    fn from(e: Error) -> Self {
        FillError::Cache(e)
    }
}

/// First sleep between lease polls in [`Client::get_or_fill`]; doubles.
const FILL_BACKOFF_START: Duration = Duration::from_millis(5);
/// Longest sleep between lease polls.
const FILL_BACKOFF_MAX: Duration = Duration::from_millis(100);

/// Per-call metadata the client adds to every request: the bearer token
/// and the deadline. Opaque; set through [`ClientBuilder`].
#[derive(Clone, Debug)]
pub struct CallSettings {
    token: Option<MetadataValue<Ascii>>,
    timeout: Option<Duration>,
}

impl Interceptor for CallSettings {
    fn call(&mut self, mut req: Request<()>) -> Result<Request<()>, Status> {
        if let Some(token) = &self.token {
            req.metadata_mut().insert("authorization", token.clone());
        }
        if let Some(timeout) = self.timeout {
            req.set_timeout(timeout);
        }
        Ok(req)
    }
}

/// The generated stub with the client's token and deadline applied.
pub type RawClient = CacheClient<InterceptedService<Channel, CallSettings>>;

/// Builds a [`Client`]: deadline, token, retries, TLS.
///
/// ```no_run
/// # async fn demo() -> Result<(), memgate_client::Error> {
/// use std::time::Duration;
/// use memgate_client::{Client, RetryPolicy};
///
/// let client = Client::builder("https://cache.internal:50051")
///     .timeout(Duration::from_millis(500))
///     .bearer_token(std::env::var("MEMGATE_TOKEN").unwrap_or_default())
///     .tls_ca_pem(std::fs::read("ca.pem").unwrap())
///     .retry(RetryPolicy { max_attempts: 5, ..RetryPolicy::default() })
///     .connect()
///     .await?;
/// # Ok(()) }
/// ```
#[derive(Clone, Debug)]
pub struct ClientBuilder {
    target: String,
    timeout: Duration,
    connect_timeout: Duration,
    token: Option<String>,
    retry: RetryPolicy,
    tls_ca: Option<Vec<u8>>,
    tls_identity: Option<(Vec<u8>, Vec<u8>)>,
    tls_domain: Option<String>,
}

impl ClientBuilder {
    /// A builder for `target`: `http://host:port`, `https://host:port`, or
    /// plain `host:port` (plaintext).
    pub fn new(target: impl Into<String>) -> ClientBuilder {
        ClientBuilder {
            target: target.into(),
            timeout: DEFAULT_TIMEOUT,
            connect_timeout: Duration::from_secs(5),
            token: None,
            retry: RetryPolicy::default(),
            tls_ca: None,
            tls_identity: None,
            tls_domain: None,
        }
    }

    /// Deadline of each unary call (sent as `grpc-timeout`).
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// Longest wait for the connection.
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = timeout;
        self
    }

    /// Sends `authorization: Bearer <token>` with every call.
    pub fn bearer_token(mut self, token: impl Into<String>) -> Self {
        self.token = Some(token.into());
        self
    }

    /// How idempotent calls are retried.
    pub fn retry(mut self, policy: RetryPolicy) -> Self {
        self.retry = policy;
        self
    }

    /// Trusts this CA (PEM) for an `https` target instead of the system roots.
    pub fn tls_ca_pem(mut self, pem: impl Into<Vec<u8>>) -> Self {
        self.tls_ca = Some(pem.into());
        self
    }

    /// Presents this client certificate and key (PEM) for mutual TLS.
    pub fn tls_identity_pem(mut self, cert: impl Into<Vec<u8>>, key: impl Into<Vec<u8>>) -> Self {
        self.tls_identity = Some((cert.into(), key.into()));
        self
    }

    /// Expects this name in the server certificate (default: the target's host).
    pub fn tls_domain(mut self, domain: impl Into<String>) -> Self {
        self.tls_domain = Some(domain.into());
        self
    }

    fn endpoint(&self) -> Result<Endpoint, Error> {
        let uri = if self.target.contains("://") {
            self.target.clone()
        } else {
            format!("http://{}", self.target)
        };
        let invalid = |reason: String| Error::InvalidTarget {
            target: self.target.clone(),
            reason,
        };
        let mut endpoint = Endpoint::from_shared(uri.clone())
            .map_err(|e| invalid(e.to_string()))?
            .connect_timeout(self.connect_timeout)
            .tcp_nodelay(true);
        if uri.starts_with("https://") {
            let mut tls = ClientTlsConfig::new();
            tls = match &self.tls_ca {
                Some(pem) => tls.ca_certificate(Certificate::from_pem(pem)),
                None => tls.with_native_roots(),
            };
            if let Some((cert, key)) = &self.tls_identity {
                tls = tls.identity(Identity::from_pem(cert, key));
            }
            if let Some(domain) = &self.tls_domain {
                tls = tls.domain_name(domain.clone());
            }
            endpoint = endpoint.tls_config(tls)?;
        }
        Ok(endpoint)
    }

    /// Connects now, failing if the server cannot be reached.
    pub async fn connect(self) -> Result<Client, Error> {
        let channel = self.endpoint()?.connect().await?;
        self.build(channel)
    }

    /// Connects on first use (and reconnects as needed).
    pub fn connect_lazy(self) -> Result<Client, Error> {
        let channel = self.endpoint()?.connect_lazy();
        self.build(channel)
    }

    /// A client over an existing channel, with this builder's settings.
    pub fn build(self, channel: Channel) -> Result<Client, Error> {
        let token = match &self.token {
            Some(t) => Some(
                format!("Bearer {t}")
                    .parse()
                    .map_err(|_| Error::InvalidTarget {
                        target: self.target.clone(),
                        reason: "the bearer token holds characters not allowed in a header".into(),
                    })?,
            ),
            None => None,
        };
        Ok(Client {
            channel,
            settings: CallSettings {
                token,
                timeout: Some(self.timeout),
            },
            retry: self.retry,
        })
    }
}

/// A memgate client. Cheap to clone: clones share one HTTP/2 connection.
#[derive(Clone, Debug)]
pub struct Client {
    channel: Channel,
    settings: CallSettings,
    retry: RetryPolicy,
}

impl Client {
    /// Connects to `target` with default settings (5 s deadline, 3 attempts
    /// for idempotent calls).
    pub async fn connect(target: impl Into<String>) -> Result<Client, Error> {
        ClientBuilder::new(target).connect().await
    }

    /// A builder for custom settings.
    pub fn builder(target: impl Into<String>) -> ClientBuilder {
        ClientBuilder::new(target)
    }

    /// Wraps an existing channel with default settings.
    pub fn from_channel(channel: Channel) -> Client {
        ClientBuilder::new("")
            .build(channel)
            .expect("no token to validate")
    }

    /// A clone whose unary calls use `timeout` as their deadline.
    pub fn with_timeout(&self, timeout: Duration) -> Client {
        let mut c = self.clone();
        c.settings.timeout = Some(timeout);
        c
    }

    /// The generated stub with this client's token and deadline, for calls
    /// the wrapper does not cover.
    pub fn raw(&self) -> RawClient {
        CacheClient::with_interceptor(self.channel.clone(), self.settings.clone())
            .max_decoding_message_size(MAX_MESSAGE_BYTES)
            .max_encoding_message_size(MAX_MESSAGE_BYTES)
    }

    /// Runs one unary call through the retry policy (`idempotent`: may it
    /// be retried on UNAVAILABLE), sending a clone of `req` per attempt.
    async fn unary<Req, Resp, F, Fut>(
        &self,
        idempotent: bool,
        req: Req,
        call: F,
    ) -> Result<Resp, Error>
    where
        Req: Clone,
        F: Fn(RawClient, Req) -> Fut,
        Fut: std::future::Future<Output = Result<tonic::Response<Resp>, Status>>,
    {
        let resp = self
            .retry
            .run(idempotent, || call(self.raw(), req.clone()))
            .await?;
        Ok(resp.into_inner())
    }

    /// The stub for streams: they carry no default deadline, since a long
    /// stream is not a slow call.
    fn stream_stub(&self) -> RawClient {
        let settings = CallSettings {
            timeout: None,
            ..self.settings.clone()
        };
        CacheClient::with_interceptor(self.channel.clone(), settings)
            .max_decoding_message_size(MAX_MESSAGE_BYTES)
            .max_encoding_message_size(MAX_MESSAGE_BYTES)
    }

    /// Reads `key`; `None` on a miss. An invalidated key still reads as its
    /// old value ([`Client::get_entry`] tells it is stale). Retried on
    /// `UNAVAILABLE`.
    pub async fn get(&self, key: &str) -> Result<Option<Bytes>, Error> {
        let resp = self
            .unary(
                true,
                pb::GetRequest {
                    key: key.into(),
                    ..Default::default()
                },
                |mut stub, req| async move { stub.get(req).await },
            )
            .await?;
        Ok(resp.found.then_some(resp.value))
    }

    /// Stores `value` under `key`. `ttl`: `None` uses the server's default
    /// TTL, `Some(Duration::ZERO)` never expires, anything else is rounded
    /// up to whole seconds. Returns once memcached acknowledged the write.
    pub async fn set(
        &self,
        key: &str,
        value: impl Into<Bytes>,
        ttl: Option<Duration>,
    ) -> Result<(), Error> {
        let value: Bytes = value.into();
        self.unary(
            self.retry.retry_writes,
            pb::SetRequest {
                key: key.into(),
                value,
                ttl_seconds: ttl_seconds(ttl),
                ..Default::default()
            },
            |mut stub, req| async move { stub.set(req).await },
        )
        .await?;
        Ok(())
    }

    /// Deletes `key`; `true` if it existed. Retried on `UNAVAILABLE`.
    /// [`Client::invalidate`] marks it stale instead.
    pub async fn delete(&self, key: &str) -> Result<bool, Error> {
        let resp = self
            .unary(
                true,
                pb::DeleteRequest {
                    key: key.into(),
                    ..Default::default()
                },
                |mut stub, req| async move { stub.delete(req).await },
            )
            .await?;
        Ok(resp.deleted)
    }

    /// Adds `delta` to the counter at `key` (negative: subtracts, stopping
    /// at 0) and returns its new value. A missing key is created holding
    /// `initial` (returned as is) with `ttl` (as for [`Client::set`]); with
    /// `initial: None` it is a `NotFound` error. A value that is not a
    /// decimal number is `FailedPrecondition`. Never retried: a retry could
    /// apply the delta twice.
    ///
    /// ```no_run
    /// # async fn demo(client: memgate_client::Client) -> Result<(), memgate_client::Error> {
    /// use std::time::Duration;
    /// let hits = client.increment("hits:today", 1, Some(0), Some(Duration::from_secs(86400))).await?;
    /// # Ok(()) }
    /// ```
    pub async fn increment(
        &self,
        key: &str,
        delta: i64,
        initial: Option<u64>,
        ttl: Option<Duration>,
    ) -> Result<u64, Error> {
        let resp = self
            .unary(
                false,
                pb::IncrementRequest {
                    key: key.into(),
                    delta,
                    initial_value: initial,
                    ttl_seconds: ttl_seconds(ttl),
                },
                |mut stub, req| async move { stub.increment(req).await },
            )
            .await?;
        Ok(resp.value)
    }

    /// Sets a new TTL on `key` without changing its value
    /// (`Duration::ZERO`: never expires; rounded up to whole seconds);
    /// `true` if it existed. Retried on `UNAVAILABLE`.
    pub async fn touch(&self, key: &str, ttl: Duration) -> Result<bool, Error> {
        let resp = self
            .unary(
                true,
                pb::TouchRequest {
                    key: key.into(),
                    ttl_seconds: ttl_seconds(Some(ttl)).unwrap_or(0),
                },
                |mut stub, req| async move { stub.touch(req).await },
            )
            .await?;
        Ok(resp.found)
    }

    /// Reads `key` with its metadata (CAS token, remaining TTL, stale
    /// flag), like [`Client::get`] with no options; see
    /// [`Client::get_with`].
    pub async fn get_entry(&self, key: &str) -> Result<Entry, Error> {
        self.get_with(key, GetOptions::new()).await
    }

    /// Reads `key` with its metadata, optionally touching it
    /// ([`GetOptions::touch`]) and taking a lease against stampedes
    /// ([`GetOptions::lease`]). A miss is `Entry { value: None, .. }`.
    /// Retried on `UNAVAILABLE` (a retried lease Get can find its own
    /// placeholder and answer [`Lease::Held`]: a wasted lease, not a wrong
    /// answer).
    ///
    /// ```no_run
    /// # async fn demo(client: memgate_client::Client) -> Result<(), memgate_client::Error> {
    /// use std::time::Duration;
    /// use memgate_client::{Condition, GetOptions};
    /// let e = client.get_with("session:1", GetOptions::new().touch(Duration::from_secs(600))).await?;
    /// if let Some(v) = e.value {
    ///     let mut next = v.to_vec();
    ///     next.push(b'!');
    ///     let out = client.cas("session:1", next, e.cas, None).await?;
    ///     if !out.stored { /* someone wrote meanwhile: read again */ }
    /// }
    /// # Ok(()) }
    /// ```
    pub async fn get_with(&self, key: &str, options: GetOptions) -> Result<Entry, Error> {
        let resp = self
            .unary(
                true,
                pb::GetRequest {
                    key: key.into(),
                    touch_ttl_seconds: options.touch_ttl.map(|t| ttl_seconds(Some(t)).unwrap_or(0)),
                    lease_ttl_seconds: options.lease_ttl.map(lease_seconds),
                },
                |mut stub, req| async move { stub.get(req).await },
            )
            .await?;
        Ok(entry(resp))
    }

    /// Stores `value` under `key` if `condition` holds (`ttl` as for
    /// [`Client::set`]). A condition that does not hold is not an error:
    /// `stored: false`. Unconditional writes are retried as [`Client::set`]
    /// is; conditional ones never (a retry of a write that landed would
    /// answer `stored: false`).
    pub async fn set_with(
        &self,
        key: &str,
        value: impl Into<Bytes>,
        ttl: Option<Duration>,
        condition: Condition,
    ) -> Result<SetOutcome, Error> {
        let retry = condition == Condition::Always && self.retry.retry_writes;
        let req = set_request(Item {
            ttl,
            condition,
            ..Item::new(key, value)
        });
        let resp = self
            .unary(
                retry,
                req,
                |mut stub, req| async move { stub.set(req).await },
            )
            .await?;
        Ok(SetOutcome {
            stored: resp.stored,
            cas: resp.cas,
        })
    }

    /// Stores `value` only if `key` does not exist (memcached's add): a
    /// first writer wins. Never retried.
    pub async fn add(
        &self,
        key: &str,
        value: impl Into<Bytes>,
        ttl: Option<Duration>,
    ) -> Result<SetOutcome, Error> {
        self.set_with(key, value, ttl, Condition::Absent).await
    }

    /// Stores `value` only if `key` exists (memcached's replace). Never
    /// retried.
    pub async fn replace(
        &self,
        key: &str,
        value: impl Into<Bytes>,
        ttl: Option<Duration>,
    ) -> Result<SetOutcome, Error> {
        self.set_with(key, value, ttl, Condition::Present).await
    }

    /// Compare-and-swap: stores `value` only if `key`'s CAS token is still
    /// `cas` (from [`Client::get_with`] or an earlier write); of two writers
    /// with the same token, one stores. Never retried.
    pub async fn cas(
        &self,
        key: &str,
        value: impl Into<Bytes>,
        cas: u64,
        ttl: Option<Duration>,
    ) -> Result<SetOutcome, Error> {
        self.set_with(key, value, ttl, Condition::CasMatch(cas))
            .await
    }

    /// Marks `key` stale instead of deleting it: reads keep getting the old
    /// value (`stale: true`) for the server's `--stale-ttl`, while the first
    /// reader with a lease refreshes it (see [`Client::get_or_fill`]).
    /// `true` if it existed. Retried on `UNAVAILABLE`.
    pub async fn invalidate(&self, key: &str) -> Result<bool, Error> {
        let resp = self
            .unary(
                true,
                pb::DeleteRequest {
                    key: key.into(),
                    invalidate: true,
                },
                |mut stub, req| async move { stub.delete(req).await },
            )
            .await?;
        Ok(resp.deleted)
    }

    /// The value under `key`, computed by `fill` and stored with `ttl` when
    /// it is missing, with one `fill` per key however many callers (across
    /// every memgate replica) ask at once. [`Client::get_or_fill_with`]
    /// with the default [`FillOptions`] (10 s lease, 5 s wait).
    ///
    /// ```no_run
    /// # async fn demo(client: memgate_client::Client) -> Result<(), Box<dyn std::error::Error>> {
    /// use std::time::Duration;
    /// let page = client
    ///     .get_or_fill("page:/home", Some(Duration::from_secs(60)), || async {
    ///         Ok::<_, std::io::Error>(b"<html>...</html>".to_vec())
    ///     })
    ///     .await?;
    /// # Ok(()) }
    /// ```
    pub async fn get_or_fill<F, Fut, V, E>(
        &self,
        key: &str,
        ttl: Option<Duration>,
        fill: F,
    ) -> Result<Bytes, FillError<E>>
    where
        F: FnOnce() -> Fut,
        Fut: std::future::Future<Output = Result<V, E>>,
        V: Into<Bytes>,
    {
        self.get_or_fill_with(key, ttl, FillOptions::default(), fill)
            .await
    }

    /// The value under `key`, filled under a lease when it is missing:
    ///
    /// 1. Get with a lease of `options.lease_ttl`.
    /// 2. A fresh value is returned; `fill` is not called.
    /// 3. A stale value ([`Client::invalidate`]) is returned at once, unless
    ///    this caller won the lease to refresh it: it then calls `fill`,
    ///    stores the value with `ttl` and returns it (if `fill` fails its
    ///    error is returned and the stale value stays).
    /// 4. On a miss with the lease won, it calls `fill`, stores and returns
    ///    the value. If `fill` fails, the lease is released (the
    ///    placeholder deleted, so another caller can win at once) and
    ///    `fill`'s error returned.
    /// 5. On a miss with the lease held by another caller, it sleeps a
    ///    jittered backoff (5 ms doubling to 100 ms, each times a random
    ///    factor in [0.5, 1.5)) and goes back to 1, until `options.wait`
    ///    has passed since the call began; then it calls `fill`, stores and
    ///    returns the value itself.
    ///
    /// `fill` is called at most once per call. Errors of the Get and Set
    /// calls are returned as [`FillError::Cache`].
    pub async fn get_or_fill_with<F, Fut, V, E>(
        &self,
        key: &str,
        ttl: Option<Duration>,
        options: FillOptions,
        fill: F,
    ) -> Result<Bytes, FillError<E>>
    where
        F: FnOnce() -> Fut,
        Fut: std::future::Future<Output = Result<V, E>>,
        V: Into<Bytes>,
    {
        let started = tokio::time::Instant::now();
        let deadline = started + options.wait;
        let lease = GetOptions::new().lease(options.lease_ttl);
        let mut polls = 0;
        loop {
            let e = self.get_with(key, lease).await?;
            match (e.value, e.lease) {
                (Some(_), Lease::Won) if e.stale => {
                    return self.fill_and_set(key, ttl, fill).await;
                }
                (Some(v), _) => return Ok(v),
                (None, Lease::Won) => {
                    let value: Bytes = match fill().await {
                        Ok(v) => v.into(),
                        Err(err) => {
                            // Release the lease so the next caller wins at
                            // once; fill's error matters more than this
                            // call's.
                            let _ = self.delete(key).await;
                            return Err(FillError::Fill(err));
                        }
                    };
                    self.set(key, value.clone(), ttl).await?;
                    return Ok(value);
                }
                (None, Lease::Held) => {
                    let now = tokio::time::Instant::now();
                    if now >= deadline {
                        return self.fill_and_set(key, ttl, fill).await;
                    }
                    let nap = fill_backoff(polls).min(deadline - now);
                    polls += 1;
                    tokio::time::sleep(nap).await;
                }
                // The server reports no lease on a miss: nothing to wait for.
                (None, Lease::None) => return self.fill_and_set(key, ttl, fill).await,
            }
        }
    }

    /// `fill`, then an unconditional Set of its value.
    async fn fill_and_set<F, Fut, V, E>(
        &self,
        key: &str,
        ttl: Option<Duration>,
        fill: F,
    ) -> Result<Bytes, FillError<E>>
    where
        F: FnOnce() -> Fut,
        Fut: std::future::Future<Output = Result<V, E>>,
        V: Into<Bytes>,
    {
        let value: Bytes = fill().await.map_err(FillError::Fill)?.into();
        self.set(key, value.clone(), ttl).await?;
        Ok(value)
    }

    /// Keys starting with `prefix`, sorted, at most `limit` (0: the
    /// server's maximum). On memcached this is a snapshot (see the proto).
    pub async fn list(&self, prefix: &str, limit: u32) -> Result<Vec<String>, Error> {
        let resp = self
            .unary(
                true,
                pb::ListRequest {
                    prefix: prefix.into(),
                    limit,
                },
                |mut stub, req| async move { stub.list(req).await },
            )
            .await?;
        Ok(resp.keys)
    }

    /// Reads many keys in one call: one [`Lookup`] per key, in order.
    ///
    /// ```no_run
    /// # async fn demo(client: memgate_client::Client) -> Result<(), memgate_client::Error> {
    /// for lookup in client.get_many(["user:1", "user:2"]).await? {
    ///     match (lookup.value, lookup.error) {
    ///         (Some(v), _) => println!("{} = {} bytes", lookup.key, v.len()),
    ///         (None, Some(failure)) => eprintln!("{}: {:?} {}", lookup.key, failure.code, failure.message),
    ///         (None, None) => println!("{} missing", lookup.key),
    ///     }
    /// }
    /// # Ok(()) }
    /// ```
    pub async fn get_many<I, K>(&self, keys: I) -> Result<Vec<Lookup>, Error>
    where
        I: IntoIterator<Item = K>,
        K: Into<String>,
    {
        let keys: Vec<String> = keys.into_iter().map(Into::into).collect();
        let resp = self
            .unary(
                true,
                pb::BatchGetRequest { keys: keys.clone() },
                |mut stub, req| async move { stub.batch_get(req).await },
            )
            .await?;
        Ok(resp.results.into_iter().map(lookup).collect())
    }

    /// Writes many items in one call. An invalid item fails the whole call;
    /// items that fail at their shard, and items whose [`Item::condition`]
    /// did not hold (code `FailedPrecondition`), are listed in the outcome.
    /// Retried only with [`RetryPolicy::retry_writes`] and no item
    /// conditional.
    pub async fn set_many<I>(&self, items: I) -> Result<BatchOutcome, Error>
    where
        I: IntoIterator<Item = Item>,
    {
        let items: Vec<pb::SetRequest> = items.into_iter().map(set_request).collect();
        let conditional = items.iter().any(|i| i.condition != 0);
        let resp = self
            .unary(
                self.retry.retry_writes && !conditional,
                pb::BatchSetRequest {
                    items: items.clone(),
                },
                |mut stub, req| async move { stub.batch_set(req).await },
            )
            .await?;
        Ok(outcome(resp.stored, resp.errors))
    }

    /// Deletes many keys in one call; the count is of keys that existed.
    pub async fn delete_many<I, K>(&self, keys: I) -> Result<BatchOutcome, Error>
    where
        I: IntoIterator<Item = K>,
        K: Into<String>,
    {
        let keys: Vec<String> = keys.into_iter().map(Into::into).collect();
        let resp = self
            .unary(
                true,
                pb::BatchDeleteRequest { keys: keys.clone() },
                |mut stub, req| async move { stub.batch_delete(req).await },
            )
            .await?;
        Ok(outcome(resp.deleted, resp.errors))
    }

    /// Streams keys in and lookups out, in order (BatchGetStream). Memory
    /// stays bounded on both sides however many keys flow; read results
    /// while keys are still being sent.
    ///
    /// ```no_run
    /// # async fn demo(client: memgate_client::Client) -> Result<(), memgate_client::Error> {
    /// use futures::StreamExt;
    /// let keys = tokio_stream::iter((0..100_000).map(|i| format!("user:{i}")));
    /// let mut results = client.get_stream(keys).await?;
    /// while let Some(lookup) = results.next().await {
    ///     let lookup = lookup?;
    ///     if let Some(value) = lookup.value { /* ... */ }
    /// }
    /// # Ok(()) }
    /// ```
    pub async fn get_stream<S>(
        &self,
        keys: S,
    ) -> Result<impl Stream<Item = Result<Lookup, Error>> + use<S>, Error>
    where
        S: Stream<Item = String> + Send + 'static,
    {
        let requests = keys.map(|key| pb::GetRequest {
            key,
            ..Default::default()
        });
        let results = self
            .stream_stub()
            .batch_get_stream(requests)
            .await?
            .into_inner();
        Ok(results.map(|r| r.map(lookup).map_err(Error::from)))
    }

    /// Streams items to the server (BatchSetStream); the outcome arrives
    /// once the stream ends. Invalid items are reported, not fatal.
    pub async fn set_stream<S>(&self, items: S) -> Result<BatchOutcome, Error>
    where
        S: Stream<Item = Item> + Send + 'static,
    {
        let resp = self
            .stream_stub()
            .batch_set_stream(items.map(set_request))
            .await?
            .into_inner();
        Ok(outcome(resp.stored, resp.errors))
    }

    /// Streams keys to delete (BatchDeleteStream).
    pub async fn delete_stream<S>(&self, keys: S) -> Result<BatchOutcome, Error>
    where
        S: Stream<Item = String> + Send + 'static,
    {
        let resp = self
            .stream_stub()
            .batch_delete_stream(keys.map(|key| pb::DeleteRequest {
                key,
                ..Default::default()
            }))
            .await?
            .into_inner();
        Ok(outcome(resp.deleted, resp.errors))
    }

    /// Reads `key` and decodes it from JSON; `None` on a miss, and
    /// [`Error::Decode`] when the stored bytes are not a `T`.
    ///
    /// ```no_run
    /// # async fn demo(client: memgate_client::Client) -> Result<(), memgate_client::Error> {
    /// #[derive(serde::Serialize, serde::Deserialize)]
    /// struct Session { user: u64, roles: Vec<String> }
    ///
    /// let s = Session { user: 42, roles: vec!["admin".into()] };
    /// client.set_json("session:abc", &s, Some(std::time::Duration::from_secs(300))).await?;
    /// let back: Option<Session> = client.get_json("session:abc").await?;
    /// # Ok(()) }
    /// ```
    pub async fn get_json<T: DeserializeOwned>(&self, key: &str) -> Result<Option<T>, Error> {
        match self.get(key).await? {
            None => Ok(None),
            Some(bytes) => {
                serde_json::from_slice(&bytes)
                    .map(Some)
                    .map_err(|source| Error::Decode {
                        key: key.to_owned(),
                        source,
                    })
            }
        }
    }

    /// Stores `value` as JSON (see [`Client::set`] for `ttl`).
    pub async fn set_json<T: Serialize + ?Sized>(
        &self,
        key: &str,
        value: &T,
        ttl: Option<Duration>,
    ) -> Result<(), Error> {
        let bytes = serde_json::to_vec(value).map_err(Error::Encode)?;
        self.set(key, bytes, ttl).await
    }

    /// Which memcached server holds each of `keys` now, and whether it is
    /// up (nothing is read or written). Retried on `UNAVAILABLE`.
    pub async fn locate(&self, keys: Vec<String>) -> Result<Vec<pb::KeyLocation>, Error> {
        let req = pb::LocateRequest { keys };
        self.unary(
            true,
            req,
            |mut stub, req| async move { stub.locate(req).await },
        )
        .await
        .map(|r| r.locations)
    }

    /// The server's statistics: its version, uptime and counters, and per
    /// shard its address, state, ring share and the backend's own figures
    /// (memcached's `stats`). A shard that does not answer is reported
    /// (`up: false`, with its `error`), not an error of the call. Retried
    /// on `UNAVAILABLE`.
    pub async fn stats(&self) -> Result<pb::StatsResponse, Error> {
        self.unary(true, pb::StatsRequest {}, |mut stub, req| async move {
            stub.stats(req).await
        })
        .await
    }

    /// The health of `service` ("" for the whole server,
    /// "memgate.v1.Cache" for the cache).
    pub async fn health(&self, service: &str) -> Result<ServingStatus, Error> {
        let mut health =
            HealthClient::with_interceptor(self.channel.clone(), self.settings.clone());
        let resp = health
            .check(tonic_health::pb::HealthCheckRequest {
                service: service.into(),
            })
            .await?
            .into_inner();
        use tonic_health::pb::health_check_response::ServingStatus as Wire;
        Ok(match Wire::try_from(resp.status) {
            Ok(Wire::Serving) => ServingStatus::Serving,
            Ok(Wire::NotServing) => ServingStatus::NotServing,
            _ => ServingStatus::Unknown,
        })
    }
}

/// The API's TTL seconds: `None` → server default, zero → never expires,
/// else whole seconds rounded up (a sub-second TTL must not mean "forever").
fn ttl_seconds(ttl: Option<Duration>) -> Option<u32> {
    ttl.map(|d| {
        let secs = d.as_secs() + u64::from(d.subsec_nanos() > 0);
        u32::try_from(secs).unwrap_or(u32::MAX)
    })
}

fn set_request(item: Item) -> pb::SetRequest {
    let (condition, cas) = item.condition.wire();
    pb::SetRequest {
        key: item.key,
        value: item.value,
        ttl_seconds: ttl_seconds(item.ttl),
        condition: condition.into(),
        cas,
    }
}

/// Lease seconds: rounded up, and never 0 (which would not be a lease).
fn lease_seconds(ttl: Duration) -> u32 {
    ttl_seconds(Some(ttl)).unwrap_or(1).max(1)
}

fn entry(r: pb::GetResponse) -> Entry {
    let lease = match r.lease() {
        pb::LeaseState::Won => Lease::Won,
        pb::LeaseState::Held => Lease::Held,
        pb::LeaseState::Unspecified => Lease::None,
    };
    Entry {
        value: r.found.then_some(r.value),
        cas: r.cas,
        ttl_remaining: r
            .ttl_remaining_seconds
            .map(|s| Duration::from_secs(s.into())),
        lease,
        stale: r.stale,
    }
}

/// The `n`th (0-based) sleep between lease polls: 5 ms doubling to 100 ms,
/// times a random factor in [0.5, 1.5) so waiting callers spread out.
fn fill_backoff(n: u32) -> Duration {
    FILL_BACKOFF_START
        .saturating_mul(1u32 << n.min(16))
        .min(FILL_BACKOFF_MAX)
        .mul_f64(0.5 + fastrand::f64())
}

fn lookup(r: pb::GetResult) -> Lookup {
    let error = (!r.error.is_empty()).then(|| KeyFailure {
        key: r.key.clone(),
        code: tonic::Code::from_i32(r.error_code),
        message: r.error,
    });
    Lookup {
        key: r.key,
        value: r.found.then_some(r.value),
        error,
    }
}

fn outcome(count: u32, errors: Vec<pb::KeyError>) -> BatchOutcome {
    BatchOutcome {
        count,
        errors: errors
            .into_iter()
            .map(|e| KeyFailure {
                key: e.key,
                code: tonic::Code::from_i32(e.code),
                message: e.message,
            })
            .collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ttl_rounds_up_and_keeps_zero_and_none() {
        assert_eq!(ttl_seconds(None), None);
        assert_eq!(ttl_seconds(Some(Duration::ZERO)), Some(0));
        assert_eq!(ttl_seconds(Some(Duration::from_millis(1))), Some(1));
        assert_eq!(ttl_seconds(Some(Duration::from_millis(1500))), Some(2));
        assert_eq!(ttl_seconds(Some(Duration::from_secs(60))), Some(60));
        assert_eq!(
            ttl_seconds(Some(Duration::from_secs(u64::MAX))),
            Some(u32::MAX)
        );
    }

    #[test]
    fn leases_last_at_least_a_second() {
        assert_eq!(lease_seconds(Duration::ZERO), 1);
        assert_eq!(lease_seconds(Duration::from_millis(1)), 1);
        assert_eq!(lease_seconds(Duration::from_millis(2500)), 3);
        assert_eq!(lease_seconds(Duration::from_secs(10)), 10);
    }

    #[test]
    fn fill_backoff_doubles_from_5ms_to_100ms_with_jitter() {
        for (n, base) in [
            (0, 5),
            (1, 10),
            (2, 20),
            (3, 40),
            (4, 80),
            (5, 100),
            (40, 100),
        ] {
            let base = Duration::from_millis(base);
            let mut seen = Vec::new();
            for _ in 0..200 {
                let d = fill_backoff(n);
                assert!(d >= base / 2 && d < base * 3 / 2, "poll {n}: {d:?}");
                seen.push(d);
            }
            seen.sort();
            seen.dedup();
            assert!(seen.len() > 1, "poll {n}: no jitter");
        }
    }

    #[test]
    fn conditions_and_entries_map_to_the_wire() {
        let req = set_request(Item::new("k", "v").when(Condition::CasMatch(7)));
        assert_eq!(req.condition(), pb::SetCondition::CasMatch);
        assert_eq!(req.cas, 7);
        let req = set_request(Item::new("k", "v").ttl(Duration::from_secs(3)));
        assert_eq!(req.condition(), pb::SetCondition::Unspecified);
        assert_eq!(req.ttl_seconds, Some(3));
        assert_eq!(
            set_request(Item::new("k", "v").when(Condition::Absent)).condition(),
            pb::SetCondition::Absent
        );
        let e = entry(pb::GetResponse {
            found: true,
            value: Bytes::from_static(b"v"),
            cas: 9,
            ttl_remaining_seconds: Some(60),
            lease: pb::LeaseState::Held.into(),
            stale: true,
        });
        assert_eq!(
            e,
            Entry {
                value: Some(Bytes::from_static(b"v")),
                cas: 9,
                ttl_remaining: Some(Duration::from_secs(60)),
                lease: Lease::Held,
                stale: true,
            }
        );
        let miss = entry(pb::GetResponse {
            lease: pb::LeaseState::Won.into(),
            cas: 4,
            ..Default::default()
        });
        assert!(!miss.found());
        assert_eq!(
            (miss.lease, miss.cas, miss.ttl_remaining),
            (Lease::Won, 4, None)
        );
    }

    #[test]
    fn targets_without_a_scheme_are_plaintext() {
        let e = ClientBuilder::new("127.0.0.1:50051").endpoint().unwrap();
        assert_eq!(e.uri().scheme_str(), Some("http"));
        assert!(ClientBuilder::new("http://bad host:1").endpoint().is_err());
    }
}
