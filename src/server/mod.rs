//! The HTTP layer: a hyper service that routes each request to the handler
//! of its resource, maps failures to the spec's errors in one place, adds
//! the headers every response carries, and writes one access-log line.
//!
//! Handlers read like the spec: parse, call the store, answer. Nothing here
//! touches the file system or hashes content.

mod announce;
pub mod body;
pub mod error;
mod handlers;
pub mod metrics;
pub mod route;
mod sendfile;
pub mod tls;
mod web;

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use http::{HeaderMap, HeaderValue, Method, Request, Response, StatusCode};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tracing::Instrument;

use self::body::Body;
use self::error::ApiError;
use self::route::Route;
use crate::auth::{Action, Auth, Need};
use crate::config::Config;
use crate::oci::ErrorCode;
use crate::storage::{StorageError, Store, StoreOptions, WriteMode};

/// How long shutdown waits for requests in flight.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(30);

/// Everything a handler needs, shared by all connections.
pub struct App {
    pub store: Arc<Store>,
    pub auth: Auth,
    pub config: Config,
    tls: Option<tokio_rustls::TlsAcceptor>,
    pub metrics: metrics::Metrics,
    /// Numbers requests for their log span.
    next_request: std::sync::atomic::AtomicU64,
    /// Every response's fixed headers: the API version and `http.headers`.
    fixed_headers: HeaderMap,
    /// Signs the web page's sessions and forms.
    page_keys: web::session::Keys,
    /// What the page shows of each manifest, kept by digest.
    summaries: Arc<crate::browse::Summaries>,
    /// Where events go (`notifications`), if anywhere.
    notifier: Option<crate::notify::Notifier>,
    /// This registry, as its events name it.
    source: crate::notify::Source,
    /// Pull-through caches of upstream registries (`proxy`, `caches`).
    caches: crate::proxy::Caches,
}

impl App {
    /// Open the store named by the config and build the application.
    pub fn new(config: Config) -> Result<Arc<App>, StartError> {
        let auth = Auth::new(&config.auth).map_err(StartError::Auth)?;
        let tls = match &config.http.tls {
            Some(t) => Some(tokio_rustls::TlsAcceptor::from(
                tls::server_config(t).map_err(StartError::Tls)?,
            )),
            None => None,
        };
        let options = StoreOptions {
            delete_enabled: config.storage.delete_enabled,
            readonly: config.storage.readonly,
            write_mode: if config.storage.directwrites {
                WriteMode::Direct
            } else {
                WriteMode::Buffered
            },
            upload_memory: config.storage.uploadmemory,
            // Serve at once after a start; listings wait for the index.
            index_in_background: true,
        };
        let store = config
            .storage
            .open(options)
            .map_err(|source| StartError::Storage {
                root: storage_name(&config),
                source,
            })?;
        let mut fixed_headers = HeaderMap::new();
        fixed_headers.insert(
            "docker-distribution-api-version",
            HeaderValue::from_static("registry/2.0"),
        );
        for (name, value) in &config.http.headers {
            if let (Ok(n), Ok(v)) = (
                http::HeaderName::from_bytes(name.as_bytes()),
                HeaderValue::from_str(value),
            ) {
                fixed_headers.append(n, v);
            }
        }
        Ok(Arc::new(App {
            store,
            auth,
            tls,
            metrics: metrics::Metrics::default(),
            next_request: std::sync::atomic::AtomicU64::new(1),
            fixed_headers,
            page_keys: web::session::Keys::new(config.http.secret.as_deref()),
            summaries: Arc::default(),
            notifier: crate::notify::Notifier::start(&config.notifications)
                .map_err(|e| StartError::Notifications(format!("{e:#}")))?,
            caches: crate::proxy::Caches::new(&config.caches)
                .map_err(|e| StartError::Proxy(format!("{e:#}")))?,
            source: crate::notify::Source {
                addr: source_addr(&config.http.addr),
                instance_id: crate::notify::event::new_id(),
            },
            config,
        }))
    }

