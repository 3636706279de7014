//! Where a bearer token may go (rules X2 and X5): one place for origins, the "https, or plain
//! http to loopback" rule, the origins a token's scopes name, and matching a request against
//! them.
//!
//! [`AuthLayer`](crate::AuthLayer) decides the origins once, when it is built:
//!
//! 1. the origins given to [`allow_origins`](crate::AuthLayer::allow_origins) (`https://host`,
//!    `https://host:port`, `https://*.example.com` for every subdomain, or plain `http://` to
//!    a loopback host);
//! 2. without them, the hosts the token cache's scopes name: each scope's own https host (and
//!    port), plus, for the well-known Azure resources in the table below, their service hosts;
//!    a loopback `http://127.0.0.1:PORT/...` scope names that loopback origin (tests, local
//!    emulators; rule X2's exception);
//! 3. [`allow_any_origin`](crate::AuthLayer::allow_any_origin): every https (or loopback)
//!    origin, the explicit opt-out.
//!
//! The same origins key the retry layers' throttle gate (rules R2 and R10): a `Retry-After`
//! holds every request to its scheme, host and port.
//!
//! A request to any other origin is sent without the token, whichever request it is (a redirect
//! a `FollowRedirect` layer outside the auth layer follows, a retry, a resend). Scopes that name
//! no host (`api://…`, an application id, `User.Read`) and no `allow_origins` make the layer
//! fail every request with [`Error::Config`] saying how to fix it; the resilience report flags
//! it too.
//!
//! # Well-known resources
//!
//! A scope whose host (port 443) is a resource below also sends the token to that resource's
//! service hosts (`*.x` is every subdomain of `x`, not `x` itself). Resources whose audience is
//! the same in every cloud (Storage, Cosmos DB, Service Bus, Event Hubs) name their hosts in the
//! public cloud, Azure Government and Azure operated by 21Vianet (China).
//!
//! | service | resource (scope host) | service hosts |
//! | --- | --- | --- |
//! | Key Vault | `vault.azure.net` / `vault.usgovcloudapi.net` / `vault.azure.cn` | `*.vault.azure.net` / `*.vault.usgovcloudapi.net` / `*.vault.azure.cn` |
//! | Key Vault Managed HSM | `managedhsm.azure.net` / `managedhsm.usgovcloudapi.net` / `managedhsm.azure.cn` | `*.` the same |
//! | Storage | `storage.azure.com` (every cloud) | `*.{blob,queue,file,dfs,table}.core.windows.net`, `….core.usgovcloudapi.net`, `….core.chinacloudapi.cn` |
//! | Microsoft Graph | `graph.microsoft.com` / `graph.microsoft.us`, `dod-graph.microsoft.us` / `microsoftgraph.chinacloudapi.cn` | the resource host itself |
//! | Resource Manager | `management.azure.com`, `management.core.windows.net` / `management.usgovcloudapi.net`, `management.core.usgovcloudapi.net` / `management.chinacloudapi.cn`, `management.core.chinacloudapi.cn` | `management.azure.com` / `management.usgovcloudapi.net` / `management.chinacloudapi.cn` |
//! | Cosmos DB | `cosmos.azure.com` (every cloud) | `*.documents.azure.com`, `*.documents.azure.us`, `*.documents.azure.cn` |
//! | Service Bus | `servicebus.azure.net` (every cloud) | `*.servicebus.windows.net`, `*.servicebus.usgovcloudapi.net`, `*.servicebus.chinacloudapi.cn` |
//! | Event Hubs | `eventhubs.azure.net` (every cloud) | the same as Service Bus |
//! | Cognitive Services / Azure OpenAI | `cognitiveservices.azure.com` / `cognitiveservices.azure.us` / `cognitiveservices.azure.cn` | `*.cognitiveservices.azure.com`, `*.openai.azure.com`, `*.services.ai.azure.com` / `*.cognitiveservices.azure.us`, `*.openai.azure.us` / `*.cognitiveservices.azure.cn`, `*.openai.azure.cn` |
//! | Azure AI Foundry | `ai.azure.com` | `*.services.ai.azure.com` |
//! | Azure SQL | `database.windows.net` / `database.usgovcloudapi.net` / `database.chinacloudapi.cn` | `*.database.windows.net` / `*.database.usgovcloudapi.net` / `*.database.chinacloudapi.cn` |
//!
//! Sources: Microsoft Learn, "Compare Azure Government and global Azure", table "Guidance for
//! developers" (service hosts, public and Government); the cloud definitions of the Azure SDKs
//! and tools: Azure PowerShell's `AzureEnvironment` (Key Vault, Managed HSM, Graph, Resource
//! Manager, SQL and Storage suffixes per cloud), go-autorest's `environments.go` (resource ids:
//! `storage.azure.com` and `servicebus.azure.net` in every cloud; Cosmos DB, Service Bus and SQL
//! suffixes); the Azure SDKs' default scopes (`https://cosmos.azure.com/.default`,
//! `https://eventhubs.azure.net/.default`, `FormRecognizerAudience` /
//! `AzureOpenAIAudience`: `cognitiveservices.azure.{com,us,cn}`); Microsoft Graph "national
//! cloud deployments". A resource missing here still works: name its hosts with
//! `allow_origins`, or use a per-resource scope (`https://myaccount.blob.core.windows.net/.default`
//! names exactly that host).

