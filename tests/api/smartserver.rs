//! SmartServer CMS IAP/REST authentication (/cms/iap), as seed 002 and the field notes show it.

use std::time::Duration;

use serde_json::{json, Value};

use crate::helpers::{link_in, set_cookie, spawn_app, spawn_app_with, Answer, TestApp};

const PASSWORD: &str = "5pa?HG!O-long";

fn creds(user: &str, password: &str) -> Option<(&'static str, Vec<u8>)> {
    Some(("application/json", json!({"username": user, "password": password}).to_string().into_bytes()))
}

async fn login(app: &TestApp, user: &str, password: &str) -> Answer {
    app.send("POST", "/cms/iap/auth/login", &[], creds(user, password)).await
}

/// Logs in and returns the `cmsSID=...` pair to send back.
async fn session(app: &TestApp, user: &str) -> String {
    let a = login(app, user, PASSWORD).await;
    assert_eq!(a.status, 200, "{}", a.text);
    set_cookie(&a, "cmsSID").unwrap().split(';').next().unwrap().to_string()
}

async fn current(app: &TestApp, cookie: &str) -> Answer {
    app.send("GET", "/cms/iap/users/current", &[("Cookie", cookie)], None).await
}

fn assert_failure(a: &Answer, status: u16, path: &str) {
    assert_eq!(a.status, status, "{}", a.text);
    assert_eq!(a.content_type, "application/json");
    let o = a.json.as_object().unwrap_or_else(|| panic!("not JSON: {}", a.text));
    let mut keys: Vec<_> = o.keys().map(String::as_str).collect();
    keys.sort();
    assert_eq!(keys, ["error", "message", "path", "status", "timestamp"]);
    assert_eq!(a.json["status"], json!(status));
    assert_eq!(a.json["path"], json!(path));
    assert!(a.json["message"].as_str().is_some_and(|m| !m.is_empty()));
}

fn add_mark(app: &TestApp) {
    app.add_user("mark", PASSWORD, &["cms", "forepaas"]);
}

#[actix_web::test]
async fn session_timeout_is_a_bare_number_of_milliseconds() {
    let app = spawn_app().await;
    let a = app.get("/cms/iap/auth/sessionTimeout").await;
    assert_eq!(a.status, 200);
    assert_eq!(a.text, "86400000");
    let app = spawn_app_with(|c| c.cms.session_timeout = gatehouse::config::Seconds::secs(1800)).await;
    assert_eq!(app.get("/cms/iap/auth/sessionTimeout").await.text, "1800000");
}

#[actix_web::test]
async fn login_answers_the_user_object_with_every_field_and_type() {
    let app = spawn_app().await;
    add_mark(&app);
    let a = login(&app, "mark", PASSWORD).await;
    assert_eq!(a.status, 200, "{}", a.text);
    assert_eq!(a.content_type, "application/json");
    let u = a.json.as_object().unwrap();
    let mut keys: Vec<_> = u.keys().map(String::as_str).collect();
    keys.sort();
    assert_eq!(
        keys,
        [
            "blocked",
            "customerId",
            "demoMode",
            "emailAddress",
            "firstName",
            "googleApiKey",
            "id",
            "lastName",
            "licenseAgreementAccepted",
            "locale",
            "userName",
            "userType"
        ]
    );
    assert!(a.json["id"].is_i64());
    assert_eq!(a.json["userName"], json!("mark"));
    assert_eq!(a.json["firstName"], json!("John"));
    assert_eq!(a.json["lastName"], json!("Doe"));
    assert_eq!(a.json["emailAddress"], json!("mark@example.com"));
    assert_eq!(a.json["locale"], Value::Null);
    assert_eq!(a.json["customerId"], Value::Null);
    assert_eq!(a.json["userType"], json!("USER"));
    assert_eq!(a.json["licenseAgreementAccepted"], json!(false));
    assert_eq!(a.json["demoMode"], json!("NO"));
    assert_eq!(a.json["googleApiKey"], Value::Null, "the default config carries no key");
    assert_eq!(a.json["blocked"], json!(false));
}

#[actix_web::test]
async fn demo_mode_and_google_api_key_come_from_config() {
    let app = spawn_app_with(|c| {
        c.cms.demo_mode = "GLOBAL".into();
        c.cms.google_api_key = "AIza-test-key".into();
    })
    .await;
    add_mark(&app);
    let a = login(&app, "mark", PASSWORD).await;
    assert_eq!(a.json["demoMode"], json!("GLOBAL"));
    assert_eq!(a.json["googleApiKey"], json!("AIza-test-key"));
}

