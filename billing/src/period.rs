//! A billing period: one calendar month in Korean local time.
//!
//! The period `2026-10` spans `[2026-10-01T00:00+09:00, 2026-11-01T00:00+09:00)`.
//! Korea keeps UTC+9 all year (no daylight saving), so a fixed offset is exact.
//! This module must never depend on the machine's local time zone.

use chrono::{DateTime, FixedOffset, NaiveDate, TimeZone, Utc};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::fmt;
use std::str::FromStr;

/// Korean Standard Time, UTC+9, no DST.
pub const KST_OFFSET_S: i32 = 9 * 3600;

/// Year bounds accepted when parsing, so arithmetic on dates never overflows.
const MIN_YEAR: i32 = 1900;
const MAX_YEAR: i32 = 9998;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Period {
    year: i32,
    month: u32,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PeriodError {
    #[error("period {0:?} is not of the form YYYY-MM (for example 2026-10)")]
    Syntax(String),
    #[error("period {0:?} is out of range (year {MIN_YEAR}..={MAX_YEAR}, month 1..=12)")]
    Range(String),
}

pub fn kst() -> FixedOffset {
    FixedOffset::east_opt(KST_OFFSET_S).expect("UTC+9 is a valid offset")
}

impl Period {
    pub fn new(year: i32, month: u32) -> Result<Self, PeriodError> {
        if !(MIN_YEAR..=MAX_YEAR).contains(&year) || !(1..=12).contains(&month) {
            return Err(PeriodError::Range(format!("{year:04}-{month:02}")));
        }
        Ok(Self { year, month })
    }

    pub fn year(&self) -> i32 {
        self.year
    }

    pub fn month(&self) -> u32 {
        self.month
    }

    /// The first day of the period (a local date in Korea).
    pub fn first_day(&self) -> NaiveDate {
        NaiveDate::from_ymd_opt(self.year, self.month, 1).expect("validated year and month")
    }

    pub fn next(&self) -> Period {
        if self.month == 12 {
            Period {
                year: self.year + 1,
                month: 1,
            }
        } else {
            Period {
                year: self.year,
                month: self.month + 1,
            }
        }
    }

    pub fn prev(&self) -> Period {
        if self.month == 1 {
            Period {
                year: self.year - 1,
                month: 12,
            }
        } else {
            Period {
                year: self.year,
                month: self.month - 1,
            }
        }
    }

    /// Adds (or with a negative `n`, subtracts) whole months.
    pub fn add_months(&self, n: i32) -> Period {
        let index = self.year * 12 + (self.month as i32 - 1) + n;
        Period {
            year: index.div_euclid(12),
            month: index.rem_euclid(12) as u32 + 1,
        }
    }

    /// Days in the period (28..=31).
    pub fn days(&self) -> u32 {
        (self.next().first_day() - self.first_day()).num_days() as u32
    }

    /// 00:00 KST on the first day, in UTC.
    pub fn start_utc(&self) -> DateTime<Utc> {
        local_midnight_utc(self.first_day())
    }

    /// 00:00 KST on the first day of the next month, in UTC (exclusive end).
    pub fn end_utc(&self) -> DateTime<Utc> {
        self.next().start_utc()
    }

    /// The last month that is over in Korea at `now` (the month before the
    /// one holding `now`'s local date): what `--period previous` bills.
    pub fn last_complete(now: DateTime<Utc>) -> Period {
        Period::containing(now).prev()
    }

    /// The period holding the local (KST) date of `ts`.
    pub fn containing(ts: DateTime<Utc>) -> Period {
        let local = ts.with_timezone(&kst());
        use chrono::Datelike;
        Period {
            year: local.year(),
            month: local.month(),
        }
    }
}

/// 00:00 KST of `day`, as a UTC instant.
pub fn local_midnight_utc(day: NaiveDate) -> DateTime<Utc> {
    kst()
        .from_local_datetime(&day.and_hms_opt(0, 0, 0).expect("midnight exists"))
        .single()
        .expect("a fixed offset has exactly one mapping")
        .with_timezone(&Utc)
}

impl fmt::Display for Period {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:04}-{:02}", self.year, self.month)
    }
}

impl FromStr for Period {
    type Err = PeriodError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let syntax = || PeriodError::Syntax(s.chars().take(40).collect());
        let (y, m) = s.trim().split_once('-').ok_or_else(syntax)?;
        if y.len() != 4 || m.len() != 2 || !y.bytes().chain(m.bytes()).all(|b| b.is_ascii_digit()) {
            return Err(syntax());
        }
        let year: i32 = y.parse().map_err(|_| syntax())?;
        let month: u32 = m.parse().map_err(|_| syntax())?;
        Period::new(year, month).map_err(|_| PeriodError::Range(s.to_string()))
    }
}

impl Serialize for Period {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Period {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn october_2026_spans_kst_month() {
        let p: Period = "2026-10".parse().unwrap();
        assert_eq!(p.to_string(), "2026-10");
        assert_eq!(p.start_utc().to_rfc3339(), "2026-09-30T15:00:00+00:00");
        assert_eq!(p.end_utc().to_rfc3339(), "2026-10-31T15:00:00+00:00");
        assert_eq!(p.days(), 31);
        assert_eq!("2024-02".parse::<Period>().unwrap().days(), 29);
        assert_eq!(
            "2026-12".parse::<Period>().unwrap().next().to_string(),
            "2027-01"
        );
        assert_eq!(
            "2027-01".parse::<Period>().unwrap().prev().to_string(),
            "2026-12"
        );
        assert_eq!(p.add_months(-10).to_string(), "2025-12");
    }

    #[test]
    fn containing_uses_korean_dates() {
        let ts: DateTime<Utc> = "2026-09-30T15:00:00Z".parse().unwrap();
        assert_eq!(Period::containing(ts).to_string(), "2026-10");
        let ts: DateTime<Utc> = "2026-09-30T14:59:59Z".parse().unwrap();
        assert_eq!(Period::containing(ts).to_string(), "2026-09");
    }

    #[test]
    fn bad_periods_are_refused() {
        for bad in [
            "2026-13", "2026-00", "2026-1", "26-10", "2026/10", "", "abcd-ef", "0000-01",
        ] {
            assert!(bad.parse::<Period>().is_err(), "{bad}");
        }
    }

    proptest! {
        #[test]
        fn display_parse_round_trip(y in MIN_YEAR..=MAX_YEAR, m in 1u32..=12) {
            let p = Period::new(y, m).unwrap();
            prop_assert_eq!(p.to_string().parse::<Period>().unwrap(), p);
            prop_assert_eq!(p.next().prev(), p);
            prop_assert_eq!(p.end_utc(), p.next().start_utc());
        }

        #[test]
        fn parse_never_panics(s in ".{0,12}") {
            let _ = s.parse::<Period>();
        }
    }
}
