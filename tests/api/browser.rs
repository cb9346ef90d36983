//! A real headless Chromium driven over WebDriver (Debian's chromium and chromium-driver).
//!
//! The WebDriver calls the tests need are a few JSON requests; they are written here over awc, the
//! HTTP client the tests already use, rather than pulling in a WebDriver crate and its own HTTP
//! stack for them.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::helpers::{free_port, have};

const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";

pub struct Browser {
    driver: Child,
    base: String,
    session: String,
    http: awc::Client,
    _profile: tempfile::TempDir,
}

impl Drop for Browser {
    fn drop(&mut self) {
        // chromedriver leads a process group of its own, and Chromium's processes are in it: the
        // whole group goes, or a killed driver would leave its browser (and its renderers) behind,
        // holding the profile directory, which is removed after.
        kill_group(self.driver.id());
        let _ = self.driver.wait();
        let deadline = Instant::now() + Duration::from_secs(5);
        while !alive_in_group(self.driver.id()).is_empty() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

fn kill_group(pgid: u32) {
    // SAFETY: kill(2) with a negative pid signals the process group; no memory is involved.
    unsafe {
        libc::kill(-(pgid as i32), libc::SIGKILL);
    }
}

/// The processes of group `pgid` still running (zombies, waiting for a parent to reap them, are
/// gone as far as anyone can tell).
pub fn alive_in_group(pgid: u32) -> Vec<u32> {
    let mut alive = Vec::new();
    for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else { continue };
        let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else { continue };
        // pid (comm) state ppid pgrp ...: comm may hold spaces, so read after its last ')'.
        let Some(rest) = stat.rsplit_once(')').map(|(_, r)| r) else { continue };
        let fields: Vec<&str> = rest.split_whitespace().collect();
        if fields.len() > 2 && fields[2] == pgid.to_string() && fields[0] != "Z" && fields[0] != "X" {
            alive.push(pid);
        }
    }
    alive
}

/// True when chromium and chromedriver are here (on CI they must be).
pub fn browser_here() -> bool {
    have("chromium", Command::new("chromium").arg("--version"))
        && have("chromedriver", Command::new("chromedriver").arg("--version"))
}

impl Browser {
    pub async fn start() -> Browser {
        let port = free_port();
        use std::os::unix::process::CommandExt;
        let driver = Command::new("chromedriver")
            .process_group(0)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let base = format!("http://127.0.0.1:{port}");
        let http = awc::Client::builder().timeout(Duration::from_secs(60)).finish();
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Ok(mut res) = http.get(format!("{base}/status")).send().await {
                if res.json::<Value>().await.is_ok_and(|v| v["value"]["ready"] == json!(true)) {
                    break;
                }
            }
            assert!(Instant::now() < deadline, "chromedriver did not start");
            actix_web::rt::time::sleep(Duration::from_millis(100)).await;
        }
        let profile = tempfile::tempdir().unwrap();
        let caps = json!({"capabilities": {"alwaysMatch": {"goog:chromeOptions": {
            "binary": "/usr/bin/chromium",
            "args": ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--disable-quic",
                     "--no-first-run", "--disable-background-networking", "--disable-component-update",
                     "--disable-sync", format!("--user-data-dir={}", profile.path().display())]
        }}}});
        let v = command(&http, "POST", &format!("{base}/session"), caps).await.unwrap_or_else(|f| panic!("{f}"));
        let session = v["sessionId"].as_str().unwrap_or_else(|| panic!("no session: {v}")).to_string();
        Browser { driver, base, session, http, _profile: profile }
    }

    /// The process group of the driver and its browser, and the profile directory.
    pub fn leftovers(&self) -> (u32, std::path::PathBuf) {
        (self.driver.id(), self._profile.path().to_path_buf())
    }

    /// A command of this session: its value, or a panic naming the command and WebDriver's error.
    async fn call(&self, method: &str, path: &str, body: Value) -> Value {
        self.try_call(method, path, body).await.unwrap_or_else(|f| panic!("{f}"))
    }

    async fn try_call(&self, method: &str, path: &str, body: Value) -> Result<Value, Failure> {
        command(&self.http, method, &format!("{}/session/{}{}", self.base, self.session, path), body).await
    }

    pub async fn goto(&self, url: &str) {
        self.call("POST", "/url", json!({"url": url})).await;
    }

    /// The element matching a CSS selector, once it is there (up to 10 s).
    pub async fn find(&self, css: &str) -> String {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            match self.try_call("POST", "/element", json!({"using": "css selector", "value": css})).await {
                Ok(v) => return v[ELEMENT].as_str().unwrap_or_else(|| panic!("element {css}: {v}")).to_string(),
                Err(f) if f.error == "no such element" && Instant::now() < deadline => {}
                Err(f) => panic!("no element {css}: {f}"),
            }
            actix_web::rt::time::sleep(Duration::from_millis(100)).await;
        }
    }

    pub async fn type_into(&self, css: &str, text: &str) {
        let id = self.find(css).await;
        self.call("POST", &format!("/element/{id}/value"), json!({"text": text})).await;
    }

    pub async fn click(&self, css: &str) {
        let id = self.find(css).await;
        self.call("POST", &format!("/element/{id}/click"), json!({})).await;
    }

    pub async fn text(&self, css: &str) -> String {
        self.try_text(css).await.unwrap_or_else(|f| panic!("{f}"))
    }

    async fn try_text(&self, css: &str) -> Result<String, Failure> {
        let id = self.find(css).await;
        let v = self.try_call("GET", &format!("/element/{id}/text"), Value::Null).await?;
        Ok(v.as_str().unwrap_or_else(|| panic!("text of {css}: {v}")).to_string())
    }

    /// Adds a WebDriver virtual authenticator: a platform authenticator (face or fingerprint)
    /// that can verify the user. Answers its id.
    pub async fn add_platform_authenticator(&self) -> String {
        let options = json!({"protocol": "ctap2", "transport": "internal", "hasResidentKey": true,
                             "hasUserVerification": true, "isUserConsenting": true, "isUserVerified": true});
        let v = self.call("POST", "/webauthn/authenticator", options).await;
        v.as_str().unwrap_or_else(|| panic!("no virtual authenticator: {v}")).to_string()
    }

    /// Whether the virtual authenticator's user verification (the face, the finger) succeeds.
    pub async fn set_user_verified(&self, authenticator: &str, verified: bool) {
        self.call("POST", &format!("/webauthn/authenticator/{authenticator}/uv"), json!({"isUserVerified": verified}))
            .await;
    }

    /// Waits up to 10 s for the element's text to contain `want`; returns the text seen last.
    pub async fn wait_text(&self, css: &str, want: &str) -> String {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            // The page may draw the element again between finding it and reading it: read it anew.
            let t = match self.try_text(css).await {
                Err(f) if f.error == "stale element reference" => String::new(),
                read => read.unwrap_or_else(|f| panic!("{f}")),
            };
            if t.contains(want) || Instant::now() > deadline {
                return t;
            }
            actix_web::rt::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

/// A WebDriver command that failed: the command, and the W3C error object's `error` and `message`
/// (or the HTTP status and body when the driver sent none).
#[derive(Debug)]
struct Failure {
    command: String,
    error: String,
    message: String,
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "WebDriver {} failed: {}: {}", self.command, self.error, self.message)
    }
}

