//! ForePaaS Identity Access Manager (/iam), as seed 000 and the field notes show it.

use std::sync::Arc;
use std::time::Duration;

use serde_json::{json, Value};

use crate::helpers::{spawn_app, spawn_app_with, Answer, TestApp};

const JSON_UTF8: &str = "application/json; charset=utf-8";
const PASSWORD: &str = "correct horse battery";

fn password_login(login: &str, password: &str, app_id: &str) -> Value {
    json!({"login": login, "password": password, "app_id": app_id, "auth_mode": "forepaas_id_resource_owner"})
}

async fn login_token(app: &TestApp, login: &str, app_id: &str) -> String {
    let a = app.post_json("/iam/login", &password_login(login, PASSWORD, app_id)).await;
    assert_eq!(a.status, 200, "{}", a.text);
    a.json["token"].as_str().unwrap().to_string()
}

/// The error envelope of the field notes, with its content type.
fn assert_envelope(a: &Answer, status: u16, error: &str) {
    assert_eq!(a.status, status, "{}", a.text);
    assert_eq!(a.content_type, JSON_UTF8);
    let obj = a.json.as_object().unwrap_or_else(|| panic!("not a JSON object: {}", a.text));
    assert_eq!(obj.len(), 4, "{}", a.text);
    assert_eq!(a.json["success"], json!(false));
    assert_eq!(a.json["status"], json!(status));
    assert!(a.json["duration"].is_number());
    assert_eq!(a.json["error"], json!(error), "{}", a.text);
}

fn assert_login_answer(a: &Answer, login: &str) {
    assert_eq!(a.status, 200, "{}", a.text);
    assert_eq!(a.content_type, JSON_UTF8);
    let keys: Vec<&str> = a.json.as_object().unwrap().keys().map(String::as_str).collect();
    let mut want = vec![
        "uid",
        "user",
        "firstname",
        "lastname",
        "civility",
        "login",
        "password_renew",
        "password_expiration",
        "token",
    ];
    let mut got = keys.clone();
    got.sort();
    want.sort();
    assert_eq!(got, want);
    assert!(a.json["uid"].is_string());
    assert_eq!(a.json["user"], json!("M. John Doe"));
    assert_eq!(a.json["firstname"], json!("John"));
    assert_eq!(a.json["lastname"], json!("Doe"));
    assert_eq!(a.json["civility"], json!("M."));
    assert_eq!(a.json["login"], json!(login));
    assert_eq!(a.json["password_renew"], json!(false));
    assert!(a.json["password_expiration"].is_null());
    let token = a.json["token"].as_str().unwrap();
    assert_eq!(token.len(), 64);
    assert!(token.chars().all(|c| c.is_ascii_hexdigit()));
    assert_eq!(a.headers.get("cache-control").unwrap(), "no-store");
}

#[actix_web::test]
async fn password_login_with_json_answers_every_field_of_the_document() {
    let app = spawn_app().await;
    app.add_user("john.doe", PASSWORD, &["forepaas"]);
    let a = app.post_json("/iam/login", &password_login("john.doe", PASSWORD, "forepaas")).await;
    assert_login_answer(&a, "john.doe");
    // Logins compare case-insensitively; the answer carries the stored login.
    let a = app.post_json("/iam/login", &password_login("JOHN.Doe", PASSWORD, "forepaas")).await;
    assert_login_answer(&a, "john.doe");
}

#[actix_web::test]
async fn password_login_with_a_form_body() {
    let app = spawn_app().await;
    app.add_user("john.doe", PASSWORD, &["forepaas"]);
    let a = app
        .post_form(
            "/iam/login",
            &[
                ("login", "john.doe"),
                ("password", PASSWORD),
                ("app_id", "forepaas"),
                ("auth_mode", "forepaas_id_resource_owner"),
            ],
        )
        .await;
    assert_login_answer(&a, "john.doe");
    // curl -d sends a form without saying so: no Content-Type at all is read as a form too.
    let body = "login=john.doe&password=correct+horse+battery&app_id=forepaas&auth_mode=forepaas_id_resource_owner";
    let a = app.post_raw("/iam/login", None, body).await;
    assert_login_answer(&a, "john.doe");
}

#[actix_web::test]
async fn password_expiry_sets_password_renew_and_an_iso_date() {
    let app = spawn_app_with(|c| c.passwords.max_age = gatehouse::config::Seconds(Duration::from_millis(300))).await;
    app.add_user("john.doe", PASSWORD, &["forepaas"]);
    actix_web::rt::time::sleep(Duration::from_millis(400)).await;
    let a = app.post_json("/iam/login", &password_login("john.doe", PASSWORD, "forepaas")).await;
    assert_eq!(a.status, 200, "{}", a.text);
    assert_eq!(a.json["password_renew"], json!(true));
    let exp = a.json["password_expiration"].as_str().unwrap();
    assert_eq!(exp.len(), "2020-02-28T17:17:10.274Z".len(), "{exp}");
    assert!(exp.ends_with('Z') && exp.as_bytes()[10] == b'T', "{exp}");
}

