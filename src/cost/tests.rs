//! Unit tests of the pricing engine: rate-table parsing with YAML paths, matching, effective
//! windows and exact prices.

use std::path::Path;
use std::str::FromStr;

use super::litellm::import_litellm;
use super::pricing::*;
use super::*;

const TABLE: &str = r#"
version: "t1"
currency: USD
rates:
  - model: gpt-4o
    provider: openai
    aliases: [gpt-4o-latest]
    effective_from: 2024-10-01
    per_million_tokens: { input: "2.50", output: "10.00", cache_read: "1.25", cache_write: "3.125" }
    tiers:
      - above_input_tokens: 200000
        per_million_tokens: { input: "5.00", output: "15.00" }
  - model: gpt-4o
    provider: openai
    effective_to: 2024-10-01
    per_million_tokens: { input: "5.00", output: "15.00" }
  - model: o3
    per_million_tokens: { input: "2", output: "8", reasoning: "12" }
  - model: claude-sonnet-4-5
    provider: anthropic
    per_million_tokens: { input: 3, output: 15, cache_read: 0.30, cache_write: 3.75 }
  - model: mistral-large
    patterns: ["mistral-large-*", "mistral-l*"]
    per_million_tokens: { input: "2", output: "6" }
"#;

fn table() -> RateTable {
    RateTable::parse(TABLE, Path::new(".")).unwrap()
}

fn dec(s: &str) -> Decimal {
    Decimal::from_str(s).unwrap()
}

fn t(s: &str) -> i64 {
    crate::config::time::parse_time(s).unwrap()
}

fn usage(i: i64, o: i64, cr: i64, cw: i64, r: i64) -> Usage {
    Usage {
        input: Some(i),
        output: Some(o),
        cache_read: Some(cr),
        cache_write: Some(cw),
        reasoning: Some(r),
        ..Default::default()
    }
}

fn price_of(model: &str, provider: Option<&str>, at: &str, u: Usage) -> Breakdown {
    let tb = table();
    let m = tb.find(model, provider, t(at)).expect("a row");
    price(m.rate, &u).unwrap()
}

#[test]
fn every_token_class_hand_computed() {
    // 1000 input of which 200 cache reads and 100 cache writes; 500 output.
    let b = price_of(
        "gpt-4o",
        Some("openai"),
        "2025-01-01",
        usage(1000, 500, 200, 100, 0),
    );
    // uncached 700 × 2.50 / 1M = 0.00175
    assert_eq!(b.cost_of(TokenClass::Input), dec("0.00175"));
    // 200 × 1.25 / 1M = 0.00025
    assert_eq!(b.cost_of(TokenClass::CacheRead), dec("0.00025"));
    // 100 × 3.125 / 1M = 0.0003125
    assert_eq!(b.cost_of(TokenClass::CacheWrite), dec("0.0003125"));
    // 500 × 10 / 1M = 0.005
    assert_eq!(b.cost_of(TokenClass::Output), dec("0.005"));
    assert_eq!(b.cost_of(TokenClass::Reasoning), Decimal::ZERO);
    assert_eq!(b.total, dec("0.0073125"));
    assert_eq!(b.tokens[..5], [700, 500, 200, 100, 0]);
}

#[test]
fn reasoning_is_priced_at_its_own_rate_and_not_counted_twice() {
    // o3: 600 output of which 400 reasoning: 200 × 8 + 400 × 12 (per million).
    let b = price_of("o3", None, "2025-01-01", usage(1000, 600, 0, 0, 400));
    assert_eq!(b.cost_of(TokenClass::Input), dec("0.002"));
    assert_eq!(b.cost_of(TokenClass::Output), dec("0.0016"));
    assert_eq!(b.cost_of(TokenClass::Reasoning), dec("0.0048"));
    assert_eq!(b.total, dec("0.0084"));
    // Without a reasoning price, reasoning costs the output price: the total equals the
    // same request without a reasoning breakdown (never output + reasoning).
    let with = price_of("gpt-4o", None, "2025-01-01", usage(0, 500, 0, 0, 100));
    let without = price_of("gpt-4o", None, "2025-01-01", usage(0, 500, 0, 0, 0));
    assert_eq!(with.total, dec("0.005"));
    assert_eq!(with.total, without.total);
    assert_eq!(with.cost_of(TokenClass::Reasoning), dec("0.001"));
}

