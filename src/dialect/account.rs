//! The self-service account page of the hosted sign-in, for a person signed in to the box (the
//! SSO session's `gatehouse_sso` cookie; without one, 303 to `/login?next=/account`):
//!
//! - `GET /account` → who they are, their second factor, their live SSO sessions (this browser's
//!   marked), the grants their applications hold, their consents; `?done=...` names what was done
//! - `POST /account/password` (`current`, `new`, `again`) → the current password checked through
//!   the one sign-in path (a wrong one: the page again with the error, 401), every other token of
//!   theirs revoked, this browser's session kept; 303 to the page
//! - `POST /account/totp` → the QR code and the secret of a new authenticator, and a form for its
//!   first code: `POST /account/totp/confirm` (`code`) → the ten recovery codes, shown once
//! - `POST /account/totp/remove` (`password`) → the authenticator and the recovery codes go
//! - `POST /account/recovery-codes` → a fresh set of recovery codes, shown once
//! - `POST /account/passkeys` (`challenge`, `client_data`, `attestation`, base64url, filled in by
//!   static/passkey.js; `name`) → a new passkey (and the recovery codes, shown once, when there
//!   were none); `POST /account/passkeys/remove` (`passkey`, `password`) → it goes
//! - `POST /account/sessions/end` (`session`), `POST /account/sessions/end-others`,
//!   `POST /account/grants/end` (`grant`), `POST /account/consents/revoke` (`client`) → 303 to
//!   the page
//!
//! Plain HTML forms: every POST carries the CSRF token of the browser's `gatehouse_csrf` cookie
//! and passes the Origin check (else 403); every text a person typed is escaped; every action is
//! audited by the core.

use std::sync::Arc;

use actix_web::http::header::LOCATION;
use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest, HttpResponse};

use crate::core::account::Account;
use crate::core::guard::Caller;
use crate::core::oidc::SsoSession;
use crate::core::passkeys::{Creation, PasskeyRegistration};
use crate::core::{iso8601, Core, Error, Secret};
use crate::web::forms::{
    csrf_cookie, escape, form_is_ours, page_csp, passkey_create_form, sso_cookie, sso_token, Form,
};
use crate::web::page::{self, fill};
use crate::web::{media_type, net, read_body, BodyError};

const ACCOUNT_HTML: &str = include_str!("../../static/account.html");
const TOTP_ENROL_HTML: &str = include_str!("../../static/totp_enrol.html");
const RECOVERY_CODES_HTML: &str = include_str!("../../static/recovery_codes.html");
const MESSAGE_HTML: &str = include_str!("../../static/message.html");

/// Where a browser without a session signs in, to come back here.
const TO_LOGIN: &str = "/login?next=%2Faccount";

pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.route("/account", web::get().to(account_page))
        .route("/account/password", web::post().to(change_password))
        .route("/account/totp", web::post().to(totp_begin))
        .route("/account/totp/confirm", web::post().to(totp_confirm))
        .route("/account/totp/remove", web::post().to(totp_remove))
        .route("/account/recovery-codes", web::post().to(recovery_codes))
        .route("/account/passkeys", web::post().to(passkey_add))
        .route("/account/passkeys/remove", web::post().to(passkey_remove))
        .route("/account/sessions/end", web::post().to(end_session))
        .route("/account/sessions/end-others", web::post().to(end_other_sessions))
        .route("/account/grants/end", web::post().to(end_grant))
        .route("/account/consents/revoke", web::post().to(revoke_consent));
}

// ----- answers -----

crate::web::door_error!(
    /// A refused account action: a page (or the way to the sign-in page).
    AccountError,
    "The account page"
);

impl From<Error> for AccountError {
    fn from(e: Error) -> AccountError {
        error_page(&e).into()
    }
}

