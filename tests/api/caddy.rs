//! README's "Behind a reverse proxy" Caddy block, as printed, in Debian's real caddy: the site
//! serves only with a live token of its application, the application behind it learns who, and
//! nothing a client sends (its own X-Auth-* headers, an `?app=` of its own) changes that.

use gatehouse::core::apps::Door;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use actix_web::{web, App, HttpRequest, HttpServer};
use serde_json::json;

use crate::helpers::{free_port, have, readme_block, system_binary, KillOnDrop};

const PASSWORD: &str = "a long enough password";

#[actix_web::test]
async fn the_readme_caddy_block_protects_a_site_in_real_caddy() {
    if !have("caddy", Command::new(system_binary("/usr/bin/caddy")).arg("version")) {
        return;
    }
    let app = crate::helpers::spawn_app().await;
    app.core.add_app("shop", None, &[Door::Iampass]).unwrap();
    let john = app.add_user("john", PASSWORD, &["forepaas", "shop"]);

    // The protected application: says who caddy says is there, and whether any header that a
    // CGI-style application would read as X-Auth-* (X_Auth_User, ...) came through.
    let backend = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let backend_port = backend.local_addr().unwrap().port();
    let server = HttpServer::new(|| {
        App::new().default_service(web::to(|req: HttpRequest| async move {
            let h = |n: &str| {
                let all: Vec<_> = req.headers().get_all(n).map(|v| v.to_str().unwrap_or("?").to_string()).collect();
                if all.is_empty() {
                    "-".to_string()
                } else {
                    all.join(",")
                }
            };
            let twins = req.headers().keys().filter(|k| k.as_str().starts_with("x_auth")).count();
            format!(
                "hello {} ({}) of {} at {} twins={twins}",
                h("X-Auth-User"),
                h("X-Auth-User-Id"),
                h("X-Auth-App"),
                req.uri().path_and_query().map(|p| p.as_str()).unwrap_or("")
            )
        }))
    })
    .workers(1)
    .listen(backend)
    .unwrap()
    .run();
    actix_web::rt::spawn(server);

    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let port = free_port();
    let gatehouse = app.base.trim_start_matches("http://");
    let block = readme_block("caddy");
    assert!(block.contains("app.example.com {"), "{block}");
    let block = block
        .replace("app.example.com {", &format!("http://127.0.0.1:{port} {{"))
        .replace("127.0.0.1:8080", gatehouse)
        .replace("127.0.0.1:3000", &format!("127.0.0.1:{backend_port}"));
    // No admin endpoint, no certificates (an http:// site), nothing outside the temp dir.
    let conf = format!("{{\n\tadmin off\n}}\n\n{block}\n");
    let file = d.join("Caddyfile");
    std::fs::write(&file, &conf).unwrap();
    let caddy = || {
        let mut c = Command::new(system_binary("/usr/bin/caddy"));
        c.env("HOME", d).env("XDG_DATA_HOME", d.join("data")).env("XDG_CONFIG_HOME", d.join("config"));
        c
    };
    let check = caddy().args(["validate", "--adapter", "caddyfile", "--config"]).arg(&file).output().unwrap();
    assert!(
        check.status.success(),
        "caddy validate: {}{}\n{conf}",
        String::from_utf8_lossy(&check.stdout),
        String::from_utf8_lossy(&check.stderr)
    );
    let log = std::fs::File::create(d.join("caddy.log")).unwrap();
    let _caddy = KillOnDrop(
        caddy()
            .args(["run", "--adapter", "caddyfile", "--config"])
            .arg(&file)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap(),
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            Instant::now() < deadline,
            "caddy did not start: {}",
            std::fs::read_to_string(d.join("caddy.log")).unwrap_or_default()
        );
        actix_web::rt::time::sleep(Duration::from_millis(50)).await;
    }

    let http = awc::Client::default();
    let get = |query: &'static str, headers: Vec<(&'static str, String)>| {
        let mut req = http.get(format!("http://127.0.0.1:{port}/orders{query}"));
        for (k, v) in headers {
            req = req.insert_header((k, v));
        }
        async move {
            let mut res = req.send().await.unwrap();
            let body = String::from_utf8(res.body().await.unwrap().to_vec()).unwrap();
            (res.status().as_u16(), body)
        }
    };
    let login = |app_id: &'static str| {
        let app = &app;
        async move {
            let body = json!({"login": "john", "password": PASSWORD, "app_id": app_id, "auth_mode": "forepaas_id_resource_owner"});
            let a = app.post_json("/iam/login", &body).await;
            assert_eq!(a.status, 200, "{}", a.text);
            a.json["token"].as_str().unwrap().to_string()
        }
    };
    let bearer = |t: &str| ("Authorization", format!("Bearer {t}"));
    let forged = || {
        vec![
            ("X-Auth-User", "admin".to_string()),
            ("X-Auth-User-Id", "1".to_string()),
            ("X-Auth-App", "forepaas".to_string()),
            ("X_Auth_User", "admin".to_string()),
            ("X-Auth-Require-App", "forepaas".to_string()),
        ]
    };

    let (status, body) = get("", vec![]).await;
    assert_eq!(status, 401, "no credential, no page: {body}");
    assert!(!body.contains("hello"), "{body}");
    let (status, body) = get("", forged()).await;
    assert_eq!(status, 401, "headers of one's own open nothing: {body}");

    let shop = login("shop").await;
    let (status, body) = get("", vec![bearer(&shop)]).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body, format!("hello john ({}) of shop at /orders twins=0", john.id));
    let mut h = forged();
    h.push(bearer(&shop));
    let (status, body) = get("?page=2", h).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        body,
        format!("hello john ({}) of shop at /orders?page=2 twins=0", john.id),
        "the application learns who from gatehouse, never what the client claimed"
    );

    // The block demands shop: another application's live token gets nowhere, and neither a
    // query nor a header of the client's own can widen the demand.
    let forepaas = login("forepaas").await;
    for query in ["", "?app=forepaas", "?app=", "?app=&app=forepaas", "?app=shop"] {
        let (status, body) = get(query, vec![bearer(&forepaas)]).await;
        assert_eq!(status, 401, "a forepaas token with {query:?}: {body}");
        let mut h = forged();
        h.push(bearer(&forepaas));
        assert_eq!(get(query, h).await.0, 401, "a forepaas token with {query:?} and forged headers");
    }
    assert_eq!(get("?app=", vec![bearer(&shop)]).await.0, 200, "an empty app lifts nothing and demands nothing");
    assert_eq!(get("?app=forepaas", vec![bearer(&shop)]).await.0, 401, "a client may only narrow the demand");

    let a = app.send("DELETE", &format!("/iam/logout?app_id=shop&token={shop}"), &[], None).await;
    assert_eq!(a.status, 200, "{}", a.text);
    assert_eq!(get("", vec![bearer(&shop)]).await.0, 401, "logged out, shut out");
}
