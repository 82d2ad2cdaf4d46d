//! Who may do what: authentication (htpasswd users, bearer tokens, or
//! nobody when the registry is open) and authorization (anonymous pull,
//! per-repository rules, token scopes).
//!
//! Meaning of the configuration:
//! - no `auth` method (with or without `auth.anonymous: true`): open
//!   access, unless `access.rules` exist, which then decide for anonymous
//!   clients;
//! - `auth.htpasswd` or `auth.token`: every request needs credentials;
//!   with `auth.anonymous: true` beside it, anonymous clients may pull
//!   (and list what they may pull) but nothing else;
//! - `access.rules` restrict htpasswd users and grant to `anonymous`;
//!   without rules a logged-in user may do everything. A token grants
//!   exactly the actions its `access` claim lists; rules do not apply.
//!
//! A missing or wrong login is 401 with a challenge; a logged-in user
//! without the right is 403 DENIED. Wrong passwords from one address are
//! answered more and more slowly, without slowing anyone else.

pub mod access;
pub mod htpasswd;
pub mod token;

use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use dashmap::DashMap;
use http::HeaderValue;

pub use access::Action;
use access::{Principal, Rules};
use htpasswd::Htpasswd;
use token::{Grant, TokenVerifier};

use crate::config::AuthConfig;
use crate::oci::RepoName;

/// What a request needs.
#[derive(Clone, Copy, Debug)]
pub enum Need<'a> {
    /// `GET /v2/`: proof of login (what `docker login` checks).
    Base,
    /// `GET /v2/_catalog`: some listing right; the list is filtered.
    Catalog,
    Repo(&'a RepoName, Action),
}

/// Who a request comes from, once authenticated.
#[derive(Clone, Debug)]
pub enum Identity {
    Anonymous,
    User(String),
    Token(Grant),
}

impl Identity {
    /// A name for the access log (never a credential).
    pub fn name(&self) -> &str {
        match self {
            Identity::Anonymous => "-",
            Identity::User(u) => u,
            Identity::Token(g) => &g.subject,
        }
    }
}

/// Why a request may not go on.
#[derive(Debug)]
pub enum AuthFailure {
    /// 401 with this `WWW-Authenticate` challenge.
    Unauthorized {
        challenge: Option<String>,
        message: String,
    },
    /// 403: logged in, but not allowed.
    Denied { message: String },
}

enum Method {
    Open,
    Htpasswd { realm: String, users: Arc<Htpasswd> },
    Token(TokenVerifier),
}

pub struct Auth {
    method: Method,
    anonymous_pull: bool,
    rules: Option<Rules>,
    failures: FailureLimiter,
}

impl Auth {
    pub fn new(config: &AuthConfig) -> Result<Auth, String> {
        let method = match (&config.htpasswd, &config.token) {
            (Some(h), _) => Method::Htpasswd {
                realm: h.realm.clone(),
                users: Htpasswd::open(&h.path).map_err(|e| e.to_string())?,
            },
            (None, Some(t)) => Method::Token(TokenVerifier::new(t)?),
            (None, None) => Method::Open,
        };
        Ok(Auth {
            anonymous_pull: config.anonymous == Some(true),
            method,
            rules: Rules::new(&config.access),
            failures: FailureLimiter::default(),
        })
    }

    /// Whether everyone may do everything (no method, no rules).
    pub fn is_open(&self) -> bool {
        matches!(self.method, Method::Open) && self.rules.is_none()
    }

    /// Establish who sends a request from its `Authorization` header.
    pub async fn authenticate(
        &self,
        authorization: Option<&HeaderValue>,
        peer: IpAddr,
    ) -> Result<Identity, AuthFailure> {
        let Some(value) = authorization else {
            return Ok(Identity::Anonymous);
        };
        let value = value.to_str().unwrap_or("");
        let (scheme, credentials) = value.trim().split_once(' ').unwrap_or((value, ""));
        match &self.method {
            // An open registry accepts any login, as `docker login` expects.
            Method::Open => Ok(Identity::Anonymous),
            Method::Htpasswd { .. } => {
                let Some((user, password)) = basic_credentials(scheme, credentials) else {
                    return Err(self.unauthorized(
                        None,
                        "malformed Authorization header: use Basic credentials",
                    ));
                };
                // What skopeo, podman and buildah send when they have no
                // credentials for this registry: no login at all.
                if user.is_empty() && password.is_empty() {
                    return Ok(Identity::Anonymous);
                }
                if self.check_password(&user, &password, peer).await {
                    Ok(Identity::User(user))
                } else {
                    Err(self.unauthorized(None, "invalid username or password"))
                }
            }
            Method::Token(verifier) => {
                if !scheme.eq_ignore_ascii_case("bearer") {
                    return Err(self.unauthorized(None, "this registry takes bearer tokens"));
                }
                verifier
                    .verify(credentials.trim())
                    .map(Identity::Token)
                    .map_err(|e| AuthFailure::Unauthorized {
                        challenge: Some(format!("{},error=\"invalid_token\"", self.bearer(None))),
                        message: e.to_string(),
                    })
            }
        }
    }