/// The one mapping from the core's errors to the account page's answers.
fn error_page(e: &Error) -> HttpResponse {
    match e {
        Error::BadToken | Error::Gone => see_other(TO_LOGIN),
        Error::WrongPassword | Error::BadCredentials => {
            message_page(StatusCode::UNAUTHORIZED, "Refused", "The password or the code is wrong.")
        }
        Error::Blocked => message_page(StatusCode::FORBIDDEN, "Refused", "This account is blocked."),
        Error::Throttled { .. } => crate::web::with_retry_after(
            message_page(StatusCode::TOO_MANY_REQUESTS, "Refused", "Too many failed attempts: wait a while."),
            e,
        ),
        Error::Busy | Error::NoRoom => crate::web::with_retry_after(
            message_page(StatusCode::SERVICE_UNAVAILABLE, "Busy", "The server is busy: try again."),
            e,
        ),
        Error::Internal(id) => {
            message_page(StatusCode::INTERNAL_SERVER_ERROR, "Error", &format!("Internal error (id {id})."))
        }
        Error::Exists(_) => message_page(StatusCode::CONFLICT, "Refused", &e.to_string()),
        Error::Invalid { .. } => message_page(StatusCode::BAD_REQUEST, "Refused", &e.to_string()),
        Error::NotMember
        | Error::UnknownApp(_)
        | Error::UnknownUser(_)
        | Error::UnknownApiKey
        | Error::BadClient
        | Error::SecondFactorRequired
        | Error::Lost => message_page(StatusCode::FORBIDDEN, "Refused", &e.to_string()),
    }
}

fn page_answer(status: StatusCode, body: String, csrf: Option<actix_web::cookie::Cookie<'static>>) -> HttpResponse {
    let mut res = page::answer(status);
    res.content_type("text/html; charset=utf-8").insert_header(("Content-Security-Policy", page_csp(None)));
    if let Some(c) = csrf {
        res.cookie(c);
    }
    res.body(body)
}

fn message_page(status: StatusCode, title: &str, text: &str) -> HttpResponse {
    page_answer(status, fill(MESSAGE_HTML, &[("title", &escape(title)), ("message", &escape(text))]), None)
}

fn see_other(location: &str) -> HttpResponse {
    page::answer(StatusCode::SEE_OTHER).insert_header((LOCATION, location.to_string())).finish()
}

fn refused() -> AccountError {
    message_page(
        StatusCode::FORBIDDEN,
        "Refused",
        "This form did not come from this page: open your account page again.",
    )
    .into()
}

// ----- forms -----

async fn form_body(req: &HttpRequest, payload: web::Payload, core: &Core) -> Result<Form, AccountError> {
    let bad = |status, text: &str| AccountError::from(message_page(status, "Refused", text));
    if media_type(req).as_deref() != Some("application/x-www-form-urlencoded") {
        return Err(bad(StatusCode::BAD_REQUEST, "The body must be a form (application/x-www-form-urlencoded)."));
    }
    let body = read_body(req, payload, &core.config.http).await.map_err(|e| match e {
        BodyError::TooLarge(_) => bad(StatusCode::PAYLOAD_TOO_LARGE, "The form is too large."),
        BodyError::TimedOut => bad(StatusCode::REQUEST_TIMEOUT, "The form came too slowly."),
        BodyError::Broken => bad(StatusCode::BAD_REQUEST, "The form is incomplete."),
    })?;
    Form::parse(&body).ok_or_else(|| bad(StatusCode::BAD_REQUEST, "The form cannot be read."))
}

/// A POST of one of the page's forms, by a person signed in.
struct Posted {
    form: Form,
    token: Secret,
    session: SsoSession,
    caller: Caller,
}

/// The form, checked as ours (CSRF token and Origin, else 403), and the browser's live SSO
/// session (else 303 to the sign-in page).
async fn posted(req: &HttpRequest, payload: web::Payload, core: &Arc<Core>) -> Result<Posted, AccountError> {
    let form = form_body(req, payload, core).await?;
    if !form_is_ours(req, core, &form) {
        return Err(refused());
    }
    let Some(token) = sso_token(req) else { return Err(see_other(TO_LOGIN).into()) };
    let t = token.clone();
    let Some(session) = core.call(move |c| c.sso_session(&t)).await? else { return Err(see_other(TO_LOGIN).into()) };
    Ok(Posted { form, token, session, caller: net::caller(req, &core.config, "oidc") })
}

