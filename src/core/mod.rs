//! The identity model: applications, users, memberships, credentials, tokens and the reaper.
//!
//! The core knows no HTTP and no vendor's field names. Its operations are plain blocking functions
//! on [`Core`], shared by the server and the command line; async code calls them through
//! [`Core::call`], which runs them off the executor.

pub mod account;
pub mod any_token;
pub mod apikeys;
pub mod apps;
pub mod audit;
pub mod backchannel;
pub mod device_grant;
pub mod devices;
pub mod guard;
pub mod keys;
pub mod links;
pub mod mail;
pub mod oauth;
pub mod oidc;
pub mod passkeys;
pub mod password;
pub mod reaper;
pub mod reset;
pub mod sessions;
pub mod signins;
pub mod stats;
pub mod text;
pub mod totp;
pub mod users;
pub mod uses;
pub mod webauthn;

/// Randomness, digests, HMAC, the master key: below the core (the store draws from it too).
pub use crate::base::crypto;

use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use crate::config::Config;
use crate::store::Store;
use crypto::MasterKey;
use password::Hasher;

pub use crypto::Secret;

/// The built-in application every ForePaaS client logs in to by default.
pub const APP_FOREPAAS: &str = "forepaas";
/// The built-in application of the SmartServer CMS.
pub const APP_CMS: &str = "cms";
/// The built-in application of the box's own sign-in: the OpenID Connect SSO sessions' tokens.
pub const APP_SSO: &str = "gatehouse";

/// Every way a core operation fails. Each dialect maps it to its own wire answer in one function.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{field}: {reason}")]
    Invalid { field: String, reason: String },
    #[error("invalid credentials")]
    BadCredentials,
    /// A client application's id and secret do not match.
    #[error("invalid client credentials")]
    BadClient,
    #[error("invalid token")]
    BadToken,
    /// The current password given to change it is wrong (the session itself is fine).
    #[error("wrong password")]
    WrongPassword,
    #[error("user is blocked")]
    Blocked,
    #[error("user is not a member of this application")]
    NotMember,
    #[error("unknown application {0}")]
    UnknownApp(String),
    #[error("unknown user {0}")]
    UnknownUser(String),
    /// A single-use link that was used, voided, has expired, or never existed.
    #[error("the link is no longer valid")]
    Gone,
    #[error("unknown API key")]
    UnknownApiKey,
    #[error("{0} already exists")]
    Exists(String),
    /// The application requires a second factor of users who have one, and this door has no
    /// place for it (`require_second_factor`): the bare password is refused.
    #[error("this application requires the second factor: sign in through the box's sign-in page")]
    SecondFactorRequired,
    /// A device reported lost: its own calls are refused.
    #[error("this device was reported lost")]
    Lost,
    #[error("the server is busy")]
    Busy,
    /// The data directory's disk is under its reserve (`mail.min_free_mb`): no message is queued.
    #[error("the message cannot be queued: the server is short of disk space")]
    NoRoom,
    /// Too many failed sign-ins: wait this long.
    #[error("too many failed attempts")]
    Throttled { retry_after_ms: i64 },
    /// Logged once with this correlation id; clients see only the id.
    #[error("internal error (id {0})")]
    Internal(String),
}

impl Error {
    /// Whole seconds to put in Retry-After, for the errors that have one.
    pub fn retry_after_secs(&self) -> Option<u64> {
        match self {
            Error::Throttled { retry_after_ms } => Some(((*retry_after_ms).max(1) as u64).div_ceil(1000)),
            Error::Busy => Some(1),
            Error::NoRoom => Some(60),
            // Named one by one, like every door's map: a new variant decides here too.
            Error::Invalid { .. }
            | Error::BadCredentials
            | Error::BadClient
            | Error::BadToken
            | Error::WrongPassword
            | Error::Blocked
            | Error::NotMember
            | Error::UnknownApp(_)
            | Error::UnknownUser(_)
            | Error::Gone
            | Error::UnknownApiKey
            | Error::Exists(_)
            | Error::Lost
            | Error::SecondFactorRequired
            | Error::Internal(_) => None,
        }
    }

