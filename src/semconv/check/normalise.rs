//! Renaming deprecated and foreign attribute names to the pinned semantic-convention names.

use super::detect::{apply_value_map, Found, Mapped, Source};
use super::options::{Options, Report};
use super::table::{index, NONE, N_RULES};
use super::values::values_equivalent;
use super::work;

use crate::semconv::rules::{Mapping, Unmapped, MAPPINGS};
use opentelemetry_proto::tonic::common::v1::{any_value::Value, AnyValue, KeyValue};

pub(super) struct Target<'a> {
    name: &'a str,
    rule: Option<usize>,
    value_map: &'static [(&'static str, &'static str)],
    unmapped: Unmapped,
}

pub(super) fn target_of<'a>(source: Source, opts: &'a Options) -> Option<Target<'a>> {
    match source {
        Source::Builtin(m) => {
            let m = usize::from(m);
            let row: &Mapping = MAPPINGS.get(m)?;
            Some(Target {
                name: row.to,
                rule: index()
                    .map_target
                    .get(m)
                    .copied()
                    .flatten()
                    .map(usize::from),
                value_map: row.value_map,
                unmapped: row.unmapped,
            })
        }
        Source::Custom(c) => {
            let (_, to) = opts.custom_mappings.get(usize::from(c))?;
            Some(Target {
                name: to.as_str(),
                rule: index().rule_of(to),
                value_map: &[],
                unmapped: Unmapped::PassThrough,
            })
        }
    }
}

pub(super) fn mapped_value(mapped: &Mapped, original: Option<&AnyValue>) -> Option<AnyValue> {
    match mapped {
        Mapped::Same => original.cloned(),
        Mapped::Renamed(s) => Some(string_value(s)),
    }
}

pub(super) fn string_value(s: &str) -> AnyValue {
    AnyValue {
        value: Some(Value::StringValue(s.to_string())),
    }
}

/// Returns true when the attribute list changed.
pub(super) fn normalize(
    attrs: &mut Vec<KeyValue>,
    found: &mut [Found],
    cur: &mut [u32; N_RULES],
    opts: &Options,
    report: &mut Report,
) -> bool {
    found.sort_unstable_by_key(Found::priority);
    // Positions to remove, as a mark per attribute (one pass to apply, whatever the count).
    let mut remove: Vec<bool> = Vec::new();
    // First position of each name, built once when a target without a rule slot needs it.
    let mut by_name: Option<std::collections::HashMap<String, usize>> = None;
    let mut changed = false;
    for f in found.iter() {
        work::step(1);
        let i = f.attr as usize;
        let Some(target) = target_of(f.source, opts) else {
            continue;
        };
        if i >= attrs.len() {
            continue;
        }
        let Some(mapped) =
            apply_value_map(target.value_map, target.unmapped, attrs[i].value.as_ref())
        else {
            continue; // value without equivalent: leave the source alone
        };
        let existing = match target.rule {
            Some(r) => (cur[r] != NONE).then_some(cur[r] as usize),
            None => by_name
                .get_or_insert_with(|| {
                    let mut m = std::collections::HashMap::with_capacity(attrs.len());
                    for (p, kv) in attrs.iter().enumerate() {
                        work::step(1);
                        m.entry(kv.key.clone()).or_insert(p);
                    }
                    m
                })
                .get(target.name)
                .copied(),
        };
        if let Some(t) = existing {
            let equivalent = match &mapped {
                Mapped::Same => values_equivalent(attrs[i].value.as_ref(), attrs[t].value.as_ref()),
                Mapped::Renamed(s) => {
                    values_equivalent(Some(&string_value(s)), attrs[t].value.as_ref())
                }
            };
            if !equivalent {
                report.violations.push(format!("conflict:{}", target.name));
            }
            // A conflicting source that the shared usage reader also reads (the
            // `cache_creation` alias of `cache_write`) stays, so `cost` sees the conflict and
            // refuses to price the span instead of silently using one value.
            let keep_for_pricing =
                !equivalent && crate::cost::usage::ATTRIBUTES.contains(&attrs[i].key.as_str());
            if !opts.keep_originals && !keep_for_pricing {
                if remove.is_empty() {
                    remove = vec![false; attrs.len()];
                }
                remove[i] = true;
                changed = true;
            }
            continue;
        }
        let new_pos = if opts.keep_originals {
            let value = mapped_value(&mapped, attrs[i].value.as_ref());
            attrs.push(KeyValue {
                key: target.name.to_string(),
                value,
                ..Default::default()
            });
            attrs.len() - 1
        } else {
            let kv = &mut attrs[i];
            kv.key = target.name.to_string();
            if let Mapped::Renamed(s) = mapped {
                kv.value = Some(string_value(s));
            }
            i
        };
        if let Some(r) = target.rule {
            cur[r] = u32::try_from(new_pos).unwrap_or(NONE);
        }
        if let Some(m) = by_name.as_mut() {
            m.entry(target.name.to_string()).or_insert(new_pos);
        }
        report.renamed += 1;
        changed = true;
    }
    if !remove.is_empty() {
        let mut pos = 0usize;
        attrs.retain(|_| {
            work::step(1);
            let keep = !remove.get(pos).copied().unwrap_or(false);
            pos += 1;
            keep
        });
    }
    changed
}

/// Removes repeated violation ids, keeping the first of each in order (linear).
pub(super) fn dedup_violations(v: &mut Vec<String>) {
    if v.len() < 2 {
        return;
    }
    let mut seen = std::collections::HashSet::with_capacity(v.len());
    v.retain(|id| {
        work::step(1);
        seen.insert(id.clone())
    });
}
