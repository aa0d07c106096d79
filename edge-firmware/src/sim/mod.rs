//! The simulated fleet: many meters, each running the real firmware core
//! ([`crate::meter::Meter`]), served over Modbus TCP on loopback ports.
//!
//! Determinism: the registers a meter serves at clock time `t` are a pure
//! function of (fleet seed, the meter's spec, `t`). Every meter starts at
//! [`SIM_EPOCH`] (2026-01-01T00:00:00Z) with its `initial_volume_l`, and its
//! firmware is stepped in whole minutes from there; the state at `t` is the
//! state after every minute that ended at or before `t`. Reads change nothing.
//! Each meter caches its last computed minute, so reads at advancing times
//! cost only the minutes since the last read; a read at an earlier time
//! recomputes from the epoch. The flow register shows the flow of the last
//! whole minute. Before the epoch a meter shows its initial volume and no flow.
//!
//! Modbus: unit ids `1..=meters_per_port` on each port, meters assigned to
//! ports in the order of [`SimConfig::meters`]. Function 04 (read input
//! registers) and 03 (read holding registers) both answer the map of
//! [`crate::registers`]; an unknown unit id answers exception 0x0B (gateway
//! target device failed to respond); every write or other function answers
//! 0x01 (illegal function): the meter is read-only. Requests on one TCP
//! connection are answered in order, so a `Slow` meter delays the requests
//! queued behind it on the same connection (as one slow device on a serial
//! bus behind a Modbus gateway does); a `Dead` meter delays nothing.
//!
//! Telemetry: `tracing` logs; counters `waterworks_sim_modbus_requests_total`
//! (label `outcome` = answered, exception, unanswered) and
//! `waterworks_sim_mqtt_readings_total`.

mod consumption;
pub mod mqtt;
mod server;

pub use consumption::{BACKFLOW_FLOW_DLPH, LEAK_FLOW_DLPH, Q4_SERIES_LPH, SIM_EPOCH_UNIX_S};

use crate::alarms::{AlarmThresholds, Inputs};
use crate::meter::{Meter, MeterConfig};
use crate::registers::RegisterImage;
use crate::totalizer::DEFAULT_DIGITS;
use chrono::{DateTime, Utc};
use consumption::Consumption;
use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use waterworks_wire::clock::Clock;
use waterworks_wire::MeterId;

/// Minute 0 of every simulated meter.
pub fn sim_epoch() -> DateTime<Utc> {
    DateTime::from_timestamp(SIM_EPOCH_UNIX_S, 0).expect("the epoch is a valid time")
}

/// Most TCP connections one port accepts at once; further connections are
/// closed at once (a real Modbus TCP gateway also has a small session limit).
pub const MAX_CONNECTIONS_PER_PORT: usize = 256;

/// Milliseconds in one simulation step.
const STEP_MS: u32 = 60_000;

/// How the premises behind a meter use water.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConsumptionKind {
    /// Homes: 8 to 15 m³ a month per household, morning and evening peaks,
    /// weekends later; `households` > 1 is a multi-household premises.
    Household { households: u32 },
    /// Shops and offices (general use): 30 to 120 m³ a month, working hours.
    Commercial,
    /// Public bathhouse: 400 to 1,200 m³ a month, open 05:00-23:00 daily.
    Bathhouse,
    /// Factory: 200 to 2,000 m³ a month, two shifts on weekdays.
    Industrial,
}

/// A fault injected into one meter.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fault {
    None,
    /// A constant 6 L/h on top of normal use, day and night: the leak alarm
    /// is raised after 24 h and never clears.
    Leak,
    /// Every day 03:00-03:30 local, flow at 1.25 × the meter's Q4: burst alarm.
    Burst,
    /// Every day 14:00-14:20 local, −150 L/h: reverse totalizer and backflow alarm.
    Backflow,
    /// Every day 12:00-12:30 local, a magnet on the meter: tamper alarm.
    Tamper,
    /// Accepts connections but never answers a request to this unit.
    Dead,
    /// Answers every request with exception 04 (server device failure).
    Exceptions,
    /// Answers correctly after `delay_ms` of real time (its registers are
    /// taken when the request arrives).
    Slow {
        delay_ms: u64,
    },
}

