//! `waterworks-gateway`: the field gateway's command.
//!
//! - `waterworks-gateway run --config FILE`: poll and forward until SIGTERM or Ctrl-C
//!   (`waterworks_service::shutdown`, the services' one shutdown path).
//! - `waterworks-gateway check-config FILE`: validate a config (and its profiles) without starting.

use clap::{Parser, Subcommand};
use std::path::PathBuf;
use std::process::ExitCode;
use waterworks_wire::clock::Clock;

#[derive(Parser)]
#[command(
    name = "waterworks-gateway",
    version,
    about = "Waterworks field gateway: polls meters, spools, forwards over MQTT"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Poll the configured meters and forward their readings until SIGTERM or Ctrl-C.
    Run {
        #[arg(long, short)]
        config: PathBuf,
    },
    /// Validate a configuration file and its device profiles, then exit.
    CheckConfig { file: PathBuf },
}

fn main() -> ExitCode {
    // The services' set-up: RUST_LOG (default info), LOG_FORMAT=json, colour
    // codes only for a person at a terminal (NO_COLOR honoured).
    waterworks_service::telemetry::init("info");
    match Cli::parse().command {
        Command::CheckConfig { file } => match gateway::check_config(&file) {
            Ok(summary) => {
                print!("{summary}");
                println!("ok");
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("error: {e}");
                ExitCode::from(2)
            }
        },
        Command::Run { config } => {
            let config = match gateway::load_config(&config) {
                Ok(c) => c,
                Err(e) => {
                    eprintln!("error: {e}");
                    return ExitCode::from(2);
                }
            };
            let rt = match tokio::runtime::Runtime::new() {
                Ok(rt) => rt,
                Err(e) => {
                    eprintln!("error: cannot start the runtime: {e}");
                    return ExitCode::FAILURE;
                }
            };
            rt.block_on(async move {
                // SIGTERM or SIGINT cancels it, as in every service.
                let shutdown = waterworks_service::shutdown::on_signals();
                match gateway::run(config, Clock::System, shutdown).await {
                    Ok(()) => ExitCode::SUCCESS,
                    Err(e) => {
                        eprintln!("error: {e}");
                        ExitCode::FAILURE
                    }
                }
            })
        }
    }
}
