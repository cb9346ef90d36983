//! The command line: `gatehouse serve` and the admin commands, on the same configuration and data
//! directory as the server (also while it runs: SQLite in WAL mode lets both work at once).

use std::io::BufRead;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use clap::{Parser, Subcommand, ValueEnum};

use crate::config::Config;
use crate::core::text::escape;
use crate::core::users::NewUser;
use crate::core::{iso8601, Core, Secret, APP_CMS, APP_FOREPAAS};

/// What `--help` says of the environment, beside the flags.
const ENVIRONMENT: &str = "\
Configuration: built-in defaults < the config file < GATEHOUSE_* variables < serve's flags.
Every key of config.toml has a variable: GATEHOUSE_ and the key in capitals, a section joined by
a double underscore, e.g.
  GATEHOUSE_LISTEN=0.0.0.0:8080         GATEHOUSE_DATA_DIR=/var/lib/gatehouse
  GATEHOUSE_PUBLIC_URL=https://box/     GATEHOUSE_LOG_LEVEL=debug
  GATEHOUSE_TLS__CERT_FILE=...          GATEHOUSE_MAIL__SMTP_PASSWORD=...
  GATEHOUSE_STORE__BACKEND=postgres     GATEHOUSE_STORE__POSTGRES_URL=postgres://...
RUST_LOG, when set, replaces log_level (it may print what dependencies print).

Exit codes: 0 success, 1 failure (one line on standard error), 2 usage or configuration error.";

#[derive(Parser)]
#[command(
    name = "gatehouse",
    version,
    about = "One identity store, four wire-compatible authentication APIs",
    after_help = ENVIRONMENT
)]
struct Cli {
    /// Configuration file (default: ./config.toml when it exists; /dev/null for none)
    #[arg(long, global = true, value_name = "PATH")]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Serve every API (what a bare `gatehouse` does)
    Serve {
        /// Address and port to listen on (the config's `listen`), e.g. 0.0.0.0:8080
        #[arg(long, value_name = "ADDR")]
        listen: Option<String>,
        /// Data directory (the config's `data_dir`): database, master key, outbox
        #[arg(long, value_name = "DIR")]
        data: Option<PathBuf>,
    },
    /// Ask the server on this configuration's `listen` address whether it is healthy (GET /healthz):
    /// exit 0 when it answers 200, 1 otherwise; for a container's HEALTHCHECK (no shell or curl)
    Healthcheck {
        /// Ask this address instead, e.g. 127.0.0.1:8080
        #[arg(long, value_name = "ADDR")]
        addr: Option<String>,
        /// Give up after this many seconds
        #[arg(long, default_value_t = 5, value_name = "SECONDS")]
        timeout: u64,
    },
    /// Applications: the IAMPASS applications and IQM clients, beside the built-in forepaas and cms
    #[command(subcommand)]
    App(AppCommand),
    /// The OpenID Connect provider
    #[command(subcommand)]
    Oidc(OidcCommand),
    /// Users and their memberships
    #[command(subcommand)]
    User(UserCommand),
    /// API keys for the ForePaaS `apikey` login
    #[command(subcommand)]
    Apikey(ApikeyCommand),
    /// Write a consistent copy of the database to FILE, also while the server runs, sealed by
    /// the master key in FILE.mac
    Backup {
        /// Where to write the copy (mode 0600; its seal goes to FILE.mac)
        file: PathBuf,
    },
    /// Replace the database of a stopped data directory with the backup FILE, once its seal
    /// (FILE.mac) and its schema are checked
    Restore {
        /// A file written by `gatehouse backup`
        file: PathBuf,
        /// Take a backup without FILE.mac (an older gatehouse's, or one copied by hand): its
        /// schema is still checked, but its rows cannot be told from edited ones
        #[arg(long)]
        unsealed: bool,
    },
    /// Copy a SQLite database (the data directory's, or a backup) into the configured PostgreSQL
    MigrateStore {
        /// The backend to copy from (sqlite)
        #[arg(long, value_enum)]
        from: Backend,
        /// The backend to copy into (postgres, as configured by store.postgres_url)
        #[arg(long, value_enum)]
        to: Backend,
        /// The SQLite file to copy (default: gatehouse.db in data_dir)
        #[arg(long, value_name = "FILE")]
        sqlite_file: Option<PathBuf>,
    },
    /// Time Argon2id verifies with the configured parameters (for bench/run)
    #[command(hide = true)]
    Argon2Bench {
        /// Verifies to time
        #[arg(long, default_value_t = 20)]
        rounds: u32,
    },
    /// Print security events (sign-ins, lockouts, users, devices, resets), oldest first
    Audit {
        /// Only events this recent, e.g. 1h or 7d (default: all that are kept)
        #[arg(long, value_name = "DURATION")]
        since: Option<String>,
        /// Only events of this login
        #[arg(long, value_name = "LOGIN")]
        user: Option<String>,
    },
}

