//! `tollgate ledger …`: questions asked of a ledger from a shell (report, completeness,
//! dispute, verify). Every command takes `--ledger URL` (or `TOLLGATE_LEDGER`) and a
//! half-open `--from` / `--to` range (RFC 3339 or UTC dates).

mod args;
mod commands;

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::str::FromStr;

use clap::Subcommand;
use rust_decimal::Decimal;

use crate::ledger::allocate::{self, Policy};
use crate::ledger::allocated::{self, SourceInfo};
use crate::ledger::opencost;
use crate::ledger::query::{self, Dim, Range};
use crate::ledger::render::{self, Format};
use crate::ledger::rollup;
use crate::ledger::Store;
pub use args::{connect, emit, fail, open, LedgerArgs};

#[derive(Subcommand, Debug)]
pub enum LedgerCmd {
    /// Cost and tokens grouped by tenant, workflow, agent, provider, model, day or hour.
    Report {
        #[command(flatten)]
        at: LedgerArgs,
        /// Comma-separated dimensions: tenant,workflow,agent,provider,model,day,hour.
        #[arg(long, default_value = "tenant")]
        by: String,
        /// table, csv, json or html (the chargeback statement page; --by is then fixed).
        #[arg(long, default_value = "table")]
        format: String,
        /// The completeness target shown on the html statement, in percent.
        #[arg(long, default_value = "99")]
        slo: String,
        /// Write to this file instead of standard output.
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// Share of billable events and cost with a valid envelope; exit 1 below the SLO.
    Completeness {
        #[command(flatten)]
        at: LedgerArgs,
        /// The target share in percent.
        #[arg(long, default_value = "99")]
        slo: String,
    },
    /// Write a tenant's evidence pack (rows, rate tables, summary) into a directory.
    Dispute {
        #[command(flatten)]
        at: LedgerArgs,
        #[arg(long)]
        tenant: String,
        #[arg(long)]
        out: PathBuf,
    },
    /// Recompute every row's cost from its stored tokens and rate table, check every digest;
    /// exit 1 when any row disagrees.
    Verify {
        #[command(flatten)]
        at: LedgerArgs,
    },
    /// Export the billing view as FOCUS Cost and Usage rows (CSV), then the allocated
    /// infrastructure cost (`allocate`) as split-cost-allocation rows.
    Export {
        #[command(flatten)]
        at: LedgerArgs,
        /// The export format (only `focus`).
        #[arg(long, default_value = "focus")]
        format: String,
        /// The charge period of a row: day or hour.
        #[arg(long, default_value = "day")]
        granularity: String,
        /// FOCUS version: 1.2 (default) or 1.0 (what focus-validator 1.0.0 checks).
        #[arg(long, default_value = "1.2")]
        focus_version: String,
        /// A YAML file with the billing account and service naming (`billing:` keys).
        #[arg(long)]
        billing: Option<PathBuf>,
        /// BillingAccountId (overrides the file).
        #[arg(long)]
        billing_account_id: Option<String>,
        /// BillingAccountName (overrides the file).
        #[arg(long)]
        billing_account_name: Option<String>,
        /// Write to this file instead of standard output.
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// Match a provider's invoice (FOCUS or plain CSV) against the ledger per day, provider and
    /// model (allocated infrastructure cost under provider `opencost`); print the drift, the
    /// settled per-tenant statement and the unmatched lines.
    Reconcile {
        #[command(flatten)]
        at: LedgerArgs,
        /// The invoice: a FOCUS CSV export or `date,provider,model,cost,currency` CSV.
        #[arg(long)]
        invoice: PathBuf,
        /// The reconciliation policy (YAML).
        #[arg(long)]
        policy: PathBuf,
        /// Write drift.csv, statement.csv, unmatched.csv and summary.md into this directory
        /// (else the summary goes to standard output).
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// Close a month: record its statement and digest; later events for it become
    /// adjustments of the next open month.
    Close {
        /// `sqlite:PATH` or `postgres://USER@HOST:PORT/DB`.
        #[arg(long, env = "TOLLGATE_LEDGER")]
        ledger: String,
        /// A file holding the PostgreSQL password.
        #[arg(long)]
        password_file: Option<PathBuf>,
        /// The month, such as 2026-11 (UTC).
        #[arg(long)]
        period: String,
    },
    /// Split self-hosted model servers' infrastructure cost (OpenCost allocations) over the
    /// tenants they served in each window, print it, and record it as allocated cost rows.
    Allocate {
        #[command(flatten)]
        at: LedgerArgs,
        /// A saved OpenCost `GET /allocation` response (a file), or an OpenCost base URL
        /// (`http://HOST:9003`) to query for the period.
        #[arg(long)]
        opencost: String,
        /// The allocation policy (YAML: id, version, weight, weights, idle, unit, currency).
        #[arg(long)]
        policy: PathBuf,
        /// For a URL: the window step to ask OpenCost for (an OpenCost duration: 1h, 10m, 1d).
        #[arg(long, default_value = "1h")]
        step: String,
        /// Print the split without recording it.
        #[arg(long)]
        dry_run: bool,
    },
}

pub fn run(cmd: &LedgerCmd) -> ExitCode {
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => return fail(format!("cannot start the async runtime: {e}")),
    };
    rt.block_on(run_async(cmd))
}

async fn run_async(cmd: &LedgerCmd) -> ExitCode {
    match cmd {
        LedgerCmd::Report {
            at,
            by,
            format,
            slo,
            out,
        } => {
            let by = match Dim::parse_list(by) {
                Ok(b) => b,
                Err(e) => return fail(e),
            };
            let format = match Format::from_str(format) {
                Ok(f) => f,
                Err(e) => return fail(e),
            };
            let (store, range) = match open(at).await {
                Ok(x) => x,
                Err(e) => return fail(e),
            };
            let text = if format == Format::Html {
                let slo = match parse_slo(slo) {
                    Ok(s) => s,
                    Err(e) => return fail(e),
                };
                crate::ledger::html::statement(&store, range, slo, &store.describe()).await
            } else {
                let report = async {
                    let lines = rollup::report(&store, range, &by).await?;
                    let alloc = allocated::report(&store, range, &by).await?;
                    render::render(&lines, &alloc, &by, range, format)
                };
                report.await
            };
            let text = match text {
                Ok(t) => t,
                Err(e) => return fail(e),
            };
            emit(&text, out.as_ref())
        }
        LedgerCmd::Completeness { at, slo } => {
            let slo = match Decimal::from_str(slo) {
                Ok(s) if s >= Decimal::ZERO && s <= Decimal::from(100) => s,
                _ => {
                    return fail(format!(
                        "--slo: {slo:?} is not a percentage between 0 and 100"
                    ))
                }
            };
            let (store, range) = match open(at).await {
                Ok(x) => x,
                Err(e) => return fail(e),
            };
            match query::completeness(&store, range).await {
                Ok(c) => {
                    print!("{}", render::render_completeness(&c, range, slo));
                    if c.meets(slo) {
                        ExitCode::SUCCESS
                    } else {
                        ExitCode::from(1)
                    }
                }
                Err(e) => fail(e),
            }
        }
        LedgerCmd::Dispute { at, tenant, out } => {
            let (store, range) = match open(at).await {
                Ok(x) => x,
                Err(e) => return fail(e),
            };
            match crate::ledger::dispute::dispute(&store, tenant, range, out, &store.describe())
                .await
            {
                Ok(n) => {
                    println!(
                        "evidence pack for tenant {tenant}: {n} rows in {}",
                        out.display()
                    );
                    ExitCode::SUCCESS
                }
                Err(e) => fail(e),
            }
        }
        LedgerCmd::Verify { at } => {
            let (store, range) = match open(at).await {
                Ok(x) => x,
                Err(e) => return fail(e),
            };
            verify(&store, range).await
        }
        LedgerCmd::Export {
            at,
            format,
            granularity,
            focus_version,
            billing,
            billing_account_id,
            billing_account_name,
            out,
        } => {
            commands::export(commands::ExportArgs {
                at,
                format,
                granularity,
                focus_version,
                billing: billing.as_deref(),
                billing_account_id: billing_account_id.as_deref(),
                billing_account_name: billing_account_name.as_deref(),
                out: out.as_ref(),
            })
            .await
        }
        LedgerCmd::Reconcile {
            at,
            invoice,
            policy,
            out,
        } => commands::reconcile(at, invoice, policy, out.as_ref()).await,
        LedgerCmd::Close {
            ledger,
            password_file,
            period,
        } => commands::close(ledger, password_file.as_ref(), period).await,
        LedgerCmd::Allocate {
            at,
            opencost,
            policy,
            step,
            dry_run,
        } => match allocate(at, opencost, policy, step, *dry_run).await {
            Ok(text) => {
                print!("{text}");
                ExitCode::SUCCESS
            }
            Err(e) => fail(e),
        },
    }
}

async fn allocate(
    at: &LedgerArgs,
    opencost: &str,
    policy_path: &Path,
    step: &str,
    dry_run: bool,
) -> Result<String, String> {
    use sha2::{Digest, Sha256};

    let text = std::fs::read_to_string(policy_path)
        .map_err(|e| format!("--policy {}: {e}", policy_path.display()))?;
    let policy = Policy::parse(&text, &format!("--policy {}", policy_path.display()))?;
    let (store, range) = open(at).await?;
    let live = opencost.starts_with("http://") || opencost.starts_with("https://");
    let body = if live {
        opencost::fetch(opencost, range.from, range.to, step)
            .await
            .map_err(|e| e.to_string())?
    } else {
        std::fs::read(opencost).map_err(|e| format!("--opencost {opencost}: {e}"))?
    };
    let source = SourceInfo {
        name: opencost.to_string(),
        digest: crate::ledger::row::hex(&Sha256::digest(&body)),
    };
    let all = opencost::parse(&body, opencost).map_err(|e| e.to_string())?;
    let (allocs, skipped): (Vec<_>, Vec<_>) = all
        .into_iter()
        .partition(|a| a.window_start >= range.from && a.window_end <= range.to);
    let events = allocated::events(&store, range)
        .await
        .map_err(|e| e.to_string())?;
    let out = allocate::allocate(&allocs, &events, &policy)?;
    let rates = allocate::phase_rates(&allocs, &out, &policy)?;
    let mut text = allocated::render(&allocs, &out, &rates, &policy, &source, range, &skipped);
    if dry_run {
        text.push_str("dry run: nothing recorded\n");
    } else {
        let now = crate::component::attrs::now_nanos().min(i64::MAX as u64) as i64;
        let (removed, written) =
            allocated::write(&store, range, &allocs, &out, &policy, &source, now)
                .await
                .map_err(|e| e.to_string())?;
        text.push_str(&format!(
            "recorded {written} allocated cost rows in {} (replacing {removed} from earlier runs for these windows)\n",
            store.describe()
        ));
    }
    Ok(text)
}

fn parse_slo(slo: &str) -> Result<Decimal, String> {
    match Decimal::from_str(slo) {
        Ok(s) if s >= Decimal::ZERO && s <= Decimal::from(100) => Ok(s),
        _ => Err(format!(
            "--slo: {slo:?} is not a percentage between 0 and 100"
        )),
    }
}

async fn verify(store: &Store, range: Range) -> ExitCode {
    let rows = match query::rows(store, range, None).await {
        Ok(r) => r,
        Err(e) => return fail(e),
    };
    let mut tables = query::Tables::new(store);
    let mut bad = 0usize;
    for r in &rows {
        match query::check_row(r, &mut tables).await {
            Ok(problems) => {
                for p in &problems {
                    println!("{}/{}: {p}", r.trace_id, r.span_id);
                }
                bad += usize::from(!problems.is_empty());
            }
            Err(e) => return fail(e),
        }
    }
    match query::check_split(store, range).await {
        Ok(split) => {
            for (t, s, p) in &split {
                println!("{t}/{s}: {p}");
            }
            bad += split.len();
        }
        Err(e) => return fail(e),
    }
    match allocated::check(store, range).await {
        Ok((n, problems)) => {
            for p in &problems {
                println!("{p}");
            }
            bad += problems.len();
            if n > 0 && problems.is_empty() {
                println!(
                    "verified {n} allocated cost rows: every allocation's rows sum to its cost"
                );
            }
        }
        Err(e) => return fail(e),
    }
    if bad == 0 {
        println!("verified {} rows: every cost recomputes exactly from its stored tokens and rate table, every digest matches", rows.len());
        ExitCode::SUCCESS
    } else {
        println!("{bad} of {} rows disagree", rows.len());
        ExitCode::from(1)
    }
}
