//! The load loop: workers on kept-alive connections, a warm-up that is
//! not counted, then a bounded measured phase, and its statistics.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use serde::Serialize;

use crate::scenario::{Fixture, Scenario};
use registry::client::{Conn, Target};

/// How long the measured phase lasts.
#[derive(Clone, Copy)]
pub struct Limits {
    pub warmup: Duration,
    pub duration: Duration,
    /// Stop after this many operations, if fewer than the duration allows.
    pub max_ops: Option<u64>,
}

/// Figures of one measured phase.
#[derive(Serialize, Clone, Debug)]
pub struct Stats {
    pub scenario: &'static str,
    pub concurrency: usize,
    pub ops: u64,
    pub errors: u64,
    pub bytes: u64,
    pub seconds: f64,
    pub ops_per_sec: f64,
    pub mib_per_sec: f64,
    pub p50_ms: f64,
    pub p90_ms: f64,
    pub p99_ms: f64,
    /// The first few failures, word for word.
    pub first_errors: Vec<String>,
}

/// Put what the scenario reads into the registry, over `concurrency`
/// connections that the load then reuses.
pub async fn prepare(
    target: Arc<Target>,
    scenario: Scenario,
    repo: &str,
    concurrency: usize,
) -> anyhow::Result<(Vec<Conn>, Arc<Fixture>)> {
    let mut conns: Vec<Conn> = (0..concurrency)
        .map(|_| Conn::new(target.clone()))
        .collect();
    let fixture = Fixture::prepare(scenario, repo, &mut conns)
        .await
        .with_context(|| format!("preparing {}", scenario.name()))?;
    Ok((conns, fixture))
}

/// Load the registry with one worker per connection.
pub async fn load(
    conns: Vec<Conn>,
    fixture: Arc<Fixture>,
    limits: Limits,
) -> anyhow::Result<Stats> {
    let scenario = fixture.scenario;
    let concurrency = conns.len();
    let start = Instant::now();
    let measure_from = start + limits.warmup;
    let deadline = measure_from + limits.duration;
    let issued = Arc::new(AtomicU64::new(0));
    let mut workers = tokio::task::JoinSet::new();
    for (w, mut conn) in conns.into_iter().enumerate() {
        let fixture = fixture.clone();
        let issued = issued.clone();
        workers.spawn(async move {
            let mut out = WorkerStats::default();
            let mut i = 0u64;
            loop {
                let now = Instant::now();
                if now >= deadline {
                    break;
                }
                let counted = now >= measure_from;
                if counted {
                    if let Some(max) = limits.max_ops {
                        if issued.fetch_add(1, Ordering::Relaxed) >= max {
                            break;
                        }
                    }
                }
                let t = Instant::now();
                let result = fixture.op(&mut conn, w, i).await;
                i += 1;
                if !counted {
                    continue;
                }
                match result {
                    Ok(bytes) => {
                        out.latencies_us.push(t.elapsed().as_micros() as u64);
                        out.bytes += bytes;
                    }
                    Err(e) => {
                        out.errors += 1;
                        if out.first_errors.len() < 3 {
                            out.first_errors.push(format!("{e:#}"));
                        }
                        conn.reset();
                    }
                }
                out.ended = Instant::now();
            }
            out
        });
    }
    // The workers stop themselves; this bound is for a server that stops
    // answering altogether.
    let hard_stop = deadline + Duration::from_secs(120);
    let mut all = WorkerStats {
        ended: measure_from,
        ..WorkerStats::default()
    };
    loop {
        let left = hard_stop.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, workers.join_next()).await {
            Ok(Some(Ok(w))) => all.merge(w),
            Ok(Some(Err(e))) => anyhow::bail!("a worker failed: {e}"),
            Ok(None) => break,
            Err(_) => {
                workers.abort_all();
                anyhow::bail!("{}: the registry stopped answering", scenario.name());
            }
        }
    }
    let seconds = all
        .ended
        .saturating_duration_since(measure_from)
        .as_secs_f64()
        .max(1e-9);
    all.latencies_us.sort_unstable();
    let ops = all.latencies_us.len() as u64;
    let pct = |p: f64| -> f64 {
        if all.latencies_us.is_empty() {
            return 0.0;
        }
        let i = ((all.latencies_us.len() as f64 * p).ceil() as usize)
            .clamp(1, all.latencies_us.len())
            - 1;
        all.latencies_us[i] as f64 / 1e3
    };
    Ok(Stats {
        scenario: scenario.name(),
        concurrency,
        ops,
        errors: all.errors,
        bytes: all.bytes,
        seconds,
        ops_per_sec: ops as f64 / seconds,
        mib_per_sec: all.bytes as f64 / seconds / (1 << 20) as f64,
        p50_ms: pct(0.50),
        p90_ms: pct(0.90),
        p99_ms: pct(0.99),
        first_errors: all.first_errors,
    })
}

struct WorkerStats {
    latencies_us: Vec<u64>,
    bytes: u64,
    errors: u64,
    first_errors: Vec<String>,
    ended: Instant,
}

impl Default for WorkerStats {
    fn default() -> Self {
        WorkerStats {
            latencies_us: vec![],
            bytes: 0,
            errors: 0,
            first_errors: vec![],
            ended: Instant::now(),
        }
    }
}

impl WorkerStats {
    fn merge(&mut self, other: WorkerStats) {
        self.latencies_us.extend(other.latencies_us);
        self.bytes += other.bytes;
        self.errors += other.errors;
        for e in other.first_errors {
            if self.first_errors.len() < 3 {
                self.first_errors.push(e);
            }
        }
        self.ended = self.ended.max(other.ended);
    }
}

/// One line per scenario, aligned.
pub fn table(stats: &[Stats]) -> String {
    let mut out = format!(
        "{:<14} {:>4} {:>8} {:>10} {:>9} {:>8} {:>8} {:>8} {:>6}\n",
        "scenario", "c", "ops", "ops/s", "MiB/s", "p50 ms", "p90 ms", "p99 ms", "errors"
    );
    for s in stats {
        out.push_str(&format!(
            "{:<14} {:>4} {:>8} {:>10.1} {:>9.1} {:>8.2} {:>8.2} {:>8.2} {:>6}\n",
            s.scenario,
            s.concurrency,
            s.ops,
            s.ops_per_sec,
            s.mib_per_sec,
            s.p50_ms,
            s.p90_ms,
            s.p99_ms,
            s.errors
        ));
    }
    out
}