/// A secret an operator gives for an application is at least as long as a generated one's
/// 32 random bytes, unless they insist (`--allow-short-secret`).
const MIN_GIVEN_SECRET: usize = 32;

#[derive(Subcommand)]
enum AppCommand {
    /// Add an application; prints its generated secret as the last word
    Add {
        /// The application id (1 to 64 of A-Z a-z 0-9 - _ .)
        id: String,
        /// Read the secret from the first line of standard input instead of generating one
        /// (at least 32 bytes)
        #[arg(long)]
        secret_stdin: bool,
        /// Accept a given secret shorter than 32 bytes (16 at the least), for a client that
        /// cannot hold a longer one
        #[arg(long, requires = "secret_stdin")]
        allow_short_secret: bool,
        /// A door the secret opens (repeat for several): iampass (signed management and
        /// authentication calls), iqm (IQM client credentials), oauth (introspection and
        /// revocation of the application's own tokens), oidc (an OpenID Connect client; implied
        /// by any of the client options below)
        #[arg(long = "door", value_name = "DOOR", required_unless_present_any = ["redirect_uris", "public"])]
        doors: Vec<DoorArg>,
        /// An OpenID Connect client with no secret (a single-page or native app): PKCE required
        #[arg(long, conflicts_with = "secret_stdin")]
        public: bool,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Show an application, and its OpenID Connect client settings
    Show {
        /// The application id
        id: String,
    },
    /// Change an application's OpenID Connect client settings (it becomes a client if it was not)
    Edit {
        /// The application id
        id: String,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Whether a user who has a second factor may sign in to the application with a bare password
    /// at a vendor API that has no place for the second factor (default: may)
    RequireSecondFactor {
        /// The application id
        id: String,
        /// true: refuse the bare password of users with a second factor; false: accept it
        #[arg(value_name = "BOOL", action = clap::ArgAction::Set)]
        required: bool,
    },
    /// Give a confidential application a new secret, shown once; the old one stops working at once
    RotateSecret {
        /// The application id
        id: String,
    },
    /// Set the doors an application's secret opens (replacing the ones it had); a running
    /// server follows at once
    Doors {
        /// The application id
        id: String,
        /// A door the secret opens (repeat for several): iampass, iqm, oauth
        #[arg(long = "door", value_name = "DOOR", required = true)]
        doors: Vec<DoorArg>,
    },
    /// List applications
    List,
}

#[derive(Subcommand)]
enum OidcCommand {
    /// Make the next signing key of each algorithm (or of one): published in the JWKS at once,
    /// signing after `oidc.key_publication_delay`; the old key stays published until every token
    /// it signed has expired
    RotateKeys {
        /// Only this algorithm
        #[arg(long, value_name = "ALG", value_parser = ["RS256", "ES256", "EdDSA"])]
        alg: Option<String>,
    },
}

fn rotate_keys(core: &Core, alg: Option<String>) -> Result<(), String> {
    let alg = alg.as_deref().and_then(crate::core::keys::Alg::parse);
    for r in core.rotate_signing_keys(alg).map_err(said)? {
        let pending = if r.created { "" } else { " (a rotation was pending already)" };
        println!("{} {} signs from {}{pending}", r.alg.as_str(), r.kid, crate::core::iso8601(r.signs_from));
    }
    Ok(())
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum DoorArg {
    Iampass,
    Iqm,
    Oauth,
    Oidc,
}

/// An OpenID Connect client's settings, for `app add` and `app edit`.
#[derive(clap::Args)]
struct ClientArgs {
    /// A redirect URI, matched exactly (repeat for several; replaces the list on edit)
    #[arg(long = "redirect-uri", value_name = "URI")]
    redirect_uris: Vec<String>,
    /// Where RP-initiated logout may send the browser back to (repeat for several)
    #[arg(long = "post-logout-redirect-uri", value_name = "URI")]
    post_logout_uris: Vec<String>,
    /// The client's back-channel logout URI
    #[arg(long = "backchannel-logout-uri", value_name = "URI")]
    backchannel_uri: Option<String>,
    /// No consent screen (an application of the box's own operator)
    #[arg(long, num_args = 0..=1, default_missing_value = "true", value_name = "BOOL")]
    first_party: Option<bool>,
    /// Every active user may sign in, not only the application's members
    #[arg(long, num_args = 0..=1, default_missing_value = "true", value_name = "BOOL")]
    open: Option<bool>,
    /// The id_token's signing algorithm
    #[arg(long = "signing-alg", value_name = "ALG", value_parser = ["RS256", "ES256", "EdDSA"])]
    signing_alg: Option<String>,
    /// Put the profile, email and groups claims in the id_token too, not only in userinfo
    #[arg(long, num_args = 0..=1, default_missing_value = "true", value_name = "BOOL")]
    claims_in_id_token: Option<bool>,
}

impl ClientArgs {
    fn settings(self) -> crate::core::oidc::ClientSettings {
        let list = |v: Vec<String>| (!v.is_empty()).then_some(v);
        crate::core::oidc::ClientSettings {
            redirect_uris: list(self.redirect_uris),
            post_logout_uris: list(self.post_logout_uris),
            backchannel_uri: self.backchannel_uri.map(|u| (!u.is_empty()).then_some(u)),
            first_party: self.first_party,
            open: self.open,
            signing_alg: self.signing_alg,
            claims_in_id_token: self.claims_in_id_token,
        }
    }
}

fn doors_of(args: &[DoorArg]) -> Vec<crate::core::apps::Door> {
    use crate::core::apps::Door;
    args.iter()
        .map(|d| match d {
            DoorArg::Iampass => Door::Iampass,
            DoorArg::Iqm => Door::Iqm,
            DoorArg::Oauth => Door::Oauth,
            DoorArg::Oidc => Door::Oidc,
        })
        .collect()
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Backend {
    Sqlite,
    Postgres,
}

#[derive(Clone, Copy, ValueEnum)]
#[value(rename_all = "UPPER")]
enum UserType {
    Admin,
    Owner,
    User,
}

#[derive(Subcommand)]
enum UserCommand {
    /// Add a user (a member of forepaas and cms unless --app is given)
    Add(UserAdd),
    /// Make a user a member of an application
    Grant {
        /// The user's login
        login: String,
        /// The application id
        app: String,
    },
    /// End a membership, with the user's tokens and API keys for that application
    Revoke {
        /// The user's login
        login: String,
        /// The application id
        app: String,
    },
    /// Block a user and end their sessions
    Block {
        /// The user's login
        login: String,
    },
    /// Unblock a user
    Unblock {
        /// The user's login
        login: String,
    },
    /// Remove every second factor of a user (TOTP, passkeys, recovery codes): for one who lost
    /// them all; their next sign-in asks for the password only
    ResetSecondFactors {
        /// The user's login
        login: String,
    },
    /// Delete a user altogether: memberships, sessions, API keys, devices (the id is never reused)
    Delete {
        /// The user's login
        login: String,
    },
    /// List users
    List,
    /// Set a user's password from standard input and end their sessions
    Passwd {
        /// The user's login
        login: String,
        /// Read the password from the first line of standard input (required)
        #[arg(long, required = true)]
        password_stdin: bool,
    },
}

// `user add`'s arguments (its help is the variant's, above).
#[derive(clap::Args)]
struct UserAdd {
    /// The login the user signs in with (an email for IQM)
    login: String,
    /// Read the password from the first line of standard input
    #[arg(long, conflicts_with = "no_password")]
    password_stdin: bool,
    /// Add the user without a password (one who signs in only with a device or API key,
    /// or sets one by a reset link)
    #[arg(long)]
    no_password: bool,
    /// The user's email address (reset links go there)
    #[arg(long)]
    email: Option<String>,
    /// First name
    #[arg(long, default_value = "")]
    first_name: String,
    /// Last name
    #[arg(long, default_value = "")]
    last_name: String,
    /// e.g. "M." or "Mme"
    #[arg(long, default_value = "")]
    civility: String,
    /// The user's type, as the ForePaaS and CMS user objects say it
    #[arg(long = "type", value_enum, default_value = "USER", ignore_case = true)]
    user_type: UserType,
    /// Make the user a member of this application (repeatable)
    #[arg(long = "app", value_name = "ID")]
    apps: Vec<String>,
}

#[derive(Subcommand)]
enum ApikeyCommand {
    /// Create an API key; prints `APIKEY SECRETKEY`
    Add {
        /// The login of the user the key signs in as
        login: String,
        /// The application the key signs in to
        #[arg(long, default_value = APP_FOREPAAS)]
        app: String,
        /// Lifetime, e.g. 30d or 12h (default: no expiry)
        #[arg(long, value_name = "DURATION")]
        expires_in: Option<String>,
    },
    /// Revoke an API key and every token issued through it
    Revoke {
        /// The API key's id (APIKEY, never the secret)
        apikey: String,
    },
    /// List API keys (never their secrets)
    List,
}

/// Runs the command line; the exit code is 0 on success, 1 on failure, 2 on a usage error.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    let config = match Config::load(cli.config.as_deref()) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("gatehouse: {e}");
            return ExitCode::from(2);
        }
    };
    let command = cli.command.unwrap_or(Command::Serve { listen: None, data: None });
    let config = match with_flags(config, &command) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("gatehouse: {e}");
            return ExitCode::from(2);
        }
    };
    // The healthcheck prints its one line and nothing else.
    if !matches!(command, Command::Healthcheck { .. }) {
        init_logging(&config, matches!(command, Command::Serve { .. }));
    }
    match run(config, command) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("gatehouse: {}", escape(&e));
            ExitCode::FAILURE
        }
    }
}

