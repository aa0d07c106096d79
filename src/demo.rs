//! (Long because `run_until_stopped` is one sequence, database, broker, services, fleet, rounds, billing, summary, over shared handles, and the tap that checks it belongs to it; fleet, broker, spools, progress and summary already have files of their own.)
//!
//! The whole pipeline on one machine, for real: simulated meters serve Modbus
//! TCP, gateways poll them and publish over MQTT, ingest stores the readings
//! in PostgreSQL, billing bills the month. Only the clock is simulated: the
//! demo moves it 15 minutes at a time, as soon as every gateway has spooled
//! the round, so a month of readings passes in a minute or so.
//!
//! A tap (a plain, non-shared subscriber) records every batch the broker
//! carried, so the demo can prove that what was published is what was stored,
//! once.

use crate::broker::EmbeddedBroker;
use crate::database::{self, Database, Origin};
use crate::fleet::{Fleet, FleetSpec, SIM_PROFILE_ID};
use anyhow::{bail, Context};
use billing::run::{RunOutcome, RunRequest};
use billing::tariff::TariffBook;
use billing::Period;
use chrono::{DateTime, Duration, Utc};
use edge_firmware::sim::{SimConfig, Simulator};
use gateway::config::{
    GatewayConfig, MeterConfig, PollConfig, SpoolConfig, Transport, UplinkConfig,
};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Instant;
use tokio_util::sync::CancellationToken;
use waterworks_wire::clock::{Clock, ManualClock};
use waterworks_wire::{topic, GatewayId, ReadingBatch};

/// The simulated meter's profile, shipped with the binary.
pub const SIM_PROFILE_TOML: &str = include_str!("../fixtures/profiles/waterworks-sim-v1.toml");
/// The Daejeon tariff, the demo's default.
pub const DAEJEON_TARIFF_TOML: &str = include_str!("../fixtures/tariffs/daejeon.toml");
/// The read interval of every meter.
pub const READ_INTERVAL_MIN: i64 = 15;
/// How long the demo waits for ingest to store what was published, once the
/// stored count stops rising, before it reports a shortfall.
const STALL_LIMIT: std::time::Duration = std::time::Duration::from_secs(60);
/// Longest a gateway may take to poll and spool one round before the demo
/// gives up and says which gateway stalled (a round takes milliseconds).
const ROUND_LIMIT: std::time::Duration = std::time::Duration::from_secs(60);

#[derive(Debug, Clone)]
pub struct DemoOptions {
    pub meters: usize,
    pub gateways: usize,
    pub seed: u64,
    /// The billing period simulated and billed.
    pub period: Period,
    /// First read; default the period's start. A later start gives a short
    /// run (tests) that still bills the period on what was read.
    pub from: Option<DateTime<Utc>>,
    /// `mqtt://host:port` of an external broker; `None` starts an embedded one.
    pub mqtt: Option<String>,
    pub database_url: Option<String>,
    /// Tariff file; `None` uses the embedded Daejeon tariff.
    pub tariff: Option<PathBuf>,
    /// Prefix of every generated id, so runs can share a broker.
    pub id_prefix: String,
    /// Shared-subscription group of the demo's ingest.
    pub share_group: String,
    /// Where spools, profiles and a private database live.
    pub state_dir: PathBuf,
    pub with_faults: bool,
    /// Print a line per simulated day.
    pub verbose: bool,
    /// Keep every reading the broker carried in [`DemoReport::published`]
    /// (tests compare it with PostgreSQL). Off, the tap keeps one bit per
    /// meter and round, so the demo's memory does not grow with the readings.
    pub keep_published: bool,
}

impl DemoOptions {
    pub fn new(period: Period) -> Self {
        DemoOptions {
            meters: 100,
            gateways: 2,
            seed: 20_261_001,
            period,
            from: None,
            mqtt: None,
            database_url: None,
            tariff: None,
            id_prefix: String::new(),
            share_group: "ingest".into(),
            state_dir: PathBuf::from(".waterworks"),
            with_faults: true,
            verbose: true,
            keep_published: true,
        }
    }
}

/// What a demo run did, for the summary and for tests to check.
/// The bills of one period, read back from the billing schema.
#[derive(Debug, Default, Clone, sqlx::FromRow)]
pub struct PeriodBills {
    pub bills: i64,
    pub held: i64,
    pub usage_m3: i64,
    pub water_krw: i64,
    pub sewer_krw: i64,
    pub base_krw: i64,
    pub levy_krw: i64,
    pub reduction_krw: i64,
    pub total_krw: i64,
}

