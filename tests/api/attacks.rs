//! Holding under attack: guessing is throttled across dialects, hashing is bounded.

use gatehouse::core::apps::Door;
use std::time::Duration;

use base64::Engine;
use serde_json::{json, Value};

use crate::helpers::{gatehouse_cli, link_in, spawn_app_with, Answer, TestApp};

const PASSWORD: &str = "the right password";

fn throttled(c: &mut gatehouse::config::Config) {
    c.throttle.account_failures = 3;
    c.throttle.address_failures = 1000;
    c.throttle.delay = gatehouse::config::Seconds(Duration::from_millis(600));
    c.throttle.lockout = gatehouse::config::Seconds::secs(60);
    c.throttle.window = gatehouse::config::Seconds::secs(60);
}

async fn iam(app: &TestApp, login: &str, password: &str) -> Answer {
    app.post_json(
        "/iam/login",
        &json!({"login": login, "password": password, "app_id": "forepaas", "auth_mode": "forepaas_id_resource_owner"}),
    )
    .await
}

async fn cms(app: &TestApp, login: &str, password: &str) -> Answer {
    let body = json!({"username": login, "password": password}).to_string().into_bytes();
    app.send("POST", "/cms/iap/auth/login", &[], Some(("application/json", body))).await
}

async fn iqm(app: &TestApp, basic: &str, login: &str, password: &str) -> Answer {
    let body = json!({"grantType": "password", "email": login, "password": password}).to_string().into_bytes();
    app.send("POST", "/api/v3/ua/login", &[("Authorization", basic)], Some(("application/json", body))).await
}

fn retry_after(a: &Answer) -> u64 {
    a.headers
        .get("retry-after")
        .unwrap_or_else(|| panic!("no Retry-After: {}", a.text))
        .to_str()
        .unwrap()
        .parse()
        .unwrap()
}

async fn sleep_ms(ms: u64) {
    actix_web::rt::time::sleep(Duration::from_millis(ms)).await;
}

/// An app with mark@example.com a member of forepaas, cms and an IQM client; the client's Basic.
async fn setup(tweak: impl FnOnce(&mut gatehouse::config::Config)) -> (TestApp, String) {
    let app = spawn_app_with(tweak).await;
    let secret = app.core.add_app("iqm-client", None, &[Door::Iqm, Door::Oauth]).unwrap();
    app.add_user("mark@example.com", PASSWORD, &["forepaas", "cms", "iqm-client"]);
    let basic = format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("iqm-client:{}", secret.expose()))
    );
    (app, basic)
}

#[actix_web::test]
async fn guessing_is_throttled_across_dialects_then_locked_out() {
    let (app, basic) = setup(throttled).await;
    let who = "mark@example.com";
    assert_eq!(iam(&app, who, "guess 1").await.status, 401);
    // Switching dialects does not reset the count: the delay holds in the CMS too.
    let a = cms(&app, who, "guess 2").await;
    assert_eq!(a.status, 429, "{}", a.text);
    assert_eq!(a.json["status"], json!(429), "the CMS envelope");
    assert!(retry_after(&a) >= 1);
    sleep_ms(650).await;
    assert_eq!(cms(&app, who, "guess 2").await.status, 401);
    // The delay doubles.
    sleep_ms(650).await;
    let a = iqm(&app, &basic, who, "guess 3").await;
    assert_eq!(a.status, 429, "650 ms into the second wait (1200 ms): {}", a.text);
    assert_eq!(a.json["success"], json!(false));
    assert!(a.json["errorObjects"][0]["error"].is_string(), "the IQM envelope");
    sleep_ms(650).await;
    assert_eq!(iqm(&app, &basic, who, "guess 3").await.status, 403, "the third failure: locks out");

    // Locked out: the right password fails everywhere, with Retry-After.
    for a in [iam(&app, who, PASSWORD).await, cms(&app, who, PASSWORD).await, iqm(&app, &basic, who, PASSWORD).await] {
        assert_eq!(a.status, 429, "{}", a.text);
        assert!(retry_after(&a) > 30, "minutes of lockout");
    }
    let a = iam(&app, who, PASSWORD).await;
    assert_eq!(a.json["error"], json!("Too many failed attempts, retry later"), "the ForePaaS envelope");
    // Other accounts are not held up.
    app.add_user("other@example.com", PASSWORD, &["forepaas"]);
    assert_eq!(iam(&app, "other@example.com", PASSWORD).await.status, 200);
}

