//! The meter registry: which meters exist, which gateway speaks for each,
//! their device profile and maximum flow (for the spike rule), the catalogue
//! of device profiles ingest knows, and the audit of every change.
//!
//! One path writes the registry ([`register`]): the HTTP batch
//! (`PUT /api/v1/meters`, [`crate::registry_api`]) and the in-process
//! [`register_meters`] both go through it. It must never move a meter between
//! gateways without holding both gateways' locks, and never touch a meter's
//! high-water mark (`last_ts`, `last_volume_l`): readings stored under the
//! old gateway stay behind the mark, so the new gateway's writer still finds
//! every duplicate (see [`crate::writer`]).

use crate::IngestError;
use sqlx::{PgPool, Postgres, Transaction};
use std::collections::{BTreeSet, HashMap};
use std::sync::OnceLock;
use waterworks_wire::profile::{DeviceProfile, SHIPPED_PROFILES};
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

/// Serializes registry writers (`pg_advisory_xact_lock(key)`, the one-key
/// space, apart from the gateway locks' two-key space): a meter's current
/// gateway, read under it, cannot change before its lock is taken.
pub const REGISTRY_LOCK_KEY: i64 = 0x5757_494E_0003;

/// A device profile as the registry knows it.
#[derive(Debug, Clone, PartialEq)]
pub struct KnownProfile {
    pub id: String,
    /// The profile's Q4, litres per hour: a registration without
    /// `max_flow_lph` takes it.
    pub max_flow_lph: Option<f64>,
}

/// The device profiles ingest knows, by id: those shipped with Waterworks.
/// A meter of another model needs its profile added to `fixtures/profiles/`
/// (the gateway reads it with the same file) before it can be registered
/// over HTTP.
pub fn known_profiles() -> &'static HashMap<String, KnownProfile> {
    static KNOWN: OnceLock<HashMap<String, KnownProfile>> = OnceLock::new();
    KNOWN.get_or_init(|| {
        SHIPPED_PROFILES
            .iter()
            .map(|(path, text)| {
                // The shipped files are checked by a unit test below.
                let p = DeviceProfile::from_toml(text, path).expect("shipped profile parses");
                (
                    p.profile.id.clone(),
                    KnownProfile {
                        id: p.profile.id,
                        max_flow_lph: p.profile.max_flow_lph,
                    },
                )
            })
            .collect()
    })
}

/// Who is changing the registry, as the audit records it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Actor {
    /// The token's name (never the token), or `library`.
    pub name: String,
    pub role: String,
}

impl Actor {
    /// In-process registration ([`register_meters`]: the demo, tests).
    pub fn library() -> Actor {
        Actor {
            name: "library".into(),
            role: "library".into(),
        }
    }
}

/// What a registration did (or, on a dry run, would do) to one meter.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Outcome {
    Created,
    Changed,
    Unchanged,
}

/// One meter's outcome, with the gateway it left when it moved.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct MeterOutcome {
    pub meter_id: String,
    pub outcome: Outcome,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub moved_from_gateway_id: Option<String>,
}

/// What a batch did: counts, and each meter's outcome in the batch's order.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize)]
pub struct RegisterReport {
    pub dry_run: bool,
    pub created: u64,
    pub changed: u64,
    /// Of `changed`, how many moved to another gateway.
    pub moved: u64,
    pub unchanged: u64,
    pub meters: Vec<MeterOutcome>,
}

/// The registry row of a meter: `(gateway_id, profile_id, max_flow_lph)`.
type Current = (String, String, Option<f64>);

/// Inserts or updates registrations (duplicates of a meter: the first
/// wins); the ingest state of a known meter (its newest reading) is kept.
pub async fn register_meters(
    pool: &PgPool,
    meters: &[MeterRegistration],
) -> Result<(), IngestError> {
    let mut seen = std::collections::HashSet::new();
    let unique: Vec<MeterRegistration> = meters
        .iter()
        .filter(|m| seen.insert(m.meter_id.clone()))
        .cloned()
        .collect();
    register(pool, &unique, &Actor::library(), false).await?;
    Ok(())
}

