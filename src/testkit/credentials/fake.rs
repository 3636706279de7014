//! The in-memory credentials of the fake: the real request shapes, the crate's own response
//! parsing and error mapping.

use std::fmt;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use futures_util::future::BoxFuture;
use http::{HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};

use super::super::handler::{handle, State};
use crate::credential::http::{identity_provider_error, DEFAULT_TIMEOUT};
use crate::credential::managed_identity::{mi_error, resource_of};
use crate::credential::{CredentialIdentity, TokenCredential, TokenRequest};
use crate::token::parse_token_response;
use crate::{Error, TokenResponse};

/// What both fake credentials share: the fake they call in memory, the address their
/// requests name, and the per-attempt timeout (default 10 s, as the real credentials').
struct FakeEndpoint {
    state: Arc<State>,
    authority: String,
    timeout: Duration,
}

impl FakeEndpoint {
    fn new(state: Arc<State>, authority: String) -> Self {
        FakeEndpoint {
            state,
            authority,
            timeout: DEFAULT_TIMEOUT,
        }
    }

    /// One request to the fake within the timeout, its answer mapped as the real credential
    /// maps it: a token response, or the error `map_error` makes of the failure.
    fn exchange(
        &self,
        req: Result<Request<Bytes>, Error>,
        map_error: fn(StatusCode, &http::HeaderMap, &[u8]) -> Error,
    ) -> BoxFuture<'_, Result<TokenResponse, Error>> {
        Box::pin(async move {
            let (status, headers, body) = send(&self.state, req?, self.timeout).await?;
            if status.is_success() {
                parse_token_response(&body, SystemTime::now())
            } else {
                Err(map_error(status, &headers, &body))
            }
        })
    }
}

/// Sends `req` to the fake in memory with `timeout` over the whole exchange, as the real
/// credentials' `send_raw` does; returns status, headers and body.
async fn send(
    state: &State,
    req: Request<Bytes>,
    timeout: Duration,
) -> Result<(StatusCode, http::HeaderMap, Bytes), Error> {
    let response: Response<Full<Bytes>> =
        match tokio::time::timeout(timeout, handle(state, req)).await {
            Err(_) => return Err(Error::Timeout { after: timeout }),
            Ok(Err(io)) => {
                return Err(Error::Unavailable {
                    what: "identity provider",
                    source: Some(Arc::new(io)),
                })
            }
            Ok(Ok(r)) => r,
        };
    let (parts, body) = response.into_parts();
    let body = match body.collect().await {
        Ok(c) => c.to_bytes(),
        Err(never) => match never {},
    };
    Ok((parts.status, parts.headers, body))
}

fn request_for(
    method: Method,
    uri: &str,
    headers: &[(&'static str, &str)],
    body: Bytes,
) -> Result<Request<Bytes>, Error> {
    let mut builder = Request::builder().method(method).uri(uri);
    for (name, value) in headers {
        let value = HeaderValue::from_str(value)
            .map_err(|_| Error::config(format!("invalid {name} header value")))?;
        builder = builder.header(*name, value);
    }
    builder
        .body(body)
        .map_err(|_| Error::config("could not build the token request"))
}

/// A client-secret credential that calls the fake's token endpoint in memory: the same
/// request as [`ClientSecretCredential`](crate::ClientSecretCredential) (`POST
/// /{tenant}/oauth2/v2.0/token`, form `grant_type=client_credentials`, `client_id`,
/// `client_secret`, `scope`, and `claims` after a CAE challenge), one attempt per call with
/// a per-attempt timeout (default 10 s, as the real one), and the answer mapped by the
/// crate's own token-response parser and identity-provider error mapping (so `Retry-After`
/// reaches [`Error::retry_after`] exactly as with the real credential). Its identity has
/// kind `client_secret`.
///
/// Get one with [`FakeIdentityProvider::credential`](super::super::FakeIdentityProvider::credential).
pub struct FakeClientSecretCredential {
    endpoint: FakeEndpoint,
    tenant: String,
    client_id: String,
}

impl FakeClientSecretCredential {
    pub(crate) fn new(state: Arc<State>, authority: String, tenant: &str, client_id: &str) -> Self {
        FakeClientSecretCredential {
            endpoint: FakeEndpoint::new(state, authority),
            tenant: tenant.to_owned(),
            client_id: client_id.to_owned(),
        }
    }

    /// The per-attempt timeout (default 10 s); a hanging endpoint fails the call with
    /// [`Error::Timeout`] after it.
    #[must_use]
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.endpoint.timeout = timeout;
        self
    }

    /// The token URL it posts to.
    pub fn token_url(&self) -> String {
        format!(
            "{}/{}/oauth2/v2.0/token",
            self.endpoint.authority, self.tenant
        )
    }
}

impl FakeClientSecretCredential {
    fn request(&self, request: &TokenRequest) -> Result<Request<Bytes>, Error> {
        let scope = request.scopes.join(" ");
        let mut form = form_urlencoded::Serializer::new(String::new());
        form.append_pair("grant_type", "client_credentials")
            .append_pair("client_id", &self.client_id)
            .append_pair("client_secret", "fake-secret");
        if !scope.is_empty() {
            form.append_pair("scope", &scope);
        }
        if let Some(claims) = &request.claims {
            form.append_pair("claims", claims);
        }
        request_for(
            Method::POST,
            &self.token_url(),
            &[
                ("accept", "application/json"),
                ("content-type", "application/x-www-form-urlencoded"),
            ],
            Bytes::from(form.finish()),
        )
    }
}

impl TokenCredential for FakeClientSecretCredential {
    fn get_token<'a>(
        &'a self,
        request: &'a TokenRequest,
    ) -> BoxFuture<'a, Result<TokenResponse, Error>> {
        self.endpoint
            .exchange(self.request(request), identity_provider_error)
    }

    fn identity(&self) -> CredentialIdentity {
        CredentialIdentity::new("client_secret", &self.endpoint.authority)
            .with_source(crate::CredentialKind::ClientSecret)
            .with_tenant(&self.tenant)
            .with_client_id(&self.client_id)
    }
}

