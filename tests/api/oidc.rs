//! OpenID Connect, written from Core 1.0, Discovery 1.0, RFC 6749 (§4.1, §5.2, §10), RFC 7636
//! (PKCE), RFC 9207 (iss) and RP-Initiated Logout 1.0: a browser's way through the hosted pages
//! (cookies kept, redirects looked at one by one), the token endpoint as a relying party calls it,
//! and every id_token checked against the published JWKS.

use std::collections::HashMap;

use base64::Engine;
use gatehouse::core::apps::Door;
use gatehouse::core::oidc::ClientSettings;
use serde_json::{json, Value};

use crate::helpers::{spawn_app_with, Answer, TestApp};

const PASSWORD: &str = "a long enough password";
pub const REDIRECT: &str = "https://rp.example/callback";
const LOGGED_OUT: &str = "https://rp.example/logged-out";

fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

fn basic(id: &str, secret: &str) -> String {
    format!("Basic {}", base64::engine::general_purpose::STANDARD.encode(format!("{id}:{secret}")))
}

/// A PKCE pair: (verifier, S256 challenge).
pub fn pkce() -> (String, String) {
    let verifier = b64(&gatehouse::core::crypto::random_bytes::<32>());
    let challenge = b64(&gatehouse::core::crypto::sha256(verifier.as_bytes()));
    (verifier, challenge)
}

/// A browser: keeps cookies, follows nothing by itself.
pub struct Browser<'a> {
    pub app: &'a TestApp,
    http: awc::Client,
    pub cookies: HashMap<String, String>,
}

impl<'a> Browser<'a> {
    pub fn new(app: &'a TestApp) -> Browser<'a> {
        Browser { app, http: awc::Client::builder().disable_redirects().finish(), cookies: HashMap::new() }
    }

    fn cookie_header(&self) -> String {
        self.cookies.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join("; ")
    }

    fn keep(&mut self, a: &Answer) {
        for v in a.headers.get_all("set-cookie") {
            let c = v.to_str().unwrap();
            let (pair, attrs) = c.split_once(';').unwrap_or((c, ""));
            let (k, v) = pair.split_once('=').unwrap();
            if v.is_empty() || attrs.to_ascii_lowercase().contains("max-age=0") {
                self.cookies.remove(k);
            } else {
                self.cookies.insert(k.to_string(), v.to_string());
            }
        }
    }

    async fn read(
        res: awc::ClientResponse<
            impl futures_util::Stream<Item = Result<actix_web::web::Bytes, awc::error::PayloadError>> + Unpin,
        >,
    ) -> Answer {
        let mut res = res;
        let body = res.body().limit(1 << 20).await.unwrap();
        let text = String::from_utf8(body.to_vec()).unwrap();
        let json = serde_json::from_str(&text).unwrap_or(Value::Null);
        let content_type =
            res.headers().get("content-type").map(|v| v.to_str().unwrap().to_string()).unwrap_or_default();
        Answer { status: res.status().as_u16(), content_type, headers: res.headers().clone(), text, json }
    }

    /// GET a path of the server (or an absolute URL of it).
    pub async fn get(&mut self, path: &str) -> Answer {
        let url = if path.starts_with("http") { path.to_string() } else { self.app.url(path) };
        let res = self.http.get(url).insert_header(("Cookie", self.cookie_header())).send().await.unwrap();
        let a = Self::read(res).await;
        self.keep(&a);
        a
    }

    /// POST a form, as the page's own form would be (Origin of the server).
    pub async fn post(&mut self, path: &str, form: &[(&str, &str)]) -> Answer {
        self.post_from(path, form, Some(&self.app.base.clone())).await
    }

    pub async fn post_from(&mut self, path: &str, form: &[(&str, &str)], origin: Option<&str>) -> Answer {
        let headers: Vec<(&str, &str)> = origin.map(|o| ("Origin", o)).into_iter().collect();
        self.post_with(path, form, &headers).await
    }

    /// POST a form with these headers (and the browser's cookies).
    pub async fn post_with(&mut self, path: &str, form: &[(&str, &str)], headers: &[(&str, &str)]) -> Answer {
        let mut req = self.http.post(self.app.url(path)).insert_header(("Cookie", self.cookie_header()));
        for (k, v) in headers {
            req = req.insert_header((*k, *v));
        }
        let res = req.send_form(&form).await.unwrap();
        let a = Self::read(res).await;
        self.keep(&a);
        a
    }
}

pub fn location(a: &Answer) -> String {
    a.headers
        .get("location")
        .unwrap_or_else(|| panic!("no Location in {} {}", a.status, a.text))
        .to_str()
        .unwrap()
        .to_string()
}

/// The query parameters of a URL.
pub fn query(url: &str) -> HashMap<String, String> {
    let u = url::Url::parse(url).unwrap_or_else(|_| url::Url::parse(&format!("http://x{url}")).unwrap());
    u.query_pairs().map(|(k, v)| (k.into_owned(), v.into_owned())).collect()
}

/// The value of a hidden input of a page.
pub fn hidden(page: &str, name: &str) -> String {
    let marker = format!("name=\"{name}\" value=\"");
    let start = page.find(&marker).unwrap_or_else(|| panic!("no {name} in {page}")) + marker.len();
    let end = page[start..].find('"').unwrap();
    page[start..start + end].replace("&amp;", "&").replace("&quot;", "\"")
}

/// A server with a user `ann` (member of `rp`), a confidential first-party client `rp` and the
/// client's secret.
pub struct Op {
    pub app: TestApp,
    pub secret: String,
}

impl Op {
    pub async fn new(first_party: bool) -> Op {
        Self::with(first_party, |_| {}).await
    }