#[derive(Debug)]
pub struct DemoReport {
    pub database: String,
    pub broker: String,
    pub meters: usize,
    pub gateways: usize,
    pub from: DateTime<Utc>,
    pub to: DateTime<Utc>,
    pub rounds: usize,
    /// Every distinct reading the broker carried: (meter, ts) → volume_l;
    /// empty unless [`DemoOptions::keep_published`].
    pub published: BTreeMap<(String, DateTime<Utc>), u64>,
    /// How many distinct readings the broker carried.
    pub published_count: u64,
    /// Readings carried more than once (replays, redeliveries).
    pub published_duplicates: u64,
    pub stored_before: i64,
    pub stored_after: i64,
    pub quarantined: i64,
    /// Every bill of the period for the fleet's accounts, issued now or before.
    pub period_bills: PeriodBills,
    /// Quarantined readings of this window by reason.
    pub quarantined_by_reason: Vec<(String, i64)>,
    pub runs: Vec<RunOutcome>,
    pub simulate_secs: f64,
    pub ingest_wait_secs: f64,
    pub billing_secs: f64,
    pub total_secs: f64,
    pub ingest_http: SocketAddr,
    pub tariff_city: String,
    /// Set when a signal stopped the demo before the end of its window: the
    /// slot of the last round read. Nothing was billed then.
    pub stopped_after: Option<DateTime<Utc>>,
}

/// Services left running when the demo is asked to keep serving.
pub struct Running {
    /// Stops ingest; it goes first so it commits and acknowledges what it holds.
    ingest_shutdown: CancellationToken,
    ingest_task: tokio::task::JoinHandle<()>,
    pub shutdown: CancellationToken,
    pub tasks: Vec<tokio::task::JoinHandle<()>>,
    pub ingest_http: SocketAddr,
    pub billing_http: Option<SocketAddr>,
    pub token: String,
    database: Database,
}

impl Running {
    /// Stops every service and waits for them (bounded).
    pub async fn stop(self) {
        self.ingest_shutdown.cancel();
        let _ = tokio::time::timeout(std::time::Duration::from_secs(15), self.ingest_task).await;
        self.shutdown.cancel();
        for t in self.tasks {
            let _ = tokio::time::timeout(std::time::Duration::from_secs(15), t).await;
        }
        if let Origin::Private(c) = &self.database.origin {
            c.stop();
        }
    }
}

impl Running {
    /// Keeps serving after the demo for people: billing's API and the
    /// console (on `console_listen`), both on the demo's database, with one
    /// demo token per role ([`demo_tokens`]). Returns the console's address.
    pub async fn serve_console(
        &mut self,
        tariff: Option<&Path>,
        state_dir: &Path,
        console_listen: SocketAddr,
    ) -> anyhow::Result<SocketAddr> {
        let tariff_file = match tariff {
            Some(p) => p.to_path_buf(),
            None => {
                let p = state_dir.join("daejeon.toml");
                std::fs::write(&p, DAEJEON_TARIFF_TOML)
                    .with_context(|| format!("cannot write {}", p.display()))?;
                p
            }
        };
        let mut bc = billing::BillingConfig::new(&self.database.url, tariff_file);
        bc.http_listen = ([127, 0, 0, 1], 0).into();
        bc.tokens = demo_tokens(&self.token);
        let billing = billing::Billing::build(bc)
            .await
            .context("starting billing")?;
        let billing_http = billing.http_addr();
        let s = self.shutdown.clone();
        self.tasks.push(tokio::spawn(async move {
            if let Err(e) = billing.run_until_stopped(s).await {
                tracing::error!(error = %e, "billing stopped with an error");
            }
        }));
        self.billing_http = Some(billing_http);
        let mut cc = waterworks_console::ConsoleConfig::new(
            format!("http://{}", self.ingest_http),
            format!("http://{billing_http}"),
        );
        cc.http_listen = console_listen;
        let console = waterworks_console::Console::build(cc)
            .await
            .with_context(|| format!("starting the console on {console_listen}"))?;
        let addr = console.http_addr();
        let s = self.shutdown.clone();
        self.tasks.push(tokio::spawn(async move {
            if let Err(e) = console.run_until_stopped(s).await {
                tracing::error!(error = %e, "console stopped with an error");
            }
        }));
        Ok(addr)
    }
}

