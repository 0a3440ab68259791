//! The two-plane join: OpenCost says what a self-hosted model server's infrastructure cost
//! per window (the allocation plane); the ledger says which tenants it served (the operation
//! plane). Each allocation's cost is split over those tenants by a versioned policy, with
//! exact largest-remainder rounding, so that the split rows of every allocation sum back to
//! its cost exactly. The rule is [`RULE_VERSION`], documented in docs/reconciliation.md.

use std::collections::{BTreeMap, HashMap};
use std::str::FromStr;

use rust_decimal::Decimal;
use sha2::{Digest, Sha256};

use super::opencost::{Allocation, Kind};
use super::row::hex;

/// The version of the join and split rule implemented here.
pub const RULE_VERSION: &str = "tollgate-opencost-join/1";

pub const IDLE: &str = "__idle__";
pub const UNMATCHED: &str = "__unmatched__";
pub const UNATTRIBUTED: &str = "__unattributed__";

/// What an allocation's cost is split by.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Weight {
    /// All tokens: input + output + cache_read + cache_write + reasoning.
    TotalTokens,
    /// Generated tokens: output + reasoning.
    OutputTokens,
    /// Σ weight × tokens per class, in [`crate::cost::TokenClass::ALL`] order.
    Weighted([Decimal; 5]),
}

/// Where idle cost goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IdleRule {
    /// Its own `__idle__` line (the default: idle is never hidden in tenants' figures).
    Keep,
    /// Over the cluster's allocations of the window in proportion to their cost, then with
    /// each allocation's own split.
    ProRata,
}

/// A versioned allocation policy (YAML).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Policy {
    pub id: String,
    pub version: String,
    pub weight: Weight,
    pub idle: IdleRule,
    /// Shares are whole multiples of this unit (the sub-unit residue of an allocation's own
    /// figure, if any, goes to one line; see [`split`]).
    pub unit: Decimal,
    /// The currency OpenCost's figures are in (its API does not say).
    pub currency: String,
    /// SHA-256 of the policy text.
    pub digest: String,
}

const CLASS_NAMES: [&str; 5] = ["input", "output", "cache_read", "cache_write", "reasoning"];

