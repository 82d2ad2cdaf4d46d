//! Signing in and out of the page with the registry's htpasswd users: a
//! signed session cookie (`session`), and a way back to the page that asked.

use std::net::SocketAddr;

use http::{HeaderValue, Response, StatusCode};

use super::pages::LoginPage;
use super::{field, is_page, redirect, session, Failure, Page, PageResult};
use crate::server::body::Body;

impl Page<'_> {
    pub(super) fn login_form(&self, error: Option<String>, status: StatusCode) -> PageResult {
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
    pub(super) fn is_own_path(&self, next: &str) -> bool {
        next.strip_prefix(&self.base)
            .and_then(|rest| rest.strip_prefix('/'))
            .is_some_and(|rest| {
                !rest.starts_with('/')
                    && !rest.contains('\\')
                    && is_page(rest.split('?').next().unwrap_or(""))
            })
    }

    pub(super) async fn login(&self, form: &[(String, String)], peer: SocketAddr) -> PageResult {
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
        let binding = self.app.auth.session_binding(user).unwrap_or_default();
        self.set_session(&mut resp, &self.app.page_keys.session(user, &binding));
        tracing::info!(user, "signed in to the web page");
        Ok(resp)
    }

    pub(super) fn logout(&self) -> PageResult {
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
}
