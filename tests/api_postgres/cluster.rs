//! Several gatehouse nodes over one PostgreSQL: what one node did, every other knows at once;
//! what guards security (nonces, the throttle, refresh rotation) holds across nodes.

use base64::Engine;
use gatehouse::core::apps::Door;
use serde_json::{json, Value};

use crate::helpers::{gatehouse_cli, spawn_app_in, Answer, TestApp};
use crate::iampass::{fresh_nonce, sign};

/// `n` nodes (servers with a Core each, as separate processes would have) on one fresh database,
/// with one master key between them (the first node's). None (the test is skipped) without
/// PostgreSQL, never on CI.
async fn nodes(n: usize, tweak: impl Fn(&mut gatehouse::config::Config)) -> Option<Vec<TestApp>> {
    let cluster = crate::pg::cluster_or_skip()?;
    Some(nodes_on(&cluster.new_database(), n, tweak).await)
}

/// `n` nodes on the database at `url`, with the first node's master key.
pub(crate) async fn nodes_on(url: &str, n: usize, tweak: impl Fn(&mut gatehouse::config::Config)) -> Vec<TestApp> {
    let mut out: Vec<TestApp> = Vec::new();
    for _ in 0..n {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        let key = out.first().map(|first| first.core.config.master_key_path());
        out.push(
            spawn_app_in(dir, &data, |c| {
                c.store.backend = "postgres".into();
                c.store.postgres_url = url.to_string();
                if let Some(key) = key {
                    c.master_key_file = key;
                }
                tweak(c);
            })
            .await,
        );
    }
    out
}

async fn iam_login(node: &TestApp, login: &str, password: &str) -> Answer {
    node.post_json(
        "/iam/login",
        &json!({"login": login, "password": password, "app_id": "forepaas", "auth_mode": "forepaas_id_resource_owner"}),
    )
    .await
}

async fn check(node: &TestApp, token: &str) -> u16 {
    node.get(&format!("/iam/checkSession?app_id=forepaas&token={token}")).await.status
}

#[actix_web::test]
async fn a_token_issued_on_one_node_checks_on_every_other_at_once() {
    let Some(nodes) = nodes(3, |_| {}).await else { return };
    nodes[0].add_user("ann", "correct horse battery", &["forepaas"]);
    let a = iam_login(&nodes[1], "ann", "correct horse battery").await;
    assert_eq!(a.status, 200, "{}", a.text);
    let token = a.json["token"].as_str().unwrap().to_string();
    for node in &nodes {
        assert_eq!(check(node, &token).await, 200);
    }
    let out = nodes[2].send("DELETE", &format!("/iam/logout?app_id=forepaas&token={token}"), &[], None).await;
    assert_eq!(out.status, 200, "{}", out.text);
    for node in &nodes {
        assert_eq!(check(node, &token).await, 401, "logged out on another node");
    }
}

#[actix_web::test]
async fn a_nonce_spent_on_one_node_is_refused_on_another() {
    let Some(nodes) = nodes(2, |_| {}).await else { return };
    let secret = nodes[0].core.add_app("partner-app", None, &[Door::Iampass]).unwrap().expose().to_string();
    let nonce = fresh_nonce();
    let ts = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs().to_string();
    let target = "/management/has_registered_mobile_device/partner-app/nobody";
    async fn call(node: &TestApp, target: &str, secret: &str, nonce: &str, ts: &str) -> Answer {
        let url = format!("{}{target}", node.base.trim_start_matches("http://"));
        let auth = format!("hmac partner-app:{nonce}:{}", sign(secret, nonce, &url, ts));
        node.send("GET", target, &[("Authentication", &auth), ("X-IAMPASS-Authentication-Timestamp", ts)], None).await
    }
    let first = call(&nodes[0], target, &secret, &nonce, &ts).await;
    assert_ne!(first.status, 401, "{}", first.text);
    let again = call(&nodes[1], target, &secret, &nonce, &ts).await;
    assert_eq!(again.status, 401, "{}", again.text);
    assert!(again.text.contains("replayed"), "{}", again.text);
}

