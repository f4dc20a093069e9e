//! Watching the configuration directories (notify) and SIGHUP: both end in a reload.

use std::collections::BTreeSet;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::watch;

use super::{Reloader, Scope, Trigger};
use crate::config::ServerConfig;

/// Longest a burst of file events may postpone a reload: a file rewritten continuously still
/// gets applied about once a second.
const MAX_DEBOUNCE: Duration = Duration::from_secs(1);

/// The directories to watch: the configuration directory (server file, a ConfigMap's `..data`)
/// and the tenants directory when it is elsewhere.
fn watch_dirs(config: &ServerConfig) -> Vec<PathBuf> {
    let mut dirs = vec![config.dir.clone()];
    if config.tenants_dir != config.dir {
        dirs.push(config.tenants_dir.clone());
    }
    dirs
}

/// `(dev, inode)` of a directory, to notice it being replaced (then the watch must be renewed:
/// inotify follows the old inode).
fn dir_identity(path: &Path) -> Option<(u64, u64)> {
    std::fs::metadata(path).ok().map(|m| (m.dev(), m.ino()))
}

/// Adds what `event` touched to `scope`. A visible entry of the tenants directory is looked at
/// alone (a tenant file is read, anything else gets its "skipped" warning); a Kubernetes `..`
/// entry there (the ConfigMap `..data` swap changes every visible link at once), an event
/// without paths, or the tenants directory itself being moved asks for a full rescan. Editor
/// temporaries (`.a.yaml.swp`) need nothing: the rename that saves them names the tenant file
/// too. Nor do other entries of the configuration directory: the server file is read on every
/// reload. Paths compare as the watch reports them, which is why the daemon makes the
/// configuration directory absolute before anything is derived from it.
fn widen(scope: &mut Scope, event: &notify::Event, tenants_dir: &Path) {
    let Scope::Files(files) = scope else { return };
    if event.paths.is_empty() {
        *scope = Scope::All;
        return;
    }
    for path in &event.paths {
        let name = path.file_name().map(|n| n.to_string_lossy());
        let name = name.as_deref().unwrap_or("");
        let in_tenants = path.parent() == Some(tenants_dir);
        if (in_tenants && name.starts_with("..")) || path.as_path() == tenants_dir {
            *scope = Scope::All;
            return;
        }
        if in_tenants && !name.starts_with('.') {
            files.insert(path.clone());
        }
    }
}

/// Whether a notify event can mean a configuration change. Our own reads produce open and
/// close-without-write events; reacting to them would reload forever.
fn is_relevant(event: &notify::Event) -> bool {
    use notify::EventKind;
    use notify::event::{AccessKind, AccessMode};
    match event.kind {
        EventKind::Access(AccessKind::Close(AccessMode::Write)) => true,
        EventKind::Access(_) => false,
        _ => true,
    }
}

/// An established watch on the configuration directories; [`watch_task`] drives it.
pub struct DirWatch {
    watcher: notify::RecommendedWatcher,
    wake: Arc<tokio::sync::Notify>,
    pending: Arc<Mutex<Scope>>,
    dirs: Vec<PathBuf>,
    identities: Vec<Option<(u64, u64)>>,
}

impl DirWatch {
    /// Starts watching the configuration directory and the tenants directory. Done before the
    /// daemon reports ready, so no change after that point can be missed.
    pub fn new(config: &ServerConfig) -> notify::Result<DirWatch> {
        use notify::{RecursiveMode, Watcher};
        let wake = Arc::new(tokio::sync::Notify::new());
        let pending = Arc::new(Mutex::new(Scope::Files(BTreeSet::new())));
        let (signal, collect) = (wake.clone(), pending.clone());
        let tenants_dir = config.tenants_dir.clone();
        let mut watcher =
            notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
                let mut scope = collect.lock().unwrap_or_else(|e| e.into_inner());
                match event {
                    Ok(event) if !is_relevant(&event) => return,
                    Ok(event) => widen(&mut scope, &event, &tenants_dir),
                    // Errors include a dropped-events overflow: a full rescan is the answer.
                    Err(_) => *scope = Scope::All,
                }
                drop(scope);
                signal.notify_one();
            })?;
        let dirs = watch_dirs(config);
        let mut identities = Vec::new();
        for dir in &dirs {
            watcher.watch(dir, RecursiveMode::NonRecursive)?;
            identities.push(dir_identity(dir));
        }
        Ok(DirWatch {
            watcher,
            wake,
            pending,
            dirs,
            identities,
        })
    }

    /// Renews the watch of a directory that was replaced (inotify follows the old inode).
    fn renew_replaced(&mut self) {
        use notify::{RecursiveMode, Watcher};
        for (dir, identity) in self.dirs.iter().zip(self.identities.iter_mut()) {
            let now = dir_identity(dir);
            if now == *identity {
                continue;
            }
            let _ = self.watcher.unwatch(dir);
            match self.watcher.watch(dir, RecursiveMode::NonRecursive) {
                Ok(()) => {
                    tracing::info!(dir = %dir.display(), "directory replaced; watching the new one")
                }
                Err(err) => {
                    tracing::warn!(dir = %dir.display(), error = %err, "cannot watch replaced directory")
                }
            }
            *identity = now;
            // Whatever happened in the new directory before the watch must be looked at.
            *self.pending.lock().unwrap_or_else(|e| e.into_inner()) = Scope::All;
            self.wake.notify_one();
        }
    }
}

