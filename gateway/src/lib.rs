//! The Waterworks field gateway: polls meters by their device profile, keeps
//! every batch in an on-disk spool, and forwards it to the cluster's broker.
//!
//! ```text
//!  meters --Modbus TCP/RTU--> poller --batches--> spool (fsync) --> uplink --QoS 1--> broker
//!           (poll.rs, rtu.rs)  (lib.rs)            (spool.rs)       (uplink.rs)
//!                                   progress (watch) <-- ingest's ack (after commit) moves the spool's watermark
//! ```
//!
//! - [`config`]: the TOML configuration and its validation ([`load_config`]).
//! - [`poll`]: reading one meter (coalesced plan, timeout, retries) and a round of meters.
//! - [`spool`]: segment files of checksummed records; torn tails are cut on open.
//! - [`uplink`]: MQTT publishing with PUBACK tracking and in-order resend.
//! - [`metrics_http`]: the Prometheus `/metrics` endpoint.
//!
//! Rounds fall on slots aligned to the clock (`poll.interval_s`, or the
//! greatest common divisor of the meters' intervals); a meter is read in the
//! slots that are multiples of its own interval. On the manual clock no slot is
//! ever skipped; on the system clock, slots missed while the box was suspended
//! are skipped with a log line. The gateway never writes a register.

pub mod config;
pub mod metrics_http;
pub mod mqtt_meters;
pub mod poll;
mod rtu;
pub mod spool;
pub mod uplink;

pub use config::{
    load_config, AckMode, ConfigError, GatewayConfig, JsonMapping, MeterConfig, MqttMeterConfig,
    PollConfig, SpoolConfig, Transport, UplinkConfig,
};

use chrono::{DateTime, Duration as ChronoDuration, DurationRound, Utc};
use poll::{Links, MeterRuntime};
use spool::Spool;
use std::sync::{Arc, Mutex};
use tokio::sync::{watch, Notify};
use tokio_util::sync::CancellationToken;
use waterworks_wire::clock::{next_aligned, Clock};
use waterworks_wire::{GatewayId, Reading, ReadingBatch};

