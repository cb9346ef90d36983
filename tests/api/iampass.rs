//! IAMPASS Management API, as seed 001 and iampass-hmac.md show it, with requests signed by a
//! signer written here from the document (not the server's code).

use gatehouse::core::apps::Door;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine;
use hmac::{Hmac, Mac};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

use crate::helpers::{link_in, spawn_app, spawn_app_with, Answer, TestApp};

/// iampass-hmac.md, step by step.
pub(crate) fn sign(secret: &str, nonce: &str, url: &str, timestamp: &str) -> String {
    let mut h = Sha256::new();
    h.update(nonce.as_bytes());
    h.update(secret.as_bytes());
    let key = h.finalize();
    let mut mac = Hmac::<Sha256>::new_from_slice(&key[..16]).unwrap();
    mac.update(format!("{nonce}{url}{timestamp}").as_bytes());
    let out = mac.finalize().into_bytes();
    base64::engine::general_purpose::STANDARD.encode(&out[..16])
}

#[test]
fn the_test_signer_meets_the_documents_vectors() {
    let url = "localhost:8080/management/add_users/app-123";
    assert_eq!(sign("s3cr3t", "1234567890123456789", url, "1700000000"), "A/FhXuRyhShnRzPwvFXOcw==");
    let url = "127.0.0.1:8080/management/device_registration_link/app-123/alice%40example.com?display_name=Alice+Smith";
    assert_eq!(sign("s3cr3t", "42", url, "1700000000"), "iGxaM9p31dbGJYCQqVpG2w==");
}

pub(crate) fn fresh_nonce() -> String {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let seed = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_nanos() as u64;
    (seed ^ NEXT.fetch_add(0x9E37_79B9_7F4A_7C15, Ordering::Relaxed)).to_string()
}

fn now() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs() as i64
}

/// How to sign one request; the defaults make a good one.
struct Signing<'a> {
    app: &'a str,
    secret: &'a str,
    nonce: String,
    timestamp: i64,
    url_prefix: &'a str,
    timestamp_header: &'a str,
}

impl<'a> Signing<'a> {
    fn new(app: &'a str, secret: &'a str) -> Self {
        Signing {
            app,
            secret,
            nonce: fresh_nonce(),
            timestamp: now(),
            url_prefix: "",
            timestamp_header: "X-IAMPASS-Authentication-Timestamp",
        }
    }
}

struct Iampass {
    app: TestApp,
    id: String,
    secret: String,
}

impl Iampass {
    async fn new() -> Iampass {
        Self::with(spawn_app().await, "partner-app")
    }

    fn with(app: TestApp, id: &str) -> Iampass {
        let secret = app.core.add_app(id, None, &[Door::Iampass]).unwrap().expose().to_string();
        Iampass { app, id: id.into(), secret }
    }

    fn host(&self) -> String {
        self.app.base.trim_start_matches("http://").to_string()
    }

    async fn call_signed(&self, method: &str, target: &str, body: Option<Value>, s: &Signing<'_>) -> Answer {
        let url = format!("{}{}{}", s.url_prefix, self.host(), target);
        let ts = s.timestamp.to_string();
        let auth = format!("hmac {}:{}:{}", s.app, s.nonce, sign(s.secret, &s.nonce, &url, &ts));
        let headers = [
            ("Authentication", auth.as_str()),
            (s.timestamp_header, ts.as_str()),
            ("X-IAMOASS-Authentication-Version", "1"),
        ];
        let body = body.map(|b| ("application/json", b.to_string().into_bytes()));
        self.app.send(method, target, &headers, body).await
    }

    async fn call(&self, method: &str, target: &str, body: Option<Value>) -> Answer {
        self.call_signed(method, target, body, &Signing::new(&self.id, &self.secret)).await
    }

    async fn add(&self, prefix: &str, users: &[&str]) -> Answer {
        self.call("POST", &format!("{prefix}/add_users/{}", self.id), Some(json!({"users": users}))).await
    }

    async fn link(&self, user_in_path: &str) -> String {
        let a =
            self.call("GET", &format!("/management/device_registration_link/{}/{user_in_path}", self.id), None).await;
        assert_eq!(a.status, 200, "{}", a.text);
        a.json["register_url"].as_str().unwrap().to_string()
    }