#[actix_web::test]
async fn unknown_accounts_are_throttled_alike() {
    let (app, _) = setup(throttled).await;
    let (known, unknown) = ("mark@example.com", "nobody@example.com");
    for who in [known, unknown] {
        assert_eq!(iam(&app, who, "guess").await.status, 401);
        let a = iam(&app, who, "guess").await;
        assert_eq!(a.status, 429);
        assert_eq!(retry_after(&a), 1);
    }
}

#[actix_web::test]
async fn a_success_resets_the_account() {
    let (app, _) = setup(throttled).await;
    let who = "mark@example.com";
    assert_eq!(iam(&app, who, "guess").await.status, 401);
    sleep_ms(650).await;
    assert_eq!(iam(&app, who, "guess").await.status, 401);
    sleep_ms(1300).await;
    assert_eq!(iam(&app, who, PASSWORD).await.status, 200);
    assert_eq!(iam(&app, who, "guess").await.status, 401, "no wait carried over");
    sleep_ms(650).await;
    assert_eq!(iam(&app, who, "guess").await.status, 401, "and the count started again: no lockout yet");
}

/// Locks `who` out (three failures, no delay between them) and checks that the right password
/// is refused.
async fn lock_out(app: &TestApp, who: &str) {
    for i in 0..3 {
        let a = iam(app, who, &format!("guess {i}")).await;
        assert!(matches!(a.status, 401 | 403), "{}", a.text);
    }
    assert_eq!(iam(app, who, PASSWORD).await.status, 429, "locked out");
}

fn throttled_without_delay(c: &mut gatehouse::config::Config) {
    throttled(c);
    c.throttle.delay = gatehouse::config::Seconds(Duration::ZERO);
}

#[actix_web::test]
async fn a_reset_by_mail_frees_the_locked_out_owner_but_not_the_address() {
    let (app, _) = setup(|c| {
        throttled_without_delay(c);
        c.throttle.address_failures = 4;
    })
    .await;
    let who = "mark@example.com";
    lock_out(&app, who).await;
    let body = json!({"userName": who, "emailAddress": who}).to_string().into_bytes();
    assert_eq!(app.send("POST", "/cms/iap/auth/resetPwd", &[], Some(("application/json", body))).await.status, 200);
    let link = link_in(&app.wait_outbox(1).await[0], "reset").unwrap();
    let new = json!({"password": "the password after the reset"}).to_string().into_bytes();
    assert_eq!(app.send("POST", &link, &[], Some(("application/json", new))).await.status, 200);

    let a = iam(&app, who, "the password after the reset").await;
    assert_eq!(a.status, 200, "the owner signs in at once: {}", a.text);
    // The address that guessed still has its count: one more failure (the fourth) locks it.
    assert_eq!(iam(&app, "someone.else", "guess").await.status, 401);
    assert_eq!(iam(&app, who, "the password after the reset").await.status, 429, "the address is held");
}

#[actix_web::test]
async fn a_password_change_frees_the_account() {
    let (app, _) = setup(throttled_without_delay).await;
    let who = "mark@example.com";
    let token = iam(&app, who, PASSWORD).await.json["token"].as_str().unwrap().to_string();
    lock_out(&app, who).await;
    // Even the owner's own change is held while the account is locked (it checks the old password)...
    let path = format!("/iam/passwordChange?app_id=forepaas&token={token}");
    let change = json!({"password": "a changed password", "oldpassword": PASSWORD});
    assert_eq!(app.post_json(&path, &change).await.status, 429);
    // ...but an administrator's change frees it, made by the command line in another process.
    let data = app.core.config.data_dir.to_str().unwrap().to_string();
    let (backend, url) = (app.core.config.store.backend.clone(), app.core.config.store.postgres_url.clone());
    let out = actix_web::rt::task::spawn_blocking(move || {
        let env = [
            ("GATEHOUSE_DATA_DIR", data.as_str()),
            ("GATEHOUSE_STORE__BACKEND", backend.as_str()),
            ("GATEHOUSE_STORE__POSTGRES_URL", url.as_str()),
        ];
        let dir = tempfile::tempdir().unwrap();
        gatehouse_cli(
            dir.path(),
            &env,
            &["user", "passwd", "mark@example.com", "--password-stdin"],
            "set by the admin\n",
        )
    })
    .await
    .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let a = iam(&app, who, "set by the admin").await;
    assert_eq!(a.status, 200, "the failures before the new password are forgotten: {}", a.text);
    let token = a.json["token"].as_str().unwrap().to_string();

    // And a change by the owner clears the count too: three more failures are needed to lock.
    for i in 0..2 {
        assert_eq!(iam(&app, who, &format!("again {i}")).await.status, 401);
    }
    let path = format!("/iam/passwordChange?app_id=forepaas&token={token}");
    let change = json!({"password": "the owner's own choice", "oldpassword": "set by the admin"});
    assert_eq!(app.post_json(&path, &change).await.status, 200);
    for i in 0..2 {
        assert_eq!(iam(&app, who, &format!("after {i}")).await.status, 401, "the count started again");
    }
    assert_eq!(iam(&app, who, "the owner's own choice").await.status, 200);
}

