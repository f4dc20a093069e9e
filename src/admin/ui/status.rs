//! `/ui/status`: the service's own state, drawn from the JSON `/api/v1/status` serves (so the
//! page and the API cannot disagree) and the running server file.
//!
//! Cluster mode: when that JSON carries a `cluster` object (main's cluster wiring puts
//! `replica`, `role`, `detail` and `replicas` there), [`cluster_section`] shows it, the
//! replicas as a table of whatever fields each has, so new fields need no change here.

use maud::{Markup, html};
use serde_json::Value;

use super::super::AdminState;
use super::layout::{self, Section, badge, facts, when};
use crate::config::{IssuerConfig, ServerConfig};

/// The whole page.
pub fn page(state: &AdminState) -> Markup {
    let status = super::super::status(state);
    let config = state.reloader.running();
    let body = html! {
        (build_section(&status))
        (reload_section(&status))
        (listeners_section(config, state))
        (issuer_section(config))
        (store_section(&status))
        @if let Some(cluster) = cluster_section(&status) { (cluster) }
    };
    layout::page("Service status", Section::Status, body)
}

fn text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => "–".into(),
        other => other.to_string(),
    }
}

fn build_section(status: &Value) -> Markup {
    html! {
        section aria-labelledby="build" {
            h2 id="build" { "Build" }
            (facts(&[
                ("Version", html! { (text(&status["version"])) }),
                ("Commit", html! { code { (text(&status["commit"])) }
                    @if status["dirty"] == true { " " (badge("warn", "dirty")) } }),
                ("Snapshot generation", html! { (text(&status["generation"])) }),
            ]))
        }
    }
}

fn reload_section(status: &Value) -> Markup {
    let list = |key: &str| status[key].as_array().cloned().unwrap_or_default();
    let (errors, restart, stale) = (
        list("errors"),
        list("restart_required"),
        list("stale_tenants"),
    );
    html! {
        section aria-labelledby="reload" {
            h2 id="reload" { "Configuration" }
            (facts(&[
                ("Last reload", html! { (text(&status["last_trigger"])) ", "
                    (text(&status["last_result"])) ", at " (when(status["last_attempt"].as_i64())) }),
                ("Last clean load", html! { (when(status["last_success"].as_i64())) }),
                ("Restart required for", html! {
                    @if restart.is_empty() { "nothing" }
                    @for (i, s) in restart.iter().enumerate() { @if i > 0 { ", " } code { (text(s)) } }
                }),
                ("Stale tenants", html! {
                    @if stale.is_empty() { "none" }
                    @for (i, s) in stale.iter().enumerate() {
                        @if i > 0 { ", " } a href={"/ui/tenants/" (text(s))} { (text(s)) }
                    }
                }),
            ]))
            @if errors.is_empty() { p { (badge("good", "no errors")) } } @else {
                div class="scroll" { table class="errors" {
                    caption { "Current errors" }
                    thead { tr { th scope="col" { "Where" } th scope="col" { "Field" } th scope="col" { "Message" } } }
                    tbody { @for e in &errors { tr {
                        td { code { (text(&e["file"])) ":" (text(&e["line"])) ":" (text(&e["column"])) } }
                        td { code { (text(&e["field"])) } }
                        td { (text(&e["message"])) }
                    } } }
                } }
            }
        }
    }
}

fn listeners_section(config: &ServerConfig, state: &AdminState) -> Markup {
    let https = if state.listening.load(std::sync::atomic::Ordering::Relaxed) {
        badge("good", "serving")
    } else {
        badge("bad", "not serving")
    };
    let bound = state.bound.get().copied().unwrap_or_default();
    let at = |bound: Option<std::net::SocketAddr>, configured: std::net::SocketAddr| {
        bound.unwrap_or(configured).to_string()
    };
    html! {
        section aria-labelledby="listeners" {
            h2 id="listeners" { "Listeners" }
            (facts(&[
                ("HTTPS (policies)", html! { code { (at(bound.https, config.listen)) } " " (https) }),
                ("Admin", html! { @match &config.admin {
                    Some(a) => { code { (at(bound.admin, a.listen)) }
                        " (pages at " code { (super::base_url(state)) "/ui/" } ")" }
                    None => "–",
                } }),
                ("TLS-RPT report host", html! { (config.tlsrpt.report_host.as_deref().unwrap_or("–")) }),
                ("DNS (delegated zone)", html! { @match &config.dns {
                    Some(d) => { code { (at(bound.dns, d.listen)) } " for " (d.zone) }
                    None => "off",
                } }),
                ("Public hostname", html! { (config.public_hostname.as_deref().unwrap_or("–")) }),
            ]))
        }
    }
}