/// The file-watching task: any relevant event in the watched directories starts a reload once
/// events have been quiet for `debounce` (at most `MAX_DEBOUNCE`, a second, after the first).
/// A reload is not waited for before the next one starts: while one reads a huge file, the
/// next burst of events is applied beside it (the cache never reads one version twice, and
/// drops a result a later reload supersedes).
pub async fn watch_task(
    reloader: Arc<Reloader>,
    mut watch: DirWatch,
    mut stop: watch::Receiver<bool>,
) {
    let debounce = reloader.running().reload.debounce;
    tracing::info!(dirs = ?watch.dirs, debounce_ms = debounce.as_millis() as u64, "watching configuration");
    let wake = watch.wake.clone();
    let mut running = tokio::task::JoinSet::new();
    loop {
        tokio::select! {
            _ = wake.notified() => {}
            _ = stop.changed() => break,
        }
        while running.try_join_next().is_some() {}
        let first = tokio::time::Instant::now();
        loop {
            let deadline = (tokio::time::Instant::now() + debounce).min(first + MAX_DEBOUNCE);
            tokio::select! {
                _ = wake.notified() => {
                    if tokio::time::Instant::now() >= first + MAX_DEBOUNCE { break; }
                }
                _ = tokio::time::sleep_until(deadline) => break,
                _ = stop.changed() => return,
            }
        }
        let scope = std::mem::replace(
            &mut *watch.pending.lock().unwrap_or_else(|e| e.into_inner()),
            Scope::Files(BTreeSet::new()),
        );
        let r = reloader.clone();
        running.spawn(async move { r.reload_scoped(Trigger::Watch, scope).await });
        watch.renew_replaced();
    }
}

/// The SIGHUP task. The daemon creates the signal stream (which installs the handler) before
/// spawning this, so a SIGHUP right after startup never meets the default, fatal, action.
pub async fn sighup_task(
    reloader: Arc<Reloader>,
    mut hup: tokio::signal::unix::Signal,
    mut stop: watch::Receiver<bool>,
) {
    loop {
        tokio::select! {
            got = hup.recv() => {
                if got.is_none() { return; }
                tracing::info!("SIGHUP: reloading configuration");
                reloader.reload(Trigger::Signal).await;
            }
            _ = stop.changed() => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn watcher_scope() {
        use notify::event::{CreateKind, EventKind};
        let dir = Path::new("/cfg/tenants");
        let ev =
            |p: &str| notify::Event::new(EventKind::Create(CreateKind::Any)).add_path(p.into());
        let mut scope = Scope::Files(BTreeSet::new());
        widen(&mut scope, &ev("/cfg/tenants/a.yaml"), dir);
        widen(&mut scope, &ev("/cfg/mta-stsd.yaml"), dir);
        widen(&mut scope, &ev("/cfg/tenants/.a.yaml.swp"), dir);
        assert_eq!(
            scope,
            Scope::Files(BTreeSet::from([PathBuf::from("/cfg/tenants/a.yaml")]))
        );
        // Looked at to be warned about as skipped.
        widen(&mut scope, &ev("/cfg/tenants/a.yaml~"), dir);
        assert_eq!(
            scope,
            Scope::Files(BTreeSet::from([
                PathBuf::from("/cfg/tenants/a.yaml"),
                PathBuf::from("/cfg/tenants/a.yaml~")
            ]))
        );
        widen(&mut scope, &ev("/cfg/tenants/..data"), dir);
        assert_eq!(scope, Scope::All, "a ConfigMap swap changes every file");
        let mut scope = Scope::Files(BTreeSet::new());
        widen(&mut scope, &ev("/cfg/tenants"), dir);
        assert_eq!(scope, Scope::All);
    }

    #[test]
    fn access_events_are_ignored() {
        use notify::event::{AccessKind, AccessMode, CreateKind, EventKind};
        let ev = |kind| notify::Event::new(kind);
        assert!(!is_relevant(&ev(EventKind::Access(AccessKind::Open(
            AccessMode::Any
        )))));
        assert!(!is_relevant(&ev(EventKind::Access(AccessKind::Close(
            AccessMode::Read
        )))));
        assert!(is_relevant(&ev(EventKind::Access(AccessKind::Close(
            AccessMode::Write
        )))));
        assert!(is_relevant(&ev(EventKind::Create(CreateKind::File))));
    }
}
