//! Applications: the built-ins and the ones an administrator adds, with secrets sealed at rest.

use std::sync::Arc;

use super::crypto::{random_token, Secret};
use super::{now_ms, Core, Error};
use crate::store::apps;

/// The application secrets opened so far, each with the sealed bytes it came from.
pub(crate) type Opened = std::sync::RwLock<std::collections::HashMap<String, (Vec<u8>, Arc<Secret>)>>;

/// An application as the administrator's listing shows it.
#[derive(Debug, Clone, PartialEq)]
pub struct AppInfo {
    pub id: String,
    pub builtin: bool,
    pub has_secret: bool,
    /// How many users are its members.
    pub members: i64,
    /// Unix ms.
    pub created_at: i64,
    /// The doors its secret opens, a comma list (`iampass,iqm,oauth`); empty for the built-ins.
    pub doors: String,
}

impl From<apps::AppRow> for AppInfo {
    fn from(r: apps::AppRow) -> AppInfo {
        AppInfo {
            id: r.id,
            builtin: r.builtin,
            has_secret: r.has_secret,
            members: r.members,
            created_at: r.created_at,
            doors: r.doors,
        }
    }
}

/// A door an application's secret opens. One record may be an IQM client, an IAMPASS application
/// and an OAuth client at once, but only where it was said to be: a secret handed to an IQM front
/// end must not sign IAMPASS management calls (issue 24).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Door {
    /// IAMPASS: management and authentication calls signed with the secret.
    Iampass,
    /// IQM: the client credentials (HTTP Basic) of /api/v3/ua.
    Iqm,
    /// The OAuth doors: introspection and revocation of the application's own tokens.
    Oauth,
    /// OpenID Connect: the client's secret at the token endpoint (a public client has none).
    Oidc,
}

impl Door {
    pub const ALL: [Door; 4] = [Door::Iampass, Door::Iqm, Door::Oauth, Door::Oidc];

    pub fn as_str(self) -> &'static str {
        match self {
            Door::Iampass => "iampass",
            Door::Iqm => "iqm",
            Door::Oauth => "oauth",
            Door::Oidc => "oidc",
        }
    }

    pub fn parse(name: &str) -> Option<Door> {
        Door::ALL.into_iter().find(|d| d.as_str() == name)
    }

    /// The stored form: a comma list in the order of [`Door::ALL`], each once.
    pub(crate) fn list(doors: &[Door]) -> String {
        Door::ALL.into_iter().filter(|d| doors.contains(d)).map(Door::as_str).collect::<Vec<_>>().join(",")
    }

    pub(crate) fn in_list(self, list: &str) -> bool {
        list.split(',').any(|d| d == self.as_str())
    }
}

/// Application ids travel in URL paths and in `client_id:client_secret`: keep them plain.
pub fn validate_app_id(id: &str) -> Result<(), Error> {
    let ok_char = |c: char| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.');
    if id.is_empty() || id.len() > 64 || !id.chars().all(ok_char) || id.starts_with('.') {
        return Err(Error::invalid("application id", "must be 1 to 64 characters of A-Z a-z 0-9 - _ ."));
    }
    Ok(())
}

impl Core {
    /// Adds an application whose secret opens `doors` (at least one). With no secret given, one of
    /// 256 random bits is generated. Returns the secret: the only time it is shown.
    pub fn add_app(&self, id: &str, secret: Option<Secret>, doors: &[Door]) -> Result<Secret, Error> {
        validate_app_id(id)?;
        if doors.is_empty() {
            return Err(Error::invalid("doors", "say which doors the secret opens: iampass, iqm, oauth, oidc"));
        }
        let secret = self.checked_secret(secret)?;
        let sealed = self.key.seal(id, secret.expose().as_bytes());
        let list = Door::list(doors);
        self.store.write(|tx| apps::insert(tx, id, &sealed, &list, now_ms()))?;
        log::info!("application {id} added, serving {list}");
        Ok(secret)
    }

