//! The import's core, shared by `waterworks import KIND FILE` and the
//! console's import page: a utility's export of customers, premises,
//! meters or installations into billing (its master-data API,
//! `PUT /api/v1/master/...`) and, for meters, ingest's device registry
//! (`PUT /api/v1/meters`). No schema is written directly. See docs/import.md.
//!
//! 1. The file is read ([`read`]): CSV in CP949 or UTF-8 (given or
//!    detected) or the first sheet of an XLSX workbook. Unreadable rows
//!    (malformed CSV, wrong encoding) are bad rows.
//! 2. Each row becomes an item through the mapping ([`mapping`]); a field
//!    that does not parse, or a device profile no gateway knows, makes the
//!    row bad.
//! 3. The items are sent to billing, which checks keys twice in the file,
//!    the tariff's usage types and diameters, dates in the future,
//!    overlapping installations and meters in two places (in the file and
//!    against what is stored), and answers every problem at once, or, for a
//!    real request without problems, writes. Every problem comes back by
//!    index and field and becomes a bad row with the file's line and
//!    column; the rest is sent again until no problem is left. Meters are
//!    checked by billing and ingest (dry runs) before either writes.
//! 4. A dry run prints what would be created, changed and left unchanged,
//!    and every bad row. A real run with bad rows writes nothing unless
//!    `--skip-bad` (then it names every row it skipped); otherwise billing
//!    takes the file in one transaction (all or nothing) and ingest in
//!    batches of 2 000 (each one transaction, all checked first). A
//!    service that answers 429 or 503 is asked again, as `Retry-After`
//!    says, up to 8 times (the requests are idempotent).
//!    Importing the same file again changes nothing; each write is in the
//!    services' audit logs.

pub mod check;
pub mod mapping;
pub mod read;

use anyhow::Context;
use mapping::{Item, Layout, Mapping};
use read::Table;
use std::collections::BTreeSet;
use std::fmt::Write as _;
use waterworks_api::error::Problem;
use waterworks_api::ingest::{MeterBatch, MeterRegistration, RegisterReport};
use waterworks_api::master::UpsertReport;
use waterworks_api::{ErrorBody, ErrorCode};

/// What a file holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "clap", derive(clap::ValueEnum))]
pub enum Kind {
    Customers,
    Premises,
    Meters,
    Installations,
}

impl Kind {
    pub const ALL: [Kind; 4] = [
        Kind::Customers,
        Kind::Premises,
        Kind::Meters,
        Kind::Installations,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Customers => "customers",
            Kind::Premises => "premises",
            Kind::Meters => "meters",
            Kind::Installations => "installations",
        }
    }
}

/// One row the import does not take: where and why.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct BadRow {
    /// The line of the file (CSV) or the sheet's row number (XLSX), from 1.
    pub line: u64,
    /// The column's header, or empty for the row as a whole.
    pub column: String,
    pub reason: String,
}

impl BadRow {
    pub fn new(line: u64, column: &str, reason: impl Into<String>) -> Self {
        BadRow {
            line,
            column: column.to_string(),
            reason: reason.into(),
        }
    }
}

impl std::fmt::Display for BadRow {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.column.is_empty() {
            write!(f, "line {}: {}", self.line, self.reason)
        } else {
            write!(
                f,
                "line {}, column {}: {}",
                self.line, self.column, self.reason
            )
        }
    }
}

/// Where billing and ingest answer, and with whose tokens.
#[derive(Debug, Clone)]
pub struct Services {
    /// Billing's HTTP address, e.g. `http://billing:8082`.
    pub billing_url: String,
    /// Admin (billing's master-data batches are admin's).
    pub billing_token: String,
    /// Ingest's HTTP address (needed for meters).
    pub ingest_url: Option<String>,
    /// Operator or admin.
    pub ingest_token: String,
    /// Print each retry of a busy service on standard error (the command
    /// line); it is logged either way.
    pub report_retries: bool,
}

/// What to do with a file.
#[derive(Debug, Clone, Copy)]
pub struct Options {
    pub kind: Kind,
    /// Report what would be created, changed and left unchanged, and every
    /// bad row; write nothing.
    pub dry_run: bool,
    /// Import the good rows and name the bad ones skipped (without it, one
    /// bad row means nothing is imported).
    pub skip_bad: bool,
}

