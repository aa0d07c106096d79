//! Reading meters over Modbus by their device profile.
//!
//! One read of a meter runs the profile's coalesced [`ReadPlan`], each request
//! under the configured timeout and retried with doubling backoff on timeouts
//! and transport errors. A Modbus exception is the meter's own answer: it is
//! counted apart and not retried. A failed meter is left out of its round and
//! never delays another beyond its own timeouts: TCP meters are read
//! concurrently (at most `poll.max_concurrent` at once), each on its own
//! connection; an RTU bus is half-duplex, so its meters take turns.
//!
//! This module only ever sends read requests (function codes 03 and 04): a
//! gateway never writes a register.

use crate::config::{GatewayConfig, MeterConfig, PollConfig, Transport};
use chrono::{DateTime, Utc};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio_modbus::client::{Context, Reader};
use tokio_modbus::slave::{Slave, SlaveContext};
use waterworks_wire::clock::Clock;
use waterworks_wire::profile::{
    DecodeValueError, DeviceProfile, FunctionCode, MeterValues, ReadPlan,
};
use waterworks_wire::{MeterId, Reading};

/// Most connections open at once to one Modbus TCP endpoint (many Modbus TCP
/// gateways accept only a handful); further reads of its meters wait their turn.
pub const MAX_CONNECTIONS_PER_ENDPOINT: usize = 4;
/// Idle TCP connections kept per endpoint between reads; more are closed.
pub const MAX_IDLE_PER_ENDPOINT: usize = MAX_CONNECTIONS_PER_ENDPOINT;
/// Idle TCP connections kept in all; more are closed (10,000 single-meter
/// endpoints would otherwise hold 10,000 sockets open between rounds).
pub const MAX_IDLE_TOTAL: usize = 1024;

/// Why a read of a meter failed.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    #[error("no answer within {0} ms")]
    Timeout(u64),
    #[error("transport: {0}")]
    Transport(String),
    #[error("Modbus exception {code} ({name}) to function {function:02} at register {address}")]
    Exception {
        function: u8,
        address: u16,
        code: u8,
        name: String,
    },
    #[error(
        "answer to function {function:02} at register {address} has {got} registers, {want} asked"
    )]
    ShortAnswer {
        function: u8,
        address: u16,
        got: usize,
        want: u16,
    },
    #[error("decoding by the profile failed: {0}")]
    Decode(#[from] DecodeValueError),
    #[error("implausible values (wrong word order, type or scale in the profile?): {0}")]
    Implausible(String),
}

impl ReadError {
    /// The `outcome` label of `gateway_polls_total`.
    pub fn outcome(&self) -> &'static str {
        match self {
            ReadError::Timeout(_) => "timeout",
            ReadError::Transport(_) => "failed",
            ReadError::Exception { .. } => "exception",
            ReadError::ShortAnswer { .. } | ReadError::Decode(_) | ReadError::Implausible(_) => {
                "decode_error"
            }
        }
    }
    /// Worth another attempt (the link may recover); exceptions and decode errors are not.
    fn retryable(&self) -> bool {
        matches!(self, ReadError::Timeout(_) | ReadError::Transport(_))
    }
}

/// A meter ready to be read: its config with its profile and plan resolved.
#[derive(Debug)]
pub struct MeterRuntime {
    pub meter_id: MeterId,
    pub transport: Transport,
    pub unit_id: u8,
    pub interval_s: u32,
    pub profile: Arc<DeviceProfile>,
    pub plan: Arc<ReadPlan>,
}

