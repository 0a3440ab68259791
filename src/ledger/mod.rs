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
pub mod closed;
pub mod dispute;
pub mod error;
pub mod focus;
pub mod focus_allocated;
pub mod html;
pub mod opencost;
pub mod periods;
pub mod query;
pub mod reconcile;
pub mod render;
pub mod rollup;
pub mod rollup_write;
pub mod row;
pub mod schema;
pub mod store;
pub mod target;
pub mod text;
pub mod time;

pub use error::LedgerError;
pub use row::Row;
pub use store::{Store, WriteOutcome};
