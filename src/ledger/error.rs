//! Why a ledger operation failed, with the database's own message kept.

/// Why a ledger operation failed.
#[derive(Debug, thiserror::Error)]
pub enum LedgerError {
    #[error("ledger url {url:?}: {message}")]
    Url { url: String, message: String },
    #[error("cannot open ledger {target}: {message}")]
    Open { target: String, message: String },
    #[error("ledger {target} has schema version {found}, newer than this binary's {supported}: upgrade tollgate before writing to it")]
    NewerSchema {
        target: String,
        found: i64,
        supported: i64,
    },
    #[error("ledger database error: {0}")]
    Database(String),
    #[error("ledger is shut down")]
    Closed,
    #[error("ledger holds a value it cannot read: {0}")]
    Corrupt(String),
    #[error("{0}")]
    Io(String),
}

impl From<rusqlite::Error> for LedgerError {
    fn from(e: rusqlite::Error) -> Self {
        LedgerError::Database(e.to_string())
    }
}

impl From<tokio_postgres::Error> for LedgerError {
    fn from(e: tokio_postgres::Error) -> Self {
        // The server's own message (constraint, disk full, ...) is the useful part.
        match e.as_db_error() {
            Some(db) => LedgerError::Database(format!("{} ({})", db.message(), db.code().code())),
            None => LedgerError::Database(e.to_string()),
        }
    }
}