use std::fmt;
use std::hash::{DefaultHasher, Hash, Hasher};
use std::net::IpAddr;

use crate::Error;

mod token_origins;
mod well_known;

pub(crate) use token_origins::{Decision, TokenOrigins};

/// The origins [`AuthLayer::new`](crate::AuthLayer::new) sends a token for `scopes` to, when
/// no [`allow_origins`](crate::AuthLayer::allow_origins) is given (rule X5), e.g.
/// `["https://vault.azure.net", "https://*.vault.azure.net"]` for
/// `https://vault.azure.net/.default`.
///
/// ```
/// let origins = resilient_auth::origin::scope_origins(["https://api.contoso.com/.default"])?;
/// assert_eq!(origins, ["https://api.contoso.com"]);
/// assert!(resilient_auth::origin::scope_origins(["api://my-api/.default"]).is_err());
/// # Ok::<(), resilient_auth::Error>(())
/// ```
///
/// # Errors
/// [`Error::Config`] if the scopes name no host (`api://…`, an application id): the error
/// every request through such a layer gets.
pub fn scope_origins<I, S>(scopes: I) -> Result<Vec<String>, Error>
where
    I: IntoIterator<Item = S>,
    S: Into<String>,
{
    let scopes: Vec<String> = scopes.into_iter().map(Into::into).collect();
    match TokenOrigins::from_scopes(&scopes) {
        TokenOrigins::Named(named) => Ok(named.origins.iter().map(ToString::to_string).collect()),
        TokenOrigins::Unnamed(unnamed) => Err(Error::config(unnamed.message())),
        TokenOrigins::Any => Ok(Vec::new()),
    }
}

/// A request's scheme, host and port, borrowed from its URL (nothing is allocated). The host
/// loses IPv6 brackets and a trailing dot; a missing port is the scheme's default.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Origin<'a> {
    scheme: &'a str,
    host: &'a str,
    port: u16,
}

impl<'a> Origin<'a> {
    pub(crate) fn new(scheme: &'a str, host: &'a str, port: Option<u16>) -> Self {
        let host = host
            .strip_prefix('[')
            .and_then(|h| h.strip_suffix(']'))
            .unwrap_or(host);
        let host = host.strip_suffix('.').unwrap_or(host);
        Origin {
            scheme,
            host,
            port: port.unwrap_or_else(|| default_port(scheme)),
        }
    }

