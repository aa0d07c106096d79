//! MQTT topic names of contract v1. A gateway publishes only under its own
//! `waterworks/v1/{gateway_id}/`; ingest reads the gateway from the topic and
//! refuses a payload that claims another.

use crate::ids::GatewayId;

pub const PREFIX: &str = "waterworks/v1";
/// Ingest's shared subscription: replicas in group `ingest` split the load.
pub const SHARED_READINGS_FILTER: &str = "$share/ingest/waterworks/v1/+/readings";
/// The same filter without sharing (for tools and tests that watch traffic).
pub const READINGS_FILTER: &str = "waterworks/v1/+/readings";
pub const STATUS_FILTER: &str = "waterworks/v1/+/status";
pub const STATUS_ONLINE: &str = "online";
pub const STATUS_OFFLINE: &str = "offline";

pub fn readings(gateway: &GatewayId) -> String {
    format!("{PREFIX}/{gateway}/readings")
}

pub fn status(gateway: &GatewayId) -> String {
    format!("{PREFIX}/{gateway}/status")
}

/// Ingest's delivery acknowledgement to one gateway (retained, QoS 1): what
/// ingest has committed of that gateway's batches ([`Ack`]).
pub fn ack(gateway: &GatewayId) -> String {
    format!("{PREFIX}/{gateway}/ack")
}

/// Most committed ranges an [`Ack`] carries (the highest ones).
pub const MAX_ACK_RANGES: usize = 32;
/// Largest ack payload a gateway reads (32 ranges of two u64 fit well below).
pub const MAX_ACK_BYTES: usize = 4096;

/// The payload of `waterworks/v1/{gateway_id}/ack`: which batches of this
/// gateway ingest has committed to the store.
///
/// `batch_seq`: every batch from 1 through it is committed (0: not yet known).
/// `ranges`: further committed runs `[from, to]` above `batch_seq`, ascending
/// and disjoint, at most [`MAX_ACK_RANGES`] (the highest), present when
/// batches were committed out of order or some never arrived. A batch is
/// acknowledged when it is at or below `batch_seq` or inside a range; nothing
/// else is. Unknown fields are ignored (an ack is read by old gateways too).
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Ack {
    pub batch_seq: u64,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ranges: Vec<[u64; 2]>,
}

impl Ack {
    /// The ack of a gateway whose committed batches are `1..=last` minus the
    /// `gaps` (inclusive, any order; parts above `last` are ignored).
    pub fn from_gaps(last: u64, gaps: &[(u64, u64)]) -> Ack {
        let mut g: Vec<(u64, u64)> = gaps
            .iter()
            .filter(|(f, t)| f <= t && *f <= last && *f >= 1)
            .map(|&(f, t)| (f, t.min(last)))
            .collect();
        g.sort_unstable();
        let mut runs: Vec<[u64; 2]> = Vec::new();
        let mut next = 1u64;
        for (f, t) in g {
            if f > next {
                runs.push([next, f - 1]);
            }
            next = next.max(t.saturating_add(1));
        }
        if next <= last {
            runs.push([next, last]);
        }
        let mut ack = Ack::default();
        let mut it = runs.into_iter().peekable();
        if let Some(first) = it.peek() {
            if first[0] == 1 {
                ack.batch_seq = first[1];
                it.next();
            }
        }
        let rest: Vec<[u64; 2]> = it.collect();
        let skip = rest.len().saturating_sub(MAX_ACK_RANGES);
        ack.ranges = rest.into_iter().skip(skip).collect();
        ack
    }

    /// Whether batch `seq` is acknowledged.
    pub fn covers(&self, seq: u64) -> bool {
        seq <= self.batch_seq || self.ranges.iter().any(|r| r[0] <= seq && seq <= r[1])
    }

    /// The highest batch this ack names.
    pub fn highest(&self) -> u64 {
        self.ranges
            .iter()
            .map(|r| r[1])
            .max()
            .unwrap_or(0)
            .max(self.batch_seq)
    }

    /// From `done` (every batch up to it has left the spool), the highest
    /// mark such that each batch in `done+1..=mark` is acknowledged, bounded
    /// by `last` (the last batch spooled).
    pub fn advance(&self, done: u64, last: u64) -> u64 {
        let mut d = done;
        loop {
            if d >= last {
                return last.max(done);
            }
            let n = d + 1;
            if n <= self.batch_seq {
                d = self.batch_seq;
            } else if let Some(r) = self.ranges.iter().find(|r| r[0] <= n && n <= r[1]) {
                d = r[1];
            } else {
                return d.min(last).max(done);
            }
        }
    }

