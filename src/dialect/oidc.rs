//! OpenID Connect: the provider's endpoints (Core 1.0, Discovery 1.0, RFC 6749, 7636, 8414,
//! 9207, RP-Initiated Logout 1.0) and the hosted sign-in pages they send a browser to.
//!
//! - `GET /.well-known/openid-configuration` (and RFC 8414's `/.well-known/oauth-authorization-server`,
//!   the same document) → the metadata, `issuer` = `public_url`
//! - `GET /oauth2/jwks` → the signing keys, the next ones published before they sign
//! - `GET|POST /oauth2/authorize` (`response_type=code`, `client_id`, `redirect_uri`, `scope` with
//!   `openid`, `state`, `nonce`, PKCE `S256`, `prompt`, `max_age`, `login_hint`) → 303 to the
//!   client's redirect URI with `code`, `state`, `iss`; or to `/login`; an unknown client or a
//!   redirect URI it did not register is an error page (400), never a redirect; any other error is
//!   a redirect with `error`, `error_description`, `state`, `iss`
//! - `GET /login`, `POST /login` (`login`, `password`), `POST /login/second-factor` (`code`),
//!   `POST /login/passkey` and `POST /login/second-factor/passkey` (a WebAuthn assertion:
//!   `challenge`, `credential_id`, `client_data`, `authenticator_data`, `signature`,
//!   `user_handle`, base64url, filled in by static/passkey.js), `POST /consent` (`decision=allow|deny`): the hosted pages, plain HTML forms, each form with a
//!   CSRF token bound to the browser's `gatehouse_csrf` cookie and an Origin check; the SSO session
//!   is the `gatehouse_sso` cookie (HttpOnly, SameSite=Lax, Secure over TLS)
//! - `POST /oauth2/token`: `authorization_code` (`code`, `redirect_uri`, `code_verifier`),
//!   `refresh_token`, `client_credentials`; client authentication `client_secret_basic`,
//!   `client_secret_post` or `none` (public clients) → 200 `{"access_token","token_type":"Bearer",
//!   "expires_in","scope","refresh_token"?,"id_token"?}`; errors RFC 6749 §5.2 (`invalid_client`
//!   401 with `WWW-Authenticate: Basic`, the others 400)
//! - `GET|POST /oauth2/userinfo` with `Authorization: Bearer` → the claims; RFC 6750 errors
//! - `POST /oauth2/device_authorization` (RFC 8628; client authentication as at the token
//!   endpoint) → `{"device_code","user_code","verification_uri","verification_uri_complete",
//!   "expires_in","interval"}`; the device polls the token endpoint with
//!   `grant_type=urn:ietf:params:oauth:grant-type:device_code` (`authorization_pending`,
//!   `slow_down`, `access_denied`, `expired_token` until then); the person types the code at
//!   `GET /activate` (`POST /activate`, then `POST /activate/decide` with `decision=allow|deny`)
//! - `GET|POST /oauth2/logout` (`id_token_hint`, `post_logout_redirect_uri`, `state`, `client_id`)
//!   → a confirmation page (a form), then the SSO session and its tokens end, and 303 to the
//!   registered post-logout URI with `state`, or a signed-out page

use actix_web::cookie::Cookie;
use actix_web::http::header::{HeaderValue, LOCATION, WWW_AUTHENTICATE};
use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest, HttpResponse};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use crate::core::device_grant::DevicePoll;
use crate::core::guard::Caller;
use crate::core::oidc::{AuthParams, AuthRequest, AuthzError, Client, Refused, SsoSession, Tokens};
use crate::core::passkeys::{PasskeyAssertion, Request as PasskeyRequest, AMR_PASSKEY, AMR_PASSWORD_PASSKEY};
use crate::core::totp::SecondFactors;
use crate::core::{Core, Error, Secret};
use crate::web::forms::{
    csrf_cookie, escape, form_is_ours, page_csp, passkey_get_form, safe_next, sso_cookie, sso_token, Form,
};
use crate::web::page::{self, fill, html};
use crate::web::{media_type, net, read_body, BodyError};

const LOGIN_HTML: &str = include_str!("../../static/login.html");
const SECOND_FACTOR_HTML: &str = include_str!("../../static/second_factor.html");
const CONSENT_HTML: &str = include_str!("../../static/consent.html");
const LOGOUT_HTML: &str = include_str!("../../static/logout.html");
const MESSAGE_HTML: &str = include_str!("../../static/message.html");
const ACTIVATE_HTML: &str = include_str!("../../static/activate.html");
const APPROVE_DEVICE_HTML: &str = include_str!("../../static/approve_device.html");
/// The device grant's grant_type (RFC 8628 §3.4).
const DEVICE_GRANT: &str = "urn:ietf:params:oauth:grant-type:device_code";

/// A half-done sign-in (password checked, second factor to come) lasts this long.
const PENDING_MS: i64 = 5 * 60_000;

pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.route("/.well-known/openid-configuration", web::get().to(metadata))
        .route("/.well-known/oauth-authorization-server", web::get().to(metadata))
        .route("/oauth2/jwks", web::get().to(jwks))
        .route("/oauth2/authorize", web::get().to(authorize))
        .route("/oauth2/authorize", web::post().to(authorize))
        .route("/oauth2/authorize/resume", web::get().to(resume))
        .route("/oauth2/token", web::post().to(token))
        .route("/oauth2/userinfo", web::get().to(userinfo))
        .route("/oauth2/userinfo", web::post().to(userinfo))
        .route("/oauth2/logout", web::get().to(logout_page))
        .route("/oauth2/logout", web::post().to(logout))
        .route("/login", web::get().to(login_page))
        .route("/login", web::post().to(login))
        .route("/login/second-factor", web::post().to(second_factor))
        .route("/login/passkey", web::post().to(passkey_login))
        .route("/login/second-factor/passkey", web::post().to(second_factor_passkey))
        .route("/consent", web::post().to(consent))
        .route("/oauth2/device_authorization", web::post().to(device_authorization))
        .route("/activate", web::get().to(activate_page))
        .route("/activate", web::post().to(activate))
        .route("/activate/decide", web::post().to(activate_decide));
}

// ----- answers -----

use crate::web::{oauth_error, oauth_json as json_answer};

crate::web::door_error!(
    /// A refused call: RFC 6749 §5.2 JSON at the token endpoint (through [`error`]), RFC 6750 at
    /// userinfo, an error page at the browser's endpoints.
    OidcError,
    "OpenID Connect"
);

impl From<Error> for OidcError {
    fn from(e: Error) -> OidcError {
        error(&e).into()
    }
}

