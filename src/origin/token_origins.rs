//! The origins one layer sends its token to (rule X5), decided once when the layer is built:
//! named (given, or derived from the scopes), unnamed (scopes that name no host: every request
//! fails with the fix), or any; and the decision for one request.

use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use super::well_known::{WellKnown, OIDC_SCOPES, WELL_KNOWN};
use super::{AllowedOrigin, HostPattern, Origin};
use crate::Error;

/// The origins one scope names, appended to `out`: `None` if it names none, else the
/// well-known resource it is, if any.
fn origins_of_scope(
    scope: &str,
    out: &mut Vec<AllowedOrigin>,
) -> Option<Option<&'static WellKnown>> {
    let uri = scope.trim().parse::<http::Uri>().ok()?;
    let (Some(scheme), Some(authority)) = (uri.scheme_str(), uri.authority()) else {
        return None;
    };
    if authority.as_str().contains('@') {
        return None;
    }
    let origin = Origin::new(scheme, authority.host(), authority.port_u16());
    if origin.host.is_empty() || !origin.may_carry_token() {
        return None;
    }
    let host = origin.host.to_ascii_lowercase();
    let known = WELL_KNOWN
        .iter()
        .find(|k| origin.is_https() && origin.port == 443 && k.resource == host);
    push_new(
        out,
        AllowedOrigin {
            https: origin.is_https(),
            host: HostPattern::Exact(host.into_boxed_str()),
            port: origin.port,
        },
    );
    for entry in known.map_or(&[][..], |k| k.hosts) {
        push_new(
            out,
            AllowedOrigin::https(HostPattern::parse_table(entry), 443),
        );
    }
    Some(known)
}

fn push_new(out: &mut Vec<AllowedOrigin>, origin: AllowedOrigin) {
    if !out.contains(&origin) {
        out.push(origin);
    }
}

/// Where an [`AuthLayer`](crate::AuthLayer) sends its token, decided once when it is built.
#[derive(Clone)]
pub(crate) enum TokenOrigins {
    /// `allow_any_origin()`: every origin rule X2 allows.
    Any,
    /// Only these origins.
    Named(Arc<Named>),
    /// The scopes name no host and no origins were given: every request fails.
    Unnamed(Arc<Unnamed>),
}

/// Origins given to `allow_origins`, or derived from the scopes.
pub(crate) struct Named {
    pub(super) origins: Box<[AllowedOrigin]>,
    /// The scopes the origins were derived from (`None`: given to `allow_origins`).
    pub(super) derived_from: Option<Box<str>>,
    /// Whether a request to another origin has been logged at `warn` level yet.
    warned: AtomicBool,
}

/// Scopes that name no host.
pub(crate) struct Unnamed {
    pub(super) scopes: Box<str>,
    /// Whether the configuration error has been logged yet.
    logged: AtomicBool,
}

/// What the layer does with one request.
#[derive(Debug)]
pub(crate) enum Decision {
    /// Attach the token.
    Attach,
    /// Send the request as it is.
    Skip,
    /// Fail the request with this error.
    Refuse(Error),
}

impl TokenOrigins {
    /// The origins `scopes` name (rule X5), or [`TokenOrigins::Unnamed`].
    pub(crate) fn from_scopes(scopes: &[String]) -> TokenOrigins {
        let mut origins = Vec::new();
        let mut unnamed = Vec::new();
        let mut named = Vec::new();
        for scope in scopes {
            let s = scope.trim();
            if OIDC_SCOPES.iter().any(|o| o.eq_ignore_ascii_case(s)) {
                continue;
            }
            match origins_of_scope(s, &mut origins) {
                None => unnamed.push(s.to_string()),
                Some(None) => named.push(s.to_string()),
                Some(Some(k)) => named.push(format!("{s}: {}, {}", k.service, k.cloud)),
            }
        }
        if origins.is_empty() {
            let scopes = if unnamed.is_empty() {
                scopes.join(" ")
            } else {
                unnamed.join(" ")
            };
            return TokenOrigins::Unnamed(Arc::new(Unnamed {
                scopes: scopes.into_boxed_str(),
                logged: AtomicBool::new(false),
            }));
        }
        TokenOrigins::Named(Arc::new(Named {
            origins: origins.into_boxed_slice(),
            derived_from: Some(named.join("; ").into_boxed_str()),
            warned: AtomicBool::new(false),
        }))
    }

