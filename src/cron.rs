//! Crontab schedules with Vixie cron semantics, and the time zone they are read in.
//!
//! A schedule has the five fields of crontab(5): minute, hour, day of month,
//! month, day of week. Each field is `*`, a number, a name (`jan`–`dec`,
//! `sun`–`sat`, any case), a range `a-b`, a step `*/n`, `a-b/n` or `a/n`
//! (= `a-MAX/n`), or a comma-separated list of those. Day of week counts
//! from 0 = Sunday; 7 is Sunday too, so `1-5` is Monday–Friday. As in Vixie
//! cron, when both day fields are restricted a day matches if *either* does
//! (`0 0 1,15 * MON` runs on the 1st, the 15th and every Monday); when either
//! day field starts with `*` both must match. `@hourly`, `@daily`
//! (`@midnight`), `@weekly`, `@monthly` and `@yearly` (`@annually`) are the
//! usual shorthands. A sixth field in front, seconds, is accepted for tests
//! that compress schedules to seconds (`*/10 * * * * *`); five-field
//! schedules run at second 0.
//!
//! Schedules are evaluated in a [`Zone`]: UTC, a fixed offset, or an IANA
//! zone such as `Europe/Berlin`. Across daylight-saving changes a slot in
//! the skipped hour runs once, at the first instant after the gap, and a
//! slot in the repeated hour runs once, in its first pass.
//!
//! The evaluator is written here rather than on top of the `cron` crate:
//! that crate numbers weekdays from 1 = Sunday, requires both day fields to
//! match and knows nothing of gaps and repeated hours, so a translation
//! would need this parser anyway and a union of schedules on top of it.

use std::fmt;
use std::str::FromStr;

use chrono::{
    DateTime, Datelike, Duration, FixedOffset, LocalResult, NaiveDate, NaiveDateTime, Offset,
    TimeZone, Timelike, Utc,
};
use serde::de::{self, Deserializer};
use serde::Deserialize;

/// A policy schedule must run at least once in this many days.
pub const MAX_GAP_DAYS: i64 = 400;

/// How far back [`CronSchedule::latest_at_or_before`] looks.
const BACK_HORIZON_DAYS: i64 = MAX_GAP_DAYS;

/// How far ahead [`CronSchedule::next_after`] looks: the longest gap of a
/// schedule that runs at all (29 February across 2100) fits.
const AHEAD_HORIZON_DAYS: i64 = 8 * 366 + 7;

/// A crontab schedule (see the module documentation for the syntax).
#[derive(Clone, PartialEq, Eq)]
pub struct CronSchedule {
    text: String,
    spec: Spec,
}

/// The parsed fields as bit sets (bit n = value n).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Spec {
    seconds: u64,
    minutes: u64,
    hours: u64,
    days_of_month: u64,
    months: u64,
    days_of_week: u64,
    /// Either day field starts with `*`: a day must match both (Vixie's rule); otherwise either.
    days_and: bool,
}

/// A schedule that does not parse: the expression and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{expr}` is not a cron schedule: {reason}")]
pub struct CronError {
    /// The expression as written.
    pub expr: String,
    /// What is wrong with it and how to write it.
    pub reason: String,
}

/// One field's name, bounds and value names.
struct Field {
    name: &'static str,
    min: u32,
    max: u32,
    /// Names of the values from `min` on.
    names: &'static [&'static str],
}

const SECOND: Field = Field {
    name: "second",
    min: 0,
    max: 59,
    names: &[],
};
const MINUTE: Field = Field {
    name: "minute",
    min: 0,
    max: 59,
    names: &[],
};
const HOUR: Field = Field {
    name: "hour",
    min: 0,
    max: 23,
    names: &[],
};
const DAY_OF_MONTH: Field = Field {
    name: "day-of-month",
    min: 1,
    max: 31,
    names: &[],
};
const MONTH: Field = Field {
    name: "month",
    min: 1,
    max: 12,
    names: &[
        "jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec",
    ],
};
const DAY_OF_WEEK: Field = Field {
    name: "day-of-week",
    min: 0,
    max: 7,
    names: &["sun", "mon", "tue", "wed", "thu", "fri", "sat", "sun"],
};

