//! Typed value helpers: reading, coercing and checking attribute values against their rule's
//! type.

use crate::semconv::rules::AttrType;

use opentelemetry_proto::tonic::common::v1::{any_value::Value, AnyValue};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Actual {
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
    pub(super) fn as_str(self) -> &'static str {
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

pub(super) fn actual_type(v: Option<&AnyValue>) -> Actual {
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

pub(super) fn type_matches(expected: AttrType, actual: Actual) -> bool {
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

pub(super) fn int_of(v: Option<&AnyValue>) -> Option<i64> {
    match v.and_then(|v| v.value.as_ref()) {
        Some(Value::IntValue(n)) => Some(*n),
        _ => None,
    }
}

pub(super) fn number_of(v: Option<&AnyValue>) -> Option<f64> {
    match v.and_then(|v| v.value.as_ref()) {
        Some(Value::IntValue(n)) => Some(*n as f64),
        Some(Value::DoubleValue(d)) => Some(*d),
        Some(Value::StringValue(s)) => s.parse::<f64>().ok(),
        _ => None,
    }
}

/// Same value, allowing numeric equality across int / double / numeric string
/// (`100`, `100.0` and `"100"` are equivalent).
pub(super) fn values_equivalent(a: Option<&AnyValue>, b: Option<&AnyValue>) -> bool {
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

pub(super) fn span_kind_name(kind: i32) -> &'static str {
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
