//! Configuration: YAML files → validated, ready-to-serve values.
//!
//! Two layers (see STYLE.md): raw serde structs that mirror the YAML with
//! `deny_unknown_fields` and `Spanned` positions, and a compile step that turns them into
//! [`ServerConfig`] and [`Tenant`] values with rendered policies. Nothing on the request path
//! ever sees YAML. Every problem becomes a [`Diagnostic`] naming file, line, column and field.

pub mod acme;
mod dns;
mod dns_update;
mod field;
mod names;
mod server;
mod store;
mod tenant;
mod tlsrpt;
mod validation;

use std::fmt;
use std::path::{Path, PathBuf};

pub use acme::{AcmeConfig, ChallengeKind};
pub use dns::{DEFAULT_DNS_TTL, DnsConfig};
pub use dns_update::{TsigAlg, TsigSecret, UpdateTarget};
pub use names::{normalize_hostname, normalize_mx_pattern, validate_rua};
pub use server::{
    AdminConfig, DEFAULT_ADMIN_LISTEN, IssuerConfig, Limits, MetricsConfig, PROBLEM_EXPIRY_DAYS,
    PerTenant, ReloadConfig, SERVER_FILE, ServerConfig, TENANTS_DIR, TlsSettings,
    load_server_config, parse_server_config,
};
pub use store::{PgUrl, PostgresConfig};
pub use tenant::{
    Claims, FileTenants, Retiring, Served, Tenant, TenantSet, assemble, assemble_shared, file_kind,
    is_tenant_file_name, load_tenant_file, parse_tenants,
};
pub use tlsrpt::{
    DEFAULT_MAX_COMPRESSED, DEFAULT_MAX_DECOMPRESSED, DEFAULT_MIN_DAYS, DEFAULT_RETENTION_DAYS,
    MailAuthPolicy, REPORT_PATH_PREFIX, ReportLimits, ReportQuota, TLSRPT_DATABASE, TlsRptConfig,
    report_uri,
};
pub use validation::{DEFAULT_VALIDATION_INTERVAL, DEFAULT_VALIDATION_TIMEOUT, ValidationConfig};

/// The JSON Schema (draft 2020-12) of a tenant file, generated from the types it is parsed
/// with (`mta-stsd schema tenant`, `schema/tenant.schema.json`).
pub fn tenant_schema() -> serde_json::Value {
    titled(tenant::raw_schema(), "mta-stsd tenant file")
}

/// The JSON Schema (draft 2020-12) of the server file `mta-stsd.yaml`
/// (`mta-stsd schema server`, `schema/server.schema.json`).
pub fn server_schema() -> serde_json::Value {
    titled(server::raw_schema(), "mta-stsd server file (mta-stsd.yaml)")
}

/// The schema as JSON with an operator's title instead of the Rust type's name.
fn titled(schema: schemars::Schema, title: &str) -> serde_json::Value {
    let mut value = schema.to_value();
    if let Some(map) = value.as_object_mut() {
        map.insert("title".into(), title.into());
    }
    value
}

/// How bad a diagnostic is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    /// The file (or tenant) is not applied.
    Error,
    /// Applied, but probably not what the operator wants.
    Warning,
}

/// One problem found in a configuration file.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct Diagnostic {
    /// Error or warning.
    pub severity: Severity,
    /// The file, as the operator named it (config directory joined with the file name).
    pub file: PathBuf,
    /// 1-based line, 0 when the problem concerns the whole file.
    pub line: u64,
    /// 1-based column, 0 when unknown.
    pub column: u64,
    /// The YAML field, e.g. `mx[1]` or `domain`.
    pub field: String,
    /// What is wrong, in one line.
    pub message: String,
}

impl Diagnostic {
    /// An error at a position.
    pub fn error(file: &Path, line: u64, column: u64, field: &str, message: String) -> Self {
        Diagnostic {
            severity: Severity::Error,
            file: file.to_path_buf(),
            line,
            column,
            field: field.to_owned(),
            message,
        }
    }

    /// A warning at a position.
    pub fn warning(file: &Path, line: u64, column: u64, field: &str, message: String) -> Self {
        Diagnostic {
            severity: Severity::Warning,
            ..Diagnostic::error(file, line, column, field, message)
        }
    }

    /// Whether this diagnostic stops the file or tenant from being applied.
    pub fn is_error(&self) -> bool {
        self.severity == Severity::Error
    }
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let severity = match self.severity {
            Severity::Error => "error",
            Severity::Warning => "warning",
        };
        write!(
            f,
            "{}:{}:{}: {severity}: ",
            self.file.display(),
            self.line,
            self.column
        )?;
        if !self.field.is_empty() {
            write!(f, "{}: ", self.field)?;
        }
        f.write_str(&self.message)
    }
}

/// Nodes and events a file may hold. serde-saphyr's defaults (250 000 nodes) stop a bulk file
/// near 40 000 tenants; a tenant is about six nodes, so this admits the largest file we read
/// (64 MiB) while alias and anchor limits keep their defaults against expansion bombs.
const MAX_YAML_NODES: usize = 8_000_000;
const MAX_YAML_EVENTS: usize = 4 * MAX_YAML_NODES;

/// Options every configuration file is parsed with: duplicate keys are errors (serde-saphyr's
/// default, stated here so it never silently changes) and alias expansion stays bounded.
fn yaml_options() -> serde_saphyr::Options {
    serde_saphyr::options! {
        duplicate_keys: serde_saphyr::DuplicateKeyPolicy::Error,
        budget: serde_saphyr::budget! {
            max_nodes: MAX_YAML_NODES,
            max_events: MAX_YAML_EVENTS,
        },
    }
}

