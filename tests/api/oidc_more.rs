//! More of the OpenID provider, written from the specifications: the device authorization grant
//! (RFC 8628), back-channel logout (OpenID Connect Back-Channel Logout 1.0), the second factor
//! required at vendor doors and given on the hosted sign-in (Core 1.0 `amr`), forward auth with
//! the SSO cookie, and the command line of clients and keys. Real HTTP against the real server;
//! every JWT checked against the published JWKS.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use actix_web::{web, App, HttpRequest, HttpResponse, HttpServer};
use base64::Engine;
use gatehouse::core::apps::Door;
use gatehouse::core::guard::Caller;
use gatehouse::core::oidc::ClientSettings;
use serde_json::{json, Value};

use crate::helpers::{gatehouse_cli, Answer, TestApp};
use crate::oidc::{hidden, location, query, Browser, Op, REDIRECT};

const PASSWORD: &str = "a long enough password";
const DEVICE_GRANT: &str = "urn:ietf:params:oauth:grant-type:device_code";
const BACKCHANNEL_EVENT: &str = "http://schemas.openid.net/event/backchannel-logout";
/// RFC 8628 §6.1 as this server draws them: no vowels, no lookalikes.
const ALPHABET: &str = "BCDFGHJKLMNPQRSTVWXZ";

fn basic(id: &str, secret: &str) -> String {
    format!("Basic {}", base64::engine::general_purpose::STANDARD.encode(format!("{id}:{secret}")))
}

fn seconds(s: u64) -> gatehouse::config::Seconds {
    gatehouse::config::Seconds(Duration::from_secs(s))
}

/// A form POSTed to the server, with HTTP Basic when a secret is given, else `client_id` in the form.
async fn client_post(app: &TestApp, path: &str, client: &str, secret: Option<&str>, form: &[(&str, &str)]) -> Answer {
    let auth = secret.map(|s| basic(client, s));
    let mut pairs: Vec<(&str, &str)> = form.to_vec();
    if auth.is_none() {
        pairs.push(("client_id", client));
    }
    let headers: Vec<(&str, &str)> = auth.as_deref().map(|a| ("Authorization", a)).into_iter().collect();
    let body = serde_urlencoded::to_string(&pairs).unwrap().into_bytes();
    app.send("POST", path, &headers, Some(("application/x-www-form-urlencoded", body))).await
}

async fn device_start(app: &TestApp, client: &str, secret: Option<&str>, scope: &str) -> Answer {
    client_post(app, "/oauth2/device_authorization", client, secret, &[("scope", scope)]).await
}

async fn poll(app: &TestApp, client: &str, secret: Option<&str>, device_code: &str) -> Answer {
    client_post(app, "/oauth2/token", client, secret, &[("grant_type", DEVICE_GRANT), ("device_code", device_code)])
        .await
}

/// A JWT checked against the server's JWKS (signature, iss, aud, exp): its header and claims.
async fn checked_jwt(app: &TestApp, jwt: &str, aud: &str) -> (jsonwebtoken::Header, Value) {
    use jsonwebtoken::{decode, decode_header, jwk::JwkSet, DecodingKey, Validation};
    let jwks: JwkSet = serde_json::from_str(&app.get("/oauth2/jwks").await.text).unwrap();
    let header = decode_header(jwt).unwrap();
    let jwk = jwks.find(header.kid.as_deref().expect("a kid")).expect("the kid is in the JWKS");
    let mut v = Validation::new(header.alg);
    v.set_audience(&[aud]);
    v.set_issuer(&[&app.base]);
    let claims = decode::<Value>(jwt, &DecodingKey::from_jwk(jwk).unwrap(), &v).expect("a valid JWT").claims;
    (header, claims)
}

fn assert_oauth_error(a: &Answer, status: u16, error: &str) {
    assert_eq!(a.status, status, "{}", a.text);
    assert_eq!(a.json["error"], error, "{}", a.text);
    assert_eq!(a.content_type, "application/json");
}

fn assert_user_code(code: &str) {
    let (a, b) = code.split_once('-').unwrap_or_else(|| panic!("{code} is not XXXX-XXXX"));
    assert!(a.len() == 4 && b.len() == 4, "{code}");
    assert!(a.chars().chain(b.chars()).all(|c| ALPHABET.contains(c)), "{code}");
}

/// A server with `ann` (member of the confidential `rp` and of the public `tv`), devices polling
/// every second at least.
async fn device_op(tweak: impl FnOnce(&mut gatehouse::config::Config)) -> Op {
    let op = Op::with(true, |c| {
        c.oidc.device_poll_interval = seconds(1);
        tweak(c);
    })
    .await;
    op.app
        .core
        .add_client(
            "tv",
            None,
            true,
            &[],
            ClientSettings {
                redirect_uris: Some(vec![REDIRECT.into()]),
                first_party: Some(true),
                ..Default::default()
            },
        )
        .unwrap();
    op.app.core.grant("ann", "tv").unwrap();
    op
}

/// Signs `user` in on the hosted page at `login_path` (a `/login?next=...`), as the form does;
/// the answer to the POST.
async fn sign_in_for_next(b: &mut Browser<'_>, login_path: &str, user: &str) -> Answer {
    let page = b.get(login_path).await;
    assert_eq!(page.status, 200, "{}", page.text);
    let (r, next, csrf) = (hidden(&page.text, "r"), hidden(&page.text, "next"), hidden(&page.text, "csrf"));
    b.post("/login", &[("r", &r), ("next", &next), ("csrf", &csrf), ("login", user), ("password", PASSWORD)]).await
}

/// Types `code` at /activate (the page must be open in `b`, signed in): the answer to the POST.
async fn type_code(b: &mut Browser<'_>, code: &str) -> Answer {
    let page = b.get("/activate").await;
    assert_eq!(page.status, 200, "{}", page.text);
    let csrf = hidden(&page.text, "csrf");
    b.post("/activate", &[("csrf", &csrf), ("user_code", code)]).await
}

/// On the approval page: allow or deny.
async fn decide(b: &mut Browser<'_>, approval: &Answer, decision: &str) -> Answer {
    let csrf = hidden(&approval.text, "csrf");
    let code = hidden(&approval.text, "user_code");
    b.post("/activate/decide", &[("csrf", &csrf), ("user_code", &code), ("decision", decision)]).await
}

// ----- 1. the device authorization grant (RFC 8628) -----

/// RFC 8628 §4 and Back-Channel Logout 1.0 §2.1: what the provider does, it advertises.
#[actix_web::test]
async fn discovery_advertises_the_device_grant_and_back_channel_logout() {
    let op = Op::new(true).await;
    let m = op.app.get("/.well-known/openid-configuration").await.json;
    assert_eq!(m["device_authorization_endpoint"], json!(format!("{}/oauth2/device_authorization", op.app.base)));
    assert!(m["grant_types_supported"].as_array().unwrap().contains(&json!(DEVICE_GRANT)), "{m}");
    assert_eq!(m["backchannel_logout_supported"], json!(true), "the OP sends back-channel logout tokens: {m}");
    assert_eq!(m["backchannel_logout_session_supported"], json!(true), "its logout tokens carry sid: {m}");
}

