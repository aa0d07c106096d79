//! Pricing one month of usage by a tariff: pure arithmetic on `Decimal`,
//! rounded once per line by the component's rule.

use super::*;

/// Prices `req` by `book`. Every line carries its explanation; the total is
/// the sum of the rounded lines.
pub fn quote(book: &TariffBook, req: &QuoteRequest) -> Result<Quote, TariffError> {
    if req.households == 0 || req.households > MAX_HOUSEHOLDS {
        return Err(TariffError::Request(format!(
            "households must be 1..={MAX_HOUSEHOLDS}, not {}",
            req.households
        )));
    }
    if req.usage_type.len() > 64 || req.reductions.iter().any(|r| r.len() > 64) {
        return Err(TariffError::Request(
            "usage types and reduction names are at most 64 bytes".into(),
        ));
    }
    if req.reductions.len() > MAX_REDUCTIONS {
        return Err(TariffError::Request(format!(
            "at most {MAX_REDUCTIONS} reductions, not {}",
            req.reductions.len()
        )));
    }
    if req.usage_m3 > MAX_USAGE_M3 {
        return Err(TariffError::Request(format!(
            "usage_m3 {} is above the limit of {MAX_USAGE_M3}",
            req.usage_m3
        )));
    }
    let portions: Vec<(&TariffVersion, Option<Proration>)> = match &req.period {
        None => vec![(book.latest(), None)],
        Some(p) => {
            let portions = book.portions(p)?;
            let split = portions.len() > 1;
            portions
                .into_iter()
                .map(|x| {
                    let pr = split.then_some(Proration {
                        days: x.days,
                        period_days: x.period_days,
                    });
                    (x.version, pr)
                })
                .collect()
        }
    };
    let mut lines = Vec::new();
    let mut ids: Vec<&str> = Vec::new();
    for (version, proration) in portions {
        lines.extend(price_version(version, req, proration)?);
        if !ids.contains(&version.id.as_str()) {
            ids.push(&version.id);
        }
    }
    let total_krw = lines.iter().map(|l| l.amount_krw).sum();
    Ok(Quote {
        city: book.city().to_string(),
        tariff_version: ids.join("+"),
        period: req.period,
        usage_m3: req.usage_m3,
        lines,
        total_krw,
    })
}

/// The charge of `m3` cubic metres through `blocks`, block widths scaled by
/// `households`; one entry per block touched.
pub(crate) fn charge_blocks(
    usage_type: &str,
    blocks: &[Block],
    households: u64,
    m3: u64,
) -> Vec<BlockCharge> {
    let mut out = Vec::new();
    for b in blocks {
        let lo = (b.from_m3 - 1) * households + 1;
        if m3 < lo {
            break;
        }
        let hi = b.to_m3.map(|t| t * households);
        let top = hi.map_or(m3, |h| h.min(m3));
        let within = top - lo + 1;
        out.push(BlockCharge {
            usage_type: usage_type.to_string(),
            from_m3: lo,
            to_m3: hi,
            m3: within,
            rate_krw: b.rate_krw,
            amount_krw: b.rate_krw * Decimal::from(within),
        });
    }
    out
}

fn known<K: std::fmt::Display>(keys: impl Iterator<Item = K>) -> String {
    keys.map(|k| k.to_string()).collect::<Vec<_>>().join(", ")
}

