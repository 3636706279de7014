//! [`AuthLayer`]: attach a cached bearer token to the origins it is for; one resend on a 401
//! challenge (rules A1, A2, X2, X5).

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};

use futures_util::future::BoxFuture;
use http::header::AUTHORIZATION;
use http::{Request, Response, StatusCode};
use tower_layer::Layer;
use tower_service::Service;

use super::body::{RequestCopy, TryCloneBody};
use super::challenge::{challenge, Challenge};
use super::retry::TowerTransport;
use crate::origin::{Decision, Origin, TokenOrigins};
use crate::retry::classify::Deadline;
use crate::retry::driver::{self, Transport};
use crate::{AccessToken, BoxError, Error, TokenCache};

/// Attaches `Authorization: Bearer …` from a [`TokenCache`] to the requests that pass through,
/// for the origins the token is for.
///
/// - The header value was built once per token and is marked sensitive; with a usable cached
///   token, attaching it costs a reference-count increment.
/// - A request that already has an `Authorization` header is left alone.
/// - The token goes only to the origins it is for (rule X5), decided once when the layer is
///   built: the origins given to [`allow_origins`](Self::allow_origins); without them, the
///   hosts the cache's scopes name (the scope's own https host, and for well-known Azure
///   resources their service hosts: `https://vault.azure.net/.default` →
///   `https://*.vault.azure.net`; see the table in [`crate::origin`]). A request to any
///   other origin is sent without the token, whichever request it is: a redirect followed by a
///   layer outside this one, a retry, a resend.
/// - Scopes that name no host (`api://…`, an application id) and no `allow_origins`: every
///   request fails with [`Error::Config`] naming the fix (and the resilience report fails
///   the check). [`allow_any_origin`](Self::allow_any_origin) is the explicit opt-out.
/// - Tokens go only over HTTPS, or plain http to a loopback host (X2); with
///   `allow_any_origin`, a request to any other plain-http URL fails with [`Error::Config`]
///   rather than leak the token.
/// - A 401 with `WWW-Authenticate: Bearer error="invalid_token"` drops the cached token, fetches
///   a new one and resends once; `error="insufficient_claims", claims="…"` (CAE) fetches a token
///   with those claims and resends once. Never more than one resend; a request whose body cannot
///   be copied is not resent.
/// - A request carrying a [`Deadline`] waits out an identity-provider throttle that ends before
///   it; otherwise a throttled cache fails at once with [`Error::Throttled`].
#[derive(Clone)]
pub struct AuthLayer {
    tokens: TokenCache,
    origins: TokenOrigins,
    resend: bool,
    /// On reqwest-middleware, where the layer is shared and called by reference: the first
    /// origin the token was attached for (as the URL spells it). A later request to the same
    /// scheme, host and port is decided without parsing them again — the decision depends only
    /// on them, on an `Authorization` header already there and on the layer's origins, which
    /// are fixed once it is built (every setter starts a new, empty cell). The tower service
    /// keeps the same per service in `Auth::attach_to`.
    #[cfg(feature = "reqwest")]
    attached: Arc<std::sync::OnceLock<UrlOrigin>>,
}

/// A URL's scheme, host and port as written (see `AuthLayer::attached`).
#[cfg(feature = "reqwest")]
#[derive(Debug)]
struct UrlOrigin {
    scheme: String,
    host: String,
    port: Option<u16>,
}

#[cfg(feature = "reqwest")]
impl UrlOrigin {
    fn of(url: &reqwest::Url) -> Self {
        UrlOrigin {
            scheme: url.scheme().to_owned(),
            host: url.host_str().unwrap_or("").to_owned(),
            port: url.port(),
        }
    }

    fn is_of(&self, url: &reqwest::Url) -> bool {
        self.port == url.port()
            && url.host_str() == Some(self.host.as_str())
            && self.scheme == url.scheme()
    }
}

