//! The self-service account page's operations (`/account`): what a signed-in person sees of
//! their account (second factors, SSO sessions, the grants their clients hold, consents) and
//! what they end or change there. Each takes the person's live SSO session, so that nobody
//! reaches another person's sessions, grants or consents; each is audited.

use super::audit::audit_in;
use super::crypto::{hex, Secret};
use super::guard::Caller;
use super::oidc::SsoSession;
use super::sessions::digest;
use super::totp::{SecondFactors, TotpEnrolment};
use super::{now_ms, Core, Error, User, APP_SSO};
use crate::store::{account as db, oidc as oidc_db, tokens};

/// One live SSO session of the person.
#[derive(Debug, Clone)]
pub struct SessionView {
    /// The session's id (hex), what ending it names.
    pub sid: String,
    /// The session of the browser looking at the page.
    pub current: bool,
    pub auth_time: i64,
    pub last_used_at: i64,
    pub expires_at: i64,
    pub amr: Vec<String>,
}

/// One grant a client holds (a family of tokens).
#[derive(Debug, Clone)]
pub struct GrantView {
    /// The family (hex), what ending it names.
    pub id: String,
    pub client: String,
    pub scope: String,
    /// Came through the browser's current SSO session.
    pub this_session: bool,
    pub created_at: i64,
    pub expires_at: i64,
}

#[derive(Debug, Clone)]
pub struct ConsentView {
    pub client: String,
    pub scope: String,
    pub since: i64,
}

/// Everything the account page shows.
#[derive(Debug, Clone)]
pub struct Account {
    pub user: User,
    pub factors: SecondFactors,
    pub passkeys: Vec<super::passkeys::PasskeyInfo>,
    pub sessions: Vec<SessionView>,
    pub grants: Vec<GrantView>,
    pub consents: Vec<ConsentView>,
}

impl Core {
    /// The account page of the person signed in as `session`.
    pub fn account(&self, session: &SsoSession) -> Result<Account, Error> {
        let user = &session.user;
        let now = now_ms();
        let factors = self.second_factors(user.id)?;
        let passkeys = self.passkeys(user.id)?;
        let (sessions, grants, consents) = self.store.with(|c| -> Result<_, Error> {
            Ok((
                db::sso_sessions(c, user.id, APP_SSO, now)?,
                db::client_grants(c, user.id, APP_SSO, now)?,
                oidc_db::consents_of(c, user.id)?,
            ))
        })?;
        let sessions = sessions
            .into_iter()
            .filter_map(|s| {
                let last = self.uses.last(s.token_id).map_or(s.last_used_at, |t| t.max(s.last_used_at));
                let idle_end = s.idle_ms.map_or(i64::MAX, |i| last.saturating_add(i));
                (idle_end > now).then(|| SessionView {
                    current: s.sid == session.sid,
                    sid: hex(&s.sid),
                    auth_time: s.auth_time,
                    last_used_at: last,
                    expires_at: s.expires_at.min(idle_end),
                    amr: s.amr.split(' ').filter(|a| !a.is_empty()).map(str::to_string).collect(),
                })
            })
            .collect();
        let grants = grants
            .into_iter()
            .map(|g| GrantView {
                id: hex(&g.family),
                client: g.app_id,
                scope: g.scope,
                this_session: g.session.as_deref() == Some(session.sid.as_slice()),
                created_at: g.created_at,
                expires_at: g.expires_at,
            })
            .collect();
        let consents =
            consents.into_iter().map(|(client, scope, since)| ConsentView { client, scope, since }).collect();
        Ok(Account { user: user.clone(), factors, passkeys, sessions, grants, consents })
    }

    /// The person's current password, checked through the one sign-in path (the throttle, the
    /// audit of a failure): `WrongPassword` when it is not theirs.
    pub fn check_own_password(&self, caller: &Caller, user: &User, password: &Secret) -> Result<(), Error> {
        self.with_password(caller, &user.login, password, Error::WrongPassword, |u| {
            if u.id != user.id || u.blocked {
                return Err(Error::WrongPassword);
            }
            Ok(())
        })
    }

    /// The person changes their password on the account page: the current one checked, the new
    /// one under the policy; every token of theirs is revoked but the SSO session's (`sso_token`,
    /// the browser they changed it in). Audited `password_changed`.
    pub fn change_own_password(
        &self,
        caller: &Caller,
        session: &SsoSession,
        sso_token: &Secret,
        current: &Secret,
        new: &Secret,
    ) -> Result<(), Error> {
        self.check_own_password(caller, &session.user, current)?;
        self.replace_password(&session.user, new, Some(&digest(sso_token)))?;
        self.audit(caller, "password_changed", Some(APP_SSO), Some(&session.user), None);
        Ok(())
    }

