//! The whole path, in process: simulator → Modbus TCP → gateway → MQTT
//! broker → ingest → PostgreSQL → billing, once through the embedded broker
//! and once through the real Mosquitto at `MQTT_URL`.
//!
//! Each run gets a fresh database and ids of its own, so the runs share the
//! machine's broker and server without seeing each other. The checks do not
//! trust the demo's own report: they read PostgreSQL.

mod common;

use billing::Period;
use chrono::{DateTime, Duration, Utc};
use common::{fresh_database, unique};
use std::collections::BTreeMap;
use waterworks::demo::{self, DemoOptions};

async fn drive(mqtt: Option<String>, tag: &str) {
    let prefix = unique(tag);
    let db_name = format!("ww_test_{}", prefix.replace('-', "_"));
    let db_url = fresh_database(&db_name).await;
    let period: Period = "2026-10".parse().expect("period");
    let state = tempfile::tempdir().expect("tempdir");

    let mut opts = DemoOptions::new(period);
    opts.meters = 12;
    opts.gateways = 2;
    // The last two days of the month and the closing read: enough to bill
    // the period and quick enough for a test.
    opts.from = Some(period.end_utc() - Duration::days(2));
    opts.mqtt = mqtt;
    opts.database_url = Some(db_url.clone());
    opts.id_prefix = format!("{prefix}-");
    opts.share_group = format!("ingest-{prefix}");
    opts.state_dir = state.path().to_path_buf();
    opts.with_faults = false;
    opts.verbose = false;

    let (report, running) = demo::run(&opts).await.expect("the pipeline runs");
    running.stop().await;

    let pool = waterworks::database::connect(&db_url, 2)
        .await
        .expect("connect");
    // Every round read every meter, and the broker carried all of it.
    assert_eq!(report.rounds, 2 * 96 + 1);
    assert_eq!(report.published.len(), opts.meters * report.rounds);

    // Stored exactly once each, with the value published.
    let stored: Vec<(String, DateTime<Utc>, i64)> = sqlx::query_as(
        "SELECT meter_id, ts, volume_l FROM metering.readings_v1 WHERE meter_id LIKE $1 || '%'",
    )
    .bind(&opts.id_prefix)
    .fetch_all(&pool)
    .await
    .expect("read back");
    assert_eq!(
        stored.len(),
        report.published.len(),
        "stored count equals published count"
    );
    let stored_map: BTreeMap<(String, DateTime<Utc>), u64> = stored
        .into_iter()
        .map(|(m, ts, v)| ((m, ts), u64::try_from(v).expect("non-negative")))
        .collect();
    assert_eq!(
        stored_map.len(),
        report.published.len(),
        "no (meter, ts) stored twice"
    );
    assert_eq!(
        stored_map, report.published,
        "every published reading stored with its value"
    );

    // Each account billed once, and its bill is the tariff on the stored reads.
    check_bills(&pool, &opts, period).await;

    // A second run of the same city stores nothing new and bills nothing twice.
    let (again, running) = demo::run(&opts).await.expect("second run");
    running.stop().await;
    assert_eq!(
        again.stored_after, again.stored_before,
        "second run stored nothing new"
    );
    assert_eq!(again.stored_after as usize, report.published.len());
    let created: u64 = again.runs.iter().map(|r| r.bills_created).sum();
    let existing: u64 = again.runs.iter().map(|r| r.bills_existing).sum();
    assert_eq!(created, 0, "second run created no bill");
    assert_eq!(existing as usize, opts.meters);
    check_bills(&pool, &opts, period).await;
    pool.close().await;
}

async fn check_bills(pool: &sqlx::PgPool, opts: &DemoOptions, period: Period) {
    let book = demo::load_tariff(None).expect("tariff");
    let accounts: Vec<(String, String, i32, i32, bool, String)> = sqlx::query_as(
        "SELECT a.account_no, a.usage_type, a.diameter_mm, a.households, a.sewer_connected, i.meter_id \
           FROM billing.accounts a JOIN billing.meter_installations i USING (account_no) \
          WHERE a.account_no LIKE $1 || '%'",
    )
    .bind(&opts.id_prefix)
    .fetch_all(pool)
    .await
    .expect("accounts");
    assert_eq!(accounts.len(), opts.meters);
    let reads: BTreeMap<String, (i64, i64)> = sqlx::query_as::<_, (String, i64, i64)>(
        "SELECT meter_id, start_volume_l, end_volume_l FROM metering.period_reads_v1($1, $2)",
    )
    .bind(period.start_utc())
    .bind(period.end_utc())
    .fetch_all(pool)
    .await
    .expect("period reads")
    .into_iter()
    .map(|(m, s, e)| (m, (s, e)))
    .collect();
    for (account_no, usage_type, diameter_mm, households, sewer, meter_id) in accounts {
        let (start, end) = reads[&meter_id];
        let usage_m3 = book.usage_rule().usage_m3(start, end);
        let req = billing::tariff::QuoteRequest {
            usage_type,
            diameter_mm: diameter_mm as u32,
            usage_m3: usage_m3 as u32,
            households: households as u32,
            sewer_connected: sewer,
            levy_exempt: false,
            period: Some(period),
            ..Default::default()
        };
        let expected = billing::tariff::quote(&book, &req).expect("quote");
        let bills: Vec<(i64,)> = sqlx::query_as(
            "SELECT total_krw FROM billing.bills WHERE account_no = $1 AND period = $2",
        )
        .bind(&account_no)
        .bind(period.to_string())
        .fetch_all(pool)
        .await
        .expect("bills");
        assert_eq!(bills.len(), 1, "account {account_no} billed exactly once");
        assert_eq!(
            bills[0].0, expected.total_krw,
            "account {account_no}: bill equals the tariff on {usage_m3} m3"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pipeline_through_the_embedded_broker() {
    drive(None, "e").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pipeline_through_mosquitto() {
    let url = std::env::var("MQTT_URL").unwrap_or_else(|_| "mqtt://127.0.0.1:1883".into());
    waterworks::broker::reachable(&url)
        .expect("Mosquitto must be running at MQTT_URL (scripts/test starts it)");
    drive(Some(url), "m").await;
}
