//! The ledger's roll-up (issue 22, report speed): `report` reads whole days and hours from
//! `ledger_rollup` and partial hours from the events, and must give exactly the lines of a
//! report over the events alone, on SQLite and on PostgreSQL. Every expected figure is
//! computed here from the rows the test wrote.

mod common;

use std::collections::BTreeMap;

use rust_decimal::Decimal;
use time::OffsetDateTime;
use tollgate::ledger::periods::{self, Period};
use tollgate::ledger::query::{self, Dim, Range, ReportLine};
use tollgate::ledger::schema::Val;
use tollgate::ledger::store::Target;
use tollgate::ledger::{Row, Store};

const HOUR: i64 = 3_600_000_000_000;
const DAY: i64 = 24 * HOUR;
/// 2026-11-28T00:00:00Z.
const BASE: i64 = 1_795_824_000 * 1_000_000_000;

/// A small deterministic generator (xorshift64*).
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
    fn pick<'a>(&mut self, xs: &[&'a str]) -> &'a str {
        xs[self.below(xs.len() as u64) as usize]
    }
    fn maybe(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }
}

/// A row charged at `charge_ns` with random attribution, model, cost and tokens.
fn random_row(rng: &mut Rng, n: u64, charge_ns: i64) -> Row {
    let attributed = rng.maybe(85);
    let provider = rng.pick(&["openai", "anthropic", "google"]);
    let model = rng.pick(&["m-large", "m-small", "m-mini"]);
    let priced = rng.maybe(90);
    let cost_total = priced.then(|| {
        // 6 to 18 decimals (18: the most the integer split holds exactly).
        Decimal::new(
            rng.below(1_000_000_000_000) as i64,
            6 + rng.below(13) as u32,
        )
    });
    let tokens = std::array::from_fn(|_| rng.maybe(70).then(|| rng.below(5000) as i64));
    let mut r = Row {
        trace_id: format!("{n:032x}"),
        span_id: format!("{:016x}", rng.next()),
        start_time_ns: charge_ns,
        charge_time_ns: charge_ns,
        tenant_id: attributed.then(|| rng.pick(&["acme", "globex", "initech"]).to_string()),
        workflow_id: rng
            .maybe(80)
            .then(|| rng.pick(&["wf-a", "wf-b"]).to_string()),
        originator_id: None,
        operation_id: None,
        issuance_id: None,
        envelope_status: if attributed {
            "valid".into()
        } else {
            rng.pick(&["missing", "bad_signature", "expired"]).into()
        },
        envelope_override: None,
        key_id: None,
        lineage_depth: None,
        lineage_kinds: None,
        envelope_token: None,
        operation_name: Some("chat".into()),
        provider: rng.maybe(95).then(|| provider.to_string()),
        request_model: rng.maybe(90).then(|| format!("{model}-req")),
        response_model: rng.maybe(60).then(|| format!("{model}-resp")),
        agent_name: rng
            .maybe(30)
            .then(|| rng.pick(&["planner", "coder"]).to_string()),
        cost_status: if priced {
            "priced".into()
        } else {
            "unpriced_model".into()
        },
        cost_reason: None,
        rate_id: priced.then(|| "rates[0]".to_string()),
        rate_model: (priced && rng.maybe(70)).then(|| model.to_string()),
        rates_version: None,
        rates_digest: None,
        currency: if priced {
            Some(rng.pick(&["USD", "USD", "EUR"]).to_string())
        } else {
            None
        },
        usage: [None; 11],
        tokens,
        unit_price: [None; 9],
        cost: [None; 9],
        cost_total,
        caller_cost: None,
        caller_currency: None,
        caller_source: None,
        service_name: Some("svc".into()),
        gateway_instance: rng.pick(&["gw-a", "gw-b"]).to_string(),
        ingest_time_ns: charge_ns,
        source_digest: String::new(),
        k8s_cluster: None,
        k8s_namespace: None,
        k8s_pod: None,
        k8s_controller: None,
    };
    r.usage[0] = r.tokens[0];
    r.source_digest = tollgate::ledger::row::source_digest(&r);
    r
}

/// The same event (key) with other source content: a conflict.
fn conflicting(r: &Row) -> Row {
    let mut c = r.clone();
    c.usage[0] = Some(c.usage[0].unwrap_or(0) + 17);
    c.tokens[0] = Some(c.tokens[0].unwrap_or(0) + 17);
    c.tenant_id = Some("mallory".into());
    c.source_digest = tollgate::ledger::row::source_digest(&c);
    assert_ne!(c.source_digest, r.source_digest);
    c
}

/// An event as the billing view sees it: the row, and the month it is billed to as an
/// adjustment (late for a closed month), if it is one.
struct Recorded {
    row: Row,
    adjustment: Option<(String, i64)>,
}

