//! Sign in with one's own access token (as the Kubernetes Dashboard does),
//! sign out, and the language switch. At login the console asks both
//! backends `GET /api/v1/whoami`; only a token both accept, with the same
//! role, opens a session.

use crate::backend::BackendError;
use crate::i18n::{Lang, LANG_COOKIE};
use crate::session::{self, Session};
use crate::web::{cookie, Ctx, PageError};
use crate::App;
use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap, HeaderValue};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::{Form, Router};
use maud::{html, Markup};
use serde::Deserialize;
use std::sync::Arc;
use waterworks_service::auth::Role;

/// `login_limits` bounds sign-in attempts (`POST /login`) per client IP.
pub fn routes(login_limits: Arc<waterworks_service::limits::Limits>) -> Router<Arc<App>> {
    let attempt = axum::routing::post(login).layer(axum::middleware::from_fn_with_state(
        login_limits,
        waterworks_service::limits::admit,
    ));
    Router::new()
        .route("/", get(home))
        .route("/login", get(login_form).merge(attempt))
        .route("/logout", post(logout))
        .route("/lang/{code}", get(switch_lang))
}

#[derive(Debug, Deserialize)]
pub struct Next {
    next: Option<String>,
}

/// Only a path of this console is a place to return to (no open redirect):
/// the one rule of [`crate::redirect`].
fn safe_next(next: Option<&str>) -> String {
    crate::redirect::local_path(next)
}

/// `/`: the first page of the person's role.
async fn home(ctx: Ctx) -> Redirect {
    match &ctx.session {
        None => Redirect::to("/login"),
        Some(s) if s.role == Role::Clerk => Redirect::to("/clerk/bills"),
        Some(_) => Redirect::to("/ops"),
    }
}

/// Whether people may sign in with a token here (always, unless single
/// sign-on is configured with `allow_token_login = false`).
fn token_login(ctx: &Ctx) -> bool {
    ctx.app
        .config
        .oidc
        .as_ref()
        .is_none_or(|o| o.allow_token_login)
}

fn form(ctx: &Ctx, next: &str, error: Option<&str>) -> Markup {
    ctx.page(
        ctx.t("login.title"),
        html! {
            section class="login" {
                h1 { (ctx.t("login.title")) }
                p { (ctx.t("login.help")) }
                @if let Some(e) = error { p class="flash error" id="login-error" { (e) } }
                @if ctx.app.sso.is_some() { (crate::sso::login_link(ctx, next)) }
                @if token_login(ctx) {
                    @if ctx.app.sso.is_some() { p { (ctx.t("sso.or_token")) } }
                    form method="post" action="/login" {
                        input type="hidden" name="next" value=(next);
                        label for="token" { (ctx.t("login.token")) }
                        input type="password" id="token" name="token" autocomplete="off" required autofocus;
                        button type="submit" id="login-submit" { (ctx.t("login.submit")) }
                    }
                }
            }
        },
    )
}

async fn login_form(ctx: Ctx, Query(q): Query<Next>) -> Markup {
    form(&ctx, &safe_next(q.next.as_deref()), None)
}

#[derive(Deserialize)]
pub struct LoginForm {
    token: String,
    next: Option<String>,
}

#[derive(Debug, Deserialize, PartialEq)]
struct WhoAmI {
    name: String,
    role: Role,
}

async fn login(
    State(app): State<Arc<App>>,
    ctx: Ctx,
    Form(f): Form<LoginForm>,
) -> Result<Response, PageError> {
    let token = f.token.trim().to_string();
    let next = safe_next(f.next.as_deref());
    let bad = |key| {
        metrics::counter!("console_logins_total", "result" => "refused").increment(1);
        Ok((
            axum::http::StatusCode::UNAUTHORIZED,
            form(&ctx, &next, Some(ctx.t(key))),
        )
            .into_response())
    };
    if !token_login(&ctx) {
        return bad("login.token_disabled");
    }
    if token.is_empty() || token.len() > 4096 {
        return bad("login.bad_token");
    }
    let (i, b) = tokio::join!(
        app.ingest.get::<WhoAmI>(&token, "/api/v1/whoami"),
        app.billing.get::<WhoAmI>(&token, "/api/v1/whoami"),
    );
    let (i, b) = match (i, b) {
        (Ok(i), Ok(b)) => (i, b),
        (Err(BackendError::Unauthorized), _) | (_, Err(BackendError::Unauthorized)) => {
            return bad("login.bad_token")
        }
        (Err(e), _) | (_, Err(e)) => return Err(e.into()),
    };
    if i.role != b.role {
        tracing::warn!(
            ingest = i.role.as_str(),
            billing = b.role.as_str(),
            "token roles disagree"
        );
        return bad("login.role_mismatch");
    }
    let id = app
        .sessions
        .create(Session::with_token(token, i.name.clone(), i.role));
    tracing::info!(who = %i.name, role = i.role.as_str(), "signed in");
    metrics::counter!("console_logins_total", "result" => "ok").increment(1);
    let mut resp = Redirect::to(&next).into_response();
    set_cookie(
        resp.headers_mut(),
        // No Max-Age: the browser keeps it for its session, and the server's
        // idle expiry (touched on every request) decides when it ends.
        &format!(
            "{}={id}; Path=/; HttpOnly; SameSite=Strict{}",
            session::COOKIE,
            if app.config.secure_cookies {
                "; Secure"
            } else {
                ""
            }
        ),
    );
    Ok(resp)
}

async fn logout(State(app): State<Arc<App>>, headers: HeaderMap) -> Response {
    // A session from the identity provider is also ended there
    // (RP-initiated logout); the local one ends here either way.
    let mut to = "/login".to_string();
    if let Some(id) = cookie(&headers, session::COOKIE) {
        if let Some(s) = app.sessions.get(id) {
            if let Some(url) = crate::sso::end_session_url(&app, &s).await {
                to = url;
            }
        }
        app.sessions.remove(id);
    }
    let mut resp = Redirect::to(&to).into_response();
    set_cookie(
        resp.headers_mut(),
        &format!(
            "{}=; Path=/; HttpOnly; SameSite=Strict; Max-Age=0",
            session::COOKIE
        ),
    );
    resp
}

async fn switch_lang(Path(code): Path<String>, Query(q): Query<Next>) -> Response {
    let lang = Lang::parse(&code).unwrap_or(Lang::Ko);
    let mut resp = Redirect::to(&safe_next(q.next.as_deref())).into_response();
    set_cookie(
        resp.headers_mut(),
        &format!(
            "{LANG_COOKIE}={}; Path=/; SameSite=Lax; Max-Age=31536000",
            lang.code()
        ),
    );
    resp
}

fn set_cookie(headers: &mut HeaderMap, value: &str) {
    if let Ok(v) = HeaderValue::from_str(value) {
        headers.append(header::SET_COOKIE, v);
    }
}
