//! (Long because every master-data kind runs the same check-then-write steps; they share the catalogue and the batch checks.)
//! Master data: customers, premises (the `billing.accounts` row of a
//! 수용가번호, extended by migration 0030), meters and installations over
//! time, written in batches ([`upsert_customers`], [`upsert_premises`],
//! [`upsert_meters`], [`upsert_installations`]) and read by [`search`] and
//! detail functions.
//!
//! A batch is checked in full before anything is written, every check over
//! every item (so one answer lists every problem): the pure checks
//! ([`validate_customers`] and its siblings: keys, lengths, the tariff's
//! usage types and diameters, dates in the future, installations that
//! overlap inside the batch) and the checks against the database (a
//! premises' customer, an installation's premises, overlaps with
//! installations already stored). Any problem refuses the whole batch,
//! every problem listed by index, field and reason. A good batch is one
//! transaction with its audit record (who, and the [`Author`]'s reason when
//! given); only rows that differ are written, so
//! writing the same batch again changes nothing. A dry run answers the same
//! report and writes nothing.

pub mod http;

use crate::tariff::TariffBook;
use crate::BillingError;
use chrono::{DateTime, NaiveDate, Utc};
use sqlx::{PgConnection, PgPool};
use std::collections::{BTreeSet, HashMap};
use waterworks_api::error::Problem;
use waterworks_api::master::{
    Customer, CustomerDetail, Installation, Meter, MeterDetail, Premises, PremisesDetail,
    UpsertReport,
};

/// Most items in one batch: a whole city's file of premises fits, so an
/// import of one file is one transaction.
pub const MAX_BATCH_ITEMS: usize = 250_000;
/// Most bytes in one request body.
pub const MAX_BATCH_BYTES: usize = 128 << 20;
/// Rows written per statement.
const CHUNK: usize = 20_000;
/// Results of a search at most.
const MAX_SEARCH: i64 = waterworks_api::master::MAX_SEARCH_LIMIT;

/// The outcome of a batch: its report, or every problem (nothing written).
pub type BatchOutcome = Result<UpsertReport, Vec<Problem>>;

/// What the tariff knows: the usage types and the diameters it prices.
#[derive(Debug, Clone, Default)]
pub struct Catalogue {
    pub usage_types: BTreeSet<String>,
    pub diameters: BTreeSet<u32>,
}

impl Catalogue {
    /// The usage types and diameters of the tariff's newest version (what a
    /// premises imported today will be billed under).
    pub fn from_book(book: &TariffBook) -> Catalogue {
        let v = book.latest();
        Catalogue {
            usage_types: v
                .water
                .keys()
                .cloned()
                .chain(v.mixed_use.iter().map(|m| m.usage_type.clone()))
                .collect(),
            diameters: v.base_krw.keys().copied().collect(),
        }
    }

    fn check_usage(&self, usage: &str) -> Result<(), String> {
        if self.usage_types.contains(usage) {
            return Ok(());
        }
        Err(format!(
            "usage type {usage:?} is not in the tariff (known: {})",
            self.usage_types
                .iter()
                .map(String::as_str)
                .collect::<Vec<_>>()
                .join(", ")
        ))
    }

    fn check_diameter(&self, mm: i32) -> Result<(), String> {
        if u32::try_from(mm).is_ok_and(|d| self.diameters.contains(&d)) {
            return Ok(());
        }
        Err(format!(
            "diameter {mm} mm has no base charge in the tariff (known: {})",
            self.diameters
                .iter()
                .map(u32::to_string)
                .collect::<Vec<_>>()
                .join(", ")
        ))
    }
}

fn problem(index: usize, field: &str, reason: impl Into<String>) -> Problem {
    Problem {
        index,
        field: field.into(),
        reason: reason.into(),
    }
}

/// A key: 1-64 characters, none of them a control character.
fn check_key(problems: &mut Vec<Problem>, i: usize, field: &str, key: &str) {
    if key.is_empty() || key.chars().count() > 64 || key.chars().any(char::is_control) {
        problems.push(problem(
            i,
            field,
            "must be 1-64 characters without control characters",
        ));
    }
}

fn check_text(problems: &mut Vec<Problem>, i: usize, field: &str, text: &str, required: bool) {
    if required && text.trim().is_empty() {
        problems.push(problem(i, field, "must not be empty"));
    } else if text.chars().count() > 200 {
        problems.push(problem(i, field, "must be at most 200 characters"));
    } else if text.chars().any(char::is_control) {
        problems.push(problem(i, field, "must not contain control characters"));
    }
}

/// Flags every key after its first occurrence.
fn check_duplicates(problems: &mut Vec<Problem>, field: &str, keys: impl Iterator<Item = String>) {
    let mut first: HashMap<String, usize> = HashMap::new();
    for (i, k) in keys.enumerate() {
        if let Some(f) = first.get(&k) {
            problems.push(problem(
                i,
                field,
                format!("{k} appears twice in the batch (also item {f})"),
            ));
        } else {
            first.insert(k, i);
        }
    }
}

