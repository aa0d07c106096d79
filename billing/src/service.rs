//! The billing service's lifecycle: build (schema checked or migrated,
//! tariff loaded, port bound), serve until shutdown. Configuration is in
//! [`crate::config`], the HTTP API in [`crate::http`].

pub use crate::config::BillingConfig;
use crate::http::{router, AppState};
use crate::tariff::TariffBook;
use crate::BillingError;
use axum::Router;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::PgPool;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;
use waterworks_service::auth::ApiTokens;
use waterworks_service::limits::Limits;

/// Bills returned per page at most.
pub const MAX_PAGE: i64 = waterworks_api::billing::MAX_PAGE;

/// A built service: schema checked (or migrated), tariff loaded, port bound.
pub struct Billing {
    listener: tokio::net::TcpListener,
    addr: SocketAddr,
    router: Router,
    pool: PgPool,
}

impl Billing {
    pub async fn build(config: BillingConfig) -> Result<Billing, BillingError> {
        let book = TariffBook::load(&config.tariff_file)?;
        let tokens = Arc::new(ApiTokens::new(&config.tokens)?);
        let connect: PgConnectOptions = config.database_url.expose().parse()?;
        // Migrations and the catch-up posting may take long on a big
        // database: their own connection, without the API's statement timeout.
        {
            let setup = PgPoolOptions::new()
                .max_connections(1)
                .acquire_timeout(Duration::from_secs(10))
                .connect_with(connect.clone())
                .await?;
            if config.migrate_on_start {
                crate::migrate(&setup).await?;
            } else {
                crate::check_schema(&setup).await?;
            }
            // Bills issued before the ledger existed get their entries now.
            let posted = crate::ledger::store::post_unposted_bills(&setup).await?;
            if posted > 0 {
                tracing::warn!(posted, "posted bills that had no ledger entry");
            }
            setup.close().await;
        }
        let statement_timeout = format!("{}ms", config.statement_timeout_ms.max(1));
        let pool = PgPoolOptions::new()
            .max_connections(config.db_pool_max.max(2))
            .acquire_timeout(Duration::from_secs(10))
            .connect_with(connect.options([("statement_timeout", statement_timeout.as_str())]))
            .await?;
        let listener = tokio::net::TcpListener::bind(config.http_listen).await?;
        let addr = listener.local_addr()?;
        let state = AppState {
            pool: pool.clone(),
            book: Arc::new(book),
            policy: config.hold_policy.clone(),
            max_page_bytes: config.max_page_bytes.max(1),
        };
        let router = router(state, tokens, Limits::new(config.http_limits.clone()));
        Ok(Billing {
            listener,
            addr,
            router,
            pool,
        })
    }

    pub fn http_addr(&self) -> SocketAddr {
        self.addr
    }

    pub async fn run_until_stopped(self, shutdown: CancellationToken) -> Result<(), BillingError> {
        tracing::info!(addr = %self.addr, "billing serving");
        waterworks_service::serve(self.listener, self.router, shutdown).await?;
        self.pool.close().await;
        Ok(())
    }
}

/// Builds and serves until `shutdown` is cancelled.
pub async fn run(config: BillingConfig, shutdown: CancellationToken) -> Result<(), BillingError> {
    Billing::build(config)
        .await?
        .run_until_stopped(shutdown)
        .await
}
