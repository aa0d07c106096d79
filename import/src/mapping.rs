//! From a row of a utility's columns to a master-data item: the mapping
//! file (column → field per kind, value translations per field) and the
//! parsing of each field. See docs/import.md.

use super::read::Record;
use super::{BadRow, Kind};
use anyhow::Context;
use chrono::{DateTime, NaiveDate, NaiveDateTime, TimeZone, Utc};
use rust_decimal::Decimal;
use serde::Deserialize;
use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use waterworks_api::master::{Customer, Installation, Meter, Premises};
use waterworks_wire::profile::SHIPPED_PROFILES;

/// A mapping file: for each kind, which column holds which field; for each
/// field, translations of the utility's values into Waterworks' (e.g.
/// `usage_type`: 가정용 → household). Without a file, the columns are named
/// as the fields ([`Mapping::default`]).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Mapping {
    #[serde(default)]
    pub columns: Columns,
    /// Field → (the utility's value → ours).
    #[serde(default)]
    pub values: BTreeMap<String, BTreeMap<String, String>>,
}

/// Column header → field, per kind.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Columns {
    #[serde(default)]
    pub customers: BTreeMap<String, String>,
    #[serde(default)]
    pub premises: BTreeMap<String, String>,
    #[serde(default)]
    pub meters: BTreeMap<String, String>,
    #[serde(default)]
    pub installations: BTreeMap<String, String>,
}

/// The fields of each kind, and whether a column must hold them.
pub fn fields(kind: Kind) -> &'static [(&'static str, bool)] {
    match kind {
        Kind::Customers => &[("customer_id", true), ("name", true), ("contact", false)],
        Kind::Premises => &[
            ("account_no", true),
            ("customer_id", true),
            ("address", true),
            ("road_address", false),
            ("usage_type", true),
            ("diameter_mm", true),
            ("households", false),
            ("sewer_connected", true),
            ("levy_exempt", false),
            ("billing_group", true),
            ("reading_route", false),
        ],
        Kind::Meters => &[
            ("meter_id", true),
            ("serial", true),
            ("maker", false),
            ("model", false),
            ("profile_id", true),
            ("diameter_mm", true),
            ("manufactured_on", false),
            ("verified_on", false),
            ("gateway_id", true),
        ],
        Kind::Installations => &[
            ("account_no", true),
            ("meter_id", true),
            ("installed_at", true),
            ("removed_at", false),
            ("install_read_m3", false),
        ],
    }
}

impl Mapping {
    pub fn load(path: &Path) -> anyhow::Result<Mapping> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read the mapping {}", path.display()))?;
        Mapping::parse(&text, &path.display().to_string())
    }

    /// The mapping of TOML `text` (`name` in errors), its fields checked.
    pub fn parse(text: &str, name: &str) -> anyhow::Result<Mapping> {
        let m: Mapping =
            toml::from_str(text).with_context(|| format!("the mapping {name} is not valid"))?;
        for kind in Kind::ALL {
            let known: Vec<&str> = fields(kind).iter().map(|(f, _)| *f).collect();
            for (column, field) in m.columns_of(kind) {
                anyhow::ensure!(
                    known.contains(&field.as_str()),
                    "mapping {name}: column {column:?} of {} maps to {field:?}, which is not a field (fields: {})",
                    kind.as_str(),
                    known.join(", ")
                );
            }
        }
        Ok(m)
    }

    fn columns_of(&self, kind: Kind) -> &BTreeMap<String, String> {
        match kind {
            Kind::Customers => &self.columns.customers,
            Kind::Premises => &self.columns.premises,
            Kind::Meters => &self.columns.meters,
            Kind::Installations => &self.columns.installations,
        }
    }

    /// Which column index holds each field: a header the mapping names, or,
    /// for a field the mapping does not place, a header spelled as the
    /// field. Fails when a required field has no column.
    pub fn layout(&self, kind: Kind, headers: &[String]) -> anyhow::Result<Layout> {
        let cols = self.columns_of(kind);
        let mut at: HashMap<&'static str, usize> = HashMap::new();
        for (i, h) in headers.iter().enumerate() {
            let field = cols.get(h).map(String::as_str).unwrap_or(h.as_str());
            if let Some((f, _)) = fields(kind).iter().find(|(f, _)| *f == field) {
                at.entry(f).or_insert(i);
            }
        }
        let missing: Vec<String> = fields(kind)
            .iter()
            .filter(|(f, required)| *required && !at.contains_key(f))
            .map(|(f, _)| {
                let named: Vec<&str> = cols
                    .iter()
                    .filter(|(_, v)| v == f)
                    .map(|(c, _)| c.as_str())
                    .collect();
                if named.is_empty() {
                    format!("{f} (a column named {f:?})")
                } else {
                    format!("{f} (a column named {})", named.join(" or "))
                }
            })
            .collect();
        anyhow::ensure!(
            missing.is_empty(),
            "no column for {}; the header is: {}",
            missing.join(", "),
            headers.join(", ")
        );
        Ok(Layout {
            kind,
            at,
            headers: headers.to_vec(),
            values: self.values.clone(),
        })
    }
}

