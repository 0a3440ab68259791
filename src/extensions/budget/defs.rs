//! Budget definitions: the `budgets` YAML file of the `budget` extension.
//!
//! ```yaml
//! default:                     # optional: applies to every tenant without a tenant-wide budget
//!   period: month
//!   currency: USD
//!   limit: "50.00"
//! budgets:
//!   - tenant: acme
//!     period: month            # month | day | { from: 2026-12-01, to: 2027-01-01T12:00:00Z }
//!     currency: USD
//!     limit: "1000"
//!     thresholds: [50, 80, 100]   # percent of the limit (the default)
//!   - tenant: acme
//!     workflow: support        # optional: only this workflow's spend
//!     period: day
//!     currency: USD
//!     limit: "25"
//! ```
//!
//! Periods are UTC: `month` and `day` are the calendar month / day containing now; a fixed
//! window is `[from, to)` and its bounds must be whole UTC hours.

use std::path::Path;

use rust_decimal::Decimal;
use time::{Date, Month, OffsetDateTime, PrimitiveDateTime, Time};
use yaml_rust2::Yaml;

use crate::config::node::kind_of;
use crate::config::{Diagnostics, Map, Problem};
use crate::ledger::schema::NANOS_PER_HOUR;

/// Thresholds when none are given, in percent of the limit.
pub const DEFAULT_THRESHOLDS: [u32; 3] = [50, 80, 100];

/// The accounting period of a budget.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Period {
    Month,
    Day,
    /// `[from, to)`, Unix nanoseconds, whole hours.
    Fixed {
        from: i64,
        to: i64,
    },
}

impl Period {
    pub fn kind(&self) -> &'static str {
        match self {
            Period::Month => "month",
            Period::Day => "day",
            Period::Fixed { .. } => "fixed",
        }
    }

    /// The period containing `now_ns` (a fixed window is always itself): `[start, end)` ns.
    pub fn bounds(&self, now_ns: i64) -> (i64, i64) {
        match self {
            Period::Fixed { from, to } => (*from, *to),
            Period::Day => {
                let day = 86_400 * 1_000_000_000i64;
                let start = now_ns.div_euclid(day) * day;
                (start, start + day)
            }
            Period::Month => {
                let secs = now_ns.div_euclid(1_000_000_000);
                let Ok(dt) = OffsetDateTime::from_unix_timestamp(secs) else {
                    return (0, 0);
                };
                let (y, m) = (dt.year(), dt.month());
                let (ny, nm) = if m == Month::December {
                    (y + 1, Month::January)
                } else {
                    (y, m.next())
                };
                (month_start(y, m), month_start(ny, nm))
            }
        }
    }
}

fn month_start(year: i32, month: Month) -> i64 {
    Date::from_calendar_date(year, month, 1)
        .map(|d| {
            PrimitiveDateTime::new(d, Time::MIDNIGHT)
                .assume_utc()
                .unix_timestamp()
                * 1_000_000_000
        })
        .unwrap_or(0)
}

/// One budget.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BudgetDef {
    /// `None` for the `default` budget (it takes the tenant it is applied to).
    pub tenant: Option<String>,
    pub workflow: Option<String>,
    pub period: Period,
    pub currency: String,
    pub limit: Decimal,
    /// Ascending, distinct percentages.
    pub thresholds: Vec<u32>,
}

impl BudgetDef {
    /// The budget's name: `tenant` or `tenant/workflow`.
    pub fn name_for(tenant: &str, workflow: Option<&str>) -> String {
        match workflow {
            Some(w) => format!("{tenant}/{w}"),
            None => tenant.to_string(),
        }
    }
}

/// A loaded budgets file.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Budgets {
    pub listed: Vec<BudgetDef>,
    pub default: Option<BudgetDef>,
}

impl Budgets {
    /// Whether `tenant` has a tenant-wide budget of its own (else the default applies).
    pub fn has_tenant_wide(&self, tenant: &str) -> bool {
        self.listed
            .iter()
            .any(|b| b.workflow.is_none() && b.tenant.as_deref() == Some(tenant))
    }

