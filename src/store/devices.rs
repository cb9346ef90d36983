//! devices and nonces

use super::db::Db;
use super::Error;
use crate::args;

pub struct NewDevice<'a> {
    pub user_id: i64,
    pub app_id: &'a str,
    pub name: &'a str,
    pub api_key_id: &'a str,
    /// The device's own P-256 signing key (SEC1 uncompressed point), when it made one.
    pub public_key: Option<&'a [u8]>,
}

pub fn insert(conn: &Db, d: &NewDevice<'_>, now: i64) -> Result<i64, Error> {
    conn.value(
        "INSERT INTO devices (user_id, app_id, name, api_key_id, public_key, created_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6) RETURNING id",
        args![d.user_id, d.app_id, d.name, d.api_key_id, d.public_key, now],
    )
}

/// A device as its own calls see it.
#[derive(Debug, Clone)]
pub struct DeviceRow {
    pub id: i64,
    pub user_id: i64,
    pub app_id: String,
    pub name: String,
    pub public_key: Option<Vec<u8>>,
    pub webauthn_id: Option<Vec<u8>>,
    pub webauthn_key: Option<Vec<u8>>,
    pub webauthn_count: Option<i64>,
    pub lost_at: Option<i64>,
}

const DEVICE: &str = "SELECT id, user_id, app_id, name, public_key, webauthn_id, webauthn_key, webauthn_count, lost_at
                      FROM devices";

pub fn by_id(conn: &Db, id: i64) -> Result<Option<DeviceRow>, Error> {
    conn.query_opt(&format!("{DEVICE} WHERE id = ?1"), args![id], device_row)
}

/// The device that was handed API key `api_key_id` at registration.
pub fn by_api_key(conn: &Db, api_key_id: &str) -> Result<Option<DeviceRow>, Error> {
    conn.query_opt(&format!("{DEVICE} WHERE api_key_id = ?1"), args![api_key_id], device_row)
}

fn device_row(r: &super::db::Row<'_>) -> Result<DeviceRow, Error> {
    Ok(DeviceRow {
        id: r.get(0)?,
        user_id: r.get(1)?,
        app_id: r.get(2)?,
        name: r.get(3)?,
        public_key: r.get(4)?,
        webauthn_id: r.get(5)?,
        webauthn_key: r.get(6)?,
        webauthn_count: r.get(7)?,
        lost_at: r.get(8)?,
    })
}

/// What one live device can do to answer a sign-in.
#[derive(Debug, Clone, Copy)]
pub struct Abilities {
    /// It signs with its own key.
    pub keyed: bool,
    /// It has a WebAuthn user-verifying credential.
    pub face: bool,
    /// It holds the API key it was handed.
    pub api_key: bool,
}

/// What each of the user's live devices for an application can do.
pub fn abilities(conn: &Db, user_id: i64, app_id: &str) -> Result<Vec<Abilities>, Error> {
    conn.query_all(
        "SELECT public_key IS NOT NULL, webauthn_key IS NOT NULL, api_key_id IS NOT NULL FROM devices
         WHERE user_id = ?1 AND app_id = ?2 AND lost_at IS NULL",
        args![user_id, app_id],
        |r| Ok(Abilities { keyed: r.get(0)?, face: r.get(1)?, api_key: r.get(2)? }),
    )
}

/// Records a device's WebAuthn credential (replacing an older one).
pub fn set_webauthn(conn: &Db, id: i64, credential_id: &[u8], key: &[u8], count: i64) -> Result<bool, Error> {
    let n = conn.execute(
        "UPDATE devices SET webauthn_id = ?2, webauthn_key = ?3, webauthn_count = ?4 WHERE id = ?1 AND lost_at IS NULL",
        args![id, credential_id, key, count],
    )?;
    Ok(n == 1)
}

/// Moves a credential's signature counter forward; false when another use moved it first, and
/// never moves it back (a lower `to` changes nothing and answers false).
pub fn advance_webauthn_count(conn: &Db, id: i64, from: i64, to: i64) -> Result<bool, Error> {
    let n = conn.execute(
        "UPDATE devices SET webauthn_count = ?3
         WHERE id = ?1 AND coalesce(webauthn_count, 0) = ?2 AND ?3 >= coalesce(webauthn_count, 0)",
        args![id, from, to],
    )?;
    Ok(n == 1)
}