impl MeterRuntime {
    pub fn resolve(
        config: &GatewayConfig,
        profiles: &HashMap<String, DeviceProfile>,
    ) -> Result<Vec<Arc<MeterRuntime>>, String> {
        let mut shared: HashMap<&str, (Arc<DeviceProfile>, Arc<ReadPlan>)> = HashMap::new();
        for (id, p) in profiles {
            shared.insert(id, (Arc::new(p.clone()), Arc::new(p.read_plan())));
        }
        config
            .meters
            .iter()
            .filter(|m| m.transport.is_modbus())
            .map(|m: &MeterConfig| {
                let (profile, plan) = shared.get(m.profile.as_str()).ok_or_else(|| {
                    format!(
                        "meter {}: profile {:?} is not loaded",
                        m.meter_id, m.profile
                    )
                })?;
                Ok(Arc::new(MeterRuntime {
                    meter_id: m.meter_id.clone(),
                    transport: m.transport.clone(),
                    unit_id: m.unit_id,
                    interval_s: m.interval_s(&config.poll),
                    profile: profile.clone(),
                    plan: plan.clone(),
                }))
            })
            .collect()
    }
}

/// Open Modbus links: idle TCP connections by endpoint, and one lock per RTU bus.
#[derive(Default)]
pub struct Links {
    idle_tcp: Mutex<HashMap<String, Vec<Context>>>,
    tcp_limits: Mutex<HashMap<String, Arc<tokio::sync::Semaphore>>>,
    rtu_buses: Mutex<HashMap<String, Arc<tokio::sync::Mutex<Option<Context>>>>>,
}

impl std::fmt::Debug for Links {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Links").finish_non_exhaustive()
    }
}

impl Links {
    fn endpoint_limit(&self, addr: &str) -> Arc<tokio::sync::Semaphore> {
        let mut limits = self.tcp_limits.lock().expect("links lock");
        if let Some(s) = limits.get(addr) {
            return s.clone();
        }
        let s = Arc::new(tokio::sync::Semaphore::new(MAX_CONNECTIONS_PER_ENDPOINT));
        limits.insert(addr.to_string(), s.clone());
        s
    }

    fn take_idle(&self, addr: &str) -> Option<Context> {
        let mut idle = self.idle_tcp.lock().expect("links lock");
        idle.get_mut(addr).and_then(|v| v.pop())
    }

    fn put_idle(&self, addr: &str, ctx: Context) {
        let mut idle = self.idle_tcp.lock().expect("links lock");
        let total: usize = idle.values().map(Vec::len).sum();
        let v = idle.entry(addr.to_string()).or_default();
        if v.len() < MAX_IDLE_PER_ENDPOINT && total < MAX_IDLE_TOTAL {
            v.push(ctx);
        }
    }

    pub(crate) fn rtu_bus(&self, key: &str) -> Arc<tokio::sync::Mutex<Option<Context>>> {
        let mut buses = self.rtu_buses.lock().expect("links lock");
        buses.entry(key.to_string()).or_default().clone()
    }
}

/// Reads one meter: the whole plan, retried as configured, then decoded.
pub async fn read_meter(
    links: &Links,
    meter: &MeterRuntime,
    poll: &PollConfig,
) -> Result<MeterValues, ReadError> {
    let mut backoff = Duration::from_millis(poll.retry_backoff_ms);
    let mut attempt = 0;
    loop {
        let result = match &meter.transport {
            Transport::Tcp { addr } => read_tcp(links, addr, meter, poll).await,
            Transport::Rtu(rtu) => crate::rtu::read_rtu(links, rtu, meter, poll).await,
            Transport::Mqtt(_) => Err(ReadError::Transport(
                "an MQTT-native meter is not polled".into(),
            )),
        };
        match result {
            Ok(answers) => {
                let values = meter.profile.decode(&meter.plan, &answers)?;
                check_plausible(&meter.profile, &values).map_err(ReadError::Implausible)?;
                return Ok(values);
            }
            Err(e) if e.retryable() && attempt < poll.retries => {
                attempt += 1;
                tracing::debug!(meter = %meter.meter_id, attempt, error = %e, "retrying meter read");
                tokio::time::sleep(backoff).await;
                backoff = backoff.saturating_mul(2);
            }
            Err(e) => return Err(e),
        }
    }
}

