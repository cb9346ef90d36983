//! ForePaaS Identity Access Manager (`/iam`), as seed 000 and the field notes show it.
//!
//! - `POST /iam/login`: `auth_mode` `forepaas_id_resource_owner` (login, password, app_id) or
//!   `apikey` (apikey, secretkey, app_id optional), as JSON or form-encoded.
//! - `DELETE /iam/logout?app_id=&token=` → `{"success":true,"status":200,"duration":0.02}`.
//! - `GET /iam/checkSession?token=[&app_id=]` → the session; counts as a use.
//! - `POST /iam/passwordChange?app_id=&token=` `{password, oldpassword}` (field notes).
//! - Errors: `{"error":"...","success":false,"status":N,"duration":...}`, always
//!   `application/json; charset=utf-8`.

use std::collections::HashMap;
use std::time::Instant;

use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest, HttpResponse};
use serde::Serialize;

use crate::core::sessions::{SignedIn, TokenInfo, TokenKind};
use crate::core::{iso8601, now_ms, Core, Error, Secret, User};
use crate::web::{media_type, net, read_body, BodyError};

const JSON: &str = "application/json; charset=utf-8";

pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.service(
        web::scope("/iam")
            .service(web::resource("/login").route(web::post().to(login)).default_service(web::to(wrong_method)))
            .service(web::resource("/logout").route(web::delete().to(logout)).default_service(web::to(wrong_method)))
            .service(
                web::resource("/passwordChange")
                    .route(web::post().to(password_change))
                    .default_service(web::to(wrong_method)),
            )
            .service(
                web::resource("/checkSession")
                    .route(web::get().to(check_session))
                    .default_service(web::to(wrong_method)),
            )
            .default_service(web::to(not_found)),
    );
}

/// Seconds since the request started, as the envelope's `duration`.
fn duration(started: Instant) -> f64 {
    (started.elapsed().as_secs_f64() * 1000.0).round() / 1000.0
}

