//! Online backup (SQLite's backup API, while the server runs) and restore into a stopped data dir.
//!
//! A running server holds an exclusive lock on `<data_dir>/gatehouse.lock`; restore takes the same
//! lock, so it refuses a data directory that is being served.
//!
//! The log of token uses is a file of its own (`uses.db`, see store/sqlite.rs) and not part of a
//! backup: the uses it holds are folded into the copy's tokens instead, so a backup carries every
//! use written before it was taken; only the uses a running server still keeps in memory (at most
//! its last second) are missing, and such a token can only idle out that much earlier. Restore
//! removes the data directory's log, whose uses are of the replaced database's tokens. The master key is not in the
//! backup: keep `master.key` (or the configured key file) with it, separately.
//!
//! A backup is sealed: `FILE.mac` beside it holds the HMAC-SHA256 of the file's bytes under a key
//! derived from the master key, and restore takes the file only when it matches (or when told
//! `--unsealed`). Whatever the seal, restore refuses a file whose schema (`sqlite_schema`: every
//! table, index, view and trigger) is not the one gatehouse makes at that file's schema version:
//! a trigger that deletes new audit rows or unblocks users would otherwise run in the live server.

use std::collections::BTreeMap;
use std::fs;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

use rusqlite::backup::{Backup, StepResult};
use rusqlite::{Connection, OpenFlags};

use crate::base::crypto::{ct_eq, hex, unhex, HmacSha256, MasterKey};
use crate::config::Config;

/// The purpose the backup's MAC key is derived for (`MasterKey::mac`).
const MAC_PURPOSE: &str = "gatehouse backup file v1";

/// Where the seal of the backup `file` goes: `FILE.mac`.
pub fn mac_path(file: &Path) -> PathBuf {
    let mut name = file.file_name().map(|n| n.to_os_string()).unwrap_or_default();
    name.push(".mac");
    file.with_file_name(name)
}

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

