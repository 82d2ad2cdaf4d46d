//! `registry serve CONFIG`: run the registry. A shell around the library:
//! parse arguments, load the config, set up logging, serve until a signal.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand};
use registry::config::Config;
use registry::server::{self, App};

#[derive(Parser)]
#[command(
    name = "registry",
    version,
    about = "An OCI distribution / Docker Registry v2 server"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Serve the registry described by CONFIG (a Distribution-compatible config.yml).
    Serve {
        /// Path to config.yml; REGISTRY_SECTION_KEY environment variables override it.
        config: PathBuf,
    },
    /// Delete what no manifest needs (as Distribution's command; see also registry-gc).
    GarbageCollect {
        config: PathBuf,
        /// Report what would be deleted; delete nothing.
        #[arg(short = 'd', long)]
        dry_run: bool,
        /// Also delete manifests that no tag reaches.
        #[arg(short = 'm', long)]
        delete_untagged: bool,
        /// Print nothing but errors.
        #[arg(short = 'q', long)]
        quiet: bool,
        /// Keep anything modified more recently than this (0: everything unused goes).
        #[arg(long, default_value = "1h", value_parser = registry::config::parse_duration)]
        grace: std::time::Duration,
    },
    /// Read every blob and check it against its digest, and check that every
    /// manifest's config, layers and children are there; each problem is
    /// reported with the images it breaks. Exit 0 if all is well, 1 if it
    /// found problems, 2 if it could not run. Safe beside a running server
    /// and collector.
    Verify {
        config: PathBuf,
        /// Only the repositories whose names match this glob (`*` matches
        /// any run, `/` included), and the blobs their manifests need.
        #[arg(long)]
        repository: Option<String>,
        /// Print the report as one JSON object.
        #[arg(long)]
        json: bool,
        /// Blobs read at once.
        #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u16).range(1..=256))]
        readers: u16,
    },
    /// Exit 0 if the registry of CONFIG answers /healthz on this machine
    /// (for a container's HEALTHCHECK, which has no shell or curl).
    Healthcheck {
        #[arg(default_value = "/etc/docker/registry/config.yml")]
        config: PathBuf,
    },
}

