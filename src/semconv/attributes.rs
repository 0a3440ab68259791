//! Every `tollgate.*` attribute name tollgate reads or writes, in one place (README
//! "Attribute contract" documents each one; `tests/attribute_names.rs` fails on a
//! `"tollgate.…"` string literal anywhere else in the non-test source, on a name of [`ALL`]
//! missing from that README section, and on a duplicate in [`ALL`]).
//!
//! The names are span attributes unless said otherwise; `tollgate.envelope` may also be a
//! resource attribute, and the tenant, workflow and rates-version names are reused as data
//! point attributes of the `cost` processor's OTLP metrics. Only tollgate writes under
//! `tollgate.`: a built-in stage removes anything a client sent there (except the first
//! [`ENVELOPE`], the token) before the first tollgate processor of a traces pipeline.
//!
//! Not attribute names, so not here: the `cost` processor's OTLP metric and scope names
//! (`tollgate.cost`, `tollgate.tokens`), the Prometheus self-metrics (`tollgate_*`), the FOCUS
//! `Tags` / `x_AllocatedTags` keys of the ledger's exports (`tollgate.tenant`,
//! `tollgate.workflow`, `tollgate.server`, `tollgate.envelope_status`) and the budget alert's
//! JSON `type` (`tollgate.budget.threshold_crossed`).

// ---- Namespaces (prefixes, not names) ----

/// Everything under this prefix is tollgate's: the strip stage removes what a client sent.
pub const TOLLGATE_PREFIX: &str = "tollgate.";
/// The `cost` processor's attributes: it removes every one of them (except
/// [`COST_CALLER_REPORTED`]) from a span before pricing it.
pub const COST_PREFIX: &str = "tollgate.cost.";

// ---- envelope: the token and the `envelope` processor's outcome ----

/// The signed `tg1` identity envelope (the token), set by the client's SDK on the span or on
/// its resource; read by the `envelope` processor and the `ledger` exporter, removed by the
/// OTLP and file exporters with `strip_token: true`. The one `tollgate.*` a client may send.
pub const ENVELOPE: &str = "tollgate.envelope";
/// The verification outcome on every span: `valid`, `missing`, `malformed`, `unknown_key`,
/// `revoked_key`, `bad_signature`, `expired`, `not_yet_valid`, `claims_mismatch`, `stale`.
pub const ENVELOPE_STATUS: &str = "tollgate.envelope.status";
/// The outcome in shadow mode, where nothing else is written.
pub const ENVELOPE_SHADOW_STATUS: &str = "tollgate.envelope.shadow_status";
/// On a failing span (not `missing`): which field or rule failed.
pub const ENVELOPE_DETAIL: &str = "tollgate.envelope.detail";
/// The break-glass reason, when an override let a failing envelope pass as attributed.
pub const ENVELOPE_OVERRIDE: &str = "tollgate.envelope.override";
/// `true` when the span's issuance id was seen on more than `reuse_max_traces` traces.
pub const ENVELOPE_REUSE: &str = "tollgate.envelope.reuse";
/// The id of the key that signed the envelope (valid or overridden spans).
pub const ENVELOPE_KEY_ID: &str = "tollgate.envelope.key_id";

// ---- identity: the envelope's signed claims, written by the `envelope` processor ----

/// The signed tenant of a valid (or overridden) span, else the `unattributed_tenant` label.
/// Also a data point attribute of the `cost` processor's OTLP metrics.
pub const TENANT_ID: &str = "tollgate.tenant.id";
/// The signed originator (valid or overridden spans).
pub const ORIGINATOR_ID: &str = "tollgate.originator.id";
/// The signed workflow (valid or overridden spans). Also a data point attribute of the
/// `cost` processor's OTLP metrics.
pub const WORKFLOW_ID: &str = "tollgate.workflow.id";
/// The signed operation (valid or overridden spans).
pub const OPERATION_ID: &str = "tollgate.operation.id";
/// The signed issuance (valid or overridden spans).
pub const ISSUANCE_ID: &str = "tollgate.issuance.id";
/// The number of hops in the envelope's lineage (int).
pub const LINEAGE_DEPTH: &str = "tollgate.lineage.depth";
/// The hop kinds of the lineage, in order (string array).
pub const LINEAGE_KINDS: &str = "tollgate.lineage.kinds";

// ---- genai: the `genai_semconv` processor ----

