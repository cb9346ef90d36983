//! Losing a node, or the database, under a mixed write load: every write that was answered is
//! there afterwards, the nodes that live keep answering, and during a gap of the database they
//! answer 503 (never 500) and recover by themselves.

use gatehouse::core::apps::Door;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use base64::Engine;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

use crate::helpers::{free_port, gatehouse_cli, serve, Served, TestApp};
use crate::iampass::{fresh_nonce, sign};

const PASSWORD: &str = "correct horse battery";

/// What the load needs to sign in and to sign its calls.
#[derive(Clone)]
struct Creds {
    iqm_basic: String,
    app: String,
    app_secret: String,
}

/// Every write the load saw answered, and what else it saw.
#[derive(Default)]
struct Ledger {
    users: Vec<String>,
    tokens: Vec<String>,
    devices: Vec<i64>,
    /// Answers by status, per node.
    statuses: BTreeMap<(usize, u16), usize>,
    /// Requests that got no answer (the node was gone, or the connection dropped).
    unanswered: usize,
    /// The body of every 500.
    server_errors: Vec<String>,
}

impl Ledger {
    fn count(&self, node: usize, status: u16) -> usize {
        self.statuses.get(&(node, status)).copied().unwrap_or(0)
    }
}

struct Load {
    stop: Arc<AtomicBool>,
    ledger: Arc<Mutex<Ledger>>,
    workers: Vec<actix_web::rt::task::JoinHandle<()>>,
}

impl Load {
    /// `n` workers sending sign-ups, add_users with a device registration, password logins and
    /// refresh grants, round-robin over `nodes` (base URLs), until `stop`.
    fn start(nodes: Vec<String>, creds: Creds, n: usize, tag: &str) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let ledger = Arc::new(Mutex::new(Ledger::default()));
        let nodes = Arc::new(nodes);
        let workers = (0..n)
            .map(|w| {
                let (stop, ledger, nodes, creds) = (stop.clone(), ledger.clone(), nodes.clone(), creds.clone());
                let tag = format!("{tag}{w}");
                actix_web::rt::spawn(async move { worker(w, &nodes, &creds, &tag, &stop, &ledger).await })
            })
            .collect();
        Load { stop, ledger, workers }
    }

    async fn finish(self) -> Ledger {
        self.stop.store(true, Ordering::Relaxed);
        for w in self.workers {
            w.await.unwrap();
        }
        std::mem::take(&mut *self.ledger.lock().unwrap())
    }

    fn snapshot(&self, node: usize, status: u16) -> usize {
        self.ledger.lock().unwrap().count(node, status)
    }
}

/// One request: Some((status, body)) when answered.
async fn send(method: &str, url: &str, headers: &[(&str, String)], body: Option<Value>) -> Option<(u16, Value)> {
    let client = awc::Client::builder().timeout(Duration::from_secs(15)).finish();
    let mut req = client.request(awc::http::Method::from_bytes(method.as_bytes()).unwrap(), url);
    for (k, v) in headers {
        req = req.insert_header((*k, v.as_str()));
    }
    let res = match body {
        Some(b) => req.send_json(&b).await,
        None => req.send().await,
    };
    let mut res = res.ok()?;
    let status = res.status().as_u16();
    let bytes = res.body().limit(1 << 20).await.ok()?;
    Some((
        status,
        serde_json::from_slice(&bytes).unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into())),
    ))
}

fn signed_headers(creds: &Creds, base: &str, target: &str) -> Vec<(&'static str, String)> {
    let nonce = fresh_nonce();
    let ts = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs().to_string();
    let url = format!("{}{target}", base.trim_start_matches("http://"));
    let auth = format!("hmac {}:{nonce}:{}", creds.app, sign(&creds.app_secret, &nonce, &url, &ts));
    vec![("Authentication", auth), ("X-IAMPASS-Authentication-Timestamp", ts)]
}