/// serve's `--listen` and `--data` over the configuration, checked like the rest of it.
fn with_flags(mut config: Config, command: &Command) -> Result<Config, String> {
    if let Command::Serve { listen, data } = command {
        if let Some(l) = listen {
            config.listen = l.clone();
        }
        if let Some(d) = data {
            config.data_dir = d.clone();
        }
        config
            .validate()
            .map_err(|e| e.to_string().replace("key `listen`", "--listen").replace("key `data_dir`", "--data"))?;
    }
    Ok(config)
}

/// `log_level` applies to gatehouse's own lines; other crates print at most info. `RUST_LOG`, when
/// set, replaces both (for debugging dependencies: it may print what they print).
///
/// Every line, gatehouse's and its dependencies', is one line: control and bidirectional
/// characters in the message are escaped (`text::escape`), so that nothing a client typed can
/// forge a line or drive the terminal that reads the log.
fn init_logging(config: &Config, serving: bool) {
    let mut level = config.log_level.parse().unwrap_or(log::LevelFilter::Info);
    if !serving {
        level = level.min(log::LevelFilter::Warn);
    }
    let mut b = env_logger::Builder::new();
    match std::env::var("RUST_LOG") {
        Ok(filters) if !filters.is_empty() => {
            b.parse_filters(&filters);
        }
        _ => {
            b.filter_level(level.min(log::LevelFilter::Info)).filter_module("gatehouse", level);
        }
    }
    b.format(|buf, record| {
        let (stamp, style) = (buf.timestamp_seconds(), buf.default_level_style(record.level()));
        log_line(buf, stamp, style, record)
    });
    b.target(env_logger::Target::Stderr).init();
}

