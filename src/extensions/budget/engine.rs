//! Spend per budget, read from the ledger only.
//!
//! The ledger's rows are summed by (tenant, workflow, currency, charge hour). Events
//! ingested more than `settle` before the ledger's high-water mark (its newest ingest time)
//! are *settled*: they are folded once into a base kept in memory, and each refresh only
//! reads the events ingested since the last fold (an index on `ingest_time_ns`). Everything
//! newer is re-read on every refresh. A budget's spent is the exact sum of the hours of its
//! period, so it equals a full recount of the ledger; a full recount also runs every
//! `recount_interval` and replaces the base (any difference, which only an event written
//! with an ingest time more than `settle` in the past could cause, is logged and counted).
//!
//! Nothing here is a reservation or a counter: dropping all of it and recounting gives the
//! same figures, which is what a restart does.

use std::collections::BTreeMap;

use rust_decimal::Decimal;

use crate::ledger::budget::{self, Sums};
use crate::ledger::schema::{join_cost, NANOS_PER_HOUR};
use crate::ledger::{LedgerError, Store};

use super::defs::{BudgetDef, Budgets, Period};

/// Spend by (tenant, currency) → (workflow, charge hour).
pub type Totals = BTreeMap<(String, String), BTreeMap<(String, i64), Sums>>;

fn add(t: &mut Totals, g: &budget::Group) {
    t.entry((g.tenant.clone(), g.currency.clone()))
        .or_default()
        .entry((g.workflow.clone(), g.hour))
        .or_default()
        .add(&g.sums);
}

/// The incremental reader.
pub struct Engine {
    store: Store,
    settle_ns: i64,
    base: Totals,
    /// Events ingested before this are in `base`; `None`: nothing folded yet.
    folded_to: Option<i64>,
    /// The first charge hour `base` holds.
    base_min_hour: i64,
}

/// One refresh's result.
#[derive(Debug, Clone, Default)]
pub struct Read {
    pub totals: Totals,
    /// (newest ingest time, that event's charge time), ns.
    pub high_water: Option<(i64, i64)>,
    /// (tenant, currency) pairs whose settled spend a full recount corrected.
    pub corrected: Vec<(String, String)>,
}

impl Engine {
    pub fn new(store: Store, settle: std::time::Duration) -> Self {
        Engine {
            store,
            settle_ns: i64::try_from(settle.as_nanos()).unwrap_or(i64::MAX),
            base: Totals::new(),
            folded_to: None,
            base_min_hour: i64::MIN,
        }
    }

    pub fn store(&self) -> &Store {
        &self.store
    }

    /// Reads the spend of every charge hour at or after `min_hour`; `recount`: also count
    /// everything again from scratch and adopt that.
    pub async fn refresh(&mut self, min_hour: i64, recount: bool) -> Result<Read, LedgerError> {
        if min_hour < self.base_min_hour {
            // A budget now looks further back than the base holds: start over.
            self.folded_to = None;
        }
        if min_hour > self.base_min_hour && self.base_min_hour != i64::MIN {
            for hours in self.base.values_mut() {
                hours.retain(|(_, h), _| *h >= min_hour);
            }
            self.base.retain(|_, hours| !hours.is_empty());
        }
        self.base_min_hour = min_hour;
        let high_water = budget::high_water(&self.store).await?;
        let mut cut = high_water.map_or(i64::MIN, |(ingest, _)| {
            ingest.saturating_sub(self.settle_ns)
        });
        if let Some(f) = self.folded_to {
            cut = cut.max(f);
        }
        if self.folded_to.is_none() {
            self.base.clear();
        }
        let groups = budget::spend_groups(&self.store, self.folded_to, cut, min_hour).await?;
        let mut tail = Totals::new();
        for g in &groups {
            if g.tail {
                add(&mut tail, g);
            } else {
                add(&mut self.base, g);
            }
        }
        self.folded_to = Some(cut);
        let mut corrected = Vec::new();
        if recount {
            let groups = budget::spend_groups(&self.store, None, cut, min_hour).await?;
            let mut full = Totals::new();
            tail.clear();
            for g in &groups {
                if g.tail {
                    add(&mut tail, g);
                } else {
                    add(&mut full, g);
                }
            }
            for (k, v) in &full {
                if self.base.get(k) != Some(v) {
                    corrected.push(k.clone());
                }
            }
            for k in self.base.keys() {
                if !full.contains_key(k) {
                    corrected.push(k.clone());
                }
            }
            self.base = full;
        }
        let mut totals = self.base.clone();
        for (k, hours) in tail {
            let e = totals.entry(k).or_default();
            for (h, s) in hours {
                e.entry(h).or_default().add(&s);
            }
        }
        Ok(Read {
            totals,
            high_water,
            corrected,
        })
    }
}

