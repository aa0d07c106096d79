//! Golden bills and properties of the tariff engine, against the fixtures in
//! `fixtures/tariffs/`.

use billing::tariff::{quote, Component, QuoteRequest, TariffBook, TariffError};
use billing::Period;
use proptest::prelude::*;
use std::path::PathBuf;

fn fixture(name: &str) -> TariffBook {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../fixtures/tariffs")
        .join(name);
    TariffBook::load(&path).unwrap()
}

fn amounts(q: &billing::tariff::Quote) -> Vec<(Component, i64)> {
    q.lines
        .iter()
        .map(|l| (l.component, l.amount_krw))
        .collect()
}

#[test]
fn gimhae_worked_bill_is_48940_line_by_line() {
    let book = fixture("gimhae.toml");
    assert_eq!(book.city(), "gimhae");
    let req = QuoteRequest::new("household", 13, 26);
    let q = quote(&book, &req).unwrap();
    assert_eq!(
        amounts(&q),
        vec![
            (Component::Water, 22_100), // 26 × 850
            (Component::Sewer, 21_320), // 26 × 820
            (Component::Base, 1_100),   // 13 mm
            (Component::Levy, 4_420),   // 26 × 170
        ]
    );
    assert_eq!(q.total_krw, 48_940);
    let text = q.render_text();
    assert!(text.contains("48,940"), "{text}");
    assert!(
        text.contains("22,100") && text.contains("상수도요금"),
        "{text}"
    );
}

#[test]
fn daejeon_household_26_m3() {
    // water 26 × 510 = 13,260; sewer 26 × 420 = 10,920; base 15 mm 860;
    // levy 26 × 170 = 4,420; total 29,460.
    let q = quote(
        &fixture("daejeon.toml"),
        &QuoteRequest::new("household", 15, 26),
    )
    .unwrap();
    assert_eq!(q.tariff_version, "2023-07");
    assert_eq!(
        amounts(&q),
        vec![
            (Component::Water, 13_260),
            (Component::Sewer, 10_920),
            (Component::Base, 860),
            (Component::Levy, 4_420),
        ]
    );
    assert_eq!(q.total_krw, 29_460);
}

#[test]
fn daejeon_general_120_m3_crosses_three_blocks() {
    // water 50 × 770 = 38,500 + 50 × 970 = 48,500 + 20 × 1,170 = 23,400 → 110,400
    // sewer 50 × 850 = 42,500 + 50 × 1,120 = 56,000 + 20 × 1,620 = 32,400 → 130,900
    // base 25 mm 3,890; levy 120 × 170 = 20,400; total 265,590.
    let q = quote(
        &fixture("daejeon.toml"),
        &QuoteRequest::new("general", 25, 120),
    )
    .unwrap();
    assert_eq!(
        amounts(&q),
        vec![
            (Component::Water, 110_400),
            (Component::Sewer, 130_900),
            (Component::Base, 3_890),
            (Component::Levy, 20_400),
        ]
    );
    assert_eq!(q.total_krw, 265_590);
    let water = &q.lines[0].explanation;
    assert_eq!(water.blocks.len(), 3);
    assert_eq!((water.blocks[2].from_m3, water.blocks[2].m3), (101, 20));
}

#[test]
fn daejeon_general_three_households_widen_blocks() {
    // Blocks × 3: 1–150 at 770, 151–300 at 970.
    // water 150 × 770 = 115,500 + 10 × 970 = 9,700 → 125,200
    // sewer 150 × 850 = 127,500 + 10 × 1,120 = 11,200 → 138,700
    // base 20 mm 2,420; levy 160 × 170 = 27,200; total 293,520.
    let req = QuoteRequest {
        households: 3,
        ..QuoteRequest::new("general", 20, 160)
    };
    let q = quote(&fixture("daejeon.toml"), &req).unwrap();
    assert_eq!(
        amounts(&q),
        vec![
            (Component::Water, 125_200),
            (Component::Sewer, 138_700),
            (Component::Base, 2_420),
            (Component::Levy, 27_200),
        ]
    );
    assert_eq!(q.total_krw, 293_520);
}

