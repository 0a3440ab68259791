//! Every rate table this process has loaded, by digest: the `cost` processor publishes each
//! table it loads or reloads, and the `ledger` exporter looks a span's table up by the
//! version the `cost` processor wrote on it, so both price with exactly the same rows.

use std::collections::HashMap;
use std::sync::{Arc, OnceLock, RwLock};

use super::RateTable;

/// One published table and its digest ([`RateTable::digest`]).
#[derive(Debug, Clone)]
pub struct Published {
    pub table: Arc<RateTable>,
    pub digest: String,
}

#[derive(Default)]
struct Registry {
    /// By version: the most recently published table carrying that version.
    by_version: HashMap<String, Published>,
    latest: Option<Published>,
}

fn registry() -> &'static RwLock<Registry> {
    static R: OnceLock<RwLock<Registry>> = OnceLock::new();
    R.get_or_init(|| RwLock::new(Registry::default()))
}

/// Makes `table` findable by its version (replacing an earlier table of the same version,
/// whose rows stay readable through the `Arc`s already handed out).
pub fn publish(table: Arc<RateTable>) -> Published {
    let p = Published {
        digest: table.digest(),
        table,
    };
    let mut g = match registry().write() {
        Ok(g) => g,
        Err(e) => e.into_inner(),
    };
    g.by_version.insert(p.table.version.clone(), p.clone());
    g.latest = Some(p.clone());
    p
}

/// The table published under `version`.
pub fn get(version: &str) -> Option<Published> {
    let g = match registry().read() {
        Ok(g) => g,
        Err(e) => e.into_inner(),
    };
    g.by_version.get(version).cloned()
}

/// The table published last.
pub fn latest() -> Option<Published> {
    let g = match registry().read() {
        Ok(g) => g,
        Err(e) => e.into_inner(),
    };
    g.latest.clone()
}
