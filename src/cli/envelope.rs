//! `tollgate envelope sign | append | verify`: stamp, extend and explain envelopes from the
//! command line. Never prints key material.

use std::path::Path;
use std::process::ExitCode;

use crate::config::{self, Diagnostics, Map};
use crate::envelope::token::{self, Claims, StageOutcome};
use crate::envelope::{load_ring, parse_key_specs, parse_time, SecretEncoding};

/// Arguments of `envelope sign`.
pub struct SignArgs<'a> {
    pub key_file: &'a Path,
    pub key_encoding: &'a str,
    pub kid: &'a str,
    pub tenant: &'a str,
    pub originator: &'a str,
    pub workflow: &'a str,
    pub operation: &'a str,
    pub issuance: Option<&'a str>,
    pub ttl: &'a str,
    pub issued_at: Option<&'a str>,
}

fn fail(msg: impl std::fmt::Display) -> ExitCode {
    eprintln!("error: {msg}");
    ExitCode::from(1)
}

fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// 16 random bytes as hex, from the OS.
fn random_id() -> std::io::Result<String> {
    use std::io::Read;
    let mut b = [0u8; 16];
    std::fs::File::open("/dev/urandom")?.read_exact(&mut b)?;
    Ok(b.iter().map(|x| format!("{x:02x}")).collect())
}

fn load_secret(key_file: &Path, key_encoding: &str) -> Result<Vec<u8>, String> {
    let enc = match key_encoding {
        "hex" => SecretEncoding::Hex,
        "base64" => SecretEncoding::Base64,
        "raw" => SecretEncoding::Raw,
        other => {
            return Err(format!(
                "--key-encoding: unknown encoding {other:?}: use hex, base64 or raw"
            ))
        }
    };
    let raw =
        std::fs::read(key_file).map_err(|e| format!("--key-file {}: {e}", key_file.display()))?;
    crate::envelope::decode_secret(raw, enc)
        .map_err(|e| format!("--key-file {}: {e}", key_file.display()))
}

pub fn sign(a: &SignArgs<'_>) -> ExitCode {
    let secret = match load_secret(a.key_file, a.key_encoding) {
        Ok(s) => s,
        Err(e) => return fail(e),
    };
    let ttl = match config::node::parse_duration(a.ttl) {
        Ok(d) => d.as_secs() as i64,
        Err(e) => return fail(format!("--ttl: {e}")),
    };
    let issued_at = match a.issued_at.map(parse_time) {
        None => now(),
        Some(Ok(t)) => t,
        Some(Err(e)) => return fail(format!("--issued-at: {e}")),
    };
    let issuance = match a.issuance {
        Some(i) => i.to_string(),
        None => match random_id() {
            Ok(i) => i,
            Err(e) => return fail(format!("cannot read randomness for the issuance id: {e}")),
        },
    };
    let claims = Claims {
        tenant_id: a.tenant.into(),
        originator_id: a.originator.into(),
        workflow_id: a.workflow.into(),
        operation_id: a.operation.into(),
        issuance_id: issuance,
        issued_at,
        expires_at: issued_at + ttl,
    };
    match token::sign(&secret, a.kid, &claims) {
        Ok(t) => {
            println!("{t}");
            ExitCode::SUCCESS
        }
        Err(e) => fail(e),
    }
}

/// Runs `f` on every line of stdin and prints one output line per input line: the result, or
/// `error: <detail>`. Exits 0 only when every line succeeded.
fn batch(mut f: impl FnMut(&str) -> Result<String, String>) -> ExitCode {
    use std::io::{BufRead, Write};
    let stdin = std::io::stdin();
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::new(stdout.lock());
    let mut all_ok = true;
    for (i, line) in stdin.lock().lines().enumerate() {
        let line = match line {
            Ok(l) => l,
            Err(e) => return fail(format!("stdin line {}: {e}", i + 1)),
        };
        let result = f(&line).unwrap_or_else(|e| {
            all_ok = false;
            format!("error: {e}")
        });
        if let Err(e) = writeln!(out, "{result}") {
            return fail(format!("stdout: {e}"));
        }
    }
    if let Err(e) = out.flush() {
        return fail(format!("stdout: {e}"));
    }
    if all_ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    }
}

/// Claims from one JSON object with exactly the seven claim fields.
fn claims_from_json(line: &str) -> Result<Claims, String> {
    let v: serde_json::Value =
        serde_json::from_str(line).map_err(|e| format!("claims: invalid JSON: {e}"))?;
    let obj = v
        .as_object()
        .ok_or_else(|| "claims: expected a JSON object".to_owned())?;
    if let Some(k) = obj
        .keys()
        .find(|k| !token::CLAIM_FIELDS.contains(&k.as_str()))
    {
        return Err(format!("claims.{k}: unknown field"));
    }
    let text = |name: &str| -> Result<String, String> {
        obj.get(name)
            .and_then(|x| x.as_str())
            .map(str::to_owned)
            .ok_or_else(|| format!("claims.{name}: expected a string"))
    };
    let int = |name: &str| -> Result<i64, String> {
        obj.get(name)
            .and_then(|x| x.as_i64())
            .ok_or_else(|| format!("claims.{name}: expected an integer"))
    };
    Ok(Claims {
        tenant_id: text("tenant_id")?,
        originator_id: text("originator_id")?,
        workflow_id: text("workflow_id")?,
        operation_id: text("operation_id")?,
        issuance_id: text("issuance_id")?,
        issued_at: int("issued_at")?,
        expires_at: int("expires_at")?,
    })
}

