//! Authority hosts (rule C6): the known Entra ID clouds, parsing and validation (rule X2), which
//! hosts the backup authentication system protects, and regional token endpoints with fallback
//! to the global one.
#![cfg(feature = "reqwest")]
#![cfg_attr(docsrs, doc(cfg(feature = "reqwest")))]

use std::borrow::Cow;
use std::fmt;
use std::future::Future;
use std::str::FromStr;
use std::sync::{Arc, Mutex};

use reqwest::Url;

use super::http::check_url;
use crate::origin::Origin;
use crate::retry::policy::{later, Failure, WaitPolicy};
use crate::Error;
use tokio::time::Instant;

/// The host that issues tokens, e.g. `https://login.microsoftonline.com`.
///
/// Any https host works (and plain http to loopback, for tests and emulators), but only
/// `login.microsoftonline.com` and `login.microsoftonline.us` are protected by Entra ID's backup
/// authentication system, which keeps issuing tokens to daemons through an outage of the main
/// service; [`is_protected_by_backup_auth`](Self::is_protected_by_backup_auth) says which, and
/// the resilience report flags the others.
///
/// ```
/// use resilient_auth::AuthorityHost;
///
/// let host: AuthorityHost = "https://login.microsoftonline.us/".parse()?;
/// assert_eq!(host, AuthorityHost::AZURE_GOVERNMENT);
/// assert!(host.is_protected_by_backup_auth());
/// assert!(!AuthorityHost::AZURE_CHINA.is_protected_by_backup_auth());
/// assert!("http://login.example.com".parse::<AuthorityHost>().is_err());
/// # Ok::<(), resilient_auth::Error>(())
/// ```
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct AuthorityHost {
    /// `scheme://host[:port][/path]`, normalised, without a trailing slash.
    url: Cow<'static, str>,
}

impl AuthorityHost {
    /// Azure public cloud: `https://login.microsoftonline.com` (protected by the backup
    /// authentication system).
    pub const AZURE_PUBLIC: AuthorityHost = AuthorityHost {
        url: Cow::Borrowed("https://login.microsoftonline.com"),
    };

    /// Azure US Government: `https://login.microsoftonline.us` (protected by the backup
    /// authentication system).
    pub const AZURE_GOVERNMENT: AuthorityHost = AuthorityHost {
        url: Cow::Borrowed("https://login.microsoftonline.us"),
    };

    /// Azure operated by 21Vianet (China): `https://login.chinacloudapi.cn`.
    pub const AZURE_CHINA: AuthorityHost = AuthorityHost {
        url: Cow::Borrowed("https://login.chinacloudapi.cn"),
    };

    /// Parses an authority host URL such as `https://login.microsoftonline.com` (a trailing
    /// slash and a path prefix are allowed; a bare host name means https).
    ///
    /// # Errors
    /// [`Error::Config`] for an unparsable URL, a scheme other than https (plain http is
    /// accepted for loopback hosts only, rule X2), credentials, a query or a fragment.
    pub fn parse(s: &str) -> Result<Self, Error> {
        let s = s.trim();
        let with_scheme;
        let s = if s.contains("://") {
            s
        } else {
            with_scheme = format!("https://{s}");
            &with_scheme
        };
        let url = Url::parse(s)
            .map_err(|e| Error::config(format!("authority host is not a valid URL: {e}")))?;
        check_url(&url, "authority host")?;
        if url.query().is_some() || url.fragment().is_some() {
            return Err(Error::config(
                "authority host must not have a query or fragment",
            ));
        }
        let normalised = url.as_str().trim_end_matches('/').to_owned();
        Ok(AuthorityHost {
            url: Cow::Owned(normalised),
        })
    }

    /// The URL, e.g. `https://login.microsoftonline.com`.
    pub fn as_str(&self) -> &str {
        &self.url
    }

    /// The host name (or IP address), e.g. `login.microsoftonline.com`.
    pub fn host(&self) -> &str {
        let rest = self
            .url
            .split_once("://")
            .map_or(self.url.as_ref(), |(_, rest)| rest);
        let authority = rest.split('/').next().unwrap_or(rest);
        if authority.starts_with('[') {
            return authority
                .split_once(']')
                .map_or(authority, |(h, _)| &authority[..=h.len()]);
        }
        authority.split(':').next().unwrap_or(authority)
    }

