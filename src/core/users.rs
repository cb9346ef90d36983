//! Users and their memberships, as the administrator manages them.

use super::crypto::Secret;
use super::guard::Caller;
use super::{now_ms, text, Core, Error, User};
use crate::store::{apikeys, apps, auth_sessions, devices, tokens, users, Db};

pub const USER_TYPES: [&str; 3] = ["ADMIN", "OWNER", "USER"];

/// What a new user is made of.
#[derive(Debug, Default)]
pub struct NewUser {
    pub login: String,
    pub password: Option<Secret>,
    pub email: Option<String>,
    pub first_name: String,
    pub last_name: String,
    pub civility: String,
    pub user_type: String,
    pub apps: Vec<String>,
}

/// A user by id, read in the store's transaction `c` (the row becomes a [`User`] by `From`).
pub(crate) fn find_by_id(c: &Db, id: i64) -> Result<Option<User>, Error> {
    Ok(users::by_id(c, id)?.map(User::from))
}

/// A user by login (compared under `text::fold`) and their password hash, read in `c`.
pub(crate) fn find_by_login(c: &Db, login: &str) -> Result<Option<(User, Option<String>)>, Error> {
    Ok(users::by_login(c, login)?.map(|(u, hash)| (User::from(u), hash)))
}

/// A login as typed, in the one form it is stored and compared in: clean text (`text::clean`: no
/// control or bidirectional characters, NFC), 1 to 255 bytes, no leading or trailing space.
pub fn clean_login(login: &str) -> Result<String, Error> {
    let login = text::clean("login", login)?;
    if login.is_empty() || login.len() > 255 {
        return Err(Error::invalid("login", "must be 1 to 255 bytes"));
    }
    if login.trim() != login {
        return Err(Error::invalid("login", "must not have leading or trailing spaces"));
    }
    Ok(login)
}

/// The login of a user being made: [`clean_login`], and no compatibility form
/// (`text::is_compatibility_form`: `ｖｉｃｔｉｍ` beside `victim`, `ﬁ` beside `fi`).
pub fn new_login(field: &str, login: &str) -> Result<String, Error> {
    let login = if field == "email" { clean_email(login)? } else { clean_login(login)? };
    if text::is_compatibility_form(&login) {
        return Err(Error::invalid(
            field,
            "must not use full-width, ligature or other compatibility forms of letters; type the plain ones",
        ));
    }
    Ok(login)
}

/// An email address as typed, clean (`text::clean`) and of the form local@domain.tld.
pub fn clean_email(email: &str) -> Result<String, Error> {
    let email = text::clean("email", email)?;
    let ok = email.len() <= 254
        && !email.chars().any(char::is_whitespace)
        && email.split_once('@').is_some_and(|(local, domain)| {
            !local.is_empty()
                && !domain.is_empty()
                && !domain.contains('@')
                && domain.contains('.')
                && !domain.starts_with('.')
                && !domain.ends_with('.')
        });
    if ok {
        Ok(email)
    } else {
        Err(Error::invalid("email", "is not an email address"))
    }
}

/// A name people read (first and last name, civility, a device's or a display name): clean
/// (`text::clean`) and at most 255 bytes.
pub fn clean_name(field: &str, value: &str) -> Result<String, Error> {
    let value = text::clean(field, value)?;
    if value.len() > 255 {
        return Err(Error::invalid(field, "must be at most 255 bytes"));
    }
    Ok(value)
}

impl Core {
    /// The password policy: long enough, and not absurdly long (hashing is bounded work).
    pub fn check_password_policy(&self, password: &Secret) -> Result<(), Error> {
        let min = self.config.passwords.min_length;
        if password.expose().chars().count() < min {
            return Err(Error::invalid("password", format!("must be at least {min} characters")));
        }
        if password.expose().len() > 1024 {
            return Err(Error::invalid("password", "must be at most 1024 bytes"));
        }
        Ok(())
    }

