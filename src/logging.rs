//! Log setup: human-readable by default, JSON lines with `--log-format json`.

use tracing_subscriber::EnvFilter;

/// Log output formats.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Human,
    /// One JSON object per line.
    Json,
}

/// Installs the global subscriber writing to stderr. An invalid filter falls back to `info`
/// with a warning rather than failing the start.
pub fn init(format: LogFormat, filter: &str) {
    let filter = quiet_rustls(filter);
    let filter = filter.as_str();
    let (env_filter, bad) = match EnvFilter::try_new(filter) {
        Ok(f) => (f, None),
        Err(e) => (EnvFilter::new("info"), Some(e)),
    };
    let builder = tracing_subscriber::fmt()
        .with_env_filter(env_filter)
        .with_writer(std::io::stderr)
        .with_target(false);
    let _ = match format {
        LogFormat::Human => builder.try_init(),
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
    };
    if let Some(e) = bad {
        tracing::warn!(filter, error = %e, "invalid log filter; using info");
    }
}

/// `filter` with `rustls=error` added unless it names rustls itself. rustls warns, without a
/// label, about every handshake a client abandons ("Received a Alert message while expecting
/// [Handshake]"): a scanner makes dozens. The server counts those by outcome and logs them at
/// debug; `rustls=warn` in the filter brings rustls's own lines back.
fn quiet_rustls(filter: &str) -> String {
    if filter.contains("rustls") || filter.trim().is_empty() {
        filter.to_owned()
    } else {
        format!("{filter},rustls=error")
    }
}

#[cfg(test)]
mod tests {
    use super::quiet_rustls;

    #[test]
    fn rustls_warnings_are_off_unless_asked_for() {
        assert_eq!(quiet_rustls("info"), "info,rustls=error");
        assert_eq!(quiet_rustls(""), "");
        assert_eq!(quiet_rustls("debug,rustls=warn"), "debug,rustls=warn");
    }
}
