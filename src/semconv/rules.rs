//! OpenTelemetry GenAI semantic-convention rule table, as static data.
//!
//! # Pinned version
//!
//! Pinned to **OpenTelemetry semantic conventions v1.41.0**
//! (`open-telemetry/semantic-conventions`, tag `v1.41.0`, released 2026-04-28,
//! schema URL [`SCHEMA_URL`]). This is the last release in which the GenAI
//! conventions (`model/gen-ai/*`) are defined, non-deprecated, in that
//! repository: v1.42.0 (2026-06-12) deprecated every `gen_ai.*` attribute and
//! moved them to `open-telemetry/semantic-conventions-genai` (#3696). A v1.41.1
//! patch release exists (backport of #3711, no schema changes); the GenAI
//! content here was verified against v1.41.0 artifacts.
//!
//! # Sources (see `docs/genai-semconv.md` for the full provenance list)
//!
//! * Attribute names, types, enum members, notes: the v1.41.0 registry as
//!   generated into `open-telemetry/opentelemetry-go` `semconv/v1.41.0/attribute_group.go`.
//! * Deprecated names / value renames: `model/gen-ai/deprecated/registry-deprecated.yaml`,
//!   `schemas/1.41.1` (rename history), and the generated deprecated
//!   `gen_ai.system` enum (JS/Python semconv packages).
//! * Per-span requirement levels and span kinds: `docs/gen-ai/gen-ai-spans.md`
//!   and `docs/gen-ai/gen-ai-agent-spans.md` (generated from `model/gen-ai/spans.yaml`).
//! * Foreign names: OpenInference `openinference-semantic-conventions`
//!   (`openinference/semconv/trace/__init__.py`) and OpenLLMetry
//!   `opentelemetry-semantic-conventions-ai` v0.4.x (`semconv_ai/__init__.py`,
//!   `MIGRATION.md`).
//!
//! # Token accounting (pricing-relevant wording, verbatim from v1.41.0)
//!
//! * `gen_ai.usage.input_tokens`: "This value SHOULD include all types of input
//!   tokens, including cached tokens."
//! * `gen_ai.usage.cache_read.input_tokens` / `gen_ai.usage.cache_creation.input_tokens`
//!   (now `gen_ai.usage.cache_write.input_tokens`, semantic-conventions-genai #440):
//!   "The value SHOULD be included in `gen_ai.usage.input_tokens`."
//! * `gen_ai.usage.reasoning.output_tokens`: "The value SHOULD be included in
//!   `gen_ai.usage.output_tokens`."

/// Pinned semantic-conventions release (see module docs).
pub const SEMCONV_VERSION: &str = "1.41.0";

/// Schema URL of the pinned release.
pub const SCHEMA_URL: &str = "https://opentelemetry.io/schemas/1.41.0";

/// `Mapping::source` for names deprecated/renamed by the semantic conventions themselves.
pub const SOURCE_SEMCONV_DEPRECATED: &str = "semconv-deprecated";
/// `Mapping::source` for Arize OpenInference names.
pub const SOURCE_OPENINFERENCE: &str = "openinference";
/// `Mapping::source` for Traceloop OpenLLMetry (`opentelemetry-semantic-conventions-ai` 0.4.x) names.
pub const SOURCE_OPENLLMETRY: &str = "openllmetry";

/// Attribute value type as declared by the registry.
///
/// `Any` is the registry's `any` type (structured content such as
/// `gen_ai.input.messages`); it is never type-checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AttrType {
    String,
    Int,
    Double,
    Bool,
    StringArray,
    IntArray,
    DoubleArray,
    Any,
}

impl AttrType {
    /// Registry spelling of the type (`string`, `int`, `double`, `boolean`, `string[]`, ...).
    pub const fn as_str(self) -> &'static str {
        match self {
            AttrType::String => "string",
            AttrType::Int => "int",
            AttrType::Double => "double",
            AttrType::Bool => "boolean",
            AttrType::StringArray => "string[]",
            AttrType::IntArray => "int[]",
            AttrType::DoubleArray => "double[]",
            AttrType::Any => "any",
        }
    }
}

/// Requirement level (semconv "attribute requirement levels").
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Requirement {
    Required,
    ConditionallyRequired,
    Recommended,
    OptIn,
}

impl Requirement {
    pub const fn as_str(self) -> &'static str {
        match self {
            Requirement::Required => "Required",
            Requirement::ConditionallyRequired => "Conditionally Required",
            Requirement::Recommended => "Recommended",
            Requirement::OptIn => "Opt-In",
        }
    }
}

/// One attribute of the pinned registry.
///
/// `requirement` is the level on the span that primarily defines the
/// attribute: the inference span (`span.gen_ai.inference.client`) when the
/// attribute appears there, otherwise the agent / tool / embeddings /
/// retrieval span that lists it, otherwise `Recommended` (the registry
/// default, for attributes used only on events or metrics). Per-span levels
/// are in [`SPAN_REQUIREMENTS`] and `docs/genai-semconv.md`.
///
/// `well_known` lists enum members; for these attributes semconv says "If one
/// of them applies, then the respective value MUST be used; otherwise, a custom
/// value MAY be used" — so unknown values are only reported in strict mode.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AttrRule {
    pub name: &'static str,
    pub ty: AttrType,
    pub requirement: Requirement,
    pub well_known: &'static [&'static str],
    pub brief: &'static str,
}