/// Where each field is in a file's rows, and how to translate its values.
#[derive(Debug, Clone)]
pub struct Layout {
    kind: Kind,
    at: HashMap<&'static str, usize>,
    headers: Vec<String>,
    values: BTreeMap<String, BTreeMap<String, String>>,
}

/// One row's fields as text (translated), or its problems.
struct Row<'a> {
    layout: &'a Layout,
    record: &'a Record,
    bad: Vec<BadRow>,
}

impl<'a> Row<'a> {
    fn column(&self, field: &str) -> String {
        self.layout.column_of(field)
    }

    fn text(&self, field: &str) -> String {
        let Some(&i) = self.layout.at.get(field) else {
            return String::new();
        };
        let raw = self.record.cells.get(i).map(String::as_str).unwrap_or("");
        match self.layout.values.get(field).and_then(|t| t.get(raw)) {
            Some(v) => v.clone(),
            None => raw.to_string(),
        }
    }

    fn fail(&mut self, field: &str, reason: impl Into<String>) {
        let column = self.column(field);
        self.bad
            .push(BadRow::new(self.record.line, &column, reason.into()));
    }

    fn required(&mut self, field: &str) -> String {
        let t = self.text(field);
        if t.is_empty() {
            self.fail(field, "empty");
        }
        t
    }

    fn int(&mut self, field: &str, default: Option<i32>) -> i32 {
        let t = self.text(field);
        if t.is_empty() {
            return default.unwrap_or_else(|| {
                self.fail(field, "empty");
                0
            });
        }
        // "15mm", "15 mm", "DN15": the number is what counts.
        let digits = t
            .trim_start_matches("DN")
            .trim_end_matches("mm")
            .trim()
            .replace(',', "");
        digits.parse().unwrap_or_else(|_| {
            self.fail(field, format!("{t:?} is not a whole number"));
            0
        })
    }

    fn flag(&mut self, field: &str, default: Option<bool>) -> bool {
        let t = self.text(field);
        match t.to_lowercase().as_str() {
            "" if default.is_some() => default.unwrap_or(false),
            "true" | "yes" | "y" | "1" | "o" | "예" | "유" => true,
            "false" | "no" | "n" | "0" | "x" | "아니오" | "무" => false,
            _ => {
                self.fail(field, format!("{t:?} is not yes or no"));
                false
            }
        }
    }

    fn date(&mut self, field: &str) -> Option<NaiveDate> {
        let t = self.text(field);
        if t.is_empty() {
            return None;
        }
        parse_date(&t).or_else(|| {
            self.fail(field, format!("{t:?} is not a date (YYYY-MM-DD)"));
            None
        })
    }

    fn instant(&mut self, field: &str, required: bool) -> Option<DateTime<Utc>> {
        let t = self.text(field);
        if t.is_empty() {
            if required {
                self.fail(field, "empty");
            }
            return None;
        }
        parse_instant(&t).or_else(|| {
            self.fail(
                field,
                format!("{t:?} is not a date or time (YYYY-MM-DD[ HH:MM[:SS]], Korean time, or RFC 3339)"),
            );
            None
        })
    }

