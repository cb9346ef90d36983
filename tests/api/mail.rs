//! The outbox delivering through a real SMTP server process (Python's aiosmtpd) on loopback.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::json;

use crate::helpers::{free_port, have, link_in, spawn_app_in, spawn_app_with, TestApp};

const PASSWORD: &str = "correct horse battery";

struct Smtpd {
    child: Child,
    maildir: PathBuf,
}

impl Drop for Smtpd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn aiosmtpd_here() -> bool {
    have("aiosmtpd (pip install aiosmtpd)", Command::new("python3").args(["-c", "import aiosmtpd"]))
}

/// aiosmtpd storing what it receives in a maildir, listening on `port` once this returns.
fn smtpd(port: u16, maildir: &Path) -> Smtpd {
    let child = Command::new("python3")
        .args(["-m", "aiosmtpd", "-n", "-l", &format!("127.0.0.1:{port}"), "-c", "aiosmtpd.handlers.Mailbox"])
        .arg(maildir)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(15);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "aiosmtpd did not start");
        std::thread::sleep(Duration::from_millis(50));
    }
    Smtpd { child, maildir: maildir.to_path_buf() }
}

impl Smtpd {
    fn received(&self) -> Vec<String> {
        let Ok(rd) = std::fs::read_dir(self.maildir.join("new")) else { return Vec::new() };
        rd.map(|e| std::fs::read_to_string(e.unwrap().path()).unwrap()).collect()
    }

    async fn wait_received(&self, n: usize) -> Vec<String> {
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            let got = self.received();
            if got.len() >= n || Instant::now() > deadline {
                return got;
            }
            actix_web::rt::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

fn smtp(c: &mut gatehouse::config::Config, port: u16) {
    c.mail.smtp_host = "127.0.0.1".into();
    c.mail.smtp_port = port;
    c.mail.smtp_security = "none".into();
    c.mail.from = "gatehouse@box.example".into();
    c.mail.retry_initial = gatehouse::config::Seconds(Duration::from_millis(200));
    c.mail.retry_max = gatehouse::config::Seconds(Duration::from_millis(400));
}

async fn ask_reset(app: &TestApp) {
    let body = json!({"userName": "mark", "emailAddress": "mark@example.com"}).to_string().into_bytes();
    let a = app.send("POST", "/cms/iap/auth/resetPwd", &[], Some(("application/json", body))).await;
    assert_eq!(a.status, 200);
}

#[actix_web::test]
async fn reset_mail_is_delivered_over_smtp_and_leaves_the_outbox() {
    if !aiosmtpd_here() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let server = smtpd(port, &dir.path().join("maildir"));
    let app = spawn_app_with(|c| smtp(c, port)).await;
    app.add_user("mark", PASSWORD, &["cms"]);
    ask_reset(&app).await;
    let got = server.wait_received(1).await;
    assert_eq!(got.len(), 1);
    assert!(got[0].contains("To: mark@example.com"), "{}", got[0]);
    assert!(got[0].contains("From: gatehouse@box.example"), "{}", got[0]);
    let link = link_in(&got[0], "reset").expect("the link arrives whole");
    assert_eq!(app.get(&link).await.status, 200);
    let deadline = Instant::now() + Duration::from_secs(5);
    while !app.outbox().is_empty() && Instant::now() < deadline {
        actix_web::rt::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(app.outbox().is_empty(), "a delivered message leaves the outbox");
}

#[actix_web::test]
async fn a_server_down_at_first_gets_the_message_once_when_it_comes_up() {
    if !aiosmtpd_here() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let app = spawn_app_with(|c| smtp(c, port)).await;
    app.add_user("mark", PASSWORD, &["cms"]);
    ask_reset(&app).await;
    assert_eq!(app.wait_outbox(1).await.len(), 1);
    // Several tries fail while nothing listens; the message stays.
    actix_web::rt::time::sleep(Duration::from_millis(900)).await;
    assert_eq!(app.outbox().len(), 1);

    let server = smtpd(port, &dir.path().join("maildir"));
    assert_eq!(server.wait_received(1).await.len(), 1);
    actix_web::rt::time::sleep(Duration::from_millis(1200)).await;
    assert_eq!(server.received().len(), 1, "delivered once, not once per try");
    assert!(app.outbox().is_empty());
}

#[actix_web::test]
async fn a_message_left_in_the_outbox_is_sent_by_the_next_process() {
    if !aiosmtpd_here() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    // The first server's SMTP never comes up: the message waits in the outbox on disk.
    let dead = free_port();
    let first = spawn_app_in(tempfile::tempdir().unwrap(), &data, |c| smtp(c, dead)).await;
    first.add_user("mark", PASSWORD, &["cms"]);
    ask_reset(&first).await;
    assert_eq!(first.wait_outbox(1).await.len(), 1);

    // A later process on the same data directory, with a working SMTP server, delivers it.
    let port = free_port();
    let server = smtpd(port, &dir.path().join("maildir"));
    let _second = spawn_app_in(tempfile::tempdir().unwrap(), &data, |c| smtp(c, port)).await;
    let got = server.wait_received(1).await;
    assert_eq!(got.len(), 1);
    assert!(link_in(&got[0], "reset").is_some());
}
