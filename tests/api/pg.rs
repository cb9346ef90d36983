//! A throwaway PostgreSQL server for the tests, from Debian's `postgresql` package.
//!
//! One server per test process, started on first use by [`cluster`] (or [`cluster_or_skip`]),
//! listening on a free loopback port with trust authentication for the user `postgres`.
//! [`Cluster::new_database`] hands each test a fresh, empty database.
//!
//! The server is a child of the test process and dies with it, even on SIGKILL: it is forked
//! from a thread that never ends, with PR_SET_PDEATHSIG. On a normal exit an `atexit` hook
//! also stops it and removes its directory. As root (CI), initdb and postgres run as the
//! `postgres` system user, since both refuse to run as root.
//!
//! [`command`], [`spawn_server`] and [`wait_ready`] start further servers (a standby, a server
//! to kill) the same way. A standby: `command("pg_basebackup")` with `-h 127.0.0.1 -p <port>
//! -U postgres -R -X stream --checkpoint=fast -D <dir>` (without `--checkpoint=fast` it waits
//! minutes for a spread checkpoint), then `spawn_server(<dir>, free_port(), &[])`.

// Not every test uses every helper and field.
#![allow(dead_code)]

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// The running test server.
pub struct Cluster {
    /// TCP port on 127.0.0.1.
    pub port: u16,
    /// Its directory: `data/` (the cluster), `data.log` (server output), the Unix socket.
    pub dir: PathBuf,
    /// The directory of `initdb`, `postgres`, `pg_basebackup`, ...
    pub bin: PathBuf,
    /// Process id of the postmaster.
    pub pid: u32,
}

impl Cluster {
    /// Creates a new empty database with a unique name; returns its URL
    /// (`postgres://postgres@127.0.0.1:<port>/<name>`).
    pub fn new_database(&self) -> String {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let name = format!("t{}_{}", std::process::id(), NEXT.fetch_add(1, Ordering::Relaxed));
        run(&self.url("postgres"), &format!("CREATE DATABASE {name}"));
        self.url(&name)
    }

    /// The URL of database `name` on this server.
    pub fn url(&self, name: &str) -> String {
        format!("postgres://postgres@127.0.0.1:{}/{name}", self.port)
    }
}

/// Runs `sql` on the database at `url`. On a thread of its own: the sync client starts a runtime,
/// which must not happen inside the async test's.
pub fn run(url: &str, sql: &str) {
    std::thread::scope(|s| {
        s.spawn(|| {
            let mut client = postgres::Client::connect(url, postgres::NoTls).expect("connect to the test PostgreSQL");
            client.batch_execute(sql).unwrap_or_else(|e| panic!("{sql}: {e}"));
        })
        .join()
        .unwrap()
    })
}

/// The one value the query answers, read like `run`.
pub fn value<T: for<'a> postgres::types::FromSql<'a> + Send>(url: &str, sql: &str) -> T {
    std::thread::scope(|s| {
        s.spawn(|| {
            let mut client = postgres::Client::connect(url, postgres::NoTls).expect("connect to the test PostgreSQL");
            client.query_one(sql, &[]).unwrap_or_else(|e| panic!("{sql}: {e}")).get(0)
        })
        .join()
        .unwrap()
    })
}

/// The directory holding `initdb`, `pg_ctl` and `postgres`: the highest
/// `/usr/lib/postgresql/<version>/bin`, else the directory on PATH holding all three.
pub fn bin_dir() -> Option<PathBuf> {
    static BIN: OnceLock<Option<PathBuf>> = OnceLock::new();
    BIN.get_or_init(|| {
        let complete = |d: &Path| ["initdb", "pg_ctl", "postgres"].iter().all(|b| d.join(b).is_file());
        let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|e| Some((e.file_name().to_str()?.parse().ok()?, e.path().join("bin"))))
            .collect();
        versions.sort();
        let path = std::env::var_os("PATH").unwrap_or_default();
        versions.into_iter().rev().map(|(_, d)| d).chain(std::env::split_paths(&path)).find(|d| complete(d))
    })
    .clone()
}