const FIVE_FIELDS: &str = "write 5 fields, minute hour day-of-month month day-of-week (e.g. \"0 4 * * 0\": Sundays at 04:00), or @hourly, @daily, @weekly, @monthly, @yearly";

impl Field {
    fn value(&self, s: &str) -> Result<u32, String> {
        if let Some(i) = self.names.iter().position(|n| n.eq_ignore_ascii_case(s)) {
            return Ok(self.min + i as u32);
        }
        let v: u32 = s.parse().map_err(|_| {
            if self.names.is_empty() {
                format!("{} `{s}` is not a number", self.name)
            } else {
                format!(
                    "{} `{s}` is neither a number nor a name ({})",
                    self.name,
                    self.names[..self.names.len().min(12)].join(", ")
                )
            }
        })?;
        if v < self.min || v > self.max {
            return Err(format!(
                "{} `{v}` is out of range {}–{}{}",
                self.name,
                self.min,
                self.max,
                if self.name == "day-of-week" {
                    " (0 and 7 are Sunday)"
                } else {
                    ""
                }
            ));
        }
        Ok(v)
    }

    /// Parses a field into a bit set.
    fn parse(&self, text: &str) -> Result<u64, String> {
        let mut bits = 0u64;
        for item in text.split(',') {
            let (range, step) = match item.split_once('/') {
                Some((r, s)) => {
                    let step: u32 = s.parse().ok().filter(|n| *n > 0).ok_or_else(|| {
                        format!("{} step `{s}` must be a number above 0", self.name)
                    })?;
                    (r, Some(step))
                }
                None => (item, None),
            };
            let (lo, hi) = if range == "*" {
                (self.min, self.max)
            } else if let Some((a, b)) = range.split_once('-') {
                let (a, b) = (self.value(a)?, self.value(b)?);
                if a > b {
                    return Err(format!(
                        "{} range `{range}` runs backwards; write it low-high",
                        self.name
                    ));
                }
                (a, b)
            } else if range.is_empty() {
                return Err(format!("{} has an empty item in `{text}`", self.name));
            } else {
                let a = self.value(range)?;
                (a, if step.is_some() { self.max } else { a })
            };
            for v in (lo..=hi).step_by(step.unwrap_or(1) as usize) {
                bits |= 1 << v;
            }
        }
        if self.name == "day-of-week" && bits & (1 << 7) != 0 {
            bits = (bits & !(1 << 7)) | 1;
        }
        Ok(bits)
    }
}

impl FromStr for CronSchedule {
    type Err = CronError;
    fn from_str(s: &str) -> Result<Self, CronError> {
        let text = s.trim();
        let err = |reason: String| CronError {
            expr: text.to_string(),
            reason,
        };
        let expanded = if let Some(name) = text.strip_prefix('@') {
            match name.to_ascii_lowercase().as_str() {
                "yearly" | "annually" => "0 0 1 1 *",
                "monthly" => "0 0 1 * *",
                "weekly" => "0 0 * * 0",
                "daily" | "midnight" => "0 0 * * *",
                "hourly" => "0 * * * *",
                _ => return Err(err(format!("unknown shorthand `{text}`; {FIVE_FIELDS}"))),
            }
        } else {
            text
        };
        let fields: Vec<&str> = expanded.split_whitespace().collect();
        let (seconds, rest) = match fields.len() {
            5 => (1, &fields[..]),
            // Leading seconds: the form tests use to compress schedules.
            6 => (SECOND.parse(fields[0]).map_err(err)?, &fields[1..]),
            n => return Err(err(format!("it has {n} fields; {FIVE_FIELDS}"))),
        };
        let spec = Spec {
            seconds,
            minutes: MINUTE.parse(rest[0]).map_err(err)?,
            hours: HOUR.parse(rest[1]).map_err(err)?,
            days_of_month: DAY_OF_MONTH.parse(rest[2]).map_err(err)?,
            months: MONTH.parse(rest[3]).map_err(err)?,
            days_of_week: DAY_OF_WEEK.parse(rest[4]).map_err(err)?,
            days_and: rest[2].starts_with('*') || rest[4].starts_with('*'),
        };
        Ok(CronSchedule {
            text: text.to_string(),
            spec,
        })
    }
}

impl<'de> Deserialize<'de> for CronSchedule {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d)?.parse().map_err(de::Error::custom)
    }
}

