//! Logging: one `tracing` subscriber for the process, built once. `RUST_LOG`
//! wins over `logging.level`; actix logs through `log`, bridged here.

use crate::config::LoggingConfig;
use tracing_subscriber::{fmt, EnvFilter};

/// Installs the global subscriber (stderr, coloured only on a terminal). Safe to call more than once: later
/// calls do nothing.
pub fn init(cfg: &LoggingConfig) {
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(cfg.level.to_ascii_lowercase()));
    let _ = tracing_log::LogTracer::init();
    let builder = fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        // Colours only on a terminal: a log redirected to a file or a
        // journal stays plain text.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_target(false);
    let _ = if cfg.json {
        builder.json().try_init()
    } else {
        builder.try_init()
    };
    std::panic::set_hook(Box::new(|info| {
        tracing::error!(panic = %info, "panic");
        eprintln!("{info}");
    }));
}