fn issuer_section(config: &ServerConfig) -> Markup {
    let rows: Vec<(&str, Markup)> = match &config.issuer {
        IssuerConfig::Internal { leaf_validity } => vec![
            ("Issuer", html! { "internal CA" }),
            (
                "Leaf lifetime",
                html! { (leaf_validity.as_secs() / 86_400) " days" },
            ),
        ],
        IssuerConfig::Files { dir, .. } => vec![
            ("Issuer", html! { "PEM files" }),
            ("Directory", html! { code { (dir.display()) } }),
        ],
        IssuerConfig::Acme(acme) => vec![
            ("Issuer", html! { "ACME" }),
            ("Directory", html! { code { (acme.directory) } }),
            (
                "Order window",
                html! { (acme.schedule.orders_per_window) " new orders per "
                (span_of(acme.schedule.window)) ", at most "
                (acme.schedule.max_concurrent) " at once" },
            ),
        ],
    };
    html! {
        section aria-labelledby="issuer" {
            h2 id="issuer" { "Certificates" }
            (facts(&rows))
        }
    }
}

fn store_section(status: &Value) -> Markup {
    let store = &status["tlsrpt_store"];
    html! {
        section aria-labelledby="store" {
            h2 id="store" { "Report store" }
            @if store["up"] == true { p { (badge("good", "up")) } } @else {
                p { (badge("bad", "unavailable")) " " (text(&store["error"])) }
            }
        }
    }
}

/// The cluster's replicas and leader, when the status JSON has a `cluster` object (cluster
/// mode: `replica`, `role` of this replica, `detail`, `replicas` with whatever fields each
/// has, and `leader` when the status names it); `None` otherwise.
pub fn cluster_section(status: &Value) -> Option<Markup> {
    let cluster = status.get("cluster")?.as_object()?;
    let field = |key: &str| cluster.get(key).map_or("–".into(), text);
    let replicas = cluster
        .get("replicas")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let columns: Vec<String> = replicas
        .first()
        .and_then(Value::as_object)
        .map(|o| o.keys().cloned().collect())
        .unwrap_or_default();
    let role = field("role");
    let leader = match (cluster.get("leader"), role.as_str()) {
        (Some(l), _) => text(l),
        (None, "leader") => field("replica"),
        (None, _) => "another replica".into(),
    };
    let kind = match role.as_str() {
        "leader" | "follower" => "good",
        _ => "bad",
    };
    Some(html! {
        section aria-labelledby="cluster" {
            h2 id="cluster" { "Cluster" }
            (facts(&[
                ("This replica", html! { code { (field("replica")) } " " (badge(kind, &role)) }),
                ("Leader", html! { strong { (leader) } }),
                ("Detail", html! { (field("detail")) }),
            ]))
            div class="scroll" { table class="replicas" {
                caption { "Replicas" }
                thead { tr { @for c in &columns { th scope="col" { (c) } } } }
                tbody { @for r in &replicas { tr { @for c in &columns { td { (text(&r[c.as_str()])) } } } } }
            } }
        }
    })
}

/// `3h`, `90m`, `45s`: the largest unit that divides the duration.
fn span_of(d: std::time::Duration) -> String {
    let s = d.as_secs();
    match s {
        s if s > 0 && s % 86_400 == 0 => format!("{}d", s / 86_400),
        s if s > 0 && s % 3_600 == 0 => format!("{}h", s / 3_600),
        s if s > 0 && s % 60 == 0 => format!("{}m", s / 60),
        s => format!("{s}s"),
    }
}