    pub fn invalid(field: &str, reason: impl Into<String>) -> Error {
        Error::Invalid { field: field.to_string(), reason: reason.into() }
    }
}

/// Logs an unexpected failure with a fresh correlation id and returns the opaque error.
pub fn internal(e: impl std::fmt::Display) -> Error {
    Error::Internal(crate::base::incident(e))
}

/// The one place the store's failures become the core's. A busy or unreachable database is
/// `Busy` (503, Retry-After 1); a taken key names what exists; an internal failure was logged by
/// the store with its correlation id, which is all that goes on.
impl From<crate::store::Error> for Error {
    fn from(e: crate::store::Error) -> Error {
        use crate::store::Error as Store;
        match e {
            Store::Busy | Store::Unavailable => Error::Busy,
            Store::Conflict(what) => Error::Exists(what),
            Store::Internal(id) => Error::Internal(id),
        }
    }
}

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX)).unwrap_or(0)
}

/// ISO 8601 in UTC with milliseconds, as ForePaaS writes it: `2020-02-28T17:17:10.274Z`.
pub fn iso8601(ms: i64) -> String {
    use time::macros::format_description;
    let fmt = format_description!("[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:3]Z");
    time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000)
        .ok()
        .and_then(|t| t.format(&fmt).ok())
        .unwrap_or_default()
}

/// A user as the model knows it (never with its password hash).
#[derive(Debug, Clone, PartialEq)]
pub struct User {
    pub id: i64,
    pub login: String,
    pub email: Option<String>,
    pub first_name: String,
    pub last_name: String,
    pub civility: String,
    pub locale: Option<String>,
    pub customer_id: Option<i64>,
    pub user_type: String,
    pub blocked: bool,
    pub license_accepted: bool,
    pub demo_mode: Option<String>,
    pub password_expires_at: Option<i64>,
    pub must_renew: bool,
    pub workspace_id: Option<i64>,
}

/// The one place a user's row becomes the model's user.
impl From<crate::store::users::UserRow> for User {
    fn from(r: crate::store::users::UserRow) -> User {
        User {
            id: r.id,
            login: r.login,
            email: r.email,
            first_name: r.first_name,
            last_name: r.last_name,
            civility: r.civility,
            locale: r.locale,
            customer_id: r.customer_id,
            user_type: r.user_type,
            blocked: r.blocked,
            license_accepted: r.license_accepted,
            demo_mode: r.demo_mode,
            password_expires_at: r.password_expires_at,
            must_renew: r.must_renew,
            workspace_id: r.workspace_id,
        }
    }
}

impl User {
    /// The full name with civility: `M. John Doe`.
    pub fn full_name(&self) -> String {
        [self.civility.trim(), self.first_name.trim(), self.last_name.trim()]
            .iter()
            .filter(|s| !s.is_empty())
            .copied()
            .collect::<Vec<_>>()
            .join(" ")
    }

    /// The user must choose a new password: flagged, or the password has expired.
    pub fn password_renew(&self, now: i64) -> bool {
        self.must_renew || self.password_expires_at.is_some_and(|t| t <= now)
    }
}

/// The shared state of a running gatehouse, or of one command-line call.
pub struct Core {
    pub config: Arc<Config>,
    pub store: Store,
    key: MasterKey,
    hasher: Hasher,
    throttle: guard::Throttle,
    pub(crate) counters: stats::Counters,
    /// Uses of tokens with an idle timeout not yet in their rows (see `core::uses`).
    uses: uses::Uses,
    /// Where the reaper's walk through the tokens goes on at its next sweep (see `Core::reap`).
    reaper_cursor: std::sync::atomic::AtomicI64,
    /// Set when the server stops: long work (a reaper sweep) ends at its next step.
    stopping: std::sync::atomic::AtomicBool,
    /// Application secrets opened so far (see `Core::app_secret`).
    secrets: apps::Opened,
    /// Nonces of signed requests spent and still kept (see `Core::use_nonce`).
    pub(crate) nonces: devices::Nonces,
    pub outbox: Arc<mail::Outbox>,
    /// Woken when an IAMPASS sign-in starts, is answered or fails: the devices' long polls look
    /// again (see `Core::signins_changed`).
    pub(crate) signins: tokio::sync::Notify,
    /// The OpenID Connect signing keys opened so far (see `core::keys`).
    pub(crate) signing: keys::Signing,
}

