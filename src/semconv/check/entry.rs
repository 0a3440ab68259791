//! The entry point that checks one span end to end, and the labels its findings are counted
//! under.

use super::detect::{rescan_rules, scan, Found};
use super::normalise::{dedup_violations, normalize};
use super::options::{
    Options, Report, RANGE_CACHE_READ_GT_INPUT, RANGE_CACHE_SUM_GT_INPUT,
    RANGE_CACHE_WRITE_GT_INPUT, RANGE_REASONING_GT_OUTPUT, SPAN_KIND_NAMES, VIOLATION_KINDS,
};
use super::table::{NONE, N_RULES, OP, SERVER_PORT};
use super::validate::validate;

use crate::semconv::rules::{AttrType, ATTRIBUTES, COUNT_ATTRIBUTES, MAPPINGS, SPAN_REQUIREMENTS};
use opentelemetry_proto::tonic::trace::v1::Span;
use std::sync::OnceLock;

/// Normalises `span.attributes` in place (when `opts.normalize`) and validates
/// them. Non-LLM spans are left untouched.
pub fn process_span(span: &mut Span, opts: &Options) -> Report {
    let mut report = Report::default();
    let mut cur = [NONE; N_RULES];
    let mut found: Option<Vec<Found>> = None;
    if !scan(&span.attributes, opts, &mut cur, &mut found) {
        return report;
    }
    report.is_llm_span = true;
    if opts.normalize {
        if let Some(found) = found.as_mut() {
            if normalize(&mut span.attributes, found, &mut cur, opts, &mut report) {
                rescan_rules(&span.attributes, &mut cur);
            }
        }
    }
    let mut violations = std::mem::take(&mut report.violations);
    validate(span, &cur, opts, &mut violations);
    dedup_violations(&mut violations);
    report.violations = violations;
    report
}

pub(super) fn labels() -> &'static [String] {
    static LABELS: OnceLock<Vec<String>> = OnceLock::new();
    LABELS.get_or_init(|| {
        let mut v: Vec<String> = Vec::new();
        v.push(format!("missing:{}", ATTRIBUTES[OP].name));
        for row in SPAN_REQUIREMENTS {
            if row.condition.is_decidable() {
                v.push(format!("missing:{}", row.attr));
            }
        }
        for rule in ATTRIBUTES {
            if rule.ty != AttrType::Any {
                v.push(format!("type:{}", rule.name));
            }
            if !rule.well_known.is_empty() {
                v.push(format!("unknown_value:{}", rule.name));
            }
        }
        for name in COUNT_ATTRIBUTES {
            v.push(format!("range:{name}"));
        }
        v.push(format!("range:{}", ATTRIBUTES[SERVER_PORT].name));
        for id in [
            RANGE_CACHE_READ_GT_INPUT,
            RANGE_CACHE_WRITE_GT_INPUT,
            RANGE_CACHE_SUM_GT_INPUT,
            RANGE_REASONING_GT_OUTPUT,
        ] {
            v.push(id.to_string());
        }
        for m in MAPPINGS {
            v.push(format!("conflict:{}", m.to));
        }
        for k in SPAN_KIND_NAMES {
            v.push(format!("span_kind:{k}"));
        }
        for kind in VIOLATION_KINDS {
            v.push(format!("{kind}:other"));
        }
        v.push("other".to_string());
        v.sort_unstable();
        v.dedup();
        v
    })
}

/// The closed, finite set of violation families used as metric labels.
/// Every value returned by [`metric_label`] is a member.
pub fn rule_ids() -> Vec<String> {
    labels().to_vec()
}

/// Maps a violation id to its bounded metric label (its family), e.g.
/// `type:gen_ai.usage.input_tokens:string` → `type:gen_ai.usage.input_tokens`.
pub fn metric_label(violation: &str) -> &'static str {
    let family = match violation.find(':') {
        Some(p1) => match violation[p1 + 1..].find(':') {
            Some(p2) => &violation[..p1 + 1 + p2],
            None => violation,
        },
        None => violation,
    };
    let labels = labels();
    if let Ok(i) = labels.binary_search_by(|l| l.as_str().cmp(family)) {
        return labels[i].as_str();
    }
    match violation.split(':').next() {
        Some("missing") => "missing:other",
        Some("type") => "type:other",
        Some("range") => "range:other",
        Some("conflict") => "conflict:other",
        Some("unknown_value") => "unknown_value:other",
        Some("span_kind") => "span_kind:other",
        _ => "other",
    }
}
