//! (Long because a profile's parsing, validation, read plan and decoding share its field, type, word-order and unit types; about 230 lines are byte-vector and property tests.)
//!
//! Device profiles: how a meter model lays out its registers.
//!
//! A profile is a TOML file (see `fixtures/profiles/`); the simulator serves
//! the map it describes and the gateway reads meters with it, so the two can
//! never disagree silently. A profile names each field's function code,
//! address, type, word order, scale and unit; [`ReadPlan`] coalesces the fields
//! into as few requests as the meter allows, and [`DeviceProfile::decode`]
//! turns the answered words into litres, litres per hour and alarms.
//!
//! Word orders name where the bytes A (most significant) to D land on the wire
//! for a 32-bit value, and extend to 64-bit values word by word:
//! `ABCD` big-endian (Modbus' own order), `CDAB` low word first, `BADC` bytes
//! swapped in each word, `DCBA` little-endian.

use crate::reading::Alarm;
use rust_decimal::prelude::*;
use serde::Deserialize;
use std::collections::BTreeMap;
use std::path::Path;

/// Modbus allows at most 125 registers in one read (function codes 03 and 04).
pub const MODBUS_MAX_READ_REGISTERS: u16 = 125;

#[derive(Debug, thiserror::Error)]
pub enum ProfileError {
    #[error("cannot read device profile {path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    #[error("device profile {path}: {message}")]
    Parse { path: String, message: String },
    #[error("device profile {path}: field `{field}`: {message}")]
    Invalid {
        path: String,
        field: String,
        message: String,
    },
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeviceProfile {
    pub profile: ProfileInfo,
    pub fields: Fields,
}

/// Who makes the meter and how it may be read.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProfileInfo {
    /// Stable identifier, referenced from gateway configuration.
    pub id: String,
    #[serde(default)]
    pub manufacturer: String,
    #[serde(default)]
    pub model: String,
    #[serde(default)]
    pub description: String,
    /// Largest request the meter answers, in registers (at most 125).
    #[serde(default = "default_max_registers")]
    pub max_registers_per_read: u16,
    /// The meter's permanent maximum flow (Q4), litres per hour; ingest flags
    /// implied flows above it as spikes.
    #[serde(default)]
    pub max_flow_lph: Option<f64>,
    /// Fields of one function code separated by at most this many unused
    /// registers are read in one request (the gap is read and ignored), never
    /// past `max_registers_per_read`. 0 (the default): only contiguous or
    /// overlapping fields are merged. Set it only where the meter answers
    /// every register in the gaps (some answer an exception for a hole).
    #[serde(default)]
    pub max_gap_registers: u16,
}

fn default_max_registers() -> u16 {
    MODBUS_MAX_READ_REGISTERS
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(try_from = "FieldsRepr")]
pub struct Fields {
    /// The billing totalizer (net volume). With `net_volume =
    /// "forward_minus_reverse"` the profile has no such register and this is
    /// a copy of `forward_volume` (the volume is computed, see [`NetVolume`]).
    pub volume: Field,
    /// Where the billing volume comes from.
    pub net_volume: NetVolume,
    /// A separate register holding the totalizer's fraction, added to `volume`
    /// (meters that split the total into an integer and a fraction register).
    #[serde(default)]
    pub volume_fraction: Option<Field>,
    #[serde(default)]
    pub forward_volume: Option<Field>,
    #[serde(default)]
    pub reverse_volume: Option<Field>,
    #[serde(default)]
    pub flow: Option<Field>,
    #[serde(default)]
    pub alarms: Option<AlarmField>,
}

/// Where a profile's billing (net) volume comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NetVolume {
    /// The `fields.volume` register (plus `volume_fraction`).
    #[default]
    Register,
    /// `forward_volume − reverse_volume`, for meters with no net register;
    /// both fields are required and `fields.volume` must be left out. The
    /// difference is taken exactly and then floored to whole litres; a
    /// negative difference is refused as a decode error.
    ForwardMinusReverse,
}

/// The TOML shape of [`Fields`]: `volume` may be left out for a computed net.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FieldsRepr {
    #[serde(default)]
    volume: Option<Field>,
    #[serde(default)]
    net_volume: NetVolume,
    #[serde(default)]
    volume_fraction: Option<Field>,
    #[serde(default)]
    forward_volume: Option<Field>,
    #[serde(default)]
    reverse_volume: Option<Field>,
    #[serde(default)]
    flow: Option<Field>,
    #[serde(default)]
    alarms: Option<AlarmField>,
}

