//! Any token gatehouse issued, whichever dialect issued it: described (RFC 7662 introspection),
//! revoked (RFC 7009), and checked for a reverse proxy (forward auth).
//!
//! A token is found by its digest whatever its kind (ForePaaS, CMS session, IQM access or
//! refresh); an IAMPASS session by its session token. An application sees and revokes only its
//! own tokens, unless it is one of `oauth.trusted_clients`.

use super::apps::Door;
use super::audit::audit_in;
use super::crypto::Secret;
use super::guard::{Caller, Outcome, Subject};
use super::sessions::{digest, TokenInfo, TokenKind};
use super::stats::bump;
use super::{now_ms, Core, Error, User};
use crate::store::{auth_sessions, tokens, users};

/// What introspection tells of a live token.
#[derive(Debug)]
pub struct Described {
    /// None for a client's own token (client_credentials).
    pub user: Option<User>,
    pub app_id: String,
    /// `forepaas`, `cms_session`, `access_token`, `refresh_token` or `iampass_session`.
    pub token_type: &'static str,
    /// Unix ms.
    pub issued_at: i64,
    /// Unix ms: the earlier of its lifetime and its idle timeout.
    pub expires_at: i64,
    /// The OAuth scope, for the tokens that have one (IQM's, OpenID Connect's).
    pub scope: Option<String>,
}

/// Where a token was found.
enum Found {
    Token(TokenKind),
    /// A client_credentials token: its client.
    Client(String),
    Signin(auth_sessions::AuthSessionRow),
    Nothing,
}

fn type_of(kind: TokenKind) -> &'static str {
    match kind {
        TokenKind::Iam => "forepaas",
        TokenKind::CmsSession => "cms_session",
        TokenKind::IqmAccess | TokenKind::OidcAccess => "access_token",
        TokenKind::IqmRefresh | TokenKind::OidcRefresh => "refresh_token",
        TokenKind::Sso => "sso_session",
    }
}

/// An IAMPASS session token: 32 hex characters.
fn looks_like_signin(token: &Secret) -> bool {
    let t = token.expose();
    t.len() == 32 && t.bytes().all(|b| b.is_ascii_hexdigit())
}

impl Core {
    /// A client (an application, HTTP Basic) proves itself at `door`, one its secret opens. Its id is no secret, so a wrong secret
    /// holds back the caller and never the client: see [`Core::shared_credential_failed`].
    pub fn authenticate_client_throttled(
        &self,
        caller: &Caller,
        client_id: &str,
        secret: &Secret,
        door: Door,
    ) -> Result<(), Error> {
        match self.authenticate_client(client_id, secret, door) {
            Err(Error::BadClient) => Err(self.shared_credential_failed(
                caller,
                &format!("client:{client_id}"),
                "client_auth_failed",
                None,
                Some(client_id),
                Error::BadClient,
            )),
            other => other,
        }
    }

    /// A request signed with the wrong secret of `app_id` (IAMPASS's HMAC): `Throttled` once the
    /// caller is held back, else None (the signature's own refusal is answered).
    pub fn signature_failed(&self, caller: &Caller, app_id: &str) -> Option<Error> {
        let account = format!("client:{app_id}");
        match self.shared_credential_failed(
            caller,
            &account,
            "signature_failed",
            Some(app_id),
            None,
            Error::BadCredentials,
        ) {
            e @ Error::Throttled { .. } => Some(e),
            _ => None,
        }
    }

    /// A wrong secret for a shared credential (an application's secret or signature, an API key):
    /// what to answer, `wrong` or `Throttled`.
    ///
    /// The credential's name (a client id, an API key's id) is no secret, so its failures are
    /// counted per address and credential, and per address: a stranger holds back only himself,
    /// never the owner. A right secret is never refused by the count (it is 128 bits or more:
    /// there is nothing to guess, and no count to consult on the way in). A failure is an audit
    /// event until the caller is held back; from then on it is answered `Throttled` and nothing
    /// is written (the count of what was not is in `/metrics`), so a flood of wrong secrets
    /// cannot fill the audit log or the throttle's table.
    pub(crate) fn shared_credential_failed(
        &self,
        caller: &Caller,
        credential: &str,
        event: &'static str,
        app_id: Option<&str>,
        account: Option<&str>,
        wrong: Error,
    ) -> Error {
        let now = now_ms();
        let subject = Subject::Shared(credential);
        if let Err(e @ Error::Throttled { .. }) = self.throttle.check(subject, caller, now) {
            bump(&self.counters.throttled, 1);
            bump(&self.counters.audit_not_written, 1);
            return e;
        }
        let outcome = self.count_failure(caller, subject, now);
        self.audit(caller, event, app_id, None, account);
        // The failure that locks the caller out is the first to be told to wait.
        match (outcome, self.throttle.check(subject, caller, now)) {
            (Outcome::Counted, _) => wrong,
            (_, Err(e @ Error::Throttled { .. })) => e,
            _ => wrong,
        }
    }