#[actix_web::test]
async fn one_address_guessing_many_accounts_is_locked_out() {
    let (app, _) = setup(|c| {
        throttled(c);
        c.throttle.address_failures = 4;
    })
    .await;
    for i in 0..4 {
        assert_eq!(iam(&app, &format!("user{i}@example.com"), "guess").await.status, 401);
    }
    let a = iam(&app, "mark@example.com", PASSWORD).await;
    assert_eq!(a.status, 429, "this address is locked out: {}", a.text);
    let events = |e: &str| app.count(&format!("SELECT count(*) FROM audit WHERE event = '{e}'"));
    assert_eq!((events("address_lockout"), events("lockout")), (1, 0), "an address lockout is told apart");
}

#[actix_web::test]
async fn api_key_guessing_is_throttled_too_but_never_the_right_key() {
    let (app, _) = setup(throttled).await;
    let key = app.core.add_api_key("mark@example.com", "forepaas", None).unwrap();
    let body = |secret: &str| json!({"apikey": key.apikey, "secretkey": secret, "auth_mode": "apikey"});
    let wrong = body(&"0".repeat(64));
    assert_eq!(app.post_json("/iam/login", &wrong).await.status, 401);
    assert_eq!(app.post_json("/iam/login", &wrong).await.status, 429, "the guesser waits");
    // A key's id is no secret: its owner is not held back by anyone's wrong secrets.
    let right = body(key.secretkey.expose());
    assert_eq!(app.post_json("/iam/login", &right).await.status, 200);
    sleep_ms(650).await;
    assert_eq!(app.post_json("/iam/login", &wrong).await.status, 401, "the wait is over");
}

#[actix_web::test]
async fn a_login_flood_beyond_the_hashing_queue_gets_503_while_token_checks_go_on() {
    let (app, _) = setup(|c| {
        c.argon2.workers = 1;
        c.argon2.queue = 2;
        // Slow hashes (the user's is made with these too), so that the queue is still full when
        // the last of the flood arrives, however loaded the machine running the test is.
        c.argon2.iterations = 8;
    })
    .await;
    let token = iam(&app, "mark@example.com", PASSWORD).await.json["token"].as_str().unwrap().to_string();
    let handles: Vec<_> = (0..24)
        .map(|_| {
            let url = app.url("/iam/login");
            actix_web::rt::spawn(async move {
                let body = json!({"login": "mark@example.com", "password": PASSWORD, "app_id": "forepaas", "auth_mode": "forepaas_id_resource_owner"});
                let mut res = awc::Client::default().post(url).send_json(&body).await.unwrap();
                let retry = res.headers().get("retry-after").map(|v| v.to_str().unwrap().to_string());
                let json: Value = res.json().await.unwrap_or(Value::Null);
                (res.status().as_u16(), retry, json)
            })
        })
        .collect();
    // Token checks answer while the flood is on.
    for _ in 0..5 {
        assert_eq!(app.get(&format!("/iam/checkSession?token={token}")).await.status, 200);
    }
    let mut busy = 0;
    let mut ok = 0;
    for h in handles {
        let (status, retry, json) = h.await.unwrap();
        match status {
            200 => ok += 1,
            503 => {
                busy += 1;
                assert_eq!(retry.as_deref(), Some("1"));
                assert_eq!(json["error"], json!("Server busy, retry later"));
            }
            other => panic!("unexpected {other}: {json}"),
        }
    }
    assert!(busy > 0, "some logins were turned away ({ok} ok)");
    // The queue holds 2; a third gets through only if the one worker took a job before the rest
    // arrived, which a loaded machine (nice 10 workers) does not promise.
    assert!(ok >= 2, "the queue's worth got through ({ok} ok, {busy} busy)");
}