impl Policy {
    /// Parses a policy document; errors name the key.
    pub fn parse(text: &str, path: &str) -> Result<Policy, String> {
        use yaml_rust2::{Yaml, YamlLoader};
        let docs = YamlLoader::load_from_str(text).map_err(|e| format!("{path}: {e}"))?;
        let Some(Yaml::Hash(h)) = docs.into_iter().next() else {
            return Err(format!(
                "{path}: expected a mapping with id, version, weight"
            ));
        };
        let mut map = BTreeMap::new();
        for (k, v) in h {
            let Yaml::String(k) = k else {
                return Err(format!("{path}: keys must be strings"));
            };
            map.insert(k, v);
        }
        let scalar = |key: &str, v: &Yaml| -> Result<String, String> {
            match v {
                Yaml::String(s) => Ok(s.clone()),
                Yaml::Integer(i) => Ok(i.to_string()),
                Yaml::Real(r) => Ok(r.clone()),
                _ => Err(format!("{path}: {key}: expected a scalar")),
            }
        };
        let known = [
            "id", "version", "weight", "weights", "idle", "unit", "currency",
        ];
        if let Some(k) = map.keys().find(|k| !known.contains(&k.as_str())) {
            return Err(format!(
                "{path}: {k}: unknown key (one of {})",
                known.join(", ")
            ));
        }
        let req = |key: &str| -> Result<String, String> {
            let v = map
                .get(key)
                .ok_or_else(|| format!("{path}: {key}: required"))?;
            let s = scalar(key, v)?;
            if s.trim().is_empty() {
                return Err(format!("{path}: {key}: must not be empty"));
            }
            Ok(s)
        };
        let id = req("id")?;
        let version = req("version")?;
        let weights = map.get("weights");
        let weight = match req("weight")?.as_str() {
            "total_tokens" => Weight::TotalTokens,
            "output_tokens" => Weight::OutputTokens,
            "weighted" => {
                let Some(Yaml::Hash(w)) = weights else {
                    return Err(format!(
                        "{path}: weights: required for weight: weighted (a mapping of token class to a decimal factor)"
                    ));
                };
                let mut out = [Decimal::ZERO; 5];
                for (k, v) in w {
                    let name = k.as_str().unwrap_or_default();
                    let Some(i) = CLASS_NAMES.iter().position(|c| *c == name) else {
                        return Err(format!(
                            "{path}: weights.{name}: unknown token class (one of {})",
                            CLASS_NAMES.join(", ")
                        ));
                    };
                    let s = scalar(&format!("weights.{name}"), v)?;
                    let d = Decimal::from_str(s.trim())
                        .map_err(|e| format!("{path}: weights.{name}: {s:?}: {e}"))?;
                    if d.is_sign_negative() {
                        return Err(format!("{path}: weights.{name}: must not be negative"));
                    }
                    out[i] = d;
                }
                if out.iter().all(|d| d.is_zero()) {
                    return Err(format!("{path}: weights: at least one must be above 0"));
                }
                Weight::Weighted(out)
            }
            other => {
                return Err(format!(
                    "{path}: weight: {other:?} is not one of total_tokens, output_tokens, weighted"
                ))
            }
        };
        if weights.is_some() && !matches!(weight, Weight::Weighted(_)) {
            return Err(format!("{path}: weights: only used with weight: weighted"));
        }
        let idle = match map.get("idle").map(|v| scalar("idle", v)).transpose()? {
            None => IdleRule::Keep,
            Some(s) if s == "keep" => IdleRule::Keep,
            Some(s) if s == "pro_rata" => IdleRule::ProRata,
            Some(s) => return Err(format!("{path}: idle: {s:?} is not one of keep, pro_rata")),
        };
        let unit = match map.get("unit").map(|v| scalar("unit", v)).transpose()? {
            None => Decimal::new(1, 5),
            Some(s) => {
                let d =
                    Decimal::from_str(s.trim()).map_err(|e| format!("{path}: unit: {s:?}: {e}"))?;
                let ok = d > Decimal::ZERO && (0..=18).any(|p| d == Decimal::new(1, p));
                if !ok {
                    return Err(format!(
                        "{path}: unit: {s:?} must be a power of ten from 1 down to 0.000000000000000001"
                    ));
                }
                d
            }
        };
        let currency = map
            .get("currency")
            .map(|v| scalar("currency", v))
            .transpose()?
            .unwrap_or_else(|| "USD".into());
        if currency.len() != 3 || !currency.chars().all(|c| c.is_ascii_uppercase()) {
            return Err(format!(
                "{path}: currency: {currency:?} is not an ISO 4217 code such as USD"
            ));
        }
        Ok(Policy {
            id,
            version,
            weight,
            idle,
            unit,
            currency,
            digest: hex(&Sha256::digest(text.as_bytes())),
        })
    }

    /// An event's weight under the policy.
    pub fn weigh(&self, t: &[i64; 5]) -> Decimal {
        let d = |i: usize| Decimal::from(t[i].max(0));
        match &self.weight {
            Weight::TotalTokens => (0..5).map(d).sum(),
            Weight::OutputTokens => d(1) + d(4),
            Weight::Weighted(w) => (0..5).map(|i| w[i] * d(i)).sum(),
        }
    }

    /// The weight of the input (prefill: input, cache_read, cache_write) and output (decode:
    /// output, reasoning) phases of token counts.
    pub fn phases(&self, t: &[i128; 5]) -> (Decimal, Decimal) {
        let d = |i: usize| Decimal::from_i128_with_scale(t[i].max(0), 0);
        let f = |i: usize| match &self.weight {
            Weight::TotalTokens => Decimal::ONE,
            Weight::OutputTokens => {
                if i == 1 || i == 4 {
                    Decimal::ONE
                } else {
                    Decimal::ZERO
                }
            }
            Weight::Weighted(w) => w[i],
        };
        (
            f(0) * d(0) + f(2) * d(2) + f(3) * d(3),
            f(1) * d(1) + f(4) * d(4),
        )
    }
}

