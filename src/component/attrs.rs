//! Reading and writing span attributes in place, and the wall clock, shared by processors.

use std::time::{SystemTime, UNIX_EPOCH};

use opentelemetry_proto::tonic::common::v1::{any_value::Value, AnyValue, KeyValue};

/// The value of attribute `key`, if set.
pub fn get<'a>(attrs: &'a [KeyValue], key: &str) -> Option<&'a Value> {
    attrs
        .iter()
        .find(|kv| kv.key == key)
        .and_then(|kv| kv.value.as_ref()?.value.as_ref())
}

/// The value of attribute `key` when it is a string.
pub fn get_str<'a>(attrs: &'a [KeyValue], key: &str) -> Option<&'a str> {
    match get(attrs, key)? {
        Value::StringValue(s) => Some(s.as_str()),
        _ => None,
    }
}

/// Writes attribute `key`: removes every occurrence, then appends it (so a duplicate key a
/// client sent can never survive next to the value written).
pub fn set_any(attrs: &mut Vec<KeyValue>, key: &str, value: Option<AnyValue>) {
    if attrs.iter().any(|kv| kv.key == key) {
        attrs.retain(|kv| kv.key != key);
    }
    attrs.push(KeyValue {
        key: key.to_string(),
        value,
        ..Default::default()
    });
}

pub fn set(attrs: &mut Vec<KeyValue>, key: &str, v: Value) {
    set_any(attrs, key, Some(AnyValue { value: Some(v) }));
}

pub fn set_str(attrs: &mut Vec<KeyValue>, key: &str, v: &str) {
    set(attrs, key, Value::StringValue(v.to_string()));
}

/// A string attribute.
pub fn string_kv(key: &str, v: &str) -> KeyValue {
    KeyValue {
        key: key.to_string(),
        value: Some(AnyValue {
            value: Some(Value::StringValue(v.to_string())),
        }),
        ..Default::default()
    }
}

/// Now, in Unix seconds.
pub fn now_secs() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// Now, in Unix nanoseconds.
pub fn now_nanos() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0)
}
