//! What the network can do to the server (issue #15): bodies too large or too slow, heads that never
//! end, more connections than it should hold, forwarding headers from anyone, HEAD on the pages.
//! Raw sockets where awc would not send what an attacker sends.

use gatehouse::core::apps::Door as AppDoor;
use std::io::{ErrorKind, Read, Write};
use std::net::{IpAddr, Shutdown, SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use base64::Engine;
use serde_json::{json, Value};

use crate::helpers::{link_in, set_cookie, spawn_app_with, TestApp};

const PASSWORD: &str = "the right password";

/// What came back on a raw connection.
#[derive(Debug)]
struct Raw {
    status: u16,
    head: String,
    json: Value,
}

fn addr_of(app: &TestApp) -> SocketAddr {
    app.base.trim_start_matches("http://").parse().unwrap()
}

/// Reads one answer (head and Content-Length body) within `wait`; None when the connection closed
/// first, Err when nothing came within `wait`.
fn read_answer(s: &mut TcpStream, wait: Duration) -> std::io::Result<Option<Raw>> {
    s.set_read_timeout(Some(wait))?;
    read_answer_from(s)
}

/// `read_answer` over any stream (TLS too), under the read timeout of the socket beneath.
fn read_answer_from(s: &mut impl Read) -> std::io::Result<Option<Raw>> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    let head_end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        match s.read(&mut chunk) {
            Ok(0) => return Ok(None),
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
            Err(e) if matches!(e.kind(), ErrorKind::ConnectionReset | ErrorKind::UnexpectedEof) => return Ok(None),
            Err(e) => return Err(e),
        }
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).to_string();
    let status = head.split(' ').nth(1).and_then(|c| c.parse().ok()).unwrap_or(0);
    let length: usize = head
        .lines()
        .find_map(|l| l.to_ascii_lowercase().strip_prefix("content-length:").map(|v| v.trim().parse().unwrap()))
        .unwrap_or(0);
    while buf.len() < head_end + length {
        match s.read(&mut chunk)? {
            0 => break,
            n => buf.extend_from_slice(&chunk[..n]),
        }
    }
    let json = serde_json::from_slice(&buf[head_end..]).unwrap_or(Value::Null);
    Ok(Some(Raw { status, head, json }))
}

/// One request to the server that writes `head` (ending in the blank line) and `body`, then waits
/// up to 20 s for the answer without sending the rest.
async fn stalled_exchange(addr: SocketAddr, head: String, body: &'static [u8]) -> Raw {
    actix_web::rt::task::spawn_blocking(move || {
        let mut s = TcpStream::connect(addr).unwrap();
        s.write_all(head.as_bytes()).unwrap();
        s.write_all(body).unwrap();
        let started = Instant::now();
        let answer = read_answer(&mut s, Duration::from_secs(20));
        let answer = answer.unwrap_or_else(|e| panic!("no answer in {:?}: {e}", started.elapsed()));
        answer.unwrap_or_else(|| panic!("closed without an answer after {:?}", started.elapsed()))
    })
    .await
    .unwrap()
}

/// An endpoint of each dialect that reads a body, its request head without Content-Length, and a
/// check that an answer is in that dialect's envelope.
struct Door {
    name: &'static str,
    head: String,
    envelope: fn(&Raw, u16),
}

