//! IQM user authentication (/api/v3/ua), as seed 003 and the field notes show it.

use gatehouse::core::apps::Door;
use std::time::Duration;

use base64::Engine;
use serde_json::{json, Value};

use crate::helpers::{link_in, spawn_app, spawn_app_with, Answer, TestApp};

const PASSWORD: &str = "a long iqm password";
const NO_USER: &str = "User doesn't exist or user is not allowed to provided workspace.";

struct Iqm {
    app: TestApp,
    client: String,
    basic: String,
}

fn basic_of(id: &str, secret: &str) -> String {
    format!("Basic {}", base64::engine::general_purpose::STANDARD.encode(format!("{id}:{secret}")))
}

impl Iqm {
    async fn new() -> Iqm {
        Self::with(spawn_app().await)
    }

    fn with(app: TestApp) -> Iqm {
        let secret = app.core.add_app("iqm-client", None, &[Door::Iqm, Door::Oauth]).unwrap().expose().to_string();
        Iqm { basic: basic_of("iqm-client", &secret), app, client: "iqm-client".into() }
    }

    async fn post(&self, path: &str, body: Value, auth: Option<&str>) -> Answer {
        let headers: Vec<(&str, &str)> = auth.map(|a| vec![("Authorization", a)]).unwrap_or_default();
        self.app.send("POST", path, &headers, Some(("application/json", body.to_string().into_bytes()))).await
    }

    async fn sign_up(&self, email: &str) -> Answer {
        self.post("/api/v3/ua/sign-up", json!({"email": email, "password": PASSWORD}), Some(&self.basic)).await
    }

    async fn login(&self, email: &str, password: &str) -> Answer {
        self.post(
            "/api/v3/ua/login",
            json!({"grantType": "password", "email": email, "password": password}),
            Some(&self.basic),
        )
        .await
    }

    async fn refresh(&self, refresh_token: &str) -> Answer {
        self.post(
            "/api/v3/ua/oauth/token",
            json!({"grant_type": "refresh_token", "refresh_token": refresh_token}),
            None,
        )
        .await
    }

    async fn info(&self, access: &str, ow: &str) -> Answer {
        let auth = format!("Bearer {access}");
        self.app.send("GET", "/api/v3/ua/user/info", &[("Authorization", &auth), ("X-IAA-OW-ID", ow)], None).await
    }
}

fn assert_error_objects(a: &Answer, status: u16, with_reason: bool) {
    assert_eq!(a.status, status, "{}", a.text);
    assert_eq!(a.content_type, "application/json");
    assert_eq!(a.json["success"], json!(false), "{}", a.text);
    let objs = a.json["errorObjects"].as_array().unwrap_or_else(|| panic!("no errorObjects: {}", a.text));
    assert_eq!(objs.len(), 1);
    assert!(objs[0]["error"].as_str().is_some_and(|e| !e.is_empty()));
    assert_eq!(objs[0]["reason"].is_string(), with_reason, "{}", a.text);
}

fn assert_token_object(d: &Value) {
    let mut keys: Vec<_> = d.as_object().unwrap().keys().map(String::as_str).collect();
    keys.sort();
    assert_eq!(keys, ["access_token", "expires_in", "refresh_token", "scope", "token_type"]);
    assert_eq!(d["scope"], json!("read write"));
    assert_eq!(d["token_type"], json!("bearer"));
    assert_eq!(d["expires_in"], json!(86400));
    for t in ["access_token", "refresh_token"] {
        assert_eq!(d[t].as_str().unwrap().len(), 64);
    }
    assert_ne!(d["access_token"], d["refresh_token"]);
}

#[actix_web::test]
async fn sign_up_makes_a_user_in_a_new_workspace_and_signs_them_in() {
    let iqm = Iqm::new().await;
    let a = iqm.sign_up("user1@iqm.com").await;
    assert_eq!(a.status, 200, "{}", a.text);
    assert_eq!(a.content_type, "application/json");
    assert_eq!(a.json["success"], json!(true));
    assert_eq!(a.json.as_object().unwrap().len(), 2);
    assert_token_object(&a.json["data"]);

    let (user, apps) =
        iqm.app.core.list_users().unwrap().into_iter().find(|(u, _)| u.login == "user1@iqm.com").unwrap();
    assert_eq!(user.email.as_deref(), Some("user1@iqm.com"));
    assert_eq!(user.workspace_id, Some(200001));
    assert_eq!(apps, vec![iqm.client.as_str()], "a member of that client only");
    let access = a.json["data"]["access_token"].as_str().unwrap();
    assert_eq!(iqm.info(access, "200001").await.status, 200);

    assert_eq!(iqm.sign_up("user2@iqm.com").await.status, 200);
    assert_eq!(iqm.app.core.user_by_login("user2@iqm.com").unwrap().workspace_id, Some(200002));
}

