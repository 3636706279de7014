//! The loopback socket server: everything that touches sockets is here. A TLS variant wraps the
//! accepted stream and hands it to [`serve_connection`].

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use http::Request;
use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpListener;

use super::handler::{handle, unreadable_body, Answer, State, MAX_BODY};
use crate::Error;

/// Binds `127.0.0.1:0`.
pub(crate) async fn bind_loopback() -> Result<(TcpListener, SocketAddr), Error> {
    let listener = TcpListener::bind("127.0.0.1:0")
        .await
        .map_err(|e| Error::unavailable("loopback listener", e))?;
    let addr = listener
        .local_addr()
        .map_err(|e| Error::unavailable("loopback listener", e))?;
    Ok((listener, addr))
}

/// Accepts connections until the task is aborted; each is served on its own task.
pub(crate) async fn serve(listener: TcpListener, state: Arc<State>) {
    loop {
        match listener.accept().await {
            Ok((stream, _)) => {
                tokio::spawn(serve_connection(stream, state.clone()));
            }
            // e.g. out of file descriptors: do not spin.
            Err(_) => tokio::time::sleep(Duration::from_millis(10)).await,
        }
    }
}

/// Serves HTTP/1.1 on one accepted connection (plain TCP, or a TLS stream around it).
pub(crate) async fn serve_connection<I>(io: I, state: Arc<State>)
where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let svc = hyper::service::service_fn(move |req| on_request(state.clone(), req));
    let _ = hyper::server::conn::http1::Builder::new()
        .serve_connection(TokioIo::new(io), svc)
        .await;
}

async fn on_request(state: Arc<State>, req: Request<Incoming>) -> Answer {
    let (parts, body) = req.into_parts();
    let Ok(body) = Limited::new(body, MAX_BODY).collect().await else {
        return Ok(unreadable_body());
    };
    handle(&state, Request::from_parts(parts, body.to_bytes())).await
}
