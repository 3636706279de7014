//! [`ManagedIdentityCredential`]: tokens from the managed identity of the Azure host the
//! process runs on (rule C3).
//!
//! Six sources, detected by [`ManagedIdentityCredential::from_env`] in MSAL's order:
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

mod arc;
mod service_fabric;

use std::fmt;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use futures_util::future::BoxFuture;
use http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode};
use reqwest::Url;
use secrecy::{ExposeSecret, SecretString};

use super::client_secret::optional_env;
use super::http::{identity_provider_error, is_loopback, send_raw, RawResponse, DEFAULT_TIMEOUT};
use super::{CredentialIdentity, TokenCredential, TokenRequest};
use crate::token::parse_token_response;
use crate::{Error, TokenResponse};

/// The IMDS base URL.
const IMDS_BASE: &str = "http://169.254.169.254";
/// The path of the IMDS token endpoint under its base.
const IMDS_PATH: &str = "/metadata/identity/oauth2/token";
/// The Azure Arc agent's endpoint when only the `himds` binary revealed the agent.
const ARC_DEFAULT_ENDPOINT: &str = "http://127.0.0.1:40342/metadata/identity/oauth2/token";

const IMDS_API: &str = "2018-02-01";
const APP_SERVICE_API: &str = "2019-08-01";
const SERVICE_FABRIC_API: &str = "2019-07-01-preview";
const AZURE_ML_API: &str = "2017-09-01";
const ARC_API: &str = "2019-11-01";

const METADATA: HeaderName = HeaderName::from_static("metadata");
const X_IDENTITY_HEADER: HeaderName = HeaderName::from_static("x-identity-header");
const SECRET: HeaderName = HeaderName::from_static("secret");

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
        match self {
            ManagedIdentitySource::Imds => "managed_identity/imds",
            ManagedIdentitySource::AppService => "managed_identity/app_service",
            ManagedIdentitySource::ServiceFabric => "managed_identity/service_fabric",
            ManagedIdentitySource::AzureMl => "managed_identity/azure_ml",
            ManagedIdentitySource::CloudShell => "managed_identity/cloud_shell",
            ManagedIdentitySource::AzureArc => "managed_identity/azure_arc",
        }
    }

    fn name(self) -> &'static str {
        match self {
            ManagedIdentitySource::Imds => "IMDS",
            ManagedIdentitySource::AppService => "App Service",
            ManagedIdentitySource::ServiceFabric => "Service Fabric",
            ManagedIdentitySource::AzureMl => "Azure Machine Learning",
            ManagedIdentitySource::CloudShell => "Cloud Shell",
            ManagedIdentitySource::AzureArc => "Azure Arc",
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
    source: Source,
    url: Url,
    user_assigned: Option<UserAssignedId>,
    timeout: Duration,
}

/// A validated source with its secrets (as sensitive header values).
enum Source {
    Imds,
    AppService {
        header: HeaderValue,
    },
    ServiceFabric {
        header: HeaderValue,
    },
    AzureMl {
        secret: HeaderValue,
        client_id: String,
    },
    CloudShell,
    AzureArc {
        tokens_dir: PathBuf,
    },
}

