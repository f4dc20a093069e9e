//! mta-stsd: a hosted MTA-STS policy server.
//!
//! Serves `https://mta-sts.<domain>/.well-known/mta-sts.txt` (RFC 8461) for many tenant domains
//! from one process, each with its own certificate, and tells operators the DNS records to
//! publish.
//!
//! # Layout
//! - [`config`]: YAML → validated [`config::ServerConfig`] and [`config::Tenant`] values, with
//!   diagnostics naming file, line and field.
//! - [`policy`]: policy rendering (CRLF), the id digest, TXT record values.
//! - [`registry`]: the live tenant [`registry::Snapshot`] behind one swappable pointer.
//! - [`certs`]: the per-handshake [`certs::CertResolver`] and the certificate sources (internal
//!   CA, PEM files).
//! - [`server`]: TCP accept with a connection cap, TLS (SNI checked first), HTTP/1.1 or h2 by
//!   ALPN, timeouts, graceful shutdown.
//! - [`http`]: routing a request to pre-rendered bytes.
//! - [`reload`]: file watching (notify), SIGHUP and `POST /reload` → incremental re-parse →
//!   one snapshot swap; [`publish`]: the TXT records a change calls for and per-tenant
//!   readiness.
//! - [`metrics`]: Prometheus metrics (counters on the request path, per-tenant series made at
//!   scrape time); [`admin`]: the loopback admin listener (`/metrics`, `/healthz`, `/readyz`,
//!   `/api/v1/tenants`, `POST /reload`).
//! - [`tlsrpt`]: TLS-RPT reports (RFC 8460): parsing, bounded decoding, storage, HTTPS and mail
//!   intake, retention, per-tenant summaries and the ready-to-enforce verdict.
//! - [`accept`]: the bounded accept loop of the plain-HTTP listeners.
//! - [`daemon`]: wiring; [`cli`]: the command line; [`logging`], [`fsutil`], [`util`]: helpers.
//!
//! # The path of a request
//! TCP accept (semaphore) → ClientHello read, SNI looked up (unknown → `unrecognized_name`) →
//! handshake with the tenant's certificate → hyper (HTTP/1.1 or h2 from ALPN) →
//! [`http::handle`]: Host → snapshot → 200 with the rendered policy, or 404/405/421.
//!
//! A connection whose SNI is the TLS-RPT report host goes to [`tlsrpt::HttpsIntake`] instead:
//! `POST /tlsrpt/<tenant domain>` → capped body read → decode and insert on a blocking thread
//! → 200 once committed.
#![forbid(unsafe_code)]

pub mod accept;
pub mod admin;
pub mod certs;
pub mod cli;
pub mod config;
pub mod daemon;
pub mod fsutil;
pub mod http;
pub mod logging;
pub mod metrics;
pub mod policy;
pub mod publish;
pub mod registry;
pub mod reload;
pub mod server;
pub mod stats;
pub mod tlsrpt;
pub mod util;
