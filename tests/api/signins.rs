//! IAMPASS sign-ins approved on the user's device: the vendor's own Python client (package
//! `IAMPASS`, unchanged, pointed at the test server) on the application's side, and on the
//! device's side a device written here from src/dialect/device.rs's description of the signed calls
//! (its own P-256 key, and a software WebAuthn authenticator for `facial`). The page itself is
//! driven in a real browser in `signins_browser`.

use gatehouse::core::apps::Door;
use std::process::Command;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use base64::Engine;
use ring::rand::SystemRandom;
use ring::signature::{EcdsaKeyPair, KeyPair, ECDSA_P256_SHA256_ASN1_SIGNING, ECDSA_P256_SHA256_FIXED_SIGNING};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

use crate::helpers::{have, on_postgres, spawn_app_with, Answer, TestApp};
use crate::iampass::{fresh_nonce, sign};

pub(crate) fn b64url(b: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b)
}

fn unb64url(s: &str) -> Vec<u8> {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(s).unwrap()
}

fn now_s() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs() as i64
}

/// The vendor's client, driven one call at a time: `start` (authenticate_user), `status`
/// (Session.get_status) and `destroy` (Session.destroy). Each prints one JSON line.
const VENDOR: &str = r#"
import json, sys
from IAMPASS.authentication_api import AuthenticationAPI
from IAMPASS.authentication_method import AuthenticationMethod
from IAMPASS.session import Session
from IAMPASS.status import Status

action = sys.argv[1]
if action == "start":
    app, secret, user, methods, duration = sys.argv[2:7]
    ms = [AuthenticationMethod[m] for m in methods.split(",")] if methods else None
    s = AuthenticationAPI(app, secret).authenticate_user(
        user, authentication_methods=ms, duration_seconds=int(duration) if duration else None)
    print(json.dumps(None if s is None else {
        "status": s.session_status.name, "reason": s.failure_reason, "token": s.session_token,
        "secret": s.session_secret, "status_url": s.status_url, "logout_url": s.logout_url,
        "failed": s.failed, "in_progress": s.in_progress}))
else:
    d = json.loads(sys.argv[2])
    s = Session(session_status=Status[d["status"]], session_token=d["token"], session_secret=d["secret"],
                logout_url=d["logout_url"], status_url=d["status_url"])
    if action == "status":
        st = s.get_status()
        print(json.dumps({"status": st.name, "active": s.active, "failed": s.failed}))
    else:
        print(json.dumps({"destroyed": s.destroy()}))
"#;

/// True when python3 can import the vendor's package (.ci/run installs it).
pub(crate) fn vendor_here() -> bool {
    have("the IAMPASS Python package", Command::new("python3").args(["-c", "import IAMPASS.session"]))
}

/// Runs the vendor client against `base` (off the test's thread: the server answers on it).
pub(crate) async fn vendor(base: &str, args: Vec<String>) -> Value {
    let base = base.to_string();
    let out = tokio::task::spawn_blocking(move || {
        Command::new("python3").arg("-c").arg(VENDOR).args(&args).env("IAMPASS_SERVER", &base).output().unwrap()
    })
    .await
    .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_str(stdout.trim()).unwrap_or_else(|_| panic!("not JSON: {stdout}"))
}

/// A device: its id and its own key, the one the page would make.
pub(crate) struct Device {
    pub id: i64,
    key: EcdsaKeyPair,
    rng: SystemRandom,
    /// The software WebAuthn authenticator's key and credential id, once added.
    webauthn: Option<(EcdsaKeyPair, Vec<u8>, u32)>,
}

impl Device {
    fn new_key(alg: &'static ring::signature::EcdsaSigningAlgorithm) -> EcdsaKeyPair {
        let rng = SystemRandom::new();
        let pkcs8 = EcdsaKeyPair::generate_pkcs8(alg, &rng).unwrap();
        EcdsaKeyPair::from_pkcs8(alg, pkcs8.as_ref(), &rng).unwrap()
    }

    /// Registers through the link's POST, as the page does, with a key of its own.
    pub async fn register(app: &TestApp, link_path: &str) -> Device {
        let key = Self::new_key(&ECDSA_P256_SHA256_FIXED_SIGNING);
        let body = json!({"device_name": "Test phone", "public_key": b64url(key.public_key().as_ref())});
        let a = app.send("POST", link_path, &[], Some(("application/json", body.to_string().into_bytes()))).await;
        assert_eq!(a.status, 201, "{}", a.text);
        Device { id: a.json["device_id"].as_i64().unwrap(), key, rng: SystemRandom::new(), webauthn: None }
    }

    /// A call signed as src/dialect/device.rs describes it, with the given nonce and timestamp.
    async fn call_as(
        &self,
        app: &TestApp,
        method: &str,
        target: &str,
        body: Option<&Value>,
        nonce: &str,
        ts: i64,
    ) -> Answer {
        let bytes = body.map(|b| b.to_string().into_bytes()).unwrap_or_default();
        let digest: String = Sha256::digest(&bytes).iter().map(|b| format!("{b:02x}")).collect();
        let text = format!("gatehouse-device-v1\n{method}\n{target}\n{}\n{ts}\n{nonce}\n{digest}", self.id);
        let sig = b64url(self.key.sign(&self.rng, text.as_bytes()).unwrap().as_ref());
        let (id, ts) = (self.id.to_string(), ts.to_string());
        let headers = [
            ("X-Device-Id", id.as_str()),
            ("X-Device-Timestamp", ts.as_str()),
            ("X-Device-Nonce", nonce),
            ("X-Device-Signature", sig.as_str()),
        ];
        app.send(method, target, &headers, body.map(|_| ("application/json", bytes.clone()))).await
    }

