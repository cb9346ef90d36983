//! devices and nonces

use rusqlite::{params, Connection};

use crate::core::Error;

pub fn insert(
    conn: &Connection,
    user_id: i64,
    app_id: &str,
    name: &str,
    api_key_id: &str,
    now: i64,
) -> Result<i64, Error> {
    conn.prepare_cached(
        "INSERT INTO devices (user_id, app_id, name, api_key_id, created_at) VALUES (?1, ?2, ?3, ?4, ?5)",
    )?
    .execute(params![user_id, app_id, name, api_key_id, now])?;
    Ok(conn.last_insert_rowid())
}

pub fn has_live(conn: &Connection, user_id: i64, app_id: &str) -> Result<bool, Error> {
    Ok(conn
        .prepare_cached("SELECT EXISTS (SELECT 1 FROM devices WHERE user_id = ?1 AND app_id = ?2 AND lost_at IS NULL)")?
        .query_row(params![user_id, app_id], |r| r.get(0))?)
}

/// Marks the user's live devices for an application lost; returns their API keys.
pub fn mark_lost(conn: &Connection, user_id: i64, app_id: &str, now: i64) -> Result<Vec<String>, Error> {
    let keys: Vec<String> = conn
        .prepare("SELECT api_key_id FROM devices WHERE user_id = ?1 AND app_id = ?2 AND lost_at IS NULL AND api_key_id IS NOT NULL")?
        .query_map(params![user_id, app_id], |r| r.get(0))?
        .collect::<Result<_, _>>()?;
    conn.prepare_cached("UPDATE devices SET lost_at = ?3 WHERE user_id = ?1 AND app_id = ?2 AND lost_at IS NULL")?
        .execute(params![user_id, app_id, now])?;
    Ok(keys)
}

pub fn delete_for(conn: &Connection, user_id: i64, app_id: &str) -> Result<usize, Error> {
    Ok(conn
        .prepare_cached("DELETE FROM devices WHERE user_id = ?1 AND app_id = ?2")?
        .execute(params![user_id, app_id])?)
}

/// Appends a spent nonce to the log, to be kept until `expires_at`. The log has no index: whether
/// a nonce was spent is asked of the set in memory (`Core::use_nonce`), which this log refills.
pub fn log_nonce(conn: &Connection, app_id: &str, nonce: &str, expires_at: i64) -> Result<(), Error> {
    conn.prepare_cached("INSERT INTO nonces (app_id, nonce, expires_at) VALUES (?1, ?2, ?3)")?
        .execute(params![app_id, nonce, expires_at])?;
    Ok(())
}

/// The nonces still kept at `now`: (application, nonce, kept until).
pub fn live_nonces(conn: &Connection, now: i64) -> Result<Vec<(String, String, i64)>, Error> {
    let mut stmt = conn.prepare("SELECT app_id, nonce, expires_at FROM nonces WHERE expires_at > ?1")?;
    let rows = stmt.query_map(params![now], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?;
    Ok(rows.collect::<Result<_, _>>()?)
}

/// Removes the head of the log up to its first nonce still kept at `now`. The log is written in
/// time order and a nonce is kept until its own timestamp plus the window, so the head is nearly
/// all that expired; a row that expired behind a live one waits for a later pass (at most one
/// window longer), and no live row is ever removed.
pub fn reap_nonces(conn: &Connection, now: i64) -> Result<usize, Error> {
    Ok(conn
        .prepare_cached(
            "DELETE FROM nonces WHERE rowid < coalesce(
             (SELECT rowid FROM nonces WHERE expires_at > ?1 ORDER BY rowid LIMIT 1),
             (SELECT max(rowid) + 1 FROM nonces), 0)",
        )?
        .execute(params![now])?)
}