impl AuthLayer {
    /// Attaches tokens from `tokens` to requests to the origins its scopes name (rule X5):
    /// `https://vault.azure.net/.default` sends the token to `https://*.vault.azure.net`,
    /// `https://api.contoso.com/.default` to `https://api.contoso.com` only. Name the origins
    /// with [`allow_origins`](Self::allow_origins) when they differ (and for scopes such as
    /// `api://…` that name no host: without it, every request fails with [`Error::Config`]).
    pub fn new(tokens: TokenCache) -> Self {
        let origins = TokenOrigins::from_scopes(tokens.scopes());
        AuthLayer {
            tokens,
            origins,
            resend: true,
            #[cfg(feature = "reqwest")]
            attached: Arc::default(),
        }
    }

    /// Whether a 401 challenge (`invalid_token`, CAE `insufficient_claims`) is answered with one
    /// resend (default `true`). Resending needs a copy of each request (its headers) kept until
    /// the response arrives; switch it off if the resources you call never send challenges and
    /// the copy matters to you. The challenge is then returned to the caller, and an
    /// `invalid_token` still drops the cached token so the next request gets a new one.
    #[must_use]
    pub fn resend_on_challenge(mut self, resend: bool) -> Self {
        self.resend = resend;
        self
    }

    /// Sends the token only to these origins, instead of the ones the scopes name; requests to
    /// other origins go out without it. An origin is `https://host`, `https://host:port`,
    /// `https://*.example.com` (every subdomain of `example.com`, at any depth, not
    /// `example.com` itself), or plain `http://` to a loopback host (`http://127.0.0.1:8080`).
    ///
    /// # Errors
    /// [`Error::Config`] if an entry is not an origin (scheme and host, no path, no
    /// credentials), is plain http to a host that is not loopback (rule X2), or the list is
    /// empty.
    pub fn allow_origins<I, S>(mut self, origins: I) -> Result<Self, Error>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        self.origins = TokenOrigins::allowed(origins)?;
        self.forget_attached();
        Ok(self)
    }

    /// Sends the token to every origin the client calls (https, or plain http to loopback):
    /// the opt-out of rule X5. Any origin a request names gets the token, including one a
    /// redirect follower outside this layer was sent to; the resilience report warns about it.
    /// Prefer [`allow_origins`](Self::allow_origins).
    #[must_use]
    pub fn allow_any_origin(mut self) -> Self {
        self.origins = TokenOrigins::Any;
        self.forget_attached();
        self
    }

    /// The origins changed: what was decided for the old ones no longer holds.
    fn forget_attached(&mut self) {
        #[cfg(feature = "reqwest")]
        {
            self.attached = Arc::default();
        }
    }

    /// Whether the token is restricted to named origins (given or derived from the scopes);
    /// `false` only after [`allow_any_origin`](Self::allow_any_origin).
    pub fn is_restricted(&self) -> bool {
        self.origins.is_restricted()
    }

    /// The token cache.
    pub fn tokens(&self) -> &TokenCache {
        &self.tokens
    }

    pub(crate) fn token_origins(&self) -> &TokenOrigins {
        &self.origins
    }

    #[cfg(feature = "reqwest")]
    pub(crate) fn resends(&self) -> bool {
        self.resend
    }

    /// Decides for one reqwest request: at once for the origin the token was attached for
    /// first (see `attached`), otherwise as [`decide`](Self::decide) does.
    #[cfg(feature = "reqwest")]
    pub(crate) fn decide_url(&self, url: &reqwest::Url, headers: &http::HeaderMap) -> Decision {
        if self.attached.get().is_some_and(|known| known.is_of(url))
            && !headers.contains_key(AUTHORIZATION)
        {
            return Decision::Attach;
        }
        let decision = self.decide(Origin::of_url(url), headers);
        if matches!(decision, Decision::Attach) && self.attached.get().is_none() {
            // Once per layer: the strings are allocated here only.
            let _ = self.attached.set(UrlOrigin::of(url));
        }
        decision
    }

    /// Decides for one request without allocating (this runs on every request, so the same
    /// code decides for both stacks).
    pub(crate) fn decide(&self, origin: Origin<'_>, headers: &http::HeaderMap) -> Decision {
        if headers.contains_key(AUTHORIZATION) {
            return Decision::Skip;
        }
        self.origins.decide(&origin)
    }
}

