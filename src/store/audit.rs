//! audit: security events.

use super::db::Db;
use super::Error;
use crate::args;

pub struct AuditRow {
    pub at: i64,
    pub event: String,
    pub app_id: Option<String>,
    pub user_id: Option<i64>,
    pub login: Option<String>,
    pub client: Option<String>,
    pub dialect: Option<String>,
}

pub fn insert(conn: &Db, r: &AuditRow) -> Result<(), Error> {
    conn.execute(
        "INSERT INTO audit (at, event, app_id, user_id, login, client, dialect) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
        args![r.at, r.event, r.app_id, r.user_id, r.login, r.client, r.dialect],
    )?;
    Ok(())
}

/// Events since `since`, of one login (case-insensitively) when given, oldest first.
pub fn list(conn: &Db, since: i64, login: Option<&str>) -> Result<Vec<AuditRow>, Error> {
    conn.query_all(
        "SELECT at, event, app_id, user_id, login, client, dialect FROM audit
         WHERE at >= ?1 AND (CAST(?2 AS TEXT) IS NULL OR lower(login) = lower(CAST(?2 AS TEXT))) ORDER BY at, id",
        args![since, login],
        |r| {
            Ok(AuditRow {
                at: r.get(0)?,
                event: r.get(1)?,
                app_id: r.get(2)?,
                user_id: r.get(3)?,
                login: r.get(4)?,
                client: r.get(5)?,
                dialect: r.get(6)?,
            })
        },
    )
}

/// Deletes at most `batch` events older than `before`; returns how many.
pub fn reap(conn: &Db, before: i64, batch: i64) -> Result<usize, Error> {
    conn.execute("DELETE FROM audit WHERE id IN (SELECT id FROM audit WHERE at < ?1 LIMIT ?2)", args![before, batch])
}
