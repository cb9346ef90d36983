//! The PostgreSQL backend: several gatehouse nodes over one database.
//!
//! A pool of connections (r2d2, each connection with its prepared statements), the migrations
//! from schema.postgres.sql under an advisory lock (nodes starting together migrate once), and
//! transactions at SERIALIZABLE: the core's writes were written for SQLite's one writer, and
//! SERIALIZABLE keeps them as correct with several nodes writing at once (a read-then-write that
//! raced another node fails with a serialization failure and is run again). A write is answered
//! once COMMIT returned, so it is as durable as the server's `synchronous_commit` makes it.

use std::cell::RefCell;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use super::db::{Db, Fault, PgConn};
use super::Error;
use super::OpenError;
use crate::config::Config;

/// The schema, embedded in the binary.
pub const SCHEMA: &str = include_str!("../../schema.postgres.sql");

/// Runs of one write before it is answered 503. Between two, a wait that doubles from 1 ms up to
/// 128 ms, with jitter, so that writers that collided do not collide again at once (about 1.5 s
/// in all before the sixteenth run).
const ATTEMPTS: u32 = 16;

/// The advisory lock nodes take while they migrate.
const MIGRATION_LOCK: i64 = 0x6761_7465_0001;

#[derive(Clone)]
pub struct Postgres {
    pool: r2d2::Pool<Manager>,
    stats: Arc<Stats>,
}

#[derive(Default)]
struct Stats {
    waits: AtomicU64,
    writes: AtomicU64,
    retries: AtomicU64,
    unavailable: AtomicU64,
}

struct Manager {
    config: postgres::Config,
    tls: tokio_postgres_rustls::MakeRustlsConnect,
}

impl r2d2::ManageConnection for Manager {
    type Connection = PgConn;
    type Error = postgres::Error;

    fn connect(&self) -> Result<PgConn, postgres::Error> {
        Ok(PgConn::new(self.config.connect(self.tls.clone())?))
    }

    fn is_valid(&self, conn: &mut PgConn) -> Result<(), postgres::Error> {
        conn.client().simple_query("").map(|_| ())
    }

    fn has_broken(&self, conn: &mut PgConn) -> bool {
        conn.is_closed() || conn.fault.get() == Fault::Lost
    }
}

/// The hosts, port and database of a connection string, for messages: never its password.
pub fn describe(config: &postgres::Config) -> String {
    let hosts: Vec<String> = config
        .get_hosts()
        .iter()
        .map(|h| match h {
            postgres::config::Host::Tcp(name) => name.clone(),
            postgres::config::Host::Unix(path) => path.display().to_string(),
        })
        .collect();
    let ports: Vec<String> = config.get_ports().iter().map(u16::to_string).collect();
    format!("{} port {} database {}", hosts.join(","), ports.join(","), config.get_dbname().unwrap_or("(default)"))
}

/// TLS through rustls (ring); used when the connection string asks for it (sslmode=prefer, the
/// default, uses it when the server offers it). The server's certificate is always checked, for
/// its name too (libpq's verify-full), against `ca_file` or else the system's CA roots.
fn tls(ca_file: &std::path::Path) -> Result<tokio_postgres_rustls::MakeRustlsConnect, String> {
    use rustls::pki_types::{pem::PemObject, CertificateDer};
    let mut roots = rustls::RootCertStore::empty();
    if ca_file.as_os_str().is_empty() {
        for cert in rustls_native_certs::load_native_certs().certs {
            let _ = roots.add(cert);
        }
    } else {
        let certs = CertificateDer::pem_file_iter(ca_file)
            .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
            .map_err(|e| format!("store.postgres_ca_file {}: {e}", ca_file.display()))?;
        for cert in certs {
            roots.add(cert).map_err(|e| format!("store.postgres_ca_file {}: {e}", ca_file.display()))?;
        }
    }
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(tokio_postgres_rustls::MakeRustlsConnect::new(config))
}

impl Postgres {
    pub fn open(config: &Config) -> Result<Postgres, OpenError> {
        let mut pg: postgres::Config = config.store.postgres_url.parse().map_err(|e: postgres::Error| {
            OpenError::Postgres { server: "(store.postgres_url)".into(), reason: e.to_string() }
        })?;
        let timeout = config.store.postgres_connect_timeout.0;
        pg.connect_timeout(timeout);
        pg.application_name("gatehouse");
        let server = describe(&pg);
        let fail = |reason: String| OpenError::Postgres { server: server.clone(), reason };
        let manager = Manager { config: pg, tls: tls(&config.store.postgres_ca_file).map_err(&fail)? };
        let pool = r2d2::Pool::builder()
            .max_size(config.store.postgres_pool_size)
            .min_idle(Some(1))
            // A connection is found broken when it is used (and the work run again on a new one).
            .test_on_check_out(false)
            .connection_timeout(timeout)
            .build(manager)
            .map_err(|e| fail(e.to_string()))?;
        let store = Postgres { pool, stats: Default::default() };
        let mut conn = store.pool.get().map_err(|e| fail(e.to_string()))?;
        migrate(&mut conn).map_err(fail)?;
        log::info!("store: postgres {server}");
        Ok(store)
    }

