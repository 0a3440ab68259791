//! `tollgate rates check FILE` and `tollgate rates price ...`: check a rate table, and show
//! which row prices a request and the arithmetic, line by line.

use std::path::Path;
use std::process::ExitCode;

use crate::cost::pricing::{price, Usage};
use crate::cost::{Origin, RateTable, TokenClass};

fn load(path: &Path) -> Option<RateTable> {
    match RateTable::load(path) {
        Ok(t) => Some(t),
        Err(e) => {
            for p in &e.problems {
                eprintln!("{}: {p}", path.display());
            }
            eprintln!(
                "{} problem{} found",
                e.problems.len(),
                if e.problems.len() == 1 { "" } else { "s" }
            );
            None
        }
    }
}

/// Loads and checks a rate table; prints a summary or every problem (exit 1).
pub fn rates_check(path: &Path) -> ExitCode {
    let Some(t) = load(path) else {
        return ExitCode::from(1);
    };
    println!(
        "rate table is valid: {} (version {}, currency {}): {} explicit rows, {} imported rows",
        path.display(),
        t.version,
        t.currency,
        t.explicit_rows().len(),
        t.imported_rows().len()
    );
    ExitCode::SUCCESS
}

fn fmt_time(t: Option<i64>) -> String {
    t.map(|v| v.to_string()).unwrap_or_else(|| "-".into())
}

/// Prices one request and prints the matched row and the arithmetic.
#[allow(clippy::too_many_arguments)]
pub fn rates_price(
    path: &Path,
    model: &str,
    provider: Option<&str>,
    input: i64,
    output: i64,
    cache_read: i64,
    cache_write: i64,
    reasoning: i64,
    at: Option<i64>,
) -> ExitCode {
    let Some(t) = load(path) else {
        return ExitCode::from(1);
    };
    let at = at.unwrap_or_else(|| {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs() as i64)
            .unwrap_or(0)
    });
    let Some(m) = t.find(model, provider, at) else {
        println!(
            "unpriced_model: no row for model {model:?}{} at {at}",
            provider
                .map(|p| format!(" (provider {p})"))
                .unwrap_or_default()
        );
        return ExitCode::from(2);
    };
    let r = m.rate;
    println!(
        "row:       {} ({}; model {}, provider {}, effective {}..{}, matched by {})",
        r.id,
        match r.origin {
            Origin::Explicit => "explicit",
            Origin::LiteLlm => "litellm import",
        },
        r.model,
        r.provider.as_deref().unwrap_or("any"),
        fmt_time(r.effective_from),
        fmt_time(r.effective_to),
        m.kind.as_str()
    );
    println!("version:    {} ({})", t.version, t.currency);
    let usage = Usage {
        input: Some(input),
        output: Some(output),
        cache_read: Some(cache_read),
        cache_write: Some(cache_write),
        reasoning: Some(reasoning),
        ..Default::default()
    };
    let b = match price(r, &usage) {
        Ok(b) => b,
        Err(e) => {
            println!("invalid_usage: {e}");
            return ExitCode::from(2);
        }
    };
    match b.tier {
        Some(a) => println!(
            "tier:       above {a} input tokens (request has {})",
            b.request_input
        ),
        None => println!(
            "tier:       base (request has {} input tokens)",
            b.request_input
        ),
    }
    for c in TokenClass::ALL {
        if c.is_modality() && !b.prices.separate(c) {
            continue;
        }
        let how = match c {
            TokenClass::Input => format!("{input} - {cache_read} - {cache_write} = "),
            TokenClass::Output => format!("{output} - {reasoning} = "),
            _ => String::new(),
        };
        println!(
            "{:<12}{how}{} tokens x {} / 1M = {}",
            c.as_str(),
            b.tokens_of(c),
            b.prices.get(c).normalize(),
            b.cost_of(c)
        );
    }
    println!("total:      {} {}", b.total, t.currency);
    ExitCode::SUCCESS
}
