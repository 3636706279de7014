//! The request log: a bounded ring buffer of what reached the fake, with the queries that make
//! the seeds' invariants easy to assert.

use std::collections::VecDeque;
use std::fmt;
use std::ops::{Deref, RangeInclusive};
use std::sync::Arc;
use std::time::Duration;

use super::fault::{FaultKind, Target};

/// The default number of requests the log keeps.
pub const DEFAULT_LOG_CAPACITY: usize = 100_000;

/// How a logged request ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Outcome {
    /// Still being answered (a hang, or a snapshot taken mid-request).
    InFlight,
    /// Answered with [`LoggedRequest::status`].
    Answered,
    /// The fake closed the connection without answering ([`FaultKind::Drop`], or a hang that
    /// ran its full hour).
    Dropped,
    /// The client gave up before an answer (its timeout fired or it dropped the call), which
    /// the fake sees when its handler is dropped: exact in memory; on a socket, when hyper
    /// notices the closed connection.
    Abandoned,
}

/// What the protected API made of the token a request carried.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum TokenStatus {
    /// No `Authorization: Bearer` header.
    Missing,
    /// A token this provider issued, unexpired and not revoked.
    Valid,
    /// Valid, but not issued with the claims an [`FaultKind::InsufficientClaims`] fault
    /// demanded at that time.
    LacksClaims,
    /// Issued here, but expired.
    Expired,
    /// Issued here, but revoked ([`FakeIdentityProvider::revoke`](super::FakeIdentityProvider::revoke)).
    Revoked,
    /// Not a token this provider knows (forged, or forgotten after it expired).
    Unknown,
}

/// A retry header the fake sent.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub struct SentRetryAfter {
    /// `retry-after`, `retry-after-ms` or `x-ms-retry-after-ms`.
    pub header: &'static str,
    /// The value sent.
    pub value: String,
    /// What it asks a client to wait ([`RetryAfter::wait`](super::RetryAfter::wait)); `None`
    /// if a client cannot parse it.
    pub wait: Option<Duration>,
}

impl SentRetryAfter {
    /// The wait if it is usable: present and above zero (the seeds treat `Retry-After: 0`, a
    /// date in the past and garbage as no `Retry-After`).
    pub fn usable(&self) -> Option<Duration> {
        self.wait.filter(|w| !w.is_zero())
    }
}

/// One logged request. Times are [`Duration`]s since the provider started, read from the tokio
/// clock, so paused-time tests see exact virtual times.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct LoggedRequest {
    /// The arrival order (0, 1, 2, … over the provider's life; entries dropped from a full log
    /// leave gaps at the front).
    pub seq: u64,
    /// When it arrived.
    pub at: Duration,
    /// When it was answered, dropped or abandoned (`None` while in flight).
    pub ended: Option<Duration>,
    /// Which endpoint.
    pub target: Target,
    /// How it ended.
    pub outcome: Outcome,
    /// The status answered (`None` unless [`Outcome::Answered`]).
    pub status: Option<u16>,
    /// The fault applied, if any.
    pub fault: Option<FaultKind>,
    /// The retry header sent, if any.
    pub retry_after: Option<SentRetryAfter>,
    /// Token endpoint and IMDS: the serial number of the token issued (1, 2, …). API: the serial
    /// number of the token presented, if this provider issued it.
    pub token: Option<u64>,
    /// Token endpoint and IMDS: when the issued token expires.
    pub expires: Option<Duration>,
    /// API: what the API made of the token presented (whatever the fault).
    pub token_status: Option<TokenStatus>,
    /// Token endpoint: the `claims` form field (a CAE token request).
    pub claims: Option<Arc<str>>,
    /// The `x-ms-client-request-id` header, if the client sent one (at most 128 characters): a
    /// way to tell which call a retry belongs to.
    pub client_request_id: Option<String>,
    /// How many requests had arrived when this one ended: a later request with a `seq` at or
    /// above it arrived after this answer was sent.
    ended_seq: Option<u64>,
}

impl LoggedRequest {
    pub(crate) fn new(seq: u64, at: Duration, target: Target) -> Self {
        LoggedRequest {
            seq,
            at,
            ended: None,
            target,
            outcome: Outcome::InFlight,
            status: None,
            fault: None,
            retry_after: None,
            token: None,
            expires: None,
            token_status: None,
            claims: None,
            client_request_id: None,
            ended_seq: None,
        }
    }

