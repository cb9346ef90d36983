//! Passkeys of the hosted sign-in: added on /account, then signing in alone or as the second
//! factor. A software authenticator (a P-256 key made here, answering as
//! navigator.credentials.create() and .get() answer) drives the plain form POSTs that
//! static/passkey.js makes; the last test runs the script itself in Chromium with its virtual
//! authenticator. WebAuthn takes a domain as its relying party, so the server's public URL is
//! http://localhost:<port>.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use ring::rand::SystemRandom;
use ring::signature::{EcdsaKeyPair, KeyPair, ECDSA_P256_SHA256_ASN1_SIGNING};
use serde_json::json;
use sha2::{Digest, Sha256};

use crate::helpers::Answer;
use crate::oidc::{hidden, location, query, Browser, Op, REDIRECT};
use crate::signins::attestation_none;

const PASSWORD: &str = "a long enough password";

fn b64url(b: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(b)
}

fn unb64url(s: &str) -> Vec<u8> {
    URL_SAFE_NO_PAD.decode(s).unwrap()
}

/// The value of the first `data-{name}` attribute of a page.
fn data(page: &str, name: &str) -> String {
    let marker = format!("data-{name}=\"");
    let start = page.find(&marker).unwrap_or_else(|| panic!("no data-{name} in {page}")) + marker.len();
    page[start..start + page[start..].find('"').unwrap()].to_string()
}

/// A server whose public URL is http://localhost:<port>, with ann (member of `rp`); the test
/// client is a trusted proxy, so that X-Forwarded-For names the caller's address.
async fn op() -> Op {
    Op::with(true, |c| {
        let port = c.listen.rsplit(':').next().unwrap().to_string();
        c.public_url = format!("http://localhost:{port}");
        c.http.trusted_proxies = vec!["127.0.0.1".parse().unwrap()];
        c.throttle.account_failures = 5;
        c.throttle.address_failures = 20;
    })
    .await
}

/// A form POST of `b` from client address `addr`.
async fn post_as(b: &mut Browser<'_>, addr: &str, path: &str, fields: &[(String, String)]) -> Answer {
    let base = b.app.base.clone();
    b.post_with(path, &refs(fields), &[("Origin", &base), ("X-Forwarded-For", addr)]).await
}

fn origin(op: &Op) -> String {
    op.app.core.config.public_url()
}

/// A platform authenticator in software: one discoverable ES256 credential.
pub(crate) struct Authenticator {
    key: EcdsaKeyPair,
    id: Vec<u8>,
    count: u32,
    /// The user handle the server gave at registration.
    handle: Vec<u8>,
    rng: SystemRandom,
}

