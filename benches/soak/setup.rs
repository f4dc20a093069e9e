//! The configuration the soak runs on: the server file, thousands of tenants in bulk files and
//! one-file-per-tenant files, and what each tenant's policy body must be (computed here, from
//! RFC 8461 §3.2, independently of the daemon's renderer).

use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Instant;

/// The TLS-RPT report host.
pub const REPORT_HOST: &str = "tlsrpt.soak.example";
/// The authserv-id whose `dkim=pass` `ingest-mail` believes.
pub const AUTHSERV_ID: &str = "mx.soak.example";
/// Tenants per bulk file.
pub const BULK_SIZE: usize = 500;
/// MX patterns per tenant in the large version of the large bulk file.
pub const LARGE_MX: usize = 40;

/// Limits written into the server file (the driver's load is sized against them).
pub struct Limits {
    pub max_connections: usize,
    pub header_read_timeout_s: u64,
    pub max_compressed: usize,
    pub max_decompressed: usize,
}

pub const LIMITS: Limits = Limits {
    max_connections: 256,
    header_read_timeout_s: 5,
    max_compressed: 1 << 20,
    max_decompressed: 8 << 20,
};

/// One tenant file: a bulk list or a single tenant; `large` marks the file whose versions
/// alternate between 1 and [`LARGE_MX`] patterns per tenant.
pub struct TenantFile {
    pub path: PathBuf,
    pub bulk: bool,
    pub large: bool,
    /// Indices into [`Layout::domains`].
    pub tenants: Vec<usize>,
}

/// Every tenant and file.
pub struct Layout {
    pub domains: Vec<String>,
    pub files: Vec<TenantFile>,
    /// The file of each tenant (index into `files`).
    pub file_of: Vec<usize>,
}

/// A tenant's policy version: `variant` picks mode, MX names and max_age.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Version {
    pub variant: u32,
    pub large: bool,
}

/// The mode, MX patterns and max_age of a tenant at a version.
pub fn spec(domain: &str, v: Version) -> (&'static str, Vec<String>, u64) {
    let mode = match v.variant % 4 {
        0 | 2 => "enforce",
        1 => "testing",
        _ => "none",
    };
    let mut mx = Vec::new();
    if mode != "none" {
        mx.push(format!("mx{}.{domain}", v.variant));
        mx.push(format!("*.mx.{domain}"));
        if v.large {
            mx.extend((0..LARGE_MX).map(|k| format!("mx{}-{k}.large.{domain}", v.variant)));
        }
    }
    (mode, mx, 604_800 + u64::from(v.variant))
}

/// The policy body RFC 8461 §3.2 prescribes: `version` first, CRLF line endings.
pub fn body(domain: &str, v: Version) -> Vec<u8> {
    let (mode, mx, max_age) = spec(domain, v);
    let mut out = format!("version: STSv1\r\nmode: {mode}\r\n");
    for m in &mx {
        out.push_str(&format!("mx: {m}\r\n"));
    }
    out.push_str(&format!("max_age: {max_age}\r\n"));
    out.into_bytes()
}

/// The policy id the daemon documents: the first 32 hex digits of SHA-256 over the body.
pub fn policy_id(body: &[u8]) -> String {
    let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, body);
    digest.as_ref()[..16]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn yaml_item(domain: &str, v: Version, indent: &str, first: &str) -> String {
    let (mode, mx, max_age) = spec(domain, v);
    let mut out = format!("{first}domain: {domain}\n{indent}mode: {mode}\n");
    if !mx.is_empty() {
        let list: Vec<String> = mx.iter().map(|m| format!("\"{m}\"")).collect();
        out.push_str(&format!("{indent}mx: [{}]\n", list.join(", ")));
    }
    out.push_str(&format!("{indent}max_age: {max_age}\n"));
    out
}

/// The YAML of `file` with every tenant at `v`.
pub fn file_yaml(layout: &Layout, file: &TenantFile, v: Version) -> String {
    let mut out = String::new();
    for &t in &file.tenants {
        let d = &layout.domains[t];
        if file.bulk {
            out.push_str(&yaml_item(d, v, "  ", "- "));
        } else {
            out.push_str(&yaml_item(d, v, "", ""));
        }
    }
    out
}

/// Writes `text` to `path` by rename (a reader never sees half a file). The temporary name
/// starts with a dot, which the daemon skips.
pub fn write_atomic(path: &Path, text: &[u8]) -> std::io::Result<()> {
    let tmp = path.with_file_name(format!(
        ".{}.tmp",
        path.file_name().unwrap().to_string_lossy()
    ));
    std::fs::write(&tmp, text)?;
    std::fs::rename(&tmp, path)
}