    fn conn(&self) -> Result<r2d2::PooledConnection<Manager>, Error> {
        if self.pool.state().idle_connections == 0 {
            self.stats.waits.fetch_add(1, Ordering::Relaxed);
        }
        self.pool.get().map_err(|e| {
            self.stats.unavailable.fetch_add(1, Ordering::Relaxed);
            log::warn!("postgres: no connection: {e}");
            Error::Unavailable
        })
    }

    /// Reads outside a transaction; once more on a new connection when the first was lost.
    pub fn with<T, E: From<Error>>(&self, mut f: impl FnMut(&Db) -> Result<T, E>) -> Result<T, E> {
        for attempt in 1.. {
            let mut conn = self.conn()?;
            conn.fault.set(Fault::None);
            let out = f(&Db::Pg(RefCell::new(&mut conn)));
            if out.is_err() && conn.fault.get() == Fault::Lost && attempt < 2 {
                continue;
            }
            if out.is_err() && conn.fault.get() != Fault::None {
                self.stats.unavailable.fetch_add(1, Ordering::Relaxed);
            }
            return out;
        }
        unreachable!("the loop returns")
    }

    /// One SERIALIZABLE transaction, run again while it may be (see `Store::write`).
    pub fn write<T, E: From<Error>>(&self, f: &mut dyn FnMut(&Db) -> Result<T, E>) -> Result<T, E> {
        for attempt in 1..=ATTEMPTS {
            let mut conn = self.conn()?;
            conn.fault.set(Fault::None);
            let mut committing = false;
            let out = (|| -> Result<T, E> {
                conn.batch("BEGIN ISOLATION LEVEL SERIALIZABLE")?;
                let result = f(&Db::Pg(RefCell::new(&mut conn)));
                match result {
                    Ok(v) => {
                        committing = true;
                        conn.batch("COMMIT")?;
                        Ok(v)
                    }
                    Err(e) => {
                        if conn.fault.get() != Fault::Lost {
                            let _ = conn.client().batch_execute("ROLLBACK");
                        }
                        Err(e)
                    }
                }
            })();
            let fault = conn.fault.get();
            drop(conn);
            match out {
                Ok(v) => {
                    self.stats.writes.fetch_add(1, Ordering::Relaxed);
                    return Ok(v);
                }
                // A serialization failure rolled the transaction back, even at COMMIT; a connection
                // lost before COMMIT was sent took its transaction with it. Lost during COMMIT, the
                // write may or may not have committed: answered 503, never run twice.
                Err(_) if attempt < ATTEMPTS && (fault == Fault::Retry || (fault == Fault::Lost && !committing)) => {
                    self.stats.retries.fetch_add(1, Ordering::Relaxed);
                    let base = 1u64 << attempt.min(7);
                    let jitter = u64::from(crate::base::crypto::random_bytes::<1>()[0]) % base.max(2);
                    std::thread::sleep(Duration::from_millis(base / 2 + jitter));
                }
                Err(e) => {
                    if fault != Fault::None {
                        self.stats.unavailable.fetch_add(1, Ordering::Relaxed);
                        log::warn!("postgres: a write was answered busy after {attempt} attempt(s)");
                    }
                    return Err(e);
                }
            }
        }
        Err(Error::Busy.into())
    }

    pub fn pool_stats(&self) -> (u64, u64, u64) {
        let st = self.pool.state();
        (self.stats.waits.load(Ordering::Relaxed), u64::from(st.connections), u64::from(st.idle_connections))
    }

    /// Every write commits on its own: (writes, commits) are equal.
    pub fn commit_stats(&self) -> (u64, u64) {
        let n = self.stats.writes.load(Ordering::Relaxed);
        (n, n)
    }

    pub fn fault_stats(&self) -> (u64, u64) {
        (self.stats.retries.load(Ordering::Relaxed), self.stats.unavailable.load(Ordering::Relaxed))
    }
}

/// Applies every block of schema.postgres.sql above the database's version, each in its own
/// transaction, while holding an advisory lock: nodes that start together migrate once.
fn migrate(conn: &mut PgConn) -> Result<(), String> {
    let blocks = super::sqlite::versions(SCHEMA);
    let known = blocks.last().map(|(n, _)| *n).unwrap_or(0);
    let client = conn.client();
    let e = |e: postgres::Error| e.to_string();
    client.execute("SELECT pg_advisory_lock($1)", &[&MIGRATION_LOCK]).map_err(e)?;
    let out = (|| {
        client.batch_execute("CREATE TABLE IF NOT EXISTS gatehouse_schema (version BIGINT NOT NULL)").map_err(e)?;
        let current: i64 =
            client.query_one("SELECT coalesce(max(version), 0) FROM gatehouse_schema", &[]).map_err(e)?.get(0);
        if current > known {
            return Err(format!(
                "the database is at schema version {current}, newer than this gatehouse knows ({known}); use a newer gatehouse"
            ));
        }
        for (version, sql) in blocks.into_iter().filter(|(n, _)| *n > current) {
            let mut tx = client.transaction().map_err(e)?;
            tx.batch_execute(&sql).map_err(e)?;
            tx.execute("INSERT INTO gatehouse_schema (version) VALUES ($1)", &[&version]).map_err(e)?;
            tx.commit().map_err(e)?;
            log::info!("postgres: schema migrated to version {version}");
        }
        Ok(())
    })();
    let _ = client.execute("SELECT pg_advisory_unlock($1)", &[&MIGRATION_LOCK]);
    out
}
