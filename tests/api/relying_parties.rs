//! OpenID Connect against real relying parties, never a mock of one: Authlib's client (PyPI),
//! run by `tests/rp/authlib_rp.py`, and Debian's Apache with mod_auth_openidc, configured with
//! README's block as printed and driven by headless Chromium.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use gatehouse::core::apps::Door;
use gatehouse::core::oidc::ClientSettings;
use serde_json::{json, Value};

use crate::browser::{browser_here, Browser};
use crate::helpers::{free_port, have, readme_block, spawn_app_with, system_binary, KillOnDrop, TestApp};

const PASSWORD: &str = "a long enough password";
/// The Authlib client's redirect URI: the script reads the code off the Location, never fetches it.
const AUTHLIB_REDIRECT: &str = "https://authlib.example/callback";

fn script(name: &str) -> String {
    format!("{}/tests/rp/{name}", env!("CARGO_MANIFEST_DIR"))
}

/// Runs a command off the executor (the server answers it meanwhile): status, stdout, stderr.
async fn run(mut cmd: Command) -> (bool, String, String) {
    let out = actix_web::rt::task::spawn_blocking(move || cmd.stdin(Stdio::null()).output().unwrap()).await.unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// One run of the Authlib relying party: its JSON report (the test fails with its stderr otherwise).
async fn authlib(app: &TestApp, secret: &str, extra: &[&str]) -> Value {
    let mut cmd = Command::new("python3");
    cmd.arg(script("authlib_rp.py"))
        .args(["--issuer", &app.base, "--client-id", "authlib", "--client-secret", secret])
        .args(["--redirect-uri", AUTHLIB_REDIRECT, "--login", "ann", "--password", PASSWORD])
        .args(extra);
    let started = Instant::now();
    let (ok, stdout, stderr) = run(cmd).await;
    assert!(ok, "authlib_rp.py failed after {:?}:\n{stderr}\n{stdout}", started.elapsed());
    serde_json::from_str(stdout.trim())
        .unwrap_or_else(|e| panic!("authlib_rp.py printed no JSON ({e}): {stdout}\n{stderr}"))
}

#[actix_web::test]
async fn authlib_validates_id_tokens_strictly_refreshes_revokes_and_survives_a_key_rotation() {
    if !have("python3 with authlib and requests", Command::new("python3").args(["-c", "import authlib, requests"])) {
        return;
    }
    let delay = Duration::from_secs(2);
    let app = spawn_app_with(|c| c.oidc.key_publication_delay = gatehouse::config::Seconds(delay)).await;
    let secret = app
        .core
        .add_client(
            "authlib",
            None,
            false,
            // Oauth: the client revokes its own refresh token at /oauth2/revoke.
            &[Door::Oauth],
            ClientSettings {
                redirect_uris: Some(vec![AUTHLIB_REDIRECT.into()]),
                first_party: Some(true),
                ..Default::default()
            },
        )
        .unwrap()
        .unwrap()
        .expose()
        .to_string();
    let ann = app.add_user("ann", PASSWORD, &["authlib"]);

    let first = authlib(&app, &secret, &[]).await;
    let sub = json!(ann.id.to_string());
    let claims = &first["claims"];
    assert_eq!(claims["sub"], sub, "sub is the user's stable id, never the login: {claims}");
    assert_eq!(claims["iss"], json!(app.base));
    assert_eq!(claims["aud"], json!("authlib"));
    assert_eq!(claims["nonce"], first["nonce"]);
    assert!(claims["at_hash"].is_string(), "{claims}");
    assert_eq!(first["header"]["alg"], "RS256", "RS256 by default: every RP takes it");
    assert_eq!(first["userinfo"]["sub"], sub);
    assert_eq!(first["userinfo"]["preferred_username"], "ann");
    assert_eq!(first["userinfo"]["email"], "ann@example.com");
    assert_eq!(first["refreshed"]["sub"], sub);
    assert_eq!(first["revoked"], "invalid_grant", "a revoked refresh token refreshes nothing");

    // A rotation: the next key is published at once, signs after the delay; the old one stays.
    let core = app.core.clone();
    let rotated = actix_web::rt::task::spawn_blocking(move || core.rotate_signing_keys(None)).await.unwrap().unwrap();
    assert!(rotated.iter().all(|r| r.created), "a new key for every algorithm");
    actix_web::rt::time::sleep(delay + Duration::from_millis(700)).await;

    let old_kid = first["header"]["kid"].as_str().unwrap();
    let id_token = first["id_token"].as_str().unwrap();
    let (nonce, access) = (first["nonce"].as_str().unwrap(), first["access_token"].as_str().unwrap());
    let after =
        authlib(&app, &secret, &["--old-id-token", id_token, "--old-nonce", nonce, "--old-access-token", access]).await;
    let new_kid = after["header"]["kid"].as_str().unwrap();
    assert_ne!(new_kid, old_kid, "after the delay the new key signs");
    assert!(rotated.iter().any(|r| r.kid == new_kid), "the key that signs is the rotated one");
    let kids = after["jwks_kids"].as_array().unwrap();
    assert!(kids.contains(&json!(old_kid)), "the old public key is still published: {kids:?}");
    assert_eq!(after["claims"]["sub"], sub);
    assert_eq!(after["old_claims"]["sub"], sub, "the id_token from before the rotation still validates");
    assert_eq!(after["old_header"]["kid"], json!(old_kid));
}

// ----- Apache with mod_auth_openidc -----

/// The protected static page, the unprotected page RP-initiated logout lands on.
const PROTECTED_PAGE: &str = "<!doctype html><title>protected</title><p id=\"hello\">the protected page</p>\n";
const LOGGED_OUT_PAGE: &str =
    "<!doctype html><title>logged out</title><p id=\"bye\">signed out of the application</p>\n";

/// Debian's Apache, on `port`, with README's mod_auth_openidc block in a virtual host.
fn start_apache(dir: &Path, port: u16, block: &str) -> KillOnDrop {
    let d = dir.display();
    let docs = dir.join("htdocs");
    std::fs::create_dir_all(docs.join("protected")).unwrap();
    std::fs::write(docs.join("protected/index.html"), PROTECTED_PAGE).unwrap();
    std::fs::write(docs.join("loggedout.html"), LOGGED_OUT_PAGE).unwrap();
    // Run as root (CI), Apache serves as another user: nobody, who must read the pages.
    let root = unsafe { libc::geteuid() } == 0;
    let user = if root { "User #65534\nGroup #65534" } else { "" };
    if root {
        use std::os::unix::fs::PermissionsExt;
        for p in [dir.to_path_buf(), docs.clone(), docs.join("protected")] {
            std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
        }
    }
    let m = "/usr/lib/apache2/modules";
    let conf = format!(
        "ServerRoot \"{d}\"
ServerName 127.0.0.1
Listen 127.0.0.1:{port}
PidFile {d}/apache2.pid
DefaultRuntimeDir {d}
Mutex file:{d} default
ErrorLog {d}/error.log
LogLevel warn auth_openidc:debug
{user}
LoadModule mpm_event_module {m}/mod_mpm_event.so
LoadModule authz_core_module {m}/mod_authz_core.so
LoadModule authz_user_module {m}/mod_authz_user.so
LoadModule authn_core_module {m}/mod_authn_core.so
LoadModule mime_module {m}/mod_mime.so
LoadModule dir_module {m}/mod_dir.so
LoadModule auth_openidc_module {m}/mod_auth_openidc.so
TypesConfig /etc/mime.types
DirectoryIndex index.html
<VirtualHost 127.0.0.1:{port}>
    DocumentRoot {d}/htdocs
    <Directory {d}/htdocs>
        Require all granted
    </Directory>
{block}
</VirtualHost>
"
    );
    std::fs::write(dir.join("httpd.conf"), &conf).unwrap();
    let apache = system_binary("/usr/sbin/apache2");
    let conf_path = format!("{d}/httpd.conf");
    let check = Command::new(apache).args(["-t", "-f", &conf_path]).output().unwrap();
    assert!(check.status.success(), "apache2 -t: {}\n{conf}", String::from_utf8_lossy(&check.stderr));
    // -X: one process, in the foreground, that KillOnDrop ends with everything it serves.
    let child = KillOnDrop(
        Command::new(apache)
            .args(["-X", "-f", &conf_path])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "apache did not start: {}", apache_log(dir));
        std::thread::sleep(Duration::from_millis(50));
    }
    child
}

