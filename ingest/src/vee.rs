//! (Long because the VEE rules are one pure pipeline, decode -> validate -> resolve_late -> daily and sequence state, sharing their row, candidate and quarantine types; about 300 lines are its unit and property tests.)
//!
//! Validation, estimation's first half (VEE at the door): the pure rules that
//! decide, for each received reading, whether it is stored, ignored as a
//! duplicate, or quarantined with a reason. No IO here: the writer fetches the
//! meters' state, calls these functions, and stores what they decide.
//!
//! Stages: [`decode_message`] (no state needed), [`validate`] (against the
//! registry and each meter's high-water mark), [`resolve_late`] (readings at or
//! before the high-water mark, against what is already stored).

use chrono::{DateTime, Duration, NaiveDate, Utc};
use rustc_hash::FxHashMap;
use sha2::{Digest, Sha256};
use std::collections::{BTreeMap, HashMap, HashSet};
use waterworks_wire::reading::{Alarm, Reading, ReadingBatch};
use waterworks_wire::topic::{self, Topic};

/// Implied flow above `max_flow_lph × SPIKE_MARGIN` is a spike.
pub const SPIKE_MARGIN: f64 = 1.5;
/// The read interval a meter is expected to keep (15 minutes).
pub const EXPECTED_READ_INTERVAL_S: i64 = 900;
/// Two consecutive reads further apart than this leave a `meter_reads` gap.
pub const MAX_READ_GAP_S: i64 = EXPECTED_READ_INTERVAL_S * 3 / 2;

/// Bytes of a refused message's payload the quarantine keeps (its prefix);
/// the row also keeps the whole payload's SHA-256 and length.
pub const QUARANTINE_PAYLOAD_PREFIX_BYTES: usize = 4096;
/// A refused reading's raw JSON larger than this is kept as a prefix (see
/// [`capped_reading`]).
pub const QUARANTINE_READING_MAX_BYTES: usize = 4096;

/// Why a reading or message was refused. The strings are stable (metrics
/// labels, the quarantine table, the API).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Reason {
    Malformed,
    UnknownMeter,
    WrongGateway,
    Future,
    TooOld,
    Backwards,
    Spike,
    Conflict,
}

impl Reason {
    pub const ALL: [Reason; 8] = [
        Reason::Malformed,
        Reason::UnknownMeter,
        Reason::WrongGateway,
        Reason::Future,
        Reason::TooOld,
        Reason::Backwards,
        Reason::Spike,
        Reason::Conflict,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Reason::Malformed => "malformed",
            Reason::UnknownMeter => "unknown_meter",
            Reason::WrongGateway => "wrong_gateway",
            Reason::Future => "future",
            Reason::TooOld => "too_old",
            Reason::Backwards => "backwards",
            Reason::Spike => "spike",
            Reason::Conflict => "conflict",
        }
    }

    pub fn parse(s: &str) -> Option<Reason> {
        Reason::ALL.into_iter().find(|r| r.as_str() == s)
    }
}

/// Where a message came from; quarantine rows carry it.
#[derive(Debug, Clone, PartialEq)]
pub struct MsgMeta {
    pub topic: String,
    pub received_at: DateTime<Utc>,
    /// From the payload when it decoded, else from the topic.
    pub gateway_id: Option<String>,
    pub batch_seq: Option<u64>,
}

/// One refused thing, as the quarantine table keeps it.
#[derive(Debug, Clone, PartialEq)]
pub struct Quarantined {
    pub msg: usize,
    pub reason: Reason,
    pub detail: String,
    /// A sample of the payload, when the message was refused whole.
    pub payload: Option<PayloadSample>,
    /// The reading, when one reading was refused.
    pub reading: Option<serde_json::Value>,
    pub meter_id: Option<String>,
    pub ts: Option<DateTime<Utc>>,
}

/// A reading that passed decoding, tagged with its message.
#[derive(Debug, Clone, PartialEq)]
pub struct Candidate {
    pub msg: usize,
    pub reading: Reading,
}

/// A message after decoding.
#[derive(Debug, Default)]
pub struct Decoded {
    /// `(gateway_id, batch_seq)` when the header was sound and matched the topic.
    pub header: Option<(String, u64)>,
    pub readings: Vec<Candidate>,
    pub quarantine: Vec<Quarantined>,
}

/// What the quarantine keeps of a refused message's payload: its first
/// [`QUARANTINE_PAYLOAD_PREFIX_BYTES`], and the whole payload's SHA-256 and
/// length (so equal payloads are recognised and counted, not stored again).
#[derive(Debug, Clone, PartialEq)]
pub struct PayloadSample {
    pub prefix: Vec<u8>,
    pub sha256: [u8; 32],
    pub len: usize,
}

impl PayloadSample {
    pub fn of(payload: &[u8]) -> PayloadSample {
        let keep = payload.len().min(QUARANTINE_PAYLOAD_PREFIX_BYTES);
        PayloadSample {
            prefix: payload[..keep].to_vec(),
            sha256: Sha256::digest(payload).into(),
            len: payload.len(),
        }
    }
}

impl Quarantined {
    /// The quarantine's deduplication key beside gateway and reason: the
    /// payload's digest when the message was refused whole, else the digest
    /// of the refused reading (its JSON), else of the detail.
    pub fn digest(&self) -> [u8; 32] {
        if let Some(p) = &self.payload {
            return p.sha256;
        }
        let mut h = Sha256::new();
        match &self.reading {
            Some(r) => h.update(r.to_string().as_bytes()),
            None => {
                h.update(b"detail\0");
                h.update(self.detail.as_bytes());
            }
        }
        h.finalize().into()
    }
}