fn day_of(ns: i64) -> String {
    let d = OffsetDateTime::from_unix_timestamp(ns.div_euclid(1_000_000_000)).unwrap();
    format!("{:04}-{:02}-{:02}", d.year(), u8::from(d.month()), d.day())
}

fn hour_of(ns: i64) -> String {
    let d = OffsetDateTime::from_unix_timestamp(ns.div_euclid(1_000_000_000)).unwrap();
    format!("{}T{:02}:00Z", day_of(ns), d.hour())
}

type Expected = BTreeMap<(String, Vec<String>, String, String), (i64, i64, Decimal, [i128; 9])>;

/// The report, computed from the recorded events.
fn expected_report(events: &[Recorded], range: Range, by: &[Dim]) -> Vec<ReportLine> {
    let mut m: Expected = BTreeMap::new();
    for e in events {
        let r = &e.row;
        let at = match &e.adjustment {
            Some((_, billed_ns)) => *billed_ns,
            None => r.charge_time_ns,
        };
        if at < range.from || at >= range.to {
            continue;
        }
        let keys = by
            .iter()
            .map(|d| match d {
                Dim::Tenant => r
                    .tenant_id
                    .clone()
                    .unwrap_or_else(|| "__unattributed__".into()),
                Dim::Workflow => r.workflow_id.clone().unwrap_or_default(),
                Dim::Agent => r.agent_name.clone().unwrap_or_default(),
                Dim::Provider => r.provider.clone().unwrap_or_default(),
                Dim::Model => r
                    .rate_model
                    .clone()
                    .or(r.response_model.clone())
                    .or(r.request_model.clone())
                    .unwrap_or_default(),
                Dim::Day => day_of(r.charge_time_ns),
                Dim::Hour => hour_of(r.charge_time_ns),
            })
            .collect();
        let reason = if by.contains(&Dim::Tenant) && r.tenant_id.is_none() {
            r.envelope_status.clone()
        } else {
            String::new()
        };
        let adj = e
            .adjustment
            .as_ref()
            .map(|a| a.0.clone())
            .unwrap_or_default();
        let line = m
            .entry((adj, keys, reason, r.currency.clone().unwrap_or_default()))
            .or_default();
        line.0 += 1;
        line.1 += i64::from(r.cost_status == "priced");
        line.2 += r.cost_total.unwrap_or_default();
        for (t, v) in line.3.iter_mut().zip(r.tokens) {
            *t += i128::from(v.unwrap_or(0));
        }
    }
    m.into_iter()
        .map(
            |(
                (adjustment_of, keys, unattributed_reason, currency),
                (events, priced, cost, tokens),
            )| {
                ReportLine {
                    keys,
                    unattributed_reason,
                    currency,
                    events,
                    priced,
                    cost: cost.normalize(),
                    tokens,
                    adjustment_of,
                }
            },
        )
        .collect()
}

/// The hourly roll-up rows, computed from the recorded events: (hour, tenant, reason,
/// workflow, agent, provider, model, currency, instance) → events, priced, cost, tokens.
type RollupRows = BTreeMap<Vec<String>, (i64, i64, Decimal, [i128; 9])>;

fn expected_rollup(events: &[Recorded], grain_hours: i64) -> RollupRows {
    let mut m: RollupRows = BTreeMap::new();
    for e in events {
        let r = &e.row;
        let bucket = r.charge_time_ns.div_euclid(grain_hours * HOUR) * grain_hours;
        let key = vec![
            bucket.to_string(),
            r.tenant_id
                .clone()
                .unwrap_or_else(|| "__unattributed__".into()),
            if r.tenant_id.is_none() {
                r.envelope_status.clone()
            } else {
                String::new()
            },
            r.workflow_id.clone().unwrap_or_default(),
            r.agent_name.clone().unwrap_or_default(),
            r.provider.clone().unwrap_or_default(),
            r.rate_model
                .clone()
                .or(r.response_model.clone())
                .or(r.request_model.clone())
                .unwrap_or_default(),
            r.currency.clone().unwrap_or_default(),
            r.gateway_instance.clone(),
        ];
        let v = m.entry(key).or_default();
        v.0 += 1;
        v.1 += i64::from(r.cost_status == "priced");
        v.2 += r.cost_total.unwrap_or_default();
        for (t, x) in v.3.iter_mut().zip(r.tokens) {
            *t += i128::from(x.unwrap_or(0));
        }
    }
    m
}

fn int(v: &Val) -> i128 {
    match v {
        Val::Int(i) => i128::from(*i),
        Val::Text(s) => s.parse().unwrap(),
        Val::Null => panic!("NULL in ledger_rollup"),
    }
}