    pub async fn call(&self, app: &TestApp, method: &str, target: &str, body: Option<&Value>) -> Answer {
        let nonce = b64url(&ring::rand::generate::<[u8; 18]>(&self.rng).unwrap().expose());
        self.call_as(app, method, target, body, &nonce, now_s()).await
    }

    /// The requests waiting for this device's user now.
    pub async fn pending(&self, app: &TestApp) -> Vec<Value> {
        let a = self.call(app, "GET", "/device/requests?wait=0", None).await;
        assert_eq!(a.status, 200, "{}", a.text);
        a.json["requests"].as_array().unwrap().clone()
    }

    pub async fn decide(&self, app: &TestApp, req: &Value, approve: bool) -> Answer {
        let body = json!({"approve": approve, "challenge": req["challenge"]});
        self.call(app, "POST", &format!("/device/requests/{}", req["id"]), Some(&body)).await
    }

    /// Adds a software platform authenticator through /device/webauthn, as navigator.credentials
    /// .create() would (origin and RP id are the server's public URL's).
    pub async fn add_webauthn(&mut self, app: &TestApp) -> Answer {
        let o = self.call(app, "GET", "/device/webauthn", None).await;
        assert_eq!(o.status, 200, "{}", o.text);
        let key = Self::new_key(&ECDSA_P256_SHA256_ASN1_SIGNING);
        let cred_id = ring::rand::generate::<[u8; 16]>(&self.rng).unwrap().expose().to_vec();
        let attestation = attestation_none(o.json["rp_id"].as_str().unwrap(), &cred_id, key.public_key().as_ref(), 0);
        let client_data = json!({"type": "webauthn.create", "challenge": o.json["challenge"], "origin": app.base});
        let body = json!({
            "challenge": o.json["challenge"],
            "client_data_json": b64url(client_data.to_string().as_bytes()),
            "attestation_object": b64url(&attestation),
        });
        let a = self.call(app, "POST", "/device/webauthn", Some(&body)).await;
        if a.status == 200 {
            self.webauthn = Some((key, cred_id, 0));
        }
        a
    }

    /// Approves a `facial` request with an assertion over its challenge; `verified` sets the UV flag.
    pub async fn approve_facial(&mut self, app: &TestApp, req: &Value, verified: bool) -> Answer {
        let (key, _, count) = self.webauthn.as_mut().expect("a WebAuthn credential");
        *count += 1;
        let rp_id = app.base.trim_start_matches("http://").split(':').next().unwrap();
        let mut auth_data = Sha256::digest(rp_id.as_bytes()).to_vec();
        auth_data.push(if verified { 0x05 } else { 0x01 });
        auth_data.extend_from_slice(&count.to_be_bytes());
        let client_data =
            json!({"type": "webauthn.get", "challenge": req["challenge"], "origin": app.base}).to_string().into_bytes();
        let mut signed = auth_data.clone();
        signed.extend_from_slice(&Sha256::digest(&client_data));
        let sig = key.sign(&self.rng, &signed).unwrap();
        let body = json!({"approve": true, "challenge": req["challenge"], "webauthn": {
            "client_data_json": b64url(&client_data),
            "authenticator_data": b64url(&auth_data),
            "signature": b64url(sig.as_ref()),
        }});
        self.call(app, "POST", &format!("/device/requests/{}", req["id"]), Some(&body)).await
    }
}

fn cbor(v: &ciborium::value::Value) -> Vec<u8> {
    let mut out = Vec::new();
    ciborium::ser::into_writer(v, &mut out).unwrap();
    out
}

/// An attestation object of format "none", as a platform authenticator makes it: user present
/// and verified, credential `cred_id` with the P-256 `point` (uncompressed) as its COSE key.
pub fn attestation_none(rp_id: &str, cred_id: &[u8], point: &[u8], count: u32) -> Vec<u8> {
    let cose = cbor(&ciborium::value::Value::Map(vec![
        (1.into(), 2.into()),
        (3.into(), (-7).into()),
        ((-1).into(), 1.into()),
        ((-2).into(), ciborium::value::Value::Bytes(point[1..33].to_vec())),
        ((-3).into(), ciborium::value::Value::Bytes(point[33..].to_vec())),
    ]));
    let mut auth_data = Sha256::digest(rp_id.as_bytes()).to_vec();
    auth_data.push(0x01 | 0x04 | 0x40);
    auth_data.extend_from_slice(&count.to_be_bytes());
    auth_data.extend_from_slice(&[0u8; 16]);
    auth_data.extend_from_slice(&(cred_id.len() as u16).to_be_bytes());
    auth_data.extend_from_slice(cred_id);
    auth_data.extend_from_slice(&cose);
    cbor(&ciborium::value::Value::Map(vec![
        ("fmt".into(), "none".into()),
        ("attStmt".into(), ciborium::value::Value::Map(vec![])),
        ("authData".into(), ciborium::value::Value::Bytes(auth_data)),
    ]))
}

/// A server with the application `shop` (its secret) and its user alice@example.com.
pub(crate) struct Shop {
    pub app: TestApp,
    pub secret: String,
}

