//! auth_sessions: IAMPASS sign-ins waiting for (or decided on) the user's device, and the sessions
//! they become. The status column is what a decision or a logout wrote; `effective` reads the
//! deadlines into it.

use super::db::{Db, Row};
use super::Error;
use crate::args;

pub struct NewAuthSession<'a> {
    pub token: &'a str,
    pub app_id: &'a str,
    pub user_id: i64,
    pub methods: &'a str,
    pub challenge: &'a [u8],
    pub client: Option<&'a str>,
    pub created_at: i64,
    pub decide_by: i64,
    pub expires_at: i64,
}

#[derive(Debug, Clone)]
pub struct AuthSessionRow {
    pub id: i64,
    pub token: String,
    pub app_id: String,
    pub user_id: i64,
    pub methods: String,
    pub status: String,
    pub challenge: Vec<u8>,
    pub client: Option<String>,
    pub device_id: Option<i64>,
    pub created_at: i64,
    pub decide_by: i64,
    pub expires_at: i64,
}

impl AuthSessionRow {
    /// The status as of `now`: a request nobody answered in time is `timeout`, an approved session
    /// past its duration is `closed`.
    pub fn effective(&self, now: i64) -> &str {
        match self.status.as_str() {
            "pending" if now >= self.decide_by => "timeout",
            "active" if now >= self.expires_at => "closed",
            s => s,
        }
    }
}

const COLUMNS: &str = "id, token, app_id, user_id, methods, status, challenge, client, device_id, created_at, \
                       decide_by, expires_at";

fn row(r: &Row<'_>) -> Result<AuthSessionRow, Error> {
    Ok(AuthSessionRow {
        id: r.get(0)?,
        token: r.get(1)?,
        app_id: r.get(2)?,
        user_id: r.get(3)?,
        methods: r.get(4)?,
        status: r.get(5)?,
        challenge: r.get(6)?,
        client: r.get(7)?,
        device_id: r.get(8)?,
        created_at: r.get(9)?,
        decide_by: r.get(10)?,
        expires_at: r.get(11)?,
    })
}

pub fn insert(conn: &Db, s: &NewAuthSession<'_>) -> Result<i64, Error> {
    conn.value(
        "INSERT INTO auth_sessions (token, app_id, user_id, methods, status, challenge, client, created_at, decide_by,
                                    expires_at)
         VALUES (?1, ?2, ?3, ?4, 'pending', ?5, ?6, ?7, ?8, ?9) RETURNING id",
        args![s.token, s.app_id, s.user_id, s.methods, s.challenge, s.client, s.created_at, s.decide_by, s.expires_at],
    )
}

/// Sign-ins started for one user of one application since `since`.
pub fn started_for_user(conn: &Db, user_id: i64, app_id: &str, since: i64) -> Result<i64, Error> {
    conn.value(
        "SELECT count(*) FROM auth_sessions WHERE user_id = ?1 AND app_id = ?2 AND created_at >= ?3",
        args![user_id, app_id, since],
    )
}

/// Sign-ins started by one application since `since`.
pub fn started_for_app(conn: &Db, app_id: &str, since: i64) -> Result<i64, Error> {
    conn.value("SELECT count(*) FROM auth_sessions WHERE app_id = ?1 AND created_at >= ?2", args![app_id, since])
}

pub fn by_token(conn: &Db, token: &str) -> Result<Option<AuthSessionRow>, Error> {
    conn.query_opt(&format!("SELECT {COLUMNS} FROM auth_sessions WHERE token = ?1"), args![token], row)
}

pub fn by_id(conn: &Db, id: i64) -> Result<Option<AuthSessionRow>, Error> {
    conn.query_opt(&format!("SELECT {COLUMNS} FROM auth_sessions WHERE id = ?1"), args![id], row)
}

/// The requests of one user of one application still waiting for an answer at `now`, oldest first.
pub fn pending_for(conn: &Db, user_id: i64, app_id: &str, now: i64) -> Result<Vec<AuthSessionRow>, Error> {
    conn.query_all(
        &format!(
            "SELECT {COLUMNS} FROM auth_sessions
             WHERE user_id = ?1 AND app_id = ?2 AND status = 'pending' AND decide_by > ?3 ORDER BY id LIMIT 50"
        ),
        args![user_id, app_id, now],
        row,
    )
}

/// Answers a request still waiting at `now` with `status`, by `device_id`; false when it was not
/// waiting any more (answered, timed out, ended): the row count decides between racing answers.
/// An approved session lasts its duration from now: `expires_at` was written as the deadline
/// plus the duration.
pub fn decide(conn: &Db, id: i64, status: &str, device_id: i64, now: i64) -> Result<bool, Error> {
    let n = conn.execute(
        "UPDATE auth_sessions SET status = ?2, device_id = ?3, decided_at = ?4,
             expires_at = CASE WHEN ?2 = 'active' THEN ?4 + (expires_at - decide_by) ELSE expires_at END
         WHERE id = ?1 AND status = 'pending' AND decide_by > ?4",
        args![id, status, device_id, now],
    )?;
    Ok(n == 1)
}

