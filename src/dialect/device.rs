//! The device page (`/device`) and its API: the phone that registered through the page answers
//! the IAMPASS sign-ins of its user there.
//!
//! Every call of the API is signed by the device's own P-256 key (made by the page at
//! registration; the server holds the public point): ECDSA P-256 with SHA-256, the signature as
//! r || s in base64url, over the lines
//!
//! ```text
//! gatehouse-device-v1
//! <METHOD>
//! <path and query, as sent>
//! <device id>
//! <timestamp, Unix seconds>
//! <nonce, 16 to 64 of [A-Za-z0-9_-]>
//! <hex SHA-256 of the body (of nothing for a GET)>
//! ```
//!
//! sent as `X-Device-Id`, `X-Device-Timestamp`, `X-Device-Nonce` and `X-Device-Signature`. A
//! device registered without a key of its own calls with `Authorization: Basic
//! base64(apikey:secretkey)`, the API key it was handed: it answers `acceptance` sign-ins only,
//! and cannot add a face or fingerprint.
//!
//! - `GET /device/requests?wait=S&have=ID,...` → `{"device":{...},"requests":[...]}`, at once
//!   without `have` or when the waiting requests are not the `have` list, else when they change
//!   or after `wait` (≤ 30 s)
//! - `POST /device/requests/{id}` `{"approve":bool,"challenge","webauthn"?:{...}}` →
//!   `{"success":true,"session_status":"active"|"cancelled"}`
//! - `GET /device/webauthn` → the options of navigator.credentials.create();
//!   `POST /device/webauthn` `{"challenge","client_data_json","attestation_object"}` → `{"success":true}`
//!
//! Errors are the pages' `{"success":false,"error":"..."}`: 401 a refused signature, 403 a lost
//! device, 410 a request that waits no more, 400 a bad body.

use std::sync::Arc;
use std::time::{Duration, Instant};

use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest, HttpResponse};
use serde_json::{json, Value};

use crate::core::crypto::{hex, sha256};
use crate::core::signins::Device;
use crate::core::signins::{b64url, unb64url, Assertion, DeviceProof};
use crate::core::Secret;
use crate::core::{Core, Error};
use crate::web::page::{self, asset, html};
use crate::web::{net, read_body, BodyError};

const DEVICE_HTML: &str = include_str!("../../static/device.html");
const DEVICE_JS: &str = include_str!("../../static/device.js");

/// The longest a device's poll waits for a change.
const MAX_WAIT: u64 = 30;

/// The page and its script answer HEAD as GET, as the other pages do.
pub fn routes(cfg: &mut web::ServiceConfig) {
    let script = || async { asset("text/javascript; charset=utf-8", DEVICE_JS) };
    let page = || async { html(StatusCode::OK, DEVICE_HTML) };
    cfg.service(web::resource("/static/device.js").route(web::get().to(script)).route(web::head().to(script)))
        .service(web::resource("/device").route(web::get().to(page)).route(web::head().to(page)))
        .route("/device/requests", web::get().to(requests))
        .route("/device/requests/{id}", web::post().to(decide))
        .service(
            web::resource("/device/webauthn")
                .route(web::get().to(webauthn_options))
                .route(web::post().to(webauthn_add)),
        );
}

fn answer(status: StatusCode, body: &Value) -> HttpResponse {
    page::answer(status).content_type("application/json").body(body.to_string())
}

crate::web::door_error!(
    /// A refused call of the device API, in the pages' JSON: the core's errors through [`error`],
    /// or [`refused`].
    DeviceError,
    "the device API"
);

impl From<Error> for DeviceError {
    fn from(e: Error) -> DeviceError {
        error(&e).into()
    }
}

fn refused(status: StatusCode, reason: &str) -> DeviceError {
    page::json(status, Some(reason)).into()
}

/// The one mapping from the core's errors to the device API's answers.
fn error(e: &Error) -> HttpResponse {
    match e {
        Error::BadCredentials => page::json(StatusCode::UNAUTHORIZED, Some("The device's signature was refused")),
        Error::Lost => page::json(StatusCode::FORBIDDEN, Some("This device was reported lost; register it again")),
        Error::Gone => page::json(StatusCode::GONE, Some("This request is no longer waiting for an answer")),
        Error::Invalid { .. } => page::json(StatusCode::BAD_REQUEST, Some(&e.to_string())),
        Error::Busy => {
            crate::web::with_retry_after(page::json(StatusCode::SERVICE_UNAVAILABLE, Some("Server busy")), e)
        }
        Error::Internal(id) => {
            page::json(StatusCode::INTERNAL_SERVER_ERROR, Some(&format!("Internal error (id {id})")))
        }
        Error::BadClient
        | Error::BadToken
        | Error::WrongPassword
        | Error::Blocked
        | Error::NotMember
        | Error::UnknownApp(_)
        | Error::UnknownUser(_)
        | Error::UnknownApiKey
        | Error::Exists(_)
        | Error::NoRoom
        | Error::SecondFactorRequired
        | Error::Throttled { .. } => page::json(StatusCode::BAD_REQUEST, Some(&e.to_string())),
    }
}