impl Shop {
    pub async fn new(tweak: impl FnOnce(&mut gatehouse::config::Config)) -> Shop {
        let app = spawn_app_with(tweak).await;
        let secret = app.core.add_app("shop", None, &[Door::Iampass]).unwrap().expose().to_string();
        let shop = Shop { app, secret };
        let a = shop
            .signed("POST", "/management/add_users/shop", Some(json!({"users": ["alice@example.com", "bob"]})))
            .await;
        assert_eq!(a.status, 201, "{}", a.text);
        shop
    }

    /// A management call signed with the application's secret.
    pub async fn signed(&self, method: &str, target: &str, body: Option<Value>) -> Answer {
        let nonce = fresh_nonce();
        let ts = now_s().to_string();
        let url = format!("{}{target}", self.app.base.trim_start_matches("http://"));
        let auth = format!("hmac shop:{nonce}:{}", sign(&self.secret, &nonce, &url, &ts));
        let headers = [("Authentication", auth.as_str()), ("X-IAMPASS-Authentication-Timestamp", ts.as_str())];
        self.app.send(method, target, &headers, body.map(|b| ("application/json", b.to_string().into_bytes()))).await
    }

    /// The path of a fresh registration link for `user` (form-encoded in the path).
    pub async fn link(&self, user: &str) -> String {
        let a = self.signed("GET", &format!("/management/device_registration_link/shop/{user}"), None).await;
        assert_eq!(a.status, 200, "{}", a.text);
        a.json["register_url"].as_str().unwrap().trim_start_matches(&self.app.base).to_string()
    }

    pub async fn device(&self, user: &str) -> Device {
        Device::register(&self.app, &self.link(user).await).await
    }

    /// authenticate_user through the vendor client.
    pub async fn start(&self, user: &str, methods: &str, duration: &str) -> Value {
        let args = ["start", "shop", &self.secret, user, methods, duration].map(str::to_string).to_vec();
        vendor(&self.app.base, args).await
    }

    pub async fn status(&self, session: &Value) -> Value {
        vendor(&self.app.base, vec!["status".into(), session.to_string()]).await
    }

    pub async fn destroy(&self, session: &Value) -> Value {
        vendor(&self.app.base, vec!["destroy".into(), session.to_string()]).await
    }

    fn events(&self) -> Vec<String> {
        self.app.core.audit_events(0, None).unwrap().into_iter().map(|e| e.event).collect()
    }
}

