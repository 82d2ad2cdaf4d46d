//! `GET /v2/<name>/referrers/<digest>`: an image index of the manifests
//! whose `subject` is the digest, optionally filtered by `artifactType`.

use http::{Request, Response, StatusCode};
use hyper::body::Incoming;
use serde_json::json;

use super::{json_response, query, query_param};
use crate::oci::{media, Digest, RepoName};
use crate::server::body::Body;
use crate::server::error::ApiError;
use crate::server::App;

pub(super) async fn list(
    app: &App,
    req: &Request<Incoming>,
    repo: RepoName,
    subject: Digest,
) -> Result<Response<Body>, ApiError> {
    let q = query(req);
    let artifact_type = query_param(&q, "artifactType")
        .filter(|t| !t.is_empty())
        .map(str::to_string);
    let filter = artifact_type.clone();
    // A referrer stored through another node is listed at once, as tags are.
    super::listings::catch_up(app).await?;
    let manifests = app
        .blocking(move |s| s.referrers(&repo, &subject, filter.as_deref()))
        .await?;
    let body = serde_json::to_vec(&json!({
        "schemaVersion": 2,
        "mediaType": media::OCI_INDEX,
        "manifests": manifests,
    }))
    .unwrap_or_default();
    let mut resp = json_response(StatusCode::OK, body, req.method());
    let h = resp.headers_mut();
    h.insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static(media::OCI_INDEX),
    );
    if artifact_type.is_some() {
        h.insert(
            "oci-filters-applied",
            http::HeaderValue::from_static("artifactType"),
        );
    }
    Ok(resp)
}