    /// Whether an API request carried a valid token ([`TokenStatus::Valid`]).
    pub fn valid_token(&self) -> bool {
        self.token_status == Some(TokenStatus::Valid)
    }

    /// The usable `Retry-After` sent with the answer ([`SentRetryAfter::usable`]).
    pub fn usable_retry_after(&self) -> Option<Duration> {
        self.retry_after.as_ref().and_then(SentRetryAfter::usable)
    }

    /// When it ended, or when it arrived if it has not ended.
    pub fn end(&self) -> Duration {
        self.ended.unwrap_or(self.at)
    }

    /// A 2xx answer.
    pub fn is_success(&self) -> bool {
        self.status.is_some_and(|s| (200..300).contains(&s))
    }

    /// A failure the seeds' back-off rule is about: a 5xx, 408 or 429, a dropped connection,
    /// or a request the client gave up on (its timeout).
    pub fn is_failure(&self) -> bool {
        match self.outcome {
            Outcome::Dropped | Outcome::Abandoned => true,
            Outcome::Answered => self
                .status
                .is_some_and(|s| s >= 500 || s == 408 || s == 429),
            Outcome::InFlight => false,
        }
    }

    /// Whether `later` arrived after this request's answer was sent (so its sender could have
    /// seen it). In paused time many requests share one instant; this uses arrival order.
    pub fn answered_before(&self, later: &LoggedRequest) -> bool {
        self.ended_seq.is_some_and(|s| later.seq >= s)
    }

    pub(crate) fn set_ended(&mut self, at: Duration, outcome: Outcome, next_seq: u64) {
        self.ended = Some(at);
        self.outcome = outcome;
        self.ended_seq = Some(next_seq);
    }
}

/// A revocation: from `at` on, the API rejects the tokens with these serial numbers.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Revocation {
    /// When.
    pub at: Duration,
    /// Which tokens (serial numbers).
    pub tokens: RangeInclusive<u64>,
}

/// A pair of requests that breaks a waiting rule: `later` came `gap` after `earlier` ended,
/// where `required` was the least allowed.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Violation {
    /// The answer that asked for (or implied) a wait.
    pub earlier: LoggedRequest,
    /// The request sent too soon.
    pub later: LoggedRequest,
    /// The time from `earlier`'s end to `later`'s arrival.
    pub gap: Duration,
    /// The least gap allowed.
    pub required: Duration,
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{:?} request #{} at {:?} came {:?} after #{} ({:?} {:?}, retry header {:?}) ended at {:?}; at least {:?} required",
            self.later.target,
            self.later.seq,
            self.later.at,
            self.gap,
            self.earlier.seq,
            self.earlier.outcome,
            self.earlier.status,
            self.earlier.retry_after.as_ref().map(|r| r.value.as_str()),
            self.earlier.end(),
            self.required
        )
    }
}

/// A snapshot of the request log, in arrival order. Derefs to `[LoggedRequest]`.
///
/// The log is a ring buffer: it keeps the last [`log_capacity`](super::FakeIdentityProviderBuilder::log_capacity)
/// requests (default [`DEFAULT_LOG_CAPACITY`]); [`evicted`](Self::evicted) says how many older
/// ones were dropped. The queries see only what the snapshot holds.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RequestLog {
    entries: Vec<LoggedRequest>,
    revocations: Vec<Revocation>,
    evicted: u64,
}

impl Deref for RequestLog {
    type Target = [LoggedRequest];

    fn deref(&self) -> &[LoggedRequest] {
        &self.entries
    }
}

impl IntoIterator for RequestLog {
    type Item = LoggedRequest;
    type IntoIter = std::vec::IntoIter<LoggedRequest>;

    fn into_iter(self) -> Self::IntoIter {
        self.entries.into_iter()
    }
}

impl<'a> IntoIterator for &'a RequestLog {
    type Item = &'a LoggedRequest;
    type IntoIter = std::slice::Iter<'a, LoggedRequest>;

    fn into_iter(self) -> Self::IntoIter {
        self.entries.iter()
    }
}

impl RequestLog {
    /// How many older requests the ring buffer had dropped when this snapshot was taken.
    pub fn evicted(&self) -> u64 {
        self.evicted
    }

    /// The revocations so far.
    pub fn revocations(&self) -> &[Revocation] {
        &self.revocations
    }

    /// Only the requests to `target`.
    pub fn for_target(&self, target: Target) -> RequestLog {
        self.filtered(|r| r.target == target)
    }

