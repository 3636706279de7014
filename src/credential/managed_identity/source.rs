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
    /// Which source this is.
    fn source(&self) -> ManagedIdentitySource;

    /// What in the environment selects this source, for the resilience report.
    fn detected_by(&self) -> &'static str;

    /// Checks the settings at build time: the user-assigned identity, secrets; may set the HTTP
    /// client (Service Fabric pins its certificate).
    fn validate(&mut self, build: Build<'_>) -> Result<(), Error>;

    /// The token URL from the configured endpoint.
    fn url(&self, endpoint: &str) -> Result<Url, Error> {
        parse_endpoint(endpoint, self.source())
    }

    /// One token request for `resource`.
    fn request(
        &self,
        client: &reqwest::Client,
        url: Url,
        resource: &str,
        user_assigned: Option<&UserAssignedId>,
    ) -> Result<reqwest::RequestBuilder, Error>;

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
    fn debug_fields(&self, d: &mut fmt::DebugStruct<'_, '_>);
}

/// What a source sees of its builder when it is validated.
pub(super) struct Build<'a> {
    pub(super) user_assigned: Option<&'a UserAssignedId>,
    pub(super) client: &'a mut Option<reqwest::Client>,
    pub(super) arc_tokens_dir: &'a Path,
}

impl Build<'_> {
    /// A source that takes no user-assigned identity refuses one.
    pub(super) fn no_user_assigned(&self, source: ManagedIdentitySource) -> Result<(), Error> {
        match self.user_assigned {
            Some(_) => Err(Error::config(format!(
                "{source} does not support user-assigned managed identities"
            ))),
            None => Ok(()),
        }
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

/// `url` with `pairs` appended to its query.
pub(super) fn with_query(mut url: Url, pairs: &[(&str, &str)]) -> Url {
    url.query_pairs_mut().extend_pairs(pairs);
    url
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