    /// `true` only for `login.microsoftonline.com` and `login.microsoftonline.us` over https:
    /// the hosts whose tokens Entra ID's backup authentication system keeps issuing during an
    /// outage.
    pub fn is_protected_by_backup_auth(&self) -> bool {
        Url::parse(&self.url)
            .is_ok_and(|url| url.path() == "/" && Origin::of_url(&url).is_backup_auth_protected())
    }

    /// The v2.0 token endpoint of `tenant`: `{authority}/{tenant}/oauth2/v2.0/token`.
    ///
    /// # Errors
    /// [`Error::Config`] if `tenant` is not a tenant id or domain name.
    pub fn token_url(&self, tenant: &str) -> Result<Url, Error> {
        check_tenant(tenant)?;
        Url::parse(&format!("{}/{tenant}/oauth2/v2.0/token", self.url))
            .map_err(|e| Error::config(format!("invalid token URL: {e}")))
    }

    /// The regional host for `region` (e.g. `westus2`): `{region}.login.microsoft.com` for the
    /// public cloud, `{region}.{host}` for the others.
    ///
    /// # Errors
    /// [`Error::Config`] for a region that is not a lowercase name of letters, digits and `-`,
    /// or an authority host that is an IP address or has a path.
    pub fn regional(&self, region: &str) -> Result<AuthorityHost, Error> {
        let region = region.trim().to_ascii_lowercase();
        if region.is_empty()
            || region.len() > 40
            || !region
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        {
            return Err(Error::config(
                "region must be a name such as westus2 (letters, digits and -)",
            ));
        }
        let host = self.host().to_ascii_lowercase();
        if host.starts_with('[') || host.parse::<std::net::Ipv4Addr>().is_ok() {
            return Err(Error::config(
                "a regional endpoint needs an authority host name, not an IP address",
            ));
        }
        let (scheme, rest) = self.url.split_once("://").unwrap_or(("https", &self.url));
        if rest.contains('/') {
            return Err(Error::config(
                "a regional endpoint needs an authority host without a path",
            ));
        }
        let regional_host = match host.as_str() {
            "login.microsoftonline.com"
            | "login.microsoft.com"
            | "login.windows.net"
            | "sts.windows.net" => "login.microsoft.com".to_owned(),
            _ => rest.to_ascii_lowercase(),
        };
        AuthorityHost::parse(&format!("{scheme}://{region}.{regional_host}"))
    }
}

impl Default for AuthorityHost {
    /// [`AuthorityHost::AZURE_PUBLIC`].
    fn default() -> Self {
        AuthorityHost::AZURE_PUBLIC
    }
}

impl FromStr for AuthorityHost {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        AuthorityHost::parse(s)
    }
}

impl fmt::Display for AuthorityHost {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.url)
    }
}

impl fmt::Debug for AuthorityHost {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("AuthorityHost").field(&self.url).finish()
    }
}

/// Tenant ids go into the token URL's path: a GUID or a domain name (letters, digits, `.`, `-`,
/// `_`).
pub(crate) fn check_tenant(tenant: &str) -> Result<(), Error> {
    if tenant.is_empty()
        || tenant.len() > 256
        || !tenant
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_'))
        || tenant.starts_with('.')
    {
        return Err(Error::config(
            "tenant id must be a GUID or domain name (letters, digits, '.', '-', '_')",
        ));
    }
    Ok(())
}

/// The region value that asks for the region to be detected (MSAL's
/// `ConfidentialClientApplication.AttemptRegionDiscovery`).
pub(crate) const TRY_AUTO_DETECT: &str = "TryAutoDetect";

/// Where a credential posts its token requests: a global URL and, if a region is configured, a
/// regional URL tried first — unless it failed recently (rule R9: a failing region is
/// remembered and tried again only after the wait policy's back-off, ≥ 5 s, ×2).
#[derive(Debug, Clone)]
pub(crate) struct TokenEndpoint {
    pub(crate) global: Url,
    pub(crate) regional: Option<Url>,
    /// For `TryAutoDetect` without `REGION_NAME`: the region, asked of IMDS once.
    discovery: Option<Arc<RegionDiscovery>>,
    regional_down: Arc<Mutex<RegionalDown>>,
}