/// `action` for the person of `p`, once the form's `password` is checked as theirs (through the
/// one sign-in path, on the hashing pool).
async fn after_password<T: Send + 'static>(
    core: &Arc<Core>,
    p: &Posted,
    action: impl FnOnce(&Core, &Caller, &crate::core::User) -> Result<T, Error> + Send + 'static,
) -> Result<T, Error> {
    let password = Secret::new(p.form.one("password").unwrap_or(""));
    let (user, caller) = (p.session.user.clone(), p.caller);
    core.call_hashing(move |c| {
        c.check_own_password(&caller, &user, &password)?;
        action(c, &caller, &user)
    })
    .await
}

// ----- the page -----

/// A time as people read it: `2026-12-03 17:34 UTC`.
fn when(ms: i64) -> String {
    let t = iso8601(ms);
    format!("{} {} UTC", &t[..10], &t[11..16])
}

fn how(amr: &[String]) -> &'static str {
    if amr.iter().any(|a| a == "otp" || a == "hwk") {
        "with a password and a second factor"
    } else {
        "with a password"
    }
}

fn notice(done: &str) -> Option<&'static str> {
    Some(match done {
        "password" => "Your password is changed. Your other sessions have ended.",
        "totp-removed" => "The authenticator app is removed.",
        "passkey-added" => "The passkey is added: signing in can use it from now on.",
        "passkey-removed" => "The passkey is removed.",
        "session" => "The session has ended.",
        "sessions" => "Your other sessions have ended.",
        "grant" => "The application's access has ended.",
        "consent" => "The consent is withdrawn: the application asks again next time.",
        _ => return None,
    })
}

/// A button that POSTs one hidden value to `action`.
fn button_form(action: &str, csrf: &str, name: &str, value: &str, label: &str, aria: &str) -> String {
    format!(
        "<form method=\"post\" action=\"{action}\"><input type=\"hidden\" name=\"csrf\" value=\"{csrf}\">\
         <input type=\"hidden\" name=\"{name}\" value=\"{}\"><button type=\"submit\" aria-label=\"{}\">{label}</button></form>",
        escape(value),
        escape(aria)
    )
}

