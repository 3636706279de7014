//! IMDS, the Azure Instance Metadata Service (VMs, VM scale sets, AKS): the source when no other
//! is detected. GET `{base}/metadata/identity/oauth2/token?api-version=2018-02-01&resource=..`
//! with `Metadata: true`; a user-assigned identity as `client_id`, `object_id` or `msi_res_id`.
//! The base is `http://169.254.169.254`, or `AZURE_POD_IDENTITY_AUTHORITY_HOST`.

use http::HeaderValue;
use reqwest::Url;

use super::{
    optional_env, parse_endpoint, Call, Env, ManagedIdentityCredentialBuilder,
    ManagedIdentitySource, Source, METADATA,
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
    match optional_env(env, "AZURE_POD_IDENTITY_AUTHORITY_HOST") {
        Some(base) => builder().endpoint(base),
        None => builder(),
    }
}

pub(super) fn builder() -> ManagedIdentityCredentialBuilder {
    ManagedIdentityCredentialBuilder::new(ManagedIdentitySource::Imds, Imds, IMDS_BASE.to_owned())
}

impl Source for Imds {
    /// The endpoint is a base URL (a bare host means http): the token path is appended.
    fn url(&self, base: &str, source: ManagedIdentitySource) -> Result<Url, Error> {
        let base = base.trim().trim_end_matches('/');
        let base = if base.contains("://") {
            base.to_owned()
        } else {
            format!("http://{base}")
        };
        parse_endpoint(&format!("{base}{IMDS_PATH}"), source)
    }

    fn request(&self, call: &Call<'_>) -> Result<reqwest::RequestBuilder, Error> {
        let id = call.user_assigned_pair("msi_res_id");
        Ok(call
            .get(API_VERSION, id.as_slice())
            .header(METADATA, HeaderValue::from_static("true")))
    }
}
