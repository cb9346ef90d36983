//! The standard doors, written from RFC 7662 (introspection), RFC 7009 (revocation) and RFC 8414
//! (metadata), and forward auth for reverse proxies: one token of each dialect introspected,
//! revoked, and checked as a proxy would.

use base64::Engine;
use gatehouse::core::apps::Door;
use serde_json::{json, Value};

use crate::helpers::{set_cookie, Answer, TestApp};
use crate::signins::{vendor_here, Shop};

const PASSWORD: &str = "a long enough password";

fn basic(id: &str, secret: &str) -> String {
    format!("Basic {}", base64::engine::general_purpose::STANDARD.encode(format!("{id}:{secret}")))
}

/// A server with every kind of token: a ForePaaS token and a CMS session of john, an IQM access
/// and refresh token of ann (client `iqm-client`), and, when the vendor's client is here, an
/// approved IAMPASS session of alice (application `shop`). `gateway` is a trusted client.
struct World {
    shop: Shop,
    gateway: String,
    iqm_client: String,
    forepaas: String,
    cms: String,
    iqm_access: String,
    iqm_refresh: String,
    iampass: Option<String>,
}

impl World {
    async fn new(tweak: impl FnOnce(&mut gatehouse::config::Config)) -> World {
        let shop = Shop::new(|c| {
            c.oauth.trusted_clients = vec!["gateway".into()];
            tweak(c);
        })
        .await;
        let app = &shop.app;
        let gateway = basic("gateway", app.core.add_app("gateway", None, &[Door::Oauth]).unwrap().expose());
        let iqm_client =
            basic("iqm-client", app.core.add_app("iqm-client", None, &[Door::Iqm, Door::Oauth]).unwrap().expose());
        app.add_user("john", PASSWORD, &["forepaas", "cms"]);
        let a = app
            .post_json(
                "/iam/login",
                &json!({"login": "john", "password": PASSWORD, "app_id": "forepaas", "auth_mode": "forepaas_id_resource_owner"}),
            )
            .await;
        let forepaas = a.json["token"].as_str().unwrap().to_string();
        let body = json!({"username": "john", "password": PASSWORD}).to_string().into_bytes();
        let a = app.send("POST", "/cms/iap/auth/login", &[], Some(("application/json", body))).await;
        let cms =
            set_cookie(&a, "cmsSID").unwrap().split(';').next().unwrap().trim_start_matches("cmsSID=").to_string();
        let body = json!({"email": "ann@example.com", "password": PASSWORD}).to_string().into_bytes();
        let a = app
            .send("POST", "/api/v3/ua/sign-up", &[("Authorization", &iqm_client)], Some(("application/json", body)))
            .await;
        assert_eq!(a.status, 200, "{}", a.text);
        let iqm_access = a.json["data"]["access_token"].as_str().unwrap().to_string();
        let iqm_refresh = a.json["data"]["refresh_token"].as_str().unwrap().to_string();
        let iampass = if vendor_here() {
            let device = shop.device("alice%40example.com").await;
            let s = shop.start("alice@example.com", "acceptance", "").await;
            let req = device.pending(app).await.remove(0);
            assert_eq!(device.decide(app, &req, true).await.status, 200);
            Some(s["token"].as_str().unwrap().to_string())
        } else {
            None
        };
        World { shop, gateway, iqm_client, forepaas, cms, iqm_access, iqm_refresh, iampass }
    }

    fn app(&self) -> &TestApp {
        &self.shop.app
    }

    async fn door(&self, path: &str, auth: &str, form: &str) -> Answer {
        let body = Some(("application/x-www-form-urlencoded", form.as_bytes().to_vec()));
        self.app().send("POST", path, &[("Authorization", auth)], body).await
    }

    async fn introspect(&self, auth: &str, token: &str) -> Answer {
        self.door("/oauth2/introspect", auth, &format!("token={token}&token_type_hint=access_token")).await
    }

    async fn revoke(&self, auth: &str, token: &str) -> Answer {
        self.door("/oauth2/revoke", auth, &format!("token={token}")).await
    }

