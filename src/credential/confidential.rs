//! The core every credential that posts to an OAuth 2.0 token endpoint is built on: client
//! secret (C1), client certificate (C2), workload identity (C4) and refresh token (C5).
//!
//! It holds what they share — the HTTP client, the token endpoint (authority, tenant, region or
//! a custom URL, see [`TokenEndpoint`]), the client id and the per-attempt timeout — and does
//! what they share: the form POST (one attempt through [`send_token_request`], errors mapped
//! there, rule C7), the regional fallback, the builder options and their environment variables
//! ([`CredentialBuilder`]), and the built credential ([`ConfidentialCredential`]: one
//! `TokenCredential`, `Debug` and `Display` for all four). A credential adds only its grant: its
//! fields, its token request ([`Grant`]) and its builder setters.
#![cfg(feature = "reqwest")]

use std::borrow::Cow;
use std::fmt;
use std::time::Duration;

use futures_util::future::BoxFuture;

use reqwest::Url;
use secrecy::zeroize::Zeroizing;

use super::authority::{check_tenant, AuthorityHost, TokenEndpoint, TRY_AUTO_DETECT};
use super::http::{default_client, send_token_request, DEFAULT_TIMEOUT};
use super::{CredentialIdentity, CredentialKind, TokenCredential, TokenRequest};
use crate::{Error, TokenResponse};

/// `client_assertion_type` of a JWT client assertion (RFC 7523).
const JWT_BEARER: &str = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer";

/// An environment variable lookup (`std::env::var` in production, a map in tests).
pub(crate) type Env<'a> = &'a dyn Fn(&str) -> Option<String>;

/// The process environment.
pub(crate) fn process_env(name: &str) -> Option<String> {
    std::env::var(name).ok()
}

/// A variable that must be set and not blank.
pub(crate) fn required_env(env: Env<'_>, name: &str) -> Result<String, Error> {
    optional_env(env, name).ok_or_else(|| Error::config(format!("{name} is not set")))
}

/// A variable, `None` when unset or blank.
pub(crate) fn optional_env(env: Env<'_>, name: &str) -> Option<String> {
    env(name).filter(|v| !v.trim().is_empty())
}

/// The region `AZURE_REGIONAL_AUTHORITY_NAME` asks for, as MSAL reads it: a region name (e.g.
/// `westus2`), or `TryAutoDetect` (any case), which is resolved by [`detect_region`].
pub(crate) fn regional_authority_from_env(env: Env<'_>) -> Option<String> {
    let value = optional_env(env, "AZURE_REGIONAL_AUTHORITY_NAME")?;
    Some(detect_region(env, value.trim()))
}

/// `region`, or for `TryAutoDetect` the region in `REGION_NAME` (set by App Service and
/// Functions; spaces removed, lowercased, so `West US 2` is `westus2`) if there is one, else
/// `TryAutoDetect`, which the token endpoint resolves through IMDS on first use.
pub(crate) fn detect_region(env: Env<'_>, region: &str) -> String {
    if !region.eq_ignore_ascii_case(TRY_AUTO_DETECT) {
        return region.to_owned();
    }
    optional_env(env, "REGION_NAME")
        .map(|r| r.replace(' ', "").to_ascii_lowercase())
        .unwrap_or_else(|| TRY_AUTO_DETECT.to_owned())
}

/// The builder options every confidential-client credential shares (no secrets: `Debug` shows
/// them all).
#[derive(Debug)]
pub(crate) struct ClientOptions {
    pub(crate) tenant_id: String,
    pub(crate) client_id: String,
    pub(crate) authority: AuthorityHost,
    pub(crate) token_url: Option<String>,
    pub(crate) region: Option<String>,
    pub(crate) timeout: Duration,
    pub(crate) client: Option<reqwest::Client>,
}

impl ClientOptions {
    /// The defaults for the application `client_id` of `tenant_id`.
    pub(crate) fn new(tenant_id: impl Into<String>, client_id: impl Into<String>) -> Self {
        ClientOptions {
            tenant_id: tenant_id.into(),
            client_id: client_id.into(),
            authority: AuthorityHost::default(),
            token_url: None,
            region: None,
            timeout: DEFAULT_TIMEOUT,
            client: None,
        }
    }
}

