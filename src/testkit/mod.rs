//! A fake identity provider and protected API with scripted faults (feature `testkit`): for
//! this crate's tests and examples, and for your own tests.
//!
//! [`FakeIdentityProvider`] serves three endpoints:
//!
//! | path | what |
//! | --- | --- |
//! | `POST /{tenant}/oauth2/v2.0/token` | Entra v2.0 token endpoint: `client_credentials` with `client_secret` or `client_assertion`, and `refresh_token`; a `claims` field (CAE) is remembered with the token |
//! | `GET /metadata/identity/oauth2/token` | IMDS (needs `Metadata: true` and `resource`; takes no claims) |
//! | `/api/...` | a protected API that accepts only unexpired, unrevoked tokens this provider issued |
//!
//! Two ways in, one handler, one fault script, one log:
//!
//! - **a loopback socket** ([`start`](FakeIdentityProviderBuilder::start)): any HTTP client,
//!   the crate's real credentials (`token_url(idp.token_url(..))`, an IMDS endpoint of
//!   [`uri`](FakeIdentityProvider::uri)), examples. Use real time at millisecond scale.
//! - **in memory** ([`service`](FakeIdentityProvider::service) for a tower stack,
//!   [`credential`](FakeIdentityProvider::credential) /
//!   [`imds_credential`](FakeIdentityProvider::imds_credential) for a `TokenCache`): no
//!   socket, so `#[tokio::test(start_paused = true)]` tests see exact virtual times. (With a
//!   socket, tokio advances a paused clock whenever every task waits on I/O, i.e. while any
//!   request is in flight.) [`build`](FakeIdentityProviderBuilder::build) makes a provider
//!   without a socket.
//!
//! A [`Fault`] makes one [`Target`] misbehave during a window of time measured from the moment
//! the provider was built, on the tokio clock: any status with any retry header
//! ([`RetryAfter`]: delta-seconds, HTTP-date, `retry-after-ms`, zero, or any raw value), a
//! hang, a dropped connection, or on the API a `401 invalid_token` or a CAE
//! `insufficient_claims` challenge. [`revoke_all`](FakeIdentityProvider::revoke_all) and
//! [`revoke`](FakeIdentityProvider::revoke) make the API reject tokens from then on.
//!
//! Every request is logged ([`LoggedRequest`]): arrival and end on the tokio clock, status,
//! fault, retry header sent, token issued or presented and what the API made of it.
//! [`RequestLog`] answers the questions the seeds' invariants ask (gaps between requests,
//! requests inside a `Retry-After` or sooner than the 5 s floor after a failure, whether a
//! valid token existed at a time).
//!
//! # Bounds
//!
//! The log is a ring buffer of the last [`log_capacity`](FakeIdentityProviderBuilder::log_capacity)
//! requests (default [`DEFAULT_LOG_CAPACITY`] = 100 000, about 25 MB when full: 224 bytes an
//! entry plus its short strings; per-target totals count all). The
//! issued-token map holds only tokens that may still be presented: expired tokens are pruned
//! whenever a token is issued, and at most [`max_issued_tokens`](FakeIdentityProviderBuilder::max_issued_tokens)
//! (default [`DEFAULT_MAX_ISSUED`] = 100 000) are kept, the oldest forgotten first (the API then
//! answers `401 invalid_token` for them, logged as [`TokenStatus::Unknown`]). Request bodies
//! are read up to 64 KiB.
//!
//! # Example: paused time, in memory
//!
//! ```
//! # #[cfg(feature = "reqwest")]
//! # #[tokio::main(flavor = "current_thread", start_paused = true)]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! use std::time::Duration;
//! use resilient_auth::testkit::{Fault, FaultKind, FakeIdentityProvider, RetryAfter, Target};
//! use resilient_auth::{TokenCredential, TokenRequest};
//!
//! let idp = FakeIdentityProvider::builder()
//!     .fault(Fault::new(
//!         Target::Token,
//!         Duration::ZERO..Duration::from_secs(20),
//!         FaultKind::status(429, Some(RetryAfter::HttpDate(Duration::from_secs(20)))),
//!     ))
//!     .build()?;
//! let credential = idp.credential("tenant", "client");
//! let request = TokenRequest::new(["api://x/.default"]);
//! let err = credential.get_token(&request).await.unwrap_err();
//! assert!(err.retry_after() >= Some(Duration::from_secs(19)));
//! tokio::time::sleep(Duration::from_secs(20)).await;
//! credential.get_token(&request).await?;
//!
//! let log = idp.log_for(Target::Token);
//! assert_eq!(log.times(Target::Token), [Duration::ZERO, Duration::from_secs(20)]);
//! assert!(log.retry_after_violations(Target::Token, Duration::from_secs(300)).is_empty());
//! # Ok(()) }
//! # #[cfg(not(feature = "reqwest"))]
//! # fn main() {}
//! ```
//!
//! # Example: a loopback socket
//!
//! ```no_run
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! use std::time::Duration;
//! use resilient_auth::testkit::{Fault, FaultKind, FakeIdentityProvider, Target};
//!
//! let idp = FakeIdentityProvider::builder()
//!     .token_lifetime(Duration::from_secs(3600))
//!     .fault(Fault::new(Target::Token, Duration::from_secs(10)..Duration::from_secs(70), FaultKind::Unavailable { retry_after: None }))
//!     .start()
//!     .await?;
//! let token_url = idp.token_url("my-tenant");
//! # let _ = token_url;
//! # Ok(()) }
//! ```