/// How far the gateway has come; watched by the demo and the tests.
#[derive(Clone, Debug, Default)]
pub struct Progress {
    /// Slot of the last poll round whose batch is durably spooled.
    pub last_round: Option<DateTime<Utc>>,
    /// Highest batch_seq written to the spool.
    pub spooled_seq: u64,
    /// The spool's done mark: every batch up to it has left the spool,
    /// acknowledged by ingest after its commit (`uplink.ack = "ingest"`) or by
    /// the broker's PUBACK (`"broker"`); batches dropped by the size bound
    /// count as left.
    pub acked_seq: u64,
    /// Batches in the spool not yet acknowledged.
    pub pending_batches: u64,
    /// Seconds since the oldest unacknowledged batch was first sent (0 when
    /// none; batches found in the spool at start count from the start).
    pub oldest_unacked_age_s: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum GatewayError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("configuration: {0}")]
    Invalid(String),
    #[error(transparent)]
    Spool(#[from] spool::SpoolError),
    #[error(transparent)]
    Uplink(#[from] uplink::UplinkError),
    #[error("metrics exporter: {0}")]
    Metrics(String),
    #[error("a gateway task failed: {0}")]
    Task(String),
}

/// A started gateway.
#[derive(Debug)]
pub struct GatewayHandle {
    pub progress: watch::Receiver<Progress>,
    /// Where `/metrics` is served, when `metrics_listen` was set.
    pub metrics_addr: Option<std::net::SocketAddr>,
    task: tokio::task::JoinHandle<Result<(), GatewayError>>,
}

impl GatewayHandle {
    /// Waits until the gateway has stopped (after `shutdown` is cancelled, or on a fatal error).
    pub async fn wait(self) -> Result<(), GatewayError> {
        self.task
            .await
            .map_err(|e| GatewayError::Task(e.to_string()))?
    }
}

/// Starts the gateway: opens the spool (recovering it), then polls and
/// forwards until `shutdown` is cancelled.
pub async fn start(
    config: GatewayConfig,
    clock: Clock,
    shutdown: CancellationToken,
) -> Result<GatewayHandle, GatewayError> {
    config::validate(&config)
        .map_err(|(field, message)| GatewayError::Invalid(format!("field `{field}`: {message}")))?;
    let profiles =
        config::load_profiles(&config).map_err(|e| GatewayError::Invalid(e.to_string()))?;
    let meters = MeterRuntime::resolve(&config, &profiles).map_err(GatewayError::Invalid)?;

    let dir = config.spool.dir.clone();
    let max_bytes = config.spool.max_bytes;
    let (spool, report) = tokio::task::spawn_blocking(move || Spool::open(&dir, max_bytes))
        .await
        .map_err(|e| GatewayError::Task(e.to_string()))??;
    tracing::info!(gateway = %config.gateway_id, meters = meters.len(), spool = %config.spool.dir.display(),
        pending_batches = report.pending_batches, next_seq = spool.next_seq(), "gateway starting");
    let initial = Progress {
        last_round: None,
        spooled_seq: spool.last_seq(),
        acked_seq: spool.done_seq(),
        pending_batches: spool.pending_batches(),
        oldest_unacked_age_s: 0,
    };
    metrics::gauge!("gateway_spool_pending_batches").set(initial.pending_batches as f64);
    metrics::gauge!("gateway_spool_bytes").set(spool.bytes() as f64);
    metrics::gauge!("gateway_meters_configured").set(meters.len() as f64);
    let (progress_tx, progress_rx) = watch::channel(initial);
    let spool = Arc::new(Mutex::new(spool));
    let spooled = Arc::new(Notify::new());

    let metrics_addr = match config.metrics_listen {
        Some(addr) => Some(metrics_http::serve(addr, shutdown.clone()).await?),
        None => None,
    };

    tokio::spawn(spool_gauges(spool.clone(), clock.clone(), shutdown.clone()));
    let poller_stopped = CancellationToken::new();
    let uplink = uplink::Uplink {
        config: config.uplink.clone(),
        gateway_id: config.gateway_id.clone(),
        spool: spool.clone(),
        spooled: spooled.clone(),
        progress: progress_tx.clone(),
        poller_stopped: poller_stopped.clone(),
    };
    let spooler = Arc::new(Spooler {
        spool,
        gateway_id: config.gateway_id.clone(),
        batch_max_readings: config.uplink.batch_max_readings.max(1),
        spooled,
        progress: progress_tx,
    });
    let sources = mqtt_meters::sources(&config).map_err(GatewayError::Invalid)?;
    // The first slot is fixed here, before start returns, so that a driver
    // moving a manual clock right after start cannot make the poller miss it.
    let step_s = meters.iter().map(|m| m.interval_s).fold(0, gcd);
    let step_s = if step_s == 0 {
        config.poll.interval_s
    } else {
        step_s
    };
    let step = ChronoDuration::seconds(i64::from(step_s));
    let first = first_slot(clock.now(), step);
    let poller = Poller {
        step,
        first,
        meters,
        poll: config.poll.clone(),
        clock,
        links: Arc::new(Links::default()),
        spooler: spooler.clone(),
    };
    let gateway_id = config.gateway_id.clone();
    let task = tokio::spawn(async move {
        let mut uplink_task = tokio::spawn(uplink.run());
        // The uplink ends on its own only on a fault: then polling stops too,
        // rather than filling the spool with nobody to send it. The MQTT
        // meter sources stop with the poller (and a fault of either stops both).
        let stop_polling = shutdown.child_token();
        let polling = {
            let stop = stop_polling.clone();
            async move {
                let stop_all = stop.clone();
                let polled = async {
                    let r = poller.run(stop.clone()).await;
                    if r.is_err() {
                        stop_all.cancel();
                    }
                    r
                };
                let sourced = futures::future::join_all(sources.into_iter().map(|src| {
                    let client_id = src.client_id(&gateway_id);
                    let (spooler, stop, stop_all) =
                        (spooler.clone(), stop.clone(), stop_all.clone());
                    async move {
                        let r = mqtt_meters::run_source(src, client_id, spooler, stop).await;
                        if r.is_err() {
                            stop_all.cancel();
                        }
                        r
                    }
                }));
                let (polled, sourced) = futures::join!(polled, sourced);
                polled?;
                sourced
                    .into_iter()
                    .collect::<Result<Vec<()>, GatewayError>>()?;
                Ok::<(), GatewayError>(())
            }
        };
        tokio::pin!(polling);
        let (polled, uplinked) = tokio::select! {
            polled = &mut polling => {
                poller_stopped.cancel();
                (polled, (&mut uplink_task).await)
            }
            uplinked = &mut uplink_task => {
                tracing::error!("uplink stopped on a fault; stopping the gateway");
                stop_polling.cancel();
                ((&mut polling).await, uplinked)
            }
        };
        tracing::info!("gateway stopped");
        polled?;
        uplinked.map_err(|e| GatewayError::Task(e.to_string()))??;
        Ok(())
    });
    Ok(GatewayHandle {
        progress: progress_rx,
        metrics_addr,
        task,
    })
}

/// Runs the gateway until `shutdown` is cancelled and it has flushed what it could.
pub async fn run(
    config: GatewayConfig,
    clock: Clock,
    shutdown: CancellationToken,
) -> Result<(), GatewayError> {
    start(config, clock, shutdown).await?.wait().await
}

/// Validates a config file as `waterworks-gateway check-config` does, and
/// returns a short human summary of what it would poll.
pub fn check_config(path: &std::path::Path) -> Result<String, ConfigError> {
    let c = load_config(path)?;
    let profiles = config::load_profiles(&c).map_err(|e| ConfigError::Invalid {
        path: path.display().to_string(),
        line: None,
        field: "profiles".into(),
        message: e.to_string(),
    })?;
    let mut out = format!(
        "{}: gateway {} polls {} meters; uplink {}; spool {} (max {} bytes)\n",
        path.display(),
        c.gateway_id,
        c.meters.len(),
        c.uplink.url,
        c.spool.dir.display(),
        c.spool.max_bytes
    );
    let mut ids: Vec<_> = profiles.keys().collect();
    ids.sort();
    for id in ids {
        let p = &profiles[id];
        let n = c.meters.iter().filter(|m| &m.profile == id).count();
        let plan = p.read_plan();
        let reqs: Vec<String> = plan
            .requests
            .iter()
            .map(|r| format!("fc{:02}@{}x{}", r.function as u8, r.address, r.count))
            .collect();
        out.push_str(&format!(
            "  profile {id}: {n} meters, {} request(s) per read: {}\n",
            reqs.len(),
            reqs.join(" ")
        ));
    }
    let sources = mqtt_meters::sources(&c).map_err(|message| ConfigError::Invalid {
        path: path.display().to_string(),
        line: None,
        field: "meters".into(),
        message,
    })?;
    if !sources.is_empty() {
        out.push_str(&format!(
            "  {} MQTT subscription(s) for MQTT-native meters:\n",
            sources.len()
        ));
        for s in &sources {
            out.push_str(&format!(
                "    mqtt://{}:{} {:?}: {} meters\n",
                s.host,
                s.port,
                s.topic,
                s.meters.len()
            ));
        }
    }
    Ok(out)
}

/// How often the spool's gauges are refreshed besides on each write and ack.
pub const SPOOL_GAUGE_INTERVAL: std::time::Duration = std::time::Duration::from_secs(5);

/// Refreshes `gateway_spool_bytes`, `gateway_spool_pending_batches` and
/// `gateway_spool_oldest_unsent_age_seconds` (by the readings' timestamps of
/// the oldest unsent batch; 0 when the spool is empty) until shutdown.
async fn spool_gauges(spool: Arc<Mutex<Spool>>, clock: Clock, shutdown: CancellationToken) {
    let mut tick = tokio::time::interval(SPOOL_GAUGE_INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = shutdown.cancelled() => break,
        }
        let spool = spool.clone();
        let measured = tokio::task::spawn_blocking(move || {
            let s = spool.lock().expect("spool lock");
            let oldest = s
                .next_pending_after(s.done_seq())
                .and_then(|seq| s.read(seq).ok().flatten())
                .and_then(|p| ReadingBatch::decode(&p).ok())
                .and_then(|b| b.readings.iter().map(|r| r.ts).min());
            (s.bytes(), s.pending_batches(), oldest)
        })
        .await;
        let Ok((bytes, pending, oldest)) = measured else {
            break;
        };
        metrics::gauge!("gateway_spool_bytes").set(bytes as f64);
        metrics::gauge!("gateway_spool_pending_batches").set(pending as f64);
        let age = oldest.map_or(0.0, |ts| {
            (clock.now() - ts).num_milliseconds().max(0) as f64 / 1000.0
        });
        metrics::gauge!("gateway_spool_oldest_unsent_age_seconds").set(age);
    }
}

