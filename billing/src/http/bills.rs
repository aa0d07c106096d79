//! Bills: pages of a period, one bill, its ledger entries, its notice, the
//! search (viewer); release, cancel, rebill and adjust (clerk). Every
//! change is attributed to the caller's token name in the audit log.

use super::{
    api_error, db_error, like_escape, limit, parse_id, parse_period, search_text, Answer, AppState,
    Body, HttpError, Query,
};
use crate::period::Period;
use crate::run::SqlReads;
use axum::extract::{Path, State};
use axum::routing::{get, post};
use axum::{Extension, Json, Router};
use chrono::Datelike;
use waterworks_api::billing::{
    AdjustmentOutcome, AdjustmentRequest, Bill, BillEntries, BillHit, BillPage, BillSearch,
    BillSearchQuery, BillStatus, BillSummary, BillsQuery, CancelOutcome, CancelRequest, Entry,
    EntryPostingRow, HistoryMonth, Notice, RebillOutcome, RebillRequest, UsagePeriod,
    HISTORY_MONTHS, MAX_ADJUSTMENT_KRW, MAX_ENTRY_POSTINGS, MAX_PAGE, MAX_READS, MAX_REASON_CHARS,
    MAX_SEARCH, MAX_VOLUME_L,
};
use waterworks_api::ErrorBody;
use waterworks_service::auth::Caller;
use waterworks_service::error::ApiError;

pub(super) fn viewer() -> Router<AppState> {
    Router::new()
        .route("/api/v1/bills", get(list_bills))
        .route("/api/v1/bills/search", get(search_bills))
        .route("/api/v1/bills/{id}", get(get_bill))
        .route("/api/v1/bills/{id}/entries", get(bill_entries))
        .route("/api/v1/bills/{id}/notice", get(bill_notice))
}

pub(super) fn clerk() -> Router<AppState> {
    Router::new()
        .route("/api/v1/bills/{id}/release", post(release_bill))
        .route("/api/v1/bills/{id}/cancel", post(cancel))
        .route("/api/v1/bills/{id}/rebill", post(rebill))
        .route("/api/v1/bills/{id}/adjustments", post(adjust))
}

/// The columns of [`BillSummary`] (`bill_number` is derived from `bill_no`).
pub(crate) const SUMMARY_COLUMNS: &str = "b.bill_id, b.period, b.account_no, b.run_id, b.bill_no, \
     CASE WHEN b.bill_no IS NULL THEN NULL \
          ELSE b.period || '-' || CASE WHEN b.bill_no < 10000000 THEN lpad(b.bill_no::text, 7, '0') \
                                       ELSE b.bill_no::text END END AS bill_number, \
     b.status, b.hold_reasons, b.usage_type, b.usage_m3, b.estimated, b.tariff_version, \
     b.water_krw, b.sewer_krw, b.base_krw, b.levy_krw, b.reduction_krw, b.total_krw, \
     b.input_hash, b.created_at";

/// One bill with its legs and lines, or `None`.
pub(crate) async fn load_bill(s: &AppState, id: i64) -> Result<Option<Bill>, HttpError> {
    sqlx::query_as(&format!(
        "SELECT {SUMMARY_COLUMNS}, b.legs, b.lines FROM billing.bills b WHERE b.bill_id = $1"
    ))
    .bind(id)
    .fetch_optional(&s.pool)
    .await
    .map_err(db_error)
}

/// Bills of a period in id order, a keyset page: at most `limit` rows and
/// `max_page_bytes` of JSON; `next_after_id` continues it.
#[utoipa::path(get, path = "/api/v1/bills", tag = "bills",
    params(BillsQuery),
    responses((status = 200, body = BillPage), (status = 400, body = ErrorBody)),
    security(("bearer" = [])), extensions(("x-role" = json!("viewer"))))]