    pub(crate) fn password_expiry(&self, now: i64) -> Option<i64> {
        let max_age = self.config.passwords.max_age.millis();
        (max_age > 0).then(|| now.saturating_add(max_age))
    }

    /// Adds a user and makes them a member of `apps`, all or nothing.
    pub fn add_user(&self, new: NewUser) -> Result<User, Error> {
        let new = NewUser {
            login: new_login("login", &new.login)?,
            email: new.email.as_deref().map(clean_email).transpose()?,
            first_name: clean_name("first name", &new.first_name)?,
            last_name: clean_name("last name", &new.last_name)?,
            civility: clean_name("civility", &new.civility)?,
            ..new
        };
        if !USER_TYPES.contains(&new.user_type.as_str()) {
            return Err(Error::invalid("type", "must be ADMIN, OWNER or USER"));
        }
        let hash = match &new.password {
            Some(p) => {
                self.check_password_policy(p)?;
                Some(self.hasher.hash(p)?)
            }
            None => None,
        };
        let now = now_ms();
        let id = self.store.write(|tx| -> Result<_, Error> {
            let id = users::insert(
                tx,
                &users::NewUser {
                    login: &new.login,
                    email: new.email.as_deref(),
                    first_name: &new.first_name,
                    last_name: &new.last_name,
                    civility: &new.civility,
                    user_type: &new.user_type,
                    password_hash: hash.as_deref(),
                    password_expires_at: hash.as_ref().and_then(|_| self.password_expiry(now)),
                },
                now,
            )?;
            for app in &new.apps {
                if !apps::exists(tx, app)? {
                    return Err(Error::UnknownApp(app.clone()));
                }
                users::add_membership(tx, id, app, now)?;
            }
            Ok(id)
        })?;
        log::info!("user {id} added");
        let user = self.user_by_id(id)?;
        self.audit(&Caller::local(), "user_added", None, Some(&user), None);
        Ok(user)
    }

    pub fn user_by_id(&self, id: i64) -> Result<User, Error> {
        self.store.with(|c| find_by_id(c, id))?.ok_or_else(|| Error::UnknownUser(id.to_string()))
    }

    /// The user with this login, as typed (cleaned and compared like every login).
    pub fn user_by_login(&self, login: &str) -> Result<User, Error> {
        let login = clean_login(login)?;
        self.store
            .with(|c| find_by_login(c, &login))?
            .map(|(u, _)| u)
            .ok_or_else(|| Error::UnknownUser(login.to_string()))
    }

    pub fn list_users(&self) -> Result<Vec<(User, Vec<String>)>, Error> {
        let rows = self.store.with(users::list)?;
        Ok(rows.into_iter().map(|(u, apps)| (User::from(u), apps)).collect())
    }

    /// Makes a user a member of an application; false when they were already.
    pub fn grant(&self, login: &str, app: &str) -> Result<bool, Error> {
        let user = self.user_by_login(login)?;
        self.store.write(|tx| -> Result<_, Error> {
            if !apps::exists(tx, app)? {
                return Err(Error::UnknownApp(app.to_string()));
            }
            Ok(users::add_membership(tx, user.id, app, now_ms())?)
        })
    }

    /// Ends a membership, with everything that hangs from it: the user's tokens and API keys for
    /// that application, their IAMPASS sign-ins (waiting ones fail, approved ones close), and
    /// their devices for it, marked lost, so that a later grant does not bring an old phone back.
    pub fn revoke(&self, login: &str, app: &str) -> Result<bool, Error> {
        let user = self.user_by_login(login)?;
        let now = now_ms();
        let owed = self.backchannel_targets(user.id, Some(app), None);
        let was = self.store.write(|tx| -> Result<_, Error> {
            if !apps::exists(tx, app)? {
                return Err(Error::UnknownApp(app.to_string()));
            }
            let was = users::remove_membership(tx, user.id, app)?;
            tokens::revoke_for_user(tx, user.id, Some(app), now)?;
            apikeys::revoke_for_user(tx, user.id, Some(app), now)?;
            devices::mark_lost(tx, user.id, app, now)?;
            self.end_signins_in(tx, &user, Some(app), now)?;
            Ok(was)
        })?;
        self.signins.notify_waiters();
        self.queue_backchannel_logouts(user.id, owed);
        Ok(was)
    }

