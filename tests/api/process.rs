//! gatehouse as a user runs it: the binary, started in a directory, killed and started again.

use std::process::Stdio;

use base64::Engine;
use serde_json::{json, Value};

use crate::helpers::{call, free_port, gatehouse_cli, log_of, serve};

const PASSWORD: &str = "correct horse battery";

fn login_body(login: &str, password: &str) -> serde_json::Value {
    json!({"login": login, "password": password, "app_id": "forepaas", "auth_mode": "forepaas_id_resource_owner"})
}

#[actix_web::test]
async fn a_bare_gatehouse_in_an_empty_directory_serves_on_its_defaults() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let server = serve(dir.path(), &[], port, Stdio::null());
    assert!(dir.path().join("data/gatehouse.db").is_file());
    assert!(dir.path().join("data/master.key").is_file());
    let a = call("GET", &format!("{}/healthz", server.base), None).await;
    assert_eq!(a.status, 200);
    let a = call("POST", &format!("{}/iam/login", server.base), Some(login_body("nobody", PASSWORD))).await;
    assert_eq!(a.status, 401);
}

#[actix_web::test]
async fn a_restart_keeps_users_and_live_tokens_even_after_a_kill() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let mut server = serve(dir.path(), &[], port, Stdio::null());
    // The command line works on the data directory while the server runs.
    let out =
        gatehouse_cli(dir.path(), &[], &["user", "add", "john.doe", "--password-stdin"], &format!("{PASSWORD}\n"));
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let a = call("POST", &format!("{}/iam/login", server.base), Some(login_body("john.doe", PASSWORD))).await;
    assert_eq!(a.status, 200, "{}", a.text);
    let token = a.json["token"].as_str().unwrap().to_string();

    // SIGKILL: no chance to flush anything that was not already durable.
    server.child.kill().unwrap();
    server.child.wait().unwrap();
    drop(server);

    let server = serve(dir.path(), &[], port, Stdio::null());
    let a = call("GET", &format!("{}/iam/checkSession?token={token}", server.base), None).await;
    assert_eq!(a.status, 200, "{}", a.text);
    assert_eq!(a.json["login"], json!("john.doe"));
    let a = call("POST", &format!("{}/iam/login", server.base), Some(login_body("john.doe", PASSWORD))).await;
    assert_eq!(a.status, 200, "{}", a.text);
}

#[actix_web::test]
async fn the_most_verbose_log_holds_no_password_secret_or_token() {
    logs_hold_no_secret(&[("GATEHOUSE_LOG_LEVEL", "trace")]).await;
}

#[actix_web::test]
async fn even_rust_log_trace_for_every_crate_holds_no_secret() {
    logs_hold_no_secret(&[("RUST_LOG", "trace")]).await;
}

