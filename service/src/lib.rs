//! The plumbing every cluster service (ingest, billing) shares, so that each
//! answers operators the same way:
//!
//! - [`auth`]: bearer tokens carrying a role (viewer, clerk, operator, admin).
//! - [`ops`]: `/health`, `/ready` and Prometheus `/metrics`.
//! - [`error`]: the JSON error body; internals are logged, never sent.
//! - [`telemetry`] and [`shutdown`]: tracing set-up and the SIGTERM/SIGINT token.
//! - [`db`] (feature `db`): each service's schema migrations, history kept
//!   in its schema. Without the feature the crate links no sqlx, so the
//!   gateway shares the rest (shutdown, metrics, [`secret`], [`mqtt_url`]).
//! - [`secret`]: passwords, tokens and database URLs with a redacted `Debug`.
//! - [`mqtt_url`]: the one parser of `mqtt://` / `mqtts://` broker URLs.
//! - [`limits`]: rate limits per IP and token, load shedding, request deadlines.
//! - [`serve`]: an axum server that drains in-flight requests on shutdown.
//!
//! It must never hold domain logic: that lives in the service crates.

pub mod auth;
#[cfg(feature = "db")]
pub mod db;
pub mod error;
pub mod limits;
pub mod mqtt_url;
pub mod ops;
pub mod secret;
pub mod shutdown;
pub mod telemetry;

use std::net::SocketAddr;
use tokio_util::sync::CancellationToken;

/// Serves `router` on `listener` until `shutdown` fires, then lets requests in
/// flight finish (Kubernetes sends SIGTERM and waits for the grace period).
/// Requests carry the peer's address (`ConnectInfo<SocketAddr>`) for the
/// per-IP limits of [`limits`].
pub async fn serve(
    listener: tokio::net::TcpListener,
    router: axum::Router,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    let addr: Option<SocketAddr> = listener.local_addr().ok();
    tracing::info!(?addr, "http listening");
    axum::serve(
        listener,
        router.into_make_service_with_connect_info::<SocketAddr>(),
    )
    .with_graceful_shutdown(async move { shutdown.cancelled().await })
    .await
}
