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
    conn.execute(
        "INSERT INTO devices (user_id, app_id, name, api_key_id, created_at) VALUES (?1, ?2, ?3, ?4, ?5)",
        params![user_id, app_id, name, api_key_id, now],
    )?;
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
    conn.execute(
        "UPDATE devices SET lost_at = ?3 WHERE user_id = ?1 AND app_id = ?2 AND lost_at IS NULL",
        params![user_id, app_id, now],
    )?;
    Ok(keys)
}

pub fn delete_for(conn: &Connection, user_id: i64, app_id: &str) -> Result<usize, Error> {
    Ok(conn.execute("DELETE FROM devices WHERE user_id = ?1 AND app_id = ?2", params![user_id, app_id])?)
}

/// Records a nonce for `app_id` until `expires_at`; false when it was seen already.
pub fn use_nonce(conn: &Connection, app_id: &str, nonce: &str, expires_at: i64) -> Result<bool, Error> {
    let n = conn
        .prepare_cached("INSERT INTO nonces (app_id, nonce, expires_at) VALUES (?1, ?2, ?3) ON CONFLICT DO NOTHING")?
        .execute(params![app_id, nonce, expires_at])?;
    Ok(n == 1)
}

pub fn reap_nonces(conn: &Connection, now: i64) -> Result<usize, Error> {
    Ok(conn.execute("DELETE FROM nonces WHERE expires_at <= ?1", params![now])?)
}