    fn may_see(&self, client: &str, app_id: &str) -> bool {
        client == app_id || self.config.oauth.trusted_clients.iter().any(|c| c == client)
    }

    fn find(&self, token: &Secret) -> Result<Found, Error> {
        let d = digest(token);
        if let Some(kind) = self.store.read_quick(|c| tokens::kind_of(c, &d))? {
            return Ok(match TokenKind::parse(&kind) {
                // The box's sign-in cookie is no application's to see or end.
                Some(TokenKind::Sso) | None => Found::Nothing,
                Some(kind) => Found::Token(kind),
            });
        }
        if let Some(app) = self.store.read_quick(|c| crate::store::oidc::client_token_app(c, &d))? {
            return Ok(Found::Client(app));
        }
        if looks_like_signin(token) {
            if let Some(row) = self.store.with(|c| auth_sessions::by_token(c, token.expose()))? {
                return Ok(Found::Signin(row));
            }
        }
        Ok(Found::Nothing)
    }

    /// RFC 7662: what `client` may know of `token`; None for anything not live or not its to see.
    pub fn describe_token(&self, client: &str, token: &Secret) -> Result<Option<Described>, Error> {
        let is_use = self.config.oauth.introspection_is_use;
        let described = match self.find(token)? {
            Found::Token(kind) => match self.look_at_token(kind, token, None, is_use) {
                Ok(info) => Some(Described {
                    token_type: type_of(kind),
                    issued_at: info.created_at,
                    expires_at: info.expires_at,
                    scope: match kind {
                        TokenKind::IqmAccess | TokenKind::IqmRefresh => Some("read write".to_string()),
                        TokenKind::OidcAccess | TokenKind::OidcRefresh => match &info.family {
                            Some(f) => self.store.with(|c| crate::store::oidc::grant(c, f))?.map(|g| g.scope),
                            None => None,
                        },
                        TokenKind::Iam | TokenKind::CmsSession | TokenKind::Sso => None,
                    },
                    user: Some(info.user),
                    app_id: info.app_id,
                }),
                Err(Error::BadToken) => None,
                Err(e) => return Err(e),
            },
            Found::Signin(row) if row.effective(now_ms()) == "active" => {
                // One connection for both reads: the user, and whether they are still a member.
                let (user, member) = self.store.with(|c| {
                    Ok::<_, Error>((
                        super::users::find_by_id(c, row.user_id)?,
                        users::is_member(c, row.user_id, &row.app_id)?,
                    ))
                })?;
                user.filter(|u| !u.blocked && member).map(|user| Described {
                    user: Some(user),
                    app_id: row.app_id.clone(),
                    token_type: "iampass_session",
                    issued_at: row.created_at,
                    expires_at: row.expires_at,
                    scope: None,
                })
            }
            Found::Client(_) => {
                let d = digest(token);
                self.store.read_quick(|c| crate::store::oidc::live_client_token(c, &d, now_ms()))?.map(
                    |(app_id, scope, issued_at, expires_at)| Described {
                        user: None,
                        app_id,
                        token_type: "access_token",
                        issued_at,
                        expires_at,
                        scope: Some(scope),
                    },
                )
            }
            Found::Signin(_) | Found::Nothing => None,
        };
        Ok(described.filter(|d| self.may_see(client, &d.app_id)))
    }

