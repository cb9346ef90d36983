//! OpenID Connect: oidc_clients, oidc_codes, oidc_grants, consents, client_tokens.

use super::db::Db;
use super::Error;
use crate::args;

/// A relying party's settings. URIs are kept one per line.
pub struct ClientRow {
    pub app_id: String,
    pub redirect_uris: String,
    pub post_logout_uris: String,
    pub backchannel_uri: Option<String>,
    pub public: bool,
    pub first_party: bool,
    pub open: bool,
    pub signing_alg: String,
    pub claims_in_id_token: bool,
}

const CLIENT_COLUMNS: &str = "app_id, redirect_uris, post_logout_uris, backchannel_uri, public, first_party, open, \
                              signing_alg, claims_in_id_token";

fn client_at(r: &super::db::Row<'_>) -> Result<ClientRow, Error> {
    Ok(ClientRow {
        app_id: r.get(0)?,
        redirect_uris: r.get(1)?,
        post_logout_uris: r.get(2)?,
        backchannel_uri: r.get(3)?,
        public: r.get(4)?,
        first_party: r.get(5)?,
        open: r.get(6)?,
        signing_alg: r.get(7)?,
        claims_in_id_token: r.get(8)?,
    })
}

/// Inserts or replaces an application's relying-party settings.
pub fn put_client(conn: &Db, c: &ClientRow) -> Result<(), Error> {
    conn.execute(
        &format!(
            "INSERT INTO oidc_clients ({CLIENT_COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)
             ON CONFLICT (app_id) DO UPDATE SET redirect_uris = excluded.redirect_uris,
                 post_logout_uris = excluded.post_logout_uris, backchannel_uri = excluded.backchannel_uri,
                 public = excluded.public, first_party = excluded.first_party, open = excluded.open,
                 signing_alg = excluded.signing_alg, claims_in_id_token = excluded.claims_in_id_token"
        ),
        args![
            c.app_id,
            c.redirect_uris,
            c.post_logout_uris,
            c.backchannel_uri,
            c.public,
            c.first_party,
            c.open,
            c.signing_alg,
            c.claims_in_id_token
        ],
    )?;
    Ok(())
}

pub fn client(conn: &Db, app_id: &str) -> Result<Option<ClientRow>, Error> {
    conn.query_opt(&format!("SELECT {CLIENT_COLUMNS} FROM oidc_clients WHERE app_id = ?1"), args![app_id], client_at)
}

/// Inserts an application without a secret (a public client), serving `doors`.
pub fn insert_public_app(conn: &Db, id: &str, doors: &str, now: i64) -> Result<(), Error> {
    let n = conn.execute(
        "INSERT INTO applications (id, secret_enc, builtin, created_at, doors) VALUES (?1, NULL, 0, ?2, ?3)
         ON CONFLICT DO NOTHING",
        args![id, now, doors],
    )?;
    if n == 0 {
        return Err(Error::Conflict(format!("application {id}")));
    }
    Ok(())
}

/// Replaces an application's sealed secret; false when there is no such application with one.
pub fn set_secret(conn: &Db, id: &str, secret_enc: &[u8]) -> Result<bool, Error> {
    Ok(conn.execute(
        "UPDATE applications SET secret_enc = ?2 WHERE id = ?1 AND builtin = 0 AND secret_enc IS NOT NULL",
        args![id, secret_enc],
    )? == 1)
}

/// An authorization code as issued.
pub struct CodeRow {
    pub digest: [u8; 32],
    pub app_id: String,
    pub user_id: i64,
    pub session: Vec<u8>,
    pub redirect_uri: String,
    pub scope: String,
    pub nonce: Option<String>,
    pub challenge: Option<String>,
    pub auth_time: i64,
    pub amr: String,
    pub created_at: i64,
    pub expires_at: i64,
}

pub fn insert_code(conn: &Db, c: &CodeRow) -> Result<(), Error> {
    conn.execute(
        "INSERT INTO oidc_codes (digest, app_id, user_id, session, redirect_uri, scope, nonce, challenge, auth_time,
                                 amr, created_at, expires_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)",
        args![
            &c.digest[..],
            c.app_id,
            c.user_id,
            c.session,
            c.redirect_uri,
            c.scope,
            c.nonce,
            c.challenge,
            c.auth_time,
            c.amr,
            c.created_at,
            c.expires_at
        ],
    )?;
    Ok(())
}

