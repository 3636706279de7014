//! [`resilience_report`]: a configuration checked against the guidance this crate implements
//! (rule O3).
//!
//! The checks come from two Microsoft Entra documents: *Increase the resilience of
//! authentication and authorization in daemon applications* and *Application requirements for
//! the backup authentication system*.
//!
//! ```
//! # #[cfg(feature = "reqwest")] {
//! use std::time::Duration;
//! use resilient_auth::report::{resilience_report, Stack};
//! use resilient_auth::{ExpBackoffLayer, RetryAfterLayer, TimeoutLayer};
//!
//! let (ra, eb, t) = (RetryAfterLayer::default(), ExpBackoffLayer::default(), TimeoutLayer::new(Duration::from_secs(10)));
//! let report = resilience_report(&Stack { retry_after: Some(&ra), exp_backoff: Some(&eb), timeout: Some(&t), ..Stack::default() });
//! println!("{report}");
//! assert!(report.failures().next().is_none());
//! # }
//! ```

use std::fmt;
use std::time::Duration;

use crate::origin::{Origin, BACKUP_AUTH_HOSTS};
use crate::{
    AuthLayer, CredentialKind, ExpBackoffLayer, RetryAfterLayer, TimeoutLayer, TokenCache,
};

/// The parts of a client stack to check. Leave out what you don't use; build it with
/// `..Stack::default()` so that fields added later do not break your code.
#[derive(Debug, Default, Clone, Copy)]
pub struct Stack<'a> {
    /// The token cache (taken from `auth` if only that is given).
    pub tokens: Option<&'a TokenCache>,
    /// The auth layer.
    pub auth: Option<&'a AuthLayer>,
    /// The Retry-After layer.
    pub retry_after: Option<&'a RetryAfterLayer>,
    /// The back-off layer.
    pub exp_backoff: Option<&'a ExpBackoffLayer>,
    /// The timeout layer.
    pub timeout: Option<&'a TimeoutLayer>,
}

/// How a check came out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    /// Follows the guidance.
    Pass,
    /// Works, but weaker than the guidance recommends.
    Warn,
    /// Goes against the guidance.
    Fail,
    /// Does not apply to this configuration.
    NotApplicable,
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Status::Pass => "ok",
            Status::Warn => "warn",
            Status::Fail => "FAIL",
            Status::NotApplicable => "n/a",
        })
    }
}

/// One check.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Check {
    /// A stable id, e.g. `retry_floor`.
    pub id: &'static str,
    /// What is checked.
    pub title: &'static str,
    /// The outcome.
    pub status: Status,
    /// Why, for this configuration.
    pub detail: String,
}

/// The checklist. `Display` prints it as a table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResilienceReport {
    checks: Vec<Check>,
}

impl ResilienceReport {
    /// All checks, in a fixed order.
    pub fn checks(&self) -> &[Check] {
        &self.checks
    }

    /// The check with `id`.
    pub fn check(&self, id: &str) -> Option<&Check> {
        self.checks.iter().find(|c| c.id == id)
    }

    /// The failed checks.
    pub fn failures(&self) -> impl Iterator<Item = &Check> {
        self.checks.iter().filter(|c| c.status == Status::Fail)
    }
}

impl fmt::Display for ResilienceReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let width = self.checks.iter().map(|c| c.title.len()).max().unwrap_or(5);
        writeln!(f, "{:<width$}  {:<6} detail", "check", "status")?;
        writeln!(f, "{:-<width$}  {:-<6} {:-<40}", "", "", "")?;
        for c in &self.checks {
            writeln!(
                f,
                "{:<width$}  {:<6} {}",
                c.title,
                c.status.to_string(),
                c.detail
            )?;
        }
        Ok(())
    }
}

/// The backup authentication system's minimum persistence of a native app's token cache.
const MIN_RETENTION: Duration = Duration::from_secs(3 * 24 * 3600);
/// The daemon guidance's floor for the first retry after a 5xx or a timeout.
const MIN_FLOOR: Duration = Duration::from_secs(5);

fn check(
    id: &'static str,
    title: &'static str,
    status: Status,
    detail: impl Into<String>,
) -> Check {
    Check {
        id,
        title,
        status,
        detail: detail.into(),
    }
}