/// One log line, as env_logger's default format writes it (`[time LEVEL target] message`), with the
/// message and target escaped: whatever they hold, it stays one line of plain text.
fn log_line(
    out: &mut impl std::io::Write,
    stamp: impl std::fmt::Display,
    style: env_logger::fmt::style::Style,
    record: &log::Record<'_>,
) -> std::io::Result<()> {
    writeln!(
        out,
        "[{stamp} {style}{:<5}{style:#} {}] {}",
        record.level(),
        escape(record.target()),
        escape(&record.args().to_string())
    )
}

fn read_stdin_line(what: &str) -> Result<Secret, String> {
    let mut line = String::new();
    std::io::stdin().lock().read_line(&mut line).map_err(|e| format!("reading the {what} from standard input: {e}"))?;
    let value = Secret::new(line.trim_end_matches(['\n', '\r']));
    drop(zeroize::Zeroizing::new(line));
    if value.expose().is_empty() {
        return Err(format!("no {what} on standard input"));
    }
    Ok(value)
}

/// The master key that seals backups, for `doing` (what needs it), or what to do without it.
fn backup_key(config: &Config, doing: &str, otherwise: &str) -> Result<crate::core::crypto::MasterKey, String> {
    let path = config.master_key_path();
    if !path.exists() {
        return Err(format!("{doing} under the master key, and {} does not exist: {otherwise}", path.display()));
    }
    crate::core::crypto::MasterKey::load(&path).map_err(|e| e.to_string())
}

/// One command: those that need no Core (the healthcheck, backup and restore, argon2-bench,
/// migrate-store) on the configuration alone, the others on a Core opened for them.
fn run(config: Config, command: Command) -> Result<(), String> {
    match command {
        Command::Healthcheck { addr, timeout } => healthcheck(&config, addr.as_deref(), timeout),
        Command::Backup { file } => backup(&config, &file),
        Command::Restore { file, unsealed } => restore(&config, &file, unsealed),
        Command::Argon2Bench { rounds } => argon2_bench(&config, rounds),
        Command::MigrateStore { from, to, sqlite_file } => migrate_store(&config, from, to, sqlite_file),
        Command::Serve { .. } => serve(config),
        Command::App(cmd) => app(&open(config)?, cmd),
        Command::User(cmd) => user(&open(config)?, cmd),
        Command::Oidc(OidcCommand::RotateKeys { alg }) => rotate_keys(&open(config)?, alg),
        Command::Apikey(cmd) => apikey(&open(config)?, cmd),
        Command::Audit { since, user } => audit(&open(config)?, since, user),
    }
}

fn open(config: Config) -> Result<Core, String> {
    Core::open(config).map_err(|e| e.to_string())
}