/// The first slot at or after `now`: `now` itself when it is aligned.
pub fn first_slot(now: DateTime<Utc>, step: ChronoDuration) -> DateTime<Utc> {
    match now.duration_trunc(step) {
        Ok(floor) if floor == now => now,
        _ => next_aligned(now, step),
    }
}

fn gcd(a: u32, b: u32) -> u32 {
    if b == 0 {
        a
    } else {
        gcd(b, a % b)
    }
}

/// Writes readings to the spool as batches (fsync each) and tells the uplink
/// and the progress watch; shared by the poller and the MQTT meter sources.
pub(crate) struct Spooler {
    spool: Arc<Mutex<Spool>>,
    gateway_id: GatewayId,
    batch_max_readings: usize,
    spooled: Arc<Notify>,
    progress: watch::Sender<Progress>,
}

impl Spooler {
    pub(crate) fn batch_max_readings(&self) -> usize {
        self.batch_max_readings
    }

    /// Spools `readings` (in order) as batches of at most
    /// `batch_max_readings`; nothing is written for none. Returns when every
    /// batch is on disk.
    pub(crate) async fn write(&self, readings: Vec<Reading>) -> Result<(), GatewayError> {
        if readings.is_empty() {
            return Ok(());
        }
        let spool = self.spool.clone();
        let gateway_id = self.gateway_id.clone();
        let chunk = self.batch_max_readings;
        let (last_seq, pending, bytes, dropped) = tokio::task::spawn_blocking(move || {
            let mut s = spool.lock().expect("spool lock");
            let mut dropped = 0;
            let mut rest = readings;
            while !rest.is_empty() {
                let tail = rest.split_off(chunk.min(rest.len()));
                let batch = ReadingBatch {
                    gateway_id: gateway_id.clone(),
                    batch_seq: s.next_seq(),
                    readings: rest,
                };
                dropped += s.append(batch.batch_seq, &batch.encode())?.dropped_batches;
                rest = tail;
            }
            Ok::<_, spool::SpoolError>((s.last_seq(), s.pending_batches(), s.bytes(), dropped))
        })
        .await
        .map_err(|e| GatewayError::Task(e.to_string()))??;
        metrics::gauge!("gateway_spool_pending_batches").set(pending as f64);
        metrics::gauge!("gateway_spool_bytes").set(bytes as f64);
        if dropped > 0 {
            tracing::warn!(dropped, "spool bound reached: oldest batches dropped");
        }
        // Publish under the spool's lock, from its state now: the uplink may
        // have acknowledged batches since `pending` was counted, and a stale
        // count published after its update would never be corrected.
        {
            let s = self.spool.lock().expect("spool lock");
            self.progress.send_modify(|p| {
                p.spooled_seq = last_seq.max(s.last_seq());
                p.pending_batches = s.pending_batches();
            });
        }
        let _ = pending;
        self.spooled.notify_one();
        Ok(())
    }
}