#[actix_web::test]
async fn failures_spread_over_three_nodes_lock_the_account_as_on_one() {
    let Some(nodes) = nodes(3, |c| {
        c.throttle.account_failures = 5;
        c.throttle.delay = gatehouse::config::Seconds(std::time::Duration::ZERO);
    })
    .await
    else {
        return;
    };
    nodes[0].add_user("bea", "correct horse battery", &["forepaas"]);
    for i in 0..5 {
        let a = iam_login(&nodes[i % 3], "bea", "wrong password").await;
        assert_eq!(a.status, 401, "failure {i}: {}", a.text);
    }
    for node in &nodes {
        let a = iam_login(node, "bea", "correct horse battery").await;
        assert_eq!(a.status, 429, "locked on every node: {}", a.text);
        assert!(a.headers.get("retry-after").is_some());
    }
}

#[actix_web::test]
async fn two_nodes_racing_on_one_refresh_token_have_one_winner_and_the_family_dies() {
    let Some(nodes) = nodes(2, |_| {}).await else { return };
    let secret = nodes[0].core.add_app("iqm-client", None, &[Door::Iqm, Door::Oauth]).unwrap().expose().to_string();
    let basic = format!("Basic {}", base64::engine::general_purpose::STANDARD.encode(format!("iqm-client:{secret}")));
    let body = json!({"email": "cy@iqm.com", "password": "correct horse battery"});
    let up = nodes[1]
        .send(
            "POST",
            "/api/v3/ua/sign-up",
            &[("Authorization", &basic)],
            Some(("application/json", body.to_string().into())),
        )
        .await;
    assert_eq!(up.status, 200, "{}", up.text);
    let token = up.json["data"]["refresh_token"].as_str().unwrap().to_string();
    let refresh = |node: &TestApp| {
        let url = node.url("/api/v3/ua/oauth/token");
        let body = json!({"grant_type": "refresh_token", "refresh_token": token});
        actix_web::rt::spawn(async move {
            let mut res = awc::Client::default().post(url).send_json(&body).await.unwrap();
            (res.status().as_u16(), res.json::<Value>().await.unwrap_or(Value::Null))
        })
    };
    let (a, b) = (refresh(&nodes[0]), refresh(&nodes[1]));
    let answers = [a.await.unwrap(), b.await.unwrap()];
    let winners: Vec<_> = answers.iter().filter(|(s, _)| *s == 200).collect();
    assert_eq!(winners.len(), 1, "{answers:?}");
    assert!(answers.iter().any(|(s, _)| *s == 401), "{answers:?}");
    // The loser was a reuse: the family is revoked, the winner's new refresh token with it.
    let newer = winners[0].1["refresh_token"].as_str().unwrap();
    let body = json!({"grant_type": "refresh_token", "refresh_token": newer});
    for node in &nodes {
        let again =
            node.send("POST", "/api/v3/ua/oauth/token", &[], Some(("application/json", body.to_string().into()))).await;
        assert_eq!(again.status, 401, "{}", again.text);
    }
}

