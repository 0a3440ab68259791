//! Unit tests of the semantic-convention checker: detection, normalisation, validation and
//! the linear-time bound (counted in steps).

use super::*;
#[allow(unused_imports)]
use super::{detect::*, entry::*, normalise::*, options::*, table::*, validate::*, values::*};
use crate::semconv::rules::{
    find_rule, EXTERNAL_TARGETS, OPERATION_NAMES, PROVIDER_NAMES, SEMCONV_VERSION,
    SOURCE_OPENINFERENCE, SOURCE_OPENLLMETRY, SOURCE_SEMCONV_DEPRECATED,
};
use crate::semconv::rules::{
    AttrType, GenAiSpan, Mapping, Unmapped, ATTRIBUTES, MAPPINGS, SPAN_REQUIREMENTS,
};
use opentelemetry_proto::tonic::common::v1::ArrayValue;
use opentelemetry_proto::tonic::common::v1::{any_value::Value, AnyValue, KeyValue};
use opentelemetry_proto::tonic::trace::v1::{span::SpanKind, Status};
use opentelemetry_proto::tonic::trace::v1::{status::StatusCode, Span};

const CLIENT: SpanKind = SpanKind::Client;
const INTERNAL: SpanKind = SpanKind::Internal;

fn val(v: Value) -> Option<AnyValue> {
    Some(AnyValue { value: Some(v) })
}
fn kv(k: &str, v: Value) -> KeyValue {
    KeyValue {
        key: k.to_string(),
        value: val(v),
        ..Default::default()
    }
}
fn s(k: &str, v: &str) -> KeyValue {
    kv(k, Value::StringValue(v.to_string()))
}
fn i(k: &str, v: i64) -> KeyValue {
    kv(k, Value::IntValue(v))
}
fn d(k: &str, v: f64) -> KeyValue {
    kv(k, Value::DoubleValue(v))
}
fn b(k: &str, v: bool) -> KeyValue {
    kv(k, Value::BoolValue(v))
}
fn arr(k: &str, vs: Vec<Value>) -> KeyValue {
    kv(
        k,
        Value::ArrayValue(ArrayValue {
            values: vs
                .into_iter()
                .map(|v| AnyValue { value: Some(v) })
                .collect(),
        }),
    )
}
fn sv(v: &str) -> Value {
    Value::StringValue(v.to_string())
}
fn span(kind: SpanKind, attrs: Vec<KeyValue>) -> Span {
    Span {
        kind: kind as i32,
        attributes: attrs,
        ..Default::default()
    }
}
fn get<'a>(span: &'a Span, key: &str) -> Option<&'a AnyValue> {
    span.attributes
        .iter()
        .find(|kv| kv.key == key)
        .and_then(|kv| kv.value.as_ref())
}
fn count(span: &Span, key: &str) -> usize {
    span.attributes.iter().filter(|kv| kv.key == key).count()
}
fn chat() -> Vec<KeyValue> {
    vec![
        s("gen_ai.operation.name", "chat"),
        s("gen_ai.provider.name", "openai"),
        s("gen_ai.request.model", "gpt-4o"),
        i("gen_ai.usage.input_tokens", 100),
        i("gen_ai.usage.output_tokens", 20),
    ]
}
fn with(mut base: Vec<KeyValue>, extra: Vec<KeyValue>) -> Vec<KeyValue> {
    base.extend(extra);
    base
}
fn sorted(mut v: Vec<String>) -> Vec<String> {
    v.sort();
    v
}
fn strict() -> Options {
    Options {
        strict: true,
        ..Options::default()
    }
}
fn coerce() -> Options {
    Options {
        coerce_numeric_strings: true,
        ..Options::default()
    }
}

// ----------------------------------------------------------------------------------
// table sanity
// ----------------------------------------------------------------------------------

#[test]
fn pinned_version() {
    assert_eq!(SEMCONV_VERSION, "1.41.0");
}

#[test]
fn rule_names_are_unique_and_mapping_sources_are_not_current_names() {
    for (n, r) in ATTRIBUTES.iter().enumerate() {
        assert!(
            ATTRIBUTES[..n].iter().all(|o| o.name != r.name),
            "duplicate rule {}",
            r.name
        );
    }
    for m in MAPPINGS {
        assert!(find_rule(m.from).is_none(), "{} is a current name", m.from);
        assert!(
            find_rule(m.to).is_some() || EXTERNAL_TARGETS.contains(&m.to),
            "{} has unknown target {}",
            m.from,
            m.to
        );
        assert!([
            SOURCE_SEMCONV_DEPRECATED,
            SOURCE_OPENINFERENCE,
            SOURCE_OPENLLMETRY
        ]
        .contains(&m.source));
        assert_eq!(
            MAPPINGS.iter().filter(|o| o.from == m.from).count(),
            1,
            "duplicate source {}",
            m.from
        );
    }
}

