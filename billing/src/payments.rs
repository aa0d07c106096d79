//! Payments: recorded one at a time (API, CLI) or imported from a bank /
//! collection file ([docs/payments-format.md](../docs/payments-format.md)).
//!
//! A payment's bank reference is its idempotency key: recording the same
//! payment again posts nothing; the same reference with another account,
//! amount or date is refused. An import parses the whole file first, reports
//! every bad line with its number and reason, and posts all good lines in one
//! transaction (a failure posts none of them).

use crate::ledger::store::{lock_party, open_items, post_entry};
use crate::ledger::{payment_entry, LedgerError, PaymentRequest};
use crate::BillingError;
use chrono::NaiveDate;
pub use waterworks_api::billing::{ImportOutcome, LineError, PaymentOutcome};

use sqlx::{PgConnection, PgPool};
use std::collections::HashSet;

/// Lines an import accepts at most (policy when exceeded: the file is refused).
pub const MAX_IMPORT_LINES: usize = 100_000;
/// Bytes an import accepts at most.
pub const MAX_IMPORT_BYTES: usize = waterworks_api::billing::MAX_IMPORT_BYTES;
/// The largest single payment accepted (1 trillion KRW): a bound against typos.
pub const MAX_PAYMENT_KRW: i64 = waterworks_api::billing::MAX_PAYMENT_KRW;
/// Bad lines listed in an outcome at most (all are counted).
pub const MAX_LINE_ERRORS: usize = 1_000;
/// The header line a bank file starts with.
pub const HEADER: &str = "reference,account_no,amount_krw,paid_on";

/// A good line of a bank file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileLine {
    pub line: usize,
    pub payment: PaymentRequest,
}

/// Why a whole file was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum BankFileError {
    #[error("the file is larger than {MAX_IMPORT_BYTES} bytes")]
    TooLarge,
    #[error("the file has more than {MAX_IMPORT_LINES} lines")]
    TooManyLines,
    #[error("line {0}: the header must be exactly {HEADER:?}")]
    Header(usize),
    #[error("the file is empty (no header)")]
    Empty,
}

fn valid_reference(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 64
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.:/".contains(c))
}

/// Parses one payment line's fields (shared with the API's checks).
pub fn check_payment(p: &PaymentRequest) -> Result<(), String> {
    if !valid_reference(&p.reference) {
        return Err(format!(
            "reference {:?} must be 1-64 characters of A-Z a-z 0-9 - _ . : /",
            p.reference
        ));
    }
    if p.account_no.is_empty() || p.account_no.len() > 64 {
        return Err("account_no must be 1-64 characters".into());
    }
    if p.amount_krw <= 0 || p.amount_krw > MAX_PAYMENT_KRW {
        return Err(format!(
            "amount_krw {} must be between 1 and {MAX_PAYMENT_KRW}",
            p.amount_krw
        ));
    }
    Ok(())
}

fn parse_line(line: &str) -> Result<PaymentRequest, String> {
    let fields: Vec<&str> = line.split(',').map(str::trim).collect();
    if fields.len() != 4 {
        return Err(format!(
            "expected 4 comma-separated fields ({HEADER}), found {}",
            fields.len()
        ));
    }
    let amount_krw: i64 = fields[2].parse().map_err(|_| {
        format!(
            "amount_krw {:?} is not a whole number of KRW (digits only, no separators)",
            fields[2]
        )
    })?;
    let paid_on = NaiveDate::parse_from_str(fields[3], "%Y-%m-%d")
        .map_err(|_| format!("paid_on {:?} is not a date YYYY-MM-DD", fields[3]))?;
    let p = PaymentRequest {
        reference: fields[0].to_string(),
        account_no: fields[1].to_string(),
        amount_krw,
        paid_on,
    };
    check_payment(&p)?;
    Ok(p)
}