impl Authenticator {
    pub(crate) fn new() -> Authenticator {
        let rng = SystemRandom::new();
        let pkcs8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_ASN1_SIGNING, &rng).unwrap();
        let key = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_ASN1_SIGNING, pkcs8.as_ref(), &rng).unwrap();
        let id = ring::rand::generate::<[u8; 16]>(&rng).unwrap().expose().to_vec();
        Authenticator { key, id, count: 0, handle: Vec::new(), rng }
    }

    /// navigator.credentials.create()'s answer to the account page's passkey form, as the form
    /// posts it (with the page's `csrf`).
    pub(crate) fn create(&mut self, page: &str, origin: &str, name: &str) -> Vec<(String, String)> {
        let challenge = data(page, "challenge");
        let rp_id = data(page, "rp-id");
        self.handle = unb64url(&data(page, "user-handle"));
        let attestation = attestation_none(&rp_id, &self.id, self.key.public_key().as_ref(), self.count);
        let client_data = json!({"type": "webauthn.create", "challenge": challenge, "origin": origin});
        vec![
            ("csrf".into(), hidden(page, "csrf")),
            ("challenge".into(), hidden(page, "challenge")),
            ("client_data".into(), b64url(client_data.to_string().as_bytes())),
            ("attestation".into(), b64url(&attestation)),
            ("name".into(), name.into()),
        ]
    }

    /// navigator.credentials.get()'s answer to the page's passkey form: its hidden inputs with
    /// the empty ones filled in. `verified`: the user-verified flag.
    pub(crate) fn get(&mut self, page: &str, origin: &str, verified: bool) -> Vec<(String, String)> {
        let challenge = data(page, "challenge");
        let rp_id = data(page, "rp-id");
        self.count += 1;
        let mut auth_data = Sha256::digest(rp_id.as_bytes()).to_vec();
        auth_data.push(if verified { 0x05 } else { 0x01 });
        auth_data.extend_from_slice(&self.count.to_be_bytes());
        let client_data =
            json!({"type": "webauthn.get", "challenge": challenge, "origin": origin}).to_string().into_bytes();
        let mut signed = auth_data.clone();
        signed.extend_from_slice(&Sha256::digest(&client_data));
        let sig = self.key.sign(&self.rng, &signed).unwrap();
        let form = &page[page.find("data-passkey=\"get\"").expect("a passkey form")..];
        let form = &form[..form.find("</form>").unwrap()];
        let mut fields: Vec<(String, String)> = ["r", "next", "p", "csrf", "challenge"]
            .iter()
            .filter(|n| form.contains(&format!("name=\"{n}\"")))
            .map(|n| (n.to_string(), hidden(form, n)))
            .collect();
        fields.extend([
            ("credential_id".into(), b64url(&self.id)),
            ("client_data".into(), b64url(&client_data)),
            ("authenticator_data".into(), b64url(&auth_data)),
            ("signature".into(), b64url(sig.as_ref())),
            ("user_handle".into(), b64url(&self.handle)),
        ]);
        fields
    }
}

pub(crate) fn refs(fields: &[(String, String)]) -> Vec<(&str, &str)> {
    fields.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect()
}

fn set(fields: &mut [(String, String)], name: &str, value: &str) {
    fields.iter_mut().find(|(k, _)| k == name).unwrap().1 = value.to_string();
}

/// Signed in with the password alone at /login?next=/account: the account page.
async fn account(b: &mut Browser<'_>) -> Answer {
    let page = b.get("/login?next=%2Faccount").await;
    let csrf = hidden(&page.text, "csrf");
    let a = b.post("/login", &[("next", "/account"), ("csrf", &csrf), ("login", "ann"), ("password", PASSWORD)]).await;
    assert_eq!(a.status, 303, "{}", a.text);
    let page = b.get("/account").await;
    assert_eq!(page.status, 200, "{}", page.text);
    page
}

/// ann with a passkey added through her account page, and the recovery codes it answered.
async fn with_passkey(op: &Op) -> (Authenticator, Vec<String>) {
    let mut b = Browser::new(&op.app);
    let page = account(&mut b).await;
    let mut auth = Authenticator::new();
    let added = b.post("/account/passkeys", &refs(&auth.create(&page.text, &origin(op), "Laptop"))).await;
    assert_eq!(added.status, 200, "{}", added.text);
    let codes: Vec<String> = added
        .text
        .match_indices("<li><code>")
        .map(|(i, m)| {
            let rest = &added.text[i + m.len()..];
            rest[..rest.find('<').unwrap()].to_string()
        })
        .collect();
    assert_eq!(codes.len(), 10, "the recovery codes come with the first passkey");
    (auth, codes)
}

fn count(op: &Op, sql: &str) -> i64 {
    op.app.count(sql)
}

