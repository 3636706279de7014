//! The one request handler behind both ways in: the loopback socket server and the in-memory
//! service and credentials.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, SystemTime};

use base64::Engine;
use bytes::Bytes;
use http::{HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::Full;
use tokio::time::Instant;

use super::fault::{Fault, FaultKind, RetryAfter, Target};
use super::log::{Journal, Outcome, SentRetryAfter, TokenStatus};

/// The largest request body the fake reads.
pub(crate) const MAX_BODY: usize = 64 * 1024;

/// How long a [`FaultKind::Hang`] hangs before the fake gives up and closes the connection.
const HANG: Duration = Duration::from_secs(3600);

/// The outcome of one request: a response, or "hang up without answering".
pub(crate) type Answer = Result<Response<Full<Bytes>>, std::io::Error>;

pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Everything the fake remembers.
#[derive(Debug)]
pub(crate) struct State {
    pub(crate) start: Instant,
    lifetime: Duration,
    refresh_in: Option<Duration>,
    pub(crate) faults: Mutex<Vec<Fault>>,
    pub(crate) tokens: Mutex<Issued>,
    pub(crate) journal: Mutex<Journal>,
    /// Tokens issued so far (also the last serial number).
    pub(crate) counter: AtomicU64,
}

impl State {
    pub(crate) fn new(
        lifetime: Duration,
        refresh_in: Option<Duration>,
        faults: Vec<Fault>,
        log_capacity: usize,
        max_issued: usize,
    ) -> Self {
        State {
            start: Instant::now(),
            lifetime,
            refresh_in,
            faults: Mutex::new(faults),
            tokens: Mutex::new(Issued::new(max_issued)),
            journal: Mutex::new(Journal::new(log_capacity)),
            counter: AtomicU64::new(0),
        }
    }

    pub(crate) fn elapsed(&self) -> Duration {
        self.start.elapsed()
    }

    fn fault_for(&self, target: Target, at: Duration) -> Option<FaultKind> {
        lock(&self.faults)
            .iter()
            .find(|f| f.target == target && f.window.contains(&at) && f.kind.applies_to(target))
            .map(|f| f.kind.clone())
    }

    /// Revokes every token issued so far.
    pub(crate) fn revoke_all(&self) {
        let through = self.counter.load(Ordering::SeqCst);
        lock(&self.tokens).revoked_through = through;
        if through > 0 {
            lock(&self.journal).revoke(self.elapsed(), 1..=through);
        }
    }

    /// Revokes one token; `false` if it is unknown (never issued, or forgotten after expiry).
    pub(crate) fn revoke(&self, token: &str) -> bool {
        let serial = {
            let mut tokens = lock(&self.tokens);
            let Some(t) = tokens.map.get_mut(token) else {
                return false;
            };
            t.revoked = true;
            t.serial
        };
        lock(&self.journal).revoke(self.elapsed(), serial..=serial);
        true
    }
}

/// One issued token.
#[derive(Debug)]
struct IssuedToken {
    serial: u64,
    expires_at: Instant,
    claims: Option<Arc<str>>,
    revoked: bool,
}

/// The issued tokens the API still accepts: bounded by expiry (pruned on every issue) and by a
/// hard cap (the oldest go first).
#[derive(Debug)]
pub(crate) struct Issued {
    map: HashMap<String, IssuedToken>,
    /// Issue order, which is also expiry order (one lifetime for all tokens).
    order: VecDeque<(Instant, String)>,
    max: usize,
    /// Every token with a serial up to this is revoked.
    revoked_through: u64,
}

impl Issued {
    fn new(max: usize) -> Self {
        Issued {
            map: HashMap::new(),
            order: VecDeque::new(),
            max: max.max(1),
            revoked_through: 0,
        }
    }

    pub(crate) fn len(&self) -> usize {
        self.map.len()
    }

    fn insert(&mut self, token: String, t: IssuedToken, now: Instant) {
        while self
            .order
            .front()
            .is_some_and(|(exp, _)| *exp <= now || self.map.len() >= self.max)
        {
            if let Some((_, old)) = self.order.pop_front() {
                self.map.remove(&old);
            }
        }
        self.order.push_back((t.expires_at, token.clone()));
        self.map.insert(token, t);
    }

    /// What the API makes of `token` at `now`, and its serial and claims if known.
    fn check(&self, token: &str, now: Instant) -> (TokenStatus, Option<u64>, Option<Arc<str>>) {
        match self.map.get(token) {
            None => (TokenStatus::Unknown, None, None),
            Some(t) => {
                let status = if t.revoked || t.serial <= self.revoked_through {
                    TokenStatus::Revoked
                } else if now >= t.expires_at {
                    TokenStatus::Expired
                } else {
                    TokenStatus::Valid
                };
                (status, Some(t.serial), t.claims.clone())
            }
        }
    }
}

/// Finishes a log entry when dropped: a handler dropped before it answered was abandoned by
/// its client.
struct Entry<'a> {
    state: &'a State,
    seq: u64,
    done: bool,
}