    async fn has_device(&self, user_in_path: &str) -> bool {
        let a = self
            .call("GET", &format!("/management/has_registered_mobile_device/{}/{user_in_path}", self.id), None)
            .await;
        assert_eq!(a.status, 200, "{}", a.text);
        a.json["device_registered"].as_bool().unwrap()
    }

    fn path_of(&self, url: &str) -> String {
        url.strip_prefix(&self.app.base).unwrap_or_else(|| panic!("{url} is not under {}", self.app.base)).to_string()
    }

    async fn register(&self, url: &str, device: &str) -> Answer {
        let body = json!({"device_name": device}).to_string().into_bytes();
        self.app.send("POST", &self.path_of(url), &[], Some(("application/json", body))).await
    }
}

/// Another application's credentials on the same server.
struct As<'a> {
    ip: &'a Iampass,
    id: &'a str,
    secret: &'a str,
}

impl As<'_> {
    async fn call(&self, method: &str, target: &str, body: Option<Value>) -> Answer {
        self.ip.call_signed(method, target, body, &Signing::new(self.id, self.secret)).await
    }

    async fn add(&self, prefix: &str, users: &[&str]) -> Answer {
        self.call("POST", &format!("{prefix}/add_users/{}", self.id), Some(json!({"users": users}))).await
    }
}

fn assert_refused_401(a: &Answer, reason: &str) {
    assert_eq!(a.status, 401, "{}", a.text);
    assert_eq!(a.json["status"], json!(false));
    assert_eq!(a.json["reason"], json!(reason), "{}", a.text);
}

#[actix_web::test]
async fn every_endpoint_answers_in_both_url_forms() {
    let ip = Iampass::new().await;
    let app = &ip.id;
    for prefix in ["/management", ""] {
        let user = format!("user{}", prefix.len());
        let a = ip.add(prefix, &[&user]).await;
        assert_eq!(a.status, 201, "{}", a.text);
        assert_eq!(a.content_type, "application/json");
        assert_eq!(a.json, json!({"status": true, "users": {"created": [user], "existing": []}}));
        let a = ip.add(prefix, &[&user]).await;
        assert_eq!(a.json, json!({"status": true, "users": {"created": [], "existing": [user]}}));

        let a = ip.call("GET", &format!("{prefix}/device_registration_link/{app}/{user}?display_name=Al"), None).await;
        assert_eq!(a.status, 200, "{}", a.text);
        assert_eq!(a.json["status"], json!(true));
        assert!(a.json["register_url"].as_str().unwrap().starts_with(&format!("{}/register/", ip.app.base)));
        assert_eq!(a.json.as_object().unwrap().len(), 2);

        let a = ip.call("GET", &format!("{prefix}/has_registered_mobile_device/{app}/{user}"), None).await;
        assert_eq!(a.json, json!({"device_registered": false, "status": true}));

        let a = ip.call("GET", &format!("{prefix}/lost_user_mobile_device/{app}/{user}"), None).await;
        assert_eq!(a.status, 200);
        assert!(link_in(a.json["register_url"].as_str().unwrap(), "register").is_some());

        let sms = json!({"phone_number": "+33 6 12 34 56 78", "display_name": "Al", "message": "Hello, register:"});
        let a = ip.call("POST", &format!("{prefix}/send_registration_sms/{app}/{user}"), Some(sms)).await;
        assert_eq!(a.json, json!({"status": true}), "{}", a.text);

        let a = ip.call("POST", &format!("{prefix}/delete_users/{app}"), Some(json!({"users": [user]}))).await;
        assert_eq!(a.status, 200);
        assert_eq!(a.json, json!({"status": true}));
        let a = ip.call("GET", &format!("{prefix}/has_registered_mobile_device/{app}/{user}"), None).await;
        assert_eq!(a.status, 404);
        assert_eq!(a.text, format!("Client Application {app} or User {user} not found."));
    }
}

