//! Retirement (RFC 8461 §8.3): a policy is withdrawn by serving `mode: none` under a new id
//! for as long as senders may cache the policy served before, and only then removed.
//!
//! [`Retirements`] remembers, per tenant that ever served `testing` or `enforce`, the longest
//! `max_age` it served, its MX patterns and report addresses (so a tenant whose file vanished
//! while the daemon was down can still be retired), how many times it was retired (the
//! generation, part of every later id) and the window of a retirement under way.
//!
//! Stored in `<state_dir>/retirements.jsonl`, one JSON object per line, the last line of a
//! domain winning: a change appends a line (many changes of one load are one write and one
//! fsync), so a one-tenant edit among 100 000 writes a hundred bytes. When the file holds
//! more than twice the lines it needs it is rewritten whole with `fsutil::write_atomic`. A line
//! that does not parse (a crash in the middle of an append) is skipped with a warning; every
//! other line is kept. A missing file is an empty state; a file that cannot be read is an error
//! in the log and an empty state, and is then never rewritten: the policy path never waits on
//! this file.

use std::collections::BTreeSet;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};

use serde::{Deserialize, Serialize};

use std::sync::Arc;

use crate::config::{Retiring, ServerConfig, Tenant};
use crate::policy::{Mode, Policy};
use crate::publish::{self, Publishing};
use crate::registry::{Served, Snapshot};
use crate::util::hash::FastMap;

/// The state file's name in the state directory.
pub const STATE_FILE: &str = "retirements.jsonl";

/// What is remembered of one tenant.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    /// Longest `max_age` served in `testing` or `enforce`; 0: it only ever served `none`.
    #[serde(default)]
    pub longest: u64,
    /// Retirements begun so far; ids are derived from the body and this number.
    #[serde(default)]
    pub generation: u32,
    /// MX patterns last served.
    #[serde(default)]
    pub mx: Vec<String>,
    /// TLS-RPT addresses last served.
    #[serde(default)]
    pub rua: Vec<String>,
    /// The retirement under way or ended (`until` in the past).
    #[serde(default)]
    pub window: Option<Window>,
}

/// A retirement's window, Unix seconds.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Window {
    /// First served `mode: none`.
    pub since: i64,
    /// Stops being served.
    pub until: i64,
    /// No file defines the tenant any more.
    #[serde(default)]
    pub orphan: bool,
}

#[derive(Serialize, Deserialize)]
struct Line {
    domain: String,
    #[serde(flatten)]
    entry: Entry,
}

/// Where a tenant is in its retirement, for the API and the CLI.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Phase {
    /// Serving `mode: none` until `until`.
    Retiring(Window),
    /// The window ended: no longer served; its records can be removed.
    Retired(Window),
}

/// The retirement state of every tenant; see the module documentation.
#[derive(Debug)]
pub struct Retirements {
    path: PathBuf,
    /// `max_age` of the `mode: none` policy served while retiring.
    pub none_max_age: u64,
    writable: bool,
    inner: Mutex<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    entries: FastMap<String, Entry>,
    /// Windows not yet seen to end, by end.
    active: BTreeSet<(i64, String)>,
    /// Lines in the file.
    lines: usize,
    /// Lines to append at the next [`Retirements::flush`].
    pending: String,
    /// Whether the file was read cleanly (only then may it be rewritten).
    clean: bool,
    /// What was remembered before each retirement [`Retirements::orphan`] began since the last
    /// [`Retirements::settle`]: a tenant moved to another file is gone from one and defined
    /// in the other in the same reload, and is then no retirement at all.
    begun: FastMap<String, Option<Entry>>,
}