#[actix_web::test]
async fn a_password_change_ends_api_key_sessions_but_keeps_the_keys() {
    let app = spawn_app().await;
    app.add_user("john.doe", PASSWORD, &["forepaas"]);
    let key = app.core.add_api_key("john.doe", "forepaas", None).unwrap();
    let by_key = json!({"apikey": key.apikey, "secretkey": key.secretkey.expose(), "auth_mode": "apikey"});
    let a = app.post_json("/iam/login", &by_key).await;
    assert_eq!(a.status, 200, "{}", a.text);
    let key_session = a.json["token"].as_str().unwrap().to_string();

    let token = login_token(&app, "john.doe", "forepaas").await;
    let path = format!("/iam/passwordChange?app_id=forepaas&token={token}");
    let change = json!({"password": "a brand new password", "oldpassword": PASSWORD});
    assert_eq!(app.post_json(&path, &change).await.status, 200);

    // The session the key opened ends with every other; the key, issued by the operator and not
    // by the password, signs in again.
    assert_eq!(app.get(&format!("/iam/checkSession?token={key_session}")).await.status, 401);
    assert_eq!(app.post_json("/iam/login", &by_key).await.status, 200);
}

#[actix_web::test]
async fn api_key_login_with_and_without_app_id() {
    let app = spawn_app().await;
    app.add_user("john.doe", PASSWORD, &["forepaas", "cms"]);
    let key = app.core.add_api_key("john.doe", "cms", None).unwrap();
    let (apikey, secret) = (key.apikey.as_str(), key.secretkey.expose());

    let body = json!({"apikey": apikey, "secretkey": secret, "app_id": "cms", "auth_mode": "apikey"});
    let a = app.post_json("/iam/login", &body).await;
    assert_login_answer(&a, "john.doe");

    // Without app_id, the key's own application applies.
    let a = app.post_json("/iam/login", &json!({"apikey": apikey, "secretkey": secret, "auth_mode": "apikey"})).await;
    assert_login_answer(&a, "john.doe");
    let token = a.json["token"].as_str().unwrap();
    let s = app.get(&format!("/iam/checkSession?token={token}")).await;
    assert_eq!(s.json["app_id"], json!("cms"));

    // As a form.
    let a = app.post_form("/iam/login", &[("apikey", apikey), ("secretkey", secret), ("auth_mode", "apikey")]).await;
    assert_login_answer(&a, "john.doe");

    // A key is good only for its own application, and only with its own secret.
    let other_app = json!({"apikey": apikey, "secretkey": secret, "app_id": "forepaas", "auth_mode": "apikey"});
    assert_envelope(&app.post_json("/iam/login", &other_app).await, 401, "Unauthorized");
    let wrong = json!({"apikey": apikey, "secretkey": "0".repeat(64), "auth_mode": "apikey"});
    assert_envelope(&app.post_json("/iam/login", &wrong).await, 401, "Unauthorized");
    let unknown = json!({"apikey": "f".repeat(32), "secretkey": secret, "auth_mode": "apikey"});
    assert_envelope(&app.post_json("/iam/login", &unknown).await, 401, "Unauthorized");
}

#[actix_web::test]
async fn a_revoked_api_key_stops_logging_in_and_its_tokens_die() {
    let app = spawn_app().await;
    app.add_user("john.doe", PASSWORD, &["forepaas"]);
    let key = app.core.add_api_key("john.doe", "forepaas", None).unwrap();
    let body = json!({"apikey": key.apikey, "secretkey": key.secretkey.expose(), "auth_mode": "apikey"});
    let a = app.post_json("/iam/login", &body).await;
    let token = a.json["token"].as_str().unwrap().to_string();
    assert_eq!(app.get(&format!("/iam/checkSession?token={token}")).await.status, 200);

    app.core.revoke_api_key(&key.apikey).unwrap();
    assert_envelope(&app.post_json("/iam/login", &body).await, 401, "Unauthorized");
    assert_envelope(&app.get(&format!("/iam/checkSession?token={token}")).await, 401, "Invalid token");
}

#[actix_web::test]
async fn an_expired_api_key_is_refused() {
    let app = spawn_app().await;
    app.add_user("john.doe", PASSWORD, &["forepaas"]);
    let key = app.core.add_api_key("john.doe", "forepaas", Some(300)).unwrap();
    let body = json!({"apikey": key.apikey, "secretkey": key.secretkey.expose(), "auth_mode": "apikey"});
    let a = app.post_json("/iam/login", &body).await;
    assert_eq!(a.status, 200);
    let token = a.json["token"].as_str().unwrap().to_string();
    actix_web::rt::time::sleep(Duration::from_millis(400)).await;
    assert_envelope(&app.post_json("/iam/login", &body).await, 401, "Unauthorized");
    assert_envelope(&app.get(&format!("/iam/checkSession?token={token}")).await, 401, "Invalid token");
}

#[actix_web::test]
async fn logout_answers_the_envelope_and_the_token_is_refused_after() {
    let app = spawn_app().await;
    app.add_user("john.doe", PASSWORD, &["forepaas"]);
    let token = login_token(&app, "john.doe", "forepaas").await;

    let a = app.delete(&format!("/iam/logout?app_id=forepaas&token={token}")).await;
    assert_eq!(a.status, 200, "{}", a.text);
    assert_eq!(a.content_type, JSON_UTF8);
    assert_eq!(a.json.as_object().unwrap().len(), 3);
    assert_eq!(a.json["success"], json!(true));
    assert_eq!(a.json["status"], json!(200));
    assert!(a.json["duration"].as_f64().unwrap() >= 0.0);

    assert_envelope(&app.get(&format!("/iam/checkSession?app_id=forepaas&token={token}")).await, 401, "Invalid token");
    assert_envelope(&app.delete(&format!("/iam/logout?app_id=forepaas&token={token}")).await, 401, "Invalid token");
}

