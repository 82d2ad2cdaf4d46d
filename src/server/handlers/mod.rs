//! One module per resource of the spec; this one sends each route and
//! method to its handler, and holds the helpers they share.

mod blobs;
mod listings;
mod manifests;
mod pull_through;
mod referrers;
mod uploads;

pub(super) use listings::catch_up;

use std::sync::Arc;

use http::{HeaderMap, Method, Request, Response, StatusCode};
use hyper::body::Incoming;

use super::body::{self, Body};
use super::error::ApiError;
use super::route::Route;
use super::{announce, App};
use crate::auth::Identity;
use crate::oci::ErrorCode;

pub(super) async fn route(
    app: &App,
    route: Route,
    req: Request<Incoming>,
    who: &Identity,
    peer: std::net::SocketAddr,
) -> Result<Response<Body>, ApiError> {
    let asked = app
        .notifier
        .is_some()
        .then(|| (announce::Asked::new(&req, peer, who), route.clone()));
    let m = req.method().clone();
    let mut result = answer(app, route, req, who).await;
    if let (Some((asked, route)), Ok(resp)) = (asked, &mut result) {
        let happened = announce::happened(&route, &m, resp);
        announce::announce(app, &asked, happened);
    }
    result
}

async fn answer(
    app: &App,
    route: Route,
    req: Request<Incoming>,
    who: &Identity,
) -> Result<Response<Body>, ApiError> {
    let m = req.method().clone();
    pull_through::refuse_writes(app, &route, &m)?;
    let _uploading = matches!(route, Route::UploadStart(_) | Route::Upload(..))
        .then(|| crate::server::metrics::UploadGauge::new(&app.metrics));
    match (route, &m) {
        (Route::Base, &Method::GET | &Method::HEAD) => {
            Ok(json_response(StatusCode::OK, b"{}".to_vec(), &m))
        }
        (Route::Base, _) => not_allowed("GET, HEAD"),
        (Route::Catalog, &Method::GET) => {
            listings::catch_up(app).await?;
            listings::catalog(app, &req, who)
        }
        (Route::Catalog, _) => not_allowed("GET"),
        (Route::Tags(repo), &Method::GET) => {
            let q = req.uri().query().unwrap_or("");
            if let Some(answer) = pull_through::tags(app, &repo, q).await {
                return answer;
            }
            listings::catch_up(app).await?;
            listings::tags(app, &req, &repo)
        }
        (Route::Tags(_), _) => not_allowed("GET"),
        (Route::Manifest(repo, r), &Method::GET | &Method::HEAD) => {
            manifests::get(app, &req, repo, r).await
        }
        (Route::Manifest(repo, r), &Method::PUT) => manifests::put(app, req, repo, r).await,
        (Route::Manifest(repo, r), &Method::DELETE) => manifests::delete(app, repo, r).await,
        (Route::Manifest(..), _) => not_allowed("GET, HEAD, PUT, DELETE"),
        (Route::Blob(repo, d), &Method::GET | &Method::HEAD) => {
            blobs::get(app, &req, repo, d).await
        }
        (Route::Blob(repo, d), &Method::DELETE) => blobs::delete(app, repo, d).await,
        (Route::Blob(..), _) => not_allowed("GET, HEAD, DELETE"),
        (Route::UploadStart(repo), &Method::POST) => uploads::start(app, req, repo, who).await,
        (Route::UploadStart(_), _) => not_allowed("POST"),
        (Route::Upload(repo, id), &Method::GET) => uploads::status(app, &req, repo, id).await,
        (Route::Upload(repo, id), &Method::PATCH) => uploads::patch(app, req, repo, id).await,
        (Route::Upload(repo, id), &Method::PUT) => uploads::put(app, req, repo, id).await,
        (Route::Upload(repo, id), &Method::DELETE) => uploads::cancel(app, repo, id).await,
        (Route::Upload(..), _) => not_allowed("GET, PATCH, PUT, DELETE"),
        (Route::Referrers(repo, d), &Method::GET) => referrers::list(app, &req, repo, d).await,
        (Route::Referrers(..), _) => not_allowed("GET"),
    }
}