/// A refused reading's raw JSON, or, when it serializes to more than
/// [`QUARANTINE_READING_MAX_BYTES`], an object saying so with a prefix of it,
/// its SHA-256 and length (`{"truncated": true, "prefix", "sha256", "bytes"}`).
pub fn capped_reading(raw: serde_json::Value) -> serde_json::Value {
    let text = raw.to_string();
    if text.len() <= QUARANTINE_READING_MAX_BYTES {
        return raw;
    }
    let mut end = QUARANTINE_READING_MAX_BYTES;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    serde_json::json!({
        "truncated": true,
        "prefix": &text[..end],
        "sha256": hex::encode(Sha256::digest(text.as_bytes())),
        "bytes": text.len(),
    })
}

/// Rows one gateway may hold in the quarantine for one reason; further
/// distinct refusals are counted in one overflow row (see `writer`).
pub const QUARANTINE_MAX_ROWS_PER_GATEWAY_REASON: i64 = 10_000;

/// The digest of a gateway's overflow row for a reason: all zero bytes,
/// which no payload, reading or detail hashes to (SHA-256 has no known
/// preimage of it).
pub fn overflow_digest() -> [u8; 32] {
    [0; 32]
}

/// The overflow row standing for refusals beyond the cap: the reason and
/// message of the first one folded in, no payload, reading, meter or time.
pub fn overflow_row(first: &Quarantined, cap: i64) -> Quarantined {
    Quarantined {
        msg: first.msg,
        reason: first.reason,
        detail: format!(
            "overflow: this gateway already has {cap} quarantine rows for this reason; \
             further distinct refusals are counted here, not kept"
        ),
        payload: None,
        reading: None,
        meter_id: None,
        ts: None,
    }
}

/// Characters of a refusal's detail the quarantine keeps (a decoder's
/// message can quote the offending value, however long).
pub const QUARANTINE_DETAIL_MAX_CHARS: usize = 512;

/// `detail` cut to [`QUARANTINE_DETAIL_MAX_CHARS`], marked with `…` when cut.
pub fn capped_detail(detail: String) -> String {
    match detail.char_indices().nth(QUARANTINE_DETAIL_MAX_CHARS) {
        None => detail,
        Some((end, _)) => format!("{}…", &detail[..end]),
    }
}

fn whole(msg: usize, reason: Reason, detail: String, payload: &[u8]) -> Quarantined {
    Quarantined {
        msg,
        reason,
        detail: capped_detail(detail),
        payload: Some(PayloadSample::of(payload)),
        reading: None,
        meter_id: None,
        ts: None,
    }
}

/// Decodes one message; fills in `meta.gateway_id`/`batch_seq` when known.
/// A message refused whole is one quarantine row with its raw payload.
pub fn decode_message(msg: usize, meta: &mut MsgMeta, payload: &[u8]) -> Decoded {
    let mut out = Decoded::default();
    let topic_gw = match topic::parse(&meta.topic) {
        Some(Topic::Readings(gw)) => gw,
        _ => {
            out.quarantine.push(whole(
                msg,
                Reason::Malformed,
                format!(
                    "topic {:?} is not a readings topic of contract v1",
                    meta.topic
                ),
                payload,
            ));
            return out;
        }
    };
    meta.gateway_id = Some(topic_gw.to_string());
    // Fast path: a sound batch decodes straight into its types (no JSON
    // tree, a fraction of the allocations); anything the strict decoder
    // refuses is decoded again leniently, reading by reading, with the
    // same outcome as before.
    let batch = match ReadingBatch::decode(payload) {
        Ok(b) => Ok(waterworks_wire::reading::LenientBatch {
            gateway_id: b.gateway_id,
            batch_seq: b.batch_seq,
            readings: b.readings.into_iter().map(Ok).collect(),
        }),
        Err(_) => ReadingBatch::decode_lenient(payload),
    };
    let batch = match batch {
        Ok(b) => b,
        Err(e) => {
            out.quarantine
                .push(whole(msg, Reason::Malformed, e.to_string(), payload));
            return out;
        }
    };
    meta.batch_seq = Some(batch.batch_seq);
    if batch.gateway_id != topic_gw {
        out.quarantine.push(whole(
            msg,
            Reason::WrongGateway,
            format!(
                "payload claims gateway {:?} but was published on the topic of {:?}",
                batch.gateway_id.as_str(),
                topic_gw.as_str()
            ),
            payload,
        ));
        return out;
    }
    out.header = Some((topic_gw.to_string(), batch.batch_seq));
    for r in batch.readings {
        match r {
            Ok(reading) if reading.volume_l > i64::MAX as u64 => {
                out.quarantine.push(Quarantined {
                    msg,
                    reason: Reason::Malformed,
                    detail: format!("volume_l {} is out of range", reading.volume_l),
                    payload: None,
                    reading: serde_json::to_value(&reading).ok(),
                    meter_id: Some(reading.meter_id.to_string()),
                    ts: Some(reading.ts),
                });
            }
            Ok(reading) => out.readings.push(Candidate { msg, reading }),
            Err(bad) => {
                let meter_id = bad
                    .raw
                    .get("meter_id")
                    .and_then(|v| v.as_str())
                    .filter(|s| s.len() <= waterworks_wire::ids::ID_MAX_LEN)
                    .map(str::to_string);
                out.quarantine.push(Quarantined {
                    msg,
                    reason: Reason::Malformed,
                    detail: capped_detail(bad.reason),
                    payload: None,
                    reading: Some(capped_reading(bad.raw)),
                    meter_id,
                    ts: None,
                });
            }
        }
    }
    out
}

