//! IAMPASS Management API (`/management`, and the same paths without it), as seed 001,
//! iampass-hmac.md and the field notes show it.
//!
//! Every call is signed: `Authentication: hmac <app>:<nonce>:<signature>` with
//! `X-IAMPASS-Authentication-Timestamp` (or the documentation's `...-Authentiaction-...`). The
//! signature is base64 of the first 16 bytes of HMAC-SHA256 keyed by the first 16 bytes of
//! SHA-256(nonce + secret), over nonce + url + timestamp, where url is the request as sent without
//! its scheme (the documentation's form with `http://` or `https://` is accepted too).
//!
//! - `POST add_users/{app}` `{"users":[...]}` → 201 `{"status":true,"users":{"created":[...],"existing":[...]}}`
//! - `POST delete_users/{app}` → 200 `{"status":true}`
//! - `GET device_registration_link/{app}/{user}?display_name=` → 200 `{"register_url":"...","status":true}`
//! - `GET has_registered_mobile_device/{app}/{user}` → 200 `{"device_registered":bool,"status":true}`
//! - `GET lost_user_mobile_device/{app}/{user}` → 200 `{"register_url":"...","status":true}`
//! - `POST send_registration_sms/{app}/{user}` `{"phone_number","display_name"?,"message"?}` → `{"status":true}`
//! - `POST /authentication/authenticate_user/{app}/{user}?methods=&duration_seconds=` → 202
//!   `{"authentication_status":{"authenticated":true,"session_status":"pending","session_token",
//!   "session_secret","status_url","logout_url"}}`, or 200 `{"authentication_status":
//!   {"authenticated":false,"session_status":"failed","reason"}}` when not started
//! - `GET <status_url>` → 200 `{"authentication_status":{"authenticated":true,"session_status"}}` and
//!   `POST <logout_url>` → 200 `{"status":true}`, both signed with the session token as the client
//!   id and the session secret as the shared secret
//! - unknown application → 404 `Client Application <app> not found` (text); unknown user → 404
//!   `Client Application <app> or User <user> not found.`; a refused body → 200
//!   `{"status":false,"reason":"..."}`; a refused signature → 401 `{"status":false,"reason":"..."}`.

use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest, HttpResponse};
use base64::Engine;
use serde::Serialize;
use serde_json::{json, Value};

use crate::core::apps::Door;
use crate::core::crypto::{ct_eq, hmac_sha256, sha256};
use crate::core::guard::Caller;
use crate::core::{now_ms, Core, Error};
use crate::web::{net, read_body, BodyError};

const JSON: &str = "application/json";

pub fn routes(cfg: &mut web::ServiceConfig) {
    for prefix in ["/management", ""] {
        cfg.route(&format!("{prefix}/add_users/{{app}}"), web::post().to(add_users))
            .route(&format!("{prefix}/delete_users/{{app}}"), web::post().to(delete_users))
            .route(&format!("{prefix}/device_registration_link/{{app}}/{{user}}"), web::get().to(registration_link))
            .route(&format!("{prefix}/has_registered_mobile_device/{{app}}/{{user}}"), web::get().to(has_device))
            .route(&format!("{prefix}/lost_user_mobile_device/{{app}}/{{user}}"), web::get().to(lost_device))
            .route(&format!("{prefix}/send_registration_sms/{{app}}/{{user}}"), web::post().to(send_sms));
    }
    cfg.route("/authentication/authenticate_user/{app}/{user}", web::post().to(authenticate_user))
        .route("/authentication/session/status/{token}", web::get().to(session_status))
        .route("/authentication/session/logout/{token}", web::post().to(session_logout));
}

/// The signature of iampass-hmac.md: base64 of the first 16 bytes of
/// HMAC-SHA256(key = SHA-256(nonce + secret)[..16], nonce + url + timestamp).
pub fn signature(secret: &str, nonce: &str, url: &str, timestamp: &str) -> [u8; 16] {
    let key = sha256(format!("{nonce}{secret}").as_bytes());
    let mac = hmac_sha256(&key[..16], &[nonce.as_bytes(), url.as_bytes(), timestamp.as_bytes()]);
    let mut out = [0u8; 16];
    out.copy_from_slice(&mac[..16]);
    out
}

