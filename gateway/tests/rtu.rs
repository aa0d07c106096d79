//! Modbus RTU for real: the gateway's serial port is one end of a pseudo-
//! terminal pair made by socat, and at the other end the firmware core's RTU
//! slave (edge_firmware::rtu) answers for the meters on that bus. One meter
//! answers exceptions (read with a profile outside its map), one unit is
//! absent (times out): the others on the half-duplex bus are still read.

mod common;

use chrono::Duration as ChronoDuration;
use common::*;
use edge_firmware::meter::{Meter, MeterConfig};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_serial::SerialPortBuilderExt;
use tokio_util::sync::CancellationToken;
use waterworks_wire::clock::{Clock, ManualClock};
use waterworks_wire::{topic, GatewayId, ReadingBatch};

struct Socat(std::process::Child);
impl Drop for Socat {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

async fn pty_pair(dir: &Path) -> (Socat, std::path::PathBuf, std::path::PathBuf) {
    let a = dir.join("gw-tty");
    let b = dir.join("meter-tty");
    let child = Command::new("socat")
        .arg(format!("pty,raw,echo=0,link={}", a.display()))
        .arg(format!("pty,raw,echo=0,link={}", b.display()))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("this test needs socat: apt-get install -y socat");
    let guard = Socat(child);
    for _ in 0..100 {
        if a.exists() && b.exists() {
            return (guard, a, b);
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("socat did not create the pty pair");
}

/// The bus: every request frame (8 bytes for functions 03/04) goes to every
/// meter's firmware RTU slave; the addressed one answers.
async fn serve_bus(
    path: std::path::PathBuf,
    meters: Vec<(u8, [u16; 16])>,
    stop: CancellationToken,
) {
    let mut port = tokio_serial::new(path.to_string_lossy(), 19200)
        .open_native_async()
        .unwrap();
    let mut frame = [0u8; 8];
    loop {
        tokio::select! {
            _ = stop.cancelled() => break,
            r = port.read_exact(&mut frame) => { if r.is_err() { break; } }
        }
        for (unit, regs) in &meters {
            let mut out = [0u8; edge_firmware::rtu::MAX_FRAME];
            if let edge_firmware::rtu::Outcome::Reply(n) =
                edge_firmware::rtu::handle(&frame, *unit, regs, &mut out)
            {
                port.write_all(&out[..n]).await.unwrap();
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rtu_meters_over_a_pty_pair() {
    let dir = tempfile::tempdir().unwrap();
    let broker = PrivateBroker::start(dir.path()).await;
    let (_socat, gw_tty, meter_tty) = pty_pair(dir.path()).await;
    let image = |l: u64| {
        Meter::new(MeterConfig {
            initial_volume_l: l,
            ..MeterConfig::DEFAULT
        })
        .registers()
    };
    let stop = CancellationToken::new();
    tokio::spawn(serve_bus(
        meter_tty,
        vec![(1, image(1_234_567)), (2, image(7_654_321)), (5, image(42))],
        stop.clone(),
    ));

    let gw = unique("gw-rtu");
    let tuf = Path::new(env!("CARGO_MANIFEST_DIR")).join("../fixtures/profiles/tuf-2000m.toml");
    let mut text = format!(
        "gateway_id = \"{gw}\"\nprofiles = [{:?}, {:?}]\n\n[poll]\nrequest_timeout_ms = 200\nretries = 1\nretry_backoff_ms = 20\n\n",
        sim_profile_path().display().to_string(),
        tuf.display().to_string()
    );
    for (unit, profile) in [
        (1, "waterworks-sim-v1"),
        (2, "waterworks-sim-v1"),
        (5, "tuf-2000m"),
        (9, "waterworks-sim-v1"),
    ] {
        text.push_str(&format!(
            "[[meters]]\nmeter_id = \"{gw}-u{unit}\"\ntransport = {{ rtu = {{ device = {:?}, baud = 19200, parity = \"none\", stop_bits = 1 }} }}\nunit_id = {unit}\nprofile = \"{profile}\"\n\n",
            gw_tty.display().to_string()
        ));
    }
    text.push_str(&format!(
        "[uplink]\nurl = \"mqtt://127.0.0.1:{}\"\nack = \"broker\"\n\n[spool]\ndir = {:?}\n",
        broker.port,
        dir.path().join("spool").display().to_string()
    ));
    std::fs::write(dir.path().join("gw.toml"), text).unwrap();
    let config = gateway::load_config(&dir.path().join("gw.toml")).unwrap();

    let start = t("2026-10-01T00:00:00Z");
    let manual = ManualClock::new(start);
    let gid = GatewayId::parse(gw.clone()).unwrap();
    let (mut msgs, stop_watch) = watch_topic(broker.port, &topic::readings(&gid)).await;
    let shutdown = CancellationToken::new();
    let handle = gateway::start(config, Clock::Manual(manual.clone()), shutdown.clone())
        .await
        .unwrap();
    let mut progress = handle.progress.clone();
    let mut slot = start;
    for _ in 0..3 {
        wait_progress(&mut progress, "round", |p| p.last_round == Some(slot)).await;
        slot += ChronoDuration::minutes(15);
        manual.set(slot);
    }
    wait_progress(&mut progress, "acked", |p| p.acked_seq >= 3).await;
    shutdown.cancel();
    handle.wait().await.unwrap();
    for k in 0..3 {
        let (_, payload, _) = tokio::time::timeout(Duration::from_secs(5), msgs.recv())
            .await
            .unwrap()
            .unwrap();
        let b = ReadingBatch::decode(&payload).unwrap();
        assert_eq!(b.batch_seq, k + 1);
        let got: Vec<(String, u64)> = b
            .readings
            .iter()
            .map(|r| (r.meter_id.to_string(), r.volume_l))
            .collect();
        assert_eq!(
            got,
            vec![
                (format!("{gw}-u1"), 1_234_567),
                (format!("{gw}-u2"), 7_654_321)
            ]
        );
    }
    stop_watch.cancel();
    stop.cancel();
}
