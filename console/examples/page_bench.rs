//! How fast the console's pages load at city scale: seeds 100,000 meters
//! set-wise in a fresh database (meters, a month of daily rows, compacted
//! readings for closed days, hot 15-minute readings for today so far,
//! alarms, quarantine, the dashboard's per-minute rows, and 100,000 billing
//! accounts), starts ingest, billing and the console in process, signs in,
//! and times full HTTP GETs of the overview and of meter pages through the
//! console (console -> backends -> PostgreSQL). Also times the backend calls
//! behind them, to name the bottleneck, and a floor: the console's
//! `/health` over the same HTTP client.
//!
//!     cargo run --release -p waterworks-console --example page_bench
//!
//! Environment: `BENCH_METERS` (default 100000), `BENCH_CLOSED_DAYS`
//! (compacted days, default 30), `BENCH_LOADS` (default 20), `DATABASE_URL`,
//! `MQTT_URL` (ingest needs a broker to be ready; nothing is published).

use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;
use waterworks_service::auth::{Role, TokenConfig};

const OPERATOR: &str = "bench-operator-5e1a9c3f7b2d8e4a0c6f1b9d3e7a5c2f";

fn env_num(name: &str, default: i64) -> i64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

async fn step(pool: &sqlx::PgPool, what: &str, sql: &str) -> anyhow::Result<()> {
    let t = Instant::now();
    let r = sqlx::query(sql).execute(pool).await?;
    println!(
        "  seed {what:<34} {:>10} rows {:>7.1} s",
        r.rows_affected(),
        t.elapsed().as_secs_f64()
    );
    Ok(())
}

fn stats(mut v: Vec<f64>) -> (f64, f64) {
    v.sort_by(|a, b| a.total_cmp(b));
    (v[v.len() / 2], v[v.len() - 1])
}