/// What the registry and the store know of one meter, read under its
/// gateway's lock.
#[derive(Debug, Clone, PartialEq)]
pub struct MeterState {
    pub gateway_id: String,
    pub max_flow_lph: Option<f64>,
    /// Newest stored reading: `(ts, volume_l)`.
    pub last: Option<(DateTime<Utc>, i64)>,
}

/// A reading to store.
#[derive(Debug, Clone, PartialEq)]
pub struct Row {
    /// The message it came in (index in its batch).
    pub msg: usize,
    pub meter_id: String,
    pub ts: DateTime<Utc>,
    pub volume_l: i64,
    pub flow_lph: Option<f64>,
    pub alarms: Vec<Alarm>,
}

impl Row {
    fn from_candidate(c: &Candidate) -> Row {
        let r = &c.reading;
        Row {
            msg: c.msg,
            meter_id: r.meter_id.to_string(),
            ts: r.ts,
            volume_l: r.volume_l as i64,
            flow_lph: r.flow_lph,
            alarms: r.alarms.clone(),
        }
    }
}

/// A meter missing reads between two stored ones.
#[derive(Debug, Clone, PartialEq)]
pub struct MeterGap {
    pub meter_id: String,
    pub gateway_id: String,
    pub from_ts: DateTime<Utc>,
    pub to_ts: DateTime<Utc>,
}

/// Limits of the time checks.
#[derive(Debug, Clone, Copy)]
pub struct Window {
    pub now: DateTime<Utc>,
    pub retention_days: u32,
    pub max_future_skew_s: u64,
}

impl Window {
    pub fn oldest(&self) -> DateTime<Utc> {
        self.now - Duration::days(i64::from(self.retention_days))
    }
    pub fn newest(&self) -> DateTime<Utc> {
        self.now + Duration::seconds(self.max_future_skew_s.min(i64::MAX as u64 / 2_000) as i64)
    }
}

#[derive(Debug, Default)]
pub struct Validated {
    /// Newer than the meter's high-water mark: stored without looking back.
    pub fresh: Vec<Row>,
    /// At or before the high-water mark: a redelivery, a replay, a conflict or
    /// a backfill; [`resolve_late`] decides against the store.
    pub late: Vec<Candidate>,
    pub quarantine: Vec<Quarantined>,
    /// Same reading twice in this batch.
    pub duplicates: u64,
    /// New high-water marks: meter → (ts, volume_l, alarms).
    pub new_last: BTreeMap<String, (DateTime<Utc>, i64, Vec<Alarm>)>,
    pub meter_gaps: Vec<MeterGap>,
}

fn refuse(c: &Candidate, reason: Reason, detail: String) -> Quarantined {
    Quarantined {
        msg: c.msg,
        reason,
        detail,
        payload: None,
        reading: serde_json::to_value(&c.reading).ok(),
        meter_id: Some(c.reading.meter_id.to_string()),
        ts: Some(c.reading.ts),
    }
}

