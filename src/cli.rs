//! (Long because it is the whole command tree: clap's argument types for every subcommand beside their thin handlers, so one file shows what the `waterworks` command accepts.)
//!
//! Command-line interface. Each service's subcommand reads its TOML
//! configuration (see `deploy/config/`), with `DATABASE_URL`, `MQTT_URL`,
//! `MQTT_CLIENT_ID`, `MQTT_USERNAME` (and `MQTT_PASSWORD`, read by ingest)
//! from the environment taking precedence, as Kubernetes injects them.

use crate::demo::{self, DemoOptions};
use anyhow::Context;
use billing::Period;
use clap::{Args, Parser, Subcommand};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use waterworks_api::ingest::{MeterRegistration, RegisterReport, RegistrationOutcome};
use waterworks_api::ErrorBody;

#[derive(Parser, Debug)]
#[command(
    name = "waterworks",
    version,
    about = "Meter reading, storage and billing of a city's water"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Run the whole pipeline on this machine for one month and print a summary.
    Demo(DemoArgs),
    /// Tariff tools.
    Tariff {
        #[command(subcommand)]
        command: TariffCommand,
    },
    /// Serve simulated meters over Modbus TCP on real time.
    MeterSim(MeterSimArgs),
    /// The field gateway.
    Gateway {
        #[command(subcommand)]
        command: GatewayCommand,
    },
    /// The ingest service (MQTT → PostgreSQL, metering API).
    Ingest(ServiceArgs),
    /// The billing service and billing runs.
    Billing {
        #[command(subcommand)]
        command: BillingCommand,
    },
    /// The console: operators' dashboard and clerks' pages in the browser.
    Console {
        /// TOML configuration; `CONSOLE_*` environment variables override it
        /// (`CONSOLE_INGEST_URL`, `CONSOLE_BILLING_URL`, `CONSOLE_HTTP_LISTEN`).
        #[arg(long, env = "CONSOLE_CONFIG")]
        config: Option<PathBuf>,
    },
    /// The meter registry kept by ingest (over its HTTP API).
    Meters {
        #[command(subcommand)]
        command: MetersCommand,
    },
    /// Apply the database migrations of ingest and billing, then exit. Run
    /// it as the schemas' owner (in Kubernetes, the waterworks-migrate Job):
    /// the services only check the schema at start.
    Migrate(MigrateArgs),
    /// Import a utility's export of customers, premises, meters or
    /// installations (CSV in CP949 or UTF-8, or XLSX) into billing and, for
    /// meters, ingest's registry, over their APIs (docs/import.md).
    Import(crate::import::ImportArgs),
    /// Consistency checks.
    Check {
        #[command(subcommand)]
        command: CheckCommand,
    },
}

#[derive(Subcommand, Debug)]
pub enum CheckCommand {
    /// Whether billing's master data and ingest's registry agree: meters
    /// installed but unknown to ingest, registered but installed nowhere,
    /// reporting under another gateway, premises without a meter. Reads
    /// both schemas, writes nothing; exits 1 when it finds anything.
    Master {
        #[arg(long, env = "DATABASE_URL")]
        database_url: String,
        /// Quarantined `wrong_gateway` readings of the last N days count.
        #[arg(long, default_value_t = 7)]
        days: i64,
        /// Findings shown per list.
        #[arg(long, default_value_t = 50)]
        show: usize,
    },
}

#[derive(Args, Debug)]
pub struct MigrateArgs {
    #[arg(long, env = "DATABASE_URL")]
    pub database_url: String,
    /// Which schema: `metering` (as ingest's role, which owns it),
    /// `billing` (as the owner role) or `all` (one role owning both: a
    /// development database).
    #[arg(long, value_enum, default_value_t = SchemaChoice::All)]
    pub schema: SchemaChoice,
    /// Change nothing: succeed when every migration of this build is
    /// applied, fail naming the missing ones otherwise (an init container's
    /// wait before a service starts).
    #[arg(long)]
    pub check: bool,
    /// With `--check`: keep checking every 2 s for up to this many seconds
    /// (the migrate Job may still be running).
    #[arg(long, default_value_t = 0)]
    pub wait_s: u64,
}

#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum SchemaChoice {
    Metering,
    Billing,
    All,
}

