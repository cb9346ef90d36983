//! tokens: opaque bearer tokens of every kind, stored as SHA-256 digests.

use super::db::Db;
use crate::args;

use super::Error;

pub struct TokenRow {
    pub digest: [u8; 32],
    pub kind: &'static str,
    pub user_id: i64,
    pub app_id: String,
    pub api_key_id: Option<String>,
    pub created_at: i64,
    pub last_used_at: i64,
    pub idle_ms: Option<i64>,
    pub expires_at: i64,
    /// The tokens of one sign-in (IQM): rotated together, revoked together.
    pub family: Option<[u8; 16]>,
}

pub fn insert(conn: &Db, t: &TokenRow) -> Result<(), Error> {
    conn.execute("INSERT INTO tokens (digest, kind, user_id, app_id, api_key_id, created_at, last_used_at, idle_ms, expires_at, family)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)", args![
        &t.digest[..],
        t.kind,
        t.user_id,
        t.app_id,
        t.api_key_id,
        t.created_at,
        t.last_used_at,
        t.idle_ms,
        t.expires_at,
        t.family.as_ref().map(|f| &f[..])
    ])?;
    Ok(())
}

/// A token of `kind` that is live at `now`: not revoked, not expired, its user not blocked and
/// still a member of its application (or the token is an SSO session's, or its application an
/// OpenID Connect client open to every user), its API key (if any) live. The idle timeout is the caller's
/// to check against `last_used_at` (the core keeps recent uses in memory, see `Core::touch`).
pub struct LiveToken {
    pub user_id: i64,
    pub app_id: String,
    pub created_at: i64,
    pub expires_at: i64,
    pub idle_ms: Option<i64>,
    pub last_used_at: i64,
    pub family: Option<Vec<u8>>,
    /// The token's id (uses kept in memory are found by it).
    pub id: i64,
    /// The token's user, read in the same query.
    pub user: super::users::UserRow,
}

/// The statement of a live token of one kind with its user (`live`), with `extra` columns after
/// the user's.
fn live_sql(extra: &str) -> String {
    format!(
        "SELECT t.user_id, t.app_id, t.created_at, t.expires_at, t.idle_ms, t.family, t.last_used_at, t.id, {}{extra}
     FROM tokens t
     JOIN users u ON u.id = t.user_id
     LEFT JOIN api_keys k ON k.id = t.api_key_id
     WHERE t.digest = ?1 AND t.kind = ?2
       AND t.revoked_at IS NULL AND t.used_at IS NULL
       AND t.expires_at > ?3
       AND u.blocked = 0
       AND (EXISTS (SELECT 1 FROM memberships m WHERE m.user_id = t.user_id AND m.app_id = t.app_id)
            OR t.kind = 'sso'
            OR EXISTS (SELECT 1 FROM oidc_clients c WHERE c.app_id = t.app_id AND c.open = 1))
       AND (t.api_key_id IS NULL
            OR (k.revoked_at IS NULL AND (k.expires_at IS NULL OR k.expires_at > ?3)))",
        super::users::columns_of("u")
    )
}

fn live_row(r: &super::db::Row<'_>) -> Result<LiveToken, Error> {
    Ok(LiveToken {
        user_id: r.get(0)?,
        app_id: r.get(1)?,
        created_at: r.get(2)?,
        expires_at: r.get(3)?,
        idle_ms: r.get(4)?,
        family: r.get(5)?,
        last_used_at: r.get(6)?,
        id: r.get(7)?,
        user: super::users::user_at(r, 8)?,
    })
}

pub fn live(conn: &Db, digest: &[u8; 32], kind: &str, now: i64) -> Result<Option<LiveToken>, Error> {
    // Every token check runs it: the text is built once (the statement cache looks it up by text).
    static SQL: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| live_sql(""));
    conn.query_opt(&SQL, args![&digest[..], kind, now], live_row)
}

/// A live token with what userinfo needs beside it.
pub struct LiveWithGrant {
    pub live: LiveToken,
    /// The scope of the token family's grant (None: no grant).
    pub scope: Option<String>,
    /// The user's memberships, ordered.
    pub apps: Vec<String>,
}

