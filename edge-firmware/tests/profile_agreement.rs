//! The device profile the gateway reads and the firmware's register map agree.
#![cfg(feature = "std")]

use edge_firmware::registers::{self, alarm_bit};
use edge_firmware::{AlarmThresholds, Inputs, Meter, MeterConfig};
use std::path::Path;
use waterworks_wire::profile::{DeviceProfile, FunctionCode, ValueType, WordOrder};
use waterworks_wire::Alarm;

fn load(name: &str) -> DeviceProfile {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../fixtures/profiles")
        .join(name);
    DeviceProfile::load(&path).expect("the simulator's profile loads")
}

fn profile() -> DeviceProfile {
    load("waterworks-sim-v1.toml")
}

#[test]
fn the_bulk_meter_profile_has_the_same_map_and_a_dn50_q4() {
    let small = profile();
    let bulk = load("waterworks-sim-dn50-v1.toml");
    assert_eq!(bulk.fields, small.fields);
    assert_eq!(
        bulk.profile.max_registers_per_read,
        small.profile.max_registers_per_read
    );
    let dn50 = edge_firmware::sim::Q4_SERIES_LPH
        .iter()
        .find(|(dn, _)| *dn == 50)
        .unwrap()
        .1;
    assert_eq!(bulk.profile.max_flow_lph, Some(f64::from(dn50)));
}

#[test]
fn every_field_sits_where_the_firmware_writes_it() {
    let p = profile();
    let f = &p.fields;
    let check =
        |name: &str, field: &waterworks_wire::profile::Field, address: u16, ty: ValueType| {
            assert_eq!(field.function, FunctionCode::ReadInput, "{name}");
            assert_eq!(field.address, address, "{name}");
            assert_eq!(field.value_type, ty, "{name}");
            assert_eq!(field.word_order, WordOrder::ABCD, "{name}");
        };
    check("volume", &f.volume, registers::REG_VOLUME, ValueType::U64);
    check(
        "flow",
        f.flow.as_ref().unwrap(),
        registers::REG_FLOW,
        ValueType::I32,
    );
    check(
        "forward_volume",
        f.forward_volume.as_ref().unwrap(),
        registers::REG_FORWARD_VOLUME,
        ValueType::U64,
    );
    check(
        "reverse_volume",
        f.reverse_volume.as_ref().unwrap(),
        registers::REG_REVERSE_VOLUME,
        ValueType::U64,
    );
    assert!(f.volume_fraction.is_none());
    let alarms = f.alarms.as_ref().unwrap();
    assert_eq!(alarms.function, FunctionCode::ReadInput);
    assert_eq!(alarms.address, registers::REG_ALARMS);
    let bits: Vec<(&str, u8)> = alarms.bits.iter().map(|(k, v)| (k.as_str(), *v)).collect();
    let mut ours = alarm_bit::ALL.to_vec();
    ours.sort();
    assert_eq!(bits, ours);
    // The profile's Q4 is the default (DN15) burst threshold of the firmware.
    assert_eq!(
        p.profile.max_flow_lph,
        Some(
            f64::from(AlarmThresholds::DEFAULT.max_flow_dlph)
                / f64::from(registers::FLOW_UNITS_PER_LPH)
        )
    );
}

#[test]
fn the_profile_decodes_the_firmware_image_to_the_firmware_values() {
    let p = profile();
    let plan = p.read_plan();
    let mut m = Meter::new(MeterConfig {
        initial_volume_l: 123_456_789,
        ..MeterConfig::DEFAULT
    });
    m.advance(6_000, 3_600_000, &Inputs::NORMAL); // 600 L forward
    m.advance(
        -1_234,
        3_600_000,
        &Inputs {
            tamper: true,
            ..Inputs::NORMAL
        },
    ); // 123.4 L back
    let img = m.registers();
    let answers: Vec<Vec<u16>> = plan
        .requests
        .iter()
        .map(|r| {
            registers::read(&img, r.address, r.count)
                .expect("the plan stays inside the map")
                .to_vec()
        })
        .collect();
    let v = p.decode(&plan, &answers).unwrap();
    assert_eq!(v.volume_l, m.net_l());
    assert_eq!(v.volume_l, 123_456_789 + 600 - 123);
    assert_eq!(v.forward_volume_l, Some(m.forward_l()));
    assert_eq!(v.reverse_volume_l, Some(123));
    assert_eq!(v.flow_lph, Some(-123.4));
    assert_eq!(v.alarms, [Alarm::Backflow, Alarm::Tamper]);
}
