//! The standard doors over every dialect's tokens: RFC 7662 introspection, RFC 7009 revocation. A resource server that only receives a token learns whose it is here,
//! whichever API issued it (ForePaaS token, CMS session, IQM access or refresh token, IAMPASS
//! session token).
//!
//! - `POST /oauth2/introspect` (form `token`, `token_type_hint`), the client authenticated with
//!   HTTP Basic (an application's id and secret) → 200 `{"active":true,"sub","username",
//!   "client_id","token_type","exp","iat","scope"?}`, or exactly `{"active":false}` for anything
//!   not live or not the client's to see
//! - `POST /oauth2/revoke` (form `token`, `token_type_hint`), same client authentication → 200
//!   with an empty body, also for unknown tokens (RFC 7009 §2.2)
//! - RFC 8414's metadata (`/.well-known/oauth-authorization-server`) is the OpenID provider's
//!   document, served by `oidc`
//! - errors, RFC 6749 §5.2: `{"error","error_description"}`; `invalid_client` is 401 with
//!   `WWW-Authenticate: Basic`, `invalid_request` and `unauthorized_client` 400, throttled 429 and
//!   busy 503 with `Retry-After`

use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest, HttpResponse};
use serde_json::json;

use crate::core::apps::Door;
use crate::core::{Core, Error, Secret};
use crate::web::{media_type, net, parse_basic, read_body, BodyError};

pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.route("/oauth2/introspect", web::post().to(introspect)).route("/oauth2/revoke", web::post().to(revoke));
}

use crate::web::{oauth_error, oauth_json as answer};

crate::web::door_error!(
    /// A refused call, as RFC 6749 §5.2 answers it: the core's errors through [`error`], or an
    /// [`oauth_error`] of this door's.
    Oauth2Error,
    "OAuth 2.0"
);

impl From<Error> for Oauth2Error {
    fn from(e: Error) -> Oauth2Error {
        error(&e).into()
    }
}

/// The one mapping from the core's errors to RFC 6749 §5.2 answers.
fn error(e: &Error) -> HttpResponse {
    match e {
        Error::BadClient => {
            let mut res = oauth_error(StatusCode::UNAUTHORIZED, "invalid_client", "Client authentication failed.");
            res.headers_mut().insert(
                actix_web::http::header::WWW_AUTHENTICATE,
                actix_web::http::header::HeaderValue::from_static("Basic realm=\"gatehouse\""),
            );
            res
        }
        Error::NotMember => {
            oauth_error(StatusCode::BAD_REQUEST, "unauthorized_client", "The token was not issued to this client.")
        }
        Error::Throttled { .. } => crate::web::with_retry_after(
            oauth_error(StatusCode::TOO_MANY_REQUESTS, "slow_down", "Too many failed attempts, retry later."),
            e,
        ),
        Error::Busy => crate::web::with_retry_after(
            oauth_error(StatusCode::SERVICE_UNAVAILABLE, "temporarily_unavailable", "Server busy, retry later."),
            e,
        ),
        Error::Internal(id) => {
            oauth_error(StatusCode::INTERNAL_SERVER_ERROR, "server_error", &format!("Internal error (id {id})."))
        }
        Error::Invalid { .. }
        | Error::BadCredentials
        | Error::BadToken
        | Error::WrongPassword
        | Error::Blocked
        | Error::UnknownApp(_)
        | Error::UnknownUser(_)
        | Error::Gone
        | Error::UnknownApiKey
        | Error::Exists(_)
        | Error::Lost
        | Error::NoRoom
        | Error::SecondFactorRequired => oauth_error(StatusCode::BAD_REQUEST, "invalid_request", &e.to_string()),
    }
}