#[actix_web::test]
async fn the_sms_waits_in_the_outbox_addressed_to_the_number() {
    let ip = Iampass::new().await;
    ip.add("/management", &["al"]).await;
    let sms = json!({"phone_number": "+33612345678", "message": "Hello, register:"});
    let a = ip.call("POST", &format!("/management/send_registration_sms/{}/al", ip.id), Some(sms)).await;
    assert_eq!(a.json, json!({"status": true}));
    let dir = ip.app.core.config.data_dir.join("outbox/sms");
    let files: Vec<_> = std::fs::read_dir(&dir).unwrap().map(|e| e.unwrap().path()).collect();
    assert_eq!(files.len(), 1);
    let text = std::fs::read_to_string(&files[0]).unwrap();
    assert!(text.starts_with("To: +33612345678\r\n"), "{text}");
    assert!(text.contains("Hello, register: http://"), "the link follows the message: {text}");
    let link = link_in(&text, "register").unwrap();
    assert_eq!(ip.app.get(&link).await.status, 200, "the texted link works");
    assert!(ip.app.outbox().is_empty(), "an SMS is not a mail");

    for bad in [json!({}), json!({"phone_number": "call me"}), json!({"phone_number": 33612345678u64})] {
        let a = ip.call("POST", &format!("/management/send_registration_sms/{}/al", ip.id), Some(bad)).await;
        assert_eq!(a.status, 200);
        assert_eq!(a.json["status"], json!(false), "{}", a.text);
    }
    assert_eq!(std::fs::read_dir(&dir).unwrap().count(), 1);
}

#[actix_web::test]
async fn an_sms_refused_for_want_of_disk_says_so_and_voids_nothing() {
    let ip = Iampass::with(spawn_app_with(|c| c.mail.min_free_mb = u64::MAX >> 21).await, "partner-app");
    ip.add("/management", &["al"]).await;
    let live = ip.link("al").await;
    let sms = json!({"phone_number": "+33612345678"});
    let a = ip.call("POST", &format!("/management/send_registration_sms/{}/al", ip.id), Some(sms)).await;
    assert_eq!(a.status, 503, "{}", a.text);
    assert_eq!(
        a.json,
        json!({"status": false, "reason": "the message cannot be queued: the server is short of disk space"})
    );
    assert!(a.headers.get("retry-after").is_some());
    assert_eq!(ip.app.get(&ip.path_of(&live)).await.status, 200, "the live link was not voided");
}

#[actix_web::test]
async fn signature_failures_are_401_and_say_which_check_failed() {
    let ip = Iampass::new().await;
    ip.add("/management", &["al"]).await;
    let target = format!("/management/has_registered_mobile_device/{}/al", ip.id);

    let wrong_secret = Signing::new(&ip.id, "not-the-secret");
    assert_refused_401(&ip.call_signed("GET", &target, None, &wrong_secret).await, "bad signature");
    let stale = Signing { timestamp: now() - 301, ..Signing::new(&ip.id, &ip.secret) };
    assert_refused_401(&ip.call_signed("GET", &target, None, &stale).await, "stale timestamp");
    let future = Signing { timestamp: now() + 301, ..Signing::new(&ip.id, &ip.secret) };
    assert_refused_401(&ip.call_signed("GET", &target, None, &future).await, "stale timestamp");

    let once = Signing::new(&ip.id, &ip.secret);
    assert_eq!(ip.call_signed("GET", &target, None, &once).await.status, 200);
    assert_refused_401(&ip.call_signed("GET", &target, None, &once).await, "replayed nonce");

    let other = ip.app.core.add_app("other-app", None, &[Door::Iampass]).unwrap();
    let mismatch = Signing::new("other-app", other.expose());
    assert_refused_401(
        &ip.call_signed("GET", &target, None, &mismatch).await,
        "the application of the signature is not the one in the path",
    );

    let none = ip.app.get(&target).await;
    assert_refused_401(&none, "missing or malformed Authentication header");
    let garbage = ip.app.send("GET", &target, &[("Authentication", "hmac nope")], None).await;
    assert_refused_401(&garbage, "missing or malformed Authentication header");
    for a in [&none, &garbage] {
        assert!(!a.text.contains(&ip.secret));
    }

    // The documentation's spellings and URL form are accepted too.
    let doc = Signing {
        timestamp_header: "X-IAMPASS-Authentiaction-Timestamp",
        url_prefix: "http://",
        ..Signing::new(&ip.id, &ip.secret)
    };
    assert_eq!(ip.call_signed("GET", &target, None, &doc).await.status, 200);

    // A refused request spends no nonce: the same nonce, signed right, still works once.
    let mut retry = Signing::new(&ip.id, "not-the-secret");
    assert_eq!(ip.call_signed("GET", &target, None, &retry).await.status, 401);
    retry.secret = &ip.secret;
    assert_eq!(ip.call_signed("GET", &target, None, &retry).await.status, 200);
}