async fn logs_hold_no_secret(env: &[(&str, &str)]) {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let app = gatehouse_cli(d, env, &["app", "add", "partner", "--door", "iampass"], "");
    let app_secret = String::from_utf8(app.stdout).unwrap().split_whitespace().last().unwrap().to_string();
    let mut cli_stderr = String::from_utf8(app.stderr).unwrap();
    let out = gatehouse_cli(
        d,
        env,
        &["user", "add", "john.doe", "--password-stdin", "--email", "john.doe@example.com"],
        &format!("{PASSWORD}\n"),
    );
    cli_stderr += &String::from_utf8(out.stderr).unwrap();
    let out = gatehouse_cli(d, env, &["apikey", "add", "john.doe"], "");
    cli_stderr += &String::from_utf8(out.stderr).unwrap();
    let pair = String::from_utf8(out.stdout).unwrap();
    let (apikey, secretkey) = pair.trim().split_once(' ').unwrap();

    let port = free_port();
    let mut server = serve(d, env, port, Stdio::piped());
    let reader = log_of(&mut server);
    let base = server.base.clone();
    let a = call("POST", &format!("{base}/iam/login"), Some(login_body("john.doe", PASSWORD))).await;
    assert_eq!(a.status, 200);
    let password_token = a.json["token"].as_str().unwrap().to_string();
    let body = json!({"apikey": apikey, "secretkey": secretkey, "app_id": "forepaas", "auth_mode": "apikey"});
    let a = call("POST", &format!("{base}/iam/login"), Some(body)).await;
    assert_eq!(a.status, 200);
    let key_token = a.json["token"].as_str().unwrap().to_string();
    for t in [&password_token, &key_token] {
        assert_eq!(call("GET", &format!("{base}/iam/checkSession?token={t}"), None).await.status, 200);
        assert_eq!(call("DELETE", &format!("{base}/iam/logout?app_id=forepaas&token={t}"), None).await.status, 200);
        assert_eq!(call("DELETE", &format!("{base}/iam/logout?app_id=forepaas&token={t}"), None).await.status, 401);
    }

    // A CMS session and a password reset through its link.
    let cms = call(
        "POST",
        &format!("{base}/cms/iap/auth/login"),
        Some(json!({"username": "john.doe", "password": PASSWORD})),
    )
    .await;
    assert_eq!(cms.status, 200);
    let cms_sid = crate::helpers::set_cookie(&cms, "cmsSID").unwrap().split(';').next().unwrap().to_string();
    let reset = json!({"userName": "john.doe", "emailAddress": "john.doe@example.com"});
    assert_eq!(call("POST", &format!("{base}/cms/iap/auth/resetPwd"), Some(reset)).await.status, 200);
    let outbox = d.join("data/outbox");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let mail = loop {
        let found = std::fs::read_dir(&outbox)
            .unwrap()
            .filter_map(|e| e.ok())
            .find(|e| e.path().extension().is_some_and(|x| x == "eml"));
        if let Some(e) = found {
            break std::fs::read_to_string(e.path()).unwrap();
        }
        assert!(std::time::Instant::now() < deadline, "no reset mail");
        actix_web::rt::time::sleep(std::time::Duration::from_millis(50)).await;
    };
    let link = crate::helpers::link_in(&mail, "reset").unwrap();
    let new_password = "the new password after reset";
    assert_eq!(call("GET", &format!("{base}{link}"), None).await.status, 200);
    assert_eq!(call("POST", &format!("{base}{link}"), Some(json!({"password": new_password}))).await.status, 200);
    let code = link.trim_start_matches("/reset/").to_string();
    let signin_secrets = iampass_signin(&base, &app_secret).await;
    // Last, since a failure makes the account wait before its next sign-in (the throttle).
    let wrong = "a-wrong-password-attempt";
    assert_eq!(call("POST", &format!("{base}/iam/login"), Some(login_body("john.doe", wrong))).await.status, 401);

    server.child.kill().unwrap();
    server.child.wait().unwrap();
    let mut log = reader.join().unwrap();
    log += &cli_stderr;
    assert!(log.contains("gatehouse::access"), "the access log is there: {log}");
    assert!(log.contains("TRACE") || log.contains("DEBUG"), "the log is at its most verbose: {log}");
    assert!(log.contains("POST /iam/login 200") && log.contains("GET /iam/checkSession 200"), "{log}");
    assert!(log.contains("POST /reset/{code} 200"), "the access log names the route, not the link: {log}");
    for (what, secret) in [
        ("password", PASSWORD),
        ("wrong password", wrong),
        ("application secret", app_secret.as_str()),
        ("API secret", secretkey),
        ("password token", password_token.as_str()),
        ("API-key token", key_token.as_str()),
        ("CMS session", cms_sid.trim_start_matches("cmsSID=")),
        ("reset code", code.as_str()),
        ("new password", new_password),
    ]
    .into_iter()
    .chain(signin_secrets.iter().map(|(w, s)| (*w, s.as_str())))
    {
        assert!(!log.contains(secret), "the log holds the {what}");
        // Not even half of one.
        assert!(!log.contains(&secret[..secret.len() / 2]), "the log holds part of the {what}");
    }
}

/// An IAMPASS call to the served child, signed with the application `partner`'s secret.
async fn iampass_call(base: &str, secret: &str, method: &str, target: &str, body: Option<Value>) -> Value {
    let nonce = crate::iampass::fresh_nonce();
    let ts = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs().to_string();
    let url = format!("{}{target}", base.trim_start_matches("http://"));
    let auth = format!("hmac partner:{nonce}:{}", crate::iampass::sign(secret, &nonce, &url, &ts));
    let client = awc::Client::default();
    let req =
        if method == "GET" { client.get(format!("{base}{target}")) } else { client.post(format!("{base}{target}")) };
    let req = req.insert_header(("Authentication", auth)).insert_header(("X-IAMPASS-Authentication-Timestamp", ts));
    let mut res = match body {
        Some(b) => req.send_json(&b).await.unwrap(),
        None => req.send().await.unwrap(),
    };
    res.json().await.unwrap()
}

