//! Helpers shared by the benches: a counting fake credential.
#![allow(dead_code, unreachable_pub)]

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use futures_util::future::{BoxFuture, FutureExt};
use resilient_auth::{CredentialIdentity, Error, TokenCredential, TokenRequest, TokenResponse};

/// A credential that counts its calls, waits `latency` (tokio time) and returns a 1 h token
/// about as long as an Entra access token.
#[derive(Clone, Debug, Default)]
pub struct Counting {
    calls: Arc<AtomicUsize>,
    latency: Duration,
}

impl Counting {
    /// Answers after `latency`.
    pub fn new(latency: Duration) -> Self {
        Counting {
            calls: Arc::default(),
            latency,
        }
    }

    /// Requests sent to this "identity provider" so far.
    pub fn calls(&self) -> usize {
        self.calls.load(Ordering::SeqCst)
    }
}

/// A token-shaped secret of typical Entra length (~1.4 KB).
pub fn fake_token(n: usize) -> String {
    format!("eyJ0eXAiOiJKV1Qi.{}.{n:08}", "a".repeat(1400))
}

impl TokenCredential for Counting {
    fn get_token<'a>(
        &'a self,
        _request: &'a TokenRequest,
    ) -> BoxFuture<'a, Result<TokenResponse, Error>> {
        async move {
            let n = self.calls.fetch_add(1, Ordering::SeqCst) + 1;
            if !self.latency.is_zero() {
                tokio::time::sleep(self.latency).await;
            }
            Ok(TokenResponse::new(fake_token(n), Duration::from_secs(3600)))
        }
        .boxed()
    }

    fn identity(&self) -> CredentialIdentity {
        CredentialIdentity::new("bench", "https://login.microsoftonline.com")
            .with_tenant("tenant")
            .with_client_id("client")
    }
}