#[test]
fn tier_boundary_exactly_at_is_base_one_above_is_tier() {
    let at = price_of("gpt-4o", None, "2025-01-01", usage(200_000, 1000, 0, 0, 0));
    assert_eq!(at.tier, None);
    assert_eq!(at.total, dec("0.51")); // 200000 × 2.5 + 1000 × 10, per million
    let above = price_of("gpt-4o", None, "2025-01-01", usage(200_001, 1000, 0, 0, 0));
    assert_eq!(above.tier, Some(200_000));
    // 200001 × 5 / 1M = 1.000005; 1000 × 15 / 1M = 0.015
    assert_eq!(above.cost_of(TokenClass::Input), dec("1.000005"));
    assert_eq!(above.cost_of(TokenClass::Output), dec("0.015"));
    assert_eq!(above.total, dec("1.015005"));
    // The tier counts all input (cached included); unset tier prices inherit the base.
    let cached = price_of(
        "gpt-4o",
        None,
        "2025-01-01",
        usage(200_001, 0, 200_000, 0, 0),
    );
    assert_eq!(cached.tier, Some(200_000));
    assert_eq!(cached.cost_of(TokenClass::Input), dec("0.000005"));
    assert_eq!(cached.cost_of(TokenClass::CacheRead), dec("0.25"));
}

#[test]
fn effective_dates_pick_the_row_by_start_time() {
    let tb = table();
    let before = tb.find("gpt-4o", None, t("2024-09-30T23:59:59Z")).unwrap();
    assert_eq!(before.rate.id, "rates[1]");
    let on = tb.find("gpt-4o", None, t("2024-10-01T00:00:00Z")).unwrap();
    assert_eq!(on.rate.id, "rates[0]");
    assert_eq!(
        price(before.rate, &usage(100_000, 0, 0, 0, 0))
            .unwrap()
            .total,
        dec("0.5")
    );
    assert_eq!(
        price(on.rate, &usage(100_000, 0, 0, 0, 0)).unwrap().total,
        dec("0.25")
    );
}

#[test]
fn matching_order() {
    let tb = table();
    let at = t("2025-06-01");
    let m = |name: &str, p: Option<&str>| tb.find(name, p, at).map(|m| (m.rate.id.clone(), m.kind));
    assert_eq!(
        m("gpt-4o", Some("openai")),
        Some(("rates[0]".into(), MatchKind::Exact))
    );
    assert_eq!(
        m("GPT-4o", None),
        Some(("rates[0]".into(), MatchKind::Exact))
    );
    assert_eq!(
        m("gpt-4o-latest", None),
        Some(("rates[0]".into(), MatchKind::Alias))
    );
    assert_eq!(
        m("openai/gpt-4o", Some("openai")),
        Some(("rates[0]".into(), MatchKind::ProviderQualified))
    );
    assert_eq!(
        m("gpt-4o-2024-08-06", Some("openai")),
        Some(("rates[0]".into(), MatchKind::DateSuffix))
    );
    assert_eq!(
        m("claude-sonnet-4-5-20250929", Some("anthropic")),
        Some(("rates[3]".into(), MatchKind::DateSuffix))
    );
    assert_eq!(
        m("claude-sonnet-4-5@20250929", None),
        Some(("rates[3]".into(), MatchKind::DateSuffix))
    );
    assert_eq!(
        m("mistral-large-2411", None),
        Some(("rates[4]".into(), MatchKind::Pattern))
    );
    // Provider mismatch and unknown models are unpriced.
    assert_eq!(m("gpt-4o", Some("anthropic")), None);
    assert_eq!(m("llama-3.1-70b", None), None);
    // Response model first, then request model.
    let f = tb
        .find_for(Some("unknown-model"), Some("o3"), None, at)
        .unwrap();
    assert_eq!(f.rate.id, "rates[2]");
}

