//! mta-stsd: a hosted MTA-STS policy server (skeleton; modules land in the next commits).
#![forbid(unsafe_code)]
pub mod tlsrpt;