/// One WebDriver command (a GET, or a POST of `body`): its `value` when the driver answers 2xx
/// without an error object, else the Failure.
async fn command(http: &awc::Client, method: &str, url: &str, body: Value) -> Result<Value, Failure> {
    let path = url.splitn(4, '/').nth(3).unwrap_or(url);
    let failure = |error: String, message: String| Failure { command: format!("{method} /{path}"), error, message };
    let sent = if method == "GET" { http.get(url).send().await } else { http.post(url).send_json(&body).await };
    let mut res = sent.map_err(|e| failure("no answer".into(), e.to_string()))?;
    let bytes = res.body().limit(8 << 20).await.map_err(|e| failure("no body".into(), e.to_string()))?;
    let v: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
    if let Some(error) = v["value"]["error"].as_str() {
        let message = v["value"]["message"].as_str().unwrap_or_default();
        return Err(failure(error.into(), message.into()));
    }
    if !res.status().is_success() || v.get("value").is_none() {
        return Err(failure(format!("HTTP {}", res.status()), String::from_utf8_lossy(&bytes).into_owned()));
    }
    Ok(v["value"].clone())
}

#[actix_web::test]
async fn a_browser_leaves_no_process_or_profile_directory_behind() {
    if !browser_here() {
        return;
    }
    let browser = Browser::start().await;
    browser.goto("about:blank").await;
    let (group, profile) = browser.leftovers();
    assert!(alive_in_group(group).len() >= 2, "chromedriver and its Chromium share the group");
    assert!(profile.is_dir());
    drop(browser);
    assert_eq!(alive_in_group(group), Vec::<u32>::new(), "every process of the group is gone");
    assert!(!profile.exists(), "the profile directory is removed");
}

#[actix_web::test]
async fn a_failed_command_fails_at_once_with_the_drivers_error() {
    if !browser_here() {
        return;
    }
    let browser = Browser::start().await;
    browser.goto("about:blank").await;
    let started = Instant::now();
    let failed = browser.try_call("POST", "/element/no-such-id/click", json!({})).await.unwrap_err();
    assert!(started.elapsed() < Duration::from_secs(5), "answered at once");
    assert_eq!(failed.error, "no such element", "{failed}");
    let said = failed.to_string();
    assert!(
        said.starts_with("WebDriver POST /session/") && said.contains("/element/no-such-id/click failed: "),
        "{said}"
    );
}
