//! End-to-end delivery (issue 23, items 1, 2 and 8): a batch leaves the
//! gateway's spool only when ingest has committed it, so a broker that
//! acknowledged batches and then lost them (SIGKILLed before its autosave)
//! costs nothing: the gateway sends them again and ingest stores each reading
//! once.
//!
//! The broker is a private Mosquitto started from the project's own
//! `deploy/mosquitto/mosquitto.conf` (autosave every 30 s, persistence in the
//! test's temp folder, its password file and `deploy/mosquitto/acl`): ingest
//! logs in as `ingest` with a password, the gateway as its gateway id. The
//! clock is manual. Needs `mosquitto` and `mosquitto_passwd` on PATH and
//! PostgreSQL at DATABASE_URL.

mod common;

use chrono::{DateTime, Duration, DurationRound, Utc};
use common::{field, fresh_database, unique};
use edge_firmware::sim::{ConsumptionKind, Fault, SimMeter, Simulator};
use gateway::config::{GatewayConfig, UplinkConfig};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration as StdDuration;
use tokio_util::sync::CancellationToken;
use waterworks_test_support::certs;
use waterworks_test_support::mosquitto::{tls_listener_options, Mosquitto};
use waterworks_wire::clock::{Clock, ManualClock};
use waterworks_wire::{GatewayId, MeterId};

const INGEST_PASSWORD: &str = "ingest-test-password-1";
const GATEWAY_PASSWORD: &str = "gateway-test-password-1";

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Mosquitto with the project's reference configuration, rewritten only in
/// its listener address, its paths and its log destination
/// (`waterworks_test_support::mosquitto`): ingest and the gateway log in
/// with their passwords.
type Broker = Mosquitto;

fn start_broker(dir: &Path, gateway: &str) -> Broker {
    start_broker_with(dir, gateway, "")
}

/// The same, its listener over TLS with a certificate for 127.0.0.1
/// signed by a test CA (`dir/ca.crt`). Needs `openssl`.
fn start_broker_tls(dir: &Path, gateway: &str) -> Broker {
    certs::broker_certs(dir);
    start_broker_with(dir, gateway, &tls_listener_options(dir, "ca.crt"))
}

fn start_broker_with(dir: &Path, gateway: &str, extra: &str) -> Broker {
    let reference = std::fs::read_to_string(repo().join("deploy/mosquitto/mosquitto.conf"))
        .expect("deploy/mosquitto/mosquitto.conf");
    assert!(
        reference.contains("\nautosave_interval 30\n"),
        "the reference autosaves every 30 s"
    );
    Mosquitto::start_project(
        &repo(),
        dir,
        &[("ingest", INGEST_PASSWORD), (gateway, GATEWAY_PASSWORD)],
        extra,
    )
}

fn ingest_config(
    db_url: &str,
    broker_url: &str,
    client_id: &str,
    password: &str,
) -> ingest::IngestConfig {
    let mut m = ingest::config::MqttConfig::new(broker_url, client_id);
    m.username = Some("ingest".into());
    m.password = Some(ingest::config::Secret::new(password));
    let mut c = ingest::IngestConfig::new(db_url, m);
    c.http_listen = ([127, 0, 0, 1], 0).into();
    c
}

/// A running ingest replica, started once its subscriptions are acknowledged.
struct Replica {
    stop: CancellationToken,
    task: tokio::task::JoinHandle<Result<(), ingest::IngestError>>,
}

async fn start_ingest(cfg: ingest::IngestConfig) -> (Replica, sqlx::PgPool) {
    let ingest = ingest::Ingest::build(cfg).await.expect("ingest starts");
    let pool = ingest.pool();
    let ready = ingest.broker_ready();
    let stop = CancellationToken::new();
    let task = tokio::spawn(ingest.run_until_stopped(stop.clone()));
    let deadline = std::time::Instant::now() + StdDuration::from_secs(20);
    while !ready() {
        assert!(std::time::Instant::now() < deadline, "ingest subscribed");
        assert!(!task.is_finished(), "ingest stopped early");
        tokio::time::sleep(StdDuration::from_millis(20)).await;
    }
    (Replica { stop, task }, pool)
}

impl Replica {
    async fn stop(self) {
        self.stop.cancel();
        self.task
            .await
            .expect("ingest task")
            .expect("ingest stops cleanly");
    }
}

