//! Logins and names are clean text (#15): control characters, bidirectional overrides, isolates and
//! marks are refused wherever a login, an email, a user id or a name is created or looked up, in
//! each dialect's own envelope and with nothing created; two spellings of one name (NFC and NFD)
//! are one user; what a user typed is escaped in `gatehouse audit`.

use gatehouse::core::apps::Door;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine;
use gatehouse::core::users::NewUser;
use gatehouse::core::Error;
use serde_json::{json, Value};

use crate::helpers::{gatehouse_cli, link_in, spawn_app, spawn_app_with, Answer, TestApp};

const PASSWORD: &str = "a long enough password";
/// "josé" with a precomposed é (NFC), and with e and a combining acute accent (NFD).
const JOSE_NFC: &str = "jos\u{e9}";
const JOSE_NFD: &str = "jose\u{301}";
const REFUSED: &str = "must not hold control characters, bidirectional controls or invisible characters";

/// A signed IAMPASS call (iampass-hmac.md) with the application's credentials.
async fn iampass(app: &TestApp, id: &str, secret: &str, method: &str, target: &str, body: Option<Value>) -> Answer {
    let nonce = crate::iampass::fresh_nonce();
    let ts = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs().to_string();
    let url = format!("{}{target}", app.base.trim_start_matches("http://"));
    let auth = format!("hmac {id}:{nonce}:{}", crate::iampass::sign(secret, &nonce, &url, &ts));
    let headers = [("Authentication", auth.as_str()), ("X-IAMPASS-Authentication-Timestamp", ts.as_str())];
    app.send(method, target, &headers, body.map(|b| ("application/json", b.to_string().into_bytes()))).await
}

/// IAMPASS's answer to a refused body: 200 `{"status":false,"reason":...}`.
fn assert_iampass_refusal(a: &Answer, reason: &str) {
    assert_eq!(a.status, 200, "{}", a.text);
    assert_eq!(a.json["status"], json!(false), "{}", a.text);
    assert!(a.json["reason"].as_str().is_some_and(|r| r.contains(reason)), "{}", a.text);
}

#[actix_web::test]
async fn iampass_refuses_control_and_bidi_characters_in_user_ids_and_display_names() {
    let app = spawn_app().await;
    let secret = app.core.add_app("partner", None, &[Door::Iampass]).unwrap().expose().to_string();
    let call = |method: &'static str, target: String, body: Option<Value>| {
        let (app, secret) = (&app, secret.clone());
        async move { iampass(app, "partner", &secret, method, &target, body).await }
    };
    for bad in ["evil\u{202e}gpj.exe", "esc\u{1b}[31m", "isolate\u{2066}x\u{2069}", "mark\u{200f}", "c1\u{85}"] {
        let a = call("POST", "/management/add_users/partner".into(), Some(json!({"users": ["good", bad]}))).await;
        assert_iampass_refusal(&a, "bidirectional controls");
    }
    assert_eq!(app.count("SELECT count(*) FROM users"), 0, "a refused list creates no one, not even the good one");

    // One user, whichever spelling: NFD finds the NFC user, and adding it again is "existing".
    let a = call("POST", "/add_users/partner".into(), Some(json!({"users": [JOSE_NFC]}))).await;
    assert_eq!(a.status, 201, "{}", a.text);
    assert_eq!(a.json["users"]["created"], json!([JOSE_NFC]));
    let a = call("POST", "/add_users/partner".into(), Some(json!({"users": [JOSE_NFD, "JOSE\u{301}"]}))).await;
    assert_eq!(a.status, 201, "{}", a.text);
    assert_eq!(a.json["users"], json!({"created": [], "existing": [JOSE_NFC]}));
    assert_eq!(app.count("SELECT count(*) FROM users"), 1);
    let a = call("GET", "/management/device_registration_link/partner/jose%CC%81".into(), None).await;
    assert_eq!(a.status, 200, "the NFD spelling in the path finds the user: {}", a.text);
    assert_eq!(app.count("SELECT count(*) FROM links"), 1);

    // A user id or a display name with a bidi override is refused, and no link is made.
    let a = call("GET", "/management/has_registered_mobile_device/partner/evil%E2%80%AEx".into(), None).await;
    assert_iampass_refusal(&a, REFUSED);
    let target = "/management/device_registration_link/partner/jos%C3%A9?display_name=Jos%C3%A9%E2%80%AE@evil";
    assert_iampass_refusal(&call("GET", target.into(), None).await, REFUSED);
    let a = call("GET", "/management/lost_user_mobile_device/partner/jos%C3%A9?display_name=a%1Bb".into(), None).await;
    assert_iampass_refusal(&a, REFUSED);
    let a = call("POST", "/authentication/authenticate_user/partner/ev%E2%80%AEil".into(), None).await;
    assert_iampass_refusal(&a, REFUSED);
    assert_eq!(app.count("SELECT count(*) FROM links"), 1, "refused calls made no link");
    assert_eq!(app.count("SELECT count(*) FROM users"), 1);
}

