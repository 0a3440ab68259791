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
    Ledger(tollgate::cli::ledger::LedgerCmd),
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
        #[arg(long, required_unless_present = "batch")]
        tenant: Option<String>,
        #[arg(long, required_unless_present = "batch")]
        originator: Option<String>,
        #[arg(long, required_unless_present = "batch")]
        workflow: Option<String>,
        #[arg(long, required_unless_present = "batch")]
        operation: Option<String>,
        /// Unique per envelope; random when omitted.
        #[arg(long)]
        issuance: Option<String>,
        /// Lifetime, e.g. 1h.
        #[arg(long, default_value = "1h")]
        ttl: String,
        /// RFC 3339 or Unix seconds; now when omitted.
        #[arg(long)]
        issued_at: Option<String>,
        /// Read one claims JSON object (all seven fields) per stdin line; print one token (or
        /// `error: ...`) per line.
        #[arg(long, conflicts_with_all = ["tenant", "originator", "workflow", "operation", "issuance", "ttl", "issued_at"])]
        batch: bool,
    },
    /// Append a lineage hop (needs no key; prints the new token).
    Append {
        #[arg(required_unless_present = "batch")]
        token: Option<String>,
        /// The hop record as JSON, e.g. '{"kind":"retry","attempt":2}'.
        #[arg(long, required_unless_present = "batch")]
        record: Option<String>,
        /// Read `TOKEN RECORD` (one space between) per stdin line; print one token (or
        /// `error: ...`) per line.
        #[arg(long, conflicts_with_all = ["token", "record"])]
        batch: bool,
    },
    /// Verify a token against a key ring file and explain the outcome stage by stage.
    Verify {
        /// YAML file with a `keys:` list (same schema as the envelope processor's).
        #[arg(long)]
        keys: PathBuf,
        #[arg(required_unless_present = "batch")]
        token: Option<String>,
        /// The span start to check times against (RFC 3339 or Unix seconds); now by default.
        #[arg(long)]
        span_start: Option<String>,
        #[arg(long, default_value = "300s")]
        skew: String,
        /// Read one token per stdin line; print one JSON result per line.
        #[arg(long, conflicts_with = "token")]
        batch: bool,
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
    use tollgate::cli::rates as cli;
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

/// The filter `RUST_LOG` asks for; unset or empty (`RUST_LOG=""`) means none (an empty
/// filter would silence everything), and an invalid one is reported and ignored.
fn env_filter() -> Option<tracing_subscriber::EnvFilter> {
    let v = std::env::var("RUST_LOG").ok()?;
    if v.trim().is_empty() {
        return None;
    }
    match tracing_subscriber::EnvFilter::try_new(&v) {
        Ok(f) => Some(f),
        Err(e) => {
            eprintln!("RUST_LOG={v:?} is not a valid log filter ({e}); using the configured level");
            None
        }
    }
}

type LevelHandle =
    tracing_subscriber::reload::Handle<tracing_subscriber::EnvFilter, tracing_subscriber::Registry>;

/// Starts logging before the configuration is read (so what parsing logs, such as key
/// fingerprints and "rate table loaded", is not lost), at `info` unless `RUST_LOG` says
/// otherwise. Returns the handle to switch to the configured level once it is known, or
/// `None` when `RUST_LOG` decides.
fn init_logging() -> Option<LevelHandle> {
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;
    let from_env = env_filter();
    let is_env = from_env.is_some();
    let filter = from_env.unwrap_or_else(|| tracing_subscriber::EnvFilter::new("info"));
    let (filter, handle) = tracing_subscriber::reload::Layer::new(filter);
    let _ = tracing_subscriber::registry()
        .with(filter)
        .with(
            tracing_subscriber::fmt::layer()
                .with_writer(std::io::stderr)
                .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr())),
        )
        .try_init();
    (!is_env).then_some(handle)
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
        Command::Ledger(cmd) => tollgate::cli::ledger::run(cmd),
    }
}

fn envelope(cmd: &EnvelopeCmd) -> ExitCode {
    use tollgate::cli::envelope as cli;
    match cmd {
        EnvelopeCmd::Sign {
            key_file,
            key_encoding,
            kid,
            batch: true,
            ..
        } => cli::sign_batch(key_file, key_encoding, kid),
        EnvelopeCmd::Sign {
            key_file,
            key_encoding,
            kid,
            tenant: Some(tenant),
            originator: Some(originator),
            workflow: Some(workflow),
            operation: Some(operation),
            issuance,
            ttl,
            issued_at,
            batch: false,
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
        EnvelopeCmd::Append { batch: true, .. } => cli::append_batch(),
        EnvelopeCmd::Append {
            token: Some(token),
            record: Some(record),
            batch: false,
        } => cli::append(token, record),
        EnvelopeCmd::Verify {
            keys,
            span_start,
            skew,
            batch: true,
            ..
        } => cli::verify_batch(keys, span_start.as_deref(), skew),
        EnvelopeCmd::Verify {
            keys,
            token: Some(token),
            span_start,
            skew,
            batch: false,
        } => cli::verify(keys, token, span_start.as_deref(), skew),
        // clap's required_unless_present rules out the remaining shapes.
        _ => {
            eprintln!("error: missing arguments (see --help)");
            ExitCode::from(2)
        }
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
    let level = init_logging();
    let parsed = match tollgate::service::parse_files(paths) {
        Ok(p) => p,
        Err(problems) => {
            print_problems(&problems);
            return ExitCode::from(1);
        }
    };
    match tollgate::netguard::raise_fd_limit() {
        Ok((old, new)) if new > old => {
            tracing::info!(
                from = old,
                to = new,
                "raised the open-files soft limit to the hard limit"
            )
        }
        Ok(_) => {}
        Err(e) => tracing::warn!(error = %e, "could not raise the open-files limit"),
    }
    if let Some(handle) = level {
        let configured = &parsed.service.telemetry.log_level;
        match tracing_subscriber::EnvFilter::try_new(configured) {
            Ok(f) => {
                if let Err(e) = handle.reload(f) {
                    tracing::warn!(error = %e, "could not apply service.telemetry.logs.level");
                }
            }
            Err(e) => {
                tracing::warn!(level = %configured, error = %e, "service.telemetry.logs.level is not a valid filter; logging at info")
            }
        }
    }
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
