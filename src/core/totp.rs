//! Second factors of the hosted sign-in: TOTP (RFC 6238: HMAC-SHA-1, 6 digits, 30 s steps, what
//! every authenticator app takes) and recovery codes.
//!
//! The TOTP secret (20 random bytes) is sealed under the master key with the context
//! `totp:{user_id}`, shown once by [`Core::totp_begin`] (base32, otpauth:// URI, QR code as SVG) and
//! never logged. A code is good once: the step it was accepted for is stored by a conditional
//! UPDATE (`last_step < step`), so a replay, or an older step, fails even when two requests race
//! on several nodes. Recovery codes (10 per set, 50 bits each, `xxxxx-xxxxx` in Crockford's base32
//! alphabet) are stored as SHA-256 digests and spent by a conditional UPDATE (`used_at IS NULL`).
//!
//! Every failed code counts in the sign-in throttle under an account key of its own
//! (`2fa:{user_id}`, apart from the password's) and against the caller's address, so that guessing
//! six digits is held back per account and per address; each failure is the audit event
//! `second_factor_failed`.

use qrcodegen::{QrCode, QrCodeEcc};
use totp_rs::{Algorithm, Builder, Totp};

use super::audit::audit_in;
use super::crypto::{random_bytes, sha256, Secret};
use super::guard::{Caller, Outcome, Subject};
use super::{now_ms, Core, Error, User};
use crate::store::audit::{self as audit_rows, AuditRow};
use crate::store::second_factors as rows;

/// Recovery codes in a set.
pub const RECOVERY_CODES: usize = 10;
/// Characters of a recovery code (the dash aside): 5 bits each, 50 in all.
const RECOVERY_LEN: usize = 10;
/// Crockford's base32: no i, l, o, u (typed i, l and o are read as 1, 1 and 0).
const RECOVERY_ALPHABET: &[u8; 32] = b"0123456789abcdefghjkmnpqrstvwxyz";
/// The amr value (RFC 8176) of a second factor checked here. A recovery code is a one-time
/// password too (a long one, on paper), so it is "otp" as well.
pub const AMR_OTP: &str = "otp";

const TOTP_DIGITS: usize = 6;
const TOTP_STEP_SECS: u64 = 30;

/// What enrolling an authenticator shows, once.
pub struct TotpEnrolment {
    /// The secret in base32, for typing it in.
    pub secret: Secret,
    /// The otpauth:// URI (what the QR code holds).
    pub uri: Secret,
    /// The URI as a QR code, an SVG document.
    pub qr_svg: String,
}

impl std::fmt::Debug for TotpEnrolment {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TotpEnrolment(***)")
    }
}

/// What second factors a user has.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SecondFactors {
    /// A confirmed TOTP.
    pub totp: bool,
    /// Unused recovery codes.
    pub recovery_left: i64,
    /// Passkeys (passkeys.rs).
    pub passkeys: i64,
}

/// What a person typed, once spaces are gone: a TOTP code or a recovery code (its canonical form).
enum Code {
    Totp(String),
    Recovery(String),
}

/// Spaces out; six digits are a TOTP code; ten characters of the recovery alphabet (a dash
/// anywhere, any case, i/l/o read as 1/1/0) a recovery code; anything else nothing.
fn normalize(code: &str) -> Option<Code> {
    let compact: String = code.chars().filter(|c| !c.is_whitespace()).collect();
    if compact.len() == TOTP_DIGITS && compact.bytes().all(|b| b.is_ascii_digit()) {
        return Some(Code::Totp(compact));
    }
    let mut canonical = String::with_capacity(RECOVERY_LEN);
    for c in compact.chars().filter(|&c| c != '-') {
        let c = match c.to_ascii_lowercase() {
            'o' => '0',
            'i' | 'l' => '1',
            c => c,
        };
        if !c.is_ascii() || !RECOVERY_ALPHABET.contains(&(c as u8)) {
            return None;
        }
        canonical.push(c);
    }
    (canonical.len() == RECOVERY_LEN && compact.matches('-').count() <= 1).then_some(Code::Recovery(canonical))
}

