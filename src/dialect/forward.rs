//! Forward auth for reverse proxies: the target of nginx's `auth_request`, Traefik's
//! `forwardAuth` and Caddy's `forward_auth`.
//!
//! - `/auth/verify` (any method) → 200 with `X-Auth-User` (the login), `X-Auth-User-Id` and
//!   `X-Auth-App` when the request carries a live credential: `Authorization: Bearer` with a
//!   ForePaaS token or an IQM access token, or the CMS `cmsSID` cookie; else 401 with
//!   `WWW-Authenticate: Bearer`. The route's application is every name given in the header
//!   `X-Auth-Require-App` and in every `app` query parameter (the proxy's and the client's: Caddy's
//!   `forward_auth` passes the client's query on), and the credential's application must be each
//!   of them: a name that is not the credential's, names that disagree, a header that is not
//!   visible ASCII or a query that cannot be read all refuse; an empty name requires nothing and
//!   removes nothing. A verification is a use of the session (it keeps an idle session alive, as
//!   browsing does).

use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest, HttpResponse};

use crate::core::{Core, Error, Secret};

pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.route("/auth/verify", web::route().to(verify));
}

crate::web::door_error!(
    /// A refused verification: a bare status and word for the proxy, from [`error`] or [`refused`].
    ForwardError,
    "forward auth"
);

impl From<Error> for ForwardError {
    fn from(e: Error) -> ForwardError {
        error(&e)
    }
}

fn refused(status: StatusCode, text: &'static str) -> ForwardError {
    let mut res = HttpResponse::build(status);
    if status == StatusCode::UNAUTHORIZED {
        res.insert_header(("WWW-Authenticate", "Bearer realm=\"gatehouse\""));
    }
    res.insert_header(("Cache-Control", "no-store")).content_type("text/plain; charset=utf-8").body(text).into()
}

/// The one mapping from the core's errors to a proxy's answers: whatever is not the server's own
/// trouble is a credential the proxy must not let through.
fn error(e: &Error) -> ForwardError {
    match e {
        Error::Busy => refused(StatusCode::SERVICE_UNAVAILABLE, "busy"),
        Error::Internal(_) => refused(StatusCode::INTERNAL_SERVER_ERROR, "internal error"),
        Error::Invalid { .. }
        | Error::BadCredentials
        | Error::BadClient
        | Error::BadToken
        | Error::WrongPassword
        | Error::Blocked
        | Error::NotMember
        | Error::UnknownApp(_)
        | Error::UnknownUser(_)
        | Error::Gone
        | Error::UnknownApiKey
        | Error::Exists(_)
        | Error::Lost
        | Error::NoRoom
        | Error::SecondFactorRequired
        | Error::Throttled { .. } => refused(StatusCode::UNAUTHORIZED, "unauthorized"),
    }
}

/// The route's application: every non-empty name in `X-Auth-Require-App` (each header of that
/// name) and in every `app` query parameter. `Ok(None)` when there is none; `Err` when the names
/// disagree, or a header or the query cannot be read, so that the request is refused rather
/// than a requirement dropped.
fn required_app(req: &HttpRequest) -> Result<Option<String>, ()> {
    let query: Vec<(String, String)> = serde_urlencoded::from_str(req.query_string()).map_err(|_| ())?;
    let mut names = query.into_iter().filter(|(k, _)| k == "app").map(|(_, v)| v).collect::<Vec<_>>();
    for v in req.headers().get_all("X-Auth-Require-App") {
        // to_str: visible ASCII only (and tabs and spaces, trimmed below).
        names.push(v.to_str().map_err(|_| ())?.trim().to_string());
    }
    let mut required: Option<String> = None;
    for name in names.into_iter().filter(|n| !n.is_empty()) {
        match &required {
            Some(r) if *r != name => return Err(()),
            Some(_) => {}
            None => required = Some(name),
        }
    }
    Ok(required)
}

async fn verify(req: HttpRequest, core: web::Data<Core>) -> Result<HttpResponse, ForwardError> {
    let bearer = req
        .headers()
        .get("Authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().split_once(' '))
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
        .map(|(_, t)| Secret::new(t.trim()));
    let cookie = req.cookie(crate::web::CMS_COOKIE).map(|c| Secret::new(c.value()));
    let sso = crate::web::forms::sso_token(&req);
    let app = required_app(&req).map_err(|()| refused(StatusCode::UNAUTHORIZED, "unauthorized"))?;
    let core = core.into_inner();
    let info =
        core.quick(move |c| c.forward_check(bearer.as_ref(), [cookie.as_ref(), sso.as_ref()], app.as_deref())).await?;
    Ok(HttpResponse::Ok()
        .insert_header(("X-Auth-User", info.user.login.as_str()))
        .insert_header(("X-Auth-User-Id", info.user.id.to_string()))
        .insert_header(("X-Auth-App", info.app_id.as_str()))
        .insert_header(("Cache-Control", "no-store"))
        .finish())
}
