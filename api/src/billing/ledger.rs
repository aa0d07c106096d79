//! The ledger as a bill sees it (its entries and their postings), and the
//! audit log of every change a person made.

use chrono::{DateTime, NaiveDate, Utc};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

/// Entries' postings listed for one bill at most.
pub const MAX_ENTRY_POSTINGS: i64 = 1_000;
/// Audit records a page holds at most (`limit`'s maximum).
pub const MAX_AUDIT: i64 = 1_000;
/// Longest audit `target` filter, in characters.
pub const MAX_TARGET_CHARS: usize = 200;

/// What an entry records, as stored in `billing.journal_entries.source`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
#[cfg_attr(
    feature = "sqlx",
    derive(sqlx::Type),
    sqlx(type_name = "text", rename_all = "snake_case")
)]
pub enum EntrySource {
    Bill,
    Payment,
    Cancellation,
    Rebill,
    Adjustment,
    Credit,
}

/// One line of an entry: positive debits, negative credits.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct EntryPosting {
    /// The ledger account's code (e.g. `1100` receivables).
    pub account: String,
    /// The bill's part it settles, if any (`water`, `sewer`, `base`, `levy`).
    pub part: Option<String>,
    pub amount_krw: i64,
}

/// A journal entry naming a bill.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Entry {
    pub entry_id: i64,
    pub source: EntrySource,
    /// The entry's idempotency key.
    pub key: String,
    pub effective_on: NaiveDate,
    pub memo: String,
    pub created_by: String,
    pub created_at: DateTime<Utc>,
    pub postings: Vec<EntryPosting>,
}

/// One posting row with its entry's head, as read (grouped into [`Entry`]).
#[derive(Debug, Clone, PartialEq, Eq)]
#[cfg_attr(feature = "sqlx", derive(sqlx::FromRow))]
pub struct EntryPostingRow {
    pub entry_id: i64,
    pub source: EntrySource,
    #[cfg_attr(feature = "sqlx", sqlx(rename = "idem_key"))]
    pub key: String,
    pub effective_on: NaiveDate,
    pub memo: String,
    pub created_by: String,
    pub created_at: DateTime<Utc>,
    #[cfg_attr(feature = "sqlx", sqlx(rename = "ledger_account"))]
    pub account: String,
    #[cfg_attr(feature = "sqlx", sqlx(rename = "component"))]
    pub part: Option<String>,
    pub amount_krw: i64,
}

impl Entry {
    /// Groups rows ordered by entry into entries, postings in row order.
    pub fn group(rows: Vec<EntryPostingRow>) -> Vec<Entry> {
        let mut out: Vec<Entry> = Vec::new();
        for r in rows {
            let posting = EntryPosting {
                account: r.account,
                part: r.part,
                amount_krw: r.amount_krw,
            };
            match out.last_mut() {
                Some(e) if e.entry_id == r.entry_id => e.postings.push(posting),
                _ => out.push(Entry {
                    entry_id: r.entry_id,
                    source: r.source,
                    key: r.key,
                    effective_on: r.effective_on,
                    memo: r.memo,
                    created_by: r.created_by,
                    created_at: r.created_at,
                    postings: vec![posting],
                }),
            }
        }
        out
    }
}

/// `GET /api/v1/bills/{id}/entries`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct BillEntries {
    pub bill_id: i64,
    pub entries: Vec<Entry>,
}

/// One audit record.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[cfg_attr(feature = "sqlx", derive(sqlx::FromRow))]
pub struct AuditRecord {
    pub audit_id: i64,
    pub at: DateTime<Utc>,
    /// The token name of who did it.
    pub actor: String,
    /// e.g. `cancel`, `rebill`, `adjust`, `payment`, `accounts.upsert`.
    pub action: String,
    /// What it was done to (`bill:12`, `account:AC00001`, ...).
    pub target: String,
    pub reason: String,
    /// The action's own details.
    #[schema(value_type = Object)]
    #[cfg_attr(feature = "sqlx", sqlx(json))]
    pub details: serde_json::Value,
}

/// `GET /api/v1/audit`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct AuditPage {
    /// Newest first.
    pub audit: Vec<AuditRecord>,
}

/// `GET /api/v1/audit`.
#[derive(Debug, Clone, Default, Deserialize, Serialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct AuditQuery {
    /// Only records of this target (exact).
    #[param(max_length = 200, pattern = r"^[^\x00]*$")]
    pub target: Option<String>,
    /// Records at most (default 100).
    #[param(minimum = 1, maximum = 1000)]
    pub limit: Option<i64>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_group_into_entries_in_order() {
        let row = |entry_id, account: &str, amount_krw| EntryPostingRow {
            entry_id,
            source: EntrySource::Bill,
            key: format!("k{entry_id}"),
            effective_on: NaiveDate::from_ymd_opt(2026, 11, 1).unwrap(),
            memo: String::new(),
            created_by: "run".into(),
            created_at: DateTime::<Utc>::UNIX_EPOCH,
            account: account.into(),
            part: None,
            amount_krw,
        };
        let e = Entry::group(vec![
            row(1, "1100", 10),
            row(1, "4100", -10),
            row(2, "1000", 5),
            row(2, "1100", -5),
        ]);
        assert_eq!(e.len(), 2);
        assert_eq!(e[0].postings.len(), 2);
        assert_eq!(e[1].key, "k2");
        assert_eq!(e[1].postings.iter().map(|p| p.amount_krw).sum::<i64>(), 0);
    }
}