fn doors(app: &TestApp, basic: &str, iampass_secret: &str, reset: &str) -> Vec<Door> {
    let host = app.base.trim_start_matches("http://").to_string();
    let head = |method: &str, target: &str, content_type: &str, extra: &[String]| {
        let mut h = format!("{method} {target} HTTP/1.1\r\nHost: {host}\r\nContent-Type: {content_type}\r\n");
        for e in extra {
            h.push_str(e);
            h.push_str("\r\n");
        }
        h
    };
    let json_type = "application/json";
    // A signature that holds, so that IAMPASS gets as far as the body.
    let target = "/management/add_users/partner-app";
    let nonce = crate::iampass::fresh_nonce();
    let ts = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs().to_string();
    let signature = crate::iampass::sign(iampass_secret, &nonce, &format!("{host}{target}"), &ts);
    let iampass = [
        format!("Authentication: hmac partner-app:{nonce}:{signature}"),
        format!("X-IAMPASS-Authentication-Timestamp: {ts}"),
    ];
    vec![
        Door {
            name: "forepaas",
            head: head("POST", "/iam/login", json_type, &[]),
            envelope: |r, s| {
                assert_eq!((r.json["status"].clone(), r.json["success"].clone()), (json!(s), json!(false)), "{r:?}");
                assert!(r.json["error"].is_string(), "{r:?}");
            },
        },
        Door {
            name: "smartserver",
            head: head("POST", "/cms/iap/auth/login", json_type, &[]),
            envelope: |r, s| {
                assert_eq!(r.json["status"], json!(s), "{r:?}");
                assert_eq!(r.json["path"], json!("/cms/iap/auth/login"), "{r:?}");
            },
        },
        Door {
            name: "iqm",
            head: head("POST", "/api/v3/ua/login", json_type, &[format!("Authorization: {basic}")]),
            envelope: |r, _| {
                assert_eq!(r.json["success"], json!(false), "{r:?}");
                assert!(r.json["errorObjects"][0]["error"].is_string(), "{r:?}");
            },
        },
        Door {
            name: "oauth2",
            head: head(
                "POST",
                "/oauth2/introspect",
                "application/x-www-form-urlencoded",
                &[format!("Authorization: {basic}")],
            ),
            envelope: |r, _| assert_eq!(r.json["error"], json!("invalid_request"), "{r:?}"),
        },
        Door {
            name: "iampass",
            head: head("POST", target, json_type, &iampass),
            envelope: |r, _| {
                assert_eq!(r.json["status"], json!(false), "{r:?}");
                assert!(r.json["reason"].is_string(), "{r:?}");
            },
        },
        Door {
            name: "page",
            head: head("POST", reset, json_type, &[]),
            envelope: |r, _| {
                assert_eq!(r.json["success"], json!(false), "{r:?}");
                assert!(r.json["error"].is_string(), "{r:?}");
            },
        },
    ]
}

/// A server with mark@example.com (forepaas, cms, an IQM client), the IQM client's Basic, an
/// IAMPASS application's secret, and a live password-reset link of mark's (its path).
async fn setup(tweak: impl FnOnce(&mut gatehouse::config::Config)) -> (TestApp, String, String, String) {
    let app = spawn_app_with(tweak).await;
    let secret = app.core.add_app("iqm-client", None, &[AppDoor::Iqm, AppDoor::Oauth]).unwrap();
    let iampass = app.core.add_app("partner-app", None, &[AppDoor::Iampass]).unwrap().expose().to_string();
    app.add_user("mark@example.com", PASSWORD, &["forepaas", "cms", "iqm-client"]);
    let basic = format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("iqm-client:{}", secret.expose()))
    );
    let caller = gatehouse::core::guard::Caller::local();
    let mail = &gatehouse::core::reset::CMS_RESET_MAIL;
    app.core.request_password_reset(&caller, "mark@example.com", "mark@example.com", None, mail).unwrap();
    let reset = link_in(&app.wait_outbox(1).await[0], "reset").unwrap();
    (app, basic, iampass, reset)
}

/// Rows that a request that got through would have added or changed.
fn footprint(app: &TestApp) -> (i64, i64, i64) {
    (
        app.count("SELECT count(*) FROM tokens"),
        app.count("SELECT count(*) FROM audit"),
        app.count("SELECT count(*) FROM links WHERE used_at IS NULL"),
    )
}

async fn login_works(app: &TestApp) -> bool {
    let body = json!({"login": "mark@example.com", "password": PASSWORD, "app_id": "forepaas", "auth_mode": "forepaas_id_resource_owner"});
    app.post_json("/iam/login", &body).await.status == 200
}

#[actix_web::test]
async fn a_declared_length_over_the_limit_is_refused_before_the_body_is_read() {
    let (app, basic, iampass, reset) = setup(|_| {}).await;
    let before = footprint(&app);
    let addr = addr_of(&app);
    let exchanges = doors(&app, &basic, &iampass, &reset).into_iter().map(|door| async move {
        // Only the head: a server that waited for ten megabytes would never answer.
        let head = format!("{}Content-Length: 10000000\r\n\r\n", door.head);
        (door.name, door.envelope, stalled_exchange(addr, head, b"").await)
    });
    for (name, envelope, answer) in futures_util::future::join_all(exchanges).await {
        assert_eq!(answer.status, 413, "{name}: {answer:?}");
        assert!(answer.head.to_ascii_lowercase().contains("content-type: application/json"), "{name}: {answer:?}");
        envelope(&answer, 413);
    }
    assert_eq!(footprint(&app), before, "nothing changed");
    assert!(login_works(&app).await);
}

