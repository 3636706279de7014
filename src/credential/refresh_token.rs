//! [`RefreshTokenCredential`]: silent token acquisition for public clients (native apps) from a
//! persisted refresh token, with rotated refresh tokens persisted (rule C5).
//!
//! ```no_run
//! # #[cfg(feature = "file-store")]
//! # async fn demo() -> Result<(), resilient_auth::Error> {
//! use resilient_auth::{FileStore, RefreshTokenCredential, TokenCache};
//!
//! let store = FileStore::new("/home/me/.cache/my-app/tokens");
//! let credential = RefreshTokenCredential::builder("contoso.onmicrosoft.com", "client-id")
//!     .store(store.clone()) // reads the refresh token from here, persists rotated ones
//!     .build()?;
//! let tokens = TokenCache::builder(credential, ["https://graph.microsoft.com/.default"])
//!     .store(store)
//!     .build()?;
//! match tokens.token().await {
//!     Ok(token) => { let _ = token; }
//!     Err(e) if e.needs_interaction() => { /* run the interactive sign-in, then
//!         credential.save_refresh_token(..) */ }
//!     Err(e) => return Err(e),
//! }
//! # Ok(()) }
//! ```
#![cfg(feature = "reqwest")]
#![cfg_attr(docsrs, doc(cfg(feature = "reqwest")))]

use std::borrow::Cow;
use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use reqwest::Url;
use secrecy::{ExposeSecret, SecretString};

use futures_util::future::BoxFuture;

use super::confidential::{
    process_env, sealed, ClientAuth, ClientOptions, ConfidentialCredential, CredentialBuilder, Env,
    Grant,
};
use super::{CredentialKind, TokenRequest};
use crate::cache::store::{unix_ms, StoredToken, TokenStore};
use crate::error::IdentityProviderError;
use crate::{Error, TokenResponse};

const KIND: &str = "refresh_token";
const HINT: &str = "interactive sign-in is needed";

/// A public client (a native app) that gets access tokens silently with a refresh token
/// (`grant_type=refresh_token`, rule C5).
///
/// The refresh token comes from a [`TokenStore`] (under its own key,
/// `resilient-auth:v1:refresh_token:{authority}:{tenant}:{client}`, see
/// [`store_key`](Self::store_key)) and, if the store has none, from the one given to the builder.
/// Each [`get_token`](crate::TokenCredential::get_token) posts `grant_type=refresh_token`, `client_id`,
/// `refresh_token`, `scope` (the request's scopes plus `offline_access`, so that Entra ID returns
/// a new refresh token) and `claims` to the v2.0 token endpoint. A rotated refresh token is
/// saved to the store — awaited — before the access token is returned; with a store, the
/// returned [`TokenResponse`] carries no refresh token, so the store holds one copy.
///
/// When only the user can help — the identity provider answers `invalid_grant`,
/// `interaction_required`, `login_required` or `consent_required`, or there is no refresh token
/// at all (an `interaction_required` error made locally, without a request) — the error's
/// description says that interactive sign-in is needed and [`Error::needs_interaction`] is
/// `true`. This crate has no interactive flow: run one (MSAL, a browser, the device-code flow),
/// then hand the refresh token to [`save_refresh_token`](Self::save_refresh_token).
///
/// `Debug` and `Display` never show a refresh token.
pub type RefreshTokenCredential = ConfidentialCredential<RefreshTokenGrant>;

/// A built refresh token credential's own part: the refresh token in memory and its store.
pub(crate) struct RefreshTokens {
    current: Mutex<Option<SecretString>>,
    store: Option<Arc<dyn TokenStore>>,
    store_key: String,
    store_timeout: Duration,
}

impl RefreshTokens {
    fn remember(&self, refresh_token: &str) {
        *self
            .current
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) =
            Some(SecretString::from(refresh_token.to_owned()));
    }

    fn remembered(&self) -> Option<SecretString> {
        self.current
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }
}