    /// A secret an administrator gave (16 to 1024 bytes, no control characters), or a new one of
    /// 256 random bits.
    pub(crate) fn checked_secret(&self, secret: Option<Secret>) -> Result<Secret, Error> {
        match secret {
            Some(s) => {
                let len = s.expose().len();
                if !(16..=1024).contains(&len) || s.expose().chars().any(char::is_control) {
                    return Err(Error::invalid("secret", "must be 16 to 1024 bytes with no control characters"));
                }
                Ok(s)
            }
            None => Ok(random_token()),
        }
    }

    /// Sets the doors an application's secret opens (narrowing or widening them); takes effect at
    /// once, in every process and node, since each door reads them on every call.
    pub fn set_app_doors(&self, id: &str, doors: &[Door]) -> Result<(), Error> {
        if doors.is_empty() {
            return Err(Error::invalid("doors", "say which doors the secret opens: iampass, iqm, oauth, oidc"));
        }
        let list = Door::list(doors);
        if !self.store.write(|tx| apps::set_doors(tx, id, &list))? {
            return Err(Error::UnknownApp(id.to_string()));
        }
        log::info!("application {id} now serves {list}");
        Ok(())
    }

    /// [`Core::app_secret`] for a call at `door`: `UnknownApp` when the application does not serve
    /// it, as when there is no such application, so a door tells nothing of the others.
    pub fn app_secret_at(&self, id: &str, door: Door) -> Result<Arc<Secret>, Error> {
        // One read by primary key: fine on the executor. Read on every call (not kept with the
        // secret), so that `gatehouse app doors` in another process narrows a running server.
        let found = self.store.read_quick(|c| apps::doors_and_secret(c, id))?;
        let Some((_, Some(sealed))) = found.filter(|(d, _)| door.in_list(d)) else {
            return Err(Error::UnknownApp(id.to_string()));
        };
        self.app_secret(id, &sealed)
    }

    /// Per application: a user who has a second factor may not sign in there with a bare
    /// password (a vendor API with no place for the second factor). Off by default, so that
    /// existing clients keep working.
    pub fn set_require_second_factor(&self, id: &str, required: bool) -> Result<(), Error> {
        if !self.store.write(|tx| apps::set_requires_second_factor(tx, id, required))? {
            return Err(Error::UnknownApp(id.to_string()));
        }
        log::info!("application {id}: second factor {}", if required { "required" } else { "not required" });
        Ok(())
    }

    /// After a right password at a door with no place for a second factor: `SecondFactorRequired`
    /// when the application asks for one and the user has one.
    pub(crate) fn bare_password_allowed(&self, user: &super::User, app_id: &str) -> Result<(), Error> {
        if self.store.read_quick(|c| apps::requires_second_factor(c, app_id))? && self.has_second_factor(user.id)? {
            return Err(Error::SecondFactorRequired);
        }
        Ok(())
    }

    pub fn list_apps(&self) -> Result<Vec<AppInfo>, Error> {
        Ok(self.store.with(apps::list)?.into_iter().map(AppInfo::from).collect())
    }

    /// The application's secret in the clear, opened from `sealed` (what the store holds now),
    /// whatever door it is asked at: callers go through [`Core::app_secret_at`].
    ///
    /// Each secret is opened once and kept with the sealed bytes it came from (zeroized when the
    /// Core is dropped); a secret rotated by this process or the command line has other sealed
    /// bytes, and is opened again.
    fn app_secret(&self, id: &str, sealed: &[u8]) -> Result<Arc<Secret>, Error> {
        if let Some((was, s)) = self.secrets.read().unwrap_or_else(|p| p.into_inner()).get(id) {
            if was.as_slice() == sealed {
                return Ok(Arc::clone(s));
            }
        }
        let plain = self.key.open(id, sealed).ok_or_else(|| {
            super::internal(format!("the secret of application {id} does not open under the master key"))
        })?;
        let text = String::from_utf8(plain.to_vec()).map_err(|_| super::internal("application secret is not UTF-8"))?;
        let secret = Arc::new(Secret::new(text));
        self.secrets
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .insert(id.to_string(), (sealed.to_vec(), Arc::clone(&secret)));
        Ok(secret)
    }

    /// Drops the opened secret of `id` (it was rotated).
    pub(crate) fn forget_secret(&self, id: &str) {
        self.secrets.write().unwrap_or_else(|p| p.into_inner()).remove(id);
    }
}
