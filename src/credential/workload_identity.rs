//! [`WorkloadIdentityCredential`]: workload identity federation, e.g. on AKS (rule C4).
//!
//! ```no_run
//! use resilient_auth::{TokenCache, WorkloadIdentityCredential};
//!
//! # fn run() -> Result<(), resilient_auth::Error> {
//! // AZURE_FEDERATED_TOKEN_FILE, AZURE_CLIENT_ID, AZURE_TENANT_ID (+ AZURE_AUTHORITY_HOST),
//! // as the AKS workload identity webhook sets them
//! let tokens = TokenCache::new(
//!     WorkloadIdentityCredential::from_env()?,
//!     ["https://vault.azure.net/.default"],
//! );
//! # Ok(()) }
//! ```
#![cfg(feature = "reqwest")]
#![cfg_attr(docsrs, doc(cfg(feature = "reqwest")))]

use std::borrow::Cow;
use std::fmt;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Duration;

use reqwest::Url;
use secrecy::zeroize::Zeroizing;
use secrecy::{ExposeSecret, SecretString};
use tokio::time::Instant;

use futures_util::future::BoxFuture;

use super::confidential::{
    process_env, required_env, sealed, ClientOptions, ConfidentialClient, ConfidentialCredential,
    CredentialBuilder, Env, Grant, RegionalGrant,
};
use super::{CredentialKind, TokenRequest};
use crate::{Error, TokenResponse};

const KIND: &str = "workload_identity";

/// A cached copy of the token file is re-read once it is older than this.
pub(crate) const REREAD_AFTER: Duration = Duration::from_secs(600);

/// The largest federated token file read.
const MAX_TOKEN_FILE: u64 = 64 * 1024;

/// Workload identity federation (rule C4): a token issued to the workload by another identity
/// provider (the Kubernetes service account token AKS projects into the pod) is the client
/// assertion of a client credentials grant.
///
/// Each [`get_token`](crate::TokenCredential::get_token) sends one POST to
/// `{authority}/{tenant}/oauth2/v2.0/token` with `grant_type=client_credentials`, `client_id`,
/// `client_assertion_type=urn:ietf:params:oauth:client-assertion-type:jwt-bearer`,
/// `client_assertion` (the file's contents), `scope` (and `claims` after a CAE challenge).
///
/// The file is read on first use and re-read once the cached copy is older than 10 minutes
/// (the kubelet rotates it well before it expires). A missing or empty file is an
/// [`Error::Config`] that names the path. The federated token is never shown by `Debug`,
/// `Display`, errors or logs.
pub type WorkloadIdentityCredential = ConfidentialCredential<FederatedTokenGrant>;

impl WorkloadIdentityCredential {
    /// A builder for the application `client_id` of `tenant_id`, authenticating with the
    /// federated token in `token_file`.
    pub fn builder(
        tenant_id: impl Into<String>,
        client_id: impl Into<String>,
        token_file: impl Into<PathBuf>,
    ) -> WorkloadIdentityCredentialBuilder {
        CredentialBuilder::new(
            ClientOptions::new(tenant_id, client_id),
            FederatedTokenGrant {
                token_file: token_file.into(),
            },
        )
    }

    /// Reads `AZURE_TENANT_ID`, `AZURE_CLIENT_ID`, `AZURE_FEDERATED_TOKEN_FILE` and (optional)
    /// `AZURE_AUTHORITY_HOST`, as the AKS workload identity webhook sets them, and (optional)
    /// `AZURE_REGIONAL_AUTHORITY_NAME`.
    ///
    /// # Errors
    /// [`Error::Config`] if a required variable is missing or empty, or a value is invalid.
    pub fn from_env() -> Result<Self, Error> {
        Self::from_env_with(&process_env)
    }

    /// [`from_env`](Self::from_env) over any variable lookup (tests pass a map).
    pub(crate) fn from_env_with(env: Env<'_>) -> Result<Self, Error> {
        let options = ClientOptions::from_env(env, true)?;
        let token_file = required_env(env, "AZURE_FEDERATED_TOKEN_FILE")?.into();
        CredentialBuilder::new(options, FederatedTokenGrant { token_file }).build()
    }

