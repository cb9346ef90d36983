//! OAuth-style clients and grants: client credentials, self sign-up into a new workspace, the
//! password grant, and rotating refresh tokens in families.
//!
//! Every token of one sign-in shares a family. A refresh token is good once: using it marks it
//! used and issues a new access and refresh token in the same family. Presenting a used refresh
//! token again is reuse, a sign that it was stolen: the whole family is revoked, the newest tokens
//! included (unless it comes within `iqm.refresh_reuse_grace` of the rotation, a benign race).

use super::apps::Door;
use super::audit::audit_in;
use super::crypto::{ct_eq, random_bytes, Secret};
use super::guard::Caller;
use super::sessions::{digest, TokenKind};
use super::{now_ms, Core, Error, User};
use crate::store::{tokens, users};

/// A grant's tokens (shown once) and whose they are.
#[derive(Debug)]
pub struct Grant {
    pub access_token: Secret,
    pub refresh_token: Secret,
    /// Seconds the access token lives.
    pub expires_in: i64,
    pub workspace_id: i64,
    pub user: User,
}

/// A live access token, as a check sees it.
#[derive(Debug)]
pub struct Bearer {
    pub user: User,
    pub client_id: String,
    pub workspace_id: i64,
    pub expires_at: i64,
}

impl Core {
    /// Checks a client's id and secret (constant time); `BadClient` for anything wrong.
    pub fn authenticate_client(&self, client_id: &str, secret: &Secret, door: Door) -> Result<(), Error> {
        let stored = match self.app_secret_at(client_id, door) {
            Ok(s) => s,
            Err(Error::UnknownApp(_)) => {
                // Compare anyway, so an unknown client takes the time a known one does.
                let _ = ct_eq(secret.expose().as_bytes(), secret.expose().as_bytes());
                return Err(Error::BadClient);
            }
            Err(e) => return Err(e),
        };
        if ct_eq(stored.expose().as_bytes(), secret.expose().as_bytes()) {
            Ok(())
        } else {
            Err(Error::BadClient)
        }
    }

    fn issue_grant(
        &self,
        tx: &crate::store::Db,
        user: User,
        client_id: &str,
        family: [u8; 16],
        now: i64,
    ) -> Result<Grant, Error> {
        let workspace_id = users::ensure_workspace(tx, user.id)?;
        let (access_token, _) =
            self.issue_token(tx, TokenKind::IqmAccess, (user.id, client_id), (None, Some(family)), now)?;
        let (refresh_token, _) =
            self.issue_token(tx, TokenKind::IqmRefresh, (user.id, client_id), (None, Some(family)), now)?;
        let expires_in = self.config.iqm.access_lifetime.millis() / 1000;
        Ok(Grant {
            access_token,
            refresh_token,
            expires_in,
            workspace_id,
            user: User { workspace_id: Some(workspace_id), ..user },
        })
    }

    /// Creates a user (login = email) in a new workspace, a member of `client_id` only, and signs
    /// them in. One of any number of concurrent sign-ups of one email succeeds.
    pub fn sign_up(&self, caller: &Caller, client_id: &str, email: &str, password: &Secret) -> Result<Grant, Error> {
        let email = super::users::new_login("email", email)?;
        let email = email.as_str();
        self.check_password_policy(password)?;
        if self.store.with(|c| super::users::find_by_login(c, email))?.is_some() {
            return Err(Error::Exists(format!("user {email}")));
        }
        let hash = self.hasher.hash(password)?;
        let now = now_ms();
        let grant = self.store.write(|tx| -> Result<_, Error> {
            let id = users::insert(
                tx,
                &users::NewUser {
                    login: email,
                    email: Some(email),
                    first_name: "",
                    last_name: "",
                    civility: "",
                    user_type: "USER",
                    password_hash: Some(&hash),
                    password_expires_at: self.password_expiry(now),
                },
                now,
            )?;
            users::add_membership(tx, id, client_id, now)?;
            let user = super::users::find_by_id(tx, id)?
                .ok_or_else(|| super::internal("a user vanished in its own transaction"))?;
            audit_in(tx, caller, "user_added", Some(client_id), Some(&user), None)?;
            self.issue_grant(tx, user.clone(), client_id, random_bytes::<16>(), now)
        })?;
        log::info!("user {} signed up through client {client_id} into workspace {}", grant.user.id, grant.workspace_id);
        Ok(grant)
    }

