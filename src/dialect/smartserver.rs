//! SmartServer CMS IAP/REST authentication (`/cms/iap`), as seed 002 and the field notes show it.
//!
//! - `GET  /cms/iap/auth/sessionTimeout` → the session timeout in milliseconds, a bare number.
//! - `POST /cms/iap/auth/login` `{"username","password"}` (application/json) → the user object and
//!   a `cmsSID` cookie (HttpOnly, SameSite=Strict, Path=/cms, Secure over TLS or when configured).
//! - `PUT  /cms/iap/auth/logout` → ends the cookie's session and clears the cookie.
//! - `GET  /cms/iap/users/current` → the logged-in user; 401 without a live session.
//! - `POST`/`PUT /cms/iap/auth/resetPwd` `{"userName","emailAddress"}` → 200, empty, whether or not
//!   they matched; the link is mailed off the request path.
//!
//! Errors are JSON in the envelope of the Spring services the CMS runs on:
//! `{"timestamp":"...Z","status":401,"error":"Unauthorized","message":"...","path":"/cms/iap/auth/login"}`.

use std::collections::HashMap;

use actix_web::cookie::{Cookie, SameSite};
use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest, HttpResponse};
use serde::Serialize;

use crate::core::reset::CMS_RESET_MAIL;
use crate::core::sessions::TokenKind;
use crate::core::{iso8601, now_ms, text, Core, Error, Secret, User, APP_CMS};
use crate::web::{media_type, net, read_body, BodyError, CMS_COOKIE as COOKIE};

const JSON: &str = "application/json";

pub fn routes(cfg: &mut web::ServiceConfig) {
    let wrong = || {
        web::to(|req: HttpRequest| async move { failure(&req, StatusCode::METHOD_NOT_ALLOWED, "Method not allowed") })
    };
    cfg.service(
        web::scope("/cms/iap")
            .service(
                web::resource("/auth/sessionTimeout").route(web::get().to(session_timeout)).default_service(wrong()),
            )
            .service(web::resource("/auth/login").route(web::post().to(login)).default_service(wrong()))
            .service(web::resource("/auth/logout").route(web::put().to(logout)).default_service(wrong()))
            .service(
                web::resource("/auth/resetPwd")
                    .route(web::post().to(reset_pwd))
                    .route(web::put().to(reset_pwd))
                    .default_service(wrong()),
            )
            .service(web::resource("/users/current").route(web::get().to(current_user)).default_service(wrong()))
            .default_service(web::to(
                |req: HttpRequest| async move { failure(&req, StatusCode::NOT_FOUND, "Not found") },
            )),
    );
}

#[derive(Serialize)]
struct Failure<'a> {
    timestamp: String,
    status: u16,
    error: &'a str,
    message: &'a str,
    path: &'a str,
}

fn failure(req: &HttpRequest, status: StatusCode, message: &str) -> HttpResponse {
    let body = Failure {
        timestamp: iso8601(now_ms()),
        status: status.as_u16(),
        error: status.canonical_reason().unwrap_or("Error"),
        message,
        path: req.path(),
    };
    HttpResponse::build(status)
        .content_type(JSON)
        .insert_header(("Cache-Control", "no-store"))
        .body(serde_json::to_string(&body).unwrap_or_default())
}

crate::web::door_error!(
    /// A refused CMS call, in the Spring envelope (which names the request's path): built by
    /// [`error`] (the core's errors) or [`refused`].
    SmartserverError,
    "SmartServer"
);

fn refused(req: &HttpRequest, status: StatusCode, message: &str) -> SmartserverError {
    failure(req, status, message).into()
}

/// The one mapping from the core's errors to this dialect's answers.
fn error(req: &HttpRequest, e: &Error) -> SmartserverError {
    let (status, message) = match e {
        Error::Invalid { .. } => (StatusCode::BAD_REQUEST, e.to_string()),
        Error::BadCredentials | Error::BadClient | Error::UnknownUser(_) => {
            (StatusCode::UNAUTHORIZED, "Bad credentials".into())
        }
        Error::BadToken => (StatusCode::UNAUTHORIZED, "No valid session".into()),
        Error::WrongPassword => (StatusCode::FORBIDDEN, "Wrong password".into()),
        Error::Blocked => (StatusCode::FORBIDDEN, "User is blocked".into()),
        Error::Lost => (StatusCode::FORBIDDEN, "Device reported lost".into()),
        Error::SecondFactorRequired => (StatusCode::FORBIDDEN, e.to_string()),
        Error::NotMember => (StatusCode::FORBIDDEN, "User may not use the CMS".into()),
        Error::UnknownApp(_) | Error::UnknownApiKey => (StatusCode::NOT_FOUND, "Not found".into()),
        Error::Exists(_) => (StatusCode::CONFLICT, "Already exists".into()),
        Error::Gone => (StatusCode::GONE, e.to_string()),
        Error::Busy => (StatusCode::SERVICE_UNAVAILABLE, "Server busy, retry later".into()),
        Error::NoRoom => {
            (StatusCode::SERVICE_UNAVAILABLE, "Message not queued: the server is short of disk space".into())
        }
        Error::Throttled { .. } => (StatusCode::TOO_MANY_REQUESTS, "Too many failed attempts, retry later".into()),
        Error::Internal(id) => (StatusCode::INTERNAL_SERVER_ERROR, format!("Internal error (id {id})")),
    };
    crate::web::with_retry_after(failure(req, status, &message), e).into()
}

