//! A utility's export as a table of text cells: CSV in UTF-8 or CP949
//! (given or detected), or the first sheet of an XLSX workbook. Every row
//! keeps its line (CSV: the physical line it starts on; XLSX: the sheet's
//! row number), so every problem can name it. A row that cannot be read
//! (malformed CSV, bytes that are not the file's encoding) is a bad row,
//! not the end of the import.

use super::BadRow;
use anyhow::Context;
use encoding_rs::{Encoding, EUC_KR, UTF_8};
use std::path::Path;

/// The encodings of a CSV file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "clap", derive(clap::ValueEnum))]
pub enum EncodingChoice {
    /// CP949 (Windows' Korean, a superset of EUC-KR): what 요금관리 systems
    /// usually export.
    Cp949,
    #[cfg_attr(feature = "clap", value(name = "utf-8"))]
    Utf8,
}

impl EncodingChoice {
    fn encoding(self) -> &'static Encoding {
        match self {
            // encoding_rs's EUC-KR is WHATWG's, which is CP949.
            EncodingChoice::Cp949 => EUC_KR,
            EncodingChoice::Utf8 => UTF_8,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            EncodingChoice::Cp949 => "cp949",
            EncodingChoice::Utf8 => "utf-8",
        }
    }
}

/// One data row: its line and its cells, in column order.
#[derive(Debug, Clone)]
pub struct Record {
    pub line: u64,
    pub cells: Vec<String>,
}

/// A file read: the header, the rows that could be read, those that could not.
#[derive(Debug, Default)]
pub struct Table {
    pub headers: Vec<String>,
    pub records: Vec<Record>,
    pub bad: Vec<BadRow>,
    /// What the file was read as (`cp949`, `utf-8`, `xlsx`).
    pub format: String,
}

/// Reads `path`: XLSX by its extension (`.xlsx`, `.xlsm`, `.xls`, `.ods`),
/// otherwise CSV in `encoding` (or the one detected).
pub fn read(path: &Path, encoding: Option<EncodingChoice>) -> anyhow::Result<Table> {
    if is_workbook(&path.to_string_lossy()) {
        let book = calamine::open_workbook_auto(path)
            .with_context(|| format!("cannot open {} as a workbook", path.display()))?;
        return sheet_table(book, &path.display().to_string());
    }
    let bytes = std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
    Ok(read_csv(&bytes, encoding))
}

/// Whether a file of this name is a workbook (by its extension).
pub fn is_workbook(name: &str) -> bool {
    let ext = name
        .rsplit_once('.')
        .map(|(_, e)| e.to_ascii_lowercase())
        .unwrap_or_default();
    matches!(ext.as_str(), "xlsx" | "xlsm" | "xls" | "ods")
}

/// Reads a file held in memory (an upload): a workbook when `name` says so
/// (as [`read`]), otherwise CSV in `encoding` (or the one detected).
pub fn read_bytes(
    name: &str,
    bytes: &[u8],
    encoding: Option<EncodingChoice>,
) -> anyhow::Result<Table> {
    if is_workbook(name) {
        let book = calamine::open_workbook_auto_from_rs(std::io::Cursor::new(bytes))
            .with_context(|| format!("cannot open {name} as a workbook"))?;
        return sheet_table(book, name);
    }
    Ok(read_csv(bytes, encoding))
}

/// Splits raw bytes into physical lines (a `\n` byte never occurs inside a
/// CP949 or UTF-8 character) and decodes each; returns the text and the
/// lines (from 1) whose bytes are not in `enc`.
fn decode(bytes: &[u8], enc: &'static Encoding) -> (String, Vec<u64>) {
    let mut text = String::with_capacity(bytes.len() + bytes.len() / 2);
    let mut bad = Vec::new();
    for (i, line) in bytes.split_inclusive(|&b| b == b'\n').enumerate() {
        let (s, had_errors) = enc.decode_without_bom_handling(line);
        if had_errors {
            bad.push(i as u64 + 1);
        }
        text.push_str(&s);
    }
    (text, bad)
}