#[actix_web::test]
async fn a_deleted_users_id_and_workspace_are_never_given_again() {
    let iqm = Iqm::new().await;
    assert_eq!(iqm.sign_up("first@iqm.com").await.status, 200);
    assert_eq!(iqm.sign_up("gone@iqm.com").await.status, 200);
    let gone = iqm.app.core.user_by_login("gone@iqm.com").unwrap();
    assert_eq!(gone.workspace_id, Some(200002));
    let caller = gatehouse::core::guard::Caller::local();
    assert_eq!(iqm.app.core.remove_app_users(&caller, "iqm-client", &["gone@iqm.com".into()]).unwrap(), 1);
    assert!(iqm.app.core.user_by_login("gone@iqm.com").is_err(), "deleted altogether");

    // The next person is someone else: a new id, a new workspace; the old owId answers nothing.
    let a = iqm.sign_up("next@iqm.com").await;
    assert_eq!(a.status, 200, "{}", a.text);
    let next = iqm.app.core.user_by_login("next@iqm.com").unwrap();
    assert!(next.id > gone.id, "id {} after a deleted {}", next.id, gone.id);
    assert_eq!(next.workspace_id, Some(200003));
    assert_eq!(iqm.info(a.json["data"]["access_token"].as_str().unwrap(), "200002").await.status, 401);
}

#[actix_web::test]
async fn sign_up_refusals_are_403_and_create_nothing() {
    let iqm = Iqm::new().await;
    iqm.sign_up("taken@iqm.com").await;
    let before = iqm.app.count("SELECT count(*) FROM users");
    for (email, password) in [
        ("taken@iqm.com", PASSWORD),
        ("TAKEN@iqm.com", PASSWORD),
        ("not-an-email", PASSWORD),
        ("new@iqm.com", "123456"),
    ] {
        let a = iqm.post("/api/v3/ua/sign-up", json!({"email": email, "password": password}), Some(&iqm.basic)).await;
        assert_error_objects(&a, 403, true);
    }
    assert_eq!(iqm.app.count("SELECT count(*) FROM users"), before);
    assert_eq!(iqm.app.count("SELECT count(*) FROM tokens WHERE kind LIKE 'iqm%'"), 2);
    let a = iqm.post("/api/v3/ua/sign-up", json!({"email": "x@iqm.com"}), Some(&iqm.basic)).await;
    assert_error_objects(&a, 400, true);
    let a = iqm
        .app
        .send("POST", "/api/v3/ua/sign-up", &[("Authorization", &iqm.basic)], Some(("application/json", b"{".to_vec())))
        .await;
    assert_error_objects(&a, 400, true);
}

#[actix_web::test]
async fn client_credentials_are_required_and_checked() {
    let iqm = Iqm::new().await;
    let body = json!({"email": "c@iqm.com", "password": PASSWORD});
    let other = iqm.app.core.add_app("other-client", None, &[Door::Iqm, Door::Oauth]).unwrap();
    for auth in [
        None,
        Some("Bearer abc".to_string()),
        Some("Basic not-base64!".to_string()),
        Some(format!("Basic {}", base64::engine::general_purpose::STANDARD.encode("no-colon"))),
        Some(basic_of("iqm-client", "wrong-secret")),
        Some(basic_of("no-such-client", "whatever")),
        Some(basic_of("iqm-client", other.expose())),
    ] {
        let a = iqm.post("/api/v3/ua/sign-up", body.clone(), auth.as_deref()).await;
        assert_error_objects(&a, 403, true);
        let a = iqm
            .post(
                "/api/v3/ua/login",
                json!({"grantType": "password", "email": "c@iqm.com", "password": PASSWORD}),
                auth.as_deref(),
            )
            .await;
        assert_error_objects(&a, 403, true);
    }
    assert_eq!(iqm.app.count("SELECT count(*) FROM users"), 0);
}

