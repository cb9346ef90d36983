//! IAMPASS sign-ins approved on the user's device.
//!
//! An application asks (`start_signin`): the request waits `iampass.approval_window` for one of
//! the user's registered devices to approve or refuse it, and once approved is an active session
//! for the duration asked. The application follows it with the session's token and secret
//! (`signin_status`, `end_signin`); the secret is not stored but derived from the token under the
//! master key, so the database alone gives no one a session's secret.
//!
//! The device side: a device registered through the page made its own P-256 key; each of its
//! calls is signed with it (`device_call`) and refused once the device is lost. A device that
//! registered without a key (a script, an app that only wanted the API key) may call with the API
//! key it was handed (`device_by_api_key`). `acceptance` is a tap on approve from either;
//! `device` needs the approval signed by the device's own key; `facial` also needs a WebAuthn
//! assertion, with user verification, from the platform authenticator the device registered
//! (`add_webauthn`), over the request's own challenge.

use base64::Engine;
use ring::signature::{UnparsedPublicKey, ECDSA_P256_SHA256_FIXED};

use super::audit::audit_in;
use super::crypto::{ct_eq, hex, random_bytes, sha256, Secret};
use super::guard::Caller;
use super::webauthn::{self, Credential};
use super::{now_ms, Core, Error};
use crate::store::apikeys;
use crate::store::auth_sessions::{self, AuthSessionRow, NewAuthSession};
use crate::store::devices::{self, DeviceRow};

/// A registered device as its own calls and the device page see it.
#[derive(Debug, Clone)]
pub struct Device {
    pub id: i64,
    pub user_id: i64,
    pub app_id: String,
    pub name: String,
    /// Its own P-256 signing key (SEC1 uncompressed point), when it made one.
    pub public_key: Option<Vec<u8>>,
    pub webauthn_id: Option<Vec<u8>>,
    pub webauthn_key: Option<Vec<u8>>,
    pub webauthn_count: Option<i64>,
    /// When it was reported lost (Unix ms).
    pub lost_at: Option<i64>,
}

impl From<DeviceRow> for Device {
    fn from(r: DeviceRow) -> Device {
        Device {
            id: r.id,
            user_id: r.user_id,
            app_id: r.app_id,
            name: r.name,
            public_key: r.public_key,
            webauthn_id: r.webauthn_id,
            webauthn_key: r.webauthn_key,
            webauthn_count: r.webauthn_count,
            lost_at: r.lost_at,
        }
    }
}
use crate::store::users;

/// How a device may prove the user approves (IAMPASS's `methods`).
pub const METHODS: [&str; 3] = ["acceptance", "device", "facial"];

/// The answer to authenticate_user.
#[derive(Debug)]
pub enum Start {
    Started {
        token: String,
        secret: Secret,
    },
    /// Not started, and why (IAMPASS answers 200 with `authenticated: false` and this reason).
    NotStarted(String),
}

/// A request waiting for a device's answer, as the device is shown it.
#[derive(Debug, serde::Serialize)]
pub struct Pending {
    pub id: i64,
    pub app_id: String,
    pub user_id: String,
    pub methods: Vec<String>,
    /// The address the application's request came from.
    pub client: Option<String>,
    pub created_at: String,
    /// Seconds left to answer.
    pub expires_in: i64,
    /// base64url: what a `device` or `facial` approval signs.
    pub challenge: String,
}

/// A device's signed call, as the web layer read it: `message` is the canonical text it signed.
pub struct DeviceProof {
    pub device_id: i64,
    pub timestamp: i64,
    pub nonce: String,
    pub signature: Vec<u8>,
    pub message: Vec<u8>,
}

/// A WebAuthn assertion as the page sends it (raw bytes).
pub struct Assertion {
    pub client_data_json: Vec<u8>,
    pub authenticator_data: Vec<u8>,
    pub signature: Vec<u8>,
}

/// What the page needs for navigator.credentials.create().
#[derive(Debug, serde::Serialize)]
pub struct WebauthnOptions {
    pub challenge: String,
    pub rp_id: String,
    pub rp_name: String,
    pub user_handle: String,
    pub user_name: String,
    pub exclude: Vec<String>,
}

