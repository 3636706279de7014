//! [`ClientSecretCredential`]: the OAuth 2.0 client credentials grant with a client secret
//! (rule C1).
//!
//! ```no_run
//! use resilient_auth::{ClientSecretCredential, TokenCredential, TokenRequest};
//!
//! # async fn run() -> Result<(), resilient_auth::Error> {
//! let credential = ClientSecretCredential::builder("contoso.onmicrosoft.com", "client-id", "secret")
//!     .build()?;
//! let token = credential
//!     .get_token(&TokenRequest::new(["https://vault.azure.net/.default"]))
//!     .await?;
//! assert!(!token.expires_in().is_zero());
//! # Ok(()) }
//! ```
#![cfg(feature = "reqwest")]
#![cfg_attr(docsrs, doc(cfg(feature = "reqwest")))]

use std::borrow::Cow;
use std::fmt;

use secrecy::{ExposeSecret, SecretString};

use futures_util::future::BoxFuture;

use super::confidential::{
    process_env, required_env, sealed, ClientAuth, ClientOptions, ConfidentialClient,
    ConfidentialCredential, CredentialBuilder, Env, Grant, RegionalGrant,
};
use super::{CredentialKind, TokenRequest};
use crate::{Error, TokenResponse};

const KIND: &str = "client_secret";

/// A confidential client that authenticates with a client secret (rule C1).
///
/// Each [`get_token`](crate::TokenCredential::get_token) sends one POST to
/// `{authority}/{tenant}/oauth2/v2.0/token` with the form fields `grant_type=client_credentials`,
/// `client_id`, `client_secret`, `scope` (and `claims` after a CAE challenge). It also works with
/// any standards-compliant OAuth 2.0 server: set
/// [`token_url`](ClientSecretCredentialBuilder::token_url), and
/// [`client_secret_basic`](ClientSecretCredentialBuilder::client_secret_basic) if the server
/// wants the client authenticated with HTTP Basic.
///
/// One attempt per call: put it behind a `TokenCache`, which owns retries, back-off and the
/// throttle gate. The secret is held in a [`SecretString`] and never shown by `Debug`,
/// `Display`, errors or logs.
pub type ClientSecretCredential = ConfidentialCredential<SecretGrant>;

impl ClientSecretCredential {
    /// A builder for the application `client_id` of `tenant_id` with its client `secret`.
    pub fn builder(
        tenant_id: impl Into<String>,
        client_id: impl Into<String>,
        secret: impl Into<String>,
    ) -> ClientSecretCredentialBuilder {
        CredentialBuilder::new(
            ClientOptions::new(tenant_id, client_id),
            SecretGrant {
                secret: SecretString::from(secret.into()),
                basic: false,
            },
        )
    }

    /// Reads `AZURE_TENANT_ID`, `AZURE_CLIENT_ID`, `AZURE_CLIENT_SECRET` and (optional)
    /// `AZURE_AUTHORITY_HOST` and `AZURE_REGIONAL_AUTHORITY_NAME`, as the Azure SDKs do.
    ///
    /// # Errors
    /// [`Error::Config`] if a required variable is missing or empty, or a value is invalid.
    pub fn from_env() -> Result<Self, Error> {
        Self::from_env_with(&process_env)
    }

    /// [`from_env`](Self::from_env) over any variable lookup (tests pass a map).
    pub(crate) fn from_env_with(env: Env<'_>) -> Result<Self, Error> {
        let options = ClientOptions::from_env(env, true)?;
        let secret = SecretString::from(required_env(env, "AZURE_CLIENT_SECRET")?);
        CredentialBuilder::new(
            options,
            SecretGrant {
                secret,
                basic: false,
            },
        )
        .build()
    }
}

/// Builds a [`ClientSecretCredential`]; see [`ClientSecretCredential::builder`]. The shared
/// setters (authority, token URL, region, timeout, HTTP client) are
/// [`CredentialBuilder`]'s.
pub type ClientSecretCredentialBuilder = CredentialBuilder<SecretGrant>;

/// The client secret grant's own settings (see [`ClientSecretCredentialBuilder`]).
#[derive(Debug)]
pub struct SecretGrant {
    secret: SecretString,
    basic: bool,
}

impl sealed::Sealed for SecretGrant {}

impl RegionalGrant for SecretGrant {}

impl Grant for SecretGrant {
    /// A built client secret credential keeps the grant as it was given.
    type Built = SecretGrant;