impl serde::Serialize for CronSchedule {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.text)
    }
}

impl fmt::Debug for CronSchedule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "CronSchedule({:?})", self.text)
    }
}

impl fmt::Display for CronSchedule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

fn has(bits: u64, v: u32) -> bool {
    bits & (1 << v) != 0
}

/// The smallest member of `bits` at or above `from`.
fn next_bit(bits: u64, from: u32) -> Option<u32> {
    let rest = bits.checked_shr(from)?.checked_shl(from)?;
    (rest != 0).then(|| rest.trailing_zeros())
}

/// The largest member of `bits` at or below `upto`.
fn prev_bit(bits: u64, upto: u32) -> Option<u32> {
    let rest = if upto >= 63 {
        bits
    } else {
        bits & ((1u64 << (upto + 1)) - 1)
    };
    (rest != 0).then(|| 63 - rest.leading_zeros())
}

impl Spec {
    fn day_matches(&self, d: NaiveDate) -> bool {
        if !has(self.months, d.month()) {
            return false;
        }
        let dom = has(self.days_of_month, d.day());
        let dow = has(self.days_of_week, d.weekday().num_days_from_sunday());
        if self.days_and {
            dom && dow
        } else {
            dom || dow
        }
    }

    fn time_sets(&self) -> [u64; 3] {
        [self.hours, self.minutes, self.seconds]
    }

    /// The first matching local time at or after `from`, within `horizon` days.
    fn next_local(&self, from: NaiveDateTime, horizon: i64) -> Option<NaiveDateTime> {
        let mut date = from.date();
        let mut at = [from.hour(), from.minute(), from.second()];
        for _ in 0..=horizon {
            if self.day_matches(date) {
                if let Some([h, m, s]) = odometer(self.time_sets(), at, Dir::Up) {
                    return date.and_hms_opt(h, m, s);
                }
            }
            date = date.succ_opt()?;
            at = [0, 0, 0];
        }
        None
    }

    /// The last matching local time at or before `from`, within `horizon` days.
    fn prev_local(&self, from: NaiveDateTime, horizon: i64) -> Option<NaiveDateTime> {
        let mut date = from.date();
        let mut at = [from.hour(), from.minute(), from.second()];
        for _ in 0..=horizon {
            if self.day_matches(date) {
                if let Some([h, m, s]) = odometer(self.time_sets(), at, Dir::Down) {
                    return date.and_hms_opt(h, m, s);
                }
            }
            date = date.pred_opt()?;
            at = [23, 59, 59];
        }
        None
    }
}

/// Finds a member of a bit set from a bound (`next_bit` or `prev_bit`).
type BitSearch = fn(u64, u32) -> Option<u32>;

#[derive(Clone, Copy)]
enum Dir {
    Up,
    Down,
}

/// The nearest `[h, m, s]` at or after (`Up`) or at or before (`Down`)
/// `at`, in lexicographic order, with each part in its set.
fn odometer(sets: [u64; 3], at: [u32; 3], dir: Dir) -> Option<[u32; 3]> {
    let (step, edge): (BitSearch, u32) = match dir {
        Dir::Up => (next_bit, 0),
        Dir::Down => (prev_bit, 63),
    };
    let beyond = |v: u32| match dir {
        Dir::Up => v.checked_add(1),
        Dir::Down => v.checked_sub(1),
    };
    // Fill positions after `i` with their first (or last) member.
    let fill = |mut out: [u32; 3], i: usize| {
        for j in i + 1..3 {
            out[j] = step(sets[j], edge)?;
        }
        Some(out)
    };
    let mut out = at;
    // Try to keep the prefix `at[..i]` and move position `i`, deepest first.
    for i in (0..3).rev() {
        let from = if i == 2 { Some(at[i]) } else { beyond(at[i]) };
        if let Some(v) = from.and_then(|f| step(sets[i], f)) {
            if at[..i].iter().zip(&sets[..i]).all(|(a, set)| has(*set, *a)) {
                out[i] = v;
                return fill(out, i);
            }
        }
    }
    None
}

impl CronSchedule {
    /// The schedule as written.
    pub fn text(&self) -> &str {
        &self.text
    }