    /// RFC 7009: ends `token` for `client`. A refresh token, live or rotated out, ends its whole
    /// family (the access tokens of the same sign-in with it); an IAMPASS session is closed. Unknown, dead or already
    /// revoked tokens change nothing and are no error; another application's token is
    /// `NotMember` (the RFC's unauthorized_client) unless the client is trusted.
    pub fn revoke_token(&self, caller: &Caller, client: &str, token: &Secret) -> Result<(), Error> {
        let now = now_ms();
        match self.find(token)? {
            Found::Token(refresh @ (TokenKind::IqmRefresh | TokenKind::OidcRefresh)) => {
                // Any member of a family ends it, live or rotated out: the holder of an old one may
                // be the victim of a thief who refreshed it first.
                let d = digest(token);
                let kind = refresh.as_str();
                let Some(row) = self.store.with(|c| tokens::refresh_row(c, &d, kind))? else { return Ok(()) };
                if !self.may_see(client, &row.app_id) {
                    return Err(Error::NotMember);
                }
                self.store.write(|tx| -> Result<_, Error> {
                    if tokens::revoke_family(tx, &row.family, now)? > 0 {
                        let user = super::users::find_by_id(tx, row.user_id)?;
                        audit_in(tx, caller, "token_revoked", Some(&row.app_id), user.as_ref(), None)?;
                    }
                    Ok(())
                })?;
            }
            Found::Token(kind) => {
                let Ok(info) = self.look_at_token(kind, token, None, false) else { return Ok(()) };
                if !self.may_see(client, &info.app_id) {
                    return Err(Error::NotMember);
                }
                let d = digest(token);
                self.store.write(|tx| -> Result<_, Error> {
                    tokens::revoke(tx, &d, now)?;
                    audit_in(tx, caller, "token_revoked", Some(&info.app_id), Some(&info.user), None)
                })?;
            }
            Found::Signin(row) => {
                if !self.may_see(client, &row.app_id) {
                    return Err(Error::NotMember);
                }
                self.store.write(|tx| -> Result<_, Error> {
                    if auth_sessions::close(tx, row.id, now)? {
                        let user = super::users::find_by_id(tx, row.user_id)?;
                        audit_in(tx, caller, "token_revoked", Some(&row.app_id), user.as_ref(), None)?;
                    }
                    Ok(())
                })?;
                self.signins.notify_waiters();
            }
            Found::Client(app_id) => {
                if !self.may_see(client, &app_id) {
                    return Err(Error::NotMember);
                }
                let d = digest(token);
                self.store.write(|tx| -> Result<_, Error> {
                    if crate::store::oidc::revoke_client_token(tx, &d, now)? {
                        audit_in(tx, caller, "token_revoked", Some(&app_id), None, None)?;
                    }
                    Ok(())
                })?;
            }
            Found::Nothing => {}
        }
        Ok(())
    }

    /// Forward auth: the live session behind a request's credential, a Bearer token (ForePaaS,
    /// IQM or OpenID Connect access), the CMS cookie or the box's SSO cookie, counted as a use.
    /// `app_id`, when the route names one, must be the token's; for the SSO session (whose
    /// application is the box's own), the user must be one who may use that application.
    pub fn forward_check(
        &self,
        bearer: Option<&Secret>,
        [cms_cookie, sso_cookie]: [Option<&Secret>; 2],
        app_id: Option<&str>,
    ) -> Result<TokenInfo, Error> {
        if let Some(token) = bearer {
            let d = digest(token);
            let kind = self.store.read_quick(|c| tokens::kind_of(c, &d))?.and_then(|k| TokenKind::parse(&k));
            if let Some(kind @ (TokenKind::Iam | TokenKind::IqmAccess | TokenKind::OidcAccess)) = kind {
                if let Ok(info) = self.check_token(kind, token, app_id) {
                    return Ok(info);
                }
            }
        }
        if let Some(token) = cms_cookie {
            if let Ok(info) = self.check_token(TokenKind::CmsSession, token, app_id) {
                return Ok(info);
            }
        }
        if let Some(token) = sso_cookie {
            let info = self.check_token(TokenKind::Sso, token, Some(super::APP_SSO))?;
            let Some(app) = app_id else { return Ok(info) };
            let open = |c: &crate::store::Db| -> Result<bool, Error> {
                Ok(users::is_member(c, info.user.id, app)?
                    || crate::store::oidc::client(c, app)?.is_some_and(|client| client.open))
            };
            if !self.store.read_quick(open)? {
                return Err(Error::BadToken);
            }
            return Ok(TokenInfo { app_id: app.to_string(), ..info });
        }
        Err(Error::BadToken)
    }
}
