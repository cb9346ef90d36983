//! Passkeys of the hosted sign-in: WebAuthn credentials (ES256, user verification required,
//! discoverable) that sign a person in on their own, or as the second factor after a password.
//! The checks of the ceremonies are `webauthn.rs`'s; this is what is around them.
//!
//! - A challenge is never stored: it is its time, 16 random bytes and a MAC over them, the
//!   ceremony's purpose and what it is bound to (the browser's CSRF cookie; for a registration
//!   the user too), good for five minutes. An assertion is good once: the time of the challenge it
//!   answered is recorded by a conditional UPDATE (`last_challenge < at`), so a replay, or an
//!   older challenge, fails, also when two requests race on two nodes; the sign count never goes
//!   back either.
//! - The user handle given to authenticators is derived from the user id under the master key:
//!   no login or email is put on the authenticator as the handle, and it is the same on every node.
//! - A failure (an unknown credential, a bad signature, a replay, a challenge not ours) cannot
//!   be guessed past (the signature is ECDSA), so it holds back the caller, not the account:
//!   it counts under a shared credential key per address (`Subject::Shared`), never locking the
//!   owner out, and is audited `passkey_failed`.
//! - A person's first passkey comes with recovery codes when they have none, so that losing the
//!   authenticator does not lock them out.

use super::audit::audit_in;
use super::crypto::{ct_eq, random_bytes, Secret};
use super::guard::{Caller, Subject};
use super::signins::{b64url, relying_party};
use super::webauthn::{self, Credential};
use super::{now_ms, Core, Error, User};
use crate::store::second_factors as rows;

/// How long a challenge may be answered.
const CHALLENGE_MS: i64 = 300_000;
/// The most characters of a passkey's name.
const NAME_MAX: usize = 64;
/// The amr values (RFC 8176) of a passkey on its own: a key held by hardware (or a platform's
/// keychain), unlocked by the person's PIN or biometric (user verification), so two factors.
pub const AMR_PASSKEY: &[&str] = &["hwk", "mfa"];
/// After a password.
pub const AMR_PASSWORD_PASSKEY: &[&str] = &["pwd", "hwk"];

/// A passkey as its owner sees it.
#[derive(Debug, Clone)]
pub struct PasskeyInfo {
    pub id: i64,
    pub name: String,
    pub created_at: i64,
    pub last_used_at: Option<i64>,
}

/// What navigator.credentials.create() needs (base64url where binary).
#[derive(Debug, Clone)]
pub struct Creation {
    pub challenge: String,
    pub rp_id: String,
    pub user_handle: String,
    pub user_name: String,
    pub display_name: String,
    /// The credential ids the user has already, so the authenticator makes no second one.
    pub exclude: Vec<String>,
}

/// What navigator.credentials.get() needs.
#[derive(Debug, Clone)]
pub struct Request {
    pub challenge: String,
    pub rp_id: String,
    /// Empty: any discoverable passkey of this box (signing in with a passkey alone).
    pub allow: Vec<String>,
}

/// navigator.credentials.create()'s answer, as the page posted it.
#[derive(Clone, Default)]
pub struct PasskeyRegistration {
    /// The challenge the page was given.
    pub challenge: Vec<u8>,
    pub client_data_json: Vec<u8>,
    pub attestation_object: Vec<u8>,
}

/// navigator.credentials.get()'s answer, as the page posted it.
#[derive(Clone, Default)]
pub struct PasskeyAssertion {
    /// The challenge the page was given (checked as ours before anything else).
    pub challenge: Vec<u8>,
    pub credential_id: Vec<u8>,
    pub client_data_json: Vec<u8>,
    pub authenticator_data: Vec<u8>,
    pub signature: Vec<u8>,
    pub user_handle: Option<Vec<u8>>,
}

impl std::fmt::Debug for PasskeyAssertion {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("PasskeyAssertion(***)")
    }
}

