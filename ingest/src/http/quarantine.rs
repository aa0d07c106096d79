//! The quarantine (operator): what ingest refused and why, newest first,
//! in pages bounded by rows and by bytes.

use super::{checked, db_error, PageBytes, Q, S};
use axum::extract::State;
use axum::routing::get;
use axum::{Extension, Json, Router};
use std::collections::BTreeMap;
use waterworks_api::ingest::{QuarantineItem, QuarantinePage, QuarantineQuery, QuarantineReason};
use waterworks_api::ErrorBody;
use waterworks_service::error::ApiError;

pub(super) fn routes() -> Router<S> {
    Router::new().route("/api/v1/quarantine", get(page))
}

/// `GET /api/v1/quarantine?reason=&limit=&cursor=` (operator), newest first
/// (by first seen), with occurrences and rows by reason. A page ends after
/// `limit` rows or before the row that would take its rows past
/// `limits.api_max_response_bytes` (it always holds one row); `next_cursor`
/// (null on the last page) continues it.
#[utoipa::path(get, path = "/api/v1/quarantine", tag = "quarantine",
    operation_id = "quarantine_page",
    summary = "Quarantined readings and messages, newest first by first sighting, in pages",
    description = "A page ends after `limit` rows or before the row that would take its items \
past `limits.api_max_response_bytes` (default 1 MiB; a page always holds one row); `next_cursor` \
continues it. Rows not seen again for `limits.quarantine_retention_days` (default 30) are deleted.",
    extensions(("x-role" = json!("operator"))),
    params(QuarantineQuery),
    responses(
        (status = 200, description = "counts by reason and one page of items", body = QuarantinePage),
        (status = 400, description = "bad_request: a parameter out of its bounds", body = ErrorBody),
    ))]
pub(super) async fn page(
    State(s): State<S>,
    Extension(PageBytes(page_bytes)): Extension<PageBytes>,
    Q(q): Q<QuarantineQuery>,
) -> Result<Json<QuarantinePage>, ApiError> {
    use futures::TryStreamExt;
    let limit = checked(q.check())?;
    let mut rows = sqlx::query_as::<_, QuarantineItem>(
        "SELECT id, received_at, last_seen_at, seen_count, gateway_id, topic, batch_seq, reason, detail,
                reading, encode(substring(payload from 1 for 4096), 'escape') AS payload, payload_len,
                CASE WHEN payload IS NOT NULL THEN encode(digest, 'hex') END AS payload_sha256,
                meter_id, ts
           FROM metering.quarantine
          WHERE ($1::text IS NULL OR reason = $1) AND ($2::int8 IS NULL OR id < $2)
          ORDER BY id DESC LIMIT $3",
    )
    .bind(q.reason)
    .bind(q.cursor)
    .bind(limit + 1)
    .fetch(&s.api_pool);
    let mut items: Vec<QuarantineItem> = Vec::new();
    let (mut bytes, mut more, mut cut) = (0usize, false, false);
    while let Some(row) = rows.try_next().await.map_err(db_error)? {
        if items.len() as i64 == limit {
            more = true;
            break;
        }
        let size = serde_json::to_vec(&row).map_err(ApiError::internal)?.len() + 1;
        if !items.is_empty() && bytes + size > page_bytes {
            cut = true;
            break;
        }
        bytes += size;
        items.push(row);
    }
    drop(rows);
    let next_cursor = (more || cut).then(|| items.last().map(|i| i.id)).flatten();
    let by_reason: Vec<(QuarantineReason, i64, i64)> = sqlx::query_as(
        "SELECT reason, sum(seen_count)::int8, count(*) FROM metering.quarantine
          GROUP BY reason ORDER BY reason",
    )
    .fetch_all(&s.api_pool)
    .await
    .map_err(db_error)?;
    let counts: BTreeMap<QuarantineReason, i64> =
        by_reason.iter().map(|(r, n, _)| (*r, *n)).collect();
    let distinct: BTreeMap<QuarantineReason, i64> =
        by_reason.into_iter().map(|(r, _, n)| (r, n)).collect();
    Ok(Json(QuarantinePage {
        counts,
        rows: distinct,
        items,
        next_cursor,
        truncated: cut,
    }))
}
