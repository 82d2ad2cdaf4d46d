//! Side by side: our registry and CNCF Distribution (Debian's
//! `docker-registry`), each started fresh on its own root for every
//! measured run, alternated A B B A, with their memory and CPU sampled
//! from /proc. Ratios of medians are what this machine can vouch for.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};
use http::{Method, StatusCode};
use serde::Serialize;

use crate::run::{load, prepare, Limits, Stats};
use crate::scenario::Scenario;
use registry::client::{Conn, Frames, Target};
use registry::storage::backend::s3::{S3Config, S3};
use registry::storage::backend::Objects;

pub struct Options {
    pub ours: PathBuf,
    pub theirs: PathBuf,
    /// Environment for our registry only (config overrides).
    pub ours_env: Vec<(String, String)>,
    pub scenarios: Vec<Scenario>,
    pub concurrency: usize,
    pub limits: Limits,
    pub rounds: usize,
    pub workdir: PathBuf,
    /// Both registries on this bucket instead of a directory each.
    pub s3: Option<Bucket>,
}

/// An S3-compatible bucket both registries are pointed at, each measured
/// run under a fresh prefix (removed after it). Given on the command line as
/// `http://ACCESSKEY:SECRETKEY@HOST:PORT/BUCKET`.
#[derive(Clone, Debug)]
pub struct Bucket {
    pub endpoint: String,
    pub bucket: String,
    pub access: String,
    pub secret: String,
}

impl Bucket {
    pub fn parse(s: &str) -> Result<Bucket, String> {
        let bad = || format!("{s:?} is not http://ACCESSKEY:SECRETKEY@HOST:PORT/BUCKET");
        let (scheme, rest) = s.split_once("://").ok_or_else(bad)?;
        let (keys, rest) = rest.rsplit_once('@').ok_or_else(bad)?;
        let (access, secret) = keys.split_once(':').ok_or_else(bad)?;
        let (host, bucket) = rest.split_once('/').ok_or_else(bad)?;
        let bucket = bucket.trim_end_matches('/');
        if bucket.is_empty() || bucket.contains('/') || host.is_empty() {
            return Err(bad());
        }
        Ok(Bucket {
            endpoint: format!("{scheme}://{host}"),
            bucket: bucket.into(),
            access: access.into(),
            secret: secret.into(),
        })
    }

    fn config(&self, prefix: &str) -> S3Config {
        S3Config::local(
            &self.endpoint,
            &self.bucket,
            (&self.access, &self.secret),
            prefix,
        )
    }

    /// `storage:` lines for both registries. Blobs are streamed by the
    /// registries (redirect.disable), so a pull measures them, not the
    /// object store answering presigned URLs.
    fn storage_yaml(&self, prefix: &str) -> String {
        format!(
            "  s3:\n    accesskey: {}\n    secretkey: {}\n    region: us-east-1\n    regionendpoint: {}\n    bucket: {}\n    secure: false\n    v4auth: true\n    rootdirectory: {prefix}\n  redirect:\n    disable: true\n",
            self.access, self.secret, self.endpoint, self.bucket
        )
    }
}

#[derive(Clone, Copy, PartialEq, Serialize, Debug)]
pub enum Side {
    #[serde(rename = "ours")]
    Ours,
    #[serde(rename = "distribution")]
    Distribution,
}

impl Side {
    fn label(self) -> &'static str {
        match self {
            Side::Ours => "ours",
            Side::Distribution => "distribution",
        }
    }
}

/// One measured run of one server.
#[derive(Serialize, Clone, Debug)]
pub struct Sample {
    pub side: Side,
    pub round: usize,
    pub stats: Stats,
    /// Largest resident set seen while the load ran.
    pub peak_rss_mib: f64,
    /// Server CPU time (user + system) spent in the measured phase.
    pub cpu_seconds: f64,
}