impl fmt::Debug for FakeClientSecretCredential {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FakeClientSecretCredential")
            .field("authority", &self.endpoint.authority)
            .field("tenant", &self.tenant)
            .field("client_id", &self.client_id)
            .field("timeout", &self.endpoint.timeout)
            .finish_non_exhaustive()
    }
}

/// A managed-identity credential that calls the fake's IMDS in memory: the same request as
/// [`ManagedIdentityCredential`](crate::ManagedIdentityCredential)'s IMDS source (`GET
/// /metadata/identity/oauth2/token?api-version=2018-02-01&resource=…`, `Metadata: true`,
/// claims never sent), one attempt per call with a per-attempt timeout (default 10 s), and
/// the answer mapped by the crate's token-response parser and managed-identity error
/// mapping. Its identity has kind `managed_identity/imds`.
///
/// It makes one attempt per call: retrying is the token cache's job.
///
/// Get one with [`FakeIdentityProvider::imds_credential`](super::super::FakeIdentityProvider::imds_credential).
pub struct FakeImdsCredential {
    endpoint: FakeEndpoint,
    client_id: Option<String>,
}

impl FakeImdsCredential {
    pub(crate) fn new(state: Arc<State>, authority: String) -> Self {
        FakeImdsCredential {
            endpoint: FakeEndpoint::new(state, authority),
            client_id: None,
        }
    }

    /// The per-attempt timeout (default 10 s).
    #[must_use]
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.endpoint.timeout = timeout;
        self
    }

    /// A user-assigned identity by client id (`client_id=` in the query).
    #[must_use]
    pub fn user_assigned_client_id(mut self, client_id: impl Into<String>) -> Self {
        self.client_id = Some(client_id.into());
        self
    }
}

impl FakeImdsCredential {
    fn request(&self, request: &TokenRequest) -> Result<Request<Bytes>, Error> {
        let resource = resource_of(request)?;
        let mut query = form_urlencoded::Serializer::new(String::new());
        query
            .append_pair("api-version", "2018-02-01")
            .append_pair("resource", &resource);
        if let Some(id) = &self.client_id {
            query.append_pair("client_id", id);
        }
        let uri = format!(
            "{}/metadata/identity/oauth2/token?{}",
            self.endpoint.authority,
            query.finish()
        );
        request_for(
            Method::GET,
            &uri,
            &[("metadata", "true"), ("accept", "application/json")],
            Bytes::new(),
        )
    }
}

impl TokenCredential for FakeImdsCredential {
    fn get_token<'a>(
        &'a self,
        request: &'a TokenRequest,
    ) -> BoxFuture<'a, Result<TokenResponse, Error>> {
        self.endpoint.exchange(self.request(request), mi_error)
    }

    fn identity(&self) -> CredentialIdentity {
        let identity = CredentialIdentity::new("managed_identity/imds", &self.endpoint.authority)
            .with_source(crate::CredentialKind::ManagedIdentity);
        match &self.client_id {
            Some(id) => identity.with_client_id(id),
            None => identity,
        }
    }
}

impl fmt::Debug for FakeImdsCredential {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FakeImdsCredential")
            .field("authority", &self.endpoint.authority)
            .field("client_id", &self.client_id)
            .field("timeout", &self.endpoint.timeout)
            .finish_non_exhaustive()
    }
}
