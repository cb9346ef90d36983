//! gatehouse as a service manager runs it: signals, readiness, the operator's flags, the
//! container's health check. Each test runs the real binary.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::os::unix::net::UnixDatagram;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::helpers::{binary, free_port, gatehouse_cli};

/// `GET path` over a fresh connection; the status line and body, or None when nothing answered.
fn get(port: u16, path: &str) -> Option<String> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(10))).ok()?;
    s.write_all(format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").as_bytes()).ok()?;
    let mut out = String::new();
    s.read_to_string(&mut out).ok()?;
    (!out.is_empty()).then_some(out)
}

fn healthy(port: u16) -> bool {
    get(port, "/healthz").is_some_and(|a| a.starts_with("HTTP/1.1 200"))
}

fn wait_healthy(port: u16, child: &mut Child) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !healthy(port) {
        assert!(child.try_wait().unwrap().is_none(), "gatehouse exited before it was healthy");
        assert!(Instant::now() < deadline, "gatehouse did not become healthy");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// `gatehouse serve --listen --data` with only the flags (an empty configuration).
fn serve_with_flags(cwd: &Path, port: u16, env: &[(&str, &str)]) -> Child {
    Command::new(binary())
        .current_dir(cwd)
        .env_remove("RUST_LOG")
        .envs(env.iter().copied())
        .args(["--config", "/dev/null", "serve", "--listen", &format!("127.0.0.1:{port}"), "--data"])
        .arg(cwd.join("elsewhere"))
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

fn signal(child: &Child, sig: i32) {
    // SAFETY: kill(2) with a child's pid and a signal number; no memory is involved.
    assert_eq!(unsafe { libc::kill(child.id() as i32, sig) }, 0);
}

/// Waits for the child to exit (up to 30 s); its status and what it logged.
fn exited(mut child: Child) -> (std::process::ExitStatus, String) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            let mut log = String::new();
            child.stderr.take().unwrap().read_to_string(&mut log).unwrap();
            return (status, log);
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("gatehouse did not exit");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn sighup_never_stops_the_server_and_sigterm_drains_the_request_under_way_then_exits_0() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let mut child = serve_with_flags(dir.path(), port, &[("GATEHOUSE_HTTP__SHUTDOWN_TIMEOUT", "20")]);
    wait_healthy(port, &mut child);
    assert!(dir.path().join("elsewhere/gatehouse.db").is_file(), "--data named the data directory");

    for _ in 0..3 {
        signal(&child, libc::SIGHUP);
        std::thread::sleep(Duration::from_millis(200));
        assert!(child.try_wait().unwrap().is_none(), "SIGHUP stopped the server");
        assert!(healthy(port), "answering after SIGHUP");
    }

    // A request under way: its head and half its body sent before SIGTERM, the rest after.
    let body =
        br#"{"login":"nobody","password":"not it","app_id":"forepaas","auth_mode":"forepaas_id_resource_owner"}"#;
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    let head = format!(
        "POST /iam/login HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    s.write_all(head.as_bytes()).unwrap();
    s.write_all(&body[..10]).unwrap();
    std::thread::sleep(Duration::from_millis(300));
    signal(&child, libc::SIGTERM);
    std::thread::sleep(Duration::from_millis(300));
    assert!(get(port, "/healthz").is_none(), "no new connection is served once stopping");
    s.write_all(&body[10..]).unwrap();
    let mut answer = String::new();
    let _ = s.read_to_string(&mut answer);
    assert!(answer.starts_with("HTTP/1.1 401"), "the request under way was answered: {answer:?}");

    let (status, log) = exited(child);
    assert_eq!(status.code(), Some(0), "{log}");
    assert!(log.contains("SIGHUP: nothing to reload"), "{log}");
    assert!(log.contains("SIGTERM: stopping"), "{log}");
}

#[test]
fn systemd_hears_ready_once_it_answers_and_stopping_on_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let socket_path = dir.path().join("notify.sock");
    let socket = UnixDatagram::bind(&socket_path).unwrap();
    socket.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let port = free_port();
    let child = serve_with_flags(dir.path(), port, &[("NOTIFY_SOCKET", socket_path.to_str().unwrap())]);
    let mut buf = [0u8; 256];
    let n = socket.recv(&mut buf).expect("a notification");
    assert_eq!(std::str::from_utf8(&buf[..n]).unwrap().trim(), "READY=1");
    assert!(healthy(port), "ready means answering: the store is open and the port bound");
    signal(&child, libc::SIGTERM);
    let n = socket.recv(&mut buf).expect("a notification");
    assert_eq!(std::str::from_utf8(&buf[..n]).unwrap().trim(), "STOPPING=1");
    let (status, log) = exited(child);
    assert_eq!(status.code(), Some(0), "{log}");
}

#[test]
fn healthcheck_exits_0_for_a_healthy_server_and_1_otherwise() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let mut child = serve_with_flags(dir.path(), port, &[]);
    wait_healthy(port, &mut child);
    let addr = format!("127.0.0.1:{port}");
    let ok = gatehouse_cli(dir.path(), &[], &["--config", "/dev/null", "healthcheck", "--addr", &addr], "");
    assert_eq!(ok.status.code(), Some(0), "{}", String::from_utf8_lossy(&ok.stderr));
    // The configuration's own address is the default (`listen`).
    let by_env = gatehouse_cli(dir.path(), &[("GATEHOUSE_LISTEN", &addr)], &["healthcheck"], "");
    assert_eq!(by_env.status.code(), Some(0), "{}", String::from_utf8_lossy(&by_env.stderr));
    signal(&child, libc::SIGTERM);
    exited(child);
    let down = gatehouse_cli(dir.path(), &[], &["healthcheck", "--addr", &addr, "--timeout", "2"], "");
    assert_eq!(down.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&down.stderr).contains("unhealthy"), "{}", String::from_utf8_lossy(&down.stderr));
}

