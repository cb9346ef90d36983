//! Signing in: passwords and API keys in, opaque tokens out; checking and ending tokens.

use super::audit::audit_in;
use super::crypto::{ct_eq, random_token, sha256, Secret};
use super::guard::{Caller, Outcome, Subject};
use super::{now_ms, Core, Error, User};
use crate::store::{apikeys, tokens, users};

/// The kinds of token, one per way of signing in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenKind {
    /// A ForePaaS IAM token: idle timeout and lifetime from `[tokens]`.
    Iam,
    /// A SmartServer CMS session (the cmsSID cookie): idle timeout and cap from `[cms]`.
    CmsSession,
    /// An IQM bearer access token: lifetime from `[iqm]`, no idle timeout.
    IqmAccess,
    /// An IQM refresh token: rotates, one family per sign-in.
    IqmRefresh,
    /// The box's own sign-in (the SSO cookie of the hosted pages): idle timeout and lifetime from
    /// `[oidc]`; its family is the session's sid, its application the built-in `APP_SSO`.
    Sso,
    /// An OpenID Connect access token: lifetime from `[oidc]`; its family's grant holds its scope.
    OidcAccess,
    /// An OpenID Connect refresh token (scope offline_access): rotates like IQM's.
    OidcRefresh,
}

impl TokenKind {
    pub(crate) fn parse(kind: &str) -> Option<TokenKind> {
        [
            TokenKind::Iam,
            TokenKind::CmsSession,
            TokenKind::IqmAccess,
            TokenKind::IqmRefresh,
            TokenKind::Sso,
            TokenKind::OidcAccess,
            TokenKind::OidcRefresh,
        ]
        .into_iter()
        .find(|k| k.as_str() == kind)
    }

    pub(crate) fn as_str(self) -> &'static str {
        match self {
            TokenKind::Iam => "iam",
            TokenKind::CmsSession => "cms",
            TokenKind::IqmAccess => "iqm_access",
            TokenKind::IqmRefresh => "iqm_refresh",
            TokenKind::Sso => "sso",
            TokenKind::OidcAccess => "oidc_access",
            TokenKind::OidcRefresh => "oidc_refresh",
        }
    }
}

impl Core {
    /// Runs a password sign-in attempt for `account` under the throttle: refused while the account
    /// or the caller's address must wait (nothing is written then); a wrong password counts
    /// against both, a success clears the account. Shared credentials (API keys, applications'
    /// secrets) take [`Core::shared_credential_failed`] instead.
    pub(crate) fn throttled<T>(
        &self,
        caller: &Caller,
        account: &str,
        attempt: impl FnOnce() -> Result<T, Error>,
    ) -> Result<T, Error> {
        use super::stats::bump;
        let now = now_ms();
        let subject = Subject::Account(account);
        if let Err(e) = self.throttle.check(subject, caller, now) {
            // A password set since the failures (a reset, a change, `gatehouse user passwd` in
            // another process) frees the account; the address stays held if it is.
            if !(matches!(e, Error::Throttled { .. }) && self.password_set_since_failures(account)) {
                if matches!(e, Error::Throttled { .. }) {
                    bump(&self.counters.throttled, 1);
                    bump(&self.counters.audit_not_written, 1);
                }
                return Err(e);
            }
            if let Err(e) = self.throttle.check(subject, caller, now) {
                bump(&self.counters.throttled, 1);
                bump(&self.counters.audit_not_written, 1);
                return Err(e);
            }
        }
        let result = attempt();
        match &result {
            Ok(_) => {
                bump(&self.counters.logins_ok, 1);
                if let Err(e) = self.throttle.succeeded(account) {
                    log::warn!("a sign-in's failure count was not cleared: {e}");
                }
            }
            Err(Error::BadCredentials | Error::WrongPassword) => {
                bump(&self.counters.logins_failed, 1);
                self.audit(caller, "login_failed", None, None, Some(account));
                self.count_failure(caller, subject, now);
            }
            Err(_) => {}
        }
        result
    }

    /// Counts a failure against `subject` and the caller's address; a lockout it caused is an audit
    /// event and a warning.
    pub(crate) fn count_failure(&self, caller: &Caller, subject: Subject, now: i64) -> Outcome {
        let outcome = self.throttle.failed(subject, caller, now).unwrap_or_else(|e| {
            log::warn!("a failed sign-in was not counted: {e}");
            Outcome::Counted
        });
        if outcome != Outcome::Counted {
            super::stats::bump(&self.counters.lockouts, 1);
            // An account locked out, or an address guessing across accounts: two stories.
            let event = if outcome == Outcome::LockedOut { "lockout" } else { "address_lockout" };
            let (Subject::Account(name) | Subject::Shared(name)) = subject;
            self.audit(caller, event, None, None, Some(name));
            log::warn!(
                "sign-in lockout after repeated failures (dialect {}, address {})",
                caller.dialect,
                caller.addr.map(|a| a.to_string()).unwrap_or_else(|| "-".into())
            );
        }
        outcome
    }