#[actix_web::test]
async fn the_vendor_client_signs_in_approved_on_the_device_then_logs_out() {
    if !vendor_here() {
        return;
    }
    let shop = Shop::new(|_| {}).await;
    let device = shop.device("alice%40example.com").await;

    let s = shop.start("alice@example.com", "acceptance", "600").await;
    assert_eq!(s["status"], "pending", "{s}");
    assert_eq!(s["in_progress"], true);
    assert!(s["status_url"].as_str().unwrap().starts_with(&format!("{}/authentication/", shop.app.base)));
    assert_eq!(shop.status(&s).await["status"], "pending");

    let pending = device.pending(&shop.app).await;
    assert_eq!(pending.len(), 1, "{pending:?}");
    let req = &pending[0];
    assert_eq!(req["app_id"], "shop");
    assert_eq!(req["user_id"], "alice@example.com");
    assert_eq!(req["client"], "127.0.0.1", "the requesting address is shown");
    assert_eq!(req["methods"], json!(["acceptance"]));
    assert!(req["expires_in"].as_i64().unwrap() > 100, "the approval window is 120 s: {req}");

    let a = device.decide(&shop.app, req, true).await;
    assert_eq!((a.status, &a.json), (200, &json!({"success": true, "session_status": "active"})), "{}", a.text);
    let st = shop.status(&s).await;
    assert_eq!((st["status"].as_str(), st["active"].as_bool()), (Some("active"), Some(true)), "{st}");
    assert!(device.pending(&shop.app).await.is_empty(), "an answered request waits no more");
    let lasts = "SELECT count(*) FROM auth_sessions WHERE status = 'active' AND expires_at - decided_at = 600000";
    assert_eq!(shop.app.count(lasts), 1, "the session lasts duration_seconds from its approval");

    assert_eq!(shop.destroy(&s).await, json!({"destroyed": true}));
    assert_eq!(shop.status(&s).await["status"], "closed");
    assert_eq!(shop.destroy(&s).await, json!({"destroyed": true}), "a second logout changes nothing");
    assert_eq!(shop.status(&s).await["status"], "closed", "closed for good");

    let events = shop.events();
    for e in ["signin_started", "signin_approved", "signin_closed"] {
        assert_eq!(events.iter().filter(|x| *x == e).count(), 1, "{e} in {events:?}");
    }
    if !on_postgres() {
        // The session's secret is in no row: it is derived from the token, never stored.
        let secret = s["secret"].as_str().unwrap();
        assert_eq!(secret.len(), 64);
        let db = shop.app.db();
        let found: i64 = db
            .query_row(
                "SELECT count(*) FROM auth_sessions WHERE instr(lower(hex(challenge)), ?1) OR instr(token, ?1)
                     OR instr(methods, ?1)",
                [secret],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(found, 0);
        assert_eq!(shop.app.count("SELECT count(*) FROM auth_sessions WHERE status = 'closed'"), 1);
    }
}

#[actix_web::test]
async fn a_refusal_on_the_device_fails_the_session() {
    if !vendor_here() {
        return;
    }
    let shop = Shop::new(|_| {}).await;
    let device = shop.device("alice%40example.com").await;
    let s = shop.start("alice@example.com", "", "").await;
    assert_eq!(s["status"], "pending", "{s}");
    let pending = device.pending(&shop.app).await;
    assert_eq!(pending[0]["methods"], json!(["acceptance"]), "acceptance when no method is asked");
    let a = device.decide(&shop.app, &pending[0], false).await;
    assert_eq!(a.json, json!({"success": true, "session_status": "cancelled"}), "{}", a.text);
    let st = shop.status(&s).await;
    assert_eq!((st["status"].as_str(), st["failed"].as_bool()), (Some("cancelled"), Some(true)), "{st}");
    let a = device.decide(&shop.app, &pending[0], true).await;
    assert_eq!(a.status, 410, "a refused request cannot be approved after: {}", a.text);
    assert_eq!(shop.status(&s).await["status"], "cancelled");
    assert!(shop.events().contains(&"signin_refused".to_string()));
}

#[actix_web::test]
async fn a_request_nobody_answers_times_out() {
    if !vendor_here() {
        return;
    }
    let shop = Shop::new(|c| c.iampass.approval_window = gatehouse::config::Seconds(Duration::from_secs(1))).await;
    let device = shop.device("alice%40example.com").await;
    let s = shop.start("alice@example.com", "acceptance", "").await;
    let pending = device.pending(&shop.app).await;
    assert_eq!(pending.len(), 1);
    actix_web::rt::time::sleep(Duration::from_millis(2100)).await;
    let st = shop.status(&s).await;
    assert_eq!((st["status"].as_str(), st["failed"].as_bool()), (Some("timeout"), Some(true)), "{st}");
    assert!(device.pending(&shop.app).await.is_empty());
    assert_eq!(device.decide(&shop.app, &pending[0], true).await.status, 410, "too late to approve");
    assert_eq!(shop.status(&s).await["status"], "timeout");
    assert_eq!(shop.events().iter().filter(|e| *e == "signin_timeout").count(), 1);
}

#[actix_web::test]
async fn a_sign_in_not_started_says_why() {
    if !vendor_here() {
        return;
    }
    let shop = Shop::new(|_| {}).await;
    let not_started = |s: &Value, why: &str| {
        assert_eq!(s["status"], "failed", "{s}");
        assert!(s["reason"].as_str().unwrap().contains(why), "{s}");
        assert!(s["token"].is_null());
    };
    not_started(&shop.start("nobody", "acceptance", "").await, "no such user");
    not_started(&shop.start("alice@example.com", "acceptance", "").await, "no registered device");
    let _device = shop.device("alice%40example.com").await;
    not_started(&shop.start("alice@example.com", "facial", "").await, "face or fingerprint");
    not_started(&shop.start("alice@example.com", "acceptance", "10").await, "duration_seconds");
    not_started(&shop.start("alice@example.com", "acceptance", "86401").await, "duration_seconds");
    assert_eq!(shop.start("alice@example.com", "acceptance,device", "86400").await["status"], "pending");

    // The wire as the client sees it: 200, the envelope, the reason.
    let a =
        shop.signed("POST", "/authentication/authenticate_user/shop/alice%40example.com?methods=retina", None).await;
    assert_eq!(a.status, 200);
    assert_eq!(a.content_type, "application/json");
    assert_eq!(a.json["authentication_status"]["authenticated"], false);
    assert!(a.json["authentication_status"]["reason"].as_str().unwrap().contains("retina"), "{}", a.text);
    let started = shop.signed("POST", "/authentication/authenticate_user/shop/alice%40example.com", None).await;
    assert_eq!(started.status, 202, "{}", started.text);
    let keys: Vec<&String> = started.json["authentication_status"].as_object().unwrap().keys().collect();
    assert_eq!(
        keys,
        ["authenticated", "session_status", "session_token", "session_secret", "status_url", "logout_url"]
    );
    assert_eq!(shop.events().iter().filter(|e| *e == "signin_started").count(), 2, "only what started is an event");
}

#[actix_web::test]
async fn an_unknown_application_is_404_as_in_the_management_api() {
    let shop = Shop::new(|_| {}).await;
    shop.app.core.add_app("other", None, &[Door::Iampass]).unwrap();
    // Signed by `shop` for the path's `ghost`: refused before anything is looked up.
    let a = shop.signed("POST", "/authentication/authenticate_user/ghost/alice", None).await;
    assert_eq!(a.status, 401);
    // Signed by an application that does not exist.
    let nonce = fresh_nonce();
    let ts = now_s().to_string();
    let target = "/authentication/authenticate_user/ghost/alice";
    let url = format!("{}{target}", shop.app.base.trim_start_matches("http://"));
    let auth = format!("hmac ghost:{nonce}:{}", sign("whatever", &nonce, &url, &ts));
    let headers = [("Authentication", auth.as_str()), ("X-IAMPASS-Authentication-Timestamp", ts.as_str())];
    let a = shop.app.send("POST", target, &headers, None).await;
    assert_eq!((a.status, a.text.as_str()), (404, "Client Application ghost not found"));
}

#[actix_web::test]
async fn a_lost_device_fails_its_requests_and_answers_nothing_more() {
    if !vendor_here() {
        return;
    }
    let shop = Shop::new(|_| {}).await;
    let device = shop.device("alice%40example.com").await;
    let approved = shop.start("alice@example.com", "device", "").await;
    let req = device.pending(&shop.app).await.remove(0);
    assert_eq!(device.decide(&shop.app, &req, true).await.status, 200);
    let waiting = shop.start("alice@example.com", "device", "").await;
    assert_eq!(device.pending(&shop.app).await.len(), 1);

    let a = shop.signed("GET", "/management/lost_user_mobile_device/shop/alice%40example.com", None).await;
    assert_eq!(a.status, 200, "{}", a.text);
    assert_eq!(shop.status(&waiting).await["status"], "failed", "the waiting request fails");
    assert_eq!(shop.status(&approved).await["status"], "closed", "what the lost device approved ends");
    let a = device.call(&shop.app, "GET", "/device/requests?wait=0", None).await;
    assert_eq!(a.status, 403, "{}", a.text);
    assert_eq!(a.json["success"], false);
    assert_eq!(device.decide(&shop.app, &req, true).await.status, 403);
    let s = shop.start("alice@example.com", "acceptance", "").await;
    assert!(s["reason"].as_str().unwrap().contains("no registered device"), "{s}");
    assert!(shop.events().contains(&"signin_failed".to_string()));
}

#[actix_web::test]
async fn an_approval_binds_to_exactly_one_request_of_its_own_user() {
    if !vendor_here() {
        return;
    }
    let shop = Shop::new(|_| {}).await;
    let alice = shop.device("alice%40example.com").await;
    let bob = shop.device("bob").await;
    let s = shop.start("alice@example.com", "device", "").await;
    let req = alice.pending(&shop.app).await.remove(0);
    assert!(bob.pending(&shop.app).await.is_empty(), "bob's device does not see alice's request");
    assert_eq!(bob.decide(&shop.app, &req, true).await.status, 410, "nor can it answer it");

    let wrong = json!({"approve": true, "challenge": b64url(&[7u8; 32])});
    let a = alice.call(&shop.app, "POST", &format!("/device/requests/{}", req["id"]), Some(&wrong)).await;
    assert_eq!(a.status, 400, "another challenge: {}", a.text);

    // A replayed call, a stale one, one signed by another key, one with no signature.
    let body = json!({"approve": true, "challenge": req["challenge"]});
    let target = format!("/device/requests/{}", req["id"]);
    let nonce = "replayed-nonce-0123456789";
    let old = alice.call_as(&shop.app, "GET", "/device/requests?wait=0", None, nonce, now_s()).await;
    assert_eq!(old.status, 200);
    let a = alice.call_as(&shop.app, "GET", "/device/requests?wait=0", None, nonce, now_s()).await;
    assert_eq!(a.status, 401, "a nonce is spent once: {}", a.text);
    let a = alice.call_as(&shop.app, "POST", &target, Some(&body), "stale-nonce-0123456789", now_s() - 900).await;
    assert_eq!(a.status, 401);
    let forged = Device { id: alice.id, ..Device::register(&shop.app, &shop.link("bob").await).await };
    assert_eq!(forged.decide(&shop.app, &req, true).await.status, 401, "signed by another key");
    let a = shop.app.send("POST", &target, &[("X-Device-Id", &alice.id.to_string())], None).await;
    assert_eq!(a.status, 401);
    assert_eq!(shop.status(&s).await["status"], "pending", "none of it answered the request");

    assert_eq!(alice.decide(&shop.app, &req, true).await.status, 200);
    assert_eq!(alice.decide(&shop.app, &req, false).await.status, 410, "answered once");
    assert_eq!(shop.status(&s).await["status"], "active");
}

#[actix_web::test]
async fn the_session_calls_need_the_sessions_own_secret() {
    if !vendor_here() {
        return;
    }
    let shop = Shop::new(|_| {}).await;
    let _device = shop.device("alice%40example.com").await;
    let s = shop.start("alice@example.com", "acceptance", "").await;
    let other = shop.start("alice@example.com", "acceptance", "").await;
    let mut forged = s.clone();
    forged["secret"] = other["secret"].clone();
    assert_eq!(shop.status(&forged).await["status"], "failed", "the client's answer to a 401");
    assert_eq!(shop.destroy(&forged).await, json!({"destroyed": false}));
    let mut swapped = s.clone();
    swapped["token"] = other["token"].clone();
    swapped["secret"] = other["secret"].clone();
    assert_eq!(shop.status(&swapped).await["status"], "failed", "the token signed is the path's");
    // The application's own secret does not open a session either.
    let path = s["status_url"].as_str().unwrap().trim_start_matches(&shop.app.base).to_string();
    let a = shop.signed("GET", &path, None).await;
    assert_eq!(a.status, 401, "{}", a.text);
    assert_eq!(shop.status(&s).await["status"], "pending");
}

#[actix_web::test]
async fn sign_ins_are_limited_per_user_and_per_application() {
    if !vendor_here() {
        return;
    }
    let shop = Shop::new(|c| {
        c.iampass.signins_per_user_minute = 2;
        c.iampass.signins_per_app_minute = 3;
    })
    .await;
    let _alice = shop.device("alice%40example.com").await;
    let _bob = shop.device("bob").await;
    let start = "/authentication/authenticate_user/shop/alice%40example.com";
    assert_eq!(shop.signed("POST", start, None).await.status, 202);
    assert_eq!(shop.signed("POST", start, None).await.status, 202);
    let a = shop.signed("POST", start, None).await;
    assert_eq!(a.status, 429, "{}", a.text);
    assert_eq!(a.headers.get("retry-after").unwrap(), "60");
    assert_eq!(a.json["status"], false);
    let bob = "/authentication/authenticate_user/shop/bob";
    assert_eq!(shop.signed("POST", bob, None).await.status, 202);
    assert_eq!(shop.signed("POST", bob, None).await.status, 429, "the application's limit");
    assert!(shop.start("bob", "", "").await.is_null(), "the vendor client answers None to a 429");
    assert_eq!(shop.app.count("SELECT count(*) FROM auth_sessions"), 3);
}

#[actix_web::test]
async fn a_waiting_device_learns_of_a_new_request_promptly() {
    let shop = Shop::new(|_| {}).await;
    let device = shop.device("alice%40example.com").await;
    let began = Instant::now();
    let first = device.call(&shop.app, "GET", "/device/requests?wait=20", None).await;
    assert_eq!(first.json["requests"], json!([]), "without `have`, answered at once: {}", first.text);
    let poll = device.call(&shop.app, "GET", "/device/requests?wait=20&have=", None);
    let start = async {
        actix_web::rt::time::sleep(Duration::from_millis(300)).await;
        shop.signed("POST", "/authentication/authenticate_user/shop/alice%40example.com", None).await
    };
    let (polled, started) = tokio::join!(poll, start);
    assert_eq!(started.status, 202, "{}", started.text);
    assert_eq!(polled.status, 200, "{}", polled.text);
    assert_eq!(polled.json["requests"].as_array().unwrap().len(), 1, "{}", polled.text);
    assert!(began.elapsed() < Duration::from_secs(15), "answered on the change, not at the end of the wait");
    // Told what it has, the poll waits; told something else, it answers at once.
    let id = polled.json["requests"][0]["id"].to_string();
    let a = device.call(&shop.app, "GET", "/device/requests?wait=0&have=999", None).await;
    assert_eq!(a.json["requests"][0]["id"].to_string(), id);
    assert_eq!(a.json["device"]["app_id"], "shop");
}

#[actix_web::test]
async fn facial_needs_a_user_verified_assertion_from_the_devices_authenticator() {
    if !vendor_here() {
        return;
    }
    let shop = Shop::new(|_| {}).await;
    let mut device = shop.device("alice%40example.com").await;
    let s = shop.start("alice@example.com", "facial", "").await;
    assert!(s["reason"].as_str().unwrap().contains("face or fingerprint"), "{s}");

    let a = device.add_webauthn(&shop.app).await;
    assert_eq!(a.status, 200, "{}", a.text);
    let s = shop.start("alice@example.com", "facial", "").await;
    assert_eq!(s["status"], "pending", "{s}");
    let req = device.pending(&shop.app).await.remove(0);
    let a = device.decide(&shop.app, &req, true).await;
    assert_eq!(a.status, 400, "no assertion, no facial approval: {}", a.text);
    let a = device.approve_facial(&shop.app, &req, true).await;
    assert_eq!(a.json, json!({"success": true, "session_status": "active"}), "{}", a.text);
    assert_eq!(shop.status(&s).await["status"], "active");

    // Without user verification (presence only), the approval fails the request.
    let s = shop.start("alice@example.com", "facial", "").await;
    let req = device.pending(&shop.app).await.remove(0);
    let a = device.approve_facial(&shop.app, &req, false).await;
    assert_eq!(a.status, 400, "{}", a.text);
    assert_eq!(shop.status(&s).await["status"], "failed");
    assert!(device.pending(&shop.app).await.is_empty(), "one try");
    assert!(shop.events().contains(&"device_webauthn_added".to_string()));
}

#[actix_web::test]
async fn a_webauthn_registration_must_answer_a_live_challenge_of_ours() {
    let shop = Shop::new(|_| {}).await;
    let device = shop.device("alice%40example.com").await;
    let body = json!({
        "challenge": b64url(&[0u8; 32]),
        "client_data_json": b64url(b"{}"),
        "attestation_object": b64url(&[0xa0]),
    });
    let a = device.call(&shop.app, "POST", "/device/webauthn", Some(&body)).await;
    assert_eq!(a.status, 400, "{}", a.text);
    assert!(a.json["error"].as_str().unwrap().contains("challenge"), "{}", a.text);
    let o = device.call(&shop.app, "GET", "/device/webauthn", None).await;
    assert_eq!(o.json["rp_id"], "127.0.0.1");
    assert_eq!(unb64url(o.json["challenge"].as_str().unwrap()).len(), 32);
    let body = json!({"challenge": o.json["challenge"], "client_data_json": b64url(b"{}"), "attestation_object": b64url(&[0xa0])});
    let a = device.call(&shop.app, "POST", "/device/webauthn", Some(&body)).await;
    assert_eq!(a.status, 400, "a live challenge, but no valid credential: {}", a.text);
    assert_eq!(shop.app.count("SELECT count(*) FROM devices WHERE webauthn_key IS NOT NULL"), 0);
}

/// The page in a real Chromium: registration makes the device's key, the device page shows the
/// request the vendor client started, and approves or refuses it.
#[actix_web::test]
async fn the_page_approves_and_refuses_sign_ins_in_a_real_browser() {
    use crate::browser::{browser_here, Browser};
    if !browser_here() || !vendor_here() {
        return;
    }
    let shop = Shop::new(|_| {}).await;
    let browser = Browser::start().await;
    browser.goto(&shop.app.url(&shop.link("alice%40example.com").await)).await;
    browser.click("#register").await;
    let said = browser.wait_text("#result", "approve your sign-ins").await;
    assert!(said.contains("it can now approve your sign-ins"), "{said}");
    assert_eq!(
        shop.app.count("SELECT count(*) FROM devices WHERE length(public_key) = 65"),
        1,
        "the page made a key and sent its public half"
    );
    browser.click("#open-device").await;
    assert!(browser.wait_text("#device-status", "Approve or refuse").await.contains("Approve or refuse"));
    assert!(browser.wait_text(".no-requests", "No sign-in").await.contains("No sign-in"));

    let s = shop.start("alice@example.com", "acceptance,device", "").await;
    assert_eq!(s["status"], "pending", "{s}");
    assert_eq!(browser.wait_text(".request .req-app", "shop").await, "shop", "the page learns of the request");
    assert!(browser.text(".request .req-client").await.contains("127.0.0.1"));
    browser.click(".request .approve").await;
    assert!(browser.wait_text("section.device p.message", "approved").await.contains("Sign-in approved."));
    assert_eq!(shop.status(&s).await["status"], "active");

    let s = shop.start("alice@example.com", "acceptance", "").await;
    assert_eq!(browser.wait_text(".request .req-methods", "acceptance").await, "acceptance");
    browser.click(".request .refuse").await;
    assert!(browser.wait_text("section.device p.message", "refused").await.contains("Sign-in refused."));
    assert_eq!(shop.status(&s).await["status"], "cancelled");

    // Reported lost, the device page says so and answers nothing more.
    let a = shop.signed("GET", "/management/lost_user_mobile_device/shop/alice%40example.com", None).await;
    assert_eq!(a.status, 200);
    browser.goto(&shop.app.url("/device")).await;
    assert!(browser.wait_text("section.device p.message", "reported lost").await.contains("reported lost"));
}

/// `facial` through Chrome's virtual platform authenticator: set up on the device page, then a
/// facial sign-in approved with user verification, and not approved without it. WebAuthn needs a
/// domain for its relying party: the server's public URL is http://localhost:<port>.
#[actix_web::test]
async fn facial_sign_ins_use_the_devices_face_or_fingerprint_in_a_real_browser() {
    use crate::browser::{browser_here, Browser};
    if !browser_here() || !vendor_here() {
        return;
    }
    let shop = Shop::new(|c| {
        let port = c.listen.rsplit(':').next().unwrap().to_string();
        c.public_url = format!("http://localhost:{port}");
    })
    .await;
    let link = shop.link("alice%40example.com").await;
    assert!(link.starts_with("http://localhost:"), "{link}");
    let browser = Browser::start().await;
    let authenticator = browser.add_platform_authenticator().await;
    browser.goto(&link).await;
    browser.click("#register").await;
    let said = browser.wait_text("#result", "approve your sign-ins").await;
    assert!(said.contains("it can now approve your sign-ins"), "{said}");
    browser.click("#open-device").await;
    let said = browser.wait_text(".webauthn", "not set up").await;
    assert!(said.contains("not set up"), "{said}: {}", browser.text("#devices").await);
    let s = shop.start("alice@example.com", "facial", "").await;
    assert!(s["reason"].as_str().unwrap().contains("face or fingerprint"), "refused before it is set up: {s}");

    browser.click(".setup-webauthn").await;
    let said = browser.wait_text("section.device p.message", "set up").await;
    assert_eq!(said, "Face or fingerprint set up.");
    assert_eq!(shop.app.count("SELECT count(*) FROM devices WHERE webauthn_key IS NOT NULL"), 1);

    let s = shop.start("alice@example.com", "facial", "").await;
    assert_eq!(s["status"], "pending", "{s}");
    browser.wait_text(".request .req-methods", "facial").await;
    browser.click(".request .approve").await;
    let said = browser.wait_text("section.device p.message", "approved").await;
    assert_eq!(said, "Sign-in approved.");
    assert_eq!(shop.status(&s).await["status"], "active");

    // The face is not recognised: the browser gives no assertion, nothing is approved.
    browser.set_user_verified(&authenticator, false).await;
    let s = shop.start("alice@example.com", "facial", "").await;
    browser.wait_text(".request .req-methods", "facial").await;
    browser.click(".request .approve").await;
    let said = browser.wait_text("section.device p.message", "not confirmed").await;
    assert!(said.contains("not confirmed"), "{said}");
    assert_eq!(shop.status(&s).await["status"], "pending", "still waiting: nothing was sent");
    browser.click(".request .refuse").await;
    assert!(browser.wait_text("section.device p.message", "refused").await.contains("Sign-in refused."));
    assert_eq!(shop.status(&s).await["status"], "cancelled");
}

#[actix_web::test]
async fn a_device_without_a_key_of_its_own_approves_acceptance_with_its_api_key() {
    if !vendor_here() {
        return;
    }
    let shop = Shop::new(|_| {}).await;
    let body = json!({"device_name": "Scripted phone"}).to_string().into_bytes();
    let r = shop.app.send("POST", &shop.link("alice%40example.com").await, &[], Some(("application/json", body))).await;
    assert_eq!(r.status, 201, "{}", r.text);
    let basic = |secret: &str| {
        let raw = format!("{}:{secret}", r.json["apikey"].as_str().unwrap());
        format!("Basic {}", base64::engine::general_purpose::STANDARD.encode(raw))
    };
    let good = basic(r.json["secretkey"].as_str().unwrap());

    let s = shop.start("alice@example.com", "device", "").await;
    assert!(s["reason"].as_str().unwrap().contains("can do device"), "no key, no device method: {s}");
    let s = shop.start("alice@example.com", "acceptance", "").await;
    assert_eq!(s["status"], "pending", "{s}");

    let a = shop.app.send("GET", "/device/requests?wait=0", &[("Authorization", &basic("wrong"))], None).await;
    assert_eq!(a.status, 401, "{}", a.text);
    let a = shop.app.send("GET", "/device/requests?wait=0", &[("Authorization", &good)], None).await;
    assert_eq!(a.status, 200, "{}", a.text);
    let req = a.json["requests"][0].clone();
    let a = shop.app.send("GET", "/device/webauthn", &[("Authorization", &good)], None).await;
    assert_eq!(a.status, 400, "a face needs a device key: {}", a.text);

    let decision = json!({"approve": true, "challenge": req["challenge"]}).to_string().into_bytes();
    let target = format!("/device/requests/{}", req["id"]);
    let a = shop.app.send("POST", &target, &[("Authorization", &good)], Some(("application/json", decision))).await;
    assert_eq!(a.json, json!({"success": true, "session_status": "active"}), "{}", a.text);
    assert_eq!(shop.status(&s).await["status"], "active");
    assert!(shop.events().contains(&"device_auth_failed".to_string()));
}

/// Blocking a user, or ending their membership, ends their IAMPASS sign-ins like every other
/// token, and both hold at start, approval and status (issue 24, item 2).
#[actix_web::test]
async fn blocking_or_ending_a_membership_ends_sign_ins_at_every_step() {
    if !vendor_here() {
        return;
    }
    let shop = Shop::new(|_| {}).await;
    let device = shop.device("alice%40example.com").await;
    let core = &shop.app.core;
    let approved = |s: Value| {
        let (shop, device) = (&shop, &device);
        async move {
            let pending = device.pending(&shop.app).await;
            let req = pending.iter().find(|r| r["id"].is_i64()).expect("a request").clone();
            assert_eq!(device.decide(&shop.app, &req, true).await.status, 200);
            assert_eq!(shop.status(&s).await["status"], "active");
            s
        }
    };

    // Blocked: the approved session closes, a waiting request fails, a new one is not started.
    let open = approved(shop.start("alice@example.com", "acceptance", "600").await).await;
    let waiting = shop.start("alice@example.com", "acceptance", "600").await;
    let req = device.pending(&shop.app).await.pop().expect("the waiting request");
    core.set_blocked("alice@example.com", true).unwrap();
    assert_eq!(shop.status(&open).await["status"], "closed", "the session approved before the block");
    assert_eq!(shop.status(&waiting).await["status"], "failed", "the request waiting at the block");
    assert_ne!(device.decide(&shop.app, &req, true).await.status, 200, "it cannot be approved any more");
    let s = shop.start("alice@example.com", "acceptance", "600").await;
    assert_eq!(s["status"], "failed", "no sign-in starts for a blocked user: {s}");
    assert!(device.pending(&shop.app).await.is_empty());

    // Unblocked, then the membership ends: the same, and a later grant brings no old device back.
    core.set_blocked("alice@example.com", false).unwrap();
    let open = approved(shop.start("alice@example.com", "acceptance", "600").await).await;
    let waiting = shop.start("alice@example.com", "acceptance", "600").await;
    assert_eq!(waiting["status"], "pending");
    core.revoke("alice@example.com", "shop").unwrap();
    assert_eq!(shop.status(&open).await["status"], "closed");
    assert_eq!(shop.status(&waiting).await["status"], "failed");
    assert_eq!(shop.start("alice@example.com", "acceptance", "600").await["status"], "failed");
    core.grant("alice@example.com", "shop").unwrap();
    let s = shop.start("alice@example.com", "acceptance", "600").await;
    assert_eq!(s["status"], "failed", "the old device was the membership's: {s}");
    assert_eq!(s["reason"], "the user has no registered device");
    let events = shop.events();
    assert!(events.iter().filter(|e| *e == "signin_failed").count() >= 2, "{events:?}");

    if !on_postgres() {
        // A block written behind the server's back (another node's, a hand edit): the checks at
        // approval and status hold by themselves.
        let device = shop.device("bob").await;
        let open = shop.start("bob", "acceptance", "600").await;
        let req = device.pending(&shop.app).await.pop().expect("a request");
        assert_eq!(device.decide(&shop.app, &req, true).await.status, 200);
        let waiting = shop.start("bob", "acceptance", "600").await;
        let req = device.pending(&shop.app).await.pop().expect("the waiting request");
        shop.app.db().execute("UPDATE users SET blocked = 1 WHERE login = 'bob'", []).unwrap();
        assert_eq!(shop.status(&open).await["status"], "closed");
        assert_eq!(shop.status(&waiting).await["status"], "failed");
        assert_ne!(device.decide(&shop.app, &req, true).await.status, 200);
    }
}