impl ClientOptions {
    /// `AZURE_TENANT_ID`, `AZURE_CLIENT_ID`, `AZURE_AUTHORITY_HOST` and (with `regional`)
    /// `AZURE_REGIONAL_AUTHORITY_NAME`: the variables every confidential client shares.
    pub(crate) fn from_env(env: Env<'_>, regional: bool) -> Result<ClientOptions, Error> {
        let mut options = ClientOptions::new(
            required_env(env, "AZURE_TENANT_ID")?,
            required_env(env, "AZURE_CLIENT_ID")?,
        );
        if let Some(host) = optional_env(env, "AZURE_AUTHORITY_HOST") {
            options.authority = AuthorityHost::parse(&host)?;
        }
        if regional {
            options.region = regional_authority_from_env(env);
        }
        Ok(options)
    }

    /// Validates the options and builds the core.
    pub(crate) fn resolve(
        self,
        kind: &'static str,
        source: CredentialKind,
    ) -> Result<ConfidentialClient, Error> {
        let (tenant, client_id) = (self.tenant_id, self.client_id);
        if client_id.trim().is_empty() {
            return Err(Error::config("client id is empty"));
        }
        check_tenant(&tenant)?;
        if self.timeout.is_zero() {
            return Err(Error::config("timeout must not be zero"));
        }
        let region = self.region.map(|r| detect_region(&process_env, r.trim()));
        let endpoint = TokenEndpoint::new(
            &self.authority,
            &tenant,
            region.as_deref(),
            self.token_url.as_deref(),
        )?;
        let client = match self.client {
            Some(client) => client,
            None => default_client()?,
        };
        Ok(ConfidentialClient {
            client,
            endpoint,
            tenant_id: tenant,
            client_id,
            timeout: self.timeout,
            kind,
            source,
        })
    }
}

/// The shared part of a built credential.
pub(crate) struct ConfidentialClient {
    pub(crate) client: reqwest::Client,
    pub(crate) endpoint: TokenEndpoint,
    pub(crate) tenant_id: String,
    pub(crate) client_id: String,
    pub(crate) timeout: Duration,
    kind: &'static str,
    source: CredentialKind,
}

/// How the client authenticates in a token request, besides its grant's fields.
pub(crate) enum ClientAuth<'a> {
    /// `client_id` in the form (with the grant's own proof, if any, among its fields).
    Form,
    /// `client_secret_basic`: client id and secret in an HTTP Basic header, each
    /// form-urlencoded first (RFC 6749 §2.3.1); no `client_id` in the form.
    Basic(&'a str),
}

impl ConfidentialClient {
    /// A token request to `url`: `grant_type`, `client_id` (unless Basic), the grant's
    /// `fields`, `scope` (when not empty) and the request's `claims`.
    pub(crate) fn form_post(
        &self,
        url: &Url,
        grant_type: &str,
        auth: ClientAuth<'_>,
        fields: &[(&str, &str)],
        scope: &str,
        request: &TokenRequest,
    ) -> Result<reqwest::Request, Error> {
        let mut form: Vec<(&str, &str)> = vec![("grant_type", grant_type)];
        if matches!(auth, ClientAuth::Form) {
            form.push(("client_id", &self.client_id));
        }
        form.extend_from_slice(fields);
        if !scope.is_empty() {
            form.push(("scope", scope));
        }
        if let Some(claims) = &request.claims {
            form.push(("claims", claims));
        }
        let mut builder = self
            .client
            .post(url.clone())
            .header(http::header::ACCEPT, "application/json")
            .form(&form);
        if let ClientAuth::Basic(secret) = auth {
            let id = Zeroizing::new(form_urlencode(&self.client_id));
            let secret = Zeroizing::new(form_urlencode(secret));
            builder = builder.basic_auth(id.as_str(), Some(secret.as_str()));
        }
        builder
            .build()
            .map_err(|_| Error::config("could not build the token request"))
    }

    /// One token request built by `build` for the endpoint's URL: the regional one first if
    /// configured (and the global one after a transport error, timeout or 5xx), else the
    /// global one.
    pub(crate) async fn call<F>(&self, build: F) -> Result<TokenResponse, Error>
    where
        F: Fn(&Url) -> Result<reqwest::Request, Error>,
    {
        self.endpoint
            .call(|url| {
                let built = build(url);
                async move { send_token_request(&self.client, built?, self.timeout, self.kind).await }
            })
            .await
    }

    /// A client credentials request proven by a JWT `assertion` (a certificate's signed
    /// assertion, or a federated token).
    pub(crate) fn assertion_post(
        &self,
        url: &Url,
        assertion: &str,
        request: &TokenRequest,
    ) -> Result<reqwest::Request, Error> {
        let fields = [
            ("client_assertion_type", JWT_BEARER),
            ("client_assertion", assertion),
        ];
        let scope = request.scopes.join(" ");
        let grant = "client_credentials";
        self.form_post(url, grant, ClientAuth::Form, &fields, &scope, request)
    }
}