/// One simulated meter.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SimMeter {
    pub meter_id: MeterId,
    pub kind: ConsumptionKind,
    /// The net (and forward) register at [`SIM_EPOCH`], litres.
    pub initial_volume_l: u64,
    pub fault: Fault,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SimConfig {
    /// Address to listen on (127.0.0.1); each port is bound as port 0.
    pub host: IpAddr,
    /// Meters (unit ids `1..=n`) per TCP port, 1 to 247.
    pub meters_per_port: u8,
    /// Fleet seed: with the meters' specs it fixes every register at every time.
    pub seed: u64,
    pub meters: Vec<SimMeter>,
}

/// Where the gateway finds one meter.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MeterAddress {
    pub meter_id: MeterId,
    pub addr: SocketAddr,
    pub unit_id: u8,
}

#[derive(Debug, thiserror::Error)]
pub enum SimError {
    #[error("meters_per_port must be 1 to 247, not {0}")]
    MetersPerPort(u8),
    #[error("meter {0} appears twice in the fleet")]
    DuplicateMeter(MeterId),
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("Modbus server on {addr} failed: {source}")]
    Serve {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("the simulator is already running")]
    AlreadyRunning,
    #[error("the reading interval must be at least one second")]
    Interval,
}

/// The cached state of one meter: its firmware after `minute` whole minutes.
#[derive(Debug)]
struct Progress {
    minute: u64,
    meter: Meter,
}

#[derive(Debug)]
pub(crate) struct SimMeterState {
    pub(crate) meter_id: MeterId,
    pub(crate) fault: Fault,
    config: MeterConfig,
    consumption: Consumption,
    progress: Mutex<Progress>,
}

impl SimMeterState {
    fn new(fleet_seed: u64, spec: &SimMeter) -> Self {
        let seed = consumption::meter_seed(fleet_seed, spec.meter_id.as_str());
        let consumption = Consumption::new(seed, &spec.kind, &spec.fault);
        let config = MeterConfig {
            digits: DEFAULT_DIGITS,
            initial_volume_l: spec.initial_volume_l,
            thresholds: AlarmThresholds {
                max_flow_dlph: consumption.max_flow_dlph,
                ..AlarmThresholds::DEFAULT
            },
        };
        Self {
            meter_id: spec.meter_id.clone(),
            fault: spec.fault.clone(),
            config,
            consumption,
            progress: Mutex::new(Progress {
                minute: 0,
                meter: Meter::new(config),
            }),
        }
    }

    /// The registers at `t`: the firmware stepped through every whole minute
    /// from the epoch up to `t`.
    pub(crate) fn registers_at(&self, t: DateTime<Utc>) -> RegisterImage {
        let target = minutes_since_epoch(t);
        // A poisoned lock only means another reader panicked mid-step; the
        // state is rebuilt below if it went backwards, and otherwise it is a
        // consistent minute boundary (steps never panic).
        let mut p = self
            .progress
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if p.minute > target {
            p.minute = 0;
            p.meter = Meter::new(self.config);
        }
        while p.minute < target {
            // Whole calm hours in at most three steps (exactly equal to 60
            // one-minute steps, see `Meter::advance_run`); the rest minute by minute.
            if p.minute % 60 == 0 && target - p.minute >= 60 {
                if let Some(runs) = self.consumption.calm_runs(p.minute / 60) {
                    for r in runs {
                        p.meter.advance_run(
                            r.sum_dlph * u64::from(STEP_MS),
                            r.last_flow_dlph,
                            r.minutes * STEP_MS,
                            &Inputs::NORMAL,
                        );
                    }
                    p.minute += 60;
                    continue;
                }
            }
            let (flow, inputs) = self.consumption.at(p.minute);
            p.meter.advance(flow, STEP_MS, &inputs);
            p.minute += 1;
        }
        p.meter.registers()
    }

    /// Nominal diameter of the meter the simulator chose for the premises.
    pub(crate) fn diameter_mm(&self) -> u16 {
        self.consumption.diameter_mm
    }
}

fn minutes_since_epoch(t: DateTime<Utc>) -> u64 {
    let s = t.timestamp() - SIM_EPOCH_UNIX_S;
    if s <= 0 {
        0
    } else {
        (s / 60) as u64
    }
}