#[actix_web::test]
async fn a_device_name_with_a_bidi_override_is_refused_on_the_registration_page() {
    let app = spawn_app().await;
    let secret = app.core.add_app("partner", None, &[Door::Iampass]).unwrap().expose().to_string();
    let a = iampass(&app, "partner", &secret, "POST", "/add_users/partner", Some(json!({"users": ["ann"]}))).await;
    assert_eq!(a.status, 201, "{}", a.text);
    let a = iampass(&app, "partner", &secret, "GET", "/device_registration_link/partner/ann", None).await;
    let link = link_in(a.json["register_url"].as_str().unwrap(), "register").unwrap();
    for bad in ["Pixel\u{202e}9 orP", "Pixel\n9", "\u{2067}Pixel\u{2069}", "Pixel\u{9b}9"] {
        let body = json!({"device_name": bad}).to_string().into_bytes();
        let a = app.send("POST", &link, &[], Some(("application/json", body))).await;
        assert_eq!(a.status, 400, "{bad:?}: {}", a.text);
        assert_eq!(a.json, json!({"success": false, "error": format!("device_name: {REFUSED}")}));
    }
    assert_eq!(app.count("SELECT count(*) FROM devices"), 0);
    assert_eq!(app.count("SELECT count(*) FROM api_keys"), 0);
    let body = json!({"device_name": "Pixel 9"}).to_string().into_bytes();
    let a = app.send("POST", &link, &[], Some(("application/json", body))).await;
    assert_eq!(a.status, 201, "the refused names did not use the link: {}", a.text);
}

fn basic_of(id: &str, secret: &str) -> String {
    format!("Basic {}", base64::engine::general_purpose::STANDARD.encode(format!("{id}:{secret}")))
}

#[actix_web::test]
async fn iqm_sign_up_refuses_bidi_and_one_email_in_two_spellings_is_one_user() {
    let app = spawn_app().await;
    let basic =
        basic_of("iqm-client", app.core.add_app("iqm-client", None, &[Door::Iqm, Door::Oauth]).unwrap().expose());
    let post = |path: &'static str, body: Value| {
        let (app, basic) = (&app, basic.clone());
        async move {
            let body = Some(("application/json", body.to_string().into_bytes()));
            app.send("POST", path, &[("Authorization", basic.as_str())], body).await
        }
    };
    for bad in ["evil\u{202e}moc.liame@x.io", "tab\t@x.io", "nul\u{0}@x.io", "\u{200e}a@x.io"] {
        let a = post("/api/v3/ua/sign-up", json!({"email": bad, "password": PASSWORD})).await;
        assert_eq!(a.status, 403, "{bad:?}: {}", a.text);
        assert_eq!(
            a.json,
            json!({"success": false, "errorObjects": [{"error": "Invalid email", "reason": format!("The email {REFUSED}.")}]})
        );
        let a = post("/api/v3/ua/user/reset-password", json!({"email": bad})).await;
        assert_eq!(a.status, 403, "{bad:?}: {}", a.text);
        assert_eq!(a.json["errorObjects"][0]["error"], json!("Invalid email"));
    }
    assert_eq!(app.count("SELECT count(*) FROM users"), 0);

    let nfc = format!("{JOSE_NFC}@example.com");
    let nfd = format!("{JOSE_NFD}@example.com");
    let a = post("/api/v3/ua/sign-up", json!({"email": nfd, "password": PASSWORD})).await;
    assert_eq!(a.status, 200, "{}", a.text);
    assert_eq!(app.count(&format!("SELECT count(*) FROM users WHERE login = '{nfc}' AND email = '{nfc}'")), 1);
    for spelling in [&nfc, &nfd] {
        let a =
            post("/api/v3/ua/login", json!({"grantType": "password", "email": spelling, "password": PASSWORD})).await;
        assert_eq!(a.status, 200, "{spelling:?}: {}", a.text);
        let a = post("/api/v3/ua/sign-up", json!({"email": spelling, "password": PASSWORD})).await;
        assert_eq!(a.status, 403, "{}", a.text);
        assert_eq!(a.json["errorObjects"][0]["error"], json!("User already exists"));
    }
    assert_eq!(app.count("SELECT count(*) FROM users"), 1);
}

