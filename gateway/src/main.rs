//! `waterworks-gateway`: the field gateway's command.
//!
//! - `waterworks-gateway run --config FILE`: poll and forward until SIGTERM or Ctrl-C.
//! - `waterworks-gateway check-config FILE`: validate a config (and its profiles) without starting.

use clap::{Parser, Subcommand};
use std::path::PathBuf;
use std::process::ExitCode;
use tokio_util::sync::CancellationToken;
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
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        // Colour codes only for a person at a terminal: a journal or a log
        // shipper gets plain text (and NO_COLOR is honoured).
        .with_ansi(
            std::io::IsTerminal::is_terminal(&std::io::stderr())
                && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty()),
        )
        .init();
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
                let shutdown = CancellationToken::new();
                let signals = shutdown.clone();
                tokio::spawn(async move {
                    wait_for_signal().await;
                    tracing::info!("shutdown requested");
                    signals.cancel();
                });
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

async fn wait_for_signal() {
    let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(s) => s,
        Err(_) => {
            let _ = tokio::signal::ctrl_c().await;
            return;
        }
    };
    tokio::select! {
        _ = term.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
}