const fn rule(
    name: &'static str,
    ty: AttrType,
    requirement: Requirement,
    brief: &'static str,
) -> AttrRule {
    AttrRule {
        name,
        ty,
        requirement,
        well_known: &[],
        brief,
    }
}

const fn enum_rule(
    name: &'static str,
    requirement: Requirement,
    well_known: &'static [&'static str],
    brief: &'static str,
) -> AttrRule {
    AttrRule {
        name,
        ty: AttrType::String,
        requirement,
        well_known,
        brief,
    }
}

/// `gen_ai.operation.name` members in v1.41.0.
pub const OPERATION_NAMES: &[&str] = &[
    "chat",
    "generate_content",
    "text_completion",
    "embeddings",
    "retrieval",
    "create_agent",
    "invoke_agent",
    "execute_tool",
    "invoke_workflow",
];

/// `gen_ai.provider.name` members in v1.41.0.
pub const PROVIDER_NAMES: &[&str] = &[
    "openai",
    "gcp.gen_ai",
    "gcp.vertex_ai",
    "gcp.gemini",
    "anthropic",
    "cohere",
    "azure.ai.inference",
    "azure.ai.openai",
    "ibm.watsonx.ai",
    "aws.bedrock",
    "perplexity",
    "x_ai",
    "deepseek",
    "groq",
    "mistral_ai",
];

/// `gen_ai.output.type` members in v1.41.0.
pub const OUTPUT_TYPES: &[&str] = &["text", "json", "image", "speech"];

/// `gen_ai.token.type` members in v1.41.0 (the deprecated member id
/// `completion` already carries the value `output`).
pub const TOKEN_TYPES: &[&str] = &["input", "output"];

use AttrType as T;
use Requirement as R;