impl SchemaChoice {
    fn metering(self) -> bool {
        matches!(self, SchemaChoice::Metering | SchemaChoice::All)
    }
    fn billing(self) -> bool {
        matches!(self, SchemaChoice::Billing | SchemaChoice::All)
    }
}

#[derive(Args, Debug)]
pub struct DemoArgs {
    /// Simulated meters (each with its customer account).
    #[arg(long, default_value_t = 100)]
    pub meters: usize,
    /// Gateways the meters are split between.
    #[arg(long, default_value_t = 2)]
    pub gateways: usize,
    /// Seed of the simulated city; the same seed gives the same readings.
    #[arg(long, default_value_t = 20_261_001)]
    pub seed: u64,
    /// The month simulated and billed (Korean time).
    #[arg(long, default_value = "2026-10")]
    pub period: Period,
    /// Simulate only the last N days of the month (and its closing read),
    /// so a large fleet can be shown quickly; default: the whole month.
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..=31))]
    pub days: Option<u32>,
    /// An external broker (`mqtt://host:port`); default: an embedded one.
    #[arg(long)]
    pub mqtt: Option<String>,
    /// PostgreSQL; default: the local server, else a private cluster.
    #[arg(long, env = "DATABASE_URL")]
    pub database_url: Option<String>,
    /// Tariff file; default: the embedded Daejeon tariff.
    #[arg(long)]
    pub tariff: Option<PathBuf>,
    /// Where spools and a private database are kept.
    #[arg(long, default_value = ".waterworks")]
    pub state_dir: PathBuf,
    /// Simulate no leaking or back-flowing premises.
    #[arg(long)]
    pub no_faults: bool,
    /// Keep the services up after the summary, until Ctrl-C or SIGTERM:
    /// ingest's and billing's APIs and the console.
    #[arg(long)]
    pub serve: bool,
    /// Where the console listens with `--serve`.
    #[arg(long, default_value = "127.0.0.1:8080")]
    pub console_listen: std::net::SocketAddr,
}

#[derive(Subcommand, Debug)]
pub enum TariffCommand {
    /// Print the line items and total of one month's bill.
    Quote(QuoteArgs),
}

#[derive(Args, Debug)]
pub struct QuoteArgs {
    /// Usage type as the tariff names it (household, general, bathhouse, industrial, ...).
    #[arg(long)]
    pub usage: String,
    #[arg(long)]
    pub diameter_mm: u32,
    /// Whole cubic metres used in the month.
    #[arg(long)]
    pub m3: u32,
    #[arg(long, default_value_t = 1)]
    pub households: u32,
    /// The premises is not connected to the sewer.
    #[arg(long)]
    pub no_sewer: bool,
    /// Exempt from the water use levy.
    #[arg(long)]
    pub levy_exempt: bool,
    /// Month whose tariff applies (default: the latest version).
    #[arg(long)]
    pub period: Option<Period>,
    /// Tariff file; default: the embedded Daejeon tariff.
    #[arg(long)]
    pub tariff: Option<PathBuf>,
    /// Print JSON instead of the bill layout.
    #[arg(long)]
    pub json: bool,
}

#[derive(Args, Debug)]
pub struct MeterSimArgs {
    #[arg(long, default_value_t = 100)]
    pub meters: usize,
    #[arg(long, default_value_t = 20_261_001)]
    pub seed: u64,
    /// Meters served per TCP port (unit ids 1..=N).
    #[arg(long, default_value_t = 100)]
    pub meters_per_port: u8,
}

#[derive(Subcommand, Debug)]
pub enum GatewayCommand {
    /// Poll the configured meters and publish their readings.
    Run {
        #[arg(long)]
        config: PathBuf,
    },
    /// Validate a configuration file without starting.
    CheckConfig { config: PathBuf },
}

#[derive(Args, Debug)]
pub struct ServiceArgs {
    /// The service's TOML configuration.
    #[arg(long)]
    pub config: PathBuf,
}

