//! The four vendor APIs. A dialect parses its wire format, calls the core, and writes the answer in
//! its wire format, status codes and error envelope included. It never touches SQL or Argon2.

pub mod forepaas;
pub mod iampass;
pub mod iqm;
pub mod smartserver;