#[actix_web::test]
async fn device_grant_from_the_code_to_the_tokens() {
    let op = device_op(|_| {}).await;
    let app = &op.app;
    // §3.1-3.2: a public client by its client_id.
    let start = device_start(app, "tv", None, "openid profile").await;
    assert_eq!(start.status, 200, "{}", start.text);
    assert_eq!(start.content_type, "application/json");
    assert_eq!(start.headers.get("cache-control").unwrap(), "no-store");
    let d = &start.json;
    let device_code = d["device_code"].as_str().unwrap().to_string();
    let user_code = d["user_code"].as_str().unwrap().to_string();
    assert!(device_code.len() >= 32, "{device_code}");
    assert_user_code(&user_code);
    assert_eq!(d["verification_uri"], json!(format!("{}/activate", app.base)));
    let complete = d["verification_uri_complete"].as_str().unwrap().to_string();
    assert!(complete.starts_with(&format!("{}/activate?", app.base)), "{complete}");
    assert_eq!(query(&complete)["user_code"], user_code);
    assert_eq!(d["expires_in"], json!(600));
    assert_eq!(d["interval"], json!(1));
    // A confidential client with HTTP Basic.
    let other = device_start(app, "rp", Some(&op.secret), "openid").await;
    assert_eq!(other.status, 200, "{}", other.text);
    assert_user_code(other.json["user_code"].as_str().unwrap());
    assert_ne!(other.json["user_code"], d["user_code"]);
    assert_ne!(other.json["device_code"], d["device_code"]);
    // A wrong secret is no client.
    let wrong = device_start(app, "rp", Some("not the secret"), "openid").await;
    assert_oauth_error(&wrong, 401, "invalid_client");

    // §3.5: pending, then slow_down when polled faster than the interval.
    let p = poll(app, "tv", None, &device_code).await;
    assert_oauth_error(&p, 400, "authorization_pending");
    let p = poll(app, "tv", None, &device_code).await;
    assert_oauth_error(&p, 400, "slow_down");
    actix_web::rt::time::sleep(Duration::from_millis(1200)).await;
    let p = poll(app, "tv", None, &device_code).await;
    assert_oauth_error(&p, 400, "authorization_pending");
    // Another client's device code is no grant of this one (RFC 6749 §5.2).
    let p = poll(app, "rp", Some(&op.secret), &device_code).await;
    assert_oauth_error(&p, 400, "invalid_grant");
    let p = poll(app, "tv", None, "no-such-device-code").await;
    assert_oauth_error(&p, 400, "invalid_grant");

    // §3.3: the person opens verification_uri_complete: first a sign-in, then the code filled in.
    let mut b = Browser::new(app);
    let a = b.get(&complete).await;
    assert_eq!(a.status, 303, "{}", a.text);
    let to = location(&a);
    assert!(to.starts_with("/login?next="), "{to}");
    assert_eq!(query(&to)["next"], format!("/activate?user_code={user_code}"));
    let a = sign_in_for_next(&mut b, &to, "ann").await;
    assert_eq!(a.status, 303, "{}", a.text);
    assert_eq!(location(&a), format!("/activate?user_code={user_code}"));
    assert!(b.cookies.contains_key("gatehouse_sso"));
    let page = b.get(&location(&a)).await;
    assert_eq!(page.status, 200, "{}", page.text);
    assert!(page.text.contains(&format!("value=\"{user_code}\"")), "the code is filled in: {}", page.text);
    let csrf = hidden(&page.text, "csrf");
    let approval = b.post("/activate", &[("csrf", &csrf), ("user_code", &user_code)]).await;
    assert_eq!(approval.status, 200, "{}", approval.text);
    assert!(
        approval.text.contains("<strong id=\"client\">tv</strong>"),
        "the page names the client: {}",
        approval.text
    );
    assert!(approval.text.contains(&user_code));
    assert!(approval.text.contains("ann"));
    // Still pending until the person says yes.
    actix_web::rt::time::sleep(Duration::from_millis(1100)).await;
    assert_oauth_error(&poll(app, "tv", None, &device_code).await, 400, "authorization_pending");
    let yes = decide(&mut b, &approval, "allow").await;
    assert_eq!(yes.status, 200, "{}", yes.text);
    assert!(yes.text.contains("approved"), "{}", yes.text);

    actix_web::rt::time::sleep(Duration::from_millis(1100)).await;
    let t = poll(app, "tv", None, &device_code).await;
    assert_eq!(t.status, 200, "{}", t.text);
    assert_eq!(t.json["token_type"], "Bearer");
    assert_eq!(t.json["scope"], "openid profile");
    let (_, claims) = checked_jwt(app, t.json["id_token"].as_str().expect("an id_token"), "tv").await;
    let ann = app.core.user_by_login("ann").unwrap();
    assert_eq!(claims["sub"], json!(ann.id.to_string()));
    assert_eq!(claims["amr"], json!(["pwd"]));
    assert!(claims.get("nonce").is_none());
    let auth = format!("Bearer {}", t.json["access_token"].as_str().unwrap());
    let u = app.send("GET", "/oauth2/userinfo", &[("Authorization", &auth)], None).await;
    assert_eq!(u.status, 200, "{}", u.text);
    assert_eq!(u.json["preferred_username"], "ann");
    // §3.5 / RFC 6749: the device code is spent.
    actix_web::rt::time::sleep(Duration::from_millis(1100)).await;
    assert_oauth_error(&poll(app, "tv", None, &device_code).await, 400, "invalid_grant");
    // The code answered is gone from /activate too.
    let again = type_code(&mut b, &user_code).await;
    assert_eq!(again.status, 404, "{}", again.text);
    assert_eq!(app.count("SELECT count(*) FROM audit WHERE event = 'device_approved'"), 1);
}

#[actix_web::test]
async fn device_grant_denied_typed_forgivingly_and_wrong_codes() {
    let op = device_op(|_| {}).await;
    let app = &op.app;
    let mut b = Browser::new(app);
    // /activate without a session goes to sign in, and comes back.
    let a = b.get("/activate").await;
    assert_eq!(a.status, 303);
    let a = sign_in_for_next(&mut b, &location(&a), "ann").await;
    assert_eq!(location(&a), "/activate?user_code=");

    let start = device_start(app, "rp", Some(&op.secret), "openid").await;
    let device_code = start.json["device_code"].as_str().unwrap().to_string();
    let user_code = start.json["user_code"].as_str().unwrap().to_string();
    // Typed in lower case, with a space for the dash: the same code.
    let typed = user_code.to_lowercase().replace('-', " ");
    let approval = type_code(&mut b, &typed).await;
    assert_eq!(approval.status, 200, "{typed}: {}", approval.text);
    assert!(approval.text.contains("<strong id=\"client\">rp</strong>"));
    let compact = user_code.replace('-', "").to_lowercase();
    assert_eq!(type_code(&mut b, &compact).await.status, 200, "{compact}");
    let no = decide(&mut b, &approval, "deny").await;
    assert_eq!(no.status, 200, "{}", no.text);
    let p = poll(app, "rp", Some(&op.secret), &device_code).await;
    assert_oauth_error(&p, 400, "access_denied");
    assert_eq!(app.count("SELECT count(*) FROM audit WHERE event = 'device_denied'"), 1);

    // A code nobody asked for: the page again, 404, with a message.
    let wrong = type_code(&mut b, "BBBB-BBBB").await;
    assert_eq!(wrong.status, 404, "{}", wrong.text);
    assert!(wrong.text.contains("No device waits"), "{}", wrong.text);
    assert!(wrong.text.contains("activate-form"), "the form again");
    let junk = type_code(&mut b, "not a code at all").await;
    assert_eq!(junk.status, 404);
    // The forms need their CSRF token.
    let forged = b.post("/activate", &[("user_code", &user_code)]).await;
    assert_eq!(forged.status, 403);

    // A confidential client's device code is polled with its secret, or not at all.
    let start = device_start(app, "rp", Some(&op.secret), "openid").await;
    let device_code = start.json["device_code"].as_str().unwrap().to_string();
    let user_code = start.json["user_code"].as_str().unwrap().to_string();
    let p = poll(app, "rp", None, &device_code).await;
    assert_oauth_error(&p, 401, "invalid_client");
    assert!(p.headers.get("www-authenticate").is_some());
    // Who may not sign in to the client may not approve a device for it.
    op.app.add_user("bob", PASSWORD, &[]);
    let mut bob = Browser::new(app);
    let a = bob.get("/activate").await;
    sign_in_for_next(&mut bob, &location(&a), "bob").await;
    let approval = type_code(&mut bob, &user_code).await;
    assert_eq!(approval.status, 200, "{}", approval.text);
    let refused = decide(&mut bob, &approval, "allow").await;
    assert_eq!(refused.status, 403, "{}", refused.text);
    actix_web::rt::time::sleep(Duration::from_millis(1100)).await;
    assert_oauth_error(&poll(app, "rp", Some(&op.secret), &device_code).await, 400, "authorization_pending");
}