#[actix_web::test]
async fn a_body_that_stalls_is_answered_408_and_changes_nothing() {
    let (app, basic, iampass, reset) = setup(|c| c.http.body_timeout = gatehouse::config::Seconds::secs(1)).await;
    let before = footprint(&app);
    let addr = addr_of(&app);
    let exchanges = doors(&app, &basic, &iampass, &reset).into_iter().map(|door| async move {
        // A tenth of what the head promises, then nothing.
        let head = format!("{}Content-Length: 200\r\n\r\n", door.head);
        (door.name, door.envelope, stalled_exchange(addr, head, b"{\"password\":\"a new passwo").await)
    });
    for (name, envelope, answer) in futures_util::future::join_all(exchanges).await {
        assert_eq!(answer.status, 408, "{name}: {answer:?}");
        envelope(&answer, 408);
    }
    assert_eq!(footprint(&app), before, "nothing changed: no token, no event, the reset link unused");
    assert_eq!(app.get(&reset).await.status, 200, "the reset link still works");
    assert!(login_works(&app).await, "the password is the old one");
}

#[actix_web::test]
async fn half_a_request_line_is_closed_after_the_head_timeout() {
    let app = spawn_app_with(|c| c.http.head_timeout = gatehouse::config::Seconds::secs(1)).await;
    let addr = addr_of(&app);
    let closed = actix_web::rt::task::spawn_blocking(move || {
        let mut s = TcpStream::connect(addr).unwrap();
        s.write_all(b"GET /hea").unwrap();
        // Under actix's own default (5 s), this would wait in vain.
        s.set_read_timeout(Some(Duration::from_secs(4))).unwrap();
        let mut got = Vec::new();
        let mut chunk = [0u8; 1024];
        loop {
            match s.read(&mut chunk) {
                Ok(0) => return Ok(String::from_utf8_lossy(&got).to_string()),
                Ok(n) => got.extend_from_slice(&chunk[..n]),
                Err(e) if e.kind() == ErrorKind::ConnectionReset => {
                    return Ok(String::from_utf8_lossy(&got).to_string())
                }
                Err(e) => return Err(e),
            }
        }
    })
    .await
    .unwrap();
    let said = closed.expect("the server closed the connection");
    assert!(said.is_empty() || said.starts_with("HTTP/1.1 408"), "{said}");
    assert_eq!(app.get("/healthz").await.status, 200);
}

/// Raises this process's soft limit of open files to the hard one; the limit after.
fn raise_open_files() -> u64 {
    let mut lim = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: getrlimit and setrlimit only read and write the struct they are given.
    unsafe {
        assert_eq!(libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim), 0);
        lim.rlim_cur = lim.rlim_max;
        assert_eq!(libc::setrlimit(libc::RLIMIT_NOFILE, &lim), 0);
    }
    lim.rlim_cur
}

/// A connection to `to` from the loopback address `from`.
fn connect_from(from: IpAddr, to: SocketAddr) -> std::io::Result<TcpStream> {
    use std::os::fd::AsRawFd;
    let s = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None)?;
    // The port is chosen by connect, not bind: bind's search for a free port slows down with each
    // of thousands of sockets already bound.
    let on: libc::c_int = 1;
    let len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
    let on_ptr = (&raw const on).cast();
    // SAFETY: a setsockopt of an int option on a socket this function owns.
    let set = unsafe { libc::setsockopt(s.as_raw_fd(), libc::IPPROTO_IP, libc::IP_BIND_ADDRESS_NO_PORT, on_ptr, len) };
    assert_eq!(set, 0, "IP_BIND_ADDRESS_NO_PORT: {}", std::io::Error::last_os_error());
    s.bind(&SocketAddr::new(from, 0).into())?;
    s.connect(&to.into())?;
    Ok(s.into())
}