#[actix_web::test]
async fn check_session_answers_the_session_without_echoing_the_token() {
    let app = spawn_app().await;
    app.add_user("john.doe", PASSWORD, &["forepaas", "cms"]);
    let token = login_token(&app, "john.doe", "cms").await;
    for path in [format!("/iam/checkSession?token={token}"), format!("/iam/checkSession?app_id=cms&token={token}")] {
        let a = app.get(&path).await;
        assert_eq!(a.status, 200, "{}", a.text);
        assert_eq!(a.content_type, JSON_UTF8);
        assert_eq!(a.json["success"], json!(true));
        assert_eq!(a.json["login"], json!("john.doe"));
        assert_eq!(a.json["user"], json!("M. John Doe"));
        assert_eq!(a.json["app_id"], json!("cms"));
        assert_eq!(a.json["password_renew"], json!(false));
        assert!(a.json["expires"].as_str().unwrap().ends_with('Z'));
        assert!(!a.text.contains(&token), "the token is not echoed");
    }
    // A token is good for its own application only.
    assert_envelope(&app.get(&format!("/iam/checkSession?app_id=forepaas&token={token}")).await, 401, "Invalid token");
    assert_envelope(&app.delete(&format!("/iam/logout?app_id=forepaas&token={token}")).await, 401, "Invalid token");
    assert_envelope(&app.get("/iam/checkSession?token=0123abcd").await, 401, "Invalid token");
}

#[actix_web::test]
async fn a_token_unused_for_the_idle_timeout_is_refused_and_use_slides_it() {
    let app = spawn_app_with(|c| c.tokens.idle_timeout = gatehouse::config::Seconds(Duration::from_millis(2500))).await;
    app.add_user("john.doe", PASSWORD, &["forepaas"]);
    let token = login_token(&app, "john.doe", "forepaas").await;
    let check = format!("/iam/checkSession?token={token}");
    // Used every second, it stays alive well past the 2.5 s idle timeout.
    for _ in 0..4 {
        actix_web::rt::time::sleep(Duration::from_millis(1000)).await;
        assert_eq!(app.get(&check).await.status, 200);
    }
    actix_web::rt::time::sleep(Duration::from_millis(3500)).await;
    assert_envelope(&app.get(&check).await, 401, "Invalid token");
}

/// A use is kept in memory, written once a second (SQLite: into the log `token_uses`, a file of
/// its own, not the token's row), read back by a server started again on the same data (as after
/// a crash: the first server writes nothing more), and folded into the token before the reaper
/// judges it. A crash after the fold, before the log is emptied, folds the same uses again: harmless.
#[actix_web::test]
async fn a_use_outlives_a_restart_and_is_folded_in_before_the_reaper_judges_the_token() {
    let idle = |c: &mut gatehouse::config::Config| {
        c.tokens.idle_timeout = gatehouse::config::Seconds(Duration::from_millis(3000));
        c.reaper.interval = gatehouse::config::Seconds(Duration::from_secs(3600));
    };
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let first = crate::helpers::spawn_app_in(tempfile::tempdir().unwrap(), &data, idle).await;
    first.add_user("john.doe", PASSWORD, &["forepaas"]);
    let token = login_token(&first, "john.doe", "forepaas").await;
    let check = format!("/iam/checkSession?token={token}");
    let issued = first.count("SELECT last_used_at FROM tokens");
    actix_web::rt::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(first.get(&check).await.status, 200);
    first.core.flush_touches().unwrap();
    let sqlite = !first.core.store.is_shared();
    if sqlite {
        assert_eq!(first.count_in_uses_log("SELECT count(*) FROM token_uses"), 1, "the use is in the log");
        assert_eq!(first.count("SELECT last_used_at FROM tokens"), issued, "and not yet in the token's row");
    }

    let second = crate::helpers::spawn_app_in(tempfile::tempdir().unwrap(), &data, idle).await;
    // 3.5 s after the sign-in, 2 s after the use: alive only if the use was read back.
    actix_web::rt::time::sleep(Duration::from_millis(2000)).await;
    assert_eq!(second.get(&check).await.status, 200, "the use written before the restart keeps the token alive");
    assert_eq!(second.core.reap().unwrap().tokens, 0, "the sweep judged the token by its last use");
    assert_eq!(second.count("SELECT count(*) FROM tokens"), 1);
    assert!(second.count("SELECT last_used_at FROM tokens") >= issued + 3500, "the last use is in the token's row");
    if sqlite {
        assert_eq!(second.count_in_uses_log("SELECT count(*) FROM token_uses"), 0, "the log holds nothing folded");
        assert_eq!(second.core.stats().uses_unfolded, 0);
        // As after a crash between the fold and the log's emptying: the log holds uses already
        // folded (one older than the token's last use). Read back and folded again, they change nothing.
        let folded = second.count("SELECT last_used_at FROM tokens");
        let log = gatehouse::store::uses_log_path(&second.core.config.db_path());
        rusqlite::Connection::open(&log)
            .unwrap()
            .execute(
                "INSERT INTO token_uses (token_id, used_at) VALUES ((?1), ?2), ((?1), ?3)",
                rusqlite::params![second.count("SELECT id FROM tokens"), folded, folded - 1000],
            )
            .unwrap();
        let third = crate::helpers::spawn_app_in(tempfile::tempdir().unwrap(), &data, idle).await;
        assert_eq!(third.core.stats().uses_unfolded, 1, "read back");
        assert_eq!(third.core.reap().unwrap().tokens, 0);
        assert_eq!(third.count("SELECT last_used_at FROM tokens"), folded, "folded again, moved nowhere");
        assert_eq!(third.count_in_uses_log("SELECT count(*) FROM token_uses"), 0);
        assert_eq!(third.get(&check).await.status, 200);
    }
    drop(dir);
}

