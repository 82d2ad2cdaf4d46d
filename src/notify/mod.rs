//! Notifications as Distribution sends them: every push, pull, mount and
//! delete becomes an event, POSTed to each configured endpoint in order,
//! retried until the endpoint takes it.
//!
//! Unlike Distribution's, a queue is bounded (an endpoint that stays down
//! cannot fill the memory: past `MAX_PENDING` the oldest events go, and are
//! counted), and a POST carries every event queued at that moment, up to
//! `MAX_BATCH`, in the envelope's list (Distribution sends one at a time).

pub mod event;

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use anyhow::{anyhow, Context as _};
use bytes::Bytes;
use http::Method;

pub use self::event::{Action, Actor, Event, Happened, Occurrence, RequestInfo, Source};
use crate::client::{drain, Conn, Frames, Target};
use crate::config::{EndpointConfig, NotificationsConfig};
use crate::prometheus;

/// Events waiting for one endpoint, at most.
pub const MAX_PENDING: usize = 100_000;
/// Events in one POST, at most.
pub const MAX_BATCH: usize = 32;

/// The configured endpoints, each with its queue and sender task.
pub struct Notifier {
    endpoints: Vec<Arc<Endpoint>>,
}

impl Notifier {
    /// Start a sender task per enabled endpoint (on the current tokio
    /// runtime); `None` when no endpoint is enabled.
    pub fn start(config: &NotificationsConfig) -> anyhow::Result<Option<Notifier>> {
        let mut endpoints = Vec::new();
        for c in &config.endpoints {
            if c.disabled {
                tracing::info!(endpoint = %c.name, "notification endpoint disabled");
                continue;
            }
            let e = Arc::new(Endpoint::new(c.clone())?);
            tokio::spawn(e.clone().run());
            endpoints.push(e);
        }
        Ok((!endpoints.is_empty()).then_some(Notifier { endpoints }))
    }

    /// Queue `events` for every endpoint that does not ignore them.
    pub fn send(&self, events: Vec<Event>) {
        for e in events {
            let e = Arc::new(e);
            for ep in &self.endpoints {
                if ep.wants(&e) {
                    ep.push(e.clone());
                }
            }
        }
    }

    /// Prometheus text: events sent, failed POSTs, events dropped, and
    /// events pending, per endpoint.
    pub fn render_metrics(&self, out: &mut String) {
        let series: [Series; 4] = [
            (
                "registry_notifications_events_sent_total",
                "counter",
                "Events an endpoint took.",
                |e| e.sent.load(Ordering::Relaxed),
            ),
            (
                "registry_notifications_failures_total",
                "counter",
                "POSTs of events that failed (and were retried).",
                |e| e.failures.load(Ordering::Relaxed),
            ),
            (
                "registry_notifications_events_dropped_total",
                "counter",
                "Events dropped from a full queue.",
                |e| e.dropped.load(Ordering::Relaxed),
            ),
            (
                "registry_notifications_pending",
                "gauge",
                "Events waiting for an endpoint.",
                |e| e.queue.lock().unwrap().len() as u64,
            ),
        ];
        for (name, kind, help, value) in series {
            let rows: Vec<(String, u64)> = self
                .endpoints
                .iter()
                .map(|e| {
                    let labels = format!("endpoint=\"{}\"", prometheus::label(&e.config.name));
                    (labels, value(e))
                })
                .collect();
            prometheus::family(out, name, kind, help, &rows);
        }
    }
}

/// A metric: name, type, help, and its value for one endpoint.
type Series = (
    &'static str,
    &'static str,
    &'static str,
    fn(&Endpoint) -> u64,
);

struct Endpoint {
    config: EndpointConfig,
    /// Events kept waiting at most (`MAX_PENDING`).
    capacity: usize,
    target: Arc<Target>,
    /// The URL's path and query.
    path: String,
    queue: Mutex<VecDeque<Arc<Event>>>,
    wake: tokio::sync::Notify,
    sent: AtomicU64,
    failures: AtomicU64,
    dropped: AtomicU64,
    /// When a drop was last logged.
    drop_logged: Mutex<Option<std::time::Instant>>,
}