#[actix_web::test]
async fn an_expired_device_code_is_expired_token() {
    let op = device_op(|c| c.oidc.device_code_lifetime = seconds(1)).await;
    let start = device_start(&op.app, "tv", None, "openid").await;
    assert_eq!(start.json["expires_in"], json!(1));
    let device_code = start.json["device_code"].as_str().unwrap().to_string();
    let user_code = start.json["user_code"].as_str().unwrap().to_string();
    actix_web::rt::time::sleep(Duration::from_millis(1300)).await;
    assert_oauth_error(&poll(&op.app, "tv", None, &device_code).await, 400, "expired_token");
    // Nor can a person still approve it.
    let mut b = Browser::new(&op.app);
    let a = b.get("/activate").await;
    sign_in_for_next(&mut b, &location(&a), "ann").await;
    assert_eq!(type_code(&mut b, &user_code).await.status, 404);
}

#[actix_web::test]
async fn wrong_user_codes_from_one_address_are_throttled() {
    let op = device_op(|c| {
        c.throttle.address_failures = 3;
        c.throttle.account_failures = 3;
    })
    .await;
    let mut b = Browser::new(&op.app);
    let a = b.get("/activate").await;
    sign_in_for_next(&mut b, &location(&a), "ann").await;
    let mut statuses = vec![];
    for _ in 0..6 {
        let a = type_code(&mut b, "BBBB-CCCC").await;
        if a.status == 429 {
            assert!(a.headers.get("retry-after").is_some(), "429 says when to come back");
            assert!(a.text.contains("Too many wrong codes"), "{}", a.text);
        }
        statuses.push(a.status);
    }
    assert_eq!(statuses[0], 404, "{statuses:?}");
    assert!(statuses[..4].contains(&429), "the address is held back after its third wrong code: {statuses:?}");
    assert_eq!(*statuses.last().unwrap(), 429, "{statuses:?}");
    assert!(op.app.count("SELECT count(*) FROM audit WHERE event = 'device_code_wrong'") >= 1);
}

/// RFC 8628 §5.1: the user code's low entropy is safe only under rate limiting. An address held
/// back for guessing must not learn that a guess is right (a 200 approval page among 429s).
#[actix_web::test]
async fn a_held_back_address_learns_nothing_from_a_right_user_code() {
    let op = device_op(|c| {
        c.throttle.address_failures = 3;
        c.throttle.account_failures = 3;
    })
    .await;
    let start = device_start(&op.app, "tv", None, "openid").await;
    let user_code = start.json["user_code"].as_str().unwrap().to_string();
    let mut b = Browser::new(&op.app);
    let a = b.get("/activate").await;
    sign_in_for_next(&mut b, &location(&a), "ann").await;
    let mut held = false;
    for _ in 0..6 {
        held |= type_code(&mut b, "BBBB-CCCC").await.status == 429;
    }
    assert!(held);
    let right = type_code(&mut b, &user_code).await;
    assert_eq!(right.status, 429, "a right guess from a held-back address is told apart: {}", right.text);
}

// ----- 2. back-channel logout -----

/// A relying party's back-channel endpoint: records every POST (content type, body, when); the
/// first `fail_first` answer 500.
#[derive(Clone, Default)]
struct Receiver {
    got: Arc<Mutex<Vec<(String, String, Instant)>>>,
    failed: Arc<Mutex<Vec<Instant>>>,
    fail_first: Arc<AtomicUsize>,
}

impl Receiver {
    fn start(fail_first: usize) -> (String, Receiver) {
        let r = Receiver { fail_first: Arc::new(AtomicUsize::new(fail_first)), ..Default::default() };
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let data = r.clone();
        let server = HttpServer::new(move || {
            let data = data.clone();
            App::new().default_service(web::to(move |req: HttpRequest, body: web::Bytes| {
                let data = data.clone();
                async move {
                    let ct = req.headers().get("content-type").and_then(|v| v.to_str().ok()).unwrap_or("").to_string();
                    if req.method() == actix_web::http::Method::POST
                        && data
                            .fail_first
                            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
                            .is_ok()
                    {
                        data.failed.lock().unwrap().push(Instant::now());
                        return HttpResponse::InternalServerError().finish();
                    }
                    data.got.lock().unwrap().push((ct, String::from_utf8_lossy(&body).into_owned(), Instant::now()));
                    HttpResponse::Ok().finish()
                }
            }))
        })
        .workers(1)
        .listen(listener)
        .unwrap()
        .run();
        actix_web::rt::spawn(server);
        (format!("http://127.0.0.1:{port}/backchannel"), r)
    }