/// The rule table as a `const` slice (so its length is usable in array types).
/// Prefer [`ATTRIBUTES`] outside this module.
pub const ATTRIBUTE_RULES: &[AttrRule] = &[
    // --- identity of the operation -------------------------------------------------
    enum_rule(
        "gen_ai.operation.name",
        R::Required,
        OPERATION_NAMES,
        "The name of the operation being performed.",
    ),
    enum_rule(
        "gen_ai.provider.name",
        R::Required,
        PROVIDER_NAMES,
        "The Generative AI provider as identified by the client or server instrumentation.",
    ),
    // --- request ---------------------------------------------------------------------
    rule(
        "gen_ai.request.model",
        T::String,
        R::ConditionallyRequired,
        "The name of the GenAI model a request is being made to.",
    ),
    rule(
        "gen_ai.request.max_tokens",
        T::Int,
        R::Recommended,
        "The maximum number of tokens the model generates for a request.",
    ),
    rule(
        "gen_ai.request.choice.count",
        T::Int,
        R::ConditionallyRequired,
        "The target number of candidate completions to return.",
    ),
    rule(
        "gen_ai.request.temperature",
        T::Double,
        R::Recommended,
        "The temperature setting for the GenAI request.",
    ),
    rule(
        "gen_ai.request.top_p",
        T::Double,
        R::Recommended,
        "The top_p sampling setting for the GenAI request.",
    ),
    rule(
        "gen_ai.request.top_k",
        T::Double,
        R::Recommended,
        "The top_k sampling setting for the GenAI request.",
    ),
    rule(
        "gen_ai.request.stop_sequences",
        T::StringArray,
        R::Recommended,
        "List of sequences that the model will use to stop generating further tokens.",
    ),
    rule(
        "gen_ai.request.frequency_penalty",
        T::Double,
        R::Recommended,
        "The frequency penalty setting for the GenAI request.",
    ),
    rule(
        "gen_ai.request.presence_penalty",
        T::Double,
        R::Recommended,
        "The presence penalty setting for the GenAI request.",
    ),
    rule(
        "gen_ai.request.encoding_formats",
        T::StringArray,
        R::Recommended,
        "The encoding formats requested in an embeddings operation, if specified.",
    ),
    rule(
        "gen_ai.request.seed",
        T::Int,
        R::ConditionallyRequired,
        "Requests with same seed value more likely to return same result.",
    ),
    rule(
        "gen_ai.request.stream",
        T::Bool,
        R::Recommended,
        "Indicates whether the GenAI request was made in streaming mode.",
    ),
    enum_rule(
        "gen_ai.output.type",
        R::ConditionallyRequired,
        OUTPUT_TYPES,
        "Represents the content type requested by the client.",
    ),
    rule(
        "gen_ai.embeddings.dimension.count",
        T::Int,
        R::Recommended,
        "The number of dimensions the resulting output embeddings should have.",
    ),
    // --- response --------------------------------------------------------------------
    rule(
        "gen_ai.response.id",
        T::String,
        R::Recommended,
        "The unique identifier for the completion.",
    ),
    rule(
        "gen_ai.response.model",
        T::String,
        R::Recommended,
        "The name of the model that generated the response.",
    ),
    rule(
        "gen_ai.response.finish_reasons",
        T::StringArray,
        R::Recommended,
        "Array of reasons the model stopped generating tokens, corresponding to each generation received.",
    ),
    rule(
        "gen_ai.response.time_to_first_chunk",
        T::Double,
        R::Recommended,
        "Time to first chunk in a streaming response, measured from request issuance, in seconds.",
    ),
    // --- usage -----------------------------------------------------------------------
    rule(
        "gen_ai.usage.input_tokens",
        T::Int,
        R::Recommended,
        "The number of tokens used in the GenAI input (prompt). SHOULD include all types of input tokens, including cached tokens.",
    ),
    rule(
        "gen_ai.usage.output_tokens",
        T::Int,
        R::Recommended,
        "The number of tokens used in the GenAI response (completion).",
    ),
    rule(
        "gen_ai.usage.cache_read.input_tokens",
        T::Int,
        R::Recommended,
        "The number of input tokens served from a provider-managed cache. SHOULD be included in gen_ai.usage.input_tokens.",
    ),
    rule(
        "gen_ai.usage.cache_write.input_tokens",
        T::Int,
        R::Recommended,
        "The number of input tokens written to a provider-managed cache. SHOULD be included in gen_ai.usage.input_tokens. (semantic-conventions-genai #440; v1.41.0 called it gen_ai.usage.cache_creation.input_tokens)",
    ),
    // Per-modality breakdowns: part of the totals above, never added to them.
    rule(
        "gen_ai.usage.text.input_tokens",
        T::Int,
        R::Recommended,
        "Text input tokens; part of gen_ai.usage.input_tokens.",
    ),
    rule(
        "gen_ai.usage.text.output_tokens",
        T::Int,
        R::Recommended,
        "Text output tokens; part of gen_ai.usage.output_tokens.",
    ),
    rule(
        "gen_ai.usage.image.input_tokens",
        T::Int,
        R::Recommended,
        "Image input tokens; part of gen_ai.usage.input_tokens.",
    ),
    rule(
        "gen_ai.usage.image.output_tokens",
        T::Int,
        R::Recommended,
        "Image output tokens; part of gen_ai.usage.output_tokens.",
    ),
    rule(
        "gen_ai.usage.audio.input_tokens",
        T::Int,
        R::Recommended,
        "Audio input tokens; part of gen_ai.usage.input_tokens.",
    ),
    rule(
        "gen_ai.usage.audio.output_tokens",
        T::Int,
        R::Recommended,
        "Audio output tokens; part of gen_ai.usage.output_tokens.",
    ),
    rule(
        "gen_ai.usage.video.input_tokens",
        T::Int,
        R::Recommended,
        "Video input tokens; part of gen_ai.usage.input_tokens.",
    ),
    rule(
        "gen_ai.usage.reasoning.output_tokens",
        T::Int,
        R::Recommended,
        "The number of output tokens used for reasoning (e.g. chain-of-thought, extended thinking). SHOULD be included in gen_ai.usage.output_tokens.",
    ),
    enum_rule(
        "gen_ai.token.type",
        R::Recommended,
        TOKEN_TYPES,
        "The type of token being counted (metric attribute of gen_ai.client.token.usage).",
    ),
    // --- conversation / agent / workflow -------------------------------------------------
    rule(
        "gen_ai.conversation.id",
        T::String,
        R::ConditionallyRequired,
        "The unique identifier for a conversation (session, thread).",
    ),
    rule(
        "gen_ai.agent.id",
        T::String,
        R::ConditionallyRequired,
        "The unique identifier of the GenAI agent.",
    ),
    rule(
        "gen_ai.agent.name",
        T::String,
        R::ConditionallyRequired,
        "Human-readable name of the GenAI agent provided by the application.",
    ),
    rule(
        "gen_ai.agent.description",
        T::String,
        R::ConditionallyRequired,
        "Free-form description of the GenAI agent provided by the application.",
    ),
    rule(
        "gen_ai.agent.version",
        T::String,
        R::Recommended,
        "The version of the GenAI agent.",
    ),
    rule(
        "gen_ai.workflow.name",
        T::String,
        R::Recommended,
        "Human-readable name of the GenAI workflow provided by the application.",
    ),
    rule(
        "gen_ai.data_source.id",
        T::String,
        R::ConditionallyRequired,
        "The data source identifier.",
    ),
    rule(
        "gen_ai.prompt.name",
        T::String,
        R::Recommended,
        "The name of the prompt that uniquely identifies it.",
    ),
    // --- tools -----------------------------------------------------------------------
    rule(
        "gen_ai.tool.name",
        T::String,
        R::Recommended,
        "Name of the tool utilized by the agent.",
    ),
    rule(
        "gen_ai.tool.call.id",
        T::String,
        R::Recommended,
        "The tool call identifier.",
    ),
    rule(
        "gen_ai.tool.description",
        T::String,
        R::Recommended,
        "The tool description.",
    ),
    rule(
        "gen_ai.tool.type",
        T::String,
        R::Recommended,
        "Type of the tool utilized by the agent (examples: function, extension, datastore).",
    ),
    rule(
        "gen_ai.tool.call.arguments",
        T::Any,
        R::OptIn,
        "Parameters passed to the tool call.",
    ),
    rule(
        "gen_ai.tool.call.result",
        T::Any,
        R::OptIn,
        "The result returned by the tool call (if any and if execution was successful).",
    ),
    rule(
        "gen_ai.tool.definitions",
        T::Any,
        R::OptIn,
        "The list of tool definitions available to the GenAI agent or model.",
    ),
    // --- content (opt-in) --------------------------------------------------------------
    rule(
        "gen_ai.system_instructions",
        T::Any,
        R::OptIn,
        "The system message or instructions provided to the GenAI model separately from the chat history.",
    ),
    rule(
        "gen_ai.input.messages",
        T::Any,
        R::OptIn,
        "The chat history provided to the model as an input.",
    ),
    rule(
        "gen_ai.output.messages",
        T::Any,
        R::OptIn,
        "Messages returned by the model where each message represents a specific model response (choice, candidate).",
    ),
    rule(
        "gen_ai.retrieval.query.text",
        T::String,
        R::OptIn,
        "The query text used for retrieval.",
    ),
    rule(
        "gen_ai.retrieval.documents",
        T::Any,
        R::OptIn,
        "The documents retrieved.",
    ),
    // --- evaluation (event attributes) ---------------------------------------------------
    rule(
        "gen_ai.evaluation.name",
        T::String,
        R::Recommended,
        "The name of the evaluation metric used for the GenAI response.",
    ),
    rule(
        "gen_ai.evaluation.score.value",
        T::Double,
        R::Recommended,
        "The evaluation score returned by the evaluator.",
    ),
    rule(
        "gen_ai.evaluation.score.label",
        T::String,
        R::Recommended,
        "Human readable label for evaluation.",
    ),
    rule(
        "gen_ai.evaluation.explanation",
        T::String,
        R::Recommended,
        "A free-form explanation for the assigned score provided by the evaluator.",
    ),
    // --- general attributes referenced by the GenAI spans --------------------------------
    rule(
        "error.type",
        T::String,
        R::ConditionallyRequired,
        "Describes a class of error the operation ended with (well-known fallback value: _OTHER).",
    ),
    rule(
        "server.address",
        T::String,
        R::Recommended,
        "GenAI server address.",
    ),
    rule(
        "server.port",
        T::Int,
        R::ConditionallyRequired,
        "GenAI server port.",
    ),
];

