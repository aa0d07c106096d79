//! A deterministic utility-style export for tests and the benchmark:
//! customers, premises (수용가), meters and installations as four CSV files
//! in CP949 with Korean headers (the layout `fixtures/import/korean.toml`
//! maps), with about 1% bad rows of every kind the import must catch, and
//! the generator's own list of what it spoiled (`spoiled.csv`: file, line,
//! kind).
//!
//! Every good premises has one customer, one meter and one installation
//! (some premises had an earlier meter, exchanged). Bad rows are extra rows
//! (or the second copy of a key), so dropping them leaves every good row
//! importable: nothing good depends on a bad row.

use super::Kind;
use chrono::{Duration, NaiveDate};
use encoding_rs::EUC_KR;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use std::fmt::Write as _;
use std::path::Path;

/// A row the generator spoiled on purpose.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Spoiled {
    pub kind: Kind,
    /// The line of the file, from 1 (the header is line 1).
    pub line: u64,
    pub what: &'static str,
}

/// What was written.
#[derive(Debug, Clone, Default)]
pub struct Export {
    /// Rows per file (header excluded), good and bad: customers, premises,
    /// meters, installations.
    pub rows: [usize; 4],
    pub spoiled: Vec<Spoiled>,
    /// The meters that are installed now (good rows), with their gateway.
    pub installed_meters: Vec<(String, String)>,
}

impl Export {
    pub fn spoiled_lines(&self, kind: Kind) -> std::collections::BTreeSet<u64> {
        self.spoiled
            .iter()
            .filter(|s| s.kind == kind)
            .map(|s| s.line)
            .collect()
    }

    pub fn good_rows(&self, kind: Kind) -> usize {
        let i = Kind::ALL.iter().position(|k| *k == kind).unwrap_or(0);
        self.rows[i] - self.spoiled_lines(kind).len()
    }
}

/// The file of each kind in an export directory.
pub fn file_name(kind: Kind) -> &'static str {
    match kind {
        Kind::Customers => "customers.csv",
        Kind::Premises => "premises.csv",
        Kind::Meters => "meters.csv",
        Kind::Installations => "installations.csv",
    }
}

/// Meters per gateway in the export.
pub const METERS_PER_GATEWAY: usize = 500;

const SURNAMES: [&str; 10] = ["김", "이", "박", "최", "정", "강", "조", "윤", "장", "임"];
const GIVEN: [&str; 10] = [
    "민준", "서연", "도윤", "지우", "하준", "서윤", "예준", "하은", "지호", "수아",
];
const GU: [&str; 5] = ["동구", "중구", "서구", "유성구", "대덕구"];
const ROADS: [&str; 6] = [
    "대덕대로",
    "계룡로",
    "한밭대로",
    "유성대로",
    "둔산로",
    "갑천로",
];
const USAGES: [(&str, u32); 4] = [("가정용", 80), ("일반용", 15), ("욕탕용", 1), ("산업용", 4)];
const DIAMETERS: [u32; 6] = [15, 20, 25, 32, 40, 50];
const PROFILES: [&str; 2] = ["waterworks-sim-v1", "waterworks-sim-dn50-v1"];

/// One file being written: its text and its line count.
struct File {
    kind: Kind,
    text: String,
    /// Raw bytes spliced in (wrong encoding) after the CP949 text, by line.
    raw: Vec<(u64, Vec<u8>)>,
    line: u64,
    rows: usize,
}

impl File {
    fn new(kind: Kind, header: &str) -> File {
        File {
            kind,
            text: format!("{header}\n"),
            raw: Vec::new(),
            line: 1,
            rows: 0,
        }
    }

    fn row(&mut self, cells: &[String]) -> u64 {
        self.line += 1;
        self.rows += 1;
        let _ = writeln!(self.text, "{}", cells.join(","));
        self.line
    }

    /// A row whose text is UTF-8 inside the CP949 file.
    fn utf8_row(&mut self, cells: &[String]) -> u64 {
        self.line += 1;
        self.rows += 1;
        // A placeholder line replaced by the raw bytes when encoding.
        let _ = writeln!(self.text, "\u{1}{}", self.raw.len());
        self.raw
            .push((self.line, format!("{}\n", cells.join(",")).into_bytes()));
        self.line
    }

    fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.text.len() * 2);
        let mut raw = self.raw.iter();
        for line in self.text.split_inclusive('\n') {
            if line.starts_with('\u{1}') {
                if let Some((_, bytes)) = raw.next() {
                    out.extend_from_slice(bytes);
                }
            } else {
                let (bytes, _, unmappable) = EUC_KR.encode(line);
                debug_assert!(!unmappable, "{line}");
                out.extend_from_slice(&bytes);
            }
        }
        out
    }
}

/// A Korean name that, written in UTF-8, is not valid CP949 (so a row
/// holding it is a wrong-encoding row, never silently mojibake).
fn utf8_poison_name(rng: &mut ChaCha8Rng) -> String {
    loop {
        let name = format!(
            "{}{}",
            SURNAMES[rng.gen_range(0..SURNAMES.len())],
            GIVEN[rng.gen_range(0..GIVEN.len())]
        );
        let (_, errors) = EUC_KR.decode_without_bom_handling(name.as_bytes());
        if errors {
            return name;
        }
    }
}

/// Writes the four files and `spoiled.csv` into `dir` for `premises` good
/// premises, from `seed`; `today` bounds every good date (bad "future"
/// dates are after it).
pub fn write_export(
    dir: &Path,
    premises: usize,
    seed: u64,
    today: NaiveDate,
) -> std::io::Result<Export> {
    std::fs::create_dir_all(dir)?;
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut spoiled = Vec::new();
    let mut customers = File::new(Kind::Customers, "고객번호,고객명,연락처");
    let mut prem = File::new(
        Kind::Premises,
        "수용가번호,고객번호,주소,도로명주소,업종,구경,가구수,하수도연결,물이용부담금면제,요금그룹,검침구역",
    );
    let mut meters = File::new(
        Kind::Meters,
        "계량기번호,제조번호,제조사,모델,프로파일,구경,제조일자,검정일자,게이트웨이",
    );
    let mut inst = File::new(
        Kind::Installations,
        "수용가번호,계량기번호,설치일시,철거일시,설치지침",
    );
    let mut installed_meters = Vec::new();
    // Every bad kind about once per 100 good rows of its file.
    let every = 100usize;
    let mut spoil = |f: &File, line: u64, what: &'static str| {
        spoiled.push(Spoiled {
            kind: f.kind,
            line,
            what,
        })
    };
    let mut extra = 0usize;
    let mut fresh = || {
        extra += 1;
        extra
    };
    let base_day = NaiveDate::from_ymd_opt(2015, 1, 1).expect("date");
    let span_days = (today - base_day).num_days().max(400) - 200;
    let mut good_installs: Vec<(String, String, NaiveDate)> = Vec::with_capacity(premises);
    for n in 1..=premises {
        let cust_id = format!("C{n:07}");
        let name = format!(
            "{}{}",
            SURNAMES[rng.gen_range(0..SURNAMES.len())],
            GIVEN[rng.gen_range(0..GIVEN.len())]
        );
        let phone = format!(
            "010-{:04}-{:04}",
            rng.gen_range(0..10_000),
            rng.gen_range(0..10_000)
        );
        customers.row(&[cust_id.clone(), name.clone(), phone.clone()]);
        let account = format!("{:04}-{n:07}", 1000 + n % 5);
        let gu = GU[n % GU.len()];
        let road = ROADS[rng.gen_range(0..ROADS.len())];
        let no = rng.gen_range(1..400);
        let roll = rng.gen_range(0..100);
        let mut acc = 0;
        let usage = USAGES
            .iter()
            .find(|(_, w)| {
                acc += w;
                roll < acc
            })
            .map_or("가정용", |(u, _)| u);
        let diameter = if usage == "가정용" {
            15
        } else {
            DIAMETERS[rng.gen_range(0..DIAMETERS.len())]
        };
        let households = if usage == "가정용" && rng.gen_range(0..10) == 0 {
            rng.gen_range(2..40)
        } else {
            1
        };
        let group = format!("G{}", n % 4 + 1);
        let route = format!("R{:03}", n / 250);
        let prem_row = |account: &str, usage: &str, diameter: u32, rng: &mut ChaCha8Rng| {
            vec![
                account.to_string(),
                cust_id.clone(),
                format!("대전광역시 {gu} {road} {no}"),
                format!("대전광역시 {gu} {road} {no}번길 {}", rng.gen_range(1..50)),
                usage.to_string(),
                diameter.to_string(),
                households.to_string(),
                if rng.gen_range(0..10) < 9 { "Y" } else { "N" }.to_string(),
                if rng.gen_range(0..50) == 0 { "Y" } else { "N" }.to_string(),
                group.clone(),
                route.clone(),
            ]
        };
        let p = prem_row(&account, usage, diameter, &mut rng);
        prem.row(&p);
        let meter_id = format!("M{n:07}");
        let gateway = format!("gw-{:03}", (n - 1) / METERS_PER_GATEWAY + 1);
        let made = base_day + Duration::days(rng.gen_range(0..span_days / 2));
        let profile = if diameter >= 50 {
            PROFILES[1]
        } else {
            PROFILES[0]
        };
        let meter_row = |id: &str, profile: &str, diameter: u32, made: NaiveDate| {
            vec![
                id.to_string(),
                format!("SN{:09}", n * 7 + 3),
                "대한계기".to_string(),
                "DWM-15".to_string(),
                profile.to_string(),
                diameter.to_string(),
                made.to_string(),
                (made + Duration::days(30)).to_string(),
                gateway.clone(),
            ]
        };
        meters.row(&meter_row(&meter_id, profile, diameter, made));
        // Installed after it was verified; one in ten premises had an
        // earlier meter, exchanged.
        let installed = made + Duration::days(rng.gen_range(31..(span_days / 2).max(32)));
        if n % 10 == 0 {
            let old_from = installed - Duration::days(rng.gen_range(400..1500));
            inst.row(&[
                account.clone(),
                format!("X{n:07}"),
                format!("{old_from} 09:00"),
                format!("{installed} 09:00"),
                format!("{}", rng.gen_range(0..500)),
            ]);
        }
        inst.row(&[
            account.clone(),
            meter_id.clone(),
            format!("{installed} 10:00"),
            String::new(),
            format!("{}.{:03}", rng.gen_range(0..20), rng.gen_range(0..1000)),
        ]);
        installed_meters.push((meter_id.clone(), gateway.clone()));
        good_installs.push((account.clone(), meter_id.clone(), installed));

        // The bad rows, each kind about once per `every` premises.
        if n % every == 17 {
            // Customers: a key twice, a malformed row, a wrong encoding.
            let l = customers.row(&[cust_id.clone(), name.clone(), "02-000-0000".into()]);
            spoil(&customers, l, "duplicate_key");
            let x = fresh();
            let l = customers.row(&[
                format!("CX{x:07}"),
                name.clone(),
                phone.clone(),
                "여분".into(),
            ]);
            spoil(&customers, l, "malformed_csv");
            let x = fresh();
            let poison = utf8_poison_name(&mut rng);
            let l = customers.utf8_row(&[format!("CX{x:07}"), poison, phone.clone()]);
            spoil(&customers, l, "wrong_encoding");
        }
        if n % every == 29 {
            // Premises: a key twice, an unknown usage type, an unknown
            // diameter, a malformed row, a wrong encoding.
            let l = prem.row(&p);
            spoil(&prem, l, "duplicate_key");
            let x = fresh();
            let l = prem.row(&prem_row(&format!("9999-{x:07}"), "농업용", 15, &mut rng));
            spoil(&prem, l, "unknown_usage_type");
            let x = fresh();
            let l = prem.row(&prem_row(&format!("9999-{x:07}"), "가정용", 17, &mut rng));
            spoil(&prem, l, "unknown_diameter");
            let x = fresh();
            let mut row = prem_row(&format!("9999-{x:07}"), "가정용", 15, &mut rng);
            row.push("여분".into());
            let l = prem.row(&row);
            spoil(&prem, l, "malformed_csv");
            let x = fresh();
            let mut row = prem_row(&format!("9999-{x:07}"), "가정용", 15, &mut rng);
            row[2] = format!("대전광역시 {}", utf8_poison_name(&mut rng));
            let l = prem.utf8_row(&row);
            spoil(&prem, l, "wrong_encoding");
        }
        if n % every == 41 {
            // Meters: a key twice, a profile no gateway knows, an unknown
            // diameter, made in the future, a malformed row, a wrong encoding.
            let l = meters.row(&meter_row(&meter_id, profile, diameter, made));
            spoil(&meters, l, "duplicate_key");
            let x = fresh();
            let l = meters.row(&meter_row(&format!("MX{x:07}"), "acme-9000", 15, made));
            spoil(&meters, l, "unknown_profile");
            let x = fresh();
            let l = meters.row(&meter_row(&format!("MX{x:07}"), PROFILES[0], 17, made));
            spoil(&meters, l, "unknown_diameter");
            let x = fresh();
            let l = meters.row(&meter_row(
                &format!("MX{x:07}"),
                PROFILES[0],
                15,
                today + Duration::days(40),
            ));
            spoil(&meters, l, "future_date");
            let x = fresh();
            let mut row = meter_row(&format!("MX{x:07}"), PROFILES[0], 15, made);
            row.push("여분".into());
            let l = meters.row(&row);
            spoil(&meters, l, "malformed_csv");
            let x = fresh();
            let mut row = meter_row(&format!("MX{x:07}"), PROFILES[0], 15, made);
            row[2] = utf8_poison_name(&mut rng);
            let l = meters.utf8_row(&row);
            spoil(&meters, l, "wrong_encoding");
        }
    }
    // Installations' bad rows refer to good premises and meters, so they
    // come after every good one is known.
    for (k, (account, meter, installed)) in good_installs.iter().enumerate() {
        if k % every != 53 {
            continue;
        }
        let later = (*installed + Duration::days(20)).min(today - Duration::days(1));
        let (other_account, _, other_installed) = &good_installs[(k + 7) % good_installs.len()];
        let l = inst.row(&[
            account.clone(),
            meter.clone(),
            format!("{installed} 10:00"),
            String::new(),
            "0".into(),
        ]);
        spoil(&inst, l, "duplicate_key");
        // This meter at another premises too, while it is still here.
        let at =
            (*installed.max(other_installed) + Duration::days(5)).min(today - Duration::days(1));
        let l = inst.row(&[
            other_account.clone(),
            meter.clone(),
            format!("{at} 12:00"),
            String::new(),
            "0".into(),
        ]);
        spoil(&inst, l, "meter_in_two_places");
        let x = fresh();
        let l = inst.row(&[
            account.clone(),
            format!("MY{x:07}"),
            format!("{later} 12:00"),
            String::new(),
            "0".into(),
        ]);
        spoil(&inst, l, "overlapping_installation");
        let x = fresh();
        let l = inst.row(&[
            account.clone(),
            format!("MY{x:07}"),
            format!("{} 12:00", today + Duration::days(30)),
            String::new(),
            "0".into(),
        ]);
        spoil(&inst, l, "future_date");
        let x = fresh();
        let l = inst.row(&[
            account.clone(),
            format!("MY{x:07}"),
            format!("{later} 12:00"),
            String::new(),
            "0".into(),
            "여분".into(),
        ]);
        spoil(&inst, l, "malformed_csv");
    }
    let mut export = Export {
        rows: [0; 4],
        spoiled: Vec::new(),
        installed_meters,
    };
    for (i, f) in [customers, prem, meters, inst].iter().enumerate() {
        std::fs::write(dir.join(file_name(f.kind)), f.encode())?;
        export.rows[i] = f.rows;
    }
    let mut list = String::from("file,line,kind\n");
    for s in &spoiled {
        let _ = writeln!(list, "{},{},{}", file_name(s.kind), s.line, s.what);
    }
    std::fs::write(dir.join("spoiled.csv"), list)?;
    export.spoiled = spoiled;
    Ok(export)
}
