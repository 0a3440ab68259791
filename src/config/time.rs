//! Times in configuration and on the command line: RFC 3339, a UTC date or Unix seconds,
//! read through the `time` calendar library, so an impossible date (`2026-02-31`) is an error
//! that names the key rather than a day that silently rolls over.

use ::time::format_description::well_known::Rfc3339;
use ::time::macros::format_description;
use ::time::{Date, Month, OffsetDateTime, PrimitiveDateTime, Time};
use yaml_rust2::Yaml;

use super::node::kind_of;
use super::{Diagnostics, Map};

/// Reads a timestamp option: RFC 3339 (`2026-01-01T00:00:00Z`), a date or Unix seconds.
pub fn time_at(m: &Map<'_>, key: &'static str, d: &mut Diagnostics) -> Option<i64> {
    let y = m.raw(key)?;
    let r = match y {
        Yaml::Integer(i) => Ok(*i),
        Yaml::String(s) => parse_time(s),
        other => Err(format!(
            "expected an RFC 3339 time or Unix seconds, found {}",
            kind_of(other)
        )),
    };
    match r {
        Ok(v) => Some(v),
        Err(e) => {
            d.error(m.key_path(key), e);
            None
        }
    }
}

/// Parses RFC 3339 (`2026-01-01T00:00:00Z`, `...+02:00`, fractional seconds ignored), a date
/// (`2026-01-01`, midnight UTC) or Unix seconds, to Unix seconds.
pub fn parse_time(s: &str) -> Result<i64, String> {
    let bad = || {
        format!("invalid time {s:?}: use RFC 3339 such as 2026-01-01T00:00:00Z, or Unix seconds")
    };
    let t = s.trim();
    if let Ok(v) = t.parse::<i64>() {
        return Ok(v);
    }
    let b = t.as_bytes();
    if b.len() < 10 || b[4] != b'-' || b[7] != b'-' || !t.is_char_boundary(10) {
        return Err(bad());
    }
    let date = calendar_date(&t[..10], s).ok_or_else(bad)??;
    if b.len() == 10 {
        let midnight = PrimitiveDateTime::new(date, Time::MIDNIGHT).assume_utc();
        return Ok(midnight.unix_timestamp());
    }
    if !matches!(b[10], b'T' | b't' | b' ') {
        return Err(bad());
    }
    // RFC 3339 allows `t`, a space and `z`; the parser wants `T` and `Z`.
    let normal = format!("{}T{}", &t[..10], t[11..].replace('z', "Z"));
    OffsetDateTime::parse(&normal, &Rfc3339)
        .map(OffsetDateTime::unix_timestamp)
        .map_err(|_| bad())
}

/// `YYYY-MM-DD` as a date: `None` when it is not that shape, an error naming the month's
/// length when the day does not exist.
fn calendar_date(ymd: &str, original: &str) -> Option<Result<Date, String>> {
    let shape = format_description!("[year]-[month]-[day]");
    if let Ok(date) = Date::parse(ymd, &shape) {
        return Some(Ok(date));
    }
    let year: i32 = ymd.get(0..4)?.parse().ok()?;
    let month: u8 = ymd.get(5..7)?.parse().ok()?;
    let day: u8 = ymd.get(8..10)?.parse().ok()?;
    let month = Month::try_from(month).ok()?;
    let days = ::time::util::days_in_month(month, year);
    (day > days).then(|| {
        Err(format!(
            "invalid date {original:?}: {month} {year} has {days} days, not {day}"
        ))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forms_that_parse() {
        assert_eq!(parse_time("86400").unwrap(), 86_400);
        assert_eq!(parse_time("1970-01-02").unwrap(), 86_400);
        assert_eq!(parse_time("1970-01-02T00:00:00Z").unwrap(), 86_400);
        assert_eq!(parse_time("1970-01-02t00:00:00z").unwrap(), 86_400);
        assert_eq!(parse_time("1970-01-02 01:00:00+01:00").unwrap(), 86_400);
        assert_eq!(parse_time("1970-01-02T00:00:00.999Z").unwrap(), 86_400);
        // 2024 is a leap year: 2024-02-29 is 19_782 days after the epoch.
        assert_eq!(parse_time("2024-02-29").unwrap(), 19_782 * 86_400);
    }

    #[test]
    fn rfc3339_times() {
        assert_eq!(parse_time("1970-01-01T00:00:00Z"), Ok(0));
        assert_eq!(parse_time("2026-11-23T00:00:00Z"), Ok(1_795_392_000));
        assert_eq!(parse_time("2026-11-23T02:00:00+02:00"), Ok(1_795_392_000));
        assert_eq!(parse_time("2026-11-23"), Ok(1_795_392_000));
        assert_eq!(parse_time("2026-11-23T00:00:00.123Z"), Ok(1_795_392_000));
        assert_eq!(parse_time("1795392000"), Ok(1_795_392_000));
        assert!(parse_time("2026-13-01").is_err());
        assert!(parse_time("yesterday").is_err());
    }

    #[test]
    fn impossible_dates_are_errors_naming_the_month() {
        assert_eq!(
            parse_time("2026-02-31").unwrap_err(),
            "invalid date \"2026-02-31\": February 2026 has 28 days, not 31"
        );
        assert!(parse_time("2026-04-31T00:00:00Z")
            .unwrap_err()
            .contains("April 2026 has 30 days"));
        assert!(parse_time("2025-02-29")
            .unwrap_err()
            .contains("February 2025 has 28 days"));
    }

    #[test]
    fn malformed_times_get_the_format_hint() {
        for bad in [
            "yesterday",
            "2026-13-01",
            "2026-01-01T25:00:00Z",
            "2026-01-01T00:00:00",
            "2026-01-01Tx",
        ] {
            assert!(
                parse_time(bad).unwrap_err().contains("use RFC 3339"),
                "{bad}"
            );
        }
    }
}
