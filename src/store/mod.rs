//! The store: the only code that speaks SQL, over one of two backends chosen by configuration.
//!
//! - SQLite (`store.backend = "sqlite"`, the default): one file in the data directory, one process.
//! - PostgreSQL (`"postgres"`): shared by several gatehouse nodes, none of which keeps state that
//!   matters; what guards security and lives in memory with SQLite (spent nonces, the sign-in
//!   throttle) is kept in the database instead ([`Store::is_shared`]).
//!
//! The core reaches either through the same five calls: [`Store::with`] (a read),
//! [`Store::read_quick`] (a read by index, on the executor with SQLite), [`Store::write`] (one
//! transaction, answered once committed), [`Store::write_async`] (the same from async code) and
//! [`Store::ping`]. Each hands its closure a [`Db`], on which the table modules (`users`, `tokens`,
//! ...) run SQL that both backends understand. They block; async code reaches them off the
//! executor (the core's `Core::call`, inside [`blocking`]).
//!
//! The store speaks its own language: its functions answer [`Error`] and their own row types.
//! The closures given to `with`, `read_quick`, `write` and `write_async` may fail with an error
//! of their caller's (the core's, whose operations refuse inside a transaction), any `E` that a
//! store [`Error`] converts into; the store builds one only from its own failures (no
//! connection, a failed commit). Whether a PostgreSQL transaction runs again is decided by what
//! its connection recorded (`db::Fault`), never by the error value.

pub mod account;
pub mod apikeys;
pub mod apps;
pub mod audit;
pub mod auth_sessions;
pub mod backup;
pub mod db;
pub mod devices;
mod error;
pub mod links;
pub mod migrate;
pub mod oidc;
mod postgres;
pub mod second_factors;
pub mod signing_keys;
mod sqlite;
pub mod throttle;
pub mod tokens;
pub mod users;
mod writer;

use std::future::Future;
use std::path::Path;

pub use db::Db;
pub use error::Error;
pub use sqlite::{logged_uses_beside, schema_version, uses_log_path, SCHEMA};

use crate::args;
use crate::config::Config;

#[derive(Clone)]
pub struct Store(Backend);

#[derive(Clone)]
enum Backend {
    Sqlite(sqlite::Sqlite),
    Postgres(postgres::Postgres),
}

#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    #[error("database {path}: {source}")]
    Sqlite { path: String, source: rusqlite::Error },
    #[error("database {path}: {source}")]
    Pool { path: String, source: r2d2::Error },
    #[error("database {path}: a writer thread could not start: {source}")]
    Thread { path: String, source: std::io::Error },
    #[error("database {path} is at schema version {found}, newer than this gatehouse knows ({known}); use a newer gatehouse")]
    TooNew { path: String, found: i64, known: i64 },
    #[error("database {path}: {reason}")]
    Migration { path: String, reason: String },
    /// The PostgreSQL server named by store.postgres_url (never printed whole: it may hold a password).
    #[error("postgres {server}: {reason}")]
    Postgres { server: String, reason: String },
}

impl Store {
    /// Opens the configured backend, brings its schema up to date, and pools its connections.
    pub fn open(config: &Config) -> Result<Store, OpenError> {
        Ok(Store(match config.store.backend.as_str() {
            "postgres" => Backend::Postgres(off_executor(|| postgres::Postgres::open(config))?),
            _ => Backend::Sqlite(sqlite::Sqlite::open(config)?),
        }))
    }

