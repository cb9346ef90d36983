//! Users an application manages itself, and their registered devices.
//!
//! An application owns the users it added: it can never add, link, query or delete a user it does
//! not own, and a login that exists outside it is neither "existing" to it nor adopted. A device
//! registers through a single-use link and is handed an API key for that application; a lost
//! device is disabled with its key and every token issued through it.

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex};

use super::apikeys::NewApiKey;
use super::audit::audit_in;
use super::crypto::{sha256, Secret};
use super::guard::Caller;
use super::links::{self, Purpose};
use super::users::{clean_login, clean_name};
use super::{now_ms, Core, Error, User};
use crate::store::apikeys;
use crate::store::{apps, devices, tokens, users};

/// What `add_app_users` did.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct AddedUsers {
    pub created: Vec<String>,
    pub existing: Vec<String>,
}

/// A device just registered, with its API key (the secret shown this once).
#[derive(Debug)]
pub struct Registered {
    pub app_id: String,
    pub login: String,
    pub device_id: i64,
    pub key: NewApiKey,
}

/// What a registration link's page shows.
#[derive(Debug)]
pub struct LinkInfo {
    pub app_id: String,
    pub display_name: String,
}

pub const MAX_USERS_PER_CALL: usize = 1000;

/// A list of logins as the management API takes it: 1 to 1000 valid logins (`clean_login`: in
/// NFC), each once (compared like logins; the first spelling is kept).
pub fn clean_logins(logins: &[String]) -> Result<Vec<String>, Error> {
    if logins.is_empty() || logins.len() > MAX_USERS_PER_CALL {
        return Err(Error::invalid("users", format!("must list 1 to {MAX_USERS_PER_CALL} users")));
    }
    let mut seen = BTreeSet::new();
    let mut out = Vec::new();
    for login in logins {
        let login = clean_login(login).map_err(|_| {
            Error::invalid("users", "each user must be a non-empty string of at most 255 bytes, with no control characters, bidirectional controls or surrounding spaces")
        })?;
        if seen.insert(users::login_key(&login)) {
            out.push(login);
        }
    }
    Ok(out)
}

/// The user `login` (as typed: cleaned like every login) if `app_id` owns them; `UnknownUser` for
/// anyone else.
fn app_user_in(c: &crate::store::Db, app_id: &str, login: &str) -> Result<User, Error> {
    let login = clean_login(login)?;
    match super::users::find_by_login(c, &login)? {
        Some((u, _)) if users::is_member(c, u.id, app_id)? => Ok(u),
        _ => Err(Error::UnknownUser(login.to_string())),
    }
}

/// A display name: a name people read (`clean_name`).
pub fn clean_display_name(name: &str) -> Result<String, Error> {
    clean_name("display_name", name)
}

/// The nonces of signed requests spent and still kept, in memory, each until the time it is kept
/// for. Keyed by 16 bytes of SHA-256 over the application and the nonce, so that an entry costs
/// about 32 bytes whatever a client sends: the set holds what the timestamp window lets through,
/// about the window times the rate of signed requests. The store keeps the same nonces as an
/// append-only log (`store::devices::log_nonce`), read back by `Nonces::load` at start.
#[derive(Default)]
pub(crate) struct Nonces(Mutex<HashMap<[u8; 16], i64>>);

impl Nonces {
    fn key(app_id: &str, nonce: &str) -> [u8; 16] {
        let mut input = Vec::with_capacity(8 + app_id.len() + nonce.len());
        input.extend_from_slice(&(app_id.len() as u64).to_be_bytes());
        input.extend_from_slice(app_id.as_bytes());
        input.extend_from_slice(nonce.as_bytes());
        let digest = sha256(&input);
        let mut key = [0u8; 16];
        key.copy_from_slice(&digest[..16]);
        key
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<[u8; 16], i64>> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The store's log of nonces still kept at `now`.
    pub(crate) fn load(store: &crate::store::Store, now: i64) -> Result<Nonces, Error> {
        let rows = store.with(|c| devices::live_nonces(c, now))?;
        let nonces = Nonces::default();
        {
            let mut set = nonces.lock();
            for (app_id, nonce, until) in rows {
                let kept = set.entry(Nonces::key(&app_id, &nonce)).or_insert(until);
                *kept = (*kept).max(until);
            }
        }
        Ok(nonces)
    }

    /// Marks `key` spent until `until`; false when it is spent and still kept at `now`.
    fn spend(&self, key: [u8; 16], until: i64, now: i64) -> bool {
        let mut set = self.lock();
        if set.get(&key).is_some_and(|&kept| kept > now) {
            return false;
        }
        set.insert(key, until);
        true
    }

    fn forget(&self, key: &[u8; 16]) {
        self.lock().remove(key);
    }

    /// Drops the nonces no longer kept at `now`.
    pub(crate) fn reap(&self, now: i64) {
        self.lock().retain(|_, until| *until > now);
    }

    pub(crate) fn len(&self) -> usize {
        self.lock().len()
    }
}

impl Core {
    pub fn app_exists(&self, app_id: &str) -> Result<bool, Error> {
        Ok(self.store.with(|c| apps::exists(c, app_id))?)
    }

