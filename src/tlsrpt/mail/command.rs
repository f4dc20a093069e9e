//! The `ingest-mail` command: one message on stdin (an MTA pipe transport, a fetchmail MDA) or
//! a Maildir sweep, answered with a sysexits code so the MTA knows whether to bounce (65) or
//! retry (75). It runs in its own process, on a store the command opened, and counts nothing.

use std::io::{Read, Write};
use std::path::Path;

use time::OffsetDateTime;

use super::maildir::REFUSED_DIR;
use super::{
    EX_DATAERR, EX_OK, EX_TEMPFAIL, MailError, MailIntake, MailReceipt, ingest_message,
    max_message_size, process_maildir,
};
use crate::config::TlsRptConfig;
use crate::tlsrpt::report::ReportError;
use crate::tlsrpt::store::{InsertOutcome, ReportStore};

/// Who the tenants are, as the configuration loaded for this run says.
pub struct MailTenants<'a> {
    /// Whether a (normalized) domain is a tenant of this server.
    pub is_tenant: &'a dyn Fn(&str) -> bool,
    /// Some tenant file failed to load, so an unknown domain may be one of its tenants.
    pub incomplete: bool,
}

impl MailTenants<'_> {
    /// The sysexits code for a refused message.
    fn exit_code(&self, e: &MailError) -> u8 {
        match e {
            // A report for a domain whose tenant file is broken right now is deferred, not
            // bounced: the operator may fix the file before the MTA gives up.
            MailError::Report(ReportError::UnknownDomain(_)) if self.incomplete => EX_TEMPFAIL,
            other => other.exit_code(),
        }
    }
}

/// Runs `ingest-mail` into `store` on `stdin`, or over `maildir` when given: receipts go to
/// `out`, refusals and errors to `err`. Returns the sysexits code; never fails otherwise.
pub fn ingest_command(
    store: &dyn ReportStore,
    config: &TlsRptConfig,
    tenants: &MailTenants<'_>,
    maildir: Option<&Path>,
    stdin: &mut dyn Read,
    out: &mut dyn Write,
    err: &mut dyn Write,
) -> u8 {
    let intake = MailIntake {
        store,
        limits: config.limits,
        quota: config.quota,
        auth: &config.mail,
        is_tenant: tenants.is_tenant,
    };
    let now = OffsetDateTime::now_utc();
    match maildir {
        Some(maildir) => sweep(maildir, &intake, tenants, now, out, err),
        None => one_message(stdin, &intake, tenants, now, out, err),
    }
}

/// The Maildir sweep: one line per handled, refused or deferred message; 75 if any failure may
/// be temporary, else 65 if anything was refused.
fn sweep(
    maildir: &Path,
    intake: &MailIntake<'_>,
    tenants: &MailTenants<'_>,
    now: OffsetDateTime,
    out: &mut dyn Write,
    err: &mut dyn Write,
) -> u8 {
    let is_temporary = |e: &MailError| tenants.exit_code(e) == EX_TEMPFAIL;
    let summary = match process_maildir(maildir, intake, &is_temporary, now) {
        Ok(summary) => summary,
        Err(e) => {
            let _ = writeln!(
                err,
                "mta-stsd: error: reading Maildir {}: {e}",
                maildir.display()
            );
            return EX_TEMPFAIL;
        }
    };
    for (path, receipt) in &summary.handled {
        let _ = writeln!(out, "{}: {}", path.display(), receipt_line(receipt));
    }
    for (path, e) in &summary.refused {
        let _ = writeln!(err, "{}: refused, not stored: {e}", path.display());
    }
    for (path, e) in &summary.failed {
        let _ = writeln!(err, "{}: not stored, left in place: {e}", path.display());
    }
    let _ = writeln!(
        out,
        "{}: {} handled, {} refused (moved to {REFUSED_DIR}/), {} left in place",
        maildir.display(),
        summary.handled.len(),
        summary.refused.len(),
        summary.failed.len()
    );
    summary
        .refused
        .iter()
        .chain(&summary.failed)
        .map(|(_, e)| tenants.exit_code(e))
        .fold(EX_OK, |acc, c| match (acc, c) {
            (EX_TEMPFAIL, _) | (_, EX_TEMPFAIL) => EX_TEMPFAIL,
            (EX_OK, c) => c,
            (acc, _) => acc,
        })
}

