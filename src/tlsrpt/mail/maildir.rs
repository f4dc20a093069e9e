//! The Maildir sweep: every new or unseen message is ingested, then moved to `cur/` with the
//! `S` flag once its report is committed, or to `refused/` if it can never be accepted.

use std::path::{Path, PathBuf};

use time::OffsetDateTime;

use super::{
    EX_DATAERR, EX_OK, EX_TEMPFAIL, MailError, MailIntake, MailReceipt, ingest_message,
    max_message_size,
};
use crate::tlsrpt::report::ReportError;

/// The folder, beside `new/`, `cur/` and `tmp/`, that refused messages are moved to.
pub const REFUSED_DIR: &str = "refused";

/// What a Maildir sweep did.
#[derive(Debug, Default)]
pub struct MaildirSummary {
    /// Messages stored (or recognized as duplicates) and moved to `cur/` with the `S` flag.
    pub handled: Vec<(PathBuf, MailReceipt)>,
    /// Messages refused for good, moved to [`REFUSED_DIR`] (where they are now), with the reason.
    pub refused: Vec<(PathBuf, MailError)>,
    /// Messages left where they were (a temporary failure, or a failed move), with the reason.
    pub failed: Vec<(PathBuf, MailError)>,
}

impl MaildirSummary {
    /// 75 if any message was left in place for a temporary failure, else 65 if any was
    /// refused or could not be moved, else 0.
    pub fn exit_code(&self) -> u8 {
        if self
            .failed
            .iter()
            .any(|(_, e)| e.exit_code() == EX_TEMPFAIL)
        {
            EX_TEMPFAIL
        } else if !self.failed.is_empty() || !self.refused.is_empty() {
            EX_DATAERR
        } else {
            EX_OK
        }
    }
}

/// Split a Maildir file name into its unique part and its flags (`None` without `:2,`).
fn maildir_flags(name: &str) -> (&str, Option<&str>) {
    match name.rsplit_once(":2,") {
        Some((base, flags)) => (base, Some(flags)),
        None => (name, None),
    }
}

/// Sorted regular, non-hidden files of a Maildir subdirectory.
fn list(dir: &Path) -> std::io::Result<Vec<(PathBuf, String)>> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.starts_with('.') || !entry.file_type()?.is_file() {
            continue;
        }
        out.push((entry.path(), name));
    }
    out.sort();
    Ok(out)
}

/// Process every message in `dir/new` and every not-yet-seen one (no `S` flag) in `dir/cur`.
///
/// A handled message (stored or duplicate) is renamed into `cur/` with the `S` flag added, after
/// the report is committed: a crash in between only means a duplicate on the next sweep.
/// A message refused for good (`is_temporary` false) is moved to `dir/refused/`, so later
/// sweeps never parse it again; the operator can move it back to `new/` to retry. Messages
/// that fail temporarily stay where they are. Nothing is deleted.
pub fn process_maildir(
    dir: &Path,
    intake: &MailIntake<'_>,
    is_temporary: &dyn Fn(&MailError) -> bool,
    now: OffsetDateTime,
) -> std::io::Result<MaildirSummary> {
    let cur = dir.join("cur");
    let mut todo = list(&dir.join("new"))?;
    todo.extend(
        list(&cur)?
            .into_iter()
            .filter(|(_, name)| !maildir_flags(name).1.is_some_and(|f| f.contains('S'))),
    );
    let max = u64::try_from(max_message_size(&intake.limits)).unwrap_or(u64::MAX);
    let mut summary = MaildirSummary::default();
    for (path, name) in todo {
        let result = read_capped(&path, max).and_then(|raw| ingest_message(&raw, intake, now));
        match result {
            Ok(receipt) => match mark_seen(&path, &name, &cur) {
                Ok(target) => summary.handled.push((target, receipt)),
                Err(e) => summary.failed.push((path, e)),
            },
            Err(e) if is_temporary(&e) => summary.failed.push((path, e)),
            Err(e) => match move_refused(dir, &path, &name) {
                Ok(target) => summary.refused.push((target, e)),
                Err(move_error) => summary.failed.push((path, move_error)),
            },
        }
    }
    Ok(summary)
}

/// Renames a handled message into `cur/` with the `S` flag added to its flags.
fn mark_seen(path: &Path, name: &str, cur: &Path) -> Result<PathBuf, MailError> {
    let (base, flags) = maildir_flags(name);
    let mut flags: Vec<char> = flags.unwrap_or("").chars().collect();
    flags.push('S');
    flags.sort_unstable();
    flags.dedup();
    let target = cur.join(format!(
        "{base}:2,{}",
        flags.into_iter().collect::<String>()
    ));
    std::fs::rename(path, &target)
        .map_err(|e| MailError::Io(format!("stored but not moved to cur/: {e}")))?;
    Ok(target)
}

/// Moves a refused message to `dir/refused/` under the same name, creating the folder.
fn move_refused(dir: &Path, path: &Path, name: &str) -> Result<PathBuf, MailError> {
    let refused = dir.join(REFUSED_DIR);
    let target = refused.join(name);
    std::fs::create_dir_all(&refused)
        .and_then(|()| std::fs::rename(path, &target))
        .map_err(|e| MailError::Io(format!("refused but not moved to {REFUSED_DIR}/: {e}")))?;
    Ok(target)
}

