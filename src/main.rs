//! `sessiontrail`: the command line. `run` starts a pipeline, `validate` checks one.

mod api;
mod config;
mod report;
mod topology;

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand, ValueEnum};
use tokio_util::sync::CancellationToken;

/// mimalloc instead of glibc malloc: the pipeline allocates and frees millions of small
/// strings and maps per second, across threads (parsed on the source's thread, freed on the
/// sink's). With glibc, malloc/free took about a quarter of the CPU of `stdin -> file`.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(
    name = "sessiontrail",
    version,
    about = "Ships remote-session audit events: sources -> redact -> OCSF -> correlate -> sinks",
    long_about = "Ships remote-session audit events (Windows logon/logoff, AWS SSM Session Manager, \
WorkSpaces Secure Browser, Parsec) from sources through transforms to sinks, as described in a YAML \
pipeline file.\n\nStart with:  sessiontrail run -c pipelines/quickstart.yaml"
)]
struct Cli {
    /// Log format on stderr. Log level from RUST_LOG (default: info).
    #[arg(long, value_enum, default_value_t = LogFormat::Text, global = true)]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

#[derive(Subcommand)]
enum Command {
    /// Run a pipeline until its input ends or SIGINT/SIGTERM (then drain and exit 0).
    Run {
        /// Pipeline file(s); several files are merged into one pipeline.
        #[arg(short = 'c', long = "config", required = true, value_name = "FILE")]
        config: Vec<PathBuf>,
        /// Longest wait, in seconds, for in-flight events to drain after a stop signal.
        #[arg(long, default_value_t = 30, value_name = "SECONDS")]
        shutdown_timeout: u64,
    },
    /// Summarise sessions in OCSF NDJSON files (plain or gzip) written by the sinks: per user
    /// and per resource usage, sessions still open, unusually long sessions.
    Report {
        /// OCSF NDJSON files or directories (read recursively).
        #[arg(long = "input", required = true, num_args = 1.., value_name = "PATH")]
        input: Vec<PathBuf>,
        /// Report sessions seen in this window before --until (e.g. 30d, 12h).
        #[arg(long, default_value = "30d")]
        since: String,
        /// End of the window, RFC 3339 (default: now).
        #[arg(long)]
        until: Option<String>,
        /// Sessions at least this long (or open this long) are listed as unusually long.
        #[arg(long, default_value = "12h")]
        long_after: String,
        #[arg(long, value_enum, default_value_t = report::Format::Table)]
        format: report::Format,
    },
    /// Check pipeline file(s) and print the component graph; reports every error found.
    Validate {
        /// Pipeline file(s); several files are merged into one pipeline.
        #[arg(short = 'c', long = "config", required = true, value_name = "FILE")]
        config: Vec<PathBuf>,
    },
}

fn init_logging(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}

fn print_config_errors(errors: &[config::ConfigError]) {
    for e in errors {
        eprintln!("error: {e}");
    }
    eprintln!("{} error(s) found; nothing was started", errors.len());
}

fn main() -> ExitCode {
    sessiontrail_core::allocator::tune_mimalloc();
    sessiontrail_sources::install_tls_provider();
    let cli = Cli::parse();
    init_logging(cli.log_format);
    match cli.command {
        Command::Report {
            input,
            since,
            until,
            long_after,
            format,
        } => match report_options(input, &since, until.as_deref(), &long_after, format)
            .and_then(|opts| report::run(&opts, &mut std::io::stdout().lock()))
        {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("error: {e}");
                ExitCode::from(1)
            }
        },
        Command::Validate { config } => match config::load(&config) {
            Ok(cfg) => {
                print!("{}", config::graph::describe(&cfg));
                ExitCode::SUCCESS
            }
            Err(errors) => {
                print_config_errors(&errors);
                ExitCode::from(1)
            }
        },
        Command::Run {
            config,
            shutdown_timeout,
        } => {
            let cfg = match config::load(&config) {
                Ok(cfg) => cfg,
                Err(errors) => {
                    print_config_errors(&errors);
                    return ExitCode::from(1);
                }
            };
            let runtime = match tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()
            {
                Ok(r) => r,
                Err(e) => {
                    eprintln!("error: cannot start the async runtime: {e}");
                    return ExitCode::from(1);
                }
            };
            let code = runtime.block_on(async move {
                let stop = CancellationToken::new();
                tokio::spawn(watch_signals(stop.clone()));
                let opts = topology::RunOptions {
                    shutdown_timeout: Duration::from_secs(shutdown_timeout),
                };
                match topology::run(cfg, opts, stop).await {
                    Ok(()) => ExitCode::SUCCESS,
                    Err(e) => {
                        tracing::error!("{e}");
                        eprintln!("error: {e}");
                        ExitCode::from(1)
                    }
                }
            });
            // Dropping a runtime waits without limit for its blocking threads (file reads,
            // store commits). The pipeline has drained or timed out by now: a thread still
            // stuck in a system call must not keep the process alive.
            runtime.shutdown_timeout(EXIT_GRACE);
            code
        }
    }
}

fn report_options(
    input: Vec<PathBuf>,
    since: &str,
    until: Option<&str>,
    long_after: &str,
    format: report::Format,
) -> Result<report::ReportOptions, String> {
    let (since_ms, until_ms) = report::window(since, until)?;
    let long_after_ms = sessiontrail_transforms::correlate::parse_duration_ms(long_after)
        .map_err(|e| format!("--long-after: {e}"))?;
    let mut inputs = Vec::new();
    for p in input {
        collect_files(&p, &mut inputs)?;
    }
    Ok(report::ReportOptions {
        inputs,
        since_ms,
        until_ms,
        long_after_ms,
        format,
    })
}

/// A file as is; a directory's files recursively, in name order.
fn collect_files(path: &std::path::Path, out: &mut Vec<PathBuf>) -> Result<(), String> {
    if !path.is_dir() {
        out.push(path.to_path_buf());
        return Ok(());
    }
    let mut entries: Vec<PathBuf> = std::fs::read_dir(path)
        .map_err(|e| format!("cannot list {}: {e}", path.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .collect();
    entries.sort();
    for e in entries {
        collect_files(&e, out)?;
    }
    Ok(())
}

/// How long threads still blocked after the pipeline stopped may delay the exit.
const EXIT_GRACE: Duration = Duration::from_secs(2);

/// First SIGINT/SIGTERM: graceful stop. Second: exit at once.
async fn watch_signals(stop: CancellationToken) {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        let (Ok(mut term), Ok(mut int)) = (
            signal(SignalKind::terminate()),
            signal(SignalKind::interrupt()),
        ) else {
            tracing::warn!("cannot install signal handlers");
            return;
        };
        for round in 0..2 {
            tokio::select! {
                _ = term.recv() => {}
                _ = int.recv() => {}
            }
            if round == 0 {
                stop.cancel();
            } else {
                eprintln!("second signal: exiting without waiting for the drain");
                std::process::exit(130);
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
        stop.cancel();
    }
}