/// Where a budget came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    Listed,
    Default,
}

/// One budget's figures at a snapshot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BudgetFigures {
    pub budget: String,
    pub tenant: String,
    pub workflow: Option<String>,
    pub source: Source,
    pub period: &'static str,
    pub start_ns: i64,
    pub end_ns: i64,
    pub currency: String,
    pub limit: Decimal,
    pub spent: Decimal,
    pub events: i64,
    /// The newest charge time counted.
    pub as_of_ns: Option<i64>,
    pub thresholds: Vec<u32>,
}

impl BudgetFigures {
    pub fn remaining(&self) -> Decimal {
        self.limit - self.spent
    }
    /// spent / limit (the limit is never 0), exactly where it fits a decimal.
    pub fn ratio(&self) -> Option<Decimal> {
        self.spent.checked_div(self.limit)
    }
    /// spent / limit, rounded to 6 decimals (for display; thresholds compare exactly).
    pub fn utilization(&self) -> Decimal {
        self.ratio()
            .map(|r| r.round_dp(6).normalize())
            .unwrap_or(Decimal::MAX)
    }
    /// The thresholds reached: spent × 100 ≥ limit × t, exactly (a product too large for a
    /// decimal counts as reached).
    pub fn crossed(&self) -> Vec<u32> {
        self.thresholds
            .iter()
            .copied()
            .filter(|t| {
                match (
                    self.spent.checked_mul(Decimal::from(100)),
                    self.limit.checked_mul(Decimal::from(*t)),
                ) {
                    (Some(a), Some(b)) => a >= b,
                    (None, _) => true,
                    (Some(_), None) => false,
                }
            })
            .collect()
    }
    /// Whether a call costing `estimate` fits: spent + estimate ≤ limit (a sum too large for
    /// a decimal does not fit).
    pub fn allows(&self, estimate: Decimal) -> bool {
        self.spent
            .checked_add(estimate)
            .is_some_and(|total| total <= self.limit)
    }
}

/// The hours `[start, end)` of a period, as charge hours.
fn hours(start_ns: i64, end_ns: i64) -> (i64, i64) {
    (
        start_ns.div_euclid(NANOS_PER_HOUR),
        end_ns.div_euclid(NANOS_PER_HOUR),
    )
}

/// The first charge hour any budget's current period needs.
pub fn min_hour(b: &Budgets, now_ns: i64) -> i64 {
    b.listed
        .iter()
        .chain(b.default.iter())
        .map(|d| hours(d.period.bounds(now_ns).0, 0).0)
        .min()
        .unwrap_or(hours(Period::Day.bounds(now_ns).0, 0).0)
}

fn status_of(
    def: &BudgetDef,
    tenant: &str,
    source: Source,
    t: &Totals,
    now_ns: i64,
) -> BudgetFigures {
    let (start_ns, end_ns) = def.period.bounds(now_ns);
    let (h0, h1) = hours(start_ns, end_ns);
    let mut sums = Sums::default();
    if let Some(hs) = t.get(&(tenant.to_string(), def.currency.clone())) {
        for ((wf, h), s) in hs {
            if *h >= h0 && *h < h1 && def.workflow.as_ref().is_none_or(|w| w == wf) {
                sums.add(s);
            }
        }
    }
    BudgetFigures {
        budget: BudgetDef::name_for(tenant, def.workflow.as_deref()),
        tenant: tenant.to_string(),
        workflow: def.workflow.clone(),
        source,
        period: def.period.kind(),
        start_ns,
        end_ns,
        currency: def.currency.clone(),
        limit: def.limit,
        spent: join_cost(sums.nanos, sums.atto),
        events: sums.events,
        as_of_ns: (sums.events > 0).then_some(sums.newest_charge_ns),
        thresholds: def.thresholds.clone(),
    }
}

/// The default budget applied to `tenant`, for a tenant the snapshot has no figures for.
pub fn default_status(b: &Budgets, tenant: &str, t: &Totals, now_ns: i64) -> Option<BudgetFigures> {
    let d = b.default.as_ref()?;
    (!b.has_tenant_wide(tenant)).then(|| status_of(d, tenant, Source::Default, t, now_ns))
}

