//! One connection handle for both backends. The store's SQL is written once, in the subset that
//! SQLite and PostgreSQL share (`?N` placeholders, `ON CONFLICT`, `RETURNING`, `IS NOT DISTINCT
//! FROM`, integers for flags and times, blobs for digests), and [`Db`] runs it on either: on
//! PostgreSQL each `?N` becomes `$N` once, when the statement is first prepared on a connection.
//! Where the two differ (a function name, a rowid), a store function asks [`Db::is_postgres`].

use std::cell::{Cell, RefCell};
use std::collections::HashMap;

use super::Error;

/// A value bound to a statement.
#[derive(Debug, Clone, Copy)]
pub enum Value<'a> {
    Null,
    Int(i64),
    Text(&'a str),
    Blob(&'a [u8]),
}

/// What can be bound to a statement (`args![...]`).
pub trait ToValue {
    fn to_value(&self) -> Value<'_>;
}

impl ToValue for i64 {
    fn to_value(&self) -> Value<'_> {
        Value::Int(*self)
    }
}
impl ToValue for bool {
    fn to_value(&self) -> Value<'_> {
        Value::Int(i64::from(*self))
    }
}
impl ToValue for str {
    fn to_value(&self) -> Value<'_> {
        Value::Text(self)
    }
}
impl ToValue for String {
    fn to_value(&self) -> Value<'_> {
        Value::Text(self)
    }
}
impl ToValue for [u8] {
    fn to_value(&self) -> Value<'_> {
        Value::Blob(self)
    }
}
impl ToValue for Vec<u8> {
    fn to_value(&self) -> Value<'_> {
        Value::Blob(self)
    }
}
impl<const N: usize> ToValue for [u8; N] {
    fn to_value(&self) -> Value<'_> {
        Value::Blob(self)
    }
}
impl<T: ToValue + ?Sized> ToValue for &T {
    fn to_value(&self) -> Value<'_> {
        (**self).to_value()
    }
}
impl<T: ToValue> ToValue for Option<T> {
    fn to_value(&self) -> Value<'_> {
        self.as_ref().map_or(Value::Null, ToValue::to_value)
    }
}

/// The arguments of a statement: `args![id, login]`.
#[macro_export]
macro_rules! args {
    ($($x:expr),* $(,)?) => {
        &[$(&$x as &dyn $crate::store::db::ToValue),*] as &[&dyn $crate::store::db::ToValue]
    };
}

impl rusqlite::ToSql for Value<'_> {
    fn to_sql(&self) -> rusqlite::Result<rusqlite::types::ToSqlOutput<'_>> {
        use rusqlite::types::{ToSqlOutput, ValueRef};
        Ok(ToSqlOutput::Borrowed(match *self {
            Value::Null => ValueRef::Null,
            Value::Int(i) => ValueRef::Integer(i),
            Value::Text(s) => ValueRef::Text(s.as_bytes()),
            Value::Blob(b) => ValueRef::Blob(b),
        }))
    }
}

impl postgres::types::ToSql for Value<'_> {
    fn to_sql(
        &self,
        ty: &postgres::types::Type,
        out: &mut bytes::BytesMut,
    ) -> Result<postgres::types::IsNull, Box<dyn std::error::Error + Sync + Send>> {
        use postgres::types::Type;
        match *self {
            Value::Null => Ok(postgres::types::IsNull::Yes),
            Value::Int(i) if *ty == Type::INT4 => i32::try_from(i)?.to_sql(ty, out),
            Value::Int(i) if *ty == Type::INT2 => i16::try_from(i)?.to_sql(ty, out),
            Value::Int(i) if *ty == Type::BOOL => (i != 0).to_sql(ty, out),
            Value::Int(i) => i.to_sql(ty, out),
            Value::Text(s) => s.to_sql(ty, out),
            Value::Blob(b) => b.to_sql(ty, out),
        }
    }

    fn accepts(_: &postgres::types::Type) -> bool {
        true
    }

    postgres::types::to_sql_checked!();
}

