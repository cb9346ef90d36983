//! The SQLite backend: the pool, its PRAGMAs, the migrations from schema.sql, the one writer.
//!
//! [`Sqlite::with`] (a pooled connection, for reads) and [`Sqlite::write`] (the process's one
//! writer, with group commit: see `writer`) are the only roads to a connection of the database
//! file; [`Sqlite::uses_log`] is the one road to the log of token uses, a file of its own.

use std::path::{Path, PathBuf};
use std::time::Duration;

use r2d2_sqlite::SqliteConnectionManager;
use rusqlite::{Connection, TransactionBehavior};

use super::db::Db;
use super::writer;
use super::{Error, OpenError};
use crate::config::Config;

/// The schema, embedded in the binary.
pub const SCHEMA: &str = include_str!("../../schema.sql");

pub type Pool = r2d2::Pool<SqliteConnectionManager>;

/// WAL pages (4 KiB) after which the writer checkpoints, instead of SQLite's 1000. A checkpoint
/// copies each page once however often the WAL holds it, and runs inside a COMMIT on the one
/// writer's path; under steady writes, at 1000 pages it took a third of the writer's time, and
/// refresh grants went from ~4,900 to ~5,800/s with 10,000. The WAL file stays under ~45 MB.
const WAL_CHECKPOINT_PAGES: u32 = 10_000;

/// The longest a quick read (`Store::read_quick`, on the executor) waits for SQLite.
const QUICK_BUSY: Duration = Duration::from_millis(100);

/// How often the checkpointer thread copies committed pages into the database file while
/// writes go on. Refresh grants after 100,000 add_users, 10-second runs: p99 26-27 -> 22-24 ms.
const CHECKPOINT_EVERY: Duration = Duration::from_millis(100);

/// Prepared statements kept per connection: more than gatehouse has.
const STATEMENT_CACHE: usize = 256;

/// The log of token uses (`token_uses`, see core::uses), beside the database file: `uses.db`.
///
/// A file of its own so that a server answering only token checks commits nothing to the
/// database file: after any commit there, every reading connection drops its map of the file at
/// its next read and faults the pages it reads in again (`pagerBeginReadTransaction`); the log's
/// one commit a second was enough. On 10,000,000 tokens (1.8 GB) that was 1.5-1.8 page faults
/// and ~50 µs of CPU per random check, against 0.2 and ~35 µs with the log here (BENCHMARKS.md).
/// `synchronous = NORMAL` (WAL): a commit survives a crash of the process, and a power loss may
/// lose the last uses since the log's last checkpoint, which can only make a token idle out
/// earlier, never keep one alive, and saves the disk an fsync a second beside the database's.
pub fn uses_log_path(db: &Path) -> PathBuf {
    db.with_file_name("uses.db")
}

/// The log's one table (it has no versions: a sequence number, a token's id, a time). Sequence
/// numbers are never given twice (AUTOINCREMENT), even once the fold has emptied the log: the
/// fold forgets the uses up to the last number it read, not ones logged while it ran.
const USES_LOG_SCHEMA: &str = "CREATE TABLE IF NOT EXISTS token_uses (
    seq         INTEGER PRIMARY KEY AUTOINCREMENT,
    token_id    INTEGER NOT NULL,
    used_at     INTEGER NOT NULL
) STRICT;";

/// Opens (creating if need be) the log of token uses at `path`.
fn open_uses_log(path: &Path, busy: Duration) -> rusqlite::Result<Connection> {
    let conn = Connection::open(path)?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let _ = std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600));
    }
    conn.busy_timeout(busy)?;
    conn.execute_batch(&format!("PRAGMA journal_mode = WAL; PRAGMA synchronous = NORMAL; {USES_LOG_SCHEMA}"))?;
    Ok(conn)
}

