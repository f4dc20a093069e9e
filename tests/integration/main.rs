//! Integration tests: one test crate (one link step) with a module per area.

mod admin;
mod certs_files;
mod cli;
mod common;
mod config;
mod hostile;
mod live;
mod property;
mod serve;
