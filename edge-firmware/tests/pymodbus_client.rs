//! An independent Modbus implementation (pymodbus, from PyPI) reads the
//! simulator over TCP and gets the values the device profile promises.
//!
//! Needs `python3` (3.11+, for tomllib) and `pip install pymodbus`; without
//! them this test FAILS and says so: it is never skipped silently.
#![cfg(feature = "std")]

use chrono::{Duration, TimeZone, Utc};
use edge_firmware::registers::{self, alarm_bit};
use edge_firmware::sim::{ConsumptionKind, Fault, SimConfig, SimMeter, Simulator};
use std::net::{IpAddr, Ipv4Addr};
use std::path::Path;
use tokio_util::sync::CancellationToken;
use waterworks_wire::clock::{Clock, ManualClock};
use waterworks_wire::MeterId;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pymodbus_reads_what_the_profile_promises() {
    let probe = std::process::Command::new("python3")
        .args([
            "-c",
            "import sys, tomllib, pymodbus; print(pymodbus.__version__)",
        ])
        .output();
    match probe {
        Ok(o) if o.status.success() => {}
        Ok(o) => panic!(
            "this test needs pymodbus for python3 (3.11+): run `pip install pymodbus`\n{}",
            String::from_utf8_lossy(&o.stderr)
        ),
        Err(e) => {
            panic!("this test needs python3 (3.11+) with pymodbus (`pip install pymodbus`): {e}")
        }
    }

    let t = Utc.with_ymd_and_hms(2026, 10, 2, 5, 15, 0).unwrap(); // 14:15 KST: backflow
    let clock = ManualClock::new(t);
    let ids = ["py-house", "py-back", "py-bath"];
    let sim = Simulator::bind(
        SimConfig {
            host: IpAddr::V4(Ipv4Addr::LOCALHOST),
            meters_per_port: 10,
            seed: 99,
            meters: vec![
                SimMeter {
                    meter_id: MeterId::parse(ids[0]).unwrap(),
                    kind: ConsumptionKind::Household { households: 2 },
                    initial_volume_l: 4_321,
                    fault: Fault::Leak,
                },
                SimMeter {
                    meter_id: MeterId::parse(ids[1]).unwrap(),
                    kind: ConsumptionKind::Household { households: 1 },
                    initial_volume_l: 77,
                    fault: Fault::Backflow,
                },
                SimMeter {
                    meter_id: MeterId::parse(ids[2]).unwrap(),
                    kind: ConsumptionKind::Bathhouse,
                    initial_volume_l: 123_456_789,
                    fault: Fault::None,
                },
            ],
        },
        Clock::Manual(clock.clone()),
    )
    .await
    .unwrap();
    let stop = CancellationToken::new();
    tokio::spawn(sim.clone().run(stop.clone()));
    let addrs = sim.addresses();
    let port = addrs[0].addr.port().to_string();
    let profile =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../fixtures/profiles/waterworks-sim-v1.toml");
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/pymodbus_read.py");

    for step in 0..2 {
        let now = t + Duration::minutes(15 * step);
        clock.set(now);
        let mut cmd = tokio::process::Command::new("python3");
        cmd.arg(&script).arg(&profile).arg("127.0.0.1").arg(&port);
        for a in &addrs {
            cmd.arg(a.unit_id.to_string());
        }
        let out = cmd.output().await.expect("run python3");
        assert!(
            out.status.success(),
            "pymodbus script failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let lines: Vec<serde_json::Value> = String::from_utf8(out.stdout)
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(lines.len(), addrs.len() + 1);
        for (a, got) in addrs.iter().zip(&lines) {
            let img = sim.registers_at(&a.meter_id, now).unwrap();
            assert_eq!(got["unit"], a.unit_id);
            assert_eq!(
                got["volume"],
                registers::get_u64(&img, registers::REG_VOLUME)
            );
            assert_eq!(
                got["forward_volume"],
                registers::get_u64(&img, registers::REG_FORWARD_VOLUME)
            );
            assert_eq!(
                got["reverse_volume"],
                registers::get_u64(&img, registers::REG_REVERSE_VOLUME)
            );
            let flow = f64::from(registers::get_i32(&img, registers::REG_FLOW)) / 10.0;
            assert!((got["flow"].as_f64().unwrap() - flow).abs() < 1e-9, "{got}");
            let bits = img[usize::from(registers::REG_ALARMS)];
            let names: Vec<&str> = alarm_bit::ALL
                .iter()
                .filter(|(_, b)| bits & (1 << b) != 0)
                .map(|(n, _)| *n)
                .collect();
            let mut names = names;
            names.sort();
            assert_eq!(got["alarms"], serde_json::json!(names), "{}", a.meter_id);
        }
        assert_eq!(lines[0]["alarms"], serde_json::json!(["leak"]));
        assert_eq!(lines[1]["alarms"], serde_json::json!(["backflow"]));
        if step == 0 {
            assert!(
                lines[1]["flow"].as_f64().unwrap() < 0.0,
                "14:15 KST: flowing back"
            );
        }
        let refusals = &lines[addrs.len()];
        assert_eq!(refusals["write_exception"], 1, "writes: illegal function");
        assert_eq!(
            refusals["unknown_unit_exception"], 11,
            "unknown unit: gateway target failed"
        );
    }
    stop.cancel();
}