/// Form decoding of one path segment: `+` is a space, `%XX` a byte; None when not UTF-8.
fn form_decode(s: &str) -> Option<String> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'+' => out.push(b' '),
            b'%' => {
                let hex = s.get(i + 1..i + 3)?;
                out.push(u8::from_str_radix(hex, 16).ok()?);
                i += 2;
            }
            c => out.push(c),
        }
        i += 1;
    }
    String::from_utf8(out).ok()
}

/// The `{app}` and, for the per-user calls, `{user}` of the path, decoded from the raw request
/// target (actix's own decoding leaves `+` alone).
fn path_parts(req: &HttpRequest, with_user: bool) -> Option<(String, Option<String>)> {
    let mut segs = req.uri().path().rsplit('/');
    let user = if with_user { Some(form_decode(segs.next()?)?) } else { None };
    let app = form_decode(segs.next()?)?;
    Some((app, user))
}

#[derive(Serialize)]
struct Refusal<'a> {
    status: bool,
    reason: &'a str,
}

fn json_answer(status: StatusCode, body: &Value) -> HttpResponse {
    HttpResponse::build(status).content_type(JSON).insert_header(("Cache-Control", "no-store")).body(body.to_string())
}

fn refused(status: StatusCode, reason: &str) -> HttpResponse {
    let body = serde_json::to_string(&Refusal { status: false, reason }).unwrap_or_default();
    HttpResponse::build(status).content_type(JSON).body(body)
}

fn app_not_found(app: &str) -> HttpResponse {
    HttpResponse::NotFound()
        .content_type("text/plain; charset=utf-8")
        .body(format!("Client Application {app} not found"))
}

crate::web::door_error!(
    /// A refused IAMPASS call, as the vendor answers it: built by [`refusal`] from a [`Refused`]
    /// (the core's errors through [`error`], which names the path's application and user).
    IampassError,
    "IAMPASS"
);

/// The one mapping from the core's errors to this dialect's answers.
fn error(e: &Error, app: &str, user: Option<&str>) -> HttpResponse {
    match e {
        Error::UnknownApp(_) => app_not_found(app),
        Error::UnknownUser(_) => HttpResponse::NotFound()
            .content_type("text/plain; charset=utf-8")
            .body(format!("Client Application {app} or User {} not found.", user.unwrap_or(""))),
        Error::Invalid { .. } => refused(StatusCode::OK, &e.to_string()),
        Error::Busy => {
            crate::web::with_retry_after(refused(StatusCode::SERVICE_UNAVAILABLE, "server busy, retry later"), e)
        }
        Error::NoRoom => crate::web::with_retry_after(refused(StatusCode::SERVICE_UNAVAILABLE, &e.to_string()), e),
        Error::Internal(id) => refused(StatusCode::INTERNAL_SERVER_ERROR, &format!("internal error (id {id})")),
        Error::Throttled { .. } => {
            crate::web::with_retry_after(refused(StatusCode::TOO_MANY_REQUESTS, "too many requests, retry later"), e)
        }
        Error::BadToken => refused(StatusCode::NOT_FOUND, "no such session"),
        Error::BadCredentials
        | Error::BadClient
        | Error::WrongPassword
        | Error::Blocked
        | Error::NotMember
        | Error::Gone
        | Error::UnknownApiKey
        | Error::Exists(_)
        | Error::Lost
        | Error::SecondFactorRequired => refused(StatusCode::BAD_REQUEST, &e.to_string()),
    }
}

fn header<'a>(req: &'a HttpRequest, names: &[&str]) -> Option<&'a str> {
    names.iter().find_map(|n| req.headers().get(*n)).and_then(|v| v.to_str().ok())
}

/// `hmac <app>:<nonce>:<base64 signature>`: the application, the nonce (a decimal u64) and the
/// signature's bytes, or the reason for a 401.
fn parse_authentication(value: &str) -> Result<(&str, &str, Vec<u8>), &'static str> {
    const MALFORMED: &str = "missing or malformed Authentication header";
    let (scheme, rest) = value.trim().split_once(' ').ok_or(MALFORMED)?;
    if !scheme.eq_ignore_ascii_case("hmac") {
        return Err(MALFORMED);
    }
    let mut parts = rest.trim().splitn(3, ':');
    let (Some(app), Some(nonce), Some(presented)) = (parts.next(), parts.next(), parts.next()) else {
        return Err(MALFORMED);
    };
    if nonce.is_empty() || nonce.len() > 20 || nonce.parse::<u64>().is_err() {
        return Err("malformed nonce");
    }
    let presented = base64::engine::general_purpose::STANDARD.decode(presented).map_err(|_| MALFORMED)?;
    Ok((app, nonce, presented))
}