#[actix_web::test]
async fn the_session_cookie_is_httponly_strict_and_scoped_to_cms() {
    let app = spawn_app().await;
    add_mark(&app);
    let a = login(&app, "mark", PASSWORD).await;
    let cookie = set_cookie(&a, "cmsSID").unwrap();
    let attrs: Vec<&str> = cookie.split(';').map(str::trim).collect();
    let value = attrs[0].strip_prefix("cmsSID=").unwrap();
    assert_eq!(value.len(), 64);
    assert!(attrs.contains(&"HttpOnly"), "{cookie}");
    assert!(attrs.contains(&"SameSite=Strict"), "{cookie}");
    assert!(attrs.contains(&"Path=/cms"), "{cookie}");
    assert!(!attrs.contains(&"Secure"), "plain HTTP, not configured: {cookie}");
    assert!(!a.text.contains(value), "the session id is only in the cookie");

    let app = spawn_app_with(|c| c.cms.secure_cookie = true).await;
    add_mark(&app);
    let cookie = set_cookie(&login(&app, "mark", PASSWORD).await, "cmsSID").unwrap();
    assert!(cookie.split(';').any(|a| a.trim() == "Secure"), "{cookie}");
}

#[actix_web::test]
async fn current_user_needs_a_live_session_and_logout_ends_it() {
    let app = spawn_app().await;
    add_mark(&app);
    let cookie = session(&app, "mark").await;
    let a = current(&app, &cookie).await;
    assert_eq!(a.status, 200, "{}", a.text);
    assert_eq!(a.json["userName"], json!("mark"));
    assert!(a.json["id"].is_i64());

    assert_failure(&app.get("/cms/iap/users/current").await, 401, "/cms/iap/users/current");
    assert_failure(&current(&app, "cmsSID=0123").await, 401, "/cms/iap/users/current");

    let out = app.send("PUT", "/cms/iap/auth/logout", &[("Cookie", &cookie)], None).await;
    assert_eq!(out.status, 200);
    let cleared = set_cookie(&out, "cmsSID").unwrap();
    assert!(cleared.starts_with("cmsSID=;") && cleared.contains("Max-Age=0"), "{cleared}");
    assert_failure(&current(&app, &cookie).await, 401, "/cms/iap/users/current");
    // Logging out again, or with no session, still clears the cookie and answers 200.
    assert_eq!(app.send("PUT", "/cms/iap/auth/logout", &[("Cookie", &cookie)], None).await.status, 200);
    assert_eq!(app.send("PUT", "/cms/iap/auth/logout", &[], None).await.status, 200);
}

#[actix_web::test]
async fn a_session_unused_for_the_timeout_ends_and_use_slides_it() {
    let app = spawn_app_with(|c| c.cms.session_timeout = gatehouse::config::Seconds(Duration::from_millis(2500))).await;
    add_mark(&app);
    let cookie = session(&app, "mark").await;
    // Four uses 1 s apart outlast the 2.5 s timeout; then 3.5 s unused end it.
    for _ in 0..4 {
        actix_web::rt::time::sleep(Duration::from_millis(1000)).await;
        assert_eq!(current(&app, &cookie).await.status, 200);
    }
    actix_web::rt::time::sleep(Duration::from_millis(3500)).await;
    assert_failure(&current(&app, &cookie).await, 401, "/cms/iap/users/current");
}

#[actix_web::test]
async fn a_session_ends_at_its_cap_however_much_it_is_used() {
    let app = spawn_app_with(|c| {
        c.cms.session_timeout = gatehouse::config::Seconds(Duration::from_millis(2500));
        c.cms.session_lifetime = gatehouse::config::Seconds(Duration::from_millis(3600));
    })
    .await;
    add_mark(&app);
    let cookie = session(&app, "mark").await;
    // Used every 1200 ms it never idles out (a loaded machine's late wake-ups have 1.3 s of
    // room), but the cap ends it after 3600 ms.
    for _ in 0..2 {
        actix_web::rt::time::sleep(Duration::from_millis(1200)).await;
        assert_eq!(current(&app, &cookie).await.status, 200);
    }
    actix_web::rt::time::sleep(Duration::from_millis(1400)).await;
    assert_failure(&current(&app, &cookie).await, 401, "/cms/iap/users/current");
}

