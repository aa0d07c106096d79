//! The ledger in PostgreSQL: loads the state the pure core needs and appends
//! its entries. Never updates or deletes a ledger row (the database refuses
//! it anyway: see `migrations/0004_ledger.sql`).
//!
//! Every change to a customer's receivables or credit first takes that
//! customer's transaction-scoped advisory lock, so two payments for one
//! customer never allocate the same open amount twice.

use super::{
    bill_entry, credit_entry, expand_open, BillAmounts, EntryDraft, LedgerAccount, LedgerError,
    OpenItem, Part, Source,
};
use crate::run::copy_field;
use crate::BillingError;
use chrono::NaiveDate;
use sha2::Digest;
use sqlx::{PgConnection, Row};
use std::fmt::Write;

/// Who posts the entries a billing run makes.
pub const RUN_ACTOR: &str = "billing-run";

/// Customer locks are advisory transaction locks on one of this many buckets
/// (a bound: a run applying credit to thousands of customers in one chunk
/// holds at most this many locks; customers sharing a bucket merely wait for
/// each other).
pub const PARTY_LOCK_BUCKETS: u32 = 256;
/// The first key of the two-key advisory locks ("le", ledger).
const PARTY_LOCK_SPACE: i32 = 0x6c65;

/// The lock bucket of a customer. Whoever locks several customers in one
/// transaction takes their buckets in ascending order (no deadlocks).
pub fn party_bucket(party: &str) -> u32 {
    let d = sha2::Sha256::digest(party.as_bytes());
    u32::from_be_bytes([d[0], d[1], d[2], d[3]]) % PARTY_LOCK_BUCKETS
}

/// Serializes changes to one customer's receivables and credit until the
/// transaction ends.
pub async fn lock_party(conn: &mut PgConnection, party: &str) -> Result<(), BillingError> {
    sqlx::query("SELECT pg_advisory_xact_lock($1, $2)")
        .bind(PARTY_LOCK_SPACE)
        .bind(party_bucket(party) as i32)
        .execute(&mut *conn)
        .await?;
    Ok(())
}

/// Appends one entry with idempotency: `(entry_id, true)` when new,
/// `(first entry_id, false)` when the key was used with the same content.
pub async fn post_entry(
    conn: &mut PgConnection,
    e: &EntryDraft,
    actor: &str,
) -> Result<(i64, bool), BillingError> {
    if !e.balances() {
        return Err(LedgerError::Unbalanced(e.key.clone()).into());
    }
    let id: Option<i64> = sqlx::query_scalar(
        "INSERT INTO billing.journal_entries \
             (source, idem_key, content_hash, bill_id, party, effective_on, memo, created_by) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8) ON CONFLICT (idem_key) DO NOTHING RETURNING entry_id",
    )
    .bind(e.source.as_str())
    .bind(&e.key)
    .bind(&e.content_hash)
    .bind(e.bill_id)
    .bind(&e.party)
    .bind(e.effective_on)
    .bind(&e.memo)
    .bind(actor)
    .fetch_optional(&mut *conn)
    .await?;
    let Some(id) = id else {
        let (first, hash): (i64, String) = sqlx::query_as(
            "SELECT entry_id, content_hash FROM billing.journal_entries WHERE idem_key = $1",
        )
        .bind(&e.key)
        .fetch_one(&mut *conn)
        .await?;
        if hash != e.content_hash {
            return Err(LedgerError::KeyConflict(e.key.clone()).into());
        }
        return Ok((first, false));
    };
    let p = &e.postings;
    sqlx::query(
        "INSERT INTO billing.postings (entry_id, ledger_account, bill_id, component, party, amount_krw) \
         SELECT $1, * FROM UNNEST($2::text[], $3::int8[], $4::text[], $5::text[], $6::int8[])",
    )
    .bind(id)
    .bind(p.iter().map(|p| p.account.code()).collect::<Vec<_>>())
    .bind(p.iter().map(|p| p.bill_id).collect::<Vec<_>>())
    .bind(p.iter().map(|p| p.part.map(Part::as_str)).collect::<Vec<_>>())
    .bind(p.iter().map(|p| p.party.clone()).collect::<Vec<_>>())
    .bind(p.iter().map(|p| p.amount_krw).collect::<Vec<_>>())
    .execute(&mut *conn)
    .await?;
    Ok((id, true))
}

