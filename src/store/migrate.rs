//! `gatehouse migrate-store`: moves a single box's SQLite database into PostgreSQL, so that the
//! same users, applications, keys, tokens and devices are served by several nodes.
//!
//! Every row is copied as it is (password hashes, digests and sealed secrets included, so every
//! user signs in with the same password and every token stays live), in one transaction: the
//! destination gets all of it or nothing. The destination must hold no users or applications of
//! its own. The master key that sealed the application secrets goes with the data: give every
//! node the same key file.

use std::path::Path;

use rusqlite::{Connection, OpenFlags};

use super::db::{ToValue, Value};
use super::Error;
use super::{sqlite, Db, Store};
use crate::config::Config;

/// The tables, parents before children; how to read each so that the first of duplicate keys is
/// the one to keep (the SQLite nonce log may hold a nonce twice).
const TABLES: &[(&str, &str)] = &[
    ("applications", ""),
    ("users", "ORDER BY id"),
    ("memberships", ""),
    ("api_keys", ""),
    ("tokens", "ORDER BY id"),
    ("links", ""),
    ("devices", "ORDER BY id"),
    ("nonces", "ORDER BY expires_at DESC"),
    ("audit", "ORDER BY id"),
    ("auth_sessions", "ORDER BY id"),
    ("sequences", ""),
    ("oidc_clients", ""),
    ("signing_keys", ""),
    ("oidc_codes", ""),
    ("oidc_grants", ""),
    ("client_tokens", ""),
    ("consents", ""),
    ("totp", ""),
    ("recovery_codes", ""),
    ("device_codes", ""),
    ("logout_queue", "ORDER BY id"),
    ("passkeys", "ORDER BY id"),
];

/// Tables whose ids come from an identity column, set past the copied ids afterwards.
const IDENTITIES: &[&str] = &["users", "tokens", "devices", "audit", "auth_sessions", "logout_queue", "passkeys"];

/// A value read from SQLite, owned.
enum Owned {
    Null,
    Int(i64),
    Text(String),
    Blob(Vec<u8>),
}

impl ToValue for Owned {
    fn to_value(&self) -> Value<'_> {
        match self {
            Owned::Null => Value::Null,
            Owned::Int(i) => Value::Int(*i),
            Owned::Text(s) => Value::Text(s),
            Owned::Blob(b) => Value::Blob(b),
        }
    }
}