/// Drops from a full queue are logged at most this often.
const DROP_LOG_INTERVAL: std::time::Duration = std::time::Duration::from_secs(60);

impl Endpoint {
    fn new(config: EndpointConfig) -> anyhow::Result<Endpoint> {
        let scheme_end = config.url.find("://").map_or(0, |i| i + 3);
        let (base, path) = match config.url[scheme_end..].find('/') {
            Some(i) => config.url.split_at(scheme_end + i),
            None => (config.url.as_str(), "/"),
        };
        let target = Target::new(base, None, None)
            .with_context(|| format!("notification endpoint {}", config.name))?;
        Ok(Endpoint {
            capacity: MAX_PENDING,
            path: path.to_string(),
            target: Arc::new(target),
            config,
            queue: Mutex::new(VecDeque::new()),
            wake: tokio::sync::Notify::new(),
            sent: AtomicU64::new(0),
            failures: AtomicU64::new(0),
            dropped: AtomicU64::new(0),
            drop_logged: Mutex::new(None),
        })
    }

    fn wants(&self, e: &Event) -> bool {
        let c = &self.config;
        !c.ignored_actions.iter().any(|a| a == e.action.as_str())
            && !e
                .target
                .media_type
                .as_ref()
                .is_some_and(|m| c.ignored_media_types.contains(m))
    }

    fn push(&self, e: Arc<Event>) {
        let mut q = self.queue.lock().unwrap();
        if q.len() >= self.capacity {
            q.pop_front();
            let dropped = self.dropped.fetch_add(1, Ordering::Relaxed) + 1;
            // Once a minute at most, with the count so far.
            let mut last = self.drop_logged.lock().unwrap();
            if last.is_none_or(|at| at.elapsed() >= DROP_LOG_INTERVAL) {
                *last = Some(std::time::Instant::now());
                tracing::warn!(endpoint = %self.config.name, dropped, "notification queue full: dropping the oldest events");
            }
        }
        q.push_back(e);
        drop(q);
        self.wake.notify_one();
    }

    /// Send what is queued, in order, for ever: a failed POST is sent again
    /// at once up to `threshold` failures in a row, then every `backoff`.
    async fn run(self: Arc<Self>) {
        let mut conn = Conn::new(self.target.clone());
        let mut failing = 0u32;
        loop {
            let batch: Vec<Arc<Event>> = {
                let q = self.queue.lock().unwrap();
                q.iter().take(MAX_BATCH).cloned().collect()
            };
            if batch.is_empty() {
                self.wake.notified().await;
                continue;
            }
            match self.post(&mut conn, &batch).await {
                Ok(()) => {
                    if failing > 0 {
                        tracing::info!(endpoint = %self.config.name, "notification endpoint takes events again");
                    }
                    failing = 0;
                    self.sent.fetch_add(batch.len() as u64, Ordering::Relaxed);
                    self.remove_front(&batch);
                }
                Err((e, refused)) => {
                    conn.reset();
                    self.failures.fetch_add(1, Ordering::Relaxed);
                    failing = failing.saturating_add(1);
                    if failing == 1 || failing == self.config.threshold {
                        tracing::warn!(endpoint = %self.config.name, error = %format!("{e:#}"), failures = failing, "notification not delivered; retrying");
                    }
                    if refused && failing >= self.config.threshold {
                        // The endpoint refuses these events themselves
                        // (400, 413, 422): sending them again cannot help,
                        // and the events behind them must not wait for ever.
                        tracing::error!(endpoint = %self.config.name, events = batch.len(), error = %format!("{e:#}"), "notification endpoint refuses these events: dropped");
                        self.dropped
                            .fetch_add(batch.len() as u64, Ordering::Relaxed);
                        self.remove_front(&batch);
                        failing = 0;
                        continue;
                    }
                    if failing >= self.config.threshold {
                        tokio::time::sleep(self.config.backoff).await;
                    }
                }
            }
        }
    }