    /// True when `account`'s failures came before its password was last set, and are now forgotten.
    fn password_set_since_failures(&self, account: &str) -> bool {
        let set_at = match self.store.with(|c| users::password_set_at(c, account)) {
            Ok(Some(t)) => t,
            Ok(None) => return false,
            Err(e) => {
                log::warn!("a throttled account's password date was not read: {e}");
                return false;
            }
        };
        self.throttle.forget_if_before(account, set_at).unwrap_or_else(|e| {
            log::warn!("a throttled account's failures were not forgotten: {e}");
            false
        })
    }

    /// After a password is set: the failures counted against the user's login are forgotten, so
    /// that the owner is not locked out by the guesses the reset answered. The addresses keep theirs.
    pub(crate) fn forget_failures(&self, login: &str) {
        if let Err(e) = self.throttle.succeeded(login) {
            log::warn!("a failure count was not cleared after a password change: {e}");
        }
    }

    /// (idle timeout, lifetime) in milliseconds for a kind of token.
    pub(crate) fn lifetimes(&self, kind: TokenKind) -> (Option<i64>, i64) {
        let c = &self.config;
        match kind {
            TokenKind::Iam => (Some(c.tokens.idle_timeout.millis()), c.tokens.lifetime.millis()),
            TokenKind::CmsSession => (Some(c.cms.session_timeout.millis()), c.cms.session_lifetime.millis()),
            TokenKind::IqmAccess => (None, c.iqm.access_lifetime.millis()),
            TokenKind::IqmRefresh => (None, c.iqm.refresh_lifetime.millis()),
            TokenKind::Sso => (Some(c.oidc.session_idle_timeout.millis()), c.oidc.session_lifetime.millis()),
            TokenKind::OidcAccess => (None, c.oidc.access_lifetime.millis()),
            TokenKind::OidcRefresh => (None, c.oidc.refresh_lifetime.millis()),
        }
    }

    /// Writes a new token of `kind` in `tx`; the token itself is returned, never stored.
    pub(crate) fn issue_token(
        &self,
        tx: &crate::store::Db,
        kind: TokenKind,
        (user_id, app_id): (i64, &str),
        (api_key, family): (Option<String>, Option<[u8; 16]>),
        now: i64,
    ) -> Result<(Secret, i64), Error> {
        let token = random_token();
        let (idle_ms, lifetime_ms) = self.lifetimes(kind);
        let expires_at = now.saturating_add(lifetime_ms);
        tokens::insert(
            tx,
            &tokens::TokenRow {
                digest: digest(&token),
                kind: kind.as_str(),
                user_id,
                app_id: app_id.to_string(),
                api_key_id: api_key,
                created_at: now,
                last_used_at: now,
                idle_ms,
                expires_at,
                family,
            },
        )?;
        Ok((token, expires_at))
    }
}

/// A new sign-in: the token (shown once) and whose it is.
#[derive(Debug)]
pub struct SignedIn {
    pub token: Secret,
    pub user: User,
    pub app_id: String,
    pub expires_at: i64,
}

/// A live token, as a check sees it.
#[derive(Debug)]
pub struct TokenInfo {
    pub user: User,
    /// The sign-in family (IQM tokens).
    pub family: Option<Vec<u8>>,
    pub app_id: String,
    pub created_at: i64,
    /// When the token dies if it is not used again: the earlier of its lifetime and its idle timeout.
    pub expires_at: i64,
}

pub(crate) fn digest(token: &Secret) -> [u8; 32] {
    sha256(token.expose().as_bytes())
}

impl Core {
    /// Login with a password to `app_id`. An unknown login and a wrong password fail alike, in the
    /// same time (a dummy hash is verified). Blocked and non-member are told only to the holder of
    /// the right password.
    pub fn login_password(
        &self,
        caller: &Caller,
        kind: TokenKind,
        app_id: &str,
        login: &str,
        password: &Secret,
    ) -> Result<SignedIn, Error> {
        // The login as typed, in the form logins are stored in: another spelling finds the user,
        // counts against the same account, and a control character is refused before anything.
        let login = super::text::clean("login", login)?;
        self.with_password(caller, &login, password, Error::BadCredentials, |user| {
            self.bare_password_allowed(&user, app_id)?;
            self.sign_in(caller, kind, user, app_id, None)
        })
    }

