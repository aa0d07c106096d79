//! The commit of a run's bills: chunked transactions that number bills
//! without gaps and post them to the ledger with them. [`Pipeline`] writes
//! [`CHUNKS_IN_FLIGHT`] chunks at once on their own connections, each taking
//! the period's counter only after the chunk before it committed;
//! [`commit_chunk`] is the serial path (small pools, renumbered chunks).
//! [`insert_issued_bill`] issues a single bill (a rebill). A chunk is whole or
//! absent: it never commits half its bills nor leaves a gap in the numbers.

use super::copy::{copy_field, render_bills, CHUNK_COPY_COLUMNS, COPY_COLUMNS};
use super::{PreparedBill, RunOutcome};
use crate::period::Period;
use crate::BillingError;
use sqlx::{PgConnection, PgPool};
use std::collections::HashSet;

/// Inserts one issued bill (a rebill) with the period's next number, in the
/// caller's transaction. Returns its id and number.
pub(crate) async fn insert_issued_bill(
    conn: &mut PgConnection,
    period: &str,
    run_id: i64,
    b: &PreparedBill,
) -> Result<(i64, i64), BillingError> {
    sqlx::query("INSERT INTO billing.period_counters (period) VALUES ($1) ON CONFLICT DO NOTHING")
        .bind(period)
        .execute(&mut *conn)
        .await?;
    let no: i64 = sqlx::query_scalar(
        "UPDATE billing.period_counters SET last_bill_no = last_bill_no + 1 WHERE period = $1 \
         RETURNING last_bill_no",
    )
    .bind(period)
    .fetch_one(&mut *conn)
    .await?;
    let mut text = String::new();
    copy_field(&mut text, period);
    text.push('\t');
    copy_field(&mut text, &b.account_no);
    text.push_str(&format!("\t{run_id}\t{no}\tissued\t"));
    text.push_str(&b.copy_tail);
    let mut copy = conn
        .copy_in_raw(&format!("COPY billing.bills ({COPY_COLUMNS}) FROM STDIN"))
        .await?;
    copy.send(text.as_bytes()).await?;
    copy.finish().await?;
    let id: i64 =
        sqlx::query_scalar("SELECT bill_id FROM billing.bills WHERE period = $1 AND bill_no = $2")
            .bind(period)
            .bind(no)
            .fetch_one(&mut *conn)
            .await?;
    Ok((id, no))
}

/// Where a commit's time went (milliseconds, summed over chunks).
#[derive(Debug, Default, Clone, Copy)]
pub(super) struct CommitTimes {
    /// Counter lock, skipping bills present, drawing ids.
    pub(super) prepare_ms: u64,
    /// The COPY of the bill rows.
    pub(super) bills_ms: u64,
    /// Journal entries, postings, credit.
    pub(super) ledger_ms: u64,
    /// Waiting for the chunk before to commit (pipelined chunks).
    pub(super) wait_prev_ms: u64,
    /// The counter lock and update, credit, and COMMIT (the WAL flush).
    pub(super) commit_ms: u64,
    /// Pipelined chunks committed again serially because the numbers moved.
    pub(super) renumbered: u64,
}

impl CommitTimes {
    fn add(&mut self, o: &CommitTimes) {
        self.prepare_ms += o.prepare_ms;
        self.bills_ms += o.bills_ms;
        self.ledger_ms += o.ledger_ms;
        self.wait_prev_ms += o.wait_prev_ms;
        self.commit_ms += o.commit_ms;
        self.renumbered += o.renumbered;
    }
}

/// Chunks written at once in a pipelined commit, each on its own connection
/// in its own transaction: the next chunk's bills and entries are written
/// while the one before it finishes, so the server works on both cores.
pub const CHUNKS_IN_FLIGHT: usize = 2;

/// A chunk numbered optimistically (its numbers follow the chunk before it),
/// rendered and ready to write.
struct ChunkWrite {
    period: Period,
    /// The counter value its first issued bill follows.
    start: i64,
    bills_text: String,
    issued: Vec<crate::ledger::BillAmounts>,
    entry_ids: Vec<i64>,
}