/// The digest a recovery code is stored as (of its canonical form, without the dash).
fn recovery_digest(canonical: &str) -> [u8; 32] {
    sha256(format!("recovery:{canonical}").as_bytes())
}

/// A fresh recovery code, `xxxxx-xxxxx`, and its digest.
pub(super) fn new_recovery_code() -> (Secret, [u8; 32]) {
    // 256 is a multiple of 32: the low five bits of a random byte are uniform.
    let bytes = zeroize::Zeroizing::new(random_bytes::<RECOVERY_LEN>());
    let chars = zeroize::Zeroizing::new(
        bytes.iter().map(|b| char::from(RECOVERY_ALPHABET[usize::from(b & 31)])).collect::<String>(),
    );
    let shown = Secret::new(format!("{}-{}", &chars[..5], &chars[5..]));
    (shown, recovery_digest(&chars))
}

fn context(user_id: i64) -> String {
    format!("totp:{user_id}")
}

/// The TOTP of a secret, for a user's account name and an issuer.
fn totp(secret: &[u8], issuer: &str, account: &str) -> Result<Totp, Error> {
    let secret: [u8; 20] = secret.try_into().map_err(|_| super::internal("a TOTP secret is not 20 bytes"))?;
    Builder::new()
        .with_algorithm(Algorithm::SHA1)
        .with_digits(TOTP_DIGITS as u8)
        .with_skew(1)
        .with_step_duration(TOTP_STEP_SECS)
        .with_secret(totp_rs::Secret::new_stack(secret))
        .with_issuer(Some(issuer))
        // otpauth labels separate issuer and account by a colon: none may hold one.
        .with_account_name(account.replace(':', "_"))
        .build()
        .map_err(|e| super::internal(format!("totp: {e}")))
}

/// The QR code of `text` as an SVG document (4 modules of quiet zone, one path).
fn qr_svg(text: &str) -> Result<String, Error> {
    let qr = QrCode::encode_text(text, QrCodeEcc::Medium).map_err(|e| super::internal(format!("qr: {e}")))?;
    let border = 4;
    let size = qr.size() + 2 * border;
    let mut path = String::new();
    for y in 0..qr.size() {
        for x in 0..qr.size() {
            if qr.get_module(x, y) {
                if !path.is_empty() {
                    path.push(' ');
                }
                path.push_str(&format!("M{},{}h1v1h-1z", x + border, y + border));
            }
        }
    }
    Ok(format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" version=\"1.1\" viewBox=\"0 0 {size} {size}\" \
         stroke=\"none\" shape-rendering=\"crispEdges\">\
         <rect width=\"100%\" height=\"100%\" fill=\"#FFFFFF\"/><path d=\"{path}\" fill=\"#000000\"/></svg>"
    ))
}

fn now_secs() -> u64 {
    u64::try_from(now_ms() / 1000).unwrap_or(0)
}

impl Core {
    /// The issuer authenticator apps show: the host of `public_url` when set, else "gatehouse".
    fn totp_issuer(&self) -> String {
        url::Url::parse(&self.config.public_url)
            .ok()
            .and_then(|u| u.host_str().map(str::to_string))
            .filter(|h| !h.is_empty() && !h.contains(':'))
            .unwrap_or_else(|| "gatehouse".to_string())
    }

    /// The user's TOTP secret in the clear, with its row.
    fn totp_secret(&self, user_id: i64, row: &rows::TotpRow) -> Result<zeroize::Zeroizing<Vec<u8>>, Error> {
        self.key.open(&context(user_id), &row.secret_enc).ok_or_else(|| {
            super::internal(format!("the TOTP secret of user {user_id} does not open under the master key"))
        })
    }