/// A user made as the command line makes them (`Core::add_user`).
fn add(app: &TestApp, login: &str) -> Result<gatehouse::core::User, Error> {
    app.core.add_user(NewUser {
        login: login.into(),
        password: Some(gatehouse::core::Secret::new(PASSWORD)),
        user_type: "USER".into(),
        apps: vec!["forepaas".into(), "cms".into()],
        ..NewUser::default()
    })
}

#[actix_web::test]
async fn forepaas_and_cms_sign_ins_refuse_control_characters_and_find_every_spelling() {
    let app = spawn_app().await;
    add(&app, JOSE_NFC).unwrap();
    assert!(matches!(add(&app, JOSE_NFD), Err(Error::Exists(_))), "the NFD spelling is a duplicate");
    assert!(matches!(add(&app, "Jos\u{c9}"), Err(Error::Exists(_))), "and so is another case");
    assert_eq!(app.count("SELECT count(*) FROM users"), 1);

    let iam = |login: &str| {
        let body = json!({"login": login, "password": PASSWORD, "app_id": "forepaas", "auth_mode": "forepaas_id_resource_owner"});
        let app = &app;
        async move { app.post_json("/iam/login", &body).await }
    };
    let a = iam(JOSE_NFD).await;
    assert_eq!(a.status, 200, "{}", a.text);
    assert_eq!(a.json["login"], json!(JOSE_NFC));
    for bad in ["alice\nFAKE LOG LINE", "alice\u{202e}", "alice\u{7f}"] {
        let a = iam(bad).await;
        assert_eq!(a.status, 400, "{bad:?}: {}", a.text);
        assert_eq!(a.json["error"], json!(format!("Invalid parameter login: {REFUSED}")));
        assert_eq!(a.json["success"], json!(false));
        assert_eq!(a.json["status"], json!(400));
    }

    let cms = |path: &'static str, body: Value| {
        let app = &app;
        async move { app.send("POST", path, &[], Some(("application/json", body.to_string().into_bytes()))).await }
    };
    let a = cms("/cms/iap/auth/login", json!({"username": JOSE_NFD, "password": PASSWORD})).await;
    assert_eq!(a.status, 200, "{}", a.text);
    assert_eq!(a.json["userName"], json!(JOSE_NFC));
    let a = cms("/cms/iap/auth/login", json!({"username": "evil\u{202e}", "password": PASSWORD})).await;
    assert_eq!(a.status, 400, "{}", a.text);
    assert_eq!(a.json["message"], json!(format!("login: {REFUSED}")));
    assert_eq!(a.json["path"], json!("/cms/iap/auth/login"));
    let a = cms("/cms/iap/auth/resetPwd", json!({"userName": "a\u{85}b", "emailAddress": "a@example.com"})).await;
    assert_eq!(a.status, 400, "{}", a.text);
    assert_eq!(a.json["message"], json!(format!("userName: {REFUSED}")));
    assert_eq!(app.count("SELECT count(*) FROM links"), 0);
    assert_eq!(app.count("SELECT count(*) FROM users"), 1);
}

#[actix_web::test]
async fn every_spelling_of_an_account_counts_against_one_throttle() {
    let app = spawn_app_with(|c| {
        c.throttle.account_failures = 2;
        c.throttle.lockout = gatehouse::config::Seconds::secs(60);
    })
    .await;
    add(&app, JOSE_NFC).unwrap();
    let iam = |login: &str, password: &str| {
        let body = json!({"login": login, "password": password, "app_id": "forepaas", "auth_mode": "forepaas_id_resource_owner"});
        let app = &app;
        async move { app.post_json("/iam/login", &body).await }
    };
    assert_eq!(iam(JOSE_NFC, "a wrong password").await.status, 401);
    assert_eq!(iam(JOSE_NFD, "another wrong one").await.status, 401);
    let a = iam("JOSE\u{301}", PASSWORD).await;
    assert_eq!(a.status, 429, "two failures in two spellings lock the one account out: {}", a.text);
}

