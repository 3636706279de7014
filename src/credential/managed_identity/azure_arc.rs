//! Azure Arc-enabled servers: detected by `IDENTITY_ENDPOINT` + `IMDS_ENDPOINT`, or by the
//! agent's `himds` binary (then `IDENTITY_ENDPOINT`, else the agent's default endpoint). GET
//! `{endpoint}?api-version=2019-11-01&resource=..` with `Metadata: true`; no user-assigned
//! identities.
//!
//! The first request is answered with a challenge: `401` with
//! `WWW-Authenticate: Basic realm=<key file>`. The key file
//! must be a `.key` file directly inside the agent's tokens directory (after resolving symbolic
//! links) and at most 4096 bytes; its contents go back as `Authorization: Basic <contents>`.

use std::fmt;
use std::io::Read;
use std::path::{Component, Path, PathBuf};

use http::{HeaderMap, HeaderValue, StatusCode};

use super::{
    optional_env, Build, Call, Env, ManagedIdentityCredentialBuilder, ManagedIdentitySource,
    Platform, RawResponse, Source, METADATA,
};
use crate::Error;

/// The agent's endpoint when only the `himds` binary revealed the agent.
pub(super) const ARC_DEFAULT_ENDPOINT: &str =
    "http://127.0.0.1:40342/metadata/identity/oauth2/token";
const API_VERSION: &str = "2019-11-01";

pub(super) struct AzureArc {
    /// The directory the challenge's key file must be in: set by `validate`.
    tokens_dir: PathBuf,
}

pub(super) fn detect(
    env: Env<'_>,
    platform: &Platform,
) -> Option<ManagedIdentityCredentialBuilder> {
    let identity_endpoint = optional_env(env, "IDENTITY_ENDPOINT");
    let imds_endpoint = optional_env(env, "IMDS_ENDPOINT");
    match (identity_endpoint, imds_endpoint) {
        (Some(endpoint), Some(_)) => Some(builder(endpoint)),
        (endpoint, _) if platform.himds.is_file() => Some(builder(
            endpoint.unwrap_or_else(|| ARC_DEFAULT_ENDPOINT.to_owned()),
        )),
        _ => None,
    }
}

pub(super) fn builder(endpoint: String) -> ManagedIdentityCredentialBuilder {
    ManagedIdentityCredentialBuilder::new(
        ManagedIdentitySource::AzureArc,
        AzureArc {
            tokens_dir: PathBuf::new(),
        },
        endpoint,
    )
}

impl Source for AzureArc {
    fn validate(&mut self, build: Build<'_>) -> Result<(), Error> {
        build.no_user_assigned()?;
        self.tokens_dir = build.arc_tokens_dir.to_path_buf();
        Ok(())
    }

    fn request(&self, call: &Call<'_>) -> Result<reqwest::RequestBuilder, Error> {
        let get = call.get(API_VERSION, &[]);
        Ok(get.header(METADATA, HeaderValue::from_static("true")))
    }

    /// A `401 Basic realm=<key file>`: the key file is checked and read, and becomes the
    /// `Authorization` of one more request.
    fn answer(&self, first: &RawResponse) -> Result<Option<HeaderValue>, Error> {
        if first.status != StatusCode::UNAUTHORIZED {
            return Ok(None);
        }
        let key_file = challenge_path(&first.headers)?;
        let authorization = read_key(&key_file, &self.tokens_dir)?;
        tracing::debug!(
            kind = ManagedIdentitySource::AzureArc.kind(),
            key_file = %key_file.display(),
            "answering the azure arc challenge"
        );
        Ok(Some(authorization))
    }

    fn debug_fields(&self, d: &mut fmt::DebugStruct<'_, '_>) {
        if !self.tokens_dir.as_os_str().is_empty() {
            d.field("arc_tokens_dir", &self.tokens_dir);
        }
    }
}

/// The largest key file read.
const MAX_KEY_FILE: u64 = 4096;

/// The agent's `himds` binary, whose presence reveals an Azure Arc machine.
pub(super) fn default_himds(env: &dyn Fn(&str) -> Option<String>) -> PathBuf {
    if cfg!(windows) {
        let base = env("ProgramFiles").unwrap_or_else(|| r"C:\Program Files".to_owned());
        Path::new(&base).join(r"AzureConnectedMachineAgent\himds.exe")
    } else {
        PathBuf::from("/opt/azcmagent/bin/himds")
    }
}

