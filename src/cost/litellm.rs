//! LiteLLM's `model_prices_and_context_window.json` as rate rows: per-token prices become
//! exact per-million prices, `_above_Nk_tokens` keys become tiers.

use rust_decimal::Decimal;

use super::decimal::per_token_to_per_million;
use super::rate::{Origin, PriceSet, Rate, Tier, TokenClass};

/// The semconv provider name for a LiteLLM `litellm_provider` value.
fn provider_from_litellm(p: &str) -> String {
    let mapped = match p {
        "gemini" => "gcp.gemini",
        "bedrock" | "bedrock_converse" => "aws.bedrock",
        "azure" => "azure.ai.openai",
        "azure_ai" => "azure.ai.inference",
        "mistral" => "mistral_ai",
        "xai" => "x_ai",
        "cohere_chat" => "cohere",
        p if p.starts_with("vertex_ai") => "gcp.vertex_ai",
        p => p,
    };
    mapped.to_string()
}

/// LiteLLM keys read (everything else in an entry is ignored). The modality keys are the
/// per-token ones only: per-image, per-second and per-character prices cannot be applied to
/// token counts.
const LITELLM_KEYS: [(&str, TokenClass); 9] = [
    ("input_cost_per_token", TokenClass::Input),
    ("output_cost_per_token", TokenClass::Output),
    ("cache_read_input_token_cost", TokenClass::CacheRead),
    ("cache_creation_input_token_cost", TokenClass::CacheWrite),
    ("output_cost_per_reasoning_token", TokenClass::Reasoning),
    ("input_cost_per_audio_token", TokenClass::AudioInput),
    ("output_cost_per_audio_token", TokenClass::AudioOutput),
    ("input_cost_per_image_token", TokenClass::ImageInput),
    ("output_cost_per_image_token", TokenClass::ImageOutput),
];

fn set_class(ps: &mut PriceSet, c: TokenClass, v: Decimal) {
    match c {
        TokenClass::Input => ps.input = Some(v),
        TokenClass::Output => ps.output = Some(v),
        TokenClass::CacheRead => ps.cache_read = Some(v),
        TokenClass::CacheWrite => ps.cache_write = Some(v),
        TokenClass::Reasoning => ps.reasoning = Some(v),
        TokenClass::AudioInput => ps.audio_input = Some(v),
        TokenClass::AudioOutput => ps.audio_output = Some(v),
        TokenClass::ImageInput => ps.image_input = Some(v),
        TokenClass::ImageOutput => ps.image_output = Some(v),
    }
}

/// `input_cost_per_token_above_200k_tokens` → (Input, Some(200000)); `input_cost_per_token`
/// → (Input, None); anything else (batches, priority, 1hr cache, audio...) → None.
fn litellm_key(key: &str) -> Option<(TokenClass, Option<u64>)> {
    for (base, class) in LITELLM_KEYS {
        let Some(rest) = key.strip_prefix(base) else {
            continue;
        };
        if rest.is_empty() {
            return Some((class, None));
        }
        let n = rest.strip_prefix("_above_")?.strip_suffix("k_tokens")?;
        if n.is_empty() || !n.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        return n.parse::<u64>().ok().map(|k| (class, Some(k * 1000)));
    }
    None
}

/// Parses LiteLLM's `model_prices_and_context_window.json` text into rows. Entries without
/// a per-token input or output price (images, audio seconds, the `sample_spec`) are skipped.
pub fn import_litellm(text: &str) -> Result<Vec<Rate>, String> {
    use serde_json::value::RawValue;
    let doc: std::collections::BTreeMap<String, &RawValue> =
        serde_json::from_str(text).map_err(|e| format!("invalid JSON: {e}"))?;
    let mut rows = Vec::new();
    for (model, raw) in doc {
        if model == "sample_spec" {
            continue;
        }
        let Ok(entry) =
            serde_json::from_str::<std::collections::BTreeMap<String, &RawValue>>(raw.get())
        else {
            continue;
        };
        let mut base = PriceSet::default();
        let mut tiers: std::collections::BTreeMap<u64, PriceSet> = Default::default();
        let mut provider = None;
        for (k, v) in &entry {
            if k == "litellm_provider" {
                provider = serde_json::from_str::<String>(v.get())
                    .ok()
                    .map(|p| provider_from_litellm(&p));
                continue;
            }
            let Some((class, above)) = litellm_key(k) else {
                continue;
            };
            let text = v.get().trim();
            if !text.starts_with(|c: char| c.is_ascii_digit() || c == '-') {
                continue; // null or a string: no price
            }
            let price = per_token_to_per_million(text).map_err(|e| format!("{model}.{k}: {e}"))?;
            if price.is_sign_negative() && !price.is_zero() {
                return Err(format!("{model}.{k}: negative price {text}"));
            }
            match above {
                None => set_class(&mut base, class, price),
                Some(a) => set_class(tiers.entry(a).or_default(), class, price),
            }
        }
        if base.input.is_none() && base.output.is_none() {
            continue;
        }
        base.input.get_or_insert(Decimal::ZERO);
        base.output.get_or_insert(Decimal::ZERO);
        rows.push(Rate {
            id: format!("litellm:{model}"),
            origin: Origin::LiteLlm,
            model,
            provider,
            aliases: Vec::new(),
            patterns: Vec::new(),
            effective_from: None,
            effective_to: None,
            base,
            tiers: tiers
                .into_iter()
                .map(|(above_input_tokens, prices)| Tier {
                    above_input_tokens,
                    prices,
                })
                .collect(),
        });
    }
    Ok(rows)
}
