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

use std::fmt;
use std::time::Duration;

use futures_util::future::BoxFuture;
use reqwest::Url;
use secrecy::zeroize::Zeroizing;
use secrecy::{ExposeSecret, SecretString};

use super::authority::{AuthorityHost, TokenEndpoint};
use super::http::{default_client, send_token_request, DEFAULT_TIMEOUT};
use super::{CredentialIdentity, TokenCredential, TokenRequest};
use crate::{Error, TokenResponse};

const KIND: &str = "client_secret";

/// A confidential client that authenticates with a client secret (rule C1).
///
/// Each [`get_token`](TokenCredential::get_token) sends one POST to
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
pub struct ClientSecretCredential {
    client: reqwest::Client,
    endpoint: TokenEndpoint,
    tenant_id: String,
    client_id: String,
    secret: SecretString,
    basic: bool,
    timeout: Duration,
}

impl ClientSecretCredential {
    /// A builder for the application `client_id` of `tenant_id` with its client `secret`.
    pub fn builder(
        tenant_id: impl Into<String>,
        client_id: impl Into<String>,
        secret: impl Into<String>,
    ) -> ClientSecretCredentialBuilder {
        ClientSecretCredentialBuilder {
            tenant_id: tenant_id.into(),
            client_id: client_id.into(),
            secret: SecretString::from(secret.into()),
            options: CommonOptions::default(),
            basic: false,
        }
    }

    /// Reads `AZURE_TENANT_ID`, `AZURE_CLIENT_ID`, `AZURE_CLIENT_SECRET` and (optional)
    /// `AZURE_AUTHORITY_HOST`, as the Azure SDKs do.
    ///
    /// # Errors
    /// [`Error::Config`] if a required variable is missing or empty, or a value is invalid.
    pub fn from_env() -> Result<Self, Error> {
        Self::from_env_with(&|name| std::env::var(name).ok())
    }

    /// [`from_env`](Self::from_env) over any variable lookup (tests pass a map).
    pub(crate) fn from_env_with(env: &dyn Fn(&str) -> Option<String>) -> Result<Self, Error> {
        let tenant = required_env(env, "AZURE_TENANT_ID")?;
        let client = required_env(env, "AZURE_CLIENT_ID")?;
        let secret = required_env(env, "AZURE_CLIENT_SECRET")?;
        let mut builder = Self::builder(tenant, client, secret);
        if let Some(host) = optional_env(env, "AZURE_AUTHORITY_HOST") {
            builder = builder.authority_host(AuthorityHost::parse(&host)?);
        }
        builder.build()
    }

    fn request(&self, url: &Url, request: &TokenRequest) -> Result<reqwest::Request, Error> {
        let scope = request.scopes.join(" ");
        let mut form: Vec<(&str, &str)> = vec![("grant_type", "client_credentials")];
        if !self.basic {
            form.push(("client_id", &self.client_id));
            form.push(("client_secret", self.secret.expose_secret()));
        }
        if !scope.is_empty() {
            form.push(("scope", &scope));
        }
        if let Some(claims) = &request.claims {
            form.push(("claims", claims));
        }
        let mut builder = self
            .client
            .post(url.clone())
            .header(http::header::ACCEPT, "application/json")
            .form(&form);
        if self.basic {
            // RFC 6749 §2.3.1: both are form-urlencoded before they go into the Basic header.
            let id = Zeroizing::new(form_urlencode(&self.client_id));
            let secret = Zeroizing::new(form_urlencode(self.secret.expose_secret()));
            builder = builder.basic_auth(id.as_str(), Some(secret.as_str()));
        }
        builder
            .build()
            .map_err(|_| Error::config("could not build the token request"))
    }
}

impl TokenCredential for ClientSecretCredential {
    fn get_token<'a>(
        &'a self,
        request: &'a TokenRequest,
    ) -> BoxFuture<'a, Result<TokenResponse, Error>> {
        Box::pin(self.endpoint.call(move |url| {
            let built = self.request(url, request);
            async move { send_token_request(&self.client, built?, self.timeout, KIND).await }
        }))
    }

    fn identity(&self) -> CredentialIdentity {
        CredentialIdentity::new(KIND, self.endpoint.origin())
            .with_tenant(&self.tenant_id)
            .with_client_id(&self.client_id)
    }
}

impl fmt::Debug for ClientSecretCredential {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClientSecretCredential")
            .field("token_url", &self.endpoint.global.as_str())
            .field(
                "regional_token_url",
                &self.endpoint.regional.as_ref().map(Url::as_str),
            )
            .field("tenant_id", &self.tenant_id)
            .field("client_id", &self.client_id)
            .field("secret", &"<redacted>")
            .field("client_secret_basic", &self.basic)
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

impl fmt::Display for ClientSecretCredential {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "client secret credential for client {} at {}",
            self.client_id, self.endpoint.global
        )
    }
}

/// Builds a [`ClientSecretCredential`]; see [`ClientSecretCredential::builder`].
#[must_use]
pub struct ClientSecretCredentialBuilder {
    tenant_id: String,
    client_id: String,
    secret: SecretString,
    options: CommonOptions,
    basic: bool,
}

