//! The built-in pages and their assets, embedded from `static/`: no external asset, no inline
//! script, so the Content-Security-Policy can forbid both. The device page's own API is `device`.

use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest, HttpResponse, HttpResponseBuilder};
use serde::Serialize;

use crate::core::{Core, Error, Secret};
use crate::web::{media_type, net, read_body};

const RESET_HTML: &str = include_str!("../../static/reset.html");
const GONE_HTML: &str = include_str!("../../static/gone.html");
const CSS: &str = include_str!("../../static/gatehouse.css");
const RESET_JS: &str = include_str!("../../static/reset.js");
const REGISTER_HTML: &str = include_str!("../../static/register.html");
const REGISTER_JS: &str = include_str!("../../static/register.js");

const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; img-src 'self'; \
                   form-action 'self'; base-uri 'none'; frame-ancestors 'none'";

/// Each page and asset answers HEAD as GET (actix sends the headers, Content-Length included,
/// without the body).
pub fn routes(cfg: &mut web::ServiceConfig) {
    let css = || async { asset("text/css; charset=utf-8", CSS) };
    let reset_js = || async { asset("text/javascript; charset=utf-8", RESET_JS) };
    let register_js = || async { asset("text/javascript; charset=utf-8", REGISTER_JS) };
    cfg.service(web::resource("/static/gatehouse.css").route(web::get().to(css)).route(web::head().to(css)))
        .service(web::resource("/static/reset.js").route(web::get().to(reset_js)).route(web::head().to(reset_js)))
        .service(
            web::resource("/static/register.js").route(web::get().to(register_js)).route(web::head().to(register_js)),
        )
        .service(
            web::resource("/reset/{code}")
                .route(web::get().to(reset_page))
                .route(web::head().to(reset_page))
                .route(web::post().to(reset_post)),
        )
        .service(
            web::resource("/register/{code}")
                .route(web::get().to(register_page))
                .route(web::head().to(register_page))
                .route(web::post().to(register_post)),
        );
}

/// Headers every page and page answer carries.
pub(super) fn guarded(status: StatusCode) -> HttpResponseBuilder {
    let mut res = HttpResponse::build(status);
    res.insert_header(("Content-Security-Policy", CSP))
        .insert_header(("X-Content-Type-Options", "nosniff"))
        .insert_header(("X-Frame-Options", "DENY"))
        .insert_header(("Referrer-Policy", "no-referrer"))
        .insert_header(("Cache-Control", "no-store"));
    res
}

pub(super) fn asset(content_type: &str, body: &'static str) -> HttpResponse {
    HttpResponse::Ok()
        .content_type(content_type.to_string())
        .insert_header(("X-Content-Type-Options", "nosniff"))
        .insert_header(("Cache-Control", "no-cache"))
        .body(body)
}

pub(super) fn html(status: StatusCode, body: impl Into<String>) -> HttpResponse {
    guarded(status).content_type("text/html; charset=utf-8").body(body.into())
}

/// Text made safe to put in HTML.
fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// A link code as it appears in a path: 64 hex characters. Anything else cannot be a live link.
fn code(req: &HttpRequest) -> Option<Secret> {
    let c = req.match_info().get("code")?;
    (c.len() == 64 && c.bytes().all(|b| b.is_ascii_hexdigit())).then(|| Secret::new(c))
}

async fn reset_page(req: HttpRequest, core: web::Data<Core>) -> HttpResponse {
    // Showing the page does not use the link: mail scanners that open links cannot burn it.
    let Some(code) = code(&req) else { return html(StatusCode::GONE, GONE_HTML) };
    match core.into_inner().call(move |c| c.reset_link_live(&code)).await {
        Ok(()) => html(StatusCode::OK, RESET_HTML),
        Err(Error::Gone) => html(StatusCode::GONE, GONE_HTML),
        Err(_) => html(StatusCode::INTERNAL_SERVER_ERROR, GONE_HTML),
    }
}

#[derive(Serialize)]
struct PageAnswer<'a> {
    success: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<&'a str>,
}

pub(super) fn page_json(status: StatusCode, error: Option<&str>) -> HttpResponse {
    let body = serde_json::to_string(&PageAnswer { success: error.is_none(), error }).unwrap_or_default();
    guarded(status).content_type("application/json").body(body)
}

