//! The store's own error: what the core needs to know of a failure, in none of the backends'
//! types. The core maps it to its own in one place (`From<store::Error> for core::Error`).

/// Every way a store function fails. "Not found" is no error: a look-up answers `Ok(None)`.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The database is taken by other writers for now (SQLite busy or locked; PostgreSQL's
    /// serialization failures and deadlocks once its runs again are spent): try again shortly.
    #[error("the server is busy")]
    Busy,
    /// The database cannot be reached (no pooled connection in time, the connection lost):
    /// the work did not commit; try again shortly. Answered like `Busy`.
    #[error("the server is busy")]
    Unavailable,
    /// A row with this key exists already; names it (`user alice`, `application app`).
    #[error("{0} already exists")]
    Conflict(String),
    /// Anything else (a failed statement, a column of an unexpected type): the backend's detail
    /// was logged once where it happened ([`Error::internal`]), with this correlation id; only
    /// the id goes on.
    #[error("internal error (id {0})")]
    Internal(String),
}

impl Error {
    /// Logs `detail` once with a fresh correlation id, as Kanidm's `sqlite_error` does, and keeps
    /// only the id.
    pub fn internal(detail: impl std::fmt::Display) -> Error {
        Error::Internal(crate::base::incident(detail))
    }
}

/// A SQLite failure where no busy database is expected (the writer's own statements, migrations).
impl From<rusqlite::Error> for Error {
    fn from(e: rusqlite::Error) -> Error {
        Error::internal(format!("sqlite: {e}"))
    }
}