async fn worker(w: usize, nodes: &[String], creds: &Creds, tag: &str, stop: &AtomicBool, ledger: &Mutex<Ledger>) {
    let mut refresh: Option<String> = None;
    let mut i = 0usize;
    while !stop.load(Ordering::Relaxed) {
        let node = (w + i) % nodes.len();
        let base = &nodes[node];
        let note = |answer: &Option<(u16, Value)>| {
            let mut l = ledger.lock().unwrap();
            match answer {
                None => l.unanswered += 1,
                Some((status, body)) => {
                    *l.statuses.entry((node, *status)).or_default() += 1;
                    if *status == 500 {
                        l.server_errors.push(body.to_string());
                    }
                }
            }
        };
        match i % 4 {
            0 => {
                let email = format!("{tag}-{i}@load.test");
                let a = send(
                    "POST",
                    &format!("{base}/api/v3/ua/sign-up"),
                    &[("Authorization", creds.iqm_basic.clone())],
                    Some(json!({"email": email, "password": PASSWORD})),
                )
                .await;
                note(&a);
                if let Some((200, body)) = a {
                    let mut l = ledger.lock().unwrap();
                    l.users.push(email);
                    l.tokens.push(body["data"]["access_token"].as_str().unwrap().to_string());
                    refresh = body["data"]["refresh_token"].as_str().map(String::from);
                }
            }
            1 => {
                let login = format!("{tag}-d{i}");
                let target = format!("/management/add_users/{}", creds.app);
                let headers = signed_headers(creds, base, &target);
                let a = send("POST", &format!("{base}{target}"), &headers, Some(json!({"users": [login]}))).await;
                note(&a);
                if !matches!(a, Some((200 | 201, _))) {
                    i += 1;
                    continue;
                }
                ledger.lock().unwrap().users.push(login.clone());
                let target = format!("/management/device_registration_link/{}/{login}", creds.app);
                let headers = signed_headers(creds, base, &target);
                let a = send("GET", &format!("{base}{target}"), &headers, None).await;
                note(&a);
                let Some((200, body)) = a else {
                    i += 1;
                    continue;
                };
                let url = body["register_url"].as_str().unwrap();
                let path = &url[url.find("/register/").unwrap()..];
                let a = send("POST", &format!("{base}{path}"), &[], Some(json!({"device_name": "phone"}))).await;
                note(&a);
                if let Some((201, body)) = a {
                    let id = &body["device_id"];
                    let id = id.as_i64().or_else(|| id.as_str().and_then(|s| s.parse().ok())).unwrap();
                    ledger.lock().unwrap().devices.push(id);
                }
            }
            2 => {
                let a = send(
                    "POST",
                    &format!("{base}/iam/login"),
                    &[],
                    Some(json!({"login": "loader", "password": PASSWORD, "app_id": "forepaas",
                                "auth_mode": "forepaas_id_resource_owner"})),
                )
                .await;
                note(&a);
                if let Some((200, body)) = a {
                    ledger.lock().unwrap().tokens.push(body["token"].as_str().unwrap().to_string());
                }
            }
            _ => {
                let Some(r) = refresh.take() else {
                    i += 1;
                    continue;
                };
                let a = send(
                    "POST",
                    &format!("{base}/api/v3/ua/oauth/token"),
                    &[],
                    Some(json!({"grant_type": "refresh_token", "refresh_token": r})),
                )
                .await;
                note(&a);
                if let Some((200, body)) = a {
                    ledger.lock().unwrap().tokens.push(body["access_token"].as_str().unwrap().to_string());
                    refresh = body["refresh_token"].as_str().map(String::from);
                }
            }
        }
        i += 1;
    }
}

/// Every answered write of `ledger` is in the database at `url`.
fn assert_all_there(url: &str, ledger: &Ledger) {
    let url = url.to_string();
    std::thread::scope(|s| {
        s.spawn(|| {
            let mut db = postgres::Client::connect(&url, postgres::NoTls).unwrap();
            for login in &ledger.users {
                let n: i64 = db
                    .query_one("SELECT count(*) FROM users WHERE login_key = $1", &[&login.to_lowercase()])
                    .unwrap()
                    .get(0);
                assert_eq!(n, 1, "the answered user {login} is there");
            }
            for token in &ledger.tokens {
                let digest = Sha256::digest(token.as_bytes()).to_vec();
                let n: i64 = db.query_one("SELECT count(*) FROM tokens WHERE digest = $1", &[&digest]).unwrap().get(0);
                assert_eq!(n, 1, "an answered token is there");
            }
            for id in &ledger.devices {
                let n: i64 = db.query_one("SELECT count(*) FROM devices WHERE id = $1", &[id]).unwrap().get(0);
                assert_eq!(n, 1, "the answered device {id} is there");
            }
        })
        .join()
        .unwrap()
    });
    assert!(ledger.server_errors.is_empty(), "no 500: {:?}", ledger.server_errors);
    let (users, tokens, devices) = (ledger.users.len(), ledger.tokens.len(), ledger.devices.len());
    assert!(users > 10 && tokens > 10 && devices > 2, "{users} users, {tokens} tokens, {devices} devices");
}

fn basic(id: &str, secret: &str) -> String {
    format!("Basic {}", base64::engine::general_purpose::STANDARD.encode(format!("{id}:{secret}")))
}