/// Largest totalizer believed, in litres (10 million m³: a DN300 main at full
/// flow for decades stays below it). A wrong word order lands far above.
pub const MAX_PLAUSIBLE_VOLUME_L: u64 = 10_000_000_000;

/// Catches profiles that decode but mean nothing: a totalizer beyond any
/// meter's life, a net that disagrees with forward − reverse, a flow far past
/// the meter's maximum. The usual cause is a wrong word order.
pub fn check_plausible(profile: &DeviceProfile, v: &MeterValues) -> Result<(), String> {
    for (name, x) in [
        ("volume", Some(v.volume_l)),
        ("forward_volume", v.forward_volume_l),
        ("reverse_volume", v.reverse_volume_l),
    ] {
        if let Some(x) = x {
            if x > MAX_PLAUSIBLE_VOLUME_L {
                return Err(format!("{name} {x} L is above {MAX_PLAUSIBLE_VOLUME_L} L"));
            }
        }
    }
    let fields = &profile.fields;
    let volume_is_net = fields.forward_volume.as_ref().is_some_and(|f| {
        (f.function, f.address) != (fields.volume.function, fields.volume.address)
    });
    if let (Some(f), Some(r), true) = (v.forward_volume_l, v.reverse_volume_l, volume_is_net) {
        let net = i128::from(f) - i128::from(r);
        // Each register is rounded to its own resolution (whole m³ on some
        // meters, whose fraction goes to the net only): allow that much.
        let tolerance = 1 + [&fields.forward_volume, &fields.reverse_volume]
            .into_iter()
            .flatten()
            .map(resolution_l)
            .sum::<i128>();
        if (net - i128::from(v.volume_l)).abs() > tolerance {
            return Err(format!(
                "net volume {} L is not forward {f} L minus reverse {r} L",
                v.volume_l
            ));
        }
    }
    if let (Some(flow), Some(max)) = (v.flow_lph, profile.profile.max_flow_lph) {
        if flow.abs() > 100.0 * max {
            return Err(format!(
                "flow {flow} L/h is over 100 times the meter's maximum {max} L/h"
            ));
        }
    }
    Ok(())
}

/// One step of a volume register, in whole litres (at least 1).
fn resolution_l(f: &waterworks_wire::profile::Field) -> i128 {
    use waterworks_wire::profile::Unit;
    let per_unit = match f.unit {
        Unit::CubicMetre => 1000,
        _ => 1,
    };
    let step = f.scale * rust_decimal::Decimal::from(per_unit);
    use rust_decimal::prelude::ToPrimitive;
    step.ceil().to_i128().unwrap_or(i128::MAX / 4).max(1)
}

async fn read_tcp(
    links: &Links,
    addr: &str,
    meter: &MeterRuntime,
    poll: &PollConfig,
) -> Result<Vec<Vec<u16>>, ReadError> {
    let timeout = Duration::from_millis(poll.request_timeout_ms);
    let _turn = links
        .endpoint_limit(addr)
        .acquire_owned()
        .await
        .map_err(|_| ReadError::Transport("endpoint limiter closed".into()))?;
    let mut ctx = match links.take_idle(addr) {
        Some(c) => c,
        None => {
            let stream = tokio::time::timeout(timeout, tokio::net::TcpStream::connect(addr))
                .await
                .map_err(|_| ReadError::Timeout(poll.request_timeout_ms))?
                .map_err(|e| ReadError::Transport(format!("connect {addr}: {e}")))?;
            let _ = stream.set_nodelay(true);
            tokio_modbus::client::tcp::attach_slave(stream, Slave(meter.unit_id))
        }
    };
    ctx.set_slave(Slave(meter.unit_id));
    let result = run_plan(&mut ctx, meter, poll).await;
    // A connection that timed out or broke may still deliver a stale answer: drop it.
    if result.as_ref().map_or_else(|e| !e.retryable(), |_| true) {
        links.put_idle(addr, ctx);
    }
    result
}

