//! FOCUS export, reconciliation against an invoice, and closed periods, over the real
//! binary: a ledger filled through the real gateway by the Python OTel SDK, and a larger
//! November fixture written through `Store::write` (SQLite and PostgreSQL). The FOCUS 1.0
//! export is checked by the FinOps Foundation's `focus-validator`; every expected figure is
//! computed here by hand from the rates.

mod common;

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Command, Stdio};
use std::str::FromStr;
use std::time::Duration;

use common::*;
use rust_decimal::Decimal;
use sha2::{Digest, Sha256};
use tollgate::ledger::row::{source_digest, Row};
use tollgate::ledger::store::Target;
use tollgate::ledger::Store;

fn d(s: &str) -> Decimal {
    Decimal::from_str(s).unwrap()
}

/// tokens × price-per-million / 1 000 000, by hand.
fn cost(tokens: i64, per_million: &str) -> Decimal {
    Decimal::from(tokens) * d(per_million) / Decimal::from(1_000_000)
}

/// (input, output) price per million tokens of the fixture's rate table.
fn prices(model: &str) -> (&'static str, &'static str) {
    match model {
        "gpt-4o" => ("2.50", "10.00"),
        "o1" => ("15.00", "60.00"),
        "claude-sonnet-4-5" => ("3.00", "15.00"),
        other => panic!("no price for {other}"),
    }
}

/// 2026-11-01T00:00:00Z in Unix seconds.
const NOV_1: i64 = 1_793_491_200;

fn nov(day: i64, hour: i64) -> i64 {
    (NOV_1 + (day - 1) * 86_400 + hour * 3600) * 1_000_000_000
}

/// One billable event of the fixture.
#[derive(Clone, Copy)]
struct Ev {
    day: i64,
    tenant: Option<&'static str>,
    workflow: &'static str,
    provider: &'static str,
    model: &'static str,
    input: i64,
    output: i64,
}

impl Ev {
    fn cost(&self) -> Decimal {
        let (pi, po) = prices(self.model);
        cost(self.input, pi) + cost(self.output, po)
    }
}

fn row(id: usize, e: &Ev, charge_ns: i64) -> Row {
    let (pi, po) = prices(e.model);
    let ci = cost(e.input, pi);
    let co = cost(e.output, po);
    let mut r = Row {
        trace_id: format!("{:032x}", 0xf0c0_0000u64 + id as u64),
        span_id: format!("{:016x}", 0x5000u64 + id as u64),
        k8s_cluster: None,
        k8s_namespace: None,
        k8s_pod: None,
        k8s_controller: None,
        start_time_ns: charge_ns,
        charge_time_ns: charge_ns,
        tenant_id: e.tenant.map(str::to_string),
        workflow_id: Some(e.workflow.to_string()),
        originator_id: None,
        operation_id: None,
        issuance_id: None,
        envelope_status: if e.tenant.is_some() {
            "valid"
        } else {
            "missing"
        }
        .into(),
        envelope_override: None,
        key_id: None,
        lineage_depth: None,
        lineage_kinds: None,
        envelope_token: None,
        operation_name: Some("chat".into()),
        provider: Some(e.provider.into()),
        request_model: Some(e.model.into()),
        response_model: None,
        agent_name: None,
        cost_status: "priced".into(),
        cost_reason: None,
        rate_id: Some(format!(
            "rates[{}]",
            ["gpt-4o", "o1", "claude-sonnet-4-5"]
                .iter()
                .position(|m| *m == e.model)
                .unwrap()
        )),
        rate_model: Some(e.model.into()),
        rates_version: Some("fixture-2026-11".into()),
        rates_digest: Some("ab".repeat(32)),
        currency: Some("USD".into()),
        usage: std::array::from_fn(|i| [Some(e.input), Some(e.output)].get(i).copied().flatten()),
        tokens: std::array::from_fn(|i| Some([e.input, e.output].get(i).copied().unwrap_or(0))),
        unit_price: std::array::from_fn(|i| [Some(d(pi)), Some(d(po))].get(i).cloned().flatten()),
        cost: std::array::from_fn(|i| [Some(ci), Some(co)].get(i).cloned().flatten()),
        cost_total: Some(ci + co),
        caller_cost: None,
        caller_currency: None,
        caller_source: None,
        service_name: Some("fixture".into()),
        gateway_instance: "fixture".into(),
        ingest_time_ns: charge_ns,
        source_digest: String::new(),
    };
    r.source_digest = source_digest(&r);
    r
}

const ACME: Option<&str> = Some("acme");
const GLOBEX: Option<&str> = Some("globex");

/// November: day 1 gpt-4o (acme, globex, unattributed) and o1 (acme, globex); day 2 gpt-4o
/// with only unattributed usage; day 3 gpt-4o (acme, globex) and claude (acme, never
/// invoiced by the FOCUS invoice below).
fn fixture() -> Vec<Ev> {
    let ev = |day, tenant, workflow, provider, model, input, output| Ev {
        day,
        tenant,
        workflow,
        provider,
        model,
        input,
        output,
    };
    vec![
        // day 1, gpt-4o: acme 2.50 + 1.00 = 3.50, globex 1.00 + 0.50 = 1.50, unattributed 0.50
        ev(1, ACME, "support", "openai", "gpt-4o", 600_000, 60_000),
        ev(1, ACME, "support", "openai", "gpt-4o", 400_000, 40_000),
        ev(1, GLOBEX, "search", "openai", "gpt-4o", 400_000, 50_000),
        ev(1, None, "", "openai", "gpt-4o", 200_000, 0),
        // day 1, o1: acme 1.50 + 0.60 = 2.10, globex 1.50
        ev(1, ACME, "research", "openai", "o1", 100_000, 10_000),
        ev(1, GLOBEX, "search", "openai", "o1", 100_000, 0),
        // day 2, gpt-4o: only unattributed, 1.00
        ev(2, None, "", "openai", "gpt-4o", 400_000, 0),
        // day 3, gpt-4o: acme 2.00, globex 1.00; claude: acme 0.30
        ev(3, ACME, "support", "openai", "gpt-4o", 800_000, 0),
        ev(3, GLOBEX, "search", "openai", "gpt-4o", 400_000, 0),
        ev(
            3,
            ACME,
            "support",
            "anthropic",
            "claude-sonnet-4-5",
            100_000,
            0,
        ),
    ]
}

