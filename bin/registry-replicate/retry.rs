//! Faults are normal between sites. A request that got no answer (a
//! reset, a refused connection, a timeout) or a busy one (429, 503, any
//! other 5xx) is sent again on its own, after the wait the registry asked
//! for (`Retry-After`) or an exponential backoff with jitter, for as long
//! as the peer's `retry_for` allows. What the registry refused for good
//! (4xx, a bad answer) is not tried again.

use std::sync::atomic::Ordering;
use std::sync::Mutex;
use std::time::Duration;

use http::StatusCode;
use rand::Rng;
// Tokio's clock, which tests can pause.
use tokio::time::Instant;

use crate::counters::Counters;

/// How long a request is retried by default before it counts as failed.
pub const DEFAULT_RETRY_FOR: Duration = Duration::from_secs(120);
/// The longest wait between two tries, whatever a registry asks.
const LONGEST_WAIT: Duration = Duration::from_secs(60);

/// A failed request with the status the registry answered, so that the
/// retry loop can tell a busy registry from a refusal.
#[derive(Debug)]
pub struct StatusError {
    pub status: StatusCode,
    pub retry_after: Option<Duration>,
    pub message: String,
}

impl std::fmt::Display for StatusError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}", self.status, self.message)
    }
}

impl std::error::Error for StatusError {}

/// An answer that arrived but cannot be used (no `Location`, another
/// digest): asking again would get the same.
#[derive(Debug)]
pub struct BadAnswer(pub String);

impl std::fmt::Display for BadAnswer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for BadAnswer {}

/// Whether an error may go away if the request is tried again, and how
/// long the registry asked us to wait.
pub fn transient(e: &anyhow::Error) -> Option<Option<Duration>> {
    if e.downcast_ref::<registry::client::LoginRefused>().is_some()
        || e.downcast_ref::<registry::client::RedirectWithoutLocation>()
            .is_some()
        || e.downcast_ref::<BadAnswer>().is_some()
    {
        return None;
    }
    match e.downcast_ref::<StatusError>() {
        Some(s) if s.status == StatusCode::TOO_MANY_REQUESTS || s.status.is_server_error() => {
            Some(s.retry_after)
        }
        Some(_) => None,
        // No answer at all: a reset, a refused connection, a timeout.
        None => Some(None),
    }
}

/// `Retry-After` in seconds (the HTTP-date form is taken as a minute).
pub fn retry_after(headers: &http::HeaderMap) -> Option<Duration> {
    let v = headers.get("retry-after")?.to_str().ok()?.trim();
    Some(Duration::from_secs(v.parse::<u64>().unwrap_or(60)))
}

/// Exponential backoff from 200 ms to 10 s, with up to 50% jitter so that
/// many clients retrying at once spread out.
fn backoff(attempt: u32) -> Duration {
    let base = Duration::from_millis(200 << attempt.min(6)).min(Duration::from_secs(10));
    base + Duration::from_millis(rand::thread_rng().gen_range(0..=base.as_millis() as u64 / 2))
}

/// When a peer last answered a request well. A peer that has answered
/// nothing usable for `retry_for` is down: its requests then fail at their
/// first fault instead of each waiting out `retry_for` again.
pub struct Health {
    last_success: Mutex<Instant>,
}

impl Default for Health {
    fn default() -> Self {
        Health {
            last_success: Mutex::new(Instant::now()),
        }
    }
}

impl Health {
    pub fn succeeded(&self) {
        *self.last_success.lock().expect("health lock") = Instant::now();
    }

    fn quiet_for(&self) -> Duration {
        self.last_success.lock().expect("health lock").elapsed()
    }
}

/// The tries of one request (or of one resumable transfer): when the
/// first began, how many failed.
pub struct Retries<'a> {
    started: Instant,
    failures: u32,
    retry_for: Duration,
    counters: &'a Counters,
    health: &'a Health,
}

