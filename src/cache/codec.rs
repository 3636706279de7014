//! How the file and Redis stores write a [`StoredToken`]: a small versioned JSON envelope, and
//! when a token is still worth keeping (access-token lifetime, or the refresh-token retention).
//!
//! Decoding never panics: bytes that are not a readable entry are an error the stores turn into
//! a logged miss.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::store::StoredToken;

/// The largest entry a store reads (rule X3): a token response is capped at 64 KiB as well.
pub(crate) const MAX_ENTRY: usize = 64 * 1024;

/// The envelope version written today.
const VERSION: u8 = 1;

/// How long an entry that carries a refresh token is kept by default, counted from when it was
/// written: Entra ID's refresh tokens for public clients stay valid for 90 days of inactivity.
pub(crate) const DEFAULT_RETENTION: Duration = Duration::from_secs(90 * 24 * 3600);

#[derive(Serialize)]
struct EnvelopeRef<'a> {
    v: u8,
    token: &'a StoredToken,
}

#[derive(Deserialize)]
struct Envelope {
    v: u8,
    token: StoredToken,
}

/// Why an entry could not be read (never contains entry bytes).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum DecodeError {
    /// Larger than [`MAX_ENTRY`].
    TooLarge,
    /// Not a JSON envelope of a known version.
    Malformed,
    /// An encrypted value without the key, a plain value where encryption is required, or a
    /// value that does not decrypt (wrong key, tampered, truncated).
    #[cfg_attr(not(feature = "redis"), allow(dead_code))]
    Decrypt,
}

impl DecodeError {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            DecodeError::TooLarge => "entry too large",
            DecodeError::Malformed => "entry malformed or truncated",
            DecodeError::Decrypt => "entry cannot be decrypted (wrong or missing key, or tampered)",
        }
    }
}

/// The entry as bytes.
pub(crate) fn encode(token: &StoredToken) -> Vec<u8> {
    // Serialising plain strings and integers cannot fail; an empty vector would read as a miss.
    serde_json::to_vec(&EnvelopeRef { v: VERSION, token }).unwrap_or_default()
}

/// The entry in `bytes`.
pub(crate) fn decode(bytes: &[u8]) -> Result<StoredToken, DecodeError> {
    if bytes.len() > MAX_ENTRY {
        return Err(DecodeError::TooLarge);
    }
    let env: Envelope = serde_json::from_slice(bytes).map_err(|_| DecodeError::Malformed)?;
    if env.v != VERSION {
        return Err(DecodeError::Malformed);
    }
    let t = env.token;
    if t.expires_on_ms < t.issued_on_ms {
        return Err(DecodeError::Malformed);
    }
    Ok(t)
}

/// Until when (wall clock, ms since the epoch) an entry is worth keeping: its access token's
/// expiry or, if it carries a refresh token, `retention` after it was issued, whichever is later.
pub(crate) fn keep_until_ms(token: &StoredToken, retention: Duration) -> u64 {
    let retained = if token.refresh_token.is_some() {
        let r = u64::try_from(retention.as_millis()).unwrap_or(u64::MAX);
        token.issued_on_ms.saturating_add(r)
    } else {
        0
    };
    token.expires_on_ms.max(retained)
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn token() -> StoredToken {
        let mut t = StoredToken::new("at-secret", 1_000, 2_000, 3_000);
        t.refresh_token = Some("rt-secret".into());
        t
    }

    #[test]
    fn s2_roundtrip_and_rejects() {
        let t = token();
        assert_eq!(decode(&encode(&t)).unwrap(), t);
        assert_eq!(decode(b""), Err(DecodeError::Malformed));
        assert_eq!(
            decode(b"{\"v\":2,\"token\":{}}"),
            Err(DecodeError::Malformed)
        );
        let bytes = encode(&t);
        assert_eq!(
            decode(&bytes[..bytes.len() / 2]),
            Err(DecodeError::Malformed)
        );
        assert_eq!(
            decode(&vec![b' '; MAX_ENTRY + 1]),
            Err(DecodeError::TooLarge)
        );
        let mut bad = t.clone();
        bad.issued_on_ms = 4_000;
        assert_eq!(decode(&encode(&bad)), Err(DecodeError::Malformed));
    }

    #[test]
    fn s2_retention_only_for_refresh_tokens() {
        let day = Duration::from_secs(86_400);
        let mut t = token();
        assert_eq!(keep_until_ms(&t, day), 1_000 + 86_400_000);
        t.refresh_token = None;
        assert_eq!(keep_until_ms(&t, day), 3_000);
        assert_eq!(keep_until_ms(&token(), Duration::ZERO), 3_000);
    }

    proptest! {
        #[test]
        fn s2_decode_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
            let _ = decode(&bytes);
        }

        #[test]
        fn s2_decode_never_panics_on_mutated_entries(
            flips in proptest::collection::vec((any::<usize>(), any::<u8>()), 0..8),
            cut in any::<usize>(),
        ) {
            let mut bytes = encode(&token());
            for (i, b) in flips {
                let n = bytes.len();
                bytes[i % n] = b;
            }
            bytes.truncate(cut % (bytes.len() + 1));
            let _ = decode(&bytes);
        }
    }
}
