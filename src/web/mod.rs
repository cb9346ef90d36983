//! What every route shares: the access log, request bodies read under a limit and a deadline, and
//! /healthz. Who the client is, and the connection caps, are in `net`.
//! The built-in pages (password reset, device registration) are in `pages`, the device page and
//! its signed API in `device`.

pub mod device;
pub mod healthcheck;
pub mod metrics;
pub mod net;
pub mod openapi;
pub mod pages;
pub mod tls;

/// Where cli.rs finds it; it lives with the process's other plumbing.
pub use crate::process::notify_systemd;

use std::future::Future;
use std::time::Instant;

use actix_web::body::MessageBody;
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::web::{Bytes, BytesMut};
use actix_web::{web, HttpRequest, HttpResponse};
use futures_util::StreamExt;

use crate::core::Core;

/// The access log: client address (`net::client`), method, the route *pattern* and status, and
/// time taken. Never the query string (ForePaaS tokens travel there), the raw path (link codes
/// travel there), headers or bodies.
pub fn access_log<S, B>(
    req: ServiceRequest,
    srv: &S,
) -> impl Future<Output = Result<ServiceResponse<B>, actix_web::Error>> + use<S, B>
where
    S: actix_web::dev::Service<ServiceRequest, Response = ServiceResponse<B>, Error = actix_web::Error>,
    B: MessageBody,
{
    let start = Instant::now();
    let method = req.method().clone();
    let route = req.match_pattern().unwrap_or_else(|| "(no route)".to_string());
    let peer = match req.app_data::<web::Data<Core>>() {
        Some(core) => net::client(req.request(), &core.config).addr,
        None => req.peer_addr().map(|a| a.ip()),
    }
    .map(|a| a.to_string())
    .unwrap_or_else(|| "-".into());
    let metrics = req.app_data::<web::Data<metrics::Metrics>>().cloned();
    let fut = srv.call(req);
    async move {
        let res = fut.await;
        let status = match &res {
            Ok(r) => r.status().as_u16(),
            Err(e) => e.as_response_error().status_code().as_u16(),
        };
        let elapsed = start.elapsed();
        if let Some(m) = metrics {
            m.record(&route, status, elapsed);
        }
        log::info!(target: "gatehouse::access", "{peer} {method} {route} {status} {:.1}ms", elapsed.as_secs_f64() * 1000.0);
        res
    }
}

/// The CMS session's cookie: smartserver sets it, forward auth reads it.
pub const CMS_COOKIE: &str = "cmsSID";

/// `Basic base64(id:secret)`: the id (no colon, 1 to 64 bytes) and the secret (1 to 1024 bytes).
/// Client credentials (IQM, the OAuth doors) and a device's API key come this way.
pub fn parse_basic(value: &str) -> Option<(String, crate::core::Secret)> {
    use base64::Engine;
    let (scheme, b64) = value.trim().split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let raw = base64::engine::general_purpose::STANDARD.decode(b64.trim()).ok()?;
    let text = String::from_utf8(raw).ok()?;
    let (id, secret) = text.split_once(':')?;
    if id.is_empty() || id.len() > 64 || secret.is_empty() || secret.len() > 1024 {
        return None;
    }
    Some((id.to_string(), crate::core::Secret::new(secret)))
}

/// Adds `Retry-After` to an error answer whose error has one (throttled, busy).
pub fn with_retry_after(mut res: HttpResponse, e: &crate::core::Error) -> HttpResponse {
    if let Some(secs) = e.retry_after_secs() {
        if let Ok(v) = actix_web::http::header::HeaderValue::from_str(&secs.to_string()) {
            res.headers_mut().insert(actix_web::http::header::RETRY_AFTER, v);
        }
    }
    res
}

/// Why a body could not be read.
#[derive(Debug)]
pub enum BodyError {
    /// Larger than the limit (given), by its Content-Length or by what arrived.
    TooLarge(usize),
    /// Not all there within `http.body_timeout`.
    TimedOut,
    Broken,
}

/// Reads a request body of at most `http.max_body_bytes` within `http.body_timeout`. A larger
/// Content-Length is refused before anything is read.
pub async fn read_body(
    req: &HttpRequest,
    mut payload: web::Payload,
    http: &crate::config::Http,
) -> Result<Bytes, BodyError> {
    let limit = http.max_body_bytes;
    let declared = req
        .headers()
        .get(actix_web::http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit as u64) {
        return Err(BodyError::TooLarge(limit));
    }
    let read = async {
        let mut buf = BytesMut::new();
        while let Some(chunk) = payload.next().await {
            let chunk = chunk.map_err(|_| BodyError::Broken)?;
            if buf.len() + chunk.len() > limit {
                return Err(BodyError::TooLarge(limit));
            }
            buf.extend_from_slice(&chunk);
        }
        Ok(buf.freeze())
    };
    tokio::time::timeout(http.body_timeout.0, read).await.unwrap_or(Err(BodyError::TimedOut))
}

/// The media type of a request, lower-cased, without parameters; None when absent.
pub fn media_type(req: &actix_web::HttpRequest) -> Option<String> {
    req.headers()
        .get(actix_web::http::header::CONTENT_TYPE)
        .map(|v| v.to_str().unwrap_or("invalid").split(';').next().unwrap_or("").trim().to_ascii_lowercase())
}

/// One trivial query, where a token check makes one read: the ceiling a check is measured against.
async fn healthz(core: web::Data<Core>) -> HttpResponse {
    match core.into_inner().quick(|c| c.health()).await {
        Ok(()) => HttpResponse::Ok().content_type("text/plain; charset=utf-8").body("ok\n"),
        Err(_) => {
            HttpResponse::ServiceUnavailable().content_type("text/plain; charset=utf-8").body("database unavailable\n")
        }
    }
}

pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.route("/healthz", web::get().to(healthz));
    pages::routes(cfg);
    device::routes(cfg);
    openapi::routes(cfg);
    metrics::routes(cfg);
}
