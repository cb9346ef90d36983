//! The network around a request: who the client is (the TCP peer, or what a trusted reverse proxy
//! says), how many connections one address holds open, and the process's open-file limit.

use std::any::Any;
use std::collections::HashMap;
use std::net::{IpAddr, Shutdown};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use actix_web::dev::Extensions;
use actix_web::rt::net::TcpStream;
use actix_web::HttpRequest;

use crate::config::{Config, Net};
// What one address is, as the throttle counts it too: an IPv4 address, or an IPv6 /64.
use crate::core::guard::{address_key as key_of, Caller};

/// Who sent a request, as far as gatehouse can tell.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Client {
    /// The client's address: the TCP peer, or, when the peer is one of `http.trusted_proxies`, the
    /// rightmost address of X-Forwarded-For that is not itself a trusted proxy.
    pub addr: Option<IpAddr>,
    /// Whether the client reached us over HTTPS: gatehouse's own TLS, or the X-Forwarded-Proto of a
    /// trusted proxy.
    pub https: bool,
}

fn trusted(proxies: &[Net], ip: IpAddr) -> bool {
    proxies.iter().any(|n| n.contains(ip))
}

/// One hop of X-Forwarded-For: an address, possibly with a port (`1.2.3.4:80`, `[::1]:80`).
fn hop(text: &str) -> Option<IpAddr> {
    let text = text.trim();
    text.parse::<IpAddr>()
        .or_else(|_| text.parse::<std::net::SocketAddr>().map(|s| s.ip()))
        .ok()
        .map(|ip| ip.to_canonical())
}

/// Who sent `req`. Forwarding headers count only when the TCP peer is a trusted proxy: anyone else
/// could write them.
pub fn client(req: &HttpRequest, config: &Config) -> Client {
    let tls = config.tls.enabled();
    let Some(peer) = req.peer_addr().map(|a| a.ip().to_canonical()) else {
        return Client { addr: None, https: tls };
    };
    let proxies = &config.http.trusted_proxies;
    if !trusted(proxies, peer) {
        return Client { addr: Some(peer), https: tls };
    }
    // Each proxy appends the address it was reached from: walking from the right, the first
    // address that is not a trusted proxy is the client. Anything left of it is the client's own
    // say. A hop that is not an address ends the walk at the last good one.
    let mut addr = peer;
    let hops: Vec<Option<&str>> = req
        .headers()
        .get_all("x-forwarded-for")
        .flat_map(|v| match v.to_str() {
            Ok(s) => s.split(',').map(Some).collect::<Vec<_>>(),
            Err(_) => vec![None],
        })
        .collect();
    for h in hops.into_iter().rev() {
        match h.and_then(hop) {
            Some(ip) => {
                addr = ip;
                if !trusted(proxies, ip) {
                    break;
                }
            }
            None => break,
        }
    }
    // The scheme the client used, as the proxy reports it (the first value of a list: the proxy
    // nearest the client); without the header, our own.
    let https = match req.headers().get("x-forwarded-proto").and_then(|v| v.to_str().ok()) {
        Some(v) => v.split(',').next().unwrap_or("").trim().eq_ignore_ascii_case("https"),
        None => tls,
    };
    Client { addr: Some(addr), https }
}

/// The `Caller` of a request to `dialect`, for the throttle and the audit log.
pub fn caller(req: &HttpRequest, config: &Config, dialect: &'static str) -> Caller {
    Caller::new(client(req, config).addr, dialect)
}

/// Connections open per client address, and the cap on them (`http.max_connections_per_address`).
/// `on_connect` runs as each connection opens: under the cap it leaves a `Slot` in the
/// connection's data, which actix drops with the connection; over it, it closes the socket at
/// once.
pub struct PerAddress {
    cap: usize,
    trusted: Vec<Net>,
    open: Mutex<HashMap<IpAddr, usize>>,
    /// Connections refused since the last warning, and when that was.
    refused: Mutex<(u64, Option<Instant>)>,
}

/// How often at most a refused connection is logged (with the count since the last line).
const WARN_EVERY: Duration = Duration::from_secs(10);

/// A connection counted against its address, until it is dropped.
struct Slot {
    owner: Arc<PerAddress>,
    key: IpAddr,
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut open = self.owner.open.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(n) = open.get_mut(&self.key) {
            *n -= 1;
            if *n == 0 {
                open.remove(&self.key);
            }
        }
    }
}