/// Checks `stack` against the guidance: managed identity or client credentials, an authority
/// host protected by the backup authentication system, fixed scopes, a persistent cache of at
/// least 3 days for refresh tokens, a retry floor of at least 5 s, Retry-After honoured,
/// timeouts retried only after back-off, a retry budget, and token origins restricted.
pub fn resilience_report(stack: &Stack<'_>) -> ResilienceReport {
    let tokens = stack.tokens.or(stack.auth.map(AuthLayer::tokens));
    let identity = tokens.map(TokenCache::identity);
    let source = identity.as_ref().map(|i| i.source);
    let managed = source.is_some_and(CredentialKind::is_managed_identity);
    let public_client = source.is_some_and(CredentialKind::is_public_client);
    let mut checks = Vec::new();

    let mut credential = match (&identity, source) {
        (None, _) | (_, None) => check("credential", "credential source", Status::NotApplicable, "no token cache given"),
        (Some(_), Some(_)) if managed => check(
            "credential",
            "credential source",
            Status::Pass,
            "managed identity: no secret to rotate, protected by the backup authentication system",
        ),
        (Some(i), Some(s)) if s.is_confidential_client() => check(
            "credential",
            "credential source",
            Status::Warn,
            format!("{}: client credentials flow, not yet protected by the backup authentication system; prefer managed identity on Azure", i.kind),
        ),
        (Some(_), Some(_)) if public_client => check(
            "credential",
            "credential source",
            Status::Pass,
            "public client acquiring silently with refresh tokens",
        ),
        (Some(i), Some(_)) => check(
            "credential",
            "credential source",
            Status::Warn,
            format!("{}: a custom source; make sure it caches by expires_in and never decodes tokens", i.kind),
        ),
    };
    if let Some(why) = identity.as_ref().and_then(|i| i.chosen_because.as_deref()) {
        credential.detail = format!(
            "{}; chosen from the environment because {why}",
            credential.detail
        );
    }
    checks.push(credential);

    checks.push(match &identity {
        None => check("authority_host", "authority host", Status::NotApplicable, "no token cache given"),
        Some(_) if managed => check(
            "authority_host",
            "authority host",
            Status::NotApplicable,
            "managed identity endpoints are local to the host",
        ),
        Some(i) => {
            let uri = i.authority.parse::<http::Uri>().unwrap_or_default();
            let origin = Origin::of_uri(&uri);
            let host = origin.host().to_ascii_lowercase();
            if origin.is_backup_auth_protected() {
                check("authority_host", "authority host", Status::Pass, format!("{host} is protected by the backup authentication system"))
            } else {
                check(
                    "authority_host",
                    "authority host",
                    Status::Warn,
                    format!("{host} is not a host the backup authentication system protects ({}, over https)", BACKUP_AUTH_HOSTS.join(", ")),
                )
            }
        }
    });

    checks.push(match tokens {
        None => check("fixed_scopes", "fixed scopes", Status::NotApplicable, "no token cache given"),
        Some(t) if t.scopes().is_empty() => check("fixed_scopes", "fixed scopes", Status::Fail, "no scopes"),
        Some(t) => check(
            "fixed_scopes",
            "fixed scopes",
            Status::Pass,
            format!("{} fixed when the cache was built; no dynamic consent, no password grant, no UserInfo", t.scopes().join(" ")),
        ),
    });

    checks.push(match tokens {
        Some(t) if public_client => match t.store_retention() {
            Some(r) if r >= MIN_RETENTION => check(
                "persistent_cache",
                "persistent token cache >= 3 days",
                Status::Pass,
                format!("refresh tokens kept {} h", r.as_secs() / 3600),
            ),
            Some(r) => check(
                "persistent_cache",
                "persistent token cache >= 3 days",
                Status::Fail,
                format!("refresh tokens kept only {} h", r.as_secs() / 3600),
            ),
            None => check(
                "persistent_cache",
                "persistent token cache >= 3 days",
                Status::Fail,
                "a public client without a persistent store loses its refresh token on restart",
            ),
        },
        _ => check(
            "persistent_cache",
            "persistent token cache >= 3 days",
            Status::NotApplicable,
            "only public clients (refresh tokens) need it",
        ),
    });

    let floor = stack.exp_backoff.map(|b| b.backoff().initial());
    let cache_floor = tokens.map(|t| t.backoff().initial());
    checks.push(match (floor, cache_floor) {
        (None, _) => check(
            "retry_floor",
            "5xx / timeouts: first retry >= 5 s",
            Status::Warn,
            "no ExpBackoffLayer: 5xx, timeouts and connection errors are not retried",
        ),
        (Some(f), c) if f < MIN_FLOOR || c.is_some_and(|c| c < MIN_FLOOR) => check(
            "retry_floor",
            "5xx / timeouts: first retry >= 5 s",
            Status::Fail,
            format!(
                "first retry after {:?} (layer) / {:?} (token cache): below the 5 s the guidance asks for",
                f,
                c.unwrap_or(f)
            ),
        ),
        (Some(f), _) => check(
            "retry_floor",
            "5xx / timeouts: first retry >= 5 s",
            Status::Pass,
            format!("first retry after {f:?}, x2, jitter only adds"),
        ),
    });

    checks.push(match stack.retry_after {
        Some(ra) => check(
            "retry_after",
            "Retry-After honoured",
            Status::Pass,
            format!("429/5xx waits honoured exactly, origin held, cap {:?}", ra.max_wait()),
        ),
        None if stack.exp_backoff.is_some() => check(
            "retry_after",
            "Retry-After honoured",
            Status::Warn,
            "no RetryAfterLayer: ExpBackoffLayer treats Retry-After as a lower bound, but other requests to the origin are not held",
        ),
        None => check("retry_after", "Retry-After honoured", Status::Fail, "no RetryAfterLayer: 429 and Retry-After are ignored"),
    });

    checks.push(match (stack.timeout, stack.exp_backoff) {
        (Some(t), Some(_)) => check(
            "timeouts",
            "timeouts bounded, never retried at once",
            Status::Pass,
            format!(
                "{:?} per attempt; a timed-out attempt waits the back-off",
                t.timeout()
            ),
        ),
        (Some(t), None) => check(
            "timeouts",
            "timeouts bounded, never retried at once",
            Status::Warn,
            format!(
                "{:?} per attempt, but timed-out attempts are not retried",
                t.timeout()
            ),
        ),
        (None, _) => check(
            "timeouts",
            "timeouts bounded, never retried at once",
            Status::Warn,
            "no TimeoutLayer: a hanging server holds the caller as long as the client lets it",
        ),
    });

    checks.push(match stack.exp_backoff.map(ExpBackoffLayer::budget) {
        None => check(
            "retry_budget",
            "retry budget",
            Status::NotApplicable,
            "no ExpBackoffLayer",
        ),
        Some(Some(b)) => check(
            "retry_budget",
            "retry budget",
            Status::Pass,
            format!(
                "retries <= {:.0} % of requests (plus a small floor)",
                b.ratio() * 100.0
            ),
        ),
        Some(None) => check(
            "retry_budget",
            "retry budget",
            Status::Warn,
            "no budget: a dependency that is down gets up to (1 + max retries) x the traffic",
        ),
    });

    checks.push(match stack.auth {
        None => check(
            "token_origins",
            "token sent only to named origins",
            Status::NotApplicable,
            "no AuthLayer",
        ),
        Some(a) => {
            let (status, detail) = match a.token_origins().summary() {
                Ok(named) => (Status::Pass, named),
                Err(None) => (
                    Status::Warn,
                    "AuthLayer::allow_any_origin(): every origin the client calls gets the token, redirect targets included; name them with AuthLayer::allow_origins".to_owned(),
                ),
                Err(Some(unnamed)) => (Status::Fail, unnamed),
            };
            check(
                "token_origins",
                "token sent only to named origins",
                status,
                detail,
            )
        }
    });

    ResilienceReport { checks }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::retry::Backoff;
    use crate::{CredentialIdentity, Error, TokenCredential, TokenRequest, TokenResponse};
    use futures_util::future::{BoxFuture, FutureExt};

    #[derive(Debug)]
    struct Id(&'static str, &'static str);

    /// The typed kind a credential of this kind string reports.
    fn source_of(kind: &str) -> CredentialKind {
        match kind {
            "client_secret" => CredentialKind::ClientSecret,
            "refresh_token" => CredentialKind::RefreshToken,
            k if k.starts_with("managed_identity") => CredentialKind::ManagedIdentity,
            _ => CredentialKind::Custom,
        }
    }

    impl TokenCredential for Id {
        fn get_token<'a>(
            &'a self,
            _: &'a TokenRequest,
        ) -> BoxFuture<'a, Result<TokenResponse, Error>> {
            async { Ok(TokenResponse::new("t", Duration::from_secs(3600))) }.boxed()
        }
        fn identity(&self) -> CredentialIdentity {
            CredentialIdentity::new(self.0, self.1).with_source(source_of(self.0))
        }
    }

    fn cache(kind: &'static str, authority: &'static str) -> TokenCache {
        TokenCache::new(Id(kind, authority), ["api://x/.default"])
    }

    fn status(stack: &Stack<'_>, id: &str) -> Status {
        resilience_report(stack)
            .check(id)
            .map(|c| c.status)
            .unwrap_or(Status::NotApplicable)
    }

    /// A stack with only what `set` puts in it.
    fn stack<'a>(set: impl FnOnce(&mut Stack<'a>)) -> Stack<'a> {
        let mut stack = Stack::default();
        set(&mut stack);
        stack
    }

    /// Asserts the status check `id` comes out with for each stack: `(stack, want)` rows.
    #[track_caller]
    fn assert_check(id: &str, rows: &[(Stack<'_>, Status)]) {
        for (row, (stack, want)) in rows.iter().enumerate() {
            assert_eq!(status(stack, id), *want, "check {id}, row {row}");
        }
    }

    #[test]
    fn o3_credential_source() {
        let mi = cache("managed_identity/imds", "http://169.254.169.254");
        let cs = cache("client_secret", "https://login.microsoftonline.com");
        let custom = cache("mine", "https://login.microsoftonline.com");
        assert_check(
            "credential",
            &[
                (stack(|s| s.tokens = Some(&mi)), Status::Pass),
                (stack(|s| s.tokens = Some(&cs)), Status::Warn),
                (stack(|s| s.tokens = Some(&custom)), Status::Warn),
                (Stack::default(), Status::NotApplicable),
            ],
        );
    }

    #[test]
    fn o3_authority_host_protected_by_backup_auth() {
        for (authority, want) in [
            ("https://login.microsoftonline.com", Status::Pass),
            ("https://LOGIN.microsoftonline.us:443/", Status::Pass),
            ("https://login.chinacloudapi.cn", Status::Warn),
            ("http://127.0.0.1:8080", Status::Warn),
        ] {
            let c = cache("client_secret", authority);
            assert_eq!(
                status(&stack(|s| s.tokens = Some(&c)), "authority_host"),
                want,
                "{authority}"
            );
        }
        let mi = cache("managed_identity/imds", "http://169.254.169.254");
        assert_check(
            "authority_host",
            &[(stack(|s| s.tokens = Some(&mi)), Status::NotApplicable)],
        );
    }

    #[test]
    fn o3_fixed_scopes() {
        let c = cache("client_secret", "https://login.microsoftonline.com");
        let empty = TokenCache::new(Id("client_secret", "x"), Vec::<String>::new());
        assert_check(
            "fixed_scopes",
            &[
                (stack(|s| s.tokens = Some(&c)), Status::Pass),
                (stack(|s| s.tokens = Some(&empty)), Status::Fail),
            ],
        );
    }

    #[test]
    fn o3_persistent_cache_for_refresh_tokens() {
        #[derive(Debug, Clone)]
        struct Persistent(Duration);
        impl crate::TokenStore for Persistent {
            fn load<'a>(
                &'a self,
                _: &'a str,
            ) -> BoxFuture<'a, Result<Option<crate::StoredToken>, Error>> {
                async { Ok(None) }.boxed()
            }
            fn save<'a>(
                &'a self,
                _: &'a str,
                _: &'a crate::StoredToken,
            ) -> BoxFuture<'a, Result<(), Error>> {
                async { Ok(()) }.boxed()
            }
            fn remove<'a>(&'a self, _: &'a str) -> BoxFuture<'a, Result<(), Error>> {
                async { Ok(()) }.boxed()
            }
            fn lock<'a>(
                &'a self,
                _: &'a str,
                _: Duration,
            ) -> BoxFuture<'a, Result<Option<crate::StoreLock>, Error>> {
                async { Ok(None) }.boxed()
            }
            fn unlock<'a>(&'a self, _: &'a crate::StoreLock) -> BoxFuture<'a, Result<(), Error>> {
                async { Ok(()) }.boxed()
            }
            fn persistent_retention(&self) -> Option<Duration> {
                Some(self.0)
            }
        }
        let with = |store: Option<Persistent>| {
            let b = TokenCache::builder(
                Id("refresh_token", "https://login.microsoftonline.com"),
                ["s"],
            );
            match store {
                Some(s) => b.store(s).build().unwrap(),
                None => b.build().unwrap(),
            }
        };
        let days = |d: u64| Duration::from_secs(d * 24 * 3600);
        let three_days = with(Some(Persistent(days(3))));
        let one_day = with(Some(Persistent(days(1))));
        let memory = with(None);
        let daemon = cache("client_secret", "https://login.microsoftonline.com");
        assert_check(
            "persistent_cache",
            &[
                (stack(|s| s.tokens = Some(&three_days)), Status::Pass),
                (stack(|s| s.tokens = Some(&one_day)), Status::Fail),
                (stack(|s| s.tokens = Some(&memory)), Status::Fail),
                (stack(|s| s.tokens = Some(&daemon)), Status::NotApplicable),
            ],
        );
    }

    #[cfg(feature = "file-store")]
    #[test]
    fn o3_file_store_counts_as_a_persistent_cache() {
        let dir = std::env::temp_dir().join(format!("ra-report-{}", fastrand::u64(..)));
        let short =
            crate::FileStore::new(&dir).refresh_token_retention(Duration::from_secs(24 * 3600));
        let long = crate::FileStore::new(&dir);
        let build = |s: crate::FileStore| {
            TokenCache::builder(
                Id("refresh_token", "https://login.microsoftonline.com"),
                ["s"],
            )
            .store(s)
            .build()
            .unwrap()
        };
        let (long, short) = (build(long), build(short));
        assert_check(
            "persistent_cache",
            &[
                (stack(|s| s.tokens = Some(&long)), Status::Pass),
                (stack(|s| s.tokens = Some(&short)), Status::Fail),
            ],
        );
    }

    #[test]
    fn o3_retry_floor_at_least_5s() {
        let good = ExpBackoffLayer::default();
        let fast = ExpBackoffLayer::builder()
            .backoff(
                Backoff::builder()
                    .initial(Duration::from_secs(1))
                    .build()
                    .unwrap(),
            )
            .build()
            .unwrap();
        let fast_cache = TokenCache::builder(Id("client_secret", "x"), ["s"])
            .backoff(
                Backoff::builder()
                    .initial(Duration::from_millis(100))
                    .build()
                    .unwrap(),
            )
            .build()
            .unwrap();
        let good_layer_fast_cache = Stack {
            exp_backoff: Some(&good),
            tokens: Some(&fast_cache),
            ..Stack::default()
        };
        assert_check(
            "retry_floor",
            &[
                (stack(|s| s.exp_backoff = Some(&good)), Status::Pass),
                (stack(|s| s.exp_backoff = Some(&fast)), Status::Fail),
                (Stack::default(), Status::Warn),
                (good_layer_fast_cache, Status::Fail),
            ],
        );
    }

    #[test]
    fn o3_retry_after_honoured() {
        let ra = RetryAfterLayer::default();
        let eb = ExpBackoffLayer::default();
        assert_check(
            "retry_after",
            &[
                (stack(|s| s.retry_after = Some(&ra)), Status::Pass),
                (stack(|s| s.exp_backoff = Some(&eb)), Status::Warn),
                (Stack::default(), Status::Fail),
            ],
        );
    }

    #[test]
    fn o3_timeouts_and_budget() {
        let t = TimeoutLayer::new(Duration::from_secs(10));
        let eb = ExpBackoffLayer::default();
        let no_budget = ExpBackoffLayer::builder().budget(None).build().unwrap();
        let both = Stack {
            timeout: Some(&t),
            exp_backoff: Some(&eb),
            ..Stack::default()
        };
        assert_check(
            "timeouts",
            &[
                (both, Status::Pass),
                (stack(|s| s.timeout = Some(&t)), Status::Warn),
                (Stack::default(), Status::Warn),
            ],
        );
        assert_check(
            "retry_budget",
            &[
                (stack(|s| s.exp_backoff = Some(&eb)), Status::Pass),
                (stack(|s| s.exp_backoff = Some(&no_budget)), Status::Warn),
            ],
        );
    }

    #[test]
    fn o3_token_origins_restricted() {
        let c = cache("client_secret", "https://login.microsoftonline.com");
        let open = AuthLayer::new(c.clone()).allow_any_origin();
        let closed = AuthLayer::new(c)
            .allow_origins(["https://api.example.com"])
            .unwrap();
        assert_check(
            "token_origins",
            &[
                (stack(|s| s.auth = Some(&open)), Status::Warn),
                (stack(|s| s.auth = Some(&closed)), Status::Pass),
            ],
        );
        // The cache is taken from the auth layer.
        assert_check(
            "credential",
            &[(stack(|s| s.auth = Some(&closed)), Status::Warn)],
        );
    }

    fn origins_check(auth: &AuthLayer) -> Check {
        resilience_report(&Stack {
            auth: Some(auth),
            ..Stack::default()
        })
        .check("token_origins")
        .cloned()
        .unwrap()
    }

    #[test]
    fn x5_report_reflects_derived_origins_and_flags_scopes_without_a_host() {
        // A Key Vault scope: the origins derived from it pass, and are named.
        let vault = TokenCache::new(
            Id("client_secret", "https://login.microsoftonline.com"),
            ["https://vault.azure.net/.default"],
        );
        let c = origins_check(&AuthLayer::new(vault));
        assert_eq!(c.status, Status::Pass, "{c:?}");
        assert!(c.detail.contains("https://*.vault.azure.net"), "{c:?}");
        assert!(c.detail.contains("Key Vault, public cloud"), "{c:?}");
        // A custom https resource: its own host only.
        let custom = TokenCache::new(
            Id("client_secret", "https://login.microsoftonline.com"),
            ["https://api.contoso.com/.default"],
        );
        let c = origins_check(&AuthLayer::new(custom));
        assert_eq!(c.status, Status::Pass, "{c:?}");
        assert!(c.detail.ends_with(": https://api.contoso.com"), "{c:?}");
        // api:// names no host: the check fails and says how to fix it.
        let unnamed = cache("client_secret", "https://login.microsoftonline.com");
        let c = origins_check(&AuthLayer::new(unnamed.clone()));
        assert_eq!(c.status, Status::Fail, "{c:?}");
        assert!(
            c.detail.contains("api://x/.default")
                && c.detail.contains("AuthLayer::allow_origins")
                && c.detail.contains("AuthLayer::allow_any_origin()"),
            "{c:?}"
        );
        // Named origins fix it; the opt-out only warns.
        let fixed = AuthLayer::new(unnamed.clone())
            .allow_origins(["https://api.example.com"])
            .unwrap();
        assert_eq!(origins_check(&fixed).status, Status::Pass);
        let any = AuthLayer::new(unnamed).allow_any_origin();
        assert_eq!(origins_check(&any).status, Status::Warn);
    }

    #[test]
    fn o3_report_prints_as_a_table() {
        let c = cache("managed_identity/imds", "http://169.254.169.254");
        let auth = AuthLayer::new(c)
            .allow_origins(["https://api.example.com"])
            .unwrap();
        let (ra, eb, t) = (
            RetryAfterLayer::default(),
            ExpBackoffLayer::default(),
            TimeoutLayer::new(Duration::from_secs(10)),
        );
        let r = resilience_report(&Stack {
            auth: Some(&auth),
            retry_after: Some(&ra),
            exp_backoff: Some(&eb),
            timeout: Some(&t),
            ..Stack::default()
        });
        assert_eq!(r.failures().count(), 0);
        let text = r.to_string();
        assert_eq!(text.lines().count(), 2 + r.checks().len());
        assert!(
            text.contains("retry budget") && text.contains("ok"),
            "{text}"
        );
    }
}
