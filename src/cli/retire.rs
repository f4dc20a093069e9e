//! `mta-stsd forget`: confirms the removal of a tenant being retired (RFC 8461 §8.3).

use std::io::Write;
use std::path::Path;
use std::process::ExitCode;
use std::time::Duration;

/// `POST /api/v1/tenants/<domain>/forget`, then the records to remove.
pub(super) fn forget(
    admin: &str,
    token_file: Option<&Path>,
    domain: &str,
    out: &mut dyn Write,
) -> anyhow::Result<ExitCode> {
    let token = token_file.map(crate::admin::read_token).transpose()?;
    let limit = Duration::from_secs(30);
    let segment = percent_encoding::utf8_percent_encode(domain, percent_encoding::NON_ALPHANUMERIC);
    let path = format!("/api/v1/tenants/{segment}");
    let token = token.as_deref();
    super::admin_client::call_blocking(
        http::Method::POST,
        admin,
        &format!("{path}/forget"),
        token,
        limit,
    )?;
    writeln!(out, "{domain}: retired, no longer served")?;
    let body = super::admin_client::call_blocking(http::Method::GET, admin, &path, token, limit)?;
    let detail: serde_json::Value = serde_json::from_slice(&body)?;
    let records = detail["remove"].as_array().cloned().unwrap_or_default();
    if !records.is_empty() {
        writeln!(out, "remove these records:")?;
    }
    for r in records {
        writeln!(out, "  {}", r.as_str().unwrap_or_default())?;
    }
    Ok(ExitCode::SUCCESS)
}