/// Every listed budget, and the default budget for each tenant without a tenant-wide budget
/// that has events in the default's current period; listed first, in file order.
pub fn statuses(b: &Budgets, t: &Totals, now_ns: i64) -> Vec<BudgetFigures> {
    let mut out: Vec<BudgetFigures> = b
        .listed
        .iter()
        .map(|d| {
            let tenant = d.tenant.as_deref().unwrap_or_default();
            status_of(d, tenant, Source::Listed, t, now_ns)
        })
        .collect();
    if let Some(d) = &b.default {
        let (h0, h1) = {
            let (s, e) = d.period.bounds(now_ns);
            hours(s, e)
        };
        let mut seen: Vec<&str> = t
            .iter()
            .filter(|(_, hs)| hs.keys().any(|(_, h)| *h >= h0 && *h < h1))
            .map(|((tenant, _), _)| tenant.as_str())
            .filter(|tenant| !b.has_tenant_wide(tenant))
            .collect();
        seen.dedup();
        for tenant in seen {
            out.push(status_of(d, tenant, Source::Default, t, now_ns));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::str::FromStr;

    fn totals(rows: &[(&str, &str, &str, i64, i128, i128)]) -> Totals {
        let mut t = Totals::new();
        for (tenant, wf, cur, hour, nanos, atto) in rows {
            add(
                &mut t,
                &budget::Group {
                    tenant: tenant.to_string(),
                    workflow: wf.to_string(),
                    currency: cur.to_string(),
                    hour: *hour,
                    tail: false,
                    sums: Sums {
                        nanos: *nanos,
                        atto: *atto,
                        events: 1,
                        newest_charge_ns: hour * NANOS_PER_HOUR + 5,
                    },
                },
            );
        }
        t
    }

    #[test]
    fn sums_by_period_workflow_currency_and_default() {
        let b = Budgets::parse(
            "default: { period: { from: \"1970-01-01T10:00:00Z\", to: \"1970-01-01T12:00:00Z\" }, currency: USD, limit: 1 }\nbudgets:\n  - tenant: acme\n    period: { from: \"1970-01-01T10:00:00Z\", to: \"1970-01-01T12:00:00Z\" }\n    currency: USD\n    limit: \"0.01\"\n  - tenant: acme\n    workflow: support\n    period: { from: \"1970-01-01T11:00:00Z\", to: \"1970-01-01T12:00:00Z\" }\n    currency: USD\n    limit: \"0.002\"\n",
        )
        .unwrap();
        let t = totals(&[
            ("acme", "support", "USD", 10, 1_000_000, 500),
            ("acme", "support", "USD", 11, 2_000_000, 0),
            ("acme", "", "USD", 11, 3_000_000, 0),
            ("acme", "support", "EUR", 11, 9_000_000, 0),
            ("acme", "support", "USD", 12, 9_000_000, 0),
            ("globex", "", "USD", 9, 7_000_000, 0),
            ("initech", "x", "USD", 10, 4, 0),
        ]);
        let s = statuses(&b, &t, 11 * NANOS_PER_HOUR);
        let names: Vec<&str> = s.iter().map(|x| x.budget.as_str()).collect();
        assert_eq!(
            names,
            ["acme", "acme/support", "initech"],
            "globex is outside the default's window"
        );
        assert_eq!(s[0].spent, Decimal::from_str("0.0060000000000005").unwrap());
        assert_eq!(s[0].events, 3);
        assert_eq!(s[0].as_of_ns, Some(11 * NANOS_PER_HOUR + 5));
        assert_eq!(s[1].spent, Decimal::from_str("0.002").unwrap());
        assert_eq!(s[1].crossed(), vec![50, 80, 100]);
        assert_eq!(s[0].crossed(), vec![50]);
        assert_eq!(s[2].spent, Decimal::from_str("0.000000004").unwrap());
        assert_eq!(s[2].source, Source::Default);
        // allowed exactly up to the limit.
        let rem = s[0].remaining();
        assert!(s[0].allows(rem));
        assert!(!s[0].allows(rem + Decimal::from_str("0.000000000000000001").unwrap()));
        let g = default_status(&b, "nobody", &t, 11 * NANOS_PER_HOUR).unwrap();
        assert_eq!(
            (g.spent, g.limit, g.as_of_ns),
            (Decimal::ZERO, Decimal::ONE, None)
        );
        assert!(default_status(&b, "acme", &t, 0).is_none());
        // An absurd estimate is refused, not a panic.
        assert!(!s[0].allows(Decimal::MAX));
        assert!(!s[0].allows(Decimal::MAX - Decimal::ONE));
    }
}

#[cfg(test)]
mod store_tests {
    use super::*;
    use crate::ledger::schema::Val;
    use crate::ledger::store::Target;
    use std::str::FromStr;

    const S: i64 = 1_000_000_000;

    /// (charge time, ingest time, cost nanos, cost atto) of one test event.
    type At = (i64, i64, i64, i64);

    async fn insert(store: &Store, id: &str, tenant: &str, wf: &str, at: At) {
        let (charge_ns, ingest_ns, nanos, atto) = at;
        store
            .execute(
                "INSERT INTO ledger_events (trace_id, span_id, start_time_ns, charge_time_ns, charge_hour, tenant_id, workflow_id, envelope_status, cost_status, currency, cost_nanos, cost_atto, gateway_instance, ingest_time_ns, source_digest) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, 'valid', 'priced', 'USD', $8, $9, 'gw', $10, 'x')",
                vec![
                    Val::Text(id.into()),
                    Val::Text(id.into()),
                    Val::Int(charge_ns),
                    Val::Int(charge_ns),
                    Val::Int(charge_ns.div_euclid(NANOS_PER_HOUR)),
                    Val::Text(tenant.into()),
                    Val::Text(wf.into()),
                    Val::Int(nanos),
                    Val::Int(atto),
                    Val::Int(ingest_ns),
                ],
            )
            .await
            .unwrap();
    }

    fn spent(t: &Totals, tenant: &str) -> Decimal {
        let mut s = Sums::default();
        for v in t
            .get(&(tenant.to_string(), "USD".to_string()))
            .into_iter()
            .flat_map(|h| h.values())
        {
            s.add(v);
        }
        join_cost(s.nanos, s.atto)
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn incremental_equals_recount_and_recount_corrects_late_rows() {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite:{}", dir.path().join("l.db").display());
        let store = Store::open(&Target::parse(&url, &Default::default()).unwrap())
            .await
            .unwrap();
        let h = 10 * NANOS_PER_HOUR;
        let mut e = Engine::new(store.clone(), std::time::Duration::from_secs(10));
        // Empty ledger: nothing, no high-water mark.
        let r = e.refresh(10, false).await.unwrap();
        assert!(r.totals.is_empty() && r.high_water.is_none());
        insert(&store, "a", "acme", "w", (h + S, h + 100 * S, 1, 0)).await;
        insert(
            &store,
            "b",
            "acme",
            "w",
            (h + 2 * S, h + 200 * S, 0, 999_999_999),
        )
        .await;
        insert(&store, "c", "acme", "w", (h - S, h + 201 * S, 5, 0)).await; // hour 9: before min_hour
        let r = e.refresh(10, false).await.unwrap();
        // 1e-9 + 999999999e-18, by hand.
        assert_eq!(
            spent(&r.totals, "acme"),
            Decimal::from_str("0.000000001999999999").unwrap()
        );
        assert_eq!(r.high_water, Some((h + 201 * S, h - S)));
        // Folded up to 201 s − 10 s: a and b are settled, more rows arrive in the tail.
        insert(&store, "d", "acme", "w", (h + 3 * S, h + 300 * S, 7, 1)).await;
        let r = e.refresh(10, false).await.unwrap();
        assert_eq!(
            spent(&r.totals, "acme"),
            Decimal::from_str("0.000000008999999999").unwrap()
                + Decimal::from_str("0.000000000000000001").unwrap()
        );
        let full = e.refresh(10, true).await.unwrap();
        assert!(full.corrected.is_empty(), "{:?}", full.corrected);
        assert_eq!(full.totals, r.totals);
        // A row written with an ingest time far older than `settle` (a wrong clock): the
        // incremental read cannot see it, the next full recount does and says so.
        insert(&store, "late", "acme", "w", (h + 4 * S, h + 5 * S, 100, 0)).await;
        let r = e.refresh(10, false).await.unwrap();
        assert_eq!(spent(&r.totals, "acme"), spent(&full.totals, "acme"));
        let r = e.refresh(10, true).await.unwrap();
        assert_eq!(r.corrected, vec![("acme".to_string(), "USD".to_string())]);
        assert_eq!(
            spent(&r.totals, "acme"),
            spent(&full.totals, "acme") + Decimal::from_str("0.0000001").unwrap()
        );
        // A budget looking further back: the base is rebuilt from hour 9 on.
        let r = e.refresh(9, false).await.unwrap();
        assert_eq!(
            spent(&r.totals, "acme"),
            spent(&full.totals, "acme") + Decimal::from_str("0.000000105").unwrap()
        );
        // And forward again: hour 9 is dropped.
        let r = e.refresh(10, false).await.unwrap();
        assert_eq!(
            spent(&r.totals, "acme"),
            spent(&full.totals, "acme") + Decimal::from_str("0.0000001").unwrap()
        );
    }
}