#[test]
fn the_command_line_refuses_control_and_bidi_characters_and_one_spelling_is_one_user() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let run = |args: &[&str]| gatehouse_cli(d, &[], args, "");
    let fails = |args: &[&str], what: &str| {
        let out = run(args);
        assert_eq!(out.status.code(), Some(1), "{args:?} should fail");
        let err = String::from_utf8(out.stderr).unwrap();
        assert_eq!(err.trim_end().lines().count(), 1, "one line: {err:?}");
        assert!(err.contains(what), "{args:?}: {err}");
        assert!(!err.contains('\u{1b}') && !err.contains('\u{202e}'), "{err:?}");
    };
    fails(&["user", "add", "--no-password", "evil\u{202e}gpj.exe"], &format!("login: {REFUSED}"));
    fails(&["user", "add", "--no-password", "alice\nFAKE"], &format!("login: {REFUSED}"));
    fails(&["user", "add", "--no-password", "bob", "--first-name", "Bob\u{1b}[31m"], &format!("first name: {REFUSED}"));
    fails(&["user", "add", "--no-password", "bob", "--last-name", "\u{2066}Doe"], &format!("last name: {REFUSED}"));
    fails(&["user", "add", "--no-password", "bob", "--civility", "M.\u{200e}"], &format!("civility: {REFUSED}"));
    fails(&["user", "add", "--no-password", "bob", "--email", "bob\u{202e}@example.com"], &format!("email: {REFUSED}"));
    fails(&["app", "add", "app\u{202e}", "--door", "iampass"], "application id");
    let list = String::from_utf8(run(&["user", "list"]).stdout).unwrap();
    assert_eq!(list.lines().count(), 1, "nothing was added: {list}");

    assert!(run(&["user", "add", "--no-password", JOSE_NFD, "--first-name", "Jose\u{301}"]).status.success());
    fails(&["user", "add", "--no-password", JOSE_NFC], "already exists");
    let list = String::from_utf8(run(&["user", "list"]).stdout).unwrap();
    assert!(list.lines().any(|l| l.split_whitespace().nth(1) == Some(JOSE_NFC)), "stored in NFC: {list}");
    assert!(run(&["user", "block", "JOSE\u{301}"]).status.success(), "another spelling finds the user");
    // A lookup with a line break is refused in one line, not echoed as two.
    fails(&["user", "block", "alice\nFAKE LINE"], &format!("login: {REFUSED}"));
}

#[actix_web::test]
async fn gatehouse_audit_prints_what_a_client_typed_escaped() {
    let app = spawn_app().await;
    let typed = "nokey\nFAKE AUDIT LINE\u{1b}[2J\u{202e}";
    let body = json!({"apikey": typed, "secretkey": "whatever", "app_id": "forepaas", "auth_mode": "apikey"});
    assert_eq!(app.post_json("/iam/login", &body).await.status, 401);
    let basic = basic_of("client\r\nFAKE AUDIT LINE", "a-secret");
    let a = app
        .send(
            "POST",
            "/oauth2/introspect",
            &[("Authorization", basic.as_str())],
            Some(("application/x-www-form-urlencoded", b"token=abc".to_vec())),
        )
        .await;
    assert_eq!(a.status, 401, "{}", a.text);
    // The audit events are in; the command line reads them from the same data directory.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while app.count("SELECT count(*) FROM audit WHERE event IN ('login_failed', 'client_auth_failed')") < 2 {
        assert!(std::time::Instant::now() < deadline, "the audit events were not written");
        actix_web::rt::time::sleep(Duration::from_millis(50)).await;
    }
    let data = app.core.config.data_dir.to_str().unwrap().to_string();
    let out = gatehouse_cli(app._dir.path(), &[("GATEHOUSE_DATA_DIR", &data)], &["audit"], "");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let listing = String::from_utf8(out.stdout).unwrap();
    assert!(!listing.contains('\u{1b}') && !listing.contains('\u{202e}') && !listing.contains('\r'), "{listing:?}");
    assert!(!listing.lines().any(|l| l.starts_with("FAKE")), "a forged line: {listing}");
    let failed = listing.lines().find(|l| l.contains("login_failed")).unwrap_or_else(|| panic!("{listing}"));
    assert!(failed.contains("user=apikey:nokey\\nFAKE AUDIT LINE\\u{1b}[2J\\u{202e}  app="), "{failed}");
    let client = listing.lines().find(|l| l.contains("client_auth_failed")).unwrap_or_else(|| panic!("{listing}"));
    assert!(client.contains("user=client\\r\\nFAKE AUDIT LINE  app="), "{client}");
    assert_eq!(listing.lines().count(), 2, "one line per event: {listing}");
}