/// The user object of the document and field notes, every field with its type.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct CmsUser {
    id: i64,
    user_name: String,
    first_name: String,
    last_name: String,
    email_address: Option<String>,
    locale: Option<String>,
    customer_id: Option<i64>,
    user_type: String,
    license_agreement_accepted: bool,
    demo_mode: String,
    google_api_key: Option<String>,
    blocked: bool,
}

impl CmsUser {
    fn new(u: &User, core: &Core) -> CmsUser {
        let cfg = &core.config.cms;
        CmsUser {
            id: u.id,
            user_name: u.login.clone(),
            first_name: u.first_name.clone(),
            last_name: u.last_name.clone(),
            email_address: u.email.clone(),
            locale: u.locale.clone(),
            customer_id: u.customer_id,
            user_type: u.user_type.clone(),
            license_agreement_accepted: u.license_accepted,
            demo_mode: u.demo_mode.clone().unwrap_or_else(|| cfg.demo_mode.clone()),
            google_api_key: (!cfg.google_api_key.is_empty()).then(|| cfg.google_api_key.clone()),
            blocked: u.blocked,
        }
    }
}

/// 200 with a user object, never cached.
fn user_answer(u: &User, core: &Core, cookie: Option<Cookie<'static>>) -> HttpResponse {
    let mut res = HttpResponse::Ok();
    res.content_type(JSON).insert_header(("Cache-Control", "no-store"));
    if let Some(c) = cookie {
        res.cookie(c);
    }
    res.body(serde_json::to_string(&CmsUser::new(u, core)).unwrap_or_default())
}

async fn session_timeout(core: web::Data<Core>) -> HttpResponse {
    HttpResponse::Ok().content_type(JSON).body(core.config.cms.session_timeout.millis().to_string())
}

/// A JSON object body of string fields, as the CMS requires (`Content-type: application/json`).
async fn json_fields(
    req: &HttpRequest,
    payload: web::Payload,
    http: &crate::config::Http,
    fields: &[&str],
) -> Result<Vec<String>, SmartserverError> {
    if media_type(req).as_deref() != Some("application/json") {
        return Err(refused(req, StatusCode::UNSUPPORTED_MEDIA_TYPE, "Content-Type must be application/json"));
    }
    let body = read_body(req, payload, http).await.map_err(|e| match e {
        BodyError::TooLarge(n) => {
            refused(req, StatusCode::PAYLOAD_TOO_LARGE, &format!("Request body larger than {n} bytes"))
        }
        BodyError::TimedOut => refused(req, StatusCode::REQUEST_TIMEOUT, "Request body not received in time"),
        BodyError::Broken => refused(req, StatusCode::BAD_REQUEST, "Incomplete request body"),
    })?;
    fields_of(&body, fields).map_err(|reason| refused(req, StatusCode::BAD_REQUEST, &reason))
}

/// The named string fields of a JSON object body, or the reason for a 400.
fn fields_of(body: &[u8], fields: &[&str]) -> Result<Vec<String>, String> {
    let map: HashMap<String, serde_json::Value> = match serde_json::from_slice(body) {
        Ok(serde_json::Value::Object(m)) => m.into_iter().collect(),
        Ok(_) => return Err("The body must be a JSON object".into()),
        Err(_) => return Err("Malformed JSON".into()),
    };
    let mut out = Vec::with_capacity(fields.len());
    for f in fields {
        match map.get(*f) {
            Some(serde_json::Value::String(s)) if !s.is_empty() && s.len() <= 1024 => out.push(s.clone()),
            Some(serde_json::Value::String(s)) if !s.is_empty() => {
                return Err(format!("{f} is longer than 1024 bytes"))
            }
            Some(serde_json::Value::String(_)) | None | Some(serde_json::Value::Null) => {
                return Err(format!("{f} is required"))
            }
            Some(_) => return Err(format!("{f} must be a string")),
        }
    }
    Ok(out)
}