/// The roll-up table as stored, one grain.
async fn stored_rollup(store: &Store, grain: i64) -> RollupRows {
    let tokens: Vec<String> = tollgate::cost::TokenClass::ALL
        .iter()
        .map(|c| format!("tokens_{}", c.as_str()))
        .collect();
    let rows = store
        .select(
            &format!(
                "SELECT charge_hour, tenant, unattributed_reason, workflow, agent, provider, model, currency, gateway_instance, events, priced, cost_nanos, cost_atto, {} FROM ledger_rollup WHERE grain = $1",
                tokens.join(", ")
            ),
            vec![Val::Int(grain)],
        )
        .await
        .unwrap();
    rows.iter()
        .map(|r| {
            let key = r[..9]
                .iter()
                .map(|v| match v {
                    Val::Int(i) => i.to_string(),
                    Val::Text(s) => s.clone(),
                    Val::Null => panic!("NULL key in ledger_rollup"),
                })
                .collect();
            let cost = Decimal::from_i128_with_scale(int(&r[11]), 9)
                + Decimal::from_i128_with_scale(int(&r[12]), 18);
            let tokens = std::array::from_fn(|k| int(&r[13 + k]));
            (key, (int(&r[9]) as i64, int(&r[10]) as i64, cost, tokens))
        })
        .collect()
}

fn assert_same_rollup(got: &RollupRows, want: &RollupRows, what: &str) {
    assert_eq!(
        got.keys().collect::<Vec<_>>(),
        want.keys().collect::<Vec<_>>(),
        "{what}: roll-up keys"
    );
    for (k, (e, p, c, t)) in want {
        let g = &got[k];
        assert_eq!(
            (g.0, g.1, g.2.normalize(), g.3),
            (*e, *p, c.normalize(), *t),
            "{what}: {k:?}"
        );
    }
}

async fn open(url: &str) -> Store {
    Store::open(&Target::parse(url, &Default::default()).unwrap())
        .await
        .unwrap()
}

const BYS: &[&[Dim]] = &[
    &[Dim::Tenant],
    &[Dim::Tenant, Dim::Workflow, Dim::Day],
    &[Dim::Hour],
    &[Dim::Model, Dim::Provider],
    &[Dim::Agent, Dim::Tenant, Dim::Hour],
    &[Dim::Day],
    &[Dim::Workflow, Dim::Model, Dim::Day, Dim::Agent],
];

/// Ranges with whole days, whole hours and partial hours at either edge, sub-hour ranges,
/// empty ones, the closed month and the month its late events are billed to.
fn ranges(rng: &mut Rng) -> Vec<Range> {
    let nov = Period::parse("2026-11").unwrap();
    let mut out = vec![
        nov.range(),
        nov.next().range(),
        Range {
            from: BASE - DAY,
            to: BASE + 10 * DAY,
        },
        Range {
            from: BASE + 2 * DAY + 13 * HOUR + 1_234_567_890,
            to: BASE + 4 * DAY + 7 * HOUR,
        },
        Range {
            from: BASE + 3 * HOUR,
            to: BASE + 4 * HOUR,
        },
        Range {
            from: BASE + 3 * HOUR + 5,
            to: BASE + 3 * HOUR + HOUR / 2,
        },
        Range {
            from: BASE + 5 * HOUR,
            to: BASE + 5 * HOUR,
        },
    ];
    for _ in 0..10 {
        let a = BASE - 2 * HOUR + rng.below((6 * DAY) as u64) as i64;
        let b = a + rng.below((3 * DAY) as u64) as i64;
        out.push(Range { from: a, to: b });
    }
    out
}

async fn check_reports(store: &Store, events: &[Recorded], rng: &mut Rng, what: &str) {
    for range in ranges(rng) {
        for by in BYS {
            let got = tollgate::ledger::rollup::report(store, range, by)
                .await
                .unwrap();
            let raw = query::report_from_events(store, range, by).await.unwrap();
            let want = expected_report(events, range, by);
            assert_eq!(got, want, "{what}: report {range:?} by {by:?} (roll-up)");
            assert_eq!(raw, want, "{what}: report {range:?} by {by:?} (events)");
        }
    }
}