impl Source {
    fn kind(&self) -> ManagedIdentitySource {
        match self {
            Source::Imds => ManagedIdentitySource::Imds,
            Source::AppService { .. } => ManagedIdentitySource::AppService,
            Source::ServiceFabric { .. } => ManagedIdentitySource::ServiceFabric,
            Source::AzureMl { .. } => ManagedIdentitySource::AzureMl,
            Source::CloudShell => ManagedIdentitySource::CloudShell,
            Source::AzureArc { .. } => ManagedIdentitySource::AzureArc,
        }
    }
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
        let env = |name: &str| std::env::var(name).ok();
        Self::detect(&env, &Platform::current(&env))
    }

    /// The detection behind [`builder_from_env`](Self::builder_from_env), over any variable
    /// lookup and Azure Arc agent paths (tests pass a map and temporary paths).
    pub(crate) fn detect(
        env: &dyn Fn(&str) -> Option<String>,
        platform: &Platform,
    ) -> ManagedIdentityCredentialBuilder {
        let identity_endpoint = optional_env(env, "IDENTITY_ENDPOINT");
        let identity_header = optional_env(env, "IDENTITY_HEADER");
        let thumbprint = optional_env(env, "IDENTITY_SERVER_THUMBPRINT");
        let msi_endpoint = optional_env(env, "MSI_ENDPOINT");
        let msi_secret = optional_env(env, "MSI_SECRET");
        let imds_endpoint = optional_env(env, "IMDS_ENDPOINT");

        let mut builder = match (identity_endpoint, identity_header, msi_endpoint, msi_secret) {
            (Some(endpoint), Some(header), _, _) => match thumbprint {
                Some(thumbprint) => Self::service_fabric(endpoint, header, thumbprint),
                None => Self::app_service(endpoint, header),
            },
            (_, _, Some(endpoint), Some(secret)) => Self::azure_ml(
                endpoint,
                secret,
                optional_env(env, "DEFAULT_IDENTITY_CLIENT_ID").unwrap_or_default(),
            ),
            (_, _, Some(endpoint), None) => Self::cloud_shell(endpoint),
            (identity_endpoint, _, None, _) => {
                let arc = match (&identity_endpoint, &imds_endpoint) {
                    (Some(endpoint), Some(_)) => Some(endpoint.clone()),
                    _ if platform.himds.is_file() => {
                        Some(identity_endpoint.unwrap_or_else(|| ARC_DEFAULT_ENDPOINT.to_owned()))
                    }
                    _ => None,
                };
                match arc {
                    Some(endpoint) => Self::azure_arc(endpoint),
                    None => {
                        let mut b = Self::imds();
                        if let Some(base) = optional_env(env, "AZURE_POD_IDENTITY_AUTHORITY_HOST") {
                            b = b.endpoint(base);
                        }
                        b
                    }
                }
            }
        };
        builder.arc_tokens_dir = platform.tokens_dir.clone();
        builder
    }

    /// IMDS at `http://169.254.169.254` (change it with
    /// [`endpoint`](ManagedIdentityCredentialBuilder::endpoint)).
    pub fn imds() -> ManagedIdentityCredentialBuilder {
        ManagedIdentityCredentialBuilder::new(Pending::Imds {
            base: IMDS_BASE.to_owned(),
        })
    }

    /// App Service / Azure Functions / Container Apps: the values of `IDENTITY_ENDPOINT` and
    /// `IDENTITY_HEADER`.
    pub fn app_service(
        endpoint: impl Into<String>,
        identity_header: impl Into<String>,
    ) -> ManagedIdentityCredentialBuilder {
        ManagedIdentityCredentialBuilder::new(Pending::AppService {
            endpoint: endpoint.into(),
            header: SecretString::from(identity_header.into()),
        })
    }

    /// Service Fabric: the values of `IDENTITY_ENDPOINT`, `IDENTITY_HEADER` and
    /// `IDENTITY_SERVER_THUMBPRINT` (the hex SHA-1 thumbprint of the endpoint's certificate,
    /// compared case-insensitively; no other certificate is trusted).
    pub fn service_fabric(
        endpoint: impl Into<String>,
        identity_header: impl Into<String>,
        server_thumbprint: impl Into<String>,
    ) -> ManagedIdentityCredentialBuilder {
        ManagedIdentityCredentialBuilder::new(Pending::ServiceFabric {
            endpoint: endpoint.into(),
            header: SecretString::from(identity_header.into()),
            thumbprint: server_thumbprint.into(),
        })
    }

    /// Azure Machine Learning: the values of `MSI_ENDPOINT`, `MSI_SECRET` and
    /// `DEFAULT_IDENTITY_CLIENT_ID` (the client id of the system-assigned identity; may be empty
    /// if a user-assigned client id is set).
    pub fn azure_ml(
        endpoint: impl Into<String>,
        secret: impl Into<String>,
        default_client_id: impl Into<String>,
    ) -> ManagedIdentityCredentialBuilder {
        let default_client_id = default_client_id.into();
        ManagedIdentityCredentialBuilder::new(Pending::AzureMl {
            endpoint: endpoint.into(),
            secret: SecretString::from(secret.into()),
            default_client_id: Some(default_client_id).filter(|s| !s.trim().is_empty()),
        })
    }

    /// Cloud Shell: the value of `MSI_ENDPOINT`.
    pub fn cloud_shell(endpoint: impl Into<String>) -> ManagedIdentityCredentialBuilder {
        ManagedIdentityCredentialBuilder::new(Pending::CloudShell {
            endpoint: endpoint.into(),
        })
    }

    /// Azure Arc: the agent's endpoint (`IDENTITY_ENDPOINT`, usually
    /// `http://localhost:40342/metadata/identity/oauth2/token`).
    pub fn azure_arc(endpoint: impl Into<String>) -> ManagedIdentityCredentialBuilder {
        ManagedIdentityCredentialBuilder::new(Pending::AzureArc {
            endpoint: endpoint.into(),
        })
    }

    /// The source this credential calls.
    pub fn source(&self) -> ManagedIdentitySource {
        self.source.kind()
    }

    /// The user-assigned identity, if one was chosen.
    pub fn user_assigned(&self) -> Option<&UserAssignedId> {
        self.user_assigned.as_ref()
    }

    fn kind(&self) -> &'static str {
        self.source.kind().kind()
    }

    /// Builds one request for `resource`; `authorization` is the Azure Arc challenge answer.
    fn request(
        &self,
        resource: &str,
        authorization: Option<&HeaderValue>,
    ) -> Result<reqwest::Request, Error> {
        let mut url = self.url.clone();
        let mut headers = HeaderMap::new();
        let mut query: Vec<(&str, &str)> = Vec::new();
        let mut method = Method::GET;
        let mut form = None;
        let user_assigned = self.user_assigned.as_ref();
        match &self.source {
            Source::Imds => {
                headers.insert(METADATA, HeaderValue::from_static("true"));
                query.push(("api-version", IMDS_API));
                query.push(("resource", resource));
                if let Some(id) = user_assigned {
                    query.push((imds_id_param(id), id.value()));
                }
            }
            Source::AppService { header } => {
                headers.insert(X_IDENTITY_HEADER, header.clone());
                query.push(("api-version", APP_SERVICE_API));
                query.push(("resource", resource));
                if let Some(id) = user_assigned {
                    let name = match id {
                        UserAssignedId::ClientId(_) => "client_id",
                        UserAssignedId::ObjectId(_) => "object_id",
                        UserAssignedId::ResourceId(_) => "mi_res_id",
                    };
                    query.push((name, id.value()));
                }
            }
            Source::ServiceFabric { header } => {
                headers.insert(SECRET, header.clone());
                query.push(("api-version", SERVICE_FABRIC_API));
                query.push(("resource", resource));
            }
            Source::AzureMl { secret, client_id } => {
                headers.insert(METADATA, HeaderValue::from_static("true"));
                headers.insert(SECRET, secret.clone());
                query.push(("api-version", AZURE_ML_API));
                query.push(("resource", resource));
                query.push(("clientid", client_id));
            }
            Source::CloudShell => {
                headers.insert(METADATA, HeaderValue::from_static("true"));
                method = Method::POST;
                form = Some([("resource", resource)]);
            }
            Source::AzureArc { .. } => {
                headers.insert(METADATA, HeaderValue::from_static("true"));
                query.push(("api-version", ARC_API));
                query.push(("resource", resource));
                if let Some(value) = authorization {
                    headers.insert(http::header::AUTHORIZATION, value.clone());
                }
            }
        }
        if !query.is_empty() {
            url.query_pairs_mut().extend_pairs(query);
        }
        headers.insert(
            http::header::ACCEPT,
            HeaderValue::from_static("application/json"),
        );
        let mut builder = self.client.request(method, url).headers(headers);
        if let Some(form) = &form {
            builder = builder.form(form);
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

    /// One request, mapped to a token or an error.
    async fn once(&self, resource: &str) -> Result<TokenResponse, Error> {
        map_response(self.send(resource, None).await?)
    }

    /// Azure Arc: one request; on a `401 Basic realm=<key file>` challenge, the key file is
    /// checked and read, and the request sent once more with it.
    async fn arc(&self, resource: &str, tokens_dir: &Path) -> Result<TokenResponse, Error> {
        let first = self.send(resource, None).await?;
        if first.status != StatusCode::UNAUTHORIZED {
            return map_response(first);
        }
        let key_file = arc::challenge_path(&first.headers)?;
        let authorization = arc::read_key(&key_file, tokens_dir)?;
        tracing::debug!(
            kind = self.kind(),
            key_file = %key_file.display(),
            "answering the azure arc challenge"
        );
        map_response(self.send(resource, Some(&authorization)).await?)
    }
}

fn imds_id_param(id: &UserAssignedId) -> &'static str {
    match id {
        UserAssignedId::ClientId(_) => "client_id",
        UserAssignedId::ObjectId(_) => "object_id",
        UserAssignedId::ResourceId(_) => "msi_res_id",
    }
}

