//! Server YAML → `config::parse_server_config` (parse + compile), what `load_server_config`
//! runs after reading `mta-stsd.yaml`.
//!
//! Properties: an error result carries at least one error; a success carries warnings only,
//! is the same on a second parse (no hidden state), needs no restart against itself, and
//! names its report host in lowercase (the intake compares it with the lowercased SNI).
#![no_main]

use std::path::Path;

use libfuzzer_sys::fuzz_target;
use mta_stsd::config::{SERVER_FILE, parse_server_config};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let dir = Path::new("/nonexistent/mta-stsd-fuzz");
    match parse_server_config(dir, text) {
        Err(diags) => {
            assert!(diags.iter().any(|d| d.is_error()), "{diags:?}");
            for d in &diags {
                assert_eq!(d.file, dir.join(SERVER_FILE));
            }
        }
        Ok(config) => {
            assert!(config.warnings.iter().all(|d| !d.is_error()));
            assert_eq!(config.dir, dir);
            assert!(config.restart_required(&config).is_empty());
            let again = parse_server_config(dir, text).expect("second parse of the same text");
            assert_eq!(config, again);
            if let Some(host) = &config.tlsrpt.report_host {
                assert_eq!(host, &host.to_ascii_lowercase());
            }
        }
    }
});
