//! IQM user authentication (`/api/v3/ua`), as seed 003 and the field notes show it.
//!
//! - `POST /api/v3/ua/sign-up` `{"email","password"}`, client Basic auth → 200
//!   `{"success":true,"data":{"access_token","refresh_token","scope","token_type","expires_in"}}`
//! - `POST /api/v3/ua/login` and `/api/v3/ua/oauth/token` with `grantType` (or `grant_type`)
//!   `password` → the same data plus `owId`
//! - `POST /api/v3/ua/oauth/token` `{"grant_type":"refresh_token","refresh_token"}` → the bare token
//!   object (Basic optional, checked when present)
//! - `POST /api/v3/ua/logout` with `Authorization: Bearer` and `X-IAA-OW-ID` →
//!   `{"success":true,"data":"User logged out successfully."}`
//! - `GET /api/v3/ua/user/info` (gatehouse's addition) → the user and workspace of a live token
//! - `POST /api/v3/ua/user/reset-password` `{email}` and `POST /api/v3/ua/user/update-password`
//!   `{email,password,token}`
//! - Errors: `{"success":false,"errorObjects":[{"error":"...","reason":"..."}]}`; a blocked user is
//!   400 with `data` `{status, reason, supportEmail}`.

use std::collections::HashMap;

use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest, HttpResponse};
use serde::Serialize;
use serde_json::{json, Value};

use crate::core::apps::Door;
use crate::core::oauth::Grant;
use crate::core::reset::IQM_RESET_MAIL;
use crate::core::{iso8601, text, Core, Error, Secret};
use crate::web::{net, read_body, BodyError};

const JSON: &str = "application/json";
const NO_USER: &str = "User doesn't exist or user is not allowed to provided workspace.";

pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.service(
        web::scope("/api/v3/ua")
            .route("/sign-up", web::post().to(sign_up))
            .route("/login", web::post().to(token))
            .route("/oauth/token", web::post().to(token))
            .route("/logout", web::post().to(logout))
            .route("/user/info", web::get().to(user_info))
            .route("/user/reset-password", web::post().to(reset_password))
            .route("/user/update-password", web::post().to(update_password))
            .default_service(web::to(|| async {
                failure(StatusCode::NOT_FOUND, "Not found", Some("No such endpoint."))
            })),
    );
}

#[derive(Serialize)]
struct ErrorObject<'a> {
    error: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    reason: Option<&'a str>,
}

fn answer(status: StatusCode, body: &Value) -> HttpResponse {
    HttpResponse::build(status).content_type(JSON).insert_header(("Cache-Control", "no-store")).body(body.to_string())
}

fn failure(status: StatusCode, error: &str, reason: Option<&str>) -> HttpResponse {
    answer(status, &json!({"success": false, "errorObjects": [ErrorObject { error, reason }]}))
}

crate::web::door_error!(
    /// A refused IQM call, in its `errorObjects` envelope: built by [`error`] (the core's errors,
    /// which need the configuration for a blocked user's support address) or [`refused`].
    IqmError,
    "IQM"
);

fn refused(status: StatusCode, error: &str, reason: Option<&str>) -> IqmError {
    failure(status, error, reason).into()
}

/// The one mapping from the core's errors to this dialect's answers.
fn error(e: &Error, core: &Core) -> IqmError {
    crate::web::with_retry_after(error_body(e, core), e).into()
}

