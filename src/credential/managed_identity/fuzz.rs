//! The managed-identity fuzz entry point (rule X4); documented at `__fuzz::managed_identity`.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, StatusCode};

use super::{arc, map_response, mi_error};
use crate::credential::http::RawResponse;
use crate::fuzz::{check_idp_error, check_token_response, headers_and_body, split_mode, status};
use crate::Error;

/// The contents of the one readable key file.
const KEY: &str = "fuzz-arc-key-contents-0123456789";
/// The contents of a key file outside the tokens directory, reachable only through a link.
const OUTSIDE: &str = "fuzz-arc-outside-secret-0123456789";

pub(crate) fn response(data: &[u8]) {
    let (mode, rest) = split_mode(data);
    match mode % 4 {
        0 => {
            let (status, rest) = status(rest);
            let (headers, body) = headers_and_body(rest);
            let result = map_response(RawResponse {
                status,
                headers,
                body: Bytes::copy_from_slice(body),
            });
            if status.is_success() {
                check_token_response(result, body);
            } else {
                check_idp_error(result.expect_err("a non-2xx is an error"), status);
            }
        }
        1 => {
            let text = String::from_utf8_lossy(rest);
            let body = serde_json::json!({
                "access_token": "fuzz-access-token-0123456789abcdef",
                "expires_on": text,
                "resource": "https://vault.azure.net",
                "token_type": "Bearer",
            })
            .to_string();
            let result = map_response(RawResponse {
                status: StatusCode::OK,
                headers: HeaderMap::new(),
                body: Bytes::from(body.clone()),
            });
            check_token_response(result, body.as_bytes());
        }
        2 => {
            let (status, rest) = status(rest);
            let (headers, body) = headers_and_body(rest);
            check_idp_error(mi_error(status, &headers, body), status);
        }
        _ => arc_challenge(rest),
    }
}

/// The Azure Arc 401: the challenge's realm names a key file, which must be a `.key` file
/// directly in the tokens directory; only then is it read and sent back.
fn arc_challenge(value: &[u8]) {
    let Ok(value) = HeaderValue::from_bytes(value) else {
        return;
    };
    let mut headers = HeaderMap::new();
    headers.insert(http::header::WWW_AUTHENTICATE, value);
    let path = match arc::challenge_path(&headers) {
        Ok(path) => path,
        Err(e) => {
            assert!(matches!(e, Error::InvalidResponse(_)), "{e:?}");
            return;
        }
    };
    assert!(!path.as_os_str().is_empty());
    let Some(dir) = tokens_dir() else {
        return;
    };
    match arc::read_key(&path, dir) {
        Ok(header) => {
            assert!(header.is_sensitive());
            assert_eq!(header.to_str().ok(), Some(&*format!("Basic {KEY}")));
            let real = std::fs::canonicalize(&path).expect("it was read");
            let real_dir = std::fs::canonicalize(dir).expect("it exists");
            assert_eq!(real.parent(), Some(real_dir.as_path()), "{path:?}");
        }
        Err(e) => {
            assert!(matches!(e, Error::InvalidResponse(_)), "{e:?}");
            let shown = format!("{e} {e:?}");
            assert!(!shown.contains(KEY) && !shown.contains(OUTSIDE), "{shown}");
        }
    }
}

/// `$TMPDIR/resilient-auth-fuzz-arc/tokens`, made once per process: `good.key` (the key),
/// `crlf.key` (the key and a line break), `empty.key`, `big.key` (5000 bytes), `bin.key` (not
/// UTF-8), `ctl.key` (a control character), `dir.key` (a directory), `wrong.txt`, and
/// `link.key`, a symbolic link to `../outside.key`. `None` if it cannot be made.
fn tokens_dir() -> Option<&'static Path> {
    static DIR: OnceLock<Option<PathBuf>> = OnceLock::new();
    DIR.get_or_init(|| {
        let root = std::env::temp_dir().join("resilient-auth-fuzz-arc");
        let tokens = root.join("tokens");
        std::fs::create_dir_all(tokens.join("dir.key")).ok()?;
        let files: [(&Path, &str, Vec<u8>); 8] = [
            (&root, "outside.key", OUTSIDE.into()),
            (&tokens, "good.key", KEY.into()),
            (&tokens, "crlf.key", format!("{KEY}\r\n").into()),
            (&tokens, "empty.key", Vec::new()),
            (&tokens, "big.key", vec![b'k'; 5000]),
            (&tokens, "bin.key", vec![0xff, 0xfe, b'k']),
            (&tokens, "ctl.key", b"fuzz\x01key".to_vec()),
            (&tokens, "wrong.txt", KEY.into()),
        ];
        for (dir, name, contents) in files {
            let path = dir.join(name);
            if std::fs::read(&path).ok().as_ref() != Some(&contents) {
                // write aside and rename: another process may be reading it
                let tmp = dir.join(format!(".{name}.{}", std::process::id()));
                std::fs::write(&tmp, &contents).ok()?;
                std::fs::rename(&tmp, &path).ok()?;
            }
        }
        #[cfg(unix)]
        {
            let link = tokens.join("link.key");
            if std::fs::symlink_metadata(&link).is_err() {
                let _ = std::os::unix::fs::symlink("../outside.key", &link);
            }
        }
        Some(tokens)
    })
    .as_deref()
}