fn sorted(mut problems: Vec<Problem>) -> Vec<Problem> {
    problems.sort_by(|a, b| (a.index, &a.field, &a.reason).cmp(&(b.index, &b.field, &b.reason)));
    problems.dedup();
    problems
}

/// The pure checks of a batch of customers.
pub fn validate_customers(items: &[Customer]) -> Vec<Problem> {
    let mut p = Vec::new();
    for (i, c) in items.iter().enumerate() {
        check_key(&mut p, i, "customer_id", &c.customer_id);
        check_text(&mut p, i, "name", &c.name, true);
        check_text(&mut p, i, "contact", &c.contact, false);
    }
    check_duplicates(
        &mut p,
        "customer_id",
        items.iter().map(|c| c.customer_id.clone()),
    );
    sorted(p)
}

/// The pure checks of a batch of premises, against the tariff.
pub fn validate_premises(items: &[Premises], cat: &Catalogue) -> Vec<Problem> {
    let mut p = Vec::new();
    for (i, x) in items.iter().enumerate() {
        check_key(&mut p, i, "account_no", &x.account_no);
        check_key(&mut p, i, "customer_id", &x.customer_id);
        check_text(&mut p, i, "address", &x.address, true);
        check_text(&mut p, i, "road_address", &x.road_address, false);
        check_key(&mut p, i, "billing_group", &x.billing_group);
        check_text(&mut p, i, "reading_route", &x.reading_route, false);
        if let Err(e) = cat.check_usage(&x.usage_type) {
            p.push(problem(i, "usage_type", e));
        }
        if let Err(e) = cat.check_diameter(x.diameter_mm) {
            p.push(problem(i, "diameter_mm", e));
        }
        if x.households < 1 {
            p.push(problem(i, "households", "must be at least 1"));
        }
    }
    check_duplicates(
        &mut p,
        "account_no",
        items.iter().map(|x| x.account_no.clone()),
    );
    sorted(p)
}

/// The pure checks of a batch of meters, against the tariff, on `today`.
pub fn validate_meters(items: &[Meter], cat: &Catalogue, today: NaiveDate) -> Vec<Problem> {
    let mut p = Vec::new();
    for (i, m) in items.iter().enumerate() {
        check_key(&mut p, i, "meter_id", &m.meter_id);
        check_text(&mut p, i, "serial", &m.serial, true);
        check_text(&mut p, i, "maker", &m.maker, false);
        check_text(&mut p, i, "model", &m.model, false);
        check_key(&mut p, i, "profile_id", &m.profile_id);
        check_key(&mut p, i, "gateway_id", &m.gateway_id);
        if let Err(e) = cat.check_diameter(m.diameter_mm) {
            p.push(problem(i, "diameter_mm", e));
        }
        for (field, day) in [
            ("manufactured_on", m.manufactured_on),
            ("verified_on", m.verified_on),
        ] {
            if let Some(d) = day.filter(|d| *d > today) {
                p.push(problem(i, field, format!("{d} is in the future")));
            }
        }
        if let (Some(made), Some(verified)) = (m.manufactured_on, m.verified_on) {
            if verified < made {
                p.push(problem(
                    i,
                    "verified_on",
                    format!("verified {verified} before it was made ({made})"),
                ));
            }
        }
    }
    check_duplicates(&mut p, "meter_id", items.iter().map(|m| m.meter_id.clone()));
    sorted(p)
}

/// The key of an installation, as reports name it.
pub fn installation_key(x: &Installation) -> String {
    format!(
        "{}/{}/{}",
        x.account_no,
        x.meter_id,
        x.installed_at.to_rfc3339()
    )
}

fn overlaps(
    a_from: DateTime<Utc>,
    a_to: Option<DateTime<Utc>>,
    b_from: DateTime<Utc>,
    b_to: Option<DateTime<Utc>>,
) -> bool {
    a_to.is_none_or(|t| t > b_from) && b_to.is_none_or(|t| t > a_from)
}