/// MSAL's region discovery on a VM: `GET /metadata/instance/compute/location?format=text` at
/// IMDS with `Metadata: true`, once, with a 2 s timeout; no answer means the global endpoint.
#[derive(Debug)]
struct RegionDiscovery {
    location: Url,
    authority: AuthorityHost,
    tenant: String,
    regional: tokio::sync::OnceCell<Option<Url>>,
}

/// IMDS's instance location endpoint.
const IMDS_LOCATION: &str =
    "http://169.254.169.254/metadata/instance/compute/location?format=text&api-version=2021-02-01";

impl RegionDiscovery {
    /// The regional token URL, detected on the first call.
    async fn regional(&self) -> Option<&Url> {
        let detected = self.regional.get_or_init(|| async {
            let region = match self.ask_imds().await {
                Ok(region) => region,
                Err(e) => {
                    tracing::info!(error = %e, "region auto-detection failed; using the global token endpoint");
                    return None;
                }
            };
            match self.authority.regional(&region).and_then(|h| h.token_url(&self.tenant)) {
                Ok(url) => {
                    tracing::info!(region, "region detected through IMDS");
                    Some(url)
                }
                Err(e) => {
                    tracing::info!(error = %e, "IMDS named no usable region; using the global token endpoint");
                    None
                }
            }
        });
        detected.await.as_ref()
    }

    async fn ask_imds(&self) -> Result<String, Error> {
        let client = reqwest::Client::builder()
            .no_proxy()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|_| Error::config("could not build the region discovery client"))?;
        let request = client
            .get(self.location.clone())
            .header("metadata", "true")
            .build()
            .map_err(|_| Error::config("could not build the region discovery request"))?;
        let timeout = std::time::Duration::from_secs(2);
        let raw = super::http::send_raw(&client, request, timeout, "region_discovery").await?;
        let region = String::from_utf8_lossy(&raw.body)
            .trim()
            .replace(' ', "")
            .to_ascii_lowercase();
        if !raw.status.is_success() || region.is_empty() {
            return Err(Error::invalid_response(format!(
                "IMDS answered {} to the location request",
                raw.status
            )));
        }
        Ok(region)
    }
}

/// Consecutive failures of the regional endpoint, and until when it is skipped.
#[derive(Debug, Default)]
struct RegionalDown {
    failures: u32,
    until: Option<Instant>,
}

impl TokenEndpoint {
    /// The endpoint of `tenant` at `authority`, or `custom` (any OAuth 2.0 token URL) instead.
    pub(crate) fn new(
        authority: &AuthorityHost,
        tenant: &str,
        region: Option<&str>,
        custom: Option<&str>,
    ) -> Result<Self, Error> {
        let global = match custom {
            Some(url) => {
                if region.is_some() {
                    return Err(Error::config(
                        "a region cannot be combined with a custom token URL",
                    ));
                }
                let url = Url::parse(url.trim())
                    .map_err(|e| Error::config(format!("token URL is not a valid URL: {e}")))?;
                check_url(&url, "token URL")?;
                if url.fragment().is_some() {
                    return Err(Error::config("token URL must not have a fragment"));
                }
                url
            }
            None => authority.token_url(tenant)?,
        };
        let (regional, discovery) = match region {
            Some(r) if r.trim().eq_ignore_ascii_case(TRY_AUTO_DETECT) => {
                // fails now for an authority that cannot have regional hosts
                authority.regional("westus")?;
                let discovery = RegionDiscovery {
                    location: Url::parse(IMDS_LOCATION)
                        .map_err(|_| Error::config("invalid IMDS location URL"))?,
                    authority: authority.clone(),
                    tenant: tenant.to_owned(),
                    regional: tokio::sync::OnceCell::new(),
                };
                (None, Some(Arc::new(discovery)))
            }
            Some(region) => (Some(authority.regional(region)?.token_url(tenant)?), None),
            None => (None, None),
        };
        Ok(TokenEndpoint {
            global,
            regional,
            discovery,
            regional_down: Arc::default(),
        })
    }

    /// The origin (`scheme://host[:port]`) the tokens come from, for the credential's identity.
    pub(crate) fn origin(&self) -> String {
        self.global.origin().ascii_serialization()
    }

