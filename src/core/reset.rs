//! Password reset by mail: a request that answers the same whether or not it matched, a link in
//! the mail, and the link's use that sets the password and ends every session in every dialect.

use super::crypto::Secret;
use super::guard::Caller;
use super::links::{self, Purpose};
use super::{now_ms, text, Core, Error};
use crate::store::{tokens, users};

/// What the reset mail says; each dialect has its own wording.
pub struct ResetMail {
    pub subject: &'static str,
    /// `{login}`, `{url}` and `{minutes}` are filled in.
    pub body: &'static str,
}

pub const IQM_RESET_MAIL: ResetMail = ResetMail {
    subject: "Reset your password",
    body: "We received a request to reset the password of {login}.\n\n\
           Open this link within {minutes} minutes to choose a new one:\n\n{url}\n\n\
           (An application can instead send the token at the end of the link to /api/v3/ua/user/update-password.)\n\n\
           The link works once. If you did not ask for this, ignore this message: your password stays as it is.\n",
};

pub const CMS_RESET_MAIL: ResetMail = ResetMail {
    subject: "Reset your SmartServer CMS password",
    body: "Someone (you, we hope) asked to reset the password of the CMS account {login}.\n\n\
           To choose a new password, open this link within {minutes} minutes:\n\n{url}\n\n\
           The link works once. If you did not ask for this, ignore this message: your password stays as it is.\n",
};

impl Core {
    /// Mails a reset link when `login` and `email` name one user who may use `app_id`. Says nothing
    /// about whether they did: the caller answers the same either way, and should call this off
    /// the request path so that the time taken tells nothing either. With `app_id`, only a member
    /// of that application gets a link.
    pub fn request_password_reset(
        &self,
        caller: &Caller,
        login: &str,
        email: &str,
        app_id: Option<&str>,
        mail: &ResetMail,
    ) -> Result<(), Error> {
        let now = now_ms();
        const HOUR: i64 = 3_600_000;
        // Mail costs us and lands in someone's inbox: an address may ask so often, matched or not,
        // and an account be sent so many (the rest would void the live link and flood the inbox).
        if let Some(addr) = caller.addr {
            if !self.throttle.take(
                &format!("reset-from:{addr}"),
                self.config.mail.resets_per_address_hour,
                HOUR,
                now,
            )? {
                log::info!("password reset asked too often from address {addr} this hour; nothing sent");
                return Ok(());
            }
        }
        let login = text::clean("login", login)?;
        let email = text::clean("email", email.trim())?;
        let Some((user, _)) = self.store.with(|c| super::users::find_by_login(c, &login))? else { return Ok(()) };
        let matches = user.email.as_deref().is_some_and(|e| e.eq_ignore_ascii_case(&email));
        let member = match app_id {
            Some(app) => self.store.with(|c| users::is_member(c, user.id, app))?,
            None => true,
        };
        if !matches || user.blocked || !member {
            log::debug!("password reset asked for an account that does not match; nothing sent");
            return Ok(());
        }
        if !self.throttle.take(&format!("reset-of:{}", user.id), self.config.mail.resets_per_account_hour, HOUR, now)? {
            log::info!(
                "password reset asked too often for user {} this hour; nothing sent, the live link stays",
                user.id
            );
            return Ok(());
        }
        // Before the link: with no room for the mail, the live link is not voided for nothing.
        self.outbox.has_room()?;
        let lifetime = self.config.links.reset_lifetime.millis();
        let code = self.store.write(|tx| links::create(tx, Purpose::Reset, &user, None, None, now, lifetime))?;
        let url = format!("{}/reset/{}", self.config.public_url(), code.expose());
        let body = mail
            .body
            .replace("{login}", &user.login)
            .replace("{minutes}", &(lifetime / 60_000).max(1).to_string())
            .replace("{url}", &url);
        let to = user.email.clone().unwrap_or_default();
        self.outbox.enqueue(&to, mail.subject, &body)?;
        log::info!("password reset link mailed to user {}", user.id);
        self.audit(caller, "reset_requested", app_id, Some(&user), None);
        Ok(())
    }

    /// The reset link is live (for showing its page).
    pub fn reset_link_live(&self, code: &Secret) -> Result<(), Error> {
        let d = links::digest(code);
        let live = self.store.with(|c| crate::store::links::live(c, &d, Purpose::Reset.as_str(), now_ms()))?;
        live.map(|_| ()).ok_or(Error::Gone)
    }

    /// Uses a reset link: sets the password (checked against the policy), voids the link, and
    /// ends every session and token of the user, in every dialect. All or nothing.
    pub fn reset_password(&self, caller: &Caller, code: &Secret, password: &Secret) -> Result<(), Error> {
        self.reset_password_of(caller, code, None, password)
    }

    /// `reset_password`, for a link that must belong to the user with this login (an API client
    /// sends the email beside the token). A link of someone else is `Gone`, and stays usable.
    pub fn reset_password_of(
        &self,
        caller: &Caller,
        code: &Secret,
        login: Option<&str>,
        password: &Secret,
    ) -> Result<(), Error> {
        let login = login.map(|l| text::clean("email", l)).transpose()?;
        let login = login.as_deref();
        self.reset_link_live(code)?;
        self.check_password_policy(password)?;
        let hash = self.hasher.hash(password)?;
        let now = now_ms();
        let user_id = self.store.write(|tx| -> Result<_, Error> {
            if let Some(login) = login {
                let owner = links::peek(tx, Purpose::Reset, code, now)?;
                let user = super::users::find_by_id(tx, owner.user_id)?.ok_or(Error::Gone)?;
                if users::login_key(&user.login) != users::login_key(login) {
                    return Err(Error::Gone);
                }
            }
            let link = links::consume(tx, Purpose::Reset, code, now)?;
            users::set_password(tx, link.user_id, &hash, self.password_expiry(now), now)?;
            tokens::revoke_for_user(tx, link.user_id, None, now)?;
            Ok(link.user_id)
        })?;
        log::info!("user {user_id} reset their password; every session ended");
        let user = self.user_by_id(user_id).ok();
        if let Some(u) = &user {
            self.forget_failures(&u.login);
        }
        self.audit(caller, "reset_done", None, user.as_ref(), None);
        Ok(())
    }
}