#[test]
fn daejeon_bathhouse_without_sewer_and_levy_exempt() {
    // water 700 × 610 = 427,000 + 300 × 690 = 207,000 + 200 × 750 = 150,000 → 784,000
    // no sewer (not connected), base 50 mm 18,520, no levy (exempt); total 802,520.
    let req = QuoteRequest {
        sewer_connected: false,
        levy_exempt: true,
        ..QuoteRequest::new("bathhouse", 50, 1_200)
    };
    let q = quote(&fixture("daejeon.toml"), &req).unwrap();
    assert_eq!(
        amounts(&q),
        vec![(Component::Water, 784_000), (Component::Base, 18_520)]
    );
    assert_eq!(q.total_krw, 802_520);
}

#[test]
fn unknown_type_and_diameter_are_named() {
    let book = fixture("daejeon.toml");
    let e = quote(&book, &QuoteRequest::new("farm", 15, 1)).unwrap_err();
    assert!(matches!(e, TariffError::UnknownUsageType { .. }));
    assert!(e.to_string().contains("farm") && e.to_string().contains("household"));
    let many = QuoteRequest {
        reductions: vec!["x".into(); 9],
        ..QuoteRequest::new("household", 15, 1)
    };
    assert!(matches!(quote(&book, &many), Err(TariffError::Request(_))));
    let e = quote(&book, &QuoteRequest::new("household", 13, 1)).unwrap_err();
    assert!(e.to_string().contains("13 mm"), "{e}");
    let req = QuoteRequest {
        period: Some("2023-06".parse().unwrap()),
        ..QuoteRequest::new("household", 15, 1)
    };
    assert!(matches!(
        quote(&book, &req),
        Err(TariffError::NoVersion { .. })
    ));
}

/// A synthetic two-version tariff (NOT a real city's): household water 510
/// until 2024-07-15, 560 from usage of 2024-07-16, with proration by days.
const TWO_VERSIONS: &str = r#"
city = "testville"
name = "Testville (synthetic)"
usage_rule = "truncate_each_read"

[[version]]
id = "v1"
effective = "2023-07-01"
applies_from = "usage"
split = "prorate_days"
rounding = { water = "truncate_1", sewer = "truncate_1", base = "truncate_1", levy = "truncate_1" }
water = { household = [{ from_m3 = 1, rate_krw = 510 }] }
sewer = { household = [{ from_m3 = 1, rate_krw = 420 }] }
base_krw = { 15 = 860 }
levy = { rate_krw_per_m3 = "170" }

[[version]]
id = "v2"
effective = "2024-07-16"
applies_from = "usage"
split = "prorate_days"
rounding = { water = "truncate_1", sewer = "truncate_1", base = "truncate_1", levy = "truncate_1" }
water = { household = [{ from_m3 = 1, rate_krw = 560 }] }
sewer = { household = [{ from_m3 = 1, rate_krw = 470 }] }
base_krw = { 15 = 860 }
levy = { rate_krw_per_m3 = "170" }
"#;