/// The one mapping from the core's errors to the token endpoint's answers (RFC 6749 §5.2).
fn error(e: &Error) -> HttpResponse {
    match e {
        Error::BadClient => {
            let mut res = oauth_error(StatusCode::UNAUTHORIZED, "invalid_client", "Client authentication failed.");
            res.headers_mut().insert(WWW_AUTHENTICATE, HeaderValue::from_static("Basic realm=\"gatehouse\""));
            res
        }
        Error::BadToken | Error::Gone | Error::Blocked | Error::UnknownUser(_) | Error::BadCredentials => {
            oauth_error(StatusCode::BAD_REQUEST, "invalid_grant", "The grant is invalid, expired or used.")
        }
        Error::NotMember | Error::UnknownApp(_) => {
            oauth_error(StatusCode::BAD_REQUEST, "unauthorized_client", "The client may not use this grant.")
        }
        Error::Invalid { field, .. } if field == "scope" => {
            oauth_error(StatusCode::BAD_REQUEST, "invalid_scope", &e.to_string())
        }
        Error::Throttled { .. } => crate::web::with_retry_after(
            oauth_error(StatusCode::TOO_MANY_REQUESTS, "slow_down", "Too many failed attempts, retry later."),
            e,
        ),
        Error::Busy | Error::NoRoom => crate::web::with_retry_after(
            oauth_error(StatusCode::SERVICE_UNAVAILABLE, "temporarily_unavailable", "Server busy, retry later."),
            e,
        ),
        Error::Internal(id) => {
            oauth_error(StatusCode::INTERNAL_SERVER_ERROR, "server_error", &format!("Internal error (id {id})."))
        }
        Error::SecondFactorRequired => oauth_error(StatusCode::BAD_REQUEST, "interaction_required", &e.to_string()),
        Error::Invalid { .. } | Error::WrongPassword | Error::UnknownApiKey | Error::Exists(_) | Error::Lost => {
            oauth_error(StatusCode::BAD_REQUEST, "invalid_request", &e.to_string())
        }
    }
}

/// A page with a message (an error the browser's user must read, or "signed out").
fn message_page(status: StatusCode, title: &str, text: &str) -> HttpResponse {
    html(status, MESSAGE_HTML.replace("{{title}}", &escape(title)).replace("{{message}}", &escape(text)))
}

fn form_page(body: String, target: Option<&str>, csrf: Option<Cookie<'static>>) -> HttpResponse {
    form_page_status(StatusCode::OK, body, target, csrf)
}

fn form_page_status(
    status: StatusCode,
    body: String,
    target: Option<&str>,
    csrf: Option<Cookie<'static>>,
) -> HttpResponse {
    let mut res = page::answer(status);
    res.content_type("text/html; charset=utf-8").insert_header(("Content-Security-Policy", page_csp(target)));
    if let Some(c) = csrf {
        res.cookie(c);
    }
    res.body(body)
}

fn see_other(location: &str) -> HttpResponse {
    page::answer(StatusCode::SEE_OTHER).insert_header((LOCATION, location.to_string())).finish()
}

// ----- forms and queries -----

async fn form_body(req: &HttpRequest, payload: web::Payload, core: &Core) -> Result<Form, OidcError> {
    let invalid = |status, d: &str| OidcError::from(oauth_error(status, "invalid_request", d));
    if media_type(req).as_deref() != Some("application/x-www-form-urlencoded") {
        return Err(invalid(StatusCode::BAD_REQUEST, "The body must be application/x-www-form-urlencoded."));
    }
    let body = read_body(req, payload, &core.config.http).await.map_err(|e| match e {
        BodyError::TooLarge(_) => invalid(StatusCode::PAYLOAD_TOO_LARGE, "The body is too large."),
        BodyError::TimedOut => invalid(StatusCode::REQUEST_TIMEOUT, "The body came too slowly."),
        BodyError::Broken => invalid(StatusCode::BAD_REQUEST, "Incomplete body."),
    })?;
    Form::parse(&body).ok_or_else(|| invalid(StatusCode::BAD_REQUEST, "The body is not a form this endpoint takes."))
}

/// The query of a GET, or the form of a POST.
async fn params(req: &HttpRequest, payload: web::Payload, core: &Core) -> Result<Form, OidcError> {
    if req.method() == actix_web::http::Method::POST {
        return form_body(req, payload, core).await;
    }
    Form::parse(req.query_string().as_bytes()).ok_or_else(|| {
        message_page(StatusCode::BAD_REQUEST, "Request refused", "The request's parameters cannot be read.").into()
    })
}

// ----- discovery -----

async fn metadata(core: web::Data<Core>) -> HttpResponse {
    let issuer = core.issuer();
    let basic = json!(["client_secret_basic"]);
    json_answer(
        StatusCode::OK,
        &json!({
            "issuer": issuer,
            "authorization_endpoint": format!("{issuer}/oauth2/authorize"),
            "token_endpoint": format!("{issuer}/oauth2/token"),
            "userinfo_endpoint": format!("{issuer}/oauth2/userinfo"),
            "jwks_uri": format!("{issuer}/oauth2/jwks"),
            "end_session_endpoint": format!("{issuer}/oauth2/logout"),
            "introspection_endpoint": format!("{issuer}/oauth2/introspect"),
            "revocation_endpoint": format!("{issuer}/oauth2/revoke"),
            "device_authorization_endpoint": format!("{issuer}/oauth2/device_authorization"),
            "scopes_supported": crate::core::oidc::SCOPES,
            "response_types_supported": ["code"],
            "response_modes_supported": ["query"],
            "grant_types_supported": ["authorization_code", "refresh_token", "client_credentials", DEVICE_GRANT],
            "subject_types_supported": ["public"],
            "id_token_signing_alg_values_supported": crate::core::oidc::SIGNING_ALGS,
            "token_endpoint_auth_methods_supported": ["client_secret_basic", "client_secret_post", "none"],
            "introspection_endpoint_auth_methods_supported": basic,
            "revocation_endpoint_auth_methods_supported": basic,
            "code_challenge_methods_supported": ["S256"],
            "claims_supported": ["sub", "iss", "aud", "exp", "iat", "auth_time", "nonce", "acr", "amr", "azp",
                "at_hash", "sid", "name", "given_name", "family_name", "preferred_username", "locale", "email",
                "email_verified", "groups", "userType"],
            "prompt_values_supported": ["none", "login", "consent", "select_account"],
            "authorization_response_iss_parameter_supported": true,
            "claims_parameter_supported": false,
            "request_parameter_supported": false,
            "request_uri_parameter_supported": false,
            "require_request_uri_registration": false,
            "frontchannel_logout_supported": false,
            "backchannel_logout_supported": true,
            "backchannel_logout_session_supported": true,
        }),
    )
}

async fn jwks(core: web::Data<Core>) -> Result<HttpResponse, OidcError> {
    let keys = core.into_inner().call(|c| c.jwks()).await?;
    Ok(HttpResponse::Ok()
        .content_type("application/json")
        .insert_header(("Cache-Control", "public, max-age=300"))
        .body(keys.to_string()))
}

// ----- the authorization endpoint -----

fn auth_params(form: &Form) -> AuthParams {
    AuthParams {
        client_id: form.owned("client_id"),
        redirect_uri: form.owned("redirect_uri"),
        response_type: form.owned("response_type"),
        scope: form.owned("scope"),
        state: form.owned("state"),
        nonce: form.owned("nonce"),
        code_challenge: form.owned("code_challenge"),
        code_challenge_method: form.owned("code_challenge_method"),
        prompt: form.owned("prompt"),
        max_age: form.owned("max_age"),
        login_hint: form.owned("login_hint"),
        ui_locales: form.owned("ui_locales"),
        request_object: form.one("request").is_some() || form.one("request_uri").is_some(),
        response_mode: form.owned("response_mode"),
    }
}

