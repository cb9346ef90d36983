//! The device authorization grant (RFC 8628): a box or a CLI without a browser shows a short
//! user code; its person types it at `{public_url}/activate` on a phone (or opens
//! `verification_uri_complete`), signs in there and approves; the device polls the token
//! endpoint until then.
//!
//! The device code is stored as a digest like every secret. The user code is 8 letters from an
//! alphabet without vowels or lookalikes (RFC 8628 §6.1: 20^8, about 34 bits), guessed only
//! under the throttle: a wrong one is counted per address (never against the client, whose id is
//! no secret). Asking for codes costs a row each, so an address may ask so many an hour.

use super::audit::audit_in;
use super::crypto::{random_bytes, random_token, Secret};
use super::guard::Caller;
use super::oidc::{normalize_scope, Client, SsoSession, Tokens};
use super::sessions::digest;
use super::{now_ms, Core, Error};
use crate::store::oidc as db;

/// RFC 8628 §6.1: no vowels (no words), no lookalikes.
const USER_CODE_ALPHABET: &[u8; 20] = b"BCDFGHJKLMNPQRSTVWXZ";
/// Device codes an address may ask for in an hour.
const PER_ADDRESS_HOUR: u32 = 60;

/// What the device authorization endpoint answers.
#[derive(Debug)]
pub struct DeviceAuthorization {
    pub device_code: Secret,
    /// As shown to the person: `BCDF-GHJK`.
    pub user_code: String,
    pub expires_in: i64,
    pub interval: i64,
}

/// What a poll of the token endpoint finds.
#[derive(Debug)]
pub enum DevicePoll {
    Tokens(Tokens),
    /// Not decided yet (`authorization_pending`).
    Pending,
    /// Polled faster than the interval (`slow_down`).
    SlowDown,
    /// The person said no (`access_denied`).
    Denied,
    /// Past its lifetime (`expired_token`).
    Expired,
}

/// A device asking to be approved, as the activation page shows it.
#[derive(Debug, Clone)]
pub struct PendingDevice {
    pub user_code: String,
    pub client_id: String,
    pub scope: String,
}

/// The code a person typed, in the stored form: the alphabet's letters only, upper case; None
/// when it cannot be a user code.
pub fn normalize_user_code(typed: &str) -> Option<String> {
    let code: String = typed.chars().filter(|c| !matches!(c, '-' | ' ')).map(|c| c.to_ascii_uppercase()).collect();
    (code.len() == 8 && code.bytes().all(|b| USER_CODE_ALPHABET.contains(&b))).then_some(code)
}

/// `BCDFGHJK` → `BCDF-GHJK`.
pub fn display_user_code(code: &str) -> String {
    if code.len() == 8 {
        format!("{}-{}", &code[..4], &code[4..])
    } else {
        code.to_string()
    }
}

fn draw_user_code() -> String {
    // Rejection-free: 256 is not a multiple of 20, so draw bytes below 240 only.
    let mut out = String::with_capacity(8);
    while out.len() < 8 {
        for b in random_bytes::<16>() {
            if b < 240 && out.len() < 8 {
                out.push(USER_CODE_ALPHABET[(b % 20) as usize] as char);
            }
        }
    }
    out
}

impl Core {
    /// RFC 8628 §3.1-3.2: a new device authorization for `client`.
    pub fn start_device_authorization(
        &self,
        caller: &Caller,
        client: &Client,
        scope: Option<&str>,
    ) -> Result<DeviceAuthorization, Error> {
        let now = now_ms();
        if let Some(addr) = caller.addr.map(super::guard::address_key) {
            if !self.throttle.take(&format!("device-from:{addr}"), PER_ADDRESS_HOUR, 3_600_000, now)? {
                return Err(Error::Throttled { retry_after_ms: 60_000 });
            }
        }
        let scope = normalize_scope(scope.unwrap_or("openid"));
        let lifetime = self.config.oidc.device_code_lifetime.millis();
        let device_code = random_token();
        let d = digest(&device_code);
        // A user code taken by a live authorization: draw again (a collision in 2.5e10 is rare).
        for _ in 0..5 {
            let user_code = draw_user_code();
            match self
                .store
                .write(|tx| db::insert_device(tx, &d, &user_code, &client.app_id, &scope, now, now + lifetime))
            {
                Ok(()) => {
                    return Ok(DeviceAuthorization {
                        device_code,
                        user_code: display_user_code(&user_code),
                        expires_in: lifetime / 1000,
                        interval: self.config.oidc.device_poll_interval.millis() / 1000,
                    })
                }
                Err(crate::store::Error::Conflict(_)) => continue,
                Err(e) => return Err(e.into()),
            }
        }
        Err(super::internal("no free user code after five draws"))
    }

