//! The one tenant loader: the last result of every tenant file, re-read only when its stamp
//! changes. The daemon keeps one across reloads; the CLI builds one for a single load.

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::config::{self, Diagnostic, FileTenants, ServerConfig, Tenant, TenantSet};

/// Identity and timestamps of a file (following symlinks): any write, rename-over or
/// ConfigMap swap changes at least one of them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Stamp {
    dev: u64,
    ino: u64,
    len: u64,
    mtime: (i64, i64),
    ctime: (i64, i64),
}

impl Stamp {
    fn of(meta: &std::fs::Metadata) -> Stamp {
        Stamp {
            dev: meta.dev(),
            ino: meta.ino(),
            len: meta.len(),
            mtime: (meta.mtime(), meta.mtime_nsec()),
            ctime: (meta.ctime(), meta.ctime_nsec()),
        }
    }
}

/// The cached state of one tenant file.
#[derive(Clone, Debug)]
struct CachedFile {
    stamp: Stamp,
    /// Tenants served from this file: the new valid ones plus, while the file has errors, the
    /// last good version of those that no longer validate.
    tenants: Vec<Arc<Tenant>>,
    /// Diagnostics of the current file contents.
    diagnostics: Vec<Diagnostic>,
    /// Domains served from the last good version.
    stale: Vec<String>,
}

impl CachedFile {
    /// Combines a fresh parse with the previous state: errors never remove a tenant that was
    /// served; only a clean file (or deleting the file) does.
    fn merge(previous: Option<&CachedFile>, parsed: FileTenants, stamp: Stamp) -> CachedFile {
        let has_errors = parsed.diagnostics.iter().any(Diagnostic::is_error);
        let mut tenants: Vec<Arc<Tenant>> = parsed.tenants.into_iter().map(Arc::new).collect();
        let mut stale = Vec::new();
        if has_errors && let Some(prev) = previous {
            let fresh: HashSet<&str> = tenants.iter().map(|t| t.domain.as_str()).collect();
            let kept: Vec<Arc<Tenant>> = prev
                .tenants
                .iter()
                .filter(|t| !fresh.contains(t.domain.as_str()))
                .cloned()
                .collect();
            stale = kept.iter().map(|t| t.domain.clone()).collect();
            tenants.extend(kept);
        }
        CachedFile {
            stamp,
            tenants,
            diagnostics: parsed.diagnostics,
            stale,
        }
    }

    fn same_result(&self, other: &CachedFile) -> bool {
        self.tenants == other.tenants
            && self.diagnostics == other.diagnostics
            && self.stale == other.stale
    }
}

/// What [`TenantCache::refresh`] found.
#[derive(Debug, Default)]
pub struct Refresh {
    /// Files read and parsed again.
    pub reparsed: usize,
    /// Files whose result differs (including added and removed files).
    pub changed_files: Vec<PathBuf>,
    /// Diagnostics of the files parsed again, to log once.
    pub new_diagnostics: Vec<Diagnostic>,
}

/// The last result of every tenant file of a directory.
#[derive(Debug, Default)]
pub struct TenantCache {
    files: BTreeMap<PathBuf, CachedFile>,
}

impl TenantCache {
    /// Brings the cache in step with `dir`. An unreadable directory is an error and leaves the
    /// cache as it was (a directory being replaced must not unload every tenant).
    pub fn refresh(&mut self, dir: &Path) -> Result<Refresh, Diagnostic> {
        let entries = std::fs::read_dir(dir).map_err(|e| {
            Diagnostic::error(dir, 0, 0, "", format!("cannot read tenants directory: {e}"))
        })?;
        let mut refresh = Refresh::default();
        let mut seen = BTreeSet::new();
        for entry in entries.filter_map(Result::ok) {
            let path = entry.path();
            if self.update(&path, &mut refresh) {
                seen.insert(path);
            }
        }
        let gone: Vec<PathBuf> = self
            .files
            .keys()
            .filter(|p| !seen.contains(*p))
            .cloned()
            .collect();
        for path in gone {
            self.files.remove(&path);
            refresh.changed_files.push(path);
        }
        Ok(refresh)
    }