fn not_allowed(allow: &'static str) -> Result<Response<Body>, ApiError> {
    Err(ApiError::new(
        ErrorCode::MethodNotAllowed,
        "method not allowed on this endpoint",
    )
    .with_header(http::header::ALLOW, allow))
}

/// A JSON response; HEAD gets the headers without the body.
pub(super) fn json_response(status: StatusCode, bytes: Vec<u8>, method: &Method) -> Response<Body> {
    let len = bytes.len();
    let body = if method == Method::HEAD {
        body::empty()
    } else {
        body::full(bytes)
    };
    let mut resp = Response::new(body);
    *resp.status_mut() = status;
    let h = resp.headers_mut();
    h.insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/json"),
    );
    h.insert(http::header::CONTENT_LENGTH, len.into());
    resp
}

/// The query parameters of a request, decoded.
pub(super) fn query(req: &Request<Incoming>) -> Vec<(String, String)> {
    req.uri()
        .query()
        .map(|q| form_urlencoded::parse(q.as_bytes()).into_owned().collect())
        .unwrap_or_default()
}

pub(super) fn query_param<'a>(q: &'a [(String, String)], key: &str) -> Option<&'a str> {
    q.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str())
}

fn header_str(headers: &HeaderMap, name: impl http::header::AsHeaderName) -> Option<&str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

fn content_length(headers: &HeaderMap) -> Option<u64> {
    header_str(headers, http::header::CONTENT_LENGTH).and_then(|v| v.trim().parse().ok())
}

/// Build a response; header values made by us are always valid.
fn respond(status: StatusCode, headers: &[(&str, String)]) -> Response<Body> {
    let mut resp = Response::new(body::empty());
    *resp.status_mut() = status;
    let h = resp.headers_mut();
    for (name, value) in headers {
        if let (Ok(n), Ok(v)) = (
            http::HeaderName::from_bytes(name.as_bytes()),
            http::HeaderValue::from_str(value),
        ) {
            h.insert(n, v);
        }
    }
    if !h.contains_key(http::header::CONTENT_LENGTH) {
        h.insert(http::header::CONTENT_LENGTH, 0.into());
    }
    resp
}

/// Follow what other processes on the same store change (storage::changes).
/// A failure is logged once until the storage answers again.
pub(super) async fn catch_up_loop(app: Arc<App>) {
    let mut failing = false;
    loop {
        tokio::time::sleep(crate::storage::changes::POLL).await;
        match app.blocking(|s| s.catch_up()).await {
            Ok(n) => {
                if failing {
                    tracing::info!("following other nodes' changes again");
                }
                failing = false;
                if n > 0 {
                    tracing::debug!(repositories = n, "read repositories changed elsewhere");
                }
            }
            Err(e) if !failing => {
                failing = true;
                tracing::warn!(error = %e.internal.unwrap_or(e.message), "cannot read other nodes' changes");
            }
            Err(_) => {}
        }
    }
}

/// The periodic upload purge of `storage.maintenance.uploadpurging`.
pub(super) async fn purge_loop(app: Arc<App>) {
    let cfg = app.config.storage.uploadpurging.clone();
    if !cfg.enabled || app.config.storage.readonly {
        return;
    }
    loop {
        let dry_run = cfg.dryrun;
        let age = cfg.age;
        match app.blocking(move |s| s.purge_uploads(age, dry_run)).await {
            Ok(r) if r.uploads + r.temp_files > 0 => tracing::info!(
                uploads = r.uploads,
                temp_files = r.temp_files,
                bytes = r.bytes,
                dry_run,
                "purged abandoned uploads"
            ),
            Ok(_) => {}
            Err(e) => {
                tracing::warn!(error = %e.internal.unwrap_or(e.message), "upload purge failed")
            }
        }
        tokio::time::sleep(cfg.interval).await;
    }
}
