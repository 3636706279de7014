//! [`DefaultCredential`]: one token source picked from the environment, in the order the Azure
//! SDKs use, once, when it is built.
//!
//! | order | source | chosen when |
//! | --- | --- | --- |
//! | 1 | [`WorkloadIdentityCredential`] | `AZURE_FEDERATED_TOKEN_FILE`, `AZURE_TENANT_ID` and `AZURE_CLIENT_ID` are set (the AKS workload identity webhook sets them) |
//! | 2 | [`ClientSecretCredential`] | `AZURE_CLIENT_SECRET`, `AZURE_TENANT_ID` and `AZURE_CLIENT_ID` are set |
//! | 3 | [`ClientCertificateCredential`] | `AZURE_CLIENT_CERTIFICATE_PATH`, `AZURE_TENANT_ID` and `AZURE_CLIENT_ID` are set (with `AZURE_CLIENT_CERTIFICATE_PASSWORD` for a `.pfx` or an encrypted key) |
//! | 4 | [`ManagedIdentityCredential`] | otherwise: the managed identity source the host offers, detected as [`ManagedIdentityCredential::from_env`] does; `AZURE_CLIENT_ID` (if set) selects a user-assigned identity where the source supports one |
//!
//! A source whose variables are set but invalid (an unreadable certificate, a bad authority
//! host) is an error, not a reason to fall through to the next: a misconfigured daemon should
//! fail at start, not run as another identity. Unlike the Azure SDKs' `DefaultAzureCredential`,
//! nothing is tried at `get_token` time, and no developer tool (Azure CLI, Visual Studio) is
//! consulted: the source is fixed when the credential is built, and
//! [`resilience_report`](crate::resilience_report) says which one and why.
//!
//! ```no_run
//! use resilient_auth::{DefaultCredential, TokenCache};
//!
//! # fn run() -> Result<(), resilient_auth::Error> {
//! let credential = DefaultCredential::from_env()?;
//! println!("{}", credential.reason());
//! let tokens = TokenCache::new(credential, ["https://vault.azure.net/.default"]);
//! # Ok(()) }
//! ```
#![cfg(feature = "reqwest")]
#![cfg_attr(docsrs, doc(cfg(feature = "reqwest")))]

use std::fmt;

use futures_util::future::BoxFuture;

use super::confidential::{optional_env, process_env, Env};
use super::managed_identity::{Platform, UserAssignedId};
use super::{CredentialIdentity, CredentialKind, TokenCredential, TokenRequest};
use crate::{
    ClientCertificateCredential, ClientSecretCredential, Error, ManagedIdentityCredential,
    ManagedIdentitySource, TokenResponse, WorkloadIdentityCredential,
};

/// How a confidential client is built from the environment.
type FromEnv = fn(Env<'_>) -> Result<Box<dyn TokenCredential>, Error>;

/// The confidential clients in the order they are chosen: the variable that selects each (with
/// `AZURE_TENANT_ID` and `AZURE_CLIENT_ID`), its kind, and how it is built.
const CONFIDENTIAL: [(&str, CredentialKind, FromEnv); 3] = [
    (
        "AZURE_FEDERATED_TOKEN_FILE",
        CredentialKind::WorkloadIdentity,
        |env| Ok(Box::new(WorkloadIdentityCredential::from_env_with(env)?)),
    ),
    ("AZURE_CLIENT_SECRET", CredentialKind::ClientSecret, |env| {
        Ok(Box::new(ClientSecretCredential::from_env_with(env)?))
    }),
    (
        "AZURE_CLIENT_CERTIFICATE_PATH",
        CredentialKind::ClientCertificate,
        |env| Ok(Box::new(ClientCertificateCredential::from_env_with(env)?)),
    ),
];

fn describe(kind: CredentialKind) -> &'static str {
    match kind {
        CredentialKind::WorkloadIdentity => "workload identity",
        CredentialKind::ClientSecret => "client secret",
        _ => "client certificate",
    }
}

