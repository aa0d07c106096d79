//! `waterworks import KIND FILE` and `waterworks check master`: the command
//! line's glue around the `waterworks-import` crate, which reads the file,
//! maps it and sends it to billing and ingest (see its docs and
//! docs/import.md). The generator of a test export ([`generate`]) stays
//! here.

pub mod check;
pub mod generate;

use anyhow::Context;
use std::path::PathBuf;
pub use waterworks_import::{mapping, read, BadRow, Kind, Options, Outcome, Services};

#[derive(clap::Args, Debug, Clone)]
pub struct ImportArgs {
    /// What the file holds.
    #[arg(value_enum)]
    pub kind: Kind,
    /// The export: CSV (CP949 or UTF-8) or XLSX (its first sheet).
    pub file: PathBuf,
    /// Column → field and value translations (TOML, docs/import.md);
    /// without it, columns are named as the fields.
    #[arg(long)]
    pub mapping: Option<PathBuf>,
    /// The CSV's encoding; detected when not given.
    #[arg(long, value_enum)]
    pub encoding: Option<read::EncodingChoice>,
    /// Report what would be created, changed and left unchanged, and every
    /// bad row; write nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Import the good rows and name the bad ones skipped (without it, one
    /// bad row means nothing is imported).
    #[arg(long)]
    pub skip_bad: bool,
    /// Billing's HTTP address, e.g. `http://billing:8082`.
    #[arg(long, env = "WATERWORKS_BILLING_URL")]
    pub billing_url: String,
    /// Ingest's HTTP address (needed for meters).
    #[arg(long, env = "WATERWORKS_INGEST_URL")]
    pub ingest_url: Option<String>,
    /// A file holding a bearer token: admin for billing (and operator or
    /// admin for ingest unless `--ingest-token-file`).
    #[arg(long)]
    pub token_file: PathBuf,
    /// Ingest's token, when it is not the one of `--token-file`.
    #[arg(long)]
    pub ingest_token_file: Option<PathBuf>,
}

/// Runs `waterworks import`; returns what it did (render it to print).
/// Fails, writing nothing, on a file it cannot use at all (no header, a
/// required column missing) and, without `--skip-bad`, on any bad row.
pub async fn run(args: &ImportArgs) -> anyhow::Result<Outcome> {
    let mapping = match &args.mapping {
        Some(p) => mapping::Mapping::load(p)?,
        None => mapping::Mapping::default(),
    };
    let token = read_token(&args.token_file)?;
    let ingest_token = match &args.ingest_token_file {
        Some(p) => read_token(p)?,
        None => token.clone(),
    };
    let table = read::read(&args.file, args.encoding)?;
    let services = Services {
        billing_url: args.billing_url.clone(),
        billing_token: token,
        ingest_url: args.ingest_url.clone(),
        ingest_token,
        report_retries: true,
    };
    let opts = Options {
        kind: args.kind,
        dry_run: args.dry_run,
        skip_bad: args.skip_bad,
    };
    waterworks_import::import(
        table,
        &args.file.display().to_string(),
        &mapping,
        opts,
        &services,
    )
    .await
}

fn read_token(path: &std::path::Path) -> anyhow::Result<String> {
    Ok(std::fs::read_to_string(path)
        .with_context(|| format!("cannot read {}", path.display()))?
        .trim()
        .to_string())
}