/// A request's signature as its headers carry it, checked by [`verify`] off the executor.
struct Signature {
    app: String,
    nonce: String,
    presented: Vec<u8>,
    timestamp: String,
    ts: i64,
    /// Host and request target as sent; None without a Host.
    url: Option<String>,
    /// Who sent it, for counting bad signatures.
    caller: Caller,
}

/// Why a signed call is not answered with success: an answer of this dialect's (a refused
/// signature or body), or the core's error.
enum Refused {
    Answer(StatusCode, String),
    Core(Error),
}

impl From<Error> for Refused {
    fn from(e: Error) -> Refused {
        Refused::Core(e)
    }
}

fn denied(reason: &str) -> Refused {
    Refused::Answer(StatusCode::UNAUTHORIZED, reason.to_string())
}

/// The answer to a refused call on `app` (and `user`).
fn refusal(r: Refused, app: &str, user: Option<&str>) -> IampassError {
    match r {
        Refused::Answer(status, reason) => refused(status, &reason),
        Refused::Core(e) => error(&e, app, user),
    }
    .into()
}

/// Reads the signature headers of a request on `path_app`; what is malformed is refused here.
fn signature_of(req: &HttpRequest, path_app: &str) -> Result<Signature, Refused> {
    let value = header(req, &["Authentication", "Authorization"])
        .ok_or_else(|| denied("missing or malformed Authentication header"))?;
    let (app, nonce, presented) = parse_authentication(value).map_err(denied)?;
    if app != path_app {
        return Err(denied("the application of the signature is not the one in the path"));
    }
    let timestamp = header(req, &["X-IAMPASS-Authentication-Timestamp", "X-IAMPASS-Authentiaction-Timestamp"])
        .ok_or_else(|| denied("missing timestamp header"))?
        .trim()
        .to_string();
    let ts: i64 = timestamp.parse().map_err(|_| denied("malformed timestamp"))?;
    let host = header(req, &["Host"]).map(str::to_string).or_else(|| req.uri().authority().map(|a| a.to_string()));
    let target = req.uri().path_and_query().map(|pq| pq.as_str()).unwrap_or("/");
    Ok(Signature {
        app: app.to_string(),
        nonce: nonce.to_string(),
        presented,
        timestamp,
        ts,
        url: host.map(|h| format!("{h}{target}")),
        caller: match req.app_data::<web::Data<Core>>() {
            Some(core) => crate::web::net::caller(req, &core.config, "iampass"),
            None => Caller::new(None, "iampass"),
        },
    })
}

/// Checks a signature with its application's secret, then spends its nonce. Blocking.
fn verify(c: &Core, sig: &Signature) -> Result<(), Refused> {
    let keep_until = check(c, sig)?;
    if !c.use_nonce(&sig.app, &sig.nonce, keep_until)? {
        return Err(denied("replayed nonce"));
    }
    Ok(())
}

/// Checks a signature's timestamp and MAC with its application's secret; answers until when its
/// nonce must be kept. Only a correctly signed request may spend its nonce, so that no one else
/// can burn them. The request is accepted until its own timestamp plus the window (a clock ahead
/// of ours moves that later than now plus the window), so its nonce is kept for as long, and a
/// millisecond more.
fn check(c: &Core, sig: &Signature) -> Result<i64, Refused> {
    let secret = c.app_secret_at(&sig.app, Door::Iampass)?;
    check_with(c, sig, secret.expose()).map_err(|r| match r {
        Refused::Answer(_, ref reason) if reason == BAD_SIGNATURE => {
            c.signature_failed(&sig.caller, &sig.app).map(Refused::Core).unwrap_or(r)
        }
        r => r,
    })
}

const BAD_SIGNATURE: &str = "bad signature";