    /// Starts enrolling an authenticator app (audited `totp_enrolment_started`).
    pub fn begin_own_totp(&self, caller: &Caller, user: &User) -> Result<TotpEnrolment, Error> {
        let enrolment = self.totp_begin(user)?;
        self.audit(caller, "totp_enrolment_started", None, Some(user), None);
        Ok(enrolment)
    }

    /// Ends one of the person's SSO sessions (`sid`, hex) and every token issued through it,
    /// with back-channel logouts; false when it is not a live session of theirs.
    pub fn end_own_session(&self, caller: &Caller, user: &User, sid: &str) -> Result<bool, Error> {
        let Some(sid) = super::crypto::unhex(sid).filter(|s| s.len() == 16) else { return Ok(false) };
        let found = self.store.with(|c| db::grant_of(c, user.id, &sid))?;
        if found.is_none_or(|(app, _)| app != APP_SSO) {
            return Ok(false);
        }
        let owed = self.backchannel_targets(user.id, None, Some(&sid));
        let now = now_ms();
        let ended = self.store.write(|tx| -> Result<bool, Error> {
            let n = tokens::revoke_family(tx, &sid, now)?;
            oidc_db::revoke_session_tokens(tx, &sid, now)?;
            if n > 0 {
                audit_in(tx, caller, "session_ended", None, Some(user), None)?;
            }
            Ok(n > 0)
        })?;
        self.queue_backchannel_logouts(user.id, owed);
        Ok(ended)
    }

    /// Ends every SSO session of the person but `current`, and their tokens; how many ended.
    pub fn end_other_sessions(&self, caller: &Caller, current: &SsoSession) -> Result<usize, Error> {
        let user = &current.user;
        let now = now_ms();
        let others: Vec<Vec<u8>> = self
            .store
            .with(|c| db::sso_sessions(c, user.id, APP_SSO, now))?
            .into_iter()
            .map(|s| s.sid)
            .filter(|s| *s != current.sid)
            .collect();
        if others.is_empty() {
            return Ok(0);
        }
        let owed: Vec<_> = others.iter().flat_map(|sid| self.backchannel_targets(user.id, None, Some(sid))).collect();
        let ended = self.store.write(|tx| -> Result<usize, Error> {
            let mut n = 0;
            for sid in &others {
                if tokens::revoke_family(tx, sid, now)? > 0 {
                    n += 1;
                }
                oidc_db::revoke_session_tokens(tx, sid, now)?;
            }
            audit_in(tx, caller, "sessions_ended", None, Some(user), None)?;
            Ok(n)
        })?;
        self.queue_backchannel_logouts(user.id, owed);
        Ok(ended)
    }

    /// Ends one grant a client holds for the person (`id`, the family in hex): its tokens are
    /// revoked, and the client is sent a back-channel logout when that was its last grant of the
    /// session. False when it is no grant of theirs.
    pub fn end_own_grant(&self, caller: &Caller, user: &User, id: &str) -> Result<bool, Error> {
        let Some(family) = super::crypto::unhex(id).filter(|f| f.len() == 16) else { return Ok(false) };
        let Some((app, session)) = self.store.with(|c| db::grant_of(c, user.id, &family))? else { return Ok(false) };
        if app == APP_SSO {
            return Ok(false);
        }
        let owed = match &session {
            Some(s) => self.backchannel_targets(user.id, Some(&app), Some(s)),
            None => vec![],
        };
        let now = now_ms();
        let ended = self.store.write(|tx| -> Result<bool, Error> {
            let n = tokens::revoke_family(tx, &family, now)?;
            if n > 0 {
                audit_in(tx, caller, "grant_revoked", Some(&app), Some(user), None)?;
            }
            Ok(n > 0)
        })?;
        // The client keeps the session while another grant of it lives.
        if let Some(s) = &session {
            if self.backchannel_targets(user.id, Some(&app), Some(s)).is_empty() {
                self.queue_backchannel_logouts(user.id, owed);
            }
        }
        Ok(ended)
    }

    /// Withdraws the person's consent to `client`: the consent page shows again on its next
    /// request, and the client's tokens for them are revoked. Audited `consent_revoked`; false
    /// when there was no consent.
    pub fn revoke_own_consent(&self, caller: &Caller, user: &User, client: &str) -> Result<bool, Error> {
        let owed = self.backchannel_targets(user.id, Some(client), None);
        let now = now_ms();
        let revoked = self.store.write(|tx| -> Result<bool, Error> {
            if !oidc_db::delete_consent(tx, user.id, client)? {
                return Ok(false);
            }
            db::revoke_client_tokens(tx, user.id, client, now)?;
            audit_in(tx, caller, "consent_revoked", Some(client), Some(user), None)?;
            Ok(true)
        })?;
        if revoked {
            self.queue_backchannel_logouts(user.id, owed);
        }
        Ok(revoked)
    }
}
