//! Waterworks console: the operators' dashboard and the clerks' console, one
//! axum service that renders HTML on the server (maud) over the backends'
//! HTTP APIs, with htmx and uPlot embedded in the binary. A backend-for-
//! frontend: every piece of data comes from ingest or billing, fetched with
//! the signed-in person's own token, so the backends enforce the roles; the
//! console also hides what a role cannot do and refuses it when forced.
//!
//! - [`config`]: [`ConsoleConfig`] (TOML, then `CONSOLE_*` environment).
//! - [`session`]: server-side sessions (random 256-bit id, bounded, idle expiry).
//! - [`sso`]: single sign-on for staff (OpenID Connect, code flow with PKCE).
//! - [`login`]: sign in with one's token (`whoami` on both backends), out, language.
//! - [`redirect`]: the one check of every redirect target (local paths only).
//! - [`web`]: the page-handler pattern ([`web::Ctx`], [`web::Authed`],
//!   [`web::PageError`]), CSRF origin check, security headers.
//! - [`layout`]: the frame, nav by role, error page, charts, formatting.
//! - [`i18n`]: the message table (Korean, English).
//! - [`backend`]: calls to ingest and billing.
//! - [`assets`]: the embedded scripts and styles.
//! - [`ops`]: the operators' pages; `clerk`: the clerks' pages; [`master`]:
//!   customers, premises and meters (search, detail, admin edits).
//!
//! It must never hold data of its own beyond sessions and the files an
//! admin uploads to import (kept until committed: at most 8, for 15
//! minutes; [`master::import`]), nor call a backend
//! with any token but the person's own or, for a person signed in through
//! the identity provider, the console's credential of that person's role.

pub mod assets;
pub mod backend;
pub mod clerk;
pub mod config;
pub mod i18n;
pub mod layout;
pub mod login;
pub mod master;
pub mod ops;
pub mod redirect;
pub mod session;
pub mod sso;
pub mod web;

pub use config::ConsoleConfig;

use axum::Router;
use backend::Backend;
use session::Sessions;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;
use waterworks_service::ops::ReadyCheck;

/// What every handler shares.
pub struct App {
    pub config: ConsoleConfig,
    pub sessions: Sessions,
    pub ingest: Backend,
    pub billing: Backend,
    /// Single sign-on, when `[oidc]` is configured.
    pub sso: Option<sso::Sso>,
    /// Files uploaded to `/master/import` between preview and commit
    /// (bounded, expiring; see [`master::import`]).
    pub uploads: master::import::Uploads,
}

#[derive(Debug, thiserror::Error)]
pub enum ConsoleError {
    #[error("configuration: {0}")]
    Config(#[from] config::ConfigError),
    #[error("http: {0}")]
    Io(#[from] std::io::Error),
}

/// Every page and route of the console, over `app`.
pub fn router(app: Arc<App>) -> Router {
    // Sign-in attempts per client IP (guessing tokens): the service's limiter.
    let login_limits =
        waterworks_service::limits::Limits::new(waterworks_service::limits::HttpLimits {
            per_ip_per_min: app.config.login_per_ip_per_min,
            client_ip_header: app.config.client_ip_header.clone(),
            ..Default::default()
        });
    let pages = Router::new()
        .merge(login::routes(login_limits))
        .merge(sso::routes())
        .merge(ops::routes())
        .merge(clerk::routes())
        .merge(master::routes());
    let ready_app = app.clone();
    let ready: ReadyCheck = Arc::new(move || {
        let app = ready_app.clone();
        Box::pin(async move {
            let (i, b) = tokio::join!(app.ingest.healthy(), app.billing.healthy());
            match (i, b) {
                (true, true) => Ok(()),
                (false, _) => Err("ingest unreachable".into()),
                (_, false) => Err("billing unreachable".into()),
            }
        })
    });
    pages
        .layer(axum::middleware::from_fn_with_state(
            app.clone(),
            web::render_errors,
        ))
        .layer(axum::middleware::from_fn_with_state(
            app.clone(),
            web::check_origin,
        ))
        .with_state(app)
        .merge(assets::routes())
        .merge(waterworks_service::ops::routes(ready))
        .layer(axum::middleware::from_fn(web::security_headers))
}

/// A built console: configuration checked, port bound.
pub struct Console {
    listener: tokio::net::TcpListener,
    addr: SocketAddr,
    app: Arc<App>,
}

impl Console {
    pub async fn build(config: ConsoleConfig) -> Result<Console, ConsoleError> {
        config.validate()?;
        let timeout = Duration::from_millis(config.backend_timeout_ms);
        let sso = match &config.oidc {
            Some(o) => Some(sso::Sso::new(o.clone(), timeout)?),
            None => None,
        };
        let app = Arc::new(App {
            sso,
            sessions: Sessions::new(
                Duration::from_secs(config.session_idle_s),
                config.max_sessions,
            ),
            uploads: master::import::Uploads::default(),
            ingest: Backend::new("ingest", &config.ingest_url, timeout),
            billing: Backend::new("billing", &config.billing_url, timeout),
            config,
        });
        let listener = tokio::net::TcpListener::bind(app.config.http_listen).await?;
        let addr = listener.local_addr()?;
        Ok(Console {
            listener,
            addr,
            app,
        })
    }

    pub fn http_addr(&self) -> SocketAddr {
        self.addr
    }

    pub async fn run_until_stopped(self, shutdown: CancellationToken) -> Result<(), ConsoleError> {
        // The notice PDF's font is read now, so a missing one shows in the
        // start-up log rather than at a clerk's first PDF.
        let notice = clerk::notice_settings();
        if notice.font().is_ok() {
            tracing::info!(path = %notice.font_path, "notice font loaded");
        }
        tracing::info!(addr = %self.addr, "console serving");
        waterworks_service::serve(self.listener, router(self.app), shutdown).await?;
        Ok(())
    }
}

/// Builds and serves until `shutdown` is cancelled.
pub async fn run(config: ConsoleConfig, shutdown: CancellationToken) -> Result<(), ConsoleError> {
    Console::build(config)
        .await?
        .run_until_stopped(shutdown)
        .await
}