    pub fn encode(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("an ack always serializes")
    }

    pub fn decode(bytes: &[u8]) -> Result<Ack, String> {
        if bytes.len() > MAX_ACK_BYTES {
            return Err(format!("ack of {} bytes is too large", bytes.len()));
        }
        let a: Ack = serde_json::from_slice(bytes).map_err(|e| e.to_string())?;
        if a.ranges.len() > MAX_ACK_RANGES || a.ranges.iter().any(|r| r[0] > r[1]) {
            return Err("ack ranges malformed".into());
        }
        Ok(a)
    }
}

/// The kind of a contract topic.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Topic {
    Readings(GatewayId),
    Status(GatewayId),
    Ack(GatewayId),
}

/// Parses a topic of contract v1; `None` for anything else.
pub fn parse(topic: &str) -> Option<Topic> {
    let rest = topic.strip_prefix(PREFIX)?.strip_prefix('/')?;
    let (gw, kind) = rest.split_once('/')?;
    let gw = GatewayId::parse(gw).ok()?;
    match kind {
        "readings" => Some(Topic::Readings(gw)),
        "status" => Some(Topic::Status(gw)),
        "ack" => Some(Topic::Ack(gw)),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        let g = GatewayId::parse("gw-7").unwrap();
        assert_eq!(parse(&readings(&g)), Some(Topic::Readings(g.clone())));
        assert_eq!(parse(&status(&g)), Some(Topic::Status(g)));
        assert_eq!(parse("waterworks/v1/gw/other"), None);
        assert_eq!(parse("waterworks/v2/gw/readings"), None);
        assert_eq!(parse("waterworks/v1/a/b/readings"), None);
        let g = GatewayId::parse("gw-7").unwrap();
        assert_eq!(parse(&ack(&g)), Some(Topic::Ack(g)));
    }

    #[test]
    fn ack_never_covers_a_gap() {
        let a = Ack::from_gaps(10, &[]);
        assert_eq!((a.batch_seq, a.ranges.len()), (10, 0));
        // 5 committed out of order before 4: 4 is not covered.
        let a = Ack::from_gaps(10, &[(4, 4), (8, 9)]);
        assert_eq!(a.batch_seq, 3);
        assert_eq!(a.ranges, vec![[5, 7], [10, 10]]);
        assert!(!a.covers(4) && !a.covers(8) && !a.covers(9) && !a.covers(11));
        assert!(a.covers(3) && a.covers(6) && a.covers(10));
        // Advance walks only over covered batches, skipping what left the spool.
        assert_eq!(a.advance(0, 20), 3);
        assert_eq!(a.advance(4, 20), 7, "4 was dropped by the gateway itself");
        assert_eq!(a.advance(9, 20), 10);
        assert_eq!(a.advance(9, 9), 9);
        // Gaps from a previous sequence above `last` are ignored.
        let a = Ack::from_gaps(3, &[(100, 200)]);
        assert_eq!((a.batch_seq, a.ranges.len()), (3, 0));
        let a = Ack::from_gaps(5, &[(1, 5)]);
        assert_eq!(a, Ack::default());
        assert_eq!(Ack::decode(&a.encode()).unwrap(), a);
        assert_eq!(
            String::from_utf8(Ack::from_gaps(9, &[(2, 3)]).encode()).unwrap(),
            r#"{"batch_seq":1,"ranges":[[4,9]]}"#
        );
        // Many gaps: the highest ranges are kept.
        let gaps: Vec<(u64, u64)> = (1..100).map(|i| (i * 10, i * 10)).collect();
        let a = Ack::from_gaps(1000, &gaps);
        assert_eq!(a.ranges.len(), MAX_ACK_RANGES);
        assert_eq!(a.ranges.last(), Some(&[991, 1000]));
        assert!(Ack::decode(br#"{"batch_seq":1,"ranges":[[5,4]]}"#).is_err());
        assert!(Ack::decode(br#"{"batch_seq":1,"future":true}"#).is_ok());
    }
}