fn price_version(
    v: &TariffVersion,
    req: &QuoteRequest,
    proration: Option<Proration>,
) -> Result<Vec<BillLine>, TariffError> {
    let households = u64::from(req.households);
    let mixed = v
        .mixed_use
        .as_ref()
        .filter(|m| m.usage_type == req.usage_type);
    if mixed.is_none() && !v.water.contains_key(&req.usage_type) {
        return Err(TariffError::UnknownUsageType {
            version: v.id.clone(),
            usage_type: req.usage_type.clone(),
            known: known(
                v.water
                    .keys()
                    .map(String::as_str)
                    .chain(v.mixed_use.iter().map(|m| m.usage_type.as_str())),
            ),
        });
    }
    let base_krw =
        *v.base_krw
            .get(&req.diameter_mm)
            .ok_or_else(|| TariffError::UnknownDiameter {
                version: v.id.clone(),
                diameter_mm: req.diameter_mm,
                known: known(v.base_krw.keys()),
            })?;

    let mut notes = Vec::new();
    let usage = u64::from(req.usage_m3);
    let billed = match req.leak_relief_prior_avg_m3 {
        None => usage,
        Some(avg) => {
            let relief = v
                .leak_relief
                .as_ref()
                .ok_or_else(|| TariffError::NoLeakRelief {
                    version: v.id.clone(),
                })?;
            let excess = usage.saturating_sub(u64::from(avg));
            let waived =
                (Decimal::from(excess) * relief.waived_percent / Decimal::ONE_HUNDRED).trunc();
            let waived = rust_decimal::prelude::ToPrimitive::to_u64(&waived)
                .unwrap_or(0)
                .min(excess);
            notes.push(format!(
                "leak relief: {waived} m³ waived ({}% of the {excess} m³ above the prior 3-month average of {avg} m³)",
                relief.waived_percent.normalize()
            ));
            usage - waived
        }
    };
    let levy_notes = notes.clone();
    if households > 1 {
        notes.push(format!("block widths × {households} households"));
    }
    // Multiply before dividing so whole results stay exact (15,810 × 15 / 31 = 7,650).
    let prorate = |raw: Decimal| match proration {
        None => raw,
        Some(p) => raw * Decimal::from(p.days) / Decimal::from(p.period_days),
    };
    let suffix = proration.map_or(String::new(), |p| {
        format!(" [{} {}/{}d]", v.id, p.days, p.period_days)
    });

    let blocks_for = |table: &BTreeMap<String, Vec<Block>>| -> Vec<BlockCharge> {
        match mixed {
            None => charge_blocks(&req.usage_type, &table[&req.usage_type], households, billed),
            Some(m) => {
                let allowance = m.allowance_m3_per_household * households;
                let home = billed.min(allowance);
                let mut out = charge_blocks(
                    &m.household_type,
                    &table[&m.household_type],
                    households,
                    home,
                );
                out.extend(charge_blocks(
                    &m.other_type,
                    &table[&m.other_type],
                    households,
                    billed - home,
                ));
                out
            }
        }
    };
    if let Some(m) = mixed {
        notes.push(
        format!(
            "mixed use: the first {} m³ ({} m³ × {households} households) at {} rates, the rest at {} rates",
            m.allowance_m3_per_household * households,
            m.allowance_m3_per_household,
            m.household_type,
            m.other_type
        ));
    }

    let line = |component: Component,
                label: String,
                blocks: Vec<BlockCharge>,
                rate: Option<Decimal>,
                full_raw: Decimal,
                usage_m3: u64,
                notes: Vec<String>| {
        let rounding = v.rounding.for_component(component);
        let raw = prorate(full_raw);
        BillLine {
            component,
            label: format!("{label}{suffix}"),
            amount_krw: rounding.apply(raw),
            explanation: Explanation {
                tariff_version: v.id.clone(),
                usage_m3,
                blocks,
                rate,
                raw_krw: raw.normalize(),
                rounding: rounding.code(),
                proration,
                notes,
            },
        }
    };

    let mut lines = Vec::new();
    let water = blocks_for(&v.water);
    let raw: Decimal = water.iter().map(|b| b.amount_krw).sum();
    lines.push(line(
        Component::Water,
        "상수도요금 Water".into(),
        water,
        None,
        raw,
        billed,
        notes.clone(),
    ));
    if req.sewer_connected {
        let sewer = blocks_for(&v.sewer);
        let raw: Decimal = sewer.iter().map(|b| b.amount_krw).sum();
        lines.push(line(
            Component::Sewer,
            "하수도요금 Sewer".into(),
            sewer,
            None,
            raw,
            billed,
            notes.clone(),
        ));
    }
    lines.push(line(
        Component::Base,
        format!("기본요금 Base charge ({} mm)", req.diameter_mm),
        Vec::new(),
        Some(Decimal::from(base_krw)),
        Decimal::from(base_krw),
        billed,
        Vec::new(),
    ));
    if !req.levy_exempt {
        let rate = v.levy_rate_krw_per_m3;
        lines.push(line(
            Component::Levy,
            "물이용부담금 Water use levy".into(),
            Vec::new(),
            Some(rate),
            rate * Decimal::from(billed),
            billed,
            levy_notes,
        ));
    }

    let mut granted: Vec<&str> = Vec::new();
    for name in &req.reductions {
        if granted.contains(&name.as_str()) {
            continue;
        }
        granted.push(name);
        let r = v
            .reductions
            .get(name)
            .ok_or_else(|| TariffError::UnknownReduction {
                version: v.id.clone(),
                name: name.clone(),
                known: known(v.reductions.keys()),
            })?;
        let base: i64 = lines
            .iter()
            .filter(|l| r.applies_to.contains(&l.component))
            .map(|l| l.amount_krw)
            .sum();
        let raw = Decimal::from(base) * r.percent / Decimal::ONE_HUNDRED;
        let rounding = v.rounding.reduction;
        let mut amount = rounding.apply(raw);
        let mut line_notes = vec![format!(
            "{}% of {} KRW ({})",
            r.percent.normalize(),
            base,
            known(r.applies_to.iter().map(|c| c.as_str()))
        )];
        if let Some(max) = r.max_krw {
            let cap = Rounding::WHOLE_WON.apply(prorate(Decimal::from(max)));
            if amount > cap {
                line_notes.push(format!("capped at {cap} KRW"));
                amount = cap;
            }
        }
        lines.push(BillLine {
            component: Component::Reduction,
            label: format!("{}{suffix}", r.label),
            amount_krw: -amount,
            explanation: Explanation {
                tariff_version: v.id.clone(),
                usage_m3: billed,
                blocks: Vec::new(),
                rate: Some(r.percent),
                raw_krw: -raw.normalize(),
                rounding: rounding.code(),
                proration: None,
                notes: line_notes,
            },
        });
    }
    Ok(lines)
}
