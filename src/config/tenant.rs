//! Tenant files: one tenant per file, or a list of tenants for bulk operators.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::Deserialize;
use serde_saphyr::Spanned;

use super::field::{Diags, item_field};
use super::names::{normalize_hostname, normalize_mx_pattern, validate_rua};
use super::{Diagnostic, yaml_diagnostic, yaml_options};
use crate::policy::{MAX_AGE_LIMIT, MAX_BODY_BYTES, Mode, Policy};
use crate::util::hash::FastMap;

/// Default `max_age` when a tenant omits it: one week, the least RFC 8461 deployment advice
/// considers useful for `enforce`.
pub const DEFAULT_MAX_AGE: u64 = 604_800;
/// Below this, senders re-fetch more than daily; validators warn.
const WARN_MAX_AGE: u64 = 86_400;
/// Below this in `enforce`, a short outage of the policy host lets downgrades through sooner.
const WARN_MAX_AGE_ENFORCE: u64 = 604_800;
/// Largest tenant file read: a bulk file of 400 000 tenants is about 35 MB.
const MAX_FILE_BYTES: u64 = 64 * 1024 * 1024;

/// One tenant: a mail domain and the MTA-STS policy served for it.
#[derive(Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "Tenant")]
struct RawTenant {
    /// The mail domain; the policy host is `mta-sts.<domain>`.
    #[schemars(with = "String")]
    domain: Spanned<String>,
    /// `enforce`, `testing`, or `none` (withdraw the policy).
    #[schemars(with = "Mode")]
    mode: Spanned<Mode>,
    /// One pattern per MX host; `*.` covers exactly one label. Required unless mode is `none`.
    #[serde(default)]
    #[schemars(with = "Option<MxList>")]
    mx: Option<Spanned<MxList>>,
    /// Policy lifetime: seconds or a duration (`7d`, `1w`); at most 31557600; default 604800.
    #[serde(default)]
    #[schemars(with = "Option<MaxAge>")]
    max_age: Option<Spanned<MaxAge>>,
    /// TLS-RPT addresses for the `_smtp._tls` record.
    #[serde(default)]
    #[schemars(with = "Option<RawTlsRpt>")]
    tlsrpt: Option<Spanned<RawTlsRpt>>,
    /// `true`: withdraw the policy (RFC 8461 §8.3) before the tenant is removed.
    #[serde(default)]
    retire: Option<bool>,
}

#[derive(Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "TenantTlsRpt")]
struct RawTlsRpt {
    /// `mailto:` or `https:` report URIs.
    #[serde(default)]
    #[schemars(with = "Vec<String>")]
    rua: Vec<Spanned<String>>,
}

/// `mx:` as a list of patterns, or one pattern written alone (`mx: mail.example.com`), which
/// means the one-element list: refusing it would only make the operator add brackets.
enum MxList {
    One(String),
    Many(Vec<Spanned<String>>),
}

impl<'de> Deserialize<'de> for MxList {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl<'de> serde::de::Visitor<'de> for Visitor {
            type Value = MxList;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a list of MX patterns (or one pattern)")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<MxList, E> {
                Ok(MxList::One(v.to_owned()))
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(self, s: A) -> Result<MxList, A::Error> {
                Vec::<Spanned<String>>::deserialize(serde::de::value::SeqAccessDeserializer::new(s))
                    .map(MxList::Many)
            }
        }
        d.deserialize_any(Visitor)
    }
}

impl MxList {
    /// The patterns with their positions; a lone pattern is where `mx:`'s value is.
    fn items(&self, at: &Spanned<MxList>) -> Cow<'_, [Spanned<String>]> {
        match self {
            MxList::One(v) => Cow::Owned(vec![Spanned::new(v.clone(), at.referenced, at.defined)]),
            MxList::Many(list) => Cow::Borrowed(list),
        }
    }
}

/// `max_age:` in seconds (`604800`) or as a duration with a unit (`7d`, `1w`); the body always
/// carries seconds.
#[derive(Clone, Copy)]
struct MaxAge(u64);

