//! Unit tests of `cost`.

use super::config::parse_attributes_mode;
use super::*;
use crate::config::{Diagnostics, Map};
use opentelemetry_proto::tonic::common::v1::AnyValue;
use std::str::FromStr;

#[test]
fn decimal_to_f64_rounds_like_parsing_the_text() {
    for t in [
        "0",
        "0.1",
        "0.3",
        "-2.5",
        "0.000075",
        "1234567.891011",
        "0.0000000000000000000001",
        "9007199254740993",
        "12345678901234567890.123",
        "0.00012345678901234567890123",
        "79228162514264337593543950335",
    ] {
        let d = Decimal::from_str(t).unwrap();
        assert_eq!(decimal_to_f64(d), t.parse::<f64>().unwrap(), "{t}");
    }
    let mut x: u64 = 7;
    for _ in 0..10_000 {
        x = x
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        let d = Decimal::new((x >> 12) as i64, (x % 19) as u32);
        assert_eq!(
            decimal_to_f64(d),
            d.to_string().parse::<f64>().unwrap(),
            "{d}"
        );
    }
}

const RATES: &str = "version: v1\ncurrency: USD\nrates:\n  - model: m\n    per_million_tokens: { input: \"0.1\", output: \"0.2\", cache_read: \"0.03\" }\n";

fn processor(max_series: usize) -> CostProcessor {
    processor_with(max_series, false)
}

fn processor_with(max_series: usize, compact: bool) -> CostProcessor {
    let table = RateTable::parse(RATES, std::path::Path::new(".")).unwrap();
    let opts = CostOptions {
        rates: PathBuf::from("unused.yaml"),
        reload: false,
        reload_interval: Duration::from_secs(5),
        dedup_window: Duration::from_secs(600),
        dedup_max_entries: 1000,
        max_series,
        metrics_interval: Duration::ZERO,
        max_tokens_per_span: usage::DEFAULT_MAX_TOKENS,
        compact,
    };
    CostProcessor::new(
        "cost",
        opts,
        table,
        &crate::component::telemetry::SelfMetrics::new(),
    )
}

fn kv(k: &str, v: Value) -> KeyValue {
    KeyValue {
        key: k.into(),
        value: Some(AnyValue { value: Some(v) }),
        ..Default::default()
    }
}

fn span(i: u32, tenant: &str, input: i64, output: i64) -> Span {
    let mut id = [0u8; 8];
    id[..4].copy_from_slice(&i.to_be_bytes());
    Span {
        trace_id: vec![7; 16],
        span_id: id.to_vec(),
        start_time_unix_nano: 1_763_900_000_000_000_000,
        attributes: vec![
            kv("gen_ai.provider.name", Value::StringValue("p".into())),
            kv("gen_ai.request.model", Value::StringValue("m".into())),
            kv("gen_ai.usage.input_tokens", Value::IntValue(input)),
            kv("gen_ai.usage.output_tokens", Value::IntValue(output)),
            kv("tollgate.tenant.id", Value::StringValue(tenant.into())),
            kv(
                "tollgate.envelope.status",
                Value::StringValue("valid".into()),
            ),
        ],
        ..Default::default()
    }
}

fn get<'a>(s: &'a Span, k: &str) -> Option<&'a Value> {
    attrs::get(&s.attributes, k)
}

#[test]
fn per_span_costs_sum_exactly_to_tenant_and_grand_totals() {
    let p = processor(1000);
    let table = p.current_table();
    let now = Instant::now();
    let mut per_tenant: BTreeMap<String, Decimal> = BTreeMap::new();
    let mut grand = Decimal::ZERO;
    for i in 0..300u32 {
        let tenant = format!("t{}", i % 7);
        let mut s = span(
            i,
            &tenant,
            1 + (i as i64 * 7919) % 5000,
            (i as i64 * 104729) % 3000,
        );
        p.process_span(&mut s, &table, now)
            .and_then(|o| o.priced)
            .map(|(k, a, b)| p.aggregates.add(k, a, &b));
        let Some(Value::StringValue(exact)) = get(&s, "tollgate.cost.exact") else {
            panic!("not priced");
        };
        let c = Decimal::from_str(exact).unwrap();
        *per_tenant.entry(tenant).or_default() += c;
        grand += c;
    }
    assert_eq!(p.aggregates.by_tenant(), per_tenant);
    assert_eq!(p.aggregates.total(), grand);
    // 0.1 and 0.2 per million never drift as binary floats would.
    assert_eq!(grand, per_tenant.values().copied().sum::<Decimal>());
}

