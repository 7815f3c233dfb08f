//! The `gatehouse` binary: argument parsing and wiring only.

use std::path::PathBuf;

use anyhow::Context as _;
use base64::Engine as _;
use clap::{Parser, Subcommand};
use gatehouse::config::{Config, ProcessEnv};
use gatehouse::telemetry::LogFormat;

#[derive(Parser)]
#[command(
    name = "gatehouse",
    version,
    about = "Backend-for-frontend token handler for single-page apps"
)]
struct Cli {
    /// Config file.
    #[arg(
        long,
        short,
        global = true,
        default_value = "config.toml",
        env = "GATEHOUSE_CONFIG"
    )]
    config: PathBuf,
    /// Log filter, e.g. "info" or "gatehouse=debug".
    #[arg(long, global = true, env = "GATEHOUSE_LOG")]
    log: Option<String>,
    /// Log lines as "text" or "json" (one object per line).
    #[arg(
        long,
        global = true,
        env = "GATEHOUSE_LOG_FORMAT",
        default_value = "text"
    )]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Run the proxy (the default).
    Run,
    /// Validate the config file and list every problem.
    Check {
        /// Also contact the provider and the store the way `run` would, and report what
        /// they offer and what that means; exits non-zero on errors, zero with warnings.
        #[arg(long)]
        online: bool,
    },
    /// Print a fresh random session key (base64 of 32 bytes).
    Keygen,
    /// Count or end sessions in the configured Redis store (incident response).
    #[command(subcommand)]
    Sessions(SessionsCommand),
}

#[derive(Subcommand)]
enum SessionsCommand {
    /// How many sessions exist, or how many a subject has.
    Count {
        /// Only this subject's (the ID token's `sub`).
        #[arg(long, allow_hyphen_values = true)]
        sub: Option<String>,
    },
    /// End sessions now, on every instance, as a back-channel logout would.
    End {
        /// Every session of this subject.
        #[arg(
            long,
            conflicts_with = "sid",
            required_unless_present = "sid",
            allow_hyphen_values = true
        )]
        sub: Option<String>,
        /// The sessions of this provider session (the ID token's `sid`).
        #[arg(long, allow_hyphen_values = true)]
        sid: Option<String>,
    },
}

#[global_allocator]
static ALLOCATOR: gatehouse::Allocator = gatehouse::Allocator;

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command.unwrap_or(Command::Run) {
        Command::Keygen => {
            let key = gatehouse::cookie::random_key();
            #[expect(clippy::print_stdout, reason = "keygen's output is the key")]
            {
                println!("{}", base64::engine::general_purpose::STANDARD.encode(key));
            }
            Ok(())
        }
        Command::Check { online } => {
            let config = Config::load(&cli.config, &ProcessEnv)?;
            #[expect(clippy::print_stdout, reason = "check reports to the operator")]
            {
                for w in &config.warnings {
                    println!("warning: {w}");
                }
                println!("{}: ok", cli.config.display());
            }
            if !online {
                return Ok(());
            }
            let runtime =
                tokio::runtime::Runtime::new().context("cannot start the async runtime")?;
            let report = runtime.block_on(gatehouse::check::online(&config));
            #[expect(clippy::print_stdout, reason = "check reports to the operator")]
            {
                println!("{report}");
            }
            if report.has_errors() {
                anyhow::bail!("{}: the online check found errors", cli.config.display());
            }
            Ok(())
        }
        Command::Sessions(command) => {
            let config = Config::load(&cli.config, &ProcessEnv)?;
            let action = match command {
                SessionsCommand::Count { sub } => gatehouse::admin::Action::Count { sub },
                SessionsCommand::End { sub: Some(sub), .. } => {
                    gatehouse::admin::Action::EndBySub(sub)
                }
                SessionsCommand::End { sid: Some(sid), .. } => {
                    gatehouse::admin::Action::EndBySid(sid)
                }
                SessionsCommand::End { .. } => anyhow::bail!("give --sub or --sid"),
            };
            let runtime =
                tokio::runtime::Runtime::new().context("cannot start the async runtime")?;
            let line = runtime.block_on(gatehouse::admin::run(config, action))?;
            #[expect(
                clippy::print_stdout,
                reason = "the sessions command reports to the operator"
            )]
            {
                println!("{line}");
            }
            Ok(())
        }
        Command::Run => {
            let config = Config::load(&cli.config, &ProcessEnv)?;
            // Requests run on `server.workers` single-threaded runtimes (see
            // `server::bind_workers`); this one carries background work and trace export.
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(1)
                .thread_name("gatehouse-control")
                .enable_all()
                .build()
                .context("cannot start the async runtime")?;
            // Trace export runs its sends on this runtime, so it starts inside it.
            let telemetry = {
                let _inside = runtime.enter();
                gatehouse::telemetry::init(
                    cli.log.as_deref(),
                    cli.log_format,
                    config.telemetry.otlp.as_ref(),
                )?
            };
            let listen = config.server.listen;
            let workers = gatehouse::server::bind_workers(listen, config.server.workers)
                .with_context(|| format!("cannot listen on {listen} (server.listen)"))?;
            let source = gatehouse::reload::Source {
                path: cli.config.clone(),
            };
            let served = runtime
                .block_on(gatehouse::server::run_workers(
                    workers,
                    config,
                    Some(source),
                    shutdown_signal(),
                ))
                .map_err(anyhow::Error::from);
            // The runtime still runs the last exports while the spans and lines are flushed.
            telemetry.shutdown();
            served
        }
    }
}

/// Completes on SIGINT or SIGTERM.
async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = term => {},
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Subjects and provider session ids are the provider's opaque strings: one that starts
    /// with `-` (a random base64url id, one time in 32) is the value, not another option.
    #[test]
    fn sessions_take_a_sub_or_sid_that_starts_with_a_dash() {
        let parsed = |args: &[&str]| {
            let cli = Cli::try_parse_from(args).expect("parses");
            match cli.command {
                Some(Command::Sessions(SessionsCommand::End { sub, sid })) => (sub, sid),
                Some(Command::Sessions(SessionsCommand::Count { sub })) => (sub, None),
                _ => panic!("not a sessions command"),
            }
        };
        assert_eq!(
            parsed(&["gatehouse", "sessions", "end", "--sid", "-8e1Ivvu0"]),
            (None, Some("-8e1Ivvu0".to_owned()))
        );
        assert_eq!(
            parsed(&["gatehouse", "sessions", "end", "--sub", "--x"]),
            (Some("--x".to_owned()), None)
        );
        assert_eq!(
            parsed(&["gatehouse", "sessions", "count", "--sub", "-a"]),
            (Some("-a".to_owned()), None)
        );
    }
}