pub fn has_live(conn: &Db, user_id: i64, app_id: &str) -> Result<bool, Error> {
    conn.value(
        "SELECT EXISTS (SELECT 1 FROM devices WHERE user_id = ?1 AND app_id = ?2 AND lost_at IS NULL)",
        args![user_id, app_id],
    )
}

/// Marks the user's live devices for an application lost; returns their API keys.
pub fn mark_lost(conn: &Db, user_id: i64, app_id: &str, now: i64) -> Result<Vec<String>, Error> {
    let keys = conn.query_all(
        "SELECT api_key_id FROM devices
         WHERE user_id = ?1 AND app_id = ?2 AND lost_at IS NULL AND api_key_id IS NOT NULL",
        args![user_id, app_id],
        |r| r.get(0),
    )?;
    conn.execute(
        "UPDATE devices SET lost_at = ?3 WHERE user_id = ?1 AND app_id = ?2 AND lost_at IS NULL",
        args![user_id, app_id, now],
    )?;
    Ok(keys)
}

pub fn delete_for(conn: &Db, user_id: i64, app_id: &str) -> Result<usize, Error> {
    conn.execute("DELETE FROM devices WHERE user_id = ?1 AND app_id = ?2", args![user_id, app_id])
}

/// SQLite: appends a spent nonce to the log, to be kept until `expires_at`. The log has no index:
/// whether a nonce was spent is asked of the set in memory (`Core::use_nonce`), which this log
/// refills.
pub fn log_nonce(conn: &Db, app_id: &str, nonce: &str, expires_at: i64) -> Result<(), Error> {
    conn.execute(
        "INSERT INTO nonces (app_id, nonce, expires_at) VALUES (?1, ?2, ?3)",
        args![app_id, nonce, expires_at],
    )?;
    Ok(())
}

/// PostgreSQL, shared by every node: spends a nonce, to be kept until `expires_at`; false when it
/// is spent and still kept at `now`. The table's key decides between two nodes spending the same
/// nonce at once: one inserts, the other finds the row.
pub fn spend_nonce(conn: &Db, app_id: &str, nonce: &str, expires_at: i64, now: i64) -> Result<bool, Error> {
    let n = conn.execute(
        "INSERT INTO nonces (app_id, nonce, expires_at) VALUES (?1, ?2, ?3)
         ON CONFLICT (app_id, nonce) DO UPDATE SET expires_at = excluded.expires_at
         WHERE nonces.expires_at <= ?4",
        args![app_id, nonce, expires_at, now],
    )?;
    Ok(n == 1)
}

/// The nonces still kept at `now`: (application, nonce, kept until).
pub fn live_nonces(conn: &Db, now: i64) -> Result<Vec<(String, String, i64)>, Error> {
    conn.query_all("SELECT app_id, nonce, expires_at FROM nonces WHERE expires_at > ?1", args![now], |r| {
        Ok((r.get(0)?, r.get(1)?, r.get(2)?))
    })
}

/// Removes at most `batch` nonces no longer kept at `now`. SQLite: the head of the log up to its
/// first nonce still kept. The log is written in time order and a nonce is kept until its own
/// timestamp plus the window, so the head is nearly all that expired; a row that expired behind a
/// live one waits for a later pass (at most one window longer), and no live row is ever removed.
pub fn reap_nonces(conn: &Db, now: i64, batch: i64) -> Result<usize, Error> {
    if conn.is_postgres() {
        return conn.execute(
            "DELETE FROM nonces WHERE (app_id, nonce) IN
             (SELECT app_id, nonce FROM nonces WHERE expires_at <= ?1 LIMIT ?2)",
            args![now, batch],
        );
    }
    conn.execute(
        "DELETE FROM nonces WHERE rowid < min(
             coalesce((SELECT rowid FROM nonces WHERE expires_at > ?1 ORDER BY rowid LIMIT 1),
                      (SELECT max(rowid) + 1 FROM nonces), 0),
             coalesce((SELECT min(rowid) FROM nonces), 0) + ?2)",
        args![now, batch],
    )
}
