//! `GET /v2/_catalog` and `GET /v2/<name>/tags/list`, from the index, with
//! `n`/`last` pagination and an RFC 5988 `Link` to the next page.

use http::{Request, Response, StatusCode};
use hyper::body::Incoming;
use serde_json::json;

use super::{json_response, query, query_param};
use crate::auth::{Action, Identity};
use crate::oci::{ErrorCode, RepoName};
use crate::server::body::Body;
use crate::server::error::ApiError;
use crate::server::App;

/// `n` as given, or `None` when absent.
fn page_size(q: &[(String, String)]) -> Result<Option<usize>, ApiError> {
    match query_param(q, "n") {
        None | Some("") => Ok(None),
        Some(v) => v.parse::<usize>().map(Some).map_err(|_| {
            ApiError::new(
                ErrorCode::PaginationNumberInvalid,
                format!("n={v:?} must be a non-negative integer"),
            )
        }),
    }
}

fn with_link(
    mut resp: Response<Body>,
    app: &App,
    path: &str,
    n: usize,
    last: Option<&str>,
) -> Response<Body> {
    if let Some(last) = last {
        let qs = form_urlencoded::Serializer::new(String::new())
            .append_pair("last", last)
            .append_pair("n", &n.to_string())
            .finish();
        let url = format!(
            "{}{}?{}",
            app.config.http.prefix.trim_end_matches('/'),
            path,
            qs
        );
        if let Ok(v) = http::HeaderValue::from_str(&format!("<{url}>; rel=\"next\"")) {
            resp.headers_mut().insert(http::header::LINK, v);
        }
    }
    resp
}

/// How long a listing waits for the index after a start.
const INDEX_WAIT: std::time::Duration = std::time::Duration::from_secs(20);

/// In a bucket shared by several nodes, hear what the others wrote before
/// this request arrived, so what any node stored is listed at once
/// (repositories, tags, referrers; one
/// listing of the notes, shared by concurrent requests; see
/// storage::changes). On a file system the index follows within a poll.
///
/// Right after a start the index may still be being built (pulls and
/// pushes do not need it): listings wait for it, and after a while answer
/// 503 with `Retry-After` rather than a partial list.
pub(in crate::server) async fn catch_up(app: &App) -> Result<(), ApiError> {
    let index = app.store.index();
    if !index.is_complete() && !index.wait_complete(INDEX_WAIT).await {
        return Err(ApiError::new(
            ErrorCode::StorageUnavailable,
            "the registry has just started and is still reading its list of repositories; try again shortly",
        )
        .with_header(http::header::RETRY_AFTER, "5"));
    }
    if app.store.listings_catch_up() {
        let arrived = std::time::Instant::now();
        app.blocking(move |s| s.catch_up_since(arrived)).await?;
    }
    Ok(())
}

/// The repositories the caller may pull, a page at a time.
pub(super) fn catalog(
    app: &App,
    req: &Request<Incoming>,
    who: &Identity,
) -> Result<Response<Body>, ApiError> {
    let q = query(req);
    let max = app.config.catalog.maxentries;
    let n = page_size(&q)?.unwrap_or(max).min(max);
    let last = query_param(&q, "last");
    let page = app.store.index().catalog(n, last, |repo| {
        app.auth.may(who, repo.as_str(), Action::Pull)
    });
    let names: Vec<&str> = page.items.iter().map(RepoName::as_str).collect();
    let body = serde_json::to_vec(&json!({ "repositories": names })).unwrap_or_default();
    let resp = json_response(StatusCode::OK, body, req.method());
    let next = page.more.then(|| names.last().copied()).flatten();
    Ok(with_link(resp, app, "/v2/_catalog", n, next))
}

pub(super) fn tags(
    app: &App,
    req: &Request<Incoming>,
    repo: &RepoName,
) -> Result<Response<Body>, ApiError> {
    let q = query(req);
    let n = page_size(&q)?.unwrap_or(usize::MAX);
    let last = query_param(&q, "last");
    let page = app.store.index().tags(repo, n, last).ok_or_else(|| {
        ApiError::new(
            ErrorCode::NameUnknown,
            "repository name not known to registry",
        )
        .with_detail(json!({ "name": repo.as_str() }))
    })?;
    let tags: Vec<&str> = page.items.iter().map(|t| t.as_str()).collect();
    let body =
        serde_json::to_vec(&json!({ "name": repo.as_str(), "tags": tags })).unwrap_or_default();
    let resp = json_response(StatusCode::OK, body, req.method());
    let next = page.more.then(|| tags.last().copied()).flatten();
    Ok(with_link(
        resp,
        app,
        &format!("/v2/{repo}/tags/list"),
        n,
        next,
    ))
}