/// Invisible characters (issue 24): a second spelling of a login that prints like the first.
const INVISIBLE: [&str; 8] = [
    "\u{200b}",  // ZERO WIDTH SPACE
    "\u{2060}",  // WORD JOINER
    "\u{00ad}",  // SOFT HYPHEN
    "\u{feff}",  // ZERO WIDTH NO-BREAK SPACE
    "\u{e0041}", // TAG LATIN CAPITAL LETTER A
    "\u{3164}",  // HANGUL FILLER: a login that looks blank
    "\u{fe0f}",  // VARIATION SELECTOR-16
    "\u{180e}",  // MONGOLIAN VOWEL SEPARATOR
];

#[actix_web::test]
async fn iqm_sign_up_refuses_an_invisible_second_spelling_of_a_login() {
    let app = spawn_app().await;
    let basic =
        basic_of("iqm-client", app.core.add_app("iqm-client", None, &[Door::Iqm, Door::Oauth]).unwrap().expose());
    let post = |path: &'static str, body: Value| {
        let (app, basic) = (&app, basic.clone());
        async move {
            let body = Some(("application/json", body.to_string().into_bytes()));
            app.send("POST", path, &[("Authorization", basic.as_str())], body).await
        }
    };
    let a = post("/api/v3/ua/sign-up", json!({"email": "victim@x.io", "password": PASSWORD})).await;
    assert_eq!(a.status, 200, "{}", a.text);
    for c in INVISIBLE {
        let email = format!("victim{c}@x.io");
        let a = post("/api/v3/ua/sign-up", json!({"email": email, "password": PASSWORD})).await;
        assert_eq!(a.status, 403, "{email:?}: {}", a.text);
        assert_eq!(
            a.json,
            json!({"success": false, "errorObjects": [{"error": "Invalid email", "reason": format!("The email {REFUSED}.")}]}),
            "{email:?}"
        );
        let a = post("/api/v3/ua/login", json!({"grantType": "password", "email": email, "password": PASSWORD})).await;
        assert_eq!(a.status, 403, "{email:?}, looked up: {}", a.text);
        assert_eq!(a.json["errorObjects"][0]["error"], json!("Invalid email"), "{email:?}");
    }
    let full_width = "\u{ff56}\u{ff49}\u{ff43}\u{ff54}\u{ff49}\u{ff4d}@x.io";
    let a = post("/api/v3/ua/sign-up", json!({"email": full_width, "password": PASSWORD})).await;
    assert_eq!(a.status, 403, "{}", a.text);
    assert_eq!(a.json["errorObjects"][0]["error"], json!("Invalid email"), "{}", a.text);
    assert_eq!(app.count("SELECT count(*) FROM users"), 1, "only victim@x.io");
}

#[test]
fn the_command_line_refuses_invisible_characters_in_a_login() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let run = |args: &[&str]| gatehouse_cli(d, &[], args, "");
    for c in INVISIBLE {
        let login = format!("victim{c}");
        let out = run(&["user", "add", "--no-password", &login]);
        let err = String::from_utf8(out.stderr).unwrap();
        assert_eq!(out.status.code(), Some(1), "{login:?} was added: {err}");
        assert!(err.contains(&format!("login: {REFUSED}")), "{login:?}: {err}");
        assert!(!err.contains(c), "the refusal does not print the character itself: {err:?}");
    }
    let out = run(&["user", "add", "--no-password", "\u{3164}"]);
    assert_eq!(out.status.code(), Some(1), "a login that looks blank");
    // Compatibility forms print like the plain letters without being them: refused for a new
    // login (logins compare under NFC and case, not NFKC; see text::is_compatibility_form).
    for lookalike in ["\u{ff56}\u{ff49}\u{ff43}\u{ff54}\u{ff49}\u{ff4d}", "\u{fb01}nance", "victim\u{b2}"] {
        let out = run(&["user", "add", "--no-password", lookalike]);
        let err = String::from_utf8(out.stderr).unwrap();
        assert_eq!(out.status.code(), Some(1), "{lookalike:?} was added: {err}");
        assert!(err.contains("compatibility forms"), "{err}");
    }
    let list = String::from_utf8(run(&["user", "list"]).stdout).unwrap();
    assert_eq!(list.lines().count(), 1, "nothing was added: {list}");
}
