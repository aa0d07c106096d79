//! The front end's static files, vendored and embedded in the binary:
//! htmx 2.0.11 and uPlot 1.6.32 (from their npm packages; licences beside
//! them in `console/assets/`), plus the console's own small script and style.
//! Paths carry the version, so they are cached for a year.

use axum::extract::Path;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;

const FILES: &[(&str, &str, &[u8])] = &[
    (
        "htmx-2.0.11.min.js",
        "text/javascript; charset=utf-8",
        include_bytes!("../assets/htmx.min.js"),
    ),
    (
        "uPlot-1.6.32.iife.min.js",
        "text/javascript; charset=utf-8",
        include_bytes!("../assets/uPlot.iife.min.js"),
    ),
    (
        "uPlot-1.6.32.min.css",
        "text/css; charset=utf-8",
        include_bytes!("../assets/uPlot.min.css"),
    ),
    (
        concat!("console-", env!("CARGO_PKG_VERSION"), ".js"),
        "text/javascript; charset=utf-8",
        include_bytes!("../assets/console.js"),
    ),
    (
        concat!("console-", env!("CARGO_PKG_VERSION"), ".css"),
        "text/css; charset=utf-8",
        include_bytes!("../assets/console.css"),
    ),
];

pub fn routes<S: Clone + Send + Sync + 'static>() -> Router<S> {
    Router::new().route("/assets/{name}", get(asset))
}

async fn asset(Path(name): Path<String>) -> Response {
    match FILES.iter().find(|(n, _, _)| *n == name) {
        Some((_, content_type, body)) => (
            [
                (header::CONTENT_TYPE, *content_type),
                (header::CACHE_CONTROL, "public, max-age=31536000, immutable"),
            ],
            *body,
        )
            .into_response(),
        None => StatusCode::NOT_FOUND.into_response(),
    }
}