    /// The password grant: an unknown email and a wrong password fail alike (`BadCredentials`);
    /// blocked and non-member are told only to the holder of the right password.
    pub fn password_grant(
        &self,
        caller: &Caller,
        client_id: &str,
        email: &str,
        password: &Secret,
    ) -> Result<Grant, Error> {
        // Cleaned as a login (any login may sign in here), not checked as an address.
        let email = super::text::clean("email", email)?;
        self.with_password(caller, &email, password, Error::BadCredentials, |user| {
            if user.blocked {
                return Err(Error::Blocked);
            }
            self.bare_password_allowed(&user, client_id)?;
            let now = now_ms();
            self.store.write(|tx| -> Result<_, Error> {
                if !users::is_member(tx, user.id, client_id)? {
                    return Err(Error::NotMember);
                }
                audit_in(tx, caller, "login_ok", Some(client_id), Some(&user), None)?;
                self.issue_grant(tx, user.clone(), client_id, random_bytes::<16>(), now)
            })
        })
    }

    /// The refresh grant: rotates the refresh token. `client_id`, when the client authenticated,
    /// must be the token's.
    ///
    /// Runs inside the write `tx` (see `Core::call_write`). The outer error is the write's; the
    /// inner one is the answer, given after the commit, so that a family revoked on a reuse stays
    /// revoked although the answer is an error.
    pub fn refresh_grant_in(
        &self,
        tx: &crate::store::Db,
        caller: &Caller,
        client_id: Option<&str>,
        refresh: &Secret,
    ) -> Result<Result<Grant, Error>, Error> {
        let now = now_ms();
        let row = match self.rotate_refresh_in(tx, caller, TokenKind::IqmRefresh, client_id, refresh, now)? {
            Ok(row) => row,
            Err(e) => return Ok(Err(e)),
        };
        let user = match super::users::find_by_id(tx, row.user_id)? {
            Some(u) if !u.blocked && users::is_member(tx, u.id, &row.app_id)? => u,
            _ => return Ok(Err(Error::BadToken)),
        };
        let family: [u8; 16] =
            row.family.as_slice().try_into().map_err(|_| super::internal("malformed token family"))?;
        Ok(Ok(self.issue_grant(tx, user, &row.app_id, family, now)?))
    }

    /// Inside a write: spends a refresh token of `kind` (IQM's or OpenID Connect's) and answers
    /// its row, for the caller to issue the family's next tokens. A used one presented again
    /// (past `iqm.refresh_reuse_grace` for IQM's; always for OpenID Connect's) revokes its whole
    /// family, committed with an audit event although the answer is `BadToken`.
    pub(crate) fn rotate_refresh_in(
        &self,
        tx: &crate::store::Db,
        caller: &Caller,
        kind: TokenKind,
        client_id: Option<&str>,
        refresh: &Secret,
        now: i64,
    ) -> Result<Result<tokens::RefreshRow, Error>, Error> {
        let d = digest(refresh);
        let grace = if kind == TokenKind::IqmRefresh { self.config.iqm.refresh_reuse_grace.millis() } else { 0 };
        let Some(row) = tokens::refresh_row(tx, &d, kind.as_str())? else {
            return Ok(Err(Error::BadToken));
        };
        if row.revoked_at.is_some() || row.expires_at <= now || client_id.is_some_and(|c| c != row.app_id) {
            return Ok(Err(Error::BadToken));
        }
        if let Some(used) = row.used_at {
            // At or past the grace (always, with no grace: even within the same millisecond).
            if now.saturating_sub(used) >= grace {
                let n = tokens::revoke_family(tx, &row.family, now)?;
                log::warn!("refresh token reused: family of user {} revoked ({n} tokens)", row.user_id);
                // A sign of theft: an event of its own kind, committed with the revocation.
                let user = super::users::find_by_id(tx, row.user_id)?;
                audit_in(tx, caller, "refresh_reused", Some(&row.app_id), user.as_ref(), None)?;
            }
            return Ok(Err(Error::BadToken));
        }
        if !tokens::mark_used(tx, &d, now)? {
            return Ok(Err(Error::BadToken));
        }
        Ok(Ok(row))
    }

    /// A live access token whose workspace is `workspace_id`.
    pub fn check_bearer(&self, token: &Secret, workspace_id: i64) -> Result<Bearer, Error> {
        let info = self.check_token(TokenKind::IqmAccess, token, None)?;
        if info.user.workspace_id != Some(workspace_id) {
            return Err(Error::BadToken);
        }
        Ok(Bearer { client_id: info.app_id, workspace_id, expires_at: info.expires_at, user: info.user })
    }

    /// Ends the sign-in a live access token belongs to: its whole family.
    pub fn logout_family(&self, caller: &Caller, token: &Secret, workspace_id: i64) -> Result<(), Error> {
        let info = self.check_token(TokenKind::IqmAccess, token, None)?;
        if info.user.workspace_id != Some(workspace_id) {
            return Err(Error::BadToken);
        }
        let family = info.family.ok_or(Error::BadToken)?;
        let now = now_ms();
        self.store.write(|tx| tokens::revoke_family(tx, &family, now))?;
        log::debug!("user {} signed out of client {}", info.user.id, info.app_id);
        self.audit(caller, "logout", Some(&info.app_id), Some(&info.user), None);
        Ok(())
    }
}