enum ChunkFailure {
    /// The chunk before it failed, or the period's numbers moved meanwhile (a
    /// held bill released): it rolled back, to be committed again serially.
    Renumber,
    Failed(BillingError),
}

impl<E: Into<BillingError>> From<E> for ChunkFailure {
    fn from(e: E) -> Self {
        ChunkFailure::Failed(e.into())
    }
}

/// A clerk releasing a held bill while chunks are in flight takes the
/// period's next number: the chunk that expected it then meets that bill's
/// number in the unique index, or deadlocks with the release on the counter
/// (and the server aborts one). Either way the chunk rolls back and is
/// committed again, serially.
fn numbers_moved(e: sqlx::Error) -> ChunkFailure {
    if let sqlx::Error::Database(d) = &e {
        let code = d.code();
        if code.as_deref() == Some("40P01")
            || (code.as_deref() == Some("23505") && d.constraint() == Some("bills_number_idx"))
        {
            tracing::info!(error = %d, "period's numbers moved under a chunk; renumbering");
            return ChunkFailure::Renumber;
        }
    }
    ChunkFailure::Failed(e.into())
}

/// Writes a numbered chunk in its own transaction: bills and entries first,
/// then, once the chunk before it has committed, the period's counter lock;
/// the numbers stand only if the counter is where the chunk expected it.
/// Signals `done` with whether it committed.
async fn write_chunk(
    pool: PgPool,
    w: ChunkWrite,
    prev: Option<tokio::sync::oneshot::Receiver<bool>>,
    done: tokio::sync::oneshot::Sender<bool>,
) -> Result<CommitTimes, ChunkFailure> {
    let result = write_chunk_tx(&pool, w, prev).await;
    let _ = done.send(result.is_ok());
    result
}

async fn write_chunk_tx(
    pool: &PgPool,
    w: ChunkWrite,
    prev: Option<tokio::sync::oneshot::Receiver<bool>>,
) -> Result<CommitTimes, ChunkFailure> {
    let mut times = CommitTimes::default();
    let t_bills = std::time::Instant::now();
    let mut tx = pool.begin().await?;
    let ChunkWrite {
        period,
        start,
        bills_text,
        issued,
        entry_ids,
    } = w;
    let render = tokio::task::spawn_blocking(move || {
        let rows = crate::ledger::store::render_issued_chunk(&issued, &entry_ids);
        (issued, rows)
    });
    if !bills_text.is_empty() {
        let mut copy = tx
            .copy_in_raw(&format!(
                "COPY billing.bills ({CHUNK_COPY_COLUMNS}) FROM STDIN"
            ))
            .await?;
        for part in bills_text.as_bytes().chunks(1 << 20) {
            copy.send(part).await.map_err(numbers_moved)?;
        }
        copy.finish().await.map_err(numbers_moved)?;
    }
    drop(bills_text);
    let t_ledger = std::time::Instant::now();
    times.bills_ms += (t_ledger - t_bills).as_millis() as u64;
    let (issued, rows) = render
        .await
        .map_err(|e| BillingError::Task(e.to_string()))?;
    crate::ledger::store::copy_new_entries(&mut tx, &rows?).await?;
    let t_wait = std::time::Instant::now();
    times.ledger_ms += (t_wait - t_ledger).as_millis() as u64;
    if let Some(prev) = prev {
        if prev.await != Ok(true) {
            return Err(ChunkFailure::Renumber);
        }
    }
    let t_lock = std::time::Instant::now();
    times.wait_prev_ms += (t_lock - t_wait).as_millis() as u64;
    let period_s = period.to_string();
    sqlx::query("INSERT INTO billing.period_counters (period) VALUES ($1) ON CONFLICT DO NOTHING")
        .bind(&period_s)
        .execute(&mut *tx)
        .await?;
    let last: i64 = sqlx::query_scalar(
        "SELECT last_bill_no FROM billing.period_counters WHERE period = $1 FOR UPDATE",
    )
    .bind(&period_s)
    .fetch_one(&mut *tx)
    .await
    .map_err(numbers_moved)?;
    if last != start {
        tracing::info!(
            expected = start,
            found = last,
            "period's numbers moved; chunk renumbered"
        );
        return Err(ChunkFailure::Renumber);
    }
    crate::ledger::store::apply_chunk_credit(&mut tx, &issued).await?;
    if !issued.is_empty() {
        sqlx::query("UPDATE billing.period_counters SET last_bill_no = $2 WHERE period = $1")
            .bind(&period_s)
            .bind(start + issued.len() as i64)
            .execute(&mut *tx)
            .await?;
    }
    tx.commit().await?;
    times.commit_ms += t_lock.elapsed().as_millis() as u64;
    Ok(times)
}

