//! `/v2/<name>/manifests/<reference>`: GET and HEAD with `Accept`
//! negotiation, PUT with reference checks, DELETE of a manifest or a tag.

use http::{Method, Request, Response, StatusCode};
use hyper::body::Incoming;
use serde_json::json;

use super::{content_length, header_str, respond};
use crate::notify::{Action, Occurrence};
use crate::oci::{media, ErrorCode, Reference, RepoName};
use crate::server::announce::record;
use crate::server::body::{self, read_limited, Body};
use crate::server::error::ApiError;
use crate::server::App;

pub(super) async fn get(
    app: &App,
    req: &Request<Incoming>,
    repo: RepoName,
    reference: Reference,
) -> Result<Response<Body>, ApiError> {
    super::pull_through::manifest(app, &repo, &reference).await?;
    let head = req.method() == Method::HEAD;
    let (r, repo_name) = (reference.clone(), repo.clone());
    let (digest, size, media_type, bytes) = if head {
        let (d, size, mt) = app.blocking(move |s| s.stat_manifest(&repo, &r)).await?;
        (d, size, mt, None)
    } else {
        let m = app.blocking(move |s| s.get_manifest(&repo, &r)).await?;
        (m.digest, m.bytes.len() as u64, m.media_type, Some(m.bytes))
    };
    if let Some(cache) = app.caches.for_repo(&repo_name) {
        cache.note_pulled(&app.store, &repo_name, &digest);
    }
    let accept: Vec<&str> = req
        .headers()
        .get_all(http::header::ACCEPT)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .collect();
    if !media::accepts(accept.iter().copied(), media_type) {
        return Err(ApiError::new(
            ErrorCode::ManifestUnknown,
            format!(
                "manifest {reference} is {media_type}, which the request's Accept header does not include"
            ),
        )
        .with_detail(json!({ "mediaType": media_type })));
    }
    let mut resp = respond(
        StatusCode::OK,
        &[
            ("content-type", media_type.to_string()),
            ("content-length", size.to_string()),
            ("docker-content-digest", digest.to_string()),
            ("etag", format!("\"{digest}\"")),
        ],
    );
    if let Some(bytes) = bytes {
        *resp.body_mut() = body::full(bytes);
    }
    Ok(resp)
}

pub(super) async fn put(
    app: &App,
    req: Request<Incoming>,
    repo: RepoName,
    reference: Reference,
) -> Result<Response<Body>, ApiError> {
    let (parts, body) = req.into_parts();
    let content_type = header_str(&parts.headers, http::header::CONTENT_TYPE).map(str::to_string);
    let declared = content_length(&parts.headers);
    let limit = app.config.http.max_manifest_bytes;
    let bytes = read_limited(body, declared, limit).await?;
    let size = bytes.len() as u64;
    let (r, reff) = (repo.clone(), reference.clone());
    let put = app
        .blocking(move |s| s.put_manifest(&r, &reff, &bytes, content_type.as_deref()))
        .await?;
    let mut headers = vec![
        (
            "location",
            app.url(
                &parts.headers,
                &format!("/v2/{repo}/manifests/{}", put.digest),
            ),
        ),
        ("docker-content-digest", put.digest.to_string()),
    ];
    if let Some(subject) = &put.subject {
        headers.push(("oci-subject", subject.to_string()));
    }
    let mut resp = respond(StatusCode::CREATED, &headers);
    let mut pushed = Occurrence::new(Action::Push, repo.as_str())
        .digest(&put.digest)
        .media_type(put.media_type)
        .size(size);
    if let Reference::Tag(t) = &reference {
        pushed = pushed.tag(t.as_str());
    }
    record(&mut resp, pushed);
    Ok(resp)
}

pub(super) async fn delete(
    app: &App,
    repo: RepoName,
    reference: Reference,
) -> Result<Response<Body>, ApiError> {
    let mut deleted = vec![];
    let (r, reff) = (repo.clone(), reference.clone());
    match reff {
        Reference::Digest(d) => {
            // The tags it takes along, each announced as deleted too.
            for t in app.store.index().tags_pointing_at(&repo, &d) {
                deleted.push(Occurrence::new(Action::Delete, repo.as_str()).tag(t.as_str()));
            }
            deleted.insert(0, Occurrence::new(Action::Delete, repo.as_str()).digest(&d));
            app.blocking(move |s| s.delete_manifest(&r, &d)).await?
        }
        Reference::Tag(t) => {
            deleted.push(Occurrence::new(Action::Delete, repo.as_str()).tag(t.as_str()));
            app.blocking(move |s| s.delete_tag(&r, &t)).await?
        }
    }
    let mut resp = respond(StatusCode::ACCEPTED, &[]);
    for o in deleted {
        record(&mut resp, o);
    }
    Ok(resp)
}