/// Lays out `bulk_files` × [`BULK_SIZE`] tenants in bulk files (the last is the large one)
/// and `single` one-tenant files under `tenants_dir`.
pub fn layout(tenants_dir: &Path, bulk_files: usize, single: usize) -> Layout {
    let mut domains = Vec::new();
    let mut files = Vec::new();
    let mut file_of = Vec::new();
    for b in 0..bulk_files {
        let tenants: Vec<usize> = (0..BULK_SIZE)
            .map(|i| {
                domains.push(format!("b{b}-{i}.soak.example"));
                file_of.push(files.len());
                domains.len() - 1
            })
            .collect();
        files.push(TenantFile {
            path: tenants_dir.join(format!("bulk-{b:02}.yaml")),
            bulk: true,
            large: b + 1 == bulk_files,
            tenants,
        });
    }
    for s in 0..single {
        domains.push(format!("s{s}.soak.example"));
        file_of.push(files.len());
        files.push(TenantFile {
            path: tenants_dir.join(format!("s{s}.soak.example.yaml")),
            bulk: false,
            large: false,
            tenants: vec![domains.len() - 1],
        });
    }
    Layout {
        domains,
        files,
        file_of,
    }
}

/// The server file: loopback listeners on fixed ports (the restarted daemon reuses them).
pub fn server_yaml(port: u16, admin_port: u16) -> String {
    let l = &LIMITS;
    format!(
        "listen: \"127.0.0.1:{port}\"\n\
         state_dir: state\n\
         tenants_dir: tenants\n\
         issuer: internal\n\
         limits:\n  max_connections: {}\n  handshake_timeout: 5s\n  header_read_timeout: {}s\n  \
         idle_timeout: 30s\n  max_connection_age: 2m\n  shutdown_grace: 5s\n\
         tlsrpt:\n  report_host: {REPORT_HOST}\n  max_compressed_bytes: {}\n  \
         max_decompressed_bytes: {}\n  tenant_bytes_per_day: 1073741824\n  \
         total_bytes_per_day: 4294967296\n  \
         mail:\n    trusted_authserv_ids: [{AUTHSERV_ID}]\n    require_dkim_pass: true\n\
         admin:\n  listen: \"127.0.0.1:{admin_port}\"\n\
         reload:\n  watch: true\n  debounce: 200ms\n",
        l.max_connections, l.header_read_timeout_s, l.max_compressed, l.max_decompressed
    )
}

/// What a tenant may be served: the current body, and earlier bodies that a fetch started
/// before the change was confirmed (by the admin API) may still get.
pub struct Expect {
    pub version: Version,
    pub current: Vec<u8>,
    /// (body, when the admin API first showed the newer id; `None` while unconfirmed).
    pub earlier: Vec<(Vec<u8>, Option<Instant>)>,
}

/// The expectations of every tenant.
pub struct Expectations {
    pub tenants: Vec<Mutex<Expect>>,
}

impl Expectations {
    pub fn new(layout: &Layout, initial: impl Fn(usize) -> Version) -> Self {
        let tenants = layout
            .domains
            .iter()
            .enumerate()
            .map(|(i, d)| {
                let version = initial(layout.file_of[i]);
                Mutex::new(Expect {
                    version,
                    current: body(d, version),
                    earlier: Vec::new(),
                })
            })
            .collect();
        Expectations { tenants }
    }

    /// Whether `got` is acceptable for tenant `t` from a fetch that started at `started`.
    pub fn accepts(&self, t: usize, started: Instant, got: &[u8]) -> bool {
        let e = self.tenants[t].lock().unwrap();
        e.current == got
            || e.earlier
                .iter()
                .any(|(b, confirmed)| b == got && confirmed.is_none_or(|c| started < c))
    }

    /// Records a new version for `t` (before the file is written): the old body stays
    /// acceptable until [`Expectations::confirm`].
    pub fn change(&self, t: usize, domain: &str, v: Version) {
        let mut e = self.tenants[t].lock().unwrap();
        if e.version == v {
            return;
        }
        let old = std::mem::replace(&mut e.current, body(domain, v));
        e.version = v;
        e.earlier.push((old, None));
    }

    /// The change of `t` is visible (at `at`); bodies older than a minute are forgotten.
    pub fn confirm(&self, t: usize, at: Instant) {
        let mut e = self.tenants[t].lock().unwrap();
        for (_, c) in e.earlier.iter_mut() {
            c.get_or_insert(at);
        }
        e.earlier
            .retain(|(_, c)| c.is_none_or(|c| at.duration_since(c).as_secs() < 60));
    }

    pub fn current_id(&self, t: usize) -> String {
        policy_id(&self.tenants[t].lock().unwrap().current)
    }
}