/// SQLite: a server that only answers token checks commits nothing to the database file (its
/// uses go to the log's own file): after any commit there, every reading connection would fault
/// the pages of the file in again.
#[actix_web::test]
async fn token_checks_and_their_uses_commit_nothing_to_the_database_file() {
    let app = spawn_app_with(|c| c.reaper.interval = gatehouse::config::Seconds(Duration::from_secs(3600))).await;
    if app.core.store.is_shared() {
        return;
    }
    app.add_user("john.doe", PASSWORD, &["forepaas"]);
    let token = login_token(&app, "john.doe", "forepaas").await;
    let check = format!("/iam/checkSession?token={token}");
    // Whatever the sign-in wrote is committed and written out first.
    app.core.flush_touches().unwrap();
    actix_web::rt::time::sleep(Duration::from_millis(1200)).await;
    let watcher = app.db();
    let version = || -> i64 { watcher.query_row("PRAGMA data_version", [], |r| r.get(0)).unwrap() };
    let before = version();
    let wal = |path: std::path::PathBuf| std::fs::metadata(path).map(|m| m.len()).unwrap_or(0);
    let db_wal = std::path::PathBuf::from(format!("{}-wal", app.core.config.db_path().display()));
    let wal_before = wal(db_wal.clone());
    let logged_before = app.count_in_uses_log("SELECT count(*) FROM token_uses");
    // Three seconds of checks: three flushes of their uses, at least.
    let until = std::time::Instant::now() + Duration::from_millis(3000);
    while std::time::Instant::now() < until {
        assert_eq!(app.get(&check).await.status, 200);
        actix_web::rt::time::sleep(Duration::from_millis(100)).await;
    }
    app.core.flush_touches().unwrap();
    assert!(app.count_in_uses_log("SELECT count(*) FROM token_uses") >= logged_before + 2, "the uses were written");
    assert_eq!(version(), before, "no commit to the database file while only checks ran");
    assert!(wal(db_wal) <= wal_before, "nor a frame appended to its write-ahead log");
    // The reaper's sweep folds the uses in: a commit once per sweep. With nothing to fold or to
    // remove, a sweep commits nothing either.
    app.core.reap().unwrap();
    let swept = version();
    assert!(swept > before, "the fold wrote the use into the token");
    app.core.reap().unwrap();
    assert_eq!(version(), swept, "an idle sweep commits nothing");
}

#[actix_web::test]
async fn a_token_dies_at_its_lifetime_however_much_it_is_used() {
    let app = spawn_app_with(|c| c.tokens.lifetime = gatehouse::config::Seconds(Duration::from_millis(2000))).await;
    app.add_user("john.doe", PASSWORD, &["forepaas"]);
    let token = login_token(&app, "john.doe", "forepaas").await;
    let check = format!("/iam/checkSession?token={token}");
    actix_web::rt::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(app.get(&check).await.status, 200);
    actix_web::rt::time::sleep(Duration::from_millis(2000)).await;
    assert_envelope(&app.get(&check).await, 401, "Invalid token");
}

#[actix_web::test]
async fn the_reaper_removes_revoked_and_expired_tokens() {
    let app = spawn_app_with(|c| {
        c.reaper.interval = gatehouse::config::Seconds(Duration::from_millis(150));
        c.tokens.lifetime = gatehouse::config::Seconds(Duration::from_millis(4000));
    })
    .await;
    app.add_user("john.doe", PASSWORD, &["forepaas"]);
    let logged_out = login_token(&app, "john.doe", "forepaas").await;
    let _expiring = login_token(&app, "john.doe", "forepaas").await;
    assert_eq!(app.count("SELECT count(*) FROM tokens"), 2);
    app.delete(&format!("/iam/logout?token={logged_out}")).await;
    // The reaper runs every 150 ms: the revoked token goes at its next pass, the live one stays
    // until its 4 s lifetime is over.
    let tokens_become = |n: i64, within_ms: u64| {
        let app = &app;
        async move {
            let deadline = std::time::Instant::now() + Duration::from_millis(within_ms);
            while app.count("SELECT count(*) FROM tokens") != n && std::time::Instant::now() < deadline {
                actix_web::rt::time::sleep(Duration::from_millis(50)).await;
            }
            app.count("SELECT count(*) FROM tokens")
        }
    };
    assert_eq!(tokens_become(1, 2000).await, 1, "the revoked token is gone, the live one stays");
    assert_eq!(tokens_become(0, 6000).await, 0, "the expired token is gone");
}

