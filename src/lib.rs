//! Composable HTTP client layers that keep a daemon's calls to protected APIs alive through
//! identity-provider trouble.
//!
//! Four layers, each a [`tower::Layer`] and (feature `reqwest`) a
//! `reqwest_middleware::Middleware`:
//!
//! | layer | does |
//! | --- | --- |
//! | [`RetryAfterLayer`] | 429 / 5xx with `Retry-After` (or `retry-after-ms`, `x-ms-retry-after-ms`): waits exactly that long, holding the whole origin; fails fast past a cap |
//! | [`ExpBackoffLayer`] | 5xx / 408 / timeouts / connection errors without a retry header: first retry ≥ 5 s, ×2, cap 60 s, additive jitter, retry budget |
//! | [`AuthLayer`] | attaches a cached bearer token, refreshed before it expires, to the origins it is for (its scope's hosts, or the ones you name) |
//! | [`TimeoutLayer`] | per-attempt timeout, as a typed error the back-off layer retries (never at once) |
//!
//! # Feature flags
//!
//! | feature | default | enables |
//! | --- | --- | --- |
//! | `reqwest` | yes | `reqwest_middleware::Middleware` impls; reqwest as the credentials' HTTP client |
//! | `testkit` | no | `testkit::FakeIdentityProvider`: a fake Entra token endpoint, IMDS and protected API on loopback with scripted faults, for tests (an HTTP server; this crate's examples and tests turn it on themselves) |
//! | `file-store` | no | `FileStore`: tokens in `0600` files, kept across restarts (native apps) |
//! | `redis` | no | `RedisStore`: tokens shared by replicas through Redis, optionally encrypted |
//! | `pkcs12` | no | password-protected client certificates: PKCS#12 (`.pfx`/`.p12`) files and encrypted PKCS#8 PEM keys |
//! | `azure` | no | [`azure`]: Azure SDK for Rust adapters (a `TokenCache` as an SDK credential, SDK credentials as sources, the layers as an SDK transport) |
//! | `testkit-tls` | no | the testkit over HTTPS on loopback with a generated CA (`FakeIdentityProvider::start_https`) |
//! | `full` | no | everything |
//!
//! # Token sources
//!
//! The [`credential`] module: `DefaultCredential` picks one source from the environment (workload
//! identity, client secret, client certificate, managed identity — in the Azure SDKs' order),
//! or build one directly. The confidential clients share one core (`credential/confidential.rs`:
//! authority, region, token URL, timeout, form POST, errors); each managed identity source is one
//! file under `credential/managed_identity/`.
//!
//! # Example
//!
//! ```no_run
//! # #[cfg(feature = "reqwest")]
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! use std::time::Duration;
//! use resilient_auth::{ExpBackoffLayer, RetryAfterLayer, TimeoutLayer, Attempts};
//!
//! let client = reqwest_middleware::ClientBuilder::new(reqwest::Client::new())
//!     .with(RetryAfterLayer::default()) // 429/503 + Retry-After: wait exactly that long
//!     .with(ExpBackoffLayer::default()) // 5xx / timeout: first retry >= 5 s, x2, jitter
//!     .with(TimeoutLayer::new(Duration::from_secs(10)))
//!     .build();
//! let resp = client.get("https://example.com/api").send().await?;
//! println!("{} after {} attempts", resp.status(), Attempts::of(resp.extensions()));
//! # Ok(())
//! # }
//! ```
//!
//! The same types go into `tower::ServiceBuilder::layer(..)` around any
//! `Service<http::Request<B>>` (a hyper-util client, say); see [`layer`] for the stacking order
//! and why.
#![cfg_attr(docsrs, feature(doc_cfg))]

/// Entry points for the fuzz targets under `fuzz/` (rule X4). Not a public API: hidden, behind
/// the non-default feature `fuzzing`, and free to change in any release.
#[cfg(feature = "fuzzing")]
#[doc(hidden)]
#[path = "fuzz.rs"]
pub mod __fuzz;
#[cfg(feature = "azure")]
#[cfg_attr(docsrs, doc(cfg(feature = "azure")))]
pub mod azure;
mod cache;
pub mod credential;
#[cfg(all(feature = "fuzzing", feature = "reqwest"))]
pub(crate) use __fuzz as fuzz;
mod error;
pub mod layer;
pub mod origin;
pub mod report;
#[cfg(feature = "reqwest")]
mod reqwest;
pub mod retry;
#[cfg(feature = "testkit")]
#[cfg_attr(docsrs, doc(cfg(feature = "testkit")))]
pub mod testkit;
mod token;

#[cfg(feature = "file-store")]
#[cfg_attr(docsrs, doc(cfg(feature = "file-store")))]
pub use cache::file::FileStore;
#[cfg(feature = "redis")]
#[cfg_attr(docsrs, doc(cfg(feature = "redis")))]
pub use cache::redis::{RedisStore, RedisStoreBuilder};
pub use cache::store::{MemoryStore, StoreHold, StoreLock, StoredToken, TokenStore};
pub use cache::{CacheStats, TokenCache, TokenCacheBuilder};
#[cfg(feature = "reqwest")]
#[cfg_attr(docsrs, doc(cfg(feature = "reqwest")))]
pub use credential::refresh_token::{RefreshTokenCredential, RefreshTokenCredentialBuilder};
#[cfg(feature = "reqwest")]
#[cfg_attr(docsrs, doc(cfg(feature = "reqwest")))]
pub use credential::{
    authority::AuthorityHost, chain::DefaultCredential,
    client_certificate::ClientCertificateCredential, client_secret::ClientSecretCredential,
};
#[cfg(feature = "reqwest")]
#[cfg_attr(docsrs, doc(cfg(feature = "reqwest")))]
pub use credential::{
    managed_identity::{ManagedIdentityCredential, ManagedIdentitySource, UserAssignedId},
    workload_identity::WorkloadIdentityCredential,
};
pub use credential::{CredentialIdentity, CredentialKind, TokenCredential, TokenRequest};
pub use error::{BoxError, Error, IdentityProviderError};
pub use layer::{AuthLayer, ExpBackoffLayer, RetryAfterLayer, TimeoutLayer};
pub use report::{resilience_report, ResilienceReport};
pub use retry::{Attempts, Deadline};
pub use token::{AccessToken, TokenResponse};

#[doc = include_str!("../README.md")]
#[cfg(doctest)]
struct ReadmeDoctests;