#[actix_web::test]
async fn security_events_land_in_the_audit_log() {
    let (app, basic) = setup(|c| {
        throttled(c);
        c.throttle.account_failures = 2;
    })
    .await;
    let who = "mark@example.com";
    let token = iam(&app, who, PASSWORD).await.json["token"].as_str().unwrap().to_string();
    app.delete(&format!("/iam/logout?token={token}")).await;
    assert_eq!(iqm(&app, &basic, who, "guess").await.status, 403);
    sleep_ms(650).await;
    assert_eq!(cms(&app, who, "guess").await.status, 401);
    app.core.set_blocked(who, true).unwrap();
    let body = json!({"userName": who, "emailAddress": who}).to_string().into_bytes();
    app.send("POST", "/cms/iap/auth/resetPwd", &[], Some(("application/json", body))).await;

    let data = app.core.config.data_dir.display().to_string();
    let store = &app.core.config.store;
    let dir = tempfile::tempdir().unwrap();
    let out = crate::helpers::gatehouse_cli(
        dir.path(),
        &[
            ("GATEHOUSE_DATA_DIR", &data),
            ("GATEHOUSE_STORE__BACKEND", &store.backend),
            ("GATEHOUSE_STORE__POSTGRES_URL", &store.postgres_url),
        ],
        &["audit", "--user", who, "--since", "1h"],
        "",
    );
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8(out.stdout).unwrap();
    let events: Vec<&str> = text.lines().map(|l| l.split_whitespace().nth(1).unwrap()).collect();
    assert_eq!(
        events,
        ["user_added", "login_ok", "logout", "login_failed", "login_failed", "lockout", "user_blocked"],
        "{text}"
    );
    let failed = text.lines().find(|l| l.contains("login_failed")).unwrap();
    assert!(failed.contains("client=127.0.0.1") && failed.contains("dialect=iqm"), "{failed}");
    assert!(text
        .lines()
        .any(|l| l.contains("login_ok") && l.contains("app=forepaas") && l.contains("dialect=forepaas")));
    assert!(
        !text.contains(PASSWORD) && !text.contains("guess") && !text.contains(&token),
        "no secret in the audit log"
    );
    let out =
        crate::helpers::gatehouse_cli(dir.path(), &[("GATEHOUSE_DATA_DIR", &data)], &["audit", "--user", "nobody"], "");
    assert_eq!(String::from_utf8(out.stdout).unwrap(), "");
}

#[actix_web::test]
async fn the_reaper_applies_the_audit_retention() {
    let app = spawn_app_with(|c| {
        c.audit.retention = gatehouse::config::Seconds(Duration::from_millis(300));
        c.reaper.interval = gatehouse::config::Seconds(Duration::from_millis(100));
    })
    .await;
    app.add_user("mark@example.com", PASSWORD, &["forepaas"]);
    assert!(app.count("SELECT count(*) FROM audit") >= 1);
    sleep_ms(600).await;
    assert_eq!(app.count("SELECT count(*) FROM audit"), 0);
}

/// `n` values drawn from a proptest strategy (deterministic: the same every run).
fn samples<S: proptest::strategy::Strategy>(strategy: S, n: usize) -> Vec<S::Value> {
    use proptest::strategy::ValueTree;
    let mut runner = proptest::test_runner::TestRunner::deterministic();
    (0..n).map(|_| strategy.new_tree(&mut runner).unwrap().current()).collect()
}

fn percent_encode(bytes: &[u8]) -> String {
    bytes
        .iter()
        .map(|b| if b.is_ascii_alphanumeric() { (*b as char).to_string() } else { format!("%{b:02X}") })
        .collect()
}

