//! The simulator over real loopback TCP, read with tokio-modbus's client.
#![cfg(feature = "std")]

use chrono::{DateTime, Duration, TimeZone, Utc};
use edge_firmware::registers::{self, alarm_bit};
use edge_firmware::sim::{ConsumptionKind, Fault, SimConfig, SimMeter, Simulator};
use std::net::{IpAddr, Ipv4Addr};
use tokio_modbus::client::{Reader, Writer};
use tokio_modbus::{ExceptionCode, Slave};
use tokio_util::sync::CancellationToken;
use waterworks_wire::clock::{Clock, ManualClock};
use waterworks_wire::MeterId;

fn meter(id: &str, kind: ConsumptionKind, fault: Fault) -> SimMeter {
    SimMeter {
        meter_id: MeterId::parse(id).unwrap(),
        kind,
        initial_volume_l: 1_000_000,
        fault,
    }
}

fn fleet() -> Vec<SimMeter> {
    vec![
        meter(
            "m-1",
            ConsumptionKind::Household { households: 1 },
            Fault::None,
        ),
        meter("m-2", ConsumptionKind::Commercial, Fault::None),
        meter("m-3", ConsumptionKind::Bathhouse, Fault::Exceptions),
        meter("m-4", ConsumptionKind::Industrial, Fault::Dead),
        meter(
            "m-5",
            ConsumptionKind::Household { households: 4 },
            Fault::Slow { delay_ms: 50 },
        ),
    ]
}

fn start() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 10, 1, 0, 0, 0).unwrap()
}

