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

#[cfg(test)]
mod tests {
    use actix_web::http::StatusCode;
    use actix_web::{test, web, App, HttpResponse};

    use super::super::page;

    crate::web::door_error!(
        /// A door's error, to see that a refused page keeps the pages' headers.
        TestError,
        "test"
    );

    async fn headers_of(tls: bool, path: &str) -> Vec<(String, String)> {
        let app = test::init_service(
            App::new()
                .wrap_fn(move |req, srv| super::security(req, srv, tls))
                .route("/page", web::get().to(|| async { page::html(StatusCode::OK, "<p>") }))
                .route(
                    "/refused",
                    web::get().to(|| async {
                        Err::<HttpResponse, _>(TestError::from(page::json(StatusCode::GONE, Some("gone"))))
                    }),
                )
                .route("/asset", web::get().to(|| async { page::asset("text/css", "p{}") }))
                .route("/api", web::get().to(|| async { HttpResponse::Ok().body("{}") })),
        )
        .await;
        let res = test::call_service(&app, test::TestRequest::get().uri(path).to_request()).await;
        let mut out: Vec<_> =
            res.headers().iter().map(|(k, v)| (k.to_string(), v.to_str().unwrap().to_string())).collect();
        out.sort();
        out
    }

    fn names(h: &[(String, String)]) -> Vec<&str> {
        h.iter().map(|(k, _)| k.as_str()).filter(|k| *k != "content-type" && *k != "cache-control").collect()
    }

    #[actix_rt::test]
    async fn pages_get_the_strict_set_and_every_answer_nosniff() {
        let page = headers_of(false, "/page").await;
        assert_eq!(
            names(&page),
            ["content-security-policy", "referrer-policy", "x-content-type-options", "x-frame-options"]
        );
        assert!(page.contains(&("cache-control".into(), "no-store".into())));
        assert_eq!(names(&headers_of(false, "/refused").await), names(&page));
        assert_eq!(names(&headers_of(false, "/asset").await), ["x-content-type-options"]);
        assert_eq!(names(&headers_of(false, "/api").await), ["x-content-type-options"]);
        assert_eq!(names(&headers_of(false, "/nothing").await), ["x-content-type-options"]);
        assert_eq!(names(&headers_of(true, "/api").await), ["strict-transport-security", "x-content-type-options"]);
    }
}