/// The fleet shared by every connection.
#[derive(Debug)]
pub(crate) struct Fleet {
    pub(crate) clock: Clock,
    pub(crate) meters: Vec<SimMeterState>,
    /// For each port, the fleet index of unit id 1, 2, ...
    pub(crate) ports: Vec<PortMeters>,
    /// Fleet index of each meter id.
    pub(crate) index: HashMap<MeterId, usize>,
}

#[derive(Debug)]
pub(crate) struct PortMeters {
    pub(crate) addr: SocketAddr,
    pub(crate) first: usize,
    pub(crate) count: usize,
}

impl Fleet {
    /// The meter behind `unit_id` on port `port`, if any.
    pub(crate) fn meter(&self, port: usize, unit_id: u8) -> Option<&SimMeterState> {
        let p = self.ports.get(port)?;
        let i = usize::from(unit_id).checked_sub(1)?;
        if i < p.count {
            self.meters.get(p.first + i)
        } else {
            None
        }
    }
}

/// A running or ready simulated fleet. Cloning shares it, so a test can keep
/// a clone for [`Simulator::registers_at`] while another runs it.
#[derive(Debug, Clone)]
pub struct Simulator {
    fleet: Arc<Fleet>,
    listeners: Arc<Mutex<Option<Vec<TcpListener>>>>,
}

impl Simulator {
    /// Validates the fleet and binds one listener per `meters_per_port`
    /// meters, each on port 0 of `config.host`.
    pub async fn bind(config: SimConfig, clock: Clock) -> Result<Simulator, SimError> {
        if config.meters_per_port == 0 || config.meters_per_port > 247 {
            return Err(SimError::MetersPerPort(config.meters_per_port));
        }
        let mut index = HashMap::with_capacity(config.meters.len());
        for (i, m) in config.meters.iter().enumerate() {
            if index.insert(m.meter_id.clone(), i).is_some() {
                return Err(SimError::DuplicateMeter(m.meter_id.clone()));
            }
        }
        let meters: Vec<SimMeterState> = config
            .meters
            .iter()
            .map(|m| SimMeterState::new(config.seed, m))
            .collect();
        let per_port = usize::from(config.meters_per_port);
        let mut listeners = Vec::new();
        let mut ports = Vec::new();
        for first in (0..meters.len()).step_by(per_port) {
            let want = SocketAddr::new(config.host, 0);
            let listener = TcpListener::bind(want)
                .await
                .map_err(|source| SimError::Bind { addr: want, source })?;
            let addr = listener
                .local_addr()
                .map_err(|source| SimError::Bind { addr: want, source })?;
            ports.push(PortMeters {
                addr,
                first,
                count: per_port.min(meters.len() - first),
            });
            listeners.push(listener);
        }
        tracing::info!(
            meters = meters.len(),
            ports = ports.len(),
            seed = config.seed,
            "meter simulator bound"
        );
        Ok(Simulator {
            fleet: Arc::new(Fleet {
                clock,
                meters,
                ports,
                index,
            }),
            listeners: Arc::new(Mutex::new(Some(listeners))),
        })
    }

    fn meter(&self, id: &MeterId) -> Option<&SimMeterState> {
        self.fleet.index.get(id).map(|i| &self.fleet.meters[*i])
    }

    /// Every meter's address, in the order of [`SimConfig::meters`].
    pub fn addresses(&self) -> Vec<MeterAddress> {
        let mut out = Vec::with_capacity(self.fleet.meters.len());
        for p in &self.fleet.ports {
            for i in 0..p.count {
                out.push(MeterAddress {
                    meter_id: self.fleet.meters[p.first + i].meter_id.clone(),
                    addr: p.addr,
                    unit_id: (i + 1) as u8,
                });
            }
        }
        out
    }

    /// Serves every port until `shutdown` is cancelled. May run once.
    pub async fn run(self, shutdown: CancellationToken) -> Result<(), SimError> {
        let listeners = self
            .listeners
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .take()
            .ok_or(SimError::AlreadyRunning)?;
        server::serve(self.fleet, listeners, shutdown).await
    }

    /// The registers meter `id` serves at clock time `t` (for tests), None if unknown.
    pub fn registers_at(&self, id: &MeterId, t: DateTime<Utc>) -> Option<[u16; 16]> {
        self.meter(id).map(|m| m.registers_at(t))
    }