#[actix_web::test]
async fn bad_signatures_are_counted_audited_and_held_back_but_never_the_right_ones() {
    let ip = Iampass::with(
        spawn_app_with(|c| {
            c.throttle.account_failures = 3;
            c.throttle.delay = gatehouse::config::Seconds(std::time::Duration::ZERO);
            c.throttle.lockout = gatehouse::config::Seconds::secs(60);
        })
        .await,
        "partner-app",
    );
    ip.add("/management", &["al"]).await;
    let target = format!("/management/has_registered_mobile_device/{}/al", ip.id);
    let wrong = || Signing::new(&ip.id, "not-the-secret");
    for _ in 0..2 {
        assert_refused_401(&ip.call_signed("GET", &target, None, &wrong()).await, "bad signature");
    }
    // The third locks the prober out: from now on its bad signatures wait, in this envelope.
    let held = ip.call_signed("GET", &target, None, &wrong()).await;
    assert_eq!(held.status, 429, "{}", held.text);
    assert_eq!(held.json["status"], json!(false));
    assert!(held.headers.get("retry-after").is_some());
    assert_eq!(ip.call_signed("GET", &target, None, &wrong()).await.status, 429);
    // The application's own signed calls are not held up by someone else's failures.
    assert_eq!(ip.call("GET", &target, None).await.status, 200);
    let events = ip.app.count("SELECT count(*) FROM audit WHERE event = 'signature_failed' AND app_id = 'partner-app'");
    assert_eq!(events, 3, "a bad signature is an audit event until its caller is held back");
    for _ in 0..20 {
        assert_eq!(ip.call_signed("GET", &target, None, &wrong()).await.status, 429);
    }
    let events = ip.app.count("SELECT count(*) FROM audit WHERE event = 'signature_failed'");
    assert_eq!(events, 3, "a flood of bad signatures writes nothing more");
    let metrics = ip.app.get("/metrics").await.text;
    assert!(metrics.contains("gatehouse_audit_not_written_total 21"), "{metrics}");
}

#[actix_web::test]
async fn a_spent_nonce_is_refused_after_a_restart() {
    let ip = Iampass::new().await;
    ip.add("/management", &["al"]).await;
    let target = format!("/management/has_registered_mobile_device/{}/al", ip.id);
    let once = Signing::new(&ip.id, &ip.secret);
    assert_eq!(ip.call_signed("GET", &target, None, &once).await.status, 200);

    // A second server on the same data directory reads the spent nonces back from the store.
    let data = ip.app._dir.path().join("data");
    let restarted = crate::helpers::spawn_app_in(tempfile::tempdir().unwrap(), &data, |_| {}).await;
    let again = Iampass { app: restarted, id: ip.id.clone(), secret: ip.secret.clone() };
    assert_refused_401(&again.call_signed("GET", &target, None, &once).await, "replayed nonce");
    assert_eq!(again.call_signed("GET", &target, None, &Signing::new(&ip.id, &ip.secret)).await.status, 200);
}

