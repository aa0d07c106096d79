//! `waterworks check master`: whether billing's master data and ingest's
//! device registry agree (the four lists of [`MasterCheck`]), read from
//! the database holding both schemas (never writing either), as the owner
//! role or any role that may read them. The console makes the same check
//! over the services' HTTP APIs ([`waterworks_import::check::over_http`]).

use sqlx::PgPool;
pub use waterworks_import::check::{Finding, MasterCheck};

async fn findings(pool: &PgPool, sql: &str, days: i64) -> anyhow::Result<Vec<Finding>> {
    let mut q = sqlx::query_as(sql);
    if sql.contains("$1") {
        q = q.bind(days);
    }
    let rows: Vec<(String, String)> = q.fetch_all(pool).await?;
    Ok(rows
        .into_iter()
        .map(|(key, detail)| Finding { key, detail })
        .collect())
}

/// Runs the check over `pool` (a database holding both schemas).
pub async fn check_master(pool: &PgPool, days: i64) -> anyhow::Result<MasterCheck> {
    Ok(MasterCheck {
        installed_unknown_to_ingest: findings(
            pool,
            "SELECT i.meter_id, 'at premises ' || i.account_no \
               FROM billing.meter_installations i \
              WHERE i.removed_at IS NULL AND i.installed_at <= now() \
                AND NOT EXISTS (SELECT 1 FROM metering.meters m WHERE m.meter_id = i.meter_id) \
              ORDER BY i.meter_id",
            days,
        )
        .await?,
        registered_not_installed: findings(
            pool,
            "SELECT m.meter_id, 'under gateway ' || m.gateway_id \
               FROM metering.meters m \
              WHERE NOT EXISTS (SELECT 1 FROM billing.meter_installations i \
                     WHERE i.meter_id = m.meter_id AND i.removed_at IS NULL \
                       AND i.installed_at <= now()) \
              ORDER BY m.meter_id",
            days,
        )
        .await?,
        other_gateway: findings(
            pool,
            "SELECT meter_id, string_agg(detail, '; ' ORDER BY detail) FROM ( \
                 SELECT b.meter_id, 'billing says gateway ' || b.gateway_id || \
                        ', ingest ' || m.gateway_id AS detail \
                   FROM billing.meters b JOIN metering.meters m USING (meter_id) \
                  WHERE b.gateway_id <> m.gateway_id \
                 UNION \
                 SELECT q.meter_id, 'readings sent by gateway ' || q.gateway_id || \
                        ' (quarantined wrong_gateway)' \
                   FROM metering.quarantine q \
                  WHERE q.reason = 'wrong_gateway' AND q.meter_id IS NOT NULL \
                    AND q.received_at > now() - make_interval(days => $1::int) \
             ) f GROUP BY meter_id ORDER BY meter_id",
            days,
        )
        .await?,
        premises_without_meter: findings(
            pool,
            "SELECT a.account_no, 'customer ' || a.customer FROM billing.accounts a \
              WHERE NOT EXISTS (SELECT 1 FROM billing.meter_installations i \
                     WHERE i.account_no = a.account_no AND i.removed_at IS NULL \
                       AND i.installed_at <= now()) \
              ORDER BY a.account_no",
            days,
        )
        .await?,
        partial: None,
    })
}
