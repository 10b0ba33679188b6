//! Signals: the first SIGINT or SIGTERM starts a graceful shutdown; a second one exits at
//! once.

use tokio::signal::unix::{signal, SignalKind};
use tokio_util::sync::CancellationToken;

/// Spawns the signal watcher. `shutdown` is cancelled on the first signal.
pub fn watch_signals(shutdown: CancellationToken) -> std::io::Result<()> {
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    tokio::spawn(async move {
        let first = tokio::select! {
            _ = term.recv() => "SIGTERM",
            _ = int.recv() => "SIGINT",
        };
        tracing::info!(signal = first, "shutting down (send the signal again to exit at once)");
        shutdown.cancel();
        let second = tokio::select! {
            _ = term.recv() => "SIGTERM",
            _ = int.recv() => "SIGINT",
        };
        tracing::warn!(signal = second, "second signal: exiting now");
        std::process::exit(130);
    });
    Ok(())
}

/// Test builds with simulated power loss armed: SIGUSR1 is the power cut
/// (`strom_storage::power_loss::cut`, which ends the process).
pub fn watch_power_cut() -> std::io::Result<()> {
    let mut usr1 = signal(SignalKind::user_defined1())?;
    tokio::spawn(async move {
        if usr1.recv().await.is_some() {
            tracing::warn!("SIGUSR1: simulated power cut");
            strom_storage::power_loss::cut();
        }
    });
    Ok(())
}
