//! Spawns the real server on a loopback port over a real SQLite file in a temp dir, or over a
//! fresh database of a throwaway PostgreSQL (`crate::BACKEND`, set by the test binary: `api` runs
//! the suite on SQLite, `api_postgres` the same dialect files on PostgreSQL), and talks to it over
//! real HTTP.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use gatehouse::config::Config;
use gatehouse::core::users::NewUser;
use gatehouse::core::{Core, Secret, User};
use serde_json::Value;

pub struct TestApp {
    pub base: String,
    pub core: Arc<Core>,
    pub http: awc::Client,
    pub _dir: tempfile::TempDir,
}

/// What came back: status, content type, raw body and the body as JSON (Null when it is not).
#[derive(Debug)]
pub struct Answer {
    pub status: u16,
    pub content_type: String,
    pub headers: awc::http::header::HeaderMap,
    pub text: String,
    pub json: Value,
}

/// True when this test binary runs the suite on PostgreSQL.
pub fn on_postgres() -> bool {
    crate::BACKEND == "postgres"
}

pub fn test_config(data_dir: &Path) -> Config {
    let mut config = Config { data_dir: data_dir.to_path_buf(), log_level: "debug".into(), ..Config::default() };
    if on_postgres() {
        // Without PostgreSQL (a developer's machine; never on CI) the test runs on SQLite, and says so.
        if let Some(cluster) = crate::pg::cluster_or_skip() {
            config.store.backend = "postgres".into();
            // A data directory keeps its database: a server started again on it finds its data.
            let marker = data_dir.join("test-postgres-url");
            config.store.postgres_url = std::fs::read_to_string(&marker).unwrap_or_else(|_| {
                let url = cluster.new_database();
                std::fs::create_dir_all(data_dir).unwrap();
                std::fs::write(&marker, &url).unwrap();
                url
            });
        }
    }
    config.http.workers = 1;
    config.argon2.workers = 2;
    // Tests fail sign-ins on purpose and often; the throttle has tests of its own (attacks.rs).
    config.throttle.delay = gatehouse::config::Seconds(Duration::ZERO);
    config.throttle.account_failures = 1000;
    config.throttle.address_failures = 1000;
    config
}

pub async fn spawn_app() -> TestApp {
    spawn_app_with(|_| {}).await
}

pub async fn spawn_app_with(tweak: impl FnOnce(&mut Config)) -> TestApp {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    spawn_app_in(dir, &data, tweak).await
}

/// A server on the data directory `data` (which another TestApp may be using too).
pub async fn spawn_app_in(dir: tempfile::TempDir, data: &Path, tweak: impl FnOnce(&mut Config)) -> TestApp {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let mut config = test_config(data);
    config.listen = addr.to_string();
    tweak(&mut config);
    let core = Arc::new(Core::open(config).unwrap());
    let server = gatehouse::start(Arc::clone(&core), listener).unwrap();
    actix_web::rt::spawn(server);
    TestApp { base: format!("http://{addr}"), core, http: awc::Client::default(), _dir: dir }
}

async fn read<S>(res: Result<awc::ClientResponse<S>, awc::error::SendRequestError>) -> Answer
where
    S: futures_util::Stream<Item = Result<actix_web::web::Bytes, awc::error::PayloadError>> + Unpin,
{
    let mut res = res.expect("the request reached the server");
    let body = res.body().limit(1 << 20).await.expect("a readable body");
    let text = String::from_utf8(body.to_vec()).expect("a UTF-8 body");
    let json = serde_json::from_str(&text).unwrap_or(Value::Null);
    let content_type = res.headers().get("content-type").map(|v| v.to_str().unwrap().to_string()).unwrap_or_default();
    Answer { status: res.status().as_u16(), content_type, headers: res.headers().clone(), text, json }
}

