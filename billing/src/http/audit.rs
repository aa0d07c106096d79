//! The audit log (viewer): who changed what, when and why, newest first.

use super::{api_error, limit, Answer, AppState, Query};
use axum::extract::State;
use axum::routing::get;
use axum::{Json, Router};
use waterworks_api::billing::{AuditPage, AuditQuery, MAX_AUDIT, MAX_TARGET_CHARS};
use waterworks_api::ErrorBody;
use waterworks_service::error::ApiError;

pub(super) fn viewer() -> Router<AppState> {
    Router::new().route("/api/v1/audit", get(audit))
}

/// The newest audit records, optionally of one target.
#[utoipa::path(get, path = "/api/v1/audit", tag = "audit",
    params(AuditQuery),
    responses((status = 200, body = AuditPage), (status = 400, body = ErrorBody)),
    security(("bearer" = [])), extensions(("x-role" = json!("viewer"))))]
pub(crate) async fn audit(
    State(s): State<AppState>,
    Query(q): Query<AuditQuery>,
) -> Answer<AuditPage> {
    let limit = limit(q.limit, 100, MAX_AUDIT)?;
    if q.target
        .as_ref()
        .is_some_and(|t| t.chars().count() > MAX_TARGET_CHARS)
    {
        return Err(ApiError::BadRequest(format!(
            "target must be at most {MAX_TARGET_CHARS} characters"
        ))
        .into());
    }
    let audit = crate::corrections::audit_log(&s.pool, q.target.as_deref(), limit)
        .await
        .map_err(api_error)?;
    Ok(Json(AuditPage { audit }))
}
