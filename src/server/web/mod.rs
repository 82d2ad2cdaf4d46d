//! What people use rather than image clients: `docker search` (`/v1/`),
//! and the web page at `/` (repositories, tags, images; signing in; deleting
//! a tag). Pages are rendered here from the index and the manifests of the
//! one repository shown: a browser never sends one request per tag, and
//! works with scripts off. Rights are the registry's own.

mod pages;
mod search;
pub mod session;

use std::net::SocketAddr;

use askama::Template;
use http::{HeaderMap, HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::BodyExt;
use hyper::body::Incoming;

use self::pages::{
    Chrome, DeletePage, ImagePage, ImageRow, ListPage, LoginPage, MessagePage, ReferrerRow,
    RepoPage, RepoRow, TagRow,
};
use super::body::{self, Body};
use super::error::ApiError;
use super::handlers::{catch_up, json_response, query, query_param};
use super::App;
use crate::auth::{Action, Identity};
use crate::browse;
use crate::oci::{ErrorCode, Reference, RepoName, Tag};
use crate::storage::StorageError;

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
    let page = Page::new(app, &req, who);
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
        .and_then(|c| app.page_keys.user_of(c))
        .filter(|u| app.auth.user_exists(u))
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
}

/// Why a page cannot be shown.
enum Failure {
    /// 404, or 403 for a signed-in user: the same words either way, so a
    /// stranger cannot tell a private repository from a missing one.
    NotFound(String),
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
    fn new(app: &'a App, req: &Request<Incoming>, who: Identity) -> Self {
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
        Page {
            app,
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

    // -- The list of repositories, and search.

    async fn list(&self) -> PageResult {
        catch_up(self.app).await?;
        let index = self.app.store.index();
        let n = match self.param("n").map(str::parse::<usize>) {
            None => LIST_PAGE,
            Some(Ok(n)) if (1..=MAX_LIST_PAGE).contains(&n) => n,
            Some(_) => return Err(bad_request("n must be a number from 1 to 1000")),
        };
        let visible = |r: &RepoName| self.may(r, Action::Pull);
        let q = self.param("q").unwrap_or("").trim();
        let (rows, total, next) = if q.is_empty() {
            let last = self.param("last").filter(|l| !l.is_empty());
            let page = index.catalog(n, last, visible);
            let total = match self.app.auth.is_open() {
                true => index.repo_count(),
                false => {
                    let mut count = 0;
                    index.for_each_repo(|r, _| count += usize::from(visible(r)));
                    count
                }
            };
            let next = match (page.more, page.items.last()) {
                (true, Some(last)) => {
                    Some(self.link("", &[("last", last.as_str()), ("n", &n.to_string())]))
                }
                _ => None,
            };
            let rows = page
                .items
                .into_iter()
                .map(|name| RepoRow {
                    tags: index.tag_count(&name).unwrap_or(0),
                    name: name.to_string(),
                })
                .collect::<Vec<_>>();
            (rows, total, next)
        } else {
            let page = match self.param("page").map(str::parse::<usize>) {
                None => 1,
                Some(Ok(p)) if p >= 1 => p,
                Some(_) => return Err(bad_request("page must be a number from 1")),
            };
            let found = browse::search(index, q, visible, page, n);
            let next = (page.saturating_mul(n) < found.total).then(|| {
                self.link(
                    "",
                    &[
                        ("q", q),
                        ("page", &(page + 1).to_string()),
                        ("n", &n.to_string()),
                    ],
                )
            });
            let rows = found
                .items
                .into_iter()
                .map(|(name, tags)| RepoRow {
                    name: name.to_string(),
                    tags,
                })
                .collect();
            (rows, found.total, next)
        };
        let hidden_for_anonymous = matches!(self.who, Identity::Anonymous)
            && total == 0
            && q.is_empty()
            && self.app.auth.has_passwords();
        self.html(
            StatusCode::OK,
            &ListPage {
                chrome: self.chrome(),
                rows,
                total,
                next,
                hidden_for_anonymous,
            },
        )
    }

    /// A link to a page of ours with a query.
    fn link(&self, page: &str, params: &[(&str, &str)]) -> String {
        let mut qs = form_urlencoded::Serializer::new(String::new());
        for (k, v) in params {
            qs.append_pair(k, v);
        }
        format!("{}/{page}?{}", self.base, qs.finish())
    }

    // -- A repository's tags.

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

    async fn repo(&self, name: &str) -> PageResult {
        let repo = self.repo_name(name)?;
        catch_up(self.app).await?;
        let by_time = self.param("sort") == Some("pushed");
        let page = match self.param("page").map(str::parse::<usize>) {
            None => 1,
            Some(Ok(p)) if p >= 1 => p,
            Some(_) => return Err(bad_request("page must be a number from 1")),
        };
        let summaries = self.app.summaries.clone();
        let r = repo.clone();
        let found = self
            .app
            .blocking(move |store| {
                let Some(tags) = store.index().tags_with_digests(&r) else {
                    return Ok(None);
                };
                let total = tags.len();
                let mut tags: Vec<_> = tags.into_iter().map(|(t, d)| (t, d, None)).collect();
                if by_time {
                    for (t, _, pushed) in &mut tags {
                        *pushed = Some(store.tag_pushed(&r, t)?);
                    }
                    // Newest first; tags gone meanwhile last.
                    tags.sort_by_key(|t| std::cmp::Reverse(t.2.flatten()));
                }
                let skip = (page - 1).saturating_mul(TAG_PAGE);
                let mut rows = Vec::new();
                for (tag, digest, pushed) in tags.into_iter().skip(skip).take(TAG_PAGE) {
                    let pushed = match pushed {
                        Some(p) => p,
                        None => store.tag_pushed(&r, &tag)?,
                    };
                    match summaries.get(store, &r, &digest) {
                        Ok(s) => rows.push(TagRow::new(tag.as_str(), &digest, &s, pushed)),
                        // Deleted since the index was read: not a tag any more.
                        Err(StorageError::ManifestUnknown(_)) => {}
                        Err(e) => return Err(e),
                    }
                }
                Ok(Some((rows, total)))
            })
            .await?;
        let Some((rows, total)) = found else {
            return Err(Failure::NotFound(format!(
                "There is no repository {repo} that you may see."
            )));
        };
        let sort = if by_time { "pushed" } else { "name" };
        let next = (page.saturating_mul(TAG_PAGE) < total).then(|| {
            self.link(
                &format!("ui/repo/{repo}"),
                &[("sort", sort), ("page", &(page + 1).to_string())],
            )
        });
        let note = self
            .param("deleted")
            .and_then(|t| t.parse::<Tag>().ok())
            .map(|t| format!("Deleted the tag {t}."));
        self.html(
            StatusCode::OK,
            &RepoPage {
                chrome: self.chrome(),
                name: repo.to_string(),
                rows,
                total,
                sort_by_time: by_time,
                may_delete: self.may_delete(&repo),
                next,
                note,
            },
        )
    }

    fn may_delete(&self, repo: &RepoName) -> bool {
        let storage = &self.app.config.storage;
        storage.delete_enabled && !storage.readonly && self.may(repo, Action::Delete)
    }

    // -- One image.

    async fn image(&self, path: &str) -> PageResult {
        let (name, reference) = path
            .rsplit_once('/')
            .ok_or_else(|| Failure::NotFound("There is no such page.".into()))?;
        let repo = self.repo_name(name)?;
        let reference: Reference = reference.parse().map_err(|e| {
            Failure::NotFound(format!("{reference:?} is neither a tag nor a digest: {e}."))
        })?;
        let (r, reff) = (repo.clone(), reference.clone());
        let view = self
            .app
            .blocking(move |store| browse::image::view(store, &r, &reff))
            .await
            .map_err(|e| match e.code {
                ErrorCode::ManifestUnknown | ErrorCode::NameUnknown => {
                    Failure::NotFound(format!("{repo} has no image {reference}."))
                }
                _ => Failure::Api(e),
            })?;
        let tags: Vec<String> = self
            .app
            .store
            .index()
            .tags_pointing_at(&repo, &view.digest)
            .iter()
            .map(|t| t.to_string())
            .collect();
        let (title, by_name) = match &reference {
            Reference::Tag(t) => (format!("{repo}:{t}"), Some(format!("{repo}:{t}"))),
            Reference::Digest(d) => (format!("{repo}@{}", pages::short(d)), None),
        };
        let by_digest = format!("{repo}@{}", view.digest);
        let mut pull_commands = Vec::new();
        for tool in ["docker", "podman"] {
            for r in by_name.iter().chain([&by_digest]) {
                pull_commands.push(format!("{tool} pull {}/{r}", self.host));
            }
        }
        let images = view.images.iter().map(ImageRow::from).collect();
        let referrers = view.referrers.iter().map(ReferrerRow::from).collect();
        self.html(
            StatusCode::OK,
            &ImagePage {
                chrome: self.chrome(),
                name: repo.to_string(),
                title,
                pull_commands,
                tags,
                images,
                referrers,
                view,
            },
        )
    }

    // -- Deleting a tag: a page that says what will happen, then a form post.

    fn delete_target(&self, path: &str) -> Result<(RepoName, Tag), Failure> {
        let (name, tag) = path
            .rsplit_once('/')
            .ok_or_else(|| Failure::NotFound("There is no such page.".into()))?;
        let repo = self.repo_name(name)?;
        let tag: Tag = tag
            .parse()
            .map_err(|e| Failure::NotFound(format!("{tag:?} is not a tag: {e}.")))?;
        if !self.may_delete(&repo) {
            let why = if !self.app.config.storage.delete_enabled {
                "Deletes are turned off in this registry (storage.delete.enabled).".to_string()
            } else if self.app.config.storage.readonly {
                "The registry is read-only for maintenance.".to_string()
            } else {
                format!("You may not delete in {repo}.")
            };
            return Err(Failure::Status(
                StatusCode::FORBIDDEN,
                "Not allowed".into(),
                why,
            ));
        }
        Ok((repo, tag))
    }

    fn delete_token(&self, repo: &RepoName, tag: &Tag, digest: &str) -> String {
        self.app
            .page_keys
            .form_token(self.who.name(), "delete", &format!("{repo}:{tag}@{digest}"))
    }

    async fn delete_form(&self, path: &str) -> PageResult {
        let (repo, tag) = self.delete_target(path)?;
        catch_up(self.app).await?;
        let index = self.app.store.index();
        let Some(digest) = index.tag_digest(&repo, &tag) else {
            return Err(Failure::NotFound(format!("{repo} has no tag {tag}.")));
        };
        let others = index
            .tags_pointing_at(&repo, &digest)
            .into_iter()
            .filter(|t| *t != tag)
            .map(|t| t.to_string())
            .collect();
        let digest = digest.to_string();
        self.html(
            StatusCode::OK,
            &DeletePage {
                chrome: self.chrome(),
                token: self.delete_token(&repo, &tag, &digest),
                name: repo.to_string(),
                tag: tag.to_string(),
                digest,
                others,
            },
        )
    }

    async fn delete(&self, path: &str, form: &[(String, String)]) -> PageResult {
        let (repo, tag) = self.delete_target(path)?;
        let digest = field(form, "digest");
        let token = field(form, "token");
        if !session::same_origin(&self.headers)
            || !self.app.page_keys.form_token_ok(
                token,
                self.who.name(),
                "delete",
                &format!("{repo}:{tag}@{digest}"),
            )
        {
            return Err(Failure::Status(
                StatusCode::FORBIDDEN,
                "Not deleted".into(),
                "The form was not this page's, or it is more than an hour old. Open the tag's delete page again.".into(),
            ));
        }
        let (r, t, d) = (repo.clone(), tag.clone(), digest.to_string());
        let moved = self
            .app
            .blocking(move |store| {
                // Exactly the tag the person saw: if it was moved to another
                // image since, nothing is deleted.
                let (now, _, _) = store.stat_manifest(&r, &Reference::Tag(t.clone()))?;
                if now.to_string() != d {
                    return Ok(true);
                }
                store.delete_tag(&r, &t)?;
                Ok(false)
            })
            .await
            .map_err(|e| match e.code {
                ErrorCode::ManifestUnknown => {
                    Failure::NotFound(format!("{repo} has no tag {tag} any more."))
                }
                _ => Failure::Api(e),
            })?;
        if moved {
            return Err(Failure::Status(
                StatusCode::CONFLICT,
                "Not deleted".into(),
                format!("The tag {tag} was pushed again since the page was shown: it points at another image now. Nothing was deleted."),
            ));
        }
        tracing::info!(repository = %repo, tag = %tag, user = self.who.name(), "tag deleted from the web page");
        Ok(redirect(&self.link(
            &format!("ui/repo/{repo}"),
            &[("deleted", tag.as_str())],
        )))
    }

    // -- Signing in and out.

    fn login_form(&self, error: Option<String>, status: StatusCode) -> PageResult {
        let next = self
            .param("next")
            .filter(|n| self.is_own_path(n))
            .map_or_else(|| format!("{}/", self.base), str::to_string);
        self.html(
            status,
            &LoginPage {
                chrome: self.chrome(),
                error,
                next,
                token_auth: self.app.config.auth.token.is_some(),
            },
        )
    }

    /// Whether `next` is a path of this registry's pages (no redirect to
    /// another site after signing in).
    fn is_own_path(&self, next: &str) -> bool {
        next.strip_prefix(&self.base)
            .and_then(|rest| rest.strip_prefix('/'))
            .is_some_and(|rest| {
                !rest.starts_with('/')
                    && !rest.contains('\\')
                    && is_page(rest.split('?').next().unwrap_or(""))
            })
    }

    async fn login(&self, form: &[(String, String)], peer: SocketAddr) -> PageResult {
        if !self.app.auth.has_passwords() {
            return self.login_form(None, StatusCode::OK);
        }
        if !session::same_origin(&self.headers) {
            return Err(Failure::Status(
                StatusCode::FORBIDDEN,
                "Not signed in".into(),
                "The form did not come from this page.".into(),
            ));
        }
        let (user, password) = (field(form, "username"), field(form, "password"));
        if user.is_empty()
            || !self
                .app
                .auth
                .check_password(user, password, peer.ip())
                .await
        {
            return self.login_form(
                Some("Invalid username or password.".into()),
                StatusCode::UNAUTHORIZED,
            );
        }
        let next = Some(field(form, "next"))
            .filter(|n| self.is_own_path(n))
            .map_or_else(|| format!("{}/", self.base), str::to_string);
        let mut resp = redirect(&next);
        self.set_session(&mut resp, &self.app.page_keys.session(user));
        tracing::info!(user, "signed in to the web page");
        Ok(resp)
    }

    fn logout(&self) -> PageResult {
        if !session::same_origin(&self.headers) {
            return Err(Failure::Status(
                StatusCode::FORBIDDEN,
                "Not signed out".into(),
                "The form did not come from this page.".into(),
            ));
        }
        let mut resp = redirect(&format!("{}/", self.base));
        self.set_session(&mut resp, "");
        Ok(resp)
    }

    fn set_session(&self, resp: &mut Response<Body>, value: &str) {
        let path = format!("{}/", self.base);
        if let Ok(v) = HeaderValue::from_str(&session::set_cookie(value, &path, self.secure)) {
            resp.headers_mut().append(http::header::SET_COOKIE, v);
        }
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
        .map_err(|_| {
            Failure::Status(
                StatusCode::PAYLOAD_TOO_LARGE,
                "Form too large".into(),
                "The form sent more than this page ever sends.".into(),
            )
        })?
        .to_bytes();
    Ok(form_urlencoded::parse(&bytes).into_owned().collect())
}

fn field<'f>(form: &'f [(String, String)], key: &str) -> &'f str {
    query_param(form, key).unwrap_or("")
}
