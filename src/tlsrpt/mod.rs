//! TLS-RPT (RFC 8460) intake: parse, store and summarize the reports senders send to tenants.
//!
//! Layout, one file per concern:
//! - [`report`]: the report model (own serde structs for RFC 8460 §4.4) and [`ReportError`],
//!   whose variants map to HTTP statuses (415, 413, 400, 404).
//! - [`mod@decode`]: media type check, compressed and decompressed size caps ([`Limits`]), bounded
//!   gunzip, JSON validation.
//! - [`store`]: the [`ReportStore`] trait, [`open_store`] (the only way to get one from outside
//!   this module), and [`SqliteStore`] (WAL, `synchronous=FULL`, versioned migrations, dedupe
//!   on organization + report-id + content digest, conflicts flagged, retention).
//! - [`intake`]: what both intakes share once they hold a report: the tenant check
//!   ([`check_tenant`]) and [`accept`] (build the [`StoredReport`], insert, answer).
//! - [`mail`]: finding the report in an RFC 5322 message, the DKIM policy
//!   ([`MailAuthPolicy`]), routing, sysexits codes, and the Maildir sweep.
//! - [`summary`]: per-tenant aggregation over a window, the "ready to enforce" verdict and the
//!   CLI table.
//! - [`https`]: the HTTPS endpoint, `POST https://<report host>/tlsrpt/<tenant domain>`.
//! - [`service`]: what the daemon holds ([`TlsRpt`]: the store or why it is unavailable,
//!   config, [`IntakeStats`]), the reopen and retention tasks, and the read hooks for the admin API and metrics (gauges over a window,
//!   computed from the database at scrape time: see that module's doc for why).
//!
//! The path of a report:
//! 1. HTTPS: body + `Content-Type` → [`decode()`] → ([`Report`], raw JSON). The tenant comes
//!    from the request path. Mail: raw message → [`mail::extract_report`] (which calls
//!    [`decode()`] on the report part) → [`mail::check_dkim`] → tenant from the JSON's
//!    `policy-domain` (headers, subject and file name only when the JSON names none).
//! 2. [`check_tenant`] proves the tenant exists ([`ReportError::UnknownDomain`] otherwise;
//!    HTTPS checks before reading the body), and [`accept`] checks the daily quotas
//!    ([`StoreError::OverQuota`]) and builds a [`StoredReport`] with the source and the time
//!    received.
//! 3. [`ReportStore::insert`] commits it (or answers [`InsertOutcome::Duplicate`]); only then
//!    may the intake answer 2xx / exit 0.
//! 4. Later, [`tenant_summary`] reads a tenant's [`summary::WindowData`] from the store and
//!    [`summarize`]s it into a [`TenantSummary`] with a [`Verdict`], served as JSON by the admin
//!    API or printed by `mta-stsd reports` (with [`render_table`] or as JSON).

pub mod decode;
pub mod https;
pub mod intake;
pub mod mail;
pub mod report;
pub mod service;
pub mod store;
pub mod summary;

pub use decode::{DEFAULT_MAX_COMPRESSED, DEFAULT_MAX_DECOMPRESSED, Limits, MediaType, decode};
pub use https::HttpsIntake;
pub use intake::{Accepted, Tenant, accept, check_tenant};
pub use mail::{
    MailAuthPolicy, MailError, MailIntake, MailReceipt, MaildirSummary, ingest_message,
    process_maildir,
};
pub use report::{Report, ReportError};
pub use service::{
    IntakeOutcome, IntakeStats, StoreStatus, TenantWindowTotals, TlsRpt, tenant_summary,
};
pub use store::{
    InsertOutcome, ReportRecord, ReportStore, Source, SqliteStore, StoreError, StoredReport,
    TenantTotals, open_existing_store, open_store,
};
pub use summary::{
    Sender, TenantSummary, Verdict, VerdictConfig, VerdictStatus, render_table, summarize,
};

/// Helpers shared by the module's unit tests.
#[cfg(test)]
pub(crate) mod testutil {
    use std::io::Write;

    /// Read `tests/fixtures/tlsrpt/<name>`.
    pub(crate) fn fixture(name: &str) -> Vec<u8> {
        let path = format!(
            "{}/tests/fixtures/tlsrpt/{name}",
            env!("CARGO_MANIFEST_DIR")
        );
        std::fs::read(&path).unwrap_or_else(|e| panic!("reading {path}: {e}"))
    }

    /// Gzip `data` in memory.
    pub(crate) fn gzip(data: &[u8]) -> Vec<u8> {
        let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        enc.write_all(data).unwrap();
        enc.finish().unwrap()
    }
}