    /// The first run strictly after `t`, read in `zone`; `None` if none
    /// within eight years (the schedule never runs).
    pub fn next_after(&self, t: DateTime<Utc>, zone: &Zone) -> Option<DateTime<Utc>> {
        let mut from = zone.local(t).with_nanosecond(0)?;
        loop {
            let local = self.spec.next_local(from, AHEAD_HORIZON_DAYS)?;
            let at = zone.resolve(local)?;
            if at > t {
                return Some(at);
            }
            // Only in a repeated hour: `local`'s first pass is already behind `t`.
            from = local + Duration::seconds(1);
        }
    }

    /// The last run at or before `t`, read in `zone`; `None` if none within 400 days.
    pub fn latest_at_or_before(&self, t: DateTime<Utc>, zone: &Zone) -> Option<DateTime<Utc>> {
        // In the second pass of a repeated hour, later local times map to
        // earlier instants (their first pass): start that much further on.
        let margin = (zone.offset_secs(t - Duration::days(1)) - zone.offset_secs(t)).max(0);
        let mut from = (zone.local(t) + Duration::seconds(margin.into())).with_nanosecond(0)?;
        let floor = t - Duration::days(BACK_HORIZON_DAYS);
        loop {
            let local = self.spec.prev_local(from, BACK_HORIZON_DAYS + 1)?;
            let at = zone.resolve(local)?;
            if at <= t {
                return (at >= floor).then_some(at);
            }
            from = local - Duration::seconds(1);
        }
    }

    /// Refuses a schedule that goes more than [`MAX_GAP_DAYS`] without a
    /// run (one that never runs, like `0 0 30 2 *`, or only on 29 February).
    pub fn check_frequency(&self) -> Result<(), String> {
        // 28 years repeat the Gregorian weekdays and leap years (within 1901–2099).
        let start = NaiveDate::from_ymd_opt(2001, 1, 1).expect("valid date");
        let cycle = 10_227;
        let days: Vec<i64> = (0..cycle)
            .filter(|d| self.spec.day_matches(start + Duration::days(*d)))
            .collect();
        let (Some(first), Some(last)) = (days.first(), days.last()) else {
            return Err(format!(
                "`{}` never runs: no date has the day of month and the month it names",
                self.text
            ));
        };
        let gap = days
            .windows(2)
            .map(|w| w[1] - w[0])
            .chain([first + cycle - last])
            .max()
            .unwrap_or(0);
        if gap > MAX_GAP_DAYS {
            return Err(format!(
                "`{}` runs too rarely: up to {gap} days pass between runs; a schedule must run at least once every {MAX_GAP_DAYS} days",
                self.text
            ));
        }
        Ok(())
    }
}

/// The time zone schedules are read in: `daemon.timezone`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Zone {
    /// A fixed offset from UTC (UTC itself is `+00:00`).
    Fixed(FixedOffset),
    /// An IANA zone, with its daylight-saving rules.
    Iana(chrono_tz::Tz),
}

impl Default for Zone {
    fn default() -> Self {
        Zone::UTC
    }
}

impl Zone {
    /// UTC.
    pub const UTC: Zone = Zone::Fixed(match FixedOffset::east_opt(0) {
        Some(z) => z,
        None => panic!("zero offset"),
    });

    /// Parses `UTC`, `Z`, a fixed offset `±HH:MM` or an IANA name (`Europe/Berlin`).
    pub fn parse(s: &str) -> Result<Zone, String> {
        let t = s.trim();
        if let Ok(o) = parse_offset(t) {
            return Ok(Zone::Fixed(o));
        }
        t.parse::<chrono_tz::Tz>().map(Zone::Iana).map_err(|_| {
            format!("`{s}` is not a time zone: use `UTC`, a fixed offset like `+01:00`, or an IANA name like `Europe/Berlin`")
        })
    }

    /// Wall-clock time at `t`.
    fn local(&self, t: DateTime<Utc>) -> NaiveDateTime {
        match self {
            Zone::Fixed(o) => t.with_timezone(o).naive_local(),
            Zone::Iana(z) => t.with_timezone(z).naive_local(),
        }
    }

    /// Seconds east of UTC at `t`.
    fn offset_secs(&self, t: DateTime<Utc>) -> i32 {
        match self {
            Zone::Fixed(o) => o.local_minus_utc(),
            Zone::Iana(z) => z
                .offset_from_utc_datetime(&t.naive_utc())
                .fix()
                .local_minus_utc(),
        }
    }

