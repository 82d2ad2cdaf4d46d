//! `registry-bench`: load any registry with the scenarios CI pipelines
//! produce, checking every answer, or run our registry and CNCF
//! Distribution side by side and print the ratios.

mod compare;
mod content;
mod run;
mod scenario;

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context as _};
use clap::{Args, Parser, Subcommand};

use crate::run::Limits;
use crate::scenario::Scenario;

#[derive(Parser)]
#[command(
    name = "registry-bench",
    version,
    about = "Load benchmark for OCI / Docker registries"
)]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Load one registry: registry-bench run http://127.0.0.1:5000
    Run {
        /// Base URL: http://HOST:PORT or https://HOST:PORT.
        url: String,
        /// User name for Basic authentication.
        #[arg(short, long)]
        user: Option<String>,
        /// Password (or set REGISTRY_BENCH_PASSWORD).
        #[arg(long)]
        password: Option<String>,
        /// PEM file of CA certificates for https (default: the system bundle).
        #[arg(long)]
        cacert: Option<PathBuf>,
        /// Repository namespace the benchmark writes under.
        #[arg(long, default_value = "bench")]
        repo: String,
        #[command(flatten)]
        load: LoadArgs,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Start our registry and Distribution's docker-registry on fresh roots
    /// and compare them, alternating, in one run.
    Compare {
        /// Our registry binary (default: `registry` beside this program).
        #[arg(long)]
        ours: Option<PathBuf>,
        /// CNCF Distribution's binary.
        #[arg(long, default_value = "/usr/bin/docker-registry")]
        theirs: PathBuf,
        /// KEY=VALUE environment for our registry only, such as
        /// REGISTRY_STORAGE_FILESYSTEM_DIRECTWRITES=true (repeatable).
        #[arg(long = "ours-env", value_parser = parse_env_pair)]
        ours_env: Vec<(String, String)>,
        /// Rounds; each round runs both servers once, the first in turn.
        #[arg(long, default_value_t = 4)]
        rounds: usize,
        /// Directory for the servers' roots and logs (removed after each run).
        #[arg(long, default_value = "/var/tmp/registry-bench")]
        workdir: PathBuf,
        /// Keep both stores in this S3-compatible bucket instead, given as
        /// http://ACCESSKEY:SECRETKEY@HOST:PORT/BUCKET (each run under a
        /// fresh prefix; blobs streamed by the registries).
        #[arg(long, value_parser = compare::Bucket::parse)]
        s3: Option<compare::Bucket>,
        #[command(flatten)]
        load: LoadArgs,
        /// Write every run and the summary as JSON to this file.
        #[arg(long)]
        json: Option<PathBuf>,
    },
    /// List the scenarios.
    Scenarios,
}

#[derive(Args)]
struct LoadArgs {
    /// Scenarios, comma-separated, or "all" (see `registry-bench scenarios`).
    #[arg(short, long, default_value = "all")]
    scenarios: String,
    /// Concurrent clients, each on its own kept-alive connection.
    #[arg(short, long, default_value_t = 8)]
    concurrency: usize,
    /// Length of the measured phase of each scenario.
    #[arg(short, long, default_value = "10s", value_parser = registry::config::parse_duration)]
    duration: Duration,
    /// Stop a scenario after this many operations, if sooner.
    #[arg(short = 'n', long)]
    requests: Option<u64>,
    /// Uncounted load before the measured phase.
    #[arg(long, default_value = "1s", value_parser = registry::config::parse_duration)]
    warmup: Duration,
}

impl LoadArgs {
    fn scenarios(&self) -> anyhow::Result<Vec<Scenario>> {
        if self.scenarios == "all" {
            return Ok(scenario::all());
        }
        self.scenarios
            .split(',')
            .map(|s| {
                Scenario::parse(s.trim()).with_context(|| {
                    format!("{s:?} is not a scenario; `registry-bench scenarios` lists them")
                })
            })
            .collect()
    }

    fn limits(&self) -> anyhow::Result<Limits> {
        if self.concurrency == 0 || self.concurrency > 1024 {
            bail!("--concurrency must be from 1 to 1024");
        }
        if self.duration.is_zero() || self.duration > Duration::from_secs(3600) {
            bail!("--duration must be more than 0 and at most 1h");
        }
        Ok(Limits {
            warmup: self.warmup,
            duration: self.duration,
            max_ops: self.requests,
        })
    }
}

fn parse_env_pair(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((k, v)) if !k.is_empty() => Ok((k.to_string(), v.to_string())),
        _ => Err(format!("{s:?} is not KEY=VALUE")),
    }
}

fn main() -> ExitCode {
    match try_main(Cli::parse()) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(e) => {
            eprintln!("registry-bench: {e:#}");
            ExitCode::from(2)
        }
    }
}

/// Ok(false) when the load ran but some operation failed.
fn try_main(cli: Cli) -> anyhow::Result<bool> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    match cli.command {
        Cmd::Scenarios => {
            for s in scenario::NAMED {
                println!("{:<14} {}", s.name(), s.describe());
            }
            Ok(true)
        }
        Cmd::Run {
            url,
            user,
            password,
            cacert,
            repo,
            load,
            json,
        } => {
            let password = password.or_else(|| std::env::var("REGISTRY_BENCH_PASSWORD").ok());
            let credentials = match (user, password) {
                (Some(u), Some(p)) => Some((u, p)),
                (None, None) => None,
                (Some(_), None) => bail!("--user needs --password or REGISTRY_BENCH_PASSWORD"),
                (None, Some(_)) => bail!("a password needs --user"),
            };
            let target = Arc::new(registry::client::Target::new(
                &url,
                credentials,
                cacert.as_deref(),
            )?);
            let limits = load.limits()?;
            let mut all = vec![];
            for s in load.scenarios()? {
                let stats = rt.block_on(async {
                    let (conns, fixture) =
                        run::prepare(target.clone(), s, &repo, load.concurrency).await?;
                    run::load(conns, fixture, limits).await
                })?;
                if !json {
                    eprintln!(
                        "{:<14} {:>10.1} ops/s {:>9.1} MiB/s  errors {}",
                        s.name(),
                        stats.ops_per_sec,
                        stats.mib_per_sec,
                        stats.errors
                    );
                    for e in &stats.first_errors {
                        eprintln!("  error: {e}");
                    }
                }
                all.push(stats);
            }
            if json {
                println!(
                    "{}",
                    serde_json::json!({ "target": target.url(), "scenarios": all })
                );
            } else {
                print!("{}", run::table(&all));
            }
            Ok(all.iter().all(|s| s.errors == 0 && s.ops > 0))
        }
        Cmd::Compare {
            ours,
            theirs,
            ours_env,
            rounds,
            workdir,
            s3,
            load,
            json,
        } => {
            let ours = match ours {
                Some(p) => p,
                None => std::env::current_exe()?.with_file_name("registry"),
            };
            if rounds == 0 {
                bail!("--rounds must be at least 1");
            }
            let opts = compare::Options {
                ours,
                theirs,
                ours_env,
                scenarios: load.scenarios()?,
                concurrency: load.concurrency,
                limits: load.limits()?,
                rounds,
                workdir,
                s3,
            };
            let (samples, summaries) = compare::compare(&opts, &rt)?;
            print!("{}", compare::markdown(&summaries));
            if let Some(path) = json {
                let v = serde_json::json!({ "runs": samples, "summary": summaries });
                std::fs::write(&path, serde_json::to_string_pretty(&v)?)
                    .with_context(|| format!("cannot write {}", path.display()))?;
            }
            Ok(summaries.iter().all(|s| s.errors == 0))
        }
    }
}
