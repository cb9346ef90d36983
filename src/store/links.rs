//! links: single-use codes (password reset, device registration), stored as digests.

use super::db::Db;
use super::Error;
use crate::args;

pub struct LinkRow {
    pub user_id: i64,
    pub app_id: Option<String>,
    pub display_name: Option<String>,
    pub expires_at: i64,
}

pub struct NewLink<'a> {
    pub digest: [u8; 32],
    pub purpose: &'a str,
    pub user_id: i64,
    pub app_id: Option<&'a str>,
    pub display_name: Option<&'a str>,
    pub created_at: i64,
    pub expires_at: i64,
}

/// Inserts a link and voids the user's older unused links of the same purpose (and application).
pub fn insert_voiding_older(conn: &Db, l: &NewLink<'_>) -> Result<usize, Error> {
    let voided = void_for_user(conn, l.user_id, l.purpose, l.app_id, l.created_at)?;
    conn.execute(
        "INSERT INTO links (digest, purpose, user_id, app_id, display_name, created_at, expires_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
        args![&l.digest[..], l.purpose, l.user_id, l.app_id, l.display_name, l.created_at, l.expires_at],
    )?;
    Ok(voided)
}

/// A link that can still be used: not used, not voided, not expired.
pub fn live(conn: &Db, digest: &[u8; 32], purpose: &str, now: i64) -> Result<Option<LinkRow>, Error> {
    conn.query_opt(
        "SELECT user_id, app_id, display_name, expires_at FROM links
         WHERE digest = ?1 AND purpose = ?2 AND used_at IS NULL AND voided_at IS NULL AND expires_at > ?3",
        args![&digest[..], purpose, now],
        |r| Ok(LinkRow { user_id: r.get(0)?, app_id: r.get(1)?, display_name: r.get(2)?, expires_at: r.get(3)? }),
    )
}

/// Marks a live link used; None when it was not live (used, voided, expired or unknown).
pub fn consume(conn: &Db, digest: &[u8; 32], purpose: &str, now: i64) -> Result<Option<LinkRow>, Error> {
    let Some(row) = live(conn, digest, purpose, now)? else { return Ok(None) };
    let n =
        conn.execute("UPDATE links SET used_at = ?2 WHERE digest = ?1 AND used_at IS NULL", args![&digest[..], now])?;
    Ok((n == 1).then_some(row))
}

/// Voids every unused link of a user for a purpose (and application).
pub fn void_for_user(conn: &Db, user_id: i64, purpose: &str, app_id: Option<&str>, now: i64) -> Result<usize, Error> {
    conn.execute(
        "UPDATE links SET voided_at = ?4
         WHERE user_id = ?1 AND purpose = ?2 AND app_id IS NOT DISTINCT FROM CAST(?3 AS TEXT)
           AND used_at IS NULL AND voided_at IS NULL",
        args![user_id, purpose, app_id, now],
    )
}

/// Deletes at most `batch` links past their expiry (used and voided ones are kept until then, so
/// that a second use is told "gone" rather than "unknown"); returns how many.
pub fn reap(conn: &Db, now: i64, batch: i64) -> Result<usize, Error> {
    conn.execute(
        "DELETE FROM links WHERE digest IN (SELECT digest FROM links WHERE expires_at <= ?1 LIMIT ?2)",
        args![now, batch],
    )
}
