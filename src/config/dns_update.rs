//! The `dns_update:` section: RFC 2136 update targets for customer zones the operator already
//! hosts, so mta-stsd keeps each tenant's `_mta-sts` (and `_smtp._tls`) TXT in step itself.

use std::fmt;
use std::net::SocketAddr;
use std::path::Path;

use base64::Engine;
use serde::Deserialize;
use serde_saphyr::Spanned;

use super::field::{Diags, resolve};
use super::names::normalize_hostname;

/// The TSIG algorithms accepted: HMAC-SHA-256 or stronger (RFC 8945 §6 calls SHA-1 legacy).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TsigAlg {
    /// `hmac-sha256`.
    HmacSha256,
    /// `hmac-sha384`.
    HmacSha384,
    /// `hmac-sha512`.
    HmacSha512,
}

#[derive(Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct RawUpdateTarget {
    #[schemars(with = "String")]
    server: Spanned<String>,
    #[schemars(with = "Vec<String>")]
    zones: Spanned<Vec<Spanned<String>>>,
    #[schemars(with = "String")]
    key_name: Spanned<String>,
    #[schemars(with = "String")]
    algorithm: Spanned<String>,
    #[schemars(with = "String")]
    secret_file: Spanned<String>,
    #[serde(default)]
    tlsrpt: bool,
}

/// A TSIG secret: compared, never printed (a `Debug` of the configuration goes to logs).
#[derive(Clone, PartialEq, Eq)]
pub struct TsigSecret(pub Vec<u8>);

impl fmt::Debug for TsigSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("TsigSecret(<redacted>)")
    }
}

/// One primary server and the zones it takes updates for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UpdateTarget {
    /// The primary's address (UDP).
    pub server: SocketAddr,
    /// The zones it covers, lowercase A-labels without the trailing dot.
    pub zones: Vec<String>,
    /// The TSIG key's name, as the server knows it.
    pub key_name: String,
    /// The TSIG algorithm.
    pub algorithm: TsigAlg,
    /// The decoded secret, read from `secret_file` when the file is loaded.
    pub secret: TsigSecret,
    /// Whether `_smtp._tls.<domain>` is written too.
    pub tlsrpt: bool,
}

/// Compiles `dns_update:`; each bad value is an error naming its field.
pub(super) fn compile_dns_update(
    raw: &[RawUpdateTarget],
    dir: &Path,
    d: &mut Diags,
) -> Vec<UpdateTarget> {
    let mut out = Vec::new();
    for (i, raw) in raw.iter().enumerate() {
        let at = |field: &str| format!("dns_update[{i}].{field}");
        let server = d
            .address(&raw.server, &at("server"), "\"192.0.2.53:53\"")
            .unwrap_or(SocketAddr::from(([127, 0, 0, 1], 53)));
        let zones = d.unique_list(&raw.zones.value, &at("zones"), "zone", normalize_hostname);
        if raw.zones.value.is_empty() {
            d.error(
                &raw.zones.referenced,
                &at("zones"),
                "is empty; name the zones this server takes updates for".into(),
            );
        }
        let key_name = parse_key_name(&raw.key_name.value)
            .map_err(|why| d.error(&raw.key_name.referenced, &at("key_name"), why))
            .unwrap_or_default();
        let algorithm = parse_alg(&raw.algorithm.value)
            .map_err(|why| d.error(&raw.algorithm.referenced, &at("algorithm"), why))
            .unwrap_or(TsigAlg::HmacSha256);
        let secret = read_secret(&resolve(dir, &raw.secret_file.value))
            .map_err(|why| d.error(&raw.secret_file.referenced, &at("secret_file"), why))
            .unwrap_or(TsigSecret(Vec::new()));
        out.push(UpdateTarget {
            server,
            zones,
            key_name,
            algorithm,
            secret,
            tlsrpt: raw.tlsrpt,
        });
    }
    out
}

/// A key name is any DNS name, often one label (`mta-stsd.`), so not a host name: labels of
/// letters, digits, `-` and `_`, compared case-insensitively by servers.
fn parse_key_name(text: &str) -> Result<String, String> {
    let name = text.trim_end_matches('.').to_ascii_lowercase();
    let ok_label = |l: &str| {
        (1..=63).contains(&l.len())
            && l.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    };
    if name.is_empty() || name.len() > 253 || !name.split('.').all(ok_label) {
        return Err(format!("{text:?} is not a key name like \"mta-stsd.\""));
    }
    Ok(name)
}

