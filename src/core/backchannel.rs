//! Back-channel logout (OpenID Connect Back-Channel Logout 1.0): when a person's session ends
//! (they sign out, are blocked, their password is set, their membership removed), each client
//! that signed them in through it and registered a back-channel URI is sent a signed logout
//! token. The tokens wait in the store's `logout_queue` (so a crash or a client that is down
//! loses none) and are delivered by `web::backchannel`, retried with backoff; any node may claim
//! a delivery, one at a time.

use serde_json::json;

use super::crypto::{hex, random_bytes};
use super::{now_ms, Core, Error};
use crate::store::oidc as db;

/// The event a logout token carries.
const EVENT: &str = "http://schemas.openid.net/event/backchannel-logout";
/// A logout token is good this long (seconds).
const TOKEN_LIFETIME_S: i64 = 120;
/// A delivery is given up after this many attempts, or this long.
const MAX_ATTEMPTS: i64 = 12;
const MAX_AGE_MS: i64 = 24 * 3_600_000;

/// Where logout tokens are owed.
pub(crate) type Targets = Vec<db::BackchannelTarget>;

/// A delivery claimed for sending.
#[derive(Debug)]
pub struct Delivery {
    pub id: i64,
    pub uri: String,
    pub logout_token: String,
    pub attempts: i64,
    pub created_at: i64,
}

impl Core {
    /// The clients owed a logout when the user's sessions (of one client, or one session) end:
    /// read before the tokens are revoked, since a client counts only while its tokens live.
    pub(crate) fn backchannel_targets(&self, user_id: i64, app_id: Option<&str>, session: Option<&[u8]>) -> Targets {
        self.store.with(|c| db::backchannel_targets(c, user_id, app_id, session, now_ms())).unwrap_or_else(|e| {
            log::warn!("back-channel logouts of user {user_id} not found: {e}");
            vec![]
        })
    }

    /// Signs a logout token for each target and queues it. A failure is logged: the session has
    /// ended whatever the clients learn.
    pub(crate) fn queue_backchannel_logouts(&self, user_id: i64, targets: Targets) {
        if targets.is_empty() {
            return;
        }
        let now = now_ms();
        let mut signed = vec![];
        for db::BackchannelTarget { app_id: client, session: sid, uri, signing_alg: alg } in targets {
            let claims = json!({
                "iss": self.issuer(),
                "sub": user_id.to_string(),
                "aud": client,
                "iat": now / 1000,
                "exp": now / 1000 + TOKEN_LIFETIME_S,
                "jti": hex(&random_bytes::<16>()),
                "sid": hex(&sid),
                "events": {EVENT: {}},
            });
            match self.sign_logout_token(&alg, &claims) {
                Ok(t) => signed.push((client, uri, t)),
                Err(e) => log::warn!("a back-channel logout token for client {client} was not signed: {e}"),
            }
        }
        let queued = self.store.write(|tx| -> Result<usize, Error> {
            for (client, uri, token) in &signed {
                db::queue_logout(tx, client, uri, token, now)?;
            }
            Ok(signed.len())
        });
        match queued {
            Ok(n) => log::info!("{n} back-channel logouts queued for user {user_id}"),
            Err(e) => log::warn!("back-channel logouts of user {user_id} not queued: {e}"),
        }
    }

    fn sign_logout_token(&self, alg: &str, claims: &serde_json::Value) -> Result<String, Error> {
        let alg = super::keys::Alg::parse(alg).ok_or_else(|| super::internal(format!("no signing algorithm {alg}")))?;
        self.sign_jwt(alg, "logout+jwt", claims)
    }

    /// Claims the deliveries that are due, for one minute.
    pub fn claim_logouts(&self, n: i64) -> Result<Vec<Delivery>, Error> {
        let now = now_ms();
        // Asked every second: a read first, so that an empty queue costs no write (on SQLite a
        // commit a second would make every reading connection fault its pages in again).
        if !self.store.with(|c| db::logouts_due(c, now))? {
            return Ok(vec![]);
        }
        let rows = self.store.write(|tx| db::claim_logouts(tx, now, 60_000, n))?;
        Ok(rows
            .into_iter()
            .map(|r| Delivery {
                id: r.id,
                uri: r.uri,
                logout_token: r.logout_token,
                attempts: r.attempts,
                created_at: r.created_at,
            })
            .collect())
    }

    /// A delivery answered 2xx: done.
    pub fn logout_delivered(&self, id: i64) -> Result<(), Error> {
        Ok(self.store.write(|tx| db::logout_done(tx, id))?)
    }

    /// A delivery failed: again after a backoff (2^attempts s, at most an hour), or given up.
    pub fn logout_failed(&self, d: &Delivery, why: &str) -> Result<(), Error> {
        let now = now_ms();
        if d.attempts >= MAX_ATTEMPTS || now - d.created_at > MAX_AGE_MS {
            log::warn!("back-channel logout to {} given up after {} attempts: {why}", d.uri, d.attempts);
            return Ok(self.store.write(|tx| db::logout_done(tx, d.id))?);
        }
        let wait = 1000i64.saturating_mul(1 << d.attempts.clamp(0, 12)).min(3_600_000);
        log::info!("back-channel logout to {} failed ({why}); again in {} s", d.uri, wait / 1000);
        Ok(self.store.write(|tx| db::logout_retry_at(tx, d.id, now + wait))?)
    }

    pub fn logouts_waiting(&self) -> Result<i64, Error> {
        Ok(self.store.with(db::logouts_waiting)?)
    }
}
