//! The frame every page shares, and small pieces the pages repeat.

use maud::{DOCTYPE, Markup, html};

/// Which part of the navigation is current.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Section {
    /// `/ui/` and the tenant pages.
    Tenants,
    /// `/ui/status`.
    Status,
}

/// A whole page: `title` in the tab and the heading, `body` below the navigation.
pub fn page(title: &str, section: Section, body: Markup) -> Markup {
    let current = |s: Section| if s == section { Some("page") } else { None };
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                meta name="color-scheme" content="light dark";
                title { (title) " · mta-stsd" }
                link rel="stylesheet" href="/ui/assets/style.css";
                script src="/ui/assets/app.js" defer {}
            }
            body {
                header {
                    nav aria-label="Sections" {
                        span class="brand" { "mta-stsd" }
                        a href="/ui/" aria-current=[current(Section::Tenants)] { "Tenants" }
                        a href="/ui/status" aria-current=[current(Section::Status)] { "Status" }
                    }
                }
                main {
                    h1 { (title) }
                    (body)
                }
            }
        }
    }
}

/// A status word in a coloured badge: `good`, `warn`, `bad` or `neutral` picks the colour,
/// the word itself carries the meaning (colour is never the only cue).
pub fn badge(kind: &str, text: &str) -> Markup {
    html! { span class={"badge " (kind)} { (text) } }
}

/// Unix seconds as RFC 3339, or a dash.
pub fn when(ts: Option<i64>) -> String {
    ts.map_or_else(|| "–".to_owned(), crate::util::format_unix)
}

/// A definition list of (term, value) rows.
pub fn facts(rows: &[(&str, Markup)]) -> Markup {
    html! {
        dl class="facts" {
            @for (term, value) in rows {
                dt { (term) }
                dd { (value) }
            }
        }
    }
}

/// A value with a button that copies it (app.js; without script the value stays selectable).
pub fn copyable(value: &str) -> Markup {
    html! {
        code { (value) }
        " "
        button type="button" class="copy" data-copy=(value) aria-label={"Copy " (value)} { "Copy" }
    }
}

/// A percentage with one decimal.
pub fn percent(rate: f64) -> String {
    format!("{:.1} %", rate * 100.0)
}
