//! The budget API.
//!
//! - `GET /v1/budgets/{tenant}`: the tenant's budgets (its own, else the default), each with
//!   limit, spent, remaining, utilization, period bounds and `as_of` (the newest charge time
//!   counted). Optional `workflow=W` narrows which budgets an estimate is checked against
//!   (tenant-wide ones and W's); `estimate=COST`, or `model=M` (and `provider=P`) with
//!   `input_tokens`, `output_tokens`, `cache_read_tokens`, `cache_write_tokens`,
//!   `reasoning_tokens` priced with the gateway's current rate table, answers `allowed`:
//!   spent + estimate ≤ limit for every budget that applies. Nothing is held.
//! - `GET /v1/budgets`: every budget of the snapshot.
//!
//! Every answer carries `snapshot_age_ms`, so a caller can fail open or closed on stale data.
//! Bearer tokens as the receivers'; a token bound to a tenant sees only that tenant.

use std::sync::Arc;

use axum::extract::{Path, RawQuery};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use rust_decimal::Decimal;
use serde_json::{json, Value};

use crate::cost::pricing::{price, Usage};
use crate::ledger::time::format_instant;

use super::engine::{BudgetFigures, Source};
use super::state::{Shared, Snapshot};

pub fn router(shared: Arc<Shared>) -> axum::Router {
    let one = shared.clone();
    let all = shared;
    axum::Router::new()
        .route(
            "/v1/budgets",
            get(move |headers: HeaderMap, RawQuery(q): RawQuery| {
                let s = all.clone();
                async move { list(&s, &headers, q.as_deref()) }
            }),
        )
        .route(
            "/v1/budgets/{tenant}",
            get(
                move |headers: HeaderMap, Path(tenant): Path<String>, RawQuery(q): RawQuery| {
                    let s = one.clone();
                    async move { tenant_budgets(&s, &headers, &tenant, q.as_deref()) }
                },
            ),
        )
        .fallback(|| async {
            error(
                StatusCode::NOT_FOUND,
                "no such resource: GET /v1/budgets or /v1/budgets/{tenant}",
            )
        })
}

fn error(status: StatusCode, message: impl Into<String>) -> Response {
    let mut r = (
        status,
        [(http::header::CONTENT_TYPE, "application/json")],
        json!({ "error": message.into() }).to_string(),
    )
        .into_response();
    if status == StatusCode::UNAUTHORIZED {
        r.headers_mut().insert(
            http::header::WWW_AUTHENTICATE,
            http::HeaderValue::from_static("Bearer"),
        );
    }
    r
}

fn ok(body: Value) -> Response {
    (
        StatusCode::OK,
        [(http::header::CONTENT_TYPE, "application/json")],
        body.to_string(),
    )
        .into_response()
}

/// Checks the token: `Ok(Some(t))` when it is bound to tenant `t`.
fn admit(shared: &Shared, headers: &HeaderMap) -> Result<Option<String>, Box<Response>> {
    shared
        .policy
        .admit(headers, "http")
        .map(|c| c.tenant.clone())
        .map_err(|f| Box::new(error(StatusCode::UNAUTHORIZED, f.message())))
}

fn snapshot(shared: &Shared) -> Result<Arc<Snapshot>, Box<Response>> {
    shared.snapshot().ok_or_else(|| {
        Box::new(error(
            StatusCode::SERVICE_UNAVAILABLE,
            "no budget snapshot yet: the ledger could not be read (see the gateway log)",
        ))
    })
}

fn ms(ns: i64) -> i64 {
    ns.div_euclid(1_000_000)
}

fn envelope(snap: &Snapshot) -> serde_json::Map<String, Value> {
    let mut m = serde_json::Map::new();
    m.insert(
        "snapshot_age_ms".into(),
        json!(snap.taken.elapsed().as_millis() as u64),
    );
    m.insert("snapshot_time".into(), json!(format_instant(snap.taken_ns)));
    m.insert(
        "high_water".into(),
        json!(snap.high_water.map(|(ingest, _)| format_instant(ingest))),
    );
    m.insert(
        "ingest_lag_ms".into(),
        json!(snap.high_water.map(|(ingest, charge)| ms(ingest - charge))),
    );
    m
}

fn budget_json(s: &BudgetFigures) -> Value {
    json!({
        "budget": s.budget,
        "tenant": s.tenant,
        "workflow": s.workflow,
        "source": match s.source { Source::Listed => "listed", Source::Default => "default" },
        "currency": s.currency,
        "limit": s.limit.normalize().to_string(),
        "spent": s.spent.normalize().to_string(),
        "remaining": s.remaining().normalize().to_string(),
        "utilization": s.utilization().to_string(),
        "events": s.events,
        "period": {
            "kind": s.period,
            "start": format_instant(s.start_ns),
            "end": format_instant(s.end_ns),
        },
        "as_of": s.as_of_ns.map(format_instant),
        "thresholds": s.thresholds,
        "crossed": s.crossed(),
    })
}

