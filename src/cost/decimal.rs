//! Exact decimals from text: prices as written in rate tables and LiteLLM's per-token
//! figures, never through a binary float.

use rust_decimal::Decimal;

/// Parses a decimal number exactly from its text: `2.50`, `-1`, `2.5e-06`, `1E-5`, `3e2`.
pub fn parse_decimal(text: &str) -> Result<Decimal, String> {
    let t = text.trim();
    let bad = |why: &str| format!("invalid number {text:?}: {why}");
    if t.is_empty() || t.contains('_') {
        return Err(bad("expected a decimal number such as \"2.50\""));
    }
    let (mant, exp) = match t.find(['e', 'E']) {
        Some(i) => (
            &t[..i],
            t[i + 1..].parse::<i32>().map_err(|_| bad("bad exponent"))?,
        ),
        None => (t, 0),
    };
    let mut v = Decimal::from_str_exact(mant)
        .map_err(|_| bad("expected a decimal number such as \"2.50\""))?;
    if exp < 0 {
        let scale = v.scale() + exp.unsigned_abs();
        if scale > 28 {
            // Drop trailing zeros of the mantissa first (`1.000e-27`).
            v = v.normalize();
            let scale = v.scale() + exp.unsigned_abs();
            if scale > 28 {
                return Err(bad("more than 28 decimal places"));
            }
            v.set_scale(scale).map_err(|_| bad("out of range"))?;
        } else {
            v.set_scale(scale).map_err(|_| bad("out of range"))?;
        }
    } else {
        for _ in 0..exp {
            v = v
                .checked_mul(Decimal::TEN)
                .ok_or_else(|| bad("out of range"))?;
        }
    }
    Ok(v)
}

pub(crate) const MILLION: i64 = 1_000_000;

/// Per-token price text (LiteLLM) → exact price per million tokens.
pub fn per_token_to_per_million(text: &str) -> Result<Decimal, String> {
    let v = parse_decimal(text)?;
    v.checked_mul(Decimal::from(MILLION))
        .map(|x| x.normalize())
        .ok_or_else(|| format!("{text} per token is out of range"))
}