/// What a code's exchange finds.
pub enum CodeUse {
    /// The code was live and is now used: this exchange is the one.
    First(CodeRow),
    /// Used before: the family its first exchange issued (None while that exchange is under way).
    Again { app_id: String, user_id: i64, family: Option<Vec<u8>> },
    /// Unknown or expired.
    Nothing,
}

/// Spends a code, decided by one conditional update: of two exchanges racing (on two nodes),
/// exactly one finds it live.
pub fn use_code(conn: &Db, digest: &[u8; 32], now: i64) -> Result<CodeUse, Error> {
    let first = conn.query_opt(
        "UPDATE oidc_codes SET used_at = ?2 WHERE digest = ?1 AND used_at IS NULL AND expires_at > ?2
         RETURNING app_id, user_id, session, redirect_uri, scope, nonce, challenge, auth_time, amr, created_at,
                   expires_at",
        args![&digest[..], now],
        |r| {
            Ok(CodeRow {
                digest: *digest,
                app_id: r.get(0)?,
                user_id: r.get(1)?,
                session: r.get(2)?,
                redirect_uri: r.get(3)?,
                scope: r.get(4)?,
                nonce: r.get(5)?,
                challenge: r.get(6)?,
                auth_time: r.get(7)?,
                amr: r.get(8)?,
                created_at: r.get(9)?,
                expires_at: r.get(10)?,
            })
        },
    )?;
    if let Some(row) = first {
        return Ok(CodeUse::First(row));
    }
    let again = conn.query_opt(
        "SELECT app_id, user_id, family FROM oidc_codes WHERE digest = ?1 AND used_at IS NOT NULL",
        args![&digest[..]],
        |r| Ok(CodeUse::Again { app_id: r.get(0)?, user_id: r.get(1)?, family: r.get(2)? }),
    )?;
    Ok(again.unwrap_or(CodeUse::Nothing))
}

/// Records the family a code's exchange issued, for a second use to revoke.
pub fn set_code_family(conn: &Db, digest: &[u8; 32], family: &[u8]) -> Result<(), Error> {
    conn.execute("UPDATE oidc_codes SET family = ?2 WHERE digest = ?1", args![&digest[..], family])?;
    Ok(())
}

/// What a family of tokens was granted, or what an SSO session is (family = its sid).
pub struct GrantRow {
    pub family: Vec<u8>,
    pub app_id: String,
    pub user_id: Option<i64>,
    pub session: Option<Vec<u8>>,
    pub scope: String,
    pub auth_time: i64,
    pub amr: String,
    pub created_at: i64,
    pub expires_at: i64,
}

pub fn insert_grant(conn: &Db, g: &GrantRow) -> Result<(), Error> {
    conn.execute(
        "INSERT INTO oidc_grants (family, app_id, user_id, session, scope, auth_time, amr, created_at, expires_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
        args![g.family, g.app_id, g.user_id, g.session, g.scope, g.auth_time, g.amr, g.created_at, g.expires_at],
    )?;
    Ok(())
}

pub fn grant(conn: &Db, family: &[u8]) -> Result<Option<GrantRow>, Error> {
    conn.query_opt(
        "SELECT family, app_id, user_id, session, scope, auth_time, amr, created_at, expires_at
         FROM oidc_grants WHERE family = ?1",
        args![family],
        |r| {
            Ok(GrantRow {
                family: r.get(0)?,
                app_id: r.get(1)?,
                user_id: r.get(2)?,
                session: r.get(3)?,
                scope: r.get(4)?,
                auth_time: r.get(5)?,
                amr: r.get(6)?,
                created_at: r.get(7)?,
                expires_at: r.get(8)?,
            })
        },
    )
}

/// A grant lives as long as the newest token of its family.
pub fn extend_grant(conn: &Db, family: &[u8], expires_at: i64) -> Result<(), Error> {
    conn.execute(
        "UPDATE oidc_grants SET expires_at = ?2 WHERE family = ?1 AND expires_at < ?2",
        args![family, expires_at],
    )?;
    Ok(())
}

/// The applications a user is a member of (the `groups` claim).
pub fn memberships_of(conn: &Db, user_id: i64) -> Result<Vec<String>, Error> {
    conn.query_all("SELECT app_id FROM memberships WHERE user_id = ?1 ORDER BY app_id", args![user_id], |r| r.get(0))
}

