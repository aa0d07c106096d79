//! What the root crate's integration tests share: the test server's URL,
//! unique names and fresh databases, from `waterworks-test-support`. (Each
//! test binary compiles this module on its own; not every binary uses every
//! helper.)
#![allow(dead_code)]

/// The PostgreSQL server the tests use: `DATABASE_URL`, else the local one.
pub fn server_url() -> String {
    waterworks_test_support::postgres::server_url()
}

/// A name no other test run on this machine is using: `tag`, the process
/// id, the clock's nanoseconds and a counter.
pub fn unique(tag: &str) -> String {
    waterworks_test_support::unique(tag)
}

/// A fresh database on the test server; fails loudly when there is none.
pub async fn fresh_database(name: &str) -> String {
    waterworks_test_support::postgres::fresh_database(name).await
}

/// The field of the end-to-end tests: simulated meters served over Modbus
/// TCP on a manual clock, registered with ingest, polled by a gateway.
pub mod field {
    use chrono::{DateTime, Utc};
    use edge_firmware::sim::{SimMeter, Simulator};
    use gateway::config::{
        GatewayConfig, MeterConfig, PollConfig, SpoolConfig, Transport, UplinkConfig,
    };
    use std::collections::BTreeMap;
    use std::path::{Path, PathBuf};
    use waterworks_wire::profile::DeviceProfile;
    use waterworks_wire::GatewayId;

    /// Waits until the gateway's progress satisfies `f`, at most `secs`
    /// seconds; whether it did.
    pub async fn progress_within(
        rx: &mut tokio::sync::watch::Receiver<gateway::Progress>,
        secs: u64,
        f: impl Fn(&gateway::Progress) -> bool,
    ) -> bool {
        matches!(
            tokio::time::timeout(std::time::Duration::from_secs(secs), rx.wait_for(f)).await,
            Ok(Ok(_))
        )
    }

    /// [`progress_within`], failing the test with `what` and the progress.
    pub async fn wait_progress(
        rx: &mut tokio::sync::watch::Receiver<gateway::Progress>,
        secs: u64,
        what: &str,
        f: impl Fn(&gateway::Progress) -> bool,
    ) {
        let ok = progress_within(rx, secs, f).await;
        assert!(ok, "{what}; progress {:?}", *rx.borrow());
    }

    /// The profile the simulator speaks.
    pub fn sim_profile() -> PathBuf {
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("fixtures/profiles/waterworks-sim-v1.toml")
    }

    /// The simulator serving `meters` (`per_port` to a Modbus TCP port on
    /// 127.0.0.1) on `clock`, running until the returned token is cancelled.
    pub async fn simulate(
        meters: &[SimMeter],
        per_port: u8,
        seed: u64,
        clock: &waterworks_wire::clock::Clock,
    ) -> (Simulator, tokio_util::sync::CancellationToken) {
        let sim = Simulator::bind(
            edge_firmware::sim::SimConfig {
                host: [127, 0, 0, 1].into(),
                meters_per_port: per_port,
                seed,
                meters: meters.to_vec(),
            },
            clock.clone(),
        )
        .await
        .expect("simulator binds");
        let stop = tokio_util::sync::CancellationToken::new();
        tokio::spawn(sim.clone().run(stop.clone()));
        (sim, stop)
    }

    /// Registers `meters` on gateway `gw` in ingest's registry.
    pub async fn register(pool: &sqlx::PgPool, gw: &GatewayId, meters: &[SimMeter]) {
        ingest::registry::register_meters(
            pool,
            &meters
                .iter()
                .map(|m| ingest::registry::MeterRegistration {
                    meter_id: m.meter_id.clone(),
                    gateway_id: gw.clone(),
                    profile_id: "waterworks-sim-v1".into(),
                    max_flow_lph: None,
                })
                .collect::<Vec<_>>(),
        )
        .await
        .expect("register the meters");
    }

    /// A gateway polling every meter of `sim` each 15 minutes (1 s request
    /// timeout), spooling in `spool` and publishing through `uplink`.
    pub fn gateway_config(
        gw: &GatewayId,
        sim: &Simulator,
        uplink: UplinkConfig,
        spool: &Path,
    ) -> GatewayConfig {
        GatewayConfig {
            gateway_id: gw.clone(),
            poll: PollConfig {
                interval_s: 900,
                request_timeout_ms: 1000,
                ..PollConfig::default()
            },
            profiles: vec![sim_profile()],
            meters: sim
                .addresses()
                .into_iter()
                .map(|a| MeterConfig {
                    meter_id: a.meter_id,
                    transport: Transport::Tcp {
                        addr: a.addr.to_string(),
                    },
                    unit_id: a.unit_id,
                    profile: "waterworks-sim-v1".into(),
                    poll_interval_s: None,
                })
                .collect(),
            uplink,
            spool: SpoolConfig {
                dir: spool.to_path_buf(),
                ..SpoolConfig::default()
            },
            metrics_listen: None,
        }
    }

    /// What the gateway polled: the simulator's registers of each meter at
    /// each slot, decoded by the profile, by (meter, slot).
    pub fn polled(
        sim: &Simulator,
        meters: &[SimMeter],
        slots: &[DateTime<Utc>],
    ) -> BTreeMap<(String, DateTime<Utc>), i64> {
        let profile = DeviceProfile::load(&sim_profile()).expect("profile");
        let plan = profile.read_plan();
        let mut polled = BTreeMap::new();
        for m in meters {
            for &at in slots {
                let regs = sim
                    .registers_at(&m.meter_id, at)
                    .expect("a simulated meter");
                let answers: Vec<Vec<u16>> = plan
                    .requests
                    .iter()
                    .map(|r| regs[r.address as usize..(r.address + r.count) as usize].to_vec())
                    .collect();
                let v = profile.decode(&plan, &answers).expect("decodes");
                polled.insert(
                    (m.meter_id.to_string(), at),
                    i64::try_from(v.volume_l).expect("fits"),
                );
            }
        }
        polled
    }
}
