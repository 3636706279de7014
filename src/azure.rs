//! Adapters for the Azure SDK for Rust (`azure_core` 1.x, feature `azure`, rule U1).
//!
//! Three pieces, each usable alone:
//!
//! | type | direction |
//! | --- | --- |
//! | [`AzureCredential`] | a resilient-auth credential (one [`TokenCache`] per scope set) **as** an `azure_core` `TokenCredential`: hand it to any SDK client |
//! | [`AzureTokenSource`] | any `azure_core` `TokenCredential` (e.g. `azure_identity`'s `AzureCliCredential`, `AzureDeveloperCliCredential`) **as** a resilient-auth [`TokenCredential`] source behind a [`TokenCache`] |
//! | [`AzureTransport`] | an `azure_core` `HttpClient` over a reqwest-middleware client: the four layers become the SDK's transport |
//!
//! # The one way to give an SDK client all four behaviours
//!
//! ```no_run
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! use std::{sync::Arc, time::Duration};
//! use resilient_auth::azure::{AzureCredential, AzureTransport};
//! use resilient_auth::{AuthLayer, ExpBackoffLayer, ManagedIdentityCredential, RetryAfterLayer, TimeoutLayer, TokenCache};
//!
//! let tokens = TokenCache::new(ManagedIdentityCredential::from_env()?, ["https://vault.azure.net/.default"]);
//! let stack = reqwest_middleware::ClientBuilder::new(reqwest::Client::new())
//!     .with(RetryAfterLayer::default())
//!     .with(ExpBackoffLayer::default())
//!     .with(AuthLayer::new(tokens.clone()))
//!     .with(TimeoutLayer::new(Duration::from_secs(10)))
//!     .build();
//! let client_options = AzureTransport::new(stack).authorize_in_transport(true).client_options();
//! let credential = Arc::new(AzureCredential::from_cache(tokens));
//! // e.g. azure_security_keyvault_secrets::SecretClient::new(vault_url, credential,
//! //     Some(SecretClientOptions { client_options, ..Default::default() }))?;
//! # let _ = (client_options, credential); Ok(()) }
//! ```
//!
//! [`AzureTransport::client_options`] switches the SDK's retry policy off
//! (`RetryOptions::none()`) and installs the transport. Why this shape, from `azure_core`'s
//! pipeline (`azure_core::http::Pipeline::new`): a client's policies run in the order
//! *per-call policies → retry policy → per-try policies (the client's
//! `BearerTokenAuthorizationPolicy`) → transport*.
//!
//! - **No double retries.** With the SDK's retry policy on, each of its attempts would run our
//!   whole retry stack inside the transport: up to (1 + SDK retries) × (1 + our retries)
//!   requests per call; and the SDK's own retries start 200 ms apart (a 5xx is fast-retried),
//!   read `Retry-After` only on 429/503 and put no cap on it. With it off, a call sends at most
//!   1 + our retries requests.
//! - **Every retry carries a currently valid token.** The SDK's bearer-token policy sits
//!   *before* the transport and authorizes a request once per SDK attempt; with the SDK's retry
//!   off that is once per call, so our retries inside the transport would resend the header it
//!   attached, however long they waited. [`AzureTransport::authorize_in_transport`] therefore
//!   drops the SDK's `Authorization` header and leaves it to the [`AuthLayer`](crate::AuthLayer)
//!   inside our retry layers, which attaches the cache's current token to **every attempt** (and
//!   handles `invalid_token` / CAE challenges once). Key Vault clients, which send their first
//!   request without a token to discover the tenant, get a token from the layer at once and
//!   skip that round trip.
//! - **The SDK's own cache never blocks.** The SDK's bearer-token policy keeps a per-client
//!   token behind a lock and, within 5 minutes of expiry, makes every caller wait on the write
//!   lock while it asks its credential. Giving it an [`AzureCredential`] over the *same*
//!   [`TokenCache`] makes that ask return at once (the cache's token, refreshed in the
//!   background) and keeps it valid through an identity-provider outage; `azure_identity`'s
//!   own cache instead returns the error when a refresh fails, even while the old token is
//!   still valid. With [`AzureTransport::authorize_in_transport`] the SDK's header is then
//!   replaced anyway, so both paths hand out one token from one cache.
//!
//! The alternative — our retries as an SDK *per-call policy*, so that each of our retries
//! re-runs the SDK's per-try bearer-token policy — would also keep the token current, but it
//! means re-implementing the four layers over `azure_core`'s request and policy types. The
//! transport reuses the exact layers (and their stats, hold per origin, budget and timeout)
//! that every other client of this crate uses; it costs only dropping one header.
//!
//! Bodies: an SDK request with a byte body (all JSON APIs) is retried by our layers; a
//! streaming (`SeekableStream`) upload is sent once and never retried (rule R6).
//! Responses are streamed back to the SDK as they arrive.

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use azure_core::credentials as az;
use azure_core::http::{
    headers::{HeaderName, HeaderValue, Headers},
    AsyncRawResponse, Body, ClientOptions, RetryOptions, Transport,
};
use azure_core::time::OffsetDateTime;
use futures_util::future::BoxFuture;
use futures_util::TryStreamExt;
use reqwest_middleware::ClientWithMiddleware;