    /// The instant a slot at wall-clock `local` runs: its first pass in a
    /// repeated hour, the end of the gap in a skipped one.
    fn resolve(&self, local: NaiveDateTime) -> Option<DateTime<Utc>> {
        let z = match self {
            Zone::Fixed(o) => return o.from_local_datetime(&local).single().map(|t| t.to_utc()),
            Zone::Iana(z) => z,
        };
        match z.from_local_datetime(&local) {
            LocalResult::Single(t) => Some(t.to_utc()),
            LocalResult::Ambiguous(a, b) => Some(a.min(b).to_utc()),
            LocalResult::None => {
                // The first instant whose wall clock reaches `local`: within a
                // day of it either way, wall clocks only move forward (one
                // transition, the gap itself).
                let guess = local.and_utc().timestamp();
                let (mut lo, mut hi) = (guess - 86_400, guess + 86_400);
                while hi - lo > 1 {
                    let mid = lo + (hi - lo) / 2;
                    if self.local(DateTime::from_timestamp(mid, 0)?) >= local {
                        hi = mid;
                    } else {
                        lo = mid;
                    }
                }
                DateTime::from_timestamp(hi, 0)
            }
        }
    }
}

impl fmt::Display for Zone {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Zone::Fixed(o) if o.local_minus_utc() == 0 => f.write_str("UTC"),
            Zone::Fixed(o) => write!(f, "{o}"),
            Zone::Iana(z) => f.write_str(z.name()),
        }
    }
}

