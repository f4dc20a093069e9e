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
    let filter = quiet_libraries(filter);
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
/// debug; `rustls=warn` in the filter brings rustls's own lines back. Likewise
/// `hickory_server=error` unless the filter names hickory: it logs every DNS query at info
/// (several lines each; a load test wrote 3.4 million lines in 20 s) and malformed queries
/// at warn, both for anyone to trigger; the DNS metrics count queries by type and rcode.
fn quiet_libraries(filter: &str) -> String {
    if filter.trim().is_empty() {
        return filter.to_owned();
    }
    let mut out = filter.to_owned();
    if !filter.contains("rustls") {
        out.push_str(",rustls=error");
    }
    if !filter.contains("hickory") {
        out.push_str(",hickory_server=error,hickory_proto=error,hickory_net=error");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::quiet_libraries;

    #[test]
    fn rustls_warnings_are_off_unless_asked_for() {
        let hickory = "hickory_server=error,hickory_proto=error,hickory_net=error";
        assert_eq!(
            quiet_libraries("info"),
            format!("info,rustls=error,{hickory}")
        );
        assert_eq!(quiet_libraries(""), "");
        assert_eq!(
            quiet_libraries("debug,rustls=warn"),
            format!("debug,rustls=warn,{hickory}")
        );
        assert_eq!(
            quiet_libraries("info,hickory_server=info"),
            "info,hickory_server=info,rustls=error"
        );
    }
}