use crate::{CredentialIdentity, Error, TokenCache, TokenCredential, TokenRequest, TokenResponse};

/// How many scope sets an [`AzureCredential`] keeps a cache for by default.
pub const DEFAULT_MAX_SCOPE_SETS: usize = 16;

// ---------------------------------------------------------------------------------------------
// AzureCredential: our cache as the SDK's credential
// ---------------------------------------------------------------------------------------------

/// A resilient-auth credential as an `azure_core` `TokenCredential`.
///
/// Keeps one [`TokenCache`] per scope set the SDK asks for (at most
/// [`max_scope_sets`](Self::max_scope_sets), least recently used evicted), so an SDK client
/// gets every behaviour of the cache: the cached token without waiting, background refresh,
/// single-flight, the throttle gate, and a still-valid token through an identity-provider
/// outage. Locks are held only to look up the cache, never across a fetch.
///
/// The reported `expires_on` is the token's real expiry (converted from the monotonic clock to
/// UTC when the token is handed out).
///
/// Claims (CAE) cannot pass through `azure_core` 1.x `TokenRequestOptions`; use the
/// [`AuthLayer`](crate::AuthLayer) in the SDK's transport ([`AzureTransport`]) for challenges.
pub struct AzureCredential {
    credential: Option<Arc<dyn TokenCredential>>,
    caches: Mutex<Vec<Slot>>,
    max_scope_sets: usize,
    ticks: std::sync::atomic::AtomicU64,
}

struct Slot {
    scopes: Vec<String>,
    cache: TokenCache,
    last_used: u64,
}