/// A backlog of dead tokens goes in transactions of `reaper.batch` rows, and a write that arrives
/// during the sweep is answered between two of them, not after the last. Not timed: the logout's
/// answer is compared with how far the sweep had got when it came.
#[actix_web::test]
async fn the_reaper_deletes_in_batches_and_writes_go_between_them() {
    const BACKLOG: i64 = 6_000;
    let app = spawn_app_with(|c| {
        c.reaper.batch = 10;
        c.reaper.interval = gatehouse::config::Seconds(Duration::from_secs(3600));
    })
    .await;
    app.add_user("john.doe", PASSWORD, &["forepaas"]);
    let live = login_token(&app, "john.doe", "forepaas").await;
    let user_id = app.count("SELECT id FROM users WHERE login = 'john.doe'");
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as i64;
    app.core
        .store
        .write(|tx| {
            for i in 0..BACKLOG {
                let mut digest = [0u8; 32];
                digest[..8].copy_from_slice(&i.to_be_bytes());
                gatehouse::store::tokens::insert(
                    tx,
                    &gatehouse::store::tokens::TokenRow {
                        digest,
                        kind: "iam",
                        user_id,
                        app_id: "forepaas".into(),
                        api_key_id: None,
                        created_at: now - 7_200_000,
                        last_used_at: now - 7_200_000,
                        idle_ms: None,
                        expires_at: now - 3_600_000,
                        family: None,
                    },
                )?;
            }
            Ok::<_, gatehouse::store::Error>(())
        })
        .unwrap();
    let before = app.core.stats();

    let core = Arc::clone(&app.core);
    let sweep = std::thread::spawn(move || core.reap());
    while app.core.stats().reaped_tokens == before.reaped_tokens {
        actix_web::rt::time::sleep(Duration::from_millis(5)).await;
    }
    let logout = app.delete(&format!("/iam/logout?token={live}")).await;
    let removed_at_answer = app.core.stats().reaped_tokens - before.reaped_tokens;
    assert_eq!(logout.status, 200, "{}", logout.text);
    assert!(
        removed_at_answer < BACKLOG as u64,
        "the logout was answered while the sweep was under way ({removed_at_answer} of {BACKLOG} gone)"
    );

    let reaped = sweep.join().unwrap().unwrap();
    // The live token was examined (and kept) by the first batch; its logout came after.
    assert_eq!(reaped.tokens, BACKLOG as usize);
    let batches = app.core.stats().reaper_batches - before.reaper_batches;
    assert!(batches >= (BACKLOG / 10) as u64, "{batches} transactions for {BACKLOG} rows in batches of 10");
    assert_eq!(app.count("SELECT count(*) FROM tokens WHERE revoked_at IS NULL"), 0);
    assert_eq!(app.count("SELECT count(*) FROM tokens"), 1, "the revoked token waits for the next sweep");
    assert!(app.core.reap().unwrap().tokens == 1);
}

#[actix_web::test]
async fn tokens_are_stored_only_as_digests() {
    let app = spawn_app().await;
    app.add_user("john.doe", PASSWORD, &["forepaas"]);
    let token = login_token(&app, "john.doe", "forepaas").await;
    let digest = app.blob("SELECT digest FROM tokens");
    assert_eq!(digest.len(), 32);
    if app.core.store.is_shared() {
        let sql = format!("SELECT count(*) FROM tokens WHERE position('{token}'::bytea in digest) > 0");
        assert_eq!(app.count(&sql), 0, "the token is not in the database");
    } else {
        let raw = std::fs::read(app.core.config.db_path()).unwrap();
        let wal = std::fs::read(app.core.config.db_path().with_extension("db-wal")).unwrap_or_default();
        for bytes in [raw, wal] {
            assert!(!bytes.windows(token.len()).any(|w| w == token.as_bytes()), "the token is not in the file");
        }
    }
}

#[actix_web::test]
async fn blocked_users_get_403_and_lose_their_tokens() {
    let app = spawn_app().await;
    app.add_user("john.doe", PASSWORD, &["forepaas"]);
    let token = login_token(&app, "john.doe", "forepaas").await;
    app.core.set_blocked("john.doe", true).unwrap();
    let a = app.post_json("/iam/login", &password_login("john.doe", PASSWORD, "forepaas")).await;
    assert_envelope(&a, 403, "User is blocked");
    // Only the right password learns that the account is blocked.
    let a = app.post_json("/iam/login", &password_login("john.doe", "wrong password", "forepaas")).await;
    assert_envelope(&a, 401, "Unauthorized");
    assert_envelope(&app.get(&format!("/iam/checkSession?token={token}")).await, 401, "Invalid token");
    app.core.set_blocked("john.doe", false).unwrap();
    assert_eq!(app.post_json("/iam/login", &password_login("john.doe", PASSWORD, "forepaas")).await.status, 200);
}

#[actix_web::test]
async fn users_who_are_not_members_get_403() {
    let app = spawn_app().await;
    app.add_user("cms.only", PASSWORD, &["cms"]);
    let a = app.post_json("/iam/login", &password_login("cms.only", PASSWORD, "forepaas")).await;
    assert_envelope(&a, 403, "User is not allowed to access this application");
    let a = app.post_json("/iam/login", &password_login("cms.only", PASSWORD, "no-such-app")).await;
    assert_envelope(&a, 403, "User is not allowed to access this application");
    // A membership revoked later ends the tokens of that application.
    let token = login_token(&app, "cms.only", "cms").await;
    app.core.revoke("cms.only", "cms").unwrap();
    assert_envelope(&app.get(&format!("/iam/checkSession?token={token}")).await, 401, "Invalid token");
}