    /// Waits up to `secs` for `n` deliveries; all of them, as (content type, logout_token).
    async fn wait(&self, n: usize, secs: u64) -> Vec<(String, String)> {
        let deadline = Instant::now() + Duration::from_secs(secs);
        loop {
            let got = self.got.lock().unwrap().clone();
            if got.len() >= n || Instant::now() > deadline {
                return got
                    .into_iter()
                    .map(|(ct, body, _)| {
                        let form: HashMap<String, String> = serde_urlencoded::from_str(&body).unwrap();
                        (ct, form.get("logout_token").cloned().unwrap_or_else(|| panic!("no logout_token in {body}")))
                    })
                    .collect();
            }
            actix_web::rt::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// ann signs in to `rp` (offline_access) in `b`; the id_token's claims and the id_token.
async fn signed_in(op: &Op, b: &mut Browser<'_>) -> (Value, String) {
    let q = op.sign_in(b, "&scope=openid%20offline_access").await;
    let t = op.exchange(&q["code"]).await;
    assert_eq!(t.status, 200, "{}", t.text);
    let id_token = t.json["id_token"].as_str().unwrap().to_string();
    (op.verify(&id_token).await, id_token)
}

/// Back-Channel Logout 1.0 §2.4 and §2.6: the logout token's header and claims.
async fn assert_logout_token(op: &Op, token: &str, id_claims: &Value) {
    assert_logout_token_of(op, token, id_claims, "rp").await
}

async fn assert_logout_token_of(op: &Op, token: &str, id_claims: &Value, aud: &str) {
    let (header, claims) = checked_jwt(&op.app, token, aud).await;
    assert_eq!(header.typ.as_deref(), Some("logout+jwt"), "§2.4: typ logout+jwt");
    assert_eq!(claims["iss"], json!(op.app.base));
    assert_eq!(claims["aud"], json!(aud));
    assert_eq!(claims["sub"], id_claims["sub"]);
    assert_eq!(claims["sid"], id_claims["sid"], "the sid of the session that ended");
    assert_eq!(claims["events"], json!({BACKCHANNEL_EVENT: {}}), "§2.4: the one event, its value {{}}");
    assert!(claims.get("nonce").is_none(), "§2.4: a logout token has no nonce");
    assert!(claims["iat"].is_i64());
    assert!(claims["jti"].as_str().is_some_and(|j| !j.is_empty()));
}

async fn rp_logout(b: &mut Browser<'_>, id_token: &str) {
    let page = b.get(&format!("/oauth2/logout?id_token_hint={id_token}")).await;
    assert_eq!(page.status, 200, "{}", page.text);
    let csrf = hidden(&page.text, "csrf");
    let a = b.post("/oauth2/logout", &[("csrf", &csrf), ("id_token_hint", id_token)]).await;
    assert_eq!(a.status, 200, "{}", a.text);
    assert!(!b.cookies.contains_key("gatehouse_sso"));
}

#[actix_web::test]
async fn rp_initiated_logout_sends_a_signed_logout_token() {
    let op = Op::new(true).await;
    let (uri, rx) = Receiver::start(0);
    op.app.core.edit_client("rp", ClientSettings { backchannel_uri: Some(Some(uri)), ..Default::default() }).unwrap();
    // Another client with a back-channel URI, that this session never signed in to.
    let (other_uri, other_rx) = Receiver::start(0);
    op.app
        .core
        .add_client(
            "other",
            None,
            false,
            &[],
            ClientSettings {
                redirect_uris: Some(vec![REDIRECT.into()]),
                backchannel_uri: Some(Some(other_uri)),
                ..Default::default()
            },
        )
        .unwrap();
    op.app.core.grant("ann", "other").unwrap();
    let mut b = Browser::new(&op.app);
    let (claims, id_token) = signed_in(&op, &mut b).await;
    assert!(rx.wait(1, 1).await.is_empty(), "nothing before the logout");
    rp_logout(&mut b, &id_token).await;
    let got = rx.wait(1, 5).await;
    assert_eq!(got.len(), 1, "one logout token within 5 s");
    assert!(got[0].0.starts_with("application/x-www-form-urlencoded"), "§2.5: a form POST: {}", got[0].0);
    assert_logout_token(&op, &got[0].1, &claims).await;
    // Delivered once: not again.
    actix_web::rt::time::sleep(Duration::from_millis(2500)).await;
    assert_eq!(rx.wait(2, 0).await.len(), 1, "delivered once");
    assert!(other_rx.wait(1, 0).await.is_empty(), "only the clients the session signed in to are told");
}

#[actix_web::test]
async fn every_client_the_session_signed_in_to_is_told() {
    let op = Op::new(true).await;
    let (uri, rx) = Receiver::start(0);
    op.app.core.edit_client("rp", ClientSettings { backchannel_uri: Some(Some(uri)), ..Default::default() }).unwrap();
    let (other_uri, other_rx) = Receiver::start(0);
    let other_secret = op
        .app
        .core
        .add_client(
            "other",
            None,
            false,
            &[],
            ClientSettings {
                redirect_uris: Some(vec![REDIRECT.into()]),
                backchannel_uri: Some(Some(other_uri)),
                first_party: Some(true),
                ..Default::default()
            },
        )
        .unwrap()
        .unwrap()
        .expose()
        .to_string();
    op.app.core.grant("ann", "other").unwrap();
    let mut b = Browser::new(&op.app);
    let (claims, id_token) = signed_in(&op, &mut b).await;
    // The second application signs in through the same SSO session.
    let a = b
        .get(&format!(
            "/oauth2/authorize?response_type=code&client_id=other&redirect_uri={}&scope=openid&state=s2",
            crate::oidc::urlencode(REDIRECT)
        ))
        .await;
    let code = query(&location(&a))["code"].clone();
    let t = client_post(
        &op.app,
        "/oauth2/token",
        "other",
        Some(&other_secret),
        &[("grant_type", "authorization_code"), ("code", &code), ("redirect_uri", REDIRECT)],
    )
    .await;
    assert_eq!(t.status, 200, "{}", t.text);
    let (_, other_claims) = checked_jwt(&op.app, t.json["id_token"].as_str().unwrap(), "other").await;
    assert_eq!(other_claims["sid"], claims["sid"], "one session, one sid");
    rp_logout(&mut b, &id_token).await;
    let got = rx.wait(1, 5).await;
    let other_got = other_rx.wait(1, 5).await;
    assert_eq!(got.len(), 1);
    assert_eq!(other_got.len(), 1, "the other client of the session is told too");
    assert_logout_token_of(&op, &got[0].1, &claims, "rp").await;
    assert_logout_token_of(&op, &other_got[0].1, &claims, "other").await;
}

/// Back-Channel Logout 1.0 §2.5: the OP does not follow a redirect (the token goes where the
/// client registered, nowhere else); a redirect is no delivery.
#[actix_web::test]
async fn a_redirect_from_the_back_channel_uri_is_not_followed() {
    let op = Op::new(true).await;
    let (elsewhere, rx) = Receiver::start(0);
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let hits = Arc::new(AtomicUsize::new(0));
    let h = Arc::clone(&hits);
    let server = HttpServer::new(move || {
        let (to, h) = (elsewhere.clone(), Arc::clone(&h));
        App::new().default_service(web::to(move || {
            let (to, h) = (to.clone(), Arc::clone(&h));
            async move {
                h.fetch_add(1, Ordering::SeqCst);
                HttpResponse::TemporaryRedirect().insert_header(("Location", to)).finish()
            }
        }))
    })
    .workers(1)
    .listen(listener)
    .unwrap()
    .run();
    actix_web::rt::spawn(server);
    op.app
        .core
        .edit_client(
            "rp",
            ClientSettings {
                backchannel_uri: Some(Some(format!("http://127.0.0.1:{port}/backchannel"))),
                ..Default::default()
            },
        )
        .unwrap();
    let mut b = Browser::new(&op.app);
    let (_, id_token) = signed_in(&op, &mut b).await;
    rp_logout(&mut b, &id_token).await;
    let deadline = Instant::now() + Duration::from_secs(5);
    while hits.load(Ordering::SeqCst) == 0 && Instant::now() < deadline {
        actix_web::rt::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(hits.load(Ordering::SeqCst) >= 1, "the registered URI was called");
    assert!(rx.wait(1, 3).await.is_empty(), "the redirect was not followed");
}

#[actix_web::test]
async fn a_failed_delivery_is_retried() {
    let op = Op::new(true).await;
    let (uri, rx) = Receiver::start(1);
    op.app.core.edit_client("rp", ClientSettings { backchannel_uri: Some(Some(uri)), ..Default::default() }).unwrap();
    let mut b = Browser::new(&op.app);
    let (claims, id_token) = signed_in(&op, &mut b).await;
    rp_logout(&mut b, &id_token).await;
    let got = rx.wait(1, 10).await;
    assert_eq!(got.len(), 1, "the second attempt delivered it");
    let failed = rx.failed.lock().unwrap().clone();
    assert_eq!(failed.len(), 1, "the first answered 500");
    let delivered_at = rx.got.lock().unwrap()[0].2;
    assert!(delivered_at.duration_since(failed[0]) >= Duration::from_millis(1500), "after the backoff");
    assert_logout_token(&op, &got[0].1, &claims).await;
}

#[actix_web::test]
async fn blocking_or_a_new_password_sends_logout_tokens_too() {
    let op = Op::new(true).await;
    let (uri, rx) = Receiver::start(0);
    op.app
        .core
        .edit_client(
            "rp",
            ClientSettings {
                backchannel_uri: Some(Some(uri)),
                signing_alg: Some("ES256".into()),
                ..Default::default()
            },
        )
        .unwrap();
    let mut b = Browser::new(&op.app);
    let (claims, _) = signed_in(&op, &mut b).await;
    op.app.core.set_blocked("ann", true).unwrap();
    let got = rx.wait(1, 5).await;
    assert_eq!(got.len(), 1, "blocking ends the session: a logout token");
    assert_logout_token(&op, &got[0].1, &claims).await;
    let header = jsonwebtoken::decode_header(&got[0].1).unwrap();
    assert_eq!(header.alg, jsonwebtoken::Algorithm::ES256, "signed with the client's algorithm");
    op.app.core.set_blocked("ann", false).unwrap();

    // The membership removed: the client is told.
    let mut b = Browser::new(&op.app);
    let (claims, _) = signed_in(&op, &mut b).await;
    op.app.core.revoke("ann", "rp").unwrap();
    let got = rx.wait(2, 5).await;
    assert_eq!(got.len(), 2, "a membership removed ends the client's sessions: a logout token");
    assert_logout_token(&op, &got[1].1, &claims).await;
    op.app.core.grant("ann", "rp").unwrap();

    let mut b = Browser::new(&op.app);
    let (claims, _) = signed_in(&op, &mut b).await;
    op.app.core.set_password("ann", &gatehouse::core::Secret::new("another long enough password")).unwrap();
    let got = rx.wait(3, 5).await;
    assert_eq!(got.len(), 3, "a new password ends the session: a logout token");
    assert_logout_token(&op, &got[2].1, &claims).await;
}

// ----- 3. the second factor -----

/// The authenticator app of `login`, enrolled and confirmed (the confirmation spends the current step).
fn enrol_totp(app: &TestApp, login: &str) -> totp_rs::Totp {
    enrol_totp_with_codes(app, login).0
}

/// The same, and the recovery codes shown.
fn enrol_totp_with_codes(app: &TestApp, login: &str) -> (totp_rs::Totp, Vec<String>) {
    let user = app.core.user_by_login(login).unwrap();
    let e = app.core.totp_begin(&user).unwrap();
    let bytes = totp_rs::Secret::try_from_base32(e.secret.expose()).unwrap();
    let totp = totp_rs::Builder::new().with_secret(bytes).build().unwrap();
    let codes = app.core.totp_confirm(&Caller::local(), &user, &totp.generate_current().to_string()).unwrap();
    assert!(app.core.has_second_factor(user.id).unwrap());
    (totp, codes.iter().map(|c| c.expose().to_string()).collect())
}

/// In a new browser: ann's authorization request, her password, and the second-factor page's
/// (p, csrf).
async fn up_to_the_second_factor<'a>(op: &'a Op) -> (Browser<'a>, String, String) {
    let mut b = Browser::new(&op.app);
    let a = b.get(&op.authorize_url("")).await;
    let page = op.password(&mut b, &location(&a), "ann", PASSWORD).await;
    assert_eq!(page.status, 200, "{}", page.text);
    let (p, csrf) = (hidden(&page.text, "p"), hidden(&page.text, "csrf"));
    (b, p, csrf)
}

/// The device's person has a second factor: the sign-in the activation page asks for takes it,
/// and goes back to the activation page with the code filled in.
#[actix_web::test]
async fn the_activation_page_sign_in_takes_the_second_factor_too() {
    let op = device_op(|_| {}).await;
    let totp = enrol_totp(&op.app, "ann");
    let start = device_start(&op.app, "tv", None, "openid").await;
    let device_code = start.json["device_code"].as_str().unwrap().to_string();
    let user_code = start.json["user_code"].as_str().unwrap().to_string();
    let mut b = Browser::new(&op.app);
    let a = b.get(start.json["verification_uri_complete"].as_str().unwrap()).await;
    let page = sign_in_for_next(&mut b, &location(&a), "ann").await;
    assert_eq!(page.status, 200, "{}", page.text);
    assert!(page.text.contains("second-factor-form"), "{}", page.text);
    let (p, csrf) = (hidden(&page.text, "p"), hidden(&page.text, "csrf"));
    let code = totp.generate(now_secs() + 30).to_string();
    let ok = b.post("/login/second-factor", &[("p", &p), ("csrf", &csrf), ("code", &code)]).await;
    assert_eq!(ok.status, 303, "{}", ok.text);
    assert_eq!(location(&ok), format!("/activate?user_code={user_code}"));
    let approval = type_code(&mut b, &user_code).await;
    assert_eq!(decide(&mut b, &approval, "allow").await.status, 200);
    let t = poll(&op.app, "tv", None, &device_code).await;
    assert_eq!(t.status, 200, "{}", t.text);
    let (_, claims) = checked_jwt(&op.app, t.json["id_token"].as_str().unwrap(), "tv").await;
    assert_eq!(claims["amr"], json!(["pwd", "otp"]));
}

#[actix_web::test]
async fn a_recovery_code_is_good_once_and_wrong_codes_hold_the_second_factor_back() {
    let op = Op::with(true, |c| {
        c.throttle.account_failures = 3;
        c.throttle.address_failures = 100;
    })
    .await;
    let (totp, codes) = enrol_totp_with_codes(&op.app, "ann");
    assert_eq!(codes.len(), 10);
    let (mut b, p, csrf) = up_to_the_second_factor(&op).await;
    let ok = b.post("/login/second-factor", &[("p", &p), ("csrf", &csrf), ("code", &codes[0])]).await;
    assert_eq!(ok.status, 303, "a recovery code signs in: {}", ok.text);
    let a = b.get(&location(&ok)).await;
    let t = op.exchange(&query(&location(&a))["code"]).await;
    let claims = op.verify(t.json["id_token"].as_str().unwrap()).await;
    assert!(claims["amr"].as_array().unwrap().contains(&json!("pwd")), "{claims}");
    assert_eq!(claims["amr"].as_array().unwrap().len(), 2, "a second factor was given: {claims}");
    // The same recovery code again: spent.
    let (mut c, p, csrf) = up_to_the_second_factor(&op).await;
    let again = c.post("/login/second-factor", &[("p", &p), ("csrf", &csrf), ("code", &codes[0])]).await;
    assert_eq!(again.status, 401, "a recovery code is good once: {}", again.text);
    // Wrong codes: the account's second factor is held back, and then a right code is too.
    let mut statuses = vec![];
    for _ in 0..4 {
        let a = c.post("/login/second-factor", &[("p", &p), ("csrf", &csrf), ("code", &wrong_code(&totp))]).await;
        statuses.push(a.status);
    }
    assert!(statuses.contains(&429), "{statuses:?}");
    let right = totp.generate(now_secs() + 30).to_string();
    let held = c.post("/login/second-factor", &[("p", &p), ("csrf", &csrf), ("code", &right)]).await;
    assert_eq!(held.status, 429, "a right code from a held-back second factor: {}", held.text);
    assert!(held.headers.get("retry-after").is_some());
    assert!(!c.cookies.contains_key("gatehouse_sso"));
    let other = b.post("/login/second-factor", &[("p", &p), ("csrf", &csrf), ("code", &codes[1])]).await;
    assert_ne!(other.status, 303, "another browser cannot use this one's half-done sign-in");
}

#[actix_web::test]
async fn the_sso_session_ends_when_idle_and_at_its_lifetime() {
    let op = Op::with(true, |c| {
        c.oidc.session_idle_timeout = seconds(2);
        c.oidc.session_lifetime = seconds(3);
    })
    .await;
    // Idle: no sign-in through it for longer than the idle timeout.
    let mut b = Browser::new(&op.app);
    op.sign_in(&mut b, "").await;
    assert_eq!(b.get("/auth/verify").await.status, 200);
    actix_web::rt::time::sleep(Duration::from_millis(3200)).await;
    assert_eq!(b.get("/auth/verify").await.status, 401, "idle past the timeout");
    let a = b.get(&op.authorize_url("")).await;
    assert!(location(&a).starts_with("/login"), "a new sign-in: {}", location(&a));
    // Used all along, it still ends at its lifetime.
    let mut b = Browser::new(&op.app);
    op.sign_in(&mut b, "").await;
    for _ in 0..2 {
        actix_web::rt::time::sleep(Duration::from_millis(1200)).await;
        let a = b.get(&op.authorize_url("")).await;
        assert!(location(&a).starts_with(REDIRECT), "alive while used: {}", location(&a));
    }
    actix_web::rt::time::sleep(Duration::from_millis(1200)).await;
    let a = b.get(&op.authorize_url("")).await;
    assert!(location(&a).starts_with("/login"), "past its lifetime: {}", location(&a));
    assert_eq!(b.get("/auth/verify").await.status, 401);
}

fn now_secs() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs()
}

/// A code the authenticator does not show now, nor a step before or after.
fn wrong_code(totp: &totp_rs::Totp) -> String {
    let now = now_secs();
    let near: Vec<String> = [now - 30, now, now + 30].iter().map(|t| totp.generate(*t).to_string()).collect();
    (123_456..).map(|n: u32| n.to_string()).find(|c| !near.contains(c)).unwrap()
}

fn forepaas_login(login: &str) -> Value {
    json!({"login": login, "password": PASSWORD, "app_id": "forepaas", "auth_mode": "forepaas_id_resource_owner"})
}

#[actix_web::test]
async fn require_second_factor_refuses_the_bare_password_at_forepaas() {
    let app = crate::helpers::spawn_app().await;
    app.add_user("tina", PASSWORD, &["forepaas"]);
    app.add_user("plain", PASSWORD, &["forepaas"]);
    enrol_totp(&app, "tina");
    // Off by default: existing clients keep working.
    assert_eq!(app.post_json("/iam/login", &forepaas_login("tina")).await.status, 200);
    app.core.set_require_second_factor("forepaas", true).unwrap();
    let a = app.post_json("/iam/login", &forepaas_login("tina")).await;
    assert_eq!(a.status, 403, "{}", a.text);
    assert_eq!(a.content_type, "application/json; charset=utf-8");
    let obj = a.json.as_object().unwrap_or_else(|| panic!("not an envelope: {}", a.text));
    assert_eq!(obj.len(), 4, "{}", a.text);
    assert_eq!(a.json["success"], json!(false));
    assert_eq!(a.json["status"], json!(403));
    assert!(a.json["duration"].is_number());
    assert!(a.json["error"].as_str().unwrap().contains("second factor"), "{}", a.text);
    // A wrong password is still only a wrong password (the 403 is for the holder of the right one).
    let wrong = app
        .post_json(
            "/iam/login",
            &json!({"login": "tina", "password": "not it at all", "app_id": "forepaas", "auth_mode": "forepaas_id_resource_owner"}),
        )
        .await;
    assert_eq!(wrong.status, 401, "{}", wrong.text);
    let plain = app.post_json("/iam/login", &forepaas_login("plain")).await;
    assert_eq!(plain.status, 200, "a user without a second factor signs in: {}", plain.text);
    app.core.set_require_second_factor("forepaas", false).unwrap();
    let a = app.post_json("/iam/login", &forepaas_login("tina")).await;
    assert_eq!(a.status, 200, "{}", a.text);
}

#[actix_web::test]
async fn require_second_factor_refuses_the_bare_password_at_iqm() {
    let app = crate::helpers::spawn_app().await;
    let secret = app.core.add_app("iqm-client", None, &[Door::Iqm, Door::Oauth]).unwrap().expose().to_string();
    let auth = basic("iqm-client", &secret);
    let post = |path: &'static str, body: Value| {
        let auth = auth.clone();
        let app = &app;
        async move {
            app.send(
                "POST",
                path,
                &[("Authorization", &auth)],
                Some(("application/json", body.to_string().into_bytes())),
            )
            .await
        }
    };
    for email in ["otp@iqm.com", "plain@iqm.com"] {
        let a = post("/api/v3/ua/sign-up", json!({"email": email, "password": PASSWORD})).await;
        assert_eq!(a.status, 200, "{}", a.text);
    }
    enrol_totp(&app, "otp@iqm.com");
    let login = |email: &'static str| {
        post("/api/v3/ua/login", json!({"grantType": "password", "email": email, "password": PASSWORD}))
    };
    assert_eq!(login("otp@iqm.com").await.status, 200, "off by default");
    app.core.set_require_second_factor("iqm-client", true).unwrap();
    let a = login("otp@iqm.com").await;
    assert_eq!(a.status, 403, "{}", a.text);
    assert_eq!(a.content_type, "application/json");
    assert_eq!(a.json["success"], json!(false));
    let objs = a.json["errorObjects"].as_array().unwrap_or_else(|| panic!("IQM's envelope: {}", a.text));
    assert_eq!(objs.len(), 1);
    assert_eq!(objs[0]["error"], "Second factor required");
    assert!(objs[0]["reason"].is_string());
    // The same at the token path.
    let t =
        post("/api/v3/ua/oauth/token", json!({"grant_type": "password", "email": "otp@iqm.com", "password": PASSWORD}))
            .await;
    assert_eq!(t.status, 403, "{}", t.text);
    assert_eq!(login("plain@iqm.com").await.status, 200, "a user without a second factor signs in");
    app.core.set_require_second_factor("iqm-client", false).unwrap();
    assert_eq!(login("otp@iqm.com").await.status, 200);
}