fn info(r: rows::PasskeyRow) -> PasskeyInfo {
    PasskeyInfo { id: r.id, name: r.name, created_at: r.created_at, last_used_at: r.last_used_at }
}

impl Core {
    /// A challenge: its time, 16 random bytes, and a MAC over both, `purpose` and `binding`.
    fn passkey_challenge(&self, purpose: &str, binding: &[u8], at: i64, nonce: &[u8; 16]) -> Vec<u8> {
        let mut input = Vec::with_capacity(binding.len() + 40);
        input.extend_from_slice(purpose.as_bytes());
        input.push(0);
        input.extend_from_slice(&at.to_be_bytes());
        input.extend_from_slice(nonce);
        input.extend_from_slice(binding);
        let mac = self.key.derive("passkey challenge", &input);
        let mut out = at.to_be_bytes().to_vec();
        out.extend_from_slice(nonce);
        out.extend_from_slice(&mac[..16]);
        out
    }

    fn new_passkey_challenge(&self, purpose: &str, binding: &[u8]) -> Vec<u8> {
        self.passkey_challenge(purpose, binding, now_ms(), &random_bytes::<16>())
    }

    /// The time of a live challenge of ours for `purpose` and `binding`, or None.
    fn live_passkey_challenge(&self, purpose: &str, binding: &[u8], challenge: &[u8]) -> Option<i64> {
        let at = i64::from_be_bytes(challenge.get(..8)?.try_into().ok()?);
        let nonce: [u8; 16] = challenge.get(8..24)?.try_into().ok()?;
        let age = now_ms() - at;
        ((0..=CHALLENGE_MS).contains(&age) && ct_eq(challenge, &self.passkey_challenge(purpose, binding, at, &nonce)))
            .then_some(at)
    }

    /// The opaque user handle of `user_id` on authenticators.
    fn user_handle(&self, user_id: i64) -> Vec<u8> {
        self.key.derive("passkey user handle", &user_id.to_be_bytes())[..16].to_vec()
    }

    fn registration_binding(user_id: i64, browser: &str) -> Vec<u8> {
        let mut b = user_id.to_be_bytes().to_vec();
        b.extend_from_slice(browser.as_bytes());
        b
    }

    /// The user's passkeys, oldest first.
    pub fn passkeys(&self, user_id: i64) -> Result<Vec<PasskeyInfo>, Error> {
        Ok(self.store.with(|c| rows::passkeys(c, user_id))?.into_iter().map(info).collect())
    }

    /// What the account page needs to add a passkey, in the browser whose CSRF cookie is `browser`.
    pub fn passkey_creation(&self, user: &User, browser: &str) -> Result<Creation, Error> {
        let (rp_id, _) = relying_party(&self.config.public_url());
        let exclude = self.store.with(|c| rows::passkeys(c, user.id))?;
        let display = format!("{} {}", user.first_name, user.last_name).trim().to_string();
        Ok(Creation {
            challenge: b64url(&self.new_passkey_challenge("create", &Self::registration_binding(user.id, browser))),
            rp_id,
            user_handle: b64url(&self.user_handle(user.id)),
            user_name: user.login.clone(),
            display_name: if display.is_empty() { user.login.clone() } else { display },
            exclude: exclude.iter().map(|p| b64url(&p.credential_id)).collect(),
        })
    }