/// The directory the agent writes its challenge key files to.
pub(super) fn default_tokens_dir(env: &dyn Fn(&str) -> Option<String>) -> PathBuf {
    if cfg!(windows) {
        let base = env("ProgramData").unwrap_or_else(|| r"C:\ProgramData".to_owned());
        Path::new(&base).join(r"AzureConnectedMachineAgent\Tokens")
    } else {
        PathBuf::from("/var/opt/azcmagent/tokens")
    }
}

fn invalid(msg: impl Into<String>) -> Error {
    Error::invalid_response(format!("azure arc challenge: {}", msg.into()))
}

/// The key file named by the `WWW-Authenticate: Basic realm=<path>` header of a 401.
pub(super) fn challenge_path(headers: &HeaderMap) -> Result<PathBuf, Error> {
    let value = headers
        .get(http::header::WWW_AUTHENTICATE)
        .ok_or_else(|| invalid("401 without a WWW-Authenticate header"))?
        .to_str()
        .map_err(|_| invalid("WWW-Authenticate header is not text"))?
        .trim();
    let (scheme, rest) = value.split_once(' ').unwrap_or((value, ""));
    if !scheme.eq_ignore_ascii_case("basic") {
        return Err(invalid("WWW-Authenticate scheme is not Basic"));
    }
    let rest = rest.trim();
    let path = rest
        .get(..6)
        .filter(|k| k.eq_ignore_ascii_case("realm="))
        .map(|_| rest[6..].trim().trim_matches('"'))
        .ok_or_else(|| invalid("WWW-Authenticate has no realm"))?;
    if path.is_empty() {
        return Err(invalid("WWW-Authenticate realm is empty"));
    }
    Ok(PathBuf::from(path))
}

/// Checks `path` against `tokens_dir` and reads it into a sensitive `Basic` header value.
pub(super) fn read_key(path: &Path, tokens_dir: &Path) -> Result<HeaderValue, Error> {
    let shown = path.display();
    if !path.is_absolute()
        || path
            .components()
            .any(|c| matches!(c, Component::ParentDir | Component::CurDir))
    {
        return Err(invalid(format!(
            "key file {shown} is not a plain absolute path"
        )));
    }
    if path.extension().is_none_or(|e| e != "key") {
        return Err(invalid(format!("key file {shown} does not end in .key")));
    }
    if path.parent() != Some(tokens_dir) {
        return Err(invalid(format!(
            "key file {shown} is not in the agent's tokens directory {}",
            tokens_dir.display()
        )));
    }
    // Resolve symbolic links: the file itself must really be in the directory.
    let real = std::fs::canonicalize(path)
        .map_err(|e| invalid(format!("cannot open key file {shown}: {}", e.kind())))?;
    let real_dir = std::fs::canonicalize(tokens_dir)
        .map_err(|e| invalid(format!("cannot open tokens directory: {}", e.kind())))?;
    if real.parent() != Some(real_dir.as_path()) {
        return Err(invalid(format!(
            "key file {shown} resolves outside the agent's tokens directory"
        )));
    }
    let file = std::fs::File::open(&real)
        .map_err(|e| invalid(format!("cannot open key file {shown}: {}", e.kind())))?;
    let meta = file
        .metadata()
        .map_err(|e| invalid(format!("cannot read key file {shown}: {}", e.kind())))?;
    if !meta.is_file() {
        return Err(invalid(format!("key file {shown} is not a regular file")));
    }
    if meta.len() > MAX_KEY_FILE {
        return Err(invalid(format!(
            "key file {shown} is larger than {MAX_KEY_FILE} bytes"
        )));
    }
    let mut contents = secrecy::zeroize::Zeroizing::new(Vec::new());
    file.take(MAX_KEY_FILE + 1)
        .read_to_end(&mut contents)
        .map_err(|e| invalid(format!("cannot read key file {shown}: {}", e.kind())))?;
    if contents.len() as u64 > MAX_KEY_FILE {
        return Err(invalid(format!(
            "key file {shown} is larger than {MAX_KEY_FILE} bytes"
        )));
    }
    let key = std::str::from_utf8(&contents)
        .map_err(|_| invalid(format!("key file {shown} is not text")))?
        .trim();
    if key.is_empty() {
        return Err(invalid(format!("key file {shown} is empty")));
    }
    let value = secrecy::zeroize::Zeroizing::new(format!("Basic {key}"));
    let mut header = HeaderValue::from_str(&value)
        .map_err(|_| invalid(format!("key file {shown} is not a valid header value")))?;
    header.set_sensitive(true);
    Ok(header)
}
