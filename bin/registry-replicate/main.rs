//! `registry-replicate REPLICATION.yml`: keep repositories in sync between
//! registries. `--once` runs every rule once and exits non-zero if anything
//! could not be copied; without it, each rule runs again every `interval`
//! until SIGTERM or SIGINT, which let the blobs in flight finish.

mod config;
mod content;
mod copy;
mod counters;
mod limit;
mod metrics;
mod peer;
mod remote;
mod retry;
mod watch;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use anyhow::Context as _;
use clap::Parser;

use crate::config::Config;
use crate::copy::{Pass, Summary};
use crate::peer::{LocalSource, LocalStore, Peer};
use crate::remote::Remote;

#[derive(Parser)]
#[command(
    name = "registry-replicate",
    version,
    about = "Copy repositories between OCI registries and keep them in sync"
)]
struct Cli {
    /// The replication file: peers and rules (see the README).
    config: PathBuf,
    /// Run every rule once, then exit (for cron); non-zero if anything failed.
    #[arg(long)]
    once: bool,
    /// Report what would be copied or deleted; write nothing.
    #[arg(long)]
    dry_run: bool,
    /// Print each rule's summary as one JSON line.
    #[arg(long)]
    json: bool,
    /// Run only the rules with these names (repeatable).
    #[arg(long = "rule")]
    rules: Vec<String>,
    /// In daemon mode, serve Prometheus metrics (lag and backlog per rule)
    /// on this address, such as 127.0.0.1:9464.
    #[arg(long)]
    metrics: Option<String>,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let filter = tracing_subscriber::EnvFilter::try_from_env("RUST_LOG").unwrap_or_else(|_| {
        tracing_subscriber::EnvFilter::new(if cli.once || cli.dry_run {
            "warn"
        } else {
            "info"
        })
    });
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
    match try_main(cli) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(e) => {
            eprintln!("registry-replicate: {e:#}");
            ExitCode::from(2)
        }
    }
}