/// Checks every candidate against the registry (`meters`), the sending
/// gateway (`gateways[msg]`) and the time window; then, per meter in time
/// order, against the previous accepted read (totalizer backwards, spike).
/// The fresh rows come out in time order (then as received): what the
/// partitioned table takes best.
pub fn validate<C: std::borrow::Borrow<Candidate>>(
    candidates: impl IntoIterator<Item = C>,
    gateways: &[Option<String>],
    meters: &HashMap<String, MeterState>,
    window: Window,
) -> Validated {
    // Held as given (the writer lends them): no allocation per reading.
    let all: Vec<C> = candidates.into_iter().collect();
    let mut out = Validated::default();
    let (oldest, newest) = (window.oldest(), window.newest());
    // Positions grouped by meter under the registry's own strings: one
    // cheap hash per reading; the groups are then taken in meter order.
    let mut slot: FxHashMap<&str, usize> = FxHashMap::default();
    let mut per_meter: Vec<(&str, Vec<u32>)> = Vec::new();
    for (pos, owned) in all.iter().enumerate() {
        let c = owned.borrow();
        let id = c.reading.meter_id.as_str();
        let Some((key, m)) = meters.get_key_value(id) else {
            out.quarantine.push(refuse(
                c,
                Reason::UnknownMeter,
                format!("meter {id:?} is not registered"),
            ));
            continue;
        };
        let sender = gateways.get(c.msg).and_then(|g| g.as_deref()).unwrap_or("");
        if m.gateway_id != sender {
            out.quarantine.push(refuse(
                c,
                Reason::WrongGateway,
                format!(
                    "meter {id:?} is assigned to gateway {:?}, not {sender:?}",
                    m.gateway_id
                ),
            ));
            continue;
        }
        if c.reading.ts > newest {
            out.quarantine.push(refuse(
                c,
                Reason::Future,
                format!("ts is after {}", newest.to_rfc3339()),
            ));
            continue;
        }
        if c.reading.ts < oldest {
            out.quarantine.push(refuse(
                c,
                Reason::TooOld,
                format!(
                    "ts is before the retention window ({})",
                    oldest.to_rfc3339()
                ),
            ));
            continue;
        }
        let i = *slot.entry(key.as_str()).or_insert_with(|| {
            per_meter.push((key.as_str(), Vec::new()));
            per_meter.len() - 1
        });
        per_meter[i].1.push(pos as u32);
    }
    per_meter.sort_unstable_by_key(|g| g.0);
    let get = |pos: u32| -> &Candidate { all[pos as usize].borrow() };
    let mut accepted: Vec<u32> = Vec::with_capacity(all.len());
    for (id, mut list) in per_meter {
        let m = &meters[id];
        // Stable: of equal keys, the first received stays first.
        if !list.is_sorted_by_key(|&p| get(p).reading.ts) {
            list.sort_by_key(|&p| get(p).reading.ts);
        }
        let mut prev = m.last;
        let mut last_alarms = None;
        let mut i = 0;
        while i < list.len() {
            // Same key several times in this batch. At or before the
            // high-water mark, each goes to the store check. Newer: the first
            // received is the reading; an equal value later is a duplicate, a
            // different one a conflict.
            let ts = get(list[i]).reading.ts;
            let mut j = i + 1;
            while j < list.len() && get(list[j]).reading.ts == ts {
                j += 1;
            }
            let group = i..j;
            i = j;
            if m.last.is_some_and(|(last, _)| ts <= last) {
                out.late.extend(list[group].iter().map(|&p| get(p).clone()));
                continue;
            }
            let c = get(list[group.start]);
            for &p in &list[group.start + 1..group.end] {
                let d = get(p);
                if d.reading.volume_l == c.reading.volume_l {
                    out.duplicates += 1;
                } else {
                    out.quarantine.push(refuse(
                        d,
                        Reason::Conflict,
                        format!(
                            "same meter and ts received with volume_l {} first and {} later",
                            c.reading.volume_l, d.reading.volume_l
                        ),
                    ));
                }
            }
            let volume = c.reading.volume_l as i64;
            if let Some((pts, pvol)) = prev {
                if volume < pvol {
                    out.quarantine.push(refuse(
                        c,
                        Reason::Backwards,
                        format!("totalizer {volume} L is below the previous {pvol} L at {pts}"),
                    ));
                    continue;
                }
                if let Some(max) = m.max_flow_lph {
                    let hours = (c.reading.ts - pts).num_milliseconds() as f64 / 3_600_000.0;
                    let flow = (volume - pvol) as f64 / hours;
                    if flow > max * SPIKE_MARGIN {
                        out.quarantine.push(refuse(
                            c,
                            Reason::Spike,
                            format!(
                                "implied flow {flow:.1} L/h since {pts} exceeds {max} L/h × {SPIKE_MARGIN}"
                            ),
                        ));
                        continue;
                    }
                }
                if (c.reading.ts - pts).num_seconds() > MAX_READ_GAP_S {
                    out.meter_gaps.push(MeterGap {
                        meter_id: id.to_string(),
                        gateway_id: m.gateway_id.clone(),
                        from_ts: pts,
                        to_ts: c.reading.ts,
                    });
                }
            }
            prev = Some((c.reading.ts, volume));
            last_alarms = Some(&c.reading.alarms);
            accepted.push(list[group.start]);
        }
        if let (Some((ts, vol)), Some(alarms)) = (prev, last_alarms) {
            out.new_last
                .insert(id.to_string(), (ts, vol, alarms.clone()));
        }
    }
    // In time order (then as received): consecutive rows fall into the same
    // few day/hash partitions of the readings table.
    let mut keyed: Vec<(DateTime<Utc>, u32)> = accepted
        .into_iter()
        .map(|p| (get(p).reading.ts, p))
        .collect();
    keyed.sort_unstable();
    out.fresh = keyed
        .into_iter()
        .map(|(_, p)| Row::from_candidate(get(p)))
        .collect();
    out
}

#[derive(Debug, Default)]
pub struct Resolved {
    /// Backfilled readings never stored before.
    pub backfill: Vec<Row>,
    pub duplicates: u64,
    pub quarantine: Vec<Quarantined>,
}

/// Decides the late candidates against the stored volumes of the same keys.
pub fn resolve_late(
    late: Vec<Candidate>,
    stored: &HashMap<(String, DateTime<Utc>), i64>,
) -> Resolved {
    let mut out = Resolved::default();
    let mut now_stored: HashMap<(String, DateTime<Utc>), i64> = HashMap::new();
    for c in late {
        let key = (c.reading.meter_id.to_string(), c.reading.ts);
        match stored.get(&key).or_else(|| now_stored.get(&key)) {
            Some(&v) if v == c.reading.volume_l as i64 => out.duplicates += 1,
            Some(&v) => out.quarantine.push(refuse(
                &c,
                Reason::Conflict,
                format!(
                    "stored volume_l is {v}, received {} for the same meter and ts",
                    c.reading.volume_l
                ),
            )),
            None => {
                now_stored.insert(key, c.reading.volume_l as i64);
                out.backfill.push(Row::from_candidate(&c));
            }
        }
    }
    out
}

/// What the store knows around the late candidates, read under their
/// gateways' locks: see [`resolve_late_checked`].
#[derive(Debug, Default, Clone, PartialEq)]
pub struct LateContext {
    /// Per meter, the stored readings (hot or compacted) `ts → volume_l` in
    /// the window fetched around the late candidates (it covers their keys).
    pub stored: HashMap<String, BTreeMap<DateTime<Utc>, i64>>,
    /// Per meter, a stored reading before the window (the last of an earlier
    /// day, from `metering.daily`), when the window holds none before.
    pub before: HashMap<String, (DateTime<Utc>, i64)>,
    /// Per meter, a stored reading after the window (the first of a later day).
    pub after: HashMap<String, (DateTime<Utc>, i64)>,
    /// `(meter_id, ts, volume_l)` already in quarantine.
    pub quarantined: HashSet<(String, DateTime<Utc>, i64)>,
}