    /// Adds the passkey navigator.credentials.create() made, after checking it answers a live
    /// challenge of ours for this user and browser, with user verification. Answers the recovery
    /// codes made with it (shown once) when the user had none left, else none. A name is
    /// optional (then "Passkey"), at most 64 characters of clean text.
    pub fn add_passkey(
        &self,
        caller: &Caller,
        user: &User,
        browser: &str,
        made: &PasskeyRegistration,
        name: &str,
    ) -> Result<Vec<Secret>, Error> {
        let PasskeyRegistration { challenge, client_data_json, attestation_object } = made;
        let name = super::text::clean("name", name.trim())?;
        if name.chars().count() > NAME_MAX {
            return Err(Error::invalid("name", format!("is longer than {NAME_MAX} characters")));
        }
        let name = if name.is_empty() { "Passkey".to_string() } else { name };
        if self.live_passkey_challenge("create", &Self::registration_binding(user.id, browser), challenge).is_none() {
            return Err(Error::invalid("challenge", "is not a live challenge of this server: open the page again"));
        }
        let (rp_id, origin) = relying_party(&self.config.public_url());
        let cred = webauthn::verify_registration(&rp_id, &origin, challenge, client_data_json, attestation_object)
            .map_err(|e| Error::invalid("passkey", e.to_string()))?;
        let codes = self.store.write(|tx| -> Result<Vec<Secret>, Error> {
            let now = now_ms();
            let count = i64::from(cred.sign_count);
            if !rows::insert_passkey(tx, user.id, &cred.id, &cred.public_key, count, &name, now)? {
                return Err(Error::Exists("passkey".into()));
            }
            audit_in(tx, caller, "passkey_added", None, Some(user), None)?;
            if rows::recovery_left(tx, user.id)? > 0 {
                return Ok(Vec::new());
            }
            let (shown, digests): (Vec<Secret>, Vec<[u8; 32]>) =
                (0..super::totp::RECOVERY_CODES).map(|_| super::totp::new_recovery_code()).unzip();
            rows::replace_recovery_codes(tx, user.id, &digests, now)?;
            Ok(shown)
        })?;
        log::info!("user {} added a passkey", user.id);
        Ok(codes)
    }

    /// Removes passkey `id` of the user; false when there is no such passkey of theirs. The
    /// recovery codes go with the last second factor.
    pub fn remove_passkey(&self, caller: &Caller, user: &User, id: i64) -> Result<bool, Error> {
        self.store.write(|tx| {
            if rows::delete_passkey(tx, user.id, id)? == 0 {
                return Ok(false);
            }
            let totp = rows::totp(tx, user.id)?.is_some_and(|r| r.confirmed_at.is_some());
            if !totp && rows::passkey_count(tx, user.id)? == 0 {
                rows::delete_recovery_codes(tx, user.id)?;
            }
            audit_in(tx, caller, "passkey_removed", None, Some(user), None)?;
            Ok(true)
        })
    }

    /// What a sign-in page needs to ask for a passkey in the browser whose CSRF cookie is
    /// `browser`: any discoverable passkey (no user yet), or one of `user`'s (after the password).
    pub fn passkey_request(&self, browser: &str, user: Option<i64>) -> Result<Request, Error> {
        let (rp_id, _) = relying_party(&self.config.public_url());
        let allow = match user {
            Some(id) => self.store.with(|c| rows::passkeys(c, id))?.iter().map(|p| b64url(&p.credential_id)).collect(),
            None => Vec::new(),
        };
        Ok(Request { challenge: b64url(&self.new_passkey_challenge("get", browser.as_bytes())), rp_id, allow })
    }

    /// Checks an assertion made in the browser whose CSRF cookie is `browser`, by one of
    /// `user`'s passkeys when given (the second factor), or by any (signing in with a passkey
    /// alone); answers the user it signs in. Every failure is `BadCredentials` (a blocked user:
    /// `Blocked`), held back per address.
    pub fn sign_in_passkey(
        &self,
        caller: &Caller,
        browser: &str,
        assertion: &PasskeyAssertion,
        user: Option<i64>,
    ) -> Result<User, Error> {
        let subject = Subject::Shared("passkey");
        let now = now_ms();
        if let Err(e) = self.throttle.check(subject, caller, now) {
            if matches!(e, Error::Throttled { .. }) {
                super::stats::bump(&self.counters.throttled, 1);
            }
            return Err(e);
        }
        let mut whose: Option<User> = None;
        let result = self.check_passkey(browser, assertion, user, &mut whose);
        match &result {
            Ok(u) => self.audit(caller, "passkey_signin", None, Some(u), None),
            Err(Error::BadCredentials) => {
                self.audit(caller, "passkey_failed", None, whose.as_ref(), None);
                if let Err(e) = self.throttle.failed(subject, caller, now) {
                    log::warn!("a failed passkey was not counted: {e}");
                }
            }
            Err(_) => {}
        }
        result
    }