/// Back to the client with an error (RFC 6749 §4.1.2.1), `state` and `iss`.
fn error_redirect(
    core: &Core,
    redirect_uri: &str,
    state: Option<&str>,
    error: &str,
    description: &str,
) -> HttpResponse {
    let to = core.redirect_with(
        redirect_uri,
        &[("error", error), ("error_description", description), ("state", state.unwrap_or(""))],
    );
    see_other(&to)
}

fn refused_page(text: &str) -> HttpResponse {
    message_page(StatusCode::BAD_REQUEST, "Sign-in refused", text)
}

async fn authorize(req: HttpRequest, payload: web::Payload, core: web::Data<Core>) -> Result<HttpResponse, OidcError> {
    let core = core.into_inner();
    let form = params(&req, payload, &core)
        .await
        .map_err(|_| OidcError::from(refused_page("The request's parameters cannot be read.")))?;
    if form.repeated.iter().any(|k| k == "client_id" || k == "redirect_uri") {
        return Ok(refused_page("A parameter was given more than once."));
    }
    let repeated = !form.repeated.is_empty();
    let p = auth_params(&form);
    let checked = core.call(move |c| Ok(c.check_authorization(p))).await?;
    let (client, request) = match checked {
        Ok(ok) => ok,
        Err(Refused { error: AuthzError::Page(m), .. }) => return Ok(refused_page(&m)),
        Err(Refused { back: Some((uri, state)), error: AuthzError::Redirect { error, description } }) => {
            return Ok(error_redirect(&core, &uri, state.as_deref(), error, &description))
        }
        Err(Refused { back: None, error: AuthzError::Redirect { .. } }) => {
            return Ok(refused_page("The request is invalid."))
        }
    };
    if repeated {
        return Ok(error_redirect(
            &core,
            &request.redirect_uri,
            request.state.as_deref(),
            "invalid_request",
            "a parameter was given more than once",
        ));
    }
    proceed(&req, &core, client, request).await
}

/// Where an authorization request goes next: a code for a fitting session, the consent page,
/// or the sign-in page (prompt=none: `login_required` or `consent_required` instead).
async fn proceed(
    req: &HttpRequest,
    core: &std::sync::Arc<Core>,
    client: Client,
    request: AuthRequest,
) -> Result<HttpResponse, OidcError> {
    let caller = net::caller(req, &core.config, "oidc");
    let token = sso_token(req);
    let (c2, r2) = (client.clone(), request.clone());
    let decided = core
        .call(move |c| -> Result<Next, Error> {
            let session = match &token {
                Some(t) => c.sso_session(t)?,
                None => None,
            };
            let Some(session) = session.filter(|s| c.session_fits(&r2, s)) else { return Ok(Next::Login) };
            if c.needs_consent(&c2, &r2, &session.user)? {
                return Ok(Next::Consent(Box::new(session)));
            }
            match c.issue_code(&caller, &c2, &r2, &session) {
                Ok(to) => Ok(Next::Redirect(to)),
                Err(Error::NotMember) => Ok(Next::Denied),
                Err(e) => Err(e),
            }
        })
        .await;
    let back = |error: &str, d: &str| error_redirect(core, &request.redirect_uri, request.state.as_deref(), error, d);
    let next = match decided {
        Ok(n) => n,
        Err(Error::Busy) => return Ok(back("temporarily_unavailable", "the server is busy")),
        Err(e) => return Ok(back("server_error", &e.to_string())),
    };
    Ok(match next {
        Next::Redirect(to) => see_other(&to),
        Next::Denied => back("access_denied", "the user may not sign in to this client"),
        Next::Login if request.prompt.none => back("login_required", "no fitting sign-in"),
        Next::Consent(_) if request.prompt.none => back("consent_required", "the user has not consented"),
        Next::Login => {
            let sealed = core.seal_request(&request)?;
            see_other(&format!("/login?r={sealed}"))
        }
        Next::Consent(session) => consent_page(req, core, &client, &request, &session)?,
    })
}

enum Next {
    Redirect(String),
    Denied,
    Login,
    Consent(Box<SsoSession>),
}

/// After a sign-in or a consent: the sealed request goes on.
async fn resume(req: HttpRequest, core: web::Data<Core>) -> Result<HttpResponse, OidcError> {
    let core = core.into_inner();
    let form = Form::parse(req.query_string().as_bytes());
    let sealed = form.as_ref().and_then(|f| f.owned("r")).unwrap_or_default();
    let Some(request) = core.open_request(&sealed) else {
        return Ok(refused_page(
            "This sign-in took too long or was not started here: start again from the application.",
        ));
    };
    let id = request.client_id.clone();
    let client = match core.call(move |c| c.client(&id)).await {
        Ok(c) => c,
        Err(Error::UnknownApp(_)) => return Ok(refused_page("The request names an unknown client.")),
        Err(e) => return Err(e.into()),
    };
    proceed(&req, &core, client, request).await
}

// ----- the hosted sign-in -----

#[derive(Serialize, Deserialize)]
struct Pending {
    user_id: i64,
    amr: Vec<String>,
    /// The CSRF cookie of the browser the password was typed in.
    browser: String,
    r: Option<String>,
    next: Option<String>,
}

fn error_line(error: Option<&str>) -> String {
    error.map(|e| format!("<p class=\"message error\" role=\"alert\">{}</p>", escape(e))).unwrap_or_default()
}

fn login_form(core: &Core, sealed: &str, next: &str, csrf: &str, login: &str, error: Option<&str>) -> String {
    let token = core.csrf_token(csrf);
    // Any discoverable passkey of this box: the request needs no store.
    let passkey = match core.passkey_request(csrf, None) {
        Ok(request) => passkey_get_form(
            "passkey-form",
            "/login/passkey",
            &[("r", sealed), ("next", next), ("csrf", &token)],
            &request,
            "Sign in with a passkey",
        ),
        Err(_) => String::new(),
    };
    fill(
        LOGIN_HTML,
        &[
            ("r", &escape(sealed)),
            ("next", &escape(next)),
            ("csrf", &escape(&token)),
            ("login", &escape(login)),
            ("error", &error_line(error)),
            ("passkey", &passkey),
        ],
    )
}

/// The second-factor page: the code form (a TOTP code or a recovery code), and a passkey's when
/// the user has one.
fn second_factor_form(
    core: &Core,
    p: &str,
    csrf: &str,
    factors: &SecondFactors,
    passkey: Option<&PasskeyRequest>,
    error: Option<&str>,
) -> String {
    let token = core.csrf_token(csrf);
    let label = if factors.totp {
        "The 6-digit code of your authenticator app, or a recovery code"
    } else {
        "A recovery code (or use your passkey)"
    };
    let passkey = passkey
        .filter(|r| !r.allow.is_empty())
        .map(|r| {
            passkey_get_form(
                "passkey-form",
                "/login/second-factor/passkey",
                &[("p", p), ("csrf", &token)],
                r,
                "Use a passkey",
            )
        })
        .unwrap_or_default();
    fill(
        SECOND_FACTOR_HTML,
        &[
            ("p", &escape(p)),
            ("csrf", &escape(&token)),
            ("code_label", label),
            ("error", &error_line(error)),
            ("passkey", &passkey),
        ],
    )
}