/// A face or fingerprint is added only by a device that signs with its own key: the assertion
/// is checked as part of an approval signed by that key.
fn needs_key() -> Error {
    Error::invalid(
        "device",
        "only a device with its own key (registered through the page) can add a face or fingerprint",
    )
}

/// The signed call's proof, read from its headers, over `body`.
fn proof(req: &HttpRequest, body: &[u8]) -> Result<DeviceProof, Error> {
    let h = |name: &str| req.headers().get(name).and_then(|v| v.to_str().ok()).map(str::trim);
    let device_id = h("X-Device-Id").and_then(|v| v.parse::<i64>().ok()).ok_or(Error::BadCredentials)?;
    let timestamp = h("X-Device-Timestamp").and_then(|v| v.parse::<i64>().ok()).ok_or(Error::BadCredentials)?;
    let nonce = h("X-Device-Nonce").filter(|n| n.len() <= 64).ok_or(Error::BadCredentials)?.to_string();
    let signature = h("X-Device-Signature").and_then(unb64url).ok_or(Error::BadCredentials)?;
    let target = req.uri().path_and_query().map(|pq| pq.as_str()).unwrap_or("/");
    let message = format!(
        "gatehouse-device-v1\n{}\n{target}\n{device_id}\n{timestamp}\n{nonce}\n{}",
        req.method(),
        hex(&sha256(body))
    );
    Ok(DeviceProof { device_id, timestamp, nonce, signature, message: message.into_bytes() })
}

/// `Authorization: Basic base64(apikey:secretkey)`, when the call carries it.
fn api_key(req: &HttpRequest) -> Option<(String, Secret)> {
    crate::web::parse_basic(req.headers().get("Authorization")?.to_str().ok()?)
}

/// The device the call comes from, and whether it signed with its own key (else it came with
/// its API key).
async fn device(core: &Arc<Core>, req: &HttpRequest, body: &[u8]) -> Result<(Device, bool), Error> {
    if req.headers().get("X-Device-Signature").is_none() {
        if let Some((id, secret)) = api_key(req) {
            let caller = net::caller(req, &core.config, "device");
            return core.call(move |c| c.device_by_api_key(&caller, &id, &secret)).await.map(|d| (d, false));
        }
    }
    let p = proof(req, body)?;
    core.call(move |c| c.device_call(&p)).await.map(|d| (d, true))
}

fn query(req: &HttpRequest) -> Vec<(String, String)> {
    serde_urlencoded::from_str(req.query_string()).unwrap_or_default()
}

async fn requests(req: HttpRequest, core: web::Data<Core>) -> Result<HttpResponse, DeviceError> {
    let core = core.into_inner();
    let (device, _) = device(&core, &req, b"").await?;
    let device_id = device.id;
    let q = query(&req);
    let get = |k: &str| q.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str());
    let wait = get("wait").and_then(|w| w.parse::<u64>().ok()).unwrap_or(0).min(MAX_WAIT);
    // Without `have` the caller knows nothing yet: it is answered at once.
    let have: Option<Vec<i64>> = get("have").map(|h| h.split(',').filter_map(|i| i.trim().parse().ok()).collect());
    let deadline = Instant::now() + Duration::from_secs(wait);
    loop {
        // Registered before the look, so that a change made meanwhile is not missed.
        let changed = core.signins.notified();
        tokio::pin!(changed);
        changed.as_mut().enable();
        let (dev, list) = core.call(move |c| c.device_requests(device_id)).await?;
        let now = Instant::now();
        let unchanged = have.as_ref().is_some_and(|h| list.iter().map(|r| r.id).eq(h.iter().copied()));
        if !unchanged || now >= deadline || core.stopping() {
            let webauthn_id = dev.webauthn_id.as_deref().map(b64url);
            let device =
                json!({"device_id": dev.id, "name": dev.name, "app_id": dev.app_id, "webauthn_id": webauthn_id});
            return Ok(answer(StatusCode::OK, &json!({"device": device, "requests": list})));
        }
        // With several nodes a change made on another one wakes no one here: look again soon.
        let recheck = Duration::from_secs(2).min(deadline - now);
        tokio::select! {
            _ = changed => {}
            _ = tokio::time::sleep(recheck) => {}
        }
    }
}