pub(crate) async fn list_bills(
    State(s): State<AppState>,
    Query(q): Query<BillsQuery>,
) -> Answer<BillPage> {
    let period = parse_period(&q.period)?;
    let limit = limit(q.limit, 100, MAX_PAGE)?;
    let rows: Vec<BillSummary> = sqlx::query_as(&format!(
        "SELECT {SUMMARY_COLUMNS} FROM billing.bills b \
          WHERE b.period = $1 AND ($2::text IS NULL OR b.account_no = $2) \
            AND ($3::text IS NULL OR b.status = $3) AND b.bill_id > $4 \
          ORDER BY b.bill_id LIMIT $5"
    ))
    .bind(period.to_string())
    .bind(q.account_no)
    .bind(q.status)
    .bind(q.after_id.unwrap_or(0))
    .bind(limit)
    .fetch_all(&s.pool)
    .await
    .map_err(db_error)?;
    // A page ends at `limit` rows or `max_page_bytes` of JSON, whichever
    // comes first (at least one row, so the cursor always moves).
    let fetched = rows.len();
    let mut bills = Vec::with_capacity(fetched);
    let mut bytes = 0usize;
    for b in rows {
        let size = serde_json::to_vec(&b).map_or(0, |v| v.len()) + 1;
        if !bills.is_empty() && bytes + size > s.max_page_bytes {
            break;
        }
        bytes += size;
        bills.push(b);
    }
    let cut = bills.len() < fetched;
    let next_after_id = if cut || bills.len() as i64 == limit {
        bills.last().map(|b| b.bill_id)
    } else {
        None
    };
    Ok(Json(BillPage {
        bills,
        next_after_id,
    }))
}

/// One bill with its legs and explained lines.
#[utoipa::path(get, path = "/api/v1/bills/{id}", tag = "bills",
    params(("id" = i64, Path, description = "The bill's id")),
    responses((status = 200, body = Bill), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody)),
    security(("bearer" = [])), extensions(("x-role" = json!("viewer"))))]
pub(crate) async fn get_bill(State(s): State<AppState>, Path(id): Path<String>) -> Answer<Bill> {
    let id = parse_id(&id, "bill")?;
    load_bill(&s, id)
        .await?
        .map(Json)
        .ok_or_else(|| ApiError::NotFound(format!("no bill {id}")).into())
}

/// The ledger entries naming a bill, with their postings.
#[utoipa::path(get, path = "/api/v1/bills/{id}/entries", tag = "bills",
    params(("id" = i64, Path, description = "The bill's id")),
    responses((status = 200, body = BillEntries), (status = 400, body = ErrorBody)),
    security(("bearer" = [])), extensions(("x-role" = json!("viewer"))))]
pub(crate) async fn bill_entries(
    State(s): State<AppState>,
    Path(id): Path<String>,
) -> Answer<BillEntries> {
    let id = parse_id(&id, "bill")?;
    let rows: Vec<EntryPostingRow> = sqlx::query_as(
        "SELECT e.entry_id, e.source, e.idem_key, e.effective_on, e.memo, e.created_by, e.created_at, \
                p.ledger_account, p.component, p.amount_krw \
           FROM billing.journal_entries e JOIN billing.postings p USING (entry_id) \
          WHERE e.entry_id IN (SELECT entry_id FROM billing.postings \
                 WHERE party = (SELECT account_no FROM billing.bills WHERE bill_id = $1) AND bill_id = $1) \
          ORDER BY e.entry_id, p.ledger_account LIMIT $2",
    )
    .bind(id)
    .bind(MAX_ENTRY_POSTINGS)
    .fetch_all(&s.pool)
    .await
    .map_err(db_error)?;
    Ok(Json(BillEntries {
        bill_id: id,
        entries: Entry::group(rows),
    }))
}