#[actix_web::test]
async fn wrong_client_secrets_are_throttled_and_audited_but_never_the_right_one() {
    let iqm = Iqm::with(
        spawn_app_with(|c| {
            c.throttle.account_failures = 3;
            c.throttle.delay = gatehouse::config::Seconds(std::time::Duration::ZERO);
            c.throttle.lockout = gatehouse::config::Seconds::secs(60);
        })
        .await,
    );
    let wrong = basic_of("iqm-client", "not the secret");
    let sign_up = |auth: String| {
        let iqm = &iqm;
        async move { iqm.post("/api/v3/ua/sign-up", json!({"email": "x@iqm.com", "password": PASSWORD}), Some(&auth)).await }
    };
    for _ in 0..2 {
        assert_error_objects(&sign_up(wrong.clone()).await, 403, true);
    }
    // The third holds the prober back: its wrong secrets wait from now on, in this envelope.
    for _ in 0..3 {
        let held = sign_up(wrong.clone()).await;
        assert_error_objects(&held, 429, true);
        assert!(held.headers.get("retry-after").is_some());
    }
    assert_eq!(iqm.app.count("SELECT count(*) FROM users WHERE login = 'x@iqm.com'"), 0);
    let events = iqm.app.count("SELECT count(*) FROM audit WHERE event = 'client_auth_failed'");
    assert_eq!(events, 3, "each wrong secret is an audit event until the caller is held back");
    let metrics = iqm.app.get("/metrics").await.text;
    assert!(metrics.contains("gatehouse_audit_not_written_total 2"), "{metrics}");
    // The application's right secret is never refused by the count.
    assert_eq!(sign_up(iqm.basic.clone()).await.status, 200);
}

/// A client's id is no secret: wrong secrets from a stranger's address hold back that address,
/// never the application (issue 24: five wrong ones every five minutes used to stop it for good).
#[actix_web::test]
async fn a_stranger_cannot_lock_an_application_out() {
    let iqm = Iqm::with(
        spawn_app_with(|c| {
            c.http.trusted_proxies = vec!["127.0.0.1".parse().unwrap()];
            // The defaults, which the other tests loosen.
            c.throttle = gatehouse::config::Throttle::default();
        })
        .await,
    );
    let from = |addr: &'static str, auth: String, email: &'static str| {
        let iqm = &iqm;
        async move {
            let body = json!({"email": email, "password": PASSWORD}).to_string().into_bytes();
            let headers = [("Authorization", auth.as_str()), ("X-Forwarded-For", addr)];
            iqm.app.send("POST", "/api/v3/ua/sign-up", &headers, Some(("application/json", body))).await
        }
    };
    let wrong = basic_of("iqm-client", "not the secret");
    let mut refused = 0;
    for _ in 0..10 {
        let a = from("203.0.113.66", wrong.clone(), "x@iqm.com").await;
        assert!([403, 429].contains(&a.status), "{}", a.text);
        refused += u32::from(a.status == 429);
    }
    assert!(refused >= 5, "the stranger is held back");
    // At once, from the application's own address, and from the stranger's own too.
    assert_eq!(from("198.51.100.7", iqm.basic.clone(), "owner@iqm.com").await.status, 200);
    assert_eq!(from("203.0.113.66", iqm.basic.clone(), "second@iqm.com").await.status, 200);
    let held = iqm.app.count("SELECT count(*) FROM audit WHERE event = 'client_auth_failed'");
    assert!(held <= 5, "a held-back stranger writes nothing: {held}");
}