/// The clients an SSO session signed in to (for back-channel logout), each once.
pub fn clients_of_session(conn: &Db, session: &[u8]) -> Result<Vec<String>, Error> {
    conn.query_all("SELECT DISTINCT app_id FROM oidc_grants WHERE session = ?1 ORDER BY app_id", args![session], |r| {
        r.get(0)
    })
}

/// Revokes every token issued through an SSO session; returns how many.
pub fn revoke_session_tokens(conn: &Db, session: &[u8], now: i64) -> Result<usize, Error> {
    conn.execute(
        "UPDATE tokens SET revoked_at = ?2
         WHERE family IN (SELECT family FROM oidc_grants WHERE session = ?1) AND revoked_at IS NULL",
        args![session, now],
    )
}

/// The scope a user consented to for a client, if any.
pub fn consent(conn: &Db, user_id: i64, app_id: &str) -> Result<Option<String>, Error> {
    conn.query_opt("SELECT scope FROM consents WHERE user_id = ?1 AND app_id = ?2", args![user_id, app_id], |r| {
        r.get(0)
    })
}

pub fn put_consent(conn: &Db, user_id: i64, app_id: &str, scope: &str, now: i64) -> Result<(), Error> {
    conn.execute(
        "INSERT INTO consents (user_id, app_id, scope, created_at) VALUES (?1, ?2, ?3, ?4)
         ON CONFLICT (user_id, app_id) DO UPDATE SET scope = excluded.scope, created_at = excluded.created_at",
        args![user_id, app_id, scope, now],
    )?;
    Ok(())
}

/// A user's consents: (client, scope, since).
pub fn consents_of(conn: &Db, user_id: i64) -> Result<Vec<(String, String, i64)>, Error> {
    conn.query_all(
        "SELECT app_id, scope, created_at FROM consents WHERE user_id = ?1 ORDER BY app_id",
        args![user_id],
        |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
    )
}

pub fn delete_consent(conn: &Db, user_id: i64, app_id: &str) -> Result<bool, Error> {
    Ok(conn.execute("DELETE FROM consents WHERE user_id = ?1 AND app_id = ?2", args![user_id, app_id])? == 1)
}

pub fn insert_client_token(
    conn: &Db,
    digest: &[u8; 32],
    app_id: &str,
    scope: &str,
    now: i64,
    expires_at: i64,
) -> Result<(), Error> {
    conn.execute(
        "INSERT INTO client_tokens (digest, app_id, scope, created_at, expires_at) VALUES (?1, ?2, ?3, ?4, ?5)",
        args![&digest[..], app_id, scope, now, expires_at],
    )?;
    Ok(())
}

/// A live client_credentials token: (client, scope, issued, expires).
pub fn live_client_token(conn: &Db, digest: &[u8; 32], now: i64) -> Result<Option<(String, String, i64, i64)>, Error> {
    conn.query_opt(
        "SELECT app_id, scope, created_at, expires_at FROM client_tokens
         WHERE digest = ?1 AND revoked_at IS NULL AND expires_at > ?2",
        args![&digest[..], now],
        |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)),
    )
}

/// The client of a client_credentials token, live or not.
pub fn client_token_app(conn: &Db, digest: &[u8; 32]) -> Result<Option<String>, Error> {
    conn.query_opt("SELECT app_id FROM client_tokens WHERE digest = ?1", args![&digest[..]], |r| r.get(0))
}

pub fn revoke_client_token(conn: &Db, digest: &[u8; 32], now: i64) -> Result<bool, Error> {
    Ok(conn.execute(
        "UPDATE client_tokens SET revoked_at = ?2 WHERE digest = ?1 AND revoked_at IS NULL",
        args![&digest[..], now],
    )? == 1)
}

/// The provider's tables whose rows end at `expires_at`, with their keys.
pub const EXPIRING: [(&str, &str); 4] =
    [("oidc_codes", "digest"), ("oidc_grants", "family"), ("client_tokens", "digest"), ("device_codes", "digest")];