/// The pure checks of a batch of installations at `now`: keys, dates,
/// reads, a key twice, a meter at two premises at once, overlapping
/// installations of one premises.
pub fn validate_installations(items: &[Installation], now: DateTime<Utc>) -> Vec<Problem> {
    let mut p = Vec::new();
    for (i, x) in items.iter().enumerate() {
        check_key(&mut p, i, "account_no", &x.account_no);
        check_key(&mut p, i, "meter_id", &x.meter_id);
        if x.installed_at > now {
            p.push(problem(
                i,
                "installed_at",
                format!("{} is in the future", x.installed_at.to_rfc3339()),
            ));
        }
        if let Some(r) = x.removed_at {
            if r > now {
                p.push(problem(
                    i,
                    "removed_at",
                    format!("{} is in the future", r.to_rfc3339()),
                ));
            } else if r <= x.installed_at {
                p.push(problem(i, "removed_at", "must be after installed_at"));
            }
        }
        if x.install_read_m3.is_sign_negative() || x.install_read_m3.scale() > 3 {
            p.push(problem(
                i,
                "install_read_m3",
                "must be at least 0, with at most 3 decimals",
            ));
        }
    }
    check_duplicates(&mut p, "installed_at", items.iter().map(installation_key));
    // Overlaps inside the batch: by meter, then by premises. In start
    // order, an installation that starts before the latest end of those
    // before it (in its group) overlaps the one holding that end.
    for by_meter in [true, false] {
        fn key(x: &Installation, by_meter: bool) -> &str {
            if by_meter {
                &x.meter_id
            } else {
                &x.account_no
            }
        }
        let group = |x| key(x, by_meter);
        let mut idx: Vec<usize> = (0..items.len()).collect();
        idx.sort_by(|&a, &b| {
            group(&items[a])
                .cmp(group(&items[b]))
                .then(items[a].installed_at.cmp(&items[b].installed_at))
        });
        // The index holding the latest end so far in the current group.
        let mut reach: Option<usize> = None;
        for &i in &idx {
            let b = &items[i];
            let Some(r) = reach.filter(|&r| group(&items[r]) == group(b)) else {
                reach = Some(i);
                continue;
            };
            let a = &items[r];
            if installation_key(a) != installation_key(b)
                && overlaps(a.installed_at, a.removed_at, b.installed_at, b.removed_at)
            {
                if by_meter && a.account_no != b.account_no {
                    p.push(problem(
                        i,
                        "meter_id",
                        format!(
                            "meter {} is also installed at premises {} from {} (item {r}): one meter cannot be at two places at once",
                            b.meter_id,
                            a.account_no,
                            a.installed_at.to_rfc3339()
                        ),
                    ));
                } else if !by_meter {
                    p.push(problem(
                        i,
                        "account_no",
                        format!(
                            "overlaps the installation of meter {} at this premises from {} (item {r})",
                            a.meter_id,
                            a.installed_at.to_rfc3339()
                        ),
                    ));
                }
            }
            // Keep whichever reaches further (none: still installed).
            let ends_later = match (a.removed_at, b.removed_at) {
                (None, _) => false,
                (Some(_), None) => true,
                (Some(ea), Some(eb)) => eb > ea,
            };
            if ends_later {
                reach = Some(i);
            }
        }
    }
    sorted(p)
}

fn report(dry_run: bool) -> UpsertReport {
    UpsertReport {
        dry_run,
        ..UpsertReport::default()
    }
}

/// The stored rows of a batch's keys (`select`: a query with `= ANY($1)`
/// over the key column), compared with the batch: the report so far and
/// the indexes of the items to write.
async fn plan<T>(
    tx: &mut PgConnection,
    select: &str,
    items: &[T],
    key: fn(&T) -> String,
    dry_run: bool,
) -> Result<(UpsertReport, Vec<usize>), BillingError>
where
    T: PartialEq + Send + Unpin + for<'r> sqlx::FromRow<'r, sqlx::postgres::PgRow>,
{
    let keys: Vec<String> = items.iter().map(key).collect();
    let stored: Vec<T> = sqlx::query_as(select)
        .bind(&keys)
        .fetch_all(&mut *tx)
        .await?;
    let stored: HashMap<String, T> = stored.into_iter().map(|x| (key(&x), x)).collect();
    let mut rep = report(dry_run);
    let write = classify(&mut rep, items, key, &stored);
    Ok((rep, write))
}

/// Sorts `keys` of a batch into created, changed and unchanged by comparing
/// each item with the stored one; returns the indexes to write.
fn classify<T: PartialEq>(
    rep: &mut UpsertReport,
    items: &[T],
    key: impl Fn(&T) -> String,
    stored: &HashMap<String, T>,
) -> Vec<usize> {
    let mut write = Vec::new();
    for (i, x) in items.iter().enumerate() {
        let k = key(x);
        match stored.get(&k) {
            None => {
                rep.created += 1;
                rep.created_keys.push(k);
                write.push(i);
            }
            Some(s) if s != x => {
                rep.changed += 1;
                rep.changed_keys.push(k);
                write.push(i);
            }
            Some(_) => rep.unchanged += 1,
        }
    }
    write
}

/// Who writes a batch and why: the audit record's actor and reason.
#[derive(Debug, Clone, Copy)]
pub struct Author<'a> {
    /// The caller's token name.
    pub actor: &'a str,
    /// Why (`?reason=`), when given: the record's reason and in its details.
    pub reason: Option<&'a str>,
}

async fn audit(
    tx: &mut PgConnection,
    who: Author<'_>,
    action: &str,
    rep: &UpsertReport,
) -> Result<(), BillingError> {
    let mut details = serde_json::json!({
        "created": rep.created_keys, "changed": rep.changed_keys, "unchanged": rep.unchanged,
    });
    if let Some(r) = who.reason {
        details["reason"] = serde_json::Value::from(r);
    }
    crate::corrections::audit(
        tx,
        who.actor,
        action,
        "master",
        who.reason.unwrap_or(""),
        details,
    )
    .await
}