#[actix_web::test]
async fn migrate_store_moves_a_single_box_into_postgres_and_everyone_signs_in_as_before() {
    let Some(cluster) = crate::pg::cluster_or_skip() else { return };
    // A single box on SQLite, set up with the command line.
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let data_s = data.display().to_string();
    let sqlite_env = [("GATEHOUSE_DATA_DIR", data_s.as_str())];
    let out =
        gatehouse_cli(dir.path(), &sqlite_env, &["user", "add", "dee", "--password-stdin"], "correct horse battery\n");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let out = gatehouse_cli(dir.path(), &sqlite_env, &["app", "add", "partner-app", "--door", "iampass"], "");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let secret = String::from_utf8(out.stdout).unwrap().split_whitespace().last().unwrap().to_string();

    let url = cluster.new_database();
    let pg_env = [
        ("GATEHOUSE_DATA_DIR", data_s.as_str()),
        ("GATEHOUSE_STORE__BACKEND", "postgres"),
        ("GATEHOUSE_STORE__POSTGRES_URL", url.as_str()),
    ];
    let out = gatehouse_cli(dir.path(), &pg_env, &["migrate-store", "--from", "sqlite", "--to", "postgres"], "");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let said = String::from_utf8(out.stdout).unwrap();
    // forepaas, cms and gatehouse (the SSO sessions' built-in), and the one added.
    assert!(said.contains("1 users") && said.contains("4 applications"), "{said}");
    // Twice is refused: the destination is no longer empty.
    let again = gatehouse_cli(dir.path(), &pg_env, &["migrate-store", "--from", "sqlite", "--to", "postgres"], "");
    assert!(!again.status.success());

    // A node on PostgreSQL, with the box's master key: the same password, the same secret.
    let node_dir = tempfile::tempdir().unwrap();
    let key = data.join("master.key");
    let node = spawn_app_in(node_dir, &dir.path().join("node"), |c| {
        c.store.backend = "postgres".into();
        c.store.postgres_url = url.clone();
        c.master_key_file = key;
    })
    .await;
    let a = iam_login(&node, "dee", "correct horse battery").await;
    assert_eq!(a.status, 200, "{}", a.text);
    let nonce = fresh_nonce();
    let ts = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs().to_string();
    let target = "/management/has_registered_mobile_device/partner-app/nobody";
    let signed = format!("{}{target}", node.base.trim_start_matches("http://"));
    let auth = format!("hmac partner-app:{nonce}:{}", sign(&secret, &nonce, &signed, &ts));
    let a =
        node.send("GET", target, &[("Authentication", &auth), ("X-IAMPASS-Authentication-Timestamp", &ts)], None).await;
    assert_ne!(a.status, 401, "the sealed secret opens on the new store: {}", a.text);
    // New users get ids past the copied ones.
    let added = node.add_user("eve", "correct horse battery", &["forepaas"]);
    assert!(added.id > 1);
}

#[actix_web::test]
async fn tls_to_postgres_is_checked_against_the_configured_ca() {
    use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair};
    use std::os::unix::fs::MetadataExt;
    if crate::pg::cluster_or_skip().is_none() {
        return;
    }
    let dir = crate::pg::server_dir();
    let data = dir.path().join("data");
    crate::pg::initdb(&data);
    // A CA of the test's own, and the server's certificate for 127.0.0.1 signed by it.
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca = CertifiedIssuer::self_signed(ca_params, KeyPair::generate().unwrap()).unwrap();
    let server_key = KeyPair::generate().unwrap();
    let server = CertificateParams::new(vec!["127.0.0.1".to_string()]).unwrap().signed_by(&server_key, &ca).unwrap();
    let owner = std::fs::metadata(&data).unwrap();
    for (name, text) in [("server.crt", server.pem()), ("server.key", server_key.serialize_pem())] {
        let path = data.join(name);
        std::fs::write(&path, text).unwrap();
        std::fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
        std::os::unix::fs::chown(&path, Some(owner.uid()), Some(owner.gid())).unwrap();
    }
    let ca_file = dir.path().join("ca.pem");
    std::fs::write(&ca_file, ca.pem()).unwrap();
    let port = crate::helpers::free_port();
    let mut server = crate::failover::own_server(
        dir.path(),
        "data",
        port,
        &["-c", "ssl=on", "-c", "ssl_cert_file=server.crt", "-c", "ssl_key_file=server.key"],
    );
    // Once it is up, only TLS connections are let in.
    std::fs::write(data.join("pg_hba.conf"), "local all all trust\nhostssl all all 127.0.0.1/32 trust\n").unwrap();
    unsafe { libc::kill(server.id() as libc::pid_t, libc::SIGHUP) };
    actix_web::rt::time::sleep(std::time::Duration::from_millis(500)).await;
    let url = format!("postgres://postgres@127.0.0.1:{port}/postgres?sslmode=require");

    // Without the CA, the server's certificate is refused, and the node does not start.
    let mut config = crate::helpers::test_config(&dir.path().join("refused"));
    config.store.backend = "postgres".into();
    config.store.postgres_url = url.clone();
    let refused = gatehouse::core::Core::open(config);
    assert!(refused.as_ref().is_err_and(|e| e.to_string().contains("TLS")), "{:?}", refused.err());

    let node_dir = tempfile::tempdir().unwrap();
    let node = spawn_app_in(node_dir, &dir.path().join("node"), |c| {
        c.store.backend = "postgres".into();
        c.store.postgres_url = url.clone();
        c.store.postgres_ca_file = ca_file.clone();
    })
    .await;
    node.add_user("fay", "correct horse battery", &["forepaas"]);
    let a = iam_login(&node, "fay", "correct horse battery").await;
    assert_eq!(a.status, 200, "{}", a.text);
    drop(node);
    crate::failover::stop_now(&mut server, libc::SIGINT);
}

