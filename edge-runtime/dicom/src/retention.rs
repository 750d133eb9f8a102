//! Retention: the entries of a folder that only grows (the DICOM outbox's `sent/`, the
//! node's `done/`) removed once older than a configured age.
//!
//! An entry's age is the modification time of a stamp file inside it when given (an outbox
//! job's `job.json`, rewritten just before the job moves to `sent/`), else of the entry
//! itself. An entry is first renamed to a hidden `.pruning-<name>` and then removed, so a
//! removal interrupted by a crash never leaves a half-removed entry that looks new (its
//! mtime changes as its files go); the next pass removes what such a crash left. Hidden
//! entries of others (`.<name>` being built) are left alone.

use std::path::Path;
use std::time::{Duration, SystemTime};

use crate::DicomError;

/// Prefix of an entry being removed.
pub const PRUNING_PREFIX: &str = ".pruning-";

/// Removes every entry of `dir` whose age at `now` is more than `keep` (age from
/// `dir/<entry>/<stamp>` when that file exists, else from the entry); returns the names
/// removed, sorted. A missing `dir` has nothing to prune.
pub fn prune_older_than(
    dir: &Path,
    keep: Duration,
    now: SystemTime,
    stamp: Option<&str>,
) -> Result<Vec<String>, DicomError> {
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(DicomError::io(dir, e)),
    };
    let mut old = Vec::new();
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let path = entry.path();
        if name.starts_with(PRUNING_PREFIX) {
            // Left by an interrupted pass.
            remove(&path)?;
            continue;
        }
        if name.starts_with('.') {
            continue;
        }
        let stamped = stamp.map(|s| path.join(s)).filter(|p| p.is_file());
        let modified = std::fs::metadata(stamped.as_deref().unwrap_or(&path))
            .and_then(|m| m.modified())
            .map_err(|e| DicomError::io(&path, e))?;
        // A clock set back makes entries look new, never old.
        let age = now.duration_since(modified).unwrap_or_default();
        if age > keep {
            old.push((name, path));
        }
    }
    old.sort();
    let mut removed = Vec::new();
    for (name, path) in old {
        let doomed = dir.join(format!("{PRUNING_PREFIX}{name}"));
        std::fs::rename(&path, &doomed).map_err(|e| DicomError::io(&path, e))?;
        remove(&doomed)?;
        removed.push(name);
    }
    if !removed.is_empty()
        && let Ok(d) = std::fs::File::open(dir)
    {
        let _ = d.sync_all();
    }
    Ok(removed)
}

fn remove(path: &Path) -> Result<(), DicomError> {
    let result = if path.is_dir() {
        std::fs::remove_dir_all(path)
    } else {
        std::fs::remove_file(path)
    };
    result.map_err(|e| DicomError::io(path, e))
}

/// `days` as a retention period; 0 is "keep forever" (`None`).
pub fn days(days: u64) -> Option<Duration> {
    (days > 0).then(|| Duration::from_secs(days.saturating_mul(86_400)))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn set_mtime(path: &Path, t: SystemTime) {
        std::fs::File::open(path).unwrap().set_modified(t).unwrap();
    }

    #[test]
    fn old_entries_go_new_ones_and_hidden_ones_stay() {
        let dir = tempfile::tempdir().unwrap();
        let now = SystemTime::now();
        let day = Duration::from_secs(86_400);
        for name in ["old", "new", ".building", "stamped-old", "stamped-new"] {
            std::fs::create_dir_all(dir.path().join(name).join("sub")).unwrap();
            if name != "old" {
                std::fs::write(dir.path().join(name).join("job.json"), b"{}").unwrap();
            }
        }
        std::fs::write(dir.path().join("old-file"), b"x").unwrap();
        std::fs::create_dir_all(dir.path().join(".pruning-crashed")).unwrap();
        set_mtime(&dir.path().join("old"), now - 10 * day);
        set_mtime(&dir.path().join("old-file"), now - 10 * day);
        set_mtime(&dir.path().join(".building"), now - 10 * day);
        set_mtime(&dir.path().join("stamped-old/job.json"), now - 10 * day);
        set_mtime(&dir.path().join("stamped-new"), now - 10 * day);

        // The stamp decides where there is one; the entry's own time elsewhere.
        let removed = prune_older_than(dir.path(), 7 * day, now, Some("job.json")).unwrap();
        assert_eq!(removed, ["old", "old-file", "stamped-old"]);
        assert!(!dir.path().join(".pruning-crashed").exists());
        let left = |d: &Path| {
            let mut v: Vec<String> = std::fs::read_dir(d)
                .unwrap()
                .flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect();
            v.sort();
            v
        };
        assert_eq!(left(dir.path()), [".building", "new", "stamped-new"]);
        // Without the stamp, the folder's time.
        let removed = prune_older_than(dir.path(), 7 * day, now, None).unwrap();
        assert_eq!(removed, ["stamped-new"]);
        assert_eq!(left(dir.path()), [".building", "new"]);
        // A missing folder has nothing to prune; a clock set back prunes nothing.
        assert!(
            prune_older_than(&dir.path().join("none"), day, now, None)
                .unwrap()
                .is_empty()
        );
        assert!(
            prune_older_than(dir.path(), Duration::ZERO, now - 30 * day, None)
                .unwrap()
                .is_empty()
        );
    }

    #[test]
    fn zero_days_keeps_forever() {
        assert_eq!(days(0), None);
        assert_eq!(days(2), Some(Duration::from_secs(172_800)));
    }
}