/// What an import did (or a dry run would do).
#[derive(Debug, Clone, Default)]
pub struct Outcome {
    pub kind: Option<Kind>,
    pub format: String,
    pub rows: usize,
    pub dry_run: bool,
    /// Billing's counts for the good rows.
    pub billing: UpsertReport,
    /// Ingest's counts (meters): created, changed, unchanged.
    pub ingest: Option<[u64; 3]>,
    /// Every bad row, by line.
    pub bad: Vec<BadRow>,
    /// Whether anything was written.
    pub written: bool,
}

impl Outcome {
    /// The lines of the bad rows.
    pub fn bad_lines(&self) -> BTreeSet<u64> {
        self.bad.iter().map(|b| b.line).collect()
    }

    pub fn render(&self) -> String {
        let mut s = String::new();
        let kind = self.kind.map_or("", Kind::as_str);
        let verb = if self.dry_run {
            "dry run, nothing written"
        } else if self.written {
            "imported"
        } else {
            "nothing written"
        };
        let _ = writeln!(
            s,
            "{kind}: {} rows read ({}), {} bad; {verb}",
            self.rows,
            self.format,
            self.bad_lines().len()
        );
        let (c, ch, u) = (
            self.billing.created,
            self.billing.changed,
            self.billing.unchanged,
        );
        let would = if self.dry_run { "would be " } else { "" };
        let _ = writeln!(
            s,
            "billing: {c} {would}created, {ch} {would}changed, {u} unchanged"
        );
        if let Some([c, ch, u]) = self.ingest {
            let _ = writeln!(
                s,
                "ingest registry: {c} {would}created, {ch} {would}changed, {u} unchanged"
            );
        }
        if !self.bad.is_empty() {
            let what = if self.dry_run || !self.written {
                "bad rows"
            } else {
                "skipped (bad rows)"
            };
            let _ = writeln!(s, "{what}:");
            for b in &self.bad {
                let _ = writeln!(s, "  {b}");
            }
        }
        s
    }
}

/// The items of a file that are still in the running, with their lines.
struct Good {
    lines: Vec<u64>,
    items: Vec<Item>,
}

impl Good {
    /// Drops the items at `indexes` (positions in `items`).
    fn drop_indexes(&mut self, indexes: &BTreeSet<usize>) {
        let mut i = 0;
        self.lines.retain(|_| {
            i += 1;
            !indexes.contains(&(i - 1))
        });
        let mut i = 0;
        self.items.retain(|_| {
            i += 1;
            !indexes.contains(&(i - 1))
        });
    }
}

/// The answer to a batch: counts, or problems.
enum Answer {
    Counts(UpsertReport),
    Problems(Vec<Problem>),
}

struct Client {
    http: reqwest::Client,
    billing_url: String,
    billing_token: String,
    ingest_url: Option<String>,
    ingest_token: String,
    report_retries: bool,
    /// The first wait before asking a busy service again (then doubling).
    first_wait: std::time::Duration,
}

/// Registrations in one request to ingest: a fifth of its limit
/// ([`waterworks_api::ingest::MAX_BATCH_METERS`]), so that one request stays
/// well inside ingest's statement time limit (5 s by default) while the
/// import also loads billing and the database.
const INGEST_BATCH: usize = waterworks_api::ingest::MAX_BATCH_METERS / 5;

/// Attempts of one request while a service answers 429 (rate limit) or 503
/// (busy, not ready, past its time limit) or cannot be reached: a request
/// of the import is idempotent (the same batch again changes nothing), so
/// a retry is safe. Waits follow `Retry-After`, else 0.5 s doubling, each
/// at most [`MAX_RETRY_WAIT`]; then the import fails, naming the answer.
const ATTEMPTS: u32 = 8;
const MAX_RETRY_WAIT: std::time::Duration = std::time::Duration::from_secs(30);

/// A service's answer: its status and body.
struct Reply {
    status: reqwest::StatusCode,
    body: Vec<u8>,
}

impl Reply {
    /// The error body of a refusal (empty when it is not one).
    fn error(&self) -> ErrorBody {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|_| ErrorBody::new(ErrorCode::Internal, "no error body"))
    }
}