#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    #[error("data directory {0}: {1}")]
    Dir(String, std::io::Error),
    #[error("data directory {0} is not writable ({1}): gatehouse keeps its database, master key and outbox there")]
    ReadOnly(String, std::io::Error),
    #[error(transparent)]
    Store(#[from] crate::store::OpenError),
    #[error(transparent)]
    Key(#[from] crypto::KeyError),
    /// The key file is not there, and secrets in the database were sealed by a key.
    #[error(
        "master key {path} is missing, but the database holds application secrets sealed by it; put that key file back{}",
        if *.configured { "" } else { ", or set master_key_file to where it is" }
    )]
    KeyMissing { path: String, configured: bool },
    /// master_key_file names a file that does not exist, and nothing is sealed yet.
    #[error(
        "master_key_file names {path}, which does not exist (the database holds no secret sealed by a key yet); make a key \
         there with `(umask 077; od -An -tx1 -N32 /dev/urandom | tr -dc 0-9a-f > '{path}')` (64 hex characters, owner \
         only), copy in the one the other nodes use, or leave master_key_file empty for gatehouse to create {default}"
    )]
    KeyFileAbsent { path: String, default: String },
    #[error("{0}")]
    Other(String),
}

impl Core {
    /// Opens the data directory: creates it, the database and the master key on first start,
    /// migrates the schema, and makes sure the built-in applications exist.
    pub fn open(config: Config) -> Result<Core, OpenError> {
        crate::store::ensure_dir(&config.data_dir)
            .map_err(|e| OpenError::Dir(config.data_dir.display().to_string(), e))?;
        crate::store::check_writable(&config.data_dir)
            .map_err(|e| OpenError::ReadOnly(config.data_dir.display().to_string(), e))?;
        let store = Store::open(&config)?;
        let key_path = config.master_key_path();
        let key = if key_path.exists() {
            MasterKey::load(&key_path)?
        } else {
            let configured = !config.master_key_file.as_os_str().is_empty();
            let sealed = store.with(crate::store::apps::sealed_count).map_err(|e| OpenError::Other(e.to_string()))?;
            let path = key_path.display().to_string();
            if sealed > 0 {
                return Err(OpenError::KeyMissing { path, configured });
            }
            // A configured file is never made here: on several nodes, each would make its own.
            if configured {
                let default = config.data_dir.join("master.key").display().to_string();
                return Err(OpenError::KeyFileAbsent { path, default });
            }
            let key = MasterKey::create(&key_path)?;
            log::info!("created master key {}", key_path.display());
            key
        };
        let hasher = Hasher::new(&config.argon2, config.hash_workers(), config.argon2.queue)
            .map_err(|e| OpenError::Other(e.to_string()))?;
        let outbox = mail::Outbox::open(config.data_dir.join("outbox"), &config.mail.from)
            .map_err(OpenError::Other)?
            .with_reserve(config.mail.min_free_mb);
        let throttle = guard::Throttle::for_store(config.throttle.clone(), &store);
        // With PostgreSQL, nonces are spent in the shared table (`Core::use_nonce`).
        let nonces = if store.is_shared() {
            devices::Nonces::default()
        } else {
            devices::Nonces::load(&store, now_ms()).map_err(|e| OpenError::Other(e.to_string()))?
        };
        let core = Core {
            config: Arc::new(config),
            store,
            key,
            hasher,
            throttle,
            counters: stats::Counters::default(),
            uses: Default::default(),
            reaper_cursor: Default::default(),
            stopping: Default::default(),
            secrets: Default::default(),
            nonces,
            outbox: Arc::new(outbox),
            signins: tokio::sync::Notify::new(),
            signing: Default::default(),
        };
        core.store
            .write(|tx| crate::store::apps::ensure_builtin(tx, &[APP_FOREPAAS, APP_CMS, APP_SSO], now_ms()))
            .map_err(|e| OpenError::Other(e.to_string()))?;
        core.load_uses().map_err(|e| OpenError::Other(e.to_string()))?;
        Ok(core)
    }