/// What can be read from a column.
pub trait FromValue: Sized {
    fn from_sqlite(v: rusqlite::types::ValueRef<'_>) -> Result<Option<Self>, String>;
    fn from_pg(row: &postgres::Row, i: usize) -> Result<Option<Self>, postgres::Error>;
}

impl FromValue for i64 {
    fn from_sqlite(v: rusqlite::types::ValueRef<'_>) -> Result<Option<i64>, String> {
        match v {
            rusqlite::types::ValueRef::Null => Ok(None),
            rusqlite::types::ValueRef::Integer(i) => Ok(Some(i)),
            other => Err(format!("expected an integer, found {:?}", other.data_type())),
        }
    }
    fn from_pg(row: &postgres::Row, i: usize) -> Result<Option<i64>, postgres::Error> {
        use postgres::types::Type;
        let ty = row.columns()[i].type_();
        if *ty == Type::INT4 {
            Ok(row.try_get::<_, Option<i32>>(i)?.map(i64::from))
        } else if *ty == Type::INT2 {
            Ok(row.try_get::<_, Option<i16>>(i)?.map(i64::from))
        } else if *ty == Type::BOOL {
            Ok(row.try_get::<_, Option<bool>>(i)?.map(i64::from))
        } else {
            row.try_get(i)
        }
    }
}

impl FromValue for bool {
    fn from_sqlite(v: rusqlite::types::ValueRef<'_>) -> Result<Option<bool>, String> {
        Ok(i64::from_sqlite(v)?.map(|i| i != 0))
    }
    fn from_pg(row: &postgres::Row, i: usize) -> Result<Option<bool>, postgres::Error> {
        Ok(i64::from_pg(row, i)?.map(|i| i != 0))
    }
}

impl FromValue for String {
    fn from_sqlite(v: rusqlite::types::ValueRef<'_>) -> Result<Option<String>, String> {
        match v {
            rusqlite::types::ValueRef::Null => Ok(None),
            rusqlite::types::ValueRef::Text(t) => String::from_utf8(t.to_vec()).map(Some).map_err(|e| e.to_string()),
            other => Err(format!("expected text, found {:?}", other.data_type())),
        }
    }
    fn from_pg(row: &postgres::Row, i: usize) -> Result<Option<String>, postgres::Error> {
        row.try_get(i)
    }
}

impl FromValue for Vec<u8> {
    fn from_sqlite(v: rusqlite::types::ValueRef<'_>) -> Result<Option<Vec<u8>>, String> {
        match v {
            rusqlite::types::ValueRef::Null => Ok(None),
            rusqlite::types::ValueRef::Blob(b) => Ok(Some(b.to_vec())),
            other => Err(format!("expected a blob, found {:?}", other.data_type())),
        }
    }
    fn from_pg(row: &postgres::Row, i: usize) -> Result<Option<Vec<u8>>, postgres::Error> {
        row.try_get(i)
    }
}

/// One row of an answer.
pub enum Row<'r> {
    Sqlite(&'r rusqlite::Row<'r>),
    Pg(&'r postgres::Row),
}

/// A column that may be NULL reads as `Option<T>`; one that may not, as `T`.
pub trait Column: Sized {
    fn read(row: &Row<'_>, i: usize) -> Result<Self, Error>;
}

fn read_opt<T: FromValue>(row: &Row<'_>, i: usize) -> Result<Option<T>, Error> {
    match row {
        Row::Sqlite(r) => {
            let v = r.get_ref(i).map_err(|e| Error::internal(format!("sqlite column {i}: {e}")))?;
            T::from_sqlite(v).map_err(|e| Error::internal(format!("sqlite column {i}: {e}")))
        }
        Row::Pg(r) => T::from_pg(r, i).map_err(|e| Error::internal(format!("postgres column {i}: {e}"))),
    }
}

impl<T: FromValue> Column for Option<T> {
    fn read(row: &Row<'_>, i: usize) -> Result<Option<T>, Error> {
        read_opt(row, i)
    }
}

macro_rules! not_null {
    ($($t:ty),*) => {$(
        impl Column for $t {
            fn read(row: &Row<'_>, i: usize) -> Result<$t, Error> {
                read_opt(row, i)?.ok_or_else(|| Error::internal(format!("column {i} is NULL")))
            }
        }
    )*};
}
not_null!(i64, bool, String, Vec<u8>);

impl Row<'_> {
    pub fn get<T: Column>(&self, i: usize) -> Result<T, Error> {
        T::read(self, i)
    }
}

/// Why a PostgreSQL statement failed, when it matters to the one who runs the transaction.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    None,
    /// A serialization failure or a deadlock: the transaction may be run again.
    Retry,
    /// The connection is gone (the server restarted, a failover): the transaction did not commit.
    Lost,
}

/// A pooled PostgreSQL connection with its prepared statements.
pub struct PgConn {
    /// Dropped by hand (see `Drop`).
    client: std::mem::ManuallyDrop<postgres::Client>,
    statements: HashMap<String, postgres::Statement>,
    pub(super) fault: Cell<Fault>,
}

impl Drop for PgConn {
    /// The client says goodbye to the server through a runtime of its own, which must not start on
    /// an async executor's thread: there, it is dropped on a thread of its own.
    fn drop(&mut self) {
        // SAFETY: the client is taken once, here, and never used again.
        let client = unsafe { std::mem::ManuallyDrop::take(&mut self.client) };
        if super::on_executor() {
            let _ = std::thread::Builder::new().name("postgres-close".into()).spawn(move || drop(client));
        }
    }
}

