//! The Azure Arc challenge: `401` with `WWW-Authenticate: Basic realm=<key file>`. The key file
//! must be a `.key` file directly inside the agent's tokens directory (after resolving symbolic
//! links) and at most 4096 bytes; its contents go back as `Authorization: Basic <contents>`.

use std::io::Read;
use std::path::{Component, Path, PathBuf};

use http::{HeaderMap, HeaderValue};

use crate::Error;

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
