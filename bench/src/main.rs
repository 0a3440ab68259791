//! `tollgate-bench gen` (OTLP/gRPC load generator) and `tollgate-bench sink` (counting
//! OTLP/gRPC server). `bench/run.sh` drives both around a tollgate process; see
//! `bench/README.md`.

mod gen;
mod ledger;
mod sink;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// The allocator tollgate's binary uses, so figures match the gateway.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(
    name = "tollgate-bench",
    about = "Load generator and counting sink for tollgate"
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
    /// Runtime worker threads (default: the number of CPUs).
    #[arg(long, global = true)]
    threads: Option<usize>,
}

#[derive(Subcommand)]
enum Cmd {
    /// Send realistic LLM spans over OTLP/gRPC and report sent vs acknowledged.
    Gen(gen::GenArgs),
    /// Receive OTLP/gRPC traces, check every expected span id arrived, measure latency.
    Sink(sink::SinkArgs),
    /// Write synthetic billable rows to a ledger and time `report` over them.
    Ledger(ledger::LedgerArgs),
}

/// A failure reported to the user (one line, no backtrace).
#[derive(Debug)]
pub struct Fail(pub String);

/// Now, in Unix nanoseconds.
pub fn now_ns() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0)
}

/// CPU seconds (user + system) this process used so far, from `/proc/self/stat` (Linux;
/// `None` elsewhere). Clock ticks are taken as 100 per second (the value on every mainstream
/// Linux configuration).
pub fn own_cpu_secs() -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // Fields after the parenthesised command name; utime and stime are fields 14 and 15.
    let rest = &stat[stat.rfind(')')? + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks = f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?;
    Some(ticks as f64 / 100.0)
}

/// The `q` quantile of sorted samples (0 when empty).
pub fn percentile(sorted: &[u32], q: f64) -> u32 {
    if sorted.is_empty() {
        return 0;
    }
    let i = ((sorted.len() as f64 * q).ceil() as usize).clamp(1, sorted.len()) - 1;
    sorted[i]
}

fn emit_report(v: &serde_json::Value, path: Option<&std::path::Path>) -> Result<(), Fail> {
    let text = serde_json::to_string_pretty(v).map_err(|e| Fail(e.to_string()))?;
    println!("{text}");
    if let Some(p) = path {
        std::fs::write(p, text + "\n")
            .map_err(|e| Fail(format!("cannot write {}: {e}", p.display())))?;
    }
    Ok(())
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let mut rt = tokio::runtime::Builder::new_multi_thread();
    rt.enable_all();
    if let Some(n) = cli.threads {
        rt.worker_threads(n.max(1));
    }
    let rt = match rt.build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let r = rt.block_on(async {
        match cli.cmd {
            Cmd::Gen(a) => gen::run(a).await,
            Cmd::Sink(a) => sink::run(a).await,
            Cmd::Ledger(a) => ledger::run(a).await,
        }
    });
    match r {
        Ok(()) => ExitCode::SUCCESS,
        Err(Fail(m)) => {
            eprintln!("tollgate-bench: {m}");
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn percentiles() {
        let v: Vec<u32> = (1..=100).collect();
        assert_eq!(super::percentile(&v, 0.5), 50);
        assert_eq!(super::percentile(&v, 0.99), 99);
        assert_eq!(super::percentile(&[], 0.5), 0);
    }
}