    /// The origin of an `http::Uri` (an empty scheme or host if it has none).
    pub(crate) fn of_uri(uri: &'a http::Uri) -> Self {
        Origin::new(
            uri.scheme_str().unwrap_or(""),
            uri.host().unwrap_or(""),
            uri.port_u16(),
        )
    }

    /// The origin of a reqwest URL.
    #[cfg(feature = "reqwest")]
    pub(crate) fn of_url(url: &'a reqwest::Url) -> Self {
        Origin::new(url.scheme(), url.host_str().unwrap_or(""), url.port())
    }

    /// The origin a tower request goes to, for the throttle gate: its URI's, with `http` for a
    /// URI without a scheme and, for a URI without a host (a relative one), the `Host` header
    /// as the host.
    pub(crate) fn of_request(uri: &'a http::Uri, headers: &'a http::HeaderMap) -> Self {
        let scheme = uri.scheme_str().unwrap_or("http");
        match uri.host() {
            Some(host) => Origin::new(scheme, host, uri.port_u16()),
            None => {
                let host = headers
                    .get(http::header::HOST)
                    .and_then(|h| h.to_str().ok())
                    .unwrap_or("");
                Origin::new(scheme, host, None)
            }
        }
    }

    /// The origin's key in the throttle gate (rules R2 and R10): a 64-bit hash of the scheme
    /// and host, ASCII case-insensitive, and the port (a missing one is the scheme's default).
    /// Nothing is allocated, so the retry layers can compute it per request.
    pub(crate) fn gate_key(&self) -> u64 {
        let mut h = DefaultHasher::new();
        for b in self.scheme.bytes().chain([b':']).chain(self.host.bytes()) {
            h.write_u8(b.to_ascii_lowercase());
        }
        self.port.hash(&mut h);
        h.finish()
    }

    fn is_https(&self) -> bool {
        self.scheme.eq_ignore_ascii_case("https")
    }

    fn is_http(&self) -> bool {
        self.scheme.eq_ignore_ascii_case("http")
    }

    /// Rule X2: a token may travel over https, or over plain http to a loopback host.
    pub(crate) fn may_carry_token(&self) -> bool {
        !self.host.is_empty()
            && (self.is_https() || (self.is_http() && is_loopback_host(self.host)))
    }

    /// Rule X2 widened for managed identity endpoints: also plain http to a link-local
    /// address (IMDS lives at `169.254.169.254`).
    #[cfg(feature = "reqwest")]
    pub(crate) fn may_carry_managed_identity_secret(&self) -> bool {
        self.may_carry_token()
            || (self.is_http()
                && self.host.parse::<IpAddr>().is_ok_and(|ip| match ip {
                    IpAddr::V4(ip) => ip.is_link_local(),
                    IpAddr::V6(ip) => (ip.segments()[0] & 0xffc0) == 0xfe80,
                }))
    }

    /// The host, without IPv6 brackets or a trailing dot.
    pub(crate) fn host(&self) -> &'a str {
        self.host
    }

    /// Whether tokens from this origin come from a host Entra ID's backup authentication system
    /// protects: `https://login.microsoftonline.com` or `https://login.microsoftonline.us`, on
    /// port 443 (seed: "Hostnames supported").
    pub(crate) fn is_backup_auth_protected(&self) -> bool {
        self.is_https()
            && self.port == 443
            && BACKUP_AUTH_HOSTS
                .iter()
                .any(|h| h.eq_ignore_ascii_case(self.host))
    }
}

/// The hosts the backup authentication system protects.
pub(crate) const BACKUP_AUTH_HOSTS: [&str; 2] =
    ["login.microsoftonline.com", "login.microsoftonline.us"];

impl fmt::Display for Origin<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let scheme = self.scheme.to_ascii_lowercase();
        let host = self.host.to_ascii_lowercase();
        if host.contains(':') {
            write!(f, "{scheme}://[{host}]:{}", self.port)
        } else {
            write!(f, "{scheme}://{host}:{}", self.port)
        }
    }
}

