//! What people use rather than image clients: `docker search` (`/v1/`),
//! and the web page at `/` (repositories, tags, images; signing in; deleting
//! a tag). Pages are rendered here from the index and the manifests of the
//! one repository shown: a browser never sends one request per tag, and
//! works with scripts off. Rights are the registry's own.

mod browsing;
mod delete;
mod pages;
mod search;
pub mod session;
mod signin;

use std::net::SocketAddr;

use askama::Template;
use http::{HeaderMap, HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::BodyExt;
use hyper::body::Incoming;

use self::pages::{Chrome, MessagePage};
use super::announce::Asked;
use super::body::{self, Body};
use super::error::ApiError;
use super::handlers::{catch_up, json_response, query, query_param};
use super::App;
use crate::auth::{Action, Identity};
use crate::oci::{ErrorCode, RepoName};

/// Repositories on one page of the list, unless `n` says otherwise.
const LIST_PAGE: usize = 100;
const MAX_LIST_PAGE: usize = 1000;
/// Tags on one page of a repository.
const TAG_PAGE: usize = 100;
/// The largest form a page posts.
const MAX_FORM_BYTES: usize = 16 << 10;

/// Whether `path` (after `http.prefix`) is for people rather than the v2 API.
pub(super) fn handles(app: &App, path: &str) -> bool {
    path == "v1" || path.starts_with("v1/") || (app.config.ui.enabled && is_page(path))
}

fn is_page(path: &str) -> bool {
    path.is_empty() || path == "ui" || path.starts_with("ui/")
}

/// Answer a request for `path`; the route name and user are for the log.
pub(super) async fn route(
    app: &App,
    req: Request<Incoming>,
    peer: SocketAddr,
    path: &str,
) -> (&'static str, String, Result<Response<Body>, ApiError>) {
    if !is_page(path) {
        return search::route(app, req, peer, path).await;
    }
    let who = identify(app, req.headers(), peer).await;
    let user = who.name().to_string();
    let page = Page::new(app, &req, who, peer);
    let mut resp = match page.answer(req, peer, path).await {
        Ok(resp) => resp,
        // What went wrong is a page too.
        Err(e) => page.failure(e),
    };
    if resp.status() == StatusCode::PAYLOAD_TOO_LARGE {
        // The rest of the body is unread: this connection is done.
        resp.headers_mut()
            .insert(http::header::CONNECTION, HeaderValue::from_static("close"));
    }
    let result = Ok(resp);
    ("page", user, result)
}

/// The signed-in user of a session cookie (still in the htpasswd file);
/// else Basic credentials a browser may send; else anonymous.
async fn identify(app: &App, headers: &HeaderMap, peer: SocketAddr) -> Identity {
    if let Some(user) = session::cookie(headers, session::COOKIE)
        .and_then(|c| app.page_keys.user_of(c, |u| app.auth.session_binding(u)))
    {
        return Identity::User(user);
    }
    app.auth
        .authenticate_person(headers.get(http::header::AUTHORIZATION), peer.ip())
        .await
        .unwrap_or(Identity::Anonymous)
}

/// One page request: who asks, and what every page shows around it.
struct Page<'a> {
    app: &'a App,
    who: Identity,
    base: String,
    host: String,
    query: Vec<(String, String)>,
    secure: bool,
    headers: HeaderMap,
    /// This page's path and query, to come back to after signing in.
    here: String,
    /// The request, for events of what the page changes.
    asked: Option<Asked>,
}

/// Why a page cannot be shown.
enum Failure {
    /// 404: also for what the caller may not see, so that a private
    /// repository cannot be told from a missing one.
    NotFound(String),
    /// Any other status, with a heading and a sentence.
    Status(StatusCode, String, String),
    Api(ApiError),
}

impl From<ApiError> for Failure {
    fn from(e: ApiError) -> Self {
        Failure::Api(e)
    }
}

impl From<askama::Error> for Failure {
    fn from(e: askama::Error) -> Self {
        let mut err = ApiError::new(ErrorCode::Unknown, "internal error");
        err.internal = Some(format!("page template: {e}"));
        Failure::Api(err)
    }
}

type PageResult = Result<Response<Body>, Failure>;