    /// Runs blocking core work on the blocking pool: the only road from async code into the core.
    pub async fn call<T, F>(self: &Arc<Self>, f: F) -> Result<T, Error>
    where
        F: FnOnce(&Core) -> Result<T, Error> + Send + 'static,
        T: Send + 'static,
    {
        let core = Arc::clone(self);
        tokio::task::spawn_blocking(move || crate::store::blocking(|| f(&core))).await.map_err(internal)?
    }

    /// [`Core::call`] for a few reads by index (a token check): with SQLite they run right here on
    /// the executor, cheaper than the hop to the blocking pool; with PostgreSQL, whose answer
    /// comes over the network, on the blocking pool like any other call.
    pub async fn quick<T, F>(self: &Arc<Self>, f: F) -> Result<T, Error>
    where
        F: FnOnce(&Core) -> Result<T, Error> + Send + 'static,
        T: Send + 'static,
    {
        if self.store.is_shared() {
            self.call(f).await
        } else {
            f(self)
        }
    }

    /// [`Core::call`] for an operation that is one write and nothing else (`f` uses only `tx`):
    /// it runs on the writer's thread, inside the transaction of the next commit, and is
    /// answered once that commit is done, without a thread of the blocking pool waiting for it.
    pub async fn call_write<T, F>(self: &Arc<Self>, f: F) -> Result<T, Error>
    where
        F: FnMut(&Core, &crate::store::Db) -> Result<T, Error> + Send + 'static,
        T: Send + 'static,
    {
        let core = Arc::clone(self);
        let mut f = f;
        self.store.write_async(move |tx| f(&core, tx)).await
    }

    /// [`Core::call`] for work that hashes or verifies a password: turned away at once, without
    /// leaving the executor, while the hashing queue is full.
    pub async fn call_hashing<T, F>(self: &Arc<Self>, f: F) -> Result<T, Error>
    where
        F: FnOnce(&Core) -> Result<T, Error> + Send + 'static,
        T: Send + 'static,
    {
        self.hasher.admit()?;
        self.call(f).await
    }

    /// The server is stopping: a reaper sweep under way ends after its current batch.
    pub fn stop(&self) {
        self.stopping.store(true, std::sync::atomic::Ordering::Relaxed);
        // The devices' long polls answer now rather than hold the shutdown up.
        self.signins.notify_waiters();
    }

    pub(crate) fn stopping(&self) -> bool {
        self.stopping.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// The database answers.
    pub fn health(&self) -> Result<(), Error> {
        Ok(self.store.ping()?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn iso8601_has_milliseconds_and_z() {
        assert_eq!(iso8601(1_582_910_230_274), "2020-02-28T17:17:10.274Z");
        assert_eq!(iso8601(0), "1970-01-01T00:00:00.000Z");
    }

    #[test]
    fn full_name_carries_civility() {
        let u = User {
            id: 1,
            login: "john.doe".into(),
            email: None,
            first_name: "John".into(),
            last_name: "Doe".into(),
            civility: "M. ".into(),
            locale: None,
            customer_id: None,
            user_type: "USER".into(),
            blocked: false,
            license_accepted: false,
            demo_mode: None,
            password_expires_at: None,
            must_renew: false,
            workspace_id: None,
        };
        assert_eq!(u.full_name(), "M. John Doe");
        assert!(!u.password_renew(10));
        assert!(User { password_expires_at: Some(5), ..u.clone() }.password_renew(10));
        assert!(User { must_renew: true, ..u }.password_renew(10));
    }
}
