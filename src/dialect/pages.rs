//! The built-in pages and their assets, embedded from `static/`: no external asset, no inline
//! script, so the Content-Security-Policy (`web::headers`) can forbid both. The device page and
//! its API are a door of their own, `device`.

use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest, HttpResponse};
use serde::Serialize;

use crate::core::{Core, Error, Secret};
use crate::web::page::{self, asset, html};
use crate::web::{media_type, net, read_body, BodyError};

const RESET_HTML: &str = include_str!("../../static/reset.html");
const GONE_HTML: &str = include_str!("../../static/gone.html");
const CSS: &str = include_str!("../../static/gatehouse.css");
const RESET_JS: &str = include_str!("../../static/reset.js");
const REGISTER_HTML: &str = include_str!("../../static/register.html");
const REGISTER_JS: &str = include_str!("../../static/register.js");
const PASSKEY_JS: &str = include_str!("../../static/passkey.js");

/// Each page and asset answers HEAD as GET (actix sends the headers, Content-Length included,
/// without the body).
pub fn routes(cfg: &mut web::ServiceConfig) {
    let css = || async { asset("text/css; charset=utf-8", CSS) };
    let reset_js = || async { asset("text/javascript; charset=utf-8", RESET_JS) };
    let register_js = || async { asset("text/javascript; charset=utf-8", REGISTER_JS) };
    let passkey_js = || async { asset("text/javascript; charset=utf-8", PASSKEY_JS) };
    cfg.service(web::resource("/static/gatehouse.css").route(web::get().to(css)).route(web::head().to(css)))
        .service(web::resource("/static/reset.js").route(web::get().to(reset_js)).route(web::head().to(reset_js)))
        .service(
            web::resource("/static/register.js").route(web::get().to(register_js)).route(web::head().to(register_js)),
        )
        .service(web::resource("/static/passkey.js").route(web::get().to(passkey_js)).route(web::head().to(passkey_js)))
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

crate::web::door_error!(
    /// A refused page or page call: the gone page ([`gone_page`]), or the pages' JSON through
    /// [`error`] (the core's errors) or [`refused`].
    PagesError,
    "the pages"
);

impl From<Error> for PagesError {
    fn from(e: Error) -> PagesError {
        error(&e).into()
    }
}

fn refused(status: StatusCode, reason: &str) -> PagesError {
    page::json(status, Some(reason)).into()
}

/// The one mapping from the core's errors to the pages' answers.
fn error(e: &Error) -> HttpResponse {
    match e {
        Error::Gone => page::json(StatusCode::GONE, Some("This link no longer works")),
        Error::Invalid { .. } => page::json(StatusCode::BAD_REQUEST, Some(&e.to_string())),
        Error::Internal(id) => {
            page::json(StatusCode::INTERNAL_SERVER_ERROR, Some(&format!("Internal error (id {id})")))
        }
        Error::Busy => crate::web::with_retry_after(
            page::json(StatusCode::SERVICE_UNAVAILABLE, Some("Server busy, retry later")),
            e,
        ),
        Error::BadCredentials
        | Error::BadClient
        | Error::BadToken
        | Error::WrongPassword
        | Error::Blocked
        | Error::NotMember
        | Error::UnknownApp(_)
        | Error::UnknownUser(_)
        | Error::UnknownApiKey
        | Error::Exists(_)
        | Error::Lost
        | Error::NoRoom
        | Error::SecondFactorRequired
        | Error::Throttled { .. } => page::json(StatusCode::BAD_REQUEST, Some(&e.to_string())),
    }
}

/// A page that cannot be shown is the gone page: 410 when [`error`] says the link is gone, 500
/// for any other error.
fn gone_page(e: &Error) -> PagesError {
    let status = match error(e).status() {
        StatusCode::GONE => StatusCode::GONE,
        _ => StatusCode::INTERNAL_SERVER_ERROR,
    };
    html(status, GONE_HTML).into()
}

async fn reset_page(req: HttpRequest, core: web::Data<Core>) -> Result<HttpResponse, PagesError> {
    // Showing the page does not use the link: mail scanners that open links cannot burn it.
    let code = code(&req).ok_or_else(|| gone_page(&Error::Gone))?;
    core.into_inner().call(move |c| c.reset_link_live(&code)).await.map_err(|e| gone_page(&e))?;
    Ok(html(StatusCode::OK, RESET_HTML))
}

/// A JSON body of the pages, or the answer that refuses it.
async fn page_body(req: &HttpRequest, payload: web::Payload, core: &Core) -> Result<serde_json::Value, PagesError> {
    if media_type(req).as_deref() != Some("application/json") {
        return Err(refused(StatusCode::UNSUPPORTED_MEDIA_TYPE, "Content-Type must be application/json"));
    }
    let body = read_body(req, payload, &core.config.http).await.map_err(|e| match e {
        BodyError::TooLarge(_) => refused(StatusCode::PAYLOAD_TOO_LARGE, "The request body is too large"),
        BodyError::TimedOut => refused(StatusCode::REQUEST_TIMEOUT, "The request body came too slowly"),
        BodyError::Broken => refused(StatusCode::BAD_REQUEST, "Incomplete body"),
    })?;
    match serde_json::from_slice::<serde_json::Value>(&body) {
        Ok(v @ serde_json::Value::Object(_)) => Ok(v),
        _ => Err(refused(StatusCode::BAD_REQUEST, "The body must be a JSON object")),
    }
}

async fn register_page(req: HttpRequest, core: web::Data<Core>) -> Result<HttpResponse, PagesError> {
    let code = code(&req).ok_or_else(|| gone_page(&Error::Gone))?;
    let info = core.into_inner().call(move |c| c.registration_info(&code)).await.map_err(|e| gone_page(&e))?;
    Ok(html(
        StatusCode::OK,
        REGISTER_HTML
            .replace("{{display_name}}", &escape(&info.display_name))
            .replace("{{app_id}}", &escape(&info.app_id)),
    ))
}

#[derive(Serialize)]
struct RegisteredAnswer<'a> {
    app_id: &'a str,
    user_id: &'a str,
    device_id: i64,
    apikey: &'a str,
    secretkey: &'a str,
}