fn error_body(e: &Error, core: &Core) -> HttpResponse {
    match e {
        Error::Invalid { field, reason } => {
            failure(StatusCode::FORBIDDEN, &format!("Invalid {field}"), Some(&format!("The {field} {reason}.")))
        }
        Error::Exists(_) => {
            failure(StatusCode::FORBIDDEN, "User already exists", Some("An account with this email already exists."))
        }
        Error::BadClient => failure(
            StatusCode::FORBIDDEN,
            "Invalid client credentials",
            Some("The client id and secret of the Authorization header do not match."),
        ),
        Error::BadCredentials | Error::NotMember | Error::UnknownUser(_) | Error::UnknownApp(_) | Error::Lost => {
            failure(StatusCode::FORBIDDEN, NO_USER, None)
        }
        Error::Blocked => answer(
            StatusCode::BAD_REQUEST,
            &json!({
                "success": false,
                "data": {"status": "On Hold", "reason": "The account is blocked.", "supportEmail": core.config.iqm.support_email},
                "errorObjects": [ErrorObject {
                    error: "User is not allowed to access provided customer",
                    reason: Some("User is not associated with any active organization."),
                }],
            }),
        ),
        Error::BadToken | Error::UnknownApiKey | Error::WrongPassword => {
            failure(StatusCode::UNAUTHORIZED, "Unauthorized", Some("The token is invalid, expired or revoked."))
        }
        Error::Gone => {
            failure(StatusCode::GONE, "Invalid reset token", Some("The reset link was used, replaced or has expired."))
        }
        Error::Busy => failure(StatusCode::SERVICE_UNAVAILABLE, "Server busy", Some("Retry later.")),
        Error::NoRoom => {
            failure(StatusCode::SERVICE_UNAVAILABLE, "Server busy", Some("The server is short of disk space."))
        }
        Error::SecondFactorRequired => failure(StatusCode::FORBIDDEN, "Second factor required", Some(&e.to_string())),
        Error::Throttled { .. } => {
            failure(StatusCode::TOO_MANY_REQUESTS, "Too many requests", Some("Too many failed attempts; retry later."))
        }
        Error::Internal(id) => failure(StatusCode::INTERNAL_SERVER_ERROR, "Internal error", Some(&format!("id {id}"))),
    }
}

fn bad_request(reason: &str) -> IqmError {
    refused(StatusCode::BAD_REQUEST, "Invalid request", Some(reason))
}

/// `client_id:client_secret` of an `Authorization: Basic` header: None when absent, Err when
/// present but not Basic credentials.
fn basic(req: &HttpRequest) -> Result<Option<(String, Secret)>, ()> {
    let Some(value) = req.headers().get("Authorization") else { return Ok(None) };
    parse_basic(value.to_str().map_err(|_| ())?).map(Some)
}

fn parse_basic(value: &str) -> Result<(String, Secret), ()> {
    crate::web::parse_basic(value).ok_or(())
}

/// The authenticated client of the request (None when it sent none), or the 403 that refuses it.
async fn client(req: &HttpRequest, core: &std::sync::Arc<Core>) -> Result<Option<String>, IqmError> {
    let refuse = |reason: &str| refused(StatusCode::FORBIDDEN, "Invalid client credentials", Some(reason));
    match basic(req) {
        Ok(None) => Ok(None),
        Err(()) => Err(refuse("The Authorization header is not Basic base64(client_id:client_secret).")),
        Ok(Some((id, secret))) => {
            let cid = id.clone();
            let caller = net::caller(req, &core.config, "iqm");
            let check = core.call(move |c| c.authenticate_client_throttled(&caller, &cid, &secret, Door::Iqm));
            check.await.map_err(|e| error(&e, core))?;
            Ok(Some(id))
        }
    }
}

/// [`client`] for the calls that need one.
async fn required_client(req: &HttpRequest, core: &std::sync::Arc<Core>) -> Result<String, IqmError> {
    client(req, core).await?.ok_or_else(|| {
        refused(
            StatusCode::FORBIDDEN,
            "Invalid client credentials",
            Some("The Authorization header with the client id and secret is missing."),
        )
    })
}

/// A JSON object body's string fields (`null` counts as absent).
async fn fields(req: &HttpRequest, payload: web::Payload, core: &Core) -> Result<HashMap<String, String>, IqmError> {
    let body = read_body(req, payload, &core.config.http).await.map_err(|e| match e {
        BodyError::TooLarge(n) => refused(
            StatusCode::PAYLOAD_TOO_LARGE,
            "Invalid request",
            Some(&format!("The body is larger than {n} bytes.")),
        ),
        BodyError::TimedOut => {
            refused(StatusCode::REQUEST_TIMEOUT, "Invalid request", Some("The body was not received in time."))
        }
        BodyError::Broken => bad_request("The body is incomplete."),
    })?;
    let Ok(Value::Object(map)) = serde_json::from_slice::<Value>(&body) else {
        return Err(bad_request("The body must be a JSON object."));
    };
    let mut out = HashMap::new();
    for (k, v) in map {
        match v {
            Value::String(s) if s.len() <= 1024 => {
                out.insert(k, s);
            }
            Value::String(_) => return Err(bad_request(&format!("{k} is longer than 1024 bytes."))),
            Value::Null => {}
            _ => return Err(bad_request(&format!("{k} must be a string."))),
        }
    }
    Ok(out)
}