#[actix_web::test]
async fn a_nonce_is_kept_as_long_as_its_timestamp_is_accepted() {
    let window = gatehouse::config::Seconds::secs(2);
    let ip = Iampass::with(spawn_app_with(|c| c.iampass.timestamp_window = window).await, "partner-app");
    ip.add("/management", &["al"]).await;
    let target = format!("/management/has_registered_mobile_device/{}/al", ip.id);
    // A client whose clock is two seconds ahead signs a request that stays acceptable for four.
    let ahead = Signing { timestamp: now() + 2, ..Signing::new(&ip.id, &ip.secret) };
    assert_eq!(ip.call_signed("GET", &target, None, &ahead).await.status, 200);
    let on_time = Signing::new(&ip.id, &ip.secret);
    assert_eq!(ip.call_signed("GET", &target, None, &on_time).await.status, 200);

    // Past the window from the first request's arrival, but not from its timestamp.
    actix_web::rt::time::sleep(Duration::from_millis(2300)).await;
    ip.app.core.reap().unwrap();
    assert_refused_401(&ip.call_signed("GET", &target, None, &ahead).await, "replayed nonce");
    assert_refused_401(&ip.call_signed("GET", &target, None, &on_time).await, "stale timestamp");
    if ip.app.core.store.is_shared() {
        // PostgreSQL: the shared table keeps exactly the nonce still kept.
        assert_eq!(ip.app.count("SELECT count(*) FROM nonces"), 1);
    } else {
        // The reaper never removes a nonce still kept: the log keeps both rows behind the live
        // one, while memory holds only the one still kept.
        assert_eq!(ip.app.count("SELECT count(*) FROM nonces"), 2);
        assert_eq!(ip.app.core.stats().nonces_kept, 1);
    }
}

#[actix_web::test]
async fn unknown_applications_and_users_are_404_in_plain_text() {
    let ip = Iampass::new().await;
    let ghost = Signing::new("ghost-app", "whatever-secret-it-is");
    let a = ip.call_signed("POST", "/management/add_users/ghost-app", Some(json!({"users": ["a"]})), &ghost).await;
    assert_eq!(a.status, 404);
    assert!(a.content_type.starts_with("text/plain"));
    assert_eq!(a.text, "Client Application ghost-app not found");
    let a = ip.call("GET", &format!("/management/device_registration_link/{}/nobody", ip.id), None).await;
    assert_eq!(a.status, 404);
    assert_eq!(a.text, format!("Client Application {} or User nobody not found.", ip.id));
}

#[actix_web::test]
async fn users_arrive_form_encoded_in_the_path() {
    let ip = Iampass::new().await;
    let a = ip.add("/management", &["MY USER 1", "alice@x.com"]).await;
    assert_eq!(a.json["users"]["created"], json!(["MY USER 1", "alice@x.com"]));
    ip.link("MY+USER+1").await;
    ip.link("alice%40x.com").await;
    assert!(!ip.has_device("MY%20USER%201").await);
}

#[actix_web::test]
async fn bodies_that_are_not_a_list_of_users_are_refused_and_change_nothing() {
    let ip = Iampass::new().await;
    let before = ip.app.count("SELECT count(*) FROM users");
    let long = "x".repeat(256);
    let many: Vec<String> = (0..1001).map(|i| format!("u{i}")).collect();
    for body in [
        json!({}),
        json!({"users": "al"}),
        json!({"users": []}),
        json!({"users": [""]}),
        json!({"users": ["ok", 7]}),
        json!({"users": ["ok", long]}),
        json!({"users": many}),
        json!(["al"]),
    ] {
        for path in [format!("/management/add_users/{}", ip.id), format!("/management/delete_users/{}", ip.id)] {
            let a = ip.call("POST", &path, Some(body.clone())).await;
            assert_eq!(a.status, 200, "{body}: {}", a.text);
            assert_eq!(a.json["status"], json!(false), "{body}");
            assert!(a.json["reason"].as_str().is_some_and(|r| !r.is_empty()));
        }
    }
    let a = ip.app.send("POST", &format!("/add_users/{}", ip.id), &[], Some(("application/json", b"{".to_vec()))).await;
    assert_eq!(a.status, 401, "unsigned first");
    assert_eq!(ip.app.count("SELECT count(*) FROM users"), before);
}

