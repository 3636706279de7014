//! App Service, Azure Functions and Container Apps: detected by `IDENTITY_ENDPOINT` +
//! `IDENTITY_HEADER` (without `IDENTITY_SERVER_THUMBPRINT`, which makes it Service Fabric).
//! GET `{IDENTITY_ENDPOINT}?api-version=2019-08-01&resource=..` with `X-IDENTITY-HEADER`; a
//! user-assigned identity as `client_id`, `object_id` or `mi_res_id`.

use std::fmt;

use secrecy::SecretString;

use super::{
    optional_env, secret_header, Build, Call, Env, ManagedIdentityCredentialBuilder,
    ManagedIdentitySource, Source, X_IDENTITY_HEADER,
};
use crate::Error;

const API_VERSION: &str = "2019-08-01";

pub(super) struct AppService {
    header: SecretString,
}

pub(super) fn detect(env: Env<'_>) -> Option<ManagedIdentityCredentialBuilder> {
    let endpoint = optional_env(env, "IDENTITY_ENDPOINT")?;
    Some(builder(endpoint, optional_env(env, "IDENTITY_HEADER")?))
}

pub(super) fn builder(endpoint: String, header: String) -> ManagedIdentityCredentialBuilder {
    let header = SecretString::from(header);
    ManagedIdentityCredentialBuilder::new(
        ManagedIdentitySource::AppService,
        AppService { header },
        endpoint,
    )
}

impl Source for AppService {
    fn validate(&mut self, _build: Build<'_>) -> Result<(), Error> {
        secret_header(&self.header, "IDENTITY_HEADER").map(drop)
    }

    fn request(&self, call: &Call<'_>) -> Result<reqwest::RequestBuilder, Error> {
        let id = call.user_assigned_pair("mi_res_id");
        let header = secret_header(&self.header, "IDENTITY_HEADER")?;
        Ok(call
            .get(API_VERSION, id.as_slice())
            .header(X_IDENTITY_HEADER, header))
    }

    fn debug_fields(&self, d: &mut fmt::DebugStruct<'_, '_>) {
        d.field("identity_header", &"<redacted>");
    }
}