/// Appends many new entries with two COPYs (a billing run's bills). Their
/// keys must be new: a duplicate fails the whole transaction.
pub async fn post_new_entries(
    conn: &mut PgConnection,
    drafts: &[EntryDraft],
    actor: &str,
) -> Result<(), BillingError> {
    if drafts.is_empty() {
        return Ok(());
    }
    let ids: Vec<i64> = sqlx::query_scalar(
        "SELECT nextval('billing.journal_entries_entry_id_seq') FROM generate_series(1, $1)",
    )
    .bind(drafts.len() as i64)
    .fetch_all(&mut *conn)
    .await?;
    let rows = render_new_entries(drafts, &ids, actor)?;
    copy_new_entries(conn, &rows).await
}

/// New entries as the COPY text of their `journal_entries` and `postings`
/// rows: pure CPU, so a run renders a chunk's entries while its bills are
/// being written.
#[derive(Debug, Default)]
pub struct EntryRows {
    entries: String,
    postings: String,
}

/// Renders `drafts` with the entry ids `ids` (drawn from
/// `billing.journal_entries_entry_id_seq`), checking that each balances.
pub fn render_new_entries(
    drafts: &[EntryDraft],
    ids: &[i64],
    actor: &str,
) -> Result<EntryRows, BillingError> {
    if ids.len() < drafts.len() {
        return Err(BillingError::Task(format!(
            "{} entry ids for {} entries",
            ids.len(),
            drafts.len()
        )));
    }
    let mut entries = String::with_capacity(drafts.len() * 160);
    let mut postings = String::with_capacity(drafts.len() * 5 * 40);
    let opt = |out: &mut String, v: Option<&str>| match v {
        Some(v) => copy_field(out, v),
        None => out.push_str("\\N"),
    };
    for (e, id) in drafts.iter().zip(ids) {
        if !e.balances() {
            return Err(LedgerError::Unbalanced(e.key.clone()).into());
        }
        let _ = write!(entries, "{id}\t{}\t", e.source.as_str());
        copy_field(&mut entries, &e.key);
        let _ = write!(entries, "\t{}\t", e.content_hash);
        match e.bill_id {
            Some(b) => {
                let _ = write!(entries, "{b}");
            }
            None => entries.push_str("\\N"),
        }
        entries.push('\t');
        opt(&mut entries, e.party.as_deref());
        let _ = write!(entries, "\t{}\t", e.effective_on);
        copy_field(&mut entries, &e.memo);
        entries.push('\t');
        copy_field(&mut entries, actor);
        entries.push('\n');
        for p in &e.postings {
            let _ = write!(postings, "{id}\t{}\t", p.account.code());
            match p.bill_id {
                Some(b) => {
                    let _ = write!(postings, "{b}");
                }
                None => postings.push_str("\\N"),
            }
            postings.push('\t');
            opt(&mut postings, p.part.map(Part::as_str));
            postings.push('\t');
            opt(&mut postings, p.party.as_deref());
            let _ = writeln!(postings, "\t{}", p.amount_krw);
        }
    }
    Ok(EntryRows { entries, postings })
}

/// COPYs rendered entries, then their postings (whose statement trigger
/// checks that every entry balances and exists).
pub async fn copy_new_entries(
    conn: &mut PgConnection,
    rows: &EntryRows,
) -> Result<(), BillingError> {
    if rows.entries.is_empty() {
        return Ok(());
    }
    for (sql, text) in [
        (
            "COPY billing.journal_entries (entry_id, source, idem_key, content_hash, bill_id, party, \
             effective_on, memo, created_by) FROM STDIN",
            &rows.entries,
        ),
        (
            "COPY billing.postings (entry_id, ledger_account, bill_id, component, party, amount_krw) \
             FROM STDIN",
            &rows.postings,
        ),
    ] {
        let mut copy = conn.copy_in_raw(sql).await?;
        for part in text.as_bytes().chunks(1 << 20) {
            copy.send(part).await?;
        }
        copy.finish().await?;
    }
    Ok(())
}

