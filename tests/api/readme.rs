//! The README's walk-throughs (ForePaaS, the CMS, IAMPASS, IQM), run as printed against a server started the
//! way it says; the IAMPASS sign-in's approval is given on the device page in a real browser.

use std::process::{Command, Stdio};

use crate::helpers::{binary, free_port, serve};

/// The shell lines between `<!-- NAME:begin -->` and `<!-- NAME:end -->`.
fn block(name: &str) -> String {
    let readme = include_str!("../../README.md");
    let start = readme.find(&format!("<!-- {name}:begin -->")).expect("the block is marked");
    let end = readme.find(&format!("<!-- {name}:end -->")).expect("the block is marked");
    readme[start..end]
        .lines()
        .filter(|l| !l.starts_with("```") && !l.starts_with("<!--"))
        .collect::<Vec<_>>()
        .join("\n")
}

#[test]
fn the_readme_walkthroughs_work_as_printed() {
    let script = format!(
        "{}\n{}\n{}\n{}",
        block("walkthrough"),
        block("walkthrough-cms"),
        block("walkthrough-iampass"),
        block("walkthrough-iqm")
    );

    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let _server = serve(dir.path(), &[], port, Stdio::null());
    let script = script
        .replace("./target/release/gatehouse", &binary().display().to_string())
        .replace("127.0.0.1:8080", &format!("127.0.0.1:{port}"));
    let out = Command::new("bash")
        .args(["-euo", "pipefail", "-c", &script])
        .current_dir(dir.path())
        .env("GATEHOUSE_LISTEN", format!("127.0.0.1:{port}"))
        .env_remove("RUST_LOG")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    // Two password logins' worth of users, a check, a logout, a refused check, an API-key login.
    assert_eq!(stdout.matches("\"user\":\"M. John Doe\"").count(), 3, "{stdout}");
    assert!(stdout.contains("\"app_id\":\"forepaas\""), "{stdout}");
    assert!(stdout.contains("{\"success\":true,\"status\":200,"), "{stdout}");
    assert!(stdout.contains("\"error\":\"Invalid token\""), "{stdout}");
    // The CMS part: the timeout, the user object twice (login, current), the reset mail listed.
    assert!(stdout.contains("86400000"), "{stdout}");
    assert_eq!(stdout.matches("\"userName\":\"john.doe\"").count(), 2, "{stdout}");
    // The IAMPASS part: the signed calls answer as printed.
    assert!(
        stdout.contains("201 {\"status\":true,\"users\":{\"created\":[\"alice@example.com\"],\"existing\":[]}}"),
        "{stdout}"
    );
    assert!(stdout.contains(&format!("200 {{\"register_url\":\"http://127.0.0.1:{port}/register/")), "{stdout}");
    assert!(stdout.contains("200 {\"device_registered\":false,\"status\":true}"), "{stdout}");
    // The IQM part.
    assert!(stdout.contains("\"scope\":\"read write\",\"token_type\":\"bearer\",\"expires_in\":86400}}"), "{stdout}");
    assert!(stdout.contains("\"owId\":200001"), "{stdout}");
    assert!(stdout.contains("\"clientId\":\"my-iqm-client\""), "{stdout}");
    assert!(stdout.contains("{\"success\":true,\"data\":\"User logged out successfully.\"}"), "{stdout}");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    while std::fs::read_dir(dir.path().join("data/outbox")).unwrap().count() == 0 {
        assert!(std::time::Instant::now() < deadline, "the reset mail reaches the outbox");
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}

/// The IAMPASS walk-through to its end: the management calls as printed, the link opened and the
/// device registered in a real browser, then the sign-in script as printed (the vendor's client),
/// approved on the device page while it waits.
#[actix_web::test]
async fn the_readme_iampass_walkthrough_ends_with_a_sign_in_approved_on_the_page() {
    use crate::browser::{browser_here, Browser};
    if !browser_here() || !crate::signins::vendor_here() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let _server = serve(dir.path(), &[], port, Stdio::null());
    let printed = |name: &str| {
        block(name)
            .replace("./target/release/gatehouse", &binary().display().to_string())
            .replace("127.0.0.1:8080", &format!("127.0.0.1:{port}"))
    };
    let script = format!("{}\necho \"SECRET=$SECRET\"", printed("walkthrough-iampass"));
    let out = Command::new("bash")
        .args(["-euo", "pipefail", "-c", &script])
        .current_dir(dir.path())
        .env("GATEHOUSE_LISTEN", format!("127.0.0.1:{port}"))
        .env_remove("RUST_LOG")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(out.status.success(), "{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    let link = crate::helpers::link_in(&stdout, "register").expect("the walk-through prints a register_url");
    let secret = stdout.lines().find_map(|l| l.strip_prefix("SECRET=")).unwrap().to_string();

    let browser = Browser::start().await;
    browser.goto(&format!("http://127.0.0.1:{port}{link}")).await;
    assert_eq!(browser.text("#display-name").await, "Alice Smith");
    browser.click("#register").await;
    browser.wait_text("#result", "approve your sign-ins").await;
    browser.click("#open-device").await;
    browser.wait_text("#device-status", "Approve or refuse").await;

    let signin = Command::new("bash")
        .args(["-euo", "pipefail", "-c", &printed("walkthrough-signin")])
        .current_dir(dir.path())
        .env("APP", "my-app")
        .env("SECRET", &secret)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    assert_eq!(browser.wait_text(".request .req-app", "my-app").await, "my-app", "the page shows the request");
    browser.click(".request .approve").await;
    let out = tokio::task::spawn_blocking(move || signin.wait_with_output().unwrap()).await.unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(stdout, "pending\nactive\nTrue\n", "as printed");
}