    /// Origins given to `allow_origins`.
    pub(crate) fn allowed<I, S>(origins: I) -> Result<TokenOrigins, Error>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        let mut parsed = Vec::new();
        for o in origins {
            push_new(&mut parsed, AllowedOrigin::parse(o.as_ref())?);
        }
        if parsed.is_empty() {
            return Err(Error::config(
                "allow_origins needs at least one origin (to send the token nowhere, leave the AuthLayer out)",
            ));
        }
        Ok(TokenOrigins::Named(Arc::new(Named {
            origins: parsed.into_boxed_slice(),
            derived_from: None,
            warned: AtomicBool::new(false),
        })))
    }

    /// Decides for one request to `origin` that has no `Authorization` header yet. Allocates
    /// nothing unless the request is refused.
    pub(crate) fn decide(&self, origin: &Origin<'_>) -> Decision {
        match self {
            TokenOrigins::Any => {}
            TokenOrigins::Named(named) => {
                if !named.origins.iter().any(|o| o.matches(origin)) {
                    named.note_skipped(origin);
                    return Decision::Skip;
                }
            }
            TokenOrigins::Unnamed(unnamed) => return Decision::Refuse(unnamed.error()),
        }
        if origin.may_carry_token() {
            Decision::Attach
        } else {
            Decision::Refuse(Error::config(format!(
                "refusing to send a bearer token to {origin}: only https, or plain http to a loopback host (rule X2)"
            )))
        }
    }

    /// Whether the token goes only to named origins (or nowhere).
    pub(crate) fn is_restricted(&self) -> bool {
        !matches!(self, TokenOrigins::Any)
    }

    /// Where the token goes, for the resilience report: `Ok(detail)` for named (or derived)
    /// origins, `Err(None)` for any origin, `Err(Some(message))` for scopes that name none.
    pub(crate) fn summary(&self) -> Result<String, Option<String>> {
        match self {
            TokenOrigins::Any => Err(None),
            TokenOrigins::Named(named) => {
                let list = named.list(4);
                Ok(match &named.derived_from {
                    Some(scopes) => format!("derived from the scopes ({scopes}): {list}"),
                    None => format!("AuthLayer::allow_origins: {list}"),
                })
            }
            TokenOrigins::Unnamed(unnamed) => Err(Some(unnamed.message())),
        }
    }
}

impl Named {
    /// The first `max` origins, and how many more there are.
    fn list(&self, max: usize) -> String {
        let mut s = self
            .origins
            .iter()
            .take(max)
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join(", ");
        if self.origins.len() > max {
            s.push_str(&format!(" and {} more", self.origins.len() - max));
        }
        s
    }

    fn note_skipped(&self, origin: &Origin<'_>) {
        tracing::debug!(%origin, "request sent without the token: not one of its origins");
        if let Some(scopes) = &self.derived_from {
            if !self.warned.swap(true, Ordering::Relaxed) {
                tracing::warn!(
                    %origin,
                    scopes = &**scopes,
                    origins = %self.list(4),
                    "request sent without the token: its origin is not one the token's scopes name; if it should get the token, name it with AuthLayer::allow_origins (logged once)"
                );
            }
        }
    }
}

impl Unnamed {
    pub(super) fn message(&self) -> String {
        format!(
            "no origin to send the token to: the scopes ({}) name no https host; name the API's origins with AuthLayer::allow_origins([\"https://api.example.com\"]), or send the token everywhere with AuthLayer::allow_any_origin() (rule X5)",
            self.scopes
        )
    }

    fn error(&self) -> Error {
        let message = self.message();
        if !self.logged.swap(true, Ordering::Relaxed) {
            tracing::error!("AuthLayer: {message}");
        }
        Error::config(message)
    }
}

impl fmt::Debug for TokenOrigins {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TokenOrigins::Any => f.write_str("Any"),
            TokenOrigins::Named(n) => f
                .debug_struct("Named")
                .field("origins", &n.origins)
                .field("derived_from", &n.derived_from)
                .finish(),
            TokenOrigins::Unnamed(u) => f.debug_tuple("Unnamed").field(&u.scopes).finish(),
        }
    }
}