/// The demo's tokens: `admin` (the one printed in the summary) and one per
/// other role, for signing in to the console as each. Each role's token is
/// the SHA-256 of the admin token and the role, so holding one role's token
/// tells nothing of the admin token (it used to be the admin token plus a
/// suffix).
pub fn demo_tokens(admin: &str) -> Vec<waterworks_service::auth::TokenConfig> {
    use sha2::{Digest, Sha256};
    use waterworks_service::auth::{Role, TokenConfig};
    let derived =
        |role: &str| hex::encode(Sha256::digest(format!("waterworks-demo:{role}:{admin}")));
    [
        ("demo-admin", Role::Admin, admin.to_string()),
        ("demo-operator", Role::Operator, derived("operator")),
        ("demo-clerk", Role::Clerk, derived("clerk")),
        ("demo-viewer", Role::Viewer, derived("viewer")),
    ]
    .into_iter()
    .map(|(name, role, token)| TokenConfig::inline(name, role, token))
    .collect()
}

pub fn load_tariff(path: Option<&Path>) -> anyhow::Result<TariffBook> {
    Ok(match path {
        Some(p) => TariffBook::load(p)?,
        None => TariffBook::from_toml(
            DAEJEON_TARIFF_TOML,
            "fixtures/tariffs/daejeon.toml (embedded)",
        )?,
    })
}

/// Runs the pipeline over the period and bills it. The services stay up in
/// the returned [`Running`] until it is stopped.
pub async fn run(opts: &DemoOptions) -> anyhow::Result<(DemoReport, Running)> {
    run_until_stopped(opts, CancellationToken::new()).await
}