#[actix_web::test]
async fn the_hosted_sign_in_asks_the_second_factor_and_a_code_is_good_once() {
    let op = Op::new(true).await;
    let totp = enrol_totp(&op.app, "ann");
    let mut b = Browser::new(&op.app);
    let a = b.get(&op.authorize_url("")).await;
    let page = op.password(&mut b, &location(&a), "ann", PASSWORD).await;
    assert_eq!(page.status, 200, "{}", page.text);
    assert!(page.text.contains("second-factor-form"), "the second-factor page: {}", page.text);
    assert!(!b.cookies.contains_key("gatehouse_sso"), "not signed in on the password alone");
    let (p, csrf) = (hidden(&page.text, "p"), hidden(&page.text, "csrf"));
    let wrong = b.post("/login/second-factor", &[("p", &p), ("csrf", &csrf), ("code", &wrong_code(&totp))]).await;
    assert_eq!(wrong.status, 401, "{}", wrong.text);
    assert!(wrong.text.contains("second-factor-form"), "the page again");
    assert!(!b.cookies.contains_key("gatehouse_sso"));
    assert_eq!(op.app.count("SELECT count(*) FROM audit WHERE event = 'second_factor_failed'"), 1);
    // The confirmation spent the current step: the next one's code (skew of one step) signs in.
    let code = totp.generate(now_secs() + 30).to_string();
    let (p, csrf) = (hidden(&wrong.text, "p"), hidden(&wrong.text, "csrf"));
    let ok = b.post("/login/second-factor", &[("p", &p), ("csrf", &csrf), ("code", &code)]).await;
    assert_eq!(ok.status, 303, "{}", ok.text);
    assert!(b.cookies.contains_key("gatehouse_sso"));
    let a = b.get(&location(&ok)).await;
    let back = location(&a);
    assert!(back.starts_with(REDIRECT), "{back}");
    let t = op.exchange(&query(&back)["code"]).await;
    assert_eq!(t.status, 200, "{}", t.text);
    let claims = op.verify(t.json["id_token"].as_str().unwrap()).await;
    assert_eq!(claims["amr"], json!(["pwd", "otp"]));

    // The same code again, from another browser that has the password: refused.
    let mut thief = Browser::new(&op.app);
    let a = thief.get(&op.authorize_url("")).await;
    let page = op.password(&mut thief, &location(&a), "ann", PASSWORD).await;
    let (p, csrf) = (hidden(&page.text, "p"), hidden(&page.text, "csrf"));
    let replay = thief.post("/login/second-factor", &[("p", &p), ("csrf", &csrf), ("code", &code)]).await;
    assert_eq!(replay.status, 401, "a TOTP code is good once: {}", replay.text);
    assert!(!thief.cookies.contains_key("gatehouse_sso"));
    // Another browser cannot finish this browser's half-done sign-in.
    let mut other = Browser::new(&op.app);
    other.get("/login").await;
    let stolen = other.post("/login/second-factor", &[("p", &p), ("csrf", &csrf), ("code", &code)]).await;
    assert_ne!(stolen.status, 303);
    assert!(!other.cookies.contains_key("gatehouse_sso"));

    // A device approved from the session signed in with the second factor carries its amr.
    let start = device_start(&op.app, "rp", Some(&op.secret), "openid").await;
    let device_code = start.json["device_code"].as_str().unwrap().to_string();
    let approval = type_code(&mut b, start.json["user_code"].as_str().unwrap()).await;
    assert_eq!(decide(&mut b, &approval, "allow").await.status, 200);
    let t = poll(&op.app, "rp", Some(&op.secret), &device_code).await;
    assert_eq!(t.status, 200, "{}", t.text);
    let claims = op.verify(t.json["id_token"].as_str().unwrap()).await;
    assert_eq!(claims["amr"], json!(["pwd", "otp"]));
}

