//! Configuration: YAML files → validated, ready-to-serve values.
//!
//! Two layers (see STYLE.md): raw serde structs that mirror the YAML with
//! `deny_unknown_fields` and `Spanned` positions, and a compile step that turns them into
//! [`ServerConfig`] and [`Tenant`] values with rendered policies. Nothing on the request path
//! ever sees YAML. Every problem becomes a [`Diagnostic`] naming file, line, column and field.

pub mod acme;
mod field;
mod names;
mod server;
mod tenant;
mod tlsrpt;

use std::fmt;
use std::path::{Path, PathBuf};

pub use acme::{AcmeConfig, ChallengeKind};
pub use names::{normalize_hostname, normalize_mx_pattern, validate_rua};
pub use server::{
    AdminConfig, DEFAULT_ADMIN_LISTEN, IssuerConfig, Limits, ReloadConfig, SERVER_FILE,
    ServerConfig, TENANTS_DIR, TlsSettings, load_server_config,
};
pub use tenant::{
    FileTenants, Tenant, TenantSet, assemble, assemble_shared, is_tenant_file, is_tenant_file_name,
    load_tenant_file, parse_tenants,
};
pub use tlsrpt::{
    DEFAULT_MAX_COMPRESSED, DEFAULT_MAX_DECOMPRESSED, DEFAULT_MIN_DAYS, DEFAULT_RETENTION_DAYS,
    MailAuthPolicy, REPORT_PATH_PREFIX, ReportLimits, TLSRPT_DATABASE, TlsRptConfig, report_uri,
};

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
/// which is what an operator looks for.
fn yaml_diagnostic(file: &Path, source: &str, err: &serde_saphyr::Error) -> Diagnostic {
    let (line, column) = err
        .location()
        .map(|l| (l.line(), l.column()))
        .unwrap_or((0, 0));
    let mut message = err.without_snippet().to_string();
    if let Some(pos) = message.rfind(" at line ") {
        message.truncate(pos);
    }
    let field =
        if let Some(name) = backticked(&message).filter(|_| message.contains("unknown field")) {
            name
        } else if let Some(rest) = message.strip_prefix("duplicate mapping key: ") {
            let key = rest.split(',').next().unwrap_or(rest).to_owned();
            message = format!("duplicate key {key:?}");
            key
        } else {
            key_on_line(source, line).unwrap_or_default()
        };
    Diagnostic::error(file, line, column, &field, message)
}

fn backticked(message: &str) -> Option<String> {
    let start = message.find('`')? + 1;
    let len = message[start..].find('`')?;
    Some(message[start..start + len].to_owned())
}

fn key_on_line(source: &str, line: u64) -> Option<String> {
    let text = source
        .lines()
        .nth(usize::try_from(line).ok()?.checked_sub(1)?)?;
    let text = text.trim_start().trim_start_matches("- ").trim_start();
    let key = text.split(':').next()?;
    (!key.is_empty()
        && key
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-'))
    .then(|| key.to_owned())
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