/// [`check`] with the shared secret given: an application's, or an authentication session's.
fn check_with(c: &Core, sig: &Signature, secret: &str) -> Result<i64, Refused> {
    let window = c.config.iampass.timestamp_window.millis();
    if (now_ms() - sig.ts.saturating_mul(1000)).abs() > window {
        return Err(denied("stale timestamp"));
    }
    let Some(url) = &sig.url else { return Err(denied(BAD_SIGNATURE)) };
    // Every form is computed, so the time taken does not tell which one matched.
    let mut ok = false;
    for candidate in [url.clone(), format!("http://{url}"), format!("https://{url}")] {
        ok |= ct_eq(&signature(secret, &sig.nonce, &candidate, &sig.timestamp), &sig.presented);
    }
    if !ok {
        return Err(denied(BAD_SIGNATURE));
    }
    Ok(sig.ts.saturating_mul(1000).saturating_add(window).saturating_add(1))
}

/// [`run_signed`] for an operation that is a few reads by index (`Store::read_quick`): all of it
/// runs on the executor, and the answer waits for the nonce's record to be committed.
async fn run_signed_quick<T, F>(core: &std::sync::Arc<Core>, sig: Signature, f: F) -> Result<T, Refused>
where
    F: FnOnce(&Core) -> Result<T, Refused> + Send + 'static,
    T: Send + 'static,
{
    if core.store.is_shared() {
        // PostgreSQL: the reads and the nonce go over the network, off the executor.
        return run_signed(core, sig, f).await;
    }
    let keep_until = check(core, &sig)?;
    let Some(recorded) = core.spend_nonce(&sig.app, &sig.nonce, keep_until) else {
        return Err(denied("replayed nonce"));
    };
    let out = f(core);
    recorded.await?;
    out
}

/// Runs `f` once the signature is verified, in one trip off the executor.
async fn run_signed<T, F>(core: &std::sync::Arc<Core>, sig: Signature, f: F) -> Result<T, Refused>
where
    F: FnOnce(&Core) -> Result<T, Refused> + Send + 'static,
    T: Send + 'static,
{
    match core.call(move |c| Ok(verify(c, &sig).and_then(|()| f(c)))).await {
        Ok(r) => r,
        Err(e) => Err(Refused::Core(e)),
    }
}

/// The `users` list of a body, or the reason it is refused.
fn users_of(body: &[u8]) -> Result<Vec<String>, String> {
    let v: Value = serde_json::from_slice(body).map_err(|_| "the body is not JSON".to_string())?;
    let list = v.get("users").and_then(Value::as_array).ok_or("the body must be {\"users\": [...]}")?;
    list.iter().map(|u| u.as_str().map(str::to_string).ok_or_else(|| "users must be strings".to_string())).collect()
}

/// The body, or the answer that refuses it (given only once the signature holds).
async fn body(req: &HttpRequest, payload: web::Payload, core: &Core) -> Result<web::Bytes, Refused> {
    match read_body(req, payload, &core.config.http).await {
        Ok(b) => Ok(b),
        Err(BodyError::TooLarge(n)) => {
            Err(Refused::Answer(StatusCode::PAYLOAD_TOO_LARGE, format!("body larger than {n} bytes")))
        }
        Err(BodyError::TimedOut) => {
            Err(Refused::Answer(StatusCode::REQUEST_TIMEOUT, "body not received in time".into()))
        }
        Err(BodyError::Broken) => Err(Refused::Answer(StatusCode::BAD_REQUEST, "incomplete body".into())),
    }
}

/// The app (and user) of the path and the signature, or the answer that refuses the request.
fn signed(req: &HttpRequest, with_user: bool) -> Result<(String, Option<String>, Signature), Refused> {
    let Some((app, user)) = path_parts(req, with_user) else {
        return Err(Refused::Answer(StatusCode::BAD_REQUEST, "the path is not UTF-8 form encoding".into()));
    };
    let sig = signature_of(req, &app)?;
    Ok((app, user, sig))
}

/// [`signed`] for the calls on one user: the application, the user and the signature, or the
/// answer that refuses the request.
fn signed_user(req: &HttpRequest) -> Result<(String, String, Signature), IampassError> {
    match signed(req, true) {
        Ok((app, Some(user), sig)) => Ok((app, user, sig)),
        Ok(_) => Err(refused(StatusCode::BAD_REQUEST, "no user in the path").into()),
        Err(r) => Err(refusal(r, "", None)),
    }
}