/// Receivable sums of a customer's bills (optionally one bill) by part
/// (`None`: whole-bill postings), with the bills' amounts, expanded per part.
async fn open_by_bill(
    conn: &mut PgConnection,
    party: &str,
    bill_id: Option<i64>,
) -> Result<Vec<(BillAmounts, [(Part, i64); 4])>, BillingError> {
    let rows = sqlx::query(
        "SELECT b.bill_id, b.account_no, b.period, b.water_krw, b.base_krw, b.sewer_krw, \
                b.levy_krw, b.reduction_krw, p.component, sum(p.amount_krw)::int8 \
           FROM billing.postings p JOIN billing.bills b ON b.bill_id = p.bill_id \
          WHERE p.party = $1 AND p.ledger_account = '1100' AND ($2::int8 IS NULL OR p.bill_id = $2) \
          GROUP BY b.bill_id, p.component HAVING sum(p.amount_krw) <> 0 ORDER BY b.bill_id",
    )
    .bind(party)
    .bind(bill_id)
    .fetch_all(&mut *conn)
    .await?;
    // Per bill: its amounts, the whole-bill sum, the sums naming a part.
    type Sums = (BillAmounts, i64, Vec<(Part, i64)>);
    let mut out: Vec<Sums> = Vec::new();
    for r in rows {
        let b = amounts_from_row(&r)?;
        let part: Option<String> = r.try_get(8)?;
        let sum: i64 = r.try_get(9)?;
        if out
            .last()
            .is_none_or(|(last, _, _)| last.bill_id != b.bill_id)
        {
            out.push((b, 0, Vec::new()));
        }
        let Some((_, whole, by_part)) = out.last_mut() else {
            continue;
        };
        match part.as_deref().map(Part::parse) {
            None => *whole += sum,
            Some(Some(p)) => by_part.push((p, sum)),
            Some(None) => {
                return Err(BillingError::Task(format!(
                    "unknown receivable part {part:?}"
                )));
            }
        }
    }
    Ok(out
        .into_iter()
        .map(|(b, whole, by_part)| {
            let open = expand_open(&b, whole, &by_part);
            (b, open)
        })
        .collect())
}

/// A customer's open items, from the receivable postings.
pub async fn open_items(
    conn: &mut PgConnection,
    party: &str,
) -> Result<Vec<OpenItem>, BillingError> {
    let mut out = Vec::new();
    for (b, open) in open_by_bill(conn, party, None).await? {
        for (part, open_krw) in open {
            if open_krw != 0 {
                out.push(OpenItem {
                    bill_id: b.bill_id,
                    period: b.period,
                    part,
                    open_krw,
                });
            }
        }
    }
    Ok(out)
}

/// Open receivable of one bill, per part (all four, in allocation order;
/// empty for a bill without postings).
pub async fn bill_open(
    conn: &mut PgConnection,
    bill_id: i64,
) -> Result<Vec<(Part, i64)>, BillingError> {
    let party: Option<String> =
        sqlx::query_scalar("SELECT account_no FROM billing.bills WHERE bill_id = $1")
            .bind(bill_id)
            .fetch_optional(&mut *conn)
            .await?;
    let Some(party) = party else {
        return Ok(Vec::new());
    };
    Ok(open_by_bill(conn, &party, Some(bill_id))
        .await?
        .pop()
        .map(|(_, open)| open.to_vec())
        .unwrap_or_default())
}

