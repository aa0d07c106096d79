//! (Long because it is one transaction's steps in order, lock, read state, late context, COPY, merge, sequences, gaps, quarantine, each taking the same open transaction and batch state; its tests are ingest/tests/locks.rs, replay.rs and quarantine.rs.)
//!
//! One batch, one transaction: lock the batch's sending gateways (in gateway
//! order), read their meters' high-water marks, run the VEE rules, look up
//! only the late readings in the store, `COPY` the accepted rows, merge daily
//! usage, move the high-water marks, record gateways, gaps and quarantine,
//! commit.
//!
//! Exactly-once without a unique index: every stored reading of a meter has
//! `ts <= meters.last_ts`, and a meter's readings, mark and daily rows are
//! only written by a transaction holding the lock of the meter's gateway
//! ([`lock_gateways`]; a gateway speaks only for its own meters: a
//! reading sent by another gateway is quarantined, never stored; the
//! registry takes the old and the new gateway's locks to move a meter). A
//! reading newer than `last_ts` cannot be stored yet; one at or before it is
//! checked against the store. So the readings table needs no `(meter_id, ts)`
//! index (see README: COPY rate), and a batch takes a handful of gateway
//! locks instead of one row lock per meter.

use crate::db::Partitions;
use crate::vee::{
    self, Candidate, Decoded, MeterState, MsgMeta, Quarantined, Row, SeqOp, SeqState, Window,
};
use crate::IngestError;
use chrono::{DateTime, NaiveDate, Utc};
use sqlx::{PgPool, Postgres, Row as _, Transaction};
use std::borrow::Cow;
use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};

/// A batch ready to write: the messages' metadata and their decoded content.
#[derive(Debug, Default)]
pub struct BatchInput {
    pub metas: Vec<MsgMeta>,
    pub decoded: Vec<Decoded>,
    /// Gateway status messages: `(gateway_id, "online" | "offline", received_at)`.
    pub statuses: Vec<(String, String, DateTime<Utc>)>,
}

impl BatchInput {
    pub fn readings(&self) -> usize {
        self.decoded.iter().map(|d| d.readings.len()).sum()
    }
}

/// What one committed batch did.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct BatchOutcome {
    pub stored: u64,
    pub backfilled: u64,
    pub duplicates: u64,
    pub quarantined: BTreeMap<&'static str, u64>,
    pub seq_gaps: u64,
    pub seq_resets: u64,
    /// Per sending gateway, what is committed of its batches once this
    /// transaction commits (its sequence state under the gateway's lock):
    /// published by the consumer on `waterworks/v1/{gateway_id}/ack` only
    /// after the commit. It covers exactly `1..=last_batch_seq` minus the open
    /// `batch_seq` gaps, so batches committed out of order by two replicas
    /// never acknowledge a batch between them that is not committed.
    pub acks: Vec<(String, waterworks_wire::topic::Ack)>,
}