/// Deletes at most `batch` rows of `EXPIRING[which]` past their expiry (by its index); how many.
pub fn reap(conn: &Db, which: usize, now: i64, batch: i64) -> Result<usize, Error> {
    let (table, key) = EXPIRING[which];
    conn.execute(
        &format!("DELETE FROM {table} WHERE {key} IN (SELECT {key} FROM {table} WHERE expires_at <= ?1 LIMIT ?2)"),
        args![now, batch],
    )
}

/// A device authorization (RFC 8628) as the token endpoint and the activation page see it.
pub struct DeviceRow {
    pub digest: Vec<u8>,
    pub user_code: String,
    pub app_id: String,
    pub scope: String,
    pub expires_at: i64,
    pub last_poll_at: Option<i64>,
    pub user_id: Option<i64>,
    pub session: Option<Vec<u8>>,
    pub auth_time: Option<i64>,
    pub amr: Option<String>,
    pub decided_at: Option<i64>,
    pub denied: bool,
    pub used_at: Option<i64>,
}

const DEVICE_COLUMNS: &str =
    "digest, user_code, app_id, scope, expires_at, last_poll_at, user_id, session, auth_time, \
                              amr, decided_at, denied, used_at";

fn device_at(r: &super::db::Row<'_>) -> Result<DeviceRow, Error> {
    Ok(DeviceRow {
        digest: r.get(0)?,
        user_code: r.get(1)?,
        app_id: r.get(2)?,
        scope: r.get(3)?,
        expires_at: r.get(4)?,
        last_poll_at: r.get(5)?,
        user_id: r.get(6)?,
        session: r.get(7)?,
        auth_time: r.get(8)?,
        amr: r.get(9)?,
        decided_at: r.get(10)?,
        denied: r.get(11)?,
        used_at: r.get(12)?,
    })
}

/// Inserts a device authorization; `Error::Conflict` when the user code is taken (draw another).
pub fn insert_device(
    conn: &Db,
    digest: &[u8; 32],
    user_code: &str,
    app_id: &str,
    scope: &str,
    now: i64,
    expires_at: i64,
) -> Result<(), Error> {
    let n = conn.execute(
        "INSERT INTO device_codes (digest, user_code, app_id, scope, created_at, expires_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6) ON CONFLICT DO NOTHING",
        args![&digest[..], user_code, app_id, scope, now, expires_at],
    )?;
    if n == 0 {
        return Err(Error::Conflict("user code".into()));
    }
    Ok(())
}

pub fn device_by_code(conn: &Db, digest: &[u8; 32]) -> Result<Option<DeviceRow>, Error> {
    conn.query_opt(
        &format!("SELECT {DEVICE_COLUMNS} FROM device_codes WHERE digest = ?1"),
        args![&digest[..]],
        device_at,
    )
}

/// A live, undecided device authorization by the code a person typed.
pub fn device_by_user_code(conn: &Db, user_code: &str, now: i64) -> Result<Option<DeviceRow>, Error> {
    conn.query_opt(
        &format!(
            "SELECT {DEVICE_COLUMNS} FROM device_codes
             WHERE user_code = ?1 AND expires_at > ?2 AND decided_at IS NULL"
        ),
        args![user_code, now],
        device_at,
    )
}

/// Decides a live, undecided authorization (approved by `user`, or denied); false when it was
/// decided already or has expired.
#[allow(clippy::too_many_arguments)]
pub fn decide_device(
    conn: &Db,
    user_code: &str,
    user_id: i64,
    session: &[u8],
    auth_time: i64,
    amr: &str,
    denied: bool,
    now: i64,
) -> Result<bool, Error> {
    Ok(conn.execute(
        "UPDATE device_codes SET user_id = ?2, session = ?3, auth_time = ?4, amr = ?5, denied = ?6, decided_at = ?7
         WHERE user_code = ?1 AND decided_at IS NULL AND expires_at > ?7",
        args![user_code, user_id, session, auth_time, amr, denied, now],
    )? == 1)
}

/// Records a poll; answers the previous one's time.
pub fn poll_device(conn: &Db, digest: &[u8; 32], now: i64) -> Result<(), Error> {
    conn.execute("UPDATE device_codes SET last_poll_at = ?2 WHERE digest = ?1", args![&digest[..], now])?;
    Ok(())
}

