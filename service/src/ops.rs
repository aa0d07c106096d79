//! Operational routes, open without a token: `/health` (the process is alive),
//! `/ready` (it can do its work: database reachable, broker connected) and
//! `/metrics` (Prometheus text format).

use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, OnceLock};

/// Answers whether the service is ready; `Err` carries the reason shown to the probe.
pub type ReadyCheck =
    Arc<dyn Fn() -> Pin<Box<dyn Future<Output = Result<(), String>> + Send>> + Send + Sync>;

/// Histograms rendered as Prometheus histograms (these buckets, in
/// seconds) instead of summaries. Every other histogram stays a summary: the
/// dashboards read quantiles of `ingest_batch_seconds`.
pub const HISTOGRAM_BUCKETS: &[(&str, &[f64])] = &[(
    "gateway_round_seconds",
    &[0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 10.0, 60.0],
)];

/// The handle, and whether its recorder is the process's global one.
static PROMETHEUS: OnceLock<(PrometheusHandle, bool)> = OnceLock::new();

fn installed() -> &'static (PrometheusHandle, bool) {
    PROMETHEUS.get_or_init(|| {
        let mut builder = PrometheusBuilder::new();
        for (name, buckets) in HISTOGRAM_BUCKETS {
            builder = builder
                .set_buckets_for_metric(Matcher::Full((*name).to_string()), buckets)
                .expect("HISTOGRAM_BUCKETS lists no empty bucket set");
        }
        let recorder = builder.build_recorder();
        let handle = recorder.handle();
        let ours = metrics::set_global_recorder(recorder).is_ok();
        (handle, ours)
    })
}

/// The process-wide Prometheus recorder, installed on first use. Several
/// services in one process (the demo, the gateway beside them) share it.
/// Another recorder may already be installed (tests); metrics then go there
/// and this handle renders an empty page, which is harmless for a service.
pub fn prometheus() -> PrometheusHandle {
    installed().0.clone()
}

/// Another metrics recorder was installed before ours: its owner exports
/// the metrics, and our `/metrics` would be an empty page.
#[derive(Debug, Clone, thiserror::Error)]
#[error("another metrics recorder is already installed in this process")]
pub struct ForeignRecorder;

/// [`prometheus`], refusing when the process's recorder is someone else's
/// (a host program exporting its own metrics): the gateway's choice, so
/// that an operator never scrapes a silently empty page.
pub fn try_prometheus() -> Result<PrometheusHandle, ForeignRecorder> {
    match installed() {
        (handle, true) => Ok(handle.clone()),
        (_, false) => Err(ForeignRecorder),
    }
}

/// `GET /metrics` in Prometheus text format, rendered from `handle`.
pub fn metrics_routes(handle: PrometheusHandle) -> Router {
    Router::new().route(
        "/metrics",
        get(move || {
            let handle = handle.clone();
            async move {
                handle.run_upkeep();
                (
                    [(
                        axum::http::header::CONTENT_TYPE,
                        "text/plain; version=0.0.4",
                    )],
                    handle.render(),
                )
            }
        }),
    )
}

pub fn routes(ready: ReadyCheck) -> Router {
    Router::new()
        .route("/health", get(|| async { "ok" }))
        .route(
            "/ready",
            get(move || {
                let ready = ready.clone();
                async move {
                    match ready().await {
                        Ok(()) => (StatusCode::OK, "ready".to_string()).into_response(),
                        Err(why) => (StatusCode::SERVICE_UNAVAILABLE, why).into_response(),
                    }
                }
            }),
        )
        .merge(metrics_routes(prometheus()))
}
