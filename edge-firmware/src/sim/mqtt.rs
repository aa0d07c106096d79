//! MQTT-native meters: meters with their own radio (NB-IoT, LTE-M) that
//! publish their reading to a broker instead of being polled, for the
//! gateway's MQTT source.
//!
//! Each meter publishes, every `interval_s` on slots aligned to the clock,
//! one JSON object on `{topic_prefix}/{meter_id}/reading` (QoS 1, not
//! retained): exactly one [`waterworks_wire::Reading`] of MQTT contract v1,
//! e.g. `{"meter_id":"m-1","ts":"2026-10-01T00:15:00Z","volume_l":1234567,
//! "flow_lph":12.5,"alarms":["leak"]}`, so the gateway can batch it as it is.
//! `ts` is the slot and the values are the registers at the slot, so the
//! readings are as deterministic as the Modbus meters'. Faults: `Dead` and
//! `Exceptions` meters publish nothing; `Slow` meters publish their reading
//! `delay_ms` of real time after the others of the round.
//!
//! One MQTT connection carries the whole simulated fleet (10,000 radios
//! would be 10,000 connections to no one's benefit); its request queue holds
//! [`MQTT_REQUEST_QUEUE`] publishes, and when full the publisher waits.

use super::{Fault, SimError, SimMeter, SimMeterState};
use crate::registers::{self, alarm_bit};
use chrono::{DateTime, Duration, DurationRound, Utc};
use rumqttc::{AsyncClient, Event, MqttOptions, QoS};
use std::collections::HashSet;
use tokio_util::sync::CancellationToken;
use waterworks_wire::clock::{next_aligned, Clock};
use waterworks_wire::{Alarm, MeterId, Reading};

/// Publishes waiting in the MQTT client's queue before the publisher waits.
pub const MQTT_REQUEST_QUEUE: usize = 1024;
/// Wait between reconnection attempts to the broker.
const RECONNECT_DELAY: std::time::Duration = std::time::Duration::from_secs(1);

/// Where MQTT-native meters publish by default (on the gateway's local broker).
pub const DEFAULT_TOPIC_PREFIX: &str = "meters/v1";

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MqttSimConfig {
    pub broker_host: String,
    pub broker_port: u16,
    pub client_id: String,
    /// Meter `m` publishes on `{topic_prefix}/{m}/reading`.
    pub topic_prefix: String,
    /// Seconds between readings (900 = every quarter hour).
    pub interval_s: u32,
    /// Fleet seed (as in [`super::SimConfig`]).
    pub seed: u64,
    pub meters: Vec<SimMeter>,
}

/// The topic meter `meter` publishes its reading on.
pub fn reading_topic(prefix: &str, meter: &MeterId) -> String {
    format!("{prefix}/{meter}/reading")
}

/// The reading an MQTT-native meter publishes for `slot`.
fn reading(m: &SimMeterState, slot: DateTime<Utc>) -> Reading {
    let img = m.registers_at(slot);
    let bits = img[usize::from(registers::REG_ALARMS)];
    let alarms = alarm_bit::ALL
        .iter()
        .filter(|(_, b)| bits & (1 << b) != 0)
        .filter_map(|(name, _)| Alarm::parse(name))
        .collect();
    Reading {
        meter_id: m.meter_id.clone(),
        ts: slot,
        volume_l: registers::get_u64(&img, registers::REG_VOLUME),
        flow_lph: Some(f64::from(registers::get_i32(&img, registers::REG_FLOW)) / 10.0),
        alarms,
    }
}

/// Runs the MQTT-native meters until `shutdown`.
pub async fn run_mqtt(
    config: MqttSimConfig,
    clock: Clock,
    shutdown: CancellationToken,
) -> Result<(), SimError> {
    if config.interval_s == 0 {
        return Err(SimError::Interval);
    }
    let mut seen = HashSet::new();
    for m in &config.meters {
        if !seen.insert(&m.meter_id) {
            return Err(SimError::DuplicateMeter(m.meter_id.clone()));
        }
    }
    let meters: Vec<SimMeterState> = config
        .meters
        .iter()
        .map(|m| SimMeterState::new(config.seed, m))
        .collect();
    let mut options = MqttOptions::new(&config.client_id, &config.broker_host, config.broker_port);
    options.set_keep_alive(std::time::Duration::from_secs(30));
    let (client, mut eventloop) = AsyncClient::new(options, MQTT_REQUEST_QUEUE);

    // The event loop drives the connection (and QoS 1 retries); it reconnects
    // after a pause when the broker goes away.
    let stop_loop = shutdown.clone();
    let driver = tokio::spawn(async move {
        loop {
            tokio::select! {
                () = stop_loop.cancelled() => break,
                ev = eventloop.poll() => match ev {
                    Ok(Event::Incoming(_)) | Ok(Event::Outgoing(_)) => {}
                    Err(e) => {
                        tracing::warn!(error = %e, "MQTT meters: broker connection lost; retrying");
                        tokio::select! {
                            () = stop_loop.cancelled() => break,
                            () = tokio::time::sleep(RECONNECT_DELAY) => {}
                        }
                    }
                },
            }
        }
    });

    let interval = Duration::seconds(i64::from(config.interval_s));
    let now = clock.now();
    let mut slot = match now.duration_trunc(interval) {
        Ok(floor) if floor == now => now,
        _ => next_aligned(now, interval),
    };
    tracing::info!(meters = meters.len(), first = %slot, "MQTT-native meters started");
    'rounds: loop {
        tokio::select! {
            () = shutdown.cancelled() => break,
            () = clock.sleep_until(slot) => {}
        }
        let mut slow_ms = 0u64;
        for pass in [false, true] {
            if pass {
                if slow_ms == 0 {
                    break;
                }
                tokio::select! {
                    () = shutdown.cancelled() => break 'rounds,
                    () = tokio::time::sleep(std::time::Duration::from_millis(slow_ms)) => {}
                }
            }
            for m in &meters {
                let slow = match m.fault {
                    Fault::Dead | Fault::Exceptions => continue,
                    Fault::Slow { delay_ms } => {
                        slow_ms = slow_ms.max(delay_ms);
                        true
                    }
                    _ => false,
                };
                if slow != pass {
                    continue;
                }
                let payload = match serde_json::to_vec(&reading(m, slot)) {
                    Ok(p) => p,
                    Err(e) => {
                        tracing::error!(meter = %m.meter_id, error = %e, "cannot encode reading");
                        continue;
                    }
                };
                let topic = reading_topic(&config.topic_prefix, &m.meter_id);
                tokio::select! {
                    () = shutdown.cancelled() => break 'rounds,
                    r = client.publish(topic, QoS::AtLeastOnce, false, payload) => {
                        match r {
                            Ok(()) => metrics::counter!("waterworks_sim_mqtt_readings_total").increment(1),
                            Err(e) => tracing::warn!(meter = %m.meter_id, error = %e, "MQTT meter could not queue its reading"),
                        }
                    }
                }
            }
        }
        slot += interval;
        // On the wall clock, rounds missed while the host slept are skipped.
        let now = clock.now();
        if !clock.is_simulated() && now - slot > interval {
            tracing::warn!(missed_from = %slot, "MQTT meters skipped missed rounds");
            slot = next_aligned(now, interval);
        }
    }
    let _ = client.disconnect().await;
    driver.abort();
    tracing::info!("MQTT-native meters stopped");
    Ok(())
}