fn render(core: &Core, account: &Account, creation: &Creation, csrf: &str, message: Option<(bool, &str)>) -> String {
    let token = escape(&core.csrf_token(csrf));
    let u = &account.user;
    let name = format!("{} {}", u.first_name, u.last_name);
    let second_factor = if account.factors.totp {
        format!(
            "<p id=\"totp-status\">An authenticator app is set up: signing in asks for its code. \
             Recovery codes left: <strong id=\"recovery-left\">{}</strong>.</p>\
             <form id=\"recovery-form\" method=\"post\" action=\"/account/recovery-codes\">\
             <input type=\"hidden\" name=\"csrf\" value=\"{token}\">\
             <button id=\"new-recovery-codes\" type=\"submit\">New recovery codes</button></form>\
             <form id=\"totp-remove-form\" method=\"post\" action=\"/account/totp/remove\">\
             <input type=\"hidden\" name=\"csrf\" value=\"{token}\">\
             <label for=\"remove-password\">Your password, to remove the authenticator app</label>\
             <input id=\"remove-password\" name=\"password\" type=\"password\" autocomplete=\"current-password\" required>\
             <button id=\"totp-remove\" type=\"submit\">Remove the authenticator app</button></form>",
            account.factors.recovery_left
        )
    } else {
        let status = if account.factors.passkeys > 0 {
            format!(
                "No authenticator app: your passkeys are your second factor. Recovery codes left: \
                 <strong id=\"recovery-left\">{}</strong>.</p>\
                 <form id=\"recovery-form\" method=\"post\" action=\"/account/recovery-codes\">\
                 <input type=\"hidden\" name=\"csrf\" value=\"{token}\">\
                 <button id=\"new-recovery-codes\" type=\"submit\">New recovery codes</button></form>",
                account.factors.recovery_left
            )
        } else {
            "No second factor: signing in asks for your password only.</p>".to_string()
        };
        format!(
            "<p id=\"totp-status\">{status}\
             <form id=\"totp-form\" method=\"post\" action=\"/account/totp\">\
             <input type=\"hidden\" name=\"csrf\" value=\"{token}\">\
             <button id=\"totp-setup\" type=\"submit\">Set up an authenticator app</button></form>"
        )
    };
    let passkeys: String = account
        .passkeys
        .iter()
        .map(|p| {
            let used = p.last_used_at.map(|t| format!(", last used {}", when(t))).unwrap_or_default();
            let text = format!("{} (added {}{used})", p.name, when(p.created_at));
            format!(
                "<li>{} <form method=\"post\" action=\"/account/passkeys/remove\">\
                 <input type=\"hidden\" name=\"csrf\" value=\"{token}\">\
                 <input type=\"hidden\" name=\"passkey\" value=\"{id}\">\
                 <label for=\"passkey-password-{id}\">Your password, to remove it</label>\
                 <input id=\"passkey-password-{id}\" name=\"password\" type=\"password\" \
                 autocomplete=\"current-password\" required>\
                 <button type=\"submit\" aria-label=\"Remove the passkey {}\">Remove</button></form></li>",
                escape(&text),
                escape(&p.name),
                id = p.id,
            )
        })
        .collect();
    let sessions: String = account
        .sessions
        .iter()
        .map(|s| {
            let text =
                format!("Signed in {} on {}, last used {}", how(&s.amr), when(s.auth_time), when(s.last_used_at));
            if s.current {
                format!("<li class=\"current\">{} <strong>(this browser)</strong></li>", escape(&text))
            } else {
                let aria = format!("End the session signed in on {}", when(s.auth_time));
                format!(
                    "<li>{} {}</li>",
                    escape(&text),
                    button_form("/account/sessions/end", &token, "session", &s.sid, "End", &aria)
                )
            }
        })
        .collect();
    let grants: String = account
        .grants
        .iter()
        .map(|g| {
            let text = format!(
                "{}: {} (since {}, until {}{})",
                g.client,
                g.scope,
                when(g.created_at),
                when(g.expires_at),
                if g.this_session { ", through this browser" } else { "" }
            );
            let aria = format!("End the access of {} given on {}", g.client, when(g.created_at));
            format!(
                "<li>{} {}</li>",
                escape(&text),
                button_form("/account/grants/end", &token, "grant", &g.id, "End", &aria)
            )
        })
        .collect();
    let consents: String = account
        .consents
        .iter()
        .map(|c| {
            let text = format!("{}: {} (since {})", c.client, c.scope, when(c.since));
            let aria = format!("Revoke what you allowed {}", c.client);
            format!(
                "<li>{} {}</li>",
                escape(&text),
                button_form("/account/consents/revoke", &token, "client", &c.client, "Revoke", &aria)
            )
        })
        .collect();
    let none = |list: String, text: &str| if list.is_empty() { format!("<li>{text}</li>") } else { list };
    let notice = match message {
        Some((true, m)) => format!("<p id=\"notice\" class=\"message ok\" role=\"status\">{}</p>", escape(m)),
        Some((false, m)) => format!("<p id=\"notice\" class=\"message error\" role=\"alert\">{}</p>", escape(m)),
        None => String::new(),
    };
    fill(
        ACCOUNT_HTML,
        &[
            ("notice", &notice),
            ("login", &escape(&u.login)),
            ("name", &escape(name.trim())),
            ("email", &escape(u.email.as_deref().unwrap_or("(none)"))),
            ("csrf", &token),
            ("second_factor", &second_factor),
            ("passkeys", &none(passkeys, "None")),
            ("passkey_add", &passkey_create_form(&token, creation)),
            ("sessions", &none(sessions, "None")),
            ("grants", &none(grants, "None")),
            ("consents", &none(consents, "None: applications that ask will ask again.")),
        ],
    )
}

/// The account page of `session`, with a message.
async fn show(
    req: &HttpRequest,
    core: &Arc<Core>,
    session: SsoSession,
    status: StatusCode,
    message: Option<(bool, &str)>,
) -> Result<HttpResponse, AccountError> {
    let (csrf, set) = csrf_cookie(req, core);
    let browser = csrf.clone();
    let (account, creation) = core
        .call(move |c| {
            let creation = c.passkey_creation(&session.user, &browser)?;
            Ok((c.account(&session)?, creation))
        })
        .await?;
    Ok(page_answer(status, render(core, &account, &creation, &csrf, message), set))
}