/// In-process nodes on `url`, with the first node's master key, and the load's credentials.
async fn app_nodes(n: usize, url: &str) -> (Vec<TestApp>, Creds) {
    let nodes = crate::cluster::nodes_on(url, n, |c| {
        c.store.postgres_connect_timeout = gatehouse::config::Seconds::secs(1);
    })
    .await;
    let iqm = nodes[0].core.add_app("iqm-client", None, &[Door::Iqm, Door::Oauth]).unwrap().expose().to_string();
    let app_secret = nodes[0].core.add_app("partner-app", None, &[Door::Iampass]).unwrap().expose().to_string();
    nodes[0].add_user("loader", PASSWORD, &["forepaas"]);
    (nodes, Creds { iqm_basic: basic("iqm-client", &iqm), app: "partner-app".into(), app_secret })
}

/// Polls `/healthz` of `base` until it answers `status`; false after `within`.
async fn health_becomes(base: &str, status: u16, within: Duration) -> bool {
    let deadline = Instant::now() + within;
    while Instant::now() < deadline {
        if send("GET", &format!("{base}/healthz"), &[], None).await.is_some_and(|(s, _)| s == status) {
            return true;
        }
        actix_web::rt::time::sleep(Duration::from_millis(100)).await;
    }
    false
}

async fn sleep(ms: u64) {
    actix_web::rt::time::sleep(Duration::from_millis(ms)).await;
}

/// A `gatehouse serve` node on the database `url`, its data in `dir`.
fn node(dir: &Path, url: &str, key: Option<&PathBuf>) -> Served {
    std::fs::create_dir_all(dir).unwrap();
    let mut env = vec![
        ("GATEHOUSE_DATA_DIR", dir.join("data").display().to_string()),
        ("GATEHOUSE_STORE__BACKEND", "postgres".to_string()),
        ("GATEHOUSE_STORE__POSTGRES_URL", url.to_string()),
        ("GATEHOUSE_HTTP__WORKERS", "1".to_string()),
        ("GATEHOUSE_ARGON2__WORKERS", "1".to_string()),
    ];
    if let Some(key) = key {
        env.push(("GATEHOUSE_MASTER_KEY_FILE", key.display().to_string()));
    }
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    serve(dir, &env, free_port(), Stdio::null())
}

#[actix_web::test]
async fn killing_a_node_mid_load_loses_no_answered_write_and_the_others_go_on() {
    let Some(cluster) = crate::pg::cluster_or_skip() else { return };
    let url = cluster.new_database();
    let root = tempfile::tempdir().unwrap();
    let first = root.path().join("n0");
    // The command line sets up on the first node's data directory (and creates its master key).
    let env = [
        ("GATEHOUSE_DATA_DIR", first.join("data").display().to_string()),
        ("GATEHOUSE_STORE__BACKEND", "postgres".to_string()),
        ("GATEHOUSE_STORE__POSTGRES_URL", url.clone()),
    ];
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    std::fs::create_dir_all(&first).unwrap();
    let secret_of = |id: &str| {
        let door = if id.starts_with("iqm") { "iqm" } else { "iampass" };
        let out = gatehouse_cli(&first, &env, &["app", "add", id, "--door", door], "");
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8(out.stdout).unwrap().split_whitespace().last().unwrap().to_string()
    };
    let creds = Creds {
        iqm_basic: basic("iqm-client", &secret_of("iqm-client")),
        app: "partner-app".into(),
        app_secret: secret_of("partner-app"),
    };
    let out = gatehouse_cli(&first, &env, &["user", "add", "loader", "--password-stdin"], &format!("{PASSWORD}\n"));
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));

    let key = first.join("data/master.key");
    let mut nodes: Vec<Served> = vec![node(&first, &url, None)];
    for n in 1..3 {
        nodes.push(node(&root.path().join(format!("n{n}")), &url, Some(&key)));
    }
    let load = Load::start(nodes.iter().map(|n| n.base.clone()).collect(), creds, 3, "kill");
    sleep(2500).await;
    nodes[2].child.kill().unwrap(); // SIGKILL
    nodes[2].child.wait().unwrap();
    let before: Vec<usize> = (0..2).map(|n| load.snapshot(n, 200) + load.snapshot(n, 201)).collect();
    sleep(2500).await;
    let ledger = load.finish().await;
    for (n, before) in before.iter().enumerate() {
        let after = ledger.count(n, 200) + ledger.count(n, 201);
        assert!(after > *before, "node {n} kept answering after another died: {:?}", ledger.statuses);
    }
    assert!(ledger.unanswered > 0, "the dead node's requests went unanswered: {:?}", ledger.statuses);
    assert_all_there(&url, &ledger);
}