    /// Blocks or unblocks a user. Blocking also revokes every token they hold and ends their
    /// IAMPASS sign-ins, waiting or approved.
    pub fn set_blocked(&self, login: &str, blocked: bool) -> Result<(), Error> {
        let user = self.user_by_login(login)?;
        let now = now_ms();
        let owed = if blocked { self.backchannel_targets(user.id, None, None) } else { vec![] };
        self.store.write(|tx| -> Result<_, Error> {
            users::set_blocked(tx, user.id, blocked)?;
            if blocked {
                tokens::revoke_for_user(tx, user.id, None, now)?;
                self.end_signins_in(tx, &user, None, now)?;
            }
            Ok(())
        })?;
        self.signins.notify_waiters();
        self.queue_backchannel_logouts(user.id, owed);
        log::info!("user {} {}", user.id, if blocked { "blocked" } else { "unblocked" });
        self.audit(&Caller::local(), if blocked { "user_blocked" } else { "user_unblocked" }, None, Some(&user), None);
        Ok(())
    }

    /// Inside a write: the user's IAMPASS sign-ins for `app` (every application: None) end, each
    /// request that was waiting an audit event.
    fn end_signins_in(&self, tx: &crate::store::Db, user: &User, app: Option<&str>, now: i64) -> Result<(), Error> {
        for r in auth_sessions::end_for_user(tx, user.id, app, now)? {
            super::audit::audit_in(tx, &Caller::local(), "signin_failed", Some(&r.app_id), Some(user), None)?;
        }
        Ok(())
    }

    /// Deletes a user altogether: memberships, tokens, API keys, devices, links and sign-ins go
    /// with the row (foreign keys cascade); the id is never given to anyone again.
    pub fn delete_user(&self, login: &str) -> Result<User, Error> {
        let user = self.user_by_login(login)?;
        self.store.write(|tx| users::delete(tx, user.id))?;
        log::info!("user {} deleted", user.id);
        self.audit(&Caller::local(), "user_deleted", None, Some(&user), None);
        Ok(user)
    }

    /// Sets a new password (checked against the policy) and ends every session of the user.
    pub fn set_password(&self, login: &str, password: &Secret) -> Result<(), Error> {
        let user = self.user_by_login(login)?;
        self.replace_password(&user, password, None)?;
        self.audit(&Caller::local(), "password_changed", None, Some(&user), None);
        Ok(())
    }

    /// The one way a password changes: policy, hash, store, and every session of the user revoked
    /// but `keep` (the token of a user who changed their own password).
    pub(crate) fn replace_password(
        &self,
        user: &User,
        password: &Secret,
        keep: Option<&[u8; 32]>,
    ) -> Result<(), Error> {
        self.check_password_policy(password)?;
        let hash = self.hasher.hash(password)?;
        let (user_id, now) = (user.id, now_ms());
        let owed = self.backchannel_targets(user_id, None, None);
        self.store.write(|tx| -> Result<_, Error> {
            users::set_password(tx, user_id, &hash, self.password_expiry(now), now)?;
            tokens::revoke_for_user_except(tx, user_id, keep, now)?;
            // A reset link asked for before the change must not undo it.
            crate::store::links::void_for_user(tx, user_id, super::links::Purpose::Reset.as_str(), None, now)?;
            Ok(())
        })?;
        self.queue_backchannel_logouts(user_id, owed);
        log::info!("user {user_id} password changed, other sessions revoked");
        self.forget_failures(&user.login);
        Ok(())
    }
}
