//! users and memberships

use super::db::{Db, Row};
use super::Error;
use crate::args;

const COLUMNS: &str = "id, login, email, first_name, last_name, civility, locale, customer_id, user_type,
    blocked, license_accepted, demo_mode, password_expires_at, must_renew, workspace_id";

/// The user columns, each prefixed with `alias.`, for queries that join users.
pub(crate) fn columns_of(alias: &str) -> String {
    COLUMNS.split(',').map(|c| format!("{alias}.{}", c.trim())).collect::<Vec<_>>().join(", ")
}

/// A user's row, without its password hash (the core's `User` is made from it).
#[derive(Debug, Clone, PartialEq)]
pub struct UserRow {
    pub id: i64,
    pub login: String,
    pub email: Option<String>,
    pub first_name: String,
    pub last_name: String,
    pub civility: String,
    pub locale: Option<String>,
    pub customer_id: Option<i64>,
    pub user_type: String,
    pub blocked: bool,
    pub license_accepted: bool,
    pub demo_mode: Option<String>,
    pub password_expires_at: Option<i64>,
    pub must_renew: bool,
    pub workspace_id: Option<i64>,
}

fn user(r: &Row<'_>) -> Result<UserRow, Error> {
    user_at(r, 0)
}

/// A user read from the row's columns `base..base + 15`, in the order of `COLUMNS`.
pub(crate) fn user_at(r: &Row<'_>, base: usize) -> Result<UserRow, Error> {
    Ok(UserRow {
        id: r.get(base)?,
        login: r.get(base + 1)?,
        email: r.get(base + 2)?,
        first_name: r.get(base + 3)?,
        last_name: r.get(base + 4)?,
        civility: r.get(base + 5)?,
        locale: r.get(base + 6)?,
        customer_id: r.get(base + 7)?,
        user_type: r.get(base + 8)?,
        blocked: r.get(base + 9)?,
        license_accepted: r.get(base + 10)?,
        demo_mode: r.get(base + 11)?,
        password_expires_at: r.get(base + 12)?,
        must_renew: r.get(base + 13)?,
        workspace_id: r.get(base + 14)?,
    })
}

/// The key a login is unique under: logins compare case-insensitively and in one normalization
/// form (`base::text::fold`), so two spellings of one name are one login.
pub fn login_key(login: &str) -> String {
    crate::base::text::fold(login)
}

pub struct NewUser<'a> {
    pub login: &'a str,
    pub email: Option<&'a str>,
    pub first_name: &'a str,
    pub last_name: &'a str,
    pub civility: &'a str,
    pub user_type: &'a str,
    pub password_hash: Option<&'a str>,
    pub password_expires_at: Option<i64>,
}

/// Inserts a user; `Error::Conflict` when the login is taken.
pub fn insert(conn: &Db, u: &NewUser<'_>, now: i64) -> Result<i64, Error> {
    conn.query_opt(
        "INSERT INTO users (login, login_key, email, first_name, last_name, civility, user_type,
                            password_hash, password_expires_at, created_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)
         ON CONFLICT DO NOTHING RETURNING id",
        args![
            u.login,
            login_key(u.login),
            u.email,
            u.first_name,
            u.last_name,
            u.civility,
            u.user_type,
            u.password_hash,
            u.password_expires_at,
            now
        ],
        |r| r.get(0),
    )?
    .ok_or_else(|| Error::Conflict(format!("user {}", u.login)))
}

/// The user with this login and their password hash.
pub fn by_login(conn: &Db, login: &str) -> Result<Option<(UserRow, Option<String>)>, Error> {
    let sql = format!("SELECT {COLUMNS}, password_hash FROM users WHERE login_key = ?1");
    conn.query_opt(&sql, args![login_key(login)], |r| Ok((user(r)?, r.get(15)?)))
}

pub fn by_id(conn: &Db, id: i64) -> Result<Option<UserRow>, Error> {
    let sql = format!("SELECT {COLUMNS} FROM users WHERE id = ?1");
    conn.query_opt(&sql, args![id], user)
}