    /// Looks at the named files of `dir` only (what the watcher saw change): a one-file edit
    /// then costs one `stat` and one parse however many files the directory holds.
    pub fn refresh_files(&mut self, dir: &Path, paths: &BTreeSet<PathBuf>) -> Refresh {
        let mut refresh = Refresh::default();
        for path in paths.iter().filter(|p| p.parent() == Some(dir)) {
            if !self.update(path, &mut refresh) && self.files.remove(path).is_some() {
                refresh.changed_files.push(path.clone());
            }
        }
        refresh
    }

    /// Re-reads `path` if its stamp changed. Returns whether it is a tenant file that exists.
    fn update(&mut self, path: &Path, refresh: &mut Refresh) -> bool {
        if !config::is_tenant_file(path) {
            return false;
        }
        // Stat before reading: if the file changes in between, the stored stamp is older than
        // the contents and the next event reads it again.
        let Ok(meta) = std::fs::metadata(path) else {
            return false;
        };
        let stamp = Stamp::of(&meta);
        let previous = self.files.get(path);
        if previous.is_some_and(|p| p.stamp == stamp) {
            return true;
        }
        let parsed = config::load_tenant_file(path);
        refresh.reparsed += 1;
        refresh
            .new_diagnostics
            .extend(parsed.diagnostics.iter().cloned());
        let next = CachedFile::merge(previous, parsed, stamp);
        if previous.is_none_or(|p| !p.same_result(&next)) {
            refresh.changed_files.push(path.to_path_buf());
        }
        self.files.insert(path.to_path_buf(), next);
        true
    }

    /// Number of tenant files cached.
    pub fn len(&self) -> usize {
        self.files.len()
    }

    /// Whether no tenant file is cached.
    pub fn is_empty(&self) -> bool {
        self.files.is_empty()
    }

    /// The tenant table of the cached files, in path order (first definition wins).
    pub fn assemble(&self) -> TenantSet {
        config::assemble_shared(
            self.files
                .values()
                .map(|f| (f.tenants.as_slice(), f.diagnostics.as_slice())),
        )
    }

    /// Domains currently served from a last good version.
    pub fn stale(&self) -> Vec<String> {
        let mut list: Vec<String> = self
            .files
            .values()
            .flat_map(|f| f.stale.iter().cloned())
            .collect();
        list.sort();
        list
    }
}

/// The first load: the tenant cache of `config.tenants_dir` and its table.
pub fn initial_load(config: &ServerConfig) -> Result<(TenantCache, TenantSet), Diagnostic> {
    let mut cache = TenantCache::default();
    cache.refresh(&config.tenants_dir)?;
    let set = cache.assemble();
    Ok((cache, set))
}

/// Loads the server file of `dir`; its errors, one per line, are the error.
pub fn load_server(dir: &Path) -> anyhow::Result<ServerConfig> {
    config::load_server_config(dir).map_err(|diags| {
        let lines: Vec<String> = diags.iter().map(ToString::to_string).collect();
        anyhow::anyhow!("invalid server configuration:\n{}", lines.join("\n"))
    })
}