    /// Brings every meter's cached state to `t` on all cores, so that the
    /// first poll after a long gap (the epoch is 2026-01-01) does not pay
    /// the catch-up inside request handling. Optional: reads do it lazily.
    pub fn warm_up(&self, t: DateTime<Utc>) {
        let meters = &self.fleet.meters;
        let threads = std::thread::available_parallelism()
            .map(std::num::NonZeroUsize::get)
            .unwrap_or(1)
            .clamp(1, 16);
        let chunk = meters.len().div_ceil(threads).max(1);
        std::thread::scope(|s| {
            for part in meters.chunks(chunk) {
                s.spawn(move || {
                    for m in part {
                        m.registers_at(t);
                    }
                });
            }
        });
    }

    /// The nominal diameter (mm) of meter `id`: the smallest ISO 4064 size
    /// whose Q4 its peak flow fits (its burst threshold), None if unknown.
    pub fn diameter_mm(&self, id: &MeterId) -> Option<u16> {
        self.meter(id).map(SimMeterState::diameter_mm)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The reference: every minute stepped on its own, no calm-hour skipping.
    fn minute_by_minute(m: &SimMeterState, minutes: u64) -> Meter {
        let mut meter = Meter::new(m.config);
        for minute in 0..minutes {
            let (flow, inputs) = m.consumption.at(minute);
            meter.advance(flow, STEP_MS, &inputs);
        }
        meter
    }

    #[test]
    fn skipping_calm_hours_equals_stepping_every_minute() {
        let kinds = [
            ConsumptionKind::Household { households: 1 },
            ConsumptionKind::Household { households: 30 },
            ConsumptionKind::Commercial,
            ConsumptionKind::Bathhouse,
            ConsumptionKind::Industrial,
        ];
        let faults = [
            Fault::None,
            Fault::Leak,
            Fault::Burst,
            Fault::Backflow,
            Fault::Tamper,
        ];
        for (i, kind) in kinds.iter().enumerate() {
            for (j, fault) in faults.iter().enumerate() {
                let spec = SimMeter {
                    meter_id: MeterId::parse(format!("eq-{i}-{j}")).unwrap(),
                    kind: *kind,
                    initial_volume_l: 999_999_000,
                    fault: fault.clone(),
                };
                let m = SimMeterState::new(3, &spec);
                // Nine days and a bit, read at odd times along the way.
                let end = 9 * 1440 + 437;
                for target in [61, 1439, 2 * 1440 + 1, 5 * 1440 + 59, end] {
                    let t = sim_epoch() + chrono::Duration::minutes(target as i64);
                    let skipped = m.registers_at(t);
                    let reference = minute_by_minute(&m, target);
                    assert_eq!(
                        skipped,
                        reference.registers(),
                        "{kind:?} {fault:?} at minute {target}"
                    );
                    assert_eq!(
                        m.progress.lock().unwrap().meter,
                        reference,
                        "{kind:?} {fault:?} at minute {target}: whole state"
                    );
                }
            }
        }
    }
}

#[cfg(test)]
mod determinism {
    use super::*;
    use proptest::prelude::*;

    fn spec(kind: u8, fault: u8) -> SimMeter {
        SimMeter {
            meter_id: MeterId::parse(format!("det-{kind}-{fault}")).unwrap(),
            kind: match kind {
                0 => ConsumptionKind::Household { households: 2 },
                1 => ConsumptionKind::Commercial,
                2 => ConsumptionKind::Bathhouse,
                _ => ConsumptionKind::Industrial,
            },
            initial_volume_l: 42,
            fault: match fault {
                0 => Fault::None,
                1 => Fault::Leak,
                2 => Fault::Burst,
                3 => Fault::Backflow,
                _ => Fault::Tamper,
            },
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(48))]

        /// Whatever was read before, and when, the registers at `t` are those
        /// of a fresh meter read only at `t`.
        #[test]
        fn registers_do_not_depend_on_read_history(
            kind in 0u8..4,
            fault in 0u8..5,
            reads in proptest::collection::vec(0i64..20 * 86_400, 1..12),
            t in 0i64..20 * 86_400,
        ) {
            let s = spec(kind, fault);
            let used = SimMeterState::new(11, &s);
            for r in reads {
                used.registers_at(sim_epoch() + chrono::Duration::seconds(r));
            }
            let at = sim_epoch() + chrono::Duration::seconds(t);
            let fresh = SimMeterState::new(11, &s);
            prop_assert_eq!(used.registers_at(at), fresh.registers_at(at));
        }
    }
}