/// Writes a batch of customers (see the module). The names printed on the
/// customers' premises follow a changed name.
pub async fn upsert_customers(
    pool: &PgPool,
    items: &[Customer],
    who: Author<'_>,
    dry_run: bool,
) -> Result<BatchOutcome, BillingError> {
    let problems = validate_customers(items);
    if !problems.is_empty() {
        return Ok(Err(problems));
    }
    let mut tx = pool.begin().await?;
    let (rep, write) = plan(
        &mut tx,
        "SELECT customer_id, name, contact FROM billing.customers WHERE customer_id = ANY($1)",
        items,
        |c: &Customer| c.customer_id.clone(),
        dry_run,
    )
    .await?;
    if dry_run || write.is_empty() {
        return Ok(Ok(rep));
    }
    for chunk in write.chunks(CHUNK) {
        let col = |f: fn(&Customer) -> &String| {
            chunk
                .iter()
                .map(|&i| f(&items[i]).clone())
                .collect::<Vec<_>>()
        };
        sqlx::query(
            "INSERT INTO billing.customers (customer_id, name, contact) \
             SELECT * FROM UNNEST($1::text[], $2::text[], $3::text[]) \
             ON CONFLICT (customer_id) DO UPDATE SET name = EXCLUDED.name, \
                 contact = EXCLUDED.contact, updated_at = now()",
        )
        .bind(col(|c| &c.customer_id))
        .bind(col(|c| &c.name))
        .bind(col(|c| &c.contact))
        .execute(&mut *tx)
        .await?;
        sqlx::query(
            "UPDATE billing.accounts a SET customer = c.name, updated_at = now() \
               FROM billing.customers c \
              WHERE a.customer_id = c.customer_id AND c.customer_id = ANY($1) \
                AND a.customer IS DISTINCT FROM c.name",
        )
        .bind(col(|c| &c.customer_id))
        .execute(&mut *tx)
        .await?;
    }
    audit(&mut tx, who, "upsert_customers", &rep).await?;
    tx.commit().await?;
    Ok(Ok(rep))
}

const PREMISES_COLUMNS: &str = "account_no, COALESCE(customer_id, '') AS customer_id, address, \
     road_address, usage_type, diameter_mm, households, sewer_connected, levy_exempt, \
     billing_group, reading_route";

/// Writes a batch of premises (see the module). Each premises' customer
/// must exist; the name on its bills is the customer's. Reductions granted
/// by clerks and the installations are left as they are.
pub async fn upsert_premises(
    pool: &PgPool,
    cat: &Catalogue,
    items: &[Premises],
    who: Author<'_>,
    dry_run: bool,
) -> Result<BatchOutcome, BillingError> {
    let mut problems = validate_premises(items, cat);
    let mut tx = pool.begin().await?;
    let customer_ids: Vec<String> = items.iter().map(|x| x.customer_id.clone()).collect();
    let known: Vec<(String,)> =
        sqlx::query_as("SELECT customer_id FROM billing.customers WHERE customer_id = ANY($1)")
            .bind(&customer_ids)
            .fetch_all(&mut *tx)
            .await?;
    let known: std::collections::HashSet<String> = known.into_iter().map(|(k,)| k).collect();
    for (i, x) in items.iter().enumerate() {
        if !known.contains(&x.customer_id) {
            problems.push(problem(
                i,
                "customer_id",
                format!("no customer {}: import it first", x.customer_id),
            ));
        }
    }
    if !problems.is_empty() {
        return Ok(Err(sorted(problems)));
    }
    let (rep, write) = plan(
        &mut tx,
        &format!("SELECT {PREMISES_COLUMNS} FROM billing.accounts WHERE account_no = ANY($1)"),
        items,
        |x: &Premises| x.account_no.clone(),
        dry_run,
    )
    .await?;
    if dry_run || write.is_empty() {
        return Ok(Ok(rep));
    }
    for chunk in write.chunks(CHUNK) {
        let col = |f: fn(&Premises) -> &String| {
            chunk
                .iter()
                .map(|&i| f(&items[i]).clone())
                .collect::<Vec<_>>()
        };
        let int = |f: fn(&Premises) -> i32| chunk.iter().map(|&i| f(&items[i])).collect::<Vec<_>>();
        let flag =
            |f: fn(&Premises) -> bool| chunk.iter().map(|&i| f(&items[i])).collect::<Vec<_>>();
        sqlx::query(
            "INSERT INTO billing.accounts (account_no, customer_id, customer, address, road_address, \
                 usage_type, diameter_mm, households, sewer_connected, levy_exempt, billing_group, \
                 reading_route) \
             SELECT u.account_no, u.customer_id, c.name, u.address, u.road_address, u.usage_type, \
                    u.diameter_mm, u.households, u.sewer_connected, u.levy_exempt, u.billing_group, \
                    u.reading_route \
               FROM UNNEST($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::int4[], \
                    $7::int4[], $8::bool[], $9::bool[], $10::text[], $11::text[]) \
                    AS u(account_no, customer_id, address, road_address, usage_type, diameter_mm, \
                         households, sewer_connected, levy_exempt, billing_group, reading_route) \
               JOIN billing.customers c USING (customer_id) \
             ON CONFLICT (account_no) DO UPDATE SET customer_id = EXCLUDED.customer_id, \
                 customer = EXCLUDED.customer, address = EXCLUDED.address, \
                 road_address = EXCLUDED.road_address, usage_type = EXCLUDED.usage_type, \
                 diameter_mm = EXCLUDED.diameter_mm, households = EXCLUDED.households, \
                 sewer_connected = EXCLUDED.sewer_connected, levy_exempt = EXCLUDED.levy_exempt, \
                 billing_group = EXCLUDED.billing_group, reading_route = EXCLUDED.reading_route, \
                 updated_at = now()",
        )
        .bind(col(|x| &x.account_no))
        .bind(col(|x| &x.customer_id))
        .bind(col(|x| &x.address))
        .bind(col(|x| &x.road_address))
        .bind(col(|x| &x.usage_type))
        .bind(int(|x| x.diameter_mm))
        .bind(int(|x| x.households))
        .bind(flag(|x| x.sewer_connected))
        .bind(flag(|x| x.levy_exempt))
        .bind(col(|x| &x.billing_group))
        .bind(col(|x| &x.reading_route))
        .execute(&mut *tx)
        .await?;
    }
    audit(&mut tx, who, "upsert_premises", &rep).await?;
    tx.commit().await?;
    Ok(Ok(rep))
}