/// Random events over six days around a month end, written in batches; the month closed;
/// late events for it, re-sends and conflicting re-sends. Reports through the roll-up equal
/// reports over the events and the figures computed here, for every range and grouping;
/// the roll-up table equals its definition, and re-sends leave it unchanged.
async fn rollup_matches_events(url: &str) {
    let store = open(url).await;
    let mut rng = Rng(0x5EED_1234_ABCD_0001);
    let mut events: Vec<Recorded> = Vec::new();
    let mut n = 0u64;
    for _ in 0..4 {
        let batch: Vec<Row> = (0..400)
            .map(|_| {
                n += 1;
                let t = BASE + rng.below((6 * DAY) as u64) as i64;
                random_row(&mut rng, n, t)
            })
            .collect();
        let out = store.write(batch.clone(), Vec::new()).await.unwrap();
        assert_eq!((out.written, out.duplicates, out.conflicts), (400, 0, 0));
        events.extend(batch.into_iter().map(|row| Recorded {
            row,
            adjustment: None,
        }));
    }
    let nov = Period::parse("2026-11").unwrap();
    periods::close(&store, nov).await.unwrap();

    // Late events for the closed November, new December events, and re-sends.
    let before_hourly = stored_rollup(&store, 1).await;
    let before_daily = stored_rollup(&store, 24).await;
    let resent: Vec<Row> = events[..300].iter().map(|e| e.row.clone()).collect();
    let conflicts: Vec<Row> = events[300..350]
        .iter()
        .map(|e| conflicting(&e.row))
        .collect();
    let out = store
        .write([resent.clone(), conflicts.clone()].concat(), Vec::new())
        .await
        .unwrap();
    assert_eq!((out.written, out.duplicates, out.conflicts), (0, 300, 50));
    assert_same_rollup(
        &stored_rollup(&store, 1).await,
        &before_hourly,
        "after re-sends (hourly)",
    );
    assert_same_rollup(
        &stored_rollup(&store, 24).await,
        &before_daily,
        "after re-sends (daily)",
    );

    let mut batch: Vec<Row> = Vec::new();
    for _ in 0..300 {
        n += 1;
        let t = BASE + rng.below((6 * DAY) as u64) as i64;
        batch.push(random_row(&mut rng, n, t));
    }
    // A key repeated within the batch, and re-sends riding along with new events.
    batch.push(batch[0].clone());
    batch.push(conflicting(&batch[1]));
    batch.extend(resent[..20].iter().cloned());
    let out = store.write(batch.clone(), Vec::new()).await.unwrap();
    assert_eq!((out.written, out.duplicates, out.conflicts), (300, 21, 1));
    let dec_start = nov.next().start_ns();
    events.extend(batch[..300].iter().cloned().map(|row| Recorded {
        adjustment: (row.charge_time_ns < dec_start).then(|| ("2026-11".to_string(), dec_start)),
        row,
    }));
    assert!(events.iter().filter(|e| e.adjustment.is_some()).count() > 50);

    assert_same_rollup(
        &stored_rollup(&store, 1).await,
        &expected_rollup(&events, 1),
        "hourly",
    );
    assert_same_rollup(
        &stored_rollup(&store, 24).await,
        &expected_rollup(&events, 24),
        "daily",
    );
    check_reports(&store, &events, &mut rng, url).await;
}

/// A ledger written at schema version 6 (no roll-up) opens at version 7 with the roll-up
/// back-filled from its events; reports equal the figures computed here.
async fn version_6_ledger_back_fills(url: &str) {
    let mut rng = Rng(0xD00D_FEED_0000_0007);
    let rows: Vec<Row> = (1..=900u64)
        .map(|n| {
            let t = BASE + rng.below((5 * DAY) as u64) as i64;
            random_row(&mut rng, n, t)
        })
        .collect();
    {
        let store = open(url).await;
        store.write(rows.clone(), Vec::new()).await.unwrap();
        // What a version-6 ledger is: the same tables without the roll-up.
        store
            .execute("DROP TABLE ledger_rollup", vec![])
            .await
            .unwrap();
        store
            .execute(
                "UPDATE tollgate_ledger_meta SET value = '6' WHERE key = 'schema_version'",
                vec![],
            )
            .await
            .unwrap();
    }
    let store = open(url).await;
    let version = store
        .select(
            "SELECT value FROM tollgate_ledger_meta WHERE key = 'schema_version'",
            vec![],
        )
        .await
        .unwrap();
    assert_eq!(version[0][0], Val::Text("7".into()));
    let events: Vec<Recorded> = rows
        .into_iter()
        .map(|row| Recorded {
            row,
            adjustment: None,
        })
        .collect();
    assert_same_rollup(
        &stored_rollup(&store, 1).await,
        &expected_rollup(&events, 1),
        "back-filled hourly",
    );
    assert_same_rollup(
        &stored_rollup(&store, 24).await,
        &expected_rollup(&events, 24),
        "back-filled daily",
    );
    check_reports(&store, &events, &mut rng, url).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_report_via_rollup_equals_events() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite:{}", dir.path().join("ledger.db").display());
    rollup_matches_events(&url).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_report_via_rollup_equals_events() {
    let Some(url) = common::pg_database("rollup").await else {
        return;
    };
    rollup_matches_events(&url).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_version_6_ledger_migrates_with_back_filled_rollup() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite:{}", dir.path().join("ledger.db").display());
    version_6_ledger_back_fills(&url).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_version_6_ledger_migrates_with_back_filled_rollup() {
    let Some(url) = common::pg_database("rollup_v6").await else {
        return;
    };
    version_6_ledger_back_fills(&url).await;
}
