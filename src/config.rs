//! Configuration: built-in defaults < `config.toml` (or `--config PATH`) < `GATEHOUSE_*` environment,
//! nested keys joined by a double underscore (`GATEHOUSE_TOKENS__IDLE_TIMEOUT=600`).
//!
//! Durations are written as whole seconds (`600`) or as a human duration (`"10m"`, `"1h"`, `"250ms"`).
//! Every key, with its default, is listed in the repository's `config.toml`.

use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use figment::providers::{Env, Format, Serialized, Toml};
use figment::Figment;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Address the HTTP server listens on.
    pub listen: String,
    /// Directory holding gatehouse.db, master.key and the outbox.
    pub data_dir: PathBuf,
    /// Base URL used in links gatehouse hands out; empty = `http://{listen}`.
    pub public_url: String,
    /// Master key file; empty = `<data_dir>/master.key`, created on first start.
    pub master_key_file: PathBuf,
    /// error, warn, info, debug or trace.
    pub log_level: String,
    pub tokens: Tokens,
    pub reaper: Reaper,
    pub argon2: Argon2,
    pub passwords: Passwords,
    pub store: Store,
    pub http: Http,
    pub cms: Cms,
    pub links: Links,
    pub mail: Mail,
    pub iampass: Iampass,
    pub iqm: Iqm,
    pub oauth: Oauth,
    pub oidc: Oidc,
    pub throttle: Throttle,
    pub audit: Audit,
    pub tls: Tls,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Tokens {
    /// ForePaaS tokens: rejected after this long unused.
    pub idle_timeout: Seconds,
    /// ForePaaS tokens: rejected this long after they were issued, used or not.
    pub lifetime: Seconds,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Reaper {
    /// How often expired and revoked rows are deleted.
    pub interval: Seconds,
    /// Rows deleted per transaction: writes waiting meanwhile go between two batches.
    pub batch: u32,
    /// Tokens a sweep examines at most, going on where the last one stopped: a table of N tokens
    /// is walked through in N / scan sweeps (expired and idle tokens are refused meanwhile).
    pub scan: u32,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Argon2 {
    /// Memory cost in KiB (OWASP: 19456).
    pub memory_kib: u32,
    /// Passes over memory.
    pub iterations: u32,
    /// Lanes.
    pub parallelism: u32,
    /// Password hashes computed at once; 0 = the number of cores.
    pub workers: usize,
    /// Password hashes waiting for a worker; beyond this, sign-ins answer 503 with Retry-After.
    pub queue: usize,
    /// Lower the hashing threads' scheduling priority (setpriority) so that token checks come
    /// first. A seccomp filter that denies it (systemd's `SystemCallFilter=~@resources`) makes the
    /// call fail (EPERM), which is logged once and harmless; false skips the call altogether.
    pub lower_priority: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Passwords {
    /// Shortest password accepted when one is set.
    pub min_length: usize,
    /// A password older than this must be renewed (password_renew); 0 = never.
    pub max_age: Seconds,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Store {
    /// "sqlite" (one file in data_dir, the default) or "postgres" (shared by several nodes).
    pub backend: String,
    /// PostgreSQL: a libpq connection string or URL; several hosts with
    /// target_session_attrs=read-write follow a failover.
    pub postgres_url: String,
    /// PostgreSQL: PEM file of the CA certificates the server's certificate is checked against;
    /// empty: the system's CA roots.
    pub postgres_ca_file: PathBuf,
    /// PostgreSQL: pooled connections of this node.
    pub postgres_pool_size: u32,
    /// PostgreSQL: how long a request waits for a connection (or for the server to come back)
    /// before it is answered 503.
    pub postgres_connect_timeout: Seconds,
    /// Pooled SQLite connections.
    pub pool_size: u32,
    /// How long a writer waits for the database lock.
    pub busy_timeout: Seconds,
    /// SQLite synchronous mode under WAL: "full" (survives power loss) or "normal" (survives a crash
    /// of the process).
    pub synchronous: String,
    /// SQLite: MiB of the database file each connection reads through mmap instead of read calls
    /// (SQLite caps it at 2 GiB); 0 = none.
    pub mmap_mb: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Http {
    /// Largest request body accepted, in bytes; a larger Content-Length is refused before the body
    /// is read.
    pub max_body_bytes: usize,
    /// A request body must arrive whole within this long, or the request is answered 408.
    pub body_timeout: Seconds,
    /// A request's head (request line and headers) must arrive within this long of the connection
    /// opening, or the connection is closed.
    pub head_timeout: Seconds,
    /// Worker threads serving HTTP; 0 = the number of cores.
    pub workers: usize,
    /// On SIGTERM (or SIGINT), requests under way get this long to finish before the process
    /// exits; below systemd's and container runtimes' stop timeouts (90 s, 10 s... of which this
    /// leaves room to close the store).
    pub shutdown_timeout: Seconds,
    /// Connections open at once, all workers together; beyond, new ones wait in the listen backlog.
    pub max_connections: usize,
    /// Connections open at once from one client address (one IPv6 /64); beyond, new ones are closed
    /// at once. 0 = no cap. Connections from `trusted_proxies` are not counted.
    pub max_connections_per_address: usize,
    /// Reverse proxies whose X-Forwarded-For and X-Forwarded-Proto are believed: IP addresses or
    /// CIDR nets. Empty: the client is the TCP peer, and https only when gatehouse serves TLS.
    pub trusted_proxies: Vec<Net>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Cms {
    /// A CMS session unused this long ends; `sessionTimeout` reports it in milliseconds.
    pub session_timeout: Seconds,
    /// A CMS session ends this long after login, however much it is used.
    pub session_lifetime: Seconds,
    /// Mark the cmsSID cookie Secure even when gatehouse itself serves plain HTTP (behind a TLS proxy).
    pub secure_cookie: bool,
    /// `demoMode` of users whose record has none.
    pub demo_mode: String,
    /// `googleApiKey` in user objects; empty answers null.
    pub google_api_key: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Links {
    /// A password-reset link is good this long.
    pub reset_lifetime: Seconds,
    /// A device-registration link is good this long.
    pub register_lifetime: Seconds,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Iampass {
    /// A signed request's timestamp may differ from the server's clock by at most this much; its
    /// nonce is remembered until that timestamp plus this.
    pub timestamp_window: Seconds,
    /// A sign-in started by authenticate_user waits this long for the device's answer, then is
    /// `timeout`.
    pub approval_window: Seconds,
    /// The longest session authenticate_user may ask for (`duration_seconds`; 3600 when not given).
    pub max_session: Seconds,
    /// Sign-ins one user of one application may be asked for per minute.
    pub signins_per_user_minute: u32,
    /// Sign-ins one application may start per minute, for all its users.
    pub signins_per_app_minute: u32,
}

/// The standard doors (RFC 7662 introspection, RFC 7009 revocation) and forward auth.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Oauth {
    /// Applications that may introspect and revoke the tokens of every application (a resource
    /// server, a gateway). Any other application sees and revokes only its own tokens.
    pub trusted_clients: Vec<String>,
    /// Whether an introspection counts as a use of a token with an idle timeout.
    pub introspection_is_use: bool,
}

/// OpenID Connect: the provider's tokens, its SSO session and its signing keys.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Oidc {
    /// An id_token lives this long.
    pub id_token_lifetime: Seconds,
    /// An OpenID Connect access token lives this long (`expires_in`).
    pub access_lifetime: Seconds,
    /// A refresh token (scope offline_access) lives this long; it rotates on every use.
    pub refresh_lifetime: Seconds,
    /// The SSO session (the box's sign-in cookie) ends after this long without a sign-in through it.
    pub session_idle_timeout: Seconds,
    /// The SSO session ends this long after the person signed in, whatever its use.
    pub session_lifetime: Seconds,
    /// A rotated signing key is published in the JWKS this long before it signs: longer than any
    /// relying party caches the JWKS.
    pub key_publication_delay: Seconds,
    /// A device code (RFC 8628) lives this long.
    pub device_code_lifetime: Seconds,
    /// A device polls the token endpoint at most this often (`interval`).
    pub device_poll_interval: Seconds,
}

impl Default for Oidc {
    fn default() -> Self {
        Oidc {
            id_token_lifetime: Seconds::secs(3600),
            access_lifetime: Seconds::secs(3600),
            refresh_lifetime: Seconds::secs(30 * 86_400),
            session_idle_timeout: Seconds::secs(8 * 3600),
            session_lifetime: Seconds::secs(7 * 86_400),
            key_publication_delay: Seconds::secs(86_400),
            device_code_lifetime: Seconds::secs(600),
            device_poll_interval: Seconds::secs(5),
        }
    }
}

impl Oidc {
    fn validate(&self) -> Result<(), ConfigError> {
        for (key, v) in [
            ("oidc.id_token_lifetime", &self.id_token_lifetime),
            ("oidc.access_lifetime", &self.access_lifetime),
            ("oidc.session_idle_timeout", &self.session_idle_timeout),
            ("oidc.device_code_lifetime", &self.device_code_lifetime),
            ("oidc.device_poll_interval", &self.device_poll_interval),
        ] {
            if v.0 < Duration::from_secs(1) {
                return bad(key, "must be at least 1s");
            }
        }
        if self.refresh_lifetime.0 < self.access_lifetime.0 {
            return bad("oidc.refresh_lifetime", "must be at least oidc.access_lifetime");
        }
        if self.session_lifetime.0 < self.session_idle_timeout.0 {
            return bad("oidc.session_lifetime", "must be at least oidc.session_idle_timeout");
        }
        Ok(())
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Iqm {
    /// An IQM access token lives this long (`expires_in`).
    pub access_lifetime: Seconds,
    /// An IQM refresh token lives this long.
    pub refresh_lifetime: Seconds,
    /// A refresh token presented again within this long after its rotation is refused without
    /// revoking its family (two tabs refreshing at once); later, reuse revokes the family.
    pub refresh_reuse_grace: Seconds,
    /// `supportEmail` in the answer to a blocked user.
    pub support_email: String,
}

impl Default for Iqm {
    fn default() -> Self {
        Iqm {
            access_lifetime: Seconds::secs(86_400),
            refresh_lifetime: Seconds::secs(30 * 86_400),
            refresh_reuse_grace: Seconds::secs(0),
            support_email: "support@localhost".into(),
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Throttle {
    /// Failed sign-ins of one account within `window` that lock it out.
    pub account_failures: u32,
    /// Failed sign-ins from one client address within `window` that lock it out.
    pub address_failures: u32,
    pub window: Seconds,
    /// How long a lockout lasts.
    pub lockout: Seconds,
    /// Wait imposed on an account after its first failure; it doubles with each further one.
    pub delay: Seconds,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Audit {
    /// Security events older than this are deleted by the reaper.
    pub retention: Seconds,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Tls {
    /// PEM certificate chain; with `key_file`, gatehouse serves HTTPS only.
    pub cert_file: PathBuf,
    /// PEM private key of the certificate.
    pub key_file: PathBuf,
}

impl Tls {
    pub fn enabled(&self) -> bool {
        !self.cert_file.as_os_str().is_empty()
    }
}

impl Default for Audit {
    fn default() -> Self {
        Audit { retention: Seconds::secs(90 * 86_400) }
    }
}

impl Default for Throttle {
    fn default() -> Self {
        Throttle {
            account_failures: 5,
            address_failures: 50,
            window: Seconds::secs(300),
            lockout: Seconds::secs(300),
            delay: Seconds::secs(1),
        }
    }
}

impl Default for Iampass {
    fn default() -> Self {
        Iampass {
            timestamp_window: Seconds::secs(300),
            approval_window: Seconds::secs(120),
            max_session: Seconds::secs(86_400),
            signins_per_user_minute: 6,
            signins_per_app_minute: 600,
        }
    }
}

#[derive(Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Mail {
    /// Sender address of every message.
    pub from: String,
    /// SMTP server; empty = messages stay as files in `<data_dir>/outbox/`.
    pub smtp_host: String,
    pub smtp_port: u16,
    /// "starttls", "tls" (implicit TLS) or "none" (plain, to a loopback host only).
    pub smtp_security: String,
    pub smtp_username: String,
    pub smtp_password: String,
    /// First wait after a failed send; doubles on each failure up to `retry_max`.
    pub retry_initial: Seconds,
    pub retry_max: Seconds,
    /// Reset mails one account may be sent in an hour; beyond, requests are answered alike and
    /// send nothing (nor void the live link).
    pub resets_per_account_hour: u32,
    /// Reset requests one client address may make in an hour, matched or not.
    pub resets_per_address_hour: u32,
    /// Free space (MiB) kept on the data directory's file system: below it no new mail or text
    /// message is written, so that the database keeps room to work.
    pub min_free_mb: u64,
}

impl fmt::Debug for Mail {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Mail")
            .field("from", &self.from)
            .field("smtp_host", &self.smtp_host)
            .field("smtp_port", &self.smtp_port)
            .field("smtp_security", &self.smtp_security)
            .field("smtp_username", &self.smtp_username)
            .field("smtp_password", &if self.smtp_password.is_empty() { "" } else { "***" })
            .finish()
    }
}

impl Default for Cms {
    fn default() -> Self {
        Cms {
            session_timeout: Seconds::secs(86_400),
            session_lifetime: Seconds::secs(7 * 86_400),
            secure_cookie: false,
            demo_mode: "NO".into(),
            google_api_key: String::new(),
        }
    }
}

impl Default for Links {
    fn default() -> Self {
        Links { reset_lifetime: Seconds::secs(3600), register_lifetime: Seconds::secs(86_400) }
    }
}

impl Default for Mail {
    fn default() -> Self {
        Mail {
            from: "gatehouse@localhost".into(),
            smtp_host: String::new(),
            smtp_port: 587,
            smtp_security: "starttls".into(),
            smtp_username: String::new(),
            smtp_password: String::new(),
            retry_initial: Seconds::secs(1),
            retry_max: Seconds::secs(300),
            resets_per_account_hour: 3,
            resets_per_address_hour: 30,
            min_free_mb: 64,
        }
    }
}

impl Default for Config {
    fn default() -> Self {
        Config {
            listen: "127.0.0.1:8080".into(),
            data_dir: PathBuf::from("./data"),
            public_url: String::new(),
            master_key_file: PathBuf::new(),
            log_level: "info".into(),
            tokens: Tokens::default(),
            reaper: Reaper::default(),
            argon2: Argon2::default(),
            passwords: Passwords::default(),
            store: Store::default(),
            http: Http::default(),
            cms: Cms::default(),
            links: Links::default(),
            mail: Mail::default(),
            iampass: Iampass::default(),
            iqm: Iqm::default(),
            oauth: Oauth::default(),
            oidc: Oidc::default(),
            throttle: Throttle::default(),
            audit: Audit::default(),
            tls: Tls::default(),
        }
    }
}

impl Default for Tokens {
    fn default() -> Self {
        Tokens { idle_timeout: Seconds::secs(3600), lifetime: Seconds::secs(86_400) }
    }
}

impl Default for Reaper {
    fn default() -> Self {
        Reaper { interval: Seconds::secs(60), batch: 250, scan: 1_000_000 }
    }
}

impl Default for Argon2 {
    fn default() -> Self {
        Argon2 { memory_kib: 19_456, iterations: 2, parallelism: 1, workers: 0, queue: 64, lower_priority: true }
    }
}

impl Default for Passwords {
    fn default() -> Self {
        Passwords { min_length: 8, max_age: Seconds::secs(0) }
    }
}

impl Default for Store {
    fn default() -> Self {
        Store {
            backend: "sqlite".into(),
            postgres_url: String::new(),
            postgres_ca_file: PathBuf::new(),
            postgres_pool_size: 16,
            postgres_connect_timeout: Seconds::secs(3),
            pool_size: 8,
            busy_timeout: Seconds::secs(5),
            synchronous: "full".into(),
            mmap_mb: 2048,
        }
    }
}

impl Default for Http {
    fn default() -> Self {
        Http {
            max_body_bytes: 64 * 1024,
            body_timeout: Seconds::secs(10),
            head_timeout: Seconds::secs(5),
            workers: 0,
            shutdown_timeout: Seconds::secs(8),
            max_connections: 16_384,
            max_connections_per_address: 1024,
            trusted_proxies: Vec::new(),
        }
    }
}

/// A configuration error: one line that names the key and what was wrong.
#[derive(Debug)]
pub struct ConfigError(pub String);

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "configuration: {}", self.0)
    }
}

impl std::error::Error for ConfigError {}

impl Config {
    /// Loads defaults < `config.toml` in the working directory (or `path`, which must exist) <
    /// the `GATEHOUSE_*` environment, and checks every value.
    pub fn load(path: Option<&Path>) -> Result<Config, ConfigError> {
        let file = match path {
            // Not only a regular file: `--config /dev/null` (or a pipe) is an empty configuration.
            Some(p) => {
                if !p.exists() || p.is_dir() {
                    return Err(ConfigError(format!("file {} not found", p.display())));
                }
                p.to_path_buf()
            }
            None => PathBuf::from("config.toml"),
        };
        let mut figment = Figment::from(Serialized::defaults(Config::default()));
        if file.exists() && !file.is_dir() {
            figment = figment.merge(Toml::file_exact(&file));
        }
        let figment = figment.merge(Env::prefixed("GATEHOUSE_").split("__"));
        let config: Config = figment.extract().map_err(|e| ConfigError(figment_error_line(e)))?;
        config.validate()?;
        Ok(config)
    }

    /// Checks the values that parse but make no sense: the first bad key is named, section by
    /// section.
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.validate_top_level()?;
        self.tokens.validate()?;
        self.reaper.validate()?;
        self.argon2.validate()?;
        self.passwords.validate()?;
        self.store.validate()?;
        self.cms.validate()?;
        self.links.validate()?;
        self.iqm.validate()?;
        self.oidc.validate()?;
        self.throttle.validate()?;
        self.tls.validate()?;
        self.iampass.validate()?;
        self.mail.validate()?;
        self.http.validate()
    }

    /// The keys outside any section.
    fn validate_top_level(&self) -> Result<(), ConfigError> {
        if self.listen.parse::<SocketAddr>().is_err() {
            return bad("listen", format!("{:?} is not an address like 127.0.0.1:8080", self.listen));
        }
        let url_ok = |u: &str| u.is_empty() || u.starts_with("http://") || u.starts_with("https://");
        if !url_ok(&self.public_url) {
            return bad("public_url", "must start with http:// or https://");
        }
        if self.data_dir.as_os_str().is_empty() {
            return bad("data_dir", "must not be empty");
        }
        if self.log_level.parse::<log::LevelFilter>().is_err() {
            return bad("log_level", format!("{:?} is not one of error, warn, info, debug, trace", self.log_level));
        }
        Ok(())
    }

    /// Base URL for links, without a trailing slash.
    pub fn public_url(&self) -> String {
        if self.public_url.is_empty() {
            let scheme = if self.tls.enabled() { "https" } else { "http" };
            format!("{scheme}://{}", self.listen)
        } else {
            self.public_url.trim_end_matches('/').to_string()
        }
    }

    pub fn db_path(&self) -> PathBuf {
        self.data_dir.join("gatehouse.db")
    }

    pub fn master_key_path(&self) -> PathBuf {
        if self.master_key_file.as_os_str().is_empty() {
            self.data_dir.join("master.key")
        } else {
            self.master_key_file.clone()
        }
    }

    pub fn hash_workers(&self) -> usize {
        if self.argon2.workers == 0 {
            cores()
        } else {
            self.argon2.workers
        }
    }

    pub fn http_workers(&self) -> usize {
        if self.http.workers == 0 {
            cores()
        } else {
            self.http.workers
        }
    }
}

/// A bad value: the key and what is wrong with it.
fn bad(key: &str, why: impl fmt::Display) -> Result<(), ConfigError> {
    Err(ConfigError(format!("key `{key}`: {why}")))
}

impl Tokens {
    fn validate(&self) -> Result<(), ConfigError> {
        if self.idle_timeout.0.is_zero() {
            return bad("tokens.idle_timeout", "must be more than 0");
        }
        if self.lifetime.0.is_zero() {
            return bad("tokens.lifetime", "must be more than 0");
        }
        Ok(())
    }
}

impl Reaper {
    fn validate(&self) -> Result<(), ConfigError> {
        if self.interval.0 < Duration::from_millis(100) {
            return bad("reaper.interval", "must be at least 100ms");
        }
        if self.batch == 0 {
            return bad("reaper.batch", "must be at least 1");
        }
        if self.scan < self.batch {
            return bad("reaper.scan", "must be at least reaper.batch");
        }
        Ok(())
    }
}

impl Argon2 {
    fn validate(&self) -> Result<(), ConfigError> {
        // OWASP's floor for Argon2id: 7 MiB with 5 passes up to 19 MiB with 2. We hold the memory
        // floor at 7168 KiB and the passes at 1..=16 so a typo cannot make hashes cheap to guess.
        if self.memory_kib < 7168 {
            return bad("argon2.memory_kib", format!("{} is below the minimum of 7168", self.memory_kib));
        }
        if self.memory_kib > 4 * 1024 * 1024 {
            return bad("argon2.memory_kib", "is above 4 GiB");
        }
        if !(1..=16).contains(&self.iterations) {
            return bad("argon2.iterations", "must be between 1 and 16");
        }
        if u64::from(self.memory_kib) * u64::from(self.iterations) < 7168 * 2 {
            return bad("argon2", "memory_kib x iterations is below OWASP's minimum (7168 x 2)");
        }
        if !(1..=16).contains(&self.parallelism) {
            return bad("argon2.parallelism", "must be between 1 and 16");
        }
        if self.queue == 0 {
            return bad("argon2.queue", "must be at least 1");
        }
        Ok(())
    }
}

impl Passwords {
    fn validate(&self) -> Result<(), ConfigError> {
        if self.min_length < 8 {
            return bad("passwords.min_length", "must be at least 8");
        }
        Ok(())
    }
}

impl Store {
    fn validate(&self) -> Result<(), ConfigError> {
        match self.backend.as_str() {
            "sqlite" => {}
            "postgres" if self.postgres_url.trim().is_empty() => {
                return bad("store.postgres_url", "must be set when store.backend is \"postgres\"");
            }
            "postgres" => {}
            other => return bad("store.backend", format!("{other:?} is not \"sqlite\" or \"postgres\"")),
        }
        if self.postgres_pool_size == 0 {
            return bad("store.postgres_pool_size", "must be at least 1");
        }
        if self.postgres_connect_timeout.0 < Duration::from_millis(100) {
            return bad("store.postgres_connect_timeout", "must be at least 100ms");
        }
        if self.pool_size == 0 {
            return bad("store.pool_size", "must be at least 1");
        }
        if !matches!(self.synchronous.as_str(), "full" | "normal") {
            return bad("store.synchronous", format!("{:?} is not \"full\" or \"normal\"", self.synchronous));
        }
        Ok(())
    }
}

impl Cms {
    fn validate(&self) -> Result<(), ConfigError> {
        if self.session_timeout.0.is_zero() {
            return bad("cms.session_timeout", "must be more than 0");
        }
        if self.session_lifetime.0 < self.session_timeout.0 {
            return bad("cms.session_lifetime", "must be at least cms.session_timeout");
        }
        Ok(())
    }
}

impl Links {
    fn validate(&self) -> Result<(), ConfigError> {
        if self.reset_lifetime.0.is_zero() {
            return bad("links.reset_lifetime", "must be more than 0");
        }
        if self.register_lifetime.0.is_zero() {
            return bad("links.register_lifetime", "must be more than 0");
        }
        Ok(())
    }
}

impl Iqm {
    fn validate(&self) -> Result<(), ConfigError> {
        if self.access_lifetime.0 < Duration::from_secs(1) {
            return bad("iqm.access_lifetime", "must be at least 1s");
        }
        if self.refresh_lifetime.0 < self.access_lifetime.0 {
            return bad("iqm.refresh_lifetime", "must be at least iqm.access_lifetime");
        }
        Ok(())
    }
}

impl Throttle {
    fn validate(&self) -> Result<(), ConfigError> {
        if self.account_failures == 0 || self.address_failures == 0 {
            return bad("throttle", "account_failures and address_failures must be at least 1");
        }
        if self.window.0.is_zero() {
            return bad("throttle.window", "must be more than 0");
        }
        Ok(())
    }
}

impl Tls {
    fn validate(&self) -> Result<(), ConfigError> {
        if self.cert_file.as_os_str().is_empty() != self.key_file.as_os_str().is_empty() {
            return bad("tls", "set both cert_file and key_file, or neither");
        }
        for (key, path) in [("tls.cert_file", &self.cert_file), ("tls.key_file", &self.key_file)] {
            if !path.as_os_str().is_empty() && !path.is_file() {
                return bad(key, format!("{} is not a readable file", path.display()));
            }
        }
        Ok(())
    }
}

impl Iampass {
    fn validate(&self) -> Result<(), ConfigError> {
        if self.timestamp_window.0 < Duration::from_secs(1) {
            return bad("iampass.timestamp_window", "must be at least 1s");
        }
        if self.approval_window.0 < Duration::from_secs(1) {
            return bad("iampass.approval_window", "must be at least 1s");
        }
        if self.max_session.0 < Duration::from_secs(60) {
            return bad("iampass.max_session", "must be at least 60s");
        }
        if self.signins_per_user_minute == 0 || self.signins_per_app_minute == 0 {
            return bad("iampass.signins_per_user_minute", "the sign-in limits must be at least 1");
        }
        Ok(())
    }
}

impl Mail {
    fn validate(&self) -> Result<(), ConfigError> {
        if !self.from.contains('@') || self.from.chars().any(char::is_control) {
            return bad("mail.from", format!("{:?} is not an email address", self.from));
        }
        if !matches!(self.smtp_security.as_str(), "starttls" | "tls" | "none") {
            return bad("mail.smtp_security", "must be \"starttls\", \"tls\" or \"none\"");
        }
        let loopback = matches!(self.smtp_host.as_str(), "localhost" | "127.0.0.1" | "::1");
        if self.smtp_security == "none" && !self.smtp_host.is_empty() && !loopback {
            return bad("mail.smtp_security", "\"none\" (no TLS) is allowed only to a loopback smtp_host");
        }
        if self.resets_per_account_hour == 0 {
            return bad("mail.resets_per_account_hour", "must be at least 1");
        }
        if self.resets_per_address_hour == 0 {
            return bad("mail.resets_per_address_hour", "must be at least 1");
        }
        if self.retry_initial.0.is_zero() || self.retry_max.0 < self.retry_initial.0 {
            return bad("mail.retry_max", "retry_initial must be more than 0 and retry_max at least retry_initial");
        }
        Ok(())
    }
}

impl Http {
    fn validate(&self) -> Result<(), ConfigError> {
        if self.max_body_bytes < 1024 {
            return bad("http.max_body_bytes", "must be at least 1024");
        }
        if self.body_timeout.0 < Duration::from_millis(100) {
            return bad("http.body_timeout", "must be at least 100ms");
        }
        if self.head_timeout.0 < Duration::from_millis(100) {
            return bad("http.head_timeout", "must be at least 100ms");
        }
        if !(1..=10_000_000).contains(&self.max_connections) {
            return bad("http.max_connections", "must be between 1 and 10000000");
        }
        for net in &self.trusted_proxies {
            if !net.is_network() {
                let why = format!("{net} has bits set after its prefix; write {}", Net::new(net.addr, net.prefix));
                return bad("http.trusted_proxies", why);
            }
        }
        Ok(())
    }
}

fn cores() -> usize {
    std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1)
}

/// figment's message, on one line, with the key named the way config.toml writes it.
fn figment_error_line(e: figment::Error) -> String {
    let key = e.path.join(".");
    let mut kind = e.kind.to_string();
    if let Some(meta) = &e.metadata {
        kind = format!("{kind} (from {})", meta.name);
    }
    let line = if key.is_empty() { kind } else { format!("key `{key}`: {kind}") };
    line.replace('\n', " ")
}

/// An IP address or a CIDR net (`10.0.0.0/8`, `fd00::/8`), read and written as text. An IPv4
/// address mapped into IPv6 (`::ffff:10.1.2.3`) is taken as the IPv4 address.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Net {
    pub addr: IpAddr,
    pub prefix: u8,
}

impl Net {
    /// The net of `addr`'s first `prefix` bits (the bits after them cleared).
    pub fn new(addr: IpAddr, prefix: u8) -> Net {
        let addr = addr.to_canonical();
        let prefix = prefix.min(Net::bits(addr));
        Net { addr: Net::mask(addr, prefix), prefix }
    }

    fn bits(addr: IpAddr) -> u8 {
        if addr.is_ipv4() {
            32
        } else {
            128
        }
    }

    fn mask(addr: IpAddr, prefix: u8) -> IpAddr {
        match addr {
            IpAddr::V4(a) => {
                let keep = u32::MAX.checked_shl(32 - u32::from(prefix)).unwrap_or(0);
                IpAddr::V4((u32::from(a) & keep).into())
            }
            IpAddr::V6(a) => {
                let keep = u128::MAX.checked_shl(128 - u32::from(prefix)).unwrap_or(0);
                IpAddr::V6((u128::from(a) & keep).into())
            }
        }
    }

    /// False when `addr` has bits set after the prefix (`10.0.0.1/8`): most likely a typo.
    pub fn is_network(&self) -> bool {
        Net::mask(self.addr, self.prefix) == self.addr
    }

    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = ip.to_canonical();
        ip.is_ipv4() == self.addr.is_ipv4() && Net::mask(ip, self.prefix) == Net::mask(self.addr, self.prefix)
    }
}

impl fmt::Display for Net {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.prefix == Net::bits(self.addr) {
            write!(f, "{}", self.addr)
        } else {
            write!(f, "{}/{}", self.addr, self.prefix)
        }
    }
}

impl fmt::Debug for Net {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl std::str::FromStr for Net {
    type Err = String;

    fn from_str(s: &str) -> Result<Net, String> {
        let bad = || format!("{s:?} is not an IP address or a CIDR net like 10.0.0.0/8");
        let (addr, prefix) = match s.trim().split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (s.trim(), None),
        };
        let written: IpAddr = addr.parse().map_err(|_| bad())?;
        let addr = written.to_canonical();
        let prefix = match prefix {
            None => Net::bits(addr),
            Some(p) if !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()) => {
                let p = p.parse::<u8>().map_err(|_| bad())?;
                // `::ffff:10.0.0.0/104` is `10.0.0.0/8`.
                let p = if written.is_ipv6() && addr.is_ipv4() { p.checked_sub(96).ok_or_else(bad)? } else { p };
                if p > Net::bits(addr) {
                    return Err(bad());
                }
                p
            }
            Some(_) => return Err(bad()),
        };
        // Kept as written, so that `validate` can name a net with host bits set.
        Ok(Net { addr, prefix })
    }
}

impl Serialize for Net {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Net {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

/// A duration read from whole seconds (`600`) or a human duration (`"10m"`, `"250ms"`).
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Seconds(pub Duration);

impl Seconds {
    pub const fn secs(s: u64) -> Self {
        Seconds(Duration::from_secs(s))
    }

    pub fn millis(&self) -> i64 {
        i64::try_from(self.0.as_millis()).unwrap_or(i64::MAX)
    }
}

impl fmt::Debug for Seconds {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", humantime::format_duration(self.0))
    }
}

impl Serialize for Seconds {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        if self.0.subsec_nanos() == 0 {
            s.serialize_u64(self.0.as_secs())
        } else {
            s.serialize_str(&humantime::format_duration(self.0).to_string())
        }
    }
}

impl<'de> Deserialize<'de> for Seconds {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl serde::de::Visitor<'_> for V {
            type Value = Seconds;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("whole seconds or a duration like \"10m\"")
            }
            fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<Seconds, E> {
                Ok(Seconds::secs(v))
            }
            fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<Seconds, E> {
                u64::try_from(v).map(Seconds::secs).map_err(|_| E::custom("a duration cannot be negative"))
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Seconds, E> {
                if let Ok(n) = v.trim().parse::<u64>() {
                    return Ok(Seconds::secs(n));
                }
                humantime::parse_duration(v.trim())
                    .map(Seconds)
                    .map_err(|e| E::custom(format!("{v:?} is not a duration ({e})")))
            }
        }
        d.deserialize_any(V)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid_and_as_documented() {
        let c = Config::default();
        c.validate().unwrap();
        assert_eq!(c.listen, "127.0.0.1:8080");
        assert_eq!(c.public_url(), "http://127.0.0.1:8080");
        assert_eq!(c.tokens.idle_timeout.0, Duration::from_secs(3600));
        assert_eq!(c.tokens.lifetime.0, Duration::from_secs(86400));
        assert_eq!((c.argon2.memory_kib, c.argon2.iterations, c.argon2.parallelism), (19456, 2, 1));
    }

    #[test]
    fn the_repository_config_toml_lists_every_key_with_its_default() {
        let text = include_str!("../config.toml");
        let file: Config = Figment::from(Toml::string(text)).extract().unwrap();
        let as_json = |c: &Config| serde_json::to_value(c).unwrap();
        assert_eq!(as_json(&file), as_json(&Config::default()));
        // Every key is written out, not left to the default.
        let table: toml_keys::Table = toml_keys::parse(text);
        let defaults = serde_json::to_value(Config::default()).unwrap();
        assert_eq!(table, toml_keys::from_json(&defaults));
    }

    /// Just enough TOML-key reading to tell which keys a file spells out.
    mod toml_keys {
        pub type Table = std::collections::BTreeSet<String>;

        pub fn parse(text: &str) -> Table {
            let mut section = String::new();
            let mut keys = Table::new();
            for line in text.lines().map(str::trim).filter(|l| !l.is_empty() && !l.starts_with('#')) {
                if let Some(name) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
                    section = format!("{name}.");
                } else if let Some((key, _)) = line.split_once('=') {
                    keys.insert(format!("{section}{}", key.trim()));
                }
            }
            keys
        }

        pub fn from_json(v: &serde_json::Value) -> Table {
            let mut keys = Table::new();
            for (k, v) in v.as_object().unwrap() {
                match v.as_object() {
                    Some(inner) => keys.extend(inner.keys().map(|i| format!("{k}.{i}"))),
                    None => {
                        keys.insert(k.clone());
                    }
                }
            }
            keys
        }
    }

    #[test]
    fn http_limits_are_checked() {
        let check = |tweak: fn(&mut Http)| {
            let mut c = Config::default();
            tweak(&mut c.http);
            c.validate().err().map(|e| e.to_string()).unwrap_or_default()
        };
        assert!(check(|h| h.body_timeout = Seconds::secs(0)).contains("http.body_timeout"));
        assert!(check(|h| h.head_timeout = Seconds(Duration::from_millis(50))).contains("http.head_timeout"));
        assert!(check(|h| h.max_connections = 0).contains("http.max_connections"));
        assert_eq!(check(|h| h.max_connections_per_address = 0), "", "0 turns the cap off");
    }

    #[test]
    fn nets_read_addresses_and_cidr() {
        let net = |s: &str| s.parse::<Net>();
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        let n = net("10.0.0.0/8").unwrap();
        assert!(n.contains(ip("10.200.1.2")) && !n.contains(ip("11.0.0.1")));
        assert!(n.contains(ip("::ffff:10.1.2.3")), "an IPv4 address mapped into IPv6 is the IPv4 address");
        assert!(!n.contains(ip("::a00:1")));
        let one = net("127.0.0.1").unwrap();
        assert!(one.contains(ip("127.0.0.1")) && !one.contains(ip("127.0.0.2")));
        assert!(net("fd00::/8").unwrap().contains(ip("fdab::1")));
        assert_eq!(net("::ffff:10.0.0.0/104").unwrap(), n);
        assert!(net("0.0.0.0/0").unwrap().contains(ip("192.0.2.1")));
        for bad in ["", "10.0.0.0/33", "10.0.0.0/", "10.0.0.0/+8", "10.0.0/8", "host.example", "::/129"] {
            assert!(net(bad).is_err(), "{bad:?}");
        }
        assert_eq!(net("10.0.0.0/8").unwrap().to_string(), "10.0.0.0/8");
        assert_eq!(net("::1").unwrap().to_string(), "::1");
        let mut c = Config::default();
        c.http.trusted_proxies = vec![net("10.0.0.1/8").unwrap()];
        let e = c.validate().unwrap_err().to_string();
        assert!(e.contains("http.trusted_proxies") && e.contains("write 10.0.0.0/8"), "{e}");
        let read: Http =
            Figment::from(Toml::string("trusted_proxies = [\"127.0.0.1\", \"10.0.0.0/8\"]")).extract().unwrap();
        assert_eq!(read.trusted_proxies, vec![one, n]);
        assert!(Figment::from(Toml::string("trusted_proxies = [\"localhost\"]")).extract::<Http>().is_err());
    }

    #[test]
    fn durations_read_seconds_and_human_forms() {
        let read = |s: &str| serde_json::from_str::<Seconds>(s).unwrap().0;
        assert_eq!(read("600"), Duration::from_secs(600));
        assert_eq!(read("\"600\""), Duration::from_secs(600));
        assert_eq!(read("\"10m\""), Duration::from_secs(600));
        assert_eq!(read("\"250ms\""), Duration::from_millis(250));
        assert!(serde_json::from_str::<Seconds>("-1").is_err());
        assert!(serde_json::from_str::<Seconds>("\"soon\"").is_err());
    }
}
