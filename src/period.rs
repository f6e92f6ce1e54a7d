//! Trade periods: months, quarters and years.
//!
//! Customs data arrive with periods written many ways (`2024-12`, `202412`,
//! `2024-12-01`, `2024-Q4`, `2024`). The store keeps one form: a `Date` holding
//! the first day of the period, plus the dataset's frequency in its manifest.
//! This module parses the written forms, and does the little calendar arithmetic
//! the store needs (days since 1970, labels, gaps) without allocating, since it
//! runs once per ingested row.

use serde::{Deserialize, Serialize};
use std::fmt;

/// How often a dataset has one observation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Frequency {
    Month,
    Quarter,
    Year,
}

impl Frequency {
    pub fn name(self) -> &'static str {
        match self {
            Frequency::Month => "month",
            Frequency::Quarter => "quarter",
            Frequency::Year => "year",
        }
    }

    /// Months in one period of this frequency.
    pub fn months(self) -> u32 {
        match self {
            Frequency::Month => 1,
            Frequency::Quarter => 3,
            Frequency::Year => 12,
        }
    }
}

impl fmt::Display for Frequency {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// One period: the year, the first month of the period (1..=12) and its frequency.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Period {
    pub year: i32,
    pub month: u32,
    pub frequency: Frequency,
}

/// Why a period did not parse; the caller adds file, line and column.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeriodError(pub String);

impl Period {
    pub fn month(year: i32, month: u32) -> Period {
        Period { year, month, frequency: Frequency::Month }
    }

    /// Parses `2024-12`, `202412`, `2024-12-01`, `2024-Q4`, `2024Q4` or `2024`.
    pub fn parse(text: &str) -> Result<Period, PeriodError> {
        let s = text.trim().as_bytes();
        let bad = |why: &str| Err(PeriodError(why.to_string()));
        let digits = |b: &[u8]| -> Option<u32> {
            if b.is_empty() || !b.iter().all(u8::is_ascii_digit) {
                return None;
            }
            Some(b.iter().fold(0u32, |n, d| n * 10 + u32::from(d - b'0')))
        };
        if s.len() < 4 {
            return bad("a period is written 2024-12, 202412, 2024-12-01, 2024-Q4 or 2024");
        }
        let Some(year) = digits(&s[..4]) else {
            return bad("a period starts with a four-digit year");
        };
        let year = year as i32;
        if !(1800..=2200).contains(&year) {
            return bad("the year is outside 1800..2200");
        }
        let rest = &s[4..];
        let month_ok = |m: u32| {
            if (1..=12).contains(&m) {
                Ok(Period::month(year, m))
            } else {
                Err(PeriodError(format!("there is no month {m}")))
            }
        };
        match rest {
            [] => Ok(Period { year, month: 1, frequency: Frequency::Year }),
            [b'-', b'Q' | b'q', q] | [b'Q' | b'q', q] => match q {
                b'1'..=b'4' => Ok(Period { year, month: u32::from(q - b'1') * 3 + 1, frequency: Frequency::Quarter }),
                _ => bad("a quarter is Q1, Q2, Q3 or Q4"),
            },
            [m1, m2] => match digits(&[*m1, *m2]) {
                Some(m) => month_ok(m),
                None => bad("a period is written 2024-12, 202412, 2024-12-01, 2024-Q4 or 2024"),
            },
            [b'-', m1, m2] => match digits(&[*m1, *m2]) {
                Some(m) => month_ok(m),
                None => bad("the month must be two digits, 01 to 12"),
            },
            [b'-', m1, m2, b'-', d1, d2] => match (digits(&[*m1, *m2]), digits(&[*d1, *d2])) {
                (Some(m), Some(1)) => month_ok(m),
                (Some(_), Some(_)) => bad("a date period must be the first day of its month (2024-12-01); \
                     daily data is not supported"),
                _ => bad("a date is written 2024-12-01"),
            },
            _ => bad("a period is written 2024-12, 202412, 2024-12-01, 2024-Q4 or 2024"),
        }
    }