    fn check_passkey(
        &self,
        browser: &str,
        a: &PasskeyAssertion,
        user: Option<i64>,
        whose: &mut Option<User>,
    ) -> Result<User, Error> {
        let at = self.live_passkey_challenge("get", browser.as_bytes(), &a.challenge).ok_or(Error::BadCredentials)?;
        let row =
            self.store.with(|c| rows::passkey_by_credential(c, &a.credential_id))?.ok_or(Error::BadCredentials)?;
        let owner = self.user_by_id(row.user_id)?;
        *whose = Some(owner.clone());
        if user.is_some_and(|u| u != row.user_id) {
            return Err(Error::BadCredentials);
        }
        if a.user_handle.as_ref().is_some_and(|h| !ct_eq(h, &self.user_handle(row.user_id))) {
            return Err(Error::BadCredentials);
        }
        let (rp_id, origin) = relying_party(&self.config.public_url());
        let cred = Credential {
            id: row.credential_id.clone(),
            public_key: row.public_key.clone(),
            sign_count: u32::try_from(row.sign_count).unwrap_or(u32::MAX),
        };
        let count = webauthn::verify_assertion(
            &rp_id,
            &origin,
            &a.challenge,
            &cred,
            &a.client_data_json,
            &a.authenticator_data,
            &a.signature,
        )
        .map_err(|e| {
            log::info!("a passkey of user {} was refused: {e}", row.user_id);
            Error::BadCredentials
        })?;
        if owner.blocked {
            return Err(Error::Blocked);
        }
        if !self.store.write(|tx| rows::use_passkey(tx, row.id, i64::from(count), at, now_ms()))? {
            log::info!("a passkey assertion of user {} was replayed or overtaken", row.user_id);
            return Err(Error::BadCredentials);
        }
        Ok(owner)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;

    #[test]
    fn a_challenge_is_ours_for_its_purpose_and_binding_for_five_minutes() {
        let dir = tempfile::tempdir().unwrap();
        let core = Core::open(Config { data_dir: dir.path().join("data"), ..Config::default() }).unwrap();
        let nonce = [9u8; 16];
        let now = now_ms();
        let fresh = core.passkey_challenge("get", b"browser", now - 1_000, &nonce);
        assert_eq!(core.live_passkey_challenge("get", b"browser", &fresh), Some(now - 1_000));
        assert_eq!(core.live_passkey_challenge("get", b"another browser", &fresh), None);
        assert_eq!(core.live_passkey_challenge("create", b"browser", &fresh), None);
        let old = core.passkey_challenge("get", b"browser", now - CHALLENGE_MS - 1_000, &nonce);
        assert_eq!(core.live_passkey_challenge("get", b"browser", &old), None);
        let future = core.passkey_challenge("get", b"browser", now + 60_000, &nonce);
        assert_eq!(core.live_passkey_challenge("get", b"browser", &future), None);
        let mut bent = fresh.clone();
        bent[10] ^= 1;
        assert_eq!(core.live_passkey_challenge("get", b"browser", &bent), None);
        assert_eq!(core.live_passkey_challenge("get", b"browser", &fresh[..30]), None);
        assert_eq!(core.live_passkey_challenge("get", b"browser", b""), None);
        // Two challenges of one moment differ (16 random bytes each).
        assert_ne!(core.new_passkey_challenge("get", b"b"), core.new_passkey_challenge("get", b"b"));
    }
}