/// Medians over the rounds, both servers, and the target.
#[derive(Serialize, Debug)]
pub struct Summary {
    pub scenario: &'static str,
    pub ours_ops: f64,
    pub theirs_ops: f64,
    pub ratio: f64,
    pub ours_mib: f64,
    pub theirs_mib: f64,
    pub ours_p99_ms: f64,
    pub theirs_p99_ms: f64,
    pub ours_rss_mib: f64,
    pub theirs_rss_mib: f64,
    /// Server CPU milliseconds per operation.
    pub ours_cpu_ms_per_op: f64,
    pub theirs_cpu_ms_per_op: f64,
    pub errors: u64,
    pub target: f64,
    pub met: bool,
}

pub fn compare(
    opts: &Options,
    rt: &tokio::runtime::Runtime,
) -> anyhow::Result<(Vec<Sample>, Vec<Summary>)> {
    for (what, bin) in [
        ("our registry", &opts.ours),
        ("docker-registry", &opts.theirs),
    ] {
        if !bin.is_file() {
            bail!(
                "{what} not found at {}{}",
                bin.display(),
                if what == "docker-registry" {
                    " (install Debian's package: apt-get install docker-registry; or pass --theirs PATH)"
                } else {
                    " (build it: cargo build --release; or pass --ours PATH)"
                }
            );
        }
    }
    std::fs::create_dir_all(&opts.workdir)
        .with_context(|| format!("cannot create {}", opts.workdir.display()))?;
    let mut samples = vec![];
    let mut summaries = vec![];
    for &scenario in &opts.scenarios {
        let mut these = vec![];
        for round in 0..opts.rounds {
            // A B, then B A: each side goes first as often as the other.
            let order = if round % 2 == 0 {
                [Side::Ours, Side::Distribution]
            } else {
                [Side::Distribution, Side::Ours]
            };
            for side in order {
                let s = measure_one(opts, rt, side, scenario, round)?;
                eprintln!(
                    "  {:<13} round {} {:<12} {:>9.1} ops/s {:>8.1} MiB/s  rss {:>6.1} MiB  cpu {:>5.2} s  errors {}",
                    scenario.name(),
                    round + 1,
                    side.label(),
                    s.stats.ops_per_sec,
                    s.stats.mib_per_sec,
                    s.peak_rss_mib,
                    s.cpu_seconds,
                    s.stats.errors
                );
                for e in &s.stats.first_errors {
                    eprintln!("    error: {e}");
                }
                these.push(s);
            }
        }
        let target = match opts.s3 {
            Some(_) => scenario.target_on_s3(),
            None => scenario.target(),
        };
        summaries.push(summarize(scenario, target, &these));
        samples.extend(these);
    }
    Ok((samples, summaries))
}

