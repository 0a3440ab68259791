//! The `genai_semconv` processor: normalises GenAI span attributes to the pinned
//! semantic conventions ([`rules::SEMCONV_VERSION`]) and validates them (see
//! [`check`] and `docs/genai-semconv.md`).
//!
//! Per LLM span (non-LLM spans are never touched):
//! * `mode: annotate` (default) writes `tollgate.genai.status` (`valid` | `invalid`) and
//!   `tollgate.genai.violations` (string array of violation ids, empty when valid);
//! * `mode: enforce` does the same on the spans it keeps and removes invalid LLM spans,
//!   reporting them to the client through OTLP `partial_success` with the reason
//!   `genai_semconv: <first violation id>`;
//! * `shadow: true` evaluates and counts only: the spans leave exactly as they came.
//!
//! Counts go to `tollgate_genai_spans{processor,status}` and
//! `tollgate_genai_violations{processor,rule}` (rule = [`check::metric_label`], a closed
//! set), incremented once per request.

pub use crate::semconv::{check, rules};

use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{any_value::Value, AnyValue, ArrayValue, KeyValue};
use opentelemetry_proto::tonic::trace::v1::Span;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use yaml_rust2::Yaml;

use crate::component::attrs::set_any;
use crate::component::factory::{Component, ProcessorSpec};
use crate::component::host::ParseCtx;
use crate::component::{ProcessCtx, Processor, Refused, Signal};
use crate::config::node::{closest, kind_of, scalar_string};
use crate::config::{ComponentId, Diagnostics, Map};
// Written on every LLM span in annotate and enforce mode.
use crate::semconv::attributes::{GENAI_STATUS, GENAI_VIOLATIONS};

/// Default `max_attributes_per_span`.
pub const DEFAULT_MAX_ATTRIBUTES: usize = 1024;
/// The `partial_success` reason for a span over `max_attributes_per_span`.
pub const TOO_MANY_ATTRIBUTES: &str = "genai_semconv: too_many_attributes";

/// Prefix of the `partial_success` reason for spans removed in enforce mode.
pub const REASON_PREFIX: &str = "genai_semconv: ";

/// What happens to invalid LLM spans.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Keep them, with the status and violations written on the span.
    Annotate,
    /// Remove them and report them through `partial_success`.
    Enforce,
}