#[test]
fn provider_specific_row_beats_generic_and_exact_beats_pattern() {
    let text = r#"
version: v
currency: USD
rates:
  - model: m
    per_million_tokens: { input: "1", output: "1" }
  - model: m
    provider: azure.ai.openai
    per_million_tokens: { input: "2", output: "2" }
  - model: other
    patterns: ["m*"]
    per_million_tokens: { input: "3", output: "3" }
"#;
    let tb = RateTable::parse(text, Path::new(".")).unwrap();
    assert_eq!(
        tb.find("m", Some("azure.ai.openai"), 0).unwrap().rate.id,
        "rates[1]"
    );
    assert_eq!(tb.find("m", Some("openai"), 0).unwrap().rate.id, "rates[0]");
    assert_eq!(tb.find("m", None, 0).unwrap().rate.id, "rates[0]");
    assert_eq!(tb.find("mx", None, 0).unwrap().rate.id, "rates[2]");
}

#[test]
fn glob() {
    assert!(glob_match("gpt-4o-20*", "gpt-4o-2024-08-06"));
    assert!(glob_match("a?c", "abc"));
    assert!(!glob_match("a?c", "ac"));
    assert!(glob_match("*", ""));
    assert!(glob_match("*x*y", "axbxy"));
    assert!(!glob_match("gpt-4o-20*", "gpt-4o-mini"));
}

#[test]
fn date_suffixes() {
    assert_eq!(strip_date_suffix("gpt-4o-2024-08-06"), Some("gpt-4o"));
    assert_eq!(
        strip_date_suffix("claude-3-5-sonnet-20241022"),
        Some("claude-3-5-sonnet")
    );
    assert_eq!(
        strip_date_suffix("claude-3-5-sonnet@20241022"),
        Some("claude-3-5-sonnet")
    );
    assert_eq!(strip_date_suffix("mistral-large-2411"), None);
    assert_eq!(strip_date_suffix("gpt-4o"), None);
}

#[test]
fn unpriced_model_and_invalid_usage() {
    let tb = table();
    assert!(tb.find("no-such-model", None, 0).is_none());
    let r = tb.find("o3", None, 0).unwrap().rate;
    assert!(matches!(
        price(r, &usage(100, 10, 80, 30, 0)),
        Err(UsageError::CacheExceedsInput { .. })
    ));
    assert!(matches!(
        price(r, &usage(100, 10, 0, 0, 11)),
        Err(UsageError::ReasoningExceedsOutput { .. })
    ));
    let e = price(r, &usage(-1, 10, 0, 0, 0)).unwrap_err();
    assert_eq!(e.to_string(), "gen_ai.usage.input_tokens is negative (-1)");
    // Only output reported: input counts as 0.
    let b = price(
        r,
        &Usage {
            output: Some(1000),
            ..Default::default()
        },
    )
    .unwrap();
    assert_eq!(b.total, dec("0.008"));
}

fn problems(text: &str) -> Vec<String> {
    match RateTable::parse(text, Path::new(".")) {
        Ok(_) => Vec::new(),
        Err(e) => e.problems.iter().map(|p| p.to_string()).collect(),
    }
}

#[test]
fn bad_tables_name_the_yaml_path() {
    let p = problems(
        "version: v\ncurrency: USD\nrates:\n  - model: a\n    per_million_tokens: { input: \"1\", output: \"1\", inptu: \"2\" }\n",
    );
    assert_eq!(
        p,
        vec!["rates[0].per_million_tokens.inptu: unknown key; did you mean `input`?"]
    );
    let p = problems(
        "version: v\ncurrency: USD\nrates:\n  - model: a\n    per_million_tokens: { input: \"1\", output: \"1\" }\n  - model: b\n    per_million_tokens: { input: \"-2.5\", output: \"1\" }\n",
    );
    assert_eq!(
        p,
        vec!["rates[1].per_million_tokens.input: must not be negative, found -2.5"]
    );
    let p = problems(
        "version: v\ncurrency: USD\nrates:\n  - model: a\n    per_million_tokens: { input: 1, output: 1 }\n  - model: b\n    per_million_tokens: { input: 1, output: 1 }\n  - model: A\n    per_million_tokens: { input: 2, output: 2 }\n",
    );
    assert_eq!(p.len(), 1, "{p:?}");
    assert!(
        p[0].starts_with("rates[2].model: `a` ties between rates[0] and rates[2]"),
        "{p:?}"
    );
    let p = problems("currency: USD\nrates: []\nextra: 1\n");
    assert!(p.iter().any(|x| x.starts_with("version: missing")), "{p:?}");
    assert!(
        p.iter().any(|x| x.starts_with("extra: unknown key")),
        "{p:?}"
    );
}