async fn login_page(req: HttpRequest, core: web::Data<Core>) -> Result<HttpResponse, OidcError> {
    let core = core.into_inner();
    let form = Form::parse(req.query_string().as_bytes()).unwrap_or(Form::empty());
    let sealed = form.owned("r").unwrap_or_default();
    let request = if sealed.is_empty() { None } else { core.open_request(&sealed) };
    if !sealed.is_empty() && request.is_none() {
        return Ok(refused_page(
            "This sign-in took too long or was not started here: start again from the application.",
        ));
    }
    let next = form.one("next").and_then(safe_next).unwrap_or_default();
    let (csrf, set) = csrf_cookie(&req, &core);
    let hint = request.as_ref().and_then(|r| r.login_hint.clone()).unwrap_or_default();
    let target = request.as_ref().map(|r| r.redirect_uri.clone());
    Ok(form_page(login_form(&core, &sealed, &next, &csrf, &hint, None), target.as_deref(), set))
}

/// A POST of the sign-in page's forms (the password's or the passkey's): checked as ours, its
/// sealed authorization request (if any) still live.
struct SignInPost {
    form: Form,
    sealed: String,
    request: Option<AuthRequest>,
    target: Option<String>,
    next: String,
    csrf: String,
}

impl SignInPost {
    async fn read(req: &HttpRequest, payload: web::Payload, core: &Core) -> Result<SignInPost, HttpResponse> {
        let form = form_body(req, payload, core).await.map_err(|_| refused_page("The form cannot be read."))?;
        if !form_is_ours(req, core, &form) {
            return Err(message_page(
                StatusCode::FORBIDDEN,
                "Sign-in refused",
                "This form did not come from this page: open the sign-in page again.",
            ));
        }
        let sealed = form.owned("r").unwrap_or_default();
        let request = if sealed.is_empty() { None } else { core.open_request(&sealed) };
        if !sealed.is_empty() && request.is_none() {
            return Err(refused_page("This sign-in took too long: start again from the application."));
        }
        let target = request.as_ref().map(|r| r.redirect_uri.clone());
        let next = form.one("next").and_then(safe_next).unwrap_or_default();
        let (csrf, _) = csrf_cookie(req, core);
        Ok(SignInPost { form, sealed, request, target, next, csrf })
    }

    /// Where the browser goes once signed in.
    fn then(&self) -> Then {
        match &self.request {
            Some(_) => Then::Resume(self.sealed.clone()),
            None if !self.next.is_empty() => Then::Next(self.next.clone()),
            None => Then::Nothing,
        }
    }
}

async fn login(req: HttpRequest, payload: web::Payload, core: web::Data<Core>) -> Result<HttpResponse, OidcError> {
    let core = core.into_inner();
    let post = match SignInPost::read(&req, payload, &core).await {
        Ok(p) => p,
        Err(page) => return Ok(page),
    };
    let SignInPost { form, sealed, target, next, csrf, .. } = &post;
    let login = form.owned("login").unwrap_or_default();
    let password = Secret::new(form.one("password").unwrap_or(""));
    let caller = net::caller(&req, &core.config, "oidc");
    let typed = login.clone();
    let browser = csrf.clone();
    let checked = core
        .call_hashing(move |c| {
            let user = c.sign_in_password(&caller, &typed, &password)?;
            let factors = c.second_factors(user.id)?;
            let passkey = if factors.passkeys > 0 { Some(c.passkey_request(&browser, Some(user.id))?) } else { None };
            Ok((user, factors, passkey))
        })
        .await;
    let again = |status: StatusCode, message: &str| {
        form_page_status(status, login_form(&core, sealed, next, csrf, &login, Some(message)), target.as_deref(), None)
    };
    let (user, factors, passkey) = match checked {
        Ok(ok) => ok,
        Err(Error::BadCredentials | Error::Invalid { .. }) => {
            return Ok(again(StatusCode::UNAUTHORIZED, "The login or the password is wrong."))
        }
        Err(Error::Blocked) => return Ok(again(StatusCode::FORBIDDEN, "This account is blocked.")),
        Err(e @ Error::Throttled { .. }) => {
            return Ok(crate::web::with_retry_after(
                again(StatusCode::TOO_MANY_REQUESTS, "Too many failed attempts: wait a while and try again."),
                &e,
            ))
        }
        Err(e @ Error::Busy) => {
            return Ok(crate::web::with_retry_after(
                again(StatusCode::SERVICE_UNAVAILABLE, "The server is busy: try again."),
                &e,
            ))
        }
        Err(e) => return Ok(again(StatusCode::INTERNAL_SERVER_ERROR, &e.to_string())),
    };
    if factors.totp || factors.passkeys > 0 {
        let pending = Pending {
            user_id: user.id,
            amr: vec!["pwd".into()],
            browser: csrf.clone(),
            r: post.request.as_ref().map(|_| sealed.clone()),
            next: (!next.is_empty()).then(|| next.clone()),
        };
        let p = core.seal_value("pending", &pending, PENDING_MS)?;
        let body = second_factor_form(&core, &p, csrf, &factors, passkey.as_ref(), None);
        return Ok(form_page(body, target.as_deref(), None));
    }
    signed_in(&req, &core, &user, &["pwd"], post.then()).await
}

/// Where a browser goes once signed in.
enum Then {
    /// The authorization request goes on.
    Resume(String),
    /// A page of ours that sent it to sign in (`safe_next`).
    Next(String),
    Nothing,
}

/// The person proved who they are: the SSO session starts, and the request (if any) goes on.
async fn signed_in(
    req: &HttpRequest,
    core: &std::sync::Arc<Core>,
    user: &crate::core::User,
    amr: &'static [&'static str],
    then: Then,
) -> Result<HttpResponse, OidcError> {
    let caller = net::caller(req, &core.config, "oidc");
    let u = user.clone();
    let (token, session) = core.call(move |c| c.start_sso(&caller, &u, amr)).await?;
    let cookie = sso_cookie(req, core, token.expose().to_string());
    let mut res = match then {
        Then::Resume(r) => {
            // This sign-in answers the request's max_age and prompt=login: the request goes on
            // asking for it (or a later one), not for a sign-in younger than max_age by then.
            let r = match core.open_request(&r) {
                Some(request) => {
                    core.seal_request(&AuthRequest { max_age: None, signed_in_after: session.auth_time, ..request })?
                }
                None => r,
            };
            see_other(&format!("/oauth2/authorize/resume?r={r}"))
        }
        Then::Next(next) => see_other(&next),
        Then::Nothing => message_page(StatusCode::OK, "Signed in", "You are signed in to this box."),
    };
    res.add_cookie(&cookie).map_err(crate::core::internal)?;
    Ok(res)
}