    /// Only the requests `keep` selects, e.g. one call's attempts by
    /// [`client_request_id`](LoggedRequest::client_request_id).
    pub fn filtered(&self, keep: impl Fn(&LoggedRequest) -> bool) -> RequestLog {
        RequestLog {
            entries: self.entries.iter().filter(|r| keep(r)).cloned().collect(),
            revocations: self.revocations.clone(),
            evicted: self.evicted,
        }
    }

    /// The arrival times of the requests to `target`.
    pub fn times(&self, target: Target) -> Vec<Duration> {
        self.iter_target(target).map(|r| r.at).collect()
    }

    /// The time between consecutive arrivals at `target` (one fewer than the requests).
    pub fn gaps(&self, target: Target) -> Vec<Duration> {
        let times = self.times(target);
        times
            .windows(2)
            .map(|w| w[1].saturating_sub(w[0]))
            .collect()
    }

    /// The first request to `target` arriving at or after `at`.
    pub fn first_at_or_after(&self, target: Target, at: Duration) -> Option<&LoggedRequest> {
        self.iter_target(target).find(|r| r.at >= at)
    }

    /// Requests to `target` sent inside a usable `Retry-After` the fake had sent on `target`
    /// (rule: no request within a Retry-After). Each wait counts from the end of the answer
    /// that carried it, is capped at `cap` (a client caps absurd waits, rule R8), and binds
    /// only requests that arrived after that answer was sent.
    pub fn retry_after_violations(&self, target: Target, cap: Duration) -> Vec<Violation> {
        self.violations(target, |r| r.usable_retry_after().map(|w| w.min(cap)))
    }

    /// Requests to `target` sent sooner than `floor` after a failure on `target` that had no
    /// usable `Retry-After` (a 5xx, 408 or 429 without one, `Retry-After: 0`, a dropped
    /// connection, a timeout): the seeds' "first retry at least 5 s after the response".
    /// Only requests that arrived after the failure ended count.
    ///
    /// This is target-wide: with several callers, a new call counts as a request too. To check
    /// one call's retries only, [`filter`](Self::filtered) on
    /// [`LoggedRequest::client_request_id`] first.
    pub fn floor_violations(&self, target: Target, floor: Duration) -> Vec<Violation> {
        self.violations(target, |r| {
            (r.is_failure() && r.usable_retry_after().is_none()).then_some(floor)
        })
    }

    /// Whether a token this provider issued (token endpoint or IMDS) was valid at `at`:
    /// issued at or before it, not yet expired and not revoked by then.
    pub fn valid_token_at(&self, at: Duration) -> bool {
        self.entries.iter().any(|r| {
            let (Some(serial), Some(expires)) = (r.token, r.expires) else {
                return false;
            };
            r.target != Target::Api
                && r.is_success()
                && r.at <= at
                && at < expires
                && !self
                    .revocations
                    .iter()
                    .any(|v| v.at <= at && v.tokens.contains(&serial))
        })
    }

    fn iter_target(&self, target: Target) -> impl Iterator<Item = &LoggedRequest> {
        self.entries.iter().filter(move |r| r.target == target)
    }

    fn violations(
        &self,
        target: Target,
        required: impl Fn(&LoggedRequest) -> Option<Duration>,
    ) -> Vec<Violation> {
        let reqs: Vec<&LoggedRequest> = self.iter_target(target).collect();
        let mut out = Vec::new();
        for (i, earlier) in reqs.iter().enumerate() {
            let Some(need) = required(earlier) else {
                continue;
            };
            let end = earlier.end();
            let until = end.saturating_add(need);
            for later in &reqs[i + 1..] {
                if later.at >= until {
                    break;
                }
                if earlier.answered_before(later) {
                    out.push(Violation {
                        earlier: (*earlier).clone(),
                        later: (*later).clone(),
                        gap: later.at.saturating_sub(end),
                        required: need,
                    });
                }
            }
        }
        out
    }
}

/// The ring buffer behind the log.
#[derive(Debug)]
pub(crate) struct Journal {
    entries: VecDeque<LoggedRequest>,
    capacity: usize,
    next_seq: u64,
    evicted: u64,
    per_target: [u64; 3],
    revocations: VecDeque<Revocation>,
}

fn index(target: Target) -> usize {
    match target {
        Target::Token => 0,
        Target::Imds => 1,
        Target::Api => 2,
    }
}

impl Journal {
    pub(crate) fn new(capacity: usize) -> Self {
        Journal {
            entries: VecDeque::new(),
            capacity: capacity.max(1),
            next_seq: 0,
            evicted: 0,
            per_target: [0; 3],
            revocations: VecDeque::new(),
        }
    }

