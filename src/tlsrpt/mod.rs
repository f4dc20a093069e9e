//! TLS-RPT (RFC 8460) intake: parse, store and summarize the reports senders send to tenants.

pub mod decode;
pub mod mail;
pub mod report;
pub mod store;
pub mod summary;

pub use decode::{Limits, MediaType, decode};
pub use report::{Report, ReportError};

/// Helpers shared by the module's unit tests.
#[cfg(test)]
pub(crate) mod testutil {
    use std::io::Write;

    /// Read `tests/fixtures/tlsrpt/<name>`.
    pub(crate) fn fixture(name: &str) -> Vec<u8> {
        let path = format!(
            "{}/tests/fixtures/tlsrpt/{name}",
            env!("CARGO_MANIFEST_DIR")
        );
        std::fs::read(&path).unwrap_or_else(|e| panic!("reading {path}: {e}"))
    }

    /// Gzip `data` in memory.
    pub(crate) fn gzip(data: &[u8]) -> Vec<u8> {
        let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        enc.write_all(data).unwrap();
        enc.finish().unwrap()
    }
}
