//! Request bodies that can be copied for a retry (rule R6).

use std::cell::RefCell;
use std::sync::Arc;

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

// ---- One copy of the request's headers per call, however many tower layers are stacked ----
//
// A retry layer and the 401 resend each keep a copy of the request; three stacked layers took
// three. The headers are most of a copy's cost (with three of them, each copy was two
// allocations and about 780 instructions, callgrind), so they are copied once per call, as a
// shared list: the outermost retry layer takes them and, while it calls the layers inside it,
// *offers* them on the thread. A layer inside
// that was handed the same headers — nothing in between changed them — keeps a reference to
// the offered copy. The rest of a copy (method, URI, version, extensions, body: reference
// counts, mostly) each layer still takes itself, so a middleware in between that changes those
// changes nothing here. A request without headers has none to share: nothing is allocated or
// offered.
//
// A layer compares the headers it was handed with the offered list, in order: the same count,
// and for each header the same name and value *bytes* (address and length) and the same
// sensitive mark. The list shares its values' bytes with the headers it was made from (a
// header clone shares them), so headers passed on unchanged match it exactly. A header that
// was replaced has other bytes at another address: the offered list keeps the old bytes alive,
// so no new value can take their place in memory while it is offered. The comparison is exact
// (no hash), and costs no more than reading the headers. The reqwest-middleware impls share
// whole `reqwest::Request`s in the same way (`crate::reqwest`).

/// Whether `headers` are the ones `list` was made from, unchanged (see the section comment).
fn made_from(list: &[(http::HeaderName, http::HeaderValue)], headers: &http::HeaderMap) -> bool {
    list.len() == headers.len()
        && list.iter().zip(headers).all(|((kl, vl), (kh, vh))| {
            let (nl, nh) = (kl.as_str(), kh.as_str());
            let (bl, bh) = (vl.as_bytes(), vh.as_bytes());
            std::ptr::eq(nl, nh) && std::ptr::eq(bl, bh) && vl.is_sensitive() == vh.is_sensitive()
        })
}

/// A copy of a request's headers, in order, shared by the layers that keep the same ones. A
/// list, not a header map: it is built without hashing or an index (the list and its shared
/// count are its two allocations), and turned back into a map only for a resend.
type SharedHeaders = Arc<Vec<(http::HeaderName, http::HeaderValue)>>;

fn share(headers: &http::HeaderMap) -> SharedHeaders {
    let mut list = Vec::with_capacity(headers.len());
    list.extend(headers.iter().map(|(k, v)| (k.clone(), v.clone())));
    Arc::new(list)
}

/// The header map a list was made from (names in the same order, each name's values in order).
fn header_map(list: &[(http::HeaderName, http::HeaderValue)]) -> http::HeaderMap {
    let mut map = http::HeaderMap::with_capacity(list.len());
    for (k, v) in list {
        map.append(k.clone(), v.clone());
    }
    map
}

thread_local! {
    /// The headers offered to the layers inside by the innermost offering layer that is
    /// calling now.
    static OFFER: RefCell<Option<SharedHeaders>> = const { RefCell::new(None) };
}

/// What a tower layer keeps to send a request again (a retry, a 401 resend): its parts and a
/// copy of its body; the headers are shared (see the section comment). Cheaper than a whole
/// `Request`: a request without headers or extensions of its own is copied without building
/// (and later dropping) an empty header map.
pub(crate) struct RequestCopy<B> {
    method: http::Method,
    uri: http::Uri,
    version: http::Version,
    headers: Option<SharedHeaders>,
    extensions: http::Extensions,
    body: B,
}

impl<B: TryCloneBody> RequestCopy<B> {
    /// A copy of `req`, or `None` if its body cannot be copied (rule R6). It uses the headers
    /// a layer outside offers if they are `req`'s.
    pub(crate) fn of(req: &http::Request<B>) -> Option<Self> {
        let body = req.body().try_clone_body()?;
        Some(RequestCopy {
            method: req.method().clone(),
            uri: req.uri().clone(),
            version: req.version(),
            headers: if req.headers().is_empty() {
                None
            } else {
                Some(copy_headers(req.headers()))
            },
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
            *req.headers_mut() = header_map(&h);
        }
        *req.extensions_mut() = self.extensions;
        req
    }

    /// The gate key of the request's origin (the headers are read, for `Host`, only for a URI
    /// without a host).
    pub(crate) fn origin_key(&self) -> u64 {
        match &self.headers {
            Some(h) if self.uri.host().is_none() => {
                Origin::of_request(&self.uri, &header_map(h)).gate_key()
            }
            _ => Origin::of_request(&self.uri, &http::HeaderMap::new()).gate_key(),
        }
    }
}

/// A copy of `headers` (not empty): the offered one if it is of the same headers, otherwise a
/// new one (which a retry layer then offers to the layers inside; see [`Offering`]).
// Not inlined: a layer's `call` stays smaller for requests without headers (callgrind: 12
// instructions per request fewer on the four-layer stack).
#[inline(never)]
fn copy_headers(headers: &http::HeaderMap) -> SharedHeaders {
    let offered = OFFER.with(|cell| {
        let offer = cell.try_borrow().ok()?;
        let offered = offer.as_ref()?;
        made_from(offered, headers).then(|| offered.clone())
    });
    offered.unwrap_or_else(|| share(headers))
}

/// While alive, a copy's headers are offered to the layers inside; dropped (a panic included),
/// it restores what was offered before.
#[must_use]
pub(crate) struct Offering {
    /// What was offered before, if this replaced it.
    prev: Option<Option<SharedHeaders>>,
}

impl Offering {
    /// Offers the headers of `copy` to the layers inside while they are called, unless they
    /// are offered already (by a layer outside).
    pub(crate) fn of<B>(copy: &Option<RequestCopy<B>>) -> Offering {
        let Some(RequestCopy {
            headers: Some(headers),
            ..
        }) = copy
        else {
            return Offering { prev: None };
        };
        let prev = OFFER.with(|cell| {
            let mut offer = cell.try_borrow_mut().ok()?;
            if offer.as_ref().is_some_and(|o| Arc::ptr_eq(o, headers)) {
                return None;
            }
            Some(offer.replace(headers.clone()))
        });
        Offering { prev }
    }
}

impl Drop for Offering {
    fn drop(&mut self) {
        if let Some(prev) = self.prev.take() {
            OFFER.with(|cell| {
                if let Ok(mut offer) = cell.try_borrow_mut() {
                    *offer = prev;
                }
            });
        }
    }
}