#[test]
fn statuses_and_attributes() {
    let p = processor(1000);
    let table = p.current_table();
    let now = Instant::now();
    let mut s = span(1, "acme", 1000, 100);
    s.attributes
        .push(kv(CALLER_AMOUNT_ATTR, Value::DoubleValue(9.99)));
    s.attributes.push(kv(
        "tollgate.cost.rate_id",
        Value::StringValue("spoofed".into()),
    ));
    let o = p.process_span(&mut s, &table, now).unwrap();
    assert_eq!(o.status, CostStatus::Priced);
    // 1000 × 0.1 + 100 × 0.2, per million = 0.00012
    assert_eq!(
        get(&s, "tollgate.cost.amount"),
        Some(&Value::DoubleValue(0.00012))
    );
    // The caller's figure passes through untouched.
    assert_eq!(get(&s, CALLER_AMOUNT_ATTR), Some(&Value::DoubleValue(9.99)));
    assert_eq!(
        get(&s, "tollgate.cost.exact"),
        Some(&Value::StringValue("0.00012".into()))
    );
    assert_eq!(
        get(&s, "tollgate.cost.caller_reported"),
        Some(&Value::DoubleValue(9.99))
    );
    assert_eq!(
        get(&s, "tollgate.cost.rate_id"),
        Some(&Value::StringValue("rates[0]".into()))
    );
    assert_eq!(
        get(&s, "tollgate.cost.rates_version"),
        Some(&Value::StringValue("v1".into()))
    );
    // The same span again: duplicate, no cost.
    let mut again = span(1, "acme", 1000, 100);
    let o = p.process_span(&mut again, &table, now).unwrap();
    assert_eq!(o.status, CostStatus::Duplicate);
    assert!(o.priced.is_none());
    assert_eq!(get(&again, "tollgate.cost.amount"), None);
    // A retry (new span id, same operation) is priced.
    let mut retry = span(2, "acme", 1000, 100);
    assert_eq!(
        p.process_span(&mut retry, &table, now).unwrap().status,
        CostStatus::Priced
    );
    let mut unknown = span(3, "acme", 1, 1);
    unknown.attributes[1] = kv("gen_ai.request.model", Value::StringValue("zz".into()));
    assert_eq!(
        p.process_span(&mut unknown, &table, now).unwrap().status,
        CostStatus::UnpricedModel
    );
    let mut bad = span(4, "acme", 10, 1);
    bad.attributes.push(kv(
        "gen_ai.usage.cache_read.input_tokens",
        Value::IntValue(11),
    ));
    assert_eq!(
        p.process_span(&mut bad, &table, now).unwrap().status,
        CostStatus::InvalidUsage
    );
    assert!(
        matches!(get(&bad, "tollgate.cost.reason"), Some(Value::StringValue(r)) if r.contains("exceed input_tokens"))
    );
    let mut none = Span {
        attributes: vec![kv(
            "gen_ai.operation.name",
            Value::StringValue("execute_tool".into()),
        )],
        ..Default::default()
    };
    assert_eq!(
        p.process_span(&mut none, &table, now).unwrap().status,
        CostStatus::Rollup
    );
    let mut plain = Span::default();
    assert!(p.process_span(&mut plain, &table, now).is_none());
}