/// An uncompressed SEC1 P-256 point: 0x04 || x || y. (Whether it is on the curve is settled by
/// the first signature it fails to verify.)
/// The user is not blocked and is a member of the application: at start, approval and status.
fn may_sign_in(c: &crate::store::Db, user_id: i64, app_id: &str) -> Result<bool, Error> {
    Ok(super::users::find_by_id(c, user_id)?.is_some_and(|u| !u.blocked) && users::is_member(c, user_id, app_id)?)
}

pub fn valid_public_key(k: &[u8]) -> bool {
    k.len() == 65 && k[0] == 4
}

pub fn b64url(bytes: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

pub fn unb64url(s: &str) -> Option<Vec<u8>> {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(s.trim_end_matches('=')).ok()
}

/// The methods of a request, checked: a comma list of known names, each once; none means
/// `acceptance`.
fn parse_methods(methods: Option<&str>) -> Result<Vec<&'static str>, String> {
    let mut out = Vec::new();
    for name in methods.unwrap_or("").split(',').map(str::trim).filter(|m| !m.is_empty()) {
        let Some(m) = METHODS.iter().find(|m| **m == name) else {
            let shown: String = name.chars().filter(|c| !c.is_control()).take(32).collect();
            return Err(format!("unknown authentication method {shown:?}: use acceptance, device or facial"));
        };
        if !out.contains(m) {
            out.push(*m);
        }
    }
    if out.is_empty() {
        out.push("acceptance");
    }
    Ok(out)
}

/// The WebAuthn relying party of `public_url`: (RP id = its host, origin = scheme://host[:port]).
pub(super) fn relying_party(public_url: &str) -> (String, String) {
    let (scheme, rest) = public_url.split_once("://").unwrap_or(("http", public_url));
    let authority = rest.split('/').next().unwrap_or(rest);
    let host = if let Some(v6) = authority.strip_prefix('[') {
        v6.split(']').next().unwrap_or(v6).to_string()
    } else {
        authority.rsplit_once(':').map_or(authority, |(h, _)| h).to_string()
    };
    let default_port =
        (scheme == "http" && authority.ends_with(":80")) || (scheme == "https" && authority.ends_with(":443"));
    let origin = if default_port { format!("{scheme}://{host}") } else { format!("{scheme}://{authority}") };
    (host, origin)
}

impl Core {
    /// The secret of the session `token`: derived, never stored.
    pub fn session_secret(&self, token: &str) -> Secret {
        Secret::new(hex(&self.key.derive("iampass session secret", token.as_bytes())))
    }

