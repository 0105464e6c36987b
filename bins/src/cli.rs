//! Plumbing every c4m binary shares: credential flags, flag parsers, the
//! data directory, logging, the async runtime and shutdown on a signal.

use std::future::Future;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, Result, anyhow};
use c4m_api::Credentials;
use clap::Args;
use tokio_util::sync::CancellationToken;

/// How a client or an agent authenticates to a control plane.
#[derive(Args, Clone, Default)]
pub struct CredentialFlags {
    /// Access token.
    #[arg(long, global = true, env = "C4M_ACCESS_TOKEN", hide_env_values = true)]
    pub access_token: Option<String>,
    /// Secret key.
    #[arg(long, global = true, env = "C4M_SECRET_KEY", hide_env_values = true)]
    pub secret_key: Option<String>,
}

impl CredentialFlags {
    /// The credentials given, if an access token was.
    pub fn credentials(&self) -> Option<Credentials> {
        self.access_token.as_ref().map(|access_token| Credentials {
            access_token: access_token.clone(),
            secret_key: self.secret_key.clone().unwrap_or_default(),
        })
    }
}

/// `$C4M_HOME`, else `~/.c4m`.
pub fn default_home() -> Result<PathBuf> {
    if let Some(home) = std::env::var_os("C4M_HOME") {
        return Ok(PathBuf::from(home));
    }
    let home =
        std::env::var_os("HOME").ok_or_else(|| anyhow!("neither C4M_HOME nor HOME is set"))?;
    Ok(PathBuf::from(home).join(".c4m"))
}

/// A daemon's data directory: the flag's, else `sub` under the home;
/// created if missing.
pub fn data_dir(flag: Option<PathBuf>, sub: &str) -> Result<PathBuf> {
    let dir = match flag {
        Some(dir) => dir,
        None => default_home()?.join(sub),
    };
    std::fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
    Ok(dir)
}

/// Parses `500ms`, `10s`, `2m`, `1h` (a bare number is seconds).
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let (number, unit) = text
        .find(|c: char| !c.is_ascii_digit() && c != '.')
        .map_or((text, "s"), |i| text.split_at(i));
    let value: f64 = number
        .parse()
        .map_err(|_| format!("invalid duration {text:?}: expected e.g. 500ms, 10s, 2m"))?;
    let seconds = match unit {
        "ms" => value / 1000.0,
        "s" => value,
        "m" => value * 60.0,
        "h" => value * 3600.0,
        _ => {
            return Err(format!(
                "invalid duration {text:?}: unit must be ms, s, m or h"
            ));
        }
    };
    Duration::try_from_secs_f64(seconds).map_err(|_| format!("invalid duration {text:?}"))
}

/// Parses `KEY=VALUE`.
pub fn parse_key_value(text: &str) -> Result<(String, String), String> {
    text.split_once('=')
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .ok_or_else(|| format!("expected KEY=VALUE, got {text:?}"))
}

/// Logs to stderr at `default_level` unless `RUST_LOG` says otherwise.
pub fn init_logging(default_level: &str) {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default_level)),
        )
        .with_writer(std::io::stderr)
        .init();
}

/// How [`run`] ends the async runtime once the command is done.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Shutdown {
    /// Wait for every task (daemons' store and image work).
    Wait,
    /// Do not wait: a blocking thread may still be reading stdin.
    Background,
}

/// Runs `command` on a two-worker runtime and turns its error into a
/// one-line message on stderr and a failing exit code.
pub fn run(command: impl Future<Output = Result<ExitCode>>, shutdown: Shutdown) -> ExitCode {
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(command);
    if shutdown == Shutdown::Background {
        runtime.shutdown_background();
    }
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {}", format!("{e:#}").replace('\n', " "));
            ExitCode::FAILURE
        }
    }
}

/// A token cancelled on SIGINT or SIGTERM: daemons then shut down
/// gracefully.
pub fn shutdown_on_signal() -> CancellationToken {
    let token = CancellationToken::new();
    let cancel = token.clone();
    tokio::spawn(async move {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(term) => term,
                Err(e) => {
                    tracing::error!(error = %e, "cannot watch SIGTERM");
                    return;
                }
            };
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
        tracing::info!("shutting down");
        cancel.cancel();
    });
    token
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse() {
        assert_eq!(parse_duration("500ms").unwrap(), Duration::from_millis(500));
        assert_eq!(parse_duration("10s").unwrap(), Duration::from_secs(10));
        assert_eq!(parse_duration("3").unwrap(), Duration::from_secs(3));
        assert_eq!(parse_duration("2m").unwrap(), Duration::from_secs(120));
        assert!(parse_duration("fast").is_err());
        assert!(parse_duration("1d").is_err());
    }
}