/// The last use of each token in the log beside the database file `db` (none when there is no
/// log): for a copy of the database that should carry them (backup, migrate-store).
pub fn logged_uses_beside(db: &Path) -> rusqlite::Result<Vec<(i64, i64)>> {
    let path = uses_log_path(db);
    if !path.is_file() {
        return Ok(Vec::new());
    }
    let conn = Connection::open_with_flags(&path, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)?;
    conn.busy_timeout(Duration::from_secs(5))?;
    let exists: i64 =
        conn.query_row("SELECT count(*) FROM sqlite_schema WHERE name = 'token_uses'", [], |r| r.get(0))?;
    if exists == 0 {
        return Ok(Vec::new());
    }
    let mut st = conn.prepare("SELECT token_id, max(used_at) FROM token_uses GROUP BY token_id")?;
    let rows = st.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?.collect();
    rows
}

#[derive(Clone)]
pub struct Sqlite {
    pool: Pool,
    /// Read connections of their own for `Store::read_quick`, one per HTTP worker and one more.
    quick: std::sync::Arc<Vec<std::sync::Mutex<Connection>>>,
    waits: std::sync::Arc<std::sync::atomic::AtomicU64>,
    writer: std::sync::Arc<writer::Writer>,
    /// The connection to the log of token uses (`uses_log_path`).
    uses: std::sync::Arc<std::sync::Mutex<Connection>>,
}

/// A connection of its own to the database file, with the PRAGMAs every connection has.
fn open_with(path: &Path, busy: Duration, synchronous: &str, mmap: u64) -> rusqlite::Result<Connection> {
    let conn = Connection::open(path)?;
    set_pragmas(&conn, busy, synchronous, mmap)?;
    Ok(conn)
}

fn set_pragmas(conn: &Connection, busy: Duration, synchronous: &str, mmap: u64) -> rusqlite::Result<()> {
    conn.busy_timeout(busy)?;
    // rusqlite keeps 16 prepared statements by default; the writer alone runs more than that, and
    // an evicted statement is parsed again on its next use.
    conn.set_prepared_statement_cache_capacity(STATEMENT_CACHE);
    conn.execute_batch(&format!(
        "PRAGMA journal_mode = WAL; PRAGMA foreign_keys = ON; PRAGMA synchronous = {synchronous};
         PRAGMA mmap_size = {mmap};"
    ))
}