/// A server of the test's own, on `dir`/`name`, that the test may stop and start.
pub(crate) fn own_server(dir: &Path, name: &str, port: u16, extra: &[&str]) -> Child {
    let data = dir.join(name);
    let mut child = crate::pg::spawn_server(&data, port, extra);
    std::thread::scope(|s| s.spawn(|| crate::pg::wait_ready(&mut child, port, Duration::from_secs(30))).join())
        .unwrap()
        .unwrap_or_else(|e| panic!("{e}: {}", std::fs::read_to_string(data.with_extension("log")).unwrap_or_default()));
    child
}

/// Waits for every node to say healthy again (without a restart), lets the load go on a while,
/// and answers what it saw once it is sure writes were answered after the recovery.
async fn recovered(nodes: &[TestApp], load: Load) -> Ledger {
    for n in nodes {
        assert!(health_becomes(&n.base, 200, Duration::from_secs(20)).await, "healthy again, no restart");
    }
    let answered = load.snapshot(0, 200) + load.snapshot(1, 200);
    sleep(1500).await;
    let ledger = load.finish().await;
    assert!(ledger.count(0, 200) + ledger.count(1, 200) > answered, "writes go on after: {:?}", ledger.statuses);
    ledger
}

pub(crate) fn stop_now(child: &mut Child, signal: i32) {
    unsafe { libc::kill(child.id() as libc::pid_t, signal) };
    child.wait().unwrap();
}

#[actix_web::test]
async fn a_database_restart_mid_load_is_answered_503_then_recovered_from_losing_nothing() {
    if crate::pg::cluster_or_skip().is_none() {
        return;
    }
    let dir = crate::pg::server_dir();
    crate::pg::initdb(&dir.path().join("data"));
    let port = free_port();
    let mut server = own_server(dir.path(), "data", port, &[]);
    let url = format!("postgres://postgres@127.0.0.1:{port}/postgres");
    let (nodes, creds) = app_nodes(2, &url).await;
    let load = Load::start(nodes.iter().map(|n| n.base.clone()).collect(), creds, 3, "restart");
    sleep(1500).await;

    // pg_ctl restart -m immediate: SIGQUIT, then the server again on the same files.
    stop_now(&mut server, libc::SIGQUIT);
    assert!(health_becomes(&nodes[0].base, 503, Duration::from_secs(10)).await, "unhealthy while it is down");
    sleep(1000).await;
    let mut server = own_server(dir.path(), "data", port, &[]);
    let ledger = recovered(&nodes, load).await;
    assert!(ledger.count(0, 503) + ledger.count(1, 503) > 0, "the gap was answered 503: {:?}", ledger.statuses);
    assert_all_there(&url, &ledger);
    stop_now(&mut server, libc::SIGINT); // fast shutdown: the nodes still hold connections
}

#[actix_web::test]
async fn a_synchronous_standby_promoted_after_the_primary_is_killed_has_every_answered_write() {
    if crate::pg::cluster_or_skip().is_none() {
        return;
    }
    let dir = crate::pg::server_dir();
    crate::pg::initdb(&dir.path().join("primary"));
    let (p1, p2) = (free_port(), free_port());
    let mut primary = own_server(
        dir.path(),
        "primary",
        p1,
        &["-c", "wal_level=replica", "-c", "max_wal_senders=4", "-c", "synchronous_standby_names=*"],
    );
    let standby = dir.path().join("standby");
    let p1s = p1.to_string();
    let standby_s = standby.display().to_string();
    crate::pg::run_tool(
        "pg_basebackup",
        &["-h", "127.0.0.1", "-p", &p1s, "-U", "postgres", "-D", &standby_s, "-R", "-X", "stream", "--checkpoint=fast"],
    );
    let mut standby_server = own_server(dir.path(), "standby", p2, &[]);
    // Nodes know both hosts and take the one that accepts writes.
    let url = format!("postgres://postgres@127.0.0.1:{p1},127.0.0.1:{p2}/postgres?target_session_attrs=read-write");
    let (nodes, creds) = app_nodes(2, &url).await;
    let load = Load::start(nodes.iter().map(|n| n.base.clone()).collect(), creds, 3, "failover");
    sleep(2000).await;

    primary.kill().unwrap(); // SIGKILL
    primary.wait().unwrap();
    crate::pg::run_tool("pg_ctl", &["promote", "-w", "-D", &standby_s]);
    let ledger = recovered(&nodes, load).await;
    assert_all_there(&format!("postgres://postgres@127.0.0.1:{p2}/postgres"), &ledger);
    stop_now(&mut standby_server, libc::SIGINT);
}
