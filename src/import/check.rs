//! `waterworks check master`: whether billing's master data and ingest's
//! device registry agree. Reads both schemas (never writes either), as the
//! owner role or any role that may read them:
//!
//! - meters installed now in billing that ingest does not know (their
//!   readings are quarantined `unknown_meter`);
//! - meters ingest knows that are installed nowhere now (their readings are
//!   stored but billed to nobody);
//! - meters reporting under another gateway: billing's record and ingest's
//!   registry disagree, or ingest quarantined a reading of the meter as
//!   `wrong_gateway` in the last `days` days;
//! - premises without a meter installed now (they cannot be billed).

use sqlx::PgPool;
use std::fmt::Write as _;

/// One finding: the meter or premises and what is wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    pub key: String,
    pub detail: String,
}

/// The four lists of the check.
#[derive(Debug, Clone, Default)]
pub struct MasterCheck {
    pub installed_unknown_to_ingest: Vec<Finding>,
    pub registered_not_installed: Vec<Finding>,
    pub other_gateway: Vec<Finding>,
    pub premises_without_meter: Vec<Finding>,
}

impl MasterCheck {
    pub fn is_clean(&self) -> bool {
        self.installed_unknown_to_ingest.is_empty()
            && self.registered_not_installed.is_empty()
            && self.other_gateway.is_empty()
            && self.premises_without_meter.is_empty()
    }

    /// The report; each list shows its first `show` findings.
    pub fn render(&self, show: usize) -> String {
        let mut s = String::new();
        for (title, list) in [
            (
                "meters installed in billing, unknown to ingest",
                &self.installed_unknown_to_ingest,
            ),
            (
                "meters registered with ingest, installed nowhere",
                &self.registered_not_installed,
            ),
            (
                "meters reporting under another gateway",
                &self.other_gateway,
            ),
            ("premises without a meter", &self.premises_without_meter),
        ] {
            let _ = writeln!(s, "{title}: {}", list.len());
            for f in list.iter().take(show) {
                let _ = writeln!(s, "  {} {}", f.key, f.detail);
            }
            if list.len() > show {
                let _ = writeln!(s, "  ... and {} more", list.len() - show);
            }
        }
        if self.is_clean() {
            let _ = writeln!(s, "billing and ingest agree");
        }
        s
    }
}

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
    })
}