impl Sqlite {
    /// Opens (creating if need be) the database file, brings its schema up to date, and pools it.
    pub fn open(config: &Config) -> Result<Sqlite, OpenError> {
        let path = config.db_path();
        let name = path.display().to_string();
        let busy = config.store.busy_timeout.0;
        let sync = if config.store.synchronous == "normal" { "NORMAL" } else { "FULL" };
        let mmap = config.store.mmap_mb.saturating_mul(1 << 20);
        let writer = {
            let sq = |source| OpenError::Sqlite { path: name.clone(), source };
            let mut conn = Connection::open(&path).map_err(sq)?;
            // Password hashes and token digests live here: owner only.
            #[cfg(unix)]
            {
                use std::os::unix::fs::PermissionsExt;
                let _ = std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600));
            }
            set_pragmas(&conn, busy, sync, mmap).map_err(sq)?;
            migrate(&mut conn, &name)?;
            // The connection that migrated stays on as the process's one writer. It checkpoints
            // the WAL after a commit that leaves it longer than WAL_CHECKPOINT_PAGES; a thread of
            // its own checkpoints beside it (see `Writer::start_checkpointer`).
            conn.execute_batch(&format!("PRAGMA wal_autocheckpoint = {WAL_CHECKPOINT_PAGES}")).map_err(sq)?;
            let checkpoints = open_with(&path, busy, sync, mmap).map_err(sq)?;
            let thread = |source| OpenError::Thread { path: name.clone(), source };
            let writer = writer::Writer::start(conn).map_err(thread)?;
            writer.start_checkpointer(checkpoints, CHECKPOINT_EVERY).map_err(thread)?;
            writer
        };
        let manager = SqliteConnectionManager::file(&path).with_init(move |c| set_pragmas(c, busy, sync, mmap));
        let pool = r2d2::Pool::builder()
            .max_size(config.store.pool_size)
            .min_idle(Some(1))
            // r2d2 runs an empty statement on every checkout to test the connection (~3% of a
            // signed IAMPASS call); a SQLite connection to a local file does not go stale.
            .test_on_check_out(false)
            .connection_timeout(Duration::from_secs(30))
            .build(manager)
            .map_err(|source| OpenError::Pool { path: name, source })?;
        let quick = (0..=config.http_workers())
            .map(|_| open_with(&path, QUICK_BUSY.min(busy), sync, mmap).map(std::sync::Mutex::new))
            .collect::<rusqlite::Result<Vec<_>>>()
            .map_err(|source| OpenError::Sqlite { path: path.display().to_string(), source })?;
        let log = uses_log_path(&path);
        let uses = open_uses_log(&log, busy)
            .map_err(|source| OpenError::Sqlite { path: log.display().to_string(), source })?;
        Ok(Sqlite {
            pool,
            quick: std::sync::Arc::new(quick),
            waits: Default::default(),
            writer,
            uses: std::sync::Arc::new(std::sync::Mutex::new(uses)),
        })
    }

    /// Runs `f` in one transaction on the connection to the log of token uses (a file of its
    /// own, see `uses_log_path`), committed when `f` succeeds. Blocking.
    pub fn uses_log<T, E: From<Error>>(&self, f: impl FnOnce(&Db) -> Result<T, E>) -> Result<T, E> {
        let mut conn = self.uses.lock().unwrap_or_else(|p| p.into_inner());
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate).map_err(Error::from)?;
        let out = f(&Db::Sqlite(&tx))?;
        tx.commit().map_err(Error::from)?;
        Ok(out)
    }

    /// Runs `f`, one read of a few rows by an index, on a connection of its own without a trip
    /// to the blocking pool: a token check calls it on the executor. In WAL mode a reader never
    /// waits for the writer; SQLite makes it wait only while the WAL is being reset, for at
    /// most `QUICK_BUSY`. When every such connection is taken (a thread of the blocking pool
    /// may hold one) it falls back to the pool.
    pub fn read_quick<T, E: From<Error>>(&self, f: impl FnOnce(&Db) -> Result<T, E>) -> Result<T, E> {
        for slot in self.quick.iter() {
            if let Ok(conn) = slot.try_lock() {
                return f(&Db::Sqlite(&conn));
            }
        }
        self.with(f)
    }

    /// Runs `f` on a pooled connection. Blocking: call it from the blocking pool or the CLI.
    pub fn with<T, E: From<Error>>(&self, f: impl FnOnce(&Db) -> Result<T, E>) -> Result<T, E> {
        if self.pool.state().idle_connections == 0 {
            self.waits.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
        let conn = self.pool.get().map_err(Error::internal)?;
        f(&Db::Sqlite(&conn))
    }

    /// (calls that found no idle connection so far, open connections, idle connections).
    pub fn pool_stats(&self) -> (u64, u64, u64) {
        let st = self.pool.state();
        (
            self.waits.load(std::sync::atomic::Ordering::Relaxed),
            u64::from(st.connections),
            u64::from(st.idle_connections),
        )
    }

    /// Runs `f` as one write, all or nothing, on the process's one writer connection, and returns
    /// once it is committed (writes that arrive together share a commit). A failing `f` changes
    /// nothing. Must not be called from inside another `write`'s `f` (that fails at once).
    pub fn write<T, E: From<Error>>(&self, f: impl FnOnce(&Db) -> Result<T, E>) -> Result<T, E> {
        self.writer.write(|c| f(&Db::Sqlite(c)))
    }

    /// [`Store::write`] for async code and a small write: `f` runs on the writer's committer
    /// thread and the future resolves once it is committed, with no thread waiting for it.
    pub fn write_async<T, E, F>(&self, f: F) -> impl std::future::Future<Output = Result<T, E>> + use<T, E, F>
    where
        F: FnOnce(&Db) -> Result<T, E> + Send + 'static,
        T: Send + 'static,
        E: From<Error> + Send + 'static,
    {
        self.writer.write_async(move |c| f(&Db::Sqlite(c)))
    }

    /// (writes committed, commits made) by this process's writer.
    pub fn commit_stats(&self) -> (u64, u64) {
        self.writer.stats()
    }
}