impl ClientSecretCredentialBuilder {
    /// The authority host (default [`AuthorityHost::AZURE_PUBLIC`]).
    pub fn authority_host(mut self, host: AuthorityHost) -> Self {
        self.options.authority = host;
        self
    }

    /// Posts to this token URL instead of `{authority}/{tenant}/oauth2/v2.0/token`: any
    /// standards-compliant OAuth 2.0 token endpoint (https, or plain http to loopback).
    pub fn token_url(mut self, url: impl Into<String>) -> Self {
        self.options.token_url = Some(url.into());
        self
    }

    /// Sends the client id and secret in an HTTP Basic `Authorization` header
    /// (`client_secret_basic`, each form-urlencoded first as RFC 6749 §2.3.1 says) instead of
    /// as form fields (`client_secret_post`, the default).
    pub fn client_secret_basic(mut self, basic: bool) -> Self {
        self.basic = basic;
        self
    }

    /// Tries the regional endpoint of `region` (e.g. `westus2`) first, and the global one if
    /// it fails with a transport error, a timeout or a 5xx, within the same `get_token` call
    /// (so one call may take up to twice the [`timeout`](Self::timeout)).
    pub fn region(mut self, region: impl Into<String>) -> Self {
        self.options.region = Some(region.into());
        self
    }

    /// The per-attempt timeout of a token request, covering connect, headers and body
    /// (default 10 s).
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.options.timeout = timeout;
        self
    }

    /// The HTTP client (default: a client that follows no redirects). A client that follows
    /// redirects may re-post the secret to wherever a `307` points.
    pub fn http_client(mut self, client: reqwest::Client) -> Self {
        self.options.client = Some(client);
        self
    }

    /// Validates the configuration and builds the credential.
    ///
    /// # Errors
    /// [`Error::Config`] for an empty client id or secret, an invalid tenant, token URL or
    /// region, plain http to a non-loopback host, a zero timeout, or an HTTP client that cannot
    /// be built.
    pub fn build(self) -> Result<ClientSecretCredential, Error> {
        if self.secret.expose_secret().is_empty() {
            return Err(Error::config("client secret is empty"));
        }
        let (client, endpoint, timeout) = self.options.resolve(&self.tenant_id, &self.client_id)?;
        Ok(ClientSecretCredential {
            client,
            endpoint,
            tenant_id: self.tenant_id,
            client_id: self.client_id,
            secret: self.secret,
            basic: self.basic,
            timeout,
        })
    }
}

impl fmt::Debug for ClientSecretCredentialBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClientSecretCredentialBuilder")
            .field("tenant_id", &self.tenant_id)
            .field("client_id", &self.client_id)
            .field("secret", &"<redacted>")
            .field("options", &self.options)
            .field("client_secret_basic", &self.basic)
            .finish()
    }
}

/// The settings both confidential-client credentials share.
#[derive(Debug)]
pub(crate) struct CommonOptions {
    pub(crate) authority: AuthorityHost,
    pub(crate) token_url: Option<String>,
    pub(crate) region: Option<String>,
    pub(crate) timeout: Duration,
    pub(crate) client: Option<reqwest::Client>,
}

impl Default for CommonOptions {
    fn default() -> Self {
        CommonOptions {
            authority: AuthorityHost::default(),
            token_url: None,
            region: None,
            timeout: DEFAULT_TIMEOUT,
            client: None,
        }
    }
}

impl CommonOptions {
    /// Validates the options for `tenant` and `client_id`: the client, the endpoint and the
    /// timeout.
    pub(crate) fn resolve(
        self,
        tenant: &str,
        client_id: &str,
    ) -> Result<(reqwest::Client, TokenEndpoint, Duration), Error> {
        if client_id.trim().is_empty() {
            return Err(Error::config("client id is empty"));
        }
        super::authority::check_tenant(tenant)?;
        if self.timeout.is_zero() {
            return Err(Error::config("timeout must not be zero"));
        }
        let timeout = self.timeout;
        let endpoint = TokenEndpoint::new(
            &self.authority,
            tenant,
            self.region.as_deref(),
            self.token_url.as_deref(),
        )?;
        let client = match self.client {
            Some(client) => client,
            None => default_client()?,
        };
        Ok((client, endpoint, timeout))
    }
}

pub(crate) fn required_env(
    env: &dyn Fn(&str) -> Option<String>,
    name: &str,
) -> Result<String, Error> {
    optional_env(env, name).ok_or_else(|| Error::config(format!("{name} is not set")))
}

pub(crate) fn optional_env(env: &dyn Fn(&str) -> Option<String>, name: &str) -> Option<String> {
    env(name).filter(|v| !v.trim().is_empty())
}

fn form_urlencode(s: &str) -> String {
    form_urlencoded::byte_serialize(s.as_bytes()).collect()
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn env(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let map: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        move |k| map.get(k).cloned()
    }

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
            c.endpoint.global.as_str(),
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
        assert_eq!(c.timeout, DEFAULT_TIMEOUT);
    }

    #[test]
    fn c1_basic_auth_form_urlencodes_id_and_secret() {
        assert_eq!(form_urlencode("a b+c/é:%"), "a+b%2Bc%2F%C3%A9%3A%25");
    }
}