/// A core error as the command line says it.
fn said(e: crate::core::Error) -> String {
    e.to_string()
}

/// GET /healthz on the server's address: fine when it answers 200 within `timeout` seconds, else
/// the reason. Plain HTTP, or TLS when `[tls]` is on (the certificate must be the one configured:
/// it is this box's own server).
fn healthcheck(config: &Config, addr: Option<&str>, timeout: u64) -> Result<(), String> {
    let addr = addr.unwrap_or(&config.listen);
    crate::web::healthcheck::probe(config, addr, std::time::Duration::from_secs(timeout.max(1)))
        .map_err(|e| format!("unhealthy: {e}"))
}

/// Backup and restore copy the SQLite file: PostgreSQL has its own.
fn sqlite_only(config: &Config) -> Result<(), String> {
    if config.store.backend == "postgres" {
        return Err("backup and restore copy the SQLite file; with store.backend = \"postgres\", use \
                    PostgreSQL's own (pg_dump, pg_basebackup, a standby)"
            .into());
    }
    Ok(())
}

fn backup(config: &Config, file: &std::path::Path) -> Result<(), String> {
    sqlite_only(config)?;
    // Nothing to back up is said first (packaging/debian/preinst goes on then).
    if !config.db_path().is_file() {
        return Err(format!("no database at {}", config.db_path().display()));
    }
    let key = backup_key(
        config,
        "backup seals the copy",
        "put the master key of this database there (master_key_file names where it is)",
    )?;
    let users = crate::store::backup::backup(config, file, &key)?;
    println!(
        "backup written to {} ({users} users), sealed in {}; keep {} with it, separately",
        file.display(),
        crate::store::backup::mac_path(file).display(),
        config.master_key_path().display()
    );
    Ok(())
}

fn restore(config: &Config, file: &std::path::Path, unsealed: bool) -> Result<(), String> {
    sqlite_only(config)?;
    let key = if unsealed {
        None
    } else {
        Some(backup_key(
            config,
            "restore checks the backup's seal",
            "put the master key that goes with the backup there first (--unsealed takes a backup without \
             its seal, on its schema check alone)",
        )?)
    };
    let users = crate::store::backup::restore(config, file, key.as_ref())?;
    println!("restored {} into {} ({users} users)", file.display(), config.db_path().display());
    if !config.master_key_path().exists() {
        println!(
            "put the master key that goes with this backup at {} before starting gatehouse",
            config.master_key_path().display()
        );
    }
    Ok(())
}

/// Times `rounds` verifies on one worker, then on every worker at once; prints one JSON line.
fn argon2_bench(config: &Config, rounds: u32) -> Result<(), String> {
    use crate::core::password::Hasher;
    let hasher = Hasher::new(&config.argon2, 1, 1).map_err(|e| e.to_string())?;
    let password = Secret::new("bench password");
    let phc = hasher.hash(&password).map_err(|e| e.to_string())?;
    let start = std::time::Instant::now();
    for _ in 0..rounds {
        hasher.verify(&password, Some(&phc)).map_err(|e| e.to_string())?;
    }
    let per = start.elapsed().as_secs_f64() / f64::from(rounds.max(1));
    let cores = config.hash_workers();
    // The same verifies on every worker at once: what the cores really give together
    // (they share caches and memory bandwidth, so usually less than cores / verify time).
    let all = Hasher::new(&config.argon2, cores, cores).map_err(|e| e.to_string())?;
    let start = std::time::Instant::now();
    let failed = std::thread::scope(|s| {
        let runs: Vec<_> = (0..cores)
            .map(|_| s.spawn(|| (0..rounds).all(|_| all.verify(&password, Some(&phc)).is_ok_and(|ok| ok))))
            .collect();
        runs.into_iter().any(|r| !r.join().unwrap_or(false))
    });
    if failed {
        return Err("argon2-bench: a verify failed".into());
    }
    let parallel = (cores as f64 * f64::from(rounds)) / start.elapsed().as_secs_f64();
    println!(
        "{{\"verify_ms\": {:.3}, \"workers\": {cores}, \"limit_per_s\": {:.1}, \"parallel_per_s\": {:.1}}}",
        per * 1000.0,
        cores as f64 / per,
        parallel
    );
    Ok(())
}

fn migrate_store(config: &Config, from: Backend, to: Backend, sqlite_file: Option<PathBuf>) -> Result<(), String> {
    if (from, to) != (Backend::Sqlite, Backend::Postgres) {
        return Err("migrate-store copies --from sqlite --to postgres".into());
    }
    let file = sqlite_file.unwrap_or_else(|| config.db_path());
    let copied = crate::store::migrate::sqlite_to_postgres(config, &file)?;
    let counts: Vec<String> = copied.iter().map(|(t, n)| format!("{n} {t}")).collect();
    println!("copied {} into PostgreSQL: {}", file.display(), counts.join(", "));
    println!("give every node the master key {} with it", config.master_key_path().display());
    Ok(())
}