/// A self-hosted event as the join reads it from the ledger.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    pub tenant: Option<String>,
    pub cluster: Option<String>,
    pub namespace: Option<String>,
    pub pod: Option<String>,
    pub controller: Option<String>,
    pub charge_time_ns: i64,
    /// Tokens per class ([`crate::cost::TokenClass::ALL`] order), 0 when the row has none.
    pub tokens: [i64; 5],
}

impl Event {
    /// Whether the rule matches this event to `a`: a workload allocation whose window holds
    /// the charge time, with the same cluster and namespace, and the same pod (when OpenCost
    /// names one) or else the same controller.
    pub fn matches(&self, a: &Allocation) -> bool {
        let eq = |x: &Option<String>, y: &str| !y.is_empty() && x.as_deref() == Some(y);
        a.kind == Kind::Workload
            && a.window_start <= self.charge_time_ns
            && self.charge_time_ns < a.window_end
            && eq(&self.cluster, &a.cluster)
            && eq(&self.namespace, &a.namespace)
            && if a.pod.is_empty() {
                eq(&self.controller, &a.controller)
            } else {
                eq(&self.pod, &a.pod)
            }
    }
    fn tenant_key(&self) -> String {
        self.tenant.clone().unwrap_or_else(|| UNATTRIBUTED.into())
    }
}

/// What a line of the split is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum LineKind {
    /// A tenant's share of a workload allocation.
    Tenant,
    /// A tenant's share of idle, distributed pro rata.
    IdleShare,
    /// Idle kept as its own line.
    Idle,
    /// An allocation (or its idle share) no event matched.
    Unmatched,
}

impl LineKind {
    pub fn as_str(self) -> &'static str {
        match self {
            LineKind::Tenant => "tenant",
            LineKind::IdleShare => "idle_share",
            LineKind::Idle => "idle",
            LineKind::Unmatched => "unmatched",
        }
    }
}

/// One line of the split.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Line {
    /// Index into the allocations given to [`allocate`]: the allocation whose cost this is.
    pub alloc: usize,
    /// For an idle share: the workload allocation through whose split it went.
    pub via: Option<usize>,
    pub kind: LineKind,
    /// A tenant, `__unattributed__`, `__idle__` or `__unmatched__`.
    pub tenant: String,
    pub events: i64,
    pub tokens: [i128; 5],
    pub weight: Decimal,
    pub cost: Decimal,
}

/// An allocation no event matched, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnmatchedAllocation {
    pub alloc: usize,
    pub reason: &'static str,
}

/// Self-hosted events no allocation matched, grouped by identity and tenant.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct UnmatchedEvents {
    pub cluster: String,
    pub namespace: String,
    pub pod: String,
    pub controller: String,
    pub tenant: String,
    pub events: i64,
    pub tokens: [i128; 5],
    pub first_ns: i64,
    pub last_ns: i64,
}

/// The result of the join.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    pub lines: Vec<Line>,
    pub unmatched_allocations: Vec<UnmatchedAllocation>,
    pub unmatched_events: Vec<UnmatchedEvents>,
    /// Σ cost of the allocations.
    pub source_total: Decimal,
    /// Σ tenant and idle-share lines.
    pub allocated: Decimal,
    /// Σ idle lines kept.
    pub idle: Decimal,
    /// Σ unmatched lines.
    pub unmatched: Decimal,
}

