//! What every `tollgate ledger` command shares: where the ledger is and which period to
//! read ([`LedgerArgs`]), opening it, and how results and failures are printed.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Args;

use crate::ledger::query::Range;
use crate::ledger::store::{ConnectOptions, Target};
use crate::ledger::time::parse_instant;
use crate::ledger::Store;

/// Where the ledger is and which period to read.
#[derive(Args, Debug, Clone)]
pub struct LedgerArgs {
    /// `sqlite:PATH` or `postgres://USER@HOST:PORT/DB`.
    #[arg(long, env = "TOLLGATE_LEDGER")]
    pub ledger: String,
    /// A file holding the PostgreSQL password (never on the command line).
    #[arg(long)]
    pub password_file: Option<PathBuf>,
    /// Start of the period (inclusive): RFC 3339 or a UTC date such as 2026-11-01.
    #[arg(long)]
    pub from: String,
    /// End of the period (exclusive).
    #[arg(long)]
    pub to: String,
}

pub fn fail(msg: impl std::fmt::Display) -> ExitCode {
    eprintln!("{msg}");
    ExitCode::from(2)
}

/// Opens the ledger named by the arguments (it must already exist for `sqlite:`).
pub async fn open(a: &LedgerArgs) -> Result<(Store, Range), String> {
    let from = parse_instant(&a.from).map_err(|e| format!("--from: {e}"))?;
    let to = parse_instant(&a.to).map_err(|e| format!("--to: {e}"))?;
    if to <= from {
        return Err("--to must be after --from".into());
    }
    let store = connect(&a.ledger, a.password_file.as_ref()).await?;
    Ok((store, Range { from, to }))
}

/// Opens a ledger (it must already exist for `sqlite:`).
pub async fn connect(ledger: &str, password_file: Option<&PathBuf>) -> Result<Store, String> {
    let password = match password_file {
        Some(p) => Some(
            std::fs::read_to_string(p)
                .map_err(|e| format!("--password-file {}: {e}", p.display()))?
                .trim_end_matches(['\n', '\r'])
                .to_string(),
        ),
        None => std::env::var("TOLLGATE_LEDGER_PASSWORD").ok(),
    };
    let opts = ConnectOptions {
        password,
        ..Default::default()
    };
    let target = Target::parse(ledger, &opts).map_err(|e| e.to_string())?;
    if let Target::Sqlite { path, .. } = &target {
        if !path.exists() {
            return Err(format!("ledger {}: no such file", path.display()));
        }
    }
    Store::open(&target).await.map_err(|e| e.to_string())
}

pub fn emit(text: &str, out: Option<&PathBuf>) -> ExitCode {
    match out {
        Some(p) => match std::fs::write(p, text) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => fail(format!("{}: {e}", p.display())),
        },
        None => {
            print!("{text}");
            ExitCode::SUCCESS
        }
    }
}
