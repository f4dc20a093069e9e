//! Integration tests: one test crate (one link step) with a module per area.

mod certs_files;
mod cli;
mod common;
mod config;
mod deploy;
mod hostile;
mod property;
mod serve;
mod tls;