/// Simulator, registered meters and a gateway on a manual clock.
struct Field {
    prefix: String,
    gw: GatewayId,
    meters: Vec<SimMeter>,
    sim: Simulator,
    stop_sim: CancellationToken,
    manual: ManualClock,
    clock: Clock,
    slot: DateTime<Utc>,
    slots: Vec<DateTime<Utc>>,
}

const STEP_MIN: i64 = 15;

impl Field {
    async fn new(prefix: &str, n: usize, pool: &sqlx::PgPool) -> Field {
        let q = Duration::minutes(STEP_MIN);
        let start = Utc::now().duration_trunc(q).expect("aligned") - Duration::hours(12);
        let manual = ManualClock::new(start);
        let clock = Clock::Manual(manual.clone());
        let gw = GatewayId::parse(format!("{prefix}-gw")).expect("gateway id");
        let meters: Vec<SimMeter> = (0..n)
            .map(|i| SimMeter {
                meter_id: MeterId::parse(format!("{prefix}-m{i:02}")).expect("meter id"),
                kind: ConsumptionKind::Household { households: 1 },
                initial_volume_l: 1_000_000 + i as u64 * 7_919,
                fault: Fault::None,
            })
            .collect();
        let (sim, stop_sim) = field::simulate(&meters, 10, 23, &clock).await;
        field::register(pool, &gw, &meters).await;
        Field {
            prefix: prefix.to_string(),
            gw,
            meters,
            sim,
            stop_sim,
            manual,
            clock,
            slot: start,
            slots: Vec::new(),
        }
    }

    fn gateway_config(&self, broker: &Broker, spool: &Path) -> GatewayConfig {
        field::gateway_config(
            &self.gw,
            &self.sim,
            UplinkConfig {
                url: broker.url(),
                client_id: Some(format!("{}-gw", self.prefix)),
                username: Some(self.gw.to_string()),
                password: Some(GATEWAY_PASSWORD.into()),
                max_inflight: 8,
                ack_timeout_s: 2,
                ..UplinkConfig::default()
            },
            spool,
        )
    }

    /// Waits until the current slot's round is spooled, then moves the clock on.
    async fn round(&mut self, rx: &mut tokio::sync::watch::Receiver<gateway::Progress>) {
        let slot = self.slot;
        field::wait_progress(rx, 20, &format!("round {slot} spooled"), |p| {
            p.last_round == Some(slot)
        })
        .await;
        self.slots.push(slot);
        self.slot += Duration::minutes(STEP_MIN);
        self.manual.set(self.slot);
    }

    /// What the gateway polled: the simulator's registers at each slot, decoded by the profile.
    fn polled(&self) -> BTreeMap<(String, DateTime<Utc>), i64> {
        field::polled(&self.sim, &self.meters, &self.slots)
    }

    /// Every stored reading of this field's meters, and whether any (meter, ts) is there twice.
    async fn stored(&self, pool: &sqlx::PgPool) -> (BTreeMap<(String, DateTime<Utc>), i64>, usize) {
        let rows: Vec<(String, DateTime<Utc>, i64)> = sqlx::query_as(
            "SELECT meter_id, ts, volume_l FROM metering.readings_v1 WHERE meter_id LIKE $1 || '-m%'",
        )
        .bind(&self.prefix)
        .fetch_all(pool)
        .await
        .expect("read back");
        let n = rows.len();
        (rows.into_iter().map(|(m, t, v)| ((m, t), v)).collect(), n)
    }
}

async fn wait_acked(rx: &mut tokio::sync::watch::Receiver<gateway::Progress>, seq: u64, secs: u64) {
    field::wait_progress(
        rx,
        secs,
        &format!("ingest acknowledged through {seq}"),
        |p| p.acked_seq >= seq,
    )
    .await;
}