/// A required field, or the 400 that asks for it.
fn required<'a>(f: &'a HashMap<String, String>, key: &str) -> Result<&'a str, IqmError> {
    f.get(key).map(String::as_str).filter(|v| !v.is_empty()).ok_or_else(|| bad_request(&format!("{key} is required.")))
}

/// The token object of the document.
fn token_object(g: &Grant) -> serde_json::Map<String, Value> {
    let mut m = serde_json::Map::new();
    m.insert("access_token".into(), json!(g.access_token.expose()));
    m.insert("refresh_token".into(), json!(g.refresh_token.expose()));
    m.insert("scope".into(), json!("read write"));
    m.insert("token_type".into(), json!("bearer"));
    m.insert("expires_in".into(), json!(g.expires_in));
    m
}

async fn sign_up(req: HttpRequest, payload: web::Payload, core: web::Data<Core>) -> Result<HttpResponse, IqmError> {
    let core = core.into_inner();
    let client_id = required_client(&req, &core).await?;
    let f = fields(&req, payload, &core).await?;
    let email = required(&f, "email")?.trim().to_string();
    let password = Secret::new(required(&f, "password")?);
    let caller = net::caller(&req, &core.config, "iqm");
    let signed_up = core.call_hashing(move |c| c.sign_up(&caller, &client_id, &email, &password));
    let g = signed_up.await.map_err(|e| error(&e, &core))?;
    Ok(answer(StatusCode::OK, &json!({"success": true, "data": token_object(&g)})))
}

/// `/login` and `/oauth/token`: the password grant, or the refresh grant.
async fn token(req: HttpRequest, payload: web::Payload, core: web::Data<Core>) -> Result<HttpResponse, IqmError> {
    let core = core.into_inner();
    let f = fields(&req, payload, &core).await?;
    let grant_type = f.get("grantType").or_else(|| f.get("grant_type")).map(String::as_str);
    // /login is the password grant when grantType is left out; /oauth/token needs it.
    match (grant_type, req.path().ends_with("/login")) {
        (Some("password"), _) | (None, true) => {
            let client_id = required_client(&req, &core).await?;
            let email = required(&f, "email")?.trim().to_string();
            let password = Secret::new(required(&f, "password")?);
            let caller = net::caller(&req, &core.config, "iqm");
            let granted = core.call_hashing(move |c| c.password_grant(&caller, &client_id, &email, &password));
            let g = granted.await.map_err(|e| error(&e, &core))?;
            let mut data = token_object(&g);
            data.insert("owId".into(), json!(g.workspace_id));
            Ok(answer(StatusCode::OK, &json!({"success": true, "data": data})))
        }
        (Some("refresh_token"), _) => {
            let client_id = client(&req, &core).await?;
            let refresh = Secret::new(required(&f, "refresh_token").or_else(|_| required(&f, "refreshToken"))?);
            let caller = net::caller(&req, &core.config, "iqm");
            let g = core
                .call_write(move |c, tx| c.refresh_grant_in(tx, &caller, client_id.as_deref(), &refresh))
                .await
                .and_then(|g| g)
                .map_err(|e| error(&e, &core))?;
            Ok(answer(StatusCode::OK, &Value::Object(token_object(&g))))
        }
        (None, false) => Err(bad_request("grantType is required.")),
        (Some(_), _) => Err(refused(
            StatusCode::BAD_REQUEST,
            "Unsupported grant type",
            Some("grantType must be password or refresh_token."),
        )),
    }
}

/// The bearer token and workspace of a request, or the 401 that refuses it.
fn bearer(req: &HttpRequest) -> Result<(Secret, i64), IqmError> {
    let unauthorized = |reason: &str| refused(StatusCode::UNAUTHORIZED, "Unauthorized", Some(reason));
    let auth = req.headers().get("Authorization").and_then(|v| v.to_str().ok()).unwrap_or("");
    let token = match auth.trim().split_once(' ') {
        Some((scheme, t)) if scheme.eq_ignore_ascii_case("bearer") && !t.trim().is_empty() && t.len() <= 1024 => {
            t.trim()
        }
        _ => return Err(unauthorized("The Authorization header must carry a Bearer token.")),
    };
    let ow = req
        .headers()
        .get("X-IAA-OW-ID")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<i64>().ok())
        .ok_or_else(|| unauthorized("The X-IAA-OW-ID header must carry the workspace id."))?;
    Ok((Secret::new(token), ow))
}