impl fmt::Debug for AuthLayer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AuthLayer")
            .field("tokens", &self.tokens)
            .field("origins", &self.origins)
            .field("resend", &self.resend)
            .finish()
    }
}

impl<S> Layer<S> for AuthLayer {
    type Service = Auth<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Auth {
            inner,
            layer: Arc::new(self.clone()),
            attach_to: None,
        }
    }
}

/// The service [`AuthLayer`] produces.
#[derive(Debug)]
pub struct Auth<S> {
    inner: S,
    /// Shared by the clones (the retry layers outside clone the service on every call): one
    /// reference count for the cache and the origins.
    layer: Arc<AuthLayer>,
    /// The scheme and authority the last request that got the token went to: the next request
    /// to the same one (compared as the origin rules do, ASCII case-insensitively) gets it
    /// without parsing host and port again. The decision depends only on them and on the
    /// layer's fixed origins, so it is the same.
    attach_to: Option<(http::uri::Scheme, http::uri::Authority)>,
}

impl<S: Clone> Clone for Auth<S> {
    /// A clone starts without the remembered origin (clones made for a retry send one request).
    fn clone(&self) -> Self {
        Auth {
            inner: self.inner.clone(),
            layer: self.layer.clone(),
            attach_to: None,
        }
    }
}

/// Attaches `token` to `req` and sends it, and on an actionable 401 challenge fetches the right
/// token and resends once (shared by both stacks). Only a 401 takes the (boxed) slow path.
///
/// The request is prepared before the `async` block, and this is not an `async fn`: an
/// `async fn` keeps its arguments twice (see [`driver::run`](crate::retry::driver::run)).
pub(crate) fn send_with_challenge<'a, T: Transport + 'a>(
    tokens: &'a TokenCache,
    mut transport: T,
    mut req: T::Req,
    token: AccessToken,
    resend: bool,
    to_err: fn(Error) -> T::Err,
) -> impl Future<Output = Result<T::Resp, T::Err>> + 'a {
    // The copy for a resend is taken before the token goes in (the resend carries a new one):
    // a request without headers of its own is then copied without allocating a header map.
    let backup = if resend {
        transport.try_copy(&req)
    } else {
        None
    };
    T::req_headers_mut(&mut req).insert(AUTHORIZATION, token.header_value().clone());
    async move {
        let result = transport.send(req).await;
        let challenged = matches!(&result, Ok(resp) if T::head(resp).0 == StatusCode::UNAUTHORIZED);
        if !challenged {
            return result;
        }
        Box::pin(answer_challenge(
            tokens,
            &mut transport,
            backup,
            token,
            result,
            resend,
            to_err,
        ))
        .await
    }
}