#[actix_web::test]
async fn wrong_credentials_blocked_and_non_members() {
    let app = spawn_app().await;
    add_mark(&app);
    app.add_user("iam.only", PASSWORD, &["forepaas"]);
    let path = "/cms/iap/auth/login";
    let wrong = login(&app, "mark", "not the password").await;
    let unknown = login(&app, "nobody", PASSWORD).await;
    assert_failure(&wrong, 401, path);
    assert_failure(&unknown, 401, path);
    assert_eq!(wrong.json["message"], unknown.json["message"]);
    assert!(set_cookie(&wrong, "cmsSID").is_none());

    assert_failure(&login(&app, "iam.only", PASSWORD).await, 403, path);
    app.core.set_blocked("mark", true).unwrap();
    let blocked = login(&app, "mark", PASSWORD).await;
    assert_failure(&blocked, 403, path);
    assert_eq!(blocked.json["message"], json!("User is blocked"));
}

#[actix_web::test]
async fn malformed_requests_get_400_and_other_media_types_415() {
    let app = spawn_app().await;
    add_mark(&app);
    let path = "/cms/iap/auth/login";
    let send = |ct: &'static str, body: &'static str| app.send("POST", path, &[], Some((ct, body.as_bytes().to_vec())));
    assert_failure(&send("application/json", "{\"username\":").await, 400, path);
    assert_failure(&send("application/json", "[]").await, 400, path);
    assert_failure(&send("application/json", "{\"username\":\"mark\"}").await, 400, path);
    assert_failure(&send("application/json", "{\"password\":\"x\"}").await, 400, path);
    assert_failure(&send("application/json", "{\"username\":\"mark\",\"password\":7}").await, 400, path);
    assert_failure(&send("application/x-www-form-urlencoded", "username=mark&password=x").await, 415, path);
    assert_failure(&send("text/plain", "{}").await, 415, path);
    assert_failure(&app.send("POST", path, &[], None).await, 415, path);
    assert_failure(&app.get(path).await, 405, path);
    assert_failure(&app.get("/cms/iap/nothing").await, 404, "/cms/iap/nothing");
    let big = format!("{{\"username\":\"{}\"}}", "x".repeat(70_000));
    assert_failure(&app.send("POST", path, &[], Some(("application/json", big.into_bytes()))).await, 413, path);
    assert_eq!(app.count("SELECT count(*) FROM tokens"), 0, "nothing changed");
}

fn reset_body(user: &str, email: &str) -> Option<(&'static str, Vec<u8>)> {
    Some(("application/json", json!({"userName": user, "emailAddress": email}).to_string().into_bytes()))
}

#[actix_web::test]
async fn reset_answers_the_same_whether_or_not_it_matched() {
    let app = spawn_app().await;
    add_mark(&app);
    let miss_email = app.send("POST", "/cms/iap/auth/resetPwd", &[], reset_body("mark", "other@example.com")).await;
    let miss_user = app.send("PUT", "/cms/iap/auth/resetPwd", &[], reset_body("nobody", "mark@example.com")).await;
    let hit = app.send("POST", "/cms/iap/auth/resetPwd", &[], reset_body("MARK", "Mark@Example.com")).await;
    for a in [&miss_email, &miss_user, &hit] {
        assert_eq!(a.status, 200);
        assert_eq!(a.text, hit.text);
        let mut names: Vec<_> = a.headers.keys().map(|k| k.as_str().to_string()).collect();
        names.sort();
        let mut want: Vec<_> = hit.headers.keys().map(|k| k.as_str().to_string()).collect();
        want.sort();
        assert_eq!(names, want);
    }
    let mail = app.wait_outbox(1).await;
    actix_web::rt::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(app.outbox().len(), 1, "only the match is mailed");
    assert!(mail[0].contains("To: mark@example.com"), "{}", mail[0]);
    assert!(link_in(&mail[0], "reset").is_some(), "{}", mail[0]);

    // Bad input is refused in the envelope and mails nothing.
    let path = "/cms/iap/auth/resetPwd";
    let bad = app.send("POST", path, &[], Some(("application/json", b"{\"userName\":\"mark\"}".to_vec()))).await;
    assert_failure(&bad, 400, path);
    assert_failure(&app.send("PUT", path, &[], Some(("text/plain", b"x".to_vec()))).await, 415, path);
}