/// A chunk in flight.
struct InFlight {
    bills: Vec<PreparedBill>,
    present: HashSet<String>,
    task: tokio::task::JoinHandle<Result<CommitTimes, ChunkFailure>>,
}

/// A pipelined commit: chunks are prepared (accounts already billed skipped,
/// ids drawn, numbered after the chunk before, rendered) on the run's
/// connection, then written on their own connections, at most
/// [`CHUNKS_IN_FLIGHT`] at once. Each chunk is one transaction that takes the
/// period's counter lock only after the chunk before it committed and only
/// commits if the counter is where it expected: numbers stay gapless, every
/// chunk is whole or absent, and a chunk whose numbers moved is rolled back
/// and committed again serially ([`commit_chunk`]).
pub(super) struct Pipeline {
    period: Period,
    run_id: i64,
    /// The counter value the next chunk's numbers follow.
    next_start: i64,
    in_flight: std::collections::VecDeque<InFlight>,
    /// The last submitted chunk's commit signal, for the next chunk.
    last_done: Option<tokio::sync::oneshot::Receiver<bool>>,
}

impl Pipeline {
    pub(super) async fn start(
        conn: &mut PgConnection,
        period: Period,
        run_id: i64,
    ) -> Result<Pipeline, BillingError> {
        let mut p = Pipeline {
            period,
            run_id,
            next_start: 0,
            in_flight: Default::default(),
            last_done: None,
        };
        p.resync(conn).await?;
        Ok(p)
    }

    /// Reads the period's counter (nothing in flight).
    async fn resync(&mut self, conn: &mut PgConnection) -> Result<(), BillingError> {
        let period = self.period.to_string();
        sqlx::query(
            "INSERT INTO billing.period_counters (period) VALUES ($1) ON CONFLICT DO NOTHING",
        )
        .bind(&period)
        .execute(&mut *conn)
        .await?;
        self.next_start = sqlx::query_scalar(
            "SELECT last_bill_no FROM billing.period_counters WHERE period = $1",
        )
        .bind(&period)
        .fetch_one(&mut *conn)
        .await?;
        self.last_done = None;
        Ok(())
    }

    pub(super) async fn submit(
        &mut self,
        conn: &mut PgConnection,
        pool: &PgPool,
        bills: Vec<PreparedBill>,
        times: &mut CommitTimes,
        outcome: &mut RunOutcome,
    ) -> Result<(), BillingError> {
        while self.in_flight.len() >= CHUNKS_IN_FLIGHT {
            self.settle(conn, times, outcome).await?;
        }
        let started = std::time::Instant::now();
        let period = self.period.to_string();
        let accounts: Vec<&str> = bills.iter().map(|b| b.account_no.as_str()).collect();
        // Accounts billed meanwhile would fail the chunk on the unique
        // (period, account) index: whole, never half.
        let present: HashSet<String> = sqlx::query_scalar(
            "SELECT account_no FROM billing.bills WHERE period = $1 AND account_no = ANY($2)",
        )
        .bind(&period)
        .bind(&accounts)
        .fetch_all(&mut *conn)
        .await?
        .into_iter()
        .collect();
        let fresh: Vec<&PreparedBill> = bills
            .iter()
            .filter(|b| !present.contains(&b.account_no))
            .collect();
        let ids = draw_ids(conn, fresh.len()).await?;
        let start = self.next_start;
        let (bills_text, issued, entry_ids) =
            render_bills(&fresh, &ids, &self.period, self.run_id, start);
        self.next_start += issued.len() as i64;
        times.prepare_ms += started.elapsed().as_millis() as u64;
        let (done, next) = tokio::sync::oneshot::channel();
        let prev = self.last_done.replace(next);
        let task = tokio::spawn(write_chunk(
            pool.clone(),
            ChunkWrite {
                period: self.period,
                start,
                bills_text,
                issued,
                entry_ids,
            },
            prev,
            done,
        ));
        self.in_flight.push_back(InFlight {
            bills,
            present,
            task,
        });
        Ok(())
    }

