//! `docker search` and `podman search`: `GET /v1/_ping` and
//! `GET /v1/search?q=&n=&page=`, the v1 endpoints the docker daemon still
//! calls, answered from the index and filtered by the caller's pull rights.
//! Every answer here is JSON, errors included: the daemon decodes whatever
//! it gets.

use std::net::SocketAddr;

use http::{HeaderValue, Method, Request, Response, StatusCode};
use hyper::body::Incoming;
use serde::Serialize;

use super::json_response;
use crate::auth::Action;
use crate::browse;
use crate::oci::ErrorCode;
use crate::server::body::Body;
use crate::server::error::ApiError;
use crate::server::App;

/// The daemon's default, and the largest page it asks for.
const DEFAULT_LIMIT: usize = 25;
const MAX_LIMIT: usize = 100;

#[derive(Serialize)]
struct Results<'a> {
    query: &'a str,
    num_results: usize,
    page: usize,
    page_size: usize,
    num_pages: usize,
    results: Vec<Repository>,
}

#[derive(Serialize)]
struct Repository {
    name: String,
    description: String,
    star_count: u32,
    is_official: bool,
    is_automated: bool,
}

pub(super) async fn route(
    app: &App,
    req: Request<Incoming>,
    peer: SocketAddr,
    path: &str,
) -> (&'static str, String, Result<Response<Body>, ApiError>) {
    let get = matches!(*req.method(), Method::GET | Method::HEAD);
    match path {
        "v1/_ping" | "v1/_ping/" if get => ("ping", "-".into(), Ok(ping(req.method()))),
        "v1/search" | "v1/search/" if get => {
            let who = match app
                .auth
                .authenticate_person(req.headers().get(http::header::AUTHORIZATION), peer.ip())
                .await
            {
                Ok(who) => who,
                Err(e) => return ("search", "-".into(), Err(e.into())),
            };
            let user = who.name().to_string();
            let answer = match crate::server::handlers::catch_up(app).await {
                Ok(()) => search(app, &req, |repo| app.auth.may(&who, repo, Action::Pull)),
                Err(e) => Err(e),
            };
            ("search", user, answer)
        }
        "v1/_ping" | "v1/_ping/" | "v1/search" | "v1/search/" => (
            "search",
            "-".into(),
            Err(ApiError::new(
                ErrorCode::MethodNotAllowed,
                "method not allowed on this endpoint",
            )
            .with_header(http::header::ALLOW, "GET, HEAD")),
        ),
        _ => (
            "none",
            "-".into(),
            Err(ApiError::new(
                ErrorCode::NotFound,
                "no such endpoint: of the v1 API this registry answers /v1/_ping and /v1/search",
            )),
        ),
    }
}

/// The v1 version check: a standalone registry (not an index), so the
/// daemon sends the saved login with its search over TLS.
fn ping(method: &Method) -> Response<Body> {
    let mut resp = json_response(StatusCode::OK, br#"{"standalone":true}"#.to_vec(), method);
    let h = resp.headers_mut();
    h.insert(
        "x-docker-registry-version",
        HeaderValue::from_static("0.6.0"),
    );
    h.insert(
        "x-docker-registry-standalone",
        HeaderValue::from_static("true"),
    );
    resp
}

fn number(
    q: &[(String, String)],
    key: &str,
    default: usize,
    max: usize,
) -> Result<usize, ApiError> {
    match super::query_param(q, key) {
        None | Some("") => Ok(default),
        Some(v) => v
            .parse::<usize>()
            .ok()
            .filter(|n| (1..=max).contains(n))
            .ok_or_else(|| {
                ApiError::new(
                    ErrorCode::PaginationNumberInvalid,
                    format!("{key}={v:?} must be a number from 1 to {max}"),
                )
            }),
    }
}

fn search(
    app: &App,
    req: &Request<Incoming>,
    visible: impl Fn(&str) -> bool,
) -> Result<Response<Body>, ApiError> {
    let q = super::query(req);
    let query = super::query_param(&q, "q").unwrap_or("");
    let n = number(&q, "n", DEFAULT_LIMIT, MAX_LIMIT)?;
    let page = number(&q, "page", 1, usize::MAX / MAX_LIMIT)?;
    let found = browse::search(app.store.index(), query, |r| visible(r.as_str()), page, n);
    let results = found
        .items
        .into_iter()
        .map(|(name, _)| Repository {
            name: name.to_string(),
            description: String::new(),
            star_count: 0,
            is_official: false,
            is_automated: false,
        })
        .collect();
    let body = serde_json::to_vec(&Results {
        query,
        num_results: found.total,
        page,
        page_size: n,
        num_pages: found.total.div_ceil(n),
        results,
    })
    .unwrap_or_default();
    let resp = json_response(StatusCode::OK, body, req.method());
    Ok(resp)
}