/// True when the PostgreSQL server binaries are installed.
pub fn available() -> bool {
    bin_dir().is_some()
}

/// The shared test server, started on first call. Panics if PostgreSQL is missing or fails to start.
pub fn cluster() -> &'static Cluster {
    static CLUSTER: OnceLock<Cluster> = OnceLock::new();
    static STOP: OnceLock<(u32, PathBuf)> = OnceLock::new();
    CLUSTER.get_or_init(|| {
        let bin = bin_dir().expect("PostgreSQL is not installed (no initdb/pg_ctl/postgres)");
        let dir = tempfile::Builder::new().prefix("pgtest-").tempdir().expect("temp dir").keep();
        if let Some((uid, gid)) = server_user() {
            std::os::unix::fs::chown(&dir, Some(uid), Some(gid)).expect("chown the temp dir to postgres");
        }
        let data = dir.join("data");
        initdb(&data);

        // Fork the server from a thread that never ends: PR_SET_PDEATHSIG fires when the
        // forking *thread* exits, and test threads end after each test.
        let port = free_port();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::Builder::new()
            .name("postgres-server".into())
            .spawn(move || {
                let mut child = spawn_server(&data, port, &[]);
                let ready = wait_ready(&mut child, port, Duration::from_secs(30));
                tx.send(ready.map(|()| child.id())).unwrap();
                loop {
                    std::thread::park(); // keep `child` and this thread alive forever
                }
            })
            .expect("spawn the postgres-server thread");
        let pid = rx.recv().unwrap().unwrap_or_else(|e| {
            let log = std::fs::read_to_string(dir.join("data.log")).unwrap_or_default();
            panic!("the test PostgreSQL server did not start: {e}\n{log}")
        });

        // On a normal exit (the harness returns or calls exit()), stop it and remove its files.
        STOP.set((pid, dir.clone())).ok();
        extern "C" fn stop() {
            if let Some((pid, dir)) = STOP.get() {
                unsafe {
                    libc::kill(*pid as libc::pid_t, libc::SIGQUIT); // immediate shutdown
                    libc::waitpid(*pid as libc::pid_t, std::ptr::null_mut(), 0);
                }
                let _ = std::fs::remove_dir_all(dir);
            }
        }
        unsafe { libc::atexit(stop) };

        Cluster { port, dir, bin, pid }
    })
}

/// The shared server, or None with a `SKIPPED` note when PostgreSQL is not installed.
/// Missing on CI (env `CI` set) is a failure.
pub fn cluster_or_skip() -> Option<&'static Cluster> {
    if !available() {
        assert!(std::env::var_os("CI").is_none(), "PostgreSQL is missing on CI: .ci/run must install it");
        crate::helpers::skip_note("PostgreSQL");
        return None;
    }
    Some(cluster())
}

/// The uid and gid the server runs as: the `postgres` system user when we are root
/// (initdb and postgres refuse root), None (ourselves) otherwise.
fn server_user() -> Option<(u32, u32)> {
    if unsafe { libc::geteuid() } != 0 {
        return None;
    }
    let pw = unsafe { libc::getpwnam(c"postgres".as_ptr()) };
    assert!(!pw.is_null(), "running as root but there is no `postgres` user to run PostgreSQL as");
    Some(unsafe { ((*pw).pw_uid, (*pw).pw_gid) })
}