    /// Run blocking store work on the blocking pool.
    pub async fn blocking<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Store) -> Result<T, StorageError> + Send + 'static,
    ) -> Result<T, ApiError> {
        let store = self.store.clone();
        match tokio::task::spawn_blocking(move || f(&store)).await {
            Ok(r) => r.map_err(ApiError::from),
            Err(e) => {
                let mut err = ApiError::new(ErrorCode::Unknown, "internal error");
                err.internal = Some(format!("storage task failed: {e}"));
                Err(err)
            }
        }
    }

    /// The URL clients should use for `path` (which starts with `/v2/`),
    /// honouring `http.prefix`, `http.host` and `http.relativeurls`.
    pub fn url(&self, headers: &HeaderMap, path: &str) -> String {
        let path = format!("{}{}", self.config.http.prefix.trim_end_matches('/'), path);
        if self.config.http.relativeurls {
            return path;
        }
        if let Some(host) = &self.config.http.host {
            return format!("{host}{path}");
        }
        let host = headers
            .get(http::header::HOST)
            .and_then(|h| h.to_str().ok())
            .unwrap_or("localhost");
        // Behind a proxy, the scheme the client used; else this port's.
        let own = if self.tls.is_some() { "https" } else { "http" };
        let scheme = headers
            .get("x-forwarded-proto")
            .and_then(|h| h.to_str().ok())
            .filter(|p| *p == "https" || *p == "http")
            .unwrap_or(own);
        format!("{scheme}://{host}{path}")
    }
}

/// Why the server cannot start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("cannot open storage at {root}: {source}")]
    Storage { root: String, source: StorageError },
    #[error("auth: {0}")]
    Auth(String),
    #[error("tls: {0}")]
    Tls(String),
    #[error("notifications: {0}")]
    Notifications(String),
    #[error("proxy: {0}")]
    Proxy(String),
}

/// `hostname:port` of this registry, for its events' `source`.
fn source_addr(listen: &str) -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .unwrap_or_else(|_| "localhost".into());
    let port = listen.rsplit_once(':').map_or("5000", |(_, p)| p);
    format!("{host}:{port}")
}

/// Where the store lives, for messages: a directory, or `s3://bucket/root`.
pub fn storage_name(config: &Config) -> String {
    match &config.storage.s3 {
        Some(s3) => format!("s3://{}/{}", s3.bucket, s3.root_key()),
        None => config.storage.rootdirectory.display().to_string(),
    }
}

/// Serve until `shutdown` resolves, then drain requests in flight.
pub async fn serve(app: Arc<App>, listener: TcpListener, shutdown: impl Future<Output = ()>) {
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    let purge = tokio::spawn(handlers::purge_loop(app.clone()));
    let catch_up = tokio::spawn(handlers::catch_up_loop(app.clone()));
    // Connections past the limit wait in the listen backlog.
    let slots = Arc::new(tokio::sync::Semaphore::new(app.config.http.max_connections));
    tokio::pin!(shutdown);
    loop {
        let slot = tokio::select! {
            slot = slots.clone().acquire_owned() => slot.expect("semaphore never closed"),
            () = &mut shutdown => break,
        };
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    // Out of file descriptors and the like: wait, don't spin.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let _ = stream.set_nodelay(true);
        let open = app.config.http.max_connections - slots.available_permits();
        let read_buffer = match open <= FEW_CONNECTIONS {
            true => READ_BUFFER,
            false => 0,
        };
        let app = app.clone();
        let watcher = graceful.watcher();
        tokio::spawn(async move {
            let _slot = slot;
            match app.tls.clone() {
                None if app.config.http.sendfile => {
                    let sent = app.metrics.bytes_sendfile.clone();
                    let (io, queue) = sendfile::SendfileIo::new(stream, sent);
                    serve_connection(app, io, peer, watcher, Some(queue), read_buffer).await
                }
                None => {
                    let io = TokioIo::new(stream);
                    serve_connection(app, io, peer, watcher, None, read_buffer).await
                }
                Some(acceptor) => {
                    let timeout = app.config.http.header_timeout;
                    let Some(tls) = tls_handshake(acceptor, stream, peer, timeout).await else {
                        return;
                    };
                    serve_connection(app, TokioIo::new(tls), peer, watcher, None, read_buffer).await
                }
            }
        });
    }
    purge.abort();
    catch_up.abort();
    drop(listener);
    tokio::select! {
        () = graceful.shutdown() => tracing::info!("all connections closed"),
        () = tokio::time::sleep(DRAIN_TIMEOUT) => tracing::warn!("drain timed out; closing remaining connections"),
    }
}