impl fmt::Debug for AzureCredential {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let scope_sets = lock(&self.caches).len();
        f.debug_struct("AzureCredential")
            .field(
                "credential",
                &self.credential.as_ref().map(|c| c.identity()),
            )
            .field("scope_sets", &scope_sets)
            .field("max_scope_sets", &self.max_scope_sets)
            .finish()
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl AzureCredential {
    /// An SDK credential over `credential`: a [`TokenCache`] with default settings is built for
    /// each scope set on first use.
    pub fn new<C: TokenCredential>(credential: C) -> Self {
        AzureCredential {
            credential: Some(Arc::new(credential)),
            caches: Mutex::new(Vec::new()),
            max_scope_sets: DEFAULT_MAX_SCOPE_SETS,
            ticks: Default::default(),
        }
    }

    /// An SDK credential that serves `cache` for the cache's scopes — the same cache an
    /// [`AuthLayer`](crate::AuthLayer) uses, so both hand out one token. Other scope sets are
    /// an error ([`Error::Config`], as an `azure_core` credential error).
    pub fn from_cache(cache: TokenCache) -> Self {
        AzureCredential {
            credential: None,
            caches: Mutex::new(vec![Slot {
                scopes: cache.scopes().to_vec(),
                cache,
                last_used: 0,
            }]),
            max_scope_sets: DEFAULT_MAX_SCOPE_SETS,
            ticks: Default::default(),
        }
    }

    /// Serves `cache` for its scopes (instead of building one), e.g. to share it with an
    /// [`AuthLayer`](crate::AuthLayer) or to give it other settings.
    #[must_use]
    pub fn with_cache(self, cache: TokenCache) -> Self {
        {
            let mut caches = lock(&self.caches);
            caches.retain(|s| s.scopes != cache.scopes());
            caches.push(Slot {
                scopes: cache.scopes().to_vec(),
                cache,
                last_used: 0,
            });
        }
        self
    }

    /// How many scope sets to keep a cache for (default [`DEFAULT_MAX_SCOPE_SETS`], at least
    /// 1). Past it, the least recently used cache is dropped (and its token with it).
    #[must_use]
    pub fn max_scope_sets(mut self, max: usize) -> Self {
        self.max_scope_sets = max.max(1);
        self
    }

    /// The cache serving `scopes`, if one exists yet.
    pub fn cache_for(&self, scopes: &[&str]) -> Option<TokenCache> {
        lock(&self.caches)
            .iter()
            .find(|s| {
                s.scopes
                    .iter()
                    .map(String::as_str)
                    .eq(scopes.iter().copied())
            })
            .map(|s| s.cache.clone())
    }

    fn cache(&self, scopes: &[&str]) -> Result<TokenCache, Error> {
        let tick = self
            .ticks
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed)
            + 1;
        let mut caches = lock(&self.caches);
        if let Some(slot) = caches.iter_mut().find(|s| {
            s.scopes
                .iter()
                .map(String::as_str)
                .eq(scopes.iter().copied())
        }) {
            slot.last_used = tick;
            return Ok(slot.cache.clone());
        }
        let Some(credential) = &self.credential else {
            return Err(Error::Config(format!(
                "this AzureCredential serves only its cache's scopes, not {scopes:?}"
            )));
        };
        if scopes.is_empty() {
            return Err(Error::Config("no scopes requested".into()));
        }
        while caches.len() >= self.max_scope_sets {
            let Some(oldest) = caches
                .iter()
                .enumerate()
                .min_by_key(|(_, s)| s.last_used)
                .map(|(i, _)| i)
            else {
                break;
            };
            caches.swap_remove(oldest);
        }
        let cache = TokenCache::new(credential.clone(), scopes.iter().copied());
        caches.push(Slot {
            scopes: scopes.iter().map(|s| (*s).to_owned()).collect(),
            cache: cache.clone(),
            last_used: tick,
        });
        Ok(cache)
    }
}

#[async_trait]
impl az::TokenCredential for AzureCredential {
    async fn get_token(
        &self,
        scopes: &[&str],
        _options: Option<az::TokenRequestOptions<'_>>,
    ) -> azure_core::Result<az::AccessToken> {
        let token = match self.cache(scopes) {
            Ok(cache) => cache.token().await,
            Err(e) => Err(e),
        }
        .map_err(|e| {
            azure_core::Error::with_error(
                azure_core::error::ErrorKind::Credential,
                e,
                "resilient-auth token cache has no usable token",
            )
        })?;
        let left = token
            .expires_at()
            .saturating_duration_since(tokio::time::Instant::now());
        let expires_on = OffsetDateTime::now_utc()
            .checked_add(left.try_into().unwrap_or(azure_core::time::Duration::ZERO))
            .unwrap_or_else(OffsetDateTime::now_utc);
        Ok(az::AccessToken::new(
            az::Secret::new(token.secret().to_owned()),
            expires_on,
        ))
    }
}

// ---------------------------------------------------------------------------------------------
// AzureTokenSource: an SDK credential as our source
// ---------------------------------------------------------------------------------------------

