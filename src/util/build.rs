//! What this binary was built from, as `build.rs` found it: the package version, the Git
//! commit (or `unknown` from a tree without Git) and whether tracked files had uncommitted
//! changes. `--version`, `mta_stsd_build_info` and `/api/v1/status` all read these.

/// The package version (`Cargo.toml`).
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

/// The short commit hash, or `unknown`.
pub const COMMIT: &str = env!("MTA_STSD_COMMIT");

/// Whether the work tree had uncommitted changes to tracked files (false when unknown).
pub const DIRTY: bool = matches!(env!("MTA_STSD_DIRTY").as_bytes(), b"true");

/// `DIRTY` as a metric label value.
pub const DIRTY_LABEL: &str = if DIRTY { "true" } else { "false" };

/// What `--version` prints after the program name: `0.1.0 (1a2b3c4)`, `0.1.0 (1a2b3c4-dirty)`.
pub const LONG_VERSION: &str = env!("MTA_STSD_LONG_VERSION");