    /// Every token, with its type, its application and its user's login.
    fn all(&self) -> Vec<(&str, &'static str, &'static str, &'static str)> {
        let mut out = vec![
            (self.forepaas.as_str(), "forepaas", "forepaas", "john"),
            (self.cms.as_str(), "cms_session", "cms", "john"),
            (self.iqm_access.as_str(), "access_token", "iqm-client", "ann@example.com"),
            (self.iqm_refresh.as_str(), "refresh_token", "iqm-client", "ann@example.com"),
        ];
        if let Some(t) = &self.iampass {
            out.push((t.as_str(), "iampass_session", "shop", "alice@example.com"));
        }
        out
    }
}

fn assert_inactive(a: &Answer, what: &str) {
    assert_eq!(a.status, 200, "{what}: {}", a.text);
    assert_eq!(a.json, json!({"active": false}), "{what}: exactly this, nothing more");
}

#[actix_web::test]
async fn a_token_of_each_dialect_is_introspected_then_revoked() {
    let w = World::new(|_| {}).await;
    for (token, kind, app_id, login) in w.all() {
        let a = w.introspect(&w.gateway, token).await;
        assert_eq!(a.status, 200, "{kind}: {}", a.text);
        assert_eq!(a.content_type, "application/json");
        assert_eq!(a.headers.get("cache-control").unwrap(), "no-store");
        let d = &a.json;
        assert_eq!((d["active"].as_bool(), d["token_type"].as_str()), (Some(true), Some(kind)), "{d}");
        assert_eq!((d["client_id"].as_str(), d["username"].as_str()), (Some(app_id), Some(login)), "{d}");
        assert!(d["sub"].as_str().unwrap().parse::<i64>().is_ok(), "{d}");
        let (exp, iat) = (d["exp"].as_i64().unwrap(), d["iat"].as_i64().unwrap());
        assert!(exp > iat && iat > 1_700_000_000, "{d}");
        assert_eq!(d["scope"].as_str(), kind.ends_with("_token").then_some("read write"), "{d}");
    }
    // An application sees its own tokens only; the IQM client its own.
    assert_inactive(&w.introspect(&w.iqm_client, &w.forepaas).await, "another application's token");
    assert_eq!(w.introspect(&w.iqm_client, &w.iqm_access).await.json["active"], true);
    assert_inactive(&w.introspect(&w.gateway, "0123456789abcdef").await, "an unknown token");
    assert_inactive(&w.introspect(&w.gateway, &"ab".repeat(16)).await, "an unknown IAMPASS-looking token");

    // Revoking another application's token is refused and changes nothing.
    let a = w.revoke(&w.iqm_client, &w.forepaas).await;
    assert_eq!((a.status, a.json["error"].as_str()), (400, Some("unauthorized_client")), "{}", a.text);
    assert_eq!(w.introspect(&w.gateway, &w.forepaas).await.json["active"], true);

    for (token, kind, _, _) in w.all() {
        let a = w.revoke(&w.gateway, token).await;
        assert_eq!((a.status, a.text.as_str()), (200, ""), "{kind}");
        assert_inactive(&w.introspect(&w.gateway, token).await, kind);
        assert_eq!(w.revoke(&w.gateway, token).await.status, 200, "{kind}: revoking again is no error");
    }
    // Each dialect agrees.
    let app = w.app();
    let a = app.get(&format!("/iam/checkSession?app_id=forepaas&token={}", w.forepaas)).await;
    assert_eq!(a.status, 401);
    let cookie = format!("cmsSID={}", w.cms);
    assert_eq!(app.send("GET", "/cms/iap/users/current", &[("Cookie", &cookie)], None).await.status, 401);
    if let Some(t) = &w.iampass {
        assert_eq!(
            app.count(&format!("SELECT count(*) FROM auth_sessions WHERE token = '{t}' AND status = 'closed'")),
            1
        );
    }
    let events: Vec<String> = app.core.audit_events(0, None).unwrap().into_iter().map(|e| e.event).collect();
    assert!(events.iter().filter(|e| *e == "token_revoked").count() >= 4, "{events:?}");
    assert_eq!(w.revoke(&w.gateway, "never-issued").await.status, 200, "RFC 7009: unknown tokens are no error");
}