    /// The one way a password is checked, for every door: under the throttle (`throttled`:
    /// refused while the account or the address waits, a failure counted and audited, a success
    /// clearing the account), the user looked up by login, a dummy hash verified for an unknown
    /// account or one without a password so the time tells nothing, `wrong` answered for a wrong
    /// password (BadCredentials, or WrongPassword where the caller proved who they are), the hash
    /// made again when its parameters are not the configured ones, then `then` with the user:
    /// what the door does with a verified user (blocked and non-member are its to tell, inside
    /// the throttle, so only the holder of the right password learns them).
    pub(crate) fn with_password<T>(
        &self,
        caller: &Caller,
        login: &str,
        password: &Secret,
        wrong: Error,
        then: impl FnOnce(User) -> Result<T, Error>,
    ) -> Result<T, Error> {
        self.throttled(caller, login, || {
            let found = self.store.with(|c| super::users::find_by_login(c, login))?;
            let hash = found.as_ref().and_then(|(_, h)| h.as_deref());
            let verified = self.hasher.verify(password, hash)?;
            let (user, hash) = match found {
                Some((user, Some(hash))) if verified => (user, hash),
                _ => return Err(wrong),
            };
            self.rehash_if_old(&user, password, &hash);
            then(user)
        })
    }

    /// After a successful verify: a hash under other parameters than the configured ones (made
    /// before they changed, or imported) is replaced by one under them. A failure is logged and
    /// the sign-in goes on: the old hash still verifies.
    fn rehash_if_old(&self, user: &User, password: &Secret, hash: &str) {
        if self.hasher.is_current(hash) {
            return;
        }
        let replaced = self
            .hasher
            .hash(password)
            .and_then(|new| Ok(self.store.write(|tx| users::rehash(tx, user.id, hash, &new))?));
        match replaced {
            Ok(true) => log::info!("user {}: password hashed again under the configured parameters", user.id),
            Ok(false) => {}
            Err(e) => log::warn!("user {}: the password was not hashed again: {e}", user.id),
        }
    }

    /// Login with an API key. Without `app_id` the key's own application applies; with one, it must
    /// be the key's.
    pub fn login_api_key(
        &self,
        caller: &Caller,
        app_id: Option<&str>,
        apikey: &str,
        secretkey: &Secret,
    ) -> Result<SignedIn, Error> {
        use super::stats::bump;
        // An API key's id is no secret: a wrong secret holds back the caller, never the key.
        match self.login_api_key_unthrottled(caller, app_id, apikey, secretkey) {
            Err(Error::BadCredentials) => {
                bump(&self.counters.logins_failed, 1);
                let account = format!("apikey:{apikey}");
                Err(self.shared_credential_failed(
                    caller,
                    &account,
                    "login_failed",
                    None,
                    Some(&account),
                    Error::BadCredentials,
                ))
            }
            result => {
                if result.is_ok() {
                    bump(&self.counters.logins_ok, 1);
                }
                result
            }
        }
    }

    fn login_api_key_unthrottled(
        &self,
        caller: &Caller,
        app_id: Option<&str>,
        apikey: &str,
        secretkey: &Secret,
    ) -> Result<SignedIn, Error> {
        let now = now_ms();
        let row = self.store.with(|c| apikeys::by_id(c, apikey))?;
        let presented = sha256(secretkey.expose().as_bytes());
        let stored = row.as_ref().map(|k| k.secret_digest.as_slice()).unwrap_or(&[0u8; 32]);
        let matches = ct_eq(&presented, stored);
        let key = match row {
            Some(k)
                if matches
                    && k.revoked_at.is_none()
                    && k.expires_at.is_none_or(|t| t > now)
                    && app_id.is_none_or(|a| a == k.app_id) =>
            {
                k
            }
            _ => return Err(Error::BadCredentials),
        };
        let user = self.store.with(|c| super::users::find_by_id(c, key.user_id))?.ok_or(Error::BadCredentials)?;
        self.sign_in(caller, TokenKind::Iam, user, &key.app_id, Some(key.id))
    }