use std::fmt;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::Error;

pub mod credentials;
mod fault;
mod handler;
mod log;
#[cfg(feature = "testkit-tls")]
pub mod sdk_api;
mod server;
mod service;
#[cfg(feature = "testkit-tls")]
mod tls;

pub use fault::{Fault, FaultKind, RetryAfter, Target};
pub use log::{
    LoggedRequest, Outcome, RequestLog, Revocation, SentRetryAfter, TokenStatus, Violation,
    DEFAULT_LOG_CAPACITY,
};
pub use service::{FakeService, ResponseFuture};
#[cfg(feature = "testkit-tls")]
#[cfg_attr(docsrs, doc(cfg(feature = "testkit-tls")))]
pub use {sdk_api::HttpsRequest, tls::HttpsEndpoint};

use handler::{lock, State};

/// The default cap on remembered issued tokens.
pub const DEFAULT_MAX_ISSUED: usize = 100_000;

/// The origin of a provider without a socket: loopback, so that `AuthLayer` attaches tokens
/// to it, and never listened on.
const IN_MEMORY_URI: &str = "http://localhost";

/// Builds a [`FakeIdentityProvider`].
#[derive(Debug, Clone)]
pub struct FakeIdentityProviderBuilder {
    lifetime: Duration,
    refresh_in: Option<Duration>,
    faults: Vec<Fault>,
    log_capacity: usize,
    max_issued: usize,
}

impl FakeIdentityProviderBuilder {
    /// The lifetime of issued tokens (`expires_in`, default 1 h; whole seconds, at least 1).
    #[must_use]
    pub fn token_lifetime(mut self, lifetime: Duration) -> Self {
        self.lifetime = lifetime;
        self
    }

    /// A `refresh_in` hint in token-endpoint responses (default none; whole seconds).
    #[must_use]
    pub fn refresh_in(mut self, refresh_in: Duration) -> Self {
        self.refresh_in = Some(refresh_in);
        self
    }

    /// Adds a fault. Where windows overlap on one target, the first fault added wins.
    #[must_use]
    pub fn fault(mut self, fault: Fault) -> Self {
        self.faults.push(fault);
        self
    }