fn app(core: &Core, cmd: AppCommand) -> Result<(), String> {
    match cmd {
        AppCommand::Add { id, secret_stdin, allow_short_secret, doors, public, client } => {
            add_app(core, &id, (secret_stdin, allow_short_secret), &doors, public, client.settings())
        }
        AppCommand::Show { id } => show_app(core, &id),
        AppCommand::Edit { id, client } => {
            core.edit_client(&id, client.settings()).map_err(said)?;
            show_app(core, &id)
        }
        AppCommand::RequireSecondFactor { id, required } => {
            core.set_require_second_factor(&id, required).map_err(said)?;
            println!("application {id}: second factor {}", if required { "required" } else { "not required" });
            Ok(())
        }
        AppCommand::RotateSecret { id } => {
            let secret = core.rotate_app_secret(&crate::core::guard::Caller::local(), &id).map_err(said)?;
            println!("application {id}: new secret, shown only now: {}", secret.expose());
            Ok(())
        }
        AppCommand::Doors { id, doors } => {
            core.set_app_doors(&id, &doors_of(&doors)).map_err(said)?;
            let names: Vec<_> = doors_of(&doors).iter().map(|d| d.as_str()).collect();
            println!("application {id} serves {}", names.join(","));
            Ok(())
        }
        AppCommand::List => {
            println!("{:<32} {:<8} {:<7} {:<8} DOORS", "ID", "BUILTIN", "SECRET", "MEMBERS");
            for a in core.list_apps().map_err(said)? {
                let yn = |b: bool| if b { "yes" } else { "no" };
                let doors = if a.doors.is_empty() { "-" } else { a.doors.as_str() };
                println!("{:<32} {:<8} {:<7} {:<8} {doors}", a.id, yn(a.builtin), yn(a.has_secret), a.members);
            }
            Ok(())
        }
    }
}

fn show_app(core: &Core, id: &str) -> Result<(), String> {
    let app =
        core.list_apps().map_err(said)?.into_iter().find(|a| a.id == id).ok_or(format!("unknown application {id}"))?;
    let yn = |b: bool| if b { "yes" } else { "no" };
    println!("id:                       {}", app.id);
    println!("doors:                    {}", if app.doors.is_empty() { "-" } else { &app.doors });
    println!("secret:                   {}", yn(app.has_secret));
    println!("members:                  {}", app.members);
    match core.client(id) {
        Ok(c) => {
            println!("public client:            {}", yn(c.public));
            for u in &c.redirect_uris {
                println!("redirect uri:             {u}");
            }
            for u in &c.post_logout_uris {
                println!("post-logout redirect uri: {u}");
            }
            if let Some(u) = &c.backchannel_uri {
                println!("back-channel logout uri:  {u}");
            }
            println!("first party:              {}", yn(c.first_party));
            println!("open to every user:       {}", yn(c.open));
            println!("signing alg:              {}", c.signing_alg);
            println!("claims in id_token:       {}", yn(c.claims_in_id_token));
        }
        Err(crate::core::Error::UnknownApp(_)) => println!("OpenID Connect client:    no"),
        Err(e) => return Err(said(e)),
    }
    Ok(())
}

fn add_app(
    core: &Core,
    id: &str,
    (secret_stdin, allow_short): (bool, bool),
    doors: &[DoorArg],
    public: bool,
    client: crate::core::oidc::ClientSettings,
) -> Result<(), String> {
    let given = if secret_stdin { Some(read_stdin_line("secret")?) } else { None };
    if given.as_ref().is_some_and(|s| s.expose().len() < MIN_GIVEN_SECRET) && !allow_short {
        return Err(format!(
            "the secret must be at least {MIN_GIVEN_SECRET} bytes (a generated one is 32 random bytes); \
             --allow-short-secret takes a shorter one"
        ));
    }
    if public || client.any() || doors.contains(&DoorArg::Oidc) {
        let secret = core.add_client(id, given, public, &doors_of(doors), client).map_err(said)?;
        match secret {
            Some(s) if !secret_stdin => {
                println!("application {id} added; its secret, shown only now: {}", s.expose())
            }
            _ => println!("application {id} added"),
        }
        return Ok(());
    }
    let secret = core.add_app(id, given, &doors_of(doors)).map_err(said)?;
    if secret_stdin {
        println!("application {id} added");
    } else {
        println!("application {id} added; its secret, shown only now: {}", secret.expose());
    }
    Ok(())
}

