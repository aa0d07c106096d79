//! Ten thousand meters on 41 loopback ports, every one read over Modbus TCP.
#![cfg(feature = "std")]

use chrono::{TimeZone, Utc};
use edge_firmware::sim::{ConsumptionKind, Fault, SimConfig, SimMeter, Simulator};
use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr};
use tokio_modbus::client::Reader;
use tokio_modbus::prelude::SlaveContext;
use tokio_modbus::Slave;
use tokio_util::sync::CancellationToken;
use waterworks_wire::clock::{Clock, ManualClock};
use waterworks_wire::MeterId;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_meters_answer() {
    let n = 10_000;
    let meters: Vec<SimMeter> = (0..n)
        .map(|i| SimMeter {
            meter_id: MeterId::parse(format!("city-{i:05}")).unwrap(),
            kind: if i % 7 == 0 {
                ConsumptionKind::Commercial
            } else {
                ConsumptionKind::Household {
                    households: 1 + (i % 3) as u32,
                }
            },
            initial_volume_l: i as u64,
            fault: Fault::None,
        })
        .collect();
    let t = Utc.with_ymd_and_hms(2026, 1, 3, 9, 15, 0).unwrap();
    let sim = Simulator::bind(
        SimConfig {
            host: IpAddr::V4(Ipv4Addr::LOCALHOST),
            meters_per_port: 247,
            seed: 10_000,
            meters,
        },
        Clock::Manual(ManualClock::new(t)),
    )
    .await
    .unwrap();
    let addrs = sim.addresses();
    assert_eq!(addrs.len(), n);
    let mut by_port: BTreeMap<_, Vec<_>> = BTreeMap::new();
    for a in &addrs {
        by_port.entry(a.addr).or_default().push(a.clone());
    }
    assert_eq!(by_port.len(), n.div_ceil(247));
    let stop = CancellationToken::new();
    tokio::spawn(sim.clone().run(stop.clone()));
    let mut tasks = Vec::new();
    for (addr, port_meters) in by_port {
        let sim = sim.clone();
        tasks.push(tokio::spawn(async move {
            let mut ctx = tokio_modbus::client::tcp::connect_slave(addr, Slave(1))
                .await
                .unwrap();
            for a in port_meters {
                ctx.set_slave(Slave(a.unit_id));
                let words = ctx.read_input_registers(0, 16).await.unwrap().unwrap();
                assert_eq!(
                    Some(words.as_slice()),
                    sim.registers_at(&a.meter_id, t).as_ref().map(|w| &w[..])
                );
            }
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
    stop.cancel();
}