    /// Days from 1970-01-01 to the first day of the period (polars' `Date`).
    pub fn days(self) -> i32 {
        days_from_civil(self.year, self.month, 1)
    }

    /// The period that starts on `days` (the inverse of [`Period::days`]).
    pub fn from_days(days: i32, frequency: Frequency) -> Period {
        let (year, month, _) = civil_from_days(days);
        Period { year, month, frequency }
    }

    /// The next period of the same frequency.
    pub fn next(self) -> Period {
        let m = self.month - 1 + self.frequency.months();
        Period { year: self.year + (m / 12) as i32, month: m % 12 + 1, frequency: self.frequency }
    }

    /// Every period from `first` to `last`, both included.
    pub fn range(first: Period, last: Period) -> impl Iterator<Item = Period> {
        std::iter::successors(Some(first), move |p| Some(p.next()).filter(|n| *n <= last))
    }
}

impl fmt::Display for Period {
    /// The label users write: `2024-12`, `2024-Q4` or `2024`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.frequency {
            Frequency::Month => write!(f, "{}-{:02}", self.year, self.month),
            Frequency::Quarter => write!(f, "{}-Q{}", self.year, (self.month - 1) / 3 + 1),
            Frequency::Year => write!(f, "{}", self.year),
        }
    }
}

/// Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's algorithm).
pub fn days_from_civil(year: i32, month: u32, day: u32) -> i32 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = if y >= 0 { y } else { y - 399 } / 400;
    let yoe = y - era * 400;
    let m = month as i32;
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + day as i32 - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// The inverse of [`days_from_civil`]: (year, month, day).
pub fn civil_from_days(days: i32) -> (i32, u32, u32) {
    let z = days + 719_468;
    let era = if z >= 0 { z } else { z - 146_096 } / 146_097;
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i32::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_every_accepted_form() {
        let dec = Period::month(2024, 12);
        assert_eq!(Period::parse("2024-12"), Ok(dec));
        assert_eq!(Period::parse("202412"), Ok(dec));
        assert_eq!(Period::parse("2024-12-01"), Ok(dec));
        assert_eq!(Period::parse(" 2024-12 "), Ok(dec));
        let q4 = Period::parse("2024-Q4").unwrap();
        assert_eq!((q4.month, q4.frequency), (10, Frequency::Quarter));
        assert_eq!(Period::parse("2024q4"), Ok(q4));
        let y = Period::parse("2024").unwrap();
        assert_eq!((y.month, y.frequency), (1, Frequency::Year));
    }

    #[test]
    fn rejects_bad_periods_with_a_reason() {
        for bad in ["2024-13", "2024-Q5", "2024-12-15", "24-12", "", "2024/12", "abcd", "2024-1"] {
            assert!(Period::parse(bad).is_err(), "{bad:?} should not parse");
        }
        assert!(Period::parse("2024-12-15").unwrap_err().0.contains("first day"));
    }

    #[test]
    fn days_round_trip_and_match_the_calendar() {
        assert_eq!(days_from_civil(1970, 1, 1), 0);
        assert_eq!(days_from_civil(2024, 12, 1), 20058);
        assert_eq!(days_from_civil(2000, 3, 1), 11017);
        for days in [-800_000, -1, 0, 59, 11016, 20058, 100_000] {
            let (y, m, d) = civil_from_days(days);
            assert_eq!(days_from_civil(y, m, d), days);
        }
    }

    #[test]
    fn labels_and_ranges() {
        let q = Period::parse("2023-Q4").unwrap();
        assert_eq!(q.to_string(), "2023-Q4");
        assert_eq!(q.next().to_string(), "2024-Q1");
        let months: Vec<String> =
            Period::range(Period::month(2023, 11), Period::month(2024, 2)).map(|p| p.to_string()).collect();
        assert_eq!(months, ["2023-11", "2023-12", "2024-01", "2024-02"]);
        assert_eq!(Period::from_days(20058, Frequency::Month), Period::month(2024, 12));
    }
}
