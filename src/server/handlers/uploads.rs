//! `/v2/<name>/blobs/uploads/`: start (plain, monolithic with `?digest=`,
//! or a cross-repository mount), PATCH chunks, PUT to complete, GET status,
//! DELETE to cancel.

use http::{HeaderMap, Request, Response, StatusCode};
use hyper::body::Incoming;

use super::{content_length, header_str, query, query_param, respond};
use crate::auth::{Action, Identity};
use crate::notify::{self, Occurrence};
use crate::oci::{Digest, ErrorCode, RepoName};
use crate::server::announce::{self, record};
use crate::server::body::{drain, Body, RequestBody};
use crate::server::error::ApiError;
use crate::server::App;
use crate::storage::{StorageError, UploadId};

fn upload_headers(
    app: &App,
    headers: &HeaderMap,
    repo: &RepoName,
    id: &UploadId,
    size: u64,
) -> Vec<(&'static str, String)> {
    vec![
        (
            "location",
            app.url(
                headers,
                &format!("/v2/{repo}/blobs/uploads/{}", id.as_str()),
            ),
        ),
        // Distribution's form: "0-0" for an empty upload, else "0-<last byte>".
        ("range", format!("0-{}", size.saturating_sub(1))),
        ("docker-upload-uuid", id.as_str().to_string()),
    ]
}

fn blob_created(
    app: &App,
    headers: &HeaderMap,
    repo: &RepoName,
    digest: &Digest,
) -> Response<Body> {
    respond(
        StatusCode::CREATED,
        &[
            (
                "location",
                app.url(headers, &format!("/v2/{repo}/blobs/{digest}")),
            ),
            ("docker-content-digest", digest.to_string()),
        ],
    )
}

fn digest_param(q: &[(String, String)], key: &str) -> Result<Option<Digest>, ApiError> {
    match query_param(q, key) {
        None => Ok(None),
        Some(v) => v.parse().map(Some).map_err(|e| {
            ApiError::new(
                ErrorCode::DigestInvalid,
                format!("invalid digest {key}={v:?}: {e}"),
            )
        }),
    }
}

/// `Content-Range: <start>-<end>` of a chunk. Returns its start, after
/// checking it agrees with `Content-Length`.
fn chunk_start(headers: &HeaderMap) -> Result<Option<u64>, ApiError> {
    let Some(value) = header_str(headers, http::header::CONTENT_RANGE) else {
        return Ok(None);
    };
    let bad = || {
        ApiError::new(
            ErrorCode::ChunkOutOfOrder,
            format!("Content-Range {value:?} must have the form <start>-<end>"),
        )
    };
    let spec = value
        .trim()
        .trim_start_matches("bytes")
        .trim_start_matches(['=', ' ']);
    let (a, b) = spec.split_once('-').ok_or_else(bad)?;
    let start: u64 = a.trim().parse().map_err(|_| bad())?;
    let end: u64 = b
        .split('/')
        .next()
        .unwrap_or("")
        .trim()
        .parse()
        .map_err(|_| bad())?;
    if end < start {
        return Err(bad());
    }
    let covered = (end - start).checked_add(1).ok_or_else(bad)?;
    if let Some(len) = content_length(headers) {
        if len != covered {
            return Err(ApiError::new(
                ErrorCode::ChunkOutOfOrder,
                format!(
                    "Content-Range {value:?} covers {covered} bytes but Content-Length is {len}"
                ),
            ));
        }
    }
    Ok(Some(start))
}

/// A request that carries upload bytes: its headers and its body, which is
/// read off before an error answer unless the client is already gone.
struct ChunkRequest {
    headers: HeaderMap,
    src: RequestBody,
}

impl ChunkRequest {
    fn new(req: Request<Incoming>) -> ChunkRequest {
        let (parts, body) = req.into_parts();
        ChunkRequest {
            headers: parts.headers,
            src: RequestBody(body),
        }
    }