/// A command for `program` from the PostgreSQL bin directory that runs as the server user
/// and is killed (SIGQUIT) when the thread that spawns it ends. Spawn long-lived processes
/// from a thread that outlives them; files it creates belong to the server user.
pub fn command(program: &str) -> Command {
    let bin = bin_dir().expect("PostgreSQL is not installed");
    let mut cmd = Command::new(bin.join(program));
    let user = server_user();
    let parent = std::process::id() as libc::pid_t;
    // Runs in the forked child before exec: only async-signal-safe calls.
    unsafe {
        cmd.pre_exec(move || {
            let check = |r: libc::c_int| if r == 0 { Ok(()) } else { Err(std::io::Error::last_os_error()) };
            if let Some((uid, gid)) = user {
                check(libc::setgroups(0, std::ptr::null()))?;
                check(libc::setgid(gid))?;
                check(libc::setuid(uid))?;
            }
            // After setuid, which clears the parent-death signal.
            check(libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGQUIT))?;
            if libc::getppid() != parent {
                return Err(std::io::Error::other("the test process died before the server started"));
            }
            Ok(())
        });
    }
    cmd
}

/// A temp dir the server user may write (for clusters of a test's own: a primary, a standby).
pub fn server_dir() -> tempfile::TempDir {
    let dir = tempfile::Builder::new().prefix("pgtest-").tempdir().expect("temp dir");
    if let Some((uid, gid)) = server_user() {
        std::os::unix::fs::chown(dir.path(), Some(uid), Some(gid)).expect("chown the temp dir to postgres");
    }
    dir
}

/// Runs a PostgreSQL program (pg_ctl, pg_basebackup) as the server user; panics with its output
/// when it fails.
pub fn run_tool(program: &str, args: &[&str]) {
    let out = command(program).args(args).current_dir("/").output().expect("run a PostgreSQL tool");
    assert!(out.status.success(), "{program} {args:?}: {}", String::from_utf8_lossy(&out.stderr));
}

/// Creates a new cluster in `data` (whose parent must be writable by the server user).
pub fn initdb(data: &Path) {
    let out = command("initdb")
        .arg("-D")
        .arg(data)
        .args(["-U", "postgres", "--auth=trust", "-E", "UTF8", "--no-locale", "--no-sync"])
        .current_dir(data.parent().unwrap()) // a directory the server user may enter
        .output()
        .expect("run initdb");
    assert!(out.status.success(), "initdb failed: {}", String::from_utf8_lossy(&out.stderr));
}

/// Starts `postgres` on cluster `data`, on 127.0.0.1:`port`, its socket in `data`'s parent, its
/// output in `data` + `.log`. `extra` args come last (`-c name=value` there wins). The server dies
/// when the calling thread ends (see [`command`]); the caller owns and should reap the child.
pub fn spawn_server(data: &Path, port: u16, extra: &[&str]) -> Child {
    let parent = data.parent().unwrap();
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(data.with_extension("log"))
        .expect("open the server log");
    command("postgres")
        .arg("-D")
        .arg(data)
        .args(["-p", &port.to_string(), "-k"])
        .arg(parent)
        .args(["-c", "listen_addresses=127.0.0.1", "-c", "fsync=off", "-c", "full_page_writes=off"])
        .args(["-c", "max_connections=300", "-c", "shared_buffers=32MB"])
        .args(extra)
        .current_dir(parent)
        .stdin(Stdio::null())
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .spawn()
        .expect("spawn postgres")
}

/// Waits until the server on `port` accepts a real connection. Err if it exits first or
/// `timeout` passes (its output is in the `.log` next to its data directory).
pub fn wait_ready(child: &mut Child, port: u16, timeout: Duration) -> Result<(), String> {
    let start = Instant::now();
    let mut config = postgres::Config::new();
    config.host("127.0.0.1").port(port).user("postgres").dbname("postgres");
    config.connect_timeout(Duration::from_secs(2));
    loop {
        let failure = match config.connect(postgres::NoTls) {
            Ok(_) => return Ok(()),
            Err(e) => e.to_string(),
        };
        if let Some(status) = child.try_wait().map_err(|e| e.to_string())? {
            return Err(format!("postgres exited ({status})"));
        }
        if start.elapsed() > timeout {
            return Err(format!("not accepting connections after {timeout:?}: {failure}"));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A TCP port on 127.0.0.1 that was free a moment ago.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}