/// After a 401: reads the challenge, fetches the token it asks for and resends `backup` once.
/// (A function returning an `async` block, for the reason given at [`send_with_challenge`].)
#[allow(clippy::manual_async_fn)] // an `async fn` keeps its arguments twice
pub(crate) fn answer_challenge<'a, T: Transport>(
    tokens: &'a TokenCache,
    transport: &'a mut T,
    backup: Option<T::Copy>,
    token: AccessToken,
    result: Result<T::Resp, T::Err>,
    resend: bool,
    to_err: fn(Error) -> T::Err,
) -> impl Future<Output = Result<T::Resp, T::Err>> + 'a {
    async move {
        let Ok(resp) = &result else { return result };
        let (status, headers, _) = T::head(resp);
        if status != StatusCode::UNAUTHORIZED {
            return result;
        }
        let first = driver::attempts_of::<T>(&result);
        let Some(found) = challenge(headers) else {
            return result;
        };
        let Some(again) = backup else {
            if resend {
                tracing::warn!("401 challenge, but the request body cannot be copied: not resent");
            }
            if found == Challenge::InvalidToken {
                tokens.invalidate(&token);
            }
            return result;
        };
        let fresh = match &found {
            Challenge::InvalidToken => {
                tokens.invalidate(&token);
                tokens.token().await
            }
            Challenge::InsufficientClaims(claims) => tokens.token_with_claims(claims).await,
        };
        let fresh = match fresh {
            Ok(t) => t,
            Err(e) => return Err(to_err(e)),
        };
        if matches!(found, Challenge::InvalidToken) && fresh.same_as(&token) {
            return result;
        }
        tracing::info!(
            challenge = ?ChallengeKind(&found),
            "401 challenge: resending once with a new token"
        );
        let Some(mut again) = T::into_request(again) else {
            tracing::warn!("401 challenge, but the request copy is gone: not resent");
            return result;
        };
        drop(result);
        T::req_headers_mut(&mut again).insert(AUTHORIZATION, fresh.header_value().clone());
        // The resend is a request on the wire too (rule R7): the count covers both.
        let resent = transport.send(again).await;
        let sent = first.saturating_add(driver::attempts_of::<T>(&resent));
        driver::finish::<T>(resent, sent, false)
    }
}

/// Without a resend: an `invalid_token` challenge still drops the rejected token.
pub(crate) fn forget_rejected(tokens: &TokenCache, token: &AccessToken, headers: &http::HeaderMap) {
    if challenge(headers) == Some(Challenge::InvalidToken) {
        tokens.invalidate(token);
    }
}

/// Logs the kind of a challenge without its claims.
struct ChallengeKind<'a>(&'a Challenge);

impl fmt::Debug for ChallengeKind<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self.0 {
            Challenge::InvalidToken => "invalid_token",
            Challenge::InsufficientClaims(_) => "insufficient_claims",
        })
    }
}

/// Gets a token for a request: the cache, waiting out a throttle only within the deadline.
pub(crate) async fn token_for(
    tokens: &TokenCache,
    deadline: Option<Deadline>,
) -> Result<AccessToken, Error> {
    match deadline {
        Some(d) => tokens.token_before(d.0).await,
        None => tokens.token().await,
    }
}

impl<S, B, RB> Service<Request<B>> for Auth<S>
where
    S: Service<Request<B>, Response = Response<RB>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Into<BoxError>,
    B: TryCloneBody + Send + 'static,
    RB: Send + 'static,
{
    type Response = Response<RB>;
    type Error = BoxError;
    type Future = ResponseFuture<S, B>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, mut req: Request<B>) -> Self::Future {
        let same_origin = !req.headers().contains_key(AUTHORIZATION)
            && matches!(
                (&self.attach_to, req.uri().scheme(), req.uri().authority()),
                (Some((s, a)), Some(scheme), Some(authority))
                    if s == scheme && (a.as_str() == authority.as_str() || a == authority)
            );
        let decision = if same_origin {
            Decision::Attach
        } else {
            let decision = self.layer.decide(Origin::of_uri(req.uri()), req.headers());
            if let (Decision::Attach, Some(scheme), Some(authority)) =
                (&decision, req.uri().scheme(), req.uri().authority())
            {
                self.attach_to = Some((scheme.clone(), authority.clone()));
            }
            decision
        };
        match decision {
            Decision::Refuse(e) => {
                return ResponseFuture {
                    state: State::Slow {
                        fut: Box::pin(async move { Err(Box::new(e) as BoxError) }),
                    },
                }
            }
            Decision::Skip => {
                return ResponseFuture {
                    state: State::Pass {
                        fut: self.inner.call(req),
                    },
                }
            }
            Decision::Attach => {}
        }
        let tokens = self.layer.tokens.clone();
        if let Some(token) = tokens.cached() {
            // Only a possible resend needs a copy of the request and a service to send it with.
            // The copy is taken before the token goes in (a resend gets a new one anyway): for a
            // request without headers of its own it then allocates nothing.
            let backup = match self.layer.resend {
                true => RequestCopy::of(&req),
                false => None,
            };
            req.headers_mut()
                .insert(AUTHORIZATION, token.header_value().clone());
            let mut svc = backup.is_some().then(|| self.take_ready());
            let fut = match &mut svc {
                Some(svc) => svc.call(req),
                None => self.inner.call(req),
            };
            return ResponseFuture {
                state: State::First {
                    fut,
                    rest: Some(Rest {
                        svc,
                        backup,
                        token,
                        tokens,
                    }),
                },
            };
        }
        let inner = self.take_ready();
        let deadline = req.extensions().get::<Deadline>().copied();
        let resend = self.layer.resend;
        let fut = async move {
            let token = token_for(&tokens, deadline)
                .await
                .map_err(|e| Box::new(e) as BoxError)?;
            let t = TowerTransport::new(inner);
            send_with_challenge(&tokens, t, req, token, resend, |e| Box::new(e) as BoxError).await
        };
        ResponseFuture {
            state: State::Slow { fut: Box::pin(fut) },
        }
    }
}

