//! The admin pages: read-only HTML on the admin listener, over the same data as the API.
//!
//! `/ui/` lists the tenants (filters, sorts and pages on the server, so a page of 50 costs the
//! same at 100 000 tenants), `/ui/tenants/<domain>` shows one (policy, records, certificate,
//! checks, TLS-RPT with a daily chart and its reports), `/ui/status` the service itself,
//! `/ui/reports/<report-id>` one report as highlighted JSON and `…/<report-id>.json` the same
//! as a download. Nothing here writes.
//!
//! Templates are maud (compiled in, every value escaped unless wrapped in `PreEscaped`, which
//! only [`json`] does, after escaping). Charts are SVG drawn here ([`chart`]); the one script,
//! `app.js`, only adds copy buttons. Every answer carries a Content-Security-Policy of
//! `default-src 'self'`, and the pages name no other origin, so a browser showing them asks
//! nothing of any host but this listener. Access follows the API: with a token configured, no
//! page without it (a bearer token, or the token as a Basic password, which browsers prompt
//! for).

mod chart;
mod json;
mod layout;
mod report;
mod status;
mod tenant;
mod tenants;

use std::sync::Arc;

use bytes::Bytes;
use http::header::{CACHE_CONTROL, CONTENT_TYPE, HeaderName, HeaderValue, LOCATION};
use http::{Method, Response, StatusCode};
use http_body_util::Full;
use maud::{Markup, html};

use super::AdminState;

/// What every page handler answers.
type Answer = Response<Full<Bytes>>;

/// Where the pages live.
pub const PREFIX: &str = "/ui";

/// The policy every answer of the pages carries: only this origin, no inline script or
/// style, no framing, forms post nowhere else.
const CSP: &str = "default-src 'self'; object-src 'none'; \
                   base-uri 'none'; form-action 'self'; frame-ancestors 'none'";

const STYLE: &str = include_str!("style.css");
const SCRIPT: &str = include_str!("app.js");

/// Whether `path` is one of the pages (and so also accepts a Basic password).
pub fn is_ui_path(path: &str) -> bool {
    path == PREFIX || path.starts_with("/ui/")
}

/// The page of `domain` as operators reach it: `admin.external_url`, else the admin
/// listener's address, followed by `/ui/tenants/<domain>`. The API's `html_url` links here.
pub fn tenant_url(state: &AdminState, domain: &str) -> String {
    format!("{}{PREFIX}/tenants/{domain}", base_url(state))
}

/// `admin.external_url`, or `http://` and the address the admin listener is bound to.
fn base_url(state: &AdminState) -> String {
    let admin = state.reloader.running().admin.as_ref();
    if let Some(url) = admin.and_then(|a| a.external_url.clone()) {
        return url;
    }
    match (state.bound.get().and_then(|b| b.admin), admin) {
        (Some(addr), _) => format!("http://{addr}"),
        (None, Some(a)) => a.base_url(),
        (None, None) => format!("http://{}", crate::config::DEFAULT_ADMIN_LISTEN),
    }
}

/// Routes one page request (already authorized).
pub async fn handle(
    state: &Arc<AdminState>,
    method: &Method,
    path: &str,
    query: Option<&str>,
) -> Response<Full<Bytes>> {
    if method != Method::GET && method != Method::HEAD {
        return html_answer(
            StatusCode::METHOD_NOT_ALLOWED,
            &problem("These pages only read."),
        );
    }
    let rest = path.strip_prefix(PREFIX).unwrap_or(path);
    match rest {
        "" => redirect("/ui/"),
        "/" => tenants::page(state, query).await,
        "/status" => html_answer(StatusCode::OK, &status::page(state)),
        "/assets/style.css" => asset("text/css; charset=utf-8", STYLE),
        "/assets/app.js" => asset("text/javascript; charset=utf-8", SCRIPT),
        r if r.starts_with("/tenants/") => tenant::page(state, &r["/tenants/".len()..]).await,
        r if r.starts_with("/reports/") => {
            report::page(state, &r["/reports/".len()..], query).await
        }
        _ => not_found("No such page."),
    }
}

/// The headers every page answer carries.
fn secure(mut resp: Response<Full<Bytes>>, content_type: &'static str) -> Response<Full<Bytes>> {
    let h = resp.headers_mut();
    h.insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    h.insert(
        HeaderName::from_static("content-security-policy"),
        HeaderValue::from_static(CSP),
    );
    h.insert(
        HeaderName::from_static("x-content-type-options"),
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        HeaderName::from_static("referrer-policy"),
        HeaderValue::from_static("no-referrer"),
    );
    // Pages show live state and may carry tenant data: never from a cache.
    h.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    resp
}

/// An HTML answer.
fn html_answer(status: StatusCode, page: &Markup) -> Response<Full<Bytes>> {
    let mut resp = Response::new(Full::new(Bytes::from(page.0.clone())));
    *resp.status_mut() = status;
    secure(resp, "text/html; charset=utf-8")
}

fn asset(content_type: &'static str, body: &'static str) -> Response<Full<Bytes>> {
    secure(
        Response::new(Full::new(Bytes::from_static(body.as_bytes()))),
        content_type,
    )
}

fn redirect(to: &'static str) -> Response<Full<Bytes>> {
    let mut resp = html_answer(StatusCode::PERMANENT_REDIRECT, &problem("Moved to /ui/."));
    resp.headers_mut()
        .insert(LOCATION, HeaderValue::from_static(to));
    resp
}

/// A page that says what went wrong, in the same frame as the others.
fn problem(why: &str) -> Markup {
    layout::page(
        "Not shown",
        layout::Section::Tenants,
        html! { p class="problem" { (why) } p { a href="/ui/" { "All tenants" } } },
    )
}

fn not_found(why: &str) -> Response<Full<Bytes>> {
    html_answer(StatusCode::NOT_FOUND, &problem(why))
}

fn bad_request(why: &str) -> Response<Full<Bytes>> {
    html_answer(StatusCode::BAD_REQUEST, &problem(why))
}

/// `k=v&…` of a query string, decoded (`+` is a space in form submissions); empty values are
/// dropped, as an empty form field means "any".
fn query_pairs(query: Option<&str>) -> Result<Vec<(String, String)>, String> {
    let pairs = super::list::query_pairs(query)?;
    Ok(pairs
        .into_iter()
        .map(|(key, value)| (key, value.trim().to_owned()))
        .filter(|(_, value)| !value.is_empty())
        .collect())
}

/// `text` for a query string or a path segment: everything but unreserved characters escaped.
fn encode(text: &str) -> String {
    const SET: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
        .remove(b'-')
        .remove(b'.')
        .remove(b'_')
        .remove(b'~');
    percent_encoding::utf8_percent_encode(text, SET).to_string()
}

#[cfg(test)]
mod tests;
