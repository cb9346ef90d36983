//! applications

use rusqlite::{params, Connection, OptionalExtension};

use crate::core::Error;

pub struct AppRow {
    pub id: String,
    pub builtin: bool,
    pub has_secret: bool,
    pub members: i64,
    pub created_at: i64,
}

pub fn ensure_builtin(conn: &Connection, ids: &[&str], now: i64) -> Result<(), Error> {
    let mut st = conn.prepare_cached(
        "INSERT INTO applications (id, secret_enc, builtin, created_at) VALUES (?1, NULL, 1, ?2)
         ON CONFLICT (id) DO NOTHING",
    )?;
    for id in ids {
        st.execute(params![id, now])?;
    }
    Ok(())
}

/// Inserts an application; `Error::Exists` when the id is taken.
pub fn insert(conn: &Connection, id: &str, secret_enc: &[u8], now: i64) -> Result<(), Error> {
    match conn
        .prepare_cached("INSERT INTO applications (id, secret_enc, builtin, created_at) VALUES (?1, ?2, 0, ?3)")?
        .execute(params![id, secret_enc, now])
    {
        Ok(_) => Ok(()),
        Err(e) if super::is_unique_violation(&e) => Err(Error::Exists(format!("application {id}"))),
        Err(e) => Err(e.into()),
    }
}

pub fn exists(conn: &Connection, id: &str) -> Result<bool, Error> {
    Ok(conn
        .prepare_cached("SELECT 1 FROM applications WHERE id = ?1")?
        .query_row([id], |_| Ok(()))
        .optional()?
        .is_some())
}

/// The sealed secret: None for an unknown application, Some(None) for one without a secret.
pub fn sealed_secret(conn: &Connection, id: &str) -> Result<Option<Option<Vec<u8>>>, Error> {
    Ok(conn
        .prepare_cached("SELECT secret_enc FROM applications WHERE id = ?1")?
        .query_row([id], |r| r.get(0))
        .optional()?)
}

pub fn list(conn: &Connection) -> Result<Vec<AppRow>, Error> {
    let mut st = conn.prepare(
        "SELECT a.id, a.builtin, a.secret_enc IS NOT NULL, a.created_at,
                (SELECT count(*) FROM memberships m WHERE m.app_id = a.id)
         FROM applications a ORDER BY a.id",
    )?;
    let rows = st.query_map([], |r| {
        Ok(AppRow {
            id: r.get(0)?,
            builtin: r.get(1)?,
            has_secret: r.get(2)?,
            created_at: r.get(3)?,
            members: r.get(4)?,
        })
    })?;
    Ok(rows.collect::<Result<_, _>>()?)
}