#[actix_web::test]
async fn an_application_reaches_only_the_users_it_owns() {
    let a = Iampass::new().await;
    let b_secret = a.app.core.add_app("b-app", None, &[Door::Iampass]).unwrap().expose().to_string();
    let b = As { ip: &a, id: "b-app", secret: &b_secret };

    a.add("/management", &["alice"]).await;
    a.app.add_user("carol", "carol's long password", &["forepaas"]);

    // B cannot adopt alice (A's) nor carol (the administrator's), and nothing else in the call happens.
    for taken in ["alice", "carol", "ALICE"] {
        let r = b.add("/management", &["bob", taken]).await;
        assert_eq!(r.status, 200, "{}", r.text);
        assert_eq!(r.json["status"], json!(false));
        assert!(r.json["reason"].as_str().unwrap().contains("exists outside"), "{}", r.text);
    }
    assert_eq!(a.app.count("SELECT count(*) FROM users WHERE login = 'bob'"), 0);
    let r = a.add("/management", &["carol"]).await;
    assert_eq!(r.json["status"], json!(false));

    // B cannot link, query, lose or text alice.
    for path in [
        "/management/device_registration_link/b-app/alice",
        "/management/has_registered_mobile_device/b-app/alice",
        "/management/lost_user_mobile_device/b-app/alice",
    ] {
        let r = b.call("GET", path, None).await;
        assert_eq!(r.status, 404, "{path}");
        assert_eq!(r.text, "Client Application b-app or User alice not found.");
    }
    let r = b
        .call("POST", "/management/send_registration_sms/b-app/alice", Some(json!({"phone_number": "+15550100"})))
        .await;
    assert_eq!(r.status, 404);

    // B deleting alice changes nothing; A deleting her removes her altogether.
    assert_eq!(
        b.call("POST", "/management/delete_users/b-app", Some(json!({"users": ["alice"]}))).await.json,
        json!({"status": true})
    );
    assert_eq!(a.app.count("SELECT count(*) FROM users WHERE login = 'alice'"), 1);
    a.call("POST", &format!("/management/delete_users/{}", a.id), Some(json!({"users": ["alice"]}))).await;
    assert_eq!(a.app.count("SELECT count(*) FROM users WHERE login = 'alice'"), 0);

    // A user A owns whom the administrator also granted forepaas keeps that membership.
    a.add("/management", &["dave"]).await;
    a.app.core.grant("dave", "forepaas").unwrap();
    a.call("POST", &format!("/management/delete_users/{}", a.id), Some(json!({"users": ["dave"]}))).await;
    let apps: Vec<String> = a.app.core.list_users().unwrap().into_iter().find(|(u, _)| u.login == "dave").unwrap().1;
    assert_eq!(apps, ["forepaas"]);
}

async fn apikey_login(app: &TestApp, app_id: &str, apikey: &str, secretkey: &str) -> Answer {
    app.post_json(
        "/iam/login",
        &json!({"apikey": apikey, "secretkey": secretkey, "app_id": app_id, "auth_mode": "apikey"}),
    )
    .await
}

#[actix_web::test]
async fn the_whole_device_life_cycle() {
    let ip = Iampass::new().await;
    ip.add("/management", &["alice@x.com"]).await;
    let a = ip
        .call(
            "GET",
            &format!(
                "/management/device_registration_link/{}/alice%40x.com?display_name=%3Cb%3EAlice%3C%2Fb%3E+Smith",
                ip.id
            ),
            None,
        )
        .await;
    let url = a.json["register_url"].as_str().unwrap().to_string();

    // The page shows who and what for, escaped, under the page headers.
    let page = ip.app.get(&ip.path_of(&url)).await;
    assert_eq!(page.status, 200);
    assert!(page.text.contains("&lt;b&gt;Alice&lt;/b&gt; Smith"), "{}", page.text);
    assert!(!page.text.contains("<b>Alice"));
    assert!(page.text.contains(&ip.id));
    assert!(page.headers.get("content-security-policy").is_some());

    let r = ip.register(&url, "Pixel 9").await;
    assert_eq!(r.status, 201, "{}", r.text);
    let mut keys: Vec<_> = r.json.as_object().unwrap().keys().map(String::as_str).collect();
    keys.sort();
    assert_eq!(keys, ["apikey", "app_id", "device_id", "secretkey", "user_id"]);
    assert_eq!(r.json["app_id"], json!(ip.id));
    assert_eq!(r.json["user_id"], json!("alice@x.com"));
    let (apikey, secret) =
        (r.json["apikey"].as_str().unwrap().to_string(), r.json["secretkey"].as_str().unwrap().to_string());
    assert!(ip.has_device("alice%40x.com").await);
    assert_eq!(ip.register(&url, "again").await.status, 410, "the code is used");

    // The key logs in through the ForePaaS dialect, for this application.
    let login = apikey_login(&ip.app, &ip.id, &apikey, &secret).await;
    assert_eq!(login.status, 200, "{}", login.text);
    assert_eq!(login.json["login"], json!("alice@x.com"));
    let token = login.json["token"].as_str().unwrap().to_string();
    assert_eq!(ip.app.get(&format!("/iam/checkSession?app_id={}&token={token}", ip.id)).await.status, 200);

    // Lost: the device is off, its key and its tokens are refused, a new link comes back.
    let lost = ip.call("GET", &format!("/management/lost_user_mobile_device/{}/alice%40x.com", ip.id), None).await;
    assert_eq!(lost.status, 200);
    let new_url = lost.json["register_url"].as_str().unwrap().to_string();
    assert!(!ip.has_device("alice%40x.com").await);
    assert_eq!(apikey_login(&ip.app, &ip.id, &apikey, &secret).await.status, 401);
    assert_eq!(ip.app.get(&format!("/iam/checkSession?token={token}")).await.status, 401);

    // Registered again, with a new key that works.
    let r = ip.register(&new_url, "Pixel 10").await;
    assert_eq!(r.status, 201);
    assert_ne!(r.json["apikey"].as_str().unwrap(), apikey);
    assert!(ip.has_device("alice%40x.com").await);
    let again =
        apikey_login(&ip.app, &ip.id, r.json["apikey"].as_str().unwrap(), r.json["secretkey"].as_str().unwrap()).await;
    assert_eq!(again.status, 200);
}