    /// The chunk's start from `Content-Range`, refusing a malformed one.
    async fn start(&mut self) -> Result<Option<u64>, ApiError> {
        match chunk_start(&self.headers) {
            Ok(s) => Ok(s),
            Err(e) => {
                drain(&mut self.src).await;
                Err(e)
            }
        }
    }

    async fn refuse(&mut self, e: StorageError) -> StorageError {
        if !matches!(e, StorageError::ClientGone(_)) {
            drain(&mut self.src).await;
        }
        e
    }
}

pub(super) async fn start(
    app: &App,
    req: Request<Incoming>,
    repo: RepoName,
    who: &Identity,
) -> Result<Response<Body>, ApiError> {
    let q = query(&req);
    let mut chunk = ChunkRequest::new(req);
    if let Some(mount) = digest_param(&q, "mount")? {
        // A `from` we cannot parse, or that the caller may not pull from,
        // cannot lend the blob: fall back to an upload.
        let from = query_param(&q, "from").and_then(|f| f.parse::<RepoName>().ok());
        let has_from = query_param(&q, "from").is_some();
        // Without `from`, any blob in the store could be linked by its digest
        // alone: only an open registry allows that.
        let readable = match &from {
            Some(f) => app.auth.may(who, f.as_str(), Action::Pull),
            None => app.auth.is_open(),
        };
        if (!has_from || from.is_some()) && readable {
            let (r, d, f) = (repo.clone(), mount.clone(), from.clone());
            if app
                .blocking(move |s| s.mount_blob(&r, &d, f.as_ref()))
                .await?
            {
                let mut resp = blob_created(app, &chunk.headers, &repo, &mount);
                if app.notifier.is_some() {
                    let d = mount.clone();
                    let size = app.blocking(move |s| s.blob_size(&d)).await?;
                    let mut o = Occurrence::new(notify::Action::Mount, repo.as_str())
                        .digest(&mount)
                        .media_type(announce::BLOB)
                        .size(size.unwrap_or(0));
                    if let Some(f) = &from {
                        o = o.from_repository(f.as_str());
                    }
                    record(&mut resp, o);
                }
                return Ok(resp);
            }
        }
    }
    // Parse before creating anything: a refused request leaves no session.
    let monolithic = digest_param(&q, "digest")?;
    let r = repo.clone();
    let id = app.blocking(move |s| s.create_upload(&r)).await?;
    if let Some(digest) = monolithic {
        // Monolithic upload: the whole blob in this one request.
        let result = app
            .store
            .complete_upload(&repo, &id, &digest, None, Some(&mut chunk.src))
            .await;
        let size = match result {
            Ok(size) => size,
            Err(e) => {
                let e = chunk.refuse(e).await;
                // The client has no Location to resume with: don't keep the partial.
                if !matches!(e, StorageError::DigestMismatch { .. }) {
                    let _ = app.store.cancel_upload(&repo, &id).await;
                }
                return Err(e.into());
            }
        };
        return Ok(pushed(app, &chunk.headers, &repo, &digest, size));
    }
    Ok(respond(
        StatusCode::ACCEPTED,
        &upload_headers(app, &chunk.headers, &repo, &id, 0),
    ))
}

pub(super) async fn patch(
    app: &App,
    req: Request<Incoming>,
    repo: RepoName,
    id: UploadId,
) -> Result<Response<Body>, ApiError> {
    let mut chunk = ChunkRequest::new(req);
    let start = chunk.start().await?;
    let result = app
        .store
        .append_upload(&repo, &id, start, &mut chunk.src)
        .await;
    let status = match result {
        Ok(s) => s,
        Err(e) => {
            let e = chunk.refuse(e).await;
            return Err(with_location(app, &chunk.headers, &repo, &id, e));
        }
    };
    Ok(respond(
        StatusCode::ACCEPTED,
        &upload_headers(app, &chunk.headers, &repo, &id, status.size),
    ))
}