#[actix_web::test]
async fn revoking_a_refresh_token_ends_its_family() {
    let w = World::new(|_| {}).await;
    assert_eq!(w.revoke(&w.iqm_client, &w.iqm_refresh).await.status, 200);
    assert_inactive(&w.introspect(&w.iqm_client, &w.iqm_access).await, "the access token of the family");
    let body = json!({"grant_type": "refresh_token", "refresh_token": w.iqm_refresh}).to_string().into_bytes();
    let a = w.app().send("POST", "/api/v3/ua/oauth/token", &[], Some(("application/json", body))).await;
    assert_ne!(a.status, 200, "{}", a.text);
    // Revoking an access token leaves the rest of a new sign-in alone.
    let body =
        json!({"grantType": "password", "email": "ann@example.com", "password": PASSWORD}).to_string().into_bytes();
    let a = w
        .app()
        .send("POST", "/api/v3/ua/login", &[("Authorization", &w.iqm_client)], Some(("application/json", body)))
        .await;
    let (access, refresh) =
        (a.json["data"]["access_token"].as_str().unwrap(), a.json["data"]["refresh_token"].as_str().unwrap());
    assert_eq!(w.revoke(&w.iqm_client, access).await.status, 200);
    assert_inactive(&w.introspect(&w.iqm_client, access).await, "the revoked access token");
    assert_eq!(w.introspect(&w.iqm_client, refresh).await.json["active"], true);
}

/// A thief refreshes a stolen refresh token first; the victim's application then revokes the
/// one it holds, rotated out by now. That ends the thief's tokens too (issue 24, item 7).
#[actix_web::test]
async fn revoking_a_rotated_out_refresh_token_ends_the_thiefs_tokens() {
    let w = World::new(|_| {}).await;
    let body = json!({"grant_type": "refresh_token", "refresh_token": w.iqm_refresh}).to_string().into_bytes();
    let stolen = w.app().send("POST", "/api/v3/ua/oauth/token", &[], Some(("application/json", body))).await;
    assert_eq!(stolen.status, 200, "{}", stolen.text);
    let thiefs_access = stolen.json["access_token"].as_str().unwrap().to_string();
    let thiefs_refresh = stolen.json["refresh_token"].as_str().unwrap().to_string();
    assert_eq!(w.introspect(&w.iqm_client, &thiefs_access).await.json["active"], true);

    assert_eq!(w.revoke(&w.iqm_client, &w.iqm_refresh).await.status, 200);
    assert_inactive(&w.introspect(&w.iqm_client, &thiefs_access).await, "the thief's access token");
    assert_inactive(&w.introspect(&w.iqm_client, &thiefs_refresh).await, "the thief's refresh token");
    let events: Vec<String> = w.app().core.audit_events(0, None).unwrap().into_iter().map(|e| e.event).collect();
    assert!(events.contains(&"token_revoked".to_string()), "{events:?}");
}

#[actix_web::test]
async fn client_authentication_is_required_throttled_and_audited() {
    let w = World::new(|c| {
        c.throttle.account_failures = 3;
        c.throttle.delay = gatehouse::config::Seconds(std::time::Duration::ZERO);
    })
    .await;
    for auth in ["", "Bearer abc", "Basic !!!"] {
        let a = w.introspect(auth, &w.forepaas).await;
        assert_eq!((a.status, a.json["error"].as_str()), (401, Some("invalid_client")), "{auth:?}: {}", a.text);
        assert!(a.headers.get("www-authenticate").unwrap().to_str().unwrap().starts_with("Basic"));
    }
    let a = w.door("/oauth2/introspect", &w.gateway, "token_type_hint=access_token").await;
    assert_eq!((a.status, a.json["error"].as_str()), (400, Some("invalid_request")), "no token");
    let body = Some(("application/json", json!({"token": w.forepaas}).to_string().into_bytes()));
    let a = w.app().send("POST", "/oauth2/introspect", &[("Authorization", &w.gateway)], body).await;
    assert_eq!(a.status, 400, "RFC 7662 takes a form: {}", a.text);

    let wrong = basic("gateway", "not-the-secret");
    for _ in 0..2 {
        assert_eq!(w.introspect(&wrong, &w.forepaas).await.status, 401);
    }
    for _ in 0..2 {
        let a = w.introspect(&wrong, &w.forepaas).await;
        assert_eq!(a.status, 429, "the prober is held back: {}", a.text);
        assert!(a.headers.get("retry-after").is_some());
    }
    let events: Vec<String> = w.app().core.audit_events(0, None).unwrap().into_iter().map(|e| e.event).collect();
    assert_eq!(events.iter().filter(|e| *e == "client_auth_failed").count(), 3, "{events:?}");
    let a = w.introspect(&w.gateway, &w.forepaas).await;
    assert_eq!(a.json["active"], true, "the right secret is never refused by the count: {}", a.text);
    assert_eq!(w.introspect(&w.iqm_client, &w.iqm_access).await.json["active"], true, "other clients go on");
}