async fn account_page(req: HttpRequest, core: web::Data<Core>) -> Result<HttpResponse, AccountError> {
    let core = core.into_inner();
    let Some(token) = sso_token(&req) else { return Ok(see_other(TO_LOGIN)) };
    let Some(session) = core.call(move |c| c.sso_session(&token)).await? else { return Ok(see_other(TO_LOGIN)) };
    let query = Form::parse(req.query_string().as_bytes()).unwrap_or_else(Form::empty);
    let done = query.one("done").and_then(notice);
    show(&req, &core, session, StatusCode::OK, done.map(|m| (true, m))).await
}

// ----- the actions -----

async fn change_password(
    req: HttpRequest,
    payload: web::Payload,
    core: web::Data<Core>,
) -> Result<HttpResponse, AccountError> {
    let core = core.into_inner();
    let p = posted(&req, payload, &core).await?;
    let current = Secret::new(p.form.one("current").unwrap_or(""));
    let new = Secret::new(p.form.one("new").unwrap_or(""));
    if p.form.one("again") != Some(new.expose()) {
        return show(&req, &core, p.session, StatusCode::BAD_REQUEST, Some((false, "The two new passwords differ.")))
            .await;
    }
    let (session, token, caller) = (p.session.clone(), p.token, p.caller);
    let changed = core.call_hashing(move |c| c.change_own_password(&caller, &session, &token, &current, &new)).await;
    match changed {
        Ok(()) => Ok(see_other("/account?done=password")),
        Err(Error::WrongPassword | Error::BadCredentials) => {
            show(&req, &core, p.session, StatusCode::UNAUTHORIZED, Some((false, "The current password is wrong.")))
                .await
        }
        Err(Error::Invalid { reason, .. }) => {
            let m = format!("The new password {reason}.");
            show(&req, &core, p.session, StatusCode::BAD_REQUEST, Some((false, &m))).await
        }
        Err(e) => Err(e.into()),
    }
}

fn enrol_page(core: &Core, csrf: &str, setup: &str, error: Option<&str>) -> String {
    let error =
        error.map(|e| format!("<p class=\"message error\" role=\"alert\">{}</p>", escape(e))).unwrap_or_default();
    fill(TOTP_ENROL_HTML, &[("error", &error), ("setup", setup), ("csrf", &escape(&core.csrf_token(csrf)))])
}

async fn totp_begin(
    req: HttpRequest,
    payload: web::Payload,
    core: web::Data<Core>,
) -> Result<HttpResponse, AccountError> {
    use base64::Engine;
    let core = core.into_inner();
    let p = posted(&req, payload, &core).await?;
    let (user, caller) = (p.session.user.clone(), p.caller);
    let enrolment = match core.call(move |c| c.begin_own_totp(&caller, &user)).await {
        Ok(e) => e,
        Err(Error::Exists(_)) => {
            let m = "An authenticator app is set up already: remove it first.";
            return show(&req, &core, p.session, StatusCode::CONFLICT, Some((false, m))).await;
        }
        Err(e) => return Err(e.into()),
    };
    let svg = base64::engine::general_purpose::STANDARD.encode(enrolment.qr_svg.as_bytes());
    let setup = format!(
        "<p>Scan this code with your authenticator app (any app that takes TOTP codes):</p>\
         <p><img id=\"totp-qr\" src=\"data:image/svg+xml;base64,{svg}\" width=\"240\" height=\"240\" \
         alt=\"A QR code holding the setup of your authenticator app\"></p>\
         <p>Or type this key into it: <code id=\"totp-secret\">{}</code></p>",
        escape(enrolment.secret.expose())
    );
    let (csrf, _) = csrf_cookie(&req, &core);
    Ok(page_answer(StatusCode::OK, enrol_page(&core, &csrf, &setup, None), None))
}

fn codes_page(codes: &[Secret], message: &str) -> String {
    let codes: String = codes.iter().map(|c| format!("<li><code>{}</code></li>", escape(c.expose()))).collect();
    fill(RECOVERY_CODES_HTML, &[("codes", &codes), ("message", &escape(message))])
}

