//! The ledger side of `tollgate ledger allocate`: reading self-hosted events, recording the
//! split as allocated cost rows (`ledger_allocated`), printing it, and the allocated section
//! of `report`.

use std::collections::BTreeMap;

use rust_decimal::Decimal;

use super::allocate::{Event, LineKind, Outcome, PhaseRate, Policy, RULE_VERSION};
use super::error::LedgerError;
use super::opencost::{Allocation, COMPONENTS};
use super::query::{Dim, Range};
use super::schema::{join_cost, Val, NANOS_PER_HOUR};
use super::store::Store;
use super::text::table;
use super::time::{format_day, format_hour, format_instant};
use crate::cost::TokenClass;

fn int(v: &Val) -> i64 {
    match v {
        Val::Int(i) => *i,
        Val::Text(s) => s.parse().unwrap_or(0),
        Val::Null => 0,
    }
}

fn opt(v: &Val) -> Option<String> {
    v.as_text().map(str::to_string)
}

/// `tokens_input, tokens_output, …` in [`TokenClass::ALL`] order.
fn token_columns() -> String {
    TokenClass::ALL
        .iter()
        .map(|c| format!("tokens_{}", c.as_str()))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Events from self-hosted servers (with a pod or controller in their resource) charged in
/// `range`.
pub async fn events(store: &Store, range: Range) -> Result<Vec<Event>, LedgerError> {
    let rows = store
        .select(
            &format!("SELECT tenant_id, k8s_cluster, k8s_namespace, k8s_pod, k8s_controller, charge_time_ns, {} FROM ledger_events WHERE charge_time_ns >= $1 AND charge_time_ns < $2 AND (k8s_pod IS NOT NULL OR k8s_controller IS NOT NULL)", token_columns()),
            vec![Val::Int(range.from), Val::Int(range.to)],
        )
        .await?;
    Ok(rows
        .iter()
        .map(|r| Event {
            tenant: opt(&r[0]),
            cluster: opt(&r[1]),
            namespace: opt(&r[2]),
            pod: opt(&r[3]),
            controller: opt(&r[4]),
            charge_time_ns: int(&r[5]),
            tokens: std::array::from_fn(|i| int(&r[6 + i])),
        })
        .collect())
}

/// `cost` as whole nano-units and atto-units of the same sign (so SQL sums stay exact for
/// negative OpenCost adjustments too); `None` past 18 decimals.
fn nanos_atto(cost: Decimal) -> Option<(i64, i64)> {
    let scaled = cost.checked_mul(Decimal::from(1_000_000_000_000_000_000i64))?;
    if !scaled.fract().is_zero() {
        return None;
    }
    let atto_total = i128::try_from(scaled.trunc()).ok()?;
    let nanos = i64::try_from(atto_total / 1_000_000_000).ok()?;
    Some((nanos, (atto_total % 1_000_000_000) as i64))
}

/// Where the allocation data came from, for the rows and the printout.
pub struct SourceInfo {
    pub name: String,
    pub digest: String,
}

/// Records the split: in one transaction, removes the allocated rows of earlier runs for
/// windows inside `range` and writes this run's. Returns (rows removed, rows written).
pub async fn write(
    store: &Store,
    range: Range,
    allocs: &[Allocation],
    out: &Outcome,
    policy: &Policy,
    source: &SourceInfo,
    now_ns: i64,
) -> Result<(u64, usize), LedgerError> {
    let before = store
        .select(
            "SELECT COUNT(*) FROM ledger_allocated WHERE window_start_ns >= $1 AND window_end_ns <= $2",
            vec![Val::Int(range.from), Val::Int(range.to)],
        )
        .await?;
    let removed = before.first().map_or(0, |r| int(&r[0])) as u64;
    let mut stmts = vec![(
        "DELETE FROM ledger_allocated WHERE window_start_ns >= $1 AND window_end_ns <= $2"
            .to_string(),
        vec![Val::Int(range.from), Val::Int(range.to)],
    )];
    let sql = format!(
        "INSERT INTO ledger_allocated (window_start_ns, window_end_ns, charge_hour, allocation, cluster, namespace, controller_kind, controller, pod, line, tenant_id, events, {}, weight, source_cost, cost, cost_nanos, cost_atto, currency, policy_id, policy_version, policy_digest, rule_version, source, source_digest, recorded_ns) VALUES ({})",
        token_columns(),
        (1..=12 + TokenClass::ALL.len() + 13)
            .map(|i| format!("${i}"))
            .collect::<Vec<_>>()
            .join(", ")
    );
    for l in &out.lines {
        let a = &allocs[l.alloc];
        // An idle share is recorded under the server it was split through.
        let at = l.via.map_or(a, |v| &allocs[v]);
        let (nanos, atto) = nanos_atto(l.cost).ok_or_else(|| {
            LedgerError::Io(format!(
                "allocation {}: cost {} has more than 18 decimals",
                a.name, l.cost
            ))
        })?;
        let allocation = match l.via {
            Some(v) => format!("{} via {}", a.name, allocs[v].name),
            None => a.name.clone(),
        };
        let mut v = vec![
            Val::Int(a.window_start),
            Val::Int(a.window_end),
            Val::Int(a.window_start.div_euclid(NANOS_PER_HOUR)),
            Val::Text(allocation),
            Val::Text(at.cluster.clone()),
            Val::Text(at.namespace.clone()),
            Val::Text(at.controller_kind.clone()),
            Val::Text(at.controller.clone()),
            Val::Text(at.pod.clone()),
            Val::Text(l.kind.as_str().into()),
            Val::Text(l.tenant.clone()),
            Val::Int(l.events),
        ];
        v.extend(
            l.tokens
                .iter()
                .map(|t| Val::Int(i64::try_from(*t).unwrap_or(i64::MAX))),
        );
        v.extend([
            Val::Text(l.weight.normalize().to_string()),
            Val::Text(a.total.to_string()),
            Val::Text(l.cost.to_string()),
            Val::Int(nanos),
            Val::Int(atto),
            Val::Text(policy.currency.clone()),
            Val::Text(policy.id.clone()),
            Val::Text(policy.version.clone()),
            Val::Text(policy.digest.clone()),
            Val::Text(RULE_VERSION.into()),
            Val::Text(source.name.clone()),
            Val::Text(source.digest.clone()),
            Val::Int(now_ns),
        ]);
        stmts.push((sql.clone(), v));
    }
    store.execute_all(stmts).await?;
    Ok((removed, out.lines.len()))
}

fn window(a: &Allocation) -> (String, String) {
    (format_instant(a.window_start), format_instant(a.window_end))
}

/// The printout of `allocate`; the same inputs always print the same bytes.
#[allow(clippy::too_many_arguments)]
pub fn render(
    allocs: &[Allocation],
    out: &Outcome,
    rates: &[PhaseRate],
    policy: &Policy,
    source: &SourceInfo,
    range: Range,
    skipped: &[Allocation],
) -> String {
    let mut s = format!(
        "infrastructure cost allocation {} .. {} (half-open, UTC)\nrule {RULE_VERSION}; policy {} version {} sha256 {}\nsource {} sha256 {}\ncurrency {}\n\n",
        format_instant(range.from),
        format_instant(range.to),
        policy.id,
        policy.version,
        policy.digest,
        source.name,
        source.digest,
        policy.currency,
    );
    let h = |cols: &[&str]| cols.iter().map(|c| c.to_string()).collect::<Vec<_>>();
    let mut body: Vec<(Vec<String>, Vec<String>)> = out
        .lines
        .iter()
        .map(|l| {
            let a = &allocs[l.alloc];
            let at = l.via.map_or(a, |v| &allocs[v]);
            let (ws, we) = window(a);
            let key = vec![
                ws.clone(),
                at.server(),
                a.name.clone(),
                l.kind.as_str().into(),
                l.tenant.clone(),
            ];
            let row = vec![
                ws,
                we,
                at.server(),
                a.name.clone(),
                l.kind.as_str().into(),
                l.tenant.clone(),
                l.events.to_string(),
                l.weight.normalize().to_string(),
                l.cost.to_string(),
            ];
            (key, row)
        })
        .collect();
    body.sort();
    s.push_str(&table(
        &h(&[
            "window_start",
            "window_end",
            "server",
            "allocation",
            "line",
            "tenant",
            "events",
            "weight",
            "cost",
        ]),
        &body.into_iter().map(|(_, r)| r).collect::<Vec<_>>(),
        "infrastructure cost per tenant, model server and window\n",
    ));
    // Per tenant over the range.
    let mut per_tenant: BTreeMap<(String, &str), Decimal> = BTreeMap::new();
    for l in &out.lines {
        let kind = match l.kind {
            LineKind::Tenant | LineKind::IdleShare => "allocated",
            LineKind::Idle => "idle",
            LineKind::Unmatched => "unmatched",
        };
        *per_tenant.entry((l.tenant.clone(), kind)).or_default() += l.cost;
    }
    let rows: Vec<Vec<String>> = per_tenant
        .iter()
        .map(|((t, k), c)| vec![t.clone(), k.to_string(), c.to_string()])
        .collect();
    s.push('\n');
    s.push_str(&table(
        &h(&["tenant", "line", "cost"]),
        &rows,
        "per tenant\n",
    ));
    let rows: Vec<Vec<String>> = rates
        .iter()
        .map(|r| {
            vec![
                r.server.clone(),
                r.phase.to_string(),
                r.tokens.to_string(),
                r.cost.to_string(),
                r.per_million.map_or("-".into(), |d| d.to_string()),
            ]
        })
        .collect();
    s.push('\n');
    s.push_str(&table(
        &h(&["server", "phase", "tokens", "cost", "cost_per_million_tokens"]),
        &rows,
        "cost per million tokens per model server and phase (input: input, cache_read, cache_write; output: output, reasoning)\n",
    ));
    let mut rows: Vec<Vec<String>> = out
        .unmatched_allocations
        .iter()
        .map(|u| {
            let a = &allocs[u.alloc];
            let (ws, we) = window(a);
            let components: Vec<String> = COMPONENTS
                .iter()
                .filter_map(|(n, c, adj)| a.component(c, *adj).map(|v| format!("{n}={v}")))
                .collect();
            vec![
                ws,
                we,
                a.name.clone(),
                u.reason.to_string(),
                a.total.to_string(),
                components.join(" "),
            ]
        })
        .collect();
    rows.sort();
    s.push('\n');
    s.push_str(&table(
        &h(&[
            "window_start",
            "window_end",
            "allocation",
            "reason",
            "cost",
            "components",
        ]),
        &rows,
        "allocations without matching events\n",
    ));
    let rows: Vec<Vec<String>> = out
        .unmatched_events
        .iter()
        .map(|u| {
            vec![
                u.cluster.clone(),
                u.namespace.clone(),
                u.pod.clone(),
                u.controller.clone(),
                u.tenant.clone(),
                u.events.to_string(),
                u.tokens.iter().sum::<i128>().to_string(),
                format_instant(u.first_ns),
                format_instant(u.last_ns),
            ]
        })
        .collect();
    s.push('\n');
    s.push_str(&table(
        &h(&[
            "cluster",
            "namespace",
            "pod",
            "controller",
            "tenant",
            "events",
            "tokens",
            "first",
            "last",
        ]),
        &rows,
        "events without a matching allocation\n",
    ));
    let derived: Vec<&str> = allocs
        .iter()
        .filter(|a| a.total_derived)
        .map(|a| a.name.as_str())
        .collect::<std::collections::BTreeSet<_>>()
        .into_iter()
        .collect();
    if !derived.is_empty() {
        s.push_str(&format!(
            "\ntotalCost was null for {}: used the sum of its non-null components\n",
            derived.join(", ")
        ));
    }
    if !skipped.is_empty() {
        let cost: Decimal = skipped.iter().map(|a| a.total).sum();
        s.push_str(&format!(
            "\n{} allocations with windows not inside --from/--to were left out (cost {cost})\n",
            skipped.len()
        ));
    }
    s.push_str(&format!(
        "\ncheck: allocated {} + idle {} + unmatched {} = {} = OpenCost total {} (every allocation's rows sum to its cost)\n",
        out.allocated,
        out.idle,
        out.unmatched,
        out.allocated + out.idle + out.unmatched,
        out.source_total
    ));
    s
}

/// One line of the allocated section of `report`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AllocatedLine {
    /// The value of each `--by` dimension (tenant = the allocated tenant or `__idle__` /
    /// `__unmatched__`; provider = `opencost`; model = the model server; workflow and agent
    /// are empty).
    pub keys: Vec<String>,
    pub currency: String,
    pub cost: Decimal,
}