#[test]
fn ties_report_both_rows_and_non_ties_pass() {
    // An alias of one row equal to another row's model: a tie naming both.
    let p = problems(
        "version: v\ncurrency: USD\nrates:\n  - model: x\n    per_million_tokens: { input: 1, output: 1 }\n  - model: y\n    aliases: [z, x]\n    per_million_tokens: { input: 1, output: 1 }\n",
    );
    assert_eq!(p.len(), 1, "{p:?}");
    assert!(p[0].starts_with("rates[1].aliases[1]: `x` ties between rates[0] and rates[1]"));
    // The same pattern twice.
    let p = problems(
        "version: v\ncurrency: USD\nrates:\n  - model: x\n    patterns: [\"q*\"]\n    per_million_tokens: { input: 1, output: 1 }\n  - model: y\n    patterns: [\"Q*\"]\n    per_million_tokens: { input: 1, output: 1 }\n",
    );
    assert_eq!(p.len(), 1, "{p:?}");
    assert!(p[0].contains("rates[0] and rates[1]"), "{p:?}");
    // Different providers or non-overlapping dates are not ties.
    let p = problems(
        "version: v\ncurrency: USD\nrates:\n  - model: x\n    provider: a\n    per_million_tokens: { input: 1, output: 1 }\n  - model: x\n    provider: b\n    per_million_tokens: { input: 1, output: 1 }\n  - model: x\n    effective_to: 2025-01-01\n    per_million_tokens: { input: 1, output: 1 }\n  - model: x\n    effective_from: 2025-01-01\n    per_million_tokens: { input: 1, output: 1 }\n",
    );
    assert!(p.is_empty(), "{p:?}");
}

#[test]
fn prices_are_parsed_exactly() {
    assert_eq!(parse_decimal("2.50").unwrap().to_string(), "2.50");
    assert_eq!(parse_decimal("2.5e-06").unwrap(), dec("0.0000025"));
    assert_eq!(parse_decimal("1E-5").unwrap(), dec("0.00001"));
    assert_eq!(parse_decimal("3e2").unwrap(), dec("300"));
    assert!(parse_decimal("abc").is_err());
    assert_eq!(
        per_token_to_per_million("2.5e-06").unwrap().to_string(),
        "2.5"
    );
    assert_eq!(per_token_to_per_million("1e-05").unwrap().to_string(), "10");
    assert_eq!(
        per_token_to_per_million("3.96e-07").unwrap().to_string(),
        "0.396"
    );
    assert_eq!(
        per_token_to_per_million("1.375e-06").unwrap().to_string(),
        "1.375"
    );
    // 0.1 + 0.2 style sums stay exact: 3 × 0.1 per million on 1M tokens.
    let c = cost_of(1, dec("0.1")).unwrap() + cost_of(1, dec("0.2")).unwrap();
    assert_eq!(c, dec("0.0000003"));
}

#[test]
fn litellm_import_reads_tiers_and_ignores_other_keys() {
    let json = r#"{
      "sample_spec": {"input_cost_per_token": 0.0, "litellm_provider": "x"},
      "gemini/gemini-2.5-pro": {
        "input_cost_per_token": 1.25e-06, "output_cost_per_token": 1e-05,
        "cache_read_input_token_cost": 1.25e-07,
        "input_cost_per_token_above_200k_tokens": 2.5e-06,
        "output_cost_per_token_above_200k_tokens": 1.5e-05,
        "input_cost_per_token_above_200k_tokens_priority": 4.5e-06,
        "cache_creation_input_token_cost_above_1hr": 6e-06,
        "search_context_cost_per_query": {"low": 0.035},
        "litellm_provider": "gemini"
      },
      "dall-e-3": {"output_cost_per_image": 0.04, "litellm_provider": "openai"},
      "o1": {"input_cost_per_token": 1.5e-05, "output_cost_per_token": 6e-05,
             "output_cost_per_reasoning_token": 6e-05, "litellm_provider": "openai"}
    }"#;
    let rows = import_litellm(json).unwrap();
    assert_eq!(rows.len(), 2);
    let g = &rows[0];
    assert_eq!(g.id, "litellm:gemini/gemini-2.5-pro");
    assert_eq!(g.provider.as_deref(), Some("gcp.gemini"));
    assert_eq!(g.base.input, Some(dec("1.25")));
    assert_eq!(g.base.cache_read, Some(dec("0.125")));
    assert_eq!(g.base.cache_write, None);
    assert_eq!(g.tiers.len(), 1);
    assert_eq!(g.tiers[0].above_input_tokens, 200_000);
    assert_eq!(g.tiers[0].prices.input, Some(dec("2.5")));
    assert_eq!(g.tiers[0].prices.output, Some(dec("15")));
    assert_eq!(rows[1].base.reasoning, Some(dec("60")));
}

