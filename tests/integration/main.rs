//! Integration tests: one test crate (one link step) with a module per area.

mod acme;
mod common;
mod dns;
mod pebble;
mod serve;