async fn totp_confirm(
    req: HttpRequest,
    payload: web::Payload,
    core: web::Data<Core>,
) -> Result<HttpResponse, AccountError> {
    let core = core.into_inner();
    let p = posted(&req, payload, &core).await?;
    let code = p.form.owned("code").unwrap_or_default();
    let (user, caller) = (p.session.user.clone(), p.caller);
    let confirmed = core.call(move |c| c.totp_confirm(&caller, &user, &code)).await;
    let (csrf, _) = csrf_cookie(&req, &core);
    let again = |status, m: &str| page_answer(status, enrol_page(&core, &csrf, "", Some(m)), None);
    Ok(match confirmed {
        Ok(codes) => page_answer(
            StatusCode::OK,
            codes_page(&codes, "The authenticator app is on: signing in asks for its code from now on."),
            None,
        ),
        Err(Error::BadCredentials) => {
            again(StatusCode::UNAUTHORIZED, "The code is wrong: type the one your app shows now.")
        }
        Err(e @ Error::Throttled { .. }) => crate::web::with_retry_after(
            again(StatusCode::TOO_MANY_REQUESTS, "Too many wrong codes: wait a while and try again."),
            &e,
        ),
        Err(Error::Invalid { .. }) => message_page(
            StatusCode::BAD_REQUEST,
            "Nothing to confirm",
            "No authenticator app is being set up: start again from your account page.",
        ),
        Err(e) => return Err(e.into()),
    })
}

async fn totp_remove(
    req: HttpRequest,
    payload: web::Payload,
    core: web::Data<Core>,
) -> Result<HttpResponse, AccountError> {
    let core = core.into_inner();
    let p = posted(&req, payload, &core).await?;
    let removed = after_password(&core, &p, |c, caller, user| c.totp_remove(caller, user)).await;
    match removed {
        Ok(_) => Ok(see_other("/account?done=totp-removed")),
        Err(Error::WrongPassword | Error::BadCredentials) => {
            let m = "The password is wrong: the authenticator app stays.";
            show(&req, &core, p.session, StatusCode::UNAUTHORIZED, Some((false, m))).await
        }
        Err(e) => Err(e.into()),
    }
}

async fn recovery_codes(
    req: HttpRequest,
    payload: web::Payload,
    core: web::Data<Core>,
) -> Result<HttpResponse, AccountError> {
    let core = core.into_inner();
    let p = posted(&req, payload, &core).await?;
    let (user, caller) = (p.session.user.clone(), p.caller);
    match core.call(move |c| c.new_recovery_codes(&caller, &user)).await {
        Ok(codes) => Ok(page_answer(
            StatusCode::OK,
            codes_page(&codes, "New recovery codes: the earlier ones no longer work."),
            None,
        )),
        Err(Error::Invalid { .. }) => {
            let m = "Recovery codes need an authenticator app: set one up first.";
            show(&req, &core, p.session, StatusCode::BAD_REQUEST, Some((false, m))).await
        }
        Err(e) => Err(e.into()),
    }
}

async fn end_session(
    req: HttpRequest,
    payload: web::Payload,
    core: web::Data<Core>,
) -> Result<HttpResponse, AccountError> {
    let core = core.into_inner();
    let p = posted(&req, payload, &core).await?;
    let sid = p.form.owned("session").unwrap_or_default();
    let own = sid == p.session.sid_hex();
    let (user, caller) = (p.session.user.clone(), p.caller);
    let ended = core.call(move |c| c.end_own_session(&caller, &user, &sid)).await?;
    if !ended {
        let m = "No such session: it has ended already.";
        return show(&req, &core, p.session, StatusCode::NOT_FOUND, Some((false, m))).await;
    }
    if own {
        // This browser's own session: signed out here too.
        let mut removal = sso_cookie(&req, &core, String::new());
        removal.make_removal();
        let mut res = see_other(TO_LOGIN);
        res.add_cookie(&removal).map_err(crate::core::internal)?;
        return Ok(res);
    }
    Ok(see_other("/account?done=session"))
}

async fn end_other_sessions(
    req: HttpRequest,
    payload: web::Payload,
    core: web::Data<Core>,
) -> Result<HttpResponse, AccountError> {
    let core = core.into_inner();
    let p = posted(&req, payload, &core).await?;
    let (session, caller) = (p.session, p.caller);
    core.call(move |c| c.end_other_sessions(&caller, &session)).await?;
    Ok(see_other("/account?done=sessions"))
}