#[actix_web::test]
async fn a_passkey_added_on_the_account_page_signs_in_alone_and_as_the_second_factor() {
    let op = op().await;
    let (mut auth, _) = with_passkey(&op).await;
    assert_eq!(count(&op, "SELECT count(*) FROM passkeys WHERE name = 'Laptop'"), 1);
    assert_eq!(count(&op, "SELECT count(*) FROM audit WHERE event = 'passkey_added'"), 1);

    // Alone, in a new browser, through an authorization request: the passkey says who.
    let mut b = Browser::new(&op.app);
    let a = b.get(&op.authorize_url("")).await;
    let to = location(&a);
    assert!(to.starts_with("/login?r="), "{to}");
    let page = b.get(&to).await;
    assert!(page.text.contains("data-passkey=\"get\""), "{}", page.text);
    assert_eq!(data(&page.text, "allow"), "", "any discoverable passkey");
    let fields = auth.get(&page.text, &origin(&op), true);
    let a = b.post("/login/passkey", &refs(&fields)).await;
    assert_eq!(a.status, 303, "{}", a.text);
    let a = b.get(&location(&a)).await;
    let back = location(&a);
    assert!(back.starts_with(REDIRECT), "{back}");
    let code = query(&back)["code"].clone();
    let tokens = op.exchange(&code).await;
    assert_eq!(tokens.status, 200, "{}", tokens.text);
    let id_token = tokens.json["id_token"].as_str().unwrap();
    let claims: serde_json::Value =
        serde_json::from_slice(&URL_SAFE_NO_PAD.decode(id_token.split('.').nth(1).unwrap()).unwrap()).unwrap();
    assert_eq!(claims["amr"], json!(["hwk", "mfa"]), "{claims}");
    assert_eq!(claims["acr"], "2");
    assert_eq!(count(&op, "SELECT count(*) FROM audit WHERE event = 'passkey_signin'"), 1);

    // The same assertion again: good once.
    let again = Browser::new(&op.app).post("/login/passkey", &refs(&fields)).await;
    assert_ne!(again.status, 303, "{}", again.text);
    let mut same = b;
    let again = same.post("/login/passkey", &refs(&fields)).await;
    assert_eq!(again.status, 401, "a replay in the same browser: {}", again.text);
    assert!(again.text.contains("This passkey was not accepted"), "{}", again.text);

    // After the password, the passkey is the second factor (one of ann's is asked for).
    let mut b = Browser::new(&op.app);
    let asked = op.password(&mut b, &to, "ann", PASSWORD).await;
    assert_eq!(asked.status, 200, "{}", asked.text);
    assert!(asked.text.contains("action=\"/login/second-factor/passkey\""), "{}", asked.text);
    assert_eq!(data(&asked.text, "allow"), b64url(&auth.id));
    assert!(asked.text.contains("A recovery code (or use your passkey)"), "no TOTP: {}", asked.text);
    let a = b.post("/login/second-factor/passkey", &refs(&auth.get(&asked.text, &origin(&op), true))).await;
    assert_eq!(a.status, 303, "{}", a.text);
    let a = b.get(&location(&a)).await;
    let code = query(&location(&a))["code"].clone();
    let tokens = op.exchange(&code).await;
    let id_token = tokens.json["id_token"].as_str().unwrap();
    let claims: serde_json::Value =
        serde_json::from_slice(&URL_SAFE_NO_PAD.decode(id_token.split('.').nth(1).unwrap()).unwrap()).unwrap();
    assert_eq!(claims["amr"], json!(["pwd", "hwk"]), "{claims}");
}