fn try_main(cli: Cli) -> anyhow::Result<bool> {
    let config = Config::load(&cli.config)?;
    let mut rules = config.rules.clone();
    if !cli.rules.is_empty() {
        for name in &cli.rules {
            if !rules.iter().any(|r| &r.name == name) {
                anyhow::bail!("--rule {name:?}: no rule has that name");
            }
        }
        rules.retain(|r| cli.rules.contains(&r.name));
    }
    let mut peers = BTreeMap::new();
    let mut limiters = BTreeMap::new();
    for (name, p) in &config.peers {
        let peer = match (&p.url, &p.path, &p.registry_config) {
            (Some(url), _, _) => {
                let target =
                    registry::client::Target::new(url, p.credentials(name)?, p.ca.as_deref())
                        .with_context(|| format!("peers.{name}"))?;
                Peer::Remote(Remote::new(target, p.concurrency, p.retry_for()?))
            }
            (None, Some(path), _) => Peer::local(
                LocalStore::open(LocalSource::Directory(path.clone()))
                    .with_context(|| format!("peers.{name}.path"))?,
            ),
            (None, None, Some(config)) => Peer::local(
                LocalStore::open(LocalSource::RegistryConfig(config.clone()))
                    .with_context(|| format!("peers.{name}.registry_config"))?,
            ),
            (None, None, None) => unreachable!("checked when loading"),
        };
        peers.insert(name.clone(), (Arc::new(peer), p.concurrency));
        if let Some(rate) = p.bytes_per_sec() {
            limiters.insert(name.clone(), Arc::new(limit::Limiter::new(rate)));
        }
    }
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let stop = Arc::new(AtomicBool::new(false));
    runtime.block_on(async {
        tokio::spawn({
            let stop = stop.clone();
            async move {
                wait_for_signal().await;
                tracing::info!("stopping: the blobs in flight finish, nothing new starts");
                stop.store(true, Ordering::Relaxed);
            }
        });
        if cli.once || cli.dry_run {
            let mut all_ok = true;
            for rule in &rules {
                let (source, concurrency) = &peers[&rule.source];
                let (target, _) = &peers[&rule.target];
                let pass = Pass::new(rule, source, target, cli.dry_run, &stop)
                    .limited(limits_of(&limiters, rule));
                let progress = std::io::IsTerminal::is_terminal(&std::io::stderr())
                    .then(|| tokio::spawn(progress(rule.name.clone(), pass.counters())));
                let summary = pass.run(*concurrency).await;
                if let Some(p) = progress {
                    p.abort();
                    eprint!("\r\x1b[K");
                }
                all_ok &= summary.ok();
                print_summary(&summary, cli.json);
            }
            return Ok(all_ok);
        }
        let metrics = Arc::new(metrics::Metrics::new(rules.iter().map(|r| r.name.clone())));
        if let Some(addr) = &cli.metrics {
            let listener = tokio::net::TcpListener::bind(addr)
                .await
                .with_context(|| format!("--metrics: cannot listen on {addr}"))?;
            let at = listener.local_addr()?;
            tracing::info!("metrics on {at}");
            eprintln!("metrics on {at}");
            tokio::spawn(metrics::serve(metrics.clone(), listener));
        }
        let mut tasks = tokio::task::JoinSet::new();
        let mut watchers = vec![];
        for rule in rules {
            let metrics = metrics.clone();
            let (source, concurrency) = peers[&rule.source].clone();
            let target = peers[&rule.target].0.clone();
            let limits = limits_of(&limiters, &rule);
            let stop = stop.clone();
            let json = cli.json;
            // A store on disk is watched: a new or moved tag starts the
            // next pass within about a second instead of at the interval.
            // (A store in a bucket is read again at each pass.)
            let wake = Arc::new(tokio::sync::Notify::new());
            if let Some(dir) = match &*source {
                Peer::Local(store, _) => store.directory(),
                Peer::Remote(_) => None,
            } {
                watchers.push(watch::tags(dir, wake.clone())?);
            }
            tasks.spawn(async move {
                while !stop.load(Ordering::Relaxed) {
                    let started = std::time::SystemTime::now();
                    let summary = Pass::new(&rule, &source, &target, false, &stop)
                        .limited(limits.clone())
                        .run(concurrency)
                        .await;
                    metrics.record(&rule.name, started, &summary);
                    print_summary(&summary, json);
                    let until = tokio::time::Instant::now() + rule.interval;
                    while !stop.load(Ordering::Relaxed) && tokio::time::Instant::now() < until {
                        tokio::select! {
                            () = tokio::time::sleep(std::time::Duration::from_millis(200)) => {}
                            () = wake.notified() => {
                                // Let the push that woke us finish its writes.
                                tokio::time::sleep(std::time::Duration::from_millis(500)).await;
                                break;
                            }
                        }
                    }
                }
            });
        }
        while tasks.join_next().await.is_some() {}
        drop(watchers);
        Ok(true)
    })
}

/// A status line on the terminal, redrawn every second: tags, blobs,
/// bytes and the rate over the last second.
async fn progress(rule: String, c: Arc<counters::Counters>) {
    let mut last = 0u64;
    loop {
        tokio::time::sleep(std::time::Duration::from_secs(1)).await;
        let load = |a: &std::sync::atomic::AtomicU64| a.load(Ordering::Relaxed);
        let bytes = load(&c.bytes_copied);
        eprint!(
            "\r\x1b[K{rule}: {} tags copied, {} current; blobs {} sent, {} mounted, {} there; {:.1} MiB at {:.1} MiB/s",
            load(&c.tags_copied),
            load(&c.tags_current),
            load(&c.blobs_copied),
            load(&c.blobs_mounted),
            load(&c.blobs_present),
            bytes as f64 / (1 << 20) as f64,
            bytes.saturating_sub(last) as f64 / (1 << 20) as f64,
        );
        last = bytes;
    }
}

/// The bandwidth limits of a rule's two peers.
fn limits_of(
    limiters: &BTreeMap<String, Arc<limit::Limiter>>,
    rule: &config::Rule,
) -> Vec<Arc<limit::Limiter>> {
    [&rule.source, &rule.target]
        .into_iter()
        .filter_map(|p| limiters.get(p).cloned())
        .collect()
}

fn print_summary(s: &Summary, json: bool) {
    if json {
        println!("{}", serde_json::to_string(s).expect("summary is JSON"));
    } else {
        print!("{}", s.to_text());
    }
}

async fn wait_for_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}
