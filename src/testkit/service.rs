//! [`FakeService`]: the fake as an in-memory `tower::Service`, for paused-time tests.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use futures_util::future::BoxFuture;
use http::{Request, Response};
use http_body::Body;
use http_body_util::{BodyExt, Full, Limited};
use tower_service::Service;

use super::handler::{handle, unreadable_body, State, MAX_BODY};
use crate::BoxError;

/// The fake identity provider, token endpoint, IMDS and API as an in-memory
/// `tower::Service<http::Request<B>>`: the same handler, faults and log as the socket server,
/// with no socket. Get one with
/// [`FakeIdentityProvider::service`](super::FakeIdentityProvider::service); clones share the fake.
///
/// Only the request's path, method, headers and body matter (the scheme, host and port are
/// ignored), so the URLs of [`FakeIdentityProvider::api_url`](super::FakeIdentityProvider::api_url)
/// and friends work. Faults map to what a client stack sees from a real connection:
/// [`FaultKind::Drop`](super::FaultKind::Drop) is an `Err` whose source chain holds an
/// `std::io::Error` of kind `ConnectionReset`, [`FaultKind::Hang`](super::FaultKind::Hang) is a
/// future that stays pending (until the caller's timeout drops it, which the log records as
/// [`Outcome::Abandoned`](super::Outcome::Abandoned)).
///
/// Why: with real sockets under `#[tokio::test(start_paused = true)]`, tokio advances the
/// paused clock whenever every task waits on I/O, so a request in flight lets virtual time jump
/// and the timestamps mean nothing. In memory, nothing waits on I/O and the clock moves only
/// through the timers of the code under test.
#[derive(Clone)]
pub struct FakeService {
    state: Arc<State>,
}

impl FakeService {
    pub(crate) fn new(state: Arc<State>) -> Self {
        FakeService { state }
    }
}

impl fmt::Debug for FakeService {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FakeService").finish_non_exhaustive()
    }
}

impl<B> Service<Request<B>> for FakeService
where
    B: Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<BoxError>,
{
    type Response = Response<Full<Bytes>>;
    type Error = BoxError;
    type Future = ResponseFuture;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        let state = self.state.clone();
        ResponseFuture {
            inner: Box::pin(async move {
                let (parts, body) = req.into_parts();
                let Ok(body) = Limited::new(body, MAX_BODY).collect().await else {
                    return Ok(unreadable_body());
                };
                handle(&state, Request::from_parts(parts, body.to_bytes()))
                    .await
                    .map_err(BoxError::from)
            }),
        }
    }
}

/// The response future of [`FakeService`].
pub struct ResponseFuture {
    inner: BoxFuture<'static, Result<Response<Full<Bytes>>, BoxError>>,
}

impl fmt::Debug for ResponseFuture {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ResponseFuture").finish_non_exhaustive()
    }
}

impl Future for ResponseFuture {
    type Output = Result<Response<Full<Bytes>>, BoxError>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        self.inner.as_mut().poll(cx)
    }
}