    /// Runs one attempt against the regional URL if there is one and, if it fails with a
    /// transport error, a timeout or a 5xx, one against the global URL; otherwise one attempt
    /// against the global URL.
    pub(crate) async fn call<T, F, Fut>(&self, mut attempt: F) -> Result<T, Error>
    where
        F: FnMut(&Url) -> Fut,
        Fut: Future<Output = Result<T, Error>>,
    {
        let regional = match (&self.regional, &self.discovery) {
            (Some(regional), _) => Some(regional),
            (None, Some(discovery)) => discovery.regional().await,
            (None, None) => None,
        };
        if let Some(regional) = regional {
            let skip_until = self.down().until.filter(|t| *t > Instant::now());
            if skip_until.is_none() {
                match attempt(regional).await {
                    Err(e) if falls_back(&e) => {
                        let mut down = self.down();
                        let wait =
                            WaitPolicy::default().target_wait(Failure::Transient, down.failures);
                        down.failures = down.failures.saturating_add(1);
                        down.until = Some(later(Instant::now(), wait));
                        tracing::debug!(
                            error = %e,
                            skip_ms = wait.as_millis() as u64,
                            "regional token endpoint failed, trying the global one"
                        );
                    }
                    other => {
                        *self.down() = RegionalDown::default();
                        return other;
                    }
                }
            }
        }
        attempt(&self.global).await
    }
}

impl TokenEndpoint {
    /// Region discovery at another IMDS location URL (tests).
    #[cfg(test)]
    fn with_imds_location(mut self, location: &str) -> Self {
        if let Some(d) = self.discovery.as_mut().and_then(Arc::get_mut) {
            d.location = Url::parse(location).expect("a test URL");
        }
        self
    }