impl TokenCredential for ManagedIdentityCredential {
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
            match &self.source {
                Source::AzureArc { tokens_dir } => self.arc(&resource, tokens_dir).await,
                _ => self.once(&resource).await,
            }
        })
    }

    fn identity(&self) -> CredentialIdentity {
        let identity =
            CredentialIdentity::new(self.kind(), self.url.origin().ascii_serialization());
        match &self.user_assigned {
            Some(UserAssignedId::ClientId(id)) => identity.with_client_id(id),
            Some(other) => identity.with_client_id(other.value()),
            None => match &self.source {
                Source::AzureMl { client_id, .. } => identity.with_client_id(client_id),
                _ => identity,
            },
        }
    }
}

impl fmt::Debug for ManagedIdentityCredential {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut d = f.debug_struct("ManagedIdentityCredential");
        d.field("source", &self.source.kind())
            .field("endpoint", &self.url.as_str())
            .field("user_assigned", &self.user_assigned);
        match &self.source {
            Source::AppService { .. } | Source::ServiceFabric { .. } => {
                d.field("identity_header", &"<redacted>");
            }
            Source::AzureMl { client_id, .. } => {
                d.field("secret", &"<redacted>")
                    .field("default_client_id", client_id);
            }
            Source::AzureArc { tokens_dir } => {
                d.field("arc_tokens_dir", tokens_dir);
            }
            Source::Imds | Source::CloudShell => {}
        }
        d.field("timeout", &self.timeout).finish_non_exhaustive()
    }
}