impl Entry<'_> {
    fn finish(mut self, outcome: Outcome, details: Details) {
        self.done = true;
        let at = self.state.elapsed();
        let mut journal = lock(&self.state.journal);
        if let Some(e) = journal.end(self.seq, at, outcome) {
            e.status = details.status;
            e.retry_after = details.retry_after;
            if details.token.is_some() {
                e.token = details.token;
            }
            e.expires = details.expires;
        }
    }
}

impl Drop for Entry<'_> {
    fn drop(&mut self) {
        if !self.done {
            let at = self.state.elapsed();
            lock(&self.state.journal).end(self.seq, at, Outcome::Abandoned);
        }
    }
}

/// What the answer adds to the log entry.
#[derive(Default)]
struct Details {
    status: Option<u16>,
    retry_after: Option<SentRetryAfter>,
    token: Option<u64>,
    expires: Option<Duration>,
}

/// Which endpoint a path is.
fn route(path: &str) -> Option<Target> {
    if path == "/metadata/identity/oauth2/token" {
        Some(Target::Imds)
    } else if path.starts_with("/api/") {
        Some(Target::Api)
    } else if path.ends_with("/oauth2/v2.0/token") {
        Some(Target::Token)
    } else {
        None
    }
}

/// Handles one request whose body has been read.
pub(crate) async fn handle(state: &State, req: Request<Bytes>) -> Answer {
    let Some(target) = route(req.uri().path()) else {
        return Ok(json(
            StatusCode::NOT_FOUND,
            r#"{"error":"not_found"}"#.into(),
        ));
    };
    let form: HashMap<String, String> = if target == Target::Token {
        form_urlencoded::parse(req.body()).into_owned().collect()
    } else {
        HashMap::new()
    };
    let at = state.elapsed();
    let fault = state.fault_for(target, at);
    let now = Instant::now();
    let presented = (target == Target::Api).then(|| {
        let token = bearer(&req);
        match token {
            None => (TokenStatus::Missing, None, None),
            Some(t) => lock(&state.tokens).check(t, now),
        }
    });
    let seq = {
        let mut journal = lock(&state.journal);
        let seq = journal.arrive(at, target);
        if let Some(e) = journal.get_mut(seq) {
            e.fault.clone_from(&fault);
            e.claims = form.get("claims").map(|c| Arc::from(c.as_str()));
            e.client_request_id = req
                .headers()
                .get("x-ms-client-request-id")
                .and_then(|v| v.to_str().ok())
                .map(|v| v.chars().take(128).collect());
            if let Some((status, serial, _)) = &presented {
                e.token_status = Some(*status);
                e.token = *serial;
            }
        }
        seq
    };
    let entry = Entry {
        state,
        seq,
        done: false,
    };

    let answer = match (&fault, target) {
        (Some(FaultKind::Hang), _) => {
            tokio::time::sleep(HANG).await;
            entry.finish(Outcome::Dropped, Details::default());
            return Err(std::io::Error::new(
                std::io::ErrorKind::ConnectionAborted,
                "hang ended",
            ));
        }
        (Some(FaultKind::Drop), _) => {
            entry.finish(Outcome::Dropped, Details::default());
            return Err(std::io::Error::new(
                std::io::ErrorKind::ConnectionReset,
                "connection dropped",
            ));
        }
        (Some(FaultKind::InvalidToken), _) => (invalid_token(), Details::default()),
        (Some(FaultKind::InsufficientClaims { claims }), _) => match &presented {
            Some((TokenStatus::Valid, _, Some(issued))) if **issued == **claims => {
                (ok_api(), Details::default())
            }
            Some((TokenStatus::Valid, _, _)) => {
                set_status(state, seq, TokenStatus::LacksClaims);
                (claims_challenge(claims), Details::default())
            }
            _ => (invalid_token(), Details::default()),
        },
        (Some(kind), _) => fault_answer(kind, target),
        (None, Target::Token) => token_endpoint(state, &req, &form),
        (None, Target::Imds) => imds(state, &req),
        (None, Target::Api) => match &presented {
            Some((TokenStatus::Valid, _, _)) => (ok_api(), Details::default()),
            _ => (invalid_token(), Details::default()),
        },
    };
    let (response, mut details) = answer;
    details.status = Some(response.status().as_u16());
    entry.finish(Outcome::Answered, details);
    Ok(response)
}