/// Writes a consistent copy of the live database to `dest` (which must not exist yet), sealed by
/// `key` in `dest.mac`. Returns the number of users in the copy.
pub fn backup(config: &Config, dest: &Path, key: &MasterKey) -> Result<i64, String> {
    let mac_file = mac_path(dest);
    for path in [dest, &mac_file] {
        if path.exists() {
            return Err(format!("{} exists already; choose a new file", path.display()));
        }
    }
    let src_path = config.db_path();
    if !src_path.is_file() {
        return Err(format!("no database at {}", src_path.display()));
    }
    let src = Connection::open_with_flags(&src_path, OpenFlags::SQLITE_OPEN_READ_ONLY)
        .map_err(|e| format!("{}: {e}", src_path.display()))?;
    src.busy_timeout(config.store.busy_timeout.0).map_err(|e| e.to_string())?;
    let tmp = tmp_beside(dest);
    let tmp_mac = tmp_beside(&mac_file);
    let result = (|| {
        let mut dst = Connection::open(&tmp).map_err(|e| format!("{}: {e}", tmp.display()))?;
        copy_all(&src, &mut dst)?;
        dst.execute_batch("PRAGMA journal_mode = DELETE").map_err(|e| e.to_string())?;
        fold_logged_uses(&mut dst, &src_path)?;
        let (_, users) = check(&dst, "the copy")?;
        drop(dst);
        restrict(&tmp);
        // The seal of the bytes as they are now, written before the copy takes its name.
        let mut mac = key.mac(MAC_PURPOSE);
        let mut file = fs::File::open(&tmp).map_err(|e| format!("{}: {e}", tmp.display()))?;
        pipe(&mut file, None, Some(&mut mac)).map_err(|e| format!("{}: {e}", tmp.display()))?;
        let mut out = create_private(&tmp_mac)?;
        out.write_all(format!("{}\n", hex(&mac.finish())).as_bytes())
            .and_then(|_| out.sync_all())
            .map_err(|e| format!("{}: {e}", tmp_mac.display()))?;
        fs::rename(&tmp_mac, &mac_file).map_err(|e| format!("{}: {e}", mac_file.display()))?;
        if let Err(e) = fs::rename(&tmp, dest) {
            let _ = fs::remove_file(&mac_file);
            return Err(format!("{}: {e}", dest.display()));
        }
        Ok(users)
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
        let _ = fs::remove_file(&tmp_mac);
    }
    result
}

/// Replaces the database of a stopped data directory with `src`, after checking it: its seal
/// (`src.mac`, under `key`; None takes an unsealed file), its integrity, its schema version and
/// its schema itself. What is checked is the copy that becomes the database, byte for byte. The
/// schema is brought up to date the next time gatehouse opens it. On any refusal the data
/// directory is left as it was.
pub fn restore(config: &Config, src: &Path, key: Option<&MasterKey>) -> Result<i64, String> {
    crate::store::ensure_dir(&config.data_dir).map_err(|e| e.to_string())?;
    let _lock = lock_data_dir(config)?;
    let what = src.display().to_string();
    let expected = match key {
        Some(_) => Some(read_mac(src)?),
        None => None,
    };
    let dest = config.db_path();
    let tmp = tmp_beside(&dest);
    let result = (|| {
        let mut from = fs::File::open(src).map_err(|e| format!("{what}: {e}"))?;
        // A database in WAL mode keeps part of itself in FILE-wal, which a copy of the file misses.
        let mut header = [0u8; 20];
        if from.read_exact(&mut header).is_ok() && header[18] == 2 {
            let wal = PathBuf::from(format!("{what}-wal"));
            if wal.metadata().is_ok_and(|m| m.len() > 0) {
                return Err(format!(
                    "{what} has a write-ahead log beside it ({}) that a copy would miss; restore a file written \
                     by `gatehouse backup`",
                    wal.display()
                ));
            }
        }
        drop(from);
        let _ = fs::remove_file(&tmp);
        let mut to = create_private(&tmp)?;
        let mut from = fs::File::open(src).map_err(|e| format!("{what}: {e}"))?;
        let mut mac = key.map(|k| k.mac(MAC_PURPOSE));
        pipe(&mut from, Some(&mut to), mac.as_mut())
            .and_then(|_| to.sync_all())
            .map_err(|e| format!("{what} copied to {}: {e}", tmp.display()))?;
        drop(to);
        if let (Some(mac), Some(expected)) = (mac, expected) {
            if !ct_eq(&mac.finish(), &expected) {
                return Err(format!(
                    "{what} does not match its seal {}: it was changed after gatehouse wrote it, or sealed under \
                     another master key than {}",
                    mac_path(src).display(),
                    config.master_key_path().display()
                ));
            }
        }
        let copy = Connection::open(&tmp).map_err(|e| format!("{}: {e}", tmp.display()))?;
        let version: i64 =
            copy.query_row("PRAGMA user_version", [], |r| r.get(0)).map_err(|e| format!("{what}: {e}"))?;
        let known = crate::store::schema_version();
        if version > known {
            return Err(format!("{what} is at schema version {version}, newer than this gatehouse knows ({known})"));
        }
        check_schema(&copy, version, &what)?;
        let (_, users) = check(&copy, &what)?;
        drop(copy);
        // A WAL left by the old database must not be replayed onto the new one, nor its uses
        // (by token id) folded into these tokens.
        for ext in ["db-wal", "db-shm"] {
            let _ = fs::remove_file(dest.with_extension(ext));
        }
        let log = crate::store::uses_log_path(&dest);
        for ext in ["", "-wal", "-shm"] {
            let path = format!("{}{ext}", log.display());
            match fs::remove_file(&path) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(format!("{path}: {e}")),
                _ => {}
            }
        }
        fs::rename(&tmp, &dest).map_err(|e| format!("{}: {e}", dest.display()))?;
        Ok(users)
    })();
    if result.is_err() {
        for ext in ["", "-journal", "-wal", "-shm"] {
            let _ = fs::remove_file(format!("{}{ext}", tmp.display()));
        }
    }
    result
}

