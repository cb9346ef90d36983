//! What the self-service account page reads and ends: a user's SSO sessions, the OpenID Connect
//! grants their clients hold, and the tokens of one client.

use super::db::Db;
use super::Error;
use crate::args;

/// A live SSO session of a user: its token's row and its grant's sign-in.
pub struct SessionRow {
    pub sid: Vec<u8>,
    /// The token's id (uses kept in memory are found by it).
    pub token_id: i64,
    pub last_used_at: i64,
    pub idle_ms: Option<i64>,
    pub expires_at: i64,
    pub auth_time: i64,
    pub amr: String,
}

/// The user's SSO sessions whose token is neither revoked nor expired at `now` (the idle
/// timeout is the caller's to check), the newest first.
pub fn sso_sessions(conn: &Db, user_id: i64, app_sso: &str, now: i64) -> Result<Vec<SessionRow>, Error> {
    conn.query_all(
        "SELECT t.family, t.id, t.last_used_at, t.idle_ms, t.expires_at, g.auth_time, g.amr
         FROM tokens t JOIN oidc_grants g ON g.family = t.family
         WHERE t.user_id = ?1 AND t.kind = 'sso' AND t.app_id = ?2 AND t.revoked_at IS NULL AND t.expires_at > ?3
         ORDER BY g.auth_time DESC, t.id DESC",
        args![user_id, app_sso, now],
        |r| {
            Ok(SessionRow {
                sid: r.get(0)?,
                token_id: r.get(1)?,
                last_used_at: r.get(2)?,
                idle_ms: r.get(3)?,
                expires_at: r.get(4)?,
                auth_time: r.get(5)?,
                amr: r.get(6)?,
            })
        },
    )
}

/// A grant a client holds for a user, with a live token.
pub struct ClientGrantRow {
    pub family: Vec<u8>,
    pub app_id: String,
    pub scope: String,
    /// The SSO session it came through (none for a device's approval).
    pub session: Option<Vec<u8>>,
    pub created_at: i64,
    pub expires_at: i64,
}

/// The grants of the user's clients (every application but `app_sso`) that still have a live
/// token, by client and age.
pub fn client_grants(conn: &Db, user_id: i64, app_sso: &str, now: i64) -> Result<Vec<ClientGrantRow>, Error> {
    conn.query_all(
        "SELECT g.family, g.app_id, g.scope, g.session, g.created_at, g.expires_at FROM oidc_grants g
         WHERE g.user_id = ?1 AND g.app_id <> ?2
           AND EXISTS (SELECT 1 FROM tokens t WHERE t.family = g.family AND t.revoked_at IS NULL AND t.expires_at > ?3)
         ORDER BY g.app_id, g.created_at",
        args![user_id, app_sso, now],
        |r| {
            Ok(ClientGrantRow {
                family: r.get(0)?,
                app_id: r.get(1)?,
                scope: r.get(2)?,
                session: r.get(3)?,
                created_at: r.get(4)?,
                expires_at: r.get(5)?,
            })
        },
    )
}

/// A grant's application, and the SSO session it came through.
pub type GrantOwner = (String, Option<Vec<u8>>);

/// The grant `family` of the user: (its application, the SSO session it came through).
pub fn grant_of(conn: &Db, user_id: i64, family: &[u8]) -> Result<Option<GrantOwner>, Error> {
    conn.query_opt(
        "SELECT app_id, session FROM oidc_grants WHERE family = ?1 AND user_id = ?2",
        args![family, user_id],
        |r| Ok((r.get(0)?, r.get(1)?)),
    )
}

/// Revokes the user's OpenID Connect tokens of one client (not the tokens of its other doors).
pub fn revoke_client_tokens(conn: &Db, user_id: i64, app_id: &str, now: i64) -> Result<usize, Error> {
    conn.execute(
        "UPDATE tokens SET revoked_at = ?3
         WHERE user_id = ?1 AND app_id = ?2 AND kind IN ('oidc_access', 'oidc_refresh') AND revoked_at IS NULL",
        args![user_id, app_id, now],
    )
}