fn set_status(state: &State, seq: u64, status: TokenStatus) {
    if let Some(e) = lock(&state.journal).get_mut(seq) {
        e.token_status = Some(status);
    }
}

fn bearer<B>(req: &Request<B>) -> Option<&str> {
    req.headers()
        .get(http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            let (scheme, token) = v.split_once(' ')?;
            scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
        })
}

fn fault_answer(kind: &FaultKind, target: Target) -> (Response<Full<Bytes>>, Details) {
    let (mut r, retry_after) = match kind {
        FaultKind::TooManyRequests { retry_after } => (
            json(
                StatusCode::TOO_MANY_REQUESTS,
                r#"{"error":"temporarily_unavailable","error_description":"AADSTS50196: throttled"}"#.into(),
            ),
            Some(RetryAfter::Seconds(*retry_after)),
        ),
        FaultKind::Unavailable { retry_after } => (
            json(StatusCode::SERVICE_UNAVAILABLE, String::new()),
            retry_after.map(RetryAfter::Seconds),
        ),
        FaultKind::ServerError => (
            json(
                StatusCode::INTERNAL_SERVER_ERROR,
                r#"{"error":"server_error","error_description":"AADSTS90033: A transient error has occurred"}"#.into(),
            ),
            None,
        ),
        FaultKind::Status {
            status,
            retry_after,
        } => {
            let status = StatusCode::from_u16(*status)
                .unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
            (json(status, error_body(status, target)), retry_after.clone())
        }
        // Handled by the caller.
        FaultKind::Hang
        | FaultKind::Drop
        | FaultKind::InvalidToken
        | FaultKind::InsufficientClaims { .. } => {
            (json(StatusCode::INTERNAL_SERVER_ERROR, String::new()), None)
        }
    };
    let sent = retry_after.and_then(|ra| {
        let value = ra.header_value(SystemTime::now());
        let header = ra.header_name();
        let v = HeaderValue::from_str(&value).ok()?;
        r.headers_mut().insert(header, v);
        Some(SentRetryAfter {
            header,
            value,
            wait: ra.wait(),
        })
    });
    (
        r,
        Details {
            retry_after: sent,
            ..Details::default()
        },
    )
}

/// An error body in the shape of `target`.
fn error_body(status: StatusCode, target: Target) -> String {
    let code = status.as_u16();
    match target {
        Target::Token | Target::Imds => {
            let (error, description) = match code {
                429 => ("temporarily_unavailable", "AADSTS50196: throttled"),
                503 => (
                    "temporarily_unavailable",
                    "AADSTS90033: the service is temporarily unavailable",
                ),
                500..=599 => (
                    "server_error",
                    "AADSTS90033: A transient error has occurred",
                ),
                _ => ("invalid_request", "scripted error"),
            };
            format!(
                r#"{{"error":"{error}","error_description":"{description}","error_codes":[{code}],"trace_id":"00000000-0000-0000-0000-000000000001","correlation_id":"00000000-0000-0000-0000-000000000002"}}"#
            )
        }
        Target::Api => {
            let reason = status.canonical_reason().unwrap_or("error");
            format!(r#"{{"error":{{"code":"{code}","message":"{reason}"}}}}"#)
        }
    }
}

fn insert(r: &mut Response<Full<Bytes>>, name: &'static str, value: &str) {
    if let Ok(v) = HeaderValue::from_str(value) {
        r.headers_mut().insert(name, v);
    }
}

fn json(status: StatusCode, body: String) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from(body)));
    *r.status_mut() = status;
    r.headers_mut().insert(
        http::header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    r
}

