//! The page's logins and forms: a session is a signed cookie naming the
//! user and when it ends, so any node that shares `http.secret` accepts it
//! and nothing is stored. Forms that change something carry a token signed
//! for that user and that change, and are refused when the browser says
//! they come from another site.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use http::HeaderMap;
use ring::hmac;

/// The cookie's name.
pub const COOKIE: &str = "registry_session";
/// How long a login lasts.
pub const LIFETIME: Duration = Duration::from_secs(8 * 3600);
/// How long a delete form stays valid.
const FORM_LIFETIME: Duration = Duration::from_secs(3600);

/// The key that signs sessions and forms.
pub struct Keys {
    key: hmac::Key,
}

impl Keys {
    /// From `http.secret`, or a random key for this process alone.
    pub fn new(secret: Option<&str>) -> Keys {
        let bytes: Vec<u8> = match secret {
            Some(s) => s.as_bytes().to_vec(),
            None => rand::random::<[u8; 32]>().to_vec(),
        };
        Keys {
            key: hmac::Key::new(hmac::HMAC_SHA256, &bytes),
        }
    }

    fn sign(&self, parts: &[&str]) -> String {
        URL_SAFE_NO_PAD.encode(hmac::sign(&self.key, &message(parts)).as_ref())
    }

    fn verify(&self, parts: &[&str], signature: &str) -> bool {
        URL_SAFE_NO_PAD
            .decode(signature)
            .is_ok_and(|sig| hmac::verify(&self.key, &message(parts), &sig).is_ok())
    }

    /// The cookie value for `user`, valid until `LIFETIME` from now and
    /// while `binding` (the user's password entry) stays the same.
    pub fn session(&self, user: &str, binding: &str) -> String {
        let until = (now() + LIFETIME.as_secs()).to_string();
        let name = URL_SAFE_NO_PAD.encode(user);
        let sig = self.sign(&["session", user, &until, binding]);
        format!("{name}.{until}.{sig}")
    }

    /// The user a session cookie names, if it is ours, has not ended, and
    /// `binding` still gives the user the entry it was made with.
    pub fn user_of(
        &self,
        cookie: &str,
        binding: impl Fn(&str) -> Option<String>,
    ) -> Option<String> {
        let mut parts = cookie.split('.');
        let (name, until, sig) = (parts.next()?, parts.next()?, parts.next()?);
        if parts.next().is_some() {
            return None;
        }
        let user = String::from_utf8(URL_SAFE_NO_PAD.decode(name).ok()?).ok()?;
        let ends: u64 = until.parse().ok()?;
        if ends <= now() {
            return None;
        }
        let bound = binding(&user)?;
        self.verify(&["session", &user, until, &bound], sig)
            .then_some(user)
    }

    /// A token for one form: `action` on `target`, by `who`.
    pub fn form_token(&self, who: &str, action: &str, target: &str) -> String {
        let until = (now() + FORM_LIFETIME.as_secs()).to_string();
        let sig = self.sign(&["form", who, action, target, &until]);
        format!("{until}.{sig}")
    }

    /// Whether `token` was made by `form_token` with the same arguments and
    /// is still valid.
    pub fn form_token_ok(&self, token: &str, who: &str, action: &str, target: &str) -> bool {
        let Some((until, sig)) = token.split_once('.') else {
            return false;
        };
        until.parse::<u64>().is_ok_and(|t| t > now())
            && self.verify(&["form", who, action, target, until], sig)
    }
}

/// The signed bytes: each part after its length, so that no two lists of
/// parts sign the same bytes.
fn message(parts: &[&str]) -> Vec<u8> {
    let mut msg = Vec::new();
    for p in parts {
        msg.extend_from_slice(&(p.len() as u64).to_be_bytes());
        msg.extend_from_slice(p.as_bytes());
    }
    msg
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// The value of cookie `name` in the request's `Cookie` headers.
pub fn cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(http::header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v)
}

/// A `Set-Cookie` value for the session: not readable by scripts, sent
/// only on same-site navigations and this registry's paths, over TLS only
/// when the page came over TLS. An empty value ends the session.
pub fn set_cookie(value: &str, path: &str, secure: bool) -> String {
    let max_age = if value.is_empty() {
        0
    } else {
        LIFETIME.as_secs()
    };
    let mut c = format!("{COOKIE}={value}; Path={path}; Max-Age={max_age}; HttpOnly; SameSite=Lax");
    if secure {
        c.push_str("; Secure");
    }
    c
}