    fn down(&self) -> std::sync::MutexGuard<'_, RegionalDown> {
        self.regional_down
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

fn falls_back(e: &Error) -> bool {
    match e {
        Error::Unavailable { .. } | Error::Timeout { .. } => true,
        Error::IdentityProvider { status, .. } => status.is_server_error(),
        _ => false,
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    #[test]
    fn c6_known_clouds_and_backup_auth_protection() {
        assert_eq!(AuthorityHost::default(), AuthorityHost::AZURE_PUBLIC);
        assert_eq!(
            AuthorityHost::AZURE_PUBLIC.as_str(),
            "https://login.microsoftonline.com"
        );
        assert_eq!(
            AuthorityHost::AZURE_GOVERNMENT.host(),
            "login.microsoftonline.us"
        );
        assert_eq!(AuthorityHost::AZURE_CHINA.host(), "login.chinacloudapi.cn");
        assert!(AuthorityHost::AZURE_PUBLIC.is_protected_by_backup_auth());
        assert!(AuthorityHost::AZURE_GOVERNMENT.is_protected_by_backup_auth());
        assert!(!AuthorityHost::AZURE_CHINA.is_protected_by_backup_auth());
        for other in [
            "https://login.microsoft.com",
            "https://login.windows.net",
            "https://westus2.login.microsoft.com",
            "https://login.microsoftonline.com.evil.example",
            "https://login.microsoftonline.com:8443",
            "https://login.microsoftonline.com/proxy",
            "http://localhost:1234",
        ] {
            let h = AuthorityHost::parse(other).unwrap();
            assert!(!h.is_protected_by_backup_auth(), "{other}");
        }
        assert!(AuthorityHost::parse("https://LOGIN.microsoftonline.com/")
            .unwrap()
            .is_protected_by_backup_auth());
    }

    #[test]
    fn c6_parse_normalises_and_validates_scheme() {
        let h: AuthorityHost = "https://login.microsoftonline.us/".parse().unwrap();
        assert_eq!(h, AuthorityHost::AZURE_GOVERNMENT);
        assert_eq!(
            AuthorityHost::parse("login.chinacloudapi.cn").unwrap(),
            AuthorityHost::AZURE_CHINA
        );
        let local = AuthorityHost::parse("http://127.0.0.1:8080/base/").unwrap();
        assert_eq!(local.as_str(), "http://127.0.0.1:8080/base");
        assert_eq!(local.host(), "127.0.0.1");
        assert_eq!(
            AuthorityHost::parse("http://[::1]:9/").unwrap().host(),
            "[::1]"
        );
        for bad in [
            "http://login.microsoftonline.com",
            "ftp://login.microsoftonline.com",
            "https://login.microsoftonline.com/?x=1",
            "https://u:p@login.microsoftonline.com",
            "https://",
            "",
        ] {
            assert!(
                matches!(AuthorityHost::parse(bad), Err(Error::Config(_))),
                "{bad}"
            );
        }
        assert_eq!(
            AuthorityHost::AZURE_PUBLIC
                .token_url("contoso.onmicrosoft.com")
                .unwrap()
                .as_str(),
            "https://login.microsoftonline.com/contoso.onmicrosoft.com/oauth2/v2.0/token"
        );
        assert!(AuthorityHost::AZURE_PUBLIC.token_url("a/../b").is_err());
        assert!(AuthorityHost::AZURE_PUBLIC.token_url("").is_err());
        assert!(AuthorityHost::AZURE_PUBLIC.token_url("a?b").is_err());
    }

    #[test]
    fn c6_regional_hosts() {
        assert_eq!(
            AuthorityHost::AZURE_PUBLIC
                .regional("WestUS2")
                .unwrap()
                .as_str(),
            "https://westus2.login.microsoft.com"
        );
        assert_eq!(
            AuthorityHost::AZURE_GOVERNMENT
                .regional("usgovvirginia")
                .unwrap()
                .as_str(),
            "https://usgovvirginia.login.microsoftonline.us"
        );
        assert!(AuthorityHost::AZURE_PUBLIC.regional("west us").is_err());
        assert!(AuthorityHost::AZURE_PUBLIC.regional("").is_err());
        assert!(AuthorityHost::parse("http://127.0.0.1:1")
            .unwrap()
            .regional("westus")
            .is_err());
        let ep =
            TokenEndpoint::new(&AuthorityHost::AZURE_PUBLIC, "t", Some("westus2"), None).unwrap();
        assert_eq!(
            ep.regional.unwrap().as_str(),
            "https://westus2.login.microsoft.com/t/oauth2/v2.0/token"
        );
        assert!(TokenEndpoint::new(
            &AuthorityHost::AZURE_PUBLIC,
            "t",
            Some("westus2"),
            Some("https://idp.example/token")
        )
        .is_err());
    }

    #[tokio::test]
    async fn c6_regional_falls_back_to_global_on_5xx_and_transport_errors_only() {
        let failures: [(Error, bool); 5] = [
            (
                Error::Unavailable {
                    what: "identity provider",
                    source: None,
                },
                true,
            ),
            (
                Error::Timeout {
                    after: std::time::Duration::from_millis(1),
                },
                true,
            ),
            (
                Error::IdentityProvider {
                    status: http::StatusCode::SERVICE_UNAVAILABLE,
                    details: Box::default(),
                },
                true,
            ),
            (
                Error::IdentityProvider {
                    status: http::StatusCode::TOO_MANY_REQUESTS,
                    details: Box::default(),
                },
                false,
            ),
            (Error::invalid_response("x"), false),
        ];
        for (failure, expect_fallback) in failures {
            let ep = endpoint();
            let mut failure = Some(failure);
            let mut calls = Vec::new();
            let out = ep
                .call(|url| {
                    calls.push(url.host_str().unwrap_or_default().to_owned());
                    let result = match failure.take() {
                        Some(e) => Err(e),
                        None => Ok(()),
                    };
                    async move { result }
                })
                .await;
            if expect_fallback {
                assert!(out.is_ok());
                assert_eq!(calls, ["regional.example", "global.example"]);
            } else {
                assert!(out.is_err());
                assert_eq!(calls, ["regional.example"]);
            }
        }
    }

    fn endpoint() -> TokenEndpoint {
        TokenEndpoint {
            global: Url::parse("https://global.example/t").unwrap(),
            regional: Some(Url::parse("https://regional.example/t").unwrap()),
            discovery: None,
            regional_down: Arc::default(),
        }
    }

    #[tokio::test(start_paused = true)]
    async fn r9_a_failing_region_is_remembered_and_retried_after_the_backoff() {
        let ep = endpoint();
        let log = Mutex::new(Vec::new());
        let calls = &log;
        let ep = &ep;
        let call = |regional_ok: bool| {
            ep.call(move |url| {
                let host = url.host_str().unwrap_or_default().to_owned();
                let fail = host == "regional.example" && !regional_ok;
                calls.lock().unwrap().push((host, Instant::now()));
                async move {
                    if fail {
                        Err(Error::Timeout {
                            after: std::time::Duration::from_secs(1),
                        })
                    } else {
                        Ok(())
                    }
                }
            })
        };
        let start = Instant::now();
        call(false).await.unwrap();
        // Within the 5 s back-off the region is skipped: global only.
        tokio::time::advance(std::time::Duration::from_millis(4900)).await;
        call(false).await.unwrap();
        // Past it (5 s plus at most 20 % jitter), the region is tried again; it fails again:
        // now skipped for 10 s (plus jitter).
        tokio::time::advance(std::time::Duration::from_millis(1200)).await;
        call(false).await.unwrap();
        tokio::time::advance(std::time::Duration::from_millis(9_800)).await;
        call(true).await.unwrap();
        tokio::time::advance(std::time::Duration::from_millis(2_300)).await;
        call(true).await.unwrap();
        let hosts: Vec<_> = calls
            .lock()
            .unwrap()
            .iter()
            .map(|(h, t)| {
                (
                    h.split('.').next().unwrap_or("").to_owned(),
                    (*t - start).as_millis(),
                )
            })
            .collect();
        assert_eq!(
            hosts,
            [
                ("regional".to_owned(), 0),
                ("global".to_owned(), 0),
                ("global".to_owned(), 4900),
                ("regional".to_owned(), 6100),
                ("global".to_owned(), 6100),
                ("global".to_owned(), 15900),
                ("regional".to_owned(), 18200),
            ]
        );
    }

    #[tokio::test]
    async fn c6_try_auto_detect_asks_imds_once_for_the_region() {
        use wiremock::matchers::{header, method, path, query_param};
        use wiremock::{Mock, MockServer, ResponseTemplate};
        let location = "/metadata/instance/compute/location";
        let hosts_called = |ep: &TokenEndpoint| {
            let ep = ep.clone();
            async move {
                let mut calls = Vec::new();
                let out = ep
                    .call(|url| {
                        calls.push(url.as_str().to_owned());
                        async { Err::<(), _>(Error::invalid_response("x")) }
                    })
                    .await;
                assert!(out.is_err());
                calls
            }
        };

        let imds = MockServer::start().await;
        Mock::given(method("GET"))
            .and(path(location))
            .and(header("metadata", "true"))
            .and(query_param("format", "text"))
            .respond_with(ResponseTemplate::new(200).set_body_string("West US 2\n"))
            .expect(1)
            .mount(&imds)
            .await;
        let url = format!(
            "{}{location}?format=text&api-version=2021-02-01",
            imds.uri()
        );
        let ep = TokenEndpoint::new(
            &AuthorityHost::AZURE_PUBLIC,
            "t",
            Some("tryautodetect"),
            None,
        )
        .unwrap()
        .with_imds_location(&url);
        assert_eq!(ep.regional, None);
        for _ in 0..3 {
            assert_eq!(
                hosts_called(&ep).await,
                ["https://westus2.login.microsoft.com/t/oauth2/v2.0/token"]
            );
        }

        // no IMDS answer (off Azure): the global endpoint, and IMDS is not asked again
        let missing = MockServer::start().await;
        Mock::given(method("GET"))
            .respond_with(ResponseTemplate::new(404))
            .expect(1)
            .mount(&missing)
            .await;
        let url = format!("{}{location}?format=text", missing.uri());
        let ep = TokenEndpoint::new(
            &AuthorityHost::AZURE_PUBLIC,
            "t",
            Some("TryAutoDetect"),
            None,
        )
        .unwrap()
        .with_imds_location(&url);
        for _ in 0..2 {
            assert_eq!(
                hosts_called(&ep).await,
                ["https://login.microsoftonline.com/t/oauth2/v2.0/token"]
            );
        }

        // an authority that cannot have regional hosts fails at build time
        let ip = AuthorityHost::parse("http://127.0.0.1:1").unwrap();
        assert!(TokenEndpoint::new(&ip, "t", Some("TryAutoDetect"), None).is_err());
    }
}