/// A JSON body of the pages, or the answer that refuses it.
pub(super) async fn page_body(
    req: &HttpRequest,
    payload: web::Payload,
    core: &Core,
) -> Result<serde_json::Value, HttpResponse> {
    if media_type(req).as_deref() != Some("application/json") {
        return Err(page_json(StatusCode::UNSUPPORTED_MEDIA_TYPE, Some("Content-Type must be application/json")));
    }
    let body = match read_body(req, payload, &core.config.http).await {
        Ok(b) => b,
        Err(crate::web::BodyError::TooLarge(_)) => {
            return Err(page_json(StatusCode::PAYLOAD_TOO_LARGE, Some("The request body is too large")))
        }
        Err(crate::web::BodyError::TimedOut) => {
            return Err(page_json(StatusCode::REQUEST_TIMEOUT, Some("The request body came too slowly")))
        }
        Err(crate::web::BodyError::Broken) => return Err(page_json(StatusCode::BAD_REQUEST, Some("Incomplete body"))),
    };
    match serde_json::from_slice::<serde_json::Value>(&body) {
        Ok(v @ serde_json::Value::Object(_)) => Ok(v),
        _ => Err(page_json(StatusCode::BAD_REQUEST, Some("The body must be a JSON object"))),
    }
}

fn page_error(e: &Error) -> HttpResponse {
    match e {
        Error::Gone => page_json(StatusCode::GONE, Some("This link no longer works")),
        Error::Invalid { .. } => page_json(StatusCode::BAD_REQUEST, Some(&e.to_string())),
        Error::Internal(id) => page_json(StatusCode::INTERNAL_SERVER_ERROR, Some(&format!("Internal error (id {id})"))),
        Error::Busy => crate::web::with_retry_after(
            page_json(StatusCode::SERVICE_UNAVAILABLE, Some("Server busy, retry later")),
            e,
        ),
        e => page_json(StatusCode::BAD_REQUEST, Some(&e.to_string())),
    }
}

async fn register_page(req: HttpRequest, core: web::Data<Core>) -> HttpResponse {
    let Some(code) = code(&req) else { return html(StatusCode::GONE, GONE_HTML) };
    match core.into_inner().call(move |c| c.registration_info(&code)).await {
        Ok(info) => html(
            StatusCode::OK,
            REGISTER_HTML
                .replace("{{display_name}}", &escape(&info.display_name))
                .replace("{{app_id}}", &escape(&info.app_id)),
        ),
        Err(Error::Gone) => html(StatusCode::GONE, GONE_HTML),
        Err(_) => html(StatusCode::INTERNAL_SERVER_ERROR, GONE_HTML),
    }
}

#[derive(Serialize)]
struct RegisteredAnswer<'a> {
    app_id: &'a str,
    user_id: &'a str,
    device_id: i64,
    apikey: &'a str,
    secretkey: &'a str,
}

async fn register_post(req: HttpRequest, payload: web::Payload, core: web::Data<Core>) -> HttpResponse {
    let core = core.into_inner();
    let body = match page_body(&req, payload, &core).await {
        Ok(b) => b,
        Err(res) => return res,
    };
    let Some(name) = body.get("device_name").and_then(|v| v.as_str()).map(str::to_string) else {
        return page_json(StatusCode::BAD_REQUEST, Some("device_name is required"));
    };
    let public_key = match body.get("public_key") {
        None | Some(serde_json::Value::Null) => None,
        Some(k) => match k.as_str().and_then(crate::core::signins::unb64url) {
            Some(k) => Some(k),
            None => return page_json(StatusCode::BAD_REQUEST, Some("public_key must be base64url")),
        },
    };
    let Some(code) = code(&req) else { return page_json(StatusCode::GONE, Some("This link no longer works")) };
    let caller = net::caller(&req, &core.config, "page");
    match core.call(move |c| c.register_device(&caller, &code, &name, public_key.as_deref())).await {
        Ok(r) => {
            let answer = RegisteredAnswer {
                app_id: &r.app_id,
                user_id: &r.login,
                device_id: r.device_id,
                apikey: &r.key.apikey,
                secretkey: r.key.secretkey.expose(),
            };
            guarded(StatusCode::CREATED)
                .content_type("application/json")
                .body(serde_json::to_string(&answer).unwrap_or_default())
        }
        Err(e) => page_error(&e),
    }
}

async fn reset_post(req: HttpRequest, payload: web::Payload, core: web::Data<Core>) -> HttpResponse {
    let core = core.into_inner();
    let body = match page_body(&req, payload, &core).await {
        Ok(b) => b,
        Err(res) => return res,
    };
    let Some(password) = body.get("password").and_then(|v| v.as_str()).map(Secret::new) else {
        return page_json(StatusCode::BAD_REQUEST, Some("password is required"));
    };
    let Some(code) = code(&req) else { return page_json(StatusCode::GONE, Some("This link no longer works")) };
    let caller = net::caller(&req, &core.config, "page");
    match core.call(move |c| c.reset_password(&caller, &code, &password)).await {
        Ok(()) => page_json(StatusCode::OK, None),
        Err(e) => page_error(&e),
    }
}