/// Whether the server has closed `s`: end of file or a reset, rather than nothing to read yet.
fn closed_by_server(s: &TcpStream) -> bool {
    s.set_nonblocking(true).unwrap();
    let mut b = [0u8; 64];
    let closed = match (&*s).read(&mut b) {
        Ok(0) => true,
        Ok(_) => false,
        Err(e) if e.kind() == ErrorKind::WouldBlock => false,
        Err(_) => true,
    };
    s.set_nonblocking(false).unwrap();
    closed
}

/// `GET /healthz` on a new connection from `from`: its status and the connection (kept alive), or
/// None when the connection was closed without an answer.
fn healthz_on(from: IpAddr, to: SocketAddr) -> Option<(u16, TcpStream)> {
    let mut s = connect_from(from, to).ok()?;
    s.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n").ok()?;
    let answer = read_answer(&mut s, Duration::from_secs(20)).expect("an answer or a close within 20 s");
    answer.map(|r| (r.status, s))
}

fn healthz_from(from: IpAddr, to: SocketAddr) -> Option<u16> {
    healthz_on(from, to).map(|(status, _)| status)
}

/// Opens `n` connections from `from` that send nothing, a hundred at a time, each hundred followed
/// by a request from `barrier`: once that is answered, the server (one worker, connections taken
/// in order) has counted or refused every connection before it, and the short listen backlog has
/// room again. Answers how many of the `n` the server closed.
fn open_stalled(n: usize, from: IpAddr, barrier: IpAddr, to: SocketAddr, into: &mut Vec<TcpStream>) -> usize {
    let first = into.len();
    for i in 0..n {
        into.push(connect_from(from, to).unwrap_or_else(|e| panic!("connection {i} of {n}: {e}")));
        if i % 100 == 99 || i == n - 1 {
            assert_eq!(healthz_from(barrier, to), Some(200), "{barrier} is served meanwhile");
        }
    }
    // The closes were on the wire before the last barrier's answer; this only waits out a slow
    // kernel.
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut closed = into[first..].iter().filter(|s| closed_by_server(s)).count();
    while Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
        let again = into[first..].iter().filter(|s| closed_by_server(s)).count();
        if again == closed {
            break;
        }
        closed = again;
    }
    closed
}

#[actix_web::test]
async fn connections_beyond_the_per_address_cap_are_closed_and_other_addresses_are_served() {
    let limit = raise_open_files();
    let cap = gatehouse::config::Config::default().http.max_connections_per_address;
    // The 20,000 stalled connections, as far as this process may open files. Each is one
    // file here (two until the server closes its end, for the `cap` it keeps); half the limit at
    // most, so that the tests running beside this one still have files to open.
    let many = 20_000.min((limit as usize).saturating_sub(cap) / 2);
    assert!(many > 2 * cap, "the open-files limit ({limit}) is too low for this test");
    let app = spawn_app_with(|c| {
        // Stalled connections stay until the test lets them go.
        c.http.head_timeout = gatehouse::config::Seconds::secs(120);
        c.http.max_connections = 30_000;
        c.http.max_connections_per_address = cap;
    })
    .await;
    app.add_user("mark@example.com", PASSWORD, &["forepaas"]);
    let addr = addr_of(&app);
    let (attacker, other): (IpAddr, IpAddr) = ("127.0.0.2".parse().unwrap(), "127.0.0.1".parse().unwrap());

    let started = Instant::now();
    let (held, closed) = actix_web::rt::task::spawn_blocking(move || {
        let mut held = Vec::new();
        let closed = open_stalled(many, attacker, other, addr, &mut held);
        (held, closed)
    })
    .await
    .unwrap();
    eprintln!("{many} connections from {attacker} opened and sorted in {:?}", started.elapsed());
    assert_eq!(closed, many - cap, "every connection beyond the cap was closed by the server, and only those");

    // Another address is served, a password login included.
    assert_eq!(app.get("/healthz").await.status, 200);
    assert!(login_works(&app).await);
    // One more from the capped address: closed without an answer.
    let again = actix_web::rt::task::spawn_blocking(move || healthz_from(attacker, addr)).await.unwrap();
    assert_eq!(again, None, "a connection over the cap gets no answer");

    // Once they are closed, the address may open as many again: each count ended with its
    // connection, also for connections that carried requests (actix keeps a served request for
    // reuse: it must not keep the connection's count with it).
    drop(held);
    let (served, beyond) = actix_web::rt::task::spawn_blocking(move || {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let served: Vec<TcpStream> = (0..cap).map_while(|_| healthz_on(attacker, addr)).map(|(_, s)| s).collect();
            if served.len() == cap || Instant::now() > deadline {
                return (served.len(), healthz_from(attacker, addr));
            }
            // The server may not have seen every close yet.
            drop(served);
            std::thread::sleep(Duration::from_millis(200));
        }
    })
    .await
    .unwrap();
    assert_eq!(served, cap, "{cap} connections from {attacker} served again");
    assert_eq!(beyond, None, "and the one beyond closed");
    let (closed, held) = actix_web::rt::task::spawn_blocking(move || {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let mut held = Vec::new();
            let closed = open_stalled(cap + 1, attacker, other, addr, &mut held);
            if closed == 1 || Instant::now() > deadline {
                return (closed, held);
            }
            drop(held);
            std::thread::sleep(Duration::from_millis(200));
        }
    })
    .await
    .unwrap();
    assert_eq!(closed, 1, "{cap} connections admitted again after the served ones closed, the one beyond closed");
    assert!(closed_by_server(held.last().unwrap()), "the one closed is the last, over the cap");
    for s in &held {
        let _ = s.shutdown(Shutdown::Both);
    }
}

