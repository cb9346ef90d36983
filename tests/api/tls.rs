//! HTTPS: served with the configured certificate, HSTS on, the CMS cookie Secure.

use std::sync::Arc;

use serde_json::{json, Value};

use crate::helpers::spawn_app_with;

#[actix_web::test]
async fn with_a_certificate_gatehouse_serves_https_only_with_hsts() {
    let dir = tempfile::tempdir().unwrap();
    let (cert_file, key_file, cert) = crate::helpers::write_self_signed(dir.path(), "localhost");
    let app = spawn_app_with(|c| {
        c.tls.cert_file = cert_file.clone();
        c.tls.key_file = key_file.clone();
    })
    .await;
    app.add_user("mark", "a long enough password", &["cms"]);
    let port = app.base.rsplit(':').next().unwrap().to_string();
    let https = format!("https://localhost:{port}");
    assert_eq!(app.core.config.public_url(), format!("https://{}", app.base.trim_start_matches("http://")));

    let mut roots = rustls::RootCertStore::empty();
    roots.add(cert.clone()).unwrap();
    let tls = rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let client = awc::Client::builder().connector(awc::Connector::new().rustls_0_23(Arc::new(tls))).finish();

    let res = client.get(format!("{https}/healthz")).send().await.unwrap();
    assert_eq!(res.status().as_u16(), 200);
    assert_eq!(res.headers().get("strict-transport-security").unwrap(), "max-age=31536000");

    let mut res = client
        .post(format!("{https}/cms/iap/auth/login"))
        .send_json(&json!({"username": "mark", "password": "a long enough password"}))
        .await
        .unwrap();
    assert_eq!(res.status().as_u16(), 200);
    let cookie = res.headers().get("set-cookie").unwrap().to_str().unwrap().to_string();
    assert!(cookie.split(';').any(|a| a.trim() == "Secure"), "over TLS the cookie is Secure: {cookie}");
    let user: Value = res.json().await.unwrap();
    assert_eq!(user["userName"], json!("mark"));

    // Plain HTTP on the same port gets no answer.
    assert!(awc::Client::default().get(format!("{}/healthz", app.base)).send().await.is_err());
}

#[test]
fn a_bad_certificate_configuration_stops_start_up_naming_the_key() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("cert.pem"), "not a certificate").unwrap();
    std::fs::write(dir.path().join("key.pem"), "not a key").unwrap();
    let env = [
        ("GATEHOUSE_TLS__CERT_FILE", "cert.pem"),
        ("GATEHOUSE_TLS__KEY_FILE", "key.pem"),
        ("GATEHOUSE_LISTEN", "127.0.0.1:0"),
    ];
    let out = crate::helpers::gatehouse_cli(dir.path(), &env, &["serve"], "");
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8(out.stderr).unwrap();
    assert!(err.contains("tls.cert_file"), "{err}");
    let out = crate::helpers::gatehouse_cli(dir.path(), &[("GATEHOUSE_TLS__CERT_FILE", "cert.pem")], &["serve"], "");
    assert_eq!(out.status.code(), Some(2), "a key file is needed too");
}