impl Retirements {
    /// The state of `config`'s state directory; `writable` for the daemon (the CLI only
    /// reads). Problems are logged and returned as warnings; they never stop a load.
    pub fn open(config: &ServerConfig, writable: bool) -> (Retirements, Vec<String>) {
        let path = config.state_dir.join(STATE_FILE);
        let (inner, warnings) = read_state(&path);
        for w in &warnings {
            tracing::warn!("{w}");
        }
        let store = Retirements {
            path,
            none_max_age: config.retire_max_age,
            writable,
            inner: Mutex::new(inner),
        };
        store.compact();
        (store, warnings)
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// What is remembered of `domain`.
    pub fn entry(&self, domain: &str) -> Option<Entry> {
        self.lock().entries.get(domain).cloned()
    }

    /// Where `domain` is in a retirement, if it is in one.
    pub fn phase(&self, domain: &str, now: i64) -> Option<Phase> {
        let w = self.entry(domain)?.window?;
        Some(if now < w.until {
            Phase::Retiring(w)
        } else {
            Phase::Retired(w)
        })
    }

    /// A tenant as its file defines it, as it is served: `retire: true` starts (or continues)
    /// a retirement and serves `mode: none`, or nothing once the window ended; otherwise the
    /// tenant is served as written (a retirement ends: it was re-added) with an id of its
    /// generation, and what it serves is remembered.
    pub fn transform(&self, mut t: Tenant, now: i64) -> Option<Tenant> {
        let mut inner = self.lock();
        // The common case (a restart, an edit of another tenant): nothing to remember.
        if let Some(generation) = inner.unchanged(&t) {
            drop(inner);
            if generation > 0 {
                let p = &t.policy;
                t.policy = Policy::with_generation(p.mode, p.mx.clone(), p.max_age, generation);
            }
            return Some(t);
        }
        let domain = t.domain.clone();
        let before = inner.entries.get(&t.domain).cloned();
        let mut next = before.clone().unwrap_or_default();
        let served = if t.retire {
            let window = match next.window {
                Some(w) => Window { orphan: false, ..w },
                None => start(&mut next, &t, now),
            };
            next.window = Some(window);
            next.mx.clone_from(&t.policy.mx);
            next.rua.clone_from(&t.rua);
            (now < window.until).then(|| self.retiring_tenant(t, &next, window))
        } else {
            if let Some(moved) = inner.begun.remove(&domain) {
                next = moved.unwrap_or_default();
            }
            next.window = None;
            if t.policy.mode != Mode::None {
                next.longest = next.longest.max(t.policy.max_age);
                next.mx.clone_from(&t.policy.mx);
                next.rua.clone_from(&t.rua);
            }
            if next.generation > 0 {
                let p = &t.policy;
                t.policy =
                    Policy::with_generation(p.mode, p.mx.clone(), p.max_age, next.generation);
            }
            Some(t)
        };
        inner.record(&domain, before, next);
        served
    }

    /// A served tenant no file defines any more: retired in its turn (kept serving `mode: none`)
    /// when it ever served `testing` or `enforce`, or continuing the retirement it was in;
    /// `None` when it may go now.
    pub fn orphan(&self, gone: &Tenant, now: i64) -> Option<Tenant> {
        let mut inner = self.lock();
        let before = inner.entries.get(&gone.domain).cloned();
        let mut next = before.clone().unwrap_or_default();
        let window = match next.window {
            Some(w) if now < w.until => w,
            Some(_) => return None,
            None if next.longest == 0 && gone.policy.mode == Mode::None => return None,
            None => {
                inner.begun.insert(gone.domain.clone(), before.clone());
                next.mx.clone_from(&gone.policy.mx);
                next.rua.clone_from(&gone.rua);
                start(&mut next, gone, now)
            }
        };
        let window = Window {
            orphan: true,
            ..window
        };
        next.window = Some(window);
        let tenant = self.retiring_tenant(self.bare(&gone.domain, &next), &next, window);
        inner.record(&gone.domain, before, next);
        Some(tenant)
    }

    /// At start: the tenants no file defines that are still retiring, and those that served
    /// `testing` or `enforce` and whose file vanished while the daemon was down (retired now).
    /// `may_start` is false while a tenant file has errors: a tenant of a file that does not
    /// parse is not taken for removed.
    pub fn orphans_at_start(
        &self,
        defined: &dyn Fn(&str) -> bool,
        may_start: bool,
        now: i64,
    ) -> Vec<Tenant> {
        let candidates: Vec<(String, Entry)> = {
            let inner = self.lock();
            let open = |e: &Entry| match e.window {
                Some(w) => now < w.until,
                None => may_start && e.longest > 0,
            };
            inner
                .entries
                .iter()
                .filter(|(d, e)| !defined(d) && open(e))
                .map(|(d, e)| (d.clone(), e.clone()))
                .collect()
        };
        let mut out = Vec::new();
        for (domain, entry) in candidates {
            let mut gone = self.bare(&domain, &entry);
            gone.policy = Policy::new(Mode::Testing, entry.mx.clone(), entry.longest);
            if let Some(t) = self.orphan(&gone, now) {
                out.push(t);
            }
        }
        out
    }

    /// Ends the retirement of `domain` now (the operator confirmed the removal). Returns
    /// whether it was retiring.
    pub fn forget(&self, domain: &str, now: i64) -> bool {
        let mut inner = self.lock();
        let Some(before) = inner.entries.get(domain).cloned() else {
            return false;
        };
        let Some(w) = before.window.filter(|w| now < w.until) else {
            return false;
        };
        let mut next = before.clone();
        next.window = Some(Window { until: now, ..w });
        inner.record(domain, Some(before), next);
        true
    }

    /// Ends a reload: a retirement begun in it is one from now on, even if the tenant is
    /// defined again later (it then comes back under a new id).
    pub fn settle(&self) {
        self.lock().begun.clear();
    }

    /// The retirements whose window ended by `now`, each once.
    pub fn take_due(&self, now: i64) -> Vec<String> {
        let mut inner = self.lock();
        let mut due = Vec::new();
        while let Some(first) = inner.active.first().cloned() {
            if first.0 > now {
                break;
            }
            inner.active.pop_first();
            due.push(first.1);
        }
        due
    }

    /// The tenant a retirement serves: `mode: none`, the short `max_age`, a new id.
    fn retiring_tenant(&self, mut t: Tenant, entry: &Entry, w: Window) -> Tenant {
        t.policy = Policy::with_generation(
            Mode::None,
            entry.mx.clone(),
            self.none_max_age,
            entry.generation,
        );
        t.retiring = Some(Retiring {
            since: w.since,
            until: w.until,
            orphan: w.orphan,
        });
        t
    }

    /// A tenant of `domain` with what `entry` remembers, defined by the state file.
    fn bare(&self, domain: &str, entry: &Entry) -> Tenant {
        Tenant {
            domain: domain.to_owned(),
            host: format!("mta-sts.{domain}"),
            policy: Policy::new(Mode::None, entry.mx.clone(), self.none_max_age),
            rua: entry.rua.clone(),
            source: std::sync::Arc::from(self.path.as_path()),
            line: 0,
            column: 0,
            retire: false,
            retiring: None,
        }
    }

    /// The tenant as it was last served while retiring (for the records to remove).
    pub fn last_served(&self, domain: &str) -> Option<Tenant> {
        let entry = self.entry(domain)?;
        let w = entry.window?;
        Some(self.retiring_tenant(self.bare(domain, &entry), &entry, w))
    }

    /// Writes the changes recorded since the last call: one append, one fsync. A failure is
    /// logged; the state stays in memory and serving goes on.
    pub fn flush(&self) {
        let mut inner = self.lock();
        if inner.pending.is_empty() {
            return;
        }
        let text = std::mem::take(&mut inner.pending);
        if !self.writable {
            return;
        }
        drop(inner);
        if let Err(err) = append(&self.path, text.as_bytes()) {
            tracing::error!(file = %self.path.display(), error = %err, "cannot write the retirement state; retirements are kept in memory until the next write succeeds");
            self.lock().pending.insert_str(0, &text);
        }
        self.compact();
    }

    /// Rewrites the file whole when it holds more than twice the lines it needs.
    fn compact(&self) {
        let mut inner = self.lock();
        let needed = inner.entries.len();
        if !self.writable || !inner.clean || inner.lines <= 2 * needed + 1024 {
            return;
        }
        let mut text = String::new();
        let mut domains: Vec<&String> = inner.entries.keys().collect();
        domains.sort();
        for d in domains {
            text.push_str(&line(d, &inner.entries[d]));
        }
        match crate::fsutil::write_atomic(&self.path, text.as_bytes(), crate::fsutil::PRIVATE_MODE)
        {
            Ok(()) => inner.lines = needed,
            Err(err) => {
                tracing::warn!(file = %self.path.display(), error = %err, "cannot compact the retirement state")
            }
        }
    }
}

impl Inner {
    /// The generation of `t` when serving it as written changes nothing remembered.
    fn unchanged(&self, t: &Tenant) -> Option<u32> {
        if t.retire {
            return None;
        }
        let Some(e) = self.entries.get(&t.domain) else {
            return (t.policy.mode == Mode::None).then_some(0);
        };
        let p = &t.policy;
        let same =
            p.mode == Mode::None || (e.longest >= p.max_age && e.mx == p.mx && e.rua == t.rua);
        (e.window.is_none() && same).then_some(e.generation)
    }