/// Every attribute rule of the pinned version.
pub static ATTRIBUTES: &[AttrRule] = ATTRIBUTE_RULES;

/// Attributes that are token/choice/dimension counts: negative values are a
/// `range:` violation.
pub const COUNT_ATTRIBUTES: &[&str] = &[
    "gen_ai.usage.input_tokens",
    "gen_ai.usage.output_tokens",
    "gen_ai.usage.cache_read.input_tokens",
    "gen_ai.usage.cache_write.input_tokens",
    "gen_ai.usage.reasoning.output_tokens",
    "gen_ai.usage.text.input_tokens",
    "gen_ai.usage.text.output_tokens",
    "gen_ai.usage.image.input_tokens",
    "gen_ai.usage.image.output_tokens",
    "gen_ai.usage.audio.input_tokens",
    "gen_ai.usage.audio.output_tokens",
    "gen_ai.usage.video.input_tokens",
    "gen_ai.request.max_tokens",
    "gen_ai.request.choice.count",
    "gen_ai.embeddings.dimension.count",
];

// ---------------------------------------------------------------------------------------
// Per-span requirement levels and span kinds
// ---------------------------------------------------------------------------------------

/// The GenAI span definitions of the pinned version that the validator knows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GenAiSpan {
    /// `span.gen_ai.inference.client` (`chat`, `generate_content`, `text_completion`).
    Inference,
    /// `span.gen_ai.embeddings.client` (`embeddings`).
    Embeddings,
    /// `span.gen_ai.retrieval.client` (`retrieval`).
    Retrieval,
    /// `span.gen_ai.execute_tool.internal` (`execute_tool`).
    ExecuteTool,
    /// `span.gen_ai.create_agent.client` (`create_agent`).
    CreateAgent,
    /// `span.gen_ai.invoke_agent.*` (`invoke_agent`).
    InvokeAgent,
}

impl GenAiSpan {
    /// The span definition selected by a `gen_ai.operation.name` value.
    ///
    /// `invoke_workflow` and custom operation names return `None`: only the
    /// generic GenAI rules (operation name required, types, ranges, kind
    /// CLIENT/INTERNAL) apply to them.
    pub fn for_operation(op: &str) -> Option<GenAiSpan> {
        match op {
            "chat" | "generate_content" | "text_completion" => Some(GenAiSpan::Inference),
            "embeddings" => Some(GenAiSpan::Embeddings),
            "retrieval" => Some(GenAiSpan::Retrieval),
            "execute_tool" => Some(GenAiSpan::ExecuteTool),
            "create_agent" => Some(GenAiSpan::CreateAgent),
            "invoke_agent" => Some(GenAiSpan::InvokeAgent),
            _ => None,
        }
    }