#[actix_web::test]
async fn the_per_address_cap_holds_under_tls_and_spares_trusted_proxies() {
    let dir = tempfile::tempdir().unwrap();
    let (cert_file, key_file, cert) = crate::helpers::write_self_signed(dir.path(), "localhost");
    let app = spawn_app_with(|c| {
        c.tls.cert_file = cert_file.clone();
        c.tls.key_file = key_file.clone();
        c.http.max_connections_per_address = 2;
        c.http.trusted_proxies = vec!["127.0.0.3".parse().unwrap()];
    })
    .await;
    let addr = addr_of(&app);
    let mut roots = rustls::RootCertStore::empty();
    roots.add(cert.clone()).unwrap();
    let tls =
        rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
    let tls = std::sync::Arc::new(tls);
    let served = actix_web::rt::task::spawn_blocking(move || {
        // `GET /healthz` over TLS on a new connection from `from`: the status and the connection,
        // or None when the server closed it (after the handshake: that is when actix counts it).
        let https_from = |from: &str| {
            let tcp = connect_from(from.parse().unwrap(), addr).unwrap();
            tcp.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
            let conn = rustls::ClientConnection::new(tls.clone(), "localhost".try_into().unwrap()).unwrap();
            let mut s = rustls::StreamOwned::new(conn, tcp);
            s.write_all(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\n\r\n").ok()?;
            read_answer_from(&mut s).ok().flatten().map(|r| (r.status, s))
        };
        let capped: Vec<_> = (0..3).map(|_| https_from("127.0.0.2")).collect();
        let statuses: Vec<_> = capped.iter().map(|c| c.as_ref().map(|(status, _)| *status)).collect();
        let proxy: Vec<_> = (0..3).map(|_| https_from("127.0.0.3")).collect();
        let proxy: Vec<_> = proxy.iter().map(|c| c.as_ref().map(|(status, _)| *status)).collect();
        drop(capped);
        // A closed connection gives its count back: retried while the server sees the closes.
        let deadline = Instant::now() + Duration::from_secs(20);
        let again = loop {
            let again = https_from("127.0.0.2").map(|(status, _)| status);
            if again.is_some() || Instant::now() > deadline {
                break again;
            }
            std::thread::sleep(Duration::from_millis(100));
        };
        (statuses, proxy, again)
    })
    .await
    .unwrap();
    assert_eq!(served.0, [Some(200), Some(200), None], "two served, the third closed");
    assert_eq!(served.1, [Some(200), Some(200), Some(200)], "a trusted proxy is not capped");
    assert_eq!(served.2, Some(200), "served again once the others closed");
}

#[actix_web::test]
async fn beyond_max_connections_a_connection_waits_until_one_closes() {
    let app = spawn_app_with(|c| {
        c.http.head_timeout = gatehouse::config::Seconds::secs(120);
        c.http.max_connections = 20;
        c.http.max_connections_per_address = 0;
    })
    .await;
    let addr = addr_of(&app);
    let answered = actix_web::rt::task::spawn_blocking(move || {
        let mut held: Vec<TcpStream> = (0..20).map(|_| TcpStream::connect(addr).unwrap()).collect();
        let mut late = TcpStream::connect(addr).unwrap();
        late.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
        let waiting = read_answer(&mut late, Duration::from_secs(1));
        assert!(
            matches!(&waiting, Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut)),
            "the 21st connection is not served while 20 are open: {waiting:?}"
        );
        held.pop();
        read_answer(&mut late, Duration::from_secs(20)).unwrap().map(|r| r.status)
    })
    .await
    .unwrap();
    assert_eq!(answered, Some(200), "served once one of the 20 closed");
}