impl Mode {
    const NAMES: [&'static str; 2] = ["annotate", "enforce"];

    fn parse(s: &str) -> Option<Mode> {
        match s {
            "annotate" => Some(Mode::Annotate),
            "enforce" => Some(Mode::Enforce),
            _ => None,
        }
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct SpanLabels {
    processor: String,
    status: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ViolationLabels {
    processor: String,
    rule: &'static str,
}

pub struct GenAiProcessor {
    id: String,
    opts: check::Options,
    mode: Mode,
    shadow: bool,
    /// `max_attributes_per_span`: spans with more attributes are refused (partial_success).
    max_attributes: usize,
    spans: Family<SpanLabels, Counter>,
    violations: Family<ViolationLabels, Counter>,
}

/// Per-request counts, flushed to the metrics once per request.
#[derive(Default)]
struct Tally {
    valid: u64,
    invalid: u64,
    /// (metric label, count); grows only when a span has violations.
    rules: Vec<(&'static str, u64)>,
}

impl Tally {
    fn count(&mut self, report: &check::Report) {
        if report.violations.is_empty() {
            self.valid += 1;
            return;
        }
        self.invalid += 1;
        for v in &report.violations {
            let label = check::metric_label(v);
            match self.rules.iter_mut().find(|(l, _)| *l == label) {
                Some(e) => e.1 += 1,
                None => self.rules.push((label, 1)),
            }
        }
    }
}

/// The `genai_semconv` processor's options, as read from its section.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// `mode` (default `annotate`).
    pub mode: Mode,
    /// `shadow` (default `false`): evaluate and count only.
    pub shadow: bool,
    /// `max_attributes_per_span` (default [`DEFAULT_MAX_ATTRIBUTES`]).
    pub max_attributes: usize,
    /// `normalize` (default `true`), `keep_originals`, `strict`, `coerce_numeric_strings`
    /// (default `false`) and `mappings` (default none).
    pub opts: check::Options,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            mode: Mode::Annotate,
            shadow: false,
            max_attributes: DEFAULT_MAX_ATTRIBUTES,
            opts: check::Options::default(),
        }
    }
}

impl Component for GenAiProcessor {
    type Config = Config;
    type Built = ProcessorSpec;

    fn read(cfg: &mut Config, m: &Map<'_>, d: &mut Diagnostics) {
        if let Some(s) = m.str("mode", d) {
            match Mode::parse(&s) {
                Some(mode) => cfg.mode = mode,
                None => {
                    let hint = closest(&s, Mode::NAMES.iter().copied())
                        .map(|b| format!("; did you mean `{b}`?"))
                        .unwrap_or_default();
                    d.error(
                        m.key_path("mode"),
                        format!("unknown mode `{s}`{hint} (modes: annotate, enforce)"),
                    );
                }
            }
        }
        if let Some(v) = m.bool("shadow", d) {
            cfg.shadow = v;
        }
        if let Some(n) = m.u64_in("max_attributes_per_span", 1, u32::MAX as u64, d) {
            cfg.max_attributes = n as usize;
        }
        let opts = &mut cfg.opts;
        if let Some(v) = m.bool("normalize", d) {
            opts.normalize = v;
        }
        if let Some(v) = m.bool("keep_originals", d) {
            opts.keep_originals = v;
        }
        if let Some(v) = m.bool("strict", d) {
            opts.strict = v;
        }
        if let Some(v) = m.bool("coerce_numeric_strings", d) {
            opts.coerce_numeric_strings = v;
        }
        if let Some(mappings) = m.map("mappings", d) {
            for (from, y) in mappings.entries(d) {
                let path = mappings.key_path(&from);
                let to = match y {
                    Yaml::String(_) => scalar_string(y),
                    _ => None,
                };
                let Some(to) = to else {
                    d.error(
                        path,
                        format!(
                            "expected the attribute name to rename `{from}` to, found {}",
                            kind_of(y)
                        ),
                    );
                    continue;
                };
                // Checked one by one so every bad entry is reported with its own path.
                let single = check::Options {
                    custom_mappings: vec![(from.clone(), to.clone())],
                    ..check::Options::default()
                };
                if let Err(e) = single.validate() {
                    d.error(path, e.to_string());
                    continue;
                }
                opts.custom_mappings.push((from, to));
            }
        }
        if let Err(e) = opts.validate() {
            let name = match &e {
                check::OptionsError::EmptyName => String::new(),
                check::OptionsError::SelfMapping(n)
                | check::OptionsError::SourceIsCurrent(n)
                | check::OptionsError::SourceIsBuiltin(n)
                | check::OptionsError::DuplicateSource(n) => n.clone(),
            };
            d.error(m.key_path(&format!("mappings.{name}")), e.to_string());
        }
    }

    fn build(
        id: &ComponentId,
        cfg: Config,
        _m: &Map<'_>,
        ctx: &ParseCtx,
        _d: &mut Diagnostics,
    ) -> Option<ProcessorSpec> {
        let spans = ctx.metrics.register_shared(
            "tollgate_genai_spans",
            "LLM spans checked by a genai_semconv processor, by validation status (counted in shadow mode too)",
            Family::<SpanLabels, Counter>::default,
        );
        let violations = ctx.metrics.register_shared(
            "tollgate_genai_violations",
            "GenAI semantic-convention violations found by a genai_semconv processor, by rule family",
            Family::<ViolationLabels, Counter>::default,
        );
        Some(ProcessorSpec::inline(
            GenAiProcessor {
                id: id.to_string(),
                opts: cfg.opts,
                mode: cfg.mode,
                shadow: cfg.shadow,
                max_attributes: cfg.max_attributes,
                spans,
                violations,
            },
            &[Signal::Traces],
        ))
    }
}

fn string_value(s: String) -> Option<AnyValue> {
    Some(AnyValue {
        value: Some(Value::StringValue(s)),
    })
}

/// Writes the status and the violation ids (moved, not copied) on an LLM span.
fn annotate(span: &mut Span, violations: Vec<String>) {
    let status = if violations.is_empty() {
        "valid"
    } else {
        "invalid"
    };
    set_any(
        &mut span.attributes,
        GENAI_STATUS,
        string_value(status.to_string()),
    );
    let values = violations
        .into_iter()
        .map(|v| AnyValue {
            value: Some(Value::StringValue(v)),
        })
        .collect();
    set_any(
        &mut span.attributes,
        GENAI_VIOLATIONS,
        Some(AnyValue {
            value: Some(Value::ArrayValue(ArrayValue { values })),
        }),
    );
}

impl GenAiProcessor {
    /// Could `attrs` be an LLM span? A cheap superset of what [`check::process_span`]
    /// detects (custom mapping sources count whatever their target), used in shadow mode
    /// to copy only candidate spans.
    fn maybe_llm(&self, attrs: &[KeyValue]) -> bool {
        check::is_llm_span(attrs)
            || (!self.opts.custom_mappings.is_empty()
                && attrs.iter().any(|kv| {
                    self.opts
                        .custom_mappings
                        .iter()
                        .any(|(from, _)| *from == kv.key)
                }))
    }

    /// Shadow mode: evaluates a copy of candidate spans; the request is not modified.
    fn shadow_traces(&self, req: &ExportTraceServiceRequest, tally: &mut Tally) {
        for span in req
            .resource_spans
            .iter()
            .flat_map(|rs| &rs.scope_spans)
            .flat_map(|ss| &ss.spans)
        {
            if span.attributes.len() > self.max_attributes || !self.maybe_llm(&span.attributes) {
                continue;
            }
            let mut copy = Span {
                kind: span.kind,
                status: span.status.clone(),
                attributes: span.attributes.clone(),
                ..Default::default()
            };
            let report = check::process_span(&mut copy, &self.opts);
            if report.is_llm_span {
                tally.count(&report);
            }
        }
    }

    fn flush(&self, tally: Tally) {
        for (status, n) in [("valid", tally.valid), ("invalid", tally.invalid)] {
            if n > 0 {
                self.spans
                    .get_or_create(&SpanLabels {
                        processor: self.id.clone(),
                        status,
                    })
                    .inc_by(n);
            }
        }
        for (rule, n) in tally.rules {
            self.violations
                .get_or_create(&ViolationLabels {
                    processor: self.id.clone(),
                    rule,
                })
                .inc_by(n);
        }
    }
}

impl Processor for GenAiProcessor {
    fn process_traces(
        &self,
        req: &mut ExportTraceServiceRequest,
        ctx: &mut ProcessCtx<'_>,
    ) -> Result<(), Refused> {
        let mut tally = Tally::default();
        if self.shadow {
            self.shadow_traces(req, &mut tally);
            self.flush(tally);
            return Ok(());
        }
        let enforce = self.mode == Mode::Enforce;
        let mut dropped = 0u64;
        // Reused for every rejected span's reason.
        let mut reason = String::new();
        for rs in &mut req.resource_spans {
            let mut emptied = false;
            for ss in &mut rs.scope_spans {
                let before = ss.spans.len();
                ss.spans.retain_mut(|span| {
                    if span.attributes.len() > self.max_attributes {
                        ctx.reject(1, TOO_MANY_ATTRIBUTES);
                        return false;
                    }
                    let mut report = check::process_span(span, &self.opts);
                    if !report.is_llm_span {
                        return true;
                    }
                    tally.count(&report);
                    let violations = std::mem::take(&mut report.violations);
                    if enforce && !violations.is_empty() {
                        reason.clear();
                        reason.push_str(REASON_PREFIX);
                        reason.push_str(&violations[0]);
                        ctx.reject(1, &reason);
                        return false;
                    }
                    annotate(span, violations);
                    true
                });
                let removed = before - ss.spans.len();
                if removed > 0 {
                    dropped += removed as u64;
                    emptied |= ss.spans.is_empty();
                }
            }
            if emptied {
                rs.scope_spans.retain(|ss| !ss.spans.is_empty());
            }
        }
        if dropped > 0 {
            req.resource_spans.retain(|rs| !rs.scope_spans.is_empty());
        }
        self.flush(tally);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Problem;
    use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans};

    fn request_with_one_llm_span() -> ExportTraceServiceRequest {
        let attributes = vec![KeyValue {
            key: "gen_ai.provider.name".into(),
            value: string_value("openai".into()),
            ..Default::default()
        }];
        ExportTraceServiceRequest {
            resource_spans: vec![ResourceSpans {
                scope_spans: vec![ScopeSpans {
                    spans: vec![Span {
                        kind: 3,
                        attributes,
                        ..Default::default()
                    }],
                    ..Default::default()
                }],
                ..Default::default()
            }],
        }
    }

    const BASE: &str = r#"
receivers:
  otlp:
    protocols:
      grpc:
        endpoint: 127.0.0.1:0
exporters:
  debug: {}
service:
  telemetry:
    metrics:
      level: none
  pipelines:
    traces:
      receivers: [otlp]
      processors: [genai_semconv]
      exporters: [debug]
processors:
  genai_semconv:
"#;

    /// Parses BASE with `options` indented under `processors.genai_semconv`.
    fn problems(options: &str) -> Vec<String> {
        let mut yaml = BASE.to_string();
        for line in options.lines() {
            yaml.push_str("    ");
            yaml.push_str(line);
            yaml.push('\n');
        }
        let doc = match crate::config::load_str(&yaml) {
            Ok(doc) => doc,
            Err(p) => panic!("yaml: {p:?}"),
        };
        match crate::service::parse(&doc) {
            Ok(_) => Vec::new(),
            Err(p) => p.iter().map(Problem::to_string).collect(),
        }
    }

    #[test]
    fn genai_options_default_and_full_parse() {
        assert_eq!(problems(""), Vec::<String>::new());
        assert_eq!(
            problems(
                "mode: enforce\nshadow: false\nnormalize: true\nkeep_originals: true\nstrict: true\ncoerce_numeric_strings: true\nmappings:\n  my.llm.model: gen_ai.request.model\n  my.llm.vendor: gen_ai.provider.name"
            ),
            Vec::<String>::new()
        );
    }

    #[test]
    fn genai_bad_mode_is_reported_with_its_path() {
        assert_eq!(
            problems("mode: enforse"),
            vec!["processors.genai_semconv.mode: unknown mode `enforse`; did you mean `enforce`? (modes: annotate, enforce)"]
        );
        assert_eq!(
            problems("mode: [annotate]"),
            vec!["processors.genai_semconv.mode: expected a string, found a list"]
        );
    }

    #[test]
    fn genai_bad_mappings_are_reported_each_with_its_path() {
        assert_eq!(
            problems(
                "mappings:\n  gen_ai.usage.input_tokens: my.tokens\n  llm.token_count.prompt: gen_ai.usage.input_tokens\n  same.name: same.name\n  my.model: gen_ai.request.model"
            ),
            vec![
                "processors.genai_semconv.mappings.gen_ai.usage.input_tokens: custom mapping source `gen_ai.usage.input_tokens` is a current semantic-convention attribute",
                "processors.genai_semconv.mappings.llm.token_count.prompt: custom mapping source `llm.token_count.prompt` is already a built-in mapping source",
                "processors.genai_semconv.mappings.same.name: custom mapping maps `same.name` onto itself",
            ]
        );
        assert_eq!(
            problems("mappings:\n  my.model: {to: gen_ai.request.model}"),
            vec!["processors.genai_semconv.mappings.my.model: expected the attribute name to rename `my.model` to, found a mapping"]
        );
        assert_eq!(
            problems("mappings:\n  my.model: \"\""),
            vec!["processors.genai_semconv.mappings.my.model: custom mapping has an empty attribute name"]
        );
        assert_eq!(
            problems("mappings: [a, b]"),
            vec!["processors.genai_semconv.mappings: expected a mapping, found a list"]
        );
    }

    #[test]
    fn genai_unknown_option_and_bad_bool_are_reported() {
        assert_eq!(
            problems("keep_original: true"),
            vec!["processors.genai_semconv.keep_original: unknown key; did you mean `keep_originals`?"]
        );
        assert_eq!(
            problems("strict: yes please"),
            vec!["processors.genai_semconv.strict: expected true or false, found a string"]
        );
    }

    #[test]
    fn genai_two_instances_share_one_metric_family() {
        let yaml = format!("{BASE}    mode: annotate\n  genai_semconv/strict:\n    strict: true\n");
        let doc = match crate::config::load_str(&yaml) {
            Ok(doc) => doc,
            Err(p) => panic!("yaml: {p:?}"),
        };
        let parsed = match crate::service::parse(&doc) {
            Ok(p) => p,
            Err(p) => panic!("config problems: {p:?}"),
        };
        assert_eq!(parsed.processors.len(), 2);
        for spec in parsed.processors.values() {
            let crate::component::factory::Built::Inline(p) = &spec.built else {
                panic!("genai_semconv is an inline processor");
            };
            let mut req = request_with_one_llm_span();
            let client = crate::component::ClientInfo::default();
            let mut ctx = ProcessCtx::new(&client);
            assert!(p.process_traces(&mut req, &mut ctx).is_ok());
        }
        let text = parsed.metrics.encode();
        assert!(
            text.contains("tollgate_genai_spans_total{processor=\"genai_semconv/strict\",status=\"invalid\"} 1"),
            "{text}"
        );
        for family in ["tollgate_genai_spans", "tollgate_genai_violations"] {
            assert_eq!(
                text.matches(&format!("# HELP {family} ")).count(),
                1,
                "{family} registered once: {text}"
            );
        }
    }

    #[test]
    fn genai_semconv_is_traces_only() {
        let mut y = BASE.replace("    traces:\n", "    metrics:\n");
        y.push_str("    mode: annotate\n");
        let doc = match crate::config::load_str(&y) {
            Ok(doc) => doc,
            Err(p) => panic!("yaml: {p:?}"),
        };
        let got: Vec<String> = match crate::service::parse(&doc) {
            Ok(_) => Vec::new(),
            Err(p) => p.iter().map(Problem::to_string).collect(),
        };
        assert_eq!(
            got,
            vec!["service.pipelines.metrics.processors[0]: processor `genai_semconv` does not support metrics pipelines"]
        );
    }
}