fn parse_alg(text: &str) -> Result<TsigAlg, String> {
    match text.trim_end_matches('.').to_ascii_lowercase().as_str() {
        "hmac-sha256" => Ok(TsigAlg::HmacSha256),
        "hmac-sha384" => Ok(TsigAlg::HmacSha384),
        "hmac-sha512" => Ok(TsigAlg::HmacSha512),
        _ => Err(format!(
            "{text:?} is not accepted; use hmac-sha256, hmac-sha384 or hmac-sha512"
        )),
    }
}

/// The secret as `tsig-keygen` prints it: base64, whitespace allowed around it. The file's
/// content never appears in a message.
fn read_secret(path: &Path) -> Result<TsigSecret, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let key = base64::engine::general_purpose::STANDARD
        .decode(text.trim())
        .map_err(|_| format!("{} does not hold a base64 secret", path.display()))?;
    if key.len() < 16 {
        return Err(format!(
            "the secret in {} is shorter than 16 octets",
            path.display()
        ));
    }
    Ok(TsigSecret(key))
}

#[cfg(test)]
mod tests {
    use super::super::server::{ServerConfig, load_server_config};
    use super::*;

    const BASE: &str = "listen: \"127.0.0.1:0\"\nstate_dir: /var/lib/mta-stsd\nissuer: internal\n";
    /// 32 octets, base64, as `tsig-keygen` prints them.
    const SECRET: &str = "hWXwAHsAJ9ttCpo3ZHRmgNbD6/E6ZmTYnzkSVMjn+Lk=";

    fn load(section: &str, secret: &str) -> Result<ServerConfig, Vec<String>> {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("tsig.key"), secret).unwrap();
        let yaml = format!("{BASE}{section}");
        std::fs::write(dir.path().join("mta-stsd.yaml"), yaml).unwrap();
        load_server_config(dir.path()).map_err(|d| {
            let dir = dir.path().display().to_string();
            d.iter()
                .map(|d| d.to_string().replace(&dir, "DIR"))
                .collect()
        })
    }

    const GOOD: &str = "dns_update:\n  - server: \"127.0.0.1:53\"\n    zones: [Example.COM, example.org]\n    key_name: mta-stsd.\n    algorithm: hmac-sha512\n    secret_file: tsig.key\n    tlsrpt: true\n";

    #[test]
    fn a_target_compiles_its_secret_is_read_and_never_printed_and_it_needs_a_restart() {
        let cfg = load(GOOD, &format!("{SECRET}\n")).unwrap();
        let target = &cfg.dns_update[0];
        assert_eq!(target.zones, vec!["example.com", "example.org"]);
        assert_eq!(target.key_name, "mta-stsd");
        assert_eq!(target.algorithm, TsigAlg::HmacSha512);
        assert_eq!(target.secret.0.len(), 32);
        assert!(target.tlsrpt);
        assert!(!format!("{cfg:?}").contains(SECRET.trim_end_matches('=')));
        let without = load("", SECRET).unwrap();
        assert!(without.dns_update.is_empty(), "off unless present");
        assert!(without.restart_required(&cfg).contains(&"dns_update"));
        assert!(cfg.restart_required(&cfg.clone()).is_empty());
    }

    #[test]
    fn errors_name_file_line_and_field() {
        let bad = "dns_update:\n  - server: nowhere\n    zones: []\n    key_name: \"bad key\"\n    algorithm: hmac-sha1\n    secret_file: missing.key\n";
        let errs = load(bad, SECRET).unwrap_err();
        let want = [
            "DIR/mta-stsd.yaml:5:13: error: dns_update[0].server: ",
            "DIR/mta-stsd.yaml:6:12: error: dns_update[0].zones: is empty",
            "DIR/mta-stsd.yaml:7:15: error: dns_update[0].key_name: ",
            "DIR/mta-stsd.yaml:8:16: error: dns_update[0].algorithm: \"hmac-sha1\" is not accepted",
            "DIR/mta-stsd.yaml:9:18: error: dns_update[0].secret_file: cannot read ",
        ];
        assert_eq!(errs.len(), want.len(), "{errs:#?}");
        for (err, want) in errs.iter().zip(want) {
            assert!(err.starts_with(want), "{err:?} should start with {want:?}");
        }
        let errs = load(GOOD, "not base64 at all!").unwrap_err();
        assert!(
            errs[0].contains("does not hold a base64 secret"),
            "{errs:?}"
        );
        assert!(
            !errs[0].contains("not base64 at all"),
            "the content is never echoed"
        );
        let errs = load(GOOD, "c2hvcnQ=").unwrap_err();
        assert!(errs[0].contains("shorter than 16 octets"), "{errs:?}");
    }
}