/// A confidential-client credential: the shared core (HTTP client, token endpoint, tenant,
/// client id, timeout) and what the grant `G` adds to it.
///
/// [`ClientSecretCredential`](crate::ClientSecretCredential),
/// [`ClientCertificateCredential`](crate::ClientCertificateCredential),
/// [`WorkloadIdentityCredential`](crate::WorkloadIdentityCredential) and
/// [`RefreshTokenCredential`](crate::RefreshTokenCredential) are this type with their grant, as
/// their builders are [`CredentialBuilder`] with it. They share one [`TokenCredential`]
/// implementation (its identity is the core's: kind, token endpoint origin, tenant, client id)
/// and one `Debug` and `Display`, which show the core's fields and the grant's non-secret ones,
/// never a secret.
#[allow(private_bounds)] // `Grant` is this crate's own: the credentials are named by their aliases
pub struct ConfidentialCredential<G: Grant> {
    pub(crate) core: ConfidentialClient,
    pub(crate) grant: G::Built,
}

/// What one grant adds to the confidential-client core once its credential is built.
pub(crate) trait Grant: Sized + 'static {
    /// The built credential's own part: its secret, signer, token file or refresh token store.
    type Built: Send + Sync + 'static;

    /// The credential's type name in `Debug`.
    const NAME: &'static str;

    /// One `get_token`: the grant's token request through [`ConfidentialClient::call`].
    fn fetch<'a>(
        credential: &'a ConfidentialCredential<Self>,
        request: &'a TokenRequest,
    ) -> BoxFuture<'a, Result<TokenResponse, Error>>;

    /// Adds the grant's own `Debug` fields: settings, and `"<redacted>"` for its secret.
    fn debug_fields(built: &Self::Built, d: &mut fmt::DebugStruct<'_, '_>);

    /// What `Display` calls the credential, e.g. `client secret credential`.
    fn what(built: &Self::Built) -> Cow<'_, str>;
}

impl<G: Grant> TokenCredential for ConfidentialCredential<G> {
    fn get_token<'a>(
        &'a self,
        request: &'a TokenRequest,
    ) -> BoxFuture<'a, Result<TokenResponse, Error>> {
        G::fetch(self, request)
    }

    /// Kind, token endpoint origin, tenant and client id.
    fn identity(&self) -> CredentialIdentity {
        let core = &self.core;
        CredentialIdentity::new(core.kind, core.endpoint.origin())
            .with_source(core.source)
            .with_tenant(&core.tenant_id)
            .with_client_id(&core.client_id)
    }
}

impl<G: Grant> fmt::Debug for ConfidentialCredential<G> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let core = &self.core;
        let regional = core.endpoint.regional.as_ref().map(Url::as_str);
        let mut d = f.debug_struct(G::NAME);
        d.field("tenant_id", &core.tenant_id)
            .field("client_id", &core.client_id)
            .field("token_url", &core.endpoint.global.as_str())
            .field("regional_token_url", &regional)
            .field("timeout", &core.timeout);
        G::debug_fields(&self.grant, &mut d);
        d.finish_non_exhaustive()
    }
}

impl<G: Grant> fmt::Display for ConfidentialCredential<G> {
    /// `"{what} for client {id} at {token URL}"`, e.g. `client secret credential for client
    /// 00000000-… at https://login.microsoftonline.com/contoso/oauth2/v2.0/token`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} for client {} at {}",
            G::what(&self.grant),
            self.core.client_id,
            self.core.endpoint.global
        )
    }
}

/// Builds a confidential-client credential: the options all of them share (authority host,
/// token URL, region, timeout, HTTP client) and the grant `G` of one kind.
///
/// [`ClientSecretCredentialBuilder`](crate::credential::client_secret::ClientSecretCredentialBuilder),
/// [`ClientCertificateCredentialBuilder`](crate::credential::client_certificate::ClientCertificateCredentialBuilder),
/// [`WorkloadIdentityCredentialBuilder`](crate::credential::workload_identity::WorkloadIdentityCredentialBuilder) and
/// [`RefreshTokenCredentialBuilder`](crate::RefreshTokenCredentialBuilder) are this type with
/// their grant: the setters below are theirs, and each adds its own grant's setters and `build`.
#[must_use]
pub struct CredentialBuilder<G> {
    pub(crate) options: ClientOptions,
    pub(crate) grant: G,
}