/// The TCP stream under a connection: plain, or under rustls.
fn tcp_of(io: &dyn Any) -> Option<&TcpStream> {
    if let Some(s) = io.downcast_ref::<TcpStream>() {
        return Some(s);
    }
    io.downcast_ref::<actix_tls::accept::rustls_0_23::TlsStream<TcpStream>>().map(|s| s.get_ref().0)
}

impl PerAddress {
    pub fn new(cap: usize, trusted: Vec<Net>) -> Arc<PerAddress> {
        Arc::new(PerAddress { cap, trusted, open: Mutex::new(HashMap::new()), refused: Mutex::new((0, None)) })
    }

    /// For `HttpServer::on_connect`: counts the connection `io`, or closes it when its address is
    /// at the cap.
    pub fn on_connect(self: &Arc<Self>, io: &dyn Any, data: &mut Extensions) {
        let Some(stream) = tcp_of(io) else { return };
        let Ok(peer) = stream.peer_addr() else { return };
        let ip = peer.ip().to_canonical();
        if self.cap == 0 || trusted(&self.trusted, ip) {
            return;
        }
        let key = key_of(ip);
        let admitted = {
            let mut open = self.open.lock().unwrap_or_else(|p| p.into_inner());
            let n = open.entry(key).or_insert(0);
            if *n < self.cap {
                *n += 1;
                true
            } else {
                false
            }
        };
        if admitted {
            data.insert(Slot { owner: Arc::clone(self), key });
        } else {
            // The dispatcher reads end-of-file at once and drops the connection.
            let _ = socket2::SockRef::from(stream).shutdown(Shutdown::Both);
            self.refused(ip);
        }
    }

    fn refused(&self, ip: IpAddr) {
        let mut r = self.refused.lock().unwrap_or_else(|p| p.into_inner());
        r.0 += 1;
        if r.1.is_none_or(|at| at.elapsed() >= WARN_EVERY) {
            log::warn!(
                "refused {} connection(s) over http.max_connections_per_address ({}) in the last {}s at most, the latest from {ip}",
                r.0,
                self.cap,
                WARN_EVERY.as_secs()
            );
            *r = (0, Some(Instant::now()));
        }
    }
}

/// Raises the soft limit of open files to the hard limit (each connection holds one) and says
/// what it is; warns when `http.max_connections` cannot fit under it.
pub fn raise_open_files(config: &Config) {
    let mut lim = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: getrlimit and setrlimit only read and write the struct they are given.
    let limit = unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) != 0 {
            log::warn!("open files: getrlimit failed: {}", std::io::Error::last_os_error());
            return;
        }
        let was = lim.rlim_cur;
        if lim.rlim_cur < lim.rlim_max {
            let raised = libc::rlimit { rlim_cur: lim.rlim_max, rlim_max: lim.rlim_max };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &raised) == 0 {
                log::info!("open files: soft limit raised from {was} to the hard limit, {}", lim.rlim_max);
                lim.rlim_cur = lim.rlim_max;
            } else {
                log::warn!(
                    "open files: could not raise the soft limit {was} to {}: {}",
                    lim.rlim_max,
                    std::io::Error::last_os_error()
                );
            }
        } else {
            log::info!("open files: the limit is {was}");
        }
        lim.rlim_cur
    };
    // A connection is one file; the database, logs and listeners take some more.
    let wanted = config.http.max_connections as u64 + 256;
    if (limit as u64) < wanted {
        log::warn!(
            "open files: the limit ({limit}) is below http.max_connections ({}) plus 256: raise the hard limit \
             (systemd: LimitNOFILE=) or lower http.max_connections",
            config.http.max_connections
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_ipv6_address_counts_as_its_64() {
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        assert_eq!(key_of(ip("2001:db8:1:2::1")), key_of(ip("2001:db8:1:2:ffff::9")));
        assert_ne!(key_of(ip("2001:db8:1:2::1")), key_of(ip("2001:db8:1:3::1")));
        assert_eq!(key_of(ip("::ffff:192.0.2.7")), ip("192.0.2.7"));
        assert_ne!(key_of(ip("192.0.2.7")), key_of(ip("192.0.2.8")));
    }

    #[test]
    fn forwarded_hops_may_carry_ports() {
        assert_eq!(hop(" 192.0.2.1 "), Some("192.0.2.1".parse().unwrap()));
        assert_eq!(hop("192.0.2.1:8080"), Some("192.0.2.1".parse().unwrap()));
        assert_eq!(hop("[2001:db8::1]:443"), Some("2001:db8::1".parse().unwrap()));
        assert_eq!(hop("unknown"), None);
        assert_eq!(hop(""), None);
    }
}