/// A POST of a second-factor form: the form, the browser's CSRF cookie, and the half-done sign-in
/// it carries, if it is live, ours and was started in this browser (else the refusal page).
async fn pending_post(
    req: &HttpRequest,
    payload: web::Payload,
    core: &Core,
) -> Result<(Form, String, Pending), HttpResponse> {
    let form = form_body(req, payload, core).await.map_err(|_| refused_page("The form cannot be read."))?;
    let (csrf, _) = csrf_cookie(req, core);
    let pending: Option<Pending> = form.one("p").and_then(|p| core.open_value("pending", p));
    let pending = pending.filter(|p| {
        form_is_ours(req, core, &form) && crate::core::crypto::ct_eq(p.browser.as_bytes(), csrf.as_bytes())
    });
    match pending {
        Some(p) => Ok((form, csrf, p)),
        None => Err(refused_page("This sign-in took too long or was not started here: sign in again.")),
    }
}

impl Pending {
    fn then(self) -> Then {
        match (self.r, self.next) {
            (Some(r), _) => Then::Resume(r),
            (None, Some(n)) => Then::Next(n),
            (None, None) => Then::Nothing,
        }
    }
}

/// The second-factor page again, with what went wrong.
async fn second_factor_again(
    core: &std::sync::Arc<Core>,
    form: &Form,
    csrf: &str,
    pending: &Pending,
    refused: Error,
) -> Result<HttpResponse, OidcError> {
    let (status, message) = match &refused {
        Error::Throttled { .. } => {
            (StatusCode::TOO_MANY_REQUESTS, "Too many failed attempts: wait a while and try again.")
        }
        Error::Blocked => (StatusCode::FORBIDDEN, "This account is blocked."),
        Error::BadCredentials | Error::Invalid { .. } => {
            (StatusCode::UNAUTHORIZED, "The code or the passkey is wrong, or was used already.")
        }
        e => return Err(OidcError::from(message_page(StatusCode::INTERNAL_SERVER_ERROR, "Error", &e.to_string()))),
    };
    let (user_id, browser) = (pending.user_id, csrf.to_string());
    let (factors, passkey) = core
        .call(move |c| {
            let factors = c.second_factors(user_id)?;
            let passkey = if factors.passkeys > 0 { Some(c.passkey_request(&browser, Some(user_id))?) } else { None };
            Ok((factors, passkey))
        })
        .await?;
    let body = second_factor_form(core, form.one("p").unwrap_or(""), csrf, &factors, passkey.as_ref(), Some(message));
    let target = pending.r.as_deref().and_then(|r| core.open_request(r)).map(|r| r.redirect_uri);
    let res = form_page_status(status, body, target.as_deref(), None);
    Ok(match &refused {
        e @ Error::Throttled { .. } => crate::web::with_retry_after(res, e),
        _ => res,
    })
}

async fn second_factor(
    req: HttpRequest,
    payload: web::Payload,
    core: web::Data<Core>,
) -> Result<HttpResponse, OidcError> {
    let core = core.into_inner();
    let (form, csrf, pending) = match pending_post(&req, payload, &core).await {
        Ok(p) => p,
        Err(page) => return Ok(page),
    };
    let code = form.owned("code").unwrap_or_default();
    let caller = net::caller(&req, &core.config, "oidc");
    let user_id = pending.user_id;
    let checked = core
        .call(move |c| {
            let user = c.user_by_id(user_id)?;
            c.check_second_factor(&caller, &user, &code)?;
            Ok(user)
        })
        .await;
    match checked {
        Ok(user) => signed_in(&req, &core, &user, &["pwd", "otp"], pending.then()).await,
        Err(e) => second_factor_again(&core, &form, &csrf, &pending, e).await,
    }
}

/// The assertion static/passkey.js put in a form (base64url fields; one that does not decode is
/// empty, and fails as a wrong passkey).
fn assertion_of(form: &Form) -> PasskeyAssertion {
    let bytes = |name| form.one(name).and_then(crate::core::signins::unb64url).unwrap_or_default();
    PasskeyAssertion {
        challenge: bytes("challenge"),
        credential_id: bytes("credential_id"),
        client_data_json: bytes("client_data"),
        authenticator_data: bytes("authenticator_data"),
        signature: bytes("signature"),
        user_handle: form.one("user_handle").filter(|h| !h.is_empty()).and_then(crate::core::signins::unb64url),
    }
}

/// Signing in with a passkey alone (a discoverable credential: the passkey says who).
async fn passkey_login(
    req: HttpRequest,
    payload: web::Payload,
    core: web::Data<Core>,
) -> Result<HttpResponse, OidcError> {
    let core = core.into_inner();
    let post = match SignInPost::read(&req, payload, &core).await {
        Ok(p) => p,
        Err(page) => return Ok(page),
    };
    let caller = net::caller(&req, &core.config, "oidc");
    let (assertion, browser) = (assertion_of(&post.form), post.csrf.clone());
    let checked = core.call(move |c| c.sign_in_passkey(&caller, &browser, &assertion, None)).await;
    let again = |status: StatusCode, message: &str| {
        let body = login_form(&core, &post.sealed, &post.next, &post.csrf, "", Some(message));
        form_page_status(status, body, post.target.as_deref(), None)
    };
    match checked {
        Ok(user) => signed_in(&req, &core, &user, AMR_PASSKEY, post.then()).await,
        Err(Error::BadCredentials | Error::Invalid { .. }) => {
            Ok(again(StatusCode::UNAUTHORIZED, "This passkey was not accepted: use another, or your password."))
        }
        Err(Error::Blocked) => Ok(again(StatusCode::FORBIDDEN, "This account is blocked.")),
        Err(e @ Error::Throttled { .. }) => Ok(crate::web::with_retry_after(
            again(StatusCode::TOO_MANY_REQUESTS, "Too many failed attempts: wait a while and try again."),
            &e,
        )),
        Err(e) => Ok(again(StatusCode::INTERNAL_SERVER_ERROR, &e.to_string())),
    }
}

/// A passkey as the second factor, after the password.
async fn second_factor_passkey(
    req: HttpRequest,
    payload: web::Payload,
    core: web::Data<Core>,
) -> Result<HttpResponse, OidcError> {
    let core = core.into_inner();
    let (form, csrf, pending) = match pending_post(&req, payload, &core).await {
        Ok(p) => p,
        Err(page) => return Ok(page),
    };
    let caller = net::caller(&req, &core.config, "oidc");
    let (assertion, browser, user_id) = (assertion_of(&form), csrf.clone(), pending.user_id);
    match core.call(move |c| c.sign_in_passkey(&caller, &browser, &assertion, Some(user_id))).await {
        Ok(user) => signed_in(&req, &core, &user, AMR_PASSWORD_PASSKEY, pending.then()).await,
        Err(e) => second_factor_again(&core, &form, &csrf, &pending, e).await,
    }
}

