//! A month of simulated use lands in the volumes the brief calls realistic.
#![cfg(feature = "std")]

use chrono::{TimeZone, Utc};
use edge_firmware::registers::{get_u64, REG_VOLUME};
use edge_firmware::sim::{ConsumptionKind, Fault, SimConfig, SimMeter, Simulator};
use std::net::{IpAddr, Ipv4Addr};
use waterworks_wire::clock::Clock;
use waterworks_wire::MeterId;

#[tokio::test]
async fn monthly_volumes_are_realistic_and_vary_by_seed() {
    let kinds = [
        (
            ConsumptionKind::Household { households: 1 },
            8_000.0,
            15_000.0,
        ),
        (
            ConsumptionKind::Household { households: 10 },
            80_000.0,
            150_000.0,
        ),
        (ConsumptionKind::Commercial, 30_000.0, 120_000.0),
        (ConsumptionKind::Bathhouse, 400_000.0, 1_200_000.0),
        (ConsumptionKind::Industrial, 200_000.0, 2_000_000.0),
    ];
    let mut meters = Vec::new();
    for (k, (kind, _, _)) in kinds.iter().enumerate() {
        for i in 0..8 {
            meters.push(SimMeter {
                meter_id: MeterId::parse(format!("k{k}-{i}")).unwrap(),
                kind: *kind,
                initial_volume_l: 0,
                fault: Fault::None,
            });
        }
    }
    let sim = Simulator::bind(
        SimConfig {
            host: IpAddr::V4(Ipv4Addr::LOCALHOST),
            meters_per_port: 247,
            seed: 2026,
            meters,
        },
        Clock::System,
    )
    .await
    .unwrap();
    // A 30.44-day month is what the targets mean; October has 31 days.
    let from = Utc.with_ymd_and_hms(2026, 10, 1, 0, 0, 0).unwrap();
    let to = Utc.with_ymd_and_hms(2026, 11, 1, 0, 0, 0).unwrap();
    let scale = 30.4375 / 31.0;
    for (k, (kind, lo, hi)) in kinds.iter().enumerate() {
        let mut seen = Vec::new();
        for i in 0..8 {
            let id = MeterId::parse(format!("k{k}-{i}")).unwrap();
            let a = get_u64(&sim.registers_at(&id, from).unwrap(), REG_VOLUME);
            let b = get_u64(&sim.registers_at(&id, to).unwrap(), REG_VOLUME);
            let month = (b - a) as f64 * scale;
            // Day-to-day noise: allow 5% beyond the nominal range.
            assert!(
                month > lo * 0.95 && month < hi * 1.05,
                "{kind:?} meter {id}: {month} L in a month, expected {lo}..{hi}"
            );
            seen.push(b - a);
        }
        seen.sort_unstable();
        seen.dedup();
        assert!(seen.len() > 4, "{kind:?}: meters vary by seed: {seen:?}");
    }
}