    /// Span kinds the spec expects (`SpanKind` values: 1 = INTERNAL, 3 = CLIENT).
    ///
    /// * inference: "SHOULD be `CLIENT` and MAY be set to `INTERNAL` on spans
    ///   representing call to models running in the same process"
    /// * embeddings, retrieval, create_agent: "SHOULD be `CLIENT`"
    /// * execute_tool: "SHOULD be `INTERNAL`"
    /// * invoke_agent: "SHOULD be `CLIENT` and MAY be set to `INTERNAL`"
    pub fn expected_kinds(self) -> &'static [i32] {
        match self {
            GenAiSpan::Inference | GenAiSpan::InvokeAgent => {
                &[SPAN_KIND_CLIENT, SPAN_KIND_INTERNAL]
            }
            GenAiSpan::Embeddings | GenAiSpan::Retrieval | GenAiSpan::CreateAgent => {
                &[SPAN_KIND_CLIENT]
            }
            GenAiSpan::ExecuteTool => &[SPAN_KIND_INTERNAL],
        }
    }
}

/// `SpanKind::Internal` as carried in OTLP.
pub const SPAN_KIND_INTERNAL: i32 = 1;
/// `SpanKind::Client` as carried in OTLP.
pub const SPAN_KIND_CLIENT: i32 = 3;
/// Kinds accepted for GenAI spans whose operation has no span definition.
pub const GENERIC_EXPECTED_KINDS: &[i32] = &[SPAN_KIND_CLIENT, SPAN_KIND_INTERNAL];

/// Condition attached to a conditionally-required attribute.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Condition {
    /// Unconditionally required.
    Always,
    /// "if the operation ended in an error" — decided from `span.status.code == ERROR`.
    StatusError,
    /// "If `server.address` is set." — decided from the attributes.
    ServerAddressSet,
    /// Condition is not decidable from the span (the spec's wording is kept);
    /// never reported.
    NotDecidable(&'static str),
}

impl Condition {
    /// Whether the validator can decide this condition from a span.
    pub const fn is_decidable(self) -> bool {
        !matches!(self, Condition::NotDecidable(_))
    }
}

/// Requirement of one attribute on one span definition (Required and
/// Conditionally Required rows only; Recommended / Opt-In rows are in the docs).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SpanRequirement {
    pub span: GenAiSpan,
    pub attr: &'static str,
    pub requirement: Requirement,
    pub condition: Condition,
}

const fn req(span: GenAiSpan, attr: &'static str) -> SpanRequirement {
    SpanRequirement {
        span,
        attr,
        requirement: Requirement::Required,
        condition: Condition::Always,
    }
}

const fn cond(span: GenAiSpan, attr: &'static str, condition: Condition) -> SpanRequirement {
    SpanRequirement {
        span,
        attr,
        requirement: Requirement::ConditionallyRequired,
        condition,
    }
}

use Condition::{NotDecidable as Nd, ServerAddressSet as AddrSet, StatusError as OnError};
use GenAiSpan as S;

/// Required / conditionally-required attributes per span definition.
pub static SPAN_REQUIREMENTS: &[SpanRequirement] = &[
    // inference
    req(S::Inference, "gen_ai.operation.name"),
    req(S::Inference, "gen_ai.provider.name"),
    cond(S::Inference, "error.type", OnError),
    cond(S::Inference, "gen_ai.conversation.id", Nd("when available")),
    cond(
        S::Inference,
        "gen_ai.output.type",
        Nd("when applicable and if the request includes an output format"),
    ),
    cond(
        S::Inference,
        "gen_ai.request.choice.count",
        Nd("if available, in the request, and !=1"),
    ),
    cond(S::Inference, "gen_ai.request.model", Nd("If available.")),
    cond(
        S::Inference,
        "gen_ai.request.seed",
        Nd("if applicable and if the request includes a seed"),
    ),
    cond(S::Inference, "server.port", AddrSet),
    // embeddings
    req(S::Embeddings, "gen_ai.operation.name"),
    req(S::Embeddings, "gen_ai.provider.name"),
    cond(S::Embeddings, "error.type", OnError),
    cond(S::Embeddings, "gen_ai.request.model", Nd("If available.")),
    cond(S::Embeddings, "server.port", AddrSet),
    // retrieval
    req(S::Retrieval, "gen_ai.operation.name"),
    cond(S::Retrieval, "error.type", OnError),
    cond(S::Retrieval, "gen_ai.data_source.id", Nd("when applicable")),
    cond(S::Retrieval, "gen_ai.provider.name", Nd("when applicable")),
    cond(S::Retrieval, "gen_ai.request.model", Nd("If available.")),
    cond(S::Retrieval, "server.port", AddrSet),
    // execute_tool
    req(S::ExecuteTool, "gen_ai.operation.name"),
    cond(S::ExecuteTool, "error.type", OnError),
    // create_agent
    req(S::CreateAgent, "gen_ai.operation.name"),
    req(S::CreateAgent, "gen_ai.provider.name"),
    cond(S::CreateAgent, "error.type", OnError),
    cond(
        S::CreateAgent,
        "gen_ai.agent.description",
        Nd("If provided by the application."),
    ),
    cond(S::CreateAgent, "gen_ai.agent.id", Nd("if applicable.")),
    cond(
        S::CreateAgent,
        "gen_ai.agent.name",
        Nd("If provided by the application."),
    ),
    cond(S::CreateAgent, "gen_ai.request.model", Nd("If available.")),
    cond(S::CreateAgent, "server.port", AddrSet),
    // invoke_agent
    req(S::InvokeAgent, "gen_ai.operation.name"),
    req(S::InvokeAgent, "gen_ai.provider.name"),
    cond(S::InvokeAgent, "error.type", OnError),
    cond(
        S::InvokeAgent,
        "gen_ai.agent.description",
        Nd("when available"),
    ),
    cond(S::InvokeAgent, "gen_ai.agent.id", Nd("if applicable.")),
    cond(S::InvokeAgent, "gen_ai.agent.name", Nd("when available")),
    cond(
        S::InvokeAgent,
        "gen_ai.conversation.id",
        Nd("when available"),
    ),
    cond(
        S::InvokeAgent,
        "gen_ai.data_source.id",
        Nd("if applicable."),
    ),
    cond(
        S::InvokeAgent,
        "gen_ai.output.type",
        Nd("when applicable and if the request includes an output format"),
    ),
    cond(
        S::InvokeAgent,
        "gen_ai.request.choice.count",
        Nd("if available, in the request, and !=1"),
    ),
    cond(S::InvokeAgent, "gen_ai.request.model", Nd("If available.")),
    cond(
        S::InvokeAgent,
        "gen_ai.request.seed",
        Nd("if applicable and if the request includes a seed"),
    ),
    cond(S::InvokeAgent, "server.port", AddrSet),
];