    /// Reads and checks a budgets file; every problem names its YAML path.
    pub fn load(path: &Path) -> Result<Budgets, Vec<Problem>> {
        let text = std::fs::read_to_string(path).map_err(|e| {
            vec![Problem {
                path: path.display().to_string(),
                message: format!("cannot read budgets file: {e}"),
            }]
        })?;
        Self::parse(&text)
    }

    pub fn parse(text: &str) -> Result<Budgets, Vec<Problem>> {
        let doc = crate::config::load_str(text)?;
        let mut d = Diagnostics::default();
        let mut out = Budgets::default();
        let Some(root) = Map::new("", &doc, &mut d) else {
            return Err(d.into_problems());
        };
        if let Some(m) = root.map("default", &mut d) {
            out.default = parse_one(&m, false, &mut d);
        }
        match root.seq("budgets", &mut d) {
            Some(items) => {
                let mut seen: Vec<(Option<String>, Option<String>)> = Vec::new();
                for (i, y) in items.iter().enumerate() {
                    let Some(m) = Map::new(format!("budgets[{i}]"), y, &mut d) else {
                        continue;
                    };
                    let name =
                        |k: &'static str| m.raw(k).and_then(crate::config::node::scalar_string);
                    let key = (name("tenant"), name("workflow"));
                    let b = parse_one(&m, true, &mut d);
                    if key.0.is_some() {
                        if seen.contains(&key) {
                            let shown = BudgetDef::name_for(
                                key.0.as_deref().unwrap_or_default(),
                                key.1.as_deref(),
                            );
                            d.error(
                                format!("budgets[{i}]"),
                                format!("a second budget for {shown}: each tenant (and workflow) has at most one"),
                            );
                            continue;
                        }
                        seen.push(key);
                    }
                    let Some(b) = b else {
                        continue;
                    };
                    out.listed.push(b);
                }
            }
            None if !root.has("budgets") && out.default.is_none() && d.is_empty() => d.error(
                "budgets",
                "missing: a list of budgets (or a `default` budget)",
            ),
            None => {}
        }
        root.finish(&mut d);
        if d.is_empty() {
            Ok(out)
        } else {
            Err(d.into_problems())
        }
    }
}