    /// Spends a signed request's nonce, to be kept until `keep_until` (ms); false when the
    /// application spent it already and it is still kept. The spend is durable before this returns
    /// true: it is appended to the log in the store, which refills the set when the server starts.
    /// With PostgreSQL the spend is a row of the shared table, so that a nonce spent on one node
    /// is refused on every other.
    pub fn use_nonce(&self, app_id: &str, nonce: &str, keep_until: i64) -> Result<bool, Error> {
        if self.store.is_shared() {
            let now = now_ms();
            return Ok(self.store.write(|tx| devices::spend_nonce(tx, app_id, nonce, keep_until, now))?);
        }
        let key = Nonces::key(app_id, nonce);
        if !self.nonces.spend(key, keep_until, now_ms()) {
            return Ok(false);
        }
        if let Err(e) = self.store.write(|tx| devices::log_nonce(tx, app_id, nonce, keep_until)) {
            // Not recorded, so not spent: the caller answers an error and may try the nonce again.
            self.nonces.forget(&key);
            return Err(e.into());
        }
        Ok(true)
    }

    /// [`Core::use_nonce`] for async code: spends the nonce in memory at once (None when the
    /// application spent it already) and gives the future of its durable record, which the
    /// caller must await before answering. Should the record fail, the nonce is not spent.
    /// SQLite only (its set in memory is the whole truth); with PostgreSQL use `use_nonce`.
    pub fn spend_nonce(
        self: &Arc<Self>,
        app_id: &str,
        nonce: &str,
        keep_until: i64,
    ) -> Option<impl std::future::Future<Output = Result<(), Error>> + use<>> {
        let key = Nonces::key(app_id, nonce);
        if !self.nonces.spend(key, keep_until, now_ms()) {
            return None;
        }
        let (app_id, nonce) = (app_id.to_string(), nonce.to_string());
        let logged = self
            .store
            .write_async(move |tx| -> Result<_, Error> { Ok(devices::log_nonce(tx, &app_id, &nonce, keep_until)?) });
        let core = Arc::clone(self);
        Some(async move {
            let out = logged.await;
            if out.is_err() {
                core.nonces.forget(&key);
            }
            out
        })
    }

    /// Adds users owned by `app_id` (no password: they sign in with devices). All or nothing: a
    /// login that exists outside the application stops the whole call.
    pub fn add_app_users(&self, caller: &Caller, app_id: &str, logins: &[String]) -> Result<AddedUsers, Error> {
        let logins = clean_logins(logins)?;
        if logins.iter().any(|l| super::text::is_compatibility_form(l)) {
            return Err(Error::invalid(
                "users",
                "a user must not use full-width, ligature or other compatibility forms of letters",
            ));
        }
        let now = now_ms();
        let added = self.store.write(|tx| -> Result<_, Error> {
            let mut added = AddedUsers::default();
            for login in &logins {
                match super::users::find_by_login(tx, login)? {
                    Some((u, _)) if users::is_member(tx, u.id, app_id)? => added.existing.push(login.clone()),
                    Some(_) => {
                        return Err(Error::invalid(
                            "users",
                            format!("user {login} exists outside application {app_id}; nothing was changed"),
                        ))
                    }
                    None => {
                        let id = users::insert(
                            tx,
                            &users::NewUser {
                                login,
                                email: None,
                                first_name: "",
                                last_name: "",
                                civility: "",
                                user_type: "USER",
                                password_hash: None,
                                password_expires_at: None,
                            },
                            now,
                        )?;
                        users::add_membership(tx, id, app_id, now)?;
                        audit_in(tx, caller, "user_added", Some(app_id), None, Some(login))?;
                        added.created.push(login.clone());
                    }
                }
            }
            Ok(added)
        })?;
        log::info!("application {app_id}: {} users created, {} existing", added.created.len(), added.existing.len());
        Ok(added)
    }