/// The schema version this gatehouse brings databases to.
pub fn schema_version() -> i64 {
    versions(SCHEMA).last().map(|(n, _)| *n).unwrap_or(0)
}

/// Splits schema.sql into its `-- version N` blocks.
pub(super) fn versions(schema: &str) -> Vec<(i64, String)> {
    let mut out: Vec<(i64, String)> = Vec::new();
    for line in schema.lines() {
        if let Some(n) = line.strip_prefix("-- version ").and_then(|n| n.trim().parse::<i64>().ok()) {
            out.push((n, String::new()));
        } else if let Some((_, sql)) = out.last_mut() {
            sql.push_str(line);
            sql.push('\n');
        }
    }
    out
}

/// Applies every block of schema.sql above the file's `user_version`, each in its own transaction.
fn migrate(conn: &mut Connection, name: &str) -> Result<(), OpenError> {
    migrate_to(conn, name, i64::MAX)
}

/// A database in memory with schema.sql's blocks up to `version` applied, as `migrate` applies
/// them: the schema (`sqlite_schema`) a database gatehouse made has at that version. Restore
/// compares a backup's with it.
pub(super) fn reference_schema(version: i64) -> Result<Connection, OpenError> {
    let name = format!("the schema at version {version}");
    let mut conn = Connection::open_in_memory().map_err(|source| OpenError::Sqlite { path: name.clone(), source })?;
    migrate_to(&mut conn, &name, version)?;
    Ok(conn)
}