/// Reads CSV bytes. Without `encoding`: UTF-8 if every line is UTF-8 (a BOM
/// says so too), else whichever of CP949 and UTF-8 leaves fewer lines
/// undecodable.
pub fn read_csv(bytes: &[u8], encoding: Option<EncodingChoice>) -> Table {
    let (bytes, bom_utf8) = match bytes.strip_prefix(b"\xEF\xBB\xBF") {
        Some(rest) => (rest, true),
        None => (bytes, false),
    };
    let choice = match encoding {
        Some(c) => c,
        None if bom_utf8 || std::str::from_utf8(bytes).is_ok() => EncodingChoice::Utf8,
        None => {
            let (_, cp949_bad) = decode(bytes, EUC_KR);
            let (_, utf8_bad) = decode(bytes, UTF_8);
            if utf8_bad.len() < cp949_bad.len() {
                EncodingChoice::Utf8
            } else {
                EncodingChoice::Cp949
            }
        }
    };
    let (text, bad_lines) = decode(bytes, choice.encoding());
    let mut table = Table {
        format: choice.name().to_string(),
        ..Table::default()
    };
    let mut reader = csv::ReaderBuilder::new()
        .has_headers(false)
        .flexible(false)
        .from_reader(text.as_bytes());
    let mut starts: Vec<(u64, Result<Vec<String>, String>)> = Vec::new();
    let mut rec = csv::StringRecord::new();
    loop {
        let line = reader.position().line();
        match reader.read_record(&mut rec) {
            Ok(false) => break,
            Ok(true) => {
                let line = rec.position().map_or(line, |p| p.line());
                starts.push((line, Ok(rec.iter().map(|c| c.trim().to_string()).collect())));
            }
            Err(e) => {
                let line = e.position().map_or(line, |p| p.line());
                let reason = match e.kind() {
                    csv::ErrorKind::UnequalLengths {
                        expected_len, len, ..
                    } => format!("malformed CSV: {len} fields where the header has {expected_len}"),
                    _ => format!("malformed CSV: {e}"),
                };
                starts.push((line, Err(reason)));
            }
        }
    }
    let mut rows = starts.into_iter().peekable();
    let Some((_, header)) = rows.next() else {
        return table;
    };
    let header_end = rows.peek().map_or(u64::MAX, |(l, _)| *l);
    if bad_lines.iter().any(|&l| l < header_end) {
        table.bad.push(BadRow::new(
            1,
            "",
            format!("the header is not {}: give --encoding", choice.name()),
        ));
    }
    match header {
        Ok(h) => table.headers = h,
        Err(reason) => table.bad.push(BadRow::new(1, "", reason)),
    }
    let mut bad_iter = bad_lines.iter().copied().peekable();
    while let Some((line, cells)) = rows.next() {
        let end = rows.peek().map_or(u64::MAX, |(l, _)| *l);
        // Undecodable lines before this record belong to the one before.
        while bad_iter.peek().is_some_and(|&b| b < line) {
            bad_iter.next();
        }
        let undecodable = bad_iter.peek().is_some_and(|&b| b < end);
        if undecodable {
            table.bad.push(BadRow::new(
                line,
                "",
                format!(
                    "wrong encoding: bytes that are not {} (the rest of the file is)",
                    choice.name()
                ),
            ));
            continue;
        }
        match cells {
            Ok(cells) if cells.iter().all(String::is_empty) => {}
            Ok(cells) => table.records.push(Record { line, cells }),
            Err(reason) => table.bad.push(BadRow::new(line, "", reason)),
        }
    }
    table
}

/// Reads the first sheet of a workbook (`name` in errors); its first row is
/// the header.
fn sheet_table<RS: std::io::Read + std::io::Seek>(
    mut book: calamine::Sheets<RS>,
    name: &str,
) -> anyhow::Result<Table> {
    use calamine::{Data, Reader};
    let range = book
        .worksheet_range_at(0)
        .context("the workbook has no sheet")?
        .with_context(|| format!("cannot read the first sheet of {name}"))?;
    let first_row = range.start().map_or(0, |(r, _)| r as u64);
    let cell = |d: &Data| -> String {
        match d {
            Data::Empty => String::new(),
            Data::String(s) => s.trim().to_string(),
            Data::Int(i) => i.to_string(),
            Data::Float(f) if f.fract() == 0.0 && f.abs() < 1e15 => format!("{}", *f as i64),
            Data::Float(f) => f.to_string(),
            Data::Bool(b) => b.to_string(),
            Data::DateTime(dt) => excel_datetime(dt.as_f64()),
            Data::DateTimeIso(s) | Data::DurationIso(s) => s.clone(),
            Data::Error(e) => format!("#ERROR {e}"),
        }
    };
    let mut table = Table {
        format: "xlsx".into(),
        ..Table::default()
    };
    for (i, row) in range.rows().enumerate() {
        let line = first_row + i as u64 + 1;
        let cells: Vec<String> = row.iter().map(cell).collect();
        if i == 0 {
            table.headers = cells;
        } else if let Some(err) = row.iter().find_map(|d| match d {
            Data::Error(e) => Some(e.to_string()),
            _ => None,
        }) {
            table.bad.push(BadRow::new(
                line,
                "",
                format!("a cell holds an error: {err}"),
            ));
        } else if !cells.iter().all(String::is_empty) {
            table.records.push(Record { line, cells });
        }
    }
    Ok(table)
}

