//! The daily TLS-RPT chart, drawn on the server as SVG: no script, no external asset, and the
//! numbers stay in the page as a table beside it.

use std::collections::BTreeMap;

use maud::{Markup, html};
use time::{Date, OffsetDateTime};

use crate::tlsrpt::summary::ReportSpan;

/// Width of the drawing, in SVG units (it scales to the page width).
const WIDTH: f64 = 720.0;
/// Height of the drawing.
const HEIGHT: f64 = 200.0;
/// Room for the axis labels on the left.
const LEFT: f64 = 48.0;
/// Room for the day labels at the bottom.
const BOTTOM: f64 = 24.0;
/// Room above the tallest bar.
const TOP: f64 = 8.0;
/// Gap between two bars, as a fraction of a day's width.
const GAP: f64 = 0.2;

/// One day's sessions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Day {
    /// The UTC day.
    pub date: Date,
    /// Successful sessions reported for the day.
    pub successful: u64,
    /// Failed sessions reported for the day.
    pub failed: u64,
}

/// Every UTC day from `since` to `now` (both included), with the sessions of the reports
/// whose period starts on that day: reports are daily (RFC 8460 §4.1), so a report's
/// counts belong to the day it covers.
pub fn days(reports: &[ReportSpan], since: OffsetDateTime, now: OffsetDateTime) -> Vec<Day> {
    let mut by_day: BTreeMap<Date, Day> = BTreeMap::new();
    let mut date = since.date();
    while date <= now.date() {
        by_day.insert(
            date,
            Day {
                date,
                successful: 0,
                failed: 0,
            },
        );
        let Some(next) = date.next_day() else { break };
        date = next;
    }
    for r in reports {
        if let Some(day) = by_day.get_mut(&r.start.date()) {
            day.successful += r.successful;
            day.failed += r.failed;
        }
    }
    by_day.into_values().collect()
}

/// The top of the y axis: the largest day rounded up to 1, 2 or 5 times a power of ten, so
/// the grid lines fall on round numbers.
fn axis_max(days: &[Day]) -> u64 {
    let max = days
        .iter()
        .map(|d| d.successful + d.failed)
        .max()
        .unwrap_or(0);
    let mut step = 1u64;
    loop {
        for m in [1, 2, 5] {
            if step.saturating_mul(m) >= max {
                return step.saturating_mul(m).max(1);
            }
        }
        step = step.saturating_mul(10);
    }
}

/// A bar's top and height for `value` on an axis up to `max`.
fn bar(value: u64, base: f64, max: u64) -> (f64, f64) {
    let plot = HEIGHT - TOP - BOTTOM;
    let height = plot * value as f64 / max as f64;
    (base - height, height)
}

/// The chart: one stacked bar per day, successful sessions below failed ones. Titles on
/// each bar give the numbers on hover; the caption and table below give them to readers
/// and screen readers.
pub fn sessions_chart(days: &[Day]) -> Markup {
    let max = axis_max(days);
    let slot = (WIDTH - LEFT) / days.len().max(1) as f64;
    let base = HEIGHT - BOTTOM;
    let label_every = days.len().div_ceil(10).max(1);
    html! {
        svg class="chart" viewBox={"0 0 " (WIDTH) " " (HEIGHT)} role="img"
            aria-labelledby="chart-title" xmlns="http://www.w3.org/2000/svg" {
            title id="chart-title" { "Sessions per day: successful and failed" }
            (grid(max, base))
            @for (i, day) in days.iter().enumerate() {
                @let x = LEFT + slot * i as f64 + slot * GAP / 2.0;
                @let w = slot * (1.0 - GAP);
                @let (ok_y, ok_h) = bar(day.successful, base, max);
                @let (bad_y, bad_h) = bar(day.failed, ok_y, max);
                g data-day=(day.date) {
                    rect class="ok" data-kind="successful" x=(fmt(x)) y=(fmt(ok_y))
                        width=(fmt(w)) height=(fmt(ok_h)) {
                        title { (day.date) ": " (day.successful) " successful" }
                    }
                    rect class="bad" data-kind="failed" x=(fmt(x)) y=(fmt(bad_y))
                        width=(fmt(w)) height=(fmt(bad_h)) {
                        title { (day.date) ": " (day.failed) " failed" }
                    }
                    @if i % label_every == 0 {
                        text class="label" x=(fmt(x + w / 2.0)) y=(fmt(HEIGHT - 6.0))
                            text-anchor="middle" { (short_date(day.date)) }
                    }
                }
            }
        }
    }
}

/// Horizontal lines at 0, half and the top of the axis, labelled.
fn grid(max: u64, base: f64) -> Markup {
    let plot = HEIGHT - TOP - BOTTOM;
    html! {
        @for (value, y) in [(0, base), (max / 2, base - plot / 2.0), (max, TOP)] {
            line class="grid" x1=(fmt(LEFT)) x2=(fmt(WIDTH)) y1=(fmt(y)) y2=(fmt(y)) {}
            text class="label" x=(fmt(LEFT - 6.0)) y=(fmt(y + 4.0)) text-anchor="end" { (value) }
        }
    }
}

