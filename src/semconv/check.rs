//! Pure normalisation + validation of OTLP span attributes against the GenAI
//! rule table in [`super::rules`] (semantic conventions
//! [`SEMCONV_VERSION`](super::rules::SEMCONV_VERSION)).
//!
//! # What [`process_span`] does
//!
//! 1. **Detect.** A span is an LLM span when it carries `gen_ai.operation.name`
//!    or `gen_ai.provider.name`, or any source name that maps onto one of those
//!    two (a built-in [`MAPPINGS`] row or an [`Options::custom_mappings`] pair).
//!    For value-restricted rows ([`Unmapped::Skip`], e.g.
//!    `openinference.span.kind`) only values that have an equivalent count:
//!    `openinference.span.kind = CHAIN` alone does not make an LLM span.
//!    Non-LLM spans are never modified and get `is_llm_span = false`.
//! 2. **Normalise** (when [`Options::normalize`]). Every deprecated / foreign
//!    name is renamed to its current name, applying the row's value renames.
//!    Precedence: the current name always wins, then mapping rows in table
//!    order, then custom mappings in the order given. When a lower-precedence
//!    source is present with a *different* value than the winner, nothing is
//!    resolved silently: the winner's value is kept and `conflict:<target>` is
//!    reported (and a conflicting `gen_ai.usage.cache_creation.input_tokens` is left in
//!    place, so `cost` refuses the span as `invalid_usage`). With `keep_originals = false` the source attribute is removed
//!    (renamed in place when it is the winner); with `keep_originals = true` it
//!    is left as is and the current name is appended.
//!    [`Report::renamed`] counts attributes written under a current name
//!    (renamed or copied); dropping a redundant duplicate does not count.
//! 3. **Validate** the (normalised) attributes and report violation ids.
//!
//! # Violation ids
//!
//! | id | when |
//! | --- | --- |
//! | `missing:<attr>` | a Required attribute of the span's definition is absent, or a Conditionally Required one whose condition is decidable and holds (see below) |
//! | `type:<attr>:<actual>` | the value type differs from the registry type; `<actual>` is one of [`ACTUAL_TYPES`] |
//! | `range:<attr>` | a count attribute ([`COUNT_ATTRIBUTES`]) is negative, or `server.port` is outside 0..=65535 |
//! | `range:gen_ai.usage.cache_read.input_tokens>input_tokens` | cache reads exceed `gen_ai.usage.input_tokens` |
//! | `range:gen_ai.usage.cache_write.input_tokens>input_tokens` | cache writes exceed `gen_ai.usage.input_tokens` |
//! | `range:gen_ai.usage.cache_read+cache_write>input_tokens` | neither alone, but their sum exceeds `gen_ai.usage.input_tokens` |
//! | `range:gen_ai.usage.reasoning.output_tokens>output_tokens` | reasoning tokens exceed `gen_ai.usage.output_tokens` |
//! | `conflict:<attr>` | two source names for `<attr>` carry different values |
//! | `unknown_value:<attr>` | strict mode only: an enum attribute carries a value that is not a well-known member |
//! | `span_kind:<kind>` | the span kind is not one the spec expects for the operation; `<kind>` is one of `unspecified`, `internal`, `server`, `client`, `producer`, `consumer`, `unknown` |
//!
//! The cache rules follow the v1.41.0 wording "The value SHOULD be included in
//! `gen_ai.usage.input_tokens`" (reasoning: "... in `gen_ai.usage.output_tokens`").
//! A violation usually means the producer reports provider-native disjoint
//! buckets (Anthropic-style `input_tokens` that exclude cache tokens).
//!
//! Conditionally Required rules are enforced only where the condition is
//! decidable from the span itself:
//! * `error.type` — "if the operation ended in an error": enforced when
//!   `span.status.code == STATUS_CODE_ERROR`.
//! * `server.port` — "If `server.address` is set": enforced when
//!   `server.address` is present.
//!
//! All other conditions ("If available", "when available", "if the request
//! includes a seed", "If provided by the application", ...) are not decidable
//! and never reported.
//!
//! # Types
//!
//! * `int` attributes arriving as `string` or `double` are `type:` violations.
//!   With [`Options::coerce_numeric_strings`], a string that is a token count by
//!   the shared rule of [`crate::cost::usage::parse_count`] (plain ASCII digits,
//!   fitting in `i64`), and on `gen_ai.usage.*` a whole double of at most 2^53,
//!   is converted in place to an int value and is **not** reported; other values
//!   still are.
//! * `double` attributes accept `int` values (lossless; SDKs such as
//!   OpenTelemetry JS encode integral numbers as int).
//! * Array attributes accept an empty array; `any` attributes are not checked.
//!
//! # Metric labels
//!
//! Violation ids can embed an observed type, so [`metric_label`] maps every id
//! to its family (`type:gen_ai.usage.input_tokens:string` →
//! `type:gen_ai.usage.input_tokens`). [`rule_ids`] is the closed set of
//! families; ids outside the table (e.g. conflicts on a custom mapping target)
//! map to `<kind>:other`, anything else to `other`.
//!
//! # Cost
//!
//! One pass over the attributes with a binary search per key in a table that
//! is built once per process. Compliant spans cause no allocation; a second
//! pass happens only when normalisation changed the attribute list.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};
use std::sync::OnceLock;

