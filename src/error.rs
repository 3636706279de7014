//! The crate's error type.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

/// A boxed error, as tower layers that can fail return.
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// Everything that can go wrong in this crate.
///
/// `Display` describes this level only (the cause is chained with `source()`), is lowercase and
/// never contains a token, secret or assertion.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The server (an API or the identity provider) asked us to wait longer than the caller's
    /// cap or deadline allows; nothing was sent. Retry no earlier than `retry_after` from now.
    #[error("throttled: retry after {retry_after:?}")]
    Throttled {
        /// How long to wait before trying again.
        retry_after: Duration,
    },

    /// One attempt took longer than its per-attempt timeout.
    #[error("attempt timed out after {after:?}")]
    Timeout {
        /// The timeout that elapsed.
        after: Duration,
    },

    /// The identity provider (or another dependency) could not be reached, or kept failing,
    /// and no still-valid token was left to serve.
    #[error("{what} unavailable")]
    Unavailable {
        /// What was unavailable, e.g. `"identity provider"`.
        what: &'static str,
        /// The underlying failure, if there was one (shared, so that every caller waiting on
        /// one fetch gets the same error).
        #[source]
        source: Option<Arc<dyn std::error::Error + Send + Sync + 'static>>,
    },

    /// The identity provider answered with an OAuth 2.0 error.
    #[error("identity provider returned {}", details)]
    IdentityProvider {
        /// The HTTP status of the error response.
        status: http::StatusCode,
        /// The fields of the error body (boxed to keep `Error` small).
        details: Box<IdentityProviderError>,
    },

    /// A response that could not be understood (malformed JSON, a missing or absurd lifetime,
    /// an oversized body, a token that is not a valid header value).
    #[error("invalid response: {0}")]
    InvalidResponse(String),

    /// A configuration that cannot work (rejected when it is built).
    #[error("invalid configuration: {0}")]
    Config(String),
}

impl Error {
    pub(crate) fn config(msg: impl Into<String>) -> Self {
        Error::Config(msg.into())
    }

    pub(crate) fn unavailable(
        what: &'static str,
        source: impl std::error::Error + Send + Sync + 'static,
    ) -> Self {
        Error::Unavailable {
            what,
            source: Some(Arc::new(source)),
        }
    }

    pub(crate) fn invalid_response(msg: impl Into<String>) -> Self {
        Error::InvalidResponse(msg.into())
    }

    /// The wait the server asked for, if this error carries one (`Throttled`, or an
    /// identity-provider error that came with `Retry-After`).
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            Error::Throttled { retry_after } => Some(*retry_after),
            Error::IdentityProvider { details, .. } => details.retry_after,
            _ => None,
        }
    }

    /// `true` when only the user can help: the identity provider rejected the refresh token or
    /// wants user interaction (`invalid_grant`, `interaction_required`, `login_required`,
    /// `consent_required`), or a public client has no refresh token at all. Run an interactive
    /// sign-in. (From a confidential client, `invalid_grant` means a bad assertion instead.)
    pub fn needs_interaction(&self) -> bool {
        match self {
            Error::IdentityProvider { details, .. } => matches!(
                details.error.as_str(),
                "invalid_grant" | "interaction_required" | "login_required" | "consent_required"
            ),
            _ => false,
        }
    }

    /// `true` for failures that may go away by themselves (throttling, timeouts, an unreachable
    /// or failing identity provider); `false` for ones that need a change (bad credentials,
    /// bad configuration, a malformed response).
    pub fn is_transient(&self) -> bool {
        crate::retry::policy::Failure::of_error(self).is_transient()
    }
}

/// The fields of an OAuth 2.0 / Entra ID error response. Never holds a secret.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct IdentityProviderError {
    /// `error`, e.g. `invalid_client`.
    pub error: String,
    /// `error_description`.
    pub error_description: Option<String>,
    /// `error_codes` (Entra's AADSTS numbers).
    pub error_codes: Vec<i64>,
    /// `trace_id`.
    pub trace_id: Option<String>,
    /// `correlation_id`.
    pub correlation_id: Option<String>,
    /// The wait the response asked for (`Retry-After` and friends), if any.
    pub retry_after: Option<Duration>,
}

impl fmt::Display for IdentityProviderError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(if self.error.is_empty() {
            "an error"
        } else {
            &self.error
        })?;
        if let Some(d) = &self.error_description {
            write!(f, ": {d}")?;
        }
        if !self.error_codes.is_empty() {
            write!(f, " (codes {:?})", self.error_codes)?;
        }
        if let Some(t) = &self.trace_id {
            write!(f, " trace_id={t}")?;
        }
        if let Some(c) = &self.correlation_id {
            write!(f, " correlation_id={c}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_is_small() {
        assert!(std::mem::size_of::<Error>() <= 48);
    }

    #[test]
    fn display_is_lowercase_without_period() {
        let errors = [
            Error::Throttled {
                retry_after: Duration::from_secs(7),
            },
            Error::Timeout {
                after: Duration::from_secs(1),
            },
            Error::config("x"),
            Error::invalid_response("y"),
        ];
        for e in errors {
            let s = e.to_string();
            assert!(s.chars().next().is_some_and(|c| c.is_lowercase()), "{s}");
            assert!(!s.ends_with('.'), "{s}");
        }
    }
}