/// A token source chosen from the environment when it is built (see the [module docs](self)).
pub struct DefaultCredential {
    inner: Box<dyn TokenCredential>,
    chosen: CredentialKind,
    reason: String,
}

impl DefaultCredential {
    /// Picks the source from the process environment and builds it.
    ///
    /// # Errors
    /// [`Error::Config`] if the chosen source's settings are invalid (see each source's
    /// `from_env`).
    pub fn from_env() -> Result<Self, Error> {
        Self::from_env_with(&process_env, &Platform::current(&process_env))
    }

    /// [`from_env`](Self::from_env) over any variable lookup and Azure Arc paths (tests).
    pub(crate) fn from_env_with(env: Env<'_>, platform: &Platform) -> Result<Self, Error> {
        let set = |name: &str| optional_env(env, name).is_some();
        if set("AZURE_TENANT_ID") && set("AZURE_CLIENT_ID") {
            for (variable, chosen, build) in CONFIDENTIAL {
                if set(variable) {
                    let reason = format!(
                        "{variable}, AZURE_TENANT_ID and AZURE_CLIENT_ID are set: {}",
                        describe(chosen)
                    );
                    return Ok(Self::boxed(build(env)?, chosen, reason));
                }
            }
        }
        let mut builder = ManagedIdentityCredential::detect(env, platform);
        let mut reason = format!(
            "no workload identity or client credentials in the environment; managed identity: {}",
            builder.source().detected_by()
        );
        let takes_user_assigned = matches!(
            builder.source(),
            ManagedIdentitySource::Imds
                | ManagedIdentitySource::AppService
                | ManagedIdentitySource::AzureMl
        );
        if let Some(client_id) =
            optional_env(env, "AZURE_CLIENT_ID").filter(|_| takes_user_assigned)
        {
            reason.push_str("; user-assigned identity from AZURE_CLIENT_ID");
            builder = builder.user_assigned(UserAssignedId::ClientId(client_id));
        }
        let credential = Box::new(builder.build()?);
        Ok(Self::boxed(
            credential,
            CredentialKind::ManagedIdentity,
            reason,
        ))
    }

    fn boxed(inner: Box<dyn TokenCredential>, chosen: CredentialKind, reason: String) -> Self {
        let kind = inner.identity().kind;
        tracing::info!(source = kind, reason = %reason, "credential chosen from the environment");
        DefaultCredential {
            inner,
            chosen,
            reason,
        }
    }

    /// The kind of source chosen.
    pub fn chosen(&self) -> CredentialKind {
        self.chosen
    }

    /// Why it was chosen: which variables selected it.
    pub fn reason(&self) -> &str {
        &self.reason
    }
}

impl TokenCredential for DefaultCredential {
    fn get_token<'a>(
        &'a self,
        request: &'a TokenRequest,
    ) -> BoxFuture<'a, Result<TokenResponse, Error>> {
        self.inner.get_token(request)
    }

    fn identity(&self) -> CredentialIdentity {
        self.inner.identity().with_chosen_because(&self.reason)
    }
}

impl fmt::Debug for DefaultCredential {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DefaultCredential")
            .field("chosen", &self.chosen)
            .field("reason", &self.reason)
            .field("credential", &self.inner)
            .finish()
    }
}