    /// The federated token file.
    pub fn token_file(&self) -> &Path {
        &self.grant.token_file
    }
}

/// A built workload identity credential's own part: the token file and its last contents.
pub(crate) struct FederatedToken {
    token_file: PathBuf,
    cached: Mutex<Option<(SecretString, Instant)>>,
}

impl FederatedToken {
    /// The federated token: the cached copy, or the file's contents if that is older than
    /// 10 minutes.
    fn assertion(&self) -> Result<SecretString, Error> {
        let mut cached = self.cached.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((token, read_at)) = &*cached {
            if read_at.elapsed() < REREAD_AFTER {
                return Ok(token.clone());
            }
        }
        let token = read_token_file(&self.token_file)?;
        *cached = Some((token.clone(), Instant::now()));
        Ok(token)
    }

    fn request(
        &self,
        core: &ConfidentialClient,
        url: &Url,
        request: &TokenRequest,
    ) -> Result<reqwest::Request, Error> {
        let assertion = self.assertion()?;
        core.assertion_post(url, assertion.expose_secret(), request)
    }
}

/// Reads the federated token file: at most 64 KiB, trimmed, not empty.
fn read_token_file(path: &Path) -> Result<SecretString, Error> {
    let shown = path.display();
    let file = std::fs::File::open(path).map_err(|e| {
        Error::config(format!(
            "cannot read the federated token file {shown} (AZURE_FEDERATED_TOKEN_FILE): {}",
            e.kind()
        ))
    })?;
    let mut contents = Zeroizing::new(Vec::new());
    file.take(MAX_TOKEN_FILE + 1)
        .read_to_end(&mut contents)
        .map_err(|e| {
            Error::config(format!(
                "cannot read the federated token file {shown}: {}",
                e.kind()
            ))
        })?;
    if contents.len() as u64 > MAX_TOKEN_FILE {
        return Err(Error::config(format!(
            "the federated token file {shown} is larger than {MAX_TOKEN_FILE} bytes"
        )));
    }
    let text = std::str::from_utf8(&contents)
        .map_err(|_| Error::config(format!("the federated token file {shown} is not text")))?;
    let token = text.trim();
    if token.is_empty() {
        return Err(Error::config(format!(
            "the federated token file {shown} is empty"
        )));
    }
    Ok(SecretString::from(token))
}

/// Builds a [`WorkloadIdentityCredential`]; see [`WorkloadIdentityCredential::builder`].
/// The shared setters (authority, token URL, region, timeout, HTTP client) are
/// [`CredentialBuilder`]'s.
pub type WorkloadIdentityCredentialBuilder = CredentialBuilder<FederatedTokenGrant>;

/// The workload identity grant's own settings (see [`WorkloadIdentityCredentialBuilder`]).
#[derive(Debug)]
pub struct FederatedTokenGrant {
    token_file: PathBuf,
}

impl sealed::Sealed for FederatedTokenGrant {}

impl RegionalGrant for FederatedTokenGrant {}

impl Grant for FederatedTokenGrant {
    type Built = FederatedToken;

    const NAME: &'static str = "WorkloadIdentityCredential";

    fn fetch<'a>(
        credential: &'a WorkloadIdentityCredential,
        request: &'a TokenRequest,
    ) -> BoxFuture<'a, Result<TokenResponse, Error>> {
        let (core, token) = (&credential.core, &credential.grant);
        Box::pin(core.call(move |url| token.request(core, url, request)))
    }

    fn debug_fields(token: &FederatedToken, d: &mut fmt::DebugStruct<'_, '_>) {
        d.field("token_file", &token.token_file)
            .field("federated_token", &"<redacted>");
    }

    fn what(_: &FederatedToken) -> Cow<'static, str> {
        Cow::Borrowed("workload identity credential")
    }
}

