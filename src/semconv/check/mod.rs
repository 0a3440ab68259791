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

mod detect;
mod entry;
mod normalise;
mod options;
mod table;
#[cfg(test)]
mod tests;
mod validate;
mod values;
pub(crate) mod work;

pub use detect::*;
pub use entry::*;
pub use options::*;