/// Any `azure_core` `TokenCredential` as a resilient-auth [`TokenCredential`], to put behind a
/// [`TokenCache`]: keep `azure_identity`'s developer-tool credentials (Azure CLI, azd) and get
/// the cache's refresh-ahead, outage tolerance, throttle gate and stores in front of them.
///
/// ```no_run
/// # fn demo(cli: std::sync::Arc<dyn azure_core::credentials::TokenCredential>) {
/// use resilient_auth::{azure::AzureTokenSource, TokenCache};
/// // let cli = azure_identity::AzureCliCredential::new(None)?;
/// let tokens = TokenCache::new(AzureTokenSource::new(cli), ["https://vault.azure.net/.default"]);
/// # let _ = tokens; }
/// ```
///
/// Each cache fetch makes one `get_token` call. An `azure_core` error with an HTTP status is
/// reported as [`Error::IdentityProvider`] with the response's `Retry-After` (so the cache's
/// throttle gate and back-off apply); any other error as [`Error::Unavailable`]. A token
/// request with claims (a CAE challenge) is [`Error::Config`]: `azure_core` 1.x credentials
/// take no claims.
#[derive(Clone)]
pub struct AzureTokenSource {
    inner: Arc<dyn az::TokenCredential>,
    identity: CredentialIdentity,
}

impl fmt::Debug for AzureTokenSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AzureTokenSource")
            .field("identity", &self.identity)
            .finish_non_exhaustive()
    }
}

impl AzureTokenSource {
    /// A source over `credential`, identified as kind `"azure_core"` with the credential's
    /// type name (the start of its `Debug` output) as its authority. Set a real identity with
    /// [`with_identity`](Self::with_identity) when the cache has a shared store: the store key
    /// is built from the identity, so two different credentials must not share one.
    pub fn new(credential: Arc<dyn az::TokenCredential>) -> Self {
        // the type name a derived `Debug` starts with (never a field value)
        let debug = format!("{credential:?}");
        let name: String = debug
            .chars()
            .take_while(|c| c.is_alphanumeric() || *c == '_' || *c == ':')
            .take(64)
            .collect();
        let name = if name.is_empty() {
            "azure_core credential".to_owned()
        } else {
            name
        };
        AzureTokenSource {
            inner: credential,
            identity: CredentialIdentity::new("azure_core", name),
        }
    }

    /// Sets the identity the cache keys on (no secrets in it).
    #[must_use]
    pub fn with_identity(mut self, identity: CredentialIdentity) -> Self {
        self.identity = identity;
        self
    }
}

impl TokenCredential for AzureTokenSource {
    fn get_token<'a>(
        &'a self,
        request: &'a TokenRequest,
    ) -> BoxFuture<'a, Result<TokenResponse, Error>> {
        Box::pin(async move {
            if request.claims.is_some() {
                return Err(Error::Config(
                    "an azure_core credential cannot request claims (CAE)".into(),
                ));
            }
            let scopes: Vec<&str> = request.scopes.iter().map(String::as_str).collect();
            let token = self
                .inner
                .get_token(&scopes, None)
                .await
                .map_err(from_azure_error)?;
            let left = token.expires_on - OffsetDateTime::now_utc();
            let expires_in = Duration::try_from(left).unwrap_or(Duration::ZERO);
            if expires_in.is_zero() {
                return Err(Error::InvalidResponse(
                    "azure_core credential returned an expired token".into(),
                ));
            }
            Ok(TokenResponse::new(token.token.secret(), expires_in))
        })
    }

    fn identity(&self) -> CredentialIdentity {
        self.identity.clone()
    }
}

fn from_azure_error(e: azure_core::Error) -> Error {
    if let azure_core::error::ErrorKind::HttpResponse {
        status,
        error_code,
        raw_response,
    } = e.kind()
    {
        if let Ok(status) = http::StatusCode::from_u16(u16::from(*status)) {
            let retry_after = raw_response.as_ref().and_then(|r| {
                let mut map = http::HeaderMap::new();
                for (name, value) in r.headers().iter() {
                    if let (Ok(n), Ok(v)) = (
                        http::HeaderName::from_bytes(name.as_str().as_bytes()),
                        http::HeaderValue::from_str(value.as_str()),
                    ) {
                        map.append(n, v);
                    }
                }
                crate::retry::retry_after::retry_after(&map, std::time::SystemTime::now())
            });
            let details = crate::IdentityProviderError {
                error: error_code.clone().unwrap_or_else(|| status.to_string()),
                retry_after,
                ..Default::default()
            };
            return Error::IdentityProvider {
                status,
                details: Box::new(details),
            };
        }
    }
    Error::Unavailable {
        what: "azure_core credential",
        source: Some(Arc::new(e)),
    }
}