use opentelemetry_proto::tonic::common::v1::{any_value::Value, AnyValue, KeyValue};
use opentelemetry_proto::tonic::trace::v1::{status::StatusCode, Span};

use crate::cost::usage::parse_count;

use super::rules::{
    rule_index, AttrRule, AttrType, Condition, GenAiSpan, Mapping, Unmapped, ATTRIBUTES,
    ATTRIBUTE_RULES, COUNT_ATTRIBUTES, GENERIC_EXPECTED_KINDS, MAPPINGS, SPAN_REQUIREMENTS,
};

/// Behaviour switches for [`process_span`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Options {
    /// Rename deprecated / foreign names to the pinned names.
    pub normalize: bool,
    /// Keep the source attribute next to the normalised one.
    pub keep_originals: bool,
    /// Report `unknown_value:` for enum attributes with non-member values.
    pub strict: bool,
    /// Convert non-negative integer strings on `int` attributes to ints.
    pub coerce_numeric_strings: bool,
    /// Extra `(from, to)` renames, applied after the built-in [`MAPPINGS`]
    /// (values copied unchanged). Check them with [`Options::validate`].
    pub custom_mappings: Vec<(String, String)>,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            normalize: true,
            keep_originals: false,
            strict: false,
            coerce_numeric_strings: false,
            custom_mappings: Vec::new(),
        }
    }
}

/// Invalid [`Options`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OptionsError {
    #[error("custom mapping has an empty attribute name")]
    EmptyName,
    #[error("custom mapping maps `{0}` onto itself")]
    SelfMapping(String),
    #[error("custom mapping source `{0}` is a current semantic-convention attribute")]
    SourceIsCurrent(String),
    #[error("custom mapping source `{0}` is already a built-in mapping source")]
    SourceIsBuiltin(String),
    #[error("custom mapping source `{0}` is listed twice")]
    DuplicateSource(String),
}

impl Options {
    /// Rejects custom mappings that could never apply or would be ambiguous.
    pub fn validate(&self) -> Result<(), OptionsError> {
        let idx = index();
        for (n, (from, to)) in self.custom_mappings.iter().enumerate() {
            if from.is_empty() || to.is_empty() {
                return Err(OptionsError::EmptyName);
            }
            if from == to {
                return Err(OptionsError::SelfMapping(from.clone()));
            }
            match idx.lookup(from) {
                Some(Entry::Rule(_)) => return Err(OptionsError::SourceIsCurrent(from.clone())),
                Some(Entry::Map(_)) => return Err(OptionsError::SourceIsBuiltin(from.clone())),
                None => {}
            }
            if self.custom_mappings[..n].iter().any(|(f, _)| f == from) {
                return Err(OptionsError::DuplicateSource(from.clone()));
            }
        }
        Ok(())
    }
}

