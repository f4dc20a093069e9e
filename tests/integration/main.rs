//! Integration tests: one test crate (one link step) with a module per area.

mod certs_files;
mod cli;
mod common;
mod config;
mod hostile;
mod property;
mod serve;
mod tlsrpt_cli;
mod tlsrpt_crash;
mod tlsrpt_intake;
