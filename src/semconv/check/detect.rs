//! Which spans are GenAI spans, and which attributes on a span the table knows.

use super::options::Options;
use super::table::{index, to_u16, Entry, NONE, N_RULES, OP, PROVIDER};
use super::work;

use crate::semconv::rules::{Unmapped, ATTRIBUTES, MAPPINGS};
use opentelemetry_proto::tonic::common::v1::{any_value::Value, AnyValue, KeyValue};

pub(super) fn str_value(v: Option<&AnyValue>) -> Option<&str> {
    match v.and_then(|v| v.value.as_ref()) {
        Some(Value::StringValue(s)) => Some(s.as_str()),
        _ => None,
    }
}

/// Result of applying a mapping row to a source value.
pub(super) enum Mapped {
    /// Copy the value unchanged.
    Same,
    /// Replace by this string.
    Renamed(&'static str),
}

pub(super) fn apply_value_map(
    value_map: &'static [(&'static str, &'static str)],
    unmapped: Unmapped,
    value: Option<&AnyValue>,
) -> Option<Mapped> {
    if let Some(s) = str_value(value) {
        if let Some((_, new)) = value_map.iter().find(|(old, _)| *old == s) {
            return Some(Mapped::Renamed(new));
        }
    }
    match unmapped {
        Unmapped::PassThrough => Some(Mapped::Same),
        Unmapped::Skip => None,
    }
}

pub(super) fn marks_llm(target: &str) -> bool {
    target == ATTRIBUTES[OP].name || target == ATTRIBUTES[PROVIDER].name
}

pub(super) fn builtin_marks_llm(m: usize, value: Option<&AnyValue>) -> bool {
    let row = &MAPPINGS[m];
    marks_llm(row.to) && apply_value_map(row.value_map, row.unmapped, value).is_some()
}

/// Whether the attributes describe an LLM (GenAI) span: `gen_ai.operation.name`
/// or `gen_ai.provider.name`, or a built-in mapped equivalent of either.
pub fn is_llm_span(attrs: &[KeyValue]) -> bool {
    let idx = index();
    attrs.iter().any(|kv| match idx.lookup(&kv.key) {
        Some(Entry::Rule(r)) => usize::from(r) == OP || usize::from(r) == PROVIDER,
        Some(Entry::Map(m)) => builtin_marks_llm(usize::from(m), kv.value.as_ref()),
        None => false,
    })
}

#[derive(Debug, Clone, Copy)]
pub(super) enum Source {
    Builtin(u16),
    Custom(u16),
}

#[derive(Debug, Clone, Copy)]
pub(super) struct Found {
    pub(super) attr: u32,
    pub(super) source: Source,
}

impl Found {
    pub(super) fn priority(&self) -> usize {
        match self.source {
            Source::Builtin(m) => usize::from(m),
            Source::Custom(c) => MAPPINGS.len() + usize::from(c),
        }
    }
}

/// Pass 1: locate current names (first occurrence wins) and mapping sources.
pub(super) fn scan(
    attrs: &[KeyValue],
    opts: &Options,
    cur: &mut [u32; N_RULES],
    found: &mut Option<Vec<Found>>,
) -> bool {
    let idx = index();
    let mut llm = false;
    for (i, kv) in attrs.iter().enumerate() {
        work::step(1);
        let pos = u32::try_from(i).unwrap_or(NONE);
        match idx.lookup(&kv.key) {
            Some(Entry::Rule(r)) => {
                let r = usize::from(r);
                if cur[r] == NONE {
                    cur[r] = pos;
                }
                llm |= r == OP || r == PROVIDER;
            }
            Some(Entry::Map(m)) => {
                llm |= builtin_marks_llm(usize::from(m), kv.value.as_ref());
                found.get_or_insert_with(Vec::new).push(Found {
                    attr: pos,
                    source: Source::Builtin(m),
                });
            }
            None => {
                if let Some(c) = opts.custom_mappings.iter().position(|(f, _)| *f == kv.key) {
                    llm |= marks_llm(&opts.custom_mappings[c].1);
                    found.get_or_insert_with(Vec::new).push(Found {
                        attr: pos,
                        source: Source::Custom(to_u16(c)),
                    });
                }
            }
        }
    }
    llm
}

/// Pass 2 (only after normalisation changed the list): re-locate current names.
pub(super) fn rescan_rules(attrs: &[KeyValue], cur: &mut [u32; N_RULES]) {
    let idx = index();
    cur.fill(NONE);
    for (i, kv) in attrs.iter().enumerate() {
        work::step(1);
        if let Some(r) = idx.rule_of(&kv.key) {
            if cur[r] == NONE {
                cur[r] = u32::try_from(i).unwrap_or(NONE);
            }
        }
    }
}