#[actix_web::test]
async fn two_nodes_reaping_at_once_delete_every_row_once_in_batches() {
    let Some(nodes) = nodes(2, |c| c.reaper.batch = 2).await else { return };
    nodes[0].add_user("gus", "correct horse battery", &["forepaas"]);
    for _ in 0..7 {
        let token =
            iam_login(&nodes[0], "gus", "correct horse battery").await.json["token"].as_str().unwrap().to_string();
        let out = nodes[1].send("DELETE", &format!("/iam/logout?app_id=forepaas&token={token}"), &[], None).await;
        assert_eq!(out.status, 200);
    }
    assert_eq!(nodes[0].count("SELECT count(*) FROM tokens"), 7);
    let (a, b) = (nodes[0].core.clone(), nodes[1].core.clone());
    let (ra, rb) = std::thread::scope(|s| {
        let ra = s.spawn(|| a.reap().unwrap());
        let rb = s.spawn(|| b.reap().unwrap());
        (ra.join().unwrap(), rb.join().unwrap())
    });
    // Each batch runs under the reaper's advisory lock: rows go once, whoever takes them.
    assert_eq!(ra.tokens + rb.tokens, 7, "{ra:?} {rb:?}");
    assert_eq!(nodes[0].count("SELECT count(*) FROM tokens"), 0);
}

#[actix_web::test]
async fn the_database_password_never_reaches_a_log_line() {
    let Some(cluster) = crate::pg::cluster_or_skip() else { return };
    // The test server trusts loopback, so any password opens it; a real one would check it.
    let password = "s3cret-db-password";
    let url = cluster.new_database().replacen("postgres@", &format!("postgres:{password}@"), 1);
    let dir = tempfile::tempdir().unwrap();
    let log_path = dir.path().join("stderr.log");
    let env = [
        ("GATEHOUSE_STORE__BACKEND", "postgres"),
        ("GATEHOUSE_STORE__POSTGRES_URL", url.as_str()),
        ("RUST_LOG", "trace"),
    ];
    let served = crate::helpers::serve(
        dir.path(),
        &env,
        crate::helpers::free_port(),
        std::fs::File::create(&log_path).unwrap().into(),
    );
    let a = crate::helpers::call("GET", &format!("{}/healthz", served.base), None).await;
    assert_eq!(a.status, 200);
    drop(served);
    // A server that cannot be reached: the error names the host, port and database only.
    let closed = url.replace(&format!(":{}/", cluster.port), &format!(":{}/", crate::helpers::free_port()));
    let env = [("GATEHOUSE_STORE__BACKEND", "postgres"), ("GATEHOUSE_STORE__POSTGRES_URL", closed.as_str())];
    let failed = gatehouse_cli(dir.path(), &env, &["user", "list"], "");
    assert!(!failed.status.success());
    let said = String::from_utf8_lossy(&failed.stderr).to_string();
    assert!(said.contains("127.0.0.1 port"), "{said}");
    let logged = std::fs::read_to_string(&log_path).unwrap();
    assert!(logged.contains("store: postgres 127.0.0.1"), "the log says which server");
    for text in [&logged, &said] {
        assert!(!text.contains(password), "the password leaked");
    }
}

