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
        let mut res = http.post(format!("{base}/session")).send_json(&caps).await.unwrap();
        let v: Value = res.json().limit(1 << 20).await.unwrap();
        let session = v["value"]["sessionId"].as_str().unwrap_or_else(|| panic!("no session: {v}")).to_string();
        Browser { driver, base, session, http, _profile: profile }
    }

    /// The process group of the driver and its browser, and the profile directory.
    pub fn leftovers(&self) -> (u32, std::path::PathBuf) {
        (self.driver.id(), self._profile.path().to_path_buf())
    }

    async fn call(&self, method: &str, path: &str, body: Value) -> Value {
        let url = format!("{}/session/{}{}", self.base, self.session, path);
        let req = match method {
            "GET" => self.http.get(url),
            _ => self.http.post(url),
        };
        let mut res = if method == "GET" { req.send().await } else { req.send_json(&body).await }.unwrap();
        let v: Value = res.json().limit(8 << 20).await.unwrap();
        v["value"].clone()
    }

    pub async fn goto(&self, url: &str) {
        self.call("POST", "/url", json!({"url": url})).await;
    }

    /// The element matching a CSS selector, once it is there (up to 10 s).
    pub async fn find(&self, css: &str) -> String {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let v = self.call("POST", "/element", json!({"using": "css selector", "value": css})).await;
            if let Some(id) = v[ELEMENT].as_str() {
                return id.to_string();
            }
            assert!(Instant::now() < deadline, "no element {css}: {v}");
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
        let id = self.find(css).await;
        self.call("GET", &format!("/element/{id}/text"), Value::Null).await.as_str().unwrap_or_default().to_string()
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
        let v = self
            .call("POST", &format!("/webauthn/authenticator/{authenticator}/uv"), json!({"isUserVerified": verified}))
            .await;
        assert!(v.get("error").is_none(), "set user verified: {v}");
    }

    /// Waits up to 10 s for the element's text to contain `want`; returns the text seen last.
    pub async fn wait_text(&self, css: &str, want: &str) -> String {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let t = self.text(css).await;
            if t.contains(want) || Instant::now() > deadline {
                return t;
            }
            actix_web::rt::time::sleep(Duration::from_millis(100)).await;
        }
    }
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