async fn time_get(
    http: &reqwest::Client,
    url: &str,
    token: Option<&str>,
) -> anyhow::Result<(f64, usize)> {
    let t = Instant::now();
    let mut req = http.get(url);
    if let Some(tok) = token {
        req = req.bearer_auth(tok);
    }
    let resp = req.send().await?;
    let status = resp.status();
    let body = resp.bytes().await?;
    anyhow::ensure!(status.is_success(), "{url}: {status}");
    Ok((t.elapsed().as_secs_f64() * 1000.0, body.len()))
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let meters = env_num("BENCH_METERS", 100_000);
    let closed_days = env_num("BENCH_CLOSED_DAYS", 30);
    let loads = env_num("BENCH_LOADS", 20).max(1) as usize;
    let base = std::env::var("DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into());
    let mqtt = std::env::var("MQTT_URL").unwrap_or_else(|_| "mqtt://127.0.0.1:1883".into());
    let name = format!("console_bench_{}", std::process::id());
    let admin = sqlx::PgPool::connect(&base).await?;
    sqlx::query(&format!("CREATE DATABASE {name}"))
        .execute(&admin)
        .await?;
    let db_url = format!(
        "{}/{name}",
        base.rsplit_once('/').map(|(p, _)| p).unwrap_or(&base)
    );
    let result = run(&db_url, &mqtt, meters, closed_days, loads).await;
    let _ = sqlx::query(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
        .execute(&admin)
        .await;
    result
}

async fn run(
    db_url: &str,
    mqtt: &str,
    meters: i64,
    closed_days: i64,
    loads: usize,
) -> anyhow::Result<()> {
    let tokens = vec![TokenConfig::inline("bench", Role::Operator, OPERATOR)];
    let mut mc = ingest::MqttConfig::new(mqtt, format!("console-bench-{}", std::process::id()));
    // Nothing is published to this topic: ingest only serves its API here.
    mc.subscription = format!(
        "$share/bench{}/waterworks/v1/bench-none/readings",
        std::process::id()
    );
    let mut ic = ingest::IngestConfig::new(db_url, mc);
    ic.http_listen = "127.0.0.1:0".parse()?;
    ic.tokens = tokens.clone();
    let ingest = ingest::Ingest::build(ic).await?; // migrates
    let pool = ingest.pool();
    let mut bc = billing::BillingConfig::new(
        db_url,
        std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("../fixtures/tariffs/daejeon.toml"),
    );
    bc.http_listen = "127.0.0.1:0".parse()?;
    bc.tokens = tokens.clone();
    let billing = billing::Billing::build(bc).await?; // migrates

    println!("seeding {meters} meters, {closed_days} compacted days, today's hot readings:");
    let seed_started = Instant::now();
    sqlx::query("SET synchronous_commit = off")
        .execute(&pool)
        .await?;
    step(&pool, "gateways", &format!(
        "INSERT INTO metering.gateways (gateway_id, last_batch_seq, last_batch_at, batches, readings, status, status_at)
         SELECT 'bgw-' || lpad(g::text, 3, '0'), 1000, now(), 1000, {meters} * 10, 'online', now() - interval '3 days'
           FROM generate_series(0, 99) g")).await?;
    step(&pool, "meters", &format!(
        "INSERT INTO metering.meters (meter_id, gateway_id, profile_id, max_flow_lph, last_ts, last_volume_l, last_alarms, last_seen_at)
         SELECT 'B' || lpad(i::text, 6, '0'), 'bgw-' || lpad((i % 100)::text, 3, '0'), 'sim-dn15', 3000,
                CASE WHEN i % 500 = 7 THEN now() - interval '3 days'
                     ELSE to_timestamp(floor(extract(epoch FROM now()) / 900) * 900) END,
                1000000 + i, CASE WHEN i % 200 = 3 THEN ARRAY['leak'] WHEN i % 997 = 5 THEN ARRAY['backflow'] END,
                now()
           FROM generate_series(1, {meters}) i")).await?;
    step(&pool, "daily (31 days)", &format!(
        "INSERT INTO metering.daily (meter_id, day, first_ts, first_volume_l, last_ts, last_volume_l, reads, alarm_reads)
         SELECT 'B' || lpad(i::text, 6, '0'), d::date, d, 1000000 + i * 3 + k * 300, d + interval '23 hours 45 minutes',
                1000000 + i * 3 + k * 300 + 290, 96, 0
           FROM generate_series(1, {meters}) i,
                generate_series(0, 30) k,
                LATERAL (SELECT (date_trunc('day', now() AT TIME ZONE 'UTC') - make_interval(days => 31 - k)) AT TIME ZONE 'UTC' AS d) x")).await?;
    step(&pool, "readings_compact (closed days)", &format!(
        "WITH arr AS (
             SELECT array_agg(CASE WHEN s = 0 THEN 0 ELSE 900000000 END ORDER BY s) AS dts,
                    array_agg(CASE WHEN s = 0 THEN 0 ELSE 3 END ORDER BY s) AS dv
               FROM generate_series(0, 95) s)
         INSERT INTO metering.readings_compact (meter_id, day, n, first_ts, first_volume_l, dts_us, dvolume_l)
         SELECT 'B' || lpad(i::text, 6, '0'), d::date, 96, d, 1000000 + i * 3 + k * 300, arr.dts, arr.dv
           FROM arr, generate_series(1, {meters}) i, generate_series(1, {closed_days}) k,
                LATERAL (SELECT (date_trunc('day', now() AT TIME ZONE 'UTC') - make_interval(days => k)) AT TIME ZONE 'UTC' AS d) x")).await?;
    sqlx::query("SELECT metering.ensure_day_partition((now() AT TIME ZONE 'UTC')::date)")
        .execute(&pool)
        .await?;
    step(&pool, "readings (today, hot)", &format!(
        "INSERT INTO metering.readings (meter_id, ts, volume_l, flow_lph, alarms)
         SELECT 'B' || lpad(i::text, 6, '0'), ts, 2000000 + i + s * 3, 12.0, NULL
           FROM generate_series(0, floor(extract(epoch FROM now() - date_trunc('day', now() AT TIME ZONE 'UTC') AT TIME ZONE 'UTC') / 900)::int - 1) s,
                LATERAL (SELECT (date_trunc('day', now() AT TIME ZONE 'UTC') AT TIME ZONE 'UTC') + make_interval(mins => s * 15) AS ts) x,
                generate_series(1, {meters}) i")).await?;
    step(&pool, "quarantine (last day)",
        "INSERT INTO metering.quarantine (received_at, gateway_id, topic, reason, detail, meter_id, ts)
         SELECT now() - make_interval(secs => q * 17), 'bgw-001', 'waterworks/v1/bgw-001/readings',
                (ARRAY['backwards','spike','unknown_meter','future'])[1 + q % 4], 'seeded', 'B' || lpad((1 + q % 1000)::text, 6, '0'), now() - make_interval(secs => q * 17)
           FROM generate_series(1, 5000) q").await?;
    step(&pool, "ingest_minutes (8 days)",
        "INSERT INTO metering.ingest_minutes (minute, readings, batches, quarantined, lag_ms_max, samples)
         SELECT date_trunc('minute', now()) - make_interval(mins => m), 6667, 70, 3, 800 + m % 400, 6
           FROM generate_series(1, 8 * 1440) m").await?;
    step(&pool, "accounts (billing)", &format!(
        "INSERT INTO billing.accounts (account_no, customer, address, usage_type, diameter_mm, households, sewer_connected, levy_exempt, billing_group)
         SELECT 'A' || lpad(i::text, 7, '0'), '고객' || i, '대전광역시 서구 둔산로 ' || i, 'household', 15, 1, true, false, 'G' || (i % 4)
           FROM generate_series(1, {meters}) i")).await?;
    step(
        &pool,
        "meter installations (billing)",
        &format!(
            "INSERT INTO billing.meter_installations (account_no, meter_id, installed_at)
         SELECT 'A' || lpad(i::text, 7, '0'), 'B' || lpad(i::text, 6, '0'), '2026-01-01T00:00:00Z'
           FROM generate_series(1, {meters}) i"
        ),
    )
    .await?;
    let t = Instant::now();
    ingest::dashboard::sample_once(&pool).await?;
    ingest::dashboard::sample_once(&pool).await?;
    println!(
        "  seed {:<34} {:>10} {:>12.1} s",
        "alarms (two dashboard samples)",
        "",
        t.elapsed().as_secs_f64()
    );
    step(&pool, "ANALYZE", "ANALYZE").await?;
    println!("seeded in {:.1} s", seed_started.elapsed().as_secs_f64());

    let stop = CancellationToken::new();
    let ingest_addr = ingest.http_addr();
    let billing_addr = billing.http_addr();
    let s = stop.clone();
    let it =
        tokio::spawn(async move { ingest.run_until_stopped(s).await.map_err(|e| e.to_string()) });
    let s = stop.clone();
    let bt = tokio::spawn(async move {
        billing
            .run_until_stopped(s)
            .await
            .map_err(|e| e.to_string())
    });
    let mut cc = waterworks_console::ConsoleConfig::new(
        format!("http://{ingest_addr}"),
        format!("http://{billing_addr}"),
    );
    cc.http_listen = "127.0.0.1:0".parse()?;
    let console = waterworks_console::Console::build(cc).await?;
    let console_addr = console.http_addr();
    let s = stop.clone();
    let ct = tokio::spawn(async move {
        console
            .run_until_stopped(s)
            .await
            .map_err(|e| e.to_string())
    });

    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()?;
    let origin = format!("http://{console_addr}");
    let login = http
        .post(format!("{origin}/login"))
        .header("origin", &origin)
        .form(&[("token", OPERATOR), ("next", "/ops")])
        .send()
        .await?;
    anyhow::ensure!(login.status().as_u16() == 303, "login: {}", login.status());
    let cookie = login
        .headers()
        .get("set-cookie")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .ok_or_else(|| anyhow::anyhow!("no session cookie"))?
        .to_string();
    let page = |path: String| {
        let http = http.clone();
        let cookie = cookie.clone();
        let url = format!("{origin}{path}");
        async move {
            let t = Instant::now();
            let resp = http.get(&url).header("cookie", cookie).send().await?;
            let status = resp.status();
            let body = resp.bytes().await?;
            anyhow::ensure!(status.is_success(), "{url}: {status}");
            anyhow::Ok((t.elapsed().as_secs_f64() * 1000.0, body.len()))
        }
    };
    // Warm the pools and caches once, as a running service is.
    page("/ops".into()).await?;
    page("/ops/meters/B000001".into()).await?;

    let mut floor = Vec::new();
    for _ in 0..loads {
        floor.push(time_get(&http, &format!("{origin}/health"), None).await?.0);
    }
    let mut overview = Vec::new();
    let mut size = 0;
    for _ in 0..loads {
        let (ms, n) = page("/ops".into()).await?;
        overview.push(ms);
        size = n;
    }
    let mut meter = Vec::new();
    let mut meter_size = 0;
    let mut chart = Vec::new();
    let mut with_chart = Vec::new();
    for k in 0..loads {
        let id = format!("B{:06}", 1 + (k as i64 * 4999 + 3) % meters);
        let (ms, n) = page(format!("/ops/meters/{id}")).await?;
        meter.push(ms);
        meter_size = n;
        // The 15-minute chart the page then loads by itself (htmx).
        let (chart_ms, _) = page(format!("/ops/meters/{id}/intervals")).await?;
        chart.push(chart_ms);
        with_chart.push(ms + chart_ms);
    }
    let mut alarms = Vec::new();
    for _ in 0..loads {
        alarms.push(page("/ops/alarms".into()).await?.0);
    }
    let (f50, fmax) = stats(floor);
    println!("\nconsole pages over HTTP, {loads} loads each, {meters} meters (ms):");
    println!("  {:<28} {:>8} {:>8} {:>8}", "", "p50", "max", "p50/floor");
    println!(
        "  {:<28} {:>8.1} {:>8.1}",
        "floor: console /health", f50, fmax
    );
    for (name, v, extra) in [
        ("overview /ops", overview, format!("{size} B")),
        (
            "meter page /ops/meters/{id}",
            meter,
            format!("{meter_size} B"),
        ),
        ("  its 15-min chart fragment", chart, String::new()),
        ("  page + chart, in sequence", with_chart, String::new()),
        ("alarms /ops/alarms", alarms, String::new()),
    ] {
        let (p50, max) = stats(v);
        println!(
            "  {name:<28} {p50:>8.1} {max:>8.1} {:>8.0}x  {extra}  {}",
            p50 / f50.max(0.001),
            if max < 1000.0 {
                "(< 1 s)"
            } else {
                "(OVER 1 s)"
            }
        );
    }
    println!("\nbackend calls behind them (ms, p50 / max):");
    let now = chrono::Utc::now();
    let from = (now - chrono::Duration::days(2)).to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    for (name, path) in [
        (
            "dashboard/overview?window=hour",
            "/api/v1/dashboard/overview?window=hour".to_string(),
        ),
        (
            "dashboard/overview?window=day",
            "/api/v1/dashboard/overview?window=day".to_string(),
        ),
        (
            "dashboard/meters/{id}",
            "/api/v1/dashboard/meters/B050003".to_string(),
        ),
        (
            "meters/{id}/readings (2 days)",
            format!("/api/v1/meters/B050003/readings?from={from}&limit=400"),
        ),
        (
            "meters/{id}/daily",
            "/api/v1/meters/B050003/daily".to_string(),
        ),
        (
            "dashboard/meters/{id}/quarantine",
            "/api/v1/dashboard/meters/B000003/quarantine?limit=50".to_string(),
        ),
        (
            "dashboard/alarms",
            "/api/v1/dashboard/alarms?limit=500".to_string(),
        ),
    ] {
        let mut v = Vec::new();
        for _ in 0..loads.min(10) {
            v.push(
                time_get(
                    &http,
                    &format!("http://{ingest_addr}{path}"),
                    Some(OPERATOR),
                )
                .await?
                .0,
            );
        }
        let (p50, max) = stats(v);
        println!("  ingest {name:<34} {p50:>8.1} {max:>8.1}");
    }
    stop.cancel();
    for t in [it, bt, ct] {
        let _ = tokio::time::timeout(Duration::from_secs(10), t).await;
    }
    pool.close().await;
    Ok(())
}