    /// Keeps `next` for `domain` and queues its line when it changed.
    fn record(&mut self, domain: &str, before: Option<Entry>, next: Entry) {
        if before.as_ref() == Some(&next) || (before.is_none() && next == Entry::default()) {
            return;
        }
        if let Some(w) = before.as_ref().and_then(|b| b.window) {
            self.active.remove(&(w.until, domain.to_owned()));
        }
        if let Some(w) = next.window {
            self.active.insert((w.until, domain.to_owned()));
        }
        self.pending.push_str(&line(domain, &next));
        self.lines += 1;
        self.entries.insert(domain.to_owned(), next);
    }
}

/// Begins a retirement of `t` in `entry`: a new generation, a window as long as the longest
/// `max_age` served (its own included unless it is `none`).
fn start(entry: &mut Entry, t: &Tenant, now: i64) -> Window {
    entry.generation += 1;
    if t.policy.mode != Mode::None && t.retiring.is_none() {
        entry.longest = entry.longest.max(t.policy.max_age);
    }
    let longest = i64::try_from(entry.longest).unwrap_or(i64::MAX);
    Window {
        since: now,
        until: now.saturating_add(longest),
        orphan: false,
    }
}

fn line(domain: &str, entry: &Entry) -> String {
    let line = Line {
        domain: domain.to_owned(),
        entry: entry.clone(),
    };
    let mut text = serde_json::to_string(&line).unwrap_or_default();
    text.push('\n');
    text
}

fn append(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let mut file = std::fs::OpenOptions::new()
        .append(true)
        .create(true)
        .mode(crate::fsutil::PRIVATE_MODE)
        .open(path)?;
    file.write_all(bytes)?;
    file.sync_data()
}

/// Reads the state file: every line that parses, and a warning for each problem.
fn read_state(path: &Path) -> (Inner, Vec<String>) {
    let mut inner = Inner {
        clean: true,
        ..Inner::default()
    };
    let mut warnings = Vec::new();
    let text = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return (inner, warnings),
        Err(e) => {
            inner.clean = false;
            warnings.push(format!(
                "{}: cannot read the retirement state ({e}); tenants being retired are not known until it can be read, and the file is not rewritten",
                path.display()
            ));
            return (inner, warnings);
        }
    };
    for (index, raw) in text.lines().enumerate() {
        if raw.trim().is_empty() {
            continue;
        }
        inner.lines += 1;
        match serde_json::from_str::<Line>(raw) {
            Ok(l) => {
                inner.entries.insert(l.domain, l.entry);
            }
            Err(e) => {
                inner.clean = false;
                warnings.push(format!(
                    "{}:{}: line of the retirement state skipped ({e}); every other line is kept",
                    path.display(),
                    index + 1
                ));
            }
        }
    }
    for (domain, entry) in &inner.entries {
        if let Some(w) = entry.window {
            inner.active.insert((w.until, domain.clone()));
        }
    }
    (inner, warnings)
}

