//! [`ManagedIdentityCredential`]: tokens from the managed identity of the Azure host the
//! process runs on (rule C3).
//!
//! Six sources, detected by [`ManagedIdentityCredential::from_env`] in MSAL's order; each lives
//! in its own file with its detection, validation and request shape (`imds.rs`,
//! `app_service.rs`, `service_fabric.rs`, `azure_ml.rs`, `cloud_shell.rs`, `azure_arc.rs`):
//!
//! | source | detected by | request |
//! | --- | --- | --- |
//! | Service Fabric | `IDENTITY_ENDPOINT` + `IDENTITY_HEADER` + `IDENTITY_SERVER_THUMBPRINT` | GET, `api-version=2019-07-01-preview`, header `secret`; the endpoint's certificate must have the SHA-1 thumbprint given |
//! | App Service, Functions, Container Apps | `IDENTITY_ENDPOINT` + `IDENTITY_HEADER` | GET, `api-version=2019-08-01`, header `X-IDENTITY-HEADER`; `client_id` / `object_id` / `mi_res_id` |
//! | Azure Machine Learning | `MSI_ENDPOINT` + `MSI_SECRET` | GET, `api-version=2017-09-01`, header `secret`; `clientid` (user-assigned, else `DEFAULT_IDENTITY_CLIENT_ID`) |
//! | Cloud Shell | `MSI_ENDPOINT` | POST, form `resource` |
//! | Azure Arc | `IDENTITY_ENDPOINT` + `IMDS_ENDPOINT`, or the agent's `himds` binary | GET, `api-version=2019-11-01`; answers a `401 WWW-Authenticate: Basic realm=<key file>` challenge with the key file's contents |
//! | IMDS (VMs, VM scale sets, AKS) | otherwise | GET `http://169.254.169.254/metadata/identity/oauth2/token`, `api-version=2018-02-01`, header `Metadata: true`; `client_id` / `object_id` / `msi_res_id`; base overridable by `AZURE_POD_IDENTITY_AUTHORITY_HOST` |
//!
//! ```no_run
//! use resilient_auth::{ManagedIdentityCredential, TokenCache, UserAssignedId};
//!
//! # fn run() -> Result<(), resilient_auth::Error> {
//! // the source this host offers, system-assigned identity
//! let tokens = TokenCache::new(
//!     ManagedIdentityCredential::from_env()?,
//!     ["https://vault.azure.net/.default"],
//! );
//! // a user-assigned identity on a VM
//! let credential = ManagedIdentityCredential::imds()
//!     .user_assigned(UserAssignedId::ClientId("11111111-2222-3333-4444-555555555555".into()))
//!     .build()?;
//! # Ok(()) }
//! ```
//!
//! # Scopes
//!
//! Managed identity endpoints take a *resource*, not scopes: the one scope of a request becomes
//! the resource with `/.default` stripped (`https://vault.azure.net/.default` →
//! `resource=https://vault.azure.net`). More than one scope is a configuration error. Claims
//! from a CAE challenge are not sent (the endpoints take none); the cache still fetches a fresh
//! token.
//!
//! # Retries
//!
//! Every source, IMDS included, makes one attempt per `get_token` (plus Azure Arc's challenge
//! answer). Retries belong to the [`TokenCache`](crate::TokenCache) in front, under the crate's
//! one wait policy (rules R9, T13): after a 5xx, a 404/410 (IMDS not ready or upgrading), a
//! timeout or a connection error the next attempt comes at least 5 s later, then exponentially —
//! capped at 10 s while the cache has no token to serve, so a daemon recovers within 10 s of the
//! endpoint's return — and never sooner than a `Retry-After`. There is no inner loop multiplying
//! the attempts (MSAL's IMDS loop retries after 1 s, against the guidance's 5 s floor); an IMDS
//! upgrade (410, ~70 s) is ridden out by the cache's retries.
//!
//! # Security
//!
//! `IDENTITY_HEADER`, `MSI_SECRET`, the Azure Arc key and the tokens never appear in `Debug`,
//! `Display`, errors or logs (rule X1); the header values are marked sensitive. Endpoints must use
//! https, or plain http to a loopback or link-local (IMDS) address (rule X2). The HTTP client
//! follows no redirects and uses no proxy: a proxy would leak the identity headers, and IMDS
//! and the local endpoints are not reachable through one.
#![cfg(feature = "reqwest")]
#![cfg_attr(docsrs, doc(cfg(feature = "reqwest")))]

