//! Small helpers shared by several modules.

pub mod build;
pub mod dns;
pub mod hash;
pub mod http;

use std::time::{SystemTime, UNIX_EPOCH};

/// Seconds since the Unix epoch.
pub fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

/// Formats Unix seconds as RFC 3339 UTC, e.g. `2026-11-23T15:00:00Z`.
pub fn format_unix(ts: i64) -> String {
    time::OffsetDateTime::from_unix_timestamp(ts)
        .ok()
        .and_then(|t| {
            t.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_else(|| ts.to_string())
}

/// The units every duration in this program accepts (server file, tenant `max_age`,
/// `reports --since`, the admin API's `?since=`), with their length in milliseconds.
const DURATION_UNITS: [(&str, u64); 6] = [
    ("ms", 1),
    ("s", 1_000),
    ("m", 60_000),
    ("h", 3_600_000),
    ("d", 86_400_000),
    ("w", 604_800_000),
];

/// Parses a duration: a whole number with one unit of `ms`, `s`, `m`, `h`, `d`, `w`
/// (`500ms`, `10s`, `5m`, `1h`, `7d`, `2w`), or a bare number of seconds.
pub fn parse_duration(text: &str) -> Result<std::time::Duration, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (num, unit) = text.split_at(split);
    let n: u64 = num.parse().map_err(|_| {
        format!("{text:?} is not a duration (use e.g. \"10s\", \"500ms\", \"5m\", \"7d\")")
    })?;
    let unit = unit.trim();
    let Some((_, millis)) = DURATION_UNITS.iter().find(|(name, _)| *name == unit) else {
        if unit.is_empty() {
            return Ok(std::time::Duration::from_secs(n));
        }
        return Err(format!(
            "unknown duration unit {unit:?} (use ms, s, m, h, d or w)"
        ));
    };
    n.checked_mul(*millis)
        .map(std::time::Duration::from_millis)
        .ok_or_else(|| format!("{text:?} is too long a duration"))
}

/// Longest `--since` window: a century covers any report database.
const MAX_SINCE: std::time::Duration = std::time::Duration::from_secs(36_500 * 86_400);

/// Parses `--since`: a duration back from `now` with a unit ([`parse_duration`]: `7d`, `24h`,
/// `2w`, `90m`), or a UTC date `YYYY-MM-DD`. A bare number is refused: `7` could mean days.
pub fn parse_since(text: &str, now: time::OffsetDateTime) -> Result<time::OffsetDateTime, String> {
    let text = text.trim();
    let bad = || format!("{text:?} is not a window: use e.g. 7d, 24h, 2w or 2025-03-01");
    let format = time::macros::format_description!("[year]-[month]-[day]");
    if let Ok(date) = time::Date::parse(text, &format) {
        return Ok(date.midnight().assume_utc());
    }
    if text.is_empty() || text.bytes().all(|b| b.is_ascii_digit()) {
        return Err(bad());
    }
    let span = parse_duration(text).map_err(|_| bad())?;
    if span > MAX_SINCE {
        return Err(bad());
    }
    let span = time::Duration::try_from(span).map_err(|_| bad())?;
    Ok(now - span)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn one_duration_grammar() {
        let cases = [
            ("500ms", Duration::from_millis(500)),
            ("10s", Duration::from_secs(10)),
            ("7", Duration::from_secs(7)),
            ("2m", Duration::from_secs(120)),
            ("1h", Duration::from_secs(3600)),
            ("1d", Duration::from_secs(86_400)),
            ("2w", Duration::from_secs(1_209_600)),
        ];
        for (text, expected) in cases {
            assert_eq!(parse_duration(text), Ok(expected), "{text}");
        }
        assert_eq!(
            parse_duration("7 days").unwrap_err(),
            "unknown duration unit \"days\" (use ms, s, m, h, d or w)"
        );
        assert!(parse_duration("soon").is_err());
        assert!(parse_duration("99999999999999999w").is_err());
    }

    #[test]
    fn since_takes_the_same_units_or_a_date() {
        let now = time::macros::datetime!(2026-03-10 12:00 UTC);
        let since = |t: &str| parse_since(t, now);
        assert_eq!(since("7d"), Ok(now - time::Duration::days(7)));
        assert_eq!(since("2w"), Ok(now - time::Duration::weeks(2)));
        assert_eq!(since("90m"), Ok(now - time::Duration::minutes(90)));
        assert_eq!(since("30s"), Ok(now - time::Duration::seconds(30)));
        assert_eq!(
            since("2026-03-01"),
            Ok(time::macros::datetime!(2026-03-01 0:00 UTC))
        );
        for bad in ["7", "", "yesterday", "-1d", "40000d"] {
            assert!(since(bad).is_err(), "{bad}");
        }
    }
}