    /// Waits for the oldest chunk in flight and counts it; if it had to be
    /// renumbered, waits for all and commits those again serially.
    async fn settle(
        &mut self,
        conn: &mut PgConnection,
        times: &mut CommitTimes,
        outcome: &mut RunOutcome,
    ) -> Result<(), BillingError> {
        let Some(c) = self.in_flight.pop_front() else {
            return Ok(());
        };
        match c.task.await {
            Ok(Ok(t)) => {
                times.add(&t);
                outcome.bills_existing += c.present.len() as u64;
                outcome.add(
                    c.bills
                        .iter()
                        .filter(|b| !c.present.contains(&b.account_no)),
                );
                Ok(())
            }
            Ok(Err(ChunkFailure::Renumber)) => {
                // Every later chunk waits for this one: none of them commits.
                let mut redo = vec![c.bills];
                let mut error = None;
                while let Some(c) = self.in_flight.pop_front() {
                    match c.task.await {
                        Ok(Err(ChunkFailure::Renumber)) => redo.push(c.bills),
                        Ok(Err(ChunkFailure::Failed(e))) => error = error.or(Some(e)),
                        Ok(Ok(_)) => {
                            error = error.or(Some(BillingError::Task(
                                "a chunk committed after one that did not".into(),
                            )))
                        }
                        Err(e) => error = error.or(Some(BillingError::Task(e.to_string()))),
                    }
                }
                if let Some(e) = error {
                    return Err(e);
                }
                for bills in redo {
                    times.renumbered += 1;
                    let present =
                        commit_chunk(conn, &self.period, self.run_id, &bills, times).await?;
                    outcome.bills_existing += present.len() as u64;
                    outcome.add(bills.iter().filter(|b| !present.contains(&b.account_no)));
                }
                self.resync(conn).await
            }
            Ok(Err(ChunkFailure::Failed(e))) => {
                self.drain().await;
                Err(e)
            }
            Err(e) => {
                self.drain().await;
                Err(BillingError::Task(e.to_string()))
            }
        }
    }

    /// Lets the chunks still in flight end (they roll back: the one before
    /// them did not commit).
    async fn drain(&mut self) {
        while let Some(c) = self.in_flight.pop_front() {
            let _ = c.task.await;
        }
    }

    pub(super) async fn finish(
        mut self,
        conn: &mut PgConnection,
        times: &mut CommitTimes,
        outcome: &mut RunOutcome,
    ) -> Result<(), BillingError> {
        while !self.in_flight.is_empty() {
            self.settle(conn, times, outcome).await?;
        }
        Ok(())
    }
}

/// Draws `n` bill ids and `n` entry ids (ids drawn and not used are gaps in
/// surrogate keys only, never in bill numbers).
async fn draw_ids(conn: &mut PgConnection, n: usize) -> Result<Vec<(i64, i64)>, BillingError> {
    if n == 0 {
        return Ok(Vec::new());
    }
    let ids: Vec<(i64, i64)> = sqlx::query_as(
        "SELECT nextval('billing.bills_bill_id_seq'), \
                nextval('billing.journal_entries_entry_id_seq') \
           FROM generate_series(1, $1)",
    )
    .bind(n as i64)
    .fetch_all(&mut *conn)
    .await?;
    if ids.len() != n {
        return Err(BillingError::Task(format!(
            "drew {} bill ids for {n} bills",
            ids.len()
        )));
    }
    Ok(ids)
}