/// A customer's credit balance (positive: the city owes the customer).
pub async fn credit_balance(conn: &mut PgConnection, party: &str) -> Result<i64, BillingError> {
    let v: i64 = sqlx::query_scalar(
        "SELECT coalesce(-sum(amount_krw), 0)::int8 FROM billing.postings \
          WHERE party = $1 AND ledger_account = '2200'",
    )
    .bind(party)
    .fetch_one(&mut *conn)
    .await?;
    Ok(v)
}

/// Applies the customer's credit to their open bills (the caller holds the
/// customer's lock).
pub async fn apply_credit(
    conn: &mut PgConnection,
    party: &str,
    key: String,
    on: NaiveDate,
    actor: &str,
) -> Result<(), BillingError> {
    let credit = credit_balance(conn, party).await?;
    if credit <= 0 {
        return Ok(());
    }
    let open = open_items(conn, party).await?;
    if let Some(e) = credit_entry(party, credit, &open, key, on) {
        post_entry(conn, &e, actor).await?;
    }
    Ok(())
}

fn amounts_from_row(r: &sqlx::postgres::PgRow) -> Result<BillAmounts, BillingError> {
    let period: String = r.try_get(2)?;
    Ok(BillAmounts {
        bill_id: r.try_get(0)?,
        account_no: r.try_get(1)?,
        period: period
            .parse()
            .map_err(|e: crate::period::PeriodError| BillingError::Task(e.to_string()))?,
        water_krw: r.try_get(3)?,
        base_krw: r.try_get(4)?,
        sewer_krw: r.try_get(5)?,
        levy_krw: r.try_get(6)?,
        reduction_krw: r.try_get(7)?,
    })
}

const AMOUNT_COLUMNS: &str =
    "bill_id, account_no, period, water_krw, base_krw, sewer_krw, levy_krw, reduction_krw";

/// A bill's amounts.
pub async fn bill_amounts(
    conn: &mut PgConnection,
    bill_id: i64,
) -> Result<BillAmounts, BillingError> {
    let row = sqlx::query(&format!(
        "SELECT {AMOUNT_COLUMNS} FROM billing.bills WHERE bill_id = $1"
    ))
    .bind(bill_id)
    .fetch_optional(&mut *conn)
    .await?
    .ok_or(LedgerError::NoBill(bill_id))?;
    amounts_from_row(&row)
}

/// The drafts of a run chunk's newly issued bills, rendered with their entry
/// ids (pure CPU: a run does it while the chunk's bills are being written).
pub fn render_issued_chunk(bills: &[BillAmounts], ids: &[i64]) -> Result<EntryRows, BillingError> {
    let drafts: Vec<EntryDraft> = bills.iter().map(|b| bill_entry(b, Source::Bill)).collect();
    render_new_entries(&drafts, ids, RUN_ACTOR)
}

/// Posts a run chunk's newly issued bills (in the chunk's transaction; `rows`
/// from [`render_issued_chunk`]), then applies credit of those customers who
/// have some. The amounts are the ones the run has just written to the bills
/// (it knows them, and their ids: no read-back of the chunk).
pub async fn post_issued_chunk(
    conn: &mut PgConnection,
    bills: &[BillAmounts],
    rows: &EntryRows,
) -> Result<(), BillingError> {
    copy_new_entries(conn, rows).await?;
    apply_chunk_credit(conn, bills).await
}

/// Applies the credit of those customers of a run chunk's newly posted bills
/// who have some (taking their locks in ascending bucket order).
pub async fn apply_chunk_credit(
    conn: &mut PgConnection,
    bills: &[BillAmounts],
) -> Result<(), BillingError> {
    if bills.is_empty() {
        return Ok(());
    }
    let parties: Vec<&str> = bills.iter().map(|b| b.account_no.as_str()).collect();
    let mut with_credit: Vec<String> = sqlx::query_scalar(
        "SELECT party FROM billing.postings WHERE ledger_account = '2200' AND party = ANY($1) \
          GROUP BY party HAVING sum(amount_krw) < 0 ORDER BY party",
    )
    .bind(&parties)
    .fetch_all(&mut *conn)
    .await?;
    // Buckets in ascending order: no deadlock with imports or other runs.
    with_credit.sort_by_key(|p| (party_bucket(p), p.clone()));
    let by_party: std::collections::HashMap<&str, &BillAmounts> =
        bills.iter().map(|b| (b.account_no.as_str(), b)).collect();
    for party in with_credit {
        let Some(b) = by_party.get(party.as_str()) else {
            continue;
        };
        lock_party(conn, &party).await?;
        apply_credit(
            conn,
            &party,
            format!("credit:bill:{}", b.bill_id),
            b.bill_date(),
            RUN_ACTOR,
        )
        .await?;
    }
    Ok(())
}