impl Client {
    fn body(kind: Kind, items: &[Item]) -> anyhow::Result<Vec<u8>> {
        let list: Vec<serde_json::Value> = items
            .iter()
            .map(|i| match i {
                Item::Customer(x) => serde_json::to_value(x),
                Item::Premises(x) => serde_json::to_value(x),
                Item::Meter(x) => serde_json::to_value(x),
                Item::Installation(x) => serde_json::to_value(x),
            })
            .collect::<Result<_, _>>()?;
        Ok(serde_json::to_vec(
            &serde_json::json!({ kind.as_str(): list }),
        )?)
    }

    /// `PUT url?dry_run=` with `body`, retried while the service is busy
    /// (see [`ATTEMPTS`]).
    async fn put(
        &self,
        service: &str,
        url: &str,
        token: &str,
        body: Vec<u8>,
        dry_run: bool,
    ) -> anyhow::Result<Reply> {
        let mut wait = self.first_wait;
        for attempt in 1..=ATTEMPTS {
            let sent = self
                .http
                .put(url)
                .query(&[("dry_run", dry_run)])
                .bearer_auth(token)
                .header(reqwest::header::CONTENT_TYPE, "application/json")
                .body(body.clone())
                .send()
                .await;
            let why = match sent {
                Ok(resp) => {
                    let status = resp.status();
                    let retry_after = resp
                        .headers()
                        .get(reqwest::header::RETRY_AFTER)
                        .and_then(|v| v.to_str().ok())
                        .and_then(|v| v.trim().parse::<u64>().ok())
                        .map(std::time::Duration::from_secs);
                    let body = resp
                        .bytes()
                        .await
                        .with_context(|| format!("reading {service}'s answer from {url}"))?
                        .to_vec();
                    let reply = Reply { status, body };
                    if !matches!(status.as_u16(), 429 | 503) || attempt == ATTEMPTS {
                        return Ok(reply);
                    }
                    if let Some(ra) = retry_after {
                        wait = ra.max(wait);
                    }
                    format!("{status}: {}", reply.error().message)
                }
                Err(e) if attempt < ATTEMPTS && (e.is_connect() || e.is_timeout()) => {
                    format!("cannot reach it: {e}")
                }
                Err(e) => {
                    return Err(e).with_context(|| format!("cannot reach {service} at {url}"))
                }
            };
            let wait_now = wait.min(MAX_RETRY_WAIT);
            tracing::warn!(service, %url, attempt, wait_ms = wait_now.as_millis() as u64, %why, "retrying");
            if self.report_retries {
                eprintln!(
                    "{service} {why}; trying again in {:.1} s",
                    wait_now.as_secs_f64()
                );
            }
            tokio::time::sleep(wait_now).await;
            wait = (wait * 2).min(MAX_RETRY_WAIT);
        }
        unreachable!("the last attempt returns")
    }

    async fn billing(&self, kind: Kind, items: &[Item], dry_run: bool) -> anyhow::Result<Answer> {
        let url = format!(
            "{}/api/v1/master/{}",
            self.billing_url.trim_end_matches('/'),
            kind.as_str()
        );
        let reply = self
            .put(
                "billing",
                &url,
                &self.billing_token,
                Self::body(kind, items)?,
                dry_run,
            )
            .await?;
        match reply.status.as_u16() {
            200 => Ok(Answer::Counts(
                serde_json::from_slice(&reply.body)
                    .context("billing answered 200 without a report")?,
            )),
            422 => Ok(Answer::Problems(reply.error().problems)),
            _ => anyhow::bail!(
                "billing refused the file ({}): {}",
                reply.status,
                reply.error().message
            ),
        }
    }

    /// Registers meters with ingest: `PUT /api/v1/meters` in batches of
    /// [`INGEST_BATCH`]; problems come back with indexes into `items`.
    async fn ingest(&self, items: &[Item], dry_run: bool) -> anyhow::Result<(Answer, [u64; 3])> {
        let Some(base) = &self.ingest_url else {
            anyhow::bail!("meters are registered with ingest too: give --ingest-url");
        };
        let url = format!("{}/api/v1/meters", base.trim_end_matches('/'));
        let mut problems = Vec::new();
        let mut counts = [0u64; 3];
        for (b, batch) in items.chunks(INGEST_BATCH).enumerate() {
            let meters: Vec<MeterRegistration> = batch
                .iter()
                .filter_map(|i| match i {
                    Item::Meter(m) => Some(MeterRegistration {
                        meter_id: m.meter_id.clone(),
                        gateway_id: m.gateway_id.clone(),
                        profile_id: m.profile_id.clone(),
                        max_flow_lph: None,
                    }),
                    _ => None,
                })
                .collect();
            let body = serde_json::to_vec(&MeterBatch { meters })?;
            let reply = self
                .put("ingest", &url, &self.ingest_token, body, dry_run)
                .await?;
            match reply.status.as_u16() {
                200 => {
                    let rep: RegisterReport = serde_json::from_slice(&reply.body)
                        .context("ingest answered 200 without a report")?;
                    counts[0] += rep.created;
                    counts[1] += rep.changed;
                    counts[2] += rep.unchanged;
                }
                422 => problems.extend(reply.error().problems.into_iter().map(|p| Problem {
                    index: p.index + b * INGEST_BATCH,
                    ..p
                })),
                _ => anyhow::bail!(
                    "ingest refused the meters ({}): {}",
                    reply.status,
                    reply.error().message
                ),
            }
        }
        if problems.is_empty() {
            Ok((Answer::Counts(UpsertReport::default()), counts))
        } else {
            Ok((Answer::Problems(problems), counts))
        }
    }
}