fn consent_page(
    req: &HttpRequest,
    core: &Core,
    client: &Client,
    request: &AuthRequest,
    session: &SsoSession,
) -> Result<HttpResponse, OidcError> {
    let (csrf, set) = csrf_cookie(req, core);
    let sealed = core.seal_request(request)?;
    let scopes: String = request.scope.split(' ').map(|s| format!("<li>{}</li>", escape(scope_text(s)))).collect();
    let body = CONSENT_HTML
        .replace("{{client}}", &escape(&client.app_id))
        .replace("{{user}}", &escape(&session.user.login))
        .replace("{{scopes}}", &scopes)
        .replace("{{r}}", &escape(&sealed))
        .replace("{{csrf}}", &escape(&core.csrf_token(&csrf)));
    Ok(form_page(body, Some(&request.redirect_uri), set))
}

fn scope_text(scope: &str) -> &'static str {
    match scope {
        "openid" => "Know who you are (your user id)",
        "profile" => "Your name, login and language",
        "email" => "Your email address",
        "groups" => "The applications you are a member of, and your user type",
        "offline_access" => "Stay signed in when you are away (a refresh token)",
        _ => "Something else",
    }
}

async fn consent(req: HttpRequest, payload: web::Payload, core: web::Data<Core>) -> Result<HttpResponse, OidcError> {
    let core = core.into_inner();
    let form =
        form_body(&req, payload, &core).await.map_err(|_| OidcError::from(refused_page("The form cannot be read.")))?;
    let request = form.one("r").and_then(|r| core.open_request(r));
    let Some(request) = request.filter(|_| form_is_ours(&req, &core, &form)) else {
        return Ok(refused_page("This consent took too long or was not asked here: start again from the application."));
    };
    if form.one("decision") != Some("allow") {
        return Ok(error_redirect(
            &core,
            &request.redirect_uri,
            request.state.as_deref(),
            "access_denied",
            "the user said no",
        ));
    }
    let Some(token) = sso_token(&req) else {
        return Ok(see_other(&format!("/login?r={}", core.seal_request(&request)?)));
    };
    let caller = net::caller(&req, &core.config, "oidc");
    let r = request.clone();
    let given = core
        .call(move |c| -> Result<bool, Error> {
            let Some(session) = c.sso_session(&token)? else { return Ok(false) };
            c.give_consent(&caller, &session.user, &r.client_id, &r.scope)?;
            Ok(true)
        })
        .await?;
    // prompt=consent is answered: going on must not ask again.
    let request = AuthRequest { prompt: crate::core::oidc::Prompt { consent: false, ..request.prompt }, ..request };
    let sealed = core.seal_request(&request)?;
    Ok(see_other(&if given { format!("/oauth2/authorize/resume?r={sealed}") } else { format!("/login?r={sealed}") }))
}

// ----- the token endpoint -----

/// The client's credentials: HTTP Basic (its parts form-urlencoded, RFC 6749 §2.3.1), or
/// `client_id` (and `client_secret`) in the form; never both.
fn client_credentials(req: &HttpRequest, form: &Form) -> Result<(String, Option<Secret>), OidcError> {
    let basic = req.headers().get("Authorization").and_then(|v| v.to_str().ok());
    let invalid = |d: &str| OidcError::from(oauth_error(StatusCode::BAD_REQUEST, "invalid_request", d));
    match basic {
        Some(value) => {
            if form.one("client_secret").is_some() {
                return Err(invalid("Use one client authentication method."));
            }
            let (id, secret) = crate::web::parse_basic(value).ok_or(Error::BadClient)?;
            let decode = |s: &str| percent_decode(s).ok_or(OidcError::from(error(&Error::BadClient)));
            let id = decode(&id)?;
            let secret = Secret::new(decode(secret.expose())?);
            if form.one("client_id").is_some_and(|c| c != id) {
                return Err(invalid("client_id differs from the authenticated client."));
            }
            Ok((id, Some(secret)))
        }
        None => {
            let id = form.owned("client_id").filter(|c| !c.is_empty()).ok_or(Error::BadClient)?;
            Ok((id, form.one("client_secret").map(Secret::new)))
        }
    }
}

fn percent_decode(s: &str) -> Option<String> {
    let plus = s.replace('+', " ");
    let bytes: Vec<u8> = percent_encoding::percent_decode_str(&plus).collect();
    String::from_utf8(bytes).ok()
}

async fn token(req: HttpRequest, payload: web::Payload, core: web::Data<Core>) -> Result<HttpResponse, OidcError> {
    let core = core.into_inner();
    let form = form_body(&req, payload, &core).await?;
    if let Some(k) = form.repeated.first() {
        return Ok(oauth_error(StatusCode::BAD_REQUEST, "invalid_request", &format!("{k} was given more than once.")));
    }
    let (client_id, secret) = client_credentials(&req, &form)?;
    let caller: Caller = net::caller(&req, &core.config, "oidc");
    let grant = form.owned("grant_type").unwrap_or_default();
    let code = form.owned("code");
    let redirect_uri = form.owned("redirect_uri");
    let verifier = form.owned("code_verifier");
    let refresh = form.owned("refresh_token");
    let scope = form.owned("scope");
    let device_code = form.owned("device_code");
    let tokens = if grant == "client_credentials" {
        // No person, no signature: the client checked on the executor, the token one insert in
        // the next group commit; no thread of the blocking pool waits for either.
        // A wrong secret is counted and audited (writes): on the blocking pool.
        let (id, s) = (client_id.clone(), secret.clone());
        let client = match core.quick(move |c| Ok(c.authentic_oidc_client(&id, s.as_ref()))).await {
            Ok(Some(client)) => Ok(client),
            _ => core.call(move |c| c.authenticate_oidc_client(&caller, &client_id, secret.as_ref())).await,
        };
        match client {
            Ok(client) => core.call_write(move |c, tx| c.client_credentials_in(tx, &client, scope.as_deref())).await,
            Err(e) => Err(e),
        }
    } else {
        core.call(move |c| -> Result<Tokens, Error> {
            let client = c.authenticate_oidc_client(&caller, &client_id, secret.as_ref())?;
            match grant.as_str() {
                "authorization_code" => {
                    let code = code.filter(|v| !v.is_empty() && v.len() <= 256).ok_or(Error::BadToken)?;
                    c.exchange_code(&caller, &client, &Secret::new(code), redirect_uri.as_deref(), verifier.as_deref())
                }
                "refresh_token" => {
                    let refresh = refresh.filter(|v| !v.is_empty() && v.len() <= 256).ok_or(Error::BadToken)?;
                    c.refresh_oidc(&caller, &client, &Secret::new(refresh), scope.as_deref())
                }
                DEVICE_GRANT => {
                    let code = device_code.filter(|v| !v.is_empty() && v.len() <= 256).ok_or(Error::BadToken)?;
                    match c.poll_device(&caller, &client, &Secret::new(code))? {
                        DevicePoll::Tokens(t) => Ok(t),
                        DevicePoll::Pending => Err(Error::invalid("device", "authorization_pending")),
                        DevicePoll::SlowDown => Err(Error::invalid("device", "slow_down")),
                        DevicePoll::Denied => Err(Error::invalid("device", "access_denied")),
                        DevicePoll::Expired => Err(Error::invalid("device", "expired_token")),
                    }
                }
                _ => Err(Error::invalid("grant_type", "unsupported")),
            }
        })
        .await
    };
    let tokens = match tokens {
        Err(Error::Invalid { field, .. }) if field == "grant_type" => {
            return Ok(oauth_error(
                StatusCode::BAD_REQUEST,
                "unsupported_grant_type",
                "The grant type is not supported.",
            ))
        }
        // RFC 8628 §3.5: the device's answers while the person has not approved.
        Err(Error::Invalid { field, reason }) if field == "device" => {
            let description = match reason.as_str() {
                "authorization_pending" => "The person has not approved the device yet.",
                "slow_down" => "Poll less often: wait 5 seconds more between polls.",
                "access_denied" => "The person said no.",
                _ => "The device code has expired: start again.",
            };
            return Ok(oauth_error(StatusCode::BAD_REQUEST, &reason, description));
        }
        other => other?,
    };
    let mut body = json!({
        "access_token": tokens.access_token.expose(),
        "token_type": "Bearer",
        "expires_in": tokens.expires_in,
        "scope": tokens.scope,
    });
    if let Some(r) = &tokens.refresh_token {
        body["refresh_token"] = json!(r.expose());
    }
    if let Some(id) = &tokens.id_token {
        body["id_token"] = json!(id);
    }
    Ok(json_answer(StatusCode::OK, &body))
}