mod app_service;
mod azure_arc;
mod azure_ml;
mod cloud_shell;
#[cfg(feature = "fuzzing")]
pub(crate) mod fuzz;
mod imds;
mod response;
mod service_fabric;
mod source;

// The Azure Arc challenge helpers under their older name (tests and the fuzz targets).
#[allow(unused_imports)]
use self::azure_arc as arc;
// the testkit's fake IMDS and the fuzz targets read error bodies as the credential does
use self::response::map_response;
#[allow(unused_imports)]
pub(crate) use self::response::{mi_error, resource_of};
use self::source::{
    mi_client, parse_endpoint, secret_header, Build, Call, Source, METADATA, SECRET,
    X_IDENTITY_HEADER,
};

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use http::HeaderValue;
use reqwest::Url;

use super::confidential::{optional_env, process_env, Env};
use super::http::{send_raw, RawResponse, DEFAULT_TIMEOUT};
use futures_util::future::BoxFuture;

use super::{CredentialIdentity, CredentialKind, TokenCredential, TokenRequest};
use crate::{Error, TokenResponse};

#[cfg(test)]
use self::azure_arc::ARC_DEFAULT_ENDPOINT;
#[cfg(test)]
use http::{HeaderMap, Method, StatusCode};
#[cfg(test)]
use std::path::Path;

/// Where a managed identity's tokens come from. See the [module docs](self) for how each is
/// detected and called.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ManagedIdentitySource {
    /// The Azure Instance Metadata Service (VMs, VM scale sets, AKS).
    Imds,
    /// App Service, Azure Functions and Container Apps (`api-version=2019-08-01`).
    AppService,
    /// Service Fabric.
    ServiceFabric,
    /// Azure Machine Learning.
    AzureMl,
    /// Azure Cloud Shell.
    CloudShell,
    /// Azure Arc-enabled servers.
    AzureArc,
}

impl ManagedIdentitySource {
    /// The credential kind reported by [`TokenCredential::identity`], e.g.
    /// `managed_identity/imds`.
    pub fn kind(self) -> &'static str {
        self.describe().0
    }

    fn name(self) -> &'static str {
        self.describe().1
    }

    /// What in the environment selects this source, for a chain's reason.
    pub(crate) fn detected_by(self) -> &'static str {
        self.describe().2
    }

    /// The kind string, the display name and what selects the source.
    fn describe(self) -> (&'static str, &'static str, &'static str) {
        use ManagedIdentitySource as S;
        match self {
            S::Imds => (
                "managed_identity/imds",
                "IMDS",
                "no other managed identity source's variables are set, so IMDS (VMs, VM scale \
                 sets, AKS)",
            ),
            S::AppService => (
                "managed_identity/app_service",
                "App Service",
                "IDENTITY_ENDPOINT and IDENTITY_HEADER are set (App Service, Functions, \
                 Container Apps)",
            ),
            S::ServiceFabric => (
                "managed_identity/service_fabric",
                "Service Fabric",
                "IDENTITY_ENDPOINT, IDENTITY_HEADER and IDENTITY_SERVER_THUMBPRINT are set",
            ),
            S::AzureMl => (
                "managed_identity/azure_ml",
                "Azure Machine Learning",
                "MSI_ENDPOINT and MSI_SECRET are set (Azure Machine Learning)",
            ),
            S::CloudShell => (
                "managed_identity/cloud_shell",
                "Cloud Shell",
                "MSI_ENDPOINT is set without MSI_SECRET (Cloud Shell)",
            ),
            S::AzureArc => (
                "managed_identity/azure_arc",
                "Azure Arc",
                "IDENTITY_ENDPOINT and IMDS_ENDPOINT are set, or the Azure Arc agent is installed",
            ),
        }
    }
}

impl fmt::Display for ManagedIdentitySource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Which user-assigned identity to use. Without one, a credential uses the host's
/// system-assigned identity.
///
/// IMDS and App Service take all three forms; Azure Machine Learning takes a client id only;
/// Service Fabric, Cloud Shell and Azure Arc take none (their identity is fixed by the host).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum UserAssignedId {
    /// The identity's client (application) id.
    ClientId(String),
    /// The identity's object (principal) id.
    ObjectId(String),
    /// The identity's Azure resource id,
    /// `/subscriptions/…/resourceGroups/…/providers/Microsoft.ManagedIdentity/userAssignedIdentities/…`.
    ResourceId(String),
}