impl<'a> Page<'a> {
    fn new(app: &'a App, req: &Request<Incoming>, who: Identity, peer: SocketAddr) -> Self {
        let headers = req.headers().clone();
        let host = match &app.config.http.host {
            Some(h) => h
                .split_once("://")
                .map_or(h.as_str(), |(_, rest)| rest)
                .trim_end_matches('/')
                .to_string(),
            None => headers
                .get(http::header::HOST)
                .and_then(|h| h.to_str().ok())
                .unwrap_or("localhost")
                .to_string(),
        };
        let forwarded_https = headers
            .get("x-forwarded-proto")
            .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"https"));
        let asked = app.notifier.is_some().then(|| Asked::new(req, peer, &who));
        Page {
            app,
            asked,
            who,
            base: app.config.http.prefix.trim_end_matches('/').to_string(),
            host,
            query: query(req),
            secure: app.tls.is_some() || forwarded_https,
            headers,
            here: req
                .uri()
                .path_and_query()
                .map_or("/", |p| p.as_str())
                .to_string(),
        }
    }

    fn chrome(&self) -> Chrome {
        Chrome {
            base: self.base.clone(),
            host: self.host.clone(),
            query: self.param("q").unwrap_or("").to_string(),
            user: match &self.who {
                Identity::User(u) => Some(u.clone()),
                _ => None,
            },
            can_login: self.app.auth.has_passwords(),
            login: match self.is_own_path(&self.here) && !self.here.contains("/ui/login") {
                true => self.link("ui/login", &[("next", &self.here)]),
                false => format!("{}/ui/login", self.base),
            },
        }
    }

    /// Who a form is signed for: the kind of caller and its name, so that
    /// no user's name can stand for anonymous or for a token's subject.
    fn subject(&self) -> String {
        match &self.who {
            Identity::Anonymous => "anonymous".into(),
            Identity::User(u) => format!("user:{u}"),
            Identity::Token(g) => format!("token:{}", g.subject),
        }
    }

    fn param(&self, key: &str) -> Option<&str> {
        query_param(&self.query, key)
    }

    fn may(&self, repo: &RepoName, action: Action) -> bool {
        self.app.auth.may(&self.who, repo.as_str(), action)
    }

    async fn answer(&self, req: Request<Incoming>, peer: SocketAddr, path: &str) -> PageResult {
        let rest = path.strip_prefix("ui/").unwrap_or("");
        let m = req.method().clone();
        let get = m == Method::GET || m == Method::HEAD;
        // A form is read whole before anything is decided, so that every
        // answer leaves the connection ready for the next request.
        let form = match m {
            Method::POST => read_form(req).await?,
            _ => vec![],
        };
        match rest {
            _ if path.is_empty() && get => self.list().await,
            "static/style.css" if get => Ok(asset("text/css", include_str!("style.css"))),
            "static/app.js" if get => Ok(asset("text/javascript", include_str!("app.js"))),
            "login" if get => self.login_form(None, StatusCode::OK),
            "login" if m == Method::POST => self.login(&form, peer).await,
            "logout" if m == Method::POST => self.logout(),
            _ if rest.starts_with("repo/") && get => self.repo(&rest["repo/".len()..]).await,
            _ if rest.starts_with("image/") && get => self.image(&rest["image/".len()..]).await,
            _ if rest.starts_with("delete/") && get => {
                self.delete_form(&rest["delete/".len()..]).await
            }
            _ if rest.starts_with("delete/") && m == Method::POST => {
                self.delete(&rest["delete/".len()..], &form).await
            }
            _ => Err(Failure::NotFound("There is no such page.".into())),
        }
    }

    /// A link to a page of ours with a query.
    fn link(&self, page: &str, params: &[(&str, &str)]) -> String {
        let mut qs = form_urlencoded::Serializer::new(String::new());
        for (k, v) in params {
            qs.append_pair(k, v);
        }
        format!("{}/{page}?{}", self.base, qs.finish())
    }

    /// A repository the caller may see, or not found: the same words for
    /// one that is private and one that is missing.
    fn repo_name(&self, s: &str) -> Result<RepoName, Failure> {
        let repo: RepoName = s
            .parse()
            .map_err(|e| Failure::NotFound(format!("{s:?} is not a repository name: {e}.")))?;
        if !self.may(&repo, Action::Pull) {
            return Err(Failure::NotFound(format!(
                "There is no repository {repo} that you may see."
            )));
        }
        Ok(repo)
    }

    /// Deletes are enabled, the registry is writable, and the caller may.
    fn may_delete(&self, repo: &RepoName) -> bool {
        let storage = &self.app.config.storage;
        storage.delete_enabled
            && !storage.readonly
            && self.app.caches.for_repo(repo).is_none()
            && self.may(repo, Action::Delete)
    }

    // -- Answers.

    fn html(&self, status: StatusCode, page: &impl Template) -> PageResult {
        Ok(html(status, page.render()?))
    }

    /// A failure as a page; server errors are logged by the caller's
    /// access log and here with what went wrong.
    fn failure(&self, f: Failure) -> Response<Body> {
        let (status, heading, text) = match f {
            Failure::NotFound(text) => (StatusCode::NOT_FOUND, "Not found".to_string(), text),
            Failure::Status(s, h, t) => (s, h, t),
            Failure::Api(e) => {
                let status = e.status();
                if status.is_server_error() {
                    tracing::error!(
                        error = e.internal.as_deref().unwrap_or(&e.message),
                        "page failed"
                    );
                    (status, "Something went wrong".into(), "The registry could not read what this page shows; the server's log says why. Try again in a moment.".into())
                } else {
                    (status, "Cannot show this".into(), e.message)
                }
            }
        };
        let offer_login = matches!(self.who, Identity::Anonymous)
            && self.app.auth.has_passwords()
            && (status == StatusCode::NOT_FOUND || status == StatusCode::FORBIDDEN);
        let page = MessagePage {
            chrome: self.chrome(),
            heading,
            text,
            offer_login,
        };
        match page.render() {
            Ok(text) => html(status, text),
            Err(e) => {
                tracing::error!(error = %e, "page template failed");
                let mut resp = Response::new(body::full("internal error\n"));
                *resp.status_mut() = StatusCode::INTERNAL_SERVER_ERROR;
                resp
            }
        }
    }
}

