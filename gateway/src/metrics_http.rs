//! The Prometheus endpoint: `GET /metrics` on `metrics_listen`, served by
//! the same route and server as the cluster services
//! (`waterworks_service::ops::metrics_routes` and `waterworks_service::serve`,
//! which stop on the gateway's shutdown token).
//!
//! The process's one recorder is the services' (`ops::try_prometheus`): a
//! gateway beside them in one process (the demo, tests) shares it. If
//! another recorder was installed first (a host program that exports its own
//! metrics), starting an exporter is refused with a clear error: leave
//! `metrics_listen` unset there. At most [`MAX_CONCURRENT_SCRAPES`] scrapes
//! are answered at once; further ones wait their turn. Each connection gets
//! one answer and is closed.

use crate::GatewayError;
use std::net::SocketAddr;
use tokio_util::sync::CancellationToken;
use waterworks_service::ops;

/// Most scrapes answered at once; further requests wait for a permit.
pub const MAX_CONCURRENT_SCRAPES: usize = 8;

/// The process-wide Prometheus handle, installing the recorder on first use.
pub fn handle() -> Result<metrics_exporter_prometheus::PrometheusHandle, GatewayError> {
    ops::try_prometheus().map_err(|e| GatewayError::Metrics(e.to_string()))
}

/// One answer per connection (`connection: close`): a scraper holds no
/// idle connection open on a small box, and a client that reads to the end
/// of the stream gets it.
async fn close_after_answer(mut response: axum::response::Response) -> axum::response::Response {
    response.headers_mut().insert(
        axum::http::header::CONNECTION,
        axum::http::HeaderValue::from_static("close"),
    );
    response
}

/// Binds `addr` and serves `/metrics` until `shutdown`; returns the bound address.
pub async fn serve(
    addr: SocketAddr,
    shutdown: CancellationToken,
) -> Result<SocketAddr, GatewayError> {
    let handle = handle()?;
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|e| GatewayError::Metrics(format!("bind {addr}: {e}")))?;
    let local = listener
        .local_addr()
        .map_err(|e| GatewayError::Metrics(e.to_string()))?;
    let router = ops::metrics_routes(handle)
        .layer(axum::middleware::map_response(close_after_answer))
        .layer(tower::limit::GlobalConcurrencyLimitLayer::new(
            MAX_CONCURRENT_SCRAPES,
        ));
    tokio::spawn(async move {
        if let Err(e) = waterworks_service::serve(listener, router, shutdown).await {
            tracing::warn!(error = %e, "the metrics endpoint stopped");
        }
    });
    Ok(local)
}
