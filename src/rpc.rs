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

/// An encoded `google.rpc.RetryInfo` carrying `delay`.
pub fn retry_info(delay: Duration) -> Vec<u8> {
    RetryInfo {
        retry_delay: Some(ProtoDuration {
            seconds: i64::try_from(delay.as_secs()).unwrap_or(i64::MAX),
            nanos: delay.subsec_nanos() as i32,
        }),
    }
    .encode_to_vec()
}

/// The gRPC trailer some clients read `RetryInfo` from instead of the status details (the
/// OpenTelemetry Python SDK among them); servers send both.
pub const RETRY_INFO_TRAILER: &str = "google.rpc.retryinfo-bin";

/// An encoded `google.rpc.Status` with one `RetryInfo` detail carrying `delay`.
pub fn status_with_retry_delay(code: i32, message: &str, delay: Duration) -> Bytes {
    let st = RpcStatus {
        code,
        message: message.to_string(),
        details: vec![RpcAny {
            type_url: RETRY_INFO_TYPE.into(),
            value: retry_info(delay),
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

/// The HTTP status for a gRPC code, as the OTLP/HTTP failure rules and the Collector map
/// them: the retryable codes are 503 (429 for `RESOURCE_EXHAUSTED`), `INVALID_ARGUMENT` 400,
/// `UNAUTHENTICATED` 401, `PERMISSION_DENIED` 403, `UNIMPLEMENTED` 404, anything else 500.
pub fn http_status_for_grpc(code: i32) -> u16 {
    match code {
        // CANCELLED, DEADLINE_EXCEEDED, ABORTED, OUT_OF_RANGE, UNAVAILABLE, DATA_LOSS
        1 | 4 | 10 | 11 | 14 | 15 => 503,
        8 => 429,
        3 => 400,
        16 => 401,
        7 => 403,
        12 => 404,
        _ => 500,
    }
}

/// The gRPC code for an HTTP status (gRPC's HTTP-to-gRPC mapping, with the OTLP exceptions
/// the Collector makes: 400 is `INVALID_ARGUMENT`, 429 `RESOURCE_EXHAUSTED`); others are
/// `UNKNOWN`.
pub fn grpc_code_for_http(status: u16) -> i32 {
    match status {
        400 => 3,
        401 => 16,
        403 => 7,
        404 => 12,
        429 => 8,
        502..=504 => 14,
        _ => 2,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grpc_and_http_statuses_map_as_the_otlp_rules_say() {
        // (gRPC code, HTTP status a client of the HTTP receiver gets)
        let to_http = [
            (1, 503),
            (2, 500),
            (3, 400),
            (4, 503),
            (5, 500),
            (7, 403),
            (8, 429),
            (9, 500),
            (10, 503),
            (11, 503),
            (12, 404),
            (13, 500),
            (14, 503),
            (15, 503),
            (16, 401),
            (99, 500),
        ];
        for (code, http) in to_http {
            assert_eq!(http_status_for_grpc(code), http, "gRPC code {code}");
        }
        let to_grpc = [
            (400, 3),
            (401, 16),
            (403, 7),
            (404, 12),
            (413, 2),
            (429, 8),
            (500, 2),
            (502, 14),
            (503, 14),
            (504, 14),
        ];
        for (http, code) in to_grpc {
            assert_eq!(grpc_code_for_http(http), code, "HTTP {http}");
        }
    }

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