/// [`run`], stopping early when `stop` is cancelled (Ctrl-C, SIGTERM): the
/// rounds end, the gateways stop, nothing is billed, and the report holds
/// what was read and stored so far (`stopped_after`).
pub async fn run_until_stopped(
    opts: &DemoOptions,
    stop: CancellationToken,
) -> anyhow::Result<(DemoReport, Running)> {
    let started = Instant::now();
    let book = load_tariff(opts.tariff.as_deref())?;
    std::fs::create_dir_all(&opts.state_dir)
        .with_context(|| format!("cannot create {}", opts.state_dir.display()))?;

    let database = database::resolve(opts.database_url.clone(), &opts.state_dir).await?;
    let db_text = database.describe();
    // Ingest speaks MQTT 5 (its default); the embedded broker has a listener
    // per protocol, an external one (Mosquitto) takes both on one port.
    let (broker_url, ingest_mqtt_url, broker_text) = match &opts.mqtt {
        Some(url) => {
            crate::broker::reachable(url)?;
            (url.clone(), url.clone(), format!("{url} (external)"))
        }
        None => {
            let b = EmbeddedBroker::start()?;
            let text = format!(
                "{} (embedded rumqttd; MQTT 5 for ingest on {})",
                b.url(),
                b.url_v5()
            );
            (b.url(), b.url_v5(), text)
        }
    };
    say(opts, &format!("database: {db_text}"));
    say(opts, &format!("broker:   {broker_text}"));

    let pool = database::connect(&database.url, 4).await?;
    ingest::migrate(&pool)
        .await
        .context("metering migrations")?;
    billing::migrate(&pool)
        .await
        .context("billing migrations")?;
    // The spools belong to this database: a fresh one starts fresh spools.
    let database_id = crate::spools::database_id(&pool).await?;
    let claim = crate::spools::claim(&crate::spools::spool_root(&opts.state_dir), &database_id)?;
    if let Some(line) = claim.describe(&database_id) {
        say(opts, &line);
    }

    let from = opts.from.unwrap_or_else(|| opts.period.start_utc());
    let to = opts.period.end_utc();
    if from > to {
        bail!(
            "the first read ({from}) lies after the end of period {}",
            opts.period
        );
    }
    let mut fleet = Fleet::generate(&FleetSpec {
        meters: opts.meters,
        gateways: opts.gateways,
        seed: opts.seed,
        id_prefix: opts.id_prefix.clone(),
        installed_at: opts.period.start_utc() - Duration::days(365),
        with_faults: opts.with_faults,
    });
    let meter_ids = fleet.meter_ids();
    let stored_before = count_stored(&pool, &meter_ids, from, to).await?;

    let shutdown = CancellationToken::new();
    let mut tasks = Vec::new();
    let token = demo_token();

    // Ingest first, so nothing published waits on it.
    let ingest_cfg = ingest_config(&database.url, &ingest_mqtt_url, opts, &token);
    let ingest = ingest::Ingest::build(ingest_cfg)
        .await
        .context("starting ingest")?;
    let ingest_http = ingest.http_addr();
    let ingest_ready = ingest.broker_ready();
    let ingest_shutdown = CancellationToken::new();
    let ingest_task = {
        let s = ingest_shutdown.clone();
        tokio::spawn(async move {
            if let Err(e) = ingest.run_until_stopped(s).await {
                tracing::error!(error = %e, "ingest stopped with an error");
            }
        })
    };

    let tap = Tap::start(
        &broker_url,
        &fleet.gateways,
        TapState::new(&meter_ids, from, to, opts.keep_published),
        shutdown.clone(),
    )
    .await?;
    // Ingest's session may be new: the broker keeps for it only what is
    // published after its subscription is acknowledged.
    let waiting = Instant::now();
    while !ingest_ready() {
        if waiting.elapsed() > std::time::Duration::from_secs(30) {
            bail!("ingest did not get its MQTT subscriptions acknowledged within 30 s ({broker_text})");
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }

    // The meters, on the simulated clock.
    let manual = ManualClock::new(from);
    let clock = Clock::Manual(manual.clone());
    let sim = Simulator::bind(
        SimConfig {
            host: [127, 0, 0, 1].into(),
            meters_per_port: 50,
            seed: opts.seed,
            meters: fleet.premises.iter().map(|p| p.meter.clone()).collect(),
        },
        clock.clone(),
    )
    .await
    .context("starting the meter simulator")?;
    let addresses: HashMap<String, (SocketAddr, u8)> = sim
        .addresses()
        .into_iter()
        .map(|a| (a.meter_id.to_string(), (a.addr, a.unit_id)))
        .collect();
    fleet.fit_meter_sizes(|id| sim.diameter_mm(id));
    // Onboarded as a utility would: through ingest's `PUT /api/v1/meters`.
    let regs: Vec<_> = fleet
        .registrations()
        .iter()
        .map(crate::cli::registration_json)
        .collect();
    crate::cli::register_meters_over_http(&format!("http://{ingest_http}"), &token, &regs, false)
        .await
        .context("registering the meters with ingest")?;
    billing::accounts::upsert_accounts(&pool, &fleet.accounts()).await?;
    {
        let s = shutdown.clone();
        tasks.push(tokio::spawn(async move {
            if let Err(e) = sim.run(s).await {
                tracing::error!(error = %e, "simulator stopped with an error");
            }
        }));
    }

    // The gateways, each with its share of the meters.
    let profile_path = opts
        .state_dir
        .join("profiles")
        .join(format!("{SIM_PROFILE_ID}.toml"));
    std::fs::create_dir_all(profile_path.parent().expect("has a parent"))?;
    std::fs::write(&profile_path, SIM_PROFILE_TOML)?;
    let gw_shutdown = CancellationToken::new();
    let mut handles = Vec::new();
    for gw in &fleet.gateways {
        let meters = fleet
            .premises
            .iter()
            .filter(|p| &p.gateway == gw)
            .map(|p| {
                let (addr, unit_id) = addresses[p.meter.meter_id.as_str()];
                MeterConfig {
                    meter_id: p.meter.meter_id.clone(),
                    transport: Transport::Tcp {
                        addr: addr.to_string(),
                    },
                    unit_id,
                    profile: SIM_PROFILE_ID.to_string(),
                    poll_interval_s: None,
                }
            })
            .collect();
        let cfg = GatewayConfig {
            gateway_id: gw.clone(),
            poll: PollConfig {
                interval_s: (READ_INTERVAL_MIN * 60) as u32,
                ..PollConfig::default()
            },
            profiles: vec![profile_path.clone()],
            meters,
            uplink: UplinkConfig {
                url: broker_url.clone(),
                client_id: Some(format!("{gw}-demo")),
                ..UplinkConfig::default()
            },
            spool: SpoolConfig {
                dir: crate::spools::spool_root(&opts.state_dir).join(gw.as_str()),
                ..SpoolConfig::default()
            },
            metrics_listen: None,
        };
        handles.push(gateway::start(cfg, clock.clone(), gw_shutdown.clone()).await?);
    }

    // Drive the clock: one slot, then wait until every gateway spooled it.
    let sim_started = Instant::now();
    let step = Duration::minutes(READ_INTERVAL_MIN);
    let mut slot = from;
    let mut rounds = 0usize;
    let mut stopped_after = None;
    let total_rounds = ((to - from).num_minutes() / READ_INTERVAL_MIN + 1) as u64;
    let mut shown = crate::progress::DemoProgress::new(
        crate::progress::Style::detect(opts.verbose),
        total_rounds,
    );
    let mut progress: Vec<_> = handles.iter().map(|h| h.progress.clone()).collect();
    'rounds: while slot <= to {
        if stop.is_cancelled() {
            stopped_after = Some(slot - step);
            break;
        }
        manual.set(slot);
        for (i, p) in progress.iter_mut().enumerate() {
            let round = p.wait_for(|g| g.last_round.is_some_and(|r| r >= slot));
            let outcome = tokio::select! {
                _ = stop.cancelled() => {
                    stopped_after = Some(slot - step);
                    break 'rounds;
                }
                r = tokio::time::timeout(ROUND_LIMIT, round) => r.map(|r| r.is_ok()),
            };
            match outcome {
                Ok(true) => {}
                Ok(false) => bail!(
                    "gateway {} stopped before the month was read",
                    fleet.gateways[i]
                ),
                Err(_) => bail!(
                    "gateway {} did not finish the round of {slot} within {} s (progress {:?})",
                    fleet.gateways[i],
                    ROUND_LIMIT.as_secs(),
                    *p.borrow()
                ),
            }
        }
        rounds += 1;
        shown.round(rounds as u64, slot, tap.distinct() as u64);
        slot += step;
    }
    shown.finish(&match stopped_after {
        Some(_) => format!(
            "stopped after {rounds} of {total_rounds} rounds: summarising what was read so far"
        ),
        None => String::new(),
    });
    // Every batch handed to the broker, then every reading stored (skipped
    // when stopped: the summary shows what got through so far).
    for (i, p) in progress.iter_mut().enumerate() {
        if stopped_after.is_some() {
            break;
        }
        let drained = p.wait_for(|g| g.pending_batches == 0 && g.acked_seq >= g.spooled_seq);
        let outcome = tokio::select! {
            _ = stop.cancelled() => {
                stopped_after = Some(to);
                break;
            }
            r = tokio::time::timeout(STALL_LIMIT, drained) => r.map(|r| r.is_ok()),
        };
        match outcome {
            Ok(true) => {}
            Ok(false) => bail!(
                "gateway {} stopped before its spool drained",
                fleet.gateways[i]
            ),
            Err(_) => bail!(
                "gateway {}'s spool did not drain to the broker within {} s (progress {:?})",
                fleet.gateways[i],
                STALL_LIMIT.as_secs(),
                *p.borrow()
            ),
        }
    }
    let simulate_secs = sim_started.elapsed().as_secs_f64();
    let ingest_started = Instant::now();
    if stopped_after.is_none() {
        tap.settle().await;
        tokio::select! {
            _ = stop.cancelled() => stopped_after = Some(to),
            r = wait_accounted(&pool, &meter_ids, from, to, tap.distinct() as i64) => r?,
        }
    }
    let stored_after = count_stored(&pool, &meter_ids, from, to).await?;
    let ingest_wait_secs = ingest_started.elapsed().as_secs_f64();
    gw_shutdown.cancel();
    for h in handles {
        if let Err(e) = h.wait().await {
            tracing::warn!(error = %e, "gateway stopped with an error");
        }
    }

    let billing_started = Instant::now();
    let mut runs = Vec::new();
    for group in fleet.billing_groups() {
        if stopped_after.is_some() {
            break;
        }
        let req = RunRequest {
            period: opts.period,
            group,
            dry_run: false,
        };
        runs.push(billing::run::run_billing(&pool, &book, &req).await?);
    }
    let billing_secs = billing_started.elapsed().as_secs_f64();

    let quarantined: i64 = sqlx::query_scalar(
        "SELECT count(DISTINCT (meter_id, ts)) FROM metering.quarantine \
          WHERE meter_id = ANY($1) AND ts BETWEEN $2 AND $3",
    )
    .bind(&meter_ids)
    .bind(from)
    .bind(to)
    .fetch_one(&pool)
    .await?;
    let accounts: Vec<String> = fleet.accounts().into_iter().map(|a| a.account_no).collect();
    let period_bills: PeriodBills = sqlx::query_as(
        "SELECT count(*) AS bills, count(*) FILTER (WHERE status = 'held') AS held, \
                COALESCE(sum(usage_m3), 0)::bigint AS usage_m3, \
                COALESCE(sum(water_krw), 0)::bigint AS water_krw, \
                COALESCE(sum(sewer_krw), 0)::bigint AS sewer_krw, \
                COALESCE(sum(base_krw), 0)::bigint AS base_krw, \
                COALESCE(sum(levy_krw), 0)::bigint AS levy_krw, \
                COALESCE(sum(reduction_krw), 0)::bigint AS reduction_krw, \
                COALESCE(sum(total_krw), 0)::bigint AS total_krw \
           FROM billing.bills WHERE period = $1 AND account_no = ANY($2)",
    )
    .bind(opts.period.to_string())
    .bind(&accounts)
    .fetch_one(&pool)
    .await?;
    let quarantined_by_reason: Vec<(String, i64)> = sqlx::query_as(
        "SELECT reason, count(DISTINCT (meter_id, ts)) FROM metering.quarantine \
          WHERE meter_id = ANY($1) AND ts BETWEEN $2 AND $3 GROUP BY reason ORDER BY 2 DESC",
    )
    .bind(&meter_ids)
    .bind(from)
    .bind(to)
    .fetch_all(&pool)
    .await?;
    let published_count = tap.distinct() as u64;
    let (published, published_duplicates) = tap.snapshot();
    pool.close().await;

    let report = DemoReport {
        database: db_text,
        broker: broker_text,
        meters: fleet.premises.len(),
        gateways: fleet.gateways.len(),
        from,
        to,
        rounds,
        published,
        published_count,
        published_duplicates,
        stored_before,
        stored_after,
        quarantined,
        quarantined_by_reason,
        period_bills,
        runs,
        simulate_secs,
        ingest_wait_secs,
        billing_secs,
        total_secs: started.elapsed().as_secs_f64(),
        ingest_http,
        tariff_city: book.city().to_string(),
        stopped_after,
    };
    let running = Running {
        ingest_shutdown,
        ingest_task,
        shutdown,
        tasks,
        ingest_http,
        billing_http: None,
        token,
        database,
    };
    Ok((report, running))
}