/// Whether a form post may come from this page: the browser's own
/// statement of where it comes from (`Sec-Fetch-Site`, else `Origin`)
/// must not name another site. Clients that send neither are not
/// browsers and are judged by the form token alone.
pub fn same_origin(headers: &HeaderMap) -> bool {
    let get = |n: &str| headers.get(n).and_then(|v| v.to_str().ok());
    if let Some(site) = get("sec-fetch-site") {
        return site == "same-origin" || site == "none";
    }
    match (get("origin"), get("host")) {
        (None, _) => true,
        (Some(origin), Some(host)) => origin
            .split_once("://")
            .is_some_and(|(_, authority)| authority == host),
        (Some(_), None) => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sessions_name_their_user_and_resist_forgery() {
        let keys = Keys::new(Some("s3cret"));
        let entry = |u: &str| (u != "nobody").then(|| format!("hash-of-{u}"));
        let c = keys.session("alice", "hash-of-alice");
        assert_eq!(keys.user_of(&c, entry).as_deref(), Some("alice"));
        // Another node with the same secret accepts it; another secret not.
        assert_eq!(
            Keys::new(Some("s3cret")).user_of(&c, entry).as_deref(),
            Some("alice")
        );
        assert_eq!(Keys::new(Some("other")).user_of(&c, entry), None);
        // A new password, or no such user any more, ends it.
        assert_eq!(keys.user_of(&c, |_| Some("new hash".into())), None);
        assert_eq!(keys.user_of(&c, |_| None), None);
        // The name cannot be swapped, nor the end moved.
        let (_, rest) = c.split_once('.').unwrap();
        let forged = format!("{}.{rest}", URL_SAFE_NO_PAD.encode("admin"));
        assert_eq!(keys.user_of(&forged, entry), None);
        let parts: Vec<&str> = c.split('.').collect();
        let later = format!("{}.{}.{}", parts[0], now() + 999_999, parts[2]);
        assert_eq!(keys.user_of(&later, entry), None);
        for junk in ["", ".", "a.b.c", "a.b.c.d", "YQ.1.x"] {
            assert_eq!(keys.user_of(junk, entry), None, "{junk:?}");
        }
    }

    #[test]
    fn ended_sessions_are_refused() {
        let keys = Keys::new(Some("k"));
        let until = (now() - 1).to_string();
        let sig = keys.sign(&["session", "bob", &until, "h"]);
        let c = format!("{}.{until}.{sig}", URL_SAFE_NO_PAD.encode("bob"));
        assert_eq!(keys.user_of(&c, |_| Some("h".into())), None);
    }

    #[test]
    fn form_tokens_are_bound_to_user_action_and_target() {
        let keys = Keys::new(None);
        let t = keys.form_token("alice", "delete", "repo:tag");
        assert!(keys.form_token_ok(&t, "alice", "delete", "repo:tag"));
        assert!(!keys.form_token_ok(&t, "mallory", "delete", "repo:tag"));
        assert!(!keys.form_token_ok(&t, "alice", "delete", "repo:other"));
        assert!(!keys.form_token_ok("", "alice", "delete", "repo:tag"));
        assert!(!Keys::new(None).form_token_ok(&t, "alice", "delete", "repo:tag"));
    }

    #[test]
    fn cross_site_posts_are_refused() {
        let h = |pairs: &[(&'static str, &str)]| {
            let mut m = HeaderMap::new();
            for (k, v) in pairs {
                m.insert(*k, v.parse().unwrap());
            }
            m
        };
        assert!(same_origin(&h(&[("host", "r:5000")])));
        assert!(same_origin(&h(&[("sec-fetch-site", "same-origin")])));
        assert!(!same_origin(&h(&[("sec-fetch-site", "cross-site")])));
        assert!(!same_origin(&h(&[("sec-fetch-site", "same-site")])));
        assert!(same_origin(&h(&[
            ("origin", "http://r:5000"),
            ("host", "r:5000")
        ])));
        assert!(!same_origin(&h(&[
            ("origin", "http://evil"),
            ("host", "r:5000")
        ])));
        assert!(!same_origin(&h(&[("origin", "null"), ("host", "r:5000")])));
    }

    #[test]
    fn cookies_are_found_among_others() {
        let mut m = HeaderMap::new();
        m.insert(
            http::header::COOKIE,
            "a=1; registry_session=x.y.z; b=2".parse().unwrap(),
        );
        assert_eq!(cookie(&m, COOKIE), Some("x.y.z"));
        assert_eq!(cookie(&m, "c"), None);
        let set = set_cookie("v", "/", true);
        assert!(
            set.contains("HttpOnly") && set.contains("Secure") && set.contains("Max-Age=28800")
        );
        assert!(!set_cookie("v", "/", false).contains("Secure"));
        assert!(set_cookie("", "/", false).contains("Max-Age=0"));
    }
}