fn answer<T: Serialize>(status: StatusCode, body: &T) -> HttpResponse {
    let mut res = HttpResponse::build(status);
    res.content_type(JSON).insert_header(("Cache-Control", "no-store"));
    match serde_json::to_string(body) {
        Ok(text) => res.body(text),
        Err(e) => {
            let id = crate::core::internal(e);
            HttpResponse::InternalServerError()
                .content_type(JSON)
                .body(format!(r#"{{"error":"{id}","success":false,"status":500,"duration":0}}"#))
        }
    }
}

#[derive(Serialize)]
struct Envelope<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<&'a str>,
    success: bool,
    status: u16,
    duration: f64,
}

/// `{"success":true,"status":200,"duration":...}`, the answer of logout and passwordChange.
fn success(started: Instant) -> HttpResponse {
    answer(StatusCode::OK, &Envelope { error: None, success: true, status: 200, duration: duration(started) })
}

fn failure(status: StatusCode, error: &str, started: Instant) -> HttpResponse {
    answer(
        status,
        &Envelope { error: Some(error), success: false, status: status.as_u16(), duration: duration(started) },
    )
}

crate::web::door_error!(
    /// A refused ForePaaS call, in the envelope: built by [`error`] (the core's errors, with the
    /// request's start for `duration`) or [`bad_request`] and the body's refusals.
    ForepaasError,
    "ForePaaS"
);

/// The one mapping from the core's errors to this dialect's answers.
fn error(e: &Error, started: Instant) -> ForepaasError {
    let (status, text) = match e {
        Error::Invalid { .. } => (StatusCode::BAD_REQUEST, format!("Invalid parameter {e}")),
        Error::BadCredentials | Error::BadClient => (StatusCode::UNAUTHORIZED, "Unauthorized".into()),
        Error::BadToken => (StatusCode::UNAUTHORIZED, "Invalid token".into()),
        // Not 401: clients log the user out on 401, and the session is fine.
        Error::WrongPassword => (StatusCode::FORBIDDEN, "Wrong password".into()),
        Error::Blocked => (StatusCode::FORBIDDEN, "User is blocked".into()),
        Error::Lost => (StatusCode::FORBIDDEN, "Device reported lost".into()),
        Error::SecondFactorRequired => (StatusCode::FORBIDDEN, e.to_string()),
        Error::NotMember => (StatusCode::FORBIDDEN, "User is not allowed to access this application".into()),
        Error::UnknownApp(_) | Error::UnknownUser(_) | Error::UnknownApiKey => {
            (StatusCode::UNAUTHORIZED, "Unauthorized".into())
        }
        Error::Exists(_) => (StatusCode::CONFLICT, "Already exists".into()),
        Error::Gone => (StatusCode::GONE, "Gone".into()),
        Error::Busy => (StatusCode::SERVICE_UNAVAILABLE, "Server busy, retry later".into()),
        Error::NoRoom => {
            (StatusCode::SERVICE_UNAVAILABLE, "Message not queued: the server is short of disk space".into())
        }
        Error::Throttled { .. } => (StatusCode::TOO_MANY_REQUESTS, "Too many failed attempts, retry later".into()),
        Error::Internal(id) => (StatusCode::INTERNAL_SERVER_ERROR, format!("Internal error (id {id})")),
    };
    crate::web::with_retry_after(failure(status, &text, started), e).into()
}

fn bad_request(text: &str, started: Instant) -> ForepaasError {
    failure(StatusCode::BAD_REQUEST, text, started).into()
}

async fn wrong_method() -> HttpResponse {
    failure(StatusCode::METHOD_NOT_ALLOWED, "Method not allowed", Instant::now())
}

async fn not_found() -> HttpResponse {
    failure(StatusCode::NOT_FOUND, "Not found", Instant::now())
}

/// Parameters as strings, from a JSON object or a form. Values that are not strings, keys given
/// twice, and bodies of any other type are refused.
fn parse_params(req: &HttpRequest, body: &[u8]) -> Result<HashMap<String, String>, String> {
    params_of(media_type(req).as_deref(), body)
}

/// The parameters of a body of this media type (JSON object of strings, or a form).
fn params_of(media_type: Option<&str>, body: &[u8]) -> Result<HashMap<String, String>, String> {
    let json = match media_type {
        Some("application/json") => true,
        Some("application/x-www-form-urlencoded") => false,
        Some(other) => return Err(format!("Unsupported Content-Type {other}")),
        None => body.iter().find(|b| !b.is_ascii_whitespace()) == Some(&b'{'),
    };
    let mut out = HashMap::new();
    if json {
        let value: serde_json::Value = serde_json::from_slice(body).map_err(|_| "Malformed JSON body".to_string())?;
        let serde_json::Value::Object(map) = value else {
            return Err("The JSON body must be an object".into());
        };
        for (k, v) in map {
            match v {
                serde_json::Value::String(s) => {
                    out.insert(k, s);
                }
                serde_json::Value::Null => {}
                _ => return Err(format!("Invalid parameter {k}: must be a string")),
            }
        }
    } else {
        let body = std::str::from_utf8(body).map_err(|_| "The form body is not UTF-8".to_string())?;
        parse_pairs(body, &mut out)?;
    }
    Ok(out)
}

fn parse_pairs(text: &str, out: &mut HashMap<String, String>) -> Result<(), String> {
    let pairs: Vec<(String, String)> =
        serde_urlencoded::from_str(text).map_err(|_| "Malformed form-encoded parameters".to_string())?;
    for (k, v) in pairs {
        if out.insert(k.clone(), v).is_some() {
            return Err(format!("Invalid parameter {k}: given more than once"));
        }
    }
    Ok(())
}

fn query(req: &HttpRequest) -> Result<HashMap<String, String>, String> {
    let mut out = HashMap::new();
    parse_pairs(req.query_string(), &mut out)?;
    Ok(out)
}

/// A required, non-empty parameter of at most `max` bytes.
fn required<'a>(p: &'a HashMap<String, String>, key: &str, max: usize) -> Result<&'a str, String> {
    match p.get(key).map(String::as_str) {
        None | Some("") => Err(format!("Missing parameter {key}")),
        Some(v) if v.len() > max => Err(format!("Invalid parameter {key}: longer than {max} bytes")),
        Some(v) => Ok(v),
    }
}

