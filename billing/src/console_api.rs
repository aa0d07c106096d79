//! Read endpoints the clerks' console needs and the rest of the API lacks
//! (viewer role; mounted by `service`):
//!
//! - `GET /api/v1/accounts?q=TEXT[&limit]`: accounts whose number, meter id,
//!   customer or address matches (number and meter id exactly or by prefix,
//!   customer and address by substring), with their current meters;
//! - `GET /api/v1/accounts/{no}`: one account, its meter history, its balance
//!   (open receivable and credit) and its last 12 live bills;
//! - `GET /api/v1/bills/search?q=TEXT[&period&status&limit]`: bills by bill
//!   number (`YYYY-MM-NNNNNNN`), account number, customer or address, newest
//!   period first;
//! - `GET /api/v1/bills/{id}/notice`: what the printed bill notice (고지서)
//!   shows: the bill with its lines, the account, 12 months of usage history
//!   ending at the bill's period, the amount still open and the due date;
//! - `GET /api/v1/billing-runs/{id}`: one run with its progress (bills of the
//!   period written for the group so far, against the group's accounts).
//!
//! Every answer is bounded ([`MAX_SEARCH`] rows, 12 history months).

use super::{bill_json, db_error, AppState, BILL_COLUMNS};
use crate::period::Period;
use axum::extract::{Path as UrlPath, Query, State};
use axum::routing::get;
use axum::{Json, Router};
use chrono::{DateTime, Datelike, NaiveDate, Utc};
use serde::Deserialize;
use serde_json::{json, Value};
use sqlx::Row;
use std::sync::Arc;
use waterworks_service::auth::{require, ApiTokens, Role};
use waterworks_service::error::ApiError;

/// Rows returned by a search at most.
pub const MAX_SEARCH: i64 = 200;
/// Months of usage history on a notice (the bill's own month included).
pub const HISTORY_MONTHS: usize = 12;
/// Longest search text accepted.
const MAX_QUERY_CHARS: usize = 100;

/// The console's read routes, for callers holding at least `viewer`.
pub(super) fn routes(tokens: Arc<ApiTokens>) -> Router<AppState> {
    require(
        Router::new()
            .route("/api/v1/accounts", get(search_accounts))
            .route("/api/v1/accounts/{no}", get(get_account))
            .route("/api/v1/bills/search", get(search_bills))
            .route("/api/v1/bills/{id}/notice", get(bill_notice))
            .route("/api/v1/billing-runs/{id}", get(get_run)),
        tokens,
        Role::Viewer,
    )
}

/// The due date printed on the notice of a period's bill: the last day of the
/// month after the period (bills of usage month X are issued in X+1 and
/// payable until its end; ageing counts from the first day of X+1).
pub fn due_on(period: Period) -> NaiveDate {
    period
        .next()
        .next()
        .first_day()
        .pred_opt()
        .expect("a month's first day has a day before it")
}