impl<'de> Deserialize<'de> for MaxAge {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl serde::de::Visitor<'_> for Visitor {
            type Value = MaxAge;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("seconds (604800) or a duration such as \"1d\" or \"1w\"")
            }
            fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<MaxAge, E> {
                Ok(MaxAge(v))
            }
            fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<MaxAge, E> {
                u64::try_from(v).map(MaxAge).map_err(|_| {
                    E::custom(format!(
                        "{v} is negative; give seconds or a duration such as 1d"
                    ))
                })
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<MaxAge, E> {
                let d = crate::util::parse_duration(v).map_err(E::custom)?;
                if d.subsec_nanos() != 0 {
                    return Err(E::custom(format!("{v:?} is not a whole number of seconds")));
                }
                Ok(MaxAge(d.as_secs()))
            }
        }
        d.deserialize_any(Visitor)
    }
}

/// A tenant file holds one mapping or a sequence of mappings; decided by the YAML node so
/// positions stay exact (an untagged enum would lose them).
enum RawDoc {
    One(Box<RawTenant>),
    Many(Vec<RawTenant>),
}

impl<'de> Deserialize<'de> for RawDoc {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl<'de> serde::de::Visitor<'de> for Visitor {
            type Value = RawDoc;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a tenant (mapping) or a list of tenants")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(self, m: A) -> Result<RawDoc, A::Error> {
                RawTenant::deserialize(serde::de::value::MapAccessDeserializer::new(m))
                    .map(|t| RawDoc::One(Box::new(t)))
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(self, s: A) -> Result<RawDoc, A::Error> {
                Vec::<RawTenant>::deserialize(serde::de::value::SeqAccessDeserializer::new(s))
                    .map(RawDoc::Many)
            }
        }
        d.deserialize_any(Visitor)
    }
}

impl schemars::JsonSchema for MxList {
    fn schema_name() -> Cow<'static, str> {
        "MxList".into()
    }
    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({
            "description": "MX patterns (`mail.example.com`, `*.example.net`), or one pattern alone",
            "anyOf": [
                { "type": "string" },
                { "type": "array", "items": { "type": "string" } }
            ]
        })
    }
}

impl schemars::JsonSchema for MaxAge {
    fn schema_name() -> Cow<'static, str> {
        "MaxAge".into()
    }
    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({
            "description": "seconds (604800) or a duration such as \"1d\" or \"1w\"",
            "anyOf": [
                { "type": "integer", "minimum": 0, "maximum": MAX_AGE_LIMIT },
                { "type": "string", "pattern": super::field::DURATION_PATTERN }
            ]
        })
    }
}

impl schemars::JsonSchema for RawDoc {
    fn schema_name() -> Cow<'static, str> {
        "TenantFile".into()
    }
    fn json_schema(g: &mut schemars::SchemaGenerator) -> schemars::Schema {
        let one = g.subschema_for::<RawTenant>();
        schemars::json_schema!({
            "description": "A tenant file: one tenant, or a list of tenants",
            "oneOf": [one, { "type": "array", "items": one }]
        })
    }
}

/// The JSON Schema of a tenant file, from the types it is parsed with.
pub(super) fn raw_schema() -> schemars::Schema {
    schemars::SchemaGenerator::default().into_root_schema_for::<RawDoc>()
}

/// A validated tenant, ready to serve.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Tenant {
    /// The policy domain in lowercase A-labels, e.g. `example.com`.
    pub domain: String,
    /// The policy host, `mta-sts.<domain>`.
    pub host: String,
    /// The rendered policy and its id.
    pub policy: Policy,
    /// TLS-RPT reporting URIs configured for this tenant.
    pub rua: Vec<String>,
    /// The file that defines the tenant, shared by every tenant of that file (a million
    /// tenants in a hundred files are a hundred paths, not a million).
    pub source: Arc<Path>,
    /// The line of the tenant's `domain` value in that file.
    pub line: u64,
    /// The column of the tenant's `domain` value.
    pub column: u64,
    /// `retire: true` in the file: withdraw the policy (RFC 8461 §8.3).
    pub retire: bool,
    /// Set while the tenant is being retired: `policy` is then the `mode: none` policy served
    /// until the window ends (see `reload::retire`).
    pub retiring: Option<Retiring>,
}

/// The window of a tenant being retired, Unix seconds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Retiring {
    /// When the `mode: none` policy was first served.
    pub since: i64,
    /// When the tenant stops being served: `since` plus the longest `max_age` it served.
    pub until: i64,
    /// No tenant file defines it any more (its file was removed): kept from the state directory.
    pub orphan: bool,
}