// ---------------------------------------------------------------------------------------------
// AzureTransport: the four layers as the SDK's HttpClient
// ---------------------------------------------------------------------------------------------

/// An `azure_core` `HttpClient` that sends the SDK's requests through a reqwest-middleware
/// client — the four layers, in the order the crate docs give.
///
/// Use [`client_options`](Self::client_options) to install it with the SDK's retry policy
/// switched off; see the [module docs](self) for why.
#[derive(Clone)]
pub struct AzureTransport {
    client: ClientWithMiddleware,
    authorize_in_transport: bool,
}

impl fmt::Debug for AzureTransport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AzureTransport")
            .field("authorize_in_transport", &self.authorize_in_transport)
            .finish_non_exhaustive()
    }
}

impl AzureTransport {
    /// A transport over `client`, sending each SDK request as the SDK built it.
    pub fn new(client: ClientWithMiddleware) -> Self {
        AzureTransport {
            client,
            authorize_in_transport: false,
        }
    }

    /// Drops the `Authorization` header the SDK's bearer-token policy attached, so that the
    /// [`AuthLayer`](crate::AuthLayer) in `client` attaches the current token to every attempt,
    /// retries included (default off: only turn it on when `client` has an `AuthLayer`).
    #[must_use]
    pub fn authorize_in_transport(mut self, yes: bool) -> Self {
        self.authorize_in_transport = yes;
        self
    }

    /// SDK client options with this transport and the SDK's own retry policy switched off
    /// (`RetryOptions::none()`): our layers retry, once.
    pub fn client_options(self) -> ClientOptions {
        let mut options = ClientOptions::default();
        self.apply(&mut options);
        options
    }

    /// Installs this transport into existing SDK client options and switches their retry off.
    pub fn apply(self, options: &mut ClientOptions) {
        options.retry = RetryOptions::none();
        options.transport = Some(Transport::new(Arc::new(self)));
    }
}

#[async_trait]
impl azure_core::http::HttpClient for AzureTransport {
    async fn execute_request(
        &self,
        request: &azure_core::http::Request,
    ) -> azure_core::Result<AsyncRawResponse> {
        use azure_core::error::{Error as AzError, ErrorKind};
        let method = reqwest::Method::from_bytes(request.method().as_str().as_bytes())
            .map_err(|e| AzError::with_error(ErrorKind::Other, e, "unsupported method"))?;
        let mut req = self.client.request(method, request.url().as_str());
        for (name, value) in request.headers().iter() {
            if self.authorize_in_transport
                && name
                    .as_str()
                    .eq_ignore_ascii_case(http::header::AUTHORIZATION.as_str())
            {
                continue;
            }
            req = req.header(name.as_str(), value.as_str());
        }
        req = match request.body() {
            Body::Bytes(bytes) => req.body(bytes.clone()),
            Body::SeekableStream(stream) => req.body(reqwest::Body::wrap_stream(stream.clone())),
        };
        let rsp = req.send().await.map_err(|e| {
            let kind = match &e {
                reqwest_middleware::Error::Reqwest(r) if r.is_connect() => ErrorKind::Connection,
                reqwest_middleware::Error::Reqwest(_) => ErrorKind::Io,
                reqwest_middleware::Error::Middleware(_) => ErrorKind::Other,
            };
            AzError::with_error(kind, e, "request through the resilient-auth stack failed")
        })?;
        let status = rsp.status().as_u16().into();
        let mut headers = HashMap::new();
        for (name, value) in rsp.headers() {
            if let Ok(value) = value.to_str() {
                headers.insert(
                    HeaderName::from(name.as_str().to_owned()),
                    HeaderValue::from(value.to_owned()),
                );
            }
        }
        let body = rsp
            .bytes_stream()
            .map_err(|e| AzError::with_error(ErrorKind::Io, e, "reading the response body"));
        Ok(AsyncRawResponse::new(
            status,
            Headers::from(headers),
            Box::pin(body),
        ))
    }
}