#[actix_web::test]
async fn the_whole_reset_path_through_the_outbox_and_the_link() {
    let app = spawn_app_with(|c| c.public_url = "https://box.example:8443/".into()).await;
    add_mark(&app);
    let old_cookie = session(&app, "mark").await;
    let iam = app
        .post_json(
            "/iam/login",
            &json!({"login": "mark", "password": PASSWORD, "app_id": "forepaas", "auth_mode": "forepaas_id_resource_owner"}),
        )
        .await;
    let iam_token = iam.json["token"].as_str().unwrap().to_string();

    app.send("POST", "/cms/iap/auth/resetPwd", &[], reset_body("mark", "mark@example.com")).await;
    let mail = app.wait_outbox(1).await;
    assert!(mail[0].contains("https://box.example:8443/reset/"), "the link uses public_url: {}", mail[0]);
    let link = link_in(&mail[0], "reset").unwrap();

    let page = app.get(&link).await;
    assert_eq!(page.status, 200);
    assert!(page.content_type.starts_with("text/html"));
    assert!(page.text.contains("Choose a new password"));
    let csp = page.headers.get("content-security-policy").unwrap().to_str().unwrap();
    assert!(
        csp.contains("frame-ancestors 'none'") && csp.contains("script-src 'self'") && !csp.contains("unsafe-inline")
    );
    assert_eq!(page.headers.get("cache-control").unwrap(), "no-store");
    assert!(!page.text.contains("<script>"), "no inline script");

    let post = |p: &str| {
        app.send("POST", &link, &[], Some(("application/json", json!({"password": p}).to_string().into_bytes())))
    };
    let weak = post("short").await;
    assert_eq!(weak.status, 400);
    assert_eq!(weak.json["success"], json!(false));
    assert!(weak.json["error"].as_str().unwrap().contains("at least 8"), "{}", weak.text);
    let done = post("a fresh strong password").await;
    assert_eq!(done.status, 200, "{}", done.text);
    assert_eq!(done.json, json!({"success": true}));

    // The code is used up.
    assert_eq!(post("yet another password").await.status, 410);
    let gone = app.get(&link).await;
    assert_eq!(gone.status, 410);
    assert!(gone.text.contains("no longer works"));

    // Every session ended, in every dialect; the old password is refused, the new one works.
    assert_failure(&current(&app, &old_cookie).await, 401, "/cms/iap/users/current");
    assert_eq!(app.get(&format!("/iam/checkSession?token={iam_token}")).await.status, 401);
    assert_eq!(login(&app, "mark", PASSWORD).await.status, 401);
    assert_eq!(login(&app, "mark", "a fresh strong password").await.status, 200);
    let iam_new = json!({"login": "mark", "password": "a fresh strong password", "app_id": "forepaas", "auth_mode": "forepaas_id_resource_owner"});
    assert_eq!(app.post_json("/iam/login", &iam_new).await.status, 200);
    let events = |e: &str| app.count(&format!("SELECT count(*) FROM audit WHERE event = '{e}' AND login = 'mark'"));
    assert_eq!((events("reset_requested"), events("reset_done")), (1, 1));
}

#[actix_web::test]
async fn reset_mail_is_limited_per_account_and_per_address_and_answers_alike() {
    let app = spawn_app_with(|c| {
        c.mail.resets_per_account_hour = 2;
        c.mail.resets_per_address_hour = 5;
    })
    .await;
    add_mark(&app);
    app.add_user("anna", PASSWORD, &["cms"]);
    let path = "/cms/iap/auth/resetPwd";
    // A request is handled after its answer: each is given time to be handled before the next, so
    // that which one a limit refuses is the last one, as the test says.
    let settle = || actix_web::rt::time::sleep(Duration::from_millis(400));
    let ask = |user: &'static str| app.send("POST", path, &[], reset_body(user, &format!("{user}@example.com")));
    let first = ask("mark").await;
    assert_eq!(first.status, 200, "{}", first.text);
    app.wait_outbox(1).await;
    let mut answers = vec![ask("mark").await];
    app.wait_outbox(2).await;
    answers.push(ask("mark").await);
    settle().await;
    let mail = app.outbox();
    assert_eq!(mail.len(), 2, "the third request for mark sent nothing");
    // The live link is the second mail's: the refused third did not void it.
    let live = link_in(&mail[1], "reset").unwrap();
    assert_eq!(app.get(&live).await.status, 200);
    assert_eq!(app.get(&link_in(&mail[0], "reset").unwrap()).await.status, 410);

    // This address has asked 3 times; 2 more (for no one) reach its limit, then even a fresh
    // account is sent nothing.
    answers.push(ask("nobody").await);
    settle().await;
    answers.push(ask("nobody").await);
    settle().await;
    answers.push(ask("anna").await);
    settle().await;
    assert_eq!(app.outbox().len(), 2, "the address is over its limit");
    for a in &answers {
        assert_eq!((a.status, &a.text), (first.status, &first.text), "every answer is the same");
    }
    // Sign-ins go on as ever.
    assert_eq!(login(&app, "anna", PASSWORD).await.status, 200);
}