#[actix_web::test]
async fn login_at_both_paths_with_either_spelling_answers_the_owid() {
    let iqm = Iqm::new().await;
    iqm.sign_up("user1@iqm.com").await;
    for (path, key) in [
        ("/api/v3/ua/login", "grantType"),
        ("/api/v3/ua/oauth/token", "grantType"),
        ("/api/v3/ua/oauth/token", "grant_type"),
    ] {
        let a = iqm
            .post(path, json!({key: "password", "email": "user1@iqm.com", "password": PASSWORD}), Some(&iqm.basic))
            .await;
        assert_eq!(a.status, 200, "{path} {key}: {}", a.text);
        assert_eq!(a.json["success"], json!(true));
        let mut data = a.json["data"].clone();
        assert_eq!(data["owId"], json!(200001));
        data.as_object_mut().unwrap().remove("owId");
        assert_token_object(&data);
    }
    // /login needs no grantType; /oauth/token does.
    let a =
        iqm.post("/api/v3/ua/login", json!({"email": "user1@iqm.com", "password": PASSWORD}), Some(&iqm.basic)).await;
    assert_eq!(a.status, 200);
    let a = iqm
        .post("/api/v3/ua/oauth/token", json!({"email": "user1@iqm.com", "password": PASSWORD}), Some(&iqm.basic))
        .await;
    assert_error_objects(&a, 400, true);
    let a = iqm.post("/api/v3/ua/oauth/token", json!({"grantType": "client_credentials"}), Some(&iqm.basic)).await;
    assert_error_objects(&a, 400, true);
}

#[actix_web::test]
async fn wrong_credentials_blocked_and_non_member_users() {
    let iqm = Iqm::with(spawn_app_with(|c| c.iqm.support_email = "help@box.example".into()).await);
    iqm.sign_up("user1@iqm.com").await;
    let wrong = iqm.login("user1@iqm.com", "not the password").await;
    let unknown = iqm.login("nobody@iqm.com", PASSWORD).await;
    for a in [&wrong, &unknown] {
        assert_eq!(a.status, 403);
        assert_eq!(a.json, json!({"success": false, "errorObjects": [{"error": NO_USER}]}));
    }
    // A member of another client only.
    iqm.app.add_user("cms.user@iqm.com", PASSWORD, &["cms"]);
    assert_eq!(
        iqm.login("cms.user@iqm.com", PASSWORD).await.json,
        json!({"success": false, "errorObjects": [{"error": NO_USER}]})
    );

    iqm.app.core.set_blocked("user1@iqm.com", true).unwrap();
    let a = iqm.login("user1@iqm.com", PASSWORD).await;
    assert_eq!(a.status, 400, "{}", a.text);
    assert_eq!(a.json["success"], json!(false));
    assert_eq!(a.json["data"]["status"], json!("On Hold"));
    assert!(a.json["data"]["reason"].is_string());
    assert_eq!(a.json["data"]["supportEmail"], json!("help@box.example"));
    assert_eq!(a.json["errorObjects"][0]["error"], json!("User is not allowed to access provided customer"));
    assert_eq!(a.json["errorObjects"][0]["reason"], json!("User is not associated with any active organization."));
    // Only the right password learns of the block.
    assert_eq!(iqm.login("user1@iqm.com", "not the password").await.status, 403);
}

#[actix_web::test]
async fn refresh_rotates_and_answers_the_bare_token_object() {
    let iqm = Iqm::new().await;
    let s = iqm.sign_up("user1@iqm.com").await;
    let first = s.json["data"]["refresh_token"].as_str().unwrap().to_string();
    let a = iqm.refresh(&first).await;
    assert_eq!(a.status, 200, "{}", a.text);
    assert_token_object(&a.json);
    let second = a.json["refresh_token"].as_str().unwrap().to_string();
    assert_ne!(second, first);
    assert_eq!(iqm.info(a.json["access_token"].as_str().unwrap(), "200001").await.status, 200);
    // With Basic present it is checked; grantType is accepted too.
    let b = iqm
        .post(
            "/api/v3/ua/oauth/token",
            json!({"grantType": "refresh_token", "refresh_token": second}),
            Some(&iqm.basic),
        )
        .await;
    assert_eq!(b.status, 200, "{}", b.text);
    let third = b.json["refresh_token"].as_str().unwrap().to_string();
    let other = iqm.app.core.add_app("other-client", None, &[Door::Iqm, Door::Oauth]).unwrap();
    let c = iqm
        .post(
            "/api/v3/ua/oauth/token",
            json!({"grant_type": "refresh_token", "refresh_token": third}),
            Some(&basic_of("other-client", other.expose())),
        )
        .await;
    assert_error_objects(&c, 401, true);
    let d = iqm
        .post(
            "/api/v3/ua/oauth/token",
            json!({"grant_type": "refresh_token", "refresh_token": third}),
            Some(&basic_of("iqm-client", "wrong")),
        )
        .await;
    assert_error_objects(&d, 403, true);
    assert_error_objects(&iqm.refresh(&"0".repeat(64)).await, 401, true);
    assert_eq!(iqm.refresh(&third).await.status, 200, "refused attempts spent nothing");
}