#[test]
fn sighup_serves_a_renewed_certificate_without_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let write_cert = |name: &str| crate::helpers::write_self_signed(dir.path(), name);
    let (cert_file, key_file, _) = write_cert("first.example");
    let port = free_port();
    let addr = format!("127.0.0.1:{port}");
    let env = [
        ("GATEHOUSE_TLS__CERT_FILE", cert_file.to_str().unwrap()),
        ("GATEHOUSE_TLS__KEY_FILE", key_file.to_str().unwrap()),
    ];
    let child = serve_with_flags(dir.path(), port, &env);
    // The health check trusts exactly the certificate in tls.cert_file: it tells which one is served.
    let check = || {
        let mut env = env.to_vec();
        env.push(("GATEHOUSE_LISTEN", &addr));
        gatehouse_cli(dir.path(), &env, &["--config", "/dev/null", "healthcheck", "--timeout", "3"], "")
    };
    let deadline = Instant::now() + Duration::from_secs(20);
    while !check().status.success() {
        assert!(Instant::now() < deadline, "never healthy over TLS");
        std::thread::sleep(Duration::from_millis(100));
    }
    write_cert("renewed.example");
    assert_eq!(check().status.code(), Some(1), "the old certificate is still served until SIGHUP");
    signal(&child, libc::SIGHUP);
    let deadline = Instant::now() + Duration::from_secs(10);
    while !check().status.success() {
        assert!(Instant::now() < deadline, "the renewed certificate was not served after SIGHUP");
        std::thread::sleep(Duration::from_millis(100));
    }
    // A broken pair is refused and the certificate in use stays.
    std::fs::write(&key_file, "not a key").unwrap();
    signal(&child, libc::SIGHUP);
    std::thread::sleep(Duration::from_millis(300));
    std::fs::write(&key_file, "still not a key").unwrap();
    assert!(check().status.success(), "still serving the renewed certificate");
    signal(&child, libc::SIGTERM);
    let (status, log) = exited(child);
    assert_eq!(status.code(), Some(0), "{log}");
    assert!(log.contains("TLS certificate and key read again"), "{log}");
    assert!(log.contains("TLS certificate not reloaded"), "{log}");
}
