//! Request bodies that can be copied for a retry (rule R6).

use bytes::Bytes;

/// A request body that may be copied so the request can be sent again.
///
/// Buffered bodies return a copy; streaming bodies return `None`, and a request with such a body
/// is sent once and never retried (rule R6). Implement it for your own body type if you use one.
pub trait TryCloneBody: Sized {
    /// A copy of the body, or `None` if it cannot be copied.
    fn try_clone_body(&self) -> Option<Self>;
}

impl TryCloneBody for () {
    fn try_clone_body(&self) -> Option<Self> {
        Some(())
    }
}

impl TryCloneBody for String {
    fn try_clone_body(&self) -> Option<Self> {
        Some(self.clone())
    }
}

impl TryCloneBody for Vec<u8> {
    fn try_clone_body(&self) -> Option<Self> {
        Some(self.clone())
    }
}

impl TryCloneBody for Bytes {
    fn try_clone_body(&self) -> Option<Self> {
        Some(self.clone())
    }
}

impl TryCloneBody for &'static str {
    fn try_clone_body(&self) -> Option<Self> {
        Some(*self)
    }
}

impl TryCloneBody for &'static [u8] {
    fn try_clone_body(&self) -> Option<Self> {
        Some(*self)
    }
}

impl<D: Clone> TryCloneBody for http_body_util::Full<D> {
    fn try_clone_body(&self) -> Option<Self> {
        Some(self.clone())
    }
}

impl<D> TryCloneBody for http_body_util::Empty<D> {
    fn try_clone_body(&self) -> Option<Self> {
        Some(http_body_util::Empty::new())
    }
}

impl<D, E> TryCloneBody for http_body_util::combinators::BoxBody<D, E> {
    /// A boxed body may be a stream: never copied.
    fn try_clone_body(&self) -> Option<Self> {
        None
    }
}

impl<D, E> TryCloneBody for http_body_util::combinators::UnsyncBoxBody<D, E> {
    /// A boxed body may be a stream: never copied.
    fn try_clone_body(&self) -> Option<Self> {
        None
    }
}

#[cfg(feature = "reqwest")]
impl TryCloneBody for reqwest::Body {
    /// Buffered bodies are copied; streams are not.
    fn try_clone_body(&self) -> Option<Self> {
        self.as_bytes()
            .map(|b| reqwest::Body::from(Bytes::copy_from_slice(b)))
    }
}

/// A copy of `req` (method, URI, version, headers, extensions, body), or `None` if the body
/// cannot be copied.
pub(crate) fn try_clone_request<B: TryCloneBody>(
    req: &http::Request<B>,
) -> Option<http::Request<B>> {
    let body = req.body().try_clone_body()?;
    let mut copy = http::Request::new(body);
    *copy.method_mut() = req.method().clone();
    *copy.uri_mut() = req.uri().clone();
    *copy.version_mut() = req.version();
    // A new request's map is empty and unallocated: copying an empty one would cost more.
    if !req.headers().is_empty() {
        *copy.headers_mut() = req.headers().clone();
    }
    if !req.extensions().is_empty() {
        *copy.extensions_mut() = req.extensions().clone();
    }
    Some(copy)
}