/// Outcome of [`process_span`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Report {
    pub is_llm_span: bool,
    /// Violation ids (see the module docs), in a deterministic order.
    pub violations: Vec<String>,
    /// Attributes written under a current name by normalisation.
    pub renamed: u32,
}

/// Observed value types that can appear in `type:<attr>:<actual>`.
pub const ACTUAL_TYPES: &[&str] = &[
    "empty",
    "string",
    "bool",
    "int",
    "double",
    "string_array",
    "bool_array",
    "int_array",
    "double_array",
    "mixed_array",
    "empty_array",
    "kvlist",
    "bytes",
    "strindex",
];

const SPAN_KIND_NAMES: &[&str] = &[
    "unspecified",
    "internal",
    "server",
    "client",
    "producer",
    "consumer",
    "unknown",
];

/// Violation id: cache reads exceed input tokens.
pub const RANGE_CACHE_READ_GT_INPUT: &str =
    "range:gen_ai.usage.cache_read.input_tokens>input_tokens";
/// Violation id: cache writes exceed input tokens.
pub const RANGE_CACHE_WRITE_GT_INPUT: &str =
    "range:gen_ai.usage.cache_write.input_tokens>input_tokens";
/// Violation id: cache reads + writes exceed input tokens.
pub const RANGE_CACHE_SUM_GT_INPUT: &str = "range:gen_ai.usage.cache_read+cache_write>input_tokens";
/// Violation id: reasoning tokens exceed output tokens.
pub const RANGE_REASONING_GT_OUTPUT: &str =
    "range:gen_ai.usage.reasoning.output_tokens>output_tokens";

const VIOLATION_KINDS: &[&str] = &[
    "missing",
    "type",
    "range",
    "conflict",
    "unknown_value",
    "span_kind",
];

// ---------------------------------------------------------------------------------------
// static lookup table (built once per process)
// ---------------------------------------------------------------------------------------

const N_RULES: usize = ATTRIBUTE_RULES.len();
const NONE: u32 = u32::MAX;

const OP: usize = rule_index("gen_ai.operation.name");
const PROVIDER: usize = rule_index("gen_ai.provider.name");
const INPUT: usize = rule_index("gen_ai.usage.input_tokens");
const OUTPUT: usize = rule_index("gen_ai.usage.output_tokens");
const CACHE_READ: usize = rule_index("gen_ai.usage.cache_read.input_tokens");
const CACHE_WRITE: usize = rule_index("gen_ai.usage.cache_write.input_tokens");
const REASONING: usize = rule_index("gen_ai.usage.reasoning.output_tokens");
const ERROR_TYPE: usize = rule_index("error.type");
const SERVER_ADDRESS: usize = rule_index("server.address");
const SERVER_PORT: usize = rule_index("server.port");
// Compile-time proof that every name above is in the rule table.
const _: () = {
    let all = [
        OP,
        PROVIDER,
        INPUT,
        OUTPUT,
        CACHE_READ,
        CACHE_WRITE,
        REASONING,
        ERROR_TYPE,
        SERVER_ADDRESS,
        SERVER_PORT,
    ];
    let mut i = 0;
    while i < all.len() {
        assert!(all[i] < N_RULES);
        i += 1;
    }
};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Entry {
    Rule(u16),
    Map(u16),
}

