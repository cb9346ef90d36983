//! Online backup (SQLite's backup API, while the server runs) and restore into a stopped data dir.
//!
//! A running server holds an exclusive lock on `<data_dir>/gatehouse.lock`; restore takes the same
//! lock, so it refuses a data directory that is being served. The master key is not in the
//! backup: keep `master.key` (or the configured key file) with it, separately.

use std::fs;
use std::path::{Path, PathBuf};
use std::time::Duration;

use rusqlite::backup::{Backup, StepResult};
use rusqlite::{Connection, OpenFlags};

use crate::config::Config;

/// Holds the data directory's lock for as long as it lives.
pub struct DirLock {
    _file: fs::File,
}

/// Takes the data directory's exclusive lock; Err when a server (or a restore) holds it.
pub fn lock_data_dir(config: &Config) -> Result<DirLock, String> {
    let path = config.data_dir.join("gatehouse.lock");
    let file = fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(|e| format!("{}: {e}", path.display()))?;
    match file.try_lock() {
        Ok(()) => Ok(DirLock { _file: file }),
        Err(fs::TryLockError::WouldBlock) => Err(format!(
            "a gatehouse server is running on {} (it holds {}); stop it first",
            config.data_dir.display(),
            path.display()
        )),
        Err(fs::TryLockError::Error(e)) => Err(format!("{}: {e}", path.display())),
    }
}

fn copy_all(from: &Connection, to: &mut Connection) -> Result<(), String> {
    let backup = Backup::new(from, to).map_err(|e| e.to_string())?;
    loop {
        // -1: every page in one step, so the copy is one consistent snapshot.
        match backup.step(-1).map_err(|e| e.to_string())? {
            StepResult::Done => return Ok(()),
            StepResult::More | StepResult::Busy | StepResult::Locked => std::thread::sleep(Duration::from_millis(20)),
            _ => std::thread::sleep(Duration::from_millis(20)),
        }
    }
}

fn check(conn: &Connection, what: &str) -> Result<(i64, i64), String> {
    let ok: String = conn.query_row("PRAGMA integrity_check", [], |r| r.get(0)).map_err(|e| format!("{what}: {e}"))?;
    if ok != "ok" {
        return Err(format!("{what} fails SQLite's integrity check: {ok}"));
    }
    let version: i64 = conn.query_row("PRAGMA user_version", [], |r| r.get(0)).map_err(|e| format!("{what}: {e}"))?;
    let users: i64 =
        conn.query_row("SELECT count(*) FROM users", [], |r| r.get(0)).map_err(|e| format!("{what}: {e}"))?;
    Ok((version, users))
}

/// Writes a consistent copy of the live database to `dest` (which must not exist yet).
/// Returns the number of users in the copy.
pub fn backup(config: &Config, dest: &Path) -> Result<i64, String> {
    if dest.exists() {
        return Err(format!("{} exists already; choose a new file", dest.display()));
    }
    let src_path = config.db_path();
    if !src_path.is_file() {
        return Err(format!("no database at {}", src_path.display()));
    }
    let src = Connection::open_with_flags(&src_path, OpenFlags::SQLITE_OPEN_READ_ONLY)
        .map_err(|e| format!("{}: {e}", src_path.display()))?;
    src.busy_timeout(config.store.busy_timeout.0).map_err(|e| e.to_string())?;
    let tmp = tmp_beside(dest);
    let result = (|| {
        let mut dst = Connection::open(&tmp).map_err(|e| format!("{}: {e}", tmp.display()))?;
        copy_all(&src, &mut dst)?;
        dst.execute_batch("PRAGMA journal_mode = DELETE").map_err(|e| e.to_string())?;
        let (_, users) = check(&dst, "the copy")?;
        drop(dst);
        restrict(&tmp);
        fs::rename(&tmp, dest).map_err(|e| format!("{}: {e}", dest.display()))?;
        Ok(users)
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}

/// Replaces the database of a stopped data directory with `src`, after checking it. The schema is
/// brought up to date the next time gatehouse opens it.
pub fn restore(config: &Config, src: &Path) -> Result<i64, String> {
    crate::store::ensure_dir(&config.data_dir).map_err(|e| e.to_string())?;
    let _lock = lock_data_dir(config)?;
    let from = Connection::open_with_flags(src, OpenFlags::SQLITE_OPEN_READ_ONLY)
        .map_err(|e| format!("{}: {e}", src.display()))?;
    let (version, users) = check(&from, &src.display().to_string())?;
    let known = crate::store::schema_version();
    if version > known {
        return Err(format!(
            "{} is at schema version {version}, newer than this gatehouse knows ({known})",
            src.display()
        ));
    }
    let dest = config.db_path();
    let tmp = tmp_beside(&dest);
    {
        let mut to = Connection::open(&tmp).map_err(|e| format!("{}: {e}", tmp.display()))?;
        copy_all(&from, &mut to)?;
        check(&to, "the restored copy")?;
    }
    restrict(&tmp);
    // A WAL left by the old database must not be replayed onto the new one.
    for ext in ["db-wal", "db-shm"] {
        let _ = fs::remove_file(dest.with_extension(ext));
    }
    fs::rename(&tmp, &dest).map_err(|e| format!("{}: {e}", dest.display()))?;
    Ok(users)
}

fn tmp_beside(path: &Path) -> PathBuf {
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    path.with_file_name(format!(".{name}.partial"))
}

fn restrict(path: &Path) {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let _ = fs::set_permissions(path, fs::Permissions::from_mode(0o600));
    }
}