fn optional<'a>(p: &'a HashMap<String, String>, key: &str, max: usize) -> Result<Option<&'a str>, String> {
    match p.get(key).map(String::as_str) {
        None | Some("") => Ok(None),
        Some(_) => required(p, key, max).map(Some),
    }
}

/// The answer to a login, in the order and with the types of the document.
#[derive(Serialize)]
struct LoginAnswer {
    uid: String,
    user: String,
    firstname: String,
    lastname: String,
    civility: String,
    login: String,
    password_renew: bool,
    password_expiration: Option<String>,
    token: String,
}

impl LoginAnswer {
    fn new(s: &SignedIn) -> LoginAnswer {
        let u: &User = &s.user;
        LoginAnswer {
            uid: u.id.to_string(),
            user: u.full_name(),
            firstname: u.first_name.clone(),
            lastname: u.last_name.clone(),
            civility: u.civility.clone(),
            login: u.login.clone(),
            password_renew: u.password_renew(now_ms()),
            password_expiration: u.password_expires_at.map(iso8601),
            token: s.token.expose().to_string(),
        }
    }
}

const MAX_ID: usize = 255;
const MAX_SECRET: usize = 1024;

/// The body's parameters, or the answer that refuses them.
async fn body_params(
    req: &HttpRequest,
    payload: web::Payload,
    http: &crate::config::Http,
    started: Instant,
) -> Result<HashMap<String, String>, ForepaasError> {
    let body = read_body(req, payload, http).await.map_err(|e| match e {
        BodyError::TooLarge(n) => {
            failure(StatusCode::PAYLOAD_TOO_LARGE, &format!("Request body larger than {n} bytes"), started).into()
        }
        BodyError::TimedOut => {
            failure(StatusCode::REQUEST_TIMEOUT, "Request body not received in time", started).into()
        }
        BodyError::Broken => bad_request("Incomplete request body", started),
    })?;
    parse_params(req, &body).map_err(|text| bad_request(&text, started))
}

async fn login(req: HttpRequest, payload: web::Payload, core: web::Data<Core>) -> Result<HttpResponse, ForepaasError> {
    let started = Instant::now();
    let (bad, refused) = (move |t: String| bad_request(&t, started), move |e: Error| error(&e, started));
    let params = body_params(&req, payload, &core.config.http, started).await?;
    let core = core.into_inner();
    let caller = net::caller(&req, &core.config, "forepaas");
    let signed_in = match params.get("auth_mode").map(String::as_str) {
        Some("forepaas_id_resource_owner") => {
            let login = required(&params, "login", MAX_ID).map_err(bad)?.to_string();
            let password = Secret::new(required(&params, "password", MAX_SECRET).map_err(bad)?);
            let app_id = required(&params, "app_id", MAX_ID).map_err(bad)?.to_string();
            core.call_hashing(move |c| c.login_password(&caller, TokenKind::Iam, &app_id, &login, &password)).await
        }
        Some("apikey") => {
            let apikey = required(&params, "apikey", MAX_ID).map_err(bad)?.to_string();
            let secretkey = Secret::new(required(&params, "secretkey", MAX_SECRET).map_err(bad)?);
            let app_id = optional(&params, "app_id", MAX_ID).map_err(bad)?.map(str::to_string);
            core.call(move |c| c.login_api_key(&caller, app_id.as_deref(), &apikey, &secretkey)).await
        }
        None | Some("") => return Err(bad_request("Missing parameter auth_mode", started)),
        Some(_) => return Err(bad_request("Invalid parameter auth_mode: unknown authentication mode", started)),
    }
    .map_err(refused)?;
    Ok(answer(StatusCode::OK, &LoginAnswer::new(&signed_in)))
}

/// The token and optional app_id of a query string.
fn token_params(req: &HttpRequest) -> Result<(Secret, Option<String>), String> {
    let q = query(req)?;
    let token = Secret::new(required(&q, "token", MAX_SECRET)?);
    let app_id = optional(&q, "app_id", MAX_ID)?.map(str::to_string);
    Ok((token, app_id))
}

