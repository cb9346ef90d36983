//! api_keys

use super::db::{Db, Row};
use super::Error;
use crate::args;

pub struct ApiKeyRow {
    pub id: String,
    pub secret_digest: Vec<u8>,
    pub user_id: i64,
    pub app_id: String,
    pub created_at: i64,
    pub expires_at: Option<i64>,
    pub revoked_at: Option<i64>,
}

pub fn insert(conn: &Db, k: &ApiKeyRow) -> Result<(), Error> {
    conn.execute(
        "INSERT INTO api_keys (id, secret_digest, user_id, app_id, created_at, expires_at, revoked_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
        args![k.id, k.secret_digest, k.user_id, k.app_id, k.created_at, k.expires_at, k.revoked_at],
    )?;
    Ok(())
}

/// A key read from the columns id, secret_digest, user_id, app_id, created_at, expires_at,
/// revoked_at.
fn key(r: &Row<'_>) -> Result<ApiKeyRow, Error> {
    Ok(ApiKeyRow {
        id: r.get(0)?,
        secret_digest: r.get(1)?,
        user_id: r.get(2)?,
        app_id: r.get(3)?,
        created_at: r.get(4)?,
        expires_at: r.get(5)?,
        revoked_at: r.get(6)?,
    })
}

pub fn by_id(conn: &Db, id: &str) -> Result<Option<ApiKeyRow>, Error> {
    conn.query_opt(
        "SELECT id, secret_digest, user_id, app_id, created_at, expires_at, revoked_at
         FROM api_keys WHERE id = ?1",
        args![id],
        key,
    )
}

/// Every key with its owner's login, newest first (without the secrets' digests).
pub fn list(conn: &Db) -> Result<Vec<(ApiKeyRow, String)>, Error> {
    conn.query_all(
        "SELECT k.id, k.secret_digest, k.user_id, k.app_id, k.created_at, k.expires_at, k.revoked_at, u.login
         FROM api_keys k JOIN users u ON u.id = k.user_id ORDER BY k.created_at DESC, k.id",
        args![],
        |r| Ok((ApiKeyRow { secret_digest: Vec::new(), ..key(r)? }, r.get(7)?)),
    )
}

/// Revokes a key; false when it was unknown or revoked already.
pub fn revoke(conn: &Db, id: &str, now: i64) -> Result<bool, Error> {
    let n = conn.execute("UPDATE api_keys SET revoked_at = ?2 WHERE id = ?1 AND revoked_at IS NULL", args![id, now])?;
    Ok(n == 1)
}

/// Revokes every live key of a user for an application (all applications when `app_id` is None).
pub fn revoke_for_user(conn: &Db, user_id: i64, app_id: Option<&str>, now: i64) -> Result<usize, Error> {
    conn.execute(
        "UPDATE api_keys SET revoked_at = ?3
         WHERE user_id = ?1 AND (CAST(?2 AS TEXT) IS NULL OR app_id = ?2) AND revoked_at IS NULL",
        args![user_id, app_id, now],
    )
}
