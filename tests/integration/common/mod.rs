//! Shared test harness, one module per harness; everything is re-exported here.

#![allow(dead_code)]

mod admin;
mod binary;
mod bind;
mod chromium;
pub mod cluster;
mod daemon;
mod fixtures;
mod https;
mod postgres;
mod smtp;
mod testdns;
mod unbound;

use std::time::Duration;

// The whole former `common` surface, including types no test names yet.
#[allow(unused_imports)]
pub use admin::{AdminResponse, admin_get, admin_request};
pub use binary::{ServeProcess, binary, dns_json, run_binary};
pub use bind::{Bind, TsigKey};
#[allow(unused_imports)]
pub use chromium::{Loaded, chromium_binary, dump_dom, screenshot};
pub use daemon::{Running, run_daemon, start};
pub use fixtures::{
    BASE_SERVER_YAML, TestConfig, gzip, insert_report, report_json, report_mail, tlsrpt_fixture,
};
#[allow(unused_imports)]
pub use https::{Client, Fetched};
pub use postgres::Postgres;
pub use smtp::SmtpServer;
pub use testdns::{TestDns, TestRecord};
pub use unbound::{Unbound, free_dns_port, unbound_binary};
/// Record builders of the test DNS.
pub mod rr {
    pub use super::testdns::{a, cname, mx, txt};
}

/// Installs the process-wide crypto provider once (tests share one process).
pub fn init_crypto() {
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    // Daemon logs in test output (shown for failing tests), filtered by RUST_LOG.
    let _ = tracing_subscriber::fmt()
        .with_test_writer()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "mta_stsd=info".into()),
        )
        .try_init();
}

/// Polls `check` every 20 ms until it returns true or `limit` passes.
pub async fn eventually<F, Fut>(limit: Duration, mut check: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        if check().await {
            return true;
        }
        if tokio::time::Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
