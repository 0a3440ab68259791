//! The one reader of token counts on a span. `genai_semconv` (coercion), `cost` (pricing) and
//! the ledger all go through [`parse_count`] / [`read_usage`], so they agree on every input.
//!
//! A token count is:
//! * an int value `>= 0`;
//! * a double value that is finite, whole and at most 2^53 (every such double is an exact
//!   integer);
//! * a string of ASCII digits only (`"12"`): no sign, no spaces, no exponent, no separators,
//!   at most `i64::MAX`.
//!
//! Anything else (`" +12 "`, `"1e15"`, `-3`, `1.5`, `true`, arrays) is not a count, with a
//! reason naming the attribute and the rule. [`read_usage`] also refuses counts above a
//! ceiling (the `cost` option `max_tokens_per_span`, default [`DEFAULT_MAX_TOKENS`]).

use opentelemetry_proto::tonic::common::v1::{any_value::Value, KeyValue};

use super::pricing::Usage;

pub const INPUT: &str = "gen_ai.usage.input_tokens";
pub const OUTPUT: &str = "gen_ai.usage.output_tokens";
pub const CACHE_READ: &str = "gen_ai.usage.cache_read.input_tokens";
/// The current cache-write name (semantic-conventions-genai #440).
pub const CACHE_WRITE: &str = "gen_ai.usage.cache_write.input_tokens";
/// The v1.41.0 name of [`CACHE_WRITE`], accepted as an alias.
pub const CACHE_CREATION: &str = "gen_ai.usage.cache_creation.input_tokens";
pub const REASONING: &str = "gen_ai.usage.reasoning.output_tokens";
pub const AUDIO_INPUT: &str = "gen_ai.usage.audio.input_tokens";
pub const AUDIO_OUTPUT: &str = "gen_ai.usage.audio.output_tokens";
pub const IMAGE_INPUT: &str = "gen_ai.usage.image.input_tokens";
pub const IMAGE_OUTPUT: &str = "gen_ai.usage.image.output_tokens";
pub const TEXT_INPUT: &str = "gen_ai.usage.text.input_tokens";
pub const TEXT_OUTPUT: &str = "gen_ai.usage.text.output_tokens";

/// Every attribute [`read_usage`] reads.
pub const ATTRIBUTES: [&str; 12] = [
    INPUT,
    OUTPUT,
    CACHE_READ,
    CACHE_WRITE,
    CACHE_CREATION,
    REASONING,
    AUDIO_INPUT,
    AUDIO_OUTPUT,
    IMAGE_INPUT,
    IMAGE_OUTPUT,
    TEXT_INPUT,
    TEXT_OUTPUT,
];

/// The default ceiling on any one token count of a span.
pub const DEFAULT_MAX_TOKENS: u64 = 1_000_000_000;

/// The largest double below which every whole double is an exact integer.
const MAX_EXACT_DOUBLE: f64 = 9_007_199_254_740_992.0;

/// Why a value is not a token count.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CountError {
    #[error("is negative ({0})")]
    Negative(i64),
    #[error("is a double that is not a whole number of at most 2^53 ({0})")]
    NotWhole(String),
    #[error(
        "is the string {0:?}, which is not plain decimal digits (no sign, spaces or exponent)"
    )]
    BadString(String),
    #[error("is the string {0:?}, which is larger than the largest count (2^63-1)")]
    TooLarge(String),
    #[error("is a {0}, not a whole number")]
    WrongType(&'static str),
}

/// Why a span's token counts cannot be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReadError {
    #[error("{attr} {why}")]
    NotACount { attr: &'static str, why: CountError },
    #[error(
        "{CACHE_WRITE} ({write}) and {CACHE_CREATION} ({creation}) are both present and differ"
    )]
    CacheWriteConflict { write: u64, creation: u64 },
    #[error("{attr} ({value}) is above the ceiling of {max} tokens per span")]
    AboveCeiling {
        attr: &'static str,
        value: u64,
        max: u64,
    },
}

/// Parses one token-count value (the rules are in the module docs).
pub fn parse_count(v: &Value) -> Result<u64, CountError> {
    match v {
        Value::IntValue(i) => u64::try_from(*i).map_err(|_| CountError::Negative(*i)),
        Value::DoubleValue(f) => {
            if f.is_finite() && f.fract() == 0.0 && *f >= 0.0 && *f <= MAX_EXACT_DOUBLE {
                Ok(*f as u64)
            } else {
                Err(CountError::NotWhole(f.to_string()))
            }
        }
        Value::StringValue(s) => {
            if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
                return Err(CountError::BadString(s.clone()));
            }
            match s.parse::<u64>() {
                Ok(n) if i64::try_from(n).is_ok() => Ok(n),
                _ => Err(CountError::TooLarge(s.clone())),
            }
        }
        Value::BoolValue(_) => Err(CountError::WrongType("bool")),
        Value::ArrayValue(_) => Err(CountError::WrongType("array")),
        Value::KvlistValue(_) => Err(CountError::WrongType("key-value list")),
        Value::BytesValue(_) => Err(CountError::WrongType("bytes value")),
        Value::StringValueStrindex(_) => Err(CountError::WrongType("string-table reference")),
    }
}

/// The first value of `key` (an attribute with no value counts as absent).
fn value<'a>(attrs: &'a [KeyValue], key: &str) -> Option<&'a Value> {
    attrs
        .iter()
        .find(|kv| kv.key == key)
        .and_then(|kv| kv.value.as_ref())
        .and_then(|v| v.value.as_ref())
}