    /// Starts enrolling an authenticator: a new unconfirmed secret replaces an unconfirmed one.
    /// `Error::Exists` when a confirmed TOTP is there (remove it first).
    pub fn totp_begin(&self, user: &User) -> Result<TotpEnrolment, Error> {
        let secret = zeroize::Zeroizing::new(random_bytes::<20>());
        let sealed = self.key.seal(&context(user.id), secret.as_slice());
        let totp = totp(secret.as_slice(), &self.totp_issuer(), &user.login)?;
        let uri = Secret::new(totp.to_url().map_err(|e| super::internal(format!("totp: {e}")))?);
        let qr_svg = qr_svg(uri.expose())?;
        let written = self.store.write(|tx| rows::begin_totp(tx, user.id, &sealed, now_ms()))?;
        if !written {
            return Err(Error::Exists("TOTP".into()));
        }
        Ok(TotpEnrolment { secret: Secret::new(totp.secret().to_base32()), uri, qr_svg })
    }

    /// Confirms the enrolment with a code from the authenticator; answers a fresh set of recovery
    /// codes (shown once; earlier ones are replaced). A wrong code is `BadCredentials`, counted
    /// like any failed second factor. No enrolment under way: `Invalid`; a confirmed one: `Exists`.
    pub fn totp_confirm(&self, caller: &Caller, user: &User, code: &str) -> Result<Vec<Secret>, Error> {
        let Some(Code::Totp(code)) = normalize(code) else { return Err(Error::BadCredentials) };
        self.second_factor_throttled(caller, user, || {
            let row = self.store.with(|c| rows::totp(c, user.id))?;
            let row = match row {
                None => return Err(Error::invalid("totp", "no TOTP enrolment is under way: begin one first")),
                Some(r) if r.confirmed_at.is_some() => return Err(Error::Exists("TOTP".into())),
                Some(r) => r,
            };
            let secret = self.totp_secret(user.id, &row)?;
            let totp = totp(&secret, &self.totp_issuer(), &user.login)?;
            let step = totp.check(&code, now_secs()).ok_or(Error::BadCredentials)?;
            let step = i64::try_from(step).map_err(super::internal)?;
            let (shown, digests): (Vec<Secret>, Vec<[u8; 32]>) =
                (0..RECOVERY_CODES).map(|_| new_recovery_code()).unzip();
            self.store.write(|tx| {
                let now = now_ms();
                if !rows::confirm_totp(tx, user.id, &row.secret_enc, step, now)? {
                    // Another request confirmed it, or replaced the secret, first.
                    return Err(Error::BadCredentials);
                }
                rows::replace_recovery_codes(tx, user.id, &digests, now)?;
                audit_in(tx, caller, "second_factor_added", None, Some(user), None)
            })?;
            Ok(shown)
        })
    }

    /// Removes the user's TOTP (confirmed or not), and the recovery codes unless a passkey stays;
    /// false when there was none.
    pub fn totp_remove(&self, caller: &Caller, user: &User) -> Result<bool, Error> {
        self.store.write(|tx| {
            let totp = rows::delete_totp(tx, user.id)?;
            let codes =
                if rows::passkey_count(tx, user.id)? == 0 { rows::delete_recovery_codes(tx, user.id)? } else { 0 };
            if totp + codes == 0 {
                return Ok(false);
            }
            audit_in(tx, caller, "second_factor_removed", None, Some(user), None)?;
            Ok(true)
        })
    }

    /// A fresh set of recovery codes, shown once; the earlier ones (used or not) stop working.
    /// `Invalid` when the user has no second factor (a confirmed TOTP or a passkey).
    pub fn new_recovery_codes(&self, caller: &Caller, user: &User) -> Result<Vec<Secret>, Error> {
        let (shown, digests): (Vec<Secret>, Vec<[u8; 32]>) = (0..RECOVERY_CODES).map(|_| new_recovery_code()).unzip();
        self.store.write(|tx| {
            if rows::totp(tx, user.id)?.is_none_or(|r| r.confirmed_at.is_none())
                && rows::passkey_count(tx, user.id)? == 0
            {
                return Err(Error::invalid("totp", "recovery codes need a confirmed second factor"));
            }
            rows::replace_recovery_codes(tx, user.id, &digests, now_ms())?;
            audit_in(tx, caller, "recovery_codes_renewed", None, Some(user), None)
        })?;
        Ok(shown)
    }