    pub async fn with(first_party: bool, tweak: impl FnOnce(&mut gatehouse::config::Config)) -> Op {
        let app = spawn_app_with(tweak).await;
        let secret = app
            .core
            .add_client(
                "rp",
                None,
                false,
                &[Door::Oauth],
                ClientSettings {
                    redirect_uris: Some(vec![REDIRECT.into()]),
                    post_logout_uris: Some(vec![LOGGED_OUT.into()]),
                    first_party: Some(first_party),
                    ..Default::default()
                },
            )
            .unwrap()
            .unwrap()
            .expose()
            .to_string();
        app.add_user("ann", PASSWORD, &["rp"]);
        Op { app, secret }
    }

    /// The authorization request of client `rp`, with `extra` parameters (a `scope` of its own
    /// replaces the default one).
    pub fn authorize_url(&self, extra: &str) -> String {
        let scope = if extra.contains("scope=") { "" } else { "&scope=openid%20profile%20email%20groups" };
        format!(
            "/oauth2/authorize?response_type=code&client_id=rp&redirect_uri={}{scope}&state=st-1&nonce=n-1{extra}",
            urlencode(REDIRECT)
        )
    }

    pub async fn token(&self, form: &[(&str, &str)]) -> Answer {
        let auth = basic("rp", &self.secret);
        let body = serde_urlencoded::to_string(form).unwrap().into_bytes();
        self.app
            .send(
                "POST",
                "/oauth2/token",
                &[("Authorization", &auth)],
                Some(("application/x-www-form-urlencoded", body)),
            )
            .await
    }

    pub async fn exchange(&self, code: &str) -> Answer {
        self.token(&[("grant_type", "authorization_code"), ("code", code), ("redirect_uri", REDIRECT)]).await
    }

    /// A whole sign-in of ann in `b`: authorize, the sign-in page, the password, back with a code.
    pub async fn sign_in(&self, b: &mut Browser<'_>, extra: &str) -> HashMap<String, String> {
        let a = b.get(&self.authorize_url(extra)).await;
        assert_eq!(a.status, 303, "{}", a.text);
        let to = location(&a);
        let a = if to.starts_with("/login") { self.password(b, &to, "ann", PASSWORD).await } else { a };
        let to = location(&a);
        let a = if to.starts_with("/oauth2/authorize/resume") { b.get(&to).await } else { a };
        assert_eq!(a.status, 303, "{}", a.text);
        let back = location(&a);
        assert!(back.starts_with(REDIRECT), "{back}");
        query(&back)
    }

    /// The sign-in page at `login` (a path), answered with a login and password.
    pub async fn password(&self, b: &mut Browser<'_>, login: &str, user: &str, password: &str) -> Answer {
        let page = b.get(login).await;
        assert_eq!(page.status, 200, "{}", page.text);
        let r = hidden(&page.text, "r");
        let csrf = hidden(&page.text, "csrf");
        b.post("/login", &[("r", &r), ("csrf", &csrf), ("login", user), ("password", password)]).await
    }