const METER_COLUMNS: &str = "meter_id, serial, maker, model, profile_id, diameter_mm, \
     manufactured_on, verified_on, gateway_id";

/// Writes a batch of meters (see the module). Billing's record only: the
/// import registers the same meters with ingest through ingest's API.
pub async fn upsert_meters(
    pool: &PgPool,
    cat: &Catalogue,
    items: &[Meter],
    who: Author<'_>,
    dry_run: bool,
) -> Result<BatchOutcome, BillingError> {
    let problems = validate_meters(
        items,
        cat,
        Utc::now().with_timezone(&crate::period::kst()).date_naive(),
    );
    if !problems.is_empty() {
        return Ok(Err(problems));
    }
    let mut tx = pool.begin().await?;
    let (rep, write) = plan(
        &mut tx,
        &format!("SELECT {METER_COLUMNS} FROM billing.meters WHERE meter_id = ANY($1)"),
        items,
        |m: &Meter| m.meter_id.clone(),
        dry_run,
    )
    .await?;
    if dry_run || write.is_empty() {
        return Ok(Ok(rep));
    }
    for chunk in write.chunks(CHUNK) {
        let col = |f: fn(&Meter) -> &String| {
            chunk
                .iter()
                .map(|&i| f(&items[i]).clone())
                .collect::<Vec<_>>()
        };
        let day = |f: fn(&Meter) -> Option<NaiveDate>| {
            chunk.iter().map(|&i| f(&items[i])).collect::<Vec<_>>()
        };
        sqlx::query(
            "INSERT INTO billing.meters (meter_id, serial, maker, model, profile_id, diameter_mm, \
                 manufactured_on, verified_on, gateway_id) \
             SELECT * FROM UNNEST($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], \
                 $6::int4[], $7::date[], $8::date[], $9::text[]) \
             ON CONFLICT (meter_id) DO UPDATE SET serial = EXCLUDED.serial, maker = EXCLUDED.maker, \
                 model = EXCLUDED.model, profile_id = EXCLUDED.profile_id, \
                 diameter_mm = EXCLUDED.diameter_mm, manufactured_on = EXCLUDED.manufactured_on, \
                 verified_on = EXCLUDED.verified_on, gateway_id = EXCLUDED.gateway_id, \
                 updated_at = now()",
        )
        .bind(col(|m| &m.meter_id))
        .bind(col(|m| &m.serial))
        .bind(col(|m| &m.maker))
        .bind(col(|m| &m.model))
        .bind(col(|m| &m.profile_id))
        .bind(chunk.iter().map(|&i| items[i].diameter_mm).collect::<Vec<_>>())
        .bind(day(|m| m.manufactured_on))
        .bind(day(|m| m.verified_on))
        .bind(col(|m| &m.gateway_id))
        .execute(&mut *tx)
        .await?;
    }
    audit(&mut tx, who, "upsert_meters", &rep).await?;
    tx.commit().await?;
    Ok(Ok(rep))
}

const INSTALLATION_COLUMNS: &str =
    "account_no, meter_id, installed_at, removed_at, install_read_m3";