#[actix_web::test]
async fn an_assertion_not_made_for_this_page_browser_user_or_origin_is_refused_and_held_back() {
    let op = op().await;
    let (mut auth, _) = with_passkey(&op).await;
    let mut b = Browser::new(&op.app);
    let page = b.get("/login?next=%2Faccount").await;
    let o = origin(&op);
    // Each from an address of its own, so that none is held back by the others.
    async fn refused(b: &mut Browser<'_>, fields: Vec<(String, String)>, n: u8) {
        let a = post_as(b, &format!("10.0.0.{n}"), "/login/passkey", &fields).await;
        assert_eq!(a.status, 401, "case {n}: {}", a.text);
    }
    // Another site's origin in the client data.
    refused(&mut b, auth.get(&page.text, "http://localhost.evil.example", true), 1).await;
    // No user verification (a touch, not the screen lock).
    refused(&mut b, auth.get(&page.text, &o, false), 2).await;
    // A credential the box does not know.
    let mut fields = auth.get(&page.text, &o, true);
    set(&mut fields, "credential_id", &b64url(b"not a credential of ours"));
    refused(&mut b, fields, 3).await;
    // A signature over something else.
    let mut fields = auth.get(&page.text, &o, true);
    set(&mut fields, "signature", &b64url(b"\x30\x06\x02\x01\x01\x02\x01\x01"));
    refused(&mut b, fields, 4).await;
    // Another user's handle.
    let mut fields = auth.get(&page.text, &o, true);
    set(&mut fields, "user_handle", &b64url(&[7u8; 16]));
    refused(&mut b, fields, 5).await;
    // A challenge this server never made, answered properly.
    let forged = page.text.replace(&data(&page.text, "challenge"), &b64url(&[1u8; 40]));
    refused(&mut b, auth.get(&forged, &o, true), 6).await;
    // The challenge of another browser's page: bound to that browser's cookie.
    let mut other = Browser::new(&op.app);
    let theirs = other.get("/login").await;
    let mut fields = auth.get(&theirs.text, &o, true);
    set(&mut fields, "csrf", &hidden(&page.text, "csrf"));
    refused(&mut b, fields, 7).await;
    assert_eq!(count(&op, "SELECT count(*) FROM audit WHERE event = 'passkey_failed'"), 7);
    assert_eq!(count(&op, "SELECT count(*) FROM audit WHERE event = 'passkey_signin'"), 0);

    // Without the page's CSRF token: refused before anything is checked.
    let mut fields = auth.get(&page.text, &o, true);
    set(&mut fields, "csrf", "x");
    assert_eq!(post_as(&mut b, "10.0.0.8", "/login/passkey", &fields).await.status, 403);
    assert_eq!(count(&op, "SELECT count(*) FROM audit WHERE event = 'passkey_failed'"), 7);

    // A guessing address is held back; ann, elsewhere, is not.
    let mut held = None;
    for _ in 0..20 {
        let mut fields = auth.get(&page.text, &o, true);
        set(&mut fields, "credential_id", &b64url(b"guess"));
        let a = post_as(&mut b, "10.6.6.6", "/login/passkey", &fields).await;
        if a.status == 429 {
            held = Some(a);
            break;
        }
        assert_eq!(a.status, 401, "{}", a.text);
    }
    let held = held.expect("the address is held back");
    assert!(held.headers.get("retry-after").is_some(), "{:?}", held.headers);
    let fields = auth.get(&page.text, &o, true);
    assert_eq!(post_as(&mut b, "10.6.6.6", "/login/passkey", &fields).await.status, 429, "it waits, right or wrong");
    let mut elsewhere = Browser::new(&op.app);
    let page = elsewhere.get("/login?next=%2Faccount").await;
    let a = post_as(&mut elsewhere, "10.9.8.7", "/login/passkey", &auth.get(&page.text, &o, true)).await;
    assert_eq!(a.status, 303, "the owner is not locked out: {}", a.text);
}

#[actix_web::test]
async fn a_blocked_user_s_passkey_signs_nobody_in() {
    let op = op().await;
    let (mut auth, _) = with_passkey(&op).await;
    op.app.core.set_blocked("ann", true).unwrap();
    let mut b = Browser::new(&op.app);
    let page = b.get("/login").await;
    let a = b.post("/login/passkey", &refs(&auth.get(&page.text, &origin(&op), true))).await;
    assert_eq!(a.status, 403, "{}", a.text);
    assert!(a.text.contains("This account is blocked"), "{}", a.text);
}