fn say(opts: &DemoOptions, line: &str) {
    if opts.verbose {
        eprintln!("{line}");
    }
}

/// The demo's admin token: 32 bytes from the operating system's random
/// source, in hexadecimal (64 characters), new for every run.
fn demo_token() -> String {
    use rand::RngCore;
    let mut bytes = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut bytes);
    hex::encode(bytes)
}

fn ingest_config(
    db_url: &str,
    broker_url: &str,
    opts: &DemoOptions,
    token: &str,
) -> ingest::IngestConfig {
    let client_id = format!("{}ingest-demo-{}", opts.id_prefix, std::process::id());
    let mut cfg = ingest::IngestConfig::new(
        db_url,
        ingest::config::MqttConfig::new(broker_url, client_id),
    );
    cfg.mqtt.subscription = format!("$share/{}/{}", opts.share_group, topic::READINGS_FILTER);
    cfg.http_listen = ([127, 0, 0, 1], 0).into();
    cfg.tokens = demo_tokens(token);
    cfg
}

async fn count_stored(
    pool: &sqlx::PgPool,
    meters: &[String],
    from: DateTime<Utc>,
    to: DateTime<Utc>,
) -> anyhow::Result<i64> {
    Ok(sqlx::query_scalar(
        "SELECT count(*) FROM metering.readings_v1 WHERE meter_id = ANY($1) AND ts BETWEEN $2 AND $3",
    )
    .bind(meters)
    .bind(from)
    .bind(to)
    .fetch_one(pool)
    .await?)
}