pub(super) async fn put(
    app: &App,
    req: Request<Incoming>,
    repo: RepoName,
    id: UploadId,
) -> Result<Response<Body>, ApiError> {
    let q = query(&req);
    let digest = digest_param(&q, "digest")?.ok_or_else(|| {
        ApiError::new(
            ErrorCode::DigestInvalid,
            "the digest query parameter is required to complete an upload",
        )
    })?;
    let mut chunk = ChunkRequest::new(req);
    let start = chunk.start().await?;
    let result = app
        .store
        .complete_upload(&repo, &id, &digest, start, Some(&mut chunk.src))
        .await;
    let size = match result {
        Ok(size) => size,
        Err(e) => {
            let e = chunk.refuse(e).await;
            return Err(with_location(app, &chunk.headers, &repo, &id, e));
        }
    };
    Ok(pushed(app, &chunk.headers, &repo, &digest, size))
}

/// 201 for a blob just stored, which its response announces as pushed.
fn pushed(
    app: &App,
    headers: &HeaderMap,
    repo: &RepoName,
    digest: &Digest,
    size: u64,
) -> Response<Body> {
    let mut resp = blob_created(app, headers, repo, digest);
    record(
        &mut resp,
        Occurrence::new(notify::Action::Push, repo.as_str())
            .digest(digest)
            .media_type(announce::BLOB)
            .size(size),
    );
    resp
}

pub(super) async fn status(
    app: &App,
    req: &Request<Incoming>,
    repo: RepoName,
    id: UploadId,
) -> Result<Response<Body>, ApiError> {
    let status = app.store.upload_status(&repo, &id).await?;
    Ok(respond(
        StatusCode::NO_CONTENT,
        &upload_headers(app, req.headers(), &repo, &id, status.size),
    ))
}

pub(super) async fn cancel(
    app: &App,
    repo: RepoName,
    id: UploadId,
) -> Result<Response<Body>, ApiError> {
    app.store.cancel_upload(&repo, &id).await?;
    Ok(respond(StatusCode::NO_CONTENT, &[]))
}

/// An out-of-order chunk keeps the session: tell the client where it stands.
fn with_location(
    app: &App,
    headers: &HeaderMap,
    repo: &RepoName,
    id: &UploadId,
    e: StorageError,
) -> ApiError {
    let have = match &e {
        StorageError::ChunkOutOfOrder { have, .. } => Some(*have),
        _ => None,
    };
    let mut err = ApiError::from(e);
    if let Some(have) = have {
        for (name, value) in upload_headers(app, headers, repo, id, have) {
            if let Ok(n) = http::HeaderName::from_bytes(name.as_bytes()) {
                err.headers.retain(|(h, _)| *h != n);
                err = err.with_header(n, value);
            }
        }
    }
    err
}

#[cfg(test)]
mod properties {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn any_content_range_is_taken_or_refused(
            range in prop_oneof!["\\PC{0,40}", "(bytes[ =])?[0-9]{0,21}-[0-9]{0,21}(/[0-9*]{0,5})?"],
            length in proptest::option::of(prop_oneof!["[0-9]{0,21}", "\\PC{0,10}"]),
        ) {
            let mut headers = HeaderMap::new();
            let Ok(v) = http::HeaderValue::from_str(&range) else { return Ok(()) };
            headers.insert(http::header::CONTENT_RANGE, v);
            if let Some(l) = length.as_deref().and_then(|l| http::HeaderValue::from_str(l).ok()) {
                headers.insert(http::header::CONTENT_LENGTH, l);
            }
            if let Ok(Some(start)) = chunk_start(&headers) {
                // A start taken is the first number the header gave.
                let digits: String = range
                    .trim()
                    .trim_start_matches("bytes")
                    .trim_start_matches(['=', ' '])
                    .chars()
                    .take_while(|c| c.is_ascii_digit() || *c == ' ')
                    .filter(|c| c.is_ascii_digit())
                    .collect();
                prop_assert_eq!(digits.parse::<u64>().ok(), Some(start));
            }
        }
    }
}