fn parse_one(m: &Map<'_>, listed: bool, d: &mut Diagnostics) -> Option<BudgetDef> {
    let mut ok = true;
    let (tenant, workflow) = if listed {
        let tenant = m.str("tenant", d).filter(|t| !t.trim().is_empty());
        if tenant.is_none() {
            d.error(m.key_path("tenant"), "missing or empty: the tenant id");
            ok = false;
        }
        if tenant.as_deref() == Some("default") {
            d.error(
                m.key_path("tenant"),
                "`default` is reserved: put the default budget under the top-level `default` key",
            );
            ok = false;
        }
        let workflow = match m.raw("workflow") {
            None => None,
            Some(_) => match m.str("workflow", d).filter(|w| !w.trim().is_empty()) {
                Some(w) => Some(w),
                None => {
                    d.error(
                        m.key_path("workflow"),
                        "must not be empty (omit it for a tenant-wide budget)",
                    );
                    ok = false;
                    None
                }
            },
        };
        (tenant, workflow)
    } else {
        (None, None)
    };
    let period = match m.raw("period") {
        None => {
            d.error(m.key_path("period"), "missing: month, day or { from, to }");
            None
        }
        Some(Yaml::String(s)) if s == "month" => Some(Period::Month),
        Some(Yaml::String(s)) if s == "day" => Some(Period::Day),
        Some(Yaml::String(s)) => {
            d.error(
                m.key_path("period"),
                format!("unknown period {s:?}: expected month, day or {{ from, to }}"),
            );
            None
        }
        Some(Yaml::Hash(_)) => m.map("period", d).and_then(|p| parse_window(&p, d)),
        Some(other) => {
            d.error(
                m.key_path("period"),
                format!(
                    "expected month, day or {{ from, to }}, found {}",
                    kind_of(other)
                ),
            );
            None
        }
    };
    let currency = match m.str("currency", d) {
        Some(c) if !c.trim().is_empty() && c.trim() == c => Some(c),
        Some(_) => {
            d.error(
                m.key_path("currency"),
                "must be a non-empty code such as USD",
            );
            None
        }
        None => {
            d.error(
                m.key_path("currency"),
                "missing: the currency of the limit (it must be the rate table's currency)",
            );
            None
        }
    };
    let limit = match m.raw("limit") {
        None => {
            d.error(
                m.key_path("limit"),
                "missing: the spending limit, e.g. \"100.00\"",
            );
            None
        }
        Some(y) => match crate::config::node::scalar_string(y)
            .filter(|_| matches!(y, Yaml::String(_) | Yaml::Real(_) | Yaml::Integer(_)))
        {
            None => {
                d.error(
                    m.key_path("limit"),
                    format!("expected a decimal number, found {}", kind_of(y)),
                );
                None
            }
            Some(text) => match crate::cost::parse_decimal(&text) {
                Ok(v) if v > Decimal::ZERO => Some(v),
                Ok(v) => {
                    d.error(
                        m.key_path("limit"),
                        format!("must be more than 0, found {v}"),
                    );
                    None
                }
                Err(e) => {
                    d.error(m.key_path("limit"), e);
                    None
                }
            },
        },
    };
    let thresholds = match m.seq("thresholds", d) {
        None => Some(DEFAULT_THRESHOLDS.to_vec()),
        Some(items) => {
            let mut out: Vec<u32> = Vec::new();
            let mut good = true;
            for (i, y) in items.iter().enumerate() {
                let path = format!("{}[{i}]", m.key_path("thresholds"));
                match y {
                    Yaml::Integer(v) if (1..=1000).contains(v) => {
                        let v = *v as u32;
                        if out.last().is_some_and(|l| *l >= v) {
                            d.error(path, "thresholds must be strictly ascending");
                            good = false;
                        }
                        out.push(v);
                    }
                    Yaml::Integer(v) => {
                        d.error(
                            path,
                            format!("must be a percentage between 1 and 1000, found {v}"),
                        );
                        good = false;
                    }
                    other => {
                        d.error(
                            path,
                            format!(
                                "expected a whole percentage such as 80, found {}",
                                kind_of(other)
                            ),
                        );
                        good = false;
                    }
                }
            }
            if items.is_empty() {
                d.error(
                    m.key_path("thresholds"),
                    "empty: list at least one percentage (or omit the key for 50, 80, 100)",
                );
                good = false;
            }
            good.then_some(out)
        }
    };
    m.finish(d);
    if !ok {
        return None;
    }
    Some(BudgetDef {
        tenant,
        workflow,
        period: period?,
        currency: currency?,
        limit: limit?,
        thresholds: thresholds?,
    })
}

