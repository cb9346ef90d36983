//! The security headers, set in one place for every door: every answer gets
//! `X-Content-Type-Options: nosniff` (and `Strict-Transport-Security` over TLS); an answer its door
//! built as a page (`page::answer`, which marks it with [`Page`]) also gets the pages' stricter
//! set: the Content-Security-Policy (no inline script, nothing from elsewhere, no framing),
//! `X-Frame-Options` and `Referrer-Policy`. A header a door set itself is left as it is.

use std::future::Future;

use actix_web::body::MessageBody;
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::header::{HeaderMap, HeaderName, HeaderValue};

/// Marks an answer (in its extensions) as a page, for the pages' headers.
#[derive(Clone, Copy, Debug)]
pub struct Page;

const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; img-src 'self'; \
                   form-action 'self'; base-uri 'none'; frame-ancestors 'none'";

/// The middleware: `tls` is whether the server answers over HTTPS.
pub fn security<S, B>(
    req: ServiceRequest,
    srv: &S,
    tls: bool,
) -> impl Future<Output = Result<ServiceResponse<B>, actix_web::Error>> + use<S, B>
where
    S: actix_web::dev::Service<ServiceRequest, Response = ServiceResponse<B>, Error = actix_web::Error>,
    B: MessageBody,
{
    let fut = srv.call(req);
    async move {
        let mut res = fut.await?;
        let page = res.response().extensions().contains::<Page>();
        let headers = res.headers_mut();
        add(headers, "x-content-type-options", "nosniff");
        if tls {
            add(headers, "strict-transport-security", "max-age=31536000");
        }
        if page {
            add(headers, "content-security-policy", CSP);
            add(headers, "x-frame-options", "DENY");
            add(headers, "referrer-policy", "no-referrer");
        }
        Ok(res)
    }
}

fn add(headers: &mut HeaderMap, name: &'static str, value: &'static str) {
    let name = HeaderName::from_static(name);
    if !headers.contains_key(&name) {
        headers.insert(name, HeaderValue::from_static(value));
    }
}
