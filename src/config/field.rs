//! What every section's compile step shares: durations, the diagnostics sink with its
//! position and field naming, and the checks for optional values with a default and bounds.

use std::fmt::{Debug, Display};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use serde_saphyr::{Location, Spanned};

use super::Diagnostic;

/// A duration written as seconds (`30`) or with a unit (`500ms`, `10s`, `5m`, `1h`, `1d`,
/// `1w`): [`crate::util::parse_duration`], the one grammar every duration uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Dur(pub(super) Duration);

impl<'de> Deserialize<'de> for Dur {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl serde::de::Visitor<'_> for Visitor {
            type Value = Dur;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a duration such as 30, \"500ms\", \"10s\", \"5m\", \"1h\" or \"1d\"")
            }
            fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<Dur, E> {
                Ok(Dur(Duration::from_secs(v)))
            }
            fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<Dur, E> {
                u64::try_from(v)
                    .map(|s| Dur(Duration::from_secs(s)))
                    .map_err(|_| E::custom("a duration cannot be negative"))
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Dur, E> {
                crate::util::parse_duration(v).map(Dur).map_err(E::custom)
            }
        }
        d.deserialize_any(Visitor)
    }
}

/// What [`crate::util::parse_duration`] accepts, as a JSON Schema `pattern`.
pub(super) const DURATION_PATTERN: &str = r"^\s*[0-9]+\s*(ms|s|m|h|d|w)?\s*$";

impl schemars::JsonSchema for Dur {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "Duration".into()
    }
    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({
            "description": "seconds (30) or a duration with a unit: ms, s, m, h, d, w (\"500ms\", \"5m\", \"1d\")",
            "anyOf": [
                { "type": "integer", "minimum": 0 },
                { "type": "string", "pattern": DURATION_PATTERN }
            ]
        })
    }
}

/// An optional duration, `default` when absent. Values below `floor` are raised to it
/// silently: a zero timer would fire at once, which no setting means.
pub(super) fn duration_or(value: Option<Dur>, floor: Duration, default: Duration) -> Duration {
    value.map_or(default, |Dur(d)| d.max(floor))
}

/// A name server as `address:port`, or a bare address on port 53 (ACME preflight, DKIM).
pub(super) fn nameserver(text: &str) -> Result<SocketAddr, String> {
    let text = text.trim();
    text.parse::<SocketAddr>()
        .or_else(|_| {
            text.parse::<std::net::IpAddr>()
                .map(|ip| SocketAddr::new(ip, 53))
        })
        .map_err(|_| format!("{text:?} is not an IP address or address:port"))
}

/// A path from the configuration: absolute as written, relative ones against the
/// configuration directory whatever the working directory.
pub(super) fn resolve(dir: &Path, path: &str) -> PathBuf {
    let path = Path::new(path);
    if path.is_absolute() {
        path.to_path_buf()
    } else {
        dir.join(path)
    }
}

/// The bounds of a numeric field, each with its wording when violated.
#[derive(Clone, Copy, Debug)]
pub(super) enum Bounds<T> {
    /// `lo` or more: "must be at least {lo}".
    AtLeast(T),
    /// `lo..=hi`: "{value} is outside {lo}..={hi}".
    Within(T, T),
}

impl<T: PartialOrd + Display + Copy> Bounds<T> {
    /// The value when inside, or the nearest bound and the message when not.
    fn check(self, value: T) -> Result<T, (T, String)> {
        match self {
            Bounds::AtLeast(lo) if value < lo => Err((lo, format!("must be at least {lo}"))),
            Bounds::Within(lo, hi) if value < lo || value > hi => {
                let nearest = if value < lo { lo } else { hi };
                Err((nearest, format!("{value} is outside {lo}..={hi}")))
            }
            _ => Ok(value),
        }
    }
}

/// `field` of the tenant at `item` of a bulk file (`[3].mx`), or as written.
pub(super) fn item_field(item: Option<usize>, field: &str) -> String {
    match item {
        Some(i) => format!("[{i}].{field}"),
        None => field.to_owned(),
    }
}

/// Where one file's (or one tenant's) diagnostics go, with the file and the field prefix
/// (`[3].` for the fourth tenant of a bulk file) applied to each.
pub(super) struct Diags<'a> {
    file: &'a Path,
    /// The tenant's index in a bulk file. Kept as a number and written out only with a
    /// diagnostic: formatting it for every valid tenant was a measurable part of a parse.
    item: Option<usize>,
    list: &'a mut Vec<Diagnostic>,
    errors: usize,
}