    fn sign_in(
        &self,
        caller: &Caller,
        kind: TokenKind,
        user: User,
        app_id: &str,
        api_key: Option<String>,
    ) -> Result<SignedIn, Error> {
        if user.blocked {
            return Err(Error::Blocked);
        }
        let now = now_ms();
        let (token, expires_at) = self.store.write(|tx| -> Result<_, Error> {
            if !users::is_member(tx, user.id, app_id)? {
                return Err(Error::NotMember);
            }
            let issued = self.issue_token(tx, kind, (user.id, app_id), (api_key.clone(), None), now)?;
            audit_in(tx, caller, "login_ok", Some(app_id), Some(&user), None)?;
            Ok(issued)
        })?;
        log::debug!("user {} signed in to {app_id}", user.id);
        Ok(SignedIn { token, user, app_id: app_id.to_string(), expires_at })
    }

    /// The live token behind `d`, its idle timeout checked against its last use, the one in
    /// memory (not yet written) included.
    fn live_token(
        &self,
        c: &crate::store::Db,
        d: &[u8; 32],
        kind: TokenKind,
        now: i64,
    ) -> Result<tokens::LiveToken, Error> {
        let Some(mut live) = tokens::live(c, d, kind.as_str(), now)? else {
            return Err(Error::BadToken);
        };
        self.not_idle(&mut live, now)?;
        Ok(live)
    }

    /// A live token's last use with the uses kept in memory; `BadToken` once its idle timeout
    /// has passed.
    pub(super) fn not_idle(&self, live: &mut tokens::LiveToken, now: i64) -> Result<(), Error> {
        if let Some(t) = self.uses.last(live.id) {
            live.last_used_at = live.last_used_at.max(t);
        }
        if live.idle_ms.is_some_and(|idle| live.last_used_at.saturating_add(idle) <= now) {
            return Err(Error::BadToken);
        }
        Ok(())
    }

    /// Checks a token and counts the check as a use. `app_id`, when given, must be the token's.
    /// One indexed read and no hashing: dialects call it on the executor (`Store::read_quick`).
    pub fn check_token(&self, kind: TokenKind, token: &Secret, app_id: Option<&str>) -> Result<TokenInfo, Error> {
        self.look_at_token(kind, token, app_id, true)
    }

    /// [`Core::check_token`], counted as a use only when `is_use` (an introspection looks
    /// without using).
    pub(crate) fn look_at_token(
        &self,
        kind: TokenKind,
        token: &Secret,
        app_id: Option<&str>,
        is_use: bool,
    ) -> Result<TokenInfo, Error> {
        let now = now_ms();
        let d = digest(token);
        let live = self.store.read_quick(|c| self.live_token(c, &d, kind, now))?;
        if app_id.is_some_and(|a| a != live.app_id) {
            return Err(Error::BadToken);
        }
        if is_use && live.idle_ms.is_some() {
            self.uses.record(live.id, now);
        }
        let idle_end = live.idle_ms.map(|i| now.saturating_add(i)).unwrap_or(i64::MAX);
        Ok(TokenInfo {
            user: live.user.into(),
            family: live.family,
            app_id: live.app_id,
            created_at: live.created_at,
            expires_at: live.expires_at.min(idle_end),
        })
    }

    /// A signed-in user changes their own password: the old one must match. Every other session of
    /// the user ends; this one lives on.
    pub fn change_password(
        &self,
        caller: &Caller,
        kind: TokenKind,
        token: &Secret,
        app_id: Option<&str>,
        old: &Secret,
        new: &Secret,
    ) -> Result<(), Error> {
        let info = self.check_token(kind, token, app_id)?;
        self.with_password(caller, &info.user.login, old, Error::WrongPassword, |_| Ok(()))?;
        self.replace_password(&info.user, new, Some(&digest(token)))?;
        self.audit(caller, "password_changed", Some(&info.app_id), Some(&info.user), None);
        Ok(())
    }

    /// Ends a live token. `app_id`, when given, must be the token's.
    pub fn logout(&self, caller: &Caller, kind: TokenKind, token: &Secret, app_id: Option<&str>) -> Result<(), Error> {
        let now = now_ms();
        let d = digest(token);
        // The audit row goes in the same transaction: one commit per logout, not two.
        self.store.write(|tx| -> Result<_, Error> {
            let live = self.live_token(tx, &d, kind, now)?;
            if app_id.is_some_and(|a| a != live.app_id) {
                return Err(Error::BadToken);
            }
            tokens::revoke(tx, &d, now)?;
            let user = User::from(live.user);
            super::audit::audit_in(tx, caller, "logout", Some(&live.app_id), Some(&user), None)?;
            log::debug!("user {} signed out of {}", live.user_id, live.app_id);
            Ok(())
        })
    }
}