#[actix_web::test]
async fn a_code_issued_on_one_node_is_exchanged_once_when_two_nodes_race() {
    use crate::oidc::{location, query, Browser, REDIRECT};
    use gatehouse::core::oidc::ClientSettings;
    // One public URL for the cluster (the issuer), as a load balancer gives.
    let Some(nodes) = nodes(3, |c| c.public_url = "https://box.example".into()).await else { return };
    let secret = nodes[0]
        .core
        .add_client(
            "rp",
            None,
            false,
            &[],
            ClientSettings {
                redirect_uris: Some(vec![REDIRECT.into()]),
                first_party: Some(true),
                ..Default::default()
            },
        )
        .unwrap()
        .unwrap()
        .expose()
        .to_string();
    nodes[0].add_user("ann", "correct horse battery", &["rp"]);
    let auth = format!("Basic {}", base64::engine::general_purpose::STANDARD.encode(format!("rp:{secret}")));
    for round in 0..3 {
        // Sign in on node A (the SSO session and the code are rows: any node continues).
        let mut b = Browser::new(&nodes[0]);
        let a = b
            .get(&format!(
                "/oauth2/authorize?response_type=code&client_id=rp&redirect_uri={}&scope=openid&state=s",
                crate::oidc::urlencode(REDIRECT)
            ))
            .await;
        let login = location(&a);
        let mut b1 = Browser::new(&nodes[1]);
        b1.cookies = b.cookies.clone();
        let page = b1.get(&login).await;
        let (r, csrf) = (crate::oidc::hidden(&page.text, "r"), crate::oidc::hidden(&page.text, "csrf"));
        let a = b1
            .post_from(
                "/login",
                &[("r", &r), ("csrf", &csrf), ("login", "ann"), ("password", "correct horse battery")],
                Some("https://box.example"),
            )
            .await;
        assert_eq!(a.status, 303, "round {round}: {}", a.text);
        let mut b2 = Browser::new(&nodes[2]);
        b2.cookies = b1.cookies.clone();
        let a = b2.get(&location(&a)).await;
        let code = query(&location(&a))["code"].clone();
        let body =
            format!("grant_type=authorization_code&code={code}&redirect_uri={}", crate::oidc::urlencode(REDIRECT));
        let headers = [("Authorization", auth.as_str())];
        let (x, y) = tokio::join!(
            nodes[1].send(
                "POST",
                "/oauth2/token",
                &headers,
                Some(("application/x-www-form-urlencoded", body.clone().into_bytes()))
            ),
            nodes[2].send(
                "POST",
                "/oauth2/token",
                &headers,
                Some(("application/x-www-form-urlencoded", body.clone().into_bytes()))
            ),
        );
        let mut statuses = [x.status, y.status];
        statuses.sort();
        assert_eq!(statuses, [200, 400], "round {round}: exactly one exchange wins: {} / {}", x.text, y.text);
        let loser = if x.status == 400 { &x } else { &y };
        assert_eq!(loser.json["error"], "invalid_grant");
    }
}

/// A passkey's assertion sent to two nodes at once: one signs in, the other refuses it (the
/// challenge's time is spent by a conditional UPDATE, as a TOTP step is).
#[actix_web::test]
async fn one_passkey_assertion_raced_on_two_nodes_signs_in_once() {
    use crate::oidc::{hidden, Browser};
    use crate::passkeys::{refs, Authenticator};
    const ORIGIN: &str = "https://box.example";
    let Some(nodes) = nodes(2, |c| c.public_url = ORIGIN.into()).await else { return };
    nodes[0].add_user("ann", "correct horse battery", &[]);
    let mut b = Browser::new(&nodes[0]);
    let page = b.get("/login?next=%2Faccount").await;
    let csrf = hidden(&page.text, "csrf");
    let form = [("next", "/account"), ("csrf", csrf.as_str()), ("login", "ann"), ("password", "correct horse battery")];
    assert_eq!(b.post_from("/login", &form, Some(ORIGIN)).await.status, 303);
    let page = b.get("/account").await;
    let mut key = Authenticator::new();
    let added = b.post_from("/account/passkeys", &refs(&key.create(&page.text, ORIGIN, "Phone")), Some(ORIGIN)).await;
    assert_eq!(added.status, 200, "{}", added.text);
    for round in 0..3 {
        let mut on0 = Browser::new(&nodes[0]);
        let page = on0.get("/login").await;
        let fields = key.get(&page.text, ORIGIN, true);
        let form = refs(&fields);
        let mut on1 = Browser::new(&nodes[1]);
        on1.cookies = on0.cookies.clone();
        let (x, y) = tokio::join!(
            on0.post_from("/login/passkey", &form, Some(ORIGIN)),
            on1.post_from("/login/passkey", &form, Some(ORIGIN))
        );
        let mut statuses = [x.status, y.status];
        statuses.sort();
        assert_eq!(statuses, [200, 401], "round {round}: {} / {}", x.text, y.text);
    }
    assert_eq!(nodes[0].count("SELECT count(*) FROM audit WHERE event = 'passkey_signin'"), 3);
}