    /// authenticate_user: starts a sign-in of `login` for `app_id`, to be approved on one of the
    /// user's devices. `methods` and `duration` are the query's, unchecked.
    pub fn start_signin(
        &self,
        caller: &Caller,
        app_id: &str,
        login: &str,
        methods: Option<&str>,
        duration: Option<&str>,
    ) -> Result<Start, Error> {
        let methods = match parse_methods(methods) {
            Ok(m) => m,
            Err(reason) => return Ok(Start::NotStarted(reason)),
        };
        let max = self.config.iampass.max_session.millis() / 1000;
        let duration_s = match duration.map(|d| d.trim().parse::<i64>()) {
            None => 3600.min(max),
            Some(Ok(d)) if (60..=max).contains(&d) => d,
            Some(_) => {
                return Ok(Start::NotStarted(format!("duration_seconds must be a whole number from 60 to {max}")))
            }
        };
        let login = super::users::clean_login(login)?;
        let now = now_ms();
        let token = hex(&random_bytes::<16>());
        let challenge = random_bytes::<32>();
        let cfg = &self.config.iampass;
        let client = caller.addr.map(|a| a.to_string());
        let methods_text = methods.join(",");
        let started = self.store.write(|tx| -> Result<_, Error> {
            let user = match super::users::find_by_login(tx, &login)? {
                Some((u, _)) if !u.blocked && users::is_member(tx, u.id, app_id)? => u,
                // A blocked user is told apart from no one: the application may not know of the block.
                _ => return Ok(Err("no such user in this application".to_string())),
            };
            let abilities = devices::abilities(tx, user.id, app_id)?;
            if abilities.is_empty() {
                return Ok(Err("the user has no registered device".to_string()));
            }
            let can = |m: &str| {
                abilities.iter().any(|a| match m {
                    "acceptance" => a.keyed || a.api_key,
                    "device" => a.keyed,
                    _ => a.keyed && a.face,
                })
            };
            if let Some(m) = methods.iter().find(|m| !can(m)) {
                return Ok(Err(if *m == "facial" {
                    "no registered device of the user has a face or fingerprint authenticator".to_string()
                } else {
                    format!("no registered device of the user can do {m}")
                }));
            }
            let minute_ago = now - 60_000;
            let retry = Error::Throttled { retry_after_ms: 60_000 };
            if auth_sessions::started_for_user(tx, user.id, app_id, minute_ago)?
                >= i64::from(cfg.signins_per_user_minute)
                || auth_sessions::started_for_app(tx, app_id, minute_ago)? >= i64::from(cfg.signins_per_app_minute)
            {
                return Err(retry);
            }
            auth_sessions::insert(
                tx,
                &NewAuthSession {
                    token: &token,
                    app_id,
                    user_id: user.id,
                    methods: &methods_text,
                    challenge: &challenge,
                    client: client.as_deref(),
                    created_at: now,
                    decide_by: now + cfg.approval_window.millis(),
                    // Until approved, the deadline plus the duration; approved, the duration from then.
                    expires_at: now + cfg.approval_window.millis() + duration_s * 1000,
                },
            )?;
            audit_in(tx, caller, "signin_started", Some(app_id), Some(&user), None)?;
            Ok(Ok(user.id))
        })?;
        match started {
            Ok(user_id) => {
                log::info!("application {app_id}: sign-in of user {user_id} started ({methods_text})");
                self.signins.notify_waiters();
                Ok(Start::Started { secret: self.session_secret(&token), token })
            }
            Err(reason) => Ok(Start::NotStarted(reason)),
        }
    }

    fn signin(&self, token: &str) -> Result<AuthSessionRow, Error> {
        self.store.with(|c| auth_sessions::by_token(c, token))?.ok_or(Error::BadToken)
    }

    /// The session's status now (`BadToken` when there is no such session). A request found past
    /// its deadline is marked `timeout` (and audited) on the way.
    pub fn signin_status(&self, token: &str) -> Result<String, Error> {
        let row = self.signin(token)?;
        let now = now_ms();
        if row.status == "pending" && row.effective(now) == "timeout" {
            self.time_out_signins()?;
        }
        let status = row.effective(now);
        if matches!(status, "pending" | "active") && !self.may_sign_in(row.user_id, &row.app_id)? {
            // Blocking and ending a membership end the sign-ins too; this holds if that was missed
            // (another node's write in flight, a database edited by hand).
            return Ok(if status == "active" { "closed" } else { "failed" }.to_string());
        }
        Ok(status.to_string())
    }

    /// True when the user is not blocked and still a member of the application.
    fn may_sign_in(&self, user_id: i64, app_id: &str) -> Result<bool, Error> {
        self.store.with(|c| may_sign_in(c, user_id, app_id))
    }

    /// Ends the session for good (logout).
    pub fn end_signin(&self, caller: &Caller, token: &str) -> Result<(), Error> {
        let row = self.signin(token)?;
        let now = now_ms();
        let closed = self.store.write(|tx| -> Result<_, Error> {
            let closed = auth_sessions::close(tx, row.id, now)?;
            if closed {
                let user = super::users::find_by_id(tx, row.user_id)?;
                audit_in(tx, caller, "signin_closed", Some(&row.app_id), user.as_ref(), None)?;
            }
            Ok(closed)
        })?;
        if closed {
            self.signins.notify_waiters();
        }
        Ok(())
    }

