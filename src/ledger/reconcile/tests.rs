//! Unit tests of `reconcile`.

use super::*;

const POLICY: &str = "id: p\nversion: 1\ntolerance: { default: \"5%\" }\n";

fn key(day: i64, model: &str) -> Key {
    (day, "openai".into(), model.into(), "USD".into())
}

fn d(s: &str) -> Decimal {
    Decimal::from_str(s).unwrap()
}

#[test]
fn policy_errors_name_the_field() {
    let e = Policy::parse("version: 1\nrounding_unit: \"-1\"\nwithin_tolerance: keep\nabove_tolerance: absorb\ntolerance: { providers: { openai: lots } }\nunattrib: line\n").unwrap_err();
    for want in [
        "id: required",
        "rounding_unit: \"-1\" is not a positive decimal",
        "within_tolerance: \"keep\" is not one of pro_rata, absorb",
        "above_tolerance: \"absorb\": the only choice is report",
        "tolerance.providers.openai: \"lots\" is not a percentage",
        "unattrib: unknown key; did you mean `unattributed`?",
    ] {
        assert!(e.contains(want), "{want}\n{e}");
    }
    let p = Policy::parse(POLICY).unwrap();
    assert_eq!(p.version, "1");
    assert_eq!(p.sha256, sha256_hex(POLICY.as_bytes()));
}

#[test]
fn invoice_errors_name_the_line_and_column() {
    let p = Policy::parse(POLICY).unwrap();
    let e = read_invoice(
        "date,provider,model,cost,currency\n2026-11-01,openai,gpt-4o,1.5x,USD\n",
        &p,
    )
    .unwrap_err();
    assert!(
        e.starts_with("line 2, cost: \"1.5x\" is not a decimal"),
        "{e}"
    );
    let e = read_invoice("date,provider,cost,currency\n", &p).unwrap_err();
    assert!(e.starts_with("plain invoice: no model column"), "{e}");
    let e = read_invoice(
        "BilledCost,ChargePeriodStart,BillingCurrency,ProviderName\n",
        &p,
    )
    .unwrap_err();
    assert!(e.starts_with("FOCUS invoice: no SkuId column"), "{e}");
    let e = read_invoice(
        "date,provider,model,cost,currency\n2026-13-01,openai,gpt-4o,1,USD\n",
        &p,
    )
    .unwrap_err();
    assert!(e.starts_with("line 2, date: "), "{e}");
    let (kind, lines) = read_invoice(
        "\u{feff}BilledCost,ChargePeriodStart,BillingCurrency,ProviderName,SkuId\n0.10,2026-11-02 00:00:00,USD,OpenAI,gpt-4o\n",
        &p,
    )
    .unwrap();
    assert_eq!(kind, InvoiceKind::Focus);
    assert_eq!(lines[0].day, 1_793_577_600 / 86_400);
    assert_eq!(lines[0].cost, d("0.10"));
}

/// One invoice line of `cost` for `key(20_000, "m")`.
fn invoice(cost: &str) -> Vec<InvoiceLine> {
    vec![InvoiceLine {
        line: 2,
        day: 20_000,
        provider: "openai".into(),
        model: "m".into(),
        cost: d(cost),
        currency: "USD".into(),
    }]
}

/// Day 20 000 (UTC days since the epoch).
fn one_day() -> Range {
    Range {
        from: 20_000 * 86_400_000_000_000,
        to: 20_001 * 86_400_000_000_000,
    }
}

fn settled(r: &Reconciliation) -> Vec<(&str, String)> {
    r.statement
        .iter()
        .map(|s| (s.line.as_str(), n(s.settled)))
        .collect()
}

#[test]
fn unattributed_pro_rata_never_lands_on_idle_or_unmatched() {
    // An allocated key: acme 1.00, unattributed 1.00, __idle__ 2.00, __unmatched__ 1.00;
    // invoiced exactly 5.00. Pro rata, the unattributed 1.00 goes to acme alone (the
    // only tenant): acme 2.00; idle and unmatched stay at their own cost.
    let p = Policy::parse("id: p\nversion: 1\nunattributed: pro_rata\n").unwrap();
    let mut t = BTreeMap::new();
    t.insert(Some("acme".to_string()), d("1.00"));
    t.insert(None, d("1.00"));
    t.insert(Some(IDLE.to_string()), d("2.00"));
    t.insert(Some(UNMATCHED.to_string()), d("1.00"));
    let ledger = [(key(20_000, "m"), t)].into_iter().collect();
    let r = reconcile(&p, &invoice("5.00"), &ledger, one_day());
    assert_eq!(
        settled(&r),
        vec![
            ("__idle__", "2".into()),
            ("__unattributed__", "0".into()),
            ("__unmatched__", "1".into()),
            ("acme", "2".into()),
        ]
    );
}

#[test]
fn thirds_settle_to_the_cent_by_largest_remainder() {
    let p = Policy::parse(POLICY).unwrap();
    // Three tenants with equal cost, invoice 1.00: 0.33 each, one cent left over, which
    // goes to the first by name (equal remainders).
    let mut t = BTreeMap::new();
    for name in ["a", "b", "c"] {
        t.insert(Some(name.to_string()), d("0.01"));
    }
    let ledger = [(key(20_000, "m"), t)].into_iter().collect();
    let inv = invoice("0.03");
    let range = one_day();
    let r = reconcile(&p, &inv, &ledger, range);
    assert_eq!(
        settled(&r),
        vec![
            ("a", "0.01".into()),
            ("b", "0.01".into()),
            ("c", "0.01".into())
        ]
    );
    let inv = vec![InvoiceLine {
        cost: d("0.031"),
        ..inv[0].clone()
    }];
    let r = reconcile(&p, &inv, &ledger, range);
    // 0.031 / 3 each; total rounds (half-even) to 0.03.
    let sum: Decimal = r.statement.iter().map(|s| s.settled).sum();
    assert_eq!(sum, d("0.03"));
    let inv = vec![InvoiceLine {
        cost: d("0.0314"),
        ..inv[0].clone()
    }];
    let p2 = Policy::parse(
        "id: p\nversion: 1\ntolerance: { default: \"5%\" }\nrounding_unit: \"0.001\"\n",
    )
    .unwrap();
    let r = reconcile(&p2, &inv, &ledger, range);
    let got: Vec<String> = r.statement.iter().map(|s| n(s.settled)).collect();
    // 0.010466.. each: floors 0.010 ×3 = 0.030, 1 unit left of 0.031 → "a".
    assert_eq!(got, vec!["0.011", "0.01", "0.01"]);
}