fn read_capped(path: &Path, max: u64) -> Result<Vec<u8>, MailError> {
    use std::io::Read;
    let file = std::fs::File::open(path).map_err(|e| MailError::Io(e.to_string()))?;
    let mut raw = Vec::new();
    file.take(max + 1)
        .read_to_end(&mut raw)
        .map_err(|e| MailError::Io(e.to_string()))?;
    if raw.len() as u64 > max {
        return Err(ReportError::TooLarge {
            what: "mail message",
            limit: usize::try_from(max).unwrap_or(usize::MAX),
        }
        .into());
    }
    Ok(raw)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tlsrpt::mail::testutil::{Fixture, GOOD_AR, GOOGLE_NAME, NOW, report_mail};
    use crate::tlsrpt::store::InsertOutcome;
    use crate::tlsrpt::testutil::fixture;

    #[test]
    fn maildir_sweep_moves_handled_mail_and_leaves_failures() {
        let f = Fixture::new();
        let maildir = tempfile::tempdir().unwrap();
        for sub in ["new", "cur", "tmp"] {
            std::fs::create_dir(maildir.path().join(sub)).unwrap();
        }
        let put = |sub: &str, name: &str, data: &[u8]| {
            std::fs::write(maildir.path().join(sub).join(name), data).unwrap()
        };
        let google = report_mail(GOOD_AR, &fixture("google.json"), GOOGLE_NAME);
        put("new", "1.a.host", &google);
        put("new", "2.b.host", &google); // the same report again: duplicate, still handled
        put(
            "new",
            "3.c.host",
            &report_mail("", &fixture("google.json"), GOOGLE_NAME),
        ); // no DKIM
        let ar = "Authentication-Results: mx.operator.example; dkim=pass header.d=google.com\r\n";
        put(
            "cur",
            "4.d.host:2,F",
            &report_mail(ar, &fixture("rfc-example.json"), GOOGLE_NAME),
        ); // unseen
        put(
            "cur",
            "5.e.host:2,S",
            b"already handled: must not be touched",
        );
        put("tmp", "6.f.host", b"being delivered: must not be touched");

        let temporary = |e: &MailError| e.exit_code() == EX_TEMPFAIL;
        let summary = process_maildir(maildir.path(), &f.intake(), &temporary, NOW).unwrap();
        let handled: Vec<String> = summary
            .handled
            .iter()
            .map(|(p, _)| p.file_name().unwrap().to_string_lossy().into_owned())
            .collect();
        assert_eq!(handled, ["1.a.host:2,S", "2.b.host:2,S", "4.d.host:2,FS"]);
        let outcomes: Vec<InsertOutcome> = summary.handled.iter().map(|(_, r)| r.outcome).collect();
        assert_eq!(
            outcomes,
            [
                InsertOutcome::Inserted,
                InsertOutcome::Duplicate,
                InsertOutcome::Inserted
            ]
        );
        assert!(summary.failed.is_empty(), "{:?}", summary.failed);
        assert_eq!(summary.refused.len(), 1);
        assert!(summary.refused[0].0.ends_with("refused/3.c.host"));
        assert!(matches!(summary.refused[0].1, MailError::Auth(_)));
        assert_eq!(summary.exit_code(), EX_DATAERR);

        let names = |sub: &str| -> Vec<String> {
            let mut v: Vec<String> = std::fs::read_dir(maildir.path().join(sub))
                .unwrap()
                .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .collect();
            v.sort();
            v
        };
        assert!(names("new").is_empty());
        assert_eq!(names("refused"), ["3.c.host"]);
        assert_eq!(
            names("cur"),
            [
                "1.a.host:2,S",
                "2.b.host:2,S",
                "4.d.host:2,FS",
                "5.e.host:2,S"
            ]
        );
        assert_eq!(names("tmp"), ["6.f.host"]);
        assert_eq!(
            std::fs::read(maildir.path().join("cur/1.a.host:2,S")).unwrap(),
            google,
            "a moved message keeps its content"
        );

        // A second sweep parses nothing again.
        let again = process_maildir(maildir.path(), &f.intake(), &temporary, NOW).unwrap();
        assert!(again.handled.is_empty());
        assert!(again.refused.is_empty());
        assert!(again.failed.is_empty());
        assert_eq!(again.exit_code(), EX_OK);
    }

    #[test]
    fn a_temporary_failure_stays_in_new_for_the_next_sweep() {
        let f = Fixture::new();
        let maildir = tempfile::tempdir().unwrap();
        for sub in ["new", "cur", "tmp"] {
            std::fs::create_dir(maildir.path().join(sub)).unwrap();
        }
        let unsigned = report_mail("", &fixture("google.json"), GOOGLE_NAME);
        std::fs::write(maildir.path().join("new/1.a.host"), &unsigned).unwrap();
        let summary = process_maildir(maildir.path(), &f.intake(), &|_| true, NOW).unwrap();
        assert_eq!(summary.failed.len(), 1);
        assert!(summary.refused.is_empty());
        assert!(maildir.path().join("new/1.a.host").exists());
        assert!(!maildir.path().join(REFUSED_DIR).exists());
    }
}