fn apache_log(dir: &Path) -> String {
    let log = std::fs::read_to_string(dir.join("error.log")).unwrap_or_default();
    // The end is what matters; debug lines are many.
    let lines: Vec<&str> = log.lines().filter(|l| !l.contains(":debug]")).collect();
    lines[lines.len().saturating_sub(40)..].join("\n")
}

/// The claims apache's info hook shows for the session of this browser.
async fn info(browser: &Browser, apache: &str) -> Value {
    browser.goto(&format!("{apache}/protected/redirect_uri?info=json")).await;
    let text = browser.wait_text("body", "userinfo").await;
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("the info hook's JSON ({e}): {text}"))
}

/// Signs `login` in from apache's protected page: gatehouse's sign-in page, then (when given) the
/// second-factor page with the code `code()` computes at that moment; back at the protected page.
async fn sign_in(browser: &Browser, apache: &str, login: &str, code: Option<&dyn Fn() -> String>, dir: &Path) {
    browser.goto(&format!("{apache}/protected/")).await;
    // Gatehouse's sign-in page every time: apache's session and gatehouse's ended at the logout.
    browser.find("#login-form").await;
    browser.type_into("#login", login).await;
    browser.type_into("#password", PASSWORD).await;
    browser.click("#submit").await;
    if let Some(code) = code {
        browser.find("#second-factor-form").await;
        browser.type_into("#code", &code()).await;
        browser.click("#submit").await;
    }
    let seen = browser.wait_text("body", "the protected page").await;
    if seen.contains("did not come from this page") {
        // Chromium sends `Origin: null` with the form of a page served `Referrer-Policy:
        // no-referrer` (Fetch, "serializing a request origin"): gatehouse must take it.
        panic!("gatehouse refused Chromium's POST of its own form: {seen}");
    }
    assert!(seen.contains("the protected page"), "not back at the protected page: {seen}\n{}", apache_log(dir));
}