#[actix_web::test]
async fn a_reused_refresh_token_kills_its_whole_family() {
    let iqm = Iqm::new().await;
    let s = iqm.sign_up("user1@iqm.com").await;
    let old = s.json["data"]["refresh_token"].as_str().unwrap().to_string();
    let other_login = iqm.login("user1@iqm.com", PASSWORD).await;
    let newer = iqm.refresh(&old).await;
    let (access, refresh) = (
        newer.json["access_token"].as_str().unwrap().to_string(),
        newer.json["refresh_token"].as_str().unwrap().to_string(),
    );
    assert_eq!(iqm.info(&access, "200001").await.status, 200);

    assert_error_objects(&iqm.refresh(&old).await, 401, true);
    assert_eq!(iqm.info(&access, "200001").await.status, 401, "the newest access token is revoked");
    assert_error_objects(&iqm.refresh(&refresh).await, 401, true);
    let first_access = s.json["data"]["access_token"].as_str().unwrap();
    assert_eq!(iqm.info(first_access, "200001").await.status, 401);
    // Another sign-in is another family, untouched.
    assert_eq!(iqm.info(other_login.json["data"]["access_token"].as_str().unwrap(), "200001").await.status, 200);
    let reused = "SELECT count(*) FROM audit WHERE event = 'refresh_reused' AND login = 'user1@iqm.com'";
    assert_eq!(iqm.app.count(reused), 1, "the reuse is an audit event of its own (the later refusal is not)");
}

#[actix_web::test]
async fn an_expired_refresh_token_is_refused() {
    let iqm = Iqm::with(
        spawn_app_with(|c| {
            c.iqm.access_lifetime = gatehouse::config::Seconds::secs(1);
            c.iqm.refresh_lifetime = gatehouse::config::Seconds::secs(1);
        })
        .await,
    );
    let s = iqm.sign_up("user1@iqm.com").await;
    assert_eq!(s.json["data"]["expires_in"], json!(1));
    actix_web::rt::time::sleep(Duration::from_millis(1200)).await;
    assert_error_objects(&iqm.refresh(s.json["data"]["refresh_token"].as_str().unwrap()).await, 401, true);
    assert_eq!(iqm.info(s.json["data"]["access_token"].as_str().unwrap(), "200001").await.status, 401);
}

/// Sends `n` copies of one request at once; returns the answers.
async fn race(iqm: &Iqm, path: &str, body: Value, auth: Option<String>, n: usize) -> Vec<Answer> {
    let handles: Vec<_> = (0..n)
        .map(|_| {
            let (url, body, auth) = (iqm.app.url(path), body.clone(), auth.clone());
            actix_web::rt::spawn(async move {
                let mut req = awc::Client::default().post(url);
                if let Some(a) = auth {
                    req = req.insert_header(("Authorization", a));
                }
                let mut res = req.send_json(&body).await.unwrap();
                let status = res.status().as_u16();
                let json: Value = res.json().await.unwrap_or(Value::Null);
                (status, json)
            })
        })
        .collect();
    let mut out = Vec::new();
    for h in handles {
        let (status, json) = h.await.unwrap();
        out.push(Answer {
            status,
            content_type: String::new(),
            headers: Default::default(),
            text: json.to_string(),
            json,
        });
    }
    out
}

