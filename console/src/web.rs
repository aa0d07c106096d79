//! The page-handler pattern every area follows:
//!
//! ```ignore
//! async fn meters(ctx: Authed, Query(q): Query<Search>) -> Result<Markup, PageError> {
//!     let list: MeterList = ctx.app.ingest.get(ctx.token(), &path).await?;
//!     Ok(ctx.page(ctx.t("nav.meters"), html! { ... }))
//! }
//! ```
//!
//! - [`Ctx`] is any request's language and (maybe) session; [`Authed`] is one
//!   with a session, and sends anyone else to the login page.
//! - Handlers return `Result<_, PageError>` and use `?` on backend calls: a
//!   403 from a backend becomes the refusal page, 401 (token revoked) ends
//!   the session, a 5xx the "unavailable" page. [`render_errors`] draws these
//!   in the layout and the person's language.
//! - [`Authed::require`] refuses a role up front (so a forced URL is refused by
//!   the console too, not only by the backend).
//! - [`check_origin`] refuses a POST from another origin (CSRF).

use crate::backend::BackendError;
use crate::i18n::{self, Lang};
use crate::session::{self, Session};
use crate::App;
use axum::extract::{FromRequestParts, Request, State};
use axum::http::request::Parts;
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Redirect, Response};
use maud::Markup;
use std::sync::Arc;
use waterworks_service::auth::Role;

/// The value of cookie `name` in the request's `Cookie` headers.
pub fn cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .find_map(|kv| {
            let (k, v) = kv.trim().split_once('=')?;
            (k == name).then_some(v)
        })
}

/// Any request: its language and, if signed in, its session.
#[derive(Clone)]
pub struct Ctx {
    pub app: Arc<App>,
    pub lang: Lang,
    pub session: Option<Session>,
    /// The request's path and query (for "back to where you were").
    pub path: String,
}

impl Ctx {
    pub fn from_headers(app: &Arc<App>, headers: &HeaderMap, path: String) -> Ctx {
        let lang = Lang::choose(
            cookie(headers, i18n::LANG_COOKIE),
            headers
                .get(header::ACCEPT_LANGUAGE)
                .and_then(|v| v.to_str().ok()),
        );
        let session = cookie(headers, session::COOKIE).and_then(|id| app.sessions.get(id));
        Ctx {
            app: app.clone(),
            lang,
            session,
            path,
        }
    }

    /// The message `key` in this request's language.
    pub fn t(&self, key: &'static str) -> &'static str {
        i18n::t(self.lang, key)
    }

    /// `body` inside the layout (header, nav by role, language switch).
    pub fn page(&self, title: &str, body: Markup) -> Markup {
        crate::layout::page(self, title, body)
    }
}

impl FromRequestParts<Arc<App>> for Ctx {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(
        parts: &mut Parts,
        app: &Arc<App>,
    ) -> Result<Self, Self::Rejection> {
        let path = parts
            .uri
            .path_and_query()
            .map(|p| p.as_str().to_string())
            .unwrap_or_else(|| "/".into());
        Ok(Ctx::from_headers(app, &parts.headers, path))
    }
}

/// A request from someone signed in; others are sent to `/login?next=...`.
#[derive(Clone)]
pub struct Authed {
    pub ctx: Ctx,
    pub session: Session,
}

impl std::ops::Deref for Authed {
    type Target = Ctx;
    fn deref(&self) -> &Ctx {
        &self.ctx
    }
}

impl Authed {
    /// The person's bearer token, for backend calls.
    pub fn token(&self) -> &str {
        &self.session.token
    }

    /// Refuses (403 page) unless the person's role allows `role`.
    pub fn require(&self, role: Role) -> Result<(), PageError> {
        if self.session.role.allows(role) {
            Ok(())
        } else {
            tracing::info!(who = %self.session.name, role = self.session.role.as_str(), needed = role.as_str(), path = %self.path, "console refused");
            Err(PageError::Forbidden(None))
        }
    }
}

impl FromRequestParts<Arc<App>> for Authed {
    type Rejection = Response;