impl TryFrom<FieldsRepr> for Fields {
    type Error = String;
    fn try_from(r: FieldsRepr) -> Result<Self, String> {
        let volume = match (r.net_volume, r.volume, &r.forward_volume, &r.reverse_volume) {
            (NetVolume::Register, Some(v), _, _) => v,
            (NetVolume::Register, None, _, _) => {
                return Err("missing field `volume` (or set net_volume = \"forward_minus_reverse\")".into())
            }
            (NetVolume::ForwardMinusReverse, Some(_), _, _) => {
                return Err("`volume` is computed with net_volume = \"forward_minus_reverse\"; leave the field out".into())
            }
            (NetVolume::ForwardMinusReverse, None, Some(f), Some(_)) => {
                if r.volume_fraction.is_some() {
                    return Err("`volume_fraction` belongs to a net register; net_volume = \"forward_minus_reverse\" has none".into());
                }
                f.clone()
            }
            (NetVolume::ForwardMinusReverse, None, _, _) => {
                return Err("net_volume = \"forward_minus_reverse\" needs both `forward_volume` and `reverse_volume`".into())
            }
        };
        Ok(Fields {
            volume,
            net_volume: r.net_volume,
            volume_fraction: r.volume_fraction,
            forward_volume: r.forward_volume,
            reverse_volume: r.reverse_volume,
            flow: r.flow,
            alarms: r.alarms,
        })
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Deserialize)]
#[serde(try_from = "u8")]
pub enum FunctionCode {
    /// 0x03 Read Holding Registers.
    ReadHolding = 3,
    /// 0x04 Read Input Registers.
    ReadInput = 4,
}