    const NAME: &'static str = "ClientSecretCredential";

    fn fetch<'a>(
        credential: &'a ClientSecretCredential,
        request: &'a TokenRequest,
    ) -> BoxFuture<'a, Result<TokenResponse, Error>> {
        let (core, grant) = (&credential.core, &credential.grant);
        Box::pin(core.call(move |url| grant.request(core, url, request)))
    }

    fn debug_fields(grant: &SecretGrant, d: &mut fmt::DebugStruct<'_, '_>) {
        d.field("secret", &"<redacted>")
            .field("client_secret_basic", &grant.basic);
    }

    fn what(_: &SecretGrant) -> Cow<'static, str> {
        Cow::Borrowed("client secret credential")
    }
}

impl SecretGrant {
    /// The client credentials request: the secret as a form field, or in a Basic header.
    fn request(
        &self,
        core: &ConfidentialClient,
        url: &reqwest::Url,
        request: &TokenRequest,
    ) -> Result<reqwest::Request, Error> {
        let scope = request.scopes.join(" ");
        let secret = self.secret.expose_secret();
        let (auth, fields) = if self.basic {
            (ClientAuth::Basic(secret), &[][..])
        } else {
            (ClientAuth::Form, &[("client_secret", secret)][..])
        };
        core.form_post(url, "client_credentials", auth, fields, &scope, request)
    }
}

impl CredentialBuilder<SecretGrant> {
    /// Sends the client id and secret in an HTTP Basic `Authorization` header
    /// (`client_secret_basic`, each form-urlencoded first as RFC 6749 §2.3.1 says) instead of
    /// as form fields (`client_secret_post`, the default).
    pub fn client_secret_basic(mut self, basic: bool) -> Self {
        self.grant.basic = basic;
        self
    }