#[actix_web::test]
async fn below_the_disk_reserve_no_mail_is_written_and_the_live_link_stays() {
    let app = spawn_app_with(|c| c.mail.min_free_mb = u64::MAX >> 21).await;
    add_mark(&app);
    let a = app.send("POST", "/cms/iap/auth/resetPwd", &[], reset_body("mark", "mark@example.com")).await;
    assert_eq!(a.status, 200, "answered as ever: {}", a.text);
    actix_web::rt::time::sleep(Duration::from_millis(300)).await;
    assert!(app.outbox().is_empty());
    assert_eq!(app.count("SELECT count(*) FROM links"), 0, "no link made for a mail that cannot be written");
    assert_eq!(login(&app, "mark", PASSWORD).await.status, 200, "sign-ins and the store go on");
}

#[actix_web::test]
async fn expired_voided_and_malformed_codes_are_gone() {
    let app =
        spawn_app_with(|c| c.links.reset_lifetime = gatehouse::config::Seconds(Duration::from_millis(2500))).await;
    add_mark(&app);
    app.send("POST", "/cms/iap/auth/resetPwd", &[], reset_body("mark", "mark@example.com")).await;
    let first = link_in(&app.wait_outbox(1).await[0], "reset").unwrap();
    app.send("POST", "/cms/iap/auth/resetPwd", &[], reset_body("mark", "mark@example.com")).await;
    let second = link_in(&app.wait_outbox(2).await[1], "reset").unwrap();
    assert_ne!(first, second);
    assert_eq!(app.get(&first).await.status, 410, "a newer link voids the older one");
    assert_eq!(app.get(&second).await.status, 200);
    actix_web::rt::time::sleep(Duration::from_millis(2600)).await;
    let body = Some(("application/json", json!({"password": "a fresh strong password"}).to_string().into_bytes()));
    assert_eq!(app.send("POST", &second, &[], body.clone()).await.status, 410, "expired");
    assert_eq!(app.get("/reset/not-a-code").await.status, 410);
    assert_eq!(app.send("POST", &format!("/reset/{}", "ab".repeat(32)), &[], body).await.status, 410);
    assert_eq!(login(&app, "mark", PASSWORD).await.status, 200, "nothing changed");
}

#[actix_web::test]
async fn the_reset_page_works_in_a_real_browser() {
    use crate::browser::{browser_here, Browser};
    if !browser_here() {
        return;
    }
    let app = spawn_app().await;
    add_mark(&app);
    app.send("POST", "/cms/iap/auth/resetPwd", &[], reset_body("mark", "mark@example.com")).await;
    let link = link_in(&app.wait_outbox(1).await[0], "reset").unwrap();

    let browser = Browser::start().await;
    browser.goto(&app.url(&link)).await;
    // A mismatch is caught on the page and changes nothing.
    browser.type_into("#password", "a browser-chosen password").await;
    browser.type_into("#confirm", "something else entirely").await;
    browser.click("#submit").await;
    assert!(browser.wait_text("#result", "differ").await.contains("differ"));
    assert_eq!(login(&app, "mark", PASSWORD).await.status, 200);

    browser.goto(&app.url(&link)).await;
    browser.type_into("#password", "a browser-chosen password").await;
    browser.type_into("#confirm", "a browser-chosen password").await;
    browser.click("#submit").await;
    let text = browser.wait_text("#result", "has been changed").await;
    assert!(text.contains("has been changed"), "{text}");
    assert_eq!(login(&app, "mark", "a browser-chosen password").await.status, 200);
    assert_eq!(login(&app, "mark", PASSWORD).await.status, 401);

    // Opened again, the used link says so plainly.
    browser.goto(&app.url(&link)).await;
    assert!(browser.wait_text("h1", "no longer works").await.contains("no longer works"));
    assert!(browser.text("#gone").await.contains("used already"));
}

#[actix_web::test]
async fn a_password_change_voids_an_outstanding_reset_link() {
    let app = spawn_app().await;
    add_mark(&app);
    app.send("POST", "/cms/iap/auth/resetPwd", &[], reset_body("mark", "mark@example.com")).await;
    let link = link_in(&app.wait_outbox(1).await[0], "reset").unwrap();
    app.core.set_password("mark", &gatehouse::core::Secret::new("the administrator's choice")).unwrap();
    assert_eq!(app.get(&link).await.status, 410);
}