impl CredentialBuilder<FederatedTokenGrant> {
    /// Validates the configuration and builds the credential. The token file is read on first
    /// use, not here (it may appear after the process starts).
    ///
    /// # Errors
    /// [`Error::Config`] for an empty client id or token file path, an invalid tenant, token
    /// URL or region, a zero timeout, or an HTTP client that cannot be built.
    pub fn build(self) -> Result<WorkloadIdentityCredential, Error> {
        if self.grant.token_file.as_os_str().is_empty() {
            return Err(Error::config("federated token file path is empty"));
        }
        let core = self
            .options
            .resolve(KIND, CredentialKind::WorkloadIdentity)?;
        let token = FederatedToken {
            token_file: self.grant.token_file,
            cached: Mutex::new(None),
        };
        Ok(ConfidentialCredential { core, grant: token })
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    use crate::credential::confidential::test_env as env;
    use crate::TokenCredential;

    fn temp_file(name: &str, contents: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("ra-wi-{}-{name}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("token");
        std::fs::write(&path, contents).unwrap();
        path
    }

    #[test]
    fn c4_from_env_reads_azure_variables() {
        let c = WorkloadIdentityCredential::from_env_with(&env(&[
            ("AZURE_TENANT_ID", "tenant-1"),
            ("AZURE_CLIENT_ID", "client-1"),
            (
                "AZURE_FEDERATED_TOKEN_FILE",
                "/var/run/secrets/azure/tokens/azure-identity-token",
            ),
            ("AZURE_AUTHORITY_HOST", "https://login.microsoftonline.us/"),
        ]))
        .unwrap();
        let id = c.identity();
        assert_eq!(id.kind, "workload_identity");
        assert_eq!(id.authority, "https://login.microsoftonline.us");
        assert_eq!(id.tenant.as_deref(), Some("tenant-1"));
        assert_eq!(id.client_id.as_deref(), Some("client-1"));
        assert_eq!(
            c.token_file(),
            Path::new("/var/run/secrets/azure/tokens/azure-identity-token")
        );
        for missing in [
            "AZURE_TENANT_ID",
            "AZURE_CLIENT_ID",
            "AZURE_FEDERATED_TOKEN_FILE",
        ] {
            let pairs: Vec<(&str, &str)> = [
                ("AZURE_TENANT_ID", "t"),
                ("AZURE_CLIENT_ID", "c"),
                ("AZURE_FEDERATED_TOKEN_FILE", "/f"),
            ]
            .into_iter()
            .filter(|(k, _)| *k != missing)
            .collect();
            let e = WorkloadIdentityCredential::from_env_with(&env(&pairs)).unwrap_err();
            assert!(
                matches!(e, Error::Config(_)) && e.to_string().contains(missing),
                "{e}"
            );
        }
    }

    #[tokio::test(start_paused = true)]
    async fn c4_token_file_is_reread_after_10_minutes() {
        let path = temp_file("reread", "federated-one\n");
        let c = WorkloadIdentityCredential::builder("t", "c", &path)
            .build()
            .unwrap();
        assert_eq!(
            c.grant.assertion().unwrap().expose_secret(),
            "federated-one"
        );
        std::fs::write(&path, "federated-two").unwrap();
        tokio::time::advance(REREAD_AFTER - Duration::from_secs(1)).await;
        assert_eq!(
            c.grant.assertion().unwrap().expose_secret(),
            "federated-one"
        );
        tokio::time::advance(Duration::from_secs(1)).await;
        assert_eq!(
            c.grant.assertion().unwrap().expose_secret(),
            "federated-two"
        );
        let shown = format!("{c:?} {c}");
        assert!(!shown.contains("federated-"), "{shown}");
    }

    #[test]
    fn c4_missing_or_empty_token_file_is_a_config_error_naming_the_path() {
        let path = temp_file("empty", " \n");
        let c = WorkloadIdentityCredential::builder("t", "c", &path)
            .build()
            .unwrap();
        let e = c.grant.assertion().unwrap_err();
        assert!(matches!(e, Error::Config(_)), "{e:?}");
        assert!(e.to_string().contains(&path.display().to_string()), "{e}");
        assert!(e.to_string().contains("empty"), "{e}");

        let missing = path.with_file_name("no-such-token");
        let c = WorkloadIdentityCredential::builder("t", "c", &missing)
            .build()
            .unwrap();
        let e = c.grant.assertion().unwrap_err();
        assert!(matches!(e, Error::Config(_)), "{e:?}");
        assert!(
            e.to_string().contains(&missing.display().to_string()),
            "{e}"
        );
    }
}