struct Index {
    /// Current names and built-in mapping sources (every attribute of every span is looked
    /// up here, so a hash of the name replaces a binary search of string compares).
    keys: HashMap<&'static str, Entry, BuildHasherDefault<Fnv1a>>,
    /// For each `MAPPINGS` row: rule index of its target, if the target is a rule.
    map_target: Vec<Option<u16>>,
    /// For each `SPAN_REQUIREMENTS` row: rule index of its attribute.
    req_rule: Vec<Option<u16>>,
    /// Per rule: whether it is a count attribute.
    is_count: [bool; N_RULES],
}

impl Index {
    fn lookup(&self, key: &str) -> Option<Entry> {
        self.keys.get(key).copied()
    }

    fn rule_of(&self, key: &str) -> Option<usize> {
        match self.lookup(key) {
            Some(Entry::Rule(r)) => Some(usize::from(r)),
            _ => None,
        }
    }
}

/// FNV-1a: attribute names are short and not attacker-chosen keys of a growing table (the
/// table is fixed), so a simple fast hash is enough.
#[derive(Default)]
struct Fnv1a(u64);

impl Hasher for Fnv1a {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        let mut h = if self.0 == 0 {
            0xcbf2_9ce4_8422_2325
        } else {
            self.0
        };
        for b in bytes {
            h = (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3);
        }
        self.0 = h;
    }
}

fn to_u16(i: usize) -> u16 {
    u16::try_from(i).unwrap_or(u16::MAX)
}

fn index() -> &'static Index {
    static INDEX: OnceLock<Index> = OnceLock::new();
    INDEX.get_or_init(|| {
        let mut keys: Vec<(&'static str, Entry)> = ATTRIBUTES
            .iter()
            .enumerate()
            .map(|(i, r)| (r.name, Entry::Rule(to_u16(i))))
            .collect();
        for (i, m) in MAPPINGS.iter().enumerate() {
            // A source that is also a current name would be ambiguous; the rule wins
            // (the rules tests assert this never happens).
            if !keys.iter().any(|(k, _)| *k == m.from) {
                keys.push((m.from, Entry::Map(to_u16(i))));
            }
        }
        keys.sort_unstable_by(|a, b| a.0.cmp(b.0));
        keys.dedup_by(|a, b| a.0 == b.0);
        let keys = keys.into_iter().collect();
        let rule_pos = |name: &str| ATTRIBUTES.iter().position(|r| r.name == name).map(to_u16);
        let mut is_count = [false; N_RULES];
        for name in COUNT_ATTRIBUTES {
            if let Some(p) = rule_pos(name) {
                is_count[usize::from(p)] = true;
            }
        }
        Index {
            map_target: MAPPINGS.iter().map(|m| rule_pos(m.to)).collect(),
            req_rule: SPAN_REQUIREMENTS.iter().map(|r| rule_pos(r.attr)).collect(),
            keys,
            is_count,
        }
    })
}

// ---------------------------------------------------------------------------------------
// detection
// ---------------------------------------------------------------------------------------

fn str_value(v: Option<&AnyValue>) -> Option<&str> {
    match v.and_then(|v| v.value.as_ref()) {
        Some(Value::StringValue(s)) => Some(s.as_str()),
        _ => None,
    }
}