    /// Marks every request nobody answered in time `timeout`, each an audit event. The reaper
    /// calls it; so does a status read that finds one.
    pub fn time_out_signins(&self) -> Result<usize, Error> {
        let now = now_ms();
        let caller = Caller::local();
        let mut total = 0;
        loop {
            let n = self.store.write(|tx| -> Result<_, Error> {
                let rows = auth_sessions::time_out(tx, now, 200)?;
                for r in &rows {
                    let user = super::users::find_by_id(tx, r.user_id)?;
                    audit_in(tx, &caller, "signin_timeout", Some(&r.app_id), user.as_ref(), None)?;
                }
                Ok(rows.len())
            })?;
            total += n;
            if n < 200 {
                return Ok(total);
            }
        }
    }

    /// Checks a device's signed call: its key's signature over `proof.message`, the timestamp's
    /// window, and the nonce, spent here. Every failure is the same `BadCredentials`, but a lost
    /// device (whose signature holds) learns it is `Lost`.
    pub fn device_call(&self, proof: &DeviceProof) -> Result<Device, Error> {
        let nonce_ok = (16..=64).contains(&proof.nonce.len())
            && proof.nonce.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
        let window = self.config.iampass.timestamp_window.millis();
        let ts = proof.timestamp.saturating_mul(1000);
        if !nonce_ok || (now_ms() - ts).abs() > window {
            return Err(Error::BadCredentials);
        }
        let device =
            self.store.with(|c| devices::by_id(c, proof.device_id))?.map(Device::from).ok_or(Error::BadCredentials)?;
        let key = device.public_key.as_deref().ok_or(Error::BadCredentials)?;
        UnparsedPublicKey::new(&ECDSA_P256_SHA256_FIXED, key)
            .verify(&proof.message, &proof.signature)
            .map_err(|_| Error::BadCredentials)?;
        if device.lost_at.is_some() {
            return Err(Error::Lost);
        }
        let keep_until = ts.saturating_add(window).saturating_add(1);
        // A namespace of its own: `#` is no character of an application id.
        if !self.use_nonce(&format!("#device/{}", device.id), &proof.nonce, keep_until)? {
            return Err(Error::BadCredentials);
        }
        Ok(device)
    }

    /// A device's call authenticated by the API key it was handed at registration (HTTP Basic),
    /// for a device that made no key of its own: it can approve `acceptance` sign-ins only. The
    /// key's secret is checked like an API-key login's, under the same throttle.
    pub fn device_by_api_key(&self, caller: &Caller, apikey: &str, secretkey: &Secret) -> Result<Device, Error> {
        let now = now_ms();
        let (key, device) =
            self.store.with(|c| Ok::<_, Error>((apikeys::by_id(c, apikey)?, devices::by_api_key(c, apikey)?)))?;
        let stored = key.as_ref().map(|k| k.secret_digest.as_slice()).unwrap_or(&[0u8; 32]);
        let matches = ct_eq(&sha256(secretkey.expose().as_bytes()), stored);
        match (key, device) {
            (Some(_), Some(d)) if matches && d.lost_at.is_some() => Err(Error::Lost),
            (Some(k), Some(d)) if matches && k.revoked_at.is_none() && k.expires_at.is_none_or(|t| t > now) => {
                Ok(Device::from(d))
            }
            _ => {
                let account = format!("apikey:{apikey}");
                Err(self.shared_credential_failed(
                    caller,
                    &account,
                    "device_auth_failed",
                    None,
                    Some(&account),
                    Error::BadCredentials,
                ))
            }
        }
    }

    /// The device as it is now, and the requests waiting for its user, for its application.
    pub fn device_requests(&self, device_id: i64) -> Result<(Device, Vec<Pending>), Error> {
        let now = now_ms();
        self.store.with(|c| -> Result<_, Error> {
            let device =
                devices::by_id(c, device_id)?.map(Device::from).filter(|d| d.lost_at.is_none()).ok_or(Error::Lost)?;
            let login = super::users::find_by_id(c, device.user_id)?.map(|u| u.login).unwrap_or_default();
            let pending = auth_sessions::pending_for(c, device.user_id, &device.app_id, now)?
                .into_iter()
                .map(|r| Pending {
                    id: r.id,
                    app_id: r.app_id,
                    user_id: login.clone(),
                    methods: r.methods.split(',').map(str::to_string).collect(),
                    client: r.client,
                    created_at: super::iso8601(r.created_at),
                    expires_in: ((r.decide_by - now) / 1000).max(0),
                    challenge: b64url(&r.challenge),
                })
                .collect();
            Ok((device, pending))
        })
    }