#[actix_web::test]
async fn an_introspection_is_not_a_use_of_the_token() {
    let w = World::new(|_| {}).await;
    let app = w.app();
    app.core.fold_uses().unwrap();
    let before = app.count("SELECT last_used_at FROM tokens WHERE kind = 'iam'");
    actix_web::rt::time::sleep(std::time::Duration::from_millis(20)).await;
    assert_eq!(w.introspect(&w.gateway, &w.forepaas).await.json["active"], true);
    app.core.fold_uses().unwrap();
    assert_eq!(app.count("SELECT last_used_at FROM tokens WHERE kind = 'iam'"), before, "not touched");
    let a = app.get(&format!("/iam/checkSession?app_id=forepaas&token={}", w.forepaas)).await;
    assert_eq!(a.status, 200);
    app.core.fold_uses().unwrap();
    assert!(app.count("SELECT last_used_at FROM tokens WHERE kind = 'iam'") > before, "a check is a use");
}

#[actix_web::test]
async fn the_metadata_names_the_doors() {
    let w = World::new(|_| {}).await;
    let a = w.app().get("/.well-known/oauth-authorization-server").await;
    assert_eq!(a.status, 200);
    let base = &w.app().base;
    let m: &Value = &a.json;
    assert_eq!(m["issuer"], json!(base));
    // The OpenID provider's document (tests/api/oidc.rs): the token endpoint is the provider's.
    assert_eq!(m["token_endpoint"], json!(format!("{base}/oauth2/token")));
    assert_eq!(m["introspection_endpoint"], json!(format!("{base}/oauth2/introspect")));
    assert_eq!(m["revocation_endpoint"], json!(format!("{base}/oauth2/revoke")));
    for k in ["introspection_endpoint", "revocation_endpoint"] {
        assert_eq!(m[format!("{k}_auth_methods_supported")], json!(["client_secret_basic"]), "{k}");
    }
}

