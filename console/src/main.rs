//! `waterworks-console [--config FILE]`: serves the console until SIGTERM.

use clap::Parser;

#[derive(Parser)]
#[command(about = "Waterworks console: operators' dashboard and clerks' console")]
struct Args {
    /// TOML configuration; `CONSOLE_*` environment variables override it.
    #[arg(long, env = "CONSOLE_CONFIG")]
    config: Option<std::path::PathBuf>,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    waterworks_service::telemetry::init("info");
    let args = Args::parse();
    let config = waterworks_console::ConsoleConfig::load(args.config.as_deref())?;
    let shutdown = waterworks_service::shutdown::on_signals();
    waterworks_console::run(config, shutdown).await?;
    Ok(())
}