#[actix_web::test]
async fn the_readme_mod_auth_openidc_block_signs_in_shows_claims_logs_out_and_takes_a_totp() {
    let apache_here = have("apache2", Command::new(system_binary("/usr/sbin/apache2")).arg("-v"))
        && have("mod_auth_openidc", Command::new("test").args(["-f", "/usr/lib/apache2/modules/mod_auth_openidc.so"]));
    if !apache_here || !browser_here() {
        return;
    }
    let app = spawn_app_with(|_| {}).await;
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let apache = format!("http://127.0.0.1:{port}");
    let secret = app
        .core
        .add_client(
            "app",
            None,
            false,
            &[],
            ClientSettings {
                redirect_uris: Some(vec![format!("{apache}/protected/redirect_uri")]),
                post_logout_uris: Some(vec![format!("{apache}/loggedout.html")]),
                first_party: Some(true),
                ..Default::default()
            },
        )
        .unwrap()
        .unwrap()
        .expose()
        .to_string();
    let ann = app.add_user("ann", PASSWORD, &["app"]);
    let block = readme_block("mod_auth_openidc")
        .replace("https://box.example", &app.base)
        .replace("https://app.example", &apache)
        .replace("CLIENT_SECRET", &secret)
        .replace("CRYPTO_PASSPHRASE", "the-test-s-own-passphrase");
    assert!(!block.contains(".example"), "every placeholder replaced: {block}");
    let _apache = start_apache(dir.path(), port, &block);
    let browser = Browser::start().await;

    // Not signed in: apache sends the browser to gatehouse's sign-in page.
    browser.goto(&format!("{apache}/protected/")).await;
    let page = browser.wait_text("body", "Sign in").await;
    assert!(page.contains("Sign in"), "gatehouse's sign-in page: {page}\n{}", apache_log(dir.path()));
    sign_in(&browser, &apache, "ann", None, dir.path()).await;
    let i = info(&browser, &apache).await;
    let sub = json!(ann.id.to_string());
    assert_eq!(i["id_token"]["sub"], sub, "{i}");
    assert_eq!(i["id_token"]["iss"], json!(app.base));
    assert_eq!(i["id_token"]["aud"], json!("app"));
    assert_eq!(i["userinfo"]["sub"], sub);
    assert_eq!(i["userinfo"]["preferred_username"], "ann");
    assert_eq!(i["userinfo"]["email"], "ann@example.com");
    assert_eq!(i["remote_user"], "ann", "OIDCRemoteUserClaim preferred_username: {i}");
    assert!(i["access_token"].is_string(), "{i}");

    // RP-initiated logout: apache's session ends, gatehouse asks, then ends its own.
    let logged_out = format!("{apache}/loggedout.html");
    let encoded: String = url::form_urlencoded::byte_serialize(logged_out.as_bytes()).collect();
    browser.goto(&format!("{apache}/protected/redirect_uri?logout={encoded}")).await;
    browser.find("#logout-form").await;
    browser.click("#logout").await;
    let bye = browser.wait_text("body", "signed out of the application").await;
    assert!(bye.contains("signed out of the application"), "not on loggedout.html: {bye}\n{}", apache_log(dir.path()));

    // A second sign-in, of a user with TOTP: the password, then the code, then the page.
    let bob = app.add_user("bob", PASSWORD, &["app"]);
    let enrolment = app.core.totp_begin(&bob).unwrap();
    let base32 = enrolment.secret.expose().to_string();
    // The code of the time step `offset` steps from now, as an authenticator app computes it.
    let code_at = move |offset: i64| {
        let out = Command::new("python3")
            .arg(script("totp.py"))
            .args([base32.as_str(), "--step-offset", offset.to_string().as_str()])
            .output()
            .unwrap();
        assert!(out.status.success(), "totp.py: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8(out.stdout).unwrap().trim().to_string()
    };
    // A code is good once, and so is its time step. Confirmed with the last step's code (a clock a
    // step behind is accepted), the sign-in can use the code of now at once; else it waits for the
    // next step.
    let local = gatehouse::core::guard::Caller::local();
    let used = match app.core.totp_confirm(&local, &bob, &code_at(-1)) {
        Ok(_) => code_at(-1),
        Err(_) => {
            let now = code_at(0);
            app.core.totp_confirm(&local, &bob, &now).unwrap();
            now
        }
    };
    let next_code = move || {
        let deadline = Instant::now() + Duration::from_secs(31);
        loop {
            let c = code_at(0);
            if c != used || Instant::now() > deadline {
                return c;
            }
            std::thread::sleep(Duration::from_millis(250));
        }
    };
    sign_in(&browser, &apache, "bob", Some(&next_code), dir.path()).await;
    let i = info(&browser, &apache).await;
    assert_eq!(i["id_token"]["sub"], json!(bob.id.to_string()), "{i}");
    assert_eq!(i["userinfo"]["preferred_username"], "bob");
    let amr = i["id_token"]["amr"].as_array().cloned().unwrap_or_default();
    assert!(amr.contains(&json!("pwd")) && amr.contains(&json!("otp")), "the id_token says a code was used too: {i}");
}