// ---------------------------------------------------------------------------------------
// Foreign / deprecated name mappings
// ---------------------------------------------------------------------------------------

/// What to do with a source value that has no entry in [`Mapping::value_map`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unmapped {
    /// Copy the value unchanged (names whose values are free-form or already aligned).
    PassThrough,
    /// Leave the source attribute alone: the value has no equivalent in the
    /// target vocabulary (e.g. `openinference.span.kind = CHAIN`). Such a
    /// source attribute also does not make a span an LLM span.
    Skip,
}

/// A rename from a deprecated or foreign attribute name to the pinned name.
///
/// Rows with the same `to` are in priority order: when several source names
/// for one target are present, the earliest row provides the value (the
/// current name itself always wins over every row) and differing values are
/// reported as `conflict:<to>`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Mapping {
    pub from: &'static str,
    pub to: &'static str,
    /// One of [`SOURCE_SEMCONV_DEPRECATED`], [`SOURCE_OPENINFERENCE`], [`SOURCE_OPENLLMETRY`].
    pub source: &'static str,
    /// String value renames applied while mapping (`(old, new)`).
    pub value_map: &'static [(&'static str, &'static str)],
    pub unmapped: Unmapped,
}

const fn map(from: &'static str, to: &'static str, source: &'static str) -> Mapping {
    Mapping {
        from,
        to,
        source,
        value_map: &[],
        unmapped: Unmapped::PassThrough,
    }
}

const fn map_values(
    from: &'static str,
    to: &'static str,
    source: &'static str,
    value_map: &'static [(&'static str, &'static str)],
    unmapped: Unmapped,
) -> Mapping {
    Mapping {
        from,
        to,
        source,
        value_map,
        unmapped,
    }
}

/// `gen_ai.system` → `gen_ai.provider.name` value renames.
///
/// * semconv: `az.ai.inference`/`az.ai.openai` renamed to `azure.ai.*` (v1.35.0);
///   `vertex_ai`/`gemini` replaced by `gcp.vertex_ai`/`gcp.gemini` (v1.33.0,
///   marked deprecated in the `gen_ai.system` enum); the deprecated
///   `gen_ai.system` enum spells xAI `xai` while `gen_ai.provider.name` uses `x_ai`.
/// * OpenLLMetry ≤ 0.4.x emitted capitalised `gen_ai.system` values; targets
///   follow its own 0.5.0 migration table (`MIGRATION.md`), with `az.ai.openai`
///   carried on to `azure.ai.openai`. Values without a semconv member
///   (`ollama`, `together_ai`, ...) are OpenLLMetry's lowercase spellings.
pub const GEN_AI_SYSTEM_VALUES: &[(&str, &str)] = &[
    ("az.ai.inference", "azure.ai.inference"),
    ("az.ai.openai", "azure.ai.openai"),
    ("vertex_ai", "gcp.vertex_ai"),
    ("gemini", "gcp.gemini"),
    ("xai", "x_ai"),
    ("Anthropic", "anthropic"),
    ("Cohere", "cohere"),
    ("MistralAI", "mistral_ai"),
    ("Groq", "groq"),
    ("Watsonx", "ibm.watsonx.ai"),
    ("Azure", "azure.ai.openai"),
    ("AWS", "aws.bedrock"),
    ("Google", "gcp.gen_ai"),
    ("Ollama", "ollama"),
    ("AlephAlpha", "aleph_alpha"),
    ("Replicate", "replicate"),
    ("TogetherAI", "together_ai"),
    ("HuggingFace", "hugging_face"),
    ("Fireworks", "fireworks"),
    ("OpenRouter", "openrouter"),
    ("Langchain", "langchain"),
];

