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

/// The kind of a contract topic.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Topic {
    Readings(GatewayId),
    Status(GatewayId),
}

/// Parses a topic of contract v1; `None` for anything else.
pub fn parse(topic: &str) -> Option<Topic> {
    let rest = topic.strip_prefix(PREFIX)?.strip_prefix('/')?;
    let (gw, kind) = rest.split_once('/')?;
    let gw = GatewayId::parse(gw).ok()?;
    match kind {
        "readings" => Some(Topic::Readings(gw)),
        "status" => Some(Topic::Status(gw)),
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
    }
}