fn session_cookie(req: &HttpRequest, core: &Core, value: String) -> Cookie<'static> {
    // Over HTTPS: ours, or a trusted proxy's (`net::client`); X-Forwarded-Proto from anyone else is not believed.
    let secure = core.config.cms.secure_cookie || net::client(req, &core.config).https;
    Cookie::build(COOKIE, value).path("/cms").http_only(true).same_site(SameSite::Strict).secure(secure).finish()
}

async fn login(
    req: HttpRequest,
    payload: web::Payload,
    core: web::Data<Core>,
) -> Result<HttpResponse, SmartserverError> {
    let fields = json_fields(&req, payload, &core.config.http, &["username", "password"]).await?;
    let [username, password]: [String; 2] =
        fields.try_into().map_err(|_| refused(&req, StatusCode::BAD_REQUEST, "username and password are required"))?;
    let password = Secret::new(password);
    let caller = net::caller(&req, &core.config, "smartserver");
    let core = core.into_inner();
    let signed_in = core
        .call_hashing(move |c| c.login_password(&caller, TokenKind::CmsSession, APP_CMS, &username, &password))
        .await
        .map_err(|e| error(&req, &e))?;
    let cookie = session_cookie(&req, &core, signed_in.token.expose().to_string());
    Ok(user_answer(&signed_in.user, &core, Some(cookie)))
}

fn session_of(req: &HttpRequest) -> Option<Secret> {
    req.cookie(COOKIE).map(|c| Secret::new(c.value())).filter(|s| !s.expose().is_empty())
}

async fn current_user(req: HttpRequest, core: web::Data<Core>) -> Result<HttpResponse, SmartserverError> {
    let token = session_of(&req).ok_or_else(|| refused(&req, StatusCode::UNAUTHORIZED, "No valid session"))?;
    let core = core.into_inner();
    let check = core.quick(move |c| c.check_token(TokenKind::CmsSession, &token, Some(APP_CMS)));
    let info = check.await.map_err(|e| error(&req, &e))?;
    Ok(user_answer(&info.user, &core, None))
}

async fn logout(req: HttpRequest, core: web::Data<Core>) -> Result<HttpResponse, SmartserverError> {
    if let Some(token) = session_of(&req) {
        // Logging out of a session that is already over is not an error: the cookie goes either way.
        let caller = net::caller(&req, &core.config, "smartserver");
        match core.into_inner().call(move |c| c.logout(&caller, TokenKind::CmsSession, &token, Some(APP_CMS))).await {
            Ok(()) | Err(Error::BadToken) => {}
            Err(e) => return Err(error(&req, &e)),
        }
    }
    let mut removal = Cookie::build(COOKIE, "").path("/cms").http_only(true).same_site(SameSite::Strict).finish();
    removal.make_removal();
    Ok(HttpResponse::Ok().insert_header(("Cache-Control", "no-store")).cookie(removal).finish())
}

async fn reset_pwd(
    req: HttpRequest,
    payload: web::Payload,
    core: web::Data<Core>,
) -> Result<HttpResponse, SmartserverError> {
    let fields = json_fields(&req, payload, &core.config.http, &["userName", "emailAddress"]).await?;
    let [user_name, email]: [String; 2] = fields
        .try_into()
        .map_err(|_| refused(&req, StatusCode::BAD_REQUEST, "userName and emailAddress are required"))?;
    // Text no login or address may hold is refused here, before the answer that says nothing.
    text::clean("userName", &user_name)
        .and_then(|_| text::clean("emailAddress", &email))
        .map_err(|e| error(&req, &e))?;
    // The lookup and the mail happen after the answer, so neither its bytes nor its time tell
    // whether the two matched.
    let caller = net::caller(&req, &core.config, "smartserver");
    let core = core.into_inner();
    actix_web::rt::spawn(async move {
        let _ = core
            .call(move |c| c.request_password_reset(&caller, &user_name, &email, Some(APP_CMS), &CMS_RESET_MAIL))
            .await;
    });
    Ok(HttpResponse::Ok().insert_header(("Cache-Control", "no-store")).finish())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn any_body_is_parsed_or_refused_without_panic(body in proptest::collection::vec(any::<u8>(), 0..512)) {
            let _ = fields_of(&body, &["username", "password"]);
        }

        #[test]
        fn credentials_parse_back(user in "\\PC{1,100}", password in "\\PC{1,100}") {
            let body = serde_json::to_vec(&serde_json::json!({"username": user, "password": password})).unwrap();
            prop_assert_eq!(fields_of(&body, &["username", "password"]).unwrap(), vec![user, password]);
        }
    }
}