impl<G> CredentialBuilder<G> {
    pub(crate) fn new(options: ClientOptions, grant: G) -> Self {
        CredentialBuilder { options, grant }
    }

    /// The authority host (default
    /// [`AuthorityHost::AZURE_PUBLIC`](crate::AuthorityHost::AZURE_PUBLIC)).
    pub fn authority_host(mut self, host: crate::AuthorityHost) -> Self {
        self.options.authority = host;
        self
    }

    /// Posts to this token URL instead of `{authority}/{tenant}/oauth2/v2.0/token`: any
    /// standards-compliant OAuth 2.0 token endpoint (https, or plain http to loopback). A client
    /// assertion's `aud` is this URL.
    pub fn token_url(mut self, url: impl Into<String>) -> Self {
        self.options.token_url = Some(url.into());
        self
    }

    /// The per-attempt timeout of a token request, covering connect, headers and body
    /// (default 10 s).
    pub fn timeout(mut self, timeout: std::time::Duration) -> Self {
        self.options.timeout = timeout;
        self
    }

    /// The HTTP client (default: a client that follows no redirects; one that follows them may
    /// re-post the credential to wherever a `307` points).
    pub fn http_client(mut self, client: reqwest::Client) -> Self {
        self.options.client = Some(client);
        self
    }
}

impl<G: RegionalGrant> CredentialBuilder<G> {
    /// Tries the regional endpoint of `region` (e.g. `westus2`) first, and the global one if it
    /// fails with a transport error, a timeout or a 5xx, within the same `get_token` call (so
    /// one call may take up to twice the [`timeout`](Self::timeout)). A region that failed is
    /// skipped for the wait policy's back-off (rule R9). `from_env` reads it from
    /// `AZURE_REGIONAL_AUTHORITY_NAME`. `TryAutoDetect` detects the region as MSAL does:
    /// `REGION_NAME` if set, else the VM's location from IMDS, asked once on the first token
    /// request (2 s timeout); if neither answers, the global endpoint is used.
    pub fn region(mut self, region: impl Into<String>) -> Self {
        self.options.region = Some(region.into());
        self
    }
}

impl<G: fmt::Debug> fmt::Debug for CredentialBuilder<G> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The grants hold their secrets in `secrecy` types, whose `Debug` shows no secret.
        f.debug_struct("CredentialBuilder")
            .field("options", &self.options)
            .field("grant", &self.grant)
            .finish()
    }
}

/// A grant whose token endpoint may be regional: all but the refresh token's (sealed).
pub trait RegionalGrant: sealed::Sealed {}

pub(crate) mod sealed {
    /// Only this crate's grants.
    pub trait Sealed {}
}

fn form_urlencode(s: &str) -> String {
    form_urlencoded::byte_serialize(s.as_bytes()).collect()
}

/// A variable lookup over `pairs`, for tests.
#[cfg(test)]
pub(crate) fn test_env(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
    let map: std::collections::HashMap<String, String> = pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect();
    move |k| map.get(k).cloned()
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    #[test]
    fn c1_basic_auth_form_urlencodes_id_and_secret() {
        assert_eq!(form_urlencode("a b+c/é:%"), "a+b%2Bc%2F%C3%A9%3A%25");
    }

    #[test]
    fn c6_regional_authority_name_is_read_as_msal_reads_it() {
        let read = |pairs: &[(&str, &str)]| {
            let pairs: Vec<(String, String)> = pairs
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect();
            regional_authority_from_env(&move |k| {
                pairs.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone())
            })
        };
        assert_eq!(read(&[]), None);
        assert_eq!(
            read(&[("AZURE_REGIONAL_AUTHORITY_NAME", "westus2")]).as_deref(),
            Some("westus2")
        );
        assert_eq!(
            read(&[
                ("AZURE_REGIONAL_AUTHORITY_NAME", "TryAutoDetect"),
                ("REGION_NAME", "West US 2")
            ])
            .as_deref(),
            Some("westus2")
        );
        assert_eq!(
            read(&[
                ("AZURE_REGIONAL_AUTHORITY_NAME", "tryautodetect"),
                ("REGION_NAME", "eastus")
            ])
            .as_deref(),
            Some("eastus")
        );
        // auto-detection without REGION_NAME: left to IMDS, on first use
        assert_eq!(
            read(&[("AZURE_REGIONAL_AUTHORITY_NAME", "TryAutoDetect")]).as_deref(),
            Some(TRY_AUTO_DETECT)
        );
        // REGION_NAME alone does not turn regional endpoints on
        assert_eq!(read(&[("REGION_NAME", "eastus")]), None);
    }
}