/// Whether `t` is served from the state file alone (its own file is gone).
pub fn is_orphan(t: &Tenant) -> bool {
    t.retiring.is_some_and(|r| r.orphan)
}

/// What one swap does to tenants that lose their last definition: one that must be retired
/// stays, serving `mode: none` ([`Retirements::orphan`]); one whose retirement ended goes, with
/// the records to remove logged. A tenant defined again replaces the retiring one in its place.
pub fn retire_gone(
    store: &Retirements,
    current: &Snapshot,
    served: &mut Vec<Served>,
    publishing: &Publishing<'_>,
) {
    let now = crate::util::unix_now();
    let (mut started, mut ended) = (Vec::new(), Vec::new());
    for change in served.iter_mut() {
        match (&change.before, &change.after) {
            (Some(gone), None) => {
                change.after = store.orphan(gone, now).map(Arc::new);
                match &change.after {
                    Some(t) if gone.retiring.is_none() => started.push(t.clone()),
                    None if gone.retiring.is_some() => ended.push(gone.clone()),
                    _ => {}
                }
            }
            (None, Some(_)) => change.before = current.get(&change.host).cloned(),
            _ => {}
        }
        if let (Some(before), Some(t)) = (&change.before, &change.after)
            && t.retiring.is_some()
            && before.retiring.is_none()
            && !t.retiring.is_some_and(|r| r.orphan)
        {
            started.push(t.clone());
        }
        if let (None, Some(t)) = (&change.before, &change.after)
            && t.retiring.is_some()
        {
            started.push(t.clone());
        }
    }
    served.retain(|c| match (&c.before, &c.after) {
        (Some(a), Some(b)) => !Arc::ptr_eq(a, b),
        (None, None) => false,
        _ => true,
    });
    log_retiring(&started);
    log_retired(&ended, publishing);
}

