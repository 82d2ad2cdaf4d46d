//! Counters for operators, served as Prometheus text on `/metrics`:
//! requests by route, method and status, request latency by route, bytes
//! received and sent, uploads in progress.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::time::Duration;

use dashmap::DashMap;

/// Upper bounds (seconds) of the latency histogram's buckets.
const BUCKETS: [f64; 12] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0, 30.0,
];

#[derive(Default)]
pub struct Metrics {
    requests: DashMap<(&'static str, &'static str, u16), AtomicU64>,
    latency: DashMap<&'static str, Histogram>,
    pub bytes_in: AtomicU64,
    pub bytes_out: AtomicU64,
    /// Of those, the bytes the kernel sent from files (`sendfile`); shared
    /// with every connection's socket.
    pub bytes_sendfile: std::sync::Arc<AtomicU64>,
    pub uploads_in_progress: AtomicI64,
}

#[derive(Default)]
struct Histogram {
    counts: [AtomicU64; BUCKETS.len()],
    count: AtomicU64,
    /// Sum in microseconds.
    sum_us: AtomicU64,
}

impl Metrics {
    pub fn record(&self, route: &'static str, method: &http::Method, status: u16, took: Duration) {
        // Read locks on the hot path; a write lock only for a new series.
        let key = (route, method_label(method), status);
        match self.requests.get(&key) {
            Some(n) => n.fetch_add(1, Ordering::Relaxed),
            None => self
                .requests
                .entry(key)
                .or_default()
                .fetch_add(1, Ordering::Relaxed),
        };
        if !self.latency.contains_key(route) {
            self.latency.entry(route).or_default();
        }
        let Some(h) = self.latency.get(route) else {
            return;
        };
        let secs = took.as_secs_f64();
        for (i, bound) in BUCKETS.iter().enumerate() {
            if secs <= *bound {
                h.counts[i].fetch_add(1, Ordering::Relaxed);
            }
        }
        h.count.fetch_add(1, Ordering::Relaxed);
        h.sum_us
            .fetch_add(took.as_micros() as u64, Ordering::Relaxed);
    }

    /// The Prometheus text exposition.
    pub fn render(&self) -> String {
        let mut out = String::new();
        out.push_str(
            "# HELP registry_http_requests_total Requests answered, by route, method and status.\n",
        );
        out.push_str("# TYPE registry_http_requests_total counter\n");
        let requests: BTreeMap<_, _> = self
            .requests
            .iter()
            .map(|e| (*e.key(), e.value().load(Ordering::Relaxed)))
            .collect();
        for ((route, method, status), n) in requests {
            let _ = writeln!(out, "registry_http_requests_total{{route=\"{route}\",method=\"{method}\",status=\"{status}\"}} {n}");
        }
        out.push_str("# HELP registry_http_request_duration_seconds Time to answer a request (to its headers), by route.\n");
        out.push_str("# TYPE registry_http_request_duration_seconds histogram\n");
        let mut routes: Vec<&'static str> = self.latency.iter().map(|e| *e.key()).collect();
        routes.sort();
        for route in routes {
            let Some(h) = self.latency.get(route) else {
                continue;
            };
            for (i, bound) in BUCKETS.iter().enumerate() {
                let _ = writeln!(
                    out,
                    "registry_http_request_duration_seconds_bucket{{route=\"{route}\",le=\"{bound}\"}} {}",
                    h.counts[i].load(Ordering::Relaxed)
                );
            }
            let count = h.count.load(Ordering::Relaxed);
            let _ = writeln!(out, "registry_http_request_duration_seconds_bucket{{route=\"{route}\",le=\"+Inf\"}} {count}");
            let _ = writeln!(
                out,
                "registry_http_request_duration_seconds_sum{{route=\"{route}\"}} {}",
                h.sum_us.load(Ordering::Relaxed) as f64 / 1e6
            );
            let _ = writeln!(
                out,
                "registry_http_request_duration_seconds_count{{route=\"{route}\"}} {count}"
            );
        }
        for (name, help, kind, value) in [
            (
                "registry_http_received_bytes_total",
                "Request body bytes declared by Content-Length.",
                "counter",
                self.bytes_in.load(Ordering::Relaxed) as i64,
            ),
            (
                "registry_http_sent_bytes_total",
                "Response body bytes declared by Content-Length.",
                "counter",
                self.bytes_out.load(Ordering::Relaxed) as i64,
            ),
            (
                "registry_http_sendfile_bytes_total",
                "Response body bytes the kernel sent straight from blob files (sendfile).",
                "counter",
                self.bytes_sendfile.load(Ordering::Relaxed) as i64,
            ),
            (
                "registry_uploads_in_progress",
                "Upload requests streaming right now.",
                "gauge",
                self.uploads_in_progress.load(Ordering::Relaxed),
            ),
        ] {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {value}"
            );
        }
        out
    }
}

/// A fixed label per method, so that a client cannot mint new series.
fn method_label(m: &http::Method) -> &'static str {
    match *m {
        http::Method::GET => "GET",
        http::Method::HEAD => "HEAD",
        http::Method::PUT => "PUT",
        http::Method::POST => "POST",
        http::Method::PATCH => "PATCH",
        http::Method::DELETE => "DELETE",
        http::Method::OPTIONS => "OPTIONS",
        _ => "OTHER",
    }
}

/// Counts one upload request as in progress while it lives.
pub struct UploadGauge<'a>(&'a Metrics);

impl<'a> UploadGauge<'a> {
    pub fn new(m: &'a Metrics) -> UploadGauge<'a> {
        m.uploads_in_progress.fetch_add(1, Ordering::Relaxed);
        UploadGauge(m)
    }
}

impl Drop for UploadGauge<'_> {
    fn drop(&mut self) {
        self.0.uploads_in_progress.fetch_sub(1, Ordering::Relaxed);
    }
}