fn list(shared: &Shared, headers: &HeaderMap, q: Option<&str>) -> Response {
    let bound = match admit(shared, headers) {
        Ok(b) => b,
        Err(r) => return *r,
    };
    if let Some(q) = q.filter(|q| !q.is_empty()) {
        let first = q.split('&').next().unwrap_or(q);
        return error(
            StatusCode::BAD_REQUEST,
            format!("GET /v1/budgets takes no parameters (found {first:?}); ask /v1/budgets/{{tenant}} for an estimate"),
        );
    }
    let snap = match snapshot(shared) {
        Ok(s) => s,
        Err(r) => return *r,
    };
    let budgets: Vec<Value> = match &bound {
        Some(t) => snap.for_tenant(t).iter().map(budget_json).collect(),
        None => snap.statuses.iter().map(budget_json).collect(),
    };
    let mut body = envelope(&snap);
    body.insert("budgets".into(), Value::Array(budgets));
    ok(Value::Object(body))
}

/// `%XX` and `+` decoding of one query component.
fn decode(s: &str) -> Result<String, String> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'+' => out.push(b' '),
            b'%' => {
                let hex = b
                    .get(i + 1..i + 3)
                    .and_then(|h| std::str::from_utf8(h).ok())
                    .and_then(|h| u8::from_str_radix(h, 16).ok())
                    .ok_or_else(|| format!("bad percent-encoding in {s:?}"))?;
                out.push(hex);
                i += 2;
            }
            c => out.push(c),
        }
        i += 1;
    }
    String::from_utf8(out).map_err(|_| format!("{s:?} is not UTF-8"))
}

const PARAMS: [&str; 9] = [
    "workflow",
    "estimate",
    "model",
    "provider",
    "input_tokens",
    "output_tokens",
    "cache_read_tokens",
    "cache_write_tokens",
    "reasoning_tokens",
];

/// The query parameters, each known and given once.
fn params(q: Option<&str>) -> Result<[Option<String>; 9], String> {
    let mut out: [Option<String>; 9] = Default::default();
    for pair in q.unwrap_or_default().split('&').filter(|p| !p.is_empty()) {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        let k = decode(k)?;
        let Some(i) = PARAMS.iter().position(|p| *p == k) else {
            return Err(format!(
                "unknown parameter {k:?} (known: {})",
                PARAMS.join(", ")
            ));
        };
        if out[i].is_some() {
            return Err(format!("parameter {k:?} is given twice"));
        }
        out[i] = Some(decode(v)?);
    }
    Ok(out)
}

/// What a call is estimated to cost, and how that was worked out.
struct Estimate {
    cost: Decimal,
    currency: Option<String>,
    detail: Value,
}

fn estimate(p: &[Option<String>; 9]) -> Result<Option<Estimate>, (StatusCode, String)> {
    let bad = |m: String| (StatusCode::BAD_REQUEST, m);
    let tokens: Vec<(&str, Option<i64>)> = {
        let mut v = Vec::new();
        for i in 4..9 {
            let n = match &p[i] {
                None => None,
                Some(t) => Some(t.parse::<i64>().ok().filter(|n| *n >= 0).ok_or_else(|| {
                    bad(format!(
                        "{}: expected a whole number of tokens, found {t:?}",
                        PARAMS[i]
                    ))
                })?),
            };
            v.push((PARAMS[i], n));
        }
        v
    };
    let any_tokens = tokens.iter().any(|(_, n)| n.is_some());
    match (&p[1], &p[2]) {
        (Some(_), Some(_)) => Err(bad(
            "give either estimate (a cost) or model with token counts, not both".into(),
        )),
        (Some(e), None) => {
            if any_tokens || p[3].is_some() {
                return Err(bad(
                    "token counts and provider go with model, not with estimate".into(),
                ));
            }
            let cost = crate::cost::parse_decimal(e).map_err(|m| bad(format!("estimate: {m}")))?;
            if cost.is_sign_negative() && !cost.is_zero() {
                return Err(bad(format!("estimate: must not be negative, found {e}")));
            }
            Ok(Some(Estimate {
                cost,
                currency: None,
                detail: json!({ "cost": cost.normalize().to_string() }),
            }))
        }
        (None, Some(model)) => {
            let Some(published) = crate::cost::registry::latest() else {
                return Err((
                    StatusCode::SERVICE_UNAVAILABLE,
                    "cannot price model: this gateway has no rate table (add a `cost` processor) — send estimate=COST instead".into(),
                ));
            };
            let table = &published.table;
            let at = crate::component::attrs::now_nanos() as i64 / 1_000_000_000;
            let Some(m) = table.find(model, p[3].as_deref(), at) else {
                return Err((
                    StatusCode::UNPROCESSABLE_ENTITY,
                    format!(
                        "model {model:?}{} has no rate in rate table {}",
                        p[3].as_deref()
                            .map(|x| format!(" (provider {x:?})"))
                            .unwrap_or_default(),
                        table.version
                    ),
                ));
            };
            if !any_tokens {
                return Err(bad(
                    "model: give at least one token count (input_tokens, output_tokens, …)".into(),
                ));
            }
            let usage = Usage {
                input: tokens[0].1,
                output: tokens[1].1,
                cache_read: tokens[2].1,
                cache_write: tokens[3].1,
                reasoning: tokens[4].1,
                ..Usage::default()
            };
            let b = price(m.rate, &usage).map_err(|e| bad(format!("token counts: {e}")))?;
            Ok(Some(Estimate {
                cost: b.total,
                currency: Some(table.currency.clone()),
                detail: json!({
                    "cost": b.total.normalize().to_string(),
                    "model": model,
                    "rate_id": m.rate.id,
                    "rates_version": table.version,
                    "currency": table.currency,
                }),
            }))
        }
        (None, None) if any_tokens || p[3].is_some() => Err(bad(
            "token counts and provider need model=… (or send estimate=COST)".into(),
        )),
        (None, None) => Ok(None),
    }
}