// ----- userinfo -----

fn bearer_error(status: StatusCode, error: &str, description: &str) -> HttpResponse {
    let mut res = oauth_error(status, error, description);
    let value = format!("Bearer realm=\"gatehouse\", error=\"{error}\", error_description=\"{description}\"");
    if let Ok(v) = HeaderValue::from_str(&value) {
        res.headers_mut().insert(WWW_AUTHENTICATE, v);
    }
    res
}

async fn userinfo(req: HttpRequest, payload: web::Payload, core: web::Data<Core>) -> Result<HttpResponse, OidcError> {
    let core = core.into_inner();
    let header = req.headers().get("Authorization").and_then(|v| v.to_str().ok()).map(str::to_string);
    let from_header =
        header.as_deref().and_then(|h| h.split_once(' ')).filter(|(s, _)| s.eq_ignore_ascii_case("bearer"));
    let token = match from_header {
        Some((_, t)) => Some(t.trim().to_string()),
        // RFC 6750 §2.2: the form body of a POST.
        None if req.method() == actix_web::http::Method::POST && header.is_none() => {
            form_body(&req, payload, &core).await.ok().and_then(|f| f.owned("access_token"))
        }
        None => None,
    };
    let Some(token) = token.filter(|t| !t.is_empty() && t.len() <= 256) else {
        let mut res = oauth_error(StatusCode::UNAUTHORIZED, "invalid_request", "A Bearer token is required.");
        res.headers_mut().insert(WWW_AUTHENTICATE, HeaderValue::from_static("Bearer realm=\"gatehouse\""));
        return Ok(res);
    };
    let token = Secret::new(token);
    match core.quick(move |c| c.userinfo(&token)).await {
        Ok(claims) => Ok(json_answer(StatusCode::OK, &Value::Object(claims))),
        Err(Error::BadToken) => {
            Ok(bearer_error(StatusCode::UNAUTHORIZED, "invalid_token", "The access token is invalid or expired."))
        }
        Err(Error::NotMember) => {
            Ok(bearer_error(StatusCode::FORBIDDEN, "insufficient_scope", "The token's scope has no openid."))
        }
        Err(e) => Err(e.into()),
    }
}

// ----- RP-initiated logout -----

/// Where a logout may send the browser back to: a registered post-logout URI of the client the
/// id_token_hint (or client_id) names.
async fn logout_target(
    core: &std::sync::Arc<Core>,
    form: &Form,
) -> Result<Option<(String, Option<String>)>, OidcError> {
    let Some(uri) = form.owned("post_logout_redirect_uri").filter(|u| !u.is_empty()) else { return Ok(None) };
    let hint = form.owned("id_token_hint");
    let client_id = form.owned("client_id");
    let state = form.owned("state").filter(|s| s.len() <= 512 && s.chars().all(|c| (' '..='~').contains(&c)));
    let ok = core
        .call(move |c| -> Result<bool, Error> {
            let hinted = hint.as_deref().and_then(|h| c.id_token_hint_client(h));
            let id = match (hinted, client_id) {
                (Some(h), Some(cid)) if h != cid => return Ok(false),
                (Some(h), _) => h,
                (None, Some(cid)) => cid,
                (None, None) => return Ok(false),
            };
            match c.client(&id) {
                Ok(client) => Ok(client.post_logout_uris.iter().any(|u| u == &uri)),
                Err(Error::UnknownApp(_)) => Ok(false),
                Err(e) => Err(e),
            }
        })
        .await?;
    if !ok {
        return Err(refused_page("The post_logout_redirect_uri is not one the client registered.").into());
    }
    Ok(Some((form.owned("post_logout_redirect_uri").unwrap_or_default(), state)))
}

async fn logout_page(req: HttpRequest, core: web::Data<Core>) -> Result<HttpResponse, OidcError> {
    let core = core.into_inner();
    let form = Form::parse(req.query_string().as_bytes())
        .ok_or_else(|| OidcError::from(refused_page("The request's parameters cannot be read.")))?;
    let target = logout_target(&core, &form).await?;
    let (csrf, set) = csrf_cookie(&req, &core);
    let hidden = |name: &str| {
        form.one(name)
            .map(|v| format!("<input type=\"hidden\" name=\"{name}\" value=\"{}\">", escape(v)))
            .unwrap_or_default()
    };
    let body = LOGOUT_HTML.replace("{{csrf}}", &escape(&core.csrf_token(&csrf))).replace(
        "{{hidden}}",
        &["post_logout_redirect_uri", "id_token_hint", "client_id", "state"].map(hidden).concat(),
    );
    Ok(form_page(body, target.as_ref().map(|(u, _)| u.as_str()), set))
}

async fn logout(req: HttpRequest, payload: web::Payload, core: web::Data<Core>) -> Result<HttpResponse, OidcError> {
    let core = core.into_inner();
    let form =
        form_body(&req, payload, &core).await.map_err(|_| OidcError::from(refused_page("The form cannot be read.")))?;
    if !form_is_ours(&req, &core, &form) {
        return Ok(message_page(StatusCode::FORBIDDEN, "Sign-out refused", "This form did not come from this page."));
    }
    let target = logout_target(&core, &form).await?;
    if let Some(token) = sso_token(&req) {
        let caller = net::caller(&req, &core.config, "oidc");
        core.call(move |c| c.end_sso(&caller, &token)).await?;
    }
    let mut removal = sso_cookie(&req, &core, String::new());
    removal.make_removal();
    let mut res = match target {
        Some((uri, state)) => {
            let Ok(mut url) = url::Url::parse(&uri) else {
                return Ok(refused_page("The post_logout_redirect_uri is invalid."));
            };
            if let Some(s) = state.filter(|s| !s.is_empty()) {
                url.query_pairs_mut().append_pair("state", &s);
            }
            see_other(url.as_str())
        }
        None => message_page(StatusCode::OK, "Signed out", "You are signed out of this box."),
    };
    res.add_cookie(&removal).map_err(crate::core::internal)?;
    Ok(res)
}