async fn cms_login(app: &TestApp, headers: &[(&str, &str)]) -> crate::helpers::Answer {
    let body = json!({"username": "mark@example.com", "password": PASSWORD}).to_string().into_bytes();
    app.send("POST", "/cms/iap/auth/login", headers, Some(("application/json", body))).await
}

#[actix_web::test]
async fn x_forwarded_proto_makes_the_cookie_secure_only_from_a_trusted_proxy() {
    let https = [("X-Forwarded-Proto", "https")];
    let untrusted = spawn_app_with(|_| {}).await;
    untrusted.add_user("mark@example.com", PASSWORD, &["cms"]);
    let a = cms_login(&untrusted, &https).await;
    assert_eq!(a.status, 200, "{}", a.text);
    let cookie = set_cookie(&a, "cmsSID").unwrap();
    assert!(!cookie.contains("Secure"), "anyone may write X-Forwarded-Proto: {cookie}");

    let trusted = spawn_app_with(|c| c.http.trusted_proxies = vec!["127.0.0.1".parse().unwrap()]).await;
    trusted.add_user("mark@example.com", PASSWORD, &["cms"]);
    let cookie = set_cookie(&cms_login(&trusted, &https).await, "cmsSID").unwrap();
    assert!(cookie.contains("Secure"), "the proxy says the client came over HTTPS: {cookie}");
    let cookie = set_cookie(&cms_login(&trusted, &[("X-Forwarded-Proto", "http")]).await, "cmsSID").unwrap();
    assert!(!cookie.contains("Secure"), "{cookie}");
    let cookie = set_cookie(&cms_login(&trusted, &[]).await, "cmsSID").unwrap();
    assert!(!cookie.contains("Secure"), "without the header: our own scheme, http: {cookie}");
}

async fn iam_from(app: &TestApp, login: &str, password: &str, forwarded_for: &str) -> u16 {
    let body =
        json!({"login": login, "password": password, "app_id": "forepaas", "auth_mode": "forepaas_id_resource_owner"});
    let body = body.to_string().into_bytes();
    let headers = [("X-Forwarded-For", forwarded_for)];
    app.send("POST", "/iam/login", &headers, Some(("application/json", body))).await.status
}

fn address_throttle(c: &mut gatehouse::config::Config) {
    c.throttle.address_failures = 3;
    c.throttle.lockout = gatehouse::config::Seconds::secs(60);
}

/// The client addresses the audit log recorded, oldest first.
fn audited_clients(app: &TestApp) -> Vec<String> {
    let events = app.core.audit_events(0, None).unwrap();
    events.into_iter().filter(|e| e.event.starts_with("login")).filter_map(|e| e.client).collect()
}