/// Ends a session for good; false when it had ended already.
pub fn close(conn: &Db, id: i64, now: i64) -> Result<bool, Error> {
    let n = conn.execute(
        "UPDATE auth_sessions SET status = 'closed', decided_at = coalesce(decided_at, ?2)
         WHERE id = ?1 AND status <> 'closed'",
        args![id, now],
    )?;
    Ok(n == 1)
}

/// Marks at most `batch` requests nobody answered by their deadline `timeout`; answers them.
pub fn time_out(conn: &Db, now: i64, batch: i64) -> Result<Vec<AuthSessionRow>, Error> {
    let rows = conn.query_all(
        &format!(
            "SELECT {COLUMNS} FROM auth_sessions WHERE status = 'pending' AND decide_by <= ?1 ORDER BY decide_by LIMIT ?2"
        ),
        args![now, batch],
        row,
    )?;
    let mut out = Vec::with_capacity(rows.len());
    for r in rows {
        if conn
            .execute("UPDATE auth_sessions SET status = 'timeout' WHERE id = ?1 AND status = 'pending'", args![r.id])?
            == 1
        {
            out.push(r);
        }
    }
    Ok(out)
}

/// A lost device: the user's waiting requests for the application fail, and the sessions the
/// lost devices approved are closed. Answers the requests that failed.
pub fn fail_for_lost(conn: &Db, user_id: i64, app_id: &str, now: i64) -> Result<Vec<AuthSessionRow>, Error> {
    let failed = conn.query_all(
        &format!(
            "SELECT {COLUMNS} FROM auth_sessions
             WHERE user_id = ?1 AND app_id = ?2 AND status = 'pending' AND decide_by > ?3"
        ),
        args![user_id, app_id, now],
        row,
    )?;
    conn.execute(
        "UPDATE auth_sessions SET status = 'failed', decided_at = ?3
         WHERE user_id = ?1 AND app_id = ?2 AND status = 'pending'",
        args![user_id, app_id, now],
    )?;
    conn.execute(
        "UPDATE auth_sessions SET status = 'closed'
         WHERE user_id = ?1 AND app_id = ?2 AND status = 'active'
           AND device_id IN (SELECT id FROM devices WHERE user_id = ?1 AND app_id = ?2 AND lost_at IS NOT NULL)",
        args![user_id, app_id],
    )?;
    Ok(failed)
}

/// A user blocked, or their membership of `app_id` (every application: None) ended: the requests
/// waiting fail and the approved sessions close. Answers the requests that failed.
pub fn end_for_user(conn: &Db, user_id: i64, app_id: Option<&str>, now: i64) -> Result<Vec<AuthSessionRow>, Error> {
    let failed = conn.query_all(
        &format!(
            "SELECT {COLUMNS} FROM auth_sessions
             WHERE user_id = ?1 AND (CAST(?2 AS TEXT) IS NULL OR app_id = ?2) AND status = 'pending' AND decide_by > ?3"
        ),
        args![user_id, app_id, now],
        row,
    )?;
    conn.execute(
        "UPDATE auth_sessions SET status = 'failed', decided_at = ?3
         WHERE user_id = ?1 AND (CAST(?2 AS TEXT) IS NULL OR app_id = ?2) AND status = 'pending'",
        args![user_id, app_id, now],
    )?;
    conn.execute(
        "UPDATE auth_sessions SET status = 'closed', decided_at = coalesce(decided_at, ?3)
         WHERE user_id = ?1 AND (CAST(?2 AS TEXT) IS NULL OR app_id = ?2) AND status = 'active'",
        args![user_id, app_id, now],
    )?;
    Ok(failed)
}

pub fn delete_for(conn: &Db, user_id: i64, app_id: &str) -> Result<usize, Error> {
    conn.execute("DELETE FROM auth_sessions WHERE user_id = ?1 AND app_id = ?2", args![user_id, app_id])
}

/// Removes at most `batch` sessions that ended before `before` (their duration over, and any
/// request long past its deadline).
pub fn reap(conn: &Db, before: i64, batch: i64) -> Result<usize, Error> {
    conn.execute(
        "DELETE FROM auth_sessions WHERE id IN
         (SELECT id FROM auth_sessions WHERE expires_at < ?1 AND decide_by < ?1 LIMIT ?2)",
        args![before, batch],
    )
}
