//! Gateways and gaps (viewer): each gateway's status, last batch and
//! counters; the gaps found in gateways' batches and meters' reads.

use super::{checked, db_error, Q, S};
use axum::extract::State;
use axum::routing::get;
use axum::{Json, Router};
use waterworks_api::ingest::{Gap, GapList, GapsQuery, Gateway, GatewayList, MAX_ROWS};
use waterworks_api::ErrorBody;
use waterworks_service::error::ApiError;

pub(super) fn routes() -> Router<S> {
    Router::new()
        .route("/api/v1/gateways", get(list))
        .route("/api/v1/gaps", get(gaps))
}

/// `GET /api/v1/gateways`: online status, last batch, open sequence gaps.
#[utoipa::path(get, path = "/api/v1/gateways", tag = "gateways", operation_id = "list_gateways",
    summary = "Gateways: status, last batch, open sequence gaps (at most 10000)",
    extensions(("x-role" = json!("viewer"))),
    responses((status = 200, description = "gateways by id", body = GatewayList)))]
pub(super) async fn list(State(s): State<S>) -> Result<Json<GatewayList>, ApiError> {
    let gateways: Vec<Gateway> = sqlx::query_as(
        "SELECT g.gateway_id, g.status, g.status_at, g.last_batch_seq, g.last_batch_at, g.batches,
                g.readings, g.seq_resets,
                (SELECT count(*) FROM metering.gaps x
                  WHERE x.kind = 'batch_seq' AND x.filled_at IS NULL AND x.gateway_id = g.gateway_id) AS open_seq_gaps,
                (SELECT count(*) FROM metering.meters m WHERE m.gateway_id = g.gateway_id) AS meters
           FROM metering.gateways g ORDER BY g.gateway_id LIMIT $1",
    )
    .bind(MAX_ROWS)
    .fetch_all(&s.api_pool)
    .await
    .map_err(db_error)?;
    Ok(Json(GatewayList { gateways }))
}

/// `GET /api/v1/gaps?gateway_id&meter_id&open=true`.
#[utoipa::path(get, path = "/api/v1/gaps", tag = "gateways", operation_id = "list_gaps",
    summary = "Gaps in gateways' batches and meters' reads, newest first",
    extensions(("x-role" = json!("viewer"))),
    params(GapsQuery),
    responses(
        (status = 200, description = "gaps", body = GapList),
        (status = 400, description = "bad_request: a parameter out of its bounds", body = ErrorBody),
    ))]
pub(super) async fn gaps(
    State(s): State<S>,
    Q(q): Q<GapsQuery>,
) -> Result<Json<GapList>, ApiError> {
    let limit = checked(q.check())?;
    let gaps: Vec<Gap> = sqlx::query_as(
        "SELECT id, kind, gateway_id, meter_id, from_seq, to_seq, from_ts, to_ts, detected_at, filled_at
           FROM metering.gaps
          WHERE ($1::text IS NULL OR gateway_id = $1) AND ($2::text IS NULL OR meter_id = $2)
            AND (NOT coalesce($3, false) OR filled_at IS NULL)
          ORDER BY id DESC LIMIT $4",
    )
    .bind(q.gateway_id)
    .bind(q.meter_id)
    .bind(q.open)
    .bind(limit)
    .fetch_all(&s.api_pool)
    .await
    .map_err(db_error)?;
    Ok(Json(GapList { gaps }))
}