/// [`migrate`], applying no block above `target`.
fn migrate_to(conn: &mut Connection, name: &str, target: i64) -> Result<(), OpenError> {
    let sq = |source| OpenError::Sqlite { path: name.to_string(), source };
    let blocks = versions(SCHEMA);
    let known = blocks.last().map(|(n, _)| *n).unwrap_or(0);
    let current: i64 = conn.query_row("PRAGMA user_version", [], |r| r.get(0)).map_err(sq)?;
    if current > known {
        return Err(OpenError::TooNew { path: name.to_string(), found: current, known });
    }
    // A block may rebuild a table that others reference (SQLite cannot change a key in place):
    // with foreign keys on, dropping the old table would cascade into its children. They are off
    // while blocks run (the pragma cannot change inside a transaction), and every block must leave
    // them consistent before it commits.
    let pending = blocks.into_iter().filter(|(n, _)| *n > current && *n <= target).collect::<Vec<_>>();
    if pending.is_empty() {
        return Ok(());
    }
    conn.execute_batch("PRAGMA foreign_keys = OFF").map_err(sq)?;
    let result = (|| {
        for (version, sql) in pending {
            let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate).map_err(sq)?;
            // Another process may have migrated while we waited for the lock.
            let now: i64 = tx.query_row("PRAGMA user_version", [], |r| r.get(0)).map_err(sq)?;
            if now < version {
                tx.execute_batch(&sql).map_err(sq)?;
                let broken: i64 =
                    tx.query_row("SELECT count(*) FROM pragma_foreign_key_check", [], |r| r.get(0)).map_err(sq)?;
                if broken > 0 {
                    return Err(OpenError::Migration {
                        path: name.to_string(),
                        reason: format!("schema version {version} left {broken} rows whose foreign keys point nowhere"),
                    });
                }
                tx.execute_batch(&format!("PRAGMA user_version = {version}")).map_err(sq)?;
                log::info!("database {name}: schema migrated to version {version}");
            }
            tx.commit().map_err(sq)?;
        }
        Ok(())
    })();
    conn.execute_batch("PRAGMA foreign_keys = ON").map_err(sq)?;
    result
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::devices;

    #[test]
    fn schema_blocks_are_numbered_from_one_in_order() {
        let v = versions(SCHEMA);
        assert!(!v.is_empty());
        for (i, (n, sql)) in v.iter().enumerate() {
            assert_eq!(*n, i as i64 + 1);
            assert!(
                sql.contains("CREATE") || sql.contains("ALTER TABLE") || sql.contains("DROP TABLE"),
                "block {n} is empty"
            );
        }
    }

    #[test]
    fn migration_is_idempotent_and_refuses_newer_files() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.db");
        let mut conn = Connection::open(&path).unwrap();
        migrate(&mut conn, "t").unwrap();
        migrate(&mut conn, "t").unwrap();
        let v: i64 = conn.query_row("PRAGMA user_version", [], |r| r.get(0)).unwrap();
        assert_eq!(v, versions(SCHEMA).last().unwrap().0);
        conn.execute_batch("PRAGMA user_version = 999").unwrap();
        assert!(matches!(migrate(&mut conn, "t"), Err(OpenError::TooNew { found: 999, .. })));
    }

    #[test]
    fn a_quick_read_falls_back_to_the_pool_when_its_connections_are_taken() {
        let dir = tempfile::tempdir().unwrap();
        let mut config = Config { data_dir: dir.path().to_path_buf(), ..Config::default() };
        config.http.workers = 1;
        let store = Sqlite::open(&config).unwrap();
        let which = |c: &Db| match c {
            Db::Sqlite(c) => Ok::<_, Error>(*c as *const Connection as usize),
            Db::Pg(_) => unreachable!(),
        };
        let quick: Vec<usize> = store.quick.iter().map(|m| &*m.lock().unwrap() as *const Connection as usize).collect();
        assert_eq!(quick.len(), 2, "one per HTTP worker and one more");
        assert!(quick.contains(&store.read_quick(which).unwrap()));
        let held: Vec<_> = store.quick.iter().map(|m| m.lock().unwrap()).collect();
        assert!(!quick.contains(&store.read_quick(which).unwrap()), "answered by the pool");
        drop(held);
    }

    /// An in-memory database with the schema's blocks up to `version` applied.
    fn at_version(version: i64) -> Connection {
        let conn = Connection::open_in_memory().unwrap();
        for (n, sql) in versions(SCHEMA).into_iter().filter(|(n, _)| *n <= version) {
            conn.execute_batch(&sql).unwrap();
            conn.execute_batch(&format!("PRAGMA user_version = {n}")).unwrap();
        }
        conn
    }

    #[test]
    fn users_are_rebuilt_with_their_children_and_ids_are_never_reused_after() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.db");
        {
            let conn = Connection::open(&path).unwrap();
            for (n, sql) in versions(SCHEMA).into_iter().filter(|(n, _)| *n <= 8) {
                conn.execute_batch(&sql).unwrap();
                conn.execute_batch(&format!("PRAGMA user_version = {n}")).unwrap();
            }
            conn.execute_batch(
                "PRAGMA foreign_keys = ON;
                 INSERT INTO applications (id, created_at) VALUES ('app', 1);
                 INSERT INTO users (login, login_key, email, password_hash, workspace_id, created_at)
                     VALUES ('al', 'al', 'al@x', '$argon2id$x', 200007, 1), ('bo', 'bo', NULL, NULL, NULL, 2);
                 INSERT INTO memberships (user_id, app_id, created_at) VALUES (1, 'app', 3), (2, 'app', 3);
                 INSERT INTO tokens (digest, kind, user_id, app_id, created_at, last_used_at, idle_ms, expires_at)
                     VALUES (x'01', 'iam', 2, 'app', 10, 11, NULL, 40);",
            )
            .unwrap();
        }
        let mut conn = Connection::open(&path).unwrap();
        conn.execute_batch("PRAGMA foreign_keys = ON").unwrap();
        migrate(&mut conn, "t").unwrap();
        let count = |c: &Connection, sql: &str| -> i64 { c.query_row(sql, [], |r| r.get(0)).unwrap() };
        assert_eq!(count(&conn, "SELECT count(*) FROM memberships"), 2, "the rebuild cascaded into nothing");
        assert_eq!(count(&conn, "SELECT count(*) FROM tokens WHERE user_id = 2"), 1);
        assert_eq!(
            count(&conn, "SELECT count(*) FROM users WHERE password_hash = '$argon2id$x' AND email = 'al@x'"),
            1
        );
        assert_eq!(count(&conn, "PRAGMA foreign_keys"), 1, "foreign keys are on again");
        assert_eq!(count(&conn, "SELECT last FROM sequences WHERE name = 'workspace'"), 200007);
        // Deleting the newest user cascades as before, and the next user does not get its id.
        conn.execute_batch("DELETE FROM users WHERE id = 2").unwrap();
        assert_eq!(count(&conn, "SELECT count(*) FROM memberships"), 1);
        assert_eq!(count(&conn, "SELECT count(*) FROM tokens"), 0);
        conn.execute_batch("INSERT INTO users (login, login_key, created_at) VALUES ('cy', 'cy', 4)").unwrap();
        assert_eq!(count(&conn, "SELECT id FROM users WHERE login = 'cy'"), 3);
    }

    #[test]
    fn tokens_keep_every_row_and_column_when_their_table_is_rebuilt() {
        let conn = at_version(6);
        conn.execute_batch(
            "INSERT INTO applications (id, created_at) VALUES ('app', 1);
             INSERT INTO users (login, login_key, created_at) VALUES ('al', 'al', 1);
             INSERT INTO tokens (digest, kind, user_id, app_id, created_at, last_used_at, idle_ms, expires_at,
                                 revoked_at, family, used_at)
                 VALUES (x'02', 'iqm_refresh', 1, 'app', 20, 21, 5, 30, NULL, x'0f', 25),
                        (x'01', 'iam', 1, 'app', 10, 11, NULL, 40, 12, NULL, NULL);",
        )
        .unwrap();
        let rows = |c: &Connection| -> Vec<String> {
            c.prepare(
                "SELECT quote(digest), kind, user_id, app_id, created_at, last_used_at, idle_ms, expires_at,
                        revoked_at, quote(family), used_at FROM tokens ORDER BY created_at",
            )
            .unwrap()
            .query_map([], |r| {
                Ok(format!("{:?}", (0..11).map(|i| r.get::<_, rusqlite::types::Value>(i).unwrap()).collect::<Vec<_>>()))
            })
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap()
        };
        let before = rows(&conn);
        let mut conn = conn;
        migrate(&mut conn, "t").unwrap();
        assert_eq!(rows(&conn), before);
        let dup = conn.execute(
            "INSERT INTO tokens (digest, kind, user_id, app_id, created_at, last_used_at, expires_at)
             VALUES (x'01', 'iam', 1, 'app', 1, 1, 1)",
            [],
        );
        assert!(
            dup.is_err_and(|e| e.sqlite_error_code() == Some(rusqlite::ErrorCode::ConstraintViolation)),
            "a digest stays unique"
        );
    }

    #[test]
    fn the_old_log_of_uses_is_folded_into_the_tokens_when_it_moves_to_its_own_file() {
        let conn = at_version(13);
        conn.execute_batch(
            "INSERT INTO applications (id, created_at) VALUES ('app', 1);
             INSERT INTO users (login, login_key, created_at) VALUES ('al', 'al', 1);
             INSERT INTO tokens (id, digest, kind, user_id, app_id, created_at, last_used_at, idle_ms, expires_at)
                 VALUES (1, x'01', 'iam', 1, 'app', 10, 50, 100, 1000),
                        (2, x'02', 'iam', 1, 'app', 10, 50, 100, 1000),
                        (3, x'03', 'iam', 1, 'app', 10, 50, 100, 1000);
             INSERT INTO token_uses (token_id, used_at) VALUES (1, 70), (1, 90), (1, 80), (2, 40), (9, 99);",
        )
        .unwrap();
        let mut conn = conn;
        migrate(&mut conn, "t").unwrap();
        let last: Vec<i64> = conn
            .prepare("SELECT last_used_at FROM tokens ORDER BY id")
            .unwrap()
            .query_map([], |r| r.get(0))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        assert_eq!(last, [90, 50, 50], "the last use of each, never moving one back");
        let left: i64 =
            conn.query_row("SELECT count(*) FROM sqlite_schema WHERE name = 'token_uses'", [], |r| r.get(0)).unwrap();
        assert_eq!(left, 0, "the database file holds no log any more");
    }

    #[test]
    fn the_log_of_uses_is_a_file_of_its_own_and_never_gives_a_number_twice() {
        let dir = tempfile::tempdir().unwrap();
        let config = Config { data_dir: dir.path().to_path_buf(), ..Config::default() };
        let store = Sqlite::open(&config).unwrap();
        let log = |uses: &[(i64, i64)]| store.uses_log(|c| crate::store::tokens::log_uses(c, uses)).unwrap();
        assert_eq!(log(&[(1, 10), (2, 10)]), 2);
        store.uses_log(|c| crate::store::tokens::forget_uses(c, 2)).unwrap();
        assert_eq!(log(&[(1, 20)]), 3, "an emptied log goes on from its last number");
        assert!(uses_log_path(&config.db_path()).is_file());
        assert_eq!(logged_uses_beside(&config.db_path()).unwrap(), vec![(1, 20)]);
        let (uses, upto) = store.uses_log(crate::store::tokens::logged_uses).unwrap();
        assert_eq!((uses, upto), (vec![(1, 20)], 3));
    }

    #[test]
    fn nonces_move_to_the_log_and_the_reaper_removes_only_its_expired_head() {
        let conn = at_version(5);
        conn.execute("INSERT INTO nonces (app_id, nonce, expires_at) VALUES ('a', 'old', 100)", []).unwrap();
        let mut conn = conn;
        migrate(&mut conn, "t").unwrap();
        let db = Db::Sqlite(&conn);
        assert_eq!(devices::live_nonces(&db, 0).unwrap(), vec![("a".into(), "old".into(), 100)]);

        devices::log_nonce(&db, "a", "ahead", 500).unwrap();
        devices::log_nonce(&db, "a", "late", 200).unwrap();
        devices::log_nonce(&db, "a", "later", 300).unwrap();
        // At 150 the head ("old") expired; "late" expired at 200 but waits behind the live "ahead".
        assert_eq!(devices::reap_nonces(&db, 150, 1000).unwrap(), 1);
        assert_eq!(devices::reap_nonces(&db, 250, 1000).unwrap(), 0);
        assert_eq!(
            devices::live_nonces(&db, 250).unwrap(),
            vec![("a".into(), "ahead".into(), 500), ("a".into(), "later".into(), 300)]
        );
        // In batches: two rows, then the last.
        assert_eq!(devices::reap_nonces(&db, 500, 2).unwrap(), 2);
        assert_eq!(devices::reap_nonces(&db, 500, 2).unwrap(), 1);
        assert_eq!(devices::reap_nonces(&db, 500, 2).unwrap(), 0);
    }
}