impl TestApp {
    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.base, path)
    }

    pub async fn post_json(&self, path: &str, body: &Value) -> Answer {
        read(self.http.post(self.url(path)).send_json(body).await).await
    }

    pub async fn post_form(&self, path: &str, pairs: &[(&str, &str)]) -> Answer {
        read(self.http.post(self.url(path)).send_form(&pairs).await).await
    }

    /// A POST with exactly this body and, when given, this Content-Type.
    pub async fn post_raw(&self, path: &str, content_type: Option<&str>, body: impl Into<Vec<u8>>) -> Answer {
        let mut req = self.http.post(self.url(path));
        if let Some(ct) = content_type {
            req = req.insert_header(("Content-Type", ct));
        }
        read(req.send_body(body.into()).await).await
    }

    /// Any request, with extra headers and an optional (content type, body).
    pub async fn send(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: Option<(&str, Vec<u8>)>,
    ) -> Answer {
        let mut req = self.http.request(awc::http::Method::from_bytes(method.as_bytes()).unwrap(), self.url(path));
        for (k, v) in headers {
            req = req.insert_header((*k, *v));
        }
        match body {
            Some((ct, bytes)) => read(req.insert_header(("Content-Type", ct)).send_body(bytes).await).await,
            None => read(req.send().await).await,
        }
    }

    /// The messages in the outbox, oldest first, as text.
    pub fn outbox(&self) -> Vec<String> {
        let dir = self.core.config.data_dir.join("outbox");
        let mut files: Vec<_> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|x| x == "eml"))
            .collect();
        files.sort();
        files.into_iter().map(|p| std::fs::read_to_string(p).unwrap()).collect()
    }

    /// Waits up to 10 s for the outbox to hold `n` messages.
    pub async fn wait_outbox(&self, n: usize) -> Vec<String> {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let mail = self.outbox();
            if mail.len() >= n || Instant::now() > deadline {
                return mail;
            }
            actix_web::rt::time::sleep(Duration::from_millis(50)).await;
        }
    }

    pub async fn get(&self, path: &str) -> Answer {
        read(self.http.get(self.url(path)).send().await).await
    }

    pub async fn delete(&self, path: &str) -> Answer {
        read(self.http.delete(self.url(path)).send().await).await
    }

    /// Adds a user with a password, a member of `apps`.
    pub fn add_user(&self, login: &str, password: &str, apps: &[&str]) -> User {
        self.core
            .add_user(NewUser {
                login: login.into(),
                password: Some(Secret::new(password)),
                email: Some(if login.contains('@') {
                    login.to_string()
                } else {
                    format!("{}@example.com", login.replace(' ', "_"))
                }),
                first_name: "John".into(),
                last_name: "Doe".into(),
                civility: "M.".into(),
                user_type: "USER".into(),
                apps: apps.iter().map(|a| a.to_string()).collect(),
            })
            .unwrap()
    }

    /// A direct connection to the same SQLite file, for looking at what was stored.
    pub fn db(&self) -> rusqlite::Connection {
        assert!(!self.core.store.is_shared(), "db() is the SQLite file: use count() or blob()");
        rusqlite::Connection::open(self.core.config.db_path()).unwrap()
    }

    /// The number the query answers in SQLite's log of token uses, a file of its own beside the
    /// database (`token_uses`).
    pub fn count_in_uses_log(&self, sql: &str) -> i64 {
        assert!(!self.core.store.is_shared(), "the log of uses is SQLite's");
        let log = gatehouse::store::uses_log_path(&self.core.config.db_path());
        rusqlite::Connection::open(log).unwrap().query_row(sql, [], |r| r.get(0)).unwrap()
    }

    /// The number the query answers, read from the store directly, whichever backend it is.
    pub fn count(&self, sql: &str) -> i64 {
        if self.core.store.is_shared() {
            return crate::pg::value(&self.core.config.store.postgres_url, sql);
        }
        self.db().query_row(sql, [], |r| r.get(0)).unwrap()
    }

    /// The bytes the query answers, read from the store directly, whichever backend it is.
    pub fn blob(&self, sql: &str) -> Vec<u8> {
        if self.core.store.is_shared() {
            return crate::pg::value(&self.core.config.store.postgres_url, sql);
        }
        self.db().query_row(sql, [], |r| r.get(0)).unwrap()
    }
}

/// The compiled gatehouse binary.
pub fn binary() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_gatehouse"))
}

/// A free loopback port (bound, then released for the child to take).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// Runs the gatehouse command line in `cwd` with `env`, feeding `stdin`.
pub fn gatehouse_cli(cwd: &Path, env: &[(&str, &str)], args: &[&str], stdin: &str) -> std::process::Output {
    use std::io::Write;
    let mut child = Command::new(binary())
        .current_dir(cwd)
        .env_remove("RUST_LOG")
        .envs(env.iter().copied())
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(stdin.as_bytes()).unwrap();
    child.wait_with_output().unwrap()
}

/// A `gatehouse serve` child process; killed when dropped.
pub struct Served {
    pub child: Child,
    pub base: String,
}