/// One transaction: the period's counter row is locked (every writer of a
/// period's bills takes it first), accounts already billed are skipped, the
/// rest numbered consecutively and COPYed straight into `billing.bills`, and
/// the counter advanced. A failure rolls back the whole chunk: no half bill,
/// no gap.
pub(super) async fn commit_chunk(
    conn: &mut PgConnection,
    period: &Period,
    run_id: i64,
    chunk: &[PreparedBill],
    times: &mut CommitTimes,
) -> Result<HashSet<String>, BillingError> {
    let started = std::time::Instant::now();
    let period_s = period.to_string();
    let period_str = period_s.as_str();
    let mut tx = sqlx::Connection::begin(&mut *conn).await?;
    sqlx::query("INSERT INTO billing.period_counters (period) VALUES ($1) ON CONFLICT DO NOTHING")
        .bind(period_str)
        .execute(&mut *tx)
        .await?;
    let mut last: i64 = sqlx::query_scalar(
        "SELECT last_bill_no FROM billing.period_counters WHERE period = $1 FOR UPDATE",
    )
    .bind(period_str)
    .fetch_one(&mut *tx)
    .await?;
    let accounts: Vec<&str> = chunk.iter().map(|b| b.account_no.as_str()).collect();
    let present: HashSet<String> = sqlx::query_scalar(
        "SELECT account_no FROM billing.bills WHERE period = $1 AND account_no = ANY($2)",
    )
    .bind(period_str)
    .bind(&accounts)
    .fetch_all(&mut *tx)
    .await?
    .into_iter()
    .collect();
    let fresh: Vec<&PreparedBill> = chunk
        .iter()
        .filter(|b| !present.contains(&b.account_no))
        .collect();
    // Ids of the bills and of their ledger entries, drawn together (ids
    // drawn and not used are gaps in surrogate keys only, never in numbers).
    let ids = draw_ids(&mut tx, fresh.len()).await?;
    let t_bills = std::time::Instant::now();
    times.prepare_ms += (t_bills - started).as_millis() as u64;
    let first = last;
    let (text, issued, entry_ids) = render_bills(&fresh, &ids, period, run_id, first);
    last = first + issued.len() as i64;
    // The chunk's ledger entries are rendered on another thread while the
    // bills are written.
    let render = tokio::task::spawn_blocking(move || {
        let rows = crate::ledger::store::render_issued_chunk(&issued, &entry_ids);
        (issued, rows)
    });
    if !text.is_empty() {
        let mut copy = tx
            .copy_in_raw(&format!(
                "COPY billing.bills ({CHUNK_COPY_COLUMNS}) FROM STDIN"
            ))
            .await?;
        for part in text.as_bytes().chunks(1 << 20) {
            copy.send(part).await?;
        }
        copy.finish().await?;
    }
    let t_ledger = std::time::Instant::now();
    times.bills_ms += (t_ledger - t_bills).as_millis() as u64;
    let mut t_commit = t_ledger;
    if last != first {
        // The chunk's bills are posted to the ledger in the same transaction:
        // no bill is ever issued without its entry.
        let (issued, rows) = render
            .await
            .map_err(|e| BillingError::Task(e.to_string()))?;
        crate::ledger::store::post_issued_chunk(&mut tx, &issued, &rows?).await?;
        t_commit = std::time::Instant::now();
        sqlx::query("UPDATE billing.period_counters SET last_bill_no = $2 WHERE period = $1")
            .bind(period_str)
            .bind(last)
            .execute(&mut *tx)
            .await?;
    }
    times.ledger_ms += (t_commit - t_ledger).as_millis() as u64;
    tracing::debug!(
        bills = fresh.len(),
        prepare_ms = (t_bills - started).as_millis() as u64,
        bills_ms = (t_ledger - t_bills).as_millis() as u64,
        ledger_ms = (t_commit - t_ledger).as_millis() as u64,
        "chunk written"
    );
    tx.commit().await?;
    times.commit_ms += t_commit.elapsed().as_millis() as u64;
    Ok(present)
}