#[actix_web::test]
async fn used_voided_and_expired_codes_are_gone() {
    let ip = Iampass::with(
        spawn_app_with(|c| c.links.register_lifetime = gatehouse::config::Seconds(Duration::from_millis(700))).await,
        "partner-app",
    );
    ip.add("/management", &["al"]).await;
    let first = ip.link("al").await;
    let second = ip.link("al").await;
    assert_eq!(ip.register(&first, "phone").await.status, 410, "a newer link voids the older one");
    let page = ip.app.get(&ip.path_of(&first)).await;
    assert_eq!(page.status, 410);
    assert!(page.text.contains("no longer works"));
    actix_web::rt::time::sleep(Duration::from_millis(800)).await;
    let r = ip.register(&second, "phone").await;
    assert_eq!(r.status, 410, "expired");
    assert_eq!(r.json["success"], json!(false));
    assert!(!ip.has_device("al").await);

    let fresh = ip.link("al").await;
    for bad in [json!({}), json!({"device_name": ""}), json!({"device_name": "x".repeat(256)})] {
        let body = bad.to_string().into_bytes();
        let r = ip.app.send("POST", &ip.path_of(&fresh), &[], Some(("application/json", body))).await;
        assert_eq!(r.status, 400, "{bad}");
    }
    assert_eq!(ip.register(&fresh, "phone").await.status, 201, "refused bodies did not use the code");
}

#[actix_web::test]
async fn the_registration_page_works_in_a_real_browser() {
    use crate::browser::{browser_here, Browser};
    if !browser_here() {
        return;
    }
    let ip = Iampass::new().await;
    ip.add("/management", &["alice"]).await;
    let a = ip
        .call("GET", &format!("/management/device_registration_link/{}/alice?display_name=Alice+Smith", ip.id), None)
        .await;
    let url = a.json["register_url"].as_str().unwrap().to_string();

    let browser = Browser::start().await;
    browser.goto(&url).await;
    assert_eq!(browser.text("#display-name").await, "Alice Smith");
    assert_eq!(browser.text("#app-id").await, ip.id);
    browser.click("#register").await;
    assert!(browser.wait_text("#result", "registered").await.contains("This device is registered"));
    let (apikey, secret) = (browser.text("#apikey").await, browser.text("#secretkey").await);
    assert_eq!(secret.len(), 64, "the secret key is on the page");
    assert!(ip.has_device("alice").await);
    let login = apikey_login(&ip.app, &ip.id, &apikey, &secret).await;
    assert_eq!(login.status, 200, "the keys read off the page log in: {}", login.text);

    browser.goto(&url).await;
    assert!(browser.wait_text("h1", "no longer works").await.contains("no longer works"));
}