async fn register_post(
    req: HttpRequest,
    payload: web::Payload,
    core: web::Data<Core>,
) -> Result<HttpResponse, PagesError> {
    let core = core.into_inner();
    let body = page_body(&req, payload, &core).await?;
    let name = body
        .get("device_name")
        .and_then(|v| v.as_str())
        .map(str::to_string)
        .ok_or_else(|| refused(StatusCode::BAD_REQUEST, "device_name is required"))?;
    let public_key = match body.get("public_key") {
        None | Some(serde_json::Value::Null) => None,
        Some(k) => Some(
            k.as_str()
                .and_then(crate::core::signins::unb64url)
                .ok_or_else(|| refused(StatusCode::BAD_REQUEST, "public_key must be base64url"))?,
        ),
    };
    let code = code(&req).ok_or(Error::Gone)?;
    let caller = net::caller(&req, &core.config, "page");
    let r = core.call(move |c| c.register_device(&caller, &code, &name, public_key.as_deref())).await?;
    let answer = RegisteredAnswer {
        app_id: &r.app_id,
        user_id: &r.login,
        device_id: r.device_id,
        apikey: &r.key.apikey,
        secretkey: r.key.secretkey.expose(),
    };
    Ok(page::answer(StatusCode::CREATED)
        .content_type("application/json")
        .body(serde_json::to_string(&answer).unwrap_or_default()))
}

async fn reset_post(
    req: HttpRequest,
    payload: web::Payload,
    core: web::Data<Core>,
) -> Result<HttpResponse, PagesError> {
    let core = core.into_inner();
    let body = page_body(&req, payload, &core).await?;
    let password = body
        .get("password")
        .and_then(|v| v.as_str())
        .map(Secret::new)
        .ok_or_else(|| refused(StatusCode::BAD_REQUEST, "password is required"))?;
    let code = code(&req).ok_or(Error::Gone)?;
    let caller = net::caller(&req, &core.config, "page");
    core.call(move |c| c.reset_password(&caller, &code, &password)).await?;
    Ok(page::json(StatusCode::OK, None))
}
