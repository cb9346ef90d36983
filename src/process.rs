//! The process around the HTTP server, for the life of the server: the token uses written every
//! second, the reaper's sweeps, the back-channel logouts delivered, the signals (SIGTERM and SIGINT drain, SIGHUP reloads TLS) and
//! systemd's notifications. Started by `start` in lib.rs.

use std::sync::Arc;

use crate::core::Core;
use crate::web::tls;

/// Writes the token uses kept in memory, every second, for the life of the server.
pub async fn toucher(core: Arc<Core>) {
    let mut tick = tokio::time::interval(std::time::Duration::from_secs(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let _ = core.call(|c| c.flush_touches()).await;
    }
}

/// The reaper's loop: one sweep every interval, for the life of the server.
pub async fn reaper(core: Arc<Core>) {
    let mut tick = tokio::time::interval(core.config.reaper.interval.0);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        // Failures are logged with their correlation id by the core; the next tick tries again.
        let _ = core.call(|c| c.reap()).await;
    }
}

/// Delivers the back-channel logouts that are due, every second, for the life of the server.
pub async fn backchannel(core: Arc<Core>) {
    let client = crate::web::backchannel::client();
    let mut tick = tokio::time::interval(std::time::Duration::from_secs(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        crate::web::backchannel::deliver_due(&core, &client).await;
    }
}

/// The process's signals, for the life of the server: SIGTERM and SIGINT stop it gracefully
/// (`http.shutdown_timeout`), telling systemd it is stopping; SIGHUP reads the TLS certificate
/// and key again (a renewed certificate, without a restart) or, without TLS, is logged and
/// ignored. SIGHUP never stops the server.
pub async fn signals(server: actix_web::dev::ServerHandle, certificate: Option<Arc<tls::Reloadable>>, core: Arc<Core>) {
    use tokio::signal::unix::{signal, SignalKind};
    let (Ok(mut term), Ok(mut int), Ok(mut hup)) =
        (signal(SignalKind::terminate()), signal(SignalKind::interrupt()), signal(SignalKind::hangup()))
    else {
        log::error!("signal handlers could not be installed; stop the server with SIGKILL");
        return;
    };
    loop {
        let name = tokio::select! {
            _ = term.recv() => "SIGTERM",
            _ = int.recv() => "SIGINT",
            _ = hup.recv() => {
                hangup(certificate.as_deref());
                continue;
            }
        };
        log::info!(
            "{name}: stopping; requests under way get up to {} s",
            core.config.http.shutdown_timeout.0.as_secs()
        );
        notify_systemd("STOPPING=1");
        server.stop(true).await;
        return;
    }
}

fn hangup(certificate: Option<&tls::Reloadable>) {
    match certificate {
        Some(c) => {
            notify_systemd("RELOADING=1");
            match c.reload() {
                Ok(()) => log::info!("SIGHUP: TLS certificate and key read again; new connections get them"),
                Err(e) => log::error!("SIGHUP: TLS certificate not reloaded, the one in use stays: {e}"),
            }
            notify_systemd("READY=1");
        }
        None => log::info!("SIGHUP: nothing to reload (no [tls]); still serving"),
    }
}

/// Tells systemd (`Type=notify`) how the service is, when it runs under it (`NOTIFY_SOCKET`);
/// nothing otherwise.
pub fn notify_systemd(state: &str) {
    let state = match state.split_once('=') {
        Some(("READY", _)) => sd_notify::NotifyState::Ready,
        Some(("STOPPING", _)) => sd_notify::NotifyState::Stopping,
        Some(("RELOADING", _)) => sd_notify::NotifyState::Reloading,
        _ => return,
    };
    if let Err(e) = sd_notify::notify(false, &[state]) {
        log::warn!("systemd was not notified: {e}");
    }
}