impl RefreshTokenCredential {
    /// A builder for the public client `client_id` of `tenant_id`. Give it a refresh token, a
    /// store, or both.
    pub fn builder(
        tenant_id: impl Into<String>,
        client_id: impl Into<String>,
    ) -> RefreshTokenCredentialBuilder {
        CredentialBuilder::new(
            ClientOptions::new(tenant_id, client_id),
            RefreshTokenGrant {
                refresh_token: None,
                store: None,
                store_timeout: Duration::from_secs(1),
            },
        )
    }

    /// A builder from `AZURE_TENANT_ID`, `AZURE_CLIENT_ID` and (optional)
    /// `AZURE_AUTHORITY_HOST`; add a refresh token or a store, then build.
    ///
    /// # Errors
    /// [`Error::Config`] if a required variable is missing or empty, or a value is invalid.
    pub fn from_env() -> Result<RefreshTokenCredentialBuilder, Error> {
        Self::from_env_with(&process_env)
    }

    fn from_env_with(env: Env<'_>) -> Result<RefreshTokenCredentialBuilder, Error> {
        // a public client: regional endpoints are for confidential clients only
        let mut builder = Self::builder("", "");
        builder.options = ClientOptions::from_env(env, false)?;
        Ok(builder)
    }

    /// The store key of the refresh token:
    /// `resilient-auth:v1:refresh_token:{authority}:{tenant}:{client}` (no secret in it).
    pub fn store_key(&self) -> &str {
        &self.grant.store_key
    }

    /// Keeps `refresh_token` (from an interactive sign-in) for the next calls and, if there is
    /// a store, saves it there for other processes and restarts.
    ///
    /// # Errors
    /// The store's error, if saving failed (the token is still kept in memory).
    pub async fn save_refresh_token(&self, refresh_token: impl Into<String>) -> Result<(), Error> {
        let refresh_token = refresh_token.into();
        self.grant.remember(&refresh_token);
        match &self.grant.store {
            Some(store) => {
                let record = record(refresh_token);
                match tokio::time::timeout(
                    self.grant.store_timeout,
                    store.save(&self.grant.store_key, &record),
                )
                .await
                {
                    Ok(r) => r,
                    Err(_) => Err(Error::Timeout {
                        after: self.grant.store_timeout,
                    }),
                }
            }
            None => Ok(()),
        }
    }

    /// The refresh token to use: the store's, else the one in memory.
    async fn refresh_token(&self) -> Result<SecretString, Error> {
        if let Some(store) = &self.grant.store {
            match tokio::time::timeout(self.grant.store_timeout, store.load(&self.grant.store_key))
                .await
            {
                Ok(Ok(Some(StoredToken {
                    refresh_token: Some(rt),
                    ..
                }))) if !rt.is_empty() => {
                    self.grant.remember(&rt);
                    return Ok(SecretString::from(rt));
                }
                Ok(Ok(_)) => {}
                Ok(Err(e)) => {
                    tracing::warn!(error = %e, "refresh token store failed; using the refresh token in memory");
                }
                Err(_) => {
                    tracing::warn!(
                        "refresh token store timed out; using the refresh token in memory"
                    );
                }
            }
        }
        self.grant
            .remembered()
            .ok_or_else(|| Error::IdentityProvider {
                status: http::StatusCode::BAD_REQUEST,
                details: Box::new(IdentityProviderError {
                    error: "interaction_required".to_owned(),
                    error_description: Some(format!(
                        "no refresh token was given or stored; {HINT}"
                    )),
                    ..IdentityProviderError::default()
                }),
            })
    }

    fn request(
        &self,
        url: &Url,
        request: &TokenRequest,
        refresh_token: &SecretString,
    ) -> Result<reqwest::Request, Error> {
        let mut scopes: Vec<&str> = request.scopes.iter().map(String::as_str).collect();
        if !scopes.contains(&"offline_access") {
            scopes.push("offline_access");
        }
        let scope = scopes.join(" ");
        self.core.form_post(
            url,
            "refresh_token",
            ClientAuth::Form,
            &[("refresh_token", refresh_token.expose_secret())],
            &scope,
            request,
        )
    }

