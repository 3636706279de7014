//! Access tokens and the parsing of token responses (rules T1, T2).

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use http::HeaderValue;
use tokio::time::Instant;

use crate::Error;

/// A bearer access token held by the cache.
///
/// Cheap to clone (an `Arc`). The `Authorization` header value is built once, when the token
/// arrives, and marked sensitive, so attaching it to a request copies a reference count and
/// nothing else. `Debug` never shows the token; [`AccessToken::secret`] is the only way to read it.
#[derive(Clone)]
pub struct AccessToken {
    inner: Arc<Inner>,
}

struct Inner {
    secret: String,
    header: HeaderValue,
    expires_at: Instant,
    refresh_at: Instant,
}

impl AccessToken {
    /// Builds a token. `refresh_at` is clamped to `expires_at`.
    ///
    /// # Errors
    /// [`Error::InvalidResponse`] if the token cannot be sent in an HTTP header (control
    /// characters, non-visible ASCII).
    pub fn new(
        secret: impl Into<String>,
        expires_at: Instant,
        refresh_at: Instant,
    ) -> Result<Self, Error> {
        let secret = secret.into();
        if secret.is_empty() {
            return Err(Error::invalid_response("empty access token"));
        }
        let mut header = HeaderValue::try_from(format!("Bearer {secret}"))
            .map_err(|_| Error::invalid_response("access token is not a valid header value"))?;
        header.set_sensitive(true);
        Ok(AccessToken {
            inner: Arc::new(Inner {
                secret,
                header,
                expires_at,
                refresh_at: refresh_at.min(expires_at),
            }),
        })
    }

    /// The token itself. Handle with care: this is a credential.
    pub fn secret(&self) -> &str {
        &self.inner.secret
    }

    /// When the token stops being valid (monotonic clock).
    pub fn expires_at(&self) -> Instant {
        self.inner.expires_at
    }

    /// When the cache starts refreshing it in the background (monotonic clock).
    pub fn refresh_at(&self) -> Instant {
        self.inner.refresh_at
    }

    /// The `Authorization: Bearer …` value, built once per token, marked sensitive.
    pub fn header_value(&self) -> &HeaderValue {
        &self.inner.header
    }

    /// `true` if both tokens are the same issued token (the same allocation).
    pub fn same_as(&self, other: &AccessToken) -> bool {
        Arc::ptr_eq(&self.inner, &other.inner)
    }
}

impl fmt::Debug for AccessToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AccessToken")
            .field("secret", &"<redacted>")
            .field("expires_at", &self.inner.expires_at)
            .field("refresh_at", &self.inner.refresh_at)
            .finish()
    }
}

/// What a [`TokenCredential`](crate::TokenCredential) returns: a token with its lifetime as the
/// identity provider stated it. The cache turns it into an [`AccessToken`] with a refresh point.
#[derive(Clone)]
pub struct TokenResponse {
    pub(crate) access_token: String,
    pub(crate) expires_in: Duration,
    pub(crate) refresh_in: Option<Duration>,
    pub(crate) refresh_token: Option<String>,
}

impl TokenResponse {
    /// A token valid for `expires_in` from now.
    pub fn new(access_token: impl Into<String>, expires_in: Duration) -> Self {
        TokenResponse {
            access_token: access_token.into(),
            expires_in,
            refresh_in: None,
            refresh_token: None,
        }
    }

    /// The identity provider's `refresh_in` hint.
    #[must_use]
    pub fn with_refresh_in(mut self, refresh_in: Duration) -> Self {
        self.refresh_in = Some(refresh_in);
        self
    }

    /// A refresh token that came with the access token (public clients).
    #[must_use]
    pub fn with_refresh_token(mut self, refresh_token: impl Into<String>) -> Self {
        self.refresh_token = Some(refresh_token.into());
        self
    }

    /// The stated lifetime.
    pub fn expires_in(&self) -> Duration {
        self.expires_in
    }

    /// The stated refresh hint, if any.
    pub fn refresh_in(&self) -> Option<Duration> {
        self.refresh_in
    }

    /// The access token. Handle with care.
    pub fn secret(&self) -> &str {
        &self.access_token
    }

    /// The refresh token, if any. Handle with care.
    pub fn refresh_token(&self) -> Option<&str> {
        self.refresh_token.as_deref()
    }
}

impl fmt::Debug for TokenResponse {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TokenResponse")
            .field("access_token", &"<redacted>")
            .field("expires_in", &self.expires_in)
            .field("refresh_in", &self.refresh_in)
            .field(
                "refresh_token",
                &self.refresh_token.as_ref().map(|_| "<redacted>"),
            )
            .finish()
    }
}