    /// Removes users from `app_id`: the membership, their devices, API keys and tokens for it, and
    /// the user altogether when no application is left. Users it does not own are left alone.
    pub fn remove_app_users(&self, caller: &Caller, app_id: &str, logins: &[String]) -> Result<usize, Error> {
        let logins = clean_logins(logins)?;
        let now = now_ms();
        let removed = self.store.write(|tx| -> Result<_, Error> {
            let mut removed = Vec::new();
            for login in &logins {
                let Some((u, _)) = super::users::find_by_login(tx, login)? else { continue };
                if !users::remove_membership(tx, u.id, app_id)? {
                    continue;
                }
                crate::store::auth_sessions::delete_for(tx, u.id, app_id)?;
                devices::delete_for(tx, u.id, app_id)?;
                apikeys::revoke_for_user(tx, u.id, Some(app_id), now)?;
                tokens::revoke_for_user(tx, u.id, Some(app_id), now)?;
                crate::store::links::void_for_user(tx, u.id, Purpose::Register.as_str(), Some(app_id), now)?;
                if users::membership_count(tx, u.id)? == 0 {
                    users::delete(tx, u.id)?;
                }
                removed.push(u);
            }
            Ok(removed)
        })?;
        log::info!("application {app_id}: {} users removed", removed.len());
        for u in &removed {
            self.audit(caller, "user_deleted", Some(app_id), Some(u), None);
        }
        Ok(removed.len())
    }

    /// A user owned by `app_id`; `UnknownUser` for anyone else.
    pub fn app_user(&self, app_id: &str, login: &str) -> Result<User, Error> {
        self.store.with(|c| app_user_in(c, app_id, login))
    }

    fn new_registration_link(&self, app_id: &str, user: &User, display_name: Option<&str>) -> Result<String, Error> {
        let display = clean_display_name(display_name.filter(|d| !d.is_empty()).unwrap_or(&user.login))?;
        let lifetime = self.config.links.register_lifetime.millis();
        let code = self.store.write(|tx| -> Result<_, Error> {
            links::create(tx, Purpose::Register, user, Some(app_id), Some(display.as_str()), now_ms(), lifetime)
        })?;
        Ok(format!("{}/register/{}", self.config.public_url(), code.expose()))
    }

    /// A fresh registration link (voiding the user's older unused ones).
    pub fn registration_link(&self, app_id: &str, login: &str, display_name: Option<&str>) -> Result<String, Error> {
        let user = self.app_user(app_id, login)?;
        let url = self.new_registration_link(app_id, &user, display_name)?;
        log::info!("application {app_id}: registration link made for user {}", user.id);
        Ok(url)
    }

    /// Three reads by index: a dialect may call it on the executor (`Store::read_quick`).
    pub fn has_device(&self, app_id: &str, login: &str) -> Result<bool, Error> {
        self.store.read_quick(|c| -> Result<_, Error> {
            let user = app_user_in(c, app_id, login)?;
            Ok(devices::has_live(c, user.id, app_id)?)
        })
    }

    /// Disables the user's devices for `app_id`, revokes their API keys and every token issued
    /// through them, and answers a fresh registration link.
    pub fn lose_devices(
        &self,
        caller: &Caller,
        app_id: &str,
        login: &str,
        display_name: Option<&str>,
    ) -> Result<String, Error> {
        let user = self.app_user(app_id, login)?;
        // Checked before anything is marked lost: a refused display name changes nothing.
        if let Some(d) = display_name.filter(|d| !d.is_empty()) {
            clean_display_name(d)?;
        }
        let now = now_ms();
        let lost = self.store.write(|tx| -> Result<_, Error> {
            let keys = devices::mark_lost(tx, user.id, app_id, now)?;
            for k in &keys {
                apikeys::revoke(tx, k, now)?;
                tokens::revoke_for_api_key(tx, k, now)?;
            }
            // The sign-ins waiting for the lost device fail; the sessions it approved end.
            for _ in crate::store::auth_sessions::fail_for_lost(tx, user.id, app_id, now)? {
                audit_in(tx, caller, "signin_failed", Some(app_id), Some(&user), None)?;
            }
            Ok(keys.len())
        })?;
        self.signins.notify_waiters();
        log::info!("application {app_id}: {lost} devices of user {} marked lost", user.id);
        self.audit(caller, "device_lost", Some(app_id), Some(&user), None);
        self.new_registration_link(app_id, &user, display_name)
    }