fn user(core: &Core, cmd: UserCommand) -> Result<(), String> {
    match cmd {
        UserCommand::Add(new) => add_user(core, new)?,
        UserCommand::Grant { login, app } => {
            let added = core.grant(&login, &app).map_err(said)?;
            println!("{login} {} a member of {app}", if added { "is now" } else { "was already" });
        }
        UserCommand::Revoke { login, app } => {
            let was = core.revoke(&login, &app).map_err(said)?;
            println!("{login} {} a member of {app}", if was { "is no longer" } else { "was not" });
        }
        UserCommand::Block { login } => {
            core.set_blocked(&login, true).map_err(said)?;
            println!("{login} blocked; their sessions are ended");
        }
        UserCommand::Unblock { login } => {
            core.set_blocked(&login, false).map_err(said)?;
            println!("{login} unblocked");
        }
        UserCommand::ResetSecondFactors { login } => {
            let user = core.user_by_login(&login).map_err(said)?;
            let had = core.has_second_factor(user.id).map_err(said)?;
            core.reset_second_factors(user.id).map_err(said)?;
            if had {
                println!("{}: every second factor removed (TOTP, passkeys, recovery codes)", escape(&user.login));
            } else {
                println!("{}: had no second factor", escape(&user.login));
            }
        }
        UserCommand::Delete { login } => {
            let u = core.delete_user(&login).map_err(said)?;
            println!("user {} deleted (id {}, never given again)", escape(&u.login), u.id);
        }
        UserCommand::List => list_users(core)?,
        UserCommand::Passwd { login, password_stdin: _ } => {
            let password = read_stdin_line("password")?;
            core.set_password(&login, &password).map_err(said)?;
            println!("password of {login} changed; their sessions are ended");
        }
    }
    Ok(())
}

fn add_user(core: &Core, new: UserAdd) -> Result<(), String> {
    if !new.password_stdin && !new.no_password {
        return Err("give the password on standard input (--password-stdin), or add the user without one \
                    (--no-password)"
            .into());
    }
    let password = if new.password_stdin { Some(read_stdin_line("password")?) } else { None };
    let apps = if new.apps.is_empty() { vec![APP_FOREPAAS.to_string(), APP_CMS.to_string()] } else { new.apps };
    let user_type = match new.user_type {
        UserType::Admin => "ADMIN",
        UserType::Owner => "OWNER",
        UserType::User => "USER",
    };
    let u = core
        .add_user(NewUser {
            login: new.login,
            password,
            email: new.email,
            first_name: new.first_name,
            last_name: new.last_name,
            civility: new.civility,
            user_type: user_type.into(),
            apps: apps.clone(),
        })
        .map_err(said)?;
    println!("user {} added (id {}, member of {})", u.login, u.id, apps.join(", "));
    Ok(())
}

fn list_users(core: &Core) -> Result<(), String> {
    println!("{:<6} {:<32} {:<6} {:<8} {:<32} APPS", "ID", "LOGIN", "TYPE", "BLOCKED", "EMAIL");
    for (u, apps) in core.list_users().map_err(said)? {
        // Rows stored before logins were clean text are printed escaped.
        println!(
            "{:<6} {:<32} {:<6} {:<8} {:<32} {}",
            u.id,
            escape(&u.login),
            u.user_type,
            if u.blocked { "yes" } else { "no" },
            escape(u.email.as_deref().unwrap_or("-")),
            apps.join(",")
        );
    }
    Ok(())
}

fn apikey(core: &Core, cmd: ApikeyCommand) -> Result<(), String> {
    match cmd {
        ApikeyCommand::Add { login, app, expires_in } => {
            let lifetime = match expires_in {
                Some(text) => Some(lifetime_ms(&text)?),
                None => None,
            };
            let key = core.add_api_key(&login, &app, lifetime).map_err(|err| match err {
                crate::core::Error::NotMember => format!("user {login} is not a member of {app}"),
                other => other.to_string(),
            })?;
            println!("{} {}", key.apikey, key.secretkey.expose());
        }
        ApikeyCommand::Revoke { apikey } => {
            core.revoke_api_key(&apikey).map_err(said)?;
            println!("API key {apikey} revoked");
        }
        ApikeyCommand::List => list_api_keys(core)?,
    }
    Ok(())
}