#[actix_web::test]
async fn eight_racing_refreshes_of_one_token_have_exactly_one_winner() {
    // Strict rotation (the default): the losers are reuse, so the family dies, the winner's too.
    let iqm = Iqm::new().await;
    let s = iqm.sign_up("user1@iqm.com").await;
    let token = s.json["data"]["refresh_token"].as_str().unwrap().to_string();
    let answers =
        race(&iqm, "/api/v3/ua/oauth/token", json!({"grant_type": "refresh_token", "refresh_token": token}), None, 8)
            .await;
    let winners: Vec<_> = answers.iter().filter(|a| a.status == 200).collect();
    assert_eq!(winners.len(), 1, "{answers:?}");
    assert_eq!(answers.iter().filter(|a| a.status == 401).count(), 7);
    assert_eq!(iqm.refresh(winners[0].json["refresh_token"].as_str().unwrap()).await.status, 401);

    // With a reuse grace, racing copies are refused without revoking: the winner's tokens live on.
    let iqm = Iqm::with(spawn_app_with(|c| c.iqm.refresh_reuse_grace = gatehouse::config::Seconds::secs(30)).await);
    let s = iqm.sign_up("user1@iqm.com").await;
    let token = s.json["data"]["refresh_token"].as_str().unwrap().to_string();
    let answers =
        race(&iqm, "/api/v3/ua/oauth/token", json!({"grant_type": "refresh_token", "refresh_token": token}), None, 8)
            .await;
    let winners: Vec<_> = answers.iter().filter(|a| a.status == 200).collect();
    assert_eq!(winners.len(), 1, "{answers:?}");
    assert_eq!(iqm.info(winners[0].json["access_token"].as_str().unwrap(), "200001").await.status, 200);
    assert_eq!(iqm.refresh(winners[0].json["refresh_token"].as_str().unwrap()).await.status, 200);
}

#[actix_web::test]
async fn eight_racing_sign_ups_of_one_email_have_exactly_one_winner() {
    let iqm = Iqm::new().await;
    let body = json!({"email": "race@iqm.com", "password": PASSWORD});
    let answers = race(&iqm, "/api/v3/ua/sign-up", body, Some(iqm.basic.clone()), 8).await;
    assert_eq!(answers.iter().filter(|a| a.status == 200).count(), 1, "{answers:?}");
    assert_eq!(answers.iter().filter(|a| a.status == 403).count(), 7, "{answers:?}");
    assert_eq!(iqm.app.count("SELECT count(*) FROM users"), 1);
    assert_eq!(iqm.app.count("SELECT count(*) FROM users WHERE workspace_id IS NOT NULL"), 1);
}

#[actix_web::test]
async fn user_info_needs_a_live_token_of_that_workspace() {
    let iqm = Iqm::new().await;
    let s = iqm.sign_up("user1@iqm.com").await;
    iqm.sign_up("user2@iqm.com").await;
    let access = s.json["data"]["access_token"].as_str().unwrap();
    let a = iqm.info(access, "200001").await;
    assert_eq!(a.status, 200, "{}", a.text);
    assert_eq!(a.json["success"], json!(true));
    assert_eq!(a.json["data"]["email"], json!("user1@iqm.com"));
    assert_eq!(a.json["data"]["owId"], json!(200001));
    assert_eq!(a.json["data"]["clientId"], json!("iqm-client"));
    assert!(!a.text.contains(access));

    assert_error_objects(&iqm.info(access, "200002").await, 401, true);
    assert_error_objects(&iqm.info(access, "abc").await, 401, true);
    assert_error_objects(&iqm.info(&"0".repeat(64), "200001").await, 401, true);
    let no_ow =
        iqm.app.send("GET", "/api/v3/ua/user/info", &[("Authorization", &format!("Bearer {access}"))], None).await;
    assert_error_objects(&no_ow, 401, true);
    // A refresh token is not an access token.
    assert_eq!(iqm.info(s.json["data"]["refresh_token"].as_str().unwrap(), "200001").await.status, 401);
}

#[actix_web::test]
async fn logout_ends_the_sign_in() {
    let iqm = Iqm::new().await;
    let s = iqm.sign_up("user1@iqm.com").await;
    let (access, refresh) =
        (s.json["data"]["access_token"].as_str().unwrap(), s.json["data"]["refresh_token"].as_str().unwrap());
    let auth = format!("Bearer {access}");
    let wrong_ow =
        iqm.app.send("POST", "/api/v3/ua/logout", &[("Authorization", &auth), ("X-IAA-OW-ID", "200009")], None).await;
    assert_error_objects(&wrong_ow, 401, true);
    let a =
        iqm.app.send("POST", "/api/v3/ua/logout", &[("Authorization", &auth), ("X-IAA-OW-ID", "200001")], None).await;
    assert_eq!(a.status, 200);
    assert_eq!(a.json, json!({"success": true, "data": "User logged out successfully."}));
    assert_eq!(iqm.info(access, "200001").await.status, 401);
    assert_eq!(iqm.refresh(refresh).await.status, 401);
    let again =
        iqm.app.send("POST", "/api/v3/ua/logout", &[("Authorization", &auth), ("X-IAA-OW-ID", "200001")], None).await;
    assert_error_objects(&again, 401, true);
}