/// Loads the server file and every tenant file of `dir`, as the daemon's first load does.
/// Tenant errors do not stop the daemon (one customer's bad file must not take the others
/// down); server-file errors do.
pub fn load(dir: &Path) -> anyhow::Result<(ServerConfig, TenantSet)> {
    let server = load_server(dir)?;
    let (_, set) = initial_load(&server).map_err(|d| anyhow::anyhow!("{d}"))?;
    Ok((server, set))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &Path, name: &str, text: &str) {
        std::fs::write(dir.join(name), text).unwrap();
    }

    #[test]
    fn cache_rereads_only_changed_files_and_keeps_last_good() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path();
        write(
            dir,
            "a.yaml",
            "domain: a.example\nmode: testing\nmx: [mx.a.example]\n",
        );
        write(
            dir,
            "b.yaml",
            "domain: b.example\nmode: testing\nmx: [mx.b.example]\n",
        );
        let mut cache = TenantCache::default();
        let r = cache.refresh(dir).unwrap();
        assert_eq!(r.reparsed, 2);
        assert_eq!(cache.assemble().tenants.len(), 2);

        let r = cache.refresh(dir).unwrap();
        assert_eq!(r.reparsed, 0);
        assert!(r.changed_files.is_empty());

        // Broken YAML: a.example stays, stale, with the error reported.
        write(dir, "a.yaml", "domain: a.example\nmode: [broken\n");
        let r = cache.refresh(dir).unwrap();
        assert_eq!(r.reparsed, 1);
        assert_eq!(r.changed_files, vec![dir.join("a.yaml")]);
        let set = cache.assemble();
        assert_eq!(set.tenants.len(), 2);
        assert!(set.has_errors());
        assert_eq!(cache.stale(), vec!["a.example".to_owned()]);

        // A validation error on one tenant of a list keeps that tenant's last good version.
        write(
            dir,
            "a.yaml",
            "- {domain: a.example, mode: enforce, mx: []}\n- {domain: c.example, mode: testing, mx: [mx.c.example]}\n",
        );
        cache.refresh(dir).unwrap();
        let set = cache.assemble();
        let domains: BTreeSet<_> = set.tenants.iter().map(|t| t.domain.as_str()).collect();
        assert_eq!(
            domains,
            BTreeSet::from(["a.example", "b.example", "c.example"])
        );
        assert_eq!(
            set.tenants
                .iter()
                .find(|t| t.domain == "a.example")
                .unwrap()
                .policy
                .mode,
            crate::policy::Mode::Testing
        );

        // Fixed: the file's own content rules again; deleting removes.
        write(
            dir,
            "a.yaml",
            "domain: c.example\nmode: testing\nmx: [mx.c.example]\n",
        );
        cache.refresh(dir).unwrap();
        assert!(cache.stale().is_empty());
        std::fs::remove_file(dir.join("b.yaml")).unwrap();
        let r = cache.refresh(dir).unwrap();
        assert_eq!(r.changed_files, vec![dir.join("b.yaml")]);
        let set = cache.assemble();
        assert_eq!(set.tenants.len(), 1);
        assert_eq!(set.tenants[0].domain, "c.example");
        assert!(!set.has_errors());
    }

    #[test]
    fn touching_a_file_is_not_a_change() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path();
        let text = "domain: a.example\nmode: testing\nmx: [mx.a.example]\n";
        write(dir, "a.yaml", text);
        let mut cache = TenantCache::default();
        cache.refresh(dir).unwrap();
        // Same content through a rename: a new inode, same parsed result.
        write(dir, ".a.yaml.swp", text);
        std::fs::rename(dir.join(".a.yaml.swp"), dir.join("a.yaml")).unwrap();
        let r = cache.refresh(dir).unwrap();
        assert_eq!(r.reparsed, 1);
        assert!(r.changed_files.is_empty());
    }

    #[test]
    fn refresh_files_looks_only_at_named_files() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path();
        write(
            dir,
            "a.yaml",
            "domain: a.example\nmode: testing\nmx: [mx.a.example]\n",
        );
        let mut cache = TenantCache::default();
        cache.refresh(dir).unwrap();
        write(
            dir,
            "b.yaml",
            "domain: b.example\nmode: testing\nmx: [mx.b.example]\n",
        );
        std::fs::remove_file(dir.join("a.yaml")).unwrap();
        let r = cache.refresh_files(dir, &BTreeSet::from([dir.join("b.yaml")]));
        assert_eq!(r.changed_files, vec![dir.join("b.yaml")]);
        assert_eq!(cache.assemble().tenants.len(), 2, "a.yaml was not named");
        let r = cache.refresh_files(dir, &BTreeSet::from([dir.join("a.yaml")]));
        assert_eq!(r.changed_files, vec![dir.join("a.yaml")]);
        assert_eq!(cache.assemble().tenants.len(), 1);
    }
}