#[test]
fn a_month_spanning_a_change_is_prorated_by_days() {
    let book = TariffBook::from_toml(TWO_VERSIONS, "two.toml").unwrap();
    let req = QuoteRequest {
        period: Some("2024-07".parse().unwrap()),
        sewer_connected: false,
        levy_exempt: true,
        ..QuoteRequest::new("household", 15, 31)
    };
    let q = quote(&book, &req).unwrap();
    assert_eq!(q.tariff_version, "v1+v2");
    // July has 31 days: v1 prices 1–15 July, v2 16–31 July.
    // water v1: 31 × 510 × 15/31 = 7,650; v2: 31 × 560 × 16/31 = 8,960.
    // base v1: 860 × 15/31 = 416.13 → 416; v2: 860 × 16/31 = 443.87 → 443.
    assert_eq!(
        amounts(&q),
        vec![
            (Component::Water, 7_650),
            (Component::Base, 416),
            (Component::Water, 8_960),
            (Component::Base, 443),
        ]
    );
    // Months wholly before or after use one version.
    for (p, v) in [("2024-06", "v1"), ("2024-08", "v2")] {
        let req = QuoteRequest {
            period: Some(p.parse().unwrap()),
            ..req.clone()
        };
        assert_eq!(quote(&book, &req).unwrap().tariff_version, v);
    }
    // No period: the latest version.
    let req = QuoteRequest {
        period: None,
        ..req
    };
    assert_eq!(quote(&book, &req).unwrap().tariff_version, "v2");
}

#[test]
fn from_the_bill_of_a_month_shifts_by_the_billing_lag() {
    let text = TWO_VERSIONS.replace(
        "effective = \"2024-07-16\"\napplies_from = \"usage\"",
        "effective = \"2024-08-01\"\napplies_from = \"bill\"",
    );
    let book = TariffBook::from_toml(&text, "bill.toml").unwrap();
    // From the bill of August = from usage of July (bills go out a month later).
    let at = |p: &str| {
        let req = QuoteRequest {
            period: Some(p.parse().unwrap()),
            ..QuoteRequest::new("household", 15, 10)
        };
        quote(&book, &req).unwrap().tariff_version
    };
    assert_eq!(at("2024-06"), "v1");
    assert_eq!(at("2024-07"), "v2");
}

#[test]
fn validation_names_the_file_and_field() {
    let cases = [
        (
            TWO_VERSIONS.replace(
                "{ from_m3 = 1, rate_krw = 560 }",
                "{ from_m3 = 2, rate_krw = 560 }",
            ),
            "version[1].water.household[0].from_m3",
        ),
        (
            TWO_VERSIONS.replace(
                "sewer = { household = [{ from_m3 = 1, rate_krw = 470 }] }",
                "sewer = {}",
            ),
            "version[1].sewer.household",
        ),
        (
            TWO_VERSIONS.replace("\"truncate_1\", sewer", "\"truncate_3\", sewer"),
            "version[0].rounding.water",
        ),
        (
            TWO_VERSIONS.replace("2024-07-16", "2023-01-01"),
            "version[1].effective",
        ),
        (
            TWO_VERSIONS.replacen("base_krw = { 15 = 860 }", "base_krw = {}", 1),
            "version[0].base_krw",
        ),
        (
            TWO_VERSIONS.replacen(
                "base_krw = { 15 = 860 }",
                "base_krw = { 15 = 860, 2 = 1, 15 = 3 }",
                1,
            ),
            "duplicate",
        ),
        (
            TWO_VERSIONS.replace("rate_krw_per_m3 = \"170\"", "rate_krw_per_m3 = 148.9"),
            "string",
        ),
        (
            TWO_VERSIONS.replace(
                "{ from_m3 = 1, rate_krw = 510 }",
                "{ from_m3 = 1, to_m3 = 10, rate_krw = 510 }",
            ),
            "open-ended",
        ),
    ];
    for (text, needle) in cases {
        let Err(e) = TariffBook::from_toml(&text, "bad.toml") else {
            panic!("{needle}: accepted");
        };
        let msg = e.to_string();
        assert!(
            msg.contains("bad.toml") && msg.contains(needle),
            "{needle}: {msg}"
        );
    }
    let e = TariffBook::load(std::path::Path::new("/nonexistent/t.toml")).unwrap_err();
    assert!(e.to_string().contains("/nonexistent/t.toml"));
}

/// Synthetic tariff with mixed use, a reduction and leak relief (NOT a real city's).
const FEATURES: &str = r#"
city = "testville"
name = "Testville (synthetic)"
usage_rule = "truncate_each_read"