/// The most a connection reads from its socket at once while the server
/// has few clients (`FEW_CONNECTIONS`), and so the largest piece of a
/// request body handed on; otherwise the head limit. Each piece is a
/// wake-up of the request's task, and on these machines a wake-up is
/// costly: a 1 GiB push took 1.66 s of server CPU read in 64 KiB pieces,
/// 1.19-1.23 s in 256 or 512 KiB and 1.10 s in 1 MiB (BENCHMARKS.md). But
/// a connection keeps its buffer, which grows to this while its client
/// sends faster than the disk takes it: with 1 MiB for every connection,
/// 64 uploads at once peaked at 204 MiB, against 59 MiB; with 1 MiB for
/// the first four, at 71 MiB, more than Distribution's 56; with 512 KiB
/// for the first two, at 55 MiB.
const READ_BUFFER: usize = 512 << 10;
/// Connections open (this one included) up to which a new one reads in
/// `READ_BUFFER` pieces: two, so that a client's next connection gets it
/// even before the server has seen its last one close.
const FEW_CONNECTIONS: usize = 2;

/// HTTP/1.1 on one connection, with the header size and time limits.
/// `files`: the connection's queue of file ranges when its socket sends
/// them with `sendfile` (plain TCP), for the blob handler to use;
/// `read_buffer`: the most it reads at once, if more than the head limit.
async fn serve_connection<I>(
    app: Arc<App>,
    io: I,
    peer: SocketAddr,
    watcher: hyper_util::server::graceful::Watcher,
    files: Option<sendfile::FileQueue>,
    read_buffer: usize,
) where
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let http = &app.config.http;
    // hyper refuses a head larger than its buffer; past the head limit,
    // only a larger buffer leaves the check to the handler.
    let check_head = read_buffer > http.max_header_bytes;
    let conn = hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(http.header_timeout)
        .max_buf_size(http.max_header_bytes.max(read_buffer))
        .keep_alive(true)
        // A client may shut down its sending side once its request is sent
        // (`nc -N`, some proxies): it still gets its answer, as from
        // Distribution. A body cut short is still an error.
        .half_close(true)
        .serve_connection(
            io,
            service_fn({
                let app = app.clone();
                move |mut req: Request<Incoming>| {
                    if let Some(files) = &files {
                        req.extensions_mut().insert(files.clone());
                    }
                    handle(app.clone(), req, peer, check_head)
                }
            }),
        );
    if let Err(e) = watcher.watch(conn).await {
        tracing::debug!(%peer, error = %e, "connection ended with an error");
    }
}

/// The size of a request's head, as sent: the request line and every
/// header line.
fn head_bytes(req: &Request<Incoming>) -> usize {
    let uri = req.uri();
    let target = uri.path_and_query().map_or(0, |p| p.as_str().len())
        + uri.authority().map_or(0, |a| a.as_str().len());
    let line = req.method().as_str().len() + 1 + target + " HTTP/1.1\r\n".len();
    let fields: usize = req
        .headers()
        .iter()
        .map(|(name, value)| name.as_str().len() + ": \r\n".len() + value.len())
        .sum();
    line + fields + "\r\n".len()
}

/// The TLS handshake, bounded by the header timeout. A client that speaks
/// plain HTTP to this port gets a plain answer saying so, not a TLS alert
/// it cannot read.
async fn tls_handshake(
    acceptor: tokio_rustls::TlsAcceptor,
    mut stream: tokio::net::TcpStream,
    peer: SocketAddr,
    timeout: Duration,
) -> Option<tokio_rustls::server::TlsStream<tokio::net::TcpStream>> {
    let mut first = [0u8; 1];
    match tokio::time::timeout(timeout, stream.peek(&mut first)).await {
        Ok(Ok(1)) if first[0] != 0x16 => {
            use tokio::io::AsyncWriteExt;
            let _ = stream.write_all(tls::PLAIN_HTTP_REFUSAL).await;
            let _ = stream.shutdown().await;
            tracing::debug!(%peer, "plain HTTP on the TLS port refused");
            return None;
        }
        Ok(Ok(1)) => {}
        _ => return None,
    }
    match tokio::time::timeout(timeout, acceptor.accept(stream)).await {
        Ok(Ok(tls)) => Some(tls),
        Ok(Err(e)) => {
            tracing::debug!(%peer, error = %e, "TLS handshake failed");
            None
        }
        Err(_) => None,
    }
}

