//! mta-stsd: a hosted MTA-STS policy server.
//!
//! Serves `https://mta-sts.<domain>/.well-known/mta-sts.txt` (RFC 8461) for many tenant domains
//! from one process, each with its own certificate, and tells operators the DNS records to
//! publish.
//!
//! # Layout
//! Dependencies point down only (docs/ARCHITECTURE.md has the rule, CI checks it):
//! 1. [`policy`] (rendering, the id digest, MX matching), [`config`] (YAML → validated
//!    [`config::ServerConfig`] and [`config::Tenant`], diagnostics naming file, line and
//!    field), [`fsutil`], [`util`] (time helpers; [`util::http`], the pieces every listener
//!    shares), [`accept`] (the bounded accept loop of the plain-HTTP listeners), [`logging`].
//! 2. [`registry`] (the live [`registry::Snapshot`] behind one swappable pointer), [`stats`]
//!    (every counter the daemon writes), [`certs`] (the per-handshake
//!    [`certs::CertResolver`], the board, the `CertStore` trait, the issuers: internal CA, PEM
//!    files, ACME), [`tlsrpt`] (reports: decoding, the `ReportStore` trait, HTTPS and mail
//!    intake through one accept path, summaries and the verdict), [`probe`] (the STARTTLS probe
//!    of one MX host, answering with the TLS-RPT result-type a sender would report).
//! 3. [`publish`] (the one builder of DNS records, readiness), [`http`] (routing a policy
//!    request), [`reload`] (the one tenant loader, watching, SIGHUP, one swap per changed file),
//!    [`validate`] (each tenant checked from the outside as a sender sees it: `mta-stsd
//!    validate` and the daemon's watchdog), [`pgstore`] (cluster mode's PostgreSQL store
//!    behind the report and certificate traits).
//! 4. [`server`] (TCP accept, TLS with SNI checked first, HTTP/1.1 or h2 by ALPN, one handler
//!    per connection), [`metrics`] (the one reader of `stats`; per-tenant series made at
//!    scrape time), [`admin`] (the loopback admin listener: the API, and read-only HTML pages under `/ui/`).
//! 5. [`daemon`] (wiring, one supervisor for every background task), [`cli`] (the command
//!    line; `main.rs` only parses and dispatches).
//!
//! # The path of a request
//! TCP accept (semaphore) → ClientHello read, SNI looked up (unknown → `unrecognized_name`) →
//! handshake with the tenant's certificate → hyper (HTTP/1.1 or h2 from ALPN) →
//! [`http::handle`]: Host → snapshot → 200 with the rendered policy, or 404/405/421.
//!
//! A connection whose SNI is the TLS-RPT report host goes to [`tlsrpt::HttpsIntake`] instead:
//! `POST /tlsrpt/<tenant domain>` → body read under a cap, a deadline and a per-address limit
//! → decode and insert on a blocking thread → 200 once committed. Serving policies never
//! depends on the report store being up.
#![forbid(unsafe_code)]

pub mod accept;
pub mod admin;
pub mod certs;
pub mod cli;
pub mod config;
pub mod daemon;
pub mod dns;
pub mod dnsupdate;
pub mod fsutil;
pub mod http;
pub mod logging;
pub mod metrics;
pub mod pgstore;
pub mod policy;
pub mod probe;
pub mod publish;
pub mod registry;
pub mod reload;
pub mod server;
pub mod stats;
pub mod tlsrpt;
pub mod util;
pub mod validate;
