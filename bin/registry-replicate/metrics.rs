//! Daemon metrics in Prometheus text: per rule, passes, what was copied,
//! the backlog (tags the last pass could not copy) and the lag (seconds
//! since the target last held everything the source had).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::copy::Summary;

#[derive(Default)]
struct Rule {
    passes: AtomicU64,
    backlog: AtomicU64,
    tags_copied: AtomicU64,
    blobs_copied: AtomicU64,
    bytes_copied: AtomicU64,
    bytes_sent: AtomicU64,
    requests_retried: AtomicU64,
    reads_resumed: AtomicU64,
    writes_resumed: AtomicU64,
    /// Unix time (ms) at which the last pass that left nothing behind
    /// started: everything the source had then is on the target.
    in_sync_at_ms: AtomicU64,
}

/// A metric: name, kind, help text, and its value for one rule.
type Series<'a> = (&'a str, &'a str, &'a str, &'a dyn Fn(&Rule) -> f64);

pub struct Metrics {
    started_ms: u64,
    rules: BTreeMap<String, Rule>,
}

fn unix_ms(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .unwrap_or(Duration::ZERO)
        .as_millis() as u64
}

impl Metrics {
    pub fn new(rules: impl Iterator<Item = String>) -> Metrics {
        Metrics {
            started_ms: unix_ms(SystemTime::now()),
            rules: rules.map(|r| (r, Rule::default())).collect(),
        }
    }

    pub fn record(&self, rule: &str, started: SystemTime, s: &Summary) {
        let Some(r) = self.rules.get(rule) else {
            return;
        };
        r.passes.fetch_add(1, Ordering::Relaxed);
        r.backlog.store(s.failed.len() as u64, Ordering::Relaxed);
        r.tags_copied.fetch_add(s.tags_copied, Ordering::Relaxed);
        r.blobs_copied.fetch_add(s.blobs_copied, Ordering::Relaxed);
        r.bytes_copied.fetch_add(s.bytes_copied, Ordering::Relaxed);
        r.bytes_sent.fetch_add(s.bytes_sent, Ordering::Relaxed);
        r.requests_retried
            .fetch_add(s.requests_retried, Ordering::Relaxed);
        r.reads_resumed
            .fetch_add(s.reads_resumed, Ordering::Relaxed);
        r.writes_resumed
            .fetch_add(s.blobs_resumed, Ordering::Relaxed);
        if s.ok() {
            r.in_sync_at_ms.store(unix_ms(started), Ordering::Relaxed);
        }
    }

    pub fn render(&self) -> String {
        let now = unix_ms(SystemTime::now());
        let mut out = String::new();
        let series: [Series; 10] = [
            ("registry_replicate_passes_total", "counter", "Passes finished.", &|r| r.passes.load(Ordering::Relaxed) as f64),
            ("registry_replicate_backlog", "gauge", "Tags the last pass could not copy.", &|r| r.backlog.load(Ordering::Relaxed) as f64),
            ("registry_replicate_lag_seconds", "gauge", "Seconds since the target last held everything the source had (since start if never).", &|r| {
                let since = match r.in_sync_at_ms.load(Ordering::Relaxed) {
                    0 => self.started_ms,
                    t => t,
                };
                now.saturating_sub(since) as f64 / 1e3
            }),
            ("registry_replicate_tags_copied_total", "counter", "Tags copied or moved on the target.", &|r| r.tags_copied.load(Ordering::Relaxed) as f64),
            ("registry_replicate_blobs_copied_total", "counter", "Blobs sent to the target.", &|r| r.blobs_copied.load(Ordering::Relaxed) as f64),
            ("registry_replicate_bytes_copied_total", "counter", "Sizes of the blobs copied: the bytes the copies needed.", &|r| r.bytes_copied.load(Ordering::Relaxed) as f64),
            ("registry_replicate_bytes_sent_total", "counter", "Blob bytes sent to the target, sent again after a cut included.", &|r| r.bytes_sent.load(Ordering::Relaxed) as f64),
            ("registry_replicate_requests_retried_total", "counter", "Requests sent again after no answer or a busy one (429, 5xx).", &|r| r.requests_retried.load(Ordering::Relaxed) as f64),
            ("registry_replicate_reads_resumed_total", "counter", "Source blob reads cut in the middle and continued with Range.", &|r| r.reads_resumed.load(Ordering::Relaxed) as f64),
            ("registry_replicate_uploads_resumed_total", "counter", "Uploads continued from the target's offset after a cut or a busy answer.", &|r| r.writes_resumed.load(Ordering::Relaxed) as f64),
        ];
        for (name, kind, help, value) in series {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
            for (rule, r) in &self.rules {
                let _ = writeln!(
                    out,
                    "{name}{{rule=\"{}\"}} {}",
                    rule.replace('\\', "\\\\").replace('"', "\\\""),
                    value(r)
                );
            }
        }
        out
    }
}

/// Answer every request on `listener` with the metrics.
pub async fn serve(metrics: Arc<Metrics>, listener: tokio::net::TcpListener) {
    use hyper::service::service_fn;
    use hyper_util::rt::TokioIo;
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        };
        let metrics = metrics.clone();
        tokio::spawn(async move {
            let service = service_fn(move |_req: http::Request<hyper::body::Incoming>| {
                let text = metrics.render();
                async move {
                    let mut resp =
                        http::Response::new(http_body_util::Full::new(bytes::Bytes::from(text)));
                    resp.headers_mut().insert(
                        http::header::CONTENT_TYPE,
                        http::HeaderValue::from_static("text/plain; version=0.0.4"),
                    );
                    Ok::<_, std::convert::Infallible>(resp)
                }
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}