/// The reproduction: ingest's persistent session subscribed, ingest
/// stopped, four rounds of 20 meters PUBACKed by the broker, the broker
/// SIGKILLed and restarted from its persistence folder (ingest's session is
/// gone: it was never saved). Before end-to-end acks, 0 of the 80 readings
/// were ever stored; now the gateway still holds them, shows them as
/// unacknowledged, and sends them again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broker_killed_while_ingest_is_away_loses_nothing() {
    let prefix = unique("dl");
    let db_url = fresh_database(&format!("ww_test_{prefix}")).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let gw_id = format!("{prefix}-gw");
    let mut broker = start_broker(dir.path(), &gw_id);
    let broker_url = broker.url();
    let icfg = || {
        ingest_config(
            &db_url,
            &broker_url,
            &format!("{prefix}-ingest"),
            INGEST_PASSWORD,
        )
    };

    // Ingest's persistent session is subscribed, then ingest goes away.
    let (replica, pool) = start_ingest(icfg()).await;
    replica.stop().await;

    let mut field = Field::new(&prefix, 20, &pool).await;
    let stop_gw = CancellationToken::new();
    let handle = gateway::start(
        field.gateway_config(&broker, &dir.path().join("spool")),
        field.clock.clone(),
        stop_gw.clone(),
    )
    .await
    .expect("gateway starts");
    let mut progress = handle.progress.clone();
    for _ in 0..4 {
        field.round(&mut progress).await;
    }
    // The fifth slot is where the clock rests; it is polled too.
    let rest = field.slot;
    let p = progress
        .wait_for(|p| p.last_round == Some(rest))
        .await
        .expect("progress")
        .clone();
    field.slots.push(rest);
    assert_eq!(p.spooled_seq, 5, "{p:?}");
    // The broker has them (PUBACKed) but ingest has acknowledged nothing:
    // the gateway keeps all five and its status says how old the oldest is.
    let aged = field::progress_within(&mut progress, 10, |p| p.oldest_unacked_age_s >= 2).await;
    let p = progress.borrow().clone();
    assert!(aged, "the unacknowledged age shows: {p:?}");
    assert_eq!((p.acked_seq, p.pending_batches), (0, 5), "{p:?}");

    broker.kill();
    broker.restart();
    let (replica, _) = start_ingest(icfg()).await;
    wait_acked(&mut progress, 5, 60).await;

    let polled = field.polled();
    assert_eq!(polled.len(), 100);
    let (stored, rows) = field.stored(&pool).await;
    assert_eq!(rows, stored.len(), "no reading stored twice");
    assert_eq!(
        stored, polled,
        "every polled reading stored, with its value"
    );

    stop_gw.cancel();
    handle.wait().await.expect("gateway stops cleanly");
    field.stop_sim.cancel();
    replica.stop().await;
    pool.close().await;
}

