//! The library of device profiles under fixtures/profiles/, each decoded from
//! byte vectors as the meter puts them on the wire (register bytes, big-endian
//! per Modbus, in the meter's word order).

use gateway::poll::check_plausible;
use std::path::Path;
use waterworks_wire::profile::{DeviceProfile, FunctionCode, MeterValues};
use waterworks_wire::Alarm;

fn load(name: &str) -> DeviceProfile {
    DeviceProfile::load(
        &Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../fixtures/profiles")
            .join(name),
    )
    .unwrap()
}

/// Answers the profile's plan from a register map given as (address, wire bytes).
fn decode(p: &DeviceProfile, function: FunctionCode, regs: &[(u16, &[u8])]) -> MeterValues {
    let plan = p.read_plan();
    let mut map = std::collections::HashMap::new();
    for (start, bytes) in regs {
        assert_eq!(bytes.len() % 2, 0);
        for (i, w) in bytes.chunks(2).enumerate() {
            map.insert(start + i as u16, u16::from_be_bytes([w[0], w[1]]));
        }
    }
    let answers: Vec<Vec<u16>> = plan
        .requests
        .iter()
        .map(|r| {
            assert_eq!(r.function, function);
            (r.address..r.address + r.count)
                .map(|a| map.get(&a).copied().unwrap_or(0))
                .collect()
        })
        .collect();
    let v = p.decode(&plan, &answers).unwrap();
    check_plausible(p, &v).unwrap();
    v
}

#[test]
fn tuf_2000m_low_word_first() {
    let p = load("tuf-2000m.toml");
    // flow 1.5 m3/h = f32 0x3FC00000 -> CDAB on the wire: 00 00 3F C0
    // positive 123456 m3 = 0x0001E240 -> E2 40 00 01; fraction 0.25 = 0x3E800000 -> 00 00 3E 80
    // negative 10 m3 -> 00 0A 00 00; net 123446 m3 = 0x0001E236 -> E2 36 00 01; fraction 0.5 -> 00 00 3F 00
    // error code 0x0008: pipe empty
    let v = decode(
        &p,
        FunctionCode::ReadHolding,
        &[
            (0, &[0x00, 0x00, 0x3F, 0xC0]),
            (8, &[0xE2, 0x40, 0x00, 0x01, 0x00, 0x00, 0x3E, 0x80]),
            (12, &[0x00, 0x0A, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00]),
            (16, &[0xE2, 0x36, 0x00, 0x01, 0x00, 0x00, 0x3F, 0x00]),
            (71, &[0x00, 0x08]),
        ],
    );
    assert_eq!(v.volume_l, 123_446_500);
    assert_eq!(v.forward_volume_l, Some(123_456_000));
    assert_eq!(v.reverse_volume_l, Some(10_000));
    assert_eq!(v.flow_lph, Some(1500.0));
    assert_eq!(v.alarms, vec![Alarm::EmptyPipe]);
    // Fields within 8 unused registers of each other are read together
    // (max_gap_registers = 8): 0..20 in one request, the error code apart.
    let plan = p.read_plan();
    let spans: Vec<(u16, u16)> = plan.requests.iter().map(|r| (r.address, r.count)).collect();
    assert_eq!(spans, vec![(0, 20), (71, 1)]);
}

#[test]
fn tuf_2000m_read_big_endian_is_caught() {
    // The same bytes read with ABCD (a wrong profile) decode to nonsense that
    // the plausibility check refuses.
    let text = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../fixtures/profiles/tuf-2000m.toml"),
    )
    .unwrap()
    .replace("CDAB", "ABCD");
    let p = DeviceProfile::from_toml(&text, "wrong.toml").unwrap();
    let plan = p.read_plan();
    let mut map = std::collections::HashMap::new();
    for (a, w) in [
        (8u16, 0xE240u16),
        (9, 0x0001),
        (16, 0xE236),
        (17, 0x0001),
        (12, 0x000A),
    ] {
        map.insert(a, w);
    }
    let answers: Vec<Vec<u16>> = plan
        .requests
        .iter()
        .map(|r| {
            (r.address..r.address + r.count)
                .map(|a| map.get(&a).copied().unwrap_or(0))
                .collect()
        })
        .collect();
    match p.decode(&plan, &answers) {
        Err(_) => {}
        Ok(v) => assert!(check_plausible(&p, &v).is_err(), "{v:?}"),
    }
}

#[test]
fn electromagnetic_ieee754_floats() {
    let p = load("mag-ldg-f32.toml");
    // flow 12.75 m3/h = 0x414C0000 (ABCD: 41 4C 00 00); forward 5000 m3 = 00 00 13 88,
    // fraction 0.125 = 3E 00 00 00; reverse 3 m3 = 00 00 00 03; empty pipe alarm = 1.
    let v = decode(
        &p,
        FunctionCode::ReadHolding,
        &[
            (0x1010, &[0x41, 0x4C, 0x00, 0x00]),
            (
                0x1018,
                &[
                    0x00, 0x00, 0x13, 0x88, 0x3E, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x03,
                ],
            ),
            (0x1024, &[0x00, 0x01]),
        ],
    );
    assert_eq!(v.volume_l, 5_000_125);
    assert_eq!(v.forward_volume_l, Some(5_000_000));
    assert_eq!(v.reverse_volume_l, Some(3_000));
    assert_eq!(v.flow_lph, Some(12_750.0));
    assert_eq!(v.alarms, vec![Alarm::EmptyPipe]);
    // Function 03 (the published protocol's data read), and one request of
    // 0x1010..=0x1024 read through the gaps (max_gap_registers).
    let spans: Vec<(FunctionCode, u16, u16)> = p
        .read_plan()
        .requests
        .iter()
        .map(|r| (r.function, r.address, r.count))
        .collect();
    assert_eq!(spans, vec![(FunctionCode::ReadHolding, 0x1010, 21)]);
}

#[test]
fn every_fixture_profile_loads() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../fixtures/profiles");
    let mut n = 0;
    for e in std::fs::read_dir(dir).unwrap() {
        let path = e.unwrap().path();
        if path.extension().is_some_and(|x| x == "toml") {
            DeviceProfile::load(&path).unwrap_or_else(|e| panic!("{e}"));
            n += 1;
        }
    }
    assert!(n >= 3);
}
