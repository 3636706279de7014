//! App Service, Azure Functions and Container Apps: detected by `IDENTITY_ENDPOINT` +
//! `IDENTITY_HEADER` (without `IDENTITY_SERVER_THUMBPRINT`, which makes it Service Fabric).
//! GET `{IDENTITY_ENDPOINT}?api-version=2019-08-01&resource=..` with `X-IDENTITY-HEADER`; a
//! user-assigned identity as `client_id`, `object_id` or `mi_res_id`.

use std::fmt;

use reqwest::Url;
use secrecy::SecretString;

use super::{
    optional_env, secret_header, with_query, Build, Env, ManagedIdentityCredentialBuilder,
    ManagedIdentitySource, Source, UserAssignedId, X_IDENTITY_HEADER,
};
use crate::Error;

const API_VERSION: &str = "2019-08-01";

pub(super) struct AppService {
    header: SecretString,
}

pub(super) fn detect(env: Env<'_>) -> Option<ManagedIdentityCredentialBuilder> {
    let endpoint = optional_env(env, "IDENTITY_ENDPOINT")?;
    let header = optional_env(env, "IDENTITY_HEADER")?;
    Some(builder(endpoint, header))
}

pub(super) fn builder(endpoint: String, header: String) -> ManagedIdentityCredentialBuilder {
    ManagedIdentityCredentialBuilder::new(
        AppService {
            header: SecretString::from(header),
        },
        endpoint,
    )
}

impl Source for AppService {
    fn source(&self) -> ManagedIdentitySource {
        ManagedIdentitySource::AppService
    }

    fn detected_by(&self) -> &'static str {
        "IDENTITY_ENDPOINT and IDENTITY_HEADER are set (App Service, Functions, Container Apps)"
    }

    fn validate(&mut self, _build: Build<'_>) -> Result<(), Error> {
        secret_header(&self.header, "IDENTITY_HEADER").map(drop)
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
                UserAssignedId::ResourceId(_) => "mi_res_id",
            };
            query.push((name, id.value()));
        }
        Ok(client.get(with_query(url, &query)).header(
            X_IDENTITY_HEADER,
            secret_header(&self.header, "IDENTITY_HEADER")?,
        ))
    }

    fn debug_fields(&self, d: &mut fmt::DebugStruct<'_, '_>) {
        d.field("identity_header", &"<redacted>");
    }
}