/// Parses a bank file: good lines and bad lines (pure). A reference repeated
/// within the file is bad from its second occurrence on.
pub fn parse_bank_file(text: &str) -> Result<(Vec<FileLine>, Vec<LineError>), BankFileError> {
    if text.len() > MAX_IMPORT_BYTES {
        return Err(BankFileError::TooLarge);
    }
    let mut good = Vec::new();
    let mut bad = Vec::new();
    let mut header_seen = false;
    let mut refs = HashSet::new();
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    for (i, raw) in text.lines().enumerate() {
        let line_no = i + 1;
        if line_no > MAX_IMPORT_LINES {
            return Err(BankFileError::TooManyLines);
        }
        let line = raw.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        if !header_seen {
            if line != HEADER {
                return Err(BankFileError::Header(line_no));
            }
            header_seen = true;
            continue;
        }
        match parse_line(line) {
            Ok(p) => {
                if !refs.insert(p.reference.clone()) {
                    bad.push(LineError {
                        line: line_no,
                        reason: format!("reference {:?} appears earlier in this file", p.reference),
                    });
                } else {
                    good.push(FileLine {
                        line: line_no,
                        payment: p,
                    });
                }
            }
            Err(reason) => bad.push(LineError {
                line: line_no,
                reason,
            }),
        }
    }
    if !header_seen {
        return Err(BankFileError::Empty);
    }
    Ok((good, bad))
}

/// Records one payment in the caller's transaction.
pub async fn record_payment_in(
    conn: &mut PgConnection,
    p: &PaymentRequest,
    channel: &str,
    actor: &str,
) -> Result<PaymentOutcome, BillingError> {
    check_payment(p).map_err(LedgerError::Invalid)?;
    let exists: bool =
        sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM billing.accounts WHERE account_no = $1)")
            .bind(&p.account_no)
            .fetch_one(&mut *conn)
            .await?;
    if !exists {
        return Err(LedgerError::UnknownAccount(p.account_no.clone()).into());
    }
    lock_party(conn, &p.account_no).await?;
    let open = open_items(conn, &p.account_no).await?;
    let entry = payment_entry(p, &open);
    let (entry_id, posted) = post_entry(conn, &entry, actor).await?;
    if posted {
        sqlx::query(
            "INSERT INTO billing.payments (reference, account_no, amount_krw, paid_on, channel, entry_id, recorded_by) \
             VALUES ($1, $2, $3, $4, $5, $6, $7)",
        )
        .bind(&p.reference)
        .bind(&p.account_no)
        .bind(p.amount_krw)
        .bind(p.paid_on)
        .bind(channel)
        .bind(entry_id)
        .bind(actor)
        .execute(&mut *conn)
        .await?;
        crate::corrections::audit(
            conn,
            actor,
            "payment",
            &format!("account:{}", p.account_no),
            "",
            serde_json::json!({ "reference": p.reference, "amount_krw": p.amount_krw,
                "paid_on": p.paid_on, "channel": channel, "entry_id": entry_id }),
        )
        .await?;
        metrics::counter!("billing_payments_recorded_total").increment(1);
    }
    Ok(PaymentOutcome { entry_id, posted })
}

/// Records one payment (API, CLI): allocated to the oldest open bills, the
/// rest kept as the customer's credit.
pub async fn record_payment(
    pool: &PgPool,
    p: &PaymentRequest,
    actor: &str,
) -> Result<PaymentOutcome, BillingError> {
    let mut tx = pool.begin().await?;
    let out = record_payment_in(&mut tx, p, "api", actor).await?;
    tx.commit().await?;
    Ok(out)
}