/// Folds the uses logged beside the live database `db` into the tokens of its copy `copy` (a
/// last use never moves back; a use of a token the copy lacks changes nothing).
fn fold_logged_uses(copy: &mut Connection, db: &Path) -> Result<(), String> {
    let log = crate::store::uses_log_path(db);
    let uses = crate::store::logged_uses_beside(db).map_err(|e| format!("{}: {e}", log.display()))?;
    if uses.is_empty() {
        return Ok(());
    }
    let tx = copy.transaction().map_err(|e| format!("the copy: {e}"))?;
    {
        let mut st = tx
            .prepare("UPDATE tokens SET last_used_at = ?2 WHERE id = ?1 AND last_used_at < ?2")
            .map_err(|e| format!("the copy: {e}"))?;
        for (id, at) in uses {
            st.execute(rusqlite::params![id, at]).map_err(|e| format!("the copy: {e}"))?;
        }
    }
    tx.commit().map_err(|e| format!("the copy: {e}"))
}

/// The seal `src.mac` holds.
fn read_mac(src: &Path) -> Result<[u8; 32], String> {
    let path = mac_path(src);
    let text = match fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(format!(
                "{} is missing: gatehouse backup seals each backup in FILE.mac, and restore takes an unsealed \
                 file (an older gatehouse's, or one copied by hand) only with --unsealed",
                path.display()
            ))
        }
        Err(e) => return Err(format!("{}: {e}", path.display())),
    };
    unhex(text.trim())
        .and_then(|b| <[u8; 32]>::try_from(b.as_slice()).ok())
        .ok_or_else(|| format!("{} does not hold a seal (64 hex characters)", path.display()))
}

/// Copies `from` into `to` (when given), feeding every byte to `mac` (when given).
fn pipe(from: &mut fs::File, mut to: Option<&mut fs::File>, mut mac: Option<&mut HmacSha256>) -> std::io::Result<()> {
    let mut buf = vec![0u8; 1 << 16];
    loop {
        let n = match from.read(&mut buf) {
            Ok(0) => return Ok(()),
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        if let Some(mac) = mac.as_mut() {
            mac.update(&buf[..n]);
        }
        if let Some(to) = to.as_mut() {
            to.write_all(&buf[..n])?;
        }
    }
}

/// A new file readable by its owner only.
fn create_private(path: &Path) -> Result<fs::File, String> {
    let mut opts = fs::OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(0o600);
    }
    opts.open(path).map_err(|e| format!("{}: {e}", path.display()))
}

/// SQLite's own tables, which it makes by itself (ANALYZE), not gatehouse's schema.
fn sqlite_own(kind: &str, name: &str) -> bool {
    kind == "table" && matches!(name, "sqlite_stat1" | "sqlite_stat2" | "sqlite_stat3" | "sqlite_stat4")
}

type Schema = BTreeMap<(String, String), (String, Option<String>)>;

/// Every object of `conn`'s schema: (type, name) -> (tbl_name, sql).
fn schema_of(conn: &Connection) -> rusqlite::Result<Schema> {
    let mut stmt = conn.prepare("SELECT type, name, tbl_name, sql FROM sqlite_schema")?;
    let rows = stmt.query_map([], |r| Ok(((r.get(0)?, r.get(1)?), (r.get(2)?, r.get(3)?))))?;
    rows.collect()
}