/// The log lines of retirements beginning: one per tenant, or one summary line for more
/// than [`publish::LOG_EACH_LIMIT`].
pub fn log_retiring(started: &[Arc<Tenant>]) {
    if started.len() > publish::LOG_EACH_LIMIT {
        tracing::warn!(
            tenants = started.len(),
            first = %started.first().map_or("", |t| t.domain.as_str()),
            "{} tenants retiring: serving mode none until the longest max_age each served has passed (GET /api/v1/tenants/<domain> has each window)",
            started.len()
        );
        return;
    }
    for t in started {
        let Some(r) = t.retiring else { continue };
        let why = if r.orphan {
            "its tenant file is gone; `mta-stsd forget` confirms an immediate removal"
        } else {
            "retire: true"
        };
        tracing::warn!(domain = %t.domain, id = %t.policy.id, since = r.since, until = r.until, "retiring: serving mode none until the longest max_age served has passed ({why})");
    }
}

/// The log lines of retirements that ended, with the records to remove (a summary line for
/// more than [`publish::LOG_EACH_LIMIT`]).
pub fn log_retired(ended: &[Arc<Tenant>], publishing: &Publishing<'_>) {
    if ended.len() > publish::LOG_EACH_LIMIT {
        tracing::warn!(
            tenants = ended.len(),
            first = %ended.first().map_or("", |t| t.domain.as_str()),
            "{} tenants retired: no longer served; remove their records (GET /api/v1/tenants/<domain> lists each)",
            ended.len()
        );
        return;
    }
    for t in ended {
        let records = publish::tenant_records(t, *publishing);
        let list: Vec<String> = records
            .list()
            .iter()
            .map(publish::Record::console_line)
            .collect();
        tracing::warn!(domain = %t.domain, records = %list.join("; "), "retired: no longer served; remove these records");
    }
}