    /// Puts a text message with a fresh registration link in the outbox, addressed to `phone`.
    pub fn send_registration_sms(
        &self,
        app_id: &str,
        login: &str,
        phone: &str,
        display_name: Option<&str>,
        message: Option<&str>,
    ) -> Result<(), Error> {
        let ok_phone = {
            let digits = phone.chars().filter(char::is_ascii_digit).count();
            (5..=20).contains(&digits)
                && phone.len() <= 32
                && phone
                    .chars()
                    .enumerate()
                    .all(|(i, c)| c.is_ascii_digit() || " -().".contains(c) || (i == 0 && c == '+'))
        };
        if !ok_phone {
            return Err(Error::invalid("phone_number", "is not a phone number"));
        }
        if let Some(m) = message {
            if m.len() > 640 || m.chars().any(|c| c.is_control() && c != '\n') {
                return Err(Error::invalid("message", "must be at most 640 bytes of text"));
            }
        }
        let user = self.app_user(app_id, login)?;
        // Before the link: a message that cannot be queued must not void the user's live link.
        self.outbox.has_room()?;
        let url = self.new_registration_link(app_id, &user, display_name)?;
        let text = match message.map(str::trim).filter(|m| !m.is_empty()) {
            Some(m) => format!("{m} {url}"),
            None => format!("Register your device: {url}"),
        };
        self.outbox.enqueue_sms(phone, &text)?;
        log::info!("application {app_id}: registration SMS for user {} put in the outbox", user.id);
        Ok(())
    }

    /// What a live registration link's page shows.
    pub fn registration_info(&self, code: &Secret) -> Result<LinkInfo, Error> {
        let link = self.store.with(|c| links::peek(c, Purpose::Register, code, now_ms()))?;
        Ok(LinkInfo { app_id: link.app_id.unwrap_or_default(), display_name: link.display_name.unwrap_or_default() })
    }

    /// Uses a registration link: the device is recorded and handed an API key for the link's
    /// application. All or nothing.
    /// `public_key`, when the device made one, is its own P-256 signing key (an uncompressed SEC1
    /// point): the device signs its calls with it (see `Core::device_call`), and sign-ins asking
    /// for the `device` or `facial` method need it.
    pub fn register_device(
        &self,
        caller: &Caller,
        code: &Secret,
        device_name: &str,
        public_key: Option<&[u8]>,
    ) -> Result<Registered, Error> {
        let device_name = clean_name("device_name", device_name)?;
        if device_name.trim().is_empty() {
            return Err(Error::invalid("device_name", "must not be empty"));
        }
        if let Some(k) = public_key {
            if !super::signins::valid_public_key(k) {
                return Err(Error::invalid("public_key", "must be an uncompressed P-256 point (65 bytes, base64url)"));
            }
        }
        let now = now_ms();
        let key = NewApiKey::draw(None);
        let (app_id, user_id, device_id) = self.store.write(|tx| -> Result<_, Error> {
            let link = links::consume(tx, Purpose::Register, code, now)?;
            let app_id = link.app_id.ok_or(Error::Gone)?;
            if !users::is_member(tx, link.user_id, &app_id)? {
                return Err(Error::Gone);
            }
            key.insert_in(tx, link.user_id, &app_id, now)?;
            let device = devices::NewDevice {
                user_id: link.user_id,
                app_id: &app_id,
                name: device_name.trim(),
                api_key_id: &key.apikey,
                public_key,
            };
            let device_id = devices::insert(tx, &device, now)?;
            Ok((app_id, link.user_id, device_id))
        })?;
        let user = self.user_by_id(user_id)?;
        log::info!("application {app_id}: device {device_id} registered for user {user_id}");
        self.audit(caller, "device_registered", Some(&app_id), Some(&user), None);
        Ok(Registered { app_id, login: user.login, device_id, key })
    }
}