/// The model server of an allocated row, in SQL (the `model` of `report` and `reconcile`):
/// `cluster/namespace/controller`, else `cluster/namespace/pod`, else the allocation's name.
/// An idle share is recorded under the server it went through, so it counts there.
pub const SERVER_SQL: &str = "CASE WHEN controller <> '' THEN cluster || '/' || namespace || '/' || controller WHEN pod <> '' THEN cluster || '/' || namespace || '/' || pod ELSE allocation END";

/// The allocated rows whose window starts in `range`, grouped like `report`.
pub async fn report(
    store: &Store,
    range: Range,
    by: &[Dim],
) -> Result<Vec<AllocatedLine>, LedgerError> {
    // Constant dimensions are filled in here (PostgreSQL refuses a constant in GROUP BY).
    let sql_of = |d: &Dim| match d {
        Dim::Tenant => Some("tenant_id"),
        Dim::Workflow | Dim::Agent | Dim::Provider => None,
        Dim::Model => Some(SERVER_SQL),
        Dim::Day => Some("charge_hour / 24"),
        Dim::Hour => Some("charge_hour"),
    };
    let mut group: Vec<&str> = by.iter().filter_map(sql_of).collect();
    group.push("currency");
    let sql = format!(
        "SELECT {g}, CAST(COALESCE(SUM(cost_nanos), 0) AS TEXT), CAST(COALESCE(SUM(cost_atto), 0) AS TEXT) FROM ledger_allocated WHERE window_start_ns >= $1 AND window_start_ns < $2 GROUP BY {g}",
        g = group.join(", ")
    );
    let rows = store
        .select(&sql, vec![Val::Int(range.from), Val::Int(range.to)])
        .await?;
    let big = |v: &Val| -> i128 {
        match v {
            Val::Int(i) => i128::from(*i),
            Val::Text(s) => s.parse().unwrap_or(0),
            Val::Null => 0,
        }
    };
    let text = |v: &Val| match v {
        Val::Text(s) => s.clone(),
        Val::Int(i) => i.to_string(),
        Val::Null => String::new(),
    };
    let n = group.len() - 1;
    let mut out: Vec<AllocatedLine> = rows
        .iter()
        .map(|r| {
            let mut col = 0;
            let keys = by
                .iter()
                .map(|d| {
                    if sql_of(d).is_none() {
                        return if *d == Dim::Provider {
                            "opencost".to_string()
                        } else {
                            String::new()
                        };
                    }
                    let v = &r[col];
                    col += 1;
                    match d {
                        Dim::Day => format_day(big(v) as i64 * 24),
                        Dim::Hour => format_hour(big(v) as i64),
                        _ => text(v),
                    }
                })
                .collect();
            AllocatedLine {
                keys,
                currency: text(&r[n]),
                cost: join_cost(big(&r[n + 1]), big(&r[n + 2])),
            }
        })
        .collect();
    out.sort_by(|a, b| (&a.keys, &a.currency).cmp(&(&b.keys, &b.currency)));
    Ok(out)
}

