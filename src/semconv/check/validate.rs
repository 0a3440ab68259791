//! Checking a span's attributes against the requirement and type rules.

use crate::cost::usage::parse_count;

use super::detect::str_value;
use super::options::{
    Options, RANGE_CACHE_READ_GT_INPUT, RANGE_CACHE_SUM_GT_INPUT, RANGE_CACHE_WRITE_GT_INPUT,
    RANGE_REASONING_GT_OUTPUT,
};
use super::table::{
    index, CACHE_READ, CACHE_WRITE, ERROR_TYPE, INPUT, NONE, N_RULES, OP, OUTPUT, REASONING,
    SERVER_ADDRESS, SERVER_PORT,
};
use super::values::{actual_type, int_of, span_kind_name, type_matches};

use crate::semconv::rules::{
    AttrRule, AttrType, Condition, GenAiSpan, ATTRIBUTES, GENERIC_EXPECTED_KINDS, SPAN_REQUIREMENTS,
};
use opentelemetry_proto::tonic::common::v1::{any_value::Value, AnyValue, KeyValue};
use opentelemetry_proto::tonic::trace::v1::{status::StatusCode, Span};

pub(super) fn validate(
    span: &mut Span,
    cur: &[u32; N_RULES],
    opts: &Options,
    out: &mut Vec<String>,
) {
    let idx = index();
    let status_error = span
        .status
        .as_ref()
        .is_some_and(|s| s.code == StatusCode::Error as i32);
    let attrs = &mut span.attributes;
    let at = |r: usize| (cur[r] != NONE).then_some(cur[r] as usize);

    // Span definition selected by the operation name.
    let def = at(OP)
        .and_then(|i| str_value(attrs[i].value.as_ref()))
        .and_then(GenAiSpan::for_operation);

    // 1. presence
    if at(OP).is_none() {
        out.push(format!("missing:{}", ATTRIBUTES[OP].name));
    }
    if let Some(def) = def {
        for (row, rule) in SPAN_REQUIREMENTS.iter().zip(&idx.req_rule) {
            let Some(r) = rule.map(usize::from) else {
                continue;
            };
            if row.span != def || r == OP || at(r).is_some() {
                continue;
            }
            let applies = match row.condition {
                Condition::Always => true,
                Condition::StatusError => status_error,
                Condition::ServerAddressSet => at(SERVER_ADDRESS).is_some(),
                Condition::NotDecidable(_) => false,
            };
            if applies {
                out.push(format!("missing:{}", row.attr));
            }
        }
    } else {
        // No span definition (invoke_workflow, custom operation, or no operation):
        // apply the two decidable conditions every GenAI client span shares.
        if status_error && at(ERROR_TYPE).is_none() {
            out.push(format!("missing:{}", ATTRIBUTES[ERROR_TYPE].name));
        }
        if at(SERVER_ADDRESS).is_some() && at(SERVER_PORT).is_none() {
            out.push(format!("missing:{}", ATTRIBUTES[SERVER_PORT].name));
        }
    }

    // 2. per attribute: type, coercion, range, well-known values
    for (r, rule) in ATTRIBUTES.iter().enumerate() {
        let Some(i) = at(r) else { continue };
        check_attribute(rule, idx.is_count[r], &mut attrs[i], opts, out);
    }

    // 3. cross-attribute token accounting
    let int_at = |r: usize| at(r).and_then(|i| int_of(attrs[i].value.as_ref()));
    if let Some(input) = int_at(INPUT) {
        let read = int_at(CACHE_READ);
        let creation = int_at(CACHE_WRITE);
        let read_gt = read.is_some_and(|c| c > input);
        let creation_gt = creation.is_some_and(|c| c > input);
        if read_gt {
            out.push(RANGE_CACHE_READ_GT_INPUT.to_string());
        }
        if creation_gt {
            out.push(RANGE_CACHE_WRITE_GT_INPUT.to_string());
        }
        if let (Some(a), Some(b), false, false) = (read, creation, read_gt, creation_gt) {
            if i128::from(a) + i128::from(b) > i128::from(input) {
                out.push(RANGE_CACHE_SUM_GT_INPUT.to_string());
            }
        }
    }
    if let (Some(output), Some(reasoning)) = (int_at(OUTPUT), int_at(REASONING)) {
        if reasoning > output {
            out.push(RANGE_REASONING_GT_OUTPUT.to_string());
        }
    }

    // 4. span kind
    let expected = def.map_or(GENERIC_EXPECTED_KINDS, GenAiSpan::expected_kinds);
    if !expected.contains(&span.kind) {
        out.push(format!("span_kind:{}", span_kind_name(span.kind)));
    }
}

pub(super) fn check_attribute(
    rule: &AttrRule,
    is_count: bool,
    kv: &mut KeyValue,
    opts: &Options,
    out: &mut Vec<String>,
) {
    let actual = actual_type(kv.value.as_ref());
    if !type_matches(rule.ty, actual) {
        // The same parser as `cost` and the ledger (crate::cost::usage::parse_count), so a
        // value coerced here is the value priced there.
        let coerced = if rule.ty == AttrType::Int && opts.coerce_numeric_strings {
            match kv.value.as_ref().and_then(|v| v.value.as_ref()) {
                Some(v @ Value::StringValue(_)) => parse_count(v).ok(),
                Some(v @ Value::DoubleValue(_)) if rule.name.starts_with("gen_ai.usage.") => {
                    parse_count(v).ok()
                }
                _ => None,
            }
            .and_then(|n| i64::try_from(n).ok())
        } else {
            None
        };
        match coerced {
            Some(n) => {
                kv.value = Some(AnyValue {
                    value: Some(Value::IntValue(n)),
                })
            }
            None => {
                out.push(format!("type:{}:{}", rule.name, actual.as_str()));
                return;
            }
        }
    }
    if let Some(n) = int_of(kv.value.as_ref()) {
        let out_of_range = if is_count {
            n < 0
        } else if rule.name == ATTRIBUTES[SERVER_PORT].name {
            !(0..=65535).contains(&n)
        } else {
            false
        };
        if out_of_range {
            out.push(format!("range:{}", rule.name));
        }
    }
    if opts.strict && !rule.well_known.is_empty() {
        if let Some(s) = str_value(kv.value.as_ref()) {
            if !rule.well_known.contains(&s) {
                out.push(format!("unknown_value:{}", rule.name));
            }
        }
    }
}