#[actix_web::test]
async fn forward_auth_answers_who_for_a_live_bearer_or_cookie() {
    let w = World::new(|_| {}).await;
    let app = w.app();
    let verify = |headers: Vec<(&'static str, String)>, query: &'static str| async move {
        let h: Vec<(&str, &str)> = headers.iter().map(|(k, v)| (*k, v.as_str())).collect();
        app.send("GET", &format!("/auth/verify{query}"), &h, None).await
    };
    let who = |a: &Answer| {
        let h = |n: &str| a.headers.get(n).map(|v| v.to_str().unwrap().to_string());
        (a.status, h("x-auth-user"), h("x-auth-app"))
    };
    let bearer = |t: &str| vec![("Authorization", format!("Bearer {t}"))];
    let a = verify(bearer(&w.forepaas), "").await;
    assert_eq!(who(&a), (200, Some("john".into()), Some("forepaas".into())));
    assert!(a.headers.get("x-auth-user-id").unwrap().to_str().unwrap().parse::<i64>().is_ok());
    let a = verify(bearer(&w.iqm_access), "").await;
    assert_eq!(who(&a), (200, Some("ann@example.com".into()), Some("iqm-client".into())));
    let a = verify(vec![("Cookie", format!("cmsSID={}", w.cms))], "?app=cms").await;
    assert_eq!(who(&a), (200, Some("john".into()), Some("cms".into())));

    // The route's application must be the credential's.
    assert_eq!(verify(bearer(&w.forepaas), "?app=cms").await.status, 401);
    let mut h = bearer(&w.forepaas);
    h.push(("X-Auth-Require-App", "iqm-client".into()));
    assert_eq!(verify(h, "").await.status, 401);
    // Not an access credential, not live, nothing at all.
    assert_eq!(verify(bearer(&w.iqm_refresh), "").await.status, 401, "a refresh token opens nothing");
    assert_eq!(verify(bearer("0123"), "").await.status, 401);
    let a = verify(vec![], "").await;
    assert_eq!(a.status, 401);
    assert!(a.headers.get("www-authenticate").unwrap().to_str().unwrap().starts_with("Bearer"));
    assert!(a.headers.get("x-auth-user").is_none());
    // Any method (a proxy may pass the original one), and a revoked token is refused at once.
    let h = [("Authorization", format!("Bearer {}", w.forepaas))];
    let h: Vec<(&str, &str)> = h.iter().map(|(k, v)| (*k, v.as_str())).collect();
    assert_eq!(app.send("POST", "/auth/verify", &h, None).await.status, 200);
    assert_eq!(w.revoke(&w.gateway, &w.forepaas).await.status, 200);
    assert_eq!(verify(bearer(&w.forepaas), "").await.status, 401);
}

/// The proxy's `X-Auth-Require-App` and every `app` of the query (the proxy's and the client's,
/// since Caddy's `forward_auth` passes the client's query on) are all requirements: none widens
/// another, an empty one removes nothing, names that disagree open nothing.
#[actix_web::test]
async fn forward_auth_requirements_add_up_and_never_widen() {
    let w = World::new(|_| {}).await;
    let app = w.app();
    let bearer = format!("Bearer {}", w.forepaas);
    let bearer = bearer.as_str();
    let verify = |require: Option<&'static [u8]>, query: &'static str| async move {
        let mut req = app.http.get(app.url(&format!("/auth/verify{query}")));
        req = req.insert_header(("Authorization", bearer));
        if let Some(r) = require {
            req = req.insert_header(("X-Auth-Require-App", awc::http::header::HeaderValue::from_bytes(r).unwrap()));
        }
        req.send().await.unwrap().status().as_u16()
    };
    // The token is forepaas's; the proxy demands cms.
    assert_eq!(verify(Some(b"cms"), "").await, 401);
    assert_eq!(verify(Some(b"cms"), "?app=forepaas").await, 401, "the client's query cannot override the proxy");
    assert_eq!(verify(Some(b"cms"), "?app=").await, 401, "an empty app removes no requirement");
    assert_eq!(verify(Some(b"cms"), "?app=&app=forepaas").await, 401);
    assert_eq!(verify(None, "?app=forepaas&app=cms").await, 401, "names that disagree open nothing");
    assert_eq!(verify(None, "?app=cms&app=forepaas").await, 401);
    assert_eq!(verify(None, "?app=forepaas&app=%FF").await, 401, "a query that cannot be read opens nothing");
    assert_eq!(verify(Some(b"forepaas\xff"), "").await, 401, "a header that cannot be read opens nothing");
    assert_eq!(verify(Some("forepaas\u{e9}".as_bytes()), "").await, 401);
    // The token's own application, however often it is named, and empty names beside it.
    assert_eq!(verify(Some(b"forepaas"), "").await, 200);
    assert_eq!(verify(Some(b"forepaas"), "?app=").await, 200);
    assert_eq!(verify(Some(b"forepaas"), "?app=forepaas&app=").await, 200);
    assert_eq!(verify(Some(b""), "?app=forepaas").await, 200);
    assert_eq!(verify(None, "?app=").await, 200, "no name at all: any application");
    assert_eq!(verify(None, "?other=1").await, 200);
}