    /// Keeps a rotated refresh token: in memory and (awaited) in the store.
    async fn persist_rotation(&self, response: &mut TokenResponse) {
        let Some(new) = response.refresh_token.take() else {
            return;
        };
        self.grant.remember(&new);
        let Some(store) = &self.grant.store else {
            response.refresh_token = Some(new);
            return;
        };
        let record = record(new);
        match tokio::time::timeout(
            self.grant.store_timeout,
            store.save(&self.grant.store_key, &record),
        )
        .await
        {
            Ok(Ok(())) => tracing::debug!(source = KIND, "rotated refresh token persisted"),
            Ok(Err(e)) => tracing::warn!(
                source = KIND,
                error = %e,
                "rotated refresh token could not be persisted; kept in memory"
            ),
            Err(_) => tracing::warn!(
                source = KIND,
                "persisting the rotated refresh token timed out; kept in memory"
            ),
        }
    }
}

/// A store entry that is only a refresh token: no access token, expired at once, kept for the
/// store's retention from now.
fn record(refresh_token: String) -> StoredToken {
    let now = unix_ms(SystemTime::now());
    let mut t = StoredToken::new(String::new(), now, now, now);
    t.refresh_token = Some(refresh_token);
    t
}

/// `true` for the OAuth 2.0 / Entra errors only a user can resolve.
fn is_interaction_error(error: &str) -> bool {
    matches!(
        error,
        "invalid_grant" | "interaction_required" | "login_required" | "consent_required"
    )
}

fn with_hint(e: Error) -> Error {
    match e {
        Error::IdentityProvider {
            status,
            mut details,
        } if is_interaction_error(&details.error) => {
            details.error_description = Some(match details.error_description.take() {
                Some(d) => format!("{d}; {HINT}"),
                None => HINT.to_owned(),
            });
            Error::IdentityProvider { status, details }
        }
        other => other,
    }
}

impl RefreshTokenCredential {
    /// One `get_token`: the refresh token (store first), one request, the rotation persisted.
    async fn fetch(&self, request: &TokenRequest) -> Result<TokenResponse, Error> {
        let refresh_token = self.refresh_token().await?;
        let rt = &refresh_token;
        let mut response = self
            .core
            .call(move |url| self.request(url, request, rt))
            .await
            .map_err(with_hint)?;
        self.persist_rotation(&mut response).await;
        Ok(response)
    }
}

/// Builds a [`RefreshTokenCredential`]; see [`RefreshTokenCredential::builder`].
/// The shared setters (authority, token URL, timeout, HTTP client) are
/// [`CredentialBuilder`]'s; a public client has no regional endpoint.
pub type RefreshTokenCredentialBuilder = CredentialBuilder<RefreshTokenGrant>;

/// The refresh token grant's own settings (see [`RefreshTokenCredentialBuilder`]).
#[derive(Debug)]
pub struct RefreshTokenGrant {
    refresh_token: Option<SecretString>,
    store: Option<Arc<dyn TokenStore>>,
    store_timeout: Duration,
}

impl sealed::Sealed for RefreshTokenGrant {}

impl Grant for RefreshTokenGrant {
    type Built = RefreshTokens;

    const NAME: &'static str = "RefreshTokenCredential";

    fn fetch<'a>(
        credential: &'a RefreshTokenCredential,
        request: &'a TokenRequest,
    ) -> BoxFuture<'a, Result<TokenResponse, Error>> {
        Box::pin(credential.fetch(request))
    }

    fn debug_fields(tokens: &RefreshTokens, d: &mut fmt::DebugStruct<'_, '_>) {
        d.field("refresh_token", &tokens.remembered().map(|_| "<redacted>"))
            .field("store", &tokens.store);
    }

    fn what(_: &RefreshTokens) -> Cow<'static, str> {
        Cow::Borrowed("refresh token credential")
    }
}

impl CredentialBuilder<RefreshTokenGrant> {
    /// The refresh token to start with (used while the store holds none).
    pub fn refresh_token(mut self, refresh_token: impl Into<String>) -> Self {
        self.grant.refresh_token = Some(SecretString::from(refresh_token.into()));
        self
    }

