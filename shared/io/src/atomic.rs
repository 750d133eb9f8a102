//! The one way strokeseg writes a file: complete under its final name, or not at all.
//!
//! Every output (NIfTI masks, reports, models, checkpoints, run records) goes through here:
//! the bytes are written to `<name>.tmp` in the same folder (so the rename cannot cross a
//! file system), the file is synced to disk, renamed over the final name (atomic on POSIX)
//! and the folder is synced so the rename survives a power cut. On any error the temporary
//! file is removed and the final name keeps what it had before.

use std::fs::File;
use std::io::Write as _;
use std::path::{Path, PathBuf};

use crate::IoError;

/// `path` with `.tmp` appended to its file name: where [`write_atomically`] and
/// [`crate::NiftiWriter`] stage a file before [`publish_atomically`] renames it.
pub fn tmp_path(path: &Path) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(".tmp");
    PathBuf::from(name)
}

/// Writes `bytes` to `path` atomically (see the module docs).
pub fn write_atomically(path: &Path, bytes: &[u8]) -> Result<(), IoError> {
    let tmp = tmp_path(path);
    let written = File::create(&tmp)
        .and_then(|mut file| file.write_all(bytes))
        .map_err(|e| IoError::io(&tmp, e));
    if let Err(err) = written {
        let _ = std::fs::remove_file(&tmp);
        return Err(err);
    }
    publish_atomically(&tmp, path)
}

/// Serialises `value` as pretty JSON with a final newline and writes it to `path`
/// atomically.
pub fn write_json_atomically<T: serde::Serialize + ?Sized>(
    path: &Path,
    value: &T,
) -> Result<(), IoError> {
    let mut text = serde_json::to_string_pretty(value).map_err(|e| IoError::Json {
        path: path.to_path_buf(),
        source: e,
    })?;
    text.push('\n');
    write_atomically(path, text.as_bytes())
}

/// Publishes the fully written `tmp_path` (from any writer: ours, libtorch's, a copy) as
/// `final_path`: syncs the file, renames it over `final_path` and syncs the folder. On any
/// error `tmp_path` is removed and `final_path` is untouched.
pub fn publish_atomically(tmp_path: &Path, final_path: &Path) -> Result<(), IoError> {
    let published = File::open(tmp_path)
        .and_then(|file| file.sync_all())
        .map_err(|e| IoError::io(tmp_path, e))
        .and_then(|()| {
            std::fs::rename(tmp_path, final_path).map_err(|e| IoError::io(final_path, e))
        });
    if let Err(err) = published {
        let _ = std::fs::remove_file(tmp_path);
        return Err(err);
    }
    if let Some(dir) = final_path.parent().filter(|d| !d.as_os_str().is_empty()) {
        // Best effort: not every file system can sync a folder.
        if let Ok(d) = File::open(dir) {
            let _ = d.sync_all();
        }
    }
    Ok(())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn replaces_the_file_and_leaves_no_temporary() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("out.txt");
        write_atomically(&path, b"one").unwrap();
        write_atomically(&path, b"two").unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"two");
        assert!(!tmp_path(&path).exists());
    }

    #[test]
    fn a_failed_write_leaves_nothing_behind() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("no_such_dir").join("x.txt");
        assert!(matches!(
            write_atomically(&missing, b"x"),
            Err(IoError::Io { .. })
        ));
        // The rename fails (a folder is in the way): the old content and no temporary stay.
        let blocked = dir.path().join("blocked");
        std::fs::create_dir_all(blocked.join("inside")).unwrap();
        assert!(write_atomically(&blocked, b"x").is_err());
        assert!(blocked.join("inside").is_dir());
        assert!(!tmp_path(&blocked).exists());
    }

    #[test]
    fn json_ends_with_a_newline() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("v.json");
        write_json_atomically(&path, &[1, 2]).unwrap();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "[\n  1,\n  2\n]\n");
    }
}