impl fmt::Display for ManagedIdentityCredential {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "managed identity credential ({}) at {}",
            self.source.kind(),
            self.url.origin().ascii_serialization()
        )?;
        if let Some(id) = &self.user_assigned {
            write!(f, " for user-assigned identity {}", id.value())?;
        }
        Ok(())
    }
}

/// A source's settings before validation.
enum Pending {
    Imds {
        base: String,
    },
    AppService {
        endpoint: String,
        header: SecretString,
    },
    ServiceFabric {
        endpoint: String,
        header: SecretString,
        thumbprint: String,
    },
    AzureMl {
        endpoint: String,
        secret: SecretString,
        default_client_id: Option<String>,
    },
    CloudShell {
        endpoint: String,
    },
    AzureArc {
        endpoint: String,
    },
}

impl Pending {
    fn kind(&self) -> ManagedIdentitySource {
        match self {
            Pending::Imds { .. } => ManagedIdentitySource::Imds,
            Pending::AppService { .. } => ManagedIdentitySource::AppService,
            Pending::ServiceFabric { .. } => ManagedIdentitySource::ServiceFabric,
            Pending::AzureMl { .. } => ManagedIdentitySource::AzureMl,
            Pending::CloudShell { .. } => ManagedIdentitySource::CloudShell,
            Pending::AzureArc { .. } => ManagedIdentitySource::AzureArc,
        }
    }