    /// The device answers request `id`: approve (`active`) or refuse (`cancelled`). `signed`: the
    /// call was signed by the device's own key (else it came with the API key, which approves
    /// `acceptance` only). `challenge` must be the request's own; a `facial` approval needs `assertion`, verified with the
    /// device's WebAuthn credential over that challenge: one that fails ends the request
    /// (`failed`), so that a device in the wrong hands gets one try. Answers the new status;
    /// `Gone` when the request is not this device's to answer or waits no more.
    #[allow(clippy::too_many_arguments)]
    pub fn decide_signin(
        &self,
        caller: &Caller,
        device: &Device,
        signed: bool,
        id: i64,
        approve: bool,
        challenge: &[u8],
        assertion: Option<Assertion>,
    ) -> Result<&'static str, Error> {
        let now = now_ms();
        let row = self
            .store
            .with(|c| auth_sessions::by_id(c, id))?
            .filter(|r| r.user_id == device.user_id && r.app_id == device.app_id)
            .ok_or(Error::Gone)?;
        if row.effective(now) != "pending" {
            return Err(Error::Gone);
        }
        if !ct_eq(challenge, &row.challenge) {
            return Err(Error::invalid("challenge", "is not this request's"));
        }
        if approve && !signed && row.methods.split(',').any(|m| m == "device" || m == "facial") {
            // Nothing was tried: the request waits on for a device that can sign.
            return Err(Error::invalid("method", "this sign-in needs an approval signed by the device's own key"));
        }
        let mut status = if approve { "active" } else { "cancelled" };
        let mut count = None;
        if approve && row.methods.split(',').any(|m| m == "facial") {
            if assertion.is_none() {
                // Nothing was tried: the request waits on.
                return Err(Error::invalid("webauthn", "this sign-in needs the face or fingerprint assertion"));
            }
            match self.check_assertion(device, &row.challenge, assertion) {
                Ok(n) => count = Some(n),
                Err(e) => {
                    log::info!("application {}: facial approval of sign-in {id} refused: {e}", row.app_id);
                    status = "failed";
                }
            }
        }
        let decided = self.store.write(|tx| -> Result<_, Error> {
            // Read in the write, so that a block or a membership ended just now is seen.
            if approve && !may_sign_in(tx, row.user_id, &row.app_id)? {
                return Ok(false);
            }
            if !auth_sessions::decide(tx, id, status, device.id, now)? {
                return Ok(false);
            }
            if let Some((from, to)) = count {
                if !devices::advance_webauthn_count(tx, device.id, from, to)? {
                    // Another assertion moved the counter meanwhile: a cloned authenticator.
                    return Err(Error::invalid("webauthn", "the authenticator's counter moved meanwhile"));
                }
            }
            let user = super::users::find_by_id(tx, row.user_id)?;
            let event = match status {
                "active" => "signin_approved",
                "cancelled" => "signin_refused",
                _ => "signin_failed",
            };
            audit_in(tx, caller, event, Some(&row.app_id), user.as_ref(), None)?;
            Ok(true)
        })?;
        if !decided {
            return Err(Error::Gone);
        }
        log::info!("application {}: sign-in {id} {status} on device {}", row.app_id, device.id);
        self.signins.notify_waiters();
        if status == "failed" {
            return Err(Error::invalid("webauthn", "the face or fingerprint check failed; the sign-in failed"));
        }
        Ok(status)
    }

    /// The counter before and after a good assertion.
    fn check_assertion(
        &self,
        device: &Device,
        challenge: &[u8],
        assertion: Option<Assertion>,
    ) -> Result<(i64, i64), String> {
        let a = assertion.ok_or("no WebAuthn assertion")?;
        let (Some(id), Some(key)) = (&device.webauthn_id, &device.webauthn_key) else {
            return Err("the device has no WebAuthn credential".into());
        };
        let from = device.webauthn_count.unwrap_or(0);
        let cred = Credential { id: id.clone(), public_key: key.clone(), sign_count: u32::try_from(from).unwrap_or(0) };
        let (rp_id, origin) = relying_party(&self.config.public_url());
        let n = webauthn::verify_assertion(
            &rp_id,
            &origin,
            challenge,
            &cred,
            &a.client_data_json,
            &a.authenticator_data,
            &a.signature,
        )
        .map_err(|e| e.to_string())?;
        Ok((from, i64::from(n)))
    }

    /// A registration challenge for `device`: its time and a MAC over it, so that none is stored.
    fn webauthn_challenge(&self, device_id: i64, at: i64) -> Vec<u8> {
        let mut input = device_id.to_be_bytes().to_vec();
        input.extend_from_slice(&at.to_be_bytes());
        let mac = self.key.derive("webauthn registration challenge", &input);
        let mut out = at.to_be_bytes().to_vec();
        out.extend_from_slice(&mac[..24]);
        out
    }

    /// What navigator.credentials.create() needs to add a face or fingerprint to `device`.
    pub fn webauthn_options(&self, device: &Device) -> Result<WebauthnOptions, Error> {
        let user = self.user_by_id(device.user_id)?;
        let (rp_id, _) = relying_party(&self.config.public_url());
        let handle = self.key.derive("webauthn user handle", &device.id.to_be_bytes());
        Ok(WebauthnOptions {
            challenge: b64url(&self.webauthn_challenge(device.id, now_ms())),
            rp_id,
            rp_name: "gatehouse".into(),
            user_handle: b64url(&handle[..16]),
            user_name: user.login,
            exclude: device.webauthn_id.iter().map(|id| b64url(id)).collect(),
        })
    }

    /// Records the platform credential navigator.credentials.create() made on `device`, after
    /// checking it answers a challenge of ours for this device (at most five minutes old) and was
    /// made with user verification.
    pub fn add_webauthn(
        &self,
        caller: &Caller,
        device: &Device,
        challenge: &[u8],
        client_data_json: &[u8],
        attestation_object: &[u8],
    ) -> Result<(), Error> {
        let at = challenge.get(..8).and_then(|b| <[u8; 8]>::try_from(b).ok()).map(i64::from_be_bytes);
        let fresh = at.is_some_and(|at| {
            let age = now_ms() - at;
            (0..=300_000).contains(&age) && ct_eq(challenge, &self.webauthn_challenge(device.id, at))
        });
        if !fresh {
            return Err(Error::invalid("challenge", "is not a live challenge of this server for this device"));
        }
        let (rp_id, origin) = relying_party(&self.config.public_url());
        let cred = webauthn::verify_registration(&rp_id, &origin, challenge, client_data_json, attestation_object)
            .map_err(|e| Error::invalid("webauthn", e.to_string()))?;
        let stored = self.store.write(|tx| -> Result<_, Error> {
            let ok = devices::set_webauthn(tx, device.id, &cred.id, &cred.public_key, i64::from(cred.sign_count))?;
            if ok {
                let user = super::users::find_by_id(tx, device.user_id)?;
                audit_in(tx, caller, "device_webauthn_added", Some(&device.app_id), user.as_ref(), None)?;
            }
            Ok(ok)
        })?;
        if !stored {
            return Err(Error::Lost);
        }
        log::info!("application {}: device {} added a WebAuthn credential", device.app_id, device.id);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn methods_are_a_comma_list_of_known_names() {
        assert_eq!(parse_methods(None).unwrap(), vec!["acceptance"]);
        assert_eq!(parse_methods(Some("device,facial,device")).unwrap(), vec!["device", "facial"]);
        assert!(parse_methods(Some("acceptance,retina")).unwrap_err().contains("retina"));
    }

    #[test]
    fn the_relying_party_is_the_public_urls_host() {
        assert_eq!(relying_party("http://localhost:8080"), ("localhost".into(), "http://localhost:8080".into()));
        assert_eq!(relying_party("https://id.example.com"), ("id.example.com".into(), "https://id.example.com".into()));
        assert_eq!(
            relying_party("https://id.example.com:443/x"),
            ("id.example.com".into(), "https://id.example.com".into())
        );
        assert_eq!(relying_party("http://[::1]:9000"), ("::1".into(), "http://[::1]:9000".into()));
    }
}