#[test]
fn skip_mappings_only_produce_well_known_values() {
    for m in MAPPINGS.iter().filter(|m| m.unmapped == Unmapped::Skip) {
        let rule = find_rule(m.to).map(|r| r.well_known).unwrap_or_default();
        for (_, to) in m.value_map {
            assert!(rule.contains(to), "{} -> {} not well-known", m.from, to);
        }
    }
    for (_, to) in crate::semconv::rules::GEN_AI_SYSTEM_VALUES.iter().take(5) {
        assert!(PROVIDER_NAMES.contains(to));
    }
}

#[test]
fn span_requirement_attributes_exist() {
    for row in SPAN_REQUIREMENTS {
        assert!(find_rule(row.attr).is_some(), "{}", row.attr);
    }
    for op in OPERATION_NAMES {
        let _ = GenAiSpan::for_operation(op);
    }
    assert_eq!(GenAiSpan::for_operation("invoke_workflow"), None);
}

// ----------------------------------------------------------------------------------
// mappings: one case per row
// ----------------------------------------------------------------------------------

/// A value for `m.from` and the value expected under `m.to` after mapping.
fn sample(m: &Mapping) -> (Value, Value) {
    if let Some((from, to)) = m.value_map.first() {
        return (sv(from), sv(to));
    }
    let v = match find_rule(m.to).map(|r| r.ty) {
        Some(AttrType::Int) => Value::IntValue(7),
        Some(AttrType::Double) => Value::DoubleValue(0.25),
        Some(AttrType::Bool) => Value::BoolValue(true),
        Some(AttrType::StringArray) => Value::ArrayValue(ArrayValue {
            values: vec![AnyValue {
                value: Some(sv("###")),
            }],
        }),
        _ => sv("v"),
    };
    (v.clone(), v)
}

fn base_for(target: &str) -> Vec<KeyValue> {
    match target {
        "gen_ai.operation.name" => vec![s("gen_ai.provider.name", "openai")],
        "gen_ai.provider.name" => vec![s("gen_ai.operation.name", "chat")],
        _ => vec![
            s("gen_ai.operation.name", "chat"),
            s("gen_ai.provider.name", "openai"),
        ],
    }
}

#[test]
fn every_mapping_row_renames() {
    for m in MAPPINGS {
        let (from_v, to_v) = sample(m);
        let mut sp = span(CLIENT, with(base_for(m.to), vec![kv(m.from, from_v)]));
        let rep = process_span(&mut sp, &Options::default());
        assert!(rep.is_llm_span, "{}", m.from);
        assert_eq!(rep.renamed, 1, "{}", m.from);
        assert!(get(&sp, m.from).is_none(), "{} not removed", m.from);
        assert_eq!(
            get(&sp, m.to).and_then(|v| v.value.clone()),
            Some(to_v),
            "{}",
            m.from
        );
        assert!(
            !rep.violations.iter().any(|v| v.starts_with("conflict:")),
            "{}: {:?}",
            m.from,
            rep.violations
        );
    }
}

#[test]
fn every_mapping_row_keeps_originals_when_asked() {
    let opts = Options {
        keep_originals: true,
        ..Options::default()
    };
    for m in MAPPINGS {
        let (from_v, to_v) = sample(m);
        let mut sp = span(
            CLIENT,
            with(base_for(m.to), vec![kv(m.from, from_v.clone())]),
        );
        let rep = process_span(&mut sp, &opts);
        assert_eq!(rep.renamed, 1, "{}", m.from);
        assert_eq!(get(&sp, m.from).and_then(|v| v.value.clone()), Some(from_v));
        assert_eq!(get(&sp, m.to).and_then(|v| v.value.clone()), Some(to_v));
    }
}

#[test]
fn every_value_map_pair_is_applied() {
    for m in MAPPINGS {
        for (from, to) in m.value_map {
            let mut sp = span(CLIENT, with(base_for(m.to), vec![s(m.from, from)]));
            let rep = process_span(&mut sp, &Options::default());
            assert_eq!(rep.renamed, 1, "{} = {}", m.from, from);
            assert_eq!(
                str_value(get(&sp, m.to)),
                Some(*to),
                "{} = {}",
                m.from,
                from
            );
        }
    }
}

#[test]
fn pass_through_values_are_copied_and_skip_values_left_alone() {
    for m in MAPPINGS {
        let mut sp = span(CLIENT, with(base_for(m.to), vec![s(m.from, "zz_custom")]));
        let rep = process_span(&mut sp, &Options::default());
        match m.unmapped {
            Unmapped::PassThrough => {
                assert_eq!(rep.renamed, 1, "{}", m.from);
                assert_eq!(str_value(get(&sp, m.to)), Some("zz_custom"));
            }
            Unmapped::Skip => {
                assert_eq!(rep.renamed, 0, "{}", m.from);
                assert_eq!(str_value(get(&sp, m.from)), Some("zz_custom"));
            }
        }
    }
}