/// The allocated rows' own check, for `verify`: per source allocation (window and OpenCost
/// name), the rows sum to the recorded source cost, and every row's integer split matches its
/// text. Returns one line per disagreement.
pub async fn check(store: &Store, range: Range) -> Result<(usize, Vec<String>), LedgerError> {
    let rows = store
        .select(
            "SELECT window_start_ns, allocation, line, tenant_id, source_cost, cost, cost_nanos, cost_atto FROM ledger_allocated WHERE window_start_ns >= $1 AND window_start_ns < $2",
            vec![Val::Int(range.from), Val::Int(range.to)],
        )
        .await?;
    let dec = |v: &Val, what: &str| -> Result<Decimal, String> {
        let s = v.as_text().unwrap_or_default();
        s.parse::<Decimal>()
            .map_err(|e| format!("{what} {s:?} is not a decimal: {e}"))
    };
    let mut problems = Vec::new();
    let mut per: BTreeMap<(i64, String), (Option<Decimal>, Decimal)> = BTreeMap::new();
    for r in &rows {
        let allocation = r[1].as_text().unwrap_or_default();
        let source = allocation.split(" via ").next().unwrap_or(allocation);
        let at = format!(
            "allocated {} {} {} {}",
            format_instant(int(&r[0])),
            allocation,
            r[2].as_text().unwrap_or_default(),
            r[3].as_text().unwrap_or_default()
        );
        let (source_cost, cost) = match (dec(&r[4], "source_cost"), dec(&r[5], "cost")) {
            (Ok(s), Ok(c)) => (s, c),
            (Err(e), _) | (_, Err(e)) => {
                problems.push(format!("{at}: {e}"));
                continue;
            }
        };
        if nanos_atto(cost) != Some((int(&r[6]), int(&r[7]))) {
            problems.push(format!(
                "{at}: cost {cost} does not match cost_nanos/cost_atto"
            ));
        }
        let e = per
            .entry((int(&r[0]), source.to_string()))
            .or_insert((Some(source_cost), Decimal::ZERO));
        if e.0 != Some(source_cost) {
            problems.push(format!(
                "{at}: source cost {source_cost} differs from its allocation's other rows"
            ));
        }
        e.1 += cost;
    }
    for ((start, name), (source, sum)) in &per {
        if let Some(s) = source {
            if s != sum {
                problems.push(format!(
                    "allocated {} {name}: rows sum to {sum}, not the allocation's cost {s}",
                    format_instant(*start)
                ));
            }
        }
    }
    Ok((rows.len(), problems))
}
