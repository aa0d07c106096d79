//! Waterworks cluster ingest: readings from the broker into billing-grade
//! time series in PostgreSQL, exactly once, validated at the door, and the
//! metering query API.
//!
//! - [`config`]: [`IngestConfig`] and its parts (the operator's reference).
//! - [`vee`]: the pure validation rules and their quarantine reasons.
//! - [`writer`]: one batch, one transaction (lock, validate, `COPY`, merge).
//! - [`consumer`]: the MQTT shell (manual acks after commit, bounded window).
//! - [`db`]: migrations and day partitions; [`registry`]: the meter registry
//!   (and its audit), written over HTTP (`PUT /api/v1/meters`) after
//!   [`registry_api`] has checked the batch.
//! - [`http`]: `/api/v1` (bearer roles; a router per resource, the types of
//!   `waterworks_api::ingest`, a generated OpenAPI 3.1 document), `/health`,
//!   `/ready`, `/metrics`.
//! - [`copy`]: binary `COPY` encoding.
//! - [`timescale`]: the TimescaleDB layout, used when the extension exists.
//!
//! Billing reads only the versioned SQL contract (`metering.readings_v1`,
//! `metering.period_reads_v1`), documented in `ingest/README.md`.
//! This crate must never acknowledge a message before its readings commit.

pub mod budget;
pub mod config;
pub mod consumer;
pub mod copy;
pub mod dashboard;
pub mod db;
pub mod http;
pub mod registry;
pub mod registry_api;
pub mod timescale;
pub mod vee;
pub mod writer;

pub use config::{BatchConfig, IngestConfig, LimitsConfig, MqttConfig, MqttProtocol};
pub use db::migrate;

use sqlx::postgres::PgPoolOptions;
use sqlx::PgPool;
use std::net::SocketAddr;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;
use waterworks_service::auth::ApiTokens;

/// How often partitions ahead are created and expired ones dropped.
pub const MAINTENANCE_INTERVAL_S: u64 = 3600;
/// Day partitions created ahead of today (UTC).
pub const PARTITION_DAYS_AHEAD: i64 = 2;
/// Longest wait for a pooled connection.
pub const DB_ACQUIRE_TIMEOUT_S: u64 = 10;