#[test]
fn mappings_onto_operation_or_provider_make_llm_spans() {
    for m in MAPPINGS.iter().filter(|m| marks_llm(m.to)) {
        let (from_v, _) = sample(m);
        assert!(is_llm_span(&[kv(m.from, from_v)]), "{}", m.from);
        if m.unmapped == Unmapped::Skip {
            assert!(!is_llm_span(&[s(m.from, "CHAIN")]), "{}", m.from);
        }
    }
    // A mapped usage attribute alone is not an LLM marker.
    assert!(!is_llm_span(&[i("gen_ai.usage.prompt_tokens", 3)]));
}

// ----------------------------------------------------------------------------------
// normalisation semantics
// ----------------------------------------------------------------------------------

#[test]
fn current_name_wins_and_conflict_is_reported() {
    let mut sp = span(
        CLIENT,
        with(chat(), vec![i("gen_ai.usage.prompt_tokens", 90)]),
    );
    let rep = process_span(&mut sp, &Options::default());
    assert_eq!(rep.violations, vec!["conflict:gen_ai.usage.input_tokens"]);
    assert_eq!(rep.renamed, 0);
    assert_eq!(int_of(get(&sp, "gen_ai.usage.input_tokens")), Some(100));
    assert!(get(&sp, "gen_ai.usage.prompt_tokens").is_none());
}

#[test]
fn equal_duplicate_is_dropped_without_conflict() {
    let mut sp = span(
        CLIENT,
        with(
            chat(),
            vec![
                s("gen_ai.usage.prompt_tokens", "100"),
                s("gen_ai.system", "openai"),
            ],
        ),
    );
    let rep = process_span(&mut sp, &Options::default());
    assert!(rep.violations.is_empty(), "{:?}", rep.violations);
    assert_eq!(rep.renamed, 0);
    assert_eq!(sp.attributes.len(), chat().len());
}

#[test]
fn value_rename_is_compared_after_mapping() {
    let mut sp = span(
        CLIENT,
        vec![
            s("gen_ai.operation.name", "chat"),
            s("gen_ai.provider.name", "azure.ai.inference"),
            s("gen_ai.system", "az.ai.inference"),
        ],
    );
    let rep = process_span(&mut sp, &Options::default());
    assert!(rep.violations.is_empty(), "{:?}", rep.violations);
}

#[test]
fn two_foreign_sources_conflict_first_row_wins() {
    // gen_ai.usage.prompt_tokens (semconv row) precedes llm.token_count.prompt.
    let mut sp = span(
        CLIENT,
        vec![
            s("gen_ai.operation.name", "chat"),
            s("gen_ai.provider.name", "openai"),
            i("llm.token_count.prompt", 5),
            i("gen_ai.usage.prompt_tokens", 6),
        ],
    );
    let rep = process_span(&mut sp, &Options::default());
    assert_eq!(rep.violations, vec!["conflict:gen_ai.usage.input_tokens"]);
    assert_eq!(rep.renamed, 1);
    assert_eq!(int_of(get(&sp, "gen_ai.usage.input_tokens")), Some(6));
    assert_eq!(count(&sp, "gen_ai.usage.input_tokens"), 1);
    assert!(get(&sp, "llm.token_count.prompt").is_none());
}

#[test]
fn provider_conflict_between_openinference_names() {
    let mut sp = span(
        CLIENT,
        vec![
            s("openinference.span.kind", "LLM"),
            s("llm.provider", "azure"),
            s("llm.system", "openai"),
        ],
    );
    let rep = process_span(&mut sp, &Options::default());
    assert!(rep.is_llm_span);
    assert_eq!(rep.renamed, 2);
    assert_eq!(
        str_value(get(&sp, "gen_ai.provider.name")),
        Some("azure.ai.openai")
    );
    assert_eq!(str_value(get(&sp, "gen_ai.operation.name")), Some("chat"));
    assert_eq!(rep.violations, vec!["conflict:gen_ai.provider.name"]);
}

#[test]
fn normalize_off_leaves_attributes_and_validates_as_is() {
    let attrs = vec![
        s("gen_ai.system", "openai"),
        i("gen_ai.usage.prompt_tokens", 3),
    ];
    let mut sp = span(CLIENT, attrs.clone());
    let opts = Options {
        normalize: false,
        ..Options::default()
    };
    let rep = process_span(&mut sp, &opts);
    assert!(rep.is_llm_span);
    assert_eq!(rep.renamed, 0);
    assert_eq!(sp.attributes, attrs);
    assert_eq!(rep.violations, vec!["missing:gen_ai.operation.name"]);
}