/// A decision's body: approve, the request's challenge, and a WebAuthn assertion when asked for.
fn decision_of(body: &Value) -> Result<(bool, Vec<u8>, Option<Assertion>), &'static str> {
    let approve = body.get("approve").and_then(Value::as_bool).ok_or("approve must be true or false")?;
    let challenge = body.get("challenge").and_then(Value::as_str).and_then(unb64url).ok_or("challenge is required")?;
    let assertion = match body.get("webauthn") {
        None | Some(Value::Null) => None,
        Some(w) => {
            let field = |k: &str| w.get(k).and_then(Value::as_str).and_then(unb64url);
            match (field("client_data_json"), field("authenticator_data"), field("signature")) {
                (Some(client_data_json), Some(authenticator_data), Some(signature)) => {
                    Some(Assertion { client_data_json, authenticator_data, signature })
                }
                _ => return Err("webauthn needs client_data_json, authenticator_data and signature (base64url)"),
            }
        }
    };
    Ok((approve, challenge, assertion))
}

/// A POST's device and body: the body read under the limit, then its signature checked.
async fn signed_body(
    core: &Arc<Core>,
    req: &HttpRequest,
    payload: web::Payload,
) -> Result<((Device, bool), web::Bytes), DeviceError> {
    let body = read_body(req, payload, &core.config.http).await.map_err(|e| match e {
        BodyError::TooLarge(_) => refused(StatusCode::PAYLOAD_TOO_LARGE, "The request body is too large"),
        BodyError::TimedOut => refused(StatusCode::REQUEST_TIMEOUT, "The request body came too slowly"),
        BodyError::Broken => refused(StatusCode::BAD_REQUEST, "Incomplete body"),
    })?;
    Ok((device(core, req, &body).await?, body))
}

async fn decide(req: HttpRequest, payload: web::Payload, core: web::Data<Core>) -> Result<HttpResponse, DeviceError> {
    let core = core.into_inner();
    let ((dev, signed), body) = signed_body(&core, &req, payload).await?;
    let id = req.match_info().get("id").unwrap_or_default().parse::<i64>().map_err(|_| Error::Gone)?;
    let parsed = serde_json::from_slice::<Value>(&body).map_err(|_| "the body must be a JSON object");
    let (approve, challenge, assertion) =
        parsed.and_then(|v| decision_of(&v)).map_err(|reason| refused(StatusCode::BAD_REQUEST, reason))?;
    let caller = net::caller(&req, &core.config, "device");
    let decided = core.call(move |c| c.decide_signin(&caller, &dev, signed, id, approve, &challenge, assertion));
    let status = decided.await?;
    Ok(answer(StatusCode::OK, &json!({"success": true, "session_status": status})))
}

async fn webauthn_options(req: HttpRequest, core: web::Data<Core>) -> Result<HttpResponse, DeviceError> {
    let core = core.into_inner();
    let dev = match device(&core, &req, b"").await? {
        (d, true) => d,
        (_, false) => return Err(needs_key().into()),
    };
    let options = core.call(move |c| c.webauthn_options(&dev)).await?;
    Ok(answer(StatusCode::OK, &json!(options)))
}

async fn webauthn_add(
    req: HttpRequest,
    payload: web::Payload,
    core: web::Data<Core>,
) -> Result<HttpResponse, DeviceError> {
    let core = core.into_inner();
    let (dev, body) = match signed_body(&core, &req, payload).await? {
        ((d, true), body) => (d, body),
        ((_, false), _) => return Err(needs_key().into()),
    };
    let v: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    let field = |k: &str| v.get(k).and_then(Value::as_str).and_then(unb64url);
    let (Some(challenge), Some(client_data), Some(attestation)) =
        (field("challenge"), field("client_data_json"), field("attestation_object"))
    else {
        return Err(refused(
            StatusCode::BAD_REQUEST,
            "challenge, client_data_json and attestation_object are required (base64url)",
        ));
    };
    let caller = net::caller(&req, &core.config, "device");
    core.call(move |c| c.add_webauthn(&caller, &dev, &challenge, &client_data, &attestation)).await?;
    Ok(page::json(StatusCode::OK, None))
}