/// userinfo's one statement: a live token of `kind` as [`live`] finds it, with its grant's scope
/// and the user's memberships.
pub fn live_with_grant(conn: &Db, digest: &[u8; 32], kind: &str, now: i64) -> Result<Option<LiveWithGrant>, Error> {
    static SQLITE: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
        live_sql(
            ", (SELECT g.scope FROM oidc_grants g WHERE g.family = t.family),
             (SELECT group_concat(app_id, ' ') FROM
                (SELECT app_id FROM memberships WHERE user_id = t.user_id ORDER BY app_id))",
        )
    });
    static POSTGRES: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
        live_sql(
            ", (SELECT g.scope FROM oidc_grants g WHERE g.family = t.family),
             (SELECT string_agg(app_id, ' ' ORDER BY app_id) FROM memberships WHERE user_id = t.user_id)",
        )
    });
    let sql = if conn.is_postgres() { &*POSTGRES } else { &*SQLITE };
    // The first column after the user's.
    static AT: std::sync::LazyLock<usize> =
        std::sync::LazyLock::new(|| super::users::columns_of("u").split(',').count() + 8);
    let at = *AT;
    conn.query_opt(sql, args![&digest[..], kind, now], |r| {
        let apps: Option<String> = r.get(at + 1)?;
        let apps =
            apps.map(|a| a.split(' ').filter(|s| !s.is_empty()).map(str::to_string).collect()).unwrap_or_default();
        Ok(LiveWithGrant { live: live_row(r)?, scope: r.get(at)?, apps })
    })
}

/// The kind of the token stored under `digest`, whatever its state.
pub fn kind_of(conn: &Db, digest: &[u8; 32]) -> Result<Option<String>, Error> {
    conn.query_opt("SELECT kind FROM tokens WHERE digest = ?1", args![&digest[..]], |r| r.get(0))
}

/// Records a use for the idle timeout in the token's own row, found by id (never moving a last
/// use backwards): how uses are written on PostgreSQL, and how SQLite's log is folded in.
pub fn touch(conn: &Db, id: i64, at: i64) -> Result<(), Error> {
    conn.execute("UPDATE tokens SET last_used_at = ?2 WHERE id = ?1 AND last_used_at < ?2", args![id, at])?;
    Ok(())
}

/// SQLite: appends uses (token id, time) to the log `token_uses` (on the log's own connection,
/// `Store::uses_log`: the log is a file of its own); answers the last sequence number it holds. Appending writes a few pages at the log's end, where updating each token's
/// row would dirty one page of the token table per use, anywhere in it.
pub fn log_uses(conn: &Db, uses: &[(i64, i64)]) -> Result<i64, Error> {
    for (id, at) in uses {
        conn.execute("INSERT INTO token_uses (token_id, used_at) VALUES (?1, ?2)", args![*id, *at])?;
    }
    conn.value("SELECT coalesce(max(seq), 0) FROM token_uses", args![])
}

/// SQLite: every use in the log, in the order written (the caller keeps the last of each
/// token), and the last sequence number read. A scan in key order, no sort: it runs at start.
pub fn logged_uses(conn: &Db) -> Result<(Vec<(i64, i64)>, i64), Error> {
    let rows: Vec<(i64, i64, i64)> =
        conn.query_all("SELECT seq, token_id, used_at FROM token_uses ORDER BY seq", args![], |r| {
            Ok((r.get(0)?, r.get(1)?, r.get(2)?))
        })?;
    let upto = rows.last().map_or(0, |r| r.0);
    Ok((rows.into_iter().map(|(_, id, at)| (id, at)).collect(), upto))
}

/// SQLite: removes the log's uses up to `upto`, once they are folded into their tokens.
pub fn forget_uses(conn: &Db, upto: i64) -> Result<usize, Error> {
    conn.execute("DELETE FROM token_uses WHERE seq <= ?1", args![upto])
}

pub fn revoke(conn: &Db, digest: &[u8; 32], now: i64) -> Result<bool, Error> {
    let n = conn.execute(
        "UPDATE tokens SET revoked_at = ?2 WHERE digest = ?1 AND revoked_at IS NULL",
        args![&digest[..], now],
    )?;
    Ok(n == 1)
}

/// Revokes every live token of a user for an application (all applications when `app_id` is None).
pub fn revoke_for_user(conn: &Db, user_id: i64, app_id: Option<&str>, now: i64) -> Result<usize, Error> {
    conn.execute(
        "UPDATE tokens SET revoked_at = ?3
         WHERE user_id = ?1 AND (CAST(?2 AS TEXT) IS NULL OR app_id = ?2) AND revoked_at IS NULL",
        args![user_id, app_id, now],
    )
}