fn median(mut v: Vec<f64>) -> f64 {
    if v.is_empty() {
        return 0.0;
    }
    v.sort_by(|a, b| a.total_cmp(b));
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

fn summarize(scenario: Scenario, target: f64, samples: &[Sample]) -> Summary {
    let of = |side: Side, f: &dyn Fn(&Sample) -> f64| {
        median(samples.iter().filter(|s| s.side == side).map(f).collect())
    };
    let ours_ops = of(Side::Ours, &|s| s.stats.ops_per_sec);
    let theirs_ops = of(Side::Distribution, &|s| s.stats.ops_per_sec);
    let ratio = if theirs_ops > 0.0 {
        ours_ops / theirs_ops
    } else {
        0.0
    };
    let cpu_per_op = |s: &Sample| {
        if s.stats.ops > 0 {
            s.cpu_seconds * 1e3 / s.stats.ops as f64
        } else {
            0.0
        }
    };
    let peak = |side: Side| {
        samples
            .iter()
            .filter(|s| s.side == side)
            .map(|s| s.peak_rss_mib)
            .fold(0.0, f64::max)
    };
    Summary {
        scenario: scenario.name(),
        ours_ops,
        theirs_ops,
        ratio,
        ours_mib: of(Side::Ours, &|s| s.stats.mib_per_sec),
        theirs_mib: of(Side::Distribution, &|s| s.stats.mib_per_sec),
        ours_p99_ms: of(Side::Ours, &|s| s.stats.p99_ms),
        theirs_p99_ms: of(Side::Distribution, &|s| s.stats.p99_ms),
        ours_rss_mib: peak(Side::Ours),
        theirs_rss_mib: peak(Side::Distribution),
        ours_cpu_ms_per_op: of(Side::Ours, &cpu_per_op),
        theirs_cpu_ms_per_op: of(Side::Distribution, &cpu_per_op),
        errors: samples.iter().map(|s| s.stats.errors).sum(),
        target,
        met: ratio >= target,
    }
}

fn measure_one(
    opts: &Options,
    rt: &tokio::runtime::Runtime,
    side: Side,
    scenario: Scenario,
    round: usize,
) -> anyhow::Result<Sample> {
    let (bin, env) = match side {
        Side::Ours => (&opts.ours, &opts.ours_env[..]),
        Side::Distribution => (&opts.theirs, &[][..]),
    };
    let server = Server::start(
        bin,
        env,
        &opts
            .workdir
            .join(format!("{}-{}-{round}", side.label(), scenario.name())),
        opts.s3.as_ref(),
    )?;
    let target = Arc::new(Target::new(
        &format!("http://127.0.0.1:{}", server.port),
        None,
        None,
    )?);
    rt.block_on(server.wait_ready(&target))?;
    let pid = server.child.id();
    let (conns, fixture) = rt
        .block_on(prepare(target, scenario, "bench", opts.concurrency))
        .with_context(|| format!("against {}", side.label()))?;
    // CPU and memory are read around the measured phase, after the warm-up.
    let sampler = Sampler::start(pid, opts.limits.warmup);
    let result = rt.block_on(load(conns, fixture, opts.limits));
    let (peak_rss_mib, cpu_seconds) = sampler.stop();
    drop(server);
    let stats = result.with_context(|| format!("{} against {}", scenario.name(), side.label()))?;
    Ok(Sample {
        side,
        round,
        stats,
        peak_rss_mib,
        cpu_seconds,
    })
}

/// A registry process on a fresh root (a directory, or a prefix of the
/// bucket); stopped and its root removed on drop.
struct Server {
    child: Child,
    port: u16,
    dir: PathBuf,
    /// The bucket and prefix, when the store is there.
    s3: Option<(Bucket, String)>,
}

impl Server {
    fn start(
        bin: &Path,
        env: &[(String, String)],
        dir: &Path,
        s3: Option<&Bucket>,
    ) -> anyhow::Result<Server> {
        let _ = std::fs::remove_dir_all(dir);
        std::fs::create_dir_all(dir)?;
        let port = std::net::TcpListener::bind("127.0.0.1:0")?
            .local_addr()?
            .port();
        let prefix = format!(
            "/registry-bench/{}-{}",
            dir.file_name().unwrap_or_default().to_string_lossy(),
            std::process::id()
        );
        let driver = match s3 {
            Some(b) => b.storage_yaml(&prefix),
            None => format!(
                "  filesystem:\n    rootdirectory: {}\n",
                dir.join("data").display()
            ),
        };
        // The configuration Distribution's own image ships, on both sides.
        let config = format!(
            "version: 0.1\nlog:\n  level: info\n  fields:\n    service: registry\nstorage:\n  cache:\n    blobdescriptor: inmemory\n{driver}  delete:\n    enabled: true\nhttp:\n  addr: 127.0.0.1:{port}\n  headers:\n    X-Content-Type-Options: [nosniff]\n"
        );
        let config_path = dir.join("config.yml");
        std::fs::write(&config_path, config)?;
        let log = std::fs::File::create(dir.join("server.log"))?;
        let child = Command::new(bin)
            .arg("serve")
            .arg(&config_path)
            // Distribution 2.8's S3 driver refuses to start with a CA bundle set.
            .env_remove("AWS_CA_BUNDLE")
            .envs(env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .with_context(|| format!("cannot start {}", bin.display()))?;
        Ok(Server {
            child,
            port,
            dir: dir.to_path_buf(),
            s3: s3.map(|b| (b.clone(), prefix)),
        })
    }

    async fn wait_ready(&self, target: &Arc<Target>) -> anyhow::Result<()> {
        let until = Instant::now() + Duration::from_secs(20);
        let mut conn = Conn::new(target.clone());
        loop {
            if let Ok(r) = conn.send(Method::GET, "/v2/", &[], Frames::empty()).await {
                if r.status() == StatusCode::OK {
                    return Ok(());
                }
            }
            conn.reset();
            if Instant::now() > until {
                bail!(
                    "the server on port {} did not answer; see {}",
                    self.port,
                    self.dir.join("server.log").display()
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
        if let Some((bucket, prefix)) = &self.s3 {
            // What the run stored in the bucket goes too (best effort:
            // a failure leaves a prefix that names the run).
            if let Ok(s3) = S3::connect(&bucket.config(prefix)) {
                let _ = s3.delete_dir(Path::new(prefix.trim_start_matches('/')));
            }
        }
    }
}

/// Samples a process's resident set every 20 ms and its CPU time at the
/// start and end of the measured phase.
struct Sampler {
    stop: Arc<AtomicBool>,
    thread: std::thread::JoinHandle<(f64, f64)>,
}

impl Sampler {
    fn start(pid: u32, delay: Duration) -> Sampler {
        let stop = Arc::new(AtomicBool::new(false));
        let peak = Arc::new(AtomicU64::new(0));
        let thread = std::thread::spawn({
            let stop = stop.clone();
            move || {
                let begin = Instant::now() + delay;
                let mut cpu_start = None;
                while !stop.load(Ordering::Relaxed) {
                    if Instant::now() >= begin {
                        if cpu_start.is_none() {
                            cpu_start = cpu_seconds(pid);
                        }
                        if let Some(kib) = rss_kib(pid) {
                            peak.fetch_max(kib, Ordering::Relaxed);
                        }
                    }
                    std::thread::sleep(Duration::from_millis(20));
                }
                let cpu = match (cpu_start, cpu_seconds(pid)) {
                    (Some(a), Some(b)) => b - a,
                    _ => 0.0,
                };
                (peak.load(Ordering::Relaxed) as f64 / 1024.0, cpu)
            }
        });
        Sampler { stop, thread }
    }

    fn stop(self) -> (f64, f64) {
        self.stop.store(true, Ordering::Relaxed);
        self.thread.join().unwrap_or((0.0, 0.0))
    }
}

fn rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// User + system CPU seconds; Linux reports them in USER_HZ (100) ticks.
fn cpu_seconds(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let after = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = after.split_whitespace().collect();
    let utime: f64 = fields.get(11)?.parse().ok()?;
    let stime: f64 = fields.get(12)?.parse().ok()?;
    Some((utime + stime) / 100.0)
}

/// The summary as a Markdown table: read on a terminal, pasted into
/// BENCHMARKS.md.
pub fn markdown(summaries: &[Summary]) -> String {
    let mut out = String::from(
        "| Scenario | Ours (ops/s) | Distribution (ops/s) | Ratio | Target | Met | Ours MiB/s | Distribution MiB/s | p99 ms ours / dist | Peak RSS MiB ours / dist | CPU ms per op ours / dist | Errors |\n|---|---|---|---|---|---|---|---|---|---|---|---|\n",
    );
    for s in summaries {
        out.push_str(&format!(
            "| {} | {:.1} | {:.1} | **{:.2}x** | {:.1}x | {} | {:.1} | {:.1} | {:.2} / {:.2} | {:.0} / {:.0} | {:.3} / {:.3} | {} |\n",
            s.scenario,
            s.ours_ops,
            s.theirs_ops,
            s.ratio,
            s.target,
            if s.met { "yes" } else { "no" },
            s.ours_mib,
            s.theirs_mib,
            s.ours_p99_ms,
            s.theirs_p99_ms,
            s.ours_rss_mib,
            s.theirs_rss_mib,
            s.ours_cpu_ms_per_op,
            s.theirs_cpu_ms_per_op,
            s.errors
        ));
    }
    out
}
