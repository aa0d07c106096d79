//! The meter registry: which meters exist, which gateway speaks for each,
//! their device profile and maximum flow (for the spike rule).

use crate::IngestError;
use sqlx::PgPool;
use waterworks_wire::{GatewayId, MeterId};

#[derive(Debug, Clone, PartialEq)]
pub struct MeterRegistration {
    pub meter_id: MeterId,
    pub gateway_id: GatewayId,
    pub profile_id: String,
    /// The meter's maximum flow; `None` switches the spike rule off for it.
    pub max_flow_lph: Option<f64>,
}

/// Most meters registered per statement (larger slices are chunked).
pub const REGISTER_CHUNK: usize = 10_000;

/// Inserts or updates registrations; the ingest state of a known meter
/// (its newest reading) is kept. One transaction: it first takes the lock of
/// every gateway involved (the meters' current ones and the new ones, as the
/// writers do: `writer::lock_gateways`), so a meter never moves between
/// gateways while a writer of either is deciding about its readings.
pub async fn register_meters(
    pool: &PgPool,
    meters: &[MeterRegistration],
) -> Result<(), IngestError> {
    let mut sorted: Vec<&MeterRegistration> = meters.iter().collect();
    // Row locks are taken in meter order everywhere (no deadlock with ingest).
    sorted.sort_by(|a, b| a.meter_id.cmp(&b.meter_id));
    sorted.dedup_by(|a, b| a.meter_id == b.meter_id);
    if sorted.is_empty() {
        return Ok(());
    }
    let mut tx = pool.begin().await?;
    let all_ids: Vec<&str> = sorted.iter().map(|m| m.meter_id.as_str()).collect();
    let current: Vec<String> = sqlx::query_scalar(
        "SELECT DISTINCT gateway_id FROM metering.meters WHERE meter_id = ANY($1)",
    )
    .bind(&all_ids)
    .fetch_all(&mut *tx)
    .await?;
    let gateways: Vec<&str> = sorted
        .iter()
        .map(|m| m.gateway_id.as_str())
        .chain(current.iter().map(String::as_str))
        .collect::<std::collections::BTreeSet<_>>()
        .into_iter()
        .collect();
    crate::writer::lock_gateways(&mut tx, &gateways).await?;
    for chunk in sorted.chunks(REGISTER_CHUNK) {
        let ids: Vec<&str> = chunk.iter().map(|m| m.meter_id.as_str()).collect();
        let gws: Vec<&str> = chunk.iter().map(|m| m.gateway_id.as_str()).collect();
        let profiles: Vec<&str> = chunk.iter().map(|m| m.profile_id.as_str()).collect();
        let flows: Vec<Option<f64>> = chunk.iter().map(|m| m.max_flow_lph).collect();
        sqlx::query(
            "INSERT INTO metering.meters (meter_id, gateway_id, profile_id, max_flow_lph)
             SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::float8[])
             ON CONFLICT (meter_id) DO UPDATE SET
                gateway_id = excluded.gateway_id,
                profile_id = excluded.profile_id,
                max_flow_lph = excluded.max_flow_lph,
                updated_at = now()
             WHERE (metering.meters.gateway_id, metering.meters.profile_id, metering.meters.max_flow_lph)
                   IS DISTINCT FROM (excluded.gateway_id, excluded.profile_id, excluded.max_flow_lph)",
        )
        .bind(&ids)
        .bind(&gws)
        .bind(&profiles)
        .bind(&flows)
        .execute(&mut *tx)
        .await?;
    }
    tx.commit().await?;
    Ok(())
}