/// What one file yielded: the tenants that validated and every diagnostic.
#[derive(Clone, Debug, Default)]
pub struct FileTenants {
    /// The file.
    pub file: PathBuf,
    /// Valid tenants, in file order.
    pub tenants: Vec<Tenant>,
    /// Errors and warnings, in file order.
    pub diagnostics: Vec<Diagnostic>,
    /// True when the file could not be read or parsed at all (nothing in it is usable).
    pub failed: bool,
}

/// Reads and validates one tenant file. Only a regular file is read: it is opened without
/// blocking and checked on the open handle, so a FIFO or device put in its place after the
/// caller looked is never read from.
pub fn load_tenant_file(path: &Path) -> FileTenants {
    match read_regular(path) {
        Ok(text) => parse_tenants(path, &text),
        Err(why) => FileTenants::unreadable(path, why),
    }
}

/// The contents of `path` if it is a regular file of at most [`MAX_FILE_BYTES`].
fn read_regular(path: &Path) -> Result<String, String> {
    use std::io::Read;
    use std::os::unix::fs::OpenOptionsExt;
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(path)
        .map_err(|e| format!("cannot read: {e}"))?;
    let meta = file.metadata().map_err(|e| format!("cannot read: {e}"))?;
    if !meta.is_file() {
        let kind = file_kind(&meta);
        return Err(format!("is {kind}, not a regular file; not read"));
    }
    let too_large = || format!("cannot read: file is larger than {MAX_FILE_BYTES} bytes");
    if meta.len() > MAX_FILE_BYTES {
        return Err(too_large());
    }
    let mut text = String::new();
    file.take(MAX_FILE_BYTES + 1)
        .read_to_string(&mut text)
        .map_err(|e| format!("cannot read: {e}"))?;
    if text.len() as u64 > MAX_FILE_BYTES {
        return Err(too_large());
    }
    Ok(text)
}

/// What a directory entry is (`a FIFO`), for an error about one that is not a regular file.
pub fn file_kind(meta: &std::fs::Metadata) -> &'static str {
    use std::os::unix::fs::FileTypeExt;
    let kind = meta.file_type();
    if kind.is_file() {
        "a regular file"
    } else if kind.is_dir() {
        "a directory"
    } else if kind.is_fifo() {
        "a FIFO"
    } else if kind.is_char_device() || kind.is_block_device() {
        "a device"
    } else if kind.is_socket() {
        "a socket"
    } else {
        "a special file"
    }
}

impl FileTenants {
    /// A file that could not be used at all: one error saying why, no tenants.
    pub fn unreadable(path: &Path, why: String) -> FileTenants {
        FileTenants {
            file: path.to_path_buf(),
            tenants: Vec::new(),
            diagnostics: vec![Diagnostic::error(path, 0, 0, "", why)],
            failed: true,
        }
    }
}

/// Parses and validates tenant YAML; `path` is only used to name the file in diagnostics.
pub fn parse_tenants(path: &Path, text: &str) -> FileTenants {
    let mut out = FileTenants {
        file: path.to_path_buf(),
        ..FileTenants::default()
    };
    let raws = match serde_saphyr::from_str_with_options::<RawDoc>(text, yaml_options()) {
        Ok(RawDoc::One(t)) => vec![*t],
        Ok(RawDoc::Many(list)) => list,
        Err(err) => {
            out.diagnostics.push(yaml_diagnostic(path, text, &err));
            out.failed = true;
            return out;
        }
    };
    let many = raws.len() > 1;
    let source: Arc<Path> = Arc::from(path);
    let mut seen: FastMap<String, u64> = FastMap::default();
    for (index, raw) in raws.into_iter().enumerate() {
        let item = many.then_some(index);
        if let Some(tenant) = compile(&source, item, raw, &mut out.diagnostics) {
            if let Some(first) = seen.get(&tenant.domain) {
                out.diagnostics.push(Diagnostic::error(
                    path,
                    tenant.line,
                    tenant.column,
                    &item_field(item, "domain"),
                    format!(
                        "duplicate domain {:?}, already defined at line {first}",
                        tenant.domain
                    ),
                ));
                continue;
            }
            seen.insert(tenant.domain.clone(), tenant.line);
            out.tenants.push(tenant);
        }
    }
    out
}