impl LateContext {
    fn prev(&self, id: &str, ts: DateTime<Utc>) -> Option<(DateTime<Utc>, i64)> {
        self.stored
            .get(id)
            .and_then(|m| m.range(..ts).next_back().map(|(t, v)| (*t, *v)))
            .or_else(|| self.before.get(id).copied().filter(|b| b.0 < ts))
    }

    fn next(&self, id: &str, ts: DateTime<Utc>) -> Option<(DateTime<Utc>, i64)> {
        use std::ops::Bound::{Excluded, Unbounded};
        self.stored
            .get(id)
            .and_then(|m| {
                m.range((Excluded(ts), Unbounded))
                    .next()
                    .map(|(t, v)| (*t, *v))
            })
            .or_else(|| self.after.get(id).copied().filter(|a| a.0 > ts))
    }
}

/// Decides the late candidates (at or before their meter's high-water mark)
/// against the store: a stored key is a duplicate (same volume) or a
/// conflict; a reading already quarantined with the same volume is a
/// duplicate (a replay changes nothing); anything else is checked against
/// its stored neighbours like a fresh reading against the mark: `backwards`
/// below the previous stored read or above the next one (totalizers do not
/// roll over), `spike` by the implied flow since the previous one. What
/// passes is backfilled and is a neighbour for the rest of the batch.
pub fn resolve_late_checked(
    mut late: Vec<Candidate>,
    ctx: &LateContext,
    meters: &HashMap<String, MeterState>,
) -> Resolved {
    let mut out = Resolved::default();
    // Stable: readings of one key keep their receive order.
    late.sort_by(|a, b| {
        (a.reading.meter_id.as_str(), a.reading.ts)
            .cmp(&(b.reading.meter_id.as_str(), b.reading.ts))
    });
    // What this batch has backfilled or quarantined so far.
    let mut ctx_now = LateContext::default();
    for c in late {
        let id = c.reading.meter_id.as_str();
        let ts = c.reading.ts;
        let volume = c.reading.volume_l as i64;
        let qkey = (id.to_string(), ts, volume);
        if ctx.quarantined.contains(&qkey) || ctx_now.quarantined.contains(&qkey) {
            out.duplicates += 1;
            continue;
        }
        let stored = ctx
            .stored
            .get(id)
            .and_then(|m| m.get(&ts))
            .or_else(|| ctx_now.stored.get(id).and_then(|m| m.get(&ts)));
        if let Some(&v) = stored {
            if v == volume {
                out.duplicates += 1;
            } else {
                ctx_now.quarantined.insert(qkey);
                out.quarantine.push(refuse(
                    &c,
                    Reason::Conflict,
                    format!("stored volume_l is {v}, received {volume} for the same meter and ts"),
                ));
            }
            continue;
        }
        let prev = [ctx.prev(id, ts), ctx_now.prev(id, ts)]
            .into_iter()
            .flatten()
            .max_by_key(|p| p.0);
        let next = [ctx.next(id, ts), ctx_now.next(id, ts)]
            .into_iter()
            .flatten()
            .min_by_key(|n| n.0);
        let verdict = check_against(
            volume,
            ts,
            prev,
            next,
            meters.get(id).and_then(|m| m.max_flow_lph),
        );
        if let Some((reason, detail)) = verdict {
            ctx_now.quarantined.insert(qkey);
            out.quarantine.push(refuse(&c, reason, detail));
            continue;
        }
        ctx_now
            .stored
            .entry(id.to_string())
            .or_default()
            .insert(ts, volume);
        out.backfill.push(Row::from_candidate(&c));
    }
    out
}

/// The totalizer and flow checks of one reading against its neighbours.
fn check_against(
    volume: i64,
    ts: DateTime<Utc>,
    prev: Option<(DateTime<Utc>, i64)>,
    next: Option<(DateTime<Utc>, i64)>,
    max_flow_lph: Option<f64>,
) -> Option<(Reason, String)> {
    if let Some((pts, pvol)) = prev {
        if volume < pvol {
            return Some((
                Reason::Backwards,
                format!("totalizer {volume} L is below the previous {pvol} L at {pts}"),
            ));
        }
    }
    if let Some((nts, nvol)) = next {
        if volume > nvol {
            return Some((
                Reason::Backwards,
                format!("totalizer {volume} L is above the next stored {nvol} L at {nts}"),
            ));
        }
    }
    if let (Some((pts, pvol)), Some(max)) = (prev, max_flow_lph) {
        let hours = (ts - pts).num_milliseconds() as f64 / 3_600_000.0;
        let flow = (volume - pvol) as f64 / hours;
        if flow > max * SPIKE_MARGIN {
            return Some((
                Reason::Spike,
                format!(
                    "implied flow {flow:.1} L/h since {pts} exceeds {max} L/h × {SPIKE_MARGIN}"
                ),
            ));
        }
    }
    None
}

/// The `(meter_id, ts, volume_l)` of a quarantined reading, when it has all three.
pub fn quarantine_key(q: &Quarantined) -> Option<(String, DateTime<Utc>, i64)> {
    let vol = q.reading.as_ref()?.get("volume_l")?.as_i64()?;
    Some((q.meter_id.clone()?, q.ts?, vol))
}