#[test]
fn explicit_rows_win_over_imports() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("l.json"),
        r#"{"gpt-4o": {"input_cost_per_token": 2.5e-06, "output_cost_per_token": 1e-05, "litellm_provider": "openai"},
            "gpt-4o-mini": {"input_cost_per_token": 1.5e-07, "output_cost_per_token": 6e-07, "litellm_provider": "openai"},
            "gemini/gemini-2.0-flash": {"input_cost_per_token": 1e-07, "output_cost_per_token": 4e-07, "litellm_provider": "gemini"}}"#,
    )
    .unwrap();
    let path = dir.path().join("rates.yaml");
    std::fs::write(
        &path,
        "version: v\ncurrency: USD\nrates:\n  - model: gpt-4o\n    per_million_tokens: { input: \"2\", output: \"8\" }\nimport:\n  - litellm: l.json\n",
    )
    .unwrap();
    let tb = RateTable::load(&path).unwrap();
    assert_eq!(tb.files.len(), 2);
    assert_eq!(
        tb.find("gpt-4o", Some("openai"), 0).unwrap().rate.id,
        "rates[0]"
    );
    let mini = tb.find("gpt-4o-mini", Some("openai"), 0).unwrap();
    assert_eq!(mini.rate.id, "litellm:gpt-4o-mini");
    // A semconv provider name finds LiteLLM's provider-prefixed key.
    let flash = tb.find("gemini-2.0-flash", Some("gcp.gemini"), 0).unwrap();
    assert_eq!(flash.rate.id, "litellm:gemini/gemini-2.0-flash");
    assert_eq!(flash.kind, MatchKind::ProviderQualified);
    // A broken import names the import's path.
    std::fs::write(dir.path().join("l.json"), "{not json").unwrap();
    let e = RateTable::load(&path).unwrap_err();
    assert!(
        e.problems[0].to_string().starts_with("import[0].litellm: "),
        "{e}"
    );
}

#[test]
fn shipped_table_is_valid() {
    let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("config/rates.yaml");
    let tb = RateTable::load(&p).unwrap();
    assert!(tb.explicit_rows().len() >= 5);
}

#[test]
fn modality_tokens_are_priced_apart_only_where_the_row_has_a_price() {
    let tb = RateTable::parse(
        "version: v\ncurrency: USD\nrates:\n  - model: a\n    per_million_tokens: { input: \"2.5\", output: \"10\", audio_input: \"40\", audio_output: \"80\" }\n",
        Path::new("."),
    )
    .unwrap();
    let r = tb.find("a", None, 0).unwrap().rate;
    let u = Usage {
        input: Some(1000),
        output: Some(200),
        audio_input: Some(300),
        audio_output: Some(100),
        image_input: Some(50),
        text_input: Some(650),
        ..Default::default()
    };
    let b = price(r, &u).unwrap();
    // input 1000 - 300 audio = 700 at 2.5 (the 50 image tokens stay inside: no image price)
    assert_eq!(b.tokens, [700, 100, 0, 0, 0, 300, 100, 0, 0]);
    assert_eq!(b.cost_of(TokenClass::Input), dec("0.00175"));
    assert_eq!(b.cost_of(TokenClass::Output), dec("0.001"));
    assert_eq!(b.cost_of(TokenClass::AudioInput), dec("0.012"));
    assert_eq!(b.cost_of(TokenClass::AudioOutput), dec("0.008"));
    assert_eq!(b.total, dec("0.02275"));
    assert!(!b.prices.separate(TokenClass::ImageInput));
    let e = price(
        r,
        &Usage {
            input: Some(10),
            audio_input: Some(11),
            ..Default::default()
        },
    )
    .unwrap_err();
    assert_eq!(
        e.to_string(),
        "audio + image input tokens priced at the row's modality prices (11) exceed the uncached input (10) they are part of"
    );
}