/// An application's secret opens only the doors it was added for: an IQM front end's secret
/// cannot sign IAMPASS calls, so it cannot get a registration link for a member, register a
/// phone of its own and sign in as them with the device's API key (issue 24, item 3).
#[actix_web::test]
async fn an_applications_secret_opens_only_its_doors() {
    let app = spawn_app().await;
    let secret = app.core.add_app("front", None, &[Door::Iqm]).unwrap().expose().to_string();
    app.add_user("al@example.com", "a long password", &["front"]);
    let ip = Iampass { app, id: "front".into(), secret: secret.clone() };
    let link = ip.call("GET", "/management/device_registration_link/front/al%40example.com", None).await;
    assert_eq!((link.status, link.text.as_str()), (404, "Client Application front not found"));
    let target = "/management/has_registered_mobile_device/front/al%40example.com";
    assert_eq!(ip.call("GET", target, None).await.status, 404, "no IAMPASS call at all");
    // The IQM door, its own, opens; the OAuth doors, not its own, do not.
    let basic = format!("Basic {}", base64::engine::general_purpose::STANDARD.encode(format!("front:{secret}")));
    let body = json!({"email": "new@example.com", "password": "a long iqm password"}).to_string().into_bytes();
    let a =
        ip.app.send("POST", "/api/v3/ua/sign-up", &[("Authorization", &basic)], Some(("application/json", body))).await;
    assert_eq!(a.status, 200, "{}", a.text);
    let form = b"token=whatever".to_vec();
    let a = ip
        .app
        .send(
            "POST",
            "/oauth2/introspect",
            &[("Authorization", &basic)],
            Some(("application/x-www-form-urlencoded", form)),
        )
        .await;
    assert_eq!((a.status, a.json["error"].as_str()), (401, Some("invalid_client")), "{}", a.text);

    // Widened (by the CLI's `app doors`, in this process or another), the running server follows.
    ip.app.core.set_app_doors("front", &[Door::Iqm, Door::Iampass]).unwrap();
    assert_eq!(ip.call("GET", target, None).await.status, 200);
    ip.app.core.set_app_doors("front", &[Door::Iqm]).unwrap();
    assert_eq!(ip.call("GET", target, None).await.status, 404);
}

/// Applications that were there before doors keep the ones the store shows they were used
/// through; one never used keeps all three.
#[actix_web::test]
async fn existing_applications_keep_the_doors_they_were_used_through() {
    if crate::helpers::on_postgres() {
        return; // The file is made with SQLite's own schema; PostgreSQL runs the same UPDATE.
    }
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    std::fs::create_dir_all(&data).unwrap();
    {
        let db = rusqlite::Connection::open(data.join("gatehouse.db")).unwrap();
        let schema = include_str!("../../schema.sql");
        // As the store reads it: a line `-- version N` opens block N. Blocks 1 to 10 only.
        let mut blocks: Vec<(i64, String)> = Vec::new();
        for line in schema.lines() {
            match line.strip_prefix("-- version ").and_then(|n| n.trim().parse::<i64>().ok()) {
                Some(n) => blocks.push((n, String::new())),
                None => blocks.last_mut().into_iter().for_each(|(_, sql)| *sql += &format!("{line}\n")),
            }
        }
        for (n, sql) in blocks.into_iter().filter(|(n, _)| *n <= 10) {
            db.execute_batch(&sql).unwrap();
            db.pragma_update(None, "user_version", n).unwrap();
        }
        db.execute_batch(
            "INSERT INTO applications (id, builtin, created_at) VALUES ('signer', 0, 0), ('client', 0, 0), ('unused', 0, 0);
             INSERT INTO nonces (app_id, nonce, expires_at) VALUES ('signer', 'n1', 0);
             INSERT INTO audit (at, event, app_id, dialect) VALUES (0, 'login_ok', 'client', 'iqm');",
        )
        .unwrap();
    }
    let app = crate::helpers::spawn_app_in(tempfile::tempdir().unwrap(), &data, |_| {}).await;
    let doors = |id: &str| -> String {
        app.db().query_row("SELECT doors FROM applications WHERE id = ?1", [id], |r| r.get(0)).unwrap()
    };
    assert_eq!(doors("signer"), "iampass,oauth");
    assert_eq!(doors("client"), "iqm,oauth");
    assert_eq!(doors("unused"), "iampass,iqm,oauth");
    assert_eq!(doors("forepaas"), "", "the built-ins have no secret");
}