#[actix_web::test]
async fn an_unknown_login_and_a_wrong_password_get_the_same_answer() {
    let app = spawn_app().await;
    app.add_user("john.doe", PASSWORD, &["forepaas"]);
    let unknown = app.post_json("/iam/login", &password_login("nobody", PASSWORD, "forepaas")).await;
    let wrong = app.post_json("/iam/login", &password_login("john.doe", "not the password", "forepaas")).await;
    assert_envelope(&unknown, 401, "Unauthorized");
    assert_envelope(&wrong, 401, "Unauthorized");
    let strip = |v: &Value| {
        let mut v = v.clone();
        v.as_object_mut().unwrap().remove("duration");
        v
    };
    assert_eq!(strip(&unknown.json), strip(&wrong.json));
    assert_eq!(unknown.headers.len(), wrong.headers.len());
}

#[actix_web::test]
async fn bad_requests_get_400_in_the_envelope() {
    let app = spawn_app().await;
    app.add_user("john.doe", PASSWORD, &["forepaas"]);
    let full = password_login("john.doe", PASSWORD, "forepaas");
    for key in ["login", "password", "app_id", "auth_mode"] {
        let mut body = full.clone();
        body.as_object_mut().unwrap().remove(key);
        let a = app.post_json("/iam/login", &body).await;
        assert_envelope(&a, 400, &format!("Missing parameter {key}"));
        let mut body = full.clone();
        body[key] = json!("");
        assert_eq!(app.post_json("/iam/login", &body).await.status, 400);
        let mut body = full.clone();
        body[key] = json!(42);
        assert_envelope(
            &app.post_json("/iam/login", &body).await,
            400,
            &format!("Invalid parameter {key}: must be a string"),
        );
    }
    for key in ["apikey", "secretkey"] {
        let mut body = json!({"apikey": "abc", "secretkey": "def", "auth_mode": "apikey"});
        body.as_object_mut().unwrap().remove(key);
        assert_envelope(&app.post_json("/iam/login", &body).await, 400, &format!("Missing parameter {key}"));
    }
    let mut body = full.clone();
    body["auth_mode"] = json!("kerberos");
    assert_envelope(
        &app.post_json("/iam/login", &body).await,
        400,
        "Invalid parameter auth_mode: unknown authentication mode",
    );
    assert_envelope(
        &app.post_raw("/iam/login", Some("application/json"), "{\"login\":").await,
        400,
        "Malformed JSON body",
    );
    assert_envelope(
        &app.post_raw("/iam/login", Some("application/json"), "[1,2]").await,
        400,
        "The JSON body must be an object",
    );
    assert_envelope(
        &app.post_raw("/iam/login", Some("text/plain"), "login=x").await,
        400,
        "Unsupported Content-Type text/plain",
    );
    let a = app.post_raw("/iam/login", Some("application/x-www-form-urlencoded"), "login=a&login=b").await;
    assert_envelope(&a, 400, "Invalid parameter login: given more than once");
    let mut body = full.clone();
    body["login"] = json!("x".repeat(256));
    assert_envelope(&app.post_json("/iam/login", &body).await, 400, "Invalid parameter login: longer than 255 bytes");

    assert_envelope(&app.delete("/iam/logout?app_id=forepaas").await, 400, "Missing parameter token");
    assert_envelope(&app.get("/iam/checkSession").await, 400, "Missing parameter token");
    assert_envelope(
        &app.get("/iam/checkSession?token=a&token=b").await,
        400,
        "Invalid parameter token: given more than once",
    );
}

#[actix_web::test]
async fn oversized_bodies_wrong_methods_and_unknown_paths_answer_in_the_envelope() {
    let app = spawn_app().await;
    let big = format!("{{\"login\":\"{}\"}}", "x".repeat(70 * 1024));
    assert_envelope(
        &app.post_raw("/iam/login", Some("application/json"), big).await,
        413,
        "Request body larger than 65536 bytes",
    );
    assert_envelope(&app.get("/iam/login").await, 405, "Method not allowed");
    assert_envelope(&app.get("/iam/logout?token=x").await, 405, "Method not allowed");
    assert_envelope(&app.get("/iam/nothing-here").await, 404, "Not found");
}

#[actix_web::test]
async fn bad_requests_change_nothing() {
    let app = spawn_app().await;
    app.add_user("john.doe", PASSWORD, &["forepaas"]);
    let before = app.count("SELECT count(*) FROM tokens");
    app.post_raw("/iam/login", Some("application/json"), "{\"login\":").await;
    app.post_json("/iam/login", &password_login("john.doe", "wrong password", "forepaas")).await;
    app.post_json(
        "/iam/login",
        &json!({"login": "john.doe", "password": PASSWORD, "auth_mode": "forepaas_id_resource_owner"}),
    )
    .await;
    assert_eq!(app.count("SELECT count(*) FROM tokens"), before);
}