async fn spawn(meters: Vec<SimMeter>, clock: Clock) -> (Simulator, CancellationToken) {
    let sim = Simulator::bind(
        SimConfig {
            host: IpAddr::V4(Ipv4Addr::LOCALHOST),
            meters_per_port: 2,
            seed: 42,
            meters,
        },
        clock,
    )
    .await
    .unwrap();
    let stop = CancellationToken::new();
    tokio::spawn(sim.clone().run(stop.clone()));
    (sim, stop)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serves_the_register_map_and_refuses_everything_else() {
    let manual = ManualClock::new(start());
    let (sim, stop) = spawn(fleet(), Clock::Manual(manual.clone())).await;
    let addrs = sim.addresses();
    assert_eq!(addrs.len(), 5);
    assert_eq!(
        addrs.iter().map(|a| a.unit_id).collect::<Vec<_>>(),
        [1, 2, 1, 2, 1]
    );
    assert_eq!(addrs[0].addr, addrs[1].addr);
    assert_ne!(addrs[0].addr, addrs[2].addr);

    let a = &addrs[0];
    let mut ctx = tokio_modbus::client::tcp::connect_slave(a.addr, Slave(a.unit_id))
        .await
        .unwrap();
    for step in 0..4 {
        let now = start() + Duration::minutes(15 * step);
        manual.set(now);
        let input = ctx.read_input_registers(0, 16).await.unwrap().unwrap();
        let expected = sim.registers_at(&a.meter_id, now).unwrap();
        assert_eq!(input, expected);
        let holding = ctx.read_holding_registers(0, 16).await.unwrap().unwrap();
        assert_eq!(holding, input, "function 03 mirrors the input registers");
    }
    assert_eq!(
        ctx.read_input_registers(6, 1).await.unwrap().unwrap().len(),
        1
    );
    assert_eq!(
        ctx.read_input_registers(10, 7).await.unwrap(),
        Err(ExceptionCode::IllegalDataAddress)
    );
    assert_eq!(
        ctx.read_input_registers(0, 126).await.unwrap(),
        Err(ExceptionCode::IllegalDataValue)
    );
    assert_eq!(
        ctx.write_single_register(0, 0).await.unwrap(),
        Err(ExceptionCode::IllegalFunction),
        "a billing register can never be written"
    );
    assert_eq!(
        ctx.write_multiple_registers(0, &[0, 0, 0, 0])
            .await
            .unwrap(),
        Err(ExceptionCode::IllegalFunction)
    );
    // Unit 3 is not a meter on a port of two.
    let mut other = tokio_modbus::client::tcp::connect_slave(a.addr, Slave(3))
        .await
        .unwrap();
    assert_eq!(
        other.read_input_registers(0, 16).await.unwrap(),
        Err(ExceptionCode::GatewayTargetDevice)
    );
    stop.cancel();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn faulty_meters_misbehave_as_specified() {
    let manual = ManualClock::new(start());
    let (sim, stop) = spawn(fleet(), Clock::Manual(manual)).await;
    let addrs = sim.addresses();

    let exc = &addrs[2];
    let mut ctx = tokio_modbus::client::tcp::connect_slave(exc.addr, Slave(exc.unit_id))
        .await
        .unwrap();
    assert_eq!(
        ctx.read_input_registers(0, 16).await.unwrap(),
        Err(ExceptionCode::ServerDeviceFailure)
    );

    let dead = &addrs[3];
    let mut ctx = tokio_modbus::client::tcp::connect_slave(dead.addr, Slave(dead.unit_id))
        .await
        .unwrap();
    let r = tokio::time::timeout(
        std::time::Duration::from_millis(200),
        ctx.read_input_registers(0, 16),
    )
    .await;
    assert!(r.is_err(), "a dead meter never answers");

    let slow = &addrs[4];
    let mut ctx = tokio_modbus::client::tcp::connect_slave(slow.addr, Slave(slow.unit_id))
        .await
        .unwrap();
    let t0 = std::time::Instant::now();
    let words = ctx.read_input_registers(0, 16).await.unwrap().unwrap();
    assert!(t0.elapsed() >= std::time::Duration::from_millis(50));
    assert_eq!(words, sim.registers_at(&slow.meter_id, start()).unwrap());
    stop.cancel();
}

#[tokio::test]
async fn registers_depend_only_on_seed_spec_and_time() {
    let clock = || Clock::Manual(ManualClock::new(start()));
    let a = Simulator::bind(
        SimConfig {
            host: IpAddr::V4(Ipv4Addr::LOCALHOST),
            meters_per_port: 247,
            seed: 7,
            meters: fleet(),
        },
        clock(),
    )
    .await
    .unwrap();
    // Same meters in another order, on another port layout.
    let mut reversed = fleet();
    reversed.reverse();
    let b = Simulator::bind(
        SimConfig {
            host: IpAddr::V4(Ipv4Addr::LOCALHOST),
            meters_per_port: 1,
            seed: 7,
            meters: reversed,
        },
        clock(),
    )
    .await
    .unwrap();
    let id = MeterId::parse("m-1").unwrap();
    let end = start() + Duration::days(3) + Duration::seconds(59);
    // a is read every 15 minutes, b only at the end, then both go back in time.
    let mut t = start();
    while t < end {
        a.registers_at(&id, t).unwrap();
        t += Duration::minutes(15);
    }
    assert_eq!(a.registers_at(&id, end), b.registers_at(&id, end));
    let earlier = start() + Duration::hours(5);
    assert_eq!(a.registers_at(&id, earlier), b.registers_at(&id, earlier));
    // Within a minute nothing changes; the next minute it may.
    assert_eq!(
        a.registers_at(&id, earlier + Duration::seconds(59)),
        b.registers_at(&id, earlier)
    );
    let other_seed = Simulator::bind(
        SimConfig {
            host: IpAddr::V4(Ipv4Addr::LOCALHOST),
            meters_per_port: 247,
            seed: 8,
            meters: fleet(),
        },
        clock(),
    )
    .await
    .unwrap();
    assert_ne!(a.registers_at(&id, end), other_seed.registers_at(&id, end));
    assert_eq!(a.registers_at(&MeterId::parse("nope").unwrap(), end), None);
    // Before the epoch: the installed meter.
    let before = a
        .registers_at(&id, Utc.with_ymd_and_hms(2025, 6, 1, 0, 0, 0).unwrap())
        .unwrap();
    assert_eq!(
        registers::get_u64(&before, registers::REG_VOLUME),
        1_000_000
    );
    assert_eq!(registers::get_i32(&before, registers::REG_FLOW), 0);
}

#[tokio::test]
async fn faults_raise_their_alarms() {
    let meters = vec![
        meter(
            "leak",
            ConsumptionKind::Household { households: 1 },
            Fault::Leak,
        ),
        meter(
            "burst",
            ConsumptionKind::Household { households: 1 },
            Fault::Burst,
        ),
        meter(
            "back",
            ConsumptionKind::Household { households: 1 },
            Fault::Backflow,
        ),
        meter(
            "tamper",
            ConsumptionKind::Household { households: 1 },
            Fault::Tamper,
        ),
        meter(
            "ok",
            ConsumptionKind::Household { households: 1 },
            Fault::None,
        ),
    ];
    let sim = Simulator::bind(
        SimConfig {
            host: IpAddr::V4(Ipv4Addr::LOCALHOST),
            meters_per_port: 247,
            seed: 1,
            meters,
        },
        Clock::System,
    )
    .await
    .unwrap();
    let alarms = |id: &str, t: DateTime<Utc>| {
        sim.registers_at(&MeterId::parse(id).unwrap(), t).unwrap()[registers::REG_ALARMS as usize]
    };
    let day = start(); // 2026-10-01 00:00 UTC = 09:00 KST
                       // Local 03:15 = 18:15 UTC the day before.
    let burst_t = day + Duration::hours(18) + Duration::minutes(15);
    assert_eq!(alarms("burst", burst_t), 1 << alarm_bit::BURST);
    // Local 14:15 = 05:15 UTC.
    let back_t = day + Duration::hours(5) + Duration::minutes(15);
    assert_eq!(alarms("back", back_t), 1 << alarm_bit::BACKFLOW);
    let r = sim
        .registers_at(&MeterId::parse("back").unwrap(), back_t)
        .unwrap();
    assert!(registers::get_i32(&r, registers::REG_FLOW) < 0);
    assert!(registers::get_u64(&r, registers::REG_REVERSE_VOLUME) > 0);
    // Local 12:15 = 03:15 UTC.
    assert_eq!(
        alarms("tamper", day + Duration::hours(3) + Duration::minutes(15)),
        1 << alarm_bit::TAMPER
    );
    // A latch holds an hour after the condition: tamper ended 12:30, still set 13:15, clear 13:45.
    assert_eq!(
        alarms("tamper", day + Duration::hours(4) + Duration::minutes(15)),
        1 << alarm_bit::TAMPER
    );
    assert_eq!(
        alarms("tamper", day + Duration::hours(4) + Duration::minutes(45)),
        0
    );
    for t in [burst_t, back_t, day] {
        assert_eq!(
            alarms("leak", t) & (1 << alarm_bit::LEAK),
            1 << alarm_bit::LEAK
        );
        assert_eq!(alarms("ok", t), 0);
    }
}