/// Issue 21: 300k duplicate `gen_ai.system` attributes took 16 s (a `retain` with
/// `Vec::contains`). Work is counted per attribute step: it must grow linearly, and the
/// violations must be deduplicated (1,000 duplicates gave 1,002 entries).
#[test]
fn duplicate_sources_are_normalised_in_linear_work_with_deduplicated_violations() {
    let dup_span = |n: usize, key: &str| {
        let mut attrs = vec![
            s("gen_ai.operation.name", "chat"),
            s("gen_ai.request.model", "gpt-4o"),
        ];
        for k in 0..n {
            // Every other value conflicts with the first.
            attrs.push(s(key, if k % 2 == 0 { "openai" } else { "anthropic" }));
        }
        span(CLIENT, attrs)
    };
    let custom = Options {
        custom_mappings: vec![("acme.tag".to_string(), "acme.current_tag".to_string())],
        ..Options::default()
    };
    for (key, opts) in [("gen_ai.system", Options::default()), ("acme.tag", custom)] {
        let mut per_attr = Vec::new();
        for n in [1_000usize, 300_000] {
            let mut sp = dup_span(n, key);
            let before = work::steps();
            let rep = process_span(&mut sp, &opts);
            let steps = work::steps() - before;
            per_attr.push(steps as f64 / n as f64);
            assert!(steps <= 6 * n as u64 + 64, "{key} n={n}: {steps} steps");
            let target = if key == "acme.tag" {
                "acme.current_tag"
            } else {
                "gen_ai.provider.name"
            };
            assert_eq!(count(&sp, target), 1, "{key}");
            assert_eq!(count(&sp, key), 0, "{key}");
            let mut unique = rep.violations.clone();
            unique.sort();
            unique.dedup();
            assert_eq!(unique.len(), rep.violations.len(), "{:?}", rep.violations);
            assert!(
                rep.violations.contains(&format!("conflict:{target}")),
                "{:?}",
                rep.violations
            );
        }
        // Linear: the steps per attribute do not grow with the count.
        assert!(
            per_attr[1] <= per_attr[0] * 1.1 + 0.1,
            "{key}: {per_attr:?}"
        );
    }
}

#[test]
fn custom_mappings_apply_after_builtins() {
    let opts = Options {
        custom_mappings: vec![
            ("acme.model".to_string(), "gen_ai.request.model".to_string()),
            (
                "acme.vendor".to_string(),
                "gen_ai.provider.name".to_string(),
            ),
        ],
        ..Options::default()
    };
    assert_eq!(opts.validate(), Ok(()));
    let mut sp = span(
        CLIENT,
        vec![
            s("gen_ai.operation.name", "chat"),
            s("acme.vendor", "openai"),
            s("acme.model", "m1"),
            s("llm.model_name", "m2"),
        ],
    );
    let rep = process_span(&mut sp, &opts);
    assert_eq!(rep.renamed, 2);
    assert_eq!(str_value(get(&sp, "gen_ai.request.model")), Some("m2"));
    assert_eq!(str_value(get(&sp, "gen_ai.provider.name")), Some("openai"));
    assert_eq!(rep.violations, vec!["conflict:gen_ai.request.model"]);
    // a custom mapping onto the provider makes an LLM span
    let mut only = span(CLIENT, vec![s("acme.vendor", "openai")]);
    assert!(process_span(&mut only, &opts).is_llm_span);
}

#[test]
fn options_validation() {
    let bad = |from: &str, to: &str| Options {
        custom_mappings: vec![(from.to_string(), to.to_string())],
        ..Options::default()
    };
    assert_eq!(bad("", "x").validate(), Err(OptionsError::EmptyName));
    assert!(matches!(
        bad("a", "a").validate(),
        Err(OptionsError::SelfMapping(_))
    ));
    assert!(matches!(
        bad("gen_ai.request.model", "x").validate(),
        Err(OptionsError::SourceIsCurrent(_))
    ));
    assert!(matches!(
        bad("gen_ai.system", "x").validate(),
        Err(OptionsError::SourceIsBuiltin(_))
    ));
    let dup = Options {
        custom_mappings: vec![
            ("a".to_string(), "x".to_string()),
            ("a".to_string(), "y".to_string()),
        ],
        ..Options::default()
    };
    assert!(matches!(
        dup.validate(),
        Err(OptionsError::DuplicateSource(_))
    ));
}

// ----------------------------------------------------------------------------------
// non-LLM spans
// ----------------------------------------------------------------------------------