#[actix_web::test]
async fn a_password_change_ends_every_session() {
    let app = spawn_app().await;
    app.add_user("john.doe", PASSWORD, &["forepaas"]);
    let token = login_token(&app, "john.doe", "forepaas").await;
    app.core.set_password("john.doe", &gatehouse::core::Secret::new("another long password")).unwrap();
    assert_envelope(&app.get(&format!("/iam/checkSession?token={token}")).await, 401, "Invalid token");
    let old = app.post_json("/iam/login", &password_login("john.doe", PASSWORD, "forepaas")).await;
    assert_envelope(&old, 401, "Unauthorized");
    let new = app.post_json("/iam/login", &password_login("john.doe", "another long password", "forepaas")).await;
    assert_eq!(new.status, 200);
}

#[actix_web::test]
async fn healthz_answers_when_the_database_does() {
    let app = spawn_app().await;
    let a = app.get("/healthz").await;
    assert_eq!(a.status, 200);
    assert_eq!(a.text, "ok\n");
}

#[actix_web::test]
async fn password_change_needs_the_old_password_and_ends_the_other_sessions() {
    let app = spawn_app().await;
    app.add_user("john.doe", PASSWORD, &["forepaas"]);
    let token = login_token(&app, "john.doe", "forepaas").await;
    let other = login_token(&app, "john.doe", "forepaas").await;
    let path = format!("/iam/passwordChange?app_id=forepaas&token={token}");

    let wrong = app.post_json(&path, &json!({"password": "a brand new password", "oldpassword": "not it"})).await;
    assert_envelope(&wrong, 403, "Wrong password");
    let weak = app.post_json(&path, &json!({"password": "short", "oldpassword": PASSWORD})).await;
    assert_envelope(&weak, 400, "Invalid parameter password: must be at least 8 characters");
    let missing = app.post_json(&path, &json!({"password": "a brand new password"})).await;
    assert_envelope(&missing, 400, "Missing parameter oldpassword");
    let bad_token = app
        .post_json(
            "/iam/passwordChange?token=00",
            &json!({"password": "a brand new password", "oldpassword": PASSWORD}),
        )
        .await;
    assert_envelope(&bad_token, 401, "Invalid token");
    // Nothing above changed anything.
    assert_eq!(app.get(&format!("/iam/checkSession?token={other}")).await.status, 200);

    let ok = app.post_form(&path, &[("password", "a brand new password"), ("oldpassword", PASSWORD)]).await;
    assert_eq!(ok.status, 200, "{}", ok.text);
    assert_eq!(ok.json, json!({"success": true, "status": 200, "duration": ok.json["duration"]}));
    assert_eq!(app.get(&format!("/iam/checkSession?token={token}")).await.status, 200, "this session lives on");
    assert_envelope(&app.get(&format!("/iam/checkSession?token={other}")).await, 401, "Invalid token");
    let old = app.post_json("/iam/login", &password_login("john.doe", PASSWORD, "forepaas")).await;
    assert_envelope(&old, 401, "Unauthorized");
    let new = app.post_json("/iam/login", &password_login("john.doe", "a brand new password", "forepaas")).await;
    assert_eq!(new.status, 200);
}

#[actix_web::test]
async fn metrics_are_scraped_in_prometheus_text() {
    let app = spawn_app().await;
    app.add_user("john.doe", PASSWORD, &["forepaas"]);
    let token = login_token(&app, "john.doe", "forepaas").await;
    app.post_json("/iam/login", &password_login("john.doe", "wrong password", "forepaas")).await;
    app.get(&format!("/iam/checkSession?token={token}")).await;
    let m = app.get("/metrics").await;
    assert_eq!(m.status, 200);
    assert!(m.content_type.starts_with("text/plain; version=0.0.4"), "{}", m.content_type);
    for line in [
        "gatehouse_http_requests_total{dialect=\"forepaas\",route=\"/iam/login\",status=\"200\"} 1",
        "gatehouse_http_requests_total{dialect=\"forepaas\",route=\"/iam/login\",status=\"401\"} 1",
        "gatehouse_http_requests_total{dialect=\"forepaas\",route=\"/iam/checkSession\",status=\"200\"} 1",
        "gatehouse_http_request_duration_seconds_count{dialect=\"forepaas\",route=\"/iam/login\"} 2",
        "gatehouse_http_request_duration_seconds_bucket{dialect=\"forepaas\",route=\"/iam/login\",le=\"+Inf\"} 2",
        "gatehouse_logins_total{result=\"ok\"} 1",
        "gatehouse_logins_total{result=\"failed\"} 1",
        "gatehouse_throttled_total 0",
        "gatehouse_hash_queue_depth 0",
        "gatehouse_nonces_kept 0",
        "gatehouse_reaper_removed_total{kind=\"tokens\"} 0",
    ] {
        assert!(m.text.lines().any(|l| l == line), "missing {line:?} in:\n{}", m.text);
    }
    assert!(m.text.contains("# TYPE gatehouse_http_request_duration_seconds histogram"));
    assert!(m.text.contains("gatehouse_db_pool_waits_total "));
    assert!(m.text.contains("gatehouse_db_retries_total ") && m.text.contains("gatehouse_db_unavailable_total "));
    // Two sign-ins' worth of writes at least (the token with its audit row, the failure's audit row).
    let value = |name: &str| -> u64 {
        m.text.lines().find_map(|l| l.strip_prefix(name)).and_then(|v| v.trim().parse().ok()).unwrap()
    };
    let (writes, commits) = (value("gatehouse_db_writes_total "), value("gatehouse_db_commits_total "));
    assert!(writes >= 2 && commits >= 1 && commits <= writes, "{writes} writes, {commits} commits");
    assert!(!m.text.contains(&token), "no secret in the metrics");
}

