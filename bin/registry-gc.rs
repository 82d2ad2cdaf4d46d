//! `registry-gc CONFIG`: garbage collection beside a live server. A shell
//! around `registry::gc::collect`: parse arguments, load the config, run a
//! pass (or one every `--interval`), print the report.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use clap::Parser;
use registry::config::{parse_duration, Config};
use registry::gc::{self, Options};

#[derive(Parser)]
#[command(
    name = "registry-gc",
    version,
    about = "Mark-and-sweep garbage collection, safe while the registry takes pushes"
)]
struct Cli {
    /// The registry's config.yml (REGISTRY_* environment overrides apply).
    config: PathBuf,
    /// Report what would be freed; delete nothing.
    #[arg(long)]
    dry_run: bool,
    /// Also delete manifests that no tag reaches, and what only they use.
    #[arg(long)]
    delete_untagged: bool,
    /// Keep anything modified more recently than this (e.g. 30m, 1h, 0).
    #[arg(long, default_value = "1h", value_parser = duration)]
    grace: Duration,
    /// Print the report as one JSON object per pass.
    #[arg(long)]
    json: bool,
    /// Run a pass every INTERVAL until SIGTERM or SIGINT (e.g. 6h).
    #[arg(long, value_parser = duration)]
    interval: Option<Duration>,
    /// Expire what pull-through caches (`proxy`, `caches`) hold that nobody
    /// pulled for this long (e.g. 168h); a later pull fetches it again.
    #[arg(long, value_parser = duration)]
    cache_unused: Option<Duration>,
}

fn duration(s: &str) -> Result<Duration, String> {
    parse_duration(s)
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match try_main(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("registry-gc: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn try_main(cli: Cli) -> anyhow::Result<ExitCode> {
    let config = Config::load(&cli.config)?;
    registry::logging::init(&config.log);
    let options = Options {
        dry_run: cli.dry_run,
        delete_untagged: cli.delete_untagged,
        grace: cli.grace,
        upload_age: config.storage.uploadpurging.age,
        expire_cached: match cli.cache_unused {
            None => None,
            Some(_) if config.caches.is_empty() => anyhow::bail!(
                "--cache-unused: the config names no pull-through cache (proxy or caches)"
            ),
            Some(unused) => Some(gc::expire::Expire {
                unused,
                prefixes: config.caches.iter().map(|c| c.prefix.clone()).collect(),
            }),
        },
    };
    let storage = config.storage.clone();
    let stop = Arc::new(AtomicBool::new(false));
    // Two workers: a pass in a bucket drives its object-store client here.
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    runtime.block_on(async move {
        // A signal abandons the pass in progress between two deletions.
        let flag = stop.clone();
        let signals = tokio::spawn(async move {
            use tokio::signal::unix::{signal, SignalKind};
            let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler");
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
            flag.store(true, Ordering::Relaxed);
        });
        let mut failed = false;
        loop {
            let (storage, options, stop2, json) =
                (storage.clone(), options.clone(), stop.clone(), cli.json);
            let result = tokio::task::spawn_blocking(move || {
                let progress = |phase: &str| {
                    if !json {
                        tracing::info!("{phase}");
                    }
                };
                gc::collect_store(&storage, &options, &progress, &stop2)
            })
            .await?;
            match result {
                Ok(report) if cli.json => println!("{}", serde_json::to_string(&report)?),
                Ok(report) => println!("{}", report.to_text()),
                Err(gc::GcError::Interrupted) => {
                    eprintln!(
                        "registry-gc: interrupted; the pass was abandoned between two deletions"
                    );
                    break;
                }
                Err(e) => {
                    eprintln!("registry-gc: {e}");
                    failed = true;
                }
            }
            let Some(every) = cli.interval else { break };
            if stop.load(Ordering::Relaxed) {
                break;
            }
            let mut waited = Duration::ZERO;
            while waited < every && !stop.load(Ordering::Relaxed) {
                let step = Duration::from_millis(200).min(every - waited);
                tokio::time::sleep(step).await;
                waited += step;
            }
            if stop.load(Ordering::Relaxed) {
                break;
            }
        }
        signals.abort();
        Ok(if failed {
            ExitCode::FAILURE
        } else {
            ExitCode::SUCCESS
        })
    })
}
