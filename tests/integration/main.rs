//! Integration tests: one test crate (one link step) with a module per area.

mod acme;
mod admin;
mod certs_files;
mod cli;
mod common;
mod config;
mod delegated_dns;
mod deploy;
mod dns;
mod dns01;
mod dns_update;
mod hostile;
mod live;
mod observability;
mod packaging;
mod pebble;
mod probe;
mod property;
mod records;
mod recursive_chain;
mod serve;
mod tls;
mod tlsrpt_cli;
mod tlsrpt_crash;
mod tlsrpt_intake;
mod tlsrpt_store;
