// The stacks under test, built from one version of resilient-auth. Included by `main.rs` once
// per version, inside a module where `r` names that version.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use futures_util::future::{BoxFuture, FutureExt};
use http::{Request, Response};
use reqwest_middleware::{ClientBuilder, ClientWithMiddleware};
use tower::{Layer, Service};

/// A credential that answers at once with a 1.5 KB token, valid for an hour; counts its calls.
#[derive(Debug, Clone, Default)]
pub struct Fixed {
    calls: Arc<AtomicUsize>,
}

impl Fixed {
    pub fn calls(&self) -> usize {
        self.calls.load(Ordering::SeqCst)
    }
}

impl r::TokenCredential for Fixed {
    fn get_token<'a>(
        &'a self,
        _request: &'a r::TokenRequest,
    ) -> BoxFuture<'a, Result<r::TokenResponse, r::Error>> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        async { Ok(r::TokenResponse::new(crate::TOKEN, Duration::from_secs(3600))) }.boxed()
    }

    fn identity(&self) -> r::CredentialIdentity {
        r::CredentialIdentity::new("bench", "https://login.microsoftonline.com")
            .with_tenant("tenant")
            .with_client_id("client")
    }
}

/// A warm cache (one token fetched) for `https://api.example.com/.default`.
pub fn warm_cache(rt: &tokio::runtime::Runtime) -> (r::TokenCache, Fixed) {
    let credential = Fixed::default();
    let tokens = r::TokenCache::new(credential.clone(), ["https://api.example.com/.default"]);
    let token = rt.block_on(tokens.token()).expect("token");
    assert_eq!(token.secret(), crate::TOKEN);
    (tokens, credential)
}

pub type Resp = Response<()>;

/// `AuthLayer` with its defaults (401 resend on).
pub fn auth<S>(tokens: &r::TokenCache, inner: S) -> impl Service<Request<()>, Response = Resp, Error = r::BoxError>
where
    S: Service<Request<()>, Response = Resp> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Into<r::BoxError>,
{
    r::AuthLayer::new(tokens.clone()).layer(inner)
}

/// `AuthLayer` with `resend_on_challenge(false)`.
pub fn auth_no_resend<S>(tokens: &r::TokenCache, inner: S) -> impl Service<Request<()>, Response = Resp, Error = r::BoxError>
where
    S: Service<Request<()>, Response = Resp> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Into<r::BoxError>,
{
    r::AuthLayer::new(tokens.clone())
        .resend_on_challenge(false)
        .layer(inner)
}

/// The four layers, outermost first: RetryAfter, ExpBackoff, Auth, Timeout (10 s).
pub fn four<S>(tokens: &r::TokenCache, inner: S) -> impl Service<Request<()>, Response = Resp, Error = r::BoxError>
where
    S: Service<Request<()>, Response = Resp> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Into<r::BoxError>,
{
    let timeout = r::TimeoutLayer::new(Duration::from_secs(10)).layer(inner);
    let auth = r::AuthLayer::new(tokens.clone()).layer(timeout);
    let backoff = r::ExpBackoffLayer::default().layer(auth);
    r::RetryAfterLayer::default().layer(backoff)
}

/// The four layers on reqwest-middleware, the token sent to `origin`.
pub fn four_client(plain: reqwest::Client, tokens: &r::TokenCache, origin: &str) -> ClientWithMiddleware {
    ClientBuilder::new(plain)
        .with(r::RetryAfterLayer::default())
        .with(r::ExpBackoffLayer::default())
        .with(
            r::AuthLayer::new(tokens.clone())
                .allow_origins([origin])
                .expect("origin"),
        )
        .with(r::TimeoutLayer::new(Duration::from_secs(10)))
        .build()
}