async fn logout(req: HttpRequest, core: web::Data<Core>) -> Result<HttpResponse, ForepaasError> {
    let started = Instant::now();
    let (token, app_id) = token_params(&req).map_err(|text| bad_request(&text, started))?;
    let caller = net::caller(&req, &core.config, "forepaas");
    let core = core.into_inner();
    let logout = core.call(move |c| c.logout(&caller, TokenKind::Iam, &token, app_id.as_deref()));
    logout.await.map_err(|e| error(&e, started))?;
    Ok(success(started))
}

/// The session behind a token. The token itself is not echoed: secrets appear only in the answer
/// that creates them.
#[derive(Serialize)]
struct SessionAnswer {
    success: bool,
    status: u16,
    uid: String,
    user: String,
    firstname: String,
    lastname: String,
    civility: String,
    login: String,
    app_id: String,
    password_renew: bool,
    password_expiration: Option<String>,
    created: String,
    expires: String,
    duration: f64,
}

impl SessionAnswer {
    fn new(t: &TokenInfo, started: Instant) -> SessionAnswer {
        let u = &t.user;
        SessionAnswer {
            success: true,
            status: 200,
            uid: u.id.to_string(),
            user: u.full_name(),
            firstname: u.first_name.clone(),
            lastname: u.last_name.clone(),
            civility: u.civility.clone(),
            login: u.login.clone(),
            app_id: t.app_id.clone(),
            password_renew: u.password_renew(now_ms()),
            password_expiration: u.password_expires_at.map(iso8601),
            created: iso8601(t.created_at),
            expires: iso8601(t.expires_at),
            duration: duration(started),
        }
    }
}

async fn check_session(req: HttpRequest, core: web::Data<Core>) -> Result<HttpResponse, ForepaasError> {
    let started = Instant::now();
    let (token, app_id) = token_params(&req).map_err(|text| bad_request(&text, started))?;
    let core = core.into_inner();
    let check = core.quick(move |c| c.check_token(TokenKind::Iam, &token, app_id.as_deref()));
    let info = check.await.map_err(|e| error(&e, started))?;
    Ok(answer(StatusCode::OK, &SessionAnswer::new(&info, started)))
}

/// `POST /iam/passwordChange?app_id=&token=` with `{password, oldpassword}` (JSON or form): the
/// field notes' password change. Other sessions of the user end; this one lives on.
async fn password_change(
    req: HttpRequest,
    payload: web::Payload,
    core: web::Data<Core>,
) -> Result<HttpResponse, ForepaasError> {
    let started = Instant::now();
    let bad = move |t: String| bad_request(&t, started);
    let (token, app_id) = token_params(&req).map_err(bad)?;
    let params = body_params(&req, payload, &core.config.http, started).await?;
    let caller = net::caller(&req, &core.config, "forepaas");
    let new = Secret::new(required(&params, "password", MAX_SECRET).map_err(bad)?);
    let old = Secret::new(required(&params, "oldpassword", MAX_SECRET).map_err(bad)?);
    core.into_inner()
        .call(move |c| c.change_password(&caller, TokenKind::Iam, &token, app_id.as_deref(), &old, &new))
        .await
        .map_err(|e| error(&e, started))?;
    Ok(success(started))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn any_body_is_parsed_or_refused_without_panic(
            ct in proptest::option::of("[a-z/+.-]{0,40}"),
            body in proptest::collection::vec(any::<u8>(), 0..512),
        ) {
            let _ = params_of(ct.as_deref(), &body);
        }

        #[test]
        fn maps_of_strings_round_trip_as_json_and_as_forms(
            map in proptest::collection::hash_map("[a-z_]{1,12}", "\\PC{0,40}", 0..6),
        ) {
            let json = serde_json::to_vec(&map).unwrap();
            prop_assert_eq!(params_of(Some("application/json"), &json).unwrap(), map.clone());
            prop_assert_eq!(params_of(None, &json).unwrap(), map.clone());
            let form = serde_urlencoded::to_string(&map).unwrap();
            prop_assert_eq!(params_of(Some("application/x-www-form-urlencoded"), form.as_bytes()).unwrap(), map);
        }
    }
}
