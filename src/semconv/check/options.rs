//! What a check is asked and what it answers: the [`Options`] and their validation, the
//! [`Report`], and the names the findings are reported under.

use super::table::{index, Entry};

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

pub(super) const SPAN_KIND_NAMES: &[&str] = &[
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

pub(super) const VIOLATION_KINDS: &[&str] = &[
    "missing",
    "type",
    "range",
    "conflict",
    "unknown_value",
    "span_kind",
];
