//! The `tollgate` command line.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// mimalloc instead of the system allocator: per-span attribute strings are allocated on one
/// worker thread and freed on another, which glibc malloc handles slowly (see bench/RESULTS.md).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(
    name = "tollgate",
    version,
    about = "OpenTelemetry gateway that makes GenAI spend attributable and defensible"
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    /// Config file(s) for the default `run` command; several merge in order.
    #[arg(long = "config", global = true, value_name = "FILE")]
    config: Vec<PathBuf>,
}

#[derive(Subcommand)]
enum Command {
    /// Run the gateway (the default).
    Run,
    /// Load and check the configuration without binding ports; print every problem.
    Validate,
    /// Sign, extend and verify `tg1` identity envelopes.
    #[command(subcommand)]
    Envelope(EnvelopeCmd),
    /// Check a rate table or price one request with it.
    Rates {
        #[command(subcommand)]
        command: RatesCommand,
    },
    /// Ask the chargeback ledger: report, completeness, dispute evidence, verify.
    #[command(subcommand)]
    Ledger(tollgate::ledger::cli::LedgerCmd),
}

#[derive(Subcommand)]
enum EnvelopeCmd {
    /// Stamp a new envelope (prints the token).
    Sign {
        /// File holding the master secret for --kid (never passed on the command line).
        #[arg(long)]
        key_file: PathBuf,
        /// How the key file is encoded: hex, base64 or raw.
        #[arg(long, default_value = "hex")]
        key_encoding: String,
        #[arg(long)]
        kid: String,
        #[arg(long)]
        tenant: String,
        #[arg(long)]
        originator: String,
        #[arg(long)]
        workflow: String,
        #[arg(long)]
        operation: String,
        /// Unique per envelope; random when omitted.
        #[arg(long)]
        issuance: Option<String>,
        /// Lifetime, e.g. 1h.
        #[arg(long, default_value = "1h")]
        ttl: String,
        /// RFC 3339 or Unix seconds; now when omitted.
        #[arg(long)]
        issued_at: Option<String>,
    },
    /// Append a lineage hop (needs no key; prints the new token).
    Append {
        token: String,
        /// The hop record as JSON, e.g. '{"kind":"retry","attempt":2}'.
        #[arg(long)]
        record: String,
    },
    /// Verify a token against a key ring file and explain the outcome stage by stage.
    Verify {
        /// YAML file with a `keys:` list (same schema as the envelope processor's).
        #[arg(long)]
        keys: PathBuf,
        token: String,
        /// The span start to check times against (RFC 3339 or Unix seconds); now by default.
        #[arg(long)]
        span_start: Option<String>,
        #[arg(long, default_value = "300s")]
        skew: String,
    },
}

#[derive(Subcommand)]
enum RatesCommand {
    /// Load and check a rate table; print every problem with its YAML path.
    Check {
        /// The rate table (YAML).
        file: PathBuf,
    },
    /// Price one request and print the matched row and the arithmetic.
    Price {
        /// The rate table (YAML).
        #[arg(long, default_value = "config/rates.yaml")]
        rates: PathBuf,
        #[arg(long)]
        model: String,
        #[arg(long)]
        provider: Option<String>,
        /// All input tokens, cached included (gen_ai.usage.input_tokens).
        #[arg(long)]
        input: i64,
        /// All output tokens, reasoning included (gen_ai.usage.output_tokens).
        #[arg(long)]
        output: i64,
        #[arg(long, default_value_t = 0)]
        cache_read: i64,
        #[arg(long, default_value_t = 0)]
        cache_write: i64,
        #[arg(long, default_value_t = 0)]
        reasoning: i64,
        /// When the request started (RFC 3339, a date or Unix seconds); default now.
        #[arg(long)]
        at: Option<String>,
    },
}