#[actix_web::test]
async fn a_registration_must_answer_this_users_challenge_in_this_browser() {
    let op = op().await;
    let mut b = Browser::new(&op.app);
    let page = account(&mut b).await;
    let o = origin(&op);
    let mut auth = Authenticator::new();

    // Made for another origin.
    let fields = auth.create(&page.text, "http://localhost.evil.example", "x");
    assert_eq!(b.post("/account/passkeys", &refs(&fields)).await.status, 400);
    // A challenge of another browser's account page (the same user, elsewhere).
    let mut other = Browser::new(&op.app);
    let theirs = account(&mut other).await;
    let mut fields = auth.create(&theirs.text, &o, "x");
    set(&mut fields, "csrf", &hidden(&page.text, "csrf"));
    assert_eq!(b.post("/account/passkeys", &refs(&fields)).await.status, 400);
    // A name with a control character.
    let fields = auth.create(&page.text, &o, "Lap\u{202e}top");
    assert_eq!(b.post("/account/passkeys", &refs(&fields)).await.status, 400);
    assert_eq!(count(&op, "SELECT count(*) FROM passkeys"), 0);
    // Without the CSRF token.
    let mut fields = auth.create(&page.text, &o, "x");
    set(&mut fields, "csrf", "x");
    assert_eq!(b.post("/account/passkeys", &refs(&fields)).await.status, 403);
    assert_eq!(count(&op, "SELECT count(*) FROM passkeys"), 0);

    // Good; the same credential again is refused.
    let fields = auth.create(&page.text, &o, "<b>Phone</b>");
    assert_eq!(b.post("/account/passkeys", &refs(&fields)).await.status, 200);
    let fields = auth.create(&page.text, &o, "again");
    assert_eq!(b.post("/account/passkeys", &refs(&fields)).await.status, 409);
    let page = b.get("/account").await;
    assert!(page.text.contains("&lt;b&gt;Phone&lt;/b&gt; (added"), "escaped: {}", page.text);
    assert_eq!(data(&page.text, "exclude"), b64url(&auth.id), "the authenticator is told not to make another");
}

#[actix_web::test]
async fn removing_the_last_passkey_needs_the_password_and_takes_the_recovery_codes_with_it() {
    let op = op().await;
    let (_auth, codes) = with_passkey(&op).await;
    // The password alone no longer signs in: the second factor is asked; a wrong code shows the
    // page again, passkey form and all; a recovery code works.
    let mut b = Browser::new(&op.app);
    let page = b.get("/login?next=%2Faccount").await;
    let csrf = hidden(&page.text, "csrf");
    let asked =
        b.post("/login", &[("next", "/account"), ("csrf", &csrf), ("login", "ann"), ("password", PASSWORD)]).await;
    assert!(asked.text.contains("action=\"/login/second-factor\""), "{}", asked.text);
    let (p, csrf) = (hidden(&asked.text, "p"), hidden(&asked.text, "csrf"));
    let wrong = b.post("/login/second-factor", &[("p", &p), ("csrf", &csrf), ("code", "00000-00000")]).await;
    assert_eq!(wrong.status, 401, "{}", wrong.text);
    assert!(wrong.text.contains("action=\"/login/second-factor/passkey\""), "{}", wrong.text);
    let ok = b.post("/login/second-factor", &[("p", &p), ("csrf", &csrf), ("code", &codes[0])]).await;
    assert_eq!(ok.status, 303, "{}", ok.text);
    let page = b.get("/account").await;
    assert!(page.text.contains("your passkeys are your second factor"), "{}", page.text);
    assert!(page.text.contains("<strong id=\"recovery-left\">9</strong>"), "{}", page.text);

    let id = hidden(&page.text, "passkey");
    let csrf = hidden(&page.text, "csrf");
    let refused =
        b.post("/account/passkeys/remove", &[("csrf", &csrf), ("passkey", &id), ("password", "not it")]).await;
    assert_eq!(refused.status, 401, "{}", refused.text);
    assert_eq!(count(&op, "SELECT count(*) FROM passkeys"), 1);
    let removed =
        b.post("/account/passkeys/remove", &[("csrf", &csrf), ("passkey", &id), ("password", PASSWORD)]).await;
    assert_eq!(removed.status, 303, "{}", removed.text);
    assert_eq!(location(&removed), "/account?done=passkey-removed");
    assert_eq!(count(&op, "SELECT count(*) FROM passkeys"), 0);
    assert_eq!(count(&op, "SELECT count(*) FROM recovery_codes"), 0, "the codes go with the last second factor");
    assert_eq!(count(&op, "SELECT count(*) FROM audit WHERE event = 'passkey_removed'"), 1);
    let again = b.post("/account/passkeys/remove", &[("csrf", &csrf), ("passkey", &id), ("password", PASSWORD)]).await;
    assert_eq!(again.status, 404, "{}", again.text);
    let mut c = Browser::new(&op.app);
    account(&mut c).await;
}