/// One request. `check_head`: the connection reads in pieces larger than
/// the head limit, so the limit is enforced here.
async fn handle(
    app: Arc<App>,
    req: Request<Incoming>,
    peer: SocketAddr,
    check_head: bool,
) -> Result<Response<Body>, Infallible> {
    let start = Instant::now();
    let method = req.method().clone();
    let uri = req.uri().clone();
    let user_agent = req
        .headers()
        .get(http::header::USER_AGENT)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    let head = method == Method::HEAD;
    let has_body = !hyper::body::Body::is_end_stream(req.body());
    let declared_in = req
        .headers()
        .get(http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok()?.parse::<u64>().ok())
        .unwrap_or(0);
    // Every line logged while answering carries the request's number and,
    // once known, its route.
    let id = app
        .next_request
        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let span = tracing::info_span!("request", id, route = tracing::field::Empty);
    let oversized = check_head && head_bytes(&req) > app.config.http.max_header_bytes;
    let (route, user, result) = match operator_endpoint(&app, req.uri().path(), Port::Api) {
        // A connection may read in pieces larger than the head limit (see
        // `READ_BUFFER`), so a head between the two is refused here, as
        // hyper refuses one larger than its buffer: 431, and the
        // connection closed.
        _ if oversized => {
            let mut resp = Response::new(body::empty());
            *resp.status_mut() = StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE;
            resp.headers_mut()
                .insert(http::header::CONNECTION, HeaderValue::from_static("close"));
            ("oversized", "-".to_string(), Ok(resp))
        }
        Some(resp) => {
            span.record("route", "operator");
            ("operator", "-".to_string(), Ok(resp))
        }
        None => dispatch(&app, req, peer).instrument(span.clone()).await,
    };
    let _entered = span.enter();
    let mut resp = match result {
        Ok(r) => r,
        Err(e) => {
            if e.status().is_server_error() {
                tracing::error!(
                    method = %method, uri = %uri, code = e.code.code(),
                    error = e.internal.as_deref().unwrap_or(&e.message),
                    "request failed"
                );
            }
            let mut resp = e.into_response(!head);
            if has_body {
                // The body may be unread: this connection cannot carry
                // another request, so say so rather than let the client
                // find out by writing into a closed socket.
                resp.headers_mut()
                    .insert(http::header::CONNECTION, HeaderValue::from_static("close"));
            }
            resp
        }
    };
    for (name, value) in &app.fixed_headers {
        resp.headers_mut().append(name, value.clone());
    }
    let m = &app.metrics;
    m.record(route, &method, resp.status().as_u16(), start.elapsed());
    m.bytes_in
        .fetch_add(declared_in, std::sync::atomic::Ordering::Relaxed);
    let written = match head {
        true => 0,
        false => resp
            .headers()
            .get(http::header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok()?.parse::<u64>().ok())
            .unwrap_or(0),
    };
    m.bytes_out
        .fetch_add(written, std::sync::atomic::Ordering::Relaxed);
    if app.config.log.accesslog {
        // Distribution's field names and message, so that log pipelines
        // built for it read these lines too.
        tracing::event!(
            target: "registry::access",
            tracing::Level::INFO,
            http.request.remoteaddr = %peer,
            http.request.method = %method,
            http.request.uri = %uri,
            http.request.useragent = %user_agent,
            auth.user.name = %user,
            http.response.status = resp.status().as_u16(),
            http.response.written = written,
            http.response.duration = ?start.elapsed(),
            route = route,
            "response completed"
        );
    }
    Ok(resp)
}

async fn dispatch(
    app: &App,
    req: Request<Incoming>,
    peer: SocketAddr,
) -> (&'static str, String, Result<Response<Body>, ApiError>) {
    let path = req.uri().path();
    let not_found = || ApiError::new(ErrorCode::NotFound, "no such API endpoint");
    let Some(rest) = path.strip_prefix(app.config.http.prefix.as_str()) else {
        return ("none", "-".into(), Err(not_found()));
    };
    let parsed = Route::parse(rest);
    if parsed.is_none() && web::handles(app, rest) {
        tracing::Span::current().record("route", "people");
        let rest = rest.to_string();
        return web::route(app, req, peer, &rest).await;
    }
    let span_route = match &parsed {
        Some(Ok(route)) => route.name(),
        Some(Err(_)) => "invalid",
        None => "none",
    };
    tracing::Span::current().record("route", span_route);
    // Who is asking comes first: a stranger learns nothing, not even
    // whether a name is valid.
    let identity = match app
        .auth
        .authenticate(req.headers().get(http::header::AUTHORIZATION), peer.ip())
        .await
    {
        Ok(id) => id,
        Err(e) => return ("auth", "-".into(), Err(e.into())),
    };
    let user = identity.name().to_string();
    let route = match parsed {
        None => return ("none", user, Err(not_found())),
        // A tag that cannot exist is simply unknown to a reader; only a
        // writer is told the name is invalid.
        Some(Err(e)) if e.code == ErrorCode::TagInvalid && req.method() != Method::PUT => {
            let e = ApiError::new(
                ErrorCode::ManifestUnknown,
                format!("manifest unknown: {}", e.message),
            );
            return ("manifest", user, Err(e));
        }
        Some(Err(e)) => return ("invalid", user, Err(e)),
        Some(Ok(route)) => route,
    };
    if let Err(e) = app.auth.authorize(&identity, need(&route, req.method())) {
        return (route.name(), user, Err(e.into()));
    }
    let name = route.name();
    (
        name,
        user,
        handlers::route(app, route, req, &identity, peer).await,
    )
}