    pub fn second_factors(&self, user_id: i64) -> Result<SecondFactors, Error> {
        self.store.with(|c| {
            let totp = rows::totp(c, user_id)?.is_some_and(|r| r.confirmed_at.is_some());
            Ok(SecondFactors {
                totp,
                recovery_left: rows::recovery_left(c, user_id)?,
                passkeys: rows::passkey_count(c, user_id)?,
            })
        })
    }

    /// The user must give a second factor to sign in: a confirmed TOTP or a passkey.
    pub fn has_second_factor(&self, user_id: i64) -> Result<bool, Error> {
        self.store.with(|c| {
            Ok(rows::totp(c, user_id)?.is_some_and(|r| r.confirmed_at.is_some())
                || rows::passkey_count(c, user_id)? > 0)
        })
    }

    /// An operator's reset: every second factor of the user goes (audited as
    /// `second_factor_removed` from the command line).
    pub fn reset_second_factors(&self, user_id: i64) -> Result<(), Error> {
        let caller = Caller::local();
        self.store.write(|tx| {
            let removed = rows::delete_totp(tx, user_id)?
                + rows::delete_recovery_codes(tx, user_id)?
                + rows::delete_passkeys(tx, user_id)?;
            if removed > 0 {
                let row = AuditRow {
                    at: now_ms(),
                    event: "second_factor_removed".into(),
                    app_id: None,
                    user_id: Some(user_id),
                    login: None,
                    client: None,
                    dialect: Some(caller.dialect.to_string()),
                };
                audit_rows::insert(tx, &row)?;
            }
            Ok::<_, Error>(())
        })
    }

