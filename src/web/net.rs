//! The network around a request: who the client is (the TCP peer, or what a trusted reverse proxy
//! says).

use std::net::IpAddr;

use actix_web::HttpRequest;

use crate::config::{Config, Net};
use crate::core::guard::Caller;

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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forwarded_hops_may_carry_ports() {
        assert_eq!(hop(" 192.0.2.1 "), Some("192.0.2.1".parse().unwrap()));
        assert_eq!(hop("192.0.2.1:8080"), Some("192.0.2.1".parse().unwrap()));
        assert_eq!(hop("[2001:db8::1]:443"), Some("2001:db8::1".parse().unwrap()));
        assert_eq!(hop("unknown"), None);
        assert_eq!(hop(""), None);
    }
}