impl UserAssignedId {
    fn value(&self) -> &str {
        match self {
            UserAssignedId::ClientId(v)
            | UserAssignedId::ObjectId(v)
            | UserAssignedId::ResourceId(v) => v,
        }
    }
}

/// A token source for the managed identity of the Azure host this process runs on (rule C3).
///
/// Build one with [`from_env`](Self::from_env) (detects the source),
/// [`builder_from_env`](Self::builder_from_env) (detects, then lets you pick a user-assigned
/// identity) or one of the explicit constructors ([`imds`](Self::imds),
/// [`app_service`](Self::app_service), [`service_fabric`](Self::service_fabric),
/// [`azure_ml`](Self::azure_ml), [`cloud_shell`](Self::cloud_shell),
/// [`azure_arc`](Self::azure_arc)). Put it behind a [`TokenCache`](crate::TokenCache), which owns
/// refresh (at half-life, rule T2), retries and the throttle gate. See the [module docs](self)
/// for the wire details.
pub struct ManagedIdentityCredential {
    client: reqwest::Client,
    kind: ManagedIdentitySource,
    source: Box<dyn Source>,
    url: Url,
    user_assigned: Option<UserAssignedId>,
    timeout: Duration,
}

impl ManagedIdentityCredential {
    /// Detects the source from the environment (see the [module docs](self)) and builds a
    /// credential for the system-assigned identity.
    ///
    /// # Errors
    /// [`Error::Config`] for an invalid endpoint, header or thumbprint, or an Azure Machine
    /// Learning host without `DEFAULT_IDENTITY_CLIENT_ID`.
    pub fn from_env() -> Result<Self, Error> {
        Self::builder_from_env().build()
    }

    /// Detects the source from the environment, as [`from_env`](Self::from_env), and returns the
    /// builder so that a user-assigned identity, a timeout or a client can be set.
    pub fn builder_from_env() -> ManagedIdentityCredentialBuilder {
        Self::detect(&process_env, &Platform::current(&process_env))
    }

    /// The detection behind [`builder_from_env`](Self::builder_from_env), over any variable
    /// lookup and Azure Arc agent paths (tests pass a map and temporary paths): the first
    /// source whose variables are set, in MSAL's order; IMDS if none.
    pub(crate) fn detect(env: Env<'_>, platform: &Platform) -> ManagedIdentityCredentialBuilder {
        let mut builder = service_fabric::detect(env)
            .or_else(|| app_service::detect(env))
            .or_else(|| azure_ml::detect(env))
            .or_else(|| cloud_shell::detect(env))
            .or_else(|| azure_arc::detect(env, platform))
            .unwrap_or_else(|| imds::detect(env));
        builder.arc_tokens_dir = platform.tokens_dir.clone();
        builder
    }

    /// IMDS at `http://169.254.169.254` (change it with
    /// [`endpoint`](ManagedIdentityCredentialBuilder::endpoint)).
    pub fn imds() -> ManagedIdentityCredentialBuilder {
        imds::builder()
    }

    /// App Service / Azure Functions / Container Apps: the values of `IDENTITY_ENDPOINT` and
    /// `IDENTITY_HEADER`.
    pub fn app_service(
        endpoint: impl Into<String>,
        identity_header: impl Into<String>,
    ) -> ManagedIdentityCredentialBuilder {
        app_service::builder(endpoint.into(), identity_header.into())
    }

    /// Service Fabric: the values of `IDENTITY_ENDPOINT`, `IDENTITY_HEADER` and
    /// `IDENTITY_SERVER_THUMBPRINT` (the hex SHA-1 thumbprint of the endpoint's certificate,
    /// compared case-insensitively; no other certificate is trusted).
    pub fn service_fabric(
        endpoint: impl Into<String>,
        identity_header: impl Into<String>,
        server_thumbprint: impl Into<String>,
    ) -> ManagedIdentityCredentialBuilder {
        service_fabric::builder(
            endpoint.into(),
            identity_header.into(),
            server_thumbprint.into(),
        )
    }