fn rates(cmd: &RatesCommand) -> ExitCode {
    use tollgate::cost::cli;
    match cmd {
        RatesCommand::Check { file } => cli::rates_check(file),
        RatesCommand::Price {
            rates,
            model,
            provider,
            input,
            output,
            cache_read,
            cache_write,
            reasoning,
            at,
        } => {
            let at = match at.as_deref().map(tollgate::envelope::parse_time) {
                None => None,
                Some(Ok(t)) => Some(t),
                Some(Err(e)) => {
                    eprintln!("--at: {e}");
                    return ExitCode::from(1);
                }
            };
            cli::rates_price(
                rates,
                model,
                provider.as_deref(),
                *input,
                *output,
                *cache_read,
                *cache_write,
                *reasoning,
                at,
            )
        }
    }
}

fn config_paths(cli: &Cli) -> Vec<PathBuf> {
    if cli.config.is_empty() {
        vec![PathBuf::from("config/tollgate.yaml")]
    } else {
        cli.config.clone()
    }
}

fn init_logging(level: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(level));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .try_init();
}

fn print_problems(problems: &[tollgate::config::Problem]) {
    for p in problems {
        eprintln!("{p}");
    }
    eprintln!(
        "{} problem{} found",
        problems.len(),
        if problems.len() == 1 { "" } else { "s" }
    );
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let paths = config_paths(&cli);
    match cli.command.as_ref().unwrap_or(&Command::Run) {
        Command::Validate => match tollgate::service::parse_files(&paths) {
            Ok(parsed) => {
                for w in &parsed.warnings {
                    eprintln!("warning: {w}");
                }
                println!("configuration is valid: {}", display_paths(&paths));
                ExitCode::SUCCESS
            }
            Err(problems) => {
                print_problems(&problems);
                ExitCode::from(1)
            }
        },
        Command::Run => run(&paths),
        Command::Rates { command } => rates(command),
        Command::Envelope(cmd) => envelope(cmd),
        Command::Ledger(cmd) => tollgate::ledger::cli::run(cmd),
    }
}

fn envelope(cmd: &EnvelopeCmd) -> ExitCode {
    use tollgate::envelope::cli;
    match cmd {
        EnvelopeCmd::Sign {
            key_file,
            key_encoding,
            kid,
            tenant,
            originator,
            workflow,
            operation,
            issuance,
            ttl,
            issued_at,
        } => cli::sign(&cli::SignArgs {
            key_file,
            key_encoding,
            kid,
            tenant,
            originator,
            workflow,
            operation,
            issuance: issuance.as_deref(),
            ttl,
            issued_at: issued_at.as_deref(),
        }),
        EnvelopeCmd::Append { token, record } => cli::append(token, record),
        EnvelopeCmd::Verify {
            keys,
            token,
            span_start,
            skew,
        } => cli::verify(keys, token, span_start.as_deref(), skew),
    }
}

fn display_paths(paths: &[PathBuf]) -> String {
    paths
        .iter()
        .map(|p| p.display().to_string())
        .collect::<Vec<_>>()
        .join(", ")
}

fn run(paths: &[PathBuf]) -> ExitCode {
    let parsed = match tollgate::service::parse_files(paths) {
        Ok(p) => p,
        Err(problems) => {
            print_problems(&problems);
            return ExitCode::from(1);
        }
    };
    init_logging(&parsed.service.telemetry.log_level);
    for w in &parsed.warnings {
        tracing::warn!(path = %w.path, "{}", w.message);
    }
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("cannot start the async runtime: {e}");
            return ExitCode::from(1);
        }
    };
    rt.block_on(async move {
        let running = match tollgate::service::start(parsed).await {
            Ok(r) => r,
            Err(e) => {
                tracing::error!(error = %e, "start-up failed");
                return ExitCode::from(1);
            }
        };
        wait_for_signal().await;
        running.shutdown().await;
        ExitCode::SUCCESS
    })
}

async fn wait_for_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        match (
            signal(SignalKind::terminate()),
            signal(SignalKind::interrupt()),
        ) {
            (Ok(mut term), Ok(mut int)) => {
                tokio::select! {
                    _ = term.recv() => tracing::info!(signal = "SIGTERM", "stopping"),
                    _ = int.recv() => tracing::info!(signal = "SIGINT", "stopping"),
                }
            }
            _ => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}