    fn endpoint_mut(&mut self) -> &mut String {
        match self {
            Pending::Imds { base: endpoint }
            | Pending::AppService { endpoint, .. }
            | Pending::ServiceFabric { endpoint, .. }
            | Pending::AzureMl { endpoint, .. }
            | Pending::CloudShell { endpoint }
            | Pending::AzureArc { endpoint } => endpoint,
        }
    }

    fn endpoint(&self) -> &str {
        match self {
            Pending::Imds { base: endpoint }
            | Pending::AppService { endpoint, .. }
            | Pending::ServiceFabric { endpoint, .. }
            | Pending::AzureMl { endpoint, .. }
            | Pending::CloudShell { endpoint }
            | Pending::AzureArc { endpoint } => endpoint,
        }
    }
}

/// Builds a [`ManagedIdentityCredential`]; start from one of its constructors.
#[must_use]
pub struct ManagedIdentityCredentialBuilder {
    pending: Pending,
    user_assigned: Option<UserAssignedId>,
    timeout: Duration,
    client: Option<reqwest::Client>,
    arc_tokens_dir: PathBuf,
}

impl ManagedIdentityCredentialBuilder {
    fn new(pending: Pending) -> Self {
        ManagedIdentityCredentialBuilder {
            pending,
            user_assigned: None,
            timeout: DEFAULT_TIMEOUT,
            client: None,
            arc_tokens_dir: arc::default_tokens_dir(&|name| std::env::var(name).ok()),
        }
    }

