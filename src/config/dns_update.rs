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

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawUpdateTarget {
    server: Spanned<String>,
    zones: Spanned<Vec<Spanned<String>>>,
    key_name: Spanned<String>,
    algorithm: Spanned<String>,
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