/// `03-14`: the year is in the table.
fn short_date(date: Date) -> String {
    format!("{:02}-{:02}", u8::from(date.month()), date.day())
}

/// Two decimals at most, so the markup stays small and stable.
fn fmt(v: f64) -> String {
    let s = format!("{v:.2}");
    s.trim_end_matches('0').trim_end_matches('.').to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::{date, datetime};

    fn span(start: OffsetDateTime, successful: u64, failed: u64) -> ReportSpan {
        ReportSpan {
            organization: "o".into(),
            start,
            end: start + time::Duration::days(1),
            conflict: false,
            signing_domain: None,
            submitter_mismatch: false,
            report_id: "r".into(),
            digest: String::new(),
            successful,
            failed,
        }
    }

    /// The numeric attribute `name` of the `<rect>` of `kind` on `day`.
    fn attr(svg: &str, day: &str, kind: &str, name: &str) -> f64 {
        let group = svg
            .split(&format!("data-day=\"{day}\""))
            .nth(1)
            .unwrap_or_else(|| panic!("no bar for {day}: {svg}"));
        let rect = group
            .split(&format!("data-kind=\"{kind}\""))
            .nth(1)
            .unwrap();
        let value = rect.split(&format!(" {name}=\"")).nth(1).unwrap();
        value[..value.find('"').unwrap()].parse().unwrap()
    }

    #[test]
    fn days_cover_the_window_and_sum_reports_by_their_start_day() {
        let since = datetime!(2025-03-01 12:00 UTC);
        let now = datetime!(2025-03-04 08:00 UTC);
        let reports = [
            span(datetime!(2025-03-01 00:00 UTC), 10, 1),
            span(datetime!(2025-03-01 00:00 UTC), 5, 0),
            span(datetime!(2025-03-03 00:00 UTC), 7, 3),
            // Before the window: not drawn.
            span(datetime!(2025-02-20 00:00 UTC), 99, 99),
        ];
        let got = days(&reports, since, now);
        let totals: Vec<_> = got
            .iter()
            .map(|d| (d.date, d.successful, d.failed))
            .collect();
        assert_eq!(
            totals,
            [
                (date!(2025 - 03 - 01), 15, 1),
                (date!(2025 - 03 - 02), 0, 0),
                (date!(2025 - 03 - 03), 7, 3),
                (date!(2025 - 03 - 04), 0, 0),
            ]
        );
    }

    #[test]
    fn bars_stand_where_the_numbers_are() {
        let d = |day, successful, failed| Day {
            date: Date::from_calendar_date(2025, time::Month::March, day).unwrap(),
            successful,
            failed,
        };
        // The axis tops out at 200 (largest day 150 → 200).
        let days = [d(1, 150, 0), d(2, 50, 50), d(3, 0, 0), d(4, 0, 200)];
        assert_eq!(axis_max(&days), 200);
        let svg = sessions_chart(&days).into_string();
        let plot = HEIGHT - TOP - BOTTOM;
        let base = HEIGHT - BOTTOM;
        let close = |a: f64, b: f64| (a - b).abs() < 0.01;
        // Heights are proportional to the counts.
        assert!(close(
            attr(&svg, "2025-03-01", "successful", "height"),
            plot * 0.75
        ));
        assert!(close(attr(&svg, "2025-03-01", "failed", "height"), 0.0));
        assert!(close(
            attr(&svg, "2025-03-02", "successful", "height"),
            plot * 0.25
        ));
        // Failed sessions stack on top of the successful ones.
        let ok_top = attr(&svg, "2025-03-02", "successful", "y");
        assert!(close(ok_top, base - plot * 0.25));
        let bad_y = attr(&svg, "2025-03-02", "failed", "y");
        let bad_h = attr(&svg, "2025-03-02", "failed", "height");
        assert!(close(bad_y + bad_h, ok_top));
        assert!(close(bad_h, plot * 0.25));
        // An empty day has no height; a full failed day reaches the top.
        assert!(close(attr(&svg, "2025-03-03", "successful", "height"), 0.0));
        assert!(close(attr(&svg, "2025-03-04", "failed", "y"), TOP));
        // Bars are left to right in day order, each in its own slot.
        let x1 = attr(&svg, "2025-03-01", "successful", "x");
        let x2 = attr(&svg, "2025-03-02", "successful", "x");
        assert!(close(x2 - x1, (WIDTH - LEFT) / 4.0));
        assert!(svg.contains("2025-03-02: 50 failed"), "{svg}");
    }

    #[test]
    fn an_empty_window_draws_an_axis_to_one() {
        let svg = sessions_chart(&[]).into_string();
        assert_eq!(axis_max(&[]), 1);
        assert!(svg.starts_with("<svg"), "{svg}");
    }
}