[[version]]
id = "f1"
applies_from = "usage"
split = "prorate_days"
rounding = { water = "truncate_10", sewer = "truncate_10", base = "truncate_1", levy = "round_1", reduction = "truncate_10" }
water = { household = [{ from_m3 = 1, to_m3 = 20, rate_krw = 500 }, { from_m3 = 21, rate_krw = 800 }], general = [{ from_m3 = 1, to_m3 = 30, rate_krw = 900 }, { from_m3 = 31, rate_krw = 1200 }] }
sewer = { household = [{ from_m3 = 1, rate_krw = 400 }], general = [{ from_m3 = 1, rate_krw = 700 }] }
base_krw = { 15 = 1000 }
levy = { rate_krw_per_m3 = "148.9" }
mixed_use = { usage_type = "mixed", allowance_m3_per_household = 15, household_type = "household", other_type = "general" }
reductions = { multi_child = { label = "다자녀가구 감면 Multi-child reduction", percent = "30", applies_to = ["water"], max_krw = 5000 } }
leak_relief = { waived_percent = "50" }
"#;

#[test]
fn mixed_use_decimal_levy_reduction_and_leak_relief() {
    let book = TariffBook::from_toml(FEATURES, "features.toml").unwrap();
    // Mixed use, 2 households, 40 m³: the first 30 m³ (15 × 2) at household
    // blocks (× 2: 1–40 at 500) = 15,000; the other 10 m³ at general blocks
    // (1–60 at 900) = 9,000; water 24,000. Sewer 30 × 400 + 10 × 700 = 19,000.
    // Levy 40 × 148.9 = 5,956 (round_1). Base 1,000. Total 49,956.
    let req = QuoteRequest {
        households: 2,
        ..QuoteRequest::new("mixed", 15, 40)
    };
    let q = quote(&book, &req).unwrap();
    assert_eq!(
        amounts(&q),
        vec![
            (Component::Water, 24_000),
            (Component::Sewer, 19_000),
            (Component::Base, 1_000),
            (Component::Levy, 5_956),
        ]
    );
    // Levy rounding: 7 m³ × 148.9 = 1,042.3 → 1,042; 5 m³ → 744.5 → 745 (half up).
    let levy = |m3| {
        quote(&book, &QuoteRequest::new("household", 15, m3))
            .unwrap()
            .component_krw(Component::Levy)
    };
    assert_eq!((levy(7), levy(5)), (1_042, 745));

    // Multi-child reduction: 30% of water. 26 m³ household: water 20 × 500 +
    // 6 × 800 = 14,800; reduction 4,440 (truncate_10).
    let req = QuoteRequest {
        reductions: vec!["multi_child".into()],
        ..QuoteRequest::new("household", 15, 26)
    };
    let q = quote(&book, &req).unwrap();
    assert_eq!(q.component_krw(Component::Water), 14_800);
    assert_eq!(q.component_krw(Component::Reduction), -4_440);
    assert_eq!(
        q.total_krw,
        q.lines.iter().map(|l| l.amount_krw).sum::<i64>()
    );
    // Capped at 5,000: 100 m³ → water 10,000 + 80 × 800 = 74,000; 30% = 22,200 → 5,000.
    let req = QuoteRequest {
        usage_m3: 100,
        ..req
    };
    assert_eq!(
        quote(&book, &req)
            .unwrap()
            .component_krw(Component::Reduction),
        -5_000
    );

    // Leak relief: 60 m³ against a prior average of 20: half of the 40 above
    // it is waived, billed 40 m³: water 20 × 500 + 20 × 800 = 26,000.
    let req = QuoteRequest {
        leak_relief_prior_avg_m3: Some(20),
        ..QuoteRequest::new("household", 15, 60)
    };
    let q = quote(&book, &req).unwrap();
    assert_eq!(q.component_krw(Component::Water), 26_000);
    assert!(q.lines[0].explanation.notes[0].contains("20 m³ waived"));
    assert!(matches!(
        quote(
            &fixture("daejeon.toml"),
            &QuoteRequest {
                leak_relief_prior_avg_m3: Some(1),
                ..QuoteRequest::new("household", 15, 9)
            }
        ),
        Err(TariffError::NoLeakRelief { .. })
    ));
}

