//! Applications: the built-ins and the ones an administrator adds, with secrets sealed at rest.

use std::sync::Arc;

use super::crypto::{random_token, Secret};
use super::{now_ms, Core, Error};
use crate::store::apps;

pub use crate::store::apps::AppRow;

/// Application ids travel in URL paths and in `client_id:client_secret`: keep them plain.
pub fn validate_app_id(id: &str) -> Result<(), Error> {
    let ok_char = |c: char| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.');
    if id.is_empty() || id.len() > 64 || !id.chars().all(ok_char) || id.starts_with('.') {
        return Err(Error::invalid("application id", "must be 1 to 64 characters of A-Z a-z 0-9 - _ ."));
    }
    Ok(())
}

impl Core {
    /// Adds an application. With no secret given, one of 256 random bits is generated. Returns the
    /// secret: the only time it is shown.
    pub fn add_app(&self, id: &str, secret: Option<Secret>) -> Result<Secret, Error> {
        validate_app_id(id)?;
        let secret = match secret {
            Some(s) => {
                let len = s.expose().len();
                if !(16..=1024).contains(&len) || s.expose().chars().any(char::is_control) {
                    return Err(Error::invalid("secret", "must be 16 to 1024 bytes with no control characters"));
                }
                s
            }
            None => random_token(),
        };
        let sealed = self.key.seal(id, secret.expose().as_bytes());
        self.store.write(|tx| apps::insert(tx, id, &sealed, now_ms()))?;
        log::info!("application {id} added");
        Ok(secret)
    }

    pub fn list_apps(&self) -> Result<Vec<AppRow>, Error> {
        self.store.with(apps::list)
    }

    /// The application's secret in the clear, for checks that need it (IAMPASS signatures, IQM
    /// client credentials). `UnknownApp` when there is no such application or it has no secret.
    ///
    /// An application's secret never changes once it is added, so each is opened once and kept
    /// (zeroized when the Core is dropped); an application added later, by this process or the
    /// command line, is read when first asked for. Whatever changes or removes a secret must
    /// clear `Core::secrets`.
    pub fn app_secret(&self, id: &str) -> Result<Arc<Secret>, Error> {
        if let Some(s) = self.secrets.read().unwrap_or_else(|p| p.into_inner()).get(id) {
            return Ok(Arc::clone(s));
        }
        // One read by primary key, once per application: fine on the executor.
        let sealed = self.store.read_quick(|c| apps::sealed_secret(c, id))?;
        let sealed = sealed.flatten().ok_or_else(|| Error::UnknownApp(id.to_string()))?;
        let plain = self.key.open(id, &sealed).ok_or_else(|| {
            super::internal(format!("the secret of application {id} does not open under the master key"))
        })?;
        let text = String::from_utf8(plain.to_vec()).map_err(|_| super::internal("application secret is not UTF-8"))?;
        let secret = Arc::new(Secret::new(text));
        self.secrets.write().unwrap_or_else(|p| p.into_inner()).insert(id.to_string(), Arc::clone(&secret));
        Ok(secret)
    }
}