/// `--expires-in`, in milliseconds.
fn lifetime_ms(text: &str) -> Result<i64, String> {
    let d = humantime::parse_duration(text).map_err(|err| format!("--expires-in {text:?}: {err}"))?;
    if d.is_zero() {
        return Err("--expires-in must be more than 0".into());
    }
    Ok(i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

fn list_api_keys(core: &Core) -> Result<(), String> {
    println!("{:<32} {:<24} {:<16} {:<24} STATE", "APIKEY", "LOGIN", "APP", "EXPIRES");
    for k in core.list_api_keys().map_err(said)? {
        let expires = k.expires_at.map(iso8601).unwrap_or_else(|| "never".into());
        let now = crate::core::now_ms();
        let state = if k.revoked {
            "revoked"
        } else if k.expires_at.is_some_and(|t| t <= now) {
            "expired"
        } else {
            "live"
        };
        println!("{:<32} {:<24} {:<16} {:<24} {state}", k.apikey, escape(&k.login), k.app_id, expires);
    }
    Ok(())
}

fn audit(core: &Core, since: Option<String>, user: Option<String>) -> Result<(), String> {
    let since = match since {
        Some(text) => {
            let d = humantime::parse_duration(&text).map_err(|err| format!("--since {text:?}: {err}"))?;
            crate::core::now_ms().saturating_sub(i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        }
        None => 0,
    };
    // What a client typed (a failed login, a client id) is printed escaped: one event is
    // one line, and nothing in it drives the terminal.
    for ev in core.audit_events(since, user.as_deref()).map_err(said)? {
        let who = match (&ev.login, ev.user_id) {
            (Some(l), Some(id)) => format!("{} (id {id})", escape(l)),
            (Some(l), None) => escape(l).into_owned(),
            (None, Some(id)) => format!("id {id}"),
            (None, None) => "-".into(),
        };
        let field = |v: &Option<String>| escape(v.as_deref().unwrap_or("-")).into_owned();
        println!(
            "{}  {:<18} user={}  app={}  client={}  dialect={}",
            iso8601(ev.at),
            escape(&ev.event),
            who,
            field(&ev.app_id),
            field(&ev.client),
            field(&ev.dialect)
        );
    }
    Ok(())
}

/// Serves on a data directory of its own: locked against a second server (and a restore) while
/// this one runs.
fn serve(config: Config) -> Result<(), String> {
    crate::store::ensure_dir(&config.data_dir).map_err(|e| format!("{}: {e}", config.data_dir.display()))?;
    let lock = crate::store::backup::lock_data_dir(&config)?;
    let served = serve_core(open(config)?);
    drop(lock);
    served
}

fn serve_core(core: Core) -> Result<(), String> {
    let listen = core.config.listen.clone();
    let listener = std::net::TcpListener::bind(&listen).map_err(|e| format!("cannot listen on {listen}: {e}"))?;
    // On the first start, before the first sign-in needs them (tests' servers make theirs lazily).
    if let Err(e) = core.ensure_signing_keys() {
        log::warn!("signing keys not made yet ({e}); the first token or JWKS makes them");
    }
    let core = Arc::new(core);
    log::info!(
        "gatehouse {} serving on http://{} (data in {})",
        env!("CARGO_PKG_VERSION"),
        listener.local_addr().map(|a| a.to_string()).unwrap_or(listen),
        core.config.data_dir.display()
    );
    let serving = Arc::clone(&core);
    let served = actix_web::rt::System::new().block_on(async move {
        let server = crate::start(serving, listener)?;
        // The store is open and the port bound: systemd (Type=notify) may start what depends on us.
        crate::process::notify_systemd("READY=1");
        let served = server.await;
        // The server has stopped answering: a reaper sweep under way ends after its current batch.
        core.stop();
        served
    });
    served.map_err(|e| format!("server: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_command_and_argument_has_help_text() {
        use clap::CommandFactory;
        fn walk(cmd: &clap::Command, path: &str) {
            for arg in cmd.get_arguments() {
                let id = arg.get_id().as_str();
                if id == "help" || id == "version" {
                    continue;
                }
                assert!(arg.get_help().is_some(), "{path} {id} has no help text");
            }
            for sub in cmd.get_subcommands() {
                assert!(sub.get_about().is_some(), "{path} {} has no help text", sub.get_name());
                walk(sub, &format!("{path} {}", sub.get_name()));
            }
        }
        walk(&Cli::command(), "gatehouse");
    }

    #[test]
    fn a_log_line_stays_one_line_whatever_its_message_holds() {
        let typed = "alice\nFAKE LOG LINE\u{1b}[2J\u{202e}";
        let mut out = Vec::new();
        let style = env_logger::fmt::style::Style::new();
        log_line(
            &mut out,
            "2025-01-01T00:00:00Z",
            style,
            &log::Record::builder()
                .args(format_args!("sign-in of {typed} failed"))
                .level(log::Level::Warn)
                .target("gatehouse::core")
                .build(),
        )
        .unwrap();
        let line = String::from_utf8(out).unwrap();
        assert_eq!(
            line,
            "[2025-01-01T00:00:00Z WARN  gatehouse::core] sign-in of alice\\nFAKE LOG LINE\\u{1b}[2J\\u{202e} failed\n"
        );
    }
}