// ----- the device authorization grant (RFC 8628) -----

async fn device_authorization(
    req: HttpRequest,
    payload: web::Payload,
    core: web::Data<Core>,
) -> Result<HttpResponse, OidcError> {
    let core = core.into_inner();
    let form = form_body(&req, payload, &core).await?;
    if let Some(k) = form.repeated.first() {
        return Ok(oauth_error(StatusCode::BAD_REQUEST, "invalid_request", &format!("{k} was given more than once.")));
    }
    let (client_id, secret) = client_credentials(&req, &form)?;
    let caller = net::caller(&req, &core.config, "oidc");
    let scope = form.owned("scope");
    let started = core
        .call(move |c| {
            let client = c.authenticate_oidc_client(&caller, &client_id, secret.as_ref())?;
            c.start_device_authorization(&caller, &client, scope.as_deref())
        })
        .await?;
    let issuer = core.issuer();
    let complete = format!("{issuer}/activate?user_code={}", started.user_code);
    Ok(json_answer(
        StatusCode::OK,
        &json!({
            "device_code": started.device_code.expose(),
            "user_code": started.user_code,
            "verification_uri": format!("{issuer}/activate"),
            "verification_uri_complete": complete,
            "expires_in": started.expires_in,
            "interval": started.interval,
        }),
    ))
}

fn activate_form(core: &Core, csrf: &str, code: &str, error: Option<&str>) -> String {
    ACTIVATE_HTML.replace("{{csrf}}", &escape(&core.csrf_token(csrf))).replace("{{user_code}}", &escape(code)).replace(
        "{{error}}",
        &error.map(|e| format!("<p class=\"message error\" role=\"alert\">{}</p>", escape(e))).unwrap_or_default(),
    )
}

/// The activation page: a signed-in person types (or finds filled in) the device's code.
async fn activate_page(req: HttpRequest, core: web::Data<Core>) -> Result<HttpResponse, OidcError> {
    let core = core.into_inner();
    let form = Form::parse(req.query_string().as_bytes()).unwrap_or_else(Form::empty);
    let typed = form.owned("user_code").unwrap_or_default();
    let signed_in = match sso_token(&req) {
        Some(t) => core.call(move |c| c.sso_session(&t)).await?.is_some(),
        None => false,
    };
    if !signed_in {
        let next = format!("/activate?user_code={}", crate::web::forms::urlencode(&typed));
        return Ok(see_other(&format!("/login?next={}", crate::web::forms::urlencode(&next))));
    }
    let (csrf, set) = csrf_cookie(&req, &core);
    Ok(form_page(activate_form(&core, &csrf, &typed, None), None, set))
}

/// The code typed: which device asks, and what for.
async fn activate(req: HttpRequest, payload: web::Payload, core: web::Data<Core>) -> Result<HttpResponse, OidcError> {
    let core = core.into_inner();
    let form =
        form_body(&req, payload, &core).await.map_err(|_| OidcError::from(refused_page("The form cannot be read.")))?;
    if !form_is_ours(&req, &core, &form) {
        return Ok(message_page(
            StatusCode::FORBIDDEN,
            "Refused",
            "This form did not come from this page: open it again.",
        ));
    }
    let Some(token) = sso_token(&req) else { return Ok(see_other("/login?next=%2Factivate")) };
    let typed = form.owned("user_code").unwrap_or_default();
    let caller = net::caller(&req, &core.config, "oidc");
    let t = typed.clone();
    let found = core
        .call(move |c| -> Result<Option<(SsoSession, crate::core::device_grant::PendingDevice)>, Error> {
            let Some(session) = c.sso_session(&token)? else { return Ok(None) };
            Ok(Some((session, c.pending_device(&caller, &t)?)))
        })
        .await;
    let (csrf, _) = csrf_cookie(&req, &core);
    let (session, pending) = match found {
        Ok(Some(found)) => found,
        Ok(None) => return Ok(see_other("/login?next=%2Factivate")),
        Err(Error::Gone) => {
            return Ok(form_page_status(
                StatusCode::NOT_FOUND,
                activate_form(
                    &core,
                    &csrf,
                    &typed,
                    Some("No device waits with this code: check it, or start again on the device."),
                ),
                None,
                None,
            ))
        }
        Err(e @ Error::Throttled { .. }) => {
            return Ok(crate::web::with_retry_after(
                form_page_status(
                    StatusCode::TOO_MANY_REQUESTS,
                    activate_form(&core, &csrf, &typed, Some("Too many wrong codes: wait a while.")),
                    None,
                    None,
                ),
                &e,
            ))
        }
        Err(e) => return Err(e.into()),
    };
    let scopes: String = pending
        .scope
        .split(' ')
        .filter(|s| !s.is_empty())
        .map(|s| format!("<li>{}</li>", escape(scope_text(s))))
        .collect();
    let body = APPROVE_DEVICE_HTML
        .replace("{{client}}", &escape(&pending.client_id))
        .replace("{{user}}", &escape(&session.user.login))
        .replace("{{user_code}}", &escape(&crate::core::device_grant::display_user_code(&pending.user_code)))
        .replace("{{scopes}}", &scopes)
        .replace("{{csrf}}", &escape(&core.csrf_token(&csrf)));
    Ok(form_page(body, None, None))
}

async fn activate_decide(
    req: HttpRequest,
    payload: web::Payload,
    core: web::Data<Core>,
) -> Result<HttpResponse, OidcError> {
    let core = core.into_inner();
    let form =
        form_body(&req, payload, &core).await.map_err(|_| OidcError::from(refused_page("The form cannot be read.")))?;
    if !form_is_ours(&req, &core, &form) {
        return Ok(message_page(
            StatusCode::FORBIDDEN,
            "Refused",
            "This form did not come from this page: open it again.",
        ));
    }
    let Some(token) = sso_token(&req) else { return Ok(see_other("/login?next=%2Factivate")) };
    let code = form.owned("user_code").unwrap_or_default();
    let approve = form.one("decision") == Some("allow");
    let caller = net::caller(&req, &core.config, "oidc");
    let decided = core
        .call(move |c| -> Result<bool, Error> {
            let Some(session) = c.sso_session(&token)? else { return Ok(false) };
            c.decide_device(&caller, &session, &code, approve)?;
            Ok(true)
        })
        .await;
    Ok(match decided {
        Ok(true) if approve => {
            message_page(StatusCode::OK, "Device approved", "The device is signed in: you may close this page.")
        }
        Ok(true) => message_page(StatusCode::OK, "Device refused", "The device was not signed in."),
        Ok(false) => see_other("/login?next=%2Factivate"),
        Err(Error::NotMember) => {
            message_page(StatusCode::FORBIDDEN, "Not allowed", "You may not sign in to this application.")
        }
        Err(Error::Gone) => {
            message_page(StatusCode::NOT_FOUND, "No such device", "This code was answered already or has expired.")
        }
        Err(e) => return Err(e.into()),
    })
}