    /// The JWKS and a checked id_token's claims (signature, iss, aud).
    pub async fn verify(&self, id_token: &str) -> Value {
        use jsonwebtoken::{decode, decode_header, jwk::JwkSet, DecodingKey, Validation};
        let jwks: JwkSet = serde_json::from_str(&self.app.get("/oauth2/jwks").await.text).unwrap();
        let header = decode_header(id_token).unwrap();
        let jwk = jwks.find(header.kid.as_deref().unwrap()).expect("the id_token's kid is in the JWKS");
        let mut v = Validation::new(header.alg);
        v.set_audience(&["rp"]);
        v.set_issuer(&[&self.app.base]);
        decode::<Value>(id_token, &DecodingKey::from_jwk(jwk).unwrap(), &v).expect("a valid id_token").claims
    }
}

pub fn urlencode(s: &str) -> String {
    url::form_urlencoded::byte_serialize(s.as_bytes()).collect()
}

#[actix_web::test]
async fn discovery_names_every_endpoint_under_one_issuer() {
    let op = Op::new(true).await;
    let a = op.app.get("/.well-known/openid-configuration").await;
    assert_eq!(a.status, 200);
    assert_eq!(a.content_type, "application/json");
    let m = &a.json;
    let base = &op.app.base;
    assert_eq!(m["issuer"], json!(base));
    for (k, path) in [
        ("authorization_endpoint", "/oauth2/authorize"),
        ("token_endpoint", "/oauth2/token"),
        ("userinfo_endpoint", "/oauth2/userinfo"),
        ("jwks_uri", "/oauth2/jwks"),
        ("end_session_endpoint", "/oauth2/logout"),
        ("introspection_endpoint", "/oauth2/introspect"),
        ("revocation_endpoint", "/oauth2/revoke"),
    ] {
        assert_eq!(m[k], json!(format!("{base}{path}")), "{k}");
    }
    assert_eq!(m["response_types_supported"], json!(["code"]));
    assert_eq!(m["code_challenge_methods_supported"], json!(["S256"]));
    assert_eq!(m["authorization_response_iss_parameter_supported"], json!(true));
    assert_eq!(m["id_token_signing_alg_values_supported"][0], json!("RS256"));
    assert_eq!(m["subject_types_supported"], json!(["public"]));
    // RFC 8414's document is the same one.
    assert_eq!(op.app.get("/.well-known/oauth-authorization-server").await.json, a.json);
    let keys = op.app.get("/oauth2/jwks").await;
    assert_eq!(keys.status, 200);
    let algs: Vec<&str> = keys.json["keys"].as_array().unwrap().iter().map(|k| k["alg"].as_str().unwrap()).collect();
    for alg in ["RS256", "ES256", "EdDSA"] {
        assert!(algs.contains(&alg), "{alg} missing from {algs:?}");
    }
    assert!(keys.json["keys"].as_array().unwrap().iter().all(|k| k.get("d").is_none()), "a private part was published");
}

#[actix_web::test]
async fn the_code_flow_signs_ann_in_with_a_checked_id_token() {
    let op = Op::new(true).await;
    let mut b = Browser::new(&op.app);
    let q = op.sign_in(&mut b, "").await;
    assert_eq!(q["state"], "st-1");
    assert_eq!(q["iss"], op.app.base, "RFC 9207: the issuer on every authorization response");
    assert!(b.cookies.contains_key("gatehouse_sso"));
    let a = op.exchange(&q["code"]).await;
    assert_eq!(a.status, 200, "{}", a.text);
    assert_eq!(a.headers.get("cache-control").unwrap(), "no-store");
    assert_eq!(a.json["token_type"], "Bearer");
    assert!(a.json["expires_in"].as_i64().unwrap() > 0);
    assert!(a.json.get("refresh_token").is_none(), "no offline_access, no refresh token");
    let access = a.json["access_token"].as_str().unwrap();
    let claims = op.verify(a.json["id_token"].as_str().unwrap()).await;
    let ann = op.app.core.user_by_login("ann").unwrap();
    assert_eq!(claims["sub"], json!(ann.id.to_string()), "sub is the stable id, never the login");
    assert_eq!(claims["nonce"], "n-1");
    assert_eq!(claims["azp"], "rp");
    assert_eq!(claims["amr"], json!(["pwd"]));
    assert_eq!(claims["at_hash"], json!(gatehouse::core::oidc::at_hash("RS256", access)));
    assert!(claims["auth_time"].as_i64().unwrap() <= claims["iat"].as_i64().unwrap());
    assert_eq!(claims["sid"].as_str().unwrap().len(), 32);
    assert!(claims.get("email").is_none(), "claims stay in userinfo unless the client asks for them in the id_token");

    let auth = format!("Bearer {access}");
    let u = op.app.send("GET", "/oauth2/userinfo", &[("Authorization", &auth)], None).await;
    assert_eq!(u.status, 200, "{}", u.text);
    assert_eq!(u.json["sub"], claims["sub"]);
    assert_eq!(u.json["preferred_username"], "ann");
    assert_eq!(u.json["email"], "ann@example.com");
    assert_eq!(u.json["given_name"], "John");
    assert_eq!(u.json["groups"], json!(["rp"]));
    let p = op.app.send("POST", "/oauth2/userinfo", &[("Authorization", &auth)], None).await;
    assert_eq!(p.json, u.json, "userinfo answers POST as GET");
    // The memberships as they are now, in order.
    op.app.core.grant("ann", "forepaas").unwrap();
    let g = op.app.send("GET", "/oauth2/userinfo", &[("Authorization", &auth)], None).await;
    assert_eq!(g.json["groups"], json!(["forepaas", "rp"]), "{}", g.text);

    // Introspection sees the new token, with its scope.
    let i = op
        .app
        .send(
            "POST",
            "/oauth2/introspect",
            &[("Authorization", &basic("rp", &op.secret))],
            Some(("application/x-www-form-urlencoded", format!("token={access}").into_bytes())),
        )
        .await;
    assert_eq!(i.json["active"], true, "{}", i.text);
    assert_eq!(i.json["scope"], "openid profile email groups");
    assert_eq!(i.json["sub"], claims["sub"]);
}

#[actix_web::test]
async fn a_second_application_signs_in_without_a_password_until_prompt_or_max_age_asks() {
    let op = Op::new(true).await;
    let mut b = Browser::new(&op.app);
    op.sign_in(&mut b, "").await;
    // The SSO session answers at once.
    let a = b.get(&op.authorize_url("")).await;
    assert!(location(&a).starts_with(REDIRECT), "{}", location(&a));
    for extra in ["&prompt=login", "&max_age=0"] {
        std::thread::sleep(std::time::Duration::from_millis(1100));
        let a = b.get(&op.authorize_url(extra)).await;
        assert!(location(&a).starts_with("/login"), "{extra}: {}", location(&a));
        let q = op.sign_in(&mut b, extra).await;
        let t = op.exchange(&q["code"]).await;
        let claims = op.verify(t.json["id_token"].as_str().unwrap()).await;
        assert!(
            claims["auth_time"].as_i64().unwrap() >= claims["iat"].as_i64().unwrap() - 2,
            "{extra}: a fresh sign-in"
        );
    }
    // prompt=none with no session: back with login_required, state and iss.
    let mut stranger = Browser::new(&op.app);
    let a = stranger.get(&op.authorize_url("&prompt=none")).await;
    let q = query(&location(&a));
    assert_eq!(q["error"], "login_required");
    assert_eq!(q["state"], "st-1");
    assert_eq!(q["iss"], op.app.base);
}

#[actix_web::test]
async fn a_code_is_good_once_and_its_second_use_revokes_what_the_first_issued() {
    let op = Op::new(true).await;
    let mut b = Browser::new(&op.app);
    let q = op.sign_in(&mut b, "").await;
    let first = op.exchange(&q["code"]).await;
    assert_eq!(first.status, 200);
    let again = op.exchange(&q["code"]).await;
    assert_eq!(again.status, 400);
    assert_eq!(again.json["error"], "invalid_grant");
    let auth = format!("Bearer {}", first.json["access_token"].as_str().unwrap());
    let u = op.app.send("GET", "/oauth2/userinfo", &[("Authorization", &auth)], None).await;
    assert_eq!(u.status, 401, "the first exchange's token was revoked");
    assert!(u.headers.get("www-authenticate").unwrap().to_str().unwrap().contains("invalid_token"));
    assert_eq!(op.app.count("SELECT count(*) FROM audit WHERE event = 'code_reused'"), 1);
    // Another redirect_uri, or another client, does not exchange a live code.
    let q = op.sign_in(&mut b, "").await;
    let wrong = op
        .token(&[
            ("grant_type", "authorization_code"),
            ("code", &q["code"]),
            ("redirect_uri", "https://rp.example/other"),
        ])
        .await;
    assert_eq!(wrong.json["error"], "invalid_grant");
}

#[actix_web::test]
async fn pkce_is_required_of_public_clients_and_cannot_be_downgraded() {
    let op = Op::new(true).await;
    op.app
        .core
        .add_client(
            "spa",
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
    op.app.core.grant("ann", "spa").unwrap();
    let spa = |extra: &str| {
        format!(
            "/oauth2/authorize?response_type=code&client_id=spa&redirect_uri={}&scope=openid&state=s{extra}",
            urlencode(REDIRECT)
        )
    };
    let mut b = Browser::new(&op.app);
    let a = b.get(&spa("")).await;
    assert_eq!(query(&location(&a))["error"], "invalid_request", "a public client without PKCE");
    let (verifier, challenge) = pkce();
    let a = b.get(&spa(&format!("&code_challenge={challenge}&code_challenge_method=plain"))).await;
    assert_eq!(query(&location(&a))["error"], "invalid_request", "plain is refused");
    // A right S256 flow.
    let a = b.get(&spa(&format!("&code_challenge={challenge}&code_challenge_method=S256"))).await;
    let a = op.password(&mut b, &location(&a), "ann", PASSWORD).await;
    let a = b.get(&location(&a)).await;
    let code = query(&location(&a))["code"].clone();
    let form = |code: &str, v: &str| {
        serde_urlencoded::to_string([
            ("grant_type", "authorization_code"),
            ("code", code),
            ("redirect_uri", REDIRECT),
            ("client_id", "spa"),
            ("code_verifier", v),
        ])
        .unwrap()
        .into_bytes()
    };
    let post =
        |body: Vec<u8>| op.app.send("POST", "/oauth2/token", &[], Some(("application/x-www-form-urlencoded", body)));
    let (wrong_verifier, _) = pkce();
    let bad = post(form(&code, &wrong_verifier)).await;
    assert_eq!(bad.json["error"], "invalid_grant", "{}", bad.text);
    // The wrong verifier spent the code: an attacker's guess costs the code, never leaks tokens.
    let after = post(form(&code, &verifier)).await;
    assert_eq!(after.json["error"], "invalid_grant");
    // A confidential client's code issued without a challenge takes no verifier (downgrade).
    let q = op.sign_in(&mut b, "").await;
    let d = op
        .token(&[
            ("grant_type", "authorization_code"),
            ("code", &q["code"]),
            ("redirect_uri", REDIRECT),
            ("code_verifier", &verifier),
        ])
        .await;
    assert_eq!(d.json["error"], "invalid_grant");
    // A public client with a secret, or with none at all at a confidential client: invalid_client.
    let none = op
        .app
        .send(
            "POST",
            "/oauth2/token",
            &[],
            Some(("application/x-www-form-urlencoded", b"grant_type=client_credentials&client_id=rp".to_vec())),
        )
        .await;
    assert_eq!(none.status, 401);
    assert_eq!(none.json["error"], "invalid_client");
    assert!(none.headers.get("www-authenticate").is_some());
}

#[actix_web::test]
async fn an_unknown_client_or_an_unregistered_redirect_uri_is_a_page_never_a_redirect() {
    let op = Op::new(true).await;
    let mut b = Browser::new(&op.app);
    for url in [
        format!(
            "/oauth2/authorize?response_type=code&client_id=nobody&redirect_uri={}&scope=openid",
            urlencode(REDIRECT)
        ),
        format!(
            "/oauth2/authorize?response_type=code&client_id=rp&redirect_uri={}&scope=openid",
            urlencode("https://evil.example/cb")
        ),
        format!(
            "/oauth2/authorize?response_type=code&client_id=rp&redirect_uri={}&scope=openid",
            urlencode(&format!("{REDIRECT}/../x"))
        ),
        format!(
            "/oauth2/authorize?response_type=code&client_id=rp&redirect_uri={}&scope=openid",
            urlencode(&format!("{REDIRECT}?x=1"))
        ),
        format!(
            "/oauth2/authorize?response_type=code&client_id=rp&client_id=rp&redirect_uri={}&scope=openid",
            urlencode(REDIRECT)
        ),
        "/oauth2/authorize?response_type=code&client_id=rp&scope=openid".to_string(),
    ] {
        let a = b.get(&url).await;
        assert_eq!(a.status, 400, "{url}");
        assert!(a.headers.get("location").is_none(), "{url} redirected");
        assert!(a.content_type.starts_with("text/html"));
        assert!(a.headers.get("content-security-policy").unwrap().to_str().unwrap().contains("frame-ancestors 'none'"));
    }
    // Any other error goes back to the client, with state and iss.
    for (extra, error) in [
        ("&response_type=token", "invalid_request"),
        ("&prompt=bogus", "invalid_request"),
        ("&request=eyJ", "request_not_supported"),
    ] {
        let a = b.get(&op.authorize_url(extra)).await;
        let q = query(&location(&a));
        assert_eq!(q["error"], error, "{extra}");
        assert_eq!(q["state"], "st-1");
        assert_eq!(q["iss"], op.app.base);
    }
    let a = b
        .get(&format!(
            "/oauth2/authorize?response_type=token&client_id=rp&redirect_uri={}&scope=openid&state=x",
            urlencode(REDIRECT)
        ))
        .await;
    assert_eq!(query(&location(&a))["error"], "unsupported_response_type");
    let a = b
        .get(&format!(
            "/oauth2/authorize?response_type=code&client_id=rp&redirect_uri={}&scope=email",
            urlencode(REDIRECT)
        ))
        .await;
    assert_eq!(query(&location(&a))["error"], "invalid_scope");
}

#[actix_web::test]
async fn refresh_tokens_rotate_and_a_reused_one_ends_the_family() {
    let op = Op::new(true).await;
    let mut b = Browser::new(&op.app);
    let q = op.sign_in(&mut b, "&scope=openid%20offline_access").await;
    let t = op.exchange(&q["code"]).await;
    let r1 = t.json["refresh_token"].as_str().expect("offline_access gives a refresh token").to_string();
    let claims = op.verify(t.json["id_token"].as_str().unwrap()).await;
    let n = op.token(&[("grant_type", "refresh_token"), ("refresh_token", &r1)]).await;
    assert_eq!(n.status, 200, "{}", n.text);
    let r2 = n.json["refresh_token"].as_str().unwrap().to_string();
    assert_ne!(r1, r2);
    let again = op.verify(n.json["id_token"].as_str().unwrap()).await;
    assert_eq!(again["auth_time"], claims["auth_time"], "a refresh is not a new sign-in");
    assert_eq!(again["sub"], claims["sub"]);
    // A scope wider than the grant's is refused.
    let wide = op.token(&[("grant_type", "refresh_token"), ("refresh_token", &r2), ("scope", "openid email")]).await;
    assert_eq!(wide.json["error"], "invalid_scope");
    // The old one again: the family ends, the newest refresh token with it.
    let reuse = op.token(&[("grant_type", "refresh_token"), ("refresh_token", &r1)]).await;
    assert_eq!(reuse.json["error"], "invalid_grant");
    let after = op.token(&[("grant_type", "refresh_token"), ("refresh_token", &r2)]).await;
    assert_eq!(after.json["error"], "invalid_grant", "the thief's rotated token died with the family");
}

#[actix_web::test]
async fn client_credentials_give_a_client_its_own_token() {
    let op = Op::new(true).await;
    let a = op.token(&[("grant_type", "client_credentials"), ("scope", "reports:read")]).await;
    assert_eq!(a.status, 200, "{}", a.text);
    assert_eq!(a.json["scope"], "reports:read");
    assert!(a.json.get("id_token").is_none() && a.json.get("refresh_token").is_none());
    let token = a.json["access_token"].as_str().unwrap();
    let i = op
        .app
        .send(
            "POST",
            "/oauth2/introspect",
            &[("Authorization", &basic("rp", &op.secret))],
            Some(("application/x-www-form-urlencoded", format!("token={token}").into_bytes())),
        )
        .await;
    assert_eq!(i.json["active"], true);
    assert_eq!(i.json["sub"], "rp");
    assert_eq!(i.json["client_id"], "rp");
    assert!(i.json.get("username").is_none());
    // Not a person's token: userinfo refuses it.
    let u = op.app.send("GET", "/oauth2/userinfo", &[("Authorization", &format!("Bearer {token}"))], None).await;
    assert_eq!(u.status, 401);
    // Revoked, it is inactive.
    let r = op
        .app
        .send(
            "POST",
            "/oauth2/revoke",
            &[("Authorization", &basic("rp", &op.secret))],
            Some(("application/x-www-form-urlencoded", format!("token={token}").into_bytes())),
        )
        .await;
    assert_eq!(r.status, 200);
    let i = op
        .app
        .send(
            "POST",
            "/oauth2/introspect",
            &[("Authorization", &basic("rp", &op.secret))],
            Some(("application/x-www-form-urlencoded", format!("token={token}").into_bytes())),
        )
        .await;
    assert_eq!(i.json, json!({"active": false}));
    let bad = op.token(&[("grant_type", "password"), ("username", "ann"), ("password", PASSWORD)]).await;
    assert_eq!(bad.json["error"], "unsupported_grant_type");
    let wrong = op
        .app
        .send(
            "POST",
            "/oauth2/token",
            &[("Authorization", &basic("rp", "not the secret"))],
            Some(("application/x-www-form-urlencoded", b"grant_type=client_credentials".to_vec())),
        )
        .await;
    assert_eq!(wrong.status, 401);
    assert_eq!(wrong.json["error"], "invalid_client");
}

#[actix_web::test]
async fn consent_is_asked_once_per_client_and_scope_and_a_no_is_access_denied() {
    let op = Op::new(false).await;
    let mut b = Browser::new(&op.app);
    let a = b.get(&op.authorize_url("")).await;
    let a = op.password(&mut b, &location(&a), "ann", PASSWORD).await;
    let page = b.get(&location(&a)).await;
    assert_eq!(page.status, 200, "the consent page: {}", page.text);
    assert!(page.text.contains("Your email address"));
    let (r, csrf) = (hidden(&page.text, "r"), hidden(&page.text, "csrf"));
    let no = b.post("/consent", &[("r", &r), ("csrf", &csrf), ("decision", "deny")]).await;
    let q = query(&location(&no));
    assert_eq!(q["error"], "access_denied");
    assert_eq!(q["state"], "st-1");
    let page = b.get(&op.authorize_url("")).await;
    let (r, csrf) = (hidden(&page.text, "r"), hidden(&page.text, "csrf"));
    let yes = b.post("/consent", &[("r", &r), ("csrf", &csrf), ("decision", "allow")]).await;
    let a = b.get(&location(&yes)).await;
    assert!(query(&location(&a)).contains_key("code"));
    // Remembered: the same scopes go straight through; a wider set asks again.
    let a = b.get(&op.authorize_url("")).await;
    assert!(location(&a).starts_with(REDIRECT));
    let a = b.get(&op.authorize_url("&scope=openid%20offline_access")).await;
    assert_eq!(a.status, 200, "offline_access was not consented to");
    assert_eq!(op.app.count("SELECT count(*) FROM audit WHERE event = 'consent'"), 1);
}

#[actix_web::test]
async fn every_form_needs_its_csrf_token_and_our_origin() {
    let op = Op::new(true).await;
    let mut b = Browser::new(&op.app);
    let a = b.get(&op.authorize_url("")).await;
    let page = b.get(&location(&a)).await;
    let r = hidden(&page.text, "r");
    let csrf = hidden(&page.text, "csrf");
    let no_token = b.post("/login", &[("r", &r), ("login", "ann"), ("password", PASSWORD)]).await;
    assert_eq!(no_token.status, 403);
    let other_origin = b
        .post_from(
            "/login",
            &[("r", &r), ("csrf", &csrf), ("login", "ann"), ("password", PASSWORD)],
            Some("https://evil.example"),
        )
        .await;
    assert_eq!(other_origin.status, 403);
    let cross_site = b
        .post_with(
            "/login",
            &[("r", &r), ("csrf", &csrf), ("login", "ann"), ("password", PASSWORD)],
            &[("Sec-Fetch-Site", "cross-site")],
        )
        .await;
    assert_eq!(cross_site.status, 403, "a browser's cross-site POST");
    // Another browser (another CSRF cookie) cannot use this page's token.
    let mut other = Browser::new(&op.app);
    other.get("/login").await;
    let stolen = other.post("/login", &[("r", &r), ("csrf", &csrf), ("login", "ann"), ("password", PASSWORD)]).await;
    assert_eq!(stolen.status, 403);
    assert!(!b.cookies.contains_key("gatehouse_sso") && !other.cookies.contains_key("gatehouse_sso"));
    // A wrong password is the page again, with its message, counted as any failed sign-in. This
    // one as Chromium sends it under the pages' Referrer-Policy: no-referrer (Origin: null).
    let wrong = b
        .post_with(
            "/login",
            &[("r", &r), ("csrf", &csrf), ("login", "ann"), ("password", "not it at all")],
            &[("Origin", "null"), ("Sec-Fetch-Site", "same-origin")],
        )
        .await;
    assert_eq!(wrong.status, 401);
    assert!(wrong.text.contains("wrong"));
    assert_eq!(op.app.count("SELECT count(*) FROM audit WHERE event = 'login_failed'"), 1);
    // Pages cannot be framed.
    assert!(page.headers.get("content-security-policy").unwrap().to_str().unwrap().contains("frame-ancestors 'none'"));
    assert_eq!(page.headers.get("x-frame-options").unwrap(), "DENY");
    let cookie = page
        .headers
        .get_all("set-cookie")
        .map(|v| v.to_str().unwrap())
        .find(|c| c.starts_with("gatehouse_csrf"))
        .unwrap();
    assert!(cookie.contains("HttpOnly") && cookie.contains("SameSite=Lax"), "{cookie}");
}

#[actix_web::test]
async fn rp_initiated_logout_ends_the_session_and_goes_back_only_where_registered() {
    let op = Op::new(true).await;
    let mut b = Browser::new(&op.app);
    let q = op.sign_in(&mut b, "&scope=openid%20offline_access").await;
    let t = op.exchange(&q["code"]).await;
    let id_token = t.json["id_token"].as_str().unwrap().to_string();
    let refresh = t.json["refresh_token"].as_str().unwrap().to_string();
    let bad = b
        .get(&format!(
            "/oauth2/logout?id_token_hint={id_token}&post_logout_redirect_uri={}",
            urlencode("https://evil.example/")
        ))
        .await;
    assert_eq!(bad.status, 400);
    assert!(bad.headers.get("location").is_none());
    let page = b
        .get(&format!(
            "/oauth2/logout?id_token_hint={id_token}&post_logout_redirect_uri={}&state=bye",
            urlencode(LOGGED_OUT)
        ))
        .await;
    assert_eq!(page.status, 200, "{}", page.text);
    let csrf = hidden(&page.text, "csrf");
    let a = b
        .post(
            "/oauth2/logout",
            &[
                ("csrf", &csrf),
                ("id_token_hint", &id_token),
                ("post_logout_redirect_uri", LOGGED_OUT),
                ("state", "bye"),
            ],
        )
        .await;
    assert_eq!(a.status, 303, "{}", a.text);
    assert_eq!(location(&a), format!("{LOGGED_OUT}?state=bye"));
    assert!(!b.cookies.contains_key("gatehouse_sso"), "the SSO cookie is cleared");
    let a = b.get(&op.authorize_url("")).await;
    assert!(location(&a).starts_with("/login"), "signed out: a new sign-in");
    let r = op.token(&[("grant_type", "refresh_token"), ("refresh_token", &refresh)]).await;
    assert_eq!(r.json["error"], "invalid_grant", "the session's tokens ended with it");
}

#[actix_web::test]
async fn only_members_sign_in_unless_the_client_is_open_and_blocking_ends_everything() {
    let op = Op::new(true).await;
    op.app.add_user("bob", PASSWORD, &[]);
    let mut b = Browser::new(&op.app);
    let a = b.get(&op.authorize_url("")).await;
    let a = op.password(&mut b, &location(&a), "bob", PASSWORD).await;
    let a = b.get(&location(&a)).await;
    assert_eq!(query(&location(&a))["error"], "access_denied");
    op.app.core.edit_client("rp", ClientSettings { open: Some(true), ..Default::default() }).unwrap();
    let a = b.get(&op.authorize_url("")).await;
    let code = query(&location(&a))["code"].clone();
    let t = op.exchange(&code).await;
    assert_eq!(t.status, 200, "{}", t.text);
    let auth = format!("Bearer {}", t.json["access_token"].as_str().unwrap());
    assert_eq!(op.app.send("GET", "/oauth2/userinfo", &[("Authorization", &auth)], None).await.status, 200);
    op.app.core.set_blocked("bob", true).unwrap();
    assert_eq!(op.app.send("GET", "/oauth2/userinfo", &[("Authorization", &auth)], None).await.status, 401);
    let a = b.get(&op.authorize_url("")).await;
    assert!(location(&a).starts_with("/login"), "the SSO session ended with the block");
}

#[actix_web::test]
async fn claims_in_id_token_and_each_signing_alg() {
    let op = Op::new(true).await;
    for alg in ["ES256", "EdDSA", "RS256"] {
        op.app
            .core
            .edit_client(
                "rp",
                ClientSettings { signing_alg: Some(alg.into()), claims_in_id_token: Some(true), ..Default::default() },
            )
            .unwrap();
        let mut b = Browser::new(&op.app);
        let q = op.sign_in(&mut b, "").await;
        let t = op.exchange(&q["code"]).await;
        let id = t.json["id_token"].as_str().unwrap();
        assert_eq!(jsonwebtoken::decode_header(id).unwrap().alg, jsonwebtoken::Algorithm::from_str_alg(alg), "{alg}");
        let claims = op.verify(id).await;
        assert_eq!(claims["email"], "ann@example.com", "{alg}");
        assert_eq!(claims["preferred_username"], "ann");
        assert_eq!(claims["groups"], json!(["rp"]));
        assert_eq!(
            claims["at_hash"],
            json!(gatehouse::core::oidc::at_hash(alg, t.json["access_token"].as_str().unwrap()))
        );
    }
}

trait FromStrAlg {
    fn from_str_alg(s: &str) -> jsonwebtoken::Algorithm;
}

impl FromStrAlg for jsonwebtoken::Algorithm {
    fn from_str_alg(s: &str) -> jsonwebtoken::Algorithm {
        s.parse().unwrap()
    }
}
