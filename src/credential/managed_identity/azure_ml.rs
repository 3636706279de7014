//! Azure Machine Learning: detected by `MSI_ENDPOINT` + `MSI_SECRET`. GET
//! `{MSI_ENDPOINT}?api-version=2017-09-01&resource=..&clientid=..` with `secret` and
//! `Metadata: true`; `clientid` is the user-assigned client id, else
//! `DEFAULT_IDENTITY_CLIENT_ID` (the system-assigned identity's).

use std::fmt;

use http::HeaderValue;
use secrecy::SecretString;

use super::{
    optional_env, secret_header, Build, Call, Env, ManagedIdentityCredentialBuilder,
    ManagedIdentitySource, Source, UserAssignedId, METADATA, SECRET,
};
use crate::Error;

const API_VERSION: &str = "2017-09-01";

pub(super) struct AzureMl {
    secret: SecretString,
    default_client_id: Option<String>,
    /// The client id sent: set by `validate`.
    client_id: String,
}

pub(super) fn detect(env: Env<'_>) -> Option<ManagedIdentityCredentialBuilder> {
    let endpoint = optional_env(env, "MSI_ENDPOINT")?;
    let secret = optional_env(env, "MSI_SECRET")?;
    let default_client_id = optional_env(env, "DEFAULT_IDENTITY_CLIENT_ID").unwrap_or_default();
    Some(builder(endpoint, secret, default_client_id))
}

pub(super) fn builder(
    endpoint: String,
    secret: String,
    default_client_id: String,
) -> ManagedIdentityCredentialBuilder {
    ManagedIdentityCredentialBuilder::new(
        ManagedIdentitySource::AzureMl,
        AzureMl {
            secret: SecretString::from(secret),
            default_client_id: Some(default_client_id).filter(|s| !s.trim().is_empty()),
            client_id: String::new(),
        },
        endpoint,
    )
}

impl Source for AzureMl {
    fn validate(&mut self, build: Build<'_>) -> Result<(), Error> {
        self.client_id =
            match (build.user_assigned, &self.default_client_id) {
                (Some(UserAssignedId::ClientId(id)), _) => id.clone(),
                (Some(_), _) => return Err(Error::config(
                    "Azure Machine Learning supports user-assigned identities by client id only",
                )),
                (None, Some(id)) => id.clone(),
                (None, None) => {
                    return Err(Error::config(
                        "DEFAULT_IDENTITY_CLIENT_ID is not set: Azure Machine Learning needs the \
                     client id of the system-assigned identity",
                    ))
                }
            };
        secret_header(&self.secret, "MSI_SECRET").map(drop)
    }

    fn request(&self, call: &Call<'_>) -> Result<reqwest::RequestBuilder, Error> {
        let secret = secret_header(&self.secret, "MSI_SECRET")?;
        Ok(call
            .get(API_VERSION, &[("clientid", &self.client_id)])
            .header(METADATA, HeaderValue::from_static("true"))
            .header(SECRET, secret))
    }

    fn client_id(&self) -> Option<&str> {
        Some(self.client_id.as_str()).filter(|id| !id.is_empty())
    }

    fn debug_fields(&self, d: &mut fmt::DebugStruct<'_, '_>) {
        d.field("secret", &"<redacted>");
        if self.client_id.is_empty() {
            d.field("default_client_id", &self.default_client_id);
        } else {
            d.field("default_client_id", &self.client_id);
        }
    }
}
