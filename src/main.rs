//! The `mta-stsd` binary: parses the command line and hands over to the library.

use std::process::ExitCode;

use clap::Parser;
use mta_stsd::cli::{Cli, Command};

/// mimalloc returns freed pages to the system; glibc malloc kept a removed bulk file's
/// hundreds of megabytes resident (docs/benchmark.md has the figures).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    let cli = Cli::parse();
    mta_stsd::logging::init(cli.log_format, &cli.log_level);
    if rustls::crypto::aws_lc_rs::default_provider()
        .install_default()
        .is_err()
    {
        tracing::debug!("a crypto provider was already installed");
    }
    let result = match &cli.command {
        Command::Serve(args) => serve(&args.config),
        other => mta_stsd::cli::run_offline(other, &mut std::io::stdout().lock()),
    };
    match result {
        Ok(code) => code,
        // The reader went away (`mta-stsd dns | head -1`): it has what it wanted, so this is
        // no failure to report. Rust ignores SIGPIPE, which turns it into EPIPE here.
        Err(err) if is_broken_pipe(&err) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("mta-stsd: error: {err:#}");
            ExitCode::FAILURE
        }
    }
}

/// Whether `err` comes from writing to a pipe whose reader has closed it.
fn is_broken_pipe(err: &anyhow::Error) -> bool {
    err.chain().any(|cause| {
        let kind = if let Some(io) = cause.downcast_ref::<std::io::Error>() {
            Some(io.kind())
        } else {
            // serde_json's error hides the io::Error it wraps from `source()`.
            cause
                .downcast_ref::<serde_json::Error>()
                .and_then(serde_json::Error::io_error_kind)
        };
        kind == Some(std::io::ErrorKind::BrokenPipe)
    })
}

fn serve(dir: &std::path::Path) -> anyhow::Result<ExitCode> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        // Memory a blocking thread allocated (a parsed bulk file, issued certificates) and
        // another freed stays in that thread's heap until it exits: with tokio's 10 s default
        // a removed 200 000-tenant file's 440 MiB stayed resident for 10 s, now about 1 s.
        .thread_keep_alive(std::time::Duration::from_secs(1))
        .build()?;
    runtime.block_on(async {
        let daemon = mta_stsd::daemon::Daemon::build(dir)?;
        let listeners = daemon.bind().await?;
        daemon
            .run(listeners, mta_stsd::daemon::shutdown_signal())
            .await;
        Ok(ExitCode::SUCCESS)
    })
}