/// `2026-10-0000012` -> (`2026-10`, 12).
fn parse_bill_number(q: &str) -> Option<(Period, i64)> {
    let (period, no) = q.rsplit_once('-')?;
    let period: Period = period.parse().ok()?;
    if no.is_empty() || !no.bytes().all(|b| b.is_ascii_digit()) || no.len() > 12 {
        return None;
    }
    Some((period, no.parse().ok()?))
}

/// Bills by bill number (`YYYY-MM-NNNNNNN`), account number, customer or
/// address, newest period first.
#[utoipa::path(get, path = "/api/v1/bills/search", tag = "bills",
    params(BillSearchQuery),
    responses((status = 200, body = BillSearch), (status = 400, body = ErrorBody)),
    security(("bearer" = [])), extensions(("x-role" = json!("viewer"))))]
pub(crate) async fn search_bills(
    State(s): State<AppState>,
    Query(q): Query<BillSearchQuery>,
) -> Answer<BillSearch> {
    let limit = limit(q.limit, 50, MAX_SEARCH)?;
    let period = q.period.as_deref().map(parse_period).transpose()?;
    let Some(text) = search_text(&q.q)? else {
        return Ok(Json(BillSearch {
            bills: Vec::new(),
            truncated: false,
        }));
    };
    let columns = format!("{SUMMARY_COLUMNS}, coalesce(a.customer, '') AS customer, coalesce(a.address, '') AS address");
    let bills: Vec<BillHit> = if let Some((p, no)) = parse_bill_number(&text) {
        sqlx::query_as(&format!(
            "SELECT {columns} FROM billing.bills b LEFT JOIN billing.accounts a USING (account_no) \
              WHERE b.period = $1 AND b.bill_no = $2 AND ($3::text IS NULL OR b.status = $3)"
        ))
        .bind(p.to_string())
        .bind(no)
        .bind(q.status)
        .fetch_all(&s.pool)
        .await
    } else {
        let esc = like_escape(&text);
        // Accounts first (bounded), then their bills through the account index.
        sqlx::query_as(&format!(
            "WITH acc AS (SELECT account_no FROM billing.accounts \
                           WHERE account_no = $1 OR account_no LIKE $2 \
                              OR customer ILIKE $3 OR address ILIKE $3 \
                           ORDER BY account_no LIMIT $6) \
             SELECT {columns} FROM billing.bills b LEFT JOIN billing.accounts a USING (account_no) \
              WHERE b.account_no IN (SELECT account_no FROM acc) \
                AND ($4::text IS NULL OR b.period = $4) AND ($5::text IS NULL OR b.status = $5) \
              ORDER BY b.period DESC, b.account_no, b.bill_id DESC LIMIT $6"
        ))
        .bind(&text)
        .bind(format!("{esc}%"))
        .bind(format!("%{esc}%"))
        .bind(period.map(|p| p.to_string()))
        .bind(q.status)
        .bind(limit)
        .fetch_all(&s.pool)
        .await
    }
    .map_err(db_error)?;
    let truncated = bills.len() as i64 == limit;
    Ok(Json(BillSearch { bills, truncated }))
}

/// The due date printed on the notice of a period's bill: the last day of the
/// month after the period (bills of usage month X are issued in X+1 and
/// payable until its end; ageing counts from the first day of X+1).
pub fn due_on(period: Period) -> chrono::NaiveDate {
    period
        .next()
        .next()
        .first_day()
        .pred_opt()
        .expect("a month's first day has a day before it")
}

/// Live (not cancelled) bills of an account from `from` to `to` inclusive.
pub(crate) async fn live_bills(
    s: &AppState,
    no: &str,
    from: Period,
    to: Period,
) -> Result<Vec<waterworks_api::billing::AccountBill>, HttpError> {
    sqlx::query_as(
        "SELECT period, bill_id, usage_m3, total_krw, status FROM billing.bills \
          WHERE account_no = $1 AND period >= $2 AND period <= $3 AND status <> 'cancelled' \
          ORDER BY period",
    )
    .bind(no)
    .bind(from.to_string())
    .bind(to.to_string())
    .fetch_all(&s.pool)
    .await
    .map_err(db_error)
}