/// Under load, the broker SIGKILLed twice (each time restarted from its
/// persistence folder, which holds at most what its last autosave wrote):
/// the stored set equals the polled set, none twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broker_sigkilled_twice_under_load_stores_every_polled_reading_once() {
    let prefix = unique("dk");
    let db_url = fresh_database(&format!("ww_test_{prefix}")).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let gw_id = format!("{prefix}-gw");
    let mut broker = start_broker(dir.path(), &gw_id);
    let (replica, pool) = start_ingest(ingest_config(
        &db_url,
        &broker.url(),
        &format!("{prefix}-ingest"),
        INGEST_PASSWORD,
    ))
    .await;

    let mut field = Field::new(&prefix, 30, &pool).await;
    let stop_gw = CancellationToken::new();
    let handle = gateway::start(
        field.gateway_config(&broker, &dir.path().join("spool")),
        field.clock.clone(),
        stop_gw.clone(),
    )
    .await
    .expect("gateway starts");
    let mut progress = handle.progress.clone();
    for _ in 0..6 {
        field.round(&mut progress).await;
    }
    // Delivery flows before the first kill.
    wait_acked(&mut progress, 6, 30).await;
    let mut replica = Some(replica);
    for kill in 0..2 {
        // Rounds keep being polled and published, and the broker dies right
        // after the last one was handed over: batches it PUBACKed may not be
        // committed yet, and it has not saved them (autosave 30 s). The
        // second time ingest is away meanwhile (a rolling restart), so the
        // broker surely holds PUBACKed batches nobody has committed.
        if kill == 1 {
            replica.take().expect("running").stop().await;
        }
        for _ in 0..3 {
            field.round(&mut progress).await;
        }
        if kill == 1 {
            // Let the broker PUBACK them all.
            tokio::time::sleep(StdDuration::from_millis(500)).await;
        }
        let at_kill = progress.borrow().clone();
        broker.kill();
        for _ in 0..4 {
            field.round(&mut progress).await;
        }
        tokio::time::sleep(StdDuration::from_millis(300)).await;
        broker.restart();
        if replica.is_none() {
            replica = Some(
                start_ingest(ingest_config(
                    &db_url,
                    &broker.url(),
                    &format!("{prefix}-ingest"),
                    INGEST_PASSWORD,
                ))
                .await
                .0,
            );
        }
        eprintln!("kill {kill}: at the kill {at_kill:?}");
        // Back up: the backlog drains (replayed where the broker lost it)
        // while new rounds come.
        for _ in 0..3 {
            field.round(&mut progress).await;
        }
        wait_acked(&mut progress, at_kill.spooled_seq, 60).await;
        eprintln!("kill {kill}: drained to {:?}", *progress.borrow());
    }
    let rest = field.slot;
    let p = progress
        .wait_for(|p| p.last_round == Some(rest))
        .await
        .expect("progress")
        .clone();
    field.slots.push(rest);
    wait_acked(&mut progress, p.spooled_seq, 90).await;

    let polled = field.polled();
    assert_eq!(polled.len(), 30 * field.slots.len());
    let (stored, rows) = field.stored(&pool).await;
    assert_eq!(rows, stored.len(), "no reading stored twice");
    assert_eq!(
        stored.len(),
        polled.len(),
        "stored count equals polled count"
    );
    assert_eq!(
        stored, polled,
        "every polled reading stored, with its value"
    );
    let quarantined: i64 =
        sqlx::query_scalar("SELECT count(*) FROM metering.quarantine WHERE gateway_id = $1")
            .bind(field.gw.as_str())
            .fetch_one(&pool)
            .await
            .expect("quarantine");
    assert_eq!(quarantined, 0, "nothing quarantined");
    eprintln!(
        "{} readings in {} batches polled and stored once across two broker SIGKILLs",
        polled.len(),
        p.spooled_seq
    );

    stop_gw.cancel();
    handle.wait().await.expect("gateway stops cleanly");
    field.stop_sim.cancel();
    replica.expect("running").stop().await;
    pool.close().await;
}

/// Ingest with a wrong password fails loudly, naming the cause.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ingest_with_a_wrong_password_fails_loudly() {
    let prefix = unique("dp");
    let db_url = fresh_database(&format!("ww_test_{prefix}")).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let broker = start_broker(dir.path(), &format!("{prefix}-gw"));
    let cfg = ingest_config(
        &db_url,
        &broker.url(),
        &format!("{prefix}-ingest"),
        "not-the-password",
    );
    let ingest = ingest::Ingest::build(cfg)
        .await
        .expect("builds (no broker yet)");
    let pool = ingest.pool();
    let stop = CancellationToken::new();
    let r = tokio::time::timeout(StdDuration::from_secs(20), ingest.run_until_stopped(stop))
        .await
        .expect("ingest stops on its own");
    let e = r.expect_err("a refused login is an error").to_string();
    assert!(
        e.contains("refused") && e.contains("ingest") && e.contains("password"),
        "{e}"
    );
    // Anonymous is refused too: the reference broker has no anonymous access.
    let mut anon = ingest_config(&db_url, &broker.url(), &format!("{prefix}-anon"), "x");
    anon.mqtt.username = None;
    anon.mqtt.password = None;
    let ingest = ingest::Ingest::build(anon).await.expect("builds");
    let r = tokio::time::timeout(
        StdDuration::from_secs(20),
        ingest.run_until_stopped(CancellationToken::new()),
    )
    .await
    .expect("ingest stops on its own");
    let e = r.expect_err("anonymous is refused").to_string();
    assert!(e.contains("refused") && e.contains("anonymous"), "{e}");
    pool.close().await;
}