#[test]
fn non_llm_spans_are_untouched() {
    let cases: Vec<Vec<KeyValue>> = vec![
        vec![],
        vec![
            s("http.request.method", "GET"),
            i("http.response.status_code", 200),
        ],
        vec![i("gen_ai.usage.prompt_tokens", 3), s("llm.model_name", "x")],
        vec![
            s("openinference.span.kind", "CHAIN"),
            s("traceloop.span.kind", "task"),
        ],
        vec![s("llm.request.type", "rerank")],
    ];
    for attrs in cases {
        let mut sp = span(SpanKind::Server, attrs.clone());
        let rep = process_span(&mut sp, &strict());
        assert_eq!(rep, Report::default());
        assert_eq!(sp.attributes, attrs);
        assert!(!is_llm_span(&attrs));
    }
}

// ----------------------------------------------------------------------------------
// validation rules (table-driven)
// ----------------------------------------------------------------------------------

struct Case {
    name: &'static str,
    kind: SpanKind,
    error_status: bool,
    attrs: Vec<KeyValue>,
    opts: Options,
    expect: &'static [&'static str],
}

fn case(name: &'static str, attrs: Vec<KeyValue>, expect: &'static [&'static str]) -> Case {
    Case {
        name,
        kind: CLIENT,
        error_status: false,
        attrs,
        opts: Options::default(),
        expect,
    }
}

fn cases() -> Vec<Case> {
    vec![
        case("compliant chat", chat(), &[]),
        case(
            "missing operation",
            vec![s("gen_ai.provider.name", "openai")],
            &["missing:gen_ai.operation.name"],
        ),
        case(
            "missing provider on inference",
            vec![s("gen_ai.operation.name", "chat")],
            &["missing:gen_ai.provider.name"],
        ),
        case(
            "missing provider on embeddings",
            vec![s("gen_ai.operation.name", "embeddings")],
            &["missing:gen_ai.provider.name"],
        ),
        case(
            "missing provider on create_agent",
            vec![s("gen_ai.operation.name", "create_agent")],
            &["missing:gen_ai.provider.name"],
        ),
        case(
            "missing provider on invoke_agent",
            vec![s("gen_ai.operation.name", "invoke_agent")],
            &["missing:gen_ai.provider.name"],
        ),
        Case {
            kind: INTERNAL,
            ..case(
                "provider not required on execute_tool",
                vec![s("gen_ai.operation.name", "execute_tool")],
                &[],
            )
        },
        case(
            "provider not required on retrieval (undecidable condition)",
            vec![s("gen_ai.operation.name", "retrieval")],
            &[],
        ),
        case(
            "custom operation only needs the operation name",
            vec![s("gen_ai.operation.name", "rerank")],
            &[],
        ),
        Case {
            error_status: true,
            ..case(
                "error status needs error.type",
                chat(),
                &["missing:error.type"],
            )
        },
        Case {
            error_status: true,
            ..case(
                "error status with error.type",
                with(chat(), vec![s("error.type", "timeout")]),
                &[],
            )
        },
        Case {
            error_status: true,
            kind: INTERNAL,
            ..case(
                "error.type on tool span",
                vec![s("gen_ai.operation.name", "execute_tool")],
                &["missing:error.type"],
            )
        },
        Case {
            error_status: true,
            ..case(
                "error.type on custom operation",
                vec![s("gen_ai.operation.name", "rerank")],
                &["missing:error.type"],
            )
        },
        case(
            "server.address needs server.port",
            with(chat(), vec![s("server.address", "api.openai.com")]),
            &["missing:server.port"],
        ),
        case(
            "server.address + port",
            with(
                chat(),
                vec![s("server.address", "api.openai.com"), i("server.port", 443)],
            ),
            &[],
        ),
        case(
            "server.address needs port on custom operation",
            vec![
                s("gen_ai.operation.name", "rerank"),
                s("server.address", "h"),
            ],
            &["missing:server.port"],
        ),
        case(
            "int as string",
            with(chat(), vec![s("gen_ai.usage.cache_read.input_tokens", "5")]),
            &["type:gen_ai.usage.cache_read.input_tokens:string"],
        ),
        case(
            "int as double",
            with(chat(), vec![d("gen_ai.request.max_tokens", 10.0)]),
            &["type:gen_ai.request.max_tokens:double"],
        ),
        case(
            "double accepts int",
            with(chat(), vec![i("gen_ai.request.temperature", 1)]),
            &[],
        ),
        case(
            "double as string",
            with(chat(), vec![s("gen_ai.request.top_p", "0.9")]),
            &["type:gen_ai.request.top_p:string"],
        ),
        case(
            "bool as string",
            with(chat(), vec![s("gen_ai.request.stream", "true")]),
            &["type:gen_ai.request.stream:string"],
        ),
        case(
            "string as int",
            with(chat(), vec![i("gen_ai.response.id", 1)]),
            &["type:gen_ai.response.id:int"],
        ),
        case(
            "string[] as string",
            with(chat(), vec![s("gen_ai.response.finish_reasons", "stop")]),
            &["type:gen_ai.response.finish_reasons:string"],
        ),
        case(
            "string[] as int[]",
            with(
                chat(),
                vec![arr(
                    "gen_ai.request.stop_sequences",
                    vec![Value::IntValue(1)],
                )],
            ),
            &["type:gen_ai.request.stop_sequences:int_array"],
        ),
        case(
            "string[] mixed",
            with(
                chat(),
                vec![arr(
                    "gen_ai.request.encoding_formats",
                    vec![sv("a"), Value::BoolValue(true)],
                )],
            ),
            &["type:gen_ai.request.encoding_formats:mixed_array"],
        ),
        case(
            "empty array accepted",
            with(chat(), vec![arr("gen_ai.response.finish_reasons", vec![])]),
            &[],
        ),
        case(
            "any is not checked",
            with(chat(), vec![i("gen_ai.input.messages", 3)]),
            &[],
        ),
        case(
            "empty value",
            with(
                chat(),
                vec![KeyValue {
                    key: "gen_ai.response.model".to_string(),
                    value: None,
                    ..Default::default()
                }],
            ),
            &["type:gen_ai.response.model:empty"],
        ),
        case(
            "operation name of wrong type",
            vec![
                i("gen_ai.operation.name", 1),
                s("gen_ai.provider.name", "openai"),
            ],
            &["type:gen_ai.operation.name:int"],
        ),
        Case {
            opts: coerce(),
            ..case(
                "coercion converts non-negative integer strings",
                with(chat(), vec![s("gen_ai.usage.cache_read.input_tokens", "5")]),
                &[],
            )
        },
        Case {
            opts: coerce(),
            ..case(
                "coercion rejects negative strings",
                with(
                    chat(),
                    vec![s("gen_ai.usage.cache_read.input_tokens", "-5")],
                ),
                &["type:gen_ai.usage.cache_read.input_tokens:string"],
            )
        },
        Case {
            opts: coerce(),
            ..case(
                "coercion rejects non-numeric strings",
                with(chat(), vec![s("gen_ai.request.seed", "abc")]),
                &["type:gen_ai.request.seed:string"],
            )
        },
        Case {
            opts: coerce(),
            ..case(
                "coercion does not touch doubles",
                with(chat(), vec![d("gen_ai.request.max_tokens", 3.0)]),
                &["type:gen_ai.request.max_tokens:double"],
            )
        },
        case(
            "negative count",
            vec![
                s("gen_ai.operation.name", "chat"),
                s("gen_ai.provider.name", "openai"),
                i("gen_ai.usage.input_tokens", -1),
            ],
            &["range:gen_ai.usage.input_tokens"],
        ),
        case(
            "negative reasoning",
            with(chat(), vec![i("gen_ai.usage.reasoning.output_tokens", -2)]),
            &["range:gen_ai.usage.reasoning.output_tokens"],
        ),
        case(
            "negative max_tokens",
            with(chat(), vec![i("gen_ai.request.max_tokens", -2)]),
            &["range:gen_ai.request.max_tokens"],
        ),
        case(
            "negative seed is fine",
            with(chat(), vec![i("gen_ai.request.seed", -2)]),
            &[],
        ),
        case(
            "port out of range",
            with(
                chat(),
                vec![s("server.address", "h"), i("server.port", 70000)],
            ),
            &["range:server.port"],
        ),
        case(
            "cache read within input",
            with(
                chat(),
                vec![
                    i("gen_ai.usage.cache_read.input_tokens", 60),
                    i("gen_ai.usage.cache_write.input_tokens", 40),
                ],
            ),
            &[],
        ),
        case(
            "cache read exceeds input",
            with(chat(), vec![i("gen_ai.usage.cache_read.input_tokens", 101)]),
            &[RANGE_CACHE_READ_GT_INPUT],
        ),
        case(
            "cache creation exceeds input",
            with(
                chat(),
                vec![i("gen_ai.usage.cache_write.input_tokens", 150)],
            ),
            &[RANGE_CACHE_WRITE_GT_INPUT],
        ),
        case(
            "cache sum exceeds input",
            with(
                chat(),
                vec![
                    i("gen_ai.usage.cache_read.input_tokens", 60),
                    i("gen_ai.usage.cache_write.input_tokens", 41),
                ],
            ),
            &[RANGE_CACHE_SUM_GT_INPUT],
        ),
        case(
            "both caches exceed input",
            with(
                chat(),
                vec![
                    i("gen_ai.usage.cache_read.input_tokens", 101),
                    i("gen_ai.usage.cache_write.input_tokens", 102),
                ],
            ),
            &[RANGE_CACHE_READ_GT_INPUT, RANGE_CACHE_WRITE_GT_INPUT],
        ),
        case(
            "reasoning exceeds output",
            with(chat(), vec![i("gen_ai.usage.reasoning.output_tokens", 21)]),
            &[RANGE_REASONING_GT_OUTPUT],
        ),
        case(
            "reasoning within output",
            with(chat(), vec![i("gen_ai.usage.reasoning.output_tokens", 20)]),
            &[],
        ),
        case(
            "openinference cache mapped then range-checked",
            vec![
                s("openinference.span.kind", "LLM"),
                s("llm.provider", "anthropic"),
                i("llm.token_count.prompt", 10),
                i("llm.token_count.prompt_details.cache_read", 500),
            ],
            &[RANGE_CACHE_READ_GT_INPUT],
        ),
        case(
            "unknown values ignored when not strict",
            vec![
                s("gen_ai.operation.name", "rerank"),
                s("gen_ai.provider.name", "acme"),
                s("gen_ai.output.type", "video"),
            ],
            &[],
        ),
        Case {
            opts: strict(),
            ..case(
                "strict reports unknown enum values",
                vec![
                    s("gen_ai.operation.name", "rerank"),
                    s("gen_ai.provider.name", "acme"),
                    s("gen_ai.output.type", "video"),
                    s("gen_ai.token.type", "cached"),
                ],
                &[
                    "unknown_value:gen_ai.operation.name",
                    "unknown_value:gen_ai.provider.name",
                    "unknown_value:gen_ai.output.type",
                    "unknown_value:gen_ai.token.type",
                ],
            )
        },
        Case {
            opts: strict(),
            ..case("strict accepts well-known values", chat(), &[])
        },
        Case {
            kind: INTERNAL,
            ..case("inference may be INTERNAL", chat(), &[])
        },
        Case {
            kind: SpanKind::Server,
            ..case("inference as SERVER", chat(), &["span_kind:server"])
        },
        Case {
            kind: SpanKind::Unspecified,
            ..case("unspecified kind", chat(), &["span_kind:unspecified"])
        },
        Case {
            kind: INTERNAL,
            ..case(
                "embeddings must be CLIENT",
                vec![
                    s("gen_ai.operation.name", "embeddings"),
                    s("gen_ai.provider.name", "openai"),
                ],
                &["span_kind:internal"],
            )
        },
        Case {
            kind: INTERNAL,
            ..case(
                "create_agent must be CLIENT",
                vec![
                    s("gen_ai.operation.name", "create_agent"),
                    s("gen_ai.provider.name", "openai"),
                ],
                &["span_kind:internal"],
            )
        },
        Case {
            kind: INTERNAL,
            ..case(
                "retrieval must be CLIENT",
                vec![s("gen_ai.operation.name", "retrieval")],
                &["span_kind:internal"],
            )
        },
        case(
            "execute_tool must be INTERNAL",
            vec![s("gen_ai.operation.name", "execute_tool")],
            &["span_kind:client"],
        ),
        Case {
            kind: INTERNAL,
            ..case(
                "invoke_agent may be INTERNAL",
                vec![
                    s("gen_ai.operation.name", "invoke_agent"),
                    s("gen_ai.provider.name", "openai"),
                ],
                &[],
            )
        },
        Case {
            kind: SpanKind::Consumer,
            ..case(
                "custom operation as CONSUMER",
                vec![s("gen_ai.operation.name", "rerank")],
                &["span_kind:consumer"],
            )
        },
        case(
            "bool typed stream ok",
            with(chat(), vec![b("gen_ai.request.stream", true)]),
            &[],
        ),
    ]
}

#[test]
fn validation_rules() {
    for c in cases() {
        let mut sp = span(c.kind, c.attrs);
        if c.error_status {
            sp.status = Some(Status {
                code: StatusCode::Error as i32,
                ..Default::default()
            });
        }
        let rep = process_span(&mut sp, &c.opts);
        assert!(rep.is_llm_span, "{}", c.name);
        let want: Vec<String> = c.expect.iter().map(|s| s.to_string()).collect();
        assert_eq!(sorted(rep.violations.clone()), sorted(want), "{}", c.name);
        for v in &rep.violations {
            let label = metric_label(v);
            assert!(
                rule_ids().iter().any(|r| r == label),
                "{}: {v} -> {label}",
                c.name
            );
            assert_ne!(label, "other", "{}: {v}", c.name);
            assert!(!label.ends_with(":other"), "{}: {v}", c.name);
        }
    }
}

#[test]
fn coercion_rewrites_the_value() {
    let mut sp = span(
        CLIENT,
        with(
            chat(),
            vec![s("gen_ai.usage.cache_read.input_tokens", "42")],
        ),
    );
    let rep = process_span(&mut sp, &coerce());
    assert!(rep.violations.is_empty());
    assert_eq!(
        int_of(get(&sp, "gen_ai.usage.cache_read.input_tokens")),
        Some(42)
    );
    // mapped foreign string counts are coerced after renaming
    let mut sp = span(
        CLIENT,
        vec![
            s("gen_ai.operation.name", "chat"),
            s("gen_ai.provider.name", "openai"),
            s("llm.token_count.prompt", "12"),
        ],
    );
    let rep = process_span(&mut sp, &coerce());
    assert!(rep.violations.is_empty(), "{:?}", rep.violations);
    assert_eq!(int_of(get(&sp, "gen_ai.usage.input_tokens")), Some(12));
}

#[test]
fn compliant_span_is_unchanged() {
    let attrs = with(
        chat(),
        vec![
            s("gen_ai.response.model", "gpt-4o-2024-08-06"),
            i("gen_ai.usage.cache_read.input_tokens", 80),
            s("server.address", "api.openai.com"),
            i("server.port", 443),
        ],
    );
    let mut sp = span(CLIENT, attrs.clone());
    let rep = process_span(&mut sp, &strict());
    assert_eq!(
        rep,
        Report {
            is_llm_span: true,
            violations: vec![],
            renamed: 0
        }
    );
    assert_eq!(sp.attributes, attrs);
}

#[test]
fn full_openllmetry_span_normalises() {
    let mut sp = span(
        CLIENT,
        vec![
            s("gen_ai.system", "Anthropic"),
            s("llm.request.type", "chat"),
            s("gen_ai.request.model", "claude"),
            i("gen_ai.usage.prompt_tokens", 1000),
            i("gen_ai.usage.completion_tokens", 50),
            i("gen_ai.usage.cache_read_input_tokens", 800),
            i("gen_ai.usage.cache_creation_input_tokens", 100),
            i("llm.usage.total_tokens", 1050),
            b("llm.is_streaming", true),
        ],
    );
    let rep = process_span(&mut sp, &strict());
    assert_eq!(rep.renamed, 7);
    assert!(rep.violations.is_empty(), "{:?}", rep.violations);
    assert_eq!(
        str_value(get(&sp, "gen_ai.provider.name")),
        Some("anthropic")
    );
    assert_eq!(str_value(get(&sp, "gen_ai.operation.name")), Some("chat"));
    // no semconv target for total tokens: left alone
    assert_eq!(int_of(get(&sp, "llm.usage.total_tokens")), Some(1050));
}

// ----------------------------------------------------------------------------------
// metric labels
// ----------------------------------------------------------------------------------

#[test]
fn rule_ids_are_sorted_unique_and_closed() {
    let ids = rule_ids();
    let mut sorted_ids = ids.clone();
    sorted_ids.sort();
    sorted_ids.dedup();
    assert_eq!(ids, sorted_ids);
    for must in [
        "missing:gen_ai.operation.name",
        "missing:gen_ai.provider.name",
        "missing:error.type",
        "missing:server.port",
        "type:gen_ai.usage.input_tokens",
        "range:gen_ai.usage.input_tokens",
        "range:server.port",
        RANGE_CACHE_READ_GT_INPUT,
        RANGE_CACHE_WRITE_GT_INPUT,
        RANGE_CACHE_SUM_GT_INPUT,
        RANGE_REASONING_GT_OUTPUT,
        "conflict:gen_ai.provider.name",
        "conflict:openai.request.service_tier",
        "unknown_value:gen_ai.provider.name",
        "span_kind:server",
        "span_kind:unknown",
        "other",
    ] {
        assert!(ids.iter().any(|i| i == must), "{must}");
    }
    assert!(
        ids.len() < 256,
        "label set unexpectedly large: {}",
        ids.len()
    );
}

#[test]
fn metric_label_families() {
    let table: &[(&str, &str)] = &[
        (
            "type:gen_ai.usage.input_tokens:string",
            "type:gen_ai.usage.input_tokens",
        ),
        (
            "missing:gen_ai.operation.name",
            "missing:gen_ai.operation.name",
        ),
        (RANGE_CACHE_SUM_GT_INPUT, RANGE_CACHE_SUM_GT_INPUT),
        ("conflict:acme.custom", "conflict:other"),
        ("type:acme.custom:string", "type:other"),
        ("span_kind:server", "span_kind:server"),
        ("span_kind:weird", "span_kind:other"),
        (
            "unknown_value:gen_ai.output.type",
            "unknown_value:gen_ai.output.type",
        ),
        ("garbage", "other"),
        ("", "other"),
    ];
    let ids = rule_ids();
    for (violation, label) in table {
        assert_eq!(metric_label(violation), *label, "{violation}");
        assert!(ids.iter().any(|i| i == label));
    }
    for a in ACTUAL_TYPES {
        assert_eq!(
            metric_label(&format!("type:gen_ai.request.seed:{a}")),
            "type:gen_ai.request.seed"
        );
    }
}