    /// "sqlite" or "postgres".
    pub fn backend(&self) -> &'static str {
        match &self.0 {
            Backend::Sqlite(_) => "sqlite",
            Backend::Postgres(_) => "postgres",
        }
    }

    /// True when other processes share this store (PostgreSQL): state that guards security must
    /// then live in it, not in this process's memory.
    pub fn is_shared(&self) -> bool {
        matches!(self.0, Backend::Postgres(_))
    }

    /// Runs `f`, a few reads by index. SQLite: on a connection of its own, right here (a token
    /// check calls it on the executor). PostgreSQL: on a pooled connection, so call it off the
    /// executor (`Core::quick` does).
    pub fn read_quick<T: Send, E: From<Error> + Send>(
        &self,
        f: impl FnMut(&Db) -> Result<T, E> + Send,
    ) -> Result<T, E> {
        match &self.0 {
            Backend::Sqlite(s) => s.read_quick(f),
            Backend::Postgres(p) => off_executor(|| p.with(f)),
        }
    }

    /// Runs `f`, reads, on a pooled connection. Blocking: call it from the blocking pool or the CLI.
    /// PostgreSQL: run once more on a new connection when the first one turned out lost.
    pub fn with<T: Send, E: From<Error> + Send>(&self, f: impl FnMut(&Db) -> Result<T, E> + Send) -> Result<T, E> {
        match &self.0 {
            Backend::Sqlite(s) => s.with(f),
            Backend::Postgres(p) => off_executor(|| p.with(f)),
        }
    }

    /// Runs `f` as one write, all or nothing, and returns once it is committed. A failing `f`
    /// changes nothing. SQLite: on the process's one writer, with group commit; must not be called
    /// from inside another `write`'s `f`. PostgreSQL: a SERIALIZABLE transaction, run again
    /// (so `f` must do nothing but its writes) after a serialization failure, a deadlock, or a
    /// connection lost before COMMIT; answered `Busy` or `Unavailable` (the core's 503) when it
    /// still cannot commit.
    pub fn write<T: Send, E: From<Error> + Send>(&self, mut f: impl FnMut(&Db) -> Result<T, E> + Send) -> Result<T, E> {
        match &self.0 {
            Backend::Sqlite(s) => s.write(f),
            Backend::Postgres(p) => off_executor(|| p.write(&mut f)),
        }
    }

    /// [`Store::write`] for async code and a small write: the future resolves once it is
    /// committed. SQLite runs `f` on the writer's committer thread, PostgreSQL on the blocking pool.
    pub fn write_async<T, E, F>(&self, f: F) -> impl Future<Output = Result<T, E>> + use<T, E, F>
    where
        F: FnMut(&Db) -> Result<T, E> + Send + 'static,
        T: Send + 'static,
        E: From<Error> + Send + 'static,
    {
        use futures_util::future::Either;
        match &self.0 {
            Backend::Sqlite(s) => Either::Left(s.write_async(f)),
            Backend::Postgres(p) => {
                let p = p.clone();
                let mut f = f;
                Either::Right(async move {
                    tokio::task::spawn_blocking(move || blocking(|| p.write(&mut f)))
                        .await
                        .map_err(|e| E::from(Error::internal(e)))?
                })
            }
        }
    }

    /// SQLite: runs `f` in one transaction on the log of token uses, a file of its own beside
    /// the database (`uses_log_path`), so that writing uses commits nothing to the database file.
    /// PostgreSQL has no such log (its nodes share uses through the tokens' rows): an error.
    pub fn uses_log<T, E: From<Error>>(&self, f: impl FnOnce(&Db) -> Result<T, E>) -> Result<T, E> {
        match &self.0 {
            Backend::Sqlite(s) => s.uses_log(f),
            Backend::Postgres(_) => Err(E::from(Error::internal("the log of token uses is SQLite's"))),
        }
    }

    /// The database answers a trivial query (on SQLite on the executor, like a token check).
    pub fn ping(&self) -> Result<(), Error> {
        self.read_quick(|c| c.value::<i64>("SELECT 1", args![]).map(|_| ()))
    }

    /// (calls that found no idle connection so far, open connections, idle connections).
    pub fn pool_stats(&self) -> (u64, u64, u64) {
        match &self.0 {
            Backend::Sqlite(s) => s.pool_stats(),
            Backend::Postgres(p) => p.pool_stats(),
        }
    }

    /// (writes committed, commits made) by this process.
    pub fn commit_stats(&self) -> (u64, u64) {
        match &self.0 {
            Backend::Sqlite(s) => s.commit_stats(),
            Backend::Postgres(p) => p.commit_stats(),
        }
    }

    /// (transactions run again after a serialization failure or a lost connection, store
    /// failures answered 503) by this process.
    pub fn fault_stats(&self) -> (u64, u64) {
        match &self.0 {
            Backend::Sqlite(_) => (0, 0),
            Backend::Postgres(p) => p.fault_stats(),
        }
    }
}

thread_local! {
    /// Set while this thread runs blocking work for async code (`blocking`).
    static BLOCKING: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Runs `f`, blocking work that async code handed to tokio's blocking pool (`Core::call` does).
/// PostgreSQL's client may block there; see `off_executor`.
pub fn blocking<T>(f: impl FnOnce() -> T) -> T {
    struct Reset(bool);
    impl Drop for Reset {
        fn drop(&mut self) {
            BLOCKING.with(|b| b.set(self.0));
        }
    }
    let _reset = Reset(BLOCKING.with(|b| b.replace(true)));
    f()
}

/// True on an async executor's thread (not in `blocking`, not on a plain thread).
fn on_executor() -> bool {
    !BLOCKING.with(|b| b.get()) && tokio::runtime::Handle::try_current().is_ok()
}

/// Runs `f`, which drives PostgreSQL's client (a runtime of its own that must not start inside
/// another): right here on the blocking pool, the command line or any plain thread; on a thread of
/// its own when called from an async executor's thread (which the server never does, but a test
/// calling the core from async code does), rather than panicking.
fn off_executor<T: Send>(f: impl FnOnce() -> T + Send) -> T {
    if !on_executor() {
        return f();
    }
    std::thread::scope(|s| s.spawn(f).join()).unwrap_or_else(|panic| std::panic::resume_unwind(panic))
}

/// Takes a lock that only one node holds at a time, for the rest of the transaction `tx`
/// (the reaper's); false when another node holds it. SQLite has one process: always true.
pub fn try_cluster_lock(tx: &Db, key: i64) -> Result<bool, Error> {
    if !tx.is_postgres() {
        return Ok(true);
    }
    tx.value("SELECT pg_try_advisory_xact_lock(?1)", args![key])
}

/// Creates the data directory (0700 on Unix) if it does not exist.
/// Creates and removes a probe file in `dir`: a read-only data directory (a read-only mount, a
/// user who may not write there) is named as such at once, not as a database error later.
pub fn check_writable(dir: &Path) -> std::io::Result<()> {
    let probe = dir.join(format!(".write-probe-{}", std::process::id()));
    std::fs::OpenOptions::new().write(true).create(true).truncate(true).open(&probe)?;
    std::fs::remove_file(&probe)
}

pub fn ensure_dir(dir: &Path) -> std::io::Result<()> {
    if dir.is_dir() {
        return Ok(());
    }
    let mut b = std::fs::DirBuilder::new();
    b.recursive(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::DirBuilderExt;
        b.mode(0o700);
    }
    b.create(dir)
}
