//! The tariff file: TOML as a clerk writes it, checked field by field into a
//! [`TariffBook`]. `docs/tariff-format.md` in this crate is the reference.

use super::*;
use serde::de::{self, Deserializer, Visitor};
use serde::Deserialize;
use sha2::{Digest, Sha256};

/// How whole m³ of usage are derived from a meter's litres.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum UsageRule {
    /// Each read is truncated to whole m³, then usage = end − start: the litres
    /// below a whole m³ carry to the next month, never lost or billed twice.
    TruncateEachRead,
}

impl UsageRule {
    /// Whole m³ between two totalizer reads in litres (0 if the meter went back).
    pub fn usage_m3(&self, start_volume_l: i64, end_volume_l: i64) -> i64 {
        match self {
            UsageRule::TruncateEachRead => {
                end_volume_l.div_euclid(1000) - start_volume_l.div_euclid(1000)
            }
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawBook {
    city: String,
    name: String,
    usage_rule: UsageRule,
    #[serde(default = "default_lag")]
    bill_lag_months: u32,
    #[serde(rename = "version")]
    versions: Vec<RawVersion>,
}

fn default_lag() -> u32 {
    1
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawVersion {
    id: String,
    #[serde(default)]
    effective: Option<String>,
    applies_from: AppliesFromRaw,
    split: SplitRaw,
    #[serde(default)]
    note: String,
    rounding: RawRounding,
    water: BTreeMap<String, Vec<RawBlock>>,
    sewer: BTreeMap<String, Vec<RawBlock>>,
    base_krw: BTreeMap<String, i64>,
    levy: RawLevy,
    #[serde(default)]
    mixed_use: Option<RawMixedUse>,
    #[serde(default)]
    reductions: BTreeMap<String, RawReduction>,
    #[serde(default)]
    leak_relief: Option<RawLeakRelief>,
}

#[derive(Deserialize)]
#[serde(rename_all = "lowercase")]
enum AppliesFromRaw {
    Usage,
    Bill,
}

#[derive(Deserialize)]
#[serde(rename_all = "snake_case")]
enum SplitRaw {
    ProrateDays,
    StartRate,
    EndRate,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRounding {
    water: String,
    sewer: String,
    base: String,
    levy: String,
    #[serde(default = "default_rounding")]
    reduction: String,
}

fn default_rounding() -> String {
    "truncate_1".into()
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawBlock {
    from_m3: u64,
    #[serde(default)]
    to_m3: Option<u64>,
    rate_krw: DecimalField,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawLevy {
    rate_krw_per_m3: DecimalField,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawMixedUse {
    usage_type: String,
    allowance_m3_per_household: u64,
    household_type: String,
    other_type: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawReduction {
    label: String,
    percent: DecimalField,
    applies_to: Vec<String>,
    #[serde(default)]
    max_krw: Option<i64>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawLeakRelief {
    waived_percent: DecimalField,
}

/// A decimal written as an integer (`770`) or a string (`"148.9"`); a TOML
/// float is refused so no rate ever passes through binary floating point.
struct DecimalField(Decimal);

impl<'de> Deserialize<'de> for DecimalField {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = DecimalField;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("an integer or a decimal string such as \"148.9\"")
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<DecimalField, E> {
                Ok(DecimalField(Decimal::from(v)))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<DecimalField, E> {
                Ok(DecimalField(Decimal::from(v)))
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<DecimalField, E> {
                Err(E::custom(format!(
                    "write the decimal {v} as a string (\"{v}\") so it is exact"
                )))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<DecimalField, E> {
                v.trim()
                    .parse::<Decimal>()
                    .map(DecimalField)
                    .map_err(|_| E::custom(format!("{v:?} is not a decimal number")))
            }
        }
        d.deserialize_any(V)
    }
}

struct Ctx<'a> {
    source_name: &'a str,
}

impl Ctx<'_> {
    fn invalid(&self, field: impl Into<String>, reason: impl Into<String>) -> TariffError {
        TariffError::Invalid {
            source_name: self.source_name.to_string(),
            field: field.into(),
            reason: reason.into(),
        }
    }
}

fn parse_rounding(ctx: &Ctx, field: &str, s: &str) -> Result<Rounding, TariffError> {
    let bad = || {
        ctx.invalid(
            field,
            format!("{s:?} is not a rounding rule (truncate_1, truncate_10, round_10, ceil_10, ... with unit 1, 10 or 100)"),
        )
    };
    let (mode, unit) = s.rsplit_once('_').ok_or_else(bad)?;
    let mode = match mode {
        "truncate" => RoundMode::Truncate,
        "round" => RoundMode::HalfUp,
        "ceil" => RoundMode::Ceil,
        _ => return Err(bad()),
    };
    let unit_krw = match unit {
        "1" => 1,
        "10" => 10,
        "100" => 100,
        _ => return Err(bad()),
    };
    Ok(Rounding { mode, unit_krw })
}

fn check_blocks(ctx: &Ctx, field: &str, raw: Vec<RawBlock>) -> Result<Vec<Block>, TariffError> {
    if raw.is_empty() {
        return Err(ctx.invalid(field, "at least one block is needed"));
    }
    let n = raw.len();
    let mut blocks = Vec::with_capacity(n);
    let mut expected_from = 1u64;
    for (i, b) in raw.into_iter().enumerate() {
        let f = format!("{field}[{i}]");
        if b.from_m3 != expected_from {
            return Err(ctx.invalid(
                format!("{f}.from_m3"),
                format!(
                    "blocks must be contiguous: expected {expected_from}, found {}",
                    b.from_m3
                ),
            ));
        }
        match (b.to_m3, i + 1 == n) {
            (None, true) => {}
            (None, false) => {
                return Err(ctx.invalid(
                    format!("{f}.to_m3"),
                    "only the last block may be open-ended",
                ))
            }
            (Some(_), true) => {
                return Err(ctx.invalid(
                    format!("{f}.to_m3"),
                    "the last block must be open-ended (no to_m3)",
                ))
            }
            (Some(to), false) => {
                if to < b.from_m3 {
                    return Err(ctx.invalid(
                        format!("{f}.to_m3"),
                        format!("blocks must increase: {to} is below from_m3 {}", b.from_m3),
                    ));
                }
                if to > u64::from(MAX_USAGE_M3) {
                    return Err(ctx.invalid(format!("{f}.to_m3"), "implausibly large"));
                }
                expected_from = to + 1;
            }
        }
        if b.rate_krw.0.is_sign_negative() || b.rate_krw.0 > Decimal::from(10_000_000) {
            return Err(ctx.invalid(
                format!("{f}.rate_krw"),
                "a rate must be between 0 and 10,000,000 KRW",
            ));
        }
        blocks.push(Block {
            from_m3: b.from_m3,
            to_m3: b.to_m3,
            rate_krw: b.rate_krw.0,
        });
    }
    Ok(blocks)
}

fn check_percent(ctx: &Ctx, field: &str, p: Decimal) -> Result<Decimal, TariffError> {
    if p.is_sign_negative() || p > Decimal::from(100) {
        return Err(ctx.invalid(field, "a percentage must be between 0 and 100"));
    }
    Ok(p)
}

fn check_name(ctx: &Ctx, field: &str, s: &str) -> Result<(), TariffError> {
    if s.is_empty()
        || s.len() > 64
        || !s
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-')
    {
        return Err(ctx.invalid(
            field,
            format!("{s:?} must be 1-64 characters of a-z, 0-9, '_' or '-'"),
        ));
    }
    Ok(())
}

pub(super) fn parse(text: &str, source_name: &str) -> Result<TariffBook, TariffError> {
    let raw: RawBook = toml::from_str(text).map_err(|e| TariffError::Parse {
        source_name: source_name.to_string(),
        message: e.to_string(),
    })?;
    let ctx = Ctx { source_name };
    check_name(&ctx, "city", &raw.city)?;
    if raw.bill_lag_months > 12 {
        return Err(ctx.invalid("bill_lag_months", "at most 12"));
    }
    if raw.versions.is_empty() {
        return Err(ctx.invalid("version", "at least one [[version]] is needed"));
    }
    let mut versions: Vec<TariffVersion> = Vec::with_capacity(raw.versions.len());
    for (vi, rv) in raw.versions.into_iter().enumerate() {
        let vf = format!("version[{vi}]");
        check_name(&ctx, &format!("{vf}.id"), &rv.id)?;
        if versions.iter().any(|v| v.id == rv.id) {
            return Err(ctx.invalid(format!("{vf}.id"), format!("duplicate id {:?}", rv.id)));
        }
        let applies_from = match rv.applies_from {
            AppliesFromRaw::Usage => AppliesFrom::Usage,
            AppliesFromRaw::Bill => AppliesFrom::Bill,
        };
        let effective = match &rv.effective {
            None if vi == 0 => None,
            None => {
                return Err(ctx.invalid(
                    format!("{vf}.effective"),
                    "only the first version may omit its effective date",
                ))
            }
            Some(s) => Some(NaiveDate::parse_from_str(s, "%Y-%m-%d").map_err(|_| {
                ctx.invalid(
                    format!("{vf}.effective"),
                    format!("{s:?} is not a date YYYY-MM-DD"),
                )
            })?),
        };
        let usage_effective = match (effective, applies_from) {
            (None, _) => None,
            (Some(d), AppliesFrom::Usage) => Some(d),
            (Some(d), AppliesFrom::Bill) => {
                use chrono::Datelike;
                let bill = Period::new(d.year(), d.month())
                    .map_err(|e| ctx.invalid(format!("{vf}.effective"), e.to_string()))?;
                Some(bill.add_months(-(raw.bill_lag_months as i32)).first_day())
            }
        };
        if let (Some(prev), Some(this)) = (
            versions.last().and_then(|v| v.usage_effective),
            usage_effective,
        ) {
            if this <= prev {
                return Err(ctx.invalid(
                    format!("{vf}.effective"),
                    format!("versions must be in order: this one prices usage from {this}, not after the previous ({prev})"),
                ));
            }
        }
        let rounding = RoundingRules {
            water: parse_rounding(&ctx, &format!("{vf}.rounding.water"), &rv.rounding.water)?,
            sewer: parse_rounding(&ctx, &format!("{vf}.rounding.sewer"), &rv.rounding.sewer)?,
            base: parse_rounding(&ctx, &format!("{vf}.rounding.base"), &rv.rounding.base)?,
            levy: parse_rounding(&ctx, &format!("{vf}.rounding.levy"), &rv.rounding.levy)?,
            reduction: parse_rounding(
                &ctx,
                &format!("{vf}.rounding.reduction"),
                &rv.rounding.reduction,
            )?,
        };
        let mut water = BTreeMap::new();
        for (ty, blocks) in rv.water {
            let f = format!("{vf}.water.{ty}");
            check_name(&ctx, &f, &ty)?;
            water.insert(ty, check_blocks(&ctx, &f, blocks)?);
        }
        if water.is_empty() {
            return Err(ctx.invalid(format!("{vf}.water"), "no usage type is priced"));
        }
        let mut sewer = BTreeMap::new();
        for (ty, blocks) in rv.sewer {
            let f = format!("{vf}.sewer.{ty}");
            if !water.contains_key(&ty) {
                return Err(ctx.invalid(
                    f,
                    format!("usage type {ty:?} has sewer rates but no water rates"),
                ));
            }
            sewer.insert(ty, check_blocks(&ctx, &f, blocks)?);
        }
        if let Some(ty) = water.keys().find(|t| !sewer.contains_key(*t)) {
            return Err(ctx.invalid(
                format!("{vf}.sewer.{ty}"),
                format!("usage type {ty:?} has water rates but no sewer rates"),
            ));
        }
        let mut base_krw = BTreeMap::new();
        for (mm, krw) in rv.base_krw {
            let f = format!("{vf}.base_krw.{mm}");
            let d: u32 = mm
                .parse()
                .ok()
                .filter(|d| (1..=3000).contains(d))
                .ok_or_else(|| ctx.invalid(&f, format!("{mm:?} is not a diameter in mm")))?;
            if !(0..=100_000_000).contains(&krw) {
                return Err(ctx.invalid(f, "a base charge must be between 0 and 100,000,000 KRW"));
            }
            base_krw.insert(d, krw);
        }
        if base_krw.is_empty() {
            return Err(ctx.invalid(format!("{vf}.base_krw"), "no diameter is priced"));
        }
        let levy = rv.levy.rate_krw_per_m3.0;
        if levy.is_sign_negative() || levy > Decimal::from(100_000) {
            return Err(ctx.invalid(
                format!("{vf}.levy.rate_krw_per_m3"),
                "the levy rate must be between 0 and 100,000 KRW per m³",
            ));
        }
        let mixed_use = match rv.mixed_use {
            None => None,
            Some(m) => {
                let f = format!("{vf}.mixed_use");
                check_name(&ctx, &format!("{f}.usage_type"), &m.usage_type)?;
                if water.contains_key(&m.usage_type) {
                    return Err(ctx.invalid(
                        format!("{f}.usage_type"),
                        "the mixed-use type must not also have its own blocks",
                    ));
                }
                for (k, ty) in [
                    ("household_type", &m.household_type),
                    ("other_type", &m.other_type),
                ] {
                    if !water.contains_key(ty) {
                        return Err(ctx.invalid(
                            format!("{f}.{k}"),
                            format!("usage type {ty:?} is not priced"),
                        ));
                    }
                }
                Some(MixedUse {
                    usage_type: m.usage_type,
                    allowance_m3_per_household: m.allowance_m3_per_household,
                    household_type: m.household_type,
                    other_type: m.other_type,
                })
            }
        };
        let mut reductions = BTreeMap::new();
        for (name, r) in rv.reductions {
            let f = format!("{vf}.reductions.{name}");
            check_name(&ctx, &f, &name)?;
            let percent = check_percent(&ctx, &format!("{f}.percent"), r.percent.0)?;
            let mut applies_to = Vec::new();
            for (i, c) in r.applies_to.iter().enumerate() {
                match Component::parse(c) {
                    Some(c) if c != Component::Reduction => applies_to.push(c),
                    _ => {
                        return Err(ctx.invalid(
                            format!("{f}.applies_to[{i}]"),
                            format!("{c:?} is not one of water, sewer, base, levy"),
                        ))
                    }
                }
            }
            if applies_to.is_empty() {
                return Err(ctx.invalid(format!("{f}.applies_to"), "names no component"));
            }
            if r.max_krw.is_some_and(|m| m < 0) {
                return Err(ctx.invalid(format!("{f}.max_krw"), "must not be negative"));
            }
            reductions.insert(
                name,
                Reduction {
                    label: r.label,
                    percent,
                    applies_to,
                    max_krw: r.max_krw,
                },
            );
        }
        let leak_relief = match rv.leak_relief {
            None => None,
            Some(l) => Some(LeakRelief {
                waived_percent: check_percent(
                    &ctx,
                    &format!("{vf}.leak_relief.waived_percent"),
                    l.waived_percent.0,
                )?,
            }),
        };
        versions.push(TariffVersion {
            id: rv.id,
            effective,
            applies_from,
            usage_effective,
            split: match rv.split {
                SplitRaw::ProrateDays => SplitMethod::ProrateDays,
                SplitRaw::StartRate => SplitMethod::StartRate,
                SplitRaw::EndRate => SplitMethod::EndRate,
            },
            note: rv.note,
            water,
            sewer,
            base_krw,
            levy_rate_krw_per_m3: levy,
            rounding,
            mixed_use,
            reductions,
            leak_relief,
        });
    }
    Ok(TariffBook {
        city: raw.city,
        name: raw.name,
        source_name: source_name.to_string(),
        usage_rule: raw.usage_rule,
        bill_lag_months: raw.bill_lag_months,
        versions,
        fingerprint: hex::encode(Sha256::digest(text.as_bytes())),
    })
}
