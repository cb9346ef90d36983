//! audit: security events.

use rusqlite::{params, Connection};

use crate::core::Error;

pub struct AuditRow {
    pub at: i64,
    pub event: String,
    pub app_id: Option<String>,
    pub user_id: Option<i64>,
    pub login: Option<String>,
    pub client: Option<String>,
    pub dialect: Option<String>,
}

pub fn insert(conn: &Connection, r: &AuditRow) -> Result<(), Error> {
    conn.prepare_cached(
        "INSERT INTO audit (at, event, app_id, user_id, login, client, dialect) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
    )?
    .execute(params![r.at, r.event, r.app_id, r.user_id, r.login, r.client, r.dialect])?;
    Ok(())
}

/// Events since `since`, of one login (case-insensitively) when given, oldest first.
pub fn list(conn: &Connection, since: i64, login: Option<&str>) -> Result<Vec<AuditRow>, Error> {
    let mut st = conn.prepare(
        "SELECT at, event, app_id, user_id, login, client, dialect FROM audit
         WHERE at >= ?1 AND (?2 IS NULL OR lower(login) = lower(?2)) ORDER BY at, id",
    )?;
    let rows = st.query_map(params![since, login], |r| {
        Ok(AuditRow {
            at: r.get(0)?,
            event: r.get(1)?,
            app_id: r.get(2)?,
            user_id: r.get(3)?,
            login: r.get(4)?,
            client: r.get(5)?,
            dialect: r.get(6)?,
        })
    })?;
    Ok(rows.collect::<Result<_, _>>()?)
}

pub fn reap(conn: &Connection, before: i64) -> Result<usize, Error> {
    Ok(conn.prepare_cached("DELETE FROM audit WHERE at < ?1")?.execute(params![before])?)
}