/// Item 2: publishes the broker's ACL refuses (a gateway missing from the
/// ACL; with a username other than its id it could not even start) are
/// PUBACKed by Mosquitto and dropped. The gateway keeps them, its status
/// shows them unacknowledged with their age, and once the ACL is fixed its
/// replay delivers every one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publishes_refused_by_the_acl_stay_in_the_spool_and_show() {
    let prefix = unique("da");
    let db_url = fresh_database(&format!("ww_test_{prefix}")).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let gw_id = format!("{prefix}-gw");
    let broker = start_broker(dir.path(), &gw_id);
    let reference_acl = std::fs::read_to_string(dir.path().join("acl")).expect("the reference ACL");
    // Ingest's rules and the gateways' ack rule, but no gateway may publish.
    let refusing: String = reference_acl
        .lines()
        .filter(|l| !l.starts_with("pattern write"))
        .map(|l| format!("{l}\n"))
        .collect();
    assert_ne!(refusing, reference_acl);
    std::fs::write(dir.path().join("acl"), refusing).expect("write the ACL");
    broker.reload();
    let (replica, pool) = start_ingest(ingest_config(
        &db_url,
        &broker.url(),
        &format!("{prefix}-ingest"),
        INGEST_PASSWORD,
    ))
    .await;
    let mut field = Field::new(&prefix, 10, &pool).await;
    let stop_gw = CancellationToken::new();
    let handle = gateway::start(
        field.gateway_config(&broker, &dir.path().join("spool")),
        field.clock.clone(),
        stop_gw.clone(),
    )
    .await
    .expect("gateway starts");
    let mut progress = handle.progress.clone();
    for _ in 0..3 {
        field.round(&mut progress).await;
    }
    let rest = field.slot;
    progress
        .wait_for(|p| p.last_round == Some(rest))
        .await
        .expect("progress");
    field.slots.push(rest);
    let shown = field::progress_within(&mut progress, 15, |p| p.oldest_unacked_age_s >= 3).await;
    let p = progress.borrow().clone();
    assert!(
        shown,
        "the age of the oldest unacknowledged batch shows: {p:?}"
    );
    assert_eq!((p.acked_seq, p.pending_batches), (0, 4), "{p:?}");
    let (stored, _) = field.stored(&pool).await;
    assert!(stored.is_empty(), "the broker dropped what its ACL refused");

    // The ACL fixed: the next replay delivers everything, once.
    std::fs::write(dir.path().join("acl"), &reference_acl).expect("write the ACL");
    broker.reload();
    wait_acked(&mut progress, 4, 60).await;
    let polled = field.polled();
    let (stored, rows) = field.stored(&pool).await;
    assert_eq!(rows, stored.len(), "no reading stored twice");
    assert_eq!(
        stored, polled,
        "every polled reading stored, with its value"
    );
    assert_eq!(progress.borrow().oldest_unacked_age_s, 0);

    stop_gw.cancel();
    handle.wait().await.expect("gateway stops cleanly");
    field.stop_sim.cancel();
    replica.stop().await;
    pool.close().await;
}

/// Item 8 over TLS: ingest and the gateway log in with their passwords over
/// `mqtts://`, each trusting the test CA (`tls_ca_file`); readings flow and
/// are acknowledged end to end.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ingest_and_gateway_over_tls_with_passwords() {
    let prefix = unique("dt");
    let db_url = fresh_database(&format!("ww_test_{prefix}")).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let gw_id = format!("{prefix}-gw");
    let broker = start_broker_tls(dir.path(), &gw_id);
    let ca = dir.path().join("ca.crt");
    let mut cfg = ingest_config(
        &db_url,
        &broker.url(),
        &format!("{prefix}-ingest"),
        INGEST_PASSWORD,
    );
    assert!(cfg.mqtt.url.starts_with("mqtts://"));
    cfg.mqtt.tls_ca_file = Some(ca.clone());
    let (replica, pool) = start_ingest(cfg).await;
    let mut field = Field::new(&prefix, 10, &pool).await;
    let mut gcfg = field.gateway_config(&broker, &dir.path().join("spool"));
    gcfg.uplink.tls_ca_file = Some(ca);
    let stop_gw = CancellationToken::new();
    let handle = gateway::start(gcfg, field.clock.clone(), stop_gw.clone())
        .await
        .expect("gateway starts");
    let mut progress = handle.progress.clone();
    for _ in 0..2 {
        field.round(&mut progress).await;
    }
    let rest = field.slot;
    progress
        .wait_for(|p| p.last_round == Some(rest))
        .await
        .expect("progress");
    field.slots.push(rest);
    wait_acked(&mut progress, 3, 30).await;
    let (stored, rows) = field.stored(&pool).await;
    assert_eq!(rows, stored.len());
    assert_eq!(stored, field.polled());

    stop_gw.cancel();
    handle.wait().await.expect("gateway stops cleanly");
    field.stop_sim.cancel();
    replica.stop().await;
    pool.close().await;
}
