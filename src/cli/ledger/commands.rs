//! `tollgate ledger export | reconcile | close`: argument handling and output around
//! [`crate::ledger::focus`], [`crate::ledger::reconcile`] and [`crate::ledger::periods`].

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::str::FromStr;

use super::args::{connect, emit, fail, open, LedgerArgs};
use crate::ledger::focus::{self, FocusVersion, Granularity};
use crate::ledger::periods::{self, CloseOutcome, Period};
use crate::ledger::reconcile::{self, Policy};

pub struct ExportArgs<'a> {
    pub at: &'a LedgerArgs,
    pub format: &'a str,
    pub granularity: &'a str,
    pub focus_version: &'a str,
    pub billing: Option<&'a Path>,
    pub billing_account_id: Option<&'a str>,
    pub billing_account_name: Option<&'a str>,
    pub out: Option<&'a PathBuf>,
}

pub async fn export(a: ExportArgs<'_>) -> ExitCode {
    if a.format != "focus" {
        return fail(format!("--format: {:?} is not one of focus", a.format));
    }
    let granularity = match Granularity::from_str(a.granularity) {
        Ok(g) => g,
        Err(e) => return fail(e),
    };
    let version = match FocusVersion::from_str(a.focus_version) {
        Ok(v) => v,
        Err(e) => return fail(e),
    };
    let billing = match focus::load_billing(a.billing, a.billing_account_id, a.billing_account_name)
    {
        Ok(b) => b,
        Err(e) => return fail(e),
    };
    let (store, range) = match open(a.at).await {
        Ok(x) => x,
        Err(e) => return fail(e),
    };
    let (text, summary) = match focus::export(&store, range, granularity, version, &billing).await {
        Ok(x) => x,
        Err(e) => return fail(e),
    };
    let code = emit(&text, a.out);
    if a.out.is_some() && code == ExitCode::SUCCESS {
        let totals: Vec<String> = summary
            .billed
            .iter()
            .map(|(c, t)| format!("{c} {}", t.normalize()))
            .collect();
        println!(
            "wrote {} FOCUS {} rows; BilledCost total: {}",
            summary.rows,
            a.focus_version,
            if totals.is_empty() {
                "0".to_string()
            } else {
                totals.join(", ")
            }
        );
    }
    code
}

pub async fn reconcile(
    at: &LedgerArgs,
    invoice: &Path,
    policy: &Path,
    out: Option<&PathBuf>,
) -> ExitCode {
    let policy_text = match std::fs::read_to_string(policy) {
        Ok(t) => t,
        Err(e) => return fail(format!("--policy {}: {e}", policy.display())),
    };
    let policy = match Policy::parse(&policy_text) {
        Ok(p) => p,
        Err(e) => return fail(format!("--policy {}:\n{e}", policy.display())),
    };
    let invoice_bytes = match std::fs::read(invoice) {
        Ok(t) => t,
        Err(e) => return fail(format!("--invoice {}: {e}", invoice.display())),
    };
    let invoice_text = String::from_utf8_lossy(&invoice_bytes);
    let (kind, lines) = match reconcile::read_invoice(&invoice_text, &policy) {
        Ok(x) => x,
        Err(e) => return fail(format!("--invoice {}: {e}", invoice.display())),
    };
    let (store, range) = match open(at).await {
        Ok(x) => x,
        Err(e) => return fail(e),
    };
    let ledger = match reconcile::ledger_costs(&store, range).await {
        Ok(l) => l,
        Err(e) => return fail(e),
    };
    let result = reconcile::reconcile(&policy, &lines, &ledger, range);
    let name = invoice
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let rendered = match reconcile::render(
        &result,
        &policy,
        range,
        &name,
        &reconcile::sha256_hex(&invoice_bytes),
        kind,
    ) {
        Ok(r) => r,
        Err(e) => return fail(e),
    };
    match out {
        None => {
            print!("{}", rendered.summary);
            ExitCode::SUCCESS
        }
        Some(dir) => {
            if let Err(e) = std::fs::create_dir_all(dir) {
                return fail(format!("--out {}: {e}", dir.display()));
            }
            for (file, text) in [
                ("drift.csv", &rendered.drift_csv),
                ("statement.csv", &rendered.statement_csv),
                ("unmatched.csv", &rendered.unmatched_csv),
                ("summary.md", &rendered.summary),
            ] {
                if let Err(e) = std::fs::write(dir.join(file), text) {
                    return fail(format!("{}: {e}", dir.join(file).display()));
                }
            }
            print!("{}", rendered.summary);
            ExitCode::SUCCESS
        }
    }
}

pub async fn close(ledger: &str, password_file: Option<&PathBuf>, period: &str) -> ExitCode {
    let period = match Period::parse(period) {
        Ok(p) => p,
        Err(e) => return fail(format!("--period: {e}")),
    };
    let store = match connect(ledger, password_file).await {
        Ok(s) => s,
        Err(e) => return fail(e),
    };
    let show = |s: &periods::Statement| {
        let totals: Vec<String> = s
            .totals
            .iter()
            .map(|(c, t)| {
                format!(
                    "{} {}",
                    if c.is_empty() { "(unpriced)" } else { c },
                    t.normalize()
                )
            })
            .collect();
        format!(
            "{} events, totals: {}, statement sha256 {}",
            s.events,
            totals.join(", "),
            s.digest
        )
    };
    match periods::close(&store, period).await {
        Ok(CloseOutcome::Closed(s)) => {
            println!("closed {period}: {}", show(&s));
            print!("{}", s.text);
            ExitCode::SUCCESS
        }
        Ok(CloseOutcome::AlreadyClosed { recorded, now }) => {
            println!("{period} is already closed: {}", show(&recorded));
            if recorded.digest == now.digest {
                println!("the statement recomputes to the recorded digest: unchanged");
                ExitCode::SUCCESS
            } else {
                println!(
                    "the statement now recomputes to sha256 {}: the ledger was changed behind tollgate's back",
                    now.digest
                );
                ExitCode::from(1)
            }
        }
        Err(e) => fail(e),
    }
}
