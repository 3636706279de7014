//! Azure Cloud Shell: detected by `MSI_ENDPOINT` alone. POST `{MSI_ENDPOINT}` with the form
//! `resource=..` and `Metadata: true`; no user-assigned identities.

use http::HeaderValue;

use super::{
    optional_env, Build, Call, Env, ManagedIdentityCredentialBuilder, ManagedIdentitySource,
    Source, METADATA,
};
use crate::Error;

pub(super) struct CloudShell;

pub(super) fn detect(env: Env<'_>) -> Option<ManagedIdentityCredentialBuilder> {
    optional_env(env, "MSI_ENDPOINT").map(builder)
}

pub(super) fn builder(endpoint: String) -> ManagedIdentityCredentialBuilder {
    ManagedIdentityCredentialBuilder::new(ManagedIdentitySource::CloudShell, CloudShell, endpoint)
}

impl Source for CloudShell {
    fn validate(&mut self, build: Build<'_>) -> Result<(), Error> {
        build.no_user_assigned()
    }

    /// A POST with the resource in the form, not the query.
    fn request(&self, call: &Call<'_>) -> Result<reqwest::RequestBuilder, Error> {
        let form = [("resource", call.resource)];
        let post = call.client.post(call.url.clone()).form(&form);
        Ok(post.header(METADATA, HeaderValue::from_static("true")))
    }
}