    /// The store the refresh token is read from and rotated ones are saved to (typically the
    /// same [`FileStore`](crate::TokenStore) the cache uses).
    pub fn store(mut self, store: impl TokenStore) -> Self {
        self.grant.store = Some(Arc::new(store));
        self
    }

    /// The longest a store load or save may take (default 1 s); past it the credential carries
    /// on with the refresh token in memory.
    pub fn store_timeout(mut self, timeout: Duration) -> Self {
        self.grant.store_timeout = timeout;
        self
    }

    /// Validates the configuration and builds the credential.
    ///
    /// # Errors
    /// [`Error::Config`] for an empty client id, an invalid tenant or token URL, plain http to a
    /// non-loopback host, a zero timeout, or neither a refresh token nor a store.
    pub fn build(self) -> Result<RefreshTokenCredential, Error> {
        let grant = self.grant;
        let refresh_token = grant
            .refresh_token
            .filter(|rt| !rt.expose_secret().is_empty());
        if refresh_token.is_none() && grant.store.is_none() {
            return Err(Error::config(
                "a refresh token credential needs a refresh token or a store to read one from",
            ));
        }
        if grant.store_timeout.is_zero() {
            return Err(Error::config("store timeout must not be zero"));
        }
        let core = self.options.resolve(KIND, CredentialKind::RefreshToken)?;
        let store_key = format!(
            "resilient-auth:v1:{KIND}:{}:{}:{}",
            core.endpoint.origin(),
            core.tenant_id,
            core.client_id
        );
        let tokens = RefreshTokens {
            current: Mutex::new(refresh_token),
            store: grant.store,
            store_key,
            store_timeout: grant.store_timeout,
        };
        Ok(ConfidentialCredential {
            core,
            grant: tokens,
        })
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use crate::MemoryStore;
    use crate::TokenCredential;

    #[test]
    fn c5_builder_validates_and_keys_hold_no_secret() {
        assert!(matches!(
            RefreshTokenCredential::builder("t", "c").build(),
            Err(Error::Config(_))
        ));
        assert!(RefreshTokenCredential::builder("t", "c")
            .refresh_token("")
            .build()
            .is_err());
        let c = RefreshTokenCredential::builder("t", "c")
            .refresh_token("rt-s3cr3t")
            .build()
            .unwrap();
        assert_eq!(
            c.store_key(),
            "resilient-auth:v1:refresh_token:https://login.microsoftonline.com:t:c"
        );
        assert_eq!(c.identity().kind, "refresh_token");
        let c = RefreshTokenCredential::builder("t", "c")
            .store(MemoryStore::new())
            .build()
            .unwrap();
        assert!(c.grant.store.is_some());
    }

    #[test]
    fn c5_from_env_reads_tenant_client_and_authority() {
        let env = |k: &str| match k {
            "AZURE_TENANT_ID" => Some("t1".to_owned()),
            "AZURE_CLIENT_ID" => Some("c1".to_owned()),
            "AZURE_AUTHORITY_HOST" => Some("https://login.microsoftonline.us".to_owned()),
            _ => None,
        };
        let c = RefreshTokenCredential::from_env_with(&env)
            .unwrap()
            .refresh_token("rt")
            .build()
            .unwrap();
        assert_eq!(c.identity().authority, "https://login.microsoftonline.us");
        assert!(RefreshTokenCredential::from_env_with(&|_| None).is_err());
    }

    #[test]
    fn x1_refresh_token_credential_never_shows_the_refresh_token() {
        let b = RefreshTokenCredential::builder("t", "c").refresh_token("rt-s3cr3t");
        let text = format!("{b:?}");
        let c = b.build().unwrap();
        let text = format!("{text}{c:?}{c}");
        assert!(!text.contains("rt-s3cr3t"), "{text}");
        let e = with_hint(Error::IdentityProvider {
            status: http::StatusCode::BAD_REQUEST,
            details: Box::new(IdentityProviderError {
                error: "invalid_grant".into(),
                ..IdentityProviderError::default()
            }),
        });
        assert!(e.needs_interaction());
        assert_eq!(
            e.to_string(),
            "identity provider returned invalid_grant: interactive sign-in is needed"
        );
    }
}