#[derive(Debug, thiserror::Error)]
pub enum IngestError {
    #[error("configuration: {0}")]
    Config(String),
    #[error("database: {0}")]
    Db(#[from] sqlx::Error),
    #[error("migration: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error(transparent)]
    Schema(#[from] waterworks_service::db::SchemaError),
    #[error("http: {0}")]
    Io(#[from] std::io::Error),
    #[error("tokens: {0}")]
    Tokens(#[from] waterworks_service::auth::TokenError),
}

impl IngestError {
    /// Whether retrying the same work later may succeed (connection lost,
    /// server restarting, serialization or deadlock).
    pub fn is_transient(&self) -> bool {
        match self {
            IngestError::Db(e) => match e {
                sqlx::Error::Io(_)
                | sqlx::Error::PoolTimedOut
                | sqlx::Error::PoolClosed
                | sqlx::Error::WorkerCrashed
                | sqlx::Error::Protocol(_)
                | sqlx::Error::Tls(_) => true,
                sqlx::Error::Database(d) => d.code().is_some_and(|c| {
                    // 08 connection, 40 rollback (deadlock, serialization),
                    // 53 resources, 55P03 lock timeout, 57 operator intervention.
                    ["08", "40", "53", "57"].iter().any(|p| c.starts_with(p)) || c == "55P03"
                }),
                _ => false,
            },
            IngestError::Io(_) => true,
            _ => false,
        }
    }
}

/// A built ingest replica: connected to the database, migrated, HTTP bound.
/// The broker connection is made by [`Ingest::run_until_stopped`].
pub struct Ingest {
    config: IngestConfig,
    shared: Arc<consumer::Shared>,
    listener: tokio::net::TcpListener,
    http_addr: SocketAddr,
    tokens: Arc<ApiTokens>,
}

impl Ingest {
    /// Connects to PostgreSQL, applies the migrations (`migrate_on_start`)
    /// or checks that they are applied, binds the HTTP listener.
    pub async fn build(config: IngestConfig) -> Result<Ingest, IngestError> {
        consumer::check_mqtt(&config.mqtt)?;
        check_limits(&config.limits)?;
        let tokens = Arc::new(ApiTokens::new(&config.tokens)?);
        let pool = PgPoolOptions::new()
            .max_connections(config.max_db_connections.max(2))
            .acquire_timeout(Duration::from_secs(DB_ACQUIRE_TIMEOUT_S))
            .connect(config.database_url.expose())
            .await?;
        if config.migrate_on_start {
            migrate(&pool).await?;
        } else {
            db::check(&pool).await?;
        }
        let api_pool = api_pool(&config).await?;
        let listener = tokio::net::TcpListener::bind(config.http_listen).await?;
        let http_addr = listener.local_addr()?;
        let shared = Arc::new(consumer::Shared {
            pool,
            api_pool,
            inflight: budget::ByteBudget::new(config.limits.max_inflight_bytes),
            partitions: db::Partitions::default(),
            broker_connected: AtomicBool::new(false),
        });
        Ok(Ingest {
            config,
            shared,
            listener,
            http_addr,
            tokens,
        })
    }

    pub fn http_addr(&self) -> SocketAddr {
        self.http_addr
    }

    pub fn pool(&self) -> PgPool {
        self.shared.pool.clone()
    }

    /// The in-flight byte budget (its gauge and peak), for tests and probes.
    pub fn inflight(&self) -> budget::ByteBudget {
        self.shared.inflight.clone()
    }

    /// Whether the broker has acknowledged every subscription of the current
    /// connection (false while disconnected): what `/ready` says of the
    /// broker. A first session gets only what is published after this.
    pub fn broker_ready(&self) -> impl Fn() -> bool + Send + Sync + 'static {
        let shared = self.shared.clone();
        move || {
            shared
                .broker_connected
                .load(std::sync::atomic::Ordering::Relaxed)
        }
    }

    /// Consumes, stores and serves until `shutdown`; then drains: the batch
    /// being written is committed and acknowledged, HTTP requests finish.
    pub async fn run_until_stopped(self, shutdown: CancellationToken) -> Result<(), IngestError> {
        let Ingest {
            config,
            shared,
            listener,
            tokens,
            ..
        } = self;
        let router = http::router(
            shared.clone(),
            tokens,
            &config.limits,
            waterworks_service::limits::Limits::new(config.http_limits.clone()),
        );
        let http = tokio::spawn(waterworks_service::serve(
            listener,
            router,
            shutdown.clone(),
        ));
        let maintenance = tokio::spawn(maintain(
            shared.clone(),
            config.retention_days,
            shutdown.clone(),
        ));
        tokio::spawn(dashboard::sample(shared.clone(), shutdown.clone()));
        tokio::spawn(sweep_quarantine(
            shared.clone(),
            config.limits.clone(),
            shutdown.clone(),
        ));
        let result = consumer::run(config, shared, shutdown.clone()).await;
        shutdown.cancel();
        let _ = maintenance.await;
        match http.await {
            Ok(Err(e)) => tracing::error!(error = %e, "http server failed"),
            Err(e) => tracing::error!(error = %e, "http task failed"),
            Ok(Ok(())) => {}
        }
        result
    }
}

/// Builds and runs one replica until `shutdown`.
pub async fn run(config: IngestConfig, shutdown: CancellationToken) -> Result<(), IngestError> {
    Ingest::build(config)
        .await?
        .run_until_stopped(shutdown)
        .await
}

/// The largest message ingest accepts must fit the in-flight budget.
fn check_limits(l: &LimitsConfig) -> Result<(), IngestError> {
    let min = waterworks_wire::reading::MAX_PAYLOAD_BYTES + 4096;
    if l.max_inflight_bytes < min {
        return Err(IngestError::Config(format!(
            "limits.max_inflight_bytes must be at least {min} (the largest message)"
        )));
    }
    if l.api_max_concurrent_requests == 0 || l.api_db_connections == 0 {
        return Err(IngestError::Config(
            "limits.api_max_concurrent_requests and limits.api_db_connections must be at least 1"
                .into(),
        ));
    }
    Ok(())
}

/// The API's own pool: every connection runs with
/// `limits.api_statement_timeout_ms` as its `statement_timeout`.
async fn api_pool(config: &IngestConfig) -> Result<PgPool, IngestError> {
    use std::str::FromStr;
    let opts =
        sqlx::postgres::PgConnectOptions::from_str(config.database_url.expose())?.options([(
            "statement_timeout",
            config.limits.api_statement_timeout_ms.to_string(),
        )]);
    Ok(PgPoolOptions::new()
        .max_connections(config.limits.api_db_connections)
        .acquire_timeout(Duration::from_secs(DB_ACQUIRE_TIMEOUT_S))
        .connect_lazy_with(opts))
}

/// Deletes expired quarantine rows, a bounded number per pass, every
/// `limits.quarantine_sweep_interval_s`.
async fn sweep_quarantine(
    shared: Arc<consumer::Shared>,
    limits: LimitsConfig,
    shutdown: CancellationToken,
) {
    let every = Duration::from_secs(limits.quarantine_sweep_interval_s.max(1));
    loop {
        match db::sweep_quarantine(
            &shared.pool,
            chrono::Utc::now(),
            limits.quarantine_retention_days,
            limits.quarantine_sweep_max_rows,
        )
        .await
        {
            Ok(0) => {}
            Ok(n) => {
                metrics::counter!("ingest_quarantine_expired_total").increment(n);
                tracing::info!(rows = n, "expired quarantine rows deleted");
            }
            Err(e) => tracing::warn!(error = %e, "quarantine sweep failed"),
        }
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(every) => {}
        }
    }
}

/// Creates partitions ahead, drops expired ones and compacts closed days, at
/// start and hourly.
async fn maintain(shared: Arc<consumer::Shared>, retention_days: u32, shutdown: CancellationToken) {
    loop {
        let today = chrono::Utc::now().date_naive();
        let ahead: Vec<_> = (0..=PARTITION_DAYS_AHEAD)
            .map(|d| today + chrono::Duration::days(d))
            .collect();
        if let Err(e) = shared.partitions.ensure(&shared.pool, &ahead).await {
            tracing::warn!(error = %e, "creating partitions ahead failed");
        }
        if let Err(e) = db::drop_expired_partitions(&shared.pool, today, retention_days).await {
            tracing::warn!(error = %e, "dropping expired partitions failed");
        }
        if let Err(e) = db::compact_closed_days(&shared.pool, today).await {
            tracing::warn!(error = %e, "compacting closed days failed");
        }
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(Duration::from_secs(MAINTENANCE_INTERVAL_S)) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_inflight_budget_must_hold_the_largest_message() {
        let mut l = LimitsConfig::default();
        assert!(check_limits(&l).is_ok());
        l.max_inflight_bytes = waterworks_wire::reading::MAX_PAYLOAD_BYTES;
        assert!(matches!(check_limits(&l), Err(IngestError::Config(_))));
        l.max_inflight_bytes = 128 << 20;
        l.api_max_concurrent_requests = 0;
        assert!(matches!(check_limits(&l), Err(IngestError::Config(_))));
    }
}
