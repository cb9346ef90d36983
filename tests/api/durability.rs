//! Losing nothing: SIGKILL during a mixed write load, a hundred parallel writers, backup and
//! restore under load.

use gatehouse::core::apps::Door;
use std::process::Stdio;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

use crate::helpers::{free_port, gatehouse_cli, serve, spawn_app};
use crate::iampass::{fresh_nonce, sign};

const PASSWORD: &str = "a long enough password";

/// A request against a served process: status and JSON, or None when it got no answer.
async fn send(
    base: &str,
    method: &str,
    target: &str,
    headers: Vec<(String, String)>,
    body: Option<Value>,
) -> Option<(u16, Value)> {
    let client = awc::Client::builder().timeout(Duration::from_secs(20)).finish();
    let mut req = client.request(awc::http::Method::from_bytes(method.as_bytes()).unwrap(), format!("{base}{target}"));
    for (k, v) in headers {
        req = req.insert_header((k, v));
    }
    let mut res = match body {
        Some(b) => req.send_json(&b).await.ok()?,
        None => req.send().await.ok()?,
    };
    let json = res.json::<Value>().limit(1 << 20).await.unwrap_or(Value::Null);
    Some((res.status().as_u16(), json))
}

fn signed_headers(base: &str, app: &str, secret: &str, target: &str) -> Vec<(String, String)> {
    let nonce = fresh_nonce();
    let ts = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs().to_string();
    let url = format!("{}{target}", base.trim_start_matches("http://"));
    vec![
        ("Authentication".into(), format!("hmac {app}:{nonce}:{}", sign(secret, &nonce, &url, &ts))),
        ("X-IAMPASS-Authentication-Timestamp".into(), ts),
    ]
}

fn digest_hex(token: &str) -> Vec<u8> {
    Sha256::digest(token.as_bytes()).to_vec()
}

