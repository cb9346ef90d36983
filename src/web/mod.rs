//! What every door shares: the access log, the security headers (`headers`), request bodies read
//! under a limit and a deadline, a door's refusal ready to send ([`Answer`], `door_error!`), and
//! /healthz. Who the client is, and the connection caps, are in `net`; the answers of the doors
//! that serve pages in `page`, their forms (CSRF, the SSO cookie) in `forms`; /metrics, /openapi.json and TLS in their own modules.

pub mod backchannel;
pub mod forms;
pub mod headers;
pub mod healthcheck;
pub mod metrics;
pub mod net;
pub mod openapi;
pub mod page;
pub mod tls;

use std::future::Future;
use std::time::Instant;

use actix_web::body::MessageBody;
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::header::HeaderMap;
use actix_web::http::StatusCode;
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

/// A JSON answer of the OAuth doors (RFC 6749 §5.1): never cached.
pub fn oauth_json(status: StatusCode, body: &serde_json::Value) -> HttpResponse {
    HttpResponse::build(status)
        .content_type("application/json")
        .insert_header(("Cache-Control", "no-store"))
        .insert_header(("Pragma", "no-cache"))
        .body(body.to_string())
}

/// An OAuth error answer (RFC 6749 §5.2): `{"error","error_description"}`.
pub fn oauth_error(status: StatusCode, error: &str, description: &str) -> HttpResponse {
    oauth_json(status, &serde_json::json!({"error": error, "error_description": description}))
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

/// A door's answer to a request it refuses, ready to send: the status, headers and body its own
/// answer functions built. Each door's error type holds one, so that actix's `ResponseError` can
/// send it (and the access log and metrics see it as any other answer).
#[derive(Debug)]
pub struct Answer {
    status: StatusCode,
    headers: HeaderMap,
    body: Bytes,
    page: bool,
}

impl From<HttpResponse> for Answer {
    fn from(res: HttpResponse) -> Answer {
        let page = res.extensions().contains::<headers::Page>();
        let (head, body) = res.into_parts();
        // The doors' bodies are strings and bytes, never streams.
        let body = body.try_into_bytes().unwrap_or_default();
        Answer { status: head.status(), headers: head.headers().clone(), body, page }
    }
}

impl Answer {
    pub fn status(&self) -> StatusCode {
        self.status
    }

    /// The answer, as the door built it.
    pub fn response(&self) -> HttpResponse {
        let mut res = HttpResponse::with_body(self.status, self.body.clone()).map_into_boxed_body();
        *res.headers_mut() = self.headers.clone();
        if self.page {
            res.extensions_mut().insert(headers::Page);
        }
        res
    }
}

/// Declares a door's error type: a ready [`Answer`] with `impl ResponseError`, so that the door's
/// handlers return `Result<HttpResponse, ThatError>` and use `?`. Each door says how its errors
/// come to be (`From<core::Error>` through its one mapping, or a mapping that takes the
/// request's context); this only sends them.
macro_rules! door_error {
    ($(#[$doc:meta])* $name:ident, $door:literal) => {
        $(#[$doc])*
        #[derive(Debug)]
        pub struct $name($crate::web::Answer);

        impl From<actix_web::HttpResponse> for $name {
            fn from(res: actix_web::HttpResponse) -> $name {
                $name($crate::web::Answer::from(res))
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                write!(f, concat!($door, " refused the request: {}"), self.0.status())
            }
        }

        impl actix_web::ResponseError for $name {
            fn status_code(&self) -> actix_web::http::StatusCode {
                self.0.status()
            }

            fn error_response(&self) -> actix_web::HttpResponse {
                self.0.response()
            }
        }
    };
}
pub(crate) use door_error;

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
    openapi::routes(cfg);
    metrics::routes(cfg);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_answer_is_sent_as_the_door_built_it() {
        let mut built = HttpResponse::build(StatusCode::TOO_MANY_REQUESTS);
        built
            .content_type("application/json")
            .insert_header(("Retry-After", "3"))
            .extensions_mut()
            .insert(headers::Page);
        let answer = Answer::from(built.body(r#"{"success":false}"#));
        for _ in 0..2 {
            let res = answer.response();
            assert_eq!(res.status(), StatusCode::TOO_MANY_REQUESTS);
            assert_eq!(res.headers().get("content-type").unwrap(), "application/json");
            assert_eq!(res.headers().get("retry-after").unwrap(), "3");
            assert!(res.extensions().contains::<headers::Page>());
            assert_eq!(res.into_body().try_into_bytes().unwrap(), r#"{"success":false}"#);
        }
        assert!(!Answer::from(HttpResponse::Ok().finish()).response().extensions().contains::<headers::Page>());
    }
}
