//! Single-use links: a code of 256 random bits, stored as its digest, good once until it expires.
//! A new link for a user voids that user's older unused links of the same purpose.

use crate::store::Db as Connection;

use super::crypto::{random_token, sha256, Secret};
use super::{Error, User};
use crate::store::links::{self, LinkRow, NewLink};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Purpose {
    Reset,
    /// Registers a device for an application and hands it an API key.
    Register,
}

impl Purpose {
    pub fn as_str(self) -> &'static str {
        match self {
            Purpose::Reset => "reset",
            Purpose::Register => "register",
        }
    }
}

pub fn digest(code: &Secret) -> [u8; 32] {
    sha256(code.expose().as_bytes())
}

/// Makes a new link in `tx`; returns its code (the only time it exists in the clear).
pub fn create(
    tx: &Connection,
    purpose: Purpose,
    user: &User,
    app_id: Option<&str>,
    display_name: Option<&str>,
    now: i64,
    lifetime_ms: i64,
) -> Result<Secret, Error> {
    let code = random_token();
    links::insert_voiding_older(
        tx,
        &NewLink {
            digest: digest(&code),
            purpose: purpose.as_str(),
            user_id: user.id,
            app_id,
            display_name,
            created_at: now,
            expires_at: now.saturating_add(lifetime_ms),
        },
    )?;
    Ok(code)
}

/// Uses a link up in `tx`; `Error::Gone` when it was used, voided, expired or never existed.
pub(crate) fn consume(tx: &Connection, purpose: Purpose, code: &Secret, now: i64) -> Result<LinkRow, Error> {
    links::consume(tx, &digest(code), purpose.as_str(), now)?.ok_or(Error::Gone)
}

/// The link if it is live, without using it.
pub(crate) fn peek(conn: &crate::store::Db, purpose: Purpose, code: &Secret, now: i64) -> Result<LinkRow, Error> {
    links::live(conn, &digest(code), purpose.as_str(), now)?.ok_or(Error::Gone)
}
