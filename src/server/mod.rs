//! The HTTP layer: a hyper service that routes each request to the handler
//! of its resource, maps failures to the spec's errors in one place, adds
//! the headers every response carries, and writes one access-log line.
//!
//! Handlers read like the spec: parse, call the store, answer. Nothing here
//! touches the file system or hashes content.

pub mod body;
pub mod error;
mod handlers;
pub mod route;

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

use self::body::Body;
use self::error::ApiError;
use self::route::Route;
use crate::config::Config;
use crate::oci::ErrorCode;
use crate::storage::{StorageError, Store, StoreOptions, WriteMode};

/// How long a client may take to send its request headers (slowloris guard).
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(30);
/// How long shutdown waits for requests in flight.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(30);

/// Everything a handler needs, shared by all connections.
pub struct App {
    pub store: Arc<Store>,
    pub config: Config,
    /// Every response's fixed headers: the API version and `http.headers`.
    fixed_headers: HeaderMap,
}

impl App {
    /// Open the store named by the config and build the application.
    pub fn new(config: Config) -> Result<Arc<App>, StorageError> {
        let store = Store::open(
            &config.storage.rootdirectory,
            StoreOptions {
                delete_enabled: config.storage.delete_enabled,
                readonly: config.storage.readonly,
                write_mode: if config.storage.directwrites {
                    WriteMode::Direct
                } else {
                    WriteMode::Buffered
                },
            },
        )?;
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
            config,
            fixed_headers,
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
        let scheme = headers
            .get("x-forwarded-proto")
            .and_then(|h| h.to_str().ok())
            .filter(|p| *p == "https" || *p == "http")
            .unwrap_or("http");
        format!("{scheme}://{host}{path}")
    }
}

/// Serve until `shutdown` resolves, then drain requests in flight.
pub async fn serve(app: Arc<App>, listener: TcpListener, shutdown: impl Future<Output = ()>) {
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    let purge = tokio::spawn(handlers::purge_loop(app.clone()));
    tokio::pin!(shutdown);
    loop {
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
        let app = app.clone();
        let service = service_fn(move |req| handle(app.clone(), req, peer));
        let conn = hyper::server::conn::http1::Builder::new()
            .timer(TokioTimer::new())
            .header_read_timeout(HEADER_READ_TIMEOUT)
            .keep_alive(true)
            .serve_connection(TokioIo::new(stream), service);
        let conn = graceful.watch(conn);
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                tracing::debug!(%peer, error = %e, "connection ended with an error");
            }
        });
    }
    purge.abort();
    drop(listener);
    tokio::select! {
        () = graceful.shutdown() => tracing::info!("all connections closed"),
        () = tokio::time::sleep(DRAIN_TIMEOUT) => tracing::warn!("drain timed out; closing remaining connections"),
    }
}

async fn handle(
    app: Arc<App>,
    req: Request<Incoming>,
    peer: SocketAddr,
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
    let (route, result) = dispatch(&app, req).await;
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
    if app.config.log.accesslog {
        tracing::info!(
            target: "registry::access",
            remote = %peer,
            method = %method,
            uri = %uri,
            route = route,
            status = resp.status().as_u16(),
            duration_ms = start.elapsed().as_secs_f64() * 1e3,
            user_agent = %user_agent,
            "request"
        );
    }
    Ok(resp)
}

async fn dispatch(
    app: &App,
    req: Request<Incoming>,
) -> (&'static str, Result<Response<Body>, ApiError>) {
    let path = req.uri().path();
    let Some(rest) = path.strip_prefix(app.config.http.prefix.as_str()) else {
        return (
            "none",
            Err(ApiError::new(ErrorCode::NotFound, "no such API endpoint")),
        );
    };
    let route = match Route::parse(rest) {
        None => {
            return (
                "none",
                Err(ApiError::new(ErrorCode::NotFound, "no such API endpoint")),
            )
        }
        // A tag that cannot exist is simply unknown to a reader; only a
        // writer is told the name is invalid.
        Some(Err(e)) if e.code == ErrorCode::TagInvalid && req.method() != Method::PUT => {
            return (
                "manifest",
                Err(ApiError::new(
                    ErrorCode::ManifestUnknown,
                    format!("manifest unknown: {}", e.message),
                )),
            )
        }
        Some(Err(e)) => return ("invalid", Err(e)),
        Some(Ok(route)) => route,
    };
    let name = route.name();
    (name, handlers::route(app, route, req).await)
}

/// A response with no body and the given status.
pub fn status(code: StatusCode) -> http::response::Builder {
    Response::builder().status(code)
}

/// Bind the configured address.
pub async fn bind(config: &Config) -> std::io::Result<TcpListener> {
    TcpListener::bind(config.http.addr.as_str()).await
}