/// Applies a batch of registrations (each meter at most once) in one
/// transaction and reports what changed; `dry_run` reports the same and
/// writes nothing. Under the registry lock it reads the meters' current
/// rows, then takes the lock of every gateway involved (the current ones and
/// the new ones, in the writers' order: [`crate::writer::lock_gateways`]),
/// so a meter never moves while a writer of either gateway is deciding about
/// its readings. Created and changed meters get an audit row each in the
/// same transaction; unchanged ones are not written at all.
pub async fn register(
    pool: &PgPool,
    meters: &[MeterRegistration],
    actor: &Actor,
    dry_run: bool,
) -> Result<RegisterReport, IngestError> {
    debug_assert!(
        meters
            .iter()
            .map(|m| &m.meter_id)
            .collect::<BTreeSet<_>>()
            .len()
            == meters.len(),
        "one registration per meter"
    );
    let mut report = RegisterReport {
        dry_run,
        ..Default::default()
    };
    if meters.is_empty() {
        return Ok(report);
    }
    let mut tx = pool.begin().await?;
    if !dry_run {
        sqlx::query("SELECT pg_advisory_xact_lock($1)")
            .bind(REGISTRY_LOCK_KEY)
            .execute(&mut *tx)
            .await?;
    }
    let current = read_current(&mut tx, meters).await?;
    let mut created: Vec<&MeterRegistration> = Vec::new();
    let mut changed: Vec<(&MeterRegistration, &Current)> = Vec::new();
    for m in meters {
        let (outcome, moved) = match current.get(m.meter_id.as_str()) {
            None => {
                created.push(m);
                (Outcome::Created, None)
            }
            Some(c)
                if c.0 == m.gateway_id.as_str() && c.1 == m.profile_id && c.2 == m.max_flow_lph =>
            {
                (Outcome::Unchanged, None)
            }
            Some(c) => {
                changed.push((m, c));
                let moved = (c.0 != m.gateway_id.as_str()).then(|| c.0.clone());
                (Outcome::Changed, moved)
            }
        };
        match outcome {
            Outcome::Created => report.created += 1,
            Outcome::Changed => report.changed += 1,
            Outcome::Unchanged => report.unchanged += 1,
        }
        report.moved += u64::from(moved.is_some());
        report.meters.push(MeterOutcome {
            meter_id: m.meter_id.to_string(),
            outcome,
            moved_from_gateway_id: moved,
        });
    }
    if dry_run || (created.is_empty() && changed.is_empty()) {
        tx.rollback().await?;
        return Ok(report);
    }
    let gateways: Vec<&str> = created
        .iter()
        .map(|m| m.gateway_id.as_str())
        .chain(
            changed
                .iter()
                .flat_map(|(m, c)| [m.gateway_id.as_str(), c.0.as_str()]),
        )
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    crate::writer::lock_gateways(&mut tx, &gateways).await?;
    // Row locks are taken in meter order everywhere (no deadlock with ingest).
    created.sort_by(|a, b| a.meter_id.cmp(&b.meter_id));
    changed.sort_by(|a, b| a.0.meter_id.cmp(&b.0.meter_id));
    for chunk in created.chunks(REGISTER_CHUNK) {
        insert_created(&mut tx, chunk, actor).await?;
    }
    for chunk in changed.chunks(REGISTER_CHUNK) {
        update_changed(&mut tx, chunk, actor).await?;
    }
    tx.commit().await?;
    metrics::counter!("ingest_registry_meters_total", "outcome" => "created")
        .increment(report.created);
    metrics::counter!("ingest_registry_meters_total", "outcome" => "changed")
        .increment(report.changed);
    Ok(report)
}

async fn read_current(
    tx: &mut Transaction<'_, Postgres>,
    meters: &[MeterRegistration],
) -> Result<HashMap<String, Current>, IngestError> {
    let mut out = HashMap::with_capacity(meters.len());
    for chunk in meters.chunks(REGISTER_CHUNK) {
        let ids: Vec<&str> = chunk.iter().map(|m| m.meter_id.as_str()).collect();
        let rows: Vec<(String, String, String, Option<f64>)> = sqlx::query_as(
            "SELECT meter_id, gateway_id, profile_id, max_flow_lph
               FROM metering.meters WHERE meter_id = ANY($1)",
        )
        .bind(&ids)
        .fetch_all(&mut **tx)
        .await?;
        out.extend(rows.into_iter().map(|(m, g, p, f)| (m, (g, p, f))));
    }
    Ok(out)
}