#[derive(Subcommand, Debug)]
pub enum MetersCommand {
    /// Register meters from a JSON file `{"meters": [{meter_id, gateway_id,
    /// profile_id, max_flow_lph?}, ...]}` with `PUT /api/v1/meters`
    /// (operator or admin token). The whole file is checked first (every bad
    /// item listed, nothing written); then it is sent in batches of at most
    /// 10 000 meters, each one transaction. Registering the same file again
    /// changes nothing, so a run cut short is finished by running it again.
    Register(RegisterArgs),
}

#[derive(Args, Debug)]
pub struct RegisterArgs {
    /// The JSON file of registrations.
    pub file: PathBuf,
    /// Ingest's HTTP address, e.g. `http://ingest:8081`.
    #[arg(long, env = "WATERWORKS_INGEST_URL")]
    pub ingest_url: String,
    /// A file holding the bearer token (operator or admin), nothing else.
    #[arg(long)]
    pub token_file: PathBuf,
    /// Report what would be created, changed and left unchanged; write nothing.
    #[arg(long)]
    pub dry_run: bool,
}

#[derive(Subcommand, Debug)]
pub enum BillingCommand {
    /// Serve the billing API.
    Serve(ServiceArgs),
    /// Bill one month for one billing group. A month can be billed once it
    /// is over in Korea (Asia/Seoul); an earlier run needs `--force --reason`.
    Run {
        /// `YYYY-MM`, or `previous`: the last month that is over in Korea.
        #[arg(long)]
        period: PeriodArg,
        #[arg(long)]
        group: String,
        /// Preview the totals and change nothing.
        #[arg(long)]
        dry_run: bool,
        /// Run a month that is not over yet (bills on partial usage).
        #[arg(long, requires = "reason")]
        force: bool,
        /// Why the run is forced; kept in the audit log.
        #[arg(long, requires = "force")]
        reason: Option<String>,
        #[arg(long, env = "DATABASE_URL")]
        database_url: String,
        #[arg(long)]
        tariff: Option<PathBuf>,
        /// Print the report as JSON (the run's outcome and its bill
        /// numbers, ledger entries and holds by reason) instead of text.
        #[arg(long)]
        json: bool,
    },
}

/// `--period`: a month, or `previous` (resolved against the clock when the
/// command runs, in Korean time).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PeriodArg {
    Month(Period),
    Previous,
}

impl std::str::FromStr for PeriodArg {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s == "previous" {
            return Ok(PeriodArg::Previous);
        }
        s.parse::<Period>()
            .map(PeriodArg::Month)
            .map_err(|e| format!("{e}, or `previous`"))
    }
}

impl PeriodArg {
    pub fn resolve(self, now: chrono::DateTime<chrono::Utc>) -> Period {
        match self {
            PeriodArg::Month(p) => p,
            PeriodArg::Previous => Period::last_complete(now),
        }
    }
}