/// `envelope sign --batch`: every stdin line is a claims JSON object (all seven fields); one
/// token (or `error: ...`) per line.
pub fn sign_batch(key_file: &Path, key_encoding: &str, kid: &str) -> ExitCode {
    let secret = match load_secret(key_file, key_encoding) {
        Ok(s) => s,
        Err(e) => return fail(e),
    };
    batch(|line| {
        let claims = claims_from_json(line)?;
        token::sign(&secret, kid, &claims).map_err(|e| e.to_string())
    })
}

pub fn append(tok: &str, record: &str) -> ExitCode {
    match token::append_hop_json(tok, record) {
        Ok(t) => {
            println!("{t}");
            ExitCode::SUCCESS
        }
        Err(e) => fail(e),
    }
}

/// `envelope append --batch`: every stdin line is `TOKEN RECORD` (the token, one space, the
/// hop JSON); one new token (or `error: ...`) per line.
pub fn append_batch() -> ExitCode {
    batch(|line| {
        let (tok, record) = line
            .split_once(' ')
            .ok_or_else(|| "expected TOKEN, a space, then the hop record JSON".to_owned())?;
        token::append_hop_json(tok, record).map_err(|e| e.to_string())
    })
}

/// Loads the `keys:` ring file, printing every problem (with its YAML path) on failure.
fn ring_from_file(keys: &Path) -> Result<token::KeyRing, ExitCode> {
    let doc = match config::load_files(&[keys]) {
        Ok(d) => d,
        Err(problems) => {
            for p in problems {
                eprintln!("{p}");
            }
            return Err(ExitCode::from(1));
        }
    };
    let mut d = Diagnostics::default();
    let specs = match Map::new("", &doc, &mut d) {
        Some(m) => {
            let s = parse_key_specs(&m, &mut d);
            m.finish(&mut d);
            s
        }
        None => Vec::new(),
    };
    if !d.is_empty() {
        for p in d.problems() {
            eprintln!("{p}");
        }
        return Err(ExitCode::from(1));
    }
    load_ring(&specs).map_err(|problems| {
        for p in problems {
            eprintln!("{p}");
        }
        ExitCode::from(1)
    })
}

fn times(span_start: Option<&str>, skew: &str) -> Result<(i64, i64), ExitCode> {
    let at = match span_start.map(parse_time) {
        None => now(),
        Some(Ok(t)) => t,
        Some(Err(e)) => return Err(fail(format!("--span-start: {e}"))),
    };
    let skew = match config::node::parse_duration(skew) {
        Ok(s) => s.as_secs() as i64,
        Err(e) => return Err(fail(format!("--skew: {e}"))),
    };
    Ok((at, skew))
}

/// Explains the outcome stage by stage; exits 0 only when the envelope is valid.
pub fn verify(keys: &Path, tok: &str, span_start: Option<&str>, skew: &str) -> ExitCode {
    let ring = match ring_from_file(keys) {
        Ok(r) => r,
        Err(code) => return code,
    };
    let (at, skew) = match times(span_start, skew) {
        Ok(t) => t,
        Err(code) => return code,
    };
    let ex = token::verify_explain(tok, &ring, at, skew);
    for s in &ex.stages {
        let mark = match s.outcome {
            StageOutcome::Passed => "ok  ",
            StageOutcome::Failed(_) => "FAIL",
            StageOutcome::Skipped => "skip",
        };
        println!("{mark} {:<11} {}", s.stage, s.detail);
    }
    println!("status: {}", ex.status().as_str());
    if let Ok(v) = &ex.outcome {
        println!(
            "tenant: {}  workflow: {}  operation: {}  lineage: [{}]",
            v.claims.tenant_id,
            v.claims.workflow_id,
            v.claims.operation_id,
            v.lineage_kinds().join(", ")
        );
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    }
}

/// `envelope verify --batch`: every stdin line is a token; one JSON object per line:
/// `{"status":"valid","kid":..,"claims":{..},"hops":[..]}` or
/// `{"status":..,"stage":..,"detail":..}`. Exits 0 only when every token is valid.
pub fn verify_batch(keys: &Path, span_start: Option<&str>, skew: &str) -> ExitCode {
    let ring = match ring_from_file(keys) {
        Ok(r) => r,
        Err(code) => return code,
    };
    let (at, skew) = match times(span_start, skew) {
        Ok(t) => t,
        Err(code) => return code,
    };
    let mut all_valid = true;
    let code = batch(|line| {
        let v = match token::verify(line, &ring, at, skew) {
            Ok(v) => serde_json::json!({
                "status": "valid", "kid": v.kid, "claims": v.claims, "hops": v.hops,
            }),
            Err(f) => {
                all_valid = false;
                serde_json::json!({ "status": f.status, "stage": f.stage, "detail": f.detail })
            }
        };
        Ok(v.to_string())
    });
    if all_valid {
        code
    } else {
        ExitCode::from(1)
    }
}