pub async fn write_batch(
    pool: &PgPool,
    partitions: &Partitions,
    input: &BatchInput,
    window: Window,
) -> Result<BatchOutcome, IngestError> {
    let candidates: Vec<&Candidate> = input
        .decoded
        .iter()
        .flat_map(|d| d.readings.iter())
        .collect();
    let mut quarantine: Vec<Quarantined> = input
        .decoded
        .iter()
        .flat_map(|d| d.quarantine.iter().cloned())
        .collect();

    let (oldest, newest) = (window.oldest(), window.newest());
    let days: BTreeSet<NaiveDate> = candidates
        .iter()
        .map(|c| c.reading.ts)
        .filter(|ts| *ts >= oldest && *ts <= newest)
        .map(|ts| ts.date_naive())
        .collect();
    let mut clock = PhaseClock::new();
    partitions
        .ensure(pool, &days.into_iter().collect::<Vec<_>>())
        .await?;
    clock.mark("partitions");

    let mut tx = pool.begin().await?;
    let senders: Vec<&str> = input
        .decoded
        .iter()
        .filter_map(|d| d.header.as_ref().map(|h| h.0.as_str()))
        .chain(input.statuses.iter().map(|s| s.0.as_str()))
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    lock_gateways(&mut tx, &senders).await?;
    clock.mark("lock");
    let meter_ids: Vec<&str> = candidates
        .iter()
        .map(|c| c.reading.meter_id.as_str())
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    let headers: Vec<&str> = input
        .decoded
        .iter()
        .filter_map(|d| d.header.as_ref().map(|h| h.0.as_str()))
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    let (meters, gateway_states) = read_state(&mut tx, &meter_ids, &headers).await?;
    clock.mark("state");
    let gateways: Vec<Option<String>> = input
        .metas
        .iter()
        .zip(&input.decoded)
        .map(|(m, d)| d.header.as_ref().and_then(|_| m.gateway_id.clone()))
        .collect();

    let v = vee::validate(candidates, &gateways, &meters, window);
    clock.mark("validate");
    let mut out = BatchOutcome {
        duplicates: v.duplicates,
        ..Default::default()
    };
    quarantine.extend(v.quarantine);
    let mut rows: Vec<Row> = v.fresh;
    out.stored = rows.len() as u64;
    let mut backfill: Vec<(String, DateTime<Utc>)> = Vec::new();
    // A replay must change nothing: readings already quarantined with the
    // same volume are duplicates, neither stored nor quarantined again.
    let mut keys: Vec<(String, DateTime<Utc>)> = quarantine
        .iter()
        .filter_map(|q| vee::quarantine_key(q).map(|k| (k.0, k.1)))
        .chain(
            v.late
                .iter()
                .map(|c| (c.reading.meter_id.to_string(), c.reading.ts)),
        )
        .collect();
    keys.sort();
    keys.dedup();
    let quarantined = already_quarantined(&mut tx, &keys).await?;
    if !quarantined.is_empty() {
        let before = quarantine.len();
        quarantine.retain(|q| vee::quarantine_key(q).is_none_or(|k| !quarantined.contains(&k)));
        out.duplicates += (before - quarantine.len()) as u64;
    }
    if !v.late.is_empty() {
        let mut ctx = late_context(&mut tx, &v.late).await?;
        ctx.quarantined = quarantined;
        let r = vee::resolve_late_checked(v.late, &ctx, &meters);
        out.duplicates += r.duplicates;
        out.backfilled = r.backfill.len() as u64;
        quarantine.extend(r.quarantine);
        backfill = r
            .backfill
            .iter()
            .map(|r| (r.meter_id.clone(), r.ts))
            .collect();
        rows.extend(r.backfill);
        clock.mark("late");
    }

    if !rows.is_empty() {
        // In time order ([`vee::validate`]), as the floor COPY sends them:
        // consecutive rows fall into the same few day/hash partitions,
        // which keeps the server's per-partition insert buffers full (grouped
        // by meter, a large batch touched every sub-partition of every day
        // at once: PostgreSQL spent a fifth more CPU than the floor) and
        // each page's `ts` range narrow for the BRIN index.
        let mut copy = tx.copy_in_raw(crate::copy::COPY_READINGS).await?;
        crate::copy::send(&mut copy, &rows).await?;
        copy.finish().await?;
        clock.mark("copy");
    }
    let (gaps, resets, gateway_rows, acks) =
        record_gateway_seqs(&mut tx, input, &rows, &meters, gateway_states).await?;
    out.acks = acks;
    store_state(&mut tx, &rows, &v.new_last, &gateway_rows).await?;
    clock.mark("state");
    out.seq_gaps = gaps;
    out.seq_resets = resets;
    record_meter_gaps(&mut tx, &v.meter_gaps).await?;
    if !backfill.is_empty() {
        refill_meter_gaps(&mut tx, &backfill).await?;
    }
    for q in &quarantine {
        *out.quarantined.entry(q.reason.as_str()).or_default() += 1;
    }
    insert_quarantine(&mut tx, &input.metas, &quarantine).await?;
    record_statuses(&mut tx, &input.statuses).await?;
    clock.mark("rest");
    tx.commit().await?;
    clock.mark("commit");
    tracing::trace!(rows = rows.len(), phases = ?clock.phases, "batch phases (ms)");
    Ok(out)
}

/// Where a batch's time goes (logged at trace level; see the README's
/// benchmark section).
struct PhaseClock {
    last: std::time::Instant,
    phases: Vec<(&'static str, u32)>,
}

impl PhaseClock {
    fn new() -> Self {
        Self {
            last: std::time::Instant::now(),
            phases: Vec::with_capacity(12),
        }
    }