impl<'a> Retries<'a> {
    pub fn new(retry_for: Duration, counters: &'a Counters, health: &'a Health) -> Retries<'a> {
        Retries {
            started: Instant::now(),
            failures: 0,
            retry_for,
            counters,
            health,
        }
    }

    /// After a failure: wait and return Ok to try again, or return the
    /// error (with `what` and the tries it took) when it is for good or the
    /// time is up.
    pub async fn after(&mut self, e: anyhow::Error, what: &str) -> anyhow::Result<()> {
        match transient(&e) {
            Some(asked) => self.wait(e, asked, what).await,
            None => {
                self.failures += 1;
                Err(e.context(what.to_string()))
            }
        }
    }

    /// After a failure the caller knows how to recover from whatever its
    /// status (a transfer that asks the target where it stands): counted
    /// as a try, and waited for with backoff, as a failure with no answer.
    pub async fn again(&mut self, e: anyhow::Error, what: &str) -> anyhow::Result<()> {
        self.wait(e, None, what).await
    }

    async fn wait(
        &mut self,
        e: anyhow::Error,
        asked: Option<Duration>,
        what: &str,
    ) -> anyhow::Result<()> {
        self.failures += 1;
        let wait = asked
            .unwrap_or_else(|| backoff(self.failures))
            .min(LONGEST_WAIT);
        let spent = self.started.elapsed();
        let quiet = self.health.quiet_for();
        if quiet > self.retry_for {
            return Err(e.context(format!(
                "{what} (no good answer from this peer for {:.0} s; retry_for is {} s)",
                quiet.as_secs_f64(),
                self.retry_for.as_secs()
            )));
        }
        if spent + wait > self.retry_for {
            return Err(e.context(format!(
                "{what} (gave up after {} tries in {:.1} s; retry_for is {} s)",
                self.failures,
                spent.as_secs_f64(),
                self.retry_for.as_secs()
            )));
        }
        self.counters
            .requests_retried
            .fetch_add(1, Ordering::Relaxed);
        tracing::debug!(what, failures = self.failures, ?wait, error = %format!("{e:#}"), "retrying");
        tokio::time::sleep(wait).await;
        Ok(())
    }
}

/// Run `f` until it succeeds, fails for good, or `retry_for` is spent.
pub async fn retry<T, F, Fut>(what: &str, mut tries: Retries<'_>, mut f: F) -> anyhow::Result<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<T>>,
{
    loop {
        match f().await {
            Ok(v) => {
                tries.health.succeeded();
                return Ok(v);
            }
            Err(e) => tries.after(e, what).await?,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_after_seconds() {
        let mut h = http::HeaderMap::new();
        h.insert("retry-after", "7".parse().unwrap());
        assert_eq!(retry_after(&h), Some(Duration::from_secs(7)));
        h.insert(
            "retry-after",
            "Wed, 21 Oct 2026 07:28:00 GMT".parse().unwrap(),
        );
        assert_eq!(retry_after(&h), Some(Duration::from_secs(60)));
    }

    #[test]
    fn what_is_tried_again() {
        let busy = |status, retry_after| {
            anyhow::anyhow!(StatusError {
                status,
                retry_after,
                message: String::new()
            })
        };
        let asked = Some(Duration::from_secs(3));
        assert_eq!(
            transient(&busy(StatusCode::TOO_MANY_REQUESTS, asked)),
            Some(asked)
        );
        assert_eq!(transient(&busy(StatusCode::BAD_GATEWAY, None)), Some(None));
        assert_eq!(transient(&busy(StatusCode::NOT_FOUND, None)), None);
        assert_eq!(transient(&anyhow::anyhow!(BadAnswer("x".into()))), None);
        assert_eq!(transient(&anyhow::anyhow!("connection reset")), Some(None));
    }

    #[tokio::test(start_paused = true)]
    async fn gives_up_when_the_time_is_spent() {
        let (counters, health) = (Counters::default(), Health::default());
        let mut tries = 0;
        let policy = Retries::new(Duration::from_secs(30), &counters, &health);
        let e = retry("GET /x", policy, || {
            tries += 1;
            async {
                Err::<(), _>(anyhow::anyhow!(StatusError {
                    status: StatusCode::SERVICE_UNAVAILABLE,
                    retry_after: Some(Duration::from_secs(4)),
                    message: "busy".into()
                }))
            }
        })
        .await
        .unwrap_err();
        // Tries at 0, 4, 8, ... 28 s; the next would end past 30 s.
        assert_eq!(tries, 8);
        assert_eq!(counters.requests_retried.load(Ordering::Relaxed), 7);
        assert!(format!("{e:#}").contains("gave up after 8 tries"), "{e:#}");
        // Nothing good for over 30 s: the peer is down, and the next request
        // fails at its first fault.
        tokio::time::advance(Duration::from_secs(3)).await;
        let mut tries = 0;
        let policy = Retries::new(Duration::from_secs(30), &counters, &health);
        retry("GET /y", policy, || {
            tries += 1;
            async { Err::<(), _>(anyhow::anyhow!("connection refused")) }
        })
        .await
        .unwrap_err();
        assert_eq!(tries, 1);
    }
}