    /// Take what was handled off the front of the queue (unless a full
    /// queue dropped it meanwhile).
    fn remove_front(&self, batch: &[Arc<Event>]) {
        let mut q = self.queue.lock().unwrap();
        while q
            .front()
            .is_some_and(|f| batch.iter().any(|b| Arc::ptr_eq(b, f)))
        {
            q.pop_front();
        }
    }

    /// One POST; on failure, the error and whether the endpoint refused
    /// the events themselves (a 4xx that no retry changes).
    async fn post(
        &self,
        conn: &mut Conn,
        batch: &[Arc<Event>],
    ) -> Result<(), (anyhow::Error, bool)> {
        let events: Vec<&Event> = batch.iter().map(|e| e.as_ref()).collect();
        let body = Bytes::from(event::envelope(&events));
        let mut headers: Vec<(&str, &str)> = vec![("content-type", event::MEDIA_TYPE)];
        headers.extend(
            self.config
                .headers
                .iter()
                .map(|(k, v)| (k.as_str(), v.as_str())),
        );
        let send = async {
            let resp = conn
                .send(Method::POST, &self.path, &headers, Frames::new([body]))
                .await
                .map_err(|e| (e, false))?;
            let status = resp.status();
            drain(resp).await.map_err(|e| (e, false))?;
            // Distribution takes any 2xx or 3xx as delivered.
            if status.is_success() || status.is_redirection() {
                Ok(())
            } else {
                let refused = matches!(status.as_u16(), 400 | 413 | 415 | 422);
                Err((anyhow!("{} answered {status}", self.config.url), refused))
            }
        };
        tokio::time::timeout(self.config.timeout, send)
            .await
            .map_err(|_| {
                (
                    anyhow!(
                        "{} did not answer within {:?}",
                        self.config.url,
                        self.config.timeout
                    ),
                    false,
                )
            })?
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::notify::event::{Occurrence, RequestInfo, Source};

    fn endpoint(ignore: &[&str]) -> Endpoint {
        Endpoint::new(EndpointConfig {
            name: "e".into(),
            url: "http://127.0.0.1:9/events".into(),
            headers: vec![],
            timeout: std::time::Duration::from_secs(1),
            threshold: 10,
            backoff: std::time::Duration::from_secs(1),
            ignored_media_types: vec![],
            ignored_actions: ignore.iter().map(|s| s.to_string()).collect(),
            disabled: false,
        })
        .unwrap()
    }

    fn event(n: usize, action: Action) -> Arc<Event> {
        let source = Source {
            addr: "h:1".into(),
            instance_id: "i".into(),
        };
        Arc::new(Event::new(
            Occurrence::new(action, &format!("r{n}")),
            None,
            &RequestInfo::default(),
            &Actor::default(),
            &source,
        ))
    }

    #[test]
    fn a_full_queue_drops_the_oldest_and_counts_them() {
        let mut e = endpoint(&[]);
        e.capacity = 3;
        for n in 0..5 {
            e.push(event(n, Action::Push));
        }
        assert_eq!(e.dropped.load(Ordering::Relaxed), 2);
        let q = e.queue.lock().unwrap();
        let left: Vec<&str> = q.iter().map(|e| e.target.repository.as_str()).collect();
        assert_eq!(left, ["r2", "r3", "r4"], "the newest are kept");
        assert!(e.path == "/events" && e.target.authority == "127.0.0.1:9");
    }

    #[test]
    fn ignored_actions_are_not_wanted() {
        let e = endpoint(&["pull"]);
        assert!(!e.wants(&event(0, Action::Pull)));
        assert!(e.wants(&event(0, Action::Push)));
    }
}