/// New meters and their audit rows, in one statement.
async fn insert_created(
    tx: &mut Transaction<'_, Postgres>,
    chunk: &[&MeterRegistration],
    actor: &Actor,
) -> Result<(), IngestError> {
    let ids: Vec<&str> = chunk.iter().map(|m| m.meter_id.as_str()).collect();
    let gws: Vec<&str> = chunk.iter().map(|m| m.gateway_id.as_str()).collect();
    let profiles: Vec<&str> = chunk.iter().map(|m| m.profile_id.as_str()).collect();
    let flows: Vec<Option<f64>> = chunk.iter().map(|m| m.max_flow_lph).collect();
    sqlx::query(
        "WITH ins AS (
            INSERT INTO metering.meters (meter_id, gateway_id, profile_id, max_flow_lph)
            SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::float8[])
            RETURNING meter_id, gateway_id, profile_id, max_flow_lph)
         INSERT INTO metering.registry_audit (actor, actor_role, meter_id, action, before, after)
         SELECT $5, $6, meter_id, 'create', NULL,
                jsonb_build_object('gateway_id', gateway_id, 'profile_id', profile_id,
                                   'max_flow_lph', max_flow_lph)
           FROM ins ORDER BY meter_id",
    )
    .bind(&ids)
    .bind(&gws)
    .bind(&profiles)
    .bind(&flows)
    .bind(&actor.name)
    .bind(&actor.role)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// Changed meters (gateway, profile or maximum flow; never the high-water
/// mark) and their audit rows, in one statement.
async fn update_changed(
    tx: &mut Transaction<'_, Postgres>,
    chunk: &[(&MeterRegistration, &Current)],
    actor: &Actor,
) -> Result<(), IngestError> {
    let ids: Vec<&str> = chunk.iter().map(|(m, _)| m.meter_id.as_str()).collect();
    let gws: Vec<&str> = chunk.iter().map(|(m, _)| m.gateway_id.as_str()).collect();
    let profiles: Vec<&str> = chunk.iter().map(|(m, _)| m.profile_id.as_str()).collect();
    let flows: Vec<Option<f64>> = chunk.iter().map(|(m, _)| m.max_flow_lph).collect();
    let old_gws: Vec<&str> = chunk.iter().map(|(_, c)| c.0.as_str()).collect();
    let old_profiles: Vec<&str> = chunk.iter().map(|(_, c)| c.1.as_str()).collect();
    let old_flows: Vec<Option<f64>> = chunk.iter().map(|(_, c)| c.2).collect();
    sqlx::query(
        "WITH u AS (
            SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::float8[],
                                 $5::text[], $6::text[], $7::float8[])
                AS u(meter_id, gw, profile, flow, old_gw, old_profile, old_flow)),
         upd AS (
            UPDATE metering.meters m
               SET gateway_id = u.gw, profile_id = u.profile, max_flow_lph = u.flow,
                   updated_at = now()
              FROM u WHERE m.meter_id = u.meter_id
            RETURNING m.meter_id)
         INSERT INTO metering.registry_audit (actor, actor_role, meter_id, action, before, after)
         SELECT $8, $9, u.meter_id, 'change',
                jsonb_build_object('gateway_id', u.old_gw, 'profile_id', u.old_profile,
                                   'max_flow_lph', u.old_flow),
                jsonb_build_object('gateway_id', u.gw, 'profile_id', u.profile,
                                   'max_flow_lph', u.flow)
           FROM u JOIN upd ON upd.meter_id = u.meter_id ORDER BY u.meter_id",
    )
    .bind(&ids)
    .bind(&gws)
    .bind(&profiles)
    .bind(&flows)
    .bind(&old_gws)
    .bind(&old_profiles)
    .bind(&old_flows)
    .bind(&actor.name)
    .bind(&actor.role)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_shipped_profile_is_known_with_its_q4() {
        let known = known_profiles();
        assert_eq!(known.len(), SHIPPED_PROFILES.len());
        assert_eq!(
            known["waterworks-sim-v1"].max_flow_lph,
            Some(3125.0),
            "the simulated DN15 meter's Q4"
        );
        assert!(known.contains_key("tuf-2000m"));
    }
}