/// How many rows of each table were copied.
pub type Copied = Vec<(&'static str, usize)>;

/// Copies the SQLite database `file` into the PostgreSQL database of `config`'s store.
pub fn sqlite_to_postgres(config: &Config, file: &Path) -> Result<Copied, String> {
    if config.store.backend != "postgres" {
        return Err("set store.backend = \"postgres\" and store.postgres_url (or GATEHOUSE_STORE__BACKEND and \
                    GATEHOUSE_STORE__POSTGRES_URL) to name the destination"
            .into());
    }
    let src = Connection::open_with_flags(file, OpenFlags::SQLITE_OPEN_READ_ONLY)
        .map_err(|e| format!("{}: {e}", file.display()))?;
    let version: i64 =
        src.query_row("PRAGMA user_version", [], |r| r.get(0)).map_err(|e| format!("{}: {e}", file.display()))?;
    if version != sqlite::schema_version() {
        return Err(format!(
            "{} is at schema version {version}, this gatehouse copies version {}: start this gatehouse on it once \
             (store.backend = \"sqlite\") so that it migrates, then copy",
            file.display(),
            sqlite::schema_version()
        ));
    }
    let uses = sqlite::logged_uses_beside(file)
        .map_err(|e| format!("{}: {e}", sqlite::uses_log_path(file).display()))?
        .into_iter()
        .collect();
    let rows = read_all(&src, &uses).map_err(|e| format!("{}: {e}", file.display()))?;
    // The highest user id SQLite ever gave (AUTOINCREMENT), which may belong to a deleted user.
    let users_seq: i64 = src
        .query_row("SELECT COALESCE((SELECT seq FROM sqlite_sequence WHERE name = 'users'), 0)", [], |r| r.get(0))
        .map_err(|e| format!("{}: {e}", file.display()))?;
    let dest = Store::open(config).map_err(|e| e.to_string())?;
    let taken: i64 = dest
        .with(|c| c.value("SELECT (SELECT count(*) FROM users) + (SELECT count(*) FROM applications)", crate::args![]))
        .map_err(|e| e.to_string())?;
    if taken > 0 {
        return Err("the PostgreSQL database already holds users or applications: copy into an empty one".into());
    }
    dest.write(|tx| write_all(tx, &rows, users_seq)).map_err(|e| e.to_string())?;
    Ok(rows.iter().map(|(table, _, r)| (*table, r.len())).collect())
}

type TableRows = (&'static str, Vec<String>, Vec<Vec<Owned>>);

fn read_all(src: &Connection, uses: &std::collections::HashMap<i64, i64>) -> rusqlite::Result<Vec<TableRows>> {
    let mut out = Vec::new();
    for (table, order) in TABLES {
        let mut st = src.prepare(&format!("SELECT * FROM {table} {order}"))?;
        let columns: Vec<String> = st.column_names().iter().map(|c| c.to_string()).collect();
        let n = columns.len();
        let rows = st
            .query_map([], |r| {
                (0..n)
                    .map(|i| {
                        use rusqlite::types::ValueRef;
                        Ok(match r.get_ref(i)? {
                            ValueRef::Null => Owned::Null,
                            ValueRef::Integer(v) => Owned::Int(v),
                            ValueRef::Real(v) => Owned::Int(v as i64),
                            ValueRef::Text(t) => Owned::Text(String::from_utf8_lossy(t).into_owned()),
                            ValueRef::Blob(b) => Owned::Blob(b.to_vec()),
                        })
                    })
                    .collect::<rusqlite::Result<Vec<Owned>>>()
            })?
            .collect::<rusqlite::Result<Vec<_>>>()?;
        let rows = if *table == "tokens" { with_logged_uses(uses, &columns, rows) } else { rows };
        out.push((*table, columns, rows));
    }
    Ok(out)
}

/// Tokens carry the uses still in SQLite's log (`token_uses` in the file beside the database,
/// folded in by the reaper) as their last use: the log itself is not copied, PostgreSQL keeps
/// uses in the tokens.
fn with_logged_uses(
    uses: &std::collections::HashMap<i64, i64>,
    columns: &[String],
    mut rows: Vec<Vec<Owned>>,
) -> Vec<Vec<Owned>> {
    let col = |name: &str| columns.iter().position(|c| c == name);
    let (Some(id), Some(last)) = (col("id"), col("last_used_at")) else { return rows };
    for row in &mut rows {
        if let (Owned::Int(i), Owned::Int(l)) = (&row[id], &row[last]) {
            if let Some(u) = uses.get(i).filter(|u| **u > *l) {
                row[last] = Owned::Int(*u);
            }
        }
    }
    rows
}

fn write_all(tx: &Db, tables: &[TableRows], users_seq: i64) -> Result<(), Error> {
    for (table, columns, rows) in tables {
        let marks: Vec<String> = (1..=columns.len()).map(|i| format!("?{i}")).collect();
        // The destination's counters were set by its own migration, on no data: the source's
        // are the ones that count, unless already higher.
        let conflict = if *table == "sequences" {
            "ON CONFLICT (name) DO UPDATE SET last = GREATEST(sequences.last, EXCLUDED.last)"
        } else {
            "ON CONFLICT DO NOTHING"
        };
        let sql = format!("INSERT INTO {table} ({}) VALUES ({}) {conflict}", columns.join(", "), marks.join(", "));
        for row in rows {
            let args: Vec<&dyn ToValue> = row.iter().map(|v| v as &dyn ToValue).collect();
            tx.execute(&sql, &args)?;
        }
    }
    for table in IDENTITIES {
        let floor = if *table == "users" { users_seq } else { 0 };
        tx.value::<i64>(
            &format!(
                "SELECT setval(pg_get_serial_sequence('{table}', 'id'), GREATEST(coalesce(max(id), 0), ?1) + 1, false) \
                 FROM {table}"
            ),
            crate::args![floor],
        )?;
    }
    Ok(())
}