pub(crate) async fn run_plan(
    ctx: &mut Context,
    meter: &MeterRuntime,
    poll: &PollConfig,
) -> Result<Vec<Vec<u16>>, ReadError> {
    let timeout = Duration::from_millis(poll.request_timeout_ms);
    let mut answers = Vec::with_capacity(meter.plan.requests.len());
    for req in &meter.plan.requests {
        let call = async {
            match req.function {
                FunctionCode::ReadHolding => {
                    ctx.read_holding_registers(req.address, req.count).await
                }
                FunctionCode::ReadInput => ctx.read_input_registers(req.address, req.count).await,
            }
        };
        let function = req.function as u8;
        let words = tokio::time::timeout(timeout, call)
            .await
            .map_err(|_| ReadError::Timeout(poll.request_timeout_ms))?
            .map_err(|e| ReadError::Transport(e.to_string()))?
            .map_err(|code| ReadError::Exception {
                function,
                address: req.address,
                code: u8::from(code),
                name: format!("{code:?}"),
            })?;
        if words.len() != usize::from(req.count) {
            return Err(ReadError::ShortAnswer {
                function,
                address: req.address,
                got: words.len(),
                want: req.count,
            });
        }
        answers.push(words);
    }
    Ok(answers)
}

/// Reads every meter in `due`, concurrently up to `poll.max_concurrent`;
/// failed meters are logged, counted and left out. Readings come back in the
/// order of `due`.
pub async fn poll_round(
    links: &Arc<Links>,
    due: &[Arc<MeterRuntime>],
    poll: &PollConfig,
    clock: &Clock,
) -> Vec<Reading> {
    use futures::StreamExt;
    let groups = group_by_link(due);
    let (tcp, rtu): (Vec<Vec<usize>>, Vec<Vec<usize>>) = groups
        .into_iter()
        .partition(|g| matches!(due[g[0]].transport, Transport::Tcp { .. }));
    let read = |i: usize| {
        let (links, m, poll, clock) = (links.clone(), due[i].clone(), poll.clone(), clock.clone());
        async move { (i, read_one(&links, &m, &poll, &clock).await) }
    };
    // TCP: the meters of different endpoints interleaved, so that the
    // concurrency bound spreads over endpoints (each takes at most a few
    // connections) instead of queueing on one. Owned futures, built eagerly,
    // keep the stream free of borrowed closures.
    let tcp_reads: Vec<_> = interleave(&tcp).into_iter().map(read).collect();
    let tcp_done = futures::stream::iter(tcp_reads)
        .buffer_unordered(poll.max_concurrent.max(1))
        .collect::<Vec<(usize, Option<Reading>)>>();
    // RTU: one sequential reader per bus (half-duplex), beside the TCP reads
    // and outside their concurrency bound.
    let bus_done = futures::future::join_all(rtu.into_iter().map(|bus| {
        let reads: Vec<_> = bus.into_iter().map(read).collect();
        async move {
            let mut out = Vec::with_capacity(reads.len());
            for r in reads {
                out.push(r.await);
            }
            out
        }
    }));
    let (tcp_results, bus_results) = futures::join!(tcp_done, bus_done);
    let mut slots: Vec<Option<Reading>> = vec![None; due.len()];
    for (i, r) in tcp_results
        .into_iter()
        .chain(bus_results.into_iter().flatten())
    {
        slots[i] = r;
    }
    slots.into_iter().flatten().collect()
}

/// Indices of `due` grouped by link (endpoint or bus), in order of first appearance.
fn group_by_link(due: &[Arc<MeterRuntime>]) -> Vec<Vec<usize>> {
    let mut groups: Vec<Vec<usize>> = Vec::new();
    let mut by_key: HashMap<String, usize> = HashMap::new();
    for (i, m) in due.iter().enumerate() {
        let g = *by_key.entry(m.transport.link_key()).or_insert_with(|| {
            groups.push(Vec::new());
            groups.len() - 1
        });
        groups[g].push(i);
    }
    groups
}

