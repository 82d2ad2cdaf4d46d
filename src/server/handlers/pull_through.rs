//! The pull-through cache's part in the handlers: a manifest made current
//! before it is served, writes refused, the cache's failures as the spec's
//! errors. (Blobs: `blobs::pull_through`.)

use http::Method;

use crate::oci::{ErrorCode, Reference, RepoName};
use crate::proxy::ProxyError;
use http::Response;

use crate::server::body::Body;
use crate::server::error::ApiError;
use crate::server::route::Route;
use crate::server::App;

/// A cache failure as an answer: what the upstream lacks is unknown
/// (`unknown`: MANIFEST_UNKNOWN or BLOB_UNKNOWN); an upstream that cannot be
/// asked is 503 with its reason and its `Retry-After`.
pub(super) fn error(e: ProxyError, unknown: ErrorCode) -> ApiError {
    match e {
        ProxyError::NotFound(what) => {
            ApiError::new(unknown, format!("{what}: the upstream has none"))
        }
        ProxyError::Unavailable {
            upstream,
            why,
            retry_after,
        } => ApiError::new(
            ErrorCode::StorageUnavailable,
            format!("not cached here, and the upstream {upstream} cannot be asked: {why}"),
        )
        .with_header(
            http::header::RETRY_AFTER,
            retry_after.unwrap_or_else(|| "5".into()),
        ),
        ProxyError::Storage(e) => e.into(),
    }
}

/// Before a manifest is served: fetched or confirmed with the upstream.
pub(super) async fn manifest(
    app: &App,
    repo: &RepoName,
    reference: &Reference,
) -> Result<(), ApiError> {
    let Some(cache) = app.caches.for_repo(repo) else {
        return Ok(());
    };
    cache
        .ensure_manifest(&app.store, repo, reference)
        .await
        .map_err(|e| error(e, ErrorCode::ManifestUnknown))
}

/// The tags of a cached repository, as the upstream lists them (its
/// `n` and `last` passed on); `None` if no cache serves `repo`, or the
/// upstream cannot be asked (then the cached tags are listed).
pub(super) async fn tags(
    app: &App,
    repo: &RepoName,
    query: &str,
) -> Option<Result<Response<Body>, ApiError>> {
    let cache = app.caches.for_repo(repo)?;
    match cache.tags(repo, query).await {
        Ok((tags, more)) => {
            let body =
                serde_json::to_vec(&serde_json::json!({ "name": repo.as_str(), "tags": tags }))
                    .unwrap_or_default();
            let mut resp = super::json_response(http::StatusCode::OK, body, &Method::GET);
            if let (true, Some(last)) = (more, tags.last()) {
                let n = form_urlencoded::parse(query.as_bytes())
                    .find(|(k, _)| k == "n")
                    .map(|(_, v)| v.into_owned());
                let mut qs = form_urlencoded::Serializer::new(String::new());
                qs.append_pair("last", last);
                if let Some(n) = n {
                    qs.append_pair("n", &n);
                }
                let link = format!(
                    "<{}/v2/{repo}/tags/list?{}>; rel=\"next\"",
                    app.config.http.prefix.trim_end_matches('/'),
                    qs.finish()
                );
                if let Ok(v) = http::HeaderValue::from_str(&link) {
                    resp.headers_mut().insert(http::header::LINK, v);
                }
            }
            Some(Ok(resp))
        }
        Err(ProxyError::NotFound(what)) => Some(Err(error(
            ProxyError::NotFound(what),
            ErrorCode::NameUnknown,
        ))),
        Err(e) => {
            tracing::warn!(repository = %repo, reason = %e, "listing the cached tags: the upstream cannot be asked");
            None
        }
    }
}

/// A cache of another registry takes no pushes or deletes, as
/// Distribution's: the upstream is where content changes. Repositories no
/// cache serves take them as always.
pub(super) fn refuse_writes(app: &App, route: &Route, method: &Method) -> Result<(), ApiError> {
    let repo = match route {
        Route::UploadStart(r) | Route::Upload(r, _) => r,
        Route::Manifest(r, _) | Route::Blob(r, _)
            if !matches!(*method, Method::GET | Method::HEAD) =>
        {
            r
        }
        _ => return Ok(()),
    };
    match app.caches.for_repo(repo) {
        Some(cache) => Err(ApiError::new(
            ErrorCode::Unsupported,
            format!(
                "{repo} is served from a pull-through cache of {}: push and delete there",
                cache.upstream()
            ),
        )),
        None => Ok(()),
    }
}
