//! One ingest replica as a process: `ingest-replica CONFIG.toml`.
//!
//! The same service `waterworks ingest --config` runs, without the rest of
//! the CLI; the fault tests start it as a child and SIGKILL it.
//! `DATABASE_URL` and `MQTT_URL` in the environment override the file.

use std::process::ExitCode;

/// The allocator the `waterworks` binary uses (see its `main.rs`).
#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> ExitCode {
    waterworks_service::telemetry::init("info");
    let Some(path) = std::env::args().nth(1) else {
        eprintln!("usage: ingest-replica CONFIG.toml");
        return ExitCode::from(2);
    };
    let text = match std::fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("cannot read {path}: {e}");
            return ExitCode::from(2);
        }
    };
    let mut cfg: ingest::IngestConfig = match toml::from_str(&text) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("bad configuration {path}: {e}");
            return ExitCode::from(2);
        }
    };
    if let Ok(url) = std::env::var("DATABASE_URL") {
        cfg.database_url = url.into();
    }
    if let Ok(url) = std::env::var("MQTT_URL") {
        cfg.mqtt.url = url;
    }
    let shutdown = waterworks_service::shutdown::on_signals();
    match ingest::run(cfg, shutdown).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = %e, "ingest failed");
            ExitCode::FAILURE
        }
    }
}