/// Splits `amount` over `weights` (non-negative, not all zero) in whole multiples of `unit`
/// by largest remainder, exactly: with N = ⌊|amount| / unit⌋, line i gets
/// ⌊N·wᵢ/W⌋ units; the units left over go one each to the lines with the largest remainders
/// (ties: larger weight, then earlier line); the sub-unit residue |amount| − N·unit (non-zero
/// only when the amount itself is not a multiple of the unit) goes to the line with the
/// largest weight (ties: earlier line). The sign of `amount` applies to every share. The
/// shares always sum to `amount` exactly.
pub fn split(amount: Decimal, weights: &[Decimal], unit: Decimal) -> Result<Vec<Decimal>, String> {
    if weights.is_empty() || weights.iter().any(|w| w.is_sign_negative() && !w.is_zero()) {
        return Err("split: weights must be non-negative".into());
    }
    let scale = weights.iter().map(|w| w.scale()).max().unwrap_or(0);
    let ints: Vec<i128> = weights
        .iter()
        .map(|w| {
            let mut w = *w;
            w.rescale(scale);
            w.mantissa()
        })
        .collect();
    let total: i128 = ints.iter().sum();
    if total <= 0 {
        return Err("split: the weights sum to zero".into());
    }
    let negative = amount.is_sign_negative();
    let abs = amount.abs();
    let n_dec = (abs / unit).trunc();
    let n = i128::try_from(n_dec).map_err(|e| format!("split: {amount} / {unit}: {e}"))?;
    let residue = abs - n_dec * unit;
    let overflow = || format!("split: {amount} over weights summing to {total}: too large");
    let mut units = Vec::with_capacity(ints.len());
    let mut rems = Vec::with_capacity(ints.len());
    for w in &ints {
        let p = n.checked_mul(*w).ok_or_else(overflow)?;
        units.push(p / total);
        rems.push(p % total);
    }
    let mut left = n - units.iter().sum::<i128>();
    let mut order: Vec<usize> = (0..ints.len()).collect();
    order.sort_by(|&a, &b| {
        rems[b]
            .cmp(&rems[a])
            .then(ints[b].cmp(&ints[a]))
            .then(a.cmp(&b))
    });
    for &i in &order {
        if left == 0 {
            break;
        }
        units[i] += 1;
        left -= 1;
    }
    let biggest = (0..ints.len())
        .max_by(|&a, &b| ints[a].cmp(&ints[b]).then(b.cmp(&a)))
        .unwrap_or(0);
    let out = units
        .iter()
        .enumerate()
        .map(|(i, u)| {
            let mut v = Decimal::from_i128_with_scale(*u, 0) * unit;
            if i == biggest {
                v += residue;
            }
            if negative {
                -v
            } else {
                v
            }
        })
        .collect();
    Ok(out)
}

#[derive(Default, Clone)]
struct Share {
    events: i64,
    tokens: [i128; 5],
    weight: Decimal,
}