/// One entry per month of the [`HISTORY_MONTHS`] ending at `last`, oldest
/// first; months without a live bill carry no usage.
pub(crate) fn history(
    last: Period,
    bills: &[waterworks_api::billing::AccountBill],
) -> Vec<HistoryMonth> {
    (0..HISTORY_MONTHS)
        .rev()
        .map(|back| {
            let period = last.add_months(-(back as i32)).to_string();
            let b = bills.iter().find(|b| b.period == period);
            HistoryMonth {
                bill_id: b.map(|b| b.bill_id),
                usage_m3: b.map(|b| b.usage_m3),
                total_krw: b.map(|b| b.total_krw),
                period,
            }
        })
        .collect()
}

/// What the printed bill notice (고지서) shows: the bill with its lines, the
/// account, 12 months of usage ending at the bill's period, the amount
/// still open and the due date.
#[utoipa::path(get, path = "/api/v1/bills/{id}/notice", tag = "bills",
    params(("id" = i64, Path, description = "The bill's id")),
    responses((status = 200, body = Notice), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody)),
    security(("bearer" = [])), extensions(("x-role" = json!("viewer"))))]
pub(crate) async fn bill_notice(
    State(s): State<AppState>,
    Path(id): Path<String>,
) -> Answer<Notice> {
    let id = parse_id(&id, "bill")?;
    let bill = load_bill(&s, id)
        .await?
        .ok_or_else(|| HttpError::from(ApiError::NotFound(format!("no bill {id}"))))?;
    let no = bill.summary.account_no.clone();
    let period: Period = bill.summary.period.parse().map_err(ApiError::internal)?;
    let account = super::accounts::load_header(&s, &no).await?;
    let first = period.add_months(-(HISTORY_MONTHS as i32 - 1));
    let mut bills = live_bills(&s, &no, first, period).await?;
    // The notice is of this bill, whatever its status: its month shows it.
    bills.retain(|b| b.period != bill.summary.period);
    bills.push(waterworks_api::billing::AccountBill {
        period: bill.summary.period.clone(),
        bill_id: id,
        usage_m3: bill.summary.usage_m3,
        total_krw: bill.summary.total_krw,
        status: bill.summary.status,
    });
    let open_krw: i64 = sqlx::query_scalar(
        "SELECT coalesce(sum(amount_krw), 0)::int8 FROM billing.postings \
          WHERE bill_id = $1 AND ledger_account = '1100' AND party = $2",
    )
    .bind(id)
    .bind(&no)
    .fetch_one(&s.pool)
    .await
    .map_err(db_error)?;
    let issued_on = bill
        .summary
        .created_at
        .with_timezone(&crate::period::kst())
        .date_naive();
    let usage_period = UsagePeriod {
        from: period.first_day(),
        to: period
            .next()
            .first_day()
            .pred_opt()
            .expect("a month's first day has a day before it"),
        month: period.month(),
        year: period.first_day().year(),
    };
    Ok(Json(Notice {
        history: history(period, &bills),
        open_krw,
        paid_krw: bill.summary.total_krw - open_krw,
        issued_on,
        due_on: due_on(period),
        usage_period,
        account,
        bill,
    }))
}

/// Issue a held bill after review: it gets its number and its ledger entry.
#[utoipa::path(post, path = "/api/v1/bills/{id}/release", tag = "bills",
    params(("id" = i64, Path, description = "The bill's id")),
    responses((status = 200, body = Bill, description = "The bill, now issued"),
        (status = 400, body = ErrorBody), (status = 404, body = ErrorBody),
        (status = 409, body = ErrorBody, description = "The bill is not held")),
    security(("bearer" = [])), extensions(("x-role" = json!("clerk"))))]