/// One meter-day of accepted rows, merged into `metering.daily`.
#[derive(Debug, Clone, PartialEq)]
pub struct DayAgg {
    pub first: (DateTime<Utc>, i64),
    pub last: (DateTime<Utc>, i64),
    pub reads: i32,
    pub alarm_reads: i32,
}

pub fn daily(rows: &[Row]) -> Vec<((&str, NaiveDate), DayAgg)> {
    let mut out: FxHashMap<(&str, NaiveDate), DayAgg> = FxHashMap::default();
    for r in rows {
        let a = out
            .entry((r.meter_id.as_str(), r.ts.date_naive()))
            .or_insert(DayAgg {
                first: (r.ts, r.volume_l),
                last: (r.ts, r.volume_l),
                reads: 0,
                alarm_reads: 0,
            });
        if r.ts < a.first.0 {
            a.first = (r.ts, r.volume_l);
        }
        if r.ts > a.last.0 {
            a.last = (r.ts, r.volume_l);
        }
        a.reads += 1;
        a.alarm_reads += i32::from(!r.alarms.is_empty());
    }
    // In key order: writers of one day's rows take their row locks in one
    // order.
    let mut out: Vec<_> = out.into_iter().collect();
    out.sort_unstable_by(|a, b| a.0.cmp(&b.0));
    out
}

/// A change to the gap rows of one gateway's batch sequence.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SeqOp {
    /// Batches `from..=to` never arrived (so far).
    Open { from: u64, to: u64 },
    /// Open gap `id` is now `from..=to`.
    Shrink { id: i64, from: u64, to: u64 },
    /// Open gap `id` is filled.
    Fill { id: i64 },
    /// The gateway restarted its sequence (a fresh spool).
    Reset { from: u64, to: u64 },
}

/// A gateway's sequence state: the highest seq seen and the open gaps.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SeqState {
    pub last: Option<u64>,
    /// `(id, from, to)`; new gaps get id 0 until stored.
    pub gaps: Vec<(i64, u64, u64)>,
}

impl SeqState {
    /// Records batch `seq`. A jump opens a gap; a late batch inside a gap
    /// shrinks or fills it; `seq == 1` below the last seen that brought new
    /// readings (`brought_new`) is a sequence reset (a gateway with a fresh
    /// spool); anything else at or below the last is a redelivery or a replay
    /// and changes nothing.
    pub fn observe(&mut self, seq: u64, brought_new: bool) -> Vec<SeqOp> {
        let Some(last) = self.last else {
            // Sequences start at 1: a first sight above it means the
            // batches before are missing (or still on their way).
            self.last = Some(seq);
            if seq > 1 {
                self.gaps.push((0, 1, seq - 1));
                return vec![SeqOp::Open {
                    from: 1,
                    to: seq - 1,
                }];
            }
            return vec![];
        };
        if seq == last + 1 {
            self.last = Some(seq);
            return vec![];
        }
        if seq > last {
            self.last = Some(seq);
            self.gaps.push((0, last + 1, seq - 1));
            return vec![SeqOp::Open {
                from: last + 1,
                to: seq - 1,
            }];
        }
        if let Some(pos) = self.gaps.iter().position(|&(_, f, t)| f <= seq && seq <= t) {
            let (id, f, t) = self.gaps[pos];
            let mut ops = Vec::new();
            if f == t {
                self.gaps.remove(pos);
                ops.push(SeqOp::Fill { id });
            } else if seq == f {
                self.gaps[pos] = (id, f + 1, t);
                ops.push(SeqOp::Shrink {
                    id,
                    from: f + 1,
                    to: t,
                });
            } else if seq == t {
                self.gaps[pos] = (id, f, t - 1);
                ops.push(SeqOp::Shrink {
                    id,
                    from: f,
                    to: t - 1,
                });
            } else {
                self.gaps[pos] = (id, f, seq - 1);
                self.gaps.push((0, seq + 1, t));
                ops.push(SeqOp::Shrink {
                    id,
                    from: f,
                    to: seq - 1,
                });
                ops.push(SeqOp::Open {
                    from: seq + 1,
                    to: t,
                });
            }
            return ops;
        }
        if seq == 1 && brought_new {
            self.last = Some(1);
            return vec![SeqOp::Reset { from: last, to: 1 }];
        }
        vec![]
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use waterworks_wire::MeterId;

    fn t(min: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_790_000_000 + min * 60, 0).unwrap()
    }

    fn cand(meter: &str, min: i64, vol: u64) -> Candidate {
        Candidate {
            msg: 0,
            reading: Reading {
                meter_id: MeterId::parse(meter).unwrap(),
                ts: t(min),
                volume_l: vol,
                flow_lph: None,
                alarms: vec![],
            },
        }
    }

    fn meters() -> HashMap<String, MeterState> {
        let mut m = HashMap::new();
        m.insert(
            "m1".into(),
            MeterState {
                gateway_id: "gw".into(),
                max_flow_lph: Some(1000.0),
                last: Some((t(0), 100)),
            },
        );
        m.insert(
            "m2".into(),
            MeterState {
                gateway_id: "other".into(),
                max_flow_lph: None,
                last: None,
            },
        );
        m
    }

    fn window() -> Window {
        Window {
            now: t(100),
            retention_days: 1,
            max_future_skew_s: 900,
        }
    }