    fn mark(&mut self, phase: &'static str) {
        let now = std::time::Instant::now();
        let us = now
            .duration_since(self.last)
            .as_micros()
            .min(u32::MAX as u128) as u32;
        self.phases.push((phase, us / 1000));
        self.last = now;
    }
}

/// Namespace of the gateway locks (`pg_advisory_xact_lock(space, key)`;
/// billing's ledger uses another space on the same server).
pub const GATEWAY_LOCK_SPACE: i32 = 0x6777;

/// Takes the transaction-scoped lock of each of these gateways (a hash of
/// its id, in ascending key order, so lockers never deadlock; two gateways
/// sharing a hash only serialize). Every writer storing a meter's readings
/// holds its gateway's lock (see the module doc), and the registry takes the
/// old and the new gateway's to move a meter.
pub async fn lock_gateways(
    tx: &mut Transaction<'_, Postgres>,
    ids: &[&str],
) -> Result<(), IngestError> {
    if ids.is_empty() {
        return Ok(());
    }
    sqlx::query(
        "SELECT count(pg_advisory_xact_lock($1, k)) FROM (
            SELECT DISTINCT hashtext(id) AS k FROM unnest($2::text[]) AS u(id) ORDER BY k) s",
    )
    .bind(GATEWAY_LOCK_SPACE)
    .bind(ids)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// Gateway rows as [`store_state`] writes them: `(gateway_id,
/// last_batch_seq, batches, stored readings, sequence resets)`.
type GatewayRow = (String, Option<i64>, i64, i64, i32);

/// In one round trip: the registry entry and high-water mark of each meter,
/// and each sending gateway's last batch sequence and open sequence gaps. No
/// row lock: the caller holds the locks of the batch's gateways, and
/// readings are only stored for meters of those gateways.
async fn read_state(
    tx: &mut Transaction<'_, Postgres>,
    meter_ids: &[&str],
    gateway_ids: &[&str],
) -> Result<(HashMap<String, MeterState>, BTreeMap<String, SeqState>), IngestError> {
    let mut meters = HashMap::with_capacity(meter_ids.len());
    let mut gateways: BTreeMap<String, SeqState> = BTreeMap::new();
    if meter_ids.is_empty() && gateway_ids.is_empty() {
        return Ok((meters, gateways));
    }
    let rows = sqlx::query(
        "SELECT 'm' AS k, meter_id AS id, gateway_id AS gw, max_flow_lph AS flow,
                last_ts AS ts, last_volume_l AS n1, NULL::int8 AS n2, NULL::int8 AS n3
           FROM metering.meters WHERE meter_id = ANY($1)
         UNION ALL
         SELECT 'g', gateway_id, NULL, NULL, NULL, last_batch_seq, NULL, NULL
           FROM metering.gateways WHERE gateway_id = ANY($2)
         UNION ALL
         SELECT 'o', gateway_id, NULL, NULL, NULL, id, from_seq, to_seq
           FROM metering.gaps
          WHERE kind = 'batch_seq' AND filled_at IS NULL AND gateway_id = ANY($2)",
    )
    .bind(meter_ids)
    .bind(gateway_ids)
    .fetch_all(&mut **tx)
    .await?;
    let mut open = Vec::new();
    for r in rows {
        let kind: &str = r.try_get("k")?;
        let id: String = r.try_get("id")?;
        match kind {
            "m" => {
                let last_ts: Option<DateTime<Utc>> = r.try_get("ts")?;
                let last_vol: Option<i64> = r.try_get("n1")?;
                let gateway_id: Option<String> = r.try_get("gw")?;
                meters.insert(
                    id,
                    MeterState {
                        gateway_id: gateway_id.unwrap_or_default(),
                        max_flow_lph: r.try_get("flow")?,
                        last: last_ts.zip(last_vol),
                    },
                );
            }
            "g" => {
                let last: Option<i64> = r.try_get("n1")?;
                gateways.entry(id).or_default().last = last.map(|l| l as u64);
            }
            _ => {
                let (gap, from, to): (Option<i64>, Option<i64>, Option<i64>) =
                    (r.try_get("n1")?, r.try_get("n2")?, r.try_get("n3")?);
                if let (Some(gap), Some(from), Some(to)) = (gap, from, to) {
                    open.push((id, (gap, from as u64, to as u64)));
                }
            }
        }
    }
    for (gw, gap) in open {
        gateways.entry(gw).or_default().gaps.push(gap);
    }
    Ok((meters, gateways))
}

/// How far around the late readings their stored neighbours are fetched
/// (more than one read interval, so a meter keeping its cadence has both in
/// the window); beyond it the nearest day's first or last read stands in.
pub const LATE_NEIGHBOUR_WINDOW_S: i64 = vee::MAX_READ_GAP_S;

/// What the store holds around the late readings, hot or compacted: every
/// stored reading of their meters within [`LATE_NEIGHBOUR_WINDOW_S`] of the
/// oldest and newest late ts (so their own keys too), and from
/// `metering.daily` the nearest stored read before and after that window.
/// In the hot table this is one BRIN range scan; compacted meter-days are
/// found by primary key and only those are unpacked.
async fn late_context(
    tx: &mut Transaction<'_, Postgres>,
    late: &[Candidate],
) -> Result<vee::LateContext, IngestError> {
    let mut ctx = vee::LateContext::default();
    let (Some(min), Some(max)) = (
        late.iter().map(|c| c.reading.ts).min(),
        late.iter().map(|c| c.reading.ts).max(),
    ) else {
        return Ok(ctx);
    };
    let lo = min - chrono::Duration::seconds(LATE_NEIGHBOUR_WINDOW_S);
    let hi = max + chrono::Duration::seconds(LATE_NEIGHBOUR_WINDOW_S);
    let ids: Vec<String> = late
        .iter()
        .map(|c| c.reading.meter_id.to_string())
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    let rows = sqlx::query(
        "SELECT meter_id, ts, volume_l FROM metering.readings
          WHERE ts >= $1 AND ts <= $2 AND meter_id = ANY($3)
         UNION ALL
         SELECT c.meter_id, u.ts, u.volume_l
           FROM metering.readings_compact c,
                LATERAL metering.unpack_day(c.first_ts, c.first_volume_l, c.dts_us,
                                            c.dvolume_l, c.flow_lph, c.alarms) u
          WHERE c.meter_id = ANY($3) AND c.day >= $4 AND c.day <= $5
            AND u.ts >= $1 AND u.ts <= $2",
    )
    .bind(lo)
    .bind(hi)
    .bind(&ids)
    .bind(lo.date_naive())
    .bind(hi.date_naive())
    .fetch_all(&mut **tx)
    .await?;
    for r in rows {
        ctx.stored
            .entry(r.try_get("meter_id")?)
            .or_default()
            .insert(r.try_get("ts")?, r.try_get("volume_l")?);
    }
    let rows = sqlx::query(
        "SELECT m.id, p.last_ts, p.last_volume_l, n.first_ts, n.first_volume_l
           FROM unnest($1::text[]) AS m(id)
           LEFT JOIN LATERAL (SELECT d.last_ts, d.last_volume_l FROM metering.daily d
                               WHERE d.meter_id = m.id AND d.day <= $2 AND d.last_ts < $3
                               ORDER BY d.day DESC LIMIT 1) p ON true
           LEFT JOIN LATERAL (SELECT d.first_ts, d.first_volume_l FROM metering.daily d
                               WHERE d.meter_id = m.id AND d.day >= $4 AND d.first_ts > $5
                               ORDER BY d.day LIMIT 1) n ON true",
    )
    .bind(&ids)
    .bind(lo.date_naive())
    .bind(lo)
    .bind(hi.date_naive())
    .bind(hi)
    .fetch_all(&mut **tx)
    .await?;
    for r in rows {
        let id: String = r.try_get("id")?;
        let p: Option<(DateTime<Utc>, i64)> = r
            .try_get::<Option<DateTime<Utc>>, _>("last_ts")?
            .zip(r.try_get::<Option<i64>, _>("last_volume_l")?);
        let n: Option<(DateTime<Utc>, i64)> = r
            .try_get::<Option<DateTime<Utc>>, _>("first_ts")?
            .zip(r.try_get::<Option<i64>, _>("first_volume_l")?);
        if let Some(p) = p {
            ctx.before.insert(id.clone(), p);
        }
        if let Some(n) = n {
            ctx.after.insert(id, n);
        }
    }
    Ok(ctx)
}

/// Which of these `(meter_id, ts)` keys are in quarantine, with the volume
/// they were refused with (by `quarantine_meter_ts`).
async fn already_quarantined(
    tx: &mut Transaction<'_, Postgres>,
    keys: &[(String, DateTime<Utc>)],
) -> Result<HashSet<(String, DateTime<Utc>, i64)>, IngestError> {
    let mut out = HashSet::new();
    if keys.is_empty() {
        return Ok(out);
    }
    let ids: Vec<&str> = keys.iter().map(|k| k.0.as_str()).collect();
    let ts: Vec<DateTime<Utc>> = keys.iter().map(|k| k.1).collect();
    let rows = sqlx::query(
        "SELECT q.meter_id, q.ts, q.reading->>'volume_l' AS vol
           FROM metering.quarantine q
           JOIN unnest($1::text[], $2::timestamptz[]) AS k(meter_id, ts)
             ON q.meter_id = k.meter_id AND q.ts = k.ts
          WHERE q.reading IS NOT NULL",
    )
    .bind(&ids)
    .bind(&ts)
    .fetch_all(&mut **tx)
    .await?;
    for r in rows {
        let vol: Option<String> = r.try_get("vol")?;
        if let Some(vol) = vol.and_then(|v| v.parse::<i64>().ok()) {
            out.insert((r.try_get("meter_id")?, r.try_get("ts")?, vol));
        }
    }
    Ok(out)
}

/// In one statement after the `COPY`: merges the rows into
/// `metering.daily`, moves the meters' high-water marks and updates the
/// sending gateways (last batch, counters).
async fn store_state(
    tx: &mut Transaction<'_, Postgres>,
    rows: &[Row],
    new_last: &BTreeMap<String, (DateTime<Utc>, i64, Vec<waterworks_wire::Alarm>)>,
    gateways: &[GatewayRow],
) -> Result<(), IngestError> {
    if rows.is_empty() && new_last.is_empty() && gateways.is_empty() {
        return Ok(());
    }
    let agg = vee::daily(rows);
    let mut ids = Vec::with_capacity(agg.len());
    let mut days = Vec::with_capacity(agg.len());
    let (mut fts, mut fv, mut lts, mut lv, mut n, mut na) =
        (vec![], vec![], vec![], vec![], vec![], vec![]);
    for ((id, day), a) in agg {
        ids.push(id);
        days.push(day);
        fts.push(a.first.0);
        fv.push(a.first.1);
        lts.push(a.last.0);
        lv.push(a.last.1);
        n.push(a.reads);
        na.push(a.alarm_reads);
    }
    let m_ids: Vec<&str> = new_last.keys().map(String::as_str).collect();
    let m_ts: Vec<DateTime<Utc>> = new_last.values().map(|v| v.0).collect();
    let m_vol: Vec<i64> = new_last.values().map(|v| v.1).collect();
    let m_alarms: Vec<String> = new_last
        .values()
        .map(|v| v.2.iter().map(|a| a.as_str()).collect::<Vec<_>>().join(","))
        .collect();
    let g_ids: Vec<&str> = gateways.iter().map(|g| g.0.as_str()).collect();
    let g_seq: Vec<Option<i64>> = gateways.iter().map(|g| g.1).collect();
    let g_batches: Vec<i64> = gateways.iter().map(|g| g.2).collect();
    let g_readings: Vec<i64> = gateways.iter().map(|g| g.3).collect();
    let g_resets: Vec<i32> = gateways.iter().map(|g| g.4).collect();
    sqlx::query(
        "WITH daily AS (
            INSERT INTO metering.daily AS d
                (meter_id, day, first_ts, first_volume_l, last_ts, last_volume_l, reads, alarm_reads)
            SELECT * FROM unnest($1::text[], $2::date[], $3::timestamptz[], $4::int8[],
                                 $5::timestamptz[], $6::int8[], $7::int4[], $8::int4[])
            ON CONFLICT (meter_id, day) DO UPDATE SET
                first_ts = least(d.first_ts, excluded.first_ts),
                first_volume_l = CASE WHEN excluded.first_ts < d.first_ts
                                      THEN excluded.first_volume_l ELSE d.first_volume_l END,
                last_ts = greatest(d.last_ts, excluded.last_ts),
                last_volume_l = CASE WHEN excluded.last_ts > d.last_ts
                                     THEN excluded.last_volume_l ELSE d.last_volume_l END,
                reads = d.reads + excluded.reads,
                alarm_reads = d.alarm_reads + excluded.alarm_reads,
                updated_at = now()
            RETURNING 1),
         marks AS (
            UPDATE metering.meters m SET last_ts = u.ts, last_volume_l = u.vol,
                   last_alarms = string_to_array(nullif(u.alarms, ''), ','), last_seen_at = now()
              FROM unnest($9::text[], $10::timestamptz[], $11::int8[], $12::text[])
                   AS u(meter_id, ts, vol, alarms)
             WHERE m.meter_id = u.meter_id
            RETURNING 1),
         gws AS (
            INSERT INTO metering.gateways AS g
                (gateway_id, last_batch_seq, last_batch_at, batches, readings, seq_resets)
            SELECT id, seq, now(), b, r, rs
              FROM unnest($13::text[], $14::int8[], $15::int8[], $16::int8[], $17::int4[])
                   AS u(id, seq, b, r, rs)
            ON CONFLICT (gateway_id) DO UPDATE SET
                last_batch_seq = excluded.last_batch_seq, last_batch_at = now(),
                batches = g.batches + excluded.batches,
                readings = g.readings + excluded.readings,
                seq_resets = g.seq_resets + excluded.seq_resets
            RETURNING 1)
         SELECT (SELECT count(*) FROM daily), (SELECT count(*) FROM marks),
                (SELECT count(*) FROM gws)",
    )
    .bind(&ids)
    .bind(&days)
    .bind(&fts)
    .bind(&fv)
    .bind(&lts)
    .bind(&lv)
    .bind(&n)
    .bind(&na)
    .bind(&m_ids)
    .bind(&m_ts)
    .bind(&m_vol)
    .bind(&m_alarms)
    .bind(&g_ids)
    .bind(&g_seq)
    .bind(&g_batches)
    .bind(&g_readings)
    .bind(&g_resets)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// Follows each sending gateway's batch sequence (`states`, read under its
/// lock): opens, shrinks and fills `batch_seq` gaps (rare; one statement
/// each) and returns the gateway rows for [`store_state`] with the counts of
/// gaps opened and sequence resets.
async fn record_gateway_seqs(
    tx: &mut Transaction<'_, Postgres>,
    input: &BatchInput,
    rows: &[Row],
    meters: &HashMap<String, MeterState>,
    mut states: BTreeMap<String, SeqState>,
) -> Result<
    (
        u64,
        u64,
        Vec<GatewayRow>,
        Vec<(String, waterworks_wire::topic::Ack)>,
    ),
    IngestError,
> {
    let mut new_in_msg = vec![false; input.decoded.len()];
    for r in rows {
        if let Some(x) = new_in_msg.get_mut(r.msg) {
            *x = true;
        }
    }
    let mut seqs: BTreeMap<&str, Vec<(u64, bool)>> = BTreeMap::new();
    for (i, d) in input.decoded.iter().enumerate() {
        if let Some((gw, seq)) = &d.header {
            seqs.entry(gw.as_str())
                .or_default()
                .push((*seq, new_in_msg[i]));
        }
    }
    let mut out = Vec::with_capacity(seqs.len());
    let mut acks = Vec::with_capacity(seqs.len());
    if seqs.is_empty() {
        return Ok((0, 0, out, acks));
    }
    let mut stored: BTreeMap<&str, i64> = BTreeMap::new();
    for r in rows {
        if let Some(m) = meters.get(&r.meter_id) {
            *stored.entry(m.gateway_id.as_str()).or_default() += 1;
        }
    }
    let (mut gaps, mut resets) = (0, 0);
    for (gw, list) in &seqs {
        let state = states.entry(gw.to_string()).or_default();
        let mut gw_resets = 0i32;
        for &(seq, brought_new) in list {
            for op in state.observe(seq, brought_new) {
                match op {
                    SeqOp::Open { from, to } => {
                        gaps += 1;
                        let id: i64 = sqlx::query_scalar(
                            "INSERT INTO metering.gaps (kind, gateway_id, from_seq, to_seq)
                             VALUES ('batch_seq', $1, $2, $3) RETURNING id",
                        )
                        .bind(gw)
                        .bind(from as i64)
                        .bind(to as i64)
                        .fetch_one(&mut **tx)
                        .await?;
                        if let Some(g) = state
                            .gaps
                            .iter_mut()
                            .find(|g| g.0 == 0 && g.1 == from && g.2 == to)
                        {
                            g.0 = id;
                        }
                        tracing::warn!(gateway = %gw, from, to, "batch sequence gap");
                    }
                    SeqOp::Shrink { id, from, to } => {
                        sqlx::query(
                            "UPDATE metering.gaps SET from_seq = $2, to_seq = $3 WHERE id = $1",
                        )
                        .bind(id)
                        .bind(from as i64)
                        .bind(to as i64)
                        .execute(&mut **tx)
                        .await?;
                    }
                    SeqOp::Fill { id } => {
                        sqlx::query("UPDATE metering.gaps SET filled_at = now() WHERE id = $1")
                            .bind(id)
                            .execute(&mut **tx)
                            .await?;
                    }
                    SeqOp::Reset { from, to } => {
                        resets += 1;
                        gw_resets += 1;
                        tracing::warn!(gateway = %gw, from, to, "gateway batch sequence reset");
                    }
                }
            }
        }
        out.push((
            gw.to_string(),
            state.last.map(|l| l.min(i64::MAX as u64) as i64),
            list.len() as i64,
            stored.get(gw).copied().unwrap_or(0),
            gw_resets,
        ));
        if let Some(last) = state.last {
            let open: Vec<(u64, u64)> = state.gaps.iter().map(|g| (g.1, g.2)).collect();
            acks.push((
                gw.to_string(),
                waterworks_wire::topic::Ack::from_gaps(last, &open),
            ));
        }
    }
    Ok((gaps, resets, out, acks))
}

async fn record_meter_gaps(
    tx: &mut Transaction<'_, Postgres>,
    gaps: &[vee::MeterGap],
) -> Result<(), IngestError> {
    if gaps.is_empty() {
        return Ok(());
    }
    let m: Vec<&str> = gaps.iter().map(|g| g.meter_id.as_str()).collect();
    let gw: Vec<&str> = gaps.iter().map(|g| g.gateway_id.as_str()).collect();
    let f: Vec<DateTime<Utc>> = gaps.iter().map(|g| g.from_ts).collect();
    let t: Vec<DateTime<Utc>> = gaps.iter().map(|g| g.to_ts).collect();
    sqlx::query(
        "INSERT INTO metering.gaps (kind, meter_id, gateway_id, from_ts, to_ts)
         SELECT 'meter_reads', * FROM unnest($1::text[], $2::text[], $3::timestamptz[], $4::timestamptz[])",
    )
    .bind(&m)
    .bind(&gw)
    .bind(&f)
    .bind(&t)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// A quarantine row's key: gateway, reason, digest.
type QKey = (Option<String>, &'static str, [u8; 32]);
/// Per key: the first refusal (kept), how many, last seen.
type QRows<'a> = BTreeMap<QKey, (Cow<'a, Quarantined>, i64, DateTime<Utc>)>;

/// Quarantine rows, deduplicated: rows equal in (gateway, reason, digest)
/// merge (in this batch and with the table) into one row whose `seen_count`
/// grows and whose `last_seen_at` moves; the first one's content is kept.
/// A gateway holds at most [`vee::QUARANTINE_MAX_ROWS_PER_GATEWAY_REASON`]
/// rows per reason (see [`cap_rows`]). Keys are written in order, so
/// concurrent batches never deadlock on them.
async fn insert_quarantine(
    tx: &mut Transaction<'_, Postgres>,
    metas: &[MsgMeta],
    q: &[Quarantined],
) -> Result<(), IngestError> {
    if q.is_empty() {
        return Ok(());
    }
    let meta = |i: usize| metas.get(i);
    let mut rows: QRows = BTreeMap::new();
    for x in q {
        let at = meta(x.msg).map(|m| m.received_at).unwrap_or_else(Utc::now);
        let gw = meta(x.msg).and_then(|m| m.gateway_id.clone());
        let e =
            rows.entry((gw, x.reason.as_str(), x.digest()))
                .or_insert((Cow::Borrowed(x), 0, at));
        e.1 += 1;
        e.2 = e.2.max(at);
    }
    cap_rows(tx, &mut rows, vee::QUARANTINE_MAX_ROWS_PER_GATEWAY_REASON).await?;
    let n = rows.len();
    let (mut received, mut gw, mut topic, mut seq) = (
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
    );
    let (mut reason, mut detail, mut payload, mut payload_len) = (
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
    );
    let (mut reading, mut meter, mut ts, mut digest, mut count, mut last) = (
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
    );
    for ((g, r, d), (x, c, l)) in &rows {
        let (c, l) = (*c, *l);
        let m = meta(x.msg);
        received.push(m.map(|m| m.received_at).unwrap_or(l).min(l));
        gw.push(g.clone());
        topic.push(m.map(|m| m.topic.clone()).unwrap_or_default());
        seq.push(
            m.and_then(|m| m.batch_seq)
                .map(|s| s.min(i64::MAX as u64) as i64),
        );
        reason.push(*r);
        detail.push(x.detail.as_str());
        payload.push(x.payload.as_ref().map(|p| p.prefix.as_slice()));
        payload_len.push(
            x.payload
                .as_ref()
                .map(|p| p.len.min(i32::MAX as usize) as i32),
        );
        reading.push(x.reading.as_ref().map(|r| r.to_string()));
        meter.push(x.meter_id.clone());
        ts.push(x.ts);
        digest.push(d.to_vec());
        count.push(c);
        last.push(l);
    }
    sqlx::query(
        "INSERT INTO metering.quarantine
            (received_at, gateway_id, topic, batch_seq, reason, detail, payload, reading, meter_id, ts,
             payload_len, digest, seen_count, last_seen_at)
         SELECT r, g, t, s, re, d, p, rd::jsonb, m, ts, pl, dg, c, l
           FROM unnest($1::timestamptz[], $2::text[], $3::text[], $4::int8[], $5::text[], $6::text[],
                       $7::bytea[], $8::text[], $9::text[], $10::timestamptz[], $11::int4[],
                       $12::bytea[], $13::int8[], $14::timestamptz[])
                AS u(r, g, t, s, re, d, p, rd, m, ts, pl, dg, c, l)
         ON CONFLICT ((coalesce(gateway_id, '')), reason, digest) DO UPDATE
            SET seen_count = metering.quarantine.seen_count + excluded.seen_count,
                last_seen_at = greatest(metering.quarantine.last_seen_at, excluded.last_seen_at)",
    )
    .bind(&received)
    .bind(&gw)
    .bind(&topic)
    .bind(&seq)
    .bind(&reason)
    .bind(&detail)
    .bind(&payload)
    .bind(&reading)
    .bind(&meter)
    .bind(&ts)
    .bind(&payload_len)
    .bind(&digest)
    .bind(&count)
    .bind(&last)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// Keeps a gateway's rows for one reason at `cap`: when the table's rows
/// and this batch's new keys would pass it, the new keys beyond it are not
/// kept but counted in one overflow row of that gateway and reason (digest
/// [`vee::overflow_digest`], no payload or reading). Keys already in the
/// table still count on their own rows. Run under the batch's gateway locks,
/// so replicas do not race past the cap.
async fn cap_rows(
    tx: &mut Transaction<'_, Postgres>,
    rows: &mut QRows<'_>,
    cap: i64,
) -> Result<(), IngestError> {
    let mut by_pair: BTreeMap<(Option<String>, &'static str), Vec<[u8; 32]>> = BTreeMap::new();
    for (g, r, d) in rows.keys() {
        by_pair.entry((g.clone(), r)).or_default().push(*d);
    }
    let (gws, reasons): (Vec<String>, Vec<&str>) = by_pair
        .keys()
        .map(|(g, r)| (g.clone().unwrap_or_default(), *r))
        .unzip();
    let held: Vec<i64> = sqlx::query_scalar(
        "SELECT (SELECT count(*) FROM (SELECT 1 FROM metering.quarantine q
                  WHERE coalesce(q.gateway_id, '') = k.g AND q.reason = k.r LIMIT $3) x)
           FROM unnest($1::text[], $2::text[]) WITH ORDINALITY AS k(g, r, i) ORDER BY k.i",
    )
    .bind(&gws)
    .bind(&reasons)
    .bind(cap + 1)
    .fetch_all(&mut **tx)
    .await?;
    let overflow = vee::overflow_digest();
    for (((g, r), digests), held) in by_pair.into_iter().zip(held) {
        if held + digests.len() as i64 <= cap {
            continue;
        }
        let known: Vec<Vec<u8>> = sqlx::query_scalar(
            "SELECT digest FROM metering.quarantine
              WHERE coalesce(gateway_id, '') = $1 AND reason = $2 AND digest = ANY($3)",
        )
        .bind(g.clone().unwrap_or_default())
        .bind(r)
        .bind(digests.iter().map(|d| d.to_vec()).collect::<Vec<_>>())
        .fetch_all(&mut **tx)
        .await?;
        let known: HashSet<Vec<u8>> = known.into_iter().collect();
        let mut room = (cap - held).max(0);
        let (mut folded, mut first, mut last) = (0i64, None, None::<DateTime<Utc>>);
        for d in digests {
            if d == overflow || known.contains(&d[..]) {
                continue;
            }
            if room > 0 {
                room -= 1;
                continue;
            }
            let Some((x, c, l)) = rows.remove(&(g.clone(), r, d)) else {
                continue;
            };
            folded += c;
            last = Some(last.map_or(l, |t| t.max(l)));
            first.get_or_insert(x);
        }
        let (Some(x), Some(l)) = (first, last) else {
            continue;
        };
        let e = rows
            .entry((g, r, overflow))
            .or_insert_with(|| (Cow::Owned(vee::overflow_row(&x, cap)), 0, l));
        e.1 += folded;
        e.2 = e.2.max(l);
    }
    Ok(())
}

async fn record_statuses(
    tx: &mut Transaction<'_, Postgres>,
    statuses: &[(String, String, DateTime<Utc>)],
) -> Result<(), IngestError> {
    for (gw, status, at) in statuses {
        sqlx::query(
            "INSERT INTO metering.gateways (gateway_id, status, status_at) VALUES ($1, $2, $3)
             ON CONFLICT (gateway_id) DO UPDATE SET status = excluded.status, status_at = excluded.status_at
             WHERE metering.gateways.status_at IS NULL OR metering.gateways.status_at <= excluded.status_at",
        )
        .bind(gw)
        .bind(status)
        .bind(at)
        .execute(&mut **tx)
        .await?;
    }
    Ok(())
}

/// Backfilled readings inside an open `meter_reads` gap close it; what is
/// still missing between the stored reads (hot or compacted) of its span
/// opens again.
async fn refill_meter_gaps(
    tx: &mut Transaction<'_, Postgres>,
    backfill: &[(String, DateTime<Utc>)],
) -> Result<(), IngestError> {
    let m: Vec<&str> = backfill.iter().map(|b| b.0.as_str()).collect();
    let t: Vec<DateTime<Utc>> = backfill.iter().map(|b| b.1).collect();
    sqlx::query(
        "WITH closed AS (
            UPDATE metering.gaps g SET filled_at = now()
              FROM unnest($1::text[], $2::timestamptz[]) AS b(meter_id, ts)
             WHERE g.kind = 'meter_reads' AND g.filled_at IS NULL AND g.meter_id = b.meter_id
               AND b.ts > g.from_ts AND b.ts < g.to_ts
            RETURNING g.id, g.meter_id, g.gateway_id, g.from_ts, g.to_ts)
         INSERT INTO metering.gaps (kind, meter_id, gateway_id, from_ts, to_ts)
         SELECT 'meter_reads', meter_id, gateway_id, prev_ts, ts FROM (
             SELECT c.meter_id, c.gateway_id, r.ts,
                    lag(r.ts) OVER (PARTITION BY c.id ORDER BY r.ts) AS prev_ts
               FROM closed c
               JOIN LATERAL metering.readings_in(c.from_ts, c.to_ts) r
                 ON r.meter_id = c.meter_id) x
          WHERE prev_ts IS NOT NULL AND ts - prev_ts > make_interval(secs => $3)",
    )
    .bind(&m)
    .bind(&t)
    .bind(vee::MAX_READ_GAP_S as f64)
    .execute(&mut **tx)
    .await?;
    Ok(())
}