/// Refuses a schema that is not, object for object, the one schema.sql makes at `version`: an
/// extra trigger, view, index or table, a definition changed, an object gone.
fn check_schema(conn: &Connection, version: i64, what: &str) -> Result<(), String> {
    let theirs = schema_of(conn).map_err(|e| format!("{what}: {e}"))?;
    let reference = super::sqlite::reference_schema(version).map_err(|e| e.to_string())?;
    let ours = schema_of(&reference).map_err(|e| format!("the schema at version {version}: {e}"))?;
    let at = format!("gatehouse's schema at version {version}");
    for ((kind, name), (table, sql)) in &theirs {
        match ours.get(&(kind.clone(), name.clone())) {
            None if sqlite_own(kind, name) => {}
            None => {
                return Err(format!(
                    "{what} is refused: it holds {kind} \"{}\" on \"{}\", which {at} does not have",
                    name.escape_debug(),
                    table.escape_debug()
                ))
            }
            Some((t, s)) if t != table || s != sql => {
                return Err(format!(
                    "{what} is refused: its {kind} \"{}\" is not defined as in {at}",
                    name.escape_debug()
                ))
            }
            Some(_) => {}
        }
    }
    if let Some((kind, name)) = ours.keys().find(|k| !theirs.contains_key(*k)) {
        return Err(format!("{what} is refused: it lacks the {kind} \"{name}\" of {at}"));
    }
    Ok(())
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_schema_is_checked_against_what_gatehouse_makes_at_its_own_version() {
        let at5 = super::super::sqlite::reference_schema(5).unwrap();
        check_schema(&at5, 5, "t").unwrap();
        let err = check_schema(&at5, 6, "t").unwrap_err();
        assert!(err.contains("is refused") && err.contains("at version 6"), "{err}");
        // SQLite's own statistics are not gatehouse's to refuse.
        at5.execute_batch("ANALYZE").unwrap();
        check_schema(&at5, 5, "t").unwrap();
        at5.execute_batch("CREATE TRIGGER t AFTER INSERT ON audit BEGIN SELECT 1; END").unwrap();
        let err = check_schema(&at5, 5, "t").unwrap_err();
        assert!(err.contains("trigger \"t\" on \"audit\""), "{err}");
    }

    #[test]
    fn a_backup_carries_the_logged_uses_and_a_restore_removes_the_log() {
        let dir = tempfile::tempdir().unwrap();
        let config = Config { data_dir: dir.path().to_path_buf(), ..Config::default() };
        let key_file = dir.path().join("key");
        fs::write(&key_file, format!("{}\n", "ab".repeat(32))).unwrap();
        restrict(&key_file);
        let key = MasterKey::load(&key_file).unwrap();
        let store = super::super::sqlite::Sqlite::open(&config).unwrap();
        Connection::open(config.db_path())
            .unwrap()
            .execute_batch(
                "INSERT INTO applications (id, created_at) VALUES ('app', 1);
                 INSERT INTO users (login, login_key, created_at) VALUES ('al', 'al', 1);
                 INSERT INTO tokens (id, digest, kind, user_id, app_id, created_at, last_used_at, idle_ms, expires_at)
                     VALUES (1, x'01', 'iam', 1, 'app', 10, 50, 100, 1000);",
            )
            .unwrap();
        store.uses_log(|c| crate::store::tokens::log_uses(c, &[(1, 70), (7, 80)])).unwrap();
        let copy = dir.path().join("copy.db");
        backup(&config, &copy, &key).unwrap();
        let last: i64 = Connection::open(&copy)
            .unwrap()
            .query_row("SELECT last_used_at FROM tokens WHERE id = 1", [], |r| r.get(0))
            .unwrap();
        assert_eq!(last, 70, "the logged use is in the backup's token");
        drop(store);
        restore(&config, &copy, Some(&key)).unwrap();
        let log = crate::store::uses_log_path(&config.db_path());
        assert!(!log.exists(), "the uses of the replaced database's tokens are gone");
    }

    #[test]
    fn a_database_gatehouse_opened_and_migrated_has_the_reference_schema() {
        let dir = tempfile::tempdir().unwrap();
        let config = Config { data_dir: dir.path().to_path_buf(), ..Config::default() };
        // Made at version 4, then brought up to date by opening it as the server does.
        {
            let mut conn = Connection::open(config.db_path()).unwrap();
            let four = super::super::sqlite::reference_schema(4).unwrap();
            copy_all(&four, &mut conn).unwrap();
        }
        drop(super::super::sqlite::Sqlite::open(&config).unwrap());
        let conn = Connection::open(config.db_path()).unwrap();
        check_schema(&conn, crate::store::schema_version(), "t").unwrap();
    }
}