/// Writes a batch of installations (see the module). Each premises must
/// exist; no installation may overlap one already stored (of the same meter
/// elsewhere, or at the same premises) unless the batch itself rewrites
/// that stored one. An installation is keyed by premises, meter and
/// installation instant; a later batch may end it (`removed_at`).
pub async fn upsert_installations(
    pool: &PgPool,
    items: &[Installation],
    who: Author<'_>,
    dry_run: bool,
) -> Result<BatchOutcome, BillingError> {
    let mut problems = validate_installations(items, Utc::now());
    let mut tx = pool.begin().await?;
    let accounts: Vec<String> = items.iter().map(|x| x.account_no.clone()).collect();
    let meters: Vec<String> = items.iter().map(|x| x.meter_id.clone()).collect();
    let installed: Vec<DateTime<Utc>> = items.iter().map(|x| x.installed_at).collect();
    let removed: Vec<Option<DateTime<Utc>>> = items.iter().map(|x| x.removed_at).collect();
    let missing: Vec<(i64,)> = sqlx::query_as(
        "SELECT u.i - 1 FROM UNNEST($1::text[]) WITH ORDINALITY AS u(account_no, i) \
          WHERE NOT EXISTS (SELECT 1 FROM billing.accounts a WHERE a.account_no = u.account_no)",
    )
    .bind(&accounts)
    .fetch_all(&mut *tx)
    .await?;
    for (i,) in missing {
        let i = i as usize;
        problems.push(problem(
            i,
            "account_no",
            format!("no premises {}: import it first", items[i].account_no),
        ));
    }
    // Overlaps with what is stored, except rows the batch rewrites.
    let clashes: Vec<(i64, bool, String, String, DateTime<Utc>)> = sqlx::query_as(
        "WITH b AS MATERIALIZED (SELECT * FROM UNNEST($1::text[], $2::text[], \
                        $3::timestamptz[], $4::timestamptz[]) WITH ORDINALITY \
                        AS b(account_no, meter_id, installed_at, removed_at, i) \
                  WHERE b.removed_at IS NULL OR b.removed_at > b.installed_at) \
         SELECT b.i - 1, true, m.account_no, m.meter_id, m.installed_at \
           FROM b JOIN billing.meter_installations m \
             ON m.meter_id = b.meter_id AND m.account_no <> b.account_no \
            AND tstzrange(m.installed_at, m.removed_at) && tstzrange(b.installed_at, b.removed_at) \
          WHERE NOT EXISTS (SELECT 1 FROM b r WHERE r.account_no = m.account_no \
                  AND r.meter_id = m.meter_id AND r.installed_at = m.installed_at) \
         UNION ALL \
         SELECT b.i - 1, false, m.account_no, m.meter_id, m.installed_at \
           FROM b JOIN billing.meter_installations m ON m.account_no = b.account_no \
            AND tstzrange(m.installed_at, m.removed_at) && tstzrange(b.installed_at, b.removed_at) \
          WHERE NOT EXISTS (SELECT 1 FROM b r WHERE r.account_no = m.account_no \
                  AND r.meter_id = m.meter_id AND r.installed_at = m.installed_at)",
    )
    .bind(&accounts)
    .bind(&meters)
    .bind(&installed)
    .bind(&removed)
    .fetch_all(&mut *tx)
    .await?;
    for (i, by_meter, account, meter, from) in clashes {
        let i = i as usize;
        if by_meter {
            problems.push(problem(
                i,
                "meter_id",
                format!(
                    "meter {meter} is already installed at premises {account} from {}: one meter cannot be at two places at once",
                    from.to_rfc3339()
                ),
            ));
        } else {
            problems.push(problem(
                i,
                "installed_at",
                format!(
                    "overlaps the stored installation of meter {meter} at this premises from {}",
                    from.to_rfc3339()
                ),
            ));
        }
    }
    if !problems.is_empty() {
        return Ok(Err(sorted(problems)));
    }
    let stored: Vec<Installation> = sqlx::query_as(&format!(
        "SELECT {INSTALLATION_COLUMNS} FROM billing.meter_installations m \
          WHERE (m.account_no, m.meter_id, m.installed_at) IN \
                (SELECT * FROM UNNEST($1::text[], $2::text[], $3::timestamptz[]))"
    ))
    .bind(&accounts)
    .bind(&meters)
    .bind(&installed)
    .fetch_all(&mut *tx)
    .await?;
    let stored: HashMap<String, Installation> = stored
        .into_iter()
        .map(|x| (installation_key(&x), x))
        .collect();
    let mut rep = report(dry_run);
    // The stored read has the column's scale; compare by value.
    let normalized: Vec<Installation> = items
        .iter()
        .map(|x| Installation {
            install_read_m3: x.install_read_m3.normalize(),
            ..x.clone()
        })
        .collect();
    let stored: HashMap<String, Installation> = stored
        .into_iter()
        .map(|(k, x)| {
            (
                k,
                Installation {
                    install_read_m3: x.install_read_m3.normalize(),
                    ..x
                },
            )
        })
        .collect();
    let write = classify(&mut rep, &normalized, installation_key, &stored);
    if dry_run || write.is_empty() {
        return Ok(Ok(rep));
    }
    // Changed rows first (only their end or install read differs), then new
    // ones: an exchange ends one installation before the next starts, so
    // the exclusion constraints hold after every row, not only at the end.
    let (changed, created): (Vec<usize>, Vec<usize>) = write
        .into_iter()
        .partition(|&i| stored.contains_key(&installation_key(&items[i])));
    for chunk in changed.chunks(CHUNK) {
        sqlx::query(
            "UPDATE billing.meter_installations m \
                SET removed_at = u.removed_at, install_read_m3 = u.install_read_m3 \
               FROM UNNEST($1::text[], $2::text[], $3::timestamptz[], $4::timestamptz[], \
                    $5::numeric[]) AS u(account_no, meter_id, installed_at, removed_at, \
                    install_read_m3) \
              WHERE (m.account_no, m.meter_id, m.installed_at) \
                  = (u.account_no, u.meter_id, u.installed_at)",
        )
        .bind(
            chunk
                .iter()
                .map(|&i| accounts[i].clone())
                .collect::<Vec<_>>(),
        )
        .bind(chunk.iter().map(|&i| meters[i].clone()).collect::<Vec<_>>())
        .bind(chunk.iter().map(|&i| installed[i]).collect::<Vec<_>>())
        .bind(chunk.iter().map(|&i| removed[i]).collect::<Vec<_>>())
        .bind(
            chunk
                .iter()
                .map(|&i| items[i].install_read_m3)
                .collect::<Vec<_>>(),
        )
        .execute(&mut *tx)
        .await?;
    }
    for chunk in created.chunks(CHUNK) {
        sqlx::query(
            "INSERT INTO billing.meter_installations (account_no, meter_id, installed_at, \
                 removed_at, install_read_m3) \
             SELECT * FROM UNNEST($1::text[], $2::text[], $3::timestamptz[], $4::timestamptz[], \
                 $5::numeric[])",
        )
        .bind(
            chunk
                .iter()
                .map(|&i| accounts[i].clone())
                .collect::<Vec<_>>(),
        )
        .bind(chunk.iter().map(|&i| meters[i].clone()).collect::<Vec<_>>())
        .bind(chunk.iter().map(|&i| installed[i]).collect::<Vec<_>>())
        .bind(chunk.iter().map(|&i| removed[i]).collect::<Vec<_>>())
        .bind(
            chunk
                .iter()
                .map(|&i| items[i].install_read_m3)
                .collect::<Vec<_>>(),
        )
        .execute(&mut *tx)
        .await?;
    }
    audit(&mut tx, who, "upsert_installations", &rep).await?;
    tx.commit().await?;
    Ok(Ok(rep))
}