    fn reasons(v: &Validated) -> Vec<&'static str> {
        let mut r: Vec<_> = v.quarantine.iter().map(|q| q.reason.as_str()).collect();
        r.sort();
        r
    }

    #[test]
    fn each_rule_has_its_reason() {
        let gws = vec![Some("gw".to_string())];
        let v = validate(
            vec![
                cand("m1", 15, 150),     // ok
                cand("m1", 30, 140),     // backwards
                cand("m1", 45, 10_000),  // spike: 9850 L in 30 min vs 1500 L/h
                cand("m1", 60, 200),     // ok
                cand("zz", 15, 1),       // unknown
                cand("m2", 15, 1),       // wrong gateway
                cand("m1", 20_000, 300), // future
                cand("m1", -5_000, 50),  // too old
                cand("m1", 0, 100),      // late: resolved later
            ],
            &gws,
            &meters(),
            window(),
        );
        assert_eq!(
            reasons(&v),
            vec![
                "backwards",
                "future",
                "spike",
                "too_old",
                "unknown_meter",
                "wrong_gateway"
            ]
        );
        assert_eq!(v.fresh.len(), 2);
        assert_eq!(v.late.len(), 1);
        assert_eq!(v.new_last["m1"].0, t(60));
        assert_eq!(v.new_last["m1"].1, 200);
    }

    #[test]
    fn duplicates_in_a_batch_collapse_and_conflicts_quarantine() {
        let gws = vec![Some("gw".to_string())];
        let v = validate(
            vec![
                cand("m1", 15, 150),
                cand("m1", 15, 150),
                cand("m1", 30, 160),
                cand("m1", 30, 161),
            ],
            &gws,
            &meters(),
            window(),
        );
        assert_eq!(v.fresh.len(), 2, "the first received of each key is kept");
        assert_eq!(v.fresh[1].volume_l, 160);
        assert_eq!(v.duplicates, 1);
        assert_eq!(reasons(&v), vec!["conflict"]);
    }

    #[test]
    fn late_readings_resolve_against_the_store() {
        let mut stored = HashMap::new();
        stored.insert(("m1".to_string(), t(0)), 100);
        stored.insert(("m1".to_string(), t(-15)), 90);
        let r = resolve_late(
            vec![
                cand("m1", 0, 100),
                cand("m1", -15, 91),
                cand("m1", -30, 80),
                cand("m1", -30, 80),
                cand("m1", -30, 81),
            ],
            &stored,
        );
        assert_eq!(r.duplicates, 2);
        assert_eq!(r.quarantine.len(), 2);
        assert_eq!(r.quarantine[0].reason, Reason::Conflict);
        assert_eq!(r.backfill.len(), 1);
        assert_eq!(r.backfill[0].ts, t(-30));
    }

    #[test]
    fn late_readings_are_checked_against_their_stored_neighbours() {
        let mut ctx = LateContext::default();
        ctx.stored.insert(
            "m1".into(),
            [(t(-15), 90), (t(0), 100)].into_iter().collect(),
        );
        ctx.before.insert("m1".into(), (t(-46), 0));
        let batch = vec![
            cand("m1", 0, 100),  // duplicate of the stored
            cand("m1", -15, 91), // conflict
            cand("m1", -10, 50), // backwards: below the previous 90
            cand("m1", -5, 120), // backwards: above the next 100
            cand("m1", -45, 75), // spike: 75 L in a minute since the day's last
            cand("m1", -30, 80), // backfill
            cand("m1", -10, 50), // the same backwards reading again
            cand("m1", -20, 85), // backwards: below -25 backfilled in this batch
            cand("m1", -25, 86), // backfill, between -30 (this batch) and -15
        ];
        let r = resolve_late_checked(batch.clone(), &ctx, &meters());
        let mut reasons: Vec<_> = r.quarantine.iter().map(|q| q.reason.as_str()).collect();
        reasons.sort();
        assert_eq!(
            reasons,
            vec!["backwards", "backwards", "backwards", "conflict", "spike"]
        );
        assert_eq!(r.duplicates, 2);
        let ts: Vec<_> = r.backfill.iter().map(|b| b.ts).collect();
        assert_eq!(ts, vec![t(-30), t(-25)]);

        // Replayed: nothing is stored or quarantined again.
        for b in &r.backfill {
            ctx.stored.get_mut("m1").unwrap().insert(b.ts, b.volume_l);
        }
        ctx.quarantined = r.quarantine.iter().filter_map(quarantine_key).collect();
        let again = resolve_late_checked(batch.clone(), &ctx, &meters());
        assert!(again.backfill.is_empty() && again.quarantine.is_empty());
        assert_eq!(again.duplicates, batch.len() as u64);
    }

    #[test]
    fn meter_gaps_are_seen() {
        let gws = vec![Some("gw".to_string())];
        let v = validate(vec![cand("m1", 60, 150)], &gws, &meters(), window());
        assert_eq!(v.meter_gaps.len(), 1);
        assert_eq!(v.meter_gaps[0].from_ts, t(0));
    }

    #[test]
    fn sequence_gaps_open_fill_and_reset() {
        let mut s = SeqState::default();
        assert_eq!(s.observe(5, true), vec![SeqOp::Open { from: 1, to: 4 }]);
        s.gaps.clear();
        assert!(s.observe(6, true).is_empty());
        assert_eq!(s.observe(10, true), vec![SeqOp::Open { from: 7, to: 9 }]);
        s.gaps[0].0 = 42;
        assert_eq!(
            s.observe(8, true),
            vec![
                SeqOp::Shrink {
                    id: 42,
                    from: 7,
                    to: 7
                },
                SeqOp::Open { from: 9, to: 9 }
            ]
        );
        assert_eq!(s.observe(7, true), vec![SeqOp::Fill { id: 42 }]);
        assert!(s.observe(10, true).is_empty(), "redelivery changes nothing");
        assert!(
            s.observe(1, false).is_empty(),
            "a replayed first batch is no reset"
        );
        assert_eq!(s.observe(1, true), vec![SeqOp::Reset { from: 10, to: 1 }]);
        assert!(s.observe(2, true).is_empty());
    }

    #[test]
    fn decode_refuses_whole_messages_with_the_payload() {
        let mut meta = MsgMeta {
            topic: "waterworks/v1/gw/readings".into(),
            received_at: t(0),
            gateway_id: None,
            batch_seq: None,
        };
        let d = decode_message(0, &mut meta, b"{not json");
        assert_eq!(d.quarantine[0].reason, Reason::Malformed);
        let p = d.quarantine[0].payload.as_ref().unwrap();
        assert_eq!(p.prefix, b"{not json");
        assert_eq!(p.len, 9);
        // A large payload keeps its prefix, length and whole digest.
        let big = vec![b'x'; 3 * QUARANTINE_PAYLOAD_PREFIX_BYTES + 1];
        let d = decode_message(0, &mut meta, &big);
        let q = &d.quarantine[0];
        let p = q.payload.as_ref().unwrap();
        assert_eq!(p.prefix.len(), QUARANTINE_PAYLOAD_PREFIX_BYTES);
        assert_eq!(p.len, big.len());
        assert_eq!(q.digest(), <[u8; 32]>::from(Sha256::digest(&big)));
        let d = decode_message(
            0,
            &mut meta,
            br#"{"gateway_id":"gx","batch_seq":1,"readings":[]}"#,
        );
        assert_eq!(d.quarantine[0].reason, Reason::WrongGateway);
        let d = decode_message(
            0,
            &mut meta,
            br#"{"gateway_id":"gw","batch_seq":1,"readings":[{"meter_id":"m1","ts":"2026-10-01T00:00:00Z","volume_l":18446744073709551615},{"meter_id":"m1","ts":"x","volume_l":1},{"meter_id":"m1","ts":"2026-10-01T00:00:00Z","volume_l":1}]}"#,
        );
        assert_eq!(d.header, Some(("gw".into(), 1)));
        assert_eq!(d.readings.len(), 1);
        assert_eq!(d.quarantine.len(), 2);
    }

    proptest! {
        /// Every reading of any payload is either a candidate or quarantined,
        /// and every candidate is then stored, late, a duplicate or quarantined.
        #[test]
        fn nothing_is_lost(payload in payload_strategy()) {
            let mut meta = MsgMeta { topic: "waterworks/v1/gw/readings".into(), received_at: t(0), gateway_id: None, batch_seq: None };
            let d = decode_message(0, &mut meta, payload.as_bytes());
            let n_in = serde_json::from_str::<serde_json::Value>(&payload).ok()
                .and_then(|v| v.get("readings").and_then(|r| r.as_array()).map(|a| a.len()));
            if d.header.is_some() {
                prop_assert_eq!(Some(d.readings.len() + d.quarantine.len()), n_in);
            } else {
                prop_assert_eq!(d.quarantine.len(), 1);
            }
            let n = d.readings.len() as u64;
            let v = validate(d.readings, &[meta.gateway_id.clone()], &meters(), window());
            let late = v.late.len() as u64;
            prop_assert_eq!(v.fresh.len() as u64 + late + v.quarantine.len() as u64 + v.duplicates, n);
        }
    }

    proptest! {
        /// The strict fast path decodes exactly what the lenient decoder
        /// alone would: same header, same good readings in the same order.
        #[test]
        fn the_fast_decoder_agrees_with_the_lenient_one(payload in payload_strategy()) {
            let mut meta = MsgMeta { topic: "waterworks/v1/gw/readings".into(), received_at: t(0), gateway_id: None, batch_seq: None };
            let d = decode_message(0, &mut meta, payload.as_bytes());
            match ReadingBatch::decode_lenient(payload.as_bytes()) {
                Ok(b) => {
                    prop_assert_eq!(d.header, Some((b.gateway_id.to_string(), b.batch_seq)));
                    let good: Vec<Reading> = b.readings.into_iter().filter_map(Result::ok)
                        .filter(|r| r.volume_l <= i64::MAX as u64).collect();
                    let got: Vec<Reading> = d.readings.into_iter().map(|c| c.reading).collect();
                    prop_assert_eq!(got, good);
                }
                Err(_) => prop_assert!(d.header.is_none()),
            }
        }
    }

    fn payload_strategy() -> impl Strategy<Value = String> {
        let reading = (
            prop_oneof![Just("m1"), Just("m2"), Just("zz"), Just("bad/id")],
            -200i64..20_000,
            prop_oneof![Just(-1i64), 0i64..100_000],
            any::<bool>(),
        )
            .prop_map(|(m, min, vol, extra)| {
                let ts = t(min).to_rfc3339();
                if extra {
                    format!(r#"{{"meter_id":"{m}","ts":"{ts}","volume_l":{vol},"x":1}}"#)
                } else {
                    format!(r#"{{"meter_id":"{m}","ts":"{ts}","volume_l":{vol}}}"#)
                }
            });
        prop_oneof![
            proptest::collection::vec(reading, 0..20).prop_map(|rs| format!(
                r#"{{"gateway_id":"gw","batch_seq":3,"readings":[{}]}}"#,
                rs.join(",")
            )),
            ".{0,64}",
        ]
    }
}
