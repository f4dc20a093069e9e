//! The `store:` section of the server file: where cluster mode keeps what replicas share.
//!
//! Without it everything stays on the local files and SQLite. With `store: postgres:` the
//! ACME account, certificates, challenges and TLS-RPT reports live in PostgreSQL and several
//! replicas act as one service.

use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use serde::Deserialize;
use serde_saphyr::{Location, Spanned};

use super::field::{Diags, resolve};

#[derive(Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct RawStore {
    /// Cluster mode on PostgreSQL.
    #[schemars(with = "Option<RawPostgres>")]
    postgres: Option<Spanned<RawPostgres>>,
}

#[derive(Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
struct RawPostgres {
    /// Connection URL, `postgresql://user:password@host:5432/db?sslmode=require`.
    #[schemars(with = "Option<String>")]
    url: Option<Spanned<String>>,
    /// A file holding the URL (a mounted secret); one of `url` and `url_file`.
    #[schemars(with = "Option<String>")]
    url_file: Option<Spanned<String>>,
    /// This replica's name in the cluster; default the host name. `${VAR}` is replaced by
    /// the environment variable `VAR` (e.g. a pod name from the downward API).
    #[schemars(with = "Option<String>")]
    replica_name: Option<Spanned<String>>,
    /// PEM file of the CA that signed the server's certificate, for `sslmode=require` or
    /// `verify-full`; default the system's roots.
    #[schemars(with = "Option<String>")]
    ca_file: Option<Spanned<String>>,
}

/// The PostgreSQL connection URL. It carries the password, so `Debug` never shows it.
#[derive(Clone, PartialEq, Eq)]
pub struct PgUrl(pub String);

impl fmt::Debug for PgUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("PgUrl(<redacted>)")
    }
}

/// Cluster mode on PostgreSQL (`store: postgres:`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PostgresConfig {
    /// Where the database is (read from `url_file` when the file is loaded).
    pub url: PgUrl,
    /// This replica's name, unique in the cluster.
    pub replica_name: String,
    /// Extra trusted root for TLS to the server.
    pub ca_file: Option<PathBuf>,
}

/// Longest replica name: it is a column and a label in metrics.
const MAX_REPLICA_NAME: usize = 63;

/// Compiles `store:`; `None` is the single-node default.
pub(super) fn compile_store(
    raw: Option<&RawStore>,
    dir: &Path,
    d: &mut Diags,
) -> Option<PostgresConfig> {
    let pg = raw?.postgres.as_ref()?;
    let url = compile_url(&pg.value, &pg.referenced, dir, d)?;
    let replica_name = match &pg.value.replica_name {
        Some(name) => expand_env(&name.value, |v| std::env::var(v).ok())
            .and_then(check_replica_name)
            .map_err(|why| d.error(&name.referenced, "store.postgres.replica_name", why))
            .ok()?,
        None => host_name(),
    };
    let ca_file = pg.value.ca_file.as_ref().map(|c| resolve(dir, &c.value));
    Some(PostgresConfig {
        url,
        replica_name,
        ca_file,
    })
}

/// The URL from `url` or `url_file` (exactly one), checked to parse. A parse error never
/// repeats the URL: it holds the password.
fn compile_url(raw: &RawPostgres, at: &Location, dir: &Path, d: &mut Diags) -> Option<PgUrl> {
    let (text, field, at) = match (&raw.url, &raw.url_file) {
        (Some(url), None) => (url.value.clone(), "store.postgres.url", url.referenced),
        (None, Some(file)) => {
            let path = resolve(dir, &file.value);
            match std::fs::read_to_string(&path) {
                Ok(text) => (
                    text.trim().to_owned(),
                    "store.postgres.url_file",
                    file.referenced,
                ),
                Err(e) => {
                    let why = format!("cannot read {}: {e}", path.display());
                    d.error(&file.referenced, "store.postgres.url_file", why);
                    return None;
                }
            }
        }
        (Some(_), Some(file)) => {
            let why = "give either url or url_file, not both".to_owned();
            d.error(&file.referenced, "store.postgres", why);
            return None;
        }
        (None, None) => {
            let why = "needs url or url_file (the PostgreSQL connection URL)".to_owned();
            d.error(at, "store.postgres", why);
            return None;
        }
    };
    if let Err(e) = tokio_postgres::Config::from_str(&text) {
        d.error(&at, field, format!("not a PostgreSQL connection URL: {e}"));
        return None;
    }
    Some(PgUrl(text))
}

/// Replaces each `${VAR}` with the variable's value; an unset variable is an error.
fn expand_env(text: &str, var: impl Fn(&str) -> Option<String>) -> Result<String, String> {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(start) = rest.find("${") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        let end = after
            .find('}')
            .ok_or_else(|| format!("{text:?}: \"${{\" without a closing \"}}\""))?;
        let name = &after[..end];
        let value = var(name).ok_or_else(|| format!("environment variable {name} is not set"))?;
        out.push_str(&value);
        rest = &after[end + 1..];
    }
    out.push_str(rest);
    Ok(out)
}

fn check_replica_name(name: String) -> Result<String, String> {
    let ok = !name.is_empty()
        && name.len() <= MAX_REPLICA_NAME
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_'));
    if ok {
        Ok(name)
    } else {
        Err(format!(
            "{name:?}: 1 to {MAX_REPLICA_NAME} letters, digits, '-', '.' or '_'"
        ))
    }
}

/// The machine's host name, the default replica name (a pod's name in Kubernetes).
fn host_name() -> String {
    let name = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .or_else(|_| std::fs::read_to_string("/etc/hostname"))
        .unwrap_or_default();
    check_replica_name(name.trim().to_owned()).unwrap_or_else(|_| "replica".to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(name: &str) -> Option<String> {
        (name == "POD").then(|| "web-1".to_owned())
    }

    #[test]
    fn variables_expand_and_an_unset_one_is_an_error() {
        assert_eq!(expand_env("${POD}", env).unwrap(), "web-1");
        assert_eq!(expand_env("a-${POD}-b", env).unwrap(), "a-web-1-b");
        assert_eq!(expand_env("plain", env).unwrap(), "plain");
        let unset = expand_env("${NOPE}", env).unwrap_err();
        assert!(unset.contains("NOPE is not set"), "{unset}");
        assert!(expand_env("${POD", env).is_err());
    }

    #[test]
    fn replica_names_are_short_plain_words() {
        assert!(check_replica_name("node-a.1_x".into()).is_ok());
        assert!(check_replica_name(String::new()).is_err());
        assert!(check_replica_name("a b".into()).is_err());
        assert!(check_replica_name("x".repeat(64)).is_err());
        assert!(check_replica_name(host_name()).is_ok());
    }

    #[test]
    fn the_url_is_never_in_debug_output() {
        let url = PgUrl("postgresql://u:hunter2@db/x".into());
        assert!(!format!("{url:?}").contains("hunter2"));
    }
}
