//! Request bodies that can be copied for a retry (rule R6).

use bytes::Bytes;

use crate::origin::Origin;

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

/// What a tower layer keeps to send a request again (a retry, a 401 resend): its parts and a
/// copy of its body. Cheaper than a whole `Request`: a request without headers or extensions of
/// its own is copied without building (and later dropping) an empty header map.
pub(crate) struct RequestCopy<B> {
    method: http::Method,
    uri: http::Uri,
    version: http::Version,
    headers: Option<http::HeaderMap>,
    extensions: http::Extensions,
    body: B,
}

impl<B: TryCloneBody> RequestCopy<B> {
    /// A copy of `req`, or `None` if its body cannot be copied (rule R6).
    pub(crate) fn of(req: &http::Request<B>) -> Option<Self> {
        let body = req.body().try_clone_body()?;
        Some(RequestCopy {
            method: req.method().clone(),
            uri: req.uri().clone(),
            version: req.version(),
            headers: (!req.headers().is_empty()).then(|| req.headers().clone()),
            extensions: if req.extensions().is_empty() {
                http::Extensions::new()
            } else {
                req.extensions().clone()
            },
            body,
        })
    }

    /// A request to send, keeping the copy for later attempts.
    pub(crate) fn to_request(&self) -> Option<http::Request<B>> {
        let copy = RequestCopy {
            method: self.method.clone(),
            uri: self.uri.clone(),
            version: self.version,
            headers: self.headers.clone(),
            extensions: self.extensions.clone(),
            body: self.body.try_clone_body()?,
        };
        Some(copy.into_request())
    }

    /// The request to send, using up the copy.
    pub(crate) fn into_request(self) -> http::Request<B> {
        let mut req = http::Request::new(self.body);
        *req.method_mut() = self.method;
        *req.uri_mut() = self.uri;
        *req.version_mut() = self.version;
        if let Some(h) = self.headers {
            *req.headers_mut() = h;
        }
        *req.extensions_mut() = self.extensions;
        req
    }

    /// The gate key of the request's origin.
    pub(crate) fn origin_key(&self) -> u64 {
        match &self.headers {
            Some(h) => Origin::of_request(&self.uri, h).gate_key(),
            None => Origin::of_request(&self.uri, &http::HeaderMap::new()).gate_key(),
        }
    }
}