fn default_port(scheme: &str) -> u16 {
    if scheme.eq_ignore_ascii_case("http") {
        80
    } else if scheme.eq_ignore_ascii_case("https") {
        443
    } else {
        0
    }
}

/// `true` for `localhost`, 127.0.0.0/8 and `::1` (brackets allowed).
pub(crate) fn is_loopback_host(host: &str) -> bool {
    let bare = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host);
    let bare = bare.strip_suffix('.').unwrap_or(bare);
    // The common spellings first: this runs on every request to a loopback test server.
    bare == "127.0.0.1"
        || bare.eq_ignore_ascii_case("localhost")
        || bare.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

/// The host part of an allowed origin.
#[derive(Clone, PartialEq, Eq)]
enum HostPattern {
    /// Exactly this host (lowercase).
    Exact(Box<str>),
    /// Any subdomain of this suffix (lowercase), at any depth; not the suffix itself.
    Subdomains(Box<str>),
}

impl HostPattern {
    /// Runs on every request: hosts usually arrive in lowercase already (a parsed URL's always
    /// do), so a plain comparison is tried before the case-insensitive one.
    fn matches(&self, host: &str) -> bool {
        let same = |a: &[u8], b: &[u8]| a == b || a.eq_ignore_ascii_case(b);
        match self {
            HostPattern::Exact(h) => same(h.as_bytes(), host.as_bytes()),
            HostPattern::Subdomains(suffix) => {
                let (host, suffix) = (host.as_bytes(), suffix.as_bytes());
                host.len() > suffix.len() + 1
                    && host[host.len() - suffix.len() - 1] == b'.'
                    && same(&host[host.len() - suffix.len()..], suffix)
            }
        }
    }

    fn parse_table(entry: &str) -> HostPattern {
        match entry.strip_prefix("*.") {
            Some(suffix) => HostPattern::Subdomains(suffix.into()),
            None => HostPattern::Exact(entry.into()),
        }
    }
}

/// One origin a token may go to: `https://host[:port]`, `https://*.suffix[:port]`, or plain
/// `http://` to a loopback host.
#[derive(Clone, PartialEq, Eq)]
pub(crate) struct AllowedOrigin {
    https: bool,
    host: HostPattern,
    port: u16,
}

impl AllowedOrigin {
    /// Parses an origin given to `allow_origins`: a scheme and a host (`*.` for every
    /// subdomain), an optional port, no path, no credentials; https, or plain http to a
    /// loopback host (rule X2).
    pub(crate) fn parse(text: &str) -> Result<AllowedOrigin, Error> {
        let bad = |why: &str| Error::config(format!("{why}: {text:?}"));
        let (scheme, rest) = text
            .split_once("://")
            .ok_or_else(|| bad("an origin needs a scheme and a host"))?;
        let (wildcard, rest) = match rest.strip_prefix("*.") {
            Some(r) => (true, r),
            None => (false, rest),
        };
        let uri: http::Uri = format!("{scheme}://{rest}")
            .parse()
            .map_err(|_| bad("not an origin"))?;
        let (Some(scheme), Some(authority)) = (uri.scheme_str(), uri.authority()) else {
            return Err(bad("an origin needs a scheme and a host"));
        };
        if authority.as_str().contains('@') {
            return Err(bad("an origin has no credentials"));
        }
        if !uri
            .path_and_query()
            .is_none_or(|p| p.as_str() == "/" || p.as_str().is_empty())
        {
            return Err(bad("an origin has no path"));
        }
        let origin = Origin::new(scheme, authority.host(), authority.port_u16());
        if origin.host.is_empty() {
            return Err(bad("an origin needs a host"));
        }
        if !origin.may_carry_token() {
            return Err(bad(
                "a token goes only over https, or plain http to a loopback host (rule X2)",
            ));
        }
        let host = origin.host.to_ascii_lowercase().into_boxed_str();
        let host = if wildcard {
            if !origin.is_https() || !host.contains('.') || host.parse::<IpAddr>().is_ok() {
                return Err(bad(
                    "a wildcard origin is https://*.domain with at least two labels after the *",
                ));
            }
            HostPattern::Subdomains(host)
        } else {
            HostPattern::Exact(host)
        };
        Ok(AllowedOrigin {
            https: origin.is_https(),
            host,
            port: origin.port,
        })
    }

