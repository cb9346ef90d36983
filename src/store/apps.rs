//! applications

use super::db::Db;
use super::Error;
use crate::args;

pub struct AppRow {
    pub id: String,
    pub builtin: bool,
    pub has_secret: bool,
    pub members: i64,
    pub created_at: i64,
    /// The doors its secret opens, a comma list (`iampass,iqm,oauth`); empty for the built-ins.
    pub doors: String,
}

pub fn ensure_builtin(conn: &Db, ids: &[&str], now: i64) -> Result<(), Error> {
    for id in ids {
        conn.execute(
            "INSERT INTO applications (id, secret_enc, builtin, created_at) VALUES (?1, NULL, 1, ?2)
             ON CONFLICT (id) DO NOTHING",
            args![id, now],
        )?;
    }
    Ok(())
}

/// Inserts an application that serves `doors` (a comma list); `Error::Conflict` when the id is taken.
pub fn insert(conn: &Db, id: &str, secret_enc: &[u8], doors: &str, now: i64) -> Result<(), Error> {
    let n = conn.execute(
        "INSERT INTO applications (id, secret_enc, builtin, created_at, doors) VALUES (?1, ?2, 0, ?3, ?4)
         ON CONFLICT DO NOTHING",
        args![id, secret_enc, now, doors],
    )?;
    if n == 0 {
        return Err(Error::Conflict(format!("application {id}")));
    }
    Ok(())
}

pub fn exists(conn: &Db, id: &str) -> Result<bool, Error> {
    Ok(conn.query_opt("SELECT 1 FROM applications WHERE id = ?1", args![id], |_| Ok(()))?.is_some())
}

/// The sealed secret: None for an unknown application, Some(None) for one without a secret.
pub fn sealed_secret(conn: &Db, id: &str) -> Result<Option<Option<Vec<u8>>>, Error> {
    conn.query_opt("SELECT secret_enc FROM applications WHERE id = ?1", args![id], |r| r.get(0))
}

/// The doors an application's secret opens (a comma list); None for an unknown application.
pub fn doors(conn: &Db, id: &str) -> Result<Option<String>, Error> {
    conn.query_opt("SELECT doors FROM applications WHERE id = ?1", args![id], |r| r.get(0))
}

/// An application's doors (a comma list) and its sealed secret, if it has one.
pub type DoorsAndSecret = (String, Option<Vec<u8>>);

/// The doors and the sealed secret of an application, in one read; None for an unknown one.
pub fn doors_and_secret(conn: &Db, id: &str) -> Result<Option<DoorsAndSecret>, Error> {
    conn.query_opt("SELECT doors, secret_enc FROM applications WHERE id = ?1", args![id], |r| {
        Ok((r.get(0)?, r.get(1)?))
    })
}

/// Sets the doors of an application that has a secret; false when there is none such.
pub fn set_doors(conn: &Db, id: &str, doors: &str) -> Result<bool, Error> {
    Ok(conn.execute("UPDATE applications SET doors = ?2 WHERE id = ?1 AND secret_enc IS NOT NULL", args![id, doors])?
        == 1)
}

/// Whether the application refuses a bare password of users who have a second factor.
pub fn requires_second_factor(conn: &Db, id: &str) -> Result<bool, Error> {
    Ok(conn
        .query_opt("SELECT require_second_factor FROM applications WHERE id = ?1", args![id], |r| r.get::<bool>(0))?
        .unwrap_or(false))
}

pub fn set_requires_second_factor(conn: &Db, id: &str, required: bool) -> Result<bool, Error> {
    Ok(conn.execute("UPDATE applications SET require_second_factor = ?2 WHERE id = ?1", args![id, required])? == 1)
}

/// How many applications have a sealed secret (a master key is needed to open them).
pub fn sealed_count(conn: &Db) -> Result<i64, Error> {
    conn.value("SELECT count(*) FROM applications WHERE secret_enc IS NOT NULL", args![])
}

pub fn list(conn: &Db) -> Result<Vec<AppRow>, Error> {
    conn.query_all(
        "SELECT a.id, a.builtin, a.secret_enc IS NOT NULL, a.created_at,
                (SELECT count(*) FROM memberships m WHERE m.app_id = a.id), a.doors
         FROM applications a ORDER BY a.id",
        args![],
        |r| {
            Ok(AppRow {
                id: r.get(0)?,
                builtin: r.get(1)?,
                has_secret: r.get(2)?,
                created_at: r.get(3)?,
                members: r.get(4)?,
                doors: r.get(5)?,
            })
        },
    )
}