#[actix_web::test]
async fn a_signed_up_user_reaches_nothing_else_until_granted_then_with_the_same_password() {
    let iqm = Iqm::new().await;
    iqm.sign_up("user1@iqm.com").await;
    let iam = json!({"login": "user1@iqm.com", "password": PASSWORD, "app_id": "forepaas", "auth_mode": "forepaas_id_resource_owner"});
    let cms =
        Some(("application/json", json!({"username": "user1@iqm.com", "password": PASSWORD}).to_string().into_bytes()));
    assert_eq!(iqm.app.post_json("/iam/login", &iam).await.status, 403);
    assert_eq!(iqm.app.send("POST", "/cms/iap/auth/login", &[], cms.clone()).await.status, 403);
    let other = iqm.app.core.add_app("other-client", None, &[Door::Iqm, Door::Oauth]).unwrap();
    let other_login = iqm
        .post(
            "/api/v3/ua/login",
            json!({"email": "user1@iqm.com", "password": PASSWORD}),
            Some(&basic_of("other-client", other.expose())),
        )
        .await;
    assert_eq!(other_login.status, 403);

    iqm.app.core.grant("user1@iqm.com", "forepaas").unwrap();
    iqm.app.core.grant("user1@iqm.com", "cms").unwrap();
    assert_eq!(iqm.app.post_json("/iam/login", &iam).await.status, 200);
    assert_eq!(iqm.app.send("POST", "/cms/iap/auth/login", &[], cms).await.status, 200);
}

#[actix_web::test]
async fn password_reset_through_the_outbox_and_update_password() {
    let iqm = Iqm::new().await;
    iqm.sign_up("user1@iqm.com").await;
    let s = iqm.login("user1@iqm.com", PASSWORD).await;
    let unknown = iqm.post("/api/v3/ua/user/reset-password", json!({"email": "nobody@iqm.com"}), None).await;
    let known = iqm.post("/api/v3/ua/user/reset-password", json!({"email": "user1@iqm.com"}), Some(&iqm.basic)).await;
    for a in [&unknown, &known] {
        assert_eq!(a.status, 200);
        assert_eq!(a.json, json!({"success": true, "data": "Email with reset password link sent successfully."}));
    }
    let mail = iqm.app.wait_outbox(1).await;
    actix_web::rt::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(iqm.app.outbox().len(), 1);
    assert!(mail[0].contains("To: user1@iqm.com") && mail[0].contains("update-password"), "{}", mail[0]);
    let link = link_in(&mail[0], "reset").unwrap();
    let token = link.trim_start_matches("/reset/");

    let update = |email: &str, password: &str| {
        iqm.post("/api/v3/ua/user/update-password", json!({"email": email, "password": password, "token": token}), None)
    };
    assert_error_objects(&update("someone@else.com", "a new iqm password").await, 410, true);
    assert_error_objects(&update("user1@iqm.com", "short").await, 403, true);
    let ok = update("user1@iqm.com", "a new iqm password").await;
    assert_eq!(ok.status, 200, "{}", ok.text);
    assert_eq!(ok.json, json!({"success": true, "data": "Password changed successfully."}));
    assert_error_objects(&update("user1@iqm.com", "yet another password").await, 410, true);

    assert_eq!(iqm.login("user1@iqm.com", PASSWORD).await.status, 403);
    assert_eq!(iqm.login("user1@iqm.com", "a new iqm password").await.status, 200);
    assert_eq!(
        iqm.info(s.json["data"]["access_token"].as_str().unwrap(), "200001").await.status,
        401,
        "sessions ended"
    );
    let missing =
        iqm.post("/api/v3/ua/user/update-password", json!({"email": "user1@iqm.com", "password": "x"}), None).await;
    assert_error_objects(&missing, 400, true);
}