fn parse_window(p: &Map<'_>, d: &mut Diagnostics) -> Option<Period> {
    let bound = |key: &'static str, d: &mut Diagnostics| -> Option<i64> {
        let Some(text) = p.str(key, d) else {
            if !p.has(key) {
                d.error(
                    p.key_path(key),
                    "missing: a date (2026-12-01) or an RFC 3339 time",
                );
            }
            return None;
        };
        match crate::ledger::time::parse_instant(&text) {
            Ok(ns) if ns.rem_euclid(NANOS_PER_HOUR) == 0 => Some(ns),
            Ok(_) => {
                d.error(
                    p.key_path(key),
                    format!("{text:?} is not a whole UTC hour (budgets are summed by the hour)"),
                );
                None
            }
            Err(e) => {
                d.error(p.key_path(key), e);
                None
            }
        }
    };
    let from = bound("from", d);
    let to = bound("to", d);
    p.finish(d);
    let (from, to) = (from?, to?);
    if from >= to {
        d.error(p.key_path("to"), "must be after `from`");
        return None;
    }
    Some(Period::Fixed { from, to })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn problems(text: &str) -> Vec<String> {
        Budgets::parse(text)
            .unwrap_err()
            .into_iter()
            .map(|p| p.to_string())
            .collect()
    }

    #[test]
    fn parses_listed_and_default() {
        let b = Budgets::parse(
            "default: { period: month, currency: USD, limit: 5 }\nbudgets:\n  - tenant: acme\n    period: day\n    currency: USD\n    limit: \"10.50\"\n  - tenant: acme\n    workflow: support\n    period: { from: 2026-12-01, to: \"2026-12-01T06:00:00Z\" }\n    currency: EUR\n    limit: 0.25\n    thresholds: [90, 120]\n",
        )
        .unwrap();
        let def = b.default.unwrap();
        assert_eq!(def.limit, Decimal::from(5));
        assert_eq!(def.thresholds, vec![50, 80, 100]);
        assert_eq!(b.listed[0].limit.to_string(), "10.50");
        assert_eq!(b.listed[0].period, Period::Day);
        assert_eq!(b.listed[1].workflow.as_deref(), Some("support"));
        assert_eq!(b.listed[1].limit.to_string(), "0.25");
        assert_eq!(b.listed[1].thresholds, vec![90, 120]);
        let from = crate::ledger::time::parse_instant("2026-12-01").unwrap();
        assert_eq!(
            b.listed[1].period,
            Period::Fixed {
                from,
                to: from + 6 * NANOS_PER_HOUR
            }
        );
    }

    #[test]
    fn every_problem_at_its_path() {
        let p = problems(
            "budgets:\n  - tenant: acme\n    period: week\n    currency: USD\n    limit: \"-1\"\n  - period: month\n    currency: USD\n    limit: 1\n    thresholds: [80, 50, 0]\n    colour: red\n  - tenant: g\n    period: { from: \"2026-12-01T00:30:00Z\", to: 2026-11-01 }\n    limit: x\n  - tenant: acme\n    period: month\n    currency: USD\n    limit: 3\n",
        );
        let want = [
            "budgets[0].period: unknown period \"week\"",
            "budgets[0].limit: must be more than 0, found -1",
            "budgets[1].tenant: missing or empty",
            "budgets[1].thresholds[1]: thresholds must be strictly ascending",
            "budgets[1].thresholds[2]: must be a percentage between 1 and 1000, found 0",
            "budgets[1].colour: unknown key",
            "budgets[2].period.from: \"2026-12-01T00:30:00Z\" is not a whole UTC hour",
            "budgets[2].currency: missing",
            "budgets[2].limit: invalid number \"x\"",
            "budgets[3]: a second budget for acme",
        ];
        for w in want {
            assert!(p.iter().any(|x| x.starts_with(w)), "{w} not in {p:#?}");
        }
        assert_eq!(p.len(), want.len(), "{p:#?}");
        assert!(problems(
            "budgets:\n  - tenant: default\n    period: day\n    currency: USD\n    limit: 1\n"
        )[0]
        .starts_with("budgets[0].tenant: `default` is reserved"));
        assert!(problems("{}\n")[0].starts_with("budgets: missing"));
    }

    #[test]
    fn shipped_example_loads() {
        let p = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("config/budgets.yaml");
        let b = Budgets::load(&p).unwrap();
        assert_eq!(b.listed.len(), 2);
        assert_eq!(b.default.unwrap().limit, Decimal::from(50));
    }

    #[test]
    fn period_bounds() {
        let ns = |s: &str| crate::ledger::time::parse_instant(s).unwrap();
        let now = ns("2026-12-31T23:59:59Z");
        assert_eq!(
            Period::Month.bounds(now),
            (ns("2026-12-01"), ns("2027-01-01"))
        );
        assert_eq!(
            Period::Month.bounds(ns("2028-02-10T05:00:00Z")),
            (ns("2028-02-01"), ns("2028-03-01"))
        );
        assert_eq!(
            Period::Day.bounds(now),
            (ns("2026-12-31"), ns("2027-01-01"))
        );
        assert_eq!(
            Period::Month.bounds(ns("2027-01-01")),
            (ns("2027-01-01"), ns("2027-02-01"))
        );
    }
}
