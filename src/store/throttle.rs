//! throttle: failed sign-ins per account and per address, shared by every node (PostgreSQL).
//! With SQLite the counts stay in memory (the core's sign-in throttle).

use super::db::Db;
use super::Error;
use crate::args;

/// One key's count, as the core's sign-in throttle keeps it.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Entry {
    pub failures: i64,
    pub window_start: i64,
    pub last_failure: i64,
    pub locked_until: i64,
}

pub fn get(conn: &Db, key: &str) -> Result<Option<Entry>, Error> {
    conn.query_opt(
        "SELECT failures, window_start, last_failure, locked_until FROM throttle WHERE key = ?1",
        args![key],
        |r| {
            Ok(Entry { failures: r.get(0)?, window_start: r.get(1)?, last_failure: r.get(2)?, locked_until: r.get(3)? })
        },
    )
}

/// Reads a key's count for an update: a second node counting the same key waits for this write.
pub fn get_for_update(conn: &Db, key: &str) -> Result<Option<Entry>, Error> {
    // The row is created first, so that two nodes counting a new key serialize on it.
    conn.execute(
        "INSERT INTO throttle (key, failures, window_start, last_failure, locked_until) VALUES (?1, 0, 0, 0, 0)
         ON CONFLICT (key) DO NOTHING",
        args![key],
    )?;
    let sql = if conn.is_postgres() {
        "SELECT failures, window_start, last_failure, locked_until FROM throttle WHERE key = ?1 FOR UPDATE"
    } else {
        "SELECT failures, window_start, last_failure, locked_until FROM throttle WHERE key = ?1"
    };
    conn.query_opt(sql, args![key], |r| {
        Ok(Entry { failures: r.get(0)?, window_start: r.get(1)?, last_failure: r.get(2)?, locked_until: r.get(3)? })
    })
}

pub fn put(conn: &Db, key: &str, e: &Entry) -> Result<(), Error> {
    conn.execute(
        "UPDATE throttle SET failures = ?2, window_start = ?3, last_failure = ?4, locked_until = ?5 WHERE key = ?1",
        args![key, e.failures, e.window_start, e.last_failure, e.locked_until],
    )?;
    Ok(())
}

pub fn clear(conn: &Db, key: &str) -> Result<(), Error> {
    conn.execute("DELETE FROM throttle WHERE key = ?1", args![key])?;
    Ok(())
}

/// Deletes at most `batch` counts that no longer hold anyone back: neither locked at `now` nor
/// within their window (`keep` ms after it started).
pub fn reap(conn: &Db, now: i64, keep: i64, batch: i64) -> Result<usize, Error> {
    conn.execute(
        "DELETE FROM throttle WHERE key IN (SELECT key FROM throttle
         WHERE locked_until <= ?1 AND window_start + ?2 <= ?1 LIMIT ?3)",
        args![now, keep, batch],
    )
}
