//! API keys: a public id and a secret of 256 bits, stored as its SHA-256 digest.

use super::crypto::{hex, random_bytes, random_token, sha256, Secret};
use super::{now_ms, Core, Error};
use crate::store::apikeys::{self, ApiKeyRow};
use crate::store::{tokens, users};

#[derive(Debug)]
pub struct NewApiKey {
    pub apikey: String,
    pub secretkey: Secret,
    pub expires_at: Option<i64>,
}

impl NewApiKey {
    /// The one way an API key is made, by the operator (`add_api_key`) or a device's registration:
    /// a public id of 128 random bits and a secret of 256, shown once. Drawn before the write that
    /// stores it (`insert_in`), which may run more than once.
    pub(crate) fn draw(expires_at: Option<i64>) -> NewApiKey {
        NewApiKey { apikey: hex(&random_bytes::<16>()), secretkey: random_token(), expires_at }
    }

    /// Inside a write: the key's row, its secret as a SHA-256 digest only.
    pub(crate) fn insert_in(&self, tx: &crate::store::Db, user_id: i64, app_id: &str, now: i64) -> Result<(), Error> {
        Ok(apikeys::insert(
            tx,
            &ApiKeyRow {
                id: self.apikey.clone(),
                secret_digest: sha256(self.secretkey.expose().as_bytes()).to_vec(),
                user_id,
                app_id: app_id.to_string(),
                created_at: now,
                expires_at: self.expires_at,
                revoked_at: None,
            },
        )?)
    }
}

pub struct ApiKeyInfo {
    pub apikey: String,
    pub login: String,
    pub app_id: String,
    pub created_at: i64,
    pub expires_at: Option<i64>,
    pub revoked: bool,
}

impl Core {
    /// Creates an API key for a member of `app`. The secret is returned once and never stored.
    pub fn add_api_key(&self, login: &str, app: &str, lifetime_ms: Option<i64>) -> Result<NewApiKey, Error> {
        let user = self.user_by_login(login)?;
        let now = now_ms();
        let key = NewApiKey::draw(lifetime_ms.map(|l| now.saturating_add(l)));
        self.store.write(|tx| -> Result<_, Error> {
            if !crate::store::apps::exists(tx, app)? {
                return Err(Error::UnknownApp(app.to_string()));
            }
            if !users::is_member(tx, user.id, app)? {
                return Err(Error::NotMember);
            }
            key.insert_in(tx, user.id, app, now)
        })?;
        log::info!("API key {} added for user {} on {app}", key.apikey, user.id);
        Ok(key)
    }

    /// Revokes a key and every token issued through it.
    pub fn revoke_api_key(&self, apikey: &str) -> Result<(), Error> {
        let now = now_ms();
        self.store.write(|tx| -> Result<_, Error> {
            if apikeys::by_id(tx, apikey)?.is_none() {
                return Err(Error::UnknownApiKey);
            }
            apikeys::revoke(tx, apikey, now)?;
            tokens::revoke_for_api_key(tx, apikey, now)?;
            Ok(())
        })?;
        log::info!("API key {apikey} revoked");
        Ok(())
    }

    pub fn list_api_keys(&self) -> Result<Vec<ApiKeyInfo>, Error> {
        let rows = self.store.with(apikeys::list)?;
        Ok(rows
            .into_iter()
            .map(|(k, login)| ApiKeyInfo {
                apikey: k.id,
                login,
                app_id: k.app_id,
                created_at: k.created_at,
                expires_at: k.expires_at,
                revoked: k.revoked_at.is_some(),
            })
            .collect())
    }
}