    fn https(host: HostPattern, port: u16) -> AllowedOrigin {
        AllowedOrigin {
            https: true,
            host,
            port,
        }
    }

    /// Whether a request to `origin` may carry the token.
    pub(crate) fn matches(&self, origin: &Origin<'_>) -> bool {
        self.port == origin.port
            && (if self.https {
                origin.is_https()
            } else {
                origin.is_http()
            })
            && self.host.matches(origin.host)
    }
}

impl fmt::Display for AllowedOrigin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let scheme = if self.https { "https" } else { "http" };
        let (star, host) = match &self.host {
            HostPattern::Exact(h) => ("", h),
            HostPattern::Subdomains(s) => ("*.", s),
        };
        let bracket = host.contains(':');
        let (open, close) = if bracket { ("[", "]") } else { ("", "") };
        write!(f, "{scheme}://{star}{open}{host}{close}")?;
        if self.port != default_port(scheme) {
            write!(f, ":{}", self.port)?;
        }
        Ok(())
    }
}

impl fmt::Debug for AllowedOrigin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{self}")
    }
}

#[cfg(test)]
mod tests {
    use super::well_known::WELL_KNOWN;
    use super::*;

    fn origins(scopes: &[&str]) -> Vec<String> {
        let scopes: Vec<String> = scopes.iter().map(|s| s.to_string()).collect();
        match TokenOrigins::from_scopes(&scopes) {
            TokenOrigins::Named(n) => n.origins.iter().map(ToString::to_string).collect(),
            other => panic!("no origins: {other:?}"),
        }
    }