/// Joins events to allocations and splits every allocation's cost under `policy`. Checks
/// that every allocation's lines sum to its cost and that allocated + idle + unmatched is
/// the sum of the allocations' cost; an error says which failed.
pub fn allocate(
    allocs: &[Allocation],
    events: &[Event],
    policy: &Policy,
) -> Result<Outcome, String> {
    // Tenant shares per workload allocation.
    let mut shares: Vec<BTreeMap<String, Share>> = vec![BTreeMap::new(); allocs.len()];
    let mut orphans: BTreeMap<(String, String, String, String, String), UnmatchedEvents> =
        BTreeMap::new();
    // Candidate allocations by join key (pod when OpenCost names one, else controller), so
    // that each event is compared with its own pod's windows only.
    type JoinKey<'a> = (&'a str, &'a str, &'a str, bool);
    let mut index: HashMap<JoinKey<'_>, Vec<usize>> = HashMap::new();
    for (i, a) in allocs.iter().enumerate() {
        let key = if a.pod.is_empty() {
            (
                a.cluster.as_str(),
                a.namespace.as_str(),
                a.controller.as_str(),
                false,
            )
        } else {
            (
                a.cluster.as_str(),
                a.namespace.as_str(),
                a.pod.as_str(),
                true,
            )
        };
        index.entry(key).or_default().push(i);
    }
    let none: Vec<usize> = Vec::new();
    for e in events {
        let mut matched = false;
        fn s(x: &Option<String>) -> &str {
            x.as_deref().unwrap_or_default()
        }
        let (c, n) = (s(&e.cluster), s(&e.namespace));
        let by_pod = index.get(&(c, n, s(&e.pod), true)).unwrap_or(&none);
        let by_controller = index.get(&(c, n, s(&e.controller), false)).unwrap_or(&none);
        for &i in by_pod.iter().chain(by_controller) {
            let a = &allocs[i];
            if e.matches(a) {
                matched = true;
                let s = shares[i].entry(e.tenant_key()).or_default();
                s.events += 1;
                for (c, t) in e.tokens.iter().enumerate() {
                    s.tokens[c] += i128::from((*t).max(0));
                }
                s.weight += policy.weigh(&e.tokens);
            }
        }
        if !matched {
            let s = |x: &Option<String>| x.clone().unwrap_or_default();
            let key = (
                s(&e.cluster),
                s(&e.namespace),
                s(&e.pod),
                s(&e.controller),
                e.tenant_key(),
            );
            let o = orphans
                .entry(key.clone())
                .or_insert_with(|| UnmatchedEvents {
                    cluster: key.0,
                    namespace: key.1,
                    pod: key.2,
                    controller: key.3,
                    tenant: key.4,
                    events: 0,
                    tokens: [0; 5],
                    first_ns: e.charge_time_ns,
                    last_ns: e.charge_time_ns,
                });
            o.events += 1;
            for (c, t) in e.tokens.iter().enumerate() {
                o.tokens[c] += i128::from((*t).max(0));
            }
            o.first_ns = o.first_ns.min(e.charge_time_ns);
            o.last_ns = o.last_ns.max(e.charge_time_ns);
        }
    }

    let mut lines = Vec::new();
    let mut unmatched_allocations = Vec::new();
    // A workload allocation's split over its tenants (the same split applies to its share of
    // idle under pro rata).
    let split_over = |i: usize,
                      amount: Decimal,
                      kind: LineKind,
                      lines: &mut Vec<Line>|
     -> Result<bool, String> {
        let tenants: Vec<(&String, &Share)> = shares[i]
            .iter()
            .filter(|(_, s)| !s.weight.is_zero())
            .collect();
        if tenants.is_empty() {
            return Ok(false);
        }
        let w: Vec<Decimal> = tenants.iter().map(|(_, s)| s.weight).collect();
        let parts = split(amount, &w, policy.unit)?;
        for ((t, s), c) in tenants.iter().zip(parts) {
            lines.push(Line {
                alloc: i,
                via: None,
                kind,
                tenant: (*t).clone(),
                events: s.events,
                tokens: s.tokens,
                weight: s.weight,
                cost: c,
            });
        }
        Ok(true)
    };
    for (i, a) in allocs.iter().enumerate() {
        match a.kind {
            Kind::Idle => {}
            Kind::Workload => {
                if !split_over(i, a.total, LineKind::Tenant, &mut lines)? {
                    let reason = if a.pod.is_empty() && a.controller.is_empty() {
                        "no_pod_or_controller"
                    } else if shares[i].is_empty() {
                        "no_events"
                    } else {
                        "zero_weight"
                    };
                    unmatched_allocations.push(UnmatchedAllocation { alloc: i, reason });
                    lines.push(unmatched_line(i, a.total));
                }
            }
            _ => {
                unmatched_allocations.push(UnmatchedAllocation {
                    alloc: i,
                    reason: a.kind.as_str(),
                });
                lines.push(unmatched_line(i, a.total));
            }
        }
    }
    // Idle.
    for (i, a) in allocs.iter().enumerate() {
        if a.kind != Kind::Idle {
            continue;
        }
        let idle_line = Line {
            alloc: i,
            via: None,
            kind: LineKind::Idle,
            tenant: IDLE.into(),
            events: 0,
            tokens: [0; 5],
            weight: Decimal::ZERO,
            cost: a.total,
        };
        if policy.idle == IdleRule::Keep {
            lines.push(idle_line);
            continue;
        }
        // The cluster's other allocations of the same window, by their cost.
        let peers: Vec<usize> = allocs
            .iter()
            .enumerate()
            .filter(|(_, b)| {
                b.kind != Kind::Idle
                    && b.cluster == a.cluster
                    && b.window_start == a.window_start
                    && b.window_end == a.window_end
            })
            .map(|(j, _)| j)
            .collect();
        let w: Vec<Decimal> = peers.iter().map(|j| allocs[*j].total).collect();
        if peers.is_empty()
            || w.iter().any(|x| x.is_sign_negative() && !x.is_zero())
            || w.iter().all(|x| x.is_zero())
        {
            lines.push(idle_line);
            continue;
        }
        let parts = split(a.total, &w, policy.unit)?;
        for (j, part) in peers.iter().zip(parts) {
            let mut sub = Vec::new();
            if split_over(*j, part, LineKind::IdleShare, &mut sub)? {
                for l in &mut sub {
                    l.via = Some(l.alloc);
                    l.alloc = i;
                }
                lines.extend(sub);
            } else {
                lines.push(Line {
                    alloc: i,
                    via: None,
                    kind: LineKind::Unmatched,
                    tenant: UNMATCHED.into(),
                    events: 0,
                    tokens: [0; 5],
                    weight: Decimal::ZERO,
                    cost: part,
                });
            }
        }
    }
    // Several unmatched idle shares of one idle allocation become one line.
    lines = merge(lines);

    // Checks: every allocation's lines sum to its cost; the whole sums.
    let mut per_alloc = vec![Decimal::ZERO; allocs.len()];
    for l in &lines {
        per_alloc[l.alloc] += l.cost;
    }
    for (a, sum) in allocs.iter().zip(&per_alloc) {
        if *sum != a.total {
            return Err(format!(
                "allocation {} ({}): split rows sum to {sum}, not its cost {}",
                a.name, a.window_start, a.total
            ));
        }
    }
    let source_total: Decimal = allocs.iter().map(|a| a.total).sum();
    let sum_of = |k: &[LineKind]| -> Decimal {
        lines
            .iter()
            .filter(|l| k.contains(&l.kind))
            .map(|l| l.cost)
            .sum()
    };
    let allocated = sum_of(&[LineKind::Tenant, LineKind::IdleShare]);
    let idle = sum_of(&[LineKind::Idle]);
    let unmatched = sum_of(&[LineKind::Unmatched]);
    if allocated + idle + unmatched != source_total {
        return Err(format!(
            "allocated {allocated} + idle {idle} + unmatched {unmatched} is not the OpenCost total {source_total}"
        ));
    }
    Ok(Outcome {
        lines,
        unmatched_allocations,
        unmatched_events: orphans.into_values().collect(),
        source_total,
        allocated,
        idle,
        unmatched,
    })
}