    /// Logs an arrival; returns its `seq`.
    pub(crate) fn arrive(&mut self, at: Duration, target: Target) -> u64 {
        let seq = self.next_seq;
        self.next_seq += 1;
        self.per_target[index(target)] += 1;
        if self.entries.len() >= self.capacity {
            self.entries.pop_front();
            self.evicted += 1;
        }
        self.entries.push_back(LoggedRequest::new(seq, at, target));
        seq
    }

    /// The entry `seq`, unless it has been evicted.
    pub(crate) fn get_mut(&mut self, seq: u64) -> Option<&mut LoggedRequest> {
        let first = self.entries.front()?.seq;
        let i = usize::try_from(seq.checked_sub(first)?).ok()?;
        self.entries.get_mut(i)
    }

    /// Ends the entry `seq` (if still held).
    pub(crate) fn end(
        &mut self,
        seq: u64,
        at: Duration,
        outcome: Outcome,
    ) -> Option<&mut LoggedRequest> {
        let next = self.next_seq;
        let entry = self.get_mut(seq)?;
        entry.set_ended(at, outcome, next);
        Some(entry)
    }

    pub(crate) fn revoke(&mut self, at: Duration, tokens: RangeInclusive<u64>) {
        if self.revocations.len() >= self.capacity {
            self.revocations.pop_front();
        }
        self.revocations.push_back(Revocation { at, tokens });
    }

    /// All requests ever to `target`, evicted ones included.
    pub(crate) fn total(&self, target: Target) -> u64 {
        self.per_target[index(target)]
    }

    pub(crate) fn snapshot(&self, target: Option<Target>) -> RequestLog {
        RequestLog {
            entries: self
                .entries
                .iter()
                .filter(|r| target.is_none_or(|t| r.target == t))
                .cloned()
                .collect(),
            revocations: self.revocations.iter().cloned().collect(),
            evicted: self.evicted,
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    fn secs(s: u64) -> Duration {
        Duration::from_secs(s)
    }

    #[test]
    fn ring_buffer_keeps_the_last_n_and_counts_all() {
        let mut j = Journal::new(3);
        for i in 0..5 {
            j.arrive(secs(i), Target::Api);
        }
        let log = j.snapshot(None);
        assert_eq!(log.iter().map(|r| r.seq).collect::<Vec<_>>(), [2, 3, 4]);
        assert_eq!(log.evicted(), 2);
        assert_eq!(j.total(Target::Api), 5);
        assert!(j.get_mut(1).is_none(), "evicted");
        assert!(j.end(4, secs(9), Outcome::Answered).is_some());
        assert_eq!(j.snapshot(None)[2].ended, Some(secs(9)));
    }

    #[test]
    fn violations_respect_arrival_order_and_the_cap() {
        let mut j = Journal::new(10);
        // #0: 429 with Retry-After 10 at t=0
        j.arrive(secs(0), Target::Token);
        // #1 arrived at the same instant, before #0's answer: not bound by it
        j.arrive(secs(0), Target::Token);
        let e = j.end(0, secs(0), Outcome::Answered).unwrap();
        e.status = Some(429);
        e.retry_after = Some(SentRetryAfter {
            header: "retry-after",
            value: "10".into(),
            wait: Some(secs(10)),
        });
        let e = j.end(1, secs(0), Outcome::Answered).unwrap();
        e.status = Some(200);
        // #2 at 4 s: too soon
        j.arrive(secs(4), Target::Token);
        j.end(2, secs(4), Outcome::Answered).unwrap().status = Some(200);
        // #3 at 10 s: fine
        j.arrive(secs(10), Target::Token);
        j.end(3, secs(10), Outcome::Answered).unwrap().status = Some(200);
        let log = j.snapshot(None);
        let v = log.retry_after_violations(Target::Token, secs(300));
        assert_eq!(v.len(), 1, "{v:?}");
        assert_eq!((v[0].earlier.seq, v[0].later.seq), (0, 2));
        assert_eq!(v[0].gap, secs(4));
        assert!(v[0].to_string().contains("at least 10s"));
        assert!(log
            .retry_after_violations(Target::Token, secs(3))
            .is_empty());
        assert!(log.floor_violations(Target::Token, secs(5)).is_empty());
        assert_eq!(log.gaps(Target::Token), [secs(0), secs(4), secs(6)]);
    }
}
