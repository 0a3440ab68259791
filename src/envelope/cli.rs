//! `tollgate envelope sign | append | verify`: stamp, extend and explain envelopes from the
//! command line. Never prints key material.

use std::path::Path;
use std::process::ExitCode;

use super::token::{self, Claims, StageOutcome};
use super::{load_ring, parse_key_specs, parse_time, SecretEncoding};
use crate::config::{self, Diagnostics, Map};

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

pub fn sign(a: &SignArgs<'_>) -> ExitCode {
    let enc = match a.key_encoding {
        "hex" => SecretEncoding::Hex,
        "base64" => SecretEncoding::Base64,
        "raw" => SecretEncoding::Raw,
        other => {
            return fail(format!(
                "--key-encoding: unknown encoding {other:?}: use hex, base64 or raw"
            ))
        }
    };
    let raw = match std::fs::read(a.key_file) {
        Ok(b) => b,
        Err(e) => return fail(format!("--key-file {}: {e}", a.key_file.display())),
    };
    let secret = match super::decode_secret(raw, enc) {
        Ok(s) => s,
        Err(e) => return fail(format!("--key-file {}: {e}", a.key_file.display())),
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

pub fn append(tok: &str, record: &str) -> ExitCode {
    match token::append_hop_json(tok, record) {
        Ok(t) => {
            println!("{t}");
            ExitCode::SUCCESS
        }
        Err(e) => fail(e),
    }
}

/// Explains the outcome stage by stage; exits 0 only when the envelope is valid.
pub fn verify(keys: &Path, tok: &str, span_start: Option<&str>, skew: &str) -> ExitCode {
    let doc = match config::load_files(&[keys]) {
        Ok(d) => d,
        Err(problems) => {
            for p in problems {
                eprintln!("{p}");
            }
            return ExitCode::from(1);
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
        return ExitCode::from(1);
    }
    let ring = match load_ring(&specs) {
        Ok(r) => r,
        Err(problems) => {
            for p in problems {
                eprintln!("{p}");
            }
            return ExitCode::from(1);
        }
    };
    let at = match span_start.map(parse_time) {
        None => now(),
        Some(Ok(t)) => t,
        Some(Err(e)) => return fail(format!("--span-start: {e}")),
    };
    let skew = match config::node::parse_duration(skew) {
        Ok(s) => s.as_secs() as i64,
        Err(e) => return fail(format!("--skew: {e}")),
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