/// Validates one tenant, part by part in file order; `None` when any part has an error.
fn compile(
    source: &Arc<Path>,
    item: Option<usize>,
    raw: RawTenant,
    diags: &mut Vec<Diagnostic>,
) -> Option<Tenant> {
    let mut d = Diags::with_prefix(source, item, diags);
    let domain = compile_domain(&raw.domain, &mut d);
    let mode = raw.mode.value;
    let mx = compile_mx(&raw, &mut d);
    let max_age = compile_max_age(raw.max_age.as_ref(), mode, &mut d);
    let rua = compile_rua(raw.tlsrpt.as_ref(), &mut d);
    if d.has_errors() {
        return None;
    }
    let domain = domain?;
    let policy = Policy::new(mode, mx, max_age);
    if policy.body.len() > MAX_BODY_BYTES {
        let at = raw
            .mx
            .as_ref()
            .map_or(raw.domain.referenced, |m| m.referenced);
        let message = format!(
            "the policy body would be {} bytes, over the {MAX_BODY_BYTES} bytes senders may refuse (RFC 8461 §3.3); use fewer or wildcard MX patterns",
            policy.body.len()
        );
        d.error(&at, "mx", message);
        return None;
    }
    Some(Tenant {
        host: format!("mta-sts.{domain}"),
        domain,
        policy,
        rua,
        source: source.clone(),
        line: raw.domain.referenced.line(),
        column: raw.domain.referenced.column(),
        retire: raw.retire.unwrap_or(false),
        retiring: None,
    })
}

/// The mail domain, warning when the operator gave the policy host instead.
fn compile_domain(raw: &Spanned<String>, d: &mut Diags) -> Option<String> {
    let domain = normalize_hostname(&raw.value)
        .map_err(|why| d.error(&raw.referenced, "domain", why))
        .ok()?;
    if domain.starts_with("mta-sts.") {
        d.warning(
            &raw.referenced,
            "domain",
            format!(
                "{domain:?} starts with \"mta-sts.\": the policy host will be \"mta-sts.{domain}\"; give the mail domain itself"
            ),
        );
    }
    Some(domain)
}

/// The MX patterns, required unless the mode is `none`.
fn compile_mx(raw: &RawTenant, d: &mut Diags) -> Vec<String> {
    let mode = raw.mode.value;
    let Some(list) = &raw.mx else {
        if mode != Mode::None {
            d.error(
                &raw.mode.referenced,
                "mx",
                format!("missing: at least one MX pattern is required in mode {mode}"),
            );
        }
        return Vec::new();
    };
    let items = list.value.items(list);
    let mx = d.unique_list(&items, "mx", "MX pattern", normalize_mx_pattern);
    if items.is_empty() && mode != Mode::None {
        d.error(
            &list.referenced,
            "mx",
            format!("at least one MX pattern is required in mode {mode}"),
        );
    }
    mx
}

/// `max_age`: above the RFC limit an error; short for the mode a warning.
fn compile_max_age(raw: Option<&Spanned<MaxAge>>, mode: Mode, d: &mut Diags) -> u64 {
    let Some(value) = raw else {
        return DEFAULT_MAX_AGE;
    };
    let (v, at) = (value.value.0, &value.referenced);
    if v > MAX_AGE_LIMIT {
        d.error(
            at,
            "max_age",
            format!("{v} is above the RFC 8461 limit of {MAX_AGE_LIMIT} seconds"),
        );
    } else if mode == Mode::Enforce && v < WARN_MAX_AGE_ENFORCE {
        d.warning(
            at,
            "max_age",
            format!(
                "{v} seconds is short for enforce mode; at least {WARN_MAX_AGE_ENFORCE} (one week) is recommended"
            ),
        );
    } else if v < WARN_MAX_AGE {
        d.warning(
            at,
            "max_age",
            format!(
                "{v} seconds is less than a day; senders will re-fetch often and be less protected"
            ),
        );
    }
    v
}

/// The tenant's TLS-RPT addresses; a `tlsrpt:` section must name at least one.
fn compile_rua(raw: Option<&Spanned<RawTlsRpt>>, d: &mut Diags) -> Vec<String> {
    let Some(tlsrpt) = raw else {
        return Vec::new();
    };
    let rua = d.unique_list(&tlsrpt.value.rua, "tlsrpt.rua", "URI", validate_rua);
    if tlsrpt.value.rua.is_empty() {
        d.error(
            &tlsrpt.referenced,
            "tlsrpt.rua",
            "needs at least one mailto: or https: URI (or remove tlsrpt)".into(),
        );
    }
    rua
}