fn cli_ok(dir: &std::path::Path, args: &[&str]) -> String {
    let out = gatehouse_cli(dir, &[], args, "");
    assert!(out.status.success(), "{args:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap()
}

/// What the load saw answered with success.
#[derive(Default)]
struct Acked {
    signed_up: Vec<String>,
    added: Vec<String>,
    refresh_tokens: Vec<String>,
    device_keys: Vec<String>,
}

#[actix_web::test]
async fn sigkill_during_a_mixed_write_load_loses_no_answered_write() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let iqm_secret = cli_ok(d, &["app", "add", "iqm-client", "--door", "iqm", "--door", "oauth"])
        .split_whitespace()
        .last()
        .unwrap()
        .to_string();
    let mgmt_secret =
        cli_ok(d, &["app", "add", "mgmt-app", "--door", "iampass"]).split_whitespace().last().unwrap().to_string();
    let basic =
        format!("Basic {}", base64::engine::general_purpose::STANDARD.encode(format!("iqm-client:{iqm_secret}")));
    let port = free_port();
    let mut server = serve(d, &[], port, Stdio::null());
    let base = server.base.clone();

    // A refresh chain to rotate.
    let (_, first) = send(
        &base,
        "POST",
        "/api/v3/ua/sign-up",
        vec![("Authorization".into(), basic.clone())],
        Some(json!({"email": "chain@example.com", "password": PASSWORD})),
    )
    .await
    .unwrap();
    let acked = Arc::new(Mutex::new(Acked::default()));
    acked.lock().unwrap().signed_up.push("chain@example.com".into());
    let stop = Arc::new(AtomicBool::new(false));
    let mut tasks = Vec::new();

    // Sign-ups.
    for w in 0..2 {
        let (base, basic, acked, stop) = (base.clone(), basic.clone(), acked.clone(), stop.clone());
        tasks.push(actix_web::rt::spawn(async move {
            for i in 0.. {
                if stop.load(Ordering::Relaxed) {
                    break;
                }
                let email = format!("s{w}-{i}@example.com");
                match send(
                    &base,
                    "POST",
                    "/api/v3/ua/sign-up",
                    vec![("Authorization".into(), basic.clone())],
                    Some(json!({"email": email, "password": PASSWORD})),
                )
                .await
                {
                    Some((200, _)) => acked.lock().unwrap().signed_up.push(email),
                    Some(_) => {}
                    None => break,
                }
            }
        }));
    }
    // add_users of one user, and device registrations for some of them.
    for w in 0..2 {
        let (base, secret, acked, stop) = (base.clone(), mgmt_secret.clone(), acked.clone(), stop.clone());
        tasks.push(actix_web::rt::spawn(async move {
            for i in 0.. {
                if stop.load(Ordering::Relaxed) {
                    break;
                }
                let login = format!("m{w}-{i}");
                let target = "/management/add_users/mgmt-app";
                match send(
                    &base,
                    "POST",
                    target,
                    signed_headers(&base, "mgmt-app", &secret, target),
                    Some(json!({"users": [login]})),
                )
                .await
                {
                    Some((201, _)) => acked.lock().unwrap().added.push(login.clone()),
                    Some(_) => continue,
                    None => break,
                }
                let target = format!("/management/device_registration_link/mgmt-app/{login}");
                let Some((200, link)) =
                    send(&base, "GET", &target, signed_headers(&base, "mgmt-app", &secret, &target), None).await
                else {
                    break;
                };
                let path = link["register_url"].as_str().unwrap().trim_start_matches(&base).to_string();
                match send(&base, "POST", &path, vec![], Some(json!({"device_name": "phone"}))).await {
                    Some((201, r)) => acked.lock().unwrap().device_keys.push(r["apikey"].as_str().unwrap().to_string()),
                    Some(_) => {}
                    None => break,
                }
            }
        }));
    }
    // Refreshes, each with the token the previous one answered.
    {
        let (base, acked, stop) = (base.clone(), acked.clone(), stop.clone());
        let mut token = first["data"]["refresh_token"].as_str().unwrap().to_string();
        tasks.push(actix_web::rt::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                match send(
                    &base,
                    "POST",
                    "/api/v3/ua/oauth/token",
                    vec![],
                    Some(json!({"grant_type": "refresh_token", "refresh_token": token})),
                )
                .await
                {
                    Some((200, r)) => {
                        token = r["refresh_token"].as_str().unwrap().to_string();
                        acked.lock().unwrap().refresh_tokens.push(token.clone());
                    }
                    _ => break,
                }
            }
        }));
    }

    actix_web::rt::time::sleep(Duration::from_millis(2500)).await;
    server.child.kill().unwrap(); // SIGKILL
    server.child.wait().unwrap();
    stop.store(true, Ordering::Relaxed);
    for t in tasks {
        let _ = t.await;
    }
    drop(server);

    let acked = std::mem::take(&mut *acked.lock().unwrap());
    let db = rusqlite::Connection::open(d.join("data/gatehouse.db")).unwrap();
    let ok: String = db.query_row("PRAGMA integrity_check", [], |r| r.get(0)).unwrap();
    assert_eq!(ok, "ok");
    let has = |sql: &str, p: &dyn rusqlite::ToSql| db.query_row(sql, [p], |r| r.get::<_, i64>(0)).unwrap() == 1;
    let mut lost = 0;
    for email in &acked.signed_up {
        // Whole: the user, its workspace and its membership.
        lost += usize::from(!has(
            "SELECT count(*) FROM users u JOIN memberships m ON m.user_id = u.id AND m.app_id = 'iqm-client'
             WHERE u.login = ?1 AND u.workspace_id IS NOT NULL",
            email,
        ));
    }
    for login in &acked.added {
        lost += usize::from(!has("SELECT count(*) FROM users u JOIN memberships m ON m.user_id = u.id AND m.app_id = 'mgmt-app' WHERE u.login = ?1", login));
    }
    for token in &acked.refresh_tokens {
        lost += usize::from(!has("SELECT count(*) FROM tokens WHERE digest = ?1", &digest_hex(token)));
    }
    for key in &acked.device_keys {
        lost += usize::from(!has(
            "SELECT count(*) FROM devices d JOIN api_keys k ON k.id = d.api_key_id WHERE k.id = ?1",
            key,
        ));
    }
    let total = acked.signed_up.len() + acked.added.len() + acked.refresh_tokens.len() + acked.device_keys.len();
    eprintln!(
        "SIGKILL test: {total} writes acknowledged ({} sign-ups, {} add_users, {} refreshes, {} device registrations), {lost} lost",
        acked.signed_up.len(),
        acked.added.len(),
        acked.refresh_tokens.len(),
        acked.device_keys.len()
    );
    assert!(
        acked.signed_up.len() > 1
            && acked.added.len() > 1
            && acked.refresh_tokens.len() > 1
            && !acked.device_keys.is_empty()
    );
    assert_eq!(lost, 0, "every answered write survived the kill");

    // And the restarted server serves them.
    let server = serve(d, &[], port, Stdio::null());
    let last = acked.signed_up.last().unwrap();
    let login = send(
        &server.base,
        "POST",
        "/api/v3/ua/login",
        vec![("Authorization".into(), basic)],
        Some(json!({"email": last, "password": PASSWORD})),
    )
    .await;
    assert_eq!(login.map(|(s, _)| s), Some(200));
}