fn unmatched_line(i: usize, cost: Decimal) -> Line {
    Line {
        alloc: i,
        via: None,
        kind: LineKind::Unmatched,
        tenant: UNMATCHED.into(),
        events: 0,
        tokens: [0; 5],
        weight: Decimal::ZERO,
        cost,
    }
}

/// Lines with the same (allocation, kind, tenant) summed into one.
fn merge(lines: Vec<Line>) -> Vec<Line> {
    let mut out: BTreeMap<(usize, LineKind, Option<usize>, String), Line> = BTreeMap::new();
    for l in lines {
        let key = (l.alloc, l.kind, l.via, l.tenant.clone());
        match out.get_mut(&key) {
            Some(m) => {
                m.cost += l.cost;
                m.events += l.events;
                m.weight += l.weight;
                for c in 0..5 {
                    m.tokens[c] += l.tokens[c];
                }
            }
            None => {
                out.insert(key, l);
            }
        }
    }
    out.into_values().collect()
}

/// Cost per million tokens of one model server in one phase.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PhaseRate {
    pub server: String,
    pub phase: &'static str,
    pub tokens: i128,
    pub cost: Decimal,
    /// `cost × 10⁶ / tokens`, rounded half-even to 6 decimals (a rate, never summed);
    /// `None` without tokens.
    pub per_million: Option<Decimal>,
}

