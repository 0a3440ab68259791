//! The chargeback ledger: every billable span recorded once, durably, with the evidence to
//! defend it (the signed token, the rate row and table, the arithmetic).
//!
//! - [`row`]: what one row holds and how it is read off an enriched span;
//! - [`schema`]: the versioned schema, one definition for both backends;
//! - [`store`]: the backends (embedded SQLite, PostgreSQL) behind one [`Store`];
//! - [`periods`]: closed periods, late data as adjustments of the next open period;
//! - [`focus`]: the FOCUS export ([`focus_allocated`]: its split-cost-allocation rows);
//! - [`reconcile`]: reconciliation against a provider's invoice under a versioned policy;
//! - [`rollup`]: the hourly and daily roll-up `report` reads, kept with the events;
//! - [`query`]: reports, completeness, dispute packs and verification over a store;
//! - [`html`]: the self-contained chargeback statement page;
//! - [`opencost`], [`allocate`], [`allocated`]: OpenCost allocation data split over the
//!   tenants a self-hosted model server served (`tollgate ledger allocate`);
//! - [`cli`]: `tollgate ledger …`.
//!
//! The `ledger` exporter (`crate::exporters::ledger`) writes rows; everything here is also
//! usable without a running gateway.

pub mod allocate;
pub mod allocated;
pub mod budget;
pub mod dispute;
pub mod focus;
pub mod focus_allocated;
pub mod html;
pub mod opencost;
pub mod periods;
pub mod query;
pub mod reconcile;
pub mod rollup;
pub mod row;
pub mod schema;
pub mod store;
pub mod target;
pub mod time;

pub use row::Row;
pub use store::{Store, WriteOutcome};

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