/// Parses `UTC`, `Z` or `±HH:MM` into a fixed offset.
pub fn parse_offset(s: &str) -> Result<FixedOffset, String> {
    let t = s.trim();
    if t.eq_ignore_ascii_case("utc") || t == "Z" {
        return Ok(FixedOffset::east_opt(0).expect("zero offset"));
    }
    let bad = || format!("`{s}` is not a fixed offset: use `UTC` or an offset like `+01:00`");
    let (sign, rest) = match t.as_bytes().first() {
        Some(b'+') => (1, &t[1..]),
        Some(b'-') => (-1, &t[1..]),
        _ => return Err(bad()),
    };
    let (h, m) = rest.split_once(':').ok_or_else(bad)?;
    let h: i32 = h.parse().map_err(|_| bad())?;
    let m: i32 = m.parse().map_err(|_| bad())?;
    if h > 14 || m > 59 {
        return Err(bad());
    }
    FixedOffset::east_opt(sign * (h * 3600 + m * 60)).ok_or_else(bad)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rstest::rstest;

    fn at(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().to_utc()
    }

    fn cron(s: &str) -> CronSchedule {
        s.parse().unwrap_or_else(|e| panic!("{e}"))
    }

    /// The next `n` runs after `from`, as RFC 3339 strings (UTC).
    fn runs(s: &str, zone: &Zone, from: &str, n: usize) -> Vec<String> {
        let c = cron(s);
        let mut t = at(from);
        (0..n)
            .map(|_| {
                t = c.next_after(t, zone).expect("a next run");
                t.to_rfc3339()
            })
            .collect()
    }

    fn berlin() -> Zone {
        Zone::parse("Europe/Berlin").unwrap()
    }

    // 2026-12-02 is a Wednesday.
    #[rstest]
    #[case::sunday_zero("0 4 * * 0", "2026-12-06T04:00:00+00:00")]
    #[case::sunday_seven("0 4 * * 7", "2026-12-06T04:00:00+00:00")]
    #[case::sunday_name("0 4 * * SUN", "2026-12-06T04:00:00+00:00")]
    #[case::sunday_lower("0 4 * * sun", "2026-12-06T04:00:00+00:00")]
    #[case::month_name("0 0 1 jan *", "2027-01-01T00:00:00+00:00")]
    #[case::month_name_upper("0 0 1 FEB-MAR *", "2027-02-01T00:00:00+00:00")]
    #[case::friday_to_sunday("0 4 * * 5-7", "2026-12-04T04:00:00+00:00")]
    #[case::hourly("@hourly", "2026-12-02T13:00:00+00:00")]
    #[case::daily("@daily", "2026-12-03T00:00:00+00:00")]
    #[case::midnight("@midnight", "2026-12-03T00:00:00+00:00")]
    #[case::weekly("@weekly", "2026-12-06T00:00:00+00:00")]
    #[case::monthly("@monthly", "2027-01-01T00:00:00+00:00")]
    #[case::yearly("@yearly", "2027-01-01T00:00:00+00:00")]
    #[case::annually("@ANNUALLY", "2027-01-01T00:00:00+00:00")]
    #[case::seconds("*/10 * * * * *", "2026-12-02T12:34:50+00:00")]
    fn next_run_in_utc(#[case] expr: &str, #[case] next: &str) {
        assert_eq!(
            runs(expr, &Zone::UTC, "2026-12-02T12:34:45.5Z", 1),
            [next],
            "{expr}"
        );
    }

    #[test]
    fn one_to_five_is_monday_to_friday() {
        let days: Vec<String> = runs("0 9 * * 1-5", &Zone::UTC, "2026-12-05T00:00:00Z", 6)
            .iter()
            .map(|r| at(r).format("%a %d").to_string())
            .collect();
        assert_eq!(
            days,
            ["Mon 07", "Tue 08", "Wed 09", "Thu 10", "Fri 11", "Mon 14"]
        );
        assert_eq!(cron("0 9 * * MON-FRI").spec, cron("0 9 * * 1-5").spec);
        assert_eq!(
            cron("0 9 * * mon,tue,wed,thu,fri").spec,
            cron("0 9 * * 1-5").spec
        );
    }

    #[rstest]
    #[case::every_fifteen("*/15", &[0, 15, 30, 45])]
    #[case::range_step("1-5/2", &[1, 3, 5])]
    #[case::start_step("5/20", &[5, 25, 45])]
    #[case::list("0,30,59", &[0, 30, 59])]
    #[case::mixed("1-3,10-40/15,58", &[1, 2, 3, 10, 25, 40, 58])]
    fn minute_fields(#[case] field: &str, #[case] minutes: &[u32]) {
        let c = cron(&format!("{field} * * * *"));
        let got: Vec<u32> = (0..60).filter(|m| has(c.spec.minutes, *m)).collect();
        assert_eq!(got, minutes, "{field}");
    }

    #[test]
    fn restricted_day_fields_are_ored_and_a_star_ands_them() {
        let days = |expr: &str| -> Vec<u32> {
            runs(expr, &Zone::UTC, "2026-11-30T12:00:00Z", 6)
                .iter()
                .map(|r| at(r).day())
                .collect()
        };
        // December 2026: Mondays are the 7th, 14th, 21st, 28th.
        assert_eq!(days("0 0 1,15 * MON"), [1, 7, 14, 15, 21, 28]);
        // `*/2` starts with `*`: Vixie ANDs, so odd days that are Mondays.
        let odd_mondays = runs("0 0 */2 * MON", &Zone::UTC, "2026-11-30T12:00:00Z", 3);
        assert_eq!(
            odd_mondays,
            [
                "2026-12-07T00:00:00+00:00",
                "2026-12-21T00:00:00+00:00",
                "2027-01-11T00:00:00+00:00"
            ]
        );
        // A star in day-of-month leaves only the weekday; in day-of-week only the date.
        assert_eq!(days("0 0 * * MON")[..4], [7, 14, 21, 28]);
        assert_eq!(days("0 0 13 * *")[..2], [13, 13]);
    }

    #[test]
    fn next_is_strictly_after_and_latest_is_at_or_before() {
        let c = cron("0 */6 * * *");
        let z = Zone::UTC;
        let slot = at("2026-12-02T06:00:00Z");
        assert_eq!(c.next_after(slot, &z), Some(at("2026-12-02T12:00:00Z")));
        assert_eq!(
            c.next_after(slot - Duration::nanoseconds(1), &z),
            Some(slot)
        );
        assert_eq!(c.latest_at_or_before(slot, &z), Some(slot));
        assert_eq!(
            c.latest_at_or_before(slot - Duration::seconds(1), &z),
            Some(at("2026-12-02T00:00:00Z"))
        );
        assert_eq!(
            c.latest_at_or_before(at("2027-01-01T05:59:59.9Z"), &z),
            Some(at("2027-01-01T00:00:00Z"))
        );
        // Backwards across a month and a year boundary.
        assert_eq!(
            cron("30 23 31 * *").latest_at_or_before(at("2027-02-15T00:00:00Z"), &z),
            Some(at("2027-01-31T23:30:00Z"))
        );
        assert_eq!(
            cron("*/10 * * * * *").latest_at_or_before(at("2027-01-01T00:00:05Z"), &z),
            Some(at("2027-01-01T00:00:00Z"))
        );
    }

    #[test]
    fn leap_day_schedule() {
        let c = cron("0 0 29 2 *");
        let z = Zone::UTC;
        assert_eq!(
            c.next_after(at("2026-12-02T00:00:00Z"), &z),
            Some(at("2028-02-29T00:00:00Z"))
        );
        // 2100 is not a leap year: eight years between runs.
        assert_eq!(
            c.next_after(at("2096-03-01T00:00:00Z"), &z),
            Some(at("2104-02-29T00:00:00Z"))
        );
        assert_eq!(
            c.latest_at_or_before(at("2028-03-01T00:00:00Z"), &z),
            Some(at("2028-02-29T00:00:00Z"))
        );
        // The last run (2024-02-29) is beyond the 400 days looked back.
        assert_eq!(c.latest_at_or_before(at("2027-06-01T00:00:00Z"), &z), None);
        let e = c.check_frequency().unwrap_err();
        assert!(e.contains("runs too rarely: up to 1461 days"), "{e}");
    }

    #[rstest]
    #[case::never("0 0 30 2 *", "never runs")]
    #[case::never_april("0 0 31 4,6 *", "never runs")]
    #[case::leap_only("0 0 29 feb *", "runs too rarely")]
    fn schedules_that_run_too_rarely_are_refused(#[case] expr: &str, #[case] says: &str) {
        let e = cron(expr).check_frequency().unwrap_err();
        assert!(e.contains(says), "{expr}: {e}");
        assert!(
            cron(expr)
                .next_after(at("2026-12-02T00:00:00Z"), &Zone::UTC)
                .is_none()
                == (says == "never runs")
        );
    }

    #[rstest]
    #[case("@yearly")]
    #[case("0 0 31 * *")]
    #[case("0 0 29 2 MON")]
    #[case("0 4 * * 0")]
    fn schedules_that_run_at_least_yearly_pass(#[case] expr: &str) {
        cron(expr).check_frequency().unwrap();
    }

    #[rstest]
    #[case::four_fields(
        "0 4 * *",
        "it has 4 fields; write 5 fields, minute hour day-of-month month day-of-week"
    )]
    #[case::seven_fields("0 0 0 1 1 * 2099", "it has 7 fields")]
    #[case::minute_range("61 * * * *", "minute `61` is out of range 0–59")]
    #[case::weekday_range(
        "0 4 * * 8",
        "day-of-week `8` is out of range 0–7 (0 and 7 are Sunday)"
    )]
    #[case::day_zero("0 4 0 * *", "day-of-month `0` is out of range 1–31")]
    #[case::backwards("0 4 * * FRI-MON", "day-of-week range `FRI-MON` runs backwards")]
    #[case::zero_step("*/0 * * * *", "minute step `0` must be a number above 0")]
    #[case::bad_name(
        "0 4 * * funday",
        "day-of-week `funday` is neither a number nor a name"
    )]
    #[case::bad_month("0 4 1 janvier *", "month `janvier` is neither a number nor a name")]
    #[case::empty_item("0,,5 * * * *", "minute has an empty item")]
    #[case::reboot("@reboot", "unknown shorthand `@reboot`")]
    fn bad_schedules_say_why(#[case] expr: &str, #[case] says: &str) {
        let e = expr.parse::<CronSchedule>().unwrap_err();
        let text = e.to_string();
        assert!(
            text.starts_with(&format!("`{expr}` is not a cron schedule: ")),
            "{text}"
        );
        assert!(text.contains(says), "{expr}: {text}");
    }

    #[test]
    fn text_is_kept_as_written() {
        let c = cron("  0 4 * * SUN ");
        assert_eq!(c.text(), "0 4 * * SUN");
        assert_eq!(c.to_string(), "0 4 * * SUN");
        assert_eq!(serde_json::to_string(&c).unwrap(), "\"0 4 * * SUN\"");
    }

    #[test]
    fn zones_parse_and_display() {
        assert_eq!(Zone::parse("UTC").unwrap(), Zone::UTC);
        assert_eq!(Zone::parse("Z").unwrap().to_string(), "UTC");
        assert_eq!(Zone::parse("+01:30").unwrap().to_string(), "+01:30");
        assert_eq!(berlin().to_string(), "Europe/Berlin");
        let e = Zone::parse("Mars/Olympus").unwrap_err();
        assert!(e.contains("an IANA name like `Europe/Berlin`"), "{e}");
    }

    #[test]
    fn fixed_offset_reads_wall_clock_time() {
        let z = Zone::parse("+02:00").unwrap();
        assert_eq!(
            runs("0 4 * * *", &z, "2026-12-02T12:00:00Z", 1),
            ["2026-12-03T02:00:00+00:00"]
        );
        assert_eq!(
            cron("0 4 * * *").latest_at_or_before(at("2026-12-03T01:59:59Z"), &z),
            Some(at("2026-12-02T02:00:00Z"))
        );
    }

    #[test]
    fn iana_zone_follows_daylight_saving() {
        // Winter CET (+01:00), summer CEST (+02:00).
        assert_eq!(
            runs("0 4 * * *", &berlin(), "2026-07-01T12:00:00Z", 1),
            ["2026-07-02T02:00:00+00:00"]
        );
        assert_eq!(
            runs("0 4 * * *", &berlin(), "2026-12-01T12:00:00Z", 1),
            ["2026-12-02T03:00:00+00:00"]
        );
    }

    #[test]
    fn a_slot_in_the_skipped_hour_runs_once_at_the_end_of_the_gap() {
        // 2026-03-29: 02:00 CET jumps to 03:00 CEST (01:00 UTC).
        assert_eq!(
            runs("30 2 * * *", &berlin(), "2026-03-28T12:00:00Z", 2),
            ["2026-03-29T01:00:00+00:00", "2026-03-30T00:30:00+00:00"]
        );
        // 02:00, 02:15, 02:30, 02:45 and 03:00 all land on 03:00 CEST: one run.
        assert_eq!(
            runs("*/15 * * * *", &berlin(), "2026-03-29T00:40:00Z", 3),
            [
                "2026-03-29T00:45:00+00:00",
                "2026-03-29T01:00:00+00:00",
                "2026-03-29T01:15:00+00:00"
            ]
        );
        assert_eq!(
            cron("30 2 * * *").latest_at_or_before(at("2026-03-29T01:10:00Z"), &berlin()),
            Some(at("2026-03-29T01:00:00Z"))
        );
    }

    #[test]
    fn a_slot_in_the_repeated_hour_runs_once_in_its_first_pass() {
        // 2026-10-25: 03:00 CEST falls back to 02:00 CET (at 01:00 UTC).
        assert_eq!(
            runs("30 2 * * *", &berlin(), "2026-10-24T12:00:00Z", 2),
            ["2026-10-25T00:30:00+00:00", "2026-10-26T01:30:00+00:00"]
        );
        // 02:00–02:45 run in the first pass (00:00–00:45 UTC), not again in the second.
        assert_eq!(
            runs("*/15 * * * *", &berlin(), "2026-10-24T23:50:00Z", 6),
            [
                "2026-10-25T00:00:00+00:00",
                "2026-10-25T00:15:00+00:00",
                "2026-10-25T00:30:00+00:00",
                "2026-10-25T00:45:00+00:00",
                "2026-10-25T02:00:00+00:00",
                "2026-10-25T02:15:00+00:00"
            ]
        );
        // In the second pass (02:50 CET = 01:50 UTC) the last run was 02:45 CEST.
        assert_eq!(
            cron("*/15 * * * *").latest_at_or_before(at("2026-10-25T01:50:00Z"), &berlin()),
            Some(at("2026-10-25T00:45:00Z"))
        );
        // From the second pass, the next run is 03:00 CET.
        assert_eq!(
            cron("*/15 * * * *").next_after(at("2026-10-25T01:20:00Z"), &berlin()),
            Some(at("2026-10-25T02:00:00Z"))
        );
    }
}