impl Drop for Served {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts `gatehouse serve` in `cwd` and waits until /healthz answers.
pub fn serve(cwd: &Path, env: &[(&str, &str)], port: u16, stderr: Stdio) -> Served {
    let child = Command::new(binary())
        .current_dir(cwd)
        .env_remove("RUST_LOG")
        .env("GATEHOUSE_LISTEN", format!("127.0.0.1:{port}"))
        .envs(env.iter().copied())
        .arg("serve")
        .stdout(Stdio::null())
        .stderr(stderr)
        .spawn()
        .unwrap();
    let served = Served { child, base: format!("http://127.0.0.1:{port}") };
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Ok(mut s) = std::net::TcpStream::connect(("127.0.0.1", port)) {
            use std::io::{Read, Write};
            let _ = s.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
            let mut out = String::new();
            let _ = s.read_to_string(&mut out);
            if out.starts_with("HTTP/1.1 200") {
                return served;
            }
        }
        assert!(Instant::now() < deadline, "gatehouse did not become healthy");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// An awc client against a served child.
pub async fn call(method: &str, url: &str, body: Option<Value>) -> Answer {
    let client = awc::Client::default();
    let req = match method {
        "GET" => client.get(url),
        "DELETE" => client.delete(url),
        _ => client.post(url),
    };
    match body {
        Some(b) => read(req.send_json(&b).await).await,
        None => read(req.send().await).await,
    }
}

/// The first `{base}/{kind}/<64 hex>` link in a text, as a path (`/reset/...`).
pub fn link_in(text: &str, kind: &str) -> Option<String> {
    let marker = format!("/{kind}/");
    let start = text.find(&marker)? + marker.len();
    let code: String = text[start..].chars().take_while(|c| c.is_ascii_hexdigit()).collect();
    (code.len() == 64).then(|| format!("/{kind}/{code}"))
}

/// The value of a Set-Cookie header for `name`, whole (with its attributes).
pub fn set_cookie(a: &Answer, name: &str) -> Option<String> {
    a.headers
        .get_all("set-cookie")
        .map(|v| v.to_str().unwrap().to_string())
        .find(|c| c.starts_with(&format!("{name}=")))
}

/// True when a tool the test needs is here. Missing on CI is a failure; missing on a developer's
/// machine skips the test with a note (`.ci/run` installs everything).
pub fn have(tool: &str, probe: &mut Command) -> bool {
    let ok = probe.stdout(Stdio::null()).stderr(Stdio::null()).status().is_ok_and(|s| s.success());
    if !ok {
        assert!(std::env::var_os("CI").is_none(), "{tool} is missing on CI: .ci/run must install it");
        skip_note(tool);
    }
    ok
}

/// Says that a test is skipped for want of `tool`, where `cargo test` shows it: straight to the
/// standard error's file, past the test harness's capture (which takes `eprintln!`, and shows it
/// only for a failure), so that nobody mistakes a skip for a pass.
pub fn skip_note(tool: &str) {
    use std::io::Write;
    let line = format!("SKIPPED ({}): {tool} is not installed here (.ci/run installs it)\n", current_test());
    let _ = std::io::stderr().lock().write_all(line.as_bytes());
}

/// The running test's name (the harness names each test's thread after it).
fn current_test() -> String {
    std::thread::current().name().unwrap_or("a test").to_string()
}

/// A self-signed certificate for `name`, written as PEM to `dir/cert.pem` and `dir/key.pem`
/// (again over the last one, for a renewal); the two paths and the certificate.
pub fn write_self_signed(dir: &Path, name: &str) -> (PathBuf, PathBuf, rustls::pki_types::CertificateDer<'static>) {
    let cert = rcgen::generate_simple_self_signed(vec![name.to_string()]).unwrap();
    let (cert_file, key_file) = (dir.join("cert.pem"), dir.join("key.pem"));
    std::fs::write(&cert_file, cert.cert.pem()).unwrap();
    std::fs::write(&key_file, cert.signing_key.serialize_pem()).unwrap();
    (cert_file, key_file, cert.cert.der().clone())
}

/// Reads a served child's standard error as it is written (a full pipe would block the server's
/// logging, and the server with it); the whole log once the child is gone.
pub fn log_of(server: &mut Served) -> std::thread::JoinHandle<String> {
    use std::io::Read;
    let mut stderr = server.child.stderr.take().unwrap();
    std::thread::spawn(move || {
        let mut log = String::new();
        stderr.read_to_string(&mut log).unwrap();
        log
    })
}

/// The lines of README.md between `<!-- NAME:begin -->` and `<!-- NAME:end -->`, without the
/// fences: a block the README prints, run as printed by a test.
pub fn readme_block(name: &str) -> String {
    let readme = include_str!("../../README.md");
    let start = readme.find(&format!("<!-- {name}:begin -->")).expect("the block is marked");
    let end = readme.find(&format!("<!-- {name}:end -->")).expect("the block is marked");
    readme[start..end]
        .lines()
        .filter(|l| !l.starts_with("```") && !l.starts_with("<!--"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// Debian's path of a program (`/usr/sbin/nginx`, `/usr/bin/caddy`) when it is there, else its name.
pub fn system_binary(path: &'static str) -> &'static str {
    if std::path::Path::new(path).exists() {
        path
    } else {
        path.rsplit('/').next().unwrap_or(path)
    }
}

/// A child process killed (and reaped) when the test ends, however it ends.
pub struct KillOnDrop(pub std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}
