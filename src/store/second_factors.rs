//! Second factors: TOTP (one sealed secret per user, the last step accepted) and recovery codes
//! (stored as digests). The races that matter (a code used twice, a secret replaced while it is
//! confirmed) are decided by conditional statements whose row count says who won.

use super::db::Db;
use super::Error;
use crate::args;

/// A user's TOTP row.
pub struct TotpRow {
    /// The secret as sealed by the core (the store never sees it in the clear).
    pub secret_enc: Vec<u8>,
    /// Unix ms; None while the enrolment waits for its first code.
    pub confirmed_at: Option<i64>,
    /// The last time step a code was accepted for (0: none yet).
    pub last_step: i64,
}

pub fn totp(conn: &Db, user_id: i64) -> Result<Option<TotpRow>, Error> {
    conn.query_opt("SELECT secret_enc, confirmed_at, last_step FROM totp WHERE user_id = ?1", args![user_id], |r| {
        Ok(TotpRow { secret_enc: r.get(0)?, confirmed_at: r.get(1)?, last_step: r.get(2)? })
    })
}

/// Writes a new unconfirmed secret, replacing an unconfirmed one; false (nothing written) when a
/// confirmed TOTP is there.
pub fn begin_totp(conn: &Db, user_id: i64, secret_enc: &[u8], now: i64) -> Result<bool, Error> {
    let n = conn.execute(
        "INSERT INTO totp (user_id, secret_enc, confirmed_at, last_step, created_at) VALUES (?1, ?2, NULL, 0, ?3)
         ON CONFLICT (user_id) DO UPDATE SET secret_enc = excluded.secret_enc, last_step = 0,
           created_at = excluded.created_at
         WHERE totp.confirmed_at IS NULL",
        args![user_id, secret_enc, now],
    )?;
    Ok(n == 1)
}

/// Confirms the unconfirmed secret `secret_enc` (the one the code was checked against, not one
/// that replaced it since) with the step its first code was accepted for; false when another
/// request got there first.
pub fn confirm_totp(conn: &Db, user_id: i64, secret_enc: &[u8], step: i64, now: i64) -> Result<bool, Error> {
    let n = conn.execute(
        "UPDATE totp SET confirmed_at = ?4, last_step = ?3
         WHERE user_id = ?1 AND secret_enc = ?2 AND confirmed_at IS NULL AND last_step < ?3",
        args![user_id, secret_enc, step, now],
    )?;
    Ok(n == 1)
}

/// Records `step` as the last one accepted, only when it is later than the last one: true for
/// the one request that won, false for a replay or an older step (also across nodes).
pub fn use_step(conn: &Db, user_id: i64, step: i64) -> Result<bool, Error> {
    let n = conn.execute(
        "UPDATE totp SET last_step = ?2 WHERE user_id = ?1 AND confirmed_at IS NOT NULL AND last_step < ?2",
        args![user_id, step],
    )?;
    Ok(n == 1)
}

/// Removes the user's TOTP, confirmed or not; how many rows went (0 or 1).
pub fn delete_totp(conn: &Db, user_id: i64) -> Result<usize, Error> {
    conn.execute("DELETE FROM totp WHERE user_id = ?1", args![user_id])
}

/// Replaces every recovery code of the user (used or not) with `digests`.
pub fn replace_recovery_codes(conn: &Db, user_id: i64, digests: &[[u8; 32]], now: i64) -> Result<(), Error> {
    delete_recovery_codes(conn, user_id)?;
    for d in digests {
        conn.execute(
            "INSERT INTO recovery_codes (digest, user_id, created_at, used_at) VALUES (?1, ?2, ?3, NULL)",
            args![&d[..], user_id, now],
        )?;
    }
    Ok(())
}

/// Spends an unused recovery code of the user: true for the one request that spent it.
pub fn spend_recovery_code(conn: &Db, user_id: i64, digest: &[u8; 32], now: i64) -> Result<bool, Error> {
    let n = conn.execute(
        "UPDATE recovery_codes SET used_at = ?3 WHERE digest = ?1 AND user_id = ?2 AND used_at IS NULL",
        args![&digest[..], user_id, now],
    )?;
    Ok(n == 1)
}

