//! api_keys

use rusqlite::{params, Connection, OptionalExtension};

use crate::core::Error;

pub struct ApiKeyRow {
    pub id: String,
    pub secret_digest: Vec<u8>,
    pub user_id: i64,
    pub app_id: String,
    pub created_at: i64,
    pub expires_at: Option<i64>,
    pub revoked_at: Option<i64>,
}

pub fn insert(conn: &Connection, k: &ApiKeyRow) -> Result<(), Error> {
    conn.prepare_cached(
        "INSERT INTO api_keys (id, secret_digest, user_id, app_id, created_at, expires_at, revoked_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
    )?
    .execute(params![k.id, k.secret_digest, k.user_id, k.app_id, k.created_at, k.expires_at, k.revoked_at])?;
    Ok(())
}

pub fn by_id(conn: &Connection, id: &str) -> Result<Option<ApiKeyRow>, Error> {
    Ok(conn
        .prepare_cached(
            "SELECT id, secret_digest, user_id, app_id, created_at, expires_at, revoked_at
             FROM api_keys WHERE id = ?1",
        )?
        .query_row([id], |r| {
            Ok(ApiKeyRow {
                id: r.get(0)?,
                secret_digest: r.get(1)?,
                user_id: r.get(2)?,
                app_id: r.get(3)?,
                created_at: r.get(4)?,
                expires_at: r.get(5)?,
                revoked_at: r.get(6)?,
            })
        })
        .optional()?)
}

/// Every key with its owner's login, newest first.
pub fn list(conn: &Connection) -> Result<Vec<(ApiKeyRow, String)>, Error> {
    let mut st = conn.prepare(
        "SELECT k.id, k.user_id, k.app_id, k.created_at, k.expires_at, k.revoked_at, u.login
         FROM api_keys k JOIN users u ON u.id = k.user_id ORDER BY k.created_at DESC, k.id",
    )?;
    let rows = st.query_map([], |r| {
        Ok((
            ApiKeyRow {
                id: r.get(0)?,
                secret_digest: Vec::new(),
                user_id: r.get(1)?,
                app_id: r.get(2)?,
                created_at: r.get(3)?,
                expires_at: r.get(4)?,
                revoked_at: r.get(5)?,
            },
            r.get(6)?,
        ))
    })?;
    Ok(rows.collect::<Result<_, _>>()?)
}

/// Revokes a key; false when it was unknown or revoked already.
pub fn revoke(conn: &Connection, id: &str, now: i64) -> Result<bool, Error> {
    let n = conn
        .prepare_cached("UPDATE api_keys SET revoked_at = ?2 WHERE id = ?1 AND revoked_at IS NULL")?
        .execute(params![id, now])?;
    Ok(n == 1)
}

/// Revokes every live key of a user for an application (all applications when `app_id` is None).
pub fn revoke_for_user(conn: &Connection, user_id: i64, app_id: Option<&str>, now: i64) -> Result<usize, Error> {
    Ok(conn
        .prepare_cached(
            "UPDATE api_keys SET revoked_at = ?3
         WHERE user_id = ?1 AND (?2 IS NULL OR app_id = ?2) AND revoked_at IS NULL",
        )?
        .execute(params![user_id, app_id, now])?)
}