    fn decimal(&mut self, field: &str) -> Decimal {
        let t = self.text(field).replace(',', "");
        if t.is_empty() {
            return Decimal::ZERO;
        }
        t.parse().unwrap_or_else(|_| {
            self.fail(field, format!("{t:?} is not a number"));
            Decimal::ZERO
        })
    }

    fn id(&mut self, field: &str, check: fn(String) -> Result<(), String>) -> String {
        let t = self.required(field);
        if !t.is_empty() {
            if let Err(e) = check(t.clone()) {
                self.fail(field, e);
            }
        }
        t
    }
}

fn parse_date(t: &str) -> Option<NaiveDate> {
    ["%Y-%m-%d", "%Y.%m.%d", "%Y/%m/%d", "%Y%m%d"]
        .iter()
        .find_map(|f| NaiveDate::parse_from_str(t, f).ok())
}

/// RFC 3339, or a local Korean date or date and time.
fn parse_instant(t: &str) -> Option<DateTime<Utc>> {
    if let Ok(dt) = DateTime::parse_from_rfc3339(t) {
        return Some(dt.with_timezone(&Utc));
    }
    let local = [
        "%Y-%m-%d %H:%M:%S",
        "%Y-%m-%d %H:%M",
        "%Y-%m-%dT%H:%M:%S",
        "%Y.%m.%d %H:%M",
        "%Y%m%d%H%M%S",
    ]
    .iter()
    .find_map(|f| NaiveDateTime::parse_from_str(t, f).ok())
    .or_else(|| parse_date(t).and_then(|d| d.and_hms_opt(0, 0, 0)))?;
    kst()
        .from_local_datetime(&local)
        .single()
        .map(|d| d.with_timezone(&Utc))
}

/// Korean standard time (no daylight saving): billing's time zone.
pub fn kst() -> chrono::FixedOffset {
    chrono::FixedOffset::east_opt(9 * 3600).expect("a valid offset")
}

/// The device profiles a gateway knows: the ids of the shipped
/// `fixtures/profiles/` (the same files ingest registers meters against).
pub fn known_profiles() -> &'static std::collections::BTreeSet<String> {
    static KNOWN: std::sync::OnceLock<std::collections::BTreeSet<String>> =
        std::sync::OnceLock::new();
    KNOWN.get_or_init(|| {
        SHIPPED_PROFILES
            .iter()
            .map(|(path, text)| {
                // The shipped files are checked by a unit test below.
                waterworks_wire::profile::DeviceProfile::from_toml(text, path)
                    .expect("shipped profile parses")
                    .profile
                    .id
            })
            .collect()
    })
}

/// An item of any kind.
#[derive(Debug, Clone)]
pub enum Item {
    Customer(Customer),
    Premises(Premises),
    Meter(Meter),
    Installation(Installation),
}

impl Layout {
    /// The header of the column holding `field` (the field itself if none).
    pub fn column_of(&self, field: &str) -> String {
        self.at
            .get(field)
            .and_then(|&i| self.headers.get(i))
            .cloned()
            .unwrap_or_else(|| field.to_string())
    }

