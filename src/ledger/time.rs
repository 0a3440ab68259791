//! Time arguments of the ledger commands: RFC 3339 or a UTC date, as Unix nanoseconds.

use time::format_description::well_known::Rfc3339;
use time::macros::format_description;
use time::{Date, OffsetDateTime, PrimitiveDateTime, Time};

/// A half-open time range `[from, to)`, Unix nanoseconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Range {
    pub from: i64,
    pub to: i64,
}

/// Parses `2026-11-01` (UTC midnight) or an RFC 3339 time into Unix nanoseconds.
pub fn parse_instant(s: &str) -> Result<i64, String> {
    let t = s.trim();
    if let Ok(dt) = OffsetDateTime::parse(t, &Rfc3339) {
        return i64::try_from(dt.unix_timestamp_nanos())
            .map_err(|_| format!("{t:?}: out of range"));
    }
    let date = Date::parse(t, format_description!("[year]-[month]-[day]")).map_err(|e| {
        format!("{t:?}: expected RFC 3339 (2026-11-01T00:00:00Z) or a date (2026-11-01): {e}")
    })?;
    let dt = PrimitiveDateTime::new(date, Time::MIDNIGHT).assume_utc();
    i64::try_from(dt.unix_timestamp_nanos()).map_err(|_| format!("{t:?}: out of range"))
}

/// Unix nanoseconds as RFC 3339 UTC with seconds (`2026-11-01T12:00:00Z`).
pub fn format_instant(ns: i64) -> String {
    let secs = ns.div_euclid(1_000_000_000);
    match OffsetDateTime::from_unix_timestamp(secs) {
        Ok(dt) => {
            let f = format_description!("[year]-[month]-[day]T[hour]:[minute]:[second]Z");
            dt.format(&f).unwrap_or_else(|_| secs.to_string())
        }
        Err(_) => secs.to_string(),
    }
}

/// The UTC date of an hour bucket (hours since the epoch).
pub fn format_day(hours: i64) -> String {
    let f = format_description!("[year]-[month]-[day]");
    OffsetDateTime::from_unix_timestamp(hours.div_euclid(24) * 86_400)
        .ok()
        .and_then(|d| d.format(&f).ok())
        .unwrap_or_else(|| hours.to_string())
}

/// The UTC hour of an hour bucket, `2026-11-01T13:00Z`.
pub fn format_hour(hours: i64) -> String {
    let f = format_description!("[year]-[month]-[day]T[hour]:00Z");
    OffsetDateTime::from_unix_timestamp(hours * 3600)
        .ok()
        .and_then(|d| d.format(&f).ok())
        .unwrap_or_else(|| hours.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_and_times() {
        assert_eq!(parse_instant("1970-01-02").unwrap(), 86_400_000_000_000);
        assert_eq!(parse_instant("1970-01-01T01:00:00+01:00").unwrap(), 0);
        assert!(parse_instant("2026-02-31").is_err());
        assert!(parse_instant("yesterday").unwrap_err().contains("RFC 3339"));
        assert_eq!(format_instant(86_400_000_000_000), "1970-01-02T00:00:00Z");
        assert_eq!(format_day(49), "1970-01-03");
        assert_eq!(format_hour(25), "1970-01-02T01:00Z");
    }
}