/// `%` and `_` are LIKE wildcards; a search for them means the characters.
fn like_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    for c in s.chars() {
        if matches!(c, '%' | '_' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

fn search_text(q: Option<String>) -> Result<String, ApiError> {
    let q = q.unwrap_or_default().trim().to_string();
    if q.is_empty() {
        return Err(ApiError::BadRequest("q (search text) is required".into()));
    }
    if q.chars().count() > MAX_QUERY_CHARS || q.chars().any(char::is_control) {
        return Err(ApiError::BadRequest(format!(
            "q must be at most {MAX_QUERY_CHARS} printable characters"
        )));
    }
    Ok(q)
}

fn bad_query(e: axum::extract::rejection::QueryRejection) -> ApiError {
    ApiError::BadRequest(e.body_text())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct AccountSearch {
    q: Option<String>,
    limit: Option<i64>,
}

async fn search_accounts(
    State(s): State<AppState>,
    q: Result<Query<AccountSearch>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<Value>, ApiError> {
    let Query(q) = q.map_err(bad_query)?;
    let text = search_text(q.q)?;
    let limit = q.limit.unwrap_or(50).clamp(1, MAX_SEARCH);
    let esc = like_escape(&text);
    let rows = sqlx::query(
        "SELECT a.account_no, a.customer, a.address, a.usage_type, a.billing_group, \
                coalesce((SELECT array_agg(m.meter_id ORDER BY m.installed_at) \
                            FROM billing.meter_installations m \
                           WHERE m.account_no = a.account_no AND m.removed_at IS NULL), '{}') \
           FROM billing.accounts a \
          WHERE a.account_no IN ( \
                SELECT account_no FROM billing.accounts \
                 WHERE account_no = $1 OR account_no LIKE $2 OR customer ILIKE $3 OR address ILIKE $3 \
                UNION \
                SELECT account_no FROM billing.meter_installations \
                 WHERE meter_id = $1 OR meter_id LIKE $2) \
          ORDER BY (a.account_no = $1) DESC, a.account_no LIMIT $4",
    )
    .bind(&text)
    .bind(format!("{esc}%"))
    .bind(format!("%{esc}%"))
    .bind(limit)
    .fetch_all(&s.pool)
    .await
    .map_err(db_error)?;
    let mut accounts = Vec::with_capacity(rows.len());
    for r in &rows {
        accounts.push(json!({
            "account_no": r.try_get::<String, _>(0).map_err(db_error)?,
            "customer": r.try_get::<String, _>(1).map_err(db_error)?,
            "address": r.try_get::<String, _>(2).map_err(db_error)?,
            "usage_type": r.try_get::<String, _>(3).map_err(db_error)?,
            "billing_group": r.try_get::<String, _>(4).map_err(db_error)?,
            "meters": r.try_get::<Vec<String>, _>(5).map_err(db_error)?,
        }));
    }
    let truncated = rows.len() as i64 == limit;
    Ok(Json(
        json!({ "accounts": accounts, "truncated": truncated }),
    ))
}

/// An account's header fields, or `None`.
async fn account_json(s: &AppState, no: &str) -> Result<Option<Value>, ApiError> {
    let Some(r) = sqlx::query(
        "SELECT account_no, customer, address, usage_type, diameter_mm, households, \
                sewer_connected, levy_exempt, reductions, billing_group \
           FROM billing.accounts WHERE account_no = $1",
    )
    .bind(no)
    .fetch_optional(&s.pool)
    .await
    .map_err(db_error)?
    else {
        return Ok(None);
    };
    let meters = sqlx::query(
        "SELECT meter_id, installed_at, removed_at FROM billing.meter_installations \
          WHERE account_no = $1 ORDER BY installed_at LIMIT 100",
    )
    .bind(no)
    .fetch_all(&s.pool)
    .await
    .map_err(db_error)?
    .iter()
    .map(|m| -> Result<Value, sqlx::Error> {
        Ok(json!({
            "meter_id": m.try_get::<String, _>(0)?,
            "installed_at": m.try_get::<DateTime<Utc>, _>(1)?,
            "removed_at": m.try_get::<Option<DateTime<Utc>>, _>(2)?,
        }))
    })
    .collect::<Result<Vec<_>, _>>()
    .map_err(db_error)?;
    let v = (|| -> Result<Value, sqlx::Error> {
        Ok(json!({
            "account_no": r.try_get::<String, _>(0)?,
            "customer": r.try_get::<String, _>(1)?,
            "address": r.try_get::<String, _>(2)?,
            "usage_type": r.try_get::<String, _>(3)?,
            "diameter_mm": r.try_get::<i32, _>(4)?,
            "households": r.try_get::<i32, _>(5)?,
            "sewer_connected": r.try_get::<bool, _>(6)?,
            "levy_exempt": r.try_get::<bool, _>(7)?,
            "reductions": r.try_get::<Vec<String>, _>(8)?,
            "billing_group": r.try_get::<String, _>(9)?,
            "meters": meters,
        }))
    })()
    .map_err(db_error)?;
    Ok(Some(v))
}

/// Live (not cancelled) bills of an account from `from` to `to` inclusive:
/// period -> (bill_id, usage_m3, total_krw, status).
async fn live_bills(
    s: &AppState,
    no: &str,
    from: Period,
    to: Period,
) -> Result<Vec<(String, i64, i64, i64, String)>, ApiError> {
    let rows = sqlx::query(
        "SELECT period, bill_id, usage_m3, total_krw, status FROM billing.bills \
          WHERE account_no = $1 AND period >= $2 AND period <= $3 AND status <> 'cancelled' \
          ORDER BY period",
    )
    .bind(no)
    .bind(from.to_string())
    .bind(to.to_string())
    .fetch_all(&s.pool)
    .await
    .map_err(db_error)?;
    rows.iter()
        .map(|r| {
            Ok((
                r.try_get(0)?,
                r.try_get(1)?,
                r.try_get(2)?,
                r.try_get(3)?,
                r.try_get(4)?,
            ))
        })
        .collect::<Result<Vec<_>, sqlx::Error>>()
        .map_err(db_error)
}

/// One entry per month of the 12 ending at `last`, oldest first; months
/// without a live bill carry `null` usage.
fn history(last: Period, bills: &[(String, i64, i64, i64, String)]) -> Vec<Value> {
    (0..HISTORY_MONTHS)
        .rev()
        .map(|back| {
            let p = last.add_months(-(back as i32)).to_string();
            match bills.iter().find(|b| b.0 == p) {
                Some(b) => {
                    json!({ "period": p, "bill_id": b.1, "usage_m3": b.2, "total_krw": b.3 })
                }
                None => {
                    json!({ "period": p, "bill_id": null, "usage_m3": null, "total_krw": null })
                }
            }
        })
        .collect()
}

async fn get_account(
    State(s): State<AppState>,
    UrlPath(no): UrlPath<String>,
) -> Result<Json<Value>, ApiError> {
    let mut v = account_json(&s, &no)
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("no account {no:?}")))?;
    let last: Option<String> = sqlx::query_scalar(
        "SELECT max(period) FROM billing.bills WHERE account_no = $1 AND status <> 'cancelled'",
    )
    .bind(&no)
    .fetch_one(&s.pool)
    .await
    .map_err(db_error)?;
    let bills = match last.and_then(|p| p.parse::<Period>().ok()) {
        Some(last) => {
            let first = last.add_months(-(HISTORY_MONTHS as i32 - 1));
            let mut b = live_bills(&s, &no, first, last).await?;
            b.reverse();
            b.into_iter()
                .map(|(period, id, m3, total, status)| {
                    json!({ "period": period, "bill_id": id, "usage_m3": m3, "total_krw": total, "status": status })
                })
                .collect()
        }
        None => Vec::new(),
    };
    let (open, credit): (i64, i64) = sqlx::query_as(
        "SELECT coalesce(sum(amount_krw) FILTER (WHERE ledger_account = '1100'), 0)::int8, \
                coalesce(-sum(amount_krw) FILTER (WHERE ledger_account = '2200'), 0)::int8 \
           FROM billing.postings WHERE party = $1 AND ledger_account IN ('1100', '2200')",
    )
    .bind(&no)
    .fetch_one(&s.pool)
    .await
    .map_err(db_error)?;
    v["open_krw"] = json!(open);
    v["credit_krw"] = json!(credit);
    v["bills"] = Value::Array(bills);
    Ok(Json(v))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct BillSearch {
    q: Option<String>,
    period: Option<Period>,
    status: Option<String>,
    limit: Option<i64>,
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

async fn search_bills(
    State(s): State<AppState>,
    q: Result<Query<BillSearch>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<Value>, ApiError> {
    let Query(q) = q.map_err(bad_query)?;
    let text = search_text(q.q)?;
    let limit = q.limit.unwrap_or(50).clamp(1, MAX_SEARCH);
    if let Some(st) = &q.status {
        if !matches!(st.as_str(), "issued" | "held" | "cancelled") {
            return Err(ApiError::BadRequest(
                "status must be issued, held or cancelled".into(),
            ));
        }
    }
    let period = q.period.map(|p| p.to_string());
    let rows = if let Some((p, no)) = parse_bill_number(&text) {
        sqlx::query(&format!(
            "SELECT {BILL_COLUMNS} FROM billing.bills WHERE period = $1 AND bill_no = $2 \
               AND ($3::text IS NULL OR status = $3)"
        ))
        .bind(p.to_string())
        .bind(no)
        .bind(&q.status)
        .fetch_all(&s.pool)
        .await
    } else {
        let esc = like_escape(&text);
        // Accounts first (bounded), then their bills through the account index.
        sqlx::query(&format!(
            "WITH acc AS (SELECT account_no FROM billing.accounts \
                           WHERE account_no = $1 OR account_no LIKE $2 \
                              OR customer ILIKE $3 OR address ILIKE $3 \
                           ORDER BY account_no LIMIT $6) \
             SELECT {BILL_COLUMNS} FROM billing.bills \
              WHERE account_no IN (SELECT account_no FROM acc) \
                AND ($4::text IS NULL OR period = $4) AND ($5::text IS NULL OR status = $5) \
              ORDER BY period DESC, account_no, bill_id DESC LIMIT $6"
        ))
        .bind(&text)
        .bind(format!("{esc}%"))
        .bind(format!("%{esc}%"))
        .bind(&period)
        .bind(&q.status)
        .bind(limit)
        .fetch_all(&s.pool)
        .await
    }
    .map_err(db_error)?;
    let mut bills = Vec::with_capacity(rows.len());
    for r in &rows {
        bills.push(bill_json(r, false).map_err(db_error)?);
    }
    // Names and addresses, for the result list.
    let nos: Vec<String> = bills
        .iter()
        .filter_map(|b| b["account_no"].as_str().map(str::to_string))
        .collect();
    let names = sqlx::query(
        "SELECT account_no, customer, address FROM billing.accounts WHERE account_no = ANY($1)",
    )
    .bind(&nos)
    .fetch_all(&s.pool)
    .await
    .map_err(db_error)?;
    for b in &mut bills {
        if let Some(r) = names
            .iter()
            .find(|r| r.try_get::<String, _>(0).ok().as_deref() == b["account_no"].as_str())
        {
            b["customer"] = json!(r.try_get::<String, _>(1).map_err(db_error)?);
            b["address"] = json!(r.try_get::<String, _>(2).map_err(db_error)?);
        }
    }
    let truncated = bills.len() as i64 == limit;
    Ok(Json(json!({ "bills": bills, "truncated": truncated })))
}

fn parse_id(id: &str, what: &str) -> Result<i64, ApiError> {
    id.parse()
        .map_err(|_| ApiError::BadRequest(format!("{what} id {id:?} is not a number")))
}

async fn bill_notice(
    State(s): State<AppState>,
    UrlPath(id): UrlPath<String>,
) -> Result<Json<Value>, ApiError> {
    let id = parse_id(&id, "bill")?;
    let row = sqlx::query(&format!(
        "SELECT {BILL_COLUMNS} FROM billing.bills WHERE bill_id = $1"
    ))
    .bind(id)
    .fetch_optional(&s.pool)
    .await
    .map_err(db_error)?
    .ok_or_else(|| ApiError::NotFound(format!("no bill {id}")))?;
    let bill = bill_json(&row, true).map_err(db_error)?;
    let no = bill["account_no"].as_str().unwrap_or_default().to_string();
    let period: Period = bill["period"]
        .as_str()
        .unwrap_or_default()
        .parse()
        .map_err(ApiError::internal)?;
    let account = account_json(&s, &no).await?;
    let first = period.add_months(-(HISTORY_MONTHS as i32 - 1));
    let mut bills = live_bills(&s, &no, first, period).await?;
    // The notice is of this bill, whatever its status: its month shows it.
    bills.retain(|b| b.0 != bill["period"]);
    bills.push((
        period.to_string(),
        id,
        bill["usage_m3"].as_i64().unwrap_or(0),
        bill["total_krw"].as_i64().unwrap_or(0),
        bill["status"].as_str().unwrap_or_default().to_string(),
    ));
    let open: i64 = sqlx::query_scalar(
        "SELECT coalesce(sum(amount_krw), 0)::int8 FROM billing.postings \
          WHERE bill_id = $1 AND ledger_account = '1100' AND party = $2",
    )
    .bind(id)
    .bind(&no)
    .fetch_one(&s.pool)
    .await
    .map_err(db_error)?;
    let issued_on = row
        .try_get::<DateTime<Utc>, _>(20)
        .map_err(db_error)?
        .with_timezone(&crate::period::kst())
        .date_naive();
    let due = due_on(period);
    Ok(Json(json!({
        "bill": bill,
        "account": account,
        "history": history(period, &bills),
        "open_krw": open,
        "paid_krw": bill["total_krw"].as_i64().unwrap_or(0) - open,
        "issued_on": issued_on,
        "due_on": due,
        "usage_period": {
            "from": period.first_day(),
            "to": period.next().first_day().pred_opt(),
            "month": period.month(),
            "year": period.first_day().year(),
        },
    })))
}

async fn get_run(
    State(s): State<AppState>,
    UrlPath(id): UrlPath<String>,
) -> Result<Json<Value>, ApiError> {
    let id = parse_id(&id, "run")?;
    let r = sqlx::query(
        "SELECT run_id, period, billing_group, status, started_at, finished_at, outcome::text \
           FROM billing.runs WHERE run_id = $1",
    )
    .bind(id)
    .fetch_optional(&s.pool)
    .await
    .map_err(db_error)?
    .ok_or_else(|| ApiError::NotFound(format!("no billing run {id}")))?;
    let period: String = r.try_get(1).map_err(db_error)?;
    let group: String = r.try_get(2).map_err(db_error)?;
    // Progress without an index on bills.run_id (runs write bills as fast as
    // they can): the period's live bills of the group's accounts, through
    // the accounts' group index and the bills' (period, account) index.
    let (accounts, written, held): (i64, i64, i64) = sqlx::query_as(
        "SELECT (SELECT count(*) FROM billing.accounts WHERE billing_group = $2)::int8, \
                count(b.bill_id)::int8, count(b.bill_id) FILTER (WHERE b.status = 'held')::int8 \
           FROM billing.accounts a \
           JOIN billing.bills b ON b.account_no = a.account_no AND b.period = $1 AND b.status <> 'cancelled' \
          WHERE a.billing_group = $2",
    )
    .bind(&period)
    .bind(&group)
    .fetch_one(&s.pool)
    .await
    .map_err(db_error)?;
    let outcome: Option<String> = r.try_get(6).map_err(db_error)?;
    let percent = if accounts > 0 {
        (written * 100 / accounts).min(100)
    } else {
        100
    };
    Ok(Json(json!({
        "run_id": r.try_get::<i64, _>(0).map_err(db_error)?,
        "period": period,
        "group": group,
        "status": r.try_get::<String, _>(3).map_err(db_error)?,
        "started_at": r.try_get::<DateTime<Utc>, _>(4).map_err(db_error)?,
        "finished_at": r.try_get::<Option<DateTime<Utc>>, _>(5).map_err(db_error)?,
        "outcome": outcome.and_then(|o| serde_json::from_str::<Value>(&o).ok()),
        "progress": {
            "accounts": accounts,
            "bills_written": written,
            "held": held,
            "percent": percent,
        },
    })))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn due_date_is_the_end_of_the_following_month() {
        let p = |s: &str| s.parse::<Period>().unwrap();
        let d = |s: &str| s.parse::<NaiveDate>().unwrap();
        assert_eq!(due_on(p("2026-10")), d("2026-11-30"));
        assert_eq!(due_on(p("2026-12")), d("2027-01-31"));
        assert_eq!(due_on(p("2028-01")), d("2028-02-29"));
    }

    #[test]
    fn bill_numbers_and_like_patterns_parse_strictly() {
        assert_eq!(
            parse_bill_number("2026-10-0000012"),
            Some(("2026-10".parse().unwrap(), 12))
        );
        assert_eq!(parse_bill_number("2026-10"), None);
        assert_eq!(parse_bill_number("AC-00012"), None);
        assert_eq!(parse_bill_number("2026-10-12a"), None);
        assert_eq!(like_escape("50%_a\\"), "50\\%\\_a\\\\");
        assert!(search_text(Some("  ".into())).is_err());
        assert!(search_text(Some("x".repeat(101))).is_err());
        assert_eq!(search_text(Some(" 대전 ".into())).unwrap(), "대전");
    }

    #[test]
    fn history_has_twelve_months_oldest_first_with_gaps() {
        let last: Period = "2026-10".parse().unwrap();
        let bills = vec![
            ("2026-01".to_string(), 5, 20, 30_000, "issued".to_string()),
            ("2026-10".to_string(), 9, 26, 41_000, "issued".to_string()),
        ];
        let h = history(last, &bills);
        assert_eq!(h.len(), 12);
        assert_eq!(h[0]["period"], "2025-11");
        assert_eq!(h[2]["period"], "2026-01");
        assert_eq!(h[2]["usage_m3"], 20);
        assert_eq!(h[1]["usage_m3"], Value::Null);
        assert_eq!(h[11]["period"], "2026-10");
        assert_eq!(h[11]["total_krw"], 41_000);
    }
}