/// Turns a serde-saphyr error into a diagnostic. The field is the key on the offending line,
/// which is what an operator looks for. Values the parser quotes are cut to a short excerpt:
/// a tenant file may be a link to something that is not YAML, and its contents must not reach
/// the log or the admin API.
fn yaml_diagnostic(file: &Path, source: &str, err: &serde_saphyr::Error) -> Diagnostic {
    let (line, column) = err
        .location()
        .map(|l| (l.line(), l.column()))
        .unwrap_or((0, 0));
    let mut message = err.without_snippet().to_string();
    if let Some(pos) = message.rfind(" at line ") {
        message.truncate(pos);
    }
    if message.contains("found a tab")
        && let Some((line, column)) = indenting_tab(source, line)
    {
        let field = key_on_line(source, line).unwrap_or_default();
        let message = "a tab in the indentation: YAML indents with spaces only".to_owned();
        return Diagnostic::error(file, line, column, &field, message);
    }
    let field =
        if let Some(name) = backticked(&message).filter(|_| message.contains("unknown field")) {
            if !is_key_like(&name) {
                // Not a typo of a key but some other file's line: say nothing of it.
                message = message.replacen(&format!("`{name}`"), "(not a key name; not shown)", 1);
                String::new()
            } else {
                name
            }
        } else if let Some(rest) = message.strip_prefix("duplicate mapping key: ") {
            let key = excerpt(rest.split(',').next().unwrap_or(rest));
            message = format!("duplicate key {key:?}");
            key
        } else {
            key_on_line(source, line).unwrap_or_default()
        };
    Diagnostic::error(file, line, column, &field, excerpt_quotes(&message))
}

/// Longest excerpt of a file's contents a diagnostic quotes.
const EXCERPT_CHARS: usize = 40;

/// A short, printable excerpt of `value` for a diagnostic: at most [`EXCERPT_CHARS`]
/// characters, control characters replaced, and nothing of a PEM block (a key file linked as a
/// tenant file must not be shown).
fn excerpt(value: &str) -> String {
    if value.contains("-----BEGIN") {
        return "-----BEGIN … (PEM data not shown)".to_owned();
    }
    let mut out = String::new();
    for (i, c) in value.chars().enumerate() {
        if i == EXCERPT_CHARS {
            out.push('…');
            break;
        }
        out.push(if c.is_control() { '?' } else { c });
    }
    out
}

/// Replaces every `"…"` and `` `…` `` quotation in a parser message with its [`excerpt`].
fn excerpt_quotes(message: &str) -> String {
    let mut out = String::with_capacity(message.len().min(256));
    let mut rest = message;
    while let Some(start) = rest.find(['"', '`']) {
        let quote = if rest[start..].starts_with('"') {
            '"'
        } else {
            '`'
        };
        out.push_str(&rest[..=start]);
        let body = &rest[start + 1..];
        let end = closing_quote(body, quote).unwrap_or(body.len());
        out.push_str(&excerpt(&body[..end]));
        if end < body.len() {
            out.push(quote);
            rest = &body[end + 1..];
        } else {
            rest = "";
        }
    }
    out.push_str(rest);
    out
}

/// The byte index of the quote that closes `body`; inside `"…"` a backslash escapes.
fn closing_quote(body: &str, quote: char) -> Option<usize> {
    let mut escaped = false;
    for (i, c) in body.char_indices() {
        match c {
            '\\' if quote == '"' && !escaped => escaped = true,
            c if c == quote && !escaped => return Some(i),
            _ => escaped = false,
        }
    }
    None
}

/// The line and column of the first tab in the indentation of a line with content, looking
/// from `from` on: the parser reports such a tab at the scalar before it (often a line early).
fn indenting_tab(source: &str, from: u64) -> Option<(u64, u64)> {
    let skip = usize::try_from(from.saturating_sub(1)).ok()?;
    source.lines().enumerate().skip(skip).find_map(|(i, text)| {
        let indent = text.len() - text.trim_start_matches([' ', '\t']).len();
        let rest = text[indent..].trim_end();
        let tab = text[..indent].find('\t')?;
        (!rest.is_empty() && !rest.starts_with('#')).then_some((i as u64 + 1, tab as u64 + 1))
    })
}

fn backticked(message: &str) -> Option<String> {
    let start = message.find('`')? + 1;
    let len = message[start..].find('`')?;
    Some(message[start..start + len].to_owned())
}

/// The mapping key on `line`, if that line has one that looks like a key of ours.
fn key_on_line(source: &str, line: u64) -> Option<String> {
    let text = source
        .lines()
        .nth(usize::try_from(line).ok()?.checked_sub(1)?)?;
    let text = text.trim_start().trim_start_matches("- ").trim_start();
    let (key, _) = text.split_once(':')?;
    is_key_like(key).then(|| key.to_owned())
}

/// Whether `name` could be a key of ours mistyped: short, letters, digits, `_` and `-`.
fn is_key_like(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= EXCERPT_CHARS
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

#[cfg(test)]
mod tests {
    use std::fmt::Write;

    #[test]
    fn one_file_holds_a_bulk_tenant_list() {
        // 40 000 tenants: past serde-saphyr's default node budget, well within ours.
        let mut yaml = String::new();
        for i in 0..40_000 {
            let _ = write!(
                yaml,
                "- domain: t{i}.example\n  mode: enforce\n  mx: [mx.t{i}.example]\n  max_age: 604800\n"
            );
        }
        let file = super::parse_tenants(std::path::Path::new("bulk.yaml"), &yaml);
        assert!(file.diagnostics.is_empty(), "{:?}", &file.diagnostics[..1]);
        assert_eq!(file.tenants.len(), 40_000);
    }
}
