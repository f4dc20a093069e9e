//! Integration tests: one test crate (one link step) with a module per area.

mod common;
mod serve;