async fn end_grant(
    req: HttpRequest,
    payload: web::Payload,
    core: web::Data<Core>,
) -> Result<HttpResponse, AccountError> {
    let core = core.into_inner();
    let p = posted(&req, payload, &core).await?;
    let id = p.form.owned("grant").unwrap_or_default();
    let (user, caller) = (p.session.user.clone(), p.caller);
    if core.call(move |c| c.end_own_grant(&caller, &user, &id)).await? {
        return Ok(see_other("/account?done=grant"));
    }
    let m = "No such access: it has ended already.";
    show(&req, &core, p.session, StatusCode::NOT_FOUND, Some((false, m))).await
}

async fn revoke_consent(
    req: HttpRequest,
    payload: web::Payload,
    core: web::Data<Core>,
) -> Result<HttpResponse, AccountError> {
    let core = core.into_inner();
    let p = posted(&req, payload, &core).await?;
    let client = p.form.owned("client").unwrap_or_default();
    let (user, caller) = (p.session.user.clone(), p.caller);
    if core.call(move |c| c.revoke_own_consent(&caller, &user, &client)).await? {
        return Ok(see_other("/account?done=consent"));
    }
    let m = "No such consent: it was withdrawn already.";
    show(&req, &core, p.session, StatusCode::NOT_FOUND, Some((false, m))).await
}

async fn passkey_add(
    req: HttpRequest,
    payload: web::Payload,
    core: web::Data<Core>,
) -> Result<HttpResponse, AccountError> {
    let core = core.into_inner();
    let p = posted(&req, payload, &core).await?;
    let bytes = |name| p.form.one(name).and_then(crate::core::signins::unb64url).unwrap_or_default();
    let made = PasskeyRegistration {
        challenge: bytes("challenge"),
        client_data_json: bytes("client_data"),
        attestation_object: bytes("attestation"),
    };
    let name = p.form.owned("name").unwrap_or_default();
    let (csrf, _) = csrf_cookie(&req, &core);
    let (user, caller) = (p.session.user.clone(), p.caller);
    let added = core.call(move |c| c.add_passkey(&caller, &user, &csrf, &made, &name)).await;
    match added {
        Ok(codes) if codes.is_empty() => Ok(see_other("/account?done=passkey-added")),
        Ok(codes) => Ok(page_answer(
            StatusCode::OK,
            codes_page(&codes, "The passkey is added. Keep these codes: each signs you in once if you lose it."),
            None,
        )),
        Err(Error::Exists(_)) => {
            let m = "This authenticator holds a passkey of yours already.";
            show(&req, &core, p.session, StatusCode::CONFLICT, Some((false, m))).await
        }
        Err(Error::Invalid { field, reason }) => {
            let m = if field == "name" {
                format!("The name {reason}.")
            } else {
                "The passkey could not be added: open the page and try again.".to_string()
            };
            show(&req, &core, p.session, StatusCode::BAD_REQUEST, Some((false, &m))).await
        }
        Err(e) => Err(e.into()),
    }
}

async fn passkey_remove(
    req: HttpRequest,
    payload: web::Payload,
    core: web::Data<Core>,
) -> Result<HttpResponse, AccountError> {
    let core = core.into_inner();
    let p = posted(&req, payload, &core).await?;
    let id = p.form.one("passkey").and_then(|v| v.parse::<i64>().ok()).unwrap_or(0);
    let removed = after_password(&core, &p, move |c, caller, user| c.remove_passkey(caller, user, id)).await;
    match removed {
        Ok(true) => Ok(see_other("/account?done=passkey-removed")),
        Ok(false) => {
            let m = "No such passkey: it was removed already.";
            show(&req, &core, p.session, StatusCode::NOT_FOUND, Some((false, m))).await
        }
        Err(Error::WrongPassword | Error::BadCredentials) => {
            let m = "The password is wrong: the passkey stays.";
            show(&req, &core, p.session, StatusCode::UNAUTHORIZED, Some((false, m))).await
        }
        Err(e) => Err(e.into()),
    }
}