fn ok_api() -> Response<Full<Bytes>> {
    json(StatusCode::OK, r#"{"data":"ok"}"#.into())
}

fn invalid_token() -> Response<Full<Bytes>> {
    let mut r = json(
        StatusCode::UNAUTHORIZED,
        r#"{"error":"invalid_token"}"#.into(),
    );
    insert(
        &mut r,
        "www-authenticate",
        r#"Bearer error="invalid_token", error_description="The access token is missing, unknown, expired or revoked""#,
    );
    r
}

fn claims_challenge(claims: &str) -> Response<Full<Bytes>> {
    let mut r = json(
        StatusCode::UNAUTHORIZED,
        r#"{"error":"insufficient_claims"}"#.into(),
    );
    let b64 = base64::engine::general_purpose::STANDARD.encode(claims);
    insert(
        &mut r,
        "www-authenticate",
        &format!(
            r#"Bearer realm="", authorization_uri="https://login.microsoftonline.com/common/oauth2/authorize", client_id="00000003-0000-0000-c000-000000000000", error="insufficient_claims", claims="{b64}""#
        ),
    );
    r
}

/// Issues a token; returns it, its lifetime in whole seconds and its log details.
fn issue(state: &State, claims: Option<&str>) -> (String, u64, Details) {
    let serial = state.counter.fetch_add(1, Ordering::SeqCst) + 1;
    let token = format!("fake-at-{serial}-{:016x}", fastrand::u64(..));
    let secs = state.lifetime.as_secs().max(1);
    let now = Instant::now();
    let expires_at = now + Duration::from_secs(secs);
    lock(&state.tokens).insert(
        token.clone(),
        IssuedToken {
            serial,
            expires_at,
            claims: claims.map(Arc::from),
            revoked: false,
        },
        now,
    );
    let details = Details {
        token: Some(serial),
        expires: Some(expires_at.saturating_duration_since(state.start)),
        ..Details::default()
    };
    (token, secs, details)
}

/// The answer to a request whose body could not be read (or exceeds [`MAX_BODY`]); not logged.
pub(crate) fn unreadable_body() -> Response<Full<Bytes>> {
    oauth_error(
        StatusCode::BAD_REQUEST,
        "invalid_request",
        "unreadable or oversized request body",
    )
}

fn oauth_error(status: StatusCode, error: &str, description: &str) -> Response<Full<Bytes>> {
    json(
        status,
        format!(
            r#"{{"error":"{error}","error_description":"{description}","error_codes":[7000215],"trace_id":"00000000-0000-0000-0000-000000000001","correlation_id":"00000000-0000-0000-0000-000000000002"}}"#
        ),
    )
}

fn token_endpoint(
    state: &State,
    req: &Request<Bytes>,
    form: &HashMap<String, String>,
) -> (Response<Full<Bytes>>, Details) {
    if req.method() != Method::POST {
        return (
            oauth_error(
                StatusCode::METHOD_NOT_ALLOWED,
                "invalid_request",
                "POST only",
            ),
            Details::default(),
        );
    }
    let has = |k: &str| form.get(k).is_some_and(|v| !v.is_empty());
    let grant = form.get("grant_type").map(String::as_str);
    let ok = match grant {
        Some("client_credentials") => {
            has("client_id") && has("scope") && (has("client_secret") || has("client_assertion"))
        }
        Some("refresh_token") => has("client_id") && has("refresh_token"),
        _ => false,
    };
    if !ok {
        return (
            oauth_error(
                StatusCode::BAD_REQUEST,
                "invalid_request",
                "AADSTS900144: missing or unsupported parameters",
            ),
            Details::default(),
        );
    }
    let claims = form
        .get("claims")
        .map(String::as_str)
        .filter(|c| !c.is_empty());
    let (token, secs, details) = issue(state, claims);
    let refresh_in = state
        .refresh_in
        .map(|r| format!(r#","refresh_in":{}"#, r.as_secs()))
        .unwrap_or_default();
    let refresh_token = if grant == Some("refresh_token") {
        format!(r#","refresh_token":"fake-rt-{:016x}""#, fastrand::u64(..))
    } else {
        String::new()
    };
    (
        json(
            StatusCode::OK,
            format!(
                r#"{{"token_type":"Bearer","expires_in":"{secs}","ext_expires_in":"{secs}","access_token":"{token}"{refresh_in}{refresh_token}}}"#
            ),
        ),
        details,
    )
}

fn imds(state: &State, req: &Request<Bytes>) -> (Response<Full<Bytes>>, Details) {
    if req.headers().get("metadata").and_then(|v| v.to_str().ok()) != Some("true") {
        return (
            json(
                StatusCode::BAD_REQUEST,
                r#"{"error":"invalid_request","error_description":"Required metadata header not specified"}"#.into(),
            ),
            Details::default(),
        );
    }
    let query = req.uri().query().unwrap_or("");
    let params: HashMap<String, String> = form_urlencoded::parse(query.as_bytes())
        .into_owned()
        .collect();
    let Some(resource) = params.get("resource").filter(|r| !r.is_empty()) else {
        return (
            json(
                StatusCode::BAD_REQUEST,
                r#"{"error":"invalid_request","error_description":"Required audience parameter not specified"}"#.into(),
            ),
            Details::default(),
        );
    };
    // IMDS takes no claims.
    let (token, secs, details) = issue(state, None);
    let expires_on = crate::cache::store::unix_ms(SystemTime::now()) / 1000 + secs;
    let resource = resource.replace(['"', '\\'], "");
    (
        json(
            StatusCode::OK,
            format!(
                r#"{{"access_token":"{token}","refresh_token":"","expires_in":"{secs}","expires_on":"{expires_on}","not_before":"{}","resource":"{resource}","token_type":"Bearer"}}"#,
                expires_on - secs
            ),
        ),
        details,
    )
}