/// add_users and delete_users: the signature, then the body's `users`, then `f`.
async fn signed_users<F>(
    req: HttpRequest,
    payload: web::Payload,
    core: web::Data<Core>,
    f: F,
) -> Result<HttpResponse, IampassError>
where
    F: FnOnce(&Core, &Caller, &str, &[String]) -> Result<(StatusCode, Value), Error> + Send + 'static,
{
    let core = core.into_inner();
    let (app, _, sig) = signed(&req, false).map_err(|r| refusal(r, "", None))?;
    let users = body(&req, payload, &core)
        .await
        .and_then(|b| users_of(&b).map_err(|reason| Refused::Answer(StatusCode::OK, reason)));
    let caller = net::caller(&req, &core.config, "iampass");
    let a = app.clone();
    let done = run_signed(&core, sig, move |c| Ok(f(c, &caller, &a, &users?)?));
    let (status, body) = done.await.map_err(|r| refusal(r, &app, None))?;
    Ok(json_answer(status, &body))
}

async fn add_users(
    req: HttpRequest,
    payload: web::Payload,
    core: web::Data<Core>,
) -> Result<HttpResponse, IampassError> {
    signed_users(req, payload, core, |c, caller, app, users| {
        let added = c.add_app_users(caller, app, users)?;
        Ok((
            StatusCode::CREATED,
            json!({"status": true, "users": {"created": added.created, "existing": added.existing}}),
        ))
    })
    .await
}

async fn delete_users(
    req: HttpRequest,
    payload: web::Payload,
    core: web::Data<Core>,
) -> Result<HttpResponse, IampassError> {
    signed_users(req, payload, core, |c, caller, app, users| {
        c.remove_app_users(caller, app, users)?;
        Ok((StatusCode::OK, json!({"status": true})))
    })
    .await
}

/// `display_name` of the query string, form-decoded.
fn display_name(req: &HttpRequest) -> Result<Option<String>, &'static str> {
    let pairs: Vec<(String, String)> =
        serde_urlencoded::from_str(req.query_string()).map_err(|_| "malformed query string")?;
    Ok(pairs.into_iter().find(|(k, _)| k == "display_name").map(|(_, v)| v))
}

async fn registration_link(req: HttpRequest, core: web::Data<Core>) -> Result<HttpResponse, IampassError> {
    per_user(req, core, |c, _, app, user, display| {
        c.registration_link(app, user, display.as_deref()).map(|url| json!({"register_url": url, "status": true}))
    })
    .await
}

async fn has_device(req: HttpRequest, core: web::Data<Core>) -> Result<HttpResponse, IampassError> {
    let core = core.into_inner();
    let (app, user, sig) = signed_user(&req)?;
    let (a, u) = (app.clone(), user.clone());
    let has = run_signed_quick(&core, sig, move |c| Ok(c.has_device(&a, &u)?));
    let has = has.await.map_err(|r| refusal(r, &app, Some(&user)))?;
    Ok(json_answer(StatusCode::OK, &json!({"device_registered": has, "status": true})))
}

async fn lost_device(req: HttpRequest, core: web::Data<Core>) -> Result<HttpResponse, IampassError> {
    per_user(req, core, |c, caller, app, user, display| {
        c.lose_devices(caller, app, user, display.as_deref()).map(|url| json!({"register_url": url, "status": true}))
    })
    .await
}

/// The GET calls on one user: the signature, then one core call answered as JSON, in one trip.
async fn per_user<F>(req: HttpRequest, core: web::Data<Core>, f: F) -> Result<HttpResponse, IampassError>
where
    F: FnOnce(&Core, &Caller, &str, &str, Option<String>) -> Result<Value, Error> + Send + 'static,
{
    let core = core.into_inner();
    let (app, user, sig) = signed_user(&req)?;
    let display = display_name(&req).map_err(|reason| Refused::Answer(StatusCode::OK, reason.to_string()));
    let (a, u) = (app.clone(), user.clone());
    let caller = net::caller(&req, &core.config, "iampass");
    let body = run_signed(&core, sig, move |c| Ok(f(c, &caller, &a, &u, display?)?));
    let body = body.await.map_err(|r| refusal(r, &app, Some(&user)))?;
    Ok(json_answer(StatusCode::OK, &body))
}

