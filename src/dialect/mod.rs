//! The four vendor APIs, and the standard doors beside them (`oauth2`: RFC 7662, 7009, 8414;
//! `forward`: forward auth for reverse proxies). A dialect parses its wire format, calls the core,
//! and writes the answer in its wire format, status codes and error envelope included. It never
//! touches SQL or Argon2.

pub mod forepaas;
pub mod forward;
pub mod iampass;
pub mod iqm;
pub mod oauth2;
pub mod smartserver;