/// Readings ingest has dealt with: stored, or quarantined with a reason.
async fn count_accounted(
    pool: &sqlx::PgPool,
    meters: &[String],
    from: DateTime<Utc>,
    to: DateTime<Utc>,
) -> anyhow::Result<i64> {
    Ok(sqlx::query_scalar(
        "SELECT count(*) FROM ( \
           SELECT meter_id, ts FROM metering.readings_v1 \
            WHERE meter_id = ANY($1) AND ts BETWEEN $2 AND $3 \
           UNION \
           SELECT meter_id, ts FROM metering.quarantine \
            WHERE meter_id = ANY($1) AND ts BETWEEN $2 AND $3) x",
    )
    .bind(meters)
    .bind(from)
    .bind(to)
    .fetch_one(pool)
    .await?)
}

/// Waits until every distinct reading published is stored or quarantined.
async fn wait_accounted(
    pool: &sqlx::PgPool,
    meters: &[String],
    from: DateTime<Utc>,
    to: DateTime<Utc>,
    want: i64,
) -> anyhow::Result<()> {
    let mut last = -1;
    let mut last_change = Instant::now();
    loop {
        let n = count_accounted(pool, meters, from, to).await?;
        if n >= want {
            return Ok(());
        }
        if n != last {
            last = n;
            last_change = Instant::now();
        } else if last_change.elapsed() > STALL_LIMIT {
            bail!(
                "ingest accounted for {n} of the {want} readings published and made no progress for {} s \
                 (see metering.quarantine and the log)",
                STALL_LIMIT.as_secs()
            );
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
}

/// A non-shared subscriber recording every reading the broker carried.
struct Tap {
    seen: Arc<Mutex<TapState>>,
}

/// What the tap saw: one bit per meter and round of the window (4 MB for a
/// month of 10,000 meters), the readings themselves only when asked.
struct TapState {
    /// Meter id → its row of bits.
    meters: HashMap<String, usize>,
    from: DateTime<Utc>,
    slots: usize,
    bits: Vec<u64>,
    in_window: usize,
    /// Readings outside the window or of other meters (none, normally).
    outside: HashSet<(String, DateTime<Utc>)>,
    /// Every reading with its volume, when kept.
    readings: Option<BTreeMap<(String, DateTime<Utc>), u64>>,
    duplicates: u64,
    last_message: Option<Instant>,
}

impl TapState {
    fn new(meter_ids: &[String], from: DateTime<Utc>, to: DateTime<Utc>, keep: bool) -> Self {
        let slots = ((to - from).num_minutes() / READ_INTERVAL_MIN + 1).max(0) as usize;
        let meters: HashMap<String, usize> = meter_ids
            .iter()
            .enumerate()
            .map(|(i, m)| (m.clone(), i))
            .collect();
        TapState {
            bits: vec![0; (meters.len() * slots).div_ceil(64)],
            meters,
            from,
            slots,
            in_window: 0,
            outside: HashSet::new(),
            readings: keep.then(BTreeMap::new),
            duplicates: 0,
            last_message: None,
        }
    }

    /// Records one reading; `false` when it was seen before.
    fn record(&mut self, meter: &str, ts: DateTime<Utc>, volume_l: u64) -> bool {
        let secs = (ts - self.from).num_seconds();
        let step = READ_INTERVAL_MIN * 60;
        let slot = (secs >= 0 && secs % step == 0)
            .then_some((secs / step) as usize)
            .filter(|s| *s < self.slots);
        let new = match (self.meters.get(meter), slot) {
            (Some(&row), Some(slot)) => {
                let bit = row * self.slots + slot;
                let (word, mask) = (bit / 64, 1u64 << (bit % 64));
                let new = self.bits[word] & mask == 0;
                self.bits[word] |= mask;
                self.in_window += usize::from(new);
                new
            }
            _ => self.outside.insert((meter.to_string(), ts)),
        };
        if let Some(r) = &mut self.readings {
            r.insert((meter.to_string(), ts), volume_l);
        }
        new
    }

    fn distinct(&self) -> usize {
        self.in_window + self.outside.len()
    }
}

impl Tap {
    async fn start(
        broker_url: &str,
        gateways: &[GatewayId],
        state: TapState,
        shutdown: CancellationToken,
    ) -> anyhow::Result<Tap> {
        let addr = crate::broker::reachable(broker_url)?;
        let mut o = rumqttc::MqttOptions::new(
            format!(
                "tap-{}-{}",
                std::process::id(),
                gateways.first().map(|g| g.as_str()).unwrap_or("")
            ),
            addr.ip().to_string(),
            addr.port(),
        );
        o.set_max_packet_size(8 * 1024 * 1024, 8 * 1024 * 1024);
        o.set_keep_alive(std::time::Duration::from_secs(30));
        let (client, mut events) = rumqttc::AsyncClient::new(o, 1024);
        let wanted: HashSet<GatewayId> = gateways.iter().cloned().collect();
        for g in gateways {
            client
                .subscribe(topic::readings(g), rumqttc::QoS::AtLeastOnce)
                .await
                .context("tap subscribe")?;
        }
        let seen = Arc::new(Mutex::new(state));
        let state = seen.clone();
        let (ready_tx, ready_rx) = tokio::sync::oneshot::channel::<()>();
        let mut ready_tx = Some(ready_tx);
        let mut subacks = 0usize;
        let want_subacks = gateways.len();
        tokio::spawn(async move {
            loop {
                let ev = tokio::select! {
                    _ = shutdown.cancelled() => break,
                    ev = events.poll() => ev,
                };
                match ev {
                    Ok(rumqttc::Event::Incoming(rumqttc::Packet::SubAck(_))) => {
                        subacks += 1;
                        if subacks >= want_subacks {
                            if let Some(tx) = ready_tx.take() {
                                let _ = tx.send(());
                            }
                        }
                    }
                    Ok(rumqttc::Event::Incoming(rumqttc::Packet::Publish(p))) => {
                        let Some(topic::Topic::Readings(gw)) = topic::parse(&p.topic) else {
                            continue;
                        };
                        if !wanted.contains(&gw) {
                            continue;
                        }
                        let Ok(batch) = ReadingBatch::decode(&p.payload) else {
                            continue;
                        };
                        let mut s = state.lock().expect("tap lock");
                        s.last_message = Some(Instant::now());
                        for r in batch.readings {
                            if !s.record(r.meter_id.as_str(), r.ts, r.volume_l) {
                                s.duplicates += 1;
                            }
                        }
                    }
                    Ok(_) => {}
                    Err(e) => {
                        tracing::warn!(error = %e, "tap connection error; retrying");
                        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
                    }
                }
            }
        });
        tokio::time::timeout(std::time::Duration::from_secs(10), ready_rx)
            .await
            .context("the tap's subscription was not acknowledged within 10 s")?
            .ok();
        Ok(Tap { seen })
    }

    fn distinct(&self) -> usize {
        self.seen.lock().expect("tap lock").distinct()
    }

    /// Waits until no message arrived for half a second.
    async fn settle(&self) {
        loop {
            let quiet = self
                .seen
                .lock()
                .expect("tap lock")
                .last_message
                .is_none_or(|t| t.elapsed() > std::time::Duration::from_millis(500));
            if quiet {
                return;
            }
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
    }

    fn snapshot(&self) -> (BTreeMap<(String, DateTime<Utc>), u64>, u64) {
        let s = self.seen.lock().expect("tap lock");
        (s.readings.clone().unwrap_or_default(), s.duplicates)
    }
}

#[cfg(test)]
mod tap_tests {
    use super::*;

    #[test]
    fn the_tap_counts_each_reading_once_in_a_bit_per_meter_and_round() {
        let from: DateTime<Utc> = "2026-10-30T15:00:00Z".parse().expect("ts");
        let to = from + Duration::days(1);
        let meters = vec!["m-1".to_string(), "m-2".to_string()];
        let mut t = TapState::new(&meters, from, to, false);
        assert_eq!(t.slots, 97);
        assert!(t.record("m-1", from, 10));
        assert!(!t.record("m-1", from, 10), "a duplicate");
        assert!(t.record("m-2", to, 20));
        assert!(
            t.record("m-2", to + Duration::minutes(15), 20),
            "past the window"
        );
        assert!(t.record("other", from, 1), "another meter");
        assert!(!t.record("other", from, 1));
        assert_eq!(t.distinct(), 4);
        assert_eq!(t.in_window, 2);
        assert!(t.readings.is_none(), "readings not kept");
        let mut kept = TapState::new(&meters, from, to, true);
        kept.record("m-1", from, 10);
        assert_eq!(kept.readings.as_ref().map(|r| r.len()), Some(1));
    }
}