    /// Azure Machine Learning: the values of `MSI_ENDPOINT`, `MSI_SECRET` and
    /// `DEFAULT_IDENTITY_CLIENT_ID` (the client id of the system-assigned identity; may be empty
    /// if a user-assigned client id is set).
    pub fn azure_ml(
        endpoint: impl Into<String>,
        secret: impl Into<String>,
        default_client_id: impl Into<String>,
    ) -> ManagedIdentityCredentialBuilder {
        azure_ml::builder(endpoint.into(), secret.into(), default_client_id.into())
    }

    /// Cloud Shell: the value of `MSI_ENDPOINT`.
    pub fn cloud_shell(endpoint: impl Into<String>) -> ManagedIdentityCredentialBuilder {
        cloud_shell::builder(endpoint.into())
    }

    /// Azure Arc: the agent's endpoint (`IDENTITY_ENDPOINT`, usually
    /// `http://localhost:40342/metadata/identity/oauth2/token`).
    pub fn azure_arc(endpoint: impl Into<String>) -> ManagedIdentityCredentialBuilder {
        azure_arc::builder(endpoint.into())
    }

    /// The source this credential calls.
    pub fn source(&self) -> ManagedIdentitySource {
        self.kind
    }

    /// The user-assigned identity, if one was chosen.
    pub fn user_assigned(&self) -> Option<&UserAssignedId> {
        self.user_assigned.as_ref()
    }

    fn kind(&self) -> &'static str {
        self.source().kind()
    }

    /// Builds one request for `resource`; `authorization` answers a challenge (Azure Arc).
    fn request(
        &self,
        resource: &str,
        authorization: Option<&HeaderValue>,
    ) -> Result<reqwest::Request, Error> {
        let call = Call {
            client: &self.client,
            url: &self.url,
            resource,
            user_assigned: self.user_assigned.as_ref(),
        };
        let mut builder = self
            .source
            .request(&call)?
            .header(http::header::ACCEPT, "application/json");
        if let Some(value) = authorization {
            builder = builder.header(http::header::AUTHORIZATION, value.clone());
        }
        builder
            .build()
            .map_err(|_| Error::config("could not build the managed identity request"))
    }

    /// One request, its raw response.
    async fn send(
        &self,
        resource: &str,
        authorization: Option<&HeaderValue>,
    ) -> Result<RawResponse, Error> {
        let request = self.request(resource, authorization)?;
        send_raw(&self.client, request, self.timeout, self.kind()).await
    }
}

impl TokenCredential for ManagedIdentityCredential {
    /// One request (and Azure Arc's challenge answer); retries are the cache's.
    fn get_token<'a>(
        &'a self,
        request: &'a TokenRequest,
    ) -> BoxFuture<'a, Result<TokenResponse, Error>> {
        Box::pin(async move {
            let resource = resource_of(request)?;
            if request.claims.is_some() {
                tracing::debug!(
                    kind = self.kind(),
                    "managed identity endpoints take no claims; fetching a fresh token without"
                );
            }
            let first = self.send(&resource, None).await?;
            match self.source.answer(&first)? {
                Some(authorization) => {
                    map_response(self.send(&resource, Some(&authorization)).await?)
                }
                None => map_response(first),
            }
        })
    }

    fn identity(&self) -> CredentialIdentity {
        let identity =
            CredentialIdentity::new(self.kind(), self.url.origin().ascii_serialization())
                .with_source(CredentialKind::ManagedIdentity);
        match (&self.user_assigned, self.source.client_id()) {
            (Some(id), _) => identity.with_client_id(id.value()),
            (None, Some(id)) => identity.with_client_id(id),
            (None, None) => identity,
        }
    }
}

impl fmt::Debug for ManagedIdentityCredential {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut d = f.debug_struct("ManagedIdentityCredential");
        d.field("source", &self.source())
            .field("endpoint", &self.url.as_str())
            .field("user_assigned", &self.user_assigned);
        self.source.debug_fields(&mut d);
        d.field("timeout", &self.timeout).finish_non_exhaustive()
    }
}

impl fmt::Display for ManagedIdentityCredential {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "managed identity credential ({}) at {}",
            self.source(),
            self.url.origin().ascii_serialization()
        )?;
        if let Some(id) = &self.user_assigned {
            write!(f, " for user-assigned identity {}", id.value())?;
        }
        Ok(())
    }
}

/// Builds a [`ManagedIdentityCredential`]; start from one of its constructors.
#[must_use]
pub struct ManagedIdentityCredentialBuilder {
    kind: ManagedIdentitySource,
    source: Box<dyn Source>,
    endpoint: String,
    user_assigned: Option<UserAssignedId>,
    timeout: Duration,
    client: Option<reqwest::Client>,
    arc_tokens_dir: PathBuf,
}