#[actix_web::test]
async fn x_forwarded_for_counts_only_from_a_trusted_proxy() {
    // From an untrusted peer, a new X-Forwarded-For on each guess does not make a new address.
    let app = spawn_app_with(address_throttle).await;
    app.add_user("mark@example.com", PASSWORD, &["forepaas"]);
    for i in 0..3 {
        assert_eq!(iam_from(&app, &format!("guess{i}@example.com"), "guess", &format!("192.0.2.{i}")).await, 401);
    }
    assert_eq!(iam_from(&app, "mark@example.com", PASSWORD, "198.51.100.7").await, 429, "127.0.0.1 is locked out");
    assert!(audited_clients(&app).iter().all(|c| c == "127.0.0.1"), "{:?}", audited_clients(&app));

    // Behind trusted proxies, the client is the rightmost address that is not one of them.
    let app = spawn_app_with(|c| {
        address_throttle(c);
        c.http.trusted_proxies = vec!["127.0.0.1".parse().unwrap(), "10.0.0.0/8".parse().unwrap()];
    })
    .await;
    app.add_user("mark@example.com", PASSWORD, &["forepaas"]);
    for i in 0..3 {
        // The client's own claim (6.6.6.6) is left of the address the proxies saw.
        let chain = format!("6.6.6.6, 192.0.2.1, 10.1.1.{i}");
        assert_eq!(iam_from(&app, &format!("guess{i}@example.com"), "guess", &chain).await, 401);
    }
    assert_eq!(iam_from(&app, "mark@example.com", PASSWORD, "192.0.2.1").await, 429, "192.0.2.1 is locked out");
    assert_eq!(iam_from(&app, "mark@example.com", PASSWORD, "192.0.2.2").await, 200, "another client is not");
    let clients = audited_clients(&app);
    assert_eq!(clients.iter().filter(|c| *c == "192.0.2.1").count(), 3, "{clients:?}");
    assert_eq!(clients.last().map(String::as_str), Some("192.0.2.2"), "{clients:?}");
}

/// One host is given a /64: its 2^64 addresses are one address to the throttle, as to the
/// connection cap (issue 24: 60 failures from 60 addresses of one /64 were never held back).
#[actix_web::test]
async fn an_ipv6_64_is_one_address_to_the_throttle() {
    let app = spawn_app_with(|c| {
        address_throttle(c);
        c.http.trusted_proxies = vec!["127.0.0.1".parse().unwrap()];
    })
    .await;
    app.add_user("mark@example.com", PASSWORD, &["forepaas"]);
    for i in 1..=3 {
        let from = format!("2001:db8:7:8::{i:x}");
        assert_eq!(iam_from(&app, &format!("guess{i}@example.com"), "guess", &from).await, 401);
    }
    let same_64 = "2001:db8:7:8:ffff:1:2:3";
    assert_eq!(iam_from(&app, "mark@example.com", PASSWORD, same_64).await, 429, "the /64 is locked out");
    assert_eq!(iam_from(&app, "mark@example.com", PASSWORD, "2001:db8:7:9::1").await, 200, "the next /64 is not");
    // The audit log keeps each address whole.
    let clients = audited_clients(&app);
    assert!(clients.contains(&"2001:db8:7:8::2".to_string()), "{clients:?}");
}

#[actix_web::test]
async fn head_on_the_pages_answers_like_get_without_a_body() {
    let (app, _, _, reset) = setup(|_| {}).await;
    app.core.add_app("device-app", None, &[AppDoor::Iampass]).unwrap();
    app.add_user("dana@example.com", PASSWORD, &["device-app"]);
    let register = app.core.registration_link("device-app", "dana@example.com", None).unwrap();
    let register = register.trim_start_matches(&app.base).to_string();
    let gone = format!("/reset/{}", "0".repeat(64));
    let pages = [
        reset.as_str(),
        gone.as_str(),
        register.as_str(),
        "/register/nothing",
        "/device",
        "/static/gatehouse.css",
        "/static/reset.js",
        "/static/register.js",
        "/static/device.js",
    ];
    for path in pages {
        let get = app.get(path).await;
        let head = app.send("HEAD", path, &[], None).await;
        assert_eq!(head.status, get.status, "{path}");
        assert!(head.text.is_empty(), "{path}: no body");
        let mut get_headers: Vec<_> = get.headers.iter().filter(|(k, _)| *k != "date").collect();
        let mut head_headers: Vec<_> = head.headers.iter().filter(|(k, _)| *k != "date").collect();
        get_headers.sort_by_key(|(k, v)| (k.as_str().to_string(), v.as_bytes().to_vec()));
        head_headers.sort_by_key(|(k, v)| (k.as_str().to_string(), v.as_bytes().to_vec()));
        assert_eq!(head_headers, get_headers, "{path}: the same headers, Content-Length included");
        assert!(get.headers.get("content-length").is_some_and(|l| l != "0"), "{path}");
    }
    // HEAD uses no link: the reset page still opens.
    assert_eq!(app.get(&reset).await.status, 200);
}