/// Imports a bank / collection file: every good line is posted once, in one
/// transaction; every bad line is reported with its number and reason.
#[tracing::instrument(skip_all)]
pub async fn import_bank_file(
    pool: &PgPool,
    text: &str,
    actor: &str,
) -> Result<ImportOutcome, BillingError> {
    let (good, mut bad) = parse_bank_file(text)?;
    let lines = good.len() + bad.len();
    let accounts: Vec<String> = good.iter().map(|l| l.payment.account_no.clone()).collect();
    let known: HashSet<String> =
        sqlx::query_scalar("SELECT account_no FROM billing.accounts WHERE account_no = ANY($1)")
            .bind(&accounts)
            .fetch_all(pool)
            .await?
            .into_iter()
            .collect();
    let refs: Vec<String> = good.iter().map(|l| l.payment.reference.clone()).collect();
    let recorded: Vec<(String, String, i64, NaiveDate)> = sqlx::query_as(
        "SELECT reference, account_no, amount_krw, paid_on FROM billing.payments WHERE reference = ANY($1)",
    )
    .bind(&refs)
    .fetch_all(pool)
    .await?;
    let recorded: std::collections::HashMap<String, PaymentRequest> = recorded
        .into_iter()
        .map(|(reference, account_no, amount_krw, paid_on)| {
            (
                reference.clone(),
                PaymentRequest {
                    reference,
                    account_no,
                    amount_krw,
                    paid_on,
                },
            )
        })
        .collect();
    let mut out = ImportOutcome {
        lines,
        posted: 0,
        posted_krw: 0,
        already_recorded: 0,
        errors: Vec::new(),
        error_count: 0,
    };
    // Customers' lock buckets in ascending order (file order within a
    // customer): an import never deadlocks with a run or another import.
    let mut good = good;
    good.sort_by_key(|l| crate::ledger::store::party_bucket(&l.payment.account_no));
    let mut tx = pool.begin().await?;
    for l in good {
        let p = &l.payment;
        if let Some(prev) = recorded.get(&p.reference) {
            if prev == p {
                out.already_recorded += 1;
            } else {
                bad.push(LineError {
                    line: l.line,
                    reason: format!(
                        "reference {:?} was already recorded for account {} amount {} on {}",
                        p.reference, prev.account_no, prev.amount_krw, prev.paid_on
                    ),
                });
            }
            continue;
        }
        if !known.contains(&p.account_no) {
            bad.push(LineError {
                line: l.line,
                reason: format!("unknown account {:?}", p.account_no),
            });
            continue;
        }
        let r = record_payment_in(&mut tx, p, "bank-file", actor).await?;
        if r.posted {
            out.posted += 1;
            out.posted_krw += p.amount_krw;
        } else {
            out.already_recorded += 1;
        }
    }
    bad.sort_by_key(|e| e.line);
    out.error_count = bad.len();
    bad.truncate(MAX_LINE_ERRORS);
    out.errors = bad;
    crate::corrections::audit(
        &mut tx,
        actor,
        "bank_file_import",
        "payments",
        "",
        serde_json::json!({ "lines": out.lines, "posted": out.posted, "posted_krw": out.posted_krw,
            "already_recorded": out.already_recorded, "errors": out.error_count }),
    )
    .await?;
    tx.commit().await?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_bad_line_is_named_with_its_reason() {
        let text = "# collection file 2026-11\n\
            reference,account_no,amount_krw,paid_on\n\
            B-1,AC00001,12960,2026-11-20\n\
            B-2,AC00002,12,960,2026-11-20\n\
            B-3,AC00003,-5,2026-11-20\n\
            B-4,AC00004,100,2026-13-01\n\
            B-1,AC00005,100,2026-11-20\n\
            \n\
            B 6,AC00006,100,2026-11-20\n";
        let (good, bad) = parse_bank_file(text).unwrap();
        assert_eq!(good.len(), 1);
        assert_eq!(good[0].line, 3);
        let lines: Vec<usize> = bad.iter().map(|e| e.line).collect();
        assert_eq!(lines, vec![4, 5, 6, 7, 9]);
        assert!(bad[0].reason.contains("4 comma-separated"));
        assert!(bad[1].reason.contains("amount_krw -5"));
        assert!(bad[2].reason.contains("paid_on"));
        assert!(bad[3].reason.contains("earlier in this file"));
        assert!(bad[4].reason.contains("reference"));
        assert_eq!(parse_bank_file("ref,acct\n"), Err(BankFileError::Header(1)));
        assert_eq!(parse_bank_file("# nothing\n"), Err(BankFileError::Empty));
    }

    proptest::proptest! {
        #[test]
        fn the_parser_never_panics(s in "\\PC{0,400}") {
            let _ = parse_bank_file(&format!("{HEADER}\n{s}"));
            let _ = parse_bank_file(&s);
        }
    }
}