/// On LLM spans: `valid` or `invalid`.
pub const GENAI_STATUS: &str = "tollgate.genai.status";
/// On LLM spans: the violation ids (string array, empty when valid).
pub const GENAI_VIOLATIONS: &str = "tollgate.genai.violations";

// ---- cost: the `cost` processor ----

/// What happened to the span: `priced`, `unpriced_model`, `no_usage`, `invalid_usage`,
/// `duplicate` or `rollup`. The ledger records every span with a status other than `rollup`.
pub const COST_STATUS: &str = "tollgate.cost.status";
/// Why: on `unpriced_model`, `invalid_usage` and `rollup` spans, and on a priced span
/// without a known operation.
pub const COST_REASON: &str = "tollgate.cost.reason";
/// The total cost of a priced span (double).
pub const COST_AMOUNT: &str = "tollgate.cost.amount";
/// Cost of the uncached input tokens less modality-priced ones (double).
pub const COST_INPUT: &str = "tollgate.cost.input";
/// Cost of the non-reasoning output tokens less modality-priced ones (double).
pub const COST_OUTPUT: &str = "tollgate.cost.output";
/// Cost of the cache-read input tokens (double).
pub const COST_CACHE_READ: &str = "tollgate.cost.cache_read";
/// Cost of the cache-write input tokens (double).
pub const COST_CACHE_WRITE: &str = "tollgate.cost.cache_write";
/// Cost of the reasoning output tokens (double).
pub const COST_REASONING: &str = "tollgate.cost.reasoning";
/// Cost of the audio input tokens, when the rate has an audio input price (double).
pub const COST_AUDIO_INPUT: &str = "tollgate.cost.audio_input";
/// Cost of the audio output tokens, when the rate has an audio output price (double).
pub const COST_AUDIO_OUTPUT: &str = "tollgate.cost.audio_output";
/// Cost of the image input tokens, when the rate has an image input price (double).
pub const COST_IMAGE_INPUT: &str = "tollgate.cost.image_input";
/// Cost of the image output tokens, when the rate has an image output price (double).
pub const COST_IMAGE_OUTPUT: &str = "tollgate.cost.image_output";
/// The exact decimal total as text (the doubles are this value rounded once).
pub const COST_EXACT: &str = "tollgate.cost.exact";
/// The rate table's currency.
pub const COST_CURRENCY: &str = "tollgate.cost.currency";
/// The rate table's `version`, on `priced` and `unpriced_model` spans (the ledger re-prices
/// the span with that table). Also a data point attribute of the `cost` processor's OTLP metrics.
pub const COST_RATES_VERSION: &str = "tollgate.cost.rates_version";
/// The rate row used (`rates[3]`, or `litellm:<model>` for imported rows).
pub const COST_RATE_ID: &str = "tollgate.cost.rate_id";
/// The caller's own cost figure (from `gen_ai.usage.cost.amount`, or moved here from a legacy
/// `gen_ai.usage.cost` by the strip stage), same type.
pub const COST_CALLER_REPORTED: &str = "tollgate.cost.caller_reported";
/// The caller's amount − tollgate's exact total, signed exact decimal text (same currency).
pub const COST_CALLER_DRIFT: &str = "tollgate.cost.caller_drift";

/// Every name above except the prefixes, grouped as above.
pub const ALL: &[&str] = &[
    ENVELOPE,
    ENVELOPE_STATUS,
    ENVELOPE_SHADOW_STATUS,
    ENVELOPE_DETAIL,
    ENVELOPE_OVERRIDE,
    ENVELOPE_REUSE,
    ENVELOPE_KEY_ID,
    TENANT_ID,
    ORIGINATOR_ID,
    WORKFLOW_ID,
    OPERATION_ID,
    ISSUANCE_ID,
    LINEAGE_DEPTH,
    LINEAGE_KINDS,
    GENAI_STATUS,
    GENAI_VIOLATIONS,
    COST_STATUS,
    COST_REASON,
    COST_AMOUNT,
    COST_INPUT,
    COST_OUTPUT,
    COST_CACHE_READ,
    COST_CACHE_WRITE,
    COST_REASONING,
    COST_AUDIO_INPUT,
    COST_AUDIO_OUTPUT,
    COST_IMAGE_INPUT,
    COST_IMAGE_OUTPUT,
    COST_EXACT,
    COST_CURRENCY,
    COST_RATES_VERSION,
    COST_RATE_ID,
    COST_CALLER_REPORTED,
    COST_CALLER_DRIFT,
];