/// Result of applying a mapping row to a source value.
enum Mapped {
    /// Copy the value unchanged.
    Same,
    /// Replace by this string.
    Renamed(&'static str),
}

fn apply_value_map(
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

fn marks_llm(target: &str) -> bool {
    target == ATTRIBUTES[OP].name || target == ATTRIBUTES[PROVIDER].name
}

fn builtin_marks_llm(m: usize, value: Option<&AnyValue>) -> bool {
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
enum Source {
    Builtin(u16),
    Custom(u16),
}

#[derive(Debug, Clone, Copy)]
struct Found {
    attr: u32,
    source: Source,
}

impl Found {
    fn priority(&self) -> usize {
        match self.source {
            Source::Builtin(m) => usize::from(m),
            Source::Custom(c) => MAPPINGS.len() + usize::from(c),
        }
    }
}

/// Pass 1: locate current names (first occurrence wins) and mapping sources.
fn scan(
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
fn rescan_rules(attrs: &[KeyValue], cur: &mut [u32; N_RULES]) {
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

// ---------------------------------------------------------------------------------------
// normalisation
// ---------------------------------------------------------------------------------------

struct Target<'a> {
    name: &'a str,
    rule: Option<usize>,
    value_map: &'static [(&'static str, &'static str)],
    unmapped: Unmapped,
}

fn target_of<'a>(source: Source, opts: &'a Options) -> Option<Target<'a>> {
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

fn mapped_value(mapped: &Mapped, original: Option<&AnyValue>) -> Option<AnyValue> {
    match mapped {
        Mapped::Same => original.cloned(),
        Mapped::Renamed(s) => Some(string_value(s)),
    }
}

fn string_value(s: &str) -> AnyValue {
    AnyValue {
        value: Some(Value::StringValue(s.to_string())),
    }
}

/// Returns true when the attribute list changed.
fn normalize(
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

/// Counts the per-attribute steps of [`process_span`] in tests, so linear time is asserted
/// by counting work rather than timing it (a no-op outside tests).
pub(crate) mod work {
    #[cfg(test)]
    thread_local! {
        static STEPS: std::cell::Cell<u64> = const { std::cell::Cell::new(0) };
    }

    #[inline(always)]
    pub fn step(_n: u64) {
        #[cfg(test)]
        STEPS.with(|s| s.set(s.get() + _n));
    }

    /// Steps counted on this thread so far (tests only).
    #[cfg(test)]
    pub fn steps() -> u64 {
        STEPS.with(|s| s.get())
    }
}

/// Removes repeated violation ids, keeping the first of each in order (linear).
fn dedup_violations(v: &mut Vec<String>) {
    if v.len() < 2 {
        return;
    }
    let mut seen = std::collections::HashSet::with_capacity(v.len());
    v.retain(|id| {
        work::step(1);
        seen.insert(id.clone())
    });
}

// ---------------------------------------------------------------------------------------
// value helpers
// ---------------------------------------------------------------------------------------

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Actual {
    Empty,
    String,
    Bool,
    Int,
    Double,
    StringArray,
    BoolArray,
    IntArray,
    DoubleArray,
    MixedArray,
    EmptyArray,
    Kvlist,
    Bytes,
    StrIndex,
}

impl Actual {
    fn as_str(self) -> &'static str {
        match self {
            Actual::Empty => "empty",
            Actual::String => "string",
            Actual::Bool => "bool",
            Actual::Int => "int",
            Actual::Double => "double",
            Actual::StringArray => "string_array",
            Actual::BoolArray => "bool_array",
            Actual::IntArray => "int_array",
            Actual::DoubleArray => "double_array",
            Actual::MixedArray => "mixed_array",
            Actual::EmptyArray => "empty_array",
            Actual::Kvlist => "kvlist",
            Actual::Bytes => "bytes",
            Actual::StrIndex => "strindex",
        }
    }
}

fn actual_type(v: Option<&AnyValue>) -> Actual {
    match v.and_then(|v| v.value.as_ref()) {
        None => Actual::Empty,
        Some(Value::StringValue(_)) => Actual::String,
        Some(Value::BoolValue(_)) => Actual::Bool,
        Some(Value::IntValue(_)) => Actual::Int,
        Some(Value::DoubleValue(_)) => Actual::Double,
        Some(Value::KvlistValue(_)) => Actual::Kvlist,
        Some(Value::BytesValue(_)) => Actual::Bytes,
        Some(Value::StringValueStrindex(_)) => Actual::StrIndex,
        Some(Value::ArrayValue(a)) => {
            let (mut s, mut b, mut i, mut d, mut other) = (0usize, 0usize, 0usize, 0usize, 0usize);
            for e in &a.values {
                match e.value.as_ref() {
                    Some(Value::StringValue(_)) => s += 1,
                    Some(Value::BoolValue(_)) => b += 1,
                    Some(Value::IntValue(_)) => i += 1,
                    Some(Value::DoubleValue(_)) => d += 1,
                    _ => other += 1,
                }
            }
            let n = a.values.len();
            if n == 0 {
                Actual::EmptyArray
            } else if s == n {
                Actual::StringArray
            } else if b == n {
                Actual::BoolArray
            } else if i == n {
                Actual::IntArray
            } else if i + d == n && other == 0 {
                Actual::DoubleArray
            } else {
                Actual::MixedArray
            }
        }
    }
}

fn type_matches(expected: AttrType, actual: Actual) -> bool {
    match expected {
        AttrType::Any => true,
        AttrType::String => matches!(actual, Actual::String | Actual::StrIndex),
        AttrType::Int => actual == Actual::Int,
        AttrType::Double => matches!(actual, Actual::Double | Actual::Int),
        AttrType::Bool => actual == Actual::Bool,
        AttrType::StringArray => matches!(actual, Actual::StringArray | Actual::EmptyArray),
        AttrType::IntArray => matches!(actual, Actual::IntArray | Actual::EmptyArray),
        AttrType::DoubleArray => matches!(
            actual,
            Actual::DoubleArray | Actual::IntArray | Actual::EmptyArray
        ),
    }
}

fn int_of(v: Option<&AnyValue>) -> Option<i64> {
    match v.and_then(|v| v.value.as_ref()) {
        Some(Value::IntValue(n)) => Some(*n),
        _ => None,
    }
}

fn number_of(v: Option<&AnyValue>) -> Option<f64> {
    match v.and_then(|v| v.value.as_ref()) {
        Some(Value::IntValue(n)) => Some(*n as f64),
        Some(Value::DoubleValue(d)) => Some(*d),
        Some(Value::StringValue(s)) => s.parse::<f64>().ok(),
        _ => None,
    }
}

/// Same value, allowing numeric equality across int / double / numeric string
/// (`100`, `100.0` and `"100"` are equivalent).
fn values_equivalent(a: Option<&AnyValue>, b: Option<&AnyValue>) -> bool {
    let (va, vb) = (
        a.and_then(|v| v.value.as_ref()),
        b.and_then(|v| v.value.as_ref()),
    );
    if va == vb {
        return true;
    }
    match (number_of(a), number_of(b)) {
        (Some(x), Some(y)) => x == y,
        _ => false,
    }
}

fn span_kind_name(kind: i32) -> &'static str {
    match kind {
        0 => "unspecified",
        1 => "internal",
        2 => "server",
        3 => "client",
        4 => "producer",
        5 => "consumer",
        _ => "unknown",
    }
}

// ---------------------------------------------------------------------------------------
// validation
// ---------------------------------------------------------------------------------------

fn validate(span: &mut Span, cur: &[u32; N_RULES], opts: &Options, out: &mut Vec<String>) {
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

fn check_attribute(
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

// ---------------------------------------------------------------------------------------
// entry point
// ---------------------------------------------------------------------------------------

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

// ---------------------------------------------------------------------------------------
// metric labels
// ---------------------------------------------------------------------------------------

fn labels() -> &'static [String] {
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

#[cfg(test)]
mod tests {
    use super::super::rules::{
        find_rule, EXTERNAL_TARGETS, OPERATION_NAMES, PROVIDER_NAMES, SEMCONV_VERSION,
        SOURCE_OPENINFERENCE, SOURCE_OPENLLMETRY, SOURCE_SEMCONV_DEPRECATED,
    };
    use super::*;
    use opentelemetry_proto::tonic::common::v1::ArrayValue;
    use opentelemetry_proto::tonic::trace::v1::{span::SpanKind, Status};

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
        for (_, to) in super::super::rules::GEN_AI_SYSTEM_VALUES.iter().take(5) {
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
}
