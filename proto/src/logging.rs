//! Logging shared by fdfs-trackerd and fdfs-storaged: the `log_level` filter (RUST_LOG when
//! set), the `access_log` switch, and re-reading both on SIGHUP without a restart.
//!
//! `log_level` uses the RUST_LOG syntax (`info`, `warn,fdfs_storage=debug`, ...). RUST_LOG,
//! when set at start, wins over `log_level`, also at every reload: the environment of a
//! running process cannot change, so the operator who set it keeps it. Access log lines are
//! `info` events of target `access`; with `access_log` on they pass whatever `log_level` says.

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use tokio::signal::unix::{signal, SignalKind};
use tracing_subscriber::filter::ParseError;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{fmt, reload, EnvFilter, Registry};

#[derive(Debug, thiserror::Error)]
pub enum LogError {
    #[error("{0:?} is not a log filter: {1}")]
    Filter(String, ParseError),
    #[error("a logger is installed already")]
    Installed,
    #[error("the logger is gone")]
    Gone,
}

/// The filter `log_level` asks for, with `access` lines let through when `access_log` is on.
pub fn config_filter(level: &str, access_log: bool) -> Result<EnvFilter, LogError> {
    let filter = EnvFilter::try_new(level).map_err(|err| LogError::Filter(level.into(), err))?;
    if !access_log {
        return Ok(filter);
    }
    let access = "access=info"
        .parse()
        .map_err(|err| LogError::Filter(level.into(), err))?;
    Ok(filter.add_directive(access))
}

/// Changes the installed logger's filter.
#[derive(Debug)]
pub struct LogControl {
    handle: reload::Handle<EnvFilter, Registry>,
    /// RUST_LOG was set at start: `log_level` is not used.
    from_env: bool,
}

/// Installs the process logger (stderr, colours on a terminal) with the filter of RUST_LOG,
/// or else of `level` and `access_log`.
pub fn init(level: &str, access_log: bool) -> Result<LogControl, LogError> {
    let (filter, from_env) = match EnvFilter::try_from_default_env() {
        Ok(filter) => (filter, true),
        Err(_) => (config_filter(level, access_log)?, false),
    };
    let (filter, handle) = reload::Layer::new(filter);
    tracing_subscriber::registry()
        .with(filter)
        .with(
            fmt::layer()
                .with_writer(std::io::stderr)
                .with_ansi(std::io::stderr().is_terminal()),
        )
        .try_init()
        .map_err(|_| LogError::Installed)?;
    Ok(LogControl { handle, from_env })
}

impl LogControl {
    /// Applies a reloaded `log_level` / `access_log`; a bad filter changes nothing. Returns
    /// false when RUST_LOG is in charge and the level was left alone.
    pub fn apply(&self, level: &str, access_log: bool) -> Result<bool, LogError> {
        if self.from_env {
            return Ok(false);
        }
        let filter = config_filter(level, access_log)?;
        self.handle.reload(filter).map_err(|_| LogError::Gone)?;
        Ok(true)
    }
}

/// The `access_log` switch, shared by the request path and the SIGHUP reloader.
#[derive(Clone, Debug, Default)]
pub struct AccessLog(Arc<AtomicBool>);

impl AccessLog {
    pub fn new(enabled: bool) -> Self {
        AccessLog(Arc::new(AtomicBool::new(enabled)))
    }

    pub fn enabled(&self) -> bool {
        self.0.load(Ordering::Relaxed)
    }

    pub fn set(&self, enabled: bool) {
        self.0.store(enabled, Ordering::Relaxed);
    }
}

/// At every SIGHUP, for as long as the runtime runs: reads the config file at `path` again
/// with `load`; if it is valid, applies its `log_level` and `access_log` (as `settings`
/// returns them; the other keys take effect at the next start), else logs why and keeps the
/// running configuration. Open connections are not touched.
///
/// The handler is installed before this returns (SIGHUP's default action ends the process),
/// so call it before the process announces itself. Must be called within a tokio runtime.
pub fn reload_on_hangup<C: 'static, E: std::fmt::Display + 'static>(
    path: PathBuf,
    load: fn(&Path) -> Result<C, E>,
    settings: fn(&C) -> (String, bool),
    log: LogControl,
    access_log: AccessLog,
) -> std::io::Result<()> {
    let mut hangups = signal(SignalKind::hangup())?;
    tokio::spawn(async move {
        while hangups.recv().await.is_some() {
            match load(&path) {
                Ok(config) => {
                    let (level, access) = settings(&config);
                    reload(&path, &level, access, &log, &access_log);
                }
                Err(err) => {
                    tracing::error!(path = %path.display(), error = %err, "SIGHUP: config not reloaded, keeping the running one");
                }
            }
        }
    });
    Ok(())
}

fn reload(path: &Path, level: &str, access: bool, log: &LogControl, access_log: &AccessLog) {
    match log.apply(level, access) {
        Ok(applied) => {
            access_log.set(access);
            tracing::info!(
                path = %path.display(),
                log_level = if applied { level } else { "(RUST_LOG is set)" },
                access_log = access,
                "SIGHUP: log_level and access_log reloaded; other keys take effect at restart"
            );
        }
        Err(err) => {
            tracing::error!(path = %path.display(), error = %err, "SIGHUP: config not reloaded, keeping the running one");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filters_and_switch() {
        assert!(config_filter("info", false).is_ok());
        let with_access = config_filter("warn", true).unwrap().to_string();
        assert!(with_access.contains("access=info"), "{with_access}");
        assert!(matches!(
            config_filter("[[[", true),
            Err(LogError::Filter(..))
        ));
        let switch = AccessLog::new(false);
        let shared = switch.clone();
        shared.set(true);
        assert!(switch.enabled());
    }
}
