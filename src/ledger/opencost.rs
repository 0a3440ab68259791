//! OpenCost allocation data: a saved `GET /allocation` response or a live fetch from an
//! OpenCost base URL, read into exact decimals.
//!
//! The response is `{"code": 200, "data": [{NAME: Allocation, …}, …]}`: one map per window
//! step. Every number is read from its JSON text (never through `f64`), and OpenCost's `null`
//! (how it writes NaN and ±Inf) is kept as "no value".

use std::collections::BTreeMap;
use std::str::FromStr;
use std::time::Duration;

use rust_decimal::Decimal;
use serde_json::value::RawValue;

use super::time::{format_instant, parse_instant};

/// Why allocation data could not be read.
#[derive(Debug, thiserror::Error)]
pub enum OpenCostError {
    #[error("{source_name}: not an OpenCost /allocation response: {detail}")]
    Shape { source_name: String, detail: String },
    #[error("{source_name}: {path}: {detail}")]
    Field {
        source_name: String,
        path: String,
        detail: String,
    },
    #[error("{0}")]
    Fetch(String),
}

/// The cost components of an allocation: (component, its cost field, its adjustment field).
/// `totalCost` is OpenCost's sum of all of them (costs plus adjustments).
pub const COMPONENTS: [(&str, &str, Option<&str>); 8] = [
    ("cpu", "cpuCost", Some("cpuCostAdjustment")),
    ("gpu", "gpuCost", Some("gpuCostAdjustment")),
    ("ram", "ramCost", Some("ramCostAdjustment")),
    ("pv", "pvCost", Some("pvCostAdjustment")),
    ("network", "networkCost", Some("networkCostAdjustment")),
    (
        "load_balancer",
        "loadBalancerCost",
        Some("loadBalancerCostAdjustment"),
    ),
    ("shared", "sharedCost", None),
    ("external", "externalCost", None),
];

/// Every numeric field of OpenCost's `AllocationJSON`: each must be a JSON number or `null`.
pub const NUMERIC_FIELDS: &[&str] = &[
    "minutes",
    "cpuCores",
    "cpuCoreRequestAverage",
    "cpuCoreLimitAverage",
    "cpuCoreUsageAverage",
    "cpuCoreHours",
    "cpuCost",
    "cpuCostAdjustment",
    "cpuCostIdle",
    "cpuEfficiency",
    "gpuCount",
    "gpuHours",
    "gpuCost",
    "gpuCostAdjustment",
    "gpuCostIdle",
    "gpuEfficiency",
    "networkTransferBytes",
    "networkReceiveBytes",
    "networkCost",
    "networkCrossZoneCost",
    "networkCrossRegionCost",
    "networkInternetCost",
    "networkCostAdjustment",
    "loadBalancerCost",
    "loadBalancerCostAdjustment",
    "pvBytes",
    "pvByteHours",
    "pvCost",
    "pvCostAdjustment",
    "ramBytes",
    "ramByteRequestAverage",
    "ramByteLimitAverage",
    "ramByteUsageAverage",
    "ramByteHours",
    "ramCost",
    "ramCostAdjustment",
    "ramCostIdle",
    "ramEfficiency",
    "externalCost",
    "sharedCost",
    "totalCost",
    "totalEfficiency",
];

/// What an allocation stands for, from OpenCost's reserved names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Kind {
    /// A workload (container, pod, controller, … depending on the aggregation).
    Workload,
    /// `__idle__`: capacity paid for and not allocated to any workload.
    Idle,
    /// `__unallocated__`: workloads without the aggregation's property (e.g. a label).
    Unallocated,
    /// `__unmounted__`: storage no pod mounts.
    Unmounted,
    /// `__shared__`: cost shared by configuration.
    Shared,
}

impl Kind {
    pub fn of(name: &str) -> Kind {
        let last = name.rsplit('/').next().unwrap_or(name);
        match last {
            "__idle__" => Kind::Idle,
            "__unallocated__" => Kind::Unallocated,
            "__unmounted__" => Kind::Unmounted,
            "__shared__" => Kind::Shared,
            _ => Kind::Workload,
        }
    }
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Workload => "workload",
            Kind::Idle => "idle",
            Kind::Unallocated => "unallocated",
            Kind::Unmounted => "unmounted",
            Kind::Shared => "shared",
        }
    }
}

