//! The API suite again, on the PostgreSQL backend: the dialect files of `tests/api` unchanged
//! (they must not care which store answers), over a throwaway PostgreSQL that `pg` starts, one
//! fresh database per test. Plus what only several nodes can show (`cluster`).
//!
//! The files about the SQLite file itself (durability, backup, the process and CLI on a data
//! directory) stay in `tests/api`.

/// The store every test of this binary runs on.
const BACKEND: &str = "postgres";

#[path = "../api/account.rs"]
mod account;
#[path = "../api/attacks.rs"]
mod attacks;
#[path = "../api/browser.rs"]
mod browser;
mod cluster;
mod failover;
#[path = "../api/forepaas.rs"]
mod forepaas;
#[allow(dead_code)]
#[path = "../api/helpers.rs"]
mod helpers;
#[path = "../api/iampass.rs"]
mod iampass;
#[path = "../api/iqm.rs"]
mod iqm;
#[path = "../api/mail.rs"]
mod mail;
#[path = "../api/oauth2.rs"]
mod oauth2;
#[path = "../api/oidc.rs"]
mod oidc;
#[path = "../api/oidc_more.rs"]
mod oidc_more;
#[path = "../api/passkeys.rs"]
mod passkeys;
#[path = "../api/pg.rs"]
mod pg;
#[path = "../api/relying_parties.rs"]
mod relying_parties;
#[path = "../api/signins.rs"]
mod signins;
#[path = "../api/smartserver.rs"]
mod smartserver;