/// send_registration_sms's body: the phone number, display name and message.
fn sms_of(raw: &[u8]) -> Result<(String, Option<String>, Option<String>), String> {
    let Ok(Value::Object(v)) = serde_json::from_slice::<Value>(raw) else {
        return Err("the body must be a JSON object".into());
    };
    let text = |k: &str| -> Result<Option<String>, String> {
        match v.get(k) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) => Ok(Some(s.clone())),
            Some(_) => Err(format!("{k} must be a string")),
        }
    };
    match (text("phone_number"), text("display_name"), text("message")) {
        (Ok(Some(p)), Ok(d), Ok(m)) => Ok((p, d, m)),
        (Ok(None), _, _) => Err("phone_number is required".into()),
        (Err(r), _, _) | (_, Err(r), _) | (_, _, Err(r)) => Err(r),
    }
}

async fn send_sms(
    req: HttpRequest,
    payload: web::Payload,
    core: web::Data<Core>,
) -> Result<HttpResponse, IampassError> {
    let core = core.into_inner();
    let (app, user, sig) = signed_user(&req)?;
    let sms = body(&req, payload, &core).await.and_then(|b| sms_of(&b).map_err(|r| Refused::Answer(StatusCode::OK, r)));
    let (a, u) = (app.clone(), user.clone());
    let sent = run_signed(&core, sig, move |c| {
        let (phone, display, message) = sms?;
        Ok(c.send_registration_sms(&a, &u, &phone, display.as_deref(), message.as_deref())?)
    });
    sent.await.map_err(|r| refusal(r, &app, Some(&user)))?;
    Ok(json_answer(StatusCode::OK, &json!({"status": true})))
}

/// `methods` and `duration_seconds` of authenticate_user's query string.
fn signin_query(req: &HttpRequest) -> Result<(Option<String>, Option<String>), Refused> {
    let pairs: Vec<(String, String)> = serde_urlencoded::from_str(req.query_string())
        .map_err(|_| Refused::Answer(StatusCode::BAD_REQUEST, "malformed query string".into()))?;
    let get = |k: &str| pairs.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone());
    Ok((get("methods"), get("duration_seconds")))
}

fn signin_answer(status: StatusCode, inner: Value) -> HttpResponse {
    json_answer(status, &json!({ "authentication_status": inner }))
}

async fn authenticate_user(req: HttpRequest, core: web::Data<Core>) -> Result<HttpResponse, IampassError> {
    use crate::core::signins::Start;
    let core = core.into_inner();
    let (app, user, sig) = signed_user(&req)?;
    let query = signin_query(&req);
    let caller = net::caller(&req, &core.config, "iampass");
    let (a, u) = (app.clone(), user.clone());
    let started = run_signed(&core, sig, move |c| {
        let (methods, duration) = query?;
        Ok(c.start_signin(&caller, &a, &u, methods.as_deref(), duration.as_deref())?)
    });
    match started.await.map_err(|r| refusal(r, &app, Some(&user)))? {
        Start::Started { token, secret } => {
            let base = core.config.public_url();
            Ok(signin_answer(
                StatusCode::ACCEPTED,
                json!({
                    "authenticated": true,
                    "session_status": "pending",
                    "session_token": token,
                    "session_secret": secret.expose(),
                    "status_url": format!("{base}/authentication/session/status/{token}"),
                    "logout_url": format!("{base}/authentication/session/logout/{token}"),
                }),
            ))
        }
        Start::NotStarted(reason) => Ok(signin_answer(
            StatusCode::OK,
            json!({"authenticated": false, "session_status": "failed", "reason": reason}),
        )),
    }
}

/// The session token of a status or logout path (32 hex characters), and the signature made
/// with it as the client id.
fn signed_session(req: &HttpRequest) -> Result<(String, Signature), IampassError> {
    let token = req.match_info().get("token").unwrap_or_default().to_string();
    if token.len() != 32 || !token.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(refused(StatusCode::NOT_FOUND, "no such session").into());
    }
    let sig = signature_of(req, &token).map_err(|r| refusal(r, "", None))?;
    Ok((token, sig))
}