async fn open_store(url: &str) -> Store {
    Store::open(&Target::parse(url, &Default::default()).unwrap())
        .await
        .unwrap()
}

/// `tollgate ledger ARGS…`: (exit code, stdout, stderr).
fn ledger_cli(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(bin())
        .arg("ledger")
        .args(args)
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn ok(args: &[&str]) -> String {
    let (code, out, err) = ledger_cli(args);
    assert_eq!(code, 0, "tollgate ledger {args:?}: {out}{err}");
    out
}

fn header(text: &str) -> Vec<String> {
    text.lines()
        .next()
        .unwrap()
        .split(',')
        .map(str::to_string)
        .collect()
}

const POLICY: &str = "# Finance's reconciliation policy for the AI providers.\nid: finance-ai\nversion: \"2026.11-1\"\ntolerance:\n  default: \"5%\"\n  providers:\n    anthropic: \"1%\"\nunattributed: line\nwithin_tolerance: pro_rata\nabove_tolerance: report\nrounding_unit: \"0.01\"\ninvoice:\n  provider_column: ProviderName\n  model_column: SkuMeter\n  providers:\n    Microsoft: openai\n  models:\n    \"gpt-4o-0806 Input global Tokens\": gpt-4o\n    \"gpt-4o-0806 Output global Tokens\": gpt-4o\n    \"o1-1217 Input global Tokens\": o1\n    \"o1-1217 Output global Tokens\": o1\n    \"gpt-4o-mini-0718 Input global Tokens\": gpt-4o-mini\n";

/// An invoice as Azure's FOCUS 1.0 cost export writes it (the columns of the spec, in its
/// order, a subset of rows): one row per day, meter and token class.
fn focus_invoice() -> (String, Decimal) {
    let head = "AvailabilityZone,BilledCost,BillingAccountId,BillingAccountName,BillingAccountType,BillingCurrency,BillingPeriodEnd,BillingPeriodStart,ChargeCategory,ChargeClass,ChargeDescription,ChargeFrequency,ChargePeriodEnd,ChargePeriodStart,CommitmentDiscountCategory,CommitmentDiscountId,CommitmentDiscountName,CommitmentDiscountStatus,CommitmentDiscountType,ConsumedQuantity,ConsumedUnit,ContractedCost,ContractedUnitPrice,EffectiveCost,InvoiceIssuerName,ListCost,ListUnitPrice,PricingCategory,PricingQuantity,PricingUnit,ProviderName,PublisherName,RegionId,RegionName,ResourceId,ResourceName,ResourceType,ServiceCategory,ServiceName,SkuId,SkuMeter,SkuPriceId,SubAccountId,SubAccountName,SubAccountType,Tags";
    // (day, meter, quantity in tokens, cost)
    let lines: [(i64, &str, i64, &str); 7] = [
        // day 1 gpt-4o: 1 600 000 input = 4.00, 150 000 output = 1.50: exactly the ledger's 5.50
        (1, "gpt-4o-0806 Input global Tokens", 1_600_000, "4.00"),
        (1, "gpt-4o-0806 Output global Tokens", 150_000, "1.50"),
        // day 1 o1: ledger 3.60, invoice 3.71 (+3.06 %, within 5 %)
        (1, "o1-1217 Input global Tokens", 200_000, "3.11"),
        (1, "o1-1217 Output global Tokens", 10_000, "0.60"),
        // day 1 gpt-4o-mini: never seen by tollgate
        (1, "gpt-4o-mini-0718 Input global Tokens", 2_800_000, "0.42"),
        // day 2 gpt-4o: only unattributed usage, 1.00
        (2, "gpt-4o-0806 Input global Tokens", 400_000, "1.00"),
        // day 3 gpt-4o: ledger 3.00, invoice 3.60 (+20 %, above 5 %)
        (3, "gpt-4o-0806 Input global Tokens", 1_200_000, "3.60"),
    ];
    let mut s = format!("{head}\n");
    let mut total = Decimal::ZERO;
    for (day, meter, qty, c) in lines {
        total += d(c);
        let start = format!("2026-11-{day:02}T00:00:00Z");
        let end = format!("2026-11-{:02}T00:00:00Z", day + 1);
        s.push_str(&format!(
            ",{c},/billingAccounts/8611537,Contoso,Billing Account,USD,2026-12-01T00:00:00Z,2026-11-01T00:00:00Z,Usage,,{meter},Usage-Based,{end},{start},,,,,,{qty},Tokens,{c},,{c},Microsoft,{c},,Standard,{},1000000 Tokens,Microsoft,Microsoft,eastus,East US,/subscriptions/x/resourceGroups/ai/providers/Microsoft.CognitiveServices/accounts/contoso-aoai,contoso-aoai,Cognitive Services,AI and Machine Learning,Azure OpenAI,DZH318Z0BQPS,{meter},DZH318Z0BQPS/0001,/subscriptions/x,Contoso Prod,Subscription,{{}}\n",
            Decimal::from(qty) / Decimal::from(1_000_000)
        ));
    }
    (s, total)
}

/// The November story on one ledger: export (1.0 through focus-validator, 1.2 against the
/// spec's columns), reconcile against a FOCUS invoice and a plain one, close, late data.
async fn november(url: &str, dir: &Path) {
    let store = open_store(url).await;
    let evs = fixture();
    let rows: Vec<Row> = evs
        .iter()
        .enumerate()
        .map(|(i, e)| row(i, e, nov(e.day, 9 + i as i64 % 5)))
        .collect();
    let out = store.write(rows, vec![]).await.unwrap();
    assert_eq!(out.written, evs.len() as u64);
    let total: Decimal = evs.iter().map(Ev::cost).sum();
    assert_eq!(total, d("13.40"), "the fixture's arithmetic");
    let nov_range = [
        "--ledger",
        url,
        "--from",
        "2026-11-01",
        "--to",
        "2026-12-01",
    ];

    // report total, for the export to agree with.
    let mut args = nov_range.to_vec();
    args.splice(0..0, ["report"]);
    args.extend(["--format", "json"]);
    let v: serde_json::Value = serde_json::from_str(&ok(&args)).unwrap();
    assert_eq!(v["totals"][0]["cost"], total.normalize().to_string());

    // FOCUS 1.0: through focus-validator; BilledCost sums to the report total.
    let billing = dir.join("billing.yaml");
    std::fs::write(
        &billing,
        "billing:\n  account_id: acct-4711\n  account_name: Initech AI platform\n  invoice_issuer: Initech FinOps\n  services:\n    openai: OpenAI API\n    anthropic: Anthropic API\n",
    )
    .unwrap();
    let f10 = dir.join("focus-1.0.csv");
    let (f10_s, billing_s) = (f10.display().to_string(), billing.display().to_string());
    let mut args = vec!["export"];
    args.extend(nov_range);
    args.extend([
        "--format",
        "focus",
        "--focus-version",
        "1.0",
        "--billing",
        &billing_s,
        "--out",
        &f10_s,
    ]);
    let said = ok(&args);
    assert!(said.contains("BilledCost total: USD 13.4"), "{said}");
    let text10 = std::fs::read_to_string(&f10).unwrap();
    let rows10 = csv_maps(&text10);
    let billed: Decimal = rows10.iter().map(|r| d(&r["BilledCost"])).sum();
    assert_eq!(billed, total);
    assert_eq!(ok(&args), said, "repeatable");
    assert_eq!(
        std::fs::read_to_string(&f10).unwrap(),
        text10,
        "byte-identical"
    );
    let h10 = header(&text10);
    for c in [
        "ProviderName",
        "PublisherName",
        "InvoiceIssuerName",
        "ResourceId",
        "Tags",
    ] {
        assert!(h10.contains(&c.to_string()), "{c} in {h10:?}");
    }
    assert!(
        !h10.contains(&"SkuMeter".to_string()),
        "1.0 has no SkuMeter"
    );
    focus_validator(&f10);

    // One row per (day, tenant, workflow, provider, model, token class): day 1 acme gpt-4o
    // input is two events, 600 000 + 400 000 tokens at 2.50 = 2.50.
    let acme_in: Vec<_> = rows10
        .iter()
        .filter(|r| {
            r["SubAccountId"] == "acme"
                && r["x_Model"] == "gpt-4o"
                && r["x_TokenClass"] == "input"
                && r["ChargePeriodStart"] == "2026-11-01T00:00:00Z"
        })
        .collect();
    assert_eq!(acme_in.len(), 1, "{acme_in:?}");
    let r = acme_in[0];
    assert_eq!(d(&r["BilledCost"]), cost(1_000_000, "2.50"));
    assert_eq!(r["ConsumedQuantity"], "1000000.0");
    assert_eq!(r["ConsumedUnit"], "Tokens");
    assert_eq!(r["PricingQuantity"], "1.0");
    assert_eq!(r["PricingUnit"], "1000000 Tokens");
    assert_eq!(d(&r["ListUnitPrice"]), d("2.50"));
    assert_eq!(r["ListCost"], r["BilledCost"]);
    assert_eq!(r["EffectiveCost"], r["BilledCost"]);
    assert_eq!(r["ContractedCost"], r["BilledCost"]);
    assert_eq!(r["ChargeCategory"], "Usage");
    assert_eq!(r["ChargeClass"], "");
    assert_eq!(r["ChargePeriodEnd"], "2026-11-02T00:00:00Z");
    assert_eq!(r["BillingPeriodStart"], "2026-11-01T00:00:00Z");
    assert_eq!(r["BillingPeriodEnd"], "2026-12-01T00:00:00Z");
    assert_eq!(r["BillingCurrency"], "USD");
    assert_eq!(r["BillingAccountId"], "acct-4711");
    assert_eq!(r["BillingAccountName"], "Initech AI platform");
    assert_eq!(r["InvoiceIssuerName"], "Initech FinOps");
    assert_eq!(r["ServiceName"], "OpenAI API");
    assert_eq!(r["ServiceCategory"], "AI and Machine Learning");
    assert_eq!(r["ProviderName"], "openai");
    assert_eq!(r["SkuId"], "openai/gpt-4o");
    assert_eq!(r["SkuPriceId"], "fixture-2026-11/rates[0]/input");
    assert_eq!(r["x_TenantId"], "acme");
    assert_eq!(r["x_RatesVersion"], "fixture-2026-11");
    let tags: serde_json::Value = serde_json::from_str(&r["Tags"]).unwrap();
    assert_eq!(
        tags,
        serde_json::json!({"tollgate.tenant": "acme", "tollgate.workflow": "support", "tollgate.envelope_status": "valid"})
    );
    // acme's share of day 1 gpt-4o (5.50): 2.50 / 5.50.
    assert_eq!(
        d(&r["x_AttributedShare"]),
        (d("2.50") / d("5.50")).round_dp(10)
    );
    // The unattributed bucket has its own rows, never a tenant's.
    let un: Decimal = rows10
        .iter()
        .filter(|r| r["SubAccountId"] == "__unattributed__")
        .map(|r| d(&r["BilledCost"]))
        .sum();
    assert_eq!(un, d("0.50") + d("1.00"));
    // By hand, per day: day 1 gpt-4o acme in+out, globex in+out, unattributed in (5); o1
    // acme in+out, globex in (3); day 2 unattributed in (1); day 3 acme, globex, claude in (3).
    assert_eq!(rows10.len(), 12, "{text10}");

    // FOCUS 1.2 (the default): 1.1/1.2 columns, meters by token class.
    let f12 = dir.join("focus-1.2.csv");
    let f12_s = f12.display().to_string();
    let mut args = vec!["export"];
    args.extend(nov_range);
    args.extend([
        "--billing-account-id",
        "acct-4711",
        "--granularity",
        "hour",
        "--out",
        &f12_s,
    ]);
    ok(&args);
    let text12 = std::fs::read_to_string(&f12).unwrap();
    let h12 = header(&text12);
    for c in [
        "BillingAccountType",
        "CapacityReservationId",
        "CapacityReservationStatus",
        "CommitmentDiscountQuantity",
        "CommitmentDiscountUnit",
        "InvoiceId",
        "PricingCurrency",
        "PricingCurrencyContractedUnitPrice",
        "PricingCurrencyEffectiveCost",
        "PricingCurrencyListUnitPrice",
        "ServiceSubcategory",
        "SkuMeter",
        "SkuPriceDetails",
        "SubAccountType",
    ] {
        assert!(h12.contains(&c.to_string()), "{c} in {h12:?}");
    }
    let spec: Vec<&String> = h12.iter().filter(|c| !c.starts_with("x_")).collect();
    let mut sorted = spec.clone();
    sorted.sort();
    assert_eq!(
        spec, sorted,
        "FOCUS columns in the spec's (alphabetical) order"
    );
    assert_eq!(spec.len(), 57, "FOCUS 1.2 has 57 columns");
    let rows12 = csv_maps(&text12);
    assert_eq!(
        rows12.iter().map(|r| d(&r["BilledCost"])).sum::<Decimal>(),
        total
    );
    let meters: std::collections::BTreeSet<&str> =
        rows12.iter().map(|r| r["SkuMeter"].as_str()).collect();
    assert_eq!(
        meters.into_iter().collect::<Vec<_>>(),
        vec!["Input Tokens", "Output Tokens"]
    );
    for r in &rows12 {
        assert_eq!(r["ServiceSubcategory"], "Generative AI");
        assert_eq!(r["PricingCurrency"], "USD");
        assert_eq!(r["PricingCurrencyEffectiveCost"], r["BilledCost"]);
        assert_eq!(r["BillingAccountName"], "acct-4711", "defaults to the id");
        // Hourly: the charge period is one hour.
        let s = time::OffsetDateTime::parse(
            &r["ChargePeriodStart"],
            &time::format_description::well_known::Rfc3339,
        )
        .unwrap();
        let e = time::OffsetDateTime::parse(
            &r["ChargePeriodEnd"],
            &time::format_description::well_known::Rfc3339,
        )
        .unwrap();
        assert_eq!((e - s).whole_seconds(), 3600);
    }
    // An export without a billing account is refused, naming the setting.
    let mut args = vec!["export"];
    args.extend(nov_range);
    let (code, _, err) = ledger_cli(&args);
    assert_eq!(code, 2);
    assert!(err.contains("billing.account_id: required"), "{err}");

    // Reconciliation against the FOCUS invoice.
    let (invoice, invoice_total) = focus_invoice();
    assert_eq!(invoice_total, d("14.23"));
    let inv = dir.join("invoice-focus.csv");
    std::fs::write(&inv, &invoice).unwrap();
    let pol = dir.join("policy.yaml");
    std::fs::write(&pol, POLICY).unwrap();
    let pol_sha: String = Sha256::digest(POLICY.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    let (inv_s, pol_s) = (inv.display().to_string(), pol.display().to_string());
    let out1 = dir.join("recon-1");
    let out1_s = out1.display().to_string();
    let mut args = vec!["reconcile"];
    args.extend(nov_range);
    args.extend(["--invoice", &inv_s, "--policy", &pol_s, "--out", &out1_s]);
    let summary = ok(&args);
    assert!(
        summary.contains(&format!(
            "Policy: `finance-ai` version `2026.11-1`, sha256 `{pol_sha}`"
        )),
        "{summary}"
    );
    let statement = std::fs::read_to_string(out1.join("statement.csv")).unwrap();
    let drift = std::fs::read_to_string(out1.join("drift.csv")).unwrap();
    let unmatched = std::fs::read_to_string(out1.join("unmatched.csv")).unwrap();
    for (name, text) in [
        ("statement", &statement),
        ("drift", &drift),
        ("unmatched", &unmatched),
    ] {
        for r in csv_maps(text) {
            assert_eq!(
                (
                    r["policy_id"].as_str(),
                    r["policy_version"].as_str(),
                    r["policy_sha256"].as_str()
                ),
                ("finance-ai", "2026.11-1", pol_sha.as_str()),
                "{name}"
            );
        }
    }
    // Settled by hand: day 1 gpt-4o exact (acme 3.50, globex 1.50, unattributed 0.50);
    // day 1 o1 within tolerance, 3.71 pro rata over 2.10 : 1.50 (acme 2.164166…, globex
    // 1.545833…); day 2 unattributed 1.00; day 3 above tolerance: tenants pay their computed
    // 2.00 and 1.00, the 0.60 difference is reported on __drift__; gpt-4o-mini (0.42) was
    // never seen: __unmatched__. Exact: acme 7.664166…, globex 4.045833…; rounded down to the
    // cent the lines sum to 14.22, and the one cent left goes to the largest remainder,
    // globex (0.005833… > acme's 0.004166…).
    let settled: BTreeMap<String, String> = csv_maps(&statement)
        .into_iter()
        .map(|r| (r["line"].clone(), r["settled"].clone()))
        .collect();
    let want: BTreeMap<String, String> = [
        ("__drift__", "0.6"),
        ("__unattributed__", "1.5"),
        ("__unmatched__", "0.42"),
        ("acme", "7.66"),
        ("globex", "4.05"),
    ]
    .into_iter()
    .map(|(a, b)| (a.to_string(), b.to_string()))
    .collect();
    assert_eq!(settled, want, "{statement}");
    let sum: Decimal = settled.values().map(|v| d(v)).sum();
    assert_eq!(
        sum, invoice_total,
        "the statement sums to the invoice exactly"
    );
    // The drift table: one line per key with its status.
    let status: BTreeMap<(String, String), String> = csv_maps(&drift)
        .into_iter()
        .map(|r| ((r["day"].clone(), r["model"].clone()), r["status"].clone()))
        .collect();
    let key = |a: &str, b: &str| (a.to_string(), b.to_string());
    assert_eq!(status[&key("2026-11-01", "gpt-4o")], "exact");
    assert_eq!(status[&key("2026-11-01", "o1")], "within_tolerance");
    assert_eq!(status[&key("2026-11-01", "gpt-4o-mini")], "invoiced_only");
    assert_eq!(status[&key("2026-11-02", "gpt-4o")], "exact");
    assert_eq!(status[&key("2026-11-03", "gpt-4o")], "above_tolerance");
    assert_eq!(
        status[&key("2026-11-03", "claude-sonnet-4-5")],
        "ledger_only"
    );
    let above = csv_maps(&drift)
        .into_iter()
        .find(|r| r["status"] == "above_tolerance")
        .unwrap();
    assert_eq!(d(&above["invoiced"]), d("3.60"));
    assert_eq!(d(&above["computed"]), d("3.00"));
    assert_eq!(d(&above["difference"]), d("0.60"));
    assert_eq!(d(&above["ratio"]), d("1.2"));
    assert_eq!(d(&above["drift_percent"]), d("20"));
    assert_eq!(above["treatment"], "reported");
    assert!(
        above["top_tenants"].starts_with("acme=2 (66.67%); globex=1 (33.33%)"),
        "{above:?}"
    );
    let within = csv_maps(&drift)
        .into_iter()
        .find(|r| r["status"] == "within_tolerance")
        .unwrap();
    // (3.71 − 3.60) / 3.60 = 3.0556 %.
    assert_eq!(d(&within["drift_percent"]), d("3.0556"));
    // Unmatched on both sides.
    let un = csv_maps(&unmatched);
    assert_eq!(un.len(), 2, "{unmatched}");
    assert_eq!(
        (
            un[0]["side"].as_str(),
            un[0]["model"].as_str(),
            un[0]["cost"].as_str()
        ),
        ("invoice", "gpt-4o-mini", "0.42")
    );
    assert_eq!(
        (
            un[1]["side"].as_str(),
            un[1]["model"].as_str(),
            un[1]["cost"].as_str()
        ),
        ("ledger", "claude-sonnet-4-5", "0.3")
    );
    // Byte-identical when repeated.
    let out2 = dir.join("recon-2");
    let out2_s = out2.display().to_string();
    let mut args2 = vec!["reconcile"];
    args2.extend(nov_range);
    args2.extend(["--invoice", &inv_s, "--policy", &pol_s, "--out", &out2_s]);
    assert_eq!(ok(&args2), summary);
    for f in ["drift.csv", "statement.csv", "unmatched.csv", "summary.md"] {
        assert_eq!(
            std::fs::read(out1.join(f)).unwrap(),
            std::fs::read(out2.join(f)).unwrap(),
            "{f}"
        );
    }

    // Another policy: unattributed pro rata, differences within tolerance absorbed. By
    // hand: day 1 gpt-4o's 0.50 unattributed goes 3.50 : 1.50 to acme (+0.35) and globex
    // (+0.15); day 2 has no attributed tenant, so its 1.00 stays unattributed; o1's 0.11 is
    // absorbed on __drift__ (tenants pay 2.10 and 1.50). acme 3.85 + 2.10 + 2.00 = 7.95;
    // globex 1.65 + 1.50 + 1.00 = 4.15; drift 0.11 + 0.60 = 0.71.
    let pol2 = dir.join("policy-2.yaml");
    let text2 = POLICY
        .replace("unattributed: line", "unattributed: pro_rata")
        .replace("within_tolerance: pro_rata", "within_tolerance: absorb")
        .replace("version: \"2026.11-1\"", "version: \"2026.11-2\"");
    std::fs::write(&pol2, &text2).unwrap();
    let pol2_s = pol2.display().to_string();
    let out3 = dir.join("recon-3");
    let out3_s = out3.display().to_string();
    let mut args = vec!["reconcile"];
    args.extend(nov_range);
    args.extend(["--invoice", &inv_s, "--policy", &pol2_s, "--out", &out3_s]);
    ok(&args);
    let settled: BTreeMap<String, Decimal> =
        csv_maps(&std::fs::read_to_string(out3.join("statement.csv")).unwrap())
            .into_iter()
            .map(|r| (r["line"].clone(), d(&r["settled"])))
            .collect();
    assert_eq!(settled["acme"], d("7.95"));
    assert_eq!(settled["globex"], d("4.15"));
    assert_eq!(settled["__unattributed__"], d("1.00"));
    assert_eq!(settled["__drift__"], d("0.71"));
    assert_eq!(settled["__unmatched__"], d("0.42"));
    assert_eq!(settled.values().copied().sum::<Decimal>(), invoice_total);

    // A plain invoice for a provider billed directly: anthropic, exact.
    let plain = dir.join("invoice-anthropic.csv");
    std::fs::write(
        &plain,
        "date,provider,model,cost,currency,token_class\n2026-11-03,anthropic,claude-sonnet-4-5,0.30,USD,input\n",
    )
    .unwrap();
    let plain_s = plain.display().to_string();
    let out4 = dir.join("recon-4");
    let out4_s = out4.display().to_string();
    let mut args = vec!["reconcile"];
    args.extend(nov_range);
    args.extend(["--invoice", &plain_s, "--policy", &pol_s, "--out", &out4_s]);
    let s4 = ok(&args);
    assert!(s4.contains("(plain CSV)"), "{s4}");
    let st = csv_maps(&std::fs::read_to_string(out4.join("statement.csv")).unwrap());
    assert_eq!(st.len(), 1);
    assert_eq!(
        (st[0]["line"].as_str(), st[0]["settled"].as_str()),
        ("acme", "0.3")
    );

    // Close November; a late event for it then belongs to December as an adjustment.
    let mut args = vec!["report"];
    args.extend(nov_range);
    args.extend(["--by", "tenant,model", "--format", "csv"]);
    let before = ok(&args);
    let closed = ok(&["close", "--ledger", url, "--period", "2026-11"]);
    let digest_before: String = Sha256::digest(
        ok(&{
            let mut a = vec!["report"];
            a.extend(nov_range);
            a.extend(["--by", "tenant", "--format", "csv"]);
            a
        })
        .as_bytes(),
    )
    .iter()
    .map(|b| format!("{b:02x}"))
    .collect();
    assert!(
        closed.starts_with(&format!(
            "closed 2026-11: 10 events, totals: USD 13.4, statement sha256 {digest_before}"
        )),
        "{closed}"
    );
    let late = Ev {
        day: 2,
        tenant: ACME,
        workflow: "support",
        provider: "openai",
        model: "gpt-4o",
        input: 400_000,
        output: 0,
    };
    // A fresh handle (as another gateway would be): its cache learns of the close.
    let writer = open_store(url).await;
    let out = writer
        .write(vec![row(100, &late, nov(2, 15))], vec![])
        .await
        .unwrap();
    assert_eq!(out.written, 1);
    // And the first handle, whose cache was loaded before the close, too.
    let late2 = Ev {
        input: 800_000,
        ..late
    };
    store
        .write(vec![row(101, &late2, nov(30, 23))], vec![])
        .await
        .unwrap();
    assert_eq!(
        ok(&args),
        before,
        "the closed period's report never changes"
    );
    let again = ok(&["close", "--ledger", url, "--period", "2026-11"]);
    assert!(
        again.contains("is already closed") && again.contains("unchanged"),
        "{again}"
    );
    // December: the late events as their own adjustment lines.
    let dec_range = [
        "--ledger",
        url,
        "--from",
        "2026-12-01",
        "--to",
        "2027-01-01",
    ];
    let mut args = vec!["report"];
    args.extend(dec_range);
    args.extend(["--by", "tenant", "--format", "csv"]);
    let dec = ok(&args);
    assert_eq!(
        dec,
        format!(
            "adjustment_of,tenant,unattributed_reason,currency,events,priced_events,cost,input_tokens,output_tokens,cache_read_tokens,cache_write_tokens,reasoning_tokens,audio_input_tokens,audio_output_tokens,image_input_tokens,image_output_tokens\n2026-11,acme,,USD,2,2,{},1200000,0,0,0,0,0,0,0,0\n",
            (late.cost() + late2.cost()).normalize()
        )
    );
    let f_dec = dir.join("focus-dec.csv");
    let f_dec_s = f_dec.display().to_string();
    let mut args = vec!["export"];
    args.extend(dec_range);
    args.extend([
        "--focus-version",
        "1.0",
        "--billing-account-id",
        "acct-4711",
        "--out",
        &f_dec_s,
    ]);
    ok(&args);
    focus_validator(&f_dec);
    let rows = csv_maps(&std::fs::read_to_string(&f_dec).unwrap());
    assert_eq!(rows.len(), 2, "{rows:?}");
    for r in &rows {
        assert_eq!(r["ChargeClass"], "Correction");
        assert_eq!(r["x_AdjustmentOf"], "2026-11");
        assert_eq!(r["BillingPeriodStart"], "2026-12-01T00:00:00Z");
        assert_eq!(r["BillingPeriodEnd"], "2027-01-01T00:00:00Z");
    }
    assert_eq!(rows[0]["ChargePeriodStart"], "2026-11-02T00:00:00Z");
    assert_eq!(d(&rows[0]["BilledCost"]), late.cost());
    assert_eq!(rows[1]["ChargePeriodStart"], "2026-11-30T00:00:00Z");
    assert_eq!(d(&rows[1]["BilledCost"]), late2.cost());
    // Closing December too: a later November event then goes to January.
    ok(&["close", "--ledger", url, "--period", "2026-12"]);
    let late3 = Ev {
        input: 4_000,
        ..late
    };
    open_store(url)
        .await
        .write(vec![row(102, &late3, nov(5, 1))], vec![])
        .await
        .unwrap();
    let mut args = vec!["report"];
    args.extend([
        "--ledger",
        url,
        "--from",
        "2027-01-01",
        "--to",
        "2027-02-01",
    ]);
    args.extend(["--by", "tenant", "--format", "csv"]);
    let jan = ok(&args);
    assert!(
        jan.contains(&format!(
            "2026-11,acme,,USD,1,1,{},",
            late3.cost().normalize()
        )),
        "{jan}"
    );
    let dec_again = ok(&["close", "--ledger", url, "--period", "2026-12"]);
    assert!(dec_again.contains("unchanged"), "{dec_again}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_focus_export_reconcile_and_close() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite:{}", dir.path().join("ledger.db").display());
    november(&url, dir.path()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_focus_export_reconcile_and_close() {
    let Some(url) = pg_database("focus").await else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    november(&url, dir.path()).await;
}

// ---- through the real gateway and the Python SDK ----

const SECRET_HEX: &str = "5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a";
const RATES: &str = "version: \"test-2026-12\"\ncurrency: USD\nrates:\n  - model: gpt-4o\n    provider: openai\n    per_million_tokens: { input: \"2.50\", output: \"10.00\", cache_read: \"1.25\" }\n";

/// Sends `workload` (see tests/python/ledger_workload.py) once with the Python SDK.
fn send_workload(
    dir: &Path,
    name: &str,
    workload: serde_json::Value,
    endpoint: std::net::SocketAddr,
) {
    let wl = dir.join(format!("{name}.json"));
    std::fs::write(&wl, workload.to_string()).unwrap();
    let mut child = Command::new(python())
        .arg(repo().join("tests/python/ledger_workload.py"))
        .arg(&wl)
        .arg(dir.join("k1.hex"))
        .env("PYTHONPATH", repo().join("sdk/python"))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    stdout.read_line(&mut line).unwrap();
    writeln!(stdin, "send http://{endpoint}").unwrap();
    stdin.flush().unwrap();
    line.clear();
    stdout.read_line(&mut line).unwrap();
    assert_eq!(line.trim(), "ok", "python sender");
    drop(stdin);
    let _ = child.wait();
}

fn trace(
    tenant: &str,
    envelope: &str,
    start_ns: i64,
    spans: serde_json::Value,
) -> serde_json::Value {
    serde_json::json!({"service": "chat-api", "tenant": tenant, "workflow": "support",
        "envelope": envelope, "start_ns": start_ns, "spans": spans})
}

fn chat(name: &str, input: i64, output: i64) -> serde_json::Value {
    serde_json::json!({"name": name, "offset_ms": 0, "attrs": {
        "gen_ai.operation.name": "chat", "gen_ai.provider.name": "openai",
        "gen_ai.request.model": "gpt-4o", "gen_ai.usage.input_tokens": input,
        "gen_ai.usage.output_tokens": output}})
}

async fn wait_written(gw: &GatewayProcess, want: f64) {
    let series = "tollgate_ledger_rows_written_total{exporter=\"ledger\"}";
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while metric_value(&gw.metrics_text().await, series) != Some(want) {
        assert!(
            tokio::time::Instant::now() < deadline,
            "{series} never reached {want}: {}",
            gw.log_text()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Spans signed by the Python SDK, priced and recorded by `tollgate run`; then the FOCUS
/// export agrees with them; the month is closed, and a late span for it sent through the
/// gateway becomes an adjustment of the next month.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gateway_events_export_and_late_data_after_close() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path();
    std::fs::write(p.join("k1.hex"), SECRET_HEX).unwrap();
    std::fs::write(p.join("rates.yaml"), RATES).unwrap();
    let url = format!("sqlite:{}", p.join("ledger.db").display());
    let (grpc, metrics) = free_addrs();
    let yaml = format!(
        "receivers:\n  otlp:\n    protocols: {{ grpc: {{ endpoint: \"{grpc}\" }} }}\nprocessors:\n  envelope:\n    keys:\n      - id: k1\n        secret_file: {key}\n  cost:\n    rates: {rates}\nexporters:\n  ledger:\n    url: \"{url}\"\nservice:\n  telemetry: {{ metrics: {{ address: \"{metrics}\" }} }}\n  pipelines:\n    traces:\n      receivers: [otlp]\n      processors: [envelope, cost]\n      exporters: [ledger]\n",
        key = p.join("k1.hex").display(),
        rates = p.join("rates.yaml").display(),
    );
    let gw = GatewayProcess::start(&yaml, p, "gw", grpc, metrics).await;
    // Two hours ago, hour-aligned (envelopes verify against recent span starts).
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    let t0 = (now / 3600 - 2) * 3600 * 1_000_000_000;
    send_workload(
        p,
        "first",
        serde_json::json!({"traces": [
            trace("acme", "valid", t0, serde_json::json!([chat("a1", 1000, 200)])),
            trace("globex", "valid", t0 + 60_000_000_000, serde_json::json!([chat("b1", 3000, 1000)])),
            trace("acme", "none", t0 + 120_000_000_000, serde_json::json!([chat("c1", 100, 10)])),
        ]}),
        grpc,
    );
    wait_written(&gw, 3.0).await;
    let acme = cost(1000, "2.50") + cost(200, "10.00");
    let globex = cost(3000, "2.50") + cost(1000, "10.00");
    let unattributed = cost(100, "2.50") + cost(10, "10.00");

    // The month of t0, by hand.
    let dt = time::OffsetDateTime::from_unix_timestamp(t0 / 1_000_000_000).unwrap();
    let month = format!("{:04}-{:02}", dt.year(), u8::from(dt.month()));
    let (ny, nm) = if u8::from(dt.month()) == 12 {
        (dt.year() + 1, 1)
    } else {
        (dt.year(), u8::from(dt.month()) + 1)
    };
    let month_start = format!("{month}-01");
    let next_start = format!("{ny:04}-{nm:02}-01");
    let (ay, am) = if nm == 12 { (ny + 1, 1) } else { (ny, nm + 1) };
    let after_next = format!("{ay:04}-{am:02}-01");

    let f = p.join("focus.csv");
    let f_s = f.display().to_string();
    ok(&[
        "export",
        "--ledger",
        &url,
        "--from",
        &month_start,
        "--to",
        &next_start,
        "--focus-version",
        "1.0",
        "--billing-account-id",
        "acct-1",
        "--out",
        &f_s,
    ]);
    focus_validator(&f);
    let rows = csv_maps(&std::fs::read_to_string(&f).unwrap());
    let by_tenant = |t: &str| -> Decimal {
        rows.iter()
            .filter(|r| r["SubAccountId"] == t)
            .map(|r| d(&r["BilledCost"]))
            .sum()
    };
    assert_eq!(by_tenant("acme"), acme);
    assert_eq!(by_tenant("globex"), globex);
    assert_eq!(by_tenant("__unattributed__"), unattributed);
    let un = rows
        .iter()
        .find(|r| r["SubAccountId"] == "__unattributed__")
        .unwrap();
    assert_eq!(un["x_EnvelopeStatus"], "missing");

    let report_args = [
        "report",
        "--ledger",
        &url,
        "--from",
        &month_start,
        "--to",
        &next_start,
        "--format",
        "csv",
    ];
    let before = ok(&report_args);
    let closed = ok(&["close", "--ledger", &url, "--period", &month]);
    assert!(
        closed.contains(&format!(
            "3 events, totals: USD {}",
            (acme + globex + unattributed).normalize()
        )),
        "{closed}"
    );
    // A late span for the closed month, through the same running gateway.
    send_workload(
        p,
        "late",
        serde_json::json!({"traces": [
            trace("acme", "valid", t0 + 180_000_000_000, serde_json::json!([chat("late", 2000, 0)])),
        ]}),
        grpc,
    );
    wait_written(&gw, 4.0).await;
    assert!(
        gw.log_text()
            .contains("late event for a closed period recorded as an adjustment"),
        "{}",
        gw.log_text()
    );
    gw.terminate().await;
    assert_eq!(ok(&report_args), before, "the closed month is unchanged");
    let next = ok(&[
        "report",
        "--ledger",
        &url,
        "--from",
        &next_start,
        "--to",
        &after_next,
        "--format",
        "csv",
    ]);
    assert!(
        next.starts_with("adjustment_of,tenant,")
            && next.contains(&format!(
                "\n{month},acme,,USD,1,1,{},2000,",
                cost(2000, "2.50").normalize()
            )),
        "{next}"
    );
}

/// Provider-realistic FOCUS 1.2 exports (AWS, Azure and Google Cloud shapes, generated by the
/// `focus-data-toolkit` package: compute, storage, tax and purchase rows, with no AI usage
/// tollgate saw): `reconcile` reads each whole file and accounts for every cent: each line is
/// listed as invoiced-but-never-seen and settled on `__unmatched__`, never on a tenant, and
/// the statement sums to the invoice total (summed here from the file) rounded to the cent.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn provider_focus_exports_are_read_and_every_cent_is_accounted_for() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path();
    let url = format!("sqlite:{}", p.join("ledger.db").display());
    drop(open_store(&url).await);
    let pol = p.join("policy.yaml");
    std::fs::write(&pol, "id: smoke\nversion: 1\n").unwrap();
    let pol_s = pol.display().to_string();
    for provider in ["aws", "azure", "gcp"] {
        let out = Command::new(python())
            .args([
                "-m",
                "focus_data_toolkit",
                "generate",
                "--provider",
                provider,
            ])
            .args([
                "--focus-version",
                "1.2",
                "--rows",
                "300",
                "--seed",
                "7",
                "--out",
            ])
            .arg(p.join(provider))
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "focus-data-toolkit (tests/python/requirements.txt): {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let file = std::fs::read_dir(p.join(provider))
            .unwrap()
            .map(|e| e.unwrap().path())
            .find(|f| f.extension().is_some_and(|x| x == "csv"))
            .unwrap();
        let text = std::fs::read_to_string(&file).unwrap();
        let lines = csv_maps(&text);
        let total: Decimal = lines.iter().map(|r| d(&r["BilledCost"])).sum();
        let first = lines
            .iter()
            .map(|r| &r["ChargePeriodStart"][..10])
            .min()
            .unwrap();
        let last = lines
            .iter()
            .map(|r| &r["ChargePeriodStart"][..10])
            .max()
            .unwrap();
        let from = format!("{}-01", &first[..7]);
        let to_month = time::Date::parse(
            &format!("{}-28", &last[..7]),
            time::macros::format_description!("[year]-[month]-[day]"),
        )
        .unwrap()
        .checked_add(time::Duration::days(7))
        .unwrap();
        let to = format!(
            "{:04}-{:02}-01",
            to_month.year(),
            u8::from(to_month.month())
        );
        let out_dir = p.join(format!("recon-{provider}"));
        let (file_s, out_s) = (file.display().to_string(), out_dir.display().to_string());
        let summary = ok(&[
            "reconcile",
            "--ledger",
            &url,
            "--from",
            &from,
            "--to",
            &to,
            "--invoice",
            &file_s,
            "--policy",
            &pol_s,
            "--out",
            &out_s,
        ]);
        assert!(
            summary.contains("(FOCUS)") && summary.contains("0 invoice line(s) outside"),
            "{summary}"
        );
        let st = csv_maps(&std::fs::read_to_string(out_dir.join("statement.csv")).unwrap());
        assert_eq!(st.len(), 1, "{provider}: {st:?}");
        assert_eq!(st[0]["line"], "__unmatched__");
        assert_eq!(
            d(&st[0]["settled"]),
            total.round_dp_with_strategy(2, rust_decimal::RoundingStrategy::MidpointNearestEven),
            "{provider}"
        );
        let un = csv_maps(&std::fs::read_to_string(out_dir.join("unmatched.csv")).unwrap());
        assert_eq!(un.len(), lines.len(), "{provider}: every line listed");
        assert_eq!(un.iter().map(|r| d(&r["cost"])).sum::<Decimal>(), total);
    }
}
