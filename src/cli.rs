//! Command-line interface. Each service's subcommand reads its TOML
//! configuration (see `deploy/config/`), with `DATABASE_URL` and `MQTT_URL`
//! from the environment taking precedence, as Kubernetes injects them.

use crate::demo::{self, DemoOptions};
use anyhow::Context;
use billing::Period;
use clap::{Args, Parser, Subcommand};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

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
    /// Apply the database migrations of ingest and billing, then exit.
    Migrate {
        #[arg(long, env = "DATABASE_URL")]
        database_url: String,
    },
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
pub enum BillingCommand {
    /// Serve the billing API.
    Serve(ServiceArgs),
    /// Bill one month for one billing group.
    Run {
        #[arg(long)]
        period: Period,
        #[arg(long)]
        group: String,
        /// Preview the totals and change nothing.
        #[arg(long)]
        dry_run: bool,
        #[arg(long, env = "DATABASE_URL")]
        database_url: String,
        #[arg(long)]
        tariff: Option<PathBuf>,
        #[arg(long)]
        json: bool,
    },
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
                cfg.database_url = url;
            }
            if let Ok(url) = std::env::var("MQTT_URL") {
                cfg.mqtt.url = url;
            }
            let shutdown = waterworks_service::shutdown::on_signals();
            ingest::run(cfg, shutdown).await?;
            Ok(())
        }
        Command::Billing { command } => match command {
            BillingCommand::Serve(args) => {
                let mut cfg: billing::BillingConfig = load_toml(&args.config)?;
                if let Ok(url) = std::env::var("DATABASE_URL") {
                    cfg.database_url = url;
                }
                let shutdown = waterworks_service::shutdown::on_signals();
                billing::run(cfg, shutdown).await?;
                Ok(())
            }
            BillingCommand::Run {
                period,
                group,
                dry_run,
                database_url,
                tariff,
                json,
            } => {
                let book = demo::load_tariff(tariff.as_deref())?;
                let pool = crate::database::connect(&database_url, 4).await?;
                billing::migrate(&pool).await?;
                let req = billing::run::RunRequest {
                    period,
                    group,
                    dry_run,
                };
                let outcome = billing::run::run_billing(&pool, &book, &req).await?;
                if json {
                    println!("{}", serde_json::to_string_pretty(&outcome)?);
                } else {
                    println!("{outcome:#?}");
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
        Command::Migrate { database_url } => {
            let pool = crate::database::connect(&database_url, 2).await?;
            ingest::migrate(&pool).await?;
            billing::migrate(&pool).await?;
            println!("migrations applied (schemas metering and billing)");
            Ok(())
        }
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
    opts.database_url = args.database_url;
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
            println!("  token   {}  (role {})", t.token, t.role.as_str());
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