impl ManagedIdentityCredentialBuilder {
    fn new(kind: ManagedIdentitySource, source: impl Source, endpoint: String) -> Self {
        ManagedIdentityCredentialBuilder {
            kind,
            source: Box::new(source),
            endpoint,
            user_assigned: None,
            timeout: DEFAULT_TIMEOUT,
            client: None,
            arc_tokens_dir: azure_arc::default_tokens_dir(&process_env),
        }
    }

    /// The source this builder will call.
    pub fn source(&self) -> ManagedIdentitySource {
        self.kind
    }

    /// Uses this user-assigned identity instead of the system-assigned one.
    pub fn user_assigned(mut self, id: UserAssignedId) -> Self {
        self.user_assigned = Some(id);
        self
    }

    /// Replaces the endpoint: for IMDS the base URL the token path is appended to (default
    /// `http://169.254.169.254`), for the other sources the token endpoint URL. https, or plain
    /// http to a loopback or link-local address.
    pub fn endpoint(mut self, endpoint: impl Into<String>) -> Self {
        self.endpoint = endpoint.into();
        self
    }

    /// The per-attempt timeout (default 10 s).
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// The HTTP client (default: no redirects, no proxy). Not for Service Fabric, whose client
    /// trusts only the pinned certificate and is always built here.
    pub fn http_client(mut self, client: reqwest::Client) -> Self {
        self.client = Some(client);
        self
    }

    /// Azure Arc only: the directory the challenge's key file must be in (default
    /// `/var/opt/azcmagent/tokens` on Linux, `%ProgramData%\AzureConnectedMachineAgent\Tokens`
    /// on Windows).
    pub fn arc_tokens_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.arc_tokens_dir = dir.into();
        self
    }

    /// Validates the configuration and builds the credential.
    ///
    /// # Errors
    /// [`Error::Config`] for an endpoint that is not a URL or uses plain http to a host that is
    /// neither loopback nor link-local, an empty or invalid identity header or secret, a
    /// thumbprint that is not 40 hex digits, a user-assigned identity the source does not
    /// support (or an empty one), Azure Machine Learning without a client id, a zero timeout,
    /// an HTTP client given for Service Fabric, or an HTTP client that cannot be built.
    pub fn build(mut self) -> Result<ManagedIdentityCredential, Error> {
        if self.timeout.is_zero() {
            return Err(Error::config("timeout must not be zero"));
        }
        if let Some(id) = &self.user_assigned {
            if id.value().trim().is_empty() {
                return Err(Error::config("user-assigned identity id is empty"));
            }
        }
        let url = self.source.url(&self.endpoint, self.kind)?;
        self.source.validate(Build {
            source: self.kind,
            user_assigned: self.user_assigned.as_ref(),
            client: &mut self.client,
            arc_tokens_dir: &self.arc_tokens_dir,
        })?;
        let client = match self.client {
            Some(c) => c,
            None => mi_client()?,
        };
        Ok(ManagedIdentityCredential {
            client,
            kind: self.kind,
            source: self.source,
            url,
            user_assigned: self.user_assigned,
            timeout: self.timeout,
        })
    }
}

impl fmt::Debug for ManagedIdentityCredentialBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut d = f.debug_struct("ManagedIdentityCredentialBuilder");
        d.field("source", &self.source())
            .field("endpoint", &self.endpoint);
        self.source.debug_fields(&mut d);
        d.field("user_assigned", &self.user_assigned)
            .field("timeout", &self.timeout)
            .field("arc_tokens_dir", &self.arc_tokens_dir)
            .finish_non_exhaustive()
    }
}

/// Where the Azure Arc agent lives on this machine (injectable for tests).
#[derive(Debug, Clone)]
pub(crate) struct Platform {
    /// The agent's `himds` binary: its presence reveals the agent.
    pub(crate) himds: PathBuf,
    /// The directory the challenge's key files are in.
    pub(crate) tokens_dir: PathBuf,
}

impl Platform {
    pub(crate) fn current(env: Env<'_>) -> Platform {
        Platform {
            himds: azure_arc::default_himds(env),
            tokens_dir: azure_arc::default_tokens_dir(env),
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests;