#[actix_web::test]
async fn a_hundred_parallel_writers_never_see_a_locked_database() {
    let app = spawn_app().await;
    let secret = app.core.add_app("mgmt-app", None, &[Door::Iampass]).unwrap().expose().to_string();
    let handles: Vec<_> = (0..100)
        .map(|i| {
            let (base, secret) = (app.base.clone(), secret.clone());
            actix_web::rt::spawn(async move {
                let target = "/management/add_users/mgmt-app";
                send(
                    &base,
                    "POST",
                    target,
                    signed_headers(&base, "mgmt-app", &secret, target),
                    Some(json!({"users": [format!("writer{i}")]})),
                )
                .await
            })
        })
        .collect();
    let mut statuses = Vec::new();
    for h in handles {
        statuses.push(h.await.unwrap().map(|(s, j)| (s, j.to_string())));
    }
    let bad: Vec<_> = statuses.iter().filter(|s| !matches!(s, Some((201, _)))).collect();
    assert!(bad.is_empty(), "{bad:?}");
    assert_eq!(app.count("SELECT count(*) FROM users WHERE login LIKE 'writer%'"), 100);
}

#[actix_web::test]
async fn backup_under_load_and_restore_into_a_stopped_directory() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let iqm_secret = cli_ok(d, &["app", "add", "iqm-client", "--door", "iqm", "--door", "oauth"])
        .split_whitespace()
        .last()
        .unwrap()
        .to_string();
    let basic =
        format!("Basic {}", base64::engine::general_purpose::STANDARD.encode(format!("iqm-client:{iqm_secret}")));
    let port = free_port();
    let server = serve(d, &[], port, Stdio::null());
    let base = server.base.clone();
    for i in 0..3 {
        let r = send(
            &base,
            "POST",
            "/api/v3/ua/sign-up",
            vec![("Authorization".into(), basic.clone())],
            Some(json!({"email": format!("before{i}@example.com"), "password": PASSWORD})),
        )
        .await;
        assert_eq!(r.map(|(s, _)| s), Some(200));
    }
    // Writes go on while the backup is taken.
    let stop = Arc::new(AtomicBool::new(false));
    let load = {
        let (base, basic, stop) = (base.clone(), basic.clone(), stop.clone());
        actix_web::rt::spawn(async move {
            let mut n = 0;
            while !stop.load(Ordering::Relaxed) {
                let body = json!({"email": format!("during{n}@example.com"), "password": PASSWORD});
                if let Some((200, _)) =
                    send(&base, "POST", "/api/v3/ua/sign-up", vec![("Authorization".into(), basic.clone())], Some(body))
                        .await
                {
                    n += 1;
                }
            }
            n
        })
    };
    actix_web::rt::time::sleep(Duration::from_millis(300)).await;
    let backup = d.join("backup.db");
    let out = actix_web::web::block({
        let (d, backup) = (d.to_path_buf(), backup.clone());
        move || gatehouse_cli(&d, &[], &["backup", backup.to_str().unwrap()], "")
    })
    .await
    .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    actix_web::rt::time::sleep(Duration::from_millis(300)).await;
    stop.store(true, Ordering::Relaxed);
    let during = load.await.unwrap();
    assert!(during > 0, "the load ran");

    // A restore into the running server's directory is refused.
    let out = gatehouse_cli(d, &[], &["restore", backup.to_str().unwrap()], "");
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("running"), "{}", String::from_utf8_lossy(&out.stderr));
    // A second server on the same directory is refused too.
    let second = gatehouse_cli(d, &[("GATEHOUSE_LISTEN", &format!("127.0.0.1:{}", free_port()))], &["serve"], "");
    assert_eq!(second.status.code(), Some(1));

    // Restored into a new directory (with the master key, kept separately), it serves.
    let other = tempfile::tempdir().unwrap();
    let o = other.path();
    std::fs::create_dir_all(o.join("data")).unwrap();
    std::fs::copy(d.join("data/master.key"), o.join("data/master.key")).unwrap();
    let restored = cli_ok(o, &["restore", backup.to_str().unwrap()]);
    assert!(restored.contains("restored"), "{restored}");
    let db = rusqlite::Connection::open(o.join("data/gatehouse.db")).unwrap();
    let users: i64 = db.query_row("SELECT count(*) FROM users", [], |r| r.get(0)).unwrap();
    assert!((3..=3 + during as i64).contains(&users), "a consistent snapshot: {users} users");
    let ok: String = db.query_row("PRAGMA integrity_check", [], |r| r.get(0)).unwrap();
    assert_eq!(ok, "ok");
    drop(server);
    let port = free_port();
    let restored_server = serve(o, &[], port, Stdio::null());
    let r = send(
        &restored_server.base,
        "POST",
        "/api/v3/ua/login",
        vec![("Authorization".into(), basic)],
        Some(json!({"email": "before2@example.com", "password": PASSWORD})),
    )
    .await;
    assert_eq!(r.map(|(s, _)| s), Some(200), "users and the client's sealed secret came back");
    // A backup never overwrites.
    let again = gatehouse_cli(d, &[], &["backup", backup.to_str().unwrap()], "");
    assert_eq!(again.status.code(), Some(1));
}