#[actix_web::test]
async fn garbage_in_every_parser_gets_a_4xx_and_changes_nothing() {
    use proptest::prelude::*;
    let (app, basic) = setup(|_| {}).await;
    app.core.add_app("mgmt-app", None, &[Door::Iampass]).unwrap();
    let before = (app.count("SELECT count(*) FROM users"), app.count("SELECT count(*) FROM tokens"));

    let bodies = samples(proptest::collection::vec(any::<u8>(), 0..300), 40);
    let types = samples(
        prop_oneof![
            Just("application/json".to_string()),
            Just("application/x-www-form-urlencoded".to_string()),
            "[ -~]{0,40}"
        ],
        40,
    );
    let headers = samples("[ -~]{0,120}", 40);
    let segments = samples(proptest::collection::vec(any::<u8>(), 1..80), 40);
    let deep = format!("{}{}", "[".repeat(5000), "]".repeat(5000));
    let deep_object = format!("{{\"login\":{}1{}}}", "{\"a\":".repeat(300), "}".repeat(300));

    let mut answers: Vec<(String, u16)> = Vec::new();
    for i in 0..40 {
        let body = if i == 0 {
            deep.clone().into_bytes()
        } else if i == 1 {
            deep_object.clone().into_bytes()
        } else {
            bodies[i].clone()
        };
        for path in [
            "/iam/login",
            "/cms/iap/auth/login",
            "/cms/iap/auth/resetPwd",
            "/api/v3/ua/login",
            "/api/v3/ua/sign-up",
            "/api/v3/ua/oauth/token",
            "/api/v3/ua/user/update-password",
        ] {
            let auth: Vec<(&str, &str)> =
                if path.starts_with("/api") { vec![("Authorization", basic.as_str())] } else { vec![] };
            let a = app.send("POST", path, &auth, Some((types[i].as_str(), body.clone()))).await;
            answers.push((format!("POST {path} #{i}"), a.status));
        }
        let h = headers[i].as_str();
        for (method, path, name) in [
            ("POST", "/management/add_users/mgmt-app", "Authentication"),
            ("GET", "/management/has_registered_mobile_device/mgmt-app/x", "Authentication"),
            ("GET", "/cms/iap/users/current", "Cookie"),
            ("GET", "/api/v3/ua/user/info", "Authorization"),
            ("POST", "/api/v3/ua/sign-up", "Authorization"),
            ("POST", "/api/v3/ua/logout", "X-IAA-OW-ID"),
        ] {
            let a = app.send(method, path, &[(name, h)], Some(("application/json", body.clone()))).await;
            answers.push((format!("{method} {path} {name}={h:?}"), a.status));
        }
        let seg = percent_encode(&segments[i]);
        for (method, path) in [
            ("GET", format!("/reset/{seg}")),
            ("GET", format!("/register/{seg}")),
            ("POST", format!("/register/{seg}")),
            ("GET", format!("/management/device_registration_link/mgmt-app/{seg}")),
            ("GET", format!("/iam/checkSession?token={seg}&app_id={seg}")),
        ] {
            let a = app.send(method, &path, &[], Some(("application/json", body.clone()))).await;
            answers.push((format!("{method} {path}"), a.status));
        }
    }
    let bad: Vec<_> = answers.iter().filter(|(_, s)| *s >= 500 || *s < 400).collect();
    assert!(bad.is_empty(), "garbage got a non-4xx answer: {bad:?}");
    assert_eq!(
        (app.count("SELECT count(*) FROM users"), app.count("SELECT count(*) FROM tokens")),
        before,
        "nothing changed"
    );
}

/// A hash made under other parameters (before `[argon2]` changed, or imported) is made again
/// under the configured ones at the next sign-in, through the one password path, and nothing
/// else of the user changes (issue 26).
#[actix_web::test]
async fn a_password_hashed_under_old_parameters_is_hashed_again_at_sign_in() {
    let app = spawn_app_with(|_| {}).await;
    app.add_user("mark@example.com", PASSWORD, &["forepaas"]);
    let t = gatehouse::config::Config::default().argon2.iterations;
    let under = |app: &TestApp, t: u32| {
        app.count(&format!(
            "SELECT count(*) FROM users WHERE login = 'mark@example.com' AND password_hash LIKE '%,t={t},%'"
        ))
    };
    assert_eq!(under(&app, t), 1);
    let set_at = app.count("SELECT coalesce(password_set_at, -1) FROM users WHERE login = 'mark@example.com'");
    // A second server on the same data directory, with the parameters changed.
    let data = app.core.config.data_dir.clone();
    let app = crate::helpers::spawn_app_in(tempfile::tempdir().unwrap(), &data, |c| c.argon2.iterations = t + 1).await;
    assert_eq!(iam(&app, "mark@example.com", "wrong").await.status, 401);
    assert_eq!(under(&app, t), 1, "a wrong password changes nothing");
    assert_eq!(iam(&app, "mark@example.com", PASSWORD).await.status, 200);
    assert_eq!(under(&app, t + 1), 1, "hashed again under the configured parameters");
    assert_eq!(iam(&app, "mark@example.com", PASSWORD).await.status, 200, "and it verifies");
    let still = app.count("SELECT coalesce(password_set_at, -1) FROM users WHERE login = 'mark@example.com'");
    assert_eq!(still, set_at, "the password was not set: the throttle and expiry see no change");
}