impl TryFrom<u8> for FunctionCode {
    type Error = String;
    fn try_from(v: u8) -> Result<Self, String> {
        match v {
            3 => Ok(FunctionCode::ReadHolding),
            4 => Ok(FunctionCode::ReadInput),
            other => Err(format!(
                "function code {other} cannot read a value; use 3 (holding) or 4 (input)"
            )),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ValueType {
    U16,
    I16,
    U32,
    I32,
    U64,
    F32,
    F64,
}

impl ValueType {
    pub fn words(self) -> u16 {
        match self {
            ValueType::U16 | ValueType::I16 => 1,
            ValueType::U32 | ValueType::I32 | ValueType::F32 => 2,
            ValueType::U64 | ValueType::F64 => 4,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
pub enum WordOrder {
    #[default]
    ABCD,
    CDAB,
    BADC,
    DCBA,
}

impl WordOrder {
    fn words_reversed(self) -> bool {
        matches!(self, WordOrder::CDAB | WordOrder::DCBA)
    }
    fn bytes_swapped(self) -> bool {
        matches!(self, WordOrder::BADC | WordOrder::DCBA)
    }
}

/// Units a field may be stated in; each converts exactly to litres (per hour).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize)]
pub enum Unit {
    #[serde(rename = "L")]
    Litre,
    #[serde(rename = "m3")]
    CubicMetre,
    #[serde(rename = "L/h")]
    LitrePerHour,
    #[serde(rename = "L/min")]
    LitrePerMinute,
    #[serde(rename = "L/s")]
    LitrePerSecond,
    #[serde(rename = "m3/h")]
    CubicMetrePerHour,
}

impl Unit {
    /// Litres or cubic metres (not a flow).
    pub fn is_volume(self) -> bool {
        matches!(self, Unit::Litre | Unit::CubicMetre)
    }
    /// Factor to litres (volumes) or litres per hour (flows).
    pub fn to_base(self) -> Decimal {
        match self {
            Unit::Litre | Unit::LitrePerHour => Decimal::ONE,
            Unit::CubicMetre | Unit::CubicMetrePerHour => Decimal::from(1000),
            Unit::LitrePerMinute => Decimal::from(60),
            Unit::LitrePerSecond => Decimal::from(3600),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Field {
    pub function: FunctionCode,
    pub address: u16,
    #[serde(rename = "type")]
    pub value_type: ValueType,
    #[serde(default)]
    pub word_order: WordOrder,
    /// The engineering value is `raw × scale`, in `unit`. A decimal string so
    /// that `"0.001"` is exact.
    #[serde(default = "one", with = "rust_decimal::serde::str")]
    pub scale: Decimal,
    pub unit: Unit,
}

fn one() -> Decimal {
    Decimal::ONE
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AlarmField {
    pub function: FunctionCode,
    pub address: u16,
    #[serde(default)]
    pub word_order: WordOrder,
    /// Bit number (0 = least significant) of each alarm the meter reports.
    pub bits: BTreeMap<String, u8>,
}

/// One Modbus read request of a plan.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReadRequest {
    pub function: FunctionCode,
    pub address: u16,
    pub count: u16,
}

/// The requests that read every field of a profile, contiguous fields coalesced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReadPlan {
    pub requests: Vec<ReadRequest>,
}

/// What one read of a meter yields, in the units of the wire format.
#[derive(Debug, Clone, PartialEq)]
pub struct MeterValues {
    pub volume_l: u64,
    pub forward_volume_l: Option<u64>,
    pub reverse_volume_l: Option<u64>,
    pub flow_lph: Option<f64>,
    pub alarms: Vec<Alarm>,
}

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum DecodeValueError {
    #[error("register {function:?} {address} was not in the answers")]
    Missing {
        function: FunctionCode,
        address: u16,
    },
    #[error("field `{field}` is not a finite number ({value})")]
    NotFinite { field: &'static str, value: f64 },
    #[error("field `{field}` is negative ({value}); a totalizer cannot be")]
    Negative { field: &'static str, value: Decimal },
    #[error("field `{field}` is out of range")]
    OutOfRange { field: &'static str },
}

impl DeviceProfile {
    pub fn from_toml(text: &str, path: &str) -> Result<Self, ProfileError> {
        let p: DeviceProfile = toml::from_str(text).map_err(|e| ProfileError::Parse {
            path: path.to_string(),
            message: e.to_string(),
        })?;
        p.validate(path)?;
        Ok(p)
    }

    pub fn load(path: &Path) -> Result<Self, ProfileError> {
        let shown = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|source| ProfileError::Io {
            path: shown.clone(),
            source,
        })?;
        Self::from_toml(&text, &shown)
    }

    fn validate(&self, path: &str) -> Result<(), ProfileError> {
        let invalid = |field: &str, message: String| ProfileError::Invalid {
            path: path.to_string(),
            field: field.to_string(),
            message,
        };
        let max = self.profile.max_registers_per_read;
        if max == 0 || max > MODBUS_MAX_READ_REGISTERS {
            return Err(invalid(
                "profile.max_registers_per_read",
                format!("{max} is not between 1 and {MODBUS_MAX_READ_REGISTERS}"),
            ));
        }
        if self.profile.max_gap_registers >= max {
            return Err(invalid(
                "profile.max_gap_registers",
                format!(
                    "{} is not below max_registers_per_read ({max})",
                    self.profile.max_gap_registers
                ),
            ));
        }
        for (name, f) in self.value_fields() {
            if !f.unit.is_volume() && name != "flow" {
                return Err(invalid(name, format!("unit {:?} is not a volume", f.unit)));
            }
            if f.unit.is_volume() && name == "flow" {
                return Err(invalid(name, format!("unit {:?} is not a flow", f.unit)));
            }
            if f.scale <= Decimal::ZERO {
                return Err(invalid(name, format!("scale {} must be positive", f.scale)));
            }
            if u32::from(f.address) + u32::from(f.value_type.words()) > 0x1_0000 {
                return Err(invalid(name, "runs past register 65535".into()));
            }
        }
        if let Some(a) = &self.fields.alarms {
            for (name, bit) in &a.bits {
                if Alarm::parse(name).is_none() {
                    return Err(invalid(
                        "alarms.bits",
                        format!("unknown alarm {name:?}; known: leak, burst, backflow, tamper, low_battery, empty_pipe"),
                    ));
                }
                if *bit > 15 {
                    return Err(invalid(
                        "alarms.bits",
                        format!("bit {bit} of {name} is past 15"),
                    ));
                }
            }
        }
        Ok(())
    }

    fn value_fields(&self) -> Vec<(&'static str, &Field)> {
        let f = &self.fields;
        let mut v = vec![("volume", &f.volume)];
        let opt = [
            ("volume_fraction", &f.volume_fraction),
            ("forward_volume", &f.forward_volume),
            ("reverse_volume", &f.reverse_volume),
            ("flow", &f.flow),
        ];
        v.extend(
            opt.into_iter()
                .filter_map(|(n, x)| x.as_ref().map(|x| (n, x))),
        );
        v
    }

    /// Register spans `(function, address, words)` of every field.
    fn spans(&self) -> Vec<(FunctionCode, u16, u16)> {
        let mut s: Vec<_> = self
            .value_fields()
            .into_iter()
            .map(|(_, f)| (f.function, f.address, f.value_type.words()))
            .collect();
        if let Some(a) = &self.fields.alarms {
            s.push((a.function, a.address, 1));
        }
        s
    }

    /// Coalesces contiguous or overlapping fields of one function code (and
    /// those separated by at most `max_gap_registers` unused registers) into
    /// single requests, never longer than the meter's limit.
    pub fn read_plan(&self) -> ReadPlan {
        let mut spans = self.spans();
        spans.sort();
        let max = self.profile.max_registers_per_read;
        let gap = u32::from(self.profile.max_gap_registers);
        let mut requests: Vec<ReadRequest> = Vec::new();
        for (function, address, words) in spans {
            if let Some(last) = requests.last_mut() {
                let last_end = u32::from(last.address) + u32::from(last.count);
                let end = u32::from(address) + u32::from(words);
                if last.function == function
                    && u32::from(address) <= last_end + gap
                    && end - u32::from(last.address) <= u32::from(max)
                {
                    last.count = last.count.max((end - u32::from(last.address)) as u16);
                    continue;
                }
            }
            requests.push(ReadRequest {
                function,
                address,
                count: words,
            });
        }
        ReadPlan { requests }
    }

    /// Decodes the answers to [`read_plan`](Self::read_plan), given in its order.
    pub fn decode(
        &self,
        plan: &ReadPlan,
        answers: &[Vec<u16>],
    ) -> Result<MeterValues, DecodeValueError> {
        let regs = Registers { plan, answers };
        let forward = match &self.fields.forward_volume {
            Some(f) => Some(to_base(&regs, "forward_volume", f)?),
            None => None,
        };
        let reverse = match &self.fields.reverse_volume {
            Some(f) => Some(to_base(&regs, "reverse_volume", f)?),
            None => None,
        };
        let volume = match (self.fields.net_volume, forward, reverse) {
            (NetVolume::ForwardMinusReverse, Some(f), Some(r)) => f
                .checked_sub(r)
                .ok_or(DecodeValueError::OutOfRange { field: "volume" })?,
            _ => {
                let mut volume = to_base(&regs, "volume", &self.fields.volume)?;
                if let Some(frac) = &self.fields.volume_fraction {
                    volume += to_base(&regs, "volume_fraction", frac)?;
                }
                volume
            }
        };
        let volume_l = whole_litres("volume", volume)?;
        let forward_volume_l = match forward {
            Some(f) => Some(whole_litres("forward_volume", f)?),
            None => None,
        };
        let reverse_volume_l = match reverse {
            Some(r) => Some(whole_litres("reverse_volume", r)?),
            None => None,
        };
        let flow_lph = match &self.fields.flow {
            Some(f) => Some(
                to_base(&regs, "flow", f)?
                    .to_f64()
                    .ok_or(DecodeValueError::OutOfRange { field: "flow" })?,
            ),
            None => None,
        };
        let mut alarms = Vec::new();
        if let Some(a) = &self.fields.alarms {
            let w = regs.words(a.function, a.address, 1)?;
            let word = if a.word_order.bytes_swapped() {
                w[0].swap_bytes()
            } else {
                w[0]
            };
            for (name, bit) in &a.bits {
                if word & (1 << bit) != 0 {
                    if let Some(alarm) = Alarm::parse(name) {
                        alarms.push(alarm);
                    }
                }
            }
            alarms.sort();
        }
        Ok(MeterValues {
            volume_l,
            forward_volume_l,
            reverse_volume_l,
            flow_lph,
            alarms,
        })
    }
}

struct Registers<'a> {
    plan: &'a ReadPlan,
    answers: &'a [Vec<u16>],
}

impl Registers<'_> {
    fn words(
        &self,
        function: FunctionCode,
        address: u16,
        n: u16,
    ) -> Result<&[u16], DecodeValueError> {
        for (req, ans) in self.plan.requests.iter().zip(self.answers) {
            let start = u32::from(req.address);
            let a = u32::from(address);
            if req.function == function
                && a >= start
                && a + u32::from(n) <= start + u32::from(req.count)
            {
                let off = (a - start) as usize;
                if let Some(w) = ans.get(off..off + n as usize) {
                    return Ok(w);
                }
            }
        }
        Err(DecodeValueError::Missing { function, address })
    }
}

/// Puts the words of a value in big-endian order (ABCD) whatever the meter sends.
pub fn normalize_words(words: &[u16], order: WordOrder) -> Vec<u16> {
    let mut w: Vec<u16> = words.to_vec();
    if order.words_reversed() {
        w.reverse();
    }
    if order.bytes_swapped() {
        for x in &mut w {
            *x = x.swap_bytes();
        }
    }
    w
}

/// The inverse of [`normalize_words`]: lays out big-endian words in `order`.
pub fn encode_words(big_endian: &[u16], order: WordOrder) -> Vec<u16> {
    // Both transformations are involutions and commute.
    normalize_words(big_endian, order)
}

enum Raw {
    Int(i128),
    Float(f64),
}

fn raw_value(field: &Field, words: &[u16]) -> Raw {
    let w = normalize_words(words, field.word_order);
    let be: u64 = w.iter().fold(0u64, |acc, x| (acc << 16) | u64::from(*x));
    match field.value_type {
        ValueType::U16 | ValueType::U32 | ValueType::U64 => Raw::Int(i128::from(be)),
        ValueType::I16 => Raw::Int(i128::from(be as u16 as i16)),
        ValueType::I32 => Raw::Int(i128::from(be as u32 as i32)),
        ValueType::F32 => Raw::Float(f64::from(f32::from_bits(be as u32))),
        ValueType::F64 => Raw::Float(f64::from_bits(be)),
    }
}

fn to_base(
    regs: &Registers<'_>,
    name: &'static str,
    field: &Field,
) -> Result<Decimal, DecodeValueError> {
    let words = regs.words(field.function, field.address, field.value_type.words())?;
    let raw = match raw_value(field, words) {
        Raw::Int(i) => Decimal::from_i128_with_scale(i, 0),
        Raw::Float(f) => {
            if !f.is_finite() {
                return Err(DecodeValueError::NotFinite {
                    field: name,
                    value: f,
                });
            }
            Decimal::from_f64(f).ok_or(DecodeValueError::OutOfRange { field: name })?
        }
    };
    raw.checked_mul(field.scale)
        .and_then(|v| v.checked_mul(field.unit.to_base()))
        .ok_or(DecodeValueError::OutOfRange { field: name })
}

/// Totalizers are floored to whole litres: the register only ever moves up, so
/// a read never claims water that has not yet passed.
fn whole_litres(name: &'static str, v: Decimal) -> Result<u64, DecodeValueError> {
    if v < Decimal::ZERO {
        return Err(DecodeValueError::Negative {
            field: name,
            value: v,
        });
    }
    v.floor()
        .to_u64()
        .ok_or(DecodeValueError::OutOfRange { field: name })
}

/// The device profiles shipped with Waterworks (`fixtures/profiles/`, the
/// files the gateway loads to read the meters): path and text. Ingest's
/// registry and the import know a profile id by these; a test of the
/// import fails when a file of the folder is missing here.
pub const SHIPPED_PROFILES: [(&str, &str); 4] = [
    (
        "fixtures/profiles/mag-ldg-f32.toml",
        include_str!("../../fixtures/profiles/mag-ldg-f32.toml"),
    ),
    (
        "fixtures/profiles/tuf-2000m.toml",
        include_str!("../../fixtures/profiles/tuf-2000m.toml"),
    ),
    (
        "fixtures/profiles/waterworks-sim-dn50-v1.toml",
        include_str!("../../fixtures/profiles/waterworks-sim-dn50-v1.toml"),
    ),
    (
        "fixtures/profiles/waterworks-sim-v1.toml",
        include_str!("../../fixtures/profiles/waterworks-sim-v1.toml"),
    ),
];

#[cfg(test)]
mod tests {
    use super::*;

    const SIM: &str = r#"
[profile]
id = "t"
max_registers_per_read = 125
[fields.volume]
function = 4
address = 0
type = "u64"
unit = "L"
[fields.flow]
function = 4
address = 4
type = "i32"
scale = "0.1"
unit = "L/h"
[fields.alarms]
function = 4
address = 6
bits = { leak = 0, burst = 1, backflow = 2 }
"#;

    #[test]
    fn plan_coalesces_contiguous_fields() {
        let p = DeviceProfile::from_toml(SIM, "sim.toml").unwrap();
        let plan = p.read_plan();
        assert_eq!(
            plan.requests,
            vec![ReadRequest {
                function: FunctionCode::ReadInput,
                address: 0,
                count: 7
            }]
        );
        let answer = vec![0, 0, 0x0012, 0xD687, 0xFFFF, 0xFF9C, 0b101];
        let v = p.decode(&plan, &[answer]).unwrap();
        assert_eq!(v.volume_l, 1_234_567);
        assert_eq!(v.flow_lph, Some(-10.0));
        assert_eq!(v.alarms, vec![Alarm::Leak, Alarm::Backflow]);
    }

    #[test]
    fn word_orders_decode_the_same_value() {
        // 0x41C8_0000 is 25.0 as an IEEE-754 single.
        for (order, words) in [
            (WordOrder::ABCD, [0x41C8, 0x0000]),
            (WordOrder::CDAB, [0x0000, 0x41C8]),
            (WordOrder::BADC, [0xC841, 0x0000]),
            (WordOrder::DCBA, [0x0000, 0xC841]),
        ] {
            let f = Field {
                function: FunctionCode::ReadHolding,
                address: 0,
                value_type: ValueType::F32,
                word_order: order,
                scale: Decimal::ONE,
                unit: Unit::CubicMetre,
            };
            match raw_value(&f, &words) {
                Raw::Float(x) => assert_eq!(x, 25.0, "{order:?}"),
                Raw::Int(_) => panic!("float expected"),
            }
            assert_eq!(encode_words(&[0x41C8, 0x0000], order), words.to_vec());
        }
    }

    #[test]
    fn errors_name_the_file_and_field() {
        let bad = SIM.replace("scale = \"0.1\"", "scale = \"-1\"");
        let e = DeviceProfile::from_toml(&bad, "x.toml")
            .unwrap_err()
            .to_string();
        assert!(e.contains("x.toml") && e.contains("flow"), "{e}");
        let bad = SIM.replace("type = \"u64\"", "type = \"u128\"");
        let e = DeviceProfile::from_toml(&bad, "x.toml")
            .unwrap_err()
            .to_string();
        assert!(e.contains("x.toml") && e.contains("line"), "{e}");
        let bad = SIM.replace("function = 4\naddress = 0", "function = 6\naddress = 0");
        assert!(DeviceProfile::from_toml(&bad, "x.toml").is_err());
    }

    const GAPPY: &str = r#"
[profile]
id = "g"
max_registers_per_read = 20
max_gap_registers = 4
[fields.flow]
function = 3
address = 0
type = "f32"
unit = "m3/h"
[fields.forward_volume]
function = 3
address = 6
type = "u32"
unit = "m3"
scale = "0.001"
[fields.reverse_volume]
function = 3
address = 12
type = "u32"
unit = "m3"
scale = "0.001"
[fields.alarms]
function = 3
address = 30
bits = { empty_pipe = 0 }
[fields]
net_volume = "forward_minus_reverse"
"#;

    #[test]
    fn plan_bridges_small_gaps_within_the_limit() {
        let p = DeviceProfile::from_toml(GAPPY, "g.toml").unwrap();
        let plan = p.read_plan();
        // 0-1, gap 2-5 (4), 6-7, gap 8-11 (4), 12-13: one request of 14;
        // 30 is 16 away: its own request.
        assert_eq!(
            plan.requests,
            vec![
                ReadRequest {
                    function: FunctionCode::ReadHolding,
                    address: 0,
                    count: 14
                },
                ReadRequest {
                    function: FunctionCode::ReadHolding,
                    address: 30,
                    count: 1
                },
            ]
        );
        // A gap of 5 is not bridged with max_gap_registers = 4.
        let wider = GAPPY
            .replace("address = 6", "address = 7")
            .replace("address = 12", "address = 13");
        let plan = DeviceProfile::from_toml(&wider, "g.toml")
            .unwrap()
            .read_plan();
        assert_eq!(plan.requests.len(), 3, "{plan:?}");
        // The request limit still holds: 0..14 does not fit in 10.
        let small = GAPPY.replace("max_registers_per_read = 20", "max_registers_per_read = 10");
        let plan = DeviceProfile::from_toml(&small, "g.toml")
            .unwrap()
            .read_plan();
        assert!(plan.requests.iter().all(|r| r.count <= 10), "{plan:?}");
        assert_eq!(plan.requests.len(), 3, "{plan:?}");
        // Without the setting, nothing is bridged.
        let strict = GAPPY.replace("max_gap_registers = 4\n", "");
        let plan = DeviceProfile::from_toml(&strict, "g.toml")
            .unwrap()
            .read_plan();
        assert_eq!(plan.requests.len(), 4, "{plan:?}");
        let bad = GAPPY.replace("max_gap_registers = 4", "max_gap_registers = 20");
        let e = DeviceProfile::from_toml(&bad, "g.toml")
            .unwrap_err()
            .to_string();
        assert!(e.contains("max_gap_registers"), "{e}");
    }

    #[test]
    fn net_volume_as_forward_minus_reverse() {
        let p = DeviceProfile::from_toml(GAPPY, "g.toml").unwrap();
        assert_eq!(p.fields.net_volume, NetVolume::ForwardMinusReverse);
        let plan = p.read_plan();
        // Wire bytes, big-endian registers: flow 2.5 m3/h = 0x40200000;
        // forward 1,234,567 (x 0.001 m3 = 1,234,567 L) = 0x0012D687;
        // reverse 4,321 = 0x000010E1; the gap registers carry junk.
        let bytes: [u8; 28] = [
            0x40, 0x20, 0x00, 0x00, 0xDE, 0xAD, 0xBE, 0xEF, 0xDE, 0xAD, 0xBE, 0xEF, 0x00, 0x12,
            0xD6, 0x87, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0x00, 0x00, 0x10, 0xE1,
        ];
        let words: Vec<u16> = bytes
            .chunks(2)
            .map(|b| u16::from_be_bytes([b[0], b[1]]))
            .collect();
        let v = p.decode(&plan, &[words.clone(), vec![0x0001]]).unwrap();
        assert_eq!(v.volume_l, 1_230_246);
        assert_eq!(v.forward_volume_l, Some(1_234_567));
        assert_eq!(v.reverse_volume_l, Some(4_321));
        assert_eq!(v.flow_lph, Some(2500.0));
        assert_eq!(v.alarms, vec![Alarm::EmptyPipe]);
        // More reverse than forward: refused, not wrapped.
        let mut backwards = words;
        backwards[12] = 0x7FFF;
        let e = p.decode(&plan, &[backwards, vec![0]]).unwrap_err();
        assert!(
            matches!(
                e,
                DecodeValueError::Negative {
                    field: "volume",
                    ..
                }
            ),
            "{e:?}"
        );
        // Misuse is refused with a reason.
        for (text, want) in [
            (GAPPY.replace("[fields]\nnet_volume = \"forward_minus_reverse\"\n", ""), "missing field `volume`"),
            (GAPPY.replace("[fields.reverse_volume]", "[fields.x]"), "unknown field"),
            (GAPPY.replace("[fields.alarms]", "[fields.volume]\nfunction = 3\naddress = 20\ntype = \"u32\"\nunit = \"L\"\n[fields.alarms]"), "leave the field out"),
        ] {
            let e = DeviceProfile::from_toml(&text, "g.toml").unwrap_err().to_string();
            assert!(e.contains(want), "{want}: {e}");
        }
        let one_sided = GAPPY.replace(
            "[fields.reverse_volume]\nfunction = 3\naddress = 12\ntype = \"u32\"\nunit = \"m3\"\nscale = \"0.001\"\n",
            "",
        );
        let e = DeviceProfile::from_toml(&one_sided, "g.toml")
            .unwrap_err()
            .to_string();
        assert!(e.contains("needs both"), "{e}");
    }

    #[test]
    fn plan_respects_the_meters_request_limit() {
        let small = SIM.replace("max_registers_per_read = 125", "max_registers_per_read = 4");
        let p = DeviceProfile::from_toml(&small, "s.toml").unwrap();
        let plan = p.read_plan();
        assert!(plan.requests.iter().all(|r| r.count <= 4), "{plan:?}");
        assert_eq!(plan.requests.len(), 2);
    }
}