/// One index of each group in turn (order within a group kept).
fn interleave(groups: &[Vec<usize>]) -> Vec<usize> {
    let mut out = Vec::with_capacity(groups.iter().map(Vec::len).sum());
    let longest = groups.iter().map(Vec::len).max().unwrap_or(0);
    for k in 0..longest {
        out.extend(groups.iter().filter_map(|g| g.get(k)));
    }
    out
}

async fn read_one(
    links: &Links,
    m: &MeterRuntime,
    poll: &PollConfig,
    clock: &Clock,
) -> Option<Reading> {
    let ts: DateTime<Utc> = clock.now();
    match read_meter(links, m, poll).await {
        Ok(v) => {
            metrics::counter!("gateway_polls_total", "meter_id" => m.meter_id.to_string(), "outcome" => "ok")
                .increment(1);
            Some(Reading {
                meter_id: m.meter_id.clone(),
                ts,
                volume_l: v.volume_l,
                flow_lph: v.flow_lph,
                alarms: v.alarms,
            })
        }
        Err(e) => {
            tracing::warn!(meter = %m.meter_id, profile = %m.profile.profile.id, outcome = e.outcome(),
                error = %e, "meter read failed; left out of this round");
            metrics::counter!("gateway_polls_total", "meter_id" => m.meter_id.to_string(), "outcome" => e.outcome())
                .increment(1);
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sim_profile() -> DeviceProfile {
        DeviceProfile::load(std::path::Path::new(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../fixtures/profiles/waterworks-sim-v1.toml"
        )))
        .unwrap()
    }

    fn meter(id: &str, addr: &str) -> Arc<MeterRuntime> {
        let p = sim_profile();
        Arc::new(MeterRuntime {
            meter_id: MeterId::parse(id).unwrap(),
            transport: Transport::Tcp { addr: addr.into() },
            unit_id: 1,
            interval_s: 900,
            plan: Arc::new(p.read_plan()),
            profile: Arc::new(p),
        })
    }

    #[test]
    fn interleaves_links_keeping_order_within_each() {
        let due = vec![
            meter("a1", "h:1"),
            meter("a2", "h:1"),
            meter("a3", "h:1"),
            meter("b1", "h:2"),
            meter("c1", "h:3"),
            meter("c2", "h:3"),
        ];
        assert_eq!(interleave(&group_by_link(&due)), vec![0, 3, 4, 1, 5, 2]);
        assert!(interleave(&group_by_link(&[])).is_empty());
    }

    fn values(volume_l: u64, fwd: u64, rev: u64, flow: f64) -> MeterValues {
        MeterValues {
            volume_l,
            forward_volume_l: Some(fwd),
            reverse_volume_l: Some(rev),
            flow_lph: Some(flow),
            alarms: vec![],
        }
    }

    #[test]
    fn plausibility_catches_what_a_wrong_word_order_produces() {
        let p = sim_profile();
        assert!(check_plausible(&p, &values(900, 1000, 100, 12.5)).is_ok());
        assert!(
            check_plausible(&p, &values(901, 1000, 100, 12.5)).is_ok(),
            "a litre of rounding"
        );
        let e = check_plausible(&p, &values(950, 1000, 100, 12.5)).unwrap_err();
        assert!(e.contains("forward"), "{e}");
        // 1,000,000 L with its words reversed (CDAB read as ABCD).
        let swapped = 0x4240_000F_0000_0000u64;
        assert!(check_plausible(&p, &values(swapped, swapped, 0, 0.0)).is_err());
        assert!(check_plausible(&p, &values(900, 1000, 100, 1e9))
            .unwrap_err()
            .contains("flow"));
    }
}