/// OpenInference `llm.provider` → `gen_ai.provider.name` values that differ.
/// `google` → `gcp.gen_ai` ("Any Google generative AI endpoint ... May be used
/// when specific backend is unknown"); `azure` → `azure.ai.openai` and
/// `aws` → `aws.bedrock` are tollgate's choice (OpenInference does not say which
/// Azure/AWS service).
pub const OPENINFERENCE_PROVIDER_VALUES: &[(&str, &str)] = &[
    ("mistralai", "mistral_ai"),
    ("xai", "x_ai"),
    ("google", "gcp.gen_ai"),
    ("azure", "azure.ai.openai"),
    ("aws", "aws.bedrock"),
];

/// OpenInference `llm.system` → `gen_ai.provider.name` values that differ.
pub const OPENINFERENCE_SYSTEM_VALUES: &[(&str, &str)] =
    &[("mistralai", "mistral_ai"), ("vertexai", "gcp.vertex_ai")];

/// `openinference.span.kind` → `gen_ai.operation.name` (other kinds — CHAIN,
/// RERANKER, GUARDRAIL, EVALUATOR, PROMPT, UNKNOWN — have no equivalent).
/// `LLM` → `chat` is a heuristic: OpenInference does not distinguish chat from
/// text completion.
pub const OPENINFERENCE_SPAN_KIND_VALUES: &[(&str, &str)] = &[
    ("LLM", "chat"),
    ("EMBEDDING", "embeddings"),
    ("RETRIEVER", "retrieval"),
    ("TOOL", "execute_tool"),
    ("AGENT", "invoke_agent"),
];

/// OpenLLMetry `llm.request.type` (`LLMRequestTypeValues`) → `gen_ai.operation.name`
/// (`rerank` / `unknown` have no equivalent).
pub const OPENLLMETRY_REQUEST_TYPE_VALUES: &[(&str, &str)] = &[
    ("chat", "chat"),
    ("completion", "text_completion"),
    ("embedding", "embeddings"),
];

/// OpenLLMetry `traceloop.span.kind` (`TraceloopSpanKindValues`) → `gen_ai.operation.name`
/// (`task` / `unknown` have no equivalent).
pub const TRACELOOP_SPAN_KIND_VALUES: &[(&str, &str)] = &[
    ("workflow", "invoke_workflow"),
    ("agent", "invoke_agent"),
    ("tool", "execute_tool"),
];

/// Deprecated OpenAI `response_format` values → `gen_ai.output.type`
/// (old spans.yaml note: "`json` for structured outputs with defined or undefined schema").
pub const OPENAI_RESPONSE_FORMAT_VALUES: &[(&str, &str)] = &[
    ("text", "text"),
    ("json_object", "json"),
    ("json_schema", "json"),
];