/// An Excel serial date (days since 1899-12-30) as `YYYY-MM-DD` or
/// `YYYY-MM-DDTHH:MM:SS` (local time, as the sheet shows it).
fn excel_datetime(serial: f64) -> String {
    let base = chrono::NaiveDate::from_ymd_opt(1899, 12, 30).expect("valid date");
    let days = serial.floor();
    let secs = ((serial - days) * 86_400.0).round() as i64;
    let day = base + chrono::Duration::days(days as i64);
    if secs == 0 {
        day.to_string()
    } else {
        let t = day.and_hms_opt(0, 0, 0).expect("midnight") + chrono::Duration::seconds(secs);
        t.format("%Y-%m-%dT%H:%M:%S").to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_workbook_in_memory_reads_as_from_its_file() {
        let path = Path::new(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../fixtures/import/customers.xlsx"
        ));
        let from_file = read(path, None).unwrap();
        let bytes = std::fs::read(path).unwrap();
        let in_memory = read_bytes("고객.XLSX", &bytes, None).unwrap();
        assert_eq!(in_memory.format, "xlsx");
        assert_eq!(in_memory.headers, from_file.headers);
        assert!(!in_memory.records.is_empty());
        let lines = |t: &Table| {
            t.records
                .iter()
                .map(|r| (r.line, r.cells.clone()))
                .collect::<Vec<_>>()
        };
        assert_eq!(lines(&in_memory), lines(&from_file));
        // Any other name is CSV.
        assert_eq!(
            read_bytes("x.csv", b"a,b\n1,2\n", None).unwrap().format,
            "utf-8"
        );
    }

    #[test]
    fn cp949_is_detected_and_a_utf8_line_inside_it_is_a_bad_row() {
        let (header, _, _) = EUC_KR.encode("번호,이름\n1,홍길동\n");
        let mut bytes = header.into_owned();
        bytes.extend_from_slice("2,김철수\n".as_bytes()); // UTF-8 in a CP949 file
        bytes.extend_from_slice(&EUC_KR.encode("3,이영희\n").0);
        bytes.extend_from_slice(&EUC_KR.encode("4,a,b\n").0);
        let t = read_csv(&bytes, None);
        assert_eq!(t.format, "cp949");
        assert_eq!(t.headers, vec!["번호", "이름"]);
        let lines: Vec<u64> = t.records.iter().map(|r| r.line).collect();
        assert_eq!(lines, vec![2, 4]);
        assert_eq!(t.records[1].cells, vec!["3", "이영희"]);
        let bad: Vec<(u64, bool)> = t
            .bad
            .iter()
            .map(|b| (b.line, b.reason.starts_with("wrong encoding")))
            .collect();
        assert_eq!(bad, vec![(3, true), (5, false)]);
        assert!(t.bad[1].reason.starts_with("malformed CSV"));
    }

    #[test]
    fn utf8_with_quoted_newlines_keeps_the_lines() {
        let t = read_csv("a,b\n1,\"x\ny\"\n2,z\n".as_bytes(), None);
        assert_eq!(t.format, "utf-8");
        let lines: Vec<u64> = t.records.iter().map(|r| r.line).collect();
        assert_eq!(lines, vec![2, 4]);
        assert!(t.bad.is_empty());
    }

    #[test]
    fn excel_serials_are_dates() {
        assert_eq!(excel_datetime(45292.0), "2024-01-01");
        assert_eq!(excel_datetime(45292.5), "2024-01-01T12:00:00");
    }
}
