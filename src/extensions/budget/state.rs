//! The budget extension's state, shared by the refresh task, the HTTP API and the metrics:
//! the latest [`Snapshot`] of spend per budget and the loaded definitions.

use std::sync::{Arc, RwLock};
use std::time::Instant;

use super::defs::Budgets;
use super::engine::{self, BudgetFigures, Totals};
use crate::auth::ClientPolicy;

/// What every answer is computed from.
pub struct Snapshot {
    pub taken_ns: i64,
    pub taken: Instant,
    pub high_water: Option<(i64, i64)>,
    pub budgets: Arc<Budgets>,
    pub totals: Totals,
    pub statuses: Vec<BudgetFigures>,
}

impl Snapshot {
    /// A tenant's budgets: its listed ones and, without a tenant-wide one, the default.
    pub fn for_tenant(&self, tenant: &str) -> Vec<BudgetFigures> {
        let mut out: Vec<BudgetFigures> = self
            .statuses
            .iter()
            .filter(|s| s.tenant == tenant)
            .cloned()
            .collect();
        if !out.iter().any(|s| s.workflow.is_none()) {
            if let Some(s) =
                engine::default_status(&self.budgets, tenant, &self.totals, self.taken_ns)
            {
                out.insert(0, s);
            }
        }
        out
    }
}

/// State shared by the refresh task, the API and the metrics.
pub struct Shared {
    pub id: String,
    pub snapshot: RwLock<Option<Arc<Snapshot>>>,
    pub budgets: RwLock<Arc<Budgets>>,
    pub policy: Arc<ClientPolicy>,
    pub max_series: usize,
}

impl Shared {
    pub fn snapshot(&self) -> Option<Arc<Snapshot>> {
        match self.snapshot.read() {
            Ok(g) => g.clone(),
            Err(p) => p.into_inner().clone(),
        }
    }
    pub fn budgets(&self) -> Arc<Budgets> {
        match self.budgets.read() {
            Ok(g) => g.clone(),
            Err(p) => p.into_inner().clone(),
        }
    }
}