pub fn main() -> ExitCode {
    let cli = Cli::parse();
    // The demo prints its own progress and summary: only warnings are logged
    // unless RUST_LOG asks for more. The embedded broker's connection chatter
    // at shutdown is never useful to a demo user.
    let default_filter = match cli.command {
        Command::Demo(_) | Command::Tariff { .. } => "warn,rumqttd=off,rumqttc=error,sqlx=error",
        _ => "info,rumqttd=warn,rumqttc=warn,sqlx=warn",
    };
    waterworks_service::telemetry::init(default_filter);
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match rt.block_on(dispatch(cli.command)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn dispatch(command: Command) -> anyhow::Result<()> {
    match command {
        Command::Demo(args) => run_demo(args).await,
        Command::Tariff {
            command: TariffCommand::Quote(q),
        } => quote(q),
        Command::MeterSim(args) => meter_sim(args).await,
        Command::Gateway { command } => match command {
            GatewayCommand::CheckConfig { config } => {
                let cfg = gateway::load_config(&config)?;
                println!(
                    "{}: gateway {} with {} meters: configuration is valid",
                    config.display(),
                    cfg.gateway_id,
                    cfg.meters.len()
                );
                Ok(())
            }
            GatewayCommand::Run { config } => {
                let cfg = gateway::load_config(&config)?;
                let shutdown = waterworks_service::shutdown::on_signals();
                gateway::run(cfg, waterworks_wire::clock::Clock::System, shutdown).await?;
                Ok(())
            }
        },
        Command::Ingest(args) => {
            let mut cfg: ingest::IngestConfig = load_toml(&args.config)?;
            if let Ok(url) = std::env::var("DATABASE_URL") {
                cfg.database_url = url.into();
            }
            if let Ok(url) = std::env::var("MQTT_URL") {
                cfg.mqtt.url = url;
            }
            // The pod's name in Kubernetes: a stable id per replica.
            if let Ok(id) = std::env::var("MQTT_CLIENT_ID") {
                if !id.is_empty() {
                    cfg.mqtt.client_id = id;
                }
            }
            if let Ok(user) = std::env::var("MQTT_USERNAME") {
                if !user.is_empty() {
                    cfg.mqtt.username = Some(user);
                }
            }
            let shutdown = waterworks_service::shutdown::on_signals();
            ingest::run(cfg, shutdown).await?;
            Ok(())
        }
        Command::Billing { command } => match command {
            BillingCommand::Serve(args) => {
                let mut cfg: billing::BillingConfig = load_toml(&args.config)?;
                if let Ok(url) = std::env::var("DATABASE_URL") {
                    cfg.database_url = url.into();
                }
                let shutdown = waterworks_service::shutdown::on_signals();
                billing::run(cfg, shutdown).await?;
                Ok(())
            }
            BillingCommand::Run {
                period,
                group,
                dry_run,
                force,
                reason,
                database_url,
                tariff,
                json,
            } => {
                let now = chrono::Utc::now();
                let period = period.resolve(now);
                let force_reason = force.then(|| reason.as_deref().unwrap_or(""));
                // Refused before touching the database: the month must be over.
                let forced = billing::run::admit(&period, now, force_reason)?;
                let book = demo::load_tariff(tariff.as_deref())?;
                let pool = crate::database::connect(&database_url, 4).await?;
                // The CronJob's role may not migrate: run `waterworks migrate` first.
                billing::check_schema(&pool).await?;
                let req = billing::run::RunRequest {
                    period,
                    group,
                    dry_run,
                };
                if let (Some(reason), false) = (&forced, dry_run) {
                    let actor = format!(
                        "cli:{}",
                        std::env::var("USER").unwrap_or_else(|_| "unknown".into())
                    );
                    billing::run::record_forced_run(&pool, &req, reason, &actor).await?;
                }
                let outcome = billing::run::run_billing(&pool, &book, &req).await?;
                let report = billing::run::RunReport::build(&pool, outcome, forced).await?;
                if json {
                    println!("{}", serde_json::to_string_pretty(&report)?);
                } else {
                    print!("{}", report.render_text());
                }
                Ok(())
            }
        },
        Command::Console { config } => {
            let cfg = waterworks_console::ConsoleConfig::load(config.as_deref())?;
            let shutdown = waterworks_service::shutdown::on_signals();
            waterworks_console::run(cfg, shutdown).await?;
            Ok(())
        }
        Command::Meters {
            command: MetersCommand::Register(args),
        } => {
            let report = register_meters_file(&args).await?;
            print!("{report}");
            Ok(())
        }
        Command::Migrate(args) => migrate(args).await,
        Command::Import(args) => {
            let out = crate::import::run(&args).await?;
            print!("{}", out.render());
            if !args.dry_run && !out.written && !out.bad.is_empty() {
                anyhow::bail!(
                    "{} bad row(s); nothing was imported (--skip-bad imports the others)",
                    out.bad_lines().len()
                );
            }
            Ok(())
        }
        Command::Check {
            command:
                CheckCommand::Master {
                    database_url,
                    days,
                    show,
                },
        } => {
            let pool = crate::database::connect(&database_url, 2).await?;
            let check = crate::import::check::check_master(&pool, days).await?;
            print!("{}", check.render(show));
            anyhow::ensure!(check.is_clean(), "billing and ingest disagree");
            Ok(())
        }
    }
}

async fn migrate(args: MigrateArgs) -> anyhow::Result<()> {
    let pool = crate::database::connect(&args.database_url, 2).await?;
    let names = match args.schema {
        SchemaChoice::Metering => "metering",
        SchemaChoice::Billing => "billing",
        SchemaChoice::All => "metering and billing",
    };
    if args.check {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(args.wait_s);
        loop {
            let result: anyhow::Result<()> = async {
                if args.schema.metering() {
                    ingest::db::check(&pool).await?;
                }
                if args.schema.billing() {
                    billing::check_schema(&pool).await?;
                }
                Ok(())
            }
            .await;
            match result {
                Ok(()) => break,
                Err(e) if std::time::Instant::now() < deadline => {
                    tracing::info!(error = %format!("{e:#}"), "schema not ready, checking again in 2 s");
                    tokio::time::sleep(std::time::Duration::from_secs(2)).await;
                }
                Err(e) => return Err(e),
            }
        }
        println!("schema {names}: every migration of this build is applied");
        return Ok(());
    }
    if args.schema.metering() {
        ingest::migrate(&pool)
            .await
            .context("metering migrations")?;
    }
    if args.schema.billing() {
        billing::migrate(&pool)
            .await
            .context("billing migrations")?;
    }
    println!("migrations applied (schema {names})");
    Ok(())
}

/// Meters per request: ingest's limit (`MAX_BATCH_METERS`).
const REGISTER_BATCH: usize = waterworks_api::ingest::MAX_BATCH_METERS;
/// Longest wait for one batch's answer.
const REGISTER_TIMEOUT_S: u64 = 120;

/// `waterworks meters register`: reads the file and the token, then
/// [`register_meters_over_http`]. Returns the text to print.
pub async fn register_meters_file(args: &RegisterArgs) -> anyhow::Result<String> {
    let text = std::fs::read_to_string(&args.file)
        .with_context(|| format!("cannot read {}", args.file.display()))?;
    let doc: serde_json::Value = serde_json::from_str(&text)
        .with_context(|| format!("{} is not JSON", args.file.display()))?;
    let Some(meters) = doc.get("meters").and_then(|m| m.as_array()) else {
        anyhow::bail!(
            "{}: expected an object {{\"meters\": [...]}}",
            args.file.display()
        );
    };
    anyhow::ensure!(!meters.is_empty(), "{}: no meters", args.file.display());
    let token = std::fs::read_to_string(&args.token_file)
        .with_context(|| format!("cannot read {}", args.token_file.display()))?;
    register_meters_over_http(&args.ingest_url, token.trim(), meters, args.dry_run).await
}

/// A registration as `PUT /api/v1/meters` takes it (`max_flow_lph` always
/// stated: a meter without one has no spike rule).
pub fn registration_json(m: &ingest::registry::MeterRegistration) -> serde_json::Value {
    serde_json::to_value(MeterRegistration {
        meter_id: m.meter_id.to_string(),
        gateway_id: m.gateway_id.to_string(),
        profile_id: m.profile_id.clone(),
        max_flow_lph: Some(m.max_flow_lph),
    })
    .expect("a registration serialises")
}

/// Registers `meters` with ingest at `ingest_url`: every batch of
/// [`REGISTER_BATCH`] is checked with a dry run first (so a bad item
/// anywhere writes nothing, and every problem is listed with its index in
/// `meters`), then, unless `dry_run`, each is sent for real. Returns the
/// counts as text, and for a dry run the meters that would change.
///
/// The items are sent as they are (not parsed here first) so that ingest
/// lists every problem of a bad file; its answers are read as the contract's
/// [`RegisterReport`] and [`ErrorBody`].
pub async fn register_meters_over_http(
    ingest_url: &str,
    token: &str,
    meters: &[serde_json::Value],
    dry_run: bool,
) -> anyhow::Result<String> {
    let mut first_at = std::collections::HashMap::new();
    let mut problems = Vec::new();
    for (i, m) in meters.iter().enumerate() {
        if let Some(id) = m.get("meter_id").and_then(|v| v.as_str()) {
            if let Some(first) = first_at.insert(id, i) {
                problems.push(format!(
                    "meters[{i}] meter_id: meter {id} is also at index {first}"
                ));
            }
        }
    }
    let client = reqwest::Client::builder()
        .timeout(std::time::Duration::from_secs(REGISTER_TIMEOUT_S))
        .build()?;
    let url = format!("{}/api/v1/meters", ingest_url.trim_end_matches('/'));
    let batches: Vec<&[serde_json::Value]> = meters.chunks(REGISTER_BATCH).collect();
    let put = |batch: &[serde_json::Value], dry_run: bool| {
        client
            .put(&url)
            .query(&[("dry_run", dry_run)])
            .bearer_auth(token)
            .json(&serde_json::json!({ "meters": batch }))
            .send()
    };
    let mut totals = [0u64; 4];
    let mut would_change = Vec::new();
    // Every batch is checked before any is written.
    for (b, batch) in batches.iter().enumerate() {
        let offset = b * REGISTER_BATCH;
        let resp = put(batch, true)
            .await
            .with_context(|| format!("cannot reach ingest at {url}"))?;
        match answer(resp).await? {
            Ok(report) => {
                add_counts(&mut totals, &report);
                for m in &report.meters {
                    let outcome = match m.outcome {
                        RegistrationOutcome::Unchanged => continue,
                        RegistrationOutcome::Created => "created",
                        RegistrationOutcome::Changed => "changed",
                    };
                    would_change.push(match &m.moved_from_gateway_id {
                        Some(from) => format!("  {outcome} {} (from gateway {from})", m.meter_id),
                        None => format!("  {outcome} {}", m.meter_id),
                    });
                }
            }
            Err((422, e)) => {
                for p in e.problems {
                    problems.push(format!(
                        "meters[{}] {}: {}",
                        p.index + offset,
                        p.field,
                        p.reason
                    ));
                }
            }
            Err((status, e)) => {
                anyhow::bail!("ingest refused the batch ({status}): {}", e.message)
            }
        }
    }
    if !problems.is_empty() {
        anyhow::bail!(
            "{} problem(s); nothing was written:\n{}",
            problems.len(),
            problems.join("\n")
        );
    }
    if dry_run {
        let mut out = format!(
            "dry run: would create {}, change {} (move {}), leave {} unchanged\n",
            totals[0], totals[1], totals[2], totals[3]
        );
        for line in would_change {
            out.push_str(&line);
            out.push('\n');
        }
        return Ok(out);
    }
    totals = [0; 4];
    for (b, batch) in batches.iter().enumerate() {
        let resp = put(batch, false)
            .await
            .with_context(|| format!("cannot reach ingest at {url}"))?;
        match answer(resp).await? {
            Ok(report) => add_counts(&mut totals, &report),
            Err((status, e)) => anyhow::bail!(
                "batch {} of {} refused ({status}): {}; batches before it are registered, \
                 run the same file again to finish",
                b + 1,
                batches.len(),
                e.message
            ),
        }
    }
    Ok(format!(
        "registered: created {}, changed {} (moved {}), unchanged {}\n",
        totals[0], totals[1], totals[2], totals[3]
    ))
}

/// Ingest's answer to one batch: its report, or the status and error body.
async fn answer(
    resp: reqwest::Response,
) -> anyhow::Result<Result<RegisterReport, (u16, ErrorBody)>> {
    let status = resp.status().as_u16();
    let bytes = resp.bytes().await.context("reading ingest's answer")?;
    if status == 200 {
        let report =
            serde_json::from_slice(&bytes).context("ingest's report is not a RegisterReport")?;
        return Ok(Ok(report));
    }
    let error = serde_json::from_slice(&bytes).unwrap_or_else(|_| {
        ErrorBody::new(
            waterworks_api::ErrorCode::Internal,
            String::from_utf8_lossy(&bytes)
                .chars()
                .take(200)
                .collect::<String>(),
        )
    });
    Ok(Err((status, error)))
}

fn add_counts(totals: &mut [u64; 4], r: &RegisterReport) {
    for (t, n) in totals
        .iter_mut()
        .zip([r.created, r.changed, r.moved, r.unchanged])
    {
        *t += n;
    }
}

fn load_toml<T: serde::de::DeserializeOwned>(path: &Path) -> anyhow::Result<T> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    toml::from_str(&text).with_context(|| format!("configuration {}", path.display()))
}

fn quote(q: QuoteArgs) -> anyhow::Result<()> {
    let book = demo::load_tariff(q.tariff.as_deref())?;
    let req = billing::tariff::QuoteRequest {
        usage_type: q.usage,
        diameter_mm: q.diameter_mm,
        usage_m3: q.m3,
        households: q.households,
        sewer_connected: !q.no_sewer,
        levy_exempt: q.levy_exempt,
        period: q.period,
        ..Default::default()
    };
    let quote = billing::tariff::quote(&book, &req)?;
    if q.json {
        println!("{}", serde_json::to_string_pretty(&quote)?);
    } else {
        print!("{}", quote.render_text());
    }
    Ok(())
}

async fn run_demo(args: DemoArgs) -> anyhow::Result<()> {
    let mut opts = DemoOptions::new(args.period);
    opts.meters = args.meters;
    opts.gateways = args.gateways;
    opts.seed = args.seed;
    opts.mqtt = args.mqtt;
    // `cargo run -- demo` inherits the tests' DATABASE_URL from
    // .cargo/config.toml: that one is not the user's choice.
    opts.database_url = crate::database::given_url(
        args.database_url,
        std::env::var(crate::database::CARGO_DEFAULT_URL_VAR).ok(),
    );
    opts.tariff = args.tariff.clone();
    opts.state_dir = args.state_dir.clone();
    opts.with_faults = !args.no_faults;
    opts.from = demo_from(args.period, args.days);
    // A bit per reading, not the readings: memory stays flat with the fleet.
    opts.keep_published = false;
    anyhow::ensure!(opts.meters >= 1, "--meters must be at least 1");
    anyhow::ensure!(
        opts.gateways >= 1 && opts.gateways <= opts.meters,
        "--gateways must be between 1 and the number of meters"
    );
    // Ctrl-C or SIGTERM ends the rounds; the summary so far is printed.
    let stop = waterworks_service::shutdown::on_signals();
    let (report, mut running) = demo::run_until_stopped(&opts, stop).await?;
    print_flushed(&crate::summary::render(&report));
    if args.serve && report.stopped_after.is_none() {
        let signals = waterworks_service::shutdown::on_signals();
        let console = match running
            .serve_console(args.tariff.as_deref(), &args.state_dir, args.console_listen)
            .await
        {
            Ok(addr) => addr,
            Err(e) => {
                running.stop().await;
                return Err(e);
            }
        };
        println!("\nserving until Ctrl-C / SIGTERM:");
        println!("  console http://{console}/  (sign in with a token below)");
        println!(
            "  ingest  http://{}/api/v1/  (/health /ready /metrics)",
            running.ingest_http
        );
        if let Some(b) = running.billing_http {
            println!("  billing http://{b}/api/v1/  (/health /ready /metrics)");
        }
        for t in demo::demo_tokens(&running.token) {
            let role = t.role.map(|r| r.as_str()).unwrap_or_default();
            println!(
                "  token   {}  (role {role})",
                t.token.as_ref().map(|s| s.expose()).unwrap_or_default()
            );
        }
        signals.cancelled().await;
    }
    running.stop().await;
    Ok(())
}

fn print_flushed(text: &str) {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    let _ = out.write_all(text.as_bytes());
    let _ = out.flush();
}

/// The first read of a demo limited to the last `days` days of `period`;
/// `None` (the whole month) when `days` covers it.
fn demo_from(period: Period, days: Option<u32>) -> Option<chrono::DateTime<chrono::Utc>> {
    days.filter(|d| *d < period.days())
        .map(|d| period.end_utc() - chrono::Duration::days(i64::from(d)))
}

async fn meter_sim(args: MeterSimArgs) -> anyhow::Result<()> {
    use crate::fleet::{Fleet, FleetSpec};
    let fleet = Fleet::generate(&FleetSpec {
        meters: args.meters,
        gateways: 1,
        seed: args.seed,
        id_prefix: String::new(),
        installed_at: chrono::Utc::now(),
        with_faults: false,
    });
    let sim = edge_firmware::sim::Simulator::bind(
        edge_firmware::sim::SimConfig {
            host: [127, 0, 0, 1].into(),
            meters_per_port: args.meters_per_port,
            seed: args.seed,
            meters: fleet.premises.iter().map(|p| p.meter.clone()).collect(),
        },
        waterworks_wire::clock::Clock::System,
    )
    .await?;
    for a in sim.addresses() {
        println!("{}\t{}\tunit {}", a.meter_id, a.addr, a.unit_id);
    }
    let shutdown = waterworks_service::shutdown::on_signals();
    sim.run(shutdown).await?;
    Ok(())
}