/// Turns a service's problems into bad rows and drops their items.
fn take_problems(good: &mut Good, layout: &Layout, problems: Vec<Problem>, bad: &mut Vec<BadRow>) {
    let mut drop = BTreeSet::new();
    for p in problems {
        let Some(&line) = good.lines.get(p.index) else {
            continue;
        };
        let column = if p.field.is_empty() {
            String::new()
        } else {
            layout.column_of(&p.field)
        };
        bad.push(BadRow::new(line, &column, p.reason));
        drop.insert(p.index);
    }
    good.drop_indexes(&drop);
}

/// Imports `table` (a file read by [`read`]; `source` names it in errors)
/// through `mapping`; returns what it did (render it to print). Fails,
/// writing nothing, on a file it cannot use at all (no header, a required
/// column missing) and, without `skip_bad`, on any bad row.
pub async fn import(
    table: Table,
    source: &str,
    mapping: &Mapping,
    opts: Options,
    services: &Services,
) -> anyhow::Result<Outcome> {
    anyhow::ensure!(!table.headers.is_empty(), "{source}: no header row");
    let layout = mapping
        .layout(opts.kind, &table.headers)
        .with_context(|| source.to_string())?;
    // Rows of the file: those read, and those that could not be.
    let rows = table.records.len()
        + table
            .bad
            .iter()
            .filter(|b| b.line > 1)
            .map(|b| b.line)
            .collect::<BTreeSet<_>>()
            .len();
    let mut bad = table.bad;
    let mut good = Good {
        lines: Vec::new(),
        items: Vec::new(),
    };
    for rec in &table.records {
        match layout.item(rec) {
            Ok(item) => {
                good.lines.push(rec.line);
                good.items.push(item);
            }
            Err(b) => bad.extend(b),
        }
    }
    let client = Client {
        http: reqwest::Client::builder()
            .timeout(std::time::Duration::from_secs(600))
            .build()?,
        billing_url: services.billing_url.clone(),
        billing_token: services.billing_token.clone(),
        ingest_url: services.ingest_url.clone(),
        ingest_token: services.ingest_token.clone(),
        report_retries: services.report_retries,
        first_wait: std::time::Duration::from_millis(500),
    };
    let mut out = Outcome {
        kind: Some(opts.kind),
        format: table.format,
        rows,
        dry_run: opts.dry_run,
        ..Outcome::default()
    };
    // Billing checks every item in one answer; a request that is refused
    // writes nothing, so when the file may be written as it stands (no bad
    // row yet, or --skip-bad) the first request is already the real one.
    // Meters are checked by both services before either writes.
    let checks_first = opts.kind == Kind::Meters;
    let mut round = 0;
    loop {
        round += 1;
        anyhow::ensure!(round <= 8, "the services keep refusing rows; giving up");
        if good.items.is_empty() {
            break;
        }
        let write_now = !opts.dry_run && !checks_first && (opts.skip_bad || bad.is_empty());
        match client.billing(opts.kind, &good.items, !write_now).await? {
            Answer::Problems(ps) => {
                anyhow::ensure!(!ps.is_empty(), "billing refused the file without a reason");
                take_problems(&mut good, &layout, ps, &mut bad);
                continue;
            }
            Answer::Counts(rep) => {
                out.billing = rep;
                out.written = write_now;
            }
        }
        if checks_first {
            match client.ingest(&good.items, true).await? {
                (Answer::Problems(ps), _) => {
                    take_problems(&mut good, &layout, ps, &mut bad);
                    continue;
                }
                (Answer::Counts(_), counts) => out.ingest = Some(counts),
            }
        }
        break;
    }
    bad.sort();
    bad.dedup();
    out.bad = bad;
    let may_write = !opts.dry_run && (opts.skip_bad || out.bad.is_empty());
    if out.written || !may_write || good.items.is_empty() {
        return Ok(out);
    }
    // Meters: billing first (it checks more), then ingest's registry, in
    // batches each checked above; a run cut short is finished by running it
    // again (both are idempotent).
    match client.billing(opts.kind, &good.items, false).await? {
        Answer::Counts(rep) => out.billing = rep,
        Answer::Problems(ps) => anyhow::bail!(
            "billing refused rows it accepted in the dry run (a concurrent change?); nothing written: {}",
            ps.iter()
                .take(20)
                .map(|p| format!(
                    "line {}: {}",
                    good.lines.get(p.index).copied().unwrap_or(0),
                    p.reason
                ))
                .collect::<Vec<_>>()
                .join("; ")
        ),
    }
    out.written = true;
    if opts.kind == Kind::Meters {
        match client.ingest(&good.items, false).await? {
            (Answer::Counts(_), counts) => out.ingest = Some(counts),
            (Answer::Problems(ps), _) => anyhow::bail!(
                "ingest refused meters it accepted in the dry run (a concurrent change?); billing has them, run the import again: {}",
                ps.iter()
                    .map(|p| format!("{}: {}", p.field, p.reason))
                    .collect::<Vec<_>>()
                    .join("; ")
            ),
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::{HeaderValue, StatusCode};
    use axum::response::IntoResponse;
    use std::sync::atomic::{AtomicU32, Ordering};
    use std::sync::Arc;

    /// A billing stand-in on port 0: `busy` answers of 503 (Retry-After: 0)
    /// before each 200.
    async fn billing(busy: u32) -> (String, Arc<AtomicU32>) {
        let calls = Arc::new(AtomicU32::new(0));
        let seen = calls.clone();
        let app = axum::Router::new().route(
            "/api/v1/master/customers",
            axum::routing::put(move || {
                let seen = seen.clone();
                async move {
                    let n = seen.fetch_add(1, Ordering::SeqCst) + 1;
                    if n <= busy {
                        let mut r = (
                            StatusCode::SERVICE_UNAVAILABLE,
                            axum::Json(ErrorBody::new(ErrorCode::Unavailable, "busy")),
                        )
                            .into_response();
                        r.headers_mut()
                            .insert("retry-after", HeaderValue::from_static("0"));
                        return r;
                    }
                    axum::Json(UpsertReport {
                        created: 1,
                        created_keys: vec!["C1".into()],
                        ..UpsertReport::default()
                    })
                    .into_response()
                }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        (url, calls)
    }

    fn client(billing_url: String) -> Client {
        Client {
            http: reqwest::Client::new(),
            billing_url,
            billing_token: "t".into(),
            ingest_url: None,
            ingest_token: "t".into(),
            report_retries: false,
            first_wait: std::time::Duration::from_millis(1),
        }
    }

    fn one_customer() -> Vec<Item> {
        vec![Item::Customer(waterworks_api::master::Customer {
            customer_id: "C1".into(),
            name: "홍길동".into(),
            contact: String::new(),
        })]
    }

    #[tokio::test]
    async fn a_busy_service_is_asked_again_until_it_answers() {
        let (url, calls) = billing(3).await;
        let answer = client(url)
            .billing(Kind::Customers, &one_customer(), false)
            .await
            .unwrap();
        let Answer::Counts(rep) = answer else {
            panic!("problems instead of a report")
        };
        assert_eq!((rep.created, calls.load(Ordering::SeqCst)), (1, 4));
    }

    #[tokio::test]
    async fn a_service_busy_past_every_attempt_fails_the_import_naming_it() {
        let (url, calls) = billing(u32::MAX).await;
        let err = client(url)
            .billing(Kind::Customers, &one_customer(), false)
            .await
            .err()
            .expect("no answer but 503: the import fails");
        assert_eq!(calls.load(Ordering::SeqCst), ATTEMPTS);
        let msg = format!("{err:#}");
        assert!(msg.contains("503") && msg.contains("busy"), "{msg}");
    }
}