fn usage_type() -> impl Strategy<Value = &'static str> {
    prop_oneof![
        Just("household"),
        Just("general"),
        Just("bathhouse"),
        Just("industrial")
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]

    #[test]
    fn charge_never_decreases_and_total_is_sum_of_lines(
        ty in usage_type(), m3 in 0u32..5_000, h in 1u32..20, sewer: bool, exempt: bool
    ) {
        let book = fixture("daejeon.toml");
        let req = QuoteRequest { households: h, sewer_connected: sewer, levy_exempt: exempt, ..QuoteRequest::new(ty, 15, m3) };
        let a = quote(&book, &req).unwrap();
        let b = quote(&book, &QuoteRequest { usage_m3: m3 + 1, ..req.clone() }).unwrap();
        prop_assert!(b.total_krw >= a.total_krw);
        prop_assert_eq!(a.total_krw, a.lines.iter().map(|l| l.amount_krw).sum::<i64>());
        // Identical inputs, identical bill.
        prop_assert_eq!(&a, &quote(&book, &req).unwrap());
    }

    #[test]
    fn marginal_price_is_the_blocks_rate(ty in usage_type(), m3 in 0u32..3_000, h in 1u32..10) {
        let book = fixture("daejeon.toml");
        let v = book.latest();
        let req = QuoteRequest { households: h, ..QuoteRequest::new(ty, 15, m3) };
        let a = quote(&book, &req).unwrap();
        let b = quote(&book, &QuoteRequest { usage_m3: m3 + 1, ..req }).unwrap();
        let n = u64::from(m3) + 1; // the m³ added
        let per_household = (n - 1) / u64::from(h) + 1;
        for (c, table) in [(Component::Water, &v.water), (Component::Sewer, &v.sewer)] {
            let rate = table[ty].iter().find(|blk| blk.to_m3.is_none_or(|t| per_household <= t)).unwrap().rate_krw;
            let diff = b.component_krw(c) - a.component_krw(c);
            prop_assert_eq!(rust_decimal::Decimal::from(diff), rate);
        }
    }

    #[test]
    fn a_split_period_sums_to_the_whole_within_rounding(m3 in 0u32..2_000, day in 2u32..=28, month in 1u32..=12) {
        // Two versions with the same rates: the split must not change the bill
        // beyond one rounding unit per extra portion and component.
        let same = TWO_VERSIONS
            .replace("rate_krw = 560", "rate_krw = 510")
            .replace("rate_krw = 470", "rate_krw = 420")
            .replace("2024-07-16", &format!("2024-{month:02}-{day:02}"));
        let split = TariffBook::from_toml(&same, "same.toml").unwrap();
        let whole = fixture("daejeon.toml");
        let period: Period = format!("2024-{month:02}").parse().unwrap();
        let req = QuoteRequest { period: Some(period), ..QuoteRequest::new("household", 15, m3) };
        let a = quote(&split, &req).unwrap();
        let b = quote(&whole, &req).unwrap();
        prop_assert_eq!(a.lines.len(), 2 * b.lines.len());
        for c in [Component::Water, Component::Sewer, Component::Base, Component::Levy] {
            let diff = b.component_krw(c) - a.component_krw(c);
            prop_assert!((0..=1).contains(&diff), "{:?}: {} vs {}", c, a.component_krw(c), b.component_krw(c));
        }
    }

    #[test]
    fn tariff_parser_never_panics(s in "\\PC{0,300}") {
        let _ = TariffBook::from_toml(&s, "fuzz.toml");
    }
}