/// One allocation of one window step.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Allocation {
    /// Index of its step in `data`.
    pub step: usize,
    pub name: String,
    pub kind: Kind,
    pub cluster: String,
    pub namespace: String,
    pub controller_kind: String,
    pub controller: String,
    pub pod: String,
    pub container: String,
    pub node: String,
    pub labels: BTreeMap<String, String>,
    /// The step's window, Unix nanoseconds, half-open.
    pub window_start: i64,
    pub window_end: i64,
    /// Every numeric field as sent (`None` for `null`).
    pub numbers: BTreeMap<String, Option<Decimal>>,
    /// The cost split: `totalCost`, or, when OpenCost wrote `null` for it, the sum of the
    /// components and adjustments that are not `null` (then `total_derived`).
    pub total: Decimal,
    pub total_derived: bool,
}

impl Allocation {
    /// A numeric field (`None` when absent or `null`).
    pub fn number(&self, field: &str) -> Option<Decimal> {
        self.numbers.get(field).copied().flatten()
    }
    /// A component's cost including its adjustment; `None` when both are absent or `null`.
    pub fn component(&self, cost: &str, adjustment: Option<&str>) -> Option<Decimal> {
        let c = self.number(cost);
        let a = adjustment.and_then(|f| self.number(f));
        match (c, a) {
            (None, None) => None,
            (c, a) => Some(c.unwrap_or_default() + a.unwrap_or_default()),
        }
    }
    /// The model server this allocation is: the controller when OpenCost names one, else the
    /// pod, else the allocation's name.
    pub fn server(&self) -> String {
        if self.kind != Kind::Workload {
            let last = self.name.rsplit('/').next().unwrap_or(&self.name);
            return format!("{}/{last}", self.cluster);
        }
        let who = if !self.controller.is_empty() {
            &self.controller
        } else if !self.pod.is_empty() {
            &self.pod
        } else {
            &self.name
        };
        format!("{}/{}/{}", self.cluster, self.namespace, who)
    }
}

/// A number's JSON text as an exact decimal (`1.5`, `-0.25`, `3e-7`).
pub fn decimal(text: &str) -> Result<Decimal, String> {
    let t = text.trim();
    let parsed = if t.contains(['e', 'E']) {
        Decimal::from_scientific(t)
    } else {
        Decimal::from_str(t)
    };
    parsed.map_err(|e| format!("{t} is not a number tollgate can hold exactly: {e}"))
}

fn field_err(source_name: &str, path: String, detail: impl Into<String>) -> OpenCostError {
    OpenCostError::Field {
        source_name: source_name.to_string(),
        path,
        detail: detail.into(),
    }
}

/// A window bound: RFC 3339; OpenCost writes an open bound as the string `"null"`.
fn bound(
    source_name: &str,
    path: String,
    v: Option<&serde_json::Value>,
) -> Result<i64, OpenCostError> {
    match v {
        Some(serde_json::Value::String(s)) if s != "null" => {
            parse_instant(s).map_err(|e| field_err(source_name, path, e))
        }
        _ => Err(field_err(
            source_name,
            path,
            "the window is open (null): query OpenCost with a closed window",
        )),
    }
}

fn string_prop(props: &serde_json::Map<String, serde_json::Value>, key: &str) -> String {
    match props.get(key) {
        Some(serde_json::Value::String(s)) => s.clone(),
        _ => String::new(),
    }
}

/// Parses a `GET /allocation` response body. `source_name` names it in errors.
pub fn parse(body: &[u8], source_name: &str) -> Result<Vec<Allocation>, OpenCostError> {
    let shape = |detail: String| OpenCostError::Shape {
        source_name: source_name.to_string(),
        detail,
    };
    #[derive(serde::Deserialize)]
    struct Response<'a> {
        code: Option<i64>,
        #[serde(default)]
        message: Option<String>,
        #[serde(borrow)]
        data: Option<Vec<Option<BTreeMap<String, &'a RawValue>>>>,
    }
    let text = std::str::from_utf8(body).map_err(|e| shape(format!("not UTF-8: {e}")))?;
    let r: Response<'_> = serde_json::from_str(text).map_err(|e| shape(e.to_string()))?;
    if let Some(code) = r.code.filter(|c| *c != 200) {
        return Err(shape(format!(
            "code {code}: {}",
            r.message.unwrap_or_default()
        )));
    }
    let data = r
        .data
        .ok_or_else(|| shape("no \"data\" list".to_string()))?;
    let mut out = Vec::new();
    for (step, set) in data.into_iter().enumerate() {
        // OpenCost writes an empty step as `null` or `{}`.
        for (name, raw) in set.unwrap_or_default() {
            out.push(allocation(source_name, step, &name, raw)?);
        }
    }
    Ok(out)
}

