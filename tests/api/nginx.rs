//! README's "Behind a reverse proxy" nginx block, as printed, in Debian's real nginx: a protected
//! location serves only with a live token or cookie, and the application behind it learns who.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use actix_web::{web, App, HttpRequest, HttpServer};
use serde_json::json;

use crate::helpers::{free_port, have, readme_block, set_cookie, spawn_app, system_binary, KillOnDrop};

#[actix_web::test]
async fn the_readme_nginx_block_protects_a_location_in_real_nginx() {
    if !have("nginx", Command::new(system_binary("/usr/sbin/nginx")).arg("-v")) {
        return;
    }
    let app = spawn_app().await;
    app.add_user("john", "a long enough password", &["forepaas", "cms"]);

    // The protected application: says who nginx says is there.
    let backend = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let backend_port = backend.local_addr().unwrap().port();
    let server = HttpServer::new(|| {
        App::new().default_service(web::to(|req: HttpRequest| async move {
            let h = |n: &str| req.headers().get(n).and_then(|v| v.to_str().ok()).unwrap_or("-").to_string();
            format!("hello {} ({}) at {}", h("X-Auth-User"), h("X-Auth-User-Id"), req.path())
        }))
    })
    .workers(1)
    .listen(backend)
    .unwrap()
    .run();
    actix_web::rt::spawn(server);

    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let gatehouse = app.base.trim_start_matches("http://");
    let block = readme_block("nginx")
        .replace("127.0.0.1:8080", gatehouse)
        .replace("127.0.0.1:3000", &format!("127.0.0.1:{backend_port}"));
    let d = dir.path().display();
    // Run as root (CI), the workers would switch to an unprivileged user: keep them as we are.
    let user = if unsafe { libc::geteuid() } == 0 { "user root;" } else { "" };
    let conf = format!(
        "{user}
daemon off;
worker_processes 1;
pid {d}/nginx.pid;
error_log {d}/error.log;
events {{ worker_connections 64; }}
http {{
    access_log off;
    client_body_temp_path {d}/body;
    proxy_temp_path {d}/proxy;
    fastcgi_temp_path {d}/fastcgi;
    uwsgi_temp_path {d}/uwsgi;
    scgi_temp_path {d}/scgi;
    server {{
        listen 127.0.0.1:{port};
{block}
    }}
}}
"
    );
    std::fs::write(dir.path().join("nginx.conf"), &conf).unwrap();
    let check = Command::new(system_binary("/usr/sbin/nginx"))
        .args(["-t", "-p", &d.to_string(), "-e", &format!("{d}/error.log"), "-c", &format!("{d}/nginx.conf")])
        .output()
        .unwrap();
    assert!(check.status.success(), "nginx -t: {}\n{conf}", String::from_utf8_lossy(&check.stderr));
    let _nginx = KillOnDrop(
        Command::new(system_binary("/usr/sbin/nginx"))
            .args(["-p", &d.to_string(), "-e", &format!("{d}/error.log"), "-c", &format!("{d}/nginx.conf")])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            Instant::now() < deadline,
            "nginx did not start: {}",
            std::fs::read_to_string(dir.path().join("error.log")).unwrap_or_default()
        );
        actix_web::rt::time::sleep(Duration::from_millis(50)).await;
    }

    let http = awc::Client::default();
    let get = |headers: Vec<(&'static str, String)>| {
        let mut req = http.get(format!("http://127.0.0.1:{port}/app/orders"));
        for (k, v) in headers {
            req = req.insert_header((k, v));
        }
        async move {
            let mut res = req.send().await.unwrap();
            let body = String::from_utf8(res.body().await.unwrap().to_vec()).unwrap();
            (res.status().as_u16(), body)
        }
    };

    let (status, body) = get(vec![]).await;
    assert_eq!(status, 401, "no credential, no page: {body}");
    assert!(!body.contains("hello"));
    let forged = get(vec![("X-Auth-User", "admin".into())]).await;
    assert_eq!(forged.0, 401, "a header of one's own opens nothing");

    let login = app
        .post_json(
            "/iam/login",
            &json!({"login": "john", "password": "a long enough password", "app_id": "forepaas", "auth_mode": "forepaas_id_resource_owner"}),
        )
        .await;
    let token = login.json["token"].as_str().unwrap().to_string();
    let (status, body) = get(vec![("Authorization", format!("Bearer {token}")), ("X-Auth-User", "admin".into())]).await;
    assert_eq!(status, 200, "{body}");
    assert!(body.starts_with("hello john ("), "the application learns who, not what the client claimed: {body}");
    assert!(body.ends_with("at /orders"), "{body}");

    let body = json!({"username": "john", "password": "a long enough password"}).to_string().into_bytes();
    let cms = app.send("POST", "/cms/iap/auth/login", &[], Some(("application/json", body))).await;
    let cookie = set_cookie(&cms, "cmsSID").unwrap().split(';').next().unwrap().to_string();
    let (status, body) = get(vec![("Cookie", cookie)]).await;
    assert_eq!((status, body.starts_with("hello john")), (200, true), "{body}");

    let a = app.send("DELETE", &format!("/iam/logout?app_id=forepaas&token={token}"), &[], None).await;
    assert_eq!(a.status, 200);
    assert_eq!(get(vec![("Authorization", format!("Bearer {token}"))]).await.0, 401, "logged out, shut out");
}