/// Ends retirements as they fall due: a look once a second (a set lookup while none is due).
pub async fn retire_task(
    reloader: Arc<super::Reloader>,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    loop {
        tokio::select! {
            () = tokio::time::sleep(std::time::Duration::from_secs(1)) => {}
            _ = stop.changed() => return,
        }
        let r = reloader.clone();
        if let Err(err) = tokio::task::spawn_blocking(move || r.expire_retirements()).await {
            tracing::error!(task = "retirements", error = %err, "ending due retirements failed");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(dir: &Path) -> ServerConfig {
        let text =
            "listen: \"127.0.0.1:0\"\nstate_dir: state\nissuer: internal\nretire_max_age: 60\n";
        crate::config::parse_server_config(dir, text).expect("server file")
    }

    fn tenant(yaml: &str) -> Tenant {
        let file = crate::config::parse_tenants(Path::new("t.yaml"), yaml);
        file.tenants.into_iter().next().expect("a tenant")
    }

    const ENFORCE: &str = "domain: a.example\nmode: enforce\nmx: [mx.a.example]\nmax_age: 1000\n";
    const NONE: &str = "domain: n.example\nmode: none\nmax_age: 86400\n";

    fn retire(yaml: &str) -> String {
        format!("{yaml}retire: true\n")
    }

    #[test]
    fn retire_true_serves_none_with_a_new_id_for_the_longest_max_age_across_a_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = config(dir.path());
        let (store, warnings) = Retirements::open(&cfg, true);
        assert!(warnings.is_empty(), "a missing file is an empty state");
        let served = store.transform(tenant(ENFORCE), 100).unwrap();
        let shorter = ENFORCE.replace("1000", "500");
        store.transform(tenant(&shorter), 110).unwrap();
        let retiring = store.transform(tenant(&retire(&shorter)), 120).unwrap();
        store.flush();
        assert_eq!(retiring.policy.mode, Mode::None);
        assert_eq!(retiring.policy.max_age, 60);
        assert_ne!(retiring.policy.id, served.policy.id);
        let r = retiring.retiring.unwrap();
        assert_eq!(
            (r.since, r.until, r.orphan),
            (120, 1120, false),
            "the longest max_age"
        );

        let (again, warnings) = Retirements::open(&cfg, true);
        assert!(warnings.is_empty(), "{warnings:?}");
        let same = again.transform(tenant(&retire(&shorter)), 500).unwrap();
        assert_eq!(same, retiring, "the window and id survive a reopen");
        assert_eq!(again.take_due(1119), Vec::<String>::new());
        assert_eq!(again.take_due(1120), vec!["a.example".to_owned()]);
        assert!(
            again.transform(tenant(&retire(&shorter)), 1120).is_none(),
            "ended"
        );
        assert!(matches!(
            again.phase("a.example", 1120),
            Some(Phase::Retired(_))
        ));
        assert!(again.last_served("a.example").is_some());

        // Re-added: as written, under an id it never had.
        let back = again.transform(tenant(ENFORCE), 2000).unwrap();
        assert_eq!(back.policy.body, served.policy.body);
        assert_ne!(back.policy.id, served.policy.id);
        assert_ne!(back.policy.id, retiring.policy.id);
        assert!(back.retiring.is_none());
    }

    #[test]
    fn a_gone_tenant_is_retired_unless_it_only_served_none_and_forget_ends_it() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = config(dir.path());
        let (store, _) = Retirements::open(&cfg, true);
        let live = store.transform(tenant(ENFORCE), 100).unwrap();
        let none = store.transform(tenant(NONE), 100).unwrap();
        assert!(
            store.orphan(&none, 200).is_none(),
            "only ever none: goes at once"
        );
        let orphan = store.orphan(&live, 200).unwrap();
        assert_eq!(orphan.policy.mode, Mode::None);
        assert!(is_orphan(&orphan));
        store.flush();

        // A restart: still retiring although no file defines it.
        let (again, _) = Retirements::open(&cfg, true);
        let kept = again.orphans_at_start(&|_| false, true, 300);
        assert_eq!(kept.len(), 1);
        assert_eq!(kept[0].policy.id, orphan.policy.id);
        assert!(again.forget("a.example", 400));
        assert!(!again.forget("a.example", 401), "nothing left to forget");
        assert_eq!(again.take_due(400), vec!["a.example".to_owned()]);
        assert!(again.orphans_at_start(&|_| false, true, 500).is_empty());
    }

    #[test]
    fn a_file_vanished_while_down_is_retired_unless_a_file_has_errors() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = config(dir.path());
        let (store, _) = Retirements::open(&cfg, true);
        store.transform(tenant(ENFORCE), 100).unwrap();
        store.flush();
        let (again, _) = Retirements::open(&cfg, false);
        assert!(again.orphans_at_start(&|_| false, false, 200).is_empty());
        let started = again.orphans_at_start(&|_| false, true, 200);
        assert_eq!(started.len(), 1);
        assert_eq!(started[0].retiring.unwrap().until, 1200);
        assert_eq!(started[0].policy.mx, ["mx.a.example"]);
    }

    #[test]
    fn a_corrupt_line_is_a_warning_and_every_other_line_is_kept() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = config(dir.path());
        let (store, _) = Retirements::open(&cfg, true);
        let orphan = {
            let live = store.transform(tenant(ENFORCE), 100).unwrap();
            store.orphan(&live, 200).unwrap()
        };
        store.flush();
        let path = cfg.state_dir.join(STATE_FILE);
        let mut text = std::fs::read_to_string(&path).unwrap();
        text.insert_str(0, "{\"domain\": \"x.example\", \"longest\": \"no\"}\n");
        text.push_str("{\"domain\": \"half"); // a crash in the middle of an append
        std::fs::write(&path, &text).unwrap();
        let (again, warnings) = Retirements::open(&cfg, true);
        assert_eq!(warnings.len(), 2, "{warnings:?}");
        assert!(
            warnings[0].contains(":1: line of the retirement state skipped"),
            "{warnings:?}"
        );
        let kept = again.orphans_at_start(&|_| false, true, 300);
        assert_eq!(kept.len(), 1);
        assert_eq!(kept[0].policy.id, orphan.policy.id);
        again.flush();
        assert!(
            std::fs::read_to_string(&path)
                .unwrap()
                .starts_with(&text[..20]),
            "not rewritten"
        );

        // A state file that cannot be read: a warning, an empty state, the load goes on.
        std::fs::remove_file(&path).unwrap();
        std::fs::create_dir(&path).unwrap();
        let (empty, warnings) = Retirements::open(&cfg, true);
        assert!(
            warnings[0].contains("cannot read the retirement state"),
            "{warnings:?}"
        );
        assert!(empty.transform(tenant(ENFORCE), 100).is_some());
        empty.flush();
    }

    #[test]
    fn the_file_is_compacted_when_it_holds_more_than_twice_the_lines_it_needs() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = config(dir.path());
        let (store, _) = Retirements::open(&cfg, true);
        for age in 1..=1100u64 {
            store.transform(tenant(&ENFORCE.replace("1000", &age.to_string())), 100);
        }
        store.flush();
        let path = cfg.state_dir.join(STATE_FILE);
        let lines = std::fs::read_to_string(&path).unwrap().lines().count();
        assert_eq!(lines, 1, "compacted to one line per tenant");
        let (again, _) = Retirements::open(&cfg, true);
        assert_eq!(again.entry("a.example").unwrap().longest, 1100);
    }
}
