//! `mta-stsd completions SHELL`, `mta-stsd man` and `mta-stsd schema`: shell completion
//! scripts, man pages and the configuration files' JSON Schemas, generated from the same
//! definitions the binary parses with, so they cannot drift from it.

use std::io::Write;
use std::path::Path;
use std::process::ExitCode;

use clap::CommandFactory;

/// Writes the completion script for `shell` to `out`.
pub(super) fn completions(
    shell: clap_complete::Shell,
    out: &mut dyn Write,
) -> anyhow::Result<ExitCode> {
    let mut command = super::Cli::command();
    clap_complete::generate(shell, &mut command, "mta-stsd", out);
    out.flush()?;
    Ok(ExitCode::SUCCESS)
}

/// Writes `mta-stsd(1)` (roff) to `out`; with `dir`, writes it and one page per subcommand
/// (`mta-stsd-serve.1`, …) into that directory instead and names each file on `out`.
pub(super) fn man(dir: Option<&Path>, out: &mut dyn Write) -> anyhow::Result<ExitCode> {
    let command = super::Cli::command();
    match dir {
        None => clap_mangen::Man::new(command).render(out)?,
        Some(dir) => {
            std::fs::create_dir_all(dir)
                .map_err(|e| anyhow::anyhow!("creating {}: {e}", dir.display()))?;
            clap_mangen::generate_to(command, dir)
                .map_err(|e| anyhow::anyhow!("writing man pages to {}: {e}", dir.display()))?;
            let mut pages: Vec<_> = std::fs::read_dir(dir)?
                .filter_map(Result::ok)
                .map(|e| e.path())
                .filter(|p| p.extension().is_some_and(|x| x == "1"))
                .collect();
            pages.sort();
            for page in pages {
                writeln!(out, "{}", page.display())?;
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Writes the JSON Schema of a tenant file or of the server file to `out`, pretty-printed
/// with a final newline (the files under `schema/` are this output).
pub(super) fn schema(kind: super::SchemaKind, out: &mut dyn Write) -> anyhow::Result<ExitCode> {
    let schema = match kind {
        super::SchemaKind::Tenant => crate::config::tenant_schema(),
        super::SchemaKind::Server => crate::config::server_schema(),
    };
    serde_json::to_writer_pretty(&mut *out, &schema)?;
    writeln!(out)?;
    out.flush()?;
    Ok(ExitCode::SUCCESS)
}