    /// How many requests the log keeps (default [`DEFAULT_LOG_CAPACITY`]); older ones are
    /// dropped first.
    #[must_use]
    pub fn log_capacity(mut self, capacity: usize) -> Self {
        self.log_capacity = capacity;
        self
    }

    /// How many issued tokens the API remembers at most (default [`DEFAULT_MAX_ISSUED`]);
    /// expired ones are forgotten anyway.
    #[must_use]
    pub fn max_issued_tokens(mut self, max: usize) -> Self {
        self.max_issued = max;
        self
    }

    /// A provider with no socket, for the in-memory ways in
    /// ([`service`](FakeIdentityProvider::service), [`credential`](FakeIdentityProvider::credential),
    /// [`imds_credential`](FakeIdentityProvider::imds_credential)); its
    /// [`uri`](FakeIdentityProvider::uri) is `http://localhost`, never listened on. Fault
    /// windows are measured from now.
    ///
    /// # Errors
    /// [`Error::Config`] for a zero log capacity or a zero issued-token cap.
    pub fn build(self) -> Result<FakeIdentityProvider, Error> {
        if self.log_capacity == 0 {
            return Err(Error::config("testkit log capacity must be at least 1"));
        }
        if self.max_issued == 0 {
            return Err(Error::config("testkit issued-token cap must be at least 1"));
        }
        let state = Arc::new(State::new(
            self.lifetime,
            self.refresh_in,
            self.faults,
            self.log_capacity,
            self.max_issued,
        ));
        Ok(FakeIdentityProvider {
            addr: None,
            state,
            task: None,
        })
    }

    /// Binds `127.0.0.1:0` and starts serving on it (the in-memory ways in work too). Fault
    /// windows are measured from now.
    ///
    /// # Errors
    /// [`Error::Config`] as [`build`](Self::build); [`Error::Unavailable`] if the port cannot
    /// be bound.
    pub async fn start(self) -> Result<FakeIdentityProvider, Error> {
        let mut idp = self.build()?;
        let (listener, addr) = server::bind_loopback().await?;
        idp.addr = Some(addr);
        idp.task = Some(tokio::spawn(server::serve(listener, idp.state.clone())));
        Ok(idp)
    }
}

/// A fake Entra ID + IMDS + protected API: on loopback
/// ([`start`](FakeIdentityProviderBuilder::start)) and in memory
/// ([`service`](Self::service), [`credential`](Self::credential)). The socket server stops
/// when this is dropped; in-memory handles keep working.
pub struct FakeIdentityProvider {
    addr: Option<SocketAddr>,
    state: Arc<State>,
    task: Option<JoinHandle<()>>,
}

impl fmt::Debug for FakeIdentityProvider {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FakeIdentityProvider")
            .field("addr", &self.addr)
            .finish_non_exhaustive()
    }
}

impl Drop for FakeIdentityProvider {
    fn drop(&mut self) {
        if let Some(task) = &self.task {
            task.abort();
        }
    }
}

impl FakeIdentityProvider {
    /// A builder: 1 h tokens, no `refresh_in`, no faults.
    pub fn builder() -> FakeIdentityProviderBuilder {
        FakeIdentityProviderBuilder {
            lifetime: Duration::from_secs(3600),
            refresh_in: None,
            faults: Vec::new(),
            log_capacity: DEFAULT_LOG_CAPACITY,
            max_issued: DEFAULT_MAX_ISSUED,
        }
    }

    /// `http://127.0.0.1:<port>` with a socket, `http://localhost` without: the authority host
    /// and IMDS base.
    pub fn uri(&self) -> String {
        match self.addr {
            Some(addr) => format!("http://{addr}"),
            None => IN_MEMORY_URI.to_owned(),
        }
    }

    /// The socket's address, if the provider was started on one.
    pub fn local_addr(&self) -> Option<SocketAddr> {
        self.addr
    }

