//! The one tenant loader: the last result of every tenant file, re-read only when its stamp
//! changes. The daemon keeps one across reloads; the CLI builds one for a single load.

use std::borrow::Borrow;
use std::collections::{BTreeMap, BTreeSet};
use std::ffi::{OsStr, OsString};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::Scope;
use super::pool::Slots;
use crate::config::{self, Diagnostic, FileTenants, ServerConfig, Tenant, TenantSet};
use crate::util::hash::{FastMap, FastSet};

/// Identity and timestamps of a file (following symlinks): any write, rename-over or
/// ConfigMap swap changes at least one of them.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
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

/// A tenant file's path as a map key, ordered and hashed by its bytes. Every path in one
/// cache is `<tenants dir>/<name>`, so byte order is the order `Path` gives (file names
/// compared as bytes) without comparing component by component, which was a third of the
/// start with a million files.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
struct FileKey(OsString);

impl FileKey {
    fn of(path: &Path) -> FileKey {
        FileKey(path.as_os_str().to_owned())
    }

    fn path(&self) -> &Path {
        Path::new(&self.0)
    }
}

impl Borrow<OsStr> for FileKey {
    fn borrow(&self) -> &OsStr {
        &self.0
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
            let fresh: FastSet<&str> = tenants.iter().map(|t| t.domain.as_str()).collect();
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

/// Where a tenant file that is a symlink may lead: into the configuration or the tenants
/// directory, never into the state directory (CA and ACME keys) or onto the admin token. A
/// link elsewhere is refused unread, so no file the daemon can read but the operator did not
/// mean as a tenant ends up quoted in a diagnostic. A ConfigMap's links (`a.yaml` →
/// `..data/a.yaml`) stay inside the mount.
#[derive(Clone, Debug, Default)]
struct Confinement {
    inside: Vec<PathBuf>,
    never: Vec<PathBuf>,
}

/// [`Confinement`] with its paths resolved for one refresh (a directory may be replaced between
/// refreshes).
struct Resolved {
    inside: Vec<PathBuf>,
    never: Vec<PathBuf>,
}

impl Confinement {
    fn resolve(&self, tenants_dir: &Path) -> Resolved {
        let canonical = |paths: &[PathBuf]| -> Vec<PathBuf> {
            paths
                .iter()
                .filter_map(|p| std::fs::canonicalize(p).ok())
                .collect()
        };
        let mut inside = canonical(&self.inside);
        if self.inside.is_empty() {
            inside = canonical(&[tenants_dir.to_path_buf()]);
        }
        Resolved {
            inside,
            never: canonical(&self.never),
        }
    }
}

impl Resolved {
    /// Refuses a symlink leading outside the allowed directories.
    fn check_link(&self, path: &Path) -> Result<(), String> {
        let target = std::fs::canonicalize(path)
            .map_err(|e| format!("is a symlink whose target cannot be resolved: {e}"))?;
        if let Some(never) = self.never.iter().find(|n| target.starts_with(n)) {
            return Err(format!(
                "is a symlink to {}, inside {}, which holds keys or tokens: refused, not read",
                target.display(),
                never.display()
            ));
        }
        if !self.inside.iter().any(|dir| target.starts_with(dir)) {
            return Err(format!(
                "is a symlink to {}, outside the configuration and tenants directories: refused, not read",
                target.display()
            ));
        }
        Ok(())
    }
}

/// What a directory entry with a tenant file's name turned out to be: its stamp, and whether
/// it may be read (`Ok(true)` for a symlink, which is confined first) or why not.
type Inspected = (Stamp, Result<bool, String>);

/// Looks at `path` without opening it; `None` when nothing is there. A symlink's stamp is its
/// target's, so a changed target is read again.
fn inspect(path: &Path) -> Option<Inspected> {
    let lmeta = match std::fs::symlink_metadata(path) {
        Ok(meta) => meta,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return None,
        Err(e) => return Some((Stamp::default(), Err(format!("cannot read: {e}")))),
    };
    if !lmeta.file_type().is_symlink() {
        let verdict = if lmeta.is_file() {
            Ok(false)
        } else {
            let kind = config::file_kind(&lmeta);
            Err(format!("is {kind}, not a regular file; not read"))
        };
        return Some((Stamp::of(&lmeta), verdict));
    }
    Some(match std::fs::metadata(path) {
        Ok(meta) if meta.is_file() => (Stamp::of(&meta), Ok(true)),
        Ok(meta) => {
            let kind = config::file_kind(&meta);
            let why = format!("is a symlink to {kind}, not to a regular file; not read");
            (Stamp::of(&meta), Err(why))
        }
        Err(e) => {
            let why = format!("is a symlink whose target cannot be read: {e}");
            (Stamp::of(&lmeta), Err(why))
        }
    })
}

/// The warning for a visible entry of the tenants directory that is not read.
fn skipped_warning(path: &Path) -> Diagnostic {
    Diagnostic::warning(
        path,
        0,
        0,
        "",
        "skipped: tenant files are named *.yaml or *.yml".to_owned(),
    )
}

/// A tenant file to read again, as [`TenantCache::plan`] found it on disk.
#[derive(Debug)]
pub struct Job {
    /// The file.
    pub path: PathBuf,
    stamp: Stamp,
    /// Why it may not be read, when it may not (a refused symlink, a FIFO).
    refused: Option<String>,
    /// Which plan asked for it: a later plan for the same file supersedes this one.
    ticket: u64,
}

impl Job {
    /// Its size when planned, so small files are read first.
    pub fn size(&self) -> u64 {
        self.stamp.len
    }

    /// Reads and parses the file. Touches no shared state: runs outside every lock.
    pub fn parse(&self) -> FileTenants {
        match &self.refused {
            None => config::load_tenant_file(&self.path),
            Some(why) => FileTenants::unreadable(&self.path, why.clone()),
        }
    }
}

/// What [`TenantCache::plan`] found: the files to read again and the files that are gone.
#[derive(Debug, Default)]
pub struct Plan {
    /// Files whose stamp changed (and that no earlier plan is already reading as they are).
    pub jobs: Vec<Job>,
    /// Cached files no longer there.
    pub gone: Vec<PathBuf>,
    /// Warnings for entries newly skipped, to log once.
    pub new_diagnostics: Vec<Diagnostic>,
}

/// The tenants one file served before and serves after a change.
#[derive(Debug)]
pub struct FileChange {
    /// The file.
    pub path: PathBuf,
    /// Its tenants before.
    pub old: Vec<Arc<Tenant>>,
    /// Its tenants now (none when the file is gone).
    pub new: Vec<Arc<Tenant>>,
}

/// What applying a parsed file did.
#[derive(Debug)]
pub enum Applied {
    /// A later plan reads the file again (or it is gone): this result is dropped.
    Superseded,
    /// Read again with the same result.
    Same,
    /// Its result changed.
    Changed(FileChange),
}

/// The last result of every tenant file of a directory.
#[derive(Debug, Default)]
pub struct TenantCache {
    files: BTreeMap<FileKey, CachedFile>,
    /// Visible entries that are not tenant files, each with its warning.
    skipped: BTreeMap<PathBuf, Diagnostic>,
    /// Files with diagnostics or stale tenants: what a status or a snapshot's diagnostics
    /// need, without looking at every file.
    problems: BTreeSet<FileKey>,
    /// Files planned and being read: the plan's ticket and the stamp it read.
    reading: FastMap<FileKey, (u64, Stamp)>,
    tickets: u64,
    confinement: Confinement,
    /// Retirement state: tenants pass through it as they are taken in (none in unit tests).
    retirements: Option<Arc<super::Retirements>>,
}

impl TenantCache {
    /// An empty cache for `config`'s tenants directory, with symlinks confined to the
    /// configuration and tenants directories. ([`TenantCache::default`] confines them to the
    /// directory refreshed.)
    pub fn new(config: &ServerConfig) -> TenantCache {
        let mut never = vec![config.state_dir.clone()];
        never.extend(config.admin.iter().filter_map(|a| a.token_file.clone()));
        TenantCache {
            confinement: Confinement {
                inside: vec![config.dir.clone(), config.tenants_dir.clone()],
                never,
            },
            ..TenantCache::default()
        }
    }

    /// Brings the cache in step with `dir`, reading one file after another. An unreadable
    /// directory is an error and leaves the cache as it was (a directory being replaced must
    /// not unload every tenant).
    pub fn refresh(&mut self, dir: &Path) -> Result<Refresh, Diagnostic> {
        let plan = self.plan(dir, &Scope::All)?;
        Ok(self.run(plan))
    }

    /// Looks at the named files of `dir` only (what the watcher saw change): a one-file edit
    /// then costs one `stat` and one parse however many files the directory holds.
    pub fn refresh_files(&mut self, dir: &Path, paths: &BTreeSet<PathBuf>) -> Refresh {
        match self.plan(dir, &Scope::Files(paths.clone())) {
            Ok(plan) => self.run(plan),
            Err(_) => Refresh::default(),
        }
    }

    /// Carries out `plan` here and now, file by file.
    fn run(&mut self, plan: Plan) -> Refresh {
        let mut refresh = Refresh {
            new_diagnostics: plan.new_diagnostics,
            ..Refresh::default()
        };
        for path in plan.gone {
            if self.remove(&path).is_some() {
                refresh.changed_files.push(path);
            }
        }
        for job in plan.jobs {
            let parsed = job.parse();
            refresh.reparsed += 1;
            refresh
                .new_diagnostics
                .extend(parsed.diagnostics.iter().cloned());
            if let Applied::Changed(c) = self.apply(&job, parsed) {
                refresh.changed_files.push(c.path);
            }
        }
        refresh
    }

    /// Looks at what `scope` names (stat only, nothing is read): the files to read again, the
    /// files gone. An unreadable tenants directory is an error and changes nothing.
    pub fn plan(&mut self, dir: &Path, scope: &Scope) -> Result<Plan, Diagnostic> {
        let bounds = self.confinement.resolve(dir);
        let mut plan = Plan::default();
        let paths = match scope {
            Scope::All => None,
            Scope::Files(paths) => Some(paths),
        };
        let Some(paths) = paths else {
            let entries = std::fs::read_dir(dir).map_err(|e| {
                Diagnostic::error(dir, 0, 0, "", format!("cannot read tenants directory: {e}"))
            })?;
            let mut seen: FastSet<FileKey> = FastSet::default();
            for entry in entries.filter_map(Result::ok) {
                let path = entry.path();
                if self.look(&path, &bounds, &mut plan) {
                    seen.insert(FileKey(path.into_os_string()));
                }
            }
            self.skipped.retain(|p, _| seen.contains(p.as_os_str()));
            self.reading.retain(|p, _| seen.contains(p));
            plan.gone = self
                .files
                .keys()
                .filter(|p| !seen.contains(*p))
                .map(|p| p.path().to_path_buf())
                .collect();
            return Ok(plan);
        };
        for path in paths.iter().filter(|p| p.parent() == Some(dir)) {
            if self.look(path, &bounds, &mut plan) {
                continue;
            }
            self.skipped.remove(path);
            self.reading.remove(path.as_os_str());
            if self.files.contains_key(path.as_os_str()) {
                plan.gone.push(path.clone());
            }
        }
        Ok(plan)
    }

    /// Plans `path` to be read if its stamp changed. Returns whether something that counts is
    /// there: a tenant file (to read, refused, or unchanged) or a skipped entry. Something
    /// with a tenant file's name that cannot be read is an error of that file and keeps its
    /// last good tenants.
    fn look(&mut self, path: &Path, bounds: &Resolved, plan: &mut Plan) -> bool {
        let name = path.file_name().map(|n| n.to_string_lossy());
        let Some(name) = name.filter(|n| !n.starts_with('.')) else {
            return false;
        };
        if !config::is_tenant_file_name(&name) {
            return self.note_skipped(path, &mut plan.new_diagnostics);
        }
        let Some((stamp, verdict)) = inspect(path) else {
            return false;
        };
        let cached = self
            .files
            .get(path.as_os_str())
            .is_some_and(|p| p.stamp == stamp);
        let being_read = self
            .reading
            .get(path.as_os_str())
            .is_some_and(|(_, s)| *s == stamp);
        if cached || being_read {
            return true;
        }
        // Stat before reading: if the file changes in between, the stored stamp is older than
        // the contents and the next event reads it again.
        let readable = verdict.and_then(|link| {
            if link {
                bounds.check_link(path)
            } else {
                Ok(())
            }
        });
        self.tickets += 1;
        self.reading
            .insert(FileKey::of(path), (self.tickets, stamp));
        plan.jobs.push(Job {
            path: path.to_path_buf(),
            stamp,
            refused: readable.err(),
            ticket: self.tickets,
        });
        true
    }

    /// Takes in what reading `job` gave, unless a later plan reads the file again.
    pub fn apply(&mut self, job: &Job, parsed: FileTenants) -> Applied {
        let key = job.path.as_os_str();
        if self.reading.get(key).map(|r| r.0) != Some(job.ticket) {
            return Applied::Superseded;
        }
        self.reading.remove(key);
        let previous = self.files.get(key);
        let parsed = self.retire(parsed);
        let next = CachedFile::merge(previous, parsed, job.stamp);
        let changed = previous.is_none_or(|p| !p.same_result(&next));
        let old = previous.map(|p| p.tenants.clone()).unwrap_or_default();
        let new = next.tenants.clone();
        if next.diagnostics.is_empty() && next.stale.is_empty() {
            self.problems.remove(key);
        } else {
            self.problems.insert(FileKey::of(&job.path));
        }
        self.files.insert(FileKey::of(&job.path), next);
        if !changed {
            return Applied::Same;
        }
        Applied::Changed(FileChange {
            path: job.path.clone(),
            old,
            new,
        })
    }

    /// `parsed`'s tenants as they are served: a retiring one serves `mode: none`, a retired
    /// one is left out (see [`super::Retirements::transform`]).
    fn retire(&self, mut parsed: FileTenants) -> FileTenants {
        if let Some(store) = &self.retirements {
            let now = crate::util::unix_now();
            parsed.tenants = std::mem::take(&mut parsed.tenants)
                .into_iter()
                .filter_map(|t| store.transform(t, now))
                .collect();
        }
        parsed
    }

    /// The retirement state this cache takes tenants in with.
    pub fn retirements(&self) -> Option<&Arc<super::Retirements>> {
        self.retirements.as_ref()
    }

    /// Makes the next plan read `path` again although it did not change (a retirement that
    /// ended must leave the served table).
    pub fn invalidate(&mut self, path: &Path) {
        if let Some(file) = self.files.get_mut(path.as_os_str()) {
            file.stamp = Stamp::default();
        }
    }

    /// Forgets a file that is gone; its tenants are no longer served.
    pub fn remove(&mut self, path: &Path) -> Option<FileChange> {
        let gone = self.files.remove(path.as_os_str())?;
        self.problems.remove(path.as_os_str());
        Some(FileChange {
            path: path.to_path_buf(),
            old: gone.tenants,
            new: Vec::new(),
        })
    }

    /// Records a visible entry that is not a tenant file; its warning is logged when it first
    /// appears. Returns whether it is there.
    fn note_skipped(&mut self, path: &Path, new: &mut Vec<Diagnostic>) -> bool {
        if std::fs::symlink_metadata(path).is_err() {
            return false;
        }
        if !self.skipped.contains_key(path) {
            let warning = skipped_warning(path);
            new.push(warning.clone());
            self.skipped.insert(path.to_path_buf(), warning);
        }
        true
    }

    /// The diagnostics of every file in path order, each file's own followed by what
    /// `extra` adds for it (duplicate errors), then the warnings for skipped entries. Costs
    /// the number of files with diagnostics, not the number of files.
    pub fn diagnostics<'a>(
        &'a self,
        extra_files: impl Iterator<Item = &'a Path>,
        extra: impl Fn(&Path) -> Vec<Diagnostic>,
    ) -> Vec<Diagnostic> {
        let mut files: BTreeSet<&Path> = self.problems.iter().map(FileKey::path).collect();
        files.extend(extra_files);
        let mut out = Vec::new();
        for file in files {
            if let Some(cached) = self.files.get(file.as_os_str()) {
                out.extend_from_slice(&cached.diagnostics);
            }
            out.extend(extra(file));
        }
        out.extend(self.skipped.values().cloned());
        out
    }

    /// Every cached tenant, file by file in path order.
    pub fn tenants(&self) -> impl Iterator<Item = &Arc<Tenant>> {
        self.files.values().flat_map(|f| f.tenants.iter())
    }

    /// Number of tenant files cached.
    pub fn len(&self) -> usize {
        self.files.len()
    }

    /// Whether no tenant file is cached.
    pub fn is_empty(&self) -> bool {
        self.files.is_empty()
    }

    /// The tenant table of the cached files, in path order (first definition wins), followed
    /// by the warnings for skipped entries.
    pub fn assemble(&self) -> TenantSet {
        let skipped: Vec<Diagnostic> = self.skipped.values().cloned().collect();
        config::assemble_shared(
            self.files
                .values()
                .map(|f| (f.tenants.as_slice(), f.diagnostics.as_slice()))
                .chain(std::iter::once((&[][..], skipped.as_slice()))),
        )
    }

    /// Domains currently served from a last good version.
    pub fn stale(&self) -> Vec<String> {
        let mut list: Vec<String> = self
            .problems
            .iter()
            .filter_map(|p| self.files.get(p))
            .flat_map(|f| f.stale.iter().cloned())
            .collect();
        list.sort();
        list
    }
}

/// The first load: the tenant cache of `config.tenants_dir` and its table.
/// Files are parsed in parallel, one thread per core.
/// The CLI's: the retirement state is read, never written.
pub fn initial_load(config: &ServerConfig) -> Result<(TenantCache, TenantSet), Diagnostic> {
    let (store, _) = super::Retirements::open(config, false);
    initial_load_with(config, Arc::new(store))
}

/// [`initial_load`] with the retirement state `store` (the daemon's, written to): tenants
/// still retiring whose file is gone are part of the table.
pub fn initial_load_with(
    config: &ServerConfig,
    store: Arc<super::Retirements>,
) -> Result<(TenantCache, TenantSet), Diagnostic> {
    load_files(config, Some(store))
}

/// [`initial_load`] without retirement state (unit tests of the reloader's own rules).
#[cfg(test)]
pub(crate) fn initial_load_plain(
    config: &ServerConfig,
) -> Result<(TenantCache, TenantSet), Diagnostic> {
    load_files(config, None)
}

fn load_files(
    config: &ServerConfig,
    store: Option<Arc<super::Retirements>>,
) -> Result<(TenantCache, TenantSet), Diagnostic> {
    let started = std::time::Instant::now();
    let mut cache = TenantCache::new(config);
    cache.retirements.clone_from(&store);
    let plan = cache.plan(&config.tenants_dir, &Scope::All)?;
    let planned = started.elapsed();
    let files = plan.jobs.len();
    let mut parsed = Slots::new().run(plan.jobs, Job::size, Job::parse, |job, p| (job, p));
    let read = started.elapsed();
    parsed.sort_unstable_by(|a, b| a.0.path.as_os_str().cmp(b.0.path.as_os_str()));
    for (job, file) in parsed {
        cache.apply(&job, file);
    }
    let applied = started.elapsed();
    let mut set = cache.assemble();
    if let Some(store) = &store {
        set.tenants.extend(orphans_at_start(&cache, store));
        store.flush();
    }
    tracing::debug!(
        files,
        tenants = set.tenants.len(),
        listed_ms = planned.as_millis(),
        read_ms = (read - planned).as_millis(),
        cached_ms = (applied - read).as_millis(),
        assembled_ms = (started.elapsed() - applied).as_millis(),
        "first load"
    );
    Ok((cache, set))
}

/// The tenants retiring at start that no file defines (see
/// [`super::Retirements::orphans_at_start`]).
fn orphans_at_start(cache: &TenantCache, store: &super::Retirements) -> Vec<Arc<Tenant>> {
    let defined: FastSet<&str> = cache.tenants().map(|t| t.domain.as_str()).collect();
    let has_errors = |f: &CachedFile| f.diagnostics.iter().any(Diagnostic::is_error);
    let may_start = !cache.files.values().any(has_errors);
    let now = crate::util::unix_now();
    let orphans = store.orphans_at_start(&|d| defined.contains(d), may_start, now);
    orphans.into_iter().map(Arc::new).collect()
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

    #[test]
    fn a_non_file_or_a_link_outside_is_an_error_that_keeps_the_last_good_version() {
        let tmp = tempfile::tempdir().unwrap();
        let outside = tempfile::tempdir().unwrap();
        let dir = tmp.path();
        let text = "domain: a.example\nmode: testing\nmx: [mx.a.example]\n";
        write(dir, "a.yaml", text);
        write(outside.path(), "a.yaml", text);
        let mut cache = TenantCache::default();
        cache.refresh(dir).unwrap();
        let path = dir.join("a.yaml");
        std::fs::remove_file(&path).unwrap();
        std::fs::create_dir(&path).unwrap();
        let r = cache.refresh(dir).unwrap();
        assert_eq!(r.changed_files, vec![path.clone()]);
        let set = cache.assemble();
        assert_eq!(set.tenants.len(), 1, "kept");
        assert_eq!(
            set.diagnostics[0].message,
            "is a directory, not a regular file; not read"
        );
        std::fs::remove_dir(&path).unwrap();
        std::os::unix::fs::symlink(outside.path().join("a.yaml"), &path).unwrap();
        cache.refresh(dir).unwrap();
        let set = cache.assemble();
        assert_eq!(set.tenants.len(), 1, "kept");
        assert!(
            set.diagnostics[0]
                .message
                .contains("outside the configuration and tenants directories: refused"),
            "{:?}",
            set.diagnostics
        );
        assert_eq!(cache.stale(), vec!["a.example".to_owned()]);
    }

    #[test]
    fn skipped_entries_are_warned_about_once_and_forgotten_when_gone() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path();
        write(dir, "notes.txt", "x");
        write(dir, ".hidden", "x");
        let mut cache = TenantCache::default();
        let r = cache.refresh(dir).unwrap();
        assert_eq!(
            r.new_diagnostics,
            vec![skipped_warning(&dir.join("notes.txt"))]
        );
        assert!(
            cache.refresh(dir).unwrap().new_diagnostics.is_empty(),
            "once"
        );
        assert_eq!(cache.assemble().diagnostics.len(), 1);
        std::fs::remove_file(dir.join("notes.txt")).unwrap();
        let named = BTreeSet::from([dir.join("notes.txt")]);
        cache.refresh_files(dir, &named);
        assert!(cache.assemble().diagnostics.is_empty());
    }
}