// ----- 4. forward auth with the SSO cookie -----

#[actix_web::test]
async fn auth_verify_accepts_the_sso_cookie_for_members_until_logout() {
    let op = Op::new(true).await;
    op.app.add_user("bob", PASSWORD, &[]);
    let mut b = Browser::new(&op.app);
    op.sign_in(&mut b, "").await;
    let a = b.get("/auth/verify").await;
    assert_eq!(a.status, 200, "{}", a.text);
    assert_eq!(a.headers.get("x-auth-user").unwrap(), "ann");
    let ann = op.app.core.user_by_login("ann").unwrap();
    assert_eq!(a.headers.get("x-auth-user-id").unwrap().to_str().unwrap(), ann.id.to_string());
    let a = b.get("/auth/verify?app=rp").await;
    assert_eq!(a.status, 200, "a member of rp: {}", a.text);
    assert_eq!(a.headers.get("x-auth-app").unwrap(), "rp");
    let a = b.get("/auth/verify?app=forepaas").await;
    assert_eq!(a.status, 401, "not a member of forepaas");

    // bob, signed in on the hosted page, is a member of nothing.
    let mut bob = Browser::new(&op.app);
    let page = bob.get("/login").await;
    let csrf = hidden(&page.text, "csrf");
    let s =
        bob.post("/login", &[("r", ""), ("next", ""), ("csrf", &csrf), ("login", "bob"), ("password", PASSWORD)]).await;
    assert_eq!(s.status, 200, "{}", s.text);
    assert!(bob.cookies.contains_key("gatehouse_sso"));
    let a = bob.get("/auth/verify").await;
    assert_eq!(a.status, 200);
    assert_eq!(a.headers.get("x-auth-user").unwrap(), "bob");
    let a = bob.get("/auth/verify?app=rp").await;
    assert_eq!(a.status, 401, "a non-member of rp");
    assert!(a.headers.get("www-authenticate").is_some());
    // An open client lets every active user in; a blocked one is nobody.
    op.app.core.edit_client("rp", ClientSettings { open: Some(true), ..Default::default() }).unwrap();
    assert_eq!(bob.get("/auth/verify?app=rp").await.status, 200, "rp is open to every user");
    op.app.core.set_blocked("bob", true).unwrap();
    assert_eq!(bob.get("/auth/verify").await.status, 401, "blocking ends the SSO session");

    // After logout the cookie's value opens nothing.
    let cookie = b.cookies["gatehouse_sso"].clone();
    let page = b.get("/oauth2/logout").await;
    let csrf = hidden(&page.text, "csrf");
    let out = b.post("/oauth2/logout", &[("csrf", &csrf)]).await;
    assert_eq!(out.status, 200, "{}", out.text);
    let mut replay = Browser::new(&op.app);
    replay.cookies.insert("gatehouse_sso".into(), cookie);
    assert_eq!(replay.get("/auth/verify").await.status, 401);
    assert_eq!(replay.get("/auth/verify?app=rp").await.status, 401);
}