impl PgConn {
    pub(super) fn new(client: postgres::Client) -> PgConn {
        PgConn {
            client: std::mem::ManuallyDrop::new(client),
            statements: HashMap::new(),
            fault: Cell::new(Fault::None),
        }
    }

    pub(super) fn client(&mut self) -> &mut postgres::Client {
        &mut self.client
    }

    pub(super) fn is_closed(&self) -> bool {
        self.client.is_closed()
    }

    /// Turns a driver error into the store's, remembering whether it can be retried.
    pub(super) fn error(&self, e: postgres::Error) -> Error {
        use postgres::error::SqlState;
        let fault = match e.code() {
            Some(c) if *c == SqlState::T_R_SERIALIZATION_FAILURE || *c == SqlState::T_R_DEADLOCK_DETECTED => {
                Fault::Retry
            }
            // The server is shutting down or restarting, or refuses connections while it recovers.
            Some(c)
                if *c == SqlState::ADMIN_SHUTDOWN
                    || *c == SqlState::CRASH_SHUTDOWN
                    || *c == SqlState::CANNOT_CONNECT_NOW
                    || *c == SqlState::READ_ONLY_SQL_TRANSACTION =>
            {
                Fault::Lost
            }
            None if self.is_closed() || e.is_closed() => Fault::Lost,
            _ => Fault::None,
        };
        // A later error of the same transaction ("transaction is aborted") does not hide the first.
        if self.fault.get() == Fault::None {
            self.fault.set(fault);
        }
        match fault {
            Fault::None => {
                Error::internal(format!("postgres: {e}: {}", e.as_db_error().map(|d| d.message()).unwrap_or("")))
            }
            Fault::Retry => Error::Busy,
            Fault::Lost => {
                log::warn!("postgres: connection lost: {e}");
                Error::Unavailable
            }
        }
    }

    fn statement(&mut self, sql: &str) -> Result<postgres::Statement, Error> {
        if let Some(st) = self.statements.get(sql) {
            return Ok(st.clone());
        }
        let st = self.client().prepare(&placeholders(sql)).map_err(|e| self.error(e))?;
        self.statements.insert(sql.to_string(), st.clone());
        Ok(st)
    }

    fn query(&mut self, sql: &str, args: &[&dyn ToValue]) -> Result<Vec<postgres::Row>, Error> {
        self.run(sql, args, |client, st, params| client.query(st, params))
    }

    fn execute(&mut self, sql: &str, args: &[&dyn ToValue]) -> Result<u64, Error> {
        self.run(sql, args, |client, st, params| client.execute(st, params))
    }

    /// Runs the prepared statement of `sql` with `args` through `call` (query or execute).
    fn run<R>(
        &mut self,
        sql: &str,
        args: &[&dyn ToValue],
        call: impl FnOnce(
            &mut postgres::Client,
            &postgres::Statement,
            &[&(dyn postgres::types::ToSql + Sync)],
        ) -> Result<R, postgres::Error>,
    ) -> Result<R, Error> {
        let st = self.statement(sql)?;
        let values: Vec<Value<'_>> = args.iter().map(|a| a.to_value()).collect();
        let params: Vec<&(dyn postgres::types::ToSql + Sync)> =
            values.iter().map(|v| v as &(dyn postgres::types::ToSql + Sync)).collect();
        call(self.client(), &st, &params).map_err(|e| self.error(e))
    }

    pub(super) fn batch(&mut self, sql: &str) -> Result<(), Error> {
        self.client().batch_execute(sql).map_err(|e| self.error(e))
    }
}

/// SQLite's `?N` placeholders as PostgreSQL's `$N`; a bare `?` takes the next number.
pub fn placeholders(sql: &str) -> String {
    let mut out = String::with_capacity(sql.len() + 8);
    let mut next = 1;
    let mut chars = sql.chars().peekable();
    let mut quoted = false;
    while let Some(c) = chars.next() {
        if c == '\'' {
            quoted = !quoted;
        }
        if c != '?' || quoted {
            out.push(c);
            continue;
        }
        let mut digits = String::new();
        while let Some(d) = chars.peek().filter(|d| d.is_ascii_digit()) {
            digits.push(*d);
            chars.next();
        }
        if digits.is_empty() {
            digits = next.to_string();
        }
        next = digits.parse::<usize>().unwrap_or(next) + 1;
        out.push('$');
        out.push_str(&digits);
    }
    out
}