/// Spends an approved authorization: of two polls racing, one wins.
pub fn use_device(conn: &Db, digest: &[u8; 32], now: i64) -> Result<bool, Error> {
    Ok(conn.execute(
        "UPDATE device_codes SET used_at = ?2
         WHERE digest = ?1 AND used_at IS NULL AND decided_at IS NOT NULL AND denied = 0 AND expires_at > ?2",
        args![&digest[..], now],
    )? == 1)
}

/// A client owed a back-channel logout for one session.
pub struct BackchannelTarget {
    pub app_id: String,
    pub session: Vec<u8>,
    pub uri: String,
    pub signing_alg: String,
}

/// The (client, sid) pairs through which a user (of one client, or of every one) holds live
/// tokens and whose client asks for back-channel logouts, with the client's URI and algorithm.
pub fn backchannel_targets(
    conn: &Db,
    user_id: i64,
    app_id: Option<&str>,
    session: Option<&[u8]>,
    now: i64,
) -> Result<Vec<BackchannelTarget>, Error> {
    conn.query_all(
        "SELECT DISTINCT g.app_id, g.session, c.backchannel_uri, c.signing_alg
         FROM oidc_grants g JOIN oidc_clients c ON c.app_id = g.app_id
         WHERE g.user_id = ?1 AND g.session IS NOT NULL AND c.backchannel_uri IS NOT NULL
           AND (?2 = '' OR g.app_id = ?2)
           AND (?5 = 0 OR g.session = ?3)
           AND EXISTS (SELECT 1 FROM tokens t WHERE t.family = g.family AND t.revoked_at IS NULL AND t.expires_at > ?4)
         ORDER BY g.app_id",
        // ?5 says whether a session is named: PostgreSQL types ?3 from `g.session = ?3` alone
        // (length(?3) made it text, and the statement did not prepare).
        args![user_id, app_id.unwrap_or(""), session.unwrap_or(&[]), now, i64::from(session.is_some())],
        |r| Ok(BackchannelTarget { app_id: r.get(0)?, session: r.get(1)?, uri: r.get(2)?, signing_alg: r.get(3)? }),
    )
}

pub fn queue_logout(conn: &Db, app_id: &str, uri: &str, token: &str, now: i64) -> Result<(), Error> {
    conn.execute(
        "INSERT INTO logout_queue (app_id, uri, logout_token, next_at, created_at) VALUES (?1, ?2, ?3, ?4, ?4)",
        args![app_id, uri, token, now],
    )?;
    Ok(())
}

/// A queued logout token, claimed for delivery.
pub struct LogoutRow {
    pub id: i64,
    pub uri: String,
    pub logout_token: String,
    /// Attempts so far, this one included.
    pub attempts: i64,
    pub created_at: i64,
}

/// Claims at most `n` due deliveries for `lease_ms` (another node skips them meanwhile).
pub fn claim_logouts(conn: &Db, now: i64, lease_ms: i64, n: i64) -> Result<Vec<LogoutRow>, Error> {
    conn.query_all(
        "UPDATE logout_queue SET next_at = ?2, attempts = attempts + 1
         WHERE id IN (SELECT id FROM logout_queue WHERE next_at <= ?1 ORDER BY next_at LIMIT ?3)
         RETURNING id, uri, logout_token, attempts, created_at",
        args![now, now + lease_ms, n],
        |r| {
            Ok(LogoutRow {
                id: r.get(0)?,
                uri: r.get(1)?,
                logout_token: r.get(2)?,
                attempts: r.get(3)?,
                created_at: r.get(4)?,
            })
        },
    )
}

/// Whether any delivery is due.
pub fn logouts_due(conn: &Db, now: i64) -> Result<bool, Error> {
    Ok(conn.query_opt("SELECT 1 FROM logout_queue WHERE next_at <= ?1 LIMIT 1", args![now], |_| Ok(()))?.is_some())
}

pub fn logout_done(conn: &Db, id: i64) -> Result<(), Error> {
    conn.execute("DELETE FROM logout_queue WHERE id = ?1", args![id])?;
    Ok(())
}

pub fn logout_retry_at(conn: &Db, id: i64, at: i64) -> Result<(), Error> {
    conn.execute("UPDATE logout_queue SET next_at = ?2 WHERE id = ?1", args![id, at])?;
    Ok(())
}

pub fn logouts_waiting(conn: &Db) -> Result<i64, Error> {
    conn.value("SELECT count(*) FROM logout_queue", args![])
}