/// Per model server (over the whole range): its allocated cost (tenant and idle-share lines)
/// split into the input and output phases by the policy's weight of each phase's tokens.
pub fn phase_rates(
    allocs: &[Allocation],
    out: &Outcome,
    policy: &Policy,
) -> Result<Vec<PhaseRate>, String> {
    let mut servers: BTreeMap<String, (Decimal, [i128; 5])> = BTreeMap::new();
    for l in &out.lines {
        let server = match (l.kind, l.via) {
            (LineKind::Tenant, _) => allocs[l.alloc].server(),
            // An idle share counts towards the server it was split through, its tokens
            // already counted by that server's tenant lines.
            (LineKind::IdleShare, Some(v)) => allocs[v].server(),
            _ => continue,
        };
        let s = servers.entry(server).or_default();
        s.0 += l.cost;
        if l.kind == LineKind::Tenant {
            for c in 0..5 {
                s.1[c] += l.tokens[c];
            }
        }
    }
    let mut rates = Vec::new();
    for (server, (cost, tokens)) in servers {
        let (wi, wo) = policy.phases(&tokens);
        let parts = if (wi + wo).is_zero() {
            vec![cost, Decimal::ZERO]
        } else {
            split(cost, &[wi, wo], policy.unit)?
        };
        let ti = tokens[0] + tokens[2] + tokens[3];
        let to = tokens[1] + tokens[4];
        for (phase, c, t) in [("input", parts[0], ti), ("output", parts[1], to)] {
            let per_million = if t > 0 {
                Some(
                    (c * Decimal::from(1_000_000) / Decimal::from_i128_with_scale(t, 0))
                        .round_dp(6)
                        .normalize(),
                )
            } else {
                None
            };
            rates.push(PhaseRate {
                server: server.clone(),
                phase,
                tokens: t,
                cost: c,
                per_million,
            });
        }
    }
    Ok(rates)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(s: &str) -> Decimal {
        Decimal::from_str(s).unwrap()
    }

    #[test]
    fn largest_remainder_is_exact_and_documented() {
        // 1.00 over 1:1:1 at 0.01: 33 each, one unit left to the first (all tie).
        assert_eq!(
            split(d("1.00"), &[d("1"), d("1"), d("1")], d("0.01")).unwrap(),
            vec![d("0.34"), d("0.33"), d("0.33")]
        );
        // 10 units over 1:2:3 = 1.666…, 3.333…, 5 → floors 1, 3, 5; one left to the largest
        // remainder (the first, .666…).
        assert_eq!(
            split(d("0.10"), &[d("1"), d("2"), d("3")], d("0.01")).unwrap(),
            vec![d("0.02"), d("0.03"), d("0.05")]
        );
        // Not a multiple of the unit: the residue 0.004 goes to the largest weight.
        assert_eq!(
            split(d("1.004"), &[d("1"), d("3")], d("0.01")).unwrap(),
            vec![d("0.25"), d("0.754")]
        );
        // Negative amounts split with the sign.
        assert_eq!(
            split(d("-0.03"), &[d("2"), d("1")], d("0.01")).unwrap(),
            vec![d("-0.02"), d("-0.01")]
        );
        // Decimal weights.
        assert_eq!(
            split(d("1"), &[d("0.5"), d("1.5")], d("0.01")).unwrap(),
            vec![d("0.25"), d("0.75")]
        );
        assert!(split(d("1"), &[d("0"), d("0")], d("0.01")).is_err());
    }

    #[test]
    fn policies_parse_and_errors_name_the_key() {
        let p = Policy::parse(
            "id: gpu\nversion: \"2\"\nweight: weighted\nweights: { input: 1, output: \"4\" }\nidle: pro_rata\nunit: \"0.01\"\ncurrency: EUR\n",
            "p.yaml",
        )
        .unwrap();
        assert_eq!(
            p.weight,
            Weight::Weighted([d("1"), d("4"), d("0"), d("0"), d("0")])
        );
        assert_eq!(p.idle, IdleRule::ProRata);
        assert_eq!(p.unit, d("0.01"));
        assert_eq!(p.weigh(&[10, 5, 0, 0, 100]), d("30"));
        let err = |t: &str| Policy::parse(t, "p.yaml").unwrap_err();
        assert!(err("id: a\nversion: 1\n").contains("weight: required"));
        assert!(err("id: a\nversion: 1\nweight: tokens\n").contains("weight: \"tokens\""));
        assert!(
            err("id: a\nversion: 1\nweight: weighted\nweights: { prefill: 1 }\n")
                .contains("weights.prefill: unknown token class")
        );
        assert!(err("id: a\nversion: 1\nweight: total_tokens\nunit: \"0.03\"\n").contains("unit"));
        assert!(
            err("id: a\nversion: 1\nweight: total_tokens\nidle: hide\n").contains("idle: \"hide\"")
        );
        assert!(err("id: a\nversion: 1\nweight: total_tokens\nshare: 1\n")
            .contains("share: unknown key"));
    }
}
