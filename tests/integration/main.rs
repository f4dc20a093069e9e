//! Integration tests: one test crate (one link step) with a module per area.

mod admin;
mod common;
mod live;
mod serve;