/// The client's id and secret, and the form's `token`: what both doors read first.
async fn request(
    req: &HttpRequest,
    payload: web::Payload,
    core: &Core,
) -> Result<(String, Secret, Secret), Oauth2Error> {
    let invalid = |status, description: &str| Oauth2Error::from(oauth_error(status, "invalid_request", description));
    let (client, secret) = req
        .headers()
        .get("Authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(parse_basic)
        .ok_or(Error::BadClient)?;
    if media_type(req).as_deref() != Some("application/x-www-form-urlencoded") {
        return Err(invalid(StatusCode::BAD_REQUEST, "The body must be application/x-www-form-urlencoded."));
    }
    let body = read_body(req, payload, &core.config.http).await.map_err(|e| match e {
        BodyError::TooLarge(_) => invalid(StatusCode::PAYLOAD_TOO_LARGE, "The body is too large."),
        BodyError::TimedOut => invalid(StatusCode::REQUEST_TIMEOUT, "The body came too slowly."),
        BodyError::Broken => invalid(StatusCode::BAD_REQUEST, "Incomplete body."),
    })?;
    let form: Vec<(String, String)> =
        serde_urlencoded::from_bytes(&body).map_err(|_| invalid(StatusCode::BAD_REQUEST, "The body is not a form."))?;
    let tokens: Vec<&String> = form.iter().filter(|(k, _)| k == "token").map(|(_, v)| v).collect();
    match tokens.as_slice() {
        [t] if !t.is_empty() && t.len() <= 1024 => Ok((client, secret, Secret::new(t.as_str()))),
        _ => Err(invalid(StatusCode::BAD_REQUEST, "Exactly one token is required.")),
    }
}

async fn introspect(
    req: HttpRequest,
    payload: web::Payload,
    core: web::Data<Core>,
) -> Result<HttpResponse, Oauth2Error> {
    let core = core.into_inner();
    let (client, secret, token) = request(&req, payload, &core).await?;
    let caller = net::caller(&req, &core.config, "oauth2");
    // A right secret: reads only, on the executor with SQLite (Core::quick). Anything else goes
    // the throttled way on the blocking pool, where a wrong secret is counted and audited.
    let (id, s, t) = (client.clone(), secret.clone(), token.clone());
    let fast = core
        .quick(move |c| match c.authenticate_client(&id, &s, Door::Oauth) {
            Ok(()) => c.describe_token(&id, &t).map(Some),
            Err(_) => Ok(None),
        })
        .await?;
    let described = match fast {
        Some(d) => d,
        None => {
            core.call(move |c| {
                c.authenticate_client_throttled(&caller, &client, &secret, Door::Oauth)?;
                c.describe_token(&client, &token)
            })
            .await?
        }
    };
    Ok(match described {
        Some(d) => {
            let mut body = json!({
                "active": true,
                "sub": d.user.as_ref().map_or_else(|| d.app_id.clone(), |u| u.id.to_string()),
                "username": d.user.as_ref().map(|u| u.login.clone()),
                "client_id": d.app_id,
                "token_type": d.token_type,
                "exp": d.expires_at / 1000,
                "iat": d.issued_at / 1000,
            });
            if d.user.is_none() {
                // A client's own token (client_credentials): no person, no username.
                body.as_object_mut().map(|o| o.remove("username"));
            }
            if let Some(scope) = d.scope {
                body["scope"] = json!(scope);
            }
            answer(StatusCode::OK, &body)
        }
        None => answer(StatusCode::OK, &json!({"active": false})),
    })
}

async fn revoke(req: HttpRequest, payload: web::Payload, core: web::Data<Core>) -> Result<HttpResponse, Oauth2Error> {
    let core = core.into_inner();
    let (client, secret, token) = request(&req, payload, &core).await?;
    let caller = net::caller(&req, &core.config, "oauth2");
    let revoked = core.call(move |c| {
        c.authenticate_client_throttled(&caller, &client, &secret, Door::Oauth)?;
        c.revoke_token(&caller, &client, &token)
    });
    revoked.await?;
    Ok(HttpResponse::Ok().insert_header(("Cache-Control", "no-store")).finish())
}