fn allocation(
    source_name: &str,
    step: usize,
    name: &str,
    raw: &RawValue,
) -> Result<Allocation, OpenCostError> {
    let at = |field: &str| format!("data[{step}][{name:?}].{field}");
    let fields: BTreeMap<String, &RawValue> = serde_json::from_str(raw.get()).map_err(|e| {
        field_err(
            source_name,
            format!("data[{step}][{name:?}]"),
            format!("not an allocation object: {e}"),
        )
    })?;
    let mut numbers = BTreeMap::new();
    for (k, v) in &fields {
        let t = v.get().trim();
        let known = NUMERIC_FIELDS.contains(&k.as_str());
        if t == "null" {
            if known {
                numbers.insert(k.clone(), None);
            }
        } else if t.starts_with(|c: char| c == '-' || c.is_ascii_digit()) {
            let d = decimal(t).map_err(|e| field_err(source_name, at(k), e))?;
            numbers.insert(k.clone(), Some(d));
        } else if known {
            return Err(field_err(
                source_name,
                at(k),
                format!("expected a number or null, found {t}"),
            ));
        }
    }
    let json = |k: &str| -> Result<Option<serde_json::Value>, OpenCostError> {
        match fields.get(k) {
            None => Ok(None),
            Some(v) => serde_json::from_str(v.get())
                .map(Some)
                .map_err(|e| field_err(source_name, at(k), e.to_string())),
        }
    };
    let props = match json("properties")? {
        Some(serde_json::Value::Object(m)) => m,
        None | Some(serde_json::Value::Null) => serde_json::Map::new(),
        Some(other) => {
            return Err(field_err(
                source_name,
                at("properties"),
                format!("expected an object, found {other}"),
            ))
        }
    };
    let labels = match props.get("labels") {
        Some(serde_json::Value::Object(m)) => m
            .iter()
            .filter_map(|(k, v)| v.as_str().map(|s| (k.clone(), s.to_string())))
            .collect(),
        _ => BTreeMap::new(),
    };
    let window = json("window")?;
    let window_start = bound(
        source_name,
        at("window.start"),
        window.as_ref().and_then(|w| w.get("start")),
    )?;
    let window_end = bound(
        source_name,
        at("window.end"),
        window.as_ref().and_then(|w| w.get("end")),
    )?;
    if window_end <= window_start {
        return Err(field_err(
            source_name,
            at("window"),
            format!(
                "end {} is not after start {}",
                format_instant(window_end),
                format_instant(window_start)
            ),
        ));
    }
    let mut cluster = string_prop(&props, "cluster");
    if cluster.is_empty() {
        // An idle entry per cluster is named `CLUSTER/__idle__`.
        if let Some((c, _)) = name.split_once('/') {
            cluster = c.to_string();
        }
    }
    let mut a = Allocation {
        step,
        name: name.to_string(),
        kind: Kind::of(name),
        cluster,
        namespace: string_prop(&props, "namespace"),
        controller_kind: string_prop(&props, "controllerKind"),
        controller: string_prop(&props, "controller"),
        pod: string_prop(&props, "pod"),
        container: string_prop(&props, "container"),
        node: string_prop(&props, "node"),
        labels,
        window_start,
        window_end,
        numbers,
        total: Decimal::ZERO,
        total_derived: false,
    };
    match a.number("totalCost") {
        Some(t) => a.total = t,
        None => {
            a.total = COMPONENTS
                .iter()
                .filter_map(|(_, c, adj)| a.component(c, *adj))
                .sum();
            a.total_derived = true;
        }
    }
    Ok(a)
}

/// The query a live fetch sends: the range as one RFC 3339 window pair, `step` per set, one
/// allocation per pod (with its cluster, namespace and controller kept), idle included.
pub fn query_path(from: i64, to: i64, step: &str) -> String {
    format!(
        "/allocation?window={},{}&step={step}&aggregate=cluster,namespace,controllerKind,controller,pod&includeIdle=true&accumulate=false",
        format_instant(from),
        format_instant(to)
    )
}