struct Poller {
    step: ChronoDuration,
    first: DateTime<Utc>,
    meters: Vec<Arc<MeterRuntime>>,
    poll: PollConfig,
    clock: Clock,
    links: Arc<Links>,
    spooler: Arc<Spooler>,
}

impl Poller {
    async fn run(self, shutdown: CancellationToken) -> Result<(), GatewayError> {
        let step = self.step;
        let mut slot = self.first;
        loop {
            tokio::select! {
                _ = self.clock.sleep_until(slot) => {}
                _ = shutdown.cancelled() => break,
            }
            let due: Vec<Arc<MeterRuntime>> = self
                .meters
                .iter()
                .filter(|m| slot.timestamp().rem_euclid(i64::from(m.interval_s)) == 0)
                .cloned()
                .collect();
            let started = std::time::Instant::now();
            let readings = tokio::select! {
                r = poll::poll_round(&self.links, &due, &self.poll, &self.clock) => r,
                _ = shutdown.cancelled() => break,
            };
            metrics::histogram!("gateway_round_seconds").record(started.elapsed().as_secs_f64());
            let failed = due.len() - readings.len();
            tracing::debug!(%slot, due = due.len(), read = readings.len(), failed, "poll round done");
            // The round's batches are on disk before the round counts as done.
            self.spooler.write(readings).await?;
            self.spooler
                .progress
                .send_modify(|p| p.last_round = Some(slot));
            slot = self.next_slot(slot, step);
        }
        Ok(())
    }

    fn next_slot(&self, slot: DateTime<Utc>, step: ChronoDuration) -> DateTime<Utc> {
        let next = next_aligned(slot, step);
        if self.clock.is_simulated() {
            return next;
        }
        // On the wall clock, a box that slept past whole slots reads once, now, not once per missed slot.
        let now = self.clock.now();
        let latest = now.duration_trunc(step).unwrap_or(next);
        if latest > next {
            let missed = (latest - next).num_seconds() / step.num_seconds();
            tracing::warn!(from = %next, to = %latest, missed, "poll slots missed (clock jumped or box suspended); skipping to the current one");
            metrics::counter!("gateway_slots_skipped_total").increment(missed as u64);
            return latest;
        }
        next
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_slot_is_now_when_aligned() {
        let q = ChronoDuration::minutes(15);
        let t = |s: &str| DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc);
        assert_eq!(
            first_slot(t("2026-10-01T00:00:00Z"), q),
            t("2026-10-01T00:00:00Z")
        );
        assert_eq!(
            first_slot(t("2026-10-01T00:00:01Z"), q),
            t("2026-10-01T00:15:00Z")
        );
        assert_eq!(gcd(900, 300), 300);
        assert_eq!([900u32, 600].iter().copied().fold(0, gcd), 300);
    }
}