fn main() -> ExitCode {
    // `registry CONFIG.yml` serves it, as registry:2's entry point does with
    // a config path for its only argument.
    let mut args: Vec<std::ffi::OsString> = std::env::args_os().collect();
    if args.len() == 2 {
        let first = args[1].to_string_lossy();
        if first.ends_with(".yml") || first.ends_with(".yaml") {
            args.insert(1, "serve".into());
        }
    }
    let cli = Cli::parse_from(args);
    if let Command::Verify {
        config,
        repository,
        json,
        readers,
    } = cli.command
    {
        let options = registry::verify::Options {
            repositories: repository,
            readers: readers.into(),
        };
        return match verify(&config, &options, json) {
            Ok(true) => ExitCode::SUCCESS,
            Ok(false) => ExitCode::FAILURE,
            Err(e) => {
                eprintln!("registry verify: {e:#}");
                ExitCode::from(2)
            }
        };
    }
    match try_main(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("registry: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn try_main(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Serve { config } => serve(config),
        Command::Healthcheck { config } => healthcheck(config),
        Command::Verify { .. } => unreachable!("answered in main"),
        Command::GarbageCollect {
            config,
            dry_run,
            delete_untagged,
            quiet,
            grace,
        } => {
            let config = Config::load(&config)?;
            let options = registry::gc::Options {
                dry_run,
                delete_untagged,
                grace,
                upload_age: config.storage.uploadpurging.age,
                expire_cached: None,
            };
            let stop = std::sync::atomic::AtomicBool::new(false);
            let report = registry::gc::collect_store(&config.storage, &options, &|_| {}, &stop)?;
            if !quiet {
                println!("{}", report.to_text());
            }
            Ok(())
        }
    }
}

/// `registry verify`: true if no problem was found.
fn verify(
    path: &std::path::Path,
    options: &registry::verify::Options,
    json: bool,
) -> anyhow::Result<bool> {
    use std::sync::atomic::Ordering;
    let config = Config::load(path)?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the runtime")?;
    let report = runtime.block_on(async {
        let storage = config.storage.clone();
        let where_ = registry::server::storage_name(&config);
        let store = tokio::task::spawn_blocking(move || {
            let store = storage.open(registry::storage::StoreOptions {
                readonly: true,
                ..Default::default()
            })?;
            anyhow::Ok((store.ready(), store))
        })
        .await?
        .with_context(|| format!("cannot open the store of {}", path.display()))?;
        let (ready, store) = store;
        if !ready {
            anyhow::bail!("{where_} holds no registry store");
        }
        let progress = std::sync::Arc::new(registry::verify::Progress::default());
        // On a terminal, a line redrawn every second.
        let line = std::io::IsTerminal::is_terminal(&std::io::stderr()).then(|| {
            let p = progress.clone();
            tokio::spawn(async move {
                loop {
                    tokio::time::sleep(std::time::Duration::from_secs(1)).await;
                    let load = |a: &std::sync::atomic::AtomicU64| a.load(Ordering::Relaxed);
                    eprint!(
                        "\r\x1b[K{} manifests; blobs {} of {}, {:.1} MiB read",
                        load(&p.manifests),
                        load(&p.blobs_read),
                        load(&p.blobs_total),
                        load(&p.bytes_read) as f64 / (1 << 20) as f64
                    );
                }
            })
        });
        let report = registry::verify::verify(store, options, &progress).await;
        if let Some(line) = line {
            line.abort();
            eprint!("\r\x1b[K");
        }
        anyhow::Ok(report?)
    })?;
    if json {
        println!("{}", serde_json::to_string(&report)?);
    } else {
        print!("{}", report.to_text());
    }
    Ok(report.ok())
}

fn serve(path: PathBuf) -> anyhow::Result<()> {
    let config = Config::load(&path)?;
    registry::logging::init(&config.log);
    for w in &config.warnings {
        tracing::warn!("{w}");
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the runtime")?;
    runtime.block_on(async move {
        let listener = server::bind(&config)
            .await
            .with_context(|| format!("cannot listen on {}", config.http.addr))?;
        let addr = listener.local_addr()?;
        let root = server::storage_name(&config);
        let debug = match &config.http.debug {
            Some(d) => Some(
                tokio::net::TcpListener::bind(d.addr.as_str())
                    .await
                    .with_context(|| format!("cannot listen on {} (http.debug.addr)", d.addr))?,
            ),
            None => None,
        };
        let app = App::new(config)?;
        tracing::info!(
            addr = %addr,
            root = %root,
            repositories = app.store.index().repo_count(),
            version = env!("CARGO_PKG_VERSION"),
            "listening on {addr}"
        );
        if let Some(listener) = debug {
            let addr = listener.local_addr()?;
            tracing::info!(addr = %addr, "operators' endpoints on {addr} (http.debug.addr)");
            tokio::spawn(server::serve_debug(
                app.clone(),
                listener,
                std::future::pending(),
            ));
        }
        server::serve(app, listener, shutdown_signal()).await;
        Ok(())
    })
}

async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
    tracing::info!("shutting down: draining requests in flight");
}

/// GET /healthz of the registry CONFIG describes, on loopback: plain HTTP,
/// or, with TLS, a connection accepted is enough (its certificate names the
/// public host, not 127.0.0.1).
fn healthcheck(config: PathBuf) -> anyhow::Result<()> {
    use std::time::Duration;
    let config = Config::load(&config)?;
    let port: u16 = config
        .http
        .addr
        .rsplit_once(':')
        .and_then(|(_, p)| p.parse().ok())
        .with_context(|| format!("http.addr {:?} names no port", config.http.addr))?;
    let addr = format!("127.0.0.1:{port}");
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let check = async {
            if config.http.tls.is_some() {
                tokio::net::TcpStream::connect(&addr).await?;
                return Ok(());
            }
            let target = std::sync::Arc::new(registry::client::Target::new(
                &format!("http://{addr}"),
                None,
                None,
            )?);
            let resp = registry::client::Conn::new(target)
                .send(
                    http::Method::GET,
                    "/healthz",
                    &[],
                    registry::client::Frames::empty(),
                )
                .await?;
            anyhow::ensure!(
                resp.status() == http::StatusCode::OK,
                "{addr} answered {} to /healthz",
                resp.status()
            );
            Ok(())
        };
        tokio::time::timeout(Duration::from_secs(5), check)
            .await
            .map_err(|_| anyhow::anyhow!("{addr} did not answer /healthz within 5 s"))?
    })
}