#[actix_web::test]
async fn request_metrics_keep_their_names_buckets_and_counts() {
    let app = spawn_app().await;
    app.add_user("john.doe", PASSWORD, &["forepaas"]);
    login_token(&app, "john.doe", "forepaas").await;
    app.post_json("/iam/login", &password_login("john.doe", "wrong password", "forepaas")).await;
    let m = app.get("/metrics").await.text;
    for line in [
        "# HELP gatehouse_http_requests_total HTTP requests answered, by dialect, route and status.",
        "# TYPE gatehouse_http_requests_total counter",
        "# HELP gatehouse_http_request_duration_seconds Time to answer, by dialect and route.",
        "# TYPE gatehouse_http_request_duration_seconds histogram",
    ] {
        assert_eq!(m.lines().filter(|l| *l == line).count(), 1, "{line:?} once in:\n{m}");
    }
    // Every bucket of the route, cumulative, in order, then +Inf, _sum and _count; no summary.
    let labels = "dialect=\"forepaas\",route=\"/iam/login\"";
    let bucket = format!("gatehouse_http_request_duration_seconds_bucket{{{labels},le=\"");
    let buckets: Vec<(&str, u64)> = m
        .lines()
        .filter_map(|l| l.strip_prefix(bucket.as_str()))
        .map(|rest| {
            let (le, count) = rest.split_once("\"} ").unwrap();
            (le, count.parse().unwrap())
        })
        .collect();
    let les: Vec<&str> = buckets.iter().map(|(le, _)| *le).collect();
    assert_eq!(
        les,
        ["0.0005", "0.001", "0.0025", "0.005", "0.01", "0.025", "0.05", "0.1", "0.25", "0.5", "1", "2.5", "+Inf"]
    );
    assert!(buckets.windows(2).all(|w| w[0].1 <= w[1].1), "cumulative: {buckets:?}");
    assert_eq!(buckets.last().unwrap().1, 2);
    let sum = format!("gatehouse_http_request_duration_seconds_sum{{{labels}}} ");
    let sum: f64 = m.lines().find_map(|l| l.strip_prefix(sum.as_str())).unwrap().parse().unwrap();
    assert!(sum > 0.0 && sum < 60.0, "{sum}");
    assert!(!m.contains("quantile") && !m.contains("_total_total"), "{m}");

    // The next scrape counts the calls made since, the first scrape among them.
    app.post_json("/iam/login", &password_login("john.doe", "wrong password", "forepaas")).await;
    let m = app.get("/metrics").await.text;
    for line in [
        "gatehouse_http_requests_total{dialect=\"forepaas\",route=\"/iam/login\",status=\"200\"} 1",
        "gatehouse_http_requests_total{dialect=\"forepaas\",route=\"/iam/login\",status=\"401\"} 2",
        "gatehouse_http_request_duration_seconds_count{dialect=\"forepaas\",route=\"/iam/login\"} 3",
        "gatehouse_http_request_duration_seconds_bucket{dialect=\"forepaas\",route=\"/iam/login\",le=\"+Inf\"} 3",
        "gatehouse_http_requests_total{dialect=\"gatehouse\",route=\"/metrics\",status=\"200\"} 1",
        "gatehouse_http_request_duration_seconds_count{dialect=\"gatehouse\",route=\"/metrics\"} 1",
    ] {
        assert!(m.lines().any(|l| l == line), "missing {line:?} in:\n{m}");
    }

    // Each server counts its own requests only.
    let other = spawn_app().await;
    let m = other.get("/metrics").await.text;
    assert!(!m.contains("/iam/login"), "{m}");
}

#[actix_web::test]
async fn uses_are_written_within_a_second_not_on_every_check() {
    let app = spawn_app().await;
    app.add_user("john.doe", PASSWORD, &["forepaas"]);
    let token = login_token(&app, "john.doe", "forepaas").await;
    // SQLite writes uses into its log (folded into the token before a reaper sweep), PostgreSQL
    // into the token's row, which the nodes share.
    let sqlite = !app.core.store.is_shared();
    let written = || {
        if sqlite {
            let issued = app.count("SELECT created_at FROM tokens");
            app.count_in_uses_log(&format!("SELECT count(*) FROM token_uses WHERE used_at > {issued} + 49"))
        } else {
            app.count("SELECT count(*) FROM tokens WHERE last_used_at - created_at >= 50")
        }
    };
    actix_web::rt::time::sleep(Duration::from_millis(50)).await;
    assert_eq!(app.get(&format!("/iam/checkSession?token={token}")).await.status, 200);
    assert_eq!(written(), 0, "the use is held in memory");
    // Written by the next flush (every second); a loaded machine may run it late.
    let deadline = std::time::Instant::now() + Duration::from_secs(3);
    while written() == 0 && std::time::Instant::now() < deadline {
        actix_web::rt::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(written(), 1, "and written by the next flush");
}
