//! IMDS, the Azure Instance Metadata Service (VMs, VM scale sets, AKS): the source when no other
//! is detected. GET `{base}/metadata/identity/oauth2/token?api-version=2018-02-01&resource=..`
//! with `Metadata: true`; a user-assigned identity as `client_id`, `object_id` or `msi_res_id`.
//! The base is `http://169.254.169.254`, or `AZURE_POD_IDENTITY_AUTHORITY_HOST`.

use std::fmt;

use http::HeaderValue;
use reqwest::Url;

use super::{
    optional_env, parse_endpoint, with_query, Build, Env, ManagedIdentityCredentialBuilder,
    ManagedIdentitySource, Source, UserAssignedId, METADATA,
};
use crate::Error;

/// The IMDS base URL.
const IMDS_BASE: &str = "http://169.254.169.254";
/// The path of the IMDS token endpoint under its base.
const IMDS_PATH: &str = "/metadata/identity/oauth2/token";
const API_VERSION: &str = "2018-02-01";

pub(super) struct Imds;

/// IMDS is always there to fall back on; `AZURE_POD_IDENTITY_AUTHORITY_HOST` moves it.
pub(super) fn detect(env: Env<'_>) -> ManagedIdentityCredentialBuilder {
    let b = builder();
    match optional_env(env, "AZURE_POD_IDENTITY_AUTHORITY_HOST") {
        Some(base) => b.endpoint(base),
        None => b,
    }
}

pub(super) fn builder() -> ManagedIdentityCredentialBuilder {
    ManagedIdentityCredentialBuilder::new(Imds, IMDS_BASE.to_owned())
}

impl Source for Imds {
    fn source(&self) -> ManagedIdentitySource {
        ManagedIdentitySource::Imds
    }

    fn detected_by(&self) -> &'static str {
        "no other managed identity source's variables are set, so IMDS (VMs, VM scale sets, AKS)"
    }

    fn validate(&mut self, _build: Build<'_>) -> Result<(), Error> {
        Ok(())
    }

    /// The endpoint is a base URL (a bare host means http): the token path is appended.
    fn url(&self, base: &str) -> Result<Url, Error> {
        let base = base.trim().trim_end_matches('/');
        let base = if base.contains("://") {
            base.to_owned()
        } else {
            format!("http://{base}")
        };
        parse_endpoint(&format!("{base}{IMDS_PATH}"), self.source())
    }

    fn request(
        &self,
        client: &reqwest::Client,
        url: Url,
        resource: &str,
        user_assigned: Option<&UserAssignedId>,
    ) -> Result<reqwest::RequestBuilder, Error> {
        let mut query = vec![("api-version", API_VERSION), ("resource", resource)];
        if let Some(id) = user_assigned {
            let name = match id {
                UserAssignedId::ClientId(_) => "client_id",
                UserAssignedId::ObjectId(_) => "object_id",
                UserAssignedId::ResourceId(_) => "msi_res_id",
            };
            query.push((name, id.value()));
        }
        Ok(client
            .get(with_query(url, &query))
            .header(METADATA, HeaderValue::from_static("true")))
    }

    fn debug_fields(&self, _d: &mut fmt::DebugStruct<'_, '_>) {}
}
