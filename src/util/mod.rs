//! Small helpers shared by several modules.

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

/// Parses `--since`: `7d`, `24h`, `2w` back from `now`, or a UTC date `YYYY-MM-DD`.
pub fn parse_since(text: &str, now: time::OffsetDateTime) -> Result<time::OffsetDateTime, String> {
    let text = text.trim();
    let bad = || format!("{text:?} is not a window: use e.g. 7d, 24h, 2w or 2025-03-01");
    if let Some(unit) = text.chars().last().filter(|c| c.is_ascii_alphabetic()) {
        let n: i64 = text[..text.len() - 1].parse().map_err(|_| bad())?;
        if !(0..=36_500).contains(&n) {
            return Err(bad());
        }
        let span = match unit {
            'h' => time::Duration::hours(n),
            'd' => time::Duration::days(n),
            'w' => time::Duration::weeks(n),
            _ => return Err(bad()),
        };
        return Ok(now - span);
    }
    let format = time::macros::format_description!("[year]-[month]-[day]");
    time::Date::parse(text, &format)
        .map(|d| d.midnight().assume_utc())
        .map_err(|_| bad())
}