impl<S: Clone> Auth<S> {
    /// The service `poll_ready` readied, leaving a fresh clone in its place (tower's pattern for
    /// services used after `call` returns).
    fn take_ready(&mut self) -> S {
        let clone = self.inner.clone();
        std::mem::replace(&mut self.inner, clone)
    }
}

struct Rest<S, B> {
    svc: Option<S>,
    backup: Option<RequestCopy<B>>,
    token: AccessToken,
    tokens: TokenCache,
}

pin_project_lite::pin_project! {
    /// The future of an [`Auth`] call.
    pub struct ResponseFuture<S, B>
    where
        S: Service<Request<B>>,
    {
        #[pin]
        state: State<S::Future, Rest<S, B>, S::Response>,
    }
}

pin_project_lite::pin_project! {
    #[project = StateProj]
    enum State<F, R, T> {
        Pass { #[pin] fut: F },
        First { #[pin] fut: F, rest: Option<R> },
        Slow { fut: BoxFuture<'static, Result<T, BoxError>> },
    }
}

impl<S, B> fmt::Debug for ResponseFuture<S, B>
where
    S: Service<Request<B>>,
{
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ResponseFuture").finish_non_exhaustive()
    }
}

impl<S, B, RB> Future for ResponseFuture<S, B>
where
    S: Service<Request<B>, Response = Response<RB>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Into<BoxError>,
    B: TryCloneBody + Send + 'static,
    RB: Send + 'static,
{
    type Output = Result<Response<RB>, BoxError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut this = self.project();
        loop {
            match this.state.as_mut().project() {
                StateProj::Pass { fut } => return fut.poll(cx).map_err(Into::into),
                StateProj::First { fut, rest } => {
                    if rest.is_none() {
                        return Poll::Ready(Err("ResponseFuture polled after completion".into()));
                    }
                    let result = ready!(fut.poll(cx)).map_err(Into::into);
                    let needs_resend =
                        matches!(&result, Ok(r) if r.status() == StatusCode::UNAUTHORIZED);
                    if !needs_resend {
                        // Dropped in place: the success path moves nothing out of the future.
                        *rest = None;
                        return Poll::Ready(result);
                    }
                    let Some(rest) = rest.take() else {
                        return Poll::Ready(Err("ResponseFuture polled after completion".into()));
                    };
                    let (Some(backup), Some(svc)) = (rest.backup, rest.svc) else {
                        if let Ok(resp) = &result {
                            forget_rejected(&rest.tokens, &rest.token, resp.headers());
                        }
                        return Poll::Ready(result);
                    };
                    let fut = async move {
                        let mut t = TowerTransport::new(svc);
                        answer_challenge(
                            &rest.tokens,
                            &mut t,
                            Some(backup),
                            rest.token,
                            result,
                            true,
                            |e| Box::new(e) as BoxError,
                        )
                        .await
                    };
                    this.state.set(State::Slow { fut: Box::pin(fut) });
                }
                StateProj::Slow { fut } => return fut.as_mut().poll(cx),
            }
        }
    }
}