    /// The token endpoint for `tenant`.
    pub fn token_url(&self, tenant: &str) -> String {
        format!("{}/{tenant}/oauth2/v2.0/token", self.uri())
    }

    /// The IMDS token endpoint (without a query).
    pub fn imds_url(&self) -> String {
        format!("{}/metadata/identity/oauth2/token", self.uri())
    }

    /// The protected API (any path under `/api/` works the same).
    pub fn api_url(&self) -> String {
        format!("{}/api/data", self.uri())
    }

    /// The fake as an in-memory `tower::Service` (see [`FakeService`]).
    pub fn service(&self) -> FakeService {
        FakeService::new(self.state.clone())
    }

    /// A client-secret credential for `tenant` and `client_id` that calls the token endpoint
    /// in memory (see [`FakeClientSecretCredential`](credentials::FakeClientSecretCredential)).
    #[cfg(feature = "reqwest")]
    #[cfg_attr(docsrs, doc(cfg(feature = "reqwest")))]
    pub fn credential(
        &self,
        tenant: &str,
        client_id: &str,
    ) -> credentials::FakeClientSecretCredential {
        credentials::FakeClientSecretCredential::new(
            self.state.clone(),
            self.uri(),
            tenant,
            client_id,
        )
    }

    /// A managed-identity credential that calls IMDS in memory (see
    /// [`FakeImdsCredential`](credentials::FakeImdsCredential)).
    #[cfg(feature = "reqwest")]
    #[cfg_attr(docsrs, doc(cfg(feature = "reqwest")))]
    pub fn imds_credential(&self) -> credentials::FakeImdsCredential {
        credentials::FakeImdsCredential::new(self.state.clone(), self.uri())
    }

    /// Adds a fault while running (windows are still measured from start).
    pub fn add_fault(&self, fault: Fault) {
        lock(&self.state.faults).push(fault);
    }

    /// Removes all faults.
    pub fn clear_faults(&self) {
        lock(&self.state.faults).clear();
    }

    /// From now on the API rejects every token issued so far (`401 invalid_token`, logged as
    /// [`TokenStatus::Revoked`]); tokens issued later are accepted.
    pub fn revoke_all(&self) {
        self.state.revoke_all();
    }

    /// From now on the API rejects `token`. `false` if the provider does not know it (never
    /// issued, or already forgotten).
    pub fn revoke(&self, token: &str) -> bool {
        self.state.revoke(token)
    }

    /// When the provider was built (tokio clock): time zero of fault windows and the log.
    pub fn started_at(&self) -> Instant {
        self.state.start
    }

    /// Time since start (tokio clock: virtual time in paused tests).
    pub fn elapsed(&self) -> Duration {
        self.state.elapsed()
    }

    /// The logged requests (the last [`log_capacity`](FakeIdentityProviderBuilder::log_capacity)).
    pub fn log(&self) -> RequestLog {
        lock(&self.state.journal).snapshot(None)
    }

    /// The logged requests to `target`.
    pub fn log_for(&self, target: Target) -> RequestLog {
        lock(&self.state.journal).snapshot(Some(target))
    }

    /// The time between consecutive requests to `target` (see [`RequestLog::gaps`]).
    pub fn gaps(&self, target: Target) -> Vec<Duration> {
        self.log_for(target).gaps(target)
    }

    /// How many requests reached `target` over the provider's life (including any the log
    /// has dropped).
    pub fn requests(&self, target: Target) -> usize {
        usize::try_from(lock(&self.state.journal).total(target)).unwrap_or(usize::MAX)
    }

    /// How many tokens were issued (token endpoint and IMDS); also the last serial number.
    pub fn tokens_issued(&self) -> u64 {
        self.state.counter.load(Ordering::SeqCst)
    }

    /// How many issued tokens the API currently remembers (bounded; see the module docs).
    pub fn tokens_remembered(&self) -> usize {
        lock(&self.state.tokens).len()
    }
}
