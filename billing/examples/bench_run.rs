//! Benchmark: bill and commit N accounts (default 1,000,000) with a month of
//! daily usage, then COPY the very same bill rows into a table of the same
//! shape (primary key, unique (period, account_no)) in the same database: the
//! physical floor. Prints accounts per second and the ratio to the floor.
//!
//!     cargo run --release -p billing --example bench_run -- [--accounts N] [--keep]
//!
//! It creates its own database (`waterworks_billing_bench_<pid>`) on the
//! server at DATABASE_URL and drops it at the end unless `--keep`. Reads come
//! from memory through the run's `ReadSource`: this measures billing (load,
//! price, commit), not ingest's `period_reads_v1`.

use billing::accounts::{upsert_accounts, Account, MeterInstallation};
use billing::run::{run_billing_with, RunRequest, StaticReads};
use billing::tariff::TariffBook;
use billing::usage::{HoldPolicy, PeriodRead};
use billing::Period;
use futures::StreamExt;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{ConnectOptions, Connection};
use std::str::FromStr;
use std::time::Instant;

/// Deterministic xorshift64*, so runs are comparable.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("billing=info")),
        )
        .init();
    let args: Vec<String> = std::env::args().collect();
    let n: usize = args
        .iter()
        .position(|a| a == "--accounts")
        .and_then(|i| args.get(i + 1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_000_000);
    let keep = args.iter().any(|a| a == "--keep");
    let url = std::env::var("DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into());
    let db = format!("waterworks_billing_bench_{}", std::process::id());
    let mut admin = PgConnectOptions::from_str(&url)?.connect().await?;
    sqlx::query(&format!("CREATE DATABASE {db}"))
        .execute(&mut admin)
        .await?;
    let opts = PgConnectOptions::from_str(&url)?.database(&db);
    let pool = PgPoolOptions::new()
        .max_connections(4)
        .connect_with(opts)
        .await?;
    let result = bench(&pool, n).await;
    pool.close().await;
    if keep {
        println!("kept database {db}");
    } else {
        sqlx::query(&format!("DROP DATABASE {db}"))
            .execute(&mut admin)
            .await?;
    }
    admin.close().await?;
    result
}

async fn bench(pool: &sqlx::PgPool, n: usize) -> Result<(), Box<dyn std::error::Error>> {
    billing::migrate(pool).await?;
    let book = TariffBook::load(
        &std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("../fixtures/tariffs/daejeon.toml"),
    )?;
    let period: Period = "2026-10".parse()?;
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    let setup = Instant::now();
    let installed: chrono::DateTime<chrono::Utc> = "2026-01-01T00:00:00Z".parse()?;
    let mut accounts = Vec::with_capacity(n);
    let mut reads = Vec::with_capacity(n);
    for i in 0..n {
        let (usage_type, diameter_mm, households) = match rng.below(100) {
            0..=79 => ("household", 15, 1 + (rng.below(10) == 0) as u32 * 2),
            80..=95 => ("general", [15, 20, 25][rng.below(3) as usize], 1),
            96..=98 => ("industrial", 50, 1),
            _ => ("bathhouse", 40, 1),
        };
        let meter_id = format!("M{i:08}");
        accounts.push(Account {
            account_no: format!("A{i:08}"),
            customer: format!("customer {i}"),
            address: format!("대전광역시 서구 둔산로 {}", i % 1000),
            usage_type: usage_type.into(),
            diameter_mm,
            households,
            sewer_connected: rng.below(20) != 0,
            levy_exempt: false,
            billing_group: "A".into(),
            meters: vec![MeterInstallation {
                meter_id: meter_id.clone(),
                installed_at: installed,
                removed_at: None,
            }],
        });
        // A month of daily usage: 31 days of 0–1,200 L.
        let start = rng.below(5_000_000) as i64;
        let month: i64 = (0..31).map(|_| rng.below(1_200) as i64).sum();
        reads.push(PeriodRead {
            meter_id,
            start_ts: period.start_utc(),
            start_volume_l: start,
            end_ts: period.end_utc() - chrono::Duration::minutes(15),
            end_volume_l: start + month,
            reads: 31 * 96,
        });
    }
    upsert_accounts(pool, &accounts).await?;
    drop(accounts);
    println!(
        "setup: {n} accounts upserted in {:.1} s",
        setup.elapsed().as_secs_f64()
    );

    let reads = StaticReads(reads);
    let dry = RunRequest {
        period,
        group: "A".into(),
        dry_run: true,
    };
    let t = Instant::now();
    run_billing_with(pool, &book, &dry, &reads, &HoldPolicy::default()).await?;
    let dry_s = t.elapsed().as_secs_f64();
    println!("dry run:       {n} accounts loaded and priced in {dry_s:.1} s");
    let req = RunRequest {
        dry_run: false,
        ..dry
    };
    let t = Instant::now();
    let out = run_billing_with(pool, &book, &req, &reads, &HoldPolicy::default()).await?;
    let run_s = t.elapsed().as_secs_f64();
    assert_eq!(out.bills_created + out.held, n as u64);

    // The floor: the same rows, COPYed into a table of the same shape.
    let mut conn = pool.acquire().await?;
    sqlx::query(
        "CREATE TABLE public.bills_floor (LIKE billing.bills INCLUDING DEFAULTS INCLUDING CONSTRAINTS INCLUDING INDEXES)",
    )
    .execute(&mut *conn)
    .await?;
    let mut bytes = Vec::new();
    {
        let mut out = conn
            .copy_out_raw("COPY billing.bills TO STDOUT (FORMAT binary)")
            .await?;
        while let Some(chunk) = out.next().await {
            bytes.extend_from_slice(&chunk?);
        }
    }
    let t = Instant::now();
    let mut copy = conn
        .copy_in_raw("COPY public.bills_floor FROM STDIN (FORMAT binary)")
        .await?;
    for part in bytes.chunks(1 << 20) {
        copy.send(part).await?;
    }
    let copied = copy.finish().await?;
    let copy_s = t.elapsed().as_secs_f64();
    let size: i64 = sqlx::query_scalar("SELECT pg_total_relation_size('billing.bills')")
        .fetch_one(&mut *conn)
        .await?;

    println!("billing run:   {n} accounts in {run_s:.1} s = {:.0} accounts/s ({} issued, {} held; total {} KRW)",
        n as f64 / run_s, out.bills_created, out.held, out.total_krw);
    println!(
        "COPY floor:    {copied} bill rows ({:.0} MB binary) in {copy_s:.1} s = {:.0} rows/s",
        bytes.len() as f64 / 1e6,
        copied as f64 / copy_s
    );
    println!(
        "ratio:         run / floor = {:.2}; bills table {:.0} B/row",
        run_s / copy_s,
        size as f64 / n as f64
    );
    println!(
        "goal:          {} (under 60 s for the million)",
        if run_s < 60.0 * n as f64 / 1e6 {
            "met"
        } else {
            "NOT met"
        }
    );
    Ok(())
}