/// Which master data a search looks through.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Customers,
    Premises,
    Meters,
}

fn like_prefix(q: &str) -> String {
    let escaped = q
        .replace('\\', "\\\\")
        .replace('%', "\\%")
        .replace('_', "\\_");
    format!("{escaped}%")
}

fn like_substring(q: &str) -> String {
    let escaped = q
        .replace('\\', "\\\\")
        .replace('%', "\\%")
        .replace('_', "\\_");
    format!("%{escaped}%")
}

/// Customers whose number starts with `q` or whose name contains it.
pub async fn search_customers(
    pool: &PgPool,
    q: &str,
    limit: i64,
) -> Result<Vec<Customer>, BillingError> {
    Ok(sqlx::query_as(
        "SELECT customer_id, name, contact FROM billing.customers \
          WHERE customer_id LIKE $1 OR name ILIKE $2 ORDER BY customer_id LIMIT $3",
    )
    .bind(like_prefix(q))
    .bind(like_substring(q))
    .bind(limit.clamp(1, MAX_SEARCH))
    .fetch_all(pool)
    .await?)
}

/// Premises whose 수용가번호 or reading route starts with `q`, or whose
/// address or customer contains it.
pub async fn search_premises(
    pool: &PgPool,
    q: &str,
    limit: i64,
) -> Result<Vec<Premises>, BillingError> {
    Ok(sqlx::query_as(&format!(
        "SELECT {PREMISES_COLUMNS} FROM billing.accounts \
          WHERE account_no LIKE $1 OR reading_route LIKE $1 OR address ILIKE $2 \
             OR road_address ILIKE $2 OR customer ILIKE $2 \
          ORDER BY account_no LIMIT $3"
    ))
    .bind(like_prefix(q))
    .bind(like_substring(q))
    .bind(limit.clamp(1, MAX_SEARCH))
    .fetch_all(pool)
    .await?)
}

/// Meters whose id or serial starts with `q`.
pub async fn search_meters(pool: &PgPool, q: &str, limit: i64) -> Result<Vec<Meter>, BillingError> {
    Ok(sqlx::query_as(&format!(
        "SELECT {METER_COLUMNS} FROM billing.meters \
          WHERE meter_id LIKE $1 OR serial LIKE $1 ORDER BY meter_id LIMIT $2"
    ))
    .bind(like_prefix(q))
    .bind(limit.clamp(1, MAX_SEARCH))
    .fetch_all(pool)
    .await?)
}

/// A customer and the premises billed to them.
pub async fn customer_detail(
    pool: &PgPool,
    id: &str,
) -> Result<Option<CustomerDetail>, BillingError> {
    if id.contains('\0') {
        return Ok(None); // no key holds NUL (keys are checked on the way in)
    }
    let customer: Option<Customer> = sqlx::query_as(
        "SELECT customer_id, name, contact FROM billing.customers WHERE customer_id = $1",
    )
    .bind(id)
    .fetch_optional(pool)
    .await?;
    let Some(customer) = customer else {
        return Ok(None);
    };
    let premises: Vec<(String,)> = sqlx::query_as(
        "SELECT account_no FROM billing.accounts WHERE customer_id = $1 ORDER BY account_no",
    )
    .bind(id)
    .fetch_all(pool)
    .await?;
    Ok(Some(CustomerDetail {
        customer,
        premises: premises.into_iter().map(|(p,)| p).collect(),
    }))
}