/// A whole IAMPASS sign-in: a user added, a device registered (with its API key), a sign-in started
/// by the vendor's client, approved by the device, closed. Answers the secrets it saw.
async fn iampass_signin(base: &str, app_secret: &str) -> Vec<(&'static str, String)> {
    if !crate::signins::vendor_here() {
        return Vec::new();
    }
    iampass_call(base, app_secret, "POST", "/management/add_users/partner", Some(json!({"users": ["ann"]}))).await;
    let link = iampass_call(base, app_secret, "GET", "/management/device_registration_link/partner/ann", None).await;
    let link = link["register_url"].as_str().unwrap().to_string();
    let device = call("POST", &link, Some(json!({"device_name": "phone"}))).await;
    assert_eq!(device.status, 201, "{}", device.text);
    let (apikey, secretkey) = (device.json["apikey"].as_str().unwrap(), device.json["secretkey"].as_str().unwrap());
    let args = ["start", "partner", app_secret, "ann", "acceptance", ""].map(str::to_string).to_vec();
    let session = crate::signins::vendor(base, args).await;
    assert_eq!(session["status"], "pending", "{session}");
    let basic = format!("Basic {}", base64::engine::general_purpose::STANDARD.encode(format!("{apikey}:{secretkey}")));
    let client = awc::Client::default();
    let mut res = client
        .get(format!("{base}/device/requests?wait=0"))
        .insert_header(("Authorization", basic.as_str()))
        .send()
        .await
        .unwrap();
    let pending: Value = res.json().await.unwrap();
    let req = pending["requests"][0].clone();
    let mut res = client
        .post(format!("{base}/device/requests/{}", req["id"]))
        .insert_header(("Authorization", basic.as_str()))
        .send_json(&json!({"approve": true, "challenge": req["challenge"]}))
        .await
        .unwrap();
    assert_eq!(res.status(), 200, "{:?}", res.body().await);
    let status = crate::signins::vendor(base, vec!["status".into(), session.to_string()]).await;
    assert_eq!(status["status"], "active");
    assert_eq!(crate::signins::vendor(base, vec!["destroy".into(), session.to_string()]).await["destroyed"], true);
    vec![
        ("registration code", link.rsplit('/').next().unwrap().to_string()),
        ("device API secret", secretkey.to_string()),
        ("session secret", session["secret"].as_str().unwrap().to_string()),
        ("session token", session["token"].as_str().unwrap().to_string()),
        ("sign-in challenge", req["challenge"].as_str().unwrap().to_string()),
    ]
}

/// What a client types never makes a line of the log, at the most verbose level of every crate: a
/// login with a line break is refused, and an API key id or a reset request carrying one leaves
/// every line a log line of its own. (No line of gatehouse's echoes typed text today; the log's
/// format escapes any that comes to, as its unit test in src/cli.rs shows.)
#[actix_web::test]
async fn a_typed_line_break_or_escape_forges_no_log_line() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let port = free_port();
    let mut server = serve(d, &[("RUST_LOG", "trace")], port, Stdio::piped());
    let reader = log_of(&mut server);
    let base = server.base.clone();
    let forged = "alice\nFAKE LOG LINE\u{1b}[2J\u{202e}";
    let a = call("POST", &format!("{base}/iam/login"), Some(login_body(forged, PASSWORD))).await;
    assert_eq!(a.status, 400, "{}", a.text);
    let body = json!({"apikey": forged, "secretkey": "whatever", "app_id": "forepaas", "auth_mode": "apikey"});
    assert_eq!(call("POST", &format!("{base}/iam/login"), Some(body)).await.status, 401);
    let a =
        call("POST", &format!("{base}/cms/iap/auth/login"), Some(json!({"username": forged, "password": "x"}))).await;
    assert_eq!(a.status, 400, "{}", a.text);
    let a = call(
        "POST",
        &format!("{base}/cms/iap/auth/resetPwd"),
        Some(json!({"userName": forged, "emailAddress": forged})),
    )
    .await;
    assert_eq!(a.status, 400, "{}", a.text);

    server.child.kill().unwrap();
    server.child.wait().unwrap();
    let log = reader.join().unwrap();
    assert!(log.contains("POST /iam/login 400") && log.contains("TRACE"), "the log is there, at trace: {log}");
    assert!(!log.lines().any(|l| l.trim_start().starts_with("FAKE LOG LINE")), "a forged line: {log}");
    assert!(!log.contains('\u{1b}') && !log.contains('\u{202e}'), "a raw escape or override: {log:?}");
    assert!(log.lines().all(|l| l.starts_with('[')), "every line is a log line of its own: {log}");
}