/// Whether a directory entry's name is a tenant file's: `*.yaml` or `*.yml`, hidden names
/// skipped (Kubernetes keeps `..data` and timestamped folders beside the visible links, editors
/// their `.a.yaml.swp`). The tenant cache reads such files in path order, so "first definition
/// wins" is the same on every machine.
pub fn is_tenant_file_name(name: &str) -> bool {
    !name.starts_with('.') && (name.ends_with(".yaml") || name.ends_with(".yml"))
}

/// The validated tenant table of a whole configuration.
#[derive(Clone, Debug, Default)]
pub struct TenantSet {
    /// Tenants by policy host (`mta-sts.<domain>`).
    pub tenants: Vec<Arc<Tenant>>,
    /// Every diagnostic of every file, in file order.
    pub diagnostics: Vec<Diagnostic>,
}

impl TenantSet {
    /// Whether any error was found.
    pub fn has_errors(&self) -> bool {
        self.diagnostics.iter().any(Diagnostic::is_error)
    }
}

/// Merges per-file results, given in path order, into one table. A domain defined in two
/// files stays with the first file (by path order) and the second gets an error naming both.
pub fn assemble(files: Vec<FileTenants>) -> TenantSet {
    let shared: Vec<(Vec<Arc<Tenant>>, Vec<Diagnostic>)> = files
        .into_iter()
        .map(|f| (f.tenants.into_iter().map(Arc::new).collect(), f.diagnostics))
        .collect();
    assemble_shared(shared.iter().map(|(t, d)| (t.as_slice(), d.as_slice())))
}

/// [`assemble`] over tenants that are already shared, file by file in path order: the
/// reloader keeps each file's tenants behind `Arc`s, so a load of 100 000 tenants copies
/// pointers rather than policies. The same [`Claims`] the reloader keeps decide duplicates.
pub fn assemble_shared<'a>(
    files: impl IntoIterator<Item = (&'a [Arc<Tenant>], &'a [Diagnostic])>,
) -> TenantSet {
    let mut claims = Claims::default();
    let mut served: FastMap<String, Arc<Tenant>> = FastMap::default();
    let mut files_seen: Vec<(&'a [Arc<Tenant>], &'a [Diagnostic])> = Vec::new();
    for (tenants, diagnostics) in files {
        if let Some(first) = tenants.first() {
            let lookup = |h: &str| served.get(h).cloned();
            for change in claims.redefine_file(&first.source, &[], tenants, &lookup) {
                match change.after {
                    Some(t) => served.insert(change.host, t),
                    None => served.remove(&change.host),
                };
            }
        }
        files_seen.push((tenants, diagnostics));
    }
    let mut set = TenantSet::default();
    for (tenants, diagnostics) in files_seen {
        set.diagnostics.extend_from_slice(diagnostics);
        let Some(first) = tenants.first() else {
            continue;
        };
        set.diagnostics.extend(claims.duplicates(&first.source));
        let owned = |t: &&Arc<Tenant>| served.get(&t.host).is_some_and(|s| Arc::ptr_eq(s, t));
        set.tenants.extend(tenants.iter().filter(owned).cloned());
    }
    set
}

/// One served tenant changing: added (`before` is `None`), removed (`after` is `None`) or
/// replaced.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Served {
    /// The policy host.
    pub host: String,
    /// What was served.
    pub before: Option<Arc<Tenant>>,
    /// What is served from now on.
    pub after: Option<Arc<Tenant>>,
}

/// Who serves a domain that several files define: the first file in path order; every other
/// definition gets an error naming it. Kept across reloads, so a change of one file costs
/// O(that file's tenants): only contested domains are stored, and the served table (the
/// caller's) answers for the rest.
#[derive(Debug, Default)]
pub struct Claims {
    /// Every definition of a domain defined in more than one file, sorted by file.
    contested: FastMap<String, Vec<Arc<Tenant>>>,
    /// The duplicate errors of each file, by domain.
    errors: BTreeMap<PathBuf, BTreeMap<String, Diagnostic>>,
}