/// One message read from `stdin`, refused unread past the message size cap.
fn one_message(
    stdin: &mut dyn Read,
    intake: &MailIntake<'_>,
    tenants: &MailTenants<'_>,
    now: OffsetDateTime,
    out: &mut dyn Write,
    err: &mut dyn Write,
) -> u8 {
    let limit = max_message_size(&intake.limits);
    let mut raw = Vec::new();
    if let Err(e) = Read::take(stdin, limit as u64 + 1).read_to_end(&mut raw) {
        let _ = writeln!(err, "mta-stsd: error: reading stdin: {e}");
        return EX_TEMPFAIL;
    }
    if raw.len() > limit {
        let _ = writeln!(
            err,
            "mta-stsd: message larger than {limit} bytes: not a report"
        );
        return EX_DATAERR;
    }
    match ingest_message(&raw, intake, now) {
        Ok(receipt) => {
            let _ = writeln!(out, "{}", receipt_line(&receipt));
            receipt.exit_code()
        }
        Err(e) => {
            let _ = writeln!(err, "mta-stsd: report not stored: {e}");
            tenants.exit_code(&e)
        }
    }
}

/// What was stored, for whom, and any disagreement the JSON won.
fn receipt_line(r: &MailReceipt) -> String {
    let what = match r.outcome {
        InsertOutcome::Inserted => "stored",
        InsertOutcome::Duplicate => "duplicate (already stored)",
        InsertOutcome::Conflicting => "stored, conflicting with another report of the same id",
    };
    let mut line = format!(
        "{what}: report {:?} from {:?} for {}",
        r.report_id, r.organization, r.tenant
    );
    for tenant in &r.also {
        line.push_str(" and ");
        line.push_str(tenant);
    }
    if let Some(signer) = &r.signing_domain {
        line.push_str(&format!(" (DKIM {signer})"));
    }
    for note in &r.notes {
        line.push_str("; ");
        line.push_str(note);
    }
    line
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tlsrpt::mail::testutil::{GOOD_AR, GOOGLE_NAME, MTA, report_mail};
    use crate::tlsrpt::testutil::fixture;

    fn run(config: &TlsRptConfig, incomplete: bool, mut stdin: &[u8]) -> (u8, String, String) {
        let tenants = MailTenants {
            is_tenant: &|d| d == "example.org",
            incomplete,
        };
        let (mut out, mut err) = (Vec::new(), Vec::new());
        let store = crate::tlsrpt::store::open_store(config).unwrap();
        let code = ingest_command(
            store.as_ref(),
            config,
            &tenants,
            None,
            &mut stdin,
            &mut out,
            &mut err,
        );
        let text = |v: Vec<u8>| String::from_utf8(v).unwrap();
        (code, text(out), text(err))
    }

    #[test]
    fn stdin_receipts_and_codes() {
        let dir = tempfile::tempdir().unwrap();
        let mut config = TlsRptConfig::defaults(dir.path());
        config.mail.trusted_authserv_ids = vec![MTA.into()];
        let mail = report_mail(GOOD_AR, &fixture("google.json"), GOOGLE_NAME);
        let (code, out, _) = run(&config, false, &mail);
        assert_eq!(code, EX_OK);
        assert_eq!(
            out,
            "stored: report \"2025-03-01T00:00:00Z_example.org\" from \"Google Inc.\" for example.org (DKIM google.com)\n"
        );
        let (code, out, _) = run(&config, false, &mail);
        assert_eq!(code, EX_OK);
        assert!(out.starts_with("duplicate (already stored): "), "{out}");

        let stranger = String::from_utf8(fixture("google.json"))
            .unwrap()
            .replace("example.org", "stranger.example");
        let mail = report_mail(GOOD_AR, stranger.as_bytes(), GOOGLE_NAME);
        let (code, _, err) = run(&config, false, &mail);
        assert_eq!(code, EX_DATAERR);
        assert_eq!(
            err,
            "mta-stsd: report not stored: not a tenant of this server: stranger.example\n"
        );
        // With a tenant file broken, that domain may be one of its tenants: retry later.
        assert_eq!(run(&config, true, &mail).0, EX_TEMPFAIL);
    }
}
