//! The `mta-stsd` binary: parses the command line and hands over to the library.

use std::process::ExitCode;

use clap::Parser;
use mta_stsd::cli::{Cli, Command};

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
        Err(err) => {
            eprintln!("mta-stsd: error: {err:#}");
            ExitCode::FAILURE
        }
    }
}

fn serve(dir: &std::path::Path) -> anyhow::Result<ExitCode> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
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
