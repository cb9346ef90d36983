//! gatehouse: one process, one SQLite file, four wire-compatible authentication APIs.
//!
//! `main.rs` parses the command line; this crate builds everything else. Tests start the same
//! server as `gatehouse serve` through [`start`].

#![deny(clippy::unwrap_used, clippy::expect_used, clippy::await_holding_lock)]
#![cfg_attr(test, allow(clippy::unwrap_used, clippy::expect_used))]

pub mod base;
pub mod cli;
pub mod config;
pub mod core;
pub mod dialect;
#[cfg(test)]
mod layers;
pub mod process;
pub mod store;
pub mod web;

use std::net::TcpListener;
use std::sync::Arc;

use actix_web::dev::Server;
use actix_web::{web as aweb, App, HttpServer};

use crate::core::Core;

/// Every route of every front door, and the shared ones.
pub fn routes(cfg: &mut aweb::ServiceConfig) {
    web::routes(cfg);
    dialect::pages::routes(cfg);
    dialect::device::routes(cfg);
    dialect::forepaas::routes(cfg);
    dialect::smartserver::routes(cfg);
    dialect::iampass::routes(cfg);
    dialect::iqm::routes(cfg);
    dialect::oauth2::routes(cfg);
    dialect::oidc::routes(cfg);
    dialect::account::routes(cfg);
    dialect::forward::routes(cfg);
}

/// Starts the HTTP server on `listener` (HTTPS when `[tls]` is configured) and the reaper beside it,
/// under `[http]`'s limits: connections in all and per address, the time a request's head may take
/// (its body's is `web::read_body`'s). Must run inside an actix system.
pub fn start(core: Arc<Core>, listener: TcpListener) -> std::io::Result<Server> {
    let data = aweb::Data::from(Arc::clone(&core));
    let metrics = aweb::Data::new(web::metrics::Metrics::new().map_err(std::io::Error::other)?);
    let metrics_upkeep = metrics.clone();
    let workers = core.config.http_workers();
    let tls = core.config.tls.enabled();
    let http = core.config.http.clone();
    web::net::raise_open_files(&core.config);
    let server = HttpServer::new(move || {
        App::new()
            .app_data(data.clone())
            .app_data(metrics.clone())
            .wrap_fn(move |req, srv| web::headers::security(req, srv, tls))
            .wrap_fn(web::access_log)
            .configure(routes)
    })
    .workers(workers)
    // Signals are handled by `process::signals`: SIGTERM and SIGINT stop gracefully (the requests under
    // way get this long to finish), SIGHUP reloads the certificate and never stops the server.
    .disable_signals()
    .shutdown_timeout(core.config.http.shutdown_timeout.0.as_secs())
    // actix counts connections per worker.
    .max_connections(http.max_connections.div_ceil(workers).max(1))
    .client_request_timeout(http.head_timeout.0)
    .client_disconnect_timeout(http.head_timeout.0.min(std::time::Duration::from_secs(1)));
    let server = if http.max_connections_per_address > 0 {
        let per_address = web::net::PerAddress::new(http.max_connections_per_address, http.trusted_proxies.clone());
        server.on_connect(move |io, data| per_address.on_connect(io, data))
    } else {
        server
    };
    let (server, certificate) = if tls {
        let (config, certificate) = web::tls::server_config(&core.config.tls)?;
        (server.listen_rustls_0_23(listener, config)?, Some(certificate))
    } else {
        (server.listen(listener)?, None)
    };
    let server = server.run();
    actix_web::rt::spawn(process::signals(server.handle(), certificate, Arc::clone(&core)));
    core::mail::start_sender(&core.outbox, &core.config.mail);
    actix_web::rt::spawn(process::toucher(Arc::clone(&core)));
    actix_web::rt::spawn(process::backchannel(Arc::clone(&core)));
    actix_web::rt::spawn(process::reaper(core));
    actix_web::rt::spawn(web::metrics::upkeep(metrics_upkeep));
    Ok(server)
}