/// `GET {base}/allocation?…` over plain HTTP (an OpenCost service or a `kubectl
/// port-forward`); the body, read up to 512 MiB.
pub async fn fetch(base: &str, from: i64, to: i64, step: &str) -> Result<Vec<u8>, OpenCostError> {
    use http_body_util::{BodyExt, Empty, Limited};
    use hyper_util::client::legacy::Client;
    use hyper_util::rt::TokioExecutor;

    let err = |m: String| OpenCostError::Fetch(format!("OpenCost {base}: {m}"));
    if !base.starts_with("http://") {
        return Err(err(
            "only http:// URLs are fetched (use a saved response file for anything else)".into(),
        ));
    }
    if step.is_empty() || !step.chars().all(|c| c.is_ascii_alphanumeric()) {
        return Err(OpenCostError::Fetch(format!(
            "--step {step:?}: expected a duration such as 1h or 10m"
        )));
    }
    let url = format!(
        "{}{}",
        base.trim_end_matches('/'),
        query_path(from, to, step)
    );
    let uri: http::Uri = url.parse().map_err(|e| err(format!("bad URL: {e}")))?;
    let client = Client::builder(TokioExecutor::new())
        .build::<_, Empty<bytes::Bytes>>(hyper_util::client::legacy::connect::HttpConnector::new());
    let req = http::Request::get(uri)
        .header(http::header::ACCEPT, "application/json")
        .body(Empty::new())
        .map_err(|e| err(e.to_string()))?;
    let work = async {
        let resp = client
            .request(req)
            .await
            .map_err(|e| err(format!("request failed: {e}")))?;
        let status = resp.status();
        let body = Limited::new(resp.into_body(), 512 << 20)
            .collect()
            .await
            .map_err(|e| err(format!("reading the response: {e}")))?
            .to_bytes();
        if !status.is_success() {
            let text = String::from_utf8_lossy(&body[..body.len().min(300)]).into_owned();
            return Err(err(format!("HTTP {status}: {text}")));
        }
        Ok(body.to_vec())
    };
    tokio::time::timeout(Duration::from_secs(120), work)
        .await
        .map_err(|_| err("no complete response within 120 s".into()))?
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_are_read_exactly_and_nulls_kept() {
        let body = br#"{"code":200,"status":"success","data":[{
            "c/__idle__": {"name":"c/__idle__","properties":{"cluster":"c"},
              "window":{"start":"2026-12-01T00:00:00Z","end":"2026-12-01T01:00:00Z"},
              "gpuCost":0.1,"cpuCost":null,"totalCost":0.30000000000000004,"cpuEfficiency":1e-7},
            "vllm-0": {"name":"vllm-0","properties":{"cluster":"c","namespace":"ml","pod":"vllm-0",
              "controller":"vllm","controllerKind":"deployment","labels":{"app":"vllm"}},
              "window":{"start":"2026-12-01T00:00:00Z","end":"2026-12-01T01:00:00Z"},
              "gpuCost":1.5,"gpuCostAdjustment":-0.25,"ramCost":0.125,"totalCost":null,
              "pvs":{"cluster=c:name=pv-1":{"byteHours":1,"cost":0.5}}}
        }]}"#;
        let a = parse(body, "t.json").unwrap();
        assert_eq!(a.len(), 2);
        assert_eq!(a[0].kind, Kind::Idle);
        assert_eq!(a[0].cluster, "c");
        // Never through f64: the text is the value.
        assert_eq!(a[0].total.to_string(), "0.30000000000000004");
        assert_eq!(a[0].number("cpuCost"), None);
        assert_eq!(
            a[0].number("cpuEfficiency"),
            Some(Decimal::from_str("0.0000001").unwrap())
        );
        assert_eq!(a[1].kind, Kind::Workload);
        assert_eq!(a[1].server(), "c/ml/vllm");
        assert!(a[1].total_derived);
        // 1.5 - 0.25 + 0.125
        assert_eq!(a[1].total, Decimal::from_str("1.375").unwrap());
        assert_eq!(a[1].labels.get("app").map(String::as_str), Some("vllm"));
    }

    #[test]
    fn bad_input_names_the_field() {
        let e = parse(
            br#"{"code":200,"data":[{"x":{"window":{"start":"2026-12-01T00:00:00Z","end":"2026-12-01T01:00:00Z"},"gpuCost":"lots"}}]}"#,
            "f.json",
        )
        .unwrap_err()
        .to_string();
        assert!(
            e.contains("data[0][\"x\"].gpuCost") && e.contains("number or null"),
            "{e}"
        );
        let e = parse(
            br#"{"code":200,"data":[{"x":{"window":{"start":"null","end":"null"},"totalCost":1}}]}"#,
            "f.json",
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("window.start") && e.contains("open"), "{e}");
        let e = parse(br#"{"code":500,"message":"boom"}"#, "f.json")
            .unwrap_err()
            .to_string();
        assert!(e.contains("code 500: boom"), "{e}");
        let e = parse(br#"[1,2]"#, "f.json").unwrap_err().to_string();
        assert!(e.contains("not an OpenCost /allocation response"), "{e}");
    }
}