fn tenant_budgets(shared: &Shared, headers: &HeaderMap, tenant: &str, q: Option<&str>) -> Response {
    let bound = match admit(shared, headers) {
        Ok(b) => b,
        Err(r) => return *r,
    };
    if bound.as_deref().is_some_and(|b| b != tenant) {
        return error(
            StatusCode::FORBIDDEN,
            format!("this token is bound to another tenant and may not read {tenant:?}"),
        );
    }
    let p = match params(q) {
        Ok(p) => p,
        Err(e) => return error(StatusCode::BAD_REQUEST, e),
    };
    let est = match estimate(&p) {
        Ok(e) => e,
        Err((code, m)) => return error(code, m),
    };
    let snap = match snapshot(shared) {
        Ok(s) => s,
        Err(r) => return *r,
    };
    let statuses = snap.for_tenant(tenant);
    if statuses.is_empty() {
        let mut body = envelope(&snap);
        body.insert(
            "error".into(),
            json!(format!(
                "unknown tenant {tenant:?}: no budget names it and there is no default budget"
            )),
        );
        return (
            StatusCode::NOT_FOUND,
            [(http::header::CONTENT_TYPE, "application/json")],
            Value::Object(body).to_string(),
        )
            .into_response();
    }
    let workflow = p[0].as_deref();
    let mut body = envelope(&snap);
    body.insert("tenant".into(), json!(tenant));
    let mut allowed = true;
    let mut list = Vec::with_capacity(statuses.len());
    for s in &statuses {
        let mut j = budget_json(s);
        let applies = s.workflow.is_none() || s.workflow.as_deref() == workflow;
        if let (Some(e), true) = (&est, applies) {
            if let Some(c) = e.currency.as_deref().filter(|c| *c != s.currency) {
                return error(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    format!(
                        "the rate table prices in {c} but budget {} is in {}",
                        s.budget, s.currency
                    ),
                );
            }
            let a = s.allows(e.cost);
            allowed &= a;
            j["allowed"] = json!(a);
        }
        list.push(j);
    }
    body.insert("budgets".into(), Value::Array(list));
    if let Some(e) = est {
        body.insert("estimate".into(), e.detail);
        body.insert("allowed".into(), json!(allowed));
    }
    ok(Value::Object(body))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::str::FromStr;

    #[test]
    fn query_parsing() {
        let p = params(Some("estimate=0.5&workflow=a%20b+c")).unwrap();
        assert_eq!(p[0].as_deref(), Some("a b c"));
        assert_eq!(p[1].as_deref(), Some("0.5"));
        assert!(params(Some("estimat=1"))
            .unwrap_err()
            .contains("unknown parameter \"estimat\""));
        assert!(params(Some("estimate=1&estimate=2"))
            .unwrap_err()
            .contains("twice"));
        assert!(params(Some("model=%zz")).unwrap_err().contains("percent"));
        let e = estimate(&params(Some("estimate=0.000000001")).unwrap())
            .unwrap()
            .unwrap();
        assert_eq!(e.cost, Decimal::from_str("0.000000001").unwrap());
        for (q, want) in [
            ("estimate=-1", "must not be negative"),
            ("estimate=1&model=x", "not both"),
            ("input_tokens=5", "need model"),
            ("estimate=1&input_tokens=5", "go with model"),
            ("estimate=abc", "estimate: invalid number"),
        ] {
            let Err((_, m)) = estimate(&params(Some(q)).unwrap()) else {
                panic!("{q} was accepted");
            };
            assert!(m.contains(want), "{q}: {m}");
        }
    }
}