/// Verifies a session call's signature with the session's secret and spends its nonce, then runs
/// `f`, in one trip off the executor.
async fn run_session<T, F>(core: &std::sync::Arc<Core>, sig: Signature, f: F) -> Result<T, Refused>
where
    F: FnOnce(&Core) -> Result<T, Error> + Send + 'static,
    T: Send + 'static,
{
    let verified = core.call(move |c| {
        let secret = c.session_secret(&sig.app);
        let checked = check_with(c, &sig, secret.expose()).and_then(|keep_until| {
            match c.use_nonce(&format!("#session/{}", sig.app), &sig.nonce, keep_until) {
                Ok(true) => Ok(()),
                Ok(false) => Err(denied("replayed nonce")),
                Err(e) => Err(Refused::Core(e)),
            }
        });
        Ok(checked.and_then(|()| f(c).map_err(Refused::Core)))
    });
    match verified.await {
        Ok(r) => r,
        Err(e) => Err(Refused::Core(e)),
    }
}

async fn session_status(req: HttpRequest, core: web::Data<Core>) -> Result<HttpResponse, IampassError> {
    let core = core.into_inner();
    let (token, sig) = signed_session(&req)?;
    let status = run_session(&core, sig, move |c| c.signin_status(&token));
    let status = status.await.map_err(|r| refusal(r, "", None))?;
    Ok(signin_answer(StatusCode::OK, json!({"authenticated": true, "session_status": status})))
}

async fn session_logout(req: HttpRequest, core: web::Data<Core>) -> Result<HttpResponse, IampassError> {
    let core = core.into_inner();
    let (token, sig) = signed_session(&req)?;
    let caller = net::caller(&req, &core.config, "iampass");
    let ended = run_session(&core, sig, move |c| c.end_signin(&caller, &token));
    ended.await.map_err(|r| refusal(r, "", None))?;
    Ok(json_answer(StatusCode::OK, &json!({"status": true})))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn b64(mac: [u8; 16]) -> String {
        base64::engine::general_purpose::STANDARD.encode(mac)
    }

    #[test]
    fn first_test_vector() {
        let url = "localhost:8080/management/add_users/app-123";
        assert_eq!(b64(signature("s3cr3t", "1234567890123456789", url, "1700000000")), "A/FhXuRyhShnRzPwvFXOcw==");
    }

    #[test]
    fn second_test_vector() {
        let url =
            "127.0.0.1:8080/management/device_registration_link/app-123/alice%40example.com?display_name=Alice+Smith";
        assert_eq!(b64(signature("s3cr3t", "42", url, "1700000000")), "iGxaM9p31dbGJYCQqVpG2w==");
    }

    #[test]
    fn path_segments_are_form_decoded() {
        assert_eq!(form_decode("MY+USER+1").unwrap(), "MY USER 1");
        assert_eq!(form_decode("alice%40x.com").unwrap(), "alice@x.com");
        assert_eq!(form_decode("a%2Bb").unwrap(), "a+b");
        assert!(form_decode("%zz").is_none());
        assert!(form_decode("%ff").is_none(), "not UTF-8");
    }

    use proptest::prelude::*;

    proptest! {
        #[test]
        fn any_path_segment_decodes_or_is_refused_without_panic(s in "\\PC{0,64}") {
            let _ = form_decode(&s);
        }

        #[test]
        fn form_encoded_segments_decode_to_what_was_encoded(s in "\\PC{0,64}") {
            let encoded = serde_urlencoded::to_string([("u", s.as_str())]).unwrap();
            prop_assert_eq!(form_decode(&encoded["u=".len()..]).unwrap(), s);
        }

        #[test]
        fn any_authentication_header_parses_or_is_refused_without_panic(h in "\\PC{0,120}") {
            let _ = parse_authentication(&h);
        }

        #[test]
        fn well_formed_authentication_headers_parse_back(
            app in "[A-Za-z0-9._-]{1,64}",
            nonce in any::<u64>(),
            sig in proptest::collection::vec(any::<u8>(), 16),
        ) {
            let b64 = base64::engine::general_purpose::STANDARD.encode(&sig);
            let header = format!("hmac {app}:{nonce}:{b64}");
            let nonce_text = nonce.to_string();
            let (a, n, s) = parse_authentication(&header).unwrap();
            prop_assert_eq!(a, app.as_str());
            prop_assert_eq!(n, nonce_text.as_str());
            prop_assert_eq!(s, sig);
        }
    }
}