impl<'a> Diags<'a> {
    /// Diagnostics for `file`, fields named as written.
    pub(super) fn new(file: &'a Path, list: &'a mut Vec<Diagnostic>) -> Self {
        Diags::with_prefix(file, None, list)
    }

    /// Diagnostics for `file`, every field name preceded by `[item].` when given.
    pub(super) fn with_prefix(
        file: &'a Path,
        item: Option<usize>,
        list: &'a mut Vec<Diagnostic>,
    ) -> Self {
        Diags {
            file,
            item,
            list,
            errors: 0,
        }
    }

    /// The file the diagnostics name.
    pub(super) fn file(&self) -> &'a Path {
        self.file
    }

    /// Records an error at `at`.
    pub(super) fn error(&mut self, at: &Location, field: &str, message: String) {
        let field = item_field(self.item, field);
        let (line, column) = (at.line(), at.column());
        self.list
            .push(Diagnostic::error(self.file, line, column, &field, message));
        self.errors += 1;
    }

    /// Records a warning at `at`.
    pub(super) fn warning(&mut self, at: &Location, field: &str, message: String) {
        let field = item_field(self.item, field);
        let (line, column) = (at.line(), at.column());
        self.list.push(Diagnostic::warning(
            self.file, line, column, &field, message,
        ));
    }

    /// Whether an error was recorded through this sink (earlier entries of the list aside).
    pub(super) fn has_errors(&self) -> bool {
        self.errors > 0
    }

    /// An optional number: `default` when absent; outside `bounds` an error, and the nearest
    /// bound so the rest of the section still compiles.
    pub(super) fn ranged<T: PartialOrd + Display + Copy>(
        &mut self,
        value: Option<&Spanned<T>>,
        field: &str,
        bounds: Bounds<T>,
        default: T,
    ) -> T {
        let Some(v) = value else {
            return default;
        };
        bounds.check(v.value).unwrap_or_else(|(nearest, message)| {
            self.error(&v.referenced, field, message);
            nearest
        })
    }

    /// An `address:port` value; `example` completes the message "(e.g. …)".
    pub(super) fn address(
        &mut self,
        value: &Spanned<String>,
        field: &str,
        example: &str,
    ) -> Option<SocketAddr> {
        let parsed = value.value.parse::<SocketAddr>();
        if parsed.is_err() {
            let message = format!("{:?} is not an address:port (e.g. {example})", value.value);
            self.error(&value.referenced, field, message);
        }
        parsed.ok()
    }

    /// Each item of a list through `parse`; a failure is an error at the item, named
    /// `field[i]`, and the item is left out.
    pub(super) fn list<T>(
        &mut self,
        items: &[Spanned<String>],
        field: &str,
        parse: impl Fn(&str) -> Result<T, String>,
    ) -> Vec<T> {
        let mut out = Vec::with_capacity(items.len());
        for (i, item) in items.iter().enumerate() {
            match parse(&item.value) {
                Ok(v) => out.push(v),
                Err(why) => self.error(&item.referenced, &format!("{field}[{i}]"), why),
            }
        }
        out
    }

    /// [`Diags::list`] that also refuses a repeated value: "duplicate {what} {value:?}".
    pub(super) fn unique_list<T: PartialEq + Debug>(
        &mut self,
        items: &[Spanned<String>],
        field: &str,
        what: &str,
        parse: impl Fn(&str) -> Result<T, String>,
    ) -> Vec<T> {
        let mut out: Vec<T> = Vec::with_capacity(items.len());
        for (i, item) in items.iter().enumerate() {
            let message = match parse(&item.value) {
                Ok(v) if out.contains(&v) => format!("duplicate {what} {v:?}"),
                Ok(v) => {
                    out.push(v);
                    continue;
                }
                Err(why) => why,
            };
            self.error(&item.referenced, &format!("{field}[{i}]"), message);
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Deserialize)]
    struct Raw {
        #[serde(default)]
        n: Option<Spanned<u32>>,
        #[serde(default)]
        list: Vec<Spanned<String>>,
    }

    fn raw(yaml: &str) -> Raw {
        serde_saphyr::from_str(yaml).unwrap()
    }

    fn rendered(diags: &[Diagnostic]) -> Vec<String> {
        diags.iter().map(ToString::to_string).collect()
    }

    #[test]
    fn durations_default_when_absent_and_stay_above_the_floor() {
        let floor = Duration::from_millis(10);
        let default = Duration::from_secs(5);
        assert_eq!(duration_or(None, floor, default), default);
        let one_ms = Some(Dur(Duration::from_millis(1)));
        assert_eq!(duration_or(one_ms, floor, default), floor);
        let two_s = Some(Dur(Duration::from_secs(2)));
        assert_eq!(duration_or(two_s, floor, default), Duration::from_secs(2));
    }

    #[test]
    fn ranged_value_inside_is_kept() {
        let mut list = Vec::new();
        let mut d = Diags::new(Path::new("f.yaml"), &mut list);
        let r = raw("n: 30\n");
        assert_eq!(d.ranged(r.n.as_ref(), "n", Bounds::Within(1, 365), 7), 30);
        assert_eq!(d.ranged(r.n.as_ref(), "n", Bounds::AtLeast(1), 7), 30);
        assert!(!d.has_errors());
        assert!(list.is_empty());
    }

    #[test]
    fn ranged_value_absent_is_the_default() {
        let mut list = Vec::new();
        let mut d = Diags::new(Path::new("f.yaml"), &mut list);
        let r = raw("list: []\n");
        assert_eq!(d.ranged(r.n.as_ref(), "n", Bounds::Within(1, 365), 7), 7);
        assert!(list.is_empty());
    }

    #[test]
    fn ranged_value_outside_is_an_error_with_position() {
        let mut list = Vec::new();
        let mut d = Diags::new(Path::new("f.yaml"), &mut list);
        let low = raw("\nn: 0\n");
        let high = raw("n: 400\n");
        let b = Bounds::Within(1, 365);
        assert_eq!(d.ranged(low.n.as_ref(), "x.n", b, 7), 1);
        assert_eq!(d.ranged(high.n.as_ref(), "x.n", b, 7), 365);
        let small = raw("n: 100\n");
        assert_eq!(
            d.ranged(small.n.as_ref(), "x.m", Bounds::AtLeast(8192), 0),
            8192
        );
        assert!(d.has_errors());
        assert_eq!(
            rendered(&list),
            [
                "f.yaml:2:4: error: x.n: 0 is outside 1..=365",
                "f.yaml:1:4: error: x.n: 400 is outside 1..=365",
                "f.yaml:1:4: error: x.m: must be at least 8192",
            ]
        );
    }

    #[test]
    fn prefix_names_the_tenant_and_warnings_are_not_errors() {
        let mut list = Vec::new();
        let mut d = Diags::with_prefix(Path::new("t.yaml"), Some(2), &mut list);
        let r = raw("n: 1\n");
        let at = r.n.as_ref().unwrap().referenced;
        d.warning(&at, "max_age", "short".into());
        assert!(!d.has_errors());
        d.error(&at, "mx", "bad".into());
        assert!(d.has_errors());
        assert_eq!(
            rendered(&list),
            [
                "t.yaml:1:4: warning: [2].max_age: short",
                "t.yaml:1:4: error: [2].mx: bad",
            ]
        );
    }

    #[test]
    fn lists_name_each_bad_item_and_refuse_repeats() {
        let mut list = Vec::new();
        let mut d = Diags::new(Path::new("f.yaml"), &mut list);
        let r = raw("list: [a, B, \"\", b]\n");
        let parse = |s: &str| {
            (!s.is_empty())
                .then(|| s.to_ascii_lowercase())
                .ok_or_else(|| "is empty".to_owned())
        };
        assert_eq!(d.list(&r.list, "l", parse), ["a", "b", "b"]);
        assert_eq!(d.unique_list(&r.list, "u", "name", parse), ["a", "b"]);
        assert_eq!(
            rendered(&list),
            [
                "f.yaml:1:14: error: l[2]: is empty",
                "f.yaml:1:14: error: u[2]: is empty",
                "f.yaml:1:18: error: u[3]: duplicate name \"b\"",
            ]
        );
    }

    #[test]
    fn addresses() {
        let mut list = Vec::new();
        let mut d = Diags::new(Path::new("f.yaml"), &mut list);
        let r = raw("list: [\"127.0.0.1:80\", nowhere]\n");
        let example = "\"0.0.0.0:80\"";
        assert_eq!(
            d.address(&r.list[0], "listen", example),
            Some(SocketAddr::from(([127, 0, 0, 1], 80)))
        );
        assert_eq!(d.address(&r.list[1], "listen", example), None);
        assert_eq!(
            rendered(&list),
            [
                "f.yaml:1:24: error: listen: \"nowhere\" is not an address:port (e.g. \"0.0.0.0:80\")"
            ]
        );
    }
}