pub(crate) async fn release_bill(
    State(s): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
) -> Answer<Bill> {
    let id = parse_id(&id, "bill")?;
    crate::run::release_held_by(&s.pool, id, &caller.name)
        .await
        .map_err(api_error)?;
    get_bill(State(s), Path(id.to_string())).await
}

/// A reason of 1-500 characters, as the document bounds it (400 outside);
/// one of blanks only is well-formed but refused by the correction (422).
fn reason_length(reason: &str) -> Result<(), HttpError> {
    let n = reason.chars().count();
    if n == 0 || n > MAX_REASON_CHARS {
        return Err(ApiError::BadRequest(format!(
            "reason must be 1-{MAX_REASON_CHARS} characters"
        ))
        .into());
    }
    Ok(())
}

/// Cancel an issued or held bill: the exact reversal is posted, payments
/// are kept as the customer's credit.
#[utoipa::path(post, path = "/api/v1/bills/{id}/cancel", tag = "bills",
    params(("id" = i64, Path, description = "The bill's id")),
    request_body = CancelRequest,
    responses((status = 200, body = CancelOutcome), (status = 400, body = ErrorBody),
        (status = 404, body = ErrorBody), (status = 409, body = ErrorBody, description = "Already cancelled"),
        (status = 413, body = ErrorBody)),
    security(("bearer" = [])), extensions(("x-role" = json!("clerk"))))]
pub(crate) async fn cancel(
    State(s): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
    Body(req): Body<CancelRequest>,
) -> Answer<CancelOutcome> {
    let id = parse_id(&id, "bill")?;
    reason_length(&req.reason)?;
    crate::corrections::cancel_bill(&s.pool, id, &req.reason, &caller.name)
        .await
        .map_err(api_error)?;
    Ok(Json(CancelOutcome {
        bill_id: id,
        status: BillStatus::Cancelled,
    }))
}

/// Cancel a bill and reissue it with corrected reads and the current tariff.
#[utoipa::path(post, path = "/api/v1/bills/{id}/rebill", tag = "bills",
    params(("id" = i64, Path, description = "The bill's id")),
    request_body = RebillRequest,
    responses((status = 200, body = RebillOutcome), (status = 400, body = ErrorBody),
        (status = 404, body = ErrorBody), (status = 409, body = ErrorBody), (status = 413, body = ErrorBody)),
    security(("bearer" = [])), extensions(("x-role" = json!("clerk"))))]
pub(crate) async fn rebill(
    State(s): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
    Body(req): Body<RebillRequest>,
) -> Answer<RebillOutcome> {
    let id = parse_id(&id, "bill")?;
    reason_length(&req.reason)?;
    if req.reads.len() > 100
        || req.reads.iter().any(|r| {
            !(0..=MAX_VOLUME_L).contains(&r.start_volume_l)
                || !(0..=MAX_VOLUME_L).contains(&r.end_volume_l)
                || !(0..=MAX_READS).contains(&r.reads)
                || r.meter_id.is_empty()
                || r.meter_id.chars().count() > 64
        })
    {
        return Err(ApiError::BadRequest(format!(
            "at most 100 reads: meter_id 1-64 characters, volumes 0-{MAX_VOLUME_L} l, reads 0-{MAX_READS}"
        ))
        .into());
    }
    let req = crate::corrections::RebillRequest {
        reason: req.reason,
        reads: req
            .reads
            .into_iter()
            .map(|r| crate::usage::PeriodRead {
                meter_id: r.meter_id,
                start_ts: r.start_ts,
                start_volume_l: r.start_volume_l,
                end_ts: r.end_ts,
                end_volume_l: r.end_volume_l,
                reads: r.reads,
            })
            .collect(),
    };
    let o = crate::corrections::rebill(
        &s.pool,
        &s.book,
        id,
        &req,
        &SqlReads(&s.pool),
        &s.policy,
        &caller.name,
    )
    .await
    .map_err(api_error)?;
    Ok(Json(RebillOutcome {
        cancelled_bill_id: o.cancelled_bill_id,
        bill_id: o.bill_id,
        bill_no: o.bill_no,
        total_krw: o.total_krw,
    }))
}