    /// Who sends a request that people make rather than image clients
    /// (`docker search`, the web page). The docker daemon sends Basic
    /// credentials there whatever the registry's method, and never follows a
    /// bearer challenge: Basic that no user list can check is anonymous.
    pub async fn authenticate_person(
        &self,
        authorization: Option<&HeaderValue>,
        peer: IpAddr,
    ) -> Result<Identity, AuthFailure> {
        let basic = authorization
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().split_once(' '))
            .is_some_and(|(scheme, _)| scheme.eq_ignore_ascii_case("basic"));
        match &self.method {
            Method::Token(_) if basic => Ok(Identity::Anonymous),
            _ => self.authenticate(authorization, peer).await,
        }
    }

    /// Whether the registry has a list of users with passwords (a login form
    /// can check them).
    pub fn has_passwords(&self) -> bool {
        matches!(self.method, Method::Htpasswd { .. })
    }

    /// What a login session of `user` is bound to: the user's entry in
    /// the htpasswd file, so that removing the user or changing the
    /// password ends it. `None` if there is no such user.
    pub fn session_binding(&self, user: &str) -> Option<String> {
        match &self.method {
            Method::Htpasswd { users, .. } => users.stored_hash(user),
            _ => None,
        }
    }

    /// Check a user's password against the htpasswd file. Wrong passwords
    /// from one address are answered more and more slowly.
    pub async fn check_password(&self, user: &str, password: &str, peer: IpAddr) -> bool {
        let Method::Htpasswd { users, .. } = &self.method else {
            return false;
        };
        // The cache answers most requests; bcrypt runs off the async threads.
        let ok = users.recently_verified(user, password) || {
            let (u, p, h) = (user.to_string(), password.to_string(), users.clone());
            tokio::task::spawn_blocking(move || h.verify(&u, &p))
                .await
                .unwrap_or(false)
        };
        if !ok {
            // One answer for an unknown user and a wrong password.
            tokio::time::sleep(self.failures.record(peer)).await;
        }
        ok
    }

    /// Whether `who` may do what a request needs.
    pub fn authorize(&self, who: &Identity, need: Need) -> Result<(), AuthFailure> {
        let allowed = match (need, who) {
            (Need::Base, Identity::Anonymous) => matches!(self.method, Method::Open),
            (Need::Base, _) => true,
            (Need::Catalog, Identity::Token(g)) => g.catalog(),
            (Need::Catalog, Identity::User(_)) => true,
            (Need::Catalog, Identity::Anonymous) => {
                self.anonymous_pull
                    || match &self.rules {
                        Some(r) => r.grants_any(&Principal::Anonymous),
                        None => matches!(self.method, Method::Open),
                    }
            }
            (Need::Repo(repo, action), who) => self.may(who, repo.as_str(), action),
        };
        if allowed {
            return Ok(());
        }
        Err(match who {
            Identity::User(u) => AuthFailure::Denied {
                message: match need {
                    Need::Repo(repo, action) => {
                        format!("user {u:?} may not {} repository {repo}", action.as_str())
                    }
                    _ => format!("user {u:?} may not list repositories"),
                },
            },
            Identity::Token(_) => AuthFailure::Unauthorized {
                challenge: Some(format!(
                    "{},error=\"insufficient_scope\"",
                    self.bearer(Some(need))
                )),
                message: "the token does not grant this action".into(),
            },
            Identity::Anonymous => self.unauthorized(Some(need), "authentication required"),
        })
    }

    /// Whether `who` may do `action` on `repo` (also for filtering lists and
    /// for the source of a cross-repository mount).
    pub fn may(&self, who: &Identity, repo: &str, action: Action) -> bool {
        match who {
            Identity::Token(g) => g.allows(repo, action),
            Identity::User(u) => self
                .rules
                .as_ref()
                .is_none_or(|r| r.allows(&Principal::User(u), repo, action)),
            Identity::Anonymous => {
                (self.anonymous_pull && action == Action::Pull)
                    || match &self.rules {
                        Some(r) => r.allows(&Principal::Anonymous, repo, action),
                        None => matches!(self.method, Method::Open),
                    }
            }
        }
    }

    fn unauthorized(&self, need: Option<Need>, message: &str) -> AuthFailure {
        let challenge = match &self.method {
            Method::Open => None,
            Method::Htpasswd { realm, .. } => Some(format!("Basic realm=\"{}\"", quote(realm))),
            Method::Token(_) => Some(self.bearer(need)),
        };
        match challenge {
            Some(c) => AuthFailure::Unauthorized {
                challenge: Some(c),
                message: message.into(),
            },
            // No way to log in: what the rules refuse is simply refused.
            None => AuthFailure::Denied {
                message: "access denied by the access rules".into(),
            },
        }
    }

    /// `Bearer realm=...,service=...[,scope=...]` for the token server.
    fn bearer(&self, need: Option<Need>) -> String {
        let Method::Token(t) = &self.method else {
            return String::new();
        };
        let mut c = format!(
            "Bearer realm=\"{}\",service=\"{}\"",
            quote(&t.realm),
            quote(&t.service)
        );
        match need {
            Some(Need::Repo(repo, action)) => {
                let actions = match action {
                    Action::Pull => "pull",
                    Action::Push => "pull,push",
                    Action::Delete => "delete",
                };
                c.push_str(&format!(",scope=\"repository:{repo}:{actions}\""));
            }
            Some(Need::Catalog) => c.push_str(",scope=\"registry:catalog:*\""),
            Some(Need::Base) | None => {}
        }
        c
    }
}