/// Which listener a request came in on.
#[derive(Clone, Copy, PartialEq)]
enum Port {
    /// The API's address (`http.addr`).
    Api,
    /// The operators' address (`http.debug.addr`).
    Debug,
}

/// `/metrics` (Prometheus text), `/healthz` (the process answers) and
/// `/readyz` (the storage root is there): outside the API, without login,
/// as load balancers and scrapers expect. With `http.debug.addr` set the
/// metrics are served only there, at its configured path.
fn operator_endpoint(app: &App, path: &str, port: Port) -> Option<Response<Body>> {
    let metrics_path = match (&app.config.http.debug, port) {
        (None, Port::Api) => Some("/metrics"),
        (Some(debug), Port::Debug) => debug.metrics_path.as_deref(),
        _ => None,
    };
    let (status, content_type, text) = match path {
        p if Some(p) == metrics_path => {
            let mut text = app.metrics.render();
            if let Some(n) = &app.notifier {
                n.render_metrics(&mut text);
            }
            app.caches.render_metrics(&mut text);
            (StatusCode::OK, "text/plain; version=0.0.4", text)
        }
        "/healthz" => (StatusCode::OK, "text/plain", "ok\n".to_string()),
        "/readyz" => {
            if app.store.ready() {
                let text = if app.store.index().is_complete() {
                    "ready\n".to_string()
                } else {
                    // Pulls and pushes are served; listings wait for it.
                    "ready; the index of repositories is still being built\n".to_string()
                };
                (StatusCode::OK, "text/plain", text)
            } else {
                (
                    StatusCode::SERVICE_UNAVAILABLE,
                    "text/plain",
                    "storage root unavailable\n".to_string(),
                )
            }
        }
        _ if port == Port::Debug => (StatusCode::NOT_FOUND, "text/plain", "not found\n".into()),
        _ => return None,
    };
    let mut resp = Response::new(body::full(text.clone()));
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        http::header::CONTENT_TYPE,
        HeaderValue::from_static(content_type),
    );
    resp.headers_mut()
        .insert(http::header::CONTENT_LENGTH, HeaderValue::from(text.len()));
    Some(resp)
}

/// Serve the operators' endpoints on `http.debug.addr` until `shutdown`.
/// Few clients, tiny answers: no connection limit, no draining.
pub async fn serve_debug(app: Arc<App>, listener: TcpListener, shutdown: impl Future<Output = ()>) {
    tokio::pin!(shutdown);
    loop {
        let (stream, _) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    tracing::warn!(error = %e, "accept failed on the debug address");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut shutdown => return,
        };
        let app = app.clone();
        tokio::spawn(async move {
            let service = service_fn(move |req: Request<Incoming>| {
                let resp = operator_endpoint(&app, req.uri().path(), Port::Debug);
                async move { Ok::<_, Infallible>(resp.expect("the debug port answers every path")) }
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(Duration::from_secs(10))
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

/// What a route and method need of the caller.
fn need<'a>(route: &'a Route, method: &Method) -> Need<'a> {
    let write = |repo| match *method {
        Method::DELETE => Need::Repo(repo, Action::Delete),
        Method::GET | Method::HEAD => Need::Repo(repo, Action::Pull),
        _ => Need::Repo(repo, Action::Push),
    };
    match route {
        Route::Base => Need::Base,
        Route::Catalog => Need::Catalog,
        Route::Tags(repo) | Route::Referrers(repo, _) => Need::Repo(repo, Action::Pull),
        Route::Manifest(repo, _) | Route::Blob(repo, _) => write(repo),
        // Every step of an upload, its status included, is part of a push.
        Route::UploadStart(repo) | Route::Upload(repo, _) => match *method {
            Method::GET | Method::HEAD | Method::DELETE => Need::Repo(repo, Action::Push),
            _ => write(repo),
        },
    }
}

/// Bind the configured address.
pub async fn bind(config: &Config) -> std::io::Result<TcpListener> {
    TcpListener::bind(config.http.addr.as_str()).await
}