    fn decide(t: &TokenOrigins, uri: &str) -> &'static str {
        let uri: http::Uri = uri.parse().unwrap();
        match t.decide(&Origin::of_uri(&uri)) {
            Decision::Attach => "attach",
            Decision::Skip => "skip",
            Decision::Refuse(_) => "refuse",
        }
    }

    fn scope(s: &str) -> TokenOrigins {
        TokenOrigins::from_scopes(&[s.to_string()])
    }

    #[test]
    fn x5_subdomain_patterns_match_subdomains_only() {
        let p = HostPattern::Subdomains("vault.azure.net".into());
        assert!(p.matches("myvault.vault.azure.net"));
        assert!(p.matches("MyVault.Vault.Azure.NET"));
        assert!(p.matches("a.b.vault.azure.net"));
        assert!(!p.matches("vault.azure.net"));
        assert!(!p.matches(".vault.azure.net"));
        assert!(!p.matches("evilvault.azure.net"));
        assert!(!p.matches("myvault.vault.azure.net.evil.com"));
        assert!(!p.matches("myvault-vault.azure.net"));
    }

    #[test]
    fn x5_every_table_entry_is_well_formed() {
        for k in WELL_KNOWN {
            assert_eq!(k.resource, k.resource.to_ascii_lowercase());
            assert!(!k.resource.starts_with('*'), "{k:?}");
            for h in k.hosts {
                assert_eq!(*h, h.to_ascii_lowercase());
                let bare = h.strip_prefix("*.").unwrap_or(h);
                assert!(bare.contains('.') && !bare.contains('*'), "{k:?}");
            }
        }
        let mut resources: Vec<_> = WELL_KNOWN.iter().map(|k| k.resource).collect();
        resources.sort_unstable();
        resources.dedup();
        assert_eq!(resources.len(), WELL_KNOWN.len(), "one entry per resource");
    }

    #[test]
    fn x5_request_origin_normalises_brackets_dots_and_ports() {
        let uri: http::Uri = "https://MyVault.vault.azure.net./x".parse().unwrap();
        let t = scope("https://vault.azure.net/.default");
        assert!(matches!(t.decide(&Origin::of_uri(&uri)), Decision::Attach));
        assert_eq!(
            decide(&t, "https://myvault.vault.azure.net:443/x"),
            "attach"
        );
        assert_eq!(decide(&t, "https://myvault.vault.azure.net:8443/x"), "skip");
        assert_eq!(decide(&t, "http://myvault.vault.azure.net/x"), "skip");
        let loopback = scope("http://[::1]:8080/.default");
        assert_eq!(decide(&loopback, "http://[::1]:8080/x"), "attach");
        assert_eq!(decide(&loopback, "http://[::1]:8081/x"), "skip");
    }

    #[test]
    fn r2_origin_is_scheme_host_port() {
        let key = |scheme, host, port| Origin::new(scheme, host, port).gate_key();
        assert_eq!(
            key("https", "API.example.com", None),
            key("https", "api.example.com", Some(443))
        );
        assert_ne!(
            key("https", "api.example.com", Some(8443)),
            key("https", "api.example.com", None)
        );
        assert_ne!(
            key("http", "api.example.com", None),
            key("https", "api.example.com", None)
        );
    }

    #[test]
    fn r2_gate_key_of_a_request_falls_back_to_the_host_header() {
        let key = |uri: &str, host: Option<&str>| {
            let uri: http::Uri = uri.parse().unwrap();
            let mut headers = http::HeaderMap::new();
            if let Some(host) = host {
                headers.insert(http::header::HOST, host.parse().unwrap());
            }
            Origin::of_request(&uri, &headers).gate_key()
        };
        let absolute = key("http://api.example.com/x", None);
        assert_eq!(key("/x", Some("API.example.com")), absolute);
        assert_eq!(key("http://api.example.com:80/y", Some("other")), absolute);
        assert_ne!(key("/x", Some("other.example.com")), absolute);
        assert_eq!(
            key("https://api.example.com/x", None),
            Origin::new("https", "api.example.com", None).gate_key()
        );
    }

    #[test]
    fn x5_allowed_origin_parsing() {
        let ok = |s: &str| AllowedOrigin::parse(s).unwrap().to_string();
        assert_eq!(ok("https://API.example.com"), "https://api.example.com");
        assert_eq!(
            ok("https://api.example.com:443/"),
            "https://api.example.com"
        );
        assert_eq!(
            ok("https://api.example.com:8443"),
            "https://api.example.com:8443"
        );
        assert_eq!(ok("https://*.example.com"), "https://*.example.com");
        assert_eq!(ok("http://127.0.0.1:8080"), "http://127.0.0.1:8080");
        assert_eq!(ok("http://[::1]:8080"), "http://[::1]:8080");
        assert_eq!(ok("http://localhost"), "http://localhost");
        for bad in [
            "api.example.com",
            "https://",
            "https://api.example.com/path",
            "https://api.example.com?q=1",
            "https://user:pw@api.example.com",
            "http://api.example.com",
            "ftp://api.example.com",
            "https://*.com",
            "http://*.localhost",
            "https://*.10.0.0.1",
            "not an origin",
        ] {
            assert!(AllowedOrigin::parse(bad).is_err(), "{bad}");
        }
        assert!(TokenOrigins::allowed(Vec::<String>::new()).is_err());
    }

    #[test]
    fn x5_oidc_scopes_are_ignored_and_hosts_are_united() {
        assert_eq!(
            origins(&[
                "https://graph.microsoft.com/User.Read",
                "offline_access",
                "openid"
            ]),
            ["https://graph.microsoft.com"]
        );
        assert!(matches!(
            TokenOrigins::from_scopes(&["openid".to_string(), "profile".to_string()]),
            TokenOrigins::Unnamed(_)
        ));
    }
}