    /// Checks a second factor: a current TOTP code (one step of clock skew either way), good
    /// once, or an unused recovery code, spent. Answers the RFC 8176 amr value ("otp" for both).
    /// Anything but six digits or a recovery code's form is `BadCredentials` at once.
    pub fn check_second_factor(&self, caller: &Caller, user: &User, code: &str) -> Result<&'static str, Error> {
        let Some(code) = normalize(code) else { return Err(Error::BadCredentials) };
        self.second_factor_throttled(caller, user, || match &code {
            Code::Totp(code) => {
                let row = self.store.with(|c| rows::totp(c, user.id))?;
                let Some(row) = row.filter(|r| r.confirmed_at.is_some()) else { return Err(Error::BadCredentials) };
                let secret = self.totp_secret(user.id, &row)?;
                // Token comparison in totp-rs is constant-time.
                let step = totp(&secret, &self.totp_issuer(), &user.login)?
                    .check(code, now_secs())
                    .ok_or(Error::BadCredentials)?;
                let step = i64::try_from(step).map_err(super::internal)?;
                // The step is spent by the one request whose UPDATE saw an older last_step.
                if self.store.write(|tx| rows::use_step(tx, user.id, step))? {
                    Ok(AMR_OTP)
                } else {
                    Err(Error::BadCredentials)
                }
            }
            Code::Recovery(canonical) => {
                // Looked up by its digest (a code of 50 random bits), as tokens are.
                let digest = recovery_digest(canonical);
                self.store.write(|tx| {
                    if !rows::spend_recovery_code(tx, user.id, &digest, now_ms())? {
                        return Err(Error::BadCredentials);
                    }
                    audit_in(tx, caller, "recovery_code_used", None, Some(user), None)?;
                    Ok(AMR_OTP)
                })
            }
        })
    }

    /// Runs a second-factor attempt under the throttle, with the account key `2fa:{user_id}`:
    /// refused while that key or the caller's address must wait (nothing written then); a
    /// `BadCredentials` is audited as `second_factor_failed` and counted against both (a lockout
    /// it causes is `lockout` or `address_lockout`, with the user); a success clears the key.
    /// Not `Core::throttled`, which records "login_failed", counts sign-ins in the stats and frees
    /// an account whose password was set since: none of which fits a second factor.
    fn second_factor_throttled<T>(
        &self,
        caller: &Caller,
        user: &User,
        attempt: impl FnOnce() -> Result<T, Error>,
    ) -> Result<T, Error> {
        use super::stats::bump;
        let key = format!("2fa:{}", user.id);
        let subject = Subject::Account(&key);
        let now = now_ms();
        if let Err(e) = self.throttle.check(subject, caller, now) {
            if matches!(e, Error::Throttled { .. }) {
                bump(&self.counters.throttled, 1);
            }
            return Err(e);
        }
        let result = attempt();
        match &result {
            Ok(_) => {
                if let Err(e) = self.throttle.succeeded(&key) {
                    log::warn!("a second factor's failure count was not cleared: {e}");
                }
            }
            Err(Error::BadCredentials) => {
                self.audit(caller, "second_factor_failed", None, Some(user), None);
                let outcome = self.throttle.failed(subject, caller, now).unwrap_or_else(|e| {
                    log::warn!("a failed second factor was not counted: {e}");
                    Outcome::Counted
                });
                if outcome != Outcome::Counted {
                    bump(&self.counters.lockouts, 1);
                    let event = if outcome == Outcome::LockedOut { "lockout" } else { "address_lockout" };
                    self.audit(caller, event, None, Some(user), None);
                    log::warn!(
                        "second factor lockout after repeated failures (dialect {}, address {})",
                        caller.dialect,
                        caller.addr.map(|a| a.to_string()).unwrap_or_else(|| "-".into())
                    );
                }
            }
            Err(_) => {}
        }
        result
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;
    use crate::core::users::NewUser;

    fn open() -> (tempfile::TempDir, Core) {
        let dir = tempfile::tempdir().unwrap();
        let config = Config { data_dir: dir.path().join("data"), ..Config::default() };
        let core = Core::open(config).unwrap();
        (dir, core)
    }

    fn user(core: &Core, login: &str) -> User {
        core.add_user(NewUser {
            login: login.into(),
            password: None,
            email: None,
            first_name: "Ada".into(),
            last_name: "Lovelace".into(),
            civility: String::new(),
            user_type: "USER".into(),
            apps: vec![],
        })
        .unwrap()
    }

    fn caller() -> Caller {
        Caller::new(Some("10.1.2.3".parse().unwrap()), "test")
    }

    /// The authenticator app's side: a TOTP built by totp-rs from the base32 secret shown.
    fn app(enrolment: &TotpEnrolment) -> Totp {
        let bytes = totp_rs::Secret::try_from_base32(enrolment.secret.expose()).unwrap();
        Builder::new().with_secret(bytes).build().unwrap()
    }

    fn code_at(app: &Totp, secs: u64) -> String {
        app.generate(secs).to_string()
    }

    fn events(core: &Core, event: &str) -> usize {
        core.audit_events(0, None).unwrap().iter().filter(|e| e.event == event).count()
    }

    /// Forgets the 2fa key's failures, so that a test may go on right after one.
    fn clear(core: &Core, user: &User) {
        core.throttle.succeeded(&format!("2fa:{}", user.id)).unwrap();
    }

    #[test]
    fn enrol_confirm_and_a_code_is_good_once() {
        let (_dir, core) = open();
        let ada = user(&core, "ada");
        assert!(!core.has_second_factor(ada.id).unwrap());
        let e = core.totp_begin(&ada).unwrap();
        assert_eq!(e.secret.expose().len(), 32, "20 bytes in base32");
        assert!(e.uri.expose().starts_with("otpauth://totp/gatehouse:ada?secret="), "{}", e.uri.expose());
        assert!(e.uri.expose().contains(&format!("secret={}", e.secret.expose())));
        assert!(e.uri.expose().contains("issuer=gatehouse"));
        assert!(e.qr_svg.starts_with("<svg ") && e.qr_svg.ends_with("</svg>") && e.qr_svg.contains("M4,4h1v1h-1z"));
        assert_eq!(format!("{e:?}"), "TotpEnrolment(***)");
        assert!(!core.has_second_factor(ada.id).unwrap(), "not before it is confirmed");

        let app = app(&e);
        let code = app.generate_current().to_string();
        let codes = core.totp_confirm(&caller(), &ada, &code).unwrap();
        assert_eq!(codes.len(), 10);
        for c in &codes {
            let s = c.expose();
            assert_eq!(s.len(), 11, "{s}");
            assert_eq!(s.as_bytes()[5], b'-');
            assert!(s.bytes().filter(|&b| b != b'-').all(|b| RECOVERY_ALPHABET.contains(&b)), "{s}");
        }
        let mut distinct: Vec<&str> = codes.iter().map(Secret::expose).collect();
        distinct.sort_unstable();
        distinct.dedup();
        assert_eq!(distinct.len(), 10);
        assert!(core.has_second_factor(ada.id).unwrap());
        assert_eq!(core.second_factors(ada.id).unwrap(), SecondFactors { totp: true, recovery_left: 10, passkeys: 0 });
        assert_eq!(events(&core, "second_factor_added"), 1);

        // The code that confirmed is spent: its replay fails, and so does the step before.
        let now = now_secs();
        assert!(matches!(core.check_second_factor(&caller(), &ada, &code), Err(Error::BadCredentials)));
        assert_eq!(events(&core, "second_factor_failed"), 1);
        clear(&core, &ada);
        assert!(matches!(
            core.check_second_factor(&caller(), &ada, &code_at(&app, now - 30)),
            Err(Error::BadCredentials)
        ));
        clear(&core, &ada);
        // The next step's code (within the skew) is good, once; typed with spaces.
        let next = code_at(&app, now + 30);
        let spaced = format!("{} {}", &next[..3], &next[3..]);
        assert_eq!(core.check_second_factor(&caller(), &ada, &spaced).unwrap(), "otp");
        assert!(matches!(core.check_second_factor(&caller(), &ada, &next), Err(Error::BadCredentials)));
        clear(&core, &ada);
        // Now that the next step was used, the current one is older: refused.
        assert!(matches!(core.check_second_factor(&caller(), &ada, &code_at(&app, now)), Err(Error::BadCredentials)));
        clear(&core, &ada);
        // Two steps ahead is outside the skew.
        assert!(matches!(
            core.check_second_factor(&caller(), &ada, &code_at(&app, now + 90)),
            Err(Error::BadCredentials)
        ));

        // A confirmed TOTP is not replaced by a new enrolment.
        assert!(matches!(core.totp_begin(&ada), Err(Error::Exists(_))));
    }

    #[test]
    fn a_wrong_code_is_refused_and_counted() {
        let (_dir, core) = open();
        let bob = user(&core, "bob");
        let e = core.totp_begin(&bob).unwrap();
        let app = app(&e);
        let right = app.generate_current().to_string();
        let wrong = format!("{:06}", (right.parse::<u32>().unwrap() + 500_000) % 1_000_000);
        assert!(matches!(core.totp_confirm(&caller(), &bob, &wrong), Err(Error::BadCredentials)));
        assert_eq!(events(&core, "second_factor_failed"), 1);
        assert!(!core.has_second_factor(bob.id).unwrap());
        // Counted: right away, even the right code waits (the account's delay).
        assert!(matches!(core.totp_confirm(&caller(), &bob, &right), Err(Error::Throttled { .. })));
        // From another address too: the key is the account's.
        let other = Caller::new(Some("10.9.9.9".parse().unwrap()), "test");
        assert!(matches!(core.check_second_factor(&other, &bob, &right), Err(Error::Throttled { .. })));
        // The password's account key is another one: bob's sign-in is not held back.
        assert!(core.throttle.check(Subject::Account("bob"), &other, now_ms()).is_ok());
        // Garbage is refused without a count or an event.
        clear(&core, &bob);
        for junk in ["12345", "1234567", "12a456", "", "abcde-fghjk-m", "abcde-fghju", "１２３４５６"] {
            assert!(matches!(core.check_second_factor(&caller(), &bob, junk), Err(Error::BadCredentials)), "{junk}");
        }
        assert_eq!(events(&core, "second_factor_failed"), 1);
        assert_eq!(core.totp_confirm(&caller(), &bob, &right).unwrap().len(), 10);

        // Failures add up to a lockout of the 2fa key, audited with the user.
        clear(&core, &bob);
        let throttle = &core.config.throttle;
        for i in 0..throttle.account_failures {
            let t = now_ms();
            let r = core.throttle.failed(Subject::Account(&format!("2fa:{}", bob.id)), &other, t).unwrap();
            assert_eq!(r == Outcome::LockedOut, i + 1 == throttle.account_failures);
        }
        assert!(matches!(core.check_second_factor(&caller(), &bob, &wrong), Err(Error::Throttled { .. })));
    }

    #[test]
    fn a_recovery_code_is_good_once_and_removal_takes_everything() {
        let (_dir, core) = open();
        let cy = user(&core, "cy");
        let e = core.totp_begin(&cy).unwrap();
        let codes = core.totp_confirm(&caller(), &cy, &app(&e).generate_current().to_string()).unwrap();
        let first = codes[0].expose();
        assert_eq!(core.check_second_factor(&caller(), &cy, first).unwrap(), "otp");
        assert_eq!(events(&core, "recovery_code_used"), 1);
        assert!(matches!(core.check_second_factor(&caller(), &cy, first), Err(Error::BadCredentials)));
        clear(&core, &cy);
        // Typed loosely: upper case, no dash, spaces, o for 0 and l for 1.
        let loose: String = codes[1].expose().replace('-', " ").to_uppercase().replace('0', "O").replace('1', "l");
        assert_eq!(core.check_second_factor(&caller(), &cy, &loose).unwrap(), "otp");
        assert_eq!(core.second_factors(cy.id).unwrap().recovery_left, 8);
        // Another user's code is not this one's.
        let dee = user(&core, "dee");
        assert!(matches!(core.check_second_factor(&caller(), &dee, codes[2].expose()), Err(Error::BadCredentials)));

        // A new set replaces the old one.
        let fresh = core.new_recovery_codes(&caller(), &cy).unwrap();
        assert_eq!(core.second_factors(cy.id).unwrap().recovery_left, 10);
        assert!(matches!(core.check_second_factor(&caller(), &cy, codes[3].expose()), Err(Error::BadCredentials)));
        clear(&core, &cy);
        assert!(matches!(core.new_recovery_codes(&caller(), &dee), Err(Error::Invalid { .. })));

        assert!(core.totp_remove(&caller(), &cy).unwrap());
        assert!(!core.totp_remove(&caller(), &cy).unwrap(), "nothing left the second time");
        assert_eq!(events(&core, "second_factor_removed"), 1);
        assert_eq!(core.second_factors(cy.id).unwrap(), SecondFactors { totp: false, recovery_left: 0, passkeys: 0 });
        assert!(!core.has_second_factor(cy.id).unwrap());
        assert!(matches!(core.check_second_factor(&caller(), &cy, fresh[0].expose()), Err(Error::BadCredentials)));
        clear(&core, &cy);
        // Enrolling again works once it is gone; the operator's reset removes it too.
        let again = core.totp_begin(&cy).unwrap();
        core.totp_confirm(&caller(), &cy, &app(&again).generate_current().to_string()).unwrap();
        core.store.write(|tx| rows::insert_passkey(tx, cy.id, b"cred", &[4u8; 65], 0, "Phone", now_ms())).unwrap();
        assert_eq!(core.second_factors(cy.id).unwrap().passkeys, 1);
        core.reset_second_factors(cy.id).unwrap();
        assert_eq!(core.second_factors(cy.id).unwrap(), SecondFactors { totp: false, recovery_left: 0, passkeys: 0 });
        assert_eq!(events(&core, "second_factor_removed"), 2);
    }

    #[test]
    fn the_stored_secret_is_sealed_and_bound_to_its_user() {
        let (dir, core) = open();
        let eve = user(&core, "eve");
        let e = core.totp_begin(&eve).unwrap();
        let plain = totp_rs::Secret::try_from_base32(e.secret.expose()).unwrap().as_bytes().to_vec();
        assert_eq!(plain.len(), 20);
        let row = core.store.with(|c| rows::totp(c, eve.id)).unwrap().unwrap();
        assert!(!row.secret_enc.windows(plain.len()).any(|w| w == plain.as_slice()), "not in the clear");
        assert!(!row.secret_enc.windows(8).any(|w| e.secret.expose().as_bytes().starts_with(w)), "nor in base32");
        assert_eq!(core.key.open(&context(eve.id), &row.secret_enc).unwrap().as_slice(), plain.as_slice());
        assert!(core.key.open(&context(eve.id + 1), &row.secret_enc).is_none(), "bound to its user");
        // A new enrolment replaces an unconfirmed one: the old secret no longer confirms.
        let newer = core.totp_begin(&eve).unwrap();
        assert_ne!(newer.secret, e.secret);
        assert!(matches!(
            core.totp_confirm(&caller(), &eve, &app(&e).generate_current().to_string()),
            Err(Error::BadCredentials)
        ));
        clear(&core, &eve);

        // A secret sealed under another key (or for another user) is an error, not a panic.
        let other = crate::base::crypto::MasterKey::create(&dir.path().join("other.key")).unwrap();
        let foreign = other.seal(&context(eve.id), &plain);
        core.store.write(|tx| rows::delete_totp(tx, eve.id)).unwrap();
        assert!(core.store.write(|tx| rows::begin_totp(tx, eve.id, &foreign, now_ms())).unwrap());
        assert!(matches!(
            core.totp_confirm(&caller(), &eve, &app(&e).generate_current().to_string()),
            Err(Error::Internal(_))
        ));
        assert!(core.store.write(|tx| rows::confirm_totp(tx, eve.id, &foreign, 1, now_ms())).unwrap());
        assert!(matches!(
            core.check_second_factor(&caller(), &eve, &app(&e).generate_current().to_string()),
            Err(Error::Internal(_))
        ));
        let fred = user(&core, "fred");
        let sealed_for_eve = core.key.seal(&context(eve.id), &plain);
        assert!(core.store.write(|tx| rows::begin_totp(tx, fred.id, &sealed_for_eve, now_ms())).unwrap());
        assert!(matches!(
            core.totp_confirm(&caller(), &fred, &app(&e).generate_current().to_string()),
            Err(Error::Internal(_))
        ));
    }

    #[test]
    fn the_issuer_is_the_public_hosts_and_logins_with_colons_still_enrol() {
        let dir = tempfile::tempdir().unwrap();
        let config = Config {
            data_dir: dir.path().join("data"),
            public_url: "https://id.example.org:8443/".into(),
            ..Config::default()
        };
        let core = Core::open(config).unwrap();
        let u = user(&core, "ops:night");
        let e = core.totp_begin(&u).unwrap();
        assert!(e.uri.expose().starts_with("otpauth://totp/id.example.org:ops_night?"), "{}", e.uri.expose());
        assert!(e.uri.expose().contains("issuer=id.example.org"));
    }
}
