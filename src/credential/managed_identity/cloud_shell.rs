//! Azure Cloud Shell: detected by `MSI_ENDPOINT` alone. POST `{MSI_ENDPOINT}` with the form
//! `resource=..` and `Metadata: true`; no user-assigned identities.

use std::fmt;

use http::HeaderValue;
use reqwest::Url;

use super::{
    optional_env, Build, Env, ManagedIdentityCredentialBuilder, ManagedIdentitySource, Source,
    UserAssignedId, METADATA,
};
use crate::Error;

pub(super) struct CloudShell;

pub(super) fn detect(env: Env<'_>) -> Option<ManagedIdentityCredentialBuilder> {
    optional_env(env, "MSI_ENDPOINT").map(builder)
}

pub(super) fn builder(endpoint: String) -> ManagedIdentityCredentialBuilder {
    ManagedIdentityCredentialBuilder::new(CloudShell, endpoint)
}

impl Source for CloudShell {
    fn source(&self) -> ManagedIdentitySource {
        ManagedIdentitySource::CloudShell
    }

    fn detected_by(&self) -> &'static str {
        "MSI_ENDPOINT is set without MSI_SECRET (Cloud Shell)"
    }

    fn validate(&mut self, build: Build<'_>) -> Result<(), Error> {
        build.no_user_assigned(self.source())
    }

    fn request(
        &self,
        client: &reqwest::Client,
        url: Url,
        resource: &str,
        _user_assigned: Option<&UserAssignedId>,
    ) -> Result<reqwest::RequestBuilder, Error> {
        Ok(client
            .post(url)
            .header(METADATA, HeaderValue::from_static("true"))
            .form(&[("resource", resource)]))
    }

    fn debug_fields(&self, _d: &mut fmt::DebugStruct<'_, '_>) {}
}