pub fn list(conn: &Db) -> Result<Vec<(UserRow, Vec<String>)>, Error> {
    let concat = if conn.is_postgres() { "string_agg(app_id, ',')" } else { "group_concat(app_id, ',')" };
    let sql = format!(
        "SELECT {COLUMNS}, (SELECT {concat} FROM
            (SELECT app_id FROM memberships m WHERE m.user_id = users.id ORDER BY app_id) AS a)
         FROM users ORDER BY id"
    );
    conn.query_all(&sql, args![], |r| {
        let apps: Option<String> = r.get(15)?;
        let apps = apps.map(|a| a.split(',').map(String::from).collect()).unwrap_or_default();
        Ok((user(r)?, apps))
    })
}

pub fn set_blocked(conn: &Db, id: i64, blocked: bool) -> Result<(), Error> {
    conn.execute("UPDATE users SET blocked = ?2 WHERE id = ?1", args![id, blocked])?;
    Ok(())
}

/// Sets a user's password hash, set at `now` (the throttle forgets failures from before it).
pub fn set_password(conn: &Db, id: i64, hash: &str, expires_at: Option<i64>, now: i64) -> Result<(), Error> {
    conn.execute(
        "UPDATE users SET password_hash = ?2, password_expires_at = ?3, must_renew = 0, password_set_at = ?4 \
         WHERE id = ?1",
        args![id, hash, expires_at, now],
    )?;
    Ok(())
}

/// Replaces a password's hash by one of the same password under other parameters, if it is still
/// `old` (nothing else changes: not when the password was set, nor its expiry); false when another
/// write changed it first.
pub fn rehash(conn: &Db, id: i64, old: &str, new: &str) -> Result<bool, Error> {
    let n =
        conn.execute("UPDATE users SET password_hash = ?3 WHERE id = ?1 AND password_hash = ?2", args![id, old, new])?;
    Ok(n == 1)
}

/// When the password of the user who signs in as `account` was last set (every dialect signs in
/// by login; IQM's "email" is the login).
pub fn password_set_at(conn: &Db, account: &str) -> Result<Option<i64>, Error> {
    Ok(conn
        .query_opt("SELECT password_set_at FROM users WHERE login_key = ?1", args![login_key(account)], |r| {
            r.get::<Option<i64>>(0)
        })?
        .flatten())
}

pub fn is_member(conn: &Db, user_id: i64, app_id: &str) -> Result<bool, Error> {
    Ok(conn
        .query_opt("SELECT 1 FROM memberships WHERE user_id = ?1 AND app_id = ?2", args![user_id, app_id], |_| Ok(()))?
        .is_some())
}

/// Adds a membership; false when it was there already.
pub fn add_membership(conn: &Db, user_id: i64, app_id: &str, now: i64) -> Result<bool, Error> {
    let n = conn.execute(
        "INSERT INTO memberships (user_id, app_id, created_at) VALUES (?1, ?2, ?3)
         ON CONFLICT DO NOTHING",
        args![user_id, app_id, now],
    )?;
    Ok(n == 1)
}

/// Removes a membership; false when there was none.
pub fn remove_membership(conn: &Db, user_id: i64, app_id: &str) -> Result<bool, Error> {
    let n = conn.execute("DELETE FROM memberships WHERE user_id = ?1 AND app_id = ?2", args![user_id, app_id])?;
    Ok(n == 1)
}

/// The applications a user belongs to.
pub fn membership_count(conn: &Db, user_id: i64) -> Result<i64, Error> {
    conn.value("SELECT count(*) FROM memberships WHERE user_id = ?1", args![user_id])
}

pub fn delete(conn: &Db, user_id: i64) -> Result<(), Error> {
    conn.execute("DELETE FROM users WHERE id = ?1", args![user_id])?;
    Ok(())
}

/// Gives a user the next workspace id (from 200001 up, never one given before, even to a user
/// since deleted) if they have none; returns theirs. Call inside a write transaction.
pub fn ensure_workspace(conn: &Db, user_id: i64) -> Result<i64, Error> {
    let current: Option<i64> = conn.value("SELECT workspace_id FROM users WHERE id = ?1", args![user_id])?;
    if let Some(ws) = current {
        return Ok(ws);
    }
    let next: i64 =
        conn.value("UPDATE sequences SET last = last + 1 WHERE name = 'workspace' RETURNING last", args![])?;
    conn.execute("UPDATE users SET workspace_id = ?2 WHERE id = ?1", args![user_id, next])?;
    Ok(next)
}