/// Adjust one part of an issued bill (idempotent on `key`).
#[utoipa::path(post, path = "/api/v1/bills/{id}/adjustments", tag = "bills",
    params(("id" = i64, Path, description = "The bill's id")),
    request_body = AdjustmentRequest,
    responses((status = 200, body = AdjustmentOutcome), (status = 400, body = ErrorBody),
        (status = 404, body = ErrorBody),
        (status = 409, body = ErrorBody, description = "Not issued, key reused, or lowered below zero"),
        (status = 413, body = ErrorBody)),
    security(("bearer" = [])), extensions(("x-role" = json!("clerk"))))]
pub(crate) async fn adjust(
    State(s): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
    Body(req): Body<AdjustmentRequest>,
) -> Answer<AdjustmentOutcome> {
    use waterworks_api::billing::Part as P;
    let id = parse_id(&id, "bill")?;
    if req.amount_krw == 0 || !(-MAX_ADJUSTMENT_KRW..=MAX_ADJUSTMENT_KRW).contains(&req.amount_krw)
    {
        return Err(ApiError::BadRequest(format!(
            "amount_krw must be between -{MAX_ADJUSTMENT_KRW} and {MAX_ADJUSTMENT_KRW}, not 0"
        ))
        .into());
    }
    let part = match req.part {
        P::Levy => crate::ledger::Part::Levy,
        P::Sewer => crate::ledger::Part::Sewer,
        P::Base => crate::ledger::Part::Base,
        P::Water => crate::ledger::Part::Water,
    };
    let req = crate::corrections::AdjustmentRequest {
        part,
        amount_krw: req.amount_krw,
        reason: req.reason,
        key: req.key,
    };
    let entry_id = crate::corrections::adjust_bill(&s.pool, id, &req, &caller.name)
        .await
        .map_err(api_error)?;
    Ok(Json(AdjustmentOutcome {
        bill_id: id,
        entry_id,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use waterworks_api::billing::AccountBill;

    #[test]
    fn due_date_is_the_end_of_the_following_month() {
        let p = |s: &str| s.parse::<Period>().unwrap();
        let d = |s: &str| s.parse::<chrono::NaiveDate>().unwrap();
        assert_eq!(due_on(p("2026-10")), d("2026-11-30"));
        assert_eq!(due_on(p("2026-12")), d("2027-01-31"));
        assert_eq!(due_on(p("2028-01")), d("2028-02-29"));
    }

    #[test]
    fn bill_numbers_parse_strictly() {
        assert_eq!(
            parse_bill_number("2026-10-0000012"),
            Some(("2026-10".parse().unwrap(), 12))
        );
        assert_eq!(parse_bill_number("2026-10"), None);
        assert_eq!(parse_bill_number("AC-00012"), None);
        assert_eq!(parse_bill_number("2026-10-12a"), None);
    }

    #[test]
    fn history_has_twelve_months_oldest_first_with_gaps() {
        let last: Period = "2026-10".parse().unwrap();
        let bill = |period: &str, bill_id, usage_m3, total_krw| AccountBill {
            period: period.into(),
            bill_id,
            usage_m3,
            total_krw,
            status: BillStatus::Issued,
        };
        let bills = vec![
            bill("2026-01", 5, 20, 30_000),
            bill("2026-10", 9, 26, 41_000),
        ];
        let h = history(last, &bills);
        assert_eq!(h.len(), 12);
        assert_eq!(h[0].period, "2025-11");
        assert_eq!(h[2].period, "2026-01");
        assert_eq!(h[2].usage_m3, Some(20));
        assert_eq!(h[1].usage_m3, None);
        assert_eq!(h[11].period, "2026-10");
        assert_eq!(h[11].total_krw, Some(41_000));
    }
}