    /// The activation page: the live, undecided authorization behind a typed code. A wrong code
    /// counts against the address like a wrong shared secret (`Gone` is the answer).
    ///
    /// Unlike a client's secret, a user code is short enough to guess: an address held back is
    /// answered `Throttled` before any lookup, a right code included, or the throttle would still
    /// tell its guesses apart.
    pub fn pending_device(&self, caller: &Caller, typed: &str) -> Result<PendingDevice, Error> {
        let now = now_ms();
        self.throttle.check(super::guard::Subject::Shared("device-user-code"), caller, now)?;
        let found = match normalize_user_code(typed) {
            Some(code) => self.store.with(|c| db::device_by_user_code(c, &code, now))?,
            None => None,
        };
        match found {
            Some(row) => Ok(PendingDevice { user_code: row.user_code, client_id: row.app_id, scope: row.scope }),
            None => Err(self.shared_credential_failed(
                caller,
                "device-user-code",
                "device_code_wrong",
                None,
                None,
                Error::Gone,
            )),
        }
    }

    /// The signed-in person approves (or denies) the device behind `user_code`.
    pub fn decide_device(
        &self,
        caller: &Caller,
        session: &SsoSession,
        user_code: &str,
        approve: bool,
    ) -> Result<(), Error> {
        // The same lookup as the activation page's, under the same throttle: a signed-in guesser
        // must not approve someone else's device into their own account by trying codes here.
        let client_id = self.pending_device(caller, user_code)?.client_id;
        let code = normalize_user_code(user_code).ok_or(Error::Gone)?;
        let now = now_ms();
        let client = self.client(&client_id)?;
        self.store.write(|tx| -> Result<(), Error> {
            if approve && !(client.open || crate::store::users::is_member(tx, session.user.id, &client.app_id)?) {
                return Err(Error::NotMember);
            }
            let amr = session.amr.join(" ");
            if !db::decide_device(tx, &code, session.user.id, &session.sid, session.auth_time, &amr, !approve, now)? {
                return Err(Error::Gone);
            }
            let event = if approve { "device_approved" } else { "device_denied" };
            audit_in(tx, caller, event, Some(&client.app_id), Some(&session.user), None)
        })
    }

    /// RFC 8628 §3.4-3.5: the device polls with its device code.
    pub fn poll_device(&self, caller: &Caller, client: &Client, device_code: &Secret) -> Result<DevicePoll, Error> {
        let d = digest(device_code);
        let now = now_ms();
        let interval = self.config.oidc.device_poll_interval.millis();
        let Some(row) = self.store.with(|c| db::device_by_code(c, &d))? else { return Err(Error::BadToken) };
        if row.app_id != client.app_id || row.used_at.is_some() {
            return Err(Error::BadToken);
        }
        if row.expires_at <= now {
            return Ok(DevicePoll::Expired);
        }
        if row.denied {
            return Ok(DevicePoll::Denied);
        }
        let Some(user_id) = row.user_id.filter(|_| row.decided_at.is_some()) else {
            let too_soon = row.last_poll_at.is_some_and(|t| now - t < interval);
            self.store.write(|tx| db::poll_device(tx, &d, now))?;
            return Ok(if too_soon { DevicePoll::SlowDown } else { DevicePoll::Pending });
        };
        let session = row.session.clone().unwrap_or_default();
        let code = super::oidc::Approved {
            user_id,
            session,
            scope: row.scope.clone(),
            auth_time: row.auth_time.unwrap_or(now),
            amr: row.amr.clone().unwrap_or_default(),
        };
        let spent = |tx: &crate::store::Db| db::use_device(tx, &d, now);
        match self.issue_for_approval(caller, client, code, spent)? {
            Some(tokens) => Ok(DevicePoll::Tokens(tokens)),
            None => Err(Error::BadToken),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn user_codes_are_typed_forgivingly_and_drawn_from_the_alphabet() {
        for _ in 0..100 {
            let c = draw_user_code();
            assert_eq!(normalize_user_code(&display_user_code(&c)).as_deref(), Some(c.as_str()));
        }
        assert_eq!(normalize_user_code("bcdf-ghjk").as_deref(), Some("BCDFGHJK"));
        assert_eq!(normalize_user_code("BCDF GHJK").as_deref(), Some("BCDFGHJK"));
        assert_eq!(normalize_user_code("ABCD-EFGH"), None, "vowels are not in the alphabet");
        assert_eq!(normalize_user_code("BCDF-GHJ"), None);
        assert_eq!(normalize_user_code("ＢＣＤＦ-ＧＨＪＫ"), None, "fullwidth lookalikes are refused");
    }
}