/// Revokes every live token of a user but `keep`.
pub fn revoke_for_user_except(conn: &Db, user_id: i64, keep: Option<&[u8; 32]>, now: i64) -> Result<usize, Error> {
    match keep {
        Some(keep) => conn.execute(
            "UPDATE tokens SET revoked_at = ?3 WHERE user_id = ?1 AND revoked_at IS NULL AND digest <> ?2",
            args![user_id, &keep[..], now],
        ),
        None => conn.execute(
            "UPDATE tokens SET revoked_at = ?2 WHERE user_id = ?1 AND revoked_at IS NULL",
            args![user_id, now],
        ),
    }
}

pub fn revoke_for_api_key(conn: &Db, api_key_id: &str, now: i64) -> Result<usize, Error> {
    conn.execute(
        "UPDATE tokens SET revoked_at = ?2 WHERE api_key_id = ?1 AND revoked_at IS NULL",
        args![api_key_id, now],
    )
}

/// What makes a token dead: revoked, expired, or unused for its idle timeout (`?3` is now).
const DEAD: &str = "(revoked_at IS NOT NULL
                     OR expires_at <= ?3
                     OR (idle_ms IS NOT NULL AND last_used_at + idle_ms <= ?3))";

/// The reaper's read: among the next `scan` tokens in order of issue after id `after`, the first
/// `batch` dead ones. Answers the id up to which a delete should go (the `batch`-th dead token,
/// or the end of the window when fewer were found) and how many dead ones lie before it; None
/// when no token comes after `after`.
///
/// Being dead is not indexable (an idle token dies by its last use, which every check moves),
/// so the reaper walks the table by id, a window at a time, on a reading connection: the writer
/// is taken only to delete what was found (`delete_dead`).
pub fn dead_range(conn: &Db, now: i64, after: i64, scan: i64, batch: i64) -> Result<Option<(i64, usize)>, Error> {
    let end: Option<i64> = conn.value(
        "SELECT max(id) FROM (SELECT id FROM tokens WHERE id > ?1 ORDER BY id LIMIT ?2) w",
        args![after, scan],
    )?;
    let Some(end) = end else {
        return Ok(None);
    };
    let dead: Vec<i64> = conn.query_all(
        &format!("SELECT id FROM tokens WHERE id > ?1 AND id <= ?2 AND {DEAD} ORDER BY id LIMIT ?4"),
        args![after, end, now, batch],
        |r| r.get(0),
    )?;
    match dead.last() {
        Some(&last) if dead.len() as i64 == batch => Ok(Some((last, dead.len()))),
        _ => Ok(Some((end, dead.len()))),
    }
}

/// Deletes the tokens with ids in (after, upto] that are dead (again: a use may have revived an
/// idle one since the read); answers how many.
pub fn delete_dead(conn: &Db, now: i64, after: i64, upto: i64) -> Result<usize, Error> {
    conn.execute(&format!("DELETE FROM tokens WHERE id > ?1 AND id <= ?2 AND {DEAD}"), args![after, upto, now])
}

/// Number of token rows (for tests and `gatehouse` status output).
pub fn count(conn: &Db) -> Result<i64, Error> {
    conn.value("SELECT count(*) FROM tokens", args![])
}

/// A refresh token as rotation needs to see it, live or not.
pub struct RefreshRow {
    pub user_id: i64,
    pub app_id: String,
    pub family: Vec<u8>,
    pub expires_at: i64,
    pub revoked_at: Option<i64>,
    pub used_at: Option<i64>,
}

pub fn refresh_row(conn: &Db, digest: &[u8; 32], kind: &str) -> Result<Option<RefreshRow>, Error> {
    conn.query_opt(
        "SELECT user_id, app_id, family, expires_at, revoked_at, used_at FROM tokens
             WHERE digest = ?1 AND kind = ?2 AND family IS NOT NULL",
        args![&digest[..], kind],
        |r| {
            Ok(RefreshRow {
                user_id: r.get(0)?,
                app_id: r.get(1)?,
                family: r.get(2)?,
                expires_at: r.get(3)?,
                revoked_at: r.get(4)?,
                used_at: r.get(5)?,
            })
        },
    )
}

/// Marks a refresh token used; false when it was used or revoked already (the race was lost).
pub fn mark_used(conn: &Db, digest: &[u8; 32], now: i64) -> Result<bool, Error> {
    let n = conn.execute(
        "UPDATE tokens SET used_at = ?2 WHERE digest = ?1 AND used_at IS NULL AND revoked_at IS NULL",
        args![&digest[..], now],
    )?;
    Ok(n == 1)
}

pub fn revoke_family(conn: &Db, family: &[u8], now: i64) -> Result<usize, Error> {
    conn.execute("UPDATE tokens SET revoked_at = ?2 WHERE family = ?1 AND revoked_at IS NULL", args![family, now])
}