/// Reads every usage attribute of a span. `cache_write` comes from
/// `gen_ai.usage.cache_write.input_tokens` or its alias
/// `gen_ai.usage.cache_creation.input_tokens`; both present with different values is an
/// error naming both. Any count above `max_tokens` is an error.
pub fn read_usage(attrs: &[KeyValue], max_tokens: u64) -> Result<Usage, ReadError> {
    let count = |attr: &'static str| -> Result<Option<i64>, ReadError> {
        let Some(v) = value(attrs, attr) else {
            return Ok(None);
        };
        let n = parse_count(v).map_err(|why| ReadError::NotACount { attr, why })?;
        if n > max_tokens {
            return Err(ReadError::AboveCeiling {
                attr,
                value: n,
                max: max_tokens,
            });
        }
        // parse_count never returns more than i64::MAX.
        Ok(Some(i64::try_from(n).unwrap_or(i64::MAX)))
    };
    let write = count(CACHE_WRITE)?;
    let creation = count(CACHE_CREATION)?;
    let cache_write = match (write, creation) {
        (Some(w), Some(c)) if w != c => {
            return Err(ReadError::CacheWriteConflict {
                write: w as u64,
                creation: c as u64,
            })
        }
        (Some(w), _) => Some(w),
        (None, c) => c,
    };
    Ok(Usage {
        input: count(INPUT)?,
        output: count(OUTPUT)?,
        cache_read: count(CACHE_READ)?,
        cache_write,
        reasoning: count(REASONING)?,
        audio_input: count(AUDIO_INPUT)?,
        audio_output: count(AUDIO_OUTPUT)?,
        image_input: count(IMAGE_INPUT)?,
        image_output: count(IMAGE_OUTPUT)?,
        text_input: count(TEXT_INPUT)?,
        text_output: count(TEXT_OUTPUT)?,
    })
}

/// Whether any attribute is a usage count this module reads.
pub fn has_usage(attrs: &[KeyValue]) -> bool {
    attrs
        .iter()
        .any(|kv| ATTRIBUTES[..6].contains(&kv.key.as_str()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use opentelemetry_proto::tonic::common::v1::AnyValue;

    fn kv(k: &str, v: Value) -> KeyValue {
        KeyValue {
            key: k.into(),
            value: Some(AnyValue { value: Some(v) }),
            ..Default::default()
        }
    }

    #[test]
    fn counts_parse_by_one_rule() {
        let s = |x: &str| Value::StringValue(x.into());
        assert_eq!(parse_count(&Value::IntValue(12)), Ok(12));
        assert_eq!(parse_count(&Value::DoubleValue(12.0)), Ok(12));
        assert_eq!(
            parse_count(&Value::DoubleValue(1e15)),
            Ok(1_000_000_000_000_000)
        );
        assert_eq!(parse_count(&s("12")), Ok(12));
        assert_eq!(parse_count(&s("0")), Ok(0));
        assert_eq!(
            parse_count(&Value::IntValue(-1)),
            Err(CountError::Negative(-1))
        );
        for bad in [" +12 ", "+12", "12 ", "1e15", "", "1_000", "-0", "12.0"] {
            assert_eq!(
                parse_count(&s(bad)),
                Err(CountError::BadString(bad.into())),
                "{bad:?}"
            );
        }
        assert_eq!(
            parse_count(&s("9223372036854775808")),
            Err(CountError::TooLarge("9223372036854775808".into()))
        );
        assert!(parse_count(&Value::DoubleValue(1.5)).is_err());
        assert!(parse_count(&Value::DoubleValue(-1.0)).is_err());
        assert!(parse_count(&Value::DoubleValue(1e16)).is_err());
        assert!(parse_count(&Value::DoubleValue(f64::NAN)).is_err());
        assert_eq!(
            parse_count(&Value::BoolValue(true)),
            Err(CountError::WrongType("bool"))
        );
    }

    #[test]
    fn cache_write_alias_and_ceiling() {
        let u = read_usage(&[kv(CACHE_CREATION, Value::IntValue(30))], 100).unwrap();
        assert_eq!(u.cache_write, Some(30));
        let u = read_usage(
            &[
                kv(CACHE_WRITE, Value::IntValue(30)),
                kv(CACHE_CREATION, Value::IntValue(30)),
            ],
            100,
        )
        .unwrap();
        assert_eq!(u.cache_write, Some(30));
        let e = read_usage(
            &[
                kv(CACHE_WRITE, Value::IntValue(30)),
                kv(CACHE_CREATION, Value::IntValue(31)),
            ],
            100,
        )
        .unwrap_err();
        assert_eq!(
            e.to_string(),
            "gen_ai.usage.cache_write.input_tokens (30) and gen_ai.usage.cache_creation.input_tokens (31) are both present and differ"
        );
        let e = read_usage(&[kv(INPUT, Value::IntValue(101))], 100).unwrap_err();
        assert_eq!(
            e.to_string(),
            "gen_ai.usage.input_tokens (101) is above the ceiling of 100 tokens per span"
        );
        let e = read_usage(&[kv(OUTPUT, Value::StringValue(" +12 ".into()))], 100).unwrap_err();
        assert_eq!(
            e.to_string(),
            "gen_ai.usage.output_tokens is the string \" +12 \", which is not plain decimal digits (no sign, spaces or exponent)"
        );
    }
}