fn bad_request(text: &str) -> Failure {
    Failure::Status(StatusCode::BAD_REQUEST, "Bad request".into(), text.into())
}

/// The headers every page carries: no script, style, frame or form target
/// but our own, nothing cached, no referrer to other sites.
const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; \
                   form-action 'self'; frame-ancestors 'none'; base-uri 'none'";

fn html(status: StatusCode, text: String) -> Response<Body> {
    let len = text.len();
    let mut resp = Response::new(body::full(text));
    *resp.status_mut() = status;
    let h = resp.headers_mut();
    h.insert(
        http::header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    h.insert(http::header::CONTENT_LENGTH, len.into());
    page_headers(h);
    resp
}

fn page_headers(h: &mut HeaderMap) {
    set(
        h,
        &[
            (http::header::CONTENT_SECURITY_POLICY, CSP),
            (http::header::CACHE_CONTROL, "no-store"),
            (http::header::X_FRAME_OPTIONS, "DENY"),
            (http::header::REFERRER_POLICY, "same-origin"),
        ],
    );
}

fn set(h: &mut HeaderMap, headers: &[(http::HeaderName, &'static str)]) {
    for (name, value) in headers {
        h.insert(name, HeaderValue::from_static(value));
    }
}

fn asset(content_type: &'static str, text: &'static str) -> Response<Body> {
    let mut resp = Response::new(body::full(text));
    let h = resp.headers_mut();
    h.insert(http::header::CONTENT_LENGTH, text.len().into());
    set(
        h,
        &[
            (http::header::CONTENT_TYPE, content_type),
            (http::header::CACHE_CONTROL, "max-age=300"),
            (http::header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        ],
    );
    resp
}

/// 303: after a form post, the browser loads `to` with a GET.
fn redirect(to: &str) -> Response<Body> {
    let mut resp = Response::new(body::empty());
    *resp.status_mut() = StatusCode::SEE_OTHER;
    let h = resp.headers_mut();
    if let Ok(v) = HeaderValue::from_str(to) {
        h.insert(http::header::LOCATION, v);
    }
    h.insert(http::header::CONTENT_LENGTH, 0.into());
    page_headers(h);
    resp
}

/// A posted `application/x-www-form-urlencoded` body, bounded.
async fn read_form(req: Request<Incoming>) -> Result<Vec<(String, String)>, Failure> {
    let limited = http_body_util::Limited::new(req.into_body(), MAX_FORM_BYTES);
    let bytes = limited
        .collect()
        .await
        .map_err(
            |e| match e.downcast_ref::<http_body_util::LengthLimitError>() {
                Some(_) => Failure::Status(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    "Form too large".into(),
                    "The form sent more than this page ever sends.".into(),
                ),
                None => bad_request("the form's body could not be read"),
            },
        )?
        .to_bytes();
    Ok(form_urlencoded::parse(&bytes).into_owned().collect())
}

fn field<'f>(form: &'f [(String, String)], key: &str) -> &'f str {
    query_param(form, key).unwrap_or("")
}