/// The mapping table as a `const` slice; prefer [`MAPPINGS`] outside this module.
pub const MAPPING_RULES: &[Mapping] = &[
    // --- semantic conventions' own renames --------------------------------------------
    map_values(
        "gen_ai.system",
        "gen_ai.provider.name",
        SOURCE_SEMCONV_DEPRECATED,
        GEN_AI_SYSTEM_VALUES,
        Unmapped::PassThrough,
    ),
    map(
        "gen_ai.usage.prompt_tokens",
        "gen_ai.usage.input_tokens",
        SOURCE_SEMCONV_DEPRECATED,
    ),
    map(
        "gen_ai.usage.completion_tokens",
        "gen_ai.usage.output_tokens",
        SOURCE_SEMCONV_DEPRECATED,
    ),
    map(
        "gen_ai.usage.cache_creation.input_tokens",
        "gen_ai.usage.cache_write.input_tokens",
        SOURCE_SEMCONV_DEPRECATED,
    ),
    map(
        "gen_ai.openai.request.seed",
        "gen_ai.request.seed",
        SOURCE_SEMCONV_DEPRECATED,
    ),
    map_values(
        "gen_ai.openai.request.response_format",
        "gen_ai.output.type",
        SOURCE_SEMCONV_DEPRECATED,
        OPENAI_RESPONSE_FORMAT_VALUES,
        Unmapped::Skip,
    ),
    map(
        "gen_ai.openai.request.service_tier",
        "openai.request.service_tier",
        SOURCE_SEMCONV_DEPRECATED,
    ),
    map(
        "gen_ai.openai.response.service_tier",
        "openai.response.service_tier",
        SOURCE_SEMCONV_DEPRECATED,
    ),
    map(
        "gen_ai.openai.response.system_fingerprint",
        "openai.response.system_fingerprint",
        SOURCE_SEMCONV_DEPRECATED,
    ),
    // --- OpenLLMetry (opentelemetry-semantic-conventions-ai <= 0.4.x) --------------------
    map(
        "gen_ai.usage.cache_read_input_tokens",
        "gen_ai.usage.cache_read.input_tokens",
        SOURCE_OPENLLMETRY,
    ),
    map(
        "gen_ai.usage.cache_creation_input_tokens",
        "gen_ai.usage.cache_write.input_tokens",
        SOURCE_OPENLLMETRY,
    ),
    map(
        "gen_ai.usage.reasoning_tokens",
        "gen_ai.usage.reasoning.output_tokens",
        SOURCE_OPENLLMETRY,
    ),
    map_values(
        "llm.request.type",
        "gen_ai.operation.name",
        SOURCE_OPENLLMETRY,
        OPENLLMETRY_REQUEST_TYPE_VALUES,
        Unmapped::Skip,
    ),
    map_values(
        "traceloop.span.kind",
        "gen_ai.operation.name",
        SOURCE_OPENLLMETRY,
        TRACELOOP_SPAN_KIND_VALUES,
        Unmapped::Skip,
    ),
    map(
        "llm.is_streaming",
        "gen_ai.request.stream",
        SOURCE_OPENLLMETRY,
    ),
    map("llm.top_k", "gen_ai.request.top_k", SOURCE_OPENLLMETRY),
    map(
        "llm.frequency_penalty",
        "gen_ai.request.frequency_penalty",
        SOURCE_OPENLLMETRY,
    ),
    map(
        "llm.presence_penalty",
        "gen_ai.request.presence_penalty",
        SOURCE_OPENLLMETRY,
    ),
    map(
        "llm.chat.stop_sequences",
        "gen_ai.request.stop_sequences",
        SOURCE_OPENLLMETRY,
    ),
    // --- OpenInference ---------------------------------------------------------------
    map(
        "llm.token_count.prompt",
        "gen_ai.usage.input_tokens",
        SOURCE_OPENINFERENCE,
    ),
    map(
        "llm.token_count.completion",
        "gen_ai.usage.output_tokens",
        SOURCE_OPENINFERENCE,
    ),
    map(
        "llm.token_count.prompt_details.cache_read",
        "gen_ai.usage.cache_read.input_tokens",
        SOURCE_OPENINFERENCE,
    ),
    map(
        "llm.token_count.prompt_details.cache_write",
        "gen_ai.usage.cache_write.input_tokens",
        SOURCE_OPENINFERENCE,
    ),
    map(
        "llm.token_count.completion_details.reasoning",
        "gen_ai.usage.reasoning.output_tokens",
        SOURCE_OPENINFERENCE,
    ),
    map(
        "llm.request.model_name",
        "gen_ai.request.model",
        SOURCE_OPENINFERENCE,
    ),
    map(
        "llm.model_name",
        "gen_ai.request.model",
        SOURCE_OPENINFERENCE,
    ),
    map(
        "llm.response.model_name",
        "gen_ai.response.model",
        SOURCE_OPENINFERENCE,
    ),
    map_values(
        "llm.provider",
        "gen_ai.provider.name",
        SOURCE_OPENINFERENCE,
        OPENINFERENCE_PROVIDER_VALUES,
        Unmapped::PassThrough,
    ),
    map_values(
        "llm.system",
        "gen_ai.provider.name",
        SOURCE_OPENINFERENCE,
        OPENINFERENCE_SYSTEM_VALUES,
        Unmapped::PassThrough,
    ),
    map_values(
        "openinference.span.kind",
        "gen_ai.operation.name",
        SOURCE_OPENINFERENCE,
        OPENINFERENCE_SPAN_KIND_VALUES,
        Unmapped::Skip,
    ),
];

/// Every deprecated / foreign name mapping.
pub static MAPPINGS: &[Mapping] = MAPPING_RULES;

/// Mapping targets that are not GenAI rules of this table (renamed out of the
/// `gen_ai.*` namespace in v1.37.0); they are renamed but not validated.
pub const EXTERNAL_TARGETS: &[&str] = &[
    "openai.request.service_tier",
    "openai.response.service_tier",
    "openai.response.system_fingerprint",
];

/// Foreign names deliberately *not* mapped because the pinned version has no
/// equivalent attribute (documented so nobody "fixes" them by inventing one).
pub const UNMAPPED_FOREIGN: &[(&str, &str)] = &[
    ("llm.token_count.total", "openinference: no total-tokens attribute in semconv 1.41"),
    ("llm.usage.total_tokens", "openllmetry: no total-tokens attribute in semconv 1.41"),
    (
        "llm.invocation_parameters",
        "openinference: JSON blob; individual gen_ai.request.* values are not extracted",
    ),
    (
        "session.id",
        "openinference: collides with the semconv session.id attribute; not renamed to gen_ai.conversation.id",
    ),
];

// ---------------------------------------------------------------------------------------
// const helpers
// ---------------------------------------------------------------------------------------

const fn str_eq(a: &str, b: &str) -> bool {
    let (a, b) = (a.as_bytes(), b.as_bytes());
    if a.len() != b.len() {
        return false;
    }
    let mut i = 0;
    while i < a.len() {
        if a[i] != b[i] {
            return false;
        }
        i += 1;
    }
    true
}

/// Index of `name` in [`ATTRIBUTE_RULES`], usable in `const` context; returns
/// `ATTRIBUTE_RULES.len()` when the name is absent (callers assert at compile time).
pub const fn rule_index(name: &str) -> usize {
    let mut i = 0;
    while i < ATTRIBUTE_RULES.len() {
        if str_eq(ATTRIBUTE_RULES[i].name, name) {
            return i;
        }
        i += 1;
    }
    ATTRIBUTE_RULES.len()
}

/// Looks up a rule by attribute name.
pub fn find_rule(name: &str) -> Option<&'static AttrRule> {
    ATTRIBUTES.iter().find(|r| r.name == name)
}