    /// The source this builder will call.
    pub fn source(&self) -> ManagedIdentitySource {
        self.pending.kind()
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
        *self.pending.endpoint_mut() = endpoint.into();
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
    /// an HTTP client given for Service Fabric, or an HTTP client
    /// that cannot be built.
    pub fn build(self) -> Result<ManagedIdentityCredential, Error> {
        let kind = self.pending.kind();
        if self.timeout.is_zero() {
            return Err(Error::config("timeout must not be zero"));
        }
        if let Some(id) = &self.user_assigned {
            if id.value().trim().is_empty() {
                return Err(Error::config("user-assigned identity id is empty"));
            }
            let supported = match kind {
                ManagedIdentitySource::Imds | ManagedIdentitySource::AppService => true,
                ManagedIdentitySource::AzureMl => matches!(id, UserAssignedId::ClientId(_)),
                _ => false,
            };
            if !supported {
                return Err(Error::config(match kind {
                    ManagedIdentitySource::AzureMl => {
                        "Azure Machine Learning supports user-assigned identities by client id only"
                            .to_owned()
                    }
                    _ => format!("{kind} does not support user-assigned managed identities"),
                }));
            }
        }
        let url = match &self.pending {
            Pending::Imds { base } => {
                let base = base.trim().trim_end_matches('/');
                let base = if base.contains("://") {
                    base.to_owned()
                } else {
                    format!("http://{base}")
                };
                parse_endpoint(&format!("{base}{IMDS_PATH}"), kind)?
            }
            other => parse_endpoint(other.endpoint(), kind)?,
        };
        let mut client = self.client;
        let source = match self.pending {
            Pending::Imds { .. } => Source::Imds,
            Pending::AppService { header, .. } => Source::AppService {
                header: secret_header(&header, "IDENTITY_HEADER")?,
            },
            Pending::ServiceFabric {
                header, thumbprint, ..
            } => {
                if client.is_some() {
                    return Err(Error::config(
                        "Service Fabric builds its own HTTP client (it trusts only the pinned certificate)",
                    ));
                }
                client = Some(service_fabric::client(&thumbprint)?);
                Source::ServiceFabric {
                    header: secret_header(&header, "IDENTITY_HEADER")?,
                }
            }
            Pending::AzureMl {
                secret,
                default_client_id,
                ..
            } => {
                let client_id =
                    match (&self.user_assigned, default_client_id) {
                        (Some(UserAssignedId::ClientId(id)), _) => id.clone(),
                        (_, Some(id)) => id,
                        _ => return Err(Error::config(
                            "DEFAULT_IDENTITY_CLIENT_ID is not set: Azure Machine Learning needs \
                             the client id of the system-assigned identity",
                        )),
                    };
                Source::AzureMl {
                    secret: secret_header(&secret, "MSI_SECRET")?,
                    client_id,
                }
            }
            Pending::CloudShell { .. } => Source::CloudShell,
            Pending::AzureArc { .. } => Source::AzureArc {
                tokens_dir: self.arc_tokens_dir,
            },
        };
        let client = match client {
            Some(c) => c,
            None => mi_client()?,
        };
        Ok(ManagedIdentityCredential {
            client,
            source,
            url,
            user_assigned: self.user_assigned,
            timeout: self.timeout,
        })
    }
}

impl fmt::Debug for ManagedIdentityCredentialBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut d = f.debug_struct("ManagedIdentityCredentialBuilder");
        d.field("source", &self.pending.kind())
            .field("endpoint", &self.pending.endpoint());
        match &self.pending {
            Pending::AppService { .. } => {
                d.field("identity_header", &"<redacted>");
            }
            Pending::ServiceFabric { thumbprint, .. } => {
                d.field("identity_header", &"<redacted>")
                    .field("server_thumbprint", thumbprint);
            }
            Pending::AzureMl {
                default_client_id, ..
            } => {
                d.field("secret", &"<redacted>")
                    .field("default_client_id", default_client_id);
            }
            Pending::Imds { .. } | Pending::CloudShell { .. } | Pending::AzureArc { .. } => {}
        }
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
    fn current(env: &dyn Fn(&str) -> Option<String>) -> Platform {
        Platform {
            himds: arc::default_himds(env),
            tokens_dir: arc::default_tokens_dir(env),
        }
    }
}

/// The managed identity client: no redirects (they would carry the identity header away), no
/// proxy (IMDS and the local endpoints are not reachable through one, and it would see the
/// identity header).
fn mi_client() -> Result<reqwest::Client, Error> {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .no_proxy()
        .build()
        .map_err(|_| Error::config("could not build the managed identity HTTP client"))
}

/// A secret as a sensitive header value.
fn secret_header(secret: &SecretString, name: &str) -> Result<HeaderValue, Error> {
    let value = secret.expose_secret().trim();
    if value.is_empty() {
        return Err(Error::config(format!("{name} is empty")));
    }
    let mut header = HeaderValue::from_str(value)
        .map_err(|_| Error::config(format!("{name} is not a valid header value")))?;
    header.set_sensitive(true);
    Ok(header)
}

/// Parses and checks a managed identity endpoint (rule X2, widened to link-local for IMDS).
fn parse_endpoint(endpoint: &str, kind: ManagedIdentitySource) -> Result<Url, Error> {
    let url = Url::parse(endpoint.trim())
        .map_err(|e| Error::config(format!("{kind} endpoint is not a valid URL: {e}")))?;
    let local = is_loopback(&url) || is_link_local(&url);
    match url.scheme() {
        "https" => {}
        "http" if local => {}
        "http" => {
            return Err(Error::config(format!(
                "{kind} endpoint must use https (plain http is allowed only to loopback and link-local hosts)"
            )))
        }
        other => {
            return Err(Error::config(format!(
                "{kind} endpoint has unsupported scheme {other:?}"
            )))
        }
    }
    if url.host_str().is_none_or(str::is_empty) {
        return Err(Error::config(format!("{kind} endpoint has no host")));
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(Error::config(format!(
            "{kind} endpoint must not contain credentials"
        )));
    }
    if url.fragment().is_some() {
        return Err(Error::config(format!(
            "{kind} endpoint must not have a fragment"
        )));
    }
    Ok(url)
}

