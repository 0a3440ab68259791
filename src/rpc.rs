//! The few `google.rpc` messages OTLP uses: `Status` (OTLP/HTTP error bodies, gRPC
//! `grpc-status-details-bin`) and `RetryInfo` (the server's suggested retry delay).

use std::time::Duration;

use bytes::Bytes;
use prost::Message;

/// `google.rpc.Status`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct RpcStatus {
    #[prost(int32, tag = "1")]
    pub code: i32,
    #[prost(string, tag = "2")]
    pub message: String,
    #[prost(message, repeated, tag = "3")]
    pub details: Vec<RpcAny>,
}

/// `google.protobuf.Any` (kept opaque).
#[derive(Clone, PartialEq, prost::Message)]
pub struct RpcAny {
    #[prost(string, tag = "1")]
    pub type_url: String,
    #[prost(bytes = "vec", tag = "2")]
    pub value: Vec<u8>,
}

/// `google.protobuf.Duration`.
#[derive(Clone, PartialEq, prost::Message)]
struct ProtoDuration {
    #[prost(int64, tag = "1")]
    seconds: i64,
    #[prost(int32, tag = "2")]
    nanos: i32,
}

/// `google.rpc.RetryInfo`.
#[derive(Clone, PartialEq, prost::Message)]
struct RetryInfo {
    #[prost(message, optional, tag = "1")]
    retry_delay: Option<ProtoDuration>,
}

const RETRY_INFO_TYPE: &str = "type.googleapis.com/google.rpc.RetryInfo";

/// An encoded `google.rpc.Status` with one `RetryInfo` detail carrying `delay`.
pub fn status_with_retry_delay(code: i32, message: &str, delay: Duration) -> Bytes {
    let info = RetryInfo {
        retry_delay: Some(ProtoDuration {
            seconds: i64::try_from(delay.as_secs()).unwrap_or(i64::MAX),
            nanos: delay.subsec_nanos() as i32,
        }),
    };
    let st = RpcStatus {
        code,
        message: message.to_string(),
        details: vec![RpcAny {
            type_url: RETRY_INFO_TYPE.into(),
            value: info.encode_to_vec(),
        }],
    };
    Bytes::from(st.encode_to_vec())
}

/// The `RetryInfo.retry_delay` of an encoded `google.rpc.Status`, if it has one.
pub fn retry_delay(status: &[u8]) -> Option<Duration> {
    if status.is_empty() {
        return None;
    }
    RpcStatus::decode(status)
        .ok()?
        .details
        .iter()
        .find(|a| a.type_url.ends_with("google.rpc.RetryInfo"))
        .and_then(|a| RetryInfo::decode(a.value.as_slice()).ok())
        .and_then(|ri| ri.retry_delay)
        .map(|d| Duration::new(d.seconds.max(0) as u64, d.nanos.max(0) as u32))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_delay_round_trips_and_absent_details_give_none() {
        let b = status_with_retry_delay(8, "slow down", Duration::from_millis(1500));
        assert_eq!(retry_delay(&b), Some(Duration::from_millis(1500)));
        let plain = RpcStatus {
            code: 14,
            message: "x".into(),
            details: vec![],
        }
        .encode_to_vec();
        assert_eq!(retry_delay(&plain), None);
        assert_eq!(retry_delay(&[]), None);
        assert_eq!(retry_delay(&[0xff, 0xff]), None);
    }
}