/// How many unused recovery codes the user has.
pub fn recovery_left(conn: &Db, user_id: i64) -> Result<i64, Error> {
    conn.value("SELECT count(*) FROM recovery_codes WHERE user_id = ?1 AND used_at IS NULL", args![user_id])
}

pub fn delete_recovery_codes(conn: &Db, user_id: i64) -> Result<usize, Error> {
    conn.execute("DELETE FROM recovery_codes WHERE user_id = ?1", args![user_id])
}

/// A passkey (a WebAuthn credential) of a user.
pub struct PasskeyRow {
    pub id: i64,
    pub user_id: i64,
    pub credential_id: Vec<u8>,
    /// Uncompressed SEC1 P-256 point.
    pub public_key: Vec<u8>,
    pub sign_count: i64,
    pub name: String,
    pub created_at: i64,
    pub last_used_at: Option<i64>,
}

const PASSKEY_COLUMNS: &str = "id, user_id, credential_id, public_key, sign_count, name, created_at, last_used_at";

fn passkey_row(r: &super::db::Row<'_>) -> Result<PasskeyRow, Error> {
    Ok(PasskeyRow {
        id: r.get(0)?,
        user_id: r.get(1)?,
        credential_id: r.get(2)?,
        public_key: r.get(3)?,
        sign_count: r.get(4)?,
        name: r.get(5)?,
        created_at: r.get(6)?,
        last_used_at: r.get(7)?,
    })
}

/// The user's passkeys, oldest first.
pub fn passkeys(conn: &Db, user_id: i64) -> Result<Vec<PasskeyRow>, Error> {
    conn.query_all(
        &format!("SELECT {PASSKEY_COLUMNS} FROM passkeys WHERE user_id = ?1 ORDER BY id"),
        args![user_id],
        passkey_row,
    )
}

pub fn passkey_by_credential(conn: &Db, credential_id: &[u8]) -> Result<Option<PasskeyRow>, Error> {
    conn.query_opt(
        &format!("SELECT {PASSKEY_COLUMNS} FROM passkeys WHERE credential_id = ?1"),
        args![credential_id],
        passkey_row,
    )
}

pub fn passkey_count(conn: &Db, user_id: i64) -> Result<i64, Error> {
    conn.value("SELECT count(*) FROM passkeys WHERE user_id = ?1", args![user_id])
}

/// Adds a passkey; false (nothing written) when its credential id is registered already, to
/// this user or another.
pub fn insert_passkey(
    conn: &Db,
    user_id: i64,
    credential_id: &[u8],
    public_key: &[u8],
    sign_count: i64,
    name: &str,
    now: i64,
) -> Result<bool, Error> {
    let n = conn.execute(
        "INSERT INTO passkeys (user_id, credential_id, public_key, sign_count, name, created_at, last_challenge)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, 0) ON CONFLICT (credential_id) DO NOTHING",
        args![user_id, credential_id, public_key, sign_count, name, now],
    )?;
    Ok(n == 1)
}

/// Records an assertion of passkey `id` that answered a challenge made at `challenge_at`: true
/// for the one request that won, false for a replay, an older challenge, or a sign count that
/// another request moved past meanwhile.
pub fn use_passkey(conn: &Db, id: i64, sign_count: i64, challenge_at: i64, now: i64) -> Result<bool, Error> {
    let n = conn.execute(
        "UPDATE passkeys SET sign_count = ?2, last_challenge = ?3, last_used_at = ?4
         WHERE id = ?1 AND last_challenge < ?3 AND sign_count <= ?2",
        args![id, sign_count, challenge_at, now],
    )?;
    Ok(n == 1)
}

/// Removes passkey `id` of the user; how many rows went (0 or 1).
pub fn delete_passkey(conn: &Db, user_id: i64, id: i64) -> Result<usize, Error> {
    conn.execute("DELETE FROM passkeys WHERE id = ?1 AND user_id = ?2", args![id, user_id])
}

pub fn delete_passkeys(conn: &Db, user_id: i64) -> Result<usize, Error> {
    conn.execute("DELETE FROM passkeys WHERE user_id = ?1", args![user_id])
}