#[test]
fn series_are_bounded_and_verified_tenants_keep_their_label() {
    // max_series 20: 2 reserved for unattributed spend, 18 for verified tenants.
    let p = processor(20);
    let table = p.current_table();
    let now = Instant::now();
    let add = |s: &mut Span| {
        let (k, a, b) = p.process_span(s, &table, now).unwrap().priced.unwrap();
        u64::from(p.aggregates.add(k, a, &b))
    };
    let mut folded = 0;
    // Unattributed spans with 30 distinct providers fill only their reserved share.
    for i in 0..30u32 {
        let mut s = span(1000 + i, "x", 10, 10);
        s.attributes.retain(|kv| !kv.key.starts_with("tollgate."));
        s.attributes[0] = kv("gen_ai.provider.name", Value::StringValue(format!("p{i}")));
        folded += add(&mut s);
    }
    assert_eq!(folded, 28);
    // 18 verified tenants still get their own series, a 19th keeps its tenant label.
    for i in 0..19u32 {
        folded += add(&mut span(i, &format!("t{i}"), 10, 10));
    }
    assert_eq!(folded, 29);
    let snap = p.aggregates.snapshot();
    for i in 0..19 {
        assert!(snap.keys().any(|k| k.tenant == format!("t{i}")), "t{i}");
    }
    assert!(snap
        .keys()
        .any(|k| k.tenant == "t18" && k.workflow == OVERFLOW_TENANT));
    assert!(snap.keys().any(|k| k.tenant == UNATTRIBUTED
        && k.provider == OVERFLOW_TENANT
        && k.model == OVERFLOW_TENANT));
    // 2 unattributed + 1 unattributed fold + 18 + 1 folded tenant series.
    assert_eq!(snap.len(), 22);
}

/// The tollgate.cost.* keys on a span, in order.
fn cost_keys(s: &Span) -> Vec<&str> {
    s.attributes
        .iter()
        .map(|kv| kv.key.as_str())
        .filter(|k| k.starts_with("tollgate.cost."))
        .collect()
}

#[test]
fn compact_mode_writes_only_amount_currency_version_and_status() {
    let now = Instant::now();
    let full = processor_with(100, false);
    let compact = processor_with(100, true);
    let table = full.current_table();
    let mut a = span(1, "acme", 1000, 100);
    let mut b = span(1, "acme", 1000, 100);
    assert_eq!(
        full.process_span(&mut a, &table, now).unwrap().status,
        CostStatus::Priced
    );
    assert_eq!(
        compact.process_span(&mut b, &table, now).unwrap().status,
        CostStatus::Priced
    );
    assert_eq!(
        cost_keys(&a),
        [
            "tollgate.cost.amount",
            "tollgate.cost.input",
            "tollgate.cost.output",
            "tollgate.cost.cache_read",
            "tollgate.cost.cache_write",
            "tollgate.cost.reasoning",
            "tollgate.cost.exact",
            "tollgate.cost.currency",
            "tollgate.cost.rates_version",
            "tollgate.cost.rate_id",
            "tollgate.cost.status",
            // The test span has no operation name: priced, with a reason in full mode.
            "tollgate.cost.reason",
        ]
    );
    assert_eq!(
        cost_keys(&b),
        [
            "tollgate.cost.amount",
            "tollgate.cost.currency",
            "tollgate.cost.rates_version",
            "tollgate.cost.status",
        ]
    );
    // The same amount: 1000 × 0.1 / 1e6 + 100 × 0.2 / 1e6 = 0.00012.
    let amount = |s: &Span| match attrs::get(&s.attributes, "tollgate.cost.amount") {
        Some(Value::DoubleValue(d)) => *d,
        other => panic!("{other:?}"),
    };
    assert_eq!(amount(&a), 0.00012);
    assert_eq!(amount(&b), 0.00012);
    assert_eq!(
        attrs::get_str(&b.attributes, "tollgate.cost.currency"),
        Some("USD")
    );
    // A span that is not priced still says why (rare, and the ledger records it).
    let mut c = span(2, "acme", -1, 100);
    assert_eq!(
        compact.process_span(&mut c, &table, now).unwrap().status,
        CostStatus::InvalidUsage
    );
    assert_eq!(
        cost_keys(&c),
        ["tollgate.cost.status", "tollgate.cost.reason"]
    );
}

#[test]
fn attributes_mode_is_parsed_with_its_path() {
    let parse_one = |yaml: &str| {
        let docs = yaml_rust2::YamlLoader::load_from_str(yaml).unwrap();
        let mut d = Diagnostics::default();
        let m = Map::new("processors.cost", &docs[0], &mut d).unwrap();
        (parse_attributes_mode(&m, &mut d), d)
    };
    assert!(!parse_one("rates: x\n").0);
    assert!(!parse_one("attributes: full\n").0);
    assert!(parse_one("attributes: compact\n").0);
    let (_, d) = parse_one("attributes: short\n");
    assert_eq!(
        d.problems()[0].to_string(),
        "processors.cost.attributes: unknown attributes mode \"short\": use full or compact"
    );
}