/// `user:password` from Basic credentials.
fn basic_credentials(scheme: &str, credentials: &str) -> Option<(String, String)> {
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let decoded = String::from_utf8(STANDARD.decode(credentials.trim()).ok()?).ok()?;
    let (user, password) = decoded.split_once(':')?;
    Some((user.to_string(), password.to_string()))
}

fn quote(s: &str) -> String {
    s.replace('\\', "\\\\").replace('"', "\\\"")
}

/// Slows down addresses that keep sending wrong passwords: after a few
/// failures in a minute, each further failure waits longer (up to 5 s)
/// before its answer. Only that address's failed requests wait.
#[derive(Default)]
struct FailureLimiter {
    by_address: DashMap<IpAddr, (u32, Instant)>,
}

const FREE_FAILURES: u32 = 5;
const FAILURE_WINDOW: Duration = Duration::from_secs(60);
const MAX_PENALTY: Duration = Duration::from_secs(5);

impl FailureLimiter {
    /// Count a failure; how long to wait before answering it.
    fn record(&self, ip: IpAddr) -> Duration {
        if self.by_address.len() > 100_000 {
            self.by_address.clear();
        }
        let mut entry = self.by_address.entry(ip).or_insert((0, Instant::now()));
        if entry.1.elapsed() > FAILURE_WINDOW {
            *entry = (0, Instant::now());
        }
        entry.0 += 1;
        let over = entry.0.saturating_sub(FREE_FAILURES);
        if over == 0 {
            Duration::ZERO
        } else {
            (Duration::from_millis(100) * 2u32.saturating_pow(over.min(10))).min(MAX_PENALTY)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failures_slow_down_one_address() {
        let l = FailureLimiter::default();
        let a: IpAddr = "127.0.0.2".parse().unwrap();
        let b: IpAddr = "127.0.0.3".parse().unwrap();
        for _ in 0..FREE_FAILURES {
            assert_eq!(l.record(a), Duration::ZERO);
        }
        assert_eq!(l.record(a), Duration::from_millis(200));
        assert_eq!(l.record(a), Duration::from_millis(400));
        for _ in 0..20 {
            l.record(a);
        }
        assert_eq!(l.record(a), MAX_PENALTY);
        assert_eq!(
            l.record(b),
            Duration::ZERO,
            "another address is not affected"
        );
    }
}