    async fn from_request_parts(
        parts: &mut Parts,
        app: &Arc<App>,
    ) -> Result<Self, Self::Rejection> {
        let ctx = match Ctx::from_request_parts(parts, app).await {
            Ok(c) => c,
            Err(never) => match never {},
        };
        match ctx.session.clone() {
            Some(session) => Ok(Authed { ctx, session }),
            None => {
                let next = crate::backend::query(&[("next", Some(ctx.path.clone()))]);
                Err(Redirect::to(&format!("/login{next}")).into_response())
            }
        }
    }
}

/// What a page handler may fail with. Rendered by [`render_errors`].
#[derive(Debug, Clone, thiserror::Error)]
pub enum PageError {
    /// The role may not do or see this (the console's check or a backend's 403).
    #[error("forbidden")]
    Forbidden(Option<String>),
    #[error("not found: {0}")]
    NotFound(String),
    #[error("bad request: {0}")]
    BadRequest(String),
    #[error("conflict: {0}")]
    Conflict(String),
    /// The token stopped working: the session is ended, login again.
    #[error("session ended")]
    SignedOut,
    #[error("{0} unavailable")]
    Unavailable(&'static str),
}

impl From<BackendError> for PageError {
    fn from(e: BackendError) -> Self {
        match e {
            BackendError::Unauthorized => PageError::SignedOut,
            BackendError::Forbidden(m) => PageError::Forbidden(Some(m)),
            BackendError::NotFound(m) => PageError::NotFound(m),
            BackendError::BadRequest(m) => PageError::BadRequest(m),
            BackendError::Conflict(m) => PageError::Conflict(m),
            BackendError::Unavailable { service } => PageError::Unavailable(service),
        }
    }
}

impl PageError {
    fn status(&self) -> StatusCode {
        match self {
            PageError::Forbidden(_) => StatusCode::FORBIDDEN,
            PageError::NotFound(_) => StatusCode::NOT_FOUND,
            PageError::BadRequest(_) => StatusCode::BAD_REQUEST,
            PageError::Conflict(_) => StatusCode::CONFLICT,
            PageError::SignedOut => StatusCode::SEE_OTHER,
            PageError::Unavailable(_) => StatusCode::BAD_GATEWAY,
        }
    }
}

impl IntoResponse for PageError {
    /// An empty answer carrying the error; [`render_errors`] fills in the page.
    fn into_response(self) -> Response {
        let mut resp = self.status().into_response();
        resp.extensions_mut().insert(self);
        resp
    }
}

/// Draws a [`PageError`] as a page in the layout (or, for `SignedOut`, ends
/// the session and redirects to the login page).
pub async fn render_errors(State(app): State<Arc<App>>, req: Request, next: Next) -> Response {
    let path = req
        .uri()
        .path_and_query()
        .map(|p| p.as_str().to_string())
        .unwrap_or_else(|| "/".into());
    let headers = req.headers().clone();
    let resp = next.run(req).await;
    let Some(err) = resp.extensions().get::<PageError>().cloned() else {
        return resp;
    };
    let ctx = Ctx::from_headers(&app, &headers, path);
    metrics::counter!("console_page_errors_total", "status" => err.status().as_str().to_string())
        .increment(1);
    if let PageError::SignedOut = err {
        if let Some(id) = cookie(&headers, session::COOKIE) {
            app.sessions.remove(id);
        }
        let next = crate::backend::query(&[("next", Some(ctx.path.clone()))]);
        return Redirect::to(&format!("/login{next}")).into_response();
    }
    let status = err.status();
    (status, crate::layout::error_page(&ctx, &err)).into_response()
}

/// Refuses a state-changing request whose `Origin` (or, without one,
/// `Referer`) is not this console's own origin. Browsers send `Origin` on
/// every cross-site POST, so a form on another site cannot act for a
/// signed-in person (the SameSite=Strict cookie is the second lock).
pub async fn check_origin(State(app): State<Arc<App>>, req: Request, next: Next) -> Response {
    if matches!(*req.method(), Method::GET | Method::HEAD | Method::OPTIONS) {
        return next.run(req).await;
    }
    let headers = req.headers();
    let host = headers.get(header::HOST).and_then(|v| v.to_str().ok());
    let origin = headers
        .get(header::ORIGIN)
        .or_else(|| headers.get(header::REFERER))
        .and_then(|v| v.to_str().ok())
        .and_then(|v| url::Url::parse(v).ok());
    let same = match (host, origin) {
        (Some(host), Some(o)) => {
            let authority = match o.port() {
                Some(p) => format!("{}:{p}", o.host_str().unwrap_or("")),
                None => o.host_str().unwrap_or("").to_string(),
            };
            authority.eq_ignore_ascii_case(host)
        }
        _ => false,
    };
    if same {
        return next.run(req).await;
    }
    metrics::counter!("console_csrf_refused_total").increment(1);
    tracing::warn!(?host, "refused a POST from another origin");
    let ctx = Ctx::from_headers(&app, req.headers(), req.uri().path().to_string());
    let err = PageError::Forbidden(Some(ctx.t("error.csrf").to_string()));
    (StatusCode::FORBIDDEN, crate::layout::error_page(&ctx, &err)).into_response()
}

/// Headers on every answer: no framing, scripts only from this origin.
pub async fn security_headers(req: Request, next: Next) -> Response {
    let mut resp = next.run(req).await;
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data:; frame-ancestors 'none'; form-action 'self'",
        ),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("same-origin"),
    );
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cookies_are_found_among_several() {
        let mut h = HeaderMap::new();
        h.append(header::COOKIE, HeaderValue::from_static("a=1; ww_lang=en"));
        h.append(header::COOKIE, HeaderValue::from_static("ww_session=abc"));
        assert_eq!(cookie(&h, "ww_lang"), Some("en"));
        assert_eq!(cookie(&h, "ww_session"), Some("abc"));
        assert_eq!(cookie(&h, "b"), None);
    }
}