    /// One record as an item, or every problem of it.
    pub fn item(&self, record: &Record) -> Result<Item, Vec<BadRow>> {
        let mut r = Row {
            layout: self,
            record,
            bad: Vec::new(),
        };
        let item = match self.kind {
            Kind::Customers => Item::Customer(Customer {
                customer_id: r.required("customer_id"),
                name: r.required("name"),
                contact: r.text("contact"),
            }),
            Kind::Premises => Item::Premises(Premises {
                account_no: r.required("account_no"),
                customer_id: r.required("customer_id"),
                address: r.required("address"),
                road_address: r.text("road_address"),
                usage_type: r.required("usage_type"),
                diameter_mm: r.int("diameter_mm", None),
                households: r.int("households", Some(1)),
                sewer_connected: r.flag("sewer_connected", None),
                levy_exempt: r.flag("levy_exempt", Some(false)),
                billing_group: r.required("billing_group"),
                reading_route: r.text("reading_route"),
            }),
            Kind::Meters => Item::Meter(Meter {
                meter_id: r.id("meter_id", |s| {
                    waterworks_wire::MeterId::parse(s)
                        .map(|_| ())
                        .map_err(|e| e.to_string())
                }),
                serial: r.required("serial"),
                maker: r.text("maker"),
                model: r.text("model"),
                profile_id: {
                    let p = r.required("profile_id");
                    if !p.is_empty() && !known_profiles().contains(&p) {
                        let known: Vec<&String> = known_profiles().iter().collect();
                        r.fail(
                            "profile_id",
                            format!(
                                "no gateway knows the device profile {p:?} (known: {})",
                                known
                                    .iter()
                                    .map(|s| s.as_str())
                                    .collect::<Vec<_>>()
                                    .join(", ")
                            ),
                        );
                    }
                    p
                },
                diameter_mm: r.int("diameter_mm", None),
                manufactured_on: r.date("manufactured_on"),
                verified_on: r.date("verified_on"),
                gateway_id: r.id("gateway_id", |s| {
                    waterworks_wire::GatewayId::parse(s)
                        .map(|_| ())
                        .map_err(|e| e.to_string())
                }),
            }),
            Kind::Installations => {
                let account_no = r.required("account_no");
                let meter_id = r.required("meter_id");
                let installed_at = r.instant("installed_at", true);
                let removed_at = r.instant("removed_at", false);
                Item::Installation(Installation {
                    account_no,
                    meter_id,
                    installed_at: installed_at.unwrap_or_default(),
                    removed_at,
                    install_read_m3: r.decimal("install_read_m3"),
                })
            }
        };
        if r.bad.is_empty() {
            Ok(item)
        } else {
            Err(r.bad)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_known_profiles_are_every_shipped_file() {
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../fixtures/profiles");
        let mut files: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n.ends_with(".toml"))
            .map(|n| format!("fixtures/profiles/{n}"))
            .collect();
        files.sort();
        let shipped: Vec<&str> = SHIPPED_PROFILES.iter().map(|(p, _)| *p).collect();
        assert_eq!(
            files, shipped,
            "a profile in fixtures/profiles/ is not shipped here"
        );
        assert_eq!(known_profiles().len(), SHIPPED_PROFILES.len());
        assert!(known_profiles().contains("waterworks-sim-v1"));
    }

    #[test]
    fn korean_columns_and_values_become_fields() {
        let m: Mapping = toml::from_str(
            r#"
            [columns.premises]
            "수용가번호" = "account_no"
            "고객번호" = "customer_id"
            "주소" = "address"
            "업종" = "usage_type"
            "구경" = "diameter_mm"
            "하수도" = "sewer_connected"
            "요금그룹" = "billing_group"
            [values.usage_type]
            "가정용" = "household"
            "#,
        )
        .unwrap();
        let headers: Vec<String> = [
            "수용가번호",
            "고객번호",
            "주소",
            "업종",
            "구경",
            "하수도",
            "요금그룹",
        ]
        .map(String::from)
        .to_vec();
        let layout = m.layout(Kind::Premises, &headers).unwrap();
        let rec = |cells: [&str; 7]| Record {
            line: 7,
            cells: cells.map(String::from).to_vec(),
        };
        let Ok(Item::Premises(p)) =
            layout.item(&rec(["P1", "C1", "대전 서구", "가정용", "15mm", "Y", "G1"]))
        else {
            panic!("a good row");
        };
        assert_eq!(
            (
                p.usage_type.as_str(),
                p.diameter_mm,
                p.households,
                p.sewer_connected
            ),
            ("household", 15, 1, true)
        );
        let bad = layout
            .item(&rec(["P1", "", "대전 서구", "가정용", "열다섯", "?", "G1"]))
            .unwrap_err();
        let cols: Vec<&str> = bad.iter().map(|b| b.column.as_str()).collect();
        assert_eq!(cols, vec!["고객번호", "구경", "하수도"]);
        assert!(bad.iter().all(|b| b.line == 7));
        assert!(m.layout(Kind::Premises, &headers[1..]).is_err());
    }

    #[test]
    fn local_times_are_korean() {
        assert_eq!(
            parse_instant("2024-03-01").unwrap().to_rfc3339(),
            "2024-02-29T15:00:00+00:00"
        );
        assert_eq!(
            parse_instant("2024-03-01T00:00:00Z").unwrap().to_rfc3339(),
            "2024-03-01T00:00:00+00:00"
        );
    }
}
