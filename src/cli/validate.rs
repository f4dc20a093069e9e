//! `mta-stsd validate`: every tenant's DNS and policy checked from the outside.

use std::io::Write;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context;

use super::{EXIT_NEEDS_ATTENTION, ValidateArgs};
use crate::config::{ServerConfig, Tenant};
use crate::publish::Publishing;
use crate::validate::{Settings, Status, TenantReport, Validator};

pub(super) fn validate(args: &ValidateArgs, out: &mut dyn Write) -> anyhow::Result<ExitCode> {
    let (server, set) = crate::reload::load(&args.config.config)?;
    for d in set.diagnostics.iter().filter(|d| d.is_error()) {
        eprintln!("{d}");
    }
    let tenants = select(&set.tenants, &args.domain, &server)?;
    let settings = settings(&server, args);
    let limit = server.validation.max_concurrent;
    // One thread is enough: the checks wait on the network, validation.max_concurrent at once.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the runtime")?;
    let reports = runtime.block_on(async {
        let validator = Arc::new(Validator::new(settings)?);
        let server = Arc::new(server);
        let gate = Arc::new(tokio::sync::Semaphore::new(limit));
        let mut runs = Vec::with_capacity(tenants.len());
        for t in tenants {
            let (validator, gate) = (validator.clone(), gate.clone());
            let (server, t) = (server.clone(), t.clone());
            runs.push(tokio::spawn(async move {
                let _permit = gate.acquire_owned().await;
                validator.tenant(&t, Publishing::of(&server)).await
            }));
        }
        let mut reports = Vec::with_capacity(runs.len());
        for run in runs {
            reports.push(run.await?);
        }
        Ok::<_, anyhow::Error>(reports)
    })?;
    print(&reports, args.json, out)?;
    let failed = reports.iter().any(|r| r.status() == Status::Error);
    Ok(if failed {
        ExitCode::from(EXIT_NEEDS_ATTENTION)
    } else {
        ExitCode::SUCCESS
    })
}

/// The tenants named by `--domain` (all without it), sorted by domain.
fn select(
    tenants: &[Arc<Tenant>],
    domains: &[String],
    server: &ServerConfig,
) -> anyhow::Result<Vec<Arc<Tenant>>> {
    let mut tenants = tenants.to_vec();
    if !domains.is_empty() {
        // U-labels, any case, a trailing dot: as `reports --domain` takes them.
        let wanted: Vec<String> = domains
            .iter()
            .map(|d| {
                let d = d.strip_suffix('.').unwrap_or(d);
                crate::config::normalize_hostname(d).unwrap_or_else(|_| d.to_lowercase())
            })
            .collect();
        if let Some(d) = wanted
            .iter()
            .find(|d| !tenants.iter().any(|t| &t.domain == *d))
        {
            anyhow::bail!("{d} is not a tenant of {}", server.file.display());
        }
        tenants.retain(|t| wanted.contains(&t.domain));
    }
    tenants.sort_by(|a, b| a.domain.cmp(&b.domain));
    Ok(tenants)
}

/// The server file's settings with the command line's overrides.
fn settings(server: &ServerConfig, args: &ValidateArgs) -> Settings {
    let mut settings = Settings::of(server);
    if !args.nameserver.is_empty() {
        settings.nameservers = args.nameserver.clone();
    }
    if let Some(port) = args.https_port {
        settings.https_port = port;
    }
    if let Some(port) = args.smtp_port {
        settings.smtp_port = port;
    }
    if let Some(file) = &args.ca_file {
        settings.ca_file = Some(file.clone());
    }
    if args.no_starttls {
        settings.starttls = false;
    }
    settings
}

/// One line per check (`domain check status observed — do: action`), or the JSON list.
fn print(reports: &[TenantReport], json: bool, out: &mut dyn Write) -> anyhow::Result<()> {
    if json {
        serde_json::to_writer_pretty(&mut *out, reports)?;
        writeln!(out)?;
        return Ok(());
    }
    for r in reports {
        for v in &r.checks {
            write!(
                out,
                "{} {} {}: {}",
                r.domain,
                v.check.as_str(),
                v.status.as_str(),
                v.observed
            )?;
            match &v.action {
                Some(action) => writeln!(out, " — do: {action}")?,
                None => writeln!(out)?,
            }
        }
    }
    let errors = reports
        .iter()
        .filter(|r| r.status() == Status::Error)
        .count();
    writeln!(
        out,
        "validated {} tenant(s): {errors} with errors",
        reports.len()
    )?;
    Ok(())
}