impl fmt::Display for DefaultCredential {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "default credential ({})", self.reason)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use crate::report::{resilience_report, Stack};
    use crate::TokenCache;
    use std::collections::HashMap;
    use std::path::PathBuf;
    use wiremock::matchers::{header, method, path, query_param};
    use wiremock::{Mock, MockServer, ResponseTemplate};

    const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures");

    fn env(pairs: &[(&str, String)]) -> impl Fn(&str) -> Option<String> {
        let map: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), v.clone()))
            .collect();
        move |k| map.get(k).cloned()
    }

    /// A platform without the Azure Arc agent.
    fn platform() -> Platform {
        let dir = std::env::temp_dir().join(format!("ra-chain-{}", std::process::id()));
        Platform {
            himds: dir.join("no-himds"),
            tokens_dir: dir.join("tokens"),
        }
    }

    fn token_file(contents: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("ra-chain-wi-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("token");
        std::fs::write(&path, contents).unwrap();
        path
    }

    fn ok() -> ResponseTemplate {
        ResponseTemplate::new(200).set_body_raw(
            r#"{"token_type":"Bearer","expires_in":3600,"access_token":"at-from-chain"}"#,
            "application/json",
        )
    }

    async fn idp() -> MockServer {
        let server = MockServer::start().await;
        Mock::given(method("POST"))
            .and(path("/tenant-1/oauth2/v2.0/token"))
            .respond_with(ok())
            .mount(&server)
            .await;
        server
    }

    async fn only_form(server: &MockServer) -> HashMap<String, String> {
        let requests = server.received_requests().await.unwrap();
        assert_eq!(requests.len(), 1);
        form_urlencoded::parse(&requests[0].body)
            .into_owned()
            .collect()
    }

    fn request() -> TokenRequest {
        TokenRequest::new(["https://vault.azure.net/.default"])
    }

    fn common(server: &MockServer) -> Vec<(&'static str, String)> {
        vec![
            ("AZURE_TENANT_ID", "tenant-1".to_owned()),
            ("AZURE_CLIENT_ID", "client-1".to_owned()),
            ("AZURE_AUTHORITY_HOST", server.uri()),
        ]
    }

    #[tokio::test]
    async fn c4_default_credential_prefers_workload_identity() {
        let server = idp().await;
        let file = token_file("federated-token-from-kubelet");
        let mut pairs = common(&server);
        pairs.push(("AZURE_FEDERATED_TOKEN_FILE", file.display().to_string()));
        // also configured: a secret and managed identity; workload identity still wins
        pairs.push(("AZURE_CLIENT_SECRET", "s3cr3t".to_owned()));
        pairs.push(("IDENTITY_ENDPOINT", "http://127.0.0.1:9/msi".to_owned()));
        pairs.push(("IDENTITY_HEADER", "h".to_owned()));
        let c = DefaultCredential::from_env_with(&env(&pairs), &platform()).unwrap();
        assert_eq!(c.chosen(), CredentialKind::WorkloadIdentity);
        assert!(
            c.reason().contains("AZURE_FEDERATED_TOKEN_FILE"),
            "{}",
            c.reason()
        );
        assert_eq!(
            c.get_token(&request()).await.unwrap().secret(),
            "at-from-chain"
        );
        let form = only_form(&server).await;
        assert_eq!(form["client_assertion"], "federated-token-from-kubelet");
        assert!(!form.contains_key("client_secret"));
        let id = c.identity();
        assert_eq!(id.kind, "workload_identity");
        assert_eq!(id.source, CredentialKind::WorkloadIdentity);
        assert_eq!(id.chosen_because.as_deref(), Some(c.reason()));
    }

    #[tokio::test]
    async fn c1_default_credential_takes_a_client_secret_before_a_certificate() {
        let server = idp().await;
        let mut pairs = common(&server);
        pairs.push(("AZURE_CLIENT_SECRET", "s3cr3t-value".to_owned()));
        pairs.push((
            "AZURE_CLIENT_CERTIFICATE_PATH",
            format!("{FIXTURES}/cert_and_key.pem"),
        ));
        let c = DefaultCredential::from_env_with(&env(&pairs), &platform()).unwrap();
        assert_eq!(c.chosen(), CredentialKind::ClientSecret);
        assert!(c.reason().contains("AZURE_CLIENT_SECRET"), "{}", c.reason());
        c.get_token(&request()).await.unwrap();
        let form = only_form(&server).await;
        assert_eq!(form["client_secret"], "s3cr3t-value");
        assert_eq!(form["client_id"], "client-1");
        assert!(!format!("{c:?} {c}").contains("s3cr3t"));
    }

    #[tokio::test]
    async fn c2_default_credential_takes_a_certificate_from_the_environment() {
        let server = idp().await;
        let mut pairs = common(&server);
        pairs.push((
            "AZURE_CLIENT_CERTIFICATE_PATH",
            format!("{FIXTURES}/cert_and_key.pem"),
        ));
        let c = DefaultCredential::from_env_with(&env(&pairs), &platform()).unwrap();
        assert_eq!(c.chosen(), CredentialKind::ClientCertificate);
        assert!(
            c.reason().contains("AZURE_CLIENT_CERTIFICATE_PATH"),
            "{}",
            c.reason()
        );
        c.get_token(&request()).await.unwrap();
        let form = only_form(&server).await;
        assert_eq!(
            form["client_assertion_type"],
            "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
        );
        assert_eq!(form["client_assertion"].split('.').count(), 3);
    }

    #[tokio::test]
    async fn c3_default_credential_falls_back_to_managed_identity() {
        let server = MockServer::start().await;
        Mock::given(method("GET"))
            .and(path("/msi/token"))
            .and(header("x-identity-header", "identity-header-value"))
            .and(query_param("client_id", "uami-client"))
            .and(query_param("resource", "https://vault.azure.net"))
            .respond_with(ok())
            .expect(1)
            .mount(&server)
            .await;
        // AZURE_CLIENT_ID without a tenant: not client credentials, but the user-assigned id
        let pairs = vec![
            ("AZURE_CLIENT_ID", "uami-client".to_owned()),
            ("IDENTITY_ENDPOINT", format!("{}/msi/token", server.uri())),
            ("IDENTITY_HEADER", "identity-header-value".to_owned()),
        ];
        let c = DefaultCredential::from_env_with(&env(&pairs), &platform()).unwrap();
        assert_eq!(c.chosen(), CredentialKind::ManagedIdentity);
        assert!(c.reason().contains("IDENTITY_HEADER"), "{}", c.reason());
        assert!(c.reason().contains("AZURE_CLIENT_ID"), "{}", c.reason());
        assert_eq!(
            c.get_token(&request()).await.unwrap().secret(),
            "at-from-chain"
        );
        assert_eq!(c.identity().kind, "managed_identity/app_service");

        // nothing set: IMDS, the system-assigned identity
        let c = DefaultCredential::from_env_with(&env(&[]), &platform()).unwrap();
        assert_eq!(c.identity().kind, "managed_identity/imds");
        assert!(c.reason().contains("IMDS"), "{}", c.reason());
        assert!(!c.reason().contains("AZURE_CLIENT_ID"), "{}", c.reason());
    }

    #[test]
    fn c2_default_credential_does_not_fall_through_a_broken_source() {
        let pairs = vec![
            ("AZURE_TENANT_ID", "tenant-1".to_owned()),
            ("AZURE_CLIENT_ID", "client-1".to_owned()),
            (
                "AZURE_CLIENT_CERTIFICATE_PATH",
                format!("{FIXTURES}/missing.pem"),
            ),
        ];
        let e = DefaultCredential::from_env_with(&env(&pairs), &platform()).unwrap_err();
        assert!(matches!(e, Error::Config(_)), "{e}");
        assert!(e.to_string().contains("cannot read"), "{e}");
    }

    #[tokio::test]
    async fn o3_report_says_which_source_was_chosen_and_why() {
        let server = idp().await;
        let mut pairs = common(&server);
        pairs.push(("AZURE_CLIENT_SECRET", "s3cr3t-value".to_owned()));
        let c = DefaultCredential::from_env_with(&env(&pairs), &platform()).unwrap();
        let reason = c.reason().to_owned();
        let tokens = TokenCache::new(c, ["https://vault.azure.net/.default"]);
        let report = resilience_report(&Stack {
            tokens: Some(&tokens),
            ..Stack::default()
        });
        let check = report.check("credential").unwrap();
        assert!(
            check.detail.starts_with("client_secret:"),
            "{}",
            check.detail
        );
        assert!(
            check
                .detail
                .contains(&format!("chosen from the environment because {reason}")),
            "{}",
            check.detail
        );
    }
}
