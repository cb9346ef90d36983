//! signing_keys: the OpenID Connect provider's signing keys, their private half sealed by the
//! caller (this module never sees it in the clear). Times are Unix milliseconds.
//!
//! A key is published (in the JWKS) from `created_at`, signs from `signs_from`, stops signing at
//! `retired_at` and leaves the JWKS at `drop_after`, after which the reaper deletes it.

use super::db::{Db, Row};
use super::Error;
use crate::args;

pub struct KeyRow {
    pub kid: String,
    pub alg: String,
    /// The private key's DER, sealed.
    pub private_enc: Vec<u8>,
    pub public_jwk: String,
    pub created_at: i64,
    pub signs_from: i64,
    pub retired_at: Option<i64>,
    pub drop_after: Option<i64>,
}

pub struct NewKey<'a> {
    pub kid: &'a str,
    pub alg: &'a str,
    pub private_enc: &'a [u8],
    pub public_jwk: &'a str,
    pub created_at: i64,
    pub signs_from: i64,
}

const COLUMNS: &str = "kid, alg, private_enc, public_jwk, created_at, signs_from, retired_at, drop_after";

fn row(r: &Row<'_>) -> Result<KeyRow, Error> {
    Ok(KeyRow {
        kid: r.get(0)?,
        alg: r.get(1)?,
        private_enc: r.get(2)?,
        public_jwk: r.get(3)?,
        created_at: r.get(4)?,
        signs_from: r.get(5)?,
        retired_at: r.get(6)?,
        drop_after: r.get(7)?,
    })
}

pub fn insert(conn: &Db, k: &NewKey<'_>) -> Result<(), Error> {
    conn.execute(
        "INSERT INTO signing_keys (kid, alg, private_enc, public_jwk, created_at, signs_from)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
        args![k.kid, k.alg, k.private_enc, k.public_jwk, k.created_at, k.signs_from],
    )?;
    Ok(())
}

/// The key of `alg` that signs at `now`: signing from `now` or before, not retired by `now`, the
/// latest `signs_from` of those (two nodes that raced to make the first key agree on one).
pub fn current(conn: &Db, alg: &str, now: i64) -> Result<Option<KeyRow>, Error> {
    conn.query_opt(
        &format!(
            "SELECT {COLUMNS} FROM signing_keys
             WHERE alg = ?1 AND signs_from <= ?2 AND (retired_at IS NULL OR retired_at > ?2)
             ORDER BY signs_from DESC, kid DESC LIMIT 1"
        ),
        args![alg, now],
        row,
    )
}

/// The next key of `alg`: published, not signing yet at `now` (the latest, if several).
pub fn pending(conn: &Db, alg: &str, now: i64) -> Result<Option<KeyRow>, Error> {
    conn.query_opt(
        &format!(
            "SELECT {COLUMNS} FROM signing_keys
             WHERE alg = ?1 AND signs_from > ?2 AND retired_at IS NULL
             ORDER BY signs_from DESC, kid DESC LIMIT 1"
        ),
        args![alg, now],
        row,
    )
}

/// One key by its id.
pub fn by_kid(conn: &Db, kid: &str) -> Result<Option<KeyRow>, Error> {
    conn.query_opt(&format!("SELECT {COLUMNS} FROM signing_keys WHERE kid = ?1"), args![kid], row)
}

/// The public JWKs to publish at `now`: every key created by then and not yet past its
/// `drop_after`, the next ones included; by algorithm, then oldest first.
pub fn published(conn: &Db, now: i64) -> Result<Vec<String>, Error> {
    conn.query_all(
        "SELECT public_jwk FROM signing_keys
         WHERE created_at <= ?1 AND (drop_after IS NULL OR drop_after > ?1)
         ORDER BY alg, signs_from, kid",
        args![now],
        |r| r.get(0),
    )
}

/// Retires every key of `alg` not retired yet but `except` (the new one): it stops signing at
/// `retired_at` and leaves the JWKS at `drop_after`. Answers how many.
pub fn retire_others(conn: &Db, alg: &str, except: &str, retired_at: i64, drop_after: i64) -> Result<usize, Error> {
    conn.execute(
        "UPDATE signing_keys SET retired_at = ?3, drop_after = ?4
         WHERE alg = ?1 AND kid <> ?2 AND retired_at IS NULL",
        args![alg, except, retired_at, drop_after],
    )
}

/// Deletes at most `batch` keys past their `drop_after`; returns how many.
pub fn reap(conn: &Db, now: i64, batch: i64) -> Result<usize, Error> {
    conn.execute(
        "DELETE FROM signing_keys WHERE kid IN
           (SELECT kid FROM signing_keys WHERE drop_after IS NOT NULL AND drop_after <= ?1 LIMIT ?2)",
        args![now, batch],
    )
}
