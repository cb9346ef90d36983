//! Every front door, one file each: the four vendor APIs, the standard doors beside them
//! (`oauth2`: RFC 7662, 7009; `oidc`: OpenID Connect and its hosted sign-in pages; `forward`: forward auth for reverse proxies), and gatehouse's
//! own (`pages`: the built-in pages; `device`: the device page's signed API). A door parses its
//! wire format, calls the core, and writes the answer in its wire format, status codes and error
//! envelope included, through its one error type and its one mapping of the core's errors. It
//! never touches SQL or Argon2, and never names another door: what two share is in `web`.

pub mod account;
pub mod device;
pub mod forepaas;
pub mod forward;
pub mod iampass;
pub mod iqm;
pub mod oauth2;
pub mod oidc;
pub mod pages;
pub mod smartserver;