/// Posts one issued bill (a released hold, a rebill) and applies credit.
pub async fn post_bill(
    conn: &mut PgConnection,
    bill_id: i64,
    source: Source,
    actor: &str,
) -> Result<(), BillingError> {
    let b = bill_amounts(conn, bill_id).await?;
    lock_party(conn, &b.account_no).await?;
    post_entry(conn, &bill_entry(&b, source), actor).await?;
    apply_credit(
        conn,
        &b.account_no,
        format!("credit:bill:{bill_id}"),
        b.bill_date(),
        actor,
    )
    .await
}

/// The entry a bill was posted with, rebuilt from its rows.
pub async fn posted_entry(
    conn: &mut PgConnection,
    key: &str,
) -> Result<Option<EntryDraft>, BillingError> {
    let Some(head) = sqlx::query(
        "SELECT entry_id, source, content_hash, bill_id, party, effective_on, memo \
           FROM billing.journal_entries WHERE idem_key = $1",
    )
    .bind(key)
    .fetch_optional(&mut *conn)
    .await?
    else {
        return Ok(None);
    };
    let entry_id: i64 = head.try_get(0)?;
    let rows = sqlx::query(
        "SELECT ledger_account, bill_id, component, party, amount_krw FROM billing.postings \
          WHERE entry_id = $1",
    )
    .bind(entry_id)
    .fetch_all(&mut *conn)
    .await?;
    let mut postings = Vec::with_capacity(rows.len());
    for r in rows {
        let code: String = r.try_get(0)?;
        let part: Option<String> = r.try_get(2)?;
        postings.push(super::Posting {
            account: LedgerAccount::from_code(&code)
                .ok_or_else(|| BillingError::Task(format!("unknown ledger account {code}")))?,
            bill_id: r.try_get(1)?,
            part: part.as_deref().and_then(Part::parse),
            party: r.try_get(3)?,
            amount_krw: r.try_get(4)?,
        });
    }
    let source: String = head.try_get(1)?;
    Ok(Some(EntryDraft {
        source: match source.as_str() {
            "bill" => Source::Bill,
            "payment" => Source::Payment,
            "cancellation" => Source::Cancellation,
            "rebill" => Source::Rebill,
            "adjustment" => Source::Adjustment,
            _ => Source::Credit,
        },
        key: key.to_string(),
        content_hash: head.try_get(2)?,
        bill_id: head.try_get(3)?,
        party: head.try_get(4)?,
        effective_on: head.try_get(5)?,
        memo: head.try_get(6)?,
        postings,
    }))
}

/// Posts every issued bill that has no entry yet (bills issued before the
/// ledger existed). Returns how many were posted.
pub async fn post_unposted_bills(pool: &sqlx::PgPool) -> Result<u64, BillingError> {
    let ids: Vec<i64> = sqlx::query_scalar(
        "SELECT b.bill_id FROM billing.bills b \
          WHERE b.status = 'issued' AND NOT EXISTS \
                (SELECT 1 FROM billing.journal_entries e WHERE e.idem_key = 'bill:' || b.bill_id) \
          ORDER BY b.bill_id",
    )
    .fetch_all(pool)
    .await?;
    for id in &ids {
        let mut tx = pool.begin().await?;
        post_bill(&mut tx, *id, Source::Bill, RUN_ACTOR).await?;
        tx.commit().await?;
    }
    Ok(ids.len() as u64)
}
