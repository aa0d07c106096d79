//! Run admission: whether a billing run of a period may start now. A month is
//! billable from 00:00 Korean time after it ends; before that a run starts
//! only when forced with a reason, which is recorded in the audit log before
//! the run begins. Pure except [`record_forced_run`]; it never starts a run.

use super::RunRequest;
use crate::period::Period;
use crate::BillingError;
use sqlx::PgPool;

/// Why a run is not started: the month is not over in Korea, so its readings
/// are not complete and its bills would be priced on partial usage.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RunRefused {
    #[error(
        "period {period} is not over: it ends at {} Korean time (Asia/Seoul), and bills issued \
         before then would be priced on partial usage; run it from then on, or force it with a \
         reason (CLI: --force --reason \"...\"; API: \"force\": true, \"reason\": \"...\")",
        .billable_from.with_timezone(&crate::period::kst()).format("%Y-%m-%d %H:%M")
    )]
    NotOver {
        period: Period,
        /// The period's end: 00:00 KST on the first day of the next month.
        billable_from: chrono::DateTime<chrono::Utc>,
    },
    #[error(
        "a forced run needs a reason (1-{} characters)",
        crate::corrections::MAX_REASON_CHARS
    )]
    ReasonMissing,
}

/// Whether a run of `period` may start at `now`: yes once the month is over
/// in Korea (`Ok(None)`); before that only when forced with a reason, which
/// is returned to be recorded (`Ok(Some(reason))`).
pub fn admit(
    period: &Period,
    now: chrono::DateTime<chrono::Utc>,
    force_reason: Option<&str>,
) -> Result<Option<String>, RunRefused> {
    let reason = match force_reason.map(str::trim) {
        None => None,
        Some(r) if r.is_empty() || r.chars().count() > crate::corrections::MAX_REASON_CHARS => {
            return Err(RunRefused::ReasonMissing)
        }
        Some(r) => Some(r.to_string()),
    };
    if now >= period.end_utc() {
        return Ok(None);
    }
    match reason {
        Some(r) => Ok(Some(r)),
        None => Err(RunRefused::NotOver {
            period: *period,
            billable_from: period.end_utc(),
        }),
    }
}

/// Records why a run of an unfinished month was forced, before it starts
/// (so the reason is kept even if the run fails part-way): an audit record
/// with action `billing_run_forced` on target `run:{period}/{group}`.
pub async fn record_forced_run(
    pool: &PgPool,
    req: &RunRequest,
    reason: &str,
    actor: &str,
) -> Result<(), BillingError> {
    let mut conn = pool.acquire().await?;
    crate::corrections::audit(
        &mut conn,
        actor,
        "billing_run_forced",
        &format!("run:{}/{}", req.period, req.group),
        reason,
        serde_json::json!({
            "period": req.period.to_string(),
            "group": req.group,
            "billable_from": req.period.end_utc(),
        }),
    )
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn utc(s: &str) -> chrono::DateTime<chrono::Utc> {
        s.parse().unwrap()
    }

    #[test]
    fn a_month_is_billable_from_midnight_korean_time_after_it_ends() {
        let dec: Period = "2026-12".parse().unwrap();
        let nov: Period = "2026-11".parse().unwrap();
        // 4 December, the day of the report: December is not over, November is.
        let now = utc("2026-12-04T06:00:00Z");
        let err = admit(&dec, now, None).unwrap_err();
        assert_eq!(
            err,
            RunRefused::NotOver {
                period: dec,
                billable_from: utc("2026-12-31T15:00:00Z"),
            }
        );
        let msg = err.to_string();
        assert!(msg.contains("period 2026-12 is not over"), "{msg}");
        assert!(msg.contains("2027-01-01 00:00 Korean time"), "{msg}");
        assert!(msg.contains("--force --reason"), "{msg}");
        assert_eq!(admit(&nov, now, None), Ok(None));
        // A future month likewise.
        let later: Period = "2027-03".parse().unwrap();
        assert!(matches!(
            admit(&later, now, None),
            Err(RunRefused::NotOver { .. })
        ));
        // The boundary is 00:00 KST on the 1st = 15:00 UTC the day before.
        assert!(admit(&nov, utc("2026-11-30T14:59:59Z"), None).is_err());
        assert_eq!(admit(&nov, utc("2026-11-30T15:00:00Z"), None), Ok(None));
    }

    #[test]
    fn forcing_an_unfinished_month_needs_a_reason() {
        let dec: Period = "2026-12".parse().unwrap();
        let now = utc("2026-12-04T06:00:00Z");
        assert_eq!(
            admit(&dec, now, Some("  council audit rehearsal ")),
            Ok(Some("council audit rehearsal".into()))
        );
        assert_eq!(
            admit(&dec, now, Some("   ")),
            Err(RunRefused::ReasonMissing)
        );
        assert_eq!(
            admit(&dec, now, Some(&"x".repeat(501))),
            Err(RunRefused::ReasonMissing)
        );
        // A month that is over needs no force: nothing to record.
        let nov: Period = "2026-11".parse().unwrap();
        assert_eq!(admit(&nov, now, Some("not needed")), Ok(None));
    }

    #[test]
    fn previous_is_the_last_month_over_in_korea() {
        // 00:30 KST on 1 December is still 30 November in UTC.
        assert_eq!(
            Period::last_complete(utc("2026-11-30T15:30:00Z")).to_string(),
            "2026-11"
        );
        assert_eq!(
            Period::last_complete(utc("2026-11-30T14:59:59Z")).to_string(),
            "2026-10"
        );
        assert_eq!(
            Period::last_complete(utc("2027-01-10T00:00:00Z")).to_string(),
            "2026-12"
        );
    }
}