impl Claims {
    /// `file` now defines `new` instead of `old` (its previous tenants); `served` answers which
    /// tenant a host serves now. Returns the served-table changes, one per host at most.
    pub fn redefine_file(
        &mut self,
        file: &Path,
        old: &[Arc<Tenant>],
        new: &[Arc<Tenant>],
        served: &dyn Fn(&str) -> Option<Arc<Tenant>>,
    ) -> Vec<Served> {
        let before: FastMap<&str, &Arc<Tenant>> =
            old.iter().map(|t| (t.domain.as_str(), t)).collect();
        let after: FastMap<&str, &Arc<Tenant>> =
            new.iter().map(|t| (t.domain.as_str(), t)).collect();
        let mut out = Vec::new();
        let gone = old
            .iter()
            .filter(|t| !after.contains_key(t.domain.as_str()));
        for t in gone {
            out.extend(self.redefine(file, t, None, served));
        }
        for t in new {
            let same = before
                .get(t.domain.as_str())
                .is_some_and(|o| Arc::ptr_eq(o, t) || ***o == **t);
            if !same {
                out.extend(self.redefine(file, t, Some(t.clone()), served));
            }
        }
        out
    }

    /// Takes over the duplicates of a table already built (by [`assemble_shared`]): every
    /// defined tenant, and `served` for the one each host serves. Costs a lookup per tenant.
    pub fn adopt<'a>(
        &mut self,
        tenants: impl Iterator<Item = &'a Arc<Tenant>>,
        served: &dyn Fn(&str) -> Option<Arc<Tenant>>,
    ) {
        for t in tenants {
            if !served(&t.host).is_some_and(|s| Arc::ptr_eq(&s, t)) {
                self.redefine(&t.source, t, Some(t.clone()), served);
            }
        }
    }

    /// `file`'s definition of `like`'s domain becomes `next` (`None`: it has none).
    fn redefine(
        &mut self,
        file: &Path,
        like: &Tenant,
        next: Option<Arc<Tenant>>,
        served: &dyn Fn(&str) -> Option<Arc<Tenant>>,
    ) -> Option<Served> {
        let owner = served(&like.host);
        let mut defs = match self.contested.remove(&like.domain) {
            Some(defs) => defs,
            None => owner.iter().cloned().collect(),
        };
        for t in defs.iter().skip(1) {
            self.forget_error(&t.source, &like.domain);
        }
        defs.retain(|t| *t.source != *file);
        if let Some(t) = next {
            let at = defs.partition_point(|d| d.source < t.source);
            defs.insert(at, t);
        }
        let first = defs.first().cloned();
        if let Some(owner) = &first {
            for t in defs.iter().skip(1) {
                self.note_error(t, &owner.source);
            }
        }
        if defs.len() > 1 {
            self.contested.insert(like.domain.clone(), defs);
        }
        let same = match (&owner, &first) {
            (Some(a), Some(b)) => Arc::ptr_eq(a, b),
            (None, None) => true,
            _ => false,
        };
        (!same).then(|| Served {
            host: like.host.clone(),
            before: owner,
            after: first,
        })
    }

    fn note_error(&mut self, t: &Tenant, owner: &Path) {
        let error = Diagnostic::error(
            &t.source,
            t.line,
            t.column,
            "domain",
            format!(
                "duplicate domain {:?}: already defined in {}",
                t.domain,
                owner.display()
            ),
        );
        self.errors
            .entry(t.source.to_path_buf())
            .or_default()
            .insert(t.domain.clone(), error);
    }

    fn forget_error(&mut self, file: &Path, domain: &str) {
        if let Some(errors) = self.errors.get_mut(file) {
            errors.remove(domain);
            if errors.is_empty() {
                self.errors.remove(file);
            }
        }
    }

    /// The duplicate errors of `file`, in the order of its lines.
    pub fn duplicates(&self, file: &Path) -> Vec<Diagnostic> {
        let mut list: Vec<Diagnostic> = self
            .errors
            .get(file)
            .into_iter()
            .flat_map(|e| e.values().cloned())
            .collect();
        list.sort_by_key(|d| (d.line, d.column));
        list
    }

    /// The files that have duplicate errors, in path order.
    pub fn files_with_errors(&self) -> impl Iterator<Item = &Path> {
        self.errors.keys().map(PathBuf::as_path)
    }
}