/// A premises, its customer and its installations, oldest first.
pub async fn premises_detail(
    pool: &PgPool,
    account_no: &str,
) -> Result<Option<PremisesDetail>, BillingError> {
    if account_no.contains('\0') {
        return Ok(None); // no key holds NUL (keys are checked on the way in)
    }
    let premises: Option<Premises> = sqlx::query_as(&format!(
        "SELECT {PREMISES_COLUMNS} FROM billing.accounts WHERE account_no = $1"
    ))
    .bind(account_no)
    .fetch_optional(pool)
    .await?;
    let Some(premises) = premises else {
        return Ok(None);
    };
    let customer: Option<Customer> = sqlx::query_as(
        "SELECT customer_id, name, contact FROM billing.customers WHERE customer_id = $1",
    )
    .bind(&premises.customer_id)
    .fetch_optional(pool)
    .await?;
    let installations = sqlx::query_as(&format!(
        "SELECT {INSTALLATION_COLUMNS} FROM billing.meter_installations \
          WHERE account_no = $1 ORDER BY installed_at, meter_id"
    ))
    .bind(account_no)
    .fetch_all(pool)
    .await?;
    Ok(Some(PremisesDetail {
        premises,
        customer,
        installations,
    }))
}

/// A meter and its installations, oldest first.
pub async fn meter_detail(
    pool: &PgPool,
    meter_id: &str,
) -> Result<Option<MeterDetail>, BillingError> {
    if meter_id.contains('\0') {
        return Ok(None); // no key holds NUL (keys are checked on the way in)
    }
    let meter: Option<Meter> = sqlx::query_as(&format!(
        "SELECT {METER_COLUMNS} FROM billing.meters WHERE meter_id = $1"
    ))
    .bind(meter_id)
    .fetch_optional(pool)
    .await?;
    let Some(meter) = meter else {
        return Ok(None);
    };
    let installations = sqlx::query_as(&format!(
        "SELECT {INSTALLATION_COLUMNS} FROM billing.meter_installations \
          WHERE meter_id = $1 ORDER BY installed_at, account_no"
    ))
    .bind(meter_id)
    .fetch_all(pool)
    .await?;
    Ok(Some(MeterDetail {
        meter,
        installations,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn inst(account: &str, meter: &str, from: &str, to: Option<&str>) -> Installation {
        Installation {
            account_no: account.into(),
            meter_id: meter.into(),
            installed_at: from.parse().unwrap(),
            removed_at: to.map(|t| t.parse().unwrap()),
            install_read_m3: rust_decimal::Decimal::ZERO,
        }
    }

    #[test]
    fn an_exchange_is_no_overlap_but_a_meter_in_two_places_is() {
        let now: DateTime<Utc> = "2026-06-01T00:00:00Z".parse().unwrap();
        let exchange = [
            inst(
                "A",
                "M1",
                "2025-01-01T00:00:00Z",
                Some("2026-01-01T00:00:00Z"),
            ),
            inst("A", "M2", "2026-01-01T00:00:00Z", None),
        ];
        assert_eq!(validate_installations(&exchange, now), vec![]);
        let twice = [
            inst("A", "M1", "2025-01-01T00:00:00Z", None),
            inst("B", "M1", "2025-06-01T00:00:00Z", None),
        ];
        let p = validate_installations(&twice, now);
        assert_eq!(p.len(), 1);
        assert_eq!((p[0].index, p[0].field.as_str()), (1, "meter_id"));
        let overlap = [
            inst("A", "M1", "2025-01-01T00:00:00Z", None),
            inst("A", "M2", "2025-06-01T00:00:00Z", None),
        ];
        let p = validate_installations(&overlap, now);
        assert_eq!(p.len(), 1);
        assert_eq!((p[0].index, p[0].field.as_str()), (1, "account_no"));
        let future = [inst("A", "M1", "2027-01-01T00:00:00Z", None)];
        assert_eq!(
            validate_installations(&future, now)[0].field,
            "installed_at"
        );
    }

    #[test]
    fn premises_are_checked_against_the_tariff() {
        let cat = Catalogue {
            usage_types: ["household".to_string()].into(),
            diameters: [15].into(),
        };
        let ok = Premises {
            account_no: "P1".into(),
            customer_id: "C1".into(),
            address: "대전".into(),
            road_address: String::new(),
            usage_type: "household".into(),
            diameter_mm: 15,
            households: 1,
            sewer_connected: true,
            levy_exempt: false,
            billing_group: "G".into(),
            reading_route: String::new(),
        };
        let bad = Premises {
            usage_type: "spa".into(),
            diameter_mm: 17,
            ..ok.clone()
        };
        let p = validate_premises(&[ok.clone(), bad, ok], &cat);
        let fields: Vec<(usize, &str)> = p.iter().map(|p| (p.index, p.field.as_str())).collect();
        assert_eq!(
            fields,
            vec![
                (1, "account_no"),
                (1, "diameter_mm"),
                (1, "usage_type"),
                (2, "account_no")
            ]
        );
    }
}
