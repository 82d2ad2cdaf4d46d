//! The pull-through cache's part in the handlers: a manifest made current
//! before it is served, writes refused, the cache's failures as the spec's
//! errors. (Blobs: `blobs::pull_through`.)

use http::Method;

use crate::oci::{ErrorCode, Reference, RepoName};
use crate::proxy::ProxyError;
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