async fn logout(req: HttpRequest, core: web::Data<Core>) -> Result<HttpResponse, IqmError> {
    let (token, ow) = bearer(&req)?;
    let core = core.into_inner();
    let caller = net::caller(&req, &core.config, "iqm");
    let logout = core.call(move |c| c.logout_family(&caller, &token, ow));
    logout.await.map_err(|e| error(&e, &core))?;
    Ok(answer(StatusCode::OK, &json!({"success": true, "data": "User logged out successfully."})))
}

async fn user_info(req: HttpRequest, core: web::Data<Core>) -> Result<HttpResponse, IqmError> {
    let (token, ow) = bearer(&req)?;
    let core = core.into_inner();
    let check = core.quick(move |c| c.check_bearer(&token, ow));
    let b = check.await.map_err(|e| error(&e, &core))?;
    Ok(answer(
        StatusCode::OK,
        &json!({"success": true, "data": {
            "uid": b.user.id,
            "email": b.user.email,
            "firstName": b.user.first_name,
            "lastName": b.user.last_name,
            "owId": b.workspace_id,
            "clientId": b.client_id,
            "expiresAt": iso8601(b.expires_at),
        }}),
    ))
}

async fn reset_password(
    req: HttpRequest,
    payload: web::Payload,
    core: web::Data<Core>,
) -> Result<HttpResponse, IqmError> {
    let core = core.into_inner();
    let client_id = client(&req, &core).await?;
    let f = fields(&req, payload, &core).await?;
    let email = required(&f, "email")?.trim().to_string();
    // Text no address may hold is refused here, before the answer that says nothing.
    text::clean("email", &email).map_err(|e| error(&e, &core))?;
    // The lookup and the mail happen after the answer: its bytes and its time are the same whether
    // or not the email names a user.
    let background = std::sync::Arc::clone(&core);
    let caller = net::caller(&req, &core.config, "iqm");
    actix_web::rt::spawn(async move {
        let _ = background
            .call(move |c| c.request_password_reset(&caller, &email, &email, client_id.as_deref(), &IQM_RESET_MAIL))
            .await;
    });
    Ok(answer(StatusCode::OK, &json!({"success": true, "data": "Email with reset password link sent successfully."})))
}

async fn update_password(
    req: HttpRequest,
    payload: web::Payload,
    core: web::Data<Core>,
) -> Result<HttpResponse, IqmError> {
    let core = core.into_inner();
    let f = fields(&req, payload, &core).await?;
    let query: HashMap<String, String> = serde_urlencoded::from_str(req.query_string()).unwrap_or_default();
    let code = f.get("token").or_else(|| query.get("token")).map(|t| t.trim().to_string());
    let email = required(&f, "email")?.trim().to_string();
    let password = Secret::new(required(&f, "password")?);
    let code = match code {
        Some(c) if !c.is_empty() => Secret::new(c),
        _ => return Err(bad_request("token (from the reset link) is required.")),
    };
    let caller = net::caller(&req, &core.config, "iqm");
    let reset = core.call(move |c| c.reset_password_of(&caller, &code, Some(&email), &password));
    reset.await.map_err(|e| error(&e, &core))?;
    Ok(answer(StatusCode::OK, &json!({"success": true, "data": "Password changed successfully."})))
}

#[cfg(test)]
mod tests {
    use super::*;
    use base64::Engine;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn any_authorization_header_parses_or_is_refused_without_panic(h in "\\PC{0,200}") {
            let _ = parse_basic(&h);
        }

        #[test]
        fn basic_credentials_parse_back(id in "[^:\\p{C}]{1,64}", secret in "\\PC{1,200}") {
            prop_assume!(id.len() <= 64);
            let header = format!("Basic {}", base64::engine::general_purpose::STANDARD.encode(format!("{id}:{secret}")));
            let (i, s) = parse_basic(&header).unwrap();
            prop_assert_eq!(i, id);
            prop_assert_eq!(s.expose(), secret.as_str());
        }
    }
}