    /// Validates the configuration and builds the credential.
    ///
    /// # Errors
    /// [`Error::Config`] for an empty client id or secret, an invalid tenant, token URL or
    /// region, plain http to a non-loopback host, a zero timeout, or an HTTP client that cannot
    /// be built.
    pub fn build(self) -> Result<ClientSecretCredential, Error> {
        if self.grant.secret.expose_secret().is_empty() {
            return Err(Error::config("client secret is empty"));
        }
        let core = self.options.resolve(KIND, CredentialKind::ClientSecret)?;
        Ok(ConfidentialCredential {
            core,
            grant: self.grant,
        })
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use std::time::Duration;

    use crate::credential::confidential::test_env as env;
    use crate::TokenCredential;

    #[test]
    fn c1_from_env_reads_azure_variables() {
        let c = ClientSecretCredential::from_env_with(&env(&[
            ("AZURE_TENANT_ID", "tenant-1"),
            ("AZURE_CLIENT_ID", "client-1"),
            ("AZURE_CLIENT_SECRET", "s3cr3t-value"),
            ("AZURE_AUTHORITY_HOST", "https://login.microsoftonline.us/"),
        ]))
        .unwrap();
        let id = c.identity();
        assert_eq!(id.kind, "client_secret");
        assert_eq!(id.authority, "https://login.microsoftonline.us");
        assert_eq!(id.tenant.as_deref(), Some("tenant-1"));
        assert_eq!(id.client_id.as_deref(), Some("client-1"));
        assert_eq!(
            c.core.endpoint.global.as_str(),
            "https://login.microsoftonline.us/tenant-1/oauth2/v2.0/token"
        );
        assert!(!format!("{c:?}{c}").contains("s3cr3t"));

        let c = ClientSecretCredential::from_env_with(&env(&[
            ("AZURE_TENANT_ID", "tenant-1"),
            ("AZURE_CLIENT_ID", "client-1"),
            ("AZURE_CLIENT_SECRET", "s3cr3t-value"),
        ]))
        .unwrap();
        assert_eq!(c.identity().authority, "https://login.microsoftonline.com");
    }

    #[test]
    fn c1_from_env_missing_or_bad_values_are_config_errors() {
        for (pairs, needle) in [
            (
                vec![("AZURE_CLIENT_ID", "c"), ("AZURE_CLIENT_SECRET", "s3cr3t")],
                "AZURE_TENANT_ID",
            ),
            (
                vec![("AZURE_TENANT_ID", "t"), ("AZURE_CLIENT_SECRET", "s3cr3t")],
                "AZURE_CLIENT_ID",
            ),
            (
                vec![
                    ("AZURE_TENANT_ID", "t"),
                    ("AZURE_CLIENT_ID", "c"),
                    ("AZURE_CLIENT_SECRET", " "),
                ],
                "AZURE_CLIENT_SECRET",
            ),
            (
                vec![
                    ("AZURE_TENANT_ID", "t"),
                    ("AZURE_CLIENT_ID", "c"),
                    ("AZURE_CLIENT_SECRET", "s3cr3t"),
                    ("AZURE_AUTHORITY_HOST", "http://login.example.com"),
                ],
                "https",
            ),
        ] {
            let e = ClientSecretCredential::from_env_with(&env(&pairs)).unwrap_err();
            assert!(matches!(e, Error::Config(_)), "{e}");
            assert!(e.to_string().contains(needle), "{e}");
            assert!(!e.to_string().contains("s3cr3t"));
        }
    }

    #[test]
    fn c1_builder_validates() {
        let ok = ClientSecretCredential::builder("t", "c", "s");
        assert!(ok.build().is_ok());
        for b in [
            ClientSecretCredential::builder("t", "", "s"),
            ClientSecretCredential::builder("t", "c", ""),
            ClientSecretCredential::builder("t/x", "c", "s"),
            ClientSecretCredential::builder("t", "c", "s").token_url("http://idp.example/token"),
            ClientSecretCredential::builder("t", "c", "s").token_url("not a url"),
            ClientSecretCredential::builder("t", "c", "s").region("west us"),
            ClientSecretCredential::builder("t", "c", "s").timeout(Duration::ZERO),
        ] {
            assert!(matches!(b.build(), Err(Error::Config(_))));
        }
        let c = ClientSecretCredential::builder("t", "c", "s")
            .token_url("http://127.0.0.1:9/oauth/token")
            .build()
            .unwrap();
        assert_eq!(c.identity().authority, "http://127.0.0.1:9");
        assert_eq!(c.core.timeout, crate::credential::http::DEFAULT_TIMEOUT);
    }

    #[test]
    fn c6_regional_authority_from_the_environment() {
        let base = [
            ("AZURE_TENANT_ID", "tenant-1"),
            ("AZURE_CLIENT_ID", "client-1"),
            ("AZURE_CLIENT_SECRET", "s3cr3t-value"),
        ];
        let with = |extra: &[(&'static str, &'static str)]| {
            let pairs: Vec<(&str, &str)> = base.iter().chain(extra).copied().collect();
            ClientSecretCredential::from_env_with(&env(&pairs)).unwrap()
        };
        let regional = |c: &ClientSecretCredential| {
            c.core
                .endpoint
                .regional
                .as_ref()
                .map(|u| u.as_str().to_owned())
        };
        let c = with(&[("AZURE_REGIONAL_AUTHORITY_NAME", "westus2")]);
        assert_eq!(
            regional(&c).as_deref(),
            Some("https://westus2.login.microsoft.com/tenant-1/oauth2/v2.0/token")
        );
        assert!(format!("{c:?}").contains("westus2.login.microsoft.com"));
        let c = with(&[
            ("AZURE_REGIONAL_AUTHORITY_NAME", "TryAutoDetect"),
            ("REGION_NAME", "East US 2"),
        ]);
        assert_eq!(
            regional(&c).as_deref(),
            Some("https://eastus2.login.microsoft.com/tenant-1/oauth2/v2.0/token")
        );
        // Azure Government keeps its own host
        let c = with(&[
            ("AZURE_REGIONAL_AUTHORITY_NAME", "usgovvirginia"),
            ("AZURE_AUTHORITY_HOST", "https://login.microsoftonline.us"),
        ]);
        assert_eq!(
            regional(&c).as_deref(),
            Some("https://usgovvirginia.login.microsoftonline.us/tenant-1/oauth2/v2.0/token")
        );
        assert_eq!(
            regional(&with(&[("AZURE_REGIONAL_AUTHORITY_NAME", "TryAutoDetect")])),
            None
        );
        assert_eq!(regional(&with(&[])), None);
        let e = ClientSecretCredential::from_env_with(&env(&base
            .iter()
            .copied()
            .chain([("AZURE_REGIONAL_AUTHORITY_NAME", "west us")])
            .collect::<Vec<_>>()))
        .unwrap_err();
        assert!(matches!(e, Error::Config(_)), "{e}");
    }
}