// ----- keys rotated by another process -----

/// Issue 27 §4: a rotation made elsewhere (another node, the command line) is published at once,
/// signs only after the publication delay, and the old key stays published for the tokens it signed.
#[actix_web::test]
async fn a_rotation_by_another_process_publishes_first_then_signs() {
    let op = Op::new(true).await;
    let kid_of = |jwt: &str| jsonwebtoken::decode_header(jwt).unwrap().kid.unwrap();
    let kids = |a: Answer| -> Vec<String> {
        a.json["keys"].as_array().unwrap().iter().map(|k| k["kid"].as_str().unwrap().to_string()).collect()
    };
    let mut b = Browser::new(&op.app);
    let (_, before) = signed_in(&op, &mut b).await;
    let old = kid_of(&before);
    // Another process on the same store, with a short publication delay.
    let other = crate::helpers::spawn_app_in(tempfile::tempdir().unwrap(), &op.app.core.config.data_dir, |c| {
        c.oidc.key_publication_delay = seconds(1)
    })
    .await;
    let rotated = other.core.rotate_signing_keys(None).unwrap();
    assert_eq!(rotated.len(), 3);
    let new = rotated.iter().find(|r| r.alg.as_str() == "RS256").unwrap().kid.clone();
    assert_ne!(new, old);
    let published = kids(op.app.get("/oauth2/jwks").await);
    assert!(published.contains(&new), "the next key is published at once: {published:?}");
    assert!(published.contains(&old));
    let (_, now) = signed_in(&op, &mut b).await;
    assert_eq!(kid_of(&now), old, "the next key does not sign before the delay");
    // Past the delay (and this process's re-read of the signing key), the new key signs.
    let deadline = Instant::now() + Duration::from_secs(12);
    let mut kid = old.clone();
    while kid != new && Instant::now() < deadline {
        actix_web::rt::time::sleep(Duration::from_millis(1000)).await;
        let (_, t) = signed_in(&op, &mut b).await;
        kid = kid_of(&t);
    }
    assert_eq!(kid, new, "the rotated key signs after the delay");
    let published = kids(op.app.get("/oauth2/jwks").await);
    assert!(published.contains(&old), "the old key stays published for the tokens it signed");
    op.verify(&before).await;
}