/// A connection of either backend, inside a transaction or not, as the store's functions see it.
pub enum Db<'a> {
    Sqlite(&'a rusqlite::Connection),
    Pg(RefCell<&'a mut PgConn>),
}

fn sqlite_err(e: rusqlite::Error) -> Error {
    if let rusqlite::Error::SqliteFailure(f, _) = &e {
        if matches!(f.code, rusqlite::ErrorCode::DatabaseBusy | rusqlite::ErrorCode::DatabaseLocked) {
            log::warn!("sqlite: {e}");
            return Error::Busy;
        }
    }
    Error::internal(format!("sqlite: {e}"))
}

impl Db<'_> {
    pub fn is_postgres(&self) -> bool {
        matches!(self, Db::Pg(_))
    }

    /// Runs a statement; answers how many rows it changed.
    pub fn execute(&self, sql: &str, args: &[&dyn ToValue]) -> Result<usize, Error> {
        match self {
            Db::Sqlite(c) => {
                let values: Vec<Value<'_>> = args.iter().map(|a| a.to_value()).collect();
                c.prepare_cached(sql)
                    .and_then(|mut st| st.execute(rusqlite::params_from_iter(values.iter())))
                    .map_err(sqlite_err)
            }
            Db::Pg(c) => c.borrow_mut().execute(sql, args).map(|n| n as usize),
        }
    }

    /// Every row of a query, each read by `f`.
    pub fn query_all<T>(
        &self,
        sql: &str,
        args: &[&dyn ToValue],
        f: impl FnMut(&Row<'_>) -> Result<T, Error>,
    ) -> Result<Vec<T>, Error> {
        self.rows(sql, args, usize::MAX, f)
    }

    /// The first row of a query, if any, read by `f`.
    pub fn query_opt<T>(
        &self,
        sql: &str,
        args: &[&dyn ToValue],
        f: impl FnMut(&Row<'_>) -> Result<T, Error>,
    ) -> Result<Option<T>, Error> {
        Ok(self.rows(sql, args, 1, f)?.pop())
    }

    /// At most `limit` rows of a query, each read by `f`.
    fn rows<T>(
        &self,
        sql: &str,
        args: &[&dyn ToValue],
        limit: usize,
        mut f: impl FnMut(&Row<'_>) -> Result<T, Error>,
    ) -> Result<Vec<T>, Error> {
        match self {
            Db::Sqlite(c) => {
                let values: Vec<Value<'_>> = args.iter().map(|a| a.to_value()).collect();
                let mut st = c.prepare_cached(sql).map_err(sqlite_err)?;
                let mut rows = st.query(rusqlite::params_from_iter(values.iter())).map_err(sqlite_err)?;
                let mut out = Vec::new();
                while out.len() < limit {
                    let Some(r) = rows.next().map_err(sqlite_err)? else { break };
                    out.push(f(&Row::Sqlite(r))?);
                }
                Ok(out)
            }
            Db::Pg(c) => {
                let rows = c.borrow_mut().query(sql, args)?;
                rows.iter().take(limit).map(|r| f(&Row::Pg(r))).collect()
            }
        }
    }

    /// The one value of a query that always answers a row (`SELECT count(*) ...`).
    pub fn value<T: Column>(&self, sql: &str, args: &[&dyn ToValue]) -> Result<T, Error> {
        self.query_opt(sql, args, |r| r.get(0))?.ok_or_else(|| Error::internal(format!("no row from {sql}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn placeholders_are_numbered_for_postgres() {
        assert_eq!(placeholders("SELECT ?1, ?2 WHERE a = ?1"), "SELECT $1, $2 WHERE a = $1");
        assert_eq!(placeholders("VALUES (?, ?)"), "VALUES ($1, $2)");
        assert_eq!(placeholders("SELECT '?' , ?3"), "SELECT '?' , $3");
    }

    #[test]
    fn values_round_trip_through_sqlite() {
        let conn = rusqlite::Connection::open_in_memory().unwrap();
        let db = Db::Sqlite(&conn);
        db.execute("CREATE TABLE t (i INTEGER, s TEXT, b BLOB, n INTEGER)", args![]).unwrap();
        let none: Option<i64> = None;
        db.execute("INSERT INTO t VALUES (?1, ?2, ?3, ?4)", args![true, "x", [1u8, 2], none]).unwrap();
        let row = db
            .query_opt("SELECT i, s, b, n FROM t", args![], |r| {
                Ok((r.get::<bool>(0)?, r.get::<String>(1)?, r.get::<Vec<u8>>(2)?, r.get::<Option<i64>>(3)?))
            })
            .unwrap();
        assert_eq!(row, Some((true, "x".to_string(), vec![1, 2], None)));
        assert!(db.value::<i64>("SELECT n FROM t", args![]).is_err(), "NULL read as a number is an error");
    }
}