/// `true` for 169.254.0.0/16 and fe80::/10 (IMDS lives at 169.254.169.254).
fn is_link_local(url: &Url) -> bool {
    let Some(host) = url.host_str() else {
        return false;
    };
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    match bare.parse::<IpAddr>() {
        Ok(IpAddr::V4(ip)) => ip.is_link_local(),
        Ok(IpAddr::V6(ip)) => (ip.segments()[0] & 0xffc0) == 0xfe80,
        Err(_) => false,
    }
}

/// The resource of a request's one scope: `https://x/.default` → `https://x`.
fn resource_of(request: &TokenRequest) -> Result<String, Error> {
    match &*request.scopes {
        [scope] => {
            let scope = scope.trim();
            let resource = scope.strip_suffix("/.default").unwrap_or(scope);
            if resource.is_empty() {
                Err(Error::config("managed identity scope is empty"))
            } else {
                Ok(resource.to_owned())
            }
        }
        [] => Err(Error::config(
            "managed identity needs exactly one scope, got none",
        )),
        scopes => Err(Error::config(format!(
            "managed identity takes exactly one scope (a resource), got {}",
            scopes.len()
        ))),
    }
}

/// A 2xx → the token; anything else → [`Error::IdentityProvider`] from the source's error body.
fn map_response(raw: RawResponse) -> Result<TokenResponse, Error> {
    if raw.status.is_success() {
        parse_token_response(&raw.body, SystemTime::now())
    } else {
        Err(mi_error(raw.status, &raw.headers, &raw.body))
    }
}

/// [`identity_provider_error`] that also reads the managed identity sources' own error shapes:
/// `{"statusCode":400,"message":".."}` (App Service), `{"error":{"code":..,"message":..}}`
/// (App Service, Cloud Shell), `{"error":{"correlationId":..,"code":..,"message":..}}`
/// (Service Fabric) and a top-level `message` / `correlationId`.
pub(crate) fn mi_error(status: StatusCode, headers: &HeaderMap, body: &[u8]) -> Error {
    fn text(v: Option<&serde_json::Value>, max: usize) -> Option<String> {
        match v {
            Some(serde_json::Value::String(s)) if !s.trim().is_empty() => {
                Some(s.chars().take(max).collect())
            }
            Some(serde_json::Value::Number(n)) => Some(n.to_string()),
            _ => None,
        }
    }
    let mut error = identity_provider_error(status, headers, body);
    let Error::IdentityProvider { details, .. } = &mut error else {
        return error;
    };
    let Ok(serde_json::Value::Object(root)) = serde_json::from_slice::<serde_json::Value>(body)
    else {
        return error;
    };
    let nested = root.get("error").and_then(serde_json::Value::as_object);
    let get = |key: &str| {
        nested
            .and_then(|n| n.get(key))
            .or_else(|| root.get(key))
            .or_else(|| root.get(&capitalised(key)))
    };
    if details.error.starts_with("http_") {
        if let Some(code) = text(get("code"), 128) {
            details.error = code;
        }
    }
    if details.error_description.is_none() {
        details.error_description = text(get("message"), 2048);
    }
    if details.correlation_id.is_none() {
        details.correlation_id = text(get("correlationId"), 128);
    }
    error
}

fn capitalised(key: &str) -> String {
    let mut chars = key.chars();
    chars
        .next()
        .map(|c| c.to_ascii_uppercase().to_string() + chars.as_str())
        .unwrap_or_default()
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests;