// ----- 5. the command line -----

/// The environment that points the command line and a served child at this backend's store.
fn cli_env(dir: &std::path::Path) -> Vec<(String, String)> {
    if !crate::helpers::on_postgres() {
        return vec![];
    }
    let config = crate::helpers::test_config(&dir.join("data"));
    if config.store.backend != "postgres" {
        return vec![];
    }
    vec![
        ("GATEHOUSE_STORE__BACKEND".into(), "postgres".into()),
        ("GATEHOUSE_STORE__POSTGRES_URL".into(), config.store.postgres_url.clone()),
    ]
}

fn run(dir: &std::path::Path, env: &[(String, String)], args: &[&str]) -> std::process::Output {
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    gatehouse_cli(dir, &env, args, "")
}

fn ok(dir: &std::path::Path, env: &[(String, String)], args: &[&str]) -> String {
    let out = run(dir, env, args);
    assert!(out.status.success(), "{args:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap()
}

fn is_secret(word: &str) -> bool {
    word.len() == 64 && word.chars().all(|c| c.is_ascii_hexdigit())
}

/// A line of `app show` that is `label` followed by `value`.
fn shows(out: &str, label: &str, value: &str) -> bool {
    out.lines().any(|l| l.strip_prefix(label).is_some_and(|rest| rest.trim() == value))
}

async fn client_credentials(base: &str, id: &str, secret: &str) -> (u16, Value) {
    let mut res = awc::Client::default()
        .post(format!("{base}/oauth2/token"))
        .insert_header(("Authorization", basic(id, secret)))
        .send_form(&[("grant_type", "client_credentials")])
        .await
        .unwrap();
    let body = res.body().await.unwrap();
    (res.status().as_u16(), serde_json::from_slice(&body).unwrap_or(Value::Null))
}

#[actix_web::test]
async fn the_command_line_adds_shows_edits_and_rotates_clients_and_keys() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let env = cli_env(d);
    let out = ok(d, &env, &["app", "add", "web", "--redirect-uri", "https://a.example/cb", "--first-party"]);
    let old = out.split_whitespace().last().unwrap().to_string();
    assert!(is_secret(&old), "a confidential client's secret, shown once: {out}");
    let show = ok(d, &env, &["app", "show", "web"]);
    assert!(shows(&show, "redirect uri:", "https://a.example/cb"), "{show}");
    assert!(shows(&show, "first party:", "yes"), "{show}");
    assert!(shows(&show, "public client:", "no"), "{show}");
    assert!(shows(&show, "signing alg:", "RS256"), "RS256 by default: {show}");
    assert!(!show.contains(&old), "show never prints the secret");
    ok(d, &env, &["app", "edit", "web", "--signing-alg", "ES256"]);
    let show = ok(d, &env, &["app", "show", "web"]);
    assert!(shows(&show, "signing alg:", "ES256"), "{show}");
    assert!(shows(&show, "redirect uri:", "https://a.example/cb"), "an edit keeps what it does not name: {show}");
    let out = ok(d, &env, &["app", "add", "spa", "--public", "--redirect-uri", "https://a.example/cb"]);
    assert!(!out.split_whitespace().any(is_secret), "a public client has no secret: {out}");
    let show = ok(d, &env, &["app", "show", "spa"]);
    assert!(shows(&show, "public client:", "yes") && shows(&show, "secret:", "no"), "{show}");
    let out = run(d, &env, &["app", "rotate-secret", "spa"]);
    assert_ne!(out.status.code(), Some(0), "a public client gets no secret");
    assert!(!String::from_utf8_lossy(&out.stdout).split_whitespace().any(is_secret));

    // Refused redirect URIs: a clear line, a failing exit code, nothing added.
    for (uri, word) in [("https://a.example/cb#frag", "fragment"), ("https://*.example/cb", "wildcard")] {
        let out = run(d, &env, &["app", "add", "bad", "--redirect-uri", uri]);
        assert_ne!(out.status.code(), Some(0), "{uri} accepted");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(word), "{uri}: {err}");
        let out = run(d, &env, &["app", "edit", "web", "--redirect-uri", uri]);
        assert_ne!(out.status.code(), Some(0), "{uri} accepted by edit");
        assert!(String::from_utf8_lossy(&out.stderr).contains(word));
    }
    assert!(!ok(d, &env, &["app", "list"]).lines().any(|l| l.starts_with("bad ")));
    assert!(shows(&ok(d, &env, &["app", "show", "web"]), "redirect uri:", "https://a.example/cb"));
    let out = ok(d, &env, &["app", "require-second-factor", "web", "true"]);
    assert!(out.contains("second factor required"), "{out}");
    let out = ok(d, &env, &["app", "require-second-factor", "web", "false"]);
    assert!(out.contains("not required"), "{out}");
    let out = run(d, &env, &["app", "require-second-factor", "nobody", "true"]);
    assert_ne!(out.status.code(), Some(0));
    assert!(String::from_utf8_lossy(&out.stderr).contains("nobody"));

    // A server on the data directory; the secret rotated while it runs.
    let port = crate::helpers::free_port();
    let envs: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let server = crate::helpers::serve(d, &envs, port, std::process::Stdio::null());
    let (status, body) = client_credentials(&server.base, "web", &old).await;
    assert_eq!(status, 200, "{body}");
    let out = ok(d, &env, &["app", "rotate-secret", "web"]);
    let new = out.split_whitespace().last().unwrap().to_string();
    assert!(is_secret(&new) && new != old, "{out}");
    let (status, body) = client_credentials(&server.base, "web", &old).await;
    assert_eq!(status, 401, "the old secret stops at once: {body}");
    assert_eq!(body["error"], "invalid_client");
    let (status, body) = client_credentials(&server.base, "web", &new).await;
    assert_eq!(status, 200, "the new one works without a restart: {body}");

    // Key rotation: one line per algorithm, and the next keys are in the JWKS at once.
    let jwks_kids = |base: String| async move {
        let a = crate::helpers::call("GET", &format!("{base}/oauth2/jwks"), None).await;
        a.json["keys"].as_array().unwrap().iter().map(|k| k["kid"].as_str().unwrap().to_string()).collect::<Vec<_>>()
    };
    let before = jwks_kids(server.base.clone()).await;
    let out = ok(d, &env, &["oidc", "rotate-keys"]);
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 3, "{out}");
    let mut algs: Vec<&str> = lines.iter().map(|l| l.split_whitespace().next().unwrap()).collect();
    algs.sort_unstable();
    assert_eq!(algs, ["ES256", "EdDSA", "RS256"], "{out}");
    let after = jwks_kids(server.base.clone()).await;
    for l in &lines {
        let kid = l.split_whitespace().nth(1).unwrap();
        assert!(!before.iter().any(|k| k == kid), "{kid} is a new key");
        assert!(after.iter().any(|k| k == kid), "{kid} is published at once: {after:?}");
    }
    for k in &before {
        assert!(after.contains(k), "the signing key {k} stays published");
    }
    drop(server);
}
