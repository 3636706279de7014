//! Token sources. Each implements [`TokenCredential`]; a user's own source works the same way.
//!
//! # What is not here, by design (rule T8)
//!
//! - **Fixed scopes only.** A [`TokenCache`](crate::TokenCache) is built for one set of scopes;
//!   there is no per-request ("dynamic") consent. The backup authentication system serves
//!   applications that use a fixed set of scopes.
//! - **No resource-owner password grant.** The backup authentication system will not support it
//!   for any client type, and it puts a user's password in the application; use managed
//!   identity, client credentials, workload identity, or a refresh token acquired interactively.
//! - **No UserInfo call.** It costs up to two more network requests per sign-in and is not
//!   covered by the backup authentication system; the claims a daemon needs are in the tokens
//!   it already has (which this crate never decodes: the token's lifetime comes from
//!   `expires_in`).

use std::fmt;
use std::sync::Arc;

use futures_util::future::BoxFuture;

use crate::{Error, TokenResponse};

pub mod authority;
pub(crate) mod certificate;
pub mod chain;
pub mod client_certificate;
pub mod client_secret;
pub(crate) mod confidential;
pub(crate) mod http;
pub mod managed_identity;
pub mod refresh_token;
pub mod workload_identity;

#[cfg(feature = "reqwest")]
#[cfg_attr(docsrs, doc(cfg(feature = "reqwest")))]
pub use confidential::{ConfidentialCredential, CredentialBuilder, RegionalGrant};

/// What the cache asks a credential for: fixed scopes (rule T8) and, after a CAE challenge,
/// the claims the resource demanded.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub struct TokenRequest {
    /// The scopes, e.g. `https://vault.azure.net/.default`.
    pub scopes: Arc<[String]>,
    /// Claims (a JSON string) from an `insufficient_claims` challenge (rule A2).
    pub claims: Option<Arc<str>>,
}

impl TokenRequest {
    /// A request for `scopes` with no claims.
    pub fn new<I, S>(scopes: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        TokenRequest {
            scopes: scopes.into_iter().map(Into::into).collect(),
            claims: None,
        }
    }

    /// The same request with claims.
    #[must_use]
    pub fn with_claims(mut self, claims: impl Into<Arc<str>>) -> Self {
        self.claims = Some(claims.into());
        self
    }
}

/// What kind of source a credential is, for checks that depend on it (the resilience report)
/// without reading [`CredentialIdentity::kind`]'s text.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
#[non_exhaustive]
pub enum CredentialKind {
    /// A confidential client with a client secret (rule C1).
    ClientSecret,
    /// A confidential client with a certificate (rule C2).
    ClientCertificate,
    /// Workload identity federation (rule C4).
    WorkloadIdentity,
    /// A public client acquiring silently with a refresh token (rule C5).
    RefreshToken,
    /// The managed identity of the Azure host (rule C3), any of its sources.
    ManagedIdentity,
    /// Any other source: a user's own [`TokenCredential`].
    #[default]
    Custom,
}

impl CredentialKind {
    /// `true` for [`ManagedIdentity`](Self::ManagedIdentity).
    pub fn is_managed_identity(self) -> bool {
        self == CredentialKind::ManagedIdentity
    }

    /// `true` for the confidential clients of the client credentials grant: client secret,
    /// client certificate and workload identity.
    pub fn is_confidential_client(self) -> bool {
        matches!(
            self,
            CredentialKind::ClientSecret
                | CredentialKind::ClientCertificate
                | CredentialKind::WorkloadIdentity
        )
    }

    /// `true` for public clients (a refresh token credential), which need a persistent token
    /// cache.
    pub fn is_public_client(self) -> bool {
        self == CredentialKind::RefreshToken
    }
}

/// Who a credential is, without any secret: what the cache keys on, what the throttle gate
/// (rule T6) is per, and what tracing and the resilience report show.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default)]
#[non_exhaustive]
pub struct CredentialIdentity {
    /// The kind of source as text for logs and cache keys, e.g. `"client_secret"`,
    /// `"managed_identity/imds"`.
    pub kind: &'static str,
    /// The kind of source as a type, for checks (the resilience report reads this, not
    /// [`kind`](Self::kind)). [`CredentialKind::Custom`] unless set with
    /// [`with_source`](Self::with_source).
    pub source: CredentialKind,
    /// The authority host or endpoint the tokens come from, e.g.
    /// `https://login.microsoftonline.com`.
    pub authority: String,
    /// The tenant, if the source has one.
    pub tenant: Option<String>,
    /// The client (application) id, if the source has one.
    pub client_id: Option<String>,
    /// Why this source was chosen, when a chain such as
    /// [`DefaultCredential`](chain::DefaultCredential) picked it from the environment (the
    /// resilience report shows it).
    pub chosen_because: Option<String>,
}

impl CredentialIdentity {
    /// An identity of `kind` served by `authority`, of source [`CredentialKind::Custom`].
    pub fn new(kind: &'static str, authority: impl Into<String>) -> Self {
        CredentialIdentity {
            kind,
            source: CredentialKind::Custom,
            authority: authority.into(),
            tenant: None,
            client_id: None,
            chosen_because: None,
        }
    }

    /// With the typed kind of source.
    #[must_use]
    pub fn with_source(mut self, source: CredentialKind) -> Self {
        self.source = source;
        self
    }

    /// With a tenant.
    #[must_use]
    pub fn with_tenant(mut self, tenant: impl Into<String>) -> Self {
        self.tenant = Some(tenant.into());
        self
    }

    /// With a client id.
    #[must_use]
    pub fn with_client_id(mut self, client_id: impl Into<String>) -> Self {
        self.client_id = Some(client_id.into());
        self
    }

    /// With the reason a chain chose this source.
    #[must_use]
    pub fn with_chosen_because(mut self, reason: impl Into<String>) -> Self {
        self.chosen_because = Some(reason.into());
        self
    }
}

/// A source of access tokens: the one async trait every credential implements.
///
/// A credential makes **one** attempt per call: the [`TokenCache`](crate::TokenCache) owns
/// retries, back-off, the throttle gate and single-flight, so that every source gets the same
/// resilience. A credential reports a throttling or failing identity provider as an error that
/// carries the server's wait ([`Error::retry_after`]).
pub trait TokenCredential: Send + Sync + fmt::Debug + 'static {
    /// Fetches a token for `request` with one request to the identity provider.
    fn get_token<'a>(
        &'a self,
        request: &'a TokenRequest,
    ) -> BoxFuture<'a, Result<TokenResponse, Error>>;

    /// Who this credential is (no secrets).
    fn identity(&self) -> CredentialIdentity;
}

impl<T: TokenCredential + ?Sized> TokenCredential for Arc<T> {
    fn get_token<'a>(
        &'a self,
        request: &'a TokenRequest,
    ) -> BoxFuture<'a, Result<TokenResponse, Error>> {
        (**self).get_token(request)
    }

    fn identity(&self) -> CredentialIdentity {
        (**self).identity()
    }
}