#[actix_web::test]
async fn a_server_whose_public_url_is_an_address_offers_no_passkeys() {
    let op = Op::new(true).await;
    let mut b = Browser::new(&op.app);
    let page = b.get("/login").await;
    assert!(!page.text.contains("data-passkey"), "{}", page.text);
    let page = account(&mut b).await;
    assert!(page.text.contains("id=\"passkey-impossible\""), "{}", page.text);
}

/// static/passkey.js in Chromium with its virtual platform authenticator: a passkey added on the
/// account page, then signing in with it alone, then as the second factor after the password,
/// then refused when the screen lock fails.
#[actix_web::test]
async fn passkeys_work_in_a_real_browser_through_the_pages_script() {
    use crate::browser::{browser_here, Browser as Chromium};
    if !browser_here() {
        return;
    }
    let op = op().await;
    let base = origin(&op);
    let chromium = Chromium::start().await;
    let authenticator = chromium.add_platform_authenticator().await;
    let sign_out = || async {
        chromium.goto(&format!("{base}/oauth2/logout")).await;
        chromium.click("#logout").await;
        chromium.wait_text("main", "signed out").await;
    };

    chromium.goto(&format!("{base}/login?next=%2Faccount")).await;
    chromium.type_into("#login", "ann").await;
    chromium.type_into("#password", PASSWORD).await;
    chromium.click("#submit").await;
    assert_eq!(chromium.wait_text("#login", "ann").await, "ann");
    chromium.type_into("#passkey-name", "Chromium").await;
    chromium.click("#passkey-add").await;
    let said = chromium.wait_text("main", "The passkey is added").await;
    assert!(said.contains("The passkey is added"), "{said}");
    assert_eq!(count(&op, "SELECT count(*) FROM passkeys WHERE name = 'Chromium'"), 1);

    // Alone: the discoverable credential says who.
    sign_out().await;
    chromium.goto(&format!("{base}/login?next=%2Faccount")).await;
    chromium.click("#passkey-form-button").await;
    let said = chromium.wait_text("#sessions", "second factor").await;
    assert!(said.contains("with a password and a second factor"), "{said}");
    assert_eq!(count(&op, "SELECT count(*) FROM audit WHERE event = 'passkey_signin'"), 1);

    // After the password.
    sign_out().await;
    chromium.goto(&format!("{base}/login?next=%2Faccount")).await;
    chromium.type_into("#login", "ann").await;
    chromium.type_into("#password", PASSWORD).await;
    chromium.click("#submit").await;
    // The sign-in page has a passkey button too: wait for the second-factor page's.
    let said = chromium.wait_text("h1", "second factor").await;
    assert!(said.contains("second factor"), "{said}");
    chromium.click("#passkey-form-button").await;
    assert_eq!(chromium.wait_text("#login", "ann").await, "ann");
    assert_eq!(count(&op, "SELECT count(*) FROM audit WHERE event = 'passkey_signin'"), 2);

    // The screen lock fails: no assertion, the page says so, nobody is signed in.
    sign_out().await;
    chromium.set_user_verified(&authenticator, false).await;
    chromium.goto(&format!("{base}/login?next=%2Faccount")).await;
    chromium.click("#passkey-form-button").await;
    let said = chromium.wait_text(".passkey-status", "No passkey was used").await;
    assert!(said.contains("No passkey was used"), "{said}");
    assert_eq!(count(&op, "SELECT count(*) FROM audit WHERE event = 'passkey_signin'"), 2);
}