/// Item 10 of issue 24: a backup edited to carry what gatehouse did not make is refused.
#[test]
fn a_tampered_backup_is_refused_and_the_live_database_left_as_it_was() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    cli_ok(d, &["user", "add", "alice", "--no-password"]);
    cli_ok(d, &["apikey", "add", "alice", "--expires-in", "1h"]);
    cli_ok(d, &["user", "block", "alice"]);
    let backup = d.join("backup.db");
    let mac = d.join("backup.db.mac");
    let written = cli_ok(d, &["backup", backup.to_str().unwrap()]);
    assert!(written.contains("backup.db.mac"), "{written}");
    assert_eq!(std::fs::metadata(&mac).unwrap().permissions().mode() & 0o777, 0o600);
    let sealed = std::fs::read_to_string(&mac).unwrap();
    assert_eq!(sealed.trim().len(), 64, "HMAC-SHA256 in hex: {sealed}");
    // The live database moves on after the backup: a refused restore must leave it so.
    cli_ok(d, &["user", "add", "after-the-backup", "--no-password"]);
    let live = d.join("data/gatehouse.db");
    let before = std::fs::read(&live).unwrap();

    let refused = |file: &std::path::Path, args: &[&str]| -> String {
        let mut all = vec!["restore", file.to_str().unwrap()];
        all.extend_from_slice(args);
        let out = gatehouse_cli(d, &[], &all, "");
        let err = String::from_utf8_lossy(&out.stderr).into_owned();
        assert_eq!(out.status.code(), Some(1), "{all:?} was not refused: {err}");
        assert_eq!(err.trim_end().lines().count(), 1, "{err}");
        assert!(std::fs::read(&live).unwrap() == before, "{all:?} changed the live database");
        err
    };
    let tampered = |name: &str, sql: &str| -> std::path::PathBuf {
        let file = d.join(format!("{name}.db"));
        std::fs::copy(&backup, &file).unwrap();
        rusqlite::Connection::open(&file).unwrap().execute_batch(sql).unwrap();
        file
    };
    let objects = [
        (
            "forget_audit",
            "CREATE TRIGGER forget_audit AFTER INSERT ON audit BEGIN DELETE FROM audit WHERE id = new.id; END;",
        ),
        (
            "stay_unblocked",
            "CREATE TRIGGER stay_unblocked AFTER UPDATE OF blocked ON users BEGIN
                 UPDATE users SET blocked = 0 WHERE id = new.id; END;",
        ),
        ("logins", "CREATE VIEW logins AS SELECT login, password_hash FROM users;"),
        ("users_by_email", "CREATE INDEX users_by_email ON users(email);"),
        ("stash", "CREATE TABLE stash (x);"),
        // A table gatehouse made, with a definition it did not.
        ("audit", "ALTER TABLE audit ADD COLUMN note TEXT;"),
        // An index gatehouse made, gone.
        ("audit_at", "DROP INDEX audit_at;"),
    ];
    for (name, sql) in objects {
        let file = tampered(&format!("with-{name}"), sql);
        // Even unsealed, the schema is checked against what schema.sql makes at that version.
        let err = refused(&file, &["--unsealed"]);
        assert!(err.contains(&format!("\"{name}\"")) || err.contains(&format!("{name} ")), "{name}: {err}");
        assert!(err.contains("schema"), "{name}: {err}");
        // With the genuine backup's MAC beside it, the MAC no longer matches.
        std::fs::copy(&mac, d.join(format!("with-{name}.db.mac"))).unwrap();
        let err = refused(&file, &[]);
        assert!(err.contains(".mac") && err.contains("does not match"), "{name}: {err}");
    }

    // Rows alone are data: an API key valid until 2255 and alice unblocked look like real ones.
    // Only the MAC tells them from the backup gatehouse wrote.
    let data = tampered(
        "data",
        "UPDATE api_keys SET expires_at = 9000000000000; UPDATE users SET blocked = 0 WHERE login = 'alice';",
    );
    std::fs::copy(&mac, d.join("data.db.mac")).unwrap();
    assert!(refused(&data, &[]).contains("does not match"));
    // A backup with no MAC at all is refused unless the operator says --unsealed.
    let plain = d.join("plain.db");
    std::fs::copy(&backup, &plain).unwrap();
    let err = refused(&plain, &[]);
    assert!(err.contains("plain.db.mac") && err.contains("--unsealed"), "{err}");
    // A MAC made under another master key does not match either.
    let other = tempfile::tempdir().unwrap();
    cli_ok(other.path(), &["app", "list"]);
    let foreign = other.path().join("foreign.db");
    cli_ok(other.path(), &["backup", foreign.to_str().unwrap()]);
    std::fs::copy(other.path().join("foreign.db.mac"), d.join("plain.db.mac")).unwrap();
    assert!(refused(&plain, &[]).contains("does not match"));

    // The genuine backup restores, sealed; the data-only edit restores only when told --unsealed.
    let restored = cli_ok(d, &["restore", backup.to_str().unwrap()]);
    assert!(restored.contains("restored"), "{restored}");
    let users = cli_ok(d, &["user", "list"]);
    assert!(users.contains("alice") && !users.contains("after-the-backup"), "{users}");
    assert!(users.lines().any(|l| l.contains("alice") && l.contains(" yes ")), "alice is still blocked: {users}");
    std::fs::remove_file(d.join("data.db.mac")).unwrap();
    cli_ok(d, &["restore", data.to_str().unwrap(), "--unsealed"]);
    assert!(cli_ok(d, &["user", "list"]).lines().any(|l| l.contains("alice") && l.contains(" no ")));

    // Where there is no database yet, backup says so first (packaging/debian/preinst relies on
    // it); where there is no master key, restore says what to do.
    let empty = tempfile::tempdir().unwrap();
    let out = gatehouse_cli(empty.path(), &[], &["backup", "x.db"], "");
    assert!(String::from_utf8_lossy(&out.stderr).contains("no database at"), "{out:?}");
    let out = gatehouse_cli(empty.path(), &[], &["restore", backup.to_str().unwrap()], "");
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("master.key does not exist") && err.contains("--unsealed"), "{err}");
    assert!(!empty.path().join("data/gatehouse.db").exists(), "{err}");
}
