//! `mta-stsd check`: validate the server file and every tenant file.

use std::io::Write;
use std::path::Path;
use std::process::ExitCode;

use crate::config::{self, IssuerConfig, ServerConfig, TenantSet};

pub(super) fn check(dir: &Path, out: &mut dyn Write) -> anyhow::Result<ExitCode> {
    let server = match config::load_server_config(dir) {
        Ok(server) => server,
        Err(diags) => {
            for d in &diags {
                writeln!(out, "{d}")?;
            }
            writeln!(
                out,
                "{}: server configuration has {} error(s)",
                dir.join(config::SERVER_FILE).display(),
                diags.len()
            )?;
            return Ok(ExitCode::FAILURE);
        }
    };
    let (cache, set) = match crate::reload::initial_load(&server) {
        Ok(loaded) => loaded,
        Err(diag) => {
            writeln!(out, "{diag}")?;
            return Ok(ExitCode::FAILURE);
        }
    };
    let file_count = cache.len();
    let mut errors = 0usize;
    let mut warnings = 0usize;
    for d in server.warnings.iter().chain(&set.diagnostics) {
        writeln!(out, "{d}")?;
        if d.is_error() {
            errors += 1
        } else {
            warnings += 1
        }
    }
    for line in certificate_problems(&server, &set) {
        writeln!(out, "{line}")?;
        errors += 1;
    }
    writeln!(
        out,
        "checked {} and {file_count} tenant file(s): {} tenant(s) valid, {errors} error(s), {warnings} warning(s)",
        server.file.display(),
        set.tenants.len()
    )?;
    Ok(if errors == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// With `issuer: files`, a tenant without a usable certificate is an error `check` reports.
fn certificate_problems(server: &ServerConfig, set: &TenantSet) -> Vec<String> {
    let IssuerConfig::Files {
        dir,
        cert_file,
        key_file,
    } = &server.issuer
    else {
        return Vec::new();
    };
    let now = crate::util::unix_now();
    set.tenants
        .iter()
        .filter_map(|t| {
            crate::certs::files::load(dir, &t.host, cert_file, key_file, now)
                .err()
                .map(|why| {
                    format!(
                        "{}: error: certificate for {}: {why}",
                        t.source.display(),
                        t.host
                    )
                })
        })
        .collect()
}
