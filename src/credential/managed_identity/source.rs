//! The shape every managed identity source has ([`Source`]: validation, URL, request,
//! challenge answer, `Debug`), and the helpers the sources share: the HTTP client, secret
//! headers, query strings and the endpoint check (rule X2, widened to link-local for IMDS).

use std::fmt;
use std::path::Path;

use http::{HeaderName, HeaderValue};
use reqwest::Url;
use secrecy::{ExposeSecret, SecretString};

use super::{ManagedIdentitySource, RawResponse, UserAssignedId};
use crate::credential::http::check_origin;
use crate::origin::Origin;
use crate::Error;

pub(super) const METADATA: HeaderName = HeaderName::from_static("metadata");
pub(super) const X_IDENTITY_HEADER: HeaderName = HeaderName::from_static("x-identity-header");
pub(super) const SECRET: HeaderName = HeaderName::from_static("secret");

/// What one source knows: its detection lives in its file; this is its validation and request
/// shape. The builder holds one (unvalidated), the credential the same one after
/// [`validate`](Self::validate).
pub(super) trait Source: Send + Sync + 'static {
    /// Checks the settings at build time: the user-assigned identity, secrets; may set the HTTP
    /// client (Service Fabric pins its certificate).
    fn validate(&mut self, _build: Build<'_>) -> Result<(), Error> {
        Ok(())
    }

    /// The token URL from the configured endpoint.
    fn url(&self, endpoint: &str, source: ManagedIdentitySource) -> Result<Url, Error> {
        parse_endpoint(endpoint, source)
    }

    /// One token request.
    fn request(&self, call: &Call<'_>) -> Result<reqwest::RequestBuilder, Error>;

    /// The `Authorization` value answering a challenge in `first`, if this source answers
    /// challenges (Azure Arc) and `first` is one.
    fn answer(&self, _first: &RawResponse) -> Result<Option<HeaderValue>, Error> {
        Ok(None)
    }

    /// The client id the identity reports when no user-assigned one is set.
    fn client_id(&self) -> Option<&str> {
        None
    }

    /// The source's own `Debug` fields (secrets redacted).
    fn debug_fields(&self, _d: &mut fmt::DebugStruct<'_, '_>) {}
}

/// What a source sees of its builder when it is validated.
pub(super) struct Build<'a> {
    pub(super) source: ManagedIdentitySource,
    pub(super) user_assigned: Option<&'a UserAssignedId>,
    pub(super) client: &'a mut Option<reqwest::Client>,
    pub(super) arc_tokens_dir: &'a Path,
}

impl Build<'_> {
    /// A source that takes no user-assigned identity refuses one.
    pub(super) fn no_user_assigned(&self) -> Result<(), Error> {
        match self.user_assigned {
            Some(_) => Err(Error::config(format!(
                "{} does not support user-assigned managed identities",
                self.source
            ))),
            None => Ok(()),
        }
    }
}

/// One token request being shaped.
pub(super) struct Call<'a> {
    pub(super) client: &'a reqwest::Client,
    pub(super) url: &'a Url,
    pub(super) resource: &'a str,
    pub(super) user_assigned: Option<&'a UserAssignedId>,
}

impl Call<'_> {
    /// A GET with `api-version`, `resource` and `extra` in the query.
    pub(super) fn get(&self, api_version: &str, extra: &[(&str, &str)]) -> reqwest::RequestBuilder {
        let mut url = self.url.clone();
        url.query_pairs_mut()
            .append_pair("api-version", api_version)
            .append_pair("resource", self.resource)
            .extend_pairs(extra);
        self.client.get(url)
    }

    /// The user-assigned identity as a query pair: `client_id`, `object_id`, or a resource id
    /// under `resource_id_name`.
    pub(super) fn user_assigned_pair(
        &self,
        resource_id_name: &'static str,
    ) -> Option<(&'static str, &str)> {
        self.user_assigned.map(|id| match id {
            UserAssignedId::ClientId(v) => ("client_id", v.as_str()),
            UserAssignedId::ObjectId(v) => ("object_id", v.as_str()),
            UserAssignedId::ResourceId(v) => (resource_id_name, v.as_str()),
        })
    }
}

/// The managed identity client: no redirects (they would carry the identity header away), no
/// proxy (IMDS and the local endpoints are not reachable through one, and it would see the
/// identity header).
pub(super) fn mi_client() -> Result<reqwest::Client, Error> {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .no_proxy()
        .build()
        .map_err(|_| Error::config("could not build the managed identity HTTP client"))
}

/// A secret as a sensitive header value.
pub(super) fn secret_header(secret: &SecretString, name: &str) -> Result<HeaderValue, Error> {
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
pub(super) fn parse_endpoint(endpoint: &str, kind: ManagedIdentitySource) -> Result<Url, Error> {
    let url = Url::parse(endpoint.trim())
        .map_err(|e| Error::config(format!("{kind} endpoint is not a valid URL: {e}")))?;
    let what = format!("{kind} endpoint");
    let allowed = Origin::of_url(&url).may_carry_managed_identity_secret();
    check_origin(&url, &what, allowed, "loopback and link-local hosts")?;
    if url.fragment().is_some() {
        return Err(Error::config(format!(
            "{kind} endpoint must not have a fragment"
        )));
    }
    Ok(url)
}
